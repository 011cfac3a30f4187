//! The update API's promises, on the wire: a 200 means the answer is already served by
//! the fast path; an acknowledged update survives SIGKILL; a restart drops no query for a record
//! the fast path holds; concurrent updates never show a mix of two RRsets.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU32, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use dns_common::Stat;
use hickory_proto::rr::RecordType;
use tests::{
    dns_client::{DnsClient, Reply},
    enter_netns,
    http_client::Http,
    kdig, Bpffs, TempDir, TestBed, API_ADDR, DNS_PORT, SERVER_V4, ZONE,
};

fn dns_addr() -> SocketAddr {
    format!("{SERVER_V4}:{DNS_PORT}").parse().expect("address")
}

fn api_addr() -> SocketAddr {
    API_ADDR.parse().expect("address")
}

/// The network, the pass program on the client end, and the daemon on the server's IPv4
/// address with `extra` arguments.
fn bed_with(extra: &[&str]) -> TestBed {
    TestBed::with_daemon_on(&dns_addr().to_string(), extra)
}

/// A bpffs of the test's own for the daemon's pins (see [`Bpffs`]). Declared before the
/// [`TestBed`], so it goes after the daemon does.
struct Pins {
    bpffs: Bpffs,
    _dir: TempDir,
}

impl Pins {
    fn new() -> Self {
        let dir = TempDir::new();
        Self {
            bpffs: Bpffs::mount(&dir.path().join("bpffs")),
            _dir: dir,
        }
    }

    /// [`bed_with`] with `--bpffs <it>` and `extra`.
    fn bed_with(&self, extra: &[&str]) -> TestBed {
        let bpffs = self.bpffs.path().display().to_string();
        let mut args = vec!["--bpffs", &bpffs];
        args.extend_from_slice(extra);
        bed_with(&args)
    }
}

fn put_body(addrs: &[String]) -> String {
    serde_json::json!({ "ttl": 30, "records": addrs }).to_string()
}

/// Address `i` of a block reserved for benchmarks (RFC 2544), never routed anywhere.
fn addr(i: u32) -> String {
    format!("198.18.{}.{}", (i >> 8) & 0xff, i & 0xff)
}

#[test]
fn read_your_write_1000_puts_each_answered_first_time_by_xdp() {
    const N: u32 = 1000;
    let bed = bed_with(&[]);
    let before = bed.daemon().stats();
    let (server, client) = (bed.server.name().to_owned(), bed.client.name().to_owned());
    let failures = thread::spawn(move || {
        // The HTTP connection is made in the server namespace, the UDP socket in the client's:
        // a socket stays in the namespace it was created in.
        enter_netns(&server).expect("entering the server namespace");
        let mut http = Http::new(api_addr(), Duration::from_secs(5));
        http.request("GET", "/healthz", None)
            .expect("API reachable");
        enter_netns(&client).expect("entering the client namespace");
        let mut dns = DnsClient::new(dns_addr(), Duration::from_secs(1)).expect("UDP client");
        let mut failures = Vec::new();
        for i in 0..N {
            let path = format!("/v1/zones/{ZONE}/records/rw{i}/A");
            let (code, body) = http
                .request("PUT", &path, Some(&put_body(&[addr(i)])))
                .expect("PUT");
            assert_eq!(code, 200, "PUT {path}: {body}");
            let got = dns.query(&format!("rw{i}.{ZONE}."), RecordType::A);
            let want = Reply::Answer {
                rcode: "NoError".into(),
                addrs: vec![addr(i)],
            };
            if got != want {
                failures.push((i, got));
            }
        }
        failures
    })
    .join()
    .expect("writer thread");
    assert!(
        failures.is_empty(),
        "{} of {N} queries right after a 200 did not get the new answer, e.g. {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let after = bed.daemon().stats();
    assert_eq!(
        after.delta(&before, Stat::AnsweredAnswer),
        u64::from(N),
        "not every answer came from the XDP program"
    );
}

#[test]
fn acknowledged_puts_survive_sigkill() {
    let pins = Pins::new();
    let mut bed = pins.bed_with(&[]);

    let acked = Arc::new(Mutex::new(Vec::<u32>::new()));
    let server = bed.server.name().to_owned();
    let writer = {
        let acked = Arc::clone(&acked);
        thread::spawn(move || {
            enter_netns(&server).expect("entering the server namespace");
            let mut http = Http::new(api_addr(), Duration::from_secs(2));
            // Bounded: at most 20,000 PUTs or 60 s, or until the daemon is gone.
            let deadline = Instant::now() + Duration::from_secs(60);
            for i in 0..20_000u32 {
                if Instant::now() > deadline {
                    break;
                }
                let path = format!("/v1/zones/{ZONE}/records/k{i}/A");
                match http.request("PUT", &path, Some(&put_body(&[addr(i)]))) {
                    Ok((200, _)) => acked.lock().expect("lock").push(i),
                    Ok((code, body)) => panic!("PUT {path}: {code} {body}"),
                    Err(_) => break,
                }
            }
        })
    };
    // Kill it mid-stream, once a few hundred writes are acknowledged.
    let deadline = Instant::now() + Duration::from_secs(60);
    while acked.lock().expect("lock").len() < 300 {
        assert!(Instant::now() < deadline, "the writer made no progress");
        thread::sleep(Duration::from_millis(10));
    }
    let pid = bed.daemon().process.pid();
    // SAFETY: kill(2) on the daemon we started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    writer.join().expect("writer thread");
    let acked = acked.lock().expect("lock").clone();
    // Start again on the same data and pins.
    bed.restart_daemon();
    let daemon = bed.daemon();

    let before = daemon.stats();
    let client = bed.client.name().to_owned();
    let queried = acked.clone();
    let missing = thread::spawn(move || {
        enter_netns(&client).expect("entering the client namespace");
        let mut dns = DnsClient::new(dns_addr(), Duration::from_secs(1)).expect("UDP client");
        queried
            .iter()
            .filter(|i| {
                dns.query(&format!("k{i}.{ZONE}."), RecordType::A)
                    != Reply::Answer {
                        rcode: "NoError".into(),
                        addrs: vec![addr(**i)],
                    }
            })
            .copied()
            .collect::<Vec<_>>()
    })
    .join()
    .expect("query thread");
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged PUTs are missing after SIGKILL and restart: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
    // From the maps (the fast path), and from the store (the fallback answers TCP).
    let after = daemon.stats();
    assert_eq!(
        after.delta(&before, Stat::AnsweredAnswer),
        acked.len() as u64,
        "not all were answered from the maps"
    );
    for i in acked.iter().step_by((acked.len() / 20).max(1)) {
        let a = kdig(
            &bed.client,
            SERVER_V4,
            DNS_PORT,
            &format!("k{i}.{ZONE}"),
            "A",
            &["+tcp"],
        );
        assert_eq!(a.rdata("A"), [addr(*i).as_str()], "{}", a.raw);
    }
}

#[test]
fn restart_drops_no_query_for_a_record_in_the_maps() {
    let pins = Pins::new();
    let mut bed = pins.bed_with(&["--keep-xdp"]);
    bed.daemon()
        .api_put(ZONE, "steady", "A", 30, &["192.0.2.55"]);

    // 0: before the stop, 1: daemon down, 2: restarted, 3: done.
    let phase = Arc::new(AtomicU32::new(0));
    let client = bed.client.name().to_owned();
    let looper = {
        let phase = Arc::clone(&phase);
        thread::spawn(move || {
            enter_netns(&client).expect("entering the client namespace");
            let mut dns =
                DnsClient::new(dns_addr(), Duration::from_millis(500)).expect("UDP client");
            let mut per_phase = [0u32; 3];
            let mut failed = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(60);
            for n in 0..30_000u32 {
                let p = phase.load(Ordering::SeqCst);
                if p == 3 || Instant::now() > deadline {
                    break;
                }
                let r = dns.query(&format!("steady.{ZONE}."), RecordType::A);
                if r != (Reply::Answer {
                    rcode: "NoError".into(),
                    addrs: vec!["192.0.2.55".into()],
                }) {
                    failed.push((n, p, r));
                }
                per_phase[p as usize] += 1;
                thread::sleep(Duration::from_millis(2));
            }
            (per_phase, failed)
        })
    };
    thread::sleep(Duration::from_millis(300));
    let status = bed.stop_daemon();
    assert!(status.is_some(), "the daemon did not stop on SIGTERM");
    phase.store(1, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(500));
    bed.start_daemon();
    phase.store(2, Ordering::SeqCst);
    thread::sleep(Duration::from_millis(300));
    phase.store(3, Ordering::SeqCst);
    let (per_phase, failed) = looper.join().expect("query thread");
    assert!(
        failed.is_empty(),
        "{} queries went unanswered or wrong around the restart (phase 1 = down): {:?}",
        failed.len(),
        &failed[..failed.len().min(10)]
    );
    assert!(
        per_phase[1] >= 20,
        "too few queries while the daemon was down to show anything: {per_phase:?}"
    );
}

#[test]
fn concurrent_updates_are_seen_whole_never_mixed() {
    let bed = bed_with(&[]);
    // Alternating sizes move the name between the small and the large map on every write.
    let set = |k: u32| -> Vec<String> {
        let n = if k.is_multiple_of(2) { 1 } else { 3 };
        (1..=n).map(|j| format!("198.19.{}.{j}", k % 250)).collect()
    };
    bed.daemon()
        .api_put(ZONE, "mix", "A", 30, &[set(0)[0].as_str()]);
    let done = Arc::new(AtomicBool::new(false));
    let server = bed.server.name().to_owned();
    let writer = {
        let done = Arc::clone(&done);
        thread::spawn(move || {
            enter_netns(&server).expect("entering the server namespace");
            let mut http = Http::new(api_addr(), Duration::from_secs(5));
            for k in 1..=400u32 {
                let path = format!("/v1/zones/{ZONE}/records/mix/A");
                let (code, body) = http
                    .request("PUT", &path, Some(&put_body(&set(k))))
                    .expect("PUT");
                assert_eq!(code, 200, "{body}");
            }
            done.store(true, Ordering::SeqCst);
        })
    };
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let client = bed.client.name().to_owned();
            let done = Arc::clone(&done);
            thread::spawn(move || {
                enter_netns(&client).expect("entering the client namespace");
                let mut dns =
                    DnsClient::new(dns_addr(), Duration::from_secs(1)).expect("UDP client");
                let mut bad = Vec::new();
                let mut n = 0u32;
                let deadline = Instant::now() + Duration::from_secs(60);
                while !done.load(Ordering::SeqCst) && Instant::now() < deadline && n < 200_000 {
                    n += 1;
                    match dns.query(&format!("mix.{ZONE}."), RecordType::A) {
                        Reply::Answer { rcode, addrs } if rcode == "NoError" => {
                            let k: u32 = addrs
                                .first()
                                .and_then(|a| a.split('.').nth(2))
                                .and_then(|o| o.parse().ok())
                                .unwrap_or(u32::MAX);
                            // One of the written sets: same third octet, the right count.
                            let whole = (0..=400).any(|w| set(w) == addrs && w % 250 == k);
                            if !whole {
                                bad.push(addrs);
                            }
                        }
                        other => bad.push(vec![format!("{other:?}")]),
                    }
                }
                (n, bad)
            })
        })
        .collect();
    writer.join().expect("writer thread");
    let mut total = 0;
    for r in readers {
        let (n, bad) = r.join().expect("reader thread");
        total += n;
        assert!(
            bad.is_empty(),
            "answers that are no written RRset: {:?}",
            &bad[..bad.len().min(5)]
        );
    }
    assert!(total > 100, "only {total} queries ran during the updates");
}
