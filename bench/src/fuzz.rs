//! Section 7: fuzzing, so that the next "accepted or answered something it shouldn't" shows up
//! here before a client sees it. Four seeded loops, one seed for all (printed and recorded; pass
//! it back with `--seed` to replay a run):
//!
//! - XDP against the fallback: generated and mutated frames (`testkit::fuzz::FrameFuzzer`) through
//!   the real program with `BPF_PROG_TEST_RUN`, over maps filled from the fixture zones. Every
//!   XDP_TX must be a well-formed response frame whose DNS payload is exactly what the fallback
//!   answers to the same DNS bytes; every valid query must get what the oracle
//!   (`testkit::xdprun::expect`) says; only XDP_PASS and XDP_TX, one counter per frame, never
//!   "passed" counted as answered; no answer to a frame the host's own stack would drop before
//!   any socket saw it (`testkit::fuzz::host_drops`: martian sources, multicast or loopback
//!   addresses, source port 0), since the fallback could never have answered it. Passed frames
//!   are counted by their reason; answers to frames with a stale checksum are counted apart.
//! - XDP against the fallback over mutated zones: the maps filled from zone sets in which one
//!   zone is an accepted zone-file mutant, then valid queries over their names, each answer
//!   compared with the fallback's and each outcome with the oracle's.
//! - The fallback's request parser: mutated queries, mutated earlier answers (QR cleared) and
//!   random bytes through `dns_user::fallback::handle`, over UDP and TCP: no panic; every answer
//!   decodes, carries the query's ID and fits the transport (`testkit::fuzz::check_fallback_reply`),
//!   and the same message is answered alike over both (`testkit::fuzz::check_udp_tcp_alike`).
//! - The zone-file parser: mutations of exported zones through `dns_user::zonefile::parse`: no
//!   panic; whatever it accepts loads, and its export reads back as the same data.
//!
//! Panics are caught (`catch_unwind`) and reported with their input in hex; the run goes on.
//! Mismatches and panics are printed as they happen, up to a cap, and all of them counted.

use std::{
    cell::RefCell,
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    panic::{self, AssertUnwindSafe},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, Result};
use dns_common::Stat;
use dns_user::{
    fallback::{handle, FallbackConfig, Transport},
    zone::ZoneSet,
};
use hickory_proto::op::Message;
use serde_json::{json, Value};
use testkit::{
    fixture,
    fuzz::{
        check_fallback_reply, check_tx, check_udp_tcp_alike, checksums_ok, hex, host_drops,
        mutate_dns_random, mutate_zone_text, mutated_zone_set, seed_zone_files, show_dns,
        zone_file_round_trip, FrameFuzzer, FrameKind, ZoneFileOutcome,
    },
    packet::{build_frame, parse_udp, FrameSpec},
    xdprun::{action_name, expect, fallback_udp, martian, Expect, XdpRunner, XDP_PASS, XDP_TX},
};

use crate::Opts;

/// The program's port and UDP payload size, as the differential tests use them.
const PORT: u16 = 5300;
const PAYLOAD: u16 = 1232;
/// Failures printed in full (and kept in the results) per kind of failure; all are counted.
const SHOW: u64 = 5;

pub struct FuzzParams {
    pub seed: u64,
    pub frames: u64,
    /// A ceiling on the frame loop, should the box be far slower than expected.
    pub frames_secs: f64,
    pub parser_inputs: u64,
    pub parser_secs: f64,
    /// Zone sets with one mutated zone, 500 queries each.
    pub zone_rounds: u64,
}

impl FuzzParams {
    pub fn new(opts: &Opts) -> Self {
        let seed = opts.seed.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0x5eed, |d| d.as_nanos() as u64)
        });
        if opts.quick {
            Self {
                seed,
                frames: 100_000,
                frames_secs: 600.0,
                parser_inputs: 100_000,
                parser_secs: 10.0,
                zone_rounds: 200,
            }
        } else {
            Self {
                seed,
                frames: 1_000_000,
                frames_secs: 3600.0,
                parser_inputs: 1_000_000,
                parser_secs: 60.0,
                zone_rounds: 2000,
            }
        }
    }
}

pub fn run(p: &FuzzParams) -> Result<Value> {
    eprintln!(
        "bench: fuzz seed {} (replay: cargo xtask bench --only fuzz --seed {})",
        p.seed, p.seed
    );
    let quiet = QuietPanics::install();
    let xdp = xdp_vs_fallback(p);
    let zones_xdp = xdp_over_mutated_zones(p);
    let fallback = fallback_parser(p);
    let zonefile = zone_file_parser(p);
    drop(quiet);
    Ok(json!({
        "seed": p.seed,
        "xdp": xdp?,
        "xdp_mutated_zones": zones_xdp?,
        "fallback": fallback,
        "zonefile": zonefile,
    }))
}

// ---------------------------------------------------------------------------------------------
// Panics

thread_local! {
    /// The message and place of the last panic on this thread, as the hook saw it.
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// While alive, panics print nothing and leave their message in [`LAST_PANIC`]: they are caught
/// and reported with their input instead.
struct QuietPanics;

impl QuietPanics {
    fn install() -> Self {
        panic::set_hook(Box::new(|info| {
            LAST_PANIC.with(|l| *l.borrow_mut() = info.to_string());
        }));
        Self
    }
}

impl Drop for QuietPanics {
    fn drop(&mut self) {
        let _ = panic::take_hook();
    }
}

/// Runs `f`, a panic turned into `Err` with its message.
fn catch<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|_| LAST_PANIC.with(|l| l.borrow().clone()))
}

/// Failures of one loop: all counted, the first [`SHOW`] of each kind printed and kept.
#[derive(Default)]
struct Failures {
    count: u64,
    by_kind: BTreeMap<String, u64>,
    shown: Vec<Value>,
}

impl Failures {
    fn add(&mut self, what: &str, kind: &str, detail: String, input_hex: String) {
        self.count += 1;
        let n = self.by_kind.entry(kind.to_owned()).or_default();
        *n += 1;
        if *n <= SHOW {
            eprintln!("bench: fuzz {what}: {kind}\n  input {input_hex}\n  {detail}");
            self.shown
                .push(json!({"kind": kind, "input_hex": input_hex, "detail": detail}));
        }
    }

    fn json(&self) -> Value {
        json!({"count": self.count, "by_kind": self.by_kind, "examples": self.shown})
    }
}

// ---------------------------------------------------------------------------------------------
// XDP against the fallback

fn stat_name(s: Stat) -> String {
    let (metric, label) = s.label();
    format!("{metric}/{label}")
}

fn xdp_vs_fallback(p: &FuzzParams) -> Result<Value> {
    let zones = fixture::zones();
    let listen = SocketAddr::new(IpAddr::from([0u8; 16]), PORT);
    let mut runner = catch(|| XdpRunner::load(listen, PAYLOAD))
        .map_err(|e| anyhow!("loading the XDP program (BPF_PROG_TEST_RUN needs root): {e}"))?;
    runner.sync(&zones);
    let mut fz = FrameFuzzer::new(p.seed, &zones, PORT);

    let mut fails = Failures::default();
    let mut answered = 0u64;
    let mut answered_bad_csum = 0u64;
    let mut not_ours = 0u64;
    let mut refused = 0u64;
    let mut passed: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_kind: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    let start = Instant::now();
    let cap = Duration::from_secs_f64(p.frames_secs);
    let mut frames = 0u64;
    while frames < p.frames && start.elapsed() < cap {
        frames += 1;
        if frames.is_multiple_of(100_000) {
            eprintln!(
                "bench: fuzz: {frames} frames in {:.0?}, {} mismatches",
                start.elapsed(),
                fails.count
            );
        }
        let ff = fz.next_frame();
        let kind = ff.kind.label();
        let tally = by_kind.entry(kind).or_default();
        tally.0 += 1;
        let Ok(run) = runner.run(&ff.frame) else {
            // The kernel refuses frames shorter than an Ethernet header; the generator makes none,
            // so any refusal is worth seeing.
            refused += 1;
            continue;
        };
        let hexed = || hex(&ff.frame);
        if run.counted.len() > 1 || run.counted.iter().any(|&(_, n)| n != 1) {
            fails.add(
                "XDP",
                "more than one count",
                format!("{kind}: counted {:?}", run.counted),
                hexed(),
            );
        }
        let got = match (run.action, run.single()) {
            (XDP_TX, Some(s)) => Some(Expect::Answered(s)),
            (XDP_PASS, Some(s)) => Some(Expect::Passed(s)),
            _ => None,
        };
        match run.action {
            XDP_PASS => match run.single() {
                Some(s) if s.label().0 == "answered" => fails.add(
                    "XDP",
                    "passed but counted as answered",
                    format!("{kind}: {s:?}"),
                    hexed(),
                ),
                Some(s) => *passed.entry(stat_name(s)).or_default() += 1,
                None => not_ours += 1,
            },
            XDP_TX => {
                answered += 1;
                tally.1 += 1;
                if !checksums_ok(&ff.frame) {
                    answered_bad_csum += 1;
                }
                if let Some(why) = host_drops(&ff.frame) {
                    fails.add(
                        "XDP",
                        &format!("answered a frame the host's stack drops ({why})"),
                        format!("{kind}\n{}", both_answers(&zones, &ff.frame, &run.out)),
                        hexed(),
                    );
                }
                match catch(|| check_tx(&zones, &ff.frame, &run.out)) {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => fails.add(
                        "XDP",
                        "XDP_TX differs from the fallback",
                        format!(
                            "{kind} {:?}: {e}\n{}",
                            ff.kind,
                            both_answers(&zones, &ff.frame, &run.out)
                        ),
                        hexed(),
                    ),
                    Err(panic) => fails.add("XDP", "the check panicked", panic, hexed()),
                }
            }
            a => fails.add(
                "XDP",
                action_name(a),
                format!("{kind}: counted {:?}", run.counted),
                hexed(),
            ),
        }
        if let FrameKind::Valid(q) = &ff.kind {
            let want = if martian(&ff.frame) {
                Ok(Expect::Passed(Stat::PassMartian))
            } else {
                catch(|| expect(&zones, q, PAYLOAD))
            };
            match want {
                Ok(want) if Some(want) != got => fails.add(
                    "XDP",
                    "the program differs from the oracle",
                    format!(
                        "oracle {want:?}, program {} {:?}\n{}",
                        action_name(run.action),
                        run.counted,
                        both_answers(&zones, &ff.frame, &run.out)
                    ),
                    hexed(),
                ),
                Ok(_) => {}
                Err(panic) => fails.add("XDP", "the oracle panicked", panic, hexed()),
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "bench: fuzz: XDP: {frames} frames in {secs:.0} s, {answered} answered, {} mismatches",
        fails.count
    );
    Ok(json!({
        "frames": frames,
        "frames_planned": p.frames,
        "answered": answered,
        "answered_bad_checksum": answered_bad_csum,
        "passed": passed,
        "passed_total": passed.values().sum::<u64>(),
        "not_ours": not_ours,
        "refused_by_test_run": refused,
        "by_kind": by_kind.iter().map(|(k, (n, a))| (k.to_string(), json!({"frames": n, "answered": a}))).collect::<serde_json::Map<_, _>>(),
        "mismatches": fails.json(),
        "secs": secs,
    }))
}

/// The program's answer and the fallback's to the DNS bytes of `frame`, for a report.
fn both_answers(zones: &ZoneSet, frame: &[u8], out: &[u8]) -> String {
    let query = parse_udp(frame).map(|p| p.payload);
    let xdp = match parse_udp(out) {
        Some(p) if out != frame => show_dns(&p.payload),
        _ => "(frame left as it was)".into(),
    };
    let fb = match query.as_deref().map(|q| fallback_udp(zones, q)) {
        Some(Some(r)) => show_dns(&r),
        Some(None) => "(no answer)".into(),
        None => "(the frame does not parse as UDP)".into(),
    };
    format!("  XDP:      {xdp}\n  fallback: {fb}")
}

// ---------------------------------------------------------------------------------------------
// XDP against the fallback over mutated zones

/// Valid queries through the program over maps compiled from zone data the zone-file fuzzer made
/// (`testkit::fuzz::mutated_zone_set`): the compiler meets names, types and shapes nobody wrote
/// by hand. Every answer must equal the fallback's; every query must get what the oracle says.
fn xdp_over_mutated_zones(p: &FuzzParams) -> Result<Value> {
    let fixture = fixture::zones();
    let seeds = seed_zone_files(&fixture);
    let listen = SocketAddr::new(IpAddr::from([0u8; 16]), PORT);
    let mut runner = catch(|| XdpRunner::load(listen, PAYLOAD))
        .map_err(|e| anyhow!("loading the XDP program (BPF_PROG_TEST_RUN needs root): {e}"))?;
    let mut fz = FrameFuzzer::new(p.seed ^ 0x2035_e5e5, &fixture, PORT);
    let (rounds, per_zone) = (p.zone_rounds, 500u64);
    let mut fails = Failures::default();
    let (mut zones_done, mut frames, mut answered, mut oracle_panics) = (0u64, 0u64, 0u64, 0u64);
    let start = Instant::now();
    let cap = Duration::from_secs_f64(p.frames_secs);
    while zones_done < rounds && start.elapsed() < cap {
        let Some((zones, apex)) = mutated_zone_set(&mut fz.gen.rng, &seeds) else {
            continue;
        };
        zones_done += 1;
        if let Err(e) = catch(|| runner.sync(&zones)) {
            let text = zones
                .zone(&apex)
                .map(dns_user::zonefile::export)
                .unwrap_or_default();
            fails.add(
                "XDP zones",
                "full_sync panicked",
                format!("{e}\n{text}"),
                hex(text.as_bytes()),
            );
            continue;
        }
        let mut gen = testkit::fixture::Gen::new(fz.below(0, usize::MAX) as u64, &zones, PORT);
        for _ in 0..per_zone {
            frames += 1;
            let q = gen.query();
            let v6 = fz.coin(0.5);
            let (src, dst) = if v6 {
                ("[2001:db8::2]:40000", "[2001:db8::1]:5300")
            } else {
                ("192.0.2.2:40000", "192.0.2.1:5300")
            };
            let spec = FrameSpec::udp(src.parse()?, dst.parse()?);
            let frame = build_frame(&spec, &q.to_wire());
            let Ok(run) = runner.run(&frame) else {
                fails.add(
                    "XDP zones",
                    "test_run refused a frame",
                    String::new(),
                    hex(&frame),
                );
                continue;
            };
            let got = match (run.action, run.single()) {
                (XDP_TX, Some(s)) => Some(Expect::Answered(s)),
                (XDP_PASS, Some(s)) => Some(Expect::Passed(s)),
                _ => None,
            };
            let show = || {
                let text = zones
                    .zone(&apex)
                    .map(dns_user::zonefile::export)
                    .unwrap_or_default();
                format!(
                    "{}\n--- zone {apex}\n{text}",
                    both_answers(&zones, &frame, &run.out)
                )
            };
            if run.action == XDP_TX {
                answered += 1;
                match catch(|| check_tx(&zones, &frame, &run.out)) {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => fails.add(
                        "XDP zones",
                        "XDP_TX differs from the fallback",
                        format!("{e}\n{}", show()),
                        hex(&frame),
                    ),
                    Err(e) => fails.add("XDP zones", "the check panicked", e, hex(&frame)),
                }
            } else if got.is_none() {
                fails.add(
                    "XDP zones",
                    action_name(run.action),
                    format!("counted {:?}", run.counted),
                    hex(&frame),
                );
            }
            match catch(|| expect(&zones, &q, PAYLOAD)) {
                Ok(want) if Some(want) != got => fails.add(
                    "XDP zones",
                    "the program differs from the oracle",
                    format!(
                        "oracle {want:?}, program {} {:?}\n{}",
                        action_name(run.action),
                        run.counted,
                        show()
                    ),
                    hex(&frame),
                ),
                Ok(_) => {}
                // The oracle assumes hand-written zones; where it can't judge, the answer was
                // still compared with the fallback above.
                Err(_) => oracle_panics += 1,
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "bench: fuzz: XDP over {zones_done} mutated zone sets: {frames} queries in {secs:.0} s, {answered} answered, {} mismatches",
        fails.count
    );
    Ok(json!({
        "zone_sets": zones_done,
        "frames": frames,
        "answered": answered,
        "oracle_could_not_judge": oracle_panics,
        "mismatches": fails.json(),
        "secs": secs,
    }))
}

// ---------------------------------------------------------------------------------------------
// The fallback's request parser

/// Answers kept to be fed back as queries.
const ANSWERS_KEPT: usize = 500;

fn fallback_parser(p: &FuzzParams) -> Value {
    let zones = fixture::zones();
    // Its own stream, from the same seed.
    let mut fz = FrameFuzzer::new(p.seed ^ 0xfa11_bac4, &zones, PORT);
    let configs = [
        FallbackConfig::default(),
        FallbackConfig {
            allow_transfer: true,
            ..FallbackConfig::default()
        },
    ];
    let mut fails = Failures::default();
    let mut answered = 0u64;
    let mut dropped = 0u64;
    let mut rcodes: BTreeMap<String, u64> = BTreeMap::new();
    let mut answers: Vec<Vec<u8>> = Vec::new();
    let start = Instant::now();
    let cap = Duration::from_secs_f64(p.parser_secs);
    let mut inputs = 0u64;
    while inputs < p.parser_inputs && start.elapsed() < cap {
        inputs += 1;
        let transport = if fz.coin(0.5) {
            Transport::Udp
        } else {
            Transport::Tcp
        };
        let cfg = &configs[usize::from(fz.coin(0.2))];
        let input = if !answers.is_empty() && fz.coin(0.15) {
            // An answer made a query again (QR cleared) and mutated: records in every section,
            // compressed names, other types, for the parser to read past.
            let mut m = answers[fz.below(0, answers.len())].clone();
            m[2] &= 0x7f;
            mutate_dns_random(&mut fz.gen.rng, &mut m, 3);
            m
        } else {
            fz.message()
        };
        match catch(|| handle(&zones, &input, transport, cfg)) {
            Err(panic) => fails.add("fallback", "panic", panic, hex(&input)),
            Ok(reply) => {
                match &reply {
                    Some(r) => {
                        answered += 1;
                        if r.len() > 40 {
                            if answers.len() < ANSWERS_KEPT {
                                answers.push(r.clone());
                            } else {
                                let at = fz.below(0, ANSWERS_KEPT);
                                answers[at] = r.clone();
                            }
                        }
                        let rc = Message::from_vec(r)
                            .map(|m| m.response_code().to_string())
                            .unwrap_or_else(|_| "undecodable".into());
                        *rcodes.entry(rc).or_default() += 1;
                    }
                    None => dropped += 1,
                }
                let other = match transport {
                    Transport::Udp => Transport::Tcp,
                    Transport::Tcp => Transport::Udp,
                };
                let alike = match catch(|| handle(&zones, &input, other, cfg)) {
                    Err(panic) => Err(format!("panic over {other:?}: {panic}")),
                    Ok(o) => {
                        let (u, t) = match transport {
                            Transport::Udp => (reply.as_deref(), o.as_deref()),
                            Transport::Tcp => (o.as_deref(), reply.as_deref()),
                        };
                        check_udp_tcp_alike(&input, u, t)
                    }
                };
                if let Err(e) = alike {
                    fails.add("fallback", "UDP and TCP differ", e, hex(&input));
                }
                if let Err(e) =
                    check_fallback_reply(&input, transport, cfg.udp_payload, reply.as_deref())
                {
                    let answer = reply.as_deref().map_or("(none)".into(), show_dns);
                    fails.add(
                        "fallback",
                        e.split(':').next().unwrap_or(&e),
                        format!("{transport:?}: {e}\n  answer: {answer}"),
                        hex(&input),
                    );
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "bench: fuzz: fallback parser: {inputs} inputs in {secs:.0} s, {} failures",
        fails.count
    );
    json!({
        "inputs": inputs,
        "answered": answered,
        "dropped": dropped,
        "rcodes": rcodes,
        "failures": fails.json(),
        "secs": secs,
    })
}

// ---------------------------------------------------------------------------------------------
// The zone-file parser

/// Most files kept to mutate further (accepted mutants join the seeds).
const CORPUS_MAX: usize = 2000;

fn zone_file_parser(p: &FuzzParams) -> Value {
    let zones = fixture::zones();
    let mut fz = FrameFuzzer::new(p.seed ^ 0x2013_f11e, &zones, PORT);
    let seeds = seed_zone_files(&zones);
    let mut corpus = seeds.clone();
    let mut fails = Failures::default();
    let (mut accepted, mut refused) = (0u64, 0u64);
    let start = Instant::now();
    let cap = Duration::from_secs_f64(p.parser_secs);
    let mut inputs = 0u64;
    while inputs < p.parser_inputs && start.elapsed() < cap {
        inputs += 1;
        let (apex, parent) = &corpus[fz.below(0, corpus.len())];
        let mut text = parent.clone();
        for _ in 0..fz.below(1, 4) {
            text = mutate_zone_text(&mut fz.gen.rng, &text);
        }
        // Named as an import names it, or by its SOA as `serve --zone-file` reads it.
        let zone = fz.coin(0.7).then_some(apex);
        match catch(|| zone_file_round_trip(&text, zone)) {
            Err(panic) => fails.add("zone file", "panic", panic, hex(text.as_bytes())),
            Ok(Err(e)) => fails.add(
                "zone file",
                e.lines().next().unwrap_or(""),
                format!("{e}\n--- input\n{text}"),
                hex(text.as_bytes()),
            ),
            Ok(Ok(ZoneFileOutcome::Refused)) => refused += 1,
            Ok(Ok(ZoneFileOutcome::RoundTripped)) => {
                accepted += 1;
                if text != *parent {
                    let entry = (apex.clone(), text);
                    if corpus.len() < CORPUS_MAX {
                        corpus.push(entry);
                    } else {
                        let at = fz.below(seeds.len(), CORPUS_MAX);
                        corpus[at] = entry;
                    }
                }
            }
        }
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "bench: fuzz: zone-file parser: {inputs} inputs in {secs:.0} s, {accepted} accepted, {} failures",
        fails.count
    );
    json!({
        "inputs": inputs,
        "seeds": seeds.len(),
        "accepted": accepted,
        "refused": refused,
        "corpus": corpus.len(),
        "failures": fails.json(),
        "secs": secs,
    })
}
