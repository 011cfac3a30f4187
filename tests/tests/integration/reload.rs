//! SIGHUP with the real fast path: the daemon re-reads its `--zone-file`, and the new data is
//! answered by the XDP program itself, with the program attached throughout; and it re-reads
//! `transfer-allow` from its settings file, so an address refused a zone transfer before is let
//! in after, while queries keep being answered.

use std::{
    fs,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::RecordType,
    serialize::binary::BinDecodable as _,
};
use tests::{
    dig,
    dns_client::{tcp_connect, tcp_exchange, DnsClient, Reply},
    dns_message::QuerySpec,
    edgedns_bin, enter_netns, Daemon, NetNs, TempDir, DNS_PORT,
};

fn zone(serial: u32, addr: &str) -> String {
    format!(
        "$ORIGIN hup.example.\n$TTL 60\n\
         @ SOA ns1 hostmaster {serial} 3600 600 86400 30\n\
         @ NS ns1\nns1 A 192.0.2.53\nwww A {addr}\n"
    )
}

fn answered(d: &Daemon) -> u64 {
    d.stats()
        .counters
        .iter()
        .filter(|((metric, _), _)| metric == "answered")
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn sighup_reloads_zone_files_into_the_fast_path() {
    let tmp = TempDir::new();
    let file = tmp.path().join("hup.zone");
    fs::write(&file, zone(1, "192.0.2.1")).expect("write the zone file");
    let ns = NetNs::new("hup");
    let mut daemon = Daemon::start(
        &edgedns_bin(),
        &ns,
        &[
            "--xdp-mode".as_ref(),
            "generic".as_ref(),
            "--zone-file".as_ref(),
            file.as_os_str(),
        ],
        &tmp.path().join("data"),
    );
    let a = dig(&ns, "127.0.0.1", DNS_PORT, "www.hup.example", "A");
    assert_eq!(a.rdata("A"), ["192.0.2.1"], "{}", a.raw);

    fs::write(&file, zone(2, "192.0.2.2")).expect("rewrite the zone file");
    let pid = libc::pid_t::try_from(daemon.process.pid()).expect("pid");
    // SAFETY: kill(2) on the daemon, our child, which is running (Daemon::start checked).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let mut served: Vec<String> = Vec::new();
    for _ in 0..50 {
        daemon.process.assert_running();
        let a = dig(&ns, "127.0.0.1", DNS_PORT, "www.hup.example", "A");
        served = a.rdata("A").iter().map(|s| s.to_string()).collect();
        if served == ["192.0.2.2"] {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        served,
        ["192.0.2.2"],
        "not reloaded; log:\n{}",
        daemon.process.log_text()
    );
    let before = answered(&daemon);
    let a = dig(&ns, "127.0.0.1", DNS_PORT, "www.hup.example", "A");
    assert_eq!(a.rdata("A"), ["192.0.2.2"], "{}", a.raw);
    assert!(
        answered(&daemon) > before,
        "the new data is not answered at XDP"
    );
    daemon.process.assert_running();
}

/// The first message of an AXFR of `zone` over TCP from inside `ns` (source 127.0.0.1).
fn axfr(ns: &NetNs, zone: &str) -> Message {
    let (ns, zone) = (ns.name().to_owned(), zone.to_owned());
    thread::spawn(move || {
        enter_netns(&ns).expect("entering the namespace");
        let server = SocketAddr::from(([127, 0, 0, 1], DNS_PORT));
        let mut tcp = tcp_connect(server, Duration::from_secs(5)).expect("TCP to the fallback");
        let query = QuerySpec::new(0x4242, &zone, u16::from(RecordType::AXFR)).to_wire();
        let msg = tcp_exchange(&mut tcp, &query).expect("an AXFR response");
        Message::from_bytes(&msg).expect("the response parses")
    })
    .join()
    .expect("AXFR thread")
}

#[test]
fn sighup_reloads_the_transfer_acl_without_losing_a_query() {
    /// Bounds of the query loop, whatever happens.
    const MAX_QUERIES: u32 = 200_000;
    const MAX_TIME: Duration = Duration::from_secs(60);

    let tmp = TempDir::new();
    let file = tmp.path().join("hup.zone");
    fs::write(&file, zone(1, "192.0.2.1")).expect("write the zone file");
    let settings = tmp.path().join("edgedns.toml");
    // Another secondary may transfer; the test's client (127.0.0.1) may not, yet.
    fs::write(&settings, "transfer-allow = [\"192.0.2.99\"]\n").expect("write the settings");
    let ns = NetNs::new("hupacl");
    let mut daemon = Daemon::start(
        &edgedns_bin(),
        &ns,
        &[
            "--config".as_ref(),
            settings.as_os_str(),
            "--xdp-mode".as_ref(),
            "generic".as_ref(),
            "--zone-file".as_ref(),
            file.as_os_str(),
        ],
        &tmp.path().join("data"),
    );
    let refused = axfr(&ns, "hup.example.");
    assert_eq!(
        refused.response_code(),
        ResponseCode::Refused,
        "{refused:?}"
    );
    assert!(refused.answers().is_empty(), "{refused:?}");

    // Queries all along: every one must be answered, and right.
    let stop = Arc::new(AtomicBool::new(false));
    let queries = {
        let (ns, stop) = (ns.name().to_owned(), Arc::clone(&stop));
        thread::spawn(move || {
            enter_netns(&ns).expect("entering the namespace");
            let server = SocketAddr::from(([127, 0, 0, 1], DNS_PORT));
            let mut dns = DnsClient::new(server, Duration::from_secs(2)).expect("UDP client");
            let want = Reply::Answer {
                rcode: "NoError".into(),
                addrs: vec!["192.0.2.1".into()],
            };
            let (start, mut sent, mut wrong) = (Instant::now(), 0u32, Vec::new());
            while !stop.load(Ordering::Relaxed) && sent < MAX_QUERIES && start.elapsed() < MAX_TIME
            {
                let got = dns.query("www.hup.example.", RecordType::A);
                sent += 1;
                if got != want {
                    wrong.push(got);
                }
            }
            (sent, wrong)
        })
    };
    thread::sleep(Duration::from_millis(300));

    fs::write(
        &settings,
        "transfer-allow = [\"192.0.2.99\", \"127.0.0.1\"]\n",
    )
    .expect("rewrite the settings");
    let pid = libc::pid_t::try_from(daemon.process.pid()).expect("pid");
    // SAFETY: kill(2) on the daemon, our child, which is running (Daemon::start checked).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !daemon
        .process
        .log_text()
        .contains("reload: access lists applied")
    {
        daemon.process.assert_running();
        assert!(
            Instant::now() < deadline,
            "no reload of the access lists; log:\n{}",
            daemon.process.log_text()
        );
        thread::sleep(Duration::from_millis(100));
    }
    let allowed = axfr(&ns, "hup.example.");
    assert_eq!(
        allowed.response_code(),
        ResponseCode::NoError,
        "{allowed:?}"
    );
    assert_eq!(
        allowed.answers().first().map(|r| r.record_type()),
        Some(RecordType::SOA),
        "{allowed:?}"
    );
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (sent, wrong) = queries.join().expect("query thread");
    assert!(sent > 10, "only {sent} queries sent");
    assert!(
        wrong.is_empty(),
        "{} of {sent} queries not answered right across the reload, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    // The log names what changed.
    let log = daemon.process.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("reload: access lists applied"))
        .expect("the reload line");
    assert!(line.contains("transfer-allow"), "{line}");
    assert!(line.contains("127.0.0.1/32"), "{line}");
    daemon.process.assert_running();
}
