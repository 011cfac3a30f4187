//! A fleet in process: a real `etcd` (started here on free ports, killed on drop) and two or
//! three daemons (`serve --etcd ... --xdp-mode off`) on port 0, each with its own store. Writes
//! go in through one edge's API and are read back over UDP from every edge; an edge's path to
//! etcd runs through a TCP relay the test can cut, for partitions and lease expiry. Every wait is
//! bounded.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use clap::Parser;
use dns_user::daemon::{self, DaemonError, Listeners};
use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use http_body_util::{BodyExt as _, Full};
use hyper::{body::Bytes, Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::{
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinHandle,
    time::timeout,
};
use tokio_util::sync::CancellationToken;

const ZONE: &str = "fleet.test";
const WAIT: Duration = Duration::from_secs(5);

#[derive(Parser)]
struct Serve {
    #[command(flatten)]
    config: daemon::Config,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// An etcd member of its own, killed (by PID) on drop.
struct Etcd {
    child: Child,
    url: String,
    _dir: TempDir,
}

impl Etcd {
    async fn start() -> Self {
        let dir = TempDir::new().expect("temp dir");
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "m1", "--data-dir"])
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &url,
                "--advertise-client-urls",
                &url,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("m1={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts (Debian's etcd-server)");
        let etcd = Etcd {
            child,
            url,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "etcd did not answer in 30 s");
            if let Ok(Ok(mut c)) = timeout(
                Duration::from_secs(2),
                etcd_client::Client::connect([&etcd.url], None),
            )
            .await
            {
                if let Ok(Ok(_)) = timeout(Duration::from_secs(2), c.get("probe", None)).await {
                    return etcd;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn client(&self) -> etcd_client::Client {
        etcd_client::Client::connect([&self.url], None)
            .await
            .expect("etcd client")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP relay to etcd that the test can cut (connections closed, the port refusing) and
/// restore on the same port: an edge behind it loses etcd and finds it again.
struct Relay {
    addr: SocketAddr,
    upstream: String,
    stop: CancellationToken,
}

impl Relay {
    async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind relay");
        let addr = listener.local_addr().expect("relay addr");
        let upstream = upstream.trim_start_matches("http://").to_string();
        let stop = CancellationToken::new();
        tokio::spawn(relay(listener, upstream.clone(), stop.clone()));
        Relay {
            addr,
            upstream,
            stop,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn cut(&mut self) {
        self.stop.cancel();
    }

    async fn restore(&mut self) {
        self.stop = CancellationToken::new();
        let deadline = Instant::now() + WAIT;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) => assert!(Instant::now() < deadline, "rebinding the relay: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        tokio::spawn(relay(listener, self.upstream.clone(), self.stop.clone()));
    }
}

async fn relay(listener: TcpListener, upstream: String, stop: CancellationToken) {
    loop {
        let (mut down, _) = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a { Ok(a) => a, Err(_) => return },
        };
        let (upstream, stop) = (upstream.clone(), stop.clone());
        tokio::spawn(async move {
            let Ok(mut up) = TcpStream::connect(&upstream).await else {
                return;
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
            }
        });
    }
}

/// A daemon running in this process as an edge.
struct Edge {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), DaemonError>>,
    udp: SocketAddr,
    api: SocketAddr,
}

/// `serve --xdp-mode off --data-dir DATA --etcd URL --edge-id ID --lease-ttl 2 ...`.
async fn start_edge(data: &Path, etcd: &str, id: &str, extra: &[&str]) -> Edge {
    let data = data.to_str().expect("utf-8 temp dir");
    let mut args = vec![
        "serve",
        "--xdp-mode",
        "off",
        "--data-dir",
        data,
        "--etcd",
        etcd,
        "--edge-id",
        id,
        "--lease-ttl",
        "2",
    ];
    // Several edges share this process's loopback.
    if !extra.contains(&"--ack-listen") {
        args.extend(["--ack-listen", "127.0.0.1:0"]);
    }
    // The test's zone unless the test names one.
    if !extra.contains(&"--zone") {
        args.extend(["--zone", ZONE]);
    }
    args.extend(extra);
    let config = Serve::parse_from(args).config;
    let listeners = loopback_listeners().await;
    let udp = listeners.dns_udp[0].local_addr().expect("udp addr");
    let api = listeners.api.local_addr().expect("api addr");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(daemon::run(config, listeners, shutdown.clone()));
    let edge = Edge {
        shutdown,
        task,
        udp,
        api,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if edge.task.is_finished() {
            let result = edge.task.await.expect("edge task");
            panic!("edge {id} stopped while starting: {result:?}");
        }
        if let Ok(r) = edge.call(Method::GET, "/readyz", None, &[]).await {
            if r.0 == StatusCode::OK {
                return edge;
            }
        }
        assert!(Instant::now() < deadline, "edge {id} not ready in 20 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sockets for a daemon on loopback, every port chosen by the kernel.
async fn loopback_listeners() -> Listeners {
    Listeners {
        webhook: None,
        dns_udp: dns_user::fallback::bind_udp("127.0.0.1:0".parse().expect("addr"), 1)
            .expect("bind udp"),
        dns_tcp: vec![TcpListener::bind("127.0.0.1:0").await.expect("bind tcp")],
        api: TcpListener::bind("127.0.0.1:0").await.expect("bind api"),
    }
}

/// Starts a daemon that must fail to start (within 20 s): the error's text, causes included.
async fn start_up_error(config: daemon::Config, what: &str) -> String {
    let listeners = loopback_listeners().await;
    let result = timeout(
        Duration::from_secs(20),
        daemon::run(config, listeners, CancellationToken::new()),
    )
    .await
    .expect("start-up ends in time");
    let e = result.expect_err(what);
    dns_user::error_chain(&e)
}

impl Edge {
    /// One API request: status, `X-Edgedns-Revision`, JSON body (`Null` if none).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, String)],
    ) -> anyhow::Result<(StatusCode, Option<i64>, Value)> {
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        self.send(method, path, body, headers).await
    }

    /// [`Edge::call`] with a body of any type: `(content type, bytes)`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, String)],
    ) -> anyhow::Result<(StatusCode, Option<i64>, Value)> {
        let stream = timeout(WAIT, TcpStream::connect(self.api)).await??;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let conn = tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.api.to_string());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let bytes = match body {
            Some((content_type, bytes)) => {
                req = req.header("content-type", content_type);
                bytes
            }
            None => Vec::new(),
        };
        let resp = timeout(
            Duration::from_secs(20),
            sender.send_request(req.body(Full::new(Bytes::from(bytes)))?),
        )
        .await??;
        let status = resp.status();
        let revision = resp
            .headers()
            .get("x-edgedns-revision")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let body = resp.into_body().collect().await?.to_bytes();
        conn.abort();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Ok((status, revision, json))
    }

    async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> (i64, Value) {
        let (status, rev, json) = self
            .call(method.clone(), path, body, &[])
            .await
            .expect("API request");
        // 200, or 201 for a created zone: what a single host answers; never 202.
        assert!(
            status.is_success() && status != StatusCode::ACCEPTED,
            "{method} {path}: {status} {json}"
        );
        (rev.expect("X-Edgedns-Revision on a write"), json)
    }

    async fn put_a(&self, name: &str, addr: &str) -> (StatusCode, Option<i64>, Value) {
        self.call(
            Method::PUT,
            &format!("/v1/zones/{ZONE}/records/{name}/A"),
            Some(json!({"ttl": 30, "records": [addr]})),
            &[],
        )
        .await
        .expect("PUT")
    }

    /// [`Edge::put_a`], which must answer 200.
    async fn put_a_ok(&self, name: &str, addr: &str) {
        let (status, _, body) = self.put_a(name, addr).await;
        assert_eq!(status, StatusCode::OK, "PUT {name}: {body}");
    }

    /// Cancels the token; the daemon must return `Ok` in time.
    async fn stop(self) {
        self.shutdown.cancel();
        timeout(Duration::from_secs(10), self.task)
            .await
            .expect("the edge stops in time")
            .expect("edge task")
            .expect("the edge ran without error");
    }
}

async fn ask(server: SocketAddr, name: &str) -> Message {
    let mut m = Message::new();
    m.set_id(0x5eed).add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::A,
    ));
    exchange(server, &m).await
}

/// Sends `m` over UDP and returns the answer.
async fn exchange(server: SocketAddr, m: &Message) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sock.send_to(&m.to_vec().expect("encode"), server)
        .await
        .expect("send");
    let mut buf = vec![0u8; 4096];
    let (len, _) = timeout(WAIT, sock.recv_from(&mut buf))
        .await
        .expect("a UDP answer in time")
        .expect("recv");
    Message::from_vec(&buf[..len]).expect("answer parses")
}

/// The A addresses answered, or the RCODE if not NOERROR.
async fn answer(edge: &Edge, name: &str) -> Result<Vec<String>, ResponseCode> {
    let m = ask(edge.udp, &format!("{name}.{ZONE}.")).await;
    if m.response_code() != ResponseCode::NoError {
        return Err(m.response_code());
    }
    Ok(m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.to_string()),
            _ => None,
        })
        .collect())
}

/// Polls `f` every 100 ms until it holds, for at most `limit`.
async fn eventually<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !f().await {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn dirs(n: usize) -> (TempDir, Vec<PathBuf>) {
    let dir = TempDir::new().expect("temp dir");
    let paths = (0..n)
        .map(|i| dir.path().join(format!("edge{i}")))
        .collect();
    (dir, paths)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_write_through_one_edge_is_answered_by_every_edge() {
    let etcd = Etcd::start().await;
    let (_tmp, data) = dirs(3);
    let a = start_edge(&data[0], &etcd.url, "edge-a", &[]).await;
    let b = start_edge(&data[1], &etcd.url, "edge-b", &[]).await;
    let c = start_edge(&data[2], &etcd.url, "edge-c", &[]).await;
    let edges = [&a, &b, &c];

    // A write through any edge: once it answers 200, every edge answers the record.
    for (i, writer) in edges.iter().enumerate() {
        let addr = format!("192.0.2.{}", 10 + i);
        let (status, rev, body) = writer.put_a(&format!("w{i}"), &addr).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(rev.is_some_and(|r| r > 0), "a write carries its revision");
        for e in edges {
            assert_eq!(answer(e, &format!("w{i}")).await, Ok(vec![addr.clone()]));
        }
    }
    // Writers on different edges racing for the same zone: each validates against its own
    // version, etcd orders them, the losers retry; every write lands once.
    let writes = (0..24).map(|i| {
        let e = edges[i % 3];
        async move {
            e.put_a(&format!("race{i}"), &format!("192.0.2.{}", 100 + i))
                .await
        }
    });
    for (i, (status, _, body)) in futures_join(writes).await.into_iter().enumerate() {
        assert_eq!(status, StatusCode::OK, "race{i}: {body}");
    }
    for i in 0..24 {
        let want = Ok(vec![format!("192.0.2.{}", 100 + i)]);
        for e in edges {
            assert_eq!(answer(e, &format!("race{i}")).await, want, "race{i}");
        }
    }
    // The serial moved once per write, the same on every edge.
    let (_, zone_a) = a.ok_get(&format!("/v1/zones/{ZONE}")).await;
    let (_, zone_c) = c.ok_get(&format!("/v1/zones/{ZONE}")).await;
    assert_eq!(zone_a["serial"], zone_c["serial"]);

    // A batch through one edge, a delete through another.
    let (rev, _) = b
        .ok(
            Method::POST,
            &format!("/v1/zones/{ZONE}/changes"),
            Some(json!({"changes": [
                {"op": "set", "name": "x", "type": "A", "ttl": 30, "records": ["192.0.2.20"]},
                {"op": "delete", "name": "w0", "type": "A"},
            ]})),
        )
        .await;
    for e in edges {
        assert_eq!(answer(e, "x").await, Ok(vec!["192.0.2.20".to_string()]));
        assert_eq!(answer(e, "w0").await, Err(ResponseCode::NXDomain));
    }
    // The writer knows at once (the others acked to it); an edge that didn't write sees the
    // registrations, which show a revision confirmed by acks within a second.
    let (_, change) = b.ok_get(&format!("/v1/changes/{rev}")).await;
    assert_eq!(change["status"], "INSYNC", "{change}");
    eventually(
        Duration::from_secs(3),
        "edge-c sees the change in sync",
        || async { c.ok_get(&format!("/v1/changes/{rev}")).await.1["status"] == "INSYNC" },
    )
    .await;
    let (_, view) = c.ok_get("/v1/edges").await;
    let rows = view["edges"].as_array().expect("edges");
    assert_eq!(rows.len(), 3, "{view}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    for row in rows {
        assert!(row["applied_revision"].as_i64() >= Some(rev), "{view}");
        assert_eq!(row["live"], true);
        assert_eq!(row["lag_revisions"], 0, "{view}");
        // Leases are renewed every 2/3 s here.
        let contact = row["last_contact"].as_f64().expect("last_contact");
        assert!((now - contact).abs() < 3.0, "{now} {view}");
    }

    // If-Match: a revision older than the zone's last change is refused, and nothing changes.
    let (status, _, body) = a
        .call(
            Method::PUT,
            &format!("/v1/zones/{ZONE}/records/m/A"),
            Some(json!({"ttl": 30, "records": ["192.0.2.30"]})),
            &[("if-match", format!("\"{}\"", rev - 1))],
        )
        .await
        .expect("PUT");
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert_eq!(answer(&a, "m").await, Err(ResponseCode::NXDomain));
    let (status, _, body) = a
        .call(
            Method::PUT,
            &format!("/v1/zones/{ZONE}/records/m/A"),
            Some(json!({"ttl": 30, "records": ["192.0.2.30"]})),
            &[("if-match", format!("\"{rev}\""))],
        )
        .await
        .expect("PUT");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(answer(&c, "m").await, Ok(vec!["192.0.2.30".to_string()]));

    // A batch over etcd's 128 operations per transaction: 413, nothing written.
    let changes: Vec<Value> = (0..130)
        .map(|i| json!({"op": "set", "name": format!("big{i}"), "type": "A", "ttl": 30, "records": ["192.0.2.40"]}))
        .collect();
    let (status, _, body) = b
        .call(
            Method::POST,
            &format!("/v1/zones/{ZONE}/changes"),
            Some(json!({ "changes": changes })),
            &[],
        )
        .await
        .expect("POST");
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("128"),
        "{body}"
    );
    assert_eq!(answer(&a, "big0").await, Err(ResponseCode::NXDomain));

    // The watches held throughout: no reconnects, no resyncs.
    for e in edges {
        let metrics = e.metrics().await;
        for line in [
            "edgedns_fleet_watch_reconnects_total 0",
            "edgedns_fleet_resyncs_total 0",
            "edgedns_fleet_edges_live 3",
            "edgedns_fleet_connected 1",
            "edgedns_fleet_stale 0",
        ] {
            assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
        }
    }
    for e in [a, b, c] {
        e.stop().await;
    }
}

/// Runs the futures at once (on this task) and returns their outputs in order.
async fn futures_join<F: std::future::Future>(
    futures: impl IntoIterator<Item = F>,
) -> Vec<F::Output> {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("done")).collect()
}

impl Edge {
    async fn metrics(&self) -> String {
        let stream = TcpStream::connect(self.api).await.expect("connect");
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        let conn = tokio::spawn(conn);
        let req = Request::get("/metrics")
            .header("host", self.api.to_string())
            .body(Full::new(Bytes::new()))
            .expect("request");
        let resp = timeout(WAIT, sender.send_request(req))
            .await
            .expect("in time")
            .expect("GET /metrics");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        conn.abort();
        String::from_utf8(body.to_vec()).expect("utf-8")
    }

    async fn ok_get(&self, path: &str) -> (Option<i64>, Value) {
        let (status, rev, json) = self.call(Method::GET, path, None, &[]).await.expect("GET");
        assert_eq!(status, StatusCode::OK, "GET {path}: {json}");
        (rev, json)
    }
}

/// A counter's value in a `/metrics` text.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{name} in\n{metrics}"))
}

/// The other edges confirm a write to the edge that wrote it directly: their registrations in
/// etcd are not written for each write (a Raft round per edge per write), only now and then.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_are_confirmed_by_acks_between_edges_not_by_registration_writes() {
    let etcd = Etcd::start().await;
    let (_tmp, data) = dirs(3);
    let a = start_edge(&data[0], &etcd.url, "edge-a", &[]).await;
    let b = start_edge(&data[1], &etcd.url, "edge-b", &[]).await;
    let c = start_edge(&data[2], &etcd.url, "edge-c", &[]).await;
    // The first write may come before the edges have read the ack key.
    a.put_a_ok("warm", "192.0.2.1").await;
    let before = [b.metrics().await, c.metrics().await];
    let received = counter(&a.metrics().await, "edgedns_fleet_acks_received_total");
    let started = Instant::now();
    const WRITES: u64 = 20;
    for i in 0..WRITES {
        let addr = format!("192.0.2.{}", 10 + i);
        a.put_a_ok(&format!("n{i}"), &addr).await;
        for e in [&b, &c] {
            assert_eq!(answer(e, &format!("n{i}")).await, Ok(vec![addr.clone()]));
        }
    }
    let elapsed = started.elapsed();
    let got = counter(&a.metrics().await, "edgedns_fleet_acks_received_total") - received;
    assert!(
        got >= 2 * WRITES,
        "{got} acks for {WRITES} writes from 2 edges"
    );
    for (e, before) in [&b, &c].into_iter().zip(&before) {
        let after = e.metrics().await;
        let name = "edgedns_fleet_registration_writes_total";
        let writes = counter(&after, name) - counter(before, name);
        // One lazy update a second, and on a loaded box a few receipts later than the 50 ms
        // a follower waits for them; one per write without acks.
        assert!(
            writes < WRITES / 2,
            "{writes} registration writes in {elapsed:?} for {WRITES} writes"
        );
        assert!(counter(&after, "edgedns_fleet_acks_sent_total") >= WRITES);
    }
    for e in [a, b, c] {
        e.stop().await;
    }
}

/// Acks that can't reach the writer (its ack address leads nowhere) cost a moment, not a
/// confirmation: the others publish in their registrations instead, also while their acks to
/// another writer get their receipts. Datagrams without the fleet's key are counted and
/// ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_are_confirmed_through_etcd_when_acks_cannot_reach_the_writer() {
    let etcd = Etcd::start().await;
    let (_tmp, data) = dirs(4);
    // Nothing listens on the port a's writes name.
    let nowhere = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let nowhere_addr = nowhere.local_addr().expect("addr").to_string();
    drop(nowhere);
    let ack_port = free_port();
    let listen = format!("127.0.0.1:{ack_port}");
    let a = start_edge(
        &data[0],
        &etcd.url,
        "edge-a",
        &["--ack-listen", &listen, "--ack-address", &nowhere_addr],
    )
    .await;
    let b = start_edge(&data[1], &etcd.url, "edge-b", &[]).await;
    let c = start_edge(&data[2], &etcd.url, "edge-c", &["--ack-listen", "off"]).await;
    let d = start_edge(&data[3], &etcd.url, "edge-d", &[]).await;
    // Writes through a and d at once: b's acks to d get their receipts, its acks to a never
    // do, and the one must not stand for the other.
    for round in 0..6 {
        let writes = [&a, &d].into_iter().enumerate().map(|(w, writer)| {
            let name = format!("n{round}-{w}");
            let addr = format!("192.0.2.{}", 10 + 2 * round + w);
            async move {
                let started = Instant::now();
                writer.put_a_ok(&name, &addr).await;
                (name, addr, started.elapsed())
            }
        });
        for (name, addr, took) in futures_join(writes).await {
            // Well inside the 2 s wait: the registrations were written at once, not lazily.
            assert!(took < Duration::from_millis(900), "{name}: {took:?}");
            for e in [&a, &b, &c, &d] {
                assert_eq!(answer(e, &name).await, Ok(vec![addr.clone()]));
            }
        }
    }
    assert!(counter(&d.metrics().await, "edgedns_fleet_acks_received_total") >= 4);
    let metrics = a.metrics().await;
    assert_eq!(counter(&metrics, "edgedns_fleet_acks_received_total"), 0);

    // A forged ack to a's socket: right shape, no key.
    let forger = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let mut forged = b"EDA1\x01".to_vec();
    forged.extend_from_slice(&1i64.to_be_bytes());
    forged.extend_from_slice(&i64::MAX.to_be_bytes());
    forged.extend_from_slice(b"\x06edge-b\x06edge-a");
    forged.extend_from_slice(&[0; 16]);
    forger.send_to(&forged, &listen).await.expect("send");
    eventually(Duration::from_secs(3), "the forged ack counted", || async {
        counter(&a.metrics().await, "edgedns_fleet_acks_rejected_total") >= 1
    })
    .await;
    assert_eq!(
        counter(&a.metrics().await, "edgedns_fleet_acks_received_total"),
        0
    );
    for e in [a, b, c, d] {
        e.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_edge_holds_writes_until_its_lease_expires_then_resyncs() {
    let etcd = Etcd::start().await;
    let (_tmp, data) = dirs(2);
    let mut relay = Relay::start(&etcd.url).await;
    let a = start_edge(&data[0], &etcd.url, "edge-a", &["--confirm-wait-ms", "300"]).await;
    let b = start_edge(&data[1], &relay.url(), "edge-b", &[]).await;
    a.put_a_ok("before", "192.0.2.1").await;
    assert_eq!(answer(&b, "before").await, Ok(vec!["192.0.2.1".into()]));

    // Edge b loses etcd. A write through a is committed, but b can't apply it: 202 with the
    // change id and b behind, until b's lease (2 s) runs out and it is no longer live.
    relay.cut();
    let (status, rev, body) = a.put_a("during", "192.0.2.2").await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["status"], "PENDING", "{body}");
    assert_eq!(body["behind"], json!(["edge-b"]), "{body}");
    let id = body["change_id"].as_str().expect("change id").to_string();
    assert_eq!(Some(id.parse::<i64>().expect("numeric id")), rev);
    let (_, change) = a.ok_get(&format!("/v1/changes/{id}")).await;
    assert_eq!(change["status"], "PENDING", "{change}");
    eventually(
        Duration::from_secs(10),
        "the change in sync once b's lease expired",
        || async {
            let (_, change) = a.ok_get(&format!("/v1/changes/{id}")).await;
            change["status"] == "INSYNC"
        },
    )
    .await;
    // Dead edges are not waited for.
    a.put_a_ok("after", "192.0.2.3").await;

    // Cut off longer than its lease, b answers what it has, and misses SERVFAIL.
    eventually(Duration::from_secs(10), "b stale", || async {
        answer(&b, "nothing-here").await == Err(ResponseCode::ServFail)
    })
    .await;
    assert_eq!(answer(&b, "before").await, Ok(vec!["192.0.2.1".into()]));
    // Stale comes a little before etcd has been silent for a whole lease (the lease may run
    // out in etcd a little before it does by b's clock).
    eventually(Duration::from_secs(5), "b disconnected", || async {
        b.ok_get("/readyz").await.1["fleet"] == "disconnected"
    })
    .await;
    let (_, ready) = b.ok_get("/readyz").await;
    assert_eq!(ready["fleet_stale"], true, "{ready}");
    assert!(b
        .metrics()
        .await
        .lines()
        .any(|l| l == "edgedns_fleet_stale 1"));
    assert_eq!(
        answer(&a, "nothing-here").await,
        Err(ResponseCode::NXDomain)
    );

    // Meanwhile etcd compacts past b's revision.
    let mut client = etcd.client().await;
    let now = client
        .get("x", None)
        .await
        .expect("get")
        .header()
        .expect("header")
        .revision();
    client
        .compact(
            now,
            Some(etcd_client::CompactionOptions::new().with_physical()),
        )
        .await
        .expect("compact");

    // b finds etcd again: it reconciles, then answers as the others do.
    relay.restore().await;
    eventually(Duration::from_secs(15), "b in step again", || async {
        answer(&b, "after").await == Ok(vec!["192.0.2.3".to_string()])
            && answer(&b, "during").await == Ok(vec!["192.0.2.2".to_string()])
    })
    .await;
    eventually(Duration::from_secs(10), "b not stale", || async {
        answer(&b, "nothing-here").await == Err(ResponseCode::NXDomain)
    })
    .await;
    let (_, ready) = b.ok_get("/readyz").await;
    assert_eq!(ready["fleet"], "connected", "{ready}");
    assert_eq!(ready["fleet_stale"], false, "{ready}");
    // And it is live again once it has registered anew (its lease ran out while cut off; a
    // write never waits for an edge that isn't live): then a write waits for it.
    eventually(
        Duration::from_secs(10),
        "b live again in a's view",
        || async {
            let (_, edges) = a.ok_get("/v1/edges").await;
            edges["edges"]
                .as_array()
                .is_some_and(|v| v.iter().any(|e| e["id"] == "edge-b" && e["live"] == true))
        },
    )
    .await;
    a.put_a_ok("last", "192.0.2.4").await;
    assert_eq!(answer(&b, "last").await, Ok(vec!["192.0.2.4".into()]));
    a.stop().await;
    b.stop().await;
}

/// A write returns 200 once the edges registered when it committed have it: an edge that was
/// not registered was not waited for. So an edge that finds etcd again after its lease ran out
/// answers misses SERVFAIL until it is registered again, even though it has caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reconnected_edge_answers_misses_normally_only_once_registered_again() {
    let etcd = Etcd::start().await;
    let (_tmp, data) = dirs(2);
    let mut relay = Relay::start(&etcd.url).await;
    let a = start_edge(&data[0], &etcd.url, "edge-a", &[]).await;
    let b = start_edge(&data[1], &relay.url(), "edge-b", &[]).await;
    assert_eq!(
        answer(&b, "nothing-here").await,
        Err(ResponseCode::NXDomain)
    );

    relay.cut();
    eventually(Duration::from_secs(10), "b stale", || async {
        answer(&b, "nothing-here").await == Err(ResponseCode::ServFail)
    })
    .await;
    // Its lease gone, b's id is taken meanwhile by a registration that isn't b's (another
    // token), which a's writes count as in sync: b can't register again while it is there.
    let mut client = etcd.client().await;
    let edges_key = "/edgedns/v1/edges/edge-b";
    eventually(Duration::from_secs(10), "b's lease runs out", || {
        let mut client = client.clone();
        async move {
            client
                .get(edges_key, None)
                .await
                .expect("get")
                .kvs()
                .is_empty()
        }
    })
    .await;
    let lease = client.lease_grant(60, None).await.expect("lease").id();
    let squatter = json!({
        "id": "edge-b", "address": "192.0.2.99", "region": "", "version": "test",
        "applied_revision": i64::MAX / 2, "updated": 0.0, "instance": "not-edge-b",
    });
    client
        .put(
            edges_key,
            squatter.to_string(),
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await
        .expect("put the squatter");

    relay.restore().await;
    a.put_a_ok("during", "192.0.2.2").await;
    eventually(Duration::from_secs(15), "b caught up", || async {
        answer(&b, "during").await == Ok(vec!["192.0.2.2".to_string()])
    })
    .await;
    // Caught up but not registered: a write now would not wait for b, so b's misses stay
    // SERVFAIL (for longer than a register attempt's backoff).
    for _ in 0..10 {
        assert_eq!(
            answer(&b, "nothing-here").await,
            Err(ResponseCode::ServFail),
            "b answers a miss from its data while unregistered"
        );
        let (_, ready) = b.ok_get("/readyz").await;
        assert_eq!(ready["fleet_stale"], true, "{ready}");
        tokio::time::sleep(Duration::from_millis(400)).await;
    }

    // The squatter goes; b registers and answers misses normally again, and writes wait for it.
    client.lease_revoke(lease).await.expect("revoke");
    eventually(Duration::from_secs(15), "b not stale", || async {
        answer(&b, "nothing-here").await == Err(ResponseCode::NXDomain)
    })
    .await;
    let (_, ready) = b.ok_get("/readyz").await;
    assert_eq!(ready["fleet_stale"], false, "{ready}");
    a.put_a_ok("last", "192.0.2.4").await;
    assert_eq!(answer(&b, "last").await, Ok(vec!["192.0.2.4".into()]));
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_edge_reconciles_adds_replaces_and_removes() {
    let mut etcd = Etcd::start().await;
    let (_tmp, data) = dirs(2);
    let a = start_edge(&data[0], &etcd.url, "edge-a", &[]).await;
    let b = start_edge(&data[1], &etcd.url, "edge-b", &[]).await;
    for (name, addr) in [
        ("keep", "192.0.2.1"),
        ("replace", "192.0.2.2"),
        ("remove", "192.0.2.3"),
    ] {
        a.put_a_ok(name, addr).await;
    }
    assert_eq!(answer(&b, "remove").await, Ok(vec!["192.0.2.3".into()]));
    b.stop().await;

    // While b is down: one add, one replace, one remove, and a new zone.
    a.put_a_ok("add", "192.0.2.4").await;
    a.put_a_ok("replace", "192.0.2.5").await;
    a.ok(
        Method::DELETE,
        &format!("/v1/zones/{ZONE}/records/remove/A"),
        None,
    )
    .await;
    a.ok(
        Method::POST,
        "/v1/zones",
        Some(json!({"zone": "second.test", "ns": ["ns1.second.test"]})),
    )
    .await;

    let b = start_edge(&data[1], &etcd.url, "edge-b", &[]).await;
    assert_eq!(answer(&b, "keep").await, Ok(vec!["192.0.2.1".into()]));
    assert_eq!(answer(&b, "add").await, Ok(vec!["192.0.2.4".into()]));
    assert_eq!(answer(&b, "replace").await, Ok(vec!["192.0.2.5".into()]));
    assert_eq!(answer(&b, "remove").await, Err(ResponseCode::NXDomain));
    let soa = ask(b.udp, "nothing.second.test.").await;
    assert_eq!(soa.response_code(), ResponseCode::NXDomain, "{soa}");
    b.stop().await;
    a.stop().await;

    // With etcd gone, an edge starts from its own copy and says so.
    etcd.child.kill().expect("kill etcd");
    etcd.child.wait().expect("etcd exits");
    let b = start_edge(&data[1], &etcd.url, "edge-b", &[]).await;
    assert_eq!(answer(&b, "replace").await, Ok(vec!["192.0.2.5".into()]));
    let (_, ready) = b.ok_get("/readyz").await;
    assert_eq!(ready["fleet"], "disconnected", "{ready}");
    // Writes made while it was away did not wait for it: its misses may be wrong.
    assert_eq!(answer(&b, "nothing").await, Err(ResponseCode::ServFail));
    assert_eq!(ready["fleet_stale"], true, "{ready}");
    b.stop().await;
}

#[tokio::test]
async fn a_bad_etcd_certificate_stops_start_up() {
    let dir = TempDir::new().expect("temp dir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not a certificate").expect("write");
    let config = Serve::parse_from([
        "serve",
        "--xdp-mode",
        "off",
        "--data-dir",
        dir.path().join("data").to_str().expect("utf-8"),
        "--etcd",
        "https://127.0.0.1:1",
        "--etcd-ca",
        ca.to_str().expect("utf-8"),
    ])
    .config;
    let text = start_up_error(config, "a bad CA certificate is a start-up error").await;
    assert!(text.contains("ca.pem: no certificate"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_single_host_store_seeds_an_empty_prefix_once() {
    use dns_user::{
        cli::{self, ApiArgs, FleetCommand},
        engine::Engine,
        fleet::EtcdArgs,
        maps::FastPath,
        store::Store,
        zone::{Change, Edit, ZoneSet, ZoneSpec},
    };
    let (_tmp, data) = dirs(2);
    // A single host's store: a zone and a record, written through its own engine.
    {
        let store = Store::open(&data[0]).expect("store");
        let engine = Engine::<Store, FastPath>::new(ZoneSet::new(), None, store);
        let apex = Name::from_ascii(format!("{ZONE}.")).expect("apex");
        let ns = Name::from_ascii(format!("ns1.{ZONE}.")).expect("ns");
        let spec = ZoneSpec::new(apex.clone(), ns.clone(), ns.clone(), vec![ns]);
        engine.apply(Edit::CreateZone(spec)).await.expect("zone");
        let change = Change::Set {
            name: Name::from_ascii(format!("seeded.{ZONE}.")).expect("name"),
            rtype: RecordType::A,
            ttl: 60,
            records: vec![RData::A("192.0.2.99".parse().expect("addr"))],
        };
        engine
            .apply(Edit::Rrset(apex, change))
            .await
            .expect("record");
    }
    let etcd = Etcd::start().await;
    let seed = || FleetCommand::Seed {
        etcd: EtcdArgs {
            etcd: vec![etcd.url.clone()],
            etcd_prefix: "/edgedns/v1".into(),
            ..EtcdArgs::default()
        },
        data_dir: data[0].clone(),
    };
    let api = ApiArgs {
        api: "127.0.0.1:1".parse().expect("addr"),
        token_file: None,
    };
    cli::fleet(&api, seed())
        .await
        .expect("seed an empty prefix");

    // An edge with an empty store serves what the single host had.
    let edge = start_edge(&data[1], &etcd.url, "edge-a", &[]).await;
    assert_eq!(answer(&edge, "seeded").await, Ok(vec!["192.0.2.99".into()]));
    let status = ApiArgs {
        api: edge.api,
        token_file: None,
    };
    cli::fleet(&status, FleetCommand::Status { json: false })
        .await
        .expect("fleet status");

    // A second seed finds data there and changes nothing.
    let e = cli::fleet(&api, seed())
        .await
        .expect_err("a second seed is refused");
    assert!(e.to_string().contains("already holds data"), "{e}");
    assert_eq!(answer(&edge, "seeded").await, Ok(vec!["192.0.2.99".into()]));
    edge.stop().await;
}

/// A dynamic update (RFC 2136) to one edge goes through etcd like an API write: once the edge
/// answers NOERROR, the other edge answers the record too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dynamic_update_through_one_edge_reaches_every_edge() {
    use hickory_proto::{
        op::OpCode,
        rr::{rdata::A, Record},
    };
    let etcd = Etcd::start().await;
    let (_tmp, data) = dirs(2);
    let a = start_edge(
        &data[0],
        &etcd.url,
        "edge-a",
        &["--update-allow", "127.0.0.1"],
    )
    .await;
    let b = start_edge(&data[1], &etcd.url, "edge-b", &[]).await;
    let mut m = Message::new();
    m.set_id(0x0a0a)
        .set_op_code(OpCode::Update)
        .add_query(Query::query(
            Name::from_ascii(format!("{ZONE}.")).expect("zone"),
            RecordType::SOA,
        ))
        .add_name_server(Record::from_rdata(
            Name::from_ascii(format!("upd.{ZONE}.")).expect("name"),
            60,
            RData::A(A::new(192, 0, 2, 77)),
        ));
    let reply = exchange(a.udp, &m).await;
    assert_eq!(reply.response_code(), ResponseCode::NoError, "{reply}");
    assert_eq!(answer(&b, "upd").await, Ok(vec!["192.0.2.77".into()]));
    assert_eq!(answer(&a, "upd").await, Ok(vec!["192.0.2.77".into()]));
    a.stop().await;
    b.stop().await;
}

/// `GET /v1/zones`'s body, as text.
async fn zone_list(edge: &Edge) -> String {
    let (_, _, body) = edge
        .call(Method::GET, "/v1/zones", None, &[])
        .await
        .expect("GET /v1/zones");
    body.to_string()
}

/// `serve`'s demo zone is for a bare single host: an edge doesn't put it into the fleet, while
/// another zone named by `--zone` is created there as on a single host.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edge_leaves_the_demo_zone_out_of_the_fleet() {
    let etcd = Etcd::start().await;
    let (_tmp, data) = dirs(2);
    let a = start_edge(&data[0], &etcd.url, "edge-a", &["--zone", "t.example.net"]).await;
    let b = start_edge(&data[1], &etcd.url, "edge-b", &[]).await;
    eventually(
        Duration::from_secs(10),
        "edge-a sees edge-b's zone",
        || async { zone_list(&a).await.contains(ZONE) },
    )
    .await;
    for edge in [&a, &b] {
        let z = zone_list(edge).await;
        assert!(
            !z.contains("t.example.net"),
            "the demo zone is in the fleet: {z}"
        );
    }
    a.stop().await;
    b.stop().await;
}

/// A zone file imported through one edge goes through etcd like any other write: every edge
/// answers its names, and a restarted edge keeps them (the fleet has them, not only its store).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_zone_file_imported_through_one_edge_reaches_every_edge() {
    let etcd = Etcd::start().await;
    let (_tmp, data) = dirs(2);
    let a = start_edge(&data[0], &etcd.url, "edge-a", &[]).await;
    let b = start_edge(&data[1], &etcd.url, "edge-b", &[]).await;
    let text = format!(
        "$ORIGIN {ZONE}.\n$TTL 300\n@ SOA ns1 hostmaster 7 3600 600 86400 60\n@ NS ns1\n\
         ns1 A 192.0.2.1\nfile1 A 192.0.2.71\nfile2 A 192.0.2.72\n"
    );
    let (status, rev, body) = a
        .send(
            Method::PUT,
            &format!("/v1/zones/{ZONE}/zonefile"),
            Some(("text/dns", text.into_bytes())),
            &[],
        )
        .await
        .expect("PUT zonefile");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(rev.is_some_and(|r| r > 0), "an import carries its revision");
    for e in [&a, &b] {
        assert_eq!(answer(e, "file1").await, Ok(vec!["192.0.2.71".to_string()]));
        assert_eq!(answer(e, "file2").await, Ok(vec!["192.0.2.72".to_string()]));
    }
    // Edge B restarts: its reconcile with etcd keeps the imported names.
    b.stop().await;
    let b = start_edge(&data[1], &etcd.url, "edge-b", &[]).await;
    assert_eq!(
        answer(&b, "file2").await,
        Ok(vec!["192.0.2.72".to_string()])
    );
    b.stop().await;
    a.stop().await;
}

/// Two daemons with one `--edge-id` would confirm writes for each other: a second edge taking
/// the id of a live one stops at start-up, naming the id. The same edge started again after a
/// crash (its registration still there under its old lease) takes its registration back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_second_edge_with_a_live_edges_id_stops_start_up() {
    let etcd = Etcd::start().await;
    let (_tmp, data) = dirs(3);
    let a = start_edge(&data[0], &etcd.url, "edge-a", &[]).await;
    let b = start_edge(&data[1], &etcd.url, "edge-b", &[]).await;

    let config = Serve::parse_from([
        "serve",
        "--xdp-mode",
        "off",
        "--data-dir",
        data[2].to_str().expect("utf-8"),
        "--etcd",
        &etcd.url,
        "--edge-id",
        "edge-a",
        "--lease-ttl",
        "2",
        "--zone",
        ZONE,
    ])
    .config;
    let text = start_up_error(config, "a duplicate edge id is a start-up error").await;
    assert!(
        text.contains("\"edge-a\"") && text.contains("another live edge"),
        "{text}"
    );

    // The first edge-a is still the one registered, and writes wait for it as before. Each
    // edge sees the registrations through a watch: asked until its view has both (bounded).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, edges) = b.ok_get("/v1/edges").await;
        let ids: Vec<&str> = edges["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .filter_map(|e| e["id"].as_str())
            .collect();
        if ids == ["edge-a", "edge-b"] {
            break;
        }
        assert!(Instant::now() < deadline, "not both edges in 10 s: {edges}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    b.put_a_ok("still", "192.0.2.8").await;
    assert_eq!(answer(&a, "still").await, Ok(vec!["192.0.2.8".into()]));

    // edge-a crashes: its registration stays until its lease runs out (made here as the crash
    // leaves it, under a lease of its own). Started again from its own data directory, it
    // takes that registration back.
    a.stop().await;
    let token = std::fs::read_to_string(data[0].join("fleet-edge-token")).expect("token");
    let mut client = etcd.client().await;
    let lease = client.lease_grant(30, None).await.expect("lease").id();
    let left = json!({"id": "edge-a", "address": "127.0.0.1:53", "region": "", "version": "0",
        "applied_revision": 0, "updated": 0.0, "instance": token.trim()});
    client
        .put(
            "/edgedns/v1/edges/edge-a",
            left.to_string(),
            Some(etcd_client::PutOptions::new().with_lease(lease)),
        )
        .await
        .expect("put");
    let a = start_edge(&data[0], &etcd.url, "edge-a", &[]).await;
    b.put_a_ok("back", "192.0.2.9").await;
    assert_eq!(answer(&a, "back").await, Ok(vec!["192.0.2.9".into()]));
    a.stop().await;
    b.stop().await;
}
