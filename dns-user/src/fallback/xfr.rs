//! Zone transfers: AXFR (RFC 5936) and IXFR (RFC 1995, from the journal the write path keeps),
//! over TCP, to the clients [`FallbackConfig::allow_transfer`] and
//! [`FallbackConfig::transfer_allow`] let in; REFUSED for everyone else.
//!
//! IXFR: a client whose serial the journal still holds gets the changes since, condensed into one
//! difference when that is cheap (RFC 1995 §4 allows it); a client older than the journal gets the
//! whole zone, AXFR-style; a client as new as we are gets our SOA alone.

use std::net::IpAddr;

use hickory_proto::{
    op::{Query, ResponseCode},
    rr::{Name, RData, Record, RecordType},
    serialize::binary::{BinDecodable, BinDecoder, BinEncodable},
};
use ipnet::IpNet;

use super::{
    request::{be16, Request},
    response::{Draft, Reply},
    FallbackConfig, Transport, HEADER_LEN,
};
use crate::{
    journal::{condense, Diff, JournalSource},
    tsig::Key,
    zone::{normalize, serial_newer, Zone, ZoneSet},
};

/// Who asks, for the transfer ACL, and where the IXFR journal is.
#[derive(Clone, Copy, Default)]
pub struct Client<'a> {
    /// The peer's address; `None` (in-process callers) passes only an ACL open to everyone.
    pub peer: Option<IpAddr>,
    /// Without one, every IXFR gets a full transfer.
    pub journal: Option<&'a dyn JournalSource>,
    /// The TSIG key the request was signed with, verified.
    pub key: Option<&'a Key>,
}

/// A `--transfer-allow` value: a prefix (`192.0.2.0/24`, `2001:db8::/32`) or one address.
pub fn parse_prefix(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is neither an address nor a prefix (ADDR/LEN)"))
}

/// Whether `client` may transfer the zone at `apex`: everyone may with `--allow-axfr`; a request
/// signed with a known key may, for the zones its key statement lists (every zone if none); and
/// the addresses `--transfer-allow` names may.
fn allowed(cfg: &FallbackConfig, client: &Client, apex: &Name) -> bool {
    cfg.allow_transfer
        || client.key.is_some_and(|k| k.may_transfer(&normalize(apex)))
        || client.peer.is_some_and(|ip| {
            // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
            let ip = ip.to_canonical();
            cfg.transfer_allow.iter().any(|net| net.contains(&ip))
        })
}

/// Beyond this many records in all, a chain of changes is sent one change after the other
/// rather than condensed (condensing compares records pairwise).
const CONDENSE_MAX_RECORDS: usize = 1024;

/// A zone transfer packs records into messages of about this many bytes (uncompressed), well
/// under what a TCP message can carry, as other servers do.
const XFR_CHUNK: usize = 16 * 1024;

/// AXFR (RFC 5936) and IXFR (RFC 1995). `buf` is the whole query: IXFR's SOA is in its
/// authority section.
pub(super) fn transfer(
    zones: &ZoneSet,
    req: &Request,
    q: &Query,
    buf: &[u8],
    transport: Transport,
    cfg: &FallbackConfig,
    client: &Client,
) -> Reply {
    let refused = || Draft::new(req, cfg, ResponseCode::Refused).finish(transport);
    if !allowed(cfg, client, q.name()) {
        return refused();
    }
    let Some(zone) = zones.zone(q.name()) else {
        return refused();
    };
    let mut soa = zone.soa_record();
    soa.set_name(q.name().clone());
    match (transport, q.query_type()) {
        // RFC 1995 §2: over UDP the server may answer "a single SOA record of the server's
        // current version to inform the client that a TCP query should be initiated".
        (Transport::Udp, RecordType::IXFR) => {
            let mut d = Draft::new(req, cfg, ResponseCode::NoError);
            d.aa = true;
            d.answers.push(soa);
            d.finish(transport)
        }
        // RFC 5936 §4.2: AXFR over UDP is not defined.
        (Transport::Udp, _) => refused(),
        (Transport::Tcp, RecordType::IXFR) => match client_serial(buf) {
            // RFC 1995 §2: the authority section of an IXFR query holds the SOA of the client's
            // version of the zone; without it there is no version to start from.
            None => Draft::new(req, cfg, ResponseCode::FormErr).finish(transport),
            Some(theirs) => incremental(zone, req, cfg, soa, theirs, client),
        },
        (Transport::Tcp, _) => full_transfer(zone, req, cfg, soa),
    }
}

/// IXFR over TCP from the client's serial `theirs`.
fn incremental(
    zone: &Zone,
    req: &Request,
    cfg: &FallbackConfig,
    soa: Record,
    theirs: u32,
    client: &Client,
) -> Reply {
    let ours = zone.serial();
    // RFC 1995 §2: a client with "the same or newer version number than that of the server"
    // gets "a single SOA record of the server's current version"; §4: "If incremental zone
    // transfer is not available, the entire zone is returned".
    if theirs == ours || serial_newer(theirs, ours) {
        return messages(vec![soa], req, cfg);
    }
    let Some(diffs) = client
        .journal
        .and_then(|j| j.changes(zone.apex(), theirs, ours))
    else {
        return full_transfer(zone, req, cfg, soa);
    };
    let total: usize = diffs.iter().map(|d| d.deleted.len() + d.added.len()).sum();
    let condensed;
    let diffs: &[Diff] = if diffs.len() > 1 && total <= CONDENSE_MAX_RECORDS {
        match condense(&diffs) {
            Some(c) => {
                condensed = [c];
                &condensed
            }
            None => &diffs,
        }
    } else {
        &diffs
    };
    // RFC 1995 §4: the new SOA, then per change the old SOA, what it deleted, the new SOA and
    // what it added (each list starts with its SOA), then the new SOA again.
    let mut records = vec![soa.clone()];
    for d in diffs {
        records.extend(d.deleted.iter().cloned());
        records.extend(d.added.iter().cloned());
    }
    records.push(soa);
    messages(records, req, cfg)
}

/// The serial of the SOA in the authority section of an IXFR query.
fn client_serial(buf: &[u8]) -> Option<u32> {
    let counts = |i: usize| buf.get(..HEADER_LEN).map(|_| be16(buf, 4 + 2 * i));
    let (qd, an, ns) = (counts(0)?, counts(1)?, counts(2)?);
    let mut d = BinDecoder::new(buf);
    d.read_slice(HEADER_LEN).ok()?;
    for _ in 0..qd {
        Query::read(&mut d).ok()?;
    }
    for _ in 0..an {
        Record::read(&mut d).ok()?;
    }
    (0..ns).find_map(|_| match Record::read(&mut d).ok()?.into_data() {
        RData::SOA(s) => Some(s.serial()),
        _ => None,
    })
}

/// RFC 5936 §2.2: the zone's SOA, every other record, the SOA again, over as many messages as it
/// takes. Also IXFR's answer when the journal doesn't reach back to the client's version (RFC
/// 1995 §4: "the entire zone is returned").
fn full_transfer(zone: &Zone, req: &Request, cfg: &FallbackConfig, soa: Record) -> Reply {
    let mut records = vec![soa.clone()];
    for (name, _, ttl, rdatas) in zone.records() {
        records.extend(
            rdatas
                .iter()
                .map(|rd| Record::from_rdata(name.clone(), ttl, rd.clone())),
        );
    }
    records.push(soa);
    messages(records, req, cfg)
}

/// `records` over as many TCP messages as it takes, each under [`XFR_CHUNK`] bytes uncompressed;
/// the question only in the first (RFC 5936 §2.2.1 allows QDCOUNT 0 in the others).
fn messages(records: Vec<Record>, req: &Request, cfg: &FallbackConfig) -> Reply {
    let mut chunks: Vec<Vec<Record>> = vec![Vec::new()];
    let mut size = 0;
    for r in records {
        let len = r.to_bytes().map(|b| b.len()).unwrap_or(XFR_CHUNK);
        if size + len > XFR_CHUNK && chunks.last().is_some_and(|c| !c.is_empty()) {
            chunks.push(Vec::new());
            size = 0;
        }
        size += len;
        if let Some(c) = chunks.last_mut() {
            c.push(r);
        }
    }
    let mut messages = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut d = Draft::new(req, cfg, ResponseCode::NoError);
        d.aa = true;
        d.question &= i == 0;
        d.answers = chunk;
        let reply = d.finish(Transport::Tcp);
        if reply.truncated || reply.rcode != ResponseCode::NoError {
            // One record too big for a message: nothing sensible to send but an error.
            return Draft::new(req, cfg, ResponseCode::ServFail).finish(Transport::Tcp);
        }
        messages.extend(reply.messages);
    }
    Reply {
        messages,
        rcode: ResponseCode::NoError,
        truncated: false,
        proved: false,
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::Message,
        rr::{
            rdata::{SOA, TXT},
            RData,
        },
    };

    use super::{
        super::{handle, handle_all, handle_from, testutil::*, TCP_MAX},
        *,
    };

    #[test]
    fn zone_transfers() {
        let mut zs = zones();
        for i in 0..600 {
            zs.set_rrset(
                &apex(),
                &n(&format!("t{i}.example.com.")),
                RecordType::TXT,
                60,
                vec![RData::TXT(TXT::new(vec!["x".repeat(40)]))],
            )
            .expect("txt");
        }
        let axfr = bytes(&query("example.com.", RecordType::AXFR));
        let ixfr = bytes(&query("example.com.", RecordType::IXFR));
        let off = FallbackConfig::default();
        let on = FallbackConfig {
            allow_transfer: true,
            ..off.clone()
        };
        for (q, t) in [
            (&axfr, Transport::Tcp),
            (&ixfr, Transport::Tcp),
            (&axfr, Transport::Udp),
        ] {
            assert_eq!(
                ask_raw(&zs, q, t, &off).response_code(),
                ResponseCode::Refused
            );
        }
        assert_eq!(
            ask_raw(&zs, &axfr, Transport::Udp, &on).response_code(),
            ResponseCode::Refused
        );
        let not_apex = bytes(&query("www.example.com.", RecordType::AXFR));
        assert_eq!(
            ask_raw(&zs, &not_apex, Transport::Tcp, &on).response_code(),
            ResponseCode::Refused
        );

        // IXFR over UDP: the current SOA, "use TCP".
        let r = ask_raw(&zs, &ixfr, Transport::Udp, &on);
        assert_eq!(r.answers().len(), 1);
        assert_eq!(r.answers()[0].record_type(), RecordType::SOA);

        let msgs = handle_all(&zs, &axfr, Transport::Tcp, &on);
        assert!(msgs.len() > 1, "{} messages", msgs.len());
        let mut records = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            assert!(m.len() <= TCP_MAX);
            let r = Message::from_vec(m).expect("parse");
            assert_eq!(r.id(), ID);
            assert!(r.authoritative());
            assert_eq!(r.response_code(), ResponseCode::NoError);
            assert_eq!(r.queries().len(), usize::from(i == 0));
            records.extend(r.answers().to_vec());
        }
        let zone = zs.zone(&apex()).expect("zone");
        assert_eq!(records.len(), zone.record_count() + 2);
        assert_eq!(records[0].record_type(), RecordType::SOA);
        assert_eq!(records[records.len() - 1].record_type(), RecordType::SOA);
        // `handle` gives the first message.
        assert_eq!(
            handle(&zs, &axfr, Transport::Tcp, &on).as_ref(),
            msgs.first()
        );
    }

    /// Every record of a multi-message answer, checking each message on the way.
    fn records(msgs: &[Vec<u8>]) -> Vec<Record> {
        assert!(!msgs.is_empty(), "no answer");
        let mut out = Vec::new();
        for m in msgs {
            assert!(m.len() <= TCP_MAX);
            let r = Message::from_vec(m).expect("parse");
            assert_eq!(r.response_code(), ResponseCode::NoError, "{r}");
            out.extend(r.answers().to_vec());
        }
        out
    }

    fn serial(r: &Record) -> u32 {
        match r.data() {
            RData::SOA(s) => s.serial(),
            other => panic!("not an SOA: {other:?}"),
        }
    }

    /// An IXFR query carrying the client's SOA at `serial`.
    fn ixfr_from(zs: &ZoneSet, serial: u32) -> Vec<u8> {
        let mut q = query("example.com.", RecordType::IXFR);
        let soa = zs.zone(&apex()).expect("zone").soa_record();
        let RData::SOA(s) = soa.data() else {
            panic!("not an SOA")
        };
        let theirs = SOA::new(
            s.mname().clone(),
            s.rname().clone(),
            serial,
            s.refresh(),
            s.retry(),
            s.expire(),
            s.minimum(),
        );
        q.add_name_server(Record::from_rdata(apex(), 60, RData::SOA(theirs)));
        bytes(&q)
    }

    #[test]
    fn transfer_acl_by_address() {
        let zs = zones();
        let cfg = FallbackConfig {
            transfer_allow: vec![
                parse_prefix("192.0.2.0/24").expect("prefix"),
                parse_prefix("2001:db8::1").expect("address"),
            ],
            ..FallbackConfig::default()
        };
        assert!(parse_prefix("192.0.2.0/33").is_err());
        assert!(parse_prefix("example.com").is_err());
        let axfr = bytes(&query("example.com.", RecordType::AXFR));
        let from = |ip: &str, t| {
            let client = Client {
                peer: Some(ip.parse().expect("ip")),
                ..Client::default()
            };
            let msgs = handle_from(&zs, &axfr, t, &cfg, &client);
            Message::from_vec(&msgs[0]).expect("parse").response_code()
        };
        assert_eq!(from("192.0.2.7", Transport::Tcp), ResponseCode::NoError);
        assert_eq!(
            from("::ffff:192.0.2.7", Transport::Tcp),
            ResponseCode::NoError
        );
        assert_eq!(from("2001:db8::1", Transport::Tcp), ResponseCode::NoError);
        assert_eq!(from("2001:db8::2", Transport::Tcp), ResponseCode::Refused);
        assert_eq!(from("198.51.100.1", Transport::Tcp), ResponseCode::Refused);
        // Allowed, but a transfer needs TCP.
        assert_eq!(from("192.0.2.7", Transport::Udp), ResponseCode::Refused);
        // No address known: only an ACL open to everyone lets it in.
        assert_eq!(
            ask_raw(&zs, &axfr, Transport::Tcp, &cfg).response_code(),
            ResponseCode::Refused
        );
    }

    #[test]
    fn ixfr_from_the_journal() {
        use crate::{
            journal,
            store::Store,
            zone::{Change, Edit},
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let mut zs = zones();
        let s0 = zs.zone(&apex()).expect("zone").serial();
        let txt = |i: usize| RData::TXT(TXT::new(vec![format!("v{i}")]));
        for i in 0..3 {
            let prev = zs.clone();
            let edit = Edit::Rrset(
                apex(),
                Change::Set {
                    name: n("new.example.com."),
                    rtype: RecordType::TXT,
                    ttl: 60,
                    records: vec![txt(i)],
                },
            );
            let changes = zs.apply(edit).expect("edit");
            let ops = journal::diff(&prev, &zs, &changes);
            store
                .persist_journaled(&zs, &changes, &ops)
                .expect("persist");
        }
        let cur = zs.zone(&apex()).expect("zone").serial();
        assert_eq!(cur, s0 + 3);
        let cfg = FallbackConfig {
            allow_transfer: true,
            ..FallbackConfig::default()
        };
        let client = Client {
            journal: Some(&store),
            ..Client::default()
        };
        let ask = |serial| {
            records(&handle_from(
                &zs,
                &ixfr_from(&zs, serial),
                Transport::Tcp,
                &cfg,
                &client,
            ))
        };

        // From s0, three changes condensed into one: SOA cur, SOA s0, (nothing deleted),
        // SOA cur, the TXT as it is now, SOA cur.
        let r = ask(s0);
        let serials: Vec<_> = r
            .iter()
            .filter(|r| r.record_type() == RecordType::SOA)
            .map(serial)
            .collect();
        assert_eq!(serials, [cur, s0, cur, cur], "{r:?}");
        let txts: Vec<_> = r
            .iter()
            .filter(|r| r.record_type() == RecordType::TXT)
            .map(|r| r.data().clone())
            .collect();
        assert_eq!(txts, [txt(2)]);

        // From s0 + 2: the last change as it was: v1 deleted, v2 added.
        let r = ask(s0 + 2);
        assert_eq!(r.len(), 6, "{r:?}");
        assert_eq!(
            [serial(&r[0]), serial(&r[1]), serial(&r[3]), serial(&r[5])],
            [cur, s0 + 2, cur, cur]
        );
        assert_eq!((r[2].data(), r[4].data()), (&txt(1), &txt(2)));

        // Up to date (or ahead): our SOA alone.
        for s in [cur, cur + 1] {
            let r = ask(s);
            assert_eq!(r.len(), 1);
            assert_eq!(serial(&r[0]), cur);
        }

        // Older than the journal, or no journal at all: the whole zone, AXFR-style.
        let whole = zs.zone(&apex()).expect("zone").record_count() + 2;
        assert_eq!(ask(s0 - 1).len(), whole);
        let r = records(&handle_from(
            &zs,
            &ixfr_from(&zs, s0),
            Transport::Tcp,
            &cfg,
            &Client::default(),
        ));
        assert_eq!(r.len(), whole);
        assert_eq!((serial(&r[0]), serial(&r[r.len() - 1])), (cur, cur));

        // No SOA in the authority section: nothing to start from.
        let bare = bytes(&query("example.com.", RecordType::IXFR));
        let msgs = handle_from(&zs, &bare, Transport::Tcp, &cfg, &client);
        assert_eq!(
            Message::from_vec(&msgs[0]).expect("parse").response_code(),
            ResponseCode::FormErr
        );
    }
}
