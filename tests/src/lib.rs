//! Harness for the integration tests: network namespaces joined by a veth pair, the real `edgedns`
//! daemon in one, dig/kdig in the other.
//!
//! ```text
//!  server ns  edns-s-<pid>-<n>               client ns  edns-c-<pid>-<n>
//!  ve<pid>s<n>  10.211.0.1/24  <--- veth --->  ve<pid>c<n>  10.211.0.2/24
//!               fd00:211::1/64                              fd00:211::2/64
//!  edgedns serve (XDP, driver mode)          edgedns xdp-pass, dig, kdig
//!  API on the namespace's own 127.0.0.1,
//!  reached with curl in this namespace
//! ```
//!
//! Everything a test creates is owned by a guard whose `Drop` removes it (processes first, then
//! the namespaces, then the temporary directory), also when the test panics. Every external
//! command runs under a time limit. Nothing is sent outside the test's namespaces.
//!
//! The tests need root and the daemon binary: run them with `cargo xtask test`, which builds
//! `edgedns` and passes its path in `EDGEDNS_BIN`.

use std::{
    collections::BTreeMap,
    env,
    ffi::OsStr,
    fs,
    io::{self, Read as _},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use dns_common::Stat;

pub mod dns_client;
pub mod dns_message;
pub mod etcd;
pub mod fixture;
pub mod fleet;
pub mod fuzz;
pub mod http_client;
pub mod packet;
pub mod rawsock;
pub mod xdprun;

/// Server side of the veth pair.
pub const SERVER_V4: &str = "10.211.0.1";
pub const SERVER_V6: &str = "fd00:211::1";
/// Client side of the veth pair.
pub const CLIENT_V4: &str = "10.211.0.2";
pub const CLIENT_V6: &str = "fd00:211::2";
/// The VLAN sub-interfaces of [`TestBed::add_vlan`].
pub const VLAN_SERVER_V4: &str = "10.212.0.1";
pub const VLAN_SERVER_V6: &str = "fd00:212::1";
pub const VLAN_CLIENT_V4: &str = "10.212.0.2";
pub const VLAN_CLIENT_V6: &str = "fd00:212::2";
/// The DNS port the daemon serves in the tests (and its default).
pub const DNS_PORT: u16 = 5300;
/// The API address inside the server namespace (its own loopback: no clash between tests).
pub const API_ADDR: &str = "127.0.0.1:8053";
/// The zone the daemon creates on first start, with [`DEMO_NAME`] A [`DEMO_A`] in it.
pub const ZONE: &str = "t.example.net";
pub const DEMO_NAME: &str = "demo.t.example.net";
pub const DEMO_A: &str = "192.0.2.1";

/// Time limit for one helper command (ip, ethtool, curl); dig has its own (`+time=2`).
const CMD_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the daemon may take to answer `/healthz` after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a process gets to exit after SIGTERM before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique to this process and call: `<prefix><pid in hex><sep><n>`, at most 15 bytes for
/// the prefixes used here (interface names are limited to 15).
pub(crate) fn unique(prefix: &str, sep: char) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{:x}{sep}{n}", std::process::id())
}

/// Panics unless the tests can run: root, and `EDGEDNS_BIN` naming the daemon. Returns the path.
pub fn edgedns_bin() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the integration tests need root (network namespaces, XDP): run them with `cargo xtask test`"
    );
    let bin = env::var_os("EDGEDNS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            panic!("EDGEDNS_BIN is not set: run the integration tests with `cargo xtask test`")
        });
    assert!(
        bin.is_file(),
        "EDGEDNS_BIN={} is not a file: run the integration tests with `cargo xtask test`",
        bin.display()
    );
    bin
}

/// Panics unless we are root (for the harness tests that need no daemon).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the integration tests need root (network namespaces): run them with `cargo xtask test`"
    );
}

// ---------------------------------------------------------------------------------------------
// Commands

/// What a finished command left.
#[derive(Debug)]
pub struct Output {
    /// `None`: killed at the time limit.
    pub status: Option<ExitStatus>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

/// `cmd` as a shell would show it, for messages.
pub fn cmdline(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(OsStr::to_string_lossy)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` to completion or until `timeout`, then kills it (`status` is then `None`). `Err`
/// only when it cannot be started or waited for: the exit status is the caller's to judge.
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> io::Result<Output> {
    let line = cmdline(cmd);
    let context =
        |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what} `{line}`: {e}"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| context("cannot start", e))?;
    // Drain both pipes on threads so that a chatty child cannot block on a full pipe.
    let drain = |r: Option<Box<dyn io::Read + Send>>| {
        thread::spawn(move || {
            let mut s = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut s);
            }
            String::from_utf8_lossy(&s).into_owned()
        })
    };
    let out = drain(child.stdout.take().map(|r| Box::new(r) as _));
    let err = drain(child.stderr.take().map(|r| Box::new(r) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(context("waiting for", e));
            }
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// Runs `cmd` under `timeout`: its stdout if it exits 0, else an error naming the command line
/// with its output (or the time limit).
pub fn try_run_ok(cmd: &mut Command, timeout: Duration) -> io::Result<String> {
    let line = cmdline(cmd);
    let out = run_timeout(cmd, timeout)?;
    match out.status {
        Some(s) if s.success() => Ok(out.stdout),
        Some(s) => Err(io::Error::other(format!(
            "`{line}` failed ({s}):\n{}\n{}",
            out.stdout.trim_end(),
            out.stderr.trim_end()
        ))),
        None => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("`{line}` did not finish within {timeout:?}"),
        )),
    }
}

/// [`try_run_ok`] with the time limit [`CMD_TIMEOUT`], panicking on any failure.
pub fn run_ok(cmd: &mut Command) -> String {
    try_run_ok(cmd, CMD_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

/// [`run_timeout`] with the time limit [`CMD_TIMEOUT`], panicking if `cmd` cannot be run at all.
fn run_limited(cmd: &mut Command) -> Output {
    run_timeout(cmd, CMD_TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

/// `ip ARGS`.
pub(crate) fn ip(args: &[&str]) -> String {
    run_ok(Command::new("ip").args(args))
}

// ---------------------------------------------------------------------------------------------
// Namespaces, veth

/// A network namespace, deleted on drop. Its loopback is up.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates a namespace named `edns-<tag>-<pid>-<n>` with its loopback up.
    pub fn new(tag: &str) -> Self {
        require_root();
        let name = unique(&format!("edns-{tag}-"), '-');
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NS ARGS`.
    pub fn ip(&self, args: &[&str]) -> String {
        run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// A command that runs `program` inside the namespace (`ip netns exec NS program`). `ip`
    /// execs the program, so the child's pid is the program's.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// UDP datagrams the namespace's stack dropped for a bad checksum (`UdpInCsumErrors` +
    /// `Udp6InCsumErrors`, absolute counters, nstat's history left alone).
    pub fn udp_csum_errors(&self) -> u64 {
        let out =
            run_ok(
                self.command("nstat")
                    .args(["-asz", "UdpInCsumErrors", "Udp6InCsumErrors"]),
            );
        out.lines()
            .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .sum()
    }

    /// Packets received on `ifname` (its rx_packets counter).
    pub fn rx_packets(&self, ifname: &str) -> u64 {
        let out = self.ip(&["-s", "-j", "link", "show", "dev", ifname]);
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("ip -j link show {ifname}: {e}: {out}"));
        v[0]["stats64"]["rx"]["packets"]
            .as_u64()
            .unwrap_or_else(|| panic!("no rx packets for {ifname} in {out}"))
    }

    /// Whether the namespace still exists (`ip netns list`).
    pub fn exists(name: &str) -> bool {
        ip(&["netns", "list"])
            .lines()
            .any(|l| l.split_whitespace().next() == Some(name))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace destroys the interfaces in it (and so both ends of a veth).
        match run_timeout(
            Command::new("ip").args(["netns", "del", &self.name]),
            CMD_TIMEOUT,
        ) {
            Ok(out) if out.success() => {}
            Ok(out) => eprintln!("cleanup: ip netns del {}: {}", self.name, out.stderr.trim()),
            Err(e) => eprintln!("cleanup: {e}"),
        }
    }
}

/// Moves the calling thread into network namespace `ns` (by its `ip netns` name). Sockets the
/// thread opens afterwards live there; other threads stay where they are.
pub fn enter_netns(ns: &str) -> io::Result<()> {
    let path = Path::new("/var/run/netns").join(ns);
    let f = fs::File::open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
    // SAFETY: setns on a valid namespace fd affects only this thread's network namespace.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("setns {ns}: {e}")));
    }
    Ok(())
}

/// Gives `ifname` in `ns` its IPv4 (/24) and IPv6 (/64, no DAD) addresses, turns TX checksum
/// offload off (so XDP never sees a partial checksum) and brings it up.
fn configure_if(ns: &NetNs, ifname: &str, v4: &str, v6: &str) {
    ns.ip(&["addr", "add", &format!("{v4}/24"), "dev", ifname]);
    ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{v6}/64"),
        "dev",
        ifname,
        "nodad",
    ]);
    run_ok(ns.command("ethtool").args(["-K", ifname, "tx", "off"]));
    ns.ip(&["link", "set", ifname, "up"]);
}

/// A veth pair between a server and a client namespace, addressed as in the module docs.
/// Checksum offload is off on both ends, so that XDP always sees complete UDP checksums.
#[derive(Debug)]
pub struct Veth {
    /// The server end (in the server namespace), where edgedns attaches its XDP program.
    pub server_if: String,
    /// The client end, where [`PassGuard`] attaches an XDP_PASS program so that XDP_TX frames
    /// from the server end are delivered.
    pub client_if: String,
}

impl Veth {
    pub fn new(server: &NetNs, client: &NetNs) -> Self {
        Self::with_addrs(server, client, [SERVER_V4, SERVER_V6, CLIENT_V4, CLIENT_V6])
    }

    /// A pair addressed `[server v4, server v6, client v4, client v6]` (another subnet than the
    /// bed's first pair, for a second pair between the same namespaces).
    pub fn with_addrs(server: &NetNs, client: &NetNs, addrs: [&str; 4]) -> Self {
        let id = unique("ve", 'x');
        let veth = Self {
            server_if: format!("{id}s"),
            client_if: format!("{id}c"),
        };
        assert!(veth.server_if.len() <= 15, "interface name too long");
        ip(&[
            "link",
            "add",
            &veth.server_if,
            "netns",
            server.name(),
            "type",
            "veth",
            "peer",
            "name",
            &veth.client_if,
            "netns",
            client.name(),
        ]);
        let [server_v4, server_v6, client_v4, client_v6] = addrs;
        for (ns, ifname, v4, v6) in [
            (server, &veth.server_if, server_v4, server_v6),
            (client, &veth.client_if, client_v4, client_v6),
        ] {
            configure_if(ns, ifname, v4, v6);
        }
        veth
    }
}

/// VLAN sub-interfaces on both veth ends (see [`TestBed::add_vlan`]).
#[derive(Debug)]
pub struct Vlan {
    pub server_if: String,
    pub client_if: String,
    pub id: u16,
}

/// A directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    pub fn new() -> Self {
        let path = env::temp_dir().join(unique("edgedns-test-", '-'));
        fs::create_dir_all(&path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Default for TempDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

/// A bpffs mounted in the test's own (root) mount namespace. `ip netns exec` gives the daemon a
/// private /sys, so pins under its /sys/fs/bpf would vanish with it; pins here outlive it, as
/// /sys/fs/bpf does on a real host. Unmounted (pins and all) on drop.
#[derive(Debug)]
pub struct Bpffs {
    path: PathBuf,
}

impl Bpffs {
    /// Mounts a bpffs at `path` (created if missing).
    pub fn try_mount(path: &Path) -> io::Result<Self> {
        fs::create_dir_all(path)
            .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", path.display())))?;
        try_run_ok(
            Command::new("mount").args(["-t", "bpf", "bpf"]).arg(path),
            CMD_TIMEOUT,
        )?;
        Ok(Self {
            path: path.to_owned(),
        })
    }

    /// [`Bpffs::try_mount`], panicking on failure.
    pub fn mount(path: &Path) -> Self {
        Self::try_mount(path).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Bpffs {
    fn drop(&mut self) {
        if let Err(e) = run_timeout(
            Command::new("umount").arg("-l").arg(&self.path),
            CMD_TIMEOUT,
        ) {
            eprintln!("cleanup: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A background process, stopped on drop: SIGTERM, then SIGKILL after [`STOP_TIMEOUT`]. Its
/// stdout and stderr go to a log file that is printed if the thread is panicking (a failing
/// test). The benchmark runs the servers it measures with it too.
#[derive(Debug)]
pub struct Process {
    what: String,
    child: Child,
    log: PathBuf,
    started: Instant,
}

impl Process {
    /// Starts `cmd` with its output in the file `log`; `Err` names the command line.
    pub fn try_spawn(what: &str, mut cmd: Command, log: PathBuf) -> io::Result<Self> {
        let line = cmdline(&cmd);
        let context = |what: String, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
        let file =
            fs::File::create(&log).map_err(|e| context(format!("create {}", log.display()), e))?;
        let err = file.try_clone()?;
        let started = Instant::now();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .spawn()
            .map_err(|e| context(format!("cannot start {what} `{line}`"), e))?;
        Ok(Self {
            what: format!("{what} `{line}`"),
            child,
            log,
            started,
        })
    }

    /// [`Process::try_spawn`], panicking if the process cannot be started.
    pub fn spawn(what: &str, cmd: Command, log: PathBuf) -> Self {
        Self::try_spawn(what, cmd, log).unwrap_or_else(|e| panic!("{e}"))
    }

    /// `Err` with the exit status and the end of the log if the process has exited.
    pub fn check_running(&mut self) -> io::Result<()> {
        let Some(status) = self.child.try_wait()? else {
            return Ok(());
        };
        let log = self.log_text();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        Err(io::Error::other(format!(
            "{} exited early ({status}); the end of its output:\n{}",
            self.what,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )))
    }

    /// Panics (with the end of the log; the whole log follows when the guard drops) if the
    /// process has exited.
    pub fn assert_running(&mut self) {
        self.check_running().unwrap_or_else(|e| panic!("{e}"));
    }

    /// How long ago it was started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits; SIGKILL if it is still there after [`STOP_TIMEOUT`]. Returns the
    /// exit status (`None` if it had to be killed).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits pid_t");
        // SAFETY: kill(2) on our own child, which has not been reaped (try_wait said so).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            thread::sleep(Duration::from_millis(20));
        }
        eprintln!("cleanup: {} ignored SIGTERM; killing it", self.what);
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }

    /// Sends SIGKILL (a crash: no clean-up of its own) and waits for it. Returns the exit
    /// status if it had already exited.
    pub fn kill(&mut self) -> Option<ExitStatus> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Some(status);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
        if thread::panicking() {
            eprintln!(
                "--- output of {} ---\n{}--- end ---",
                self.what,
                self.log_text()
            );
        }
    }
}

/// `edgedns xdp-pass --iface IF` in a namespace: an XDP_PASS program on the client end of the
/// veth, without which the server end's XDP_TX frames are not delivered.
#[derive(Debug)]
pub struct PassGuard {
    pub process: Process,
}

impl PassGuard {
    pub fn start(bin: &Path, ns: &NetNs, ifname: &str, logdir: &Path) -> Self {
        let mut cmd = ns.command(bin);
        cmd.args(["xdp-pass", "--iface", ifname]);
        let mut process = Process::spawn("edgedns xdp-pass", cmd, logdir.join("xdp-pass.log"));
        // Attached when `ip link` shows an XDP program on the interface.
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            process.assert_running();
            let link = ns.ip(&["link", "show", "dev", ifname]);
            if link.contains("xdp") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no XDP program on {ifname} {READY_TIMEOUT:?} after starting xdp-pass:\n{link}\n{}",
                process.log_text()
            );
            thread::sleep(Duration::from_millis(50));
        }
        Self { process }
    }
}

/// A running `edgedns serve` in a namespace, stopped on drop.
#[derive(Debug)]
pub struct Daemon {
    pub process: Process,
    /// The namespace's name (for `ip netns exec` to reach the API).
    ns: String,
    api: String,
}

impl Daemon {
    /// Starts `edgedns serve ARGS --data-dir DATA` in `ns` and waits until `GET /healthz` on
    /// [`API_ADDR`] (the daemon's default API address) answers 200.
    pub fn start(bin: &Path, ns: &NetNs, args: &[impl AsRef<OsStr>], data_dir: &Path) -> Self {
        fs::create_dir_all(data_dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", data_dir.display()));
        let mut cmd = ns.command(bin);
        cmd.arg("serve")
            .args(args)
            .arg("--data-dir")
            .arg(data_dir)
            .env("RUST_LOG", env::var("RUST_LOG").unwrap_or("info".into()));
        let log = data_dir.with_extension("log");
        let mut daemon = Self {
            process: Process::spawn("edgedns serve", cmd, log),
            ns: ns.name().to_owned(),
            api: API_ADDR.to_owned(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            daemon.process.assert_running();
            if daemon.http("GET", "/healthz", None).0 == 200 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "edgedns did not answer /healthz within {READY_TIMEOUT:?}; its output:\n{}",
                daemon.process.log_text()
            );
            thread::sleep(Duration::from_millis(100));
        }
        daemon
    }

    /// One HTTP request to the API with curl inside the namespace: `(status, body)`; status 0
    /// when nothing answered.
    pub fn http(&self, method: &str, path: &str, json: Option<&str>) -> (u16, String) {
        let url = format!("http://{}{path}", self.api);
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.ns, "curl", "-sS", "-m", "5"])
            .args(["-X", method, "-w", "\n%{http_code}"]);
        if let Some(json) = json {
            cmd.args([
                "-H",
                "content-type: application/json",
                "--data-binary",
                json,
            ]);
        }
        cmd.arg(&url);
        let out = run_limited(&mut cmd);
        let (body, code) = out.stdout.rsplit_once('\n').unwrap_or(("", &out.stdout));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }

    /// `PUT /v1/zones/{zone}/records/{name}/{rtype}`; panics unless 200. Returns the serial.
    pub fn api_put(&self, zone: &str, name: &str, rtype: &str, ttl: u32, records: &[&str]) -> u64 {
        let body = serde_json::json!({ "ttl": ttl, "records": records }).to_string();
        let path = format!("/v1/zones/{zone}/records/{name}/{rtype}");
        let (code, resp) = self.http("PUT", &path, Some(&body));
        assert_eq!(code, 200, "PUT {path} {body}: {resp}");
        let v: serde_json::Value = serde_json::from_str(&resp)
            .unwrap_or_else(|e| panic!("PUT {path}: answer is not JSON ({e}): {resp}"));
        v["serial"]
            .as_u64()
            .unwrap_or_else(|| panic!("PUT {path}: no serial in {resp}"))
    }

    /// `DELETE /v1/zones/{zone}/records/{name}/{rtype}`; panics unless 200.
    pub fn api_delete(&self, zone: &str, name: &str, rtype: &str) {
        let path = format!("/v1/zones/{zone}/records/{name}/{rtype}");
        let (code, resp) = self.http("DELETE", &path, None);
        assert_eq!(code, 200, "DELETE {path}: {resp}");
    }

    /// `GET /v1/stats`.
    pub fn stats(&self) -> Stats {
        let (code, resp) = self.http("GET", "/v1/stats", None);
        assert_eq!(code, 200, "GET /v1/stats: {resp}");
        Stats::parse(&resp)
    }
}

/// The XDP counters from `GET /v1/stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// `xdp.answered`, `xdp.passed` and `xdp.rrl`, by label (see [`Stat::label`]).
    pub counters: BTreeMap<(String, String), u64>,
}

impl Stats {
    /// Parses `{"xdp": {"answered": {"answer": n, ...}, "passed": {"qtype": n, ...},
    /// "rrl": {"limited": n, ...}}}`.
    pub fn parse(json: &str) -> Self {
        let v: serde_json::Value = serde_json::from_str(json)
            .unwrap_or_else(|e| panic!("stats are not JSON ({e}): {json}"));
        let mut counters = BTreeMap::new();
        for metric in ["answered", "passed", "rrl"] {
            let map = v["xdp"][metric]
                .as_object()
                .unwrap_or_else(|| panic!("stats have no xdp.{metric} object: {json}"));
            for (label, n) in map {
                let n = n
                    .as_u64()
                    .unwrap_or_else(|| panic!("xdp.{metric}.{label} is not a count: {json}"));
                counters.insert((metric.to_owned(), label.clone()), n);
            }
        }
        Self { counters }
    }

    /// The counter of `stat` (0 if the daemon did not list it).
    pub fn get(&self, stat: Stat) -> u64 {
        let (metric, label) = stat.label();
        self.counters
            .get(&(metric.to_owned(), label.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    /// How much `stat` grew from `before` to `self`.
    pub fn delta(&self, before: &Stats, stat: Stat) -> u64 {
        self.get(stat).saturating_sub(before.get(stat))
    }
}

// ---------------------------------------------------------------------------------------------
// dig / kdig

/// One resource record as dig prints it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub ttl: u32,
    pub class: String,
    pub rtype: String,
    pub rdata: String,
}

/// A parsed dig or kdig answer.
#[derive(Clone, Debug, Default)]
pub struct DnsAnswer {
    /// NOERROR, NXDOMAIN, REFUSED, ...
    pub status: String,
    /// Header flags, lowercase (`qr`, `aa`, `rd`, ...).
    pub flags: Vec<String>,
    pub answer: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
    /// The whole output, for failure messages.
    pub raw: String,
}

impl DnsAnswer {
    /// Parses dig's or kdig's default output.
    pub fn parse(out: &str) -> Option<Self> {
        let mut a = DnsAnswer {
            raw: out.to_owned(),
            ..Default::default()
        };
        let mut section: Option<&str> = None;
        for line in out.lines() {
            let line = line.trim();
            let lower = line.to_ascii_lowercase();
            if let Some(i) = lower.find("status: ") {
                let rest = &line[i + "status: ".len()..];
                a.status = rest
                    .split([',', ';', ' '])
                    .next()
                    .unwrap_or_default()
                    .to_owned();
            }
            if let Some(rest) = lower.strip_prefix(";; flags:") {
                let flags = rest.split(';').next().unwrap_or_default();
                a.flags = flags.split_whitespace().map(str::to_owned).collect();
            }
            if line.starts_with(";;") && line.ends_with("SECTION:") {
                section = [("ANSWER", "answer"), ("AUTHORITY", "authority")]
                    .into_iter()
                    .chain([("ADDITIONAL", "additional")])
                    .find(|(k, _)| line.contains(k))
                    .map(|(_, v)| v);
                continue;
            }
            if line.is_empty() || line.starts_with(';') {
                if line.is_empty() || line.starts_with(";;") {
                    section = None;
                }
                continue;
            }
            let Some(which) = section else { continue };
            let mut f = line.split_whitespace();
            let (Some(name), Some(ttl), Some(class), Some(rtype)) =
                (f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            let Ok(ttl) = ttl.parse() else { continue };
            let rec = Record {
                name: name.to_owned(),
                ttl,
                class: class.to_owned(),
                rtype: rtype.to_owned(),
                rdata: f.collect::<Vec<_>>().join(" "),
            };
            match which {
                "answer" => a.answer.push(rec),
                "authority" => a.authority.push(rec),
                _ => a.additional.push(rec),
            }
        }
        (!a.status.is_empty()).then_some(a)
    }

    /// The rdata of the answer records of type `rtype`.
    pub fn rdata(&self, rtype: &str) -> Vec<&str> {
        self.answer
            .iter()
            .filter(|r| r.rtype.eq_ignore_ascii_case(rtype))
            .map(|r| r.rdata.as_str())
            .collect()
    }

    pub fn has_flag(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }
}

/// Why a query got no parsed answer.
#[derive(Debug)]
pub struct NoAnswer {
    pub cmdline: String,
    pub elapsed: Duration,
    pub output: Output,
}

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` got no answer after {:?}:\n{}{}",
            self.cmdline, self.elapsed, self.output.stdout, self.output.stderr
        )
    }
}

/// The DNS clients the tests run: ISC's dig and Knot's kdig, which judge a message each in its
/// own way.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Tool {
    Dig,
    Kdig,
}

impl Tool {
    /// `dig +tries=1 +time=2 @SERVER -p PORT NAME TYPE EXTRA...` or
    /// `kdig +retry=0 +timeout=2 @SERVER -p PORT NAME -t TYPE EXTRA...`, run inside `ns`.
    pub fn try_query(
        self,
        ns: &NetNs,
        server: &str,
        port: u16,
        name: &str,
        rtype: &str,
        extra: &[&str],
    ) -> Result<DnsAnswer, NoAnswer> {
        let (program, options, question) = match self {
            Tool::Dig => ("dig", ["+tries=1", "+time=2"], vec![name, rtype]),
            Tool::Kdig => ("kdig", ["+retry=0", "+timeout=2"], vec![name, "-t", rtype]),
        };
        let mut cmd = ns.command(program);
        cmd.args(options);
        query(cmd, server, port, &question, extra)
    }
}

/// Runs `CMD @SERVER -p PORT QUESTION... EXTRA...` and parses what it printed.
fn query(
    mut cmd: Command,
    server: &str,
    port: u16,
    question: &[&str],
    extra: &[&str],
) -> Result<DnsAnswer, NoAnswer> {
    cmd.arg(format!("@{server}"))
        .arg("-p")
        .arg(port.to_string())
        .args(question)
        .args(extra);
    let line = cmdline(&cmd);
    let start = Instant::now();
    let output = run_limited(&mut cmd);
    let elapsed = start.elapsed();
    match DnsAnswer::parse(&output.stdout) {
        Some(a) if output.success() => Ok(a),
        _ => Err(NoAnswer {
            cmdline: line,
            elapsed,
            output,
        }),
    }
}

/// `dig` (see [`Tool::try_query`]); panics when no answer comes.
pub fn dig(ns: &NetNs, server: &str, port: u16, name: &str, rtype: &str) -> DnsAnswer {
    let a = Tool::Dig.try_query(ns, server, port, name, rtype, &[]);
    a.unwrap_or_else(|e| panic!("{e}"))
}

/// `kdig` with `extra` arguments (see [`Tool::try_query`]); panics when no answer comes.
pub fn kdig(
    ns: &NetNs,
    server: &str,
    port: u16,
    name: &str,
    rtype: &str,
    extra: &[&str],
) -> DnsAnswer {
    let a = Tool::Kdig.try_query(ns, server, port, name, rtype, extra);
    a.unwrap_or_else(|e| panic!("{e}"))
}

// ---------------------------------------------------------------------------------------------
// The usual setup

/// Two namespaces joined by a veth pair, optionally with the daemon on the server end (driver
/// mode XDP) and an XDP_PASS program on the client end. Fields drop in order: processes first,
/// then the namespaces, then the temporary directory.
pub struct TestBed {
    pub daemon: Option<Daemon>,
    pub pass: Option<PassGuard>,
    /// The arguments of `edgedns serve` (before `--data-dir`), kept for restarts.
    daemon_args: Vec<String>,
    pub veth: Veth,
    pub client: NetNs,
    pub server: NetNs,
    pub tmp: TempDir,
}

impl TestBed {
    /// Namespaces and veth only.
    pub fn network() -> Self {
        require_root();
        let tmp = TempDir::new();
        let server = NetNs::new("s");
        let client = NetNs::new("c");
        let veth = Veth::new(&server, &client);
        Self {
            daemon: None,
            pass: None,
            daemon_args: Vec::new(),
            veth,
            client,
            server,
            tmp,
        }
    }

    /// The network plus `edgedns serve --iface <server end> --xdp-mode driver --dns-listen
    /// 10.211.0.1:5300 --api-listen 127.0.0.1:8053` in the server namespace and `edgedns xdp-pass` on the client end.
    pub fn with_daemon() -> Self {
        Self::with_daemon_on(&format!("{SERVER_V4}:{DNS_PORT}"), &[])
    }

    /// [`TestBed::with_daemon`] with `--dns-listen LISTEN` (e.g. `[::]:5300`, which serves both
    /// families, the XDP program answering any address on the port) and `extra` arguments.
    pub fn with_daemon_on(listen: &str, extra: &[&str]) -> Self {
        let mut bed = Self::network();
        bed.pass = Some(PassGuard::start(
            &edgedns_bin(),
            &bed.client,
            &bed.veth.client_if,
            bed.tmp.path(),
        ));
        bed.daemon_args = [
            "--iface",
            &bed.veth.server_if,
            "--xdp-mode",
            "driver",
            "--dns-listen",
            listen,
            "--api-listen",
            API_ADDR,
        ]
        .iter()
        .chain(extra)
        .map(|s| (*s).to_owned())
        .collect();
        bed.start_daemon();
        bed
    }

    /// Sets the arguments of `edgedns serve` (before `--data-dir`) that [`TestBed::start_daemon`]
    /// uses: for a bed made with [`TestBed::network`].
    pub fn set_daemon_args(&mut self, args: &[&str]) {
        self.daemon_args = args.iter().map(|s| (*s).to_owned()).collect();
    }

    /// Starts the daemon with the arguments the bed was made with, on the same data directory.
    /// Panics if one is running.
    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "the daemon is already running");
        assert!(
            !self.daemon_args.is_empty(),
            "TestBed::network has no daemon to start: use TestBed::with_daemon"
        );
        let data = self.tmp.path().join("data");
        self.daemon = Some(Daemon::start(
            &edgedns_bin(),
            &self.server,
            &self.daemon_args,
            &data,
        ));
    }

    /// Stops the daemon (SIGTERM, SIGKILL after a grace period) and drops its guard. Returns how
    /// it exited: `None` if it had to be killed. A daemon that already died (say, of a SIGKILL
    /// the test sent) gives its exit status.
    pub fn stop_daemon(&mut self) -> Option<ExitStatus> {
        let mut daemon = self.daemon.take().expect("a running daemon");
        daemon.process.stop()
    }

    /// [`TestBed::stop_daemon`] then [`TestBed::start_daemon`]: the same arguments, data and
    /// pins. Returns how the old one exited.
    pub fn restart_daemon(&mut self) -> Option<ExitStatus> {
        let status = self.stop_daemon();
        self.start_daemon();
        status
    }

    /// Adds an 802.1Q sub-interface with VLAN id `id` on both veth ends, addressed
    /// [`VLAN_SERVER_V4`]/[`VLAN_SERVER_V6`] and [`VLAN_CLIENT_V4`]/[`VLAN_CLIENT_V6`]. VLAN tag
    /// offloads are turned off on the veth ends so that the tag is in the frame data, where the
    /// XDP program on the server's veth (the parent: a VLAN device can't run native XDP) parses
    /// it. The sub-interfaces go with the namespaces.
    pub fn add_vlan(&self, id: u16) -> Vlan {
        self.try_add_vlan(id).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`TestBed::add_vlan`], or `Err` if the kernel has no 802.1Q support
    /// (`CONFIG_VLAN_8021Q`): `ip link add ... type vlan` says "Unknown device type".
    pub fn try_add_vlan(&self, id: u16) -> Result<Vlan, String> {
        let base = unique("vl", 'x');
        let vlan = Vlan {
            server_if: format!("{base}s"),
            client_if: format!("{base}c"),
            id,
        };
        assert!(vlan.server_if.len() <= 15, "interface name too long");
        for (ns, parent, ifname, v4, v6) in [
            (
                &self.server,
                &self.veth.server_if,
                &vlan.server_if,
                VLAN_SERVER_V4,
                VLAN_SERVER_V6,
            ),
            (
                &self.client,
                &self.veth.client_if,
                &vlan.client_if,
                VLAN_CLIENT_V4,
                VLAN_CLIENT_V6,
            ),
        ] {
            run_ok(
                ns.command("ethtool")
                    .args(["-K", parent, "txvlan", "off", "rxvlan", "off"]),
            );
            let id = id.to_string();
            let add = [
                "-n",
                ns.name(),
                "link",
                "add",
                "link",
                parent,
                "name",
                ifname,
                "type",
                "vlan",
                "id",
                &id,
            ];
            let out = run_limited(Command::new("ip").args(add));
            if !out.success() {
                return Err(format!("ip {}: {}", add.join(" "), out.stderr.trim()));
            }
            configure_if(ns, ifname, v4, v6);
        }
        Ok(vlan)
    }

    pub fn daemon(&self) -> &Daemon {
        self.daemon.as_ref().expect("TestBed::with_daemon")
    }

    /// dig from the client namespace to the daemon's IPv4 address.
    pub fn dig(&self, name: &str, rtype: &str) -> DnsAnswer {
        dig(&self.client, SERVER_V4, DNS_PORT, name, rtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIG: &str = "
; <<>> DiG 9.18.41-1~deb12u1-Debian <<>> +tries=1 @10.211.0.1 -p 5300 demo.t.example.net A
;; global options: +cmd
;; Got answer:
;; ->>HEADER<<- opcode: QUERY, status: NOERROR, id: 4242
;; flags: qr aa rd; QUERY: 1, ANSWER: 2, AUTHORITY: 0, ADDITIONAL: 1
;; WARNING: recursion requested but not available

;; OPT PSEUDOSECTION:
; EDNS: version: 0, flags:; udp: 1232
;; QUESTION SECTION:
;demo.t.example.net.\t\tIN\tA

;; ANSWER SECTION:
demo.t.example.net.\t60\tIN\tA\t192.0.2.1
demo.t.example.net.\t60\tIN\tA\t192.0.2.2

;; Query time: 0 msec
;; SERVER: 10.211.0.1#5300(10.211.0.1) (UDP)
";

    const KDIG: &str = "
;; ->>HEADER<<- opcode: QUERY; status: NXDOMAIN; id: 9
;; Flags: qr aa rd; QUERY: 1; ANSWER: 0; AUTHORITY: 1; ADDITIONAL: 0

;; QUESTION SECTION:
;; gone.t.example.net.\t\tIN\tA

;; AUTHORITY SECTION:
t.example.net.\t60\tIN\tSOA\tns.t.example.net. hostmaster.t.example.net. 3 3600 600 86400 60

;; Received 80 B
";

    #[test]
    fn parses_dig() {
        let a = DnsAnswer::parse(&DIG.replace("\\t", "\t")).expect("parsed");
        assert_eq!(a.status, "NOERROR");
        assert_eq!(a.flags, ["qr", "aa", "rd"]);
        assert_eq!(a.rdata("A"), ["192.0.2.1", "192.0.2.2"]);
        assert_eq!(a.answer[0].ttl, 60);
        assert!(a.authority.is_empty() && a.additional.is_empty());
    }

    #[test]
    fn parses_kdig() {
        let a = DnsAnswer::parse(&KDIG.replace("\\t", "\t")).expect("parsed");
        assert_eq!(a.status, "NXDOMAIN");
        assert!(a.has_flag("aa"));
        assert!(a.answer.is_empty());
        assert_eq!(a.authority.len(), 1);
        assert_eq!(a.authority[0].rtype, "SOA");
    }

    #[test]
    fn timeout_output_is_no_answer() {
        let out = ";; communications error to 10.211.0.1#5300: timed out\n;; no servers could be reached\n";
        assert!(DnsAnswer::parse(out).is_none());
    }

    #[test]
    fn stats() {
        let s = Stats::parse(
            r#"{"xdp": {"answered": {"answer": 3, "nxdomain": 1, "nodata": 0},
                        "passed": {"qtype": 2, "no_zone": 5}, "rrl": {"slipped": 4}}}"#,
        );
        assert_eq!(s.get(Stat::AnsweredAnswer), 3);
        assert_eq!(s.get(Stat::PassNoZone), 5);
        assert_eq!(s.get(Stat::PassTc), 0);
        assert_eq!(s.get(Stat::RrlSlipped), 4);
        let mut after = s.clone();
        after.counters.insert(("passed".into(), "qtype".into()), 7);
        assert_eq!(after.delta(&s, Stat::PassQtype), 5);
    }

    #[test]
    fn unique_names_fit_interfaces() {
        let id = unique("ve", 'x');
        assert!(format!("{id}s").len() <= 15, "{id}");
    }
}
