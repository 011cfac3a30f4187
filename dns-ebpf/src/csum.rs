//! Checksums at XDP: the query's are verified before it is answered (the kernel would drop a
//! datagram whose checksums are wrong, and so must the fast path: it passes it up, where the
//! kernel drops and counts it), and the answer's UDP checksum is summed from the pieces the
//! daemon precomputed (`dns_common::csum`).

use aya_ebpf::{helpers::generated::bpf_csum_diff, programs::XdpContext};
use dns_common::{
    csum::{fold, sum_bytes, verifies},
    wire::{DNS_HEADER_LEN, IPPROTO_UDP, IPV4_HLEN, IPV6_HLEN, UDP_HLEN},
    Scratch, Stat, QUERY_MAX,
};

use crate::{
    parse::{ptr_at, Udp},
    verifier::{helper_len, opaque},
    Pass,
};

/// The sum of `s.q[..len]` (`len <= QUERY_MAX`) as big-endian words, folded. Zeroes the bytes
/// after it up to a multiple of four, which `bpf_csum_diff` needs.
#[inline(always)]
pub fn sum_scratch(s: &mut Scratch, len: usize) -> Result<u16, Pass> {
    // Opaque: LLVM would otherwise index from the UDP length the caller derived `len` from, in a
    // form whose bounds the verifier can't follow.
    let len = opaque(len);
    if len > QUERY_MAX {
        return Err(Some(Stat::PassMalformed));
    }
    let len4 = (len + 3) & !3;
    for i in 0..3 {
        if len + i < len4 {
            *s.q.get_mut(len + i).ok_or(Some(Stat::PassMalformed))? = 0;
        }
    }
    // SAFETY: `s.q` holds QUERY_MAX bytes and the length is bounded by it; `from` is empty.
    let r = unsafe {
        bpf_csum_diff(
            core::ptr::null_mut(),
            0,
            s.q.as_mut_ptr().cast(),
            helper_len(len4, QUERY_MAX),
            0,
        )
    };
    if r < 0 {
        return Err(Some(Stat::PassMalformed));
    }
    // csum_diff sums 16-bit words as they lie in memory (little-endian here): swap to big-endian.
    Ok(fold(r as u32).swap_bytes())
}

/// Sums of query bytes that the answer keeps: the addresses and the ports trade places, which
/// leaves their sums as they are, so the answer's checksum reuses them.
pub struct Kept {
    /// Source and destination addresses (the UDP pseudo-header's).
    pub addrs: u32,
    /// Source and destination ports.
    pub ports: u32,
}

/// Checks the query's IPv4 header checksum and UDP checksum; `rest_sum` is the sum of the DNS
/// message after its header ([`sum_scratch`]). IPv4 UDP checksum 0 means "none" (RFC 768) and is
/// accepted; in IPv6 it is forbidden (RFC 8200 8.1: "IPv6 receivers must discard UDP packets
/// containing a zero checksum").
#[inline(always)]
pub fn verify(ctx: &XdpContext, udp: &Udp, rest_sum: u16) -> Result<Kept, Pass> {
    let bad = Err(Some(Stat::PassChecksum));
    let addrs = if udp.v6 {
        // SAFETY (this and the other dereferences of `ptr_at`): it checked that the bytes are
        // inside the packet; any bit pattern is a valid byte array.
        let ip = unsafe { &*ptr_at::<[u8; IPV6_HLEN]>(ctx, udp.l3)? };
        sum_bytes(&ip[8..40])
    } else {
        // SAFETY: as above.
        let ip = unsafe { &*ptr_at::<[u8; IPV4_HLEN]>(ctx, udp.l3)? };
        let addrs = sum_bytes(&ip[12..20]);
        // The answer's header checksum is updated from this one, so it must be right whatever
        // the UDP checksum says.
        if !verifies(sum_bytes(&ip[..12]) + addrs) {
            return bad;
        }
        addrs
    };
    // SAFETY: as above.
    let uh = unsafe { &*ptr_at::<[u8; UDP_HLEN]>(ctx, udp.l4)? };
    let kept = Kept {
        addrs,
        ports: sum_bytes(&uh[..4]),
    };
    if uh[6] == 0 && uh[7] == 0 {
        return if udp.v6 { bad } else { Ok(kept) };
    }
    // SAFETY: as above.
    let h = unsafe { &*ptr_at::<[u8; DNS_HEADER_LEN]>(ctx, udp.dns())? };
    let sum = kept.addrs
        + IPPROTO_UDP as u32
        + udp.udp_len as u32
        + kept.ports
        + sum_bytes(&uh[4..])
        + sum_bytes(&h[..])
        + rest_sum as u32;
    if verifies(sum) {
        Ok(kept)
    } else {
        bad
    }
}
