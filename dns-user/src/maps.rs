//! The sole writer of the XDP program's maps.
//!
//! Every write replaces a whole value with `bpf_map_update_elem`, so the program sees the old
//! answer or the new one. A name that moves between maps (short or small, and large) is inserted
//! into the new map before it is deleted from the old one; the program looks in the large map
//! last.

use std::collections::HashMap as StdHashMap;

use aya::maps::{
    lpm_trie::{Key as LpmKey, LpmTrie},
    Array, HashMap, MapData, MapError, PerCpuArray,
};
use dns_common::{
    limit::{ExemptData, ExemptKey, LimitConfig},
    map::{CONFIG, LIMITS, NAMES_LARGE, NAMES_SHORT, NAMES_SMALL, RRL_EXEMPT, STATS, ZONES},
    LargeValue, NameKey, ShortKey, SmallValue, Stat, XdpConfig, ZoneValue, IN_LARGE,
};

/// A compiled answer set for one name, in whichever map it fits.
#[derive(Clone)]
pub enum NameEntry {
    Small(SmallValue),
    Large(Box<LargeValue>),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Which {
    /// NAMES_SHORT: a small value at a name of at most SHORT_NAME_LEN bytes.
    Short,
    /// A short name whose value is large: in NAMES_LARGE, with an [`IN_LARGE`] marker in
    /// NAMES_SHORT (so that a short name absent from NAMES_SHORT is absent, full stop).
    ShortLarge,
    Small,
    Large,
}

#[derive(Debug, thiserror::Error)]
#[error("writing the {map} map")]
pub struct MapWriteError {
    pub map: &'static str,
    #[source]
    pub source: MapError,
}

fn werr(map: &'static str) -> impl FnOnce(MapError) -> MapWriteError {
    move |source| MapWriteError { map, source }
}

/// The rate limiter's settings (one value) and its exempt prefixes.
type LimitMaps = (
    Array<MapData, LimitConfig>,
    LpmTrie<MapData, ExemptData, u8>,
);

/// The program's maps, and a shadow of which name sits in which map.
pub struct FastPath {
    config: Array<MapData, XdpConfig>,
    stats: PerCpuArray<MapData, u64>,
    short: HashMap<MapData, ShortKey, SmallValue>,
    small: HashMap<MapData, NameKey, SmallValue>,
    large: HashMap<MapData, NameKey, LargeValue>,
    zones: HashMap<MapData, NameKey, ZoneValue>,
    /// Where each name currently is, so that a move deletes from the right map.
    shadow: StdHashMap<NameKey, Which>,
    /// Rate limiting and cookie settings, and the prefixes exempt from rate limiting.
    limits: Option<LimitMaps>,
}

impl FastPath {
    pub fn new(
        config: Array<MapData, XdpConfig>,
        stats: PerCpuArray<MapData, u64>,
        short: HashMap<MapData, ShortKey, SmallValue>,
        small: HashMap<MapData, NameKey, SmallValue>,
        large: HashMap<MapData, NameKey, LargeValue>,
        zones: HashMap<MapData, NameKey, ZoneValue>,
    ) -> Self {
        let mut shadow = StdHashMap::new();
        // Maps may come pinned from an earlier run: learn what they hold.
        for (k, v) in short.iter().flatten() {
            let which = if v.pass_mask & IN_LARGE != 0 {
                Which::ShortLarge
            } else {
                Which::Short
            };
            shadow.insert(NameKey::from_short(&k), which);
        }
        for k in small.keys().flatten() {
            shadow.insert(k, Which::Small);
        }
        for k in large.keys().flatten() {
            shadow.entry(k).or_insert(Which::Large);
        }
        Self {
            config,
            stats,
            short,
            small,
            large,
            zones,
            shadow,
            limits: None,
        }
    }

    /// Adds the rate limiter's maps: settings and exempt prefixes.
    pub fn with_limits(
        mut self,
        config: Array<MapData, LimitConfig>,
        exempt: LpmTrie<MapData, ExemptData, u8>,
    ) -> Self {
        self.limits = Some((config, exempt));
        self
    }

    /// Writes the rate limiting and cookie settings.
    pub fn set_limits(&mut self, cfg: LimitConfig) -> Result<(), MapWriteError> {
        match &mut self.limits {
            Some((config, _)) => config.set(0, cfg, 0).map_err(werr(LIMITS.name)),
            None => Ok(()),
        }
    }

    /// Adds a prefix exempt from rate limiting (`addr` 4 or 16 bytes, `bits` of it).
    pub fn add_exempt(&mut self, addr: &[u8], bits: u8) -> Result<(), MapWriteError> {
        let Some((_, exempt)) = &mut self.limits else {
            return Ok(());
        };
        let k = ExemptKey::new(addr, bits);
        exempt
            .insert(&LpmKey::new(k.prefix_len, k.data), 1, 0)
            .map_err(werr(RRL_EXEMPT.name))
    }

    pub fn set_config(&mut self, cfg: XdpConfig) -> Result<(), MapWriteError> {
        self.config.set(0, cfg, 0).map_err(werr(CONFIG.name))
    }

    pub fn config(&self) -> Result<XdpConfig, MapWriteError> {
        self.config.get(&0, 0).map_err(werr(CONFIG.name))
    }

    /// Writes the answers for one name. Every step leaves the program a whole answer, old or new:
    /// the new entry is written before the old one is taken away, and the short map's entry, which
    /// the program reads first for a short name, is switched in one write.
    pub fn set_name(&mut self, key: &NameKey, entry: &NameEntry) -> Result<(), MapWriteError> {
        let from = self.shadow.get(key).copied();
        let to = match (entry, key.short()) {
            (NameEntry::Small(v), Some(short)) => {
                self.short
                    .insert(short, v, 0)
                    .map_err(werr(NAMES_SHORT.name))?;
                Which::Short
            }
            (NameEntry::Small(v), None) => {
                self.small
                    .insert(key, v, 0)
                    .map_err(werr(NAMES_SMALL.name))?;
                Which::Small
            }
            (NameEntry::Large(v), short) => {
                self.large
                    .insert(key, v.as_ref(), 0)
                    .map_err(werr(NAMES_LARGE.name))?;
                match short {
                    Some(short) => {
                        if from != Some(Which::ShortLarge) {
                            let mut marker = SmallValue::zeroed();
                            marker.pass_mask = IN_LARGE;
                            self.short
                                .insert(short, marker, 0)
                                .map_err(werr(NAMES_SHORT.name))?;
                        }
                        Which::ShortLarge
                    }
                    None => Which::Large,
                }
            }
        };
        self.shadow.insert(*key, to);
        match (from, to) {
            // The short entry was overwritten in place: the value it held, or the marker.
            (Some(Which::Short), Which::ShortLarge) => Ok(()),
            (Some(Which::ShortLarge), Which::Short) => self.remove_large(key),
            (Some(from), to) if from != to => self.remove_from(key, from),
            _ => Ok(()),
        }
    }

    fn remove_large(&mut self, key: &NameKey) -> Result<(), MapWriteError> {
        match self.large.remove(key) {
            Err(MapError::KeyNotFound) => Ok(()),
            r => r.map_err(werr(NAMES_LARGE.name)),
        }
    }

    /// Removes a name (no error if it isn't there).
    pub fn remove_name(&mut self, key: &NameKey) -> Result<(), MapWriteError> {
        match self.shadow.remove(key) {
            Some(from) => self.remove_from(key, from),
            None => Ok(()),
        }
    }

    fn remove_from(&mut self, key: &NameKey, from: Which) -> Result<(), MapWriteError> {
        let r = match from {
            Which::Short => match key.short() {
                Some(short) => self.short.remove(&short).map_err(werr(NAMES_SHORT.name)),
                None => Ok(()),
            },
            // The marker first: from then on the name is absent, whatever NAMES_LARGE holds.
            Which::ShortLarge => {
                if let Some(short) = key.short() {
                    match self.short.remove(&short) {
                        Err(MapError::KeyNotFound) | Ok(()) => {}
                        Err(e) => return Err(werr(NAMES_SHORT.name)(e)),
                    }
                }
                self.remove_large(key)
            }
            Which::Small => self.small.remove(key).map_err(werr(NAMES_SMALL.name)),
            Which::Large => self.large.remove(key).map_err(werr(NAMES_LARGE.name)),
        };
        match r {
            // Already gone is what we wanted.
            Err(MapWriteError {
                source: MapError::KeyNotFound,
                ..
            }) => Ok(()),
            r => r,
        }
    }

    pub fn set_zone(&mut self, key: &NameKey, v: &ZoneValue) -> Result<(), MapWriteError> {
        self.zones.insert(key, v, 0).map_err(werr(ZONES.name))
    }

    pub fn remove_zone(&mut self, key: &NameKey) -> Result<(), MapWriteError> {
        match self.zones.remove(key) {
            Err(MapError::KeyNotFound) => Ok(()),
            r => r.map_err(werr(ZONES.name)),
        }
    }

    /// Every name key in the maps.
    pub fn name_keys(&self) -> Vec<NameKey> {
        self.shadow.keys().copied().collect()
    }

    /// Every zone key in the maps.
    pub fn zone_keys(&self) -> Vec<NameKey> {
        self.zones.keys().flatten().collect()
    }

    /// Counters summed over CPUs.
    pub fn stats(&self) -> Result<Vec<(Stat, u64)>, MapWriteError> {
        Stat::ALL
            .iter()
            .map(|s| {
                let per_cpu = self.stats.get(&(*s as u32), 0).map_err(werr(STATS.name))?;
                Ok((*s, per_cpu.iter().sum()))
            })
            .collect()
    }
}
