//! Compiles what [`ZoneSet::resolve`] answers into the XDP program's map values, and keeps the
//! maps in step with the zones.
//!
//! The compiler never decides an answer itself: for each name it asks `resolve` for A, AAAA and
//! CNAME and serialises the answer section it gets. What the program's layout can't express (a
//! CNAME chain, NODATA after a CNAME, a referral, a wildcard, an answer too big for a value) is
//! marked "pass", and the program sends those queries to the fallback, which asks `resolve` too.

use std::collections::{BTreeSet, HashSet};

use dns_common::{
    csum::{at_offset, sum16},
    pass_bit, seg_max, NameKey, NameValue, Seg, ZoneValue, BLOB_LARGE, BLOB_SMALL, CLASS_IN,
    KEY_NAME_LEN, SEG_A, SEG_AAAA, SEG_CNAME, SEG_CNAME_PREFIX, SOA_BLOB, TYPE_SOA, ZONE_NEG_PASS,
};
use hickory_proto::{
    op::ResponseCode,
    rr::{Name, RData, Record, RecordType},
};

use crate::{
    maps::{FastPath, MapWriteError, NameBatcher, NameEntry},
    progress::Reporter,
    zone::{ChangeSet, ExistingName, ResolutionKind, Zone, ZoneSet},
};

/// Offset of the question name in a DNS message: compression pointers in the blobs point here.
const QNAME_OFFSET: usize = dns_common::DNS_HEADER_LEN;

/// The wire form of a name as stored (labels as they are, root label last).
pub fn name_wire(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 1);
    for label in name.iter() {
        out.push(label.len() as u8);
        out.extend_from_slice(label);
    }
    out.push(0);
    out
}

/// The map key of a name, `None` if its wire form is longer than the key.
pub fn name_key(name: &Name) -> Option<NameKey> {
    NameKey::from_wire(&name_wire(name))
}

/// Serialises one record: owner as a compression pointer, then type, class, TTL and RDATA.
/// `None` for record types the fast path doesn't hold.
fn rr_wire(owner_ptr: usize, record: &Record) -> Option<Vec<u8>> {
    let rdata = match record.data() {
        RData::A(a) => a.0.octets().to_vec(),
        RData::AAAA(a) => a.0.octets().to_vec(),
        RData::CNAME(c) => name_wire(&c.0),
        _ => return None,
    };
    if owner_ptr > 0x3fff {
        return None;
    }
    let mut out = Vec::with_capacity(12 + rdata.len());
    out.extend_from_slice(&(0xc000 | owner_ptr as u16).to_be_bytes());
    out.extend_from_slice(&u16::from(record.record_type()).to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    out.extend_from_slice(&record.ttl().to_be_bytes());
    out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    out.extend_from_slice(&rdata);
    Some(out)
}

/// What `resolve` said for one (name, type), in the shapes the program can serve.
#[derive(Debug, PartialEq)]
enum Shape {
    /// NOERROR with no answer records and the zone's SOA in authority.
    Nodata,
    /// Records owned by the name itself, after an optional CNAME owned by the name whose target's
    /// records follow.
    Answer {
        cname: Option<Box<Record>>,
        records: Vec<Record>,
    },
}

fn shape(
    zone: &Zone,
    name: &Name,
    qtype: RecordType,
    res: &crate::zone::Resolution,
) -> Option<Shape> {
    if !res.aa || !res.additional.is_empty() || res.rcode != ResponseCode::NoError {
        return None;
    }
    match res.kind {
        ResolutionKind::Nodata => {
            // The zone's own negative SOA, which the program adds from ZONES: same type, owner
            // (the stored, lowercase apex: raw labels compare, hickory's case-insensitive
            // comparison of whole records cost a fifth of a full compile) and TTL.
            let nodata = res.answers.is_empty()
                && match res.authority.as_slice() {
                    [soa] => {
                        soa.record_type() == RecordType::SOA
                            && soa.ttl() == zone.negative_ttl()
                            && soa.name().iter().eq(zone.apex().iter())
                    }
                    _ => false,
                };
            nodata.then_some(Shape::Nodata)
        }
        ResolutionKind::Answer => {
            if !res.authority.is_empty() || res.answers.is_empty() {
                return None;
            }
            let first = &res.answers[0];
            // A CNAME owned by the name is the prefix, also when it is the whole answer to a
            // CNAME query: then the answer is the prefix alone, the same bytes the A and AAAA
            // answers start with.
            let (cname, rest) = if first.record_type() == RecordType::CNAME
                && (qtype != RecordType::CNAME || res.answers.len() == 1)
            {
                (Some(Box::new(first.clone())), &res.answers[1..])
            } else {
                (None, &res.answers[..])
            };
            if let Some(c) = &cname {
                if !same_name(c.name(), name) {
                    return None;
                }
                let RData::CNAME(target) = c.data() else {
                    return None;
                };
                // One link only: the target's own records of the asked type, no further CNAME.
                if rest
                    .iter()
                    .any(|r| r.record_type() != qtype || !same_name(r.name(), &target.0))
                {
                    return None;
                }
            } else if rest
                .iter()
                .any(|r| r.record_type() != qtype || !same_name(r.name(), name))
            {
                return None;
            }
            Some(Shape::Answer {
                cname,
                records: rest.to_vec(),
            })
        }
        _ => None,
    }
}

/// `a == b` (case-insensitive), with the raw labels compared first: the answers' owners are
/// the very names compiled, spelled alike, and hickory's comparison builds a `Label` of every
/// label of both names (a few percent of a full compile's CPU).
fn same_name(a: &Name, b: &Name) -> bool {
    (a.is_fqdn() == b.is_fqdn() && a.iter().eq(b.iter())) || a == b
}

/// The compiled value, before it is placed in a small or large map value.
#[derive(Default, Debug)]
struct Draft {
    pass_mask: u8,
    /// The CNAME record bytes (prefix) and each type's record bytes, with counts.
    prefix: Vec<u8>,
    prefix_count: u16,
    typed: [(Vec<u8>, u16); 4],
}

fn draft(zones: &ZoneSet, zone: &Zone, name: &Name, wire_len: usize) -> Draft {
    let mut d = Draft::default();
    let answer_off = QNAME_OFFSET + wire_len + 4;
    let mut prefix: Option<Vec<u8>> = None;
    let types = [RecordType::A, RecordType::AAAA, RecordType::CNAME];
    let resolved = zones.resolve_types(name, types);
    for ((seg, qtype), res) in [SEG_A, SEG_AAAA, SEG_CNAME]
        .into_iter()
        .zip(types)
        .zip(resolved)
    {
        let Some(sh) = shape(zone, name, qtype, &res) else {
            d.pass_mask |= pass_bit(seg);
            continue;
        };
        let Shape::Answer { cname, records } = sh else {
            continue; // NODATA: count 0
        };
        let (this_prefix, owner_ptr) = match &cname {
            Some(c) => match rr_wire(QNAME_OFFSET, c) {
                // The target's records point at the target name inside the CNAME's RDATA.
                Some(bytes) => (bytes, answer_off + 12),
                None => {
                    d.pass_mask |= pass_bit(seg);
                    continue;
                }
            },
            None => (Vec::new(), QNAME_OFFSET),
        };
        // Every type at a name shares one prefix: a CNAME, or nothing.
        match &prefix {
            None => prefix = Some(this_prefix),
            Some(p) if *p == this_prefix => {}
            Some(_) => {
                d.pass_mask |= pass_bit(seg);
                continue;
            }
        }
        let mut bytes = Vec::new();
        let mut ok = true;
        for r in &records {
            match rr_wire(owner_ptr, r) {
                Some(b) => bytes.extend_from_slice(&b),
                None => ok = false,
            }
        }
        if !ok {
            d.pass_mask |= pass_bit(seg);
            continue;
        }
        d.typed[seg] = (bytes, records.len() as u16);
    }
    // A CNAME query at a CNAME name is answered by the prefix alone; elsewhere it is NODATA.
    d.prefix = prefix.unwrap_or_default();
    d.prefix_count = u16::from(!d.prefix.is_empty());
    d
}

/// Lays a draft out in a value of `N` blob bytes: prefix, then A, then AAAA. `None` if it
/// doesn't fit the program's segment limits.
fn layout<const N: usize>(d: &Draft, apex_len: u8) -> Option<NameValue<N>> {
    let mut v = NameValue::<N>::zeroed();
    v.apex_len = apex_len;
    v.pass_mask = d.pass_mask;
    let max = seg_max(N);
    let mut off = 0usize;
    let mut place = |v: &mut NameValue<N>, seg: usize, bytes: &[u8], count: u16, odd: bool| {
        if bytes.is_empty() {
            v.segs[seg] = Seg {
                off: 0,
                len: 0,
                count,
                sum: 0,
            };
            return true;
        }
        if off >= max || bytes.len() > max || off + bytes.len() > N {
            return false;
        }
        v.blob[off..off + bytes.len()].copy_from_slice(bytes);
        v.segs[seg] = Seg {
            off: off as u16,
            len: bytes.len() as u16,
            count,
            // The program swaps the sum again if the answer section starts at an odd offset.
            sum: at_offset(sum16(bytes), odd),
        };
        off += bytes.len();
        true
    };
    if !place(&mut v, SEG_CNAME_PREFIX, &d.prefix, d.prefix_count, false) {
        return None;
    }
    // Type segments follow the prefix in the response.
    let odd = d.prefix.len() % 2 == 1;
    for seg in [SEG_A, SEG_AAAA, SEG_CNAME] {
        if d.pass_mask & pass_bit(seg) != 0 {
            continue;
        }
        let (bytes, count) = &d.typed[seg];
        if !place(&mut v, seg, bytes, *count, odd) {
            return None;
        }
    }
    Some(v)
}

/// Compiles one existing name. `None` if the name is too long for the fast path (it passes up).
pub fn compile_name(zones: &ZoneSet, zone: &Zone, name: &Name) -> Option<(NameKey, NameEntry)> {
    let wire = name_wire(name);
    let key = NameKey::from_wire(&wire)?;
    let apex_len = name_wire(zone.apex()).len() as u8;
    let mut d = draft(zones, zone, name, wire.len());
    if let Some(v) = layout::<BLOB_SMALL>(&d, apex_len) {
        return Some((key, NameEntry::Small(v)));
    }
    if let Some(v) = layout::<BLOB_LARGE>(&d, apex_len) {
        return Some((key, NameEntry::Large(Box::new(v))));
    }
    // Too big for any value: the fallback answers A and AAAA here.
    d.pass_mask |= pass_bit(SEG_A) | pass_bit(SEG_AAAA);
    layout::<BLOB_LARGE>(&d, apex_len).map(|v| (key, NameEntry::Large(Box::new(v))))
}

/// Compiles a zone's map value: its negative-answer SOA and flags.
pub fn compile_zone(zone: &Zone) -> Option<(NameKey, ZoneValue)> {
    let key = name_key(zone.apex())?;
    let soa = zone.negative_soa();
    let RData::SOA(s) = soa.data() else {
        return None;
    };
    let mut rdata = name_wire(s.mname());
    rdata.extend_from_slice(&name_wire(s.rname()));
    for n in [
        s.serial(),
        s.refresh() as u32,
        s.retry() as u32,
        s.expire() as u32,
        s.minimum(),
    ] {
        rdata.extend_from_slice(&n.to_be_bytes());
    }
    let mut bytes = vec![0u8, 0]; // owner pointer, written by the program
    bytes.extend_from_slice(&TYPE_SOA.to_be_bytes());
    bytes.extend_from_slice(&CLASS_IN.to_be_bytes());
    bytes.extend_from_slice(&soa.ttl().to_be_bytes());
    bytes.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
    bytes.extend_from_slice(&rdata);
    if bytes.len() > SOA_BLOB {
        return None;
    }
    let mut v = ZoneValue::zeroed();
    v.flags = if zone.has_wildcard_or_cut() {
        ZONE_NEG_PASS
    } else {
        0
    };
    v.soa_len = bytes.len() as u16;
    v.soa_sum = sum16(&bytes);
    v.soa[..bytes.len()].copy_from_slice(&bytes);
    Some((key, v))
}

/// Where compiled answers go: the XDP program's maps ([`FastPath`]) in the daemon; the engine's
/// tests use one that fails on demand.
pub trait MapWriter: Send + 'static {
    fn set_name(&mut self, key: &NameKey, entry: &NameEntry) -> Result<(), MapWriteError>;
    /// [`MapWriter::set_name`] for each of many distinct names, in order.
    fn set_names(&mut self, entries: &[(NameKey, NameEntry)]) -> Result<(), MapWriteError> {
        entries.iter().try_for_each(|(k, e)| self.set_name(k, e))
    }
    /// A hint that about `n` more names are coming.
    fn reserve_names(&mut self, _n: usize) {}
    /// Writes of names that other threads may make (see [`NameBatcher`]); `None`: every name
    /// goes through [`MapWriter::set_names`].
    fn name_batcher(&self) -> Option<NameBatcher> {
        None
    }
    /// Takes note of names a [`MapWriter::name_batcher`] wrote.
    fn names_written(&mut self, entries: &[(NameKey, NameEntry)]) -> Result<(), MapWriteError> {
        self.set_names(entries)
    }
    fn remove_name(&mut self, key: &NameKey) -> Result<(), MapWriteError>;
    fn set_zone(&mut self, key: &NameKey, value: &ZoneValue) -> Result<(), MapWriteError>;
    fn remove_zone(&mut self, key: &NameKey) -> Result<(), MapWriteError>;
    /// Every name key in the maps.
    fn name_keys(&self) -> Vec<NameKey>;
    /// Every zone key in the maps.
    fn zone_keys(&self) -> Vec<NameKey>;
    /// Sends every query to the fallback: for when the maps can't be trusted to hold the data.
    fn disable(&mut self) -> Result<(), MapWriteError>;
}

impl MapWriter for FastPath {
    fn set_name(&mut self, key: &NameKey, entry: &NameEntry) -> Result<(), MapWriteError> {
        FastPath::set_name(self, key, entry)
    }

    fn set_names(&mut self, entries: &[(NameKey, NameEntry)]) -> Result<(), MapWriteError> {
        FastPath::set_names(self, entries)
    }

    fn reserve_names(&mut self, n: usize) {
        FastPath::reserve_names(self, n)
    }

    fn name_batcher(&self) -> Option<NameBatcher> {
        FastPath::name_batcher(self)
    }

    fn names_written(&mut self, entries: &[(NameKey, NameEntry)]) -> Result<(), MapWriteError> {
        FastPath::names_written(self, entries)
    }

    fn remove_name(&mut self, key: &NameKey) -> Result<(), MapWriteError> {
        FastPath::remove_name(self, key)
    }

    fn set_zone(&mut self, key: &NameKey, value: &ZoneValue) -> Result<(), MapWriteError> {
        FastPath::set_zone(self, key, value)
    }

    fn remove_zone(&mut self, key: &NameKey) -> Result<(), MapWriteError> {
        FastPath::remove_zone(self, key)
    }

    fn name_keys(&self) -> Vec<NameKey> {
        FastPath::name_keys(self)
    }

    fn zone_keys(&self) -> Vec<NameKey> {
        FastPath::zone_keys(self)
    }

    fn disable(&mut self) -> Result<(), MapWriteError> {
        let mut cfg = self.config()?;
        cfg.enabled = 0;
        self.set_config(cfg)
    }
}

/// What a sync did, for logs and the API.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SyncReport {
    pub names_written: usize,
    pub names_removed: usize,
    pub zones_written: usize,
    pub zones_removed: usize,
}

/// Brings the maps in line with `zones` for what `changes` names.
pub fn sync(
    fast: &mut impl MapWriter,
    zones: &ZoneSet,
    changes: &ChangeSet,
) -> Result<SyncReport, MapWriteError> {
    sync_with(fast, zones, changes, &Reporter::silent())
}

/// [`sync`], reporting the names of each zone compiled whole (a zone created or replaced: a
/// zone-file import) to `progress` (stage "filling the maps for a zone").
pub fn sync_with(
    fast: &mut impl MapWriter,
    zones: &ZoneSet,
    changes: &ChangeSet,
    progress: &Reporter,
) -> Result<SyncReport, MapWriteError> {
    let mut report = SyncReport::default();
    for apex in &changes.zones_full {
        sync_zone_full(fast, zones, apex, &mut report, progress)?;
    }
    for apex in changes.zones_soa.difference(&changes.zones_full) {
        if let Some(zone) = zones.zone(apex) {
            if let Some((k, v)) = compile_zone(zone) {
                fast.set_zone(&k, &v)?;
                report.zones_written += 1;
            }
        }
    }
    for name in &changes.names {
        let Some(key) = name_key(name) else {
            continue;
        };
        match zones.find_zone(name) {
            Some(zone) if changes.zones_full.contains(zone.apex()) => {}
            Some(zone) if zone.name_exists(name) => {
                if let Some((k, e)) = compile_name(zones, zone, name) {
                    fast.set_name(&k, &e)?;
                    report.names_written += 1;
                }
            }
            _ => {
                fast.remove_name(&key)?;
                report.names_removed += 1;
            }
        }
    }
    Ok(report)
}

fn sync_zone_full(
    fast: &mut impl MapWriter,
    zones: &ZoneSet,
    apex: &Name,
    report: &mut SyncReport,
    progress: &Reporter,
) -> Result<(), MapWriteError> {
    let apex_key = name_key(apex);
    let in_zone = |k: &NameKey| apex_key.is_some_and(|a| key_is_under(k, &a));
    let mut keep = BTreeSet::new();
    if let Some(zone) = zones.zone(apex) {
        if let Some((k, v)) = compile_zone(zone) {
            fast.set_zone(&k, &v)?;
            report.zones_written += 1;
        }
        // Counting the names first is one cheap pass next to compiling each; a silent reporter
        // skips it.
        let total = progress
            .is_enabled()
            .then(|| zone.existing_names().count() as u64);
        let mut progress = progress.start("filling the maps for a zone", total);
        for name in zone.existing_names() {
            progress.add(1);
            if let Some((k, e)) = compile_name(zones, zone, &name) {
                fast.set_name(&k, &e)?;
                keep.insert(k.name);
                report.names_written += 1;
            }
        }
        progress.finish();
    } else if let Some(k) = apex_key {
        fast.remove_zone(&k)?;
        report.zones_removed += 1;
    }
    // Names of this zone that are gone, but not names of a zone nested below it.
    for k in fast.name_keys() {
        if in_zone(&k) && !keep.contains(&k.name) {
            let owner = key_name(&k).and_then(|n| zones.find_zone(&n).map(|z| z.apex().clone()));
            if owner.is_none_or(|z| &z == apex) {
                fast.remove_name(&k)?;
                report.names_removed += 1;
            }
        }
    }
    Ok(())
}

/// The name a key holds (lowercase).
pub fn key_name(k: &NameKey) -> Option<Name> {
    let start = k.name.iter().position(|b| *b != 0)?;
    let mut labels = Vec::new();
    let mut pos = start;
    while pos < KEY_NAME_LEN {
        let l = k.name[pos] as usize;
        if l == 0 {
            break;
        }
        labels.push(k.name.get(pos + 1..pos + 1 + l)?.to_vec());
        pos += l + 1;
    }
    Name::from_labels(labels).ok()
}

/// Is the name in `k` equal to or below the name in `apex`? (Both right-aligned keys.)
fn key_is_under(k: &NameKey, apex: &NameKey) -> bool {
    let a_len = KEY_NAME_LEN
        - apex
            .name
            .iter()
            .position(|b| *b != 0)
            .unwrap_or(KEY_NAME_LEN - 1);
    let k_start = k
        .name
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(KEY_NAME_LEN - 1);
    let k_len = KEY_NAME_LEN - k_start;
    if k_len < a_len || k.name[KEY_NAME_LEN - a_len..] != apex.name[KEY_NAME_LEN - a_len..] {
        return false;
    }
    if k_len == a_len {
        return true;
    }
    // The match must start at a label boundary of k.
    let mut pos = k_start;
    while pos < KEY_NAME_LEN {
        if pos == KEY_NAME_LEN - a_len {
            return true;
        }
        let l = k.name[pos] as usize;
        if l == 0 {
            return false;
        }
        pos += l + 1;
    }
    false
}

/// Makes the maps hold exactly what `zones` compiles to: every zone recompiled, every key not
/// belonging to a served name or zone removed. Used at start-up over maps that may be pinned.
pub fn full_sync(fast: &mut impl MapWriter, zones: &ZoneSet) -> Result<SyncReport, MapWriteError> {
    full_sync_with(fast, zones, &Reporter::silent())
}

/// [`full_sync`], reporting names compiled to `progress` (stage "filling the maps").
///
/// Compiling a name (three `resolve`s) and inserting it into the kernel's hash tables each cost
/// more than the rest, so the names are compiled on as many threads as there are CPUs, and each
/// thread writes what it compiled (in batches, one syscall a map for each) where the writer can
/// do that from other threads ([`MapWriter::name_batcher`]); this thread writes each zone's
/// value before any of its names, then keeps the writer's account of the names, in the order
/// one thread would have written them, and writes those a thread could not.
pub fn full_sync_with(
    fast: &mut impl MapWriter,
    zones: &ZoneSet,
    progress: &Reporter,
) -> Result<SyncReport, MapWriteError> {
    // The names of each zone, listed once for every compiling thread.
    let lists: Vec<(&Zone, Vec<ExistingName>)> =
        zones.zones().map(|z| (z, z.existing_keys())).collect();
    let total: usize = lists.iter().map(|(_, names)| names.len()).sum();
    let jobs: Vec<(&Zone, &[ExistingName])> = lists
        .iter()
        .flat_map(|(zone, names)| names.chunks(COMPILE_BATCH).map(move |c| (*zone, c)))
        .collect();
    let mut progress = progress.start("filling the maps", Some(total as u64));
    let mut report = SyncReport::default();
    // What the maps held before (nothing, unless they were pinned by an earlier run), less what
    // is written now: what is left is stale. A set of the names written instead would be the
    // size of the zones (a hundred bytes a name) on every start.
    let mut stale: HashSet<NameKey> = fast.name_keys().into_iter().collect();
    fast.reserve_names(total);
    let mut zone_keys = BTreeSet::new();
    // Every zone's value before the names: the compiling threads may write any zone's names.
    for (zone, _) in &lists {
        if let Some((k, v)) = compile_zone(zone) {
            fast.set_zone(&k, &v)?;
            zone_keys.insert(k.name);
            report.zones_written += 1;
        }
    }
    let batcher = fast.name_batcher();
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, MAX_COMPILERS);
    std::thread::scope(|scope| {
        // Thread `t` compiles jobs `t`, `t + threads`, ... and hands them over in that order; the
        // writer takes job `j` from thread `j % threads`. If a write fails, dropping the
        // receivers stops the compilers at their next hand-over.
        let receivers: Vec<_> = (0..threads)
            .map(|t| {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Compiled>(2);
                let jobs = &jobs;
                let batcher = batcher.as_ref();
                scope.spawn(move || {
                    for (zone, names) in jobs.iter().skip(t).step_by(threads) {
                        let entries: Vec<_> = names
                            .iter()
                            .filter_map(|name| compile_name(zones, zone, &name.name()))
                            .collect();
                        let written = batcher.is_some_and(|b| b.write(&entries));
                        let compiled = Compiled {
                            count: names.len(),
                            entries,
                            written,
                        };
                        if tx.send(compiled).is_err() {
                            return;
                        }
                    }
                });
                rx
            })
            .collect();
        for j in 0..jobs.len() {
            // A compiler only stops early when its receiver is gone, or by panicking (which
            // the scope passes on).
            let Ok(Compiled {
                count,
                entries,
                written,
            }) = receivers[j % threads].recv()
            else {
                break;
            };
            if written {
                fast.names_written(&entries)?;
            } else {
                fast.set_names(&entries)?;
            }
            if !stale.is_empty() {
                for (k, _) in &entries {
                    stale.remove(k);
                }
            }
            report.names_written += entries.len();
            progress.add(count as u64);
        }
        Ok::<_, MapWriteError>(())
    })?;
    progress.finish();
    drop(jobs);
    drop(lists);
    for k in stale {
        fast.remove_name(&k)?;
        report.names_removed += 1;
    }
    release_free_memory();
    for k in fast.zone_keys() {
        if !zone_keys.contains(&k.name) {
            fast.remove_zone(&k)?;
            report.zones_removed += 1;
        }
    }
    Ok(report)
}

/// Most threads [`full_sync_with`] compiles on.
const MAX_COMPILERS: usize = 8;

/// What a compiling thread of [`full_sync_with`] hands the writing one: the entries of `count`
/// names (those too long for the fast path have none), and whether the thread wrote them.
struct Compiled {
    count: usize,
    entries: Vec<(NameKey, NameEntry)>,
    written: bool,
}

/// Names in a job: few enough hand-overs to cost nothing, small enough to hold little (a few
/// hundred KiB), and one batched map write each.
const COMPILE_BATCH: usize = 1024;

/// Hands the heap's free pages back to the system. A start-up's temporaries (the store's rows
/// decoded, the list of names compiled) are freed in small pieces that glibc keeps in its
/// arenas; after a start at a million records that was a tenth of the resident memory, for
/// good. Cheap: a walk over the free lists.
pub(crate) fn release_free_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only returns unused pages of the allocator's own arenas to the kernel;
    // it touches no memory the program holds.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::rdata::{A, CNAME};

    use super::*;
    use crate::zone::ZoneSpec;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    /// `www` CNAME `host`, `host` A 192.0.2.1, `out` CNAME a name elsewhere.
    fn zones() -> ZoneSet {
        let mut z = ZoneSet::new();
        let apex = n("t.example.");
        z.create_zone(ZoneSpec::new(
            apex.clone(),
            n("ns.t.example."),
            n("h.t.example."),
            vec![n("ns.t.example.")],
        ))
        .unwrap();
        z.set_rrset(
            &apex,
            &n("host.t.example."),
            RecordType::A,
            60,
            vec![RData::A(A::new(192, 0, 2, 1))],
        )
        .unwrap();
        z.set_rrset(
            &apex,
            &n("www.t.example."),
            RecordType::CNAME,
            30,
            vec![RData::CNAME(CNAME(n("host.t.example.")))],
        )
        .unwrap();
        z.set_rrset(
            &apex,
            &n("out.t.example."),
            RecordType::CNAME,
            30,
            vec![RData::CNAME(CNAME(n("x.example.org.")))],
        )
        .unwrap();
        z
    }

    fn value(zones: &ZoneSet, name: &str) -> NameEntry {
        let zone = zones.find_zone(&n(name)).unwrap();
        compile_name(zones, zone, &n(name)).unwrap().1
    }

    #[test]
    fn cname_name_answers_every_fast_type_from_one_prefix() {
        let zones = zones();
        let NameEntry::Small(v) = value(&zones, "www.t.example.") else {
            panic!("a CNAME and one A fit the small map");
        };
        assert_eq!(
            v.pass_mask,
            pass_bit(SEG_AAAA),
            "AAAA after the CNAME is NODATA: the fallback"
        );
        assert_eq!(v.segs[SEG_CNAME_PREFIX].count, 1);
        // A: the CNAME, then host's A; CNAME: the CNAME alone.
        assert_eq!(v.segs[SEG_A].count, 1);
        assert_eq!(v.segs[SEG_CNAME].count, 0);
        assert_eq!(v.segs[SEG_CNAME].len, 0);
    }

    #[test]
    fn cname_out_of_zone_is_answered_by_the_cname_alone() {
        let zones = zones();
        let NameEntry::Small(v) = value(&zones, "out.t.example.") else {
            panic!("small");
        };
        assert_eq!(v.pass_mask, 0);
        for seg in [SEG_A, SEG_AAAA, SEG_CNAME] {
            assert_eq!(
                v.segs[SEG_CNAME_PREFIX].count + v.segs[seg].count,
                1,
                "seg {seg}"
            );
        }
    }

    #[test]
    fn key_is_under_respects_label_boundaries() {
        let k = |s: &str| name_key(&Name::from_ascii(s).unwrap()).unwrap();
        assert!(key_is_under(&k("a.t.example.net."), &k("t.example.net.")));
        assert!(key_is_under(&k("t.example.net."), &k("t.example.net.")));
        assert!(!key_is_under(&k("at.example.net."), &k("t.example.net.")));
        assert!(!key_is_under(&k("example.net."), &k("t.example.net.")));
    }

    #[test]
    fn name_key_folds_case_and_right_aligns() {
        let k = name_key(&Name::from_ascii("DeMo.T.").unwrap()).unwrap();
        let wire = b"\x04demo\x01t\x00";
        assert_eq!(&k.name[KEY_NAME_LEN - wire.len()..], wire);
        assert!(k.name[..KEY_NAME_LEN - wire.len()].iter().all(|b| *b == 0));
    }
}
