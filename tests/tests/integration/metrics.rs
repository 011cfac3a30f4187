//! `/metrics` with the real fast path: what XDP answers is counted under the same
//! `edgedns_responses_total{path, transport, rcode}` labels as the fallback's answers, in step with
//! the XDP program's own counters, and the fast path reports itself enabled from its config map.

use tests::{dig, edgedns_bin, Daemon, NetNs, TempDir, DEMO_NAME, DNS_PORT};

#[test]
fn metrics_count_xdp_and_fallback_answers_alike() {
    let tmp = TempDir::new();
    let ns = NetNs::new("met");
    let daemon = Daemon::start(
        &edgedns_bin(),
        &ns,
        &["--xdp-mode", "generic"],
        &tmp.path().join("data"),
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
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
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
}
