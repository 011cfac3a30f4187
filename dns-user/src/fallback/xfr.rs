//! Zone transfers: AXFR (RFC 5936) and IXFR (RFC 1995, answered with a full transfer), off unless
//! [`FallbackConfig::allow_transfer`].

use hickory_proto::{
    op::{Query, ResponseCode},
    rr::{Record, RecordType},
    serialize::binary::BinEncodable,
};

use super::{
    request::Request,
    response::{Draft, Reply},
    FallbackConfig, Transport,
};
use crate::zone::{Zone, ZoneSet};

/// A zone transfer packs records into messages of about this many bytes (uncompressed), well
/// under what a TCP message can carry, as other servers do.
const XFR_CHUNK: usize = 16 * 1024;

/// AXFR (RFC 5936) and IXFR (RFC 1995, answered with a full transfer).
pub(super) fn transfer(
    zones: &ZoneSet,
    req: &Request,
    q: &Query,
    transport: Transport,
    cfg: &FallbackConfig,
) -> Reply {
    let refused = || Draft::new(req, cfg, ResponseCode::Refused).finish(transport);
    if !cfg.allow_transfer {
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
        (Transport::Tcp, _) => full_transfer(zone, req, cfg, soa),
    }
}

/// RFC 5936 §2.2: the zone's SOA, every other record, the SOA again, over as many messages as it
/// takes; the question only in the first (§2.2.1 allows QDCOUNT 0 in the others).
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
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::Message,
        rr::{rdata::TXT, RData},
    };

    use super::{
        super::{handle, handle_all, testutil::*, TCP_MAX},
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
}
