//! Checksums at XDP: the query's are verified before it is answered (the kernel would drop a
//! datagram whose checksums are wrong, and so must the fast path: it passes it up, where the
//! kernel drops and counts it), and the answer's UDP checksum is summed from the pieces the
//! daemon precomputed (`dns_common::csum`).

use aya_ebpf::{helpers::generated::bpf_csum_diff, programs::XdpContext};
use dns_common::{
    csum::{fold, verifies},
    wire::{DNS_HEADER_LEN, IPPROTO_UDP},
    Scratch, Stat, QUERY_MAX, Q_SLACK,
};

use crate::{
    parse::{ptr_at, Udp},
    verifier::{helper_len, opaque},
    Pass,
};

/// `bpf_csum_diff` over `len` bytes (a multiple of four) at `p`, as a folded big-endian sum.
#[inline(always)]
fn csum_be(p: *mut u8, len: u32) -> Result<u32, Pass> {
    // SAFETY: callers bound `p + len` inside the scratch slot; `from` is empty.
    let r = unsafe { bpf_csum_diff(core::ptr::null_mut(), 0, p.cast(), len, 0) };
    if r < 0 {
        return Err(Some(Stat::PassMalformed));
    }
    // csum_diff sums 16-bit words as they lie in memory (little-endian here): swap to big-endian.
    Ok(be(r as u32))
}

/// Sums of the DNS message after its header (in `s.q`).
pub struct PayloadSums {
    /// The question (`s.q[..qn]`), which the answer echoes.
    pub question: u16,
    /// Everything (`s.q[..qlen]`): the question and an OPT record.
    pub all: u16,
}

/// Sums the question (`qn` bytes) and the whole message after the header (`qlen` bytes), each
/// byte once: the question padded with zeros to a multiple of four, then the bytes it covered
/// over, then the rest. Leaves zeros in `s.q` after the question's and the message's ends.
#[inline(always)]
pub fn payload_sums(s: &mut Scratch, qn: usize, qlen: usize) -> Result<PayloadSums, Pass> {
    let malformed = Some(Stat::PassMalformed);
    // Opaque: LLVM would otherwise index from the lengths these were derived from, in forms
    // whose bounds the verifier can't follow.
    let (qn, qlen) = (opaque(qn), opaque(qlen));
    if qn > Q_SLACK - 4 || qlen > QUERY_MAX || qn > qlen {
        return Err(malformed);
    }
    let qn4 = (qn + 3) & !3;
    // The bytes of the OPT record that the padding covers, as big-endian words at their places.
    let mut covered = 0u32;
    for i in 0..3 {
        let at = qn + i;
        if at < qn4 {
            let b = s.q.get_mut(at).ok_or(malformed)?;
            if at < qlen {
                covered += if at & 1 == 0 {
                    (*b as u32) << 8
                } else {
                    *b as u32
                };
            }
            *b = 0;
        }
    }
    let question = fold(csum_be(s.q.as_mut_ptr(), helper_len(qn4, Q_SLACK))?);
    if qlen == qn {
        return Ok(PayloadSums {
            question,
            all: question,
        });
    }
    let qlen4 = (qlen + 3) & !3;
    for i in 0..3 {
        if qlen + i < qlen4 {
            *s.q.get_mut(qlen + i).ok_or(malformed)? = 0;
        }
    }
    let mut all = question as u32 + covered;
    if qlen4 > qn4 {
        // SAFETY: `qn4 <= Q_SLACK - 4` (masked again for the verifier) and the run is at most
        // QUERY_MAX bytes: it ends inside `s.q`.
        let p = unsafe { s.q.as_mut_ptr().add(opaque(qn4) & (Q_SLACK - 1)) };
        all += csum_be(p, helper_len(qlen4 - qn4, QUERY_MAX))?;
    }
    Ok(PayloadSums {
        question,
        all: fold(all),
    })
}

/// Sums of query bytes that the answer keeps: the addresses and the ports trade places, which
/// leaves their sums as they are, so the answer's checksum reuses them.
pub struct Kept {
    /// The question, echoed as it came (folded).
    pub question: u16,
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
    let mut acc = 0u32;
    for x in w.iter() {
        acc += *x as u32;
    }
    Ok(acc)
}

/// A folded little-endian-word sum as the big-endian one.
#[inline(always)]
fn be(le: u32) -> u32 {
    fold(le).swap_bytes() as u32
}

/// Checks the query's IPv4 header checksum and UDP checksum; `payload` holds the sums of the DNS
/// message after its header ([`payload_sums`]). IPv4 UDP checksum 0 means "none" (RFC 768) and is
/// accepted; in IPv6 it is forbidden (RFC 8200 8.1: "IPv6 receivers must discard UDP packets
/// containing a zero checksum"). Sums are taken in the little-endian word order of
/// [`sum_words`]: a correct checksum sums to 0xffff in either order.
#[inline(always)]
pub fn verify(ctx: &XdpContext, udp: &Udp, payload: &PayloadSums) -> Result<Kept, Pass> {
    let bad = Err(Some(Stat::PassChecksum));
    let addrs = if udp.v6 {
        sum_words::<16>(ctx, udp.l3 + 8)?
    } else {
        let addrs = sum_words::<4>(ctx, udp.l3 + 12)?;
        // The answer's header checksum is updated from this one, so it must be right whatever
        // the UDP checksum says.
        if !verifies(sum_words::<6>(ctx, udp.l3)? + addrs) {
            return bad;
        }
        addrs
    };
    let ports = sum_words::<2>(ctx, udp.l4)?;
    let kept = Kept {
        question: payload.question,
        addrs: be(addrs),
        ports: be(ports),
    };
    // SAFETY: `ptr_at` checked that it is inside the packet; aligned as in `sum_words`.
    if unsafe { *ptr_at::<u16>(ctx, udp.l4 + 6)? } == 0 {
        return if udp.v6 { bad } else { Ok(kept) };
    }
    let pseudo = be(IPPROTO_UDP as u32 + udp.udp_len as u32);
    let sum = addrs
        + ports
        + sum_words::<2>(ctx, udp.l4 + 4)?
        + sum_words::<{ DNS_HEADER_LEN / 2 }>(ctx, udp.dns())?
        + pseudo
        + payload.all.swap_bytes() as u32;
    if verifies(sum) {
        Ok(kept)
    } else {
        bad
    }
}
