//! The whole daemon in process: `daemon::run` with `--xdp-mode off` on sockets bound to port 0,
//! its store in a temporary directory. Changes go in through the HTTP API (the CLI's client) and
//! are read back over real UDP and TCP DNS; the daemon is stopped with its token and started
//! again on the same data directory. No root, no XDP.

use std::{net::SocketAddr, path::Path, time::Duration};

use clap::Parser;
use dns_user::{
    cli::{ApiArgs, Client},
    daemon::{self, DaemonError, Listeners},
};
use hickory_proto::{
    op::{Message, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};
use hyper::{Method, StatusCode};
use serde_json::json;
use tempfile::TempDir;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    task::JoinHandle,
    time::timeout,
};
use tokio_util::sync::CancellationToken;

const ZONE: &str = "t.example.net";
const WAIT: Duration = Duration::from_secs(5);

/// `edgedns serve`'s flags, as the binary parses them.
#[derive(Parser)]
struct Serve {
    #[command(flatten)]
    config: daemon::Config,
}

/// A daemon running in this process.
struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), DaemonError>>,
    udp: SocketAddr,
    tcp: SocketAddr,
    api: Client,
}

impl Running {
    /// `serve --xdp-mode off --data-dir DATA`, on 127.0.0.1 port 0; returns once the API answers.
    async fn start(data: &Path) -> Self {
        Self::start_with(data, &[]).await
    }

    /// [`Running::start`] with more flags.
    async fn start_with(data: &Path, extra: &[&str]) -> Self {
        let mut args = vec![
            "serve",
            "--xdp-mode",
            "off",
            "--data-dir",
            data.to_str().expect("utf-8 temp dir"),
        ];
        args.extend(extra);
        let config = Serve::parse_from(args).config;
        let listeners = Listeners {
            webhook: None,
            dns_udp: UdpSocket::bind("127.0.0.1:0").await.expect("bind udp"),
            dns_tcp: TcpListener::bind("127.0.0.1:0").await.expect("bind tcp"),
            api: TcpListener::bind("127.0.0.1:0").await.expect("bind api"),
        };
        let udp = listeners.dns_udp.local_addr().expect("udp addr");
        let tcp = listeners.dns_tcp.local_addr().expect("tcp addr");
        let api = Client::new(&ApiArgs {
            api: listeners.api.local_addr().expect("api addr"),
            token_file: None,
        })
        .expect("client");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(daemon::run(config, listeners, shutdown.clone()));
        // The API is bound already; it answers once the store is loaded and the demo zone made.
        let mut ready = false;
        for _ in 0..100 {
            assert!(!task.is_finished(), "the daemon stopped while starting");
            if let Ok(Ok(r)) = timeout(WAIT, api.send(Method::GET, "/healthz", None)).await {
                ready = r.status == StatusCode::OK;
                if ready {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "no 200 from /healthz");
        Self {
            shutdown,
            task,
            udp,
            tcp,
            api,
        }
    }

    /// Cancels the token; the daemon must return `Ok` in time.
    async fn stop(self) {
        self.shutdown.cancel();
        timeout(WAIT, self.task)
            .await
            .expect("the daemon stops in time")
            .expect("daemon task")
            .expect("the daemon ran without error");
    }
}

fn query(name: &str, qtype: RecordType) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(0x5eed)
        .add_query(Query::query(Name::from_ascii(name).expect("name"), qtype));
    m.to_vec().expect("encode")
}

async fn ask_udp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sock.send_to(&query(name, qtype), server)
        .await
        .expect("send");
    let mut buf = vec![0u8; 4096];
    let (len, _) = timeout(WAIT, sock.recv_from(&mut buf))
        .await
        .expect("a UDP answer in time")
        .expect("recv");
    Message::from_vec(&buf[..len]).expect("answer parses")
}

async fn ask_tcp(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut s = TcpStream::connect(server).await.expect("connect");
    let q = query(name, qtype);
    let mut frame = (q.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&q);
    s.write_all(&frame).await.expect("write");
    let mut len = [0u8; 2];
    timeout(WAIT, s.read_exact(&mut len))
        .await
        .expect("a TCP answer in time")
        .expect("length");
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.expect("message");
    Message::from_vec(&buf).expect("answer parses")
}

/// The A addresses of an authoritative NOERROR answer.
fn addresses(m: &Message) -> Vec<String> {
    assert_eq!(m.response_code(), ResponseCode::NoError, "{m}");
    assert!(m.authoritative(), "{m}");
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.to_string()),
            _ => None,
        })
        .collect()
}

async fn assert_served(d: &Running, name: &str, want: &[&str]) {
    for m in [
        ask_udp(d.udp, name, RecordType::A).await,
        ask_tcp(d.tcp, name, RecordType::A).await,
    ] {
        assert_eq!(addresses(&m), want, "{name}");
    }
}

#[tokio::test]
async fn api_change_is_served_over_udp_and_tcp_and_survives_a_restart() {
    let dir = TempDir::new().expect("temp dir");
    let data = dir.path().join("data");

    let d = Running::start(&data).await;
    // The demo zone and record `serve` makes on first start.
    assert_served(&d, "demo.t.example.net.", &["192.0.2.1"]).await;
    let www = "www.t.example.net.";
    let nx = ask_udp(d.udp, www, RecordType::A).await;
    assert_eq!(nx.response_code(), ResponseCode::NXDomain, "{nx}");

    let put = d
        .api
        .json(
            Method::PUT,
            &format!("/v1/zones/{ZONE}/records/www/A"),
            Some(&json!({"ttl": 30, "records": ["192.0.2.7", "192.0.2.8"]})),
        )
        .await
        .expect("PUT");
    assert!(put["serial"].as_u64().is_some(), "{put}");
    assert_served(&d, www, &["192.0.2.7", "192.0.2.8"]).await;
    d.stop().await;

    // Started again on the same directory: the record is still there, and so is the demo one
    // (not made twice: the zone exists).
    let d = Running::start(&data).await;
    assert_served(&d, www, &["192.0.2.7", "192.0.2.8"]).await;
    assert_served(&d, "demo.t.example.net.", &["192.0.2.1"]).await;
    let zone = d
        .api
        .json(Method::GET, &format!("/v1/zones/{ZONE}"), None)
        .await
        .expect("GET zone");
    assert_eq!(zone["serial"], put["serial"], "{zone}");
    d.stop().await;
}

/// An UPDATE of t.example.net adding `up.t.example.net. 60 A 192.0.2.55`, unsigned.
fn update_message() -> Vec<u8> {
    let mut b = vec![0x0b, 0xad, 0x28, 0, 0, 1, 0, 0, 0, 1, 0, 0];
    b.extend(b"\x01t\x07example\x03net\x00\x00\x06\x00\x01");
    b.extend(b"\x02up\x01t\x07example\x03net\x00");
    b.extend([0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 55]);
    b
}

/// A dynamic update from a source in `--update-allow` (no key) is answered once it is stored:
/// served at once, over UDP and TCP, and still there after a restart.
#[tokio::test]
async fn an_allowed_unsigned_update_lands_and_survives_a_restart() {
    let dir = TempDir::new().expect("temp dir");
    let data = dir.path().join("data");
    let flags = ["--update-allow", "127.0.0.0/8"];
    let d = Running::start_with(&data, &flags).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sock.send_to(&update_message(), d.udp).await.expect("send");
    let mut buf = vec![0u8; 512];
    let (len, _) = timeout(WAIT, sock.recv_from(&mut buf))
        .await
        .expect("an answer in time")
        .expect("recv");
    let r = Message::from_vec(&buf[..len]).expect("parses");
    assert_eq!(r.response_code(), ResponseCode::NoError, "{r}");
    assert_eq!(r.id(), 0x0bad);
    assert_served(&d, "up.t.example.net.", &["192.0.2.55"]).await;
    d.stop().await;

    let d = Running::start_with(&data, &flags).await;
    assert_served(&d, "up.t.example.net.", &["192.0.2.55"]).await;
    d.stop().await;

    // Without the flag, the same update is REFUSED.
    let d = Running::start(&data).await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    sock.send_to(&update_message(), d.udp).await.expect("send");
    let (len, _) = timeout(WAIT, sock.recv_from(&mut buf))
        .await
        .expect("an answer in time")
        .expect("recv");
    let r = Message::from_vec(&buf[..len]).expect("parses");
    assert_eq!(r.response_code(), ResponseCode::Refused, "{r}");
    d.stop().await;
}

/// A key file with a mistake stops start-up, naming the file and line; so does an MD5 key.
#[tokio::test]
async fn a_bad_tsig_key_file_stops_start_up() {
    let dir = TempDir::new().expect("temp dir");
    let keys = dir.path().join("keys.conf");
    for (text, line, says) in [
        (
            "key \"a\" {\n  algorithm hmac-md5;\n  secret \"AAAA\";\n};\n",
            2,
            "hmac-md5",
        ),
        (
            "# comment\nkey \"a\" {\n  algorithm hmac-sha256\n  secret \"AAAA\";\n};\n",
            4,
            "`;`",
        ),
    ] {
        std::fs::write(&keys, text).expect("write keys");
        let config = Serve::parse_from([
            "serve",
            "--xdp-mode",
            "off",
            "--data-dir",
            dir.path().join("data").to_str().expect("utf-8"),
            "--tsig-keys",
            keys.to_str().expect("utf-8"),
        ])
        .config;
        let listeners = Listeners {
            webhook: None,
            dns_udp: UdpSocket::bind("127.0.0.1:0").await.expect("bind udp"),
            dns_tcp: TcpListener::bind("127.0.0.1:0").await.expect("bind tcp"),
            api: TcpListener::bind("127.0.0.1:0").await.expect("bind api"),
        };
        let err = timeout(
            WAIT,
            daemon::run(config, listeners, CancellationToken::new()),
        )
        .await
        .expect("start-up fails in time")
        .expect_err("a bad key file stops start-up");
        assert!(matches!(err, DaemonError::TsigKeys(_)), "{err:?}");
        let text = err.to_string();
        let at = format!("{}:{line}:", keys.display());
        assert!(text.contains(&at) && text.contains(says), "{text}");
    }
}
