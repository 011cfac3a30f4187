//! The differential test over the wire: the daemon in driver-mode XDP, a few
//! hundred generated queries sent over UDP (the XDP program answers what it can, the fallback
//! the rest) and the same over TCP (always the fallback), the decoded responses compared. Over
//! UDP an answer may be truncated where TCP's isn't: then only the header, question and OPT are
//! compared, and the TCP answer must indeed be over the UDP limit.
//!
//! The daemon's zone is mirrored in-process, so the oracle (`tests::xdprun::expect`) says how many
//! queries the XDP program must answer and why it passes each of the others; the counters from
//! `/v1/stats` must match exactly.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use dns_common::Stat;
use dns_user::zone::{ZoneSet, ZoneSpec};
use hickory_proto::{
    op::Message,
    rr::{
        rdata::{A, AAAA, CNAME},
        Name, RData, RecordType,
    },
};
use rand::{rngs::StdRng, Rng, SeedableRng};
use tests::{
    dns_client::{tcp_connect, tcp_exchange, udp_exchange},
    dns_message::{
        compare, fast_path_size, name_text, question_bytes, EdnsSpec, QuerySpec, CLASS_IN, TYPE_A,
        TYPE_AAAA, TYPE_CNAME, TYPE_MX, TYPE_NS, TYPE_SOA, TYPE_TXT,
    },
    enter_netns,
    fixture::{n, name_of_len, random_case, to_wire},
    xdprun::{expect, full_answer, udp_limit, Expect},
    TestBed, CLIENT_V4, CLIENT_V6, DNS_PORT, SERVER_V4, SERVER_V6, ZONE,
};

const APEX: &str = "t.example.net.";

/// The records put through the API: (owner, type, TTL, rdata).
fn records() -> Vec<(String, &'static str, u32, Vec<String>)> {
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let mut r = vec![
        ("www".into(), "A", 300, s(&["192.0.2.10", "192.0.2.11"])),
        ("www".into(), "AAAA", 300, s(&["2001:db8::10"])),
        ("a1".into(), "A", 30, s(&["192.0.2.1"])),
        (
            "a8".into(),
            "A",
            60,
            (1..=8).map(|i| format!("192.0.2.{}", 100 + i)).collect(),
        ),
        (
            "v6".into(),
            "AAAA",
            120,
            s(&["2001:db8::20", "2001:db8::21"]),
        ),
        ("alias".into(), "CNAME", 120, s(&["www.t.example.net."])),
        ("out".into(), "CNAME", 120, s(&["www.example.org."])),
        ("chain2".into(), "CNAME", 120, s(&["alias.t.example.net."])),
        (
            "dangling".into(),
            "CNAME",
            120,
            s(&["nothere.t.example.net."]),
        ),
        ("x.ent".into(), "A", 300, s(&["192.0.2.30"])),
        ("a.b.c.d.e.f.g.h".into(), "A", 300, s(&["192.0.2.31"])),
        ("MiXeD".into(), "A", 300, s(&["192.0.2.32"])),
        (
            "big".into(),
            "AAAA",
            300,
            (1..=18).map(|i| format!("2001:db8::1:{i:x}")).collect(),
        ),
    ];
    for len in [95, 96, 97] {
        let name = name_of_len(&format!("l{len}"), APEX, len);
        r.push((name, "A", 300, s(&["192.0.2.40"])));
    }
    r
}

fn owner(name: &str) -> String {
    if name.ends_with(APEX) {
        name.to_owned()
    } else {
        format!("{name}.{APEX}")
    }
}

fn rdata(rtype: &str, text: &str) -> RData {
    match rtype {
        "A" => RData::A(A(text.parse::<Ipv4Addr>().expect("IPv4"))),
        "AAAA" => RData::AAAA(AAAA(text.parse::<Ipv6Addr>().expect("IPv6"))),
        "CNAME" => RData::CNAME(CNAME(n(text))),
        _ => unreachable!("{rtype}"),
    }
}

/// The daemon's zone as `edgedns serve` creates it (default SOA, NS ns1, demo record) plus
/// [`records`].
fn mirror() -> ZoneSet {
    let mut zs = ZoneSet::new();
    let ns = n("ns1.t.example.net.");
    zs.create_zone(ZoneSpec::new(
        n(APEX),
        ns.clone(),
        n("hostmaster.t.example.net."),
        vec![ns],
    ))
    .expect("zone");
    zs.set_rrset(
        &n(APEX),
        &n("demo.t.example.net."),
        RecordType::A,
        60,
        vec![rdata("A", "192.0.2.1")],
    )
    .expect("demo");
    for (name, t, ttl, rds) in records() {
        let rtype: RecordType = t.parse().expect("type");
        let rds = rds.iter().map(|x| rdata(t, x)).collect();
        zs.set_rrset(&n(APEX), &n(&owner(&name)), rtype, ttl, rds)
            .unwrap_or_else(|e| panic!("{name} {t}: {e}"));
    }
    zs
}

/// Generated queries over the mirror's names, names that don't exist and names elsewhere.
fn queries(zs: &ZoneSet, seed: u64, count: usize) -> Vec<(bool, QuerySpec)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let existing: Vec<Name> = zs.zones().flat_map(|z| z.existing_names()).collect();
    let mut missing: Vec<Name> = existing
        .iter()
        .filter_map(|e| e.prepend_label("nx").ok())
        .collect();
    missing.push(n(&name_of_len("miss", APEX, 96)));
    missing.push(n(&name_of_len("miss", APEX, 97)));
    let outside = [n("www.example.org."), n("example.net."), n("net.")];
    let types = [
        TYPE_A, TYPE_A, TYPE_A, TYPE_AAAA, TYPE_AAAA, TYPE_CNAME, TYPE_TXT, TYPE_MX, TYPE_SOA,
        TYPE_NS,
    ];
    let payloads = [0u16, 100, 511, 512, 600, 1232, 1400, 4096];
    (0..count)
        .map(|_| {
            let r = rng.random_range(0..100);
            let name = if r < 60 {
                &existing[rng.random_range(0..existing.len())]
            } else if r < 92 {
                &missing[rng.random_range(0..missing.len())]
            } else {
                &outside[rng.random_range(0..outside.len())]
            };
            let wire = to_wire(name);
            let qname = if rng.random_bool(0.6) {
                random_case(&mut rng, &wire)
            } else {
                wire
            };
            let edns = rng.random_bool(0.6).then(|| {
                let mut e = EdnsSpec::new(
                    payloads[rng.random_range(0..payloads.len())],
                    rng.random_bool(0.5),
                );
                if rng.random_bool(0.3) {
                    e.options.push((10, rng.random::<[u8; 8]>().to_vec()));
                }
                e
            });
            let q = QuerySpec {
                id: rng.random(),
                flags: if rng.random_bool(0.5) { 0x0100 } else { 0 },
                qname,
                qtype: types[rng.random_range(0..types.len())],
                qclass: CLASS_IN,
                edns,
            };
            (rng.random_bool(0.5), q)
        })
        .collect()
}

/// UDP and TCP answers compared: the rule of `tests::dns_message::compare`, except where UDP was
/// truncated and TCP wasn't.
fn compare_udp_tcp(q: &QuerySpec, udp: &[u8], tcp: &[u8]) -> Result<&'static str, String> {
    let (u, t) = (
        Message::from_vec(udp).map_err(|e| format!("UDP answer: {e}"))?,
        Message::from_vec(tcp).map_err(|e| format!("TCP answer: {e}"))?,
    );
    if u.truncated() && !t.truncated() {
        let limit = udp_limit(q, 1232);
        let mut errs = Vec::new();
        if tcp.len() <= limit {
            errs.push(format!(
                "UDP truncated, but the TCP answer ({} bytes) fits {limit}",
                tcp.len()
            ));
        }
        // Same header but for TC and the counts.
        if udp[..2] != tcp[..2] || (udp[2] & !0x02) != tcp[2] || udp[3] != tcp[3] {
            errs.push(format!(
                "headers differ: {:02x?} vs {:02x?}",
                &udp[..4],
                &tcp[..4]
            ));
        }
        if question_bytes(udp) != question_bytes(tcp) {
            errs.push("questions differ".into());
        }
        if u.extensions() != t.extensions() {
            errs.push(format!(
                "OPT differs: {:?} vs {:?}",
                u.extensions(),
                t.extensions()
            ));
        }
        if !u.answers().is_empty() || !u.name_servers().is_empty() {
            errs.push("a truncated answer with records".into());
        }
        return if errs.is_empty() {
            Ok("truncated")
        } else {
            Err(errs.join("; "))
        };
    }
    compare(&q.to_wire(), udp, tcp).map(|()| "same")
}

/// The daemon's cookie secret in this test.
const COOKIE_SECRET: [u8; 16] = *b"wire-diff-secret";

/// A query with a client cookie gets an RFC 9018 server cookie from either path, stamped with
/// the second it was answered in: it is checked against the secret, then its timestamp and hash
/// are blanked so that the rest of the UDP and TCP answers compare byte for byte.
fn check_cookie(q: &QuerySpec, six: bool, msg: &mut [u8]) -> Result<(), String> {
    let Some(client) = q.edns.as_ref().and_then(|e| {
        e.options
            .iter()
            .find(|(code, data)| *code == 10 && data.len() == 8)
            .map(|(_, d)| d.clone())
    }) else {
        return Ok(());
    };
    let n = msg.len();
    if n < 40 || msg[n - 28..n - 24] != [0, 10, 0, 24] || msg[n - 24..n - 16] != client[..] {
        return Err(format!(
            "no server cookie for our client cookie: {msg:02x?}"
        ));
    }
    let ts = u32::from_be_bytes([msg[n - 12], msg[n - 11], msg[n - 10], msg[n - 9]]);
    let addr: IpAddr = if six {
        CLIENT_V6.parse().unwrap()
    } else {
        CLIENT_V4.parse().unwrap()
    };
    let addr = match addr {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    };
    let client: [u8; 8] = client.try_into().expect("8 bytes");
    let want = dns_common::limit::server_cookie(&COOKIE_SECRET, &client, ts, &addr);
    if msg[n - 16..] != want {
        return Err(format!(
            "server cookie {:02x?}, RFC 9018 says {want:02x?}",
            &msg[n - 16..]
        ));
    }
    msg[n - 12..].fill(0);
    Ok(())
}

#[test]
fn wire_udp_and_tcp_answers_agree() {
    let secret_file =
        std::env::temp_dir().join(format!("edgedns-wire-diff-{}", std::process::id()));
    let hex: String = COOKIE_SECRET.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&secret_file, hex).expect("writing the cookie secret");
    let bed = TestBed::with_daemon_on(
        &format!("[::]:{DNS_PORT}"),
        &[
            "--cookie-secret-file",
            secret_file.to_str().expect("UTF-8 path"),
        ],
    );
    let daemon = bed.daemon();
    for (name, t, ttl, rds) in records() {
        let rds: Vec<&str> = rds.iter().map(String::as_str).collect();
        daemon.api_put(ZONE, &owner(&name), t, ttl, &rds);
    }
    let zs = mirror();
    let mut qs = queries(&zs, 0x0e1e_0003, 400);
    // Answers over the UDP limit: the fast path passes them up, the fallback truncates.
    for (six, edns) in [
        (false, None),
        (true, Some(100)),
        (false, Some(512)),
        (true, Some(1232)),
    ] {
        let mut q = QuerySpec::new(0xb16, "BiG.t.example.net.", TYPE_AAAA);
        q.edns = edns.map(|p| EdnsSpec::new(p, six));
        qs.push((six, q));
    }

    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    // Answers that grow the frame by more than XDP's 256 bytes of headroom: on veth the frame
    // may have no tailroom either, and the program then passes them up as no_room.
    let mut may_need_room = 0;
    for (_, q) in &qs {
        let stat = match expect(&zs, q, 1232) {
            Expect::Answered(s) => {
                let full = full_answer(&zs, q);
                let size = fast_path_size(q.question().len(), &full).unwrap_or(0);
                if size > q.to_wire().len() + 200 {
                    may_need_room += 1;
                }
                s
            }
            Expect::Passed(s) => s,
        };
        *want.entry(stat.label().1.to_owned()).or_default() += 1;
    }

    let before = daemon.stats();
    let start = Instant::now();
    let client = bed.client.name().to_owned();
    let sent = qs.clone();
    let udp: Vec<Option<Vec<u8>>> = std::thread::spawn(move || {
        enter_netns(&client).expect("entering the client namespace");
        let v4 = UdpSocket::bind("0.0.0.0:0").expect("bind v4");
        let v6 = UdpSocket::bind("[::]:0").expect("bind v6");
        sent.iter()
            .map(|(six, q)| {
                let (sock, ip): (&UdpSocket, IpAddr) = if *six {
                    (&v6, SERVER_V6.parse().unwrap())
                } else {
                    (&v4, SERVER_V4.parse().unwrap())
                };
                let server = SocketAddr::new(ip, DNS_PORT);
                let bytes = q.to_wire();
                // One retry: a lost datagram is not what this test is about.
                (0..2).find_map(|_| {
                    udp_exchange(sock, server, &bytes, Duration::from_secs(2)).expect("UDP")
                })
            })
            .collect()
    })
    .join()
    .expect("UDP client thread");
    let udp_time = start.elapsed();
    let after = daemon.stats();

    let start = Instant::now();
    let client = bed.client.name().to_owned();
    let sent = qs.clone();
    let tcp: Vec<Vec<u8>> = std::thread::spawn(move || {
        enter_netns(&client).expect("entering the client namespace");
        let timeout = Duration::from_secs(5);
        let mut c4 = tcp_connect(
            SocketAddr::new(SERVER_V4.parse().unwrap(), DNS_PORT),
            timeout,
        )
        .unwrap();
        let mut c6 = tcp_connect(
            SocketAddr::new(SERVER_V6.parse().unwrap(), DNS_PORT),
            timeout,
        )
        .unwrap();
        sent.iter()
            .map(|(six, q)| {
                let c = if *six { &mut c6 } else { &mut c4 };
                tcp_exchange(c, &q.to_wire()).expect("TCP")
            })
            .collect()
    })
    .join()
    .expect("TCP client thread");
    let tcp_time = start.elapsed();

    let mut fails = Vec::new();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (((six, q), u), t) in qs.iter().zip(&udp).zip(&tcp) {
        let what = format!(
            "{} {} ipv6={six} edns={:?}",
            name_text(&q.qname),
            tests::dns_message::type_name(q.qtype),
            q.edns.as_ref().map(|e| (e.payload, e.dnssec_ok))
        );
        let Some(u) = u else {
            fails.push(format!("{what}: no UDP answer"));
            continue;
        };
        let (mut u, mut t) = (u.clone(), t.clone());
        if let Err(e) = check_cookie(q, *six, &mut u).and_then(|()| check_cookie(q, *six, &mut t)) {
            fails.push(format!("{what}: {e}"));
            continue;
        }
        let (u, t) = (&u, &t);
        match compare_udp_tcp(q, u, t) {
            Ok(k) => *kinds.entry(k).or_default() += 1,
            Err(e) => fails.push(format!("{what}:\n{e}")),
        }
    }
    eprintln!("answers over 200 bytes larger than their query: {may_need_room}");
    let mut got: BTreeMap<String, u64> = BTreeMap::new();
    for stat in Stat::ALL {
        let d = after.delta(&before, stat);
        // MLD reports (hop-by-hop header) are counted as ipv6_ext whoever they are for.
        if d > 0 && stat != Stat::PassIpv6Ext {
            got.insert(stat.label().1.to_owned(), d);
        }
    }
    want.retain(|k, _| k != "ipv6_ext");
    let xdp: u64 = ["answer", "nxdomain", "nodata"]
        .iter()
        .map(|k| got.get(*k).copied().unwrap_or(0))
        .sum();
    eprintln!(
        "{} queries: UDP in {udp_time:?}, TCP in {tcp_time:?}; answered by XDP {xdp}; \
         comparisons {kinds:?}; counters {got:?}",
        qs.len()
    );
    assert!(
        fails.is_empty(),
        "{} of {} differ:\n{}",
        fails.len(),
        qs.len(),
        fails.join("\n")
    );
    // A no_room is an answer the fast path couldn't build in this frame: the fallback gave it
    // (and it was compared above). Count it where the oracle put it.
    let no_room = got.remove("no_room").unwrap_or(0);
    assert!(
        no_room <= may_need_room,
        "{no_room} passed for no room, but only {may_need_room} answers need to grow the frame \
         by more than 200 bytes"
    );
    let answered_kinds = ["answer", "nxdomain", "nodata"];
    let sum = |m: &BTreeMap<String, u64>| -> u64 {
        answered_kinds
            .iter()
            .map(|k| m.get(*k).copied().unwrap_or(0))
            .sum()
    };
    assert_eq!(
        sum(&got) + no_room,
        sum(&want),
        "answered by XDP (+ no_room) {got:?} vs the oracle's {want:?}"
    );
    got.retain(|k, _| !answered_kinds.contains(&k.as_str()));
    want.retain(|k, _| !answered_kinds.contains(&k.as_str()));
    assert_eq!(
        got, want,
        "XDP pass counters (left) differ from the oracle's (right)"
    );
    assert!(xdp > qs.len() as u64 / 4, "too few answered by XDP: {xdp}");
}
