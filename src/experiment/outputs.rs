//! Where a run's files go and what they are called: `<kind>_<stamp>.<ext>`
//! in `--out`, the stamp being the UTC start time `YYYYmmdd_HHMMSS`, with
//! `-2`, `-3` … when a run of the same second already left files there.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;

const KINDS: [(&str, &str); 9] = [
    ("workload", "csv"),
    ("faults", "json"),
    ("manifest", "json"),
    ("summary", "json"),
    ("membership", "csv"),
    ("divergence", "csv"),
    ("history", "jsonl"),
    ("history", "spool"),
    ("latency_read", "hlog"),
];

pub struct Outputs {
    dir: PathBuf,
    pub stamp: String,
}

impl Outputs {
    pub fn new(dir: &Path) -> anyhow::Result<Outputs> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating the output folder {}", dir.display()))?;
        let base = utc_stamp(SystemTime::now());
        let stamp = (1..)
            .map(|n| if n == 1 { base.clone() } else { format!("{base}-{n}") })
            .find(|stamp| {
                let taken = |name: String| dir.join(name).exists();
                !KINDS.iter().any(|(kind, ext)| taken(format!("{kind}_{stamp}.{ext}")))
                    && !taken(format!("nodes_{stamp}"))
            })
            .expect("some suffix is free");
        Ok(Outputs { dir: dir.to_owned(), stamp })
    }

    /// `<dir>/<kind>_<stamp>.<ext>`.
    pub fn file(&self, kind: &str, ext: &str) -> PathBuf {
        self.dir.join(format!("{kind}_{}.{ext}", self.stamp))
    }

    /// The folder for per-node counters and logs.
    pub fn nodes_dir(&self) -> anyhow::Result<PathBuf> {
        let dir = self.dir.join(format!("nodes_{}", self.stamp));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    /// The seed's fixed name.
    pub fn repair_results(&self) -> PathBuf {
        self.dir.join("repair_results.json")
    }
}

pub fn write_json(path: &Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_vec_pretty(value)?;
    text.push(b'\n');
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// `20261125_162109` for 2026-11-25T16:21:09Z.
pub fn utc_stamp(at: SystemTime) -> String {
    let rfc3339 = humantime::format_rfc3339_seconds(at).to_string();
    let digits: String = rfc3339.chars().filter(char::is_ascii_digit).collect();
    format!("{}_{}", &digits[..8], &digits[8..14])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn stamps_are_utc_and_a_taken_stamp_gets_a_suffix() {
        let at = UNIX_EPOCH + Duration::from_secs(1_795_623_669); // 2026-11-25T16:21:09Z
        assert_eq!(utc_stamp(at), "20261125_162109");
        let dir = tempfile::tempdir().unwrap();
        let first = Outputs::new(dir.path()).unwrap();
        std::fs::write(first.file("workload", "csv"), "").unwrap();
        let second = Outputs::new(dir.path()).unwrap();
        if second.stamp.starts_with(&first.stamp) {
            assert_eq!(second.stamp, format!("{}-2", first.stamp));
        }
        assert_ne!(first.file("summary", "json"), second.file("summary", "json"));
    }
}
