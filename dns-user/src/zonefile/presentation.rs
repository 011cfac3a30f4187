//! The presentation format of names and record data (RFC 1035 §5.1), which master files and the
//! API share: names with `\X` and `\DDD` escapes, TTLs with units, the data of each supported
//! record type, TXT quoting, and the API's own record text ([`parse_record_text`],
//! [`record_text`]).
//!
//! Names are parsed here rather than by hickory's `Name::from_ascii`, which reads `\DDD` as octal
//! where RFC 1035 §5.1 says decimal, so that printed names with odd bytes parse back the same.

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use hickory_proto::{
    rr::{
        rdata::{CNAME, MX, NS, PTR, SRV, TXT},
        Name, RData, RecordType,
    },
    serialize::binary::{BinDecoder, BinEncodable, Restrict},
};

pub use super::lex::Token;
use super::lex::{lex, unescape, Mode};
use crate::zone::{normalize, SoaParams, SUPPORTED_TYPES};

/// RFC 1035 §3.3: "`<character-string>` is a single length octet followed by that number of
/// characters", so at most 255 bytes; longer text is split into several.
pub const MAX_CHARACTER_STRING: usize = 255;
/// RDATA length is a 16-bit field (RFC 1035 §3.2.1).
pub const MAX_RDATA: usize = 65535;
/// RFC 1035 §2.3.4: names are 255 octets or less on the wire.
const MAX_NAME_WIRE: usize = 255;

/// Parses a domain name in presentation form. A name ending in an unescaped `.` is absolute;
/// another is made absolute by appending `origin`, or taken as absolute if there is none (the
/// API's rule). `@` is the origin.
pub fn parse_name(text: &str, origin: Option<&Name>) -> Result<Name, String> {
    if text == "@" {
        return origin
            .cloned()
            .ok_or_else(|| "'@' with no origin".to_string());
    }
    if text == "." {
        return Ok(Name::root());
    }
    if text.is_empty() {
        return Err("empty name".into());
    }
    if let Some(c) = text.chars().find(|c| !c.is_ascii() || c.is_ascii_control()) {
        return Err(format!(
            "{c:?} in name {text:?}: names are ASCII (use the xn-- form for IDNs)"
        ));
    }
    // Split on unescaped dots, then decode each label's escapes.
    let mut labels: Vec<Vec<u8>> = Vec::new();
    let mut label = String::new();
    let mut absolute = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                label.push('\\');
                if let Some(e) = chars.next() {
                    label.push(e);
                }
            }
            '.' => {
                if label.is_empty() {
                    return Err(format!("empty label in name {text:?}"));
                }
                labels.push(unescape(&label).map_err(|e| format!("name {text:?}: {e}"))?);
                label.clear();
                if chars.peek().is_none() {
                    absolute = true;
                }
            }
            c if c.is_ascii_whitespace() => {
                return Err(format!("blank in name {text:?}"));
            }
            c => label.push(c),
        }
    }
    if !label.is_empty() {
        labels.push(unescape(&label).map_err(|e| format!("name {text:?}: {e}"))?);
    }
    if let Some(l) = labels.iter().find(|l| l.len() > 63) {
        return Err(format!(
            "name {text:?}: a label is {} bytes, the limit is 63",
            l.len()
        ));
    }
    let origin = origin.filter(|_| !absolute);
    // Measured before hickory builds the name, which refuses a long one with a message of its
    // own that doesn't say what the limit is.
    let wire_len = labels
        .iter()
        .map(Vec::as_slice)
        .chain(origin.into_iter().flat_map(Name::iter))
        .map(|l| l.len() + 1)
        .sum::<usize>()
        + 1;
    if wire_len > MAX_NAME_WIRE {
        return Err(format!(
            "name {text:?} is {wire_len} bytes long, the limit is {MAX_NAME_WIRE}"
        ));
    }
    let mut name = Name::from_labels(labels).map_err(|e| format!("name {text:?}: {e}"))?;
    if let Some(origin) = origin {
        name = name
            .append_domain(origin)
            .map_err(|e| format!("name {text:?}: {e}"))?;
    }
    name.set_fqdn(true);
    Ok(name)
}

/// Whether `text` is an absolute name: it ends in an unescaped dot.
pub fn is_absolute(text: &str) -> bool {
    let trailing_backslashes = text
        .strip_suffix('.')
        .map(|t| t.chars().rev().take_while(|&c| c == '\\').count());
    matches!(trailing_backslashes, Some(n) if n % 2 == 0)
}

/// A name in presentation form, absolute (trailing dot), escaped so that [`parse_name`] reads it
/// back as the same labels.
pub fn format_name(name: &Name) -> String {
    if name.is_root() {
        return ".".into();
    }
    let mut out = String::new();
    for label in name.iter() {
        for &b in label {
            match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'*' | b'/' | b'+' => {
                    out.push(char::from(b))
                }
                0x21..=0x7e => {
                    out.push('\\');
                    out.push(char::from(b));
                }
                _ => out.push_str(&format!("\\{b:03}")),
            }
        }
        out.push('.');
    }
    out
}

/// A `<character-string>` in quotes, with `"` and `\` escaped and bytes outside printable ASCII
/// as `\DDD`.
fn quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(char::from(b));
            }
            0x20..=0x7e => out.push(char::from(b)),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

/// A TTL: seconds, or BIND-style units (`1w2d3h4m5s`, any case).
pub fn parse_ttl(text: &str) -> Result<u32, String> {
    let bad = || format!("bad TTL {text:?}");
    if text.is_empty() {
        return Err(bad());
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text
            .parse::<u32>()
            .map_err(|_| format!("TTL {text} does not fit 32 bits"));
    }
    let mut total: u64 = 0;
    let mut n: Option<u64> = None;
    for c in text.chars() {
        if let Some(d) = c.to_digit(10) {
            n = Some(
                n.unwrap_or(0)
                    .saturating_mul(10)
                    .saturating_add(u64::from(d)),
            );
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        total = total.saturating_add(n.take().ok_or_else(bad)?.saturating_mul(unit));
    }
    if n.is_some() {
        // A trailing number without a unit, like "1h30".
        return Err(bad());
    }
    u32::try_from(total).map_err(|_| format!("TTL {text} does not fit 32 bits"))
}

fn number<T: FromStr>(tok: &Token, what: &str) -> Result<T, String> {
    if tok.quoted {
        return Err(format!("{what}: expected a number, found a quoted string"));
    }
    tok.text
        .parse()
        .map_err(|_| format!("bad {what} {:?}", tok.text))
}

fn name_field(tok: &Token, origin: Option<&Name>, what: &str) -> Result<Name, String> {
    if tok.quoted {
        return Err(format!("{what}: expected a name, found a quoted string"));
    }
    parse_name(&tok.text, origin).map_err(|e| format!("{what}: {e}"))
}

/// The record's fields, exactly as many as `names` lists.
fn fields<'t, const N: usize>(
    tokens: &'t [Token],
    names: [&str; N],
    rtype: RecordType,
) -> Result<&'t [Token; N], String> {
    tokens.try_into().map_err(|_| {
        format!(
            "{rtype} takes {N} field{} ({}), found {}",
            if N == 1 { "" } else { "s" },
            names.join(" "),
            tokens.len()
        )
    })
}

/// Splits text into `<character-string>`s of at most 255 bytes (at least one, maybe empty).
fn character_strings(bytes: &[u8]) -> Vec<&[u8]> {
    if bytes.is_empty() {
        return vec![bytes];
    }
    bytes.chunks(MAX_CHARACTER_STRING).collect()
}

/// Parses the data of one record of `rtype` from its tokens (SOA: see [`parse_soa`]). Names that
/// are not absolute are relative to `origin`, or absolute if there is none.
pub fn parse_rdata(
    rtype: RecordType,
    tokens: &[Token],
    origin: Option<&Name>,
) -> Result<RData, String> {
    let rdata = match rtype {
        RecordType::A => {
            let [a] = fields(tokens, ["address"], rtype)?;
            RData::A(number::<Ipv4Addr>(a, "IPv4 address")?.into())
        }
        RecordType::AAAA => {
            let [a] = fields(tokens, ["address"], rtype)?;
            RData::AAAA(number::<Ipv6Addr>(a, "IPv6 address")?.into())
        }
        RecordType::CNAME => {
            let [t] = fields(tokens, ["target"], rtype)?;
            RData::CNAME(CNAME(name_field(t, origin, "target")?))
        }
        RecordType::NS => {
            let [n] = fields(tokens, ["nsdname"], rtype)?;
            RData::NS(NS(name_field(n, origin, "nsdname")?))
        }
        RecordType::PTR => {
            let [p] = fields(tokens, ["ptrdname"], rtype)?;
            RData::PTR(PTR(name_field(p, origin, "ptrdname")?))
        }
        RecordType::MX => {
            let [pref, exchange] = fields(tokens, ["preference", "exchange"], rtype)?;
            RData::MX(MX::new(
                number(pref, "preference")?,
                name_field(exchange, origin, "exchange")?,
            ))
        }
        RecordType::SRV => {
            let [prio, weight, port, target] =
                fields(tokens, ["priority", "weight", "port", "target"], rtype)?;
            RData::SRV(SRV::new(
                number(prio, "priority")?,
                number(weight, "weight")?,
                number(port, "port")?,
                name_field(target, origin, "target")?,
            ))
        }
        RecordType::TXT => {
            if tokens.is_empty() {
                return Err("TXT takes one or more strings, found none".into());
            }
            let mut strings = Vec::new();
            for t in tokens {
                strings.push(unescape(&t.text)?);
            }
            let parts: Vec<&[u8]> = strings.iter().flat_map(|s| character_strings(s)).collect();
            RData::TXT(TXT::from_bytes(parts))
        }
        RecordType::CAA => {
            let [flags, tag, value] = fields(tokens, ["flags", "tag", "value"], rtype)?;
            let flags: u8 = number(flags, "flags")?;
            let tag = &tag.text;
            // RFC 8659 §4.1: "The tag length MUST be at least 1"; tags are letters and digits,
            // and hickory, like most, refuses tags longer than 15.
            if tag.is_empty() || tag.len() > 15 || !tag.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(format!("bad CAA tag {tag:?}: 1 to 15 letters and digits"));
            }
            let value = unescape(&value.text)?;
            caa(flags, tag.as_bytes(), &value)?
        }
        RecordType::SOA => return Err("SOA is set through the zone's SOA settings".into()),
        _ => return Err(unsupported(rtype)),
    };
    check_wire(&rdata)?;
    Ok(rdata)
}

/// A CAA record built from its wire form, so that it is exactly what the store reads back.
fn caa(flags: u8, tag: &[u8], value: &[u8]) -> Result<RData, String> {
    let mut wire = Vec::with_capacity(2 + tag.len() + value.len());
    wire.push(flags);
    wire.push(tag.len() as u8);
    wire.extend_from_slice(tag);
    wire.extend_from_slice(value);
    let len = u16::try_from(wire.len()).map_err(|_| rdata_too_long(wire.len()))?;
    RData::read(
        &mut BinDecoder::new(&wire),
        RecordType::CAA,
        Restrict::new(len),
    )
    .map_err(|e| format!("bad CAA record: {e}"))
}

fn rdata_too_long(n: usize) -> String {
    format!("record data is {n} bytes, the limit is {MAX_RDATA}")
}

/// The record encodes, within RDATA's 16-bit length: the store writes it in wire form.
fn check_wire(rdata: &RData) -> Result<(), String> {
    let bytes = rdata
        .to_bytes()
        .map_err(|e| format!("record does not encode: {e}"))?;
    if bytes.len() > MAX_RDATA {
        return Err(rdata_too_long(bytes.len()));
    }
    Ok(())
}

pub(super) fn unsupported(rtype: RecordType) -> String {
    let list: Vec<String> = SUPPORTED_TYPES.iter().map(ToString::to_string).collect();
    format!(
        "record type {rtype} is not supported (supported: {})",
        list.join(", ")
    )
}

/// A record type by its mnemonic, any case.
pub fn parse_type(text: &str) -> Result<RecordType, String> {
    match RecordType::from_str(&text.to_ascii_uppercase()) {
        Ok(RecordType::Unknown(_)) | Err(_) => Err(format!("unknown record type {text:?}")),
        Ok(t) => Ok(t),
    }
}

/// Tokenizes one record's data as the API takes it: one line, fields separated by blanks,
/// quoted strings allowed, no comments or parentheses (`;`, `(` and `)` must be quoted or
/// escaped).
pub fn tokenize_rdata(text: &str) -> Result<Vec<Token>, String> {
    let entries = lex(text, Mode::Rdata).map_err(|(_, e)| e)?;
    Ok(entries.into_iter().flat_map(|e| e.tokens).collect())
}

/// Parses one record as the API takes it: presentation format with names taken as absolute,
/// except TXT, whose text is the record's data as is (split into 255-byte strings).
pub fn parse_record_text(rtype: RecordType, text: &str) -> Result<RData, String> {
    if rtype == RecordType::TXT {
        let rdata = RData::TXT(TXT::from_bytes(character_strings(text.as_bytes())));
        check_wire(&rdata)?;
        return Ok(rdata);
    }
    if !SUPPORTED_TYPES.contains(&rtype) {
        return Err(unsupported(rtype));
    }
    parse_rdata(rtype, &tokenize_rdata(text)?, None)
}

/// One record as the API shows it: what [`parse_record_text`] takes (TXT: its strings joined).
pub fn record_text(rdata: &RData) -> String {
    match rdata {
        RData::TXT(t) => {
            let bytes: Vec<u8> = t.iter().flat_map(|s| s.iter().copied()).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => format_rdata(rdata),
    }
}

/// One record's data in presentation format (a zone file's RDATA field).
pub fn format_rdata(rdata: &RData) -> String {
    match rdata {
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::CNAME(n) => format_name(&n.0),
        RData::NS(n) => format_name(&n.0),
        RData::PTR(n) => format_name(&n.0),
        RData::MX(mx) => format!("{} {}", mx.preference(), format_name(mx.exchange())),
        RData::SRV(s) => format!(
            "{} {} {} {}",
            s.priority(),
            s.weight(),
            s.port(),
            format_name(s.target())
        ),
        RData::TXT(t) => t.iter().map(|s| quote(s)).collect::<Vec<_>>().join(" "),
        RData::CAA(c) => {
            // The tag and value as stored, not hickory's reading of them.
            let wire = c.to_bytes().unwrap_or_default();
            let tag_len = usize::from(wire.get(1).copied().unwrap_or(0));
            let tag = wire.get(2..2 + tag_len).unwrap_or_default();
            let value = wire.get(2 + tag_len..).unwrap_or_default();
            format!(
                "{} {} {}",
                c.flags(),
                String::from_utf8_lossy(tag),
                quote(value)
            )
        }
        RData::SOA(s) => format!(
            "{} {} {} {} {} {} {}",
            format_name(s.mname()),
            format_name(s.rname()),
            s.serial(),
            s.refresh(),
            s.retry(),
            s.expire(),
            s.minimum()
        ),
        other => other.to_string(),
    }
}

/// Parses SOA data: `mname rname serial refresh retry expire minimum` (timers may use units).
pub fn parse_soa(
    tokens: &[Token],
    origin: Option<&Name>,
    ttl: u32,
) -> Result<(SoaParams, u32), String> {
    let [mname, rname, serial, refresh, retry, expire, minimum] = fields(
        tokens,
        [
            "mname", "rname", "serial", "refresh", "retry", "expire", "minimum",
        ],
        RecordType::SOA,
    )?;
    let timer = |t: &Token, what: &str| parse_ttl(&t.text).map_err(|e| format!("{what}: {e}"));
    let params = SoaParams {
        ttl,
        mname: normalize(&name_field(mname, origin, "mname")?),
        rname: normalize(&name_field(rname, origin, "rname")?),
        refresh: timer(refresh, "refresh")?,
        retry: timer(retry, "retry")?,
        expire: timer(expire, "expire")?,
        minimum: timer(minimum, "minimum")?,
    };
    Ok((params, number(serial, "serial")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn toks(s: &str) -> Vec<Token> {
        tokenize_rdata(s).unwrap()
    }

    #[test]
    fn names_absolute_relative_and_escaped() {
        let origin = n("example.net.");
        assert_eq!(
            parse_name("www", Some(&origin)).unwrap(),
            n("www.example.net.")
        );
        assert_eq!(parse_name("www.", Some(&origin)).unwrap(), n("www."));
        assert_eq!(parse_name("@", Some(&origin)).unwrap(), origin);
        // Without an origin a relative name is taken as absolute (the API's rule).
        assert_eq!(
            parse_name("mail.example.net", None).unwrap(),
            n("mail.example.net.")
        );
        // \DDD is decimal (RFC 1035 §5.1): \046 is '.', inside the label.
        let dotted = parse_name("a\\046b.example.", None).unwrap();
        assert_eq!(dotted.iter().next().unwrap(), b"a.b");
        assert_eq!(format_name(&dotted), "a\\.b.example.");
        let odd = Name::from_labels(vec![&b"x y\x01\""[..], &b"example"[..]]).unwrap();
        assert_eq!(parse_name(&format_name(&odd), None).unwrap(), odd);
        assert!(parse_name("a..b", None).is_err());
        assert!(parse_name("bücher.example.", None).is_err());
        assert!(parse_name(&"a".repeat(64), None).is_err());
        assert!(is_absolute("a.b."));
        assert!(!is_absolute("a.b\\."));
        assert!(is_absolute("a.b\\\\."));
    }

    /// RFC 1035 §2.3.4: 255 bytes on the wire is the most a name may have, whether it is
    /// written whole or relative to an origin, and escapes count as the byte they stand for.
    #[test]
    fn names_up_to_255_bytes() {
        let l63 = "a".repeat(63);
        let at_limit = format!("{l63}.{l63}.{l63}.{}.", "\\255".repeat(61));
        let name = parse_name(&at_limit, None).unwrap();
        assert_eq!(name.iter().map(|l| l.len() + 1).sum::<usize>() + 1, 255);
        assert_eq!(parse_name(&format_name(&name), None).unwrap(), name);
        let over = format!("{l63}.{l63}.{l63}.{}.", "b".repeat(62));
        let e = parse_name(&over, None).unwrap_err();
        assert!(e.contains("256 bytes"), "{e}");
        let origin = parse_name(&format!("{l63}.{l63}."), None).unwrap();
        let relative = format!("{l63}.{}", "c".repeat(61));
        assert_eq!(
            parse_name(&relative, Some(&origin)).unwrap().num_labels(),
            4
        );
        let relative = format!("{l63}.{}", "c".repeat(62));
        let e = parse_name(&relative, Some(&origin)).unwrap_err();
        assert!(e.contains("256 bytes"), "{e}");
    }

    #[test]
    fn ttls_with_units() {
        assert_eq!(parse_ttl("300").unwrap(), 300);
        assert_eq!(parse_ttl("1h30m").unwrap(), 5400);
        assert_eq!(parse_ttl("1W").unwrap(), 604_800);
        assert!(parse_ttl("1h30").is_err());
        assert!(parse_ttl("h").is_err());
        assert!(parse_ttl("99999999999").is_err());
    }

    #[test]
    fn rdata_of_each_type() {
        let cases = [
            (RecordType::A, "192.0.2.7", "192.0.2.7"),
            (RecordType::AAAA, "2001:db8::1", "2001:db8::1"),
            (
                RecordType::CNAME,
                "target.example.net",
                "target.example.net.",
            ),
            (RecordType::NS, "ns1.example.net.", "ns1.example.net."),
            (RecordType::PTR, "host.example.net.", "host.example.net."),
            (
                RecordType::MX,
                "10 mail.example.net.",
                "10 mail.example.net.",
            ),
            (
                RecordType::SRV,
                "10 5 443 target.example.net.",
                "10 5 443 target.example.net.",
            ),
            (
                RecordType::CAA,
                "0 issue \"letsencrypt.org\"",
                "0 issue \"letsencrypt.org\"",
            ),
            (
                RecordType::CAA,
                "128 iodef \"mailto:a@b.example\"",
                "128 iodef \"mailto:a@b.example\"",
            ),
            (RecordType::TXT, "\"a\" \"b c\" d", "\"a\" \"b c\" \"d\""),
        ];
        for (t, input, shown) in cases {
            let rd = parse_rdata(t, &toks(input), None).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(rd.record_type(), t);
            assert_eq!(format_rdata(&rd), shown, "{input}");
            let back = parse_rdata(t, &toks(shown), None).unwrap();
            assert_eq!(back, rd, "{shown}");
        }
    }

    #[test]
    fn bad_rdata_is_refused() {
        for (t, input) in [
            (RecordType::A, "192.0.2"),
            (RecordType::A, "2001:db8::1"),
            (RecordType::A, "192.0.2.1 192.0.2.2"),
            (RecordType::AAAA, "192.0.2.1"),
            (RecordType::MX, "mail.example.net."),
            (RecordType::MX, "70000 mail.example.net."),
            (RecordType::SRV, "1 2 mail.example.net."),
            (RecordType::CAA, "0 is-sue \"x\""),
            (RecordType::CAA, "256 issue \"x\""),
            (RecordType::CNAME, "\"quoted\""),
        ] {
            assert!(parse_rdata(t, &toks(input), None).is_err(), "{t} {input}");
        }
        assert!(parse_record_text(RecordType::HINFO, "a b").is_err());
        assert!(tokenize_rdata("10 a; b").is_err());
        assert!(tokenize_rdata("\"open").is_err());
    }

    #[test]
    fn api_txt_is_raw_and_split() {
        let long = "x".repeat(600);
        let RData::TXT(t) = parse_record_text(RecordType::TXT, &long).unwrap() else {
            panic!("not TXT");
        };
        let lens: Vec<usize> = t.iter().map(|s| s.len()).collect();
        assert_eq!(lens, [255, 255, 90]);
        let rd = parse_record_text(RecordType::TXT, "v=spf1 \"quoted\" -all").unwrap();
        assert_eq!(record_text(&rd), "v=spf1 \"quoted\" -all");
        assert!(parse_record_text(RecordType::TXT, &"y".repeat(70_000)).is_err());
    }
}
