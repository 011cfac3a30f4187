//! The fallback's counters, shared by its tasks and read by `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

use hickory_proto::op::ResponseCode;

use super::{response::Reply, Transport};

/// The RCODEs `handle` produces, by the name `/metrics` and `/v1/stats` give them, in the order
/// they are reported.
const RCODES: [(&str, ResponseCode); 7] = [
    ("NOERROR", ResponseCode::NoError),
    ("NXDOMAIN", ResponseCode::NXDomain),
    ("REFUSED", ResponseCode::Refused),
    ("FORMERR", ResponseCode::FormErr),
    ("NOTIMP", ResponseCode::NotImp),
    ("SERVFAIL", ResponseCode::ServFail),
    ("BADVERS", ResponseCode::BADVERS),
];

/// The transports, by the name `/metrics` gives them, in [`FallbackStats`]' order.
pub const TRANSPORTS: [(&str, Transport); 2] = [("udp", Transport::Udp), ("tcp", Transport::Tcp)];

/// Counters of the fallback server, shared by its tasks and read by `/metrics`.
#[derive(Debug, Default)]
pub struct FallbackStats {
    /// Responses sent, by transport ([`TRANSPORTS`]' order) and RCODE ([`RCODES`]' order).
    responses: [[AtomicU64; RCODES.len()]; TRANSPORTS.len()],
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

impl FallbackStats {
    pub fn new() -> Self {
        Self::default()
    }

    fn counter(&self, transport: Transport, rcode: ResponseCode) -> Option<&AtomicU64> {
        let t = TRANSPORTS.iter().position(|(_, t)| *t == transport)?;
        // `handle` produces no other RCODE.
        let r = RCODES.iter().position(|(_, r)| *r == rcode)?;
        Some(&self.responses[t][r])
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
                if let Some(c) = self.counter(transport, reply.rcode) {
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
                    .map(|t| t[i].load(Ordering::Relaxed))
                    .sum();
                (name.to_string(), n)
            })
            .collect()
    }

    /// Responses sent, as `(transport, RCODE name, count)`, in a fixed order.
    pub fn by_transport(&self) -> Vec<(&'static str, &'static str, u64)> {
        TRANSPORTS
            .iter()
            .zip(&self.responses)
            .flat_map(|((t, _), counts)| {
                RCODES
                    .iter()
                    .zip(counts)
                    .map(move |((r, _), c)| (*t, *r, c.load(Ordering::Relaxed)))
            })
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
        assert_eq!(snap.len(), 7);
        assert_eq!(stats.dropped(), 1);
        assert_eq!(stats.truncated(), 1);
        let by = stats.by_transport();
        assert_eq!(by.len(), 14);
        assert!(by.contains(&("udp", "NOERROR", 2)), "{by:?}");
        assert!(by.contains(&("tcp", "NOERROR", 0)), "{by:?}");
    }
}
