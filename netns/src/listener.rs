//! Which process listens at a TCP address, asked of the kernel rather than
//! of whoever answers there.
//!
//! A process just started may lose its address to another that already
//! holds it, and every answer at that address then comes from the other.
//! The kernel knows better: the listening socket's inode, in the socket
//! table of the process's own network namespace (`/proc/PID/net/tcp` or
//! `tcp6`), is among that process's open files or it is not.

use std::fs;
use std::net::{IpAddr, SocketAddr};

/// `st` of a listening socket in `/proc/net/tcp`.
const LISTEN: &str = "0A";

/// Whether process `pid` holds a TCP socket listening on `addr`.
pub fn listens_on(pid: u32, addr: SocketAddr) -> bool {
    let table = if addr.is_ipv4() { "tcp" } else { "tcp6" };
    let Ok(sockets) = fs::read_to_string(format!("/proc/{pid}/net/{table}")) else { return false };
    let wanted: Vec<String> = sockets
        .lines()
        .skip(1)
        .filter_map(|line| listening_inode(line, addr))
        .map(|inode| format!("socket:[{inode}]"))
        .collect();
    if wanted.is_empty() {
        return false;
    }
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.filter_map(Result::ok)
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .any(|target| wanted.iter().any(|w| target.as_os_str() == w.as_str()))
}

/// The inode of the socket on one line of a `/proc/net/tcp{,6}` table, if
/// it listens on `addr`.
fn listening_inode(line: &str, addr: SocketAddr) -> Option<u64> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (ip, port) = fields.get(1)?.split_once(':')?;
    let local = SocketAddr::new(kernel_ip(ip)?, u16::from_str_radix(port, 16).ok()?);
    (local == addr && *fields.get(3)? == LISTEN).then(|| fields.get(9)?.parse().ok())?
}

/// An address as the tables print it: the kernel's bytes as 32-bit words,
/// each in hex in the machine's byte order (`0100007F` is 127.0.0.1 on a
/// little-endian machine).
fn kernel_ip(hex: &str) -> Option<IpAddr> {
    let words = (0..hex.len()).step_by(8).map(|i| u32::from_str_radix(hex.get(i..i + 8)?, 16).ok());
    let bytes: Vec<u8> = words.collect::<Option<Vec<u32>>>()?.into_iter().flat_map(u32::to_ne_bytes).collect();
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn finds_its_own_listener_and_nothing_else() {
        let me = std::process::id();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        assert!(listens_on(me, addr));
        let elsewhere = SocketAddr::new("127.0.0.2".parse().unwrap(), addr.port());
        assert!(!listens_on(me, elsewhere), "another address, same port");
        // A connected socket on the same address does not listen.
        let _client = std::net::TcpStream::connect(addr).unwrap();
        drop(listener);
        assert!(!listens_on(me, addr), "closed");
    }

    #[test]
    fn a_listener_of_another_process_is_not_ours() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // pid 1 exists but does not hold this socket.
        assert!(!listens_on(1, addr));
    }

    #[test]
    fn ipv6_listeners_are_found_in_tcp6() {
        let Ok(listener) = TcpListener::bind("[::1]:0") else {
            eprintln!("ipv6_listeners: skipped: needs IPv6 on loopback");
            return;
        };
        assert!(listens_on(std::process::id(), listener.local_addr().unwrap()));
    }
}
