//! The lookup key: the query name lowercased and right-aligned in `s.key` (see
//! `dns_common::NameKey`), and the keys of its suffixes, made by zeroing its leading bytes.

use aya_ebpf::{bindings::xdp_md, helpers::generated::bpf_xdp_load_bytes, programs::XdpContext};
use dns_common::{
    fold_case_word, wire::DNS_HEADER_LEN, Scratch, Stat, KEY_NAME_LEN, SHORT_NAME_LEN,
};

use crate::{
    parse::{Query, Udp},
    verifier::{helper_len, launder, opaque, Packed},
    Pass,
};

/// Builds the key of the query name in `s.key`.
#[inline(always)]
pub fn build(ctx: &XdpContext, udp: &Udp, s: &mut Scratch, q: &Query) -> Result<(), Pass> {
    let off = (udp.dns() + DNS_HEADER_LEN) as u64;
    if build_key(ctx.ctx, s, q.name_len as u64, off).is_err() {
        return Err(Some(Stat::PassMalformed));
    }
    Ok(())
}

/// Writes the lowercased name, right-aligned, into `s.key`: the packet's name bytes (at `off`)
/// are copied into place with one helper call, then folded to lower case eight bytes at a time.
#[inline(never)]
fn build_key(ctx: *mut xdp_md, s: &mut Scratch, name_len: u64, off: u64) -> Packed {
    let name_len = name_len as usize;
    // Twelve word stores. A plain `s.key = NameKey::zeroed()` becomes a call to the byte-wise
    // memset subprogram (about a tenth of the program's time in the benchmark's profile), and
    // LLVM turns a plain store loop back into that memset: volatile stores stay as they are.
    let words = s.key.name.as_mut_ptr() as *mut u64;
    for w in 0..KEY_NAME_LEN / 8 {
        // SAFETY: w < KEY_NAME_LEN / 8; the key is 8-byte aligned at the start of the slot.
        unsafe { core::ptr::write_volatile(words.add(w), 0) };
    }
    if name_len == 0 || name_len > KEY_NAME_LEN {
        return launder(s, Packed::err(None));
    }
    // `start` masked for the verifier, which then bounds the copy by start + 128 bytes: still
    // inside the scratch slot, and at run time it ends exactly at the key's end.
    let start = opaque(KEY_NAME_LEN - name_len) & 0x7f;
    // SAFETY: the helper checks the packet range; the destination is inside the scratch slot.
    let r = unsafe {
        bpf_xdp_load_bytes(
            ctx,
            off as u32,
            s.key.name.as_mut_ptr().add(start).cast(),
            helper_len(name_len, 128),
        )
    };
    if r != 0 {
        return launder(s, Packed::err(None));
    }
    for w in 0..KEY_NAME_LEN / 8 {
        // SAFETY: w < KEY_NAME_LEN / 8; the key is 8-byte aligned at the start of the slot.
        unsafe {
            let p = words.add(w);
            *p = fold_case_word(*p);
        }
    }
    launder(s, Packed::value(0))
}

/// Zeroes the first `m` bytes of the key, turning it into the key of a suffix of the name. A
/// suffix of at most [`SHORT_NAME_LEN`] bytes is looked up by its short key, the key's last
/// bytes: only those are zeroed then (any suffix looked up after it is shorter still).
#[inline(never)]
pub fn zero_prefix(s: &mut Scratch, m: u64) -> Packed {
    const SHORT_FROM: usize = (KEY_NAME_LEN - SHORT_NAME_LEN) / 8;
    let m = m as usize;
    let words = s.key.name.as_mut_ptr() as *mut u64;
    if m >= SHORT_FROM * 8 {
        zero_words::<SHORT_FROM>(words, m);
    } else {
        zero_words::<0>(words, m);
    }
    launder(s, Packed::value(0))
}

/// Zeroes the bytes of the key below `m`, from word `FROM` on.
#[inline(always)]
fn zero_words<const FROM: usize>(words: *mut u64, m: usize) {
    for w in FROM..KEY_NAME_LEN / 8 {
        let lo = w * 8;
        if m <= lo {
            break;
        }
        // SAFETY: w < KEY_NAME_LEN / 8, the key is 8-byte aligned at the start of the scratch slot.
        let p = unsafe { words.add(w) };
        if m >= lo + 8 {
            // SAFETY: `p` is inside the key, as above.
            unsafe { *p = 0 };
        } else {
            // Little-endian: the first bytes in memory are the low ones.
            // SAFETY: `p` is inside the key, as above.
            unsafe { *p &= u64::MAX << ((m - lo) * 8) };
        }
    }
}
