//! Checksums at XDP: the query's are verified before it is answered (the kernel would drop a
//! datagram whose checksums are wrong, and so must the fast path: it passes it up, where the
//! kernel drops and counts it), and the answer's UDP checksum is summed from the pieces the
//! daemon precomputed (`dns_common::csum`).

use aya_ebpf::{helpers::generated::bpf_csum_diff, programs::XdpContext};
use dns_common::{
    csum::{fold, verifies},
    wire::{DNS_HEADER_LEN, IPPROTO_UDP, IPV4_HLEN, UDP_HLEN},
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

/// The sum of `N` 16-bit words of the packet at `off` (even), loaded as they lie in memory:
/// little-endian here, so it is the big-endian sum with its bytes swapped once folded (RFC 1071
/// 2.(B)). Half the loads of a byte-wise big-endian sum, and no shifts.
#[inline(always)]
fn sum_words<const N: usize>(ctx: &XdpContext, off: usize) -> Result<u32, Pass> {
    // SAFETY: `ptr_at` checked that the words are inside the packet; any bit pattern is a valid
    // u16. Alignment: the frame starts 2-byte aligned and `off` is even, as the u16 reads of the
    // EtherType and ports in `parse` assume too.
    let w = unsafe { &*ptr_at::<[u16; N]>(ctx, off)? };
    Ok(sum(w))
}

/// The sum of words read from the packet (see [`sum_words`]).
#[inline(always)]
fn sum(w: &[u16]) -> u32 {
    let mut acc = 0u32;
    for x in w.iter() {
        acc += *x as u32;
    }
    acc
}

/// A folded little-endian-word sum as the big-endian one.
#[inline(always)]
fn be(le: u32) -> u32 {
    fold(le).swap_bytes() as u32
}

/// Checks the query's IPv4 header checksum and UDP checksum; `rest_sum` is the sum of the DNS
/// message after its header ([`sum_scratch`]). IPv4 UDP checksum 0 means "none" (RFC 768) and is
/// accepted; in IPv6 it is forbidden (RFC 8200 8.1: "IPv6 receivers must discard UDP packets
/// containing a zero checksum"). Sums are taken in the little-endian word order of
/// [`sum_words`]: a correct checksum sums to 0xffff in either order.
#[inline(always)]
pub fn verify(ctx: &XdpContext, udp: &Udp, rest_sum: u16) -> Result<Kept, Pass> {
    let bad = Err(Some(Stat::PassChecksum));
    // Each header is read through one pointer, checked once: the offsets are not constants for
    // the verifier (see `Udp::join`), and LLVM drops a check that an earlier one on an
    // overlapping range implies, which the verifier can't follow from one pointer to another.
    let addrs = if udp.v6 {
        sum_words::<16>(ctx, udp.l3 + 8)?
    } else {
        // SAFETY: as in `sum_words`.
        let ip = unsafe { &*ptr_at::<[u16; IPV4_HLEN / 2]>(ctx, udp.l3)? };
        let (head, tail) = ip.split_at(6);
        let addrs = sum(tail);
        // The answer's header checksum is updated from this one, so it must be right whatever
        // the UDP checksum says.
        if !verifies(sum(head) + addrs) {
            return bad;
        }
        addrs
    };
    // SAFETY: as in `sum_words`.
    let ud = unsafe { &*ptr_at::<[u16; (UDP_HLEN + DNS_HEADER_LEN) / 2]>(ctx, udp.l4)? };
    let ports = sum(&ud[..2]);
    let kept = Kept {
        addrs: be(addrs),
        ports: be(ports),
    };
    if ud[3] == 0 {
        return if udp.v6 { bad } else { Ok(kept) };
    }
    let pseudo = be(IPPROTO_UDP as u32 + udp.udp_len as u32);
    let sum = addrs + sum(&ud[..4]) + sum(&ud[4..]) + pseudo + rest_sum.swap_bytes() as u32;
    // On the loopback interface the UDP checksum is left to "offload": the field holds only the
    // pseudo-header's sum (CHECKSUM_PARTIAL), and the kernel doesn't check it either, since
    // nothing crossed a wire. The answer's checksum, updated from it, is partial alike and just
    // as acceptable there. Tested last, with `|`, so that both ways join in one state for the
    // verifier rather than each being verified through the rest of the program.
    if verifies(sum) | udp.on_lo {
        Ok(kept)
    } else {
        bad
    }
}
