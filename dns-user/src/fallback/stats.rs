//! The fallback's counters, shared by its tasks and read by `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::op::ResponseCode;

use super::{response::Reply, Transport, HEADER_LEN};

/// The RCODEs the fallback produces, by the name `/metrics` and `/v1/stats` give them, in the
/// order they are reported: queries' and, for dynamic updates and TSIG, updates' (RFC 2136,
/// RFC 8945: a TSIG failure is NOTAUTH in the header).
const RCODES: [(&str, ResponseCode); 12] = [
    ("NOERROR", ResponseCode::NoError),
    ("NXDOMAIN", ResponseCode::NXDomain),
    ("REFUSED", ResponseCode::Refused),
    ("FORMERR", ResponseCode::FormErr),
    ("NOTIMP", ResponseCode::NotImp),
    ("SERVFAIL", ResponseCode::ServFail),
    ("BADVERS", ResponseCode::BADVERS),
    ("NOTAUTH", ResponseCode::NotAuth),
    ("NOTZONE", ResponseCode::NotZone),
    ("YXDOMAIN", ResponseCode::YXDomain),
    ("YXRRSET", ResponseCode::YXRRSet),
    ("NXRRSET", ResponseCode::NXRRSet),
];

/// The transports, by the name `/metrics` gives them, in [`FallbackStats`]' order.
pub const TRANSPORTS: [(&str, Transport); 2] = [("udp", Transport::Udp), ("tcp", Transport::Tcp)];

/// The query types counted by name, in the order they are reported; any other type (and a
/// response without a question) counts as [`OTHER_QTYPE`]. A fixed list, so that queries for
/// random types can't make the number of series grow.
pub const QTYPES: [(&str, u16); 15] = [
    ("A", 1),
    ("AAAA", 28),
    ("CNAME", 5),
    ("MX", 15),
    ("TXT", 16),
    ("NS", 2),
    ("SOA", 6),
    ("SRV", 33),
    ("CAA", 257),
    ("PTR", 12),
    ("HTTPS", 65),
    ("SVCB", 64),
    ("ANY", 255),
    ("AXFR", 252),
    ("IXFR", 251),
];

/// The label of every query type not in [`QTYPES`].
pub const OTHER_QTYPE: &str = "other";

const QTYPE_LABELS: usize = QTYPES.len() + 1;

/// Counters of the fallback server, shared by its tasks and read by `/metrics`.
#[derive(Debug, Default)]
pub struct FallbackStats {
    /// Responses sent, by transport ([`TRANSPORTS`]' order), RCODE ([`RCODES`]' order) and query
    /// type ([`QTYPES`]' order, then [`OTHER_QTYPE`]).
    responses: [[[AtomicU64; QTYPE_LABELS]; RCODES.len()]; TRANSPORTS.len()],
    /// Messages not answered: shorter than a header, or responses (QR=1).
    dropped: AtomicU64,
    /// Responses sent truncated (TC=1).
    truncated: AtomicU64,
    /// TCP connections closed on accept because all slots were taken by connections in the
    /// middle of a message.
    pub(super) tcp_rejected: AtomicU64,
    /// Idle TCP connections closed to make room for a new one.
    pub(super) tcp_evicted: AtomicU64,
    /// UDP responses not sent: over their source's rate.
    rate_limited: AtomicU64,
    /// UDP responses over their source's rate sent truncated (the slip).
    slipped: AtomicU64,
}

/// The index in [`QTYPES`] (or of [`OTHER_QTYPE`]) of the question's type in `msg`, a message
/// we encoded: the response repeats the query's question, when it has one.
fn qtype_index(msg: &[u8]) -> usize {
    let other = QTYPES.len();
    let qdcount = msg
        .get(4..6)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    if qdcount == 0 {
        return other;
    }
    // The question's name: labels up to the root, or up to a compression pointer.
    let mut pos = HEADER_LEN;
    loop {
        match msg.get(pos) {
            Some(0) => {
                pos += 1;
                break;
            }
            Some(l) if l & 0xc0 == 0xc0 => {
                pos += 2;
                break;
            }
            Some(l) if l & 0xc0 == 0 => pos += 1 + usize::from(*l),
            _ => return other,
        }
    }
    let Some(t) = msg.get(pos..pos + 2) else {
        return other;
    };
    let qtype = u16::from_be_bytes([t[0], t[1]]);
    QTYPES
        .iter()
        .position(|(_, t)| *t == qtype)
        .unwrap_or(other)
}

fn qtype_label(i: usize) -> &'static str {
    QTYPES.get(i).map_or(OTHER_QTYPE, |(name, _)| name)
}

impl FallbackStats {
    pub fn new() -> Self {
        Self::default()
    }

    fn counter(
        &self,
        transport: Transport,
        rcode: ResponseCode,
        qtype: usize,
    ) -> Option<&AtomicU64> {
        let t = TRANSPORTS.iter().position(|(_, t)| *t == transport)?;
        // The fallback produces no other RCODE (a test holds it to that).
        let r = RCODES.iter().position(|(_, r)| *r == rcode)?;
        self.responses[t][r].get(qtype)
    }

    pub(super) fn count_rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn count_slipped(&self) {
        self.slipped.fetch_add(1, Ordering::Relaxed);
    }

    /// UDP responses the rate limiter dropped.
    pub fn rate_limited(&self) -> u64 {
        self.rate_limited.load(Ordering::Relaxed)
    }

    /// UDP responses the rate limiter sent truncated.
    pub fn slipped(&self) -> u64 {
        self.slipped.load(Ordering::Relaxed)
    }

    pub(super) fn record(&self, reply: &Option<Reply>, transport: Transport) {
        match reply {
            None => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
            Some(reply) => {
                let qtype = reply
                    .messages
                    .first()
                    .map_or(QTYPES.len(), |m| qtype_index(m));
                if let Some(c) = self.counter(transport, reply.rcode, qtype) {
                    c.fetch_add(1, Ordering::Relaxed);
                }
                if reply.truncated {
                    self.truncated.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Responses sent, by RCODE name, over both transports, in a fixed order.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        RCODES
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let n = self
                    .responses
                    .iter()
                    .flat_map(|t| &t[i])
                    .map(|c| c.load(Ordering::Relaxed))
                    .sum();
                (name.to_string(), n)
            })
            .collect()
    }

    /// Responses sent, as `(transport, RCODE name, count)`, over all query types, in a fixed
    /// order.
    pub fn by_transport(&self) -> Vec<(&'static str, &'static str, u64)> {
        TRANSPORTS
            .iter()
            .zip(&self.responses)
            .flat_map(|((t, _), counts)| {
                RCODES.iter().zip(counts).map(move |((r, _), c)| {
                    (*t, *r, c.iter().map(|c| c.load(Ordering::Relaxed)).sum())
                })
            })
            .collect()
    }

    /// Responses sent, as `(transport, RCODE name, qtype label, count)`, in a fixed order.
    pub fn by_qtype(&self) -> Vec<(&'static str, &'static str, &'static str, u64)> {
        let mut out = Vec::with_capacity(TRANSPORTS.len() * RCODES.len() * QTYPE_LABELS);
        for ((t, _), counts) in TRANSPORTS.iter().zip(&self.responses) {
            for ((r, _), by_type) in RCODES.iter().zip(counts) {
                for (i, c) in by_type.iter().enumerate() {
                    out.push((*t, *r, qtype_label(i), c.load(Ordering::Relaxed)));
                }
            }
        }
        out
    }

    /// Messages not answered (too short, or QR=1).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Responses sent with TC=1.
    pub fn truncated(&self) -> u64 {
        self.truncated.load(Ordering::Relaxed)
    }

    /// TCP connections refused because `tcp_max_connections` were open and none was idle.
    pub fn tcp_rejected(&self) -> u64 {
        self.tcp_rejected.load(Ordering::Relaxed)
    }

    /// Idle TCP connections closed to make room for new ones (the client's own at its
    /// `tcp_max_per_source`, the heaviest client's when all slots were taken).
    pub fn tcp_evicted(&self) -> u64 {
        self.tcp_evicted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::RecordType;

    use super::{
        super::{policy::respond, testutil::*, FallbackConfig, Transport},
        *,
    };

    /// Every RCODE the answering code names is one the counters have a place for: a response
    /// with any other would be counted nowhere.
    #[test]
    fn every_rcode_the_fallback_sends_is_counted() {
        let sources = [
            include_str!("mod.rs"),
            include_str!("policy.rs"),
            include_str!("response.rs"),
            include_str!("update.rs"),
            include_str!("xfr.rs"),
            include_str!("../zone/resolve.rs"),
        ];
        for src in sources {
            for (at, _) in src.match_indices("ResponseCode::") {
                let name: String = src[at + 14..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                if name == "from" || name == "Unknown" {
                    continue;
                }
                assert!(
                    RCODES.iter().any(|(_, r)| format!("{r:?}") == name),
                    "ResponseCode::{name} is sent but not counted"
                );
            }
        }
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
            stats.record(
                &respond(&zs, &q, Transport::Udp, &cfg, &Default::default()),
                Transport::Udp,
            );
        }
        let snap = stats.snapshot();
        let get = |k: &str| snap.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
        assert_eq!(get("NOERROR"), Some(2));
        assert_eq!(get("NXDOMAIN"), Some(1));
        assert_eq!(get("BADVERS"), Some(0));
        assert_eq!(snap.len(), RCODES.len());
        assert_eq!(stats.dropped(), 1);
        assert_eq!(stats.truncated(), 1);
        let by = stats.by_transport();
        assert_eq!(by.len(), 2 * RCODES.len());
        assert!(by.contains(&("udp", "NOERROR", 2)), "{by:?}");
        assert!(by.contains(&("tcp", "NOERROR", 0)), "{by:?}");
        let by = stats.by_qtype();
        assert_eq!(by.len(), 2 * RCODES.len() * 16);
        assert!(by.contains(&("udp", "NOERROR", "A", 1)), "{by:?}");
        assert!(by.contains(&("udp", "NOERROR", "AAAA", 1)), "{by:?}");
        assert!(by.contains(&("udp", "NXDOMAIN", "A", 1)), "{by:?}");
        assert_eq!(by.iter().map(|c| c.3).sum::<u64>(), 3);
    }

    /// Every type outside the fixed list, and a response without a question, counts as
    /// "other": a flood of random types adds no series.
    #[test]
    fn qtypes_are_a_fixed_set() {
        let stats = FallbackStats::new();
        let zs = zones();
        let cfg = FallbackConfig::default();
        let mut sent = 0;
        for t in [1u16, 16, 16, 65, 252, 999, 4242, 65280] {
            let q = bytes(&query("www.example.com.", RecordType::from(t)));
            stats.record(
                &respond(&zs, &q, Transport::Tcp, &cfg, &Default::default()),
                Transport::Tcp,
            );
            sent += 1;
        }
        // A header alone (QDCOUNT 0): FORMERR, with no question to take a type from.
        let mut empty = bytes(&query("www.example.com.", RecordType::A));
        empty.truncate(HEADER_LEN);
        empty[4..6].copy_from_slice(&[0, 0]);
        stats.record(
            &respond(&zs, &empty, Transport::Tcp, &cfg, &Default::default()),
            Transport::Tcp,
        );
        sent += 1;
        let by = stats.by_qtype();
        let n = |qtype: &str| -> u64 {
            by.iter()
                .filter(|(t, _, q, _)| *t == "tcp" && *q == qtype)
                .map(|c| c.3)
                .sum()
        };
        assert_eq!(n("A"), 1);
        assert_eq!(n("TXT"), 2);
        assert_eq!(n("HTTPS"), 1);
        assert_eq!(n("AXFR"), 1);
        assert_eq!(n("other"), 4, "{by:?}");
        assert_eq!(by.iter().map(|c| c.3).sum::<u64>(), sent);
        let labels: std::collections::BTreeSet<&str> = by.iter().map(|c| c.2).collect();
        assert_eq!(labels.len(), QTYPES.len() + 1);
    }
}
