//! The authoritative data model and the one decision procedure, [`ZoneSet::resolve`].
//!
//! Both the fallback server and the fast-path compiler ask [`ZoneSet::resolve`] what the answer to
//! a question is, so the two can only disagree through a serialisation bug. Everything else here
//! keeps the data in a shape that makes `resolve` simple and the compiler's job incremental:
//!
//! - Names are stored lowercased and fully qualified, in `BTreeMap`s keyed by [`CanonName`], which
//!   orders them in the canonical name order (RFC 4034 §6.1). In that order a name's descendants
//!   directly follow it, so "does this name have descendants" (is it an empty non-terminal?) is one
//!   range lookup, and so is "which key is the closest ancestor of this name".
//! - Every mutation validates first and changes nothing on error, bumps the SOA serial, and
//!   returns a [`Dirty`]: the names whose answers may have changed, which is what the compiler
//!   recompiles.
//!
//! What is deliberately not here: DNSSEC, DNAME (RFC 6672), additional-section processing beyond
//! referral glue (RFC 1034 allows leaving it out; it keeps [`Dirty`] exact).

use std::{
    borrow::Cow,
    cmp::Ordering,
    collections::{BTreeMap, BTreeSet},
    fmt,
    hash::{Hash, Hasher},
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
    // Most names given are in this form already (stored names, names from the store): a copy
    // costs less than lowercasing byte by byte into a new name.
    if is_normalized(name) {
        return name.clone();
    }
    let mut n = name.to_lowercase();
    n.set_fqdn(true);
    n
}

/// Whether `name` is in the form [`normalize`] gives.
fn is_normalized(name: &Name) -> bool {
    name.is_fqdn() && !name.iter().flatten().any(u8::is_ascii_uppercase)
}

/// A name in the form of [`normalize`] (lowercased, absolute): the key of every map and set here.
///
/// Why not `Name` itself: hickory's `Ord` and `PartialEq` for `Name` compare case-insensitively
/// and build a `Label` (a copy) of every label of both names on every comparison. With names as
/// map keys that was most of the start-up time (about 65% of the CPU of loading a store and
/// compiling every name). These names are lowercase already, so comparing the raw label bytes
/// from the rightmost label on gives the same order for much less: slices compare bytewise with a
/// shorter prefix first, which is RFC 4034 §6.1 canonical order ("the absence of a octet sorts
/// before a zero value octet"; a name sorts before its descendants, which directly follow it).
///
/// Built by [`CanonName::new`] and [`CanonName::from_name`], or from parts of another one (which
/// keep the form); the public API still takes and returns `Name`.
#[derive(Clone)]
struct CanonName(Name);

impl CanonName {
    /// `name` (any case, absolute or not) in key form.
    fn new(name: &Name) -> Self {
        Self(normalize(name))
    }

    /// [`CanonName::new`] that keeps `name` as it is when it is in key form already.
    fn from_name(name: Name) -> Self {
        if is_normalized(&name) {
            Self(name)
        } else {
            Self::new(&name)
        }
    }

    fn name(&self) -> &Name {
        &self.0
    }

    fn into_name(self) -> Name {
        self.0
    }

    /// Number of labels, `*` included (hickory's `num_labels` leaves out a leading `*`).
    fn label_count(&self) -> usize {
        self.0.iter().len()
    }

    /// Whether `self` is `ancestor` or below it.
    fn is_at_or_below(&self, ancestor: &CanonName) -> bool {
        ancestor.0.zone_of_case(&self.0)
    }

    /// The rightmost `n` labels (all of them if there are fewer). Like `Name::trim_to` without
    /// its intermediate vectors.
    fn trim_to(&self, n: usize) -> Self {
        let labels = self.0.iter();
        let skip = labels.len().saturating_sub(n);
        let mut out = Name::root();
        for label in labels.skip(skip) {
            out = out
                .append_label(label)
                .expect("a suffix of a valid name is valid");
        }
        Self(out)
    }

    /// The parent name (the root's is the root).
    fn parent(&self) -> Self {
        self.trim_to(self.label_count().saturating_sub(1))
    }

    /// Number of rightmost labels `self` and `other` share: the labels of their closest common
    /// ancestor.
    fn common_labels(&self, other: &CanonName) -> usize {
        self.0
            .iter()
            .rev()
            .zip(other.0.iter().rev())
            .take_while(|(a, b)| a == b)
            .count()
    }

    /// The key of `keys` that is the closest ancestor-or-self of `self`, if any. `at_or_before`
    /// is the last key at or before a name in canonical order, i.e. a `range(..=name)` lookup.
    ///
    /// Why this is right: every ancestor of a name sorts before it, and a name's descendants
    /// directly follow it. So if the last key `k` at or before `self` is an ancestor-or-self, it is
    /// the closest. If not, any ancestor key `a` of `self` sorts before `k`, and with `self` in
    /// `a`'s subtree so is `k`: `a` is an ancestor of both, so at or above their closest common
    /// ancestor, which is the next name to look from. Usually one lookup, with no name built.
    fn closest_key<'a, T>(
        &self,
        at_or_before: impl Fn(&CanonName) -> Option<(&'a CanonName, T)>,
    ) -> Option<(&'a CanonName, T)> {
        let mut probe = Cow::Borrowed(self);
        loop {
            let (key, value) = at_or_before(&probe)?;
            if probe.is_at_or_below(key) {
                return Some((key, value));
            }
            let common = probe.common_labels(key);
            // `key` <= `probe` and not its ancestor-or-self: they differ below `common` labels.
            debug_assert!(common < probe.label_count(), "{key} vs {probe}");
            probe = Cow::Owned(probe.trim_to(common));
        }
    }
}

impl PartialEq for CanonName {
    fn eq(&self, other: &Self) -> bool {
        self.0.iter().eq(other.0.iter())
    }
}

impl Eq for CanonName {}

impl Ord for CanonName {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.iter().rev().cmp(other.0.iter().rev())
    }
}

impl PartialOrd for CanonName {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Hash for CanonName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Each label hashes with its length, so the label boundaries count, as in `eq`.
        for label in self.0.iter() {
            label.hash(state);
        }
    }
}

impl fmt::Debug for CanonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl fmt::Display for CanonName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A set of `Name`s (the form of [`Dirty`]) from names in canonical order: collecting sorted
/// input costs one hickory comparison or two per name, where inserting one by one costs a log.
fn name_set(names: impl IntoIterator<Item = CanonName>) -> BTreeSet<Name> {
    names.into_iter().map(CanonName::into_name).collect()
}

/// Adds `names` to `set`; [`BTreeSet::append`] merges two sets in one pass.
fn add_names(set: &mut BTreeSet<Name>, names: impl IntoIterator<Item = CanonName>) {
    set.append(&mut name_set(names));
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

/// The RRsets at one name, ordered by type, each type at most once.
///
/// A sorted `Vec`, not a `BTreeMap`: most names have one RRset or two, and a `BTreeMap`
/// allocates a whole leaf (about 400 bytes) even for one, which was a third of the daemon's memory
/// per record and a good part of the store's load time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Node(Vec<(RecordType, RrSet)>);

impl Node {
    fn find(&self, rtype: RecordType) -> Result<usize, usize> {
        self.0.binary_search_by(|(t, _)| t.cmp(&rtype))
    }

    fn get(&self, rtype: RecordType) -> Option<&RrSet> {
        self.find(rtype).ok().map(|i| &self.0[i].1)
    }

    fn contains(&self, rtype: RecordType) -> bool {
        self.find(rtype).is_ok()
    }

    /// Sets the RRset of `rtype`; returns the one it replaces.
    fn insert(&mut self, rtype: RecordType, set: RrSet) -> Option<RrSet> {
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

    fn remove(&mut self, rtype: RecordType) -> Option<RrSet> {
        let i = self.find(rtype).ok()?;
        let (_, set) = self.0.remove(i);
        self.0.shrink_to_fit();
        Some(set)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn types(&self) -> impl Iterator<Item = RecordType> + '_ {
        self.0.iter().map(|(t, _)| *t)
    }

    fn sets(&self) -> impl Iterator<Item = &RrSet> {
        self.0.iter().map(|(_, s)| s)
    }

    fn iter(&self) -> impl Iterator<Item = (RecordType, &RrSet)> {
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

/// The largest DNS message: what TCP's 16-bit length prefix allows.
const MAX_MESSAGE: usize = 65535;

/// Why a mutation was refused. [`ZoneError::field`] names the request field at fault, so the API
/// can point at it. Names are kept as text: they are only for the message, and keep the error small.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    #[error("no zone {apex}")]
    UnknownZone { apex: String },
    #[error("zone {apex} already exists")]
    ZoneExists { apex: String },
    #[error("the root zone can't be served: it would make this server answer for every name")]
    RootZone,
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
    /// An RRset that could never be served: the whole set must fit one DNS message of 65,535
    /// bytes (the most TCP's length prefix allows) with the question. Counted: the header (12),
    /// the question (the owner in wire form, uncompressed, + type and class, 4), and for each
    /// record its owner as a compression pointer (2), type, class, TTL and RDLENGTH (10), and
    /// its RDATA in wire form as stored (names in it uncompressed). Not counted: an OPT record
    /// or other sections, so an answer near the limit may still be truncated over UDP. The
    /// store's encoding (16-bit counts and lengths) holds whatever passes.
    #[error("the record set does not fit one DNS message: it needs at least {size} bytes with its question, and the limit is {MAX_MESSAGE}")]
    RrsetTooLarge { size: usize },
    #[error("record {index} can't be written in wire form: {reason}")]
    Unencodable { index: usize, reason: String },
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
            Self::ZoneExists { .. } | Self::RootZone => "apex".into(),
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
            Self::EmptyRecords | Self::RrsetTooLarge { .. } => "records".into(),
            Self::Unencodable { index, .. } => format!("records[{index}]"),
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
    zones: BTreeMap<CanonName, Zone>,
}

impl ZoneSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// The zone whose apex is `apex` (any case).
    pub fn zone(&self, apex: &Name) -> Option<&Zone> {
        self.zones.get(&CanonName::new(apex))
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
        self.find_zone_of(&CanonName::new(name))
    }

    /// [`ZoneSet::find_zone`] for a name in key form.
    fn find_zone_of(&self, name: &CanonName) -> Option<&Zone> {
        name.closest_key(|n| self.zones.range(..=n).next_back())
            .map(|(_, zone)| zone)
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
        zone.load_rrsets(rrsets)?;
        if zone.ns().is_none() {
            return Err(ZoneError::NoNameServers);
        }
        Ok(self.insert_new(zone))
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
        add_names(&mut dirty.names, zone.existing());
        dirty.zones_soa.insert(apex.name().clone());
        dirty.zones_full.insert(apex.name().clone());
        self.zones.insert(apex, zone);
        dirty
    }

    /// Takes a zone out as it is, without a [`Dirty`]: with [`ZoneSet::insert_zone`], for a
    /// caller that undoes its own change (the write path when the store commit fails).
    pub fn remove_zone(&mut self, apex: &Name) -> Option<Zone> {
        self.zones.remove(&CanonName::new(apex))
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
        let Some(zone) = self.zones.get_mut(&CanonName::new(apex)) else {
            return;
        };
        for (name, rtype, set) in before.into_iter().rev() {
            if let Ok(name) = zone.owner(name) {
                zone.put(&name, rtype, set);
            }
        }
    }

    /// Sets a zone's serial as it was (undo); no effect on an unknown zone.
    pub fn set_serial(&mut self, apex: &Name, serial: u32) {
        if let Some(zone) = self.zones.get_mut(&CanonName::new(apex)) {
            zone.serial = serial;
        }
    }

    /// Removes a zone. `Dirty::names` lists the names it served, for the compiler to drop, and
    /// those of a parent zone that it was hiding.
    pub fn delete_zone(&mut self, apex: &Name) -> Result<Dirty, ZoneError> {
        let apex = CanonName::new(apex);
        let zone = self
            .zones
            .remove(&apex)
            .ok_or_else(|| ZoneError::UnknownZone {
                apex: apex.to_string(),
            })?;
        let mut dirty = self.names_shadowed_by(&apex);
        add_names(&mut dirty.names, zone.existing());
        dirty.zones_soa.insert(apex.name().clone());
        dirty.zones_full.insert(apex.into_name());
        Ok(dirty)
    }

    /// Names of enclosing zones at or below `apex`: they are answered by the zone at `apex` while
    /// it exists, so creating or deleting it changes their answers.
    fn names_shadowed_by(&self, apex: &CanonName) -> Dirty {
        let mut dirty = Dirty::default();
        for parent in self
            .zones
            .values()
            .filter(|z| z.apex != *apex && apex.is_at_or_below(&z.apex))
        {
            // The names at or below `apex` directly follow it.
            let existing = parent.existing();
            let start = existing.partition_point(|n| n < apex);
            add_names(
                &mut dirty.names,
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
                .range(apex..)
                .next()
                .is_some_and(|(target, _)| target.is_at_or_below(apex))
            {
                dirty.zones_full.insert(parent.apex.name().clone());
            }
        }
        dirty
    }

    /// The zone at `apex`, for a change; `UnknownZone` if there is none.
    fn zone_mut(&mut self, apex: &CanonName) -> Result<&mut Zone, ZoneError> {
        self.zones
            .get_mut(apex)
            .ok_or_else(|| ZoneError::UnknownZone {
                apex: apex.to_string(),
            })
    }

    /// Changes the SOA fields (not the serial, which is bumped).
    pub fn set_soa(&mut self, apex: &Name, soa: SoaParams) -> Result<Dirty, ZoneError> {
        let apex = CanonName::new(apex);
        let zone = self.zone_mut(&apex)?;
        soa.validate()?;
        zone.soa = soa.normalized();
        zone.bump_serial();
        let mut dirty = Dirty::default();
        dirty.names.insert(apex.name().clone());
        dirty.zones_soa.insert(apex.into_name());
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
        let apex = CanonName::new(apex);
        let zone = self.zone_mut(&apex)?;
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
        dirty.zones_soa.insert(apex.into_name());
        Ok(dirty)
    }
}

/// One zone: SOA, apex NS set and the other RRsets by owner name.
#[derive(Clone, Debug)]
pub struct Zone {
    apex: CanonName,
    soa: SoaParams,
    serial: u32,
    /// Owner to its RRsets; the apex NS set lives here too. Never holds an empty node.
    nodes: BTreeMap<CanonName, Node>,
    /// CNAME target to the owners whose CNAME points at it: when the target's answer changes, so
    /// do theirs.
    cname_owners: BTreeMap<CanonName, BTreeSet<CanonName>>,
    /// Names below the apex that own NS: the zone cuts (delegations).
    cuts: BTreeSet<CanonName>,
    /// Owners with a `*` label (see [`has_star_label`]).
    stars: BTreeSet<CanonName>,
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
    fn existing(&self) -> Vec<CanonName> {
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
        self.nodes.values().map(Node::len).sum()
    }

    /// Number of records, the SOA left out.
    pub fn record_count(&self) -> usize {
        self.nodes
            .values()
            .flat_map(Node::sets)
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

    fn bump_serial(&mut self) {
        // RFC 1982 serial arithmetic: adding 1 wraps modulo 2^32.
        self.serial = self.serial.wrapping_add(1);
    }

    /// Whether `name` owns data or has descendants that do (an empty non-terminal).
    fn exists(&self, name: &CanonName) -> bool {
        self.nodes.contains_key(name) || self.has_descendants(name)
    }

    /// Whether some owner is strictly below `name`. In canonical order the descendants of a name
    /// directly follow it, so the next key after `name` tells.
    fn has_descendants(&self, name: &CanonName) -> bool {
        self.nodes
            .range((Bound::Excluded(name), Bound::Unbounded))
            .next()
            .is_some_and(|(k, _)| k.is_at_or_below(name))
    }

    /// The topmost zone cut at or above `name` (inside the zone), if any.
    ///
    /// RFC 1034 §4.3.2 step 3b: "If a match would take us out of the authoritative data, we have a
    /// referral." Walking down from the apex, the first cut met is the one that takes us out.
    fn cut_above(&self, name: &CanonName) -> Option<&CanonName> {
        if self.cuts.is_empty() {
            return None;
        }
        let closest = |n: &CanonName| {
            n.closest_key(|n| self.cuts.range(..=n).next_back().map(|c| (c, ())))
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
    fn closest_encloser(&self, name: &CanonName) -> CanonName {
        let mut n = name.clone();
        while n != self.apex && !self.exists(&n) {
            n = n.parent();
        }
        n
    }

    /// Validates one change against the zone as it is now and applies it. Returns what undoes it.
    fn apply(
        &mut self,
        change: Change,
        dirty: &mut Dirty,
    ) -> Result<(CanonName, RecordType, Option<RrSet>), ZoneError> {
        let (name, rtype, new) = match change {
            Change::Set {
                name,
                rtype,
                ttl,
                records,
            } => {
                let name = self.owner(name)?;
                self.check_set(&name, rtype, ttl, &records)?;
                (name, rtype, Some(RrSet { ttl, records }))
            }
            Change::Delete { name, rtype } => {
                let name = self.owner(name)?;
                self.check_delete(&name, rtype)?;
                (name, rtype, None)
            }
        };
        let watch_wildcards = !self.stars.is_empty() || has_star_label(name.name());
        let before = watch_wildcards.then(|| self.closest_encloser(&name));
        let had_wildcard_or_cut = self.has_wildcard_or_cut();
        let previous = self.put(&name, rtype, new);

        if (rtype == RecordType::NS && name != self.apex) || has_star_label(name.name()) {
            dirty.zones_full.insert(self.apex.name().clone());
        }
        if had_wildcard_or_cut != self.has_wildcard_or_cut() {
            dirty.zones_full.insert(self.apex.name().clone());
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
                        .range(&flipped..)
                        .take_while(|(t, _)| t.is_at_or_below(&flipped))
                        .map(|(t, _)| t.clone()),
                );
            }
        }
        self.dirty_closure(roots, &mut dirty.names);
        Ok((name, rtype, previous))
    }

    /// Adds `roots` and every name whose CNAME chain leads to one of them to `out`.
    fn dirty_closure(&self, roots: Vec<CanonName>, out: &mut BTreeSet<Name>) {
        let mut seen = BTreeSet::new();
        let mut queue = roots;
        while let Some(n) = queue.pop() {
            if let Some(owners) = self.cname_owners.get(&n) {
                queue.extend(owners.iter().filter(|o| !seen.contains(*o)).cloned());
            }
            seen.insert(n);
        }
        add_names(out, seen);
    }

    /// Normalises an owner name given to a mutation and checks that it is in the zone.
    fn owner(&self, name: Name) -> Result<CanonName, ZoneError> {
        let name = CanonName::from_name(name);
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
    /// for the insert, each a descent of a large tree); instead the RRsets are sorted by owner
    /// (stable, so those of one owner keep their order), each owner's are checked against the
    /// ones before them, and the map is built at once from the sorted nodes. An RRset's checks
    /// only depend on the RRsets of its own owner before it, so the first failure found this way
    /// is the one the sequential order meets first.
    fn load_rrsets(&mut self, rrsets: Vec<(Name, RecordType, RrSet)>) -> Result<(), ZoneError> {
        let mut first_error: Option<(usize, ZoneError)> = None;
        let mut fail = |index: usize, e: ZoneError| {
            if first_error.as_ref().is_none_or(|(i, _)| index < *i) {
                first_error = Some((index, e));
            }
        };
        let mut sets = Vec::with_capacity(rrsets.len());
        for (index, (name, rtype, set)) in rrsets.into_iter().enumerate() {
            match self.owner(name) {
                Ok(name) => sets.push((name, index, rtype, set)),
                Err(e) => fail(index, e),
            }
        }
        sets.sort_by(|a, b| a.0.cmp(&b.0));

        let mut before = std::mem::take(&mut self.nodes);
        let mut nodes: Vec<(CanonName, Node)> = Vec::with_capacity(sets.len() + before.len());
        let mut sets = sets.into_iter().peekable();
        while let Some((name, index, rtype, set)) = sets.next() {
            let mut node = before.remove(&name).unwrap_or_default();
            let mut group = Some((index, rtype, set));
            while let Some((index, rtype, set)) = group.take() {
                let at = (!node.is_empty()).then_some(&node);
                match check_set_at(&self.apex, &name, at, rtype, set.ttl, &set.records) {
                    Ok(()) => {
                        node.insert(rtype, set);
                    }
                    // This owner's later RRsets come later in `rrsets` too: their own errors,
                    // if any, don't matter.
                    Err(e) => fail(index, e),
                }
                group = sets
                    .next_if(|next| next.0 == name)
                    .map(|(_, index, rtype, set)| (index, rtype, set));
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
        // Sorted and distinct but for the nodes from before (the apex NS of `spec.ns`): the sort
        // in `collect` puts those in place in about one pass, then the tree is built at once.
        nodes.extend(before);
        self.nodes = nodes.into_iter().collect();
        let indexed: Vec<(CanonName, RecordType)> = self
            .nodes
            .iter()
            .flat_map(|(name, node)| {
                let star = has_star_label(name.name());
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
    fn put(&mut self, name: &CanonName, rtype: RecordType, new: Option<RrSet>) -> Option<RrSet> {
        let previous = match new {
            Some(set) => self
                .nodes
                .entry(name.clone())
                .or_default()
                .insert(rtype, set),
            None => {
                let node = self.nodes.get_mut(name)?;
                let previous = node.remove(rtype);
                if node.is_empty() {
                    self.nodes.remove(name);
                }
                previous
            }
        };
        self.reindex(name, rtype, previous.as_ref());
        previous
    }

    /// Brings the indexes (`cname_owners`, `cuts`, `stars`) in step with a change of the RRset
    /// of `rtype` at `name` from `previous`.
    fn reindex(&mut self, name: &CanonName, rtype: RecordType, previous: Option<&RrSet>) {
        if rtype == RecordType::CNAME {
            if let Some(target) = previous.and_then(cname_target) {
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
        if has_star_label(name.name()) {
            if self.nodes.contains_key(name) {
                self.stars.insert(name.clone());
            } else {
                self.stars.remove(name);
            }
        }
    }

    /// [`Zone::rrset`] for a name in key form.
    fn rrset_lower(&self, name: &CanonName, rtype: RecordType) -> Option<&RrSet> {
        self.nodes.get(name)?.get(rtype)
    }
}

/// The checks of [`Zone::check_set`], given the zone's apex and the node at `name` as it is
/// (`None`: no data there).
fn check_set_at(
    apex: &CanonName,
    name: &CanonName,
    node: Option<&Node>,
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
    // The whole RRset must fit one DNS message (see `ZoneError::RrsetTooLarge` for what is
    // counted). Checked before the per-record checks, which take time quadratic in the count;
    // counting stops at the limit, so a huge set is refused without encoding all of it.
    {
        use hickory_proto::serialize::binary::BinEncodable as _;
        let owner: usize = name.name().iter().map(|l| l.len() + 1).sum::<usize>() + 1;
        let mut size = 12 + owner + 4;
        for (index, r) in records.iter().enumerate() {
            let rdata = match r {
                RData::A(_) => 4,
                RData::AAAA(_) => 16,
                _ => r
                    .to_bytes()
                    .map_err(|e| ZoneError::Unencodable {
                        index,
                        reason: e.to_string(),
                    })?
                    .len(),
            };
            size += 2 + 10 + rdata;
            if size > MAX_MESSAGE {
                // The rest count at least their fixed 12 bytes each.
                let rest = records.len() - index - 1;
                return Err(ZoneError::RrsetTooLarge {
                    size: size + rest * 12,
                });
            }
        }
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
    if rtype == RecordType::CNAME {
        // RFC 1034 §3.6.2: "If a CNAME RR is present at a node, no other data should be
        // present"; the apex always has SOA and NS.
        if name == apex {
            return Err(ZoneError::CnameAtApex);
        }
        // RFC 2181 §10.1: "there should only be one such [CNAME] record" per name.
        if records.len() > 1 {
            return Err(ZoneError::MultipleCnames);
        }
        if let Some(existing) = node.and_then(|n| n.types().find(|t| *t != RecordType::CNAME)) {
            return Err(ZoneError::CnameBesideData {
                name: name.to_string(),
                existing,
            });
        }
    } else if node.is_some_and(|n| n.contains(RecordType::CNAME)) {
        return Err(ZoneError::DataBesideCname {
            name: name.to_string(),
        });
    }
    // RFC 4592 §4.2: NS at a wildcard "has unclear semantics"; refuse it.
    if rtype == RecordType::NS && is_wildcard(name.name()) {
        return Err(ZoneError::WildcardNs);
    }
    Ok(())
}

/// The target of a CNAME RRset, in key form.
fn cname_target(set: &RrSet) -> Option<CanonName> {
    match set.records.first() {
        Some(RData::CNAME(c)) => Some(CanonName::new(&c.0)),
        _ => None,
    }
}
