//! The XDP program itself, loaded (so verified) but not attached, run with `BPF_PROG_TEST_RUN` on
//! crafted frames over maps filled by the daemon's compiler.
//!
//! - `xdp_differential_*`: thousands of generated queries; every XDP_TX must be a well-formed
//!   frame whose DNS payload decodes to exactly what the fallback answers, every XDP_PASS must
//!   count the reason the oracle (`tests::xdprun::expect`) gives, and every query the fast path
//!   can answer must be answered.
//! - `xdp_hostile_*`: malformed and hostile frames: never a wrong answer, never a drop or abort.
//! - `xdp_checksums_*`: a datagram the kernel would drop for its checksums is not answered.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use dns_common::{Stat, OPT_LOOPBACK, OPT_MISSES_UNTIL, OPT_PASS_NSID, OPT_STALE_MISSES};
use dns_user::zone::ZoneSet;
use rand::{Rng, SeedableRng};
use tests::{
    dns_message::{
        header, name_text, opt_rr, wire_name, QuerySpec, CLASS_CH, FLAG_QR, FLAG_RD, FLAG_TC,
        OPCODE_NOTIFY, OPCODE_UPDATE, TYPE_A, TYPE_AAAA,
    },
    fixture::{self, Gen, EXAMPLE},
    packet::{build_frame, set_ipv4_checksum, udp_checksum_ok, FrameSpec},
    require_root,
    xdprun::{
        action_name, expect, fallback_udp, martian, Expect, Run, XdpRunner, XDP_PASS, XDP_TX,
    },
};

const PORT: u16 = 5300;
const PAYLOAD: u16 = 1232;

fn any_listen() -> SocketAddr {
    SocketAddr::new(IpAddr::from([0u8; 16]), PORT)
}

fn setup() -> (XdpRunner, ZoneSet) {
    require_root();
    let zones = fixture::zones();
    let mut runner = XdpRunner::load(any_listen(), PAYLOAD);
    runner.sync(&zones);
    (runner, zones)
}

/// A frame to a fixed server, for hand-made cases.
fn spec(v6: bool, vlan: Option<u16>) -> FrameSpec {
    FrameSpec {
        src_mac: [0x02, 0, 0, 0, 0, 0x02],
        dst_mac: [0x02, 0, 0, 0, 0, 0x01],
        vlan,
        src_ip: if v6 {
            "fd00:211::2".parse().unwrap()
        } else {
            "10.211.0.2".parse().unwrap()
        },
        dst_ip: if v6 {
            "fd00:211::1".parse().unwrap()
        } else {
            "10.211.0.1".parse().unwrap()
        },
        sport: 40000,
        dport: PORT,
        ip_id: 0x4242,
        tos: 0,
        ttl: 64,
        v4_no_udp_csum: false,
        padding: 0,
    }
}

/// Checks one XDP_TX against the fallback: frame headers, then the DNS comparison.
fn check_tx(zones: &ZoneSet, frame: &[u8], run: &Run) -> Result<Vec<u8>, String> {
    tests::fuzz::check_tx(zones, frame, &run.out)
}

fn describe(q: &QuerySpec, f: &FrameSpec) -> String {
    format!(
        "{} {} flags={:04x} edns={:?} v6={} vlan={:?}",
        name_text(&q.qname),
        tests::dns_message::type_name(q.qtype),
        q.flags,
        q.edns
            .as_ref()
            .map(|e| (e.payload, e.dnssec_ok, e.options.len())),
        f.v6(),
        f.vlan
    )
}

/// Failures, grouped by kind, at most a few examples each.
#[derive(Default)]
struct Failures {
    by_kind: BTreeMap<String, (usize, Vec<String>)>,
}

impl Failures {
    fn add(&mut self, kind: impl Into<String>, detail: String) {
        let e = self.by_kind.entry(kind.into()).or_default();
        e.0 += 1;
        if e.1.len() < 4 {
            e.1.push(detail);
        }
    }

    fn total(&self) -> usize {
        self.by_kind.values().map(|(n, _)| n).sum()
    }

    fn report(&self) -> String {
        let mut s = String::new();
        for (kind, (n, ex)) in &self.by_kind {
            let _ = writeln!(s, "== {n} x {kind}");
            for e in ex {
                let _ = writeln!(s, "   {e}");
            }
        }
        s
    }
}

/// Runs generated queries through the program and checks each against the oracle and the
/// fallback. Returns the counts by outcome.
fn differential(seed: u64, count: usize) -> BTreeMap<String, usize> {
    let (mut runner, zones) = setup();
    let mut gen = Gen::new(seed, &zones, PORT);
    let mut fails = Failures::default();
    let mut outcomes: BTreeMap<String, usize> = BTreeMap::new();
    let start = Instant::now();
    for _ in 0..count {
        let q = gen.query();
        let f = gen.frame();
        let dns = q.to_wire();
        let frame = build_frame(&f, &dns);
        let want = if martian(&frame) {
            Expect::Passed(Stat::PassMartian)
        } else {
            expect(&zones, &q, PAYLOAD)
        };
        let run = runner.run(&frame).expect("test_run");
        let what = describe(&q, &f);
        let got = match (run.action, run.single()) {
            (XDP_TX, Some(s)) => Expect::Answered(s),
            (XDP_PASS, Some(s)) => Expect::Passed(s),
            (a, _) => {
                fails.add(
                    format!("{} with counters {:?}", action_name(a), run.counted),
                    what,
                );
                continue;
            }
        };
        *outcomes.entry(format!("{got:?}")).or_default() += 1;
        if got != want {
            fails.add(format!("oracle {want:?}, program {got:?}"), what.clone());
        }
        if run.action == XDP_TX {
            match check_tx(&zones, &frame, &run) {
                Ok(payload) => {
                    // The program writes exactly the bytes the records take, no more.
                    let full = tests::xdprun::full_answer(&zones, &q);
                    let size = tests::dns_message::fast_path_size(q.question().len(), &full);
                    if size != Some(payload.len()) {
                        fails.add(
                            "response size differs from the model",
                            format!("{what}: {} bytes, model {size:?}", payload.len()),
                        );
                    }
                }
                Err(e) => fails.add("XDP_TX differs from the fallback", format!("{what}:\n{e}")),
            }
        }
    }
    let answered: usize = outcomes
        .iter()
        .filter(|(k, _)| k.starts_with("Answered"))
        .map(|(_, v)| v)
        .sum();
    eprintln!(
        "differential seed {seed}: {count} queries in {:?}; answered by XDP: {answered}; outcomes: {outcomes:#?}",
        start.elapsed()
    );
    assert!(
        fails.total() == 0,
        "{} failures out of {count}:\n{}",
        fails.total(),
        fails.report()
    );
    outcomes
}

/// The program loads, so the verifier accepted it; say how much work that was.
#[test]
fn xdp_program_verifies() {
    let (mut runner, _) = setup();
    let n = runner.verified_insns();
    eprintln!("verified_insns: {n:?}");
    assert!(n.is_some_and(|n| n > 0), "no verified_insns: {n:?}");
}

#[test]
fn xdp_differential_generated_queries() {
    let outcomes = differential(0x5eed_0003, 4000);
    // The generator must exercise every answer kind and the main pass reasons.
    for k in [
        "Answered(AnsweredAnswer)",
        "Answered(AnsweredNxdomain)",
        "Answered(AnsweredNodata)",
        "Passed(PassQtype)",
        "Passed(PassRecord)",
        "Passed(PassLongName)",
        "Passed(PassNoZone)",
        "Passed(PassNegative)",
        "Passed(PassTooBig)",
    ] {
        assert!(
            outcomes.get(k).copied().unwrap_or(0) > 0,
            "no {k}: {outcomes:?}"
        );
    }
}

#[test]
fn xdp_differential_second_seed() {
    differential(0xd1ff_0002, 2000);
}

// ---------------------------------------------------------------------------------------------
// Malformed and hostile frames

/// What a hand-made frame must do: pass up counted under a reason (`Some`) or uncounted (`None`:
/// not ours).
struct Case {
    what: String,
    frame: Vec<u8>,
    want: Option<Stat>,
}

fn case(what: impl Into<String>, frame: Vec<u8>, want: Option<Stat>) -> Case {
    Case {
        what: what.into(),
        frame,
        want,
    }
}

/// A well-formed query for an existing name, as DNS bytes.
fn good_dns() -> Vec<u8> {
    QuerySpec::new(0x1234, "a1.example.com.", TYPE_A).to_wire()
}

/// DNS bytes: a header and then `rest` as is.
fn raw_dns(flags: u16, qd: u16, an: u16, ns: u16, ar: u16, rest: &[u8]) -> Vec<u8> {
    let mut m = header(0x2222, flags, qd, an, ns, ar);
    m.extend_from_slice(rest);
    m
}

fn question(name: &[u8], qtype: u16, qclass: u16) -> Vec<u8> {
    let mut q = name.to_vec();
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&qclass.to_be_bytes());
    q
}

/// Recomputes the IPv4 header checksum of `frame` (after a test edited the header).
fn fix_ipv4_csum(frame: &mut [u8], l3: usize) {
    let ihl = usize::from(frame[l3] & 0x0f) * 4;
    set_ipv4_checksum(&mut frame[l3..l3 + ihl]);
}

/// The DNS-level hostile cases, each over IPv4 and IPv6, tagged and not.
fn dns_cases() -> Vec<(String, Vec<u8>, Stat)> {
    let a1 = wire_name("a1.example.com.");
    let q_a1 = question(&a1, TYPE_A, 1);
    let mut with_opt = |opt: Vec<u8>| {
        let mut r = q_a1.clone();
        r.extend_from_slice(&opt);
        r
    };
    let opt_ok = opt_rr(1232, 0, false, &[]);
    let long_label_name = {
        // 64 one-byte labels: 129 bytes.
        let mut n = Vec::new();
        for _ in 0..64 {
            n.extend_from_slice(b"\x01x");
        }
        n.extend_from_slice(&wire_name(EXAMPLE));
        n
    };
    let over_255 = {
        let mut n = Vec::new();
        for _ in 0..5 {
            n.push(63);
            n.extend_from_slice(&[b'a'; 63]);
        }
        n.push(0);
        n
    };
    let mut cases = vec![
        (
            "DNS header only".into(),
            raw_dns(FLAG_RD, 1, 0, 0, 0, &[]),
            Stat::PassMalformed,
        ),
        (
            "DNS header cut at 7 bytes".into(),
            good_dns()[..7].to_vec(),
            Stat::PassMalformed,
        ),
        (
            "question cut after the name".into(),
            raw_dns(0, 1, 0, 0, 0, &a1),
            Stat::PassMalformed,
        ),
        (
            "question cut in the type".into(),
            raw_dns(0, 1, 0, 0, 0, &q_a1[..a1.len() + 1]),
            Stat::PassMalformed,
        ),
        (
            "label length past the end".into(),
            raw_dns(0, 1, 0, 0, 0, b"\x05ab\x00\x01\x00\x01"),
            Stat::PassMalformed,
        ),
        (
            "label lengths past the end, over stale bytes".into(),
            raw_dns(0, 1, 0, 0, 0, b"\x01a\x01b\x01"),
            Stat::PassMalformed,
        ),
        (
            "label length past the end, long".into(),
            raw_dns(0, 1, 0, 0, 0, &[&b"\x02a1\x3f"[..], &[b'z'; 10]].concat()),
            Stat::PassMalformed,
        ),
        (
            "compression pointer as the name".into(),
            raw_dns(0, 1, 0, 0, 0, &question(b"\xc0\x0c", TYPE_A, 1)),
            Stat::PassMalformed,
        ),
        (
            "compression pointer after a label".into(),
            raw_dns(0, 1, 0, 0, 0, &question(b"\x02a1\xc0\x0c", TYPE_A, 1)),
            Stat::PassMalformed,
        ),
        (
            "extended label type 0x40".into(),
            raw_dns(0, 1, 0, 0, 0, &question(b"\x41a\x00", TYPE_A, 1)),
            Stat::PassMalformed,
        ),
        (
            "64-label name".into(),
            raw_dns(0, 1, 0, 0, 0, &question(&long_label_name, TYPE_A, 1)),
            Stat::PassLongName,
        ),
        (
            "name over 255 bytes".into(),
            raw_dns(0, 1, 0, 0, 0, &question(&over_255, TYPE_A, 1)),
            Stat::PassLongName,
        ),
        (
            "QDCOUNT 0".into(),
            raw_dns(0, 0, 0, 0, 0, &q_a1),
            Stat::PassQdcount,
        ),
        (
            "QDCOUNT 2".into(),
            raw_dns(0, 2, 0, 0, 0, &[q_a1.clone(), q_a1.clone()].concat()),
            Stat::PassQdcount,
        ),
        (
            "QR set".into(),
            raw_dns(FLAG_QR, 1, 0, 0, 0, &q_a1),
            Stat::PassQr,
        ),
        (
            "TC set".into(),
            raw_dns(FLAG_TC, 1, 0, 0, 0, &q_a1),
            Stat::PassTc,
        ),
        (
            "opcode NOTIFY".into(),
            raw_dns(OPCODE_NOTIFY, 1, 0, 0, 0, &q_a1),
            Stat::PassOpcode,
        ),
        (
            "opcode UPDATE".into(),
            raw_dns(OPCODE_UPDATE, 1, 0, 0, 0, &q_a1),
            Stat::PassOpcode,
        ),
        (
            "opcode 15".into(),
            raw_dns(15 << 11, 1, 0, 0, 0, &q_a1),
            Stat::PassOpcode,
        ),
        (
            "ANCOUNT 1".into(),
            raw_dns(0, 1, 1, 0, 0, &with_opt(opt_ok.clone())),
            Stat::PassCounts,
        ),
        (
            "NSCOUNT 1".into(),
            raw_dns(0, 1, 0, 1, 0, &with_opt(opt_ok.clone())),
            Stat::PassCounts,
        ),
        (
            "two additional records".into(),
            raw_dns(
                0,
                1,
                0,
                0,
                2,
                &with_opt([opt_ok.clone(), opt_ok.clone()].concat()),
            ),
            Stat::PassCounts,
        ),
        (
            "additional record not an OPT".into(),
            raw_dns(
                0,
                1,
                0,
                0,
                1,
                &with_opt({
                    let mut r = opt_ok.clone();
                    r[2] = 16; // TXT at the root
                    r
                }),
            ),
            Stat::PassCounts,
        ),
        (
            "OPT owner not the root".into(),
            raw_dns(
                0,
                1,
                0,
                0,
                1,
                &with_opt([&b"\xc0\x0c"[..], &opt_ok[1..]].concat()),
            ),
            Stat::PassCounts,
        ),
        (
            "OPT version 1".into(),
            raw_dns(0, 1, 0, 0, 1, &with_opt(opt_rr(1232, 1, true, &[]))),
            Stat::PassEdnsVersion,
        ),
        (
            "OPT version 255".into(),
            raw_dns(0, 1, 0, 0, 1, &with_opt(opt_rr(1232, 255, false, &[]))),
            Stat::PassEdnsVersion,
        ),
        (
            "OPT rdlen past the end".into(),
            raw_dns(
                0,
                1,
                0,
                0,
                1,
                &with_opt({
                    let mut r = opt_rr(1232, 0, false, &[0, 10, 0, 8]);
                    r[9..11].copy_from_slice(&40u16.to_be_bytes());
                    r
                }),
            ),
            Stat::PassMalformed,
        ),
        // RFC 6891 6.1.2: options are {code, length, data}; the fallback answers FORMERR when
        // they don't tile the RDATA, so the fast path must not answer NOERROR.
        (
            "OPT option longer than the RDATA".into(),
            raw_dns(
                0,
                1,
                0,
                0,
                1,
                &with_opt(opt_rr(1232, 0, false, &[0, 10, 0, 8, 1, 2, 3])),
            ),
            Stat::PassMalformed,
        ),
        (
            "OPT RDATA of 2 bytes".into(),
            raw_dns(0, 1, 0, 0, 1, &with_opt(opt_rr(1232, 0, false, &[0, 10]))),
            Stat::PassMalformed,
        ),
        (
            "OPT cut in its fixed part".into(),
            raw_dns(0, 1, 0, 0, 1, &with_opt(opt_ok[..7].to_vec())),
            Stat::PassMalformed,
        ),
        (
            "ARCOUNT 1 without a record".into(),
            raw_dns(0, 1, 0, 0, 1, &q_a1),
            Stat::PassMalformed,
        ),
        (
            "trailing bytes after the question".into(),
            raw_dns(0, 1, 0, 0, 0, &[q_a1.clone(), vec![0; 3]].concat()),
            Stat::PassMalformed,
        ),
        (
            "trailing bytes after the OPT".into(),
            raw_dns(
                0,
                1,
                0,
                0,
                1,
                &with_opt([opt_ok.clone(), vec![0; 2]].concat()),
            ),
            Stat::PassMalformed,
        ),
        (
            "class CH".into(),
            raw_dns(0, 1, 0, 0, 0, &question(&a1, TYPE_A, CLASS_CH)),
            Stat::PassClass,
        ),
        (
            "class ANY".into(),
            raw_dns(0, 1, 0, 0, 0, &question(&a1, TYPE_A, 255)),
            Stat::PassClass,
        ),
        (
            "qtype OPT".into(),
            raw_dns(0, 1, 0, 0, 0, &question(&a1, 41, 1)),
            Stat::PassQtype,
        ),
        (
            "qtype AXFR".into(),
            raw_dns(0, 1, 0, 0, 0, &question(&a1, 252, 1)),
            Stat::PassQtype,
        ),
        (
            "DNS payload over 512 bytes".into(),
            raw_dns(
                0,
                1,
                0,
                0,
                1,
                &with_opt(opt_rr(
                    1232,
                    0,
                    false,
                    &[&[0u8, 12, 1, 244][..], &[0; 500]].concat(),
                )),
            ),
            Stat::PassTooBig,
        ),
    ];
    let _ = &mut with_opt;
    cases.push((
        "root name".into(),
        raw_dns(0, 1, 0, 0, 0, &question(b"\x00", TYPE_A, 1)),
        Stat::PassNoZone,
    ));
    cases
}

/// A query whose name is 64 labels of one byte.
fn stale_dns() -> Vec<u8> {
    let mut name = Vec::new();
    for _ in 0..64 {
        name.extend_from_slice(b"\x01x");
    }
    name.extend_from_slice(&wire_name(EXAMPLE));
    raw_dns(0, 1, 0, 0, 0, &question(&name, TYPE_A, 1))
}

/// Runs one case; returns a failure description if the program did anything but what `want`
/// says, or answered wrongly.
fn run_case(runner: &mut XdpRunner, zones: &ZoneSet, c: &Case) -> Option<String> {
    let run = match runner.run(&c.frame) {
        Ok(r) => r,
        Err(e) if c.frame.len() < 14 => {
            // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header: the program can
            // never see one.
            let _ = e;
            return None;
        }
        Err(e) => return Some(format!("{}: test_run failed: {e}", c.what)),
    };
    let counted = run.counted.iter().map(|(s, _)| *s).collect::<Vec<_>>();
    match run.action {
        XDP_PASS => {
            let want: Vec<Stat> = c.want.into_iter().collect();
            (counted != want || run.single().is_none() && !want.is_empty()).then(|| {
                format!(
                    "{}: XDP_PASS counted {:?}, want {:?}",
                    c.what, run.counted, c.want
                )
            })
        }
        XDP_TX => check_tx(zones, &c.frame, &run)
            .err()
            .map(|e| format!("{}: answered (want {:?}), and wrongly: {e}", c.what, c.want))
            .or_else(|| {
                Some(format!(
                    "{}: answered correctly, but the oracle said {:?} (counted {:?})",
                    c.what, c.want, run.counted
                ))
            }),
        a => Some(format!(
            "{}: {} (counted {:?})",
            c.what,
            action_name(a),
            run.counted
        )),
    }
}

#[test]
fn xdp_hostile_frames_are_passed_with_their_reason() {
    let (mut runner, zones) = setup();
    let mut cases = Vec::new();
    for v6 in [false, true] {
        for vlan in [None, Some(100)] {
            let s = spec(v6, vlan);
            let tag = format!("v6={v6} vlan={vlan:?}");
            let good = build_frame(&s, &good_dns());
            // Sanity: the good query is answered (the cases below differ from it in one way).
            cases.push(case(
                format!("{tag} good query (answered)"),
                good.clone(),
                Some(Stat::AnsweredAnswer),
            ));
            for (what, dns, stat) in dns_cases() {
                cases.push(case(
                    format!("{tag} {what}"),
                    build_frame(&s, &dns),
                    Some(stat),
                ));
            }
            let (l3, l4) = (s.l3(), s.l4());
            // Truncated at every byte through the UDP header: not ours (headers incomplete) or
            // malformed (lengths point past the frame).
            for cut in 0..good.len() {
                let want = if cut < l4 + 4 {
                    None
                } else {
                    Some(Stat::PassMalformed)
                };
                cases.push(case(
                    format!("{tag} frame cut at {cut}"),
                    good[..cut].to_vec(),
                    want,
                ));
            }
            // UDP length larger than the IP payload, smaller than a header, IP length beyond the
            // frame.
            let mut f = good.clone();
            let ul = u16::from_be_bytes([f[l4 + 4], f[l4 + 5]]);
            f[l4 + 4..l4 + 6].copy_from_slice(&(ul + 1).to_be_bytes());
            cases.push(case(
                format!("{tag} UDP length > IP payload"),
                f,
                Some(Stat::PassMalformed),
            ));
            let mut f = good.clone();
            f[l4 + 4..l4 + 6].copy_from_slice(&7u16.to_be_bytes());
            cases.push(case(
                format!("{tag} UDP length 7"),
                f,
                Some(Stat::PassMalformed),
            ));
            let mut f = good.clone();
            f[l4 + 4..l4 + 6].copy_from_slice(&(8 + 12u16).to_be_bytes());
            cases.push(case(
                format!("{tag} UDP length cuts the question"),
                f,
                Some(Stat::PassMalformed),
            ));
            let mut f = good.clone();
            if v6 {
                let pl = u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]);
                f[l3 + 4..l3 + 6].copy_from_slice(&(pl + 20).to_be_bytes());
            } else {
                let tl = u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]);
                f[l3 + 2..l3 + 4].copy_from_slice(&(tl + 20).to_be_bytes());
                fix_ipv4_csum(&mut f, l3);
            }
            cases.push(case(
                format!("{tag} IP length > frame"),
                f,
                Some(Stat::PassMalformed),
            ));
            // Not ours: another port, another protocol, another ethertype.
            let mut f = good.clone();
            f[l4 + 2..l4 + 4].copy_from_slice(&53u16.to_be_bytes());
            cases.push(case(format!("{tag} other port"), f, None));
            let mut f = good.clone();
            f[if v6 { l3 + 6 } else { l3 + 9 }] = 6;
            if !v6 {
                fix_ipv4_csum(&mut f, l3);
            }
            cases.push(case(format!("{tag} TCP"), f, None));
            if v6 {
                // Hop-by-hop options before UDP; and a fragment header.
                for (nh, what) in [
                    (0u8, "hop-by-hop"),
                    (44, "fragment"),
                    (60, "destination options"),
                ] {
                    let mut f = good[..l3 + 40].to_vec();
                    f[l3 + 6] = nh;
                    let pl = u16::from_be_bytes([f[l3 + 4], f[l3 + 5]]) + 8;
                    f[l3 + 4..l3 + 6].copy_from_slice(&pl.to_be_bytes());
                    let mut ext = [0u8; 8];
                    ext[0] = 17;
                    if nh == 0 || nh == 60 {
                        ext[2] = 1; // PadN
                        ext[3] = 4;
                    }
                    f.extend_from_slice(&ext);
                    f.extend_from_slice(&good[l4..]);
                    cases.push(case(
                        format!("{tag} IPv6 {what} header"),
                        f,
                        Some(Stat::PassIpv6Ext),
                    ));
                }
                let mut f = good.clone();
                f[l3 + 4] = 0;
                f[l3 + 5] = 0;
                cases.push(case(
                    format!("{tag} IPv6 payload length 0 (jumbo)"),
                    f,
                    Some(Stat::PassMalformed),
                ));
            } else {
                // IPv4 options (IHL 6, a NOP option and end of list), fragments.
                let mut f = good[..l3 + 20].to_vec();
                f[l3] = 0x46;
                let tl = u16::from_be_bytes([f[l3 + 2], f[l3 + 3]]) + 4;
                f[l3 + 2..l3 + 4].copy_from_slice(&tl.to_be_bytes());
                f.extend_from_slice(&[1, 1, 1, 0]);
                f.extend_from_slice(&good[l4..]);
                fix_ipv4_csum(&mut f, l3);
                cases.push(case(
                    format!("{tag} IPv4 options"),
                    f,
                    Some(Stat::PassIpOptions),
                ));
                let mut f = good.clone();
                f[l3 + 6] = 0x20; // MF, offset 0: the first fragment
                fix_ipv4_csum(&mut f, l3);
                cases.push(case(
                    format!("{tag} IPv4 first fragment"),
                    f,
                    Some(Stat::PassFragment),
                ));
                let mut f = good.clone();
                f[l3 + 6] = 0x00;
                f[l3 + 7] = 0x10; // offset 128 bytes, last fragment: no UDP header here
                fix_ipv4_csum(&mut f, l3);
                cases.push(case(format!("{tag} IPv4 later fragment"), f, None));
                let mut f = good.clone();
                f[l3] = 0x44; // IHL 4: shorter than a header
                fix_ipv4_csum(&mut f, l3);
                // The "port" is then read from the addresses: not ours, whatever it is.
                cases.push(case(format!("{tag} IPv4 IHL 4"), f, None));
                let mut f = good.clone();
                f[l3 + 2..l3 + 4].copy_from_slice(&10u16.to_be_bytes());
                fix_ipv4_csum(&mut f, l3);
                cases.push(case(
                    format!("{tag} IPv4 total length 10"),
                    f,
                    Some(Stat::PassMalformed),
                ));
                let mut f = good.clone();
                f[l3] = 0x65; // version 6 in an IPv4 frame
                cases.push(case(format!("{tag} IPv4 ethertype, version 6"), f, None));
            }
            let mut f = good.clone();
            let et = if vlan.is_some() { 16 } else { 12 };
            f[et..et + 2].copy_from_slice(&0x0806u16.to_be_bytes());
            cases.push(case(format!("{tag} ARP ethertype"), f, None));
        }
    }
    // Two VLAN tags (QinQ): not parsed, not ours.
    let mut f = build_frame(&spec(false, Some(100)), &good_dns());
    f.splice(12..12, [0x88, 0xa8, 0x00, 0xc8]);
    cases.push(case("QinQ", f, None));

    let mut fails = Vec::new();
    for c in &cases {
        // Leave stale bytes in the scratch slot (a name of 64 one-byte labels, whose length bytes
        // a parser reading past the question would follow).
        let _ = runner.run(&build_frame(&spec(false, None), &stale_dns()));
        let want_answer = c.want == Some(Stat::AnsweredAnswer);
        if want_answer {
            let run = runner.run(&c.frame).expect("test_run");
            if run.action != XDP_TX || run.single() != Some(Stat::AnsweredAnswer) {
                fails.push(format!(
                    "{}: not answered: {} {:?}",
                    c.what,
                    action_name(run.action),
                    run.counted
                ));
            } else if let Err(e) = check_tx(&zones, &c.frame, &run) {
                fails.push(format!("{}: {e}", c.what));
            }
            continue;
        }
        if let Some(f) = run_case(&mut runner, &zones, c) {
            fails.push(f);
        }
    }
    eprintln!("{} hostile cases run", cases.len());
    assert!(
        fails.is_empty(),
        "{} of {} cases failed:\n{}",
        fails.len(),
        cases.len(),
        fails.join("\n")
    );
}

/// The kernel drops a datagram with a wrong IPv4 header checksum or UDP checksum, or an IPv6
/// one with a zero UDP checksum (RFC 8200 8.1); the fast path must not answer what the host would
/// not have seen. Each such frame is passed up, counted as `checksum`; the same queries with
/// right checksums (and IPv4 without a UDP checksum) are answered.
#[test]
fn xdp_checksums_are_verified_before_answering() {
    let (mut runner, zones) = setup();
    let with_edns = QuerySpec::new(0x1234, "a1.example.com.", TYPE_A)
        .with_edns(1232, false)
        .to_wire();
    let mut failures = Vec::new();
    for v6 in [false, true] {
        for vlan in [None, Some(100)] {
            let s = spec(v6, vlan);
            let tag = format!("v6={v6} vlan={vlan:?}");
            let (l3, l4) = (s.l3(), s.l4());
            let dns = l4 + 8;
            let mut answered = vec![
                ("good query".to_owned(), build_frame(&s, &good_dns())),
                (
                    "good query with EDNS".to_owned(),
                    build_frame(&s, &with_edns),
                ),
            ];
            if !v6 {
                let none = FrameSpec {
                    v4_no_udp_csum: true,
                    ..s.clone()
                };
                answered.push((
                    "IPv4 without a UDP checksum".to_owned(),
                    build_frame(&none, &good_dns()),
                ));
            }
            let mut refused = Vec::new();
            // A payload byte changed after the checksum was computed: the query ID, and the OPT
            // record's payload size (past the question, so the whole payload must be summed).
            let mut f = build_frame(&s, &good_dns());
            f[dns] ^= 0x40;
            refused.push(("query ID changed, UDP checksum not", f));
            let mut f = build_frame(&s, &with_edns);
            let last = f.len() - 7;
            f[last] ^= 0x01;
            refused.push(("OPT payload size changed, UDP checksum not", f));
            let mut f = build_frame(&s, &good_dns());
            f[l4 + 6] = f[l4 + 6].wrapping_add(0x10);
            refused.push(("UDP checksum field off", f));
            if v6 {
                let mut f = build_frame(&s, &good_dns());
                f[l4 + 6..l4 + 8].copy_from_slice(&[0, 0]);
                refused.push(("IPv6 UDP checksum zero", f));
            } else {
                let mut f = build_frame(&s, &good_dns());
                f[l3 + 10] = f[l3 + 10].wrapping_add(0x10);
                refused.push(("IPv4 header checksum off", f));
                // The TTL changed on the way without the header checksum following (the UDP
                // checksum doesn't cover the TTL).
                let mut f = build_frame(&s, &good_dns());
                f[l3 + 8] -= 1;
                refused.push(("IPv4 TTL changed, header checksum not", f));
            }
            for (what, frame) in &answered {
                let run = runner.run(frame).expect("test run");
                if run.action != XDP_TX || run.single() != Some(Stat::AnsweredAnswer) {
                    failures.push(format!(
                        "{tag} {what}: {} counted {:?}, want an answer",
                        action_name(run.action),
                        run.counted
                    ));
                } else if let Err(e) = check_tx(&zones, frame, &run) {
                    failures.push(format!("{tag} {what}: answered wrongly: {e}"));
                }
            }
            for (what, frame) in &refused {
                let run = runner.run(frame).expect("test run");
                if run.action != XDP_PASS || run.single() != Some(Stat::PassChecksum) {
                    failures.push(format!(
                        "{tag} {what}: {} counted {:?}, want XDP_PASS counted {:?}",
                        action_name(run.action),
                        run.counted,
                        Stat::PassChecksum
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Runs `frame` and checks the action and the one counter that moved against `want`, and an
/// XDP_TX against the fallback.
fn run_expecting(
    runner: &mut XdpRunner,
    zones: &ZoneSet,
    frame: &[u8],
    want: (u32, Stat),
) -> Result<(), String> {
    let run = runner.run(frame).expect("test run");
    if (run.action, run.single()) != (want.0, Some(want.1)) {
        return Err(format!(
            "{} counted {:?}, want {} counted {:?}",
            action_name(run.action),
            run.counted,
            action_name(want.0),
            want.1
        ));
    }
    if run.action == XDP_TX {
        check_tx(zones, frame, &run).map_err(|e| format!("answered wrongly: {e}"))?;
    }
    Ok(())
}

/// Frames no DNS client can send on the wire (a multicast, broadcast, 0.0.0.0/8 or loopback
/// source, a multicast destination, source port 0, IPv6 multicast, unspecified, loopback or
/// IPv4-mapped addresses) are passed up counted as martians, never answered: the host drops
/// them, and an answer would go to a broadcast or multicast group. On the loopback interface
/// (the `OPT_LOOPBACK` option), loopback addresses are the host's own and are answered, and the
/// UDP checksum, which the kernel leaves to offload there, is not checked.
#[test]
fn xdp_passes_martian_frames() {
    let (mut runner, zones) = setup();
    let dns = good_dns();
    let spec =
        |src: &str, dst: &str| FrameSpec::udp(src.parse().expect("src"), dst.parse().expect("dst"));
    let frame = |src: &str, dst: &str| build_frame(&spec(src, dst), &dns);
    let mut failures = Vec::new();
    let mut check = |runner: &mut XdpRunner, what: &str, frame: &[u8], want: (u32, Stat)| {
        if let Err(e) = run_expecting(runner, &zones, frame, want) {
            failures.push(format!("{what}: {e}"));
        }
    };
    let martian = (XDP_PASS, Stat::PassMartian);
    let answer = (XDP_TX, Stat::AnsweredAnswer);
    for (src, dst) in [
        ("224.0.0.251:4000", "192.0.2.2:5300"),
        ("255.255.255.255:4000", "192.0.2.2:5300"),
        ("0.0.0.0:4000", "192.0.2.2:5300"),
        ("240.0.0.1:4000", "192.0.2.2:5300"),
        ("192.0.2.1:4000", "239.1.2.3:5300"),
        ("192.0.2.1:4000", "0.1.2.3:5300"),
        ("192.0.2.1:0", "192.0.2.2:5300"),
        ("[ff02::1]:4000", "[2001:db8::2]:5300"),
        ("[::]:4000", "[2001:db8::2]:5300"),
        ("[::ffff:192.0.2.1]:4000", "[2001:db8::2]:5300"),
        ("[2001:db8::1]:4000", "[ff05::1:3]:5300"),
        ("[2001:db8::1]:0", "[2001:db8::2]:5300"),
    ] {
        check(
            &mut runner,
            &format!("{src} -> {dst}"),
            &frame(src, dst),
            martian,
        );
    }
    let loopback = [
        ("127.0.0.1:4000", "127.0.0.1:5300"),
        ("192.0.2.1:4000", "127.0.0.1:5300"),
        ("[::1]:4000", "[::1]:5300"),
    ];
    for (src, dst) in loopback {
        check(
            &mut runner,
            &format!("{src} -> {dst}"),
            &frame(src, dst),
            martian,
        );
    }
    for (src, dst) in [
        ("192.0.2.1:4000", "192.0.2.2:5300"),
        ("[2001:db8::1]:4000", "[2001:db8::2]:5300"),
    ] {
        check(
            &mut runner,
            &format!("{src} -> {dst}"),
            &frame(src, dst),
            answer,
        );
    }

    // On lo: loopback answered, and a UDP checksum that isn't whole (as lo leaves it) too.
    let mut cfg = runner.fast.config().expect("config");
    cfg.options |= OPT_LOOPBACK;
    runner.fast.set_config(cfg).expect("set config");
    for (src, dst) in loopback {
        let what = format!("on lo: {src} -> {dst}");
        check(&mut runner, &what, &frame(src, dst), answer);
    }
    let (src, dst) = ("127.0.0.1:4000", "127.0.0.1:5300");
    let mut partial = frame(src, dst);
    partial[spec(src, dst).l4() + 6] ^= 0x5a;
    let run = runner.run(&partial).expect("test run");
    if (run.action, run.single()) != (XDP_TX, Some(Stat::AnsweredAnswer)) {
        failures.push(format!(
            "on lo, a UDP checksum that isn't whole: {} counted {:?}, want an answer",
            action_name(run.action),
            run.counted
        ));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A query asking for the server's NSID (RFC 5001) is answered at XDP while no NSID is configured
/// (the option is ignored, as any other), and passed up to the fallback, which adds the NSID,
/// once one is: the fast path never leaves it out. Other options don't pass a query up.
#[test]
fn xdp_passes_nsid_queries_when_an_nsid_is_configured() {
    let (mut runner, zones) = setup();
    let query = |options: Vec<(u16, Vec<u8>)>| {
        let mut q = QuerySpec::new(0x2345, "a1.example.com.", TYPE_A).with_edns(1232, false);
        q.edns.as_mut().expect("edns").options = options;
        build_frame(&spec(false, None), &q.to_wire())
    };
    let nsid = query(vec![(3, Vec::new())]);
    let cookie_and_nsid = query(vec![(10, vec![7; 8]), (3, Vec::new())]);
    let cookie = query(vec![(10, vec![7; 8])]);
    let mut failures = Vec::new();
    let mut check = |runner: &mut XdpRunner, what: &str, frame: &[u8], want: (u32, Stat)| {
        if let Err(e) = run_expecting(runner, &zones, frame, want) {
            failures.push(format!("{what}: {e}"));
        }
    };
    let answer = (XDP_TX, Stat::AnsweredAnswer);
    check(&mut runner, "NSID, none configured", &nsid, answer);
    let mut cfg = runner.fast.config().expect("config");
    cfg.options |= OPT_PASS_NSID;
    runner.fast.set_config(cfg).expect("set config");
    let passed = (XDP_PASS, Stat::PassNsid);
    check(&mut runner, "NSID, configured", &nsid, passed);
    check(
        &mut runner,
        "cookie and NSID, configured",
        &cookie_and_nsid,
        passed,
    );
    check(&mut runner, "cookie only, configured", &cookie, answer);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Seeded random frames: random bytes, random DNS payloads behind valid headers, and valid
/// queries with bytes flipped, cut or added. None may be dropped or aborted, none answered
/// unless the query's UDP checksum is right and the answer matches the fallback's, at most one
/// counter may move.
#[test]
fn xdp_hostile_random_frames() {
    let (mut runner, zones) = setup();
    let mut gen = Gen::new(0xbad_f00d, &zones, PORT);
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xf022_0003);
    let mut fails = Failures::default();
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    let start = Instant::now();
    for i in 0..6000 {
        let (kind, frame) = match i % 3 {
            0 => {
                let len = rng.random_range(14..400);
                let mut f: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                // Mostly IP ethertypes (some tagged), so that the bytes reach the IP parser.
                let et: u16 = match rng.random_range(0..4) {
                    0 => 0x0800,
                    1 => 0x86dd,
                    2 => 0x8100,
                    _ => rng.random(),
                };
                f[12..14].copy_from_slice(&et.to_be_bytes());
                ("random bytes", f)
            }
            1 => {
                let len = rng.random_range(0..300);
                let mut dns: Vec<u8> = (0..len).map(|_| rng.random()).collect();
                // Half of them with a plausible header, so the question parser gets the bytes.
                if len >= 12 && rng.random_bool(0.5) {
                    dns[2] &= 0x01; // QR 0, opcode QUERY, TC 0
                    dns[3] &= 0x30;
                    dns[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, rng.random_range(0..2)]);
                }
                ("random DNS payload", build_frame(&gen.frame(), &dns))
            }
            _ => {
                let q = gen.query();
                let f = gen.frame();
                let mut dns = q.to_wire();
                match rng.random_range(0..4) {
                    0 => {
                        for _ in 0..rng.random_range(1..4) {
                            let at = rng.random_range(0..dns.len());
                            dns[at] ^= 1 << rng.random_range(0..8);
                        }
                    }
                    1 => {
                        let at = rng.random_range(0..dns.len());
                        dns[at] = rng.random();
                    }
                    2 => dns.truncate(rng.random_range(0..dns.len())),
                    _ => dns.extend((0..rng.random_range(1..8)).map(|_| rng.random::<u8>())),
                }
                let mut frame = build_frame(&f, &dns);
                if rng.random_bool(0.2) {
                    // A bit flipped anywhere in the frame, checksums left as they were.
                    let at = rng.random_range(0..frame.len());
                    frame[at] ^= 1 << rng.random_range(0..8);
                }
                ("mutated query", frame)
            }
        };
        let run = runner.run(&frame).expect("test_run");
        let outcome = format!("{kind}: {} {:?}", action_name(run.action), run.counted);
        *tally
            .entry(format!("{kind}: {}", action_name(run.action)))
            .or_default() += 1;
        if run.counted.len() > 1 || run.counted.iter().any(|(_, n)| *n != 1) {
            fails.add("more than one count", format!("{outcome}: {frame:02x?}"));
        }
        match run.action {
            XDP_PASS => {
                if run.counted.iter().any(|(s, _)| s.label().0 == "answered") {
                    fails.add("passed but counted as answered", outcome);
                }
            }
            XDP_TX => {
                if let Err(e) = check_tx(&zones, &frame, &run) {
                    fails.add(
                        format!("{kind}: answered wrongly"),
                        format!("{e}\n   frame {frame:02x?}"),
                    );
                }
                if !udp_checksum_ok(&frame) {
                    fails.add(
                        format!("{kind}: answered although the query's UDP checksum was wrong"),
                        format!("{frame:02x?}"),
                    );
                }
            }
            _ => fails.add(
                format!("{kind}: {}", action_name(run.action)),
                format!("{frame:02x?}"),
            ),
        }
    }
    eprintln!("random frames in {:?}: {tally:#?}", start.elapsed());
    assert!(fails.total() == 0, "{}", fails.report());
}

/// A CNAME whose target lies inside a nested zone served here (sub.example.com inside
/// example.com, no delegation) stops at the CNAME: the target belongs to the other zone. It used
/// to be followed inside the *parent* zone, where the target has no data, giving NXDOMAIN,
/// although the target resolves when asked directly.
#[test]
fn resolve_cname_into_a_nested_zone() {
    let zones = fixture::zones();
    let q = QuerySpec::new(1, "cname-sub.example.com.", TYPE_A).to_wire();
    let r = fallback_udp(&zones, &q).expect("an answer");
    let m = hickory_proto::op::Message::from_vec(&r).expect("decodes");
    assert_ne!(
        m.response_code(),
        hickory_proto::op::ResponseCode::NXDomain,
        "CNAME to www.sub.example.com (which exists in zone sub.example.com) answered NXDOMAIN:\n{m}"
    );
}

// ---------------------------------------------------------------------------------------------
// Negative answers: the closest enclosing zone

/// Zones nested three deep around the short/full zone-map boundary: `nest.test.` (11 wire
/// bytes), its children of 32 bytes (the short zone map's longest apex) and 33 bytes (the full
/// map's shortest), a grandchild of 60 and a great-grandchild of 94 (names under it reach the
/// 96-byte key limit at one more label). `decoy` is a name in the top zone as long as the
/// 32-byte child, so the names under it have a suffix of a zone's length that is no zone.
struct Nest {
    zones: ZoneSet,
    apexes: Vec<String>,
    decoy: String,
}

fn nest() -> Nest {
    let top = "nest.test.".to_string();
    let short = fixture::name_of_len("s", &top, 32);
    let long = fixture::name_of_len("l", &top, 33);
    let deep = fixture::name_of_len("d", &short, 60);
    let edge = fixture::name_of_len("e", &deep, 94);
    let decoy = fixture::name_of_len("q", &top, 32);
    let apexes = vec![top.clone(), short, long, deep, edge];
    let mut zones = ZoneSet::new();
    let n = fixture::n;
    for apex in &apexes {
        let spec = dns_user::zone::ZoneSpec::new(
            n(apex),
            n(&format!("ns1.{top}")),
            n(&format!("hostmaster.{apex}")),
            vec![n(&format!("ns1.{top}"))],
        );
        zones.create_zone(spec).expect("create zone");
    }
    let a = |i: u8| {
        vec![hickory_proto::rr::RData::A(
            hickory_proto::rr::rdata::A::new(192, 0, 2, i),
        )]
    };
    zones
        .set_rrset(
            &n(&top),
            &n(&format!("ns1.{top}")),
            hickory_proto::rr::RecordType::A,
            60,
            a(1),
        )
        .expect("ns1");
    zones
        .set_rrset(
            &n(&top),
            &n(&decoy),
            hickory_proto::rr::RecordType::A,
            60,
            a(2),
        )
        .expect("decoy");
    for (i, apex) in apexes.iter().enumerate() {
        let host = format!("h.{apex}");
        if tests::dns_message::wire_name(&host).len() <= 96 {
            zones
                .set_rrset(
                    &n(apex),
                    &n(&host),
                    hickory_proto::rr::RecordType::A,
                    60,
                    a(10 + i as u8),
                )
                .expect("host");
        }
    }
    Nest {
        zones,
        apexes,
        decoy,
    }
}

/// Names of 1 to 12 labels before `apex` (`x`, `a.x`, `a.a.x`, ...), and `h` (which exists in
/// each zone where it fits).
fn names_below(apex: &str) -> Vec<String> {
    let mut names: Vec<String> = (0..12)
        .map(|k| format!("{}x.{apex}", "a.".repeat(k)))
        .collect();
    names.push(format!("h.{apex}"));
    names
}

/// Runs A and AAAA queries for `names` against the oracle and the fallback; returns the tally of
/// outcomes.
fn check_names(
    runner: &mut XdpRunner,
    zones: &ZoneSet,
    names: &[String],
    fails: &mut Failures,
) -> BTreeMap<String, usize> {
    let mut tally = BTreeMap::new();
    for name in names {
        for qtype in [TYPE_A, tests::dns_message::TYPE_AAAA] {
            let q = QuerySpec::new(7, name, qtype);
            let frame = build_frame(&spec(false, None), &q.to_wire());
            let want = expect(zones, &q, PAYLOAD);
            let run = runner.run(&frame).expect("test run");
            let got = match (run.action, run.single()) {
                (XDP_TX, Some(s)) => Expect::Answered(s),
                (XDP_PASS, Some(s)) => Expect::Passed(s),
                (a, _) => {
                    fails.add(
                        format!("{} {:?}", action_name(a), run.counted),
                        name.clone(),
                    );
                    continue;
                }
            };
            *tally.entry(format!("{got:?}")).or_default() += 1;
            if got != want {
                fails.add(format!("oracle {want:?}, program {got:?}"), name.clone());
            } else if run.action == XDP_TX {
                if let Err(e) = check_tx(zones, &frame, &run) {
                    fails.add("XDP_TX differs from the fallback", format!("{name}:\n{e}"));
                }
            }
        }
    }
    tally
}

/// NXDOMAIN and NODATA carry the SOA of the closest enclosing zone (the longest apex that is a
/// suffix of the name), on names of 1 to 12 labels below each zone of the nest, up to and past
/// the 96-byte key, below a name as long as a zone's apex that is no zone, and after a zone is
/// removed (its apex length then leaves the program's hint, and its names fall to the parent).
#[test]
fn xdp_negative_answers_come_from_the_closest_zone() {
    require_root();
    let Nest {
        mut zones,
        apexes,
        decoy,
    } = nest();
    let mut runner = XdpRunner::load(any_listen(), PAYLOAD);
    runner.sync(&zones);
    let lens = runner.fast.zone_lens().expect("ZONE_LENS");
    for apex in &apexes {
        let len = tests::dns_message::wire_name(apex).len();
        assert!(lens.has(len), "ZONE_LENS lacks {len} ({apex})");
    }
    let mut names: Vec<String> = apexes.iter().flat_map(|a| names_below(a)).collect();
    names.extend(names_below(&decoy));
    let mut fails = Failures::default();
    let tally = check_names(&mut runner, &zones, &names, &mut fails);
    eprintln!("nested zones: {tally:#?}");
    assert!(fails.total() == 0, "{}", fails.report());
    // Every kind came up: the test can't pass by passing everything up.
    for k in [
        "Answered(AnsweredNxdomain)",
        "Answered(AnsweredNodata)",
        "Answered(AnsweredAnswer)",
        "Passed(PassLongName)",
    ] {
        assert!(tally.get(k).copied().unwrap_or(0) > 0, "no {k}: {tally:?}");
    }

    // The 33-byte child goes: its names are answered from the top zone, and its length (no
    // other zone has it) leaves ZONE_LENS.
    let long = &apexes[2];
    zones.delete_zone(&fixture::n(long)).expect("delete zone");
    runner.sync(&zones);
    let lens = runner.fast.zone_lens().expect("ZONE_LENS");
    assert!(!lens.has(33), "ZONE_LENS keeps the removed zone's length");
    assert!(
        lens.has(32) && lens.has(11),
        "ZONE_LENS lost a zone's length"
    );
    let tally = check_names(&mut runner, &zones, &names_below(long), &mut fails);
    assert!(fails.total() == 0, "{}", fails.report());
    assert!(
        tally
            .get("Answered(AnsweredNxdomain)")
            .copied()
            .unwrap_or(0)
            >= 10,
        "names of the removed zone: {tally:?}"
    );
}

/// The program's misses as a fleet edge's daemon switches them: with `stale(false)` NXDOMAIN
/// and NODATA are answered at XDP; with `stale(true)` they go up (counted as `disabled`) for
/// the fallback, while names with data are still answered; switched back, answered again.
fn check_misses_follow(stale: impl Fn(&mut XdpRunner, bool)) {
    let (mut runner, zones) = setup();
    let query = |name: &str, qtype: u16| {
        build_frame(
            &spec(false, None),
            &QuerySpec::new(0x3456, name, qtype).to_wire(),
        )
    };
    let nxdomain = query("no-such-name.example.com.", TYPE_A);
    let nodata = query("a1.example.com.", TYPE_AAAA);
    let hit = query("a1.example.com.", TYPE_A);
    let mut failures = Vec::new();
    let mut check = |runner: &mut XdpRunner, what: &str, frame: &[u8], want: (u32, Stat)| {
        if let Err(e) = run_expecting(runner, &zones, frame, want) {
            failures.push(format!("{what}: {e}"));
        }
    };
    let answer = (XDP_TX, Stat::AnsweredAnswer);
    let answered_nxdomain = (XDP_TX, Stat::AnsweredNxdomain);
    stale(&mut runner, false);
    check(&mut runner, "NXDOMAIN", &nxdomain, answered_nxdomain);
    check(
        &mut runner,
        "NODATA",
        &nodata,
        (XDP_TX, Stat::AnsweredNodata),
    );
    stale(&mut runner, true);
    let passed = (XDP_PASS, Stat::PassDisabled);
    check(&mut runner, "stale NXDOMAIN", &nxdomain, passed);
    check(&mut runner, "stale NODATA", &nodata, passed);
    check(&mut runner, "stale answer", &hit, answer);
    stale(&mut runner, false);
    check(&mut runner, "NXDOMAIN again", &nxdomain, answered_nxdomain);
    check(&mut runner, "answer", &hit, answer);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A fleet edge cut off from etcd sets `OPT_STALE_MISSES`: NXDOMAIN and NODATA go up for the
/// fallback's SERVFAIL, while names with data are still answered at XDP; cleared, negative
/// answers are given at XDP again.
#[test]
fn xdp_passes_misses_up_while_stale() {
    check_misses_follow(|runner, on| {
        let mut cfg = runner.fast.config().expect("config");
        if on {
            cfg.options |= OPT_STALE_MISSES;
        } else {
            cfg.options &= !OPT_STALE_MISSES;
        }
        runner.fast.set_config(cfg).expect("set config");
    });
}

/// A fleet edge's daemon vouches for the program's negative answers up to a time
/// (`OPT_MISSES_UNTIL`, `misses_until_ns` on the kernel's monotonic clock), which it moves
/// forward as its lease is renewed. Past that time, as after the daemon died leaving the
/// program answering, NXDOMAIN and NODATA go up; names with data are still answered.
#[test]
fn xdp_passes_misses_up_past_the_daemons_deadline() {
    check_misses_follow(|runner, past| {
        let mut cfg = runner.fast.config().expect("config");
        cfg.options |= OPT_MISSES_UNTIL;
        // Far ahead, or long past (the machine has been up for more than a nanosecond).
        cfg.misses_until_ns = if past { 1 } else { u64::MAX };
        runner.fast.set_config(cfg).expect("set config");
    });
}

/// Each CPU keeps the zone of its last negative answer (`Scratch::zone`), to answer the next
/// ones without looking the zone up again: after a change to the zone's SOA the answers carry
/// the new SOA, and once the zone is gone its missing names are no longer answered from it.
#[test]
fn xdp_negative_answers_follow_their_zone_as_it_changes() {
    let (mut runner, mut zones) = setup();
    let queries = [
        (
            QuerySpec::new(0x3457, "no-such-name.example.com.", TYPE_A),
            Stat::AnsweredNxdomain,
        ),
        (
            QuerySpec::new(0x3458, "a1.example.com.", TYPE_AAAA),
            Stat::AnsweredNodata,
        ),
    ];
    // Each query twice in a row: the second is answered from the first's copy of the zone.
    let answers = |runner: &mut XdpRunner, zones: &ZoneSet| -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for (q, stat) in &queries {
            let frame = build_frame(&spec(false, None), &q.to_wire());
            for _ in 0..2 {
                run_expecting(runner, zones, &frame, (XDP_TX, *stat))
                    .unwrap_or_else(|e| panic!("{}: {e}", name_text(&q.qname)));
                out.push(runner.run(&frame).expect("test run").out);
            }
        }
        out
    };
    let before = answers(&mut runner, &zones);

    // A name that ends with the copy's apex inside a label, not at a label's start: in no zone
    // (the one label `a\007example\003com`), whatever the copy says.
    let mut inside = QuerySpec::new(0x3459, "x.", TYPE_A);
    inside.qname = [&b"\x0da"[..], &wire_name(EXAMPLE)].concat();
    assert_eq!(inside.qname.len(), 15);
    let frame = build_frame(&spec(false, None), &inside.to_wire());
    let run = runner.run(&frame).expect("test run");
    assert_eq!(
        Some(Expect::Passed(Stat::PassNoZone)),
        (run.action == XDP_PASS)
            .then(|| run.single().map(Expect::Passed))
            .flatten(),
        "a name ending with the apex inside its label: {} {:?}",
        action_name(run.action),
        run.counted
    );
    assert_eq!(
        expect(&zones, &inside, PAYLOAD),
        Expect::Passed(Stat::PassNoZone)
    );

    let apex = fixture::n(EXAMPLE);
    let mut soa = zones.zone(&apex).expect("zone").soa().clone();
    soa.minimum += 17;
    zones.set_soa(&apex, soa).expect("set soa");
    runner.sync(&zones);
    let after = answers(&mut runner, &zones);
    for (b, a) in before.iter().zip(&after) {
        assert_ne!(b, a, "the negative answer kept the old SOA");
    }

    zones.delete_zone(&apex).expect("delete zone");
    runner.sync(&zones);
    for (q, _) in &queries {
        let frame = build_frame(&spec(false, None), &q.to_wire());
        let run = runner.run(&frame).expect("test run");
        let got = match (run.action, run.single()) {
            (XDP_TX, Some(s)) => Expect::Answered(s),
            (XDP_PASS, Some(s)) => Expect::Passed(s),
            (a, _) => panic!(
                "{}: {} {:?}",
                name_text(&q.qname),
                action_name(a),
                run.counted
            ),
        };
        assert_eq!(
            got,
            expect(&zones, q, PAYLOAD),
            "{} after its zone went",
            name_text(&q.qname)
        );
    }
}

/// A large value at a name longer than a short key lives in NAMES_LARGE behind a marker in
/// NAMES_SMALL, so that a long name missing from NAMES_SMALL is known absent: the name is
/// answered (and NODATA for a type it lacks) as its value moves from small to large and back,
/// and a long name that doesn't exist, or no longer does, is NXDOMAIN.
#[test]
fn xdp_answers_a_long_name_as_its_value_moves_between_small_and_large() {
    use hickory_proto::rr::{rdata::AAAA, RData, RecordType};

    let (mut runner, mut zones) = setup();
    let apex = fixture::long_apex();
    let name = format!("moving.{apex}");
    assert!(wire_name(&name).len() > dns_common::SHORT_NAME_LEN);
    let query = |name: &str, qtype| {
        build_frame(
            &spec(false, None),
            &QuerySpec::new(0x5151, name, qtype).to_wire(),
        )
    };
    let aaaa = |n: u16| -> Vec<RData> {
        (1..=n)
            .map(|i| RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 7, i)))
            .collect()
    };
    let mut failures = Vec::new();
    let mut check =
        |runner: &mut XdpRunner, zones: &ZoneSet, what: &str, frame: &[u8], want: (u32, Stat)| {
            if let Err(e) = run_expecting(runner, zones, frame, want) {
                failures.push(format!("{what}: {e}"));
            }
        };
    let (answer, nodata, nxdomain) = (
        (XDP_TX, Stat::AnsweredAnswer),
        (XDP_TX, Stat::AnsweredNodata),
        (XDP_TX, Stat::AnsweredNxdomain),
    );
    let (n, a) = (fixture::n(&name), fixture::n(&apex));
    check(
        &mut runner,
        &zones,
        "missing",
        &query(&name, TYPE_AAAA),
        nxdomain,
    );
    for (count, what) in [
        (1, "small"),
        (8, "large"),
        (1, "small again"),
        (8, "large again"),
    ] {
        zones
            .set_rrset(&a, &n, RecordType::AAAA, 30, aaaa(count))
            .expect("set AAAA");
        runner.sync(&zones);
        check(&mut runner, &zones, what, &query(&name, TYPE_AAAA), answer);
        let what = format!("{what}, A");
        check(&mut runner, &zones, &what, &query(&name, TYPE_A), nodata);
    }
    zones
        .delete_rrset(&a, &n, RecordType::AAAA)
        .expect("delete AAAA");
    runner.sync(&zones);
    check(
        &mut runner,
        &zones,
        "removed while large",
        &query(&name, TYPE_AAAA),
        nxdomain,
    );
    let fixed = format!("aaaa8.{apex}");
    check(
        &mut runner,
        &zones,
        "fixture's large",
        &query(&fixed, TYPE_AAAA),
        answer,
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
