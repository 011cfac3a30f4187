//! DNS over UDP: one blocking thread per socket, several sockets per address.
//!
//! Each listen address gets one socket per core, bound with `SO_REUSEPORT` ([`bind_udp`]): the
//! kernel spreads the datagrams over them by flow, and each socket's thread receives a batch
//! with one `recvmmsg`, answers it with [`Fallback::answer`] (synchronous) and sends the answers
//! with one `sendmmsg`. A thread per socket costs less per answer than a tokio task: no waker, no
//! readiness round trip through epoll, one system call per batch each way.
//!
//! A socket bound to a wildcard address (0.0.0.0, [::]) asks the kernel for each datagram's
//! destination (`IP_PKTINFO`, `IPV6_RECVPKTINFO`) and sends the answer from that address: a
//! client that asked 192.0.2.54 gets its answer from 192.0.2.54, not from whichever address the
//! route prefers, which a client's `connect`ed socket would drop.

use std::{
    io,
    mem::{size_of, zeroed},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket},
    os::fd::{AsRawFd, RawFd},
    sync::Arc,
    time::Duration,
};

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{cache::PacketCache, Answer, Fallback, Transport, TCP_MAX};

/// Datagrams taken per `recvmmsg`.
const BATCH: usize = 32;
/// How often a thread blocked in `recvmmsg` looks at the shutdown token.
const WAKE: Duration = Duration::from_millis(100);
/// Each UDP socket's receive buffer: room for some 8,000 queries (the kernel counts each
/// datagram's buffer overhead too), a few tens of milliseconds at a high rate.
const RCVBUF: usize = 4 << 20;
/// Room for one `in6_pktinfo` control message (the larger of the two), 8-byte aligned.
const CMSG_WORDS: usize = 8;

/// Binds `count` UDP sockets to `addr`, with `SO_REUSEPORT` when there are several so that the
/// kernel spreads the datagrams over them. Port 0 picks one port for all of them. IPv6 sockets
/// keep the system's IPV6_V6ONLY (off on Linux by default: [::] takes IPv4 too).
pub fn bind_udp(addr: SocketAddr, count: usize) -> io::Result<Vec<UdpSocket>> {
    let count = count.max(1);
    let reuse = count > 1;
    let first = bind_one(addr, reuse)?;
    let addr = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..count {
        sockets.push(bind_one(addr, reuse)?);
    }
    Ok(sockets)
}

fn bind_one(addr: SocketAddr, reuse: bool) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if reuse {
        s.set_reuse_port(true)?;
    }
    set_rcvbuf(s.as_raw_fd(), RCVBUF);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Sets the socket's receive buffer to `bytes`, past `net.core.rmem_max` when the daemon may
/// (`SO_RCVBUFFORCE` needs CAP_NET_ADMIN, which attaching XDP needs anyway); else as far as
/// `SO_RCVBUF` goes. A buffer the size of the kernel's default fills within a scheduling
/// delay at a few tens of thousands of queries a second, and the datagrams past it are lost.
fn set_rcvbuf(fd: RawFd, bytes: usize) {
    let v = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: `v` is a valid c_int for the call's duration, its size is passed.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
    debug!("fallback UDP: SO_RCVBUF: {}", io::Error::last_os_error());
}

/// Serves DNS over UDP on `sockets`, a thread each, until `shutdown` is cancelled; then waits
/// for the threads to stop (within [`WAKE`]).
///
/// A dynamic update is applied in a tokio task of its own, which answers once the change has
/// landed: the thread goes on answering queries meanwhile.
pub async fn serve_udp(
    sockets: Vec<UdpSocket>,
    fallback: Arc<Fallback>,
    shutdown: CancellationToken,
) {
    let runtime = Handle::current();
    let mut threads = Vec::new();
    for (i, socket) in sockets.into_iter().enumerate() {
        let worker = match Worker::new(socket, fallback.clone(), runtime.clone()) {
            Ok(w) => w,
            Err(e) => {
                warn!("fallback UDP socket {i}: {e}");
                continue;
            }
        };
        info!(addr = %worker.local, worker = i, "fallback serving UDP");
        let stop = shutdown.clone();
        match std::thread::Builder::new()
            .name(format!("edgedns-udp-{i}"))
            .spawn(move || worker.run(&stop))
        {
            Ok(t) => threads.push(t),
            Err(e) => warn!("fallback UDP: starting a thread: {e}"),
        }
    }
    shutdown.cancelled().await;
    let joined = tokio::task::spawn_blocking(move || {
        for t in threads {
            if t.join().is_err() {
                warn!("a fallback UDP thread panicked");
            }
        }
    })
    .await;
    if let Err(e) = joined {
        warn!("fallback UDP: {e}");
    }
    info!("fallback UDP stopped");
}

/// The local address a datagram came to, from its `IP_PKTINFO` / `IPV6_PKTINFO` (wildcard
/// sockets only).
#[derive(Clone, Copy, Debug)]
enum Local {
    V4(Ipv4Addr),
    /// The address and the interface index (kept for link-local addresses, which need it).
    V6(Ipv6Addr, u32),
}

/// One socket and the thread's state.
struct Worker {
    socket: Arc<UdpSocket>,
    local: SocketAddr,
    /// The socket is bound to a wildcard address: answers are sent from the address asked.
    wildcard: bool,
    fallback: Arc<Fallback>,
    runtime: Handle,
}

impl Worker {
    fn new(socket: UdpSocket, fallback: Arc<Fallback>, runtime: Handle) -> io::Result<Self> {
        socket.set_nonblocking(false)?;
        socket.set_read_timeout(Some(WAKE))?;
        let local = socket.local_addr()?;
        let wildcard = local.ip().is_unspecified();
        if wildcard {
            let fd = socket.as_raw_fd();
            match local {
                SocketAddr::V4(_) => set_flag(fd, libc::IPPROTO_IP, libc::IP_PKTINFO)?,
                SocketAddr::V6(_) => {
                    set_flag(fd, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO)?;
                    // IPv4 datagrams on a dual-stack socket: their destination as IP_PKTINFO
                    // too (Linux also reports it as an IPv4-mapped IPV6_PKTINFO; either will
                    // do, and the send takes either).
                    let _ = set_flag(fd, libc::IPPROTO_IP, libc::IP_PKTINFO);
                }
            }
        }
        Ok(Self {
            socket: Arc::new(socket),
            local,
            wildcard,
            fallback,
            runtime,
        })
    }

    fn run(self, shutdown: &CancellationToken) {
        let fd = self.socket.as_raw_fd();
        let mut batch = RecvBatch::new();
        let mut replies: Vec<Outgoing> = Vec::with_capacity(BATCH);
        let mut cache = PacketCache::default();
        while !shutdown.is_cancelled() {
            let received = match batch.recv(fd) {
                Ok(got) => got,
                Err(e) => {
                    match e.kind() {
                        io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted => {}
                        _ => {
                            // Transient on an unconnected socket (e.g. an ICMP error for an
                            // earlier reply); pause so a persistent one can't spin the loop.
                            debug!("fallback UDP receive: {e}");
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                    continue;
                }
            };
            for r in &received {
                let (peer, local) = (r.peer, r.local.filter(|_| self.wildcard));
                match self.fallback.answer_cached(
                    batch.datagram(r),
                    Transport::Udp,
                    peer.ip(),
                    Some(&mut cache),
                ) {
                    Answer::Now(reply) => {
                        if let Some(msg) = reply.and_then(|r| r.messages.into_iter().next()) {
                            replies.push(Outgoing { msg, peer, local });
                        }
                    }
                    Answer::Update(pending) => {
                        let (fallback, socket) = (self.fallback.clone(), self.socket.clone());
                        self.runtime.spawn(async move {
                            let reply = fallback.apply_update(pending).await;
                            if let Some(msg) = reply.and_then(|r| r.messages.into_iter().next()) {
                                send_batch(socket.as_raw_fd(), &[Outgoing { msg, peer, local }]);
                            }
                        });
                    }
                }
            }
            if !replies.is_empty() {
                send_batch(fd, &replies);
                replies.clear();
            }
        }
    }
}

fn set_flag(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `one` is a valid c_int for the call's duration, its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The receive side's buffers and headers, built once per thread: the headers point into the
/// buffers, whose heap memory stays where it is for the thread's life.
struct RecvBatch {
    /// [`BATCH`] slots of [`TCP_MAX`] bytes. Queries can be up to 64 KiB (large EDNS payloads);
    /// whatever is longer is cut by the kernel and then fails to parse. A slot's pages are
    /// touched only as far as its datagrams reach.
    bufs: Vec<u8>,
    names: Vec<libc::sockaddr_storage>,
    /// Never read here, kept for the headers, which point into them.
    _cmsgs: Vec<[u64; CMSG_WORDS]>,
    _iovs: Vec<libc::iovec>,
    hdrs: Vec<libc::mmsghdr>,
}

/// One datagram of a batch: its slot in [`RecvBatch`], length, source, and the local address it
/// came to if the kernel said.
struct Received {
    slot: usize,
    len: usize,
    peer: SocketAddr,
    local: Option<Local>,
}

/// An answer to send: the message, to whom, and from which local address (wildcard sockets).
struct Outgoing {
    msg: Vec<u8>,
    peer: SocketAddr,
    local: Option<Local>,
}

// SAFETY: the raw pointers in `iovs` and `hdrs` point into the struct's own heap buffers, which
// move with it; nothing else holds them.
unsafe impl Send for RecvBatch {}

impl RecvBatch {
    fn new() -> Self {
        let mut bufs = vec![0u8; BATCH * TCP_MAX];
        // SAFETY: all-zero is a valid sockaddr_storage.
        let mut names: Vec<libc::sockaddr_storage> = vec![unsafe { zeroed() }; BATCH];
        let mut cmsgs = vec![[0u64; CMSG_WORDS]; BATCH];
        let mut iovs: Vec<libc::iovec> = bufs
            .chunks_mut(TCP_MAX)
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        let hdrs = iovs
            .iter_mut()
            .zip(names.iter_mut())
            .zip(cmsgs.iter_mut())
            .map(|((iov, name), cmsg)| {
                // SAFETY: all-zero is a valid msghdr; the pointers set below point into heap
                // buffers owned by the same struct.
                let mut h: libc::mmsghdr = unsafe { zeroed() };
                h.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
                h.msg_hdr.msg_iov = iov;
                h.msg_hdr.msg_iovlen = 1;
                h.msg_hdr.msg_control = cmsg.as_mut_ptr().cast();
                h
            })
            .collect();
        Self {
            bufs,
            names,
            _cmsgs: cmsgs,
            _iovs: iovs,
            hdrs,
        }
    }

    /// Receives up to [`BATCH`] datagrams (blocking for the first, up to the read timeout). The
    /// bytes of each are [`RecvBatch::datagram`].
    fn recv(&mut self, fd: RawFd) -> io::Result<Vec<Received>> {
        for h in &mut self.hdrs {
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_controllen = size_of::<[u64; CMSG_WORDS]>();
            h.msg_hdr.msg_flags = 0;
            h.msg_len = 0;
        }
        // SAFETY: `hdrs` holds BATCH headers whose buffers (`bufs` via `iovs`), names and
        // control buffers are this struct's, valid and writable for the call.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                self.hdrs.as_mut_ptr(),
                self.hdrs.len() as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut out = Vec::with_capacity(n as usize);
        for (i, (h, name)) in self
            .hdrs
            .iter()
            .zip(&self.names)
            .take(n as usize)
            .enumerate()
        {
            let Some(peer) = sockaddr(name) else { continue };
            out.push(Received {
                slot: i,
                len: h.msg_len as usize,
                peer,
                local: local_of(&h.msg_hdr),
            });
        }
        Ok(out)
    }

    fn datagram(&self, r: &Received) -> &[u8] {
        let start = r.slot * TCP_MAX;
        &self.bufs[start..start + r.len.min(TCP_MAX)]
    }
}

/// The socket address in `s`, if it is IPv4 or IPv6.
fn sockaddr(s: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match s.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says `s` holds a sockaddr_in, which is smaller.
            let a: &libc::sockaddr_in = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says `s` holds a sockaddr_in6, which is smaller.
            let a: &libc::sockaddr_in6 = unsafe { &*(s as *const libc::sockaddr_storage).cast() };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// The destination address of a received datagram, from its control messages.
fn local_of(h: &libc::msghdr) -> Option<Local> {
    // SAFETY: `h` is a header the kernel filled: its control buffer and length are valid, and
    // the CMSG_* macros stay inside them.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(h);
        while !c.is_null() {
            let data = libc::CMSG_DATA(c);
            match ((*c).cmsg_level, (*c).cmsg_type) {
                (libc::IPPROTO_IP, libc::IP_PKTINFO) => {
                    let p: libc::in_pktinfo = std::ptr::read_unaligned(data.cast());
                    return Some(Local::V4(Ipv4Addr::from(u32::from_be(p.ipi_addr.s_addr))));
                }
                (libc::IPPROTO_IPV6, libc::IPV6_PKTINFO) => {
                    let p: libc::in6_pktinfo = std::ptr::read_unaligned(data.cast());
                    return Some(Local::V6(
                        Ipv6Addr::from(p.ipi6_addr.s6_addr),
                        p.ipi6_ifindex,
                    ));
                }
                _ => {}
            }
            c = libc::CMSG_NXTHDR(h, c);
        }
    }
    None
}

/// A sockaddr for `addr`, and its length.
fn to_sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut s: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            let sin: &mut libc::sockaddr_in =
                unsafe { &mut *(&mut s as *mut libc::sockaddr_storage).cast() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from(*a.ip()).to_be();
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in6.
            let sin6: &mut libc::sockaddr_in6 =
                unsafe { &mut *(&mut s as *mut libc::sockaddr_storage).cast() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_flowinfo = a.flowinfo();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (s, len as libc::socklen_t)
}

/// Writes the control message that makes the kernel send from `local` into `buf`; returns its
/// length.
fn write_pktinfo(local: Local, buf: &mut [u64; CMSG_WORDS]) -> usize {
    // SAFETY: a zeroed msghdr pointing at `buf` (large enough for one in6_pktinfo message, the
    // larger of the two), so CMSG_FIRSTHDR is non-null and the writes stay inside `buf`.
    unsafe {
        let mut h: libc::msghdr = zeroed();
        h.msg_control = buf.as_mut_ptr().cast();
        h.msg_controllen = size_of::<[u64; CMSG_WORDS]>();
        let c = libc::CMSG_FIRSTHDR(&h);
        match local {
            Local::V4(a) => {
                let len = size_of::<libc::in_pktinfo>() as u32;
                (*c).cmsg_level = libc::IPPROTO_IP;
                (*c).cmsg_type = libc::IP_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(len) as _;
                let p = libc::in_pktinfo {
                    ipi_ifindex: 0,
                    ipi_spec_dst: libc::in_addr {
                        s_addr: u32::from(a).to_be(),
                    },
                    ipi_addr: libc::in_addr { s_addr: 0 },
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), p);
                libc::CMSG_SPACE(len) as usize
            }
            Local::V6(a, ifindex) => {
                let len = size_of::<libc::in6_pktinfo>() as u32;
                (*c).cmsg_level = libc::IPPROTO_IPV6;
                (*c).cmsg_type = libc::IPV6_PKTINFO;
                (*c).cmsg_len = libc::CMSG_LEN(len) as _;
                // The interface only where the address needs it (link-local): otherwise the
                // route decides, as it does for a socket bound to the address.
                let link_local = a.segments()[0] & 0xffc0 == 0xfe80;
                let p = libc::in6_pktinfo {
                    ipi6_addr: libc::in6_addr {
                        s6_addr: a.octets(),
                    },
                    ipi6_ifindex: if link_local { ifindex } else { 0 },
                };
                std::ptr::write_unaligned(libc::CMSG_DATA(c).cast(), p);
                libc::CMSG_SPACE(len) as usize
            }
        }
    }
}

/// Sends each message to its peer, from its local address if it has one, with one `sendmmsg`
/// (looping if the kernel takes fewer). A message the kernel refuses is logged and skipped.
fn send_batch(fd: RawFd, msgs: &[Outgoing]) {
    let mut names: Vec<(libc::sockaddr_storage, libc::socklen_t)> =
        msgs.iter().map(|o| to_sockaddr(o.peer)).collect();
    let mut cmsgs = vec![[0u64; CMSG_WORDS]; msgs.len()];
    let cmsg_lens: Vec<usize> = msgs
        .iter()
        .zip(cmsgs.iter_mut())
        .map(|(o, buf)| o.local.map_or(0, |l| write_pktinfo(l, buf)))
        .collect();
    let mut iovs: Vec<libc::iovec> = msgs
        .iter()
        .map(|o| libc::iovec {
            iov_base: o.msg.as_ptr() as *mut libc::c_void,
            iov_len: o.msg.len(),
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = iovs
        .iter_mut()
        .zip(names.iter_mut())
        .zip(cmsgs.iter_mut().zip(&cmsg_lens))
        .map(|((iov, (name, name_len)), (cmsg, cmsg_len))| {
            // SAFETY: all-zero is a valid msghdr; the pointers set below outlive the call.
            let mut h: libc::mmsghdr = unsafe { zeroed() };
            h.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = *name_len;
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            if *cmsg_len > 0 {
                h.msg_hdr.msg_control = cmsg.as_mut_ptr().cast();
                h.msg_hdr.msg_controllen = *cmsg_len;
            }
            h
        })
        .collect();
    let mut sent = 0;
    while sent < hdrs.len() {
        let rest = &mut hdrs[sent..];
        // SAFETY: `rest` holds valid headers whose buffers, names and control messages live
        // until the call returns; the kernel only reads them (and writes msg_len).
        let n = unsafe { libc::sendmmsg(fd, rest.as_mut_ptr(), rest.len() as libc::c_uint, 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // One bad destination fails the batch's head: skip it, send the rest.
            debug!(peer = %msgs[sent].peer, "fallback UDP send: {e}");
            sent += 1;
            continue;
        }
        sent += n as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockaddr_round_trips() {
        for a in [
            "192.0.2.1:53",
            "[2001:db8::1]:5300",
            "[::ffff:192.0.2.1]:53",
            "0.0.0.0:0",
        ] {
            let a: SocketAddr = a.parse().expect("addr");
            let (s, _) = to_sockaddr(a);
            assert_eq!(sockaddr(&s), Some(a));
        }
    }

    #[test]
    fn bound_sockets_get_a_larger_receive_buffer() {
        let sockets = bind_udp("127.0.0.1:0".parse().expect("addr"), 1).expect("bind");
        let s = socket2::SockRef::from(&sockets[0]);
        // Without CAP_NET_ADMIN the kernel caps SO_RCVBUF at rmem_max; either way it is more
        // than a socket gets by default (and the kernel doubles what it is given).
        let default = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
            .expect("socket")
            .recv_buffer_size()
            .expect("SO_RCVBUF");
        let got = s.recv_buffer_size().expect("SO_RCVBUF");
        let rmem_max: usize = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        assert!(
            got >= 2 * RCVBUF || (got >= 2 * rmem_max.min(RCVBUF) && got >= default),
            "SO_RCVBUF {got}, default {default}, rmem_max {rmem_max}"
        );
    }

    #[test]
    fn bind_udp_shares_one_port() {
        let sockets = bind_udp("127.0.0.1:0".parse().expect("addr"), 3).expect("bind");
        assert_eq!(sockets.len(), 3);
        let port = sockets[0].local_addr().expect("addr").port();
        assert_ne!(port, 0);
        for s in &sockets {
            assert_eq!(s.local_addr().expect("addr").port(), port);
        }
    }
}
