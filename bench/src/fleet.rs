//! Section 8: the fleet. N edges in network namespaces (the tests crate's fleet topology: an
//! etcd namespace, one uplink per edge, each edge's fast path on a veth to a client namespace of
//! its own), and for each new name the time from the write until every edge answers it, beside
//! the write's own return. edgedns: a 3-member etcd cluster, edges with `--etcd`, the write a
//! `PUT` through edge 0's API. Knot: a primary where etcd is, a Knot secondary on every edge
//! following it by NOTIFY and IXFR, the write an RFC 2136 UPDATE to the primary. Distance from
//! etcd (or the primary) is a delaying relay ([`crate::delay`]) in front of it for every edge.

use std::{
    fs,
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd as _,
    path::Path,
    str::FromStr as _,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use hickory_proto::{
    op::{update_message, Message, ResponseCode},
    rr::{rdata::A, DNSClass, Name, RData, Record, RecordSet, RecordType},
    serialize::binary::{BinDecodable as _, BinEncodable as _},
};
use serde_json::{json, Value};
use testkit::{
    dns_message::QuerySpec,
    fleet::{uplink_edge_v4, FleetNet, ETCD_V4},
    http_client::Http,
    Process, DNS_PORT, SERVER_V4,
};

use crate::{delay, update::pct, Opts};

/// The zone the fleet serves.
const ZONE: &str = "fleet.example.";
/// A poll round waits this long for its answers before asking again.
const ROUND: Duration = Duration::from_millis(50);
/// A name not answered right by every edge within this long counts as not seen.
const SEEN_TIMEOUT: Duration = Duration::from_secs(10);
/// Where Knot listens on an edge (the edge's DNS address) and on the etcd namespace.
const KNOT_PORT: u16 = 53;
/// Relay ports: in the etcd namespace, NOTIFY towards edge i goes to `NOTIFY_RELAY + i`; in an
/// edge namespace, the secondary's primary is `127.0.0.1:PRIMARY_RELAY` and etcd member m is
/// `127.0.0.1:ETCD_RELAY + m`; edge 0 (the writer) takes acks from edge i through
/// `127.0.0.1:ACK_RELAY` in edge i's namespace, so that they travel as far as etcd's traffic.
const NOTIFY_RELAY: u16 = 6000;
const PRIMARY_RELAY: u16 = 7053;
const ETCD_RELAY: u16 = 23790;
const ACK_RELAY: u16 = 8154;
/// Where edgedns takes acks (`--ack-listen`'s default port).
const ACK_PORT: u16 = 8054;

pub struct FleetParams {
    pub edges: Vec<usize>,
    pub delays_ms: Vec<u64>,
    pub quick: bool,
}

impl FleetParams {
    pub fn new(opts: &Opts) -> Self {
        fn or<T: Clone>(given: &[T], default: &[T]) -> Vec<T> {
            if given.is_empty() { default } else { given }.to_vec()
        }
        Self {
            edges: or(&opts.fleet_edges, &[3, 8]),
            delays_ms: or(&opts.fleet_delays, &[0, 10, 50]),
            quick: opts.quick,
        }
    }

    /// Names per scenario for edgedns: 1,000 for 3 edges in one region; fewer where each name
    /// takes longer (8 edges share 2 CPUs; at 50 ms a name costs several round trips).
    pub fn names(&self, edges: usize, delay_ms: u64) -> u32 {
        let n = match (edges, delay_ms) {
            (_, 0) => 1000,
            (_, 10) => 200,
            _ => 100,
        };
        if self.quick {
            n / 5
        } else {
            n
        }
    }

    /// Names per scenario for Knot, which takes about a second a name (its primary sends the
    /// NOTIFY for a dynamic update about a second after it).
    pub fn knot_names(&self, delay_ms: u64) -> u32 {
        let n = match delay_ms {
            0 => 60,
            10 => 30,
            _ => 20,
        };
        if self.quick {
            n / 5
        } else {
            n
        }
    }
}

pub fn run(edgedns: &Path, p: &FleetParams, knot: bool, edge: bool) -> Result<Value> {
    let max_edges = p.edges.iter().copied().max().unwrap_or(3);
    let t = Instant::now();
    let mut net = FleetNet::with_binary(edgedns, max_edges);
    eprintln!(
        "bench: fleet: {max_edges} edges' namespaces up in {:.1?}",
        t.elapsed()
    );
    let mut out = serde_json::Map::new();
    let mut rows_knot = Vec::new();
    let mut rows_edge = Vec::new();
    for &edges in &p.edges {
        for &d in &p.delays_ms {
            let delay = Duration::from_millis(d);
            if knot {
                let names = p.knot_names(d);
                eprintln!("bench: fleet: Knot, {edges} secondaries, {d} ms, {names} names");
                let r = unwind(|| knot_scenario(&mut net, edges, delay, names))
                    .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
                rows_knot.push(with_scenario(r, edges, d, names));
            }
            if edge {
                let names = p.names(edges, d);
                eprintln!("bench: fleet: edgedns, {edges} edges, {d} ms, {names} names");
                let r = unwind(|| edgedns_scenario(&mut net, edges, delay, names))
                    .unwrap_or_else(|e| json!({ "error": format!("{e:#}") }));
                rows_edge.push(with_scenario(r, edges, d, names));
            }
        }
    }
    drop(net);
    out.insert("knot".into(), Value::Array(rows_knot));
    out.insert("edgedns".into(), Value::Array(rows_edge));
    Ok(Value::Object(out))
}

/// The harness panics on a failed setup step (as tests want); here that fails the scenario only.
fn unwind(f: impl FnOnce() -> Result<Value>) -> Result<Value> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        bail!("panicked: {msg}")
    })
}

fn with_scenario(mut r: Value, edges: usize, delay_ms: u64, names: u32) -> Value {
    if let Some(o) = r.as_object_mut() {
        o.insert("edges".into(), json!(edges));
        o.insert("delay_ms".into(), json!(delay_ms));
        o.insert("names".into(), json!(names));
    }
    if let Some(e) = r["error"].as_str() {
        eprintln!("bench: fleet: scenario failed: {e}");
    }
    r
}

/// The address new name `k` gets (data only).
fn addr_of(k: u32) -> String {
    format!("198.19.{}.{}", (k >> 8) & 255, k & 255)
}

// ---------------------------------------------------------------------------------------------
// Polling every edge

/// What one poll got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Got {
    Right,
    NxDomain,
    /// Any other answer: another rcode, a wrong or empty answer, nothing within the round.
    Other,
}

/// One UDP socket per edge, each made in that edge's client namespace, all driven by one thread
/// (a socket stays in the namespace it was made in).
struct Poller {
    socks: Vec<UdpSocket>,
    server: SocketAddr,
    next_id: u16,
}

/// The polls of one name.
struct Polled {
    /// When each edge first answered right.
    first_right: Vec<Option<Instant>>,
    /// Every poll: when it was sent and what it got.
    polls: Vec<(Instant, Got)>,
}

impl Poller {
    fn new(client_ns: &[String], server: SocketAddr) -> Result<Poller> {
        let client_ns = client_ns.to_vec();
        let socks = thread::spawn(move || -> Result<Vec<UdpSocket>> {
            let mut v = Vec::new();
            for ns in &client_ns {
                testkit::enter_netns(ns)?;
                let s = UdpSocket::bind("0.0.0.0:0")?;
                s.set_nonblocking(true)?;
                v.push(s);
            }
            Ok(v)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("socket thread panicked"))??;
        Ok(Poller {
            socks,
            server,
            next_id: 1,
        })
    }

    /// Polls `name` at the first `n` edges, round after round, until every one has answered
    /// `want` (or [`SEEN_TIMEOUT`]).
    fn poll(&mut self, n: usize, name: &str, want: &str) -> Polled {
        let start = Instant::now();
        let mut first_right: Vec<Option<Instant>> = vec![None; n];
        let mut polls = Vec::new();
        let mut buf = [0u8; 1500];
        while first_right.iter().any(Option::is_none) && start.elapsed() < SEEN_TIMEOUT {
            // (edge, id, sent)
            let mut out: Vec<(usize, u16, Instant)> = Vec::new();
            for (e, _) in first_right.iter().enumerate().filter(|(_, f)| f.is_none()) {
                let id = self.next_id;
                self.next_id = self.next_id.wrapping_add(1).max(1);
                let q = QuerySpec::new(id, name, 1).with_flags(0).to_wire();
                let sent = Instant::now();
                if self.socks[e].send_to(&q, self.server).is_ok() {
                    out.push((e, id, sent));
                }
            }
            let round_end = Instant::now() + ROUND;
            while !out.is_empty() {
                let left = round_end.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                let mut fds: Vec<libc::pollfd> = out
                    .iter()
                    .map(|(e, _, _)| libc::pollfd {
                        fd: self.socks[*e].as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                let ms = left.as_millis().clamp(1, 1000) as libc::c_int;
                // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs we own.
                let r = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
                if r <= 0 {
                    continue;
                }
                let now = Instant::now();
                let mut done = Vec::new();
                for (i, fd) in fds.iter().enumerate() {
                    if fd.revents & libc::POLLIN == 0 {
                        continue;
                    }
                    let (e, id, sent) = out[i];
                    while let Ok(len) = self.socks[e].recv(&mut buf) {
                        if len < 2 || u16::from_be_bytes([buf[0], buf[1]]) != id {
                            continue;
                        }
                        let got = classify(&buf[..len], want);
                        polls.push((sent, got));
                        if got == Got::Right {
                            first_right[e] = Some(now);
                        }
                        done.push(i);
                        break;
                    }
                }
                for i in done.into_iter().rev() {
                    out.remove(i);
                }
            }
            for (_, _, sent) in out {
                polls.push((sent, Got::Other));
            }
            // A breath between rounds for the edges, which share the two CPUs with us.
            thread::sleep(Duration::from_micros(200));
        }
        Polled { first_right, polls }
    }
}

fn classify(msg: &[u8], want: &str) -> Got {
    let Ok(m) = Message::from_bytes(msg) else {
        return Got::Other;
    };
    match m.response_code() {
        ResponseCode::NXDomain => Got::NxDomain,
        ResponseCode::NoError => {
            let right = m
                .answers()
                .iter()
                .any(|r| matches!(r.data(), RData::A(a) if a.0.to_string() == want));
            if right {
                Got::Right
            } else {
                Got::Other
            }
        }
        _ => Got::Other,
    }
}

/// The figures of a scenario from each name's write times and polls.
#[derive(Default)]
struct Tally {
    all: Vec<Duration>,
    each: Vec<Duration>,
    api: Vec<Duration>,
    nx_before: u64,
    nx_after: u64,
    /// Names with at least one NXDOMAIN to a poll sent after the write returned.
    nx_windows: u64,
    other: u64,
    last_after_api: u64,
    not_seen: u64,
    status: std::collections::BTreeMap<String, u64>,
}

impl Tally {
    fn add(&mut self, t0: Instant, t1: Instant, status: &str, p: &Polled) {
        *self.status.entry(status.to_owned()).or_default() += 1;
        self.api.push(t1 - t0);
        let mut nx_here = 0;
        for (sent, got) in &p.polls {
            match got {
                Got::NxDomain if *sent > t1 => nx_here += 1,
                Got::NxDomain => self.nx_before += 1,
                Got::Other => self.other += 1,
                Got::Right => {}
            }
        }
        self.nx_after += nx_here;
        self.nx_windows += u64::from(nx_here > 0);
        if p.first_right.iter().any(Option::is_none) {
            self.not_seen += 1;
            return;
        }
        let seen: Vec<Duration> = p
            .first_right
            .iter()
            .map(|f| f.expect("all seen").saturating_duration_since(t0))
            .collect();
        let last = *seen.iter().max().expect("edges");
        self.each.extend(&seen);
        self.all.push(last);
        if t0 + last > t1 {
            self.last_after_api += 1;
        }
    }

    fn json(self) -> Value {
        json!({
            "visible_all": pct(self.all),
            "visible_each": pct(self.each),
            "write_returned": pct(self.api),
            "nxdomain_before_return": self.nx_before,
            "nxdomain_after_return": self.nx_after,
            "nxdomain_windows": self.nx_windows,
            "other_answers": self.other,
            "last_edge_after_return": self.last_after_api,
            "not_seen": self.not_seen,
            "write_status": self.status,
        })
    }
}

/// CPU time (user and system, all threads) `pid` has used so far; zero if it is gone.
fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // The fields after the command (which may hold spaces), from the state on: utime and
    // stime are the 12th and 13th, in clock ticks.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .unwrap_or(100)
        .max(1);
    Duration::from_nanos(ticks * 1_000_000_000 / hz)
}

/// Runs `names` writes one after another: `write(k)` in its own thread (returning the times
/// just before the request and when the answer came, and a status word), polling meanwhile.
/// `cpu`: groups of processes (a label and their ids) whose CPU time over the writes is
/// reported per write, besides the bench's own (the poller and the writer).
fn measure(
    net: &FleetNet,
    edges: usize,
    names: u32,
    prefix: &str,
    writer_ns: &str,
    cpu: &[(&str, Vec<u32>)],
    mut write: impl FnMut(u32, &str, &str) -> Result<(Instant, Instant, String)> + Send + 'static,
) -> Result<Value> {
    let clients: Vec<String> = net.edges[..edges]
        .iter()
        .map(|e| e.client.name().to_owned())
        .collect();
    let port = if prefix == "k" { KNOT_PORT } else { DNS_PORT };
    let server = SocketAddr::from_str(&format!("{SERVER_V4}:{port}"))?;
    let mut poller = Poller::new(&clients, server)?;
    let (jobs, rx) = mpsc::channel::<(u32, String, String)>();
    let (res_tx, results) = mpsc::channel();
    let writer_ns = writer_ns.to_owned();
    let writer = thread::spawn(move || {
        // The writer's connections are made in its namespace (the API's, or the primary's).
        if let Err(e) = testkit::enter_netns(&writer_ns) {
            let _ = res_tx.send(Err(e.into()));
            return;
        }
        while let Ok((k, name, addr)) = rx.recv() {
            if res_tx.send(write(k, &name, &addr)).is_err() {
                break;
            }
        }
    });
    let mut tally = Tally::default();
    let own = std::process::id();
    let used = || -> Vec<Duration> {
        cpu.iter()
            .map(|(_, pids)| pids.iter().map(|p| cpu_time(*p)).sum())
            .chain([cpu_time(own)])
            .collect()
    };
    let cpu_before = used();
    let t = Instant::now();
    for k in 0..names {
        let name = format!("{prefix}{k}");
        let fq = format!("{name}.{ZONE}");
        let addr = addr_of(k);
        jobs.send((k, name, addr.clone())).context("writer gone")?;
        let polled = poller.poll(edges, &fq, &addr);
        let (t0, t1, status) = results
            .recv_timeout(Duration::from_secs(30))
            .context("the write did not return within 30 s")??;
        tally.add(t0, t1, &status, &polled);
    }
    let cpu_after = used();
    let elapsed = t.elapsed();
    drop(jobs);
    let _ = writer.join();
    eprintln!(
        "bench: fleet: {names} names in {elapsed:.1?}, {} not seen by every edge",
        tally.not_seen
    );
    let per_write =
        |d: Duration| (d.as_secs_f64() * 1000.0 / f64::from(names.max(1)) * 100.0).round() / 100.0;
    let mut cpu_ms = serde_json::Map::new();
    for (i, label) in cpu.iter().map(|(l, _)| *l).chain(["bench"]).enumerate() {
        cpu_ms.insert(
            label.into(),
            json!(per_write(cpu_after[i].saturating_sub(cpu_before[i]))),
        );
    }
    let mut out = tally.json();
    out["cpu_ms_per_write"] = Value::Object(cpu_ms);
    out["wall_ms_per_write"] = json!(per_write(elapsed));
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Knot: a primary and secondaries by NOTIFY + IXFR

fn knot_conf(dir: &Path, listen: &[String], body: &str) -> Result<std::path::PathBuf> {
    fs::create_dir_all(dir.join("db"))?;
    let d = dir.display();
    let listen = listen.join(", ");
    let conf = format!(
        "server:
    listen: [ {listen} ]
    rundir: {d}
    pidfile: {d}/knot.pid
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
control:
    listen: {d}/knot.sock
database:
    storage: {d}/db
log:
  - target: stdout
    any: notice
{body}"
    );
    let path = dir.join("knot.conf");
    fs::write(&path, conf)?;
    Ok(path)
}

fn knot_scenario(net: &mut FleetNet, edges: usize, delay: Duration, names: u32) -> Result<Value> {
    let root = net
        .tmp
        .path()
        .join(format!("knot-{edges}-{}", delay.as_millis()));
    let relayed = !delay.is_zero();
    // The primary, where etcd would be.
    let pdir = root.join("primary");
    fs::create_dir_all(&pdir)?;
    fs::write(
        pdir.join("fleet.zone"),
        format!(
            "$ORIGIN {ZONE}\n$TTL 300\n@ SOA ns1 hostmaster 1 3600 600 86400 30\n@ NS ns1\nns1 A 192.0.2.53\n"
        ),
    )?;
    let mut remotes = String::from("remote:\n");
    let mut notify = Vec::new();
    for i in 0..edges {
        let addr = if relayed {
            format!("{ETCD_V4}@{}", NOTIFY_RELAY + i as u16)
        } else {
            format!("{}@{KNOT_PORT}", uplink_edge_v4(i))
        };
        remotes.push_str(&format!("  - id: s{i}\n    address: {addr}\n"));
        notify.push(format!("s{i}"));
    }
    let body = format!(
        "{remotes}acl:
  - id: any
    address: [ 10.0.0.0/8, 127.0.0.0/8 ]
    action: [ transfer, update ]
template:
  - id: default
    storage: {d}
    zonefile-sync: -1
    journal-content: changes
zone:
  - domain: {ZONE}
    file: fleet.zone
    notify: [ {n} ]
    acl: any
",
        d = pdir.display(),
        n = notify.join(", ")
    );
    let pconf = knot_conf(&pdir, &[format!("{ETCD_V4}@{KNOT_PORT}")], &body)?;
    let mut procs: Vec<Process> = Vec::new();
    let mut cmd = net.etcd_ns.command("knotd");
    cmd.arg("-c").arg(&pconf);
    procs.push(Process::try_spawn(
        "knotd primary",
        cmd,
        pdir.join("knotd.log"),
    )?);
    let mut relays = Vec::new();
    if relayed {
        let notify_relays: Vec<delay::Relay> = (0..edges)
            .map(|i| delay::Relay {
                listen: SocketAddr::from_str(&format!("{ETCD_V4}:{}", NOTIFY_RELAY + i as u16))
                    .expect("address"),
                target: SocketAddr::from_str(&format!("{}:{KNOT_PORT}", uplink_edge_v4(i)))
                    .expect("address"),
            })
            .collect();
        relays.push(delay::Relays::start(
            net.etcd_ns.name(),
            &notify_relays,
            delay,
        )?);
    }
    for (i, edge) in net.edges[..edges].iter().enumerate() {
        let sdir = root.join(format!("s{i}"));
        let primary = if relayed {
            relays.push(delay::Relays::start(
                edge.ns.name(),
                &[delay::Relay {
                    listen: SocketAddr::from_str(&format!("127.0.0.1:{PRIMARY_RELAY}"))?,
                    target: SocketAddr::from_str(&format!("{ETCD_V4}:{KNOT_PORT}"))?,
                }],
                delay,
            )?);
            format!("127.0.0.1@{PRIMARY_RELAY}")
        } else {
            format!("{ETCD_V4}@{KNOT_PORT}")
        };
        let body = format!(
            "remote:
  - id: primary
    address: {primary}
acl:
  - id: notify
    address: [ 10.0.0.0/8, 127.0.0.0/8 ]
    action: notify
template:
  - id: default
    storage: {d}
    zonefile-sync: -1
    journal-content: changes
zone:
  - domain: {ZONE}
    master: primary
    acl: notify
",
            d = sdir.display()
        );
        let conf = knot_conf(
            &sdir,
            &[
                format!("{SERVER_V4}@{KNOT_PORT}"),
                format!("{}@{KNOT_PORT}", uplink_edge_v4(i)),
            ],
            &body,
        )?;
        let mut cmd = edge.ns.command("knotd");
        cmd.arg("-c").arg(&conf);
        procs.push(Process::try_spawn(
            &format!("knotd secondary {i}"),
            cmd,
            sdir.join("knotd.log"),
        )?);
    }
    // Every secondary has the zone before the first write.
    let deadline = Instant::now() + Duration::from_secs(30);
    for edge in &net.edges[..edges] {
        loop {
            for p in &mut procs {
                p.check_running()?;
            }
            let a =
                testkit::Tool::Kdig.try_query(&edge.client, SERVER_V4, KNOT_PORT, ZONE, "SOA", &[]);
            if a.is_ok_and(|a| a.status == "NOERROR" && !a.rdata("SOA").is_empty()) {
                break;
            }
            if Instant::now() > deadline {
                bail!("{}'s Knot secondary has no zone after 30 s", edge.id);
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    let etcd_ns = net.etcd_ns.name().to_owned();
    let mut sock: Option<UdpSocket> = None;
    let primary = SocketAddr::from_str(&format!("{ETCD_V4}:{KNOT_PORT}"))?;
    let origin = Name::from_str(ZONE)?;
    let r = measure(
        net,
        edges,
        names,
        "k",
        &etcd_ns,
        &[],
        move |_, name, addr| {
            if sock.is_none() {
                let s = UdpSocket::bind("0.0.0.0:0")?;
                s.set_read_timeout(Some(Duration::from_secs(10)))?;
                sock = Some(s);
            }
            let sock = sock.as_ref().expect("bound");
            let owner = Name::from_str(&format!("{name}.{ZONE}"))?;
            let mut rrset = RecordSet::new(owner.clone(), RecordType::A, 0);
            let mut rec = Record::from_rdata(owner, 300, RData::A(A::from_str(addr)?));
            rec.set_dns_class(DNSClass::IN);
            rrset.insert(rec, 0);
            let msg = update_message::create(rrset, origin.clone(), false);
            let bytes = msg.to_bytes()?;
            let mut buf = [0u8; 1500];
            let t0 = Instant::now();
            sock.send_to(&bytes, primary)?;
            let status = loop {
                let (n, _) = sock
                    .recv_from(&mut buf)
                    .context("no answer to the UPDATE")?;
                let Ok(m) = Message::from_bytes(&buf[..n]) else {
                    continue;
                };
                if m.id() == msg.id() {
                    break format!("{:?}", m.response_code());
                }
            };
            Ok((t0, Instant::now(), status))
        },
    );
    for p in &mut procs {
        p.check_running()?;
    }
    drop(relays);
    drop(procs);
    let _ = fs::remove_dir_all(&root);
    r
}

// ---------------------------------------------------------------------------------------------
// edgedns: edges of a fleet with etcd

fn edgedns_scenario(
    net: &mut FleetNet,
    edges: usize,
    delay: Duration,
    names: u32,
) -> Result<Value> {
    let relayed = !delay.is_zero();
    net.start_etcd(3, None);
    let ports = net.etcd().client_ports();
    let direct = net.etcd().endpoints_arg();
    let mut relays = Vec::new();
    let region = format!("d{}ms", delay.as_millis());
    let r = (|| -> Result<Value> {
        for i in 0..edges {
            let urls = if relayed {
                let mut list: Vec<delay::Relay> = ports
                    .iter()
                    .enumerate()
                    .map(|(m, p)| delay::Relay {
                        listen: SocketAddr::from_str(&format!(
                            "127.0.0.1:{}",
                            ETCD_RELAY + m as u16
                        ))
                        .expect("address"),
                        target: SocketAddr::from_str(&format!("{ETCD_V4}:{p}")).expect("address"),
                    })
                    .collect();
                if i > 0 {
                    list.push(delay::Relay {
                        listen: SocketAddr::from_str(&format!("127.0.0.1:{ACK_RELAY}"))
                            .expect("address"),
                        target: SocketAddr::from_str(&format!("{}:{ACK_PORT}", uplink_edge_v4(0)))
                            .expect("address"),
                    });
                }
                relays.push(delay::Relays::start(net.edges[i].ns.name(), &list, delay)?);
                (0..ports.len())
                    .map(|m| format!("http://127.0.0.1:{}", ETCD_RELAY + m as u16))
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                direct.clone()
            };
            let ack_address = format!("127.0.0.1:{ACK_RELAY}");
            let mut args = vec!["--etcd", &urls, "--region", &region, "--no-pin"];
            // Behind relays, the writer's acks come through each edge's own relay.
            if relayed && i == 0 {
                args.extend(["--ack-address", &ack_address]);
            }
            net.edges[i].start(&args);
        }
        for e in &mut net.edges[..edges] {
            e.wait_ready(Duration::from_secs(60));
        }
        let zone = ZONE.trim_end_matches('.');
        let r = net.edges[0].http(
            "POST",
            "/v1/zones",
            Some(&json!({"zone": zone, "ns": ["ns1.fleet.example"]}).to_string()),
            &[],
        );
        if r.status != 200 && r.status != 201 {
            bail!("creating {zone} through edge-0: {} {}", r.status, r.body);
        }
        let api_ns = net.edges[0].ns.name().to_owned();
        // One keep-alive connection, made by the writer thread in edge 0's namespace.
        let mut http = Http::new(
            SocketAddr::from_str(testkit::API_ADDR)?,
            Duration::from_secs(30),
        );
        let cpu = [
            (
                "edges",
                net.edges[..edges]
                    .iter()
                    .filter_map(|e| e.daemon.as_ref().map(|d| d.process.pid()))
                    .collect(),
            ),
            ("etcd", net.etcd().pids()),
        ];
        // None from a daemon without the counter.
        let registration_writes = |net: &FleetNet| -> Option<u64> {
            net.edges[..edges]
                .iter()
                .map(|e| {
                    metric(
                        &e.http("GET", "/metrics", None, &[]).body,
                        REGISTRATION_WRITES,
                    )
                })
                .sum()
        };
        let before = registration_writes(net);
        let mut r = measure(
            net,
            edges,
            names,
            "f",
            &api_ns,
            &cpu,
            move |_, name, addr| {
                let body = json!({"ttl": 300, "records": [addr]}).to_string();
                let path = format!("/v1/zones/{zone}/records/{name}/A");
                let t0 = Instant::now();
                let (code, body) = http.request("PUT", &path, Some(&body))?;
                let t1 = Instant::now();
                if code != 200 && code != 202 {
                    bail!("PUT {path}: {code} {body}");
                }
                Ok((t0, t1, code.to_string()))
            },
        )?;
        // What the edges wrote to etcd besides the writes: their registrations.
        if let (Some(before), Some(after)) = (before, registration_writes(net)) {
            r["registration_writes_per_write"] =
                json!(after.saturating_sub(before) as f64 / f64::from(names.max(1)));
        }
        for e in &mut net.edges[..edges] {
            if let Some(d) = e.daemon.as_mut() {
                d.process.check_running()?;
            }
        }
        Ok(r)
    })();
    for e in &mut net.edges[..edges] {
        if e.daemon.is_some() {
            e.stop();
        }
        let _ = fs::remove_dir_all(e.data_dir());
    }
    drop(relays);
    net.etcd = None;
    r
}

/// The edges' counter of registration writes in etcd.
const REGISTRATION_WRITES: &str = "edgedns_fleet_registration_writes_total";

/// A counter's value in a `/metrics` text.
fn metric(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// The section's tables for BENCHMARKS.md.
pub fn table(r: &Value) -> String {
    let f = &r["fleet"];
    if f.is_null() {
        return "Not run.\n".into();
    }
    if let Some(e) = f["error"].as_str() {
        return format!("Failed: {e}\n");
    }
    let ms = |v: &Value, k: &str| {
        v[k].as_f64()
            .map(|x| format!("{x:.1}"))
            .unwrap_or_else(|| "–".into())
    };
    let mut out = String::from(
        "| system | edges | one-way delay | names | every edge answers: p50 / p99 / max ms | each edge: p50 / p99 ms | write returned: p50 / p99 ms | NXDOMAIN before / after the write returned | names with an NXDOMAIN window | last edge after the return | other answers | not seen in 10 s | write status | CPU ms per write: edges / etcd / bench | registration writes per write |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|\n",
    );
    for (sys, label) in [
        ("edgedns", "edgedns (etcd)"),
        ("knot", "Knot (NOTIFY + IXFR)"),
    ] {
        for row in f[sys].as_array().into_iter().flatten() {
            let head = format!(
                "| {label} | {} | {} ms | {} ",
                row["edges"], row["delay_ms"], row["names"]
            );
            if let Some(e) = row["error"].as_str() {
                out.push_str(&format!(
                    "{head}| failed: {} |||||||||||\n",
                    e.replace('|', "/").lines().next().unwrap_or("")
                ));
                continue;
            }
            let (a, each, w) = (
                &row["visible_all"],
                &row["visible_each"],
                &row["write_returned"],
            );
            let c = &row["cpu_ms_per_write"];
            let cpu = if c.is_object() {
                format!(
                    "{} / {} / {}",
                    ms(c, "edges"),
                    ms(c, "etcd"),
                    ms(c, "bench")
                )
            } else {
                "–".into()
            };
            let registrations = row["registration_writes_per_write"]
                .as_f64()
                .map_or_else(|| "–".into(), |x| format!("{x:.2}"));
            let status = row["write_status"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}: {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_default();
            out.push_str(&format!(
                "{head}| {} / {} / {} | {} / {} | {} / {} | {} / {} | {} | {} | {} | {} | {status} | {cpu} | {registrations} |\n",
                ms(a, "p50_ms"),
                ms(a, "p99_ms"),
                ms(a, "max_ms"),
                ms(each, "p50_ms"),
                ms(each, "p99_ms"),
                ms(w, "p50_ms"),
                ms(w, "p99_ms"),
                row["nxdomain_before_return"],
                row["nxdomain_after_return"],
                row["nxdomain_windows"],
                row["last_edge_after_return"],
                row["other_answers"],
                row["not_seen"],
            ));
        }
    }
    out
}
