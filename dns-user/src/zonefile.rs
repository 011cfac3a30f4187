//! Zone files (the RFC 1035 §5 master-file format) and the presentation format of record data,
//! which the API takes too.
//!
//! Import ([`parse`]) reads a master file into a [`ZoneFile`]: the zone's SOA settings and every
//! RRset, checked by the zone model before anything is applied, with errors that name the file
//! and line (`zone.db:12: ...`). [`import`] then replaces the zone in one step
//! ([`crate::zone::Edit::ReplaceZone`]). Export ([`export`]) writes a zone so that importing the result gives the
//! same data.
//!
//! Supported: `$ORIGIN`, `$TTL` (RFC 2308 §4), relative names, `@`, an omitted owner (a line that
//! starts with a blank repeats the previous owner), parentheses across lines, `;` comments, quoted
//! strings with `\X` and `\DDD` escapes, TTLs with BIND-style units (`1h30m`), class IN, the
//! record types the zone model stores ([`SUPPORTED_TYPES`]) and SOA. Not supported: `$INCLUDE`
//! (a file that names other files is a path-traversal hazard once it can be uploaded over the
//! API) and `$GENERATE`.
//!
//! Names are parsed here rather than by hickory's `Name::from_ascii`, which reads `\DDD` as octal
//! where RFC 1035 §5.1 says decimal, so that exported names with odd bytes import back the same.

use std::{
    collections::HashMap,
    fmt,
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

use crate::zone::{
    normalize, RrSet, SoaParams, Zone, ZoneError, ZoneSet, ZoneSpec, DEFAULT_NS_TTL,
    SUPPORTED_TYPES,
};

/// RFC 1035 §3.3: "`<character-string>` is a single length octet followed by that number of
/// characters", so at most 255 bytes; longer text is split into several.
pub const MAX_CHARACTER_STRING: usize = 255;
/// RDATA length is a 16-bit field (RFC 1035 §3.2.1).
pub const MAX_RDATA: usize = 65535;
/// RFC 1035 §2.3.4: names are 255 octets or less on the wire.
const MAX_NAME_WIRE: usize = 255;

/// One token of presentation-format text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// The text as written, escapes included; a quoted string without its quotes.
    pub text: String,
    pub quoted: bool,
    /// 1-based line the token is on.
    pub line: usize,
}

/// One logical entry of a master file: a record or a directive, parentheses joined.
#[derive(Debug)]
struct Entry {
    line: usize,
    /// The entry's first line starts with a blank: the owner is left out (RFC 1035 §5.1: "If
    /// [the domain name] is left blank, the previously stated domain name is used").
    owner_blank: bool,
    tokens: Vec<Token>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A master file: comments, parentheses, several lines.
    File,
    /// One record's data as the API takes it: one line, no comments or parentheses.
    Rdata,
}

/// Splits text into entries (RFC 1035 §5.1). Errors are `(line, reason)`.
fn lex(text: &str, mode: Mode) -> Result<Vec<Entry>, (usize, String)> {
    let mut entries = Vec::new();
    let mut cur: Option<Entry> = None;
    let mut line = 1;
    let mut paren: Option<usize> = None;
    let mut line_start = true;
    let mut line_blank = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if line_start {
            line_blank = c == ' ' || c == '\t';
            line_start = false;
        }
        match c {
            '\n' => {
                if mode == Mode::Rdata {
                    return Err((line, "record data must be one line".into()));
                }
                line += 1;
                line_start = true;
                if paren.is_none() {
                    entries.extend(cur.take());
                }
            }
            ' ' | '\t' | '\r' => {}
            ';' | '(' | ')' if mode == Mode::Rdata => {
                return Err((line, format!("unexpected {c:?}: quote the text")));
            }
            ';' => while chars.next_if(|&c| c != '\n').is_some() {},
            '(' => {
                if let Some(open) = paren {
                    return Err((line, format!("nested '(' (one is open since line {open})")));
                }
                paren = Some(line);
                cur.get_or_insert_with(|| Entry {
                    line,
                    owner_blank: line_blank,
                    tokens: Vec::new(),
                });
            }
            ')' => {
                if paren.take().is_none() {
                    return Err((line, "')' without '('".into()));
                }
            }
            '"' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None | Some('\n') => {
                            return Err((line, "unterminated quoted string".into()));
                        }
                        Some('"') => break,
                        Some('\\') => {
                            s.push('\\');
                            match chars.next() {
                                None | Some('\n') => {
                                    return Err((line, "unterminated quoted string".into()));
                                }
                                Some(e) => s.push(e),
                            }
                        }
                        Some(ch) => s.push(ch),
                    }
                }
                push_token(&mut cur, line, line_blank, s, true);
            }
            _ => {
                let mut s = String::from(c);
                let mut escaped = c == '\\';
                while let Some(&n) = chars.peek() {
                    if !escaped && matches!(n, ' ' | '\t' | '\r' | '\n' | '(' | ')' | ';' | '"') {
                        break;
                    }
                    if escaped && n == '\n' {
                        return Err((line, "escape at end of line".into()));
                    }
                    escaped = !escaped && n == '\\';
                    s.push(n);
                    chars.next();
                }
                if escaped {
                    return Err((line, "escape at end of text".into()));
                }
                push_token(&mut cur, line, line_blank, s, false);
            }
        }
    }
    if let Some(open) = paren {
        return Err((open, "'(' is never closed".into()));
    }
    entries.extend(cur);
    Ok(entries)
}

fn push_token(cur: &mut Option<Entry>, line: usize, owner_blank: bool, text: String, quoted: bool) {
    cur.get_or_insert_with(|| Entry {
        line,
        owner_blank,
        tokens: Vec::new(),
    })
    .tokens
    .push(Token { text, quoted, line });
}

/// Decodes the escapes of RFC 1035 §5.1: `\DDD` (decimal) is that byte, `\X` is X.
fn unescape(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            let mut buf = [0; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let Some(e) = chars.next() else {
            return Err("escape at end of text".into());
        };
        if let Some(d0) = e.to_digit(10) {
            let mut value = d0;
            for _ in 0..2 {
                let d = chars
                    .next()
                    .and_then(|c| c.to_digit(10))
                    .ok_or("\\DDD takes three decimal digits")?;
                value = value * 10 + d;
            }
            let byte = u8::try_from(value).map_err(|_| format!("\\{value} is not a byte"))?;
            out.push(byte);
        } else {
            let mut buf = [0; 4];
            out.extend_from_slice(e.encode_utf8(&mut buf).as_bytes());
        }
    }
    Ok(out)
}

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
    let mut name = Name::from_labels(labels).map_err(|e| format!("name {text:?}: {e}"))?;
    if !absolute {
        if let Some(origin) = origin {
            name = name
                .append_domain(origin)
                .map_err(|e| format!("name {text:?}: {e}"))?;
        }
    }
    name.set_fqdn(true);
    let wire_len = name.iter().map(|l| l.len() + 1).sum::<usize>() + 1;
    if wire_len > MAX_NAME_WIRE {
        return Err(format!(
            "name {text:?} is {wire_len} bytes long, the limit is {MAX_NAME_WIRE}"
        ));
    }
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

fn unsupported(rtype: RecordType) -> String {
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
/// quoted strings allowed.
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

/// Where a zone-file error is: `file:line: reason`, or `file: reason` for the file as a whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneFileError {
    pub file: String,
    pub line: Option<usize>,
    pub reason: String,
}

impl fmt::Display for ZoneFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

impl std::error::Error for ZoneFileError {}

/// A parsed, checked zone file: what [`crate::zone::Edit::ReplaceZone`] takes.
#[derive(Clone, Debug)]
pub struct ZoneFile {
    /// The zone: apex, SOA settings, the file's serial. `ns` is empty: the apex NS set is one of
    /// the `rrsets`.
    pub spec: ZoneSpec,
    /// Every RRset but the SOA, owners absolute and lowercased, in file order.
    pub rrsets: Vec<(Name, RecordType, RrSet)>,
    /// Line of each RRset's first record, to place errors the zone model finds.
    lines: Vec<usize>,
    /// Line of the SOA record.
    soa_line: usize,
    file: String,
}

impl ZoneFile {
    pub fn apex(&self) -> &Name {
        &self.spec.apex
    }

    /// The name the file was read under, as errors show it.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Number of records, the SOA left out.
    pub fn record_count(&self) -> usize {
        self.rrsets.iter().map(|(_, _, s)| s.records.len()).sum()
    }

    /// Places an error of the zone model about this file's data at the line it comes from.
    pub fn locate(&self, e: &ZoneError) -> ZoneFileError {
        let (line, reason) = match e {
            ZoneError::Batch { index, source } => {
                (self.lines.get(*index).copied(), source.to_string())
            }
            ZoneError::NoNameServers => (None, "no NS records at the zone apex".to_string()),
            ZoneError::TtlOutOfRange { .. } => (Some(self.soa_line), e.to_string()),
            _ => (None, e.to_string()),
        };
        ZoneFileError {
            file: self.file.clone(),
            line,
            reason,
        }
    }

    /// Whether `zone` already holds exactly this data (SOA settings and every RRset; the serial
    /// aside), so importing the file again would change nothing.
    pub fn same_data(&self, zone: &Zone) -> bool {
        if *zone.soa() != self.spec.soa || normalize(zone.apex()) != normalize(self.apex()) {
            return false;
        }
        let mut mine: Vec<(&Name, RecordType, &RrSet)> =
            self.rrsets.iter().map(|(n, t, s)| (n, *t, s)).collect();
        mine.sort_by(|a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        let theirs = zone.records();
        let mut count = 0;
        for ((name, rtype, ttl, records), (n, t, s)) in theirs.zip(mine.iter()) {
            count += 1;
            if name != **n || rtype != *t || ttl != s.ttl || records != s.records.as_slice() {
                return false;
            }
        }
        count == mine.len() && zone.rrset_count() == mine.len()
    }
}

/// Reads a master file. `file` names it in errors; `zone`, if given, is the zone it must be for
/// (and the initial `$ORIGIN`); without it the zone is the owner of the file's SOA record.
///
/// The TTL of a record that doesn't give one is `$TTL`, else the last TTL given (RFC 1035 §5.1);
/// all records of an RRset must have the same TTL (RFC 2181 §5.2). A record given twice is kept
/// once (RFC 2181 §5: an RRset is a set). The result is checked by the zone model, so the
/// errors it would find are reported here, with their line.
pub fn parse(file: &str, text: &str, zone: Option<&Name>) -> Result<ZoneFile, ZoneFileError> {
    let err = |line: Option<usize>, reason: String| ZoneFileError {
        file: file.to_string(),
        line,
        reason,
    };
    let entries = lex(text, Mode::File).map_err(|(l, e)| err(Some(l), e))?;
    let zone = zone.map(normalize);
    let mut origin = zone.clone();
    let mut dollar_ttl: Option<u32> = None;
    let mut last_ttl: Option<u32> = None;
    let mut last_owner: Option<Name> = None;
    let mut soa: Option<(usize, Name, u32, SoaParams, u32)> = None;
    let mut rrsets: Vec<(Name, RecordType, RrSet)> = Vec::new();
    let mut lines = Vec::new();
    let mut index: HashMap<(Name, RecordType), usize> = HashMap::new();

    for entry in entries {
        let line = entry.line;
        let at = |reason: String| err(Some(line), reason);
        let toks = &entry.tokens;
        // "( )" alone makes an entry without tokens.
        let Some(first) = toks.first() else {
            continue;
        };
        if !entry.owner_blank && !first.quoted && first.text.starts_with('$') {
            let args = &toks[1..];
            match first.text.to_ascii_uppercase().as_str() {
                "$ORIGIN" => {
                    let [arg] = args else {
                        return Err(at("$ORIGIN takes one name".into()));
                    };
                    if origin.is_none() && !is_absolute(&arg.text) {
                        return Err(at(format!(
                            "relative $ORIGIN {:?} with no origin",
                            arg.text
                        )));
                    }
                    origin = Some(normalize(
                        &parse_name(&arg.text, origin.as_ref()).map_err(&at)?,
                    ));
                }
                "$TTL" => {
                    let [arg] = args else {
                        return Err(at("$TTL takes one TTL".into()));
                    };
                    dollar_ttl = Some(parse_ttl(&arg.text).map_err(&at)?);
                }
                "$INCLUDE" => return Err(at("$INCLUDE is not supported".into())),
                other => return Err(at(format!("unknown directive {other}"))),
            }
            continue;
        }

        let mut rest = &toks[..];
        let owner = if entry.owner_blank {
            last_owner
                .clone()
                .ok_or_else(|| at("no owner name, and no record before to take it from".into()))?
        } else {
            rest = &rest[1..];
            if origin.is_none() && first.text != "@" && !is_absolute(&first.text) {
                return Err(at(format!(
                    "relative name {:?} with no $ORIGIN",
                    first.text
                )));
            }
            normalize(&parse_name(&first.text, origin.as_ref()).map_err(&at)?)
        };
        // RFC 1035 §5.1: "<domain-name> [<TTL>] [<class>] <type> <RDATA>", TTL and class in
        // either order.
        let mut ttl: Option<u32> = None;
        let mut class_seen = false;
        let rtype = loop {
            let Some((tok, tail)) = rest.split_first() else {
                return Err(at("missing record type".into()));
            };
            rest = tail;
            if tok.quoted {
                return Err(at(format!("expected a record type, found {:?}", tok.text)));
            }
            if tok.text.starts_with(|c: char| c.is_ascii_digit()) && ttl.is_none() {
                ttl = Some(parse_ttl(&tok.text).map_err(&at)?);
                continue;
            }
            let upper = tok.text.to_ascii_uppercase();
            if !class_seen && upper == "IN" {
                class_seen = true;
                continue;
            }
            if matches!(upper.as_str(), "CH" | "CS" | "HS" | "ANY" | "NONE")
                || upper.starts_with("CLASS")
            {
                return Err(at(format!("class {upper}: only IN is supported")));
            }
            break parse_type(&tok.text).map_err(&at)?;
        };
        let explicit = ttl;
        let Some(ttl) = explicit.or(dollar_ttl).or(last_ttl) else {
            return Err(at(
                "no TTL, and no $TTL or earlier TTL to take it from".into()
            ));
        };
        if explicit.is_some() {
            last_ttl = explicit;
        }
        last_owner = Some(owner.clone());

        if rtype == RecordType::SOA {
            if let Some((l, ..)) = &soa {
                return Err(at(format!(
                    "a second SOA record (the first is on line {l})"
                )));
            }
            let (params, serial) = parse_soa(rest, origin.as_ref(), ttl).map_err(&at)?;
            soa = Some((line, owner, ttl, params, serial));
            continue;
        }
        if !SUPPORTED_TYPES.contains(&rtype) {
            return Err(at(unsupported(rtype)));
        }
        let rdata = parse_rdata(rtype, rest, origin.as_ref()).map_err(&at)?;
        let key = (owner.clone(), rtype);
        match index.get(&key) {
            Some(&i) => {
                let set = &mut rrsets[i].2;
                if set.ttl != ttl {
                    return Err(at(format!(
                        "TTL {ttl} differs from the TTL {} of the same RRset on line {} (RFC 2181 §5.2)",
                        set.ttl, lines[i]
                    )));
                }
                if !set.records.contains(&rdata) {
                    set.records.push(rdata);
                }
            }
            None => {
                index.insert(key, rrsets.len());
                lines.push(line);
                rrsets.push((
                    owner,
                    rtype,
                    RrSet {
                        ttl,
                        records: vec![rdata],
                    },
                ));
            }
        }
    }

    let Some((soa_line, apex, soa_ttl, mut params, serial)) = soa else {
        return Err(err(None, "no SOA record".into()));
    };
    if let Some(zone) = &zone {
        if apex != *zone {
            return Err(err(
                Some(soa_line),
                format!("the SOA record is for {apex}, not for zone {zone}"),
            ));
        }
    }
    params.ttl = soa_ttl;
    let zf = ZoneFile {
        spec: ZoneSpec {
            apex,
            soa: params,
            serial,
            ns: Vec::new(),
            ns_ttl: DEFAULT_NS_TTL,
        },
        rrsets,
        lines,
        soa_line,
        file: file.to_string(),
    };
    // The zone model's checks (names in the zone, CNAME rules, TTL range, apex NS), placed at
    // their line, before anyone applies the file.
    ZoneSet::new()
        .load_zone(zf.spec.clone(), zf.rrsets.clone())
        .map_err(|e| zf.locate(&e))?;
    Ok(zf)
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

/// Writes `zone` as a master file: `$ORIGIN`, the SOA, then every RRset by owner in canonical
/// order. Owners and names are absolute, so the file means the same wherever it is read.
pub fn export(zone: &Zone) -> String {
    let apex = format_name(zone.apex());
    let soa = zone.soa();
    let mut out = format!(
        "; zone {apex} serial {serial}, exported by edgedns\n$ORIGIN {apex}\n",
        serial = zone.serial()
    );
    out.push_str(&format!(
        "{apex} {} IN SOA {} {} {} {} {} {} {}\n",
        soa.ttl,
        format_name(&soa.mname),
        format_name(&soa.rname),
        zone.serial(),
        soa.refresh,
        soa.retry,
        soa.expire,
        soa.minimum
    ));
    for (owner, rtype, ttl, records) in zone.records() {
        let owner = format_name(&owner);
        for r in records {
            out.push_str(&format!("{owner} {ttl} IN {rtype} {}\n", format_rdata(r)));
        }
    }
    out
}

impl ZoneFile {
    /// The file split for an import: a copy without the records (which go into the change), for
    /// placing errors, and the zone's spec and RRsets.
    pub fn into_parts(self) -> (ZoneFile, ZoneSpec, Vec<(Name, RecordType, RrSet)>) {
        let locator = ZoneFile {
            spec: self.spec.clone(),
            rrsets: Vec::new(),
            lines: self.lines,
            soa_line: self.soa_line,
            file: self.file,
        };
        (locator, self.spec, self.rrsets)
    }
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
            let body =
                format!("$ORIGIN example.net.\n$TTL 60\n@ SOA a b 1 2 3 4 5\n@ NS ns\n{text}");
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
}
