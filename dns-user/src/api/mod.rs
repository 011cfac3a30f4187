//! The HTTP API (JSON over HTTP/1.1, axum). Every change goes through [`Engine::apply`], which
//! answers only once the change is committed to disk and in the fast path's maps: a 2xx means
//! the next query gets the new data.
//!
//! Endpoints (docs/openapi.yaml describes each):
//! - `GET /healthz`, `GET /metrics`: unauthenticated, nothing secret.
//! - `GET /v1/stats`: the XDP and fallback counters as JSON.
//! - `GET|POST /v1/zones`, `GET|PATCH|DELETE /v1/zones/{zone}`: zones (`api/zones.rs`).
//! - `GET|PUT /v1/zones/{zone}/zonefile`: master-file export and import.
//! - `GET /v1/zones/{zone}/records[/{name}]`, `GET|PUT|DELETE
//!   /v1/zones/{zone}/records/{name}/{type}`, `POST /v1/zones/{zone}/changes`: records
//!   (`api/records.rs`).
//!
//! With a token ([`ApiState::with_token`]) every `/v1/*` request needs `Authorization: Bearer
//! <token>`. Bodies are limited to [`BODY_LIMIT`]. Errors are `{"error": .., "field": ..}`
//! ([`ApiError`]); nothing changes on any error, because requests are parsed whole before the
//! change is made and the zone model checks a change whole before applying it.

mod auth;
mod error;
mod extract;
mod metrics;
mod records;
mod zones;

use std::sync::Arc;

use axum::{
    extract::{DefaultBodyLimit, State},
    http::StatusCode,
    middleware,
    routing::{get, post},
    Json, Router,
};
use hickory_proto::rr::{Name, RecordType};
use serde_json::{json, Value};

pub use self::{
    auth::{ApiToken, TokenError},
    error::ApiError,
    extract::{JSON, ZONE_FILE},
    metrics::ApiMetrics,
};
use crate::{
    engine::Engine,
    fallback::FallbackStats,
    zone::{normalize, SUPPORTED_TYPES},
    zonefile,
};

/// Largest request body: 1 MiB. A zone file bigger than that is better loaded with
/// `serve --zone-file`; a larger body is refused with 413.
pub const BODY_LIMIT: usize = 1 << 20;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub engine: Arc<Engine>,
    pub fallback_stats: Arc<FallbackStats>,
    token: Option<Arc<ApiToken>>,
    metrics: Arc<ApiMetrics>,
}

impl ApiState {
    /// An API without authentication.
    pub fn new(engine: Arc<Engine>, fallback_stats: Arc<FallbackStats>) -> Self {
        Self {
            engine,
            fallback_stats,
            token: None,
            metrics: Arc::new(ApiMetrics::default()),
        }
    }

    /// Requires `Authorization: Bearer <token>` on every `/v1/*` request.
    pub fn with_token(mut self, token: ApiToken) -> Self {
        self.token = Some(Arc::new(token));
        self
    }
}

pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/v1/stats", get(stats))
        .route("/v1/zones", get(zones::list).post(zones::create))
        .route(
            "/v1/zones/{zone}",
            get(zones::show).patch(zones::patch).delete(zones::delete),
        )
        .route(
            "/v1/zones/{zone}/zonefile",
            get(zones::export).put(zones::import),
        )
        .route("/v1/zones/{zone}/records", get(records::list))
        .route("/v1/zones/{zone}/records/{name}", get(records::at_name))
        .route(
            "/v1/zones/{zone}/records/{name}/{rtype}",
            get(records::get_rrset)
                .put(records::put_rrset)
                .delete(records::delete_rrset),
        )
        .route("/v1/zones/{zone}/changes", post(records::batch))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics::render))
        .merge(v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            metrics::track,
        ))
        .with_state(state)
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint (see docs/openapi.yaml)",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint",
    )
}

/// Counters: the XDP program's (summed over CPUs) and the fallback's.
async fn stats(State(st): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let mut answered = serde_json::Map::new();
    let mut passed = serde_json::Map::new();
    let mut dropped = serde_json::Map::new();
    if let Some(r) = st.engine.with_fast(|f| f.stats()) {
        let counters = r.map_err(|e| ApiError::internal(&e))?;
        for (stat, n) in counters {
            let (metric, label) = stat.label();
            let m = match metric {
                dns_common::stat::ANSWERED => &mut answered,
                dns_common::stat::DROPPED => &mut dropped,
                _ => &mut passed,
            };
            m.insert(label.to_owned(), json!(n));
        }
    }
    let fallback: serde_json::Map<String, Value> = st
        .fallback_stats
        .snapshot()
        .into_iter()
        .map(|(k, v)| (k, json!(v)))
        .collect();
    Ok(Json(json!({
        "xdp": { "answered": answered, "passed": passed, "dropped": dropped },
        "fallback": fallback,
    })))
}

/// A zone name (from the path or a body): absolute whether or not it ends in a dot.
fn parse_zone_name(text: &str, field: &str) -> Result<Name, ApiError> {
    zonefile::parse_name(text, None)
        .map(|n| normalize(&n))
        .map_err(|e| ApiError::bad(field, format!("bad zone name: {e}")))
}

/// An owner name, as given in a path or a change: `@` is the apex; a name ending in `.` is
/// absolute (and must be inside the zone); a name ending in the zone's name is taken as
/// absolute too; anything else is relative to the zone.
fn parse_owner(text: &str, apex: &Name, field: &str) -> Result<Name, ApiError> {
    let bad = |e: String| ApiError::bad(field, format!("bad name: {e}"));
    if text == "@" {
        return Ok(apex.clone());
    }
    let name = zonefile::parse_name(text, None).map_err(bad)?;
    if zonefile::is_absolute(text) || apex.zone_of(&name) {
        return Ok(name);
    }
    zonefile::parse_name(text, Some(apex)).map_err(bad)
}

/// A record type that can be stored as an RRset (not SOA, which the zone's settings make).
fn parse_settable_type(text: &str, field: &str) -> Result<RecordType, ApiError> {
    let rtype = parse_any_type(text, field)?;
    if rtype == RecordType::SOA {
        return Err(ApiError::bad(
            field,
            "the SOA record is changed with PATCH /v1/zones/{zone}",
        ));
    }
    if !SUPPORTED_TYPES.contains(&rtype) {
        let list: Vec<String> = SUPPORTED_TYPES.iter().map(ToString::to_string).collect();
        return Err(ApiError::bad(
            field,
            format!(
                "record type {rtype} is not supported (supported: {})",
                list.join(", ")
            ),
        ));
    }
    Ok(rtype)
}

fn parse_any_type(text: &str, field: &str) -> Result<RecordType, ApiError> {
    zonefile::parse_type(text).map_err(|e| ApiError::bad(field, e))
}
