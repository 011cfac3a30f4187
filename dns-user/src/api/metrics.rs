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
use dns_common::stat;
use tracing::warn;

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

/// `GET /metrics`.
pub(super) async fn render(State(st): State<ApiState>) -> Response {
    let mut out = String::new();

    let xdp = match st.engine.with_fast(|f| f.stats()) {
        Some(Ok(c)) => c,
        Some(Err(e)) => {
            warn!("reading the XDP counters: {e}");
            Vec::new()
        }
        None => Vec::new(),
    };
    family(
        &mut out,
        "dns_xdp_attached",
        "gauge",
        "1 if the XDP fast path is loaded, 0 if the fallback answers everything.",
    );
    let _ = writeln!(
        out,
        "dns_xdp_attached {}",
        u8::from(st.engine.has_fast_path())
    );
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
    ] {
        let name = format!("dns_xdp_{metric}_total");
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
        "dns_fallback_queries_total",
        "counter",
        "Responses the fallback server sent, by RCODE.",
    );
    for (rcode, n) in fb.snapshot() {
        let _ = writeln!(
            out,
            "dns_fallback_queries_total{{rcode=\"{}\"}} {n}",
            label(&rcode)
        );
    }
    for (name, help, n) in [
        (
            "dns_fallback_dropped_total",
            "Messages the fallback did not answer (shorter than a header, or responses).",
            fb.dropped(),
        ),
        (
            "dns_fallback_truncated_total",
            "Responses the fallback sent truncated (TC=1).",
            fb.truncated(),
        ),
        (
            "dns_fallback_tcp_rejected_total",
            "TCP connections the fallback closed because all slots were taken.",
            fb.tcp_rejected(),
        ),
    ] {
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {n}");
    }

    let m = &st.metrics;
    family(
        &mut out,
        "dns_api_requests_total",
        "counter",
        "API requests answered, by HTTP status code.",
    );
    for (code, n) in m.by_code.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        let _ = writeln!(out, "dns_api_requests_total{{code=\"{code}\"}} {n}");
    }
    family(
        &mut out,
        "dns_api_request_duration_seconds",
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
            "dns_api_request_duration_seconds_bucket{{le=\"{le}\"}} {cumulative}"
        );
    }
    let sum = m.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
    let _ = writeln!(out, "dns_api_request_duration_seconds_sum {sum}");
    let _ = writeln!(
        out,
        "dns_api_request_duration_seconds_count {}",
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
        "dns_zone_records",
        "gauge",
        "Records in the zone, the SOA left out.",
    );
    for (zone, records, _) in &zones {
        let _ = writeln!(
            out,
            "dns_zone_records{{zone=\"{}\"}} {records}",
            label(zone)
        );
    }
    family(
        &mut out,
        "dns_zone_serial",
        "gauge",
        "The zone's SOA serial.",
    );
    for (zone, _, serial) in &zones {
        let _ = writeln!(out, "dns_zone_serial{{zone=\"{}\"}} {serial}", label(zone));
    }

    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}
