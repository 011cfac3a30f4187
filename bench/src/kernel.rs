//! Section 1: the per-packet cost of the XDP program in the kernel, with `BPF_PROG_TEST_RUN`.
//!
//! `BPF_PROG_TEST_RUN` with `repeat = N` runs the program N times on the *same* buffer: after the
//! first run it holds the answer the program wrote, so runs 2..N would time the "this is a
//! response, pass it" path. A hand-assembled wrapper therefore restores the query (length and
//! bytes) and tail-calls the program; its own cost is measured with a trivial target and taken
//! off. The STATS counters check that every run really answered.

use std::{
    net::SocketAddr,
    os::fd::{AsFd as _, AsRawFd as _, BorrowedFd, OwnedFd},
    time::Instant,
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use aya::programs::Xdp;
use dns_common::{Stat, PROGRAM_NAME};
use dns_user::zone::{ZoneSet, ZoneSpec};
use dns_user::{
    compile::full_sync,
    loader::{load_detached, served_keys, xdp_config},
    maps::FastPath,
};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{rdata::A, Name, RData, RecordType},
    serialize::binary::BinDecodable as _,
};
use serde_json::{json, Value};
use testkit::{
    dns_message::QuerySpec,
    packet::{build_frame, check_response_frame, FrameSpec},
    xdprun::moved,
};

use crate::{
    rawbpf::{self, XDP_TX},
    zonegen::{self, Shape, APEX},
    Opts,
};

/// One query the program is timed on.
struct Case {
    key: &'static str,
    label: &'static str,
    frame: Vec<u8>,
    /// The counter every run must move.
    stat: Stat,
    rcode: ResponseCode,
    /// Answer records expected (A/AAAA/CNAME).
    answers: usize,
}

fn cases() -> Vec<Case> {
    // A query from a client's port 40000 to the server's port 53 (the addresses of the bench
    // network; the program is not attached, any address does), RD off, with an OPT (payload
    // 1232) if `edns`.
    let frame = |client: &str, server: &str, name: &str, t: RecordType, edns: bool| {
        let mut q = QuerySpec::new(0x1234, name, u16::from(t)).with_flags(0);
        if edns {
            q = q.with_edns(1232, false);
        }
        let spec = FrameSpec::udp(
            client.parse().expect("address"),
            server.parse().expect("address"),
        );
        build_frame(&spec, &q.to_wire())
    };
    let v4 = |name: &str, t: RecordType, edns: bool| {
        frame("10.212.0.2:40000", "10.212.0.1:53", name, t, edns)
    };
    let v6 = |name: &str, t: RecordType| {
        frame("[fd00:212::2]:40000", "[fd00:212::1]:53", name, t, false)
    };
    let mut cases = vec![
        Case {
            key: "a_hit",
            label: "A hit (IPv4, no EDNS)",
            frame: v4(&format!("n4242.{APEX}"), RecordType::A, false),
            stat: Stat::AnsweredAnswer,
            rcode: ResponseCode::NoError,
            answers: 1,
        },
        Case {
            key: "cname",
            label: "CNAME chase (CNAME + A)",
            frame: v4(&format!("c42.{APEX}"), RecordType::A, false),
            stat: Stat::AnsweredAnswer,
            rcode: ResponseCode::NoError,
            answers: 2,
        },
        Case {
            key: "nxdomain",
            label: "NXDOMAIN (SOA in authority)",
            frame: v4(&format!("nope4242.{APEX}"), RecordType::A, false),
            stat: Stat::AnsweredNxdomain,
            rcode: ResponseCode::NXDomain,
            answers: 0,
        },
        Case {
            key: "edns",
            label: "A hit with EDNS (OPT echoed)",
            frame: v4(&format!("n4242.{APEX}"), RecordType::A, true),
            stat: Stat::AnsweredAnswer,
            rcode: ResponseCode::NoError,
            answers: 1,
        },
        Case {
            key: "ipv6",
            label: "AAAA hit over IPv6",
            frame: v6(&format!("n42.{APEX}"), RecordType::AAAA),
            stat: Stat::AnsweredAnswer,
            rcode: ResponseCode::NoError,
            answers: 1,
        },
        Case {
            key: "nodata",
            label: "NODATA (AAAA at an A-only name, 3 labels)",
            frame: v4(&format!("n4242.{APEX}"), RecordType::AAAA, false),
            stat: Stat::AnsweredNodata,
            rcode: ResponseCode::NoError,
            answers: 0,
        },
    ];
    // Negative answers by the number of labels in the name, over the zones `add_deep_names`
    // adds: `tld.` for two labels, the benchmark zone below.
    for labels in [2usize, 4, 6, 10] {
        let (nx, nodata) = deep_names(labels);
        cases.push(Case {
            key: leak(format!("a_hit_{labels}")),
            label: leak(format!("A hit, {labels} labels")),
            frame: v4(&nodata, RecordType::A, false),
            stat: Stat::AnsweredAnswer,
            rcode: ResponseCode::NoError,
            answers: 1,
        });
        cases.push(Case {
            key: leak(format!("nxdomain_{labels}")),
            label: leak(format!("NXDOMAIN, {labels} labels")),
            frame: v4(&nx, RecordType::A, false),
            stat: Stat::AnsweredNxdomain,
            rcode: ResponseCode::NXDomain,
            answers: 0,
        });
        cases.push(Case {
            key: leak(format!("nodata_{labels}")),
            label: leak(format!("NODATA, {labels} labels")),
            frame: v4(&nodata, RecordType::AAAA, false),
            stat: Stat::AnsweredNodata,
            rcode: ResponseCode::NoError,
            answers: 0,
        });
    }
    cases
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// The one-label zone of the two-label cases.
const TLD: &str = "tld.";

/// `(missing name, name with an A record only)` of `labels` labels: under [`TLD`] for two,
/// under the benchmark zone for more (`x.`, `x.x.`, ... before the zone's two labels).
fn deep_names(labels: usize) -> (String, String) {
    if labels == 2 {
        return (format!("nope4242.{TLD}"), format!("www.{TLD}"));
    }
    let middle = "x.".repeat(labels - 3);
    (
        format!("nope4242.{middle}{APEX}"),
        format!("d{labels}.{middle}{APEX}"),
    )
}

/// Adds what the label-count cases ask about: the zone [`TLD`] with `www` and the names of
/// [`deep_names`] in the benchmark zone, each with an A record.
fn add_deep_names(zones: &mut ZoneSet) -> Result<()> {
    let tld = Name::from_ascii(TLD)?;
    let ns = Name::from_ascii(format!("ns1.{APEX}"))?;
    let spec = ZoneSpec::new(
        tld.clone(),
        ns.clone(),
        Name::from_ascii(format!("hostmaster.{TLD}"))?,
        vec![ns],
    );
    let err = |e| anyhow!("adding the label-count names: {e}");
    zones.create_zone(spec).map_err(err)?;
    let apex = Name::from_ascii(APEX)?;
    for labels in [2usize, 4, 6, 10] {
        let (_, name) = deep_names(labels);
        let zone = if labels == 2 { &tld } else { &apex };
        let a = vec![RData::A(A::new(192, 0, 2, labels as u8))];
        zones
            .set_rrset(zone, &Name::from_ascii(&name)?, RecordType::A, 60, a)
            .map_err(err)?;
    }
    Ok(())
}

fn stat_map(fast: &FastPath) -> Result<Vec<(Stat, u64)>> {
    fast.stats().context("reading STATS")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// A program under test: its fd and how to describe it.
struct Subject {
    key: String,
    fd: OwnedFdOrBorrowed,
    frame: Vec<u8>,
    /// Kept alive: the wrapper's prog array (and so its tail-call target).
    _array: Option<OwnedFd>,
}

impl Subject {
    /// The program to run: its own, or `edgedns`.
    fn fd<'a>(&'a self, edgedns: BorrowedFd<'a>) -> BorrowedFd<'a> {
        match &self.fd {
            OwnedFdOrBorrowed::Owned(f) => f.as_fd(),
            OwnedFdOrBorrowed::Edgedns => edgedns,
        }
    }
}

enum OwnedFdOrBorrowed {
    Owned(OwnedFd),
    Edgedns,
}

pub fn run(opts: &Opts) -> Result<Value> {
    let repeat: u32 = if opts.quick { 200_000 } else { 1_000_000 };
    let rounds = if opts.quick { 3 } else { 7 };
    let shape = Shape {
        names: 10_000,
        extras: true,
    };
    let mut zones = zonegen::zone_set(shape)?;
    add_deep_names(&mut zones)?;
    let listen: SocketAddr = "[::]:53".parse().expect("address");
    let (mut ebpf, mut fast) = load_detached(xdp_config(1232, true), &served_keys(&[listen]))
        .map_err(|e| anyhow::anyhow!("{:#}", anyhow::Error::new(e)))
        .context("loading the XDP program (BPF_PROG_TEST_RUN needs root)")?;
    let report = full_sync(&mut fast, &zones).context("filling the maps")?;
    ensure!(report.names_written > 10_000, "maps not filled: {report:?}");
    // EDGEDNS_BENCH_RRL_RATE=N runs the same cases with response-rate limiting on at N a second
    // per prefix (and cookies on): a rate above what the loop sends never limits, so the figures
    // are the cost of the bucket lookup and update on every answer.
    if let Some(rate) = std::env::var("EDGEDNS_BENCH_RRL_RATE")
        .ok()
        .and_then(|r| r.parse::<u32>().ok())
    {
        let mut cfg = dns_common::limit::LimitConfig::zeroed();
        cfg.set_rate(rate, 2, 24, 56);
        cfg.flags = dns_common::limit::LIMIT_COOKIES;
        fast.set_limits(cfg).context("writing LIMITS")?;
        eprintln!("bench: kernel: RRL on at {rate}/s per prefix");
    }
    let prog: &mut Xdp = ebpf
        .program_mut(PROGRAM_NAME)
        .context("no program in the object")?
        .try_into()
        .context("not an XDP program")?;
    let info = prog.info().context("bpf_prog_info")?;
    let verified = info.verified_instruction_count();
    let prog_id = info.id();
    let edgedns = prog.fd().context("program fd")?.as_fd();
    // SAFETY: the fd outlives every use below (ebpf lives to the end of this function).
    let edgedns: BorrowedFd<'static> = unsafe { BorrowedFd::borrow_raw(edgedns.as_raw_fd()) };
    let xlated = bpftool_insns(prog_id);

    // Check every case once, directly: one run, a right answer.
    let cases = cases();
    for c in &cases {
        let before = stat_map(&fast)?;
        let r = rawbpf::test_run(edgedns, &c.frame, 1)?;
        let after = stat_map(&fast)?;
        check_answer(c, &r)?;
        ensure!(
            moved(&before, &after) == vec![(c.stat, 1)],
            "{}: counters moved {:?}",
            c.key,
            moved(&before, &after)
        );
        // What plain `repeat` would time: the second run sees the answer, not the query.
        let before = stat_map(&fast)?;
        rawbpf::test_run(edgedns, &c.frame, 1000)?;
        let after = stat_map(&fast)?;
        let m = moved(&before, &after);
        if c.key == "a_hit" {
            eprintln!(
                "bench: kernel: plain repeat=1000 on the A query moved {m:?} (why the wrapper)"
            );
        }
    }

    // Raw programs: the floor, `return XDP_TX`, and the wrappers.
    let floor = rawbpf::load_xdp("bench_floor", &rawbpf::prog_floor(), false)?;
    let ret_tx = rawbpf::load_xdp("bench_ret_tx", &rawbpf::prog_return_tx(), false)?;
    let frags = {
        // Find the frags flag the edgedns program was loaded with: the tail-call map takes
        // only programs that agree.
        let arr = rawbpf::prog_array()?;
        let w = rawbpf::load_xdp(
            "bench_probe",
            &rawbpf::prog_restore_and_call(&cases[0].frame, arr.as_raw_fd()),
            false,
        )?;
        drop(w);
        rawbpf::set_tail(arr.as_fd(), edgedns).is_err()
    };
    // The subject `key`: the wrapper (loaded as `name`) around `target` on `frame`.
    let wrap = |key: String, frame: &[u8], target: BorrowedFd<'_>, name: &str| -> Result<Subject> {
        let arr = rawbpf::prog_array()?;
        let w = rawbpf::load_xdp(
            name,
            &rawbpf::prog_restore_and_call(frame, arr.as_raw_fd()),
            frags,
        )?;
        rawbpf::set_tail(arr.as_fd(), target)?;
        Ok(Subject {
            key,
            fd: OwnedFdOrBorrowed::Owned(w),
            frame: frame.to_vec(),
            _array: Some(arr),
        })
    };
    // Targets for the wrapper's calibration must agree on frags too.
    let (floor_t, ret_t) = if frags {
        (
            rawbpf::load_xdp("bench_floor_f", &rawbpf::prog_floor(), true)?,
            rawbpf::load_xdp("bench_ret_tx_f", &rawbpf::prog_return_tx(), true)?,
        )
    } else {
        (
            rawbpf::load_xdp("bench_floor", &rawbpf::prog_floor(), false)?,
            rawbpf::load_xdp("bench_ret_tx", &rawbpf::prog_return_tx(), false)?,
        )
    };

    let mut subjects = Vec::new();
    for (name, frame) in [("v4", &cases[0].frame), ("v6", &cases[4].frame)] {
        let r = rawbpf::test_run(floor.as_fd(), frame, 1)?;
        ensure!(r.retval == XDP_TX as u32, "floor returned {}", r.retval);
        subjects.push(Subject {
            key: format!("floor_{name}"),
            fd: OwnedFdOrBorrowed::Owned(floor.try_clone()?),
            frame: frame.clone(),
            _array: None,
        });
        for (target, fd, prog) in [
            ("floor", floor_t.as_fd(), "bench_w_floor"),
            ("ret", ret_t.as_fd(), "bench_w_ret"),
        ] {
            subjects.push(wrap(format!("wrap_{target}_{name}"), frame, fd, prog)?);
        }
    }
    subjects.push(Subject {
        key: "ret_tx".into(),
        fd: OwnedFdOrBorrowed::Owned(ret_tx.try_clone()?),
        frame: cases[0].frame.clone(),
        _array: None,
    });
    for c in &cases {
        let w = wrap(
            format!("edgedns_{}", c.key),
            &c.frame,
            edgedns,
            "bench_w_edns",
        )?;
        // Every run through the wrapper must answer.
        let before = stat_map(&fast)?;
        let r = rawbpf::test_run(w.fd(edgedns), &c.frame, 1000)?;
        let after = stat_map(&fast)?;
        check_answer(c, &r)?;
        let m = moved(&before, &after);
        ensure!(
            m == vec![(c.stat, 1000)],
            "{}: 1000 wrapped runs moved {m:?}",
            c.key
        );
        subjects.push(w);
    }
    subjects.push(Subject {
        key: "edgedns_plain_repeat_a_hit".into(),
        fd: OwnedFdOrBorrowed::Edgedns,
        frame: cases[0].frame.clone(),
        _array: None,
    });

    // Interleaved rounds: every subject once per round, the median over rounds.
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); subjects.len()];
    let t0 = Instant::now();
    for _ in 0..rounds {
        for (i, s) in subjects.iter().enumerate() {
            let fd = s.fd(edgedns);
            // The kernel's figure is in whole ns; the wall-time difference between a run of
            // `repeat` and one of 1 gives the fraction (fixed syscall costs cancel). Used when the
            // two agree within 1 ns (no preemption in between), else the kernel's.
            let one = rawbpf::test_run(fd, &s.frame, 1)?;
            let many = rawbpf::test_run(fd, &s.frame, repeat)?;
            let wall = (many.wall_ns - one.wall_ns) / f64::from(repeat - 1);
            let k = many.ns_per_run;
            samples[i].push(if wall >= k && wall < k + 1.0 { wall } else { k });
        }
    }
    eprintln!(
        "bench: kernel: {} subjects x {rounds} rounds x {repeat} runs in {:.1?}",
        subjects.len(),
        t0.elapsed()
    );
    let ns: std::collections::BTreeMap<String, f64> = subjects
        .iter()
        .zip(samples.iter())
        .map(|(s, v)| (s.key.clone(), median(v.clone())))
        .collect();
    let spread: std::collections::BTreeMap<String, (f64, f64)> = subjects
        .iter()
        .zip(samples)
        .map(|(s, mut v)| {
            v.sort_by(|a, b| a.total_cmp(b));
            (s.key.clone(), (v[0], v[v.len() - 1]))
        })
        .collect();

    let ret = ns["ret_tx"];
    let a_hit_net = ns["edgedns_a_hit"] - (ns["wrap_ret_v4"] - ret) - ret;
    let mut rows = Vec::new();
    for c in &cases {
        let fam = if c.key == "ipv6" { "v6" } else { "v4" };
        let wrapped = ns[&format!("edgedns_{}", c.key)];
        let overhead = ns[&format!("wrap_ret_{fam}")] - ret;
        let cost = wrapped - overhead;
        let floor = ns[&format!("floor_{fam}")];
        rows.push(json!({
            "case": c.key,
            "label": c.label,
            "frame_bytes": c.frame.len(),
            "wrapped_ns": wrapped,
            "ns": cost,
            "floor_ns": floor,
            "ratio": cost / floor,
            "net_ns": cost - ret,
            "net_floor_ns": floor - ret,
            "net_ratio": (cost - ret) / (floor - ret).max(0.1),
            "vs_a_hit": (cost - ret) / a_hit_net.max(0.1),
            "min_max_wrapped": spread[&format!("edgedns_{}", c.key)],
        }));
    }
    // Consistency: the floor through the wrapper should cost the wrapper plus the floor.
    let check_floor = ns["wrap_floor_v4"] - (ns["wrap_ret_v4"] - ret);
    Ok(json!({
        "repeat": repeat,
        "rounds": rounds,
        "verified_insns": verified,
        "xlated_insns": xlated.0,
        "jited_bytes": xlated.1,
        "frags": frags,
        "return_tx_ns": ret,
        "floor_v4_ns": ns["floor_v4"],
        "floor_v6_ns": ns["floor_v6"],
        "wrapper_overhead_v4_ns": ns["wrap_ret_v4"] - ret,
        "wrapper_overhead_v6_ns": ns["wrap_ret_v6"] - ret,
        "floor_via_wrapper_v4_ns": check_floor,
        "plain_repeat_a_hit_ns": ns["edgedns_plain_repeat_a_hit"],
        "rows": rows,
        "all_medians": ns,
    }))
}

/// Checks the frame a run left: XDP_TX, a well-formed response to the query frame (addresses
/// swapped, lengths and checksums right), a DNS answer as expected.
fn check_answer(c: &Case, r: &rawbpf::TestRun) -> Result<()> {
    ensure!(
        r.retval == XDP_TX as u32,
        "{}: the program returned {} (not XDP_TX)",
        c.key,
        r.retval
    );
    let dns = check_response_frame(&c.frame, &r.out)
        .map_err(|e| anyhow!("{}: the answer frame is wrong: {e}", c.key))?;
    let m =
        Message::from_bytes(&dns).with_context(|| format!("{}: answer does not parse", c.key))?;
    ensure!(
        m.response_code() == c.rcode,
        "{}: rcode {:?}",
        c.key,
        m.response_code()
    );
    let n = m
        .answers()
        .iter()
        .filter(|r| matches!(r.data(), RData::A(_) | RData::AAAA(_) | RData::CNAME(_)))
        .count();
    if n != c.answers {
        bail!("{}: {n} answer records, expected {}", c.key, c.answers);
    }
    Ok(())
}

/// `(xlated instructions, jited bytes)` from bpftool, if it is there.
fn bpftool_insns(id: u32) -> (Option<u64>, Option<u64>) {
    let Ok(out) = std::process::Command::new("bpftool")
        .args(["-j", "prog", "show", "id", &id.to_string()])
        .output()
    else {
        return (None, None);
    };
    let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) else {
        return (None, None);
    };
    (
        v["bytes_xlated"].as_u64().map(|b| b / 8),
        v["bytes_jited"].as_u64(),
    )
}
