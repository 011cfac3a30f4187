//! Section 11: the random-subdomain ("water torture") flood. kxdpgun asks for random names under
//! the zone (every answer NXDOMAIN), then for a half-and-half mix with names that exist;
//! answers/s at kxdpgun's highest rate and server CPU per answer at a fixed rate, edgedns's fast
//! path against Knot's XDP mode and NSD, threaded NAPI as in section 3.

use std::{fmt::Write as _, fs, path::Path, time::Instant};

use anyhow::Result;
use serde_json::{json, Value};

use crate::{
    report::{f, num},
    servers::{self, Server, Setup},
    sys::{self, Bed, SERVER_CPU, S_IF},
    wire::{self, Kx},
    zonegen::APEX,
    Opts,
};

pub const SERVERS: [Server; 3] = [Server::EdgeXdp, Server::KnotXdp, Server::Nsd];

/// The two query mixes: key, label, share of random (nonexistent) names in percent.
pub const MIXES: [(&str, &str, u32); 2] = [
    ("random", "100 % random names (NXDOMAIN)", 100),
    ("mixed", "50 % random, 50 % existing names", 50),
];

/// Distinct queries in a query file (kxdpgun goes round it).
const QUERIES: u32 = 100_000;

pub struct FloodParams {
    pub secs: u64,
    pub max_rate: u64,
    pub fixed_rate: u64,
}

impl FloodParams {
    pub fn new(opts: &Opts) -> Self {
        FloodParams {
            secs: if opts.quick { 3 } else { 5 },
            max_rate: 2_000_000,
            fixed_rate: 50_000,
        }
    }
}

/// splitmix64: a fixed sequence of random names, the same in every run.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A kxdpgun query file: `<16 hex digits>.bench.example. A` lines (no such name exists: the
/// zone's names are `n<i>`, `c<i>` and the apex's), `random_pct` percent of them, the rest
/// `n<i>.bench.example. A` for names that exist, interleaved.
pub fn query_file(random_pct: u32, names: u32) -> String {
    let mut s = String::with_capacity(QUERIES as usize * 36);
    let mut state = 0x5eed_u64 + u64::from(random_pct);
    let mut acc = 0u32;
    for k in 0..QUERIES {
        acc += random_pct;
        if acc >= 100 {
            acc -= 100;
            let _ = writeln!(s, "{:016x}.{APEX} A", splitmix(&mut state));
        } else {
            let i = (k.wrapping_mul(7919)) % names.max(1);
            let _ = writeln!(s, "n{i}.{APEX} A");
        }
    }
    s
}

pub fn run(bed: &Bed, setup: &Setup, p: &FloodParams) -> Result<Value> {
    let mut files = Vec::new();
    for (key, _, pct) in MIXES {
        let path = bed.dir.join(format!("flood-{key}.txt"));
        fs::write(&path, query_file(pct, setup.shape.names))?;
        files.push((key, path));
    }
    wire::set_threaded(bed, true)?;
    let mut results = serde_json::Map::new();
    for server in SERVERS {
        let t = Instant::now();
        bed.xdp_off(&bed.s, S_IF);
        let r = measure(bed, setup, p, server, &files);
        bed.xdp_off(&bed.s, S_IF);
        let v = r.unwrap_or_else(|e| {
            eprintln!("bench: flood: {}: {e:#}", server.key());
            json!({ "error": format!("{e:#}") })
        });
        eprintln!("bench: flood: {} ({:.0?})", server.key(), t.elapsed());
        results.insert(server.key().into(), v);
    }
    wire::set_threaded(bed, false)?;
    results.insert(
        "params".into(),
        json!({"secs": p.secs, "max_rate": p.max_rate, "fixed_rate": p.fixed_rate, "queries": QUERIES}),
    );
    Ok(Value::Object(results))
}

fn measure(
    bed: &Bed,
    setup: &Setup,
    p: &FloodParams,
    server: Server,
    files: &[(&str, std::path::PathBuf)],
) -> Result<Value> {
    let mut running = servers::start(bed, setup, server)?;
    sys::pin_tree(running.proc.pid(), SERVER_CPU);
    let check = servers::check(bed, setup, server)?;
    let correct = check["wrong"].as_u64() == Some(0);
    let mut out = json!({ "check": check, "correct": correct });
    let pid = running.proc.pid();
    // Answers: NOERROR and NXDOMAIN replies (each query has one or the other for its right
    // answer), and none if the sample check found a wrong answer.
    let good = |kx: &Kx| if correct { kx.noerror + kx.nxdomain } else { 0 };
    for (key, qfile) in files {
        let mix = one_mix(bed, p, &mut running, pid, qfile, &good)?;
        out[*key] = mix;
    }
    running.proc.stop();
    Ok(out)
}

fn one_mix(
    bed: &Bed,
    p: &FloodParams,
    running: &mut servers::Running,
    pid: u32,
    qfile: &Path,
    good: &dyn Fn(&Kx) -> u64,
) -> Result<Value> {
    wire::pin_napi()?;
    let tx0 = bed.ethtool_sum(&bed.s, S_IF, "xdp_tx");
    let redir0 = bed.ethtool_sum(&bed.s, S_IF, "xdp_redirect");
    let kx = wire::kxdpgun(bed, qfile, p.max_rate, p.secs)?;
    running.proc.check_running()?;
    let tx = bed.ethtool_sum(&bed.s, S_IF, "xdp_tx") - tx0;
    let redir = bed.ethtool_sum(&bed.s, S_IF, "xdp_redirect") - redir0;
    let max = json!({
        "sent": kx.sent, "replies": kx.replies, "noerror": kx.noerror, "nxdomain": kx.nxdomain,
        "offered_qps": kx.sent as f64 / kx.secs as f64,
        "answers_per_s": (good(&kx) as f64 / kx.secs as f64).round(),
        "xdp_tx": tx, "xdp_redirect": redir,
    });
    wire::pin_napi()?;
    let tx0 = bed.ethtool_sum(&bed.s, S_IF, "xdp_tx");
    let before = wire::cpu_snap(Some(pid));
    let kx = wire::kxdpgun(bed, qfile, p.fixed_rate, p.secs)?;
    let after = wire::cpu_snap(Some(pid));
    running.proc.check_running()?;
    let tx = bed.ethtool_sum(&bed.s, S_IF, "xdp_tx") - tx0;
    let mut cpu = wire::cpu_json(&before, &after, good(&kx), &kx, tx);
    cpu["nxdomain"] = json!(kx.nxdomain);
    cpu["noerror"] = json!(kx.noerror);
    Ok(json!({ "max": max, "cpu": cpu }))
}

/// The section's rows in the summary table: edgedns beside Knot's XDP mode under the flood, on
/// answers/s and on CPU per answer. No target is set for the flood: the rows are a comparison.
pub fn summary(s: &mut String, r: &Value) {
    for (key, label, _) in MIXES {
        let a = |srv: &str| f(&r[srv][key]["max"]["answers_per_s"]);
        if let (Some(e), Some(k)) = (a("edgedns_xdp"), a("knot_xdp")) {
            let _ = writeln!(
                s,
                "| flood answers/s, {label} | {} | Knot XDP {} | {}× | none | |",
                num(Some(e), 0),
                num(Some(k), 0),
                num(Some(e / k.max(1.0)), 2),
            );
        }
        let c = |srv: &str| f(&r[srv][key]["cpu"]["ns_per_answer"]).filter(|x| *x > 0.0);
        if let (Some(e), Some(k)) = (c("edgedns_xdp"), c("knot_xdp")) {
            let _ = writeln!(
                s,
                "| flood CPU per answer, {label} | {} ns | Knot XDP {} ns | {} | none | |",
                num(Some(e), 0),
                num(Some(k), 0),
                num(Some(e / k), 2),
            );
        }
    }
}

/// The section's tables for BENCHMARKS.md.
pub fn table(r: &Value) -> String {
    let r = &r["flood"];
    if let Some(e) = r["error"].as_str() {
        return format!("Not measured: {e}\n");
    }
    if r.is_null() {
        return "Not measured in this run.\n".into();
    }
    let mut s = String::new();
    for (key, label, _) in MIXES {
        let _ = writeln!(s, "**{label}**\n");
        let _ = writeln!(
            s,
            "| server | answers/s (max) | offered q/s | NXDOMAIN / NOERROR replies | path evidence (XDP_TX / XDP_REDIRECT) | CPU per answer at {} q/s | of it, server threads / NAPI thread | correct |",
            num(f(&r["params"]["fixed_rate"]), 0)
        );
        let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---|");
        for server in SERVERS {
            let v = &r[server.key()];
            if let Some(e) = v["error"].as_str() {
                // The first line only: a table cell holds no log.
                let e = e.lines().next().unwrap_or("");
                let _ = writeln!(s, "| {} | error: {e} | | | | | | |", server.label());
                continue;
            }
            let m = &v[key]["max"];
            let c = &v[key]["cpu"];
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} / {} | {} / {} | {} ns | {} / {} ns | {} |",
                server.label(),
                num(f(&m["answers_per_s"]), 0),
                num(f(&m["offered_qps"]), 0),
                num(f(&m["nxdomain"]), 0),
                num(f(&m["noerror"]), 0),
                num(f(&m["xdp_tx"]), 0),
                num(f(&m["xdp_redirect"]), 0),
                num(f(&c["ns_per_answer"]), 0),
                num(f(&c["ns_per_answer_process"]), 0),
                num(f(&c["ns_per_answer_napi"]), 0),
                if v["correct"].as_bool() == Some(true) {
                    "yes"
                } else {
                    "**no**"
                },
            );
        }
        s.push('\n');
    }
    s
}
