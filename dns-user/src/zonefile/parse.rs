//! Reading a master file into a [`ZoneFile`], checked by the zone model, with errors that name the
//! file and line.

use std::{collections::HashMap, fmt};

use hickory_proto::rr::{Name, RecordType};

use super::{
    lex::{lex, Entry, Lexer, Mode},
    presentation::{
        is_absolute, parse_name, parse_rdata, parse_soa, parse_ttl, parse_type, unsupported,
    },
};
use crate::{
    progress::Reporter,
    zone::{
        normalize, RrSet, SoaParams, Zone, ZoneError, ZoneSet, ZoneSpec, DEFAULT_NS_TTL,
        SUPPORTED_TYPES,
    },
};

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

/// A parsed, checked zone file: the zone's spec and RRsets, as a zone replacement takes them.
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
    parse_with(file, text, zone, &Reporter::silent())
}

/// [`parse`], reporting entries read to `progress` (stage "reading zone file").
pub fn parse_with(
    file: &str,
    text: &str,
    zone: Option<&Name>,
    progress: &Reporter,
) -> Result<ZoneFile, ZoneFileError> {
    let mut parser = Parser::new(file, zone);
    let entries = lex(text, Mode::File).map_err(|(l, e)| parser.err(Some(l), e))?;
    let mut progress = progress.start("reading zone file", Some(entries.len() as u64));
    for entry in entries {
        progress.add(1);
        parser.entry(entry)?;
    }
    progress.finish();
    parser.finish()
}

/// [`parse`] for text that arrives in pieces (an upload): each piece is lexed and parsed as
/// far as its last whole line, so the text is never held whole, and an error is found (with
/// its line) as soon as its line has arrived.
pub struct StreamParser {
    lexer: Lexer,
    parser: Parser,
    /// The end of the last piece, after its last `\n`: the start of a line still arriving.
    partial: Vec<u8>,
    /// Bytes taken before `partial`, to say where text that is not UTF-8 is.
    offset: usize,
}

impl StreamParser {
    /// As [`parse`]'s `file` and `zone`.
    pub fn new(file: &str, zone: Option<&Name>) -> Self {
        Self {
            lexer: Lexer::new(Mode::File),
            parser: Parser::new(file, zone),
            partial: Vec::new(),
            offset: 0,
        }
    }

    /// Takes the next piece of the text.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), ZoneFileError> {
        let Some(last_newline) = bytes.iter().rposition(|&b| b == b'\n') else {
            self.partial.extend_from_slice(bytes);
            return Ok(());
        };
        let (whole, rest) = bytes.split_at(last_newline + 1);
        if self.partial.is_empty() {
            self.lines(whole)?;
        } else {
            let mut joined = std::mem::take(&mut self.partial);
            joined.extend_from_slice(whole);
            self.lines(&joined)?;
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    /// The end of the text: the zone file, checked as [`parse`] checks it.
    pub fn finish(mut self) -> Result<ZoneFile, ZoneFileError> {
        let last = std::mem::take(&mut self.partial);
        self.lines(&last)?;
        let Self {
            lexer, mut parser, ..
        } = self;
        for entry in lexer.finish().map_err(|(l, e)| parser.err(Some(l), e))? {
            parser.entry(entry)?;
        }
        parser.finish()
    }

    /// Lexes and parses whole lines (the last one without its `\n` at the end of the text).
    fn lines(&mut self, bytes: &[u8]) -> Result<(), ZoneFileError> {
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            let text = std::str::from_utf8(line).map_err(|e| {
                let at = self.offset + e.valid_up_to();
                self.parser.err(
                    Some(self.lexer.line()),
                    format!("not UTF-8 (byte {at} of the file); write other bytes as \\DDD"),
                )
            })?;
            self.offset += line.len();
            self.lexer
                .push_line(text)
                .map_err(|(l, e)| self.parser.err(Some(l), e))?;
        }
        for entry in self.lexer.take_entries() {
            self.parser.entry(entry)?;
        }
        Ok(())
    }
}

/// The parser's state between entries: the directives in force, and what is read so far.
struct Parser {
    file: String,
    /// The zone the file must be for, if given.
    zone: Option<Name>,
    origin: Option<Name>,
    dollar_ttl: Option<u32>,
    last_ttl: Option<u32>,
    last_owner: Option<Name>,
    soa: Option<(usize, Name, u32, SoaParams, u32)>,
    rrsets: Vec<(Name, RecordType, RrSet)>,
    lines: Vec<usize>,
    index: HashMap<(Name, RecordType), usize>,
}

impl Parser {
    fn new(file: &str, zone: Option<&Name>) -> Self {
        let zone = zone.map(normalize);
        Self {
            file: file.to_string(),
            origin: zone.clone(),
            zone,
            dollar_ttl: None,
            last_ttl: None,
            last_owner: None,
            soa: None,
            rrsets: Vec::new(),
            lines: Vec::new(),
            index: HashMap::new(),
        }
    }

    fn err(&self, line: Option<usize>, reason: String) -> ZoneFileError {
        ZoneFileError {
            file: self.file.clone(),
            line,
            reason,
        }
    }

    /// One entry (a record or a directive).
    fn entry(&mut self, entry: Entry) -> Result<(), ZoneFileError> {
        let Self {
            file,
            origin,
            dollar_ttl,
            last_ttl,
            last_owner,
            soa,
            rrsets,
            lines,
            index,
            ..
        } = self;
        let line = entry.line;
        let at = |reason: String| ZoneFileError {
            file: file.clone(),
            line: Some(line),
            reason,
        };
        let toks = &entry.tokens;
        // "( )" alone makes an entry without tokens.
        let Some(first) = toks.first() else {
            return Ok(());
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
                    *origin = Some(normalize(
                        &parse_name(&arg.text, origin.as_ref()).map_err(&at)?,
                    ));
                }
                "$TTL" => {
                    let [arg] = args else {
                        return Err(at("$TTL takes one TTL".into()));
                    };
                    *dollar_ttl = Some(parse_ttl(&arg.text).map_err(&at)?);
                }
                "$INCLUDE" => return Err(at("$INCLUDE is not supported".into())),
                other => return Err(at(format!("unknown directive {other}"))),
            }
            return Ok(());
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
        let Some(ttl) = explicit.or(*dollar_ttl).or(*last_ttl) else {
            return Err(at(
                "no TTL, and no $TTL or earlier TTL to take it from".into()
            ));
        };
        if explicit.is_some() {
            *last_ttl = explicit;
        }
        *last_owner = Some(owner.clone());

        if rtype == RecordType::SOA {
            if let Some((l, ..)) = &*soa {
                return Err(at(format!(
                    "a second SOA record (the first is on line {l})"
                )));
            }
            let (params, serial) = parse_soa(rest, origin.as_ref(), ttl).map_err(&at)?;
            *soa = Some((line, owner, ttl, params, serial));
            return Ok(());
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
        Ok(())
    }

    /// The end of the file: the SOA found, the zone model's checks passed.
    fn finish(self) -> Result<ZoneFile, ZoneFileError> {
        let Self {
            file,
            zone,
            soa,
            rrsets,
            lines,
            ..
        } = self;
        let err = |line: Option<usize>, reason: String| ZoneFileError {
            file: file.clone(),
            line,
            reason,
        };
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
}

impl ZoneFile {
    /// The file split for an import: a copy without the records (which go into the change), for
    /// placing errors with [`ZoneFile::locate`], and the zone's spec and RRsets.
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
