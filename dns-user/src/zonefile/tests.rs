//! Master files: parsing, errors with their line, printing and reading back.

use hickory_proto::rr::{Name, RecordType};

use super::{
    export, parse,
    presentation::{
        format_rdata, parse_name, parse_rdata, parse_record_text, record_text, tokenize_rdata,
    },
};
use crate::zone::ZoneSet;

fn n(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

const ZONE: &str = r#"
$ORIGIN example.net.
$TTL 1h
@   IN  SOA ns1 hostmaster (
        2024010101 ; serial
        3600 900 2w
        30 )
    IN  NS  ns1
    IN  NS  ns2.other.org.
ns1 300 A   192.0.2.1
www     A   192.0.2.2      ; TTL from $TTL
        A   192.0.2.3
        A   192.0.2.3      ; a duplicate, dropped
mail    IN 60 MX 10 mx.other.org.
txt     TXT "hello world" "second\"string" \065BC
_sip._tcp SRV 10 5 5060 sip
alias   CNAME www
"#;

#[test]
fn parses_a_master_file() {
    let zf = parse("zone.db", ZONE, Some(&n("example.net"))).unwrap();
    assert_eq!(zf.spec.apex, n("example.net."));
    assert_eq!(zf.spec.serial, 2024010101);
    assert_eq!(zf.spec.soa.expire, 1_209_600);
    assert_eq!(zf.spec.soa.ttl, 3600);
    assert_eq!(zf.spec.soa.mname, n("ns1.example.net."));
    let get = |name: &str, t| {
        zf.rrsets
            .iter()
            .find(|(o, rt, _)| *o == n(name) && *rt == t)
            .map(|(_, _, s)| s.clone())
            .unwrap_or_else(|| panic!("no {t} at {name}"))
    };
    assert_eq!(get("example.net.", RecordType::NS).records.len(), 2);
    assert_eq!(get("ns1.example.net.", RecordType::A).ttl, 300);
    let www = get("www.example.net.", RecordType::A);
    assert_eq!((www.ttl, www.records.len()), (3600, 2));
    assert_eq!(get("mail.example.net.", RecordType::MX).ttl, 60);
    let txt = get("txt.example.net.", RecordType::TXT);
    assert_eq!(
        format_rdata(&txt.records[0]),
        "\"hello world\" \"second\\\"string\" \"ABC\""
    );
    assert_eq!(
        format_rdata(&get("_sip._tcp.example.net.", RecordType::SRV).records[0]),
        "10 5 5060 sip.example.net."
    );
    // Without a zone given, the zone is the SOA's owner.
    let again = parse("zone.db", ZONE, None).unwrap();
    assert_eq!(again.spec, zf.spec);
}

#[test]
fn errors_name_file_and_line() {
    let cases = [
        ("www A 192.0.2.1\n", "zone.db:1: relative name \"www\" with no $ORIGIN"),
        ("$ORIGIN example.net.\n$TTL 60\n@ SOA a b 1 2 3 4 5\n@ NS ns\nwww A 1.2.3\n", "zone.db:5: bad IPv4 address \"1.2.3\""),
        ("$ORIGIN example.net.\n$TTL 60\n@ SOA a b 1 2 3 4 5\n@ NS ns\nwww HINFO a b\n", "zone.db:5: record type HINFO is not supported"),
        ("$ORIGIN example.net.\n$TTL 60\n@ SOA a b 1 2 3 4 5\n@ NS ns\nwww CNAME x\nwww A 192.0.2.1\n", "zone.db:6: "),
        ("$ORIGIN example.net.\n$TTL 60\n@ SOA a b 1 2 3 4 5\n@ NS ns\nx.other.org. A 192.0.2.1\n", "zone.db:5: x.other.org. is not inside zone example.net."),
        ("$ORIGIN example.net.\n$TTL 60\n@ SOA a b ( 1 2 3 4 5\n", "zone.db:3: '(' is never closed"),
        ("$ORIGIN example.net.\n$TTL 60\n@ NS ns\n", "zone.db: no SOA record"),
        ("$ORIGIN example.net.\n$TTL 60\n@ SOA a b 1 2 3 4 5\n", "zone.db: no NS records at the zone apex"),
        ("$ORIGIN example.net.\n@ 60 SOA a b 1 2 3 4 5\n@ NS ns\nw 60 A 192.0.2.1\nw 30 A 192.0.2.2\n", "zone.db:5: TTL 30 differs"),
        ("$INCLUDE /etc/passwd\n", "zone.db:1: $INCLUDE is not supported"),
        ("$ORIGIN example.net.\n$TTL 60\n@ CH SOA a b 1 2 3 4 5\n", "zone.db:3: class CH"),
        ("$ORIGIN example.net.\n$TTL 60\n@ SOA a b 1 2 3 4 5\n@ NS ns\nw 4294967295 A 192.0.2.1\n", "zone.db:5: TTL 4294967295 is out of range"),
        ("( )\n(\n)\n  ( ; nothing\n )\n", "zone.db: no SOA record"),
        ("$ORIGIN example.net.\n$TTL 60\n@ SOA a b 1 2 3 4 5 6\n", "zone.db:3: SOA takes 7 fields (mname rname serial refresh retry expire minimum), found 8"),
    ];
    for (text, want) in cases {
        let e = parse("zone.db", text, None).unwrap_err().to_string();
        assert!(e.starts_with(want), "{text:?}\n got {e}\nwant {want}");
    }
    let e = parse(
        "z.db",
        "$TTL 60\nexample.org. SOA a. b. 1 2 3 4 5\n",
        Some(&n("example.net.")),
    )
    .unwrap_err();
    assert_eq!(e.line, Some(2));
}

#[test]
fn export_imports_back() {
    let zf = parse("zone.db", ZONE, None).unwrap();
    let mut set = ZoneSet::new();
    set.load_zone(zf.spec.clone(), zf.rrsets.clone()).unwrap();
    let zone = set.zone(&n("example.net.")).unwrap();
    let text = export(zone);
    let back = parse("export", &text, Some(zone.apex())).unwrap();
    assert!(back.same_data(zone), "{text}");
    assert_eq!(back.spec.serial, zone.serial());
    assert!(zf.same_data(zone));
}

/// Random text made of the syntax's pieces: parsing never panics, and whatever record the
/// API accepts prints as text that parses back to the same record.
#[test]
fn random_input_never_panics_and_round_trips() {
    let pieces = [
        "$ORIGIN ",
        "$TTL ",
        "example.net.",
        "@",
        " ",
        "\t",
        "\n",
        "(",
        ")",
        ";",
        "\"",
        "\\",
        "\\0",
        "\\255",
        "\\999",
        "1",
        "60",
        "1h",
        "IN ",
        "SOA ",
        "A ",
        "TXT ",
        "CAA ",
        "MX ",
        "SRV ",
        "NS ",
        "x",
        ".",
        "..",
        "*",
        "0 issue ",
        "192.0.2.1",
        "::1",
        "é",
        "\r",
        "CH ",
        "65535 ",
        "4294967296 ",
    ];
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::TXT,
        RecordType::CAA,
        RecordType::MX,
        RecordType::SRV,
        RecordType::NS,
        RecordType::CNAME,
        RecordType::PTR,
    ];
    let zone = n("example.net.");
    // xorshift64: deterministic, no dependency.
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for _ in 0..20_000 {
        let len = next() % 30;
        let text: String = (0..len)
            .map(|_| pieces[(next() % pieces.len() as u64) as usize])
            .collect();
        let _ = parse("f", &text, None);
        let body = format!("$ORIGIN example.net.\n$TTL 60\n@ SOA a b 1 2 3 4 5\n@ NS ns\n{text}");
        let _ = parse("f", &body, Some(&zone));
        let _ = parse_name(&text, Some(&zone));
        for t in types {
            let Ok(rd) = parse_record_text(t, &text) else {
                continue;
            };
            let shown = format_rdata(&rd);
            let back = tokenize_rdata(&shown).and_then(|toks| parse_rdata(t, &toks, None));
            assert_eq!(back, Ok(rd.clone()), "{text:?} -> {shown:?}");
            if t != RecordType::TXT {
                assert_eq!(parse_record_text(t, &record_text(&rd)), Ok(rd), "{text:?}");
            }
        }
    }
}
