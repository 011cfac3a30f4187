//! The program's maps, each built from its declaration in `dns_common::map`: the static's name
//! is the map's name in the object, the spec gives its key and value types (checked by the
//! compiler: the static's type must match), capacity and flags.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, PerCpuArray},
};
use dns_common::{
    map::{self, MapKind, MapSpec},
    LargeValue, NameKey, Scratch, ServedKey, ShortKey, SmallValue, Stat, XdpConfig, ZoneValue,
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
pub static SCRATCH: PerCpuArray<Scratch> = per_cpu_array(map::SCRATCH);

/// Adds one to a counter; returns its new value on this CPU.
#[inline(always)]
pub fn count(stat: Stat) -> u64 {
    match STATS.get_ptr_mut(stat as u32) {
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
/// that address or on the family's wildcard.
#[inline(always)]
pub fn served(key: &ServedKey) -> bool {
    SERVED.get_ptr(key).is_some() || SERVED.get_ptr(&key.wildcard()).is_some()
}
