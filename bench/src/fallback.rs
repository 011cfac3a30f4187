//! Section 8: the fallback server on every core, against NSD in the same run.
//!
//! Both servers run at once in the server namespace, unpinned, serving the benchmark zone:
//! edgedns with `--xdp-mode off` (every query goes up to the fallback, as queries the fast path
//! passes up do) on port 53, NSD on port 5301 (one server process) and 5302 (one per core).
//! dnsperf in the client namespace asks each in turn for the query file's A records. CPU per
//! answer: dnsperf at a fixed rate, the server's CPU time from `/proc/PID/stat` (utime + stime,
//! all its threads; NSD's child processes too) over the run, divided by the answers dnsperf
//! counted; like for like, edgedns with N UDP sockets against NSD with N server processes, for
//! N = the cores and N = 1, then again with edgedns's packet cache off. Throughput: dnsperf as
//! fast as it goes against edgedns with `--udp-workers 1` and `--udp-workers 2`.

use std::{
    fs,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use hickory_proto::rr::RecordType;
use serde_json::{json, Value};
use testkit::{
    dns_client::{DnsClient, Reply},
    Process,
};

use crate::{
    servers::{self, start_edgedns, EdgeOpts, Setup},
    sys::{self, Bed, SERVER},
    zonegen::APEX,
    Opts,
};

/// NSD's port beside edgedns's 53: one server process.
const NSD_PORT: u16 = 5301;
/// NSD with a server process per core.
const NSD_PORT_N: u16 = 5302;

pub struct FallbackParams {
    pub rate: u32,
    pub secs: u32,
    pub runs: usize,
    pub max_secs: u32,
}

impl FallbackParams {
    pub fn new(opts: &Opts) -> Self {
        if opts.quick {
            Self {
                rate: 50_000,
                secs: 4,
                runs: 1,
                max_secs: 4,
            }
        } else {
            Self {
                rate: 50_000,
                secs: 10,
                runs: 3,
                max_secs: 10,
            }
        }
    }
}

/// utime + stime of `pid` and its descendants, in ns.
fn cpu_ns(pid: u32) -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    sys::tree(pid)
        .into_iter()
        .filter_map(|p| {
            let stat = fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            // After the command: state is field 3, utime 14, stime 15.
            let utime: u64 = f.get(11)?.parse().ok()?;
            let stime: u64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) * 1_000_000_000 / hz)
        })
        .sum()
}

/// utime + stime of each of edgedns's UDP threads (`edgedns-udp-N`), in ns, by thread id.
fn udp_threads_ns(pid: u32) -> Vec<(u32, u64)> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut out: Vec<(u32, u64)> = tasks
        .flatten()
        .filter_map(|t| {
            let tid: u32 = t.file_name().to_str()?.parse().ok()?;
            let stat = fs::read_to_string(t.path().join("stat")).ok()?;
            let (head, rest) = stat.rsplit_once(')')?;
            if !head.contains("(edgedns-udp") {
                return None;
            }
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: u64 = f.get(11)?.parse().ok()?;
            let stime: u64 = f.get(12)?.parse().ok()?;
            Some((tid, (utime + stime) * 1_000_000_000 / hz))
        })
        .collect();
    out.sort_unstable();
    out
}

/// Each UDP thread's CPU ms between two [`udp_threads_ns`] snapshots.
fn udp_threads_ms(before: &[(u32, u64)], after: &[(u32, u64)]) -> Vec<f64> {
    after
        .iter()
        .map(|(tid, ns)| {
            let was = before.iter().find(|(t, _)| t == tid).map_or(0, |(_, n)| *n);
            (ns - was) as f64 / 1e6
        })
        .collect()
}

/// What one dnsperf run reported.
#[derive(Debug, Clone, Copy)]
struct Perf {
    completed: u64,
    qps: f64,
    lost: u64,
}

fn dnsperf(bed: &Bed, qfile: &Path, port: u16, secs: u32, rate: Option<u32>) -> Result<Perf> {
    let mut cmd = bed.exec(&bed.c, "dnsperf");
    cmd.args(["-s", SERVER, "-p", &port.to_string(), "-d"])
        .arg(qfile)
        .args(["-l", &secs.to_string(), "-t", "2", "-c", "8", "-q", "400"]);
    if let Some(r) = rate {
        cmd.args(["-Q", &r.to_string()]);
    }
    let out = cmd
        .output()
        .with_context(|| format!("running dnsperf: {cmd:?}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "dnsperf failed: {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let field = |name: &str| -> Option<String> {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap_or("").to_owned())
    };
    let completed = field("Queries completed:")
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no `Queries completed` in dnsperf's output:\n{text}"))?;
    let lost = field("Queries lost:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let qps = field("Queries per second:")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Ok(Perf {
        completed,
        qps,
        lost,
    })
}

/// Waits until the server on `port` answers a query from the client namespace.
fn wait_answering(bed: &Bed, port: u16, proc: &mut Process) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        proc.check_running()?;
        let addr = format!("{SERVER}:{port}").parse()?;
        let r = sys::in_ns(&bed.c, move || {
            let mut c = DnsClient::new(addr, Duration::from_millis(300))?;
            Ok(c.query(&format!("n0.{APEX}"), RecordType::A))
        })?;
        if matches!(&r, Reply::Answer { rcode, .. } if rcode == "NoError") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "nothing answers on port {port} after 60 s:\n{}",
                proc.log_text()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// NSD on `port` with `servers` server processes; several have a socket each (`reuseport`), as
/// edgedns's UDP workers do.
fn start_nsd(bed: &Bed, setup: &Setup, port: u16, servers: usize) -> Result<Process> {
    let dir = bed.dir.join(format!("fallback-nsd-{servers}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    fs::copy(&setup.zonefile, dir.join(format!("{APEX}zone")))?;
    let conf = servers::nsd_conf(&dir, port);
    let conf = if servers > 1 {
        conf.replace(
            "server-count: 1\n",
            &format!("server-count: {servers}\n    reuseport: yes\n"),
        )
    } else {
        conf
    };
    if !conf.contains(&format!("server-count: {servers}\n")) {
        bail!("no server-count line to set in the NSD configuration:\n{conf}");
    }
    let path = dir.join("nsd.conf");
    fs::write(&path, conf)?;
    let mut cmd = bed.exec(&bed.s, "nsd");
    cmd.arg("-d").arg("-c").arg(&path);
    let mut p = Process::try_spawn("nsd", cmd, dir.join("nsd.log"))?;
    wait_answering(bed, port, &mut p)?;
    Ok(p)
}

/// edgedns `bin` with `extra` arguments, fallback only; `tag` names its log directory.
fn start_edge(bed: &Bed, setup: &Setup, bin: &Path, tag: &str, extra: &[&str]) -> Result<Process> {
    let dir = bed.dir.join(format!("fallback-edgedns-{tag}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let (mut p, _) = start_edgedns(
        bed,
        bin,
        &setup.data,
        EdgeOpts {
            xdp: false,
            pinned: false,
            extra,
        },
        &dir.join("server.log"),
        Duration::from_secs(120),
    )?;
    wait_answering(bed, 53, &mut p)?;
    Ok(p)
}

/// CPU per answer of the server `pid` on `port` at the fixed rate: one run.
fn cpu_run(bed: &Bed, setup: &Setup, p: &FallbackParams, pid: u32, port: u16) -> Result<Value> {
    let before = cpu_ns(pid);
    let threads = udp_threads_ns(pid);
    let perf = dnsperf(bed, &setup.qfile, port, p.secs, Some(p.rate))?;
    let cpu = cpu_ns(pid) - before;
    let threads = udp_threads_ms(&threads, &udp_threads_ns(pid));
    Ok(json!({
        "udp_threads_ms": threads,
        "answers": perf.completed,
        "lost": perf.lost,
        "qps": perf.qps,
        "cpu_ms": cpu as f64 / 1e6,
        "ns_per_answer": cpu as f64 / perf.completed.max(1) as f64,
    }))
}

/// `p.runs` fixed-rate runs against edgedns (`edge`, on port 53) and NSD (`nsd`: pid, port) in
/// turn: each server's runs.
fn turns(
    bed: &Bed,
    setup: &Setup,
    p: &FallbackParams,
    edge: u32,
    nsd: (u32, u16),
    what: &str,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let (mut e_runs, mut n_runs) = (Vec::new(), Vec::new());
    for i in 0..p.runs {
        eprintln!(
            "bench: fallback: CPU per answer at {} q/s, {what}, run {}",
            p.rate,
            i + 1
        );
        e_runs.push(cpu_run(bed, setup, p, edge, 53)?);
        n_runs.push(cpu_run(bed, setup, p, nsd.0, nsd.1)?);
    }
    Ok((e_runs, n_runs))
}

fn median_by(runs: &[Value], key: &str) -> Value {
    let mut v: Vec<&Value> = runs.iter().collect();
    v.sort_by(|a, b| {
        a[key]
            .as_f64()
            .unwrap_or(0.0)
            .total_cmp(&b[key].as_f64().unwrap_or(0.0))
    });
    v.get(v.len() / 2)
        .map(|x| (*x).clone())
        .unwrap_or(Value::Null)
}

/// Runs the section; `baseline`, an earlier build of edgedns, is measured at the fixed rate too
/// (with its own defaults), so a change to the fallback is compared in one run.
pub fn run(bed: &Bed, setup: &Setup, p: &FallbackParams, baseline: Option<&Path>) -> Result<Value> {
    let cores = thread::available_parallelism().map_or(1, |n| n.get());
    let mut nsd = start_nsd(bed, setup, NSD_PORT, 1)?;
    let mut out = serde_json::Map::new();

    // CPU per answer, like for like: edgedns with N UDP sockets and threads against NSD with N
    // server processes (a socket each), taking turns; N = the cores (edgedns's default), then 1.
    {
        let mut pairs = Vec::new();
        let sockets = if cores > 1 { vec![cores, 1] } else { vec![1] };
        for n in sockets {
            let n_s = n.to_string();
            let (mut other, nsd_pid, nsd_port) = if n == 1 {
                (None, nsd.pid(), NSD_PORT)
            } else {
                let p = start_nsd(bed, setup, NSD_PORT_N, n)?;
                let pid = p.pid();
                (Some(p), pid, NSD_PORT_N)
            };
            let mut edge = start_edge(
                bed,
                setup,
                &setup.edgedns,
                &format!("cpu-{n}"),
                &["--udp-workers", &n_s],
            )?;
            let (e_runs, n_runs) = turns(
                bed,
                setup,
                p,
                edge.pid(),
                (nsd_pid, nsd_port),
                &format!("{n} socket(s) each"),
            )?;
            edge.check_running()?;
            drop(edge);
            // The same with the packet cache off, against NSD again: the query file goes round
            // its names, so with the cache most answers are repeats it answers without a
            // lookup; this is what a lookup costs. (One daemon at a time: they share the store.)
            let mut bare = start_edge(
                bed,
                setup,
                &setup.edgedns,
                &format!("cpu-{n}-nocache"),
                &["--udp-workers", &n_s, "--packet-cache-bytes", "0"],
            )?;
            let (b_runs, nb_runs) = turns(
                bed,
                setup,
                p,
                bare.pid(),
                (nsd_pid, nsd_port),
                &format!("{n} socket(s) each, packet cache off"),
            )?;
            bare.check_running()?;
            drop(bare);
            if let Some(o) = other.as_mut() {
                o.check_running()?;
            }
            drop(other);
            pairs.push(json!({
                "sockets": n,
                "edgedns": median_by(&e_runs, "ns_per_answer"),
                "nsd": median_by(&n_runs, "ns_per_answer"),
                "edgedns_runs": e_runs, "nsd_runs": n_runs,
                "edgedns_nocache": median_by(&b_runs, "ns_per_answer"),
                "nsd_nocache": median_by(&nb_runs, "ns_per_answer"),
                "edgedns_nocache_runs": b_runs, "nsd_nocache_runs": nb_runs,
            }));
        }
        if let Some(bin) = baseline {
            let cores_s = cores.to_string();
            let mut base = start_edge(bed, setup, bin, "baseline", &["--udp-workers", &cores_s])?;
            let mut b_runs = Vec::new();
            for i in 0..p.runs {
                eprintln!("bench: fallback: baseline at {} q/s, run {}", p.rate, i + 1);
                b_runs.push(cpu_run(bed, setup, p, base.pid(), 53)?);
            }
            base.check_running()?;
            drop(base);
            out.insert(
                "baseline".into(),
                json!({
                    "binary": bin.display().to_string(),
                    "sockets": cores,
                    "baseline": median_by(&b_runs, "ns_per_answer"),
                    "baseline_runs": b_runs,
                }),
            );
        }
        out.insert(
            "cpu".into(),
            json!({ "rate": p.rate, "secs": p.secs, "cores": cores, "pairs": pairs }),
        );
    }

    // Throughput as fast as dnsperf goes, by number of UDP workers.
    let mut max = Vec::new();
    for workers in ["1", "2"] {
        let mut edge = start_edge(
            bed,
            setup,
            &setup.edgedns,
            workers,
            &["--udp-workers", workers],
        )?;
        let mut runs = Vec::new();
        for i in 0..p.runs {
            eprintln!(
                "bench: fallback: throughput with --udp-workers {workers}, run {}",
                i + 1
            );
            let before = cpu_ns(edge.pid());
            let threads = udp_threads_ns(edge.pid());
            let perf = dnsperf(bed, &setup.qfile, 53, p.max_secs, None)?;
            let cpu = cpu_ns(edge.pid()) - before;
            let threads = udp_threads_ms(&threads, &udp_threads_ns(edge.pid()));
            runs.push(json!({
                "qps": perf.qps, "answers": perf.completed, "lost": perf.lost,
                "cpu_ms": cpu as f64 / 1e6,
                "ns_per_answer": cpu as f64 / perf.completed.max(1) as f64,
                "udp_threads_ms": threads,
            }));
        }
        edge.check_running()?;
        let med = median_by(&runs, "qps");
        max.push(json!({"workers": workers, "median": med, "runs": runs}));
    }
    {
        let mut runs = Vec::new();
        for _ in 0..p.runs {
            let before = cpu_ns(nsd.pid());
            let perf = dnsperf(bed, &setup.qfile, NSD_PORT, p.max_secs, None)?;
            let cpu = cpu_ns(nsd.pid()) - before;
            runs.push(json!({
                "qps": perf.qps, "answers": perf.completed, "lost": perf.lost,
                "cpu_ms": cpu as f64 / 1e6,
                "ns_per_answer": cpu as f64 / perf.completed.max(1) as f64,
            }));
        }
        max.push(json!({"workers": "nsd", "median": median_by(&runs, "qps"), "runs": runs}));
    }
    out.insert("max".into(), json!(max));
    nsd.check_running()?;
    Ok(Value::Object(out))
}
