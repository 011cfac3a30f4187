//! The durable store: redb, one file in `--data-dir`.
//!
//! redb is an embedded, pure-Rust, ACID key-value store: a write transaction commits with fsync
//! (durability `Immediate`, its default) and a crash leaves either the old or the new state, never
//! a torn one. It needs no server and no C toolchain, which suits a daemon on edge hosts; SQLite
//! would do the same job with a C dependency and SQL we don't need.
//!
//! Layout: `zones` maps an apex to its SOA settings and serial (JSON); `rrsets` maps
//! `(apex, owner, type)` to the TTL and the records in wire form. The store holds state, not a
//! log: each commit writes the current value of every RRset a change touched.

use std::path::{Path, PathBuf};

use hickory_proto::{
    rr::{Name, RData, RecordType},
    serialize::binary::{BinDecoder, BinEncodable, Restrict},
};
use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::zone::{ChangeSet, RrSet, SoaParams, Zone, ZoneSet, ZoneSpec};

const ZONES: TableDefinition<&str, &[u8]> = TableDefinition::new("zones");
const RRSETS: TableDefinition<(&str, &str, u16), &[u8]> = TableDefinition::new("rrsets");

/// File name inside the data directory.
pub const DB_FILE: &str = "edgedns.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("creating data directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("opening store {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: Box<redb::DatabaseError>,
    },
    /// A transaction, table, read/write or commit error (boxed: redb's errors are large).
    #[error("store transaction")]
    Db(#[source] Box<redb::Error>),
    #[error("store {path}: corrupt entry {what}: {reason}")]
    Corrupt {
        path: PathBuf,
        what: String,
        reason: String,
    },
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                Self::Db(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

#[derive(Serialize, Deserialize)]
struct ZoneMeta {
    soa_ttl: u32,
    mname: String,
    rname: String,
    refresh: u32,
    retry: u32,
    expire: u32,
    minimum: u32,
    serial: u32,
}

pub struct Store {
    db: Database,
    path: PathBuf,
}

fn key(name: &Name) -> String {
    crate::zone::normalize(name).to_ascii()
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).map_err(|source| StoreError::Open {
            path: path.clone(),
            source: Box::new(source),
        })?;
        let tx = db.begin_write()?;
        tx.open_table(ZONES)?;
        tx.open_table(RRSETS)?;
        tx.commit()?;
        Ok(Self { db, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn corrupt(&self, what: impl Into<String>, reason: impl ToString) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            what: what.into(),
            reason: reason.to_string(),
        }
    }

    /// Reads every zone into a [`ZoneSet`].
    pub fn load(&self) -> Result<ZoneSet, StoreError> {
        let tx = self.db.begin_read()?;
        let zones_t = tx.open_table(ZONES)?;
        let rrsets_t = tx.open_table(RRSETS)?;
        let mut set = ZoneSet::new();
        for entry in zones_t.iter()? {
            let (k, v) = entry?;
            let apex_s = k.value().to_owned();
            let apex =
                Name::from_ascii(&apex_s).map_err(|e| self.corrupt(format!("zone {apex_s}"), e))?;
            let meta: ZoneMeta = serde_json::from_slice(v.value())
                .map_err(|e| self.corrupt(format!("zone {apex_s}"), e))?;
            let name = |s: &str| {
                Name::from_ascii(s).map_err(|e| self.corrupt(format!("zone {apex_s}"), e))
            };
            let soa = SoaParams {
                ttl: meta.soa_ttl,
                mname: name(&meta.mname)?,
                rname: name(&meta.rname)?,
                refresh: meta.refresh,
                retry: meta.retry,
                expire: meta.expire,
                minimum: meta.minimum,
            };
            let mut rrsets = Vec::new();
            let range = rrsets_t.range((apex_s.as_str(), "", 0u16)..)?;
            for row in range {
                let (k, v) = row?;
                let (a, owner, t) = k.value();
                if a != apex_s {
                    break;
                }
                let what = format!("rrset {owner} type {t} in zone {apex_s}");
                let owner = Name::from_ascii(owner).map_err(|e| self.corrupt(&what, e))?;
                let rtype = RecordType::from(t);
                let rrset = decode_rrset(rtype, v.value()).map_err(|e| self.corrupt(&what, e))?;
                rrsets.push((owner, rtype, rrset));
            }
            set.load_zone(
                ZoneSpec {
                    apex,
                    soa,
                    serial: meta.serial,
                    ns: Vec::new(),
                    ns_ttl: 0,
                },
                rrsets,
            )
            .map_err(|e| self.corrupt(format!("zone {apex_s}"), e))?;
        }
        Ok(set)
    }

    /// Writes what `changes` names, as `zones` now has it, in one durable transaction: zone
    /// settings for `zones_soa` (the zone and its RRsets removed if it is gone), every RRset of
    /// `zones_replaced`, and the current value (or absence) of each RRset in `rrsets`.
    pub fn persist(&self, zones: &ZoneSet, changes: &ChangeSet) -> Result<(), StoreError> {
        let tx = self.db.begin_write()?;
        {
            let mut zones_t = tx.open_table(ZONES)?;
            let mut rrsets_t = tx.open_table(RRSETS)?;
            for apex in changes.zones_soa.iter().chain(&changes.zones_replaced) {
                let apex_s = key(apex);
                match zones.zone(apex) {
                    Some(zone) => {
                        zones_t.insert(apex_s.as_str(), zone_meta(zone).as_slice())?;
                    }
                    None => {
                        zones_t.remove(apex_s.as_str())?;
                        delete_zone_rrsets(&mut rrsets_t, &apex_s)?;
                    }
                }
            }
            for apex in &changes.zones_replaced {
                let Some(zone) = zones.zone(apex) else {
                    continue;
                };
                let apex_s = key(apex);
                delete_zone_rrsets(&mut rrsets_t, &apex_s)?;
                for (owner, rtype, ttl, records) in zone.records() {
                    let v = encode_rrset(ttl, records);
                    rrsets_t.insert(
                        (apex_s.as_str(), key(&owner).as_str(), u16::from(rtype)),
                        v.as_slice(),
                    )?;
                }
            }
            for (apex, owner, rtype) in &changes.rrsets {
                let apex_s = key(apex);
                let owner_s = key(owner);
                let k = (apex_s.as_str(), owner_s.as_str(), u16::from(*rtype));
                match zones.zone(apex).and_then(|z| z.rrset(owner, *rtype)) {
                    Some(s) => {
                        rrsets_t.insert(k, encode_rrset(s.ttl, &s.records).as_slice())?;
                    }
                    None => {
                        rrsets_t.remove(k)?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }
}

fn delete_zone_rrsets(
    t: &mut redb::Table<(&str, &str, u16), &[u8]>,
    apex_s: &str,
) -> Result<(), StoreError> {
    let keys: Vec<(String, u16)> = {
        let mut keys = Vec::new();
        for row in t.range((apex_s, "", 0u16)..)? {
            let (k, _) = row?;
            let (a, owner, ty) = k.value();
            if a != apex_s {
                break;
            }
            keys.push((owner.to_owned(), ty));
        }
        keys
    };
    for (owner, ty) in keys {
        t.remove((apex_s, owner.as_str(), ty))?;
    }
    Ok(())
}

fn zone_meta(zone: &Zone) -> Vec<u8> {
    let s = zone.soa();
    let meta = ZoneMeta {
        soa_ttl: s.ttl,
        mname: s.mname.to_ascii(),
        rname: s.rname.to_ascii(),
        refresh: s.refresh,
        retry: s.retry,
        expire: s.expire,
        minimum: s.minimum,
        serial: zone.serial(),
    };
    serde_json::to_vec(&meta).expect("ZoneMeta serializes")
}

/// `ttl (u32) | count (u16) | count × (len (u16) | rdata)`, big-endian, RDATA in wire form.
fn encode_rrset(ttl: u32, records: &[RData]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&ttl.to_be_bytes());
    out.extend_from_slice(&(records.len() as u16).to_be_bytes());
    for r in records {
        let bytes = r.to_bytes().expect("RDATA of a stored record encodes");
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    out
}

fn decode_rrset(rtype: RecordType, bytes: &[u8]) -> Result<RrSet, String> {
    let take = |b: &[u8], at: usize, n: usize| -> Result<Vec<u8>, String> {
        b.get(at..at + n)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format!("truncated at byte {at}"))
    };
    let ttl = u32::from_be_bytes(take(bytes, 0, 4)?.try_into().expect("4 bytes"));
    let count = u16::from_be_bytes(take(bytes, 4, 2)?.try_into().expect("2 bytes"));
    let mut at = 6;
    let mut records = Vec::with_capacity(count as usize);
    for i in 0..count {
        let len = u16::from_be_bytes(take(bytes, at, 2)?.try_into().expect("2 bytes"));
        at += 2;
        let rd = take(bytes, at, len as usize)?;
        at += len as usize;
        let mut dec = BinDecoder::new(&rd);
        let r = RData::read(&mut dec, rtype, Restrict::new(len))
            .map_err(|e| format!("record {i}: {e}"))?;
        records.push(r);
    }
    if at != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - at));
    }
    Ok(RrSet { ttl, records })
}
