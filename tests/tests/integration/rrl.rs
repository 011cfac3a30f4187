//! Response-rate limiting and DNS cookies in the XDP program, run with `BPF_PROG_TEST_RUN` over
//! the fixture zones: the slip pattern of a burst from one prefix, another prefix untouched,
//! exempt prefixes and clients with a valid server cookie never limited, the bucket refilling
//! with time; server cookies made as RFC 9018 says, with the secret the daemon wrote.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use dns_common::{
    limit::{server_cookie, LimitConfig, LIMIT_COOKIES, OPTION_COOKIE},
    Stat,
};
use hickory_proto::op::Message;
use tests::{
    dns_message::{EdnsSpec, QuerySpec, TYPE_A},
    fixture,
    packet::{build_frame, parse_udp, FrameSpec},
    require_root,
    xdprun::{XdpRunner, XDP_DROP, XDP_TX},
};

const PORT: u16 = 5300;
const SECRET: [u8; 16] = *b"edgedns-rrl-test";

fn runner(rate: u32, slip: u32) -> XdpRunner {
    require_root();
    let mut r = XdpRunner::load(SocketAddr::new(IpAddr::from([0u8; 16]), PORT), 1232);
    r.sync(&fixture::zones());
    let mut cfg = LimitConfig::zeroed();
    cfg.set_rate(rate, slip, 24, 56);
    cfg.flags = LIMIT_COOKIES;
    cfg.secret = SECRET;
    cfg.wall_offset_ns = dns_user::limit::wall_offset_ns();
    r.fast.set_limits(cfg).expect("LIMITS");
    r
}

fn frame(src: &str, q: &QuerySpec) -> Vec<u8> {
    let src: IpAddr = src.parse().expect("address");
    let dst: IpAddr = if src.is_ipv4() {
        "10.211.0.1".parse().unwrap()
    } else {
        "fd00:211::1".parse().unwrap()
    };
    let spec = FrameSpec {
        src_mac: [0x02, 0, 0, 0, 0, 0x02],
        dst_mac: [0x02, 0, 0, 0, 0, 0x01],
        vlan: None,
        src_ip: src,
        dst_ip: dst,
        sport: 40000,
        dport: PORT,
        ip_id: 1,
        tos: 0,
        ttl: 64,
        v4_no_udp_csum: false,
        padding: 0,
    };
    build_frame(&spec, &q.to_wire())
}

fn www() -> QuerySpec {
    QuerySpec::new(0x1234, "a1.example.com.", TYPE_A)
}

/// What one run came to: "answer", "slip" (TC, no records) or "drop".
fn outcome(r: &mut XdpRunner, f: &[u8]) -> &'static str {
    let run = r.run(f).expect("test run");
    match run.action {
        XDP_DROP => {
            assert_eq!(run.single(), Some(Stat::RrlLimited), "{run:?}");
            "drop"
        }
        XDP_TX => {
            let dns = parse_udp(&run.out).expect("a UDP frame").payload;
            let m = Message::from_vec(&dns).expect("decodes");
            if m.truncated() {
                assert!(m.answers().is_empty() && m.name_servers().is_empty(), "{m}");
                assert_eq!(run.single(), Some(Stat::RrlSlipped), "{run:?}");
                "slip"
            } else {
                assert_eq!(m.answers().len(), 1, "{m}");
                "answer"
            }
        }
        a => panic!("action {a}: {run:?}"),
    }
}

#[test]
fn xdp_rrl_limits_a_burst_with_the_slip_pattern_and_spares_the_others() {
    let mut r = runner(10, 2);
    eprintln!("verifier: {:?} instructions processed", r.verified_insns());
    // One /24, two hosts in it: one bucket.
    let got: Vec<&str> = (0..20)
        .map(|i| {
            let src = if i % 2 == 0 { "10.7.7.1" } else { "10.7.7.2" };
            outcome(&mut r, &frame(src, &www()))
        })
        .collect();
    let mut want = vec!["answer"; 10];
    want.extend(["drop", "slip"].repeat(5));
    assert_eq!(got, want);
    // Another prefix, and another class (NXDOMAIN) from the limited one: untouched.
    for _ in 0..10 {
        assert_eq!(outcome(&mut r, &frame("10.7.8.1", &www())), "answer");
    }
    let nx = QuerySpec::new(7, "nope.example.com.", TYPE_A);
    let run = r.run(&frame("10.7.7.1", &nx)).expect("run");
    assert_eq!(run.single(), Some(Stat::AnsweredNxdomain), "{run:?}");
    // IPv6 /56: two addresses in one /56 share a bucket.
    let v6: Vec<&str> = (0..12)
        .map(|i| {
            let src = if i % 2 == 0 {
                "fd00:77:0:1::1"
            } else {
                "fd00:77:0:2::9"
            };
            outcome(&mut r, &frame(src, &www()))
        })
        .collect();
    assert_eq!(&v6[10..], ["drop", "slip"]);
    // The bucket refills at the rate: 10 a second, so after 0.35 s at least 3 more go.
    std::thread::sleep(Duration::from_millis(350));
    for _ in 0..3 {
        assert_eq!(outcome(&mut r, &frame("10.7.7.1", &www())), "answer");
    }
}

#[test]
fn xdp_rrl_never_limits_exempt_prefixes() {
    let mut r = runner(2, 2);
    r.fast.add_exempt(&[10, 9, 0, 0], 16).expect("exempt");
    for _ in 0..30 {
        let run = r.run(&frame("10.9.200.1", &www())).expect("run");
        assert_eq!(run.action, XDP_TX);
        let moved: Vec<Stat> = run.counted.iter().map(|(s, _)| *s).collect();
        assert!(moved.contains(&Stat::RrlExempt), "{run:?}");
        assert!(moved.contains(&Stat::AnsweredAnswer), "{run:?}");
    }
    // Outside the exempt /16: limited after the burst of 2.
    let got: Vec<&str> = (0..4)
        .map(|_| outcome(&mut r, &frame("10.10.0.1", &www())))
        .collect();
    assert_eq!(got, ["answer", "answer", "drop", "slip"]);
}

fn with_cookie(cookie: &[u8]) -> QuerySpec {
    let mut q = www();
    let mut e = EdnsSpec::new(1232, false);
    e.options.push((OPTION_COOKIE, cookie.to_vec()));
    q.edns = Some(e);
    q
}

/// The COOKIE option's data of an answer frame: the OPT record is the last record, and our
/// COOKIE its only option, so its 24 bytes end the message.
fn cookie_of(out: &[u8]) -> Vec<u8> {
    let dns = parse_udp(out).expect("frame").payload;
    // hickory reads a COOKIE option as its own type, which wants other lengths: the bytes are
    // checked here instead (answer count, the OPT record's RDLENGTH, the option's header).
    assert_eq!(dns[6..12], [0, 1, 0, 0, 0, 1], "{dns:02x?}");
    let n = dns.len();
    assert_eq!(dns[n - 30..n - 24], [0, 28, 0, 10, 0, 24], "{dns:02x?}");
    dns[n - 24..].to_vec()
}

#[test]
fn xdp_cookies_are_rfc9018_and_a_valid_one_exempts_from_rrl() {
    let mut r = runner(2, 2);
    let client = [1u8, 2, 3, 4, 5, 6, 7, 8];
    let src = "10.5.5.5";
    let run = r.run(&frame(src, &with_cookie(&client))).expect("run");
    assert_eq!(run.action, XDP_TX, "{run:?}");
    let got = cookie_of(&run.out);
    assert_eq!(got.len(), 24, "{got:02x?}");
    assert_eq!(got[..8], client);
    let ts = u32::from_be_bytes([got[12], got[13], got[14], got[15]]);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as u32;
    assert!(now.abs_diff(ts) <= 2, "timestamp {ts}, now {now}");
    assert_eq!(
        got[8..],
        server_cookie(&SECRET, &client, ts, &[10, 5, 5, 5]),
        "the RFC 9018 cookie"
    );
    // Sent back: never limited (the burst is 2, so 20 would be limited otherwise).
    for _ in 0..20 {
        let run = r.run(&frame(src, &with_cookie(&got))).expect("run");
        assert_eq!(run.action, XDP_TX, "{run:?}");
        assert!(
            run.counted.iter().any(|(s, _)| *s == Stat::RrlCookie),
            "{run:?}"
        );
    }
    // A forged one (one bit of the hash), or ours from another address: as no cookie, limited.
    let mut forged = got.clone();
    forged[23] ^= 1;
    let outcomes: Vec<&str> = (0..4)
        .map(|_| outcome(&mut r, &frame("10.6.6.6", &with_cookie(&forged))))
        .collect();
    assert_eq!(outcomes, ["answer", "answer", "drop", "slip"]);
    let run = r.run(&frame("10.6.6.6", &with_cookie(&got))).expect("run");
    assert_ne!(run.single(), Some(Stat::RrlCookie), "{run:?}");
    // IPv6: the cookie hashes the 16-byte address.
    let run = r
        .run(&frame("fd00:5::5", &with_cookie(&client)))
        .expect("run");
    let got6 = cookie_of(&run.out);
    let ts6 = u32::from_be_bytes([got6[12], got6[13], got6[14], got6[15]]);
    let addr: std::net::Ipv6Addr = "fd00:5::5".parse().unwrap();
    assert_eq!(
        got6[8..],
        server_cookie(&SECRET, &client, ts6, &addr.octets())
    );
    // A malformed COOKIE (9 bytes) goes up: the fallback answers FORMERR.
    let run = r.run(&frame(src, &with_cookie(&[0; 9]))).expect("run");
    assert_eq!(run.single(), Some(Stat::PassMalformed), "{run:?}");
}

/// The real daemon over the wire, rate 5 a second: a client cookie gets a server cookie from
/// the fast path; sent back it exempts from the limit, a forged one doesn't; a restarted daemon
/// with the same secret file (as a second edge sharing it would) accepts the first one's
/// cookie; TCP and the API answer while the limit drops UDP.
#[test]
fn wire_cookies_and_rrl_with_the_real_daemon() {
    use tests::{
        dns_client::{tcp_connect, tcp_exchange},
        enter_netns, TestBed, DNS_PORT, SERVER_V4,
    };

    let secret_file = std::env::temp_dir().join(format!("edgedns-rrl-{}", std::process::id()));
    let hex: String = SECRET.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&secret_file, hex).expect("writing the cookie secret");
    let secret = secret_file.to_str().expect("UTF-8 path").to_owned();
    let mut bed = TestBed::with_daemon_on(
        &format!("{SERVER_V4}:{DNS_PORT}"),
        &["--rrl-rate", "5", "--cookie-secret-file", &secret],
    );
    let server = SocketAddr::new(SERVER_V4.parse().unwrap(), DNS_PORT);
    let client = [9u8, 8, 7, 6, 5, 4, 3, 2];
    let q = |cookie: &[u8], id: u16| {
        let mut q = with_cookie(cookie);
        q.qname = tests::dns_message::wire_name("demo.t.example.net.");
        q.id = id;
        q.to_wire()
    };
    let send = |bed: &TestBed, queries| send_from_client(bed, server, queries);

    let before = bed.daemon().stats();
    let first = send(&bed, vec![q(&client, 1)]);
    let answer = first[0].as_ref().expect("an answer");
    let after = bed.daemon().stats();
    assert_eq!(
        after.get(Stat::AnsweredAnswer),
        before.get(Stat::AnsweredAnswer) + 1,
        "the fast path answered"
    );
    let n = answer.len();
    assert_eq!(answer[n - 28..n - 24], [0, 10, 0, 24], "{answer:02x?}");
    let cookie = answer[n - 24..].to_vec();
    assert_eq!(cookie[..8], client);

    // Sent back, 30 times at once: all answered (the rate is 5), counted as proved.
    let got = send(&bed, (0..30).map(|i| q(&cookie, 100 + i)).collect());
    assert!(
        got.iter().all(Option::is_some),
        "all answered with a valid cookie"
    );
    assert!(bed.daemon().stats().get(Stat::RrlCookie) >= 30);

    // Forged: limited like no cookie at all (burst of 5, then dropped or slipped).
    let mut forged = cookie.clone();
    forged[23] ^= 0x55;
    let got = send(&bed, (0..30).map(|i| q(&forged, 200 + i)).collect());
    let answered = got.iter().flatten().count();
    assert!(answered < 30, "a forged cookie is not accepted");
    let limited = bed.daemon().stats().get(Stat::RrlLimited);
    assert!(limited > 0, "limited counted");
    // TCP is never limited, and the API answers meanwhile.
    let ns = bed.client.name().to_owned();
    let tcp = std::thread::spawn(move || {
        enter_netns(&ns).expect("client namespace");
        let mut c = tcp_connect(server, Duration::from_secs(5)).expect("connect");
        (0..10)
            .map(|i| tcp_exchange(&mut c, &q(&forged, 300 + i)).expect("TCP answer"))
            .count()
    })
    .join()
    .expect("tcp thread");
    assert_eq!(tcp, 10);

    // The same secret in another daemon instance: the first cookie is still good.
    bed.restart_daemon();
    let got = send(&bed, (0..20).map(|i| q(&cookie, 400 + i)).collect());
    assert!(
        got.iter().all(Option::is_some),
        "the cookie is accepted after the restart"
    );
    let _ = std::fs::remove_file(&secret_file);
}

/// Edges of one fleet share a cookie secret file so that a resolver's server cookie from one
/// edge is good at the next (RFC 9018 §4's shared secret): three daemons up at once, each in its
/// own namespaces, rate 5 a second. A cookie got from edge A, sent to edge B (same secret), is
/// valid there: every query gets its full answer, from B's fast path (counted as proved) and,
/// for a type it passes up, from B's fallback too. A cookie got from edge C, whose secret
/// differs, is no cookie at B: B limits it like any unproved source.
#[test]
fn two_edges_sharing_a_cookie_secret_accept_each_others_cookies() {
    use tests::{dns_message::TYPE_TXT, TestBed, DNS_PORT, SERVER_V4};

    let pid = std::process::id();
    let write_secret = |tag: &str, secret: &[u8; 16]| {
        let path = std::env::temp_dir().join(format!("edgedns-shared-secret-{tag}-{pid}"));
        let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
        std::fs::write(&path, hex).expect("writing a cookie secret");
        path
    };
    let shared = write_secret("shared", &SECRET);
    let other = write_secret("other", b"another-secret!!");
    let start = |secret: &std::path::Path| {
        TestBed::with_daemon_on(
            &format!("{SERVER_V4}:{DNS_PORT}"),
            &[
                "--rrl-rate",
                "5",
                "--cookie-secret-file",
                secret.to_str().expect("UTF-8 path"),
            ],
        )
    };
    let (a, b, c) = (start(&shared), start(&shared), start(&other));
    let server = SocketAddr::new(SERVER_V4.parse().unwrap(), DNS_PORT);
    let client = [1u8, 2, 3, 4, 5, 6, 7, 8];
    let q = |cookie: &[u8], qtype: u16, id: u16| {
        let mut q = with_cookie(cookie);
        q.qname = tests::dns_message::wire_name("demo.t.example.net.");
        q.qtype = qtype;
        q.id = id;
        q.to_wire()
    };
    let send = |bed: &TestBed, queries| send_from_client(bed, server, queries);
    // Answers in full: not dropped, not the slip (TC=1, no records).
    let full = |got: &[Option<Vec<u8>>]| {
        got.iter()
            .flatten()
            .filter(|m| m.len() > 2 && m[2] & 0x02 == 0)
            .count()
    };
    // The server cookie the edge of `bed` gives our client cookie (the last 24 bytes of the
    // answer: its OPT record comes last, with the COOKIE its only option).
    let cookie_from = |bed: &TestBed| {
        let got = send(bed, vec![q(&client, TYPE_A, 1)]);
        let answer = got[0].clone().expect("an answer");
        let n = answer.len();
        assert_eq!(answer[n - 28..n - 24], [0, 10, 0, 24], "{answer:02x?}");
        let cookie = answer[n - 24..].to_vec();
        assert_eq!(cookie[..8], client);
        cookie
    };
    let from_a = cookie_from(&a);
    let from_c = cookie_from(&c);
    assert_ne!(
        from_a[8..],
        from_c[8..],
        "different secrets, different cookies"
    );

    // A's cookie at B: 30 A queries at once, all answered in full by the fast path as proved;
    // 30 TXT queries (passed up), all answered in full by the fallback.
    let before = b.daemon().stats();
    let got = send(&b, (0..30).map(|i| q(&from_a, TYPE_A, 100 + i)).collect());
    assert_eq!(full(&got), 30, "edge B takes edge A's cookie");
    let after = b.daemon().stats();
    assert!(after.delta(&before, Stat::RrlCookie) >= 30, "{after:?}");
    let got = send(&b, (0..30).map(|i| q(&from_a, TYPE_TXT, 200 + i)).collect());
    assert_eq!(full(&got), 30, "edge B's fallback takes edge A's cookie");
    assert!(b.daemon().stats().delta(&after, Stat::PassQtype) >= 30);

    // C's cookie at B: as no valid cookie, limited after the burst (fast path and fallback);
    // B's answers carry a fresh cookie of B's instead.
    let before = b.daemon().stats();
    let got = send(&b, (0..30).map(|i| q(&from_c, TYPE_A, 300 + i)).collect());
    assert!(
        full(&got) < 30,
        "edge B refuses edge C's cookie: {}",
        full(&got)
    );
    let after = b.daemon().stats();
    assert_eq!(after.delta(&before, Stat::RrlCookie), 0, "{after:?}");
    assert!(after.delta(&before, Stat::RrlLimited) > 0, "{after:?}");
    let answer = got[0].as_ref().expect("the first is within the burst");
    assert_eq!(answer[answer.len() - 24..][..8], client);
    assert_ne!(answer[answer.len() - 16..], from_c[8..]);
    let got = send(&b, (0..30).map(|i| q(&from_c, TYPE_TXT, 400 + i)).collect());
    assert!(
        full(&got) < 30,
        "edge B's fallback refuses edge C's cookie: {}",
        full(&got)
    );
    // And C, by the same token, doesn't take A's.
    let got = send(&c, (0..30).map(|i| q(&from_a, TYPE_A, 500 + i)).collect());
    assert!(full(&got) < 30, "edge C refuses edge A's cookie");
    drop((a, b, c));
    let _ = std::fs::remove_file(&shared);
    let _ = std::fs::remove_file(&other);
}

/// Sends `queries` to `server` from `bed`'s client namespace, one at a time, on one socket; the
/// answers (None: none within 300 ms).
fn send_from_client(
    bed: &tests::TestBed,
    server: SocketAddr,
    queries: Vec<Vec<u8>>,
) -> Vec<Option<Vec<u8>>> {
    let ns = bed.client.name().to_owned();
    std::thread::spawn(move || {
        tests::enter_netns(&ns).expect("client namespace");
        let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
        queries
            .iter()
            .map(|m| {
                tests::dns_client::udp_exchange(&sock, server, m, Duration::from_millis(300))
                    .expect("udp")
            })
            .collect()
    })
    .join()
    .expect("client thread")
}
