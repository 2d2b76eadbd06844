//! Gives back the pages of start-up code once a node is serving.
//!
//! A process's resident set counts every page of its executable it has
//! mapped, and the kernel maps code 64 KiB at a time: by the time a node
//! serves, argument parsing, logging set-up and storage opening have
//! mapped some 6 MB of the binary that an idle node never runs again. A
//! thousand nodes on one machine each carry that. Unmapping the clean,
//! read-only mappings of the executable once (`MADV_DONTNEED`) leaves only
//! the code the node goes on running to be mapped back on use. The pages
//! stay in the page cache, shared by all nodes: this shrinks what each
//! node is charged, not what the machine holds.
//!
//! Only mappings without a single anonymous (copied-on-write) page are
//! touched: for those, dropping a page loses nothing, since it reads back
//! the same from the file. Relocated read-only data has such pages and is
//! left alone.

use std::path::Path;

/// Unmaps the executable's clean read-only mappings; returns the bytes unmapped.
pub fn release_startup_pages() -> std::io::Result<usize> {
    let exe = std::fs::read_link("/proc/self/exe")?;
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = 0;
    for mapping in clean_read_only_mappings(&smaps, &exe) {
        // SAFETY: the range is a whole mapping of the executable that is
        // read-only and holds no anonymous page: every page comes back
        // unchanged from the file on its next use.
        let done = unsafe { libc::madvise(mapping.start as *mut libc::c_void, mapping.len, libc::MADV_DONTNEED) };
        if done == 0 {
            released += mapping.len;
        }
    }
    Ok(released)
}

#[derive(Debug, PartialEq, Eq)]
struct Mapping {
    start: usize,
    len: usize,
}

/// Mappings of `exe` in `smaps` that are not writable and have no
/// anonymous pages.
fn clean_read_only_mappings(smaps: &str, exe: &Path) -> Vec<Mapping> {
    let exe = exe.to_string_lossy();
    let mut out = Vec::new();
    let mut current: Option<Mapping> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-').filter(|_| !first.ends_with(':')) {
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            current = match (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16)) {
                (Ok(start), Ok(end)) if path == exe && !perms.contains('w') => {
                    Some(Mapping { start, len: end - start })
                }
                _ => None,
            };
        } else if first == "Anonymous:" {
            let anonymous_kb = fields.next().and_then(|v| v.parse::<u64>().ok());
            if let Some(mapping) = current.take() {
                if anonymous_kb == Some(0) {
                    out.push(mapping);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_mappings_of_the_executable_are_chosen() {
        let smaps = "\
1000-3000 r--p 00000000 08:01 42 /bin/node
Rss:                   8 kB
Anonymous:             0 kB
3000-5000 r-xp 00002000 08:01 42 /bin/node
Anonymous:             0 kB
5000-6000 r--p 00004000 08:01 42 /bin/node
Anonymous:             4 kB
6000-7000 rw-p 00005000 08:01 42 /bin/node
Anonymous:             0 kB
7000-8000 r-xp 00000000 08:01 43 /lib/libc.so
Anonymous:             0 kB
";
        let chosen = clean_read_only_mappings(smaps, Path::new("/bin/node"));
        assert_eq!(chosen, [Mapping { start: 0x1000, len: 0x2000 }, Mapping { start: 0x3000, len: 0x2000 }]);
    }

    #[test]
    fn a_running_process_survives_its_code_being_released() {
        let released = release_startup_pages().unwrap();
        assert!(released > 0, "the test binary has clean code mappings");
        // Code runs on after its pages were unmapped: they come back from the file.
        assert_eq!(clean_read_only_mappings("", Path::new("/x")), []);
    }
}
