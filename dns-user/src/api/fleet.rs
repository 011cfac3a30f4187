//! The API's side of a fleet: `GET /v1/edges`, `GET /v1/changes/{id}`, and around every write
//! route the bookkeeping a fleet write needs: the `If-Match` revision going in, and coming out
//! the `X-Edgedns-Revision` header and, when some live edge had not applied the write within
//! `--confirm-wait-ms`, 202 with a change id instead of the handler's answer. The handlers
//! themselves are the single host's: they call the engine, which sends the change to etcd.

use std::{fmt::Write as _, sync::Arc};

use axum::{
    extract::{Path, Request, State},
    http::{header, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Json, Router,
};
use serde_json::json;

use super::{ApiError, ApiState};
use crate::fleet::{Fleet, WriteContext, CONFIRM_BUCKETS, WRITE};

/// The response header carrying the etcd revision a write committed at.
pub const REVISION_HEADER: &str = "x-edgedns-revision";

/// Wraps `router` (the webhook's) in the fleet's write bookkeeping.
pub fn track_fleet_writes(router: Router, fleet: Arc<Fleet>) -> Router {
    router.layer(middleware::from_fn_with_state(fleet, track))
}

/// An `If-Match` value: a revision, quoted as an entity tag or bare.
fn parse_if_match(value: &HeaderValue) -> Option<i64> {
    let text = value.to_str().ok()?.trim();
    let text = text.strip_prefix("W/").unwrap_or(text);
    text.trim_matches('"').parse().ok().filter(|r| *r >= 0)
}

pub(super) async fn track(State(fleet): State<Arc<Fleet>>, req: Request, next: Next) -> Response {
    if matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS) {
        return next.run(req).await;
    }
    let if_match = match req.headers().get(header::IF_MATCH) {
        None => None,
        Some(v) => match parse_if_match(v) {
            Some(r) => Some(r),
            None => {
                return ApiError::bad("If-Match", "If-Match takes an etcd revision, e.g. \"1234\"")
                    .into_response()
            }
        },
    };
    let context = WriteContext {
        if_match,
        ..WriteContext::default()
    };
    let (response, outcome) = WRITE
        .scope(context, async move {
            let response = next.run(req).await;
            let outcome =
                WRITE.with(|c| c.outcome.lock().unwrap_or_else(|p| p.into_inner()).take());
            (response, outcome)
        })
        .await;
    let Some(outcome) = outcome else {
        return response;
    };
    let mut response = response;
    if response.status().is_success() && !outcome.behind.is_empty() {
        let _ = fleet;
        response = (
            StatusCode::ACCEPTED,
            Json(json!({
                "change_id": outcome.revision.to_string(),
                "status": "PENDING",
                "behind": outcome.behind,
            })),
        )
            .into_response();
    }
    response
        .headers_mut()
        .insert(REVISION_HEADER, HeaderValue::from(outcome.revision));
    response
}

fn fleet_of(st: &ApiState) -> Result<&Arc<Fleet>, ApiError> {
    st.fleet.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "this server is not an edge of a fleet (serve --etcd)",
        )
    })
}

/// `GET /v1/edges`.
pub(super) async fn edges(State(st): State<ApiState>) -> Result<Response, ApiError> {
    let fleet = fleet_of(&st)?;
    Ok(Json(fleet.edges_with_contact().await).into_response())
}

/// `GET /v1/changes/{id}`: whether every live edge has applied the revision `id`.
pub(super) async fn change(
    State(st): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let fleet = fleet_of(&st)?;
    let revision: i64 =
        id.parse().ok().filter(|r| *r > 0).ok_or_else(|| {
            ApiError::bad("id", "a change id is the revision a write answered with")
        })?;
    fleet.refresh_edges().await;
    let behind = fleet.behind(revision);
    Ok(Json(json!({
        "id": revision.to_string(),
        "status": if behind.is_empty() { "INSYNC" } else { "PENDING" },
        "behind": behind,
    }))
    .into_response())
}

/// The fleet's metrics, appended to `/metrics`.
pub(super) fn metrics(out: &mut String, fleet: &Fleet) {
    let status = fleet.status();
    let view = fleet.edges();
    let lag = (view.revision - status.applied_revision).max(0);
    let lag_seconds = view
        .edges
        .iter()
        .find(|e| e.id == status.edge_id)
        .map_or(0.0, |e| e.lag_seconds);
    let stats = &fleet.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    let acks = fleet.ack_stats();
    let rows: [(&str, &str, &str, String); 12] = [
        (
            "edgedns_fleet_applied_revision",
            "gauge",
            "The etcd revision this edge has applied (its maps answer it).",
            status.applied_revision.to_string(),
        ),
        (
            "edgedns_fleet_lag_revisions",
            "gauge",
            "Revisions this edge is behind the newest any live edge has applied.",
            lag.to_string(),
        ),
        (
            "edgedns_fleet_lag_seconds",
            "gauge",
            "How long ago the oldest revision this edge has not applied was seen.",
            lag_seconds.to_string(),
        ),
        (
            "edgedns_fleet_watch_reconnects_total",
            "counter",
            "Times the watch on etcd was lost and set up again.",
            load(&stats.watch_reconnects).to_string(),
        ),
        (
            "edgedns_fleet_resyncs_total",
            "counter",
            "Times this edge read etcd whole and reconciled with it after the first.",
            load(&stats.resyncs).to_string(),
        ),
        (
            "edgedns_fleet_edges_live",
            "gauge",
            "Edges registered under a live lease.",
            view.edges.len().to_string(),
        ),
        (
            "edgedns_fleet_connected",
            "gauge",
            "1 while this edge hears from etcd.",
            u8::from(status.connected).to_string(),
        ),
        (
            "edgedns_fleet_stale",
            "gauge",
            "1 while misses in our zones are answered SERVFAIL (writes may not have waited for this edge: cut off from etcd, or not registered).",
            u8::from(status.stale).to_string(),
        ),
        (
            "edgedns_fleet_acks_sent_total",
            "counter",
            "Acks this edge sent to the edges that wrote what it applied.",
            load(&acks.sent).to_string(),
        ),
        (
            "edgedns_fleet_acks_received_total",
            "counter",
            "Acks of this edge's writes from other edges.",
            load(&acks.received).to_string(),
        ),
        (
            "edgedns_fleet_acks_rejected_total",
            "counter",
            "Datagrams on the ack socket that were no ack or receipt for this edge under the fleet's key.",
            load(&acks.rejected).to_string(),
        ),
        (
            "edgedns_fleet_registration_writes_total",
            "counter",
            "Times this edge wrote its registration in etcd (to register or to publish what it applied).",
            load(&acks.published).to_string(),
        ),
    ];
    for (name, kind, help, value) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
    let (counts, sum) = stats.confirm_histogram();
    let name = "edgedns_fleet_confirm_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time from a write's start until every live edge applied it (or the wait ended).\n# TYPE {name} histogram"
    );
    for (bound, count) in CONFIRM_BUCKETS.iter().zip(&counts) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {count}");
    }
    let total = counts.last().copied().unwrap_or(0);
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "{name}_sum {sum}");
    let _ = writeln!(out, "{name}_count {total}");
}
