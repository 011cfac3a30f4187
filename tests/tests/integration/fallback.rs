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

/// The fallback's NOERROR answers so far (both transports), from `GET /v1/stats`.
fn fallback_noerror(daemon: &tests::Daemon) -> u64 {
    let (code, body) = daemon.http("GET", "/v1/stats", None);
    assert_eq!(code, 200, "GET /v1/stats: {body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("stats are JSON");
    v["fallback"]["NOERROR"]
        .as_u64()
        .unwrap_or_else(|| panic!("no fallback.NOERROR in {body}"))
}

/// A flood of queries the fast path passes up (TXT, with EDNS) keeps every UDP worker of the
/// fallback busy; meanwhile queries over TCP and requests to the API are still answered, each
/// within a bound: the flood's threads don't starve the runtime that serves both.
#[test]
fn fallback_under_a_passed_up_flood_keeps_answering_tcp_and_the_api() {
    use std::{
        net::{SocketAddr, UdpSocket},
        sync::{
            atomic::{AtomicBool, Ordering},
            Arc,
        },
        thread,
        time::{Duration, Instant},
    };

    use tests::{
        dns_message::{EdnsSpec, QuerySpec, TYPE_TXT},
        enter_netns, Tool, DEMO_A, DNS_PORT, SERVER_V4,
    };

    /// Upper bounds: how long the flood may last, whatever happens to the checks.
    const FLOOD_MAX: Duration = Duration::from_secs(60);
    /// How long one TCP query or one API request may take under the flood.
    const BOUND: Duration = Duration::from_secs(3);

    let bed = TestBed::with_daemon();
    let daemon = bed.daemon();
    let server: SocketAddr = format!("{SERVER_V4}:{DNS_PORT}").parse().unwrap();
    let before = daemon.stats();
    let answered_before = fallback_noerror(daemon);

    let stop = Arc::new(AtomicBool::new(false));
    let flood = {
        let (ns, stop) = (bed.client.name().to_owned(), stop.clone());
        thread::spawn(move || {
            enter_netns(&ns).expect("client namespace");
            // Several source ports, so that the kernel spreads them over every UDP socket.
            let socks: Vec<UdpSocket> = (0..8)
                .map(|_| {
                    let s = UdpSocket::bind("0.0.0.0:0").expect("bind");
                    s.set_nonblocking(true).expect("nonblocking");
                    s
                })
                .collect();
            let mut q = QuerySpec::new(0, "demo.t.example.net.", TYPE_TXT);
            q.edns = Some(EdnsSpec::new(1232, false));
            let (start, mut sent) = (Instant::now(), 0u64);
            while !stop.load(Ordering::Relaxed) && start.elapsed() < FLOOD_MAX {
                for (i, s) in socks.iter().enumerate() {
                    q.id = (sent as u16).wrapping_add(i as u16);
                    // A full send buffer is the flood outrunning the link: go on.
                    if s.send_to(&q.to_wire(), server).is_ok() {
                        sent += 1;
                    }
                    // The answers are not read: drain them so the sockets stay cheap.
                    let mut buf = [0u8; 512];
                    while s.recv_from(&mut buf).is_ok() {}
                }
            }
            sent
        })
    };

    // Let the flood build up, then ask over TCP and the API while it lasts.
    thread::sleep(Duration::from_millis(500));
    for round in 0..5 {
        let t = Instant::now();
        let a = Tool::Kdig
            .try_query(
                &bed.client,
                SERVER_V4,
                DNS_PORT,
                "demo.t.example.net",
                "A",
                &["+tcp"],
            )
            .unwrap_or_else(|e| panic!("round {round}: TCP under the flood: {e}"));
        let took = t.elapsed();
        assert_eq!(a.status, "NOERROR", "{}", a.raw);
        assert_eq!(a.rdata("A"), [DEMO_A], "{}", a.raw);
        assert!(took < BOUND, "round {round}: TCP took {took:?}");

        let t = Instant::now();
        let (code, body) = daemon.http("GET", "/v1/zones", None);
        let took = t.elapsed();
        assert_eq!(code, 200, "round {round}: GET /v1/zones: {body}");
        assert!(took < BOUND, "round {round}: the API took {took:?}");
        assert!(
            !flood.is_finished(),
            "the flood ended before the checks did"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let sent = flood.join().expect("flood thread");

    // The flood did reach the fallback, through the fast path's pass.
    let after = daemon.stats();
    let answered = fallback_noerror(daemon) - answered_before;
    assert!(
        after.delta(&before, Stat::PassQtype) >= 1000,
        "passed up: {}, sent {sent}",
        after.delta(&before, Stat::PassQtype)
    );
    assert!(
        answered >= 1000,
        "the fallback answered {answered} of {sent}"
    );
}
