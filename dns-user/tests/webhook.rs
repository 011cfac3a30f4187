//! The external-dns webhook provider in process: an [`Engine`] without a fast path over a store
//! in a temporary directory, driven through `webhook::router` with `tower::ServiceExt::oneshot`,
//! with the bodies external-dns's webhook client encodes (`plan.Changes`, `[]*endpoint.Endpoint`
//! through Go's `encoding/json`: empty fields left out).
//!
//! Every accepted change is checked in `engine.zones()`; every refused one for leaving every
//! zone's serial and RRsets as they were.

use std::sync::Arc;

use axum::{
    body::{to_bytes, Body},
    http::{header, HeaderMap, Method, Request, StatusCode},
    Router,
};
use dns_user::{
    engine::Engine,
    store::Store,
    webhook::{self, MEDIA_TYPE},
    zone::{Edit, ZoneSpec},
    zonefile::presentation::{self, format_rdata},
};
use hickory_proto::rr::{Name, RecordType};
use serde_json::{json, Value};
use tempfile::TempDir;
use tower::ServiceExt as _;

const REGISTRY_TXT: &str =
    "\"heritage=external-dns,external-dns/owner=default,external-dns/resource=ingress/default/web\"";

struct Hook {
    app: Router,
    engine: Arc<Engine>,
    _dir: TempDir,
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
    json: Value,
}

fn name(text: &str) -> Name {
    presentation::parse_name(text, None).unwrap()
}

/// A server with zones t.example.net and u.example.org, and `www.t.example.net` A 192.0.2.7.
async fn server() -> Hook {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("store opens");
    let zones = store.load().expect("store loads").zones;
    let engine = Engine::new(zones, None, store);
    for apex in ["t.example.net.", "u.example.org."] {
        let spec = ZoneSpec::new(
            name(apex),
            name("ns1.example.net."),
            name(&format!("hostmaster.{apex}")),
            vec![name("ns1.example.net.")],
        );
        engine.apply(Edit::CreateZone(spec)).await.expect("zone");
    }
    engine
        .apply(Edit::Rrset(
            name("t.example.net."),
            dns_user::zone::Change::Set {
                name: name("www.t.example.net."),
                rtype: RecordType::A,
                ttl: 300,
                records: vec![presentation::parse_record_text(RecordType::A, "192.0.2.7").unwrap()],
            },
        ))
        .await
        .expect("www");
    Hook {
        app: webhook::router(engine.clone()),
        engine,
        _dir: dir,
    }
}

impl Hook {
    async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.app.clone().oneshot(req).await.expect("router answers");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = to_bytes(resp.into_body(), usize::MAX).await.expect("body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            text,
            json,
        }
    }

    /// A GET as external-dns sends it, with the protocol's `Accept`.
    async fn get(&self, uri: &str) -> Reply {
        self.send(
            Request::builder()
                .uri(uri)
                .header(header::ACCEPT, MEDIA_TYPE)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }

    /// A POST as external-dns sends it: the protocol's media type as Content-Type.
    async fn post(&self, uri: &str, body: &str) -> Reply {
        self.send(
            Request::builder()
                .method(Method::POST)
                .uri(uri)
                .header(header::CONTENT_TYPE, MEDIA_TYPE)
                .header(header::ACCEPT, MEDIA_TYPE)
                .body(Body::from(body.to_string()))
                .unwrap(),
        )
        .await
    }

    async fn changes(&self, changes: Value) -> Reply {
        self.post("/records", &changes.to_string()).await
    }

    fn serial(&self, apex: &str) -> u32 {
        self.engine
            .zones()
            .zone(&name(apex))
            .expect("zone")
            .serial()
    }

    /// The RRset as served now: TTL and records in presentation format.
    fn served(&self, owner: &str, rtype: RecordType) -> Option<(u32, Vec<String>)> {
        let zones = self.engine.zones();
        let set = zones.find_zone(&name(owner))?.rrset(&name(owner), rtype)?;
        Some((set.ttl, set.records.iter().map(format_rdata).collect()))
    }

    /// Every zone's serial and RRsets, as served.
    fn state(&self) -> Vec<(String, u32, Vec<String>)> {
        self.engine
            .zones()
            .zones()
            .map(|z| {
                let sets = z
                    .records()
                    .map(|(n, t, ttl, rs)| {
                        let data: Vec<String> = rs.iter().map(format_rdata).collect();
                        format!("{n} {ttl} {t} {}", data.join(" | "))
                    })
                    .collect();
                (z.apex().to_string(), z.serial(), sets)
            })
            .collect()
    }

    /// `GET /records`, the endpoint of `dns_name` and `record_type`.
    async fn endpoint(&self, dns_name: &str, record_type: &str) -> Option<Value> {
        let r = self.get("/records").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        r.json
            .as_array()
            .expect("an array of endpoints")
            .iter()
            .find(|e| e["dnsName"] == dns_name && e["recordType"] == record_type)
            .cloned()
    }
}

/// An endpoint as Go encodes it: empty fields left out.
fn ep(dns_name: &str, record_type: &str, ttl: i64, targets: &[&str]) -> Value {
    let mut e = json!({ "dnsName": dns_name, "targets": targets, "recordType": record_type });
    if ttl != 0 {
        e["recordTTL"] = json!(ttl);
    }
    e
}

/// A TXT registry endpoint as external-dns's TXT registry makes it.
fn registry(dns_name: &str, owned: &str) -> Value {
    let mut e = ep(dns_name, "TXT", 0, &[REGISTRY_TXT]);
    e["labels"] = json!({ "ownedRecord": owned });
    e
}

#[tokio::test]
async fn negotiation_and_health() {
    let h = server().await;
    let r = h.get("/").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers[header::CONTENT_TYPE], MEDIA_TYPE);
    assert_eq!(r.headers[header::VARY], "Content-Type");
    assert_eq!(
        r.json,
        json!({ "include": ["t.example.net", "u.example.org"] })
    );

    let r = h
        .send(Request::builder().uri("/").body(Body::empty()).unwrap())
        .await;
    assert_eq!(r.status, StatusCode::OK, "no Accept: anything goes");
    for accept in [
        "text/html",
        "application/external.dns.webhook+json;version=2",
    ] {
        let r = h
            .send(
                Request::builder()
                    .uri("/")
                    .header(header::ACCEPT, accept)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await;
        assert_eq!(r.status, StatusCode::NOT_ACCEPTABLE, "{accept}: {}", r.text);
        assert!(r.json["error"].as_str().unwrap().contains(MEDIA_TYPE));
    }

    let r = h.get("/healthz").await;
    assert_eq!(r.status, StatusCode::OK);
    let r = h.get("/nope").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = h
        .send(
            Request::builder()
                .method(Method::DELETE)
                .uri("/records")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn sync_creates_updates_and_deletes() {
    let h = server().await;
    let serial = h.serial("t.example.net.");
    let r = h.get("/records").await;
    assert_eq!(r.headers[header::CONTENT_TYPE], MEDIA_TYPE);
    assert_eq!(
        h.endpoint("www.t.example.net", "A").await,
        Some(json!({
            "dnsName": "www.t.example.net", "targets": ["192.0.2.7"],
            "recordType": "A", "recordTTL": 300
        }))
    );

    // Create, as external-dns's plan for a new Ingress with the TXT registry makes it.
    let r = h
        .changes(json!({ "create": [
            ep("app.t.example.net", "A", 300, &["192.0.2.10", "192.0.2.11"]),
            registry("a-app.t.example.net", "app.t.example.net"),
            ep("docs.t.example.net", "CNAME", 60, &["app.t.example.net"]),
            registry("cname-docs.t.example.net", "docs.t.example.net"),
            ep("t.example.net", "TXT", 0, &["\"v=spf1 -all\""]),
            ep("t.example.net", "MX", 0, &["10 mail.example.net"]),
        ]}))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        h.serial("t.example.net."),
        serial + 1,
        "one zone, one batch"
    );
    assert_eq!(
        h.served("app.t.example.net.", RecordType::A),
        Some((300, vec!["192.0.2.10".into(), "192.0.2.11".into()]))
    );
    assert_eq!(
        h.served("a-app.t.example.net.", RecordType::TXT),
        Some((webhook::DEFAULT_TTL, vec![REGISTRY_TXT.into()]))
    );
    assert_eq!(
        h.served("docs.t.example.net.", RecordType::CNAME),
        Some((60, vec!["app.t.example.net.".into()]))
    );
    assert_eq!(
        h.served("t.example.net.", RecordType::MX),
        Some((300, vec!["10 mail.example.net.".into()]))
    );
    // The registry record's data is the string inside the quotes.
    let zones = h.engine.zones();
    let set = zones
        .find_zone(&name("a-app.t.example.net."))
        .unwrap()
        .rrset(&name("a-app.t.example.net."), RecordType::TXT)
        .unwrap();
    let hickory_proto::rr::RData::TXT(t) = &set.records[0] else {
        panic!("not TXT")
    };
    assert_eq!(&*t.txt_data()[0], REGISTRY_TXT.trim_matches('"').as_bytes());
    drop(zones);

    // Records: what external-dns reads back is what it wrote.
    assert_eq!(
        h.endpoint("a-app.t.example.net", "TXT").await.unwrap()["targets"],
        json!([REGISTRY_TXT])
    );
    assert_eq!(
        h.endpoint("docs.t.example.net", "CNAME").await.unwrap()["targets"],
        json!(["app.t.example.net"])
    );
    assert_eq!(
        h.endpoint("t.example.net", "MX").await.unwrap()["targets"],
        json!(["10 mail.example.net"])
    );
    assert_eq!(
        h.endpoint("app.t.example.net", "A").await.unwrap()["recordTTL"],
        300
    );

    // Update: the old and new endpoints; the new one replaces the RRset.
    let r = h
        .changes(json!({
            "updateOld": [ep("app.t.example.net", "A", 300, &["192.0.2.10", "192.0.2.11"])],
            "updateNew": [ep("app.t.example.net", "A", 120, &["192.0.2.12"])],
        }))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        h.served("app.t.example.net.", RecordType::A),
        Some((120, vec!["192.0.2.12".into()]))
    );

    // Delete: the CNAME and its registry record.
    let delete = json!({ "delete": [
        ep("docs.t.example.net", "CNAME", 60, &["app.t.example.net"]),
        registry("cname-docs.t.example.net", "docs.t.example.net"),
    ]});
    let r = h.changes(delete.clone()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(h.served("docs.t.example.net.", RecordType::CNAME), None);
    assert_eq!(h.served("cname-docs.t.example.net.", RecordType::TXT), None);
    let after = h.state();
    // A retried delete finds nothing to do: 204, nothing changes, not even the serial.
    let r = h.changes(delete).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(h.state(), after);

    // A CNAME replacing an A at one name: delete and create in one request.
    let r = h
        .changes(json!({
            "create": [ep("app.t.example.net", "CNAME", 300, &["www.t.example.net"])],
            "delete": [ep("app.t.example.net", "A", 120, &["192.0.2.12"])],
        }))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(h.served("app.t.example.net.", RecordType::A), None);
    assert_eq!(
        h.served("app.t.example.net.", RecordType::CNAME),
        Some((300, vec!["www.t.example.net.".into()]))
    );

    // Older external-dns capitalised the field names.
    let r = h
        .changes(
            json!({ "Create": [ep("old.t.example.net", "AAAA", 0, &["2001:db8::1"])],
                         "UpdateOld": null, "UpdateNew": null, "Delete": null }),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(
        h.served("old.t.example.net.", RecordType::AAAA),
        Some((300, vec!["2001:db8::1".into()]))
    );
}

#[tokio::test]
async fn changes_across_zones_apply_per_zone() {
    let h = server().await;
    let (t0, u0) = (h.serial("t.example.net."), h.serial("u.example.org."));
    let r = h
        .changes(json!({ "create": [
            ep("a.t.example.net", "A", 0, &["192.0.2.1"]),
            ep("a.u.example.org", "A", 0, &["192.0.2.2"]),
            ep("b.t.example.net", "A", 0, &["192.0.2.3"]),
        ]}))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_eq!(h.serial("t.example.net."), t0 + 1);
    assert_eq!(h.serial("u.example.org."), u0 + 1);
    assert!(h.served("b.t.example.net.", RecordType::A).is_some());
    assert!(h.served("a.u.example.org.", RecordType::A).is_some());

    // The zone model refuses u.example.org's share (a CNAME beside the A): t.example.net's
    // still goes in, and the answer says which zone failed, with a 4xx (a retry won't help).
    let r = h
        .changes(json!({ "create": [
            ep("a.u.example.org", "CNAME", 0, &["x.example.net"]),
            ep("c.t.example.net", "A", 0, &["192.0.2.4"]),
        ]}))
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.headers[header::CONTENT_TYPE], MEDIA_TYPE);
    assert_eq!(
        r.json["zones"],
        json!([
            { "zone": "u.example.org.", "applied": false,
              "error": r.json["zones"][0]["error"].clone() },
            { "zone": "t.example.net.", "applied": true },
        ])
    );
    let reason = r.json["zones"][0]["error"].as_str().unwrap();
    assert!(reason.starts_with("create[0]: "), "{reason}");
    assert!(r.json["error"].as_str().unwrap().contains("u.example.org."));
    assert_eq!(
        h.serial("u.example.org."),
        u0 + 1,
        "the refused zone is as it was"
    );
    assert_eq!(h.served("a.u.example.org.", RecordType::CNAME), None);
    assert_eq!(
        h.served("c.t.example.net.", RecordType::A),
        Some((300, vec!["192.0.2.4".into()]))
    );
}

#[tokio::test]
async fn bad_input_changes_nothing() {
    let h = server().await;
    let before = h.state();
    let good = ep("ok.t.example.net", "A", 0, &["192.0.2.1"]);
    let mut with_id = ep("id.t.example.net", "A", 0, &["192.0.2.1"]);
    with_id["setIdentifier"] = json!("eu-west");
    let cases: Vec<(String, StatusCode, &str)> = vec![
        ("{not json".into(), StatusCode::BAD_REQUEST, "bad request body"),
        (json!({"create": {}}).to_string(), StatusCode::BAD_REQUEST, "create"),
        (json!({"create": [{"dnsName": 5}]}).to_string(), StatusCode::BAD_REQUEST, "dnsName"),
        (json!({"create": [good.clone()], "delete": [ep("x.t.example.net", "NAPTR", 0, &[])]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "delete[0]: record type NAPTR is not supported"),
        (json!({"create": [good.clone(), ep("x.t.example.net", "BOGUS", 0, &["1"])]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "create[1]: unknown record type"),
        (json!({"create": [good.clone(), with_id]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "create[1]: set identifier"),
        (json!({"create": [good.clone(), ep("x.elsewhere.example", "A", 0, &["192.0.2.1"])]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "in no zone"),
        (json!({"create": [good.clone(), ep("x.t.example.net", "A", 0, &["192.0.2.300"])]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "create[1]: targets[0]"),
        (json!({"create": [good.clone(), ep("x.t.example.net", "TXT", 0, &["\"unterminated"])]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "create[1]: targets[0]"),
        (json!({"updateNew": [good.clone(), ep("x.t.example.net", "A", 0, &[])]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "updateNew[1]: no targets"),
        (json!({"create": [good.clone(), ep("x.t.example.net", "A", -5, &["192.0.2.1"])]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "recordTTL -5"),
        // Refused by the zone model: TTL past 2^31-1, and a CNAME beside www's A.
        (json!({"create": [good.clone(), ep("x.t.example.net", "A", 3_000_000_000, &["192.0.2.1"])]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "create[1]"),
        (json!({"create": [good.clone(), ep("www.t.example.net", "CNAME", 0, &["x.example.org"])]}).to_string(),
            StatusCode::UNPROCESSABLE_ENTITY, "create[1]"),
    ];
    for (body, status, want) in cases {
        let r = h.post("/records", &body).await;
        assert_eq!(r.status, status, "{body}: {}", r.text);
        let error = r.json["error"].as_str().unwrap_or("");
        let detail = r.json["zones"].to_string();
        assert!(
            error.contains(want) || detail.contains(want),
            "{body}: {} should mention {want:?}",
            r.text
        );
        assert_eq!(h.state(), before, "{body} changed the zones");
    }
    for ctype in [None, Some("text/plain")] {
        let mut b = Request::builder().method(Method::POST).uri("/records");
        if let Some(c) = ctype {
            b = b.header(header::CONTENT_TYPE, c);
        }
        let body = json!({ "create": [good.clone()] }).to_string();
        let r = h.send(b.body(Body::from(body)).unwrap()).await;
        assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ctype:?}");
        assert_eq!(h.state(), before);
    }
    // Plain JSON is fine.
    let r = h
        .send(
            Request::builder()
                .method(Method::POST)
                .uri("/records")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(json!({ "create": [good] }).to_string()))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert!(h.served("ok.t.example.net.", RecordType::A).is_some());
}

#[tokio::test]
async fn adjust_endpoints_matches_records() {
    let h = server().await;
    let mut labelled = ep("App.T.Example.Net.", "A", 60, &["192.0.2.1"]);
    labelled["labels"] = json!({ "resource": "ingress/default/app" });
    labelled["providerSpecific"] = json!([{ "name": "alias", "value": "false" }]);
    let mut with_id = ep("id.t.example.net", "A", 0, &["192.0.2.1"]);
    with_id["setIdentifier"] = json!("eu-west");
    let body = json!([
        labelled,
        ep("txt.t.example.net", "TXT", 0, &["hello world"]),
        registry("a-app.t.example.net", "app.t.example.net"),
        ep("docs.t.example.net", "CNAME", 0, &["App.T.Example.Net."]),
        ep(
            "naptr.t.example.net",
            "NAPTR",
            0,
            &["1 1 \"u\" \"\" \"\" ."]
        ),
        ep("x.elsewhere.example", "A", 0, &["192.0.2.1"]),
        ep("bad.t.example.net", "A", 0, &["not-an-address"]),
        with_id,
    ]);
    let before = h.state();
    let r = h.post("/adjustendpoints", &body.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.headers[header::CONTENT_TYPE], MEDIA_TYPE);
    assert_eq!(
        r.json,
        json!([
            { "dnsName": "app.t.example.net", "targets": ["192.0.2.1"], "recordType": "A",
              "recordTTL": 60, "labels": { "resource": "ingress/default/app" },
              "providerSpecific": [{ "name": "alias", "value": "false" }] },
            { "dnsName": "txt.t.example.net", "targets": ["\"hello world\""], "recordType": "TXT" },
            { "dnsName": "a-app.t.example.net", "targets": [REGISTRY_TXT], "recordType": "TXT",
              "labels": { "ownedRecord": "app.t.example.net" } },
            // Data keeps its case, as stored and served (external-dns compares targets without
            // case); the trailing dot goes, as in external-dns's endpoints.
            { "dnsName": "docs.t.example.net", "targets": ["App.T.Example.Net"], "recordType": "CNAME" },
        ])
    );
    assert_eq!(h.state(), before, "adjusting changes nothing");

    // Created as adjusted, each reads back exactly as adjusted: the plan sees no difference.
    let adjusted = r.json.clone();
    let r = h.changes(json!({ "create": adjusted })).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    for e in adjusted.as_array().unwrap() {
        let got = h
            .endpoint(
                e["dnsName"].as_str().unwrap(),
                e["recordType"].as_str().unwrap(),
            )
            .await
            .unwrap_or_else(|| panic!("{e} not in /records"));
        assert_eq!(got["targets"], e["targets"], "{e}");
    }
    assert_eq!(
        h.served("txt.t.example.net.", RecordType::TXT),
        Some((300, vec!["\"hello world\"".into()]))
    );
}
