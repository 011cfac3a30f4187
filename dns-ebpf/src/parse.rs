//! From the frame to the question: Ethernet (and an 802.1Q tag), IPv4 or IPv6, UDP to our port,
//! the DNS header, and the question with an optional OPT record. Anything not plainly a query
//! to us is refused here, with the reason it goes up.

use aya_ebpf::{helpers::generated::bpf_xdp_load_bytes, programs::XdpContext};
use dns_common::{
    limit::{cookie_len_ok, OPTION_COOKIE},
    seg_for_qtype,
    wire::{
        DNS_HEADER_LEN, ETH_HLEN, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_UDP, IPV4_HLEN,
        IPV6_HLEN, OPTION_NSID, OPT_RR_LEN, UDP_HLEN, VLAN_HLEN,
    },
    Scratch, ServedKey, Stat, XdpConfig, CLASS_IN, FAMILY_V4, FAMILY_V6, KEY_NAME_LEN,
    OPT_LOOPBACK, OPT_PASS_NSID, OPT_WILDCARD_V4, OPT_WILDCARD_V6, QUERY_MAX, TYPE_OPT,
};

use crate::{
    maps,
    verifier::{helper_len, launder, Packed, QuestionFields},
    Pass,
};

/// The loopback interface's index in every network namespace (`LOOPBACK_IFINDEX`).
const LOOPBACK_IFINDEX: u32 = 1;

/// A bounds-checked pointer to a `T` at `off` in the packet.
#[inline(always)]
pub fn ptr_at<T>(ctx: &XdpContext, off: usize) -> Result<*mut T, Pass> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + core::mem::size_of::<T>() > end {
        return Err(Some(Stat::PassMalformed));
    }
    Ok((start + off) as *mut T)
}

#[inline(always)]
pub fn be16(b: &[u8; 2]) -> u16 {
    u16::from_be_bytes(*b)
}

/// What the IP layer said about a UDP datagram to our port.
pub struct Udp {
    /// Offset of the L3 header.
    pub l3: usize,
    /// Offset of the UDP header.
    pub l4: usize,
    pub v6: bool,
    /// UDP length (header included) from the UDP header, checked against the IP length.
    pub udp_len: usize,
    /// The frame came in on the loopback interface.
    pub on_lo: bool,
}

impl Udp {
    /// The same, passed through the scratch slot as one value (see `verifier::launder`): the
    /// frame's four shapes (IPv4 or IPv6, with or without a VLAN tag) each leave constant
    /// offsets, and without this the verifier would follow the whole rest of the program once
    /// for each of them. Every packet access after this checks its bounds again.
    #[inline(always)]
    pub fn join(self, s: &mut Scratch) -> Udp {
        let x = (self.l3 as u64 & 0xff)
            | (self.l4 as u64 & 0xff) << 8
            | (self.v6 as u64) << 16
            | (self.on_lo as u64) << 17
            | (self.udp_len as u64 & 0xffff) << 32;
        let x = launder(s, Packed::value(x)).bits();
        Udp {
            l3: (x & 0xff) as usize,
            l4: ((x >> 8) & 0xff) as usize,
            v6: x & (1 << 16) != 0,
            on_lo: x & (1 << 17) != 0,
            udp_len: ((x >> 32) & 0xffff) as usize,
        }
    }

    /// Offset of the DNS message.
    #[inline(always)]
    pub fn dns(&self) -> usize {
        self.l4 + UDP_HLEN
    }
}

#[inline(always)]
pub fn l2_l4(ctx: &XdpContext, cfg: &XdpConfig, s: &mut Scratch) -> Result<Udp, Pass> {
    let mut l3 = ETH_HLEN;
    // One program serves every interface it is attached to: the loopback rules apply to the
    // frames that came in on lo, when lo is one of them.
    // SAFETY: `ctx.ctx` is the program's context, valid for its run.
    let ifindex = unsafe { (*ctx.ctx).ingress_ifindex };
    let on_lo = (cfg.options & OPT_LOOPBACK != 0) & (ifindex == LOOPBACK_IFINDEX);
    // SAFETY (this and the other dereferences of `ptr_at`): it checked that the bytes are inside
    // the packet; packet memory is valid for any bit pattern of these plain arrays and integers.
    let mut proto = u16::from_be(unsafe { *ptr_at::<u16>(ctx, ETH_HLEN - 2).map_err(|_| None)? });
    if proto == ETH_P_8021Q {
        // SAFETY: as above.
        proto = u16::from_be(unsafe { *ptr_at::<u16>(ctx, ETH_HLEN + 2).map_err(|_| None)? });
        l3 = ETH_HLEN + VLAN_HLEN;
    }
    let (l4, v6, ip_payload) = if proto == ETH_P_IPV4 {
        // SAFETY: as above.
        let ip = unsafe { &*ptr_at::<[u8; IPV4_HLEN]>(ctx, l3).map_err(|_| None)? };
        if ip[9] != IPPROTO_UDP || ip[0] >> 4 != 4 {
            return Err(None);
        }
        let ihl = (ip[0] & 0x0f) as usize * 4;
        let frag = be16(&[ip[6], ip[7]]);
        let more_fragments = frag & 0x2000 != 0;
        let frag_off = frag & 0x1fff;
        if frag_off != 0 {
            // A later fragment has no UDP header: we can't tell whose it is.
            return Err(None);
        }
        // SAFETY: as above.
        let dport = unsafe { *ptr_at::<u16>(ctx, l3 + (ihl & 0x3c) + 2).map_err(|_| None)? };
        let dst = [ip[16], ip[17], ip[18], ip[19]];
        let mut key = ServedKey {
            family: FAMILY_V4,
            port_be: dport,
            addr: [0; 16],
        };
        key.addr[..4].copy_from_slice(&dst);
        if !maps::served(s, &cfg.served_v4, key, cfg.options & OPT_WILDCARD_V4 != 0) {
            return Err(None);
        }
        if more_fragments {
            return Err(Some(Stat::PassFragment));
        }
        if ihl != IPV4_HLEN {
            return Err(Some(Stat::PassIpOptions));
        }
        if martian_v4(ip[12], on_lo) || martian_v4(dst[0], on_lo) {
            return Err(Some(Stat::PassMartian));
        }
        let tot = be16(&[ip[2], ip[3]]) as usize;
        if tot < IPV4_HLEN {
            return Err(Some(Stat::PassMalformed));
        }
        (l3 + IPV4_HLEN, false, tot - IPV4_HLEN)
    } else if proto == ETH_P_IPV6 {
        // SAFETY: as above.
        let ip = unsafe { &*ptr_at::<[u8; IPV6_HLEN]>(ctx, l3).map_err(|_| None)? };
        if ip[0] >> 4 != 6 {
            return Err(None);
        }
        let next = ip[6];
        if next != IPPROTO_UDP {
            return match next {
                // Hop-by-hop, routing, fragment, destination options, mobility, HIP, shim6.
                0 | 43 | 44 | 60 | 135 | 139 | 140 => Err(Some(Stat::PassIpv6Ext)),
                _ => Err(None),
            };
        }
        // SAFETY: as above.
        let dport = unsafe { *ptr_at::<u16>(ctx, l3 + IPV6_HLEN + 2).map_err(|_| None)? };
        let mut dst = [0u8; 16];
        dst.copy_from_slice(&ip[24..40]);
        let key = ServedKey {
            family: FAMILY_V6,
            port_be: dport,
            addr: dst,
        };
        if !maps::served(s, &cfg.served_v6, key, cfg.options & OPT_WILDCARD_V6 != 0) {
            return Err(None);
        }
        if martian_v6(&ip[8..24], on_lo) || martian_v6(&dst, on_lo) {
            return Err(Some(Stat::PassMartian));
        }
        (l3 + IPV6_HLEN, true, be16(&[ip[4], ip[5]]) as usize)
    } else {
        return Err(None);
    };
    // SAFETY: as above.
    let uh = unsafe { &*ptr_at::<[u8; UDP_HLEN]>(ctx, l4)? };
    // Nothing can be sent to port 0 (the host's stack would not answer it either).
    if uh[0] | uh[1] == 0 {
        return Err(Some(Stat::PassMartian));
    }
    let udp_len = be16(&[uh[4], uh[5]]) as usize;
    // The IP length must cover the UDP datagram and lie inside the frame (frames may be padded).
    if udp_len < UDP_HLEN || udp_len > ip_payload || ctx.data() + l4 + ip_payload > ctx.data_end() {
        return Err(Some(Stat::PassMalformed));
    }
    Ok(Udp {
        l3,
        l4,
        v6,
        udp_len,
        on_lo,
    })
}

/// Whether an IPv4 address with first octet `first` can't be a DNS client's on the wire, as a
/// source or as the address it asked: 0.0.0.0/8, 224/4 and above (multicast, reserved,
/// broadcast), and loopback (127/8) but on the loopback interface (`on_lo`). Linux drops such
/// sources as martians, and no socket gets a query sent to such a destination: answering either
/// would send an answer the host never would, to a broadcast or multicast group in the worst
/// case.
#[inline(always)]
fn martian_v4(first: u8, on_lo: bool) -> bool {
    // `|` and `&`, not `||` and `&&`: one outcome to branch on, not a path per case.
    (first == 0) | (first >= 224) | ((first == 127) & !on_lo)
}

/// [`martian_v4`] for IPv6 (`a` is 16 bytes): multicast (ff00::/8), unspecified (::),
/// IPv4-mapped (::ffff:0:0/96, which RFC 4291 2.5.5.2 keeps off the wire), and loopback (::1)
/// but on the loopback interface.
#[inline(always)]
fn martian_v6(a: &[u8], on_lo: bool) -> bool {
    if a.len() != 16 {
        return true;
    }
    if a[0] == 0xff {
        return true;
    }
    let mut high = 0u8;
    for b in &a[..10] {
        high |= *b;
    }
    if high != 0 {
        return false;
    }
    let mapped = a[10] == 0xff && a[11] == 0xff;
    let low_zero = a[10] | a[11] | a[12] | a[13] | a[14] == 0;
    mapped || (low_zero && (a[15] == 0 || (a[15] == 1 && !on_lo)))
}

/// The DNS header of a query the fast path may answer.
pub struct Header {
    pub id: u16,
    pub flags: u16,
    pub arcount: u16,
    /// Length of the message after the header: the question and an OPT record.
    pub qlen: usize,
}

#[inline(always)]
pub fn header(ctx: &XdpContext, udp: &Udp) -> Result<Header, Pass> {
    let dns_len = udp.udp_len - UDP_HLEN;
    if dns_len < DNS_HEADER_LEN + 5 {
        return Err(Some(Stat::PassMalformed));
    }
    // SAFETY: `ptr_at` checked that the header is inside the packet.
    let h = unsafe { &*ptr_at::<[u8; DNS_HEADER_LEN]>(ctx, udp.dns())? };
    let flags = be16(&[h[2], h[3]]);
    if flags & 0x8000 != 0 {
        return Err(Some(Stat::PassQr));
    }
    if flags & 0x7800 != 0 {
        return Err(Some(Stat::PassOpcode));
    }
    if flags & 0x0200 != 0 {
        return Err(Some(Stat::PassTc));
    }
    if be16(&[h[4], h[5]]) != 1 {
        return Err(Some(Stat::PassQdcount));
    }
    let arcount = be16(&[h[10], h[11]]);
    if h[6] | h[7] | h[8] | h[9] != 0 || arcount > 1 {
        return Err(Some(Stat::PassCounts));
    }
    let qlen = dns_len - DNS_HEADER_LEN;
    if qlen > QUERY_MAX {
        return Err(Some(Stat::PassTooBig));
    }
    Ok(Header {
        id: be16(&[h[0], h[1]]),
        flags,
        arcount,
        qlen,
    })
}

/// Copies the message after the header (`h.qlen <= QUERY_MAX` bytes) into `s.q`.
#[inline(always)]
pub fn load_question(ctx: &XdpContext, udp: &Udp, h: &Header, s: &mut Scratch) -> Result<(), Pass> {
    // SAFETY: the helper checks the packet range; `q` holds QUERY_MAX >= qlen bytes.
    let ret = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            (udp.dns() + DNS_HEADER_LEN) as u32,
            s.q.as_mut_ptr().cast(),
            helper_len(h.qlen, QUERY_MAX),
        )
    };
    if ret != 0 {
        return Err(Some(Stat::PassMalformed));
    }
    Ok(())
}

/// The parsed query, as far as the answer needs it.
pub struct Query {
    pub id: u16,
    pub flags: u16,
    /// Wire length of the question name, root label included.
    pub name_len: usize,
    /// Segment index of the query type.
    pub seg: usize,
    /// Client's EDNS UDP payload size and DO bit, if it sent an OPT record.
    pub edns: Option<(u16, bool)>,
    /// Where the data of the query's COOKIE option starts in `s.q`, and its length (0: none, or
    /// cookies are off).
    pub cookie_at: usize,
    pub cookie_len: usize,
    /// Sum of the message after the header, as in `s.q` ([`crate::csum::sum_scratch`]), taken to
    /// verify the query's UDP checksum.
    pub rest_sum: u16,
}

/// [`question`]'s `opts`: a configured NSID, cookies on.
const PARSE_NSID: u64 = 1;
const PARSE_COOKIES: u64 = 2;

/// Parses the question in `s.q` (see [`parse_question`]); with `cookies`, finds the query's
/// COOKIE option.
#[inline(always)]
pub fn question(
    s: &mut Scratch,
    h: &Header,
    rest_sum: u16,
    cfg: &XdpConfig,
    cookies: bool,
) -> Result<Query, Pass> {
    let opts = if cfg.options & OPT_PASS_NSID != 0 {
        PARSE_NSID
    } else {
        0
    } | if cookies { PARSE_COOKIES } else { 0 };
    let f = parse_question(s, h.qlen as u64, h.arcount as u64, opts).unpack_question()?;
    Ok(Query {
        id: h.id,
        flags: h.flags,
        name_len: f.name_len,
        seg: f.seg,
        edns: f.edns,
        cookie_at: f.cookie_at,
        cookie_len: f.cookie_len,
        rest_sum,
    })
}

/// Parses the question (and an OPT record) from `s.q[..qlen]`. With [`PARSE_NSID`] in `opts`,
/// a query asking for the server's NSID goes up: the fallback adds it. With [`PARSE_COOKIES`],
/// the first COOKIE option is found (a malformed one goes up: the fallback answers FORMERR).
#[inline(never)]
fn parse_question(s: &mut Scratch, qlen: u64, arcount: u64, opts: u64) -> Packed {
    let r = match parse_question_inner(s, qlen as usize, arcount as u16) {
        // With an OPT record, its options must be well framed: the fallback answers FORMERR if
        // not.
        Ok(mut f) if f.edns.is_some() => {
            let start = (f.name_len + 4 + OPT_RR_LEN) as u64;
            if check_options(s, start, qlen).is_err() {
                Packed::err(Some(Stat::PassMalformed))
            } else if opts & PARSE_NSID != 0 && find_nsid(s, start, qlen).is_err() {
                Packed::err(Some(Stat::PassNsid))
            } else if opts & PARSE_COOKIES != 0 && start < qlen {
                match find_cookie(s, start, qlen).get() {
                    Ok(c) => {
                        f.cookie_at = (c & 0x3ff) as usize;
                        f.cookie_len = ((c >> 16) & 0x3f) as usize;
                        Packed::question(f)
                    }
                    Err(p) => Packed::err(p),
                }
            } else {
                Packed::question(f)
            }
        }
        Ok(f) => Packed::question(f),
        Err(p) => Packed::err(p),
    };
    launder(s, r)
}

/// RFC 6891 6.1.2: the OPT RDATA `s.q[start..end]` is a sequence of options, each a code, a
/// length and that many bytes. A success if the options tile it exactly.
#[inline(never)]
fn check_options(s: &mut Scratch, start: u64, end: u64) -> Packed {
    let end = end as usize;
    let mut pos = start as usize;
    let mut r = Packed::err(Some(Stat::PassMalformed));
    // An option takes at least 4 bytes.
    for _ in 0..QUERY_MAX / 4 + 1 {
        if pos >= end {
            if pos == end {
                r = Packed::value(0);
            }
            break;
        }
        // Bytes past `end` are stale, but then `pos` lands past `end` and the answer is no.
        let (Some(hi), Some(lo)) = (s.q.get(pos + 2).copied(), s.q.get(pos + 3).copied()) else {
            break;
        };
        pos += 4 + be16(&[hi, lo]) as usize;
    }
    launder(s, r)
}

/// Whether the options in `s.q[start..end]` (well framed: [`check_options`] said so) ask for the
/// server's NSID (RFC 5001): an error then, to pass the query up. A loop of its own, run only
/// when an NSID is configured, that stops at the first NSID: a flag carried through
/// `check_options`' loop instead doubled the states the verifier walks.
#[inline(never)]
fn find_nsid(s: &mut Scratch, start: u64, end: u64) -> Packed {
    let end = end as usize;
    let mut pos = start as usize;
    let mut r = Packed::value(0);
    for _ in 0..QUERY_MAX / 4 + 1 {
        if pos >= end {
            break;
        }
        let (Some(c0), Some(c1), Some(hi), Some(lo)) = (
            s.q.get(pos).copied(),
            s.q.get(pos + 1).copied(),
            s.q.get(pos + 2).copied(),
            s.q.get(pos + 3).copied(),
        ) else {
            break;
        };
        if be16(&[c0, c1]) == OPTION_NSID {
            r = Packed::err(Some(Stat::PassNsid));
            break;
        }
        pos += 4 + be16(&[hi, lo]) as usize;
    }
    launder(s, r)
}

/// The first COOKIE option in the options `s.q[start..end]` (well framed: [`check_options`] said
/// so): its data's offset in bits 0..10 and its length in bits 16..22, or 0 if there is none.
/// A cookie of a length RFC 7873 §5.2.2 forbids is an error: the fallback answers FORMERR.
#[inline(never)]
fn find_cookie(s: &mut Scratch, start: u64, end: u64) -> Packed {
    let end = end as usize;
    let mut pos = start as usize;
    let mut r = Packed::value(0);
    for _ in 0..QUERY_MAX / 4 + 1 {
        if pos >= end {
            break;
        }
        let (Some(c0), Some(c1), Some(hi), Some(lo)) = (
            s.q.get(pos).copied(),
            s.q.get(pos + 1).copied(),
            s.q.get(pos + 2).copied(),
            s.q.get(pos + 3).copied(),
        ) else {
            break;
        };
        let len = be16(&[hi, lo]) as usize;
        if be16(&[c0, c1]) == OPTION_COOKIE {
            r = if cookie_len_ok(len) {
                Packed::value((pos + 4) as u64 | (len as u64) << 16)
            } else {
                Packed::err(Some(Stat::PassMalformed))
            };
            break;
        }
        pos += 4 + len;
    }
    launder(s, r)
}

/// Name length, segment index and EDNS of the question in `s.q[..qlen]`.
#[inline(always)]
fn parse_question_inner(s: &Scratch, qlen: usize, arcount: u16) -> Result<QuestionFields, Pass> {
    let q = &s.q;
    let malformed = Some(Stat::PassMalformed);
    // Walk the labels; a name longer than the key is passed up.
    let mut pos = 0usize;
    for _ in 0..KEY_NAME_LEN / 2 {
        let l = *q.get(pos).ok_or(malformed)? as usize;
        if l == 0 {
            break;
        }
        if l > 63 {
            // Compression pointers or extended label types in a question.
            return Err(malformed);
        }
        pos += l + 1;
        // The next length byte must be in this query: past `qlen`, `s.q` holds an earlier
        // packet's bytes, and the reason would depend on them.
        if pos >= qlen {
            return Err(malformed);
        }
        if pos >= KEY_NAME_LEN {
            return Err(Some(Stat::PassLongName));
        }
    }
    if *q.get(pos).ok_or(malformed)? != 0 {
        return Err(Some(Stat::PassLongName));
    }
    let name_len = pos + 1;
    if name_len + 4 > qlen {
        return Err(malformed);
    }
    let qtype = be16(&[
        *q.get(name_len).ok_or(malformed)?,
        *q.get(name_len + 1).ok_or(malformed)?,
    ]);
    let qclass = be16(&[
        *q.get(name_len + 2).ok_or(malformed)?,
        *q.get(name_len + 3).ok_or(malformed)?,
    ]);
    let rest = qlen - name_len - 4;
    let mut edns = None;
    if arcount == 1 {
        // The one additional record must be an OPT at the root: name 0, type, class (payload
        // size), TTL (extended rcode, version, flags), RDLENGTH, options (ignored).
        let o = name_len + 4;
        if rest < OPT_RR_LEN {
            return Err(malformed);
        }
        let mut r = [0u8; OPT_RR_LEN];
        for (i, b) in r.iter_mut().enumerate() {
            *b = *q.get(o + i).ok_or(malformed)?;
        }
        if r[0] != 0 || be16(&[r[1], r[2]]) != TYPE_OPT {
            return Err(Some(Stat::PassCounts));
        }
        if rest != OPT_RR_LEN + be16(&[r[9], r[10]]) as usize {
            return Err(malformed);
        }
        if r[6] != 0 {
            return Err(Some(Stat::PassEdnsVersion));
        }
        edns = Some((be16(&[r[3], r[4]]), r[7] & 0x80 != 0));
    } else if rest != 0 {
        return Err(malformed);
    }
    if qclass != CLASS_IN {
        return Err(Some(Stat::PassClass));
    }
    let seg = seg_for_qtype(qtype).ok_or(Some(Stat::PassQtype))?;
    Ok(QuestionFields {
        name_len,
        seg,
        edns,
        cookie_at: 0,
        cookie_len: 0,
    })
}
