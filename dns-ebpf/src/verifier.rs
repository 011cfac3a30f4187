//! Shapes of code that exist for the verifier, not for the packet: length masks it can follow,
//! values hidden from LLVM's range analysis, and the one-register results of the subprograms
//! whose loops would otherwise multiply the verifier's states.
//!
//! The loops of the program live in functions of their own (BPF subprograms, `#[inline(never)]`)
//! that return a [`Packed`] passed through [`launder`]: every exit of a loop then returns the same
//! verifier state, and the code after the call is verified once, not once per exit.

use dns_common::{Scratch, Stat, KEY_NAME_LEN};

use crate::Pass;

/// A helper's length argument the verifier can bound: `len` itself for `1 <= len <= max`
/// (`max` a power of two). LLVM folds range checks into forms the verifier can't follow; a mask
/// it can.
#[inline(always)]
pub fn helper_len(len: usize, max: usize) -> u32 {
    (((opaque(len) - 1) & (max - 1)) + 1) as u32
}

/// Passes a value through the per-CPU scratch slot. The verifier knows nothing of a value loaded
/// from map memory, so the states of a loop's many exits (each with its own range for the value)
/// become one state after this, and the rest of the program is verified once instead of once per
/// exit. Callers bound the result again with a check or mask.
#[inline(always)]
pub fn launder(s: &mut Scratch, x: Packed) -> Packed {
    // SAFETY: a field of the per-CPU scratch slot, only this CPU uses it while the program runs.
    unsafe {
        core::ptr::write_volatile(&mut s.tmp, x.0);
        Packed(core::ptr::read_volatile(&s.tmp))
    }
}

/// What the last [`launder`] left in the scratch slot: a value written there on some steps of a
/// loop and read after it.
#[inline(always)]
pub fn launder_keep(s: &mut Scratch) -> Packed {
    // SAFETY: as in `launder`.
    Packed(unsafe { core::ptr::read_volatile(&s.tmp) })
}

/// Hides a value from LLVM's range analysis, so that masks meant for the verifier stay in.
#[inline(always)]
pub fn opaque(x: usize) -> usize {
    // SAFETY: reads a local, which is valid and aligned.
    unsafe { core::ptr::read_volatile(&x) }
}

/// What a subprogram returns, in the one register a BPF call returns. The layout, in one place:
///
/// | bits | error ([`Packed::ERR`] set) | question ([`Packed::question`]) | other subprograms |
/// |---|---|---|---|
/// | 63 | 1 | 0 | 0 |
/// | 0..8 | `Stat as u8 + 1`, or 0: not ours | name length | the value |
/// | 8..10 | | segment index of the qtype | |
/// | 16 | | an OPT record came | |
/// | 17 | | its DO bit | |
/// | 18..28 | | offset of a COOKIE option's data in `Scratch::q` | |
/// | 32..48 | | its UDP payload size | |
/// | 48..54 | | the COOKIE option's length (0: none) | |
#[repr(transparent)]
#[derive(Clone, Copy)]
pub struct Packed(u64);

impl Packed {
    const ERR: u64 = 1 << 63;
    const EDNS: u64 = 1 << 16;
    const DO: u64 = 1 << 17;

    /// A failure, with the reason to pass the packet up (or `None`: not ours).
    #[inline(always)]
    pub fn err(p: Pass) -> Self {
        Self(Self::ERR | p.map(|s| s as u64 + 1).unwrap_or(0))
    }

    /// A success carrying a small value (an offset, a flag).
    #[inline(always)]
    pub const fn value(v: u64) -> Self {
        Self(v)
    }

    /// All 64 bits, whatever they mean (for a value laundered whole, not a result).
    #[inline(always)]
    pub fn bits(self) -> u64 {
        self.0
    }

    #[inline(always)]
    pub fn is_err(self) -> bool {
        self.0 & Self::ERR != 0
    }

    /// The value of a success, or the reason of a failure.
    #[inline(always)]
    pub fn get(self) -> Result<u64, Pass> {
        if !self.is_err() {
            return Ok(self.0);
        }
        let code = (self.0 & 0xff) as u32;
        if code == 0 {
            return Err(None);
        }
        Err(Stat::ALL.get(code as usize - 1).copied())
    }

    /// A parsed question.
    #[inline(always)]
    pub fn question(f: QuestionFields) -> Self {
        let mut x = f.name_len as u64
            | (f.seg as u64) << 8
            | ((f.cookie_at as u64) & 0x3ff) << 18
            | ((f.cookie_len as u64) & 0x3f) << 48;
        if let Some((size, dnssec_ok)) = f.edns {
            x |= Self::EDNS | (dnssec_ok as u64) << 17 | (size as u64) << 32;
        }
        Self(x)
    }

    /// The fields of a question: name length (checked against the key), segment index, EDNS.
    #[inline(always)]
    pub fn unpack_question(self) -> Result<QuestionFields, Pass> {
        let x = self.get()?;
        let name_len = (x & 0xff) as usize;
        if name_len == 0 || name_len > KEY_NAME_LEN {
            return Err(Some(Stat::PassMalformed));
        }
        let edns = if x & Self::EDNS != 0 {
            Some(((x >> 32) as u16, x & Self::DO != 0))
        } else {
            None
        };
        Ok(QuestionFields {
            name_len,
            seg: ((x >> 8) & 3) as usize,
            edns,
            cookie_at: ((x >> 18) & 0x3ff) as usize,
            cookie_len: ((x >> 48) & 0x3f) as usize,
        })
    }
}

/// What [`Packed::question`] carries.
pub struct QuestionFields {
    /// The name's wire length, root label included.
    pub name_len: usize,
    /// The qtype's segment index (0..4).
    pub seg: usize,
    /// The client's EDNS UDP payload size and DO bit, if it sent an OPT record.
    pub edns: Option<(u16, bool)>,
    /// Where the data of its COOKIE option starts in `Scratch::q`, and its length (0: no
    /// cookie, or cookies are off).
    pub cookie_at: usize,
    pub cookie_len: usize,
}
