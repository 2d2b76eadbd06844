//! Each fault of the test bed as the Chaos Mesh experiment that does the
//! same to a pod — or the reason none does. A fault Chaos Mesh cannot make
//! is refused by name, never dropped or quietly made into another.
//!
//! | fault | Chaos Mesh |
//! |---|---|
//! | crash | PodChaos `pod-failure` for the fault's duration: the node's process is gone, then restarts on its own data |
//! | slow, reorder | NetworkChaos `delay` on the node's outgoing packets (once per round trip), reorder as netem's `reorder` |
//! | partition | NetworkChaos `partition` between the side and the other nodes (and the driver, with `isolate`), in the fault's direction |
//! | loss, duplicate, corrupt | NetworkChaos on the packets between the node and every other pod, both directions |
//! | cpu | StressChaos: full-load CPU workers in the node's one-core container, so that its fair share is about `cpu_pct` % |
//! | skew | TimeChaos: the node's process reads its wall clock `offset_ms` off (an offset only: no drift) |

use serde_json::{json, Value};

use super::workload::{Layout, COMPONENT, PART_OF, POD_NAME};
use crate::api::admin::ClockSkew;
use crate::api::fault::{Clients, CutDirection, JitterDist, Layer, PortSelector};
use crate::faults::fault::{Fault, FaultRequest, Jitter};

/// A Chaos Mesh experiment's kind and spec, without its timing.
#[derive(Debug, Clone, PartialEq)]
pub struct Chaos {
    /// `PodChaos`, `NetworkChaos` or `StressChaos`.
    pub kind: &'static str,
    pub spec: Value,
}

impl Chaos {
    /// The field a Workflow template holds this kind's spec in (`podChaos`).
    pub fn template_field(&self) -> String {
        let mut field = self.kind.to_owned();
        field[..1].make_ascii_lowercase();
        field
    }
}

/// Why a fault has no Chaos Mesh form.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("no Chaos Mesh equivalent: {0}")]
pub struct Unsupported(String);

fn refuse(why: &str) -> Unsupported {
    Unsupported(why.to_owned())
}

/// The experiment that makes `request`'s fault on its pods.
pub fn chaos_for(request: &FaultRequest, layout: &Layout) -> anyhow::Result<Chaos> {
    // A skew is the node's own clock, which TimeChaos shifts from outside.
    if request.layer == Layer::App && !matches!(request.fault, Fault::Skew(_)) {
        return Err(refuse(
            "application-level faults are the node's own admin hooks, which Chaos Mesh does not call: use layer kernel",
        )
        .into());
    }
    if request.fault.port() != PortSelector::All {
        return Err(refuse("Chaos Mesh's network faults cannot select packets by port: use port all").into());
    }
    let side = request.targets().iter().map(|id| layout.pod_of(id)).collect::<anyhow::Result<Vec<_>>>()?;
    Ok(chaos_of(&request.fault, layout, &side)?)
}

/// `fault` on the pods of `side`.
fn chaos_of(fault: &Fault, layout: &Layout, side: &[String]) -> Result<Chaos, Unsupported> {
    let pods = json!({"pods": {layout.namespace.clone(): side}});
    let network = |action: &str, settings: Value| {
        let mut spec = json!({"action": action, "mode": "all", "selector": pods});
        merge(&mut spec, settings);
        Ok(Chaos { kind: "NetworkChaos", spec })
    };
    // Both directions between the side and every other pod, the driver's too.
    let everyone_else = |settings: Value| {
        let target = json!({"mode": "all", "selector": others(layout, side, None)});
        with(json!({"direction": "both", "target": target}), settings)
    };
    match fault {
        Fault::Crash { restart: true } => {
            Ok(Chaos { kind: "PodChaos", spec: json!({"action": "pod-failure", "mode": "all", "selector": pods}) })
        }
        Fault::Crash { restart: false } => Err(refuse(
            "crash with no_restart: a StatefulSet restarts its pods, so a node cannot stay down past the fault's duration",
        )),
        Fault::Pause => Err(refuse("Chaos Mesh cannot stop (SIGSTOP) a process: PodChaos only kills or fails pods")),
        Fault::Slow { slow_ms, jitter, .. } => network("delay", json!({"delay": delay(*slow_ms, *jitter)?})),
        Fault::Reorder { pct, slow_ms, .. } => {
            let reorder = json!({"reorder": pct.to_string(), "correlation": "0", "gap": 0});
            network("delay", json!({"delay": {"latency": millis(*slow_ms), "reorder": reorder}}))
        }
        Fault::Partition { direction, clients, .. } => {
            let component = (*clients == Clients::Keep).then_some("node");
            let direction = match direction {
                CutDirection::Both => "both",
                CutDirection::In => "from",
                CutDirection::Out => "to",
            };
            let target = json!({"mode": "all", "selector": others(layout, side, component)});
            network("partition", json!({"direction": direction, "target": target}))
        }
        Fault::Loss { pct, correlation_pct: None, .. } => {
            network("loss", everyone_else(json!({"loss": {"loss": pct.to_string(), "correlation": "0"}})))
        }
        Fault::Loss { correlation_pct: Some(_), .. } => Err(refuse(
            "loss_correlation_pct: Chaos Mesh's loss correlation is netem's correlated draw, not Gilbert's bursts",
        )),
        Fault::Duplicate { pct, .. } => network(
            "duplicate",
            everyone_else(json!({"duplicate": {"duplicate": pct.to_string(), "correlation": "0"}})),
        ),
        Fault::Corrupt { pct, .. } => {
            network("corrupt", everyone_else(json!({"corrupt": {"corrupt": pct.to_string(), "correlation": "0"}})))
        }
        Fault::Cpu { pct } => {
            let stressors = json!({"cpu": {"workers": cpu_workers(*pct)?, "load": 100}});
            Ok(Chaos { kind: "StressChaos", spec: json!({"mode": "all", "selector": pods, "stressors": stressors}) })
        }
        Fault::Skew(ClockSkew { offset_ms, drift_ppm: 0 }) => Ok(Chaos {
            kind: "TimeChaos",
            spec: json!({"mode": "all", "selector": pods, "timeOffset": format!("{offset_ms}ms"),
                         "clockIds": ["CLOCK_REALTIME"]}),
        }),
        Fault::Skew(_) => Err(refuse("drift_ppm: TimeChaos shifts a clock by a fixed offset; it cannot make it run fast or slow")),
        Fault::Bandwidth { .. } => Err(refuse(
            "Chaos Mesh's bandwidth limit shapes a pod's outgoing traffic only, and this fault limits each direction",
        )),
    }
}

/// Netem's delay; its jitter is spread evenly over ±jitter (Chaos Mesh has
/// no setting for the distribution), so only the default normal is taken.
fn delay(slow_ms: u64, jitter: Option<Jitter>) -> Result<Value, Unsupported> {
    let mut delay = json!({"latency": millis(slow_ms), "correlation": "0"});
    match jitter {
        Some(Jitter { dist: JitterDist::Pareto, .. }) => {
            return Err(refuse("jitter_dist pareto: Chaos Mesh's delay has no jitter distribution"))
        }
        Some(Jitter { ms, .. }) => merge(&mut delay, json!({"jitter": millis(ms)})),
        None => {}
    }
    Ok(delay)
}

/// Full-load workers that share the node's one core with it: with W of
/// them, the scheduler's fair share leaves the node 1/(W+1) of the core.
fn cpu_workers(pct: u32) -> Result<u32, Unsupported> {
    match pct {
        1..=50 => Ok((100 + pct / 2) / pct - 1),
        _ => Err(refuse("cpu_pct above 50: a CPU stressor beside the node leaves it at most half its core")),
    }
}

/// Every pod of the test bed but `side` (only nodes, with a `component`).
fn others(layout: &Layout, side: &[String], component: Option<&str>) -> Value {
    let mut labels = json!({PART_OF.0: PART_OF.1});
    if let Some(component) = component {
        merge(&mut labels, json!({COMPONENT: component}));
    }
    json!({
        "namespaces": [layout.namespace],
        "labelSelectors": labels,
        "expressionSelectors": [{"key": POD_NAME, "operator": "NotIn", "values": side}],
    })
}

fn millis(ms: u64) -> String {
    format!("{ms}ms")
}

fn with(mut base: Value, more: Value) -> Value {
    merge(&mut base, more);
    base
}

fn merge(base: &mut Value, more: Value) {
    if let (Value::Object(base), Value::Object(more)) = (base, more) {
        base.extend(more);
    }
}
