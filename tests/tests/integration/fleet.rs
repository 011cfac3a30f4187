//! The fleet: edges with etcd as the source of truth. A real etcd cluster (3 members) in a
//! namespace of its own, edges in theirs, each with its XDP program on a veth to a client
//! namespace (see `tests::fleet`).

use std::{
    thread,
    time::{Duration, Instant},
};

use tests::{
    etcd::{self, EtcdCluster, Tls},
    fleet::{FleetNet, ETCD_V4},
    require_root, NetNs, TempDir,
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
