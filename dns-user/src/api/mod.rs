//! The HTTP update API (JSON). Every change goes through [`Engine::apply`], which answers only
//! once the change is committed to disk and in the fast path's maps.

use std::{net::IpAddr, str::FromStr, sync::Arc};

use axum::{
    extract::{rejection::JsonRejection, Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, put},
    Json, Router,
};
use hickory_proto::rr::{
    rdata::{A, AAAA, CNAME},
    Name, RData, RecordType,
};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    engine::{Engine, EngineError, Op},
    fallback::FallbackStats,
};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    pub engine: Arc<Engine>,
    pub fallback_stats: Arc<FallbackStats>,
}

/// A request error: status and a JSON body `{"error": reason, "field": field}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: String,
    field: Option<String>,
}

impl ApiError {
    fn bad(field: &str, reason: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            reason: reason.into(),
            field: Some(field.to_owned()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.reason });
        if let Some(f) = self.field {
            body["field"] = Value::String(f);
        }
        (self.status, Json(body)).into_response()
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match &e {
            EngineError::Invalid(z) => {
                let status = match z {
                    crate::zone::ZoneError::UnknownZone { .. }
                    | crate::zone::ZoneError::NoSuchRrset { .. } => StatusCode::NOT_FOUND,
                    crate::zone::ZoneError::ZoneExists { .. } => StatusCode::CONFLICT,
                    _ => StatusCode::UNPROCESSABLE_ENTITY,
                };
                Self {
                    status,
                    reason: z.to_string(),
                    field: Some(z.field()),
                }
            }
            EngineError::Store(_) | EngineError::FastPath(_) => {
                let mut reason = e.to_string();
                let mut cause = std::error::Error::source(&e);
                while let Some(c) = cause {
                    reason.push_str(": ");
                    reason.push_str(&c.to_string());
                    cause = c.source();
                }
                Self {
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    reason,
                    field: None,
                }
            }
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        Self {
            status: r.status(),
            reason: r.body_text(),
            field: None,
        }
    }
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/stats", get(stats))
        .route(
            "/v1/zones/{zone}/records/{name}/{rtype}",
            put(put_rrset).delete(delete_rrset),
        )
        .with_state(state)
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Counters: the XDP program's (summed over CPUs) and the fallback's.
async fn stats(State(st): State<ApiState>) -> Result<Json<Value>, ApiError> {
    let mut answered = serde_json::Map::new();
    let mut passed = serde_json::Map::new();
    if let Some(r) = st.engine.with_fast(|f| f.stats()) {
        let counters = r.map_err(|e| ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            reason: e.to_string(),
            field: None,
        })?;
        for (stat, n) in counters {
            let (metric, label) = stat.label();
            let m = if metric == "answered" {
                &mut answered
            } else {
                &mut passed
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
        "xdp": { "answered": answered, "passed": passed },
        "fallback": fallback,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RrsetBody {
    ttl: u32,
    records: Vec<String>,
}

/// The zone apex from the path (absolute, any case).
fn parse_zone(zone: &str) -> Result<Name, ApiError> {
    let mut n =
        Name::from_ascii(zone).map_err(|e| ApiError::bad("zone", format!("bad zone name: {e}")))?;
    n.set_fqdn(true);
    Ok(n)
}

/// An owner name from the path: `@` is the apex, a name ending in the zone is absolute, anything
/// else is relative to the zone.
fn parse_owner(name: &str, apex: &Name) -> Result<Name, ApiError> {
    if name == "@" {
        return Ok(apex.clone());
    }
    let mut n =
        Name::from_ascii(name).map_err(|e| ApiError::bad("name", format!("bad name: {e}")))?;
    n.set_fqdn(true);
    if apex.zone_of(&n) {
        return Ok(n);
    }
    n.set_fqdn(false);
    n.append_domain(apex)
        .map_err(|e| ApiError::bad("name", format!("bad name: {e}")))
}

fn parse_type(t: &str) -> Result<RecordType, ApiError> {
    RecordType::from_str(&t.to_ascii_uppercase())
        .map_err(|_| ApiError::bad("type", format!("unknown record type {t}")))
}

/// Parses one record's text for `rtype`.
pub fn parse_rdata(rtype: RecordType, text: &str, index: usize) -> Result<RData, ApiError> {
    let field = format!("records[{index}]");
    let bad = |what: &str| {
        ApiError::bad(
            &field,
            format!("not a valid {rtype} record ({what}): {text:?}"),
        )
    };
    match rtype {
        RecordType::A => match IpAddr::from_str(text) {
            Ok(IpAddr::V4(a)) => Ok(RData::A(A(a))),
            _ => Err(bad("an IPv4 address")),
        },
        RecordType::AAAA => match IpAddr::from_str(text) {
            Ok(IpAddr::V6(a)) => Ok(RData::AAAA(AAAA(a))),
            _ => Err(bad("an IPv6 address")),
        },
        RecordType::CNAME => {
            let mut n = Name::from_ascii(text).map_err(|_| bad("a domain name"))?;
            n.set_fqdn(true);
            Ok(RData::CNAME(CNAME(n)))
        }
        _ => Err(ApiError::bad(
            "type",
            format!("record type {rtype} is not accepted here yet"),
        )),
    }
}

async fn put_rrset(
    State(st): State<ApiState>,
    Path((zone, name, rtype)): Path<(String, String, String)>,
    body: Result<Json<RrsetBody>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(body) = body?;
    let apex = parse_zone(&zone)?;
    let name = parse_owner(&name, &apex)?;
    let rtype = parse_type(&rtype)?;
    let records = body
        .records
        .iter()
        .enumerate()
        .map(|(i, t)| parse_rdata(rtype, t, i))
        .collect::<Result<Vec<_>, _>>()?;
    let applied = st
        .engine
        .apply(Op::SetRrset {
            apex,
            name,
            rtype,
            ttl: body.ttl,
            records,
        })
        .await?;
    Ok(Json(json!({ "serial": applied.serial })))
}

async fn delete_rrset(
    State(st): State<ApiState>,
    Path((zone, name, rtype)): Path<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let apex = parse_zone(&zone)?;
    let name = parse_owner(&name, &apex)?;
    let rtype = parse_type(&rtype)?;
    let applied = st
        .engine
        .apply(Op::DeleteRrset { apex, name, rtype })
        .await?;
    Ok(Json(json!({ "serial": applied.serial })))
}
