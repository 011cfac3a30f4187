//! The fleet: edges with etcd as the source of truth. A real etcd cluster (3 members) in a
//! namespace of its own, edges in theirs, each with its XDP program on a veth to a client
//! namespace (see `tests::fleet`).

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use dns_common::Stat;
use hickory_proto::rr::RecordType;
use serde_json::{json, Value};
use tests::{
    dns_client::{DnsClient, Reply},
    enter_netns,
    etcd::{self, EtcdCluster, Tls},
    fleet::{Edge, FleetNet, HttpReply, ETCD_V4},
    http_client::Http,
    require_root, run_ok, Bpffs, NetNs, Stats, TempDir, API_ADDR, DNS_PORT, SERVER_V4,
};

/// The harness itself: a 3-member cluster survives one member's crash, takes it back, compacts;
/// an edge reaches it over its uplink until the link is cut.
#[test]
fn fleet_harness_etcd_cluster_and_links() {
    require_root();
    let mut net = FleetNet::new(2);
    net.start_etcd(3, None);
    let etcd = net.etcd_mut();
    assert_eq!(etcd.endpoints().len(), 3);
    let r1 = etcd.put(b"/t/a", b"1");
    assert!(etcd.revision() >= r1);

    etcd.kill_member(1);
    let r2 = etcd.put(b"/t/b", b"2");
    assert!(r2 > r1, "a write after a member's crash: {r2} after {r1}");
    etcd.restart_member(1);
    let kvs = etcd.get_prefix(b"/t/");
    let got: Vec<(&[u8], &[u8])> = kvs
        .iter()
        .map(|kv| (kv.key.as_slice(), kv.value.as_slice()))
        .collect();
    assert_eq!(got, [(&b"/t/a"[..], &b"1"[..]), (b"/t/b", b"2")]);
    assert_eq!(kvs[1].mod_revision, r2);
    etcd.compact(r2);
    let r3 = etcd.put(b"/t/a", b"3");
    assert_eq!(etcd.revision(), r3);

    // Each edge reaches every member through its own uplink, until it is cut.
    let urls = net.etcd().endpoints();
    for edge in &net.edges {
        for url in &urls {
            assert!(
                etcd::reachable(&edge.ns, url),
                "{} cannot reach {url}",
                edge.id
            );
        }
    }
    net.edges[0].cut();
    assert!(!etcd::reachable(&net.edges[0].ns, &urls[0]));
    assert!(
        etcd::reachable(&net.edges[1].ns, &urls[0]),
        "cutting edge 0 cut edge 1"
    );
    net.edges[0].reconnect();
    // The first packets after the carrier returns may still be lost (neighbour resolution).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !etcd::reachable(&net.edges[0].ns, &urls[0]) {
        assert!(
            Instant::now() < deadline,
            "edge 0 cannot reach etcd 10 s after reconnecting"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// A TLS cluster takes the client certificate its CA signed, and refuses one from another CA.
#[test]
fn fleet_harness_etcd_tls() {
    require_root();
    let tmp = TempDir::new();
    let ns = NetNs::new("etcd");
    ns.ip(&["addr", "add", &format!("{ETCD_V4}/32"), "dev", "lo"]);
    let tls = Tls::generate(&tmp.path().join("tls"), &[ETCD_V4]);
    let other = Tls::generate(&tmp.path().join("other"), &[ETCD_V4]);
    let etcd = EtcdCluster::start_in(Some(&ns), 1, ETCD_V4, Some(&tls));
    let rev = etcd.put(b"/t/x", b"y");
    assert!(rev > 0);
    let url = &etcd.endpoints()[0];
    assert!(url.starts_with("https://"), "{url}");
    let curl = |t: &Tls| {
        let mut cmd = ns.command("curl");
        cmd.args(["-sS", "-m", "5", "--cacert"])
            .arg(&tls.ca)
            .arg("--cert")
            .arg(&t.client_cert)
            .arg("--key")
            .arg(&t.client_key)
            .arg(format!("{url}/health"));
        tests::run_timeout(&mut cmd, Duration::from_secs(10)).expect("curl runs")
    };
    let good = curl(&tls);
    assert!(good.stdout.contains("\"health\":\"true\""), "{good:?}");
    let bad = curl(&other);
    assert!(
        !bad.success(),
        "a client certificate of another CA was taken: {bad:?}"
    );
    drop(etcd);
}

// ---------------------------------------------------------------------------------------------
// The daemon as an edge

/// The zone the fleet tests serve, created through edge 0.
const FZONE: &str = "f.example.net";
/// A short lease, so that a dead or cut-off edge drops out within seconds.
const LEASE: Duration = Duration::from_secs(2);
/// How long an edge may take to become ready, or to catch up after a restart or reconnect.
const CATCH_UP: Duration = Duration::from_secs(30);

/// A 3-member etcd cluster and `edges` edges serving as a fleet (`--etcd`, `--lease-ttl 2`,
/// then `extra`), all ready, with [`FZONE`] created through edge 0.
fn fleet(edges: usize, extra: &[&str]) -> FleetNet {
    fleet_with_lease(edges, LEASE, extra)
}

/// [`fleet`] with another lease.
fn fleet_with_lease(edges: usize, lease: Duration, extra: &[&str]) -> FleetNet {
    let mut net = FleetNet::new(edges);
    net.start_etcd(3, None);
    let urls = net.etcd().endpoints_arg();
    let lease = lease.as_secs().to_string();
    let mut args = vec!["--etcd", &urls, "--lease-ttl", &lease, "--no-pin"];
    args.extend_from_slice(extra);
    for e in &mut net.edges {
        e.start(&args);
    }
    for e in &mut net.edges {
        e.wait_ready(CATCH_UP);
    }
    create_fzone(&net.edges[0]);
    net
}

/// Creates [`FZONE`] through `edge` (201, or 200 if it is there already).
fn create_fzone(edge: &Edge) {
    let r = edge.http(
        "POST",
        "/v1/zones",
        Some(&json!({"zone": FZONE, "ns": [format!("ns1.{FZONE}")]}).to_string()),
        &[],
    );
    assert!(
        r.status == 200 || r.status == 201,
        "creating {FZONE}: {} {}",
        r.status,
        r.body
    );
}

fn put_path(name: &str) -> String {
    format!("/v1/zones/{FZONE}/records/{name}/A")
}

/// `PUT` of `name` A `addr` through `edge`, with `headers`.
fn put(edge: &Edge, name: &str, addr: &str, headers: &[(&str, &str)]) -> HttpReply {
    let body = json!({"ttl": 60, "records": [addr]}).to_string();
    edge.http("PUT", &put_path(name), Some(&body), headers)
}

/// [`put`], which must answer 200 with the revision header; returns the revision.
fn put_ok(edge: &Edge, name: &str, addr: &str) -> u64 {
    let r = put(edge, name, addr, &[]);
    assert_eq!(r.status, 200, "PUT {name} through {}: {}", edge.id, r.body);
    revision_of(&r)
}

fn revision_of(r: &HttpReply) -> u64 {
    r.header("x-edgedns-revision")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no X-Edgedns-Revision in {:?}", r.headers))
}

/// What `edge` answers for `name` A: the status and the addresses.
fn answer(edge: &Edge, name: &str) -> (String, Vec<String>) {
    let a = edge.dig(&format!("{name}.{FZONE}"), "A");
    let addrs = a.rdata("A").into_iter().map(str::to_owned).collect();
    (a.status, addrs)
}

/// Waits (bounded) until `f` holds, polling every 100 ms; panics with `what` and the last
/// value otherwise.
fn wait_until<T: std::fmt::Debug>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> (bool, T),
) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let (ok, v) = f();
        if ok {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {timeout:?}; last: {v:?}"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// The edge ids `GET /v1/edges` (asked of `edge`) lists as live.
fn live_edges(edge: &Edge) -> Vec<String> {
    let r = edge.http("GET", "/v1/edges", None, &[]);
    assert_eq!(r.status, 200, "GET /v1/edges: {}", r.body);
    let v = r.json();
    let mut ids: Vec<String> = v["edges"]
        .as_array()
        .unwrap_or_else(|| panic!("no edges array: {v}"))
        .iter()
        .filter(|e| e["live"].as_bool() == Some(true))
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

/// The zone's RRsets as `edge`'s API lists them (SOA left out: the serial is the edge's own
/// business), for comparing edges.
fn zone_records(edge: &Edge) -> Vec<Value> {
    let r = edge.http(
        "GET",
        &format!("/v1/zones/{FZONE}/records?limit=1000"),
        None,
        &[],
    );
    assert_eq!(r.status, 200, "GET records from {}: {}", edge.id, r.body);
    let v = r.json();
    v["records"]
        .as_array()
        .unwrap_or_else(|| panic!("no records array: {v}"))
        .iter()
        .filter(|rr| rr["type"] != "SOA")
        .cloned()
        .collect()
}

/// In-process DNS clients, one per edge, each socket made in that edge's client namespace.
fn clients(net: &FleetNet) -> Vec<DnsClient> {
    let names: Vec<String> = net
        .edges
        .iter()
        .map(|e| e.client.name().to_owned())
        .collect();
    thread::spawn(move || {
        names
            .iter()
            .map(|ns| {
                enter_netns(ns).expect("enter the client namespace");
                let server = format!("{SERVER_V4}:{DNS_PORT}").parse().expect("address");
                DnsClient::new(server, Duration::from_secs(2)).expect("client socket")
            })
            .collect()
    })
    .join()
    .expect("client thread")
}

/// A keep-alive API client connected to `edge`'s API from inside its namespace.
fn api(edge: &Edge) -> Http {
    let ns = edge.ns.name().to_owned();
    thread::spawn(move || {
        enter_netns(&ns).expect("enter the edge namespace");
        let mut http = Http::new(API_ADDR.parse().expect("address"), Duration::from_secs(15));
        let (code, body) = http.request("GET", "/healthz", None).expect("API answers");
        assert_eq!(code, 200, "{body}");
        http
    })
    .join()
    .expect("API thread")
}

/// A PUT through edge A returns 200 only once every edge has the name: the first query to each
/// edge right after the 200 is answered from its maps, 200 times over.
#[test]
fn fleet_put_is_answered_at_xdp_on_every_edge_right_after_200() {
    let net = fleet(3, &[]);
    let mut dns = clients(&net);
    let mut http = api(&net.edges[0]);
    let before: Vec<Stats> = net.edges.iter().map(Edge::stats).collect();
    let rounds = 200u32;
    let mut misses = Vec::new();
    for k in 0..rounds {
        let name = format!("n{k}");
        let addr = format!("198.51.100.{}", k % 250 + 1);
        let body = json!({"ttl": 60, "records": [addr]}).to_string();
        let (code, resp) = http
            .request("PUT", &put_path(&name), Some(&body))
            .expect("API answers");
        assert_eq!(code, 200, "PUT {name}: {resp}");
        for (e, c) in dns.iter_mut().enumerate() {
            let got = c.query(&format!("{name}.{FZONE}"), RecordType::A);
            let want = Reply::Answer {
                rcode: "NoError".into(),
                addrs: vec![addr.clone()],
            };
            if got != want {
                misses.push(format!("edge-{e} {name}: {got:?}"));
            }
        }
    }
    assert!(misses.is_empty(), "{} misses: {misses:#?}", misses.len());
    // The other two edges told edge-0 straight (their acks forwarded by the etcd namespace),
    // not through etcd.
    let metrics = net.edges[0].http("GET", "/metrics", None, &[]).body;
    let acks = crate::metrics::metric(&metrics, "edgedns_fleet_acks_received_total");
    assert!(
        acks >= f64::from(2 * rounds),
        "{acks} acks for {rounds} writes"
    );
    // Every one of those first queries was answered by the XDP program: its answer counter grew
    // by at least one per round and it passed nothing up meanwhile.
    for (edge, before) in net.edges.iter().zip(&before) {
        let after = edge.stats();
        let answered = after.delta(before, Stat::AnsweredAnswer);
        assert!(
            answered >= u64::from(rounds),
            "{}: XDP answered {answered} of {rounds}",
            edge.id
        );
        // `ipv6_ext` is left out: it counts any IPv6 frame with extension headers, such as the
        // MLD reports the interfaces send on their own, at random times after they come up.
        let passed: Vec<(&str, u64)> = after
            .counters
            .iter()
            .filter(|((metric, reason), _)| metric == "passed" && reason != "ipv6_ext")
            .map(|((_, reason), v)| {
                let was = before
                    .counters
                    .get(&("passed".to_owned(), reason.clone()))
                    .copied()
                    .unwrap_or(0);
                (reason.as_str(), v - was)
            })
            .filter(|(_, n)| *n > 0)
            .collect();
        assert!(
            passed.is_empty(),
            "{} passed queries up to the fallback: {passed:?}",
            edge.id
        );
    }
}

/// An etcd member's crash stops nothing: writes through every edge go on and are confirmed.
#[test]
fn fleet_etcd_member_crash_keeps_writes_going() {
    let mut net = fleet(3, &[]);
    // Each member in turn, so that every edge loses the member its watches and its lease's
    // keep-alive stream went to (and the leader is among them): the edge carries on through
    // the others, its lease and registration intact, and writes are confirmed (200) throughout.
    for member in [2, 0, 1] {
        net.etcd_mut().kill_member(member);
        for k in 0..4 {
            for e in &net.edges {
                let name = format!("m{member}-{k}-{}", e.index);
                put_ok(e, &name, "192.0.2.4");
                for other in &net.edges {
                    assert_eq!(
                        answer(other, &name),
                        ("NOERROR".into(), vec!["192.0.2.4".into()]),
                        "{} after member {member} died",
                        other.id
                    );
                }
            }
        }
        net.etcd_mut().restart_member(member);
    }
}

/// An edge whose daemon dies with its XDP program left answering (`--keep-xdp`) goes on
/// answering the names it has, but denies none once its lease can have run out: the fleet's
/// writes stop waiting for it then, and a name created since must not get NXDOMAIN there.
#[test]
fn fleet_crashed_keep_xdp_edge_denies_no_name_once_its_lease_can_have_run_out() {
    require_root();
    // Declared before the fleet, so the pins (and the program they hold) go after it.
    let tmp = TempDir::new();
    let pins = Bpffs::mount(&tmp.path().join("bpffs"));
    let mut net = FleetNet::new(2);
    net.start_etcd(3, None);
    let urls = net.etcd().endpoints_arg();
    let lease = LEASE.as_secs().to_string();
    let bpffs = pins.path().display().to_string();
    let args = ["--etcd", &urls, "--lease-ttl", &lease];
    net.edges[0].start(&[&args[..], &["--no-pin"]].concat());
    net.edges[1].start(&[&args[..], &["--bpffs", &bpffs, "--keep-xdp"]].concat());
    for e in &mut net.edges {
        e.wait_ready(CATCH_UP);
    }
    create_fzone(&net.edges[0]);
    put_ok(&net.edges[0], "kept", "192.0.2.7");
    let mut dns = clients(&net);
    let kept = Reply::Answer {
        rcode: "NoError".into(),
        addrs: vec!["192.0.2.7".into()],
    };
    let nxdomain = Reply::Answer {
        rcode: "NXDomain".into(),
        addrs: vec![],
    };
    let ask = |dns: &mut Vec<DnsClient>, name: &str| {
        dns[1].query(&format!("{name}.{FZONE}"), RecordType::A)
    };
    assert_eq!(ask(&mut dns, "kept"), kept);
    assert_eq!(ask(&mut dns, "missing"), nxdomain);

    net.edges[1].kill();
    wait_until(LEASE * 5, "edge-1 drops out of GET /v1/edges", || {
        let live = live_edges(&net.edges[0]);
        (!live.contains(&"edge-1".to_owned()), live)
    });
    // Writes no longer wait for edge-1.
    put_ok(&net.edges[0], "created", "192.0.2.8");
    for name in ["created", "missing"] {
        let got = ask(&mut dns, name);
        assert_eq!(
            got,
            Reply::Timeout,
            "{name}: a dead edge's program denied it"
        );
    }
    // What it has, it still answers from its maps.
    assert_eq!(ask(&mut dns, "kept"), kept);
}

/// An edge's crash drops it from the live edges after its lease and writes go on confirmed by
/// the others; restarted, it reconciles every kind of change it missed (add, replace, remove)
/// and is live again.
#[test]
fn fleet_edge_crash_and_restart() {
    let mut net = fleet(3, &[]);
    put_ok(&net.edges[0], "keep", "192.0.2.1");
    put_ok(&net.edges[0], "replace", "192.0.2.2");
    put_ok(&net.edges[0], "remove", "192.0.2.3");

    net.edges[2].kill();
    let live = wait_until(LEASE * 5, "edge-2 drops out of GET /v1/edges", || {
        let live = live_edges(&net.edges[0]);
        (!live.contains(&"edge-2".to_owned()), live)
    });
    assert_eq!(live, ["edge-0", "edge-1"]);
    put_ok(&net.edges[0], "added", "192.0.2.5");
    put_ok(&net.edges[1], "replace", "192.0.2.22");
    let r = net.edges[0].http("DELETE", &put_path("remove"), None, &[]);
    assert_eq!(r.status, 200, "DELETE: {}", r.body);

    net.edges[2].start_again();
    net.edges[2].wait_ready(CATCH_UP);
    let c = &net.edges[2];
    assert_eq!(
        answer(c, "keep"),
        ("NOERROR".into(), vec!["192.0.2.1".into()])
    );
    assert_eq!(
        answer(c, "added"),
        ("NOERROR".into(), vec!["192.0.2.5".into()])
    );
    assert_eq!(
        answer(c, "replace"),
        ("NOERROR".into(), vec!["192.0.2.22".into()])
    );
    assert_eq!(answer(c, "remove").0, "NXDOMAIN");
    assert_eq!(zone_records(c), zone_records(&net.edges[0]));
    wait_until(CATCH_UP, "edge-2 live again", || {
        let live = live_edges(&net.edges[0]);
        (live.len() == 3, live)
    });
    // And it confirms writes again.
    put_ok(&net.edges[0], "back", "192.0.2.6");
    assert_eq!(
        answer(c, "back"),
        ("NOERROR".into(), vec!["192.0.2.6".into()])
    );
}

/// An edge whose revision was compacted away while it was stopped re-reads everything on start
/// and ends exactly equal to the others.
#[test]
fn fleet_compaction_while_an_edge_is_stopped() {
    let mut net = fleet(3, &[]);
    for k in 0..5 {
        put_ok(&net.edges[0], &format!("old{k}"), "192.0.2.1");
    }
    net.edges[2].stop();
    wait_until(LEASE * 5, "edge-2 drops out", || {
        let live = live_edges(&net.edges[0]);
        (live.len() == 2, live)
    });
    for k in 0..5 {
        put_ok(&net.edges[0], &format!("new{k}"), "192.0.2.2");
    }
    put_ok(&net.edges[0], "old0", "192.0.2.9");
    let r = net.edges[0].http("DELETE", &put_path("old1"), None, &[]);
    assert_eq!(r.status, 200, "{}", r.body);
    let rev = net.etcd().revision();
    net.etcd().compact(rev);

    net.edges[2].start_again();
    net.edges[2].wait_ready(CATCH_UP);
    let (a, c) = (&net.edges[0], &net.edges[2]);
    assert_eq!(zone_records(c), zone_records(a));
    assert_eq!(
        answer(c, "new4"),
        ("NOERROR".into(), vec!["192.0.2.2".into()])
    );
    assert_eq!(
        answer(c, "old0"),
        ("NOERROR".into(), vec!["192.0.2.9".into()])
    );
    assert_eq!(answer(c, "old1").0, "NXDOMAIN");
}

/// Cut off from etcd, an edge answers as before within its lease; after it, a miss in its zones
/// is SERVFAIL (its "no such name" may be stale) while hits still answer; reconnected, it
/// catches up and answers misses normally again.
#[test]
fn fleet_partition_then_reconnect() {
    let net = fleet(3, &[]);
    put_ok(&net.edges[0], "there", "192.0.2.1");
    let c = &net.edges[2];
    assert_eq!(answer(c, "missing").0, "NXDOMAIN");
    c.cut();
    let cut_at = Instant::now();
    assert_eq!(
        answer(c, "there"),
        ("NOERROR".into(), vec!["192.0.2.1".into()])
    );
    if cut_at.elapsed() < LEASE {
        assert_eq!(
            answer(c, "missing").0,
            "NXDOMAIN",
            "stale before its lease ran out"
        );
    }
    wait_until(LEASE * 5, "misses get SERVFAIL on the cut-off edge", || {
        let a = answer(c, "missing");
        (a.0 == "SERVFAIL", a)
    });
    assert_eq!(
        answer(c, "there"),
        ("NOERROR".into(), vec!["192.0.2.1".into()])
    );
    // A write to the cut-off edge gets its 503 at once (it sends nothing to etcd, so nothing
    // can land later), not after a transaction's timeout and the lease's end.
    let data = || net.etcd().get_prefix(b"/edgedns/v1/data/");
    let before = data();
    let sent = Instant::now();
    let r = put(c, "refused", "192.0.2.9", &[]);
    let took = sent.elapsed();
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.json()["error"].is_string(), "{}", r.body);
    assert!(took < Duration::from_secs(3), "503 after {took:?}");
    assert_eq!(data(), before, "the refused write reached etcd");
    // The others go on without it (once it is not live, writes don't wait for it).
    wait_until(LEASE * 5, "edge-2 drops out", || {
        let live = live_edges(&net.edges[0]);
        (live.len() == 2, live)
    });
    put_ok(&net.edges[0], "while-cut", "192.0.2.2");

    c.reconnect();
    wait_until(
        CATCH_UP,
        "the reconnected edge has the write it missed",
        || {
            let a = answer(c, "while-cut");
            (a == ("NOERROR".into(), vec!["192.0.2.2".into()]), a)
        },
    );
    wait_until(CATCH_UP, "misses are NXDOMAIN again", || {
        let a = answer(c, "missing");
        (a.0 == "NXDOMAIN", a)
    });
    for e in &net.edges {
        assert_eq!(answer(e, "refused").0, "NXDOMAIN", "{}", e.id);
    }
}

/// A write that a live edge cannot confirm within `--confirm-wait-ms` gets 202 with a change
/// id naming it; the change turns INSYNC once the edge has it.
#[test]
fn fleet_unconfirmed_write_is_202_then_insync() {
    // A lease long enough that the frozen edge stays live through the write.
    let net = fleet_with_lease(3, Duration::from_secs(10), &["--confirm-wait-ms", "500"]);
    let c = &net.edges[2];
    let pid = c.daemon().process.pid().to_string();
    run_ok(Command::new("kill").args(["-STOP", &pid]));
    let r = put(&net.edges[0], "slow", "192.0.2.7", &[]);
    run_ok(Command::new("kill").args(["-CONT", &pid]));
    assert_eq!(r.status, 202, "{}", r.body);
    let v = r.json();
    assert_eq!(v["status"], "PENDING", "{v}");
    assert_eq!(v["behind"], json!(["edge-2"]), "{v}");
    let id = v["change_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no change_id: {v}"))
        .to_owned();
    assert_eq!(id, revision_of(&r).to_string());
    let change = wait_until(CATCH_UP, "the change turns INSYNC", || {
        let r = net.edges[1].http("GET", &format!("/v1/changes/{id}"), None, &[]);
        (
            r.status == 200 && r.json()["status"] == "INSYNC",
            (r.status, r.body),
        )
    });
    eprintln!("change {id}: {change:?}");
    assert_eq!(
        answer(c, "slow"),
        ("NOERROR".into(), vec!["192.0.2.7".into()])
    );
}

/// Bad input changes nothing: a batch over etcd's limits (413), a stale precondition (409).
#[test]
fn fleet_refusals_write_nothing() {
    let net = fleet(3, &[]);
    let a = &net.edges[0];
    let data = || net.etcd().get_prefix(b"/edgedns/v1/data/");
    let before = data();

    let changes: Vec<Value> = (0..129)
        .map(|k| json!({"op": "set", "name": format!("b{k}"), "type": "A", "ttl": 60, "records": ["192.0.2.1"]}))
        .collect();
    let r = a.http(
        "POST",
        &format!("/v1/zones/{FZONE}/changes"),
        Some(&json!({ "changes": changes }).to_string()),
        &[],
    );
    assert_eq!(r.status, 413, "{}", r.body);
    let reason = r.json()["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        reason.contains("128"),
        "the reason names the limit: {reason}"
    );
    assert_eq!(data(), before, "the refused batch wrote to etcd");
    assert_eq!(answer(a, "b0").0, "NXDOMAIN");

    let rev = put_ok(a, "guarded", "192.0.2.1");
    put_ok(&net.edges[1], "guarded", "192.0.2.2");
    let r = put(
        a,
        "guarded",
        "192.0.2.3",
        &[("If-Match", &format!("\"{rev}\""))],
    );
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.json()["error"].is_string(), "{}", r.body);
    for e in &net.edges {
        assert_eq!(
            answer(e, "guarded"),
            ("NOERROR".into(), vec!["192.0.2.2".into()])
        );
    }
    let current = net.etcd().revision();
    let r = put(
        a,
        "guarded",
        "192.0.2.4",
        &[("If-Match", &format!("\"{current}\""))],
    );
    assert_eq!(r.status, 200, "a current precondition: {}", r.body);
}

/// etcd out of reach at write time: 503 with a reason, and nothing written, then or later.
#[test]
fn fleet_etcd_unreachable_at_write_is_503_and_nothing_written() {
    let net = fleet(3, &[]);
    let a = &net.edges[0];
    let data = || net.etcd().get_prefix(b"/edgedns/v1/data/");
    let before = data();
    a.cut();
    let sent = Instant::now();
    let r = put(a, "unreachable", "192.0.2.5", &[]);
    // Cut during its lease: the 503 waits until the lease has surely run out.
    eprintln!("503 after {:?}", sent.elapsed());
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.json()["error"].is_string(), "{}", r.body);
    a.reconnect();
    // Long enough for anything the edge still held to reach etcd once the link is back.
    thread::sleep(LEASE * 2);
    assert_eq!(data(), before, "the write refused with 503 reached etcd");
    for e in &net.edges[1..] {
        assert_eq!(answer(e, "unreachable").0, "NXDOMAIN", "{}", e.id);
    }
    wait_until(CATCH_UP, "edge-0 back after the cut", || {
        let a = answer(a, "unreachable");
        (a.0 == "NXDOMAIN", a)
    });
}

/// etcd over TLS with client certificates: an edge with the CA, its certificate and key works.
#[test]
fn fleet_etcd_over_tls() {
    require_root();
    let mut net = FleetNet::new(2);
    let tls = Tls::generate(&net.tmp.path().join("tls"), &[ETCD_V4]);
    net.start_etcd(3, Some(&tls));
    let urls = net.etcd().endpoints_arg();
    assert!(urls.starts_with("https://"), "{urls}");
    let args = tls_args(&urls, &tls, &tls);
    let good: Vec<&str> = args.iter().map(String::as_str).collect();
    net.edges[0].start(&good);
    net.edges[0].wait_ready(CATCH_UP);
    create_fzone(&net.edges[0]);
    put_ok(&net.edges[0], "tls", "192.0.2.8");
    assert_eq!(
        answer(&net.edges[0], "tls"),
        ("NOERROR".into(), vec!["192.0.2.8".into()])
    );
}

/// `serve` arguments for etcd over TLS: `ca` to trust the server, `client`'s certificate and key.
fn tls_args(urls: &str, ca: &Tls, client: &Tls) -> Vec<String> {
    vec![
        "--etcd".into(),
        urls.to_owned(),
        "--no-pin".into(),
        "--etcd-ca".into(),
        ca.ca.display().to_string(),
        "--etcd-cert".into(),
        client.client_cert.display().to_string(),
        "--etcd-key".into(),
        client.client_key.display().to_string(),
    ]
}

/// A client certificate etcd refuses (another CA's) is a start-up error that says so.
#[test]
fn fleet_etcd_bad_client_certificate_is_a_start_up_error() {
    require_root();
    let mut net = FleetNet::new(1);
    let tls = Tls::generate(&net.tmp.path().join("tls"), &[ETCD_V4]);
    let other = Tls::generate(&net.tmp.path().join("other"), &[ETCD_V4]);
    net.start_etcd(1, Some(&tls));
    let urls = net.etcd().endpoints_arg();
    let bad = tls_args(&urls, &tls, &other);
    let bad: Vec<&str> = bad.iter().map(String::as_str).collect();
    let (status, out) = net.edges[0].start_failing(&bad, Duration::from_secs(60));
    let status = status.unwrap_or_else(|| panic!("still running 60 s after start:\n{out}"));
    assert!(!status.success(), "started with a bad certificate:\n{out}");
    let lower = out.to_ascii_lowercase();
    assert!(
        lower.contains("etcd")
            && ["certificate", "tls", "handshake"]
                .iter()
                .any(|w| lower.contains(w)),
        "the error does not say etcd refused the certificate:\n{out}"
    );
}
