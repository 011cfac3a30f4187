//! The answering policy: which messages get no answer, which an error, and what the rest get
//! from [`ZoneSet::resolve`]; signed requests verified (RFC 8945) and their answers signed;
//! dynamic updates (RFC 2136) checked and handed on.

use std::net::IpAddr;

use hickory_proto::{
    op::{OpCode, ResponseCode},
    rr::{DNSClass, Record, RecordType},
};
use tracing::debug;

use super::{
    request::{parse, Request},
    response::{Draft, Reply},
    update::{self, Pending, Updates},
    xfr::{self, Client},
    FallbackConfig, Transport, HEADER_LEN,
};
use crate::{
    journal::JournalSource,
    limit::Limits,
    tsig::{self, Key, KeyRing, Rejection, ResponseTsig},
    zone::{normalize, ResolutionKind, ZoneSet},
};

/// What the answer to a message needs beyond the zones and settings.
pub(super) struct Auth<'a> {
    pub keys: &'a KeyRing,
    /// `None`: UPDATE is NOTIMP.
    pub updates: Option<&'a Updates>,
    /// The client's address, for `--update-allow` and `--transfer-allow`.
    pub peer: Option<IpAddr>,
    /// The IXFR journal; without it IXFR gets full transfers.
    pub journal: Option<&'a dyn JournalSource>,
    /// Seconds since the epoch, for TSIG.
    pub now: u64,
    /// Cookies (and the rate limiter); `None`: COOKIE options are ignored.
    pub limits: Option<&'a Limits>,
}

/// The answer to a message: now, or once an update has been applied.
pub(super) enum Answer {
    /// `None`: send nothing.
    Now(Option<Reply>),
    Update(Box<Pending>),
}

/// Answers one message from `client` with no keys and no updates; `None`: send nothing.
/// Counting is the caller's.
pub(super) fn respond(
    zones: &ZoneSet,
    buf: &[u8],
    transport: Transport,
    cfg: &FallbackConfig,
    client: &Client,
) -> Option<Reply> {
    let keys = KeyRing::default();
    let auth = Auth {
        keys: &keys,
        updates: None,
        peer: client.peer,
        journal: client.journal,
        now: tsig::now(),
        limits: None,
    };
    match decide(zones, buf, transport, cfg, &auth) {
        Answer::Now(reply) => reply,
        // Without an update handler, UPDATE is answered NOTIMP at once.
        Answer::Update(_) => None,
    }
}

/// Decides the answer to one message. Counting is the caller's.
pub(super) fn decide(
    zones: &ZoneSet,
    buf: &[u8],
    transport: Transport,
    cfg: &FallbackConfig,
    auth: &Auth<'_>,
) -> Answer {
    if buf.len() < HEADER_LEN {
        return Answer::Now(None);
    }
    // QR=1 is a response: answering it could start a loop between two servers.
    if buf[2] & 0x80 != 0 {
        return Answer::Now(None);
    }
    let mut req = parse(buf);
    let is_update = req.opcode == u8::from(OpCode::Update) && auth.updates.is_some();

    // RFC 8945 §5.2: a signed request is checked before anything else is done with it, and
    // whatever the answer, it is signed when the request was (§5.3). A message that doesn't
    // parse can't be checked: it gets its FORMERR unsigned.
    let signed = match req.tsig.filter(|_| req.malformed.is_none()) {
        None => None,
        Some(at) => match tsig::verify(auth.keys, buf, at, auth.now) {
            Ok(t) => {
                req.reserve = t.size();
                Some(t)
            }
            Err(Rejection::FormErr(why)) => {
                debug!(id = req.id, "FORMERR: {why}");
                return Answer::Now(Some(
                    Draft::new(&req, cfg, ResponseCode::FormErr).finish(transport),
                ));
            }
            Err(Rejection::NotAuth(t)) => {
                debug!(id = req.id, error = ?t.error, "TSIG refused: NOTAUTH");
                req.reserve = t.size();
                let reply = Draft::new(&req, cfg, ResponseCode::NotAuth).finish(transport);
                return Answer::Now(Some(sign(reply, &t, auth.now)));
            }
        },
    };
    let signed_now = |reply: Reply| {
        Answer::Now(Some(match &signed {
            Some(t) => sign(reply, t, auth.now),
            None => reply,
        }))
    };

    // RFC 1035 §4.1.1 NOTIMP: "The name server does not support the requested kind of query."
    // That covers IQUERY, STATUS, NOTIFY, and UPDATE when the daemon takes no updates. A NOTIFY
    // sent to us, a primary that follows no other server, has nothing to set off: NOTIMP tells
    // its sender so.
    if req.opcode != u8::from(OpCode::Query) && !is_update {
        debug!(id = req.id, opcode = req.opcode, "NOTIMP");
        return signed_now(Draft::new(&req, cfg, ResponseCode::NotImp).finish(transport));
    }
    if let Some(why) = &req.malformed {
        debug!(id = req.id, "FORMERR: {why}");
        let mut d = Draft::new(&req, cfg, ResponseCode::FormErr);
        d.opt = false;
        return Answer::Now(Some(d.finish(transport)));
    }
    if is_update {
        return accept_update(zones, buf, req, signed, transport, cfg, auth.peer);
    }
    let key = signed.as_ref().and_then(|t| t.key()).map(|k| &**k);
    let reply = answer_query(zones, &req, buf, transport, cfg, auth, key);
    Answer::Now(match &signed {
        Some(t) => reply.map(|r| sign(r, t, auth.now)),
        None => reply,
    })
}

/// Signs every message of `reply` (chained when there are several, RFC 8945 §5.3.1).
fn sign(mut reply: Reply, t: &ResponseTsig, now: u64) -> Reply {
    if reply.messages.len() == 1 {
        t.sign(&mut reply.messages[0], now);
    } else {
        t.sign_all(&mut reply.messages, now);
    }
    reply
}

/// An UPDATE: the checks that need no zone data (zone section, permission, form), then the
/// rest waits for its turn at the writer.
fn accept_update(
    zones: &ZoneSet,
    buf: &[u8],
    req: Request,
    signed: Option<ResponseTsig>,
    transport: Transport,
    cfg: &FallbackConfig,
    peer: Option<IpAddr>,
) -> Answer {
    let now = |rcode| {
        Answer::Now(Some(update::finish(
            &req,
            cfg,
            rcode,
            transport,
            signed.as_ref(),
        )))
    };
    if req.edns.is_some_and(|e| e.version > 0) {
        return now(ResponseCode::BADVERS);
    }
    let zone = match update::zone_of(&req, zones) {
        Ok(zone) => zone,
        Err(rcode) => return now(rcode),
    };
    // RFC 2136 §3.3: the server decides who may update. A known key may, in the zones its key
    // statement lists (every zone if none); without one, only the sources in `--update-allow`.
    let allowed = match signed.as_ref().and_then(|t| t.key()) {
        Some(key) => key.may_update(&normalize(&zone)),
        None => peer.is_some_and(|p| cfg.update_allow.iter().any(|a| a.contains(p))),
    };
    if !allowed {
        debug!(id = req.id, ?peer, %zone, "unsigned UPDATE: REFUSED");
        return now(ResponseCode::Refused);
    }
    match update::parse(buf, zone) {
        Err(rcode) => now(rcode),
        Ok(update) => Answer::Update(Box::new(Pending {
            req,
            update,
            tsig: signed,
            transport,
            cfg: cfg.clone(),
        })),
    }
}

/// A QUERY, checked and answered.
fn answer_query(
    zones: &ZoneSet,
    req: &Request,
    buf: &[u8],
    transport: Transport,
    cfg: &FallbackConfig,
    auth: &Auth<'_>,
    key: Option<&Key>,
) -> Option<Reply> {
    // RFC 7873 §5.2: every answer to a query with a client cookie carries our server cookie; a
    // server cookie that isn't a valid one of ours is as if none came (§5.2.3).
    let mut cookie = None;
    if let (Some(limits), Some(c), Some(peer)) =
        (auth.limits, req.edns.and_then(|e| e.cookie), auth.peer)
    {
        // RFC 7873 §5.2.2: a COOKIE option of another length is FORMERR.
        if !c.well_formed {
            debug!(id = req.id, "FORMERR: malformed COOKIE option");
            return Some(Draft::new(req, cfg, ResponseCode::FormErr).finish(transport));
        }
        let (server, valid) = limits.cookie(peer, &c.client, c.server(), crate::limit::unix_now());
        let mut data = [0u8; 24];
        data[..8].copy_from_slice(&c.client);
        data[8..].copy_from_slice(&server);
        cookie = Some((data, valid));
    }
    let draft = |rcode| {
        let mut d = Draft::new(req, cfg, rcode);
        d.cookie = cookie;
        d
    };
    let error = |rcode| Some(draft(rcode).finish(transport));
    // RFC 9619: "In the DNS, QDCOUNT is (usually) at most one"; every server we mimic
    // answers anything else with FORMERR.
    if req.qdcount != 1 {
        debug!(
            id = req.id,
            qdcount = req.qdcount,
            "FORMERR: QDCOUNT is not 1"
        );
        return error(ResponseCode::FormErr);
    }
    let Some(q) = &req.question else {
        return error(ResponseCode::FormErr);
    };
    if let Some(edns) = req.edns {
        // RFC 6891 §6.1.3: "If a responder does not implement the VERSION level of the request,
        // then it MUST respond with RCODE=BADVERS." Our OPT says version 0.
        if edns.version > 0 {
            debug!(id = req.id, version = edns.version, "BADVERS");
            return error(ResponseCode::BADVERS);
        }
    }
    if q.query_class() != DNSClass::IN {
        return error(ResponseCode::Refused);
    }
    match q.query_type() {
        // A meta type that only lives in the additional section.
        RecordType::OPT => return error(ResponseCode::FormErr),
        RecordType::AXFR | RecordType::IXFR => {
            let client = Client {
                peer: auth.peer,
                journal: auth.journal,
                key,
            };
            return Some(xfr::transfer(zones, req, q, buf, transport, cfg, &client));
        }
        _ => {}
    }

    let mut res = zones.resolve(q.name(), q.query_type());
    if matches!(res.kind, ResolutionKind::Nxdomain | ResolutionKind::Nodata)
        && cfg.stale_misses.is_set()
    {
        debug!(id = req.id, "SERVFAIL: a miss while cut off from the fleet");
        return error(ResponseCode::ServFail);
    }
    if q.query_type() == RecordType::ANY && transport == Transport::Udp {
        minimal_any(&mut res.answers);
    }
    let mut d = draft(res.rcode);
    d.aa = res.aa;
    d.answers = res.answers;
    d.authority = res.authority;
    d.additional = res.additional;
    Some(d.finish(transport))
}

/// ANY over UDP: RFC 8482 §4.1: "A DNS responder that receives an ANY query MAY decline to provide
/// a conventional ANY response or MAY instead send a response with a single RRset (or a larger
/// subset of available RRsets) in the answer section." A full ANY answer is many times the size
/// of the query, which makes it the favourite of reflection attacks on spoofed sources; one RRset
/// is no bigger than the answer to a query for that type. Over TCP, where the source can't be
/// spoofed, the full answer is still given (RFC 8482 lets a responder treat ANY differently per
/// transport), and a client that needs everything can ask there.
///
/// The RRset kept is the first `resolve` gives (the SOA at an apex, else the RRset of the lowest
/// type; a CNAME, alone at its name, is kept as it is). A name without data keeps its NODATA
/// answer. We don't synthesize the HINFO of §4.2: a real RRset tells the client something.
fn minimal_any(answers: &mut Vec<Record>) {
    let Some(first) = answers.first() else {
        return;
    };
    let (name, rtype) = (first.name().clone(), first.record_type());
    answers.retain(|r| r.record_type() == rtype && r.name() == &name);
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::{Message, MessageType, Query, ResponseCode},
        rr::{DNSClass, RecordType},
    };

    use super::{
        super::{handle, testutil::*},
        *,
    };

    #[test]
    fn drops_short_messages_and_responses() {
        let cfg = FallbackConfig::default();
        let zs = zones();
        assert!(handle(&zs, &[0; 11], Transport::Udp, &cfg).is_none());
        assert!(handle(&zs, &[], Transport::Tcp, &cfg).is_none());
        let mut resp = query("www.example.com.", RecordType::A);
        resp.set_message_type(MessageType::Response);
        assert!(handle(&zs, &bytes(&resp), Transport::Udp, &cfg).is_none());
    }

    #[test]
    fn notimp_for_other_opcodes() {
        for opcode in [1u16, 2, 3, 4, 5, 15] {
            let q = raw((opcode << 11) | 0x0100, [1, 0, 0, 0], &www_question());
            let r = ask_raw(&zones(), &q, Transport::Udp, &FallbackConfig::default());
            assert_eq!(r.response_code(), ResponseCode::NotImp, "opcode {opcode}");
            assert_eq!(u8::from(r.op_code()), opcode as u8);
            assert_eq!(r.id(), ID);
            assert_eq!(r.queries().len(), 1);
            // RFC 6895 §2: RD (set in the query) is QUERY's; other opcodes don't echo it.
            assert!(!r.recursion_desired() && !r.checking_disabled());
        }
    }

    #[test]
    fn badvers_for_edns_above_zero() {
        let r = ask(&with_edns(
            query("www.example.com.", RecordType::A),
            1232,
            true,
            1,
        ));
        assert_eq!(rcode(&r), 16);
        let e = r.extensions().as_ref().expect("OPT in BADVERS");
        assert_eq!(e.version(), 0);
        assert!(e.flags().dnssec_ok);
        assert!(r.answers().is_empty());
        assert_eq!(r.queries().len(), 1);
    }

    #[test]
    fn refused_outside_zones_and_other_classes() {
        let r = ask(&query("www.example.org.", RecordType::A));
        assert_eq!(r.response_code(), ResponseCode::Refused);
        assert!(!r.authoritative());
        assert!(r.answers().is_empty() && r.name_servers().is_empty());

        let mut q = query("www.example.com.", RecordType::A);
        let mut ch = Query::query(n("www.example.com."), RecordType::A);
        ch.set_query_class(DNSClass::CH);
        q.take_queries();
        q.add_query(ch);
        assert_eq!(ask(&q).response_code(), ResponseCode::Refused);
    }

    #[test]
    fn negative_answers_carry_the_soa() {
        let r = ask(&query("nope.example.com.", RecordType::A));
        assert_eq!(r.response_code(), ResponseCode::NXDomain);
        assert!(r.authoritative());
        assert!(r.answers().is_empty());
        assert_eq!(r.name_servers().len(), 1);
        assert_eq!(r.name_servers()[0].record_type(), RecordType::SOA);
        assert_eq!(r.name_servers()[0].ttl(), 30);

        let r = ask(&query("www.example.com.", RecordType::TXT));
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert!(r.authoritative());
        assert!(r.answers().is_empty());
        assert_eq!(r.name_servers()[0].record_type(), RecordType::SOA);
    }

    #[test]
    fn any_over_udp_gets_one_rrset_over_tcp_everything() {
        let zs = any_zones();
        let cfg = FallbackConfig::default();
        let any = bytes(&with_edns(
            query("wWw.example.com.", RecordType::ANY),
            4096,
            false,
            0,
        ));
        let udp = ask_raw(&zs, &any, Transport::Udp, &cfg);
        assert_eq!(udp.response_code(), ResponseCode::NoError);
        assert!(udp.authoritative() && !udp.truncated());
        assert_eq!(udp.answers().len(), 1, "{udp}");
        assert_eq!(udp.answers()[0].record_type(), RecordType::A);
        assert!(udp.answers()[0].name().eq_case(&n("wWw.example.com.")));

        let tcp = ask_raw(&zs, &any, Transport::Tcp, &cfg);
        let mut types: Vec<_> = tcp.answers().iter().map(|r| r.record_type()).collect();
        types.sort();
        assert_eq!(types, [RecordType::A, RecordType::MX, RecordType::TXT]);

        // At the apex, the SOA alone (TCP: SOA and NS).
        let apex_any = bytes(&query("example.com.", RecordType::ANY));
        let udp = ask_raw(&zs, &apex_any, Transport::Udp, &cfg);
        assert_eq!(udp.answers().len(), 1, "{udp}");
        assert_eq!(udp.answers()[0].record_type(), RecordType::SOA);
        let tcp = ask_raw(&zs, &apex_any, Transport::Tcp, &cfg);
        assert!(tcp.answers().len() >= 2, "{tcp}");

        // One RRset of 40 records: still the whole RRset, truncated if it doesn't fit.
        let big = bytes(&query("big.example.com.", RecordType::ANY));
        let udp = ask_raw(&zs, &big, Transport::Udp, &cfg);
        assert!(udp.truncated() && udp.answers().is_empty());
        let big = bytes(&with_edns(
            query("big.example.com.", RecordType::ANY),
            1232,
            false,
            0,
        ));
        assert_eq!(ask_raw(&zs, &big, Transport::Udp, &cfg).answers().len(), 40);

        // No name, no data: the usual negative answers.
        let nx = ask_raw(
            &zs,
            &bytes(&query("nope.example.com.", RecordType::ANY)),
            Transport::Udp,
            &cfg,
        );
        assert_eq!(nx.response_code(), ResponseCode::NXDomain);
        assert_eq!(nx.name_servers()[0].record_type(), RecordType::SOA);
    }

    /// A transfer signed with a known key is allowed without `--allow-axfr` or an address in
    /// `--transfer-allow`, for the zones its key statement lists; unsigned, it is REFUSED.
    #[test]
    fn a_known_key_may_transfer_its_zones() {
        use crate::tsig::{sign_request, Algorithm, Key};

        let zs = zones();
        let secret = b"0123456789abcdef0123456789abcdef".to_vec();
        let key = Key::new("xfr-key", Algorithm::HmacSha256, secret.clone()).expect("key");
        let keys = KeyRing::new([key.clone()]);
        let now = 1_800_000_000;
        let cfg = FallbackConfig::default();
        let auth = Auth {
            keys: &keys,
            updates: None,
            peer: Some("192.0.2.99".parse().expect("ip")),
            journal: None,
            now,
            limits: None,
        };
        let rcode = |q: &[u8]| match decide(&zs, q, Transport::Tcp, &cfg, &auth) {
            Answer::Now(Some(reply)) => {
                let first = Message::from_vec(&reply.messages[0]).expect("parses");
                (first.response_code(), first.answers().len())
            }
            _ => panic!("an answer"),
        };
        let unsigned = bytes(&query("example.com.", RecordType::AXFR));
        assert_eq!(rcode(&unsigned), (ResponseCode::Refused, 0));
        let mut signed = unsigned.clone();
        sign_request(&mut signed, &key, now, 300);
        let (code, answers) = rcode(&signed);
        assert_eq!(code, ResponseCode::NoError);
        assert!(answers > 1, "{answers} records");

        // A key limited to updates may not transfer.
        let mut updates_only = Key::new("upd-key", Algorithm::HmacSha256, secret).expect("key");
        updates_only.ops.transfer = false;
        let keys = KeyRing::new([updates_only.clone()]);
        let auth = Auth {
            keys: &keys,
            ..auth
        };
        let mut signed = unsigned.clone();
        sign_request(&mut signed, &updates_only, now, 300);
        let Answer::Now(Some(reply)) = decide(&zs, &signed, Transport::Tcp, &cfg, &auth) else {
            panic!("an answer");
        };
        let first = Message::from_vec(&reply.messages[0]).expect("parses");
        assert_eq!(first.response_code(), ResponseCode::Refused);
    }

    /// A signed zone transfer: every message signed, the first over the request's MAC, each
    /// next one over the previous MAC and the timers only (RFC 8945 §5.3.1), checked here the
    /// way a client checks them.
    #[test]
    fn signed_multi_message_answers_chain_their_macs() {
        use hickory_proto::rr::{rdata::TXT, RData};

        use crate::tsig::{locate, sign_request, wire, Algorithm, Key, TsigRecord};

        let mut zs = zones();
        for i in 0..1500 {
            let txt = RData::TXT(TXT::new(vec![format!("{i:0>100}")]));
            zs.set_rrset(
                &n("example.com."),
                &n(&format!("t{i}.example.com.")),
                RecordType::TXT,
                60,
                vec![txt],
            )
            .expect("txt");
        }
        let secret = b"0123456789abcdef0123456789abcdef".to_vec();
        let key = Key::new("xfr-key", Algorithm::HmacSha256, secret.clone()).expect("key");
        let keys = KeyRing::new([key.clone()]);
        let now = 1_800_000_000;
        let mut q = bytes(&query("example.com.", RecordType::AXFR));
        let request_mac = sign_request(&mut q, &key, now, 300);
        let cfg = FallbackConfig {
            allow_transfer: true,
            ..FallbackConfig::default()
        };
        let auth = Auth {
            keys: &keys,
            updates: None,
            peer: None,
            journal: None,
            now,
            limits: None,
        };
        let Answer::Now(Some(reply)) = decide(&zs, &q, Transport::Tcp, &cfg, &auth) else {
            panic!("an answer");
        };
        assert!(
            reply.messages.len() > 1,
            "{} messages",
            reply.messages.len()
        );
        let mut prev = request_mac;
        for (i, m) in reply.messages.iter().enumerate() {
            let at = locate(m).expect("parses").expect("every message is signed");
            let rec = TsigRecord::read(m, at).expect("TSIG");
            let mut unsigned = m[..at].to_vec();
            let ar = u16::from_be_bytes([unsigned[10], unsigned[11]]) - 1;
            unsigned[10..12].copy_from_slice(&ar.to_be_bytes());
            let mut input = (prev.len() as u16).to_be_bytes().to_vec();
            input.extend_from_slice(&prev);
            input.extend_from_slice(&unsigned);
            let time = &rec.time_signed.to_be_bytes()[2..];
            if i == 0 {
                input.extend(wire(&n("xfr-key.")));
                input.extend([0, 255, 0, 0, 0, 0]);
                input.extend(wire(&n("hmac-sha256.")));
                input.extend_from_slice(time);
                input.extend([1, 44, 0, 0, 0, 0]);
            } else {
                input.extend_from_slice(time);
                input.extend([1, 44]);
            }
            assert_eq!(
                rec.mac,
                Algorithm::HmacSha256.mac(&secret, &[&input]),
                "message {i}"
            );
            prev = rec.mac;
        }
    }
}
