//! Queries the XDP program can't answer are passed up, counted under their reason, and answered by
//! the fallback server.

use dns_common::Stat;
use tests::{Stats, TestBed, DEMO_NAME, ZONE};

const ANSWERED: [Stat; 3] = [
    Stat::AnsweredAnswer,
    Stat::AnsweredNxdomain,
    Stat::AnsweredNodata,
];

fn assert_not_answered_by_xdp(before: &Stats, after: &Stats) {
    for stat in ANSWERED {
        assert_eq!(
            after.delta(before, stat),
            0,
            "the XDP program answered ({stat:?} moved): before {before:?}, after {after:?}"
        );
    }
}

#[test]
fn txt_is_passed_up_and_answered_by_fallback() {
    let bed = TestBed::with_daemon();
    let daemon = bed.daemon();

    let before = daemon.stats();
    let a = bed.dig(DEMO_NAME, "TXT");
    let after = daemon.stats();

    // demo has an A record only: NOERROR with no answer and the zone's SOA (NODATA).
    assert_eq!(a.status, "NOERROR", "{}", a.raw);
    assert!(a.has_flag("aa"), "not authoritative:\n{}", a.raw);
    assert!(a.rdata("TXT").is_empty(), "{}", a.raw);
    assert!(
        a.authority
            .iter()
            .any(|r| r.rtype == "SOA" && r.name.trim_end_matches('.') == ZONE),
        "NODATA without the SOA of {ZONE}:\n{}",
        a.raw
    );
    assert!(
        after.delta(&before, Stat::PassQtype) >= 1,
        "xdp.passed.qtype did not move: before {before:?}, after {after:?}"
    );
    assert_not_answered_by_xdp(&before, &after);
}

#[test]
fn name_outside_zones_is_refused_by_fallback() {
    let bed = TestBed::with_daemon();
    let daemon = bed.daemon();

    let before = daemon.stats();
    let a = bed.dig("www.example.org", "A");
    let after = daemon.stats();

    assert_eq!(a.status, "REFUSED", "{}", a.raw);
    assert!(a.answer.is_empty(), "{}", a.raw);
    assert!(
        after.delta(&before, Stat::PassNoZone) >= 1,
        "xdp.passed.no_zone did not move: before {before:?}, after {after:?}"
    );
    assert_not_answered_by_xdp(&before, &after);
}
