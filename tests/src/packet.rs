//! Ethernet / 802.1Q / IPv4 / IPv6 / UDP frames: a builder for queries and a checker for the
//! responses the XDP program writes in place (for `BPF_PROG_TEST_RUN`, see [`crate::xdprun`],
//! for raw sockets, see [`crate::rawsock`], and for the benchmark's per-packet section).
//!
//! The checker is written from the RFCs, not from the program: it recomputes every checksum
//! (IPv4 header, UDP over the IPv4 or IPv6 pseudo-header) and every length from scratch.

use std::net::{IpAddr, SocketAddr};

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const IPPROTO_UDP: u8 = 17;
/// The MAC addresses of [`FrameSpec::udp`] (locally administered).
pub const CLIENT_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
pub const SERVER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// How a query frame is framed, below DNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameSpec {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// The 802.1Q TCI (priority, DEI, VLAN id), if the frame is tagged.
    pub vlan: Option<u16>,
    /// Both of the same family.
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// IPv4 identification / IPv6 flow label (low 20 bits), to check they are left alone.
    pub ip_id: u32,
    /// IPv4 TOS / IPv6 traffic class.
    pub tos: u8,
    /// IPv4 TTL / IPv6 hop limit of the query.
    pub ttl: u8,
    /// Send the IPv4 UDP checksum as 0 ("none"); IPv6 always carries one.
    pub v4_no_udp_csum: bool,
    /// Ethernet padding after the IP packet (NICs pad short frames to 60 bytes).
    pub padding: usize,
}

impl FrameSpec {
    /// A plain frame from `src` to `dst` (both of one family): [`CLIENT_MAC`] to [`SERVER_MAC`],
    /// untagged, IPv4 identification / IPv6 flow label 0, TOS 0, TTL 64, UDP checksum set, no
    /// padding.
    pub fn udp(src: SocketAddr, dst: SocketAddr) -> Self {
        assert_eq!(
            src.is_ipv6(),
            dst.is_ipv6(),
            "{src} and {dst} are of different families"
        );
        Self {
            src_mac: CLIENT_MAC,
            dst_mac: SERVER_MAC,
            vlan: None,
            src_ip: src.ip(),
            dst_ip: dst.ip(),
            sport: src.port(),
            dport: dst.port(),
            ip_id: 0,
            tos: 0,
            ttl: 64,
            v4_no_udp_csum: false,
            padding: 0,
        }
    }

    pub fn v6(&self) -> bool {
        self.src_ip.is_ipv6()
    }

    /// Offset of the L3 header.
    pub fn l3(&self) -> usize {
        if self.vlan.is_some() {
            18
        } else {
            14
        }
    }

    /// Offset of the UDP header.
    pub fn l4(&self) -> usize {
        self.l3() + if self.v6() { 40 } else { 20 }
    }
}

/// One's-complement sum of big-endian 16-bit words (odd length padded with a zero), unfolded.
pub fn sum16(bytes: &[u8]) -> u32 {
    let mut acc = 0u32;
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc += u32::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        acc += u32::from(*b) << 8;
    }
    acc
}

pub fn fold(mut x: u32) -> u16 {
    while x > 0xffff {
        x = (x & 0xffff) + (x >> 16);
    }
    x as u16
}

/// Sets the checksum of the IPv4 header `ip` (all of it, options included) from the other fields.
pub fn set_ipv4_checksum(ip: &mut [u8]) {
    ip[10..12].fill(0);
    let c = !fold(sum16(ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

fn ip_bytes(ip: &IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The UDP checksum of `udp` (header with its checksum field as sent, and payload) over the
/// pseudo-header: 0 when it verifies.
fn udp_verify_sum(src: &[u8], dst: &[u8], udp: &[u8]) -> u16 {
    let mut acc = sum16(src) + sum16(dst) + u32::from(IPPROTO_UDP) + udp.len() as u32;
    acc += sum16(udp);
    !fold(acc)
}

/// Computes the UDP checksum to put in the header (field zeroed in `udp`).
fn udp_checksum(src: &[u8], dst: &[u8], udp: &[u8]) -> u16 {
    let c = udp_verify_sum(src, dst, udp);
    // RFC 768: a computed zero is sent as all ones.
    if c == 0 {
        0xffff
    } else {
        c
    }
}

/// Builds a query frame carrying `payload` over UDP, with correct lengths and checksums.
pub fn build_frame(spec: &FrameSpec, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(spec.l4() + 8 + payload.len() + spec.padding);
    f.extend_from_slice(&spec.dst_mac);
    f.extend_from_slice(&spec.src_mac);
    let ethertype = if spec.v6() { ETH_P_IPV6 } else { ETH_P_IPV4 };
    if let Some(tci) = spec.vlan {
        f.extend_from_slice(&ETH_P_8021Q.to_be_bytes());
        f.extend_from_slice(&tci.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    let udp_len = 8 + payload.len();
    let (src, dst) = (ip_bytes(&spec.src_ip), ip_bytes(&spec.dst_ip));
    if spec.v6() {
        let flow = spec.ip_id & 0xfffff;
        let word = (6u32 << 28) | (u32::from(spec.tos) << 20) | flow;
        f.extend_from_slice(&word.to_be_bytes());
        f.extend_from_slice(&(udp_len as u16).to_be_bytes());
        f.push(IPPROTO_UDP);
        f.push(spec.ttl);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
    } else {
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[1] = spec.tos;
        ip[2..4].copy_from_slice(&((20 + udp_len) as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&(spec.ip_id as u16).to_be_bytes());
        ip[6] = 0x40; // DF
        ip[8] = spec.ttl;
        ip[9] = IPPROTO_UDP;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        set_ipv4_checksum(&mut ip);
        f.extend_from_slice(&ip);
    }
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&spec.sport.to_be_bytes());
    udp.extend_from_slice(&spec.dport.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    if spec.v6() || !spec.v4_no_udp_csum {
        let c = udp_checksum(&src, &dst, &udp);
        udp[6..8].copy_from_slice(&c.to_be_bytes());
    }
    f.extend_from_slice(&udp);
    f.extend(std::iter::repeat_n(0u8, spec.padding));
    f
}

/// What a frame says, parsed the way a host stack would (no checksum checks).
#[derive(Clone, Debug)]
pub struct Parsed {
    pub dst_mac: [u8; 6],
    pub src_mac: [u8; 6],
    pub vlan: Option<u16>,
    pub v6: bool,
    pub l3: usize,
    pub l4: usize,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    pub sport: u16,
    pub dport: u16,
    /// The UDP payload, as the UDP length says.
    pub payload: Vec<u8>,
}

/// Parses an Ethernet frame down to the UDP payload: one optional 802.1Q tag, IPv4 without
/// options or fragments, or IPv6 with UDP as the next header. `None` for anything else or
/// inconsistent lengths.
pub fn parse_udp(frame: &[u8]) -> Option<Parsed> {
    let mac = |o: usize| -> Option<[u8; 6]> { frame.get(o..o + 6)?.try_into().ok() };
    let be = |o: usize| -> Option<u16> {
        Some(u16::from_be_bytes(frame.get(o..o + 2)?.try_into().ok()?))
    };
    let (dst_mac, src_mac) = (mac(0)?, mac(6)?);
    let mut l3 = 14;
    let mut proto = be(12)?;
    let mut vlan = None;
    if proto == ETH_P_8021Q {
        vlan = Some(be(14)?);
        proto = be(16)?;
        l3 = 18;
    }
    let (l4, v6, src_ip, dst_ip, ip_payload_len) = match proto {
        ETH_P_IPV4 => {
            let ip = frame.get(l3..l3 + 20)?;
            if ip[0] != 0x45 || ip[9] != IPPROTO_UDP {
                return None;
            }
            let frag = u16::from_be_bytes([ip[6], ip[7]]);
            if frag & 0x3fff != 0 {
                return None;
            }
            let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            let src: [u8; 4] = ip[12..16].try_into().ok()?;
            let dst: [u8; 4] = ip[16..20].try_into().ok()?;
            (
                l3 + 20,
                false,
                IpAddr::from(src),
                IpAddr::from(dst),
                tot.checked_sub(20)?,
            )
        }
        ETH_P_IPV6 => {
            let ip = frame.get(l3..l3 + 40)?;
            if ip[0] >> 4 != 6 || ip[6] != IPPROTO_UDP {
                return None;
            }
            let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            let src: [u8; 16] = ip[8..24].try_into().ok()?;
            let dst: [u8; 16] = ip[24..40].try_into().ok()?;
            (l3 + 40, true, IpAddr::from(src), IpAddr::from(dst), plen)
        }
        _ => return None,
    };
    if l4 + ip_payload_len > frame.len() {
        return None;
    }
    let udp = frame.get(l4..l4 + 8)?;
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    if udp_len < 8 || udp_len > ip_payload_len {
        return None;
    }
    Some(Parsed {
        dst_mac,
        src_mac,
        vlan,
        v6,
        l3,
        l4,
        src_ip,
        dst_ip,
        sport: u16::from_be_bytes([udp[0], udp[1]]),
        dport: u16::from_be_bytes([udp[2], udp[3]]),
        payload: frame[l4 + 8..l4 + udp_len].to_vec(),
    })
}

/// Whether the UDP checksum of `frame` verifies over the pseudo-header (a zero IPv4 checksum,
/// "none", counts as fine); `false` if the frame does not parse.
pub fn udp_checksum_ok(frame: &[u8]) -> bool {
    let Some(p) = parse_udp(frame) else {
        return false;
    };
    let udp = &frame[p.l4..p.l4 + 8 + p.payload.len()];
    (!p.v6 && udp[6..8] == [0, 0])
        || udp_verify_sum(&ip_bytes(&p.src_ip), &ip_bytes(&p.dst_ip), udp) == 0
}

/// Checks that `out` is a well-formed response to the query frame `query`, as an XDP_TX in place
/// must be: MACs swapped, VLAN tag kept, addresses and ports swapped, IP and UDP lengths exact
/// (the frame ends with the UDP datagram), IPv4 header checksum valid, UDP checksum valid over
/// the pseudo-header (present for both families), IPv4 identification/TOS and IPv6 traffic
/// class/flow label kept. Returns the DNS payload.
pub fn check_response_frame(query: &[u8], out: &[u8]) -> Result<Vec<u8>, String> {
    let q = parse_udp(query).ok_or("the query frame does not parse")?;
    let r =
        parse_udp(out).ok_or_else(|| format!("the response frame does not parse: {out:02x?}"))?;
    let mut errs = Vec::new();
    let mut check = |ok: bool, what: &str| {
        if !ok {
            errs.push(what.to_owned());
        }
    };
    check(
        r.dst_mac == q.src_mac && r.src_mac == q.dst_mac,
        "MAC addresses not swapped",
    );
    check(r.vlan == q.vlan, "VLAN tag changed");
    check(r.v6 == q.v6, "IP version changed");
    check(
        r.src_ip == q.dst_ip && r.dst_ip == q.src_ip,
        "IP addresses not swapped",
    );
    check(
        r.sport == q.dport && r.dport == q.sport,
        "UDP ports not swapped",
    );
    let udp = &out[r.l4..];
    let udp_len = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
    check(
        udp_len == udp.len(),
        "the frame does not end with the UDP datagram",
    );
    let (src, dst) = (ip_bytes(&r.src_ip), ip_bytes(&r.dst_ip));
    if r.v6 {
        let ip = &out[r.l3..r.l3 + 40];
        let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
        check(plen == udp_len, "IPv6 payload length != UDP length");
        let qip = &query[q.l3..q.l3 + 4];
        check(ip[..4] == *qip, "IPv6 traffic class / flow label changed");
        check(ip[7] > 0, "IPv6 hop limit 0");
        check(udp[6..8] != [0, 0], "IPv6 UDP checksum missing");
    } else {
        let ip = &out[r.l3..r.l3 + 20];
        let tot = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
        check(tot == 20 + udp_len, "IPv4 total length != 20 + UDP length");
        check(fold(sum16(ip)) == 0xffff, "IPv4 header checksum wrong");
        let qip = &query[q.l3..q.l3 + 20];
        check(
            ip[1] == qip[1] && ip[4..6] == qip[4..6],
            "IPv4 TOS or identification changed",
        );
        check(
            ip[6] & 0x3f == 0 && ip[7] == 0,
            "IPv4 response is a fragment",
        );
        check(ip[8] > 0, "IPv4 TTL 0");
    }
    if udp[6..8] != [0, 0] {
        check(
            udp_verify_sum(&src, &dst, &udp[..udp_len.min(udp.len())]) == 0,
            "UDP checksum does not verify",
        );
    }
    if errs.is_empty() {
        Ok(r.payload)
    } else {
        Err(errs.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v6: bool, vlan: Option<u16>) -> FrameSpec {
        let (src, dst) = if v6 {
            ("[fd00::2]:40000", "[fd00::1]:5300")
        } else {
            ("10.0.0.2:40000", "10.0.0.1:5300")
        };
        FrameSpec {
            vlan,
            ip_id: 0x1234,
            ..FrameSpec::udp(src.parse().unwrap(), dst.parse().unwrap())
        }
    }

    #[test]
    fn built_frames_parse_and_verify() {
        for v6 in [false, true] {
            for vlan in [None, Some(100)] {
                for len in [0usize, 1, 17, 40] {
                    let payload: Vec<u8> = (0..len as u8).collect();
                    let f = build_frame(&spec(v6, vlan), &payload);
                    let p = parse_udp(&f).expect("parses");
                    assert_eq!(p.payload, payload);
                    assert_eq!(p.vlan, vlan);
                    let udp = &f[p.l4..];
                    let (s, d) = (ip_bytes(&p.src_ip), ip_bytes(&p.dst_ip));
                    assert_eq!(udp_verify_sum(&s, &d, udp), 0);
                    assert!(udp_checksum_ok(&f));
                    let mut bad = f.clone();
                    bad[p.l4 + 6] ^= 0x40;
                    assert!(!udp_checksum_ok(&bad));
                    if !v6 {
                        let ip = &mut bad[p.l3..p.l3 + 20];
                        assert_eq!(fold(sum16(ip)), 0xffff);
                        ip[8] -= 1;
                        set_ipv4_checksum(ip);
                        assert_eq!(fold(sum16(ip)), 0xffff);
                    }
                }
            }
        }
    }

    #[test]
    fn rfc1071_sum() {
        assert_eq!(
            fold(sum16(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7])),
            0xddf2
        );
    }
}
