//! The query, parsed as far as it goes: the header fields the response copies, the first
//! question, and the client's OPT record. What doesn't parse is kept as the reason, for FORMERR.

use hickory_proto::{
    op::Query,
    rr::{Name, RecordType},
    serialize::binary::{BinDecodable, BinDecoder},
};

use dns_common::limit::{cookie_len_ok, OPTION_COOKIE};

use super::HEADER_LEN;

/// The client's OPT record (RFC 6891 §6.1.3), as far as we use it.
#[derive(Clone, Copy, Debug)]
pub(super) struct ClientEdns {
    /// Requestor's UDP payload size (the OPT CLASS field).
    pub payload: u16,
    pub version: u8,
    pub dnssec_ok: bool,
    /// The query carries an NSID option (RFC 5001): the server's identifier is asked for.
    pub nsid: bool,
    /// Its first COOKIE option (RFC 7873), if any.
    pub cookie: Option<ClientCookie>,
}

/// A COOKIE option's data: the client cookie and the server cookie, if one came.
#[derive(Clone, Copy, Debug)]
pub(super) struct ClientCookie {
    /// Of a length RFC 7873 §5.2.2 allows (else the query gets FORMERR when cookies are on).
    pub well_formed: bool,
    pub client: [u8; 8],
    server: [u8; 32],
    server_len: u8,
}

impl ClientCookie {
    pub fn server(&self) -> Option<&[u8]> {
        (self.server_len > 0).then(|| &self.server[..usize::from(self.server_len)])
    }
}

/// The query, parsed as far as it goes.
pub(super) struct Request {
    pub id: u16,
    pub opcode: u8,
    pub rd: bool,
    pub cd: bool,
    pub qdcount: u16,
    /// The first question exactly as received (case preserved), if it parsed.
    pub question: Option<Query>,
    /// Why the message past the header didn't parse, if it didn't.
    pub malformed: Option<String>,
    pub edns: Option<ClientEdns>,
    /// Where the TSIG record starts (RFC 8945), if the message is signed.
    pub tsig: Option<usize>,
    /// Bytes a size-limited response must leave free for its TSIG record.
    pub reserve: usize,
}

pub(super) fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// Parses what follows the header. `buf` is at least [`HEADER_LEN`] long.
pub(super) fn parse(buf: &[u8]) -> Request {
    let mut req = Request {
        id: be16(buf, 0),
        opcode: (buf[2] >> 3) & 0x0f,
        rd: buf[2] & 0x01 != 0,
        cd: buf[3] & 0x10 != 0,
        qdcount: be16(buf, 4),
        question: None,
        malformed: None,
        edns: None,
        tsig: None,
        reserve: 0,
    };
    if let Err(why) = parse_body(buf, &mut req) {
        req.malformed = Some(why);
    }
    req
}

fn parse_body(buf: &[u8], req: &mut Request) -> Result<(), String> {
    let (ancount, nscount, arcount) = (be16(buf, 6), be16(buf, 8), be16(buf, 10));
    let mut d = BinDecoder::new(buf);
    d.read_slice(HEADER_LEN).map_err(|e| e.to_string())?;
    for i in 0..req.qdcount {
        let q = Query::read(&mut d).map_err(|e| format!("question {i}: {e}"))?;
        if i == 0 {
            req.question = Some(q);
        }
    }
    // Queries have no answer or authority records but for IXFR's SOA; they only need to parse.
    for i in 0..u32::from(ancount) + u32::from(nscount) {
        let (_, rtype, ..) = read_record(&mut d).map_err(|e| format!("record {i}: {e}"))?;
        if rtype == TSIG {
            return Err(NOT_LAST.into());
        }
    }
    for i in 0..arcount {
        let start = d.index();
        let (name, rtype, class, ttl, rdata) =
            read_record(&mut d).map_err(|e| format!("additional {i}: {e}"))?;
        if rtype == TSIG {
            if i + 1 != arcount {
                return Err(NOT_LAST.into());
            }
            req.tsig = Some(start);
        }
        if rtype != u16::from(RecordType::OPT) {
            continue;
        }
        // RFC 6891 §6.1.1: "If a query message with more than one OPT RR is received, a
        // FORMERR (RCODE=1) MUST be returned."
        if req.edns.is_some() {
            return Err("more than one OPT record".into());
        }
        // RFC 6891 §6.1.2: NAME "MUST be 0 (root domain)".
        if !name.is_root() {
            return Err("OPT owner is not the root".into());
        }
        let (nsid, cookie) = check_options(rdata)?;
        req.edns = Some(ClientEdns {
            payload: class,
            version: (ttl >> 16) as u8,
            dnssec_ok: ttl & 0x8000 != 0,
            nsid,
            cookie,
        });
    }
    Ok(())
}

const TSIG: u16 = crate::tsig::TSIG_TYPE;
/// RFC 8945 §5.1: "If a TSIG record is present in any other position, the DNS message is dropped
/// and a response with RCODE 1 (FORMERR) MUST be returned."
const NOT_LAST: &str = "TSIG record that is not the last additional record";

/// One resource record: owner, type, class, TTL and RDATA, undecoded.
fn read_record<'a>(
    d: &mut BinDecoder<'a>,
) -> Result<(Name, u16, u16, u32, &'a [u8]), hickory_proto::ProtoError> {
    let name = Name::read(d)?;
    let rtype = d.read_u16()?.unverified();
    let class = d.read_u16()?.unverified();
    let ttl = d.read_u32()?.unverified();
    let len = d.read_u16()?.unverified();
    let rdata = d.read_slice(usize::from(len))?.unverified();
    Ok((name, rtype, class, ttl, rdata))
}

/// Checks that the OPT RDATA is a well-framed list of {code, length, data}; says whether one of
/// them is NSID, and returns the first COOKIE. The other options (padding, ...) are ignored.
fn check_options(mut rdata: &[u8]) -> Result<(bool, Option<ClientCookie>), String> {
    let mut nsid = false;
    let mut cookie = None;
    while !rdata.is_empty() {
        if rdata.len() < 4 {
            return Err("truncated EDNS option".into());
        }
        let code = be16(rdata, 0);
        nsid |= code == dns_common::wire::OPTION_NSID;
        let len = usize::from(be16(rdata, 2));
        if rdata.len() < 4 + len {
            return Err("EDNS option longer than the OPT record".into());
        }
        let data = &rdata[4..4 + len];
        if code == OPTION_COOKIE && cookie.is_none() {
            let mut c = ClientCookie {
                well_formed: cookie_len_ok(len),
                client: [0; 8],
                server: [0; 32],
                server_len: 0,
            };
            if c.well_formed {
                c.client.copy_from_slice(&data[..8]);
                let server = &data[8..];
                c.server[..server.len()].copy_from_slice(server);
                c.server_len = server.len() as u8;
            }
            cookie = Some(c);
        }
        rdata = &rdata[4 + len..];
    }
    Ok((nsid, cookie))
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::RecordType;

    use super::super::testutil::*;

    #[test]
    fn formerr_on_garbage_and_bad_counts() {
        // Garbage after a header claiming one question: nothing to echo.
        let r = formerr(&raw(0x0100, [1, 0, 0, 0], &[0xff, 0xfe, 0x01]));
        assert!(r.queries().is_empty());
        // Header only, question missing.
        formerr(&raw(0x0100, [1, 0, 0, 0], &[]));
        // Question cut short.
        let q = www_question();
        formerr(&raw(0x0100, [1, 0, 0, 0], &q[..q.len() - 2]));
        // No question.
        let r = formerr(&raw(0x0100, [0, 0, 0, 0], &[]));
        assert!(r.queries().is_empty());
        // Two questions: FORMERR without echoing either.
        let mut two = www_question();
        two.extend_from_slice(&www_question());
        let r = formerr(&raw(0x0100, [2, 0, 0, 0], &two));
        assert!(r.queries().is_empty());
        // A name that points at itself (compression loop).
        let r = formerr(&raw(0x0100, [1, 0, 0, 0], &[0xc0, 12, 0, 1, 0, 1]));
        assert!(r.queries().is_empty());
        // A pointer forward, past the end.
        formerr(&raw(0x0100, [1, 0, 0, 0], &[0xc0, 40, 0, 1, 0, 1]));
        // A good question with a broken additional record: the question is echoed.
        let mut rest = www_question();
        rest.extend_from_slice(&[0, 0, 41, 0x10]);
        let r = formerr(&raw(0x0100, [1, 0, 0, 1], &rest));
        assert_eq!(r.queries().len(), 1);
        assert!(r.extensions().is_none());
    }

    #[test]
    fn formerr_on_bad_opt() {
        // Two OPT records.
        let mut rest = www_question();
        let opt = [0u8, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0];
        rest.extend_from_slice(&opt);
        rest.extend_from_slice(&opt);
        formerr(&raw(0x0100, [1, 0, 0, 2], &rest));
        // OPT owned by a name other than the root.
        let mut rest = www_question();
        rest.extend_from_slice(&[0xc0, 12, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        formerr(&raw(0x0100, [1, 0, 0, 1], &rest));
        // An option longer than the RDATA.
        let mut rest = www_question();
        rest.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 5, 0, 10, 0, 8, 1]);
        formerr(&raw(0x0100, [1, 0, 0, 1], &rest));
        // qtype OPT.
        formerr(&bytes(&query("www.example.com.", RecordType::OPT)));
    }
}
