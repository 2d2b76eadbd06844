//! `/metrics` as Prometheus reads it: parsed by the OpenMetrics parser of
//! Prometheus's own Python client (python3-prometheus-client, installed by
//! `scripts/setup --test`), and holding what the requests made.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::TestCluster;
use serde_json::Value;

/// The families the reference parser found: name → (type, unit, samples as
/// (sample name, labels, value)). It fails on anything the format forbids.
const PARSE: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
families = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    families[f.name] = {"type": f.type, "unit": f.unit,
                        "samples": [[s.name, s.labels, s.value] for s in f.samples]}
print(json.dumps(families))
"#;

/// The system Python, where the Debian package puts the parser.
const PYTHON: &str = "/usr/bin/python3";

fn parse(text: &str) -> Value {
    let mut child = Command::new(PYTHON)
        .args(["-c", PARSE])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("/usr/bin/python3 runs");
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("No module named 'prometheus_client'"),
        "the parser is missing: run scripts/setup --test (python3-prometheus-client)"
    );
    assert!(out.status.success(), "the OpenMetrics parser rejects /metrics: {stderr}\n{text}");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn curl(args: &[&str]) -> (String, String) {
    let out = Command::new("curl").args(["-s", "-S", "-D", "/dev/stderr"]).args(args).output().expect("curl runs");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The value of `family`'s sample `sample` whose labels include `labels`.
fn value(families: &Value, family: &str, sample: &str, labels: &[(&str, &str)]) -> Option<f64> {
    families[family]["samples"].as_array()?.iter().find_map(|s| {
        let matches = s[0] == sample && labels.iter().all(|(k, v)| s[1][*k] == *v);
        matches.then(|| s[2].as_f64()).flatten()
    })
}

#[test]
fn metrics_parse_as_openmetrics_and_count_the_requests_made() {
    let cluster = TestCluster::up(185, 3, "memory", &[]);
    let base = format!("http://{}", cluster.nodes["node1"]);
    let puts = 25;
    for i in 0..puts {
        // POST is a put too, and must be counted as one.
        let method = if i % 5 == 0 { "POST" } else { "PUT" };
        let (_, headers) = curl(&["-X", method, "--data-binary", "v", &format!("{base}/kv/k{i}")]);
        assert!(headers.starts_with("HTTP/1.1 204"), "{headers}");
    }
    let (_, headers) = curl(&[&format!("{base}/kv/absent")]);
    assert!(headers.starts_with("HTTP/1.1 404"), "{headers}");
    let (_, headers) = curl(&[&format!("{base}/kv/k0?r=9")]);
    assert!(headers.starts_with("HTTP/1.1 400"), "{headers}");

    let (text, headers) = curl(&[&format!("{base}/metrics")]);
    assert!(headers.to_lowercase().contains("content-type: application/openmetrics-text"), "{headers}");
    let families = parse(&text);
    let node1 = ("node", "node1");

    assert_eq!(families["dynabed_requests"]["type"], "counter");
    let requests = |op, status| {
        value(&families, "dynabed_requests", "dynabed_requests_total", &[node1, ("op", op), ("status", status)])
    };
    assert_eq!(requests("put", "204"), Some(puts as f64));
    assert_eq!(requests("get", "404"), Some(1.0));
    assert_eq!(requests("get", "400"), Some(1.0));
    assert_eq!(value(&families, "dynabed_puts", "dynabed_puts_total", &[node1]), Some(puts as f64));

    // The memory engine buffers nothing beside its data.
    let buffered = &families["dynabed_storage_write_buffer_bytes"];
    assert_eq!((&buffered["type"], &buffered["unit"]), (&Value::from("gauge"), &Value::from("bytes")));
    let buffered =
        value(&families, "dynabed_storage_write_buffer_bytes", "dynabed_storage_write_buffer_bytes", &[node1]);
    assert_eq!(buffered, Some(0.0));

    let latency = &families["dynabed_request_duration_seconds"];
    assert_eq!((&latency["type"], &latency["unit"]), (&Value::from("histogram"), &Value::from("seconds")));
    let count = value(
        &families,
        "dynabed_request_duration_seconds",
        "dynabed_request_duration_seconds_count",
        &[("op", "put")],
    );
    assert_eq!(count, Some(puts as f64), "every put is timed");
    let inf = [("op", "put"), ("le", "+Inf")];
    let all = value(&families, "dynabed_request_duration_seconds", "dynabed_request_duration_seconds_bucket", &inf);
    assert_eq!(all, Some(puts as f64));

    // Each put was written to both other replicas (N = 3 on 3 nodes).
    let writes = [("call", "write"), ("outcome", "ok")];
    let peer =
        value(&families, "dynabed_peer_call_duration_seconds", "dynabed_peer_call_duration_seconds_count", &writes);
    assert!(peer.is_some_and(|n| n >= puts as f64), "peer writes timed: {peer:?}");

    assert_eq!(
        value(&families, "dynabed_build_info", "dynabed_build_info", &[("version", env!("CARGO_PKG_VERSION"))]),
        Some(1.0)
    );
    assert_eq!(value(&families, "dynabed_members_alive", "dynabed_members_alive", &[node1]), Some(3.0));
    let rss = value(&families, "process_resident_memory_bytes", "process_resident_memory_bytes", &[]);
    assert!(rss.is_some_and(|b| b > 1e6), "the node's RSS: {rss:?}");
    assert_eq!(families["process_cpu_seconds"]["type"], "counter");
    let fds = value(&families, "process_open_fds", "process_open_fds", &[]);
    assert!(fds.is_some_and(|n| n >= 3.0), "the node's descriptors: {fds:?}");
}
