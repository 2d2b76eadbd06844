//! When each fault happens: a plan's events as one Chaos Mesh Workflow that
//! waits `at_s`, then holds each fault for `duration_s` (a Serial of a
//! Suspend and the chaos with a deadline, all in Parallel), and as one
//! standalone experiment per fault lasting `duration_s`, to apply by hand.

use serde_json::{json, Value};

use super::chaos::Chaos;

const API_VERSION: &str = "chaos-mesh.org/v1alpha1";

/// One fault of the plan, with its place in time.
pub struct Timed {
    /// A DNS-label name, unique in the plan (`f0-crash-node2`).
    pub name: String,
    pub at_s: f64,
    pub duration_s: f64,
    pub chaos: Chaos,
}

/// The whole plan, timed from the moment the Workflow is applied.
pub fn workflow(name: &str, namespace: &str, labels: &Value, faults: &[Timed]) -> Value {
    let mut templates = vec![json!({
        "name": "plan",
        "templateType": "Parallel",
        "children": faults.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
    })];
    for fault in faults {
        let (wait, hold) = (format!("{}-wait", fault.name), format!("{}-hold", fault.name));
        // A fault at 0 s starts at once: no zero-length wait.
        let children = if fault.at_s > 0.0 { vec![wait.clone(), hold.clone()] } else { vec![hold.clone()] };
        templates.push(json!({"name": fault.name, "templateType": "Serial", "children": children}));
        if fault.at_s > 0.0 {
            templates.push(json!({"name": wait, "templateType": "Suspend", "deadline": seconds(fault.at_s)}));
        }
        templates.push(json!({
            "name": hold,
            "templateType": fault.chaos.kind,
            "deadline": seconds(fault.duration_s),
            fault.chaos.template_field(): fault.chaos.spec,
        }));
    }
    json!({
        "apiVersion": API_VERSION,
        "kind": "Workflow",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"entry": "plan", "templates": templates},
    })
}

/// One fault on its own: it starts when applied and lasts `duration_s`.
pub fn standalone(namespace: &str, labels: &Value, fault: &Timed) -> Value {
    let mut spec = fault.chaos.spec.clone();
    spec["duration"] = seconds(fault.duration_s).into();
    json!({
        "apiVersion": API_VERSION,
        "kind": fault.chaos.kind,
        "metadata": {"name": fault.name, "namespace": namespace, "labels": labels},
        "spec": spec,
    })
}

/// A Go duration, to the millisecond (`10s`, `1500ms`).
fn seconds(s: f64) -> String {
    let ms = (s * 1000.0).round() as u64;
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_go_durations() {
        assert_eq!(seconds(10.0), "10s");
        assert_eq!(seconds(0.0), "0s");
        assert_eq!(seconds(1.5), "1500ms");
    }
}
