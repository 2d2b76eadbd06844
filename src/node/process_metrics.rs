//! The process's own figures under the names every Prometheus client
//! library exports (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! …), read from `/proc/self` at each scrape, so that a dashboard made for
//! any other service graphs a node's CPU, memory and descriptors as is.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

#[derive(Debug)]
pub struct ProcessCollector;

/// What `/proc/self/stat` and its neighbours say, in Prometheus's units.
#[derive(Debug, PartialEq)]
struct Figures {
    cpu_seconds: f64,
    resident_bytes: i64,
    virtual_bytes: i64,
    start_time_seconds: f64,
    threads: i64,
    open_fds: i64,
    max_fds: i64,
}

impl Figures {
    fn read() -> Option<Figures> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|v| v.trim().parse::<f64>().ok())?;
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as i64;
        let max_fds = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).ok()?.0;
        // SAFETY: sysconf only reads a configuration value.
        let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
        let mut figures = parse_stat(&stat, ticks as f64, page, boot_time)?;
        figures.open_fds = open_fds;
        figures.max_fds = i64::try_from(max_fds).unwrap_or(i64::MAX);
        Some(figures)
    }
}

/// The fields of `/proc/self/stat` after the command name (which may hold
/// spaces and parentheses, hence the search for the last `)`), by their
/// numbers in proc(5).
fn parse_stat(stat: &str, ticks_per_s: f64, page_bytes: i64, boot_time: f64) -> Option<Figures> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state).
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<f64>().ok());
    Some(Figures {
        cpu_seconds: (field(14)? + field(15)?) / ticks_per_s,
        threads: field(20)? as i64,
        start_time_seconds: boot_time + field(22)? / ticks_per_s,
        virtual_bytes: field(23)? as i64,
        resident_bytes: field(24)? as i64 * page_bytes,
        open_fds: 0,
        max_fds: 0,
    })
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(f) = Figures::read() else { return Ok(()) };
        let cpu = ConstCounter::new(f.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "user and system CPU time spent, in seconds",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges = [
            ("process_resident_memory_bytes", "resident memory size in bytes", f.resident_bytes as f64),
            ("process_virtual_memory_bytes", "virtual memory size in bytes", f.virtual_bytes as f64),
            (
                "process_start_time_seconds",
                "start time of the process since the Unix epoch, in seconds",
                f.start_time_seconds,
            ),
            ("process_threads", "threads in the process", f.threads as f64),
            ("process_open_fds", "open file descriptors", f.open_fds as f64),
            ("process_max_fds", "the limit on open file descriptors", f.max_fds as f64),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields() {
        let stat = "4242 (dyna bed) (x)) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 7 0 \
                    1000 123456789 2048 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0";
        let f = parse_stat(stat, 100.0, 4096, 1_700_000_000.0).unwrap();
        assert_eq!(f.cpu_seconds, 3.0);
        assert_eq!(f.threads, 7);
        assert_eq!(f.start_time_seconds, 1_700_000_010.0);
        assert_eq!((f.virtual_bytes, f.resident_bytes), (123_456_789, 2048 * 4096));
    }

    #[test]
    fn this_process_reads_as_alive_and_using_memory() {
        let f = Figures::read().unwrap();
        assert!(f.resident_bytes > 0 && f.threads >= 1 && f.open_fds >= 3 && f.max_fds >= f.open_fds, "{f:?}");
    }
}
