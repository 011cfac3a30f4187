//! Several listen addresses and interfaces: the one XDP program, attached to every `--iface`,
//! answers exactly the (address, port) pairs of `--dns-listen` and nothing else; a wildcard
//! listen answers from the address the query was sent to, on the fast path and on the fallback.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use dns_common::Stat;
use hickory_proto::{op::Message, rr::RecordType};
use tests::{
    dig, dns_message::QuerySpec, edgedns_bin, enter_netns, PassGuard, TestBed, Tool, Veth,
    API_ADDR, DEMO_A, DEMO_NAME, DNS_PORT, SERVER_V4, SERVER_V6, ZONE,
};

/// The second veth pair between the bed's namespaces.
const SECOND_SERVER_V4: &str = "10.213.0.1";
const SECOND_SERVER_V6: &str = "fd00:213::1";
const SECOND_CLIENT_V4: &str = "10.213.0.2";
const SECOND_CLIENT_V6: &str = "fd00:213::2";
/// Another address on the server end of the first pair.
const OTHER_V4: &str = "10.211.0.3";
const OTHER_V6: &str = "fd00:211::3";

/// Sends `name rtype` from the client namespace on a socket `connect`ed to `server`: the kernel
/// delivers only datagrams from exactly that address and port, so an answer sent from another
/// address of the server never arrives. The answer, or `None` after two seconds.
fn connected_query(
    bed: &TestBed,
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
) -> Option<Message> {
    let client = bed.client.name().to_owned();
    let name = name.to_owned();
    std::thread::spawn(move || {
        enter_netns(&client).expect("entering the client namespace");
        let bind = if server.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        };
        let sock = UdpSocket::bind(bind).expect("bind");
        sock.connect(server).expect("connect");
        sock.set_read_timeout(Some(Duration::from_secs(2)))
            .expect("timeout");
        let query = QuerySpec::new(0x4242, &name, u16::from(rtype)).to_wire();
        sock.send(&query).expect("send");
        let mut buf = vec![0u8; 4096];
        let n = sock.recv(&mut buf).ok()?;
        let m = Message::from_vec(&buf[..n]).expect("the answer decodes");
        assert_eq!(m.id(), 0x4242);
        Some(m)
    })
    .join()
    .expect("client thread")
}

fn served(ip: &str) -> SocketAddr {
    SocketAddr::new(ip.parse::<IpAddr>().expect("ip"), DNS_PORT)
}

#[test]
fn two_interfaces_answer_exactly_the_addresses_listened_on() {
    let mut bed = TestBed::network();
    let bin = edgedns_bin();
    let second = Veth::with_addrs(
        &bed.server,
        &bed.client,
        [
            SECOND_SERVER_V4,
            SECOND_SERVER_V6,
            SECOND_CLIENT_V4,
            SECOND_CLIENT_V6,
        ],
    );
    bed.pass = Some(PassGuard::start(
        &bin,
        &bed.client,
        &bed.veth.client_if,
        bed.tmp.path(),
    ));
    let second_logs = bed.tmp.path().join("second");
    std::fs::create_dir_all(&second_logs).expect("log dir");
    let _second_pass = PassGuard::start(&bin, &bed.client, &second.client_if, &second_logs);
    bed.server.ip(&[
        "addr",
        "add",
        &format!("{OTHER_V4}/24"),
        "dev",
        &bed.veth.server_if,
    ]);
    // The addresses and interfaces as lists in the configuration file.
    let config = bed.tmp.path().join("edgedns.toml");
    std::fs::write(
        &config,
        format!(
            "dns-listen = [\"{SERVER_V4}:{DNS_PORT}\", \"[{SECOND_SERVER_V6}]:{DNS_PORT}\"]\n\
             iface = [\"{}\", \"{}\"]\nxdp-mode = \"driver\"\napi-listen = \"{API_ADDR}\"\n",
            bed.veth.server_if, second.server_if
        ),
    )
    .expect("write the configuration");
    let config = config.to_str().expect("utf-8").to_owned();
    bed.set_daemon_args(&["--config", &config]);
    bed.start_daemon();
    let daemon = bed.daemon();

    // Listened on, each on its own interface: answered by the XDP program.
    for server in [SERVER_V4, SECOND_SERVER_V6] {
        let before = daemon.stats();
        let a = dig(&bed.client, server, DNS_PORT, DEMO_NAME, "A");
        let after = daemon.stats();
        assert_eq!(a.rdata("A"), [DEMO_A], "{server}: {}", a.raw);
        assert_eq!(
            after.delta(&before, Stat::AnsweredAnswer),
            1,
            "{server}: not answered by XDP: before {before:?}, after {after:?}"
        );
    }

    // Not listened on, though the interfaces have them (a third address on the first
    // interface, and each interface's other family): neither XDP nor any socket answers.
    // `ipv6_ext` is left out: it counts any IPv6 frame with extension headers, such as the
    // MLD reports the interfaces send on their own.
    let counted = |s: tests::Stats| {
        let mut c = s.counters;
        c.remove(&("passed".to_owned(), "ipv6_ext".to_owned()));
        c
    };
    for server in [OTHER_V4, SERVER_V6, SECOND_SERVER_V4] {
        let before = counted(daemon.stats());
        let got = Tool::Dig.try_query(&bed.client, server, DNS_PORT, DEMO_NAME, "A", &[]);
        let after = counted(daemon.stats());
        assert!(
            got.is_err(),
            "{server} is not listened on, yet answered: {got:?}"
        );
        assert_eq!(
            before, after,
            "{server}: the XDP program counted a query to an address not listened on"
        );
    }
}

#[test]
fn wildcard_answers_from_the_address_asked() {
    let bed = TestBed::with_daemon_on(&format!("[::]:{DNS_PORT}"), &["--udp-workers", "2"]);
    bed.server.ip(&[
        "addr",
        "add",
        &format!("{OTHER_V4}/24"),
        "dev",
        &bed.veth.server_if,
    ]);
    bed.server.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{OTHER_V6}/64"),
        "dev",
        &bed.veth.server_if,
        "nodad",
    ]);
    let daemon = bed.daemon();
    for ip in [OTHER_V4, OTHER_V6, SERVER_V4, SERVER_V6] {
        let server = served(ip);
        // A: the XDP program answers, the addresses swapped.
        let before = daemon.stats();
        let a = connected_query(&bed, server, DEMO_NAME, RecordType::A)
            .unwrap_or_else(|| panic!("no A answer from {server}"));
        let after = daemon.stats();
        assert_eq!(a.answers().len(), 1, "{server}: {a:?}");
        assert_eq!(after.delta(&before, Stat::AnsweredAnswer), 1, "{server}");
        // SOA: passed up; the fallback's wildcard socket answers, from the address asked.
        let soa = connected_query(&bed, server, ZONE, RecordType::SOA).unwrap_or_else(|| {
            panic!("no SOA answer from {server}: the fallback answered from another address?")
        });
        assert_eq!(soa.answers().len(), 1, "{server}: {soa:?}");
        assert_eq!(soa.answers()[0].record_type(), RecordType::SOA);
        // dig, which also checks the source of the answer.
        let d = dig(&bed.client, ip, DNS_PORT, ZONE, "SOA");
        assert_eq!(d.status, "NOERROR", "{}", d.raw);
    }
}
