//! Answers from the XDP program: a record put through the API is on the wire, answered from the
//! maps; a deleted one is NXDOMAIN, also from the maps.

use dns_common::Stat;
use tests::{kdig, TestBed, DNS_PORT, SERVER_V4, ZONE};

#[test]
fn put_record_is_answered_by_xdp() {
    let bed = TestBed::with_daemon();
    let daemon = bed.daemon();
    let serial = daemon.api_put(ZONE, "www", "A", 30, &["192.0.2.7"]);
    assert!(serial > 0, "serial {serial}");

    // 200 means the answer is in the maps: no waiting, the first query must get it.
    let before = daemon.stats();
    let a = bed.dig("www.t.example.net", "A");
    let after = daemon.stats();

    assert_eq!(a.status, "NOERROR", "{}", a.raw);
    assert!(a.has_flag("aa"), "not authoritative:\n{}", a.raw);
    assert_eq!(a.rdata("A"), ["192.0.2.7"], "{}", a.raw);
    assert_eq!(a.answer[0].ttl, 30, "{}", a.raw);
    assert_eq!(
        after.delta(&before, Stat::AnsweredAnswer),
        1,
        "the XDP program did not answer (xdp.answered.answer did not move by 1): \
         before {before:?}, after {after:?}"
    );
}

#[test]
fn deleted_name_is_nxdomain_from_xdp() {
    let bed = TestBed::with_daemon();
    let daemon = bed.daemon();
    daemon.api_put(ZONE, "gone", "A", 30, &["192.0.2.9"]);
    let a = bed.dig("gone.t.example.net", "A");
    assert_eq!(a.rdata("A"), ["192.0.2.9"], "{}", a.raw);

    // The fully qualified form of the name, this time.
    daemon.api_delete(ZONE, "gone.t.example.net", "A");

    let before = daemon.stats();
    let a = kdig(
        &bed.client,
        SERVER_V4,
        DNS_PORT,
        "gone.t.example.net",
        "A",
        &[],
    );
    let after = daemon.stats();

    assert_eq!(a.status, "NXDOMAIN", "{}", a.raw);
    assert!(a.answer.is_empty(), "{}", a.raw);
    assert!(
        a.authority
            .iter()
            .any(|r| r.rtype == "SOA" && r.name.trim_end_matches('.') == ZONE),
        "no SOA of {ZONE} in the authority section:\n{}",
        a.raw
    );
    // Which path answered: the XDP program counts its NXDOMAIN answers.
    assert_eq!(
        after.delta(&before, Stat::AnsweredNxdomain),
        1,
        "the NXDOMAIN did not come from the XDP program (xdp.answered.nxdomain did not move \
         by 1): before {before:?}, after {after:?}"
    );
}
