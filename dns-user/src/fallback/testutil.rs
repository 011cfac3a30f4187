//! What the fallback's unit tests share: a small zone, query builders, and the ask helpers.

use hickory_proto::{
    op::{Edns, Message, MessageType, Query, ResponseCode},
    rr::{
        rdata::{A, AAAA, MX, TXT},
        Name, RData, RecordType,
    },
};
use tokio::{io::AsyncReadExt, net::TcpStream};

use super::{handle, FallbackConfig, Transport};
use crate::zone::{ZoneSet, ZoneSpec};

pub const ID: u16 = 0xbeef;

pub fn n(s: &str) -> Name {
    Name::from_ascii(s).expect("test name")
}

pub fn apex() -> Name {
    n("example.com.")
}

/// example.com: www A, big AAAA×40.
pub fn zones() -> ZoneSet {
    let mut zs = ZoneSet::new();
    zs.create_zone(ZoneSpec::new(
        apex(),
        n("ns1.example.com."),
        n("hostmaster.example.com."),
        vec![n("ns1.example.com.")],
    ))
    .expect("zone");
    zs.set_rrset(
        &apex(),
        &n("www.example.com."),
        RecordType::A,
        300,
        vec![RData::A(A([192, 0, 2, 1].into()))],
    )
    .expect("www");
    let big = (1..=40u16)
        .map(|i| RData::AAAA(AAAA([0x2001, 0xdb8, 0, 0, 0, 0, 0, i].into())))
        .collect();
    zs.set_rrset(&apex(), &n("big.example.com."), RecordType::AAAA, 300, big)
        .expect("big");
    zs
}

/// [`zones`] with TXT and MX at www too: an ANY question with three RRsets to answer.
pub fn any_zones() -> ZoneSet {
    let mut zs = zones();
    let www = n("www.example.com.");
    zs.set_rrset(
        &apex(),
        &www,
        RecordType::TXT,
        300,
        vec![RData::TXT(TXT::new(vec!["x".repeat(200)]))],
    )
    .expect("txt");
    zs.set_rrset(
        &apex(),
        &www,
        RecordType::MX,
        300,
        vec![RData::MX(MX::new(10, n("mail.example.com.")))],
    )
    .expect("mx");
    zs
}

pub fn query(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::new();
    m.set_id(ID)
        .set_recursion_desired(true)
        .add_query(Query::query(n(name), qtype));
    m
}

pub fn with_edns(mut m: Message, payload: u16, dnssec_ok: bool, version: u8) -> Message {
    let mut e = Edns::new();
    e.set_max_payload(payload)
        .set_dnssec_ok(dnssec_ok)
        .set_version(version);
    m.set_edns(e);
    m
}

pub fn bytes(m: &Message) -> Vec<u8> {
    m.to_vec().expect("encode query")
}

pub fn ask_raw(zs: &ZoneSet, q: &[u8], t: Transport, cfg: &FallbackConfig) -> Message {
    let out = handle(zs, q, t, cfg).expect("a response");
    Message::from_vec(&out).expect("response parses")
}

pub fn ask(q: &Message) -> Message {
    ask_raw(
        &zones(),
        &bytes(q),
        Transport::Udp,
        &FallbackConfig::default(),
    )
}

pub fn rcode(m: &Message) -> u16 {
    u16::from(m.response_code())
}

/// A header with the given flags word and counts, then `rest`.
pub fn raw(flags: u16, counts: [u16; 4], rest: &[u8]) -> Vec<u8> {
    let mut b = ID.to_be_bytes().to_vec();
    b.extend_from_slice(&flags.to_be_bytes());
    for c in counts {
        b.extend_from_slice(&c.to_be_bytes());
    }
    b.extend_from_slice(rest);
    b
}

/// The wire question `www.example.com. A IN`.
pub fn www_question() -> Vec<u8> {
    let mut q = b"\x03www\x07example\x03com\x00".to_vec();
    q.extend_from_slice(&[0, 1, 0, 1]);
    q
}

pub fn formerr(q: &[u8]) -> Message {
    let r = ask_raw(&zones(), q, Transport::Udp, &FallbackConfig::default());
    assert_eq!(r.id(), ID);
    assert_eq!(r.message_type(), MessageType::Response);
    assert_eq!(r.response_code(), ResponseCode::FormErr);
    r
}

pub async fn read_frame(s: &mut TcpStream) -> Message {
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.expect("length");
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.expect("message");
    Message::from_vec(&buf).expect("parse")
}

pub fn frame(m: &Message) -> Vec<u8> {
    let b = bytes(m);
    let mut f = (b.len() as u16).to_be_bytes().to_vec();
    f.extend_from_slice(&b);
    f
}
