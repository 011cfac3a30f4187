//! Section 10: response-rate limiting at XDP. One source prefix offers ten times the configured
//! rate while a second prefix asks at a normal rate: the first must be held to the limit (with
//! every `slip`-th response over it sent truncated), the second fully answered.

use std::{
    fmt::Write as _,
    net::UdpSocket,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use serde_json::{json, Value};
use testkit::{dns_message::QuerySpec, http_client::Http};

use crate::{
    report::{f, num, verdict},
    servers::{self, EdgeOpts},
    sys::{Bed, CLIENT, C_IF, S_IF},
    zonegen::APEX,
    Opts,
};

/// The second prefix's address on the client end (a /24 of its own).
const QUIET: &str = "10.213.7.2";
const QUIET_NET: &str = "10.213.7.0/24";

pub struct RrlParams {
    /// `--rrl-rate`: responses a second per prefix and class.
    pub rate: u64,
    pub slip: u64,
    /// What the loud prefix offers, queries a second.
    pub loud_qps: u64,
    /// What the quiet prefix offers.
    pub quiet_qps: u64,
    pub secs: u64,
}

impl RrlParams {
    pub fn new(opts: &Opts) -> Self {
        RrlParams {
            rate: 1000,
            slip: 2,
            loud_qps: 10_000,
            quiet_qps: 100,
            secs: if opts.quick { 3 } else { 5 },
        }
    }
}

/// What one sender saw: queries sent, full answers and truncated ones (TC=1), by the second of
/// the run in which they arrived.
#[derive(Debug, Default)]
struct Seen {
    sent: u64,
    answered: Vec<u64>,
    slipped: Vec<u64>,
}

/// Sends `qps` A queries for names of the zone from `src` to the server for `secs` seconds,
/// paced by the clock, and counts the replies on the same socket.
fn send(src: &str, qps: u64, secs: u64, names: u32) -> Result<Seen> {
    let sock = UdpSocket::bind(format!("{src}:0")).with_context(|| format!("binding {src}"))?;
    sock.connect(servers::server_addr())?;
    sock.set_read_timeout(Some(Duration::from_millis(50)))?;
    let rx = sock.try_clone()?;
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let buckets = secs as usize + 1;
    let receiver = thread::spawn(move || {
        let mut answered = vec![0u64; buckets];
        let mut slipped = vec![0u64; buckets];
        let mut buf = [0u8; 1500];
        while !stop2.load(Ordering::Relaxed) {
            let Ok(n) = rx.recv(&mut buf) else { continue };
            if n < 12 || buf[2] & 0x80 == 0 {
                continue;
            }
            let sec = (start.elapsed().as_secs() as usize).min(buckets - 1);
            if buf[2] & 0x02 != 0 {
                slipped[sec] += 1;
            } else {
                answered[sec] += 1;
            }
        }
        (answered, slipped)
    });
    let total = qps * secs;
    let mut sent = 0u64;
    let names = names.max(1);
    while sent < total {
        let due = ((start.elapsed().as_secs_f64() * qps as f64) as u64).min(total);
        while sent < due {
            let i = (sent as u32).wrapping_mul(7919) % names;
            let q = QuerySpec::new(sent as u16, &format!("n{i}.{APEX}"), 1).to_wire();
            // A full socket buffer is a query not sent: count only what left.
            if sock.send(&q).is_ok() {
                sent += 1;
            } else {
                break;
            }
        }
        thread::sleep(Duration::from_micros(200));
    }
    // Late answers still count.
    thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (answered, slipped) = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("the receiver panicked"))?;
    Ok(Seen {
        sent,
        answered,
        slipped,
    })
}

/// The daemon's RRL counters (`/v1/stats` `xdp.rrl`), from the server namespace.
fn rrl_stats(bed: &Bed) -> Result<Value> {
    crate::sys::in_ns(&bed.s, || {
        let mut http = Http::new("127.0.0.1:8053".parse()?, Duration::from_secs(5));
        let (code, body) = http.request("GET", "/v1/stats", None)?;
        anyhow::ensure!(code == 200, "GET /v1/stats: {code} {body}");
        let v: Value = serde_json::from_str(&body)?;
        Ok(v["xdp"]["rrl"].clone())
    })
}

fn diff(after: &Value, before: &Value, k: &str) -> u64 {
    after[k]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(before[k].as_u64().unwrap_or(0))
}

pub fn run(bed: &Bed, setup: &servers::Setup, p: &RrlParams) -> Result<Value> {
    // The quiet prefix: a second address on the client end. The fast path answers with XDP_TX
    // (no route needed); the route is for anything the fallback answers.
    bed.ip(
        &bed.c,
        &["addr", "add", &format!("{QUIET}/24"), "dev", C_IF],
    )?;
    bed.ip(&bed.s, &["route", "add", QUIET_NET, "dev", S_IF])?;
    bed.xdp_off(&bed.s, S_IF);
    let dir = bed.dir.join("rrl");
    std::fs::create_dir_all(&dir)?;
    let rate = p.rate.to_string();
    let slip = p.slip.to_string();
    let (mut daemon, _) = servers::start_edgedns(
        bed,
        &setup.edgedns,
        &setup.data,
        EdgeOpts {
            xdp: true,
            pinned: true,
            extra: &["--rrl-rate", &rate, "--rrl-slip", &slip],
        },
        &dir.join("server.log"),
        Duration::from_secs(120),
    )?;
    let r = (|| -> Result<Value> {
        let _pass = servers::client_pass(bed, &setup.edgedns, &dir.join("xdp-pass.log"))?;
        let before = rrl_stats(bed)?;
        let tx0 = bed.ethtool_sum(&bed.s, S_IF, "xdp_tx");
        let (loud_qps, quiet_qps, secs, names) =
            (p.loud_qps, p.quiet_qps, p.secs, setup.shape.names);
        let c_ns = bed.c.clone();
        let (loud, quiet) = crate::sys::in_ns(&bed.c, move || {
            let quiet = thread::spawn(move || {
                testkit::enter_netns(&c_ns)?;
                send(QUIET, quiet_qps, secs, names)
            });
            let loud = send(CLIENT, loud_qps, secs, names);
            let quiet = quiet
                .join()
                .map_err(|_| anyhow::anyhow!("the quiet sender panicked"))?;
            Ok((loud?, quiet?))
        })?;
        let xdp_tx = bed.ethtool_sum(&bed.s, S_IF, "xdp_tx") - tx0;
        let after = rrl_stats(bed)?;
        daemon.check_running()?;
        let sum = |v: &[u64]| v.iter().sum::<u64>();
        // The bucket starts full (a burst of one second's worth), so the rate is read after the
        // first second, when the burst is long spent.
        let steady = |v: &[u64]| {
            let n = (secs as usize).saturating_sub(1).max(1);
            v.iter().skip(1).take(n).sum::<u64>() as f64 / n as f64
        };
        let loud_answered = sum(&loud.answered);
        let loud_slipped = sum(&loud.slipped);
        let steady_answered = steady(&loud.answered);
        let quiet_answered = sum(&quiet.answered);
        Ok(json!({
            "rate": p.rate,
            "slip": p.slip,
            "secs": secs,
            "loud": {
                "offered_qps": loud.sent as f64 / secs as f64,
                "sent": loud.sent,
                "answered": loud_answered,
                "slipped": loud_slipped,
                "unanswered": loud.sent.saturating_sub(loud_answered + loud_slipped),
                "answered_per_s": steady_answered,
                "slipped_per_s": steady(&loud.slipped),
                "answered_by_second": loud.answered,
                "slipped_by_second": loud.slipped,
            },
            "quiet": {
                "offered_qps": quiet.sent as f64 / secs as f64,
                "sent": quiet.sent,
                "answered": quiet_answered,
                "slipped": sum(&quiet.slipped),
                "unanswered": quiet.sent.saturating_sub(quiet_answered + sum(&quiet.slipped)),
                "answered_per_s": steady(&quiet.answered),
                "slipped_per_s": steady(&quiet.slipped),
                "answered_fraction": if quiet.sent == 0 { 0.0 } else { quiet_answered as f64 / quiet.sent as f64 },
            },
            "xdp_rrl": {
                "limited": diff(&after, &before, "limited"),
                "slipped": diff(&after, &before, "slipped"),
                "exempt": diff(&after, &before, "exempt"),
                "cookie": diff(&after, &before, "cookie"),
            },
            "xdp_tx": xdp_tx,
        }))
    })();
    daemon.stop();
    bed.xdp_off(&bed.s, S_IF);
    bed.xdp_off(&bed.c, C_IF);
    let _ = bed.ip(&bed.s, &["route", "del", QUIET_NET, "dev", S_IF]);
    let _ = bed.ip(
        &bed.c,
        &["addr", "del", &format!("{QUIET}/24"), "dev", C_IF],
    );
    r
}

/// The section's two targets, for the summary table.
pub fn summary(s: &mut String, r: &Value) {
    let Some(rate) = f(&r["rate"]) else { return };
    if let Some(a) = f(&r["loud"]["answered_per_s"]) {
        let _ = writeln!(
            s,
            "| RRL at XDP: answered/s from one /24 offering {}× the limit | {} | limit {} | {} | within ±10 % | {} |",
            num(Some(f(&r["loud"]["offered_qps"]).unwrap_or(0.0) / rate), 0),
            num(Some(a), 0),
            num(Some(rate), 0),
            num(Some(a / rate), 2),
            verdict(Some((a - rate).abs() <= rate * 0.1))
        );
    }
    if let Some(fr) = f(&r["quiet"]["answered_fraction"]) {
        let _ = writeln!(
            s,
            "| RRL at XDP: a second /24 at {} q/s meanwhile, answered | {} % | | | 100 % | {} |",
            num(f(&r["quiet"]["offered_qps"]), 0),
            num(Some(fr * 100.0), 1),
            verdict(Some(fr >= 1.0))
        );
    }
}

/// The section's table for BENCHMARKS.md.
pub fn table(r: &Value) -> String {
    let r = &r["rrl"];
    if let Some(e) = r["error"].as_str() {
        return format!("Not measured: {e}\n");
    }
    if r.is_null() {
        return "Not measured in this run.\n".into();
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| source | offered q/s | sent | answered | slipped (TC=1) | unanswered | answered/s after the first second | slipped/s |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (label, k) in [
        ("loud /24 (10.212.0.0/24)", "loud"),
        ("quiet /24 (10.213.7.0/24)", "quiet"),
    ] {
        let v = &r[k];
        let _ = writeln!(
            s,
            "| {label} | {} | {} | {} | {} | {} | {} | {} |",
            num(f(&v["offered_qps"]), 0),
            num(f(&v["sent"]), 0),
            num(f(&v["answered"]), 0),
            num(f(&v["slipped"]), 0),
            num(f(&v["unanswered"]), 0),
            num(f(&v["answered_per_s"]), 0),
            num(f(&v["slipped_per_s"]), 0),
        );
    }
    let x = &r["xdp_rrl"];
    let _ = writeln!(
        s,
        "\nThe daemon's counters over the run (`/v1/stats` `xdp.rrl`): limited (dropped) {}, slipped {}, exempt {}, cookie {}. Quiet prefix answered: {} %. Loud prefix's answers by second: {}.",
        num(f(&x["limited"]), 0),
        num(f(&x["slipped"]), 0),
        num(f(&x["exempt"]), 0),
        num(f(&x["cookie"]), 0),
        num(f(&r["quiet"]["answered_fraction"]).map(|x| x * 100.0), 1),
        r["loud"]["answered_by_second"]
    );
    s
}
