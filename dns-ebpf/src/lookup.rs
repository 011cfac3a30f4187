//! Looking the name up in the maps: which value holds its answers, or that it doesn't exist; and
//! the zone a negative answer comes from.

use dns_common::{
    LargeValue, Scratch, ShortKey, SmallValue, Stat, ZoneValue, IN_LARGE, KEY_NAME_LEN,
    SHORT_NAME_LEN, ZONE_NEG_PASS,
};

use crate::{
    key::zero_prefix,
    maps::{NAMES_LARGE, NAMES_SHORT, NAMES_SMALL, ZONES},
    parse::Query,
    verifier::{launder, Packed},
    Pass,
};

/// Where the name's answers are.
pub enum Hit<'a> {
    /// In a small value (from the short or the small map).
    Small(&'a SmallValue),
    /// In a large value.
    Large(&'a LargeValue),
    /// Nowhere: the name doesn't exist (NXDOMAIN, if a zone here encloses it).
    Absent,
}

/// Looks the key in `s.key` up: a short name in the short map, a longer one in the small map,
/// then either in the large map.
#[inline(always)]
pub fn name<'a>(s: &Scratch, q: &Query) -> Result<Hit<'a>, Pass> {
    if q.name_len <= SHORT_NAME_LEN {
        // SAFETY: the last SHORT_NAME_LEN bytes of the key, which is all a short name fills;
        // `ShortKey` is a byte array, so any alignment and bit pattern will do.
        let short = unsafe {
            &*(s.key.name.as_ptr().add(KEY_NAME_LEN - SHORT_NAME_LEN) as *const ShortKey)
        };
        let Some(v) = NAMES_SHORT.get_ptr(short) else {
            // Every short name has a short entry, so this name doesn't exist.
            return Ok(Hit::Absent);
        };
        // SAFETY (this and the other map values below): the kernel keeps a looked-up hash map
        // value alive for the rest of the program's run (RCU); the daemon replaces values whole,
        // never in place.
        let v = unsafe { &*v };
        if v.pass_mask & IN_LARGE == 0 {
            return Ok(Hit::Small(v));
        }
    } else if let Some(v) = NAMES_SMALL.get_ptr(&s.key) {
        // SAFETY: as above.
        return Ok(Hit::Small(unsafe { &*v }));
    }
    if let Some(v) = NAMES_LARGE.get_ptr(&s.key) {
        // SAFETY: as above.
        return Ok(Hit::Large(unsafe { &*v }));
    }
    if q.name_len <= SHORT_NAME_LEN {
        // Marked as in the large map but not there: between two writes. Let the fallback say.
        return Err(Some(Stat::PassRecord));
    }
    Ok(Hit::Absent)
}

/// The zone whose apex is the last `apex_len` bytes of the name (a NODATA answer's zone). Leaves
/// the apex's key in `s.key`.
#[inline(always)]
pub fn zone_at<'a>(s: &mut Scratch, apex_len: usize) -> Result<&'a ZoneValue, Pass> {
    zero_prefix(s, (KEY_NAME_LEN - apex_len) as u64);
    let zone = ZONES.get_ptr(&s.key).ok_or(Some(Stat::PassNoZone))?;
    // SAFETY: as for the name maps above.
    Ok(unsafe { &*zone })
}

/// The closest zone that encloses the name, and the offset of its apex in the name (a NXDOMAIN
/// answer's zone).
#[inline(always)]
pub fn enclosing_zone<'a>(s: &mut Scratch, q: &Query) -> Result<(&'a ZoneValue, usize), Pass> {
    let apex_off = find_zone(s, q.name_len as u64).get()? as usize;
    if apex_off >= KEY_NAME_LEN {
        return Err(Some(Stat::PassMalformed));
    }
    // `find_zone` left the apex's key in `s.key`.
    let zone = ZONES.get_ptr(&s.key).ok_or(Some(Stat::PassNoZone))?;
    // SAFETY: as for the name maps above.
    Ok((unsafe { &*zone }, apex_off))
}

/// Walks up the name's labels until a suffix is a zone; returns the suffix's offset in the name
/// (its key left in `s.key`), or the reason to pass.
#[inline(never)]
fn find_zone(s: &mut Scratch, name_len: u64) -> Packed {
    let name_len = name_len as usize;
    let start = KEY_NAME_LEN.wrapping_sub(name_len);
    let mut pos = 0usize;
    let mut r = Packed::err(Some(Stat::PassNoZone));
    for _ in 0..KEY_NAME_LEN / 2 {
        let Some(l) = s.q.get(pos).copied() else {
            break;
        };
        if l == 0 || start > KEY_NAME_LEN {
            break;
        }
        pos += l as usize + 1;
        if pos >= name_len {
            break;
        }
        zero_prefix(s, (start + pos) as u64);
        if let Some(zone) = ZONES.get_ptr(&s.key) {
            // SAFETY: as for the name maps above.
            r = if unsafe { (*zone).flags } & ZONE_NEG_PASS != 0 {
                Packed::err(Some(Stat::PassNegative))
            } else {
                Packed::value(pos as u64)
            };
            break;
        }
    }
    launder(s, r)
}
