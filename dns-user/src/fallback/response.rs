//! Responses: header flags copied as the RFCs say, the sections, our OPT record, and truncation to
//! the transport's size limit.

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, ResponseCode},
    rr::rdata::opt::EdnsOption,
    rr::Record,
};
use tracing::warn;

use super::{request::Request, FallbackConfig, Transport, TCP_MAX, UDP_MIN};

/// The response messages with what the counters need.
#[derive(Debug)]
pub(super) struct Reply {
    pub messages: Vec<Vec<u8>>,
    pub rcode: ResponseCode,
    pub truncated: bool,
    /// The query brought a valid server cookie: its source address is proved, and the response
    /// is not rate limited.
    pub proved: bool,
}

/// A response under construction.
pub(super) struct Draft<'a> {
    req: &'a Request,
    cfg: &'a FallbackConfig,
    rcode: ResponseCode,
    pub aa: bool,
    pub question: bool,
    /// Include our OPT record.
    pub opt: bool,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
    /// Our COOKIE option's data (client cookie and server cookie), and whether the query's
    /// server cookie was valid.
    pub cookie: Option<([u8; 24], bool)>,
}

impl<'a> Draft<'a> {
    pub fn new(req: &'a Request, cfg: &'a FallbackConfig, rcode: ResponseCode) -> Self {
        Self {
            req,
            cfg,
            rcode,
            aa: false,
            question: req.qdcount == 1 && req.question.is_some(),
            // RFC 6891 §7: "If an OPT record is present in a received request, compliant
            // responders MUST include an OPT record in their respective responses."
            opt: req.edns.is_some() && req.malformed.is_none(),
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
            cookie: None,
        }
    }

    /// Header flags and sections into a message; `truncated` leaves the records out and sets TC.
    /// The records move into the message: a draft is encoded whole at most once.
    fn message(&mut self, truncated: bool) -> Message {
        let req = self.req;
        let query = req.opcode == u8::from(OpCode::Query);
        let mut msg = Message::new();
        msg.set_id(req.id)
            .set_message_type(MessageType::Response)
            // RFC 1035 §4.1.1: OPCODE "is set by the originator of a query and copied into the
            // response" (0 for every answer but NOTIMP).
            .set_op_code(OpCode::from_u8(req.opcode))
            .set_authoritative(self.aa)
            .set_truncated(truncated)
            // RD: "it is copied into the response"; CD: RFC 4035 §3.1.6 copies it too. Both
            // are QUERY's only: RFC 6895 §2 defines RD, AD and CD for it alone (other opcodes
            // carry their own meaning in those bits, none for a response), so an UPDATE or
            // NOTIFY response leaves them clear as BIND and Knot do.
            .set_recursion_desired(query && req.rd)
            .set_recursion_available(false)
            .set_authentic_data(false)
            .set_checking_disabled(query && req.cd)
            .set_response_code(self.rcode);
        if self.question {
            if let Some(q) = &req.question {
                msg.add_query(q.clone());
            }
        }
        if !truncated {
            msg.add_answers(std::mem::take(&mut self.answers))
                .add_name_servers(std::mem::take(&mut self.authority))
                .add_additionals(std::mem::take(&mut self.additional));
        }
        if self.opt {
            let mut edns = Edns::new();
            edns.set_max_payload(self.cfg.udp_payload)
                .set_version(0)
                .set_dnssec_ok(req.edns.is_some_and(|e| e.dnssec_ok));
            // RFC 5001 §2.2: "A name server that understands the NSID option and chooses to
            // honor a particular NSID request responds by including identifying information in
            // a NSID option in an EDNS OPT pseudo-RR in the response message."
            if let (Some(id), true) = (&self.cfg.nsid, req.edns.is_some_and(|e| e.nsid)) {
                edns.options_mut().insert(EdnsOption::Unknown(
                    dns_common::wire::OPTION_NSID,
                    id.clone(),
                ));
            }
            // RFC 7873 §5.2: a query with a client cookie gets our server cookie back.
            if let Some((data, _)) = &self.cookie {
                edns.options_mut().insert(EdnsOption::Unknown(
                    dns_common::limit::OPTION_COOKIE,
                    data.to_vec(),
                ));
            }
            msg.set_edns(edns);
        }
        msg
    }

    /// Encodes the response within the transport's size limit.
    pub fn finish(mut self, transport: Transport) -> Reply {
        let limit = match transport {
            Transport::Tcp => TCP_MAX,
            // RFC 6891 §6.2.3/§6.2.5: the requestor's payload size, capped by ours, never below
            // 512; without EDNS, 512 (RFC 1035 §4.2.1).
            Transport::Udp => match self.req.edns {
                Some(e) if self.opt => {
                    usize::from(e.payload.min(self.cfg.udp_payload)).max(UDP_MIN)
                }
                _ => UDP_MIN,
            },
        };
        // Room for the TSIG record a signed answer gets once encoded.
        let limit = limit - self.req.reserve;
        let full = self.message(false).to_vec();
        let (bytes, truncated) = match full {
            // hickory sets TC itself if even TCP's 64 KiB can't hold everything.
            Ok(bytes) if bytes.len() <= limit => {
                let tc = bytes.get(2).is_some_and(|b| b & 0x02 != 0);
                (bytes, tc)
            }
            Ok(_) => {
                // RFC 2181 §9: "the TC bit should be set [...] when the complete RRSet will not
                // fit"; like Knot and NSD we send the header, question and OPT only, and the
                // client retries over TCP (RFC 7766 §5).
                match self.message(true).to_vec() {
                    Ok(bytes) => (bytes, true),
                    Err(e) => return self.servfail(&e),
                }
            }
            Err(e) => return self.servfail(&e),
        };
        Reply {
            messages: vec![bytes],
            rcode: self.rcode,
            truncated,
            proved: self.cookie.is_some_and(|(_, valid)| valid),
        }
    }

    fn servfail(self, err: &hickory_proto::ProtoError) -> Reply {
        warn!(id = self.req.id, "encoding the response failed: {err}");
        let mut d = Draft::new(self.req, self.cfg, ResponseCode::ServFail);
        d.question = self.question;
        d.opt = self.opt;
        Reply {
            // A bare header and question always encode; if not, send nothing.
            messages: d.message(true).to_vec().into_iter().collect(),
            rcode: ResponseCode::ServFail,
            truncated: false,
            proved: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::{Header, Message, MessageType, OpCode, ResponseCode},
        rr::RecordType,
        serialize::binary::{BinDecodable, BinDecoder},
    };

    use super::{
        super::{handle, testutil::*},
        *,
    };

    #[test]
    fn header_flags() {
        let mut q = query("www.example.com.", RecordType::A);
        q.set_checking_disabled(true)
            .set_authentic_data(true)
            .set_recursion_available(true);
        let r = ask(&q);
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert_eq!(r.id(), ID);
        assert_eq!(r.message_type(), MessageType::Response);
        assert_eq!(r.op_code(), OpCode::Query);
        assert!(r.authoritative());
        assert!(!r.truncated());
        assert!(r.recursion_desired());
        assert!(r.checking_disabled());
        assert!(!r.recursion_available());
        assert!(!r.authentic_data());
        assert_eq!(r.answers().len(), 1);

        let mut q = query("www.example.com.", RecordType::A);
        q.set_recursion_desired(false);
        let out = handle(
            &zones(),
            &bytes(&q),
            Transport::Udp,
            &FallbackConfig::default(),
        )
        .expect("response");
        assert!(!Message::from_vec(&out).expect("parse").recursion_desired());
        // Z bit clear.
        assert_eq!(out[3] & 0x40, 0);
        let h = Header::read(&mut BinDecoder::new(&out)).expect("header");
        assert_eq!(h.answer_count(), 1);
    }

    #[test]
    fn question_case_is_echoed_and_answers_compress_to_it() {
        let q = query("WwW.ExAmPlE.cOm.", RecordType::A);
        let out = handle(
            &zones(),
            &bytes(&q),
            Transport::Udp,
            &FallbackConfig::default(),
        )
        .expect("response");
        let r = Message::from_vec(&out).expect("parse");
        assert!(r.queries()[0].name().eq_case(&n("WwW.ExAmPlE.cOm.")));
        assert!(r.answers()[0].name().eq_case(&n("WwW.ExAmPlE.cOm.")));
        // The question sits at offset 12; the answer's owner is a pointer to it.
        let answer_at = 12 + 17 + 4;
        assert_eq!(&out[answer_at..answer_at + 2], &[0xc0, 12]);
    }

    /// RFC 5001: the configured NSID goes to queries that carry an NSID option, and only to
    /// them; without one configured, nothing is added.
    #[test]
    fn nsid_is_answered_when_asked_and_configured() {
        use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
        let asking = || {
            let mut q = with_edns(query("www.example.com.", RecordType::A), 1232, false, 0);
            let e = q.extensions_mut().as_mut().expect("OPT");
            e.options_mut()
                .insert(EdnsOption::Unknown(u16::from(EdnsCode::NSID), Vec::new()));
            bytes(&q)
        };
        let nsid_of = |r: &Message| {
            r.extensions()
                .as_ref()
                .and_then(|e| e.option(EdnsCode::NSID).cloned())
        };
        let cfg = FallbackConfig {
            nsid: Some(b"edge-7".to_vec()),
            ..FallbackConfig::default()
        };
        let r = ask_raw(&zones(), &asking(), Transport::Udp, &cfg);
        assert_eq!(
            nsid_of(&r),
            Some(EdnsOption::Unknown(
                u16::from(EdnsCode::NSID),
                b"edge-7".to_vec()
            ))
        );
        assert_eq!(r.answers().len(), 1);
        let plain = bytes(&with_edns(
            query("www.example.com.", RecordType::A),
            1232,
            false,
            0,
        ));
        assert_eq!(
            nsid_of(&ask_raw(&zones(), &plain, Transport::Udp, &cfg)),
            None
        );
        let r = ask_raw(
            &zones(),
            &asking(),
            Transport::Udp,
            &FallbackConfig::default(),
        );
        assert_eq!(nsid_of(&r), None);
    }

    #[test]
    fn opt_is_echoed_with_do_only_when_asked() {
        let r = ask(&with_edns(
            query("www.example.com.", RecordType::A),
            4096,
            true,
            0,
        ));
        let e = r.extensions().as_ref().expect("OPT");
        assert_eq!(e.max_payload(), 1232);
        assert_eq!(e.version(), 0);
        assert!(e.flags().dnssec_ok);
        assert!(e.options().as_ref().is_empty());

        let r = ask(&with_edns(
            query("www.example.com.", RecordType::A),
            4096,
            false,
            0,
        ));
        assert!(!r.extensions().as_ref().expect("OPT").flags().dnssec_ok);

        let r = ask(&query("www.example.com.", RecordType::A));
        assert!(r.extensions().is_none());
    }

    #[test]
    fn truncates_to_the_transport_limit() {
        let cfg = FallbackConfig::default();
        let zs = zones();
        // 40 AAAA: 40 * 28 bytes > 512.
        let plain = bytes(&query("big.example.com.", RecordType::AAAA));
        let out = handle(&zs, &plain, Transport::Udp, &cfg).expect("response");
        assert!(out.len() <= 512);
        let r = Message::from_vec(&out).expect("parse");
        assert!(r.truncated());
        assert!(r.authoritative());
        assert_eq!(r.queries().len(), 1);
        assert!(r.answers().is_empty() && r.name_servers().is_empty());
        assert!(r.additionals().is_empty() && r.extensions().is_none());

        // EDNS 512: truncated, OPT kept.
        let small = bytes(&with_edns(
            query("big.example.com.", RecordType::AAAA),
            512,
            true,
            0,
        ));
        let r = ask_raw(&zs, &small, Transport::Udp, &cfg);
        assert!(r.truncated());
        assert!(r.extensions().is_some());

        // EDNS 4096 capped at our 1232: fits.
        let big = bytes(&with_edns(
            query("big.example.com.", RecordType::AAAA),
            4096,
            false,
            0,
        ));
        let r = ask_raw(&zs, &big, Transport::Udp, &cfg);
        assert!(!r.truncated());
        assert_eq!(r.answers().len(), 40);
        // Our own limit below the client's.
        let tight = FallbackConfig {
            udp_payload: 600,
            ..cfg.clone()
        };
        assert!(ask_raw(&zs, &big, Transport::Udp, &tight).truncated());

        // TCP: 64 KiB.
        let r = ask_raw(&zs, &plain, Transport::Tcp, &cfg);
        assert!(!r.truncated());
        assert_eq!(r.answers().len(), 40);
    }
}
