//! The whole daemon in process: `daemon::run` with `--xdp-mode off` on sockets bound to port 0,
//! its store in a temporary directory. Changes go in through the HTTP API (the CLI's client) and
//! are read back over real UDP and TCP DNS; the daemon is stopped with its token and started
//! again on the same data directory. No root, no XDP.

use std::{net::SocketAddr, path::Path, time::Duration};

use clap::Parser;
use dns_user::{
    cli::{self, ApiArgs, Client, ZoneCommand},
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
    /// Where the API listens, for the CLI's commands.
    api_args: ApiArgs,
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
            dns_udp: dns_user::fallback::bind_udp("127.0.0.1:0".parse().expect("addr"), 2)
                .expect("bind udp"),
            dns_tcp: vec![TcpListener::bind("127.0.0.1:0").await.expect("bind tcp")],
            api: TcpListener::bind("127.0.0.1:0").await.expect("bind api"),
        };
        let udp = listeners.dns_udp[0].local_addr().expect("udp addr");
        let tcp = listeners.dns_tcp[0].local_addr().expect("tcp addr");
        let api_args = ApiArgs {
            api: listeners.api.local_addr().expect("api addr"),
            token_file: None,
        };
        let api = Client::new(&api_args).expect("client");
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
            api_args,
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

/// Every message of a zone transfer over TCP from `source`, read until the closing SOA (or an
/// error, or a lone SOA: "you are up to date").
async fn transfer(server: SocketAddr, source: &str, q: &Message) -> Vec<Message> {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.bind(format!("{source}:0").parse().expect("source"))
        .expect("bind");
    let mut s = sock.connect(server).await.expect("connect");
    let q = q.to_vec().expect("encode");
    let mut frame = (q.len() as u16).to_be_bytes().to_vec();
    frame.extend_from_slice(&q);
    s.write_all(&frame).await.expect("write");
    let mut out: Vec<Message> = Vec::new();
    for _ in 0..1000 {
        let mut len = [0u8; 2];
        timeout(WAIT, s.read_exact(&mut len))
            .await
            .expect("a TCP message in time")
            .expect("length");
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut buf).await.expect("message");
        let m = Message::from_vec(&buf).expect("answer parses");
        let done = m.response_code() != ResponseCode::NoError
            || (out.is_empty() && m.answers().len() == 1)
            || (!out.is_empty() || m.answers().len() > 1)
                && m.answers().last().map(|r| r.record_type()) == Some(RecordType::SOA);
        out.push(m);
        if done {
            return out;
        }
    }
    panic!("a transfer of over 1000 messages");
}

/// `(type, SOA serial if an SOA)` of every record of a transfer.
fn records(msgs: &[Message]) -> Vec<(RecordType, Option<u32>)> {
    msgs.iter()
        .flat_map(|m| m.answers())
        .map(|r| match r.data() {
            RData::SOA(soa) => (RecordType::SOA, Some(soa.serial())),
            d => (d.record_type(), None),
        })
        .collect()
}

fn ixfr_query(serial: u32, soa: &hickory_proto::rr::Record) -> Message {
    let RData::SOA(ours) = soa.data() else {
        panic!("not an SOA: {soa}");
    };
    let theirs = hickory_proto::rr::rdata::SOA::new(
        ours.mname().clone(),
        ours.rname().clone(),
        serial,
        ours.refresh(),
        ours.retry(),
        ours.expire(),
        ours.minimum(),
    );
    let mut m = Message::new();
    m.set_id(0x1f1f)
        .add_query(Query::query(soa.name().clone(), RecordType::IXFR))
        .add_name_server(hickory_proto::rr::Record::from_rdata(
            soa.name().clone(),
            soa.ttl(),
            RData::SOA(theirs),
        ));
    m
}

/// A secondary's view: NOTIFY after a write, IXFR of just that change (from the journal on
/// disk, after a restart too), and transfers refused to an address not allowed.
#[tokio::test]
async fn secondaries_get_notify_and_ixfr_from_the_journal() {
    let dir = TempDir::new().expect("temp dir");
    let data = dir.path().join("data");
    let secondary = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let notify = secondary.local_addr().expect("addr").to_string();
    let flags = ["--transfer-allow", "127.0.0.1", "--notify", &notify];

    let d = Running::start_with(&data, &flags).await;
    let soa = ask_udp(d.udp, "t.example.net.", RecordType::SOA).await;
    let soa = soa.answers()[0].clone();
    let RData::SOA(s) = soa.data() else {
        panic!("no SOA: {soa}");
    };
    let s0 = s.serial();

    let put = d
        .api
        .json(
            Method::PUT,
            &format!("/v1/zones/{ZONE}/records/www/A"),
            Some(&json!({"ttl": 30, "records": ["192.0.2.7", "192.0.2.8"]})),
        )
        .await
        .expect("PUT");
    let s1 = u32::try_from(put["serial"].as_u64().expect("serial")).expect("u32");

    // NOTIFY, with the new serial; answered, so it isn't sent again.
    let mut buf = vec![0u8; 4096];
    let (len, from) = timeout(WAIT, secondary.recv_from(&mut buf))
        .await
        .expect("a NOTIFY in time")
        .expect("recv");
    let n = Message::from_vec(&buf[..len]).expect("NOTIFY parses");
    assert_eq!(n.op_code(), hickory_proto::op::OpCode::Notify, "{n}");
    assert_eq!(n.queries()[0].query_type(), RecordType::SOA, "{n}");
    assert_eq!(
        records(std::slice::from_ref(&n)),
        [(RecordType::SOA, Some(s1))]
    );
    let mut answer = Message::new();
    answer
        .set_id(n.id())
        .set_message_type(hickory_proto::op::MessageType::Response)
        .set_op_code(hickory_proto::op::OpCode::Notify);
    secondary
        .send_to(&answer.to_vec().expect("encode"), from)
        .await
        .expect("send");

    let want = [
        (RecordType::SOA, Some(s1)),
        (RecordType::SOA, Some(s0)),
        (RecordType::SOA, Some(s1)),
        (RecordType::A, None),
        (RecordType::A, None),
        (RecordType::SOA, Some(s1)),
    ];
    let ixfr = transfer(d.tcp, "127.0.0.1", &ixfr_query(s0, &soa)).await;
    assert_eq!(records(&ixfr), want);
    d.stop().await;

    // The journal is on disk: after a restart, the same answer.
    let d = Running::start_with(&data, &flags).await;
    let ixfr = transfer(d.tcp, "127.0.0.1", &ixfr_query(s0, &soa)).await;
    assert_eq!(records(&ixfr), want);
    // Up to date: our SOA alone.
    let ixfr = transfer(d.tcp, "127.0.0.1", &ixfr_query(s1, &soa)).await;
    assert_eq!(records(&ixfr), [(RecordType::SOA, Some(s1))]);

    // Another address of this host is not in the ACL.
    for q in [ixfr_query(s0, &soa), {
        let mut m = Message::new();
        m.set_id(7)
            .add_query(Query::query(soa.name().clone(), RecordType::AXFR));
        m
    }] {
        let refused = transfer(d.tcp, "127.0.0.2", &q).await;
        assert_eq!(refused[0].response_code(), ResponseCode::Refused);
        assert!(refused[0].answers().is_empty());
    }
    d.stop().await;
}

/// A zone file of `names` A records, each owner padded so the file is large for its count.
fn big_zone_file(path: &Path, zone: &str, names: usize) -> u64 {
    use std::fmt::Write as _;
    let mut text = format!(
        "$ORIGIN {zone}.\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 60\n@ NS ns\nns A 192.0.2.53\n"
    );
    for i in 0..names {
        writeln!(
            text,
            "host-{i:06}-padding-to-make-the-file-larger A 198.51.{}.{}",
            i / 256 % 256,
            i % 256
        )
        .unwrap();
    }
    std::fs::write(path, &text).expect("write zone file");
    text.len() as u64
}

/// `edgedns zone import` of a file over 1 MiB (the API's JSON limit) goes out as one streamed
/// request and lands whole; a file over the server's zone-file limit is refused with the
/// limit named, and changes nothing.
#[tokio::test]
async fn cli_import_streams_a_large_zone_file() {
    let dir = TempDir::new().expect("temp dir");
    let limit = 3 * 1024 * 1024;
    let d = Running::start_with(
        &dir.path().join("data"),
        &["--zonefile-max-bytes", &limit.to_string()],
    )
    .await;
    let zone = "big.example";
    let file = dir.path().join("big.zone");
    let names = 30_000;
    let size = big_zone_file(&file, zone, names);
    assert!(size > 1024 * 1024 && size < limit, "{size} bytes");

    cli::zone(
        &d.api_args,
        ZoneCommand::Import {
            zone: zone.into(),
            file: file.clone(),
        },
    )
    .await
    .expect("zone import");
    let shown = d
        .api
        .json(Method::GET, &format!("/v1/zones/{zone}"), None)
        .await
        .expect("GET zone");
    // Every A record of the file, and the name server's.
    assert_eq!(shown["records"], json!(names + 2), "{shown}");
    let last = names - 1;
    let m = ask_udp(
        d.udp,
        &format!("host-{last:06}-padding-to-make-the-file-larger.{zone}."),
        RecordType::A,
    )
    .await;
    assert_eq!(
        addresses(&m),
        [format!("198.51.{}.{}", last / 256 % 256, last % 256)]
    );

    // Over the limit: the server's 413 reason comes back, the zone stays as it was.
    let huge = dir.path().join("huge.zone");
    let size = big_zone_file(&huge, zone, 2 * names + 20_000);
    assert!(size > limit, "{size} bytes");
    let err = cli::zone(
        &d.api_args,
        ZoneCommand::Import {
            zone: zone.into(),
            file: huge,
        },
    )
    .await
    .expect_err("over the limit");
    assert!(format!("{err:#}").contains("zonefile-max-bytes"), "{err:#}");
    let after = d
        .api
        .json(Method::GET, &format!("/v1/zones/{zone}"), None)
        .await
        .expect("GET zone");
    assert_eq!(after["serial"], shown["serial"], "{after}");
    d.stop().await;
}
