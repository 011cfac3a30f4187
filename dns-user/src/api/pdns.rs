//! The part of the PowerDNS Authoritative HTTP API that record-changing clients use
//! (external-dns's `pdns` provider, Terraform's PowerDNS provider, scripts written for
//! PowerDNS), as a thin adapter onto the same write path as `/v1`: a PATCH becomes one
//! [`Edit::Batch`], validated by the zone model and answered once [`Engine::apply`] returns.
//!
//! - `GET /api`, `GET /api/v1/servers`, `GET /api/v1/servers/localhost`: discovery.
//! - `GET /api/v1/servers/localhost/zones[?zone=NAME]`: the zones, without their records.
//! - `GET /api/v1/servers/localhost/zones/{zone_id}[?rrsets=false&rrset_name=&rrset_type=]`:
//!   a zone with its RRsets (SOA included), content in presentation format.
//! - `PATCH /api/v1/servers/localhost/zones/{zone_id}`: `{"rrsets": [{name, type, ttl,
//!   changetype: REPLACE|DELETE, records: [{content, disabled}]}]}`, all or nothing, 204.
//!
//! Differences from PowerDNS, each refused with 422 rather than half done: no disabled records,
//! comments, PRUNE/EXTEND, SOA edits (use `PATCH /v1/zones/{zone}`), or record types outside
//! the zone model's. Zones are created and deleted with `/v1/zones`; every zone is `Native`.
//!
//! Authentication is PowerDNS's `X-API-Key` header carrying the API token (or the `/v1`
//! `Authorization: Bearer` header), when a token is configured.

use std::collections::{HashMap, HashSet};

use axum::{
    body::Bytes,
    extract::{rejection::BytesRejection, Request, State},
    http::{header, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use hickory_proto::rr::{Name, RData, RecordType};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{auth, extract::ApiQuery, ApiState};
use crate::{
    engine::EngineError,
    zone::{normalize, Change, Edit, Zone, ZoneError, SUPPORTED_TYPES},
    zonefile::presentation::{self, format_name, format_rdata},
};

/// PowerDNS names its one server `localhost`; clients put that id in every URL.
const SERVER_ID: &str = "localhost";
const ZONES_URL: &str = "/api/v1/servers/localhost/zones";

/// A refusal as PowerDNS words it: `{"error": "..."}` with PowerDNS's status: 400 for a body
/// that isn't JSON, 401 for a wrong key, 404 for an unknown zone, 422 for data it won't take.
#[derive(Debug)]
pub struct PdnsError {
    status: StatusCode,
    message: String,
}

impl PdnsError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    fn no_zone(apex: &Name) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("Could not find domain '{}'", format_name(apex)),
        )
    }
}

impl IntoResponse for PdnsError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

impl From<BytesRejection> for PdnsError {
    fn from(r: BytesRejection) -> Self {
        Self::new(r.status(), r.body_text())
    }
}

impl From<EngineError> for PdnsError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(ZoneError::UnknownZone { apex }) => Self::new(
                StatusCode::NOT_FOUND,
                format!("Could not find domain '{apex}'"),
            ),
            EngineError::Invalid(z) => Self::unprocessable(z.to_string()),
            EngineError::Fleet(f) => Self::new(
                StatusCode::from_u16(f.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                crate::error_chain(&f),
            ),
            e => Self::new(StatusCode::INTERNAL_SERVER_ERROR, crate::error_chain(&e)),
        }
    }
}

/// The PowerDNS routes, with their own authentication (`X-API-Key`).
pub(super) fn routes(state: ApiState) -> Router<ApiState> {
    Router::new()
        .route("/api", get(api_versions))
        .route("/api/v1/servers", get(servers))
        .route("/api/v1/servers/localhost", get(server))
        .route(ZONES_URL, get(list_zones))
        .route(
            "/api/v1/servers/localhost/zones/{zone_id}",
            get(show_zone).patch(patch_zone),
        )
        .route_layer(middleware::from_fn_with_state(state, require_api_key))
}

/// Lets a request through with the API token in `X-API-Key` (PowerDNS's header) or in
/// `Authorization: Bearer`, or with anything when no token is configured. Runs before the body
/// is read, so a refused request changes nothing.
async fn require_api_key(State(st): State<ApiState>, req: Request, next: Next) -> Response {
    let Some(token) = st.token() else {
        return next.run(req).await;
    };
    let headers = req.headers();
    let key_ok = headers
        .get("x-api-key")
        .is_some_and(|v| token.matches(v.as_bytes().trim_ascii()));
    if key_ok || auth::bearer_matches(&token, headers) {
        return next.run(req).await;
    }
    let mut resp = PdnsError::new(
        StatusCode::UNAUTHORIZED,
        "Unauthorized: missing or wrong X-API-Key",
    )
    .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("X-API-Key"),
    );
    resp
}

async fn api_versions() -> Json<Value> {
    Json(json!([{ "url": "/api/v1", "version": 1 }]))
}

fn server_json() -> Value {
    json!({
        "type": "Server",
        "id": SERVER_ID,
        "daemon_type": "authoritative",
        "version": concat!("edgedns-", env!("CARGO_PKG_VERSION")),
        "url": "/api/v1/servers/localhost",
        "config_url": "/api/v1/servers/localhost/config{/config_setting}",
        "zones_url": "/api/v1/servers/localhost/zones{/zone}",
    })
}

async fn servers() -> Json<Value> {
    Json(json!([server_json()]))
}

async fn server() -> Json<Value> {
    Json(server_json())
}

/// A zone's id as PowerDNS makes it: the name with its trailing dot, every byte other than
/// letters, digits, `.` and `-` written `=XX` (so `_` is `=5F`, `/` is `=2F`); the root is `=2E`.
pub fn zone_id(apex: &Name) -> String {
    let name = format_name(apex);
    if name == "." {
        return "=2E".into();
    }
    let mut id = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
            id.push(char::from(b));
        } else {
            id.push_str(&format!("={b:02X}"));
        }
    }
    id
}

/// The zone a PowerDNS zone id names: `=XX` escapes undone (either case of hex digits), then read
/// as a name, absolute with or without the trailing dot (`example.org.` and `example.org` are
/// the same zone).
pub fn parse_zone_id(id: &str) -> Result<Name, PdnsError> {
    let bad = || PdnsError::new(StatusCode::BAD_REQUEST, format!("bad zone id {id:?}"));
    if id.is_empty() {
        return Err(bad());
    }
    let mut bytes = Vec::with_capacity(id.len());
    let mut rest = id.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'=' {
            let hex = tail.get(..2).ok_or_else(bad)?;
            let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
            bytes.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    presentation::parse_name(&text, None)
        .map(|n| normalize(&n))
        .map_err(|e| PdnsError::unprocessable(format!("Unable to parse DNS Name '{text}': {e}")))
}

/// The fields `GET .../zones` gives each zone, as PowerDNS has them for a native zone without
/// DNSSEC.
fn zone_info(z: &Zone) -> serde_json::Map<String, Value> {
    let id = zone_id(z.apex());
    [
        ("url", json!(format!("{ZONES_URL}/{id}"))),
        ("id", json!(id)),
        ("name", json!(format_name(z.apex()))),
        ("kind", json!("Native")),
        ("catalog", json!("")),
        ("account", json!("")),
        ("masters", json!([])),
        ("serial", json!(z.serial())),
        ("notified_serial", json!(0)),
        ("edited_serial", json!(z.serial())),
        ("last_check", json!(0)),
        ("dnssec", json!(false)),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect()
}

/// `GET /api/v1/servers/localhost/zones[?zone=NAME]`. Other query parameters (`dnssec`) are
/// ignored, as PowerDNS ignores those it doesn't know.
async fn list_zones(
    State(st): State<ApiState>,
    ApiQuery(query): ApiQuery,
) -> Result<Json<Value>, PdnsError> {
    let zones = st.engine.zones();
    let only = match query.get("zone") {
        None => None,
        Some(z) => Some(normalize(&presentation::parse_name(z, None).map_err(
            |e| PdnsError::unprocessable(format!("Unable to parse DNS Name '{z}': {e}")),
        )?)),
    };
    let list: Vec<Value> = zones
        .zones()
        .filter(|z| only.as_ref().is_none_or(|n| z.apex() == n))
        .map(|z| Value::Object(zone_info(z)))
        .collect();
    Ok(Json(Value::Array(list)))
}

fn rrset_json(name: &Name, rtype: RecordType, ttl: u32, records: &[RData]) -> Value {
    let records: Vec<Value> = records
        .iter()
        .map(|r| json!({ "content": format_rdata(r), "disabled": false }))
        .collect();
    json!({
        "name": format_name(name),
        "type": rtype.to_string(),
        "ttl": ttl,
        "records": records,
        "comments": [],
    })
}

/// A PowerDNS boolean query parameter: `true` or `false`.
fn bool_param(
    query: &HashMap<String, String>,
    key: &str,
    default: bool,
) -> Result<bool, PdnsError> {
    match query.get(key).map(String::as_str) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(PdnsError::unprocessable(format!(
            "'{key}' request parameter value '{v}' is not supported"
        ))),
    }
}

/// `GET /api/v1/servers/localhost/zones/{zone_id}`: the zone and its RRsets (SOA first, then
/// by owner in canonical order), unless `rrsets=false`; `rrset_name` (and `rrset_type`) narrow
/// them to one name (and type).
async fn show_zone(
    State(st): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    ApiQuery(query): ApiQuery,
) -> Result<Json<Value>, PdnsError> {
    let apex = parse_zone_id(&id)?;
    let zones = st.engine.zones();
    let z = zones.zone(&apex).ok_or_else(|| PdnsError::no_zone(&apex))?;
    let with_rrsets = bool_param(&query, "rrsets", true)?;
    let only_name = match query.get("rrset_name") {
        None => None,
        Some(n) => Some(normalize(&presentation::parse_name(n, None).map_err(
            |e| PdnsError::unprocessable(format!("Unable to parse DNS Name '{n}': {e}")),
        )?)),
    };
    let only_type = match query.get("rrset_type") {
        None => None,
        Some(t) => Some(presentation::parse_type(t).map_err(PdnsError::unprocessable)?),
    };
    let mut doc = zone_info(z);
    for (k, v) in [
        ("soa_edit_api", json!("")),
        ("soa_edit", json!("")),
        ("nsec3param", json!("")),
        ("nsec3narrow", json!(false)),
        ("api_rectify", json!(false)),
        ("master_tsig_key_ids", json!([])),
        ("slave_tsig_key_ids", json!([])),
    ] {
        doc.insert(k.into(), v);
    }
    if with_rrsets {
        let wanted = |name: &Name, rtype: RecordType| {
            only_name.as_ref().is_none_or(|n| n == name) && only_type.is_none_or(|t| t == rtype)
        };
        let mut rrsets = Vec::new();
        let soa = z.soa_record();
        if wanted(z.apex(), RecordType::SOA) {
            rrsets.push(rrset_json(
                z.apex(),
                RecordType::SOA,
                soa.ttl(),
                std::slice::from_ref(soa.data()),
            ));
        }
        let from = only_name.clone().unwrap_or_else(|| z.apex().clone());
        for (name, rtype, ttl, records) in z.records_from(&from) {
            if only_name.as_ref().is_some_and(|n| *n != name) {
                break;
            }
            if wanted(&name, rtype) {
                rrsets.push(rrset_json(&name, rtype, ttl, &records));
            }
        }
        doc.insert("rrsets".into(), Value::Array(rrsets));
    }
    Ok(Json(Value::Object(doc)))
}

/// `PATCH .../zones/{zone_id}`. Fields not named here are ignored, as PowerDNS ignores them:
/// clients send leftovers of older API versions (Terraform's provider a `name`, `type` and `ttl`
/// in every record, lego a `kind` in every RRset). Those that would change what is stored and
/// can't be honoured (disabled records, comments, `set-ptr`, `priority`) are read and refused.
#[derive(Deserialize)]
struct PatchBody {
    rrsets: Option<Vec<RrsetPatch>>,
}

/// One RRset of a PATCH.
#[derive(Deserialize)]
struct RrsetPatch {
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    ttl: Option<u32>,
    changetype: String,
    records: Option<Vec<RecordPatch>>,
    comments: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct RecordPatch {
    content: String,
    disabled: Option<bool>,
    #[serde(rename = "set-ptr")]
    set_ptr: Option<bool>,
    /// Refused, as PowerDNS refuses it: the priority is part of the content.
    priority: Option<Value>,
}

/// Parses a PATCH body: not JSON is 400, JSON of the wrong shape 422 (PowerDNS's split).
fn parse_body(bytes: &[u8]) -> Result<PatchBody, PdnsError> {
    if bytes.trim_ascii().is_empty() {
        return Err(PdnsError::new(
            StatusCode::BAD_REQUEST,
            "JSON document expected in request body, but body was empty",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let body: PatchBody = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            PdnsError::unprocessable(format!("{path}: {inner}"))
        } else {
            PdnsError::new(
                StatusCode::BAD_REQUEST,
                format!("request body is not valid JSON: {inner}"),
            )
        }
    })?;
    de.end().map_err(|e| {
        PdnsError::new(
            StatusCode::BAD_REQUEST,
            format!("request body is not valid JSON: {e}"),
        )
    })?;
    Ok(body)
}

/// An owner name in a PATCH: absolute, with the trailing dot, as PowerDNS requires ("not
/// canonical" otherwise).
fn parse_rrset_name(text: &str) -> Result<Name, PdnsError> {
    if !presentation::is_absolute(text) {
        return Err(PdnsError::unprocessable(format!(
            "DNS Name '{text}' is not canonical"
        )));
    }
    presentation::parse_name(text, None)
        .map(|n| normalize(&n))
        .map_err(|e| PdnsError::unprocessable(format!("Unable to parse DNS Name '{text}': {e}")))
}

fn parse_rrset_type(text: &str, name: &str) -> Result<RecordType, PdnsError> {
    let rtype = presentation::parse_type(text)
        .map_err(|e| PdnsError::unprocessable(format!("RRset {name} IN {text}: {e}")))?;
    if rtype == RecordType::SOA {
        return Err(PdnsError::unprocessable(format!(
            "RRset {name} IN SOA: the SOA is changed with PATCH /v1/zones/{{zone}}, not here"
        )));
    }
    if !SUPPORTED_TYPES.contains(&rtype) {
        return Err(PdnsError::unprocessable(format!(
            "RRset {name} IN {rtype}: {}",
            unsupported_types(rtype)
        )));
    }
    Ok(rtype)
}

fn unsupported_types(rtype: RecordType) -> String {
    let list: Vec<String> = SUPPORTED_TYPES.iter().map(ToString::to_string).collect();
    format!(
        "record type {rtype} is not supported (supported: {})",
        list.join(", ")
    )
}

/// One record's content in presentation format, as PowerDNS takes it: TXT quoted
/// (`"\"v=spf1 -all\""`), names in the data absolute.
pub fn parse_content(rtype: RecordType, content: &str) -> Result<RData, String> {
    let tokens = presentation::tokenize_rdata(content)?;
    presentation::parse_rdata(rtype, &tokens, None)
}

/// `PATCH /api/v1/servers/localhost/zones/{zone_id}`: the RRset changes as one
/// [`Edit::Batch`], all or nothing, one serial bump; 204 once applied.
///
/// DELETE of an RRset that doesn't exist is skipped, as PowerDNS does nothing for it (the zone
/// model refuses such a delete), and so is REPLACE with no records of a missing RRset; a PATCH
/// left with nothing to do answers 204 and changes nothing. The body's Content-Type is not
/// checked, as PowerDNS doesn't (its documented `curl --data` examples send a form type); a
/// web page can't send PATCH to another origin without a preflight anyway.
async fn patch_zone(
    State(st): State<ApiState>,
    axum::extract::Path(id): axum::extract::Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, PdnsError> {
    let apex = parse_zone_id(&id)?;
    let zones = st.engine.zones();
    let zone = zones.zone(&apex).ok_or_else(|| PdnsError::no_zone(&apex))?;
    let body = parse_body(&body?)?;
    let rrsets = body
        .rrsets
        .ok_or_else(|| PdnsError::unprocessable("No rrsets given in update request"))?;

    // Whether an RRset exists at this point of the batch: as the snapshot has it, unless an
    // earlier change of the batch set or removed it.
    let mut exists_now: HashMap<(Name, RecordType), bool> = HashMap::new();
    let mut seen: HashSet<(Name, RecordType, bool)> = HashSet::new();
    let mut changes = Vec::new();
    // For each change of the batch, the index of the RRset in the request it came from.
    let mut origin = Vec::new();
    for (i, r) in rrsets.into_iter().enumerate() {
        let at = |msg: String| PdnsError::unprocessable(format!("rrsets[{i}]: {msg}"));
        let name = parse_rrset_name(&r.name).map_err(|e| at(e.message))?;
        let rtype = parse_rrset_type(&r.rtype, &r.name).map_err(|e| at(e.message))?;
        let key = (name.clone(), rtype);
        let exists = *exists_now
            .entry(key.clone())
            .or_insert_with(|| zone.has_rrset(&name, rtype));
        let changetype = r.changetype.to_ascii_uppercase();
        let replace = match changetype.as_str() {
            "REPLACE" => true,
            "DELETE" => false,
            "PRUNE" | "EXTEND" => {
                return Err(at(format!("changetype {changetype} is not supported")))
            }
            _ => {
                return Err(at(format!(
                    "Changetype '{}' is not a valid value",
                    r.changetype
                )))
            }
        };
        if !seen.insert((name.clone(), rtype, replace)) {
            return Err(at(format!(
                "Duplicate RRset {} IN {rtype} with changetype: {changetype}",
                r.name
            )));
        }
        if r.comments.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(at("comments are not stored by this server".into()));
        }
        let change = if replace {
            let Some(records) = r.records else {
                return Err(at(format!(
                    "No change for RRset {} IN {rtype}: give records",
                    r.name
                )));
            };
            let ttl = r
                .ttl
                .ok_or_else(|| at(format!("RRset {} IN {rtype}: missing ttl", r.name)))?;
            let mut rdata = Vec::with_capacity(records.len());
            for (j, rec) in records.iter().enumerate() {
                let at = |msg: String| {
                    PdnsError::unprocessable(format!("rrsets[{i}].records[{j}]: {msg}"))
                };
                if rec.disabled == Some(true) {
                    return Err(at("disabled records are not stored by this server".into()));
                }
                if rec.set_ptr == Some(true) {
                    return Err(at("set-ptr is not supported".into()));
                }
                if rec.priority.is_some() {
                    return Err(at("`priority` element is not allowed in record".into()));
                }
                rdata.push(parse_content(rtype, &rec.content).map_err(|e| {
                    at(format!("Record {}/{rtype} '{}': {e}", r.name, rec.content))
                })?);
            }
            if rdata.is_empty() {
                // PowerDNS: replacing with no records removes the RRset.
                if !exists {
                    continue;
                }
                Change::Delete { name, rtype }
            } else {
                Change::Set {
                    name,
                    rtype,
                    ttl,
                    records: rdata,
                }
            }
        } else {
            if !exists {
                continue;
            }
            Change::Delete { name, rtype }
        };
        exists_now.insert(key, matches!(change, Change::Set { .. }));
        changes.push(change);
        origin.push(i);
    }
    if changes.is_empty() {
        return Ok(StatusCode::NO_CONTENT);
    }
    match st.engine.apply(Edit::Batch(apex, changes)).await {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(EngineError::Invalid(ZoneError::Batch { index, source })) => {
            let i = origin.get(index).copied().unwrap_or(index);
            Err(PdnsError::unprocessable(format!("rrsets[{i}]: {source}")))
        }
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_ids_round_trip() {
        for (name, id) in [
            ("example.org.", "example.org."),
            ("_tcp.example.org.", "=5Ftcp.example.org."),
            (".", "=2E"),
        ] {
            let n = presentation::parse_name(name, None).unwrap();
            assert_eq!(zone_id(&n), id);
            assert_eq!(parse_zone_id(id).unwrap(), n);
        }
        let n = presentation::parse_name("example.org.", None).unwrap();
        assert_eq!(parse_zone_id("example.org").unwrap(), n);
        assert_eq!(parse_zone_id("Example.ORG.").unwrap(), n);
        assert_eq!(
            parse_zone_id("=5ftcp.example.org.").unwrap(),
            parse_zone_id("=5Ftcp.example.org.").unwrap()
        );
        for bad in ["", "a=", "a=G1.", "=2"] {
            assert_eq!(
                parse_zone_id(bad).unwrap_err().status,
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }

    #[test]
    fn content_is_presentation_format() {
        let RData::TXT(t) = parse_content(RecordType::TXT, "\"v=spf1 -all\"").unwrap() else {
            panic!("not TXT")
        };
        assert_eq!(t.txt_data().len(), 1);
        assert_eq!(&*t.txt_data()[0], b"v=spf1 -all");
        assert_eq!(
            format_rdata(&parse_content(RecordType::TXT, "\"a b\" \"c\"").unwrap()),
            "\"a b\" \"c\""
        );
        assert!(parse_content(RecordType::MX, "10").is_err());
    }
}
