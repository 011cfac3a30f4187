//! Confirmations from edge to edge: an edge that has applied a revision tells the edge that
//! wrote it in one UDP datagram, rather than through etcd.
//!
//! Why: an edge's registration holds the revision it has applied, and publishing each one is a
//! Raft round on every etcd member: with 8 edges, 8 of them for each write, on top of the write
//! itself. That was most of etcd's work in a fleet, and the write waited for the slowest of
//! them. Only the writing edge needs the news at once.
//!
//! How:
//! - A write's transaction also puts `{prefix}/data-write/{writer}` (under the writer's lease)
//!   holding where the writer takes acks. The key is in the followers' watch range, so each
//!   follower learns with the revision who wrote it and where to say it has applied it.
//! - A follower that has applied the revision (its maps answer it) sends the writer an ack:
//!   its id, its lease and the revision, with an HMAC-SHA256 under a key every edge reads from
//!   `{prefix}/ack-key` (made by the first edge that needs it: whoever can read etcd is trusted
//!   with the fleet anyway). The writer counts an ack only for the registration holding the
//!   lease it names, so an ack never outlives that registration; a replayed ack only repeats a
//!   fact.
//! - The writer answers each ack with a receipt. A follower whose ack got its receipt leaves
//!   the applied revision to its registration's next lazy update ([`LAZY_PUBLISH`], for
//!   `GET /v1/edges`); without a receipt in time (three of that writer's usual round trips,
//!   within [`RECEIPT_WAIT`] and [`RECEIPT_WAIT_MAX`]) it publishes at once, as without acks.
//!   A lost datagram, or edges that can't reach each other, costs that wait, never a
//!   confirmation.

use std::{
    collections::HashMap,
    net::SocketAddr,
    str::FromStr,
    sync::{
        atomic::{AtomicI64, AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use etcd_client::{Compare, CompareOp, Txn, TxnOp, TxnOpResponse};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::{net::UdpSocket, sync::watch};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{request, Fleet, FleetError};

/// The least a follower waits for the writer's receipt before it publishes the revision in its
/// registration after all; it waits three of the receipts' round trips from that writer (a
/// writer in another region is farther), up to [`RECEIPT_WAIT_MAX`].
pub(super) const RECEIPT_WAIT: Duration = Duration::from_millis(50);
const RECEIPT_WAIT_MAX: Duration = Duration::from_secs(1);
/// How soon a registration shows a revision that was confirmed directly.
pub(super) const LAZY_PUBLISH: Duration = Duration::from_secs(1);

const MAGIC: &[u8; 4] = b"EDA1";
const KIND_ACK: u8 = 1;
const KIND_RECEIPT: u8 = 2;
/// The MAC is HMAC-SHA256 cut to this many bytes (RFC 2104 §5 allows it; 128 bits is plenty
/// for a message that is worth something for a second).
const MAC_LEN: usize = 16;
const KEY_LEN: usize = 32;
/// Longest datagram this takes: two ids of at most 255 bytes and the fixed part.
const MAX_DATAGRAM: usize = 4 + 1 + 8 + 8 + 2 * 256 + MAC_LEN;

/// `--ack-listen`: an address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AckListen(pub Option<SocketAddr>);

/// The port acks go to by default.
pub const DEFAULT_PORT: u16 = 8054;

impl FromStr for AckListen {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "off" {
            return Ok(Self(None));
        }
        s.parse()
            .map(|a| Self(Some(a)))
            .map_err(|_| format!("{s:?} is not an address with a port (say 0.0.0.0:8054) or off"))
    }
}

/// One datagram, either way.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Message {
    kind: u8,
    /// The lease of the edge that applied the revision (the ack's sender).
    lease: i64,
    revision: i64,
    from: String,
    to: String,
}

fn mac(key: &[u8], body: &[u8]) -> [u8; MAC_LEN] {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(body);
    let full = m.finalize().into_bytes();
    let mut out = [0; MAC_LEN];
    out.copy_from_slice(&full[..MAC_LEN]);
    out
}

fn encode(key: &[u8], m: &Message) -> Option<Vec<u8>> {
    let (from, to) = (m.from.as_bytes(), m.to.as_bytes());
    let mut out = Vec::with_capacity(MAX_DATAGRAM);
    out.extend_from_slice(MAGIC);
    out.push(m.kind);
    out.extend_from_slice(&m.lease.to_be_bytes());
    out.extend_from_slice(&m.revision.to_be_bytes());
    for id in [from, to] {
        out.push(u8::try_from(id.len()).ok()?);
        out.extend_from_slice(id);
    }
    let tag = mac(key, &out);
    out.extend_from_slice(&tag);
    Some(out)
}

/// The message in `bytes` if it is one and its MAC is right under `key`.
fn decode(key: &[u8], bytes: &[u8]) -> Option<Message> {
    let body_len = bytes.len().checked_sub(MAC_LEN)?;
    let (body, tag) = bytes.split_at(body_len);
    let want = <Hmac<Sha256> as Mac>::new_from_slice(key)
        .expect("HMAC takes any key length")
        .chain_update(body);
    want.verify_truncated_left(tag).ok()?;
    let rest = body.strip_prefix(MAGIC)?;
    let (&kind, rest) = rest.split_first()?;
    let (lease, rest) = rest.split_first_chunk::<8>()?;
    let (revision, mut rest) = rest.split_first_chunk::<8>()?;
    let mut ids = [String::new(), String::new()];
    for id in &mut ids {
        let (&len, r) = rest.split_first()?;
        let (bytes, r) = r.split_at_checked(usize::from(len))?;
        *id = std::str::from_utf8(bytes).ok()?.to_owned();
        rest = r;
    }
    if !rest.is_empty() || !matches!(kind, KIND_ACK | KIND_RECEIPT) {
        return None;
    }
    let [from, to] = ids;
    Some(Message {
        kind,
        lease: i64::from_be_bytes(*lease),
        revision: i64::from_be_bytes(*revision),
        from,
        to,
    })
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct AckStats {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    /// Datagrams that were not an ack or receipt for this edge under the fleet's key.
    pub rejected: AtomicU64,
    /// Times this edge wrote its registration to publish what it has applied.
    pub published: AtomicU64,
}

/// What this edge has sent one writer and heard back.
#[derive(Debug)]
struct Writer {
    /// The newest revision acked to it.
    sent: i64,
    /// The newest revision it sent a receipt for.
    receipted: i64,
    /// Since when an ack to it has waited for its receipt (the first ack not yet receipted).
    waiting_since: Instant,
    /// Its receipts came back the last time one was waited for: wait for them (not etcd).
    path_ok: bool,
    /// The receipts' round trip, smoothed (None until one came).
    round_trip: Option<Duration>,
}

impl Writer {
    /// How long an ack to this writer waits for its receipt.
    fn receipt_wait(&self) -> Duration {
        self.round_trip.map_or(RECEIPT_WAIT, |rtt| {
            (3 * rtt).clamp(RECEIPT_WAIT, RECEIPT_WAIT_MAX)
        })
    }
}

/// How many leases of one edge the acks taken from it are kept for: its registration's, and
/// a few before (acks under them only ever count for their own lease).
const LEASES_KEPT: usize = 4;

/// This edge's side of the acks: its socket, what it has been told, what it has sent.
pub(super) struct Acks {
    socket: Option<Arc<UdpSocket>>,
    /// Where other edges send acks for this edge's writes (None: acks are off).
    address: Option<SocketAddr>,
    key: OnceLock<Vec<u8>>,
    /// Per edge, per lease (newest last): the newest revision it acked under that lease.
    got: Mutex<HashMap<String, Vec<(i64, i64)>>>,
    /// Ticks with each ack taken, for writes waiting on them.
    got_tx: watch::Sender<u64>,
    /// The writers this edge has acked to, by id.
    writers: Mutex<HashMap<String, Writer>>,
    /// The newest applied revision that some writer may wait for and no ack told of: it goes
    /// into the registration at once.
    uncovered: AtomicI64,
    /// The newest applied revision this edge's registration holds.
    published: AtomicI64,
    pub stats: AckStats,
}

impl Acks {
    /// Binds the socket, and finds the address others reach it at: `advertise`, or the
    /// address this host reaches etcd from (its first endpoint) with the bound port. `listen`
    /// None is the default, `[::]:8054` (or `0.0.0.0:8054` on a host without IPv6): if that
    /// can't be bound, acks are off and writes are confirmed through etcd, as are they when
    /// the address others would use can only be guessed as a loopback one.
    pub(super) async fn bind(
        listen: Option<AckListen>,
        advertise: Option<SocketAddr>,
        etcd: &[String],
    ) -> Result<Self, FleetError> {
        let socket = match listen {
            Some(AckListen(None)) => None,
            Some(AckListen(Some(addr))) => Some(
                UdpSocket::bind(addr)
                    .await
                    .map_err(|source| FleetError::AckListen { addr, source })?,
            ),
            None => {
                let v6 = SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, DEFAULT_PORT));
                let v4 = SocketAddr::from(([0, 0, 0, 0], DEFAULT_PORT));
                match UdpSocket::bind(v6).await {
                    Ok(s) => Some(s),
                    Err(_) => match UdpSocket::bind(v4).await {
                        Ok(s) => Some(s),
                        Err(e) => {
                            warn!("fleet: binding the ack socket on port {DEFAULT_PORT}: {e}; other edges confirm this edge's writes through etcd (--ack-listen to choose another address)");
                            None
                        }
                    },
                }
            }
        };
        let address = match &socket {
            None => None,
            Some(socket) => {
                let bound = socket
                    .local_addr()
                    .map_err(|source| FleetError::AckListen {
                        addr: listen.and_then(|l| l.0).unwrap_or(([0, 0, 0, 0], 0).into()),
                        source,
                    })?;
                match advertise {
                    Some(a) => Some(a),
                    None if !bound.ip().is_unspecified() => Some(bound),
                    None => match towards(etcd).await {
                        Some(ip) if !ip.is_loopback() => Some(SocketAddr::new(ip, bound.port())),
                        found => {
                            warn!(?found, "fleet: no address towards etcd that other edges could reach; other edges confirm this edge's writes through etcd (--ack-address to name one)");
                            None
                        }
                    },
                }
            }
        };
        Ok(Self {
            socket: socket.map(Arc::new),
            address,
            key: OnceLock::new(),
            got: Mutex::new(HashMap::new()),
            got_tx: watch::Sender::new(0),
            writers: Mutex::new(HashMap::new()),
            uncovered: AtomicI64::new(0),
            published: AtomicI64::new(0),
            stats: AckStats::default(),
        })
    }

    /// What this edge's write transactions put in its `data-write` key: where to ack, once
    /// acks can be checked (the key is read), else None.
    pub(super) fn address(&self) -> Option<String> {
        self.key.get()?;
        self.address.map(|a| a.to_string())
    }

    /// The newest revision `id` has acked under `lease`.
    pub(super) fn acked(&self, id: &str, lease: i64) -> Option<i64> {
        let got = self.got.lock().unwrap_or_else(|p| p.into_inner());
        got.get(id)?
            .iter()
            .find(|(l, _)| *l == lease)
            .map(|(_, r)| *r)
    }

    pub(super) fn subscribe(&self) -> watch::Receiver<u64> {
        self.got_tx.subscribe()
    }

    /// This edge has applied `revision` (its maps answer it), written by `writers` (each an id
    /// and where it takes acks; none known for a revision read whole): tells each of the
    /// others. Called before the revision is announced as applied, so that the publisher knows
    /// what was sent for it.
    pub(super) fn applied(&self, fleet: &Fleet, revision: i64, writers: &[(String, String)]) {
        if writers.is_empty() {
            self.uncovered.fetch_max(revision, Ordering::Relaxed);
        }
        for (writer, address) in writers {
            // This edge's own write: only this edge waits for it, and it knows.
            if *writer == fleet.edge_id {
                continue;
            }
            if self.send_ack(fleet, revision, writer, address) {
                self.stats.sent.fetch_add(1, Ordering::Relaxed);
                let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
                let now = Instant::now();
                let w = writers.entry(writer.clone()).or_insert(Writer {
                    sent: 0,
                    receipted: 0,
                    waiting_since: now,
                    path_ok: true,
                    round_trip: None,
                });
                if w.sent <= w.receipted {
                    w.waiting_since = now;
                }
                w.sent = w.sent.max(revision);
            } else {
                self.uncovered.fetch_max(revision, Ordering::Relaxed);
            }
        }
    }

    fn send_ack(&self, fleet: &Fleet, revision: i64, writer: &str, address: &str) -> bool {
        let (Some(socket), Some(key)) = (&self.socket, self.key.get()) else {
            return false;
        };
        // Not registered: nobody waits for this edge, and its registration holds what it has
        // applied when it is made.
        let lease = fleet.lease.load(Ordering::Relaxed);
        let Ok(to) = address.parse::<SocketAddr>() else {
            return false;
        };
        let message = Message {
            kind: KIND_ACK,
            lease,
            revision,
            from: fleet.edge_id.clone(),
            to: writer.to_owned(),
        };
        lease != 0
            && encode(key, &message)
                .is_some_and(|bytes| socket.try_send_to(&bytes, for_socket(socket, to)).is_ok())
    }

    /// What the registration's publisher should do about the revisions applied since it last
    /// published. A writer whose receipt is late is marked so, and isn't waited for again
    /// until one of its receipts comes.
    pub(super) fn publish_when(&self) -> Publish {
        let published = self.published.load(Ordering::Relaxed);
        if self.uncovered.load(Ordering::Relaxed) > published {
            return Publish::Now;
        }
        let now = Instant::now();
        let mut due = None;
        let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
        for w in writers.values_mut() {
            if w.sent <= published || w.sent <= w.receipted {
                continue;
            }
            let at = w.waiting_since + w.receipt_wait();
            if !w.path_ok || at <= now {
                w.path_ok = false;
                return Publish::Now;
            }
            due = Some(due.map_or(at, |d: Instant| d.min(at)));
        }
        match due {
            Some(at) => Publish::AfterReceipt(at),
            None => Publish::Later,
        }
    }

    /// Whether the registration holds less than `applied`.
    pub(super) fn unpublished(&self, applied: i64) -> bool {
        self.published.load(Ordering::Relaxed) < applied
    }

    /// The registration now holds applied revision `revision`.
    pub(super) fn published(&self, revision: i64) {
        self.published.fetch_max(revision, Ordering::Relaxed);
        self.stats.published.fetch_add(1, Ordering::Relaxed);
    }

    /// One datagram from `peer`.
    fn take(&self, fleet: &Fleet, key: &[u8], bytes: &[u8], peer: SocketAddr) {
        let Some(m) = decode(key, bytes).filter(|m| m.to == fleet.edge_id) else {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        };
        match m.kind {
            KIND_ACK => {
                self.stats.received.fetch_add(1, Ordering::Relaxed);
                {
                    let mut got = self.got.lock().unwrap_or_else(|p| p.into_inner());
                    let leases = got.entry(m.from.clone()).or_default();
                    match leases.iter_mut().find(|(l, _)| *l == m.lease) {
                        Some((_, r)) => *r = (*r).max(m.revision),
                        None => {
                            leases.push((m.lease, m.revision));
                            if leases.len() > LEASES_KEPT {
                                leases.remove(0);
                            }
                        }
                    }
                }
                self.got_tx.send_modify(|n| *n = n.wrapping_add(1));
                let receipt = Message {
                    kind: KIND_RECEIPT,
                    from: m.to,
                    to: m.from,
                    ..m
                };
                if let (Some(socket), Some(bytes)) = (&self.socket, encode(key, &receipt)) {
                    let _ = socket.try_send_to(&bytes, peer);
                }
            }
            _ => {
                if m.lease != fleet.lease.load(Ordering::Relaxed) {
                    return;
                }
                let mut writers = self.writers.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(w) = writers.get_mut(&m.from) {
                    let now = Instant::now();
                    // The oldest ack waiting was sent at `waiting_since`: at least one round
                    // trip ago, if this receipt is for it.
                    if m.revision >= w.sent && w.sent > w.receipted {
                        let sample = now - w.waiting_since;
                        w.round_trip = Some(w.round_trip.map_or(sample, |r| (7 * r + sample) / 8));
                    }
                    w.receipted = w.receipted.max(m.revision);
                    w.path_ok = true;
                    // Acks sent after the one receipted wait from now on.
                    w.waiting_since = now;
                }
            }
        }
    }
}

/// When the registration should publish what this edge has applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Publish {
    /// A writer may be waiting for it and has no ack, or its receipt is late.
    Now,
    /// At this time, unless the receipts awaited have come by then.
    AfterReceipt(Instant),
    /// Writers have what they wait for: only `GET /v1/edges` shows it.
    Later,
}

/// `to` as `socket` can send to it: an IPv4 address as IPv4-mapped on an IPv6 socket (the
/// default socket takes both families).
fn for_socket(socket: &UdpSocket, to: SocketAddr) -> SocketAddr {
    match (socket.local_addr(), to) {
        (Ok(SocketAddr::V6(_)), SocketAddr::V4(v4)) => {
            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        _ => to,
    }
}

/// The local address this host reaches the first etcd endpoint from.
async fn towards(etcd: &[String]) -> Option<std::net::IpAddr> {
    let url = etcd.first()?;
    let host_port = url.split("://").last()?.split('/').next()?;
    let target = tokio::net::lookup_host(host_port).await.ok()?.next()?;
    let any: SocketAddr = if target.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    // Connecting a UDP socket sends nothing; it only picks the route and the source address.
    let probe = std::net::UdpSocket::bind(any).ok()?;
    probe.connect(target).ok()?;
    Some(probe.local_addr().ok()?.ip())
}

/// Reads the fleet's ack key, making it if there is none yet (the first edge to get here wins;
/// the others read its key).
async fn load_key(fleet: &Fleet) -> Result<Vec<u8>, String> {
    let mut fresh = vec![0; KEY_LEN];
    crate::random_bytes(&mut fresh).map_err(|e| format!("drawing a random key: {e}"))?;
    let key = fleet.keys.ack_key();
    let txn = Txn::new()
        .when([Compare::version(key.as_str(), CompareOp::Equal, 0)])
        .and_then([TxnOp::put(key.as_str(), fresh.clone(), None)])
        .or_else([TxnOp::get(key.as_str(), None)]);
    let mut kv = fleet.client.kv_client();
    let resp = request(kv.txn(txn))
        .await
        .map_err(|e| crate::error_chain(&e))?;
    if resp.succeeded() {
        return Ok(fresh);
    }
    let held = resp.op_responses().into_iter().find_map(|op| match op {
        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
        _ => None,
    });
    match held {
        Some(k) if k.len() == KEY_LEN => Ok(k),
        Some(k) => Err(format!("{key} holds {} bytes, not {KEY_LEN}", k.len())),
        None => Err(format!("{key} was deleted while it was read")),
    }
}

/// Reads the key, then takes acks and receipts until `shutdown`.
pub(super) async fn run(fleet: Arc<Fleet>, shutdown: CancellationToken) {
    let Some(socket) = fleet.acks.socket.clone() else {
        return;
    };
    let mut backoff = super::BACKOFF_MIN;
    let key = loop {
        let loaded = tokio::select! {
            _ = shutdown.cancelled() => return,
            k = load_key(&fleet) => k,
        };
        match loaded {
            Ok(k) => break fleet.acks.key.get_or_init(|| k).clone(),
            Err(why) => {
                warn!(edge = %fleet.edge_id, "fleet: reading the ack key: {why}; trying again in {backoff:?}");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = super::next_backoff(backoff, Duration::ZERO);
            }
        }
    };
    info!(edge = %fleet.edge_id, address = ?fleet.acks.address, "fleet: taking acks from other edges");
    let mut buf = vec![0; MAX_DATAGRAM];
    loop {
        let received = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        match received {
            Ok((n, peer)) => fleet.acks.take(&fleet, &key, &buf[..n], peer),
            Err(e) => {
                // ICMP errors from an earlier send show here on some systems: not fatal.
                warn!(edge = %fleet.edge_id, "fleet: ack socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            kind: KIND_ACK,
            lease: 0x1234_5678_9abc,
            revision: 42,
            from: "edge-1".into(),
            to: "edge-0".into(),
        }
    }

    #[test]
    fn a_message_reads_back_under_its_key_only() {
        let key = [7u8; KEY_LEN];
        let bytes = encode(&key, &message()).expect("encodes");
        assert_eq!(decode(&key, &bytes), Some(message()));
        assert_eq!(decode(&[8u8; KEY_LEN], &bytes), None);
    }

    #[test]
    fn any_changed_byte_or_length_is_refused() {
        let key = [7u8; KEY_LEN];
        let bytes = encode(&key, &message()).expect("encodes");
        for i in 0..bytes.len() {
            for bit in [0x01, 0x80] {
                let mut b = bytes.clone();
                b[i] ^= bit;
                assert_eq!(decode(&key, &b), None, "byte {i} bit {bit:#x}");
            }
        }
        for n in 0..bytes.len() {
            assert_eq!(decode(&key, &bytes[..n]), None, "cut to {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(decode(&key, &longer), None);
    }

    #[test]
    fn an_id_too_long_for_its_length_byte_is_not_sent() {
        let m = Message {
            from: "x".repeat(256),
            ..message()
        };
        assert_eq!(encode(&[7u8; KEY_LEN], &m), None);
        let m = Message {
            from: "x".repeat(255),
            to: "y".repeat(255),
            ..message()
        };
        let bytes = encode(&[7u8; KEY_LEN], &m).expect("encodes");
        assert!(bytes.len() <= MAX_DATAGRAM);
        assert_eq!(decode(&[7u8; KEY_LEN], &bytes), Some(m));
    }

    #[test]
    fn a_receipt_is_awaited_three_round_trips_within_bounds() {
        let writer = |round_trip| Writer {
            sent: 0,
            receipted: 0,
            waiting_since: Instant::now(),
            path_ok: true,
            round_trip,
        };
        let ms = Duration::from_millis;
        assert_eq!(writer(None).receipt_wait(), RECEIPT_WAIT);
        assert_eq!(writer(Some(ms(2))).receipt_wait(), RECEIPT_WAIT);
        assert_eq!(writer(Some(ms(100))).receipt_wait(), ms(300));
        assert_eq!(writer(Some(ms(900))).receipt_wait(), RECEIPT_WAIT_MAX);
    }

    #[test]
    fn ack_listen_takes_an_address_or_off() {
        assert_eq!("off".parse::<AckListen>(), Ok(AckListen(None)));
        assert_eq!(
            "127.0.0.1:9".parse::<AckListen>(),
            Ok(AckListen(Some(SocketAddr::from(([127, 0, 0, 1], 9)))))
        );
        assert!("8054".parse::<AckListen>().is_err());
    }
}
