//! The durable store: redb, one file in `--data-dir`.
//!
//! redb is an embedded, pure-Rust, ACID key-value store: a write transaction commits with fsync
//! (durability `Immediate`, its default) and a crash leaves either the old or the new state, never
//! a torn one. It needs no server and no C toolchain, which suits a daemon on edge hosts; SQLite
//! would do the same job with a C dependency and SQL we don't need.
//!
//! Layout (format 2, recorded in `meta`): `zones_v2` maps an apex to its SOA settings and serial;
//! `rrsets_v2` maps `(apex, owner, type)` to the TTL and the records in wire form. Every name is
//! kept as its wire-form bytes (length-prefixed labels, lower-cased as the zone model keys them),
//! not as text: a label may hold any byte, and bytes read back exactly as they were written, so
//! whatever the API accepts and serves also loads. The store holds state, not a log: each commit
//! writes the current value of every RRset a change touched.
//!
//! The IXFR journal ([`crate::journal`]) lives beside them: `journal_v1` maps `(apex, sequence
//! number)` to one encoded change, `journal_zones_v1` maps an apex to its first and next sequence
//! numbers and the bytes its entries take. Entries are keyed by a sequence number, not by serial:
//! serials wrap (RFC 1982), so their order as keys is not the order of the changes. A change and
//! its journal entry are written in one transaction, and the oldest entries beyond the limits are
//! trimmed in it too.
//!
//! Format 1 (tables `zones` and `rrsets`, names as hickory's escaped text) is migrated on open,
//! in the same transaction that records format 2.
//!
//! An entry that can't be read back (or that the zone model refuses) doesn't stop the start: it
//! is moved, bytes and reason, to the `quarantine` table, logged, and reported by
//! [`Store::load`] and [`Store::status`]; the rest is served.
//!
//! After a failed commit (disk full, EIO, EPERM) redb refuses every later write until the
//! database is reopened, so the store closes it and reopens it before the next write (or the
//! next readiness probe); once the fault is gone, writes succeed again without a restart.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Mutex, MutexGuard,
    },
};

use hickory_proto::{
    rr::{Name, RData, RecordType},
    serialize::binary::BinEncodable,
};
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::{
    error_chain,
    journal::{self, Diff, JournalLimits, JournalOp, JournalSource},
    progress::{Progress, Reporter},
    zone::{
        ChangeSet, LoadedOwner, RrSet, SoaParams, StoredSet, Zone, ZoneError, ZoneSet, ZoneSpec,
    },
    zonefile::presentation::format_name,
};

/// `"format"`: the layout version of the tables.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const FORMAT_KEY: &str = "format";
const FORMAT: u64 = 2;
/// `"fleet_revision"`: in a fleet, the etcd revision the store's data is a copy of, written in
/// the same transaction as the change that brought it.
const FLEET_REVISION_KEY: &str = "fleet_revision";
const ZONES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("zones_v2");
/// `(apex, owner, type)`, names in wire form.
type RrsetCols = (&'static [u8], &'static [u8], u16);
const RRSETS: TableDefinition<RrsetCols, &[u8]> = TableDefinition::new("rrsets_v2");
/// `(table, key)` and `(reason, value)`.
type TextAndBytes = (&'static str, &'static [u8]);
/// `(table it came from, its key) -> (why, its value)`, bytes as they were.
const QUARANTINE: TableDefinition<TextAndBytes, TextAndBytes> = TableDefinition::new("quarantine");
/// `(apex, sequence number) -> change` ([`journal::encode`]).
const JOURNAL: TableDefinition<(&[u8], u64), &[u8]> = TableDefinition::new("journal_v1");
/// `apex -> (first sequence number, next sequence number, bytes of its entries)`.
const JOURNAL_ZONES: TableDefinition<&[u8], (u64, u64, u64)> =
    TableDefinition::new("journal_zones_v1");
/// Scratch space for [`Store::probe`], empty between probes.
const PROBE: TableDefinition<&str, &[u8]> = TableDefinition::new("probe");
/// What a readiness probe commits: more than most changes need, small enough to write every few
/// seconds while the store is failing (and only then).
const PROBE_BYTES: usize = 1 << 20;
/// Format 1: names as hickory's `to_ascii` text.
const V1_ZONES: TableDefinition<&str, &[u8]> = TableDefinition::new("zones");
const V1_RRSETS: TableDefinition<(&str, &str, u16), &[u8]> = TableDefinition::new("rrsets");

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
    #[error("store {path} has format {found}; this version reads format {FORMAT}")]
    Format { path: PathBuf, found: u64 },
    /// A value the encoding can't hold; the zone model's checks should have refused it first.
    #[error("can't encode {what}: {reason}")]
    Encode { what: String, reason: String },
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

/// An entry set aside because it couldn't be loaded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Quarantined {
    /// The table it was in.
    pub table: String,
    /// The entry, as readable as its bytes allow (`zone a.test.`, `rrset www.a.test. A`).
    pub entry: String,
    pub reason: String,
}

/// What [`Store::load`] read.
#[derive(Debug)]
pub struct Loaded {
    pub zones: ZoneSet,
    /// Every entry in quarantine, this start's and earlier ones', oldest table first.
    pub quarantined: Vec<Quarantined>,
}

/// The store's state, for readiness and metrics.
#[derive(Clone, Debug, Serialize)]
pub struct StoreStatus {
    /// [`Store::load`] has run.
    pub loaded: bool,
    /// The last commit (or reopen, or probe) worked.
    pub writable: bool,
    /// Why the store isn't writable.
    pub error: Option<String>,
    /// Commits that failed since the start.
    pub commit_errors: u64,
    pub quarantined: Vec<Quarantined>,
}

/// Format 1's zone settings, names as hickory's escaped text.
#[derive(Serialize, Deserialize)]
struct ZoneMetaV1 {
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
    /// `None` after a failed commit closed it; the next write or probe reopens it.
    db: Mutex<Option<Database>>,
    path: PathBuf,
    loaded: AtomicBool,
    /// Why the store isn't writable, or `None` when it is.
    failure: Mutex<Option<String>>,
    commit_errors: AtomicU64,
    quarantined: Mutex<Vec<Quarantined>>,
    journal_limits: JournalLimits,
}

impl Store {
    /// Opens (or creates) the store in `dir`; a format-1 store is migrated to format 2.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_owned(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let db = open_db(&path)?;
        let tx = db.begin_write()?;
        let found = tx.open_table(META)?.get(FORMAT_KEY)?.map(|v| v.value());
        match found {
            Some(FORMAT) => {}
            Some(found) => return Err(StoreError::Format { path, found }),
            None => {
                let v1 = tx.list_tables()?.any(|t| t.name() == V1_ZONES.name());
                if v1 {
                    migrate_v1(&tx)?;
                }
                tx.open_table(META)?.insert(FORMAT_KEY, FORMAT)?;
            }
        }
        tx.open_table(ZONES)?;
        tx.open_table(RRSETS)?;
        tx.open_table(QUARANTINE)?;
        tx.open_table(JOURNAL)?;
        tx.open_table(JOURNAL_ZONES)?;
        tx.commit()?;
        Ok(Self {
            db: Mutex::new(Some(db)),
            path,
            loaded: AtomicBool::new(false),
            failure: Mutex::new(None),
            commit_errors: AtomicU64::new(0),
            quarantined: Mutex::new(Vec::new()),
            journal_limits: JournalLimits::default(),
        })
    }

    /// How much IXFR journal each zone keeps.
    pub fn with_journal_limits(mut self, limits: JournalLimits) -> Self {
        self.journal_limits = limits;
        self
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock_db(&self) -> MutexGuard<'_, Option<Database>> {
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open database, reopened if a failure closed it.
    fn ensure_open<'a>(
        &self,
        db: &'a mut MutexGuard<'_, Option<Database>>,
    ) -> Result<&'a Database, StoreError> {
        if db.is_none() {
            **db = Some(open_db(&self.path)?);
            info!(path = %self.path.display(), "store reopened");
        }
        Ok(db.as_ref().expect("just opened"))
    }

    /// Reads every zone into a [`ZoneSet`]. An entry that can't be read, or whose zone the
    /// model refuses, is moved to quarantine and reported; the rest loads.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        self.load_with(&Reporter::silent())
    }

    /// [`Store::load`], reporting RRsets read to `progress` (stage "loading the store").
    pub fn load_with(&self, progress: &Reporter) -> Result<Loaded, StoreError> {
        let mut guard = self.lock_db();
        let db = self.ensure_open(&mut guard)?;
        let mut bad = Vec::new();
        let zones = {
            let tx = db.begin_read()?;
            let zones_t = tx.open_table(ZONES)?;
            let rrsets_t = tx.open_table(RRSETS)?;
            // redb keeps each table's length in its header: no scan.
            let mut progress = progress.start("loading the store", Some(rrsets_t.len()?));
            let mut set = ZoneSet::new();
            for entry in zones_t.iter()? {
                let (k, v) = entry?;
                load_zone(
                    &mut set,
                    &rrsets_t,
                    k.value(),
                    v.value(),
                    &mut bad,
                    &mut progress,
                )?;
            }
            progress.finish();
            set
        };
        for b in &bad {
            error!(entry = %b.shown.entry, reason = %b.shown.reason, "store entry quarantined");
        }
        let mut quarantined = Vec::new();
        if !bad.is_empty() {
            if let Err(e) = quarantine(db, &bad) {
                // Still serve the rest; the entries stay where they are and are reported.
                error!("moving entries to quarantine: {}", error_chain(&e));
                quarantined.extend(bad.iter().map(|b| b.shown.clone()));
            }
        }
        match read_quarantine(db) {
            Ok(q) => quarantined.extend(q),
            // The zones loaded: serve them, and say the list is incomplete.
            Err(e) => {
                error!("reading the quarantine table: {}", error_chain(&e));
                quarantined.push(Quarantined {
                    table: QUARANTINE.name().into(),
                    entry: "the quarantine table".into(),
                    reason: error_chain(&e),
                });
            }
        }
        if !quarantined.is_empty() {
            warn!(
                entries = quarantined.len(),
                "the store has quarantined entries (table `quarantine`); they are not served"
            );
        }
        *self.quarantined.lock().unwrap_or_else(|p| p.into_inner()) = quarantined.clone();
        self.loaded.store(true, Ordering::Relaxed);
        crate::compile::release_free_memory();
        Ok(Loaded { zones, quarantined })
    }

    /// Writes what `changes` names, as `zones` now has it, in one durable transaction: zone
    /// settings for `zones_soa` (the zone and its RRsets removed if it is gone), every RRset of
    /// `zones_replaced`, and the current value (or absence) of each RRset in `rrsets`.
    ///
    /// If the store failed before, it is reopened first. On a storage error it is closed, so
    /// that the next call starts from what is on disk.
    pub fn persist(&self, zones: &ZoneSet, changes: &ChangeSet) -> Result<(), StoreError> {
        self.persist_journaled(zones, changes, &[])
    }

    /// [`Store::persist`], with the IXFR journal's entries for the change written in the same
    /// transaction (the oldest beyond the limits trimmed there too).
    pub fn persist_journaled(
        &self,
        zones: &ZoneSet,
        changes: &ChangeSet,
        journal: &[JournalOp],
    ) -> Result<(), StoreError> {
        self.persist_revision(zones, changes, journal, None)
    }

    /// [`Store::persist_journaled`], recording in the same transaction the fleet revision
    /// (etcd's) the data now is a copy of, if given.
    pub fn persist_revision(
        &self,
        zones: &ZoneSet,
        changes: &ChangeSet,
        journal: &[JournalOp],
        revision: Option<u64>,
    ) -> Result<(), StoreError> {
        let mut guard = self.lock_db();
        let limits = self.journal_limits;
        let result = self
            .ensure_open(&mut guard)
            .and_then(|db| write(db, zones, changes, journal, limits, revision, true));
        self.after_write(&mut guard, &result);
        result
    }

    /// [`Store::persist_revision`] for a fleet's copy of etcd, without waiting for the disk:
    /// the commit is consistent (data and revision together) but only durable once
    /// [`Store::flush`] runs. A crash before that leaves the store at the last flushed
    /// revision, which the edge brings up to date from etcd when it starts.
    pub fn persist_copy(
        &self,
        zones: &ZoneSet,
        changes: &ChangeSet,
        journal: &[JournalOp],
        revision: u64,
    ) -> Result<(), StoreError> {
        let mut guard = self.lock_db();
        let limits = self.journal_limits;
        let result = self
            .ensure_open(&mut guard)
            .and_then(|db| write(db, zones, changes, journal, limits, Some(revision), false));
        self.after_write(&mut guard, &result);
        result
    }

    /// Makes every commit so far durable (one commit with fsync; see [`Store::persist_copy`]).
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut guard = self.lock_db();
        let result = self.ensure_open(&mut guard).and_then(|db| {
            db.begin_write()?.commit()?;
            Ok(())
        });
        self.after_write(&mut guard, &result);
        result
    }

    /// The directory the store's file is in (the daemon's data directory).
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// The fleet revision the data is a copy of (see [`Store::persist_revision`]), if any.
    pub fn fleet_revision(&self) -> Result<Option<u64>, StoreError> {
        let mut guard = self.lock_db();
        let db = self.ensure_open(&mut guard)?;
        let tx = db.begin_read()?;
        let meta = tx.open_table(META)?;
        Ok(meta.get(FLEET_REVISION_KEY)?.map(|v| v.value()))
    }

    /// Records how a write went: a storage failure closes the database and makes the store
    /// not writable until a write or a probe works again.
    fn after_write(&self, db: &mut Option<Database>, result: &Result<(), StoreError>) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => {
                if failure.take().is_some() {
                    info!("store writable again");
                }
            }
            // Nothing was written and the database is fine: not a storage failure.
            Err(StoreError::Encode { .. }) => {}
            Err(e) => {
                self.commit_errors.fetch_add(1, Ordering::Relaxed);
                // redb refuses all writes after an I/O error until reopened: close it now.
                *db = None;
                *failure = Some(error_chain(e));
            }
        }
    }

    /// Readiness: loaded and writable. A store whose last commit failed is reopened and tried
    /// with a probe commit first, so it turns ready again once the fault is gone, without
    /// waiting for a change. The probe writes (then deletes) [`PROBE_BYTES`]: a tiny commit
    /// often fits in free pages inside the file and would say "writable" on a full disk.
    pub fn probe(&self) -> StoreStatus {
        let failed = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        if failed {
            let mut guard = self.lock_db();
            let result = self.ensure_open(&mut guard).and_then(|db| {
                let scratch = vec![0u8; PROBE_BYTES];
                let tx = db.begin_write()?;
                tx.open_table(PROBE)?.insert("probe", scratch.as_slice())?;
                tx.commit()?;
                let tx = db.begin_write()?;
                tx.open_table(PROBE)?.remove("probe")?;
                tx.commit()?;
                Ok(())
            });
            match &result {
                Ok(()) => self.after_write(&mut guard, &result),
                Err(e) => {
                    // A probe isn't a change: the count and the cause stay those of the commit.
                    warn!("store still not writable: {}", error_chain(e));
                    *guard = None;
                }
            }
        }
        self.status()
    }

    /// The store's state as it is, without trying anything.
    pub fn status(&self) -> StoreStatus {
        let error = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        StoreStatus {
            loaded: self.loaded.load(Ordering::Relaxed),
            writable: error.is_none(),
            error,
            commit_errors: self.commit_errors.load(Ordering::Relaxed),
            quarantined: self
                .quarantined
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

/// redb's page cache. Its default (1 GiB) keeps every page a start-up read touches: over 100
/// bytes a record resident for as long as the daemon runs, to speed up reads that only the start
/// and the API's rare reads make. Writes go through a tenth of it (dirty pages are flushed when
/// it fills, and at commit anyway).
const CACHE_BYTES: usize = 32 << 20;

fn open_db(path: &Path) -> Result<Database, StoreError> {
    redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source: Box::new(source),
        })
}

type RrsetKey = (Vec<u8>, Vec<u8>, u16);

/// An entry to quarantine: where it is, its bytes, and how to show it.
struct Bad {
    key: BadKey,
    value: Vec<u8>,
    shown: Quarantined,
}

enum BadKey {
    Zone(Vec<u8>),
    Rrset(RrsetKey),
}

impl Bad {
    fn zone(apex: &[u8], value: &[u8], reason: impl ToString) -> Self {
        Self {
            key: BadKey::Zone(apex.to_vec()),
            value: value.to_vec(),
            shown: Quarantined {
                table: ZONES.name().into(),
                entry: format!("zone {}", show_name(apex)),
                reason: reason.to_string(),
            },
        }
    }

    fn rrset(key: RrsetKey, value: &[u8], reason: impl ToString) -> Self {
        let entry = format!(
            "rrset {} {} in zone {}",
            show_name(&key.1),
            RecordType::from(key.2),
            show_name(&key.0)
        );
        Self {
            key: BadKey::Rrset(key),
            value: value.to_vec(),
            shown: Quarantined {
                table: RRSETS.name().into(),
                entry,
                reason: reason.to_string(),
            },
        }
    }

    /// The quarantine table's key: the source table and its key's bytes (an RRset's key as
    /// apex and owner in wire form, which delimit themselves, then the type).
    fn quarantine_key(&self) -> (&'static str, Vec<u8>) {
        match &self.key {
            BadKey::Zone(apex) => (ZONES.name(), apex.clone()),
            BadKey::Rrset((apex, owner, t)) => {
                let mut k = apex.clone();
                k.extend_from_slice(owner);
                k.extend_from_slice(&t.to_be_bytes());
                (RRSETS.name(), k)
            }
        }
    }
}

/// A name's bytes for a message: in presentation form if they are a name, else in hex.
fn show_name(wire: &[u8]) -> String {
    match decode_name(wire) {
        Ok(n) => format_name(&n),
        Err(_) => format!(
            "0x{}",
            wire.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

/// Loads one zone into `set`; whatever can't be loaded goes to `bad`.
fn load_zone(
    set: &mut ZoneSet,
    rrsets_t: &redb::ReadOnlyTable<RrsetCols, &[u8]>,
    apex_wire: &[u8],
    value: &[u8],
    bad: &mut Vec<Bad>,
    progress: &mut Progress,
) -> Result<(), StoreError> {
    let spec = decode_name(apex_wire).and_then(|apex| {
        let (soa, serial) = decode_zone_meta(value)?;
        Ok(ZoneSpec {
            apex,
            soa,
            serial,
            ns: Vec::new(),
            ns_ttl: 0,
        })
    });
    let spec = match spec {
        Ok(spec) => spec,
        Err(reason) => {
            bad.push(Bad::zone(apex_wire, value, reason));
            return quarantine_zone_rrsets(rrsets_t, apex_wire, bad);
        }
    };
    // RRsets found bad so far, as `(owner, type)`; the zone model names one bad RRset at a
    // time, so the zone is read again without it.
    let mut skip: BTreeSet<(Vec<u8>, u16)> = BTreeSet::new();
    let full_key = |(owner, t): (Vec<u8>, u16)| (apex_wire.to_vec(), owner, t);
    loop {
        let mut rrsets = Vec::new();
        for row in zone_range(rrsets_t, apex_wire)? {
            let (k, v) = row?;
            progress.add(1);
            let (_, owner, t) = k.value();
            if !skip.is_empty() && skip.contains(&(owner.to_vec(), t)) {
                continue;
            }
            let rtype = RecordType::from(t);
            // The records are read (on every CPU) and kept in this form by the zone.
            // Straight into the zone's key form: building a `Name` of each owner only for the
            // zone to encode it again was a large part of this loop, which runs on one thread.
            let owner_key = wire_labels(owner).map(|l| LoadedOwner::from_labels(&l));
            match owner_key.and_then(|o| Ok((o, split_rrset(v.value())?))) {
                Ok((owner_name, (ttl, records))) => rrsets.push((
                    owner_name,
                    rtype,
                    StoredSet {
                        ttl,
                        records: records.to_vec(),
                    },
                )),
                Err(reason) => {
                    bad.push(Bad::rrset(full_key((owner.to_vec(), t)), v.value(), reason));
                    skip.insert((owner.to_vec(), t));
                }
            }
        }
        match set.add_loaded_zone(spec.clone(), rrsets) {
            Ok(()) => return Ok(()),
            Err(ZoneError::Batch { index, source }) => {
                // The RRset at `index` is the index-th row read above: those skipped before or
                // found bad in that pass are now in `skip`, and no other row was left out. The
                // keys are found again here rather than kept for every row on every load.
                let mut kept = zone_range(rrsets_t, apex_wire)?.filter(|row| {
                    row.as_ref().map_or(true, |(k, _)| {
                        let (_, owner, t) = k.value();
                        !skip.contains(&(owner.to_vec(), t))
                    })
                });
                let Some(row) = kept.nth(index) else {
                    // The store changed under a read transaction: it can't, but a zone that
                    // can't be read twice alike is quarantined whole rather than looped on.
                    bad.retain(|b| !matches!(&b.key, BadKey::Rrset(k) if k.0 == apex_wire));
                    bad.push(Bad::zone(apex_wire, value, source));
                    return quarantine_zone_rrsets(rrsets_t, apex_wire, bad);
                };
                let (k, v) = row?;
                let (_, owner, t) = k.value();
                let key = (owner.to_vec(), t);
                bad.push(Bad::rrset(full_key(key.clone()), v.value(), source));
                skip.insert(key);
            }
            Err(e) => {
                bad.retain(|b| !matches!(&b.key, BadKey::Rrset(k) if k.0 == apex_wire));
                bad.push(Bad::zone(apex_wire, value, e));
                return quarantine_zone_rrsets(rrsets_t, apex_wire, bad);
            }
        }
    }
}

/// Every RRset of a zone that is set aside whole.
fn quarantine_zone_rrsets(
    rrsets_t: &redb::ReadOnlyTable<RrsetCols, &[u8]>,
    apex_wire: &[u8],
    bad: &mut Vec<Bad>,
) -> Result<(), StoreError> {
    for row in zone_range(rrsets_t, apex_wire)? {
        let (k, v) = row?;
        let (_, owner, t) = k.value();
        bad.push(Bad::rrset(
            (apex_wire.to_vec(), owner.to_vec(), t),
            v.value(),
            "its zone is quarantined",
        ));
    }
    Ok(())
}

type RrsetRange<'a> = redb::Range<'a, RrsetCols, &'static [u8]>;

/// The rows of one zone's RRsets.
fn zone_range<'a>(
    t: &'a impl ReadableTable<RrsetCols, &'static [u8]>,
    apex_wire: &[u8],
) -> Result<impl Iterator<Item = Result<RrsetRow<'a>, redb::StorageError>> + 'a, StoreError> {
    let apex = apex_wire.to_vec();
    let start: (&[u8], &[u8], u16) = (apex_wire, &[], 0);
    let range: RrsetRange<'a> = t.range(start..)?;
    Ok(range.take_while(move |row| match row {
        Ok((k, _)) => k.value().0 == apex.as_slice(),
        Err(_) => true,
    }))
}

type RrsetRow<'a> = (
    redb::AccessGuard<'a, RrsetCols>,
    redb::AccessGuard<'a, &'static [u8]>,
);

/// Moves `bad` to the quarantine table, in one transaction.
fn quarantine(db: &Database, bad: &[Bad]) -> Result<(), StoreError> {
    let tx = db.begin_write()?;
    {
        let mut q = tx.open_table(QUARANTINE)?;
        let mut zones_t = tx.open_table(ZONES)?;
        let mut rrsets_t = tx.open_table(RRSETS)?;
        for b in bad {
            let (table, key) = b.quarantine_key();
            q.insert(
                (table, key.as_slice()),
                (b.shown.reason.as_str(), b.value.as_slice()),
            )?;
            match &b.key {
                BadKey::Zone(apex) => {
                    zones_t.remove(apex.as_slice())?;
                }
                BadKey::Rrset((apex, owner, t)) => {
                    rrsets_t.remove((apex.as_slice(), owner.as_slice(), *t))?;
                }
            }
        }
    }
    tx.commit()?;
    Ok(())
}

fn read_quarantine(db: &Database) -> Result<Vec<Quarantined>, StoreError> {
    let tx = db.begin_read()?;
    let q = tx.open_table(QUARANTINE)?;
    let mut out = Vec::with_capacity(usize::try_from(q.len()?).unwrap_or(0));
    for row in q.iter()? {
        let (k, v) = row?;
        let (table, key) = k.value();
        let entry = if table == ZONES.name() || table == V1_ZONES.name() {
            format!("zone {}", show_quarantine_key(table, key))
        } else {
            format!("rrset {}", show_quarantine_key(table, key))
        };
        out.push(Quarantined {
            table: table.to_string(),
            entry,
            reason: v.value().0.to_string(),
        });
    }
    Ok(out)
}

/// A quarantine key for a message: format-1 keys are text already; format-2 keys are names in
/// wire form (and an RRset's type).
fn show_quarantine_key(table: &str, key: &[u8]) -> String {
    if table == ZONES.name() {
        return show_name(key);
    }
    if table == RRSETS.name() {
        fn split(b: &[u8]) -> Option<(&[u8], &[u8])> {
            wire_name_len(b).map(|n| b.split_at(n))
        }
        if let Some((apex, rest)) = split(key) {
            if let Some((owner, t)) = split(rest) {
                if let Ok(t) = <[u8; 2]>::try_from(t) {
                    return format!(
                        "{} {} in zone {}",
                        show_name(owner),
                        RecordType::from(u16::from_be_bytes(t)),
                        show_name(apex)
                    );
                }
            }
        }
        return show_name(key);
    }
    String::from_utf8_lossy(key).into_owned()
}

/// The length of the wire-form name at the start of `b`, if there is one.
pub(crate) fn wire_name_len(b: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let len = usize::from(*b.get(at)?);
        at += 1 + len;
        if len == 0 {
            return Some(at);
        }
    }
}

/// Writes what `changes` names, and the journal's entries, in one transaction.
fn write(
    db: &Database,
    zones: &ZoneSet,
    changes: &ChangeSet,
    journal: &[JournalOp],
    limits: JournalLimits,
    revision: Option<u64>,
    durable: bool,
) -> Result<(), StoreError> {
    let mut tx = db.begin_write()?;
    if !durable {
        tx.set_durability(redb::Durability::None);
    }
    write_journal(&tx, journal, limits)?;
    if let Some(revision) = revision {
        tx.open_table(META)?.insert(FLEET_REVISION_KEY, revision)?;
    }
    {
        let mut zones_t = tx.open_table(ZONES)?;
        let mut rrsets_t = tx.open_table(RRSETS)?;
        for apex in changes.zones_soa.iter().chain(&changes.zones_replaced) {
            let apex_k = key(apex);
            match zones.zone(apex) {
                Some(zone) => {
                    zones_t.insert(apex_k.as_slice(), zone_meta(zone).as_slice())?;
                }
                None => {
                    zones_t.remove(apex_k.as_slice())?;
                    delete_zone_rrsets(&mut rrsets_t, &apex_k)?;
                }
            }
        }
        for apex in &changes.zones_replaced {
            let Some(zone) = zones.zone(apex) else {
                continue;
            };
            let apex_k = key(apex);
            delete_zone_rrsets(&mut rrsets_t, &apex_k)?;
            for (owner, rtype, ttl, records) in zone.records() {
                let v = encode_rrset(ttl, &records)
                    .map_err(|reason| encode_error(&owner, rtype, reason))?;
                rrsets_t.insert(
                    (apex_k.as_slice(), key(&owner).as_slice(), u16::from(rtype)),
                    v.as_slice(),
                )?;
            }
        }
        for (apex, owner, rtype) in &changes.rrsets {
            let apex_k = key(apex);
            let owner_k = key(owner);
            let k = (apex_k.as_slice(), owner_k.as_slice(), u16::from(*rtype));
            match zones.zone(apex).and_then(|z| z.rrset(owner, *rtype)) {
                Some(s) => {
                    let v = encode_rrset(s.ttl, &s.records)
                        .map_err(|reason| encode_error(owner, *rtype, reason))?;
                    rrsets_t.insert(k, v.as_slice())?;
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

/// Appends to or clears the journal of each zone `ops` names, trimming the oldest entries
/// beyond `limits`.
fn write_journal(
    tx: &redb::WriteTransaction,
    ops: &[JournalOp],
    limits: JournalLimits,
) -> Result<(), StoreError> {
    if ops.is_empty() {
        return Ok(());
    }
    let mut entries = tx.open_table(JOURNAL)?;
    let mut info_t = tx.open_table(JOURNAL_ZONES)?;
    for op in ops {
        let off = limits.max_entries == 0 || limits.max_bytes == 0;
        let (apex, diff) = match op {
            JournalOp::Append { apex, diff } if !off => (apex, Some(diff)),
            JournalOp::Append { apex, .. } | JournalOp::Clear(apex) => (apex, None),
        };
        let apex_k = key(apex);
        let (mut first, mut next, mut bytes) = info_t
            .get(apex_k.as_slice())?
            .map_or((0, 0, 0), |v| v.value());
        let Some(diff) = diff else {
            for seq in first..next {
                entries.remove((apex_k.as_slice(), seq))?;
            }
            info_t.remove(apex_k.as_slice())?;
            continue;
        };
        let v = journal::encode(diff).map_err(|reason| StoreError::Encode {
            what: format!(
                "the journal entry of {} serial {}",
                format_name(apex),
                diff.to
            ),
            reason,
        })?;
        entries.insert((apex_k.as_slice(), next), v.as_slice())?;
        next += 1;
        bytes += v.len() as u64;
        while first < next && (next - first > limits.max_entries || bytes > limits.max_bytes) {
            if let Some(old) = entries.remove((apex_k.as_slice(), first))? {
                bytes = bytes.saturating_sub(old.value().len() as u64);
            }
            first += 1;
        }
        info_t.insert(apex_k.as_slice(), (first, next, bytes))?;
    }
    Ok(())
}

impl Store {
    /// The journal's chain from serial `from` to serial `to` of `apex` (see
    /// [`JournalSource::changes`]).
    fn journal_chain(
        &self,
        apex: &Name,
        from: u32,
        to: u32,
    ) -> Result<Option<Vec<Diff>>, StoreError> {
        let mut guard = self.lock_db();
        let db = self.ensure_open(&mut guard)?;
        let tx = db.begin_read()?;
        let apex_k = key(apex);
        let Some((first, next, _)) = tx
            .open_table(JOURNAL_ZONES)?
            .get(apex_k.as_slice())?
            .map(|v| v.value())
        else {
            return Ok(None);
        };
        let entries = tx.open_table(JOURNAL)?;
        let mut chain = Vec::new();
        let mut want = from;
        for row in entries.range((apex_k.as_slice(), first)..(apex_k.as_slice(), next))? {
            let (_, v) = row?;
            let Some((f, t)) = journal::serials(v.value()) else {
                return Ok(None);
            };
            // Only the serials are read until the client's is found.
            if chain.is_empty() && f != from {
                continue;
            }
            if f != want {
                return Ok(None);
            }
            match journal::decode(v.value()) {
                Ok(d) => chain.push(d),
                Err(e) => {
                    warn!(zone = %apex, serial = t, "unreadable journal entry: {e}");
                    return Ok(None);
                }
            }
            want = t;
            if t == to {
                return Ok(Some(chain));
            }
        }
        Ok(None)
    }
}

impl JournalSource for Store {
    fn changes(&self, apex: &Name, from: u32, to: u32) -> Option<Vec<Diff>> {
        self.journal_chain(apex, from, to).unwrap_or_else(|e| {
            warn!(zone = %apex, "reading the journal: {}", error_chain(&e));
            None
        })
    }
}

fn encode_error(owner: &Name, rtype: RecordType, reason: String) -> StoreError {
    StoreError::Encode {
        what: format!("the {rtype} record set at {}", format_name(owner)),
        reason,
    }
}

/// A name's key: its wire form, lower-cased and absolute as the zone model keys names.
fn key(name: &Name) -> Vec<u8> {
    encode_name(&crate::zone::normalize(name))
}

fn delete_zone_rrsets(
    t: &mut redb::Table<RrsetCols, &[u8]>,
    apex_k: &[u8],
) -> Result<(), StoreError> {
    let keys: Vec<(Vec<u8>, u16)> = zone_range(t, apex_k)?
        .map(|row| {
            row.map(|(k, _)| {
                let (_, owner, ty) = k.value();
                (owner.to_vec(), ty)
            })
        })
        .collect::<Result<_, _>>()?;
    for (owner, ty) in keys {
        t.remove((apex_k, owner.as_slice(), ty))?;
    }
    Ok(())
}

fn zone_meta(zone: &Zone) -> Vec<u8> {
    encode_zone_meta(zone.soa(), zone.serial())
}

/// A name in wire form: each label as its length and its bytes, then the root's zero. Any byte
/// may be in a label; a [`Name`] already holds labels of 1 to 63 bytes and at most 255 bytes
/// in all, which is what [`decode_name`] checks.
pub fn encode_name(name: &Name) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for label in name.iter() {
        // A label of a `Name` is 1..=63 bytes: its length fits the one byte.
        out.push(u8::try_from(label.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(label);
    }
    out.push(0);
    out
}

/// The name [`encode_name`] wrote (absolute).
pub fn decode_name(wire: &[u8]) -> Result<Name, String> {
    Name::from_labels(wire_labels(wire)?).map_err(|e| e.to_string())
}

/// The labels of a name [`encode_name`] wrote, leftmost first: what [`decode_name`] checks, and
/// what the store's load puts into the zone's key form without building a `Name`.
fn wire_labels(wire: &[u8]) -> Result<Vec<&[u8]>, String> {
    let mut labels: Vec<&[u8]> = Vec::new();
    let mut at = 0;
    loop {
        let Some(&len) = wire.get(at) else {
            return Err("name without its final zero label".into());
        };
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return Err(format!("label of {len} bytes"));
        }
        let label = wire
            .get(at..at + usize::from(len))
            .ok_or("name cut short")?;
        labels.push(label);
        at += usize::from(len);
    }
    if at != wire.len() {
        return Err(format!("{} bytes after the name", wire.len() - at));
    }
    if at > 255 {
        return Err(format!("name of {at} bytes"));
    }
    Ok(labels)
}

/// Zone settings as stored: `serial | soa_ttl | refresh | retry | expire | minimum` (u32,
/// big-endian), then mname and rname in wire form.
pub fn encode_zone_meta(soa: &SoaParams, serial: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + 2 * 64);
    for v in [
        serial,
        soa.ttl,
        soa.refresh,
        soa.retry,
        soa.expire,
        soa.minimum,
    ] {
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&encode_name(&soa.mname));
    out.extend_from_slice(&encode_name(&soa.rname));
    out
}

/// The settings [`encode_zone_meta`] wrote: `(soa, serial)`.
pub fn decode_zone_meta(bytes: &[u8]) -> Result<(SoaParams, u32), String> {
    let (fixed, names) = bytes
        .split_at_checked(24)
        .ok_or("zone settings cut short")?;
    let word = |i: usize| {
        u32::from_be_bytes(
            fixed[i * 4..i * 4 + 4]
                .try_into()
                .expect("4 bytes of a 24-byte slice"),
        )
    };
    let mname_len = wire_name_len(names).ok_or("mname cut short")?;
    let (mname, rname) = names.split_at(mname_len);
    let mut soa = SoaParams::new(
        decode_name(mname).map_err(|e| format!("mname: {e}"))?,
        decode_name(rname).map_err(|e| format!("rname: {e}"))?,
    );
    soa.ttl = word(1);
    soa.refresh = word(2);
    soa.retry = word(3);
    soa.expire = word(4);
    soa.minimum = word(5);
    Ok((soa, word(0)))
}

/// `ttl (u32) | count (u16) | count × (len (u16) | rdata)`, big-endian, RDATA in wire form.
/// Lengths that don't fit their field are an error, never cut: the zone model keeps an RRset
/// within one DNS message, so they always fit.
pub fn encode_rrset(ttl: u32, records: &[RData]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    out.extend_from_slice(&ttl.to_be_bytes());
    let count = u16::try_from(records.len())
        .map_err(|_| format!("{} records (at most 65535)", records.len()))?;
    out.extend_from_slice(&count.to_be_bytes());
    for (i, r) in records.iter().enumerate() {
        let bytes = r.to_bytes().map_err(|e| format!("record {i}: {e}"))?;
        let len = u16::try_from(bytes.len())
            .map_err(|_| format!("record {i}: {} bytes of RDATA", bytes.len()))?;
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&bytes);
    }
    Ok(out)
}

/// The TTL and the records of what [`encode_rrset`] wrote, each record still `len (u16) |
/// rdata`, with the lengths checked against the count and the value's end but the RDATA not
/// read: [`decode_rrset`] without the decoding.
pub fn split_rrset(bytes: &[u8]) -> Result<(u32, &[u8]), String> {
    let take = |at: usize, n: usize| -> Result<&[u8], String> {
        bytes
            .get(at..at + n)
            .ok_or_else(|| format!("truncated at byte {at}"))
    };
    let ttl = u32::from_be_bytes(take(0, 4)?.try_into().expect("4 bytes"));
    let count = u16::from_be_bytes(take(4, 2)?.try_into().expect("2 bytes"));
    let mut at = 6;
    for _ in 0..count {
        let len = u16::from_be_bytes(take(at, 2)?.try_into().expect("2 bytes"));
        take(at + 2, usize::from(len))?;
        at += 2 + usize::from(len);
    }
    if at != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - at));
    }
    Ok((ttl, &bytes[6..]))
}

/// The RRset [`encode_rrset`] wrote.
pub fn decode_rrset(rtype: RecordType, bytes: &[u8]) -> Result<RrSet, String> {
    let take = |at: usize, n: usize| -> Result<&[u8], String> {
        bytes
            .get(at..at + n)
            .ok_or_else(|| format!("truncated at byte {at}"))
    };
    let ttl = u32::from_be_bytes(take(0, 4)?.try_into().expect("4 bytes"));
    let count = u16::from_be_bytes(take(4, 2)?.try_into().expect("2 bytes"));
    let mut at = 6;
    let mut records = Vec::with_capacity(usize::from(count));
    for i in 0..count {
        let len = u16::from_be_bytes(take(at, 2)?.try_into().expect("2 bytes"));
        at += 2;
        let rd = take(at, usize::from(len))?;
        at += usize::from(len);
        records.push(crate::zone::read_rdata(rtype, rd).map_err(|e| format!("record {i}: {e}"))?);
    }
    if at != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - at));
    }
    Ok(RrSet { ttl, records })
}

/// Format 1 -> format 2, inside the caller's transaction: every entry is rewritten with its
/// names in wire form (RRset values were wire form already, and are checked); an entry that
/// can't be read goes to quarantine. The format-1 tables are then deleted.
fn migrate_v1(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut moved = 0usize;
    let mut bad = 0usize;
    {
        let v1_zones = tx.open_table(V1_ZONES)?;
        let v1_rrsets = tx.open_table(V1_RRSETS)?;
        let mut zones_t = tx.open_table(ZONES)?;
        let mut rrsets_t = tx.open_table(RRSETS)?;
        let mut q = tx.open_table(QUARANTINE)?;
        let mut migrated: BTreeSet<String> = BTreeSet::new();
        for row in v1_zones.iter()? {
            let (k, v) = row?;
            let apex_s = k.value();
            let converted = v1_name(apex_s).and_then(|apex| {
                let m: ZoneMetaV1 = serde_json::from_slice(v.value()).map_err(|e| e.to_string())?;
                let mut soa = SoaParams::new(v1_name(&m.mname)?, v1_name(&m.rname)?);
                soa.ttl = m.soa_ttl;
                soa.refresh = m.refresh;
                soa.retry = m.retry;
                soa.expire = m.expire;
                soa.minimum = m.minimum;
                Ok((apex, encode_zone_meta(&soa, m.serial)))
            });
            match converted {
                Ok((apex, meta)) => {
                    zones_t.insert(key(&apex).as_slice(), meta.as_slice())?;
                    migrated.insert(apex_s.to_string());
                    moved += 1;
                }
                Err(reason) => {
                    warn!(zone = apex_s, %reason, "format-1 zone quarantined");
                    q.insert(
                        (V1_ZONES.name(), apex_s.as_bytes()),
                        (reason.as_str(), v.value()),
                    )?;
                    bad += 1;
                }
            }
        }
        for row in v1_rrsets.iter()? {
            let (k, v) = row?;
            let (apex_s, owner_s, t) = k.value();
            let converted = if migrated.contains(apex_s) {
                v1_name(apex_s).and_then(|apex| {
                    let owner = v1_name(owner_s)?;
                    decode_rrset(RecordType::from(t), v.value())?;
                    Ok((apex, owner))
                })
            } else {
                Err("its zone is quarantined".to_string())
            };
            match converted {
                Ok((apex, owner)) => {
                    rrsets_t.insert(
                        (key(&apex).as_slice(), key(&owner).as_slice(), t),
                        v.value(),
                    )?;
                    moved += 1;
                }
                Err(reason) => {
                    warn!(zone = apex_s, owner = owner_s, rtype = t, %reason, "format-1 record set quarantined");
                    let qk = format!("{apex_s} {owner_s} {}", RecordType::from(t));
                    q.insert(
                        (V1_RRSETS.name(), qk.as_bytes()),
                        (reason.as_str(), v.value()),
                    )?;
                    bad += 1;
                }
            }
        }
    }
    tx.delete_table(V1_ZONES)?;
    tx.delete_table(V1_RRSETS)?;
    info!(
        entries = moved,
        quarantined = bad,
        "store migrated from format 1 to format 2"
    );
    Ok(())
}

/// A name as format 1 wrote it: hickory's `to_ascii`, where a byte other than a letter, digit,
/// `-` (not first), `_` or `*` (first) is escaped as `\c` if printable, else as `\ooo` in
/// octal, and labels end in unescaped dots.
fn v1_name(text: &str) -> Result<Name, String> {
    if text == "." {
        return Ok(Name::root());
    }
    let b = text.as_bytes();
    let mut labels: Vec<Vec<u8>> = Vec::new();
    let mut label = Vec::new();
    let mut i = 0;
    let octal = |d: Option<&u8>| d.filter(|d| (b'0'..=b'7').contains(d)).map(|d| d - b'0');
    while i < b.len() {
        match b[i] {
            b'\\' => {
                let digits = (
                    octal(b.get(i + 1)),
                    octal(b.get(i + 2)),
                    octal(b.get(i + 3)),
                );
                if let (Some(a), Some(b2), Some(c)) = digits {
                    let v = u16::from(a) * 64 + u16::from(b2) * 8 + u16::from(c);
                    label.push(u8::try_from(v).map_err(|_| format!("bad escape in {text:?}"))?);
                    i += 4;
                } else {
                    label.push(
                        *b.get(i + 1)
                            .ok_or_else(|| format!("escape at the end of {text:?}"))?,
                    );
                    i += 2;
                }
            }
            b'.' => {
                labels.push(std::mem::take(&mut label));
                i += 1;
            }
            c => {
                label.push(c);
                i += 1;
            }
        }
    }
    if !label.is_empty() {
        labels.push(label);
    }
    Name::from_labels(labels).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_names_read_back_as_hickory_wrote_them() {
        for labels in [
            vec![&b"a+b"[..], b"test"],
            vec![b"x\xffy", b"\x00", b"a.b", b"\\", b"-a", b"a*", b"*"],
        ] {
            let name = Name::from_labels(labels).unwrap();
            let wire = encode_name(&name);
            assert_eq!(encode_name(&v1_name(&name.to_ascii()).unwrap()), wire);
            assert_eq!(encode_name(&decode_name(&wire).unwrap()), wire);
        }
        assert_eq!(v1_name(".").unwrap(), Name::root());
    }

    /// Counts and lengths that don't fit 16 bits are an error, not a wrapped number.
    #[test]
    fn encoding_never_truncates() {
        use hickory_proto::rr::rdata::A;
        let records: Vec<RData> = (0..=u16::MAX as u32 + 1)
            .map(|i| RData::A(A::from(std::net::Ipv4Addr::from(i))))
            .collect();
        let err = encode_rrset(60, &records).unwrap_err();
        assert!(err.contains("65537 records"), "{err}");
        let ok = encode_rrset(60, &records[..65535]).unwrap();
        assert_eq!(
            decode_rrset(RecordType::A, &ok).unwrap().records.len(),
            65535
        );
    }

    /// The journal keeps the newest entries within its limits, in the change's transaction, and
    /// forgets a zone that is deleted.
    #[test]
    fn journal_is_trimmed_oldest_first_and_cleared() {
        use hickory_proto::rr::rdata::A;

        use crate::zone::{Change, Edit};
        let dir = tempfile::tempdir().unwrap();
        let limits = JournalLimits {
            max_entries: 2,
            max_bytes: u64::MAX,
        };
        let store = Store::open(dir.path()).unwrap().with_journal_limits(limits);
        let apex = Name::from_ascii("example.com.").unwrap();
        let mut zs = ZoneSet::new();
        let step = |zs: &mut ZoneSet, edit| {
            let prev = zs.clone();
            let changes = zs.apply(edit).unwrap();
            let ops = journal::diff(&prev, zs, &changes);
            store.persist_journaled(zs, &changes, &ops).unwrap();
        };
        let ns = Name::from_ascii("ns1.example.com.").unwrap();
        let spec = ZoneSpec::new(apex.clone(), ns.clone(), ns.clone(), vec![ns]);
        step(&mut zs, Edit::CreateZone(spec));
        let s0 = zs.zone(&apex).unwrap().serial();
        for i in 0..3 {
            let set = Change::Set {
                name: Name::from_ascii("www.example.com.").unwrap(),
                rtype: RecordType::A,
                ttl: 60,
                records: vec![RData::A(A::new(192, 0, 2, i))],
            };
            step(&mut zs, Edit::Rrset(apex.clone(), set));
        }
        let cur = s0 + 3;
        assert_eq!(store.changes(&apex, s0, cur), None);
        let kept = store.changes(&apex, s0 + 1, cur).unwrap();
        assert_eq!(
            kept.iter().map(|d| (d.from, d.to)).collect::<Vec<_>>(),
            [(s0 + 1, s0 + 2), (s0 + 2, cur)]
        );
        // It was written to disk: a reopened store reads the same.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.changes(&apex, s0 + 2, cur).unwrap().len(), 1);

        let prev = zs.clone();
        let changes = zs.apply(Edit::DeleteZone(apex.clone())).unwrap();
        let ops = journal::diff(&prev, &zs, &changes);
        store.persist_journaled(&zs, &changes, &ops).unwrap();
        assert_eq!(store.changes(&apex, s0 + 2, cur), None);
        store.assert_no_journal();

        // A limit of 0 keeps no journal at all.
        drop(store);
        let off = JournalLimits {
            max_entries: 0,
            ..JournalLimits::default()
        };
        let store = Store::open(dir.path()).unwrap().with_journal_limits(off);
        let ns = Name::from_ascii("ns1.example.com.").unwrap();
        let spec = ZoneSpec::new(apex.clone(), ns.clone(), ns.clone(), vec![ns]);
        let set = Change::Set {
            name: Name::from_ascii("www.example.com.").unwrap(),
            rtype: RecordType::A,
            ttl: 60,
            records: vec![RData::A(A::new(192, 0, 2, 9))],
        };
        for edit in [Edit::CreateZone(spec), Edit::Rrset(apex.clone(), set)] {
            let prev = zs.clone();
            let changes = zs.apply(edit).unwrap();
            let ops = journal::diff(&prev, &zs, &changes);
            store.persist_journaled(&zs, &changes, &ops).unwrap();
        }
        store.assert_no_journal();
    }

    impl Store {
        fn assert_no_journal(&self) {
            let guard = self.lock_db();
            let tx = guard.as_ref().unwrap().begin_read().unwrap();
            assert!(tx.open_table(JOURNAL).unwrap().is_empty().unwrap());
            assert!(tx.open_table(JOURNAL_ZONES).unwrap().is_empty().unwrap());
        }
    }
}
