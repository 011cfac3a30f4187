//! `/metrics` with the real fast path: what XDP answers is counted under the same
//! `edgedns_responses_total{path, transport, rcode, qtype}` labels as the fallback's answers, in
//! step with the XDP program's own counters, so that totals by query type over both paths are the
//! queries sent; and `edgedns_fast_path_enabled` follows the config map's `enabled`, which is what
//! the XDP program obeys.

use std::collections::BTreeMap;

use aya::maps::{Array, Map, MapData};
use dns_common::{map, XdpConfig};
use tests::{dig, edgedns_bin, Bpffs, Daemon, NetNs, TempDir, DEMO_NAME, DNS_PORT};

/// `/metrics`' value of `series` (name and labels as printed).
pub(crate) fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// Every sample of `name` in `/metrics`: its labels (name to value) and its value.
fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix('{')?;
            let (labels, value) = rest.rsplit_once("} ")?;
            let labels = labels
                .split(',')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            Some((labels, value.parse().ok()?))
        })
        .collect()
}

/// `edgedns_responses_total` summed by the values of `label`, over the samples whose labels
/// include every pair of `only`.
fn responses_by(text: &str, label: &str, only: &[(&str, &str)]) -> BTreeMap<String, f64> {
    let mut by = BTreeMap::new();
    for (labels, v) in samples(text, "edgedns_responses_total") {
        if only
            .iter()
            .all(|(k, want)| labels.get(*k).map(String::as_str) == Some(*want))
        {
            let key = labels
                .get(label)
                .unwrap_or_else(|| panic!("a response without {label}: {labels:?}"));
            *by.entry(key.clone()).or_default() += v;
        }
    }
    by
}

/// `after - before`, per key, leaving out keys that did not move.
fn grew(before: &BTreeMap<String, f64>, after: &BTreeMap<String, f64>) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, d)| *d != 0.0)
        .collect()
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
    let (code, before) = daemon.http("GET", "/metrics", None);
    assert_eq!(code, 200, "{before}");

    // A mix of types and outcomes: A and AAAA the fast path answers (an answer, NODATA,
    // NXDOMAIN), TXT it passes up, and an A over TCP, which only the fallback serves.
    let nx = "nope.t.example.net.";
    let mix: [(&str, &str, &str, usize); 5] = [
        (DEMO_NAME, "A", "NOERROR", 5),
        (nx, "A", "NXDOMAIN", 2),
        (DEMO_NAME, "AAAA", "NOERROR", 4),
        (nx, "AAAA", "NXDOMAIN", 1),
        (DEMO_NAME, "TXT", "NOERROR", 3),
    ];
    let mut sent: BTreeMap<String, f64> = BTreeMap::new();
    for (name, rtype, status, times) in mix {
        for _ in 0..times {
            let a = dig(&ns, "127.0.0.1", DNS_PORT, name, rtype);
            assert_eq!(a.status, status, "{name} {rtype}: {}", a.raw);
            *sent.entry(rtype.to_owned()).or_default() += 1.0;
        }
    }
    let tcp = tests::Tool::Dig
        .try_query(&ns, "127.0.0.1", DNS_PORT, DEMO_NAME, "A", &["+tcp"])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(tcp.status, "NOERROR");
    *sent.entry("A".to_owned()).or_default() += 1.0;

    let (code, text) = daemon.http("GET", "/metrics", None);
    assert_eq!(code, 200, "{text}");
    let value = |series: &str| metric(&text, series);
    assert_eq!(value("edgedns_fast_path_attached"), 1.0);
    assert_eq!(value("edgedns_fast_path_enabled"), 1.0);

    // Totals by query type over both paths are the queries sent, type by type.
    let by_qtype = grew(
        &responses_by(&before, "qtype", &[]),
        &responses_by(&text, "qtype", &[]),
    );
    assert_eq!(by_qtype, sent, "{text}");
    // The fast path answered some of them, and never a type it doesn't serve.
    let xdp = [("path", "xdp")];
    let xdp_by_qtype = grew(
        &responses_by(&before, "qtype", &xdp),
        &responses_by(&text, "qtype", &xdp),
    );
    assert!(xdp_by_qtype.get("A").is_some_and(|n| *n >= 1.0), "{text}");
    assert!(
        xdp_by_qtype.get("AAAA").is_some_and(|n| *n >= 1.0),
        "{text}"
    );
    assert!(
        xdp_by_qtype
            .keys()
            .all(|t| ["A", "AAAA", "CNAME"].contains(&t.as_str())),
        "{xdp_by_qtype:?}"
    );
    let tcp_only = grew(
        &responses_by(&before, "qtype", &[("transport", "tcp")]),
        &responses_by(&text, "qtype", &[("transport", "tcp")]),
    );
    assert_eq!(tcp_only, BTreeMap::from([("A".to_owned(), 1.0)]));
    let txt = [("path", "fallback"), ("qtype", "TXT")];
    assert_eq!(
        grew(
            &responses_by(&before, "rcode", &txt),
            &responses_by(&text, "rcode", &txt)
        ),
        BTreeMap::from([("NOERROR".to_owned(), 3.0)])
    );

    // The fast path's responses by RCODE are its own counters by kind of answer.
    let xdp_by_rcode = responses_by(&text, "rcode", &xdp);
    let answered = |kind: &str| value(&format!("edgedns_xdp_answered_total{{kind=\"{kind}\"}}"));
    assert!(answered("nxdomain") >= 1.0, "{text}");
    assert!(answered("nodata") >= 1.0, "{text}");
    assert_eq!(
        xdp_by_rcode.get("NOERROR").copied(),
        Some(answered("answer") + answered("nodata")),
        "{text}"
    );
    assert_eq!(
        xdp_by_rcode.get("NXDOMAIN").copied(),
        Some(answered("nxdomain")),
        "{text}"
    );
    assert_eq!(xdp_by_rcode.len(), 2, "{text}");

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
