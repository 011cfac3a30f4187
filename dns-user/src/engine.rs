//! The write path: one change at a time, through memory, disk and the maps, before anyone hears
//! "done".
//!
//! For each change: apply it to the in-memory [`ZoneSet`] (which validates first and changes
//! nothing on error), commit what it touched to the store (fsync), recompile the touched names
//! into the BPF maps, and only then return. If the commit fails the change is undone in memory;
//! if a map write fails the fast path is switched off (everything goes to the fallback, which
//! has the change) rather than left answering from stale maps.

use std::sync::{Arc, Mutex, RwLock};

use hickory_proto::rr::{Name, RData, RecordType};
use tracing::{error, info};

use crate::{
    compile::{self, SyncReport},
    maps::FastPath,
    store::{Store, StoreError, Touched},
    zone::{
        normalize, Change, Dirty, RrSet, SharedZones, SoaParams, Zone, ZoneError, ZoneSet, ZoneSpec,
    },
};

/// One change to the served data.
#[derive(Clone, Debug)]
pub enum Op {
    CreateZone(ZoneSpec),
    DeleteZone(Name),
    SetSoa(Name, SoaParams),
    /// Change some SOA fields, the others as they are when the change is applied.
    PatchSoa(Name, SoaChange),
    SetRrset {
        apex: Name,
        name: Name,
        rtype: RecordType,
        ttl: u32,
        records: Vec<RData>,
    },
    DeleteRrset {
        apex: Name,
        name: Name,
        rtype: RecordType,
    },
    Batch {
        apex: Name,
        changes: Vec<Change>,
    },
    /// Replace a zone's whole contents (zone-file import): SOA, NS and records.
    ReplaceZone {
        spec: ZoneSpec,
        rrsets: Vec<(Name, RecordType, RrSet)>,
    },
}

/// SOA fields to change; `None` keeps the field.
#[derive(Clone, Debug, Default)]
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
        self.mname.is_none()
            && self.rname.is_none()
            && [
                self.refresh,
                self.retry,
                self.expire,
                self.minimum,
                self.ttl,
            ]
            .iter()
            .all(Option::is_none)
    }

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

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Invalid(#[from] ZoneError),
    #[error("the change could not be stored; nothing changed")]
    Store(#[source] StoreError),
    #[error("the change is stored and served by the fallback, but the fast path could not be updated and is switched off")]
    FastPath(#[source] crate::maps::MapWriteError),
}

/// What a change did.
#[derive(Debug, Clone, Copy)]
pub struct Applied {
    /// The zone's serial after the change (0 for a deleted zone).
    pub serial: u32,
    pub sync: SyncReport,
}

pub struct Engine {
    pub zones: SharedZones,
    fast: Option<Mutex<FastPath>>,
    store: Store,
    /// One writer at a time: a change goes through memory, disk and maps before the next starts.
    writer: tokio::sync::Mutex<()>,
}

/// The state to restore if the commit fails.
enum Undo {
    /// The whole zone as it was (`None`: it didn't exist).
    Zone(Name, Option<Zone>),
    /// The RRsets the change touched, the SOA settings and the serial, as they were.
    Records {
        apex: Name,
        before: Vec<(Name, RecordType, Option<RrSet>)>,
        serial: Option<u32>,
        soa: Option<SoaParams>,
    },
}

impl Engine {
    pub fn new(zones: ZoneSet, fast: Option<FastPath>, store: Store) -> Arc<Self> {
        Arc::new(Self {
            zones: Arc::new(RwLock::new(zones)),
            fast: fast.map(Mutex::new),
            store,
            writer: tokio::sync::Mutex::new(()),
        })
    }

    /// The store, for its state (readiness, metrics).
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn has_fast_path(&self) -> bool {
        self.fast.is_some()
    }

    /// Runs `f` on the fast path's maps, if there are any.
    pub fn with_fast<T>(&self, f: impl FnOnce(&mut FastPath) -> T) -> Option<T> {
        self.fast
            .as_ref()
            .map(|m| f(&mut m.lock().unwrap_or_else(|p| p.into_inner())))
    }

    /// Makes the maps hold exactly what the zones compile to (start-up, over pinned maps).
    pub fn full_sync(&self) -> Result<SyncReport, EngineError> {
        let zones = self.zones.read().unwrap_or_else(|p| p.into_inner());
        self.with_fast(|fast| compile::full_sync(fast, &zones))
            .unwrap_or(Ok(SyncReport::default()))
            .map_err(EngineError::FastPath)
    }

    /// Applies one change end to end; returns once it is in memory, on disk and in the maps.
    pub async fn apply(self: &Arc<Self>, op: Op) -> Result<Applied, EngineError> {
        let _writer = self.writer.lock().await;
        let this = Arc::clone(self);
        // Commit and map writes block (fsync, bpf syscalls): keep them off the async workers.
        tokio::task::spawn_blocking(move || this.apply_blocking(op))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    fn apply_blocking(&self, op: Op) -> Result<Applied, EngineError> {
        let apex = normalize(match &op {
            Op::CreateZone(spec) => &spec.apex,
            Op::ReplaceZone { spec, .. } => &spec.apex,
            Op::DeleteZone(a) | Op::SetSoa(a, _) | Op::PatchSoa(a, _) => a,
            Op::SetRrset { apex, .. } | Op::DeleteRrset { apex, .. } | Op::Batch { apex, .. } => {
                apex
            }
        });
        let mut touched = Touched::default();
        touched.zones.insert(apex.clone());
        let (dirty, undo) = {
            let mut zones = self.zones.write().unwrap_or_else(|p| p.into_inner());
            // Keep what the change replaces, to put it back if the commit fails. Changes to
            // records keep only the zone's touched RRsets; whole-zone changes keep the zone.
            let undo = match &op {
                Op::SetRrset { .. }
                | Op::DeleteRrset { .. }
                | Op::Batch { .. }
                | Op::SetSoa(..) => None,
                _ => Some(Undo::Zone(apex.clone(), zones.zone(&apex).cloned())),
            };
            let before = rrset_snapshot(&zones, &apex, &op);
            let serial_before = zones.zone(&apex).map(Zone::serial);
            let soa_before = zones.zone(&apex).map(|z| z.soa().clone());
            let dirty = apply_op(&mut zones, op.clone())?;
            match &op {
                Op::CreateZone(_) | Op::ReplaceZone { .. } => {
                    touched.zones_full.insert(apex.clone());
                }
                Op::DeleteZone(_) => {}
                _ => {
                    for (name, rtype, _) in &before {
                        touched.rrsets.insert((apex.clone(), name.clone(), *rtype));
                    }
                }
            }
            (
                dirty,
                undo.unwrap_or(Undo::Records {
                    apex: apex.clone(),
                    before,
                    serial: serial_before,
                    soa: soa_before,
                }),
            )
        };
        // Commit. Readers (the fallback) may see the change a moment before it is durable; if
        // the commit fails it is taken back before anyone is told it happened.
        {
            let zones = self.zones.read().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = self.store.persist(&zones, &touched) {
                drop(zones);
                error!("commit failed, undoing the change in memory: {e:#}");
                let mut zones = self.zones.write().unwrap_or_else(|p| p.into_inner());
                undo.restore(&mut zones);
                // The maps were not written yet: nothing else to undo.
                return Err(EngineError::Store(e));
            }
        }
        let zones = self.zones.read().unwrap_or_else(|p| p.into_inner());
        let serial = zones.zone(&apex).map(Zone::serial).unwrap_or(0);
        let sync = match self.with_fast(|fast| compile::sync(fast, &zones, &dirty)) {
            None => SyncReport::default(),
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                error!("fast-path map write failed; switching the fast path off: {e:#}");
                self.with_fast(|fast| {
                    if let Ok(mut cfg) = fast.config() {
                        cfg.enabled = 0;
                        let _ = fast.set_config(cfg);
                    }
                });
                return Err(EngineError::FastPath(e));
            }
        };
        info!(zone = %apex, serial, ?sync, "change applied");
        Ok(Applied { serial, sync })
    }
}

/// The RRsets an op touches, with their values before it: `(owner, type, value)`.
fn rrset_snapshot(zones: &ZoneSet, apex: &Name, op: &Op) -> Vec<(Name, RecordType, Option<RrSet>)> {
    let Some(zone) = zones.zone(apex) else {
        return Vec::new();
    };
    let pairs: Vec<(Name, RecordType)> = match op {
        Op::SetRrset { name, rtype, .. } | Op::DeleteRrset { name, rtype, .. } => {
            vec![(normalize(name), *rtype)]
        }
        Op::Batch { changes, .. } => changes
            .iter()
            .map(|c| match c {
                Change::Set { name, rtype, .. } | Change::Delete { name, rtype } => {
                    (normalize(name), *rtype)
                }
            })
            .collect(),
        _ => Vec::new(),
    };
    pairs
        .into_iter()
        .map(|(n, t)| {
            let v = zone.rrset(&n, t).cloned();
            (n, t, v)
        })
        .collect()
}

fn apply_op(zones: &mut ZoneSet, op: Op) -> Result<Dirty, ZoneError> {
    match op {
        Op::CreateZone(spec) => zones.create_zone(spec),
        Op::DeleteZone(apex) => zones.delete_zone(&apex),
        Op::SetSoa(apex, soa) => zones.set_soa(&apex, soa),
        Op::PatchSoa(apex, change) => {
            // Read and write under the writer lock: two patches of different fields both land.
            let current = zones.zone(&apex).map(|z| z.soa().clone());
            match current {
                Some(cur) => zones.set_soa(&apex, change.apply_to(&cur)),
                // Let the zone model say the zone is unknown.
                None => zones.set_soa(
                    &apex,
                    change.apply_to(&SoaParams::new(Name::root(), Name::root())),
                ),
            }
        }
        Op::SetRrset {
            apex,
            name,
            rtype,
            ttl,
            records,
        } => zones.set_rrset(&apex, &name, rtype, ttl, records),
        Op::DeleteRrset { apex, name, rtype } => zones.delete_rrset(&apex, &name, rtype),
        Op::Batch { apex, changes } => zones.apply_batch(&apex, changes),
        Op::ReplaceZone { mut spec, rrsets } => {
            let apex = normalize(&spec.apex);
            // The serial only moves forward (RFC 1982), whatever the file says.
            spec.serial =
                crate::zonefile::import_serial(zones.zone(&apex).map(Zone::serial), spec.serial);
            let mut dirty = Dirty::default();
            let old = zones.remove_zone(&apex);
            if let Some(old) = &old {
                dirty.names.extend(old.existing_names());
            }
            if let Err(e) = zones.load_zone(spec, rrsets) {
                // Put the old zone back as it was.
                zones.remove_zone(&apex);
                if let Some(old) = old {
                    zones.insert_zone(old);
                }
                return Err(e);
            }
            dirty.zones_full.insert(apex.clone());
            dirty.zones_soa.insert(apex.clone());
            if let Some(z) = zones.zone(&apex) {
                dirty.names.extend(z.existing_names());
            }
            Ok(dirty)
        }
    }
}

impl Undo {
    fn restore(self, zones: &mut ZoneSet) {
        match self {
            Undo::Zone(apex, old) => {
                zones.remove_zone(&apex);
                if let Some(z) = old {
                    zones.insert_zone(z);
                }
            }
            Undo::Records {
                apex,
                before,
                serial,
                soa,
            } => {
                zones.restore_rrsets(&apex, before);
                if let Some(soa) = soa {
                    let _ = zones.set_soa(&apex, soa);
                }
                if let Some(serial) = serial {
                    zones.set_serial(&apex, serial);
                }
            }
        }
    }
}
