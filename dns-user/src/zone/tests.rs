//! Unit tests of the zone model: one test (or a few) per rule of `resolve` and per mutation rule.

use hickory_proto::{
    op::ResponseCode,
    rr::rdata::{A, AAAA, CNAME, MX, NS, TXT},
};

use std::{
    collections::BTreeSet,
    hash::{Hash, Hasher},
};

use hickory_proto::rr::{RData, Record, RecordType};

use super::{model::Node, name::CanonName, *};
use crate::api::zone_error_field;

fn n(s: &str) -> Name {
    Name::from_ascii(s).expect("test name")
}

fn a(ip: &str) -> RData {
    RData::A(A(ip.parse().expect("test ipv4")))
}

fn aaaa(ip: &str) -> RData {
    RData::AAAA(AAAA(ip.parse().expect("test ipv6")))
}

fn cname(target: &str) -> RData {
    RData::CNAME(CNAME(n(target)))
}

fn ns(target: &str) -> RData {
    RData::NS(NS(n(target)))
}

fn txt(s: &str) -> RData {
    RData::TXT(TXT::new(vec![s.to_string()]))
}

fn apex() -> Name {
    n("example.com.")
}

fn spec(apex: &str) -> ZoneSpec {
    ZoneSpec::new(
        n(apex),
        n("ns1.example.com."),
        n("hostmaster.example.com."),
        vec![n("ns1.example.com."), n("ns2.example.net.")],
    )
}

/// example.com with: ns1 A; www A×2 + AAAA; alias CNAME www; a.b.c TXT (b.c and c are ENTs).
fn zones() -> ZoneSet {
    let mut zs = ZoneSet::new();
    zs.create_zone(spec("example.com.")).expect("create");
    let set = |zs: &mut ZoneSet, name: &str, t, ttl, rd: Vec<RData>| {
        zs.set_rrset(&apex(), &n(name), t, ttl, rd).expect("set");
    };
    set(
        &mut zs,
        "ns1.example.com.",
        RecordType::A,
        300,
        vec![a("192.0.2.53")],
    );
    set(
        &mut zs,
        "www.example.com.",
        RecordType::A,
        300,
        vec![a("192.0.2.1"), a("192.0.2.2")],
    );
    set(
        &mut zs,
        "www.example.com.",
        RecordType::AAAA,
        300,
        vec![aaaa("2001:db8::1")],
    );
    set(
        &mut zs,
        "alias.example.com.",
        RecordType::CNAME,
        60,
        vec![cname("www.example.com.")],
    );
    set(
        &mut zs,
        "a.b.c.example.com.",
        RecordType::TXT,
        60,
        vec![txt("deep")],
    );
    zs
}

fn set(zs: &mut ZoneSet, name: &str, t: RecordType, rd: Vec<RData>) -> ChangeSet {
    zs.set_rrset(&apex(), &n(name), t, 300, rd).expect("set")
}

type Snapshot = (u32, Vec<(Name, RecordType, u32, Vec<RData>)>, SoaParams);

fn snapshot(zs: &ZoneSet) -> Snapshot {
    let z = zs.zone(&apex()).expect("zone");
    (
        z.serial(),
        z.records()
            .map(|(n, t, ttl, r)| (n, t, ttl, r.to_vec()))
            .collect(),
        z.soa().clone(),
    )
}

fn names(list: &[&str]) -> BTreeSet<Name> {
    list.iter().map(|s| n(s)).collect()
}

fn owners(records: &[Record]) -> Vec<String> {
    records.iter().map(|r| r.name().to_string()).collect()
}

// ---- resolve ----

#[test]
fn refused_outside_every_zone() {
    let res = zones().resolve(&n("www.example.org."), RecordType::A);
    assert_eq!(res.rcode, ResponseCode::Refused);
    assert_eq!(res.kind, ResolutionKind::Refused);
    assert!(!res.aa);
    assert!(res.answers.is_empty() && res.authority.is_empty() && res.additional.is_empty());
    // A parent of the apex isn't in the zone either.
    assert_eq!(
        zones().resolve(&n("com."), RecordType::NS).kind,
        ResolutionKind::Refused
    );
}

#[test]
fn answer_preserves_question_case() {
    let q = n("WwW.ExAmPlE.CoM.");
    let res = zones().resolve(&q, RecordType::A);
    assert_eq!(res.rcode, ResponseCode::NoError);
    assert_eq!(res.kind, ResolutionKind::Answer);
    assert!(res.aa && !res.wildcard);
    assert_eq!(res.answers.len(), 2);
    for r in &res.answers {
        assert!(
            r.name().eq_case(&q),
            "owner {} is not the question",
            r.name()
        );
        assert_eq!(r.ttl(), 300);
    }
    // Insertion order.
    assert_eq!(res.answers[0].data(), &a("192.0.2.1"));
    assert_eq!(res.answers[1].data(), &a("192.0.2.2"));
    assert!(res.authority.is_empty() && res.additional.is_empty());
}

#[test]
fn relative_and_uppercase_names_find_the_zone() {
    let zs = zones();
    assert_eq!(
        zs.find_zone(&n("WWW.Example.COM")).map(Zone::apex),
        Some(&apex())
    );
    assert!(zs.zone(&n("EXAMPLE.com")).is_some());
    assert_eq!(
        zs.resolve(&n("www.example.com"), RecordType::A)
            .answers
            .len(),
        2
    );
}

#[test]
fn longest_apex_wins() {
    let mut zs = zones();
    zs.create_zone(spec("sub.example.com."))
        .expect("child zone");
    let res = zs.resolve(&n("x.sub.example.com."), RecordType::A);
    assert_eq!(res.rcode, ResponseCode::NXDomain);
    assert_eq!(owners(&res.authority), vec!["sub.example.com."]);
    let res = zs.resolve(&n("x.example.com."), RecordType::A);
    assert_eq!(owners(&res.authority), vec!["example.com."]);
}

#[test]
fn nodata_has_negative_soa() {
    let zs = zones();
    let res = zs.resolve(&n("www.example.com."), RecordType::MX);
    assert_eq!(res.rcode, ResponseCode::NoError);
    assert_eq!(res.kind, ResolutionKind::Nodata);
    assert!(res.aa);
    assert!(res.answers.is_empty());
    assert_eq!(res.authority.len(), 1);
    let soa = &res.authority[0];
    assert_eq!(soa.record_type(), RecordType::SOA);
    assert_eq!(soa.name(), &apex());
    // min(SOA TTL 3600, MINIMUM 30)
    assert_eq!(soa.ttl(), 30);
    assert_eq!(soa, &zs.zone(&apex()).expect("zone").negative_soa());
}

#[test]
fn nxdomain_has_negative_soa() {
    let res = zones().resolve(&n("nope.example.com."), RecordType::A);
    assert_eq!(res.rcode, ResponseCode::NXDomain);
    assert_eq!(res.kind, ResolutionKind::Nxdomain);
    assert!(res.aa);
    assert!(res.answers.is_empty());
    assert_eq!(owners(&res.authority), vec!["example.com."]);
    assert_eq!(res.authority[0].ttl(), 30);
}

#[test]
fn negative_ttl_is_min_of_soa_ttl_and_minimum() {
    let mut zs = zones();
    let mut soa = zs.zone(&apex()).expect("zone").soa().clone();
    soa.ttl = 600;
    soa.minimum = 7200;
    zs.set_soa(&apex(), soa).expect("set soa");
    let z = zs.zone(&apex()).expect("zone");
    assert_eq!(z.negative_ttl(), 600);
    assert_eq!(z.negative_soa().ttl(), 600);
    let res = zs.resolve(&n("nope.example.com."), RecordType::A);
    assert_eq!(res.authority[0].ttl(), 600);
    // The SOA answer keeps the SOA TTL.
    let res = zs.resolve(&apex(), RecordType::SOA);
    assert_eq!(res.answers[0].ttl(), 600);
    let RData::SOA(s) = res.answers[0].data() else {
        panic!("not an SOA");
    };
    assert_eq!(s.minimum(), 7200);
}

#[test]
fn empty_non_terminals_are_nodata() {
    let zs = zones();
    for ent in ["c.example.com.", "B.c.example.com."] {
        let res = zs.resolve(&n(ent), RecordType::A);
        assert_eq!(res.rcode, ResponseCode::NoError, "{ent}");
        assert_eq!(res.kind, ResolutionKind::Nodata, "{ent}");
        assert_eq!(res.authority.len(), 1);
    }
    // Siblings of an ENT don't exist.
    assert_eq!(
        zs.resolve(&n("x.c.example.com."), RecordType::A).kind,
        ResolutionKind::Nxdomain
    );
    let z = zs.zone(&apex()).expect("zone");
    assert!(z.name_exists(&n("c.example.com.")));
    assert!(!z.name_exists(&n("x.c.example.com.")));
}

#[test]
fn soa_and_ns_at_apex() {
    let zs = zones();
    let q = n("Example.Com.");
    let res = zs.resolve(&q, RecordType::SOA);
    assert_eq!(res.kind, ResolutionKind::Answer);
    assert_eq!(res.answers.len(), 1);
    assert!(res.answers[0].name().eq_case(&q));
    assert_eq!(res.answers[0].ttl(), DEFAULT_SOA_TTL);
    let RData::SOA(s) = res.answers[0].data() else {
        panic!("not an SOA");
    };
    assert_eq!(s.mname(), &n("ns1.example.com."));
    assert_eq!(s.serial(), zs.zone(&apex()).expect("zone").serial());
    assert_eq!(s.minimum(), DEFAULT_NEGATIVE_TTL);

    let res = zs.resolve(&q, RecordType::NS);
    let data: Vec<_> = res.answers.iter().map(|r| r.data().clone()).collect();
    assert_eq!(data, vec![ns("ns1.example.com."), ns("ns2.example.net.")]);
    assert_eq!(res.answers[0].ttl(), DEFAULT_NS_TTL);

    // SOA below the apex: NODATA.
    assert_eq!(
        zs.resolve(&n("www.example.com."), RecordType::SOA).kind,
        ResolutionKind::Nodata
    );
}

#[test]
fn any_returns_every_rrset() {
    let zs = zones();
    let res = zs.resolve(&n("www.example.com."), RecordType::ANY);
    let types: Vec<_> = res.answers.iter().map(Record::record_type).collect();
    assert_eq!(types, vec![RecordType::A, RecordType::A, RecordType::AAAA]);
    let res = zs.resolve(&apex(), RecordType::ANY);
    let types: Vec<_> = res.answers.iter().map(Record::record_type).collect();
    assert_eq!(types, vec![RecordType::SOA, RecordType::NS, RecordType::NS]);
    // ANY at a CNAME is the CNAME, not followed.
    let res = zs.resolve(&n("alias.example.com."), RecordType::ANY);
    assert_eq!(res.answers.len(), 1);
    assert_eq!(res.answers[0].record_type(), RecordType::CNAME);
}

#[test]
fn cname_in_zone_is_followed() {
    let zs = zones();
    let q = n("ALIAS.example.com.");
    let res = zs.resolve(&q, RecordType::A);
    assert_eq!(res.rcode, ResponseCode::NoError);
    assert_eq!(res.kind, ResolutionKind::Answer);
    assert_eq!(res.answers.len(), 3);
    assert_eq!(res.answers[0].record_type(), RecordType::CNAME);
    assert!(res.answers[0].name().eq_case(&q));
    assert_eq!(res.answers[0].ttl(), 60);
    // The target's records carry the stored lowercase name.
    for r in &res.answers[1..] {
        assert!(r.name().eq_case(&n("www.example.com.")));
        assert_eq!(r.record_type(), RecordType::A);
    }
    assert!(res.authority.is_empty());

    // Asking for the CNAME itself doesn't follow it.
    let res = zs.resolve(&q, RecordType::CNAME);
    assert_eq!(res.answers.len(), 1);
}

#[test]
fn cname_target_case_and_missing_dot_are_normalized() {
    let mut zs = zones();
    set(
        &mut zs,
        "up.example.com.",
        RecordType::CNAME,
        vec![cname("WWW.EXAMPLE.COM")],
    );
    let res = zs.resolve(&n("up.example.com."), RecordType::AAAA);
    assert_eq!(res.answers.len(), 2);
    assert!(res.answers[1].name().eq_case(&n("www.example.com.")));
}

#[test]
fn cname_to_nxdomain_and_nodata() {
    let mut zs = zones();
    set(
        &mut zs,
        "dangling.example.com.",
        RecordType::CNAME,
        vec![cname("missing.example.com.")],
    );
    let res = zs.resolve(&n("dangling.example.com."), RecordType::A);
    assert_eq!(res.rcode, ResponseCode::NXDomain);
    assert_eq!(res.kind, ResolutionKind::Nxdomain);
    assert!(res.aa);
    assert_eq!(res.answers.len(), 1);
    assert_eq!(owners(&res.authority), vec!["example.com."]);

    let res = zs.resolve(&n("alias.example.com."), RecordType::MX);
    assert_eq!(res.rcode, ResponseCode::NoError);
    assert_eq!(res.kind, ResolutionKind::Nodata);
    assert_eq!(res.answers.len(), 1);
    assert_eq!(res.authority.len(), 1);
}

#[test]
fn cname_out_of_zone_stops() {
    let mut zs = zones();
    set(
        &mut zs,
        "ext.example.com.",
        RecordType::CNAME,
        vec![cname("www.example.net.")],
    );
    let res = zs.resolve(&n("ext.example.com."), RecordType::A);
    assert_eq!(res.rcode, ResponseCode::NoError);
    assert_eq!(res.kind, ResolutionKind::Answer);
    assert_eq!(res.answers.len(), 1);
    assert!(res.authority.is_empty());
}

#[test]
fn cname_loops_and_long_chains_stop() {
    let mut zs = zones();
    set(
        &mut zs,
        "l1.example.com.",
        RecordType::CNAME,
        vec![cname("l2.example.com.")],
    );
    set(
        &mut zs,
        "l2.example.com.",
        RecordType::CNAME,
        vec![cname("l1.example.com.")],
    );
    let res = zs.resolve(&n("l1.example.com."), RecordType::A);
    assert_eq!(res.rcode, ResponseCode::NoError);
    assert_eq!(res.answers.len(), 2);

    for i in 0..12 {
        let owner = format!("c{i}.example.com.");
        let target = format!("c{}.example.com.", i + 1);
        set(&mut zs, &owner, RecordType::CNAME, vec![cname(&target)]);
    }
    set(
        &mut zs,
        "c12.example.com.",
        RecordType::A,
        vec![a("192.0.2.12")],
    );
    let res = zs.resolve(&n("c0.example.com."), RecordType::A);
    assert_eq!(res.answers.len(), MAX_CNAME_CHAIN);
    assert!(res
        .answers
        .iter()
        .all(|r| r.record_type() == RecordType::CNAME));
    // A chain within the limit is followed to the end.
    let res = zs.resolve(&n("c5.example.com."), RecordType::A);
    assert_eq!(res.answers.len(), 8);
    assert_eq!(res.answers[7].record_type(), RecordType::A);
}

#[test]
fn wildcards_synthesize_with_the_question_name() {
    let mut zs = zones();
    set(
        &mut zs,
        "*.wild.example.com.",
        RecordType::A,
        vec![a("192.0.2.9")],
    );
    set(
        &mut zs,
        "host.wild.example.com.",
        RecordType::A,
        vec![a("192.0.2.10")],
    );
    for q in ["X.wild.example.com.", "x.y.wild.example.com."] {
        let q = n(q);
        let res = zs.resolve(&q, RecordType::A);
        assert_eq!(res.kind, ResolutionKind::Answer, "{q}");
        assert!(res.wildcard && res.aa);
        assert_eq!(res.answers.len(), 1);
        assert!(res.answers[0].name().eq_case(&q));
        assert_eq!(res.answers[0].data(), &a("192.0.2.9"));
    }
    // Wildcard NODATA.
    let res = zs.resolve(&n("x.wild.example.com."), RecordType::MX);
    assert_eq!(res.kind, ResolutionKind::Nodata);
    assert!(res.wildcard);
    // Existing names are not wildcard-matched.
    let res = zs.resolve(&n("host.wild.example.com."), RecordType::A);
    assert!(!res.wildcard);
    assert_eq!(res.answers[0].data(), &a("192.0.2.10"));
    // RFC 4592 §2.2.1: the wildcard's parent is an ENT here, not a match.
    assert_eq!(
        zs.resolve(&n("wild.example.com."), RecordType::A).kind,
        ResolutionKind::Nodata
    );
    // Closest encloser host.wild: *.host.wild doesn't exist.
    let res = zs.resolve(&n("z.host.wild.example.com."), RecordType::A);
    assert_eq!(res.kind, ResolutionKind::Nxdomain);
    assert!(!res.wildcard);
    // Outside the wildcard's subtree nothing changes.
    assert_eq!(
        zs.resolve(&n("nope.example.com."), RecordType::A).kind,
        ResolutionKind::Nxdomain
    );
}

#[test]
fn wildcard_cname_and_empty_wildcard() {
    let mut zs = zones();
    set(
        &mut zs,
        "*.cw.example.com.",
        RecordType::CNAME,
        vec![cname("www.example.com.")],
    );
    let q = n("Foo.cw.example.com.");
    let res = zs.resolve(&q, RecordType::A);
    assert!(res.wildcard);
    assert_eq!(res.answers.len(), 3);
    assert!(res.answers[0].name().eq_case(&q));
    assert!(res.answers[1].name().eq_case(&n("www.example.com.")));

    // `*.ent` exists only as an empty non-terminal: it matches with no data.
    set(
        &mut zs,
        "sub.*.ent.example.com.",
        RecordType::TXT,
        vec![txt("x")],
    );
    let res = zs.resolve(&n("x.ent.example.com."), RecordType::A);
    assert_eq!(res.kind, ResolutionKind::Nodata);
    assert!(res.wildcard);
}

#[test]
fn delegation_gives_referral_with_glue() {
    let mut zs = zones();
    set(
        &mut zs,
        "sub.example.com.",
        RecordType::NS,
        vec![
            ns("ns.sub.example.com."),
            ns("ns1.example.com."),
            ns("ns.other.net."),
        ],
    );
    set(
        &mut zs,
        "ns.sub.example.com.",
        RecordType::A,
        vec![a("192.0.2.77")],
    );
    set(
        &mut zs,
        "ns.sub.example.com.",
        RecordType::AAAA,
        vec![aaaa("2001:db8::77")],
    );
    for (q, t) in [
        ("www.sub.example.com.", RecordType::A),
        ("Sub.example.com.", RecordType::NS),
        ("sub.example.com.", RecordType::A),
        ("ns.sub.example.com.", RecordType::A),
        ("x.sub.example.com.", RecordType::DS),
    ] {
        let res = zs.resolve(&n(q), t);
        assert_eq!(res.kind, ResolutionKind::Referral, "{q}");
        assert_eq!(res.rcode, ResponseCode::NoError);
        assert!(!res.aa, "{q}");
        assert!(res.answers.is_empty());
        assert_eq!(res.authority.len(), 3);
        assert!(res
            .authority
            .iter()
            .all(|r| r.name() == &n("sub.example.com.") && r.record_type() == RecordType::NS));
        let glue: Vec<_> = res
            .additional
            .iter()
            .map(|r| (r.name().to_string(), r.record_type()))
            .collect();
        assert_eq!(
            glue,
            vec![
                ("ns.sub.example.com.".to_string(), RecordType::A),
                ("ns.sub.example.com.".to_string(), RecordType::AAAA),
                ("ns1.example.com.".to_string(), RecordType::A),
            ]
        );
    }
    // DS at the cut is the parent's: answered here (NODATA, no DNSSEC data).
    let res = zs.resolve(&n("sub.example.com."), RecordType::DS);
    assert_eq!(res.kind, ResolutionKind::Nodata);
    assert!(res.aa);

    let z = zs.zone(&apex()).expect("zone");
    assert!(z.has_wildcard_or_cut());
    let existing: Vec<_> = z.existing_names().collect();
    assert!(existing.contains(&n("sub.example.com.")));
    assert!(!existing.contains(&n("ns.sub.example.com.")));
    assert!(z.name_exists(&n("sub.example.com.")));
    assert!(!z.name_exists(&n("ns.sub.example.com.")));

    // A CNAME into the delegation: the CNAME is authoritative, the rest a referral.
    set(
        &mut zs,
        "tosub.example.com.",
        RecordType::CNAME,
        vec![cname("h.sub.example.com.")],
    );
    let res = zs.resolve(&n("tosub.example.com."), RecordType::A);
    assert_eq!(res.kind, ResolutionKind::Referral);
    assert!(res.aa);
    assert_eq!(res.answers.len(), 1);
    assert_eq!(res.authority.len(), 3);
}

#[test]
fn existing_names_lists_owners_and_ents() {
    let zs = zones();
    let got: BTreeSet<Name> = zs.zone(&apex()).expect("zone").existing_names().collect();
    assert_eq!(
        got,
        names(&[
            "example.com.",
            "ns1.example.com.",
            "www.example.com.",
            "alias.example.com.",
            "c.example.com.",
            "b.c.example.com.",
            "a.b.c.example.com.",
        ])
    );
}

#[test]
fn existing_names_match_their_definition() {
    // Deep empty non-terminals, owners after the names below a cut, a cut below a cut, `*` and
    // `-` labels that sort between siblings.
    let mut zs = zones();
    for (name, t, rd) in [
        ("x.y.z.d.example.com.", RecordType::A, vec![a("192.0.2.1")]),
        ("d.example.com.", RecordType::A, vec![a("192.0.2.2")]),
        ("q.z.d.example.com.", RecordType::A, vec![a("192.0.2.3")]),
        (
            "cut.example.com.",
            RecordType::NS,
            vec![ns("ns.cut.example.com.")],
        ),
        ("ns.cut.example.com.", RecordType::A, vec![a("192.0.2.4")]),
        (
            "a.b.cut.example.com.",
            RecordType::NS,
            vec![ns("ns.other.net.")],
        ),
        ("cut-a.example.com.", RecordType::A, vec![a("192.0.2.5")]),
        ("e.cut-a.example.com.", RecordType::A, vec![a("192.0.2.6")]),
        ("*.w.example.com.", RecordType::A, vec![a("192.0.2.7")]),
        ("v.*.w.example.com.", RecordType::A, vec![a("192.0.2.8")]),
        ("z.example.com.", RecordType::A, vec![a("192.0.2.9")]),
    ] {
        set(&mut zs, name, t, rd);
    }
    let z = zs.zone(&apex()).expect("zone");
    let cuts: Vec<Name> = z.cuts().collect();
    let mut want = BTreeSet::new();
    for owner in z.owners() {
        if cuts.iter().any(|c| *c != owner && c.zone_of_case(&owner)) {
            continue;
        }
        let mut n = owner;
        while want.insert(n.clone()) && n != apex() {
            n = n.base_name();
        }
    }
    let got: Vec<Name> = z.existing_names().collect();
    assert_eq!(got, want.into_iter().collect::<Vec<_>>());
    assert!(got.contains(&n("z.d.example.com.")));
    assert!(got.contains(&n("cut-a.example.com.")));
    assert!(!got.contains(&n("b.cut.example.com.")));
    for name in &got {
        assert!(z.name_exists(name), "{name}");
    }
}

#[test]
fn counts_and_listing() {
    let zs = zones();
    let z = zs.zone(&apex()).expect("zone");
    // apex NS (2), ns1 A, www A×2 + AAAA, alias CNAME, a.b.c TXT
    assert_eq!(z.record_count(), 8);
    assert_eq!(z.rrset_count(), 6);
    assert_eq!(z.name_count(), 5);
    let listed: Vec<_> = z.records().map(|(n, t, _, r)| (n, t, r.len())).collect();
    assert_eq!(listed[0], (apex(), RecordType::NS, 2));
    assert_eq!(listed.len(), 6);
    // Canonical order (RFC 4034 §6.1) compares labels from the right: alias < c < ns1 < www.
    let order: Vec<String> = listed.iter().map(|(n, ..)| n.to_string()).collect();
    assert_eq!(
        order,
        vec![
            "example.com.",
            "alias.example.com.",
            "a.b.c.example.com.",
            "ns1.example.com.",
            "www.example.com.",
            "www.example.com.",
        ]
    );
    let from: Vec<_> = z
        .records_from(&n("ns1.example.com."))
        .map(|(n, ..)| n)
        .collect();
    assert_eq!(from.len(), 3);
    assert_eq!(from[0], n("ns1.example.com."));
}

// ---- mutations ----

#[test]
fn serial_bumps_once_per_mutation_and_wraps() {
    let mut zs = ZoneSet::new();
    let mut s = spec("example.com.");
    s.serial = u32::MAX;
    zs.create_zone(s).expect("create");
    set(
        &mut zs,
        "www.example.com.",
        RecordType::A,
        vec![a("192.0.2.1")],
    );
    assert_eq!(zs.zone(&apex()).expect("zone").serial(), 0);
    zs.apply_batch(
        &apex(),
        vec![
            Change::Set {
                name: n("a.example.com."),
                rtype: RecordType::A,
                ttl: 1,
                records: vec![a("192.0.2.1")],
            },
            Change::Delete {
                name: n("www.example.com."),
                rtype: RecordType::A,
            },
        ],
    )
    .expect("batch");
    assert_eq!(zs.zone(&apex()).expect("zone").serial(), 1);
    zs.delete_rrset(&apex(), &n("a.example.com."), RecordType::A)
        .expect("delete");
    assert_eq!(zs.zone(&apex()).expect("zone").serial(), 2);
    let soa = zs.zone(&apex()).expect("zone").soa().clone();
    zs.set_soa(&apex(), soa).expect("soa");
    assert_eq!(zs.zone(&apex()).expect("zone").serial(), 3);
}

#[test]
fn ns_at_apex_replaces_the_apex_ns_set() {
    let mut zs = zones();
    set(
        &mut zs,
        "example.com.",
        RecordType::NS,
        vec![ns("ns3.example.org.")],
    );
    let res = zs.resolve(&apex(), RecordType::NS);
    assert_eq!(res.answers.len(), 1);
    assert_eq!(res.answers[0].data(), &ns("ns3.example.org."));
    let z = zs.zone(&apex()).expect("zone");
    assert!(!z.has_wildcard_or_cut());
    assert_eq!(z.ns().map(|s| s.records.len()), Some(1));
}

#[test]
fn delete_removes_data_and_ents() {
    let mut zs = zones();
    zs.delete_rrset(&apex(), &n("A.B.C.example.com."), RecordType::TXT)
        .expect("delete");
    assert_eq!(
        zs.resolve(&n("c.example.com."), RecordType::A).kind,
        ResolutionKind::Nxdomain
    );
    assert!(zs
        .zone(&apex())
        .expect("zone")
        .rrset(&n("a.b.c.example.com."), RecordType::TXT)
        .is_none());
}

/// Runs a failing mutation and checks the error's field and that nothing changed.
fn rejects(
    zs: &mut ZoneSet,
    field: &str,
    f: impl FnOnce(&mut ZoneSet) -> Result<ChangeSet, ZoneError>,
) -> ZoneError {
    let before = snapshot(zs);
    let zones_before = zs.len();
    let err = f(zs).expect_err("mutation should fail");
    assert_eq!(zone_error_field(&err), field, "{err}");
    assert_eq!(snapshot(zs), before, "{err} changed the zone");
    assert_eq!(zs.len(), zones_before);
    err
}

#[test]
fn validation_errors_change_nothing() {
    let mut zs = zones();
    let www = n("www.example.com.");
    let rrset = |name: &str, t, ttl, rd: Vec<RData>| {
        let name = n(name);
        move |zs: &mut ZoneSet| zs.set_rrset(&apex(), &name, t, ttl, rd)
    };

    let e = rejects(&mut zs, "zone", |zs| {
        zs.set_rrset(
            &n("example.org."),
            &www,
            RecordType::A,
            1,
            vec![a("192.0.2.1")],
        )
    });
    assert!(matches!(e, ZoneError::UnknownZone { .. }));
    let e = rejects(
        &mut zs,
        "name",
        rrset("www.example.org.", RecordType::A, 1, vec![a("192.0.2.1")]),
    );
    assert!(matches!(e, ZoneError::NotInZone { .. }));
    let e = rejects(
        &mut zs,
        "ttl",
        rrset(
            "www.example.com.",
            RecordType::A,
            MAX_TTL + 1,
            vec![a("192.0.2.1")],
        ),
    );
    assert!(matches!(e, ZoneError::TtlOutOfRange { .. }));
    // Accepted at the boundary.
    zs.set_rrset(
        &apex(),
        &n("max.example.com."),
        RecordType::A,
        MAX_TTL,
        vec![a("192.0.2.1")],
    )
    .expect("max ttl");

    let e = rejects(
        &mut zs,
        "type",
        rrset(
            "www.example.com.",
            RecordType::CNAME,
            1,
            vec![cname("x.example.com.")],
        ),
    );
    assert!(matches!(e, ZoneError::CnameBesideData { .. }));
    let e = rejects(
        &mut zs,
        "type",
        rrset("alias.example.com.", RecordType::TXT, 1, vec![txt("x")]),
    );
    assert!(matches!(e, ZoneError::DataBesideCname { .. }));
    let e = rejects(
        &mut zs,
        "type",
        rrset(
            "example.com.",
            RecordType::CNAME,
            1,
            vec![cname("x.example.com.")],
        ),
    );
    assert!(matches!(e, ZoneError::CnameAtApex));
    let e = rejects(
        &mut zs,
        "records[1]",
        rrset(
            "new.example.com.",
            RecordType::CNAME,
            1,
            vec![cname("x.example.com."), cname("y.example.com.")],
        ),
    );
    assert!(matches!(e, ZoneError::MultipleCnames));
    let e = rejects(
        &mut zs,
        "records",
        rrset("new.example.com.", RecordType::A, 1, vec![]),
    );
    assert!(matches!(e, ZoneError::EmptyRecords));
    let e = rejects(
        &mut zs,
        "records[1]",
        rrset(
            "new.example.com.",
            RecordType::A,
            1,
            vec![a("192.0.2.1"), aaaa("::1")],
        ),
    );
    assert!(matches!(e, ZoneError::TypeMismatch { index: 1, .. }));
    let e = rejects(
        &mut zs,
        "records[2]",
        rrset(
            "new.example.com.",
            RecordType::A,
            1,
            vec![a("192.0.2.1"), a("192.0.2.2"), a("192.0.2.1")],
        ),
    );
    assert!(matches!(e, ZoneError::DuplicateRecord { index: 2 }));
    let e = rejects(
        &mut zs,
        "type",
        rrset(
            "new.example.com.",
            RecordType::NULL,
            1,
            vec![a("192.0.2.1")],
        ),
    );
    assert!(matches!(e, ZoneError::UnsupportedType { .. }));
    let soa = zs.zone(&apex()).expect("zone").soa_record().data().clone();
    let e = rejects(
        &mut zs,
        "type",
        rrset("example.com.", RecordType::SOA, 1, vec![soa]),
    );
    assert!(matches!(e, ZoneError::SoaRecord));
    let e = rejects(
        &mut zs,
        "type",
        rrset(
            "*.example.com.",
            RecordType::NS,
            1,
            vec![ns("ns.example.net.")],
        ),
    );
    assert!(matches!(e, ZoneError::WildcardNs));

    let e = rejects(&mut zs, "type", |zs| {
        zs.delete_rrset(&apex(), &apex(), RecordType::NS)
    });
    assert!(matches!(e, ZoneError::ApexNsRequired));
    let e = rejects(&mut zs, "type", |zs| {
        zs.delete_rrset(&apex(), &apex(), RecordType::SOA)
    });
    assert!(matches!(e, ZoneError::SoaRecord));
    let e = rejects(&mut zs, "type", |zs| {
        zs.delete_rrset(&apex(), &www, RecordType::MX)
    });
    assert!(matches!(e, ZoneError::NoSuchRrset { .. }));
    let e = rejects(&mut zs, "name", |zs| {
        zs.delete_rrset(&apex(), &n("www.example.net."), RecordType::A)
    });
    assert!(matches!(e, ZoneError::NotInZone { .. }));
    let e = rejects(&mut zs, "zone", |zs| zs.delete_zone(&n("example.org.")));
    assert!(matches!(e, ZoneError::UnknownZone { .. }));

    // SOA settings.
    let mut bad = zs.zone(&apex()).expect("zone").soa().clone();
    bad.minimum = MAX_TTL + 1;
    let e = rejects(&mut zs, "negative_ttl", |zs| zs.set_soa(&apex(), bad));
    assert!(matches!(e, ZoneError::TtlOutOfRange { .. }));
}

#[test]
fn create_zone_validation() {
    let mut zs = zones();
    let e = rejects(&mut zs, "zone", |zs| zs.create_zone(spec("EXAMPLE.com.")));
    assert!(matches!(e, ZoneError::ZoneExists { .. }));
    let mut s = spec("example.org.");
    s.ns.clear();
    let e = rejects(&mut zs, "ns", |zs| zs.create_zone(s));
    assert!(matches!(e, ZoneError::NoNameServers));
    let mut s = spec("example.org.");
    s.ns = vec![n("ns1.example.org."), n("NS1.example.org.")];
    let e = rejects(&mut zs, "ns[1]", |zs| zs.create_zone(s));
    assert!(matches!(e, ZoneError::DuplicateNameServer { index: 1 }));
    let mut s = spec("example.org.");
    s.soa.ttl = u32::MAX;
    rejects(&mut zs, "soa_ttl", |zs| zs.create_zone(s));
    let mut s = spec("example.org.");
    s.ns_ttl = u32::MAX;
    rejects(&mut zs, "ns_ttl", |zs| zs.create_zone(s));
    assert!(zs.zone(&n("example.org.")).is_none());
}

#[test]
fn batch_is_all_or_nothing() {
    let mut zs = zones();
    let e = rejects(&mut zs, "changes[1].ttl", |zs| {
        zs.apply_batch(
            &apex(),
            vec![
                Change::Set {
                    name: n("new.example.com."),
                    rtype: RecordType::A,
                    ttl: 1,
                    records: vec![a("192.0.2.1")],
                },
                Change::Set {
                    name: n("new2.example.com."),
                    rtype: RecordType::A,
                    ttl: u32::MAX,
                    records: vec![a("192.0.2.1")],
                },
            ],
        )
    });
    assert!(matches!(e, ZoneError::Batch { index: 1, .. }));
    assert!(std::error::Error::source(&e).is_some());
    // Later changes are validated against earlier ones: delete www's A and AAAA, then CNAME it.
    // Then a failing change after a delete must restore the deleted data.
    rejects(&mut zs, "changes[2].type", |zs| {
        zs.apply_batch(
            &apex(),
            vec![
                Change::Delete {
                    name: n("www.example.com."),
                    rtype: RecordType::A,
                },
                Change::Set {
                    name: n("www.example.com."),
                    rtype: RecordType::A,
                    ttl: 5,
                    records: vec![a("192.0.2.99")],
                },
                Change::Delete {
                    name: n("www.example.com."),
                    rtype: RecordType::MX,
                },
            ],
        )
    });
    rejects(&mut zs, "changes", |zs| zs.apply_batch(&apex(), vec![]));

    let dirty = zs
        .apply_batch(
            &apex(),
            vec![
                Change::Delete {
                    name: n("www.example.com."),
                    rtype: RecordType::A,
                },
                Change::Delete {
                    name: n("www.example.com."),
                    rtype: RecordType::AAAA,
                },
                Change::Set {
                    name: n("www.example.com."),
                    rtype: RecordType::CNAME,
                    ttl: 5,
                    records: vec![cname("ns1.example.com.")],
                },
            ],
        )
        .expect("batch");
    assert!(dirty.names.contains(&n("www.example.com.")));
    assert!(dirty.names.contains(&n("alias.example.com.")));
    let res = zs.resolve(&n("alias.example.com."), RecordType::A);
    assert_eq!(res.answers.len(), 3);
}

// ---- ChangeSet ----

#[test]
fn dirty_lists_owner_ancestors_and_cname_owners() {
    let mut zs = zones();
    let d = set(
        &mut zs,
        "www.example.com.",
        RecordType::A,
        vec![a("192.0.2.3")],
    );
    assert_eq!(
        d.names,
        names(&["www.example.com.", "example.com.", "alias.example.com."])
    );
    assert_eq!(d.zones_soa, names(&["example.com."]));
    assert!(d.zones_full.is_empty());

    // Chain x -> y -> z: a change at z dirties y and x.
    set(
        &mut zs,
        "x.example.com.",
        RecordType::CNAME,
        vec![cname("y.example.com.")],
    );
    set(
        &mut zs,
        "y.example.com.",
        RecordType::CNAME,
        vec![cname("Z.example.com.")],
    );
    let d = set(
        &mut zs,
        "z.example.com.",
        RecordType::A,
        vec![a("192.0.2.4")],
    );
    assert_eq!(
        d.names,
        names(&[
            "z.example.com.",
            "example.com.",
            "y.example.com.",
            "x.example.com."
        ])
    );

    // A new deep name dirties its new ENTs, and CNAMEs pointing at them.
    set(
        &mut zs,
        "toent.example.com.",
        RecordType::CNAME,
        vec![cname("q.example.com.")],
    );
    let d = set(
        &mut zs,
        "p.q.example.com.",
        RecordType::A,
        vec![a("192.0.2.5")],
    );
    assert_eq!(
        d.names,
        names(&[
            "p.q.example.com.",
            "q.example.com.",
            "example.com.",
            "toent.example.com."
        ])
    );

    // Deleting a CNAME dirties its owner (and those pointing at it), not its old target.
    let d = zs
        .delete_rrset(&apex(), &n("y.example.com."), RecordType::CNAME)
        .expect("delete");
    assert_eq!(
        d.names,
        names(&["y.example.com.", "example.com.", "x.example.com."])
    );
}

#[test]
fn dirty_full_for_cuts_and_wildcards() {
    let mut zs = zones();
    let d = set(
        &mut zs,
        "sub.example.com.",
        RecordType::NS,
        vec![ns("ns.example.net.")],
    );
    assert_eq!(d.zones_full, names(&["example.com."]));
    // Glue below the cut: not a cut change.
    let d = set(
        &mut zs,
        "ns.sub.example.com.",
        RecordType::A,
        vec![a("192.0.2.1")],
    );
    assert!(d.zones_full.is_empty());
    let d = zs
        .delete_rrset(&apex(), &n("sub.example.com."), RecordType::NS)
        .expect("delete");
    assert_eq!(d.zones_full, names(&["example.com."]));
    let d = set(&mut zs, "*.example.com.", RecordType::TXT, vec![txt("w")]);
    assert_eq!(d.zones_full, names(&["example.com."]));
    let d = set(
        &mut zs,
        "a.*.x.example.com.",
        RecordType::TXT,
        vec![txt("w")],
    );
    assert_eq!(d.zones_full, names(&["example.com."]));
    // Apex NS: not a delegation.
    let d = set(
        &mut zs,
        "example.com.",
        RecordType::NS,
        vec![ns("ns.example.net.")],
    );
    assert!(d.zones_full.is_empty());
}

#[test]
fn dirty_covers_wildcard_targets_whose_encloser_changes() {
    let mut zs = zones();
    set(
        &mut zs,
        "*.example.com.",
        RecordType::A,
        vec![a("192.0.2.9")],
    );
    set(
        &mut zs,
        "foo.example.com.",
        RecordType::CNAME,
        vec![cname("bar.baz.example.com.")],
    );
    let before = zs.resolve(&n("foo.example.com."), RecordType::A);
    assert!(before.wildcard);
    assert_eq!(before.answers.len(), 2);
    // baz becomes an ENT: bar.baz's closest encloser is now baz, which has no wildcard.
    let d = set(
        &mut zs,
        "q.baz.example.com.",
        RecordType::A,
        vec![a("192.0.2.1")],
    );
    assert!(d.names.contains(&n("foo.example.com.")), "{:?}", d.names);
    let after = zs.resolve(&n("foo.example.com."), RecordType::A);
    assert_eq!(after.kind, ResolutionKind::Nxdomain);
    // And back.
    let d = zs
        .delete_rrset(&apex(), &n("q.baz.example.com."), RecordType::A)
        .expect("delete");
    assert!(d.names.contains(&n("foo.example.com.")));
}

#[test]
fn dirty_for_zone_create_and_delete() {
    let mut zs = zones();
    let d = zs.create_zone(spec("c.example.com.")).expect("create");
    assert_eq!(d.zones_full, names(&["c.example.com."]));
    assert_eq!(d.zones_soa, names(&["c.example.com."]));
    // The parent's names now answered by the child.
    assert_eq!(
        d.names,
        names(&["c.example.com.", "b.c.example.com.", "a.b.c.example.com."])
    );
    assert_eq!(
        zs.resolve(&n("a.b.c.example.com."), RecordType::TXT).kind,
        ResolutionKind::Nxdomain
    );
    let d = zs.delete_zone(&n("C.example.com.")).expect("delete");
    assert_eq!(d.zones_full, names(&["c.example.com."]));
    assert!(d.names.contains(&n("a.b.c.example.com.")));
    assert_eq!(
        zs.resolve(&n("a.b.c.example.com."), RecordType::TXT).kind,
        ResolutionKind::Answer
    );
    let d = zs.delete_zone(&apex()).expect("delete");
    assert!(d.names.contains(&n("www.example.com.")));
    assert!(zs.is_empty());
    assert_eq!(
        zs.resolve(&n("www.example.com."), RecordType::A).kind,
        ResolutionKind::Refused
    );
}

#[test]
fn mixed_types_resolve() {
    let mut zs = zones();
    set(
        &mut zs,
        "example.com.",
        RecordType::MX,
        vec![RData::MX(MX::new(10, n("mail.example.com.")))],
    );
    let res = zs.resolve(&apex(), RecordType::MX);
    assert_eq!(res.answers.len(), 1);
    assert!(res.additional.is_empty());
}

#[test]
fn canonical_order_keeps_descendants_together() {
    // `has_descendants`, `closest_key` and the range scans rely on this.
    let mut v: Vec<CanonName> = [
        "example.com.",
        "b.example.com.",
        "a.b.example.com.",
        "z.a.b.example.com.",
        "c.example.com.",
        "*.b.example.com.",
        "b0.example.com.",
        "ba.example.com.",
    ]
    .into_iter()
    .map(|s| CanonName::new(&n(s)))
    .collect();
    v.sort();
    let b = CanonName::new(&n("b.example.com."));
    let pos: Vec<_> = v
        .iter()
        .enumerate()
        .filter(|(_, x)| x.is_at_or_below(&b))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(pos.len(), 4);
    assert!(pos.windows(2).all(|w| w[1] == w[0] + 1), "{v:?}");
    assert_eq!(v[pos[0]], b);
}

/// Names whose order is easy to get wrong: shared prefixes, `*`, `-`, `_`, digits, zero and high
/// bytes, upper case, the root, different label counts.
fn tricky_names() -> Vec<Name> {
    let mut v: Vec<Name> = [
        ".",
        "com.",
        "example.com.",
        "Example.COM",
        "a.example.com.",
        "A.example.com.",
        "a.a.example.com.",
        "aa.example.com.",
        "a-.example.com.",
        "a0.example.com.",
        "a_b.example.com.",
        "*.example.com.",
        "*.a.example.com.",
        "z.*.example.com.",
        "example.net.",
        "example.co.",
        "x.example.co.",
        "example.comm.",
        "n1.example.com.",
        "n10.example.com.",
        "n2.example.com.",
    ]
    .into_iter()
    .map(|s| Name::from_ascii(s).expect("test name"))
    .collect();
    for label in [
        b"\x00".as_slice(),
        b"\x01a",
        b"a\x00b",
        b"\x80x",
        b"\xc0",
        b"\xff",
        b"Z\xff",
    ] {
        v.push(Name::from_labels([label, b"example", b"com"]).expect("raw labels"));
    }
    v
}

#[test]
fn canon_name_order_is_hickorys_canonical_order() {
    let names = tricky_names();
    for x in &names {
        let cx = CanonName::new(x);
        assert_eq!(cx.name(), normalize(x));
        assert!(cx.name().is_fqdn());
        for y in &names {
            let cy = CanonName::new(y);
            let want = normalize(x).cmp(&normalize(y));
            assert_eq!(cx.cmp(&cy), want, "{x} vs {y}");
            assert_eq!(cx == cy, want.is_eq(), "{x} vs {y}");
            let hash = |c: &CanonName| {
                let mut h = std::collections::hash_map::DefaultHasher::new();
                c.hash(&mut h);
                h.finish()
            };
            if cx == cy {
                assert_eq!(hash(&cx), hash(&cy), "{x} vs {y}");
            }
        }
    }
}

#[test]
fn normalize_lowercases_and_makes_absolute() {
    for (given, want) in [
        ("WWW.Example.COM", "www.example.com."),
        ("www.example.com", "www.example.com."),
        ("www.example.com.", "www.example.com."),
        ("wWw.example.com.", "www.example.com."),
        (".", "."),
    ] {
        let got = normalize(&n(given));
        assert!(got.is_fqdn(), "{given}");
        assert!(got.eq_case(&n(want)), "{given}: {got}");
    }
}

#[test]
fn canon_name_parts() {
    let c = |s: &str| CanonName::new(&n(s));
    let name = c("a.b.example.com.");
    assert_eq!(name.label_count(), 4);
    assert_eq!(name.parent(), c("b.example.com."));
    assert_eq!(name.trim_to(2), c("example.com."));
    assert_eq!(name.trim_to(0), c("."));
    assert_eq!(name.trim_to(9), name);
    assert!(name.trim_to(1).name().eq_case(&n("com.")));
    assert_eq!(c(".").parent(), c("."));
    assert_eq!(name.common_labels(&c("x.b.example.com.")), 3);
    assert_eq!(name.common_labels(&c("example.net.")), 0);
    assert!(name.is_at_or_below(&c("example.com.")));
    assert!(name.is_at_or_below(&name));
    assert!(name.is_at_or_below(&c(".")));
    assert!(!c("example.com.").is_at_or_below(&name));
    assert!(!c("b.example.com.").is_at_or_below(&c("ab.example.com.")));
}

#[test]
fn canon_name_parts_agree_with_the_names_labels() {
    // The key's own reading of its labels (escaped bytes and all) against hickory's labels.
    let mut names = tricky_names();
    names.push(Name::from_labels([b"*".as_slice(), b"\x00", b"\x01*"]).expect("raw labels"));
    names.push(Name::from_labels([b"\x01".as_slice(), b"*", b"\x00\x01"]).expect("raw labels"));
    for x in &names {
        let cx = CanonName::new(x);
        let nx = normalize(x);
        let labels: Vec<&[u8]> = nx.iter().collect();
        assert_eq!(cx.label_count(), labels.len(), "{x}");
        assert_eq!(
            cx.wire_len(),
            labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1,
            "{x}"
        );
        assert_eq!(
            cx.is_wildcard(),
            labels.first() == Some(&b"*".as_slice()),
            "{x}"
        );
        assert_eq!(
            cx.has_star_label(),
            labels.contains(&b"*".as_slice()),
            "{x}"
        );
        for k in 0..=labels.len() + 1 {
            let want = Name::from_labels(labels[labels.len().saturating_sub(k)..].to_vec())
                .expect("a suffix of a valid name");
            assert!(cx.trim_to(k).name().eq_case(&want), "{x} trimmed to {k}");
        }
        for y in &names {
            let cy = CanonName::new(y);
            let ny = normalize(y);
            let common = nx
                .iter()
                .rev()
                .zip(ny.iter().rev())
                .take_while(|(a, b)| a == b);
            assert_eq!(cx.common_labels(&cy), common.count(), "{x} and {y}");
            assert_eq!(
                cx.is_at_or_below(&cy),
                ny.zone_of_case(&nx),
                "{x} under {y}"
            );
        }
    }
}

#[test]
fn node_keeps_one_set_per_type_in_type_order() {
    let a = |ttl, last| RrSet {
        ttl,
        records: vec![
            RData::A(A::new(192, 0, 2, last)),
            RData::A(A::new(192, 0, 2, 7)),
        ],
    };
    let txt = RrSet {
        ttl: 1,
        records: vec![RData::TXT(TXT::new(vec!["one".into(), String::new()]))],
    };
    let mx = RrSet {
        ttl: 3,
        records: vec![RData::MX(MX::new(10, n("mail.example.com.")))],
    };
    let wire = |t, s: &RrSet| model::WireSet::encode(t, s).expect("encodes");
    let mut node = Node::default();
    assert!(node.is_empty());
    node = node.with(RecordType::TXT, Some(&wire(RecordType::TXT, &txt)));
    node = node.with(RecordType::A, Some(&wire(RecordType::A, &a(2, 1))));
    node = node.with(RecordType::MX, Some(&wire(RecordType::MX, &mx)));
    node = node.with(RecordType::A, Some(&wire(RecordType::A, &a(4, 9))));
    assert_eq!(
        node.types().collect::<Vec<_>>(),
        vec![RecordType::A, RecordType::MX, RecordType::TXT]
    );
    assert_eq!(node.get(RecordType::A).map(|s| s.to_rrset()), Some(a(4, 9)));
    assert_eq!(node.get(RecordType::A).map(|s| s.len()), Some(2));
    assert_eq!(node.get(RecordType::MX).map(|s| s.to_rrset()), Some(mx));
    assert_eq!(node.get(RecordType::TXT).map(|s| s.to_rrset()), Some(txt));
    assert!(node.contains(RecordType::MX) && !node.contains(RecordType::AAAA));
    node = node.with(RecordType::MX, None);
    assert_eq!(node, node.with(RecordType::MX, None));
    assert_eq!(node.len(), 2);
    assert_eq!(
        node.iter().map(|s| (s.rtype, s.ttl)).collect::<Vec<_>>(),
        vec![(RecordType::A, 4), (RecordType::TXT, 1)]
    );
    node = node.with(RecordType::A, None).with(RecordType::TXT, None);
    assert!(node.is_empty());
}

#[test]
fn find_zone_takes_the_closest_apex_among_many() {
    let mut zs = ZoneSet::new();
    for apex in [
        "com.",
        "example.com.",
        "a.example.com.",
        "c.example.com.",
        "b.a.example.com.",
        "d.b.a.example.com.",
        "zz.example.com.",
        "example.net.",
    ] {
        zs.create_zone(spec(apex)).expect("zone");
    }
    for (name, want) in [
        ("example.com.", Some("example.com.")),
        ("x.example.com.", Some("example.com.")),
        // The last apex before it (a.example.com.'s subtree) is no ancestor.
        ("b.example.com.", Some("example.com.")),
        ("x.b.example.com.", Some("example.com.")),
        ("c.a.example.com.", Some("a.example.com.")),
        ("x.c.a.example.com.", Some("a.example.com.")),
        ("x.d.b.a.example.com.", Some("d.b.a.example.com.")),
        ("e.b.a.example.com.", Some("b.a.example.com.")),
        ("C.Example.Com", Some("c.example.com.")),
        ("zzz.example.com.", Some("example.com.")),
        ("y.zz.example.com.", Some("zz.example.com.")),
        ("other.com.", Some("com.")),
        ("com.", Some("com.")),
        ("net.", None),
        ("x.example.org.", None),
        ("a.", None),
        (".", None),
    ] {
        assert_eq!(
            zs.find_zone(&n(name)).map(|z| z.apex().to_string()),
            want.map(str::to_owned),
            "{name}"
        );
    }
    // The root zone would be the zone of every name: it is refused.
    assert_eq!(zs.create_zone(spec(".")).unwrap_err(), ZoneError::RootZone);
    assert_eq!(zs.find_zone(&n("x.example.org.")).map(Zone::apex), None);
    assert_eq!(zs.find_zone(&n(".")).map(Zone::apex), None);
}

#[test]
fn nested_cuts_refer_at_the_topmost() {
    let mut zs = zones();
    set(
        &mut zs,
        "sub.example.com.",
        RecordType::NS,
        vec![ns("ns.other.net.")],
    );
    set(
        &mut zs,
        "deep.x.sub.example.com.",
        RecordType::NS,
        vec![ns("ns.other.net.")],
    );
    set(
        &mut zs,
        "suba.example.com.",
        RecordType::A,
        vec![a("192.0.2.9")],
    );
    for q in [
        "sub.example.com.",
        "x.sub.example.com.",
        "deep.x.sub.example.com.",
        "y.deep.x.sub.example.com.",
    ] {
        let res = zs.resolve(&n(q), RecordType::A);
        assert_eq!(res.kind, ResolutionKind::Referral, "{q}");
        assert_eq!(owners(&res.authority), vec!["sub.example.com."], "{q}");
    }
    let res = zs.resolve(&n("suba.example.com."), RecordType::A);
    assert_eq!(res.kind, ResolutionKind::Answer);
    let z = zs.zone(&apex()).expect("zone");
    assert_eq!(
        z.cuts().map(|c| c.to_string()).collect::<Vec<_>>(),
        vec!["sub.example.com.", "deep.x.sub.example.com."]
    );
    let existing: BTreeSet<Name> = z.existing_names().collect();
    assert!(existing.contains(&n("sub.example.com.")));
    assert!(existing.contains(&n("suba.example.com.")));
    assert!(!existing.contains(&n("x.sub.example.com.")));
    assert!(!existing.contains(&n("deep.x.sub.example.com.")));
    assert!(!z.name_exists(&n("deep.x.sub.example.com.")));
}

#[test]
fn load_zone_keeps_the_serial_and_validates() {
    let mut zs = ZoneSet::new();
    let mut s = spec("example.com.");
    s.ns.clear();
    s.serial = 2024;
    let rrsets = vec![
        (
            apex(),
            RecordType::NS,
            RrSet {
                ttl: 600,
                records: vec![ns("ns1.example.com.")],
            },
        ),
        (
            n("WWW.example.com."),
            RecordType::A,
            RrSet {
                ttl: 60,
                records: vec![a("192.0.2.1")],
            },
        ),
    ];
    let d = zs.load_zone(s.clone(), rrsets.clone()).expect("load");
    assert_eq!(d.zones_full, names(&["example.com."]));
    assert!(d.names.contains(&n("www.example.com.")));
    let z = zs.zone(&apex()).expect("zone");
    assert_eq!(z.serial(), 2024);
    assert_eq!(z.ns().map(|s| s.ttl), Some(600));
    assert_eq!(
        zs.resolve(&n("www.example.com."), RecordType::A)
            .answers
            .len(),
        1
    );

    // Exists already.
    let e = zs.load_zone(s.clone(), rrsets.clone()).expect_err("exists");
    assert_eq!(zone_error_field(&e), "zone");
    // A bad RRset: nothing added.
    let mut other = s.clone();
    other.apex = n("example.org.");
    let mut bad = rrsets.clone();
    bad[0].0 = n("example.org.");
    bad[1].0 = n("www.example.org.");
    bad.push((
        n("x.example.org."),
        RecordType::A,
        RrSet {
            ttl: u32::MAX,
            records: vec![a("192.0.2.1")],
        },
    ));
    let e = zs.load_zone(other.clone(), bad).expect_err("bad ttl");
    assert_eq!(zone_error_field(&e), "changes[2].ttl");
    assert!(zs.zone(&n("example.org.")).is_none());
    // No NS anywhere.
    let e = zs.load_zone(other, vec![]).expect_err("no ns");
    assert_eq!(zone_error_field(&e), "ns");
    assert_eq!(zs.len(), 1);
}

#[test]
fn load_zone_builds_what_set_rrset_builds() {
    // A zone with every index in use: CNAMEs (one into a wildcard), a cut with glue, wildcards.
    let mut built = zones();
    for (name, t, rd) in [
        (
            "sub.example.com.",
            RecordType::NS,
            vec![ns("ns.sub.example.com.")],
        ),
        ("ns.sub.example.com.", RecordType::A, vec![a("192.0.2.77")]),
        ("*.w.example.com.", RecordType::A, vec![a("192.0.2.7")]),
        (
            "tow.example.com.",
            RecordType::CNAME,
            vec![cname("x.w.example.com.")],
        ),
        (
            "Chain.example.com.",
            RecordType::CNAME,
            vec![cname("ALIAS.example.com")],
        ),
    ] {
        set(&mut built, name, t, rd);
    }
    let z = built.zone(&apex()).expect("zone");
    let rrsets: Vec<_> = z
        .records()
        .map(|(name, t, ttl, records)| {
            let records = records.to_vec();
            (name, t, RrSet { ttl, records })
        })
        .collect();
    let mut s = spec("example.com.");
    s.ns.clear();
    s.serial = z.serial();
    let mut loaded = ZoneSet::new();
    loaded.load_zone(s, rrsets).expect("load");
    assert_eq!(snapshot(&loaded), snapshot(&built));
    let l = loaded.zone(&apex()).expect("zone");
    assert_eq!(l.cuts().collect::<Vec<_>>(), z.cuts().collect::<Vec<_>>());
    assert_eq!(l.has_wildcard_or_cut(), z.has_wildcard_or_cut());
    assert_eq!(
        l.existing_names().collect::<Vec<_>>(),
        z.existing_names().collect::<Vec<_>>()
    );
    for q in [
        "www.example.com.",
        "alias.example.com.",
        "chain.example.com.",
        "tow.example.com.",
        "y.w.example.com.",
        "x.sub.example.com.",
        "b.c.example.com.",
        "nope.example.com.",
    ] {
        for t in [RecordType::A, RecordType::AAAA, RecordType::CNAME] {
            assert_eq!(loaded.resolve(&n(q), t), built.resolve(&n(q), t), "{q} {t}");
        }
    }
    // The CNAME index: changing www dirties the CNAMEs leading to it in both.
    let d1 = set(
        &mut built,
        "www.example.com.",
        RecordType::A,
        vec![a("192.0.2.9")],
    );
    let d2 = set(
        &mut loaded,
        "www.example.com.",
        RecordType::A,
        vec![a("192.0.2.9")],
    );
    assert_eq!(d1, d2);
    assert!(d2.names.contains(&n("chain.example.com.")));
}

#[test]
fn load_zone_checks_each_rrset_against_the_ones_before() {
    let set_of = |name: &str, t, rd: RData| {
        (
            n(name),
            t,
            RrSet {
                ttl: 60,
                records: vec![rd],
            },
        )
    };
    let base = || {
        vec![
            set_of("example.com.", RecordType::NS, ns("ns1.example.com.")),
            set_of("a.example.com.", RecordType::A, a("192.0.2.1")),
            set_of("c.example.com.", RecordType::CNAME, cname("a.example.com.")),
        ]
    };
    let mut s = spec("example.com.");
    s.ns.clear();
    for (extra, want) in [
        (
            set_of("A.example.com.", RecordType::CNAME, cname("x.example.com.")),
            ZoneError::CnameBesideData {
                name: "a.example.com.".into(),
                existing: RecordType::A,
            },
        ),
        (
            set_of("c.example.com.", RecordType::TXT, txt("x")),
            ZoneError::DataBesideCname {
                name: "c.example.com.".into(),
            },
        ),
        (
            set_of("example.com.", RecordType::CNAME, cname("x.example.com.")),
            ZoneError::CnameAtApex,
        ),
        (
            set_of("*.example.com.", RecordType::NS, ns("ns1.example.com.")),
            ZoneError::WildcardNs,
        ),
        (
            set_of("a.example.org.", RecordType::A, a("192.0.2.1")),
            ZoneError::NotInZone {
                name: "a.example.org.".into(),
                apex: "example.com.".into(),
            },
        ),
    ] {
        let mut rrsets = base();
        rrsets.push(extra);
        let mut zs = ZoneSet::new();
        let e = zs.load_zone(s.clone(), rrsets).expect_err("invalid");
        assert_eq!(
            e,
            ZoneError::Batch {
                index: 3,
                source: Box::new(want)
            }
        );
        assert!(zs.is_empty());
    }
    // Of several bad RRsets, the first in the input is reported, whatever their owners' order.
    for (extra, want_index) in [
        (
            vec![
                set_of("z.example.com.", RecordType::A, a("192.0.2.1")),
                set_of("a.example.org.", RecordType::A, a("192.0.2.1")),
                set_of("a.example.com.", RecordType::CNAME, cname("z.example.com.")),
            ],
            4,
        ),
        (
            vec![
                set_of("z.example.com.", RecordType::TXT, txt("x")),
                set_of("z.example.com.", RecordType::CNAME, cname("a.example.com.")),
                set_of("a.example.com.", RecordType::CNAME, cname("z.example.com.")),
                set_of("a.example.org.", RecordType::A, a("192.0.2.1")),
            ],
            4,
        ),
    ] {
        let mut rrsets = base();
        rrsets.extend(extra);
        let e = ZoneSet::new()
            .load_zone(s.clone(), rrsets)
            .expect_err("invalid");
        assert!(
            matches!(e, ZoneError::Batch { index, .. } if index == want_index),
            "{e:?}"
        );
    }
    // Replacing an RRset loaded earlier is allowed: the later one wins.
    let mut rrsets = base();
    rrsets.push(set_of(
        "c.example.com.",
        RecordType::CNAME,
        cname("b.example.com."),
    ));
    let mut zs = ZoneSet::new();
    zs.load_zone(s, rrsets).expect("load");
    let res = zs.resolve(&n("c.example.com."), RecordType::CNAME);
    assert_eq!(res.answers[0].data(), &cname("b.example.com."));
}

#[test]
fn a_copy_is_a_version_that_later_changes_leave_alone() {
    let mut zs = zones();
    let before = snapshot(&zs);
    let copy = zs.clone();
    zs.apply_batch(
        &apex(),
        vec![
            Change::Delete {
                name: n("www.example.com."),
                rtype: RecordType::A,
            },
            Change::Set {
                name: n("new.example.com."),
                rtype: RecordType::A,
                ttl: 1,
                records: vec![a("192.0.2.7")],
            },
            Change::Delete {
                name: n("alias.example.com."),
                rtype: RecordType::CNAME,
            },
        ],
    )
    .expect("batch");
    zs.delete_zone(&apex()).expect("delete");
    assert!(zs.is_empty());
    assert_eq!(snapshot(&copy), before);
    // The copy's indexes are whole too: a change at www dirties alias.
    let mut copy = copy;
    let d = set(
        &mut copy,
        "www.example.com.",
        RecordType::A,
        vec![a("192.0.2.8")],
    );
    assert!(d.names.contains(&n("alias.example.com.")));
}

#[test]
fn import_serials_move_forward() {
    assert_eq!(import_serial(None, 5), 5);
    assert_eq!(import_serial(Some(5), 9), 9);
    assert_eq!(import_serial(Some(5), 5), 6);
    assert_eq!(import_serial(Some(5), 3), 6);
    assert_eq!(import_serial(Some(u32::MAX), 2), 2);
}

#[test]
fn a_wildcard_apex_is_refused_at_creation_as_at_load() {
    // Creating it and loading it must agree, or a zone the API took would stop the store from
    // loading at the next start.
    let mut zs = zones();
    rejects(&mut zs, "zone", |zs| zs.create_zone(spec("*.example.org.")));
    let e = ZoneSet::new()
        .load_zone(spec("*.example.org."), vec![])
        .expect_err("load refuses it too");
    assert_eq!(e, ZoneError::WildcardApex);
}

#[test]
fn fill_sorted_keeps_every_entry_in_order() {
    // Odd and even counts, a leaf's worth and several levels of branches.
    for n in [0usize, 1, 2, 15, 16, 17, 1000, 40_001] {
        let entries: Vec<(usize, usize)> = (0..n).map(|i| (i, i * 3)).collect();
        let map = super::change::fill_sorted(entries.clone());
        assert_eq!(map.len(), n);
        assert_eq!(map.into_iter().collect::<Vec<_>>(), entries, "{n} entries");
    }
}

/// RRsets for [`ZoneSet::add_loaded_zone`].
fn loaded(rrsets: Vec<(Name, RecordType, StoredSet)>) -> Vec<(LoadedOwner, RecordType, StoredSet)> {
    rrsets
        .into_iter()
        .map(|(n, t, s)| (n.into(), t, s))
        .collect()
}

#[test]
fn a_loaded_zone_keeps_the_stored_bytes_and_finds_the_first_bad_rrset() {
    // As the store writes them: `len (u16) | RDATA` for each record.
    let stored = |ttl, rdatas: &[&[u8]]| StoredSet {
        ttl,
        records: rdatas
            .iter()
            .flat_map(|rd| {
                let len = u16::try_from(rd.len()).expect("short");
                len.to_be_bytes().into_iter().chain(rd.iter().copied())
            })
            .collect(),
    };
    // More RRsets than one thread checks alone, so that the load is split between threads
    // where there are several; the errors still name the first bad one in the given order.
    let count = 10_000u32;
    let good = |i: u32| {
        let name = n(&format!("h{i}.example.com."));
        (name, RecordType::A, stored(60, &[&i.to_be_bytes()]))
    };
    let rrsets: Vec<_> = (0..count).map(good).collect();
    let mut zs = ZoneSet::new();
    zs.add_loaded_zone(spec("example.com."), loaded(rrsets.clone()))
        .expect("load");
    let z = zs.zone(&apex()).expect("zone");
    assert_eq!(z.name_count(), count as usize + 1);
    for i in [0, 4_999, 9_999] {
        let set = z.rrset(&n(&format!("H{i}.example.com.")), RecordType::A);
        let want = RData::A(A::from(std::net::Ipv4Addr::from(i)));
        assert_eq!(
            set,
            Some(RrSet {
                ttl: 60,
                records: vec![want]
            }),
            "h{i}"
        );
    }

    for (bad_at, bad, want) in [
        // Three bytes of an A record: hickory can't read it.
        (7_500, stored(60, &[&[192, 0, 2]]), "record 0:"),
        // The second record's length runs past the end.
        (
            9_000,
            StoredSet {
                ttl: 60,
                records: vec![0, 4, 192, 0, 2, 1, 0, 9, 1],
            },
            "record 1: cut short",
        ),
    ] {
        let mut rrsets = rrsets.clone();
        rrsets[bad_at].2 = bad;
        // A later bad RRset doesn't hide the first.
        rrsets[9_999].2 = stored(60, &[]);
        let e = ZoneSet::new()
            .add_loaded_zone(spec("example.com."), loaded(rrsets))
            .expect_err("bad rrset");
        match e {
            ZoneError::Batch { index, source } => {
                assert_eq!(index, bad_at);
                assert!(source.to_string().starts_with(want), "{source}");
            }
            e => panic!("{e}"),
        }
    }
}

/// One name asked for several types at once gives what asking for each type alone gives: the
/// compiler relies on it, with the zone and node looked up once.
#[test]
fn resolving_several_types_at_once_answers_as_one_at_a_time() {
    let mut zs = zones();
    set(
        &mut zs,
        "*.wild.example.com.",
        RecordType::A,
        vec![a("192.0.2.9")],
    );
    set(
        &mut zs,
        "loop.example.com.",
        RecordType::CNAME,
        vec![cname("loop.example.com.")],
    );
    set(
        &mut zs,
        "out.example.com.",
        RecordType::CNAME,
        vec![cname("elsewhere.example.net.")],
    );
    set(
        &mut zs,
        "sub.example.com.",
        RecordType::NS,
        vec![ns("ns.sub.example.com.")],
    );
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::CNAME,
        RecordType::TXT,
        RecordType::SOA,
        RecordType::NS,
        RecordType::ANY,
        RecordType::DS,
    ];
    for q in [
        "example.com.",
        "sub.example.com.",
        "host.sub.example.com.",
        "WWW.example.com.",
        "alias.example.com.",
        "b.c.example.com.",
        "a.b.c.example.com.",
        "missing.example.com.",
        "x.wild.example.com.",
        "loop.example.com.",
        "out.example.com.",
        "www.example.org.",
    ] {
        let q = n(q);
        let together = zs.resolve_types(&q, types);
        for (t, res) in types.iter().zip(together) {
            assert_eq!(res, zs.resolve(&q, *t), "{q} {t}");
        }
    }
}
