//! Zones: create, list, show, change the SOA settings, delete; zone-file export and import.

use std::collections::HashMap;

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use hickory_proto::rr::{Name, RData};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    extract::{ApiPath, ApiQuery, JsonBody, ZoneFileUpload, ZONE_FILE},
    parse_zone_name, ApiError, ApiState,
};
use crate::{
    progress::Reporter,
    zone::{normalize, Edit, SoaChange, Zone, ZoneError, ZoneSpec},
    zonefile::{
        self,
        presentation::{self, format_name},
    },
};

/// `POST /v1/zones`. Unset SOA fields take the zone model's defaults (negative TTL 30).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateZone {
    zone: String,
    ns: Vec<String>,
    /// Primary name server in the SOA; defaults to the first of `ns`.
    mname: Option<String>,
    /// Mailbox of the zone's admin, as a name (`hostmaster.example.net`) or an address
    /// (`hostmaster@example.net`); defaults to `hostmaster.<zone>`.
    rname: Option<String>,
    refresh: Option<u32>,
    retry: Option<u32>,
    expire: Option<u32>,
    negative_ttl: Option<u32>,
    soa_ttl: Option<u32>,
    ns_ttl: Option<u32>,
}

/// `PATCH /v1/zones/{zone}`: the SOA fields to change; the serial is the zone's own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SoaPatch {
    mname: Option<String>,
    rname: Option<String>,
    refresh: Option<u32>,
    retry: Option<u32>,
    expire: Option<u32>,
    negative_ttl: Option<u32>,
    soa_ttl: Option<u32>,
}

/// A zone as the API shows it. `negative_ttl` is SOA MINIMUM; negative answers carry
/// min(`soa_ttl`, `negative_ttl`) (RFC 2308 §3).
pub(super) fn zone_json(z: &Zone) -> Value {
    let soa = z.soa();
    let (ns, ns_ttl) = match z.ns() {
        Some(set) => (
            set.records
                .iter()
                .map(|r| match r {
                    RData::NS(n) => format_name(&n.0),
                    other => presentation::format_rdata(other),
                })
                .collect(),
            Some(set.ttl),
        ),
        None => (Vec::new(), None),
    };
    json!({
        "zone": format_name(z.apex()),
        "serial": z.serial(),
        "mname": format_name(&soa.mname),
        "rname": format_name(&soa.rname),
        "refresh": soa.refresh,
        "retry": soa.retry,
        "expire": soa.expire,
        "negative_ttl": soa.minimum,
        "soa_ttl": soa.ttl,
        "ns": ns,
        "ns_ttl": ns_ttl,
        "names": z.name_count(),
        "rrsets": z.rrset_count(),
        "records": z.record_count(),
    })
}

fn summary_json(z: &Zone) -> Value {
    json!({
        "zone": format_name(z.apex()),
        "serial": z.serial(),
        "names": z.name_count(),
        "rrsets": z.rrset_count(),
        "records": z.record_count(),
    })
}

/// Runs `f` on the zone at `apex`, or answers 404.
pub(super) fn with_zone<T>(
    st: &ApiState,
    apex: &Name,
    f: impl FnOnce(&Zone) -> T,
) -> Result<T, ApiError> {
    match st.engine.zones().zone(apex) {
        Some(z) => Ok(f(z)),
        None => Err(ZoneError::UnknownZone {
            apex: apex.to_string(),
        }
        .into()),
    }
}

/// An SOA mailbox: a name, or an address whose local part becomes the first label (RFC 1035
/// §8: dots in it are escaped).
fn parse_rname(text: &str, field: &str) -> Result<Name, ApiError> {
    let name = match text.rsplit_once('@') {
        Some((local, domain)) if !local.is_empty() => {
            format!(
                "{}.{domain}",
                local.replace('\\', "\\\\").replace('.', "\\.")
            )
        }
        _ => text.to_string(),
    };
    presentation::parse_name(&name, None)
        .map(|n| normalize(&n))
        .map_err(|e| ApiError::bad(field, format!("bad mailbox: {e}")))
}

fn parse_host(text: &str, field: &str) -> Result<Name, ApiError> {
    presentation::parse_name(text, None)
        .map(|n| normalize(&n))
        .map_err(|e| ApiError::bad(field, format!("bad name: {e}")))
}

/// `GET /v1/zones`.
pub(super) async fn list(State(st): State<ApiState>) -> Json<Value> {
    let zones = st.engine.zones();
    let list: Vec<Value> = zones.zones().map(summary_json).collect();
    Json(json!({ "zones": list }))
}

/// `POST /v1/zones` -> 201 and the zone.
pub(super) async fn create(
    State(st): State<ApiState>,
    JsonBody(body): JsonBody<CreateZone>,
) -> Result<Response, ApiError> {
    let apex = parse_zone_name(&body.zone, "zone")?;
    let ns = body
        .ns
        .iter()
        .enumerate()
        .map(|(i, n)| parse_host(n, &format!("ns[{i}]")))
        .collect::<Result<Vec<_>, _>>()?;
    let mname = match &body.mname {
        Some(m) => parse_host(m, "mname")?,
        None => ns.first().cloned().unwrap_or_else(|| apex.clone()),
    };
    let rname = match &body.rname {
        Some(r) => parse_rname(r, "rname")?,
        None => Name::from_labels([&b"hostmaster"[..]])
            .and_then(|h| h.append_domain(&apex))
            .map_err(|e| ApiError::bad("zone", format!("bad zone name: {e}")))?,
    };
    let mut spec = ZoneSpec::new(apex.clone(), mname, rname, ns);
    let soa = &mut spec.soa;
    soa.refresh = body.refresh.unwrap_or(soa.refresh);
    soa.retry = body.retry.unwrap_or(soa.retry);
    soa.expire = body.expire.unwrap_or(soa.expire);
    soa.minimum = body.negative_ttl.unwrap_or(soa.minimum);
    soa.ttl = body.soa_ttl.unwrap_or(soa.ttl);
    spec.ns_ttl = body.ns_ttl.unwrap_or(spec.ns_ttl);
    st.engine.apply(Edit::CreateZone(spec)).await?;
    let zone = with_zone(&st, &apex, zone_json)?;
    Ok((StatusCode::CREATED, Json(zone)).into_response())
}

/// `GET /v1/zones/{zone}`.
pub(super) async fn show(
    State(st): State<ApiState>,
    ApiPath(zone): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let apex = parse_zone_name(&zone, "zone")?;
    with_zone(&st, &apex, zone_json).map(Json)
}

/// `PATCH /v1/zones/{zone}`: changes the given SOA fields (`Edit::PatchSoa`), bumping the serial.
pub(super) async fn patch(
    State(st): State<ApiState>,
    ApiPath(zone): ApiPath<String>,
    JsonBody(body): JsonBody<SoaPatch>,
) -> Result<Json<Value>, ApiError> {
    let apex = parse_zone_name(&zone, "zone")?;
    // Unknown zone: 404 before anything else.
    with_zone(&st, &apex, |_| ())?;
    let SoaPatch {
        mname,
        rname,
        refresh,
        retry,
        expire,
        negative_ttl,
        soa_ttl,
    } = body;
    let change = SoaChange {
        mname: mname.map(|m| parse_host(&m, "mname")).transpose()?,
        rname: rname.map(|r| parse_rname(&r, "rname")).transpose()?,
        refresh,
        retry,
        expire,
        minimum: negative_ttl,
        ttl: soa_ttl,
    };
    if change.is_empty() {
        return Err(ApiError::bad(
            "body",
            "nothing to change: give one or more of mname, rname, refresh, retry, expire, negative_ttl, soa_ttl",
        ));
    }
    st.engine
        .apply(Edit::PatchSoa(apex.clone(), change))
        .await?;
    with_zone(&st, &apex, zone_json).map(Json)
}

/// `DELETE /v1/zones/{zone}`: the zone and all its records.
pub(super) async fn delete(
    State(st): State<ApiState>,
    ApiPath(zone): ApiPath<String>,
) -> Result<Json<Value>, ApiError> {
    let apex = parse_zone_name(&zone, "zone")?;
    st.engine.apply(Edit::DeleteZone(apex.clone())).await?;
    Ok(Json(json!({ "zone": format_name(&apex), "deleted": true })))
}

/// `GET /v1/zones/{zone}/zonefile`: the zone as a master file.
pub(super) async fn export(
    State(st): State<ApiState>,
    ApiPath(zone): ApiPath<String>,
) -> Result<Response, ApiError> {
    let apex = parse_zone_name(&zone, "zone")?;
    let text = with_zone(&st, &apex, zonefile::export)?;
    Ok(([(header::CONTENT_TYPE, ZONE_FILE)], text).into_response())
}

/// `PUT /v1/zones/{zone}/zonefile[?source=NAME]`: replaces the zone (creating it if missing)
/// with a master file, in one change. `source` only names the file in error messages.
pub(super) async fn import(
    State(st): State<ApiState>,
    ApiPath(zone): ApiPath<String>,
    query: ApiQuery,
    upload: ZoneFileUpload,
) -> Result<Json<Value>, ApiError> {
    let apex = parse_zone_name(&zone, "zone")?;
    let query = query.only(&["source"])?;
    let source = source_label(&query);
    // A large file logs its progress as it is read (in bytes: the records are counted as they
    // are parsed), and as the maps are filled; a small one says nothing of it.
    let zf = upload
        .parse(
            zonefile::StreamParser::new(&source, Some(&apex)),
            &Reporter::default().long_only(),
        )
        .await?;
    let imported = st.engine.import_zone(zf).await?;
    let mut zone = with_zone(&st, &apex, zone_json)?;
    zone["changed"] = json!(imported.changed);
    Ok(Json(zone))
}

/// The file name errors are shown under: the `source` parameter's last path component, or
/// "zonefile".
fn source_label(query: &HashMap<String, String>) -> String {
    query
        .get("source")
        .and_then(|s| s.rsplit('/').next())
        .map(|s| {
            s.chars()
                .filter(|c| c.is_ascii_graphic())
                .take(100)
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "zonefile".to_string())
}
