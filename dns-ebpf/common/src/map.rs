//! The map contract: every map of the XDP program, declared once. The program's `#[map]` statics
//! are built from these (`dns-ebpf/src/maps.rs`: the static's name is the map's name, its key and
//! value types come from the spec), the loader takes each map from the object by its spec and
//! checks the kernel's map against it, and the map writer names maps in its errors by it.

use core::marker::PhantomData;

use crate::{
    limit::{LimitConfig, RrlBucket, RrlKey},
    stat::STAT_SLOTS,
    LargeValue, NameKey, Scratch, ServedKey, ShortKey, SmallValue, XdpConfig, ZoneLens, ZoneValue,
};

/// `BPF_MAP_TYPE_*` of the maps used here.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapKind {
    Hash = 1,
    Array = 2,
    PerCpuArray = 6,
    LruHash = 9,
    LpmTrie = 11,
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
/// Per-CPU counters, indexed by [`crate::Stat`], then the per-qtype answers
/// ([`crate::stat::qtype_slot`]).
pub const STATS: MapSpec<u32, u64> = MapSpec::new("STATS", MapKind::PerCpuArray, STAT_SLOTS, 0);
/// Names of at most [`crate::SHORT_NAME_LEN`] wire bytes whose answers fit a small value, and
/// the [`crate::IN_LARGE`] marker of short names whose answers don't.
pub const NAMES_SHORT: MapSpec<ShortKey, SmallValue> =
    MapSpec::new("NAMES_SHORT", MapKind::Hash, NAMES_SHORT_MAX, F_NO_PREALLOC);
/// Longer names whose answers fit a small value, and the [`crate::IN_LARGE`] marker of longer
/// names whose answers don't.
pub const NAMES_SMALL: MapSpec<NameKey, SmallValue> =
    MapSpec::new("NAMES_SMALL", MapKind::Hash, NAMES_SMALL_MAX, F_NO_PREALLOC);
/// Names whose answers need a large value.
pub const NAMES_LARGE: MapSpec<NameKey, LargeValue> =
    MapSpec::new("NAMES_LARGE", MapKind::Hash, NAMES_LARGE_MAX, F_NO_PREALLOC);
/// Zones whose apex is longer than [`crate::SHORT_NAME_LEN`] wire bytes, by apex: the
/// negative-answer SOA and flags.
pub const ZONES: MapSpec<NameKey, ZoneValue> =
    MapSpec::new("ZONES", MapKind::Hash, ZONES_MAX, F_NO_PREALLOC);
/// Zones whose apex is at most [`crate::SHORT_NAME_LEN`] wire bytes, by the apex's short key (a
/// third of the hashing of a full key, for most zones).
pub const ZONES_SHORT: MapSpec<ShortKey, ZoneValue> =
    MapSpec::new("ZONES_SHORT", MapKind::Hash, ZONES_MAX, F_NO_PREALLOC);
/// The apex lengths of the zones in [`ZONES`] and [`ZONES_SHORT`], one [`ZoneLens`] at index 0.
pub const ZONE_LENS: MapSpec<u32, ZoneLens> = MapSpec::new("ZONE_LENS", MapKind::Array, 1, 0);
/// Per-CPU working memory for one packet (the BPF stack is 512 bytes).
pub const SCRATCH: MapSpec<u32, Scratch> = MapSpec::new("SCRATCH", MapKind::PerCpuArray, 1, 0);

/// Response-rate limiting and cookie settings, one [`LimitConfig`] at index 0.
pub const LIMITS: MapSpec<u32, LimitConfig> = MapSpec::new("LIMITS", MapKind::Array, 1, 0);
/// Capacity of the RRL buckets: the least recently used are evicted, as Knot's and NSD's
/// fixed tables overwrite theirs.
pub const RRL_MAX: u32 = 128 * 1024;
/// RRL token buckets by source prefix and response class.
pub const RRL: MapSpec<RrlKey, RrlBucket> = MapSpec::new("RRL", MapKind::LruHash, RRL_MAX, 0);
/// Prefixes exempt from RRL (an LPM trie; the key is the kernel's `{prefix_len, data}`).
pub const RRL_EXEMPT: MapSpec<crate::limit::ExemptKey, u8> =
    MapSpec::new("RRL_EXEMPT", MapKind::LpmTrie, 1024, F_NO_PREALLOC);

/// The maps that outlive the daemon when it pins them in bpffs (see the loader): all but
/// [`SCRATCH`], which holds nothing between packets, and the rate limiter's ([`LIMITS`], [`RRL`],
/// [`RRL_EXEMPT`]): a start writes its settings anew, and buckets lost with a restart only let a
/// second's burst through.
pub const PINNED: [&str; 9] = [
    CONFIG.name,
    SERVED.name,
    STATS.name,
    NAMES_SHORT.name,
    NAMES_SMALL.name,
    NAMES_LARGE.name,
    ZONES.name,
    ZONES_SHORT.name,
    ZONE_LENS.name,
];
