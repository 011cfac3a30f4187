//! Property tests: whatever the API accepts (names with any label bytes, RRsets of every
//! supported type, SOA settings with any mailbox) comes back from the store exactly as it went
//! in: through the encoding alone (many cases), and through a real store on disk that is
//! written, closed, reopened and loaded (fewer cases: each one commits with fsync).
//!
//! "Exactly" means byte for byte: hickory's `Name` and `RData` compare names without regard to
//! case, so names are compared label by label and records by their wire form.

use hickory_proto::{
    rr::{
        rdata::{CNAME, MX, NS, PTR, SRV, TXT},
        Name, RData, RecordType,
    },
    serialize::binary::BinEncodable,
};
use proptest::{collection::vec, prelude::*, test_runner::Config};

use dns_user::{
    store::{self, Store},
    zone::{normalize, ChangeSet, SoaParams, ZoneSet, ZoneSpec, SUPPORTED_TYPES},
    zonefile,
};

/// A label: 1 to 63 arbitrary bytes, biased towards the awkward ones (`.`, `\`, `"`, NUL, 0xff,
/// upper case) that presentation form has to escape.
fn label() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => any::<u8>(),
        1 => prop::sample::select(vec![b'.', b'\\', b'"', 0, 0xff, b'A', b'Z', b'*', b'@', b' ']),
    ];
    prop_oneof![
        4 => vec(byte.clone(), 1..=12),
        1 => vec(byte, 63..=63),
    ]
}

/// An absolute name of any labels, up to the 255-byte limit (a maximal one at times).
fn name() -> impl Strategy<Value = Name> {
    prop_oneof![
        4 => vec(label(), 0..=5),
        1 => vec(label(), 3..=8),
        // Exactly 255 bytes in wire form: 3 × (1 + 63) + (1 + 61) + 1.
        1 => (vec(vec(any::<u8>(), 63..=63), 3..=3), vec(any::<u8>(), 61..=61))
            .prop_map(|(mut labels, last)| {
                labels.push(last);
                labels
            }),
    ]
    .prop_map(|mut labels| {
        // Keep the wire form within 255 bytes: drop labels from the front.
        while labels.iter().map(|l| l.len() + 1).sum::<usize>() + 1 > 255 {
            labels.remove(0);
        }
        Name::from_labels(labels).expect("labels of 1..=63 bytes, at most 255 in all")
    })
}

/// The name's labels, as bytes: `Name`'s own `==` ignores case.
fn labels(n: &Name) -> Vec<Vec<u8>> {
    n.iter().map(<[u8]>::to_vec).collect()
}

/// One record of `rtype`, as the API could be given it.
fn rdata(rtype: RecordType) -> BoxedStrategy<RData> {
    match rtype {
        RecordType::A => any::<[u8; 4]>()
            .prop_map(|b| RData::A(std::net::Ipv4Addr::from(b).into()))
            .boxed(),
        RecordType::AAAA => any::<[u8; 16]>()
            .prop_map(|b| RData::AAAA(std::net::Ipv6Addr::from(b).into()))
            .boxed(),
        RecordType::CNAME => name().prop_map(|n| RData::CNAME(CNAME(n))).boxed(),
        RecordType::NS => name().prop_map(|n| RData::NS(NS(n))).boxed(),
        RecordType::PTR => name().prop_map(|n| RData::PTR(PTR(n))).boxed(),
        RecordType::MX => (any::<u16>(), name())
            .prop_map(|(p, n)| RData::MX(MX::new(p, n)))
            .boxed(),
        RecordType::SRV => (any::<u16>(), any::<u16>(), any::<u16>(), name())
            .prop_map(|(p, w, port, n)| RData::SRV(SRV::new(p, w, port, n)))
            .boxed(),
        RecordType::TXT => vec(vec(any::<u8>(), 0..=255), 1..=4)
            .prop_map(|strings| {
                RData::TXT(TXT::from_bytes(strings.iter().map(Vec::as_slice).collect()))
            })
            .boxed(),
        // CAA as the API takes it: record text, parsed as the API parses it.
        RecordType::CAA => (
            prop::sample::select(vec![0u8, 128]),
            prop::sample::select(vec!["issue", "issuewild", "iodef", "tbs", "Issue"]),
            prop::sample::select(vec![
                "ca.example.net",
                "ca.example.net; account=12345",
                ";",
                "mailto:security@example.net",
                "https://example.net/caa",
                "anything at all",
            ]),
        )
            .prop_filter_map("not accepted by the API", |(flags, tag, value)| {
                zonefile::presentation::parse_record_text(
                    RecordType::CAA,
                    &format!("{flags} {tag} \"{value}\""),
                )
                .ok()
            })
            .boxed(),
        other => unreachable!("{other} is not a supported type"),
    }
}

/// A supported type and an RRset of it (1 to 6 records, duplicates removed as the API would
/// refuse them).
fn rrset() -> impl Strategy<Value = (RecordType, Vec<RData>)> {
    prop::sample::select(SUPPORTED_TYPES.to_vec()).prop_flat_map(|t| {
        let n = if t == RecordType::CNAME { 1..=1 } else { 1..=6 };
        vec(rdata(t), n).prop_map(move |mut records| {
            let mut seen = Vec::new();
            records.retain(|r| {
                let fresh = !seen.contains(r);
                seen.push(r.clone());
                fresh
            });
            (t, records)
        })
    })
}

fn soa() -> impl Strategy<Value = SoaParams> {
    (name(), name(), vec(0u32..=i32::MAX as u32, 5)).prop_map(|(mname, rname, t)| {
        let mut soa = SoaParams::new(mname, rname);
        (soa.ttl, soa.refresh, soa.retry, soa.expire, soa.minimum) = (t[0], t[1], t[2], t[3], t[4]);
        soa
    })
}

fn wire(records: &[RData]) -> Vec<Vec<u8>> {
    records
        .iter()
        .map(|r| r.to_bytes().expect("encodes"))
        .collect()
}

fn assert_soa_eq(a: &SoaParams, b: &SoaParams) {
    assert_eq!(labels(&a.mname), labels(&b.mname));
    assert_eq!(labels(&a.rname), labels(&b.rname));
    assert_eq!(a, b);
}

proptest! {
    #![proptest_config(Config { cases: 512, failure_persistence: None, ..Config::default() })]

    #[test]
    fn names_round_trip(n in name()) {
        let bytes = store::encode_name(&n);
        prop_assert!(bytes.len() <= 255);
        let back = store::decode_name(&bytes).expect("decodes");
        prop_assert_eq!(labels(&back), labels(&n));
        prop_assert!(back.is_fqdn());
    }

    #[test]
    fn soa_settings_round_trip(soa in soa(), serial in any::<u32>()) {
        let (back, back_serial) =
            store::decode_zone_meta(&store::encode_zone_meta(&soa, serial)).expect("decodes");
        assert_soa_eq(&back, &soa);
        prop_assert_eq!(back_serial, serial);
    }

    #[test]
    fn rrsets_round_trip((rtype, records) in rrset(), ttl in 0u32..=i32::MAX as u32) {
        let bytes = store::encode_rrset(ttl, &records).expect("encodes");
        let back = store::decode_rrset(rtype, &bytes).expect("decodes");
        prop_assert_eq!(back.ttl, ttl);
        prop_assert_eq!(wire(&back.records), wire(&records));
        prop_assert_eq!(back.records, records);
    }
}

proptest! {
    // Each case commits to a real store with fsync and reopens it.
    #![proptest_config(Config { cases: 48, failure_persistence: None, ..Config::default() })]

    #[test]
    fn zones_round_trip_through_a_store_on_disk(
        apex in name().prop_filter("the root zone and wildcard apexes are refused", |n| {
            !n.is_root() && n.iter().next() != Some(&b"*"[..])
        }),
        soa in soa(),
        serial in any::<u32>(),
        sets in vec((vec(label(), 1..=2), rrset()), 1..=4),
    ) {
        let apex = normalize(&apex);
        let ns = Name::from_ascii("ns1.example.net.").unwrap();
        let mut zones = ZoneSet::new();
        let spec = ZoneSpec { apex: apex.clone(), soa, serial, ns: vec![ns], ns_ttl: 3600 };
        zones.load_zone(spec, Vec::new()).expect("zone");
        // Each RRset the zone model takes, at an owner below the apex.
        for (prefix, (rtype, records)) in sets {
            let Ok(owner) = Name::from_labels(prefix).and_then(|p| p.append_domain(&apex)) else {
                continue;
            };
            let _ = zones.set_rrset(&apex, &owner, rtype, 300, records);
        }
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut changes = ChangeSet::default();
            changes.zones_replaced.insert(apex.clone());
            store.persist(&zones, &changes).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let loaded = store.load().unwrap();
        prop_assert_eq!(loaded.quarantined, Vec::new());
        let (want, got) = (zones.zone(&apex).unwrap(), loaded.zones.zone(&apex).expect("zone loads"));
        prop_assert_eq!(labels(got.apex()), labels(want.apex()));
        assert_soa_eq(got.soa(), want.soa());
        prop_assert_eq!(got.serial(), want.serial());
        let all = |z: &dns_user::zone::Zone| -> Vec<_> {
            z.records()
                .map(|(owner, t, ttl, records)| (labels(&owner), t, ttl, wire(&records)))
                .collect()
        };
        prop_assert_eq!(all(got), all(want));
    }
}
