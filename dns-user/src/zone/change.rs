//! Changes to the zones. Every change goes through [`ZoneSet::apply`]: it validates, changes the
//! zone set, and returns one [`ChangeSet`] that says what the change touched, which the store
//! persists and the compiler brings into the maps.
//!
//! There is no undo record: a failed change leaves the set as it was (`apply` keeps the previous
//! version, which is a cheap clone of persistent maps, and puts it back), and the write path
//! changes a copy of the served zones and publishes it only once it is stored, so the version
//! readers had is the undo.

use std::collections::BTreeSet;

use hickory_proto::rr::{Name, RData, RecordType};
use imbl::OrdMap;

use super::{
    model::{LoadedOwner, Node, SetRef, StoredSet, WireSet},
    name::{normalize, CanonName},
    validate::{check_set_alone, check_set_at, check_set_beside, check_ttl},
    RrSet, SoaParams, TtlField, Zone, ZoneError, ZoneSet, ZoneSpec,
};

/// One change of a batch: an RRset set or removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Replace the RRset of `rtype` at `name` (create it if missing).
    Set {
        name: Name,
        rtype: RecordType,
        ttl: u32,
        records: Vec<RData>,
    },
    /// Remove the RRset of `rtype` at `name`; it must exist.
    Delete { name: Name, rtype: RecordType },
}

/// SOA fields to change; `None` keeps the field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SoaChange {
    pub mname: Option<Name>,
    pub rname: Option<Name>,
    pub refresh: Option<u32>,
    pub retry: Option<u32>,
    pub expire: Option<u32>,
    /// SOA MINIMUM, the negative TTL.
    pub minimum: Option<u32>,
    /// The SOA record's own TTL.
    pub ttl: Option<u32>,
}

impl SoaChange {
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// `soa` with the fields of this change replaced.
    pub fn apply_to(&self, soa: &SoaParams) -> SoaParams {
        SoaParams {
            ttl: self.ttl.unwrap_or(soa.ttl),
            mname: self.mname.clone().unwrap_or_else(|| soa.mname.clone()),
            rname: self.rname.clone().unwrap_or_else(|| soa.rname.clone()),
            refresh: self.refresh.unwrap_or(soa.refresh),
            retry: self.retry.unwrap_or(soa.retry),
            expire: self.expire.unwrap_or(soa.expire),
            minimum: self.minimum.unwrap_or(soa.minimum),
        }
    }
}

/// One change to the zone set: what the API, a zone-file import and the tests ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Add a zone with its SOA and apex NS set.
    CreateZone(ZoneSpec),
    DeleteZone(Name),
    /// Change some SOA fields, the others as they are when the change is applied (two patches of
    /// different fields both land).
    PatchSoa(Name, SoaChange),
    /// One RRset change, with its error as it is.
    Rrset(Name, Change),
    /// Changes applied in order, all or none, with one serial bump; an error names the change
    /// at fault (`ZoneError::Batch`).
    Batch(Name, Vec<Change>),
    /// Replace a zone's whole contents (SOA, NS and records), creating it if missing: a zone-file
    /// import. The serial only moves forward ([`import_serial`]).
    ReplaceZone {
        spec: ZoneSpec,
        rrsets: Vec<(Name, RecordType, RrSet)>,
    },
}

impl Edit {
    /// The apex of the zone the edit changes (as given).
    pub fn apex(&self) -> &Name {
        match self {
            Edit::CreateZone(spec) | Edit::ReplaceZone { spec, .. } => &spec.apex,
            Edit::DeleteZone(apex)
            | Edit::PatchSoa(apex, _)
            | Edit::Rrset(apex, _)
            | Edit::Batch(apex, _) => apex,
        }
    }
}

/// What one edit changed: the store writes it, the compiler recompiles it. All names are
/// lowercased and absolute.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChangeSet {
    /// Names whose answers may have changed: the owners changed, their ancestors up to the apex
    /// (empty non-terminal status may have changed), and every name whose CNAME chain leads to
    /// one of those.
    pub names: BTreeSet<Name>,
    /// Zones whose SOA changed: settings or serial (every edit bumps the serial), or the zone
    /// itself appeared or went.
    pub zones_soa: BTreeSet<Name>,
    /// Zones to recompile whole: created, deleted, or whose wildcard or delegation status changed.
    pub zones_full: BTreeSet<Name>,
    /// Zones whose RRsets are all new (created, imported) or all gone (deleted): the store
    /// rewrites them whole.
    pub zones_replaced: BTreeSet<Name>,
    /// RRsets set or removed, as `(apex, owner, type)`: the store writes their current value.
    pub rrsets: BTreeSet<(Name, Name, RecordType)>,
}

impl ChangeSet {
    /// Adds `other`'s entries. `append` merges two sets in one pass; `extend` would insert one
    /// by one, a descent with hickory's slow name comparison each (most of a large import).
    pub fn merge(&mut self, mut other: ChangeSet) {
        self.names.append(&mut other.names);
        self.zones_soa.append(&mut other.zones_soa);
        self.zones_full.append(&mut other.zones_full);
        self.zones_replaced.append(&mut other.zones_replaced);
        self.rrsets.append(&mut other.rrsets);
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Adds names given in canonical order. Collecting sorted input into a set builds it in one
    /// pass, and [`BTreeSet::append`] merges two sets in one pass, where inserting one by one
    /// costs a descent (with hickory's slow name comparison) per name.
    fn add_sorted_names(&mut self, names: impl IntoIterator<Item = CanonName>) {
        let mut more: BTreeSet<Name> = names.into_iter().map(CanonName::into_name).collect();
        self.names.append(&mut more);
    }
}

/// What the changes of one edit to a zone touched, gathered as they are applied and turned into
/// a [`ChangeSet`] once, at the end: adding to sets change by change made a large batch
/// quadratic.
#[derive(Default)]
struct Collected {
    names: Vec<CanonName>,
    rrsets: Vec<(CanonName, RecordType)>,
    /// The zone needs a full recompile (a cut or wildcard appeared or went).
    zone_full: bool,
}

impl Collected {
    fn into_change_set(mut self, apex: &CanonName) -> ChangeSet {
        let mut changes = ChangeSet::default();
        self.names.sort();
        self.names.dedup();
        changes.add_sorted_names(self.names);
        changes.rrsets = self
            .rrsets
            .into_iter()
            .map(|(owner, rtype)| (apex.name(), owner.into_name(), rtype))
            .collect();
        if self.zone_full {
            changes.zones_full.insert(apex.name());
        }
        changes.zones_soa.insert(apex.name());
        changes
    }
}

/// The serial a zone gets from a zone-file import: the file's, unless the zone has a serial at or
/// after it (RFC 1982), then the zone's plus one, so that the serial only moves forward and
/// secondaries see the change.
pub fn import_serial(current: Option<u32>, file: u32) -> u32 {
    match current {
        Some(cur) if !serial_newer(file, cur) => cur.wrapping_add(1),
        _ => file,
    }
}

/// RFC 1982 §3.2: `a` is greater than `b`.
pub fn serial_newer(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 31
}

impl ZoneSet {
    /// Applies one edit, all or nothing: on error the set is as it was.
    pub fn apply(&mut self, edit: Edit) -> Result<ChangeSet, ZoneError> {
        // The maps are persistent: this copy is a reference count, and changing `self` below
        // copies only what it touches. Putting it back is the whole undo.
        let before = self.zones.clone();
        let result = match edit {
            Edit::CreateZone(spec) => {
                if spec.ns.is_empty() {
                    return Err(ZoneError::NoNameServers);
                }
                let zone = self.new_zone(&spec)?;
                Ok(self.insert_new(zone))
            }
            Edit::DeleteZone(apex) => self.remove_zone(&CanonName::new(&apex)),
            Edit::PatchSoa(apex, patch) => self.patch_soa(&CanonName::new(&apex), &patch),
            Edit::Rrset(apex, change) => self.mutate(&CanonName::new(&apex), vec![change], false),
            Edit::Batch(apex, changes) => {
                if changes.is_empty() {
                    return Err(ZoneError::EmptyBatch);
                }
                self.mutate(&CanonName::new(&apex), changes, true)
            }
            Edit::ReplaceZone { spec, rrsets } => self.replace_zone(spec, rrsets),
        };
        if result.is_err() {
            self.zones = before;
        }
        result
    }

    /// Adds a zone with its SOA and apex NS set.
    pub fn create_zone(&mut self, spec: ZoneSpec) -> Result<ChangeSet, ZoneError> {
        self.apply(Edit::CreateZone(spec))
    }

    /// Removes a zone. `ChangeSet::names` lists the names it served, for the compiler to drop,
    /// and those of a parent zone that it was hiding.
    pub fn delete_zone(&mut self, apex: &Name) -> Result<ChangeSet, ZoneError> {
        self.apply(Edit::DeleteZone(apex.clone()))
    }

    /// Changes the SOA fields (not the serial, which is bumped).
    pub fn set_soa(&mut self, apex: &Name, soa: SoaParams) -> Result<ChangeSet, ZoneError> {
        let patch = SoaChange {
            mname: Some(soa.mname),
            rname: Some(soa.rname),
            refresh: Some(soa.refresh),
            retry: Some(soa.retry),
            expire: Some(soa.expire),
            minimum: Some(soa.minimum),
            ttl: Some(soa.ttl),
        };
        self.apply(Edit::PatchSoa(apex.clone(), patch))
    }

    /// Replaces (or creates) the RRset of `rtype` at `name`. NS at the apex replaces the apex NS
    /// set; NS elsewhere makes `name` a delegation point.
    pub fn set_rrset(
        &mut self,
        apex: &Name,
        name: &Name,
        rtype: RecordType,
        ttl: u32,
        records: Vec<RData>,
    ) -> Result<ChangeSet, ZoneError> {
        let change = Change::Set {
            name: name.clone(),
            rtype,
            ttl,
            records,
        };
        self.apply(Edit::Rrset(apex.clone(), change))
    }

    /// Removes the RRset of `rtype` at `name`.
    pub fn delete_rrset(
        &mut self,
        apex: &Name,
        name: &Name,
        rtype: RecordType,
    ) -> Result<ChangeSet, ZoneError> {
        let change = Change::Delete {
            name: name.clone(),
            rtype,
        };
        self.apply(Edit::Rrset(apex.clone(), change))
    }

    /// Applies `changes` in order, all or none: each change is validated against the zone as the
    /// changes before it left it. One serial bump.
    pub fn apply_batch(
        &mut self,
        apex: &Name,
        changes: Vec<Change>,
    ) -> Result<ChangeSet, ZoneError> {
        self.apply(Edit::Batch(apex.clone(), changes))
    }

    /// Adds a zone with all its RRsets at once, as saved (the store's load): the serial is
    /// `spec.serial`, not bumped. The apex NS set comes from `spec.ns` or from an NS RRset at the
    /// apex in `rrsets`. Every RRset is validated as [`ZoneSet::set_rrset`] would; on error
    /// (`ZoneError::Batch` with the index into `rrsets`) nothing is added.
    pub fn load_zone(
        &mut self,
        spec: ZoneSpec,
        rrsets: Vec<(Name, RecordType, RrSet)>,
    ) -> Result<ChangeSet, ZoneError> {
        let rrsets = rrsets
            .into_iter()
            .map(|(n, t, s)| (CanonName::from_name(n), t, Loading::Records(s)))
            .collect();
        // One thread: a zone-file import runs while the fallback answers, on the same CPUs.
        let zone = self.build_zone(spec, rrsets, 1)?;
        Ok(self.insert_new(zone))
    }

    /// [`ZoneSet::load_zone`] without the [`ChangeSet`], of RRsets as the store keeps them: for
    /// the store's load, after which every zone is compiled whole anyway. Listing every name of
    /// a large zone only to drop the list was a tenth of the load; the records are kept in the
    /// wire form they come in, read only to be checked.
    pub fn add_loaded_zone(
        &mut self,
        spec: ZoneSpec,
        rrsets: Vec<(LoadedOwner, RecordType, StoredSet)>,
    ) -> Result<(), ZoneError> {
        let rrsets = rrsets
            .into_iter()
            .map(|(n, t, s)| (n.0, t, Loading::Stored(s)))
            .collect();
        // Every CPU: nothing is served yet.
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let zone = self.build_zone(spec, rrsets, threads)?;
        self.zones.insert(zone.apex.clone(), zone);
        Ok(())
    }

    /// The zone [`ZoneSet::load_zone`] adds, validated.
    fn build_zone(
        &self,
        spec: ZoneSpec,
        rrsets: Vec<(CanonName, RecordType, Loading)>,
        threads: usize,
    ) -> Result<Zone, ZoneError> {
        let mut zone = self.new_zone(&spec)?;
        zone.load_rrsets(rrsets, threads)?;
        if zone.ns().is_none() {
            return Err(ZoneError::NoNameServers);
        }
        Ok(zone)
    }

    /// [`Edit::ReplaceZone`].
    fn replace_zone(
        &mut self,
        mut spec: ZoneSpec,
        rrsets: Vec<(Name, RecordType, RrSet)>,
    ) -> Result<ChangeSet, ZoneError> {
        let apex = CanonName::new(&spec.apex);
        let mut changes = ChangeSet::default();
        let old = self.zones.remove(&apex);
        if let Some(old) = &old {
            changes.add_sorted_names(old.existing());
        }
        spec.serial = import_serial(old.map(|z| z.serial), spec.serial);
        changes.merge(self.load_zone(spec, rrsets)?);
        Ok(changes)
    }

    /// A zone from `spec` (with its apex NS set if `spec.ns` isn't empty), validated.
    fn new_zone(&self, spec: &ZoneSpec) -> Result<Zone, ZoneError> {
        if spec.apex.is_root() {
            return Err(ZoneError::RootZone);
        }
        let apex = CanonName::new(&spec.apex);
        if self.zones.contains_key(&apex) {
            return Err(ZoneError::ZoneExists {
                apex: apex.to_string(),
            });
        }
        if apex.is_wildcard() {
            return Err(ZoneError::WildcardApex);
        }
        spec.soa.validate()?;
        check_ttl(TtlField::NsTtl, spec.ns_ttl)?;
        let mut ns = Vec::with_capacity(spec.ns.len());
        for (index, n) in spec.ns.iter().enumerate() {
            let rd = RData::NS(hickory_proto::rr::rdata::NS(normalize(n)));
            if ns.contains(&rd) {
                return Err(ZoneError::DuplicateNameServer { index });
            }
            ns.push(rd);
        }
        let mut zone = Zone {
            apex: apex.clone(),
            apex_name: apex.name(),
            soa: spec.soa.normalized(),
            serial: spec.serial,
            nodes: Default::default(),
            cname_owners: Default::default(),
            cuts: Default::default(),
            stars: Default::default(),
        };
        if !ns.is_empty() {
            let set = RrSet {
                ttl: spec.ns_ttl,
                records: ns,
            };
            zone.put(
                &apex,
                RecordType::NS,
                Some(WireSet::encode(RecordType::NS, &set)?),
            );
        }
        Ok(zone)
    }

    /// Adds a new, validated zone and says what that changes.
    fn insert_new(&mut self, zone: Zone) -> ChangeSet {
        let apex = zone.apex.clone();
        let mut changes = self.names_shadowed_by(&apex);
        changes.add_sorted_names(zone.existing());
        changes.zones_soa.insert(apex.name());
        changes.zones_full.insert(apex.name());
        changes.zones_replaced.insert(apex.name());
        self.zones.insert(apex, zone);
        changes
    }

    /// [`Edit::DeleteZone`].
    fn remove_zone(&mut self, apex: &CanonName) -> Result<ChangeSet, ZoneError> {
        let zone = self
            .zones
            .remove(apex)
            .ok_or_else(|| ZoneError::UnknownZone {
                apex: apex.to_string(),
            })?;
        let mut changes = self.names_shadowed_by(apex);
        changes.add_sorted_names(zone.existing());
        changes.zones_soa.insert(apex.name());
        changes.zones_full.insert(apex.name());
        changes.zones_replaced.insert(apex.name());
        Ok(changes)
    }

    /// Names of enclosing zones at or below `apex`: they are answered by the zone at `apex` while
    /// it exists, so creating or deleting it changes their answers.
    fn names_shadowed_by(&self, apex: &CanonName) -> ChangeSet {
        let mut changes = ChangeSet::default();
        for parent in self
            .zones
            .values()
            .filter(|z| z.apex != *apex && apex.is_at_or_below(&z.apex))
        {
            // The names at or below `apex` directly follow it.
            let existing = parent.existing();
            let start = existing.partition_point(|n| n < apex);
            changes.add_sorted_names(
                existing[start..]
                    .iter()
                    .take_while(|n| n.is_at_or_below(apex))
                    .cloned(),
            );
            // A CNAME in the parent whose target is at or below `apex` stops following it once
            // `apex` is a zone of its own (and follows it again when it goes): recompile the
            // parent whole if it has any such CNAME.
            if parent
                .cname_owners
                .range::<_, CanonName>(apex..)
                .next()
                .is_some_and(|(target, _)| target.is_at_or_below(apex))
            {
                changes.zones_full.insert(parent.apex.name());
            }
        }
        changes
    }

    /// The zone at `apex`, for a change; `UnknownZone` if there is none.
    fn zone_mut(&mut self, apex: &CanonName) -> Result<&mut Zone, ZoneError> {
        self.zones
            .get_mut(apex)
            .ok_or_else(|| ZoneError::UnknownZone {
                apex: apex.to_string(),
            })
    }

    /// Sets a zone's SOA settings and serial as they are, with no serial bump: a fleet edge
    /// takes both from the fleet's source of truth, where the writer's edit already bumped it.
    pub(crate) fn set_zone_meta(
        &mut self,
        apex: &Name,
        soa: SoaParams,
        serial: u32,
    ) -> Result<ChangeSet, ZoneError> {
        let apex = CanonName::new(apex);
        let zone = self.zone_mut(&apex)?;
        soa.validate()?;
        zone.soa = soa.normalized();
        zone.serial = serial;
        let mut changes = ChangeSet::default();
        changes.names.insert(apex.name());
        changes.zones_soa.insert(apex.name());
        Ok(changes)
    }

    /// [`Edit::PatchSoa`]: the fields not in `patch` keep their current values.
    fn patch_soa(&mut self, apex: &CanonName, patch: &SoaChange) -> Result<ChangeSet, ZoneError> {
        let zone = self.zone_mut(apex)?;
        let soa = patch.apply_to(&zone.soa);
        soa.validate()?;
        zone.soa = soa.normalized();
        zone.bump_serial();
        let mut changes = ChangeSet::default();
        changes.names.insert(apex.name());
        changes.zones_soa.insert(apex.name());
        Ok(changes)
    }

    /// [`Edit::Rrset`] and [`Edit::Batch`]: the changes in order, then one serial bump. An error
    /// leaves the zone half changed: [`ZoneSet::apply`] puts the set back.
    fn mutate(
        &mut self,
        apex: &CanonName,
        changes: Vec<Change>,
        batch: bool,
    ) -> Result<ChangeSet, ZoneError> {
        let zone = self.zone_mut(apex)?;
        let mut collected = Collected::default();
        for (index, change) in changes.into_iter().enumerate() {
            if let Err(e) = zone.apply(change, &mut collected) {
                return Err(if batch {
                    ZoneError::Batch {
                        index,
                        source: Box::new(e),
                    }
                } else {
                    e
                });
            }
        }
        zone.bump_serial();
        Ok(collected.into_change_set(apex))
    }
}

impl Zone {
    pub(super) fn bump_serial(&mut self) {
        // RFC 1982 serial arithmetic: adding 1 wraps modulo 2^32.
        self.serial = self.serial.wrapping_add(1);
    }

    /// Validates one change against the zone as it is now and applies it, noting what it touched
    /// in `out`.
    fn apply(&mut self, change: Change, out: &mut Collected) -> Result<(), ZoneError> {
        let (name, rtype, new) = match change {
            Change::Set {
                name,
                rtype,
                ttl,
                records,
            } => {
                let name = self.owner(name)?;
                self.check_set(&name, rtype, ttl, &records)?;
                (
                    name,
                    rtype,
                    Some(WireSet::encode(rtype, &RrSet { ttl, records })?),
                )
            }
            Change::Delete { name, rtype } => {
                let name = self.owner(name)?;
                self.check_delete(&name, rtype)?;
                (name, rtype, None)
            }
        };
        let watch_wildcards = !self.stars.is_empty() || name.has_star_label();
        let before = watch_wildcards.then(|| self.closest_encloser(&name));
        let had_wildcard_or_cut = self.has_wildcard_or_cut();
        self.put(&name, rtype, new);
        out.rrsets.push((name.clone(), rtype));

        if (rtype == RecordType::NS && name != self.apex)
            || name.has_star_label()
            || had_wildcard_or_cut != self.has_wildcard_or_cut()
        {
            out.zone_full = true;
        }
        let mut roots: Vec<CanonName> = Vec::new();
        let mut n = name.clone();
        while n != self.apex {
            let parent = n.parent();
            roots.push(n);
            n = parent;
        }
        roots.push(n);
        // With wildcards, a name appearing or disappearing changes the closest encloser of the
        // names below it that don't exist, so their synthesized answers. They are only compiled
        // as CNAME targets: dirty the owners of CNAMEs pointing below the highest name whose
        // existence flipped.
        if let Some(before) = before {
            let after = self.closest_encloser(&name);
            if before != after {
                let top = before.label_count().min(after.label_count()) + 1;
                let flipped = name.trim_to(top);
                roots.extend(
                    self.cname_owners
                        .range::<_, CanonName>(&flipped..)
                        .take_while(|(t, _)| t.is_at_or_below(&flipped))
                        .map(|(t, _)| t.clone()),
                );
            }
        }
        self.dirty_closure(roots, &mut out.names);
        Ok(())
    }

    /// Adds `roots` and every name whose CNAME chain leads to one of them to `out`.
    fn dirty_closure(&self, roots: Vec<CanonName>, out: &mut Vec<CanonName>) {
        let mut seen = BTreeSet::new();
        let mut queue = roots;
        while let Some(n) = queue.pop() {
            if let Some(owners) = self.cname_owners.get(&n) {
                queue.extend(owners.iter().filter(|o| !seen.contains(*o)).cloned());
            }
            seen.insert(n);
        }
        out.extend(seen);
    }

    /// Normalises an owner name given to a mutation and checks that it is in the zone.
    pub(super) fn owner(&self, name: Name) -> Result<CanonName, ZoneError> {
        self.owner_key(CanonName::from_name(name))
    }

    /// [`Zone::owner`] of a name in key form.
    fn owner_key(&self, name: CanonName) -> Result<CanonName, ZoneError> {
        if !name.is_at_or_below(&self.apex) {
            return Err(ZoneError::NotInZone {
                name: name.to_string(),
                apex: self.apex.to_string(),
            });
        }
        Ok(name)
    }

    fn check_set(
        &self,
        name: &CanonName,
        rtype: RecordType,
        ttl: u32,
        records: &[RData],
    ) -> Result<(), ZoneError> {
        check_set_at(&self.apex, name, self.nodes.get(name), rtype, ttl, records)
    }

    /// Validates and adds the RRsets of [`ZoneSet::load_zone`], as many `check_set` and `put`
    /// in a row would, with the same error: `ZoneError::Batch` at the first RRset in `rrsets`
    /// that fails. On error the zone is left without its nodes: the caller drops it.
    ///
    /// Inserting them one by one was most of the store's load (a lookup for the check, another
    /// for the insert, each a descent of a large tree); instead each RRset is checked alone and
    /// put in wire form (on `threads` threads: the store's load takes every CPU), then the
    /// RRsets are sorted by owner (stable, so those of one owner keep their order), each owner's
    /// are checked against the ones before them, and the map is built at once from the sorted
    /// nodes. An RRset's checks only depend on the RRsets of its own owner before it, so the
    /// first failure found this way is the one the sequential order meets first.
    pub(super) fn load_rrsets(
        &mut self,
        rrsets: Vec<(CanonName, RecordType, Loading)>,
        threads: usize,
    ) -> Result<(), ZoneError> {
        let mut first_error: Option<(usize, ZoneError)> = None;
        let mut fail = |index: usize, e: ZoneError| {
            if first_error.as_ref().is_none_or(|(i, _)| index < *i) {
                first_error = Some((index, e));
            }
        };
        let alone = par_map(rrsets, threads, |index, (name, rtype, set)| {
            self.load_one(name, rtype, set)
                .map(|(name, wire)| (name, index, rtype, wire))
                .map_err(|e| (index, e))
        });
        let mut sets = Vec::with_capacity(alone.len());
        for r in alone {
            match r {
                Ok(set) => sets.push(set),
                Err((index, e)) => fail(index, e),
            }
        }
        sets.sort_by(|a, b| a.0.cmp(&b.0));

        let mut before = std::mem::take(&mut self.nodes);
        let mut nodes: Vec<(CanonName, Node)> = Vec::with_capacity(sets.len() + before.len());
        let mut sets = sets.into_iter().peekable();
        while let Some((name, index, rtype, wire)) = sets.next() {
            let mut node = before.remove(&name).unwrap_or_default();
            let mut group = Some((index, rtype, wire));
            while let Some((index, rtype, wire)) = group.take() {
                let at = (!node.is_empty()).then_some(&node);
                match check_set_beside(&name, at, rtype) {
                    Ok(()) => node = node.with(rtype, Some(&wire)),
                    // This owner's later RRsets come later in `rrsets` too: their own errors,
                    // if any, don't matter.
                    Err(e) => fail(index, e),
                }
                group = sets
                    .next_if(|next| next.0 == name)
                    .map(|(_, index, rtype, wire)| (index, rtype, wire));
            }
            if !node.is_empty() {
                nodes.push((name, node));
            }
        }
        if let Some((index, e)) = first_error {
            return Err(ZoneError::Batch {
                index,
                source: Box::new(e),
            });
        }
        // Sorted and distinct but for the nodes from before (the apex NS of `spec.ns`).
        nodes.extend(before);
        self.nodes = fill_sorted(nodes);
        let indexed: Vec<(CanonName, RecordType)> = self
            .nodes
            .iter()
            .flat_map(|(name, node)| {
                let star = name.has_star_label();
                node.types()
                    .filter(move |t| star || matches!(t, RecordType::CNAME | RecordType::NS))
                    .map(move |t| (name.clone(), t))
            })
            .collect();
        for (name, rtype) in indexed {
            self.reindex(&name, rtype, None);
        }
        Ok(())
    }

    /// One RRset of [`Zone::load_rrsets`]: its owner in key form and the RRset in wire form,
    /// once it passed the checks that need no other RRset.
    fn load_one(
        &self,
        name: CanonName,
        rtype: RecordType,
        set: Loading,
    ) -> Result<(CanonName, WireSet), ZoneError> {
        let name = self.owner_key(name)?;
        let wire = match set {
            Loading::Records(set) => {
                check_set_alone(&self.apex, &name, rtype, set.ttl, &set.records)?;
                WireSet::encode(rtype, &set)?
            }
            Loading::Stored(stored) => {
                let (wire, set) = WireSet::from_stored(rtype, &stored)?;
                check_set_alone(&self.apex, &name, rtype, set.ttl, &set.records)?;
                wire
            }
        };
        Ok((name, wire))
    }

    fn check_delete(&self, name: &CanonName, rtype: RecordType) -> Result<(), ZoneError> {
        if rtype == RecordType::SOA {
            return Err(ZoneError::SoaRecord);
        }
        if rtype == RecordType::NS && *name == self.apex {
            return Err(ZoneError::ApexNsRequired);
        }
        if !self.nodes.get(name).is_some_and(|n| n.contains(rtype)) {
            return Err(ZoneError::NoSuchRrset {
                name: name.to_string(),
                rtype,
            });
        }
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) an RRset without validation, keeping the indexes
    /// (`cname_owners`, `cuts`, `stars`) in step. Returns the previous RRset.
    pub(super) fn put(
        &mut self,
        name: &CanonName,
        rtype: RecordType,
        new: Option<WireSet>,
    ) -> Option<RrSet> {
        let node = self.nodes.get(name);
        if new.is_none() && node.is_none() {
            return None;
        }
        let previous = node.and_then(|n| n.get(rtype)).map(SetRef::to_rrset);
        let next = node.cloned().unwrap_or_default().with(rtype, new.as_ref());
        if next.is_empty() {
            self.nodes.remove(name);
        } else {
            self.nodes.insert(name.clone(), next);
        }
        self.reindex(name, rtype, previous.as_ref());
        previous
    }

    /// Brings the indexes (`cname_owners`, `cuts`, `stars`) in step with a change of the RRset
    /// of `rtype` at `name` from `previous`.
    fn reindex(&mut self, name: &CanonName, rtype: RecordType, previous: Option<&RrSet>) {
        if rtype == RecordType::CNAME {
            if let Some(target) = previous
                .and_then(|p| p.records.first())
                .and_then(cname_target)
            {
                if let Some(owners) = self.cname_owners.get_mut(&target) {
                    owners.remove(name);
                    if owners.is_empty() {
                        self.cname_owners.remove(&target);
                    }
                }
            }
            let now = self.rrset_lower(name, rtype).and_then(|s| s.first());
            if let Some(target) = now.as_ref().and_then(cname_target) {
                self.cname_owners
                    .entry(target)
                    .or_default()
                    .insert(name.clone());
            }
        }
        if rtype == RecordType::NS && *name != self.apex {
            if self.rrset_lower(name, rtype).is_some() {
                self.cuts.insert(name.clone());
            } else {
                self.cuts.remove(name);
            }
        }
        if name.has_star_label() {
            if self.nodes.contains_key(name) {
                self.stars.insert(name.clone());
            } else {
                self.stars.remove(name);
            }
        }
    }
}

/// The target of a CNAME record, in key form.
pub(super) fn cname_target(rd: &RData) -> Option<CanonName> {
    match rd {
        RData::CNAME(c) => Some(CanonName::new(&c.0)),
        _ => None,
    }
}

/// An RRset of a zone loaded whole: as a change gives it, or as the store keeps it.
pub(super) enum Loading {
    Records(RrSet),
    Stored(StoredSet),
}

/// `f(index, item)` for each of `items`, in order, on up to `threads` threads (one for a short
/// list: a thread costs more than a few thousand small items).
fn par_map<T: Send, U: Send>(
    items: Vec<T>,
    threads: usize,
    f: impl Fn(usize, T) -> U + Sync,
) -> Vec<U> {
    const ALONE: usize = 4096;
    if threads <= 1 || items.len() < ALONE {
        return items
            .into_iter()
            .enumerate()
            .map(|(i, t)| f(i, t))
            .collect();
    }
    let per = items.len().div_ceil(threads);
    let mut chunks = Vec::with_capacity(threads);
    let mut rest = items;
    while !rest.is_empty() {
        let tail = rest.split_off(per.min(rest.len()));
        chunks.push(std::mem::replace(&mut rest, tail));
    }
    let f = &f;
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .enumerate()
            .map(|(c, chunk)| {
                scope.spawn(move || {
                    chunk
                        .into_iter()
                        .enumerate()
                        .map(|(i, t)| f(c * per + i, t))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// A map of `entries`, mostly in ascending order, with its leaves nearly full.
///
/// The B-tree splits a full leaf in two halves, so inserting keys in order leaves every leaf
/// half full: at a million names, the half-empty leaves were a quarter of the daemon's memory.
/// Inserting every other entry first, then the ones between, fills each half-full leaf the
/// second time round before it has to split.
pub(super) fn fill_sorted<K: Ord + Clone, V: Clone>(entries: Vec<(K, V)>) -> OrdMap<K, V> {
    let mut map = OrdMap::new();
    let mut odd = Vec::with_capacity(entries.len() / 2);
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i % 2 == 0 {
            map.insert(k, v);
        } else {
            odd.push((k, v));
        }
    }
    for (k, v) in odd {
        map.insert(k, v);
    }
    map
}
