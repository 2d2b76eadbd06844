//! A mini test bed built the way the caller builds one — hub namespace with
//! a bridge, two node namespaces each with a veth into it, 198.18.0.0/15
//! addresses — then real TCP between the nodes, isolation from the host,
//! and a clean teardown.

mod common;

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

use common::{prefix, privileged, Guard};
use netns::{link, namespace};

/// Third byte of this test's addresses: 198.18.N.x.
const N: u8 = 9;

fn in_benchmark_range(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.octets()[0] == 198 && (v4.octets()[1] & 0xfe) == 18)
}

#[test]
fn two_nodes_talk_through_the_hub_and_the_host_cannot_reach_them() {
    if !privileged() {
        return;
    }
    let mut guard = Guard::new();
    let p = prefix(9);
    let hub = guard.namespace(&format!("{p}-hub"));
    let br = format!("{p}-br");
    link::create_bridge(&hub, &br).expect("bridge");
    link::set_up(&hub, &br).expect("bridge up");
    link::set_up(&hub, "lo").expect("hub lo up");

    let mut nodes = Vec::new();
    for (i, host_byte) in [(1u8, 2u8), (2, 3)] {
        let node = guard.namespace(&format!("{p}-n{i}"));
        let (hub_end, node_end) = (format!("{p}-h{i}"), "eth0".to_owned());
        let ip = Ipv4Addr::new(198, 18, N, host_byte);
        link::create_veth(&hub, &hub_end, &node, &node_end).expect("veth");
        link::set_master(&hub, &hub_end, &br).expect("attach");
        link::set_up(&hub, &hub_end).expect("hub end up");
        link::add_ipv4(&node, &node_end, ip, 15).expect("address");
        link::set_up(&node, &node_end).expect("node end up");
        link::set_up(&node, "lo").expect("node lo up");
        nodes.push((node, ip));
    }
    let (node_a, ip_a) = nodes[0].clone();
    let (node_b, ip_b) = nodes[1].clone();

    // Read the topology back from the kernel.
    let br_index = link::get(&hub, &br).expect("bridge").index;
    for i in 1..=2 {
        let end = link::get(&hub, &format!("{p}-h{i}")).expect("hub end");
        assert_eq!(end.master, Some(br_index));
        assert!(end.up);
    }
    // Once up, eth0 also gets an IPv6 link-local address: look at IPv4 only.
    let v4: Vec<_> =
        link::addresses(&node_a, "eth0").expect("addresses").into_iter().filter(|(ip, _)| ip.is_ipv4()).collect();
    assert_eq!(v4, vec![(IpAddr::V4(ip_a), 15)]);

    // A listener created in A's namespace stays there after run_in returns.
    let listener = namespace::run_in(&node_a, || TcpListener::bind((ip_a, 0))).expect("run_in A").expect("bind in A");
    let port = listener.local_addr().expect("local addr").port();
    let server = std::thread::spawn(move || -> std::io::Result<SocketAddr> {
        let (mut conn, peer) = listener.accept()?;
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf)?;
        assert_eq!(&buf, b"ping");
        conn.write_all(b"pong")?;
        Ok(peer)
    });
    let reply = namespace::run_in(&node_b, || -> std::io::Result<[u8; 4]> {
        let target = SocketAddr::from((ip_a, port));
        let mut conn = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
        conn.set_read_timeout(Some(Duration::from_secs(5)))?;
        conn.write_all(b"ping")?;
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf)?;
        Ok(buf)
    })
    .expect("run_in B")
    .expect("TCP from B to A");
    assert_eq!(&reply, b"pong");
    let peer = server.join().expect("server thread").expect("server side");
    assert_eq!(peer.ip(), IpAddr::V4(ip_b), "A saw B's address");

    // Isolation. A real TCP connect from the host would follow the host's
    // default route (if any) out of the machine, so it is never attempted;
    // the kernel's route choice is read instead: connecting a UDP socket
    // sends nothing but makes the kernel pick a route and source address.
    let from_node_b = namespace::run_in(&node_b, || udp_route_source(ip_a)).expect("run_in B");
    assert_eq!(from_node_b, Some(IpAddr::V4(ip_b)), "B routes to A over the cluster");
    match udp_route_source(ip_a) {
        None => {} // no route at all from the host: unreachable
        Some(src) => {
            assert!(!in_benchmark_range(src), "the host has a 198.18.0.0/15 address ({src}): the cluster leaks")
        }
    }
    let host_links = common::links_of_this_thread();
    for name in [&br, &format!("{p}-h1"), &format!("{p}-h2")] {
        assert!(!host_links.contains(name), "{name} visible in the host");
    }

    // Teardown: deleting the namespaces takes their links with them.
    for name in [&node_a, &node_b, &hub] {
        namespace::delete(name).expect("delete namespace");
    }
    let left = namespace::list().expect("list");
    for name in [&node_a, &node_b, &hub] {
        assert!(!left.contains(name), "{name} left behind");
        assert!(!namespace::exists(name));
    }
    drop(guard); // deletes again: idempotent
}

/// The source address the calling thread's namespace would use to reach
/// `dst`, or `None` when it has no route (connect fails with ENETUNREACH).
fn udp_route_source(dst: Ipv4Addr) -> Option<IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0").expect("bind a UDP socket");
    match socket.connect((dst, 9)) {
        Ok(()) => Some(socket.local_addr().expect("local addr").ip()),
        Err(e) if e.kind() == std::io::ErrorKind::NetworkUnreachable => None,
        Err(e) => panic!("UDP connect to {dst}: {e}"),
    }
}
