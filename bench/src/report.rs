//! The summary table (stdout) and BENCHMARKS.md, from the results JSON.

use std::fmt::Write as _;

use serde_json::Value;

use crate::servers::Server;

pub fn f(v: &Value) -> Option<f64> {
    v.as_f64()
}

pub fn num(v: Option<f64>, digits: usize) -> String {
    match v {
        Some(x) if x.is_finite() => {
            if digits == 0 {
                group(x.round() as i64)
            } else {
                format!("{x:.digits$}")
            }
        }
        _ => "n/a".into(),
    }
}

fn group(n: i64) -> String {
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

pub fn verdict(ok: Option<bool>) -> &'static str {
    match ok {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

/// The headline table: each speed target, where we stand.
pub fn summary(r: &Value) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| measure | edgedns | compared with | ratio | target | verdict |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---|");
    // 1. Kernel per-answer cost vs the floor.
    let k = &r["kernel"];
    if let Some(row) = k["rows"].as_array().and_then(|a| a.first()) {
        let ratio = f(&row["ratio"]);
        let _ = writeln!(
            s,
            "| per-answer cost in the kernel, A hit (BPF_PROG_TEST_RUN) | {} ns | floor {} ns | {}× | ≤ 2× | {} |",
            num(f(&row["ns"]), 1),
            num(f(&row["floor_ns"]), 1),
            num(ratio, 1),
            verdict(ratio.map(|x| x <= 2.0))
        );
    }
    let w = &r["wire"];
    let cpu_of = |key: &str| f(&w[format!("{key}/threaded")]["cpu"]["ns_per_answer"]);
    if let (Some(e), Some(fl)) = (
        cpu_of("edgedns_xdp"),
        f(&w["floor/threaded"]["cpu"]["ns_per_answer"]),
    ) {
        let _ = writeln!(
            s,
            "| per-answer kernel cost on the wire (veth, NAPI thread CPU) | {} ns | floor {} ns | {}× | ≤ 2× | {} |",
            num(Some(e), 0),
            num(Some(fl), 0),
            num(Some(e / fl), 2),
            verdict(Some(e / fl <= 2.0))
        );
    }
    if let (Some(e), Some(kx)) = (cpu_of("edgedns_xdp"), cpu_of("knot_xdp")) {
        let _ = writeln!(
            s,
            "| server CPU per answer at a fixed rate | {} ns | Knot XDP {} ns | {} | ≤ 1/3 (0.33) | {} |",
            num(Some(e), 0),
            num(Some(kx), 0),
            num(Some(e / kx), 2),
            verdict(Some(e / kx <= 1.0 / 3.0))
        );
    }
    for mode in ["softirq", "threaded"] {
        let a = |key: &str| f(&w[format!("{key}/{mode}")]["answers_per_s"]);
        if let (Some(e), Some(kx)) = (a("edgedns_xdp"), a("knot_xdp")) {
            let capped = generator_capped(w, mode);
            let _ = writeln!(
                s,
                "| answers/s on the wire ({mode} NAPI){} | {} | Knot XDP {} | {}× | ≥ 1.5× | {} |",
                if capped { ", generator-bound" } else { "" },
                num(Some(e), 0),
                num(Some(kx), 0),
                num(Some(e / kx.max(1.0)), 2),
                verdict(Some(e / kx.max(1.0) >= 1.5))
            );
        }
    }
    let u = &r["update"];
    if let Some(p99) = f(&u["edgedns"]["visible"]["p99_ms"]) {
        let kn = f(&u["knot"]["visible_from_zone_commit_start"]["p99_ms"]);
        let _ = writeln!(
            s,
            "| update to visible, p99 (API PUT) | {} ms | Knot zone-commit {} ms | {} | ≤ 1 ms | {} |",
            num(Some(p99), 3),
            num(kn, 3),
            kn.map(|k| format!("{:.2}", p99 / k)).unwrap_or("n/a".into()),
            verdict(Some(p99 <= 1.0))
        );
    }
    let w = &r["writes"];
    if let Some(took) = f(&w["batch"]["took_s"]) {
        let _ = writeln!(
            s,
            "| 10,000-record batch (`POST .../changes`) | {} s | | | ≤ 0.5 s | {} |",
            num(Some(took), 3),
            verdict(Some(took <= 0.5))
        );
    }
    if let Some(p99) = f(&w["batch"]["fallback"]["latency"]["p99_ms"]) {
        let _ = writeln!(
            s,
            "| fallback p99 while the batch runs | {} ms | baseline {} ms | | ≤ 5 ms | {} |",
            num(Some(p99), 3),
            num(f(&w["baseline"]["latency"]["p99_ms"]), 3),
            verdict(Some(p99 <= 5.0))
        );
    }
    if let Some(max) = f(&w["import"]["fallback"]["latency"]["max_ms"]) {
        let names = f(&w["import"]["names"]).unwrap_or(0.0);
        let lost = f(&w["import"]["fallback"]["lost"]).unwrap_or(0.0);
        let _ = writeln!(
            s,
            "| longest fallback wait while a {}-record zone file imports ({} s) | {} ms{} | | | ≤ 5 ms{} | {} |",
            num(Some(names), 0),
            num(f(&w["import"]["took_s"]), 1),
            num(Some(max), 3),
            if lost > 0.0 { format!(", {lost} lost") } else { String::new() },
            if names < 1e6 { " (at 1M)" } else { "" },
            if names < 1e6 {
                "not measured at 1M (--quick)"
            } else {
                verdict(Some(max <= 5.0 && lost == 0.0))
            }
        );
    }
    let m = &r["memory"];
    if let Some(per) = f(&m["in_process"]["memlock_per_record_total"]) {
        let slab = f(&m["in_process"]["slab_per_record"]);
        let _ = writeln!(
            s,
            "| kernel map memory per A record at {} names (memlock) | {} B | Slab growth {} B | | ≤ 256 B | {} |",
            num(f(&m["names"]), 0),
            num(Some(per), 0),
            num(slab, 0),
            verdict(Some(per <= 256.0))
        );
    }
    if let Some(t) = f(&m["start_to_ready_s"]) {
        let names = f(&m["names"]).unwrap_or(0.0);
        let _ = writeln!(
            s,
            "| {} records loaded at start (spawn to `ready`, daemon on every CPU) | {} s | pinned to one CPU {} s | | ≤ 3 s{} | {} |",
            num(Some(names), 0),
            num(Some(t), 2),
            num(f(&m["start_to_ready_pinned_s"]), 2),
            if names < 1e6 { " (at 1M)" } else { "" },
            if names < 1e6 {
                "not measured at 1M (--quick)"
            } else {
                verdict(Some(t <= 3.0))
            }
        );
    }
    if let (Some(per), Some(names)) = (f(&m["daemon_rss_per_record"]), f(&m["names"])) {
        let _ = writeln!(
            s,
            "| daemon RSS per record at {} A records | {} B | | | ≤ 300 B | {} |",
            num(Some(names), 0),
            num(Some(per), 0),
            verdict(Some(per <= 300.0))
        );
    }
    let fb = &r["fallback"];
    for pair in fb["cpu"]["pairs"].as_array().into_iter().flatten() {
        for (ours, theirs, how) in [
            ("edgedns", "nsd", ""),
            ("edgedns_nocache", "nsd_nocache", ", packet cache off"),
        ] {
            if let (Some(e), Some(n)) = (
                f(&pair[ours]["ns_per_answer"]),
                f(&pair[theirs]["ns_per_answer"]),
            ) {
                let k = num(f(&pair["sockets"]), 0);
                let _ = writeln!(
                    s,
                    "| fallback CPU per answer at {} q/s (utime + stime), {k} UDP socket(s) against NSD with {k} server process(es){how} | {} ns | NSD {} ns | {} | ≤ 1 | {} |",
                    num(f(&fb["cpu"]["rate"]), 0),
                    num(Some(e), 0),
                    num(Some(n), 0),
                    num(Some(e / n), 2),
                    verdict(Some(e <= n))
                );
            }
        }
    }
    let qps = |w: &str| {
        fb["max"]
            .as_array()
            .and_then(|a| a.iter().find(|m| m["workers"].as_str() == Some(w)))
            .and_then(|m| f(&m["median"]["qps"]))
    };
    if let (Some(one), Some(two)) = (qps("1"), qps("2")) {
        let _ = writeln!(
            s,
            "| fallback answers/s, --udp-workers 2 against 1 | {} | 1 worker {} | {}× | grows | {} |",
            num(Some(two), 0),
            num(Some(one), 0),
            num(Some(two / one.max(1.0)), 2),
            verdict(Some(two > one * 1.05))
        );
    }
    fleet_summary(&mut s, &r["fleet"]);
    crate::rrl::summary(&mut s, &r["rrl"]);
    crate::flood::summary(&mut s, &r["flood"]);
    s
}

/// Section 8's targets: every edge within 10 ms p99 at 8 edges in one region, and no NXDOMAIN
/// after a write returned.
fn fleet_summary(s: &mut String, fl: &Value) {
    let rows = |sys: &str| fl[sys].as_array().cloned().unwrap_or_default();
    let one_region = |sys: &str| {
        rows(sys)
            .into_iter()
            .filter(|r| r["delay_ms"].as_u64() == Some(0))
            .max_by_key(|r| r["edges"].as_u64().unwrap_or(0))
    };
    if let Some(e) = one_region("edgedns") {
        if let Some(p99) = f(&e["visible_all"]["p99_ms"]) {
            let knot = one_region("knot")
                .and_then(|k| f(&k["visible_all"]["p99_ms"]))
                .map(|k| format!("Knot secondaries {} ms", num(Some(k), 0)))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "| fleet: every edge answers a new name, p99, {} edges in one region (section 8) | {} ms | {knot} | | ≤ 10 ms | {} |",
                e["edges"],
                num(Some(p99), 1),
                verdict(Some(p99 <= 10.0))
            );
        }
    }
    let windows = |sys: &str| {
        let rs = rows(sys);
        let names: u64 = rs.iter().filter_map(|r| r["names"].as_u64()).sum();
        let w: u64 = rs
            .iter()
            .filter_map(|r| r["nxdomain_windows"].as_u64())
            .sum();
        (rs.iter().any(|r| r["nxdomain_windows"].is_u64())).then_some((w, names))
    };
    if let Some((w, n)) = windows("edgedns") {
        let knot = windows("knot")
            .map(|(kw, kn)| format!("Knot {kw} of {kn}"))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "| fleet: names with an NXDOMAIN after the write returned (section 8) | {w} of {n} | {knot} | | 0 | {} |",
            verdict(Some(w == 0))
        );
    }
}

/// Whether edgedns's XDP path answered (nearly) everything kxdpgun sent: then the generator,
/// not the server, set the figure.
fn generator_capped(w: &Value, mode: &str) -> bool {
    w[format!("edgedns_xdp/{mode}")]["runs"]
        .as_array()
        .is_some_and(|runs| {
            runs.iter().all(|r| {
                let sent = r["sent"].as_f64().unwrap_or(0.0);
                sent > 0.0 && r["noerror"].as_f64().unwrap_or(0.0) >= 0.98 * sent
            })
        })
}

pub fn wire_tables(r: &Value) -> String {
    let w = &r["wire"];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| server | answers/s, softirq NAPI | answers/s, threaded NAPI | offered q/s (threaded) | sample check | path evidence (threaded, last run) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---|---|");
    let xdp_ans = f(&w["edgedns_xdp/threaded"]["answers_per_s"]);
    let knot_ans = f(&w["knot_xdp/threaded"]["answers_per_s"]);
    for sv in Server::ALL {
        let a = |mode: &str| f(&w[format!("{}/{mode}", sv.key())]["answers_per_s"]);
        let t = &w[format!("{}/threaded", sv.key())];
        let last = t["runs"]
            .as_array()
            .and_then(|v| v.last())
            .cloned()
            .unwrap_or(Value::Null);
        let err = w[format!("{}/softirq", sv.key())]["error"]
            .as_str()
            .or(t["error"].as_str());
        let check = match (&t["check"]["asked"], &t["check"]["wrong"]) {
            (Value::Number(a), Value::Number(wr)) => format!("{wr} wrong of {a}"),
            _ => err
                .map(|e| format!("error: {}", e.lines().next().unwrap_or("")))
                .unwrap_or("n/a".into()),
        };
        let evidence = format!(
            "XDP_TX {}, XDP_REDIRECT {}",
            num(f(&last["xdp_tx"]), 0),
            num(f(&last["xdp_redirect"]), 0)
        );
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} |",
            sv.label(),
            num(a("softirq"), 0),
            num(a("threaded"), 0),
            num(f(&last["offered_qps"]), 0),
            check,
            evidence
        );
    }
    if let (Some(e), Some(k)) = (xdp_ans, knot_ans) {
        let _ = writeln!(
            s,
            "\nedgedns XDP / Knot XDP (threaded): {:.2}×",
            e / k.max(1.0)
        );
    }
    s
}

pub fn cpu_table(r: &Value) -> String {
    let w = &r["wire"];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| server | answers | process CPU ms | server-end NAPI thread ms | ns per answer | every run's ns per answer | softirq ms on server CPU | server CPU busy ns/answer (whole CPU, noisy) |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---|---:|---:|");
    let mut rows: Vec<(&str, String)> = Server::ALL
        .iter()
        .map(|sv| (sv.label(), format!("{}/threaded", sv.key())))
        .collect();
    rows.push((
        "floor program (MAC/IP/port swap, XDP_TX; its answers are reflected queries)",
        "floor/threaded".into(),
    ));
    for (label, key) in rows {
        let c = &w[&key]["cpu"];
        if c.is_null() {
            continue;
        }
        let runs = c["ns_per_answer_runs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|x| num(f(x), 0))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "| {label} | {} | {} | {} | {} | {runs} | {} | {} |",
            num(f(&c["answers"]), 0),
            num(f(&c["process_ms"]), 1),
            num(f(&c["napi_ms"]), 1),
            num(f(&c["ns_per_answer"]), 0),
            num(f(&c["softirq_ms_server_cpu"]), 0),
            num(f(&c["busy_ns_per_answer_server_cpu"]), 0),
        );
    }
    s
}

pub fn kernel_table(r: &Value) -> String {
    let k = &r["kernel"];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| query | frame bytes | ns per run | floor ns | ratio | program-only ns (minus the empty program) | floor program-only ns | program-only / A hit's |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in k["rows"].as_array().into_iter().flatten() {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {}× | {} | {} | {}× |",
            row["label"].as_str().unwrap_or(""),
            num(f(&row["frame_bytes"]), 0),
            num(f(&row["ns"]), 1),
            num(f(&row["floor_ns"]), 1),
            num(f(&row["ratio"]), 1),
            num(f(&row["net_ns"]), 1),
            num(f(&row["net_floor_ns"]), 1),
            num(f(&row["vs_a_hit"]), 2),
        );
    }
    let _ = writeln!(
        s,
        "\n`return XDP_TX` alone: {} ns a run (the test-run loop itself). Restoring wrapper: {} ns (IPv4), {} ns (IPv6), taken off the edgedns rows; check: floor through the wrapper minus the wrapper = {} ns (floor direct: {} ns). Plain `repeat` without the wrapper on the A query: {} ns a run (it times the \"not a query to us\" path after the first run). Verifier: {} instructions processed; {} instructions after translation, {} bytes JIT-compiled.",
        num(f(&k["return_tx_ns"]), 1),
        num(f(&k["wrapper_overhead_v4_ns"]), 1),
        num(f(&k["wrapper_overhead_v6_ns"]), 1),
        num(f(&k["floor_via_wrapper_v4_ns"]), 1),
        num(f(&k["floor_v4_ns"]), 1),
        num(f(&k["plain_repeat_a_hit_ns"]), 1),
        num(f(&k["verified_insns"]), 0),
        num(f(&k["xlated_insns"]), 0),
        num(f(&k["jited_bytes"]), 0),
    );
    s
}

pub fn update_tables(r: &Value) -> String {
    let u = &r["update"];
    let e = &u["edgedns"];
    let k = &u["knot"];
    let p = |v: &Value| {
        if v.is_null() {
            return "n/a | n/a | n/a | n/a".to_string();
        }
        format!(
            "{} | {} | {} | {}",
            num(f(&v["n"]), 0),
            num(f(&v["p50_ms"]), 3),
            num(f(&v["p99_ms"]), 3),
            num(f(&v["max_ms"]), 3)
        )
    };
    let mut s = String::new();
    let _ = writeln!(s, "| what | n | p50 ms | p99 ms | max ms |");
    let _ = writeln!(s, "|---|---:|---:|---:|---:|");
    for (label, v) in [
        (
            "edgedns: PUT sent → first poll that gets the name",
            &e["visible"],
        ),
        ("edgedns: PUT sent → 200 received", &e["put_acked"]),
        (
            "reference: one 4 KiB write + fdatasync on the store's file system",
            &e["fsync_4k"],
        ),
        (
            "Knot: `knotc zone-begin` started → visible (three knotc processes)",
            &k["visible_from_zone_begin"],
        ),
        (
            "Knot: `knotc zone-commit` started → visible",
            &k["visible_from_zone_commit_start"],
        ),
        (
            "Knot: one `knotc zone-commit` process",
            &k["zone_commit_call"],
        ),
        (
            "Knot: one `knotc status` process (the cost of starting knotc)",
            &k["knotc_status"],
        ),
    ] {
        let _ = writeln!(s, "| {label} | {} |", p(v));
    }
    let _ = writeln!(
        s,
        "\nUpdates not seen within 3 s: edgedns {}, Knot {}.",
        num(f(&e["not_seen_within_3s"]), 0),
        num(f(&k["not_seen_within_3s"]), 0),
    );
    if let Some(err) = k["error"].as_str() {
        let _ = writeln!(s, "\nKnot: error: {err}");
    }
    let _ = writeln!(s, "\n| sustained updates | requests/s | records/s |");
    let _ = writeln!(s, "|---|---:|---:|");
    for (key, label) in [
        ("put_1", "PUT, one connection"),
        ("put_4", "PUT, four connections"),
        ("batch_100", "POST /changes, 100 changes a request"),
    ] {
        let v = &e["sustained"][key];
        if v["missing"].as_bool() == Some(true) {
            let _ = writeln!(
                s,
                "| {label} | not available (HTTP {}) | |",
                num(f(&v["status"]), 0)
            );
        } else {
            let _ = writeln!(
                s,
                "| {label} | {} | {} |",
                num(f(&v["requests_per_s"]), 0),
                num(f(&v["records_per_s"]), 0)
            );
        }
    }
    s
}

pub fn memory_table(r: &Value) -> String {
    let m = &r["memory"];
    let ip = &m["in_process"];
    let mut s = String::new();
    let n = num(f(&m["names"]), 0);
    let _ = writeln!(s, "| {n} A records | value |");
    let _ = writeln!(s, "|---|---:|");
    let rows = [
        (
            "hash maps' memlock (fdinfo), per record",
            num(f(&ip["memlock_per_record_total"]), 1) + " B",
        ),
        (
            "hash maps' memlock growth from empty, per record",
            num(f(&ip["memlock_per_record"]), 1) + " B",
        ),
        (
            "Slab growth (/proc/meminfo), per record",
            num(f(&ip["slab_per_record"]), 1) + " B",
        ),
        (
            "MemAvailable drop, per record (whole box; noisy)",
            num(f(&ip["memavailable_per_record"]), 1) + " B",
        ),
        (
            "maps filled (full_sync, in process)",
            num(f(&ip["fill_s"]), 2) + " s",
        ),
        (
            "store written (one redb transaction)",
            num(f(&m["store_write_s"]), 2) + " s",
        ),
        (
            "`edgedns serve` spawn to `ready`, not pinned (both CPUs)",
            num(f(&m["start_to_ready_s"]), 2) + " s",
        ),
        (
            "`edgedns serve` spawn to `ready`, pinned to one CPU",
            num(f(&m["start_to_ready_pinned_s"]), 2) + " s",
        ),
        (
            "of which, measured apart: store read into zones (`Store::load`)",
            num(f(&m["store_load_s"]), 2) + " s",
        ),
        (
            "of which, measured apart: compiling every name, no map writes",
            num(f(&m["compile_only_s"]), 2) + " s",
        ),
        (
            "daemon RSS after start",
            num(f(&m["daemon_rss_bytes"]).map(|b| b / 1048576.0), 0) + " MiB",
        ),
        (
            "daemon RSS per record",
            num(f(&m["daemon_rss_per_record"]), 0) + " B",
        ),
        (
            "daemon RSS after start, the pinned run",
            num(f(&m["daemon_rss_pinned_bytes"]).map(|b| b / 1048576.0), 0) + " MiB",
        ),
        (
            "daemon peak RSS (VmHWM)",
            num(f(&m["daemon_hwm_bytes"]).map(|b| b / 1048576.0), 0) + " MiB",
        ),
        (
            "sample names answered right by the fast path",
            num(f(&m["sample_answers_right"]), 0) + " of 5",
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    s
}

pub fn writes_table(r: &Value) -> String {
    let w = &r["writes"];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| window | write took | probes | lost | over 5 ms | p50 ms | p99 ms | max ms |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for (label, took, win) in [
        ("baseline (1 s, no write)", None, &w["baseline"]),
        (
            "10,000-record batch",
            f(&w["batch"]["took_s"]),
            &w["batch"]["fallback"],
        ),
        (
            "zone-file import",
            f(&w["import"]["took_s"]),
            &w["import"]["fallback"],
        ),
    ] {
        let _ = writeln!(
            s,
            "| {label} | {} | {} | {} | {} | {} | {} | {} |",
            took.map(|t| format!("{t:.3} s")).unwrap_or_default(),
            num(f(&win["probes"]), 0),
            num(f(&win["lost"]), 0),
            num(f(&win["over_5ms"]), 0),
            num(f(&win["latency"]["p50_ms"]), 3),
            num(f(&win["latency"]["p99_ms"]), 3),
            num(f(&win["latency"]["max_ms"]), 3),
        );
    }
    s
}

/// Section 7: what each fuzz loop tried and what went wrong (0 is the only good figure).
pub fn fuzz_table(r: &Value) -> String {
    let z = &r["fuzz"];
    let mut s = String::new();
    if z.is_null() || z["error"].is_string() {
        return s;
    }
    let n = |v: &Value| num(f(v), 0);
    let _ = writeln!(s, "Seed {}.\n", z["seed"]);
    let _ = writeln!(
        s,
        "| loop | inputs | outcome | mismatches / failures | panics | time |"
    );
    let _ = writeln!(s, "|---|---:|---|---:|---:|---:|");
    let x = &z["xdp"];
    let _ = writeln!(
        s,
        "| XDP against the fallback | {} frames | {} answered (XDP_TX), {} passed with a reason, {} not ours | {} | {} | {} s |",
        n(&x["frames"]),
        n(&x["answered"]),
        n(&x["passed_total"]),
        n(&x["not_ours"]),
        n(&x["mismatches"]["count"]),
        num(
            Some(
                ["the check panicked", "the oracle panicked"]
                    .iter()
                    .filter_map(|k| f(&x["mismatches"]["by_kind"][*k]))
                    .sum()
            ),
            0
        ),
        num(f(&x["secs"]), 0),
    );
    let xz = &z["xdp_mutated_zones"];
    if !xz.is_null() {
        let _ = writeln!(
            s,
            "| XDP against the fallback, over {} mutated zone sets | {} queries | {} answered (XDP_TX) | {} | {} | {} s |",
            n(&xz["zone_sets"]),
            n(&xz["frames"]),
            n(&xz["answered"]),
            n(&xz["mismatches"]["count"]),
            num(f(&xz["mismatches"]["by_kind"]["the check panicked"]).or(Some(0.0)), 0),
            num(f(&xz["secs"]), 0),
        );
    }
    let b = &z["fallback"];
    let panics = |v: &Value| num(f(&v["failures"]["by_kind"]["panic"]).or(Some(0.0)), 0);
    let _ = writeln!(
        s,
        "| fallback request parser | {} | {} answered, {} dropped | {} | {} | {} s |",
        n(&b["inputs"]),
        n(&b["answered"]),
        n(&b["dropped"]),
        n(&b["failures"]["count"]),
        panics(b),
        num(f(&b["secs"]), 0),
    );
    let zf = &z["zonefile"];
    let _ = writeln!(
        s,
        "| zone-file parser | {} | {} accepted and round-tripped, {} refused | {} | {} | {} s |",
        n(&zf["inputs"]),
        n(&zf["accepted"]),
        n(&zf["refused"]),
        n(&zf["failures"]["count"]),
        panics(zf),
        num(f(&zf["secs"]), 0),
    );
    for (what, v) in [
        ("XDP against the fallback", &x["mismatches"]),
        ("XDP over mutated zones", &xz["mismatches"]),
        ("fallback request parser", &b["failures"]),
        ("zone-file parser", &zf["failures"]),
    ] {
        if let Some(kinds) = v["by_kind"].as_object().filter(|k| !k.is_empty()) {
            let list: Vec<String> = kinds.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            let _ = writeln!(s, "\n{what}, failures by kind: {}.", list.join("; "));
        }
    }
    if let Some(p) = x["passed"].as_object() {
        let reasons: Vec<String> = p
            .iter()
            .map(|(k, v)| format!("{} {}", k.trim_start_matches("passed/"), n(v)))
            .collect();
        let _ = writeln!(s, "\nXDP_PASS by reason: {}.", reasons.join(", "));
    }
    let _ = writeln!(
        s,
        "Answered although the frame's IPv4 header or UDP checksum was wrong: {} (of the frames changed below DNS; the host's stack would drop them).",
        n(&x["answered_bad_checksum"])
    );
    s
}

/// Each UDP thread's CPU ms, `a / b`, or a dash for a server without them (NSD).
fn thread_ms(v: &Value) -> String {
    let ms: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|x| num(f(x), 0))
        .collect();
    if ms.is_empty() {
        "–".into()
    } else {
        ms.join(" / ")
    }
}

/// Section 8: the fallback's CPU per answer against NSD, and its throughput by UDP workers.
pub fn fallback_table(r: &Value) -> String {
    let fb = &r["fallback"];
    if fb.is_null() || !fb["error"].is_null() {
        return "Not run.\n".into();
    }
    let mut out = String::new();
    let cpu = &fb["cpu"];
    let _ = writeln!(
        out,
        "CPU per answer at {} q/s for {} s (median of the runs by CPU per answer), like for like: edgedns with N UDP sockets and threads against NSD with N server processes, each with its socket; N = {} (the cores, edgedns's default), then 1:\n",
        num(f(&cpu["rate"]), 0),
        num(f(&cpu["secs"]), 0),
        num(f(&cpu["cores"]), 0)
    );
    out.push_str("| server | answers | lost | CPU ms | of it, each UDP thread's | ns per answer | every run's ns per answer |\n|---|---:|---:|---:|---|---:|---|\n");
    let all = |runs: &Value| -> String {
        runs.as_array()
            .map(|a| {
                a.iter()
                    .map(|x| num(f(&x["ns_per_answer"]), 0))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    let mut ratios = Vec::new();
    for pair in cpu["pairs"].as_array().into_iter().flatten() {
        let k = num(f(&pair["sockets"]), 0);
        for (label, key) in [
            (
                format!("edgedns fallback (--xdp-mode off), --udp-workers {k}"),
                "edgedns",
            ),
            (format!("NSD 4.6, server-count {k}"), "nsd"),
            (
                format!("edgedns fallback, --udp-workers {k}, packet cache off"),
                "edgedns_nocache",
            ),
            (
                format!("NSD 4.6, server-count {k}, beside it"),
                "nsd_nocache",
            ),
        ] {
            if pair[key].is_null() {
                continue;
            }
            let m = &pair[key];
            let _ = writeln!(
                out,
                "| {label} | {} | {} | {} | {} | {} | {} |",
                num(f(&m["answers"]), 0),
                num(f(&m["lost"]), 0),
                num(f(&m["cpu_ms"]), 1),
                thread_ms(&m["udp_threads_ms"]),
                num(f(&m["ns_per_answer"]), 0),
                all(&pair[format!("{key}_runs")])
            );
        }
        let ratio = f(&pair["edgedns"]["ns_per_answer"])
            .zip(f(&pair["nsd"]["ns_per_answer"]))
            .map(|(e, n)| e / n);
        ratios.push(format!("{} with {k}", num(ratio, 2)));
        let bare = f(&pair["edgedns_nocache"]["ns_per_answer"])
            .zip(f(&pair["nsd_nocache"]["ns_per_answer"]))
            .map(|(e, n)| e / n);
        if bare.is_some() {
            ratios.push(format!(
                "{} with {k} and the packet cache off",
                num(bare, 2)
            ));
        }
    }
    let _ = writeln!(
        out,
        "\nedgedns / NSD: {} (target: at or below 1).\n",
        ratios.join(", ")
    );
    let base = &fb["baseline"];
    if !base.is_null() {
        let _ = writeln!(
            out,
            "Before and after, same rate, {} UDP sockets each: the earlier build (`{}`) {} ns per answer ({}).\n",
            num(f(&base["sockets"]), 0),
            base["binary"].as_str().unwrap_or("?"),
            num(f(&base["baseline"]["ns_per_answer"]), 0),
            all(&base["baseline_runs"]),
        );
    }
    out.push_str("Throughput, dnsperf as fast as it goes (median of the runs by answers/s):\n\n| server | answers/s | lost | CPU ms | of it, each UDP thread's | ns per answer | every run's answers/s |\n|---|---:|---:|---:|---|---:|---|\n");
    for m in fb["max"].as_array().into_iter().flatten() {
        let label = match m["workers"].as_str() {
            Some("nsd") => "NSD 4.6, one server process".to_owned(),
            Some(w) => format!("edgedns fallback, --udp-workers {w}"),
            None => "?".to_owned(),
        };
        let med = &m["median"];
        let all: Vec<String> = m["runs"]
            .as_array()
            .map(|a| a.iter().map(|x| num(f(&x["qps"]), 0)).collect())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| {label} | {} | {} | {} | {} | {} | {} |",
            num(f(&med["qps"]), 0),
            num(f(&med["lost"]), 0),
            num(f(&med["cpu_ms"]), 1),
            thread_ms(&med["udp_threads_ms"]),
            num(f(&med["ns_per_answer"]), 0),
            all.join(", ")
        );
    }
    out
}
