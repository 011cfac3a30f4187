//! TSIG (RFC 8945): shared-secret signatures on DNS messages, for dynamic updates (RFC 2136) and,
//! later, zone transfers.
//!
//! - [`KeyRing::load`] reads keys as `tsig-keygen` writes them (BIND's `key "name" { ... };`) or
//!   as `keymgr -t` writes them (Knot's YAML `key:` list);
//! - [`verify`] checks the TSIG record that ends a request and says how to sign the response
//!   ([`ResponseTsig`]), or which error to answer with;
//! - [`ResponseTsig::sign`] / [`ResponseTsig::sign_all`] append the TSIG record to encoded
//!   responses (chained for the messages of a multi-message answer, RFC 8945 §5.3.1).
//!
//! hickory-proto has TSIG only behind its DNSSEC feature and without SHA-1 and SHA-224, which
//! knsupdate and older cert-manager set-ups use; the MAC is a few dozen lines on the `hmac` crate.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use hickory_proto::{
    rr::Name,
    serialize::binary::{BinDecodable, BinDecoder},
};
use hmac::{Hmac, Mac};

/// RR type of TSIG (RFC 8945 §4.2).
pub const TSIG_TYPE: u16 = 250;
/// CLASS ANY: the TSIG record's class (RFC 8945 §4.2).
const CLASS_ANY: u16 = 255;

/// TSIG error codes (RFC 8945 §3), carried in the TSIG record beside RCODE NOTAUTH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TsigError {
    BadSig = 16,
    BadKey = 17,
    BadTime = 18,
}

/// The HMAC algorithms of RFC 8945 §6 that we accept. HMAC-MD5 is left out on purpose: its
/// keys are refused at load (see [`KeyFileError`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    HmacSha1,
    HmacSha224,
    HmacSha256,
    HmacSha384,
    HmacSha512,
}

impl Algorithm {
    const ALL: [Algorithm; 5] = [
        Algorithm::HmacSha1,
        Algorithm::HmacSha224,
        Algorithm::HmacSha256,
        Algorithm::HmacSha384,
        Algorithm::HmacSha512,
    ];

    /// The name in key files and, with a final dot, on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HmacSha1 => "hmac-sha1",
            Algorithm::HmacSha224 => "hmac-sha224",
            Algorithm::HmacSha256 => "hmac-sha256",
            Algorithm::HmacSha384 => "hmac-sha384",
            Algorithm::HmacSha512 => "hmac-sha512",
        }
    }

    /// From a key file's or a record's algorithm name (any case, with or without the final dot).
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim_end_matches('.');
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// Length of the full MAC, in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Algorithm::HmacSha1 => 20,
            Algorithm::HmacSha224 => 28,
            Algorithm::HmacSha256 => 32,
            Algorithm::HmacSha384 => 48,
            Algorithm::HmacSha512 => 64,
        }
    }

    fn wire_name(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        out.push(self.name().len() as u8);
        out.extend_from_slice(self.name().as_bytes());
        out.push(0);
        out
    }

    /// HMAC of `parts`, concatenated, under `secret`.
    pub fn mac(self, secret: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(secret: &[u8], parts: &[&[u8]]) -> Vec<u8> {
            let mut m = <M as hmac::digest::KeyInit>::new_from_slice(secret)
                .expect("HMAC takes keys of any length");
            for p in parts {
                m.update(p);
            }
            m.finalize().into_bytes().to_vec()
        }
        match self {
            Algorithm::HmacSha1 => run::<Hmac<sha1::Sha1>>(secret, parts),
            Algorithm::HmacSha224 => run::<Hmac<sha2::Sha224>>(secret, parts),
            Algorithm::HmacSha256 => run::<Hmac<sha2::Sha256>>(secret, parts),
            Algorithm::HmacSha384 => run::<Hmac<sha2::Sha384>>(secret, parts),
            Algorithm::HmacSha512 => run::<Hmac<sha2::Sha512>>(secret, parts),
        }
    }

    /// Whether `mac` (possibly truncated, RFC 8945 §5.2.2.1) is the HMAC of `parts`, compared in
    /// constant time.
    fn verify(self, secret: &[u8], parts: &[&[u8]], mac: &[u8]) -> bool {
        fn run<M: Mac + hmac::digest::KeyInit>(secret: &[u8], parts: &[&[u8]], mac: &[u8]) -> bool {
            let mut m = <M as hmac::digest::KeyInit>::new_from_slice(secret)
                .expect("HMAC takes keys of any length");
            for p in parts {
                m.update(p);
            }
            m.verify_truncated_left(mac).is_ok()
        }
        match self {
            Algorithm::HmacSha1 => run::<Hmac<sha1::Sha1>>(secret, parts, mac),
            Algorithm::HmacSha224 => run::<Hmac<sha2::Sha224>>(secret, parts, mac),
            Algorithm::HmacSha256 => run::<Hmac<sha2::Sha256>>(secret, parts, mac),
            Algorithm::HmacSha384 => run::<Hmac<sha2::Sha384>>(secret, parts, mac),
            Algorithm::HmacSha512 => run::<Hmac<sha2::Sha512>>(secret, parts, mac),
        }
    }
}

/// One TSIG key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key {
    /// Lowercase, absolute.
    pub name: Name,
    pub algorithm: Algorithm,
    secret: Vec<u8>,
    /// The zones the key may update and transfer (`zone "apex";` in its key statement,
    /// lowercase); empty: every zone.
    pub zones: Vec<Name>,
    /// What the key may do (`allow "update";`, `allow "transfer";` in its key statement): both
    /// unless the statement names one.
    pub ops: KeyOps,
}

/// What a key may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyOps {
    pub update: bool,
    pub transfer: bool,
}

impl Default for KeyOps {
    fn default() -> Self {
        Self {
            update: true,
            transfer: true,
        }
    }
}

impl std::fmt::Debug for Key {
    // Never the secret: keys end up in logs through the config.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .field("algorithm", &self.algorithm)
            .field("zones", &self.zones)
            .field("ops", &self.ops)
            .finish_non_exhaustive()
    }
}

impl Key {
    /// Whether the key may update the zone at `apex` (lowercase).
    pub fn may_update(&self, apex: &Name) -> bool {
        self.ops.update && self.covers(apex)
    }

    /// Whether the key may transfer the zone at `apex` (lowercase).
    pub fn may_transfer(&self, apex: &Name) -> bool {
        self.ops.transfer && self.covers(apex)
    }

    fn covers(&self, apex: &Name) -> bool {
        self.zones.is_empty() || self.zones.iter().any(|z| z == apex)
    }

    pub fn new(name: &str, algorithm: Algorithm, secret: Vec<u8>) -> Result<Self, String> {
        let name = Name::from_ascii(name)
            .map_err(|e| format!("bad key name {name:?}: {e}"))?
            .to_lowercase();
        let mut name = name;
        name.set_fqdn(true);
        if secret.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(Self {
            name,
            algorithm,
            secret,
            zones: Vec::new(),
            ops: KeyOps::default(),
        })
    }
}

/// Why a key file was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("cannot read the TSIG key file {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {reason}")]
    Syntax {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// The TSIG keys the server knows, by name.
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    keys: HashMap<Vec<u8>, Arc<Key>>,
}

impl KeyRing {
    pub fn new(keys: impl IntoIterator<Item = Key>) -> Self {
        Self {
            keys: keys
                .into_iter()
                .map(|k| (wire(&k.name), Arc::new(k)))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn get(&self, name: &Name) -> Option<&Arc<Key>> {
        self.keys.get(&wire(name))
    }

    /// Reads a key file (see [`KeyRing::parse`]).
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, path)
    }

    /// Parses keys as `tsig-keygen` writes them, several per file:
    ///
    /// ```text
    /// key "name" { algorithm hmac-sha256; secret "base64"; };
    /// ```
    ///
    /// with `#`, `//` and `/* */` comments, and optionally `zone "apex";` settings (repeatable)
    /// that limit the zones the key may update and transfer, and `allow "update";` or
    /// `allow "transfer";` settings that limit it to that use; or as `keymgr -t` writes them (`key:` then
    /// `- id:`, `algorithm:`, `secret:`). Errors name `path` and the line.
    pub fn parse(text: &str, path: &Path) -> Result<Self, KeyFileError> {
        let err = |line: usize, reason: String| KeyFileError::Syntax {
            path: path.to_owned(),
            line,
            reason,
        };
        let is_yaml = text.lines().any(|l| l.trim_end() == "key:");
        let parsed = if is_yaml {
            parse_yaml(text)
        } else {
            parse_bind(text)
        }
        .map_err(|(line, reason)| err(line, reason))?;
        let mut ring = KeyRing::default();
        for Parsed {
            line,
            name,
            algorithm: (alg_line, algorithm),
            secret: (secret_line, secret),
            zones,
            allow,
        } in parsed
        {
            let algorithm = match Algorithm::from_name(&algorithm) {
                Some(a) => a,
                None if algorithm.to_ascii_lowercase().starts_with("hmac-md5") => {
                    return Err(err(
                        alg_line,
                        format!(
                            "key {name:?}: hmac-md5 is not accepted (MD5 is broken); generate \
                             an hmac-sha256 key (`tsig-keygen -a hmac-sha256 {name}`) and set the \
                             client to HMAC-SHA256"
                        ),
                    ))
                }
                None => {
                    return Err(err(
                        alg_line,
                        format!(
                            "key {name:?}: unknown algorithm {algorithm:?} (hmac-sha1, \
                             hmac-sha224, hmac-sha256, hmac-sha384 or hmac-sha512)"
                        ),
                    ))
                }
            };
            let secret = data_encoding::BASE64
                .decode(secret.as_bytes())
                .map_err(|e| {
                    err(
                        secret_line,
                        format!("key {name:?}: the secret is not base64: {e}"),
                    )
                })?;
            let mut key = Key::new(&name, algorithm, secret)
                .map_err(|e| err(line, format!("key {name:?}: {e}")))?;
            for (zone_line, zone) in zones {
                let apex = Name::from_ascii(&zone)
                    .map_err(|e| err(zone_line, format!("key {name:?}: bad zone {zone:?}: {e}")))?;
                key.zones.push(crate::zone::normalize(&apex));
            }
            if !allow.is_empty() {
                key.ops = KeyOps {
                    update: false,
                    transfer: false,
                };
                for (allow_line, what) in allow {
                    match what.as_str() {
                        "update" => key.ops.update = true,
                        "transfer" => key.ops.transfer = true,
                        other => {
                            return Err(err(
                                allow_line,
                                format!("key {name:?}: allow {other:?}: `update` or `transfer`"),
                            ))
                        }
                    }
                }
            }
            let wire_name = wire(&key.name);
            if ring.keys.contains_key(&wire_name) {
                return Err(err(line, format!("key {name:?} is defined twice")));
            }
            ring.keys.insert(wire_name, Arc::new(key));
        }
        if ring.is_empty() {
            return Err(err(1, "no key in the file".into()));
        }
        Ok(ring)
    }
}

/// A key as written in a file: each value with its line.
struct Parsed {
    line: usize,
    name: String,
    algorithm: (usize, String),
    secret: (usize, String),
    zones: Vec<(usize, String)>,
    /// `allow "update";` / `allow "transfer";` settings.
    allow: Vec<(usize, String)>,
}

type ParsedKeys = Vec<Parsed>;

/// BIND's syntax: a token stream of words, strings and `{ } ;`.
fn parse_bind(text: &str) -> Result<ParsedKeys, (usize, String)> {
    let tokens = tokenize(text)?;
    let mut out = Vec::new();
    let mut i = 0;
    let at = |i: usize| tokens.get(i).cloned();
    let last_line = tokens.last().map_or(1, |t| t.0);
    let expect = |i: usize, what: &str| -> Result<(usize, String), (usize, String)> {
        at(i).ok_or_else(|| {
            (
                last_line,
                format!("unexpected end of file, expected {what}"),
            )
        })
    };
    while i < tokens.len() {
        let (line, word) = expect(i, "key")?;
        if word != "key" {
            return Err((line, format!("expected `key`, found {word:?}")));
        }
        let (_, name) = expect(i + 1, "the key name")?;
        let name = name.trim_matches('"').to_owned();
        let (l, open) = expect(i + 2, "`{`")?;
        if open != "{" {
            return Err((
                l,
                format!("expected `{{` after the key name, found {open:?}"),
            ));
        }
        i += 3;
        let (mut algorithm, mut secret, mut zones, mut allow) =
            (None, None, Vec::new(), Vec::new());
        loop {
            let (l, word) = expect(i, "`}`")?;
            if word == "}" {
                i += 1;
                break;
            }
            let (vl, value) = expect(i + 1, "a value")?;
            let (sl, semi) = expect(i + 2, "`;`")?;
            if semi != ";" {
                return Err((sl, format!("expected `;` after {word} {value}")));
            }
            let value = value.trim_matches('"').to_owned();
            match word.as_str() {
                "algorithm" => algorithm = Some((vl, value)),
                "secret" => secret = Some((vl, value)),
                "zone" => zones.push((vl, value)),
                "allow" => allow.push((vl, value)),
                other => return Err((l, format!("unknown key setting {other:?}"))),
            }
            i += 3;
        }
        if at(i).is_some_and(|t| t.1 == ";") {
            i += 1;
        } else {
            return Err((line, format!("key {name:?}: expected `;` after `}}`")));
        }
        let algorithm = algorithm.ok_or((line, format!("key {name:?} has no algorithm")))?;
        let secret = secret.ok_or((line, format!("key {name:?} has no secret")))?;
        out.push(Parsed {
            line,
            name,
            algorithm,
            secret,
            zones,
            allow,
        });
    }
    Ok(out)
}

/// Words, quoted strings and the punctuation `{ } ;`, each with its line, comments dropped.
fn tokenize(text: &str) -> Result<Vec<(usize, String)>, (usize, String)> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            c if c.is_whitespace() => {}
            '#' => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                let start = line;
                chars.next();
                let mut prev = ' ';
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                    }
                    if prev == '*' && c == '/' {
                        closed = true;
                        break;
                    }
                    prev = c;
                }
                if !closed {
                    return Err((start, "unterminated /* comment".into()));
                }
            }
            '{' | '}' | ';' => out.push((line, c.to_string())),
            '"' => {
                let start = line;
                let mut s = String::from('"');
                let mut closed = false;
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                    }
                    s.push(c);
                    if c == '"' {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return Err((start, "unterminated string".into()));
                }
                out.push((start, s));
            }
            c => {
                let mut s = String::from(c);
                while let Some(&n) = chars.peek() {
                    if n.is_whitespace() || matches!(n, '{' | '}' | ';' | '"' | '#') {
                        break;
                    }
                    s.push(n);
                    chars.next();
                }
                out.push((line, s));
            }
        }
    }
    Ok(out)
}

/// Knot's syntax, as `keymgr -t` prints it: `key:` then items of `id`, `algorithm`, `secret`.
fn parse_yaml(text: &str) -> Result<ParsedKeys, (usize, String)> {
    let mut out: ParsedKeys = Vec::new();
    let mut in_keys = false;
    /// A key being read: its first line, id, algorithm, secret.
    type Partial = (
        usize,
        Option<String>,
        Option<(usize, String)>,
        Option<(usize, String)>,
    );
    let mut current: Option<Partial> = None;
    let finish = |cur: Option<Partial>, out: &mut ParsedKeys| -> Result<(), (usize, String)> {
        if let Some((line, id, alg, secret)) = cur {
            let id = id.ok_or((line, "key without `id`".to_owned()))?;
            let alg = alg.ok_or((line, format!("key {id:?} has no algorithm")))?;
            let secret = secret.ok_or((line, format!("key {id:?} has no secret")))?;
            out.push(Parsed {
                line,
                name: id,
                algorithm: alg,
                secret,
                zones: Vec::new(),
                allow: Vec::new(),
            });
        }
        Ok(())
    };
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let l = raw.split('#').next().unwrap_or("").trim_end();
        if l.trim().is_empty() {
            continue;
        }
        if !l.starts_with(' ') && !l.starts_with('-') {
            finish(current.take(), &mut out)?;
            in_keys = l == "key:";
            continue;
        }
        if !in_keys {
            continue;
        }
        let mut item = l.trim_start();
        if let Some(rest) = item.strip_prefix("- ") {
            finish(current.take(), &mut out)?;
            current = Some((line, None, None, None));
            item = rest.trim_start();
        }
        let Some(cur) = current.as_mut() else {
            return Err((line, "expected `- id: NAME`".into()));
        };
        let (k, v) = item
            .split_once(':')
            .ok_or((line, format!("expected `name: value`, found {item:?}")))?;
        let v = v.trim().trim_matches('"').to_owned();
        match k.trim() {
            "id" => cur.1 = Some(v),
            "algorithm" => cur.2 = Some((line, v)),
            "secret" => cur.3 = Some((line, v)),
            other => return Err((line, format!("unknown key setting {other:?}"))),
        }
    }
    finish(current.take(), &mut out)?;
    Ok(out)
}

/// A name in canonical wire form (RFC 4034 §6.2): lowercase, uncompressed.
pub fn wire(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    out.push(0);
    out
}

/// Seconds since the epoch, as TSIG's Time Signed counts them.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The TSIG record that ends a message, as read.
#[derive(Clone, Debug)]
pub struct TsigRecord {
    /// Where the record starts in the message: what precedes it is what was signed.
    pub start: usize,
    pub key_name: Name,
    pub algorithm: Name,
    pub time_signed: u64,
    pub fudge: u16,
    pub mac: Vec<u8>,
    pub original_id: u16,
    pub error: u16,
    pub other: Vec<u8>,
}

impl TsigRecord {
    /// Reads the TSIG record at `start`, which must end the message.
    pub fn read(msg: &[u8], start: usize) -> Result<Self, String> {
        let mut d = BinDecoder::new(msg);
        d.read_slice(start).map_err(|e| e.to_string())?;
        let e = |e: hickory_proto::ProtoError| format!("TSIG record: {e}");
        let de = |e: hickory_proto::serialize::binary::DecodeError| format!("TSIG record: {e}");
        let key_name = Name::read(&mut d).map_err(e)?;
        let rtype = d.read_u16().map_err(de)?.unverified();
        let class = d.read_u16().map_err(de)?.unverified();
        let ttl = d.read_u32().map_err(de)?.unverified();
        let rdlen = usize::from(d.read_u16().map_err(de)?.unverified());
        if rtype != TSIG_TYPE {
            return Err("not a TSIG record".into());
        }
        // RFC 8945 §4.2: CLASS "MUST be ANY", TTL "MUST be 0".
        if class != CLASS_ANY || ttl != 0 {
            return Err("TSIG record with a class other than ANY or a TTL other than 0".into());
        }
        let rdata_start = d.index();
        let algorithm = Name::read(&mut d).map_err(e)?;
        let hi = u64::from(d.read_u16().map_err(de)?.unverified());
        let lo = u64::from(d.read_u32().map_err(de)?.unverified());
        let fudge = d.read_u16().map_err(de)?.unverified();
        let mac_len = usize::from(d.read_u16().map_err(de)?.unverified());
        let mac = d.read_slice(mac_len).map_err(de)?.unverified().to_vec();
        let original_id = d.read_u16().map_err(de)?.unverified();
        let error = d.read_u16().map_err(de)?.unverified();
        let other_len = usize::from(d.read_u16().map_err(de)?.unverified());
        let other = d.read_slice(other_len).map_err(de)?.unverified().to_vec();
        if d.index() - rdata_start != rdlen {
            return Err("TSIG RDATA length does not match its fields".into());
        }
        if d.index() != msg.len() {
            return Err("data after the TSIG record".into());
        }
        Ok(Self {
            start,
            key_name,
            algorithm,
            time_signed: (hi << 32) | lo,
            fudge,
            mac,
            original_id,
            error,
            other,
        })
    }
}

/// Where the TSIG record of `msg` starts, if it has one: it must be the last record of the
/// additional section (RFC 8945 §5.1: "If a TSIG record is present in any other position, the
/// DNS message is dropped and a response with RCODE 1 (FORMERR) MUST be returned").
pub fn locate(msg: &[u8]) -> Result<Option<usize>, String> {
    if msg.len() < 12 {
        return Err("shorter than a header".into());
    }
    let count = |at: usize| u32::from(u16::from_be_bytes([msg[at], msg[at + 1]]));
    let records = count(6) + count(8) + count(10);
    let mut d = BinDecoder::new(msg);
    let de = |e: hickory_proto::serialize::binary::DecodeError| e.to_string();
    d.read_slice(12).map_err(de)?;
    for _ in 0..count(4) {
        Name::read(&mut d).map_err(|e| e.to_string())?;
        d.read_slice(4).map_err(de)?;
    }
    let mut found = None;
    for i in 0..records {
        let start = d.index();
        Name::read(&mut d).map_err(|e| e.to_string())?;
        let rtype = d.read_u16().map_err(de)?.unverified();
        d.read_slice(6).map_err(de)?;
        let len = usize::from(d.read_u16().map_err(de)?.unverified());
        d.read_slice(len).map_err(de)?;
        if rtype == TSIG_TYPE {
            if i + 1 != records || count(10) == 0 {
                return Err("TSIG record that is not the last additional record".into());
            }
            found = Some(start);
        }
    }
    Ok(found)
}

/// Why a signed request is not answered normally.
#[derive(Debug)]
pub enum Rejection {
    /// FORMERR (a broken TSIG record, a MAC of a length RFC 8945 §5.2.2.1 forbids).
    FormErr(String),
    /// RCODE NOTAUTH with this TSIG record on the response (unsigned for BADKEY and BADSIG,
    /// signed for BADTIME: RFC 8945 §5.3.2).
    NotAuth(Box<ResponseTsig>),
}

/// The TSIG record a response gets, and how it is signed.
#[derive(Clone, Debug)]
pub struct ResponseTsig {
    key_name: Name,
    /// As the request named it (an unknown algorithm is echoed in the BADKEY answer).
    algorithm: Vec<u8>,
    /// `None`: an unsigned error (MAC size 0).
    key: Option<Arc<Key>>,
    /// The request's MAC, as received (truncated or not): it starts the response's MAC input.
    request_mac: Vec<u8>,
    original_id: u16,
    fudge: u16,
    /// Time Signed: the request's for errors (so the client can read them), now otherwise.
    time_signed: Option<u64>,
    pub error: Option<TsigError>,
    other: Vec<u8>,
}

impl ResponseTsig {
    /// The key the request was signed with (`None` for BADKEY/BADSIG errors).
    pub fn key(&self) -> Option<&Arc<Key>> {
        self.key.as_ref()
    }

    /// At most how many bytes the TSIG record adds to a message: room a size-limited response
    /// must keep.
    pub fn size(&self) -> usize {
        let mac = self.key.as_ref().map_or(0, |k| k.algorithm.output_len());
        wire(&self.key_name).len() + 10 + self.algorithm.len() + 16 + mac + self.other.len()
    }

    /// Signs one response: appends the TSIG record and counts it in ARCOUNT.
    pub fn sign(&self, msg: &mut Vec<u8>, now: u64) {
        let prefix = mac_prefix(&self.request_mac);
        self.append(msg, now, &[&prefix], false);
    }

    /// Signs every message of a multi-message answer (RFC 8945 §5.3.1): the first as a response,
    /// each next one over the previous MAC, itself and the timers only.
    pub fn sign_all(&self, msgs: &mut [Vec<u8>], now: u64) {
        let mut prev = self.request_mac.clone();
        for (i, msg) in msgs.iter_mut().enumerate() {
            let prefix = mac_prefix(&prev);
            prev = self.append(msg, now, &[&prefix], i > 0);
        }
    }

    /// Appends the TSIG record, its MAC over `before` + the message + the variables (or only
    /// the timers); returns the MAC.
    fn append(&self, msg: &mut Vec<u8>, now: u64, before: &[&[u8]], timers_only: bool) -> Vec<u8> {
        let time = self.time_signed.unwrap_or(now);
        let error = self.error.map_or(0, |e| e as u16);
        let mac = match &self.key {
            None => Vec::new(),
            Some(key) => {
                let mut head = msg.get(..12).map(<[u8]>::to_vec).unwrap_or_default();
                if head.len() == 12 {
                    head[..2].copy_from_slice(&self.original_id.to_be_bytes());
                }
                let body = msg.get(12..).unwrap_or_default();
                let vars = if timers_only {
                    timers(time, self.fudge)
                } else {
                    variables(
                        &self.key_name,
                        &self.algorithm,
                        time,
                        self.fudge,
                        error,
                        &self.other,
                    )
                };
                let mut parts: Vec<&[u8]> = before.to_vec();
                parts.extend([head.as_slice(), body, vars.as_slice()]);
                key.algorithm.mac(&key.secret, &parts)
            }
        };
        let mut rdata = Vec::with_capacity(self.algorithm.len() + 16 + mac.len());
        rdata.extend_from_slice(&self.algorithm);
        rdata.extend_from_slice(&time_bytes(time));
        rdata.extend_from_slice(&self.fudge.to_be_bytes());
        rdata.extend_from_slice(&(mac.len() as u16).to_be_bytes());
        rdata.extend_from_slice(&mac);
        rdata.extend_from_slice(&self.original_id.to_be_bytes());
        rdata.extend_from_slice(&error.to_be_bytes());
        rdata.extend_from_slice(&(self.other.len() as u16).to_be_bytes());
        rdata.extend_from_slice(&self.other);
        msg.extend_from_slice(&wire(&self.key_name));
        msg.extend_from_slice(&TSIG_TYPE.to_be_bytes());
        msg.extend_from_slice(&CLASS_ANY.to_be_bytes());
        msg.extend_from_slice(&0u32.to_be_bytes());
        msg.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        msg.extend_from_slice(&rdata);
        if msg.len() >= 12 {
            let ar = u16::from_be_bytes([msg[10], msg[11]]).wrapping_add(1);
            msg[10..12].copy_from_slice(&ar.to_be_bytes());
        }
        mac
    }
}

fn mac_prefix(mac: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(mac.len() + 2);
    out.extend_from_slice(&(mac.len() as u16).to_be_bytes());
    out.extend_from_slice(mac);
    out
}

fn time_bytes(t: u64) -> [u8; 6] {
    let b = t.to_be_bytes();
    [b[2], b[3], b[4], b[5], b[6], b[7]]
}

fn timers(time: u64, fudge: u16) -> Vec<u8> {
    let mut v = time_bytes(time).to_vec();
    v.extend_from_slice(&fudge.to_be_bytes());
    v
}

/// The TSIG variables of RFC 8945 §4.3.3, in the order they are digested.
fn variables(
    key_name: &Name,
    algorithm: &[u8],
    time: u64,
    fudge: u16,
    error: u16,
    other: &[u8],
) -> Vec<u8> {
    let mut v = wire(key_name);
    v.extend_from_slice(&CLASS_ANY.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend(algorithm.iter().map(u8::to_ascii_lowercase));
    v.extend_from_slice(&timers(time, fudge));
    v.extend_from_slice(&error.to_be_bytes());
    v.extend_from_slice(&(other.len() as u16).to_be_bytes());
    v.extend_from_slice(other);
    v
}

/// Signs a request with `key` (clients, and tests that act as one): appends the TSIG record.
/// Returns the MAC, which the response's MAC covers.
pub fn sign_request(msg: &mut Vec<u8>, key: &Key, time: u64, fudge: u16) -> Vec<u8> {
    let original_id = msg.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    let t = ResponseTsig {
        key_name: key.name.clone(),
        algorithm: key.algorithm.wire_name(),
        key: Some(Arc::new(key.clone())),
        request_mac: Vec::new(),
        original_id,
        fudge,
        time_signed: Some(time),
        error: None,
        other: Vec::new(),
    };
    t.append(msg, time, &[], false)
}

/// Checks the TSIG record at `start` that ends request `msg` (RFC 8945 §5.2), at time `now`:
/// the key, then the MAC, then the time. `Ok`: how to sign the response.
pub fn verify(
    keys: &KeyRing,
    msg: &[u8],
    start: usize,
    now: u64,
) -> Result<ResponseTsig, Rejection> {
    let rec = TsigRecord::read(msg, start).map_err(Rejection::FormErr)?;
    let algorithm_wire = {
        let mut w = Vec::new();
        for label in rec.algorithm.iter() {
            w.push(label.len() as u8);
            w.extend_from_slice(label);
        }
        w.push(0);
        w
    };
    let mut reply = ResponseTsig {
        key_name: rec.key_name.clone(),
        algorithm: algorithm_wire,
        key: None,
        request_mac: Vec::new(),
        original_id: rec.original_id,
        fudge: rec.fudge,
        time_signed: Some(rec.time_signed),
        error: None,
        other: Vec::new(),
    };
    // §5.2.1: "If a non-forwarding server does not recognize the key or algorithm used by the
    // client [...] the server MUST generate an error response with RCODE 9 (NOTAUTH) and TSIG
    // ERROR 17 (BADKEY)."
    let key = match keys.get(&rec.key_name) {
        Some(k) if Algorithm::from_name(&rec.algorithm.to_ascii()) == Some(k.algorithm) => k,
        _ => {
            reply.error = Some(TsigError::BadKey);
            return Err(Rejection::NotAuth(Box::new(reply)));
        }
    };
    // §5.2.2.1: a MAC longer than the hash, or shorter than the larger of 10 octets and half
    // the hash, "MUST cause the DNS message to be dropped and RCODE 1 (FORMERR) to be returned".
    let full = key.algorithm.output_len();
    if rec.mac.len() > full || rec.mac.len() < 10.max(full / 2) {
        return Err(Rejection::FormErr(format!(
            "TSIG MAC of {} bytes for {}",
            rec.mac.len(),
            key.algorithm.name()
        )));
    }
    let mut head = msg[..12].to_vec();
    head[..2].copy_from_slice(&rec.original_id.to_be_bytes());
    let ar = u16::from_be_bytes([head[10], head[11]]).wrapping_sub(1);
    head[10..12].copy_from_slice(&ar.to_be_bytes());
    let vars = variables(
        &rec.key_name,
        &reply.algorithm,
        rec.time_signed,
        rec.fudge,
        rec.error,
        &rec.other,
    );
    let signed = [head.as_slice(), &msg[12..start], vars.as_slice()];
    // §5.2.2: "If the MAC fails to verify, the server MUST generate an error response [...]
    // with RCODE 9 (NOTAUTH) and TSIG ERROR 16 (BADSIG)", unsigned (§5.3.2).
    if !key.algorithm.verify(&key.secret, &signed, &rec.mac) {
        reply.error = Some(TsigError::BadSig);
        return Err(Rejection::NotAuth(Box::new(reply)));
    }
    reply.key = Some(Arc::clone(key));
    reply.request_mac = rec.mac;
    // §5.2.3: outside Time Signed ± Fudge, NOTAUTH/BADTIME, signed; the response's Other Data
    // carries our clock so that the client can tell how far off it is (BIND and Knot do this,
    // and keep the request's Time Signed so the client can check the MAC).
    if now.abs_diff(rec.time_signed) > u64::from(rec.fudge) {
        reply.error = Some(TsigError::BadTime);
        reply.other = time_bytes(now).to_vec();
        return Err(Rejection::NotAuth(Box::new(reply)));
    }
    reply.time_signed = None;
    Ok(reply)
}

#[cfg(test)]
mod tests;
