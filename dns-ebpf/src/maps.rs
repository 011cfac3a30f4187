//! The program's maps, each built from its declaration in `dns_common::map`: the static's name
//! is the map's name in the object, the spec gives its key and value types (checked by the
//! compiler: the static's type must match), capacity and flags.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use dns_common::{
    limit::{ExemptData, ExemptKey, LimitConfig, RrlBucket, RrlKey},
    map::{self, MapKind, MapSpec},
    LargeValue, NameKey, Scratch, ServedKey, ShortKey, SmallValue, Stat, XdpConfig, ZoneLens,
    ZoneValue,
};

const fn hash<K, V>(spec: MapSpec<K, V>) -> HashMap<K, V> {
    assert!(matches!(spec.kind, MapKind::Hash));
    HashMap::with_max_entries(spec.max_entries, spec.flags)
}

const fn array<V>(spec: MapSpec<u32, V>) -> Array<V> {
    assert!(matches!(spec.kind, MapKind::Array));
    Array::with_max_entries(spec.max_entries, spec.flags)
}

const fn per_cpu_array<V>(spec: MapSpec<u32, V>) -> PerCpuArray<V> {
    assert!(matches!(spec.kind, MapKind::PerCpuArray));
    PerCpuArray::with_max_entries(spec.max_entries, spec.flags)
}

const fn lru<K, V>(spec: MapSpec<K, V>) -> LruHashMap<K, V> {
    assert!(matches!(spec.kind, MapKind::LruHash));
    LruHashMap::with_max_entries(spec.max_entries, spec.flags)
}

/// An LPM trie keyed by `ExemptKey` (aya's `Key<ExemptData>` has the same layout); aya adds
/// the `BPF_F_NO_PREALLOC` the kernel requires of tries, which the spec's flags say.
const fn lpm(spec: MapSpec<ExemptKey, u8>) -> LpmTrie<ExemptData, u8> {
    assert!(matches!(spec.kind, MapKind::LpmTrie));
    assert!(
        core::mem::size_of::<ExemptKey>()
            == core::mem::size_of::<aya_ebpf::maps::lpm_trie::Key<ExemptData>>()
    );
    LpmTrie::with_max_entries(spec.max_entries, 0)
}

#[map]
pub static CONFIG: Array<XdpConfig> = array(map::CONFIG);
#[map]
pub static SERVED: HashMap<ServedKey, u32> = hash(map::SERVED);
#[map]
pub static STATS: PerCpuArray<u64> = per_cpu_array(map::STATS);
#[map]
pub static NAMES_SHORT: HashMap<ShortKey, SmallValue> = hash(map::NAMES_SHORT);
#[map]
pub static NAMES_SMALL: HashMap<NameKey, SmallValue> = hash(map::NAMES_SMALL);
#[map]
pub static NAMES_LARGE: HashMap<NameKey, LargeValue> = hash(map::NAMES_LARGE);
#[map]
pub static ZONES: HashMap<NameKey, ZoneValue> = hash(map::ZONES);
#[map]
pub static ZONES_SHORT: HashMap<ShortKey, ZoneValue> = hash(map::ZONES_SHORT);
#[map]
pub static ZONE_LENS: Array<ZoneLens> = array(map::ZONE_LENS);
#[map]
pub static SCRATCH: PerCpuArray<Scratch> = per_cpu_array(map::SCRATCH);
#[map]
pub static LIMITS: Array<LimitConfig> = array(map::LIMITS);
#[map]
pub static RRL: LruHashMap<RrlKey, RrlBucket> = lru(map::RRL);
#[map]
pub static RRL_EXEMPT: LpmTrie<ExemptData, u8> = lpm(map::RRL_EXEMPT);

/// Adds one to a counter; returns its new value on this CPU.
#[inline(always)]
pub fn count(stat: Stat) -> u64 {
    count_slot(stat as u32)
}

/// Adds one to the counter in `slot` of the STATS map (a [`Stat`], or a per-qtype slot).
#[inline(always)]
pub fn count_slot(slot: u32) -> u64 {
    match STATS.get_ptr_mut(slot) {
        // SAFETY: a per-CPU slot, only this CPU writes it while the program runs.
        Some(c) => unsafe {
            *c += 1;
            *c
        },
        None => 0,
    }
}

/// This CPU's scratch slot.
#[inline(always)]
pub fn scratch() -> Option<&'static mut Scratch> {
    let p = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: the per-CPU slot, valid for the program's run; only this CPU uses it, and only
    // through the one reference the program's path holds.
    Some(unsafe { &mut *p })
}

/// Whether the daemon listens on `key` (family, destination address and port of a query), on
/// that address or on the family's wildcard. The family's entry held in CONFIG (`one`) is
/// checked first, without a lookup: it is all most servers have. Then the SERVED map, where the
/// wildcard is looked up first when the family has one (`wildcard_first`), so the common case is
/// one lookup either way. The keys are built in the scratch slot's hash input (unused until the
/// cookie stage), not on the stack: the cookie's hash needs the stack's room.
#[inline(always)]
pub fn served(s: &mut Scratch, one: &ServedKey, key: ServedKey, wildcard_first: bool) -> bool {
    if one.covers(&key) {
        return true;
    }
    const _: () = assert!(
        core::mem::offset_of!(Scratch, hash_in) % core::mem::align_of::<ServedKey>() == 0
            && core::mem::size_of::<ServedKey>() <= 32
    );
    // SAFETY: `hash_in` holds a `ServedKey` at a suitable alignment (checked above); both are
    // plain bytes and integers, valid for any bit pattern.
    let k = unsafe { &mut *(s.hash_in.as_mut_ptr() as *mut ServedKey) };
    let (first, second) = if wildcard_first {
        (key.wildcard(), key)
    } else {
        (key, key.wildcard())
    };
    *k = first;
    if SERVED.get_ptr(&*k).is_some() {
        return true;
    }
    *k = second;
    SERVED.get_ptr(&*k).is_some()
}
