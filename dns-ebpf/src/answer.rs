//! What to answer: the answer section's pieces (copied from a map value), the counts and the
//! RCODE, from the lookup's [`Hit`].

use dns_common::{csum::fold, seg_max, wire::DNS_HEADER_LEN, NameValue, Scratch, Seg, Stat};

use crate::{
    lookup::{self, Hit, Zone},
    parse::Query,
    verifier::opaque,
    Pass,
};

/// One piece of the answer section, copied from a map value.
#[derive(Clone, Copy)]
pub struct Piece {
    pub ptr: *const u8,
    pub len: usize,
    /// A power of two no smaller than `len`, such that `ptr + max` stays inside the value.
    pub max: usize,
}

const NO_PIECE: Piece = Piece {
    ptr: core::ptr::null(),
    len: 0,
    max: 1,
};

/// The answer section and the counts that go with it.
pub struct Answer {
    pub pieces: [Piece; 2],
    /// Sum of the pieces' bytes as placed from an even offset (see `Seg::sum`).
    pub sum: u16,
    /// For negative answers: the SOA owner pointer to write over the first two bytes.
    pub soa_ptr: Option<u16>,
    /// The RCODE; a slipped answer (see `rrl`) carries the TC bit here too.
    pub rcode: u16,
    pub ancount: u16,
    pub nscount: u16,
    /// What to count once it is sent; a slipped answer is counted as [`Stat::RrlSlipped`].
    pub stat: Stat,
    /// 1 if `rrl::slip` emptied the answer (its records' lengths are then 0), else 0.
    pub slipped: u16,
}

impl Answer {
    /// Length of the answer and authority sections.
    #[inline(always)]
    pub fn len(&self) -> usize {
        self.pieces[0].len + self.pieces[1].len
    }
}

#[inline(always)]
pub fn answer(s: &mut Scratch, q: &Query, hit: Hit) -> Result<Answer, Pass> {
    match hit {
        Hit::Small(v) => positive(s, q, v),
        Hit::Large(v) => positive(s, q, v),
        Hit::Absent => {
            // The name is not in the maps: find its zone by walking up the labels.
            let (zone, apex_off) = lookup::enclosing_zone(s, q)?;
            negative(zone, apex_off, true)
        }
    }
}

#[inline(always)]
fn seg_piece<const N: usize>(v: &NameValue<N>, seg: &Seg) -> Result<Piece, Pass> {
    let off = seg.off as usize;
    let len = seg.len as usize;
    if len == 0 {
        return Ok(NO_PIECE);
    }
    if off >= seg_max(N) || len > seg_max(N) {
        return Err(Some(Stat::PassRecord));
    }
    // Masked again for the verifier: `off < N / 2` and `len <= N / 2` keep the copy in the blob.
    let off = opaque(off) & (seg_max(N) - 1);
    Ok(Piece {
        // SAFETY: `off < N / 2`, inside the blob.
        ptr: unsafe { v.blob.as_ptr().add(off) },
        len,
        max: seg_max(N),
    })
}

#[inline(always)]
fn positive<const N: usize>(s: &mut Scratch, q: &Query, v: &NameValue<N>) -> Result<Answer, Pass> {
    if v.pass_mask & (1 << q.seg) != 0 {
        return Err(Some(Stat::PassRecord));
    }
    let prefix = &v.segs[0];
    let typed = match q.seg {
        1 => &v.segs[1],
        2 => &v.segs[2],
        _ => &v.segs[3],
    };
    let ancount = prefix.count + typed.count;
    if ancount == 0 {
        // NODATA: the name exists without this type. Find the zone by its apex suffix.
        let apex_len = v.apex_len as usize;
        if apex_len == 0 || apex_len > q.name_len {
            return Err(Some(Stat::PassRecord));
        }
        let zone = lookup::zone_at(s, apex_len)?;
        return negative(zone, q.name_len - apex_len, false);
    }
    Ok(Answer {
        pieces: [seg_piece(v, prefix)?, seg_piece(v, typed)?],
        sum: fold(prefix.sum as u32 + typed.sum as u32),
        soa_ptr: None,
        rcode: 0,
        ancount,
        nscount: 0,
        stat: Stat::AnsweredAnswer,
        slipped: 0,
    })
}

/// NXDOMAIN or NODATA: the zone's SOA in the authority section, its owner a pointer to the apex
/// at `apex_off` in the question name.
#[inline(always)]
fn negative(zone: Zone, apex_off: usize, nxdomain: bool) -> Result<Answer, Pass> {
    let len = zone.soa_len as usize;
    if !(2..=zone.soa_max).contains(&len) {
        return Err(Some(Stat::PassNoZone));
    }
    let ptr = 0xc000 | (DNS_HEADER_LEN + apex_off) as u16;
    Ok(Answer {
        pieces: [
            Piece {
                ptr: zone.soa,
                len,
                max: zone.soa_max,
            },
            NO_PIECE,
        ],
        sum: fold(zone.soa_sum as u32 + ptr as u32),
        soa_ptr: Some(ptr),
        rcode: if nxdomain { 3 } else { 0 },
        ancount: 0,
        nscount: 1,
        stat: if nxdomain {
            Stat::AnsweredNxdomain
        } else {
            Stat::AnsweredNodata
        },
        slipped: 0,
    })
}
