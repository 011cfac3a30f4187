//! The external-dns webhook provider protocol (`serve --webhook-listen`), a thin adapter onto
//! the engine's write path: external-dns (`--provider=webhook`) reads the records, plans, and
//! posts its changes here; each zone's share of them is one [`Edit::Batch`], answered once
//! [`Engine::apply`] returns.
//!
//! - `GET /`: negotiation. Answers `Content-Type: application/external.dns.webhook+json;
//!   version=1` (406 if `Accept` rules it out) and the domain filter, `{"include": [zones]}`,
//!   in external-dns's `DomainFilter` JSON.
//! - `GET /records`: every RRset as an external-dns endpoint (`dnsName`, `targets`,
//!   `recordType`, `recordTTL`).
//! - `POST /records`: `plan.Changes` (`create`, `updateOld`, `updateNew`, `delete`; the
//!   capitalised names of older external-dns too). 204 once applied.
//! - `POST /adjustendpoints`: the desired endpoints in the form `GET /records` gives them
//!   (lower-case names, targets as this server writes them), without those it can't serve.
//! - `GET /healthz`.
//!
//! Targets are record data in presentation format, names absolute with or without the
//! trailing dot; a TXT target in quotes is presentation format too (`"heritage=external-dns,.."`
//! is the one string inside the quotes, and reads back quoted, unchanged), one without quotes is
//! the text as is.
//!
//! `labels` and `providerSpecific` are not stored (external-dns keeps its ownership in TXT
//! registry records, which are stored like any other).
//!
//! There is no authentication: external-dns's webhook client sends no credentials. Listen on
//! localhost, next to external-dns, as its documentation recommends.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, DefaultBodyLimit, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use hickory_proto::rr::{Name, RData, RecordType};
use serde::{de::DeserializeOwned, Deserialize, Deserializer, Serialize};
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::{
    engine::{Engine, EngineError},
    error_chain,
    zone::{normalize, Change, Edit, ZoneError, ZoneSet, SUPPORTED_TYPES},
    zonefile::presentation::{self, format_name, format_rdata},
};

/// The media type (and version) of the protocol; every answer with a body carries it.
pub const MEDIA_TYPE: &str = "application/external.dns.webhook+json;version=1";
/// Largest request body: external-dns's own default cap on webhook bodies (32 MiB, some 60,000
/// records).
pub const BODY_LIMIT: usize = 32 << 20;
/// The TTL of records external-dns creates without one (its `pdns` provider's default).
pub const DEFAULT_TTL: u32 = 300;

/// A refusal: a status and `{"error": "..."}`. external-dns retries 5xx only, so 4xx is for
/// requests that would fail the same way again.
#[derive(Debug)]
pub struct WebhookError {
    status: StatusCode,
    message: String,
}

impl WebhookError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        with_media_type((self.status, Json(json!({ "error": self.message }))).into_response())
    }
}

impl From<BytesRejection> for WebhookError {
    fn from(r: BytesRejection) -> Self {
        Self::new(r.status(), r.body_text())
    }
}

fn with_media_type(mut resp: Response) -> Response {
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(MEDIA_TYPE));
    resp
}

/// The webhook provider's routes.
pub fn router(engine: Arc<Engine>) -> Router {
    Router::new()
        .route("/", get(negotiate))
        .route("/records", get(records).post(apply_changes))
        .route("/adjustendpoints", post(adjust_endpoints))
        .route("/healthz", get(healthz))
        .fallback(|| async {
            WebhookError::new(
                StatusCode::NOT_FOUND,
                "no such endpoint of the webhook provider",
            )
        })
        .method_not_allowed_fallback(|| async {
            WebhookError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(engine)
}

/// external-dns's `endpoint.Endpoint` as JSON. Fields this server has no use for are kept
/// (`extra`) so that `/adjustendpoints` gives them back as they came.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    #[serde(default, deserialize_with = "nullable")]
    pub dns_name: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub targets: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub record_type: String,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "String::is_empty"
    )]
    pub set_identifier: String,
    #[serde(
        default,
        rename = "recordTTL",
        deserialize_with = "nullable",
        skip_serializing_if = "is_zero"
    )]
    pub record_ttl: i64,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub provider_specific: Vec<Value>,
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// Go encodes a nil slice or map as `null`: read it as empty.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// external-dns's `plan.Changes`. Older external-dns sent the field names capitalised (Go
/// decodes either).
#[derive(Debug, Default, Deserialize)]
pub struct Changes {
    #[serde(default, alias = "Create", deserialize_with = "nullable")]
    pub create: Vec<Endpoint>,
    #[serde(
        default,
        rename = "updateOld",
        alias = "UpdateOld",
        deserialize_with = "nullable"
    )]
    pub update_old: Vec<Endpoint>,
    #[serde(
        default,
        rename = "updateNew",
        alias = "UpdateNew",
        deserialize_with = "nullable"
    )]
    pub update_new: Vec<Endpoint>,
    #[serde(default, alias = "Delete", deserialize_with = "nullable")]
    pub delete: Vec<Endpoint>,
}

async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Whether an `Accept` header admits the protocol's media type: `*/*`, `application/*`, or the
/// type itself with no version or version 1.
fn accepts(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let mtype = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut version = None;
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                if k.trim().eq_ignore_ascii_case("version") {
                    version = Some(v.trim().trim_matches('"').to_string());
                }
            }
        }
        match mtype.as_str() {
            "*/*" | "application/*" => true,
            "application/external.dns.webhook+json" => version.is_none_or(|v| v == "1"),
            _ => false,
        }
    })
}

/// `GET /`: the media type and the zones served, as external-dns's domain filter. The filter is
/// read once when external-dns starts: restart it after adding a zone. No zones at all gives
/// an empty filter, which external-dns reads as "every domain"; changes then fail with 422.
async fn negotiate(State(engine): State<Arc<Engine>>, headers: HeaderMap) -> Response {
    if let Some(accept) = headers.get(header::ACCEPT) {
        let ok = accept.to_str().is_ok_and(accepts);
        if !ok {
            return WebhookError::new(
                StatusCode::NOT_ACCEPTABLE,
                format!("this provider speaks {MEDIA_TYPE}"),
            )
            .into_response();
        }
    }
    let zones = engine.zones();
    let mut include: Vec<String> = zones.zones().map(|z| dns_name(z.apex())).collect();
    include.sort();
    let mut resp = with_media_type(Json(json!({ "include": include })).into_response());
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Content-Type"));
    resp
}

/// A name as external-dns writes it: no trailing dot.
fn dns_name(name: &Name) -> String {
    let text = format_name(name);
    match text.strip_suffix('.') {
        Some(t) if !t.is_empty() => t.to_string(),
        _ => text,
    }
}

/// One record as an external-dns target. As its `NewEndpoint` does, a trailing dot is dropped
/// except for TXT (quoted presentation format, so registry records read back as written) and
/// SRV.
pub fn target_text(rdata: &RData) -> String {
    let text = format_rdata(rdata);
    match rdata {
        RData::TXT(_) | RData::SRV(_) => text,
        _ => match text.strip_suffix('.') {
            Some(t) => t.to_string(),
            None => text,
        },
    }
}

/// One target of `rtype`: presentation format with names absolute; TXT in quotes is
/// presentation format too, TXT without quotes the text as is.
pub fn parse_target(rtype: RecordType, text: &str) -> Result<RData, String> {
    if rtype == RecordType::TXT && !text.trim_start().starts_with('"') {
        return presentation::parse_record_text(rtype, text);
    }
    let tokens = presentation::tokenize_rdata(text)?;
    presentation::parse_rdata(rtype, &tokens, None)
}

/// `GET /records`: every RRset of every zone (the SOA aside, which external-dns doesn't manage).
async fn records(State(engine): State<Arc<Engine>>) -> Response {
    let zones = engine.zones();
    let mut out = Vec::new();
    for z in zones.zones() {
        for (name, rtype, ttl, rdata) in z.records() {
            out.push(Endpoint {
                dns_name: dns_name(&name),
                targets: rdata.iter().map(target_text).collect(),
                record_type: rtype.to_string(),
                record_ttl: i64::from(ttl),
                ..Endpoint::default()
            });
        }
    }
    with_media_type(Json(out).into_response())
}

/// What an endpoint asks for, checked against the zones served.
struct Parsed {
    apex: Name,
    name: Name,
    rtype: RecordType,
    ttl: u32,
    records: Vec<RData>,
}

/// Checks one endpoint: a supported type, no set identifier, a name in a zone served, targets
/// that parse, a TTL in range. `with_targets`: it sets an RRset, so it needs targets.
fn parse_endpoint(zones: &ZoneSet, ep: &Endpoint, with_targets: bool) -> Result<Parsed, String> {
    let rtype = presentation::parse_type(&ep.record_type)?;
    if !SUPPORTED_TYPES.contains(&rtype) {
        let list: Vec<String> = SUPPORTED_TYPES.iter().map(ToString::to_string).collect();
        return Err(format!(
            "record type {rtype} is not supported (supported: {})",
            list.join(", ")
        ));
    }
    if !ep.set_identifier.is_empty() {
        return Err(format!(
            "set identifier {:?}: routing policies are not supported",
            ep.set_identifier
        ));
    }
    let name = presentation::parse_name(&ep.dns_name, None)
        .map(|n| normalize(&n))
        .map_err(|e| format!("bad dnsName {:?}: {e}", ep.dns_name))?;
    let apex = zones
        .find_zone(&name)
        .map(|z| z.apex().clone())
        .ok_or_else(|| format!("{} is in no zone this server serves", format_name(&name)))?;
    let ttl = match ep.record_ttl {
        0 => DEFAULT_TTL,
        t => u32::try_from(t).map_err(|_| format!("recordTTL {t} is out of range"))?,
    };
    let mut records = Vec::new();
    if with_targets {
        if ep.targets.is_empty() {
            return Err("no targets".into());
        }
        for (i, t) in ep.targets.iter().enumerate() {
            records.push(
                parse_target(rtype, t)
                    .map_err(|e| format!("targets[{i}] {t:?}: not a valid {rtype} record: {e}"))?,
            );
        }
    }
    Ok(Parsed {
        apex,
        name,
        rtype,
        ttl,
        records,
    })
}

/// Parses a JSON body: 415 unless it says it is JSON, 400 unless it is the expected JSON.
fn parse_body<T: DeserializeOwned>(headers: &HeaderMap, bytes: &[u8]) -> Result<T, WebhookError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    match ctype.as_deref() {
        Some("application/external.dns.webhook+json" | "application/json") => {}
        other => {
            return Err(WebhookError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Type is {other:?}; this endpoint takes {MEDIA_TYPE}"),
            ))
        }
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        WebhookError::new(
            StatusCode::BAD_REQUEST,
            format!("bad request body at {}: {}", e.path(), e.inner()),
        )
    })?;
    de.end().map_err(|e| {
        WebhookError::new(StatusCode::BAD_REQUEST, format!("bad request body: {e}"))
    })?;
    Ok(value)
}

/// One zone's share of a change request, applied as one batch.
struct ZoneBatch {
    apex: Name,
    changes: Vec<Change>,
    /// Where each change came from (`delete[0]`, `create[3]`), for errors.
    origin: Vec<String>,
    /// Whether an RRset exists at this point of the batch, as far as the batch changed it.
    exists: HashMap<(Name, RecordType), bool>,
}

/// `POST /records`: the changes, grouped by zone, each zone's as one [`Edit::Batch`]: deletes
/// first (a CNAME replacing an A is a delete and a create), then updates, then creates.
/// `updateOld` is not needed, as an update replaces the whole RRset. A delete of an RRset that
/// is already gone is skipped, so a retried request does what the first did.
///
/// Every endpoint is checked before any zone is changed: a bad one is 422 and changes nothing.
/// The zones are then changed in the order they first appear; when one fails, the others are
/// still tried, and the answer lists each zone's outcome: 500 if a failure is ours (a retry may
/// succeed), 422 if the zone model refused the change (a retry won't), 204 if all went in.
async fn apply_changes(
    State(engine): State<Arc<Engine>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, WebhookError> {
    let changes: Changes = parse_body(&headers, &body?)?;
    let zones = engine.zones();
    let mut batches: Vec<ZoneBatch> = Vec::new();
    let lists = [
        ("delete", &changes.delete, false),
        ("updateNew", &changes.update_new, true),
        ("create", &changes.create, true),
    ];
    for (list, endpoints, set) in lists {
        for (i, ep) in endpoints.iter().enumerate() {
            let at = format!("{list}[{i}]");
            let p = parse_endpoint(&zones, ep, set)
                .map_err(|e| WebhookError::unprocessable(format!("{at}: {e}")))?;
            let pos = match batches.iter().position(|b| b.apex == p.apex) {
                Some(pos) => pos,
                None => {
                    batches.push(ZoneBatch {
                        apex: p.apex.clone(),
                        changes: Vec::new(),
                        origin: Vec::new(),
                        exists: HashMap::new(),
                    });
                    batches.len() - 1
                }
            };
            let batch = &mut batches[pos];
            let key = (p.name.clone(), p.rtype);
            let exists = *batch.exists.entry(key.clone()).or_insert_with(|| {
                zones
                    .zone(&p.apex)
                    .is_some_and(|z| z.has_rrset(&p.name, p.rtype))
            });
            let change = if set {
                Change::Set {
                    name: p.name,
                    rtype: p.rtype,
                    ttl: p.ttl,
                    records: p.records,
                }
            } else if exists {
                Change::Delete {
                    name: p.name,
                    rtype: p.rtype,
                }
            } else {
                continue;
            };
            batch.exists.insert(key, set);
            batch.changes.push(change);
            batch.origin.push(at);
        }
    }
    drop(zones);

    let mut outcomes = Vec::new();
    let mut status = StatusCode::NO_CONTENT;
    for batch in batches {
        if batch.changes.is_empty() {
            continue;
        }
        let zone = format_name(&batch.apex);
        let n = batch.changes.len();
        match engine.apply(Edit::Batch(batch.apex, batch.changes)).await {
            Ok(applied) => {
                info!(%zone, changes = n, serial = applied.serial, "webhook changes applied");
                outcomes.push(json!({ "zone": zone, "applied": true }));
            }
            Err(e) => {
                let (code, reason) = match &e {
                    EngineError::Invalid(ZoneError::Batch { index, source }) => (
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!(
                            "{}: {source}",
                            batch.origin.get(*index).map_or("?", String::as_str)
                        ),
                    ),
                    EngineError::Invalid(z) => (StatusCode::UNPROCESSABLE_ENTITY, z.to_string()),
                    other => (StatusCode::INTERNAL_SERVER_ERROR, error_chain(other)),
                };
                warn!(%zone, "webhook changes refused: {reason}");
                if status != StatusCode::INTERNAL_SERVER_ERROR {
                    status = code;
                }
                outcomes.push(json!({ "zone": zone, "applied": false, "error": reason }));
            }
        }
    }
    if status == StatusCode::NO_CONTENT {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o["applied"] == false)
        .filter_map(|o| o["zone"].as_str())
        .collect();
    let body = json!({
        "error": format!("changes to {} failed", failed.join(", ")),
        "zones": outcomes,
    });
    Ok(with_media_type((status, Json(body)).into_response()))
}

/// `POST /adjustendpoints`: each endpoint as `GET /records` would give it back (lower-case
/// name without the trailing dot, targets as written here, such as an unquoted TXT quoted), so
/// that external-dns's plan compares like with like and doesn't update forever. Endpoints this
/// server can't serve (a type it doesn't store, a set identifier, a name outside its zones, a
/// target that doesn't parse) are left out with a warning, as external-dns's own providers do,
/// so that one bad source doesn't block every other change.
async fn adjust_endpoints(
    State(engine): State<Arc<Engine>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, WebhookError> {
    let endpoints: Vec<Endpoint> = parse_body(&headers, &body?)?;
    let zones = engine.zones();
    let mut out = Vec::with_capacity(endpoints.len());
    for mut ep in endpoints {
        match parse_endpoint(&zones, &ep, !ep.targets.is_empty()) {
            Ok(p) => {
                ep.dns_name = dns_name(&p.name);
                if !p.records.is_empty() {
                    ep.targets = p.records.iter().map(target_text).collect();
                }
                out.push(ep);
            }
            Err(e) => warn!(
                dns_name = %ep.dns_name,
                record_type = %ep.record_type,
                "left out of external-dns's plan: {e}"
            ),
        }
    }
    Ok(with_media_type(Json(out).into_response()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers() {
        assert!(accepts(MEDIA_TYPE));
        assert!(accepts("application/external.dns.webhook+json; version=1"));
        assert!(accepts("application/external.dns.webhook+json"));
        assert!(accepts("text/html, */*;q=0.1"));
        assert!(!accepts("application/external.dns.webhook+json;version=2"));
        assert!(!accepts("text/html"));
    }

    #[test]
    fn targets_read_back_as_written() {
        for (rtype, text) in [
            (
                RecordType::TXT,
                "\"heritage=external-dns,external-dns/owner=default\"",
            ),
            (RecordType::TXT, "\"two\" \"strings\""),
            (RecordType::CNAME, "app.example.org"),
            (RecordType::MX, "10 mail.example.org"),
            (RecordType::SRV, "0 50 443 target.example.org."),
            (RecordType::A, "192.0.2.1"),
            (RecordType::CAA, "0 issue \"letsencrypt.org\""),
        ] {
            let rdata = parse_target(rtype, text).unwrap();
            assert_eq!(target_text(&rdata), text, "{rtype}");
        }
        let raw = parse_target(RecordType::TXT, "hello world").unwrap();
        assert_eq!(target_text(&raw), "\"hello world\"");
    }
}
