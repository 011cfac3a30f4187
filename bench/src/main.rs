//! `edgedns-bench`: the measurements behind `cargo xtask bench` (BENCHMARKS.md has the method
//! and the figures). Runs as root: it creates two network namespaces and a veth pair, loads XDP
//! programs and starts the servers it compares; everything it creates is removed when it ends,
//! also on error.

mod delay;
mod fallback;
mod fleet;
mod flood;
mod fuzz;
mod kernel;
mod memory;
mod rawbpf;
mod report;
mod rrl;
mod servers;
mod sys;
mod update;
mod wire;
mod writes;
mod zonegen;

use std::{
    fs,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use clap::Parser;
use serde_json::{json, Value};

pub const SECTIONS: [&str; 11] = [
    "kernel", "wire", "cpu", "update", "memory", "writes", "fuzz", "fallback", "fleet", "rrl",
    "flood",
];

#[derive(Parser, Debug, Clone)]
#[command(name = "edgedns-bench", about = "edgedns benchmarks (root)")]
pub struct Opts {
    /// Fewer and shorter runs; 100k names instead of 1M for the memory figures.
    #[arg(long)]
    pub quick: bool,
    /// Run only these sections: kernel, wire, cpu, update, memory, writes, fuzz, fallback, fleet,
    /// rrl, flood (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// The daemon to measure (a release build).
    #[arg(long, required_unless_present = "from_json")]
    pub edgedns: Option<PathBuf>,
    /// Measure nothing: render the report from the results of an earlier run.
    #[arg(long)]
    pub from_json: Option<PathBuf>,
    /// Where to write the results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where to write the report (BENCHMARKS.md).
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Sections 2 and 3 only for these servers (edgedns_xdp, edgedns_fallback, knot_xdp,
    /// knot_udp, nsd, floor): for profiling one of them.
    #[arg(long, value_delimiter = ',')]
    pub servers: Vec<String>,
    /// Names in the served zone.
    #[arg(long, default_value_t = 10_000)]
    pub names: u32,
    /// An earlier edgedns build whose fallback section 8 measures too, for a before/after in
    /// one run.
    #[arg(long)]
    pub fallback_baseline: Option<PathBuf>,
    /// The fuzz section's seed (default: from the clock); every run prints and records its own,
    /// so a mismatch can be replayed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// The fleet section only for these systems (knot, edgedns; default both).
    #[arg(long, value_delimiter = ',')]
    pub fleet_systems: Vec<String>,
    /// The fleet section only with these numbers of edges (default 3,8).
    #[arg(long, value_delimiter = ',')]
    pub fleet_edges: Vec<usize>,
    /// The fleet section only at these one-way delays to etcd, in ms (default 0,10,50).
    #[arg(long, value_delimiter = ',')]
    pub fleet_delays: Vec<u64>,
}

fn main() -> Result<()> {
    let opts = Opts::parse();
    for s in &opts.only {
        if !SECTIONS.contains(&s.as_str()) {
            bail!("unknown section {s:?}: one of {}", SECTIONS.join(", "));
        }
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("edgedns-bench needs root (namespaces, XDP, BPF_PROG_TEST_RUN): run it through `cargo xtask bench`");
    }
    if let Some(p) = &opts.from_json {
        let results: Value = serde_json::from_slice(
            &fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )?;
        let summary = report::summary(&results);
        println!("\n{summary}");
        if let Some(out) = &opts.report {
            fs::write(out, render(&results, &summary))?;
            eprintln!("bench: report written to {}", out.display());
        }
        return Ok(());
    }
    let edgedns = opts.edgedns.clone().context("--edgedns is required")?;
    let want = |s: &str| opts.only.is_empty() || opts.only.iter().any(|o| o == s);
    let started = Instant::now();
    let started_at = sh("date -u '+%Y-%m-%d %H:%M UTC'");
    let load_before = sys::loadavg();
    let mut results = serde_json::Map::new();
    let mut timings = serde_json::Map::new();

    if want("kernel") {
        let t = Instant::now();
        eprintln!("bench: section 1: per-packet cost in the kernel (BPF_PROG_TEST_RUN)");
        results.insert("kernel".into(), section(kernel::run(&opts)));
        timings.insert("kernel".into(), json!(t.elapsed().as_secs_f64()));
    }
    if want("fuzz") {
        let t = Instant::now();
        eprintln!("bench: section 7: fuzzing (XDP against the fallback, the parsers)");
        results.insert(
            "fuzz".into(),
            section(fuzz::run(&fuzz::FuzzParams::new(&opts))),
        );
        timings.insert("fuzz".into(), json!(t.elapsed().as_secs_f64()));
    }
    if want("fleet") {
        let t = Instant::now();
        eprintln!("bench: section 9: the fleet (etcd and edges; Knot primary and secondaries)");
        let p = fleet::FleetParams::new(&opts);
        let sys =
            |s: &str| opts.fleet_systems.is_empty() || opts.fleet_systems.iter().any(|x| x == s);
        results.insert(
            "fleet".into(),
            section(fleet::run(&edgedns, &p, sys("knot"), sys("edgedns"))),
        );
        timings.insert("fleet".into(), json!(t.elapsed().as_secs_f64()));
    }
    if [
        "wire", "cpu", "update", "memory", "writes", "fallback", "rrl", "flood",
    ]
    .iter()
    .any(|s| want(s))
    {
        let dir = std::env::temp_dir().join(format!("edgedns-bench-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let r = (|| -> Result<()> {
            let mut bed = sys::Bed::new(&dir)?;
            if [
                "wire", "cpu", "update", "writes", "fallback", "rrl", "flood",
            ]
            .iter()
            .any(|s| want(s))
            {
                let setup = servers::Setup::new(
                    &dir,
                    &edgedns,
                    zonegen::Shape {
                        names: opts.names,
                        extras: true,
                    },
                )?;
                if want("wire") || want("cpu") {
                    let t = Instant::now();
                    eprintln!("bench: sections 2 and 3: answers/s on the wire, CPU per answer");
                    let p = wire::WireParams::new(&opts);
                    results.insert(
                        "wire".into(),
                        section(wire::run(
                            &mut bed,
                            &setup,
                            &p,
                            want("wire"),
                            want("cpu"),
                            &opts.servers,
                        )),
                    );
                    results.insert(
                        "wire_params".into(),
                        json!({"runs": p.runs, "secs": p.secs, "max_rate": p.max_rate,
                               "fixed_rate": p.fixed_rate, "fixed_secs": p.fixed_secs,
                               "cpu_runs": p.cpu_runs}),
                    );
                    timings.insert("wire".into(), json!(t.elapsed().as_secs_f64()));
                }
                if want("update") {
                    let t = Instant::now();
                    eprintln!("bench: section 4: update to visible");
                    let p = update::UpdateParams::new(&opts);
                    results.insert("update".into(), section(update::run(&bed, &setup, &p)));
                    timings.insert("update".into(), json!(t.elapsed().as_secs_f64()));
                }
                if want("writes") {
                    let t = Instant::now();
                    eprintln!("bench: section 6: writes against reads");
                    let p = writes::WritesParams::new(&opts);
                    results.insert("writes".into(), section(writes::run(&bed, &setup, &p)));
                    timings.insert("writes".into(), json!(t.elapsed().as_secs_f64()));
                }
                if want("fallback") {
                    let t = Instant::now();
                    eprintln!("bench: section 8: the fallback on every core, against NSD");
                    let p = fallback::FallbackParams::new(&opts);
                    let base = opts.fallback_baseline.as_deref();
                    results.insert(
                        "fallback".into(),
                        section(fallback::run(&bed, &setup, &p, base)),
                    );
                    timings.insert("fallback".into(), json!(t.elapsed().as_secs_f64()));
                }
                if want("rrl") {
                    let t = Instant::now();
                    eprintln!("bench: section 10: response-rate limiting at XDP");
                    let p = rrl::RrlParams::new(&opts);
                    results.insert("rrl".into(), section(rrl::run(&bed, &setup, &p)));
                    timings.insert("rrl".into(), json!(t.elapsed().as_secs_f64()));
                }
                if want("flood") {
                    let t = Instant::now();
                    eprintln!("bench: section 11: the random-subdomain flood");
                    let p = flood::FloodParams::new(&opts);
                    results.insert("flood".into(), section(flood::run(&bed, &setup, &p)));
                    timings.insert("flood".into(), json!(t.elapsed().as_secs_f64()));
                }
            }
            if want("memory") {
                let t = Instant::now();
                let names = if opts.quick { 100_000 } else { 1_000_000 };
                eprintln!("bench: section 5: memory and start-up at {names} names");
                results.insert("memory".into(), section(memory::run(&bed, &edgedns, names)));
                timings.insert("memory".into(), json!(t.elapsed().as_secs_f64()));
            }
            drop(bed);
            Ok(())
        })();
        let _ = fs::remove_dir_all(&dir);
        r?;
    }

    let facts = json!({
        "date": started_at,
        "nproc": sh("nproc"),
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-"),
        "kernel": sh("uname -r"),
        "memory": sh("free -g | awk '/Mem:/ {print $2 \" GiB\"}'"),
        "knot": sh("knotd --version 2>&1 | head -1"),
        "nsd": sh("nsd -v 2>&1 | head -1"),
        "kxdpgun": sh("kxdpgun --version 2>&1 | head -1"),
        "rustc": sh("rustc --version 2>/dev/null"),
        "edgedns_commit": sh("git rev-parse --short HEAD 2>/dev/null; git status --porcelain --untracked-files=no 2>/dev/null | wc -l"),
        "loadavg_before": load_before,
        "loadavg_after": sys::loadavg(),
        "quick": opts.quick,
        "only": opts.only,
        "elapsed_s": started.elapsed().as_secs_f64(),
        "section_s": timings,
    });
    results.insert("facts".into(), facts);
    let results = Value::Object(results);
    if let Some(p) = &opts.json {
        fs::write(p, serde_json::to_string_pretty(&results)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    let summary = report::summary(&results);
    println!("\n{summary}");
    if let Some(p) = &opts.report {
        fs::write(p, render(&results, &summary))
            .with_context(|| format!("writing {}", p.display()))?;
        eprintln!("bench: report written to {}", p.display());
    }
    eprintln!(
        "bench: done in {:.0?}",
        Duration::from_secs_f64(started.elapsed().as_secs_f64())
    );
    Ok(())
}

/// A section's result, or its error (the other sections still run).
fn section(r: Result<Value>) -> Value {
    r.unwrap_or_else(|e| {
        eprintln!("bench: section failed: {e:#}");
        json!({ "error": format!("{e:#}") })
    })
}

fn sh(script: &str) -> String {
    Command::new("sh")
        .args(["-c", script])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn render(r: &Value, summary: &str) -> String {
    let facts = &r["facts"];
    let s = |v: &Value| v.as_str().unwrap_or("").to_owned();
    let wp = &r["wire_params"];
    let mut out = String::new();
    out.push_str("# Benchmarks\n\n");
    out.push_str(
        "Written by `cargo xtask bench`. Figures move between machines and with whatever \
         else runs on the box: compare within one run, not across runs.\n\n",
    );
    out.push_str(&format!(
        "## Machine\n\n| | |\n|---|---|\n| date | {} |\n| CPUs (nproc) | {} |\n| CPU | {} |\n| kernel | {} |\n| memory | {} |\n| peers | {}; {}; {} |\n| rustc | {} |\n| edgedns | HEAD {} (files changed in the work tree: {}) |\n| load average (1 min) before / after | {} / {} |\n| run | {}{} in {:.0} s |\n\n",
        s(&facts["date"]),
        s(&facts["nproc"]),
        s(&facts["cpu"]),
        s(&facts["kernel"]),
        s(&facts["memory"]),
        s(&facts["knot"]),
        s(&facts["nsd"]),
        s(&facts["kxdpgun"]),
        s(&facts["rustc"]),
        s(&facts["edgedns_commit"]).lines().next().unwrap_or(""),
        s(&facts["edgedns_commit"]).lines().nth(1).unwrap_or("?"),
        facts["loadavg_before"],
        facts["loadavg_after"],
        if facts["quick"].as_bool() == Some(true) { "--quick" } else { "full" },
        facts["only"].as_array().filter(|a| !a.is_empty()).map(|a| format!(", --only {}", a.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join(","))).unwrap_or_default(),
        facts["elapsed_s"].as_f64().unwrap_or(0.0),
    ));
    out.push_str("## Where we stand\n\n");
    out.push_str(summary);
    out.push('\n');
    out.push_str(include_str!("findings.md"));
    out.push_str("\n## 1. Per-packet cost in the kernel\n\n");
    out.push_str(METHOD_KERNEL);
    out.push_str(&report::kernel_table(r));
    out.push_str("\n## 2. Answers per second on the wire\n\n");
    out.push_str(&format!(
        "{}Runs: median of {} × {} s, kxdpgun offered up to {} q/s.\n\n",
        METHOD_WIRE,
        num(&wp["runs"]),
        num(&wp["secs"]),
        num(&wp["max_rate"])
    ));
    out.push_str(&report::wire_tables(r));
    out.push_str("\n## 3. Server CPU per answer at a fixed offered rate\n\n");
    out.push_str(&format!(
        "{}Offered: {} q/s for {} s; the run with the median CPU per answer of {}.\n\n",
        METHOD_CPU,
        num(&wp["fixed_rate"]),
        num(&wp["fixed_secs"]),
        num(&wp["cpu_runs"])
    ));
    out.push_str(&report::cpu_table(r));
    out.push_str("\n## 4. Update to visible\n\n");
    out.push_str(METHOD_UPDATE);
    out.push_str(&report::update_tables(r));
    out.push_str("\n## 5. Memory and start-up\n\n");
    out.push_str(METHOD_MEMORY);
    out.push_str(&report::memory_table(r));
    out.push_str("\n## 6. Writes against reads\n\n");
    out.push_str(METHOD_WRITES);
    out.push_str(&report::writes_table(r));
    out.push_str("\n## 7. Fuzzing\n\n");
    out.push_str(METHOD_FUZZ);
    out.push_str(&report::fuzz_table(r));
    out.push_str("\n## 8. The fallback on every core\n\n");
    out.push_str(METHOD_FALLBACK);
    out.push_str(&report::fallback_table(r));
    out.push_str("\n## 9. The fleet\n\n");
    out.push_str(METHOD_FLEET);
    out.push_str(&fleet::table(r));
    out.push_str("\n## 10. Response-rate limiting at XDP\n\n");
    out.push_str(METHOD_RRL);
    out.push_str(&rrl::table(r));
    out.push_str("\n## 11. The random-subdomain flood\n\n");
    out.push_str(METHOD_FLOOD);
    out.push_str(&flood::table(r));
    let errors: Vec<String> = [
        "kernel", "wire", "update", "memory", "writes", "fuzz", "fallback", "fleet", "rrl", "flood",
    ]
    .iter()
    .filter_map(|k| r[*k]["error"].as_str().map(|e| format!("- {k}: {e}")))
    .collect();
    if !errors.is_empty() {
        out.push_str("\n## Errors in this run\n\n");
        out.push_str(&errors.join("\n"));
        out.push('\n');
    }
    out.push_str("\n## Reproduce\n\n```sh\ncargo xtask bench                 # everything, writes BENCHMARKS.md\ncargo xtask bench --quick         # shorter runs, 100k names for the memory figures\ncargo xtask bench --only kernel   # one section: kernel, wire, cpu, update, memory, writes, fuzz, fallback, fleet, rrl, flood\n```\n\nRaw results of the last run: `target/edgedns-bench/results.json`.\n");
    out
}

fn num(v: &Value) -> String {
    v.as_u64().map(|n| n.to_string()).unwrap_or("?".into())
}

const METHOD_FALLBACK: &str = "The fallback alone: queries the fast path passes up take this path, and with `--xdp-mode off` every query does. edgedns `serve --xdp-mode off` on port 53 and NSD (RRL off, minimal responses) on port 5301 (one server process) and 5302 (one server process per core, `reuseport: yes`: a socket each) run at once in the server namespace, unpinned, serving the same zone of 10,000 names; dnsperf in the client namespace (8 sockets, up to 400 queries outstanding) asks for the query file's A records. *CPU per answer*: dnsperf at a fixed 50,000 q/s against edgedns, then NSD, in turn; a server's CPU is utime + stime from `/proc/PID/stat` (all its threads, and NSD's child processes) over the run, divided by the answers dnsperf counted. Like for like: edgedns with N UDP sockets (SO_REUSEPORT), a thread each, against NSD with N server processes, a socket each; N = the cores (edgedns's default), then N = 1. The query file goes round its 10,000 names, so after the first seconds edgedns's packet cache answers nearly every query without a lookup; each N is therefore run again with `--packet-cache-bytes 0` (every answer looked up and encoded), in turn with NSD once more. The kernel's receive work for the veth (softirq) is charged to whichever task it interrupts, mostly dnsperf's on the sending CPU, for both servers alike. *Throughput*: dnsperf as fast as it goes against edgedns started with `--udp-workers 1`, then `--udp-workers 2`, and against NSD. dnsperf shares the two CPUs with the server, so these are throughputs of the pair on this box, not of the server alone. Beside each edgedns figure, the CPU time of each of its UDP threads (`/proc/PID/task`): how the kernel spread the queries over the SO_REUSEPORT sockets, each thread free to run on its own core.\n\n";
const METHOD_FLEET: &str = include_str!("fleet-method.md");

const METHOD_RRL: &str = "edgedns `serve --xdp-mode driver --rrl-rate 1000 --rrl-slip 2`, pinned to CPU 1, serving the zone of 10,000 names, with `edgedns xdp-pass` on the client end so XDP_TX answers arrive. From the client namespace two senders run at once for 5 s, each one UDP socket paced by the clock and asking for A records of names that exist (one response class, positive): the *loud* one from 10.212.0.2 offers 10,000 q/s, ten times the limit; the *quiet* one from a second /24 (10.213.7.2) offers 100 q/s. Replies are counted on the senders' sockets: a reply with TC=1 is a slip, any other an answer, a query without reply was dropped. The bucket starts full (a burst of one second's worth, as in Knot and NSD), so the loud prefix's answered/s is taken over the seconds after the first, when the burst is long spent; the whole-run counts are shown too. The daemon's own counters (`/v1/stats` `xdp.rrl`, the same as `edgedns_xdp_rrl_total{outcome}` in /metrics) over the run are shown beside them. Targets: the loud prefix answered within ±10 % of the limit, the quiet prefix answered in full.\n\n";

const METHOD_FLOOD: &str = "The random-subdomain (\"water torture\") flood, on the bed of section 2 with threaded NAPI: kxdpgun from the client namespace with a query file of 100,000 queries, either all `<16 random hex digits>.bench.example. A` (no such name: every answer is NXDOMAIN) or half such names and half `n<i>.bench.example. A` for names that exist, interleaved. Servers as in section 2: edgedns `serve --xdp-mode driver`, Knot 3.2 with `xdp: listen` (AF_XDP) and NSD (RRL off), each pinned to CPU 1 and first checked with the sample of section 2. *answers/s*: kxdpgun at up to 2,000,000 q/s for 5 s; answers are the NXDOMAIN plus NOERROR replies kxdpgun counts (per rcode), and none if the sample check found a wrong answer. *CPU per answer*: kxdpgun at 50,000 q/s for 5 s, the server's threads plus the server end's NAPI thread as in section 3, divided by those answers. One run each.\n\n";

const METHOD_WRITES: &str = "edgedns `serve --xdp-mode driver`, not pinned (the writer and the fallback may each take a CPU), serving the zone its `--zone` flag creates. A prober in the client namespace asks the fallback for the zone's SOA (the fast path passes SOA up) once a millisecond, each probe waiting up to 2 s for its answer; its figures are taken over the probes sent while each write ran. The writes, from the server namespace: one `POST /v1/zones/{zone}/changes` of 10,000 A records (one transaction), then `PUT /v1/zones/{zone}/zonefile` replacing the zone with a master file of N A records (`--zonefile-max-bytes` raised for it). Targets: the batch within 0.5 s, fallback p99 within 5 ms while it runs, and no probe waiting over 5 ms during the import.\n\n";

const METHOD_KERNEL: &str = "The XDP program is loaded as the daemon loads it (`dns_user::loader::load_detached`) and its maps filled from the benchmark zone (`compile::full_sync`, 10,000 names). Each query frame is run through `BPF_PROG_TEST_RUN` with a large `repeat`; ns per run = the kernel's duration / repeat, median of interleaved rounds.\n\n`repeat` alone would be wrong here: the test run reuses one buffer, so from the second run on the program sees its own answer (source port 53) and returns early. A hand-assembled wrapper program (bench/src/rawbpf.rs) therefore puts the query back (`bpf_xdp_adjust_tail` plus immediate stores) and tail-calls the program; the wrapper's own cost, measured with `return XDP_TX` as the target, is taken off, and the STATS counters confirm that every run answered. The floor is a second hand-assembled program that swaps MAC, IP addresses and UDP ports and returns XDP_TX (loaded with the raw bpf(2) syscall, so dns-ebpf is untouched). Both figures include the test-run loop's own cost per run (the `return XDP_TX` row); the program-only columns take it off.\n\n";

const METHOD_WIRE: &str = "Two network namespaces joined by a veth pair; the server under test in one (pinned to CPU 1 with taskset), kxdpgun in the other (pinned to CPU 0, `kxdpgun -t SECS -Q RATE -i QUERYFILE -I ebc -R SERVER_MAC -F 0 10.212.0.1`; its XDP program is removed after each run, and it is also what lets veth deliver edgedns's XDP_TX frames). Every server serves the same zone of 10,000 names from its own store or zone file; the query file asks for each name's A record in a scrambled order. Answers counted: NOERROR replies as kxdpgun reports them, and only if a sample check (40 A, 10 AAAA, 10 CNAME, 10 NXDOMAIN queries from the client namespace, compared with the zone) found no wrong answer. \"Path evidence\" is the server veth's `ethtool -S` XDP_TX / XDP_REDIRECT counters over the run: edgedns's fast path answers with XDP_TX, Knot's XDP mode redirects to AF_XDP.\n\n*softirq NAPI* is veth's default: the receive work of the server end, XDP program included, runs in softirq on the sender's CPU (CPU 0, beside kxdpgun). *threaded NAPI*: `echo 1 > /sys/class/net/DEV/threaded` on both ends, the server end's NAPI thread pinned to CPU 1 and the client end's to CPU 0; veth has NAPI instances without an XDP program only with GRO on, so GRO is on in this mode. Servers: edgedns `serve --xdp-mode driver` (fast path) and `--xdp-mode off` (fallback only); Knot 3.2 with `xdp: listen: ebs` (AF_XDP) and without; NSD with `rrl-ratelimit: 0`, `minimal-responses: yes`, one server process.\n\n";

const METHOD_CPU: &str = "Threaded NAPI as above, kxdpgun at a fixed rate below every server's ceiling. Server CPU = the CPU time (`/proc/TID/schedstat`, ns) of every thread of the server's processes plus the server end's NAPI thread (where XDP programs, AF_XDP receive and the kernel's UDP receive run), divided by the NOERROR answers. The kernel here has no IRQ time accounting, so softirq work that interrupts a task is charged to that task; the softirq ticks of the server CPU are shown as a check (they should be near 0 with threaded NAPI). The whole-CPU busy column counts everything that ran on CPU 1, including other people's compiles on a shared box. The floor row attaches the floor program in driver mode (`ip link set dev ebs xdpdrv pinned ...`): the CPU per frame of the least an XDP program must do to send a frame back, on the same path.\n\n";

const METHOD_UPDATE: &str = "edgedns runs with its fast path on the server end (and `edgedns xdp-pass` on the client end so XDP_TX answers arrive). For each new name a thread in the client namespace starts polling it over UDP (one query per round trip, 200 ms timeout per query) and a thread in the server namespace then sends `PUT /v1/zones/bench.example./records/uN/A` on a keep-alive connection; *visible* is from just before the request is written to the first poll answer carrying the new address. Knot (UDP mode, `journal-content: none`, `zonefile-sync: -1`) gets the same names through `knotc zone-begin`, `zone-set`, `zone-commit`, each a process; the cost of starting knotc at all is `knotc status`. Sustained: PUTs for a few seconds on one and on four connections, and `POST /v1/zones/{zone}/changes` with 100 changes a request. The daemon's threads are pinned to CPU 1 like every server here; the poller runs on CPU 0, where the fast path's work for its queries also runs (softirq NAPI).\n\n";

const METHOD_MEMORY: &str = "A zone of only A records. In the benchmark process: the XDP object loaded (not attached), `/proc/meminfo` and the maps' `memlock:` (from `/proc/self/fdinfo`) read before and after `compile::full_sync` fills the maps. The name maps are `BPF_F_NO_PREALLOC` hashes: their `memlock` is the kernel's estimate of use (element size × elements + buckets) rather than a reservation, so the Slab growth is shown beside it; the headline uses the memlock of all the program's hash maps (the name maps, however many there are, and ZONES) divided by records, buckets included. Then the same records are written to a store (one transaction) and `edgedns serve` is timed from spawn to its `ready` log line (store load + map fill + attach), and its RSS read: first pinned to one CPU (as the servers of the other sections run), then not pinned. The unpinned start is the headline: on an edge host the daemon has every CPU, and its start reads the store and compiles on all of them; the pinned one shows what of it is parallel. The store read and the compile are also timed apart in the benchmark process (compile on one thread).\n\n";

const METHOD_FUZZ: &str = "Seeded loops, one seed for all (replay a run with `cargo xtask bench --only fuzz --seed N`); generators and checks in `tests/src/fuzz.rs`. *XDP against the fallback*: frames through the real program with `BPF_PROG_TEST_RUN` over maps filled from the integration tests' fixture zones: 40 % valid queries (A, AAAA, CNAME and other types, random case, EDNS on and off with random payload sizes, DO and options, IPv4 and IPv6, VLAN tags; correct checksums), 40 % such queries with one to three DNS-level mutations (bit flips, truncation, byte insertion and deletion, header counts and flags, label lengths, case bits inside labels, compression pointers, OPT fields and options, trailing bytes; framed with correct checksums), 8 % random DNS payloads, 12 % frames changed below DNS (bits, IP and UDP lengths, cuts, the UDP checksum; checksums left stale). Every XDP_TX must be a well-formed response frame whose DNS payload equals the fallback's answer to the same DNS bytes; every valid query must get what the oracle (`tests::xdprun::expect`) says; only XDP_PASS or XDP_TX, one counter a frame; no answer to a frame the host's own stack drops before any socket sees it (a multicast, broadcast, 0.0.0.0/8 or loopback source, a multicast, unspecified or loopback destination, source port 0: the fallback could never answer those; 3 % of the frames get such an address or port). *XDP over mutated zones*: the maps filled from zone sets in which one zone is an accepted zone-file mutant (below), then valid queries over their names, each answer compared with the fallback's and each outcome with the oracle's: the compiler meets data nobody wrote by hand. *Fallback parser*: random bytes, valid and mutated queries, and mutated earlier answers with QR cleared (records in every section, compressed names) through `fallback::handle` over UDP and TCP, transfers allowed or not: no panic; every answer decodes, carries the query's ID and fits the transport, and the same message gets the same bytes over UDP and TCP (but for ANY, transfers and truncation). *Zone-file parser*: one to three line, token or byte mutations of exported zones (the fixture zones and a zone with every stored type; accepted mutants are mutated further) through `zonefile::parse`: no panic; whatever it accepts loads, exports, and reads back as the same data. Panics are caught and reported with their input.\n\n";
