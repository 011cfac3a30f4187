//! A packet cache for the UDP workers: the answer to a query, kept by the query's bytes.
//!
//! Two queries whose bytes are the same but for the ID get the same answer but for the ID, as
//! long as the zones, the settings and the stale-misses switch are the ones the answer was made
//! with, and nothing in the query makes its answer depend on the time or the client: no TSIG (the
//! signature covers the time), no COOKIE option (the server cookie carries the time and hashes
//! the client's address), and only QUERY (an UPDATE changes the zones). So a repeated query skips
//! the parse, the lookup and the encoding: the answer's bytes are copied and the ID put in, as
//! PowerDNS's packet cache does. The rate limiter and the counters still see every answer.
//!
//! Each UDP thread has its own cache (no lock, no shared cache line); a new version of the zones
//! or settings empties it, and so does reaching its size (`--packet-cache-bytes`: a flood of
//! distinct names can't grow it, it starts over).

use std::{
    collections::HashMap,
    sync::{Arc, Weak},
};

use hickory_proto::{op::ResponseCode, rr::RecordType};

use super::{request::Request, response::Reply, FallbackConfig, HEADER_LEN};
use crate::zone::ZoneSet;

/// Queries longer than this aren't kept (a plain query with EDNS is well under it).
const MAX_QUERY: usize = 300;

/// One kept answer.
struct Kept {
    /// The answer's bytes; its ID is replaced on use.
    msg: Box<[u8]>,
    rcode: ResponseCode,
    truncated: bool,
}

/// One UDP worker's packet cache.
pub(super) struct PacketCache {
    /// By the query's bytes after its ID.
    answers: HashMap<Box<[u8]>, Kept>,
    /// Bytes of the keys and answers kept.
    bytes: usize,
    /// Most bytes (keys and answers) it holds before it starts over: the settings'
    /// `packet_cache_bytes`, taken when they change.
    max_bytes: usize,
    /// What the kept answers were made with: the zones and settings (by address: a new version
    /// is a new allocation, and a `Weak` keeps the address from being reused while it is held,
    /// without keeping an old version's data alive in an idle worker) and the stale-misses
    /// switch.
    zones: Weak<ZoneSet>,
    config: Weak<FallbackConfig>,
    stale: bool,
}

impl Default for PacketCache {
    fn default() -> Self {
        Self {
            answers: HashMap::new(),
            bytes: 0,
            max_bytes: 0,
            zones: Weak::new(),
            config: Weak::new(),
            stale: false,
        }
    }
}

impl PacketCache {
    /// Empties the cache unless its answers were made from `zones` and `config` as they are now.
    pub fn check(&mut self, zones: &Arc<ZoneSet>, config: &Arc<FallbackConfig>) {
        let stale = config.stale_misses.is_set();
        let same = std::ptr::eq(self.zones.as_ptr(), Arc::as_ptr(zones))
            && std::ptr::eq(self.config.as_ptr(), Arc::as_ptr(config))
            && self.stale == stale;
        if !same {
            self.clear();
            self.zones = Arc::downgrade(zones);
            self.config = Arc::downgrade(config);
            self.stale = stale;
            self.max_bytes = config.packet_cache_bytes;
        }
    }

    /// Whether it keeps anything at all (`--packet-cache-bytes` above 0), as of the last
    /// [`PacketCache::check`].
    pub fn enabled(&self) -> bool {
        self.max_bytes > 0
    }

    /// Whether the stale-misses switch is still as [`PacketCache::check`] found it: an answer
    /// made while it flipped must not be kept under the old setting.
    pub fn same_switch(&self, config: &FallbackConfig) -> bool {
        config.stale_misses.is_set() == self.stale
    }

    fn clear(&mut self) {
        self.answers.clear();
        self.bytes = 0;
    }

    /// The kept answer to `query`, with its ID.
    pub fn get(&self, query: &[u8]) -> Option<Reply> {
        let key = query.get(2..).filter(|_| query.len() >= HEADER_LEN)?;
        let kept = self.answers.get(key)?;
        let mut msg = kept.msg.to_vec();
        msg[..2].copy_from_slice(&query[..2]);
        Some(Reply {
            messages: vec![msg],
            rcode: kept.rcode,
            truncated: kept.truncated,
            proved: false,
        })
    }

    /// Keeps `reply` as the answer to `query` (parsed as `req`) if nothing in the query makes
    /// its answer depend on more than its bytes, the zones and the settings.
    pub fn insert(&mut self, query: &[u8], req: &Request, reply: &Reply) {
        if !keepable(query, req) || reply.proved {
            return;
        }
        let [msg] = reply.messages.as_slice() else {
            return;
        };
        if msg.len() < HEADER_LEN {
            return;
        }
        let size = query.len() - 2 + msg.len();
        if size > self.max_bytes {
            return;
        }
        if self.bytes + size > self.max_bytes {
            self.clear();
        }
        let old = self.answers.insert(
            query[2..].into(),
            Kept {
                msg: msg.as_slice().into(),
                rcode: reply.rcode,
                truncated: reply.truncated,
            },
        );
        self.bytes += size;
        if let Some(old) = old {
            self.bytes -= query.len() - 2 + old.msg.len();
        }
    }
}

/// A query whose answer depends only on its bytes (but the ID), the zones and the settings.
/// Not a transfer: whether IXFR over UDP gets the SOA or REFUSED depends on the client's
/// address (`--transfer-allow`), which the key doesn't hold.
fn keepable(query: &[u8], req: &Request) -> bool {
    query.len() >= HEADER_LEN
        && query.len() <= MAX_QUERY
        && req.malformed.is_none()
        && req.opcode == 0
        && req.tsig.is_none()
        && req.edns.is_none_or(|e| e.cookie.is_none())
        && req
            .question
            .as_ref()
            .is_some_and(|q| !matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR))
}

#[cfg(test)]
mod tests {
    use super::{
        super::{handle, request::parse, testutil::*, Transport},
        *,
    };

    fn reply_to(zones: &ZoneSet, q: &[u8]) -> Reply {
        let msg = handle(zones, q, Transport::Udp, &FallbackConfig::default()).expect("answer");
        Reply {
            rcode: ResponseCode::NoError,
            truncated: false,
            proved: false,
            messages: vec![msg],
        }
    }

    #[test]
    fn a_repeat_gets_the_same_answer_with_its_own_id() {
        let zs = Arc::new(zones());
        let cfg = Arc::new(FallbackConfig::default());
        let mut cache = PacketCache::default();
        cache.check(&zs, &cfg);
        let q = bytes(&query("www.example.com.", RecordType::A));
        assert!(cache.get(&q).is_none());
        let reply = reply_to(&zs, &q);
        cache.insert(&q, &parse(&q), &reply);

        let mut again = q.clone();
        again[..2].copy_from_slice(&[0xab, 0xcd]);
        let got = cache.get(&again).expect("kept");
        let fresh = handle(&zs, &again, Transport::Udp, &FallbackConfig::default()).expect("ok");
        assert_eq!(got.messages, [fresh]);
        // Another name, or the same name in another case, is another query.
        let other = bytes(&query("WWW.example.com.", RecordType::A));
        assert!(cache.get(&other).is_none());
    }

    #[test]
    fn new_zones_or_settings_empty_it() {
        let zs = Arc::new(zones());
        let cfg = Arc::new(FallbackConfig::default());
        let mut cache = PacketCache::default();
        cache.check(&zs, &cfg);
        let q = bytes(&query("www.example.com.", RecordType::A));
        cache.insert(&q, &parse(&q), &reply_to(&zs, &q));
        cache.check(&zs, &cfg);
        assert!(cache.get(&q).is_some(), "the same versions keep it");

        let zs = Arc::new(zones());
        cache.check(&zs, &cfg);
        assert!(cache.get(&q).is_none(), "new zones");
        cache.insert(&q, &parse(&q), &reply_to(&zs, &q));
        let cfg = Arc::new(FallbackConfig::default());
        cache.check(&zs, &cfg);
        assert!(cache.get(&q).is_none(), "new settings");
        cache.insert(&q, &parse(&q), &reply_to(&zs, &q));
        cfg.stale_misses.set(true);
        cache.check(&zs, &cfg);
        assert!(cache.get(&q).is_none(), "the stale-misses switch flipped");
    }

    #[test]
    fn cookies_and_signatures_are_not_kept() {
        let zs = Arc::new(zones());
        let cfg = Arc::new(FallbackConfig::default());
        let mut cache = PacketCache::default();
        cache.check(&zs, &cfg);
        let mut q = bytes(&with_edns(
            query("www.example.com.", RecordType::A),
            1232,
            false,
            0,
        ));
        let plain = q.clone();
        // A COOKIE option (code 10, a client cookie of 8 bytes) appended to the OPT record:
        // its RDLENGTH, the last two bytes before the (empty) options, grows by 12.
        let n = q.len();
        let rdlen = u16::from_be_bytes([q[n - 2], q[n - 1]]) + 12;
        q[n - 2..].copy_from_slice(&rdlen.to_be_bytes());
        q.extend_from_slice(&[0, 10, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8]);
        let req = parse(&q);
        assert!(
            req.edns.and_then(|e| e.cookie).is_some(),
            "the cookie parsed"
        );
        cache.insert(&q, &req, &reply_to(&zs, &plain));
        assert!(cache.get(&q).is_none());
        cache.insert(&plain, &parse(&plain), &reply_to(&zs, &plain));
        assert!(cache.get(&plain).is_some());
    }

    #[test]
    fn transfers_are_not_kept() {
        // Over UDP, IXFR gets the SOA or REFUSED by the client's address: a kept answer
        // would hand one client's outcome to another.
        let zs = Arc::new(zones());
        let cfg = Arc::new(FallbackConfig::default());
        let mut cache = PacketCache::default();
        cache.check(&zs, &cfg);
        for rtype in [RecordType::IXFR, RecordType::AXFR] {
            let q = bytes(&query("example.com.", rtype));
            cache.insert(&q, &parse(&q), &reply_to(&zs, &q));
            assert!(cache.get(&q).is_none(), "{rtype} kept");
        }
    }

    #[test]
    fn a_size_of_zero_keeps_nothing() {
        let zs = Arc::new(zones());
        let cfg = Arc::new(FallbackConfig {
            packet_cache_bytes: 0,
            ..FallbackConfig::default()
        });
        let mut cache = PacketCache::default();
        cache.check(&zs, &cfg);
        let q = bytes(&query("www.example.com.", RecordType::A));
        cache.insert(&q, &parse(&q), &reply_to(&zs, &q));
        assert!(cache.get(&q).is_none());
        assert_eq!(cache.bytes, 0);
    }

    #[test]
    fn it_starts_over_when_full() {
        let zs = Arc::new(zones());
        let cfg = Arc::new(FallbackConfig::default());
        let mut cache = PacketCache::default();
        cache.check(&zs, &cfg);
        let q = bytes(&query("www.example.com.", RecordType::A));
        let reply = reply_to(&zs, &q);
        let per = q.len() - 2 + reply.messages[0].len();
        cache.max_bytes = 5 * per;
        // 32 distinct queries: the case of "www" and the RD and CD bits.
        let mut kept = 0;
        for i in 0..32usize {
            let mut qi = q.clone();
            qi[2] = (i & 1) as u8;
            qi[3] = if i & 2 != 0 { 0x10 } else { 0 };
            for bit in 0..3 {
                if i >> (bit + 2) & 1 == 1 {
                    qi[HEADER_LEN + 1 + bit] = b'W';
                }
            }
            cache.insert(&qi, &parse(&qi), &reply);
            assert!(cache.bytes <= cache.max_bytes);
            assert!(cache.get(&qi).is_some(), "the last one is kept");
            kept = kept.max(cache.answers.len());
        }
        assert_eq!(kept, 5);
        // The same query again doesn't count twice.
        let before = cache.bytes;
        let last = cache
            .answers
            .keys()
            .next()
            .map(|k| [&[0u8, 0][..], k].concat());
        let last = last.expect("one kept");
        cache.insert(&last, &parse(&last), &reply);
        assert_eq!(cache.bytes, before);
    }
}
