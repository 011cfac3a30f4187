//! A real etcd cluster for the fleet tests and the fleet benchmark: Debian's `etcd` (3.4), each
//! member a process with its data directory in a temporary directory, on free ports of one
//! address, optionally inside a network namespace and over TLS.
//!
//! The test drives the cluster through etcd's own JSON gateway (`/v3/kv/...`,
//! `/v3/maintenance/...` on the client port) with curl, so it needs neither etcdctl (Debian ships
//! it in another package) nor an async client. [`EtcdCluster`]'s `Drop` stops every member by its
//! PID and removes the directories, also when the test panics.

use std::{
    fs,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use serde_json::{json, Value};

use crate::{enter_netns, run_timeout, try_run_ok, NetNs, Process, TempDir};

/// How long a new or restarted cluster may take to elect a leader and answer `/health`.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);
/// Time limit of one gateway request (curl) and of openssl.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Panics with what to install unless `etcd` is on the PATH; returns its path.
pub fn etcd_bin() -> PathBuf {
    find_program("etcd").unwrap_or_else(|| {
        panic!(
            "`etcd` is not on the PATH: the fleet tests run a real etcd cluster; install Debian's \
             etcd-server (`apt-get install etcd-server`; `cargo xtask test` does it when missing)"
        )
    })
}

fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A certificate authority, a server certificate for the members' address and a client
/// certificate, made with `openssl` (EC P-256) in a directory the caller owns.
#[derive(Clone, Debug)]
pub struct Tls {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Tls {
    /// Generates the files in `dir` (created): a CA, a server certificate valid for
    /// `server_ips` and 127.0.0.1, and a client certificate (`CN=edgedns-edge`), both signed by
    /// the CA. Two calls give two unrelated CAs: one's client certificate is a bad one for the
    /// other's cluster.
    pub fn generate(dir: &Path, server_ips: &[&str]) -> Self {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        let p = |f: &str| dir.join(f);
        let openssl = |args: &[&str]| {
            let mut cmd = Command::new("openssl");
            cmd.args(args).current_dir(dir);
            try_run_ok(&mut cmd, REQUEST_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
        };
        let key = |name: &str| {
            openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-out",
                name,
            ])
        };
        key("ca.key");
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-key",
            "ca.key",
            "-subj",
            "/CN=edgedns-test-ca",
            "-days",
            "2",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
            "-out",
            "ca.crt",
        ]);
        let mut san: Vec<String> = server_ips.iter().map(|ip| format!("IP:{ip}")).collect();
        san.push("IP:127.0.0.1".into());
        san.push("DNS:localhost".into());
        for (name, cn, usage, san) in [
            ("server", "etcd", "serverAuth,clientAuth", san.join(",")),
            ("client", "edgedns-edge", "clientAuth", String::new()),
        ] {
            key(&format!("{name}.key"));
            openssl(&[
                "req",
                "-new",
                "-key",
                &format!("{name}.key"),
                "-subj",
                &format!("/CN={cn}"),
                "-out",
                &format!("{name}.csr"),
            ]);
            let mut ext = format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage={usage}\n"
            );
            if !san.is_empty() {
                ext.push_str(&format!("subjectAltName={san}\n"));
            }
            let ext_file = format!("{name}.ext");
            fs::write(p(&ext_file), ext).expect("write extensions");
            openssl(&[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext_file,
                "-out",
                &format!("{name}.crt"),
            ]);
        }
        Self {
            ca: p("ca.crt"),
            server_cert: p("server.crt"),
            server_key: p("server.key"),
            client_cert: p("client.crt"),
            client_key: p("client.key"),
        }
    }
}

/// One member: its ports, its directory and, while it runs, its process.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    process: Option<Process>,
    /// How many times it was started (each start logs to a file of its own).
    starts: u32,
}

/// A running etcd cluster. Fields drop in order: the members' processes, then the directory.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    ip: String,
    /// The network namespace the members run in (`None`: the caller's).
    ns: Option<String>,
    tls: Option<Tls>,
    initial_cluster: String,
    dir: TempDir,
}

impl EtcdCluster {
    /// `members` members on free ports of `listen_ip` in the caller's network namespace,
    /// clients served over TLS (with client certificates required) if `tls` is given. Returns
    /// once every member answers `/health` (bounded); panics otherwise.
    pub fn start(members: usize, listen_ip: &str, tls: Option<&Tls>) -> Self {
        Self::start_in(None, members, listen_ip, tls)
    }

    /// [`EtcdCluster::start`] inside namespace `ns` (which must have `listen_ip`).
    pub fn start_in(
        ns: Option<&NetNs>,
        members: usize,
        listen_ip: &str,
        tls: Option<&Tls>,
    ) -> Self {
        let bin = etcd_bin();
        assert!(members >= 1, "a cluster needs a member");
        let ns_name = ns.map(|n| n.name().to_owned());
        let ports = free_ports(ns_name.as_deref(), listen_ip, 2 * members);
        let dir = TempDir::new();
        let members: Vec<Member> = (0..members)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                data_dir: dir.path().join(format!("m{i}.etcd")),
                process: None,
                starts: 0,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://{listen_ip}:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            members,
            ip: listen_ip.to_owned(),
            ns: ns_name,
            tls: tls.cloned(),
            initial_cluster,
            dir,
        };
        for i in 0..cluster.members.len() {
            cluster.spawn(&bin, i);
        }
        for i in 0..cluster.members.len() {
            cluster.wait_healthy(i);
        }
        cluster
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn url(&self, i: usize) -> String {
        format!(
            "{}://{}:{}",
            self.scheme(),
            self.ip,
            self.members[i].client_port
        )
    }

    /// Every member's client URL (stopped members too), in member order.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.url(i)).collect()
    }

    /// [`EtcdCluster::endpoints`] joined with commas, as `--etcd` takes them.
    pub fn endpoints_arg(&self) -> String {
        self.endpoints().join(",")
    }

    /// The members' client ports, in member order.
    pub fn client_ports(&self) -> Vec<u16> {
        self.members.iter().map(|m| m.client_port).collect()
    }

    pub fn listen_ip(&self) -> &str {
        &self.ip
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    fn command(&self, program: &Path) -> Command {
        match &self.ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    fn spawn(&mut self, bin: &Path, i: usize) {
        let url = self.url(i);
        let ip = self.ip.clone();
        let m = &self.members[i];
        let peer = format!("http://{ip}:{}", m.peer_port);
        let mut cmd = self.command(bin);
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &self.initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", "edgedns-test"])
            // A test runs a few hundred writes: no snapshots, quick elections on a loaded box.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--log-level", "warn"]);
        if let Some(tls) = &self.tls {
            cmd.arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca)
                .arg("--client-cert-auth");
        }
        let log = self.dir.path().join(format!("{}-{}.log", m.name, m.starts));
        let process = Process::spawn(&format!("etcd member {}", m.name), cmd, log);
        let m = &mut self.members[i];
        m.starts += 1;
        m.process = Some(process);
    }

    fn wait_healthy(&mut self, i: usize) {
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        loop {
            let url = format!("{}/health", self.url(i));
            let out = self.curl(&["-m", "2", &url]);
            if out
                .as_deref()
                .is_ok_and(|b| b.contains("\"health\":\"true\""))
            {
                return;
            }
            let m = &mut self.members[i];
            m.process.as_mut().expect("started").assert_running();
            assert!(
                Instant::now() < deadline,
                "etcd member {} did not become healthy within {HEALTHY_TIMEOUT:?} ({out:?}); its log:\n{}",
                m.name,
                m.process.as_ref().expect("started").log_text()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Kills member `i` with SIGKILL (a crash: no goodbye to its peers) and waits for it.
    pub fn kill_member(&mut self, i: usize) {
        let m = &mut self.members[i];
        let mut p = m.process.take().expect("the member is running");
        p.kill();
    }

    /// Starts member `i` again on its data directory and ports; returns once it is healthy.
    pub fn restart_member(&mut self, i: usize) {
        assert!(
            self.members[i].process.is_none(),
            "member {i} is still running"
        );
        self.spawn(&etcd_bin(), i);
        self.wait_healthy(i);
    }

    /// The running members' process ids, in member order.
    pub fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.process.as_ref().map(Process::pid))
            .collect()
    }

    /// Whether member `i` runs.
    pub fn is_running(&self, i: usize) -> bool {
        self.members[i].process.is_some()
    }

    /// curl in the cluster's namespace, with the client certificate when over TLS.
    fn curl(&self, args: &[&str]) -> Result<String, String> {
        let mut cmd = self.command(Path::new("curl"));
        cmd.arg("-sS");
        if let Some(tls) = &self.tls {
            cmd.arg("--cacert")
                .arg(&tls.ca)
                .arg("--cert")
                .arg(&tls.client_cert)
                .arg("--key")
                .arg(&tls.client_key);
        }
        cmd.args(args);
        try_run_ok(&mut cmd, REQUEST_TIMEOUT).map_err(|e| e.to_string())
    }

    /// A gateway request (POST JSON) to the first running member that answers; panics if none
    /// does or etcd reports an error.
    fn gateway(&self, path: &str, body: &Value) -> Value {
        let body = body.to_string();
        let mut errors = Vec::new();
        for i in (0..self.members.len()).filter(|i| self.is_running(*i)) {
            let url = format!("{}{path}", self.url(i));
            match self.curl(&["-m", "5", "-X", "POST", &url, "-d", &body]) {
                Ok(out) => {
                    let v: Value = serde_json::from_str(&out)
                        .unwrap_or_else(|e| panic!("POST {url} {body}: not JSON ({e}): {out}"));
                    assert!(
                        v.get("error").is_none() && v.get("code").is_none(),
                        "POST {url} {body}: {out}"
                    );
                    return v;
                }
                Err(e) => errors.push(e),
            }
        }
        panic!("no etcd member answered POST {path} {body}: {errors:#?}");
    }

    /// The cluster's current revision.
    pub fn revision(&self) -> i64 {
        let v = self.gateway(
            "/v3/kv/range",
            &json!({ "key": B64.encode("\0"), "limit": 1 }),
        );
        header_revision(&v)
    }

    /// Compacts the key-value history up to `revision` (physically: the old revisions are gone
    /// when this returns). A watch or read from before it then fails with "compacted".
    pub fn compact(&self, revision: i64) {
        self.gateway(
            "/v3/kv/compaction",
            &json!({ "revision": revision.to_string(), "physical": true }),
        );
    }

    /// `key` = `value`; returns the revision it committed at.
    pub fn put(&self, key: &[u8], value: &[u8]) -> i64 {
        let v = self.gateway(
            "/v3/kv/put",
            &json!({ "key": B64.encode(key), "value": B64.encode(value) }),
        );
        header_revision(&v)
    }

    /// Every key under `prefix` with its value and mod revision, in key order.
    pub fn get_prefix(&self, prefix: &[u8]) -> Vec<Kv> {
        let v = self.gateway(
            "/v3/kv/range",
            &json!({ "key": B64.encode(prefix), "range_end": B64.encode(prefix_end(prefix)) }),
        );
        v["kvs"]
            .as_array()
            .map(|kvs| {
                kvs.iter()
                    .map(|kv| Kv {
                        key: decode(&kv["key"]),
                        value: decode(&kv["value"]),
                        mod_revision: int(&kv["mod_revision"]),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Where member `i`'s logs are (for a failing test's message).
    pub fn log_dir(&self) -> &Path {
        self.dir.path()
    }
}

/// One key of [`EtcdCluster::get_prefix`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub mod_revision: i64,
}

/// The gateway prints int64 fields as strings.
fn int(v: &Value) -> i64 {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| v.as_i64())
        .unwrap_or(0)
}

fn header_revision(v: &Value) -> i64 {
    let r = int(&v["header"]["revision"]);
    assert!(r > 0, "no revision in the etcd header: {v}");
    r
}

fn decode(v: &Value) -> Vec<u8> {
    v.as_str()
        .and_then(|s| B64.decode(s).ok())
        .unwrap_or_default()
}

/// The end of the key range holding every key that starts with `prefix` (etcd's `--prefix`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// `n` distinct TCP ports free on `ip` in namespace `ns` (the caller's if `None`), found by
/// binding port 0. Within a fresh namespace nothing else takes them before etcd does.
pub fn free_ports(ns: Option<&str>, ip: &str, n: usize) -> Vec<u16> {
    let ns = ns.map(str::to_owned);
    let ip = ip.to_owned();
    thread::spawn(move || {
        if let Some(ns) = &ns {
            enter_netns(ns).unwrap_or_else(|e| panic!("{e}"));
        }
        // Held until all are chosen, so that no port comes twice.
        let held: Vec<TcpListener> = (0..n)
            .map(|_| {
                TcpListener::bind((ip.as_str(), 0))
                    .unwrap_or_else(|e| panic!("bind {ip}:0 in {ns:?}: {e}"))
            })
            .collect();
        held.iter()
            .map(|l| l.local_addr().expect("bound").port())
            .collect()
    })
    .join()
    .expect("port finder panicked")
}

/// Whether `etcd` answers `/health` at `url` from namespace `ns` (curl, no TLS): for checks that
/// an address is reachable or not.
pub fn reachable(ns: &NetNs, url: &str) -> bool {
    run_timeout(
        ns.command("curl")
            .args(["-sS", "-m", "2", &format!("{url}/health")]),
        REQUEST_TIMEOUT,
    )
    .is_ok_and(|o| o.success())
}
