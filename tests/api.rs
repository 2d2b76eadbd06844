//! The client API on real loopback clusters: curl-compatible HTTP, siblings
//! and contexts, forwarding, bad input, and the seed's hand-started flow.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::{ok, wait_until, TestCluster, BIN};
use dynabed::node::version::{encode_context, VersionVector};
use hyper::Method;

fn curl(args: &[&str]) -> (String, String) {
    let out =
        Command::new("curl").args(["-s", "-S", "-D", "/dev/stderr"]).args(args).output().expect("curl is installed");
    assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn header<'a>(headers: &'a str, name: &str) -> Option<&'a str> {
    headers.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test]
async fn put_get_delete_with_curl() {
    let cluster = TestCluster::up(10, 3, "memory", &[]);
    let base = format!("http://{}", cluster.nodes["node1"]);
    let (_, headers) = curl(&["-X", "PUT", "--data-binary", "hello world", &format!("{base}/kv/greeting")]);
    assert!(headers.starts_with("HTTP/1.1 204"), "{headers}");
    let dot = header(&headers, "X-Dynamo-Dot").expect("dot header");
    assert!(dot.starts_with("node1.") && dot.ends_with(":1"), "{dot}");

    let other = format!("http://{}", cluster.nodes["node3"]);
    let (body, headers) = curl(&[&format!("{other}/kv/greeting")]);
    assert_eq!(body, "hello world");
    assert!(headers.starts_with("HTTP/1.1 200"), "{headers}");
    assert_eq!(header(&headers, "X-Dynamo-Clock"), Some(dot), "the clock shows the write's dot");
    let context = header(&headers, "X-Dynamo-Context").expect("context").to_owned();
    assert!(header(&headers, "X-Dynamo-Coordinator").is_some());

    let (_, headers) =
        curl(&["-X", "DELETE", "-H", &format!("X-Dynamo-Context: {context}"), &format!("{other}/kv/greeting")]);
    assert!(headers.starts_with("HTTP/1.1 204"), "{headers}");
    let (_, headers) = curl(&[&format!("{base}/kv/greeting")]);
    assert!(headers.starts_with("HTTP/1.1 404"), "a deleted key reads as absent: {headers}");
}

#[tokio::test]
async fn concurrent_puts_become_siblings_and_a_context_resolves_them() {
    let cluster = TestCluster::up(11, 3, "memory", &[]);
    ok(&cluster.client("node1").put("k", Bytes::from("left"), None, None).await.unwrap());
    ok(&cluster.client("node2").put("k", Bytes::from("right"), None, None).await.unwrap());

    let read = cluster.client("node3").get("k", None).await.unwrap();
    assert_eq!(read.status, 300, "{}", read.reason());
    let mut values = read.values().unwrap();
    values.sort();
    assert_eq!(values, [Bytes::from("left"), Bytes::from("right")]);
    let json = read.json().unwrap();
    assert_eq!(json["context"].as_str(), read.context.as_deref(), "300 body carries the same context");

    ok(&cluster.client("node2").put("k", Bytes::from("merged"), read.context.as_deref(), None).await.unwrap());
    let after = cluster.client("node1").get("k", Some(3)).await.unwrap();
    assert_eq!(after.status, 200, "{}", after.reason());
    assert_eq!(after.body, "merged");
}

#[tokio::test]
async fn a_node_outside_the_preference_list_forwards_writes_and_coordinates_reads() {
    let cluster = TestCluster::up(12, 5, "memory", &[]);
    for i in 0..20 {
        let key = format!("fwd{i}");
        let owners: Vec<String> = cluster.replicas("node1", &key).await.into_keys().collect();
        assert_eq!(owners.len(), 3);
        let outsider = cluster.ids().into_iter().find(|id| !owners.contains(id)).expect("5 nodes, N=3");
        let put = cluster.client(&outsider).put(&key, Bytes::from("v"), None, None).await.unwrap();
        ok(&put);
        let coordinator = put.coordinator.clone().unwrap();
        assert!(owners.contains(&coordinator), "{key}: {outsider} sent it to {coordinator}, owners {owners:?}");
        let get = cluster.client(&outsider).get(&key, None).await.unwrap();
        assert_eq!(
            get.coordinator.as_deref(),
            Some(outsider.as_str()),
            "{key}: a read is coordinated where it arrives"
        );
        assert_eq!(get.body, "v");
    }
    let forwarded: u64 = {
        let mut total = 0;
        for id in cluster.ids() {
            total += cluster.status(&id).await["counters"]["forwarded"].as_u64().unwrap();
        }
        total
    };
    assert_eq!(forwarded, 20, "every write to an outsider was forwarded once, no read");
}

#[tokio::test]
async fn bad_input_gets_a_clear_4xx_and_the_node_keeps_serving() {
    let cluster = TestCluster::up(13, 3, "fjall", &[]);
    let mut client = cluster.client("node1");
    ok(&client.put("safe", Bytes::from("kept"), None, Some(3)).await.unwrap());

    let too_big = client.put("big", Bytes::from(vec![b'x'; (1 << 20) + 1]), None, None).await.unwrap();
    assert_eq!(too_big.status, 413, "{}", too_big.reason());
    let exactly = client.put("big", Bytes::from(vec![b'x'; 1 << 20]), None, None).await.unwrap();
    assert_eq!(exactly.status, 204, "a value at the limit is fine: {}", exactly.reason());

    let bad_context = client.put("k", Bytes::from("v"), Some("not-a-context"), None).await.unwrap();
    assert_eq!(bad_context.status, 400);
    assert!(bad_context.reason().contains("X-Dynamo-Context"), "{}", bad_context.reason());
    assert_eq!(bad_context.reason().lines().count(), 1);

    // A context whose checksum is right but whose actor could never be a
    // header value: refused before anything is written.
    let forged: VersionVector =
        serde_json::from_value(serde_json::json!({"entries": {"a\nb": {"counter": 1, "ts_ms": 0}}})).unwrap();
    let control = client.put("safe", Bytes::from("evil"), Some(&encode_context(&forged)), None).await.unwrap();
    assert_eq!(control.status, 400, "{}", control.reason());
    assert!(control.reason().contains("actor"), "{}", control.reason());
    for id in cluster.ids() {
        let read = cluster.client(&id).get("safe", None).await.unwrap();
        assert_eq!((read.status.as_u16(), read.body.as_ref()), (200, b"kept".as_ref()), "safe on {id}");
    }

    let unknown = client.send(Method::GET, "/nope", None, Bytes::new()).await.unwrap();
    assert_eq!(unknown.status, 404);
    let bad_quorum = client.get("safe", Some(7)).await.unwrap();
    assert_eq!(bad_quorum.status, 400, "{}", bad_quorum.reason());
    let long_key = client.get(&"k".repeat(2000), None).await.unwrap();
    assert_eq!(long_key.status, 414);
    let mut anonymous = common::TestCluster::client(&cluster, "node1").with_token(None);
    let no_token = anonymous.send(Method::GET, "/admin/replicas/safe", None, Bytes::new()).await.unwrap();
    assert_eq!(no_token.status, 401);

    // Random bytes on the peer port: that connection is closed, nothing else.
    let peer = {
        let mut addr = cluster.nodes["node1"];
        addr.set_port(addr.port() + 1000);
        addr
    };
    let mut raw = std::net::TcpStream::connect(peer).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(&[0x00, 0x00, 0x00, 0x10, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(raw.read(&mut buf).unwrap_or(0), 0, "the node closes a connection that sent garbage");
    let mut huge = std::net::TcpStream::connect(peer).unwrap();
    huge.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    huge.write_all(&u32::MAX.to_be_bytes()).unwrap();
    assert_eq!(huge.read(&mut buf).unwrap_or(0), 0, "an oversized frame length closes the connection");

    let read = client.get("safe", Some(3)).await.unwrap();
    assert_eq!((read.status.as_u16(), read.body.as_ref()), (200, b"kept".as_ref()), "data intact, node serving");
    let status = cluster.status("node1").await;
    assert!(status["counters"]["bad_requests"].as_u64().is_some_and(|n| n >= 7), "{status}");
}

/// The seed's flow: nodes started by hand with only --port and --id write
/// themselves into cluster_procs.json and find each other there.
#[tokio::test]
async fn hand_started_nodes_register_and_form_a_ring() {
    let dir = tempfile::tempdir().unwrap();
    let procs = dir.path().join("cluster_procs.json");
    let mut cluster = TestCluster::adopt(tempfile::tempdir().unwrap(), procs.clone());
    for (i, port) in [60000, 60001, 60002].iter().enumerate() {
        let id = format!("node{}", i + 1);
        let child = Command::new(BIN)
            .args(["node", "--port", &port.to_string(), "--id", &id, "--host", "127.0.14.2", "--storage", "memory"])
            .current_dir(dir.path())
            .stdin(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join(format!("{id}.log"))).unwrap())
            .spawn()
            .unwrap();
        std::mem::forget(child); // stopped through the cluster file, like any other node
        let registered = procs.clone();
        wait_until(&format!("{id} registers"), Duration::from_secs(10), || {
            let registered = registered.clone();
            let id = id.clone();
            async move { dynabed::cluster::files::read_unlocked(&registered).is_ok_and(|f| f.procs.contains_key(&id)) }
        })
        .await;
    }
    cluster.refresh();
    let raw: serde_json::Value = serde_json::from_slice(&std::fs::read(&procs).unwrap()).unwrap();
    for (i, port) in [60000, 60001, 60002].iter().enumerate() {
        let entry = &raw[format!("node{}", i + 1)];
        assert_eq!(entry["port"], *port);
        assert!(entry["pid"].as_u64().unwrap() > 1);
    }
    for id in cluster.ids() {
        cluster.wait_all_alive(&id).await;
    }
    ok(&cluster.client("node3").put("seed", Bytes::from("flow"), None, Some(3)).await.unwrap());
    assert_eq!(cluster.client("node1").get("seed", None).await.unwrap().body, "flow");
}
