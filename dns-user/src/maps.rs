//! The sole writer of the XDP program's maps.
//!
//! Every write replaces a whole value with `bpf_map_update_elem`, so the program sees the old
//! answer or the new one. A name that moves between maps (short or small, and large) is inserted
//! into the new map before it is deleted from the old one; the program looks in the large map
//! last.

use std::collections::HashMap as StdHashMap;

use aya::maps::{Array, HashMap, MapData, MapError, PerCpuArray};
use dns_common::{LargeValue, NameKey, ShortKey, SmallValue, Stat, XdpConfig, ZoneValue};

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
    shadow: StdHashMap<NameKey, Which>,
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
        for k in short.keys().flatten() {
            shadow.insert(NameKey::from_short(&k), Which::Short);
        }
        for k in small.keys().flatten() {
            shadow.insert(k, Which::Small);
        }
        for k in large.keys().flatten() {
            shadow.insert(k, Which::Large);
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
        self.config.set(0, cfg, 0).map_err(werr("CONFIG"))
    }

    pub fn config(&self) -> Result<XdpConfig, MapWriteError> {
        self.config.get(&0, 0).map_err(werr("CONFIG"))
    }

    /// Writes the answers for one name.
    pub fn set_name(&mut self, key: &NameKey, entry: &NameEntry) -> Result<(), MapWriteError> {
        let to = match entry {
            NameEntry::Small(v) => match key.short() {
                Some(short) => {
                    self.short
                        .insert(short, v, 0)
                        .map_err(werr("NAMES_SHORT"))?;
                    Which::Short
                }
                None => {
                    self.small.insert(key, v, 0).map_err(werr("NAMES_SMALL"))?;
                    Which::Small
                }
            },
            NameEntry::Large(v) => {
                self.large
                    .insert(key, v.as_ref(), 0)
                    .map_err(werr("NAMES_LARGE"))?;
                Which::Large
            }
        };
        if let Some(from) = self.shadow.insert(*key, to) {
            if from != to {
                self.remove_from(key, from)?;
            }
        }
        Ok(())
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
                Some(short) => self.short.remove(&short).map_err(werr("NAMES_SHORT")),
                None => Ok(()),
            },
            Which::Small => self.small.remove(key).map_err(werr("NAMES_SMALL")),
            Which::Large => self.large.remove(key).map_err(werr("NAMES_LARGE")),
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
        self.zones.insert(key, v, 0).map_err(werr("ZONES"))
    }

    pub fn remove_zone(&mut self, key: &NameKey) -> Result<(), MapWriteError> {
        match self.zones.remove(key) {
            Err(MapError::KeyNotFound) => Ok(()),
            r => r.map_err(werr("ZONES")),
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

    /// Number of names in the small and the large map.
    pub fn name_counts(&self) -> (usize, usize) {
        let small = self.shadow.values().filter(|w| **w != Which::Large).count();
        (small, self.shadow.len() - small)
    }

    /// Counters summed over CPUs.
    pub fn stats(&self) -> Result<Vec<(Stat, u64)>, MapWriteError> {
        Stat::ALL
            .iter()
            .map(|s| {
                let per_cpu = self.stats.get(&(*s as u32), 0).map_err(werr("STATS"))?;
                Ok((*s, per_cpu.iter().sum()))
            })
            .collect()
    }
}
