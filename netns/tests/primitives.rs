//! Root tests of each primitive against the real kernel: every test reads
//! the effect back (from the kernel, over netlink or /proc), not just the
//! return value.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::{eventually, ns_inode_of, prefix, privileged, Guard};
use netns::{link, namespace, process, Error};

#[test]
fn namespace_create_is_visible_to_iproute2_and_delete_is_idempotent() {
    if !privileged() {
        return;
    }
    let mut guard = Guard::new();
    let name = guard.namespace(&prefix(1));

    assert!(namespace::exists(&name));
    assert!(namespace::list().expect("list").contains(&name));
    let inode = namespace::inode(&name).expect("inode");
    assert_ne!(inode, ns_inode_of("/proc/self/ns/net"), "a new namespace, not the host's");

    // iproute2 sees the same namespace: `ip netns exec` lands in our inode.
    let out = Command::new("ip")
        .args(["netns", "exec", &name, "stat", "-L", "-c", "%i", "/proc/self/ns/net"])
        .output()
        .expect("run ip netns exec");
    assert!(out.status.success(), "ip netns exec: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), inode.to_string());

    assert!(matches!(
        namespace::create(&name),
        Err(Error::NamespaceExists { namespace }) if namespace == name
    ));

    namespace::delete(&name).expect("delete");
    assert!(!namespace::exists(&name));
    assert!(!namespace::list().expect("list").contains(&name));
    assert!(!namespace::path(&name).exists(), "pin file removed");
    namespace::delete(&name).expect("deleting again is Ok");
}

#[test]
fn run_in_runs_the_closure_inside_the_namespace_only() {
    if !privileged() {
        return;
    }
    let mut guard = Guard::new();
    let name = guard.namespace(&prefix(2));
    let host = ns_inode_of("/proc/thread-self/ns/net");

    let inside = namespace::run_in(&name, || ns_inode_of("/proc/thread-self/ns/net")).expect("run_in");
    assert_eq!(inside, namespace::inode(&name).expect("inode"));
    assert_eq!(ns_inode_of("/proc/thread-self/ns/net"), host, "caller's thread unchanged");

    // A new namespace holds only lo, down.
    let links = namespace::run_in(&name, common::links_of_this_thread).expect("run_in");
    assert_eq!(links, vec!["lo".to_owned()]);

    // A panic inside is resumed on the caller's thread.
    let caught = std::panic::catch_unwind(|| namespace::run_in(&name, || panic!("inside")));
    assert!(caught.is_err());
}

#[test]
fn lo_set_up_makes_loopback_tcp_work() {
    if !privileged() {
        return;
    }
    let mut guard = Guard::new();
    let name = guard.namespace(&prefix(3));
    assert!(!link::get(&name, "lo").expect("get lo").up, "lo starts down");

    link::set_up(&name, "lo").expect("set lo up");
    assert!(link::get(&name, "lo").expect("get lo").up);
    let echoed = namespace::run_in(&name, || -> std::io::Result<Vec<u8>> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let mut client = TcpStream::connect(listener.local_addr()?)?;
        let (mut server, _) = listener.accept()?;
        client.write_all(b"lo")?;
        let mut buf = [0u8; 2];
        server.read_exact(&mut buf)?;
        Ok(buf.to_vec())
    })
    .expect("run_in")
    .expect("tcp over lo");
    assert_eq!(echoed, b"lo");
}

#[test]
fn bridge_is_created_down_in_its_namespace_and_set_up() {
    if !privileged() {
        return;
    }
    let mut guard = Guard::new();
    let p = prefix(4);
    let hub = guard.namespace(&format!("{p}-hub"));
    let br = format!("{p}-br");

    link::create_bridge(&hub, &br).expect("create bridge");
    let got = link::get(&hub, &br).expect("read bridge back");
    assert_eq!(got.kind.as_deref(), Some("bridge"));
    assert!(!got.up);
    assert!(!common::links_of_this_thread().contains(&br), "not in the host");

    link::set_up(&hub, &br).expect("set up");
    assert!(link::get(&hub, &br).expect("get").up);
    assert!(link::list(&hub).expect("list").iter().any(|l| l.name == br));

    link::delete(&hub, &br).expect("delete");
    assert!(matches!(link::get(&hub, &br), Err(Error::LinkNotFound { .. })));
    link::delete(&hub, &br).expect("deleting again is Ok");
}

#[test]
fn veth_ends_are_born_in_their_own_namespaces_and_attach_to_a_bridge() {
    if !privileged() {
        return;
    }
    let mut guard = Guard::new();
    let p = prefix(5);
    let hub = guard.namespace(&format!("{p}-hub"));
    let node = guard.namespace(&format!("{p}-n1"));
    let (br, hub_end, node_end) = (format!("{p}-br"), format!("{p}-h1"), format!("{p}-v1"));

    link::create_bridge(&hub, &br).expect("bridge");
    link::create_veth(&hub, &hub_end, &node, &node_end).expect("veth");
    assert_eq!(link::get(&hub, &hub_end).expect("hub end").kind.as_deref(), Some("veth"));
    assert_eq!(link::get(&node, &node_end).expect("node end").kind.as_deref(), Some("veth"));
    assert!(matches!(link::get(&hub, &node_end), Err(Error::LinkNotFound { .. })));
    assert!(matches!(link::get(&node, &hub_end), Err(Error::LinkNotFound { .. })));

    link::set_master(&hub, &hub_end, &br).expect("attach");
    let br_index = link::get(&hub, &br).expect("bridge").index;
    assert_eq!(link::get(&hub, &hub_end).expect("hub end").master, Some(br_index));

    for (ns, l) in [(&hub, &br), (&hub, &hub_end), (&node, &node_end)] {
        link::set_up(ns, l).expect("set up");
    }
    assert!(
        eventually(Duration::from_secs(20), || { link::get(&node, &node_end).is_ok_and(|l| l.up && l.oper_up) }),
        "veth carrier up once both ends are up"
    );

    // Deleting one end deletes the pair.
    link::delete(&node, &node_end).expect("delete node end");
    assert!(matches!(link::get(&hub, &hub_end), Err(Error::LinkNotFound { .. })));
}

#[test]
fn veth_pair_can_have_both_ends_in_one_namespace() {
    if !privileged() {
        return;
    }
    let mut guard = Guard::new();
    let ns = guard.namespace(&prefix(8));
    let (a, b) = (format!("{ns}-a"), format!("{ns}-b"));
    link::create_veth(&ns, &a, &ns, &b).expect("veth");
    let mut names: Vec<String> = link::list(&ns).expect("list").into_iter().map(|l| l.name).collect();
    names.sort(); // index order is not name order: the kernel registers the peer first
    assert_eq!(names, vec!["lo".to_owned(), a.clone(), b.clone()]);
    assert!(matches!(link::create_veth(&ns, &a, &ns, "nt-far-too-long-name"), Err(Error::InvalidLinkName { .. })));
}

#[test]
fn ipv4_address_is_added_with_its_prefix() {
    if !privileged() {
        return;
    }
    let mut guard = Guard::new();
    let p = prefix(6);
    let a = guard.namespace(&format!("{p}-a"));
    let b = guard.namespace(&format!("{p}-b"));
    let (va, vb) = (format!("{p}-va"), format!("{p}-vb"));
    link::create_veth(&a, &va, &b, &vb).expect("veth");

    let ip = Ipv4Addr::new(198, 18, 6, 2);
    link::add_ipv4(&a, &va, ip, 15).expect("add address");
    assert_eq!(link::addresses(&a, &va).expect("read back"), vec![(IpAddr::V4(ip), 15)]);
    assert!(link::addresses(&b, &vb).expect("peer").is_empty(), "only on that end");
    assert!(matches!(link::add_ipv4(&a, &va, ip, 33), Err(Error::InvalidPrefixLength { prefix_len: 33 })));
    match link::add_ipv4(&a, "nt-missing", ip, 15) {
        Err(Error::LinkNotFound { namespace, link }) => {
            assert_eq!((namespace.as_str(), link.as_str()), (a.as_str(), "nt-missing"))
        }
        other => panic!("expected LinkNotFound, got {other:?}"),
    }
}

#[test]
fn spawned_process_runs_detached_inside_the_namespace() {
    if !privileged() {
        return;
    }
    let mut guard = Guard::new();
    let name = guard.namespace(&prefix(7));
    let log = std::env::temp_dir().join(format!("{}.log", prefix(7)));
    let _ = fs::remove_file(&log);
    let argv: Vec<String> = ["sh", "-c", "echo started; exec sleep 30"].map(String::from).to_vec();

    let spawned = guard.process(process::spawn_in(Some(&name), &argv, &log, &[]).expect("spawn"));
    assert_eq!(process::start_time(spawned.pid), Some(spawned.start_time));
    assert!(spawned.is_alive());
    assert_eq!(
        ns_inode_of(&format!("/proc/{}/ns/net", spawned.pid)),
        namespace::inode(&name).expect("inode"),
        "the process is in the namespace"
    );
    let stat = fs::read_to_string(format!("/proc/{}/stat", spawned.pid)).expect("stat");
    let session = stat[stat.rfind(')').expect(")") + 1..].split_whitespace().nth(3).map(str::to_owned);
    assert_eq!(session, Some(spawned.pid.to_string()), "its own session");
    assert!(
        eventually(Duration::from_secs(20), || fs::read_to_string(&log).is_ok_and(|t| t.contains("started"))),
        "stdout goes to the log"
    );

    // Killed, it is reaped by the background thread: no zombie stays.
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(spawned.pid as i32), nix::sys::signal::Signal::SIGKILL)
        .expect("kill");
    assert!(
        eventually(Duration::from_secs(20), || process::start_time(spawned.pid).is_none()),
        "reaped, not left a zombie"
    );
    assert!(!spawned.is_alive());
    let _ = fs::remove_file(&log);
}

#[test]
fn spawning_into_a_missing_namespace_fails_by_name() {
    if !privileged() {
        return;
    }
    let argv = vec!["true".to_owned()];
    let log = std::env::temp_dir().join("netns-missing.log");
    match process::spawn_in(Some("nt-surely-missing"), &argv, &log, &[]) {
        Err(Error::NamespaceNotFound { namespace }) => assert_eq!(namespace, "nt-surely-missing"),
        other => panic!("expected NamespaceNotFound, got {other:?}"),
    }
}
