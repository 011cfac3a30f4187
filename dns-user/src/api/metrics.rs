//! `GET /metrics` in the Prometheus text exposition format (version 0.0.4), written by hand: a
//! few counters and one histogram don't need a metrics library.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use dns_common::{stat, Stat};
use tracing::{debug, warn};

use super::ApiState;
use crate::zonefile::presentation::format_name;

/// Upper bounds (seconds) of the request-duration buckets. A change costs an fsync, typically
/// 1-20 ms; reads take microseconds.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// The API's own counters: requests by status code and their latency.
#[derive(Default)]
pub struct ApiMetrics {
    by_code: Mutex<BTreeMap<u16, u64>>,
    /// Requests per bucket (not cumulative; summed when rendered); the last is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    sum_nanos: AtomicU64,
    count: AtomicU64,
}

impl ApiMetrics {
    fn observe(&self, code: u16, elapsed: Duration) {
        *self
            .by_code
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(code)
            .or_default() += 1;
        let secs = elapsed.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// Middleware: counts every request by the status it got and times it.
pub(super) async fn track(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let resp = next.run(req).await;
    st.metrics.observe(resp.status().as_u16(), start.elapsed());
    resp
}

/// A label value, escaped as the format wants (`\`, `"` and newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// What `edgedns_responses_total` counts an answer of the XDP program as. It answers from the
/// maps with NOERROR (records, or none of the type) or NXDOMAIN; anything else it passes up.
fn xdp_rcode(kind: &str) -> &'static str {
    if kind == "nxdomain" {
        "NXDOMAIN"
    } else {
        "NOERROR"
    }
}

/// `GET /metrics`. Every name starts with `edgedns_`; the two answering paths share
/// `edgedns_responses_total{path, transport, rcode, qtype}` with the same label values, so a sum
/// over `path` is every response the server sent.
pub(super) async fn render(State(st): State<ApiState>) -> Response {
    let mut out = String::new();

    family(
        &mut out,
        "edgedns_build_info",
        "gauge",
        "Always 1; the version of the running binary in the label.",
    );
    let _ = writeln!(
        out,
        "edgedns_build_info{{version=\"{}\"}} 1",
        label(env!("CARGO_PKG_VERSION"))
    );

    // Without a fast path every XDP counter is 0: the label sets stay the same either way.
    let (xdp, by_qtype, enabled) = match st
        .engine
        .with_fast(|f| (f.stats(), f.answers_by_qtype(), f.config()))
    {
        Some((stats, by_qtype, config)) => {
            let stats = stats.unwrap_or_else(|e| {
                warn!("reading the XDP counters: {e}");
                Vec::new()
            });
            let by_qtype = by_qtype.unwrap_or_else(|e| {
                warn!("reading the XDP counters by qtype: {e}");
                Vec::new()
            });
            let enabled = match config {
                Ok(c) => c.enabled != 0,
                Err(e) => {
                    warn!("reading the XDP config map: {e}");
                    false
                }
            };
            (stats, by_qtype, enabled)
        }
        None => (
            Stat::ALL.iter().map(|s| (*s, 0)).collect(),
            stat::ANSWER_KINDS
                .iter()
                .flat_map(|k| stat::ANSWER_QTYPES.iter().map(|q| (*k, *q, 0)))
                .collect(),
            false,
        ),
    };
    family(
        &mut out,
        "edgedns_fast_path_attached",
        "gauge",
        "1 if the XDP program is loaded, 0 if the fallback answers everything.",
    );
    let _ = writeln!(
        out,
        "edgedns_fast_path_attached {}",
        u8::from(st.engine.has_fast_path())
    );
    family(
        &mut out,
        "edgedns_fast_path_enabled",
        "gauge",
        "1 if the XDP program answers from its maps (the config map's enabled), 0 if it passes \
         everything up: not attached, or switched off after a failed map write.",
    );
    let _ = writeln!(out, "edgedns_fast_path_enabled {}", u8::from(enabled));
    for (metric, key, help) in [
        (
            stat::ANSWERED,
            "kind",
            "Queries the XDP program answered itself, by kind of answer.",
        ),
        (
            stat::PASSED,
            "reason",
            "Queries the XDP program passed up to the fallback, by reason.",
        ),
        (
            stat::DROPPED,
            "reason",
            "Frames the XDP program dropped half rewritten, by reason.",
        ),
        (
            stat::RRL,
            "outcome",
            "Response-rate limiting in the XDP program: responses limited (not sent), slipped \
             (sent truncated), and sent unlimited because the source is exempt or brought a \
             valid server cookie.",
        ),
    ] {
        let name = format!("edgedns_xdp_{metric}_total");
        family(&mut out, &name, "counter", help);
        for (stat, n) in &xdp {
            let (m, l) = stat.label();
            if m == metric {
                let _ = writeln!(out, "{name}{{{key}=\"{}\"}} {n}", label(l));
            }
        }
    }

    let fb = &st.fallback_stats;
    family(
        &mut out,
        "edgedns_responses_total",
        "counter",
        "DNS responses sent, by the path that answered (xdp, fallback), transport, RCODE and \
         query type (A, AAAA, CNAME, MX, TXT, NS, SOA, SRV, CAA, PTR, HTTPS, SVCB, ANY, AXFR, IXFR \
         or other).",
    );
    let mut xdp_by_label: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for (kind, qtype, n) in &by_qtype {
        *xdp_by_label
            .entry((xdp_rcode(kind.label().1), qtype))
            .or_default() += n;
    }
    for ((rcode, qtype), n) in &xdp_by_label {
        let _ = writeln!(
            out,
            "edgedns_responses_total{{path=\"xdp\",transport=\"udp\",rcode=\"{rcode}\",qtype=\"{qtype}\"}} {n}"
        );
    }
    for (transport, rcode, qtype, n) in fb.by_qtype() {
        let _ = writeln!(
            out,
            "edgedns_responses_total{{path=\"fallback\",transport=\"{transport}\",rcode=\"{rcode}\",qtype=\"{qtype}\"}} {n}"
        );
    }
    for (name, help, n) in [
        (
            "edgedns_fallback_dropped_total",
            "Messages the fallback did not answer (shorter than a header, or responses).",
            fb.dropped(),
        ),
        (
            "edgedns_fallback_truncated_total",
            "Responses the fallback sent truncated (TC=1).",
            fb.truncated(),
        ),
        (
            "edgedns_fallback_tcp_rejected_total",
            "TCP connections the fallback closed because all slots were taken.",
            fb.tcp_rejected(),
        ),
        (
            "edgedns_fallback_tcp_evicted_total",
            "Idle TCP connections the fallback closed to make room for new ones.",
            fb.tcp_evicted(),
        ),
        (
            "edgedns_fallback_rate_limited_total",
            "UDP responses the fallback's rate limiter dropped.",
            fb.rate_limited(),
        ),
        (
            "edgedns_fallback_slipped_total",
            "UDP responses over the rate the fallback sent truncated (TC=1).",
            fb.slipped(),
        ),
    ] {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {n}");
    }

    let m = &st.metrics;
    family(
        &mut out,
        "edgedns_api_requests_total",
        "counter",
        "API requests answered, by HTTP status code.",
    );
    for (code, n) in m.by_code.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let _ = writeln!(out, "edgedns_api_requests_total{{code=\"{code}\"}} {n}");
    }
    family(
        &mut out,
        "edgedns_api_request_duration_seconds",
        "histogram",
        "Time to answer an API request (a change includes its fsync and map updates).",
    );
    let mut cumulative = 0;
    for (i, b) in m.buckets.iter().enumerate() {
        cumulative += b.load(Ordering::Relaxed);
        let le = BUCKETS
            .get(i)
            .map_or_else(|| "+Inf".to_string(), |le| le.to_string());
        let _ = writeln!(
            out,
            "edgedns_api_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let sum = m.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(out, "edgedns_api_request_duration_seconds_sum {sum}");
    let _ = writeln!(
        out,
        "edgedns_api_request_duration_seconds_count {}",
        m.count.load(Ordering::Relaxed)
    );

    let store = st.engine.store().status();
    for (name, kind, help, n) in [
        (
            "edgedns_store_writable",
            "gauge",
            "1 if the last commit to the store worked, 0 if changes are being refused.",
            u64::from(store.writable),
        ),
        (
            "edgedns_store_commit_errors_total",
            "counter",
            "Commits to the store that failed (the change was refused and undone).",
            store.commit_errors,
        ),
        (
            "edgedns_store_quarantined_entries",
            "gauge",
            "Store entries set aside at start because they could not be loaded (see /readyz).",
            u64::try_from(store.quarantined.len()).unwrap_or(u64::MAX),
        ),
    ] {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {n}");
    }

    let zones: Vec<(String, usize, u32)> = {
        let zones = st.engine.zones();
        zones
            .zones()
            .map(|z| (format_name(z.apex()), z.record_count(), z.serial()))
            .collect()
    };
    family(
        &mut out,
        "edgedns_zone_records",
        "gauge",
        "Records in the zone, the SOA left out.",
    );
    for (zone, records, _) in &zones {
        let _ = writeln!(
            out,
            "edgedns_zone_records{{zone=\"{}\"}} {records}",
            label(zone)
        );
    }
    family(
        &mut out,
        "edgedns_zone_serial",
        "gauge",
        "The zone's SOA serial.",
    );
    for (zone, _, serial) in &zones {
        let _ = writeln!(
            out,
            "edgedns_zone_serial{{zone=\"{}\"}} {serial}",
            label(zone)
        );
    }

    if let Some(fleet) = &st.fleet {
        fleet.refresh_edges().await;
        super::fleet::metrics(&mut out, fleet);
    }

    process_metrics(&mut out);

    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// The process's resident memory, open files, CPU time and start time, from /proc/self. A file
/// that can't be read leaves its metric out (and says so at debug level): /metrics still
/// answers.
fn process_metrics(out: &mut String) {
    let status = std::fs::read_to_string("/proc/self/status");
    let rss = status.as_ref().ok().and_then(|s| {
        let kb = s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
        kb.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()
    });
    if let Some(kb) = rss {
        family(
            out,
            "edgedns_process_resident_memory_bytes",
            "gauge",
            "Resident memory of the daemon (BPF maps are kernel memory, not counted here).",
        );
        let _ = writeln!(out, "edgedns_process_resident_memory_bytes {}", kb * 1024);
    }
    match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => {
            family(
                out,
                "edgedns_process_open_fds",
                "gauge",
                "File descriptors the daemon has open (sockets, the store, BPF maps and links).",
            );
            let _ = writeln!(out, "edgedns_process_open_fds {}", dir.count());
        }
        Err(e) => debug!("/proc/self/fd: {e}"),
    }
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let stat = std::fs::read_to_string("/proc/self/stat");
    let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("btime "))
            .and_then(|b| b.trim().parse::<u64>().ok())
    });
    if let (Ok(stat), true) = (stat, ticks > 0) {
        let ticks = ticks as f64;
        // The fields after the command name, which is in parentheses and may hold spaces:
        // field 14 (utime) is index 11 here, 15 (stime) 12, 22 (starttime) 19.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        if let (Some(utime), Some(stime)) = (field(11), field(12)) {
            family(
                out,
                "edgedns_process_cpu_seconds_total",
                "counter",
                "CPU time the daemon used, user and system (the XDP program's is not in it).",
            );
            let _ = writeln!(
                out,
                "edgedns_process_cpu_seconds_total {}",
                (utime + stime) as f64 / ticks
            );
        }
        if let (Some(start), Some(boot)) = (field(19), boot) {
            family(
                out,
                "edgedns_process_start_time_seconds",
                "gauge",
                "When the daemon started, in seconds since the Unix epoch.",
            );
            let _ = writeln!(
                out,
                "edgedns_process_start_time_seconds {}",
                boot as f64 + start as f64 / ticks
            );
        }
    }
}
