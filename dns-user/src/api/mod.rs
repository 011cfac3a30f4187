//! The HTTP API (JSON over HTTP/1.1, axum). Every change goes through [`Engine::apply`], which
//! answers only once the change is committed to disk and in the fast path's maps: a 2xx means
//! the next query gets the new data.
//!
//! Endpoints (docs/openapi.yaml describes each):
//! - `GET /healthz`, `GET /readyz`, `GET /metrics`: unauthenticated, nothing secret. `/healthz`
//!   says the process answers; `/readyz` says whether a change would be kept (the store is
//!   loaded and writable: 503 with the reason if not) and lists quarantined store entries.
//! - `GET /v1/stats`: the XDP and fallback counters as JSON.
//! - `GET|POST /v1/zones`, `GET|PATCH|DELETE /v1/zones/{zone}`: zones (`api/zones.rs`).
//! - `GET|PUT /v1/zones/{zone}/zonefile`: master-file export and import.
//! - `GET /v1/zones/{zone}/records[/{name}]`, `GET|PUT|DELETE
//!   /v1/zones/{zone}/records/{name}/{type}`, `POST /v1/zones/{zone}/changes`: records
//!   (`api/records.rs`).
//! - `GET /api/v1/servers/localhost/zones[/{zone_id}]`, `PATCH
//!   /api/v1/servers/localhost/zones/{zone_id}`: the PowerDNS HTTP API's record changes
//!   (`api/pdns.rs`), for clients written for PowerDNS; authenticated by `X-API-Key`.
//!
//! With a token ([`ApiState::with_token`]) every `/v1/*` request needs `Authorization: Bearer
//! <token>`. JSON bodies are limited to [`BODY_LIMIT`], zone files to
//! [`ApiState::with_zonefile_max_bytes`] ([`ZONEFILE_MAX_BYTES`] by default). Errors are `{"error": .., "field": ..}`
//! ([`ApiError`]); nothing changes on any error, because requests are parsed whole before the
//! change is made and the zone model checks a change whole before applying it.

mod auth;
mod error;
mod extract;
mod fleet;
mod metrics;
mod pdns;
mod records;
mod zones;

use std::sync::Arc;

use axum::{
    extract::{DefaultBodyLimit, State},
    http::StatusCode,
    middleware,
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use hickory_proto::rr::{Name, RecordType};
use serde_json::{json, Value};

#[cfg(test)]
pub(crate) use self::error::zone_error_field;
pub use self::{
    auth::{ApiToken, TokenError},
    error::ApiError,
    extract::{JSON, ZONE_FILE},
    fleet::{track_fleet_writes, REVISION_HEADER},
    metrics::ApiMetrics,
};
use crate::{
    engine::Engine,
    fallback::FallbackStats,
    zone::{normalize, SUPPORTED_TYPES},
    zonefile::presentation,
};

/// Largest JSON request body: 1 MiB (a larger one is refused with 413). Zone files have their
/// own limit, [`ZONEFILE_MAX_BYTES`].
pub const BODY_LIMIT: usize = 1 << 20;

/// Default largest zone file `PUT /v1/zones/{zone}/zonefile` takes: 64 MiB, so that what an
/// export gives back can be imported; `serve --zonefile-max-bytes` changes it.
pub const ZONEFILE_MAX_BYTES: usize = 64 << 20;

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub engine: Arc<Engine>,
    pub fallback_stats: Arc<FallbackStats>,
    token: TokenSlot,
    metrics: Arc<ApiMetrics>,
    /// Largest zone-file body, in bytes.
    zonefile_max_bytes: usize,
    /// The fleet this server is an edge of (`serve --etcd`); `None` for a single host.
    pub fleet: Option<Arc<crate::fleet::Fleet>>,
}

impl ApiState {
    /// An API without authentication.
    pub fn new(engine: Arc<Engine>, fallback_stats: Arc<FallbackStats>) -> Self {
        Self {
            engine,
            fallback_stats,
            token: TokenSlot::default(),
            metrics: Arc::new(ApiMetrics::default()),
            zonefile_max_bytes: ZONEFILE_MAX_BYTES,
            fleet: None,
        }
    }

    /// Makes this API an edge's: writes are tracked as fleet writes, `/v1/edges` and
    /// `/v1/changes/{id}` answer, `/readyz` and `/metrics` tell the fleet's state.
    pub fn with_fleet(mut self, fleet: Arc<crate::fleet::Fleet>) -> Self {
        self.fleet = Some(fleet);
        self
    }

    /// Sets the largest zone file a zone-file import takes (JSON bodies keep [`BODY_LIMIT`]).
    pub fn with_zonefile_max_bytes(mut self, bytes: usize) -> Self {
        self.zonefile_max_bytes = bytes;
        self
    }

    /// Requires `Authorization: Bearer <token>` on every `/v1/*` request.
    pub fn with_token(self, token: ApiToken) -> Self {
        self.token.store(Some(Arc::new(token)));
        self
    }

    /// The token requests are checked against, shared with the handlers: what is stored in it
    /// applies from the next request on (a reload swaps the token without a restart).
    pub fn token_slot(&self) -> TokenSlot {
        self.token.clone()
    }
}

/// The API token in force, or none (an open API); swapped whole, never half-written.
pub type TokenSlot = Arc<arc_swap::ArcSwapOption<ApiToken>>;

impl ApiState {
    /// The token in force now.
    fn token(&self) -> Option<Arc<ApiToken>> {
        self.token.load_full()
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
        .route("/v1/edges", get(fleet::edges))
        .route("/v1/changes/{id}", get(fleet::change))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    let mut writes = v1.merge(pdns::routes(state.clone()));
    if let Some(fleet) = &state.fleet {
        writes = writes.route_layer(middleware::from_fn_with_state(fleet.clone(), fleet::track));
    }
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics::render))
        .merge(writes)
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

/// `GET /readyz`: 200 when the store is loaded and writable, else 503 with the reason. A store
/// that failed is probed (reopened, one small commit), so this turns 200 once the fault is gone.
/// Quarantined entries are listed either way: they don't stop the rest from being served.
async fn readyz(State(st): State<ApiState>) -> Response {
    let engine = st.engine.clone();
    // The probe may reopen the database and fsync: keep it off the async workers.
    let status = match tokio::task::spawn_blocking(move || engine.store().probe()).await {
        Ok(s) => s,
        Err(e) => return ApiError::internal(&e).into_response(),
    };
    let fleet = st.fleet.as_ref().map(|f| f.status());
    let reason = if !status.loaded {
        Some("the store is not loaded yet".to_string())
    } else if fleet.as_ref().is_some_and(|f| !f.synced) {
        Some("the edge has not reconciled with the fleet (etcd) yet".to_string())
    } else {
        status
            .error
            .as_ref()
            .map(|e| format!("the store is not writable: {e}"))
    };
    let mut body = json!({
        "status": if reason.is_some() { "not ready" } else { "ready" },
        "store": status,
    });
    if let Some(f) = fleet {
        // `connected`, `disconnected` (serving the local copy) or `syncing`; `fleet_stale`:
        // misses in our zones are answered SERVFAIL (cut off longer than the lease, or not
        // registered: writes may have gone by without this edge).
        body["fleet"] = Value::String(f.state.to_string());
        body["fleet_stale"] = Value::Bool(f.stale);
        body["fleet_revision"] = json!(f.applied_revision);
    }
    match reason {
        None => (StatusCode::OK, Json(body)).into_response(),
        Some(r) => {
            let mut body = body;
            body["error"] = Value::String(r);
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
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
    let mut rrl = serde_json::Map::new();
    if let Some(r) = st.engine.with_fast(|f| f.stats()) {
        let counters = r.map_err(|e| ApiError::internal(&e))?;
        for (stat, n) in counters {
            let (metric, label) = stat.label();
            let m = match metric {
                dns_common::stat::ANSWERED => &mut answered,
                dns_common::stat::DROPPED => &mut dropped,
                dns_common::stat::RRL => &mut rrl,
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
        "xdp": { "answered": answered, "passed": passed, "dropped": dropped, "rrl": rrl },
        "fallback": fallback,
    })))
}

/// A zone name (from the path or a body): absolute whether or not it ends in a dot.
fn parse_zone_name(text: &str, field: &str) -> Result<Name, ApiError> {
    presentation::parse_name(text, None)
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
    let name = presentation::parse_name(text, None).map_err(bad)?;
    if presentation::is_absolute(text) || apex.zone_of(&name) {
        return Ok(name);
    }
    presentation::parse_name(text, Some(apex)).map_err(bad)
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
    presentation::parse_type(text).map_err(|e| ApiError::bad(field, e))
}
