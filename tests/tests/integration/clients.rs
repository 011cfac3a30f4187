//! Real clients against the daemon in driver-mode XDP: dig and kdig with
//! `+dnssec`, `+nsid`, `+cookie`, `+norec`, 0x20-style mixed case, over IPv4 and IPv6 (the daemon
//! on `[::]:5300`), and over an 802.1Q VLAN on the veth. Every answer must parse cleanly (no
//! "malformed" or mismatch warnings), arrive at all (offloads are off, so a bad UDP checksum is a
//! drop, which the clients' stack also counts), and come from the path expected: the XDP
//! counters say which.

use std::{net::SocketAddr, time::Duration};

use dns_common::Stat;
use tests::{
    dns_client::{tcp_connect, tcp_exchange},
    dns_message::{compare, QuerySpec, TYPE_A, TYPE_AAAA},
    enter_netns,
    packet::{build_frame, check_response_frame, parse_udp, FrameSpec},
    rawsock::{mac_of, RawSock},
    DnsAnswer, Stats, TestBed, Tool, DNS_PORT, SERVER_V4, SERVER_V6, VLAN_CLIENT_V4,
    VLAN_CLIENT_V6, VLAN_SERVER_V4, VLAN_SERVER_V6, ZONE,
};

/// Output that means the client didn't like the message.
const COMPLAINTS: [&str; 7] = [
    "malformed",
    "mismatch",
    "trailing garbage",
    "extra bytes",
    "bad cookie",
    "badcookie",
    "formerr",
];

/// Puts the records the tests ask about into the default zone.
fn populate(bed: &TestBed) {
    let d = bed.daemon();
    d.api_put(ZONE, "www", "A", 300, &["192.0.2.10", "192.0.2.11"]);
    d.api_put(ZONE, "www", "AAAA", 300, &["2001:db8::10"]);
    d.api_put(ZONE, "alias", "CNAME", 120, &["www.t.example.net."]);
    d.api_put(ZONE, "v4only", "A", 60, &["192.0.2.12"]);
}

/// One query and what must come back.
struct Ask<'a> {
    name: &'a str,
    rtype: &'a str,
    extra: &'a [&'a str],
    status: &'a str,
    /// Answer rdata of type `rtype` (in order).
    rdata: &'a [&'a str],
    /// The counter that must move by one (one of these), and no other.
    path: &'a [Stat],
}

fn ask(
    bed: &TestBed,
    tool: Tool,
    server: &str,
    family: &str,
    a: &Ask,
) -> Result<DnsAnswer, String> {
    let mut extra = vec![family];
    extra.extend_from_slice(a.extra);
    let before = bed.daemon().stats();
    let csum_before = bed.client.udp_csum_errors();
    let got = tool.try_query(&bed.client, server, DNS_PORT, a.name, a.rtype, &extra);
    let after = bed.daemon().stats();
    let what = format!("{tool:?} @{server} {} {} {:?}", a.name, a.rtype, a.extra);
    let got = got.map_err(|e| {
        format!(
            "{what}: no answer ({:?}) — UDP checksum errors at the client {} -> {}:\n{}{}",
            e.elapsed,
            csum_before,
            bed.client.udp_csum_errors(),
            e.output.stdout,
            e.output.stderr
        )
    })?;
    let mut errs = Vec::new();
    let lower = got.raw.to_ascii_lowercase();
    for c in COMPLAINTS {
        if lower.contains(c) {
            errs.push(format!("the client complains ({c})"));
        }
    }
    if got.status != a.status {
        errs.push(format!("status {} (want {})", got.status, a.status));
    }
    if got.rdata(a.rtype) != a.rdata {
        errs.push(format!(
            "answer {:?} (want {:?})",
            got.rdata(a.rtype),
            a.rdata
        ));
    }
    if !got.has_flag("aa") {
        errs.push("not authoritative".into());
    }
    // IPv6 packets with extension headers (MLD reports carry a hop-by-hop header) are counted
    // under ipv6_ext whoever they are for: background noise here.
    let moved: Vec<(Stat, u64)> = Stat::ALL
        .iter()
        .filter(|s| **s != Stat::PassIpv6Ext)
        .map(|s| (*s, after.delta(&before, *s)))
        .filter(|(_, d)| *d > 0)
        .collect();
    if !matches!(moved.as_slice(), [(s, 1)] if a.path.contains(s)) {
        errs.push(format!(
            "XDP counters moved {moved:?} (want one of {:?} by 1)",
            a.path
        ));
    }
    if errs.is_empty() {
        Ok(got)
    } else {
        Err(format!("{what}: {}\n{}", errs.join("; "), got.raw))
    }
}

/// The OPT pseudo-section as dig or kdig prints it: (DO set, our payload size shown).
fn opt_seen(tool: Tool, a: &DnsAnswer) -> (bool, bool) {
    let raw = &a.raw;
    match tool {
        Tool::Dig => (
            raw.lines()
                .any(|l| l.starts_with("; EDNS:") && l.contains("flags: do")),
            raw.contains("udp: 1232"),
        ),
        Tool::Kdig => (
            raw.lines()
                .any(|l| l.contains("Version: 0;") && l.contains("flags: do")),
            raw.contains("UDP size: 1232 B"),
        ),
    }
}

fn run_matrix(bed: &TestBed, servers: &[(&str, &str)]) -> Vec<String> {
    let www = ["192.0.2.10", "192.0.2.11"];
    let asks = [
        Ask {
            name: "www.t.example.net",
            rtype: "A",
            extra: &[],
            status: "NOERROR",
            rdata: &www,
            path: &[Stat::AnsweredAnswer],
        },
        Ask {
            name: "www.t.example.net",
            rtype: "A",
            extra: &["+dnssec"],
            status: "NOERROR",
            rdata: &www,
            path: &[Stat::AnsweredAnswer],
        },
        Ask {
            name: "www.t.example.net",
            rtype: "AAAA",
            extra: &["+nsid"],
            status: "NOERROR",
            rdata: &["2001:db8::10"],
            path: &[Stat::AnsweredAnswer],
        },
        Ask {
            name: "www.t.example.net",
            rtype: "A",
            extra: &["+cookie"],
            status: "NOERROR",
            rdata: &www,
            path: &[Stat::AnsweredAnswer],
        },
        Ask {
            name: "WwW.T.eXaMpLe.NeT",
            rtype: "A",
            extra: &["+cookie", "+dnssec"],
            status: "NOERROR",
            rdata: &www,
            path: &[Stat::AnsweredAnswer],
        },
        Ask {
            name: "alias.t.example.net",
            rtype: "A",
            extra: &["+norec"],
            status: "NOERROR",
            rdata: &www,
            path: &[Stat::AnsweredAnswer],
        },
        Ask {
            name: "ALIAS.t.EXAMPLE.net",
            rtype: "CNAME",
            extra: &["+norec", "+nsid", "+cookie"],
            status: "NOERROR",
            rdata: &["www.t.example.net."],
            path: &[Stat::PassRecord, Stat::AnsweredAnswer],
        },
        Ask {
            name: "nope.t.example.net",
            rtype: "A",
            extra: &["+dnssec"],
            status: "NXDOMAIN",
            rdata: &[],
            path: &[Stat::AnsweredNxdomain],
        },
        Ask {
            name: "v4only.T.example.NET",
            rtype: "AAAA",
            extra: &[],
            status: "NOERROR",
            rdata: &[],
            path: &[Stat::AnsweredNodata],
        },
        Ask {
            name: "www.t.example.net",
            rtype: "TXT",
            extra: &["+dnssec"],
            status: "NOERROR",
            rdata: &[],
            path: &[Stat::PassQtype],
        },
    ];
    let mut fails = Vec::new();
    let mut n = 0;
    for (server, family) in servers {
        for tool in [Tool::Dig, Tool::Kdig] {
            for a in &asks {
                n += 1;
                match ask(bed, tool, server, family, a) {
                    Err(e) => fails.push(e),
                    Ok(got) => {
                        let dnssec = a.extra.contains(&"+dnssec");
                        let (do_bit, payload) = opt_seen(tool, &got);
                        if do_bit != dnssec {
                            fails.push(format!(
                                "{tool:?} @{server} {} {:?}: DO {do_bit} (want {dnssec})\n{}",
                                a.name, a.extra, got.raw
                            ));
                        }
                        // dig sends EDNS by default; kdig only for an option that needs it.
                        let edns = tool == Tool::Dig
                            || a.extra
                                .iter()
                                .any(|x| ["+dnssec", "+nsid", "+cookie"].contains(x));
                        if edns && !payload {
                            fails.push(format!(
                                "{tool:?} @{server} {} {:?}: no OPT with 1232\n{}",
                                a.name, a.extra, got.raw
                            ));
                        }
                        // 0x20: the question is echoed byte for byte and the owner points at it.
                        // (kdig lowercases the name it sends; dig sends it as given.)
                        if tool == Tool::Dig
                            && a.name.chars().any(|c| c.is_ascii_uppercase())
                            && a.rtype == "A"
                        {
                            let owner = got.answer.first().map(|r| r.name.as_str());
                            if owner != Some(&format!("{}.", a.name)) {
                                fails.push(format!(
                                    "{tool:?} @{server}: owner {owner:?} is not {}.\n{}",
                                    a.name, got.raw
                                ));
                            }
                        }
                        if a.extra.contains(&"+norec") && got.has_flag("rd") {
                            fails.push(format!(
                                "{tool:?} @{server}: RD set without +norec\n{}",
                                got.raw
                            ));
                        }
                        if !a.extra.contains(&"+norec") && !got.has_flag("rd") {
                            fails.push(format!("{tool:?} @{server}: RD not copied\n{}", got.raw));
                        }
                    }
                }
            }
        }
    }
    eprintln!("{n} dig/kdig queries, {} failures", fails.len());
    fails
}

fn answered(s: &Stats) -> u64 {
    s.get(Stat::AnsweredAnswer) + s.get(Stat::AnsweredNxdomain) + s.get(Stat::AnsweredNodata)
}

#[test]
fn clients_dig_and_kdig_over_ipv4_and_ipv6() {
    let bed = TestBed::with_daemon_on(&format!("[::]:{DNS_PORT}"), &[]);
    populate(&bed);
    let before = bed.daemon().stats();
    let csum = bed.client.udp_csum_errors();
    let fails = run_matrix(&bed, &[(SERVER_V4, "-4"), (SERVER_V6, "-6")]);
    let after = bed.daemon().stats();
    eprintln!(
        "XDP answered {} queries; UDP checksum errors at the client: {csum} -> {}",
        answered(&after) - answered(&before),
        bed.client.udp_csum_errors()
    );
    assert!(fails.is_empty(), "{}", fails.join("\n\n"));
    assert_eq!(
        bed.client.udp_csum_errors(),
        csum,
        "the client dropped datagrams for their checksum"
    );
}

#[test]
fn clients_over_a_vlan() {
    let bed = TestBed::with_daemon_on(&format!("[::]:{DNS_PORT}"), &[]);
    populate(&bed);
    // Tagged frames from a raw socket on the client's veth: needs no VLAN device, so it runs on
    // any kernel. XDP on the server's veth must answer them, tag kept.
    tagged_frames_are_answered_tagged(&bed);

    // dig and kdig over VLAN sub-interfaces: XDP on the parent for what it can, the fallback
    // through the VLAN interface for the rest.
    let vlan = match bed.try_add_vlan(100) {
        Ok(v) => v,
        Err(e) => {
            eprintln!(
                "SKIPPED dig/kdig over VLAN devices: this kernel can't make one ({e}); \
                 tagged frames were checked with a raw socket instead"
            );
            return;
        }
    };
    let rx_before = bed.client.rx_packets(&vlan.client_if);
    let csum = bed.client.udp_csum_errors();
    let fails = run_matrix(&bed, &[(VLAN_SERVER_V4, "-4"), (VLAN_SERVER_V6, "-6")]);
    let rx_after = bed.client.rx_packets(&vlan.client_if);
    eprintln!(
        "VLAN {}: {} packets received on {}",
        vlan.id,
        rx_after - rx_before,
        vlan.client_if
    );
    assert!(fails.is_empty(), "{}", fails.join("\n\n"));
    // Every answer came in on the VLAN interface, so tagged (40 queries, plus ARP/ND).
    assert!(rx_after - rx_before >= 40, "{rx_before} -> {rx_after}");
    assert_eq!(
        bed.client.udp_csum_errors(),
        csum,
        "the client dropped datagrams for their checksum"
    );
    // And the untagged path still works next to it.
    let a = bed.dig("www.t.example.net", "A");
    assert_eq!(a.rdata("A"), ["192.0.2.10", "192.0.2.11"], "{}", a.raw);
}

/// Sends 802.1Q-tagged queries (VLAN 100, with and without a priority) from a raw socket on the
/// client's veth to the daemon's XDP program on the server's veth; each must come back tagged,
/// with valid headers and checksums, and decode to what the fallback answers over TCP.
fn tagged_frames_are_answered_tagged(bed: &TestBed) {
    let server_mac = mac_of(&bed.server, &bed.veth.server_if);
    let client_mac = mac_of(&bed.client, &bed.veth.client_if);
    let queries = [
        QuerySpec::new(1, "www.t.example.net.", TYPE_A).with_edns(1232, true),
        QuerySpec::new(2, "www.t.example.net.", TYPE_AAAA),
        QuerySpec::new(3, "WwW.t.EXAMPLE.net.", TYPE_A).with_edns(512, false),
        QuerySpec::new(4, "nope.t.example.net.", TYPE_A).with_edns(4096, true),
        QuerySpec::new(5, "v4only.t.example.net.", TYPE_AAAA),
        QuerySpec::new(6, "alias.t.example.net.", TYPE_A).with_edns(1400, false),
    ];
    let mut frames = Vec::new();
    for (i, q) in queries.iter().enumerate() {
        for (j, (v6, tci)) in [
            (false, 100u16),
            (true, 100),
            (false, 0x6064),
            (true, 0xa064),
        ]
        .into_iter()
        .enumerate()
        {
            let (src_ip, dst_ip) = if v6 {
                (
                    VLAN_CLIENT_V6.parse().unwrap(),
                    VLAN_SERVER_V6.parse().unwrap(),
                )
            } else {
                (
                    VLAN_CLIENT_V4.parse().unwrap(),
                    VLAN_SERVER_V4.parse().unwrap(),
                )
            };
            let spec = FrameSpec {
                src_mac: client_mac,
                dst_mac: server_mac,
                vlan: Some(tci),
                src_ip,
                dst_ip,
                sport: 20000 + (i * 8 + j) as u16,
                dport: DNS_PORT,
                ip_id: 7,
                tos: 0,
                ttl: 64,
                v4_no_udp_csum: false,
                padding: 0,
            };
            let dns = q.to_wire();
            frames.push((spec.sport, dns.clone(), build_frame(&spec, &dns)));
        }
    }
    let before = bed.daemon().stats();
    let (client_ns, client_if) = (bed.client.name().to_owned(), bed.veth.client_if.clone());
    let sent = frames.clone();
    let results = std::thread::spawn(move || {
        enter_netns(&client_ns).expect("entering the client namespace");
        let sock = RawSock::open(&client_if).expect("raw socket on the client veth");
        let server = SocketAddr::new(SERVER_V4.parse().unwrap(), DNS_PORT);
        let mut tcp = tcp_connect(server, Duration::from_secs(5)).expect("TCP to the daemon");
        sent.iter()
            .map(|(sport, dns, frame)| {
                sock.send(frame).expect("send the tagged frame");
                let sport = *sport;
                let resp = sock.recv(Duration::from_secs(2), |f| {
                    parse_udp(f).is_some_and(|p| p.sport == DNS_PORT && p.dport == sport)
                });
                let reference = tcp_exchange(&mut tcp, dns).expect("TCP answer");
                (resp, reference)
            })
            .collect::<Vec<_>>()
    })
    .join()
    .expect("raw socket thread");
    let after = bed.daemon().stats();
    let mut fails = Vec::new();
    for ((_, dns, frame), (resp, reference)) in frames.iter().zip(&results) {
        let what = format!("{:?}", parse_udp(frame).map(|p| (p.vlan, p.dst_ip)));
        let Some(resp) = resp else {
            fails.push(format!("{what}: no answer"));
            continue;
        };
        match check_response_frame(frame, resp) {
            Err(e) => fails.push(format!("{what}: {e}")),
            Ok(payload) => {
                if let Err(e) = compare(dns, &payload, reference) {
                    fails.push(format!("{what}: differs from the fallback over TCP: {e}"));
                }
            }
        }
    }
    let answered = answered(&after) - answered(&before);
    eprintln!(
        "tagged frames: {} sent, {} answered by XDP, {} failures",
        frames.len(),
        answered,
        fails.len()
    );
    assert!(fails.is_empty(), "{}", fails.join("\n"));
    assert_eq!(answered, frames.len() as u64, "not all answered by XDP");
}

/// `serve --nsid`: `dig +nsid` and `kdig +nsid` get the server's identifier (RFC 5001) from the
/// fallback, the fast path passing such queries up; the same query without `+nsid` is still
/// answered at XDP.
#[test]
fn nsid_is_answered_when_configured() {
    let listen = format!("{SERVER_V4}:{DNS_PORT}");
    let bed = TestBed::with_daemon_on(&listen, &["--nsid", "edge-7.example"]);
    populate(&bed);
    let www = ["192.0.2.10", "192.0.2.11"];
    let mut failures = Vec::new();
    for tool in [Tool::Dig, Tool::Kdig] {
        let asked = Ask {
            name: "www.t.example.net",
            rtype: "A",
            extra: &["+nsid"],
            status: "NOERROR",
            rdata: &www,
            path: &[Stat::PassNsid],
        };
        match ask(&bed, tool, SERVER_V4, "-4", &asked) {
            // dig prints `; NSID: ... ("edge-7.example")`, kdig `;; NSID: ... "edge-7.example"`.
            Ok(got) if got.raw.contains("\"edge-7.example\"") => {}
            Ok(got) => failures.push(format!("{tool:?}: no NSID in\n{}", got.raw)),
            Err(e) => failures.push(e),
        }
        let plain = Ask {
            extra: &["+edns"],
            path: &[Stat::AnsweredAnswer],
            ..asked
        };
        match ask(&bed, tool, SERVER_V4, "-4", &plain) {
            Ok(got) if !got.raw.contains("edge-7.example") => {}
            Ok(got) => failures.push(format!("{tool:?}: NSID not asked for, given\n{}", got.raw)),
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
