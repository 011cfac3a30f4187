//! The zone data: RRsets by owner, the SOA settings, and the indexes that keep `resolve` and the
//! compiler's "what changed" cheap.
//!
//! The maps are persistent (`imbl`): cloning a zone or the whole zone set costs a few reference
//! counts, and changing the clone copies only the paths it touches. That is what lets a writer
//! build the next version of the zones while readers keep answering from the current one.

use std::{ops::Bound, sync::Arc};

use hickory_proto::rr::{rdata::SOA, Name, RData, Record, RecordType};
use imbl::{OrdMap, OrdSet};

use super::{
    name::{normalize, CanonName},
    validate::check_ttl,
    TtlField, ZoneError, DEFAULT_NEGATIVE_TTL, DEFAULT_NS_TTL, DEFAULT_SOA_TTL,
};

/// One RRset: the records of one type at one name, in insertion order, with one TTL (RFC 2181 §5.2:
/// "the TTLs of all RRs in an RRSet must be the same").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RrSet {
    pub ttl: u32,
    pub records: Vec<RData>,
}

/// The RRsets at one name, ordered by type, each type at most once.
///
/// A sorted `Vec`, not a map: most names have one RRset or two, and a `BTreeMap`
/// allocates a whole leaf (about 400 bytes) even for one, which was a third of the daemon's memory
/// per record and a good part of the store's load time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Node(pub(super) Vec<(RecordType, RrSet)>);

impl Node {
    pub(super) fn find(&self, rtype: RecordType) -> Result<usize, usize> {
        self.0.binary_search_by(|(t, _)| t.cmp(&rtype))
    }

    pub(super) fn get(&self, rtype: RecordType) -> Option<&RrSet> {
        self.find(rtype).ok().map(|i| &self.0[i].1)
    }

    pub(super) fn contains(&self, rtype: RecordType) -> bool {
        self.find(rtype).is_ok()
    }

    /// Sets the RRset of `rtype`; returns the one it replaces.
    pub(super) fn insert(&mut self, rtype: RecordType, set: RrSet) -> Option<RrSet> {
        match self.find(rtype) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, set)),
            Err(i) => {
                // Grow by one: the `Vec` default would reserve room for four.
                self.0.reserve_exact(1);
                self.0.insert(i, (rtype, set));
                None
            }
        }
    }

    pub(super) fn remove(&mut self, rtype: RecordType) -> Option<RrSet> {
        let i = self.find(rtype).ok()?;
        let (_, set) = self.0.remove(i);
        self.0.shrink_to_fit();
        Some(set)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.0.len()
    }

    pub(super) fn types(&self) -> impl Iterator<Item = RecordType> + '_ {
        self.0.iter().map(|(t, _)| *t)
    }

    pub(super) fn sets(&self) -> impl Iterator<Item = &RrSet> {
        self.0.iter().map(|(_, s)| s)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (RecordType, &RrSet)> {
        self.0.iter().map(|(t, s)| (*t, s))
    }
}

/// The zone's SOA fields other than the serial, which the zone manages itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SoaParams {
    /// TTL of the SOA record when asked for (the negative answers use min(ttl, minimum)).
    pub ttl: u32,
    pub mname: Name,
    pub rname: Name,
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    /// SOA MINIMUM: the negative-caching TTL (RFC 2308 §4), the API's `negative_ttl`.
    pub minimum: u32,
}

impl SoaParams {
    /// Defaults: TTL 3600, refresh 3600, retry 900, expire 14 days (RFC 1912 §2.2), negative TTL 30.
    pub fn new(mname: Name, rname: Name) -> Self {
        Self {
            ttl: DEFAULT_SOA_TTL,
            mname,
            rname,
            refresh: 3600,
            retry: 900,
            expire: 1_209_600,
            minimum: DEFAULT_NEGATIVE_TTL,
        }
    }

    pub(super) fn validate(&self) -> Result<(), ZoneError> {
        for (field, value) in [
            (TtlField::SoaTtl, self.ttl),
            (TtlField::Refresh, self.refresh),
            (TtlField::Retry, self.retry),
            (TtlField::Expire, self.expire),
            (TtlField::Minimum, self.minimum),
        ] {
            check_ttl(field, value)?;
        }
        Ok(())
    }

    pub(super) fn normalized(&self) -> Self {
        Self {
            mname: normalize(&self.mname),
            rname: normalize(&self.rname),
            ..self.clone()
        }
    }
}

/// What [`ZoneSet::create_zone`] needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ZoneSpec {
    pub apex: Name,
    pub soa: SoaParams,
    /// Initial serial; later mutations increment it.
    pub serial: u32,
    /// The apex NS set (at least one name).
    pub ns: Vec<Name>,
    pub ns_ttl: u32,
}

impl ZoneSpec {
    /// A zone with default SOA timers, serial 1 and NS TTL 3600.
    pub fn new(apex: Name, mname: Name, rname: Name, ns: Vec<Name>) -> Self {
        Self {
            apex,
            soa: SoaParams::new(mname, rname),
            serial: 1,
            ns,
            ns_ttl: DEFAULT_NS_TTL,
        }
    }
}

/// One zone: SOA, apex NS set and the other RRsets by owner name.
#[derive(Clone, Debug)]
pub struct Zone {
    pub(super) apex: CanonName,
    pub(super) soa: SoaParams,
    pub(super) serial: u32,
    /// Owner to its RRsets; the apex NS set lives here too. Never holds an empty node.
    /// Nodes are shared between versions of the zone (`Arc`): copying a path of the map on a
    /// change copies pointers, not records.
    pub(super) nodes: OrdMap<CanonName, Arc<Node>>,
    /// CNAME target to the owners whose CNAME points at it: when the target's answer changes, so
    /// do theirs.
    pub(super) cname_owners: OrdMap<CanonName, OrdSet<CanonName>>,
    /// Names below the apex that own NS: the zone cuts (delegations).
    pub(super) cuts: OrdSet<CanonName>,
    /// Owners with a `*` label (see [`has_star_label`]).
    pub(super) stars: OrdSet<CanonName>,
}

impl Zone {
    pub fn apex(&self) -> &Name {
        self.apex.name()
    }

    pub fn soa(&self) -> &SoaParams {
        &self.soa
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    pub(super) fn soa_rdata(&self) -> RData {
        let s = &self.soa;
        // `validate` keeps the timers <= MAX_TTL = i32::MAX, so the casts are exact.
        RData::SOA(SOA::new(
            s.mname.clone(),
            s.rname.clone(),
            self.serial,
            s.refresh as i32,
            s.retry as i32,
            s.expire as i32,
            s.minimum,
        ))
    }

    /// The SOA record as answered to an SOA query: TTL is the SOA TTL.
    pub fn soa_record(&self) -> Record {
        Record::from_rdata(self.apex.name().clone(), self.soa.ttl, self.soa_rdata())
    }

    /// TTL of the SOA record in negative answers.
    ///
    /// RFC 2308 §3: "the TTL of this record is set from the minimum of the MINIMUM field of the
    /// SOA record and the TTL of the SOA itself".
    pub fn negative_ttl(&self) -> u32 {
        self.soa.ttl.min(self.soa.minimum)
    }

    /// The SOA record for the authority section of NXDOMAIN and NODATA answers.
    pub fn negative_soa(&self) -> Record {
        Record::from_rdata(
            self.apex.name().clone(),
            self.negative_ttl(),
            self.soa_rdata(),
        )
    }

    /// The apex NS set.
    pub fn ns(&self) -> Option<&RrSet> {
        self.rrset_lower(&self.apex, RecordType::NS)
    }

    /// The RRset of `rtype` at `name` (any case). SOA is not stored as an RRset: see
    /// [`Zone::soa_record`].
    pub fn rrset(&self, name: &Name, rtype: RecordType) -> Option<&RrSet> {
        self.rrset_lower(&CanonName::new(name), rtype)
    }

    /// Whether the zone has wildcards or delegations, which the fast path doesn't model: their
    /// negative answers must go to the fallback.
    pub fn has_wildcard_or_cut(&self) -> bool {
        !self.cuts.is_empty() || !self.stars.is_empty()
    }

    /// The delegation points (names below the apex that own NS).
    pub fn cuts(&self) -> impl Iterator<Item = &Name> {
        self.cuts.iter().map(CanonName::name)
    }

    /// Every name that exists in the zone's authoritative data: owners with data and the empty
    /// non-terminals between them and the apex, leaving out names strictly below a zone cut (only
    /// glue lives there). Canonical order.
    pub fn existing_names(&self) -> impl Iterator<Item = Name> {
        self.existing().into_iter().map(CanonName::into_name)
    }

    /// [`Zone::existing_names`] in key form.
    ///
    /// One pass over the owners, in canonical order, with no lookups: every ancestor of an owner
    /// sorts before it, and any name between the two is below that ancestor. So the ancestors of
    /// an owner already listed are exactly those it shares with the last name listed; the others
    /// (empty non-terminals) go in before it, top down, and the list stays sorted without
    /// duplicates.
    pub(super) fn existing(&self) -> Vec<CanonName> {
        let apex_labels = self.apex.label_count();
        let mut names: Vec<CanonName> = Vec::with_capacity(self.nodes.len());
        for owner in self.nodes.keys() {
            if self.cut_above(owner).is_some_and(|cut| cut != owner) {
                continue;
            }
            let first = names
                .last()
                .map_or(apex_labels, |last| last.common_labels(owner) + 1);
            names.extend((first..owner.label_count()).map(|n| owner.trim_to(n)));
            names.push(owner.clone());
        }
        names
    }

    /// Whether `name` (any case) is one of [`Zone::existing_names`]: it owns data or is an empty
    /// non-terminal, and is not strictly below a zone cut.
    pub fn name_exists(&self, name: &Name) -> bool {
        let name = CanonName::new(name);
        name.is_at_or_below(&self.apex)
            && self.exists(&name)
            && self.cut_above(&name).is_none_or(|cut| *cut == name)
    }

    /// Owner names with data (no empty non-terminals), canonical order.
    pub fn owners(&self) -> impl Iterator<Item = &Name> {
        self.nodes.keys().map(CanonName::name)
    }

    /// Number of owner names with data.
    pub fn name_count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of RRsets, the SOA left out.
    pub fn rrset_count(&self) -> usize {
        self.nodes.values().map(|n| n.len()).sum()
    }

    /// Number of records, the SOA left out.
    pub fn record_count(&self) -> usize {
        self.nodes
            .values()
            .flat_map(|n| n.sets())
            .map(|s| s.records.len())
            .sum()
    }

    /// Every RRset (apex NS included, SOA not: see [`Zone::soa_record`]) as
    /// `(owner, type, ttl, records)`, by owner in canonical order, then by type.
    pub fn records(&self) -> impl Iterator<Item = (Name, RecordType, u32, &[RData])> {
        self.records_from(&Name::root())
    }

    /// Like [`Zone::records`], from the first owner at or after `from` in canonical order: the
    /// cursor of a paged listing is the owner after the last one returned.
    pub fn records_from(
        &self,
        from: &Name,
    ) -> impl Iterator<Item = (Name, RecordType, u32, &[RData])> {
        self.nodes
            .range(CanonName::new(from)..)
            .flat_map(|(name, node)| {
                node.iter()
                    .map(move |(t, s)| (name.name().clone(), t, s.ttl, s.records.as_slice()))
            })
    }

    /// Whether `name` owns data or has descendants that do (an empty non-terminal).
    pub(super) fn exists(&self, name: &CanonName) -> bool {
        self.nodes.contains_key(name) || self.has_descendants(name)
    }

    /// Whether some owner is strictly below `name`. In canonical order the descendants of a name
    /// directly follow it, so the next key after `name` tells.
    pub(super) fn has_descendants(&self, name: &CanonName) -> bool {
        self.nodes
            .range::<_, CanonName>((Bound::Excluded(name), Bound::Unbounded))
            .next()
            .is_some_and(|(k, _)| k.is_at_or_below(name))
    }

    /// The topmost zone cut at or above `name` (inside the zone), if any.
    ///
    /// RFC 1034 §4.3.2 step 3b: "If a match would take us out of the authoritative data, we have a
    /// referral." Walking down from the apex, the first cut met is the one that takes us out.
    pub(super) fn cut_above(&self, name: &CanonName) -> Option<&CanonName> {
        if self.cuts.is_empty() {
            return None;
        }
        let closest = |n: &CanonName| {
            n.closest_key(|n| {
                self.cuts
                    .range::<_, CanonName>(..=n)
                    .next_back()
                    .map(|c| (c, ()))
            })
            .map(|(c, ())| c)
        };
        // The closest cut, then any above it: NS below a cut is refused by no check (it is
        // only glue there), so cuts can nest, and the topmost one wins.
        let mut cut = closest(name)?;
        // Cuts are strictly below the apex, so never the root: each parent is shorter.
        while let Some(above) = closest(&cut.parent()) {
            cut = above;
        }
        Some(cut)
    }

    /// The closest encloser of `name` (RFC 4592 §3.3.1): the longest existing ancestor-or-self.
    pub(super) fn closest_encloser(&self, name: &CanonName) -> CanonName {
        let mut n = name.clone();
        while n != self.apex && !self.exists(&n) {
            n = n.parent();
        }
        n
    }

    /// [`Zone::rrset`] for a name in key form.
    pub(super) fn rrset_lower(&self, name: &CanonName, rtype: RecordType) -> Option<&RrSet> {
        self.nodes.get(name)?.get(rtype)
    }
}
