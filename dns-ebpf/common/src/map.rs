//! The map contract: every map of the XDP program, declared once. The program's `#[map]` statics
//! are built from these (`dns-ebpf/src/maps.rs`: the static's name is the map's name, its key and
//! value types come from the spec), the loader takes each map from the object by its spec and
//! checks the kernel's map against it, and the map writer names maps in its errors by it.

use core::marker::PhantomData;

use crate::{
    LargeValue, NameKey, Scratch, ServedKey, ShortKey, SmallValue, XdpConfig, ZoneValue, STAT_COUNT,
};

/// `BPF_MAP_TYPE_*` of the maps used here.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Hash = 1,
    Array = 2,
    PerCpuArray = 6,
}

/// `BPF_F_NO_PREALLOC`: a hash map's memory follows its number of entries, not its capacity.
pub const F_NO_PREALLOC: u32 = 1;

/// One map: its name in the object (the name of the program's static), kind, key and value
/// types, capacity and flags.
pub struct MapSpec<K, V> {
    pub name: &'static str,
    pub kind: MapKind,
    pub max_entries: u32,
    pub flags: u32,
    _kv: PhantomData<fn() -> (K, V)>,
}

impl<K, V> MapSpec<K, V> {
    const fn new(name: &'static str, kind: MapKind, max_entries: u32, flags: u32) -> Self {
        Self {
            name,
            kind,
            max_entries,
            flags,
            _kv: PhantomData,
        }
    }

    /// Key size in bytes, as the kernel sees it.
    pub const fn key_size(&self) -> u32 {
        core::mem::size_of::<K>() as u32
    }

    /// Value size in bytes (per CPU for a per-CPU map), as the kernel sees it.
    pub const fn value_size(&self) -> u32 {
        core::mem::size_of::<V>() as u32
    }
}

// Not derived: the derive would ask K and V to be Clone too.
impl<K, V> Clone for MapSpec<K, V> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K, V> Copy for MapSpec<K, V> {}

/// Capacity of the name and zone maps (entries).
pub const NAMES_SHORT_MAX: u32 = 2 * 1024 * 1024;
pub const NAMES_SMALL_MAX: u32 = 1024 * 1024;
pub const NAMES_LARGE_MAX: u32 = 256 * 1024;
pub const ZONES_MAX: u32 = 4096;
/// Capacity of [`SERVED`]: listen addresses and ports.
pub const SERVED_MAX: u32 = 256;

/// Program settings, one [`XdpConfig`] at index 0.
pub const CONFIG: MapSpec<u32, XdpConfig> = MapSpec::new("CONFIG", MapKind::Array, 1, 0);
/// The (family, address, port) the program answers, with wildcard entries (see [`ServedKey`]);
/// the value is unused (1).
pub const SERVED: MapSpec<ServedKey, u32> = MapSpec::new("SERVED", MapKind::Hash, SERVED_MAX, 0);
/// Per-CPU counters, indexed by [`crate::Stat`].
pub const STATS: MapSpec<u32, u64> = MapSpec::new("STATS", MapKind::PerCpuArray, STAT_COUNT, 0);
/// Names of at most [`crate::SHORT_NAME_LEN`] wire bytes whose answers fit a small value, and
/// the [`crate::IN_LARGE`] marker of short names whose answers don't.
pub const NAMES_SHORT: MapSpec<ShortKey, SmallValue> =
    MapSpec::new("NAMES_SHORT", MapKind::Hash, NAMES_SHORT_MAX, F_NO_PREALLOC);
/// Longer names whose answers fit a small value.
pub const NAMES_SMALL: MapSpec<NameKey, SmallValue> =
    MapSpec::new("NAMES_SMALL", MapKind::Hash, NAMES_SMALL_MAX, F_NO_PREALLOC);
/// Names whose answers need a large value.
pub const NAMES_LARGE: MapSpec<NameKey, LargeValue> =
    MapSpec::new("NAMES_LARGE", MapKind::Hash, NAMES_LARGE_MAX, F_NO_PREALLOC);
/// Zones by apex: the negative-answer SOA and flags.
pub const ZONES: MapSpec<NameKey, ZoneValue> =
    MapSpec::new("ZONES", MapKind::Hash, ZONES_MAX, F_NO_PREALLOC);
/// Per-CPU working memory for one packet (the BPF stack is 512 bytes).
pub const SCRATCH: MapSpec<u32, Scratch> = MapSpec::new("SCRATCH", MapKind::PerCpuArray, 1, 0);

/// The maps that outlive the daemon when it pins them in bpffs (see the loader): all but
/// [`SCRATCH`], which holds nothing between packets.
pub const PINNED: [&str; 7] = [
    CONFIG.name,
    SERVED.name,
    STATS.name,
    NAMES_SHORT.name,
    NAMES_SMALL.name,
    NAMES_LARGE.name,
    ZONES.name,
];
