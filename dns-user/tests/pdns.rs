//! The PowerDNS-compatible routes in process: an [`Engine`] without a fast path over a store in
//! a temporary directory, driven through `api::router` with `tower::ServiceExt::oneshot`, with
//! the requests external-dns's `pdns` provider (through go-powerdns) and PowerDNS's documented
//! examples send.
//!
//! Every accepted change is checked in `engine.zones()`, the snapshot the fallback answers and
//! the compiler serialises; every refused one for leaving the zone's serial and RRsets as they
//! were.

use std::sync::Arc;

use axum::{
    body::{to_bytes, Body},
    http::{header, Method, Request, StatusCode},
    Router,
};
use dns_user::{
    api::{self, ApiState, ApiToken},
    engine::Engine,
    fallback::FallbackStats,
    store::Store,
    zonefile::presentation::{self, format_rdata},
};
use hickory_proto::rr::RecordType;
use serde_json::{json, Value};
use tempfile::TempDir;
use tower::ServiceExt as _;

const ZONE: &str = "t.example.net";
const ZONES: &str = "/api/v1/servers/localhost/zones";
const KEY: &str = "s3cret-key";
/// What external-dns's TXT registry writes: quoted, as PowerDNS takes TXT content.
const REGISTRY_TXT: &str =
    "\"heritage=external-dns,external-dns/owner=default,external-dns/resource=ingress/default/web\"";

struct Pdns {
    app: Router,
    engine: Arc<Engine>,
    key: Option<&'static str>,
    _dir: TempDir,
}

struct Reply {
    status: StatusCode,
    text: String,
    json: Value,
}

impl Reply {
    fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }
}

/// A server with ZONE (NS ns1/ns2.example.net) and `www` A 192.0.2.7, made through `/v1`.
async fn server(key: Option<&'static str>) -> Pdns {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store opens");
    let zones = store.load().expect("store loads").zones;
    let engine = Engine::new(zones, None, store);
    let mut state = ApiState::new(engine.clone(), Arc::new(FallbackStats::new()));
    if let Some(k) = key {
        state = state.with_token(ApiToken::new(k).expect("token"));
    }
    let p = Pdns {
        app: api::router(state),
        engine,
        key,
        _dir: dir,
    };
    let r = p
        .v1(
            Method::POST,
            "/v1/zones",
            json!({ "zone": ZONE, "ns": ["ns1.example.net", "ns2.example.net"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = p
        .v1(
            Method::PUT,
            &format!("/v1/zones/{ZONE}/records/www/A"),
            json!({ "ttl": 300, "records": ["192.0.2.7"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    p
}

impl Pdns {
    async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.app.clone().oneshot(req).await.expect("router answers");
        let status = resp.status();
        let bytes = to_bytes(resp.into_body(), usize::MAX).await.expect("body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, text, json }
    }

    async fn v1(&self, method: Method, uri: &str, body: Value) -> Reply {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(k) = self.key {
            b = b.header(header::AUTHORIZATION, format!("Bearer {k}"));
        }
        self.send(b.body(Body::from(body.to_string())).unwrap())
            .await
    }

    /// A request as go-powerdns sends it: `X-API-Key`, and a JSON body with its type.
    async fn pdns(&self, method: Method, uri: &str, body: Option<String>) -> Reply {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header("User-Agent", "go-powerdns");
        if let Some(k) = self.key {
            b = b.header("X-API-Key", k);
        }
        let req = match body {
            Some(text) => b
                .header(header::CONTENT_TYPE, "application/json")
                .header(header::ACCEPT, "application/json")
                .body(Body::from(text)),
            None => b.body(Body::empty()),
        };
        self.send(req.unwrap()).await
    }

    async fn get(&self, uri: &str) -> Reply {
        self.pdns(Method::GET, uri, None).await
    }

    async fn patch(&self, zone_id: &str, body: Value) -> Reply {
        self.pdns(
            Method::PATCH,
            &format!("{ZONES}/{zone_id}"),
            Some(body.to_string()),
        )
        .await
    }

    fn serial(&self) -> u32 {
        let apex = presentation::parse_name(ZONE, None).unwrap();
        self.engine.zones().zone(&apex).expect("zone").serial()
    }

    /// The RRset at `name` of `rtype` as served now: TTL and records in presentation format.
    fn served(&self, name: &str, rtype: RecordType) -> Option<(u32, Vec<String>)> {
        let apex = presentation::parse_name(ZONE, None).unwrap();
        let name = presentation::parse_name(name, None).unwrap();
        let zones = self.engine.zones();
        let set = zones.zone(&apex)?.rrset(&name, rtype)?;
        Some((set.ttl, set.records.iter().map(format_rdata).collect()))
    }

    /// Every RRset of the zone as served, and its serial.
    fn state(&self) -> (u32, Vec<ServedRrset>) {
        let apex = presentation::parse_name(ZONE, None).unwrap();
        let zones = self.engine.zones();
        let z = zones.zone(&apex).expect("zone");
        let sets = z
            .records()
            .map(|(n, t, ttl, rs)| (n.to_string(), t, ttl, rs.iter().map(format_rdata).collect()))
            .collect();
        (z.serial(), sets)
    }
}

/// An RRset as served: owner, type, TTL, records in presentation format.
type ServedRrset = (String, RecordType, u32, Vec<String>);

/// An RRset as go-powerdns marshals external-dns's REPLACE: every record `disabled: false`.
fn replace(name: &str, rtype: &str, ttl: u32, contents: &[&str]) -> Value {
    let records: Vec<Value> = contents
        .iter()
        .map(|c| json!({ "content": c, "disabled": false }))
        .collect();
    json!({ "name": name, "type": rtype, "ttl": ttl, "changetype": "REPLACE", "records": records })
}

/// external-dns's DELETE: the records it knew, no TTL ("DELETEs explicitly forbid a TTL").
fn delete(name: &str, rtype: &str, contents: &[&str]) -> Value {
    let records: Vec<Value> = contents
        .iter()
        .map(|c| json!({ "content": c, "disabled": false }))
        .collect();
    json!({ "name": name, "type": rtype, "changetype": "DELETE", "records": records })
}

#[tokio::test]
async fn lists_and_shows_zones_like_powerdns() {
    let p = server(Some(KEY)).await;
    let r = p.get(ZONES).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let zones = r.json.as_array().expect("an array of zones");
    assert_eq!(zones.len(), 1);
    let z = &zones[0];
    assert_eq!(z["id"], "t.example.net.");
    assert_eq!(z["name"], "t.example.net.");
    assert_eq!(z["kind"], "Native");
    assert_eq!(z["url"], "/api/v1/servers/localhost/zones/t.example.net.");
    assert_eq!(z["serial"], p.serial());
    assert!(z.get("rrsets").is_none(), "the list has no records: {z}");

    let r = p.get(&format!("{ZONES}?zone=t.example.net.")).await;
    assert_eq!(r.json.as_array().map(Vec::len), Some(1), "{}", r.text);
    let r = p.get(&format!("{ZONES}?zone=other.example.")).await;
    assert_eq!(r.json, json!([]));

    // The id as listed, and without the trailing dot: the same zone.
    for id in ["t.example.net.", "t.example.net", "T.Example.Net."] {
        let r = p.get(&format!("{ZONES}/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "{id}: {}", r.text);
        assert_eq!(r.json["id"], "t.example.net.");
        let rrsets = r.json["rrsets"].as_array().expect("rrsets");
        let types: Vec<(&str, &str)> = rrsets
            .iter()
            .map(|s| (s["name"].as_str().unwrap(), s["type"].as_str().unwrap()))
            .collect();
        assert_eq!(
            types,
            [
                ("t.example.net.", "SOA"),
                ("t.example.net.", "NS"),
                ("www.t.example.net.", "A")
            ]
        );
        let www = &rrsets[2];
        assert_eq!(www["ttl"], 300);
        assert_eq!(
            www["records"],
            json!([{ "content": "192.0.2.7", "disabled": false }])
        );
        let soa = rrsets[0]["records"][0]["content"].as_str().unwrap();
        assert!(
            soa.starts_with("ns1.example.net. hostmaster.t.example.net. ")
                && soa.contains(&format!(" {} ", p.serial())),
            "{soa}"
        );
    }

    let r = p.get(&format!("{ZONES}/t.example.net.?rrsets=false")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(r.json.get("rrsets").is_none(), "{}", r.text);
    let r = p
        .get(&format!(
            "{ZONES}/t.example.net.?rrset_name=www.t.example.net.&rrset_type=A"
        ))
        .await;
    assert_eq!(
        r.json["rrsets"].as_array().map(Vec::len),
        Some(1),
        "{}",
        r.text
    );
    assert_eq!(r.json["rrsets"][0]["name"], "www.t.example.net.");
    let r = p.get(&format!("{ZONES}/t.example.net.?rrsets=maybe")).await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);

    let r = p.get(&format!("{ZONES}/nope.example.")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert!(r.error().contains("nope.example."), "{}", r.text);
    let r = p.get(&format!("{ZONES}/bad=ZZid.")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);

    let r = p.get("/api/v1/servers/localhost").await;
    assert_eq!(r.json["id"], "localhost");
    assert_eq!(r.json["daemon_type"], "authoritative");
    let r = p.get("/api/v1/servers").await;
    assert_eq!(r.json[0]["id"], "localhost");
}

#[tokio::test]
async fn external_dns_sync_round_trips() {
    let p = server(Some(KEY)).await;
    let serial = p.serial();

    // ApplyChanges' Create: one PATCH per zone, REPLACE with TTLs, CNAME targets with the dot
    // go-powerdns adds, and the TXT registry records quoted.
    let r = p
        .patch(
            "t.example.net.",
            json!({ "rrsets": [
                replace("app.t.example.net.", "A", 300, &["192.0.2.10", "192.0.2.11"]),
                replace("a-app.t.example.net.", "TXT", 300, &[REGISTRY_TXT]),
                replace("docs.t.example.net.", "CNAME", 60, &["app.t.example.net."]),
                replace("cname-docs.t.example.net.", "TXT", 300, &[REGISTRY_TXT]),
                replace("t.example.net.", "TXT", 3600, &["\"v=spf1 -all\"", "\"two\" \"strings\""]),
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert!(r.text.is_empty());
    assert_eq!(p.serial(), serial + 1, "one PATCH, one serial bump");
    assert_eq!(
        p.served("app.t.example.net.", RecordType::A),
        Some((300, vec!["192.0.2.10".into(), "192.0.2.11".into()]))
    );
    assert_eq!(
        p.served("a-app.t.example.net.", RecordType::TXT),
        Some((300, vec![REGISTRY_TXT.into()]))
    );
    assert_eq!(
        p.served("docs.t.example.net.", RecordType::CNAME),
        Some((60, vec!["app.t.example.net.".into()]))
    );
    // The TXT data is what is inside the quotes, not the quotes.
    let apex = presentation::parse_name(ZONE, None).unwrap();
    let zones = p.engine.zones();
    let spf = zones
        .zone(&apex)
        .unwrap()
        .rrset(&apex, RecordType::TXT)
        .unwrap();
    let hickory_proto::rr::RData::TXT(t) = &spf.records[0] else {
        panic!("not TXT")
    };
    assert_eq!(&*t.txt_data()[0], b"v=spf1 -all");

    // Records(): what external-dns reads back is what it wrote, TXT quoted.
    let r = p.get(&format!("{ZONES}/t.example.net.")).await;
    let find = |name: &str, rtype: &str| {
        r.json["rrsets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name && s["type"] == rtype)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} {rtype} in {}", r.text))
    };
    assert_eq!(
        find("a-app.t.example.net.", "TXT")["records"],
        json!([{ "content": REGISTRY_TXT, "disabled": false }])
    );
    assert_eq!(
        find("t.example.net.", "TXT")["records"],
        json!([
            { "content": "\"v=spf1 -all\"", "disabled": false },
            { "content": "\"two\" \"strings\"", "disabled": false },
        ])
    );
    assert_eq!(
        find("docs.t.example.net.", "CNAME")["records"][0]["content"],
        "app.t.example.net."
    );

    // UpdateNew: REPLACE with the new targets and TTL.
    let r = p
        .patch(
            "t.example.net.",
            json!({ "rrsets": [replace("app.t.example.net.", "A", 120, &["192.0.2.12"])] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        p.served("app.t.example.net.", RecordType::A),
        Some((120, vec!["192.0.2.12".into()]))
    );
    assert_eq!(p.serial(), serial + 2);

    // Delete: the RRsets with the records external-dns knew, no TTL.
    let r = p
        .patch(
            "t.example.net",
            json!({ "rrsets": [
                delete("docs.t.example.net.", "CNAME", &["app.t.example.net."]),
                delete("cname-docs.t.example.net.", "TXT", &[REGISTRY_TXT]),
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(p.served("docs.t.example.net.", RecordType::CNAME), None);
    assert_eq!(p.served("cname-docs.t.example.net.", RecordType::TXT), None);
    assert_eq!(p.serial(), serial + 3);

    // PowerDNS does nothing for a DELETE of a missing RRset: 204, and no serial bump when
    // nothing else changes.
    let r = p
        .patch(
            "t.example.net.",
            json!({ "rrsets": [delete("docs.t.example.net.", "CNAME", &[])] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(p.serial(), serial + 3);

    // A CNAME replacing an A at one name in one PATCH (DELETE first), and REPLACE with no
    // records removing an RRset, as PowerDNS does.
    let r = p
        .patch(
            "t.example.net.",
            json!({ "rrsets": [
                { "name": "app.t.example.net.", "type": "A", "changetype": "delete" },
                replace("app.t.example.net.", "CNAME", 300, &["www.t.example.net."]),
                { "name": "a-app.t.example.net.", "type": "TXT", "ttl": 300,
                  "changetype": "REPLACE", "records": [] },
            ]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(p.served("app.t.example.net.", RecordType::A), None);
    assert_eq!(
        p.served("app.t.example.net.", RecordType::CNAME),
        Some((300, vec!["www.t.example.net.".into()]))
    );
    assert_eq!(p.served("a-app.t.example.net.", RecordType::TXT), None);
    assert_eq!(p.serial(), serial + 4);
}

#[tokio::test]
async fn powerdns_documented_examples_terraform_and_lego() {
    // From PowerDNS's HTTP API documentation: curl without a Content-Type, names absolute.
    let p = server(None).await;
    let body = r#"{"rrsets": [ {"name": "test.t.example.net.", "type": "A", "ttl": 86400,
        "changetype": "REPLACE", "records": [ {"content": "192.0.5.4", "disabled": false } ] } ] }"#;
    let req = Request::builder()
        .method(Method::PATCH)
        .uri(format!("{ZONES}/t.example.net."))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(body))
        .unwrap();
    let r = p.send(req).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        p.served("test.t.example.net.", RecordType::A),
        Some((86400, vec!["192.0.5.4".into()]))
    );
    let r = p
        .patch(
            "t.example.net.",
            json!({"rrsets": [{"name": "test.t.example.net.", "type": "A", "changetype": "DELETE"}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(p.served("test.t.example.net.", RecordType::A), None);

    // Terraform's PowerDNS provider: every record carries the old record object's name, type
    // and ttl, and a DELETE has `"ttl": 0` and no records.
    let r = p
        .patch(
            "t.example.net.",
            json!({"rrsets": [{"name": "tf.t.example.net.", "type": "MX", "changetype": "REPLACE",
                "ttl": 300, "records": [{"name": "tf.t.example.net.", "type": "MX",
                "content": "10 mail.example.net.", "ttl": 300, "disabled": false,
                "set-ptr": false}]}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        p.served("tf.t.example.net.", RecordType::MX),
        Some((300, vec!["10 mail.example.net.".into()]))
    );
    let r = p
        .patch(
            "t.example.net.",
            json!({"rrsets": [{"name": "tf.t.example.net.", "type": "MX", "changetype": "DELETE",
                "ttl": 0}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(p.served("tf.t.example.net.", RecordType::MX), None);

    // lego (ACME DNS-01 for Traefik, cert-manager and others): `kind` in every RRset, the
    // record's name and type in every record, the zone's `url` as the PATCH path.
    let r = p.get("/api").await;
    assert_eq!(r.json, json!([{ "url": "/api/v1", "version": 1 }]));
    let zone = p.get(&format!("{ZONES}/t.example.net.")).await;
    let url = zone.json["url"].as_str().unwrap().to_owned();
    let challenge = "_acme-challenge.t.example.net.";
    let r = p
        .pdns(
            Method::PATCH,
            &url,
            Some(
                json!({"rrsets": [{"name": challenge, "type": "TXT", "kind": "Master",
                    "changetype": "REPLACE", "ttl": 120, "records": [{"content": "\"tok-1\"",
                    "disabled": false, "name": challenge, "type": "TXT", "ttl": 120}]}]})
                .to_string(),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        p.served(challenge, RecordType::TXT),
        Some((120, vec!["\"tok-1\"".into()]))
    );
    let r = p
        .pdns(
            Method::PATCH,
            &url,
            Some(
                json!({"rrsets": [{"name": challenge, "type": "TXT", "kind": "Master",
                    "changetype": "DELETE", "records": [{"content": "\"tok-1\"",
                    "disabled": false, "name": challenge, "type": "TXT"}]}]})
                .to_string(),
            ),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(p.served(challenge, RecordType::TXT), None);

    // A zone whose name needs escaping in its id: `_` is `=5F`, in either case of hex.
    let r = p
        .v1(
            Method::POST,
            "/v1/zones",
            json!({ "zone": "_x.example.org", "ns": ["ns1.example.net"] }),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let list = p.get(ZONES).await;
    let ids: Vec<&str> = list
        .json
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"=5Fx.example.org."), "{ids:?}");
    for id in [
        "=5Fx.example.org.",
        "=5fx.example.org",
        "%3D5Fx.example.org.",
    ] {
        let r = p.get(&format!("{ZONES}/{id}")).await;
        assert_eq!(r.status, StatusCode::OK, "{id}: {}", r.text);
        assert_eq!(r.json["name"], "_x.example.org.");
    }
    let r = p
        .patch(
            "=5Fx.example.org.",
            json!({"rrsets": [replace("a._x.example.org.", "TXT", 60, &["\"hi\""])]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
}

#[tokio::test]
async fn bad_patches_change_nothing() {
    let p = server(None).await;
    let before = p.state();
    let ok_a = replace("ok.t.example.net.", "A", 300, &["192.0.2.1"]);
    let cases: Vec<(String, StatusCode, &str)> = vec![
        ("{not json".into(), StatusCode::BAD_REQUEST, "not valid JSON"),
        ("".into(), StatusCode::BAD_REQUEST, "body was empty"),
        ("{}".into(), StatusCode::UNPROCESSABLE_ENTITY, "No rrsets"),
        (json!({"rrsets": {}}).to_string(), StatusCode::UNPROCESSABLE_ENTITY, "rrsets"),
        (json!({"rrsets": [ok_a.clone(), {"name": "x.t.example.net.", "type": "A", "ttl": 1,
            "changetype": "REPLACE", "records": [{"disabled": false}]}]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "content"),
        (json!({"rrsets": [ok_a.clone(), {"name": "x.t.example.net.", "type": "A", "ttl": 1,
            "changetype": "REPLACE", "records": [{"content": "192.0.2.2", "set-ptr": true}]}]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "set-ptr"),
        (json!({"rrsets": [ok_a.clone(), {"name": "x.t.example.net.", "type": "A", "ttl": 1,
            "records": []}]}).to_string(), StatusCode::UNPROCESSABLE_ENTITY, "changetype"),
        (json!({"rrsets": [ok_a.clone(), {"name": "x.t.example.net.", "type": "A", "ttl": 1,
            "changetype": "UPSERT", "records": []}]}).to_string(), StatusCode::UNPROCESSABLE_ENTITY, "not a valid value"),
        (json!({"rrsets": [ok_a.clone(), {"name": "x.t.example.net.", "type": "A", "ttl": 1,
            "changetype": "EXTEND", "records": [{"content": "192.0.2.2"}]}]}).to_string(), StatusCode::UNPROCESSABLE_ENTITY, "not supported"),
        (json!({"rrsets": [ok_a.clone(), replace("x.t.example.net", "A", 1, &["192.0.2.2"])]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "not canonical"),
        (json!({"rrsets": [ok_a.clone(), replace("x.other.example.", "A", 1, &["192.0.2.2"])]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "rrsets[1]"),
        (json!({"rrsets": [ok_a.clone(), replace("t.example.net.", "ALIAS", 1, &["x.example.org."])]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "ALIAS"),
        (json!({"rrsets": [ok_a.clone(), replace("x.t.example.net.", "NAPTR", 1, &["1 1 \"u\" \"\" \"\" ."])]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "not supported"),
        (json!({"rrsets": [ok_a.clone(), replace("t.example.net.", "SOA", 1,
            &["a. b. 1 2 3 4 5"])]}).to_string(), StatusCode::UNPROCESSABLE_ENTITY, "SOA"),
        (json!({"rrsets": [ok_a.clone(), replace("x.t.example.net.", "A", 1, &["not-an-ip"])]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "not-an-ip"),
        (json!({"rrsets": [ok_a.clone(), replace("x.t.example.net.", "TXT", 1, &["\"unterminated"])]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "rrsets[1].records[0]"),
        (json!({"rrsets": [ok_a.clone(), replace("x.t.example.net.", "MX", 1, &["mail.example.net."])]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "rrsets[1].records[0]"),
        (json!({"rrsets": [ok_a.clone(), {"name": "x.t.example.net.", "type": "A", "ttl": 1,
            "changetype": "REPLACE", "records": [{"content": "192.0.2.2", "disabled": true}]}]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "disabled"),
        (json!({"rrsets": [ok_a.clone(), {"name": "x.t.example.net.", "type": "A",
            "changetype": "REPLACE", "records": [{"content": "192.0.2.2"}]}]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "ttl"),
        (json!({"rrsets": [ok_a.clone(), {"name": "x.t.example.net.", "type": "A", "ttl": 1,
            "changetype": "REPLACE"}]}).to_string(), StatusCode::UNPROCESSABLE_ENTITY, "No change"),
        (json!({"rrsets": [ok_a.clone(), {"name": "x.t.example.net.", "type": "A", "ttl": 1,
            "changetype": "REPLACE", "records": [{"content": "192.0.2.2"}],
            "comments": [{"content": "hi", "account": ""}]}]}).to_string(), StatusCode::UNPROCESSABLE_ENTITY, "comments"),
        (json!({"rrsets": [ok_a.clone(), {"name": "x.t.example.net.", "type": "A", "ttl": 1,
            "changetype": "REPLACE", "records": [{"content": "192.0.2.2", "priority": 10}]}]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "priority"),
        (json!({"rrsets": [ok_a.clone(), {"name": "x.t.example.net.", "type": "A", "ttl": -1,
            "changetype": "REPLACE", "records": [{"content": "192.0.2.2"}]}]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "ttl"),
        (json!({"rrsets": [ok_a.clone(), replace("x.t.example.net.", "A", 4_000_000_000, &["192.0.2.2"])]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "rrsets[1]"),
        (json!({"rrsets": [ok_a.clone(), ok_a.clone()]}).to_string(), StatusCode::UNPROCESSABLE_ENTITY, "Duplicate"),
        // Refused by the zone model, inside the batch: a CNAME beside the A at www.
        (json!({"rrsets": [ok_a.clone(), replace("www.t.example.net.", "CNAME", 1, &["x.example.org."])]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "rrsets[1]"),
        (json!({"rrsets": [ok_a.clone(), delete("t.example.net.", "NS", &[])]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "rrsets[1]"),
    ];
    for (body, status, want) in cases {
        let r = p
            .pdns(
                Method::PATCH,
                &format!("{ZONES}/t.example.net."),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
        assert!(
            r.error().contains(want),
            "{body}: error {:?} should mention {want:?}",
            r.error()
        );
        assert_eq!(
            r.json.as_object().map(|o| o.len()),
            Some(1),
            "PowerDNS's shape, {{\"error\": ..}}: {}",
            r.text
        );
        assert_eq!(p.state(), before, "{body} changed the zone");
    }
    let r = p
        .patch("nope.example.", json!({"rrsets": [ok_a.clone()]}))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
    assert_eq!(p.state(), before);
}

#[tokio::test]
async fn api_key() {
    let p = server(Some(KEY)).await;
    let before = p.state();
    let patch =
        json!({"rrsets": [replace("k.t.example.net.", "A", 60, &["192.0.2.9"])]}).to_string();
    for (key, bearer) in [
        (None, None),
        (Some("wrong"), None),
        (Some(""), None),
        (None, Some("wrong")),
    ] {
        for (method, body) in [(Method::GET, None), (Method::PATCH, Some(patch.clone()))] {
            let mut b = Request::builder()
                .method(method.clone())
                .uri(format!("{ZONES}/t.example.net."))
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(k) = key {
                b = b.header("X-API-Key", k);
            }
            if let Some(t) = bearer {
                b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
            }
            let r = p
                .send(b.body(body.map(Body::from).unwrap_or_default()).unwrap())
                .await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {key:?} {bearer:?}: {}",
                r.text
            );
            assert!(!r.error().is_empty(), "{}", r.text);
        }
        let r = p
            .send(Request::builder().uri(ZONES).body(Body::empty()).unwrap())
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(p.state(), before, "a refused PATCH changed the zone");

    // The right key, in PowerDNS's header or as the /v1 API's bearer token.
    let r = p
        .pdns(
            Method::PATCH,
            &format!("{ZONES}/t.example.net."),
            Some(patch),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        p.served("k.t.example.net.", RecordType::A),
        Some((60, vec!["192.0.2.9".into()]))
    );
    let r = p
        .send(
            Request::builder()
                .uri(ZONES)
                .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
}
