//! The servers compared, how each is started in the server namespace (pinned to the server CPU),
//! and the check that its answers are right (a fast wrong answer counts as zero).

use std::{
    fs,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use hickory_proto::rr::RecordType;
use serde_json::{json, Value};
use testkit::{
    dns_client::{DnsClient, Reply},
    Process,
};

use crate::{
    sys::{self, Bed, C_IF, SERVER, SERVER_CPU, S_IF},
    zonegen::{self, Shape, APEX},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Server {
    EdgeXdp,
    EdgeFallback,
    KnotXdp,
    KnotUdp,
    Nsd,
}

impl Server {
    pub const ALL: [Server; 5] = [
        Server::EdgeXdp,
        Server::EdgeFallback,
        Server::KnotXdp,
        Server::KnotUdp,
        Server::Nsd,
    ];

    pub fn key(self) -> &'static str {
        match self {
            Server::EdgeXdp => "edgedns_xdp",
            Server::EdgeFallback => "edgedns_fallback",
            Server::KnotXdp => "knot_xdp",
            Server::KnotUdp => "knot_udp",
            Server::Nsd => "nsd",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Server::EdgeXdp => "edgedns fast path (XDP, driver mode)",
            Server::EdgeFallback => "edgedns fallback only (--xdp-mode off)",
            Server::KnotXdp => "Knot DNS 3.2, XDP (AF_XDP)",
            Server::KnotUdp => "Knot DNS 3.2, UDP",
            Server::Nsd => "NSD 4.6, RRL off",
        }
    }
}

/// What every server is given.
pub struct Setup {
    pub edgedns: PathBuf,
    /// The edgedns store holding the zone.
    pub data: PathBuf,
    /// The zone file (Knot, NSD).
    pub zonefile: PathBuf,
    /// kxdpgun's query file.
    pub qfile: PathBuf,
    pub shape: Shape,
}

impl Setup {
    pub fn new(dir: &Path, edgedns: &Path, shape: Shape) -> Result<Setup> {
        let t = Instant::now();
        let zones = zonegen::zone_set(shape)?;
        let data = dir.join("edgedns-data");
        let _ = fs::remove_dir_all(&data);
        zonegen::write_store(&data, &zones)?;
        let zonefile = dir.join(format!("{}zone", APEX));
        fs::write(&zonefile, zonegen::zone_file(shape))?;
        let qfile = dir.join("queries.txt");
        fs::write(&qfile, zonegen::query_file(shape))?;
        eprintln!(
            "bench: zone of {} names written (store, zone file, query file) in {:.1?}",
            shape.names,
            t.elapsed()
        );
        Ok(Setup {
            edgedns: edgedns.to_owned(),
            data,
            zonefile,
            qfile,
            shape,
        })
    }
}

pub struct Running {
    pub proc: Process,
    /// knotd's configuration (for knotc).
    pub knot_conf: Option<PathBuf>,
}

/// How [`start_edgedns`] runs the daemon.
pub struct EdgeOpts<'a> {
    pub xdp: bool,
    /// Pinned to the server CPU (the per-answer figures), or free to use every CPU (a daemon
    /// whose writer and readers run at once).
    pub pinned: bool,
    /// More `serve` arguments.
    pub extra: &'a [&'a str],
}

/// `edgedns serve` in the server namespace; returns once it logged "ready" (and how long that
/// took).
pub fn start_edgedns(
    bed: &Bed,
    edgedns: &Path,
    data: &Path,
    how: EdgeOpts,
    log: &Path,
    timeout: Duration,
) -> Result<(Process, Duration)> {
    let program = edgedns.to_string_lossy();
    let mut cmd = if how.pinned {
        bed.exec_on(&bed.s, SERVER_CPU, &program)
    } else {
        bed.exec(&bed.s, &program)
    };
    let xdp = how.xdp;
    cmd.args(["serve", "--iface", S_IF, "--xdp-mode"])
        .arg(if xdp { "driver" } else { "off" })
        .args(["--dns-listen", &format!("{SERVER}:53")])
        .args(["--api-listen", "127.0.0.1:8053", "--no-pin", "--zone", APEX])
        .arg("--data-dir")
        .arg(data)
        .args(how.extra)
        .env("RUST_LOG", "warn,edgedns=info,dns_user=info");
    let mut p = Process::try_spawn("edgedns serve", cmd, log.to_owned())?;
    loop {
        p.check_running()?;
        if p.log_text().lines().any(|l| l.contains(" ready")) {
            return Ok((p.elapsed(), p)).map(|(d, p)| (p, d));
        }
        if p.elapsed() > timeout {
            bail!("edgedns did not log `ready` within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

pub fn start(bed: &Bed, setup: &Setup, server: Server) -> Result<Running> {
    let dir = bed.dir.join(server.key());
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    let log = dir.join("server.log");
    let mut knot_conf = None;
    let mut proc = match server {
        Server::EdgeXdp | Server::EdgeFallback => {
            start_edgedns(
                bed,
                &setup.edgedns,
                &setup.data,
                EdgeOpts {
                    xdp: server == Server::EdgeXdp,
                    pinned: true,
                    extra: &[],
                },
                &log,
                Duration::from_secs(120),
            )?
            .0
        }
        Server::KnotXdp | Server::KnotUdp => {
            fs::copy(&setup.zonefile, dir.join(format!("{APEX}zone")))?;
            let xdp = if server == Server::KnotXdp {
                format!("xdp:\n    listen: {S_IF}\n    udp: on\n    tcp: off\n")
            } else {
                String::new()
            };
            let conf = format!(
                "server:\n    rundir: \"{d}\"\n    listen: {SERVER}@53\n    background-workers: 1\n\
                 {xdp}\
                 database:\n    storage: \"{d}\"\n\
                 log:\n  - target: stderr\n    any: info\n\
                 template:\n  - id: default\n    storage: \"{d}\"\n    file: \"%s.zone\"\n    \
                 zonefile-sync: -1\n    zonefile-load: whole\n    journal-content: none\n    \
                 semantic-checks: off\n\
                 zone:\n  - domain: {APEX}\n",
                d = dir.display()
            );
            let path = dir.join("knot.conf");
            fs::write(&path, conf)?;
            knot_conf = Some(path.clone());
            let mut cmd = bed.exec_on(&bed.s, SERVER_CPU, "knotd");
            cmd.arg("-c").arg(&path);
            Process::try_spawn("knotd", cmd, log)?
        }
        Server::Nsd => {
            fs::copy(&setup.zonefile, dir.join(format!("{APEX}zone")))?;
            let conf = nsd_conf(&dir, 53);
            let path = dir.join("nsd.conf");
            fs::write(&path, conf)?;
            let mut cmd = bed.exec_on(&bed.s, SERVER_CPU, "nsd");
            cmd.arg("-d").arg("-c").arg(&path);
            Process::try_spawn("nsd", cmd, log)?
        }
    };
    // Ready when it answers (over the kernel's UDP path: all but the XDP fast path; edgedns
    // logged `ready` already).
    if server != Server::EdgeXdp {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            proc.check_running()?;
            let r = sys::in_ns(&bed.c, move || {
                let mut c = DnsClient::new(server_addr(), Duration::from_millis(300))?;
                Ok(c.query(&format!("n0.{APEX}"), RecordType::A))
            })?;
            if matches!(&r, Reply::Answer { rcode, .. } if rcode == "NoError") {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "{} does not answer after 60 s:\n{}",
                    server.label(),
                    proc.log_text()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(Running { proc, knot_conf })
}

/// NSD's configuration for the bench zone in `dir` (zone file `{APEX}zone` there), on the
/// server address and `port`: one server process, RRL off, minimal responses.
pub fn nsd_conf(dir: &Path, port: u16) -> String {
    format!(
        "server:\n    ip-address: {SERVER}@{port}\n    server-count: 1\n    username: \"\"\n    \
         chroot: \"\"\n    zonesdir: \"{d}\"\n    pidfile: \"{d}/nsd.pid\"\n    \
         database: \"\"\n    zonelistfile: \"{d}/zone.list\"\n    xfrdfile: \"{d}/xfrd.state\"\n    \
         xfrdir: \"{d}\"\n    rrl-ratelimit: 0\n    rrl-whitelist-ratelimit: 0\n    \
         minimal-responses: yes\n    verbosity: 1\n\
         remote-control:\n    control-enable: no\n\
         zone:\n    name: {APEX}\n    zonefile: {APEX}zone\n",
        d = dir.display()
    )
}

pub fn server_addr() -> SocketAddr {
    format!("{SERVER}:53").parse().expect("address")
}

/// `edgedns xdp-pass` on the client end, so that XDP_TX answers reach the client's sockets.
pub fn client_pass(bed: &Bed, edgedns: &Path, log: &Path) -> Result<Process> {
    let mut cmd = bed.exec(&bed.c, &edgedns.to_string_lossy());
    cmd.args(["xdp-pass", "--iface", C_IF]);
    let mut p = Process::try_spawn("edgedns xdp-pass", cmd, log.to_owned())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        p.check_running()?;
        if bed
            .ip(&bed.c, &["link", "show", "dev", C_IF])?
            .contains("xdp")
        {
            return Ok(p);
        }
        if Instant::now() > deadline {
            bail!("no XDP program on {C_IF} after starting xdp-pass");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Asks a sample of names (A hits, AAAA hits, CNAMEs, NXDOMAINs) and compares with the zone.
pub fn check(bed: &Bed, setup: &Setup, server: Server) -> Result<Value> {
    let _pass = if server == Server::EdgeXdp {
        Some(client_pass(
            bed,
            &setup.edgedns,
            &bed.dir.join("xdp-pass.log"),
        )?)
    } else {
        None
    };
    let shape = setup.shape;
    let xdp_before = bed.ethtool_sum(&bed.s, S_IF, "xdp_tx");
    let wrong = sys::in_ns(&bed.c, move || {
        let mut c = DnsClient::new(server_addr(), Duration::from_millis(500))?;
        let mut wrong = Vec::new();
        let mut asked = 0;
        let mut ask = |name: String, t: RecordType, rcode: &str, addrs: Vec<String>| {
            asked += 1;
            let mut got = c.query(&name, t);
            if got == Reply::Timeout {
                got = c.query(&name, t);
            }
            let ok = matches!(&got, Reply::Answer { rcode: r, addrs: a }
                if r == rcode && *a == addrs);
            if !ok {
                wrong.push(format!("{name} {t}: got {got:?}, want {rcode} {addrs:?}"));
            }
        };
        for k in 0..40u32 {
            let i = (k * 7919 + 13) % shape.names;
            ask(
                format!("n{i}.{APEX}"),
                RecordType::A,
                "NoError",
                vec![zonegen::a_of(i).to_string()],
            );
        }
        for k in 0..10u32 {
            let i = (k * 131 + 7) % shape.aaaa_count().max(1);
            ask(
                format!("n{i}.{APEX}"),
                RecordType::AAAA,
                "NoError",
                vec![zonegen::aaaa_of(i).to_string()],
            );
            let j = (k * 37 + 3) % shape.cname_count().max(1);
            ask(
                format!("c{j}.{APEX}"),
                RecordType::A,
                "NoError",
                vec![zonegen::a_of(j).to_string()],
            );
            ask(format!("nx{k}.{APEX}"), RecordType::A, "NXDomain", vec![]);
        }
        Ok((asked, wrong))
    })?;
    let xdp_tx = bed.ethtool_sum(&bed.s, S_IF, "xdp_tx") - xdp_before;
    drop(_pass);
    bed.xdp_off(&bed.c, C_IF);
    let (asked, wrong) = wrong;
    Ok(json!({
        "asked": asked,
        "wrong": wrong.len(),
        "examples": wrong.iter().take(3).collect::<Vec<_>>(),
        "xdp_tx": xdp_tx,
    }))
}

/// `knotc -c CONF ARGS`, timed.
pub fn knotc(conf: &Path, args: &[&str]) -> Result<Duration> {
    let t = Instant::now();
    testkit::try_run_ok(
        Command::new("knotc").arg("-c").arg(conf).args(args),
        Duration::from_secs(20),
    )?;
    Ok(t.elapsed())
}
