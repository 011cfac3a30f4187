//! Seeded fuzzing pieces shared by the benchmark's `fuzz` section and the tests: mutators of DNS
//! messages, frames and master files, a generator of query frames (valid and mutated) over the
//! [`fixture`] zones, and the checks each output must pass.
//!
//! Everything draws from one seeded RNG, so a run is reproduced from its seed alone.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use dns_user::{
    fallback::Transport,
    zone::{Zone, ZoneSet},
    zonefile,
};
use hickory_proto::{
    op::{Message, Query},
    rr::Name,
    serialize::binary::{BinDecodable, BinDecoder},
};
use rand::Rng;

use crate::{
    dns_message::{compare, question_bytes, QuerySpec, TYPE_A, TYPE_AAAA, TYPE_CNAME},
    fixture::Gen,
    packet::{build_frame, check_response_frame, parse_udp, FrameSpec},
    xdprun::fallback_udp,
};

/// RFC 1035 §4.2.1 / RFC 6891 §6.2.5: the UDP limit without EDNS, and the floor with it.
const UDP_MIN: usize = 512;
/// RFC 1035 §4.2.2: a TCP message's length is a 16-bit prefix.
const TCP_MAX: usize = 65535;

/// Lowercase hex of `bytes`, for reports a run can be reproduced from.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------------
// DNS message mutations

/// One mutation of DNS message bytes (header at 0, first question name at 12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DnsMutation {
    BitFlip,
    RandomByte,
    Truncate,
    Insert,
    Delete,
    HeaderCount,
    HeaderFlags,
    LabelLength,
    Pointer,
    Append,
    CaseFlip,
    Edns,
}

impl DnsMutation {
    pub const ALL: [DnsMutation; 12] = [
        DnsMutation::BitFlip,
        DnsMutation::RandomByte,
        DnsMutation::Truncate,
        DnsMutation::Insert,
        DnsMutation::Delete,
        DnsMutation::HeaderCount,
        DnsMutation::HeaderFlags,
        DnsMutation::LabelLength,
        DnsMutation::Pointer,
        DnsMutation::Append,
        DnsMutation::CaseFlip,
        DnsMutation::Edns,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DnsMutation::BitFlip => "bit flip",
            DnsMutation::RandomByte => "random byte",
            DnsMutation::Truncate => "truncation",
            DnsMutation::Insert => "byte insertion",
            DnsMutation::Delete => "byte deletion",
            DnsMutation::HeaderCount => "header count",
            DnsMutation::HeaderFlags => "header flags",
            DnsMutation::LabelLength => "label length",
            DnsMutation::Pointer => "compression pointer",
            DnsMutation::Append => "trailing bytes",
            DnsMutation::CaseFlip => "case bit of a name byte",
            DnsMutation::Edns => "OPT field",
        }
    }
}

/// Offsets of the label-length bytes of the (uncompressed) name at `off`, the root's included,
/// as far as the bytes go.
fn label_offsets(msg: &[u8], off: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut pos = off;
    while let Some(&l) = msg.get(pos) {
        out.push(pos);
        if l == 0 || l > 63 || out.len() > 128 {
            break;
        }
        pos += 1 + usize::from(l);
    }
    out
}

/// Offset of an OPT record right after the first question, if the message has one there.
fn opt_offset(msg: &[u8]) -> Option<usize> {
    let name = crate::dns_message::plain_name_len(msg, 12)?;
    let at = 12 + name + 4;
    (msg.get(at..at + 11)?[..3] == [0, 0, 41]).then_some(at)
}

/// A value that tends to sit on a boundary: 0, 1, the top of its range, or anything.
fn edgy_u16(rng: &mut impl Rng) -> u16 {
    match rng.random_range(0..6) {
        0 => 0,
        1 => 1,
        2 => 2,
        3 => 0xffff,
        4 => rng.random_range(3..16),
        _ => rng.random(),
    }
}

/// Applies `m` to `dns` (which may be of any length, empty included).
pub fn mutate_dns(rng: &mut impl Rng, dns: &mut Vec<u8>, m: DnsMutation) {
    let len = dns.len();
    match m {
        DnsMutation::BitFlip if len > 0 => {
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..len);
                dns[at] ^= 1 << rng.random_range(0..8);
            }
        }
        DnsMutation::RandomByte if len > 0 => {
            let at = rng.random_range(0..len);
            dns[at] = rng.random();
        }
        DnsMutation::Truncate if len > 0 => dns.truncate(rng.random_range(0..len)),
        DnsMutation::Insert => {
            let at = rng.random_range(0..=len);
            let n = rng.random_range(1..5);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            dns.splice(at..at, bytes);
        }
        DnsMutation::Delete if len > 0 => {
            let at = rng.random_range(0..len);
            let n = rng.random_range(1..5).min(len - at);
            dns.drain(at..at + n);
        }
        DnsMutation::HeaderCount if len >= 12 => {
            // QDCOUNT, ANCOUNT, NSCOUNT or ARCOUNT.
            let at = 4 + 2 * rng.random_range(0..4);
            dns[at..at + 2].copy_from_slice(&edgy_u16(rng).to_be_bytes());
        }
        DnsMutation::HeaderFlags if len >= 4 => {
            // QR, opcode, AA, TC, RD / RA, Z, AD, CD, RCODE: one field or all of them.
            if rng.random_bool(0.2) {
                dns[2] = rng.random();
                dns[3] = rng.random();
            } else {
                let bit = rng.random_range(0..16);
                let at = 2 + bit / 8;
                dns[at] ^= 0x80 >> (bit % 8);
            }
        }
        DnsMutation::LabelLength => {
            let labels = label_offsets(dns, 12);
            if labels.is_empty() {
                return mutate_dns(rng, dns, DnsMutation::BitFlip);
            }
            let at = labels[rng.random_range(0..labels.len())];
            let old = dns[at];
            dns[at] = match rng.random_range(0..7) {
                0 => old.wrapping_add(1),
                1 => old.wrapping_sub(1),
                2 => 0,
                3 => 63,
                4 => 64,                               // extended label type 0b01
                5 => 0x80 | rng.random_range(0..0x40), // reserved type 0b10
                _ => rng.random(),
            };
        }
        DnsMutation::Pointer => {
            // A pointer where a label starts: backwards to the header or the name itself,
            // at itself (a loop), forwards, past the end, or anywhere.
            let labels = label_offsets(dns, 12);
            let at = if labels.is_empty() {
                len
            } else {
                labels[rng.random_range(0..labels.len())]
            };
            let target: u16 = match rng.random_range(0..6) {
                0 => 12,
                1 => at as u16,
                2 => rng.random_range(0..12),
                3 => (at as u16).saturating_add(2),
                4 => (len as u16).saturating_add(rng.random_range(0..40)),
                _ => rng.random_range(0..0x4000),
            };
            let ptr = (0xc000 | (target & 0x3fff)).to_be_bytes();
            if rng.random_bool(0.5) {
                // Replace the rest of the name: keep what follows (type, class, ...).
                let end = labels.last().map_or(at, |&l| l + 1).clamp(at, len);
                dns.splice(at..end, ptr);
            } else {
                dns.splice(at.min(len)..at.min(len), ptr);
            }
        }
        DnsMutation::Append => {
            let n = rng.random_range(1..16);
            // Zeros look like an empty name or a root OPT owner; the rest is noise.
            dns.extend((0..n).map(|_| {
                if rng.random_bool(0.3) {
                    0
                } else {
                    rng.random()
                }
            }));
        }
        DnsMutation::CaseFlip => {
            // Bit 0x20 of any byte of a label: a letter changes case, anything else becomes a
            // byte that only a careless case fold would take for the original.
            let labels = label_offsets(dns, 12);
            let inner: Vec<usize> = labels
                .iter()
                .flat_map(|&at| (at + 1..=at + usize::from(dns[at]).min(63)).filter(|&i| i < len))
                .collect();
            if inner.is_empty() {
                return mutate_dns(rng, dns, DnsMutation::BitFlip);
            }
            dns[inner[rng.random_range(0..inner.len())]] ^= 0x20;
        }
        DnsMutation::Edns => {
            let Some(opt) = opt_offset(dns) else {
                return mutate_dns(rng, dns, DnsMutation::Append);
            };
            // Root owner (1), type (2), then CLASS = payload size, TTL = extended RCODE, version,
            // DO and Z, then RDLENGTH and the options.
            match rng.random_range(0..6) {
                0 => dns[opt + 3..opt + 5].copy_from_slice(&edgy_u16(rng).to_be_bytes()),
                1 => dns[opt + 5] = rng.random(),
                2 => dns[opt + 6] = [0, 1, 255][rng.random_range(0..3)],
                3 => dns[opt + 7 + rng.random_range(0..2)] ^= 0x80 >> rng.random_range(0..8),
                4 => {
                    let rdlen = u16::from_be_bytes([dns[opt + 9], dns[opt + 10]]);
                    let new = match rng.random_range(0..3) {
                        0 => rdlen.wrapping_add(1),
                        1 => rdlen.wrapping_sub(1),
                        _ => edgy_u16(rng),
                    };
                    dns[opt + 9..opt + 11].copy_from_slice(&new.to_be_bytes());
                }
                _ => {
                    // An option: {code, length, data}, its length right or not.
                    let code: u16 = [3, 8, 10, 12, 15, 65001][rng.random_range(0..6)];
                    let data: Vec<u8> =
                        (0..rng.random_range(0..12)).map(|_| rng.random()).collect();
                    let claimed = if rng.random_bool(0.7) {
                        data.len() as u16
                    } else {
                        edgy_u16(rng)
                    };
                    let mut o = code.to_be_bytes().to_vec();
                    o.extend_from_slice(&claimed.to_be_bytes());
                    o.extend_from_slice(&data);
                    let rdlen = u16::from_be_bytes([dns[opt + 9], dns[opt + 10]]);
                    let fixed = rdlen.wrapping_add(o.len() as u16);
                    dns[opt + 9..opt + 11].copy_from_slice(&fixed.to_be_bytes());
                    let end = (opt + 11 + usize::from(rdlen)).min(dns.len());
                    dns.splice(end..end, o);
                }
            }
        }
        // A mutation that needs bytes the message doesn't have.
        _ => dns.push(rng.random()),
    }
}

/// One to `max` random mutations; their names, in order.
pub fn mutate_dns_random(rng: &mut impl Rng, dns: &mut Vec<u8>, max: usize) -> Vec<DnsMutation> {
    let n = rng.random_range(1..=max);
    (0..n)
        .map(|_| {
            let m = DnsMutation::ALL[rng.random_range(0..DnsMutation::ALL.len())];
            mutate_dns(rng, dns, m);
            m
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Frames

/// How a fuzz frame was made.
#[derive(Clone, Debug)]
pub enum FrameKind {
    /// A well-formed query, framed with correct lengths and checksums: the oracle
    /// ([`crate::xdprun::expect`]) says what the program must do with it.
    Valid(QuerySpec),
    /// A query whose DNS bytes were mutated, framed with correct lengths and checksums.
    DnsMutated(Vec<DnsMutation>),
    /// Random DNS bytes (a plausible header, half of the time), framed correctly.
    RandomDns,
    /// A correctly framed query, then a change below DNS (any byte of the frame, a length, the
    /// cut of the frame), checksums left as they were.
    FrameMutated(&'static str),
}

impl FrameKind {
    pub fn label(&self) -> &'static str {
        match self {
            FrameKind::Valid(_) => "valid query",
            FrameKind::DnsMutated(_) => "mutated DNS",
            FrameKind::RandomDns => "random DNS",
            FrameKind::FrameMutated(_) => "mutated frame",
        }
    }
}

/// A generated frame.
#[derive(Clone, Debug)]
pub struct FuzzFrame {
    pub kind: FrameKind,
    pub spec: FrameSpec,
    pub frame: Vec<u8>,
}

/// Generates query frames over the [`fixture`](crate::fixture) zones: valid queries (A, AAAA,
/// CNAME and other types, random case, EDNS on and off with random payload sizes, DO and
/// options, IPv4 and IPv6, VLAN tags) and mutations of them.
pub struct FrameFuzzer {
    pub gen: Gen,
}

impl FrameFuzzer {
    pub fn new(seed: u64, zones: &ZoneSet, port: u16) -> Self {
        Self {
            gen: Gen::new(seed, zones, port),
        }
    }

    /// A query biased toward the types the fast path answers.
    fn query(&mut self) -> QuerySpec {
        let mut q = self.gen.query();
        if self.gen.rng.random_bool(0.3) {
            q.qtype = [TYPE_A, TYPE_AAAA, TYPE_CNAME][self.gen.rng.random_range(0..3)];
        }
        q
    }

    pub fn next_frame(&mut self) -> FuzzFrame {
        let mut spec = self.gen.frame();
        if self.gen.rng.random_bool(0.03) {
            special_endpoint(&mut self.gen.rng, &mut spec);
        }
        let pick = self.gen.rng.random_range(0..100);
        let (kind, frame) = if pick < 40 {
            let q = self.query();
            let frame = build_frame(&spec, &q.to_wire());
            (FrameKind::Valid(q), frame)
        } else if pick < 80 {
            let mut dns = self.query().to_wire();
            let ms = mutate_dns_random(&mut self.gen.rng, &mut dns, 3);
            (FrameKind::DnsMutated(ms), build_frame(&spec, &dns))
        } else if pick < 88 {
            let rng = &mut self.gen.rng;
            let len = rng.random_range(0..300);
            let mut dns: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            if len >= 12 && rng.random_bool(0.5) {
                dns[2] &= 0x01; // QR 0, opcode QUERY, TC 0
                dns[3] &= 0x30;
                dns[4..12].copy_from_slice(&[0, 1, 0, 0, 0, 0, 0, rng.random_range(0..2)]);
            }
            (FrameKind::RandomDns, build_frame(&spec, &dns))
        } else {
            let dns = self.query().to_wire();
            let mut frame = build_frame(&spec, &dns);
            let what = mutate_frame(&mut self.gen.rng, &spec, &mut frame);
            (FrameKind::FrameMutated(what), frame)
        };
        FuzzFrame { kind, spec, frame }
    }

    /// A DNS message for the fallback's parser: random bytes, a valid query (AXFR and IXFR
    /// included), or a query with up to four mutations.
    pub fn message(&mut self) -> Vec<u8> {
        let pick = self.gen.rng.random_range(0..100);
        if pick < 15 {
            let rng = &mut self.gen.rng;
            let len = rng.random_range(0..600);
            return (0..len).map(|_| rng.random()).collect();
        }
        let mut q = self.gen.query();
        if self.gen.rng.random_bool(0.05) {
            // AXFR, IXFR: the transfer path reads the question too.
            q.qtype = if self.gen.rng.random_bool(0.5) {
                252
            } else {
                251
            };
        }
        let mut dns = q.to_wire();
        if pick >= 25 {
            mutate_dns_random(&mut self.gen.rng, &mut dns, 4);
        }
        dns
    }

    /// True with probability `p`.
    pub fn coin(&mut self, p: f64) -> bool {
        self.gen.rng.random_bool(p)
    }

    /// A number in `lo..hi`.
    pub fn below(&mut self, lo: usize, hi: usize) -> usize {
        self.gen.rng.random_range(lo..hi)
    }
}

/// Addresses and ports a host treats apart: a source or destination that is multicast,
/// broadcast, unspecified or loopback, a source port of 0. Correct checksums still.
fn special_endpoint(rng: &mut impl Rng, spec: &mut FrameSpec) {
    const V4: [[u8; 4]; 6] = [
        [0, 0, 0, 0],
        [127, 0, 0, 1],
        [224, 0, 0, 251],
        [239, 255, 255, 250],
        [255, 255, 255, 255],
        [0, 1, 2, 3],
    ];
    const V6: [u128; 5] = [
        0,
        1,
        0xff02_0000_0000_0000_0000_0000_0000_0001,
        0xff05_0000_0000_0000_0000_0000_0001_0003,
        0xffff_7f00_0001, // ::ffff:127.0.0.1
    ];
    let addr = |rng: &mut dyn rand::RngCore, v6: bool| -> IpAddr {
        if v6 {
            IpAddr::from(Ipv6Addr::from(V6[rng.random_range(0..V6.len())]))
        } else {
            IpAddr::from(Ipv4Addr::from(V4[rng.random_range(0..V4.len())]))
        }
    };
    let v6 = spec.v6();
    match rng.random_range(0..3) {
        0 => spec.src_ip = addr(rng, v6),
        1 => spec.dst_ip = addr(rng, v6),
        _ => spec.sport = [0, 7, 19, 53, 123][rng.random_range(0..5)],
    }
}

/// Why the host's own stack would never hand `frame` to a UDP socket, or could not answer it on
/// the wire, if it is one of those: a multicast, broadcast, 0.0.0.0/8 or loopback IPv4 source, a
/// multicast or loopback IPv6 source (Linux drops these as martians: `ip_route_input_slow`,
/// `ipv6_rcv`), a destination in 0.0.0.0/8, a multicast destination (no group is joined), a
/// loopback destination arriving on a real interface, an unspecified IPv6 address (a reply to
/// `::` goes to the host itself), a source port of 0 (nothing can be sent to it). An answer to
/// such a frame is one the fallback would never have put on the wire.
pub fn host_drops(frame: &[u8]) -> Option<&'static str> {
    let p = parse_udp(frame)?;
    if p.sport == 0 {
        return Some("source port 0");
    }
    match (p.src_ip, p.dst_ip) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            if s.is_multicast() || s.is_broadcast() {
                Some("IPv4 source multicast or broadcast")
            } else if s.octets()[0] == 0 {
                Some("IPv4 source in 0.0.0.0/8")
            } else if s.is_loopback() || d.is_loopback() {
                Some("IPv4 loopback address on the wire")
            } else if d.octets()[0] == 0 {
                Some("IPv4 destination in 0.0.0.0/8")
            } else if d.is_multicast() {
                Some("IPv4 multicast destination")
            } else {
                None
            }
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            if s.is_multicast() {
                Some("IPv6 source multicast")
            } else if s.is_loopback() || d.is_loopback() {
                Some("IPv6 loopback address on the wire")
            } else if s.is_unspecified() || d.is_unspecified() {
                Some("IPv6 address unspecified")
            } else if d.is_multicast() {
                Some("IPv6 multicast destination")
            } else {
                None
            }
        }
        _ => None,
    }
}

/// Changes a well-formed frame below DNS, checksums left alone; returns what it did.
fn mutate_frame(rng: &mut impl Rng, spec: &FrameSpec, frame: &mut Vec<u8>) -> &'static str {
    let (l3, l4) = (spec.l3(), spec.l4());
    match rng.random_range(0..6) {
        0 => {
            let at = rng.random_range(0..frame.len());
            frame[at] ^= 1 << rng.random_range(0..8);
            "bit flip anywhere"
        }
        1 => {
            // In the IP and UDP headers, where lengths, protocol and ports are.
            let at = rng.random_range(l3..l4 + 8);
            frame[at] ^= 1 << rng.random_range(0..8);
            "bit flip in the IP/UDP headers"
        }
        2 => {
            let at = l4 + 4;
            frame[at..at + 2].copy_from_slice(&edgy_u16(rng).to_be_bytes());
            "UDP length"
        }
        3 => {
            let at = if spec.v6() { l3 + 4 } else { l3 + 2 };
            frame[at..at + 2].copy_from_slice(&edgy_u16(rng).to_be_bytes());
            "IP length"
        }
        4 => {
            let cut = rng.random_range(14..frame.len());
            frame.truncate(cut);
            "frame cut"
        }
        _ => {
            // The UDP checksum alone (IPv4 allows 0, "none").
            let at = l4 + 6;
            frame[at..at + 2].copy_from_slice(&rng.random::<u16>().to_be_bytes());
            "UDP checksum"
        }
    }
}

/// Checks an XDP_TX: `out` must be a well-formed response frame to `frame`, and its DNS payload
/// exactly what the fallback answers to the query's DNS bytes. Returns the DNS payload.
pub fn check_tx(zones: &ZoneSet, frame: &[u8], out: &[u8]) -> Result<Vec<u8>, String> {
    let payload = check_response_frame(frame, out)?;
    let query = parse_udp(frame)
        .ok_or("the query frame does not parse")?
        .payload;
    let fb = fallback_udp(zones, &query).ok_or("the fallback would not answer this at all")?;
    compare(&query, &payload, &fb)?;
    Ok(payload)
}

/// Whether the checksums a host verifies on receipt hold: the IPv4 header's and the UDP
/// checksum (0 for "none" is fine over IPv4). `false` if the frame does not parse.
pub fn checksums_ok(frame: &[u8]) -> bool {
    let Some(p) = parse_udp(frame) else {
        return false;
    };
    let ip_ok =
        p.v6 || crate::packet::fold(crate::packet::sum16(&frame[p.l3..p.l3 + 20])) == 0xffff;
    ip_ok && crate::packet::udp_checksum_ok(frame)
}

/// A DNS message for a report: decoded if it decodes, and in hex.
pub fn show_dns(bytes: &[u8]) -> String {
    match Message::from_vec(bytes) {
        Ok(m) => format!("{}\n      hex {}", m.to_string().trim_end(), hex(bytes)),
        Err(e) => format!("(does not decode: {e}) hex {}", hex(bytes)),
    }
}

// ---------------------------------------------------------------------------------------------
// The fallback's answers

/// Checks what the fallback did with the message `query` that came over `transport`: nothing for
/// a message shorter than a header or a response (QR=1); otherwise a message that decodes,
/// carries the query's ID, is a response, echoes the question as sent (if it echoes one and the
/// query's name is uncompressed), and fits the transport: TCP's 65,535 bytes; over UDP, 512 bytes
/// without our OPT, and with it the client's payload size capped by `udp_payload`, never below
/// 512 (RFC 6891 §6.2.5).
pub fn check_fallback_reply(
    query: &[u8],
    transport: Transport,
    udp_payload: u16,
    reply: Option<&[u8]>,
) -> Result<(), String> {
    let must_drop = query.len() < 12 || query[2] & 0x80 != 0;
    let Some(reply) = reply else {
        return if must_drop {
            Ok(())
        } else {
            Err("no answer to a query".into())
        };
    };
    if must_drop {
        return Err("answered a message it must drop (short, or QR=1)".into());
    }
    let m = Message::from_vec(reply).map_err(|e| format!("the answer does not decode: {e}"))?;
    if reply.len() < 12 || reply[..2] != query[..2] {
        return Err(format!("ID {:04x} is not the query's", m.id()));
    }
    if reply[2] & 0x80 == 0 {
        return Err("the answer has QR=0".into());
    }
    let limit = match transport {
        Transport::Tcp => TCP_MAX,
        Transport::Udp => match m.extensions() {
            None => UDP_MIN,
            Some(_) => {
                // The client's size, read by an independent parser; if that parser refuses the
                // query, only our own ceiling is known.
                let client = Message::from_vec(query)
                    .ok()
                    .and_then(|q| q.extensions().as_ref().map(|e| e.max_payload()))
                    .unwrap_or(udp_payload);
                usize::from(client.min(udp_payload)).max(UDP_MIN)
            }
        },
    };
    if reply.len() > limit {
        return Err(format!(
            "{} bytes over {transport:?}, the limit is {limit}",
            reply.len()
        ));
    }
    if !m.queries().is_empty() {
        if let (Some(q), Some(r)) = (question_bytes(query), question_bytes(reply)) {
            if q != r {
                return Err(format!("question {} is not the query's {}", hex(r), hex(q)));
            }
        }
    }
    Ok(())
}

/// The type of the first question of `msg`, if it reads (compressed names included).
fn first_qtype(msg: &[u8]) -> Option<u16> {
    let mut d = BinDecoder::new(msg);
    d.read_slice(12).ok()?;
    Query::read(&mut d).ok().map(|q| u16::from(q.query_type()))
}

/// Checks that the fallback treats the same message alike over UDP and TCP: both answered or
/// neither; the same bytes, unless the question is ANY (one RRset over UDP, RFC 8482), a zone
/// transfer (TCP only) or the UDP answer is truncated (then the same RCODE).
pub fn check_udp_tcp_alike(
    query: &[u8],
    udp: Option<&[u8]>,
    tcp: Option<&[u8]>,
) -> Result<(), String> {
    let (u, t) = match (udp, tcp) {
        (None, None) => return Ok(()),
        (Some(u), Some(t)) => (u, t),
        (u, _) => {
            return Err(format!(
                "answered over {} only",
                if u.is_some() { "UDP" } else { "TCP" }
            ))
        }
    };
    if matches!(first_qtype(query), Some(251 | 252 | 255)) || u == t {
        return Ok(());
    }
    let truncated = u.len() > 2 && u[2] & 0x02 != 0;
    let rcode = |m: &[u8]| Message::from_vec(m).ok().map(|m| m.response_code());
    if truncated && rcode(u) == rcode(t) {
        return Ok(());
    }
    Err(format!(
        "UDP and TCP answers differ\n  UDP {}\n  TCP {}",
        show_dns(u),
        show_dns(t)
    ))
}

// ---------------------------------------------------------------------------------------------
// Master files

/// Tokens that sit on the edges of the master-file syntax.
const ZONE_TOKENS: &[&str] = &[
    "@",
    "*",
    ".",
    "..",
    "\\",
    "\\.",
    "\\0",
    "\\255",
    "\\256",
    "\\999",
    "\"",
    "\"\"",
    "(",
    ")",
    "((",
    "))",
    ";",
    "$TTL",
    "$ORIGIN",
    "$INCLUDE",
    "$GENERATE",
    "IN",
    "CH",
    "ANY",
    "SOA",
    "NS",
    "A",
    "AAAA",
    "CNAME",
    "MX",
    "TXT",
    "SRV",
    "CAA",
    "PTR",
    "TYPE65534",
    "CLASS1",
    "\\# 0",
    "\\# 4 01020304",
    "0",
    "-1",
    "1",
    "65535",
    "65536",
    "2147483647",
    "2147483648",
    "4294967295",
    "4294967296",
    "99999999999999999999",
    "1w",
    "1h30m",
    "1x",
    "2w3d4h5m6s",
    "0.0.0.0",
    "255.255.255.255",
    "256.1.1.1",
    "::",
    "::1",
    "1::2::3",
    "2001:db8::ffff:1.2.3.4",
    "xn--",
    "-",
    "_srv._tcp",
    "a.b.c.d.e.f.g.h.i.j.k.l.m.n.o.p",
    "issue",
    "iodef",
    "\"v=spf1 -all\"",
    "\t",
    "\r",
    "\u{0}",
    "\u{7f}",
    "é",
    "ﬀ",
];

/// A long label or name, to hit the 63 and 255 byte limits.
fn long_token(rng: &mut impl Rng) -> String {
    match rng.random_range(0..4) {
        0 => "a".repeat(rng.random_range(62..66)),
        1 => vec!["b".repeat(63); 4].join(".") + ".",
        2 => vec!["c".repeat(63); rng.random_range(3..5)].join("."),
        _ => format!("\"{}\"", "t".repeat(rng.random_range(254..258))),
    }
}

/// One random change to a master file, line, token or byte.
pub fn mutate_zone_text(rng: &mut impl Rng, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    if lines.is_empty() {
        lines.push(String::new());
    }
    let li = rng.random_range(0..lines.len());
    match rng.random_range(0..9) {
        0 => {
            lines.remove(li);
        }
        1 => {
            let l = lines[li].clone();
            lines.insert(rng.random_range(0..=lines.len()), l);
        }
        2 => {
            let lj = rng.random_range(0..lines.len());
            lines.swap(li, lj);
        }
        3 | 4 => {
            // Replace, insert or delete a token of the line.
            let mut toks: Vec<String> = lines[li].split(' ').map(str::to_owned).collect();
            let ti = rng.random_range(0..toks.len());
            let new = if rng.random_bool(0.15) {
                long_token(rng)
            } else {
                ZONE_TOKENS[rng.random_range(0..ZONE_TOKENS.len())].to_owned()
            };
            match rng.random_range(0..3) {
                0 => toks[ti] = new,
                1 => toks.insert(ti, new),
                _ => {
                    toks.remove(ti);
                }
            }
            lines[li] = toks.join(" ");
        }
        5 => {
            // A blank first: the line's owner becomes the previous line's.
            lines[li].insert(0, if rng.random_bool(0.5) { ' ' } else { '\t' });
        }
        6 => {
            // Parentheses across lines.
            let lj = rng.random_range(li..lines.len());
            lines[li].push_str(" (");
            lines[lj].push_str(" )");
        }
        _ => {
            // Bytes: flipped, inserted or deleted anywhere in the line (kept UTF-8).
            let mut b = lines[li].clone().into_bytes();
            let at = rng.random_range(0..=b.len());
            match rng.random_range(0..3) {
                0 if at < b.len() => b[at] ^= 1 << rng.random_range(0..7),
                1 if at < b.len() => {
                    b.remove(at);
                }
                _ => {
                    const SPECIAL: &[u8] = b"\"\\;()$@.* \t\n0-";
                    b.insert(at, SPECIAL[rng.random_range(0..SPECIAL.len())]);
                }
            }
            lines[li] = String::from_utf8_lossy(&b).into_owned();
        }
    }
    let mut out = lines.join("\n");
    if rng.random_bool(0.9) {
        out.push('\n');
    }
    out
}

/// What became of one master file.
#[derive(Debug, PartialEq, Eq)]
pub enum ZoneFileOutcome {
    Refused,
    /// Accepted, loaded, exported and read back as the same data.
    RoundTripped,
}

/// Parses `text` (as the zone `zone`, or as the zone its SOA names) and, if the parser accepts
/// it, checks that it loads and that its export reads back as the same data, byte for byte
/// (names' case included): the export of the data read back is the export of the data.
pub fn zone_file_round_trip(text: &str, zone: Option<&Name>) -> Result<ZoneFileOutcome, String> {
    let Ok(zf) = zonefile::parse("fuzz.db", text, zone) else {
        return Ok(ZoneFileOutcome::Refused);
    };
    let first = load(&zf).map_err(|e| format!("accepted, but does not load: {e}"))?;
    let z1 = first
        .zone(zf.apex())
        .ok_or("accepted, loaded, but no zone")?;
    let exported = zonefile::export(z1);
    let back = zonefile::parse("export", &exported, Some(z1.apex()))
        .map_err(|e| format!("its export does not parse: {e}\n--- export\n{exported}"))?;
    if !back.same_data(z1) {
        return Err(format!(
            "its export reads back as other data\n--- export\n{exported}"
        ));
    }
    let second = load(&back).map_err(|e| format!("its export does not load: {e}"))?;
    let z2 = second.zone(back.apex()).ok_or("no zone read back")?;
    let again = zonefile::export(z2);
    if again != exported || z2.serial() != z1.serial() {
        return Err(format!(
            "export, parse, export differs\n--- first\n{exported}--- second\n{again}"
        ));
    }
    Ok(ZoneFileOutcome::RoundTripped)
}

fn load(zf: &zonefile::ZoneFile) -> Result<ZoneSet, String> {
    let mut set = ZoneSet::new();
    set.load_zone(zf.spec.clone(), zf.rrsets.clone())
        .map_err(|e| e.to_string())?;
    Ok(set)
}

/// Master files to start mutating from: every [`fixture`](crate::fixture) zone exported, and a
/// zone with a record of every type the zone model stores, with escapes, exported.
pub fn seed_zone_files(zones: &ZoneSet) -> Vec<(Name, String)> {
    let mut out: Vec<(Name, String)> = zones
        .zones()
        .map(|z: &Zone| (z.apex().clone(), zonefile::export(z)))
        .collect();
    let every_type = "$ORIGIN every.test.\n$TTL 1h\n\
        @ IN SOA ns1 hostmaster.every.test. 2024010101 7200 3600 1209600 300\n\
        @ 3600 IN NS ns1\n@ IN NS ns2.example.net.\nns1 IN A 192.0.2.1\n\
        www 300 IN A 192.0.2.2\nwww 300 IN A 192.0.2.3\nwww IN AAAA 2001:db8::1\n\
        alias IN CNAME www\n@ IN MX 10 mail.every.test.\nmail IN A 192.0.2.4\n\
        txt IN TXT \"hello world\" \"with \\\"quotes\\\" and \\\\ and \\059\" plain\n\
        _sip._tcp IN SRV 10 60 5060 sip.every.test.\nsip IN A 192.0.2.5\n\
        @ IN CAA 0 issue \"ca.example.net\"\n@ IN CAA 128 iodef \"mailto:x@every.test\"\n\
        4.2.0.192.in-addr IN PTR www.every.test.\n*.wild IN A 192.0.2.6\n\
        Mixed.Case IN A 192.0.2.7\nesc\\.aped\\032label IN TXT \"a;b\" ( \"c\"\n  \"d\" )\n\
        deleg IN NS ns.deleg\nns.deleg IN A 192.0.2.8\n";
    let apex = Name::from_ascii("every.test.").expect("a name");
    let zf = zonefile::parse("every.db", every_type, Some(&apex))
        .unwrap_or_else(|e| panic!("the seed zone with every type: {e}"));
    let set = load(&zf).unwrap_or_else(|e| panic!("the seed zone with every type: {e}"));
    out.push((
        apex.clone(),
        zonefile::export(set.zone(&apex).expect("loaded")),
    ));
    out
}

/// The seed zones, one of them (picked at random) replaced by an accepted mutant of itself: zone
/// data nobody wrote by hand, for the compiler and the fast path. `None` if no mutant was
/// accepted in a few tries. Returns the zones and the mutant's apex.
pub fn mutated_zone_set(rng: &mut impl Rng, seeds: &[(Name, String)]) -> Option<(ZoneSet, Name)> {
    let pick = rng.random_range(0..seeds.len());
    let (apex, text) = &seeds[pick];
    let mutant = (0..50).find_map(|_| {
        let mut t = text.clone();
        for _ in 0..rng.random_range(1..5) {
            t = mutate_zone_text(rng, &t);
        }
        zonefile::parse("mutant.db", &t, Some(apex)).ok()
    })?;
    let mut set = ZoneSet::new();
    for (i, (a, t)) in seeds.iter().enumerate() {
        let zf = if i == pick {
            mutant.clone()
        } else {
            zonefile::parse("seed.db", t, Some(a)).ok()?
        };
        set.load_zone(zf.spec, zf.rrsets).ok()?;
    }
    Some((set, apex.clone()))
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, SeedableRng};

    use super::*;
    use crate::fixture;

    /// The seeds round-trip unmutated (else every mutation would be judged against a broken
    /// start), and the fixture's valid frames parse as the frames they claim to be.
    #[test]
    fn seeds_round_trip_and_frames_parse() {
        let zones = fixture::zones();
        let seeds = seed_zone_files(&zones);
        assert!(seeds.len() >= 7);
        for (apex, text) in &seeds {
            assert_eq!(
                zone_file_round_trip(text, Some(apex)),
                Ok(ZoneFileOutcome::RoundTripped),
                "{text}"
            );
        }
        let mut f = FrameFuzzer::new(1, &zones, 5300);
        let mut valid = 0;
        for _ in 0..500 {
            let ff = f.next_frame();
            if let FrameKind::Valid(q) = &ff.kind {
                valid += 1;
                let p = parse_udp(&ff.frame).expect("a valid frame parses");
                assert_eq!(p.payload, q.to_wire());
                assert!(crate::packet::udp_checksum_ok(&ff.frame));
            }
        }
        assert!(valid > 100, "{valid}");
    }

    #[test]
    fn mutations_of_an_empty_message_do_not_panic() {
        let mut rng = StdRng::seed_from_u64(7);
        for m in DnsMutation::ALL {
            for len in [0usize, 1, 5, 12, 13] {
                let mut dns = vec![0u8; len];
                mutate_dns(&mut rng, &mut dns, m);
            }
        }
        for _ in 0..200 {
            let _ = mutate_zone_text(&mut rng, "");
            let _ = mutate_zone_text(&mut rng, "a\n");
        }
    }

    #[test]
    fn the_reply_check_catches_what_it_must() {
        let q = QuerySpec::new(0x1234, "a1.example.com.", TYPE_A).to_wire();
        let zones = fixture::zones();
        let r = fallback_udp(&zones, &q).expect("answer");
        assert_eq!(
            check_fallback_reply(&q, Transport::Udp, 1232, Some(&r)),
            Ok(())
        );
        let mut other = r.clone();
        other[1] ^= 1;
        assert!(check_fallback_reply(&q, Transport::Udp, 1232, Some(&other)).is_err());
        let mut big = r.clone();
        big.extend(std::iter::repeat_n(0u8, 600));
        assert!(check_fallback_reply(&q, Transport::Udp, 1232, Some(&big)).is_err());
        assert!(check_fallback_reply(&q, Transport::Udp, 1232, None).is_err());
        assert_eq!(
            check_fallback_reply(&q[..11], Transport::Udp, 1232, None),
            Ok(())
        );
    }

    #[test]
    fn host_drops_martians_only() {
        let dns = QuerySpec::new(1, "a1.example.com.", TYPE_A).to_wire();
        let frame = |src: &str, dst: &str| {
            build_frame(
                &FrameSpec::udp(src.parse().unwrap(), dst.parse().unwrap()),
                &dns,
            )
        };
        assert_eq!(host_drops(&frame("192.0.2.1:4000", "192.0.2.2:53")), None);
        assert_eq!(
            host_drops(&frame("[2001:db8::1]:4000", "[2001:db8::2]:53")),
            None
        );
        for (src, dst) in [
            ("224.0.0.251:4000", "192.0.2.2:53"),
            ("255.255.255.255:4000", "192.0.2.2:53"),
            ("0.0.0.0:4000", "192.0.2.2:53"),
            ("127.0.0.1:4000", "192.0.2.2:53"),
            ("192.0.2.1:4000", "239.1.2.3:53"),
            ("192.0.2.1:0", "192.0.2.2:53"),
            ("[ff02::1]:4000", "[2001:db8::2]:53"),
            ("[::1]:4000", "[2001:db8::2]:53"),
            ("[2001:db8::1]:4000", "[ff05::1:3]:53"),
        ] {
            assert!(host_drops(&frame(src, dst)).is_some(), "{src} -> {dst}");
        }
    }

    #[test]
    fn udp_and_tcp_alike_except_where_allowed() {
        let zones = fixture::zones();
        let cfg = dns_user::fallback::FallbackConfig::default();
        let ask = |q: &[u8], t| dns_user::fallback::handle(&zones, q, t, &cfg);
        for (name, qtype) in [("a1.example.com.", TYPE_A), ("example.com.", 255)] {
            let q = QuerySpec::new(9, name, qtype).to_wire();
            let (u, t) = (ask(&q, Transport::Udp), ask(&q, Transport::Tcp));
            assert_eq!(check_udp_tcp_alike(&q, u.as_deref(), t.as_deref()), Ok(()));
        }
        let q = QuerySpec::new(9, "a1.example.com.", TYPE_A).to_wire();
        let u = ask(&q, Transport::Udp).expect("answer");
        let mut other = u.clone();
        other[3] ^= 0x0f; // another RCODE
        assert!(check_udp_tcp_alike(&q, Some(&u), Some(&other)).is_err());
        assert!(check_udp_tcp_alike(&q, Some(&u), None).is_err());
    }

    #[test]
    fn mutated_zone_sets_hold_every_seed_zone() {
        let zones = fixture::zones();
        let seeds = seed_zone_files(&zones);
        let mut rng = StdRng::seed_from_u64(3);
        let mut made = 0;
        for _ in 0..20 {
            if let Some((set, apex)) = mutated_zone_set(&mut rng, &seeds) {
                made += 1;
                assert_eq!(set.zones().count(), seeds.len());
                assert!(set.zone(&apex).is_some());
            }
        }
        assert!(made > 10, "{made} of 20");
    }
}
