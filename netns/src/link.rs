//! Links inside named namespaces — bridges, veth pairs, addresses — over
//! rtnetlink (netlink messages, never `ip`).
//!
//! Every function takes the namespace's name and runs inside it via
//! [`run_in`]: a fresh OS thread enters the namespace, opens a netlink
//! socket there (so the socket belongs to that namespace), and drives
//! rtnetlink on a current-thread tokio runtime that lives and dies on that
//! thread. One call costs a thread, a runtime and a socket (tens of
//! microseconds): negligible next to namespace creation, and it leaves no
//! socket or runtime bound to a namespace behind.
//!
//! New links are created administratively down, as `ip link add` leaves
//! them; [`set_up`] brings them up.

use std::fs::File;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{InfoData, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, State};
use rtnetlink::{Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth};

use crate::error::{Error, Result};
use crate::namespace::{self, run_in};

/// Longest interface name the kernel accepts (IFNAMSIZ − 1).
pub const MAX_LINK_NAME_LEN: usize = 15;

/// A link as read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index, unique within its namespace only.
    pub index: u32,
    pub name: String,
    /// `bridge`, `veth`, ...; `None` for `lo` and other links without one.
    pub kind: Option<String>,
    /// Administratively up (IFF_UP), what [`set_up`] changes.
    pub up: bool,
    /// Operational state is UP (a veth is only when both ends are up; `lo`
    /// reports UNKNOWN, so `false`, even when it works).
    pub oper_up: bool,
    /// Index of the bridge this link is attached to, if any.
    pub master: Option<u32>,
}

/// Checks an interface name against the kernel's rules (≤ 15 bytes, not
/// empty, not `.`/`..`, no `/`, `:` or whitespace), so a too-long name is
/// reported clearly instead of as a bare EINVAL from netlink.
pub fn validate_name(name: &str) -> Result<()> {
    let invalid = |reason| Err(Error::InvalidLinkName { name: name.to_owned(), reason });
    if name.is_empty() {
        return invalid("empty");
    }
    if name.len() > MAX_LINK_NAME_LEN {
        return invalid("longer than 15 bytes (IFNAMSIZ)");
    }
    if name == "." || name == ".." {
        return invalid("`.` and `..` are not interface names");
    }
    if name.bytes().any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0) {
        return invalid("contains `/`, `:`, a NUL or whitespace");
    }
    Ok(())
}

/// Creates a bridge `name` (down) in `namespace`: the hub that node links
/// attach to.
pub fn create_bridge(namespace: &str, name: &str) -> Result<()> {
    validate_name(name)?;
    with_netlink(namespace, |handle| async move {
        let message = LinkMessageBuilder::<LinkBridge>::new(name).build();
        handle.link().add(message).execute().await.map_err(|e| nl_err(namespace, name, "create bridge", e))
    })
}

/// Creates a veth pair (both ends down): end `name` in `namespace`, end
/// `peer_name` in `peer_namespace`.
///
/// The pair is created in one netlink request whose peer part carries the
/// peer namespace's fd (IFLA_NET_NS_FD), so the peer is born in its own
/// namespace — `ip link add NAME type veth peer name PEER netns PEERNS`.
/// Nothing ever exists half-moved, and the peer's name only has to be free
/// in the peer namespace.
pub fn create_veth(namespace: &str, name: &str, peer_namespace: &str, peer_name: &str) -> Result<()> {
    validate_name(name)?;
    validate_name(peer_name)?;
    // Opened here, before entering `namespace`; fds are process-wide.
    let peer_ns: Option<File> = if peer_namespace == namespace { None } else { Some(namespace::open(peer_namespace)?) };
    with_netlink(namespace, |handle| async move {
        let mut peer = LinkUnspec::new_with_name(peer_name);
        if let Some(fd) = &peer_ns {
            peer = peer.setns_by_fd(fd.as_raw_fd());
        }
        let message =
            LinkVeth::new(name, peer_name).set_info_data(InfoData::Veth(InfoVeth::Peer(peer.build()))).build();
        let outcome = handle.link().add(message).execute().await;
        drop(peer_ns);
        outcome.map_err(|e| nl_err(namespace, name, "create veth pair", e))
    })
}

/// Attaches `link` to bridge `bridge` (sets its master); both must be in
/// `namespace`.
pub fn set_master(namespace: &str, link: &str, bridge: &str) -> Result<()> {
    validate_name(link)?;
    validate_name(bridge)?;
    with_netlink(namespace, |handle| async move {
        let bridge_index = index_of(&handle, namespace, bridge).await?;
        let index = index_of(&handle, namespace, link).await?;
        let message = LinkUnspec::new_with_index(index).controller(bridge_index).build();
        handle.link().set(message).execute().await.map_err(|e| nl_err(namespace, link, "attach to bridge", e))
    })
}

/// Sets `link` administratively up (`lo` included: a new namespace's `lo`
/// is down, and nothing, not even 127.0.0.1, works until it is up).
pub fn set_up(namespace: &str, link: &str) -> Result<()> {
    validate_name(link)?;
    with_netlink(namespace, |handle| async move {
        let index = index_of(&handle, namespace, link).await?;
        let message = LinkUnspec::new_with_index(index).up().build();
        handle.link().set(message).execute().await.map_err(|e| nl_err(namespace, link, "set up", e))
    })
}

/// Adds IPv4 address `address/prefix_len` to `link` (which also installs
/// the prefix route once the link is up).
pub fn add_ipv4(namespace: &str, link: &str, address: Ipv4Addr, prefix_len: u8) -> Result<()> {
    validate_name(link)?;
    if prefix_len > 32 {
        return Err(Error::InvalidPrefixLength { prefix_len });
    }
    with_netlink(namespace, |handle| async move {
        let index = index_of(&handle, namespace, link).await?;
        handle
            .address()
            .add(index, IpAddr::V4(address), prefix_len)
            .execute()
            .await
            .map_err(|e| nl_err(namespace, link, "add IPv4 address", e))
    })
}

/// Sets the hardware (MAC) address of `link`, which must be down.
pub fn set_mac(namespace: &str, link: &str, mac: [u8; 6]) -> Result<()> {
    validate_name(link)?;
    with_netlink(namespace, |handle| async move {
        let index = index_of(&handle, namespace, link).await?;
        let message = LinkUnspec::new_with_index(index).address(mac.to_vec()).build();
        handle.link().set(message).execute().await.map_err(|e| nl_err(namespace, link, "set MAC address", e))
    })
}

/// Adds permanent IPv4 neighbour (ARP) entries on `link`, one per
/// (address, MAC) pair, over one netlink connection.
///
/// Why: the kernel's neighbour table is shared by every namespace, and its
/// limit (`gc_thresh3`, 1024 by default) counts all of them. A full mesh of
/// a few dozen namespaces learning each other by ARP overflows it, and new
/// neighbours then silently never resolve. Permanent entries are exempt from
/// that limit (Linux ≥ 4.19), so a topology that knows every address and MAC
/// in advance installs them and never ARPs.
pub fn add_neighbors(namespace: &str, link: &str, entries: &[(Ipv4Addr, [u8; 6])]) -> Result<()> {
    validate_name(link)?;
    with_netlink(namespace, |handle| async move {
        let index = index_of(&handle, namespace, link).await?;
        for (address, mac) in entries {
            handle
                .neighbours()
                .add(index, IpAddr::V4(*address))
                .link_layer_address(mac)
                .execute()
                .await
                .map_err(|e| nl_err(namespace, link, "add a permanent neighbour", e))?;
        }
        Ok(())
    })
}

/// Deletes `link` from `namespace` (deleting one end of a veth pair deletes
/// both). Idempotent: a link that is not there is not an error.
pub fn delete(namespace: &str, link: &str) -> Result<()> {
    validate_name(link)?;
    with_netlink(namespace, |handle| async move {
        let index = match index_of(&handle, namespace, link).await {
            Ok(index) => index,
            Err(Error::LinkNotFound { .. }) => return Ok(()),
            Err(e) => return Err(e),
        };
        match handle.link().del(index).execute().await {
            Ok(()) => Ok(()),
            // Gone between the lookup and the delete (its peer was deleted).
            Err(e) if errno(&e) == Some(libc::ENODEV) => Ok(()),
            Err(e) => Err(nl_err(namespace, link, "delete", e)),
        }
    })
}

/// Every link in `namespace`, in index order.
pub fn list(namespace: &str) -> Result<Vec<Link>> {
    with_netlink(namespace, |handle| async move {
        let messages: Vec<LinkMessage> =
            handle.link().get().execute().try_collect().await.map_err(|e| nl_err(namespace, "*", "list links", e))?;
        let mut links: Vec<Link> = messages.iter().map(to_link).collect();
        links.sort_by_key(|l| l.index);
        Ok(links)
    })
}

/// The link named `link` in `namespace`, or [`Error::LinkNotFound`].
pub fn get(namespace: &str, link: &str) -> Result<Link> {
    validate_name(link)?;
    with_netlink(namespace, |handle| async move { lookup(&handle, namespace, link).await.map(|m| to_link(&m)) })
}

/// The addresses (IPv4 and IPv6) on `link`, each with its prefix length.
pub fn addresses(namespace: &str, link: &str) -> Result<Vec<(IpAddr, u8)>> {
    validate_name(link)?;
    with_netlink(namespace, |handle| async move {
        let index = index_of(&handle, namespace, link).await?;
        let messages: Vec<_> = handle
            .address()
            .get()
            .set_link_index_filter(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| nl_err(namespace, link, "list addresses", e))?;
        Ok(messages
            .iter()
            // (The dump is of every address; rtnetlink applies the index
            // filter on our side.)
            .filter_map(|m| {
                // IFA_LOCAL is the interface's own address; IFA_ADDRESS is
                // the same except on point-to-point links.
                let local = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Local(ip) => Some(*ip),
                    _ => None,
                });
                let address = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(ip) => Some(*ip),
                    _ => None,
                });
                local.or(address).map(|ip| (ip, m.header.prefix_len))
            })
            .collect())
    })
}

/// Runs `f` with an rtnetlink handle whose socket lives in `namespace` (see
/// the module doc for why each call gets its own thread and runtime).
fn with_netlink<T, F, Fut>(namespace: &str, f: F) -> Result<T>
where
    F: FnOnce(Handle) -> Fut + Send,
    Fut: Future<Output = Result<T>>,
    T: Send,
{
    run_in(namespace, || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| setup_err(namespace, "build a tokio runtime", e))?;
        runtime.block_on(async {
            let (connection, handle, _) =
                rtnetlink::new_connection().map_err(|e| setup_err(namespace, "open a netlink socket", e))?;
            let driver = tokio::spawn(connection);
            let outcome = f(handle).await;
            driver.abort();
            outcome
        })
    })?
}

/// Looks `link` up by name; ENODEV becomes [`Error::LinkNotFound`].
async fn lookup(handle: &Handle, namespace: &str, link: &str) -> Result<LinkMessage> {
    let not_found = || Error::LinkNotFound { namespace: namespace.to_owned(), link: link.to_owned() };
    let mut answers = handle.link().get().match_name(link.to_owned()).execute();
    match answers.try_next().await {
        Ok(Some(message)) => Ok(message),
        Ok(None) => Err(not_found()),
        Err(e) if errno(&e) == Some(libc::ENODEV) => Err(not_found()),
        Err(e) => Err(nl_err(namespace, link, "look up", e)),
    }
}

async fn index_of(handle: &Handle, namespace: &str, link: &str) -> Result<u32> {
    lookup(handle, namespace, link).await.map(|m| m.header.index)
}

/// The kernel's errno in a netlink error answer, if that is what `e` is.
fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(message) => Some(message.raw_code().abs()),
        _ => None,
    }
}

fn to_link(message: &LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        kind: None,
        up: message.header.flags.contains(LinkFlags::Up),
        oper_up: false,
        master: None,
    };
    for attribute in &message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name.clone(),
            LinkAttribute::Controller(index) => link.master = Some(*index),
            LinkAttribute::OperState(state) => link.oper_up = *state == State::Up,
            LinkAttribute::LinkInfo(infos) => {
                link.kind = infos.iter().find_map(|info| match info {
                    LinkInfo::Kind(kind) => Some(kind.to_string()),
                    _ => None,
                })
            }
            _ => {}
        }
    }
    link
}

fn nl_err(namespace: &str, link: &str, action: &'static str, source: rtnetlink::Error) -> Error {
    Error::Netlink { namespace: namespace.to_owned(), link: link.to_owned(), action, source: Box::new(source) }
}

fn setup_err(namespace: &str, action: &'static str, source: io::Error) -> Error {
    Error::NetlinkSetup { namespace: namespace.to_owned(), action, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        assert!(validate_name("nt123-45-br").is_ok());
        assert!(validate_name("fifteen-chars-x").is_ok());
        for bad in ["", ".", "..", "sixteen-chars-xx", "a/b", "a:b", "a b"] {
            match validate_name(bad) {
                Err(Error::InvalidLinkName { name, .. }) => assert_eq!(name, bad),
                other => panic!("{bad:?}: expected InvalidLinkName, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_too_long_name_is_refused_before_any_syscall() {
        // No namespace by that name exists: the name check must come first.
        match create_bridge("nt-no-such-ns", "this-name-is-too-long") {
            Err(Error::InvalidLinkName { reason, .. }) => assert!(reason.contains("15")),
            other => panic!("expected InvalidLinkName, got {other:?}"),
        }
    }
}
