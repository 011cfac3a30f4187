//! Turns the query into the response in place: resizes the frame, writes the answer section,
//! the header and our OPT record, swaps the addresses and ports, and fills in the checksums.

use aya_ebpf::{
    bindings::xdp_action,
    helpers::generated::{
        bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_load_bytes, bpf_xdp_store_bytes,
    },
    programs::XdpContext,
};
use dns_common::{
    csum::{at_offset, fold, sum_bytes, udp_field},
    limit::COOKIE_OPTION_LEN,
    stat::qtype_slot,
    wire::{DNS_HEADER_LEN, IPPROTO_UDP, IPV4_HLEN, IPV6_HLEN, OPT_RR_LEN, UDP_HLEN},
    Scratch, Stat, XdpConfig, KEY_NAME_LEN, TYPE_OPT,
};

use crate::{
    answer::Answer,
    cookie::COOKIE_OUT,
    csum::{sum_scratch, Kept},
    maps::{count, count_slot},
    parse::{Query, Udp},
    verifier::helper_len,
    Pass,
};

/// Where the answer section may start at the most: header, longest key name, type and class.
const MAX_ANSWER_OFF: usize = DNS_HEADER_LEN + KEY_NAME_LEN + 4;
/// Where our OPT record sits in `Scratch::out`, after the header (our COOKIE option, if any,
/// follows it: see `cookie::COOKIE_OUT`).
pub const OPT_OUT: usize = 16;

/// Rewrites the query into the response in place and sends it back. `cookie_len` bytes of our
/// COOKIE option (in `s.out` after the OPT record: all of it, or 0) go into the OPT record.
#[expect(
    clippy::too_many_arguments,
    reason = "the stages' results, each handed on once"
)]
#[inline(always)]
pub fn respond(
    ctx: &XdpContext,
    cfg: &XdpConfig,
    udp: &Udp,
    s: &mut Scratch,
    q: &Query,
    a: &Answer,
    kept: &Kept,
    cookie_len: usize,
) -> Result<u32, Pass> {
    let qn = q.name_len + 4;
    let ans_len = a.len();
    // Masked for the verifier: at most 63, so the OPT record stays within its 64 bytes of `s.out`.
    let rdlen = cookie_len & 0x3f;
    let opt_len = if q.edns.is_some() {
        OPT_RR_LEN + rdlen
    } else {
        0
    };
    let dns_len = DNS_HEADER_LEN + qn + ans_len + opt_len;
    // RFC 6891 6.2.5: a payload size below 512 is treated as 512.
    let limit = match q.edns {
        Some((size, _)) => size.clamp(512, cfg.udp_payload.max(512)) as usize,
        None => 512,
    };
    if dns_len > limit {
        return Err(Some(Stat::PassTooBig));
    }

    // Header: QR, AA, RD and CD copied (RFC 1035 4.1.1, RFC 4035 3.1.6), RA, AD, Z clear.
    let rflags = 0x8400 | (q.flags & 0x0110) | a.rcode;
    let hdr: [u16; 6] = [
        q.id,
        rflags,
        1,
        a.ancount,
        a.nscount,
        q.edns.is_some() as u16,
    ];
    let mut hsum = 0u32;
    for (i, w) in hdr.iter().enumerate() {
        let b = w.to_be_bytes();
        s.out[2 * i] = b[0];
        s.out[2 * i + 1] = b[1];
        hsum += *w as u32;
    }
    // Our OPT: root name, type 41, class = our payload size, ext rcode 0, version 0, DO copied.
    let mut osum = 0u32;
    if let Some((_, dnssec_ok)) = q.edns {
        let size = cfg.udp_payload.to_be_bytes();
        let rdlen_be = (rdlen as u16).to_be_bytes();
        // Written in place (a local array would take the stack the cookie's hash needs), and
        // summed from there: 11 bytes, the last one summed as if followed by a zero.
        let opt = &mut s.out[OPT_OUT..OPT_OUT + OPT_RR_LEN];
        opt[0] = 0;
        opt[1] = 0;
        opt[2] = TYPE_OPT as u8;
        opt[3] = size[0];
        opt[4] = size[1];
        opt[5] = 0;
        opt[6] = 0;
        opt[7] = if dnssec_ok { 0x80 } else { 0 };
        opt[8] = 0;
        opt[9] = rdlen_be[0];
        opt[10] = rdlen_be[1];
        let mut sum = sum_bytes(opt);
        // The option starts 11 bytes into the OPT record: at an odd offset from it. Added under
        // a mask rather than a branch (`rdlen` is 0 or the option's length), so that the rest
        // of the answer is one path for the verifier either way.
        if let Some(c) = s.out[COOKIE_OUT..].first_chunk::<COOKIE_OPTION_LEN>() {
            let mask = 0u32.wrapping_sub((rdlen != 0) as u32);
            sum += at_offset(fold(sum_bytes(c)), true) as u32 & mask;
        }
        osum = at_offset(fold(sum), (qn + ans_len) & 1 != 0) as u32;
    }

    // The question as the client sent it: the answer echoes it.
    if (qn + 3) & !3 > MAX_ANSWER_OFF {
        return Err(Some(Stat::PassLongName));
    }
    let qsum = if q.edns.is_none() {
        // The question is all there is after the header, and its sum was taken to verify the
        // query's UDP checksum.
        q.rest_sum
    } else {
        sum_scratch(s, qn)?
    } as u32;
    let asum = at_offset(a.sum, qn & 1 != 0) as u32;

    match resize(ctx, s, udp, DNS_HEADER_LEN + qn, dns_len) {
        Ok(()) => {}
        Err(Unresized::Intact) => return Err(Some(Stat::PassNoRoom)),
        Err(Unresized::Broken) => return Ok(drop_frame()),
    }
    // From here on the frame is the response's size, and the answer overwrites whatever came
    // after the question (an OPT record, padding): if a write fails the frame is neither the
    // query nor the answer, and can't go up. It is dropped, and counted as dropped.
    let payload_sum = hsum + qsum + asum + osum;
    match write_response(
        ctx,
        udp,
        s,
        a,
        qn,
        dns_len,
        opt_len,
        payload_sum + kept.addrs + kept.ports,
    ) {
        Ok(()) => {
            let stat = if a.slipped != 0 {
                Stat::RrlSlipped
            } else {
                a.stat
            };
            count(stat);
            if let Some(slot) = qtype_slot(stat, q.seg) {
                count_slot(slot);
            }
            Ok(xdp_action::XDP_TX)
        }
        Err(()) => Ok(drop_frame()),
    }
}

#[inline(always)]
fn drop_frame() -> u32 {
    count(Stat::DropWrite);
    xdp_action::XDP_DROP
}

/// What is left of a frame that could not be resized for its answer.
enum Unresized {
    /// The frame as it came: it can go up.
    Intact,
    /// Neither the query nor room for the answer.
    Broken,
}

/// Resizes the frame to the response (`dns_len` bytes of DNS), trimming any Ethernet padding;
/// the first `keep` bytes of the message (header and question) stay where the answer needs them.
#[inline(always)]
fn resize(
    ctx: &XdpContext,
    s: &mut Scratch,
    udp: &Udp,
    keep: usize,
    dns_len: usize,
) -> Result<(), Unresized> {
    let old = ctx.data_end() - ctx.data();
    let new = udp.dns() + dns_len;
    let delta = new as i32 - old as i32;
    // SAFETY: the helper checks the new size against the buffer.
    if delta == 0 || unsafe { bpf_xdp_adjust_tail(ctx.ctx, delta) } == 0 {
        return Ok(());
    }
    grow_at_head(ctx, s, udp.dns() + keep, delta)
}

/// Grows the frame by `delta` bytes at the front when the buffer has no tailroom (an skb-backed
/// frame on veth or in generic mode often has little): the first `keep` bytes (headers and
/// question) move to the new start, and the bytes after them are free for the answer.
#[inline(always)]
fn grow_at_head(
    ctx: &XdpContext,
    s: &mut Scratch,
    keep: usize,
    delta: i32,
) -> Result<(), Unresized> {
    const KEEP_MAX: usize = 256;
    if delta <= 0 || keep > KEEP_MAX {
        return Err(Unresized::Intact);
    }
    let len = helper_len(keep, KEEP_MAX);
    // SAFETY: the helper checks the packet range; `s.q` holds QUERY_MAX >= KEEP_MAX bytes and is
    // no longer needed (the question's sum is taken).
    if unsafe { bpf_xdp_load_bytes(ctx.ctx, 0, s.q.as_mut_ptr().cast(), len) } != 0 {
        return Err(Unresized::Intact);
    }
    // SAFETY: the helper checks the headroom.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -delta) } != 0 {
        return Err(Unresized::Intact);
    }
    // SAFETY: as for the load; the store writes all of `len` or nothing.
    if unsafe { bpf_xdp_store_bytes(ctx.ctx, 0, s.q.as_mut_ptr().cast(), len) } != 0 {
        // Nothing was written: giving the headroom back restores the frame as it came.
        // SAFETY: takes back exactly what the adjustment above gave.
        return if unsafe { bpf_xdp_adjust_head(ctx.ctx, delta) } == 0 {
            Err(Unresized::Intact)
        } else {
            Err(Unresized::Broken)
        };
    }
    Ok(())
}

/// A pointer to a `T` at `off` in the packet (`data..end`), checked to lie inside it. The
/// offsets are not constants for the verifier (see `Udp::join`): each access is checked on the
/// pointer it uses.
#[inline(always)]
fn pkt_at<T>(data: usize, end: usize, off: usize) -> Result<*mut T, ()> {
    let p = data + off;
    if p + core::mem::size_of::<T>() > end {
        return Err(());
    }
    Ok(p as *mut T)
}

#[inline(always)]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

#[inline(always)]
fn store(ctx: &XdpContext, off: usize, src: *const u8, len: usize, max: usize) -> Result<(), ()> {
    // SAFETY: the helper checks the packet range; `src` has `max >= len` readable bytes.
    let ret =
        unsafe { bpf_xdp_store_bytes(ctx.ctx, off as u32, src as *mut _, helper_len(len, max)) };
    if ret == 0 {
        Ok(())
    } else {
        Err(())
    }
}

#[expect(
    clippy::too_many_arguments,
    reason = "the parts of the response, each handed on once"
)]
#[inline(always)]
fn write_response(
    ctx: &XdpContext,
    udp: &Udp,
    s: &Scratch,
    a: &Answer,
    qn: usize,
    dns_len: usize,
    opt_len: usize,
    kept_sum: u32,
) -> Result<(), ()> {
    let dns = udp.dns();
    let mut off = dns + DNS_HEADER_LEN + qn;
    for p in a.pieces.iter() {
        if p.len > 0 {
            store(ctx, off, p.ptr, p.len, p.max)?;
            off += p.len;
        }
    }
    if opt_len > 0 {
        store(ctx, off, s.out[OPT_OUT..].as_ptr(), opt_len, 64)?;
    }

    let udp_len = (UDP_HLEN + dns_len) as u16;
    let data = ctx.data();
    let end = ctx.data_end();
    // The SOA's owner, a pointer to the apex in the question, written over the first two bytes
    // of the SOA in place (a helper call for two bytes costs more). A slipped negative answer
    // keeps its SOA pointer but not the SOA: nothing to point from.
    if let (Some(ptr), true) = (a.soa_ptr, a.pieces[0].len != 0) {
        // SAFETY: `pkt_at` checked that the two bytes lie inside the packet.
        let owner = unsafe { &mut *pkt_at::<[u8; 2]>(data, end, dns + DNS_HEADER_LEN + qn)? };
        *owner = ptr.to_be_bytes();
    }
    // Ethernet: swap the MAC addresses (the first 12 bytes).
    // SAFETY (this and the other headers below): `pkt_at` checked that they lie inside the
    // packet.
    let e = unsafe { &mut *pkt_at::<[u8; 12]>(data, end, 0)? };
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&e[0..6]);
    e.copy_within(6..12, 0);
    e[6..12].copy_from_slice(&mac);
    // The addresses and ports are summed in `kept_sum` already: swapping them changes no sum.
    let sum = kept_sum + udp_len as u32 * 2 + IPPROTO_UDP as u32;
    if udp.v6 {
        // SAFETY: as above.
        let ip = unsafe { &mut *pkt_at::<[u8; IPV6_HLEN]>(data, end, udp.l3)? };
        let mut tmp = [0u8; 16];
        tmp.copy_from_slice(&ip[8..24]);
        ip.copy_within(24..40, 8);
        ip[24..40].copy_from_slice(&tmp);
        ip[4..6].copy_from_slice(&udp_len.to_be_bytes());
        ip[7] = 64;
    } else {
        // SAFETY: as above.
        let ip = unsafe { &mut *pkt_at::<[u8; IPV4_HLEN]>(data, end, udp.l3)? };
        let mut tmp = [0u8; 4];
        tmp.copy_from_slice(&ip[12..16]);
        ip.copy_within(16..20, 12);
        ip[16..20].copy_from_slice(&tmp);
        // The header checksum, updated for the two words that change (RFC 1624 eqn. 3:
        // HC' = ~(~HC + ~m + m')); the query's was verified, and the swap changes no sum.
        let old = [be16(ip, 2), be16(ip, 8), be16(ip, 10)];
        ip[2..4].copy_from_slice(&(IPV4_HLEN as u16 + udp_len).to_be_bytes());
        ip[8] = 64;
        let c = !fold(
            !old[2] as u32
                + !old[0] as u32
                + be16(ip, 2) as u32
                + !old[1] as u32
                + be16(ip, 8) as u32,
        );
        ip[10..12].copy_from_slice(&c.to_be_bytes());
    }
    // The UDP and DNS headers, through one pointer checked once: two checks of overlapping
    // ranges would be merged by LLVM into one the verifier can't apply to the other pointer.
    // SAFETY: as above.
    let udns = unsafe { &mut *pkt_at::<[u8; UDP_HLEN + DNS_HEADER_LEN]>(data, end, udp.l4)? };
    let (uh, h) = udns.split_at_mut(UDP_HLEN);
    // The DNS header, written in place (fixed offset after UDP, no helper call needed).
    h.copy_from_slice(&s.out[..DNS_HEADER_LEN]);
    let mut ports = [0u8; 2];
    ports.copy_from_slice(&uh[0..2]);
    uh.copy_within(2..4, 0);
    uh[2..4].copy_from_slice(&ports);
    uh[4..6].copy_from_slice(&udp_len.to_be_bytes());
    uh[6..8].copy_from_slice(&udp_field(sum).to_be_bytes());
    Ok(())
}
