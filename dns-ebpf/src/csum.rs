//! Checksums at XDP: the answer's UDP checksum is summed from the pieces the daemon precomputed
//! (`dns_common::csum`) and the question the program echoes.

use aya_ebpf::helpers::generated::bpf_csum_diff;
use dns_common::{csum::fold, Scratch, Stat, QUERY_MAX};

use crate::{
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
