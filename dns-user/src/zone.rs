//! The authoritative data model and the one decision procedure, [`ZoneSet::resolve`].
//!
//! Both the fallback server and the fast-path compiler ask [`ZoneSet::resolve`] what the answer to
//! a question is, so the two can only disagree through a serialisation bug. Everything else here
//! keeps the data in a shape that makes `resolve` simple and the compiler's job incremental:
//!
//! - Names are stored lowercased and fully qualified, in `BTreeMap`s ordered by hickory's canonical
//!   name order (RFC 4034 §6.1). In that order a name's descendants directly follow it, so "does
//!   this name have descendants" (is it an empty non-terminal?) is one range lookup.
//! - Every mutation validates first and changes nothing on error, bumps the SOA serial, and
//!   returns a [`Dirty`]: the names whose answers may have changed, which is what the compiler
//!   recompiles.
//!
//! What is deliberately not here: DNSSEC, DNAME (RFC 6672), additional-section processing beyond
//! referral glue (RFC 1034 allows leaving it out; it keeps [`Dirty`] exact).

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::Bound,
    sync::{Arc, RwLock},
};

use hickory_proto::rr::{rdata::SOA, Name, RData, Record, RecordType};

mod resolve;
#[cfg(test)]
mod tests;

pub use resolve::{Resolution, ResolutionKind};

/// The zones as the daemon shares them: the API writes, the fallback and the compiler read.
pub type SharedZones = Arc<RwLock<ZoneSet>>;

/// RFC 2181 §8: "The definition of values appropriate to the TTL field in STD 13 is not as clear
/// as it could be [...] it is hereby specified that a TTL value is an unsigned number, with a
/// minimum value of 0, and a maximum value of 2147483647."
pub const MAX_TTL: u32 = 2_147_483_647;
/// Most CNAME records `resolve` follows for one question (loops stop earlier).
pub const MAX_CNAME_CHAIN: usize = 8;
/// Default TTL of the SOA record itself.
pub const DEFAULT_SOA_TTL: u32 = 3600;
/// Default SOA MINIMUM, which is the negative-caching TTL (RFC 2308 §4).
pub const DEFAULT_NEGATIVE_TTL: u32 = 30;
/// Default TTL of the apex NS set given at zone creation.
pub const DEFAULT_NS_TTL: u32 = 3600;

/// Record types that can be stored with [`ZoneSet::set_rrset`]. SOA is set through the zone
/// calls ([`ZoneSet::create_zone`], [`ZoneSet::set_soa`]).
pub const SUPPORTED_TYPES: [RecordType; 9] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::CNAME,
    RecordType::TXT,
    RecordType::MX,
    RecordType::NS,
    RecordType::SRV,
    RecordType::CAA,
    RecordType::PTR,
];

/// Lowercases a name and makes it absolute: the form every key in this module is in.
///
/// Names are always taken as absolute; a name parsed without the trailing dot means the same name.
pub fn normalize(name: &Name) -> Name {
    let mut n = name.to_lowercase();
    n.set_fqdn(true);
    n
}

/// Number of labels, `*` included (hickory's `num_labels` leaves out a leading `*`).
fn label_count(name: &Name) -> usize {
    name.iter().count()
}

/// Whether the leftmost label is `*`: the owner is a wildcard (RFC 4592 §2.1.1).
fn is_wildcard(name: &Name) -> bool {
    name.iter().next() == Some(b"*".as_slice())
}

/// Whether any label is `*`. A `*` that isn't leftmost is a literal label, but it can make a
/// wildcard exist as an empty non-terminal (`a.*.example.` makes `*.example.` exist), so the
/// compiler treats both alike.
fn has_star_label(name: &Name) -> bool {
    name.iter().any(|l| l == b"*")
}

/// One RRset: the records of one type at one name, in insertion order, with one TTL (RFC 2181 §5.2:
/// "the TTLs of all RRs in an RRSet must be the same").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RrSet {
    pub ttl: u32,
    pub records: Vec<RData>,
}

type Node = BTreeMap<RecordType, RrSet>;

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

    fn validate(&self) -> Result<(), ZoneError> {
        for (field, value) in [
            ("soa_ttl", self.ttl),
            ("refresh", self.refresh),
            ("retry", self.retry),
            ("expire", self.expire),
            ("negative_ttl", self.minimum),
        ] {
            check_ttl(field, value)?;
        }
        Ok(())
    }

    fn normalized(&self) -> Self {
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

/// One change of an [`ZoneSet::apply_batch`].
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

/// What a mutation changed, for the fast-path compiler. All names are lowercased and absolute.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    /// Names whose answers may have changed: the owners changed, their ancestors up to the apex
    /// (empty non-terminal status may have changed), and every name whose CNAME chain leads to
    /// one of those.
    pub names: BTreeSet<Name>,
    /// Zones whose SOA record changed (every mutation bumps the serial).
    pub zones_soa: BTreeSet<Name>,
    /// Zones to recompile whole: created, deleted, or whose wildcard or delegation status changed.
    pub zones_full: BTreeSet<Name>,
}

impl Dirty {
    pub fn merge(&mut self, other: Dirty) {
        self.names.extend(other.names);
        self.zones_soa.extend(other.zones_soa);
        self.zones_full.extend(other.zones_full);
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.zones_soa.is_empty() && self.zones_full.is_empty()
    }
}

/// Why a mutation was refused. [`ZoneError::field`] names the request field at fault, so the API
/// can point at it. Names are kept as text: they are only for the message, and keep the error small.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    #[error("no zone {apex}")]
    UnknownZone { apex: String },
    #[error("zone {apex} already exists")]
    ZoneExists { apex: String },
    #[error("{name} is not inside zone {apex}")]
    NotInZone { name: String, apex: String },
    #[error("{field} {value} is out of range 0..=2147483647")]
    TtlOutOfRange { field: &'static str, value: u32 },
    #[error("record type {rtype} is not supported")]
    UnsupportedType { rtype: RecordType },
    #[error("the SOA record is changed through the zone's SOA settings, not as a record set")]
    SoaRecord,
    #[error("record {index} is of type {found}, not {expected}")]
    TypeMismatch {
        index: usize,
        expected: RecordType,
        found: RecordType,
    },
    #[error("empty record list: delete the record set instead")]
    EmptyRecords,
    #[error("record {index} is a duplicate")]
    DuplicateRecord { index: usize },
    #[error("a CNAME record set holds exactly one record")]
    MultipleCnames,
    #[error("a CNAME can't be at the zone apex, which has SOA and NS")]
    CnameAtApex,
    #[error("{name} has {existing} records: a CNAME can't be added beside other data")]
    CnameBesideData { name: String, existing: RecordType },
    #[error("{name} has a CNAME: no other data can be added beside it")]
    DataBesideCname { name: String },
    #[error("a wildcard name can't own NS records")]
    WildcardNs,
    #[error("the apex NS set can't be deleted")]
    ApexNsRequired,
    #[error("no {rtype} record set at {name}")]
    NoSuchRrset { name: String, rtype: RecordType },
    #[error("a zone needs at least one name server")]
    NoNameServers,
    #[error("name server {index} is listed twice")]
    DuplicateNameServer { index: usize },
    #[error("empty change list")]
    EmptyBatch,
    #[error("change {index} is invalid")]
    Batch {
        index: usize,
        #[source]
        source: Box<ZoneError>,
    },
}

impl ZoneError {
    /// The JSON field of the request at fault, e.g. `"name"`, `"ttl"`, `"records[2]"`, `"type"`,
    /// or `"changes[3].ttl"` inside a batch.
    pub fn field(&self) -> String {
        match self {
            Self::UnknownZone { .. } => "zone".into(),
            Self::ZoneExists { .. } => "apex".into(),
            Self::NotInZone { .. } => "name".into(),
            Self::TtlOutOfRange { field, .. } => (*field).into(),
            Self::UnsupportedType { .. }
            | Self::SoaRecord
            | Self::CnameAtApex
            | Self::CnameBesideData { .. }
            | Self::DataBesideCname { .. }
            | Self::WildcardNs
            | Self::ApexNsRequired
            | Self::NoSuchRrset { .. } => "type".into(),
            Self::TypeMismatch { index, .. } | Self::DuplicateRecord { index } => {
                format!("records[{index}]")
            }
            Self::EmptyRecords => "records".into(),
            Self::MultipleCnames => "records[1]".into(),
            Self::NoNameServers => "ns".into(),
            Self::DuplicateNameServer { index } => format!("ns[{index}]"),
            Self::EmptyBatch => "changes".into(),
            Self::Batch { index, source } => format!("changes[{index}].{}", source.field()),
        }
    }
}

fn check_ttl(field: &'static str, value: u32) -> Result<(), ZoneError> {
    if value > MAX_TTL {
        return Err(ZoneError::TtlOutOfRange { field, value });
    }
    Ok(())
}

/// The zones served, keyed by apex.
#[derive(Clone, Debug, Default)]
pub struct ZoneSet {
    zones: BTreeMap<Name, Zone>,
}

impl ZoneSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// The zone whose apex is `apex` (any case).
    pub fn zone(&self, apex: &Name) -> Option<&Zone> {
        self.zones.get(&normalize(apex))
    }

    /// Every zone, in canonical order of the apex.
    pub fn zones(&self) -> impl Iterator<Item = &Zone> {
        self.zones.values()
    }

    pub fn len(&self) -> usize {
        self.zones.len()
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    /// The zone `name` belongs to: the one with the longest apex that is a suffix of `name`.
    pub fn find_zone(&self, name: &Name) -> Option<&Zone> {
        if self.zones.is_empty() {
            return None;
        }
        let name = normalize(name);
        (0..=label_count(&name))
            .rev()
            .find_map(|n| self.zones.get(&name.trim_to(n)))
    }

    /// Adds a zone with its SOA and apex NS set.
    pub fn create_zone(&mut self, spec: ZoneSpec) -> Result<Dirty, ZoneError> {
        if spec.ns.is_empty() {
            return Err(ZoneError::NoNameServers);
        }
        let zone = self.new_zone(&spec)?;
        Ok(self.insert_new(zone))
    }

    /// Adds a zone with all its RRsets at once, as saved (the store's load, a zone import): the
    /// serial is `spec.serial`, not bumped. The apex NS set comes from `spec.ns` or from an NS
    /// RRset at the apex in `rrsets`. Every RRset is validated as [`ZoneSet::set_rrset`] would;
    /// on error (`ZoneError::Batch` with the index into `rrsets`) nothing is added.
    pub fn load_zone(
        &mut self,
        spec: ZoneSpec,
        rrsets: Vec<(Name, RecordType, RrSet)>,
    ) -> Result<Dirty, ZoneError> {
        let mut zone = self.new_zone(&spec)?;
        for (index, (name, rtype, set)) in rrsets.into_iter().enumerate() {
            let wrap = |e| ZoneError::Batch {
                index,
                source: Box::new(e),
            };
            let name = zone.owner(&name).map_err(wrap)?;
            zone.check_set(&name, rtype, set.ttl, &set.records)
                .map_err(wrap)?;
            zone.put(&name, rtype, Some(set));
        }
        if zone.ns().is_none() {
            return Err(ZoneError::NoNameServers);
        }
        Ok(self.insert_new(zone))
    }

    /// A zone from `spec` (with its apex NS set if `spec.ns` isn't empty), validated.
    fn new_zone(&self, spec: &ZoneSpec) -> Result<Zone, ZoneError> {
        let apex = normalize(&spec.apex);
        if self.zones.contains_key(&apex) {
            return Err(ZoneError::ZoneExists {
                apex: apex.to_string(),
            });
        }
        spec.soa.validate()?;
        check_ttl("ns_ttl", spec.ns_ttl)?;
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
            soa: spec.soa.normalized(),
            serial: spec.serial,
            nodes: BTreeMap::new(),
            cname_owners: BTreeMap::new(),
            cuts: BTreeSet::new(),
            stars: BTreeSet::new(),
        };
        if !ns.is_empty() {
            let set = RrSet {
                ttl: spec.ns_ttl,
                records: ns,
            };
            zone.put(&apex, RecordType::NS, Some(set));
        }
        Ok(zone)
    }

    /// Adds a new, validated zone and says what that changes.
    fn insert_new(&mut self, zone: Zone) -> Dirty {
        let apex = zone.apex.clone();
        let mut dirty = self.names_shadowed_by(&apex);
        dirty.names.extend(zone.existing_names());
        dirty.zones_soa.insert(apex.clone());
        dirty.zones_full.insert(apex.clone());
        self.zones.insert(apex, zone);
        dirty
    }

    /// Takes a zone out as it is, without a [`Dirty`]: with [`ZoneSet::insert_zone`], for a
    /// caller that undoes its own change (the write path when the store commit fails).
    pub fn remove_zone(&mut self, apex: &Name) -> Option<Zone> {
        self.zones.remove(&normalize(apex))
    }

    /// Puts back a zone taken out by [`ZoneSet::remove_zone`] (or cloned from
    /// [`ZoneSet::zone`]), replacing any zone at the same apex, which is returned.
    pub fn insert_zone(&mut self, zone: Zone) -> Option<Zone> {
        self.zones.insert(zone.apex.clone(), zone)
    }

    /// Puts RRsets back to earlier values (`None`: absent) without validation or serial bump:
    /// undoes a mutation whose `(owner, type, value before)` the caller saved from
    /// [`Zone::rrset`]. Unknown zones and names outside the zone are skipped.
    pub fn restore_rrsets(&mut self, apex: &Name, before: Vec<(Name, RecordType, Option<RrSet>)>) {
        let Some(zone) = self.zones.get_mut(&normalize(apex)) else {
            return;
        };
        for (name, rtype, set) in before.into_iter().rev() {
            if let Ok(name) = zone.owner(&name) {
                zone.put(&name, rtype, set);
            }
        }
    }

    /// Sets a zone's serial as it was (undo); no effect on an unknown zone.
    pub fn set_serial(&mut self, apex: &Name, serial: u32) {
        if let Some(zone) = self.zones.get_mut(&normalize(apex)) {
            zone.serial = serial;
        }
    }

    /// Removes a zone. `Dirty::names` lists the names it served, for the compiler to drop, and
    /// those of a parent zone that it was hiding.
    pub fn delete_zone(&mut self, apex: &Name) -> Result<Dirty, ZoneError> {
        let apex = normalize(apex);
        let zone = self
            .zones
            .remove(&apex)
            .ok_or_else(|| ZoneError::UnknownZone {
                apex: apex.to_string(),
            })?;
        let mut dirty = self.names_shadowed_by(&apex);
        dirty.names.extend(zone.existing_names());
        dirty.zones_soa.insert(apex.clone());
        dirty.zones_full.insert(apex);
        Ok(dirty)
    }

    /// Names of enclosing zones at or below `apex`: they are answered by the zone at `apex` while
    /// it exists, so creating or deleting it changes their answers.
    fn names_shadowed_by(&self, apex: &Name) -> Dirty {
        let mut dirty = Dirty::default();
        for parent in self
            .zones
            .values()
            .filter(|z| z.apex != *apex && z.apex.zone_of_case(apex))
        {
            dirty
                .names
                .extend(parent.existing_names().filter(|n| apex.zone_of_case(n)));
            // A CNAME in the parent whose target is at or below `apex` stops following it once
            // `apex` is a zone of its own (and follows it again when it goes): recompile the
            // parent whole if it has any such CNAME.
            if parent
                .cname_owners
                .keys()
                .any(|target| apex.zone_of_case(target))
            {
                dirty.zones_full.insert(parent.apex.clone());
            }
        }
        dirty
    }

    /// Changes the SOA fields (not the serial, which is bumped).
    pub fn set_soa(&mut self, apex: &Name, soa: SoaParams) -> Result<Dirty, ZoneError> {
        let apex = normalize(apex);
        let zone = self
            .zones
            .get_mut(&apex)
            .ok_or_else(|| ZoneError::UnknownZone {
                apex: apex.to_string(),
            })?;
        soa.validate()?;
        zone.soa = soa.normalized();
        zone.bump_serial();
        let mut dirty = Dirty::default();
        dirty.names.insert(apex.clone());
        dirty.zones_soa.insert(apex);
        Ok(dirty)
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
    ) -> Result<Dirty, ZoneError> {
        self.mutate(
            apex,
            vec![Change::Set {
                name: name.clone(),
                rtype,
                ttl,
                records,
            }],
            false,
        )
    }

    /// Removes the RRset of `rtype` at `name`.
    pub fn delete_rrset(
        &mut self,
        apex: &Name,
        name: &Name,
        rtype: RecordType,
    ) -> Result<Dirty, ZoneError> {
        self.mutate(
            apex,
            vec![Change::Delete {
                name: name.clone(),
                rtype,
            }],
            false,
        )
    }

    /// Applies `changes` in order, all or none: each change is validated against the zone as the
    /// changes before it left it; on the first error the earlier ones are undone. One serial bump.
    pub fn apply_batch(&mut self, apex: &Name, changes: Vec<Change>) -> Result<Dirty, ZoneError> {
        if changes.is_empty() {
            return Err(ZoneError::EmptyBatch);
        }
        self.mutate(apex, changes, true)
    }

    fn mutate(
        &mut self,
        apex: &Name,
        changes: Vec<Change>,
        batch: bool,
    ) -> Result<Dirty, ZoneError> {
        let apex = normalize(apex);
        let zone = self
            .zones
            .get_mut(&apex)
            .ok_or_else(|| ZoneError::UnknownZone {
                apex: apex.to_string(),
            })?;
        let mut undo = Vec::with_capacity(changes.len());
        let mut dirty = Dirty::default();
        for (index, change) in changes.into_iter().enumerate() {
            match zone.apply(change, &mut dirty) {
                Ok(previous) => undo.push(previous),
                Err(e) => {
                    // Undo in reverse order: each `put` restores the RRset and the indexes.
                    for (name, rtype, previous) in undo.into_iter().rev() {
                        zone.put(&name, rtype, previous);
                    }
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
        }
        zone.bump_serial();
        dirty.zones_soa.insert(apex);
        Ok(dirty)
    }
}

/// One zone: SOA, apex NS set and the other RRsets by owner name.
#[derive(Clone, Debug)]
pub struct Zone {
    apex: Name,
    soa: SoaParams,
    serial: u32,
    /// Owner (lowercased, absolute) to its RRsets; the apex NS set lives here too. Never holds an
    /// empty node.
    nodes: BTreeMap<Name, Node>,
    /// CNAME target (lowercased) to the owners whose CNAME points at it: when the target's answer
    /// changes, so do theirs.
    cname_owners: BTreeMap<Name, BTreeSet<Name>>,
    /// Names below the apex that own NS: the zone cuts (delegations).
    cuts: BTreeSet<Name>,
    /// Owners with a `*` label (see [`has_star_label`]).
    stars: BTreeSet<Name>,
}

impl Zone {
    pub fn apex(&self) -> &Name {
        &self.apex
    }

    pub fn soa(&self) -> &SoaParams {
        &self.soa
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    fn soa_rdata(&self) -> RData {
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
        Record::from_rdata(self.apex.clone(), self.soa.ttl, self.soa_rdata())
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
        Record::from_rdata(self.apex.clone(), self.negative_ttl(), self.soa_rdata())
    }

    /// The apex NS set.
    pub fn ns(&self) -> Option<&RrSet> {
        self.rrset(&self.apex, RecordType::NS)
    }

    /// The RRset of `rtype` at `name` (any case). SOA is not stored as an RRset: see
    /// [`Zone::soa_record`].
    pub fn rrset(&self, name: &Name, rtype: RecordType) -> Option<&RrSet> {
        self.nodes.get(&normalize(name))?.get(&rtype)
    }

    /// Whether the zone has wildcards or delegations, which the fast path doesn't model: their
    /// negative answers must go to the fallback.
    pub fn has_wildcard_or_cut(&self) -> bool {
        !self.cuts.is_empty() || !self.stars.is_empty()
    }

    /// The delegation points (names below the apex that own NS).
    pub fn cuts(&self) -> impl Iterator<Item = &Name> {
        self.cuts.iter()
    }

    /// Every name that exists in the zone's authoritative data: owners with data and the empty
    /// non-terminals between them and the apex, leaving out names strictly below a zone cut (only
    /// glue lives there). Canonical order.
    pub fn existing_names(&self) -> impl Iterator<Item = Name> {
        let mut names = BTreeSet::new();
        for owner in self.nodes.keys() {
            if self.cut_above(owner).is_some_and(|cut| cut != *owner) {
                continue;
            }
            let mut n = owner.clone();
            while names.insert(n.clone()) && n != self.apex {
                n = n.base_name();
            }
        }
        names.into_iter()
    }

    /// Whether `name` (any case) is one of [`Zone::existing_names`]: it owns data or is an empty
    /// non-terminal, and is not strictly below a zone cut.
    pub fn name_exists(&self, name: &Name) -> bool {
        let name = normalize(name);
        self.apex.zone_of_case(&name)
            && self.exists(&name)
            && self.cut_above(&name).is_none_or(|cut| cut == name)
    }

    /// Owner names with data (no empty non-terminals), canonical order.
    pub fn owners(&self) -> impl Iterator<Item = &Name> {
        self.nodes.keys()
    }

    /// Number of owner names with data.
    pub fn name_count(&self) -> usize {
        self.nodes.len()
    }

    /// Number of RRsets, the SOA left out.
    pub fn rrset_count(&self) -> usize {
        self.nodes.values().map(BTreeMap::len).sum()
    }

    /// Number of records, the SOA left out.
    pub fn record_count(&self) -> usize {
        self.nodes
            .values()
            .flat_map(BTreeMap::values)
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
            .range(normalize(from)..)
            .flat_map(|(name, node)| {
                node.iter()
                    .map(move |(t, s)| (name.clone(), *t, s.ttl, s.records.as_slice()))
            })
    }

    fn bump_serial(&mut self) {
        // RFC 1982 serial arithmetic: adding 1 wraps modulo 2^32.
        self.serial = self.serial.wrapping_add(1);
    }

    /// Whether `name` owns data or has descendants that do (an empty non-terminal).
    fn exists(&self, name: &Name) -> bool {
        self.nodes.contains_key(name) || self.has_descendants(name)
    }

    /// Whether some owner is strictly below `name`. In canonical order the descendants of a name
    /// directly follow it, so the next key after `name` tells.
    fn has_descendants(&self, name: &Name) -> bool {
        self.nodes
            .range::<Name, _>((Bound::Excluded(name), Bound::Unbounded))
            .next()
            .is_some_and(|(k, _)| name.zone_of_case(k))
    }

    /// The topmost zone cut at or above `name` (lowercased, inside the zone), if any.
    ///
    /// RFC 1034 §4.3.2 step 3b: "If a match would take us out of the authoritative data, we have a
    /// referral." Walking down from the apex, the first cut met is the one that takes us out.
    fn cut_above(&self, name: &Name) -> Option<Name> {
        if self.cuts.is_empty() {
            return None;
        }
        let apex_labels = label_count(&self.apex);
        (apex_labels + 1..=label_count(name))
            .map(|n| name.trim_to(n))
            .find(|n| self.cuts.contains(n))
    }

    /// The closest encloser of `name` (RFC 4592 §3.3.1): the longest existing ancestor-or-self.
    fn closest_encloser(&self, name: &Name) -> Name {
        let mut n = name.clone();
        while n != self.apex && !self.exists(&n) {
            n = n.base_name();
        }
        n
    }

    /// Validates one change against the zone as it is now and applies it. Returns what undoes it.
    fn apply(
        &mut self,
        change: Change,
        dirty: &mut Dirty,
    ) -> Result<(Name, RecordType, Option<RrSet>), ZoneError> {
        let (name, rtype, new) = match change {
            Change::Set {
                name,
                rtype,
                ttl,
                records,
            } => {
                let name = self.owner(&name)?;
                self.check_set(&name, rtype, ttl, &records)?;
                (name, rtype, Some(RrSet { ttl, records }))
            }
            Change::Delete { name, rtype } => {
                let name = self.owner(&name)?;
                self.check_delete(&name, rtype)?;
                (name, rtype, None)
            }
        };
        let watch_wildcards = !self.stars.is_empty() || has_star_label(&name);
        let before = watch_wildcards.then(|| self.closest_encloser(&name));
        let had_wildcard_or_cut = self.has_wildcard_or_cut();
        let previous = self.put(&name, rtype, new);

        if (rtype == RecordType::NS && name != self.apex) || has_star_label(&name) {
            dirty.zones_full.insert(self.apex.clone());
        }
        if had_wildcard_or_cut != self.has_wildcard_or_cut() {
            dirty.zones_full.insert(self.apex.clone());
        }
        let mut roots: Vec<Name> = Vec::new();
        let mut n = name.clone();
        loop {
            roots.push(n.clone());
            if n == self.apex {
                break;
            }
            n = n.base_name();
        }
        // With wildcards, a name appearing or disappearing changes the closest encloser of the
        // names below it that don't exist, so their synthesized answers. They are only compiled
        // as CNAME targets: dirty the owners of CNAMEs pointing below the highest name whose
        // existence flipped.
        if let Some(before) = before {
            let after = self.closest_encloser(&name);
            if before != after {
                let top = label_count(&before).min(label_count(&after)) + 1;
                let flipped = name.trim_to(top);
                roots.extend(
                    self.cname_owners
                        .range(flipped.clone()..)
                        .take_while(|(t, _)| flipped.zone_of_case(t))
                        .map(|(t, _)| t.clone()),
                );
            }
        }
        self.dirty_closure(roots, &mut dirty.names);
        Ok((name, rtype, previous))
    }

    /// Adds `roots` and every name whose CNAME chain leads to one of them to `out`.
    fn dirty_closure(&self, roots: Vec<Name>, out: &mut BTreeSet<Name>) {
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
    fn owner(&self, name: &Name) -> Result<Name, ZoneError> {
        let name = normalize(name);
        if !self.apex.zone_of_case(&name) {
            return Err(ZoneError::NotInZone {
                name: name.to_string(),
                apex: self.apex.to_string(),
            });
        }
        Ok(name)
    }

    fn check_set(
        &self,
        name: &Name,
        rtype: RecordType,
        ttl: u32,
        records: &[RData],
    ) -> Result<(), ZoneError> {
        if rtype == RecordType::SOA {
            return Err(ZoneError::SoaRecord);
        }
        if !SUPPORTED_TYPES.contains(&rtype) {
            return Err(ZoneError::UnsupportedType { rtype });
        }
        check_ttl("ttl", ttl)?;
        if records.is_empty() {
            return Err(ZoneError::EmptyRecords);
        }
        for (index, r) in records.iter().enumerate() {
            if r.record_type() != rtype {
                return Err(ZoneError::TypeMismatch {
                    index,
                    expected: rtype,
                    found: r.record_type(),
                });
            }
            // RFC 2181 §5: an RRset is a set; the same record twice is a client mistake.
            if records[..index].contains(r) {
                return Err(ZoneError::DuplicateRecord { index });
            }
        }
        let node = self.nodes.get(name);
        if rtype == RecordType::CNAME {
            // RFC 1034 §3.6.2: "If a CNAME RR is present at a node, no other data should be
            // present"; the apex always has SOA and NS.
            if *name == self.apex {
                return Err(ZoneError::CnameAtApex);
            }
            // RFC 2181 §10.1: "there should only be one such [CNAME] record" per name.
            if records.len() > 1 {
                return Err(ZoneError::MultipleCnames);
            }
            if let Some(existing) = node.and_then(|n| n.keys().find(|t| **t != RecordType::CNAME)) {
                return Err(ZoneError::CnameBesideData {
                    name: name.to_string(),
                    existing: *existing,
                });
            }
        } else if node.is_some_and(|n| n.contains_key(&RecordType::CNAME)) {
            return Err(ZoneError::DataBesideCname {
                name: name.to_string(),
            });
        }
        // RFC 4592 §4.2: NS at a wildcard "has unclear semantics"; refuse it.
        if rtype == RecordType::NS && is_wildcard(name) {
            return Err(ZoneError::WildcardNs);
        }
        Ok(())
    }

    fn check_delete(&self, name: &Name, rtype: RecordType) -> Result<(), ZoneError> {
        if rtype == RecordType::SOA {
            return Err(ZoneError::SoaRecord);
        }
        if rtype == RecordType::NS && *name == self.apex {
            return Err(ZoneError::ApexNsRequired);
        }
        if !self.nodes.get(name).is_some_and(|n| n.contains_key(&rtype)) {
            return Err(ZoneError::NoSuchRrset {
                name: name.to_string(),
                rtype,
            });
        }
        Ok(())
    }

    /// Sets (`Some`) or removes (`None`) an RRset without validation, keeping the indexes
    /// (`cname_owners`, `cuts`, `stars`) in step. Returns the previous RRset.
    fn put(&mut self, name: &Name, rtype: RecordType, new: Option<RrSet>) -> Option<RrSet> {
        let previous = match new {
            Some(set) => self
                .nodes
                .entry(name.clone())
                .or_default()
                .insert(rtype, set),
            None => {
                let node = self.nodes.get_mut(name)?;
                let previous = node.remove(&rtype);
                if node.is_empty() {
                    self.nodes.remove(name);
                }
                previous
            }
        };
        if rtype == RecordType::CNAME {
            if let Some(target) = previous.as_ref().and_then(cname_target) {
                if let Some(owners) = self.cname_owners.get_mut(&target) {
                    owners.remove(name);
                    if owners.is_empty() {
                        self.cname_owners.remove(&target);
                    }
                }
            }
            if let Some(target) = self.rrset_lower(name, rtype).and_then(cname_target) {
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
        if has_star_label(name) {
            if self.nodes.contains_key(name) {
                self.stars.insert(name.clone());
            } else {
                self.stars.remove(name);
            }
        }
        previous
    }

    /// [`Zone::rrset`] for a name already lowercased.
    fn rrset_lower(&self, name: &Name, rtype: RecordType) -> Option<&RrSet> {
        self.nodes.get(name)?.get(&rtype)
    }
}

/// The (lowercased) target of a CNAME RRset.
fn cname_target(set: &RrSet) -> Option<Name> {
    match set.records.first() {
        Some(RData::CNAME(c)) => Some(normalize(&c.0)),
        _ => None,
    }
}
