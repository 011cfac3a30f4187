//! Query frames for `BPF_PROG_TEST_RUN`: Ethernet, IPv4 or IPv6, UDP with a correct checksum,
//! and a DNS query built by hickory.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query},
    rr::{Name, RecordType},
    serialize::binary::BinEncodable as _,
};

pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// A DNS query message: RD off, one question, an OPT (payload 1232) if `edns`.
pub fn query(id: u16, name: &str, rtype: RecordType, edns: bool) -> Vec<u8> {
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(false)
        .add_query(Query::query(
            Name::from_ascii(name).expect("query name"),
            rtype,
        ));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        msg.set_edns(e);
    }
    msg.to_bytes().expect("encode query")
}

fn sum(bytes: &[u8], mut acc: u32) -> u32 {
    for pair in bytes.chunks(2) {
        let w = if pair.len() == 2 {
            u16::from_be_bytes([pair[0], pair[1]])
        } else {
            u16::from_be_bytes([pair[0], 0])
        };
        acc += u32::from(w);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// A UDP datagram from `src:sport` to `dst:dport` in an Ethernet frame.
pub fn udp_frame(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut f = Vec::new();
    f.extend_from_slice(&SERVER_MAC);
    f.extend_from_slice(&CLIENT_MAC);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            f.extend_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = vec![0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0];
            ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let c = fold(sum(&ip, 0));
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            let pseudo = sum(&s.octets(), sum(&d.octets(), 17 + udp_len as u32));
            let c = fold(sum(&udp, pseudo));
            udp[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
            f.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            f.extend_from_slice(&0x86ddu16.to_be_bytes());
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&(udp_len as u16).to_be_bytes());
            ip.extend_from_slice(&[17, 64]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&d.octets());
            let pseudo = sum(&s.octets(), sum(&d.octets(), 17 + udp_len as u32));
            let c = fold(sum(&udp, pseudo));
            udp[6..8].copy_from_slice(&(if c == 0 { 0xffff } else { c }).to_be_bytes());
            f.extend_from_slice(&ip);
        }
        _ => panic!("mixed address families"),
    }
    f.extend_from_slice(&udp);
    f
}

pub const V4_CLIENT: Ipv4Addr = Ipv4Addr::new(10, 212, 0, 2);
pub const V4_SERVER: Ipv4Addr = Ipv4Addr::new(10, 212, 0, 1);
pub const V6_CLIENT: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x212, 0, 0, 0, 0, 0, 2);
pub const V6_SERVER: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x212, 0, 0, 0, 0, 0, 1);

/// The DNS payload of a UDP frame (IPv4 without options or IPv6 without extension headers).
pub fn dns_payload(frame: &[u8]) -> Option<&[u8]> {
    let l4 = match u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]) {
        0x0800 => 14 + 20,
        0x86dd => 14 + 40,
        _ => return None,
    };
    frame.get(l4 + 8..)
}

/// Whether the UDP checksum of a frame is right (0 counts as right for IPv4).
pub fn udp_checksum_ok(frame: &[u8]) -> bool {
    let Some(et) = frame.get(12..14) else {
        return false;
    };
    let (src, dst, l4): (&[u8], &[u8], usize) = match u16::from_be_bytes([et[0], et[1]]) {
        0x0800 => (&frame[26..30], &frame[30..34], 34),
        0x86dd => (&frame[22..38], &frame[38..54], 54),
        _ => return false,
    };
    let Some(udp) = frame.get(l4..) else {
        return false;
    };
    let len = u16::from_be_bytes([udp[4], udp[5]]) as usize;
    if len > udp.len() {
        return false;
    }
    if et == [0x08, 0x00] && udp[6..8] == [0, 0] {
        return true;
    }
    let pseudo = sum(src, sum(dst, 17 + len as u32));
    fold(sum(&udp[..len], pseudo)) == 0
}
