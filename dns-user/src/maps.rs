//! The sole writer of the XDP program's maps.
//!
//! Every write replaces a whole value with `bpf_map_update_elem`, so the program sees the old
//! answer or the new one. A name that moves between maps (short or small, and large) is inserted
//! into the new map before it is deleted from the old one; the program looks in the large map
//! last.

use std::collections::HashMap as StdHashMap;

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray};
use dns_common::{
    map::{CONFIG, NAMES_LARGE, NAMES_SHORT, NAMES_SMALL, STATS, ZONES},
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

/// The program's maps, and a shadow of which name sits in which map.
pub struct FastPath {
    config: Array<MapData, XdpConfig>,
    stats: PerCpuArray<MapData, u64>,
    short: HashMap<MapData, ShortKey, SmallValue>,
    small: HashMap<MapData, NameKey, SmallValue>,
    large: HashMap<MapData, NameKey, LargeValue>,
    zones: HashMap<MapData, NameKey, ZoneValue>,
    /// Where each name currently is, so that a move deletes from the right map.
    shadow: Shadow,
}

/// Which map each name is in, kept in the daemon: one entry a name, so it is kept small. A
/// short name's entry is keyed by its 32-byte short key (the 96-byte key made this table 200
/// bytes a name at a million names, a fifth of the daemon's memory), and whether the name is
/// short already says which two maps it can be in: one bit tells which.
#[derive(Default)]
struct Shadow {
    /// Short names: `true` for [`Which::ShortLarge`], `false` for [`Which::Short`].
    short: StdHashMap<ShortKey, bool>,
    /// Longer names: `true` for [`Which::Large`], `false` for [`Which::Small`].
    long: StdHashMap<NameKey, bool>,
}

impl Shadow {
    fn get(&self, key: &NameKey) -> Option<Which> {
        match key.short() {
            Some(short) => self.short.get(&short).map(|&large| {
                if large {
                    Which::ShortLarge
                } else {
                    Which::Short
                }
            }),
            None => self
                .long
                .get(key)
                .map(|&large| if large { Which::Large } else { Which::Small }),
        }
    }

    /// Records where `key` is; `which` must be one of the two maps its length allows.
    fn insert(&mut self, key: &NameKey, which: Which) {
        let large = matches!(which, Which::ShortLarge | Which::Large);
        match key.short() {
            Some(short) => {
                debug_assert!(matches!(which, Which::Short | Which::ShortLarge));
                self.short.insert(short, large);
            }
            None => {
                debug_assert!(matches!(which, Which::Small | Which::Large));
                self.long.insert(*key, large);
            }
        }
    }

    fn remove(&mut self, key: &NameKey) -> Option<Which> {
        let which = self.get(key)?;
        match key.short() {
            Some(short) => self.short.remove(&short),
            None => self.long.remove(key),
        };
        Some(which)
    }

    fn keys(&self) -> Vec<NameKey> {
        let mut keys = Vec::with_capacity(self.short.len() + self.long.len());
        keys.extend(self.short.keys().map(NameKey::from_short));
        keys.extend(self.long.keys().copied());
        keys
    }
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
        let mut shadow = Shadow::default();
        // Maps may come pinned from an earlier run: learn what they hold.
        for (k, v) in short.iter().flatten() {
            shadow.short.insert(k, v.pass_mask & IN_LARGE != 0);
        }
        for k in small.keys().flatten() {
            shadow.long.insert(k, false);
        }
        for k in large.keys().flatten() {
            // A short name in NAMES_LARGE has its marker in NAMES_SHORT, seen above; without it
            // (a start that stopped halfway) it is taken as being in both, which the next write
            // or removal of the name cleans up.
            match k.short() {
                Some(short) => {
                    shadow.short.entry(short).or_insert(true);
                }
                None => {
                    shadow.long.entry(k).or_insert(true);
                }
            }
        }
        Self {
            config,
            stats,
            short,
            small,
            large,
            zones,
            shadow,
        }
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
        let from = self.shadow.get(key);
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
        self.shadow.insert(key, to);
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
        self.shadow.keys()
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
