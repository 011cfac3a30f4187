//! DNS messages at the byte level: a query builder that can say anything (mixed case, any flags
//! and counts, any OPT), which the tests, the in-process clients and the benchmark share, and the
//! comparison of two responses that the differential tests use.
//!
//! Comparison rule: the 12 header bytes identical (ID, flags, RCODE, counts); the
//! question identical byte for byte and equal to the query's; every record of every section
//! identical in order, type, class, TTL and RDATA, owner names and names inside RDATA compared the
//! DNS way (ASCII case-insensitively); the OPT record present in both or neither, with the same
//! payload size, version, extended RCODE, flags (DO) and options. Compression may differ.

use hickory_proto::{
    op::Message,
    rr::{Name, RData, Record, RecordType},
};

pub const TYPE_A: u16 = 1;
pub const TYPE_NS: u16 = 2;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_MX: u16 = 15;
pub const TYPE_TXT: u16 = 16;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;
pub const CLASS_CH: u16 = 3;

/// Header flag bits (the second 16-bit word).
pub const FLAG_QR: u16 = 0x8000;
pub const FLAG_AA: u16 = 0x0400;
pub const FLAG_TC: u16 = 0x0200;
pub const FLAG_RD: u16 = 0x0100;
pub const FLAG_AD: u16 = 0x0020;
pub const FLAG_CD: u16 = 0x0010;
pub const OPCODE_NOTIFY: u16 = 4 << 11;
pub const OPCODE_UPDATE: u16 = 5 << 11;

/// The client's OPT record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdnsSpec {
    pub payload: u16,
    pub dnssec_ok: bool,
    pub version: u8,
    /// `(code, data)`, written in order, well framed.
    pub options: Vec<(u16, Vec<u8>)>,
}

impl EdnsSpec {
    pub fn new(payload: u16, dnssec_ok: bool) -> Self {
        Self {
            payload,
            dnssec_ok,
            version: 0,
            options: Vec::new(),
        }
    }

    /// The OPT RR's bytes.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut rdata = Vec::new();
        for (code, data) in &self.options {
            rdata.extend_from_slice(&code.to_be_bytes());
            rdata.extend_from_slice(&(data.len() as u16).to_be_bytes());
            rdata.extend_from_slice(data);
        }
        opt_rr(self.payload, self.version, self.dnssec_ok, &rdata)
    }
}

/// An OPT RR with raw RDATA (which may be badly framed on purpose).
pub fn opt_rr(payload: u16, version: u8, dnssec_ok: bool, rdata: &[u8]) -> Vec<u8> {
    let mut o = vec![0];
    o.extend_from_slice(&TYPE_OPT.to_be_bytes());
    o.extend_from_slice(&payload.to_be_bytes());
    o.push(0); // extended RCODE
    o.push(version);
    o.push(if dnssec_ok { 0x80 } else { 0 });
    o.push(0);
    o.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    o.extend_from_slice(rdata);
    o
}

/// A query with one question and an optional OPT record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuerySpec {
    pub id: u16,
    /// The whole flags word (QR, opcode, AA, TC, RD, RA, Z, AD, CD, RCODE).
    pub flags: u16,
    /// Wire-form question name, case as it is to be sent.
    pub qname: Vec<u8>,
    pub qtype: u16,
    pub qclass: u16,
    pub edns: Option<EdnsSpec>,
}

impl QuerySpec {
    pub fn new(id: u16, name: &str, qtype: u16) -> Self {
        Self {
            id,
            flags: FLAG_RD,
            qname: wire_name(name),
            qtype,
            qclass: CLASS_IN,
            edns: None,
        }
    }

    /// The whole flags word instead of RD alone (0: a plain query with RD off).
    pub fn with_flags(mut self, flags: u16) -> Self {
        self.flags = flags;
        self
    }

    pub fn with_edns(mut self, payload: u16, dnssec_ok: bool) -> Self {
        self.edns = Some(EdnsSpec::new(payload, dnssec_ok));
        self
    }

    /// The question section's bytes.
    pub fn question(&self) -> Vec<u8> {
        let mut q = self.qname.clone();
        q.extend_from_slice(&self.qtype.to_be_bytes());
        q.extend_from_slice(&self.qclass.to_be_bytes());
        q
    }

    pub fn to_wire(&self) -> Vec<u8> {
        let mut m = header(self.id, self.flags, 1, 0, 0, u16::from(self.edns.is_some()));
        m.extend_from_slice(&self.question());
        if let Some(e) = &self.edns {
            m.extend_from_slice(&e.to_wire());
        }
        m
    }
}

/// A DNS header.
pub fn header(id: u16, flags: u16, qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    [id, flags, qd, an, ns, ar]
        .iter()
        .flat_map(|w| w.to_be_bytes())
        .collect()
}

/// `"Www.Example.COM."` (trailing dot optional) to wire form, case kept. Panics on labels over 63
/// bytes; a name over 255 bytes is allowed (hostile tests need them).
pub fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name
        .trim_end_matches('.')
        .split('.')
        .filter(|l| !l.is_empty())
    {
        assert!(label.len() <= 63, "label too long: {label}");
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out
}

/// Wire-form name (uncompressed) back to text, for messages.
pub fn name_text(wire: &[u8]) -> String {
    let mut s = String::new();
    let mut pos = 0;
    while let Some(&l) = wire.get(pos) {
        if l == 0 {
            break;
        }
        let l = usize::from(l);
        let end = (pos + 1 + l).min(wire.len());
        for b in &wire[pos + 1..end] {
            if b.is_ascii_graphic() && *b != b'.' && *b != b'\\' {
                s.push(char::from(*b));
            } else {
                s.push_str(&format!("\\{b:03}"));
            }
        }
        s.push('.');
        pos += 1 + l;
    }
    if s.is_empty() {
        s.push('.');
    }
    s
}

/// The length of the uncompressed name at `off` in `msg` (root label included), if it is one.
pub fn plain_name_len(msg: &[u8], off: usize) -> Option<usize> {
    let mut pos = off;
    loop {
        let l = usize::from(*msg.get(pos)?);
        if l == 0 {
            return Some(pos + 1 - off);
        }
        if l > 63 {
            return None;
        }
        pos += 1 + l;
    }
}

/// Wire length of a name, uncompressed.
pub fn name_wire_len(n: &Name) -> usize {
    n.iter().map(|l| l.len() + 1).sum::<usize>() + 1
}

/// The bytes of the first question of `msg` (uncompressed name, type, class).
pub fn question_bytes(msg: &[u8]) -> Option<&[u8]> {
    let n = plain_name_len(msg, 12)?;
    msg.get(12..12 + n + 4)
}

fn rec_text(r: &Record) -> String {
    format!(
        "{} {} {} {} {}",
        r.name(),
        r.ttl(),
        r.dns_class(),
        r.record_type(),
        r.data()
    )
}

fn section_diff(what: &str, a: &[Record], b: &[Record], errs: &mut Vec<String>) {
    if a.len() != b.len() {
        errs.push(format!(
            "{what}: {} vs {} records\n  xdp: {:?}\n  fallback: {:?}",
            a.len(),
            b.len(),
            a.iter().map(rec_text).collect::<Vec<_>>(),
            b.iter().map(rec_text).collect::<Vec<_>>()
        ));
        return;
    }
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        // Name equality in hickory is case-insensitive, RData equality compares names the same way.
        let same = x.name() == y.name()
            && x.record_type() == y.record_type()
            && x.dns_class() == y.dns_class()
            && x.ttl() == y.ttl()
            && x.data() == y.data();
        if !same {
            errs.push(format!(
                "{what}[{i}]: xdp `{}` vs fallback `{}`",
                rec_text(x),
                rec_text(y)
            ));
        }
    }
}

/// Compares the fast path's response `xdp` with the fallback's `fallback` to the query `query`
/// (see the module docs). `Err` lists every difference.
pub fn compare(query: &[u8], xdp: &[u8], fallback: &[u8]) -> Result<(), String> {
    let mut errs = Vec::new();
    if xdp.len() < 12 || fallback.len() < 12 {
        return Err(format!(
            "short message: xdp {} bytes, fallback {} bytes",
            xdp.len(),
            fallback.len()
        ));
    }
    if xdp[..12] != fallback[..12] {
        errs.push(format!(
            "headers differ: xdp {:02x?} vs fallback {:02x?}",
            &xdp[..12],
            &fallback[..12]
        ));
    }
    let qq = question_bytes(query);
    let (xq, fq) = (question_bytes(xdp), question_bytes(fallback));
    if xq != qq {
        errs.push(format!(
            "xdp question {xq:02x?} is not the query's {qq:02x?}"
        ));
    }
    if fq != qq {
        errs.push(format!(
            "fallback question {fq:02x?} is not the query's {qq:02x?}"
        ));
    }
    let (x, f) = match (Message::from_vec(xdp), Message::from_vec(fallback)) {
        (Ok(x), Ok(f)) => (x, f),
        (x, f) => {
            errs.push(format!(
                "decoding: xdp {:?}, fallback {:?}",
                x.err(),
                f.err()
            ));
            return Err(errs.join("\n"));
        }
    };
    section_diff("answer", x.answers(), f.answers(), &mut errs);
    section_diff("authority", x.name_servers(), f.name_servers(), &mut errs);
    section_diff("additional", x.additionals(), f.additionals(), &mut errs);
    match (x.extensions(), f.extensions()) {
        (None, None) => {}
        (Some(a), Some(b)) => {
            if a.max_payload() != b.max_payload()
                || a.version() != b.version()
                || a.rcode_high() != b.rcode_high()
                || a.flags() != b.flags()
                || a.options() != b.options()
            {
                errs.push(format!("OPT differs: xdp {a:?} vs fallback {b:?}"));
            }
        }
        (a, b) => errs.push(format!(
            "OPT in one only: xdp {:?} vs fallback {:?}",
            a.is_some(),
            b.is_some()
        )),
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs.join("\n"))
    }
}

/// The size of a response the fast path would write for the records of `full` (an untruncated
/// response): header, the question as sent, every record with its owner as a two-byte pointer
/// and its RDATA names uncompressed (A, AAAA, CNAME, SOA only), and an 11-byte OPT. `None` if a
/// record is of another type (the fast path never writes one).
pub fn fast_path_size(question_len: usize, full: &Message) -> Option<usize> {
    let mut n = 12 + question_len;
    for r in full.answers().iter().chain(full.name_servers()) {
        let rdlen = match r.data() {
            RData::A(_) => 4,
            RData::AAAA(_) => 16,
            RData::CNAME(c) => name_wire_len(&c.0),
            RData::SOA(s) => name_wire_len(s.mname()) + name_wire_len(s.rname()) + 20,
            _ => return None,
        };
        n += 2 + 10 + rdlen;
    }
    if !full.additionals().is_empty() {
        return None;
    }
    if full.extensions().is_some() {
        n += 11;
    }
    Some(n)
}

/// Record types by name, for the generators.
pub fn type_name(t: u16) -> String {
    RecordType::from(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_names() {
        assert_eq!(wire_name("Ab.c."), b"\x02Ab\x01c\x00");
        assert_eq!(wire_name("."), b"\x00");
        assert_eq!(name_text(b"\x02Ab\x01c\x00"), "Ab.c.");
        assert_eq!(plain_name_len(b"\x02Ab\x01c\x00", 0), Some(6));
    }

    #[test]
    fn query_round_trips_through_hickory() {
        let q = QuerySpec::new(7, "WwW.Example.com", TYPE_AAAA).with_edns(1400, true);
        let m = Message::from_vec(&q.to_wire()).expect("parse");
        assert_eq!(m.id(), 7);
        assert!(m.queries()[0]
            .name()
            .eq_case(&Name::from_ascii("WwW.Example.com.").unwrap()));
        let e = m.extensions().as_ref().expect("OPT");
        assert_eq!(e.max_payload(), 1400);
        assert!(e.flags().dnssec_ok);
    }
}
