//! Property tests of the codecs: every name, RRset and SOA the API accepts comes back unchanged
//! through the presentation format (data → text → data) and through a zone printed as a master
//! file and parsed again.
//!
//! "Unchanged" is byte for byte: records are compared in wire form and names label by label,
//! because hickory's `Name` equality ignores case and would hide a printer that changes it.

use std::net::{Ipv4Addr, Ipv6Addr};

use hickory_proto::{
    rr::{
        rdata::{CNAME, MX, NS, PTR, SOA, SRV, TXT},
        Name, RData, RecordType,
    },
    serialize::binary::{BinDecoder, BinEncodable, Restrict},
};
use proptest::{collection::vec, prelude::*, sample::select, test_runner::Config};

use super::{
    export, parse,
    presentation::{
        format_name, format_rdata, is_absolute, parse_name, parse_rdata, parse_record_text,
        parse_soa, record_text, tokenize_rdata, MAX_CHARACTER_STRING,
    },
};
use crate::zone::{
    normalize, RrSet, SoaParams, Zone, ZoneSet, ZoneSpec, DEFAULT_NS_TTL, MAX_TTL, SUPPORTED_TYPES,
};

/// RFC 1035 §2.3.4: names are 255 octets or less on the wire.
const MAX_NAME_WIRE: usize = 255;

/// Label bytes, weighted toward the ones the text forms treat specially.
fn byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => any::<u8>(),
        3 => select(b".\\\";() \t\n\r\0\xff\x7f@$*#".to_vec()),
        2 => b'a'..=b'z',
        2 => b'A'..=b'Z',
        1 => b'0'..=b'9',
    ]
}

fn label() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => vec(byte(), 1..=6),
        1 => Just(b"*".to_vec()),
        2 => vec(byte(), 56..=63),
    ]
}

fn wire_len(name: &Name) -> usize {
    name.iter().map(|l| l.len() + 1).sum::<usize>() + 1
}

/// `labels` in front of `suffix`, as many as fit in 255 bytes; with `fill`, more labels (made
/// of the same bytes) until the name is exactly 255 bytes long.
fn name_under(labels: Vec<Vec<u8>>, suffix: &Name, fill: bool) -> Name {
    let mut room = MAX_NAME_WIRE - wire_len(suffix);
    let mut kept = Vec::new();
    for l in labels {
        if l.len() < room {
            room -= l.len() + 1;
            kept.push(l);
        }
    }
    if fill && room >= 2 {
        let pool: Vec<u8> = kept.iter().flatten().copied().collect();
        let pool = if pool.is_empty() { b"x".to_vec() } else { pool };
        let mut at = 0;
        while room >= 2 {
            // 63 bytes at most, and never leave one byte over (too little for a label).
            let len = match room - 1 {
                64 => 62,
                n => n.min(63),
            };
            kept.push((0..len).map(|i| pool[(at + i) % pool.len()]).collect());
            at += len;
            room -= len + 1;
        }
        assert_eq!(room, 0, "filled to exactly 255 bytes");
    }
    let name = Name::from_labels(kept)
        .and_then(|n| n.append_domain(suffix))
        .expect("labels of 1 to 63 bytes, 255 bytes in all");
    assert!(wire_len(&name) <= MAX_NAME_WIRE);
    name
}

/// Any absolute name: a few labels, sometimes filled up to the 255-byte limit.
fn name() -> impl Strategy<Value = Name> {
    (vec(label(), 0..=4), prop::bool::weighted(0.2))
        .prop_map(|(labels, fill)| name_under(labels, &Name::root(), fill))
}

fn ttl() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0), Just(MAX_TTL), 0..=MAX_TTL]
}

/// A `<character-string>`: empty, short, or at or near the 255-byte limit.
fn character_string() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => Just(Vec::new()),
        4 => vec(byte(), 1..=20),
        1 => vec(byte(), 250..=MAX_CHARACTER_STRING),
        1 => vec(byte(), MAX_CHARACTER_STRING),
    ]
}

/// A CAA record from its wire form, as the store reads it back.
fn caa(flags: u8, tag: &[u8], value: &[u8]) -> RData {
    let mut wire = vec![flags, tag.len() as u8];
    wire.extend_from_slice(tag);
    wire.extend_from_slice(value);
    let len = u16::try_from(wire.len()).unwrap();
    RData::read(
        &mut BinDecoder::new(&wire),
        RecordType::CAA,
        Restrict::new(len),
    )
    .unwrap()
}

/// A CAA tag: the registered ones in any case, or other letters and digits (RFC 8659 §4.1:
/// 1 to 15 of them; hickory refuses longer ones, so no API takes them).
fn caa_tag() -> impl Strategy<Value = Vec<u8>> {
    let alnum = prop_oneof![b'a'..=b'z', b'A'..=b'Z', b'0'..=b'9'];
    prop_oneof![
        select(vec!["issue", "issuewild", "iodef", "ISSUE", "IoDeF"]).prop_map(|t| t.into()),
        vec(alnum, 1..=15),
    ]
}

/// One record of `rtype` with any data its type allows.
fn rdata(rtype: RecordType) -> BoxedStrategy<RData> {
    match rtype {
        RecordType::A => any::<[u8; 4]>()
            .prop_map(|a| RData::A(Ipv4Addr::from(a).into()))
            .boxed(),
        // Groups of zeros often, for the `::` forms (IPv4-mapped ones among them).
        RecordType::AAAA => vec(prop_oneof![Just(0), Just(0xffff), any::<u16>()], 8)
            .prop_map(|g| {
                let g: [u16; 8] = g.try_into().unwrap();
                RData::AAAA(Ipv6Addr::from(g).into())
            })
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
        RecordType::TXT => vec(character_string(), 1..=4)
            .prop_map(|s| RData::TXT(TXT::from_bytes(s.iter().map(Vec::as_slice).collect())))
            .boxed(),
        RecordType::CAA => (
            any::<u8>(),
            caa_tag(),
            prop_oneof![vec(byte(), 0..=40), vec(byte(), 250..=300)],
        )
            .prop_map(|(flags, tag, value)| caa(flags, &tag, &value))
            .boxed(),
        other => unreachable!("{other} is not a supported type"),
    }
}

fn any_rdata() -> impl Strategy<Value = RData> {
    select(SUPPORTED_TYPES.to_vec()).prop_flat_map(rdata)
}

/// SOA settings as the zone model keeps them (names lowercased), with any rname.
fn soa_params() -> impl Strategy<Value = SoaParams> {
    (name(), name(), ttl(), ttl(), ttl(), ttl(), ttl()).prop_map(
        |(mname, rname, ttl, refresh, retry, expire, minimum)| SoaParams {
            ttl,
            mname: normalize(&mname),
            rname: normalize(&rname),
            refresh,
            retry,
            expire,
            minimum,
        },
    )
}

/// The RRsets at one owner below the apex: a CNAME alone, or up to three other types.
#[derive(Clone, Debug)]
enum Node {
    Cname(u32, RData),
    Data(Vec<(RecordType, u32, Vec<RData>)>),
}

fn node() -> impl Strategy<Value = Node> {
    let others: Vec<RecordType> = SUPPORTED_TYPES
        .into_iter()
        .filter(|t| *t != RecordType::CNAME)
        .collect();
    let rrset = (select(others), ttl())
        .prop_flat_map(|(t, ttl)| (Just(t), Just(ttl), vec(rdata(t), 1..=3)));
    prop_oneof![
        1 => (ttl(), rdata(RecordType::CNAME)).prop_map(|(ttl, r)| Node::Cname(ttl, r)),
        4 => vec(rrset, 1..=3).prop_map(Node::Data),
    ]
}

/// A zone the API accepts: any apex but the root and wildcards, SOA and serial, an apex NS set,
/// and owners with arbitrary labels, some at the 255-byte limit.
fn zone() -> impl Strategy<Value = (ZoneSpec, Vec<(Name, RecordType, RrSet)>)> {
    // Neither the root (the zone model refuses to serve it: it would answer for every name) nor
    // a wildcard apex (NS at a wildcard is refused, RFC 4592 §4.2, and an apex has NS).
    let apex = vec(label(), 1..=3)
        .prop_map(|l| name_under(l, &Name::root(), false))
        .prop_filter("a wildcard apex", |n| n.iter().next() != Some(&b"*"[..]));
    let owners = vec(
        (vec(label(), 0..=3), prop::bool::weighted(0.2), node()),
        0..=8,
    );
    let ns = (ttl(), vec(rdata(RecordType::NS), 1..=3));
    (apex, soa_params(), any::<u32>(), ns, owners).prop_map(
        |(apex, soa, serial, (ns_ttl, ns), owners)| {
            let apex = normalize(&apex);
            let mut rrsets = vec![(apex.clone(), RecordType::NS, rrset(ns_ttl, ns))];
            let mut seen = vec![apex.clone()];
            for (labels, fill, node) in owners {
                let owner = normalize(&name_under(labels, &apex, fill));
                // One node per owner (names differing in case are one owner): the apex is
                // taken by the NS set, and a second node at an owner could only add a CNAME
                // beside data, which the API refuses.
                if seen.contains(&owner) {
                    continue;
                }
                seen.push(owner.clone());
                match node {
                    Node::Cname(ttl, r) => {
                        rrsets.push((owner, RecordType::CNAME, rrset(ttl, vec![r])))
                    }
                    Node::Data(sets) => {
                        let mut types = Vec::new();
                        for (t, ttl, records) in sets {
                            // RFC 4592 §4.2: the API refuses NS at a wildcard.
                            let wildcard = owner.iter().next() == Some(&b"*"[..]);
                            if types.contains(&t) || (t == RecordType::NS && wildcard) {
                                continue;
                            }
                            types.push(t);
                            rrsets.push((owner.clone(), t, rrset(ttl, records)));
                        }
                    }
                }
            }
            let spec = ZoneSpec {
                apex,
                soa,
                serial,
                ns: Vec::new(),
                ns_ttl: DEFAULT_NS_TTL,
            };
            (spec, rrsets)
        },
    )
}

/// An RRset of `records` without duplicates (the API refuses a record given twice).
fn rrset(ttl: u32, records: Vec<RData>) -> RrSet {
    let mut set = RrSet {
        ttl,
        records: Vec::new(),
    };
    for r in records {
        if !set.records.contains(&r) {
            set.records.push(r);
        }
    }
    set
}

/// A name as its labels' bytes, case and all.
fn labels(name: &Name) -> (bool, Vec<Vec<u8>>) {
    (name.is_fqdn(), name.iter().map(<[u8]>::to_vec).collect())
}

/// A record in wire form: equal only if every byte is, the case of names included.
fn wire(rdata: &RData) -> (RecordType, Vec<u8>) {
    (rdata.record_type(), rdata.to_bytes().unwrap())
}

type Soa = (u32, (bool, Vec<Vec<u8>>), (bool, Vec<Vec<u8>>), [u32; 4]);
type Rrsets = Vec<(
    (bool, Vec<Vec<u8>>),
    RecordType,
    u32,
    Vec<(RecordType, Vec<u8>)>,
)>;

/// Everything a zone holds, byte for byte.
fn contents(zone: &Zone) -> ((bool, Vec<Vec<u8>>), Soa, u32, Rrsets) {
    let s = zone.soa();
    let soa = (
        s.ttl,
        labels(&s.mname),
        labels(&s.rname),
        [s.refresh, s.retry, s.expire, s.minimum],
    );
    let rrsets = zone
        .records()
        .map(|(owner, t, ttl, records)| {
            (labels(&owner), t, ttl, records.iter().map(wire).collect())
        })
        .collect();
    (labels(zone.apex()), soa, zone.serial(), rrsets)
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        // A failure is fixed and kept as a plain unit test; no files next to the source.
        failure_persistence: None,
        ..Config::default()
    }
}

proptest! {
    #![proptest_config(config(500))]

    /// A name printed and parsed again is the same name, absolute or relative to an origin.
    #[test]
    fn names_round_trip(name in name(), origin in name()) {
        let text = format_name(&name);
        prop_assert!(is_absolute(&text), "{}", text);
        let back = parse_name(&text, None).map_err(TestCaseError::fail)?;
        prop_assert_eq!(labels(&back), labels(&name), "{}", text);
        // Without its trailing dot it is relative: below the origin, if the whole fits.
        if !name.is_root() {
            let relative = &text[..text.len() - 1];
            prop_assert!(!is_absolute(relative), "{}", relative);
            if let Ok(full) = name.clone().append_domain(&origin) {
                let back = parse_name(relative, Some(&origin)).map_err(TestCaseError::fail)?;
                prop_assert_eq!(labels(&back), labels(&full), "{}", relative);
            }
        }
    }

    /// Record data printed in presentation format and parsed again is the same record; the
    /// API's text of it too (TXT aside: its API text is the next property).
    #[test]
    fn record_data_round_trips(rd in any_rdata()) {
        let t = rd.record_type();
        let text = format_rdata(&rd);
        let back = tokenize_rdata(&text)
            .and_then(|toks| parse_rdata(t, &toks, None))
            .map_err(|e| TestCaseError::fail(format!("{t} {text}: {e}")))?;
        prop_assert_eq!(wire(&back), wire(&rd), "{} {}", t, text);
        prop_assert_eq!(format_rdata(&back), text);
        if t != RecordType::TXT {
            let api = record_text(&rd);
            let back = parse_record_text(t, &api)
                .map_err(|e| TestCaseError::fail(format!("{t} {api}: {e}")))?;
            prop_assert_eq!(wire(&back), wire(&rd), "{} {}", t, api);
        }
    }

    /// The API's TXT text (any UTF-8, quotes and backslashes included) is the record's data as
    /// is: it reads back the same through the API and through presentation format.
    #[test]
    fn api_txt_round_trips(
        chars in vec(prop_oneof![any::<char>(), select(vec!['"', '\\', ' ', ';', '(', '\n'])], 0..=400),
    ) {
        let text: String = chars.into_iter().collect();
        let rd = parse_record_text(RecordType::TXT, &text).map_err(TestCaseError::fail)?;
        prop_assert_eq!(record_text(&rd), text);
        let shown = format_rdata(&rd);
        let back = tokenize_rdata(&shown)
            .and_then(|toks| parse_rdata(RecordType::TXT, &toks, None))
            .map_err(TestCaseError::fail)?;
        prop_assert_eq!(wire(&back), wire(&rd));
    }

    /// SOA data printed and parsed again gives the same settings and serial.
    #[test]
    fn soa_round_trips(soa in soa_params(), serial in any::<u32>()) {
        // The zone model keeps the timers at most MAX_TTL = i32::MAX: the casts are exact.
        let rd = RData::SOA(SOA::new(
            soa.mname.clone(),
            soa.rname.clone(),
            serial,
            i32::try_from(soa.refresh).unwrap(),
            i32::try_from(soa.retry).unwrap(),
            i32::try_from(soa.expire).unwrap(),
            soa.minimum,
        ));
        let text = format_rdata(&rd);
        let (back, back_serial) = tokenize_rdata(&text)
            .and_then(|toks| parse_soa(&toks, None, soa.ttl))
            .map_err(|e| TestCaseError::fail(format!("{text}: {e}")))?;
        prop_assert_eq!(back_serial, serial);
        prop_assert_eq!(labels(&back.mname), labels(&soa.mname), "{}", text);
        prop_assert_eq!(labels(&back.rname), labels(&soa.rname), "{}", text);
        prop_assert_eq!(back, soa);
    }
}

proptest! {
    #![proptest_config(config(100))]

    /// A zone exported as a master file and parsed again holds exactly what the zone holds.
    #[test]
    fn zone_files_round_trip((spec, rrsets) in zone()) {
        let mut set = ZoneSet::new();
        set.load_zone(spec.clone(), rrsets)
            .unwrap_or_else(|e| panic!("the generator made a zone the API refuses: {e}"));
        let zone = set.zone(&spec.apex).unwrap();
        let text = export(zone);
        let zf = parse("export", &text, Some(zone.apex()))
            .map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
        prop_assert!(zf.same_data(zone), "{}", text);
        prop_assert_eq!(zf.spec.serial, zone.serial());
        let mut again = ZoneSet::new();
        again.load_zone(zf.spec.clone(), zf.rrsets.clone()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(contents(again.zone(zf.apex()).unwrap()), contents(zone), "{}", text);
        // The zone named by the SOA record, as `serve --zone-file` reads it.
        let unnamed = parse("export", &text, None).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(unnamed.spec, zf.spec);
    }
}
