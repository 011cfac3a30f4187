//! The fallback DNS server: answers over UDP and TCP whatever the XDP program passes up (and
//! everything, when the fast path is off).
//!
//! [`handle`] is a pure function from query bytes to response bytes; the servers around it only
//! move bytes, hold the read lock on the zones while `handle` runs, and count. Every answer comes
//! from [`ZoneSet::resolve`], the same procedure the fast-path compiler uses.
//!
//! Policy, after what Knot and NSD do:
//! - never answer a response (QR=1) or a message shorter than a header: that is how answer loops
//!   and reflection of junk are avoided;
//! - FORMERR for anything that doesn't parse, NOTIMP for any opcode but QUERY, BADVERS for EDNS
//!   versions above 0, REFUSED for names outside our zones, other classes, and zone transfers
//!   unless [`FallbackConfig::allow_transfer`];
//! - minimal truncation: a UDP answer that doesn't fit goes out with TC=1 and only the header,
//!   question and OPT, so the client retries over TCP.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, PoisonError, RwLockReadGuard,
    },
    time::Duration,
};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{DNSClass, Name, Record, RecordType},
    serialize::binary::{BinDecodable, BinDecoder, BinEncodable},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::Semaphore,
    task::JoinSet,
    time::timeout,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::zone::{SharedZones, Zone, ZoneSet};

/// DNS header length (RFC 1035 §4.1.1).
const HEADER_LEN: usize = 12;
/// RFC 1035 §4.2.1: "Messages carried by UDP are restricted to 512 bytes"; RFC 6891 §6.2.5:
/// "Values lower than 512 MUST be treated as equal to 512".
const UDP_MIN: usize = 512;
/// RFC 1035 §4.2.2: TCP messages are prefixed with a two-byte length.
const TCP_MAX: usize = 65535;
/// A zone transfer packs records into messages of about this many bytes (uncompressed), well
/// under what a TCP message can carry, as other servers do.
const XFR_CHUNK: usize = 16 * 1024;

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
    /// Most TCP connections served at once; more are closed on accept.
    pub tcp_max_connections: usize,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self {
            udp_payload: dns_common::DEFAULT_UDP_PAYLOAD,
            allow_transfer: false,
            tcp_idle_timeout: Duration::from_secs(10),
            tcp_io_timeout: Duration::from_secs(5),
            tcp_max_connections: 256,
        }
    }
}

/// Counters of the fallback server, shared by its tasks and read by `/metrics`.
#[derive(Debug, Default)]
pub struct FallbackStats {
    noerror: AtomicU64,
    nxdomain: AtomicU64,
    refused: AtomicU64,
    formerr: AtomicU64,
    notimp: AtomicU64,
    servfail: AtomicU64,
    badvers: AtomicU64,
    /// Messages not answered: shorter than a header, or responses (QR=1).
    dropped: AtomicU64,
    /// Responses sent truncated (TC=1).
    truncated: AtomicU64,
    /// TCP connections closed on accept because all slots were taken.
    tcp_rejected: AtomicU64,
}

impl FallbackStats {
    pub fn new() -> Self {
        Self::default()
    }

    fn counter(&self, rcode: ResponseCode) -> Option<&AtomicU64> {
        Some(match rcode {
            ResponseCode::NoError => &self.noerror,
            ResponseCode::NXDomain => &self.nxdomain,
            ResponseCode::Refused => &self.refused,
            ResponseCode::FormErr => &self.formerr,
            ResponseCode::NotImp => &self.notimp,
            ResponseCode::ServFail => &self.servfail,
            ResponseCode::BADVERS => &self.badvers,
            // `handle` produces no other RCODE.
            _ => return None,
        })
    }

    fn record(&self, reply: &Option<Reply>) {
        match reply {
            None => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Some(reply) => {
                if let Some(c) = self.counter(reply.rcode) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                if reply.truncated {
                    self.truncated.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Responses sent, by RCODE name, in a fixed order.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        [
            ("NOERROR", &self.noerror),
            ("NXDOMAIN", &self.nxdomain),
            ("REFUSED", &self.refused),
            ("FORMERR", &self.formerr),
            ("NOTIMP", &self.notimp),
            ("SERVFAIL", &self.servfail),
            ("BADVERS", &self.badvers),
        ]
        .into_iter()
        .map(|(name, c)| (name.to_string(), c.load(Ordering::Relaxed)))
        .collect()
    }

    /// Messages not answered (too short, or QR=1).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Responses sent with TC=1.
    pub fn truncated(&self) -> u64 {
        self.truncated.load(Ordering::Relaxed)
    }

    /// TCP connections refused because `tcp_max_connections` were open.
    pub fn tcp_rejected(&self) -> u64 {
        self.tcp_rejected.load(Ordering::Relaxed)
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

/// The response messages with what the counters need.
#[derive(Debug)]
struct Reply {
    messages: Vec<Vec<u8>>,
    rcode: ResponseCode,
    truncated: bool,
}

/// The client's OPT record (RFC 6891 §6.1.3), as far as we use it.
#[derive(Clone, Copy, Debug)]
struct ClientEdns {
    /// Requestor's UDP payload size (the OPT CLASS field).
    payload: u16,
    version: u8,
    dnssec_ok: bool,
}

/// The query, parsed as far as it goes.
struct Request {
    id: u16,
    opcode: u8,
    rd: bool,
    cd: bool,
    qdcount: u16,
    /// The first question exactly as received (case preserved), if it parsed.
    question: Option<Query>,
    /// Why the message past the header didn't parse, if it didn't.
    malformed: Option<String>,
    edns: Option<ClientEdns>,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Parses what follows the header. `buf` is at least [`HEADER_LEN`] long.
fn parse(buf: &[u8]) -> Request {
    let mut req = Request {
        id: be16(buf, 0),
        opcode: (buf[2] >> 3) & 0x0f,
        rd: buf[2] & 0x01 != 0,
        cd: buf[3] & 0x10 != 0,
        qdcount: be16(buf, 4),
        question: None,
        malformed: None,
        edns: None,
    };
    if let Err(why) = parse_body(buf, &mut req) {
        req.malformed = Some(why);
    }
    req
}

fn parse_body(buf: &[u8], req: &mut Request) -> Result<(), String> {
    let (ancount, nscount, arcount) = (be16(buf, 6), be16(buf, 8), be16(buf, 10));
    let mut d = BinDecoder::new(buf);
    d.read_slice(HEADER_LEN).map_err(|e| e.to_string())?;
    for i in 0..req.qdcount {
        let q = Query::read(&mut d).map_err(|e| format!("question {i}: {e}"))?;
        if i == 0 {
            req.question = Some(q);
        }
    }
    // Queries have no answer or authority records but for IXFR's SOA; they only need to parse.
    for i in 0..u32::from(ancount) + u32::from(nscount) {
        read_record(&mut d).map_err(|e| format!("record {i}: {e}"))?;
    }
    for i in 0..arcount {
        let (name, rtype, class, ttl, rdata) =
            read_record(&mut d).map_err(|e| format!("additional {i}: {e}"))?;
        if rtype != u16::from(RecordType::OPT) {
            continue;
        }
        // RFC 6891 §6.1.1: "If a query message with more than one OPT RR is received, a
        // FORMERR (RCODE=1) MUST be returned."
        if req.edns.is_some() {
            return Err("more than one OPT record".into());
        }
        // RFC 6891 §6.1.2: NAME "MUST be 0 (root domain)".
        if !name.is_root() {
            return Err("OPT owner is not the root".into());
        }
        check_options(rdata)?;
        req.edns = Some(ClientEdns {
            payload: class,
            version: (ttl >> 16) as u8,
            dnssec_ok: ttl & 0x8000 != 0,
        });
    }
    Ok(())
}

/// One resource record: owner, type, class, TTL and RDATA, undecoded.
fn read_record<'a>(
    d: &mut BinDecoder<'a>,
) -> Result<(Name, u16, u16, u32, &'a [u8]), hickory_proto::ProtoError> {
    let name = Name::read(d)?;
    let rtype = d.read_u16()?.unverified();
    let class = d.read_u16()?.unverified();
    let ttl = d.read_u32()?.unverified();
    let len = d.read_u16()?.unverified();
    let rdata = d.read_slice(usize::from(len))?.unverified();
    Ok((name, rtype, class, ttl, rdata))
}

/// Checks that the OPT RDATA is a well-framed list of {code, length, data}. The options
/// themselves (cookies, NSID, padding, ...) are ignored.
fn check_options(mut rdata: &[u8]) -> Result<(), String> {
    while !rdata.is_empty() {
        if rdata.len() < 4 {
            return Err("truncated EDNS option".into());
        }
        let len = usize::from(be16(rdata, 2));
        if rdata.len() < 4 + len {
            return Err("EDNS option longer than the OPT record".into());
        }
        rdata = &rdata[4 + len..];
    }
    Ok(())
}

/// A response under construction.
struct Draft<'a> {
    req: &'a Request,
    cfg: &'a FallbackConfig,
    rcode: ResponseCode,
    aa: bool,
    question: bool,
    /// Include our OPT record.
    opt: bool,
    answers: Vec<Record>,
    authority: Vec<Record>,
    additional: Vec<Record>,
}

impl<'a> Draft<'a> {
    fn new(req: &'a Request, cfg: &'a FallbackConfig, rcode: ResponseCode) -> Self {
        Self {
            req,
            cfg,
            rcode,
            aa: false,
            question: req.qdcount == 1 && req.question.is_some(),
            // RFC 6891 §7: "If an OPT record is present in a received request, compliant
            // responders MUST include an OPT record in their respective responses."
            opt: req.edns.is_some() && req.malformed.is_none(),
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
        }
    }

    /// Header flags and sections into a message; `truncated` leaves the records out and sets TC.
    /// The records move into the message: a draft is encoded whole at most once.
    fn message(&mut self, truncated: bool) -> Message {
        let req = self.req;
        let mut msg = Message::new();
        msg.set_id(req.id)
            .set_message_type(MessageType::Response)
            // RFC 1035 §4.1.1: OPCODE "is set by the originator of a query and copied into the
            // response" (0 for every answer but NOTIMP).
            .set_op_code(OpCode::from_u8(req.opcode))
            .set_authoritative(self.aa)
            .set_truncated(truncated)
            // RD: "it is copied into the response"; CD: RFC 4035 §3.1.6 copies it too.
            .set_recursion_desired(req.rd)
            .set_recursion_available(false)
            .set_authentic_data(false)
            .set_checking_disabled(req.cd)
            .set_response_code(self.rcode);
        if self.question {
            if let Some(q) = &req.question {
                msg.add_query(q.clone());
            }
        }
        if !truncated {
            msg.add_answers(std::mem::take(&mut self.answers))
                .add_name_servers(std::mem::take(&mut self.authority))
                .add_additionals(std::mem::take(&mut self.additional));
        }
        if self.opt {
            let mut edns = Edns::new();
            edns.set_max_payload(self.cfg.udp_payload)
                .set_version(0)
                .set_dnssec_ok(req.edns.is_some_and(|e| e.dnssec_ok));
            msg.set_edns(edns);
        }
        msg
    }

    /// Encodes the response within the transport's size limit.
    fn finish(mut self, transport: Transport) -> Reply {
        let limit = match transport {
            Transport::Tcp => TCP_MAX,
            // RFC 6891 §6.2.3/§6.2.5: the requestor's payload size, capped by ours, never below
            // 512; without EDNS, 512 (RFC 1035 §4.2.1).
            Transport::Udp => match self.req.edns {
                Some(e) if self.opt => {
                    usize::from(e.payload.min(self.cfg.udp_payload)).max(UDP_MIN)
                }
                _ => UDP_MIN,
            },
        };
        let full = self.message(false).to_vec();
        let (bytes, truncated) = match full {
            // hickory sets TC itself if even TCP's 64 KiB can't hold everything.
            Ok(bytes) if bytes.len() <= limit => {
                let tc = bytes.get(2).is_some_and(|b| b & 0x02 != 0);
                (bytes, tc)
            }
            Ok(_) => {
                // RFC 2181 §9: "the TC bit should be set [...] when the complete RRSet will not
                // fit"; like Knot and NSD we send the header, question and OPT only, and the
                // client retries over TCP (RFC 7766 §5).
                match self.message(true).to_vec() {
                    Ok(bytes) => (bytes, true),
                    Err(e) => return self.servfail(&e),
                }
            }
            Err(e) => return self.servfail(&e),
        };
        Reply {
            messages: vec![bytes],
            rcode: self.rcode,
            truncated,
        }
    }

    fn servfail(self, err: &hickory_proto::ProtoError) -> Reply {
        warn!(id = self.req.id, "encoding the response failed: {err}");
        let mut d = Draft::new(self.req, self.cfg, ResponseCode::ServFail);
        d.question = self.question;
        d.opt = self.opt;
        Reply {
            // A bare header and question always encode; if not, send nothing.
            messages: d.message(true).to_vec().into_iter().collect(),
            rcode: ResponseCode::ServFail,
            truncated: false,
        }
    }
}

fn respond(
    zones: &ZoneSet,
    buf: &[u8],
    transport: Transport,
    cfg: &FallbackConfig,
) -> Option<Reply> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    // QR=1 is a response: answering it could start a loop between two servers.
    if buf[2] & 0x80 != 0 {
        return None;
    }
    let req = parse(buf);
    let error = |rcode| Some(Draft::new(&req, cfg, rcode).finish(transport));

    // RFC 1035 §4.1.1 NOTIMP: "The name server does not support the requested kind of query."
    // That covers IQUERY, STATUS, NOTIFY and UPDATE: zones change through the API only.
    if req.opcode != u8::from(OpCode::Query) {
        debug!(id = req.id, opcode = req.opcode, "NOTIMP");
        return error(ResponseCode::NotImp);
    }
    if let Some(why) = &req.malformed {
        debug!(id = req.id, "FORMERR: {why}");
        let mut d = Draft::new(&req, cfg, ResponseCode::FormErr);
        d.opt = false;
        return Some(d.finish(transport));
    }
    // RFC 9619: "In the DNS, QDCOUNT is (usually) at most one"; every server we mimic
    // answers anything else with FORMERR.
    if req.qdcount != 1 {
        debug!(
            id = req.id,
            qdcount = req.qdcount,
            "FORMERR: QDCOUNT is not 1"
        );
        return error(ResponseCode::FormErr);
    }
    let Some(q) = &req.question else {
        return error(ResponseCode::FormErr);
    };
    if let Some(edns) = req.edns {
        // RFC 6891 §6.1.3: "If a responder does not implement the VERSION level of the request,
        // then it MUST respond with RCODE=BADVERS." Our OPT says version 0.
        if edns.version > 0 {
            debug!(id = req.id, version = edns.version, "BADVERS");
            return error(ResponseCode::BADVERS);
        }
    }
    if q.query_class() != DNSClass::IN {
        return error(ResponseCode::Refused);
    }
    match q.query_type() {
        // A meta type that only lives in the additional section.
        RecordType::OPT => return error(ResponseCode::FormErr),
        RecordType::AXFR | RecordType::IXFR => {
            return Some(transfer(zones, &req, q, transport, cfg))
        }
        _ => {}
    }

    let res = zones.resolve(q.name(), q.query_type());
    let mut d = Draft::new(&req, cfg, res.rcode);
    d.aa = res.aa;
    d.answers = res.answers;
    d.authority = res.authority;
    d.additional = res.additional;
    Some(d.finish(transport))
}

/// AXFR (RFC 5936) and IXFR (RFC 1995, answered with a full transfer).
fn transfer(
    zones: &ZoneSet,
    req: &Request,
    q: &Query,
    transport: Transport,
    cfg: &FallbackConfig,
) -> Reply {
    let refused = || Draft::new(req, cfg, ResponseCode::Refused).finish(transport);
    if !cfg.allow_transfer {
        return refused();
    }
    let Some(zone) = zones.zone(q.name()) else {
        return refused();
    };
    let mut soa = zone.soa_record();
    soa.set_name(q.name().clone());
    match (transport, q.query_type()) {
        // RFC 1995 §2: over UDP the server may answer "a single SOA record of the server's
        // current version to inform the client that a TCP query should be initiated".
        (Transport::Udp, RecordType::IXFR) => {
            let mut d = Draft::new(req, cfg, ResponseCode::NoError);
            d.aa = true;
            d.answers.push(soa);
            d.finish(transport)
        }
        // RFC 5936 §4.2: AXFR over UDP is not defined.
        (Transport::Udp, _) => refused(),
        (Transport::Tcp, _) => full_transfer(zone, req, cfg, soa),
    }
}

/// RFC 5936 §2.2: the zone's SOA, every other record, the SOA again, over as many messages as it
/// takes; the question only in the first (§2.2.1 allows QDCOUNT 0 in the others).
fn full_transfer(zone: &Zone, req: &Request, cfg: &FallbackConfig, soa: Record) -> Reply {
    let mut records = vec![soa.clone()];
    for (name, _, ttl, rdatas) in zone.records() {
        records.extend(
            rdatas
                .iter()
                .map(|rd| Record::from_rdata(name.clone(), ttl, rd.clone())),
        );
    }
    records.push(soa);

    let mut chunks: Vec<Vec<Record>> = vec![Vec::new()];
    let mut size = 0;
    for r in records {
        let len = r.to_bytes().map(|b| b.len()).unwrap_or(XFR_CHUNK);
        if size + len > XFR_CHUNK && chunks.last().is_some_and(|c| !c.is_empty()) {
            chunks.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(c) = chunks.last_mut() {
            c.push(r);
        }
    }
    let mut messages = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut d = Draft::new(req, cfg, ResponseCode::NoError);
        d.aa = true;
        d.question &= i == 0;
        d.answers = chunk;
        let reply = d.finish(Transport::Tcp);
        if reply.truncated || reply.rcode != ResponseCode::NoError {
            // One record too big for a message: nothing sensible to send but an error.
            return Draft::new(req, cfg, ResponseCode::ServFail).finish(Transport::Tcp);
        }
        messages.extend(reply.messages);
    }
    Reply {
        messages,
        rcode: ResponseCode::NoError,
        truncated: false,
    }
}

/// The zones for reading. A panic while a writer held the lock poisons it; the zone mutations
/// validate before they change anything, so the data is still whole and we keep serving it.
fn read_zones(zones: &SharedZones) -> RwLockReadGuard<'_, ZoneSet> {
    zones.read().unwrap_or_else(PoisonError::into_inner)
}

/// Serves DNS over UDP on `socket` until `shutdown` is cancelled.
pub async fn serve_udp(
    socket: UdpSocket,
    zones: SharedZones,
    cfg: FallbackConfig,
    stats: Arc<FallbackStats>,
    shutdown: CancellationToken,
) {
    if let Ok(addr) = socket.local_addr() {
        info!(%addr, "fallback serving UDP");
    }
    // Queries can be up to 64 KiB (large EDNS payloads); whatever is longer is cut by the kernel
    // and then fails to parse.
    let mut buf = vec![0u8; TCP_MAX];
    loop {
        let (len, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    // Transient on an unconnected socket (e.g. an ICMP error for an earlier
                    // reply); pause so a persistent one can't spin the loop.
                    debug!("fallback UDP receive: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let query = buf.get(..len).unwrap_or_default();
        let reply = respond(&read_zones(&zones), query, Transport::Udp, &cfg);
        stats.record(&reply);
        let Some(msg) = reply.and_then(|r| r.messages.into_iter().next()) else {
            continue;
        };
        if let Err(e) = socket.send_to(&msg, peer).await {
            debug!(%peer, "fallback UDP send: {e}");
        }
    }
    info!("fallback UDP stopped");
}

/// Serves DNS over TCP (RFC 7766) on `listener` until `shutdown` is cancelled, then waits for the
/// open connections to finish the message they are on.
///
/// Several queries per connection are answered in order, pipelined ones included. A connection
/// closes after [`FallbackConfig::tcp_idle_timeout`] without a query; at most
/// [`FallbackConfig::tcp_max_connections`] are served at once.
pub async fn serve_tcp(
    listener: TcpListener,
    zones: SharedZones,
    cfg: FallbackConfig,
    stats: Arc<FallbackStats>,
    shutdown: CancellationToken,
) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "fallback serving TCP");
    }
    let cfg = Arc::new(cfg);
    let slots = Arc::new(Semaphore::new(cfg.tcp_max_connections));
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(v) => v,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    warn!("fallback TCP accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            stats.tcp_rejected.fetch_add(1, Ordering::Relaxed);
            debug!(%peer, "fallback TCP: connection limit reached, closing");
            continue;
        };
        let (zones, cfg, stats, shutdown) =
            (zones.clone(), cfg.clone(), stats.clone(), shutdown.clone());
        connections.spawn(async move {
            let _slot = slot;
            if let Err(e) = connection(stream, peer, &zones, &cfg, &stats, &shutdown).await {
                debug!(%peer, "fallback TCP connection: {e}");
            }
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
    info!("fallback TCP stopped");
}

/// Why a TCP connection ended early.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("i/o error")]
    Io(#[from] std::io::Error),
    #[error("timed out in the middle of a message")]
    Timeout,
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    zones: &SharedZones,
    cfg: &FallbackConfig,
    stats: &FallbackStats,
    shutdown: &CancellationToken,
) -> Result<(), ConnError> {
    // Responses go out as one write each; don't hold them back for coalescing.
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.split();
    loop {
        let mut len = [0u8; 2];
        let read = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            r = timeout(cfg.tcp_idle_timeout, rd.read_exact(&mut len)) => r,
        };
        match read {
            // RFC 7766 §6.2.3: idle connections are closed by the server.
            Err(_) => {
                debug!(%peer, "fallback TCP: idle, closing");
                return Ok(());
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(_)) => {}
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        timeout(cfg.tcp_io_timeout, rd.read_exact(&mut query))
            .await
            .map_err(|_| ConnError::Timeout)??;
        let reply = respond(&read_zones(zones), &query, Transport::Tcp, cfg);
        stats.record(&reply);
        for msg in reply.map(|r| r.messages).unwrap_or_default() {
            let Ok(len) = u16::try_from(msg.len()) else {
                continue;
            };
            let mut frame = Vec::with_capacity(msg.len() + 2);
            frame.extend_from_slice(&len.to_be_bytes());
            frame.extend_from_slice(&msg);
            timeout(cfg.tcp_io_timeout, wr.write_all(&frame))
                .await
                .map_err(|_| ConnError::Timeout)??;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::RwLock;

    use hickory_proto::{
        op::Header,
        rr::{
            rdata::{A, AAAA, TXT},
            RData,
        },
    };
    use tokio::net::{TcpListener, TcpStream, UdpSocket};

    use super::*;
    use crate::zone::{ZoneSet, ZoneSpec};

    const ID: u16 = 0xbeef;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).expect("test name")
    }

    fn apex() -> Name {
        n("example.com.")
    }

    /// example.com: www A, big AAAA×40.
    fn zones() -> ZoneSet {
        let mut zs = ZoneSet::new();
        zs.create_zone(ZoneSpec::new(
            apex(),
            n("ns1.example.com."),
            n("hostmaster.example.com."),
            vec![n("ns1.example.com.")],
        ))
        .expect("zone");
        zs.set_rrset(
            &apex(),
            &n("www.example.com."),
            RecordType::A,
            300,
            vec![RData::A(A([192, 0, 2, 1].into()))],
        )
        .expect("www");
        let big = (1..=40u16)
            .map(|i| RData::AAAA(AAAA([0x2001, 0xdb8, 0, 0, 0, 0, 0, i].into())))
            .collect();
        zs.set_rrset(&apex(), &n("big.example.com."), RecordType::AAAA, 300, big)
            .expect("big");
        zs
    }

    fn query(name: &str, qtype: RecordType) -> Message {
        let mut m = Message::new();
        m.set_id(ID)
            .set_recursion_desired(true)
            .add_query(Query::query(n(name), qtype));
        m
    }

    fn with_edns(mut m: Message, payload: u16, dnssec_ok: bool, version: u8) -> Message {
        let mut e = Edns::new();
        e.set_max_payload(payload)
            .set_dnssec_ok(dnssec_ok)
            .set_version(version);
        m.set_edns(e);
        m
    }

    fn bytes(m: &Message) -> Vec<u8> {
        m.to_vec().expect("encode query")
    }

    fn ask_raw(zs: &ZoneSet, q: &[u8], t: Transport, cfg: &FallbackConfig) -> Message {
        let out = handle(zs, q, t, cfg).expect("a response");
        Message::from_vec(&out).expect("response parses")
    }

    fn ask(q: &Message) -> Message {
        ask_raw(
            &zones(),
            &bytes(q),
            Transport::Udp,
            &FallbackConfig::default(),
        )
    }

    fn rcode(m: &Message) -> u16 {
        u16::from(m.response_code())
    }

    /// A header with the given flags word and counts, then `rest`.
    fn raw(flags: u16, counts: [u16; 4], rest: &[u8]) -> Vec<u8> {
        let mut b = ID.to_be_bytes().to_vec();
        b.extend_from_slice(&flags.to_be_bytes());
        for c in counts {
            b.extend_from_slice(&c.to_be_bytes());
        }
        b.extend_from_slice(rest);
        b
    }

    /// The wire question `www.example.com. A IN`.
    fn www_question() -> Vec<u8> {
        let mut q = b"\x03www\x07example\x03com\x00".to_vec();
        q.extend_from_slice(&[0, 1, 0, 1]);
        q
    }

    fn formerr(q: &[u8]) -> Message {
        let r = ask_raw(&zones(), q, Transport::Udp, &FallbackConfig::default());
        assert_eq!(r.id(), ID);
        assert_eq!(r.message_type(), MessageType::Response);
        assert_eq!(r.response_code(), ResponseCode::FormErr);
        r
    }

    #[test]
    fn drops_short_messages_and_responses() {
        let cfg = FallbackConfig::default();
        let zs = zones();
        assert!(handle(&zs, &[0; 11], Transport::Udp, &cfg).is_none());
        assert!(handle(&zs, &[], Transport::Tcp, &cfg).is_none());
        let mut resp = query("www.example.com.", RecordType::A);
        resp.set_message_type(MessageType::Response);
        assert!(handle(&zs, &bytes(&resp), Transport::Udp, &cfg).is_none());
    }

    #[test]
    fn formerr_on_garbage_and_bad_counts() {
        // Garbage after a header claiming one question: nothing to echo.
        let r = formerr(&raw(0x0100, [1, 0, 0, 0], &[0xff, 0xfe, 0x01]));
        assert!(r.queries().is_empty());
        // Header only, question missing.
        formerr(&raw(0x0100, [1, 0, 0, 0], &[]));
        // Question cut short.
        let q = www_question();
        formerr(&raw(0x0100, [1, 0, 0, 0], &q[..q.len() - 2]));
        // No question.
        let r = formerr(&raw(0x0100, [0, 0, 0, 0], &[]));
        assert!(r.queries().is_empty());
        // Two questions: FORMERR without echoing either.
        let mut two = www_question();
        two.extend_from_slice(&www_question());
        let r = formerr(&raw(0x0100, [2, 0, 0, 0], &two));
        assert!(r.queries().is_empty());
        // A name that points at itself (compression loop).
        let r = formerr(&raw(0x0100, [1, 0, 0, 0], &[0xc0, 12, 0, 1, 0, 1]));
        assert!(r.queries().is_empty());
        // A pointer forward, past the end.
        formerr(&raw(0x0100, [1, 0, 0, 0], &[0xc0, 40, 0, 1, 0, 1]));
        // A good question with a broken additional record: the question is echoed.
        let mut rest = www_question();
        rest.extend_from_slice(&[0, 0, 41, 0x10]);
        let r = formerr(&raw(0x0100, [1, 0, 0, 1], &rest));
        assert_eq!(r.queries().len(), 1);
        assert!(r.extensions().is_none());
    }

    #[test]
    fn formerr_on_bad_opt() {
        // Two OPT records.
        let mut rest = www_question();
        let opt = [0u8, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0];
        rest.extend_from_slice(&opt);
        rest.extend_from_slice(&opt);
        formerr(&raw(0x0100, [1, 0, 0, 2], &rest));
        // OPT owned by a name other than the root.
        let mut rest = www_question();
        rest.extend_from_slice(&[0xc0, 12, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        formerr(&raw(0x0100, [1, 0, 0, 1], &rest));
        // An option longer than the RDATA.
        let mut rest = www_question();
        rest.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 5, 0, 10, 0, 8, 1]);
        formerr(&raw(0x0100, [1, 0, 0, 1], &rest));
        // qtype OPT.
        formerr(&bytes(&query("www.example.com.", RecordType::OPT)));
    }

    #[test]
    fn notimp_for_other_opcodes() {
        for opcode in [1u16, 2, 3, 4, 5, 15] {
            let q = raw((opcode << 11) | 0x0100, [1, 0, 0, 0], &www_question());
            let r = ask_raw(&zones(), &q, Transport::Udp, &FallbackConfig::default());
            assert_eq!(r.response_code(), ResponseCode::NotImp, "opcode {opcode}");
            assert_eq!(u8::from(r.op_code()), opcode as u8);
            assert_eq!(r.id(), ID);
            assert_eq!(r.queries().len(), 1);
        }
    }

    #[test]
    fn badvers_for_edns_above_zero() {
        let r = ask(&with_edns(
            query("www.example.com.", RecordType::A),
            1232,
            true,
            1,
        ));
        assert_eq!(rcode(&r), 16);
        let e = r.extensions().as_ref().expect("OPT in BADVERS");
        assert_eq!(e.version(), 0);
        assert!(e.flags().dnssec_ok);
        assert!(r.answers().is_empty());
        assert_eq!(r.queries().len(), 1);
    }

    #[test]
    fn refused_outside_zones_and_other_classes() {
        let r = ask(&query("www.example.org.", RecordType::A));
        assert_eq!(r.response_code(), ResponseCode::Refused);
        assert!(!r.authoritative());
        assert!(r.answers().is_empty() && r.name_servers().is_empty());

        let mut q = query("www.example.com.", RecordType::A);
        let mut ch = Query::query(n("www.example.com."), RecordType::A);
        ch.set_query_class(DNSClass::CH);
        q.take_queries();
        q.add_query(ch);
        assert_eq!(ask(&q).response_code(), ResponseCode::Refused);
    }

    #[test]
    fn header_flags() {
        let mut q = query("www.example.com.", RecordType::A);
        q.set_checking_disabled(true)
            .set_authentic_data(true)
            .set_recursion_available(true);
        let r = ask(&q);
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert_eq!(r.id(), ID);
        assert_eq!(r.message_type(), MessageType::Response);
        assert_eq!(r.op_code(), OpCode::Query);
        assert!(r.authoritative());
        assert!(!r.truncated());
        assert!(r.recursion_desired());
        assert!(r.checking_disabled());
        assert!(!r.recursion_available());
        assert!(!r.authentic_data());
        assert_eq!(r.answers().len(), 1);

        let mut q = query("www.example.com.", RecordType::A);
        q.set_recursion_desired(false);
        let out = handle(
            &zones(),
            &bytes(&q),
            Transport::Udp,
            &FallbackConfig::default(),
        )
        .expect("response");
        assert!(!Message::from_vec(&out).expect("parse").recursion_desired());
        // Z bit clear.
        assert_eq!(out[3] & 0x40, 0);
        let h = Header::read(&mut BinDecoder::new(&out)).expect("header");
        assert_eq!(h.answer_count(), 1);
    }

    #[test]
    fn question_case_is_echoed_and_answers_compress_to_it() {
        let q = query("WwW.ExAmPlE.cOm.", RecordType::A);
        let out = handle(
            &zones(),
            &bytes(&q),
            Transport::Udp,
            &FallbackConfig::default(),
        )
        .expect("response");
        let r = Message::from_vec(&out).expect("parse");
        assert!(r.queries()[0].name().eq_case(&n("WwW.ExAmPlE.cOm.")));
        assert!(r.answers()[0].name().eq_case(&n("WwW.ExAmPlE.cOm.")));
        // The question sits at offset 12; the answer's owner is a pointer to it.
        let answer_at = 12 + 17 + 4;
        assert_eq!(&out[answer_at..answer_at + 2], &[0xc0, 12]);
    }

    #[test]
    fn opt_is_echoed_with_do_only_when_asked() {
        let r = ask(&with_edns(
            query("www.example.com.", RecordType::A),
            4096,
            true,
            0,
        ));
        let e = r.extensions().as_ref().expect("OPT");
        assert_eq!(e.max_payload(), 1232);
        assert_eq!(e.version(), 0);
        assert!(e.flags().dnssec_ok);
        assert!(e.options().as_ref().is_empty());

        let r = ask(&with_edns(
            query("www.example.com.", RecordType::A),
            4096,
            false,
            0,
        ));
        assert!(!r.extensions().as_ref().expect("OPT").flags().dnssec_ok);

        let r = ask(&query("www.example.com.", RecordType::A));
        assert!(r.extensions().is_none());
    }

    #[test]
    fn truncates_to_the_transport_limit() {
        let cfg = FallbackConfig::default();
        let zs = zones();
        // 40 AAAA: 40 * 28 bytes > 512.
        let plain = bytes(&query("big.example.com.", RecordType::AAAA));
        let out = handle(&zs, &plain, Transport::Udp, &cfg).expect("response");
        assert!(out.len() <= 512);
        let r = Message::from_vec(&out).expect("parse");
        assert!(r.truncated());
        assert!(r.authoritative());
        assert_eq!(r.queries().len(), 1);
        assert!(r.answers().is_empty() && r.name_servers().is_empty());
        assert!(r.additionals().is_empty() && r.extensions().is_none());

        // EDNS 512: truncated, OPT kept.
        let small = bytes(&with_edns(
            query("big.example.com.", RecordType::AAAA),
            512,
            true,
            0,
        ));
        let r = ask_raw(&zs, &small, Transport::Udp, &cfg);
        assert!(r.truncated());
        assert!(r.extensions().is_some());

        // EDNS 4096 capped at our 1232: fits.
        let big = bytes(&with_edns(
            query("big.example.com.", RecordType::AAAA),
            4096,
            false,
            0,
        ));
        let r = ask_raw(&zs, &big, Transport::Udp, &cfg);
        assert!(!r.truncated());
        assert_eq!(r.answers().len(), 40);
        // Our own limit below the client's.
        let tight = FallbackConfig {
            udp_payload: 600,
            ..cfg.clone()
        };
        assert!(ask_raw(&zs, &big, Transport::Udp, &tight).truncated());

        // TCP: 64 KiB.
        let r = ask_raw(&zs, &plain, Transport::Tcp, &cfg);
        assert!(!r.truncated());
        assert_eq!(r.answers().len(), 40);
    }

    #[test]
    fn negative_answers_carry_the_soa() {
        let r = ask(&query("nope.example.com.", RecordType::A));
        assert_eq!(r.response_code(), ResponseCode::NXDomain);
        assert!(r.authoritative());
        assert!(r.answers().is_empty());
        assert_eq!(r.name_servers().len(), 1);
        assert_eq!(r.name_servers()[0].record_type(), RecordType::SOA);
        assert_eq!(r.name_servers()[0].ttl(), 30);

        let r = ask(&query("www.example.com.", RecordType::TXT));
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert!(r.authoritative());
        assert!(r.answers().is_empty());
        assert_eq!(r.name_servers()[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn zone_transfers() {
        let mut zs = zones();
        for i in 0..600 {
            zs.set_rrset(
                &apex(),
                &n(&format!("t{i}.example.com.")),
                RecordType::TXT,
                60,
                vec![RData::TXT(TXT::new(vec!["x".repeat(40)]))],
            )
            .expect("txt");
        }
        let axfr = bytes(&query("example.com.", RecordType::AXFR));
        let ixfr = bytes(&query("example.com.", RecordType::IXFR));
        let off = FallbackConfig::default();
        let on = FallbackConfig {
            allow_transfer: true,
            ..off.clone()
        };
        for (q, t) in [
            (&axfr, Transport::Tcp),
            (&ixfr, Transport::Tcp),
            (&axfr, Transport::Udp),
        ] {
            assert_eq!(
                ask_raw(&zs, q, t, &off).response_code(),
                ResponseCode::Refused
            );
        }
        assert_eq!(
            ask_raw(&zs, &axfr, Transport::Udp, &on).response_code(),
            ResponseCode::Refused
        );
        let not_apex = bytes(&query("www.example.com.", RecordType::AXFR));
        assert_eq!(
            ask_raw(&zs, &not_apex, Transport::Tcp, &on).response_code(),
            ResponseCode::Refused
        );

        // IXFR over UDP: the current SOA, "use TCP".
        let r = ask_raw(&zs, &ixfr, Transport::Udp, &on);
        assert_eq!(r.answers().len(), 1);
        assert_eq!(r.answers()[0].record_type(), RecordType::SOA);

        let msgs = handle_all(&zs, &axfr, Transport::Tcp, &on);
        assert!(msgs.len() > 1, "{} messages", msgs.len());
        let mut records = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            assert!(m.len() <= TCP_MAX);
            let r = Message::from_vec(m).expect("parse");
            assert_eq!(r.id(), ID);
            assert!(r.authoritative());
            assert_eq!(r.response_code(), ResponseCode::NoError);
            assert_eq!(r.queries().len(), usize::from(i == 0));
            records.extend(r.answers().to_vec());
        }
        let zone = zs.zone(&apex()).expect("zone");
        assert_eq!(records.len(), zone.record_count() + 2);
        assert_eq!(records[0].record_type(), RecordType::SOA);
        assert_eq!(records[records.len() - 1].record_type(), RecordType::SOA);
        // `handle` gives the first message.
        assert_eq!(
            handle(&zs, &axfr, Transport::Tcp, &on).as_ref(),
            msgs.first()
        );
    }

    #[test]
    fn stats_snapshot_names() {
        let stats = FallbackStats::new();
        let zs = zones();
        let cfg = FallbackConfig::default();
        for q in [
            bytes(&query("www.example.com.", RecordType::A)),
            bytes(&query("nope.example.com.", RecordType::A)),
            bytes(&query("big.example.com.", RecordType::AAAA)),
            vec![0; 5],
        ] {
            stats.record(&respond(&zs, &q, Transport::Udp, &cfg));
        }
        let snap = stats.snapshot();
        let get = |k: &str| snap.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        assert_eq!(get("NOERROR"), Some(2));
        assert_eq!(get("NXDOMAIN"), Some(1));
        assert_eq!(get("BADVERS"), Some(0));
        assert_eq!(snap.len(), 7);
        assert_eq!(stats.dropped(), 1);
        assert_eq!(stats.truncated(), 1);
    }

    async fn read_frame(s: &mut TcpStream) -> Message {
        let mut len = [0u8; 2];
        s.read_exact(&mut len).await.expect("length");
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf).await.expect("message");
        Message::from_vec(&buf).expect("parse")
    }

    fn frame(m: &Message) -> Vec<u8> {
        let b = bytes(m);
        let mut f = (b.len() as u16).to_be_bytes().to_vec();
        f.extend_from_slice(&b);
        f
    }

    #[tokio::test]
    async fn serves_udp_and_tcp() {
        let zones: SharedZones = Arc::new(RwLock::new(zones()));
        let cfg = FallbackConfig::default();
        let stats = Arc::new(FallbackStats::new());
        let shutdown = CancellationToken::new();
        let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
        let udp_addr = udp.local_addr().expect("addr");
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
        let tcp_addr = tcp.local_addr().expect("addr");
        let u = tokio::spawn(serve_udp(
            udp,
            zones.clone(),
            cfg.clone(),
            stats.clone(),
            shutdown.clone(),
        ));
        let t = tokio::spawn(serve_tcp(
            tcp,
            zones.clone(),
            cfg,
            stats.clone(),
            shutdown.clone(),
        ));
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
        zones
            .write()
            .expect("lock")
            .delete_rrset(&apex(), &n("www.example.com."), RecordType::A)
            .expect("delete");
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
        let snap = stats.snapshot();
        let get = |k: &str| snap.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        assert_eq!(get("NOERROR"), Some(2));
        assert_eq!(get("NXDOMAIN"), Some(2));
    }

    #[tokio::test]
    async fn tcp_idle_timeout_and_connection_cap() {
        let zones: SharedZones = Arc::new(RwLock::new(zones()));
        let cfg = FallbackConfig {
            tcp_idle_timeout: Duration::from_millis(200),
            tcp_max_connections: 1,
            ..FallbackConfig::default()
        };
        let stats = Arc::new(FallbackStats::new());
        let shutdown = CancellationToken::new();
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind tcp");
        let addr = tcp.local_addr().expect("addr");
        let t = tokio::spawn(serve_tcp(tcp, zones, cfg, stats.clone(), shutdown.clone()));
        let wait = Duration::from_secs(5);

        let mut first = TcpStream::connect(addr).await.expect("connect");
        first
            .write_all(&frame(&query("www.example.com.", RecordType::A)))
            .await
            .expect("write");
        timeout(wait, read_frame(&mut first)).await.expect("answer");
        // The only slot is taken: the second connection is closed at once.
        let mut second = TcpStream::connect(addr).await.expect("connect");
        let mut b = [0u8; 1];
        let got = timeout(wait, second.read(&mut b))
            .await
            .expect("closed in time");
        assert!(matches!(got, Ok(0) | Err(_)));
        assert_eq!(stats.tcp_rejected(), 1);
        // The first goes idle and is closed by the server.
        let got = timeout(wait, first.read(&mut b))
            .await
            .expect("idle close in time");
        assert!(matches!(got, Ok(0) | Err(_)));

        shutdown.cancel();
        timeout(wait, t)
            .await
            .expect("tcp stops")
            .expect("tcp task");
    }
}
