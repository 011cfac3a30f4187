//! Records: one RRset at a time, all RRsets at a name, a paged listing, and atomic batches.
//!
//! Record data is the presentation text of one record (`"192.0.2.7"`, `"10 mail.example.net."`,
//! `"0 issue \"letsencrypt.org\""`), except TXT, whose text is the record's data as is, split
//! into 255-byte strings. Names inside record data are always absolute, with or without the
//! trailing dot: `mail.example.net` is `mail.example.net.`, never `mail.example.net.<zone>`.

use axum::{extract::State, Json};
use hickory_proto::rr::{Name, RData, RecordType};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    extract::{ApiPath, ApiQuery, JsonBody},
    parse_any_type, parse_owner, parse_settable_type, parse_zone_name,
    zones::with_zone,
    ApiError, ApiState,
};
use crate::{
    zone::{normalize, Change, Edit},
    zonefile::presentation::{self, format_name},
};

/// Page size of `GET .../records` when `limit` isn't given, and the largest allowed.
pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// `PUT .../records/{name}/{type}`: the whole new RRset.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RrsetBody {
    ttl: u32,
    records: Vec<String>,
}

/// `POST .../changes`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct BatchBody {
    changes: Vec<ChangeBody>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum ChangeOp {
    Set,
    Delete,
}

/// One change of a batch. A flat object rather than a tagged enum, so that an error names the
/// exact field (`changes[2].ttl`) and `op` is checked like any other field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeBody {
    op: ChangeOp,
    name: String,
    #[serde(rename = "type")]
    rtype: String,
    ttl: Option<u32>,
    records: Option<Vec<String>>,
}

/// Parses each record of an RRset; `field` prefixes the error's field (`records[1]`).
fn parse_records(rtype: RecordType, texts: &[String], field: &str) -> Result<Vec<RData>, ApiError> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            presentation::parse_record_text(rtype, t).map_err(|e| {
                ApiError::bad(
                    format!("{field}[{i}]"),
                    format!("not a valid {rtype} record: {e}"),
                )
            })
        })
        .collect()
}

fn rrset_json(name: &Name, rtype: RecordType, ttl: u32, records: &[RData]) -> Value {
    json!({
        "name": format_name(name),
        "type": rtype.to_string(),
        "ttl": ttl,
        "records": records.iter().map(presentation::record_text).collect::<Vec<_>>(),
    })
}

/// The zone from the path, which must exist: checked first so that an unknown zone is a 404
/// whatever else is wrong with the request.
fn existing_zone(st: &ApiState, zone: &str) -> Result<Name, ApiError> {
    let apex = parse_zone_name(zone, "zone")?;
    with_zone(st, &apex, |_| ())?;
    Ok(apex)
}

/// `GET /v1/zones/{zone}/records?cursor=&limit=`: RRsets by owner in canonical order. A page
/// holds at most `limit` RRsets and never splits a name's RRsets (a name with more than
/// `limit` comes whole, alone); `next_cursor`, when present, fetches the next page.
pub(super) async fn list(
    State(st): State<ApiState>,
    ApiPath(zone): ApiPath<String>,
    query: ApiQuery,
) -> Result<Json<Value>, ApiError> {
    let apex = existing_zone(&st, &zone)?;
    let query = query.only(&["cursor", "limit"])?;
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad(
                    "limit",
                    format!("limit must be a number from 1 to {MAX_LIMIT}"),
                ))
            }
        },
    };
    let cursor = match query.get("cursor").filter(|c| !c.is_empty()) {
        None => apex.clone(),
        Some(c) => {
            let n = presentation::parse_name(c, None)
                .map_err(|e| ApiError::bad("cursor", format!("bad cursor: {e}")))?;
            if !apex.zone_of(&n) {
                return Err(ApiError::bad(
                    "cursor",
                    "the cursor is not a name in this zone: pass next_cursor back as it came",
                ));
            }
            n
        }
    };
    with_zone(&st, &apex, |z| {
        let mut page: Vec<Value> = Vec::new();
        let mut next_cursor = None;
        let mut rrsets = z.records_from(&cursor).peekable();
        while let Some((owner, ..)) = rrsets.peek() {
            let owner = owner.clone();
            let mut at_name = Vec::new();
            while let Some((name, rtype, ttl, records)) = rrsets.next_if(|(n, ..)| *n == owner) {
                at_name.push(rrset_json(&name, rtype, ttl, &records));
            }
            if !page.is_empty() && page.len() + at_name.len() > limit {
                next_cursor = Some(format_name(&owner));
                break;
            }
            page.extend(at_name);
            if page.len() >= limit {
                next_cursor = rrsets.peek().map(|(n, ..)| format_name(n));
                break;
            }
        }
        let mut body = json!({ "zone": format_name(&apex), "records": page });
        if let Some(c) = next_cursor {
            body["next_cursor"] = json!(c);
        }
        Json(body)
    })
}

/// `GET /v1/zones/{zone}/records/{name}`: every RRset at one name.
pub(super) async fn at_name(
    State(st): State<ApiState>,
    ApiPath((zone, name)): ApiPath<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let apex = existing_zone(&st, &zone)?;
    let owner = normalize(&parse_owner(&name, &apex, "name")?);
    let rrsets = with_zone(&st, &apex, |z| {
        z.records_from(&owner)
            .take_while(|(n, ..)| *n == owner)
            .map(|(_, rtype, ttl, records)| {
                json!({
                    "type": rtype.to_string(),
                    "ttl": ttl,
                    "records": records.iter().map(presentation::record_text).collect::<Vec<_>>(),
                })
            })
            .collect::<Vec<_>>()
    })?;
    if rrsets.is_empty() {
        return Err(ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            format!("no records at {owner}"),
        )
        .with_field("name"));
    }
    Ok(Json(
        json!({ "name": format_name(&owner), "rrsets": rrsets }),
    ))
}

/// `GET /v1/zones/{zone}/records/{name}/{type}`.
pub(super) async fn get_rrset(
    State(st): State<ApiState>,
    ApiPath((zone, name, rtype)): ApiPath<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let apex = existing_zone(&st, &zone)?;
    let owner = normalize(&parse_owner(&name, &apex, "name")?);
    let rtype = parse_any_type(&rtype, "type")?;
    with_zone(&st, &apex, |z| {
        z.rrset(&owner, rtype)
            .map(|s| Json(rrset_json(&owner, rtype, s.ttl, &s.records)))
    })?
    .ok_or_else(|| {
        crate::zone::ZoneError::NoSuchRrset {
            name: owner.to_string(),
            rtype,
        }
        .into()
    })
}

/// `PUT /v1/zones/{zone}/records/{name}/{type}`: replaces (or creates) one RRset.
pub(super) async fn put_rrset(
    State(st): State<ApiState>,
    ApiPath((zone, name, rtype)): ApiPath<(String, String, String)>,
    JsonBody(body): JsonBody<RrsetBody>,
) -> Result<Json<Value>, ApiError> {
    let apex = existing_zone(&st, &zone)?;
    let name = parse_owner(&name, &apex, "name")?;
    let rtype = parse_settable_type(&rtype, "type")?;
    let records = parse_records(rtype, &body.records, "records")?;
    let applied = st
        .engine
        .apply(Edit::Rrset(
            apex,
            Change::Set {
                name,
                rtype,
                ttl: body.ttl,
                records,
            },
        ))
        .await?;
    Ok(Json(json!({ "serial": applied.serial })))
}

/// `DELETE /v1/zones/{zone}/records/{name}/{type}`.
pub(super) async fn delete_rrset(
    State(st): State<ApiState>,
    ApiPath((zone, name, rtype)): ApiPath<(String, String, String)>,
) -> Result<Json<Value>, ApiError> {
    let apex = existing_zone(&st, &zone)?;
    let name = parse_owner(&name, &apex, "name")?;
    let rtype = parse_any_type(&rtype, "type")?;
    let applied = st
        .engine
        .apply(Edit::Rrset(apex, Change::Delete { name, rtype }))
        .await?;
    Ok(Json(json!({ "serial": applied.serial })))
}

/// `POST /v1/zones/{zone}/changes`: all the changes or none, with one serial bump
/// (`Edit::Batch`). Each change sees the zone as the ones before it left it.
pub(super) async fn batch(
    State(st): State<ApiState>,
    ApiPath(zone): ApiPath<String>,
    JsonBody(body): JsonBody<BatchBody>,
) -> Result<Json<Value>, ApiError> {
    let apex = existing_zone(&st, &zone)?;
    let mut changes = Vec::with_capacity(body.changes.len());
    for (i, c) in body.changes.into_iter().enumerate() {
        let at = |f: &str| format!("changes[{i}].{f}");
        let name = parse_owner(&c.name, &apex, &at("name"))?;
        let change = match c.op {
            ChangeOp::Set => {
                let rtype = parse_settable_type(&c.rtype, &at("type"))?;
                let ttl = c.ttl.ok_or_else(|| {
                    ApiError::bad(at("ttl"), "missing field `ttl` (op set needs it)")
                })?;
                let texts = c.records.ok_or_else(|| {
                    ApiError::bad(at("records"), "missing field `records` (op set needs it)")
                })?;
                Change::Set {
                    name,
                    rtype,
                    ttl,
                    records: parse_records(rtype, &texts, &at("records"))?,
                }
            }
            ChangeOp::Delete => {
                for (field, given) in [("ttl", c.ttl.is_some()), ("records", c.records.is_some())] {
                    if given {
                        return Err(ApiError::bad(
                            at(field),
                            format!("op delete takes no {field}"),
                        ));
                    }
                }
                Change::Delete {
                    name,
                    rtype: parse_any_type(&c.rtype, &at("type"))?,
                }
            }
        };
        changes.push(change);
    }
    let applied = st.engine.apply(Edit::Batch(apex, changes)).await?;
    Ok(Json(json!({ "serial": applied.serial })))
}
