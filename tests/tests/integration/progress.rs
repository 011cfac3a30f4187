//! Progress with the real fast path: a daemon started on a store of 200,000 records fills the
//! XDP maps and logs `progress` lines for it (JSON fields `stage`, `done`, `total`, `rate`,
//! `eta_s`, `finished`) while it runs and when it ends; and a zone file of 200,000 records loaded
//! with `--zone-file` at start, or one of 20,000 through the API (`edgedns zone import`), logs
//! its reading and its map fill the same way.

use std::{
    fs,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{edgedns_bin, run_timeout, NetNs, Process, TempDir};

const RECORDS: u64 = 200_000;

/// The zone imported through the API: smaller (the test's time goes to the 200,000 at start),
/// still several reports' worth at one per 4096 records.
const API_RECORDS: u64 = 20_000;

/// Generous: a shared machine, a 200,000-record import on the first start.
const START: Duration = Duration::from_secs(90);

/// `edgedns serve` in `ns` with the fast path on loopback, JSON logs and a progress report
/// every 4096 records (`EDGEDNS_PROGRESS_INTERVAL_MS=0`, `dns_user::progress::INTERVAL_ENV`),
/// waited on until it logs "ready".
fn serve(ns: &NetNs, data: &Path, extra: &[&str], log: &Path) -> Process {
    let mut cmd = ns.command(edgedns_bin());
    cmd.arg("serve")
        .args(["--xdp-mode", "generic", "--no-pin"])
        .args(["--dns-listen", "127.0.0.1:53", "--log-format", "json"])
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .env("RUST_LOG", "info")
        .env(dns_user::progress::INTERVAL_ENV, "0");
    let mut p = Process::spawn("edgedns serve", cmd, log.to_owned());
    let deadline = Instant::now() + START;
    while !p.log_text().contains("\"message\":\"ready\"") {
        p.assert_running();
        assert!(Instant::now() < deadline, "not ready in {START:?}");
        thread::sleep(Duration::from_millis(200));
    }
    p
}

/// A zone of `records` records at `origin`: the SOA, one NS, and A records.
fn big_zone(origin: &str, records: u64) -> String {
    let mut text =
        format!("$ORIGIN {origin}\n$TTL 300\n@ SOA ns hostmaster 1 3600 600 86400 60\n@ NS ns\n");
    for i in 0..records - 2 {
        text.push_str(&format!(
            "h{i} A 10.{}.{}.{}\n",
            i >> 16,
            (i >> 8) & 255,
            i & 255
        ));
    }
    text
}

/// The `progress` lines of `stage` in the JSON log at `log`.
fn stage_lines(log: &Path, stage: &str) -> Vec<Value> {
    fs::read_to_string(log)
        .expect("the log")
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &Value| v["message"] == "progress" && v["stage"] == stage)
        .collect()
}

/// `stage` of a load of a zone of `records` records ran once in the log at `log`: at least two
/// lines part way, with counts growing and below the total, then one at the end with the total
/// (names, or entries: records and directives).
fn assert_reported_midway(log: &Path, stage: &str, records: u64) {
    assert_reported_midway_of(log, stage, records - 1..=records + 2);
}

/// [`assert_reported_midway`] with the total in `want` (the bytes of a streamed upload).
fn assert_reported_midway_of(log: &Path, stage: &str, want: std::ops::RangeInclusive<u64>) {
    let lines = stage_lines(log, stage);
    let (last, midway) = lines
        .split_last()
        .unwrap_or_else(|| panic!("no {stage:?} progress in {}", log.display()));
    assert_eq!(last["finished"], true, "{lines:#?}");
    let total = last["total"].as_u64().expect("a total");
    assert!(want.contains(&total), "{last}");
    assert_eq!(last["done"].as_u64(), Some(total), "{last}");
    let counts: Vec<u64> = midway
        .iter()
        .map(|v| {
            assert_eq!(v["finished"], false, "{stage}: {v}");
            assert!(v["rate"].as_u64().is_some(), "{v}");
            assert!(v["eta_s"].as_u64().is_some(), "{v}");
            v["done"].as_u64().expect("a count")
        })
        .collect();
    assert!(counts.len() >= 2, "{stage}: {lines:#?}");
    assert!(
        counts.windows(2).all(|w| w[0] < w[1]) && counts.last() < Some(&total),
        "{stage}: counts {counts:?} of {total}"
    );
}

#[test]
fn start_up_and_zone_file_loads_report_progress() {
    let tmp = TempDir::new();
    let zone = tmp.path().join("big.zone");
    fs::write(&zone, big_zone("big.example.", RECORDS)).expect("write the zone file");
    let ns = NetNs::new("prog");
    let data = tmp.path().join("data");

    // The first start imports the file into the store.
    let zone_arg = zone.to_str().expect("utf-8");
    let mut first = serve(
        &ns,
        &data,
        &["--zone-file", zone_arg],
        &tmp.path().join("1.log"),
    );
    let exit = first.stop();
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
    // Reading the file and filling the maps for its zone both reported part way.
    let first_log = tmp.path().join("1.log");
    assert_reported_midway(&first_log, "reading zone file", RECORDS);
    assert_reported_midway(&first_log, "filling the maps for a zone", RECORDS);

    // The second fills the maps from the store.
    let log = tmp.path().join("2.log");
    let mut second = serve(&ns, &data, &[], &log);
    // An import through the API reports as one at start does.
    let other = tmp.path().join("big2.zone");
    fs::write(&other, big_zone("big2.example.", API_RECORDS)).expect("write the zone file");
    let mut import = ns.command(edgedns_bin());
    import
        .args(["zone", "import", "big2.example."])
        .arg(&other)
        .env_remove("EDGEDNS_TOKEN_FILE");
    let out = run_timeout(&mut import, START).expect("edgedns zone import");
    assert!(
        out.success(),
        "edgedns zone import: {:?}\n{}{}\ndaemon log:\n{}",
        out.status,
        out.stdout,
        out.stderr,
        second.log_text()
    );
    let exit = second.stop();
    assert!(exit.is_some_and(|s| s.success()), "{exit:?}");
    // An upload is parsed as it streams in: its reading is counted in bytes.
    let bytes = fs::metadata(&other).expect("zone file size").len();
    assert_reported_midway_of(&log, "reading zone file", bytes..=bytes);
    assert_reported_midway(&log, "filling the maps for a zone", API_RECORDS);

    let lines = stage_lines(&log, "filling the maps");
    let last = lines.last().expect("progress lines for the map fill");
    assert_eq!(last["finished"], true, "{lines:#?}");
    assert_eq!(last["done"], last["total"], "{last}");
    // Every name of the zone (the apex, ns and the A owners) and of the demo zone.
    let total = last["total"].as_u64().expect("a total");
    assert!(total > RECORDS, "{last}");
    let midway: Vec<&Value> = lines
        .iter()
        .filter(|v| v["finished"] == false && v["done"].as_u64() < Some(total))
        .collect();
    assert!(!midway.is_empty(), "no line before the end: {lines:#?}");
    for v in &midway {
        assert!(v["rate"].as_u64().is_some(), "{v}");
        assert!(v["eta_s"].as_u64().is_some(), "{v}");
    }
}
