//! The fallback DNS server: answers over UDP and TCP whatever the XDP program passes up (and
//! everything, when the fast path is off).
//!
//! Split as hickory's server is, transport apart from answering:
//! - `request.rs`: the query bytes, parsed as far as they go;
//! - `policy.rs`: what to answer (drops, FORMERR, NOTIMP, BADVERS, REFUSED, ANY), the answer itself
//!   coming from [`ZoneSet::resolve`], the same procedure the fast-path compiler uses;
//! - `xfr.rs`: zone transfers;
//! - `response.rs`: encoding, with truncation to the transport's limit;
//! - `udp.rs`, `tcp.rs`: the socket loops ([`serve_udp`], [`serve_tcp`]), around one shared
//!   [`Fallback`];
//! - `stats.rs`: the counters `/metrics` reads.
//!
//! [`handle`] is a pure function from query bytes to response bytes; the servers around it only
//! move bytes, read the zones through [`Fallback::zones`] while it runs, and count.
//!
//! Policy, after what Knot and NSD do:
//! - never answer a response (QR=1) or a message shorter than a header: that is how answer loops
//!   and reflection of junk are avoided;
//! - FORMERR for anything that doesn't parse, NOTIMP for any opcode but QUERY, BADVERS for EDNS
//!   versions above 0, REFUSED for names outside our zones, other classes, and zone transfers
//!   unless [`FallbackConfig::allow_transfer`];
//! - ANY over UDP gets one RRset (RFC 8482), the full answer only over TCP;
//! - minimal truncation: a UDP answer that doesn't fit goes out with TC=1 and only the header,
//!   question and OPT, so the client retries over TCP.

mod policy;
mod request;
mod response;
mod stats;
mod tcp;
mod udp;
mod xfr;

#[cfg(test)]
mod testutil;

use std::{sync::Arc, time::Duration};

use self::{policy::respond, response::Reply};
pub use self::{stats::FallbackStats, tcp::serve_tcp, udp::serve_udp};
use crate::zone::{SharedZones, ZoneSet};

/// DNS header length (RFC 1035 §4.1.1).
const HEADER_LEN: usize = 12;
/// RFC 1035 §4.2.1: "Messages carried by UDP are restricted to 512 bytes"; RFC 6891 §6.2.5:
/// "Values lower than 512 MUST be treated as equal to 512".
const UDP_MIN: usize = 512;
/// RFC 1035 §4.2.2: TCP messages are prefixed with a two-byte length.
const TCP_MAX: usize = 65535;

/// How the query arrived: it sets the size limit, and zone transfers need TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// Fallback server settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FallbackConfig {
    /// UDP payload size we advertise in our OPT record and the most we send over UDP (RFC 6891;
    /// 1232 per DNS flag day 2020, which avoids IP fragmentation on common paths).
    pub udp_payload: u16,
    /// Answer AXFR/IXFR. Any client can then read whole zones, so it is off by default; IXFR is
    /// always answered with a full transfer (RFC 1995 §4 allows it).
    pub allow_transfer: bool,
    /// How long a TCP connection may wait for its next query (RFC 7766 §6.2.3 suggests seconds).
    pub tcp_idle_timeout: Duration,
    /// How long reading the rest of a started TCP message, or writing a response, may take: a
    /// client that trickles bytes doesn't hold a connection slot for longer.
    pub tcp_io_timeout: Duration,
    /// Most TCP connections served at once. When all are taken, a new connection closes the
    /// idlest connection of the client holding the most; if none is idle, it is closed itself.
    pub tcp_max_connections: usize,
    /// Most TCP connections one client (an IPv4 address, an IPv6 /64) holds at once; its next
    /// one closes its idlest (or, if all of them are in the middle of a message, is closed
    /// itself). Loose, as RFC 7766 §6.2.2 asks of a server's per-client limit: one address may be
    /// many resolvers, or many clients behind a NAT.
    pub tcp_max_per_source: usize,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self {
            udp_payload: dns_common::DEFAULT_UDP_PAYLOAD,
            allow_transfer: false,
            tcp_idle_timeout: Duration::from_secs(10),
            tcp_io_timeout: Duration::from_secs(5),
            tcp_max_connections: 256,
            tcp_max_per_source: 64,
        }
    }
}

/// The fallback server: the zones it answers from, its settings and its counters, shared (in an
/// `Arc`) by the UDP and TCP loops.
#[derive(Debug)]
pub struct Fallback {
    zones: SharedZones,
    config: FallbackConfig,
    stats: Arc<FallbackStats>,
}

impl Fallback {
    /// `stats` is shared with whoever reports them (the API's `/metrics`).
    pub fn new(zones: SharedZones, config: FallbackConfig, stats: Arc<FallbackStats>) -> Self {
        Self {
            zones,
            config,
            stats,
        }
    }

    /// The zones for reading: every read of the zones in the fallback goes through here. The
    /// version served now, which writes that land meanwhile leave alone.
    pub fn zones(&self) -> Arc<ZoneSet> {
        self.zones.load()
    }

    pub fn config(&self) -> &FallbackConfig {
        &self.config
    }

    pub fn stats(&self) -> &Arc<FallbackStats> {
        &self.stats
    }

    /// Answers one message that came over `transport`, and counts the answer.
    fn answer(&self, query: &[u8], transport: Transport) -> Option<Reply> {
        let reply = respond(&self.zones(), query, transport, &self.config);
        self.stats.record(&reply, transport);
        reply
    }
}

/// Answers one DNS message. `None`: send nothing.
///
/// A zone transfer (when allowed, over TCP) can take several messages; this returns the first
/// only, [`handle_all`] returns them all.
pub fn handle(
    zones: &ZoneSet,
    query: &[u8],
    transport: Transport,
    cfg: &FallbackConfig,
) -> Option<Vec<u8>> {
    respond(zones, query, transport, cfg).and_then(|r| r.messages.into_iter().next())
}

/// Like [`handle`], with every message of a multi-message answer (zone transfers over TCP).
pub fn handle_all(
    zones: &ZoneSet,
    query: &[u8],
    transport: Transport,
    cfg: &FallbackConfig,
) -> Vec<Vec<u8>> {
    respond(zones, query, transport, cfg)
        .map(|r| r.messages)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use hickory_proto::{
        op::{Message, ResponseCode},
        rr::RecordType,
    };
    use tokio::{
        io::AsyncWriteExt,
        net::{TcpListener, TcpStream, UdpSocket},
        time::timeout,
    };
    use tokio_util::sync::CancellationToken;

    use super::{testutil::*, *};

    #[tokio::test]
    async fn serves_udp_and_tcp() {
        let zones = SharedZones::new(zones());
        let fallback = Arc::new(Fallback::new(
            zones.clone(),
            FallbackConfig::default(),
            Arc::new(FallbackStats::new()),
        ));
        let shutdown = CancellationToken::new();
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let udp_addr = udp.local_addr().expect("addr");
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
        let tcp_addr = tcp.local_addr().expect("addr");
        let u = tokio::spawn(serve_udp(udp, fallback.clone(), shutdown.clone()));
        let t = tokio::spawn(serve_tcp(tcp, fallback.clone(), shutdown.clone()));
        let wait = Duration::from_secs(5);

        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        client
            .send_to(&bytes(&query("www.example.com.", RecordType::A)), udp_addr)
            .await
            .expect("send");
        let mut buf = vec![0u8; 2048];
        let (len, _) = timeout(wait, client.recv_from(&mut buf))
            .await
            .expect("udp answer in time")
            .expect("recv");
        let r = Message::from_vec(&buf[..len]).expect("parse");
        assert_eq!(r.id(), ID);
        assert_eq!(r.answers().len(), 1);

        // Two pipelined queries on one connection, sent in one write.
        let mut s = TcpStream::connect(tcp_addr).await.expect("connect");
        let mut q2 = query("nope.example.com.", RecordType::A);
        q2.set_id(2);
        let mut both = frame(&query("big.example.com.", RecordType::AAAA));
        both.extend_from_slice(&frame(&q2));
        s.write_all(&both).await.expect("write");
        let r1 = timeout(wait, read_frame(&mut s))
            .await
            .expect("first in time");
        let r2 = timeout(wait, read_frame(&mut s))
            .await
            .expect("second in time");
        assert_eq!(r1.id(), ID);
        assert!(!r1.truncated());
        assert_eq!(r1.answers().len(), 40);
        assert_eq!(r2.id(), 2);
        assert_eq!(r2.response_code(), ResponseCode::NXDomain);

        // A change to the zones is seen by the next query.
        let mut next = ZoneSet::clone(&zones.load());
        next.delete_rrset(&apex(), &n("www.example.com."), RecordType::A)
            .expect("delete");
        zones.publish(Arc::new(next));
        s.write_all(&frame(&query("www.example.com.", RecordType::A)))
            .await
            .expect("write");
        let r3 = timeout(wait, read_frame(&mut s))
            .await
            .expect("third in time");
        assert_eq!(r3.response_code(), ResponseCode::NXDomain);

        shutdown.cancel();
        timeout(wait, u)
            .await
            .expect("udp stops")
            .expect("udp task");
        timeout(wait, t)
            .await
            .expect("tcp stops")
            .expect("tcp task");
        let snap = fallback.stats().snapshot();
        let get = |k: &str| snap.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        assert_eq!(get("NOERROR"), Some(2));
        assert_eq!(get("NXDOMAIN"), Some(2));
    }

    /// dig, if installed: `(answer lines, status)` of `dig ARGS +noall +answer +comments`.
    async fn dig(port: u16, args: &[&str]) -> Option<(Vec<String>, String)> {
        let mut cmd = tokio::process::Command::new("dig");
        cmd.args(["@127.0.0.1", "-p", &port.to_string(), "+time=2", "+tries=1"])
            .args(["+noall", "+answer", "+comments"])
            .args(args)
            .kill_on_drop(true);
        let out = match timeout(Duration::from_secs(10), cmd.output()).await {
            Err(_) => panic!("dig {args:?} took over 10 s"),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Ok(r) => r.expect("dig runs"),
        };
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "dig {args:?}: {text}");
        let status = text
            .split("status: ")
            .nth(1)
            .and_then(|s| s.split(',').next())
            .unwrap_or_else(|| panic!("no status in dig's output: {text}"))
            .to_owned();
        let answers = text
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with(';'))
            .map(str::to_owned)
            .collect();
        Some((answers, status))
    }

    #[tokio::test]
    async fn any_over_udp_is_one_rrset_on_the_wire() {
        let fallback = Arc::new(Fallback::new(
            SharedZones::new(any_zones()),
            FallbackConfig::default(),
            Arc::new(FallbackStats::new()),
        ));
        let shutdown = CancellationToken::new();
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let port = udp.local_addr().expect("addr").port();
        // TCP on the same port, as dig expects; the port is free for TCP nearly always, else
        // another is taken.
        let tcp = match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(t) => t,
            Err(_) => TcpListener::bind("127.0.0.1:0").await.expect("bind tcp"),
        };
        let tcp_addr = tcp.local_addr().expect("addr");
        let u = tokio::spawn(serve_udp(udp, fallback.clone(), shutdown.clone()));
        let t = tokio::spawn(serve_tcp(tcp, fallback.clone(), shutdown.clone()));
        let wait = Duration::from_secs(5);

        let any = bytes(&with_edns(
            query("www.example.com.", RecordType::ANY),
            4096,
            false,
            0,
        ));
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        client
            .send_to(&any, ("127.0.0.1", port))
            .await
            .expect("send");
        let mut buf = vec![0u8; 4096];
        let (len, _) = timeout(wait, client.recv_from(&mut buf))
            .await
            .expect("udp answer in time")
            .expect("recv");
        let r = Message::from_vec(&buf[..len]).expect("parse");
        assert!(!r.truncated());
        assert_eq!(r.answers().len(), 1, "{r}");
        assert_eq!(r.answers()[0].record_type(), RecordType::A);

        let mut s = TcpStream::connect(tcp_addr).await.expect("connect");
        let mut f = (any.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(&any);
        s.write_all(&f).await.expect("write");
        let r = timeout(wait, read_frame(&mut s)).await.expect("tcp answer");
        assert_eq!(r.answers().len(), 3, "{r}");

        if tcp_addr.port() == port {
            match dig(port, &["www.example.com", "ANY", "+notcp"]).await {
                None => eprintln!("dig is not installed: its part of the test is skipped"),
                Some((udp, status)) => {
                    assert_eq!(status, "NOERROR");
                    assert_eq!(udp.len(), 1, "{udp:?}");
                    assert!(udp[0].contains("\tA\t192.0.2.1"), "{udp:?}");
                    let (tcp, _) = dig(port, &["www.example.com", "ANY", "+tcp"])
                        .await
                        .expect("dig");
                    assert_eq!(tcp.len(), 3, "{tcp:?}");
                    eprintln!("dig over UDP: {udp:?}");
                }
            }
        } else {
            eprintln!("port {port} was taken for TCP: the dig part of the test is skipped");
        }

        shutdown.cancel();
        timeout(wait, u)
            .await
            .expect("udp stops")
            .expect("udp task");
        timeout(wait, t)
            .await
            .expect("tcp stops")
            .expect("tcp task");
    }
}
