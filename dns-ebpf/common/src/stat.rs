//! The XDP program's counters: one list gives the enum (the index into [`crate::map::STATS`]),
//! the count, and the metric and label each is reported under.

/// The metric of counters for queries the program answered, by kind of answer.
pub const ANSWERED: &str = "answered";
/// The metric of counters for queries passed up to the fallback, by reason.
pub const PASSED: &str = "passed";
/// The metric of counters for frames the program dropped, by reason: it does so only when a frame
/// was already partly rewritten and can be neither sent nor passed up.
pub const DROPPED: &str = "dropped";
/// The metric of response-rate limiting's counters: responses limited (dropped), slipped (sent
/// truncated, so a real resolver retries over TCP), and sent because the source is exempt or
/// proved its address with a server cookie.
pub const RRL: &str = "rrl";
/// Every metric, in the order they are reported.
pub const METRICS: [&str; 4] = [ANSWERED, PASSED, DROPPED, RRL];

macro_rules! stats {
    ($($(#[$doc:meta])* $name:ident => ($metric:ident, $label:literal),)+) => {
        /// Per-CPU counters, the index into [`crate::map::STATS`].
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Stat {
            $($(#[$doc])* $name,)+
        }

        impl Stat {
            /// Every counter, in index order.
            pub const ALL: [Stat; STAT_COUNT as usize] = [$(Stat::$name,)+];

            /// `(metric, label)`: [`ANSWERED`] and the kind of answer, [`PASSED`] and the
            /// reason, or [`DROPPED`] and the reason.
            pub const fn label(self) -> (&'static str, &'static str) {
                match self {
                    $(Stat::$name => ($metric, $label),)+
                }
            }
        }

        /// Number of counters in [`crate::map::STATS`].
        pub const STAT_COUNT: u32 = [$(Stat::$name,)+].len() as u32;
    };
}

stats! {
    /// Answer records from the maps.
    AnsweredAnswer => (ANSWERED, "answer"),
    AnsweredNxdomain => (ANSWERED, "nxdomain"),
    AnsweredNodata => (ANSWERED, "nodata"),
    PassTc => (PASSED, "tc"),
    PassQr => (PASSED, "qr"),
    PassOpcode => (PASSED, "opcode"),
    PassQdcount => (PASSED, "qdcount"),
    /// Answer or authority records, or an additional record that is not one OPT.
    PassCounts => (PASSED, "counts"),
    PassClass => (PASSED, "class"),
    PassQtype => (PASSED, "qtype"),
    PassEdnsVersion => (PASSED, "edns_version"),
    PassIpOptions => (PASSED, "ip_options"),
    PassIpv6Ext => (PASSED, "ipv6_ext"),
    PassFragment => (PASSED, "fragment"),
    PassMalformed => (PASSED, "malformed"),
    PassLongName => (PASSED, "long_name"),
    PassNoZone => (PASSED, "no_zone"),
    /// NXDOMAIN in a zone with wildcards or delegations.
    PassNegative => (PASSED, "wildcard_or_cut"),
    /// The compiler marked the answer "pass", or the name is between two writes.
    PassRecord => (PASSED, "record"),
    PassTooBig => (PASSED, "too_big"),
    /// No room to grow the frame for the answer (driver headroom and tailroom).
    PassNoRoom => (PASSED, "no_room"),
    PassDisabled => (PASSED, "disabled"),
    /// A wrong IPv4 header checksum or UDP checksum, or an IPv6 UDP checksum of zero (RFC 8200
    /// 8.1): the kernel drops such a datagram, and so the fast path must not answer it.
    PassChecksum => (PASSED, "checksum"),
    /// The query asks for the server's NSID (RFC 5001) and one is configured: the fallback adds
    /// it.
    PassNsid => (PASSED, "nsid"),
    /// A source or destination no DNS client can have on the wire (multicast, broadcast,
    /// 0.0.0.0/8, loopback, IPv6 unspecified or IPv4-mapped) or source port 0: the host drops
    /// or can't answer it, and so the fast path must not answer it either.
    PassMartian => (PASSED, "martian"),
    /// The frame was resized for the answer and then a write into it failed: it is neither the
    /// query nor the answer any more.
    DropWrite => (DROPPED, "write_failed"),
    /// Over its prefix's rate: not sent.
    RrlLimited => (RRL, "limited"),
    /// Over its prefix's rate, and the `slip`-th: sent with TC=1 and no records.
    RrlSlipped => (RRL, "slipped"),
    /// From a prefix exempt from rate limiting: sent.
    RrlExempt => (RRL, "exempt"),
    /// With a valid server cookie (the source address is proved): sent, never limited.
    RrlCookie => (RRL, "cookie"),
}

/// The kinds of answer the program gives, in the order of their per-qtype slots.
pub const ANSWER_KINDS: [Stat; 4] = [
    Stat::AnsweredAnswer,
    Stat::AnsweredNxdomain,
    Stat::AnsweredNodata,
    // A slip is a response too (TC set, NOERROR, no records).
    Stat::RrlSlipped,
];

/// The query types the program answers, as `/metrics` labels them, in the order of their segment
/// indices ([`crate::SEG_A`], [`crate::SEG_AAAA`], [`crate::SEG_CNAME`]).
pub const ANSWER_QTYPES: [&str; 3] = ["A", "AAAA", "CNAME"];

/// Slots of [`crate::map::STATS`] after the [`Stat`] counters: the program's answers again, by
/// kind and query type, so that `/metrics` can give them the `qtype` label the fallback's
/// answers have. The kind alone doesn't tell the type (an NXDOMAIN may answer A or AAAA). They
/// sit after the list, apart from it, so [`Stat::ALL`] still moves by one per packet.
pub const QTYPE_SLOTS: u32 = (ANSWER_KINDS.len() * ANSWER_QTYPES.len()) as u32;

/// Entries of [`crate::map::STATS`]: the [`Stat`] counters, then the per-qtype answers.
pub const STAT_SLOTS: u32 = STAT_COUNT + QTYPE_SLOTS;

/// The slot counting an answer of `kind` (one of [`ANSWER_KINDS`]) to a query whose type has
/// segment index `seg`; `None` for anything else.
#[inline(always)]
pub const fn qtype_slot(kind: Stat, seg: usize) -> Option<u32> {
    let k = match kind {
        Stat::AnsweredAnswer => 0,
        Stat::AnsweredNxdomain => 1,
        Stat::AnsweredNodata => 2,
        Stat::RrlSlipped => 3,
        _ => return None,
    };
    if seg < crate::SEG_A || seg > crate::SEG_CNAME {
        return None;
    }
    Some(STAT_COUNT + k * ANSWER_QTYPES.len() as u32 + (seg - crate::SEG_A) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qtype_slots_follow_the_kinds_and_types_and_fill_the_map() {
        let mut seen = [false; QTYPE_SLOTS as usize];
        for (k, kind) in ANSWER_KINDS.iter().enumerate() {
            for (t, seg) in [crate::SEG_A, crate::SEG_AAAA, crate::SEG_CNAME]
                .into_iter()
                .enumerate()
            {
                assert_eq!(
                    crate::seg_for_qtype([crate::TYPE_A, crate::TYPE_AAAA, crate::TYPE_CNAME][t]),
                    Some(seg)
                );
                let slot = qtype_slot(*kind, seg).expect("a slot");
                let i = (slot - STAT_COUNT) as usize;
                assert_eq!(i, k * ANSWER_QTYPES.len() + t);
                assert!(!seen[i]);
                seen[i] = true;
            }
            assert_eq!(qtype_slot(*kind, crate::SEG_CNAME_PREFIX), None);
            assert_eq!(qtype_slot(*kind, crate::SEG_CNAME + 1), None);
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(qtype_slot(Stat::PassQtype, crate::SEG_A), None);
    }
}
