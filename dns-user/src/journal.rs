//! The IXFR journal (RFC 1995): every committed change of a zone as the records it deleted and
//! the records it added, between its old and its new serial.
//!
//! The write path has both versions of the zones at commit time, and the [`ChangeSet`] names the
//! RRsets a change touched, so the difference is computed there ([`diff`]) and stored by
//! [`crate::store::Store::persist`] in the same transaction as the change itself: the journal can
//! never say a change happened that the store doesn't hold, or miss one it does. A zone replaced
//! whole (created, imported) or deleted has its journal cleared: a secondary older than that gets
//! a full transfer.

use hickory_proto::{
    rr::{Name, RData, Record, RecordType},
    serialize::binary::{BinDecodable, BinDecoder, BinEncodable},
};

use crate::zone::{normalize, ChangeSet, Zone, ZoneSet};

/// One change of one zone, in RFC 1995's terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diff {
    /// The serial before the change.
    pub from: u32,
    /// The serial after it.
    pub to: u32,
    /// The old SOA first, then the records the change removed.
    pub deleted: Vec<Record>,
    /// The new SOA first, then the records the change added.
    pub added: Vec<Record>,
}

/// What a commit does to the journal of one zone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalOp {
    /// Append this change (and trim the oldest entries beyond the limits).
    Append { apex: Name, diff: Diff },
    /// Forget every entry: the zone was replaced whole or deleted.
    Clear(Name),
}

/// How much journal a zone keeps; the oldest entries go first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct JournalLimits {
    pub max_entries: u64,
    /// Encoded bytes of all entries of a zone.
    pub max_bytes: u64,
}

impl Default for JournalLimits {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: 64 << 20,
        }
    }
}

/// Where the fallback reads the journal from (the daemon's is the store).
pub trait JournalSource: Send + Sync {
    /// The changes of `apex` that lead from serial `from` to serial `to`, oldest first; `None`
    /// when the journal doesn't hold that whole chain (the client then gets a full transfer).
    fn changes(&self, apex: &Name, from: u32, to: u32) -> Option<Vec<Diff>>;
}

/// The journal entries a commit makes, from the versions before (`prev`) and after (`next`) it
/// and what it touched (`changes`).
pub fn diff(prev: &ZoneSet, next: &ZoneSet, changes: &ChangeSet) -> Vec<JournalOp> {
    let mut ops = Vec::new();
    for apex in changes.zones_soa.iter().chain(&changes.zones_replaced) {
        let apex = normalize(apex);
        if ops.iter().any(|op| op_apex(op) == &apex) {
            continue;
        }
        let (old, new) = match (prev.zone(&apex), next.zone(&apex)) {
            (Some(old), Some(new)) if !changes.zones_replaced.contains(&apex) => (old, new),
            _ => {
                ops.push(JournalOp::Clear(apex));
                continue;
            }
        };
        if old.serial() == new.serial() {
            continue;
        }
        let mut d = Diff {
            from: old.serial(),
            to: new.serial(),
            deleted: vec![old.soa_record()],
            added: vec![new.soa_record()],
        };
        for (_, owner, rtype) in changes.rrsets.iter().filter(|(a, ..)| *a == apex) {
            rrset_diff(old, new, owner, *rtype, &mut d);
        }
        ops.push(JournalOp::Append { apex, diff: d });
    }
    ops
}

fn op_apex(op: &JournalOp) -> &Name {
    match op {
        JournalOp::Append { apex, .. } | JournalOp::Clear(apex) => apex,
    }
}

/// Old records minus new ones are deleted, new minus old added. A TTL change changes every
/// record of the set (RFC 1995 compares whole RRs, and RFC 2181 §5.2 keeps one TTL per set).
fn rrset_diff(old: &Zone, new: &Zone, owner: &Name, rtype: RecordType, d: &mut Diff) {
    let (old_ttl, old_rd) = old
        .rrset(owner, rtype)
        .map_or((0, Vec::new()), |s| (s.ttl, s.records));
    let (new_ttl, new_rd) = new
        .rrset(owner, rtype)
        .map_or((0, Vec::new()), |s| (s.ttl, s.records));
    let same_ttl = old_ttl == new_ttl;
    let record = |ttl, rd: &RData| Record::from_rdata(owner.clone(), ttl, rd.clone());
    d.deleted.extend(
        old_rd
            .iter()
            .filter(|rd| !same_ttl || !new_rd.contains(rd))
            .map(|rd| record(old_ttl, rd)),
    );
    d.added.extend(
        new_rd
            .iter()
            .filter(|rd| !same_ttl || !old_rd.contains(rd))
            .map(|rd| record(new_ttl, rd)),
    );
}

/// Several consecutive changes as one (RFC 1995 §4 allows a server to condense them): a record
/// added and then deleted again is in neither list, and only the first old SOA and the last new
/// one remain.
pub fn condense(diffs: &[Diff]) -> Option<Diff> {
    let (first, last) = (diffs.first()?, diffs.last()?);
    let mut deleted: Vec<Record> = Vec::new();
    let mut added: Vec<Record> = Vec::new();
    for d in diffs {
        for r in d.deleted.iter().skip(1) {
            // Deleting what an earlier change added: neither happened, seen from the start.
            if let Some(i) = added.iter().position(|a| same(a, r)) {
                added.swap_remove(i);
            } else {
                deleted.push(r.clone());
            }
        }
        for r in d.added.iter().skip(1) {
            if let Some(i) = deleted.iter().position(|a| same(a, r)) {
                deleted.swap_remove(i);
            } else {
                added.push(r.clone());
            }
        }
    }
    deleted.insert(0, first.deleted.first()?.clone());
    added.insert(0, last.added.first()?.clone());
    Some(Diff {
        from: first.from,
        to: last.to,
        deleted,
        added,
    })
}

/// Whole-RR equality: hickory's `==` leaves the TTL out (RFC 2136's rule), RFC 1995 doesn't.
fn same(a: &Record, b: &Record) -> bool {
    a == b && a.ttl() == b.ttl()
}

/// `from | to | deleted count | added count` (u32, big-endian), then each record as its length
/// (u16) and its wire form. Each record is encoded on its own: hickory's encoder stops at 64 KiB,
/// and a change can be bigger than that.
pub fn encode(d: &Diff) -> Result<Vec<u8>, String> {
    let count = |n: usize| u32::try_from(n).map_err(|_| format!("{n} records"));
    let mut out = Vec::new();
    for v in [d.from, d.to, count(d.deleted.len())?, count(d.added.len())?] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    for r in d.deleted.iter().chain(&d.added) {
        let bytes = r.to_bytes().map_err(|e| e.to_string())?;
        let len =
            u16::try_from(bytes.len()).map_err(|_| format!("a record of {} bytes", bytes.len()))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

/// `(from, to)` of an encoded entry, without decoding its records.
pub fn serials(bytes: &[u8]) -> Option<(u32, u32)> {
    Some((word(bytes, 0)?, word(bytes, 4)?))
}

fn word(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// The entry [`encode`] wrote.
pub fn decode(bytes: &[u8]) -> Result<Diff, String> {
    let header = |i: usize| word(bytes, i * 4).ok_or("entry cut short");
    let (from, to, ndel, nadd) = (header(0)?, header(1)?, header(2)?, header(3)?);
    let mut at = 16;
    let mut records = |n: u32| -> Result<Vec<Record>, String> {
        (0..n)
            .map(|i| {
                let len = bytes
                    .get(at..at + 2)
                    .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
                    .ok_or_else(|| format!("record {i} cut short"))?;
                let wire = bytes
                    .get(at + 2..at + 2 + len)
                    .ok_or_else(|| format!("record {i} cut short"))?;
                at += 2 + len;
                let mut dec = BinDecoder::new(wire);
                let r = Record::read(&mut dec).map_err(|e| format!("record {i}: {e}"))?;
                if !dec.is_empty() {
                    return Err(format!("record {i}: {} bytes left over", dec.len()));
                }
                Ok(r)
            })
            .collect()
    };
    let deleted = records(ndel)?;
    let added = records(nadd)?;
    if at != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - at));
    }
    Ok(Diff {
        from,
        to,
        deleted,
        added,
    })
}

#[cfg(test)]
mod tests {
    use hickory_proto::rr::rdata::{A, TXT};

    use super::*;
    use crate::zone::{Change, Edit, ZoneSpec};

    fn n(s: &str) -> Name {
        Name::from_ascii(s).expect("name")
    }

    fn a(last: u8) -> RData {
        RData::A(A::new(192, 0, 2, last))
    }

    fn set(name: &str, ttl: u32, records: Vec<RData>) -> Edit {
        Edit::Rrset(
            n("example.com."),
            Change::Set {
                name: n(name),
                rtype: RecordType::A,
                ttl,
                records,
            },
        )
    }

    /// Applies `edit` to `zs`, returning the journal ops it makes.
    fn step(zs: &mut ZoneSet, edit: Edit) -> Vec<JournalOp> {
        let prev = zs.clone();
        let changes = zs.apply(edit).expect("edit");
        diff(&prev, zs, &changes)
    }

    fn created() -> (ZoneSet, Vec<JournalOp>) {
        let mut zs = ZoneSet::new();
        let spec = ZoneSpec::new(
            n("example.com."),
            n("ns1.example.com."),
            n("hostmaster.example.com."),
            vec![n("ns1.example.com.")],
        );
        let ops = step(&mut zs, Edit::CreateZone(spec));
        (zs, ops)
    }

    fn appended(ops: Vec<JournalOp>) -> Diff {
        match <[JournalOp; 1]>::try_from(ops).expect("one op") {
            [JournalOp::Append { apex, diff }] => {
                assert_eq!(apex, n("example.com."));
                diff
            }
            [op] => panic!("not an append: {op:?}"),
        }
    }

    #[test]
    fn diffs_record_what_changed_and_round_trip() {
        let (mut zs, ops) = created();
        assert_eq!(ops, [JournalOp::Clear(n("example.com."))]);

        let d1 = appended(step(&mut zs, set("www.example.com.", 60, vec![a(1), a(2)])));
        assert_eq!(d1.to, d1.from.wrapping_add(1));
        assert_eq!(d1.deleted.len(), 1);
        assert_eq!(d1.deleted[0].record_type(), RecordType::SOA);
        assert_eq!(d1.added.len(), 3);
        assert_eq!(d1.added[0].record_type(), RecordType::SOA);

        // One record swapped: one deleted, one added; the one kept is in neither.
        let d2 = appended(step(&mut zs, set("www.example.com.", 60, vec![a(2), a(3)])));
        assert_eq!(d2.from, d1.to);
        assert_eq!(d2.deleted[1..].len(), 1);
        assert_eq!(d2.deleted[1].data(), &a(1));
        assert_eq!(d2.added[1..].len(), 1);
        assert_eq!(d2.added[1].data(), &a(3));

        // A TTL change: the whole set goes and comes back.
        let d3 = appended(step(
            &mut zs,
            set("www.example.com.", 300, vec![a(2), a(3)]),
        ));
        assert_eq!((d3.deleted.len(), d3.added.len()), (3, 3));
        assert!(d3.added[1..].iter().all(|r| r.ttl() == 300));

        // A TXT with odd bytes and a compressed-looking name survive the encoding.
        let txt = Edit::Rrset(
            n("example.com."),
            Change::Set {
                name: n("t.example.com."),
                rtype: RecordType::TXT,
                ttl: 60,
                records: vec![RData::TXT(TXT::new(vec!["a\"b\\c".into()]))],
            },
        );
        let d4 = appended(step(&mut zs, txt));
        for d in [&d1, &d2, &d3, &d4] {
            let bytes = encode(d).expect("encode");
            assert_eq!(serials(&bytes), Some((d.from, d.to)));
            let back = decode(&bytes).expect("decode");
            assert_eq!(&back, d);
            let ttls = |d: &Diff| d.added.iter().map(Record::ttl).collect::<Vec<_>>();
            assert_eq!(ttls(&back), ttls(d));
        }

        // A change bigger than one DNS message still round-trips.
        let mut big = d4.clone();
        big.added.extend((0..3000).map(|i| {
            let name = n(&format!("host-{i}.example.com."));
            Record::from_rdata(name, 60, a((i % 250) as u8))
        }));
        let bytes = encode(&big).expect("encode");
        assert!(bytes.len() > 65535);
        assert_eq!(decode(&bytes).expect("decode"), big);

        // Condensed: from the first old SOA to the last new one; a(1), added then deleted, is
        // in neither list.
        let c = condense(&[d1.clone(), d2, d3.clone()]).expect("condensed");
        assert_eq!((c.from, c.to), (d1.from, d3.to));
        assert_eq!(c.deleted, d1.deleted);
        let mut added: Vec<_> = c.added[1..]
            .iter()
            .map(|r| (r.ttl(), r.data().clone()))
            .collect();
        added.sort_by_key(|(ttl, rd)| (*ttl, rd.to_string()));
        assert_eq!(added, [(300, a(2)), (300, a(3))]);

        // Deleting the zone clears its journal.
        let ops = step(&mut zs, Edit::DeleteZone(n("example.com.")));
        assert_eq!(ops, [JournalOp::Clear(n("example.com."))]);
    }
}
