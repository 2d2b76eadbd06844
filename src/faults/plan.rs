//! Fault plans: faults as data, a timeline of events
//! `{at_s, duration_s, kind, targets, layer, params}` in JSON, as Jepsen's
//! nemesis schedules are. `at_s` counts from the start of the plan (the
//! measured workload, when the driver runs it).

use std::path::Path;

use anyhow::{bail, Context};

use super::fault::{defaults, FaultError, FaultRequest};
use crate::api::fault::{Clients, Params};
use crate::api::fault::{FaultEvent, Kind, Layer};

impl FaultEvent {
    /// One request per target; a partition's targets form one side of a
    /// single split.
    pub fn requests(&self) -> Result<Vec<FaultRequest>, FaultError> {
        let request = |node: &String, with: &[String]| {
            FaultRequest::new(self.kind, self.layer, node.clone(), with.to_vec(), &self.params)
        };
        match (self.kind, self.targets.split_first()) {
            (Kind::Partition, Some((node, with))) => Ok(vec![request(node, with)?]),
            _ => self.targets.iter().map(|node| request(node, &[])).collect(),
        }
    }

    /// A one-event plan's event: `request` from the plan's start for
    /// `duration_s` (`dynabed fault KIND --duration`).
    pub fn holding(request: &FaultRequest, params: Params, duration_s: f64) -> FaultEvent {
        let (kind, layer, targets) = (request.fault.kind(), request.layer, request.targets());
        FaultEvent { at_s: 0.0, duration_s, kind, targets, layer, params }
    }

    fn check(&self, index: usize) -> anyhow::Result<()> {
        let what = format!("event {index} ({:?} at {} s)", self.kind, self.at_s);
        if !(0.0..=MAX_SECONDS).contains(&self.at_s) {
            bail!("{what}: at_s must be a number of seconds from 0 to {MAX_SECONDS}");
        }
        if !(self.duration_s > 0.0 && self.duration_s <= MAX_SECONDS) {
            bail!("{what}: duration_s must be a number of seconds > 0 and ≤ {MAX_SECONDS}");
        }
        if self.targets.is_empty() {
            bail!("{what}: targets must name at least one node");
        }
        self.requests().map(drop).map_err(|e| anyhow::anyhow!("{what}: {e}"))
    }
}

/// The longest time a plan, a flag or a held fault may name, in seconds
/// (11.6 days): enough for any experiment, and far inside what a
/// `Duration` can hold, so no time in a plan can overflow one.
pub const MAX_SECONDS: f64 = 1e6;

/// Parses a number of seconds for a flag: finite, ≥ 0, ≤ [`MAX_SECONDS`].
pub fn parse_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if (0.0..=MAX_SECONDS).contains(&s) => Ok(s),
        _ => Err(format!("expected a number of seconds from 0 to {MAX_SECONDS}")),
    }
}

/// The seed's `--failure_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailureMode {
    None,
    Crash,
    Slow,
    #[value(name = "single_partition")]
    SinglePartition,
    Partition,
    Pause,
    Loss,
}

/// The seed's `--partition_style`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PartitionStyle {
    Drop,
    Delay,
}

/// The seed's failure flags, which build a one-event plan.
#[derive(Debug, Clone, clap::Args)]
pub struct SeedFlags {
    /// The seed's none, crash, slow, single_partition or partition; or
    /// pause (SIGSTOP) or loss (--loss_pct).
    #[arg(long = "failure_mode", visible_alias = "failure-mode", default_value = "none")]
    pub failure_mode: FailureMode,
    /// Seconds before the failure starts.
    #[arg(long, default_value_t = 10.0, value_parser = parse_seconds)]
    pub warmup: f64,
    /// Seconds the failure lasts.
    #[arg(long = "failure_duration", visible_alias = "failure-duration", default_value_t = 20.0, value_parser = parse_seconds)]
    pub failure_duration: f64,
    /// Added round-trip delay of a slow node.
    #[arg(long = "slow_ms", visible_alias = "slow-ms", default_value_t = defaults::SLOW_MS)]
    pub slow_ms: u64,
    /// Delay of the seed's huge-delay partition (with --partition_style delay) [default: 60000].
    #[arg(long = "partition_ms", visible_alias = "partition-ms")]
    pub partition_ms: Option<u64>,
    /// `drop` cuts the node off; `delay` is the seed's huge-delay variant.
    #[arg(long = "partition_style", visible_alias = "partition-style", default_value = "drop")]
    pub partition_style: PartitionStyle,
    /// kernel or app.
    #[arg(long = "fault_layer", visible_alias = "fault-layer", default_value = "kernel")]
    pub fault_layer: Layer,
    /// The node to break [default: drawn from --seed].
    #[arg(long)]
    pub target: Option<String>,
    /// Seed of every random choice (here: the target).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Leave a crashed node down.
    #[arg(long = "no_restart", visible_alias = "no-restart")]
    pub no_restart: bool,
    /// Partitions: `isolate` cuts the node from clients too.
    #[arg(long = "partition_clients", visible_alias = "partition-clients", default_value = "keep")]
    pub partition_clients: Clients,
    /// Chance of dropping each packet, per direction, for `loss`.
    #[arg(long = "loss_pct", visible_alias = "loss-pct", default_value_t = defaults::LOSS_PCT, value_parser = clap::value_parser!(u8).range(1..=100))]
    pub loss_pct: u8,
}

/// The seed's huge delay that stands for a partition (`--partition_style delay`).
const PARTITION_DELAY_MS: u64 = 60_000;

impl SeedFlags {
    /// The plan, with notes for the record (the target drawn, flags unused).
    pub fn plan(&self, nodes: &[String]) -> anyhow::Result<(Vec<FaultEvent>, Vec<String>)> {
        let mut notes = Vec::new();
        let drop_style = self.partition_style == PartitionStyle::Drop;
        let partition = matches!(self.failure_mode, FailureMode::Partition | FailureMode::SinglePartition);
        if self.partition_ms.is_some() && (drop_style || !partition) {
            notes.push("--partition_ms is unused: it only sets the delay of --partition_style delay partitions".into());
        }
        if self.failure_mode == FailureMode::None {
            return Ok((Vec::new(), notes));
        }
        let target = match &self.target {
            Some(node) if nodes.contains(node) => node.clone(),
            Some(node) => bail!("--target {node} is not a node of this cluster (nodes: {})", nodes.join(", ")),
            None => {
                use rand::{Rng, SeedableRng};
                let mut rng = rand::rngs::StdRng::seed_from_u64(self.seed);
                let node =
                    nodes.get(rng.random_range(0..nodes.len().max(1))).context("the cluster has no nodes")?.clone();
                notes.push(format!("target {node} drawn from seed {}", self.seed));
                node
            }
        };
        let (kind, slow_ms) = match self.failure_mode {
            FailureMode::Crash => (Kind::Crash, None),
            FailureMode::Slow => (Kind::Slow, Some(self.slow_ms)),
            FailureMode::Pause => (Kind::Pause, None),
            FailureMode::Loss => (Kind::Loss, None),
            _ if drop_style => (Kind::Partition, None),
            _ => (Kind::Slow, Some(self.partition_ms.unwrap_or(PARTITION_DELAY_MS))),
        };
        let event = FaultEvent {
            at_s: self.warmup,
            duration_s: self.failure_duration,
            kind,
            targets: vec![target],
            layer: self.fault_layer,
            params: Params {
                slow_ms,
                no_restart: Some(self.no_restart),
                partition_clients: (kind == Kind::Partition).then_some(self.partition_clients),
                loss_pct: (kind == Kind::Loss).then_some(self.loss_pct),
                ..Params::default()
            },
        };
        event.check(0)?;
        Ok((vec![event], notes))
    }
}

/// Parses and checks a plan: a JSON list of events.
pub fn parse(text: &str) -> anyhow::Result<Vec<FaultEvent>> {
    let events: Vec<FaultEvent> = serde_json::from_str(text).context("a plan is a JSON list of fault events")?;
    for (i, event) in events.iter().enumerate() {
        event.check(i)?;
    }
    Ok(events)
}

pub fn load(path: &Path) -> anyhow::Result<Vec<FaultEvent>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the plan {}", path.display()))?;
    parse(&text).with_context(|| format!("in {}", path.display()))
}

/// A plan's actions in time order: apply at `at_s`, heal at `at_s + duration_s`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    Apply { event: usize, at_s: f64 },
    Heal { event: usize, at_s: f64 },
}

impl Step {
    pub fn at_s(&self) -> f64 {
        match self {
            Step::Apply { at_s, .. } | Step::Heal { at_s, .. } => *at_s,
        }
    }
}

/// The timeline of a plan; at equal times heals come before applies, so a
/// fault that ends when another starts never overlaps it.
pub fn timeline(events: &[FaultEvent]) -> Vec<Step> {
    let mut steps: Vec<Step> = events
        .iter()
        .enumerate()
        .flat_map(|(i, e)| {
            [Step::Apply { event: i, at_s: e.at_s }, Step::Heal { event: i, at_s: e.at_s + e.duration_s }]
        })
        .collect();
    steps.sort_by(|a, b| {
        a.at_s().total_cmp(&b.at_s()).then(matches!(a, Step::Apply { .. }).cmp(&matches!(b, Step::Apply { .. })))
    });
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_timeline_with_defaults() {
        let events = parse(
            r#"[{"at_s": 10, "duration_s": 20, "kind": "slow", "targets": ["node3"], "params": {"slow_ms": 500}},
                {"at_s": 30, "duration_s": 5, "kind": "partition", "targets": ["node1", "node2"], "layer": "app"}]"#,
        )
        .unwrap();
        assert_eq!(events[0].layer, Layer::Kernel);
        assert_eq!(
            events[0].requests().unwrap()[0].fault,
            super::super::fault::Fault::Slow { slow_ms: 500, jitter: None, port: crate::api::fault::PortSelector::All }
        );
        let split = events[1].requests().unwrap();
        assert_eq!(split.len(), 1, "one split with both targets on one side");
        assert_eq!(split[0].targets(), ["node1", "node2"]);
        let steps = timeline(&events);
        assert_eq!(steps[0], Step::Apply { event: 0, at_s: 10.0 });
        assert_eq!(steps[1], Step::Heal { event: 0, at_s: 30.0 }, "a heal precedes an apply at the same time");
        assert_eq!(steps[2], Step::Apply { event: 1, at_s: 30.0 });
    }

    fn seed_flags(args: &[&str]) -> SeedFlags {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            flags: SeedFlags,
        }
        Cli::parse_from(std::iter::once("x").chain(args.iter().copied())).flags
    }

    #[test]
    fn the_seed_flags_make_a_one_event_plan() {
        let nodes: Vec<String> = (1..=5).map(|i| format!("node{i}")).collect();
        let flags = seed_flags(&["--failure_mode", "slow", "--slow_ms", "500", "--failure_duration", "15"]);
        let (plan, notes) = flags.plan(&nodes).unwrap();
        assert_eq!((plan[0].kind, plan[0].at_s, plan[0].duration_s), (Kind::Slow, 10.0, 15.0));
        assert_eq!(plan[0].params.slow_ms, Some(500));
        assert!(notes[0].contains("drawn from seed 1"));
        assert_eq!(flags.plan(&nodes).unwrap().0, plan, "the same seed draws the same target");

        let huge = seed_flags(&["--failure_mode", "partition", "--partition_style", "delay", "--target", "node2"]);
        let (plan, _) = huge.plan(&nodes).unwrap();
        assert_eq!(
            (plan[0].kind, plan[0].params.slow_ms, plan[0].targets[0].as_str()),
            (Kind::Slow, Some(60_000), "node2")
        );

        let (plan, notes) =
            seed_flags(&["--failure_mode", "partition", "--partition_ms", "60000"]).plan(&nodes).unwrap();
        assert_eq!(plan[0].kind, Kind::Partition);
        assert!(notes[0].contains("--partition_ms is unused"), "{notes:?}");

        assert!(seed_flags(&[]).plan(&nodes).unwrap().0.is_empty(), "none: a control run");
        let wrong = seed_flags(&["--failure_mode", "crash", "--target", "node9"]).plan(&nodes).unwrap_err();
        assert!(wrong.to_string().contains("node9"));
    }

    #[test]
    fn rejects_bad_plans_with_a_reason() {
        for (plan, reason) in [
            (r#"[{"at_s": -1, "duration_s": 1, "kind": "pause", "targets": ["n"]}]"#, "at_s"),
            (r#"[{"at_s": 0, "duration_s": 0, "kind": "pause", "targets": ["n"]}]"#, "duration_s"),
            (r#"[{"at_s": 0, "duration_s": 1, "kind": "pause", "targets": []}]"#, "targets"),
            (r#"[{"at_s": 0, "duration_s": 1, "kind": "melt", "targets": ["n"]}]"#, "JSON list"),
            (r#"[{"at_s": 0, "duration_s": 1, "kind": "pause", "targets": ["n"], "colour": 1}]"#, "JSON list"),
        ] {
            let err = format!("{:#}", parse(plan).unwrap_err());
            assert!(err.contains(reason), "{plan}: {err}");
        }
    }

    #[test]
    fn fuzz_plan_files() {
        let plans = [
            r#"[{"at_s": 5, "duration_s": 10, "kind": "slow", "targets": ["node2"], "params": {"slow_ms": 100}}]"#,
            r#"[{"at_s": 0.5, "duration_s": 3, "kind": "partition", "targets": ["node1"], "layer": "app", "params": {"partition_clients": "isolate"}}, {"at_s": 2, "duration_s": 1, "kind": "loss", "targets": ["node3"], "params": {"loss_pct": 20}}]"#,
        ];
        crate::fuzzing::run("plan files", crate::fuzzing::json_near(&plans), |text| {
            if let Ok(events) = parse(&text) {
                // The runners wait for each step with a Duration.
                for step in timeline(&events) {
                    assert!(std::time::Duration::try_from_secs_f64(step.at_s()).is_ok(), "{step:?} of {text}");
                }
            }
        });
    }
}
