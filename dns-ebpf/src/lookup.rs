//! Looking the name up in the maps: which value holds its answers, or that it doesn't exist; and
//! the zone a negative answer comes from.

use dns_common::{
    LargeValue, Scratch, ShortKey, SmallValue, Stat, ZoneLens, ZoneValue, IN_LARGE, KEY_NAME_LEN,
    SHORT_NAME_LEN, SOA_BLOB, SOA_CACHE, ZONE_NEG_PASS,
};

use crate::{
    key::zero_prefix,
    maps::{NAMES_LARGE, NAMES_SHORT, NAMES_SMALL, ZONES, ZONES_SHORT, ZONE_LENS},
    parse::Query,
    verifier::{launder, launder_keep, Packed},
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
/// then, if that entry says [`IN_LARGE`], in the large map.
#[inline(always)]
pub fn name<'a>(s: &Scratch, q: &Query) -> Result<Hit<'a>, Pass> {
    let v = if q.name_len <= SHORT_NAME_LEN {
        // The short key is all a short name fills.
        NAMES_SHORT.get_ptr(short_key(s))
    } else {
        NAMES_SMALL.get_ptr(&s.key)
    };
    let Some(v) = v else {
        // Every name has an entry in the short or the small map, so this one doesn't exist.
        return Ok(Hit::Absent);
    };
    // SAFETY (this and the large value below): the kernel keeps a looked-up hash map value alive
    // for the rest of the program's run (RCU); the daemon replaces values whole, never in place.
    let v = unsafe { &*v };
    if v.pass_mask & IN_LARGE == 0 {
        return Ok(Hit::Small(v));
    }
    match NAMES_LARGE.get_ptr(&s.key) {
        // SAFETY: as above.
        Some(v) => Ok(Hit::Large(unsafe { &*v })),
        // Marked as in the large map but not there: between two writes. Let the fallback say.
        None => Err(Some(Stat::PassRecord)),
    }
}

/// What a negative answer takes from its zone: the flags and the SOA record, in the zone's map
/// value or in this CPU's copy of it (`Scratch::zone`).
pub struct Zone {
    pub flags: u32,
    pub soa_len: u16,
    pub soa_sum: u16,
    pub soa: *const u8,
    /// A power of two no smaller than `soa_len`, such that `soa + soa_max` stays inside the value.
    pub soa_max: usize,
}

impl Zone {
    #[inline(always)]
    fn of(z: &ZoneValue) -> Zone {
        Zone {
            flags: z.flags,
            soa_len: z.soa_len,
            soa_sum: z.soa_sum,
            soa: z.soa.as_ptr(),
            soa_max: SOA_BLOB,
        }
    }
}

/// The zone generation (`ZoneLens::gen`) and apex lengths.
#[inline(always)]
fn zone_lens() -> Result<&'static ZoneLens, Pass> {
    ZONE_LENS.get(0).ok_or(Some(Stat::PassNoZone))
}

/// The zone whose apex is the last `apex_len` bytes of the name (a NODATA answer's zone). Leaves
/// the apex's key in `s.key`.
#[inline(always)]
pub fn zone_at(s: &mut Scratch, apex_len: usize) -> Result<Zone, Pass> {
    let gen = zone_lens()?.gen;
    zero_prefix(s, KEY_NAME_LEN.wrapping_sub(apex_len) as u64);
    zone_of_key(s, apex_len, gen).ok_or(Some(Stat::PassNoZone))
}

/// The zone whose apex, `apex_len` bytes long, has its key in `s.key`: in the short zone map if
/// it is short (or in this CPU's copy of the last zone found there, if it is that one and the
/// zones haven't changed since: generation `gen`), else in the full one.
#[inline(always)]
fn zone_of_key(s: &mut Scratch, apex_len: usize, gen: u64) -> Option<Zone> {
    if apex_len > SHORT_NAME_LEN {
        // SAFETY: as for the name maps above.
        return Some(Zone::of(unsafe { &*ZONES.get_ptr(&s.key)? }));
    }
    if cached(s, gen) {
        return Some(cached_zone(s));
    }
    // SAFETY: as for the name maps above.
    let z = unsafe { &*ZONES_SHORT.get_ptr(short_key(s))? };
    if z.soa_len as usize <= SOA_CACHE {
        keep(s, z, apex_len, gen);
    }
    Some(Zone::of(z))
}

/// This CPU's copy of a zone, as the negative answer takes it.
#[inline(always)]
fn cached_zone(s: &Scratch) -> Zone {
    let c = &s.zone;
    Zone {
        flags: c.flags,
        soa_len: c.soa_len,
        soa_sum: c.soa_sum,
        soa: c.soa.as_ptr(),
        soa_max: SOA_CACHE,
    }
}

/// The offset of the apex of this CPU's copy of a zone in the name, if that zone is the closest
/// one enclosing the name: the copy is of the zones' generation `lens.gen`, the name ends with
/// its apex at a label's start, and no zone's apex is longer than that and shorter than the
/// name. Then a missing name needs no walk for its candidates and no lookup: the key of the
/// name's suffix as long as the apex compared with the copy's, and a walk over the labels only
/// as far as the apex. Leaves that suffix's key in `s.key` (the candidates of the lookup's way,
/// if it comes to that, are no longer: no zone's length lies between).
#[inline(always)]
fn cached_enclosing(s: &mut Scratch, name_len: usize, lens: &ZoneLens) -> Option<usize> {
    let len = s.zone.apex_len as usize;
    if lens.gen == 0
        || len == 0
        || len >= name_len
        || len > SHORT_NAME_LEN
        || lens.any_between(len + 1, name_len)
    {
        return None;
    }
    zero_prefix(s, (KEY_NAME_LEN - len) as u64);
    let off = name_len - len;
    if !cached(s, lens.gen) || label_starts(s, off as u64).is_err() {
        return None;
    }
    Some(off)
}

/// Whether a label of the name in `s.q` starts at `off` (a success), walking the labels up to
/// there.
#[inline(never)]
fn label_starts(s: &mut Scratch, off: u64) -> Packed {
    let off = off as usize;
    let mut pos = 0usize;
    let mut r = Packed::err(None);
    for _ in 0..KEY_NAME_LEN / 2 {
        if pos >= off {
            if pos == off {
                r = Packed::value(0);
            }
            break;
        }
        let Some(l) = s.q.get(pos).copied() else {
            break;
        };
        if l == 0 {
            break;
        }
        pos += l as usize + 1;
    }
    launder(s, r)
}

/// Whether the suffix of `apex_len` bytes whose key is in `s.key` is a zone's apex.
#[inline(always)]
fn is_zone(s: &Scratch, apex_len: usize) -> bool {
    if apex_len <= SHORT_NAME_LEN {
        ZONES_SHORT.get_ptr(short_key(s)).is_some()
    } else {
        ZONES.get_ptr(&s.key).is_some()
    }
}

/// Whether this CPU's copy of a zone (`s.zone`) is the zone whose short key is in `s.key`, as of
/// generation `gen`: four words compared, where a lookup would hash them.
#[inline(always)]
fn cached(s: &Scratch, gen: u64) -> bool {
    let key = short_words(s);
    let apex = s.zone.apex.name.as_ptr() as *const u64;
    let mut diff = s.zone.gen ^ gen;
    for w in 0..SHORT_NAME_LEN / 8 {
        // SAFETY: w < 4: inside the 32-byte keys; `ZoneCache::apex` is 8-byte aligned (it
        // follows a u64 in a struct at an 8-byte offset, checked in dns-common).
        diff |= unsafe { *key.add(w) ^ *apex.add(w) };
    }
    gen != 0 && diff == 0
}

/// Keeps zone `z` (found by the short key in `s.key`, `apex_len` bytes long, as of generation
/// `gen`) in `s.zone`; its
/// SOA is at most [`SOA_CACHE`] bytes. Word by word, not a `memcpy` call.
#[inline(always)]
fn keep(s: &mut Scratch, z: &ZoneValue, apex_len: usize, gen: u64) {
    let key = short_words(s);
    let c = &mut s.zone;
    let apex = c.apex.name.as_mut_ptr() as *mut u64;
    let soa = c.soa.as_mut_ptr() as *mut u64;
    let from = z.soa.as_ptr() as *const u64;
    // SAFETY: inside the 32-byte keys and the 128-byte copy (which `z.soa`, 1024 bytes, holds);
    // all 8-byte aligned (`ZoneValue::soa` is at offset 8 of a map value, checked in dns-common).
    unsafe {
        for w in 0..SHORT_NAME_LEN / 8 {
            core::ptr::write_volatile(apex.add(w), *key.add(w));
        }
        for w in 0..SOA_CACHE / 8 {
            core::ptr::write_volatile(soa.add(w), *from.add(w));
        }
    }
    c.flags = z.flags;
    c.soa_len = z.soa_len;
    c.soa_sum = z.soa_sum;
    c.apex_len = apex_len as u32;
    c.gen = gen;
}

/// The short key in `s.key` as four words.
#[inline(always)]
fn short_words(s: &Scratch) -> *const u64 {
    short_key(s).name.as_ptr() as *const u64
}

/// The last [`SHORT_NAME_LEN`] bytes of the key in `s.key`: the short key of a name that short.
#[inline(always)]
fn short_key(s: &Scratch) -> &ShortKey {
    // SAFETY: the last SHORT_NAME_LEN bytes of the key; `ShortKey` is a byte array, so any
    // alignment and bit pattern will do.
    unsafe { &*(s.key.name.as_ptr().add(KEY_NAME_LEN - SHORT_NAME_LEN) as *const ShortKey) }
}

/// The closest zone that encloses the name, and the offset of its apex in the name (a NXDOMAIN
/// answer's zone).
#[inline(always)]
pub fn enclosing_zone(s: &mut Scratch, q: &Query) -> Result<(Zone, usize), Pass> {
    let lens = zone_lens()?;
    if let Some(apex_off) = cached_enclosing(s, q.name_len, lens) {
        let zone = cached_zone(s);
        if zone.flags & ZONE_NEG_PASS != 0 {
            return Err(Some(Stat::PassNegative));
        }
        return Ok((zone, apex_off));
    }
    let (lo, hi, gen) = (lens.bits[0], lens.bits[1], lens.gen);
    let c = candidates(s, q.name_len as u64, lo, hi).get()?;
    let last = c & 0xff;
    let apex_off = if c & MORE_CANDIDATES != 0 {
        find_zone(s, q.name_len as u64, lo, hi, last).get()? as usize
    } else {
        // The one suffix some zone's length matches: the caller's lookup below says whether it
        // is a zone, no walk over the labels again.
        zero_prefix(s, KEY_NAME_LEN.wrapping_sub(last as usize) as u64);
        q.name_len.wrapping_sub(last as usize)
    };
    if apex_off >= q.name_len {
        return Err(Some(Stat::PassMalformed));
    }
    // The apex's key is in `s.key` (left by `find_zone` or `zero_prefix`).
    let zone = zone_of_key(s, q.name_len - apex_off, gen).ok_or(Some(Stat::PassNoZone))?;
    if zone.flags & ZONE_NEG_PASS != 0 {
        return Err(Some(Stat::PassNegative));
    }
    Ok((zone, apex_off))
}

/// In what [`candidates`] returns: more than one suffix of the name has a zone's length.
const MORE_CANDIDATES: u64 = 1 << 8;

/// The length of the name's shortest suffix that some zone's apex is as long as (`lo` and `hi`
/// are the [`ZoneLens`] bits), with [`MORE_CANDIDATES`] if a longer suffix is too; or the reason
/// to pass. With one candidate the caller looks it up alone; with more, [`find_zone`] walks them
/// longest first and returns the shortest without looking it up.
#[inline(never)]
fn candidates(s: &mut Scratch, name_len: u64, lo: u64, hi: u64) -> Packed {
    let lens = ZoneLens {
        bits: [lo, hi],
        gen: 0,
    };
    let name_len = name_len as usize;
    let mut pos = 0usize;
    // Kept in the scratch slot, not a register: the verifier then has one state per step of the
    // loop, not one per value the length (or the "more" flag) could have had.
    launder(s, Packed::err(Some(Stat::PassNoZone)));
    for _ in 0..KEY_NAME_LEN / 2 {
        let Some(l) = s.q.get(pos).copied() else {
            break;
        };
        if l == 0 {
            break;
        }
        pos += l as usize + 1;
        if pos >= name_len {
            break;
        }
        let len = name_len - pos;
        if lens.has(len) {
            // A value already there (not the error it starts as) is a longer candidate.
            let seen = !launder_keep(s).is_err() as u64;
            launder(s, Packed::value(len as u64 | (seen * MORE_CANDIDATES)));
        }
    }
    launder_keep(s)
}

/// Walks the name's suffixes, longest first, to the closest one that is a zone; returns its
/// offset in the name, its key left in `s.key`, or the reason to pass. `lo` and `hi` are the
/// [`ZoneLens`] bits: a suffix whose length no zone has is skipped without a lookup, and the
/// shortest one some zone's length matches (`last`, from [`candidates`]) is returned without
/// one (the caller's lookup of it, which it needs for the zone's value anyway, says whether it is
/// a zone). Only called when there are several candidates (zones nested in zones, or of the
/// same length as a longer suffix): the longer ones get looked up here.
#[inline(never)]
fn find_zone(s: &mut Scratch, name_len: u64, lo: u64, hi: u64, last: u64) -> Packed {
    let lens = ZoneLens {
        bits: [lo, hi],
        gen: 0,
    };
    let name_len = name_len as usize;
    let mut pos = 0usize;
    let mut r = Packed::err(Some(Stat::PassNoZone));
    for _ in 0..KEY_NAME_LEN / 2 {
        let Some(l) = s.q.get(pos).copied() else {
            break;
        };
        if l == 0 {
            break;
        }
        pos += l as usize + 1;
        if pos >= name_len {
            break;
        }
        let len = name_len - pos;
        if !lens.has(len) {
            continue;
        }
        zero_prefix(s, KEY_NAME_LEN.wrapping_sub(len) as u64);
        if len as u64 == last || is_zone(s, len) {
            r = Packed::value(pos as u64);
            break;
        }
    }
    launder(s, r)
}
