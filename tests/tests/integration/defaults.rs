//! What `cargo xtask run` gives: `edgedns serve` with its defaults (lo, DNS on 127.0.0.1:5300,
//! API on 127.0.0.1:8053, zone t.example.net with the demo record) answers the README's dig.
//! It runs in a fresh namespace, whose own loopback keeps the default ports free.

use tests::{dig, edgedns_bin, Daemon, NetNs, TempDir, DEMO_A, DEMO_NAME, DNS_PORT};

#[test]
fn serve_with_defaults_answers_demo_on_loopback() {
    let bin = edgedns_bin();
    let tmp = TempDir::new();
    let ns = NetNs::new("d");
    let daemon = Daemon::start(
        &bin,
        &ns,
        &["--xdp-mode", "generic"],
        &tmp.path().join("data"),
    );

    let before = daemon.stats();
    let a = dig(&ns, "127.0.0.1", DNS_PORT, DEMO_NAME, "A");
    let after = daemon.stats();

    assert_eq!(a.status, "NOERROR", "{}", a.raw);
    assert_eq!(a.rdata("A"), [DEMO_A], "{}", a.raw);
    eprintln!("counters that moved: {:?}", moved(&before, &after));
}

fn moved(before: &tests::Stats, after: &tests::Stats) -> Vec<String> {
    after
        .counters
        .iter()
        .filter(|(k, v)| before.counters.get(*k) != Some(*v))
        .map(|((metric, label), v)| format!("{metric}.{label}={v}"))
        .collect()
}
