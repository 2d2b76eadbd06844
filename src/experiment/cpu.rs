//! CPU time the nodes, the driver and the delay line used during a run,
//! and whether the machine was saturated — numbers from a saturated machine
//! measure the machine, not the system under test.

use std::collections::HashMap;
use std::time::Instant;

use serde::Serialize;

use crate::api::run::CpuReport;

/// Busy share of all cores above which a run is flagged.
const SATURATED: f64 = 0.9;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Node,
    DelayLine,
}

pub struct CpuMeter {
    started: Instant,
    /// (pid, start time) → role, ticks at first and last sight.
    processes: HashMap<(u32, u64), (Role, u64, u64)>,
    driver_start: f64,
    machine_start: Option<(u64, u64)>,
}

impl CpuMeter {
    pub fn start(processes: &[(Role, u32)]) -> CpuMeter {
        let mut meter = CpuMeter {
            started: Instant::now(),
            processes: HashMap::new(),
            driver_start: own_cpu_s(),
            machine_start: machine_ticks(),
        };
        meter.sample(processes, true);
        meter
    }

    /// Notes the processes' CPU so far; call before a process may go away
    /// (a crash, the delay line stopping) and at the end. A process first
    /// seen after the start counts from zero: it started during the run.
    pub fn sample(&mut self, processes: &[(Role, u32)], initial: bool) {
        for &(role, pid) in processes {
            let Some(stat) = netns::process::stat(pid) else { continue };
            let entry = self.processes.entry((pid, stat.start_time)).or_insert((
                role,
                if initial { stat.cpu_ticks } else { 0 },
                stat.cpu_ticks,
            ));
            entry.2 = stat.cpu_ticks;
        }
    }

    /// The report; `elsewhere` nodes run on other hosts, out of sight.
    pub fn finish(&mut self, processes: &[(Role, u32)], elsewhere: usize) -> CpuReport {
        self.sample(processes, false);
        let tick = netns::process::ticks_per_second() as f64;
        let used = |role| {
            self.processes.values().filter(|(r, ..)| *r == role).map(|(_, first, last)| last - first).sum::<u64>()
                as f64
                / tick
        };
        let wall_s = self.started.elapsed().as_secs_f64();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let driver_s = own_cpu_s() - self.driver_start;
        let machine_busy = self.machine_start.zip(machine_ticks()).and_then(|((busy0, total0), (busy1, total1))| {
            (total1 > total0).then(|| (busy1 - busy0) as f64 / (total1 - total0) as f64)
        });
        let (nodes_s, delay_line_s) = (used(Role::Node), used(Role::DelayLine));
        let ours = (nodes_s + driver_s + delay_line_s) / (wall_s * cores as f64);
        CpuReport {
            wall_s,
            cores,
            nodes_s,
            nodes_elsewhere: elsewhere,
            driver_s,
            delay_line_s,
            machine_busy,
            saturated: machine_busy.unwrap_or(ours).max(ours) > SATURATED,
        }
    }
}

fn own_cpu_s() -> f64 {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF);
    usage.map_or(0.0, |u| {
        let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
        secs(u.user_time()) + secs(u.system_time())
    })
}

/// (busy, total) jiffies of all cores, from the first line of /proc/stat.
fn machine_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let numbers: Vec<u64> = text.lines().next()?.split_whitespace().skip(1).filter_map(|n| n.parse().ok()).collect();
    let total: u64 = numbers.iter().take(8).sum();
    let idle = numbers.get(3)? + numbers.get(4).unwrap_or(&0);
    Some((total - idle, total))
}
