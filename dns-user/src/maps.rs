//! The sole writer of the XDP program's maps.
//!
//! Every write replaces a whole value with `bpf_map_update_elem`, so a lookup finds the old
//! answer or the new one (but see ARCHITECTURE.md on the kernel reusing a replaced element). A name that moves between maps (short or small, and large) is inserted
//! into the new map before it is deleted from the old one; the program looks in the large map
//! last.

use std::{
    collections::HashMap as StdHashMap,
    os::fd::{AsFd as _, AsRawFd as _, OwnedFd, RawFd},
    sync::atomic::{AtomicBool, Ordering},
};

use aya::{
    maps::{
        lpm_trie::{Key as LpmKey, LpmTrie},
        Array, HashMap, IterableMap as _, MapData, MapError, PerCpuArray,
    },
    Pod,
};
use dns_common::{
    limit::{ExemptData, ExemptKey, LimitConfig},
    map::{
        CONFIG, LIMITS, NAMES_LARGE, NAMES_SHORT, NAMES_SMALL, RRL_EXEMPT, STATS, ZONES,
        ZONES_SHORT, ZONE_LENS,
    },
    stat, LargeValue, NameKey, ShortKey, SmallValue, Stat, XdpConfig, ZoneLens, ZoneValue,
    IN_LARGE, KEY_NAME_LEN,
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
    /// A longer name whose value is large: in NAMES_LARGE, with an [`IN_LARGE`] marker in
    /// NAMES_SMALL (as for a short name: absent from NAMES_SMALL is absent).
    Large,
}

#[derive(Debug, thiserror::Error)]
#[error("writing the {map} map")]
pub struct MapWriteError {
    pub map: &'static str,
    #[source]
    pub source: MapError,
}

/// Whether a removal took its key away (`false`: the key wasn't there). aya reports a missing
/// key from `bpf_map_delete_elem` as the syscall's ENOENT; only lookups give `KeyNotFound`.
fn removed(r: Result<(), MapError>) -> Result<bool, MapError> {
    match r {
        Ok(()) => Ok(true),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(false)
        }
        Err(MapError::KeyNotFound) => Ok(false),
        Err(e) => Err(e),
    }
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
    zones_short: HashMap<MapData, ShortKey, ZoneValue>,
    zone_lens: Array<MapData, ZoneLens>,
    /// Where each name currently is, so that a move deletes from the right map.
    shadow: Shadow,
    /// How many zones have an apex of each wire length: what ZONE_LENS is made from.
    apex_lens: [u32; KEY_NAME_LEN + 1],
    /// The zone maps' generation, written with ZONE_LENS (`ZoneLens::gen`): moved on after each
    /// zone write, so that the copies of zones the program keeps per CPU are dropped.
    zone_gen: u64,
    /// Rate limiting and cookie settings, and the prefixes exempt from rate limiting.
    limits: Option<LimitMaps>,
    /// Whether the kernel took `BPF_MAP_UPDATE_BATCH`; once refused, names go one by one.
    batch_ok: bool,
}

/// The zone maps, which the program reads together: ZONES_SHORT and ZONES by apex, ZONE_LENS
/// for which apex lengths are there.
pub struct ZoneMaps {
    pub zones: HashMap<MapData, NameKey, ZoneValue>,
    pub zones_short: HashMap<MapData, ShortKey, ZoneValue>,
    pub zone_lens: Array<MapData, ZoneLens>,
}

/// Wire length of the name in a key (its bytes after the leading zeros).
fn key_len(key: &NameKey) -> usize {
    KEY_NAME_LEN - key.name.iter().take_while(|b| **b == 0).count()
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

    /// [`Shadow::insert`] that gives where `key` was before: one lookup for both, which at a
    /// million names is a million cache misses fewer (the tables are tens of megabytes).
    fn replace(&mut self, key: &NameKey, which: Which) -> Option<Which> {
        let large = matches!(which, Which::ShortLarge | Which::Large);
        match key.short() {
            Some(short) => {
                debug_assert!(matches!(which, Which::Short | Which::ShortLarge));
                self.short.insert(short, large).map(|was| {
                    if was {
                        Which::ShortLarge
                    } else {
                        Which::Short
                    }
                })
            }
            None => {
                debug_assert!(matches!(which, Which::Small | Which::Large));
                self.long.insert(*key, large).map(
                    |was| {
                        if was {
                            Which::Large
                        } else {
                            Which::Small
                        }
                    },
                )
            }
        }
    }

    /// Puts back what [`Shadow::replace`] replaced.
    fn restore(&mut self, key: &NameKey, was: Option<Which>) {
        match was {
            Some(which) => self.insert(key, which),
            None => {
                self.remove(key);
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

    /// The shadow of maps that hold `short`, `small` and `large`, and the keys in NAMES_LARGE
    /// that the program can't reach: those without an [`IN_LARGE`] marker in NAMES_SHORT or
    /// NAMES_SMALL, left by a run that stopped between a large value's insert and its marker, or
    /// between a move to a small value and the large value's removal. The program takes a name
    /// without a marker as absent from NAMES_LARGE, so such entries only hold memory; kept, the
    /// shadow would have to guess where the name is, and a guess of "large" would make the next
    /// write of it skip the marker it needs.
    fn learn(
        short: impl Iterator<Item = (ShortKey, SmallValue)>,
        small: impl Iterator<Item = (NameKey, SmallValue)>,
        large: impl Iterator<Item = NameKey>,
    ) -> (Self, Vec<NameKey>) {
        let mut shadow = Self::default();
        for (k, v) in short {
            shadow.short.insert(k, v.pass_mask & IN_LARGE != 0);
        }
        for (k, v) in small {
            shadow.long.insert(k, v.pass_mask & IN_LARGE != 0);
        }
        let unreachable = large
            .filter(|k| !matches!(shadow.get(k), Some(Which::ShortLarge | Which::Large)))
            .collect();
        (shadow, unreachable)
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
        mut large: HashMap<MapData, NameKey, LargeValue>,
        zone_maps: ZoneMaps,
    ) -> Result<Self, MapWriteError> {
        let ZoneMaps {
            zones,
            zones_short,
            zone_lens,
        } = zone_maps;
        // Maps may come pinned from an earlier run: learn what they hold.
        let (shadow, unreachable) = Shadow::learn(
            short.iter().flatten(),
            small.iter().flatten(),
            large.keys().flatten(),
        );
        for k in &unreachable {
            removed(large.remove(k)).map_err(werr(NAMES_LARGE.name))?;
        }
        // Past any generation pinned maps were left at, so that no copy a program still holds
        // from them is taken as current; never 0 (an empty copy's).
        let zone_gen = zone_lens
            .get(&0, 0)
            .map_or(0, |l| l.gen)
            .wrapping_add(1)
            .max(1);
        let mut fast = Self {
            config,
            stats,
            short,
            small,
            large,
            zones,
            zones_short,
            zone_lens,
            shadow,
            apex_lens: [0; KEY_NAME_LEN + 1],
            zone_gen,
            limits: None,
            batch_ok: true,
        };
        for k in fast.zone_keys() {
            fast.apex_lens[key_len(&k)] += 1;
        }
        // Pinned maps carry their lengths already; new ones get them here.
        fast.write_zone_lens()?;
        Ok(fast)
    }

    fn write_zone_lens(&mut self) -> Result<(), MapWriteError> {
        let mut lens = ZoneLens::of((0..=KEY_NAME_LEN).filter(|l| self.apex_lens[*l] > 0));
        lens.gen = self.zone_gen;
        self.zone_lens.set(0, lens, 0).map_err(werr(ZONE_LENS.name))
    }

    /// Moves the zone generation on after a write to a zone map (the program then looks zones
    /// up again instead of using its copies), and writes it with the apex lengths.
    fn next_zone_gen(&mut self) -> Result<(), MapWriteError> {
        self.zone_gen = self.zone_gen.wrapping_add(1).max(1);
        self.write_zone_lens()
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
        let from = self.shadow.get(key);
        let p = placement(key, entry, from);
        if let Some(v) = p.large {
            self.large
                .insert(key, v, 0)
                .map_err(werr(NAMES_LARGE.name))?;
        }
        if let Some((short, v)) = p.short {
            self.short
                .insert(short, v, 0)
                .map_err(werr(NAMES_SHORT.name))?;
        }
        if let Some(v) = p.small {
            self.small
                .insert(key, v, 0)
                .map_err(werr(NAMES_SMALL.name))?;
        }
        self.shadow.insert(key, p.to);
        self.leave(key, from, p.to)
    }

    /// [`FastPath::set_name`] for many names, with one `BPF_MAP_UPDATE_BATCH` a map instead of
    /// one syscall a name: at start-up, a million names cost a million syscalls otherwise.
    ///
    /// Each name's steps keep the order `set_name` gives them: every insert into NAMES_LARGE
    /// comes before the NAMES_SHORT or NAMES_SMALL marker that points there, and every insert
    /// comes before the removal from the map a name leaves. If a batch fails (or the kernel
    /// refuses the command), the names are written again one by one, which is harmless for those
    /// the batch did write and gives the error of the first that fails. The keys must be
    /// distinct.
    pub fn set_names(&mut self, entries: &[(NameKey, NameEntry)]) -> Result<(), MapWriteError> {
        if !self.batch_ok || entries.len() < 2 {
            return entries.iter().try_for_each(|(k, e)| self.set_name(k, e));
        }
        let mut batches = NameBatches::default();
        let mut moves = Vec::with_capacity(entries.len());
        for (key, entry) in entries {
            // Where the name goes doesn't depend on where it was (only whether it needs a new
            // marker does): the shadow learns the one and tells the other in one lookup, and
            // is put back if the batch fails. The keys are distinct, so no name of the batch
            // sees another's change.
            let to = placement(key, entry, None).to;
            let from = self.shadow.replace(key, to);
            let p = placement(key, entry, from);
            debug_assert_eq!(p.to, to);
            batches.push(key, &p);
            moves.push((from, p.to));
        }
        let written = batches.write(
            map_fd(&self.large),
            map_fd(&self.short),
            map_fd(&self.small),
        );
        if let Err(e) = written {
            // The maps hold what they held, or some of the batch: the one-by-one writes below
            // start from the shadow of before, as if the batch had not been tried.
            for ((key, _), (from, _)) in entries.iter().zip(&moves).rev() {
                self.shadow.restore(key, *from);
            }
            if batch_refused(&e) {
                tracing::debug!("batched map updates refused ({e}): writing names one by one");
                self.batch_ok = false;
            }
            return entries.iter().try_for_each(|(k, e)| self.set_name(k, e));
        }
        for ((key, _), (from, to)) in entries.iter().zip(moves) {
            self.leave(key, from, to)?;
        }
        Ok(())
    }

    /// Writes of names for other threads: see [`NameBatcher`]. `None` once the kernel has
    /// refused batched writes (or if the descriptors can't be duplicated): then every name
    /// goes through [`FastPath::set_names`].
    pub fn name_batcher(&self) -> Option<NameBatcher> {
        if !self.batch_ok {
            return None;
        }
        let dup = |fd: RawFd| {
            // SAFETY: `fd` is one of this writer's maps, open for as long as `self` is borrowed;
            // it is only duplicated here, and the copy owns itself.
            unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
                .try_clone_to_owned()
                .ok()
        };
        Some(NameBatcher {
            short: dup(map_fd(&self.short))?,
            small: dup(map_fd(&self.small))?,
            large: dup(map_fd(&self.large))?,
            refused: AtomicBool::new(false),
        })
    }

    /// Takes note of names a [`NameBatcher`] of these maps wrote: where each name is now, and
    /// its old entries taken out of the maps it left (after the new ones, which are written).
    pub fn names_written(&mut self, entries: &[(NameKey, NameEntry)]) -> Result<(), MapWriteError> {
        for (key, entry) in entries {
            let to = placement(key, entry, None).to;
            let from = self.shadow.replace(key, to);
            self.leave(key, from, to)?;
        }
        Ok(())
    }

    /// Takes a name's old entry away once its new one is written (`from` where it was, `to`
    /// where it is now): an entry overwritten in place (a value by the marker or the marker by
    /// a value) needs nothing more, but a value that left NAMES_LARGE is removed from it.
    fn leave(
        &mut self,
        key: &NameKey,
        from: Option<Which>,
        to: Which,
    ) -> Result<(), MapWriteError> {
        match (from, to) {
            (Some(Which::Short), Which::ShortLarge) | (Some(Which::Small), Which::Large) => Ok(()),
            (Some(Which::ShortLarge), Which::Short) | (Some(Which::Large), Which::Small) => {
                self.remove_large(key)
            }
            (Some(from), to) if from != to => self.remove_from(key, from),
            _ => Ok(()),
        }
    }

    /// Room in the shadow for `n` more names: a start fills it once instead of growing it
    /// (and rehashing it) a score of times.
    pub fn reserve_names(&mut self, n: usize) {
        // `reserve` counts from the entries already there: maps taken over from a pin hold
        // most of the names about to be written.
        let held = self.shadow.short.len();
        self.shadow.short.reserve(n.saturating_sub(held));
    }

    fn remove_large(&mut self, key: &NameKey) -> Result<(), MapWriteError> {
        removed(self.large.remove(key))
            .map(drop)
            .map_err(werr(NAMES_LARGE.name))
    }

    /// Removes a name (no error if it isn't there).
    pub fn remove_name(&mut self, key: &NameKey) -> Result<(), MapWriteError> {
        match self.shadow.remove(key) {
            Some(from) => self.remove_from(key, from),
            None => Ok(()),
        }
    }

    /// Takes a name out of the map(s) `from` says; already gone is what was wanted.
    fn remove_from(&mut self, key: &NameKey, from: Which) -> Result<(), MapWriteError> {
        match from {
            Which::Short => {
                if let Some(short) = key.short() {
                    removed(self.short.remove(&short)).map_err(werr(NAMES_SHORT.name))?;
                }
                Ok(())
            }
            // The marker first: from then on the name is absent, whatever NAMES_LARGE holds.
            Which::ShortLarge => {
                if let Some(short) = key.short() {
                    removed(self.short.remove(&short)).map_err(werr(NAMES_SHORT.name))?;
                }
                self.remove_large(key)
            }
            Which::Small => removed(self.small.remove(key))
                .map(drop)
                .map_err(werr(NAMES_SMALL.name)),
            // The marker first, as above.
            Which::Large => {
                removed(self.small.remove(key)).map_err(werr(NAMES_SMALL.name))?;
                self.remove_large(key)
            }
        }
    }

    /// Writes a zone. A new apex length goes into ZONE_LENS before the zone is written: the
    /// program may then look a suffix of that length up and miss it (and go on to the shorter
    /// ones, as if the zone were not there yet), but never skips a zone that is there. The zone
    /// generation moves on after it, so that no CPU answers from its copy of the old value.
    pub fn set_zone(&mut self, key: &NameKey, v: &ZoneValue) -> Result<(), MapWriteError> {
        let len = key_len(key);
        let new = !self.zone_keys_contain(key)?;
        if new {
            self.apex_lens[len] += 1;
            if self.apex_lens[len] == 1 {
                if let Err(e) = self.write_zone_lens() {
                    self.apex_lens[len] -= 1;
                    return Err(e);
                }
            }
        }
        let r = match key.short() {
            Some(short) => self
                .zones_short
                .insert(short, v, 0)
                .map_err(werr(ZONES_SHORT.name)),
            None => self.zones.insert(key, v, 0).map_err(werr(ZONES.name)),
        };
        if r.is_err() && new {
            // The length stays in ZONE_LENS (a lookup that misses); only the count is undone.
            self.apex_lens[len] -= 1;
        }
        r?;
        self.next_zone_gen()
    }

    fn zone_keys_contain(&self, key: &NameKey) -> Result<bool, MapWriteError> {
        let r = match key.short() {
            Some(short) => self.zones_short.get(&short, 0).map(|_| ()),
            None => self.zones.get(key, 0).map(|_| ()),
        };
        match r {
            Ok(()) => Ok(true),
            Err(MapError::KeyNotFound) => Ok(false),
            Err(e) => Err(werr(ZONES.name)(e)),
        }
    }

    /// Removes a zone (no error if it isn't there); its apex length leaves ZONE_LENS after it,
    /// when no other zone has it.
    pub fn remove_zone(&mut self, key: &NameKey) -> Result<(), MapWriteError> {
        let r = match key.short() {
            Some(short) => removed(self.zones_short.remove(&short)).map_err(werr(ZONES_SHORT.name)),
            None => removed(self.zones.remove(key)).map_err(werr(ZONES.name)),
        };
        if r? {
            // Its length leaves ZONE_LENS with the new generation, when no other zone has it.
            let len = key_len(key);
            self.apex_lens[len] = self.apex_lens[len].saturating_sub(1);
            self.next_zone_gen()?;
        }
        Ok(())
    }

    /// Every name key in the maps.
    pub fn name_keys(&self) -> Vec<NameKey> {
        self.shadow.keys()
    }

    /// Every zone key in the maps.
    pub fn zone_keys(&self) -> Vec<NameKey> {
        let short = self.zones_short.keys().flatten();
        let mut keys: Vec<NameKey> = short.map(|k| NameKey::from_short(&k)).collect();
        keys.extend(self.zones.keys().flatten());
        keys
    }

    /// The apex lengths the program is told about (ZONE_LENS).
    pub fn zone_lens(&self) -> Result<ZoneLens, MapWriteError> {
        self.zone_lens.get(&0, 0).map_err(werr(ZONE_LENS.name))
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

    /// The program's answers by kind and query type (its per-qtype slots), summed over CPUs:
    /// `(kind, qtype, count)` for each of [`stat::ANSWER_KINDS`] and [`stat::ANSWER_QTYPES`].
    pub fn answers_by_qtype(&self) -> Result<Vec<(Stat, &'static str, u64)>, MapWriteError> {
        let mut out = Vec::with_capacity(stat::QTYPE_SLOTS as usize);
        for kind in stat::ANSWER_KINDS {
            for (seg, qtype) in (dns_common::SEG_A..).zip(stat::ANSWER_QTYPES) {
                let Some(slot) = stat::qtype_slot(kind, seg) else {
                    continue;
                };
                let per_cpu = self.stats.get(&slot, 0).map_err(werr(STATS.name))?;
                out.push((kind, qtype, per_cpu.iter().sum()));
            }
        }
        Ok(out)
    }
}

/// What writing one name takes, given where it is now (`from`): the value for NAMES_LARGE, if
/// it has a large one; the entry for NAMES_SHORT or NAMES_SMALL (its small value, or the marker
/// pointing at NAMES_LARGE, left out when the marker is there already); and where the name is
/// then. [`FastPath::set_name`] and [`FastPath::set_names`] both write by it.
struct Placement<'a> {
    large: Option<&'a LargeValue>,
    short: Option<(ShortKey, SmallValue)>,
    small: Option<SmallValue>,
    to: Which,
}

fn placement<'a>(key: &NameKey, entry: &'a NameEntry, from: Option<Which>) -> Placement<'a> {
    let mut marker = SmallValue::zeroed();
    marker.pass_mask = IN_LARGE;
    let none = Placement {
        large: None,
        short: None,
        small: None,
        to: Which::Small,
    };
    match (entry, key.short()) {
        (NameEntry::Small(v), Some(short)) => Placement {
            short: Some((short, *v)),
            to: Which::Short,
            ..none
        },
        (NameEntry::Small(v), None) => Placement {
            small: Some(*v),
            to: Which::Small,
            ..none
        },
        (NameEntry::Large(v), Some(short)) => Placement {
            large: Some(v),
            short: (from != Some(Which::ShortLarge)).then_some((short, marker)),
            to: Which::ShortLarge,
            ..none
        },
        (NameEntry::Large(v), None) => Placement {
            large: Some(v),
            small: (from != Some(Which::Large)).then_some(marker),
            to: Which::Large,
            ..none
        },
    }
}

/// The kernel's ENOTSUPP (not in libc): what a map without batch operations answers.
const ENOTSUPP: i32 = 524;

/// Keys and values for one `BPF_MAP_UPDATE_BATCH`, each an array as the kernel reads them.
struct Batch<K, V> {
    keys: Vec<K>,
    values: Vec<V>,
}

impl<K, V> Default for Batch<K, V> {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            values: Vec::new(),
        }
    }
}

impl<K, V> Batch<K, V> {
    fn push(&mut self, k: K, v: V) {
        self.keys.push(k);
        self.values.push(v);
    }
}

/// One batch for each name map: what a run of names puts where ([`placement`]).
#[derive(Default)]
struct NameBatches {
    large: Batch<NameKey, LargeValue>,
    short: Batch<ShortKey, SmallValue>,
    small: Batch<NameKey, SmallValue>,
}

impl NameBatches {
    fn push(&mut self, key: &NameKey, p: &Placement<'_>) {
        if let Some(v) = p.large {
            self.large.push(*key, *v);
        }
        if let Some((k, v)) = p.short {
            self.short.push(k, v);
        }
        if let Some(v) = p.small {
            self.small.push(*key, v);
        }
    }

    /// Writes the batches into the maps NAMES_LARGE, NAMES_SHORT and NAMES_SMALL (`large`,
    /// `short`, `small`), the large values first: every marker then points at its value.
    fn write(&self, large: RawFd, short: RawFd, small: RawFd) -> std::io::Result<()> {
        update_batch(large, &self.large)
            .and_then(|()| update_batch(short, &self.short))
            .and_then(|()| update_batch(small, &self.small))
    }
}

/// Whether a failed batch means the kernel takes no batched updates for these maps (rather
/// than that one of them failed).
fn batch_refused(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | ENOTSUPP)
    )
}

/// `union bpf_attr` as the `BPF_MAP_*_BATCH` commands read it (linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;

/// The descriptor of a map, for the raw batch calls.
fn map_fd<K: Pod, V: Pod>(map: &HashMap<MapData, K, V>) -> RawFd {
    map.map().fd().as_fd().as_raw_fd()
}

/// Writes every key and value of `batch` into the hash map `fd` (`BPF_ANY`), in order, in one
/// syscall (Linux 5.6 and later; aya has no call for it). The map's key and value must be `K`
/// and `V`.
fn update_batch<K: Pod, V: Pod>(fd: RawFd, batch: &Batch<K, V>) -> std::io::Result<()> {
    if batch.keys.is_empty() {
        return Ok(());
    }
    let count = u32::try_from(batch.keys.len()).map_err(std::io::Error::other)?;
    let mut attr = BatchAttr {
        keys: batch.keys.as_ptr() as u64,
        values: batch.values.as_ptr() as u64,
        count,
        map_fd: fd as u32,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` is the batch member of `union bpf_attr`, laid out as the kernel reads it
    // and passed with its size (the kernel checks any bytes beyond are zero); `keys` and
    // `values` point at `count` keys and values of the map's key and value sizes (aya checked
    // the sizes of `K` and `V` against the map when it was opened; the callers pass each map's
    // own types), alive for the call. The kernel only reads them, and writes `attr.count`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The name maps' writes, without the shadow, for threads other than the one that owns the
/// [`FastPath`]: at start-up a million names are a million inserts into the kernel's hash
/// tables, more CPU than compiling them, and the threads that compile the names write them too
/// (the tables lock per bucket, so they write side by side) while the owner only keeps its
/// shadow ([`FastPath::names_written`]).
///
/// A batch is written as if no name were in the maps yet: each large value's marker is
/// written even where it is there already, the same bytes again. A name's old entries in a map
/// it leaves are taken out by the owner afterwards, so every name still gets its new entry
/// before its old one goes, and a large value before its marker.
pub struct NameBatcher {
    short: OwnedFd,
    small: OwnedFd,
    large: OwnedFd,
    /// Set once the kernel refused a batch: the rest go through the owner one by one.
    refused: AtomicBool,
}

impl NameBatcher {
    /// Writes `entries` (distinct keys), one `BPF_MAP_UPDATE_BATCH` a map. `false` if nothing or
    /// only some of them may be written: the owner writes them again with
    /// [`FastPath::set_names`], which is harmless for those written and gives the error.
    pub fn write(&self, entries: &[(NameKey, NameEntry)]) -> bool {
        if self.refused.load(Ordering::Relaxed) {
            return false;
        }
        let mut batches = NameBatches::default();
        for (key, entry) in entries {
            batches.push(key, &placement(key, entry, None));
        }
        let written = batches.write(
            self.large.as_raw_fd(),
            self.short.as_raw_fd(),
            self.small.as_raw_fd(),
        );
        match written {
            Ok(()) => true,
            Err(e) => {
                if batch_refused(&e) {
                    self.refused.store(true, Ordering::Relaxed);
                }
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> NameKey {
        let mut wire = Vec::new();
        for label in name.split('.') {
            wire.push(label.len() as u8);
            wire.extend_from_slice(label.as_bytes());
        }
        wire.push(0);
        NameKey::from_wire(&wire).expect("a valid name")
    }

    fn value(pass_mask: u8) -> SmallValue {
        let mut v = SmallValue::zeroed();
        v.pass_mask = pass_mask;
        v
    }

    #[test]
    fn a_removal_of_a_missing_key_is_no_error() {
        // What aya 0.14 gives for `bpf_map_delete_elem` of a key the map doesn't hold.
        let enoent = |errno| {
            MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_delete_elem",
                io_error: std::io::Error::from_raw_os_error(errno),
            })
        };
        assert!(matches!(removed(Ok(())), Ok(true)));
        assert!(matches!(removed(Err(enoent(libc::ENOENT))), Ok(false)));
        assert!(matches!(removed(Err(MapError::KeyNotFound)), Ok(false)));
        assert!(removed(Err(enoent(libc::E2BIG))).is_err());
    }

    #[test]
    fn shadow_replace_tells_where_a_name_was_and_restore_puts_it_back() {
        let short = key("a.test");
        let long = key("x.a-label-long-enough-to-pass-32-bytes.test");
        let mut shadow = Shadow::default();
        for (k, small, large) in [
            (short, Which::Short, Which::ShortLarge),
            (long, Which::Small, Which::Large),
        ] {
            assert_eq!(shadow.replace(&k, small), None);
            assert_eq!(shadow.get(&k), Some(small));
            assert_eq!(shadow.replace(&k, large), Some(small));
            assert_eq!(shadow.replace(&k, large), Some(large));
            assert_eq!(shadow.replace(&k, small), Some(large));
            shadow.restore(&k, Some(large));
            assert_eq!(shadow.get(&k), Some(large));
            shadow.restore(&k, None);
            assert_eq!(shadow.get(&k), None);
        }
        assert!(shadow.keys().is_empty());
    }

    #[test]
    fn large_entries_without_their_marker_are_dropped_when_pinned_maps_are_taken_over() {
        let short_marked = key("a.test");
        let short_unmarked = key("b.test");
        let short_small = key("c.test");
        let long = "a-label-long-enough-to-pass-32-bytes.test";
        let long_marked = key(&format!("x.{long}"));
        let long_unmarked = key(&format!("y.{long}"));
        assert!(short_marked.short().is_some() && long_marked.short().is_none());

        let short = [
            (short_marked.short().unwrap(), value(IN_LARGE)),
            (short_small.short().unwrap(), value(0)),
        ];
        let small = [(long_marked, value(IN_LARGE))];
        let large = [
            short_marked,
            short_unmarked,
            short_small,
            long_marked,
            long_unmarked,
        ];
        let (shadow, unreachable) =
            Shadow::learn(short.into_iter(), small.into_iter(), large.into_iter());

        assert_eq!(shadow.get(&short_marked), Some(Which::ShortLarge));
        assert_eq!(shadow.get(&long_marked), Some(Which::Large));
        assert_eq!(shadow.get(&short_small), Some(Which::Short));
        // Not in the shadow: the next write of these names places them from scratch, marker
        // and all.
        assert_eq!(shadow.get(&short_unmarked), None);
        assert_eq!(shadow.get(&long_unmarked), None);
        let mut dropped = unreachable;
        dropped.sort_by_key(|k| k.name);
        let mut expected = vec![short_unmarked, short_small, long_unmarked];
        expected.sort_by_key(|k| k.name);
        assert!(dropped == expected, "dropped the wrong NAMES_LARGE entries");
    }
}
