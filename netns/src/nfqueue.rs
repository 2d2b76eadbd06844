//! An NFQUEUE reader and, on top of it, the delay line: the netem substitute for kernels
//! without `sch_netem`.
//!
//! iptables' `-j NFQUEUE --queue-num Q` hands matching packets to a userspace reader that must
//! give each a verdict. [`NfQueue`] speaks the nfnetlink_queue protocol directly over a netlink
//! socket (a small copy range, explicit queue length, verdicts by packet id, and a batch
//! ACCEPT to release everything it holds). It uses raw netlink rather than the `nfq` crate
//! because a delay line must `poll` the socket with a deadline (the next due packet) and give
//! verdicts by id long after receipt; `nfq` 0.2 exposes neither its fd nor id-only verdicts.
//!
//! [`DelayLine`] holds each packet for D ms (± jitter), then ACCEPTs it, on its own thread.
//! The kernel drops every packet still held when the socket closes, so stopping always
//! releases (ACCEPTs) everything first. The socket belongs to the namespace it was created in:
//! use [`DelayLine::start_in_netns`], or call [`DelayLine::start`] from a thread that has
//! entered the right namespace.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQNL_MSG_VERDICT_BATCH: u16 = 3;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CAP_LEN: u16 = 13;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_CFG_CMD_UNBIND: u8 = 2;
const NFQNL_COPY_META: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
const NFQA_CFG_F_FAIL_OPEN: u32 = 1;
const NFQA_CFG_F_GSO: u32 = 4;
const NLMSG_HDRLEN: usize = 16;
const NLA_TYPE_MASK: u16 = 0x3fff;
const RCVBUF_BYTES: libc::c_int = 8 << 20;

/// Why an NFQUEUE operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NfqError {
    #[error("NFQUEUE netlink socket: {op}: {source}")]
    Socket {
        op: &'static str,
        #[source]
        source: io::Error,
    },
    /// The kernel answers EPERM when another socket already owns the queue (and also when the
    /// caller lacks CAP_NET_ADMIN).
    #[error("queue {queue} refused the bind: another reader owns it (or no CAP_NET_ADMIN)")]
    Busy { queue: u16 },
    #[error("NFQUEUE queue {queue}: the kernel refused `{step}`: {source}")]
    Config {
        queue: u16,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("queue {queue}: no answer from the kernel to `{step}`")]
    NoAck { queue: u16, step: &'static str },
    #[error("entering network namespace {namespace}: {source}")]
    Namespace {
        namespace: String,
        #[source]
        source: io::Error,
    },
    #[error("the delay line thread panicked")]
    Panicked,
}

/// How a queue is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    pub queue_num: u16,
    /// Kernel-side queue length (packets waiting for a verdict); default kernel value is 1024.
    pub max_len: u32,
    /// Bytes of each packet copied to userspace. 0 = metadata only, but then the kernel does
    /// not report the packet's length ([`Packet::len`] is 0); a small range (the default, 20:
    /// an IPv4 header) costs little and makes it report the original length.
    pub copy_range: u16,
    /// Accept (instead of drop) packets that arrive when the kernel queue is full.
    pub fail_open: bool,
}

impl QueueConfig {
    /// Copies 20 bytes (enough for the length), fail-closed, with the given queue length.
    pub fn new(queue_num: u16, max_len: u32) -> Self {
        Self { queue_num, max_len, copy_range: 20, fail_open: false }
    }
}

/// One queued packet awaiting a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet {
    pub id: u32,
    /// Original packet length in bytes (0 when the queue copies metadata only).
    pub len: u32,
    /// When this reader received it.
    pub arrived: Instant,
    /// IPv4 source and destination, when the copied bytes hold an IPv4 header.
    pub addresses: Option<(Ipv4Addr, Ipv4Addr)>,
    /// TCP or UDP source and destination ports, when the copied bytes reach them (a copy
    /// range of at least 24 bytes, more with IP options).
    pub ports: Option<(u16, u16)>,
}

/// The verdict for a queued packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Drop,
}

impl Verdict {
    fn code(self) -> u32 {
        match self {
            Verdict::Drop => 0,
            Verdict::Accept => 1,
        }
    }
}

/// An open, bound NFQUEUE queue in the namespace it was opened in.
#[derive(Debug)]
pub struct NfQueue {
    fd: OwnedFd,
    queue_num: u16,
    seq: u32,
    buf: Vec<u8>,
    pending: VecDeque<Packet>,
    held: BTreeSet<u32>,
    ack: Option<(u32, i32)>,
    /// Errors the kernel reported for verdicts (e.g. an unknown id).
    pub verdict_errors: u64,
    /// Times the socket overflowed (notifications lost; those packets stay queued until a
    /// batch release).
    pub overruns: u64,
}

impl NfQueue {
    /// Opens queue `cfg.queue_num` in the calling thread's network namespace: binds it, sets
    /// the copy mode, the kernel queue length and fail-open/GSO flags.
    pub fn open(cfg: QueueConfig) -> Result<Self, NfqError> {
        let fd = netlink_socket()?;
        let bufsize = 64 * 1024 + usize::from(cfg.copy_range) + 4096;
        let mut q = NfQueue {
            fd,
            queue_num: cfg.queue_num,
            seq: 0,
            buf: vec![0; bufsize],
            pending: VecDeque::new(),
            held: BTreeSet::new(),
            ack: None,
            verdict_errors: 0,
            overruns: 0,
        };
        q.configure(cfg)?;
        Ok(q)
    }

    fn configure(&mut self, cfg: QueueConfig) -> Result<(), NfqError> {
        self.config("bind", NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0])?;
        let mode = if cfg.copy_range == 0 { NFQNL_COPY_META } else { NFQNL_COPY_PACKET };
        let mut params = u32::from(cfg.copy_range).to_be_bytes().to_vec();
        params.push(mode);
        self.config("copy mode", NFQA_CFG_PARAMS, &params)?;
        self.config("queue max length", NFQA_CFG_QUEUE_MAXLEN, &cfg.max_len.to_be_bytes())?;
        let mask = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO;
        let flags = NFQA_CFG_F_GSO | if cfg.fail_open { NFQA_CFG_F_FAIL_OPEN } else { 0 };
        let mut msg = self.message(NFQNL_MSG_CONFIG, true);
        msg.attr(NFQA_CFG_FLAGS, &flags.to_be_bytes());
        msg.attr(NFQA_CFG_MASK, &mask.to_be_bytes());
        self.request("flags", msg)
    }

    fn config(&mut self, step: &'static str, attr: u16, payload: &[u8]) -> Result<(), NfqError> {
        let mut msg = self.message(NFQNL_MSG_CONFIG, true);
        msg.attr(attr, payload);
        self.request(step, msg)
    }

    fn message(&mut self, kind: u16, ack: bool) -> NlMsg {
        self.seq = self.seq.wrapping_add(1);
        NlMsg::new(kind, ack, self.seq, self.queue_num)
    }

    /// Sends a config message and waits for the kernel's acknowledgement.
    fn request(&mut self, step: &'static str, msg: NlMsg) -> Result<(), NfqError> {
        let seq = self.seq;
        self.send(&msg.finish())?;
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if let Some((s, errno)) = self.ack.take() {
                if s != seq {
                    continue;
                }
                return match errno {
                    0 => Ok(()),
                    libc::EBUSY | libc::EPERM if step == "bind" => Err(NfqError::Busy { queue: self.queue_num }),
                    e => Err(NfqError::Config { queue: self.queue_num, step, source: io::Error::from_raw_os_error(e) }),
                };
            }
            self.fill(Some(Duration::from_millis(100)))?;
        }
        Err(NfqError::NoAck { queue: self.queue_num, step })
    }

    fn send(&self, bytes: &[u8]) -> Result<(), NfqError> {
        // SAFETY: a zeroed sockaddr_nl addressed to the kernel (pid 0) is valid.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: pointers and lengths come from live, correctly sized values.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(NfqError::Socket { op: "send", source: io::Error::last_os_error() });
        }
        Ok(())
    }

    /// Waits up to `timeout` (forever if `None`) for the socket to become readable, then reads
    /// everything available into the pending list.
    fn fill(&mut self, timeout: Option<Duration>) -> Result<(), NfqError> {
        if !self.wait_readable(timeout)? {
            return Ok(());
        }
        loop {
            // SAFETY: buf is a live, writable buffer of buf.len() bytes.
            let n = unsafe {
                libc::recv(self.fd.as_raw_fd(), self.buf.as_mut_ptr().cast(), self.buf.len(), libc::MSG_DONTWAIT)
            };
            if n >= 0 {
                self.parse(n as usize);
                continue;
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EAGAIN) => return Ok(()),
                Some(libc::EINTR) => continue,
                Some(libc::ENOBUFS) => self.overruns += 1,
                _ => return Err(NfqError::Socket { op: "recv", source: err }),
            }
        }
    }

    fn wait_readable(&self, timeout: Option<Duration>) -> Result<bool, NfqError> {
        let mut pfd = libc::pollfd { fd: self.fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ts = timeout
            .map(|t| libc::timespec { tv_sec: t.as_secs() as libc::time_t, tv_nsec: t.subsec_nanos() as libc::c_long });
        let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: one valid pollfd; ts_ptr is null or points to a live timespec.
        let rc = unsafe { libc::ppoll(&mut pfd, 1, ts_ptr, std::ptr::null()) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                return Ok(false);
            }
            return Err(NfqError::Socket { op: "poll", source: err });
        }
        Ok(rc > 0)
    }

    /// Parses one datagram of `n` bytes (one or more netlink messages) from `buf`.
    fn parse(&mut self, n: usize) {
        let now = Instant::now();
        let mut off = 0;
        while off + NLMSG_HDRLEN <= n {
            let len = read_u32_ne(&self.buf, off) as usize;
            if len < NLMSG_HDRLEN || off + len > n {
                break;
            }
            let kind = read_u16_ne(&self.buf, off + 4);
            let seq = read_u32_ne(&self.buf, off + 8);
            let body = off + NLMSG_HDRLEN..off + len;
            match kind {
                k if k == libc::NLMSG_ERROR as u16 => self.on_error(seq, body),
                k if k == (NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET) => self.on_packet(body, now),
                _ => {}
            }
            off += align4(len);
        }
    }

    fn on_error(&mut self, seq: u32, body: std::ops::Range<usize>) {
        if body.len() < 4 {
            return;
        }
        let errno = -(read_u32_ne(&self.buf, body.start) as i32);
        if seq != 0 && seq == self.seq {
            self.ack = Some((seq, errno));
        } else if errno != 0 {
            self.verdict_errors += 1;
        }
    }

    fn on_packet(&mut self, body: std::ops::Range<usize>, now: Instant) {
        let (mut id, mut payload_len, mut cap_len, mut addresses, mut ports) = (None, 0u32, None, None, None);
        let mut off = body.start + 4; // skip struct nfgenmsg
        while off + 4 <= body.end {
            let alen = read_u16_ne(&self.buf, off) as usize;
            let atype = read_u16_ne(&self.buf, off + 2) & NLA_TYPE_MASK;
            if alen < 4 || off + alen > body.end {
                break;
            }
            let data = off + 4;
            match atype {
                NFQA_PACKET_HDR if alen >= 8 => id = Some(read_u32_be(&self.buf, data)),
                NFQA_PAYLOAD => {
                    payload_len = (alen - 4) as u32;
                    addresses = ipv4_addresses(&self.buf[data..off + alen]);
                    ports = transport_ports(&self.buf[data..off + alen]);
                }
                NFQA_CAP_LEN if alen >= 8 => cap_len = Some(read_u32_be(&self.buf, data)),
                _ => {}
            }
            off += align4(alen);
        }
        if let Some(id) = id {
            self.held.insert(id);
            self.pending.push_back(Packet { id, len: cap_len.unwrap_or(payload_len), arrived: now, addresses, ports });
        }
    }

    /// Receives queued packets: waits up to `timeout` (forever if `None`) for the first, then
    /// returns every packet already available (possibly none, on timeout).
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Vec<Packet>, NfqError> {
        if self.pending.is_empty() {
            self.fill(timeout)?;
        }
        Ok(self.pending.drain(..).collect())
    }

    /// Gives the verdict for packet `id`.
    pub fn verdict(&mut self, id: u32, verdict: Verdict) -> Result<(), NfqError> {
        let mut msg = self.message(NFQNL_MSG_VERDICT, false);
        let mut hdr = verdict.code().to_be_bytes().to_vec();
        hdr.extend(id.to_be_bytes());
        msg.attr(NFQA_VERDICT_HDR, &hdr);
        self.send(&msg.finish())?;
        self.held.remove(&id);
        Ok(())
    }

    /// Number of packets received and not yet given a verdict.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// ACCEPTs every packet this reader holds, including any still unread in the socket, with
    /// one batch verdict. Returns how many were released.
    pub fn release_all(&mut self) -> Result<usize, NfqError> {
        self.fill(Some(Duration::ZERO))?;
        self.pending.clear();
        let Some(&max_id) = self.held.iter().next_back() else {
            return Ok(0);
        };
        let mut msg = self.message(NFQNL_MSG_VERDICT_BATCH, false);
        let mut hdr = Verdict::Accept.code().to_be_bytes().to_vec();
        hdr.extend(max_id.to_be_bytes());
        msg.attr(NFQA_VERDICT_HDR, &hdr);
        self.send(&msg.finish())?;
        let released = self.held.len();
        self.held.clear();
        Ok(released)
    }

    /// Releases every held packet, unbinds the queue and closes the socket. Returns how many
    /// packets were released. (Packets queued after the release and before the unbind are
    /// dropped by the kernel: delete the NFQUEUE rule first.)
    pub fn close(mut self) -> Result<usize, NfqError> {
        let released = self.release_all()?;
        let mut msg = self.message(NFQNL_MSG_CONFIG, true);
        msg.attr(NFQA_CFG_CMD, &[NFQNL_CFG_CMD_UNBIND, 0, 0, 0]);
        self.request("unbind", msg)?;
        Ok(released)
    }
}

impl Drop for NfQueue {
    fn drop(&mut self) {
        if let Err(e) = self.release_all() {
            eprintln!("nfqueue {}: releasing held packets failed: {e}", self.queue_num);
        }
    }
}

fn netlink_socket() -> Result<OwnedFd, NfqError> {
    let err = |op| move |source| NfqError::Socket { op, source };
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, NETLINK_NETFILTER) };
    if raw < 0 {
        return Err(err("socket")(io::Error::last_os_error()));
    }
    // SAFETY: raw is a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: zeroed sockaddr_nl (pid 0: the kernel assigns one) is valid for bind.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: addr is a valid sockaddr_nl of `len` bytes.
    if unsafe { libc::bind(raw, (&addr as *const libc::sockaddr_nl).cast(), len) } < 0 {
        return Err(err("bind")(io::Error::last_os_error()));
    }
    // A big receive buffer so bursts do not overflow; FORCE needs CAP_NET_ADMIN, so fall back.
    if setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, RCVBUF_BYTES).is_err() {
        let _ = setsockopt_int(raw, libc::SOL_SOCKET, libc::SO_RCVBUF, RCVBUF_BYTES);
    }
    setsockopt_int(raw, libc::SOL_NETLINK, libc::NETLINK_NO_ENOBUFS, 1).map_err(err("NETLINK_NO_ENOBUFS"))?;
    Ok(fd)
}

fn setsockopt_int(fd: libc::c_int, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> io::Result<()> {
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: value lives for the call and len matches its size.
    let rc = unsafe { libc::setsockopt(fd, level, name, (&value as *const libc::c_int).cast(), len) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A netlink message under construction: nlmsghdr + nfgenmsg + attributes.
struct NlMsg(Vec<u8>);

impl NlMsg {
    fn new(kind: u16, ack: bool, seq: u32, queue: u16) -> Self {
        let flags = libc::NLM_F_REQUEST as u16 | if ack { libc::NLM_F_ACK as u16 } else { 0 };
        let mut b = Vec::with_capacity(64);
        b.extend(0u32.to_ne_bytes()); // length, set in finish()
        b.extend((NFNL_SUBSYS_QUEUE << 8 | kind).to_ne_bytes());
        b.extend(flags.to_ne_bytes());
        b.extend(seq.to_ne_bytes());
        b.extend(0u32.to_ne_bytes()); // port id
        b.extend([libc::AF_UNSPEC as u8, 0]); // nfgen_family, version
        b.extend(queue.to_be_bytes()); // res_id
        NlMsg(b)
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) {
        self.0.extend(((4 + payload.len()) as u16).to_ne_bytes());
        self.0.extend(kind.to_ne_bytes());
        self.0.extend(payload);
        self.0.resize(align4(self.0.len()), 0);
    }

    fn finish(mut self) -> Vec<u8> {
        let len = (self.0.len() as u32).to_ne_bytes();
        self.0[..4].copy_from_slice(&len);
        self.0
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn read_u16_ne(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn read_u32_ne(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn read_u32_be(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

// ---------------------------------------------------------------------------------------------
// The delay line

/// Delay-line settings.
#[derive(Debug, Clone)]
pub struct DelayConfig {
    pub queue_num: u16,
    /// How long each packet is held.
    pub delay: Duration,
    /// Uniform jitter: each packet is held `delay ± jitter` (this reorders packets).
    pub jitter: Duration,
    /// At most this many packets are held; more are dropped (the delay line never fails open).
    pub max_held: usize,
    /// Kernel queue length; size it for rate × delay.
    pub queue_max_len: u32,
    /// Seed of the jitter generator.
    pub seed: u64,
    /// Extra delay by address: a packet also waits the entries of its
    /// source and of its destination (a packet between two listed hosts
    /// waits both). Shared, so the owner can change it while the line runs.
    pub per_address: Option<PerAddress>,
}

/// Extra delays by IPv4 address, changeable while a [`DelayLine`] runs.
pub type PerAddress = Arc<std::sync::RwLock<std::collections::HashMap<Ipv4Addr, Duration>>>;

impl DelayConfig {
    /// `delay` without jitter, up to 4096 packets held.
    pub fn new(queue_num: u16, delay: Duration) -> Self {
        Self {
            queue_num,
            delay,
            jitter: Duration::ZERO,
            max_held: 4096,
            queue_max_len: 4096,
            seed: 1,
            per_address: None,
        }
    }

    fn queue(&self) -> QueueConfig {
        QueueConfig::new(self.queue_num, self.queue_max_len)
    }
}

/// What a delay line did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DelayStats {
    /// Packets held and then accepted on time.
    pub delayed: u64,
    /// Packets dropped because `max_held` were already held.
    pub dropped_over_limit: u64,
    /// Packets accepted early because the delay line stopped.
    pub released_at_stop: u64,
    /// Verdict errors reported by the kernel.
    pub verdict_errors: u64,
    /// Socket overflows (notifications lost).
    pub overruns: u64,
}

/// A running delay line: a thread that holds each queued packet, then ACCEPTs it.
#[derive(Debug)]
pub struct DelayLine {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<DelayStats, NfqError>>>,
}

/// Longest the loop sleeps before looking at the stop flag.
const TICK: Duration = Duration::from_millis(10);

impl DelayLine {
    /// Opens the queue in the calling thread's namespace and runs the line on a new thread.
    pub fn start(cfg: DelayConfig) -> Result<Self, NfqError> {
        let queue = NfQueue::open(cfg.queue())?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || run_line(queue, cfg, &flag));
        Ok(Self { stop, thread: Some(thread) })
    }

    /// Runs the line on a new thread that first enters network namespace `namespace`.
    pub fn start_in_netns(namespace: &str, cfg: DelayConfig) -> Result<Self, NfqError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (opened_tx, opened_rx) = mpsc::channel();
        let ns = namespace.to_string();
        let thread = std::thread::spawn(move || {
            let opened = crate::namespace::enter(&ns)
                .map_err(|e| NfqError::Namespace { namespace: ns, source: std::io::Error::other(e) })
                .and_then(|()| NfQueue::open(cfg.queue()));
            match opened {
                Ok(queue) => {
                    let _ = opened_tx.send(Ok(()));
                    run_line(queue, cfg, &flag)
                }
                Err(e) => {
                    let _ = opened_tx.send(Err(e));
                    Ok(DelayStats::default())
                }
            }
        });
        match opened_rx.recv() {
            Ok(Ok(())) => Ok(Self { stop, thread: Some(thread) }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(NfqError::Panicked),
        }
    }

    /// Whether the line's thread is still running.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Releases (ACCEPTs) every held packet, closes the queue and returns the statistics.
    pub fn stop(mut self) -> Result<DelayStats, NfqError> {
        self.join()
    }

    fn join(&mut self) -> Result<DelayStats, NfqError> {
        self.stop.store(true, Ordering::SeqCst);
        match self.thread.take() {
            Some(t) => t.join().map_err(|_| NfqError::Panicked)?,
            None => Ok(DelayStats::default()),
        }
    }
}

impl Drop for DelayLine {
    fn drop(&mut self) {
        if let Err(e) = self.join() {
            eprintln!("delay line: {e}");
        }
    }
}

/// The delay line's loop: receive, schedule by due time, accept what is due; on stop, release.
fn extra_delay(cfg: &DelayConfig, packet: &Packet) -> Duration {
    let (Some(table), Some((source, dest))) = (&cfg.per_address, packet.addresses) else { return Duration::ZERO };
    let table = table.read().unwrap_or_else(|e| e.into_inner());
    table.get(&source).copied().unwrap_or_default() + table.get(&dest).copied().unwrap_or_default()
}

/// Source and destination of an IPv4 header at the start of `bytes`.
fn ipv4_addresses(bytes: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if bytes.len() < 20 || bytes[0] >> 4 != 4 {
        return None;
    }
    let at = |i: usize| Ipv4Addr::new(bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]);
    Some((at(12), at(16)))
}

/// TCP or UDP ports after the IPv4 header at the start of `bytes` (first fragments only).
fn transport_ports(bytes: &[u8]) -> Option<(u16, u16)> {
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    ipv4_addresses(bytes)?;
    let header_len = usize::from(bytes[0] & 0x0f) * 4;
    let fragment_offset = u16::from_be_bytes([bytes[6], bytes[7]]) & 0x1fff;
    if !matches!(bytes[9], TCP | UDP) || fragment_offset != 0 || bytes.len() < header_len + 4 {
        return None;
    }
    let at = |i: usize| u16::from_be_bytes([bytes[header_len + i], bytes[header_len + i + 1]]);
    Some((at(0), at(2)))
}

fn run_line(mut queue: NfQueue, cfg: DelayConfig, stop: &AtomicBool) -> Result<DelayStats, NfqError> {
    let mut stats = DelayStats::default();
    let mut due: BinaryHeap<Reverse<(Instant, u64, u32)>> = BinaryHeap::new();
    let mut jitter = Jitter::new(cfg.seed, cfg.jitter);
    let mut order = 0u64;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        while let Some(&Reverse((at, _, id))) = due.peek() {
            if at > now {
                break;
            }
            due.pop();
            queue.verdict(id, Verdict::Accept)?;
            stats.delayed += 1;
        }
        let wait = due.peek().map_or(TICK, |Reverse((at, _, _))| at.saturating_duration_since(now).min(TICK));
        for p in queue.recv(Some(wait))? {
            if due.len() >= cfg.max_held {
                queue.verdict(p.id, Verdict::Drop)?;
                stats.dropped_over_limit += 1;
                continue;
            }
            order += 1;
            due.push(Reverse((jitter.due(p.arrived, cfg.delay + extra_delay(&cfg, &p)), order, p.id)));
        }
    }
    stats.verdict_errors = queue.verdict_errors;
    stats.overruns = queue.overruns;
    stats.released_at_stop = queue.close()? as u64;
    Ok(stats)
}

/// Uniform jitter from a small seeded generator (splitmix64).
struct Jitter {
    state: u64,
    span_ns: u64,
}

impl Jitter {
    fn new(seed: u64, jitter: Duration) -> Self {
        Self { state: seed, span_ns: jitter.as_nanos() as u64 }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `arrived + delay ± jitter`, never before `arrived`.
    fn due(&mut self, arrived: Instant, delay: Duration) -> Instant {
        if self.span_ns == 0 {
            return arrived + delay;
        }
        let offset = self.next() % (2 * self.span_ns + 1);
        let held = (delay.as_nanos() as u64 + offset).saturating_sub(self.span_ns);
        arrived + Duration::from_nanos(held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::{Chain, Hook, NfqueueRule, QueueMatch};
    use crate::namespace::run_in;
    use crate::throwaway::testing::{need_root, timing_lock};
    use crate::throwaway::{Pair, Throwaway, ADDR_A, ADDR_B};
    use std::net::{Ipv4Addr, SocketAddr, UdpSocket};

    /// A UDP echo server in `ns`; stops when `stop` is set.
    fn echo_server(ns: &str, port: u16, stop: Arc<AtomicBool>) -> SocketAddr {
        let sa: SocketAddr = format!("{ADDR_B}:{port}").parse().unwrap();
        let sock = run_in(ns, move || UdpSocket::bind(sa)).unwrap().unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            while !stop.load(Ordering::SeqCst) {
                if let Ok((n, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(&buf[..n], from);
                }
            }
        });
        sa
    }

    fn client(ns: &str) -> UdpSocket {
        let sa: SocketAddr = format!("{ADDR_A}:0").parse().unwrap();
        let sock = run_in(ns, move || UdpSocket::bind(sa)).unwrap().unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(1000))).unwrap();
        sock
    }

    /// Median request/response time over `n` probes, measured with an application timer.
    fn median_rtt_ms(sock: &UdpSocket, to: SocketAddr, n: u32) -> f64 {
        let mut samples = Vec::new();
        let mut buf = [0u8; 64];
        for i in 0..n {
            let t0 = Instant::now();
            sock.send_to(&i.to_be_bytes(), to).unwrap();
            loop {
                let (len, _) = sock.recv_from(&mut buf).expect("echo reply");
                if len == 4 && buf[..4] == i.to_be_bytes() {
                    break;
                }
            }
            samples.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
        samples[samples.len() / 2]
    }

    /// The echo replies that arrive: each may take up to 2 s (a busy machine
    /// can be slow to run the echo thread), and then 300 ms without one ends
    /// the count; released packets arrive at once, so it never waits long.
    fn replies(sock: &UdpSocket) -> usize {
        let mut buf = [0u8; 16];
        let mut replies = 0;
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        while sock.recv_from(&mut buf).is_ok() {
            replies += 1;
            if replies == 3 {
                sock.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
            }
        }
        replies
    }

    fn queue_rule(pair: &Pair, queue_num: u16) -> Chain {
        let chain = Chain::new(&pair.b, "DYBQ", Hook::Input).unwrap();
        chain.create().unwrap();
        let matcher = QueueMatch::Source(ADDR_A.parse::<Ipv4Addr>().unwrap());
        chain.add_nfqueue(&NfqueueRule { matcher, queue_num, bypass: true }).unwrap();
        chain
    }

    #[test]
    fn ports_come_from_tcp_and_udp_headers_only() {
        let mut header = vec![0x45, 0, 0, 32, 0, 0, 0, 0, 64, 6, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2];
        header.extend([0x1f, 0x90, 0xc3, 0x50]);
        assert_eq!(transport_ports(&header), Some((8080, 50000)));
        header[9] = 1; // ICMP
        assert_eq!(transport_ports(&header), None);
        assert_eq!(transport_ports(&header[..22]), None);
    }

    #[test]
    fn jitter_stays_in_range() {
        let mut j = Jitter::new(7, Duration::from_millis(5));
        let t0 = Instant::now();
        for _ in 0..1000 {
            let d = j.due(t0, Duration::from_millis(50)) - t0;
            assert!(d >= Duration::from_millis(45) && d <= Duration::from_millis(55), "{d:?}");
        }
    }

    #[test]
    fn holds_until_verdict_and_release_all_accepts() {
        if !need_root() {
            return;
        }
        let mut tw = Throwaway::new();
        let pair = tw.pair("nfqh").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let server = echo_server(&pair.b, 7100, Arc::clone(&stop));
        let sock = client(&pair.a);
        median_rtt_ms(&sock, server, 3); // ARP warm-up
        let chain = queue_rule(&pair, 4);
        let mut queue = run_in(&pair.b, || NfQueue::open(QueueConfig::new(4, 64))).unwrap().unwrap();
        let second = run_in(&pair.b, || NfQueue::open(QueueConfig::new(4, 64))).unwrap();
        assert!(matches!(second, Err(NfqError::Busy { queue: 4 })), "{second:?}");
        for i in 0u32..4 {
            sock.send_to(&i.to_be_bytes(), server).unwrap();
        }
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(2);
        while got.len() < 4 && Instant::now() < deadline {
            got.extend(queue.recv(Some(Duration::from_millis(100))).unwrap());
        }
        assert_eq!(got.len(), 4, "four datagrams queued");
        assert!(got.iter().all(|p| p.len == 20 + 8 + 4), "IPv4+UDP+4 bytes: {got:?}");
        assert_eq!(queue.held(), 4);
        sock.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        let mut buf = [0u8; 16];
        assert!(sock.recv_from(&mut buf).is_err(), "nothing passes while held");
        queue.verdict(got[0].id, Verdict::Drop).unwrap();
        assert_eq!(queue.release_all().unwrap(), 3);
        assert_eq!(replies(&sock), 3, "three released, one dropped by id");
        assert_eq!(queue.close().unwrap(), 0);
        chain.remove().unwrap();
        stop.store(true, Ordering::SeqCst);
    }

    #[test]
    fn delay_line_adds_delay_and_bypass_when_stopped() {
        if !need_root() {
            return;
        }
        let _timing = timing_lock();
        let mut tw = Throwaway::new();
        let pair = tw.pair("nfqd").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let server = echo_server(&pair.b, 7101, Arc::clone(&stop));
        let sock = client(&pair.a);
        median_rtt_ms(&sock, server, 3); // ARP warm-up
        let base = median_rtt_ms(&sock, server, 30);
        let chain = queue_rule(&pair, 5);
        let bypass = median_rtt_ms(&sock, server, 30);
        let line = DelayLine::start_in_netns(&pair.b, DelayConfig::new(5, Duration::from_millis(50))).unwrap();
        let delayed = median_rtt_ms(&sock, server, 20);
        assert!(line.is_running());
        let stats = line.stop().unwrap();
        let after = median_rtt_ms(&sock, server, 30);
        eprintln!(
            "delay line D=50ms: baseline {base:.3} ms, rule without reader (bypass) {bypass:.3} ms, \
             delayed {delayed:.3} ms (+{:.3}), after stop {after:.3} ms; {stats:?}",
            delayed - base
        );
        // The delay sets the lower bound; above it, room for a busy machine
        // short of a delay applied twice (100 ms).
        assert!((45.0..=80.0).contains(&(delayed - base)), "added {:.3} ms", delayed - base);
        assert!(stats.delayed >= 20, "{stats:?}");
        // Undelayed means less than half the 50 ms, even on a busy machine.
        assert!(bypass - base < 25.0, "queue-bypass without a reader: {bypass:.3} ms");
        assert!(after - base < 25.0, "stopped line with rule present: {after:.3} ms");
        chain.remove().unwrap();
        stop.store(true, Ordering::SeqCst);
    }

    #[test]
    fn stop_releases_held_packets() {
        if !need_root() {
            return;
        }
        let mut tw = Throwaway::new();
        let pair = tw.pair("nfqs").unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let server = echo_server(&pair.b, 7102, Arc::clone(&stop));
        let sock = client(&pair.a);
        median_rtt_ms(&sock, server, 3); // ARP warm-up
        let chain = queue_rule(&pair, 6);
        let cfg = DelayConfig::new(6, Duration::from_secs(10));
        let line = DelayLine::start_in_netns(&pair.b, cfg).unwrap();
        for i in 0u32..3 {
            sock.send_to(&i.to_be_bytes(), server).unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        let stats = line.stop().unwrap();
        let replies = replies(&sock);
        eprintln!("stop with 3 held (D=10 s): {stats:?}, {replies} replies, stop took {:?}", t0.elapsed());
        assert_eq!(stats.released_at_stop, 3, "{stats:?}");
        assert_eq!(replies, 3, "held packets were accepted, not dropped, at stop");
        chain.remove().unwrap();
        stop.store(true, Ordering::SeqCst);
    }
}
