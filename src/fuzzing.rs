//! Property-based fuzzing on stable Rust: every decoder that reads bytes
//! from outside — peer frames and messages, client contexts, stored
//! objects, plan files, cluster files, HTTP keys and queries — is fed
//! arbitrary and mutated inputs and must answer with an error, never a
//! panic.
//!
//! Each target runs `FUZZ_CASES` inputs (2,000 in the ordinary test run;
//! `scripts/fuzz` runs them by the hundred thousand in release mode) and
//! prints how many it ran.

use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Inputs per target.
pub fn cases() -> u32 {
    std::env::var("FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(2_000)
}

/// Runs `check` on `cases()` inputs drawn from `strategy`; a panic in
/// `check` fails the test with the input that caused it (shrunk).
pub fn run<S: Strategy>(target: &str, strategy: S, check: impl Fn(S::Value)) {
    let cases = cases();
    let config = Config { cases, failure_persistence: None, ..Config::default() };
    let started = Instant::now();
    TestRunner::new(config)
        .run(&strategy, |input| {
            check(input);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("fuzz target {target}: {e}"));
    eprintln!("fuzz {target}: {cases} inputs in {:.1} s, none panicked", started.elapsed().as_secs_f64());
}

/// Arbitrary bytes, and mutations of `valid` (bytes flipped, cut short,
/// extended), which reach far deeper into a decoder than noise does.
pub fn bytes_near(valid: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let noise = proptest::collection::vec(any::<u8>(), 0..256);
    let mutated = (
        proptest::sample::select(valid),
        proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        any::<usize>(),
    )
        .prop_map(|(mut bytes, flips, cut)| {
            for (at, byte) in flips {
                if !bytes.is_empty() {
                    let at = at % bytes.len();
                    bytes[at] = byte;
                }
            }
            let keep = cut % (bytes.len() + 2);
            bytes.truncate(keep.max(bytes.len().saturating_sub(1)));
            if cut % 7 == 0 {
                bytes.extend_from_slice(&cut.to_le_bytes());
            }
            bytes
        });
    prop_oneof![1 => noise, 3 => mutated]
}

/// Text near valid JSON documents: arbitrary strings, and the documents
/// with characters replaced, numbers made huge or negative, and cut short.
pub fn json_near(valid: &[&str]) -> impl Strategy<Value = String> {
    let docs: Vec<String> = valid.iter().map(|s| s.to_string()).collect();
    let noise = "\\PC{0,200}";
    let weird_numbers = ["1e308", "-1", "1e400", "18446744073709551616", "NaN", "0", "-0.0", "4294967296", "\"\""];
    let mutated =
        (proptest::sample::select(docs), any::<usize>(), proptest::sample::select(weird_numbers.to_vec()), any::<u8>())
            .prop_map(|(doc, at, number, mode)| {
                let mut chars: Vec<char> = doc.chars().collect();
                let at = at % (chars.len() + 1);
                match mode % 3 {
                    // Replace the number (or token) starting near `at`.
                    0 => {
                        let end = chars[at..].iter().position(|c| ",}]".contains(*c)).map_or(chars.len(), |p| at + p);
                        let start = chars[..at].iter().rposition(|c| ":[,".contains(*c)).map_or(0, |p| p + 1);
                        chars.splice(start..end, number.chars());
                    }
                    1 => chars.truncate(at),
                    _ => chars.insert(at, ['"', '{', '[', ':', ',', '\\', '\u{0}'][at % 7]),
                }
                chars.into_iter().collect()
            });
    prop_oneof![1 => noise, 4 => mutated]
}

#[cfg(test)]
mod targets {
    use super::*;
    use crate::node::frame::{self, Direction};
    use crate::node::protocol::{Request, Response};
    use crate::node::version::{decode_context, encode_context, Object, VersionVector};

    #[test]
    fn fuzz_peer_frames_and_messages() {
        let ping = frame::encode(7, Direction::Request, &Request::Ping).unwrap().to_vec();
        let read = frame::encode(8, Direction::Request, &Request::Read { key: "user1".into() }).unwrap().to_vec();
        let answer = frame::encode(9, Direction::Response, &Response::Written).unwrap().to_vec();
        let runtime = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        run("peer frames", bytes_near(vec![ping, read, answer]), |bytes| {
            runtime.block_on(async {
                let mut reader = bytes.as_slice();
                while let Ok(Some(f)) = frame::read(&mut reader).await {
                    let _ = frame::decode::<Request>(&f.payload);
                    let _ = frame::decode::<Response>(&f.payload);
                }
            });
        });
    }

    #[test]
    fn fuzz_contexts() {
        let clock: VersionVector = serde_json::from_value(serde_json::json!({"entries": {
            "node1.abc123": {"counter": 5, "ts_ms": 0}, "node2.xyz789": {"counter": 70000, "ts_ms": 0}
        }}))
        .unwrap();
        let valid = encode_context(&clock).into_bytes();
        run("client contexts", bytes_near(vec![valid]), |bytes| {
            if let Ok(text) = std::str::from_utf8(&bytes) {
                if let Ok(clock) = decode_context(text) {
                    // What decodes must be printable in a header.
                    assert!(hyper::header::HeaderValue::from_str(&clock.readable()).is_ok(), "{clock}");
                }
            }
        });
    }

    #[test]
    fn fuzz_stored_objects() {
        let mut object = Object::default();
        let dot = crate::node::version::Dot { actor: "node1.abc123".into(), counter: 3 };
        object.update(&VersionVector::default(), dot, Some("value".into()), 1, 10);
        run("stored objects", bytes_near(vec![object.encode()]), |bytes| {
            if let Ok(object) = Object::decode(&bytes) {
                assert_eq!(Object::decode(&object.encode()).as_ref(), Ok(&object), "decode-encode round trip");
            }
        });
    }

    #[test]
    fn fuzz_plan_files() {
        let plans = [
            r#"[{"at_s": 5, "duration_s": 10, "kind": "slow", "targets": ["node2"], "params": {"slow_ms": 100}}]"#,
            r#"[{"at_s": 0.5, "duration_s": 3, "kind": "partition", "targets": ["node1"], "layer": "app", "params": {"partition_clients": "isolate"}}, {"at_s": 2, "duration_s": 1, "kind": "loss", "targets": ["node3"], "params": {"loss_pct": 20}}]"#,
        ];
        run("plan files", json_near(&plans), |text| {
            if let Ok(events) = crate::faults::plan::parse(&text) {
                // The runners wait for each step with a Duration.
                for step in crate::faults::plan::timeline(&events) {
                    assert!(std::time::Duration::try_from_secs_f64(step.at_s()).is_ok(), "{step:?} of {text}");
                }
            }
        });
    }

    #[test]
    fn fuzz_cluster_files() {
        let procs = r#"{"node1": {"pid": 12345, "port": 60000, "host": "198.18.0.2", "peer_port": 61000, "netns": "dyb-n1", "data_dir": "/tmp/d1"}, "node10": {"pid": 2, "port": 60009, "host": "127.0.0.10", "peer_port": 61009, "netns": null, "data_dir": "d"}}"#;
        let meta = r#"{"n": 3, "partitions": 256, "mode": "netns", "prefix": "dyb", "client_netns": "dyb-client", "admin_token": "x", "nodes": {"node1": {"argv": ["dynabed", "node"], "start_time": 5, "log": null}}}"#;
        run("cluster files", json_near(&[procs, meta]), |text| {
            if let Ok(procs) =
                serde_json::from_str::<std::collections::BTreeMap<String, crate::cluster::files::NodeEntry>>(&text)
            {
                for (name, entry) in &procs {
                    let _ = crate::cluster::files::natural_key(name);
                    let _ = crate::cluster::launch::client_addr(entry);
                }
            }
            let _ = serde_json::from_str::<crate::cluster::files::Meta>(&text);
        });
    }
}
