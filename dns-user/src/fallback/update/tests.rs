use std::{net::IpAddr, sync::Arc};

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::{rdata::A, RData, RecordType},
};

use super::{
    super::{
        policy::{decide, Answer, Auth},
        request,
        testutil::{apex, n, zones},
        FallbackConfig, Transport,
    },
    *,
};
use crate::{
    engine::Engine,
    maps::FastPath,
    store::Store,
    tsig::{sign_request, Algorithm, Key, KeyRing},
};

const IN: u16 = 1;
const NONE: u16 = 254;
const ANY_: u16 = 255;
const T_A: u16 = 1;
const T_NS: u16 = 2;
const T_CNAME: u16 = 5;
const T_SOA: u16 = 6;
const T_TXT: u16 = 16;

fn wire_name(s: &str) -> Vec<u8> {
    tsig::wire(&n(s))
}

/// One record of the prerequisite or update section.
fn rr(name: &str, rtype: u16, class: u16, ttl: u32, rdata: &[u8]) -> Vec<u8> {
    let mut b = wire_name(name);
    b.extend_from_slice(&rtype.to_be_bytes());
    b.extend_from_slice(&class.to_be_bytes());
    b.extend_from_slice(&ttl.to_be_bytes());
    b.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    b.extend_from_slice(rdata);
    b
}

fn txt(s: &str) -> Vec<u8> {
    let mut b = vec![s.len() as u8];
    b.extend_from_slice(s.as_bytes());
    b
}

/// An UPDATE for `zone` (ZTYPE SOA, class IN) with these prerequisites and updates.
fn message(zone: &str, pre: &[Vec<u8>], up: &[Vec<u8>]) -> Vec<u8> {
    let mut b = 0x1234u16.to_be_bytes().to_vec();
    b.extend_from_slice(&(5u16 << 11).to_be_bytes());
    for c in [1, pre.len(), up.len(), 0] {
        b.extend_from_slice(&(c as u16).to_be_bytes());
    }
    b.extend_from_slice(&wire_name(zone));
    b.extend_from_slice(&[0, 6, 0, 1]);
    for r in pre.iter().chain(up) {
        b.extend_from_slice(r);
    }
    b
}

/// The checks that need no zone data, then the batch against [`zones`]: the zones after, or
/// the rcode.
fn run(msg: &[u8]) -> Result<ZoneSet, ResponseCode> {
    let mut zs = zones();
    let req = request::parse(msg);
    assert!(req.malformed.is_none(), "{:?}", req.malformed);
    let zone = zone_of(&req, &zs)?;
    let update = parse(msg, zone)?;
    match update.build(&zs) {
        Ok(Some(edit)) => {
            if let Err(e) = zs.apply(edit) {
                panic!("the batch must pass the zone's checks: {e}");
            }
            Ok(zs)
        }
        Ok(None) => Ok(zs),
        Err(e) => Err(e.rcode()),
    }
}

fn records(zs: &ZoneSet, name: &str, t: RecordType) -> Vec<RData> {
    zs.zone(&apex())
        .and_then(|z| z.rrset(&n(name), t))
        .map(|s| s.records.clone())
        .unwrap_or_default()
}

fn a(ip: [u8; 4]) -> RData {
    RData::A(A::from(std::net::Ipv4Addr::from(ip)))
}

fn serial(zs: &ZoneSet) -> u32 {
    zs.zone(&apex()).expect("zone").serial()
}

const WWW: &str = "www.example.com.";
const NOPE: &str = "nope.example.com.";
const ADD_NEW: fn() -> Vec<u8> = || rr("new.example.com.", T_A, IN, 60, &[192, 0, 2, 50]);

#[test]
fn each_prerequisite_passes_and_fails_with_its_rcode() {
    let cases: [(Vec<u8>, Vec<u8>, ResponseCode); 5] = [
        // Name is in use: NXDOMAIN when it isn't.
        (
            rr(WWW, ANY_, ANY_, 0, &[]),
            rr(NOPE, ANY_, ANY_, 0, &[]),
            ResponseCode::NXDomain,
        ),
        // Name is not in use: YXDOMAIN when it is.
        (
            rr(NOPE, ANY_, NONE, 0, &[]),
            rr(WWW, ANY_, NONE, 0, &[]),
            ResponseCode::YXDomain,
        ),
        // RRset exists (value independent): NXRRSET when it doesn't.
        (
            rr(WWW, T_A, ANY_, 0, &[]),
            rr(WWW, T_TXT, ANY_, 0, &[]),
            ResponseCode::NXRRSet,
        ),
        // RRset does not exist: YXRRSET when it does.
        (
            rr(WWW, T_TXT, NONE, 0, &[]),
            rr(WWW, T_A, NONE, 0, &[]),
            ResponseCode::YXRRSet,
        ),
        // RRset exists (value dependent): NXRRSET when the values differ.
        (
            rr(WWW, T_A, IN, 0, &[192, 0, 2, 1]),
            rr(WWW, T_A, IN, 0, &[192, 0, 2, 9]),
            ResponseCode::NXRRSet,
        ),
    ];
    for (pass, fail, rcode) in cases {
        let after = run(&message("example.com.", &[pass], &[ADD_NEW()])).expect("passes");
        assert_eq!(records(&after, "new.example.com.", RecordType::A).len(), 1);
        let before = serial(&zones());
        assert_eq!(
            run(&message("example.com.", &[fail], &[ADD_NEW()])).err(),
            Some(rcode)
        );
        // The apex is in use: it owns the SOA.
        assert_eq!(serial(&zones()), before);
    }
    run(&message(
        "example.com.",
        &[rr("example.com.", ANY_, ANY_, 0, &[])],
        &[],
    ))
    .expect("apex");
    run(&message(
        "example.com.",
        &[rr("example.com.", T_SOA, ANY_, 0, &[])],
        &[],
    ))
    .expect("SOA");
}

#[test]
fn a_value_dependent_prerequisite_compares_the_whole_rrset() {
    let two = message(
        "example.com.",
        &[],
        &[rr(WWW, T_A, IN, 300, &[192, 0, 2, 2])],
    );
    let zs = run(&two).expect("added");
    assert_eq!(records(&zs, WWW, RecordType::A).len(), 2);
    let check = |values: &[[u8; 4]]| {
        let pre: Vec<_> = values.iter().map(|v| rr(WWW, T_A, IN, 0, v)).collect();
        let msg = message("example.com.", &pre, &[ADD_NEW()]);
        let req = request::parse(&msg);
        let update = parse(&msg, zone_of(&req, &zs).unwrap()).unwrap();
        update.build(&zs).map(|_| ()).map_err(|e| e.rcode())
    };
    assert_eq!(check(&[[192, 0, 2, 1], [192, 0, 2, 2]]), Ok(()));
    // Order doesn't matter; a subset or a superset fails.
    assert_eq!(check(&[[192, 0, 2, 2], [192, 0, 2, 1]]), Ok(()));
    assert_eq!(check(&[[192, 0, 2, 1]]), Err(ResponseCode::NXRRSet));
    assert_eq!(
        check(&[[192, 0, 2, 1], [192, 0, 2, 2], [192, 0, 2, 3]]),
        Err(ResponseCode::NXRRSet)
    );
}

#[test]
fn each_update_kind() {
    let before = serial(&zones());
    // Add to an RRset: the new TTL for the whole RRset, one serial bump for the message.
    let zs = run(&message(
        "example.com.",
        &[],
        &[
            rr(WWW, T_A, IN, 120, &[192, 0, 2, 2]),
            rr(WWW, T_A, IN, 120, &[192, 0, 2, 3]),
            rr(WWW, T_TXT, IN, 60, &txt("hello")),
        ],
    ))
    .expect("added");
    let z = zs.zone(&apex()).unwrap();
    let set = z.rrset(&n(WWW), RecordType::A).unwrap();
    assert_eq!(set.records.len(), 3);
    assert_eq!(set.ttl, 120);
    assert_eq!(records(&zs, WWW, RecordType::TXT).len(), 1);
    assert_eq!(serial(&zs), before.wrapping_add(1));

    // Delete one RR from an RRset.
    let zs = run(&message(
        "example.com.",
        &[],
        &[
            rr(WWW, T_A, IN, 120, &[192, 0, 2, 2]),
            rr(WWW, T_A, NONE, 0, &[192, 0, 2, 1]),
        ],
    ))
    .expect("deleted");
    assert_eq!(records(&zs, WWW, RecordType::A), [a([192, 0, 2, 2])]);

    // Delete an RRset.
    let zs = run(&message(
        "example.com.",
        &[],
        &[
            rr(WWW, T_TXT, IN, 60, &txt("x")),
            rr(WWW, T_A, ANY_, 0, &[]),
        ],
    ))
    .expect("deleted");
    assert!(records(&zs, WWW, RecordType::A).is_empty());
    assert_eq!(records(&zs, WWW, RecordType::TXT).len(), 1);

    // Delete all RRsets at a name.
    let zs = run(&message(
        "example.com.",
        &[],
        &[
            rr(WWW, T_TXT, IN, 60, &txt("x")),
            rr(WWW, ANY_, ANY_, 0, &[]),
        ],
    ))
    .expect("deleted");
    assert!(!zs.zone(&apex()).unwrap().name_exists(&n(WWW)));

    // Deleting what isn't there changes nothing, and bumps no serial.
    let zs = run(&message(
        "example.com.",
        &[],
        &[rr(NOPE, T_A, ANY_, 0, &[]), rr(NOPE, ANY_, ANY_, 0, &[])],
    ))
    .expect("nothing");
    assert_eq!(serial(&zs), before);
}

#[test]
fn the_apex_keeps_its_soa_and_ns_and_soa_updates_are_ignored() {
    let ns = wire_name("ns1.example.com.");
    let zs = run(&message(
        "example.com.",
        &[],
        &[
            rr("example.com.", T_NS, ANY_, 0, &[]),
            rr("example.com.", T_NS, NONE, 0, &ns),
            rr("example.com.", ANY_, ANY_, 0, &[]),
            rr("example.com.", T_SOA, ANY_, 0, &[]),
        ],
    ))
    .expect("ignored");
    assert_eq!(records(&zs, "example.com.", RecordType::NS).len(), 1);
    assert_eq!(serial(&zs), serial(&zones()));

    // With a second NS, the first can go.
    let zs = run(&message(
        "example.com.",
        &[],
        &[
            rr(
                "example.com.",
                T_NS,
                IN,
                3600,
                &wire_name("ns2.example.com."),
            ),
            rr("example.com.", T_NS, NONE, 0, &ns),
        ],
    ))
    .expect("replaced");
    let ns = records(&zs, "example.com.", RecordType::NS);
    assert_eq!(ns.len(), 1);
    assert_eq!(ns[0].to_string(), "ns2.example.com.");

    // An SOA in the update section changes nothing: the serial is ours.
    let mut soa = wire_name("ns9.example.com.");
    soa.extend(wire_name("h.example.com."));
    soa.extend([
        0, 0, 0xff, 0xff, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0,
    ]);
    let zs = run(&message(
        "example.com.",
        &[],
        &[rr("example.com.", T_SOA, IN, 60, &soa)],
    ))
    .expect("ignored");
    assert_eq!(serial(&zs), serial(&zones()));
}

#[test]
fn cname_exclusivity_as_bind_and_knot() {
    let target = wire_name("target.example.net.");
    // A CNAME where an A is: ignored.
    let zs = run(&message(
        "example.com.",
        &[],
        &[rr(WWW, T_CNAME, IN, 60, &target)],
    ))
    .expect("ignored");
    assert!(records(&zs, WWW, RecordType::CNAME).is_empty());
    assert_eq!(records(&zs, WWW, RecordType::A).len(), 1);
    // Deleting the A first in the same message: the CNAME goes in.
    let zs = run(&message(
        "example.com.",
        &[],
        &[
            rr(WWW, ANY_, ANY_, 0, &[]),
            rr(WWW, T_CNAME, IN, 60, &target),
        ],
    ))
    .expect("replaced");
    assert_eq!(records(&zs, WWW, RecordType::CNAME).len(), 1);
    assert!(records(&zs, WWW, RecordType::A).is_empty());
    // Data beside a CNAME: ignored; a CNAME over a CNAME replaces it.
    let alias = "alias.example.com.";
    let zs = run(&message(
        "example.com.",
        &[],
        &[
            rr(alias, T_CNAME, IN, 60, &target),
            rr(alias, T_TXT, IN, 60, &txt("no")),
            rr(alias, T_CNAME, IN, 60, &wire_name("other.example.net.")),
        ],
    ))
    .expect("applied");
    let cname = records(&zs, alias, RecordType::CNAME);
    assert_eq!(cname.len(), 1);
    assert_eq!(cname[0].to_string(), "other.example.net.");
    assert!(records(&zs, alias, RecordType::TXT).is_empty());
}

#[test]
fn form_and_zone_errors() {
    // Zone section: not exactly one, not SOA, another class.
    let mut none = message("example.com.", &[], &[ADD_NEW()]);
    none[5] = 0;
    let req = request::parse(&none);
    assert_eq!(zone_of(&req, &zones()).err(), Some(ResponseCode::FormErr));
    let mut not_soa = message("example.com.", &[], &[ADD_NEW()]);
    let at = 12 + wire_name("example.com.").len();
    not_soa[at + 1] = 1;
    assert_eq!(
        zone_of(&request::parse(&not_soa), &zones()).err(),
        Some(ResponseCode::FormErr)
    );
    let mut chaos = message("example.com.", &[], &[ADD_NEW()]);
    chaos[at + 3] = 3;
    assert_eq!(
        zone_of(&request::parse(&chaos), &zones()).err(),
        Some(ResponseCode::FormErr)
    );
    // A zone we don't serve, or a name below one of ours: NOTAUTH.
    assert_eq!(
        run(&message("example.org.", &[], &[])).err(),
        Some(ResponseCode::NotAuth)
    );
    assert_eq!(
        run(&message("www.example.com.", &[], &[])).err(),
        Some(ResponseCode::NotAuth)
    );
    // A name outside the zone: NOTZONE.
    let outside = rr("www.example.org.", T_A, IN, 60, &[192, 0, 2, 1]);
    assert_eq!(
        run(&message(
            "example.com.",
            &[],
            std::slice::from_ref(&outside)
        ))
        .err(),
        Some(ResponseCode::NotZone)
    );
    assert_eq!(
        run(&message(
            "example.com.",
            &[rr("example.org.", ANY_, ANY_, 0, &[])],
            &[]
        ))
        .err(),
        Some(ResponseCode::NotZone)
    );
    for bad in [
        // A prerequisite with a TTL, or class ANY with RDATA.
        message("example.com.", &[rr(WWW, T_A, ANY_, 5, &[])], &[]),
        message("example.com.", &[rr(WWW, T_A, ANY_, 0, &[1, 2, 3, 4])], &[]),
        // Adding a meta type; deleting with a TTL; class CHAOS.
        message("example.com.", &[], &[rr(WWW, 252, IN, 60, &[1])]),
        message("example.com.", &[], &[rr(WWW, T_A, ANY_, 60, &[])]),
        message(
            "example.com.",
            &[],
            &[rr(WWW, T_A, NONE, 60, &[1, 2, 3, 4])],
        ),
        message("example.com.", &[], &[rr(WWW, T_A, 3, 60, &[1, 2, 3, 4])]),
    ] {
        assert_eq!(run(&bad).err(), Some(ResponseCode::FormErr));
    }
    // A type the zones don't store: REFUSED, nothing changed.
    let msg = message("example.com.", &[], &[rr(WWW, 99, IN, 60, &txt("spf"))]);
    let zs = zones();
    let req = request::parse(&msg);
    let update = parse(&msg, zone_of(&req, &zs).unwrap()).unwrap();
    let edit = update.build(&zs).unwrap().expect("an edit");
    let e = UpdateError::from(EngineError::from(
        zs.clone().apply(edit).expect_err("refused by the zone"),
    ));
    assert_eq!(e.rcode(), ResponseCode::Refused);
}

#[test]
fn prefixes() {
    let p: Prefix = "10.1.0.0/16".parse().unwrap();
    assert!(p.contains("10.1.200.3".parse().unwrap()));
    assert!(!p.contains("10.2.0.1".parse().unwrap()));
    assert!(p.contains("::ffff:10.1.0.1".parse().unwrap()));
    let one: Prefix = "192.0.2.7".parse().unwrap();
    assert!(one.contains("192.0.2.7".parse().unwrap()));
    assert!(!one.contains("192.0.2.8".parse().unwrap()));
    let v6: Prefix = "fd00::/8".parse().unwrap();
    assert!(v6.contains("fd12::1".parse().unwrap()));
    assert!(!v6.contains("10.0.0.1".parse().unwrap()));
    assert!("0.0.0.0/0"
        .parse::<Prefix>()
        .unwrap()
        .contains("8.8.8.8".parse().unwrap()));
    assert!("10.0.0.0/33".parse::<Prefix>().is_err());
    assert!("nope".parse::<Prefix>().is_err());
}

/// The whole path in process: the policy, the engine with a real store, the signed answer.
struct Bed {
    _dir: tempfile::TempDir,
    engine: Arc<Engine<Store, FastPath>>,
    keys: KeyRing,
    updates: Updates,
    /// `--update-allow`.
    allow: Vec<Prefix>,
}

impl Bed {
    async fn new(allow: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let engine = Engine::new(ZoneSet::new(), None, store);
        let zs = zones();
        let z = zs.zone(&apex()).unwrap();
        let mut spec = crate::zone::ZoneSpec::new(
            apex(),
            z.soa().mname.clone(),
            z.soa().rname.clone(),
            vec![n("ns1.example.com.")],
        );
        spec.serial = 1;
        engine.apply(Edit::CreateZone(spec)).await.expect("zone");
        let keys = KeyRing::new([key()]);
        let updates = Updates {
            handler: engine.clone(),
        };
        Self {
            _dir: dir,
            engine,
            keys,
            updates,
            allow: allow.iter().map(|p| p.parse().unwrap()).collect(),
        }
    }

    async fn send(&self, msg: &[u8], peer: &str, now: u64) -> (Message, Vec<u8>) {
        let auth = Auth {
            keys: &self.keys,
            updates: Some(&self.updates),
            peer: Some(peer.parse::<IpAddr>().unwrap()),
            journal: None,
            now,
            limits: None,
        };
        let cfg = FallbackConfig {
            update_allow: self.allow.clone(),
            ..FallbackConfig::default()
        };
        let reply = match decide(&self.engine.zones(), msg, Transport::Udp, &cfg, &auth) {
            Answer::Now(reply) => reply.expect("an answer"),
            Answer::Update(p) => p.run(self.updates.handler.clone()).await,
        };
        let bytes = reply.messages[0].clone();
        (Message::from_vec(&bytes).expect("parses"), bytes)
    }

    fn has_new(&self) -> bool {
        !records(&self.engine.zones(), "new.example.com.", RecordType::A).is_empty()
    }
}

fn key() -> Key {
    Key::new(
        "upd-key",
        Algorithm::HmacSha256,
        b"0123456789abcdef".to_vec(),
    )
    .unwrap()
}

#[tokio::test]
async fn unsigned_updates_need_an_allowed_source() {
    let bed = Bed::new(&["192.0.2.0/24"]).await;
    let msg = message("example.com.", &[], &[ADD_NEW()]);
    let (r, _) = bed.send(&msg, "198.51.100.1", tsig::now()).await;
    assert_eq!(r.response_code(), ResponseCode::Refused);
    assert!(!bed.has_new());
    let (r, _) = bed.send(&msg, "192.0.2.9", tsig::now()).await;
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert_eq!(r.queries().len(), 1, "the zone section is echoed");
    assert!(bed.has_new());
}

#[tokio::test]
async fn signed_updates_land_and_their_answers_are_signed() {
    let bed = Bed::new(&[]).await;
    let now = tsig::now();
    let mut msg = message("example.com.", &[], &[ADD_NEW()]);
    sign_request(&mut msg, &key(), now, 300);
    let serial_before = serial(&bed.engine.zones());
    let (r, bytes) = bed.send(&msg, "198.51.100.1", now).await;
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert!(bed.has_new());
    assert_eq!(serial(&bed.engine.zones()), serial_before.wrapping_add(1));
    let t = tsig_of(&bytes);
    assert_eq!((t.error, t.mac.len()), (0, 32));

    // A failing prerequisite: NXDOMAIN, signed, nothing changed.
    let mut msg = message(
        "example.com.",
        &[rr(NOPE, ANY_, ANY_, 0, &[])],
        &[rr("other.example.com.", T_A, IN, 60, &[192, 0, 2, 51])],
    );
    sign_request(&mut msg, &key(), now, 300);
    let (r, bytes) = bed.send(&msg, "198.51.100.1", now).await;
    assert_eq!(r.response_code(), ResponseCode::NXDomain);
    assert_eq!(tsig_of(&bytes).error, 0);
    assert_eq!(serial(&bed.engine.zones()), serial_before.wrapping_add(1));
}

fn tsig_of(bytes: &[u8]) -> tsig::TsigRecord {
    let at = tsig::locate(bytes).unwrap().expect("a TSIG record");
    tsig::TsigRecord::read(bytes, at).unwrap()
}

#[tokio::test]
async fn tsig_failures_change_nothing() {
    let bed = Bed::new(&["0.0.0.0/0"]).await;
    let now = tsig::now();
    // The right name, the wrong secret: BADSIG, even from an allowed source.
    let wrong = Key::new("upd-key", Algorithm::HmacSha256, b"wrong".to_vec()).unwrap();
    let mut msg = message("example.com.", &[], &[ADD_NEW()]);
    sign_request(&mut msg, &wrong, now, 300);
    let (r, bytes) = bed.send(&msg, "192.0.2.1", now).await;
    assert_eq!(r.response_code(), ResponseCode::NotAuth);
    let t = tsig_of(&bytes);
    assert_eq!((t.error, t.mac.len()), (16, 0));
    // An unknown key: BADKEY.
    let other = Key::new("who", Algorithm::HmacSha256, b"0123456789abcdef".to_vec()).unwrap();
    let mut msg = message("example.com.", &[], &[ADD_NEW()]);
    sign_request(&mut msg, &other, now, 300);
    let (r, bytes) = bed.send(&msg, "192.0.2.1", now).await;
    assert_eq!(r.response_code(), ResponseCode::NotAuth);
    assert_eq!(tsig_of(&bytes).error, 17);
    // A clock an hour off: BADTIME, signed, with our time.
    let mut msg = message("example.com.", &[], &[ADD_NEW()]);
    sign_request(&mut msg, &key(), now - 3600, 300);
    let (r, bytes) = bed.send(&msg, "192.0.2.1", now).await;
    assert_eq!(r.response_code(), ResponseCode::NotAuth);
    let t = tsig_of(&bytes);
    assert_eq!((t.error, t.mac.len(), t.other.len()), (18, 32, 6));
    assert!(!bed.has_new());

    // A plain query signed with an unknown key: BADKEY too.
    let query = || {
        super::super::testutil::bytes(&super::super::testutil::query(
            "example.com.",
            RecordType::SOA,
        ))
    };
    let mut q = query();
    sign_request(&mut q, &other, now, 300);
    let (r, bytes) = bed.send(&q, "192.0.2.1", now).await;
    assert_eq!(r.response_code(), ResponseCode::NotAuth);
    assert!(r.answers().is_empty());
    assert_eq!(tsig_of(&bytes).error, 17);
    // Signed with the key: answered, and signed.
    let mut q = query();
    sign_request(&mut q, &key(), now, 300);
    let (r, bytes) = bed.send(&q, "192.0.2.1", now).await;
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert_eq!(r.answers().len(), 1);
    let t = tsig_of(&bytes);
    assert_eq!((t.error, t.mac.len()), (0, 32));

    // Other opcodes too: a NOTIFY with an unknown key is BADKEY; with ours, NOTIMP, signed.
    let notify = |k: &Key| {
        let mut q = query();
        q[2] = 4 << 3;
        sign_request(&mut q, k, now, 300);
        q
    };
    let (r, bytes) = bed.send(&notify(&other), "192.0.2.1", now).await;
    assert_eq!(r.response_code(), ResponseCode::NotAuth);
    assert_eq!(tsig_of(&bytes).error, 17);
    let (r, bytes) = bed.send(&notify(&key()), "192.0.2.1", now).await;
    assert_eq!(r.response_code(), ResponseCode::NotImp);
    assert_eq!(tsig_of(&bytes).mac.len(), 32);
}

/// A key whose statement lists zones updates those only: elsewhere, REFUSED.
#[tokio::test]
async fn a_key_limited_to_zones_updates_only_those() {
    let mut bed = Bed::new(&[]).await;
    let ring = KeyRing::parse(
        "key \"upd-key\" { algorithm hmac-sha256; secret \"MDEyMzQ1Njc4OWFiY2RlZg==\"; \
         zone \"example.org\"; zone \"EXAMPLE.net.\"; };",
        std::path::Path::new("keys.conf"),
    )
    .expect("keys");
    bed.keys = ring;
    let now = tsig::now();
    let mut msg = message("example.com.", &[], &[ADD_NEW()]);
    sign_request(&mut msg, &key(), now, 300);
    let (r, bytes) = bed.send(&msg, "192.0.2.1", now).await;
    assert_eq!(r.response_code(), ResponseCode::Refused);
    assert_eq!(tsig_of(&bytes).mac.len(), 32, "signed all the same");
    assert!(!bed.has_new());

    let ring = KeyRing::parse(
        "key \"upd-key\" { algorithm hmac-sha256; secret \"MDEyMzQ1Njc4OWFiY2RlZg==\"; \
         zone \"example.org\"; zone \"Example.COM\"; };",
        std::path::Path::new("keys.conf"),
    )
    .expect("keys");
    bed.keys = ring;
    let (r, _) = bed.send(&msg, "192.0.2.1", now).await;
    assert_eq!(r.response_code(), ResponseCode::NoError);
    assert!(bed.has_new());
}
