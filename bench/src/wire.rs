//! Sections 2 and 3: answers per second on the wire (kxdpgun at its highest rate, with and
//! without threaded NAPI) and server CPU per answer at a fixed offered rate (threaded NAPI, so
//! that the server's share of the kernel work runs in its own, pinned thread).

use std::{
    os::fd::AsFd as _,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::{json, Value};

use crate::{
    rawbpf,
    servers::{self, Server, Setup},
    sys::{self, Bed, CLIENT_CPU, C_IF, SERVER, SERVER_CPU, S_IF},
    Opts,
};

/// What one kxdpgun run printed.
#[derive(Debug, Clone, Default)]
pub struct Kx {
    pub sent: u64,
    pub replies: u64,
    pub noerror: u64,
    pub nxdomain: u64,
    pub secs: u64,
}

fn field(out: &str, prefix: &str) -> u64 {
    out.lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix(prefix)?;
            rest.split_whitespace().next()?.parse().ok()
        })
        .unwrap_or(0)
}

/// `kxdpgun -t SECS -Q RATE -i QFILE -I ebc -R MAC -F 0 SERVER` in the client namespace, pinned to the
/// client CPU; its XDP program is removed from the client end afterwards, whatever happened.
pub fn kxdpgun(bed: &Bed, qfile: &Path, rate: u64, secs: u64) -> Result<Kx> {
    // The server's MAC given, not looked up: with no traffic before, there is no neighbour entry.
    let mac = bed.mac(&bed.s, S_IF)?;
    let mut cmd = bed.exec_on(&bed.c, CLIENT_CPU, "kxdpgun");
    cmd.args(["-t", &secs.to_string(), "-Q", &rate.to_string(), "-i"])
        .arg(qfile)
        .args([
            "-I",
            C_IF,
            "-R",
            &mac,
            "-F",
            &CLIENT_CPU.to_string(),
            SERVER,
        ]);
    let out = testkit::try_run_ok(&mut cmd, Duration::from_secs(secs + 30));
    bed.xdp_off(&bed.c, C_IF);
    let out = out?;
    Ok(Kx {
        sent: field(&out, "total queries:"),
        replies: field(&out, "total replies:"),
        noerror: field(&out, "responded NOERROR:"),
        nxdomain: field(&out, "responded NXDOMAIN:"),
        secs,
    })
}

/// Threaded NAPI on both ends (GRO on, so that veth has NAPI instances even without an XDP
/// program), or back to veth's defaults.
pub fn set_threaded(bed: &Bed, on: bool) -> Result<()> {
    for (ns, dev) in [(&bed.s, S_IF), (&bed.c, C_IF)] {
        if on {
            sys::run_ok(bed.exec(ns, "ethtool").args(["-K", dev, "gro", "on"]))?;
            bed.sysfs_write(ns, dev, "threaded", "1")?;
        } else {
            let _ = bed.sysfs_write(ns, dev, "threaded", "0");
            sys::run_ok(bed.exec(ns, "ethtool").args(["-K", dev, "gro", "off"]))?;
        }
    }
    if on {
        pin_napi()?;
    }
    Ok(())
}

/// Server end's NAPI thread to the server CPU, the client end's to the client CPU.
pub fn pin_napi() -> Result<()> {
    sys::pin_tasks(&sys::napi_threads(S_IF), SERVER_CPU)?;
    sys::pin_tasks(&sys::napi_threads(C_IF), CLIENT_CPU)?;
    Ok(())
}

/// CPU time snapshot: the server's processes and the server end's NAPI threads (ns), and the
/// server CPU's busy and softirq ticks.
#[derive(Clone, Copy, Debug)]
pub struct CpuSnap {
    proc_ns: u64,
    napi_ns: u64,
    busy_ticks: u64,
    softirq_ticks: u64,
    at: Instant,
}

pub fn cpu_snap(pid: Option<u32>) -> CpuSnap {
    let proc_ns = pid
        .map(|p| sys::tree(p).iter().map(|t| sys::process_ns(*t)).sum())
        .unwrap_or(0);
    let napi_ns = sys::threads_ns(&sys::napi_threads(S_IF));
    let ticks = sys::cpu_ticks();
    let (busy, soft) = ticks.get(SERVER_CPU).copied().unwrap_or((0, 0));
    CpuSnap {
        proc_ns,
        napi_ns,
        busy_ticks: busy,
        softirq_ticks: soft,
        at: Instant::now(),
    }
}

fn median_u(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub struct WireParams {
    pub runs: usize,
    pub secs: u64,
    pub max_rate: u64,
    pub fixed_rate: u64,
    pub fixed_secs: u64,
    pub cpu_runs: usize,
}

impl WireParams {
    pub fn new(opts: &Opts) -> Self {
        if opts.quick {
            WireParams {
                runs: 1,
                secs: 3,
                max_rate: 2_000_000,
                fixed_rate: 50_000,
                fixed_secs: 3,
                cpu_runs: 1,
            }
        } else {
            WireParams {
                runs: 3,
                secs: 5,
                max_rate: 2_000_000,
                fixed_rate: 50_000,
                fixed_secs: 5,
                cpu_runs: 3,
            }
        }
    }
}

/// Runs sections 2 (`throughput`) and 3 (`cpu`) as asked; one server start serves both.
pub fn run(
    bed: &mut Bed,
    setup: &Setup,
    p: &WireParams,
    throughput: bool,
    cpu: bool,
    only: &[String],
) -> Result<Value> {
    let picked = |k: &str| only.is_empty() || only.iter().any(|o| o == k);
    let mut results = serde_json::Map::new();
    let modes: Vec<bool> = if throughput {
        vec![false, true]
    } else {
        vec![true]
    };
    for threaded in modes {
        set_threaded(bed, threaded)?;
        let mode = if threaded { "threaded" } else { "softirq" };
        for server in Server::ALL {
            if !picked(server.key()) {
                continue;
            }
            let t = Instant::now();
            // Knot leaves its XDP program on the interface when it exits: start from a clean one.
            bed.xdp_off(&bed.s, S_IF);
            let r = measure_server(bed, setup, p, server, threaded, throughput, cpu && threaded);
            bed.xdp_off(&bed.s, S_IF);
            let v = match r {
                Ok(v) => v,
                Err(e) => {
                    eprintln!("bench: {} ({mode}): {e:#}", server.key());
                    json!({ "error": format!("{e:#}") })
                }
            };
            eprintln!(
                "bench: wire: {} {mode}: {} ({:.0?})",
                server.key(),
                v.get("answers_per_s")
                    .map(|x| format!("{x} answers/s"))
                    .unwrap_or_default(),
                t.elapsed()
            );
            results.insert(format!("{}/{mode}", server.key()), v);
        }
        if cpu && threaded && picked("floor") {
            let v = match floor_on_wire(bed, setup, p) {
                Ok(v) => json!({ "cpu": v }),
                Err(e) => {
                    eprintln!("bench: floor on the wire: {e:#}");
                    json!({ "error": format!("{e:#}") })
                }
            };
            results.insert("floor/threaded".into(), v);
        }
    }
    set_threaded(bed, false)?;
    Ok(Value::Object(results))
}

fn measure_server(
    bed: &Bed,
    setup: &Setup,
    p: &WireParams,
    server: Server,
    threaded: bool,
    throughput: bool,
    cpu: bool,
) -> Result<Value> {
    let mut running = servers::start(bed, setup, server)?;
    // Every thread of the server on the server CPU, whatever affinity it set for itself.
    sys::pin_tree(running.proc.pid(), SERVER_CPU);
    let check = servers::check(bed, setup, server)?;
    let correct = check["wrong"].as_u64() == Some(0);
    let mut out = json!({ "check": check, "correct": correct });
    let pid = running.proc.pid();
    if throughput {
        let mut rates = Vec::new();
        let mut runs = Vec::new();
        for _ in 0..p.runs {
            if threaded {
                pin_napi()?;
            }
            let tx0 = bed.ethtool_sum(&bed.s, S_IF, "xdp_tx");
            let redir0 = bed.ethtool_sum(&bed.s, S_IF, "xdp_redirect");
            let kx = kxdpgun(bed, &setup.qfile, p.max_rate, p.secs)?;
            running.proc.check_running()?;
            let tx = bed.ethtool_sum(&bed.s, S_IF, "xdp_tx") - tx0;
            let redir = bed.ethtool_sum(&bed.s, S_IF, "xdp_redirect") - redir0;
            // Only right answers count: NOERROR replies (every query asks for a name that
            // exists), and nothing if the sample check found a wrong one.
            let good = if correct { kx.noerror } else { 0 };
            rates.push(good as f64 / kx.secs as f64);
            runs.push(json!({
                "sent": kx.sent, "replies": kx.replies, "noerror": kx.noerror, "secs": kx.secs,
                "offered_qps": kx.sent as f64 / kx.secs as f64,
                "xdp_tx": tx, "xdp_redirect": redir,
            }));
        }
        out["runs"] = Value::Array(runs);
        out["answers_per_s"] = json!(median_u(rates).round());
    }
    if cpu {
        let mut samples = Vec::new();
        for _ in 0..p.cpu_runs {
            pin_napi()?;
            let tx0 = bed.ethtool_sum(&bed.s, S_IF, "xdp_tx");
            let before = cpu_snap(Some(pid));
            let kx = kxdpgun(bed, &setup.qfile, p.fixed_rate, p.fixed_secs)?;
            let after = cpu_snap(Some(pid));
            running.proc.check_running()?;
            let tx = bed.ethtool_sum(&bed.s, S_IF, "xdp_tx") - tx0;
            let good = if correct { kx.noerror } else { 0 };
            samples.push(cpu_json(&before, &after, good, &kx, tx));
        }
        out["cpu"] = median_run(samples);
    }
    running.proc.stop();
    Ok(out)
}

/// The run with the median CPU per answer, with every run's figure beside it.
pub fn median_run(mut samples: Vec<Value>) -> Value {
    let key = |v: &Value| v["ns_per_answer"].as_f64().unwrap_or(f64::MAX);
    samples.sort_by(|a, b| key(a).total_cmp(&key(b)));
    let all: Vec<f64> = samples.iter().map(key).collect();
    let mut m = samples.swap_remove(samples.len() / 2);
    m["ns_per_answer_runs"] = json!(all);
    m
}

pub fn cpu_json(before: &CpuSnap, after: &CpuSnap, answers: u64, kx: &Kx, xdp_tx: u64) -> Value {
    let proc_ns = after.proc_ns.saturating_sub(before.proc_ns);
    let napi_ns = after.napi_ns.saturating_sub(before.napi_ns);
    let busy_ms = (after.busy_ticks - before.busy_ticks) as f64 * 10.0;
    let soft_ms = (after.softirq_ticks - before.softirq_ticks) as f64 * 10.0;
    let wall = after.at.duration_since(before.at).as_secs_f64();
    let per = |ns: u64| {
        if answers == 0 {
            0.0
        } else {
            ns as f64 / answers as f64
        }
    };
    json!({
        "offered_qps": kx.sent as f64 / kx.secs as f64,
        "answers": answers,
        "replies": kx.replies,
        "xdp_tx": xdp_tx,
        "process_ms": proc_ns as f64 / 1e6,
        "napi_ms": napi_ns as f64 / 1e6,
        "softirq_ms_server_cpu": soft_ms,
        "busy_ms_server_cpu": busy_ms,
        "wall_s": wall,
        "ns_per_answer": per(proc_ns + napi_ns),
        "ns_per_answer_process": per(proc_ns),
        "ns_per_answer_napi": per(napi_ns),
        "busy_ns_per_answer_server_cpu": if answers == 0 { 0.0 } else { busy_ms * 1e6 / answers as f64 },
    })
}

/// The floor program attached in driver mode to the server end: the least XDP work that sends
/// a frame back. CPU per packet in the server end's NAPI thread, at the same offered rate.
fn floor_on_wire(bed: &mut Bed, setup: &Setup, p: &WireParams) -> Result<Value> {
    let fs = bed.bpffs()?;
    let prog = rawbpf::load_xdp("bench_floor", &rawbpf::prog_floor(), false)?;
    let pin = fs.join("floor");
    let _ = std::fs::remove_file(&pin);
    rawbpf::pin(prog.as_fd(), &pin)?;
    bed.ip(
        &bed.s,
        &[
            "link",
            "set",
            "dev",
            S_IF,
            "xdpdrv",
            "pinned",
            &pin.to_string_lossy(),
        ],
    )
    .context("attaching the floor program")?;
    let r = (|| -> Result<Value> {
        let mut samples = Vec::new();
        for _ in 0..p.cpu_runs {
            pin_napi()?;
            let tx0 = bed.ethtool_sum(&bed.s, S_IF, "xdp_tx");
            let before = cpu_snap(None);
            let kx = kxdpgun(bed, &setup.qfile, p.fixed_rate, p.fixed_secs)?;
            let after = cpu_snap(None);
            let tx = bed.ethtool_sum(&bed.s, S_IF, "xdp_tx") - tx0;
            // The floor answers nothing: its "answers" are the frames it sent back.
            samples.push(cpu_json(&before, &after, tx, &kx, tx));
        }
        Ok(median_run(samples))
    })();
    bed.xdp_off(&bed.s.clone(), S_IF);
    let _ = std::fs::remove_file(&pin);
    r
}
