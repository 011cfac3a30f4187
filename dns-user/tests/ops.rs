//! The `edgedns` binary run as an operator runs it: `serve --config FILE` with JSON logs on
//! stderr, under a real sd_notify socket, reloaded with SIGHUP and stopped with SIGTERM. No
//! root and no XDP (`xdp-mode = "off"`): the fallback answers, on ports the kernel picks, which
//! the test learns from the daemon's "ready" log line.

use std::{
    io::{BufRead as _, BufReader},
    net::SocketAddr,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use dns_user::cli::{ApiArgs, Client};
use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use hyper::{Method, StatusCode};
use serde_json::Value;
use tempfile::TempDir;
use tokio::{net::UdpSocket, time::timeout};

const BIN: &str = env!("CARGO_BIN_EXE_edgedns");
const WAIT: Duration = Duration::from_secs(10);

/// `edgedns serve` in a child process, its stderr read line by line as JSON.
struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every log line so far, parsed.
    log: Vec<Value>,
}

impl Daemon {
    fn start(dir: &Path, args: &[&str], notify: Option<&Path>) -> Self {
        Self::start_env(dir, args, notify, &[])
    }

    fn start_env(dir: &Path, args: &[&str], notify: Option<&Path>, env: &[(&str, &str)]) -> Self {
        let mut cmd = Command::new(BIN);
        cmd.arg("serve")
            .args(args)
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Settings come from the arguments and `env` alone, not from this process's EDGEDNS_*.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("EDGEDNS_") {
                cmd.env_remove(key);
            }
        }
        cmd.envs(env.iter().copied());
        if let Some(sock) = notify {
            cmd.env("NOTIFY_SOCKET", sock);
        }
        let mut child = cmd.spawn().expect("spawn edgedns");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines,
            log: Vec::new(),
        }
    }

    /// The first log line from now on for which `pred` holds. Every line must be one JSON
    /// object with the stable fields.
    fn wait_log(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_log_within(what, WAIT, pred)
    }

    /// [`Daemon::wait_log`], waiting up to `wait`.
    fn wait_log_within(
        &mut self,
        what: &str,
        wait: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => panic!(
                    "no log line {what} in time; exit: {:?}; log so far: {:#?}",
                    self.child.try_wait(),
                    self.log
                ),
            };
            let v: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line:?}"));
            for field in ["timestamp", "level", "target", "message"] {
                assert!(v.get(field).is_some(), "no {field} in {line}");
            }
            assert!(!line.contains('\x1b'), "escape code in {line:?}");
            self.log.push(v.clone());
            if pred(&v) {
                return v;
            }
        }
    }

    /// The addresses from the "ready" line.
    fn wait_ready(&mut self) -> (SocketAddr, SocketAddr) {
        let ready = self.wait_log("ready", |v| v["message"] == "ready");
        let addr = |k: &str| {
            ready[k]
                .as_str()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("no {k} address in {ready}"))
        };
        (addr("dns"), addr("api"))
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) with our own child's pid, which has not been reaped yet.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill {sig}");
    }

    /// SIGTERM; the daemon must exit 0 in time.
    fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                assert!(status.success(), "exit status {status}");
                return;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn query(name: &str, qtype: RecordType, id: u16) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(id)
        .add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    m.to_vec().expect("encode")
}

/// One UDP query; `None` if no answer came within 3 seconds.
async fn ask(sock: &UdpSocket, server: SocketAddr, name: &str, id: u16) -> Option<Message> {
    sock.send_to(&query(name, RecordType::A, id), server)
        .await
        .expect("send");
    let mut buf = vec![0u8; 4096];
    loop {
        let (len, _) = timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
            .await
            .ok()?
            .expect("recv");
        let m = Message::from_vec(&buf[..len]).expect("answer parses");
        // A late answer to an earlier query that timed out is not this one's.
        if m.id() == id {
            return Some(m);
        }
    }
}

fn addresses(m: &Message) -> Vec<String> {
    assert_eq!(m.response_code(), ResponseCode::NoError, "{m}");
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.to_string()),
            _ => None,
        })
        .collect()
}

fn client(api: SocketAddr, token_file: Option<PathBuf>) -> Client {
    Client::new(&ApiArgs { api, token_file }).expect("client")
}

async fn status(c: &Client) -> StatusCode {
    timeout(WAIT, c.send(Method::GET, "/v1/zones", None))
        .await
        .expect("API answers in time")
        .expect("API request")
        .status
}

fn notify_socket(dir: &TempDir) -> (UnixDatagram, PathBuf) {
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    sock.set_read_timeout(Some(WAIT)).expect("timeout");
    (sock, path)
}

fn recv_notify(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let len = sock.recv(&mut buf).expect("a notify message in time");
    String::from_utf8(buf[..len].to_vec()).expect("utf-8")
}

/// The file sets the zone, the log level and JSON logs; a flag overrides the log level and an
/// EDGEDNS_* variable the zone. The
/// daemon tells systemd its progress (STATUS= lines), then READY=1 once it answers, feeds the
/// watchdog systemd asks for, and says STOPPING=1 at SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_json_logs_and_sd_notify() {
    let dir = TempDir::new().expect("tempdir");
    let config = dir.path().join("edgedns.toml");
    write(
        &config,
        &format!(
            "# as an operator writes it\n\
             data-dir = \"{}\"\n\
             xdp-mode = \"off\"\n\
             dns-listen = \"127.0.0.1:0\"\n\
             api-listen = \"127.0.0.1:0\"\n\
             log-format = \"json\"\n\
             log-level = \"warn\"\n\
             zone = \"ops.example.\"\n",
            dir.path().join("data").display()
        ),
    );
    let (notify, notify_path) = notify_socket(&dir);
    // With the file's level (warn) the info-level "ready" line would not be logged.
    let mut d = Daemon::start_env(
        dir.path(),
        &[
            "--config",
            config.to_str().expect("utf-8"),
            "--log-level",
            "info",
        ],
        Some(&notify_path),
        &[
            // 100 ms: a ping every 50 ms.
            ("WATCHDOG_USEC", "100000"),
            // The environment wins over the file; a switch takes 1 for yes.
            ("EDGEDNS_ZONE", "env.example."),
            ("EDGEDNS_NO_PIN", "1"),
        ],
    );
    let (dns, api) = d.wait_ready();
    let created = d
        .log
        .iter()
        .find(|v| v["message"] == "zone created")
        .expect("the zone from the environment is created");
    assert_eq!(created["zone"], "env.example.");
    assert_eq!(created["level"], "INFO");

    let mut messages = Vec::new();
    while !messages.iter().any(|m: &String| m.starts_with("READY=1")) {
        messages.push(recv_notify(&notify));
    }
    let ready_at = messages.len() - 1;
    assert!(ready_at >= 3, "STATUS lines before READY=1: {messages:?}");
    assert!(
        messages[..ready_at]
            .iter()
            .all(|m| m.starts_with("STATUS=")),
        "{messages:?}"
    );
    assert_eq!(messages[0], "STATUS=loading the store", "{messages:?}");

    // READY=1 means answering.
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let m = ask(&sock, dns, "env.example.", 1).await.expect("an answer");
    assert_eq!(m.response_code(), ResponseCode::NoError, "{m}");
    assert_eq!(status(&client(api, None)).await, StatusCode::OK);
    for _ in 0..2 {
        assert_eq!(recv_notify(&notify), "WATCHDOG=1");
    }

    d.stop();
    let mut last = String::new();
    for _ in 0..100 {
        last = recv_notify(&notify);
        if last != "WATCHDOG=1" {
            break;
        }
    }
    assert_eq!(last, "STOPPING=1");
}

/// systemd takes contrib/systemd/edgedns.service without a complaint (when systemd-analyze is
/// installed), and the unit keeps what operating edgedns relies on.
#[test]
fn systemd_unit_verifies() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd/edgedns.service");
    let unit = std::fs::read_to_string(&path).expect("the unit file");
    for line in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "WatchdogSec=30s",
    ] {
        assert!(unit.lines().any(|l| l == line), "no {line:?} in the unit");
    }
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    assert!(
        exec.contains(" serve ") && exec.ends_with("--keep-xdp"),
        "{exec}"
    );
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(analyze) = analyze else {
        eprintln!("systemd-analyze is not installed: skipping `systemd-analyze verify`");
        return;
    };
    // verify wants ExecStart's binary to exist: point it at the one built.
    let bin = exec.split_whitespace().next().expect("binary");
    let dir = TempDir::new().expect("tempdir");
    let copy = dir.path().join("edgedns.service");
    write(&copy, &unit.replace(bin, BIN));
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Warnings (an unknown key, a bad value) exit 0 but name the file: none may.
    let about_unit: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("edgedns.service"))
        .collect();
    assert!(
        out.status.success() && about_unit.is_empty(),
        "systemd-analyze verify: {}\n{text}",
        out.status
    );
}

/// SIGHUP re-reads the token file and the zone files while queries keep coming: the old token
/// then gets 401 and the new one 200, the new zone data is served, a changed setting that needs
/// a restart is logged as such, and not one query goes unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_token_and_zone_file_without_losing_a_query() {
    let dir = TempDir::new().expect("tempdir");
    let p = |name: &str| dir.path().join(name);
    write(&p("token"), "old-token-0123456789\n");
    write(&p("old.tok"), "old-token-0123456789\n");
    write(&p("new.tok"), "new-token-9876543210\n");
    let zone = |serial: u32, addr: &str| {
        format!(
            "$ORIGIN hup.example.\n$TTL 60\n\
             @ SOA ns1 hostmaster {serial} 3600 600 86400 30\n\
             @ NS ns1\nns1 A 192.0.2.53\nwww A {addr}\n"
        )
    };
    write(&p("hup.zone"), &zone(1, "192.0.2.1"));
    let config = |payload: u16, level: &str| {
        format!(
            "data-dir = \"{}\"\nxdp-mode = \"off\"\ndns-listen = \"127.0.0.1:0\"\n\
             api-listen = \"127.0.0.1:0\"\nlog-format = \"json\"\nlog-level = \"{level}\"\n\
             api-token-file = \"{}\"\nzone-file = [\"{}\"]\nudp-payload = {payload}\n",
            p("data").display(),
            p("token").display(),
            p("hup.zone").display()
        )
    };
    write(&p("edgedns.toml"), &config(1232, "info"));
    let mut d = Daemon::start(
        dir.path(),
        &["--config", p("edgedns.toml").to_str().expect("utf-8")],
        None,
    );
    let (dns, api) = d.wait_ready();
    let (old, new) = (
        client(api, Some(p("old.tok"))),
        client(api, Some(p("new.tok"))),
    );
    assert_eq!(status(&old).await, StatusCode::OK);
    assert_eq!(status(&new).await, StatusCode::UNAUTHORIZED);

    // Queries, one after another, for as long as the reload takes (bounded).
    let stop = tokio_util::sync::CancellationToken::new();
    let queries = tokio::spawn({
        let stop = stop.clone();
        async move {
            let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
            let (mut sent, mut lost, mut seen) = (0u32, 0u32, Vec::new());
            while !stop.is_cancelled() && sent < 20_000 {
                sent += 1;
                match ask(&sock, dns, "www.hup.example.", sent as u16).await {
                    Some(m) => {
                        let a = addresses(&m);
                        if !seen.contains(&a) {
                            seen.push(a);
                        }
                    }
                    None => lost += 1,
                }
            }
            (sent, lost, seen)
        }
    });

    write(&p("token"), "new-token-9876543210\n");
    write(&p("hup.zone"), &zone(2, "192.0.2.2"));
    write(&p("edgedns.toml"), &config(1400, "info"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    d.signal(libc::SIGHUP);
    let restart = d.wait_log("the restart-only warning", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("only at a restart"))
    });
    assert_eq!(restart["key"], "udp-payload");
    assert_eq!(restart["level"], "WARN");
    d.wait_log("the zone file reloaded", |v| {
        v["message"] == "reload: zone file loaded" && v["serial"] == 2
    });
    assert_eq!(status(&old).await, StatusCode::UNAUTHORIZED);
    assert_eq!(status(&new).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.cancel();
    let (sent, lost, seen) = timeout(WAIT * 3, queries)
        .await
        .expect("query loop ends")
        .expect("query task");
    assert!(sent > 10, "only {sent} queries ran across the reload");
    assert_eq!(lost, 0, "{lost} of {sent} queries unanswered");
    assert_eq!(
        seen,
        vec![vec!["192.0.2.1".to_string()], vec!["192.0.2.2".to_string()]],
        "old data, then new"
    );

    // The log level follows the file: at warn, a reload's info lines go (the "SIGHUP" line of
    // the reload that sets warn is logged before the level changes); back at info, they return.
    write(&p("edgedns.toml"), &config(1400, "warn"));
    write(&p("hup.zone"), &zone(3, "192.0.2.3"));
    d.signal(libc::SIGHUP);
    d.wait_log("the reload to warn", |v| {
        v["message"] == "SIGHUP: reloading the configuration"
    });
    let mark = d.log.len();
    // That reload is applied once its zone data is served (then a moment for its last line).
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut served = Vec::new();
    for id in 0..100 {
        if let Some(m) = ask(&sock, dns, "www.hup.example.", 50_000 + id).await {
            served = addresses(&m);
            if served == ["192.0.2.3"] {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(served, ["192.0.2.3"], "the reload to warn was not applied");
    tokio::time::sleep(Duration::from_millis(200)).await;
    write(&p("edgedns.toml"), &config(1400, "info"));
    // Serial 4 tells this reload's line from the previous one's.
    write(&p("hup.zone"), &zone(4, "192.0.2.4"));
    d.signal(libc::SIGHUP);
    d.wait_log("the zone file reloaded at info", |v| {
        v["message"] == "reload: zone file loaded" && v["serial"] == 4
    });
    let infos: Vec<&str> = d.log[mark..]
        .iter()
        .filter(|v| v["level"] == "INFO")
        .filter_map(|v| v["message"].as_str())
        .collect();
    assert_eq!(
        infos,
        [
            "reload: API token applied",
            "reload: TSIG keys applied",
            "reload: access lists unchanged",
            "change applied",
            "reload: zone file loaded"
        ],
        "at warn, the second reload's info lines and the third's SIGHUP line are not logged"
    );

    // A token file that went missing is a failed reload: the running token stays.
    std::fs::remove_file(p("token")).expect("rm");
    d.signal(libc::SIGHUP);
    d.wait_log("the failed reload", |v| {
        v["level"] == "WARN"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("reload: ") && m.contains("token"))
    });
    assert_eq!(status(&new).await, StatusCode::OK);
    d.stop();
}

/// `/metrics` as `(name, labels, value)` samples.
fn samples(text: &str) -> Vec<(String, String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').expect("sample line");
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let value = value.parse().unwrap_or_else(|e| panic!("{l}: {e}"));
            (name.to_owned(), labels.to_owned(), value)
        })
        .collect()
}

/// The metric names a Grafana dashboard's queries (panels and variables) use.
fn dashboard_metrics() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/grafana/edgedns.json");
    let text = std::fs::read_to_string(&path).expect("the dashboard");
    let dash: Value = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        for t in panel["targets"].as_array().expect("targets") {
            exprs.push(t["expr"].as_str().expect("expr").to_owned());
        }
    }
    for v in dash["templating"]["list"].as_array().expect("variables") {
        if let Some(q) = v["definition"].as_str() {
            exprs.push(q.to_owned());
        }
    }
    let mut names = Vec::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("edgedns_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
    }
    names.sort();
    names.dedup();
    names
}

/// The fallback's responses are counted by transport, RCODE and query type under the labels the
/// XDP path uses too, and every metric the Grafana dashboard queries is in `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_label_both_paths_alike_and_cover_the_dashboard() {
    let dir = TempDir::new().expect("tempdir");
    let data = dir.path().join("data");
    let mut d = Daemon::start(
        dir.path(),
        &[
            "--xdp-mode",
            "off",
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--dns-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ],
        None,
    );
    let (dns, api) = d.wait_ready();
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    for (id, name) in [
        (1, "demo.t.example.net."),
        (2, "t.example.net."),
        (3, "nope.t.example.net."),
    ] {
        ask(&sock, dns, name, id).await.expect("an answer");
    }
    // A request before: the request counters have a series once one was answered.
    assert_eq!(status(&client(api, None)).await, StatusCode::OK);
    let r = timeout(WAIT, client(api, None).send(Method::GET, "/metrics", None))
        .await
        .expect("in time")
        .expect("/metrics");
    assert_eq!(r.status, StatusCode::OK);
    let text = String::from_utf8(r.body.to_vec()).expect("utf-8");
    let all = samples(&text);
    let value = |name: &str, labels: &str| {
        all.iter()
            .find(|(n, l, _)| n == name && l == labels)
            .map(|s| s.2)
            .unwrap_or_else(|| panic!("no {name}{{{labels}}} in\n{text}"))
    };
    let responses = |path: &str, transport: &str, rcode: &str, qtype: &str| {
        value(
            "edgedns_responses_total",
            &format!(
                "path=\"{path}\",transport=\"{transport}\",rcode=\"{rcode}\",qtype=\"{qtype}\""
            ),
        )
    };
    assert_eq!(responses("fallback", "udp", "NOERROR", "A"), 2.0);
    assert_eq!(responses("fallback", "udp", "NXDOMAIN", "A"), 1.0);
    assert_eq!(responses("fallback", "udp", "NOERROR", "AAAA"), 0.0);
    assert_eq!(responses("fallback", "tcp", "NOERROR", "A"), 0.0);
    assert_eq!(responses("fallback", "udp", "NOERROR", "other"), 0.0);
    let fallback_total: f64 = all
        .iter()
        .filter(|(n, l, _)| n == "edgedns_responses_total" && l.starts_with("path=\"fallback\""))
        .map(|s| s.2)
        .sum();
    assert_eq!(fallback_total, 3.0);
    // No fast path: its series are there, at 0, with the same label names.
    assert_eq!(responses("xdp", "udp", "NOERROR", "A"), 0.0);
    assert_eq!(responses("xdp", "udp", "NXDOMAIN", "AAAA"), 0.0);
    assert_eq!(value("edgedns_fast_path_enabled", ""), 0.0);
    assert_eq!(
        value("edgedns_xdp_passed_total", "reason=\"disabled\""),
        0.0
    );

    let names = dashboard_metrics();
    assert!(names.len() >= 10, "{names:?}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !all.iter().any(|(s, _, _)| s == *n))
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries {missing:?}, not in /metrics"
    );

    // The CLI takes the API as a URL too.
    let out = Command::new(BIN)
        .args(["stats", "--api", &format!("http://{api}/")])
        .env_remove("EDGEDNS_TOKEN_FILE")
        .output()
        .expect("edgedns stats");
    assert!(
        out.status.success(),
        "edgedns stats --api http://{api}/: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    d.stop();
}

/// `completions` and `man` come from the same definitions as the parser: every subcommand and
/// serve's flags are in them.
#[test]
fn completions_and_man_page_cover_the_commands() {
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).output().expect("run edgedns");
        assert!(
            out.status.success(),
            "edgedns {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completions", shell]);
        for word in [
            "serve",
            "zone",
            "record",
            "config",
            "dns-listen",
            "log-format",
        ] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
    let man = run(&["man"]);
    assert!(
        man.contains(".TH edgedns"),
        "{}",
        &man[..man.len().min(200)]
    );
    for word in ["serve", "completions", "config"] {
        assert!(man.contains(word), "the man page lacks {word}");
    }
    // `--dir` writes a page per subcommand, each with its own flags.
    let pages = TempDir::new().expect("tempdir");
    let out = Command::new(BIN)
        .arg("man")
        .arg("--dir")
        .arg(pages.path())
        .output()
        .expect("run edgedns");
    assert!(out.status.success(), "{out:?}");
    let serve = std::fs::read_to_string(pages.path().join("edgedns-serve.1")).expect("serve page");
    assert!(
        serve.contains("dns\\-listen"),
        "the serve page lacks its flags"
    );
    assert!(pages.path().join("edgedns-zone-import.1").exists());
    let bad = Command::new(BIN)
        .args(["completions", "tcsh"])
        .output()
        .expect("run edgedns");
    assert!(!bad.status.success(), "an unknown shell is an error");
}

/// `config example` prints a file `config check` takes, with every serve flag in it; a file with
/// an unknown key fails the check with the key and the line; a bad value names its key.
#[test]
fn config_example_passes_config_check_and_errors_name_key_and_line() {
    let dir = TempDir::new().expect("tempdir");
    let run = |args: &[&std::ffi::OsStr]| {
        Command::new(BIN)
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .expect("run edgedns")
    };
    let out = run(&["config".as_ref(), "example".as_ref()]);
    assert!(out.status.success());
    let example = String::from_utf8(out.stdout).expect("utf-8");
    let help = run(&["serve".as_ref(), "--help".as_ref()]);
    let help = String::from_utf8(help.stdout).expect("utf-8");
    // Every long flag in `serve --help` is a key of the example (set, or commented out).
    for flag in help.split_whitespace().filter_map(|w| w.strip_prefix("--")) {
        let key = flag.trim_end_matches([',', '.', ')', ';', ':']);
        if ["help", "config"].contains(&key) || key.is_empty() {
            continue;
        }
        assert!(
            example
                .lines()
                .any(|l| l.starts_with(&format!("{key} = "))
                    || l.starts_with(&format!("# {key} = "))),
            "--{key} is not in `config example`"
        );
    }
    let file = dir.path().join("example.toml");
    write(&file, &example);
    let out = run(&["config".as_ref(), "check".as_ref(), file.as_os_str()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    write(
        &file,
        &format!("{example}\n# a typo\ndns-lsiten = \"127.0.0.1:53\"\n"),
    );
    let line = example.lines().count() + 3;
    let out = run(&["config".as_ref(), "check".as_ref(), file.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("example.toml:{line}: unknown key `dns-lsiten`")),
        "{err}"
    );

    // The zone files it names are checked too, with their own file and line.
    let zone = dir.path().join("bad.zone");
    write(
        &zone,
        "$ORIGIN bad.example.\n@ 60 SOA ns1 hostmaster 1 3600 600 86400 30\nwww 60 A 300.1.1.1\n",
    );
    write(&file, &format!("zone-file = [\"{}\"]\n", zone.display()));
    let out = run(&["config".as_ref(), "check".as_ref(), file.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("bad.zone:3:"), "{err}");

    write(&file, "udp-payload = \"lots\"\n");
    let out = run(&["config".as_ref(), "check".as_ref(), file.as_os_str()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("example.toml:1: `udp-payload`: "), "{err}");
}

/// Text logs to a pipe (journald's case) carry no colour escape codes, one line per event.
#[test]
fn text_logs_to_a_pipe_have_no_escape_codes() {
    let dir = TempDir::new().expect("tempdir");
    let data = dir.path().join("data");
    let d = Daemon::start(
        dir.path(),
        &[
            "--xdp-mode",
            "off",
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--dns-listen",
            "127.0.0.1:0",
            "--api-listen",
            "127.0.0.1:0",
        ],
        None,
    );
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = d
            .lines
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no ready line in time: {seen:#?}"));
        assert!(!line.contains('\x1b'), "escape code in {line:?}");
        // `<timestamp>  INFO <target>: <message> <fields>`
        let mut words = line.split_whitespace();
        assert!(words.next().is_some_and(|t| t.ends_with('Z')), "{line}");
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"].contains(&words.next().unwrap_or("")),
            "{line}"
        );
        let ready = line.contains("dns_user::daemon: ready ");
        seen.push(line);
        if ready {
            break;
        }
    }
    d.stop();
}

/// SIGHUP re-reads `--tsig-keys`: a request signed with the new key is answered (signed), one
/// signed with a key the file no longer holds gets NOTAUTH (BADKEY). A key file with a mistake
/// keeps the keys in force.
#[tokio::test]
async fn sighup_reloads_tsig_keys() {
    use dns_user::tsig::{sign_request, Algorithm, Key};

    let dir = TempDir::new().expect("tempdir");
    let p = |name: &str| dir.path().join(name);
    let secret_a = "YWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWE=";
    let secret_b = "YmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmJiYmI=";
    let keyfile = |name: &str, secret: &str| {
        format!("key \"{name}\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n")
    };
    write(&p("keys.conf"), &keyfile("key-a", secret_a));
    write(
        &p("edgedns.toml"),
        &format!(
            "data-dir = \"{}\"\nxdp-mode = \"off\"\ndns-listen = \"127.0.0.1:0\"\n\
             api-listen = \"127.0.0.1:0\"\nlog-format = \"json\"\ntsig-keys = \"{}\"\n",
            p("data").display(),
            p("keys.conf").display()
        ),
    );
    let mut d = Daemon::start(
        dir.path(),
        &["--config", p("edgedns.toml").to_str().expect("utf-8")],
        None,
    );
    let (dns, _) = d.wait_ready();
    let key = |name: &str, secret: &str| {
        let secret = data_encoding::BASE64
            .decode(secret.as_bytes())
            .expect("base64");
        Key::new(name, Algorithm::HmacSha256, secret).expect("key")
    };
    let (a, b) = (key("key-a", secret_a), key("key-b", secret_b));
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let signed_rcode = |k: Key, id: u16| {
        let sock = &sock;
        async move {
            let mut q = query("demo.t.example.net.", RecordType::A, id);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_secs();
            sign_request(&mut q, &k, now, 300);
            sock.send_to(&q, dns).await.expect("send");
            let mut buf = vec![0u8; 4096];
            let (len, _) = timeout(WAIT, sock.recv_from(&mut buf))
                .await
                .expect("an answer in time")
                .expect("recv");
            Message::from_vec(&buf[..len])
                .expect("answer parses")
                .response_code()
        }
    };
    assert_eq!(signed_rcode(a.clone(), 1).await, ResponseCode::NoError);
    assert_eq!(signed_rcode(b.clone(), 2).await, ResponseCode::NotAuth);

    write(&p("keys.conf"), &keyfile("key-b", secret_b));
    d.signal(libc::SIGHUP);
    d.wait_log("the keys applied", |v| {
        v["message"] == "reload: TSIG keys applied"
    });
    assert_eq!(signed_rcode(b.clone(), 3).await, ResponseCode::NoError);
    assert_eq!(signed_rcode(a.clone(), 4).await, ResponseCode::NotAuth);

    // A broken file: the reload fails and key-b stays.
    write(
        &p("keys.conf"),
        "key \"broken\" { algorithm hmac-sha256; };\n",
    );
    d.signal(libc::SIGHUP);
    d.wait_log("the failed reload", |v| {
        v["level"] == "WARN"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("reload:"))
    });
    assert_eq!(signed_rcode(b, 5).await, ResponseCode::NoError);
    d.stop();
}

/// The `progress` lines of `stage` in `log`, checked: counts that only grow, a rate on every
/// line, and a last line marked finished. Returns them.
fn progress_lines<'a>(log: &'a [Value], stage: &str) -> Vec<&'a Value> {
    let lines: Vec<&Value> = log
        .iter()
        .filter(|v| v["message"] == "progress" && v["stage"] == stage)
        .collect();
    let (last, _) = lines
        .split_last()
        .unwrap_or_else(|| panic!("no progress line for {stage:?}"));
    let mut done = 0;
    for v in &lines {
        assert_eq!(v["level"], "INFO", "{v}");
        let d = v["done"]
            .as_u64()
            .unwrap_or_else(|| panic!("no done in {v}"));
        assert!(d >= done, "done went back: {lines:#?}");
        done = d;
        assert!(v["rate"].as_u64().is_some(), "no rate in {v}");
    }
    assert_eq!(last["finished"], true, "{lines:#?}");
    assert_eq!(last["done"], last["total"], "{last}");
    lines
}

/// Start-up with a 200,000-record zone file, then again from the store it filled: reading the
/// file and loading the store log `progress` lines while they run (done below the total, with
/// the time left) and when they end, and tell systemd the same as STATUS=. The interval is set
/// to 0 (`EDGEDNS_PROGRESS_INTERVAL_MS`) so that every 4096 records report however fast this
/// machine is; the map fill needs XDP (tests/tests/integration/progress.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_reports_progress_of_long_stages() {
    const RECORDS: u64 = 200_000;
    // Generous: a debug build on a shared 2-CPU machine.
    const START: Duration = Duration::from_secs(120);
    let dir = TempDir::new().expect("tempdir");
    let zone = dir.path().join("big.zone");
    let mut text = String::from(
        "$ORIGIN big.example.\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 60\n@ NS ns\n",
    );
    for i in 0..RECORDS - 1 {
        text.push_str(&format!(
            "h{i} A 10.{}.{}.{}\n",
            i >> 16,
            (i >> 8) & 255,
            i & 255
        ));
    }
    write(&zone, &text);
    let data = dir.path().join("data");
    let args = vec![
        "--xdp-mode",
        "off",
        "--dns-listen",
        "127.0.0.1:0",
        "--api-listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().expect("utf-8"),
        "--log-format",
        "json",
        "--log-level",
        "info",
    ];
    let env = [(dns_user::progress::INTERVAL_ENV, "0")];
    let (notify, notify_path) = notify_socket(&dir);
    // Read systemd's messages as they come: a datagram socket nobody reads fills up, and the
    // daemon's next send would wait for room.
    let statuses = std::thread::spawn(move || {
        let deadline = Instant::now() + START;
        let mut messages: Vec<String> = Vec::new();
        let mut buf = [0u8; 4096];
        while Instant::now() < deadline {
            let Ok(len) = notify.recv(&mut buf) else {
                continue;
            };
            messages.push(String::from_utf8_lossy(&buf[..len]).into_owned());
            if messages.last().is_some_and(|m| m.starts_with("READY=1")) {
                break;
            }
        }
        messages
    });
    let mut with_file = args.clone();
    with_file.extend(["--zone-file", zone.to_str().expect("utf-8")]);
    let mut d = Daemon::start_env(dir.path(), &with_file, Some(&notify_path), &env);
    d.wait_log_within("ready", START, |v| v["message"] == "ready");

    let read = progress_lines(&d.log, "reading zone file");
    // Every line of the file is an entry: $ORIGIN, $TTL, the SOA, NS and A records.
    assert_eq!(read.last().expect("lines")["total"], RECORDS + 3);
    let midway: Vec<_> = read
        .iter()
        .filter(|v| v["finished"] == false && v["done"].as_u64() < v["total"].as_u64())
        .collect();
    assert!(!midway.is_empty(), "no line before the end: {read:#?}");
    assert!(
        midway.iter().all(|v| v["eta_s"].as_u64().is_some()),
        "{midway:#?}"
    );
    let import = progress_lines(&d.log, "importing zone file");
    // The A records and the NS record; the SOA is not counted. One step: its start, its end.
    assert_eq!(import.len(), 2, "{import:#?}");
    assert_eq!(import[0]["done"], 0, "{import:#?}");
    assert_eq!(import[1]["total"], RECORDS);

    // systemd heard the same, before READY=1.
    let messages = statuses.join().expect("notify reader");
    assert!(
        messages.last().is_some_and(|m| m.starts_with("READY=1")),
        "{messages:?}"
    );
    for stage in ["reading zone file", "importing zone file"] {
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with(&format!("STATUS={stage}: ")) && m.ends_with(", done")),
            "no final STATUS for {stage}: {messages:?}"
        );
    }
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("STATUS=reading zone file: ") && m.ends_with(" s left")),
        "no STATUS mid-way: {messages:?}"
    );
    d.stop();

    // Again, from the store alone.
    let mut d = Daemon::start_env(dir.path(), &args, None, &env);
    d.wait_log_within("ready", START, |v| v["message"] == "ready");
    let load = progress_lines(&d.log, "loading the store");
    // The zone's A and NS RRsets, and the two of the demo zone `serve` made (NS, A); the SOA
    // lives with the zone.
    assert_eq!(load.last().expect("lines")["total"], RECORDS + 2);
    assert!(
        load.iter()
            .any(|v| v["finished"] == false && v["done"].as_u64() < v["total"].as_u64()),
        "no line before the end: {load:#?}"
    );
    d.stop();
}
