//! The fallback DNS server: answers over UDP and TCP whatever the XDP program passes up (and
//! everything, when the fast path is off).
//!
//! Split as hickory's server is, transport apart from answering:
//! - `request.rs`: the query bytes, parsed as far as they go;
//! - `policy.rs`: what to answer (drops, FORMERR, NOTIMP, BADVERS, REFUSED, ANY), the answer itself
//!   coming from [`ZoneSet::resolve`], the same procedure the fast-path compiler uses;
//! - `xfr.rs`: zone transfers;
//! - `update.rs`: dynamic updates (RFC 2136), applied through the engine like any other change;
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
//! - TSIG (RFC 8945) on any request is checked first (NOTAUTH with BADKEY, BADSIG or BADTIME),
//!   and the answer to a signed request is signed;
//! - FORMERR for anything that doesn't parse, NOTIMP for any opcode but QUERY (and UPDATE, when
//!   the daemon takes updates: signed with a known key, or from `--update-allow`; NOTIFY included:
//!   we are a primary), BADVERS for EDNS versions above 0, REFUSED for names outside our zones,
//!   other classes, and zone transfers over UDP or from clients neither
//!   [`FallbackConfig::allow_transfer`] nor [`FallbackConfig::transfer_allow`] lets in;
//! - ANY over UDP gets one RRset (RFC 8482), the full answer only over TCP;
//! - minimal truncation: a UDP answer that doesn't fit goes out with TC=1 and only the header,
//!   question and OPT, so the client retries over TCP.

mod cache;
mod policy;
mod request;
mod response;
mod stats;
mod tcp;
mod udp;
mod update;
mod xfr;

#[cfg(test)]
mod testutil;

use std::{net::IpAddr, sync::Arc, time::Duration};

use dns_common::limit::{Verdict, CLASS_NODATA, CLASS_NXDOMAIN, CLASS_OTHER, CLASS_POSITIVE};
use hickory_proto::op::{Message, ResponseCode};
use ipnet::IpNet;

use self::{
    cache::PacketCache,
    policy::{decide, respond, Answer, Auth},
    response::Reply,
    update::Pending,
};
pub use self::{
    stats::FallbackStats,
    tcp::serve_tcp,
    udp::{bind_udp, serve_udp},
    update::{Prefix, UpdateError, UpdateHandler, Updates},
    xfr::{parse_prefix, Client},
};
use crate::{
    journal::JournalSource,
    limit::Limits,
    tsig::{self, KeyRing},
    zone::{SharedZones, ZoneSet},
};

// DNS header length (RFC 1035 §4.1.1).
use dns_common::DNS_HEADER_LEN as HEADER_LEN;
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
    /// Answer AXFR/IXFR (over TCP) to anyone. Any client can then read whole zones, so it is off
    /// by default.
    pub allow_transfer: bool,
    /// The clients that may transfer zones (over TCP) when [`FallbackConfig::allow_transfer`] is
    /// off.
    pub transfer_allow: Vec<IpNet>,
    /// Sources allowed to send unsigned updates (when the fallback takes updates at all). Signed
    /// ones need a known key only.
    pub update_allow: Vec<Prefix>,
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
    /// This server's identifier, sent in an NSID option (RFC 5001) to queries that ask for it.
    pub nsid: Option<Vec<u8>>,
    /// Set while a fleet edge is cut off from its source of truth: misses in our zones are
    /// answered SERVFAIL.
    pub stale_misses: StaleMisses,
    /// Bytes of answers each UDP worker's packet cache holds before it starts over; 0 turns it
    /// off.
    pub packet_cache_bytes: usize,
}

/// Bytes of answers a UDP worker keeps by default: some 50,000 plain answers.
pub const PACKET_CACHE_BYTES: usize = 8 << 20;

/// A switch the fleet flips while this edge can't know whether a name it lacks was created
/// since it lost touch with etcd: NXDOMAIN and NODATA become SERVFAIL, so resolvers ask another
/// server rather than cache a wrong negative answer.
#[derive(Clone, Debug, Default)]
pub struct StaleMisses(Arc<std::sync::atomic::AtomicBool>);

impl StaleMisses {
    pub fn set(&self, on: bool) {
        self.0.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Settings compare equal when they share the same switch.
impl PartialEq for StaleMisses {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for StaleMisses {}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self {
            udp_payload: dns_common::DEFAULT_UDP_PAYLOAD,
            allow_transfer: false,
            transfer_allow: Vec::new(),
            update_allow: Vec::new(),
            tcp_idle_timeout: Duration::from_secs(10),
            tcp_io_timeout: Duration::from_secs(5),
            tcp_max_connections: 256,
            tcp_max_per_source: 64,
            nsid: None,
            stale_misses: StaleMisses::default(),
            packet_cache_bytes: PACKET_CACHE_BYTES,
        }
    }
}

/// The fallback server: the zones it answers from, its settings and its counters, shared (in an
/// `Arc`) by the UDP and TCP loops.
/// The TSIG keys in force, shared by the fallback and the reload that swaps them.
pub type KeySlot = Arc<arc_swap::ArcSwap<KeyRing>>;

pub struct Fallback {
    zones: SharedZones,
    /// Swapped whole by a reload that changes the access lists; each message reads it once.
    config: arc_swap::ArcSwap<FallbackConfig>,
    stats: Arc<FallbackStats>,
    /// The IXFR journal; without it IXFR gets full transfers.
    journal: Option<Arc<dyn JournalSource>>,
    /// TSIG keys requests may be signed with (none: every signed request is BADKEY); a reload
    /// swaps them.
    keys: KeySlot,
    /// Who may update and what applies updates; `None`: UPDATE is NOTIMP.
    updates: Option<Updates>,
    /// Cookies and response-rate limiting; `None`: COOKIE options are ignored, nothing is
    /// limited.
    limits: Option<Arc<Limits>>,
}

impl std::fmt::Debug for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallback")
            .field("zones", &self.zones)
            .field("config", &self.config)
            .field("stats", &self.stats)
            .field("journal", &self.journal.is_some())
            .field("keys", &self.keys.load())
            .field("updates", &self.updates.is_some())
            .finish()
    }
}

impl Fallback {
    /// `stats` is shared with whoever reports them (the API's `/metrics`).
    pub fn new(zones: SharedZones, config: FallbackConfig, stats: Arc<FallbackStats>) -> Self {
        Self {
            zones,
            config: arc_swap::ArcSwap::from_pointee(config),
            stats,
            journal: None,
            keys: KeySlot::default(),
            updates: None,
            limits: None,
        }
    }

    /// Answers cookies and limits UDP responses with `limits` (shared with the map writer).
    pub fn with_limits(mut self, limits: Arc<Limits>) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Answers IXFR from `journal` (the engine's).
    pub fn with_journal(mut self, journal: Arc<dyn JournalSource>) -> Self {
        self.journal = Some(journal);
        self
    }

    /// Verifies signed requests with the keys in `keys` (which a reload may swap) and signs
    /// their answers.
    pub fn with_keys(mut self, keys: KeySlot) -> Self {
        self.keys = keys;
        self
    }

    /// Takes dynamic updates (RFC 2136), applied by `updates.handler`.
    pub fn with_updates(mut self, updates: Updates) -> Self {
        self.updates = Some(updates);
        self
    }

    /// The TSIG keys now, for whoever else verifies signed messages.
    pub fn keys(&self) -> Arc<KeyRing> {
        self.keys.load_full()
    }

    /// The zones for reading: every read of the zones in the fallback goes through here. The
    /// version served now, which writes that land meanwhile leave alone.
    pub fn zones(&self) -> Arc<ZoneSet> {
        self.zones.load()
    }

    /// The settings now (a reload may change the access lists meanwhile).
    pub fn config(&self) -> Arc<FallbackConfig> {
        self.config.load_full()
    }

    /// Takes `new`'s access lists (who may transfer zones: [`FallbackConfig::allow_transfer`],
    /// [`FallbackConfig::transfer_allow`]; who may send unsigned updates:
    /// [`FallbackConfig::update_allow`]) in place of the running ones, for every message from
    /// now on; the other settings stay. Returns the flags whose lists changed.
    pub fn set_access(&self, new: &FallbackConfig) -> Vec<&'static str> {
        let old = self.config.load_full();
        let mut changed = Vec::new();
        if old.allow_transfer != new.allow_transfer {
            changed.push("allow-axfr");
        }
        if old.transfer_allow != new.transfer_allow {
            changed.push("transfer-allow");
        }
        if old.update_allow != new.update_allow {
            changed.push("update-allow");
        }
        if !changed.is_empty() {
            self.config.store(Arc::new(FallbackConfig {
                allow_transfer: new.allow_transfer,
                transfer_allow: new.transfer_allow.clone(),
                update_allow: new.update_allow.clone(),
                ..FallbackConfig::clone(&old)
            }));
        }
        changed
    }

    pub fn stats(&self) -> &Arc<FallbackStats> {
        &self.stats
    }

    /// Answers one message that came over `transport` from `peer`, and counts the answer; an
    /// update is answered by [`Fallback::apply_update`].
    fn answer(&self, query: &[u8], transport: Transport, peer: IpAddr) -> Answer {
        self.answer_cached(query, transport, peer, None)
    }

    /// [`Fallback::answer`], first looking in `cache` (a UDP worker's) for the answer to the
    /// same bytes, and keeping there what may be kept.
    fn answer_cached(
        &self,
        query: &[u8],
        transport: Transport,
        peer: IpAddr,
        cache: Option<&mut PacketCache>,
    ) -> Answer {
        let zones = self.zones();
        let config = self.config.load_full();
        let mut keep = None;
        let mut answer = match cache {
            Some(cache) => {
                cache.check(&zones, &config);
                match cache.get(query) {
                    Some(reply) => Some(Answer::Now(Some(reply))),
                    None => {
                        // A cache that keeps nothing needs no second parse for its insert.
                        keep = cache.enabled().then_some(cache);
                        None
                    }
                }
            }
            None => None,
        }
        .unwrap_or_else(|| self.decide(&zones, &config, query, transport, peer));
        if let (Some(cache), Answer::Now(Some(reply))) = (keep, &answer) {
            if query.len() >= HEADER_LEN && query[2] & 0x80 == 0 && cache.same_switch(&config) {
                cache.insert(query, &request::parse(query), reply);
            }
        }
        if let (Answer::Now(reply), Some(limits), Transport::Udp) =
            (&mut answer, &self.limits, transport)
        {
            if self.rate_limit(limits, reply, peer) {
                return answer;
            }
        }
        if let Answer::Now(reply) = &answer {
            self.stats.record(reply, transport);
        }
        answer
    }

    /// The answer to one message, made from scratch.
    fn decide(
        &self,
        zones: &ZoneSet,
        config: &FallbackConfig,
        query: &[u8],
        transport: Transport,
        peer: IpAddr,
    ) -> Answer {
        let keys = self.keys.load_full();
        let auth = Auth {
            keys: &keys,
            updates: self.updates.as_ref(),
            peer: Some(peer),
            journal: self.journal.as_deref(),
            now: tsig::now(),
            limits: self.limits.as_deref(),
        };
        decide(zones, query, transport, config, &auth)
    }

    /// Response-rate limiting over UDP, with the XDP program's buckets and slip (see
    /// [`crate::limit`]): the reply goes, goes truncated, or is dropped (`true`: counted here).
    fn rate_limit(&self, limits: &Limits, reply: &mut Option<Reply>, peer: IpAddr) -> bool {
        let Some(r) = reply else {
            return false;
        };
        let Some(msg) = r.messages.first() else {
            return false;
        };
        if msg.len() < HEADER_LEN {
            return false;
        }
        let ancount = u16::from_be_bytes([msg[6], msg[7]]);
        let aa = msg[2] & 0x04 != 0;
        let class = match r.rcode {
            ResponseCode::NXDomain => CLASS_NXDOMAIN,
            ResponseCode::NoError if ancount > 0 => CLASS_POSITIVE,
            ResponseCode::NoError if aa => CLASS_NODATA,
            _ => CLASS_OTHER,
        };
        match limits.admit(peer, class, r.proved) {
            Verdict::Send => false,
            Verdict::Drop => {
                self.stats.count_rate_limited();
                *reply = None;
                true
            }
            Verdict::Slip => {
                match slipped(msg) {
                    Some(m) => {
                        self.stats.count_slipped();
                        r.messages = vec![m];
                        r.rcode = ResponseCode::NoError;
                        r.truncated = true;
                    }
                    None => *reply = None,
                }
                false
            }
        }
    }

    /// Applies an update and returns (and counts) its answer, once the change has landed.
    async fn apply_update(&self, pending: Box<Pending>) -> Option<Reply> {
        let handler = self.updates.as_ref()?.handler.clone();
        let transport = pending.transport;
        let reply = Some(pending.run(handler).await);
        self.stats.record(&reply, transport);
        reply
    }
}

/// The slip of a response: TC set, NOERROR, the question and OPT kept, no records (as the XDP
/// program sends it).
fn slipped(msg: &[u8]) -> Option<Vec<u8>> {
    let mut m = Message::from_vec(msg).ok()?;
    m.take_answers();
    m.take_name_servers();
    m.take_additionals();
    m.set_truncated(true)
        .set_response_code(hickory_proto::op::ResponseCode::NoError);
    m.to_vec().ok()
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
    respond(zones, query, transport, cfg, &Client::default())
        .and_then(|r| r.messages.into_iter().next())
}

/// Like [`handle`], with every message of a multi-message answer (zone transfers over TCP).
pub fn handle_all(
    zones: &ZoneSet,
    query: &[u8],
    transport: Transport,
    cfg: &FallbackConfig,
) -> Vec<Vec<u8>> {
    handle_from(zones, query, transport, cfg, &Client::default())
}

/// Like [`handle_all`], for a given client (transfer ACL, IXFR journal).
pub fn handle_from(
    zones: &ZoneSet,
    query: &[u8],
    transport: Transport,
    cfg: &FallbackConfig,
    client: &Client,
) -> Vec<Vec<u8>> {
    respond(zones, query, transport, cfg, client)
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

    /// A reload's access lists apply to the next message; the other settings stay, and a reload
    /// that changes no list reports none.
    #[test]
    fn set_access_swaps_the_lists_alone() {
        let fallback = Fallback::new(
            SharedZones::new(zones()),
            FallbackConfig {
                nsid: Some(b"edge1".to_vec()),
                ..FallbackConfig::default()
            },
            Arc::new(FallbackStats::new()),
        );
        let axfr = bytes(&query("example.com.", RecordType::AXFR));
        let peer: IpAddr = "192.0.2.53".parse().expect("address");
        let rcode = |f: &Fallback| match f.answer(&axfr, Transport::Tcp, peer) {
            Answer::Now(Some(reply)) => reply.rcode,
            _ => panic!("an answer now"),
        };
        assert_eq!(rcode(&fallback), ResponseCode::Refused);

        let new = FallbackConfig {
            transfer_allow: vec![parse_prefix("192.0.2.0/24").expect("prefix")],
            update_allow: vec!["10.0.0.0/8".parse().expect("prefix")],
            ..FallbackConfig::default()
        };
        assert_eq!(
            fallback.set_access(&new),
            ["transfer-allow", "update-allow"]
        );
        assert_eq!(rcode(&fallback), ResponseCode::NoError);
        let now = fallback.config();
        assert_eq!(now.update_allow, new.update_allow);
        assert_eq!(now.nsid.as_deref(), Some(&b"edge1"[..]), "nsid kept");
        assert!(fallback.set_access(&new).is_empty());

        assert_eq!(
            fallback.set_access(&FallbackConfig::default()),
            ["transfer-allow", "update-allow"]
        );
        assert_eq!(rcode(&fallback), ResponseCode::Refused);
    }

    #[tokio::test]
    async fn serves_udp_and_tcp() {
        let zones = SharedZones::new(zones());
        let fallback = Arc::new(Fallback::new(
            zones.clone(),
            FallbackConfig::default(),
            Arc::new(FallbackStats::new()),
        ));
        let shutdown = CancellationToken::new();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let udp_addr = udp.local_addr().expect("addr");
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
        let tcp_addr = tcp.local_addr().expect("addr");
        let u = tokio::spawn(serve_udp(vec![udp], fallback.clone(), shutdown.clone()));
        let t = tokio::spawn(serve_tcp(vec![tcp], fallback.clone(), shutdown.clone()));
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
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().expect("addr").port();
        // TCP on the same port, as dig expects; the port is free for TCP nearly always, else
        // another is taken.
        let tcp = match TcpListener::bind(("127.0.0.1", port)).await {
            Ok(t) => t,
            Err(_) => TcpListener::bind("127.0.0.1:0").await.expect("bind tcp"),
        };
        let tcp_addr = tcp.local_addr().expect("addr");
        let u = tokio::spawn(serve_udp(vec![udp], fallback.clone(), shutdown.clone()));
        let t = tokio::spawn(serve_tcp(vec![tcp], fallback.clone(), shutdown.clone()));
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

    /// An update that waits for its turn at the writer holds up nothing: the UDP loop answers
    /// queries meanwhile, and the update's answer follows once it is applied. The handler is
    /// the engine's stand-in with a gate the test opens.
    #[tokio::test]
    async fn udp_answers_queries_while_an_update_waits() {
        struct Gated {
            gate: tokio::sync::Semaphore,
            zones: SharedZones,
        }
        impl UpdateHandler for Gated {
            fn apply_update(
                self: Arc<Self>,
                mut build: update::Build,
            ) -> std::pin::Pin<
                Box<
                    dyn std::future::Future<
                            Output = Result<Option<crate::engine::Applied>, UpdateError>,
                        > + Send,
                >,
            > {
                Box::pin(async move {
                    let _open = self.gate.acquire().await.expect("gate");
                    let edit = build(&self.zones.load())?;
                    assert!(edit.is_some(), "the update changes something");
                    Ok(None)
                })
            }
        }
        let zones = SharedZones::new(zones());
        let gated = Arc::new(Gated {
            gate: tokio::sync::Semaphore::new(0),
            zones: zones.clone(),
        });
        let fallback = Arc::new(
            Fallback::new(
                zones,
                FallbackConfig {
                    update_allow: vec!["127.0.0.0/8".parse().expect("prefix")],
                    ..FallbackConfig::default()
                },
                Arc::new(FallbackStats::new()),
            )
            .with_updates(Updates {
                handler: gated.clone(),
            }),
        );
        let shutdown = CancellationToken::new();
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let addr = udp.local_addr().expect("addr");
        let u = tokio::spawn(serve_udp(vec![udp], fallback, shutdown.clone()));
        let client = UdpSocket::bind("127.0.0.1:0").await.expect("client");
        let mut update = raw(
            0x2800,
            [1, 0, 1, 0],
            b"\x07example\x03com\x00\x00\x06\x00\x01",
        );
        update.extend(b"\x03new\x07example\x03com\x00\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04");
        update.extend([192, 0, 2, 9]);
        update[1] = 0x01;
        client.send_to(&update, addr).await.expect("send update");
        client
            .send_to(&bytes(&query("www.example.com.", RecordType::A)), addr)
            .await
            .expect("send query");
        let wait = Duration::from_secs(5);
        let mut buf = vec![0u8; 2048];
        let (len, _) = timeout(wait, client.recv_from(&mut buf))
            .await
            .expect("the query is answered while the update waits")
            .expect("recv");
        let first = Message::from_vec(&buf[..len]).expect("parse");
        assert_eq!(first.id(), ID, "the query's answer comes first");
        assert_eq!(first.answers().len(), 1);

        gated.gate.add_permits(1);
        let (len, _) = timeout(wait, client.recv_from(&mut buf))
            .await
            .expect("the update is answered once applied")
            .expect("recv");
        let second = Message::from_vec(&buf[..len]).expect("parse");
        assert_eq!(second.id(), u16::from_be_bytes([update[0], update[1]]));
        assert_eq!(second.response_code(), ResponseCode::NoError);
        shutdown.cancel();
        u.await.expect("udp loop");
    }
}
