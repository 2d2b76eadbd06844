//! What a stranger can make a node hold: connections that trickle their
//! headers or sit idle are closed, connections beyond the cap are closed at
//! once, and the peer port talks to nobody who lacks the cluster's secret.
//! Through all of it the node keeps serving its clients.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{ok, TestCluster};
use dynabed::node::frame::{self, Direction};
use dynabed::node::protocol::Request;

/// Blocks until the node closes `stream` (or `limit` passes); true if it did.
fn closed_by_node(stream: &mut TcpStream, limit: Duration) -> bool {
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue, // an error answer before the close
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[tokio::test]
async fn slow_and_idle_connections_are_closed_while_the_node_serves() {
    let cluster = TestCluster::up(18, 3, "memory", &["--node_arg=--http_idle_timeout_ms=1500"]);
    let addr = cluster.nodes["node1"];
    let mut trickling: Vec<TcpStream> = (0..50)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /kv/slow HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    let mut idle: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(addr).unwrap()).collect();
    // A byte now and then never completes the head.
    for i in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        for s in &mut trickling {
            let _ = s.write_all(b"X");
        }
        ok(&cluster.client("node1").put(&format!("k{i}"), Bytes::from("v"), None, None).await.unwrap());
    }
    let started = Instant::now();
    for s in trickling.iter_mut().chain(idle.iter_mut()) {
        let left = Duration::from_secs(60).saturating_sub(started.elapsed());
        assert!(closed_by_node(s, left.max(Duration::from_millis(1))), "a connection outlived the idle timeout");
    }
    let read = cluster.client("node1").get("k2", None).await.unwrap();
    assert_eq!(ok(&read).body.as_ref(), b"v");
}

#[tokio::test]
async fn connections_beyond_the_cap_are_closed_at_once_and_counted() {
    let cluster = TestCluster::up(19, 3, "memory", &["--node_arg=--max_client_connections=20"]);
    let addr = cluster.nodes["node2"];
    // The harness' own client holds a connection too: fill the rest.
    let mut status = cluster.client("node2");
    status.status().await.unwrap();
    let held: Vec<TcpStream> = (0..19).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let mut over = TcpStream::connect(addr).unwrap();
    over.write_all(b"GET /status HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(closed_by_node(&mut over, Duration::from_secs(30)), "the connection over the cap was served");
    let answer = status.status().await.unwrap();
    assert!(answer.counters.get("client_connections_refused") >= 1, "{answer:?}");
    drop(held);
}

#[tokio::test]
async fn the_peer_port_refuses_frames_from_a_stranger() {
    let cluster = TestCluster::up(25, 3, "memory", &[]);
    ok(&cluster.client("node1").put("guarded", Bytes::from("kept"), None, Some(3)).await.unwrap());
    let peer: SocketAddr = {
        let mut addr = cluster.nodes["node1"];
        addr.set_port(addr.port() + 1000);
        addr
    };
    // A well-formed replica write frame, but no handshake before it.
    let write = Request::Write { key: Bytes::from("guarded"), object: Bytes::from("forged"), hint_for: None };
    let mut stranger = TcpStream::connect(peer).unwrap();
    stranger.write_all(&frame::encode(1, Direction::Request, &write).unwrap()).unwrap();
    assert!(closed_by_node(&mut stranger, Duration::from_secs(30)), "the stranger was answered");
    // 100 connections declaring the largest frame cost the node nothing it keeps.
    let declaring: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(peer).unwrap();
            let _ = s.write_all(&(frame::MAX_FRAME as u32).to_be_bytes());
            s
        })
        .collect();
    drop(declaring);
    let status = cluster.status("node1").await;
    assert!(status["counters"]["peer_auth_failures"].as_u64().unwrap() >= 1, "{status}");
    for id in cluster.ids() {
        let read = cluster.client(&id).get("guarded", Some(1)).await.unwrap();
        assert_eq!(ok(&read).body.as_ref(), b"kept", "{id}");
    }
}
