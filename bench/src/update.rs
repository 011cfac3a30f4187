//! Section 4: update to visible. A thread in the client namespace polls a new name over UDP as
//! fast as round trips allow, while another sends the update: the API PUT to edgedns, or
//! `knotc zone-begin / zone-set / zone-commit` to Knot. Then sustained updates per second.

use std::{
    net::SocketAddr,
    path::Path,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use hickory_proto::rr::RecordType;
use serde_json::{json, Value};
use testkit::{
    dns_client::{DnsClient, Reply},
    http_client::Http,
};

use crate::{
    servers::{self, Server, Setup},
    sys::{self, Bed},
    zonegen::APEX,
    Opts,
};

/// The address a new name `u<k>` gets (data only).
fn addr_of(k: u32) -> String {
    format!("198.18.{}.{}", (k >> 8) & 255, k & 255)
}

/// Percentiles (p50, p99, max) in ms of durations.
pub fn pct(mut v: Vec<Duration>) -> Value {
    if v.is_empty() {
        return json!(null);
    }
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    json!({
        "n": v.len(),
        "p50_ms": ms(at(0.50)),
        "p99_ms": ms(at(0.99)),
        "max_ms": ms(*v.last().expect("not empty")),
    })
}

/// A poller thread in the client namespace: given a name and the address it should get, polls
/// until it does (or 3 s pass) and reports when.
struct Poller {
    tx: mpsc::Sender<(String, String)>,
    rx: mpsc::Receiver<Option<(Instant, u32)>>,
    ready: mpsc::Receiver<()>,
}

impl Poller {
    fn start(ns: &str) -> Result<Poller> {
        let (tx, jobs) = mpsc::channel::<(String, String)>();
        let (done, rx) = mpsc::channel();
        let (ready_tx, ready) = mpsc::channel();
        let ns = ns.to_owned();
        thread::spawn(move || -> Result<()> {
            testkit::enter_netns(&ns)?;
            sys::pin_thread(sys::CLIENT_CPU);
            let server: SocketAddr = servers::server_addr();
            let mut c = DnsClient::new(server, Duration::from_millis(200))?;
            while let Ok((name, want)) = jobs.recv() {
                let deadline = Instant::now() + Duration::from_secs(3);
                let mut polls = 0u32;
                let mut first = true;
                let seen = loop {
                    let r = c.query(&name, RecordType::A);
                    polls += 1;
                    if first {
                        // Polling has begun: the updater may go.
                        let _ = ready_tx.send(());
                        first = false;
                    }
                    let now = Instant::now();
                    if matches!(&r, Reply::Answer { rcode, addrs } if rcode == "NoError" && addrs == std::slice::from_ref(&want))
                    {
                        break Some((now, polls));
                    }
                    if now > deadline {
                        break None;
                    }
                };
                if done.send(seen).is_err() {
                    break;
                }
            }
            Ok(())
        });
        Ok(Poller { tx, rx, ready })
    }

    /// Starts polling `name` for `want`; returns once the first query is out.
    fn begin(&self, name: &str, want: &str) -> Result<()> {
        self.tx
            .send((name.to_owned(), want.to_owned()))
            .context("poller gone")?;
        self.ready
            .recv_timeout(Duration::from_secs(5))
            .context("poller did not start")?;
        Ok(())
    }

    fn wait(&self) -> Result<Option<(Instant, u32)>> {
        self.rx
            .recv_timeout(Duration::from_secs(10))
            .context("poller did not report")
    }
}

pub struct UpdateParams {
    pub updates: u32,
    pub knot_updates: u32,
    pub sustained_secs: u64,
}

impl UpdateParams {
    pub fn new(opts: &Opts) -> Self {
        if opts.quick {
            UpdateParams {
                updates: 200,
                knot_updates: 50,
                sustained_secs: 2,
            }
        } else {
            UpdateParams {
                updates: 1000,
                knot_updates: 1000,
                sustained_secs: 5,
            }
        }
    }
}

pub fn run(bed: &Bed, setup: &Setup, p: &UpdateParams) -> Result<Value> {
    let mut out = serde_json::Map::new();
    out.insert("edgedns".into(), edgedns(bed, setup, p)?);
    out.insert(
        "knot".into(),
        knot(bed, setup, p).unwrap_or_else(|e| json!({ "error": format!("{e:#}") })),
    );
    Ok(Value::Object(out))
}

/// What one durable write costs on the disk the store is on: a 4 KiB write and `fdatasync`, as
/// a reference for the update latencies (every PUT commits a redb transaction with fsync).
fn fsync_reference(dir: &Path, n: usize) -> Result<Value> {
    use std::{
        fs::OpenOptions,
        io::{Seek as _, SeekFrom, Write as _},
    };
    let path = dir.join("fsync-probe");
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let buf = [0x5au8; 4096];
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.seek(SeekFrom::Start(0))?;
        f.write_all(&buf)?;
        f.sync_data()?;
        v.push(t.elapsed());
    }
    drop(f);
    let _ = std::fs::remove_file(&path);
    Ok(pct(v))
}

fn edgedns(bed: &Bed, setup: &Setup, p: &UpdateParams) -> Result<Value> {
    let fsync = fsync_reference(&bed.dir, 200)?;
    let mut running = servers::start(bed, setup, Server::EdgeXdp)?;
    let _pass = servers::client_pass(bed, &setup.edgedns, &bed.dir.join("update-pass.log"))?;
    let poller = Poller::start(&bed.c)?;
    let updates = p.updates;
    let s_ns = bed.s.clone();
    // The API thread lives in the server namespace (the API listens on its loopback).
    let (tx, rx) = mpsc::channel::<(String, String)>();
    let (res_tx, res_rx) = mpsc::channel::<Result<(Instant, Instant)>>();
    let api = thread::spawn(move || -> Result<()> {
        testkit::enter_netns(&s_ns)?;
        let mut http = Http::new("127.0.0.1:8053".parse()?, Duration::from_secs(10));
        while let Ok((name, addr)) = rx.recv() {
            let body = json!({"ttl": 300, "records": [addr]}).to_string();
            let path = format!("/v1/zones/{APEX}/records/{name}/A");
            let t0 = Instant::now();
            let r = http.request("PUT", &path, Some(&body));
            let t1 = Instant::now();
            let r = match r {
                Ok((200, _)) => Ok((t0, t1)),
                Ok((code, b)) => Err(anyhow::anyhow!("PUT {path}: {code} {b}")),
                Err(e) => Err(anyhow::anyhow!("PUT {path}: {e}")),
            };
            if res_tx.send(r).is_err() {
                break;
            }
        }
        Ok(())
    });
    let mut visible = Vec::new();
    let mut acked = Vec::new();
    let mut polls = Vec::new();
    let mut missed = 0;
    let t = Instant::now();
    for k in 0..updates {
        let name = format!("u{k}");
        let fq = format!("u{k}.{APEX}");
        let addr = addr_of(k);
        poller.begin(&fq, &addr)?;
        tx.send((name, addr.clone())).context("API thread gone")?;
        let (t0, t1) = res_rx
            .recv_timeout(Duration::from_secs(15))
            .context("API thread did not answer")??;
        match poller.wait()? {
            Some((seen, n)) => {
                visible.push(seen.saturating_duration_since(t0));
                polls.push(n);
            }
            None => missed += 1,
        }
        acked.push(t1 - t0);
    }
    eprintln!(
        "bench: update: {updates} edgedns PUTs polled in {:.1?}",
        t.elapsed()
    );
    drop(tx);
    let _ = api.join();
    running.proc.check_running()?;
    let polls_med = {
        polls.sort_unstable();
        polls.get(polls.len() / 2).copied().unwrap_or(0)
    };
    let sustained = sustained(bed, p.sustained_secs)?;
    running.proc.stop();
    Ok(json!({
        "visible": pct(visible),
        "put_acked": pct(acked),
        "fsync_4k": fsync,
        "not_seen_within_3s": missed,
        "median_polls_per_update": polls_med,
        "sustained": sustained,
    }))
}

/// Updates per second: PUTs one after another, PUTs from 4 connections, and batches of 100
/// changes through `POST /v1/zones/{zone}/changes` if the daemon has it.
fn sustained(bed: &Bed, secs: u64) -> Result<Value> {
    let run = |conns: usize, batch: usize, tag: &'static str| -> Result<Value> {
        let mut handles = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(secs);
        for c in 0..conns {
            let s_ns = bed.s.clone();
            handles.push(thread::spawn(move || -> Result<(u64, u64, u16)> {
                testkit::enter_netns(&s_ns)?;
                let mut http = Http::new("127.0.0.1:8053".parse()?, Duration::from_secs(10));
                let (mut reqs, mut records, mut last_status) = (0u64, 0u64, 200u16);
                let mut k = 0u32;
                while Instant::now() < deadline && reqs < 1_000_000 {
                    let (path, body, method) = if batch == 0 {
                        let name = format!("{tag}{c}x{k}");
                        k += 1;
                        (
                            format!("/v1/zones/{APEX}/records/{name}/A"),
                            json!({"ttl": 300, "records": [addr_of(k)]}).to_string(),
                            "PUT",
                        )
                    } else {
                        let changes: Vec<Value> = (0..batch)
                            .map(|_| {
                                k += 1;
                                json!({"op": "set", "name": format!("{tag}{c}x{k}"), "type": "A",
                                       "ttl": 300, "records": [addr_of(k)]})
                            })
                            .collect();
                        (
                            format!("/v1/zones/{APEX}/changes"),
                            json!({ "changes": changes }).to_string(),
                            "POST",
                        )
                    };
                    let (code, _) = http.request(method, &path, Some(&body))?;
                    last_status = code;
                    if code != 200 {
                        break;
                    }
                    reqs += 1;
                    records += batch.max(1) as u64;
                }
                Ok((reqs, records, last_status))
            }));
        }
        let start = Instant::now();
        let mut reqs = 0;
        let mut records = 0;
        let mut status = 200;
        for h in handles {
            let (r, n, s) = h
                .join()
                .map_err(|_| anyhow::anyhow!("update thread panicked"))??;
            reqs += r;
            records += n;
            if s != 200 {
                status = s;
            }
        }
        let el = start.elapsed().as_secs_f64();
        if status != 200 && reqs == 0 {
            return Ok(json!({ "missing": true, "status": status }));
        }
        Ok(json!({
            "connections": conns, "batch": batch.max(1), "requests": reqs, "records": records,
            "secs": el, "requests_per_s": reqs as f64 / el, "records_per_s": records as f64 / el,
            "last_status": status,
        }))
    };
    Ok(json!({
        "put_1": run(1, 0, "sa")?,
        "put_4": run(4, 0, "sb")?,
        "batch_100": run(1, 100, "sc")?,
    }))
}

fn knot(bed: &Bed, setup: &Setup, p: &UpdateParams) -> Result<Value> {
    let mut running = servers::start(bed, setup, Server::KnotUdp)?;
    let conf = running.knot_conf.clone().context("knot conf")?;
    // Starting knotc at all: `knotc status` does nothing else.
    let mut status = Vec::new();
    for _ in 0..20 {
        status.push(servers::knotc(&conf, &["status"])?);
    }
    let poller = Poller::start(&bed.c)?;
    let mut visible = Vec::new();
    let mut from_commit = Vec::new();
    let mut commit_call = Vec::new();
    let mut missed = 0;
    for k in 0..p.knot_updates {
        let fq = format!("k{k}.{APEX}");
        let addr = addr_of(k);
        poller.begin(&fq, &addr)?;
        let t0 = Instant::now();
        knotc_ok(&conf, &["zone-begin", APEX])?;
        knotc_ok(
            &conf,
            &["zone-set", APEX, &format!("k{k}"), "300", "A", &addr],
        )?;
        let tc = Instant::now();
        knotc_ok(&conf, &["zone-commit", APEX])?;
        commit_call.push(tc.elapsed());
        match poller.wait()? {
            Some((seen, _)) => {
                visible.push(seen.saturating_duration_since(t0));
                from_commit.push(seen.saturating_duration_since(tc));
            }
            None => missed += 1,
        }
    }
    running.proc.check_running()?;
    running.proc.stop();
    Ok(json!({
        "knotc_status": pct(status),
        "visible_from_zone_begin": pct(visible),
        "visible_from_zone_commit_start": pct(from_commit),
        "zone_commit_call": pct(commit_call),
        "not_seen_within_3s": missed,
    }))
}

fn knotc_ok(conf: &Path, args: &[&str]) -> Result<()> {
    match servers::knotc(conf, args) {
        Ok(_) => Ok(()),
        Err(e) => bail!("{e:#}"),
    }
}
