//! The HTTP API in process: an [`Engine`] without a fast path over a store in a temporary
//! directory, driven through `api::router` with `tower::ServiceExt::oneshot`. No root, no XDP.
//!
//! Every refused request is checked for its status, its JSON reason and field, and for leaving
//! the zone's serial and records as they were.

use std::sync::Arc;

use axum::{
    body::{to_bytes, Body, Bytes},
    http::{header, Method, Request, StatusCode},
    Router,
};
use dns_user::{
    api::{self, ApiState, ApiToken},
    engine::Engine,
    fallback::FallbackStats,
    store::Store,
};
use serde_json::{json, Value};
use tempfile::TempDir;
use tower::ServiceExt as _;

const ZONE: &str = "t.example.net";

struct Api {
    app: Router,
    token: Option<String>,
}

struct Reply {
    status: StatusCode,
    text: String,
    json: Value,
}

impl Reply {
    fn field(&self) -> &str {
        self.json["field"].as_str().unwrap_or("")
    }

    fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }
}

fn open(dir: &TempDir, token: Option<&str>) -> Api {
    let store = Store::open(dir.path()).expect("store opens");
    let zones = store.load().expect("store loads").zones;
    let engine = Engine::new(zones, None, store);
    let mut state = ApiState::new(engine.clone(), Arc::new(FallbackStats::new()));
    if let Some(t) = token {
        state = state.with_token(ApiToken::new(t).expect("token"));
    }
    Api {
        app: api::router(state),
        token: token.map(str::to_string),
    }
}

impl Api {
    async fn raw(&self, req: Request<Body>) -> Reply {
        let resp = self.app.clone().oneshot(req).await.expect("router answers");
        let status = resp.status();
        let bytes = to_bytes(resp.into_body(), usize::MAX).await.expect("body");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, text, json }
    }

    fn request(&self, method: Method, uri: &str) -> axum::http::request::Builder {
        let mut b = Request::builder().method(method).uri(uri);
        if let Some(t) = &self.token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        b
    }

    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> Reply {
        let b = self.request(method, uri);
        let req = match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string())),
            None => b.body(Body::empty()),
        };
        self.raw(req.expect("request")).await
    }

    async fn send_text(&self, method: Method, uri: &str, ctype: &str, body: String) -> Reply {
        let req = self
            .request(method, uri)
            .header(header::CONTENT_TYPE, ctype)
            .body(Body::from(body))
            .expect("request");
        self.raw(req).await
    }

    async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, None).await
    }

    /// Creates ZONE with two name servers.
    async fn create_zone(&self) -> Value {
        let r = self
            .call(
                Method::POST,
                "/v1/zones",
                Some(json!({ "zone": ZONE, "ns": ["ns1.example.net", "ns2.example.net."] })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        r.json
    }

    async fn put(&self, name: &str, rtype: &str, ttl: u32, records: &[&str]) -> u32 {
        let uri = format!("/v1/zones/{ZONE}/records/{name}/{rtype}");
        let r = self
            .call(
                Method::PUT,
                &uri,
                Some(json!({ "ttl": ttl, "records": records })),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "PUT {uri}: {}", r.text);
        r.json["serial"].as_u64().expect("serial") as u32
    }

    /// The zone as the API shows it: its settings and serial, and every RRset.
    async fn snapshot(&self) -> (Value, Vec<Value>) {
        let zone = self.get(&format!("/v1/zones/{ZONE}")).await;
        assert_eq!(zone.status, StatusCode::OK, "{}", zone.text);
        (zone.json, self.all_records(ZONE).await)
    }

    async fn all_records(&self, zone: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        loop {
            let r = self
                .get(&format!(
                    "/v1/zones/{zone}/records?limit=1000&cursor={cursor}"
                ))
                .await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
            out.extend(r.json["records"].as_array().cloned().unwrap_or_default());
            match r.json["next_cursor"].as_str() {
                Some(c) => cursor = c.to_string(),
                None => return out,
            }
        }
    }
}

/// A zone with some data to check bad requests against.
async fn seeded() -> (TempDir, Api) {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = open(&dir, None);
    api.create_zone().await;
    api.put("www", "A", 30, &["192.0.2.7"]).await;
    api.put("alias", "CNAME", 30, &["www.t.example.net."]).await;
    (dir, api)
}

#[tokio::test]
async fn zone_crud() {
    let dir = tempfile::tempdir().unwrap();
    let api = open(&dir, None);
    let z = api.create_zone().await;
    assert_eq!(z["zone"], "t.example.net.");
    assert_eq!(z["serial"], 1);
    assert_eq!(z["negative_ttl"], 30);
    assert_eq!(z["mname"], "ns1.example.net.");
    assert_eq!(z["rname"], "hostmaster.t.example.net.");
    assert_eq!(z["ns"], json!(["ns1.example.net.", "ns2.example.net."]));
    assert_eq!(z["records"], 2);

    let r = api
        .call(
            Method::POST,
            "/v1/zones",
            Some(json!({
                "zone": "u.example.net.", "ns": ["ns1.example.net"], "negative_ttl": 60,
                "rname": "dns.admin@example.net", "soa_ttl": 600, "refresh": 7200,
                "retry": 600, "expire": 604800, "ns_ttl": 86400, "mname": "primary.example.net"
            })),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json["rname"], "dns\\.admin.example.net.");
    assert_eq!(r.json["mname"], "primary.example.net.");
    assert_eq!(r.json["ns_ttl"], 86400);

    let list = api.get("/v1/zones").await;
    let zones: Vec<&str> = list.json["zones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|z| z["zone"].as_str().unwrap())
        .collect();
    assert_eq!(zones, ["t.example.net.", "u.example.net."]);
    assert_eq!(list.json["zones"][0]["serial"], 1);
    assert_eq!(list.json["zones"][0]["records"], 2);

    let r = api
        .call(
            Method::PATCH,
            "/v1/zones/t.example.net.",
            Some(json!({ "negative_ttl": 120, "refresh": 1800 })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["negative_ttl"], 120);
    assert_eq!(r.json["refresh"], 1800);
    assert_eq!(r.json["serial"], 2);
    assert_eq!(r.json["retry"], 900, "untouched fields stay");

    // Refusals leave the zone as it was.
    let before = api.snapshot().await;
    for (method, uri, body, status, field) in [
        (
            Method::PATCH,
            "/v1/zones/t.example.net",
            json!({}),
            400,
            "body",
        ),
        (
            Method::PATCH,
            "/v1/zones/t.example.net",
            json!({"serial": 9}),
            400,
            "serial",
        ),
        (
            Method::PATCH,
            "/v1/zones/t.example.net",
            json!({"negative_ttl": 2147483648u32}),
            422,
            "negative_ttl",
        ),
        (
            Method::PATCH,
            "/v1/zones/t.example.net",
            json!({"mname": "a..b"}),
            400,
            "mname",
        ),
        (
            Method::PATCH,
            "/v1/zones/nope.example",
            json!({"refresh": 1}),
            404,
            "zone",
        ),
        (
            Method::POST,
            "/v1/zones",
            json!({"zone": ZONE, "ns": ["ns1.example.net"]}),
            409,
            "zone",
        ),
        (
            Method::POST,
            "/v1/zones",
            json!({"zone": "v.example.net", "ns": []}),
            422,
            "ns",
        ),
        (
            Method::POST,
            "/v1/zones",
            json!({"zone": "v.example.net", "ns": ["a.example", "a.example"]}),
            422,
            "ns[1]",
        ),
        (
            Method::POST,
            "/v1/zones",
            json!({"zone": "v..example", "ns": ["a.example"]}),
            400,
            "zone",
        ),
        (
            Method::POST,
            "/v1/zones",
            json!({"zone": "v.example.net", "ns": ["a.example"], "soa_ttl": 4294967295u32}),
            422,
            "soa_ttl",
        ),
        (
            Method::POST,
            "/v1/zones",
            json!({"ns": ["a.example"]}),
            400,
            "zone",
        ),
    ] {
        let r = api.call(method.clone(), uri, Some(body.clone())).await;
        assert_eq!(
            r.status.as_u16(),
            status,
            "{method} {uri} {body}: {}",
            r.text
        );
        assert_eq!(r.field(), field, "{method} {uri} {body}: {}", r.text);
        assert!(!r.error().is_empty(), "{}", r.text);
    }
    assert_eq!(api.snapshot().await, before);
    assert_eq!(
        api.get("/v1/zones/v.example.net").await.status,
        StatusCode::NOT_FOUND
    );

    let r = api
        .call(Method::DELETE, "/v1/zones/u.example.net", None)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["deleted"], true);
    let r = api.get("/v1/zones/u.example.net").await;
    assert_eq!((r.status, r.field()), (StatusCode::NOT_FOUND, "zone"));
    let r = api
        .call(Method::DELETE, "/v1/zones/u.example.net", None)
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_record_type() {
    let dir = tempfile::tempdir().unwrap();
    let api = open(&dir, None);
    api.create_zone().await;
    let cases: [(&str, &str, &[&str], &[&str]); 10] = [
        (
            "www",
            "A",
            &["192.0.2.7", "192.0.2.8"],
            &["192.0.2.7", "192.0.2.8"],
        ),
        ("www", "AAAA", &["2001:db8::7"], &["2001:db8::7"]),
        (
            "alias",
            "cname",
            &["www.t.example.net"],
            &["www.t.example.net."],
        ),
        (
            "@",
            "MX",
            &["10 mail.example.net.", "20 mx2.example.net"],
            &["10 mail.example.net.", "20 mx2.example.net."],
        ),
        (
            "@",
            "TXT",
            &["v=spf1 include:example.net -all"],
            &["v=spf1 include:example.net -all"],
        ),
        (
            "_sip._tcp",
            "SRV",
            &["10 5 443 target.example.net."],
            &["10 5 443 target.example.net."],
        ),
        (
            "@",
            "CAA",
            &[
                "0 issue \"letsencrypt.org\"",
                "128 iodef \"mailto:sec@example.net\"",
            ],
            &[
                "0 issue \"letsencrypt.org\"",
                "128 iodef \"mailto:sec@example.net\"",
            ],
        ),
        (
            "7.2.0.192",
            "PTR",
            &["www.t.example.net."],
            &["www.t.example.net."],
        ),
        (
            "sub",
            "NS",
            &["ns.sub.t.example.net."],
            &["ns.sub.t.example.net."],
        ),
        ("ns.sub", "A", &["192.0.2.53"], &["192.0.2.53"]),
    ];
    let mut serial = 1;
    for (name, rtype, input, shown) in cases {
        let s = api.put(name, rtype, 300, input).await;
        assert_eq!(s, serial + 1, "each change bumps the serial once");
        serial = s;
        let r = api
            .get(&format!("/v1/zones/{ZONE}/records/{name}/{rtype}"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["type"], rtype.to_uppercase());
        assert_eq!(r.json["ttl"], 300);
        assert_eq!(r.json["records"], json!(shown), "{name} {rtype}");
    }
    // A long TXT is split into 255-byte strings and shown joined.
    let long = "k".repeat(700);
    api.put("dkim", "TXT", 60, &[&long]).await;
    let r = api.get(&format!("/v1/zones/{ZONE}/records/dkim/TXT")).await;
    assert_eq!(r.json["records"][0], long);
    let export = api.get(&format!("/v1/zones/{ZONE}/zonefile")).await;
    assert!(
        export.text.contains(&format!(
            "\"{}\" \"{}\" \"{}\"",
            "k".repeat(255),
            "k".repeat(255),
            "k".repeat(190)
        )),
        "{}",
        export.text
    );

    let r = api.get(&format!("/v1/zones/{ZONE}/records/www")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["name"], "www.t.example.net.");
    let types: Vec<&str> = r.json["rrsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["A", "AAAA"]);
    let r = api.get(&format!("/v1/zones/{ZONE}/records/nothing")).await;
    assert_eq!((r.status, r.field()), (StatusCode::NOT_FOUND, "name"));

    let r = api
        .call(
            Method::DELETE,
            &format!("/v1/zones/{ZONE}/records/www/AAAA"),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["serial"], serial + 2);
    let r = api.get(&format!("/v1/zones/{ZONE}/records/www/AAAA")).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_input_changes_nothing() {
    let (_dir, api) = seeded().await;
    let before = api.snapshot().await;
    let rec = |name: &str, t: &str| format!("/v1/zones/{ZONE}/records/{name}/{t}");
    let put = |ttl: Value, records: Value| json!({ "ttl": ttl, "records": records });
    let cases: Vec<(Method, String, Option<Value>, u16, &str)> = vec![
        (
            Method::PUT,
            "/v1/zones/nope.example/records/www/A".into(),
            Some(put(json!(30), json!(["192.0.2.1"]))),
            404,
            "zone",
        ),
        (
            Method::PUT,
            rec("www.other.org.", "A"),
            Some(put(json!(30), json!(["192.0.2.1"]))),
            422,
            "name",
        ),
        (
            Method::PUT,
            rec("bad..name", "A"),
            Some(put(json!(30), json!(["192.0.2.1"]))),
            400,
            "name",
        ),
        (
            Method::PUT,
            rec("www", "A"),
            Some(put(json!(30), json!(["192.0.2.300"]))),
            400,
            "records[0]",
        ),
        (
            Method::PUT,
            rec("www", "A"),
            Some(put(json!(30), json!(["192.0.2.1", "2001:db8::1"]))),
            400,
            "records[1]",
        ),
        (
            Method::PUT,
            rec("www", "AAAA"),
            Some(put(json!(30), json!(["192.0.2.1"]))),
            400,
            "records[0]",
        ),
        (
            Method::PUT,
            rec("www", "A"),
            Some(put(json!(2_147_483_648u32), json!(["192.0.2.1"]))),
            422,
            "ttl",
        ),
        (
            Method::PUT,
            rec("www", "A"),
            Some(put(json!(5_000_000_000u64), json!(["192.0.2.1"]))),
            400,
            "ttl",
        ),
        (
            Method::PUT,
            rec("www", "A"),
            Some(put(json!(-1), json!(["192.0.2.1"]))),
            400,
            "ttl",
        ),
        (
            Method::PUT,
            rec("www", "A"),
            Some(put(json!("30"), json!(["192.0.2.1"]))),
            400,
            "ttl",
        ),
        (
            Method::PUT,
            rec("www", "CNAME"),
            Some(put(json!(30), json!(["other.example.net."]))),
            422,
            "type",
        ),
        (
            Method::PUT,
            rec("alias", "A"),
            Some(put(json!(30), json!(["192.0.2.1"]))),
            422,
            "type",
        ),
        (
            Method::PUT,
            rec("@", "CNAME"),
            Some(put(json!(30), json!(["other.example.net."]))),
            422,
            "type",
        ),
        (
            Method::PUT,
            rec("www", "FOO"),
            Some(put(json!(30), json!(["x"]))),
            400,
            "type",
        ),
        (
            Method::PUT,
            rec("www", "HINFO"),
            Some(put(json!(30), json!(["a b"]))),
            400,
            "type",
        ),
        (
            Method::PUT,
            rec("@", "SOA"),
            Some(put(json!(30), json!(["a. b. 1 2 3 4 5"]))),
            400,
            "type",
        ),
        (
            Method::PUT,
            rec("www", "A"),
            Some(put(json!(30), json!([]))),
            422,
            "records",
        ),
        (
            Method::PUT,
            rec("www", "A"),
            Some(put(json!(30), json!(["192.0.2.1", "192.0.2.1"]))),
            422,
            "records[1]",
        ),
        (
            Method::PUT,
            rec("mail", "MX"),
            Some(put(json!(30), json!(["mail.example.net."]))),
            400,
            "records[0]",
        ),
        (
            Method::PUT,
            rec("mail", "SRV"),
            Some(put(json!(30), json!(["1 2 70000 x.example."]))),
            400,
            "records[0]",
        ),
        (
            Method::PUT,
            rec("mail", "CAA"),
            Some(put(json!(30), json!(["0 bad-tag \"x\""]))),
            400,
            "records[0]",
        ),
        (
            Method::PUT,
            rec("x", "CNAME"),
            Some(put(json!(30), json!(["a.example.", "b.example."]))),
            422,
            "records[1]",
        ),
        (
            Method::PUT,
            rec("*", "NS"),
            Some(put(json!(30), json!(["ns.example."]))),
            422,
            "type",
        ),
        (
            Method::PUT,
            rec("www", "A"),
            Some(json!({ "ttl": 30, "records": ["192.0.2.1"], "extra": 1 })),
            400,
            "extra",
        ),
        (
            Method::PUT,
            rec("www", "A"),
            Some(json!({ "records": ["192.0.2.1"] })),
            400,
            "ttl",
        ),
        (
            Method::PUT,
            rec("www", "A"),
            Some(json!("not an object")),
            400,
            "body",
        ),
        (Method::DELETE, rec("nothing", "A"), None, 404, "type"),
        (Method::DELETE, rec("@", "NS"), None, 422, "type"),
        (Method::DELETE, rec("@", "SOA"), None, 422, "type"),
        (
            Method::GET,
            format!("/v1/zones/{ZONE}/records?limit=0"),
            None,
            400,
            "limit",
        ),
        (
            Method::GET,
            format!("/v1/zones/{ZONE}/records?limit=1001"),
            None,
            400,
            "limit",
        ),
        (
            Method::GET,
            format!("/v1/zones/{ZONE}/records?limit=x"),
            None,
            400,
            "limit",
        ),
        (
            Method::GET,
            format!("/v1/zones/{ZONE}/records?limt=5"),
            None,
            400,
            "limt",
        ),
        (
            Method::GET,
            format!("/v1/zones/{ZONE}/records?cursor=a.other.org."),
            None,
            400,
            "cursor",
        ),
    ];
    for (method, uri, body, status, field) in cases {
        let r = api.call(method.clone(), &uri, body.clone()).await;
        let what = format!("{method} {uri} {body:?}: {}", r.text);
        assert_eq!(r.status.as_u16(), status, "{what}");
        assert_eq!(r.field(), field, "{what}");
        assert!(!r.error().is_empty(), "{what}");
        assert_eq!(api.snapshot().await, before, "{what} changed the zone");
    }

    // Malformed JSON, a body that isn't JSON-typed, and one over 1 MiB.
    let uri = rec("www", "A");
    let bodies: [(&str, String, u16, &str); 5] = [
        (
            "application/json",
            "{\"ttl\": 30, \"records\": [".into(),
            400,
            "body",
        ),
        (
            "application/json",
            "{\"ttl\": 30, \"records\": []} trailing".into(),
            400,
            "body",
        ),
        (
            "text/plain",
            "{\"ttl\": 30, \"records\": [\"192.0.2.1\"]}".into(),
            415,
            "Content-Type",
        ),
        (
            "application/x-www-form-urlencoded",
            "ttl=30".into(),
            415,
            "Content-Type",
        ),
        (
            "application/json",
            format!(
                "{{\"ttl\": 30, \"records\": [\"{}\"]}}",
                "1".repeat(api::BODY_LIMIT)
            ),
            413,
            "body",
        ),
    ];
    for (ctype, body, status, field) in bodies {
        let r = api.send_text(Method::PUT, &uri, ctype, body).await;
        assert_eq!(r.status.as_u16(), status, "{ctype}: {}", r.text);
        assert_eq!(r.field(), field, "{ctype}: {}", r.text);
        assert_eq!(api.snapshot().await, before);
    }
    let r = api.get("/v1/nothing-here").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(!r.error().is_empty());
    let r = api
        .call(Method::POST, "/v1/zones/t.example.net", None)
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn names_in_paths() {
    let (_dir, api) = seeded().await;
    // Relative, absolute with and without the dot, and @ all name the same zone's names.
    for name in ["www", "www.t.example.net", "www.t.example.net.", "WWW"] {
        let r = api.get(&format!("/v1/zones/{ZONE}/records/{name}/A")).await;
        assert_eq!(r.status, StatusCode::OK, "{name}: {}", r.text);
        assert_eq!(r.json["name"], "www.t.example.net.");
    }
    let r = api.get(&format!("/v1/zones/{ZONE}/records/@/NS")).await;
    assert_eq!(r.json["name"], "t.example.net.");
    // Names inside record data are absolute, dot or not.
    api.put("m", "MX", 30, &["10 mail.example.net"]).await;
    let r = api.get(&format!("/v1/zones/{ZONE}/records/m/MX")).await;
    assert_eq!(r.json["records"], json!(["10 mail.example.net."]));
}

#[tokio::test]
async fn auth() {
    let dir = tempfile::tempdir().unwrap();
    let api = open(&dir, Some("s3cret-token"));
    api.create_zone().await;
    api.put("www", "A", 30, &["192.0.2.7"]).await;
    let before = api.snapshot().await;

    let put_body = json!({ "ttl": 30, "records": ["192.0.2.99"] }).to_string();
    for auth in [
        None,
        Some("Bearer wrong-token"),
        Some("Bearer s3cret-toke"),
        Some("Bearer s3cret-token-and-more"),
        Some("Basic s3cret-token"),
        Some("s3cret-token"),
    ] {
        for (method, uri) in [
            (Method::PUT, format!("/v1/zones/{ZONE}/records/www/A")),
            (Method::DELETE, format!("/v1/zones/{ZONE}/records/www/A")),
            (Method::DELETE, format!("/v1/zones/{ZONE}")),
            (Method::GET, format!("/v1/zones/{ZONE}/records")),
            (Method::GET, "/v1/zones".to_string()),
            (Method::GET, "/v1/stats".to_string()),
        ] {
            let mut b = Request::builder()
                .method(method.clone())
                .uri(&uri)
                .header(header::CONTENT_TYPE, "application/json");
            if let Some(a) = auth {
                b = b.header(header::AUTHORIZATION, a);
            }
            let r = api.raw(b.body(Body::from(put_body.clone())).unwrap()).await;
            assert_eq!(
                r.status,
                StatusCode::UNAUTHORIZED,
                "{method} {uri} {auth:?}"
            );
            assert!(r.error().contains("token"), "{}", r.text);
        }
    }
    assert_eq!(
        api.snapshot().await,
        before,
        "refused requests changed nothing"
    );

    // The scheme is case-insensitive; /healthz and /metrics need no token.
    let req = Request::builder()
        .uri("/v1/zones")
        .header(header::AUTHORIZATION, "bearer s3cret-token")
        .body(Body::empty())
        .unwrap();
    assert_eq!(api.raw(req).await.status, StatusCode::OK);
    for uri in ["/healthz", "/metrics"] {
        let r = api
            .raw(Request::builder().uri(uri).body(Body::empty()).unwrap())
            .await;
        assert_eq!(r.status, StatusCode::OK, "{uri}");
    }
}

#[tokio::test]
async fn batches_are_atomic() {
    let (_dir, api) = seeded().await;
    let before = api.snapshot().await;
    let uri = format!("/v1/zones/{ZONE}/changes");
    let set = |name: &str, t: &str, records: Value| json!({ "op": "set", "name": name, "type": t, "ttl": 60, "records": records });
    let bad_batches = [
        // The second change puts data beside a CNAME: the first must not stay applied.
        (
            json!([
                set("new", "A", json!(["192.0.2.1"])),
                set("alias", "TXT", json!(["x"]))
            ]),
            422,
            "changes[1].type",
        ),
        (
            json!([
                set("new", "A", json!(["192.0.2.1"])),
                set("new2", "A", json!(["nope"]))
            ]),
            400,
            "changes[1].records[0]",
        ),
        (
            json!([set("new", "A", json!(["192.0.2.1"])), { "op": "delete", "name": "missing", "type": "A" }]),
            404,
            "changes[1].type",
        ),
        (
            json!([
                set("new", "A", json!(["192.0.2.1"])),
                set("x.other.org.", "A", json!(["192.0.2.1"]))
            ]),
            422,
            "changes[1].name",
        ),
        (
            json!([{ "op": "upsert", "name": "a", "type": "A" }]),
            400,
            "changes[0].op",
        ),
        (
            json!([{ "op": "set", "name": "a", "type": "A", "records": ["192.0.2.1"] }]),
            400,
            "changes[0].ttl",
        ),
        (
            json!([{ "op": "delete", "name": "www", "type": "A", "ttl": 5 }]),
            400,
            "changes[0].ttl",
        ),
        (
            json!([{ "op": "set", "name": "a", "type": "A", "ttl": 1, "records": ["192.0.2.1"], "x": 1 }]),
            400,
            "changes[0].x",
        ),
        (
            json!([set("a", "BOGUS", json!(["1"]))]),
            400,
            "changes[0].type",
        ),
        (
            json!([
                set("a", "A", json!(["192.0.2.1"])),
                set("b", "A", json!(["192.0.2.1"]))
                    .as_object()
                    .map(|o| {
                        let mut o = o.clone();
                        o.insert("ttl".into(), json!(2_147_483_648u32));
                        Value::Object(o)
                    })
                    .unwrap()
            ]),
            422,
            "changes[1].ttl",
        ),
        (json!([]), 422, "changes"),
    ];
    for (changes, status, field) in bad_batches {
        let r = api
            .call(Method::POST, &uri, Some(json!({ "changes": changes })))
            .await;
        assert_eq!(r.status.as_u16(), status, "{changes}: {}", r.text);
        assert_eq!(r.field(), field, "{changes}: {}", r.text);
        assert_eq!(api.snapshot().await, before, "{changes} changed the zone");
    }

    // A good batch: one serial bump for all of it; later changes see earlier ones.
    let serial = before.0["serial"].as_u64().unwrap();
    let r = api
        .call(
            Method::POST,
            &uri,
            Some(json!({ "changes": [
                { "op": "delete", "name": "alias", "type": "CNAME" },
                set("alias", "A", json!(["192.0.2.2"])),
                set("www", "A", json!(["192.0.2.3", "192.0.2.4"])),
            ] })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["serial"].as_u64().unwrap(), serial + 1);
    let r = api.get(&format!("/v1/zones/{ZONE}/records/alias/A")).await;
    assert_eq!(r.json["records"], json!(["192.0.2.2"]));
    let r = api.get(&format!("/v1/zones/{ZONE}/records/www/A")).await;
    assert_eq!(r.json["records"], json!(["192.0.2.3", "192.0.2.4"]));
}

#[tokio::test]
async fn paging() {
    let dir = tempfile::tempdir().unwrap();
    let api = open(&dir, None);
    api.create_zone().await;
    let mut changes = Vec::new();
    for i in 0..250 {
        changes.push(json!({ "op": "set", "name": format!("h{i:03}"), "type": "A", "ttl": 30, "records": ["192.0.2.1"] }));
    }
    // One name with three RRsets, to see that a page never splits a name.
    for (t, r) in [("A", "192.0.2.9"), ("AAAA", "2001:db8::9"), ("TXT", "nine")] {
        changes.push(json!({ "op": "set", "name": "h100", "type": t, "ttl": 30, "records": [r] }));
    }
    let r = api
        .call(
            Method::POST,
            &format!("/v1/zones/{ZONE}/changes"),
            Some(json!({ "changes": changes })),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // Default page size 100: apex NS + 252 RRsets = 253 in three pages.
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let uri = match &cursor {
            None => format!("/v1/zones/{ZONE}/records"),
            Some(c) => format!("/v1/zones/{ZONE}/records?cursor={c}"),
        };
        let r = api.get(&uri).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let page = r.json["records"].as_array().unwrap().clone();
        assert!(page.len() <= 100, "{}", page.len());
        pages += 1;
        for s in &page {
            seen.push((
                s["name"].as_str().unwrap().to_string(),
                s["type"].as_str().unwrap().to_string(),
            ));
        }
        match r.json["next_cursor"].as_str() {
            Some(c) => {
                // The page ends at a name boundary: the cursor is a name not on it.
                assert!(page.iter().all(|s| s["name"] != c), "{c} split");
                cursor = Some(c.to_string());
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 253);
    let mut dedup = seen.clone();
    dedup.dedup();
    assert_eq!(dedup.len(), seen.len(), "no RRset twice");
    assert_eq!(seen[0], ("t.example.net.".to_string(), "NS".to_string()));
    assert_eq!(api.all_records(ZONE).await.len(), 253);

    // limit=2 at h100 (three RRsets): the name comes whole, alone.
    let r = api
        .get(&format!(
            "/v1/zones/{ZONE}/records?limit=2&cursor=h100.t.example.net."
        ))
        .await;
    let page = r.json["records"].as_array().unwrap();
    assert_eq!(page.len(), 3);
    assert!(page.iter().all(|s| s["name"] == "h100.t.example.net."));
    assert_eq!(r.json["next_cursor"], "h101.t.example.net.");
    // The last page has no cursor.
    let r = api
        .get(&format!(
            "/v1/zones/{ZONE}/records?cursor=h249.t.example.net."
        ))
        .await;
    assert_eq!(r.json["records"].as_array().unwrap().len(), 1);
    assert!(r.json.get("next_cursor").is_none());
}

/// `(metric name, labels as written, value)`.
type Sample = (String, String, f64);

/// Parses the text exposition format: `name{labels} value` lines, with `# HELP` / `# TYPE`.
/// Returns the samples and the `(family, type)` pairs.
fn parse_metrics(text: &str) -> (Vec<Sample>, Vec<(String, String)>) {
    let mut samples = Vec::new();
    let mut types = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
            types.push((name.to_string(), kind.to_string()));
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("series value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                let l = l.strip_suffix('}').expect("labels close");
                (n, l.to_string())
            }
            None => (series, String::new()),
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "metric name {name:?}"
        );
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| types.iter().any(|(t, k)| t == f && k == "histogram"))
            .unwrap_or(name);
        assert!(
            types.iter().any(|(t, _)| t == family),
            "{name} has no # TYPE before it"
        );
        samples.push((name.to_string(), labels, value));
    }
    (samples, types)
}

#[tokio::test]
async fn metrics() {
    let (_dir, api) = seeded().await;
    api.get("/v1/zones/nope.example").await;
    let r = api.get("/metrics").await;
    assert_eq!(r.status, StatusCode::OK);
    let (samples, types) = parse_metrics(&r.text);
    let value = |name: &str, labels: &str| {
        samples
            .iter()
            .find(|(n, l, _)| n == name && l == labels)
            .map(|s| s.2)
            .unwrap_or_else(|| panic!("no {name}{{{labels}}} in\n{}", r.text))
    };
    for (family, kind) in [
        ("edgedns_xdp_answered_total", "counter"),
        ("edgedns_xdp_passed_total", "counter"),
        ("edgedns_responses_total", "counter"),
        ("edgedns_build_info", "gauge"),
        ("edgedns_fast_path_enabled", "gauge"),
        ("edgedns_process_resident_memory_bytes", "gauge"),
        ("edgedns_process_open_fds", "gauge"),
        ("edgedns_process_start_time_seconds", "gauge"),
        ("edgedns_api_requests_total", "counter"),
        ("edgedns_api_request_duration_seconds", "histogram"),
        ("edgedns_zone_records", "gauge"),
        ("edgedns_zone_serial", "gauge"),
    ] {
        assert!(
            types.iter().any(|(n, k)| n == family && k == kind),
            "{family} {kind}"
        );
    }
    // seeded(): one POST (201) and two PUTs (200); then a 404; the snapshot GETs are 200s.
    assert_eq!(value("edgedns_api_requests_total", "code=\"201\""), 1.0);
    assert!(value("edgedns_api_requests_total", "code=\"200\"") >= 2.0);
    assert_eq!(value("edgedns_api_requests_total", "code=\"404\""), 1.0);
    assert_eq!(
        value("edgedns_zone_records", "zone=\"t.example.net.\""),
        4.0
    );
    assert_eq!(value("edgedns_zone_serial", "zone=\"t.example.net.\""), 3.0);
    assert_eq!(
        value(
            "edgedns_responses_total",
            "path=\"fallback\",transport=\"udp\",rcode=\"NOERROR\",qtype=\"A\""
        ),
        0.0
    );
    assert_eq!(value("edgedns_fast_path_enabled", ""), 0.0);
    assert_eq!(
        value(
            "edgedns_build_info",
            &format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))
        ),
        1.0
    );
    assert!(value("edgedns_process_resident_memory_bytes", "") > 1e6);
    assert!(value("edgedns_process_open_fds", "") >= 3.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let started = value("edgedns_process_start_time_seconds", "");
    assert!(
        started <= now + 1.0 && started > now - 3600.0,
        "{started} vs {now}"
    );
    assert!(
        samples.iter().all(|(n, _, _)| n.starts_with("edgedns_")),
        "a metric without the edgedns_ prefix"
    );
    assert_eq!(value("edgedns_fast_path_attached", ""), 0.0);
    // Histogram: buckets cumulative, +Inf equal to _count.
    let buckets: Vec<f64> = samples
        .iter()
        .filter(|(n, _, _)| n == "edgedns_api_request_duration_seconds_bucket")
        .map(|s| s.2)
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    let count = value("edgedns_api_request_duration_seconds_count", "");
    assert_eq!(
        value("edgedns_api_request_duration_seconds_bucket", "le=\"+Inf\""),
        count
    );
    let total: f64 = samples
        .iter()
        .filter(|(n, _, _)| n == "edgedns_api_requests_total")
        .map(|s| s.2)
        .sum();
    assert_eq!(total, count);
    assert!(value("edgedns_api_request_duration_seconds_sum", "") > 0.0);
}

const ZONE_FILE: &str = "\
$ORIGIN t.example.net.
$TTL 300
@       IN SOA ns1.example.net. hostmaster ( 41 3600 900 1209600 45 )
        IN NS  ns1.example.net.
        IN NS  ns2.example.net.
        IN MX  10 mail
        IN TXT \"v=spf1 -all\" \"part two\"
        IN CAA 0 issue \"letsencrypt.org\"
www  60 IN A   192.0.2.7
     60 IN A   192.0.2.8
        IN AAAA 2001:db8::7
alias   IN CNAME www
_sip._tcp IN SRV 10 5 5060 sip.example.net.
7.2     IN PTR www
sub     IN NS  ns.sub
ns.sub  IN A   192.0.2.53
*.wild  IN A   192.0.2.99
";

#[tokio::test]
async fn zone_file_import_errors_and_round_trip() {
    let (_dir, api) = seeded().await;
    let before = api.snapshot().await;
    let uri = format!("/v1/zones/{ZONE}/zonefile?source=zone.db");

    for (text, want_line, want) in [
        ("$ORIGIN t.example.net.\n$TTL 60\n@ SOA a b 1 2 3 4 5\n@ NS ns\nwww A 1.2.3\n", 5, "zone.db:5: bad IPv4 address"),
        ("$ORIGIN t.example.net.\n$TTL 60\n@ SOA a b 1 2 3 4 5\n@ NS ns\nalias CNAME www\nalias TXT x\n", 6, "zone.db:6: "),
        ("$ORIGIN t.example.net.\n$TTL 60\n@ SOA a b 1 2 3 4 5\n@ NS ns\n\nx.other.org. A 192.0.2.1\n", 6, "zone.db:6: x.other.org. is not inside zone"),
        ("$ORIGIN other.org.\n$TTL 60\n@ SOA a b 1 2 3 4 5\n@ NS ns\n", 3, "zone.db:3: the SOA record is for other.org."),
        ("$ORIGIN t.example.net.\n$TTL 60\n@ SOA a b ( 1 2\n 3 4 5 )\n@ NS ns\nw BOGUS x\n", 6, "zone.db:6: unknown record type"),
    ] {
        let r = api.send_text(Method::PUT, &uri, "text/dns", text.into()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{text}: {}", r.text);
        assert!(r.error().starts_with(want), "{text}: {}", r.text);
        assert_eq!(r.json["line"], want_line, "{}", r.text);
        assert_eq!(r.field(), "body");
        assert_eq!(api.snapshot().await, before);
    }
    let r = api
        .send_text(
            Method::PUT,
            &format!("/v1/zones/{ZONE}/zonefile"),
            "text/plain",
            ZONE_FILE.into(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = api
        .send_text(
            Method::PUT,
            &format!("/v1/zones/{ZONE}/zonefile"),
            "text/dns",
            "@ A 1.2.3.4\n".into(),
        )
        .await;
    assert!(r.error().starts_with("zonefile:1: "), "{}", r.text);
    assert_eq!(api.snapshot().await, before);

    // Import replaces the zone: the seeded records are gone, the file's are there.
    let r = api
        .send_text(Method::PUT, &uri, "text/dns", ZONE_FILE.into())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["changed"], true);
    assert_eq!(r.json["negative_ttl"], 45);
    // The zone had serial 3; the file's 41 is newer, so it is taken.
    assert_eq!(r.json["serial"], 41);
    assert_eq!(r.json["records"], 14);
    let r = api.get(&format!("/v1/zones/{ZONE}/records/www/A")).await;
    assert_eq!(
        (r.json["ttl"].clone(), r.json["records"].clone()),
        (json!(60), json!(["192.0.2.7", "192.0.2.8"]))
    );
    let r = api.get(&format!("/v1/zones/{ZONE}/records/7.2/PTR")).await;
    assert_eq!(r.json["records"], json!(["www.t.example.net."]));
    let imported = api.snapshot().await;

    // Importing the same file again changes nothing, not even the serial.
    let r = api
        .send_text(Method::PUT, &uri, "text/dns", ZONE_FILE.into())
        .await;
    assert_eq!(
        (r.json["changed"].clone(), r.json["serial"].clone()),
        (json!(false), json!(41))
    );

    // Export, then import into a fresh store: the same zone, serial included.
    let export = api.get(&format!("/v1/zones/{ZONE}/zonefile")).await;
    assert_eq!(export.status, StatusCode::OK);
    let dir2 = tempfile::tempdir().unwrap();
    let api2 = open(&dir2, None);
    let r = api2
        .send_text(Method::PUT, &uri, "text/dns", export.text.clone())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}\n{}", r.text, export.text);
    assert_eq!(api2.snapshot().await, imported);
    assert_eq!(
        api2.get(&format!("/v1/zones/{ZONE}/zonefile")).await.text,
        export.text
    );

    // Re-importing an edited export moves the serial forward even though its serial is old.
    let edited = export.text.replace("192.0.2.53", "192.0.2.54");
    let r = api.send_text(Method::PUT, &uri, "text/dns", edited).await;
    assert_eq!(
        (r.json["changed"].clone(), r.json["serial"].clone()),
        (json!(true), json!(42))
    );
}

#[tokio::test]
async fn changes_survive_reopening_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let (before, serial) = {
        let api = open(&dir, None);
        api.create_zone().await;
        api.put("www", "A", 30, &["192.0.2.7"]).await;
        api.put("@", "MX", 30, &["10 mail.example.net."]).await;
        let r = api
            .call(
                Method::PATCH,
                &format!("/v1/zones/{ZONE}"),
                Some(json!({ "negative_ttl": 99 })),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
        let serial = api
            .call(
                Method::DELETE,
                &format!("/v1/zones/{ZONE}/records/@/MX"),
                None,
            )
            .await
            .json["serial"]
            .clone();
        (api.snapshot().await, serial)
        // The router and the engine (and with them the store) are dropped here.
    };
    let api = open(&dir, None);
    let after = api.snapshot().await;
    assert_eq!(after, before);
    assert_eq!(after.0["serial"], serial);
    assert_eq!(after.0["negative_ttl"], 99);
    let r = api.get(&format!("/v1/zones/{ZONE}/records/www/A")).await;
    assert_eq!(r.json["records"], json!(["192.0.2.7"]));
}

#[tokio::test]
async fn stats_and_health() {
    let dir = tempfile::tempdir().unwrap();
    let api = open(&dir, None);
    let r = api.get("/healthz").await;
    assert_eq!(r.json["status"], "ok");
    let r = api.get("/v1/stats").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["fallback"]["NOERROR"], 0);
}

/// Every (method, path) docs/openapi.yaml lists is routed: no "no such endpoint" 404, no 405.
#[tokio::test]
async fn openapi_endpoints_exist() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml"))
        .expect("docs/openapi.yaml");
    let (_dir, api) = seeded().await;
    let mut path: Option<String> = None;
    let mut checked = 0;
    for line in doc.lines() {
        if let Some(p) = line.strip_prefix("  /").and_then(|l| l.strip_suffix(':')) {
            path = Some(format!("/{p}"));
            continue;
        }
        if !line.starts_with(' ') {
            path = None;
        }
        let Some(p) = &path else { continue };
        let method = match line.trim_end() {
            "    get:" => Method::GET,
            "    put:" => Method::PUT,
            "    post:" => Method::POST,
            "    patch:" => Method::PATCH,
            "    delete:" => Method::DELETE,
            _ => continue,
        };
        let uri = p
            .replace("{zone}", ZONE)
            .replace("{name}", "www")
            .replace("{type}", "A");
        // An empty JSON body: the point is the routing, not the request.
        let r = api.call(method.clone(), &uri, Some(json!({}))).await;
        assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
        assert!(
            !(r.status == StatusCode::NOT_FOUND && r.error().contains("no such endpoint")),
            "{method} {uri} is documented but not routed"
        );
        checked += 1;
    }
    assert_eq!(checked, 25, "documented operations");
}

/// Names with bytes that need escaping in presentation form (as owners, as an SOA mailbox and as
/// a zone apex) are accepted, served, and still there after the store is reopened: the store
/// keeps names as their wire bytes, so whatever the API accepts reads back the same.
#[tokio::test]
async fn odd_names_survive_reopening_the_store() {
    // (as written in the path, as the API shows the owner)
    const OWNERS: [&str; 8] = [
        "a%2Bb", "a%2Fb", "-a", "a*", "a~b", "a%22b", "x%5C255y", "x%5C000y",
    ];
    const ODD_ZONE: &str = "a+b.test";
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let api = open(&dir, None);
        api.create_zone().await;
        for owner in OWNERS {
            api.put(owner, "A", 30, &["192.0.2.9"]).await;
        }
        let r = api
            .call(
                Method::PATCH,
                &format!("/v1/zones/{ZONE}"),
                Some(json!({ "rname": "dns+admin@example.net" })),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let r = api
            .call(
                Method::POST,
                "/v1/zones",
                Some(json!({ "zone": ODD_ZONE, "ns": ["ns1.example.net"], "rname": "x\\.y@a+b.test" })),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
        let odd = api.get("/v1/zones/a%2Bb.test").await;
        assert_eq!(odd.status, StatusCode::OK, "{}", odd.text);
        let (zone, records) = api.snapshot().await;
        let names: std::collections::BTreeSet<&str> =
            records.iter().filter_map(|r| r["name"].as_str()).collect();
        // The apex and the eight owners, all different.
        assert_eq!(names.len(), 1 + OWNERS.len(), "{names:?}");
        (zone, records, odd.json)
    };
    let api = open(&dir, None);
    let (zone, records) = api.snapshot().await;
    assert_eq!(zone, before.0);
    assert_eq!(records, before.1);
    assert_eq!(zone["rname"], before.0["rname"]);
    let odd = api.get("/v1/zones/a%2Bb.test").await;
    assert_eq!(odd.status, StatusCode::OK, "{}", odd.text);
    assert_eq!(odd.json, before.2);
}

use redb::ReadableTable as _;

/// The value of an unlabelled sample in `/metrics`.
async fn metric(api: &Api, name: &str) -> f64 {
    let r = api.get("/metrics").await;
    let (samples, _) = parse_metrics(&r.text);
    samples
        .iter()
        .find(|(n, l, _)| n == name && l.is_empty())
        .map(|s| s.2)
        .unwrap_or_else(|| panic!("no {name} in\n{}", r.text))
}

/// A store entry that can't be read (a cut RRset, a zone whose settings are garbage) is set
/// aside: the rest of the store loads and is served, and /readyz and /metrics say what was set
/// aside, on this start and the next.
#[tokio::test]
async fn corrupt_entries_are_quarantined_and_the_rest_loads() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let api = open(&dir, None);
        api.create_zone().await;
        api.put("www", "A", 30, &["192.0.2.7"]).await;
        api.put("mail", "A", 30, &["192.0.2.25"]).await;
        api.put("txt", "TXT", 30, &["\"hello\""]).await;
        let r = api.get("/readyz").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["store"]["quarantined"], json!([]));
        api.snapshot().await
    };
    // Damage the file as a bug or a bad disk would: cut the TXT RRset's value short, add a
    // zone whose settings are three bytes; and add what the zone model refuses although it
    // reads: a CNAME at the apex, and the root zone.
    {
        let db = redb::Database::create(dir.path().join(dns_user::store::DB_FILE)).unwrap();
        type Cols = (&'static [u8], &'static [u8], u16);
        let rrsets: redb::TableDefinition<Cols, &[u8]> = redb::TableDefinition::new("rrsets_v2");
        let zones: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("zones_v2");
        let tx = db.begin_write().unwrap();
        {
            let mut t = tx.open_table(rrsets).unwrap();
            let k = (
                &b"\x01t\x07example\x03net\x00"[..],
                &b"\x03txt\x01t\x07example\x03net\x00"[..],
                16u16,
            );
            let v = t
                .get(k)
                .unwrap()
                .expect("the TXT RRset is stored")
                .value()
                .to_vec();
            t.insert(k, &v[..v.len() - 2]).unwrap();
            let cname = dns_user::store::encode_rrset(
                60,
                &[hickory_proto::rr::RData::CNAME(
                    hickory_proto::rr::rdata::CNAME(
                        hickory_proto::rr::Name::from_ascii("elsewhere.example.").unwrap(),
                    ),
                )],
            )
            .unwrap();
            t.insert((k.0, k.0, 5u16), cname.as_slice()).unwrap();
            let mut z = tx.open_table(zones).unwrap();
            z.insert(&b"\x06broken\x04test\x00"[..], &b"abc"[..])
                .unwrap();
            let root = hickory_proto::rr::Name::root();
            let soa = dns_user::zone::SoaParams::new(root.clone(), root);
            z.insert(
                &b"\x00"[..],
                dns_user::store::encode_zone_meta(&soa, 1).as_slice(),
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    let without_txt: Vec<Value> = before
        .1
        .iter()
        .filter(|r| r["type"] != "TXT")
        .cloned()
        .collect();
    let mut expected = (before.0["serial"].clone(), without_txt);
    for start in 0..2 {
        let api = open(&dir, None);
        let (zone, records) = api.snapshot().await;
        assert_eq!(zone["serial"], expected.0, "start {start}");
        assert_eq!(records, expected.1, "start {start}");
        assert_eq!(
            api.get("/v1/zones/broken.test").await.status,
            StatusCode::NOT_FOUND
        );
        let r = api.get("/readyz").await;
        // Still ready: everything else is served and writable.
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let q = r.json["store"]["quarantined"]
            .as_array()
            .expect("list")
            .clone();
        let mut entries: Vec<&str> = q.iter().filter_map(|e| e["entry"].as_str()).collect();
        entries.sort_unstable();
        assert_eq!(
            entries,
            [
                "rrset t.example.net. CNAME in zone t.example.net.",
                "rrset txt.t.example.net. TXT in zone t.example.net.",
                "zone .",
                "zone broken.test.",
            ],
            "{}",
            r.text
        );
        let reasons = r.json["store"]["quarantined"].to_string();
        assert!(reasons.contains("root zone"), "{reasons}");
        assert!(
            reasons.contains("CNAME can't be at the zone apex"),
            "{reasons}"
        );
        assert_eq!(metric(&api, "edgedns_store_quarantined_entries").await, 4.0);
        // Writes go on as before.
        if start == 0 {
            api.put("mail", "A", 30, &["192.0.2.26"]).await;
            let (zone, records) = api.snapshot().await;
            expected = (zone["serial"].clone(), records);
        }
    }
}

/// A store written by the version that kept names as hickory's escaped text loads: it is
/// migrated to wire-form names on open, names that text couldn't carry included, and an entry
/// that version could write but not read (a record count that wrapped) is quarantined.
#[tokio::test]
async fn format_1_store_is_migrated() {
    use hickory_proto::{
        rr::{rdata::A, Name, RData},
        serialize::binary::BinEncodable,
    };
    let dir = tempfile::tempdir().unwrap();
    let apex = Name::from_ascii("t.example.net.").unwrap();
    let odd = Name::from_labels([&b"a+b"[..], b"x\xffy", b"t", b"example", b"net"]).unwrap();
    let www = Name::from_ascii("www.t.example.net.").unwrap();
    let big = Name::from_ascii("big.t.example.net.").unwrap();
    {
        let db = redb::Database::create(dir.path().join(dns_user::store::DB_FILE)).unwrap();
        let zones: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("zones");
        let rrsets: redb::TableDefinition<(&str, &str, u16), &[u8]> =
            redb::TableDefinition::new("rrsets");
        let rrset = |ttl: u32, count: u16, records: &[RData]| {
            let mut v = ttl.to_be_bytes().to_vec();
            v.extend_from_slice(&count.to_be_bytes());
            for r in records {
                let b = r.to_bytes().unwrap();
                v.extend_from_slice(&(b.len() as u16).to_be_bytes());
                v.extend_from_slice(&b);
            }
            v
        };
        let ns = |n: &str| RData::NS(hickory_proto::rr::rdata::NS(Name::from_ascii(n).unwrap()));
        let tx = db.begin_write().unwrap();
        {
            let meta = json!({
                "soa_ttl": 3600, "mname": "ns1.example.net.", "rname": "dns\\+admin.example.net.",
                "refresh": 3600, "retry": 900, "expire": 1209600, "minimum": 30, "serial": 7,
            });
            tx.open_table(zones)
                .unwrap()
                .insert(apex.to_ascii().as_str(), meta.to_string().as_bytes())
                .unwrap();
            let mut t = tx.open_table(rrsets).unwrap();
            let a = |n: u8| RData::A(A::new(192, 0, 2, n));
            let apex_s = apex.to_ascii();
            for (owner, rtype, v) in [
                (
                    &apex,
                    2u16,
                    rrset(3600, 2, &[ns("ns1.example.net."), ns("ns2.example.net.")]),
                ),
                (&odd, 1, rrset(60, 1, &[a(1)])),
                (&www, 1, rrset(60, 2, &[a(2), a(3)])),
                // Three records under a count of 1: what a wrapped count looks like.
                (&big, 1, rrset(60, 1, &[a(4), a(5), a(6)])),
            ] {
                t.insert(
                    (apex_s.as_str(), owner.to_ascii().as_str(), rtype),
                    v.as_slice(),
                )
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    for _ in 0..2 {
        let api = open(&dir, None);
        let zone = api.get(&format!("/v1/zones/{ZONE}")).await;
        assert_eq!(zone.json["serial"], 7, "{}", zone.text);
        assert_eq!(zone.json["rname"], "dns+admin.example.net.");
        let r = api
            .get(&format!("/v1/zones/{ZONE}/records/a+b.x%5C255y/A"))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(r.json["records"], json!(["192.0.2.1"]));
        let r = api.get(&format!("/v1/zones/{ZONE}/records/www/A")).await;
        assert_eq!(r.json["records"], json!(["192.0.2.2", "192.0.2.3"]));
        let r = api.get(&format!("/v1/zones/{ZONE}/records/big/A")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        let r = api.get("/readyz").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        let q = r.json["store"]["quarantined"]
            .as_array()
            .expect("list")
            .clone();
        assert_eq!(q.len(), 1, "{}", r.text);
        assert_eq!(q[0]["table"], "rrsets");
        assert!(
            q[0]["reason"].as_str().unwrap().contains("trailing bytes"),
            "{}",
            r.text
        );
    }
}

/// An RRset is refused (422, naming the limit) unless it fits one 65,535-byte DNS message with
/// its question; the largest that fits is kept across a restart. Before this limit a 65,536-
/// record RRset was acknowledged and then couldn't be read back.
#[tokio::test]
async fn rrsets_must_fit_one_message() {
    let dir = tempfile::tempdir().unwrap();
    let addrs = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 0xff, i & 0xff))
            .collect()
    };
    async fn put(api: &Api, name: &str, rtype: &str, records: Vec<String>) -> Reply {
        let uri = format!("/v1/zones/{ZONE}/records/{name}/{rtype}");
        let body = json!({ "ttl": 60, "records": records });
        api.call(Method::PUT, &uri, Some(body)).await
    }
    // big.t.example.net. is 19 bytes in wire form: 12 + 19 + 4 + n * (2 + 10 + 4) <= 65535.
    let fits = (65535 - 12 - 19 - 4) / 16;
    {
        let api = open(&dir, None);
        api.create_zone().await;
        let serial = api.snapshot().await.0["serial"].clone();
        for n in [65536, fits + 1] {
            let r = put(&api, "big", "A", addrs(n)).await;
            assert_eq!(
                r.status,
                StatusCode::UNPROCESSABLE_ENTITY,
                "{n}: {}",
                r.text
            );
            assert!(r.error().contains("65535"), "{}", r.text);
            assert_eq!(r.field(), "records");
        }
        // Two TXT records of 51,200 bytes each: each fits, the two don't.
        let txt: Vec<String> = ["x", "y"]
            .iter()
            .map(|c| vec![format!("\"{}\"", c.repeat(255)); 200].join(" "))
            .collect();
        let r = put(&api, "big", "TXT", txt.clone()).await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        // The same through a batch and a zone file import.
        let r = api
            .call(
                Method::POST,
                &format!("/v1/zones/{ZONE}/changes"),
                Some(json!({ "changes": [
                    { "op": "set", "name": "big", "type": "TXT", "ttl": 60, "records": txt }
                ] })),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
        assert_eq!(r.field(), "changes[0].records");
        assert_eq!(api.snapshot().await.0["serial"], serial, "nothing changed");
        let r = put(&api, "big", "A", addrs(fits)).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    }
    let api = open(&dir, None);
    let r = api.get(&format!("/v1/zones/{ZONE}/records/big/A")).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["records"].as_array().map(Vec::len), Some(fits));
}

/// A tmpfs of a fixed size, mounted for one test and unmounted when dropped (even if the test
/// fails). Needs root, as the tests have here and in CI.
struct Tmpfs {
    dir: TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("running mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs (this test needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: the store may still have the file open while a failing test unwinds.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A full disk refuses a change with a 500 and undoes it; /readyz says 503 and the failed
/// commits are counted; once space is freed, changes work again without a restart, and what
/// is served and what reloads is exactly what was acknowledged.
#[tokio::test]
async fn writes_recover_after_the_disk_was_full() {
    use std::io::Write as _;
    let fs = Tmpfs::mount("16m");
    let data = fs.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let data_dir = tempfile::TempDir::new_in(&data).unwrap();
    let api = open(&data_dir, None);
    api.create_zone().await;
    api.put("www", "A", 30, &["192.0.2.7"]).await;
    assert_eq!(api.get("/readyz").await.status, StatusCode::OK);

    let filler_path = fs.path().join("filler");
    let mut after = api.snapshot().await;
    let mut n = 0;
    // Round 0: the next write reopens the store; round 1: /readyz's probe does.
    for round in 0..2 {
        // Fill the file system.
        let mut filler = std::fs::File::create(&filler_path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        let mut full = false;
        for _ in 0..(16 << 4) + 16 {
            if filler.write_all(&chunk).is_err() {
                full = true;
                break;
            }
        }
        assert!(full, "the tmpfs never filled up");
        drop(filler);

        // Write until a commit fails: redb may first use free pages inside its file.
        let txt = |i: usize| vec![format!("\"{}\"", "z".repeat(250)); 1 + i % 3].join(" ");
        let mut failed = None;
        for _ in 0..400 {
            n += 1;
            let name = format!("n{n}");
            let uri = format!("/v1/zones/{ZONE}/records/{name}/TXT");
            let records: Vec<String> = (0..30).map(|j| format!("{} \"{j}\"", txt(n))).collect();
            let r = api
                .call(
                    Method::PUT,
                    &uri,
                    Some(json!({ "ttl": 60, "records": records })),
                )
                .await;
            if r.status == StatusCode::INTERNAL_SERVER_ERROR {
                failed = Some(name);
                break;
            }
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        }
        let failed = failed.expect("a write failed on the full disk");
        // The failed change is not served.
        let r = api
            .get(&format!("/v1/zones/{ZONE}/records/{failed}/TXT"))
            .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text);
        let r = api.get("/readyz").await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
        assert!(r.error().contains("not writable"), "{}", r.text);
        assert_eq!(
            metric(&api, "edgedns_store_commit_errors_total").await,
            f64::from(round + 1)
        );
        assert_eq!(metric(&api, "edgedns_store_writable").await, 0.0);
        let acknowledged = api.snapshot().await;

        // Free the space: writes work again, without a restart.
        std::fs::remove_file(&filler_path).unwrap();
        if round == 1 {
            let r = api.get("/readyz").await;
            assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        }
        let serial = api
            .put(&format!("after{round}"), "A", 30, &["192.0.2.8"])
            .await;
        let r = api.get("/readyz").await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text);
        assert_eq!(metric(&api, "edgedns_store_writable").await, 1.0);
        after = api.snapshot().await;
        assert_eq!(after.0["serial"], serial);
        assert_eq!(after.1.len(), acknowledged.1.len() + 1);
    }
    drop(api);

    // What reloads is what was acknowledged.
    let api = open(&data_dir, None);
    assert_eq!(api.snapshot().await, after);
    drop(api);
    drop(data_dir);
}

/// The root zone would make the server answer for every name: refused, by create and import.
#[tokio::test]
async fn the_root_zone_is_refused() {
    let (_dir, api) = seeded().await;
    let before = api.get("/v1/zones").await.json;
    let r = api
        .call(
            Method::POST,
            "/v1/zones",
            Some(json!({ "zone": ".", "ns": ["ns1.example.net"] })),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.text);
    assert_eq!(r.field(), "zone");
    assert!(r.error().contains("root"), "{}", r.text);
    let file = ". 300 IN SOA ns1.example.net. hostmaster.example.net. 1 3600 900 1209600 30\n\
                . 300 IN NS ns1.example.net.\n";
    let r = api
        .send_text(
            Method::PUT,
            "/v1/zones/%2E/zonefile",
            "text/dns",
            file.into(),
        )
        .await;
    // The file is checked whole as it is parsed: a 400 about the body.
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert!(r.error().contains("root"), "{}", r.text);
    assert_eq!(api.get("/v1/zones").await.json, before);
}

/// Zone files have their own body limit (64 MiB unless configured), JSON keeps 1 MiB: a zone
/// exported at over 1 MiB imports back.
#[tokio::test]
async fn zone_files_over_a_mebibyte_import() {
    let (_dir, api) = seeded().await;
    let mut file = String::from(
        "$ORIGIN t.example.net.\n@ 300 IN SOA ns1.example.net. hostmaster 5 3600 900 1209600 30\n\
         @ 300 IN NS ns1.example.net.\n",
    );
    // Long records rather than many: the point is the size, not the count.
    let text = "t".repeat(200);
    for i in 0..6_000u32 {
        file.push_str(&format!("host{i} 300 IN TXT \"{i} {text}\"\n"));
    }
    assert!(file.len() > api::BODY_LIMIT);
    let uri = format!("/v1/zones/{ZONE}/zonefile");
    let r = api.send_text(Method::PUT, &uri, "text/dns", file).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["records"], 6_001);
    let exported = api.get(&uri).await.text;
    assert!(exported.len() > api::BODY_LIMIT);
    let r = api.send_text(Method::PUT, &uri, "text/dns", exported).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["changed"], false);

    // A configured limit is enforced with a 413 that names it.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let zones = store.load().unwrap().zones;
    let state = ApiState::new(
        Engine::new(zones, None, store),
        Arc::new(FallbackStats::new()),
    )
    .with_zonefile_max_bytes(1000);
    let small = Api {
        app: api::router(state),
        token: None,
    };
    let r = small
        .send_text(Method::PUT, &uri, "text/dns", "; x\n".repeat(300))
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    assert!(r.error().contains("1000"), "{}", r.text);
    assert_eq!(r.field(), "body");
}

/// A body that arrives in pieces of `size` bytes, as a large upload does: lines and records
/// are cut anywhere.
struct Pieces {
    text: Bytes,
    size: usize,
}

impl hyper::body::Body for Pieces {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if self.text.is_empty() {
            return std::task::Poll::Ready(None);
        }
        let n = self.size.min(self.text.len());
        let piece = self.text.split_to(n);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(piece))))
    }
}

/// A zone file is parsed as it arrives: a body of many pieces, cut mid-line, imports whole; a
/// mistake deep in it is a 400 naming its line, and changes nothing.
#[tokio::test]
async fn zone_files_are_parsed_as_they_stream_in() {
    let (_dir, api) = seeded().await;
    let uri = format!("/v1/zones/{ZONE}/zonefile");
    let put = |text: String| {
        let req = api
            .request(Method::PUT, &uri)
            .header(header::CONTENT_TYPE, "text/dns")
            .body(Body::new(Pieces {
                text: Bytes::from(text),
                size: 1000,
            }))
            .expect("request");
        api.raw(req)
    };
    let mut file = String::from(
        "$ORIGIN t.example.net.\n@ 300 IN SOA ns1.example.net. hostmaster 5 3600 900 1209600 30\n\
         @ 300 IN NS ns1.example.net.\n",
    );
    let header_lines = file.lines().count();
    let names = 40_000u32;
    for i in 0..names {
        file.push_str(&format!(
            "host{i} 300 IN A 192.0.{}.{}\n",
            (i >> 8) & 255,
            i & 255
        ));
    }
    assert!(file.len() > api::BODY_LIMIT);
    let r = put(file.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.json["records"], u64::from(names) + 1);
    let before = api.get(&uri).await.text;
    assert!(before.contains("host39999"), "{before}");

    // A syntax error on line `bad` (a record that is not one), the records around it changed
    // too: nothing of the file lands.
    let bad = header_lines + 30_001;
    let mut lines: Vec<String> = file
        .lines()
        .map(|l| l.replace("192.0.", "198.51."))
        .collect();
    lines[bad - 1] = "host30000 300 IN A not-an-address".to_string();
    let r = put(lines.join("\n") + "\n").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text);
    assert_eq!(r.json["line"], bad, "{}", r.text);
    assert!(r.error().contains(&format!(":{bad}:")), "{}", r.text);
    assert_eq!(r.field(), "body");
    assert_eq!(api.get(&uri).await.text, before);
}
