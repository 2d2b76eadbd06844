//! Fuzz targets for what a node decodes from outside: peer frames and
//! messages, client contexts and stored objects (see `crate::fuzzing`).

use crate::api::dot::Dot;
use crate::fuzzing::{bytes_near, run};

use super::frame::{self, Direction};
use super::protocol::{Request, Response};
use super::version::{decode_context, encode_context, Object, VersionVector};

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
    let dot = Dot { actor: "node1.abc123".into(), counter: 3 };
    object.update(&VersionVector::default(), dot, Some("value".into()), 1, super::version::PruneRule::count(10));
    run("stored objects", bytes_near(vec![object.encode()]), |bytes| {
        if let Ok(object) = Object::decode(&bytes) {
            assert_eq!(Object::decode(&object.encode()).as_ref(), Ok(&object), "decode-encode round trip");
        }
    });
}
