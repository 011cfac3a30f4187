//! The zone data: RRsets by owner, the SOA settings, and the indexes that keep `resolve` and the
//! compiler's "what changed" cheap.
//!
//! The maps are persistent (`imbl`): cloning a zone or the whole zone set costs a few reference
//! counts, and changing the clone copies only the paths it touches. That is what lets a writer
//! build the next version of the zones while readers keep answering from the current one.

use std::ops::Bound;

use hickory_proto::{
    rr::{rdata::SOA, Name, RData, Record, RecordType},
    serialize::binary::{BinDecoder, BinEncodable, BinEncoder, Restrict},
};
use imbl::{OrdMap, OrdSet};
use tracing::error;

use super::{
    name::{normalize, CanonName},
    validate::check_ttl,
    TtlField, ZoneError, DEFAULT_NEGATIVE_TTL, DEFAULT_NS_TTL, DEFAULT_SOA_TTL,
};

/// One RRset: the records of one type at one name, in insertion order, with one TTL (RFC 2181 §5.2:
/// "the TTLs of all RRs in an RRSet must be the same").
///
/// What changes take and the accessors give; the zone itself keeps its RRsets in wire form (see
/// [`Node`]) and decodes one when asked for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RrSet {
    pub ttl: u32,
    pub records: Vec<RData>,
}

/// One RRset in the form a [`Node`] holds it: `type (u16) | ttl (u32) | length of the records
/// (u16) | records`, each record `length (u16) | RDATA`, big-endian, RDATA in uncompressed wire
/// form as the store keeps it.
///
/// Built only by [`WireSet::encode`], which checks that the bytes read back as the records given,
/// so that what the zone answers now is what it answers after a restart, and reading a node's
/// records again can't fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct WireSet(Vec<u8>);

/// Bytes before the records of an RRset in a [`Node`].
const SET_HEADER: usize = 8;

impl WireSet {
    pub(super) fn encode(rtype: RecordType, set: &RrSet) -> Result<Self, ZoneError> {
        let mut out = Vec::with_capacity(SET_HEADER + set.records.len() * 8);
        out.extend_from_slice(&u16::from(rtype).to_be_bytes());
        out.extend_from_slice(&set.ttl.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        // hickory's encoder writes from the start of the buffer it is given, whatever is there.
        let mut rdata = Vec::new();
        for (index, r) in set.records.iter().enumerate() {
            let unencodable = |reason: String| ZoneError::Unencodable { index, reason };
            rdata.clear();
            r.emit(&mut BinEncoder::new(&mut rdata))
                .map_err(|e| unencodable(e.to_string()))?;
            let len = u16::try_from(rdata.len())
                .map_err(|_| unencodable(format!("{} bytes of RDATA", rdata.len())))?;
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&rdata);
            // Read back alike, or as a record hickory writes as the same bytes: a name given
            // without its final dot reads back with it, and means the same.
            match read_rdata(rtype, &rdata) {
                Ok(back) if back == *r || back.to_bytes().is_ok_and(|b| b == rdata) => {}
                Ok(back) => return Err(unencodable(format!("it reads back as {back}"))),
                Err(e) => return Err(unencodable(format!("it doesn't read back: {e}"))),
            }
        }
        let body = u16::try_from(out.len() - SET_HEADER).map_err(|_| ZoneError::RrsetTooLarge {
            size: out.len() - SET_HEADER,
        })?;
        out[6..8].copy_from_slice(&body.to_be_bytes());
        Ok(Self(out))
    }
}

impl WireSet {
    /// An RRset as the store keeps it: `records` is `length (u16) | RDATA` for each record. Gives
    /// the records too, read, for the checks a change passes.
    pub(super) fn from_stored(
        rtype: RecordType,
        set: &StoredSet,
    ) -> Result<(Self, RrSet), ZoneError> {
        let body = u16::try_from(set.records.len()).map_err(|_| ZoneError::RrsetTooLarge {
            size: set.records.len(),
        })?;
        let mut out = Vec::with_capacity(SET_HEADER + set.records.len());
        out.extend_from_slice(&u16::from(rtype).to_be_bytes());
        out.extend_from_slice(&set.ttl.to_be_bytes());
        out.extend_from_slice(&body.to_be_bytes());
        out.extend_from_slice(&set.records);
        let b = &set.records;
        let mut records = Vec::with_capacity(1);
        let mut at = 0;
        while at < b.len() {
            let index = records.len();
            let unreadable = |reason: String| ZoneError::Unreadable { index, reason };
            let len = b
                .get(at..at + 2)
                .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
                .ok_or_else(|| unreadable("cut short".into()))?;
            let rd = b
                .get(at + 2..at + 2 + len)
                .ok_or_else(|| unreadable("cut short".into()))?;
            records.push(read_rdata(rtype, rd).map_err(unreadable)?);
            at += 2 + len;
        }
        Ok((
            Self(out),
            RrSet {
                ttl: set.ttl,
                records,
            },
        ))
    }
}

/// An RRset as the store keeps it, for [`ZoneSet::add_loaded_zone`]: the TTL, and the records
/// as `length (u16) | RDATA` each, RDATA in wire form. The zone keeps these bytes as they are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSet {
    pub ttl: u32,
    pub records: Vec<u8>,
}

/// One RDATA in wire form, all of it: the reader the store uses too.
pub(crate) fn read_rdata(rtype: RecordType, rd: &[u8]) -> Result<RData, String> {
    let len = u16::try_from(rd.len()).map_err(|_| format!("{} bytes of RDATA", rd.len()))?;
    let mut dec = BinDecoder::new(rd);
    let r = RData::read(&mut dec, rtype, Restrict::new(len)).map_err(|e| e.to_string())?;
    if dec.index() != rd.len() {
        return Err(format!("{} bytes left over", rd.len() - dec.index()));
    }
    Ok(r)
}

/// One RRset of a [`Node`], borrowed: its records are decoded when asked for.
#[derive(Clone, Copy, Debug)]
pub(super) struct SetRef<'a> {
    pub(super) rtype: RecordType,
    pub(super) ttl: u32,
    /// The records, each `length (u16) | RDATA`.
    body: &'a [u8],
}

impl<'a> SetRef<'a> {
    /// Each record's RDATA in wire form.
    fn wire(&self) -> impl Iterator<Item = &'a [u8]> {
        let mut rest = self.body;
        std::iter::from_fn(move || {
            let (len, after) = rest.split_first_chunk::<2>()?;
            // `encode` and `from_stored` checked every length: the cut never shortens a record,
            // it only keeps a bad length from panicking.
            let len = usize::from(u16::from_be_bytes(*len)).min(after.len());
            let (rd, after) = after.split_at(len);
            rest = after;
            Some(rd)
        })
    }

    /// The records, decoded.
    pub(super) fn records(&self) -> impl Iterator<Item = RData> + 'a {
        let rtype = self.rtype;
        self.wire().filter_map(move |rd| {
            // `WireSet::encode` read every record back before the node took it: this can't fail.
            read_rdata(rtype, rd)
                .inspect_err(|e| error!(%rtype, "a record of the zone doesn't read back: {e}"))
                .ok()
        })
    }

    pub(super) fn first(&self) -> Option<RData> {
        self.records().next()
    }

    pub(super) fn len(&self) -> usize {
        self.wire().count()
    }

    pub(super) fn to_rrset(self) -> RrSet {
        RrSet {
            ttl: self.ttl,
            records: self.records().collect(),
        }
    }
}

/// The RRsets at one name, ordered by type, each type at most once, as [`WireSet`]s one after
/// the other in one allocation.
///
/// One allocation a name, in wire form: hickory's `RData` is about 190 bytes whatever the record
/// (the size of its largest variant), and a `Vec` of them in a `Vec` of RRsets behind an `Arc`
/// was three allocations and some 300 bytes for one A record, most of the daemon's memory. A
/// node is never changed in place: a change builds the next one (names have an RRset or two).
///
/// Not behind an `Arc`: a name with one A record is 14 bytes here, and an `Arc`'s two counts
/// would put it in the allocator's next size class (48 bytes instead of 32). The cost is on
/// writes: the copy of a map leaf a change makes copies its nodes' bytes, a few dozen bytes
/// each, where it would copy pointers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Node(Box<[u8]>);

impl Node {
    pub(super) fn iter(&self) -> impl Iterator<Item = SetRef<'_>> {
        let mut rest = &self.0[..];
        std::iter::from_fn(move || {
            let (head, after) = rest.split_first_chunk::<SET_HEADER>()?;
            let len = usize::from(u16::from_be_bytes([head[6], head[7]]));
            let (body, after) = after.split_at(len);
            rest = after;
            Some(SetRef {
                rtype: RecordType::from(u16::from_be_bytes([head[0], head[1]])),
                ttl: u32::from_be_bytes([head[2], head[3], head[4], head[5]]),
                body,
            })
        })
    }

    /// Each RRset's bytes as a [`WireSet`] has them.
    fn wire_sets(&self) -> impl Iterator<Item = (RecordType, &[u8])> {
        let mut rest = &self.0[..];
        std::iter::from_fn(move || {
            let len = SET_HEADER + usize::from(u16::from_be_bytes([*rest.get(6)?, rest[7]]));
            let (set, after) = rest.split_at(len);
            rest = after;
            Some((RecordType::from(u16::from_be_bytes([set[0], set[1]])), set))
        })
    }

    pub(super) fn get(&self, rtype: RecordType) -> Option<SetRef<'_>> {
        self.iter().find(|s| s.rtype == rtype)
    }

    pub(super) fn contains(&self, rtype: RecordType) -> bool {
        self.types().any(|t| t == rtype)
    }

    /// This node with the RRset of `rtype` set to `set`, or removed (`None`).
    pub(super) fn with(&self, rtype: RecordType, set: Option<&WireSet>) -> Self {
        let mut bytes = Vec::with_capacity(self.0.len() + set.map_or(0, |s| s.0.len()));
        let mut placed = set.is_none();
        for (t, wire) in self.wire_sets() {
            if !placed && t >= rtype {
                bytes.extend_from_slice(&set.expect("placed when none").0);
                placed = true;
            }
            if t != rtype {
                bytes.extend_from_slice(wire);
            }
        }
        if let (false, Some(set)) = (placed, set) {
            bytes.extend_from_slice(&set.0);
        }
        Self(bytes.into_boxed_slice())
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.iter().count()
    }

    pub(super) fn types(&self) -> impl Iterator<Item = RecordType> + '_ {
        self.iter().map(|s| s.rtype)
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

/// An owner for [`super::ZoneSet::add_loaded_zone`], in the zone's key form: built from the labels the
/// store keeps without a `Name` in between (a million of them at a start), or from a `Name`.
pub struct LoadedOwner(pub(super) CanonName);

impl LoadedOwner {
    /// The owner whose labels, leftmost first, are `labels`: each 1 to 63 bytes, 255 bytes in
    /// all in wire form at most (the store checks this as it reads them).
    pub fn from_labels(labels: &[&[u8]]) -> Self {
        Self(CanonName::from_labels(labels))
    }
}

impl From<Name> for LoadedOwner {
    fn from(name: Name) -> Self {
        Self(CanonName::from_name(name))
    }
}

/// A name of [`Zone::existing_keys`].
pub struct ExistingName(CanonName);

impl ExistingName {
    pub fn name(&self) -> Name {
        self.0.name()
    }
}

/// One zone: SOA, apex NS set and the other RRsets by owner name.
#[derive(Clone, Debug)]
pub struct Zone {
    pub(super) apex: CanonName,
    /// The apex as a `Name`, for [`Zone::apex`] and the records the zone gives.
    pub(super) apex_name: Name,
    pub(super) soa: SoaParams,
    pub(super) serial: u32,
    /// Owner to its RRsets; the apex NS set lives here too. Never holds an empty node.
    /// Leaves are shared between versions of the zone: a change copies the path of the map it
    /// touches (and the nodes of the leaf at its end), not the rest.
    pub(super) nodes: OrdMap<CanonName, Node>,
    /// CNAME target to the owners whose CNAME points at it: when the target's answer changes, so
    /// do theirs.
    pub(super) cname_owners: OrdMap<CanonName, OrdSet<CanonName>>,
    /// Names below the apex that own NS: the zone cuts (delegations).
    pub(super) cuts: OrdSet<CanonName>,
    /// Owners with a `*` label (see [`CanonName::has_star_label`]).
    pub(super) stars: OrdSet<CanonName>,
}

impl Zone {
    pub fn apex(&self) -> &Name {
        &self.apex_name
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
        Record::from_rdata(self.apex_name.clone(), self.soa.ttl, self.soa_rdata())
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
            self.apex_name.clone(),
            self.negative_ttl(),
            self.soa_rdata(),
        )
    }

    /// The apex NS set.
    pub fn ns(&self) -> Option<RrSet> {
        self.rrset_lower(&self.apex, RecordType::NS)
            .map(SetRef::to_rrset)
    }

    /// The RRset of `rtype` at `name` (any case). SOA is not stored as an RRset: see
    /// [`Zone::soa_record`].
    pub fn rrset(&self, name: &Name, rtype: RecordType) -> Option<RrSet> {
        self.rrset_lower(&CanonName::new(name), rtype)
            .map(SetRef::to_rrset)
    }

    /// Whether `name` (any case) has an RRset of `rtype`: [`Zone::rrset`] without decoding it.
    pub fn has_rrset(&self, name: &Name, rtype: RecordType) -> bool {
        self.rrset_lower(&CanonName::new(name), rtype).is_some()
    }

    /// Whether the zone has wildcards or delegations, which the fast path doesn't model: their
    /// negative answers must go to the fallback.
    pub fn has_wildcard_or_cut(&self) -> bool {
        !self.cuts.is_empty() || !self.stars.is_empty()
    }

    /// The delegation points (names below the apex that own NS).
    pub fn cuts(&self) -> impl Iterator<Item = Name> + '_ {
        self.cuts.iter().map(CanonName::name)
    }

    /// Every name that exists in the zone's authoritative data: owners with data and the empty
    /// non-terminals between them and the apex, leaving out names strictly below a zone cut (only
    /// glue lives there). Canonical order.
    pub fn existing_names(&self) -> impl Iterator<Item = Name> {
        self.existing().into_iter().map(CanonName::into_name)
    }

    /// [`Zone::existing_names`], each as the zone keeps it: the `Name` is built when asked for,
    /// so that the compiler's threads build them, not the one that lists them.
    pub fn existing_keys(&self) -> Vec<ExistingName> {
        self.existing().into_iter().map(ExistingName).collect()
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
    pub fn owners(&self) -> impl Iterator<Item = Name> + '_ {
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
            .flat_map(|n| n.iter())
            .map(|s| s.len())
            .sum()
    }

    /// Every RRset (apex NS included, SOA not: see [`Zone::soa_record`]) as
    /// `(owner, type, ttl, records)`, by owner in canonical order, then by type.
    pub fn records(&self) -> impl Iterator<Item = (Name, RecordType, u32, Vec<RData>)> + '_ {
        self.records_from(&Name::root())
    }

    /// Like [`Zone::records`], from the first owner at or after `from` in canonical order: the
    /// cursor of a paged listing is the owner after the last one returned.
    pub fn records_from(
        &self,
        from: &Name,
    ) -> impl Iterator<Item = (Name, RecordType, u32, Vec<RData>)> + '_ {
        self.nodes
            .range(CanonName::new(from)..)
            .flat_map(|(name, node)| {
                node.iter()
                    .map(move |s| (name.name(), s.rtype, s.ttl, s.records().collect()))
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
    pub(super) fn rrset_lower(&self, name: &CanonName, rtype: RecordType) -> Option<SetRef<'_>> {
        self.nodes.get(name)?.get(rtype)
    }
}
