//! `/metrics` with the real fast path: what XDP answers is counted under the same
//! `edgedns_responses_total{path, transport, rcode}` labels as the fallback's answers, in step with
//! the XDP program's own counters, and `edgedns_fast_path_enabled` follows the config map's
//! `enabled`, which is what the XDP program obeys.

use aya::maps::{Array, Map, MapData};
use dns_common::{map, XdpConfig};
use tests::{dig, edgedns_bin, Bpffs, Daemon, NetNs, TempDir, DEMO_NAME, DNS_PORT};

/// `/metrics`' value of `series` (name and labels as printed).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[test]
fn metrics_count_xdp_and_fallback_answers_alike() {
    let tmp = TempDir::new();
    // Pins where this test can reach them (see `Bpffs`), to switch the fast path off below.
    let bpffs = Bpffs::mount(&tmp.path().join("bpffs"));
    let ns = NetNs::new("met");
    let data = tmp.path().join("data");
    let daemon = Daemon::start(
        &edgedns_bin(),
        &ns,
        &[
            "--xdp-mode",
            "generic",
            "--bpffs",
            bpffs.path().to_str().expect("utf-8"),
        ],
        &data,
    );
    assert_eq!(
        dig(&ns, "127.0.0.1", DNS_PORT, DEMO_NAME, "A").status,
        "NOERROR"
    );
    let nx = dig(&ns, "127.0.0.1", DNS_PORT, "nope.t.example.net.", "A");
    assert_eq!(nx.status, "NXDOMAIN", "{}", nx.raw);
    // Over TCP: the fallback's.
    let tcp = tests::Tool::Dig
        .try_query(&ns, "127.0.0.1", DNS_PORT, DEMO_NAME, "A", &["+tcp"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tcp.status, "NOERROR");

    let (code, text) = daemon.http("GET", "/metrics", None);
    assert_eq!(code, 200, "{text}");
    let value = |series: &str| metric(&text, series);
    assert_eq!(value("edgedns_fast_path_attached"), 1.0);
    assert_eq!(value("edgedns_fast_path_enabled"), 1.0);
    let xdp = |rcode: &str| {
        value(&format!(
            "edgedns_responses_total{{path=\"xdp\",transport=\"udp\",rcode=\"{rcode}\"}}"
        ))
    };
    let answered = |kind: &str| value(&format!("edgedns_xdp_answered_total{{kind=\"{kind}\"}}"));
    assert!(xdp("NOERROR") >= 1.0, "{text}");
    assert!(xdp("NXDOMAIN") >= 1.0, "{text}");
    assert_eq!(xdp("NOERROR"), answered("answer") + answered("nodata"));
    assert_eq!(xdp("NXDOMAIN"), answered("nxdomain"));
    assert!(
        value("edgedns_responses_total{path=\"fallback\",transport=\"tcp\",rcode=\"NOERROR\"}")
            >= 1.0,
        "{text}"
    );

    // Switched off the way the engine does it after a failed map write: `enabled` = 0 in the
    // config map. The program then passes everything up, and the gauge follows.
    let pin =
        dns_user::loader::pin_dir(bpffs.path(), &data, &["lo".to_owned()]).join(map::CONFIG.name);
    let map = MapData::from_pin(&pin).unwrap_or_else(|e| panic!("{}: {e}", pin.display()));
    let mut config: Array<MapData, XdpConfig> =
        Array::try_from(Map::Array(map)).expect("CONFIG is an array");
    let mut cfg = config.get(&0, 0).expect("config");
    assert_eq!(cfg.enabled, 1);
    cfg.enabled = 0;
    config.set(0, cfg, 0).expect("switch the fast path off");
    let disabled = "edgedns_xdp_passed_total{reason=\"disabled\"}";
    let before = metric(&daemon.http("GET", "/metrics", None).1, disabled);
    assert_eq!(
        dig(&ns, "127.0.0.1", DNS_PORT, DEMO_NAME, "A").status,
        "NOERROR"
    );
    let (_, text) = daemon.http("GET", "/metrics", None);
    assert_eq!(metric(&text, "edgedns_fast_path_enabled"), 0.0, "{text}");
    assert_eq!(metric(&text, "edgedns_fast_path_attached"), 1.0);
    assert!(metric(&text, disabled) > before, "{text}");
}
