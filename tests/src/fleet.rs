//! The fleet topology: an etcd namespace and N edges, each edge with the daemon's XDP program on
//! a veth to a client namespace of its own, like [`crate::TestBed`], and one veth link up to the
//! etcd namespace, so that a test can cut one edge off from etcd with `ip link set ... down`.
//!
//! ```text
//!            etcd ns  edns-etcd-<pid>-<n>: 10.99.0.1/32 on lo, the cluster's members on its ports
//!   upNe ... 10.98.0.1/24    10.98.1.1/24    ...    (one veth per edge, etcd side)
//!              |                |
//!   upNn ... 10.98.0.2/24    10.98.1.2/24           (edge side; routes to 10.99.0.1 and to
//!                                                     the other edges, 10.98.0.0/16, via .1:
//!                                                     the etcd namespace forwards between
//!                                                     edges, for their acks to each other)
//!  edge ns edns-e-..-0     edns-e-..-1      ...     edgedns serve (XDP on the client veth)
//!   ve..s  10.211.0.1/24   10.211.0.1/24            (every edge and client pair has the same
//!   ve..c  10.211.0.2/24   10.211.0.2/24             addresses: each pair is its own world)
//! client ns edns-k-..-0     edns-k-..-1             edgedns xdp-pass, dig, pollers
//! ```
//!
//! Fields drop in order: every edge's processes and namespaces, then the etcd cluster, then the
//! etcd namespace, then the temporary directory; also when a test panics.

use std::{
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::{Command, ExitStatus},
    thread,
    time::{Duration, Instant},
};

use crate::{
    dig, edgedns_bin, etcd::EtcdCluster, ip, run_timeout, unique, Daemon, DnsAnswer, NetNs,
    PassGuard, Stats, TempDir, Veth, API_ADDR, DNS_PORT, SERVER_V4,
};

/// The address the etcd cluster listens on (its namespace's loopback).
pub const ETCD_V4: &str = "10.99.0.1";
/// The API's JSON answers wait at most this long in [`Edge::http`].
const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// Every edge's uplink is in this network.
const EDGES_NET: &str = "10.98.0.0/16";

/// The etcd side of edge `i`'s uplink.
pub fn uplink_etcd_v4(i: usize) -> String {
    format!("10.98.{i}.1")
}

/// The edge side of edge `i`'s uplink (its source address towards etcd).
pub fn uplink_edge_v4(i: usize) -> String {
    format!("10.98.{i}.2")
}

/// One edge: its namespace, its client namespace, the links, and (when started) the daemon.
pub struct Edge {
    pub daemon: Option<Daemon>,
    pub pass: Option<PassGuard>,
    pub index: usize,
    /// `edge-<index>`, what `--edge-id` gets from [`Edge::start`].
    pub id: String,
    /// The edge end of the uplink (in `ns`) and the etcd end (in the etcd namespace).
    pub uplink_if: String,
    pub uplink_etcd_if: String,
    etcd_ns: String,
    /// `serve` arguments of the last start, for restarts.
    args: Vec<String>,
    bin: PathBuf,
    data_dir: PathBuf,
    pub veth: Veth,
    pub client: NetNs,
    pub ns: NetNs,
}

impl Edge {
    /// Starts `edgedns serve` on this edge: XDP (driver mode) on the client veth, DNS on
    /// 10.211.0.1:5300, the API on the namespace's 127.0.0.1:8053, `--edge-id edge-<i>`, then
    /// `extra` (say `--etcd URLS`). Returns once `/healthz` answers (not `/readyz`: see
    /// [`Edge::wait_ready`]).
    pub fn start(&mut self, extra: &[&str]) {
        assert!(self.daemon.is_none(), "{} is already running", self.id);
        let listen = format!("{SERVER_V4}:{DNS_PORT}");
        self.args = [
            "--iface",
            &self.veth.server_if,
            "--xdp-mode",
            "driver",
            "--dns-listen",
            &listen,
            "--api-listen",
            API_ADDR,
            "--edge-id",
            &self.id,
        ]
        .iter()
        .chain(extra)
        .map(|s| (*s).to_owned())
        .collect();
        self.start_again();
    }

    /// Starts the daemon with the arguments of the last [`Edge::start`], on the same data.
    pub fn start_again(&mut self) {
        assert!(self.daemon.is_none(), "{} is already running", self.id);
        assert!(!self.args.is_empty(), "{} was never started", self.id);
        self.daemon = Some(Daemon::start(
            &self.bin,
            &self.ns,
            &self.args,
            &self.data_dir,
        ));
    }

    /// Like [`Edge::start`], but expecting the start to fail: waits (bounded) until the process
    /// exits and returns its status and output.
    pub fn start_failing(
        &mut self,
        extra: &[&str],
        timeout: Duration,
    ) -> (Option<ExitStatus>, String) {
        let listen = format!("{SERVER_V4}:{DNS_PORT}");
        let mut cmd = self.ns.command(&self.bin);
        cmd.args([
            "serve",
            "--iface",
            &self.veth.server_if,
            "--xdp-mode",
            "driver",
        ])
        .args([
            "--dns-listen",
            &listen,
            "--api-listen",
            API_ADDR,
            "--edge-id",
            &self.id,
        ])
        .args(extra)
        .arg("--data-dir")
        .arg(&self.data_dir);
        fs::create_dir_all(&self.data_dir).expect("data dir");
        let out = run_timeout(&mut cmd, timeout).unwrap_or_else(|e| panic!("{e}"));
        (out.status, format!("{}{}", out.stdout, out.stderr))
    }

    /// Stops the daemon (SIGTERM, then SIGKILL); returns how it exited.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut d = self.daemon.take().expect("a running daemon");
        d.process.stop()
    }

    /// Kills the daemon with SIGKILL (a crash).
    pub fn kill(&mut self) {
        let mut d = self.daemon.take().expect("a running daemon");
        d.process.kill();
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon
            .as_ref()
            .unwrap_or_else(|| panic!("{} is not running", self.id))
    }

    /// Waits until `GET /readyz` answers 200 (bounded by `timeout`); panics with the last
    /// answer and the daemon's log otherwise.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let d = self.daemon.as_mut().expect("a running daemon");
            d.process.assert_running();
            let (code, body) = d.http("GET", "/readyz", None);
            if code == 200 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready within {timeout:?}: {code} {body}; its log:\n{}",
                self.id,
                d.process.log_text()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// One API request with curl in the edge's namespace, headers and all.
    pub fn http(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
        headers: &[(&str, &str)],
    ) -> HttpReply {
        http(self.ns.name(), method, path, body, headers)
    }

    /// `dig` from the client namespace to this edge (panics without an answer).
    pub fn dig(&self, name: &str, rtype: &str) -> DnsAnswer {
        dig(&self.client, SERVER_V4, DNS_PORT, name, rtype)
    }

    /// The XDP counters (`GET /v1/stats`).
    pub fn stats(&self) -> Stats {
        self.daemon().stats()
    }

    /// Cuts the edge off from etcd: its uplink's etcd end goes down, so the edge's packets to
    /// etcd go nowhere (no refusal, no reset: a partition, not a crash).
    pub fn cut(&self) {
        run_ip(&[
            "-n",
            &self.etcd_ns,
            "link",
            "set",
            &self.uplink_etcd_if,
            "down",
        ]);
    }

    /// Undoes [`Edge::cut`].
    pub fn reconnect(&self) {
        run_ip(&[
            "-n",
            &self.etcd_ns,
            "link",
            "set",
            &self.uplink_etcd_if,
            "up",
        ]);
        // The edge end gets its carrier back a moment later.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !self
            .ns
            .ip(&["link", "show", "dev", &self.uplink_if])
            .contains("LOWER_UP")
        {
            assert!(
                Instant::now() < deadline,
                "{}'s uplink has no carrier 5 s after its peer came up",
                self.id
            );
            thread::sleep(Duration::from_millis(20));
        }
        // The route is kept while the carrier is down, but put it back should the kernel have
        // dropped it.
        for dest in [format!("{ETCD_V4}/32"), EDGES_NET.to_string()] {
            self.ns.ip(&[
                "route",
                "replace",
                &dest,
                "via",
                &uplink_etcd_v4(self.index),
            ]);
        }
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

fn run_ip(args: &[&str]) {
    ip(args);
}

/// An etcd namespace and N edges (see the module docs). The cluster is the caller's to start
/// ([`FleetNet::start_etcd`]), so that the benchmark can put Knot there instead.
pub struct FleetNet {
    pub edges: Vec<Edge>,
    bin: PathBuf,
    pub etcd: Option<EtcdCluster>,
    pub etcd_ns: NetNs,
    pub tmp: TempDir,
}

impl FleetNet {
    /// The namespaces and links for `edges` edges, with `edgedns xdp-pass` on every client end.
    pub fn new(edges: usize) -> Self {
        Self::with_binary(&edgedns_bin(), edges)
    }

    /// [`FleetNet::new`] with the daemon binary given (the benchmark's), not `EDGEDNS_BIN`.
    pub fn with_binary(bin: &Path, edges: usize) -> Self {
        crate::require_root();
        assert!(edges <= 250, "one /24 uplink per edge: at most 250");
        let tmp = TempDir::new();
        let etcd_ns = NetNs::new("etcd");
        etcd_ns.ip(&["addr", "add", &format!("{ETCD_V4}/32"), "dev", "lo"]);
        // Edges reach each other through it (acks go straight to the writing edge).
        crate::run_ok(
            etcd_ns
                .command("sh")
                .args(["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"]),
        );
        let mut net = Self {
            edges: Vec::new(),
            bin: bin.to_owned(),
            etcd: None,
            etcd_ns,
            tmp,
        };
        for i in 0..edges {
            let edge = net.add_edge(i);
            net.edges.push(edge);
        }
        net
    }

    fn add_edge(&self, i: usize) -> Edge {
        let ns = NetNs::new("e");
        let client = NetNs::new("k");
        let veth = Veth::new(&ns, &client);
        let id = unique("up", 'x');
        let (uplink_if, uplink_etcd_if) = (format!("{id}n"), format!("{id}e"));
        assert!(uplink_if.len() <= 15, "interface name too long");
        run_ip(&[
            "link",
            "add",
            &uplink_if,
            "netns",
            ns.name(),
            "type",
            "veth",
            "peer",
            "name",
            &uplink_etcd_if,
            "netns",
            self.etcd_ns.name(),
        ]);
        for (n, ifname, addr) in [
            (&ns, &uplink_if, uplink_edge_v4(i)),
            (&self.etcd_ns, &uplink_etcd_if, uplink_etcd_v4(i)),
        ] {
            n.ip(&["addr", "add", &format!("{addr}/24"), "dev", ifname]);
            n.ip(&["link", "set", ifname, "up"]);
        }
        for dest in [format!("{ETCD_V4}/32"), EDGES_NET.to_string()] {
            ns.ip(&["route", "add", &dest, "via", &uplink_etcd_v4(i)]);
        }
        let dir = self.tmp.path().join(format!("edge-{i}"));
        fs::create_dir_all(&dir).expect("edge directory");
        let pass = PassGuard::start(&self.bin, &client, &veth.client_if, &dir);
        Edge {
            daemon: None,
            pass: Some(pass),
            index: i,
            id: format!("edge-{i}"),
            uplink_if,
            uplink_etcd_if,
            etcd_ns: self.etcd_ns.name().to_owned(),
            args: Vec::new(),
            bin: self.bin.clone(),
            data_dir: dir.join("data"),
            veth,
            client,
            ns,
        }
    }

    /// Starts an etcd cluster of `members` in the etcd namespace on [`ETCD_V4`].
    pub fn start_etcd(&mut self, members: usize, tls: Option<&crate::etcd::Tls>) -> &EtcdCluster {
        assert!(self.etcd.is_none(), "etcd already runs");
        self.etcd = Some(EtcdCluster::start_in(
            Some(&self.etcd_ns),
            members,
            ETCD_V4,
            tls,
        ));
        self.etcd.as_ref().expect("just started")
    }

    pub fn etcd(&self) -> &EtcdCluster {
        self.etcd.as_ref().expect("FleetNet::start_etcd")
    }

    pub fn etcd_mut(&mut self) -> &mut EtcdCluster {
        self.etcd.as_mut().expect("FleetNet::start_etcd")
    }
}

/// An HTTP answer with its headers (names lower-case).
#[derive(Clone, Debug)]
pub struct HttpReply {
    /// 0 when nothing answered.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics (with the body) if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("answer {} is not JSON ({e}): {}", self.status, self.body))
    }
}

/// One request to [`API_ADDR`] in namespace `ns` with curl: status, headers and body.
pub fn http(
    ns: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
    headers: &[(&str, &str)],
) -> HttpReply {
    let url = format!("http://{API_ADDR}{path}");
    let mut cmd = Command::new("ip");
    let secs = HTTP_TIMEOUT.as_secs().to_string();
    cmd.args(["netns", "exec", ns, "curl", "-sS", "-m", &secs, "-D", "-"])
        .args(["-X", method, "-H", "Expect:"]);
    for (k, v) in headers {
        cmd.arg("-H").arg(format!("{k}: {v}"));
    }
    if let Some(body) = body {
        cmd.args(["-H", "content-type: application/json", "--data-binary"])
            .arg(OsStr::new(body));
    }
    cmd.arg(&url);
    let out = run_timeout(&mut cmd, HTTP_TIMEOUT + Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("{e}"));
    parse_http(&out.stdout)
}

/// Parses `curl -D -` output: the header block, a blank line, the body.
fn parse_http(out: &str) -> HttpReply {
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((out, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    HttpReply {
        status,
        headers,
        body: body.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_curl_headers() {
        let r = parse_http(
            "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\nX-Edgedns-Revision: 42\r\n\r\n{\"status\":\"PENDING\"}",
        );
        assert_eq!(r.status, 202);
        assert_eq!(r.header("x-edgedns-revision"), Some("42"));
        assert_eq!(r.json()["status"], "PENDING");
        assert_eq!(parse_http("").status, 0);
    }
}
