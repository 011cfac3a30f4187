//! Section 6: writes against reads. How long a large batch and a whole-zone import take, and how
//! long the fallback's answers wait while they run: a writer must never hold readers up.
//!
//! The daemon runs unpinned (the writer and the fallback each get a CPU if they want one). A
//! prober in the client namespace asks the fallback for the zone's SOA (the fast path passes SOA
//! up) every millisecond, before and while the write runs; the API call runs in the server
//! namespace (the API listens on its loopback).

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use serde_json::{json, Value};
use testkit::{dns_client::udp_exchange, dns_message::QuerySpec, enter_netns, http_client::Http};

/// SOA: the fast path passes it up, so the fallback answers every probe.
const TYPE_SOA: u16 = 6;

use crate::{
    servers::{self, EdgeOpts, Setup},
    sys::{Bed, SERVER},
    update::pct,
    zonegen::{self, Shape, APEX},
    Opts,
};

pub struct WritesParams {
    /// Changes in the one batch.
    pub batch: u32,
    /// Names in the imported zone file.
    pub import_names: u32,
}

impl WritesParams {
    pub fn new(opts: &Opts) -> Self {
        WritesParams {
            batch: 10_000,
            import_names: if opts.quick { 100_000 } else { 1_000_000 },
        }
    }
}

/// Zone-file bodies up to this size are taken by the API (the import is one request).
const ZONEFILE_MAX: &str = "268435456";

/// Longest a probe waits for its answer: past it the probe counts as lost.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// One probe: when it was sent and how long its answer took (`None`: lost).
type Probe = (Instant, Option<Duration>);

/// Probes the fallback from the client namespace until stopped (or 10 minutes, whichever first).
struct Prober {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Result<Vec<Probe>>>,
}

impl Prober {
    fn start(client_ns: &str) -> Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let ns = client_ns.to_owned();
        let flag = Arc::clone(&stop);
        let thread = thread::spawn(move || -> Result<Vec<Probe>> {
            enter_netns(&ns)?;
            let sock = UdpSocket::bind("0.0.0.0:0")?;
            let server: SocketAddr = format!("{SERVER}:53").parse()?;
            let mut probes = Vec::new();
            let limit = Instant::now() + Duration::from_secs(600);
            let mut id: u16 = 0;
            while !flag.load(Ordering::Relaxed) && Instant::now() < limit {
                id = id.wrapping_add(1);
                let q = QuerySpec::new(id, APEX, TYPE_SOA).to_wire();
                let t = Instant::now();
                let answered = udp_exchange(&sock, server, &q, PROBE_TIMEOUT)?;
                probes.push((t, answered.map(|_| t.elapsed())));
                thread::sleep(Duration::from_millis(1));
            }
            Ok(probes)
        });
        Ok(Self { stop, thread })
    }

    fn finish(self) -> Result<Vec<Probe>> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("prober panicked"))?
    }
}

/// The probes sent in `[from, to)`: latency percentiles and how many were lost or waited over
/// 5 ms.
fn window(probes: &[Probe], from: Instant, to: Instant) -> Value {
    let inside: Vec<&Probe> = probes
        .iter()
        .filter(|(t, _)| *t >= from && *t < to)
        .collect();
    let answered: Vec<Duration> = inside.iter().filter_map(|(_, d)| *d).collect();
    let lost = inside.len() - answered.len();
    let over_5ms = answered
        .iter()
        .filter(|d| **d > Duration::from_millis(5))
        .count();
    json!({
        "probes": inside.len(),
        "lost": lost,
        "over_5ms": over_5ms,
        "latency": pct(answered),
    })
}

/// Runs `call` on the API from the server namespace; returns its status, body and duration.
fn api_call(
    bed: &Bed,
    method: &'static str,
    path: String,
    content_type: &'static str,
    body: String,
) -> Result<(u16, String, Duration)> {
    let ns = bed.s.clone();
    thread::spawn(move || -> Result<(u16, String, Duration)> {
        enter_netns(&ns)?;
        let mut http = Http::new("127.0.0.1:8053".parse()?, Duration::from_secs(300));
        let t = Instant::now();
        let (code, text) = http
            .request_typed(method, &path, content_type, Some(&body))
            .with_context(|| format!("{method} {path}"))?;
        Ok((code, text, t.elapsed()))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("API thread panicked"))?
}

pub fn run(bed: &Bed, setup: &Setup, p: &WritesParams) -> Result<Value> {
    let dir = bed.dir.join("writes");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let data = dir.join("data");
    std::fs::create_dir_all(&data)?;
    let (mut daemon, _) = servers::start_edgedns(
        bed,
        &setup.edgedns,
        &data,
        EdgeOpts {
            xdp: true,
            pinned: false,
            extra: &["--zonefile-max-bytes", ZONEFILE_MAX],
        },
        &dir.join("server.log"),
        Duration::from_secs(120),
    )?;
    let result = (|| -> Result<Value> {
        // The zone the daemon serves from `--zone`, then a baseline second of probes.
        let prober = Prober::start(&bed.c)?;
        let base_from = Instant::now();
        thread::sleep(Duration::from_secs(1));
        let base_to = Instant::now();

        let changes: Vec<Value> = (0..p.batch)
            .map(|i| {
                json!({"op": "set", "name": format!("w{i}"), "type": "A", "ttl": 300,
                       "records": [zonegen::a_of(i).to_string()]})
            })
            .collect();
        let body = json!({ "changes": changes }).to_string();
        let batch_from = Instant::now();
        let (code, text, batch_took) = api_call(
            bed,
            "POST",
            format!("/v1/zones/{APEX}/changes"),
            "application/json",
            body,
        )?;
        let batch_to = Instant::now();
        if code != 200 {
            bail!("batch of {}: {code} {text}", p.batch);
        }
        thread::sleep(Duration::from_millis(200));

        let file = zonegen::zone_file(Shape {
            names: p.import_names,
            extras: false,
        });
        let file_bytes = file.len();
        let import_from = Instant::now();
        let (code, text, import_took) = api_call(
            bed,
            "PUT",
            format!("/v1/zones/{APEX}/zonefile"),
            "text/dns",
            file,
        )?;
        let import_to = Instant::now();
        if code != 200 {
            bail!("import of {} names: {code} {text}", p.import_names);
        }
        thread::sleep(Duration::from_millis(200));
        let probes = prober.finish()?;
        daemon.check_running()?;
        Ok(json!({
            "baseline": window(&probes, base_from, base_to),
            "batch": {
                "changes": p.batch,
                "took_s": batch_took.as_secs_f64(),
                "fallback": window(&probes, batch_from, batch_to),
            },
            "import": {
                "names": p.import_names,
                "bytes": file_bytes,
                "took_s": import_took.as_secs_f64(),
                "fallback": window(&probes, import_from, import_to),
            },
        }))
    })();
    daemon.stop();
    result
}
