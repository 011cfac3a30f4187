//! The write path, one way: an [`Edit`] goes through the zone model, the store, the served
//! snapshot and the maps, in that order, before anyone hears "done".
//!
//! ```text
//! Edit -> ZoneSet::apply (on a copy) -> ChangeSet (+ its IXFR journal entries)
//!      -> Store::persist (fsync) -> publish the copy (the fallback answers it)
//!      -> compile::sync (the maps) -> Applied (and a tick for whoever sends NOTIFY)
//! ```
//!
//! The change is made on a copy of the served zones (cheap: the maps are persistent), so nothing
//! needs undoing when the commit fails: the copy is dropped and readers never saw it. If a map
//! write fails after the commit, the fast path is switched off (everything goes to the fallback,
//! which has the change) rather than left answering from stale maps.

use std::sync::{Arc, Mutex};

use hickory_proto::rr::Name;
use tokio::sync::watch;
use tracing::{debug, error, info};

use crate::{
    compile::{self, MapWriter, SyncReport},
    journal::{self, Diff, JournalOp, JournalSource},
    maps::{FastPath, MapWriteError},
    progress::Reporter,
    store::{Store, StoreError},
    zone::{normalize, ChangeSet, Edit, SharedZones, ZoneError, ZoneSet},
};

mod import;
#[cfg(test)]
mod tests;

pub use import::{ImportError, Imported};

/// Where a committed change is made durable. The daemon's is [`Store`]; the engine's tests use
/// one that fails on demand.
pub trait Persist: Send + Sync + 'static {
    /// Writes what `changes` names, as `zones` has it, and the IXFR journal's entries for it,
    /// in one durable transaction; all or nothing.
    fn persist(
        &self,
        zones: &ZoneSet,
        changes: &ChangeSet,
        journal: &[JournalOp],
    ) -> Result<(), StoreError>;

    /// [`Persist::persist`], recording the fleet revision the data now is a copy of in the
    /// same transaction. Stores with nowhere to keep it just persist. The commit need not be
    /// durable before [`Persist::flush`]: the data is a copy of etcd's.
    fn persist_at(
        &self,
        zones: &ZoneSet,
        changes: &ChangeSet,
        journal: &[JournalOp],
        revision: u64,
    ) -> Result<(), StoreError> {
        let _ = revision;
        self.persist(zones, changes, journal)
    }

    /// Makes every [`Persist::persist_at`] so far durable.
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

impl Persist for Store {
    fn persist(
        &self,
        zones: &ZoneSet,
        changes: &ChangeSet,
        journal: &[JournalOp],
    ) -> Result<(), StoreError> {
        Store::persist_journaled(self, zones, changes, journal)
    }

    fn persist_at(
        &self,
        zones: &ZoneSet,
        changes: &ChangeSet,
        journal: &[JournalOp],
        revision: u64,
    ) -> Result<(), StoreError> {
        Store::persist_copy(self, zones, changes, journal, revision)
    }

    fn flush(&self) -> Result<(), StoreError> {
        Store::flush(self)
    }
}

/// Where changes go instead of the local store when the daemon is an edge of a fleet: the
/// fleet's source of truth ([`crate::fleet`]). It commits the edit there and returns once this
/// edge has applied it (through [`Engine::apply_remote`]), so the caller sees it as it would
/// a local change.
pub trait RemoteWriter: Send + Sync + 'static {
    /// Builds the edit from the zones as this edge has them and commits it; `build` may run
    /// again (on a newer version) when another writer got there first. `build` returning
    /// `None` means it refused (its error is the caller's); `Some(None)`: nothing to change.
    fn write(&self, build: RemoteBuild) -> BoxFuture<Result<Option<Applied>, EngineError>>;
}

/// An edit built from a version of the zones (see [`RemoteWriter::write`]).
pub type RemoteBuild = Box<dyn FnMut(&ZoneSet) -> Option<Option<Edit>> + Send>;

type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// One revision of a fleet's data, as an edge applies it: edits through the zone model, then
/// the zones' SOA settings and serials as the source of truth has them.
#[derive(Debug, Default)]
pub struct RemoteChange {
    pub edits: Vec<Edit>,
    /// `(apex, SOA settings, serial)`, set without a serial bump after the edits.
    pub zone_meta: Vec<(Name, crate::zone::SoaParams, u32)>,
    /// The revision the zones are a copy of afterwards (kept in the store's meta table).
    pub revision: u64,
}

/// RRset changes up to which a revision's edits count as small (see [`RemoteChange::is_small`]).
const SMALL_CHANGES: usize = 64;
/// Names to recompile up to which a revision's map write counts as quick.
const QUICK_NAMES: usize = 256;

impl RemoteChange {
    /// A few RRsets changed or a zone's settings: applying it to the (persistent, shared)
    /// zone maps takes microseconds, whatever the zones' sizes. A zone created, replaced or
    /// deleted is not small.
    fn is_small(&self) -> bool {
        let mut count = 0;
        for edit in &self.edits {
            count += match edit {
                Edit::Rrset(..) | Edit::PatchSoa(..) => 1,
                Edit::Batch(_, changes) => changes.len(),
                _ => return false,
            };
        }
        count <= SMALL_CHANGES
    }
}

/// Served fleet revisions whose changes the local copy doesn't have yet, merged.
#[derive(Default)]
struct Unstored {
    changes: ChangeSet,
    journal: Vec<JournalOp>,
    /// The newest of them (None: nothing waits).
    revision: Option<u64>,
    /// The versions they replaced, freed once they are stored.
    replaced: Vec<Arc<ZoneSet>>,
}

/// A fleet revision applied to a copy of the served version, not yet served or stored.
struct StagedRemote {
    /// The version it replaces.
    prev: Arc<ZoneSet>,
    next: Arc<ZoneSet>,
    changes: ChangeSet,
    journal: Vec<JournalOp>,
    revision: u64,
}

impl StagedRemote {
    /// Its map write touches a few names and recompiles no zone whole.
    fn compiles_quickly(&self) -> bool {
        self.changes.zones_full.is_empty() && self.changes.names.len() <= QUICK_NAMES
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Invalid(#[from] ZoneError),
    #[error("the change could not be stored; nothing changed")]
    Store(#[source] StoreError),
    #[error("the change is stored and served by the fallback, but the fast path could not be updated and is switched off")]
    FastPath(#[source] MapWriteError),
    /// In a fleet: the source of truth refused or could not take the change.
    #[error(transparent)]
    Fleet(#[from] crate::fleet::FleetError),
}

/// What a change did.
#[derive(Debug, Clone, Copy)]
pub struct Applied {
    /// The zone's serial after the change (0 for a deleted zone).
    pub serial: u32,
    pub sync: SyncReport,
}

/// The one writer of the served data. `S` makes changes durable, `M` writes the XDP maps; the
/// defaults are the daemon's.
pub struct Engine<S = Store, M = FastPath> {
    /// The served version. Only [`Engine::apply`] publishes a new one.
    zones: SharedZones,
    fast: Option<Mutex<M>>,
    store: S,
    /// One writer at a time: a change goes through memory, disk and maps before the next starts.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Fleet revisions served but not in the local copy yet: small ones wait for the next
    /// flush, and a failed commit waits for the next one (see [`Engine::apply_remote`]).
    unstored: Mutex<Unstored>,
    /// Counts published versions (ticked once the maps have them too), for whoever follows the
    /// serials (NOTIFY): a watch never blocks the writer, and a slow reader just sees the latest
    /// count.
    published: watch::Sender<u64>,
    /// In a fleet, where [`Engine::apply`] sends changes; the engine then only applies what
    /// the fleet's revisions bring ([`Engine::apply_remote`]).
    remote: std::sync::OnceLock<Arc<dyn RemoteWriter>>,
}

impl<S: Persist, M: MapWriter> Engine<S, M> {
    pub fn new(zones: ZoneSet, fast: Option<M>, store: S) -> Arc<Self> {
        Arc::new(Self {
            zones: SharedZones::new(zones),
            fast: fast.map(Mutex::new),
            store,
            writer: Arc::new(tokio::sync::Mutex::new(())),
            unstored: Mutex::new(Unstored::default()),
            published: watch::Sender::new(0),
            remote: std::sync::OnceLock::new(),
        })
    }

    /// Changes each time a new version is published; read [`Engine::zones`] then.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.published.subscribe()
    }

    /// The zones as served now: a snapshot that later changes leave alone.
    pub fn zones(&self) -> Arc<ZoneSet> {
        self.zones.load()
    }

    /// The handle readers keep to take the current snapshot whenever they answer.
    pub fn shared_zones(&self) -> SharedZones {
        self.zones.clone()
    }

    /// The store, for its state (readiness, metrics).
    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn has_fast_path(&self) -> bool {
        self.fast.is_some()
    }

    /// Runs `f` on the fast path's maps, if there are any.
    pub fn with_fast<T>(&self, f: impl FnOnce(&mut M) -> T) -> Option<T> {
        self.fast
            .as_ref()
            .map(|m| f(&mut m.lock().unwrap_or_else(|p| p.into_inner())))
    }

    /// Makes the program pass every query up (the fallback answers from the zones), after a
    /// map write failed and the maps may hold part of a change.
    fn switch_fast_path_off(&self) {
        self.with_fast(|fast| {
            if let Err(e) = fast.disable() {
                error!("switching the fast path off failed too: {e:#}");
            }
        });
    }

    /// Makes the maps hold exactly what the zones compile to (start-up, over pinned maps).
    pub fn full_sync(&self) -> Result<SyncReport, EngineError> {
        self.full_sync_with(&Reporter::silent())
    }

    /// [`Engine::full_sync`], reporting its progress to `progress`.
    ///
    /// If it fails, the fast path is switched off (the program passes every query up), as
    /// after a failed write: the maps may hold part of the store.
    pub fn full_sync_with(&self, progress: &Reporter) -> Result<SyncReport, EngineError> {
        let zones = self.zones();
        let r = self
            .with_fast(|fast| compile::full_sync_with(fast, &zones, progress))
            .unwrap_or(Ok(SyncReport::default()));
        if r.is_err() {
            self.switch_fast_path_off();
        }
        r.map_err(EngineError::FastPath)
    }

    /// Sends every later change to `remote` (a fleet's source of truth) instead of applying it
    /// here. Set once, at start-up.
    pub fn set_remote(&self, remote: Arc<dyn RemoteWriter>) {
        if self.remote.set(remote).is_err() {
            error!("the engine's remote writer is set already");
        }
    }

    /// Applies one change end to end; returns once it is on disk, served by the fallback and in
    /// the maps. In a fleet the change is committed to the fleet's source of truth first and
    /// applied here as the revision it made.
    pub async fn apply(self: &Arc<Self>, edit: Edit) -> Result<Applied, EngineError> {
        if let Some(remote) = self.remote.get() {
            let applied = remote
                .write(Box::new(move |_| Some(Some(edit.clone()))))
                .await?;
            let serial = applied.map_or(0, |a| a.serial);
            return Ok(applied.unwrap_or(Applied {
                serial,
                sync: SyncReport::default(),
            }));
        }
        let _writer = self.writer.lock().await;
        let this = Arc::clone(self);
        // Commit and map writes block (fsync, bpf syscalls): keep them off the async workers.
        tokio::task::spawn_blocking(move || this.apply_blocking(edit, &Reporter::silent()))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// [`Engine::apply`], reporting the compiling of a zone written whole (a zone-file import)
    /// to `progress`.
    pub async fn apply_reporting(
        self: &Arc<Self>,
        edit: Edit,
        progress: &Reporter,
    ) -> Result<Applied, EngineError> {
        // In a fleet the change goes to the source of truth like any other; the map fill then
        // happens as this edge applies the revision.
        if self.remote.get().is_some() {
            return self.apply(edit).await;
        }
        let _writer = self.writer.lock().await;
        let (this, progress) = (Arc::clone(self), progress.clone());
        tokio::task::spawn_blocking(move || this.apply_blocking(edit, &progress))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Builds an edit from the zones as they are when this writer's turn comes and applies it,
    /// with no other write in between: a check `build` makes of the current data (a dynamic
    /// update's prerequisites, RFC 2136 §3.2) still holds when its edit lands. `Ok(None)` from
    /// `build`: nothing to change, nothing applied.
    ///
    /// In a fleet `build` may run more than once: again on a newer version when another writer
    /// committed first.
    pub async fn apply_with<E>(
        self: &Arc<Self>,
        mut build: impl FnMut(&ZoneSet) -> Result<Option<Edit>, E> + Send + 'static,
    ) -> Result<Option<Applied>, E>
    where
        E: From<EngineError> + Send + 'static,
    {
        if let Some(remote) = self.remote.get() {
            // The build's own error is kept here: the remote writer only hears that it refused.
            let refused = Arc::new(Mutex::new(None));
            let slot = Arc::clone(&refused);
            let result = remote
                .write(Box::new(move |zones| match build(zones) {
                    Ok(edit) => Some(edit),
                    Err(e) => {
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
                        None
                    }
                }))
                .await;
            if let Some(e) = refused.lock().unwrap_or_else(|p| p.into_inner()).take() {
                return Err(e);
            }
            return result.map_err(E::from);
        }
        let _writer = self.writer.lock().await;
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            // Under the writer lock the served version is the one the edit is applied to.
            let Some(edit) = build(&this.zones())? else {
                return Ok(None);
            };
            this.apply_blocking(edit, &Reporter::silent())
                .map(Some)
                .map_err(E::from)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// Applies one revision of a fleet's data: its edits and zone settings on a copy, then the
    /// served version and the maps, then the store (with the revision, in the same
    /// transaction). An edit the zone model refuses (data the source of truth should never
    /// hold) is logged and left out; the rest goes in.
    ///
    /// Returns once the maps answer the revision. The store commit comes after: a large
    /// revision's at once, on a blocking thread holding the writer lock (so the next revision
    /// waits for it and commits land in order), a small one's with the next
    /// [`Engine::flush_copy`], merged with the others that came meanwhile. The store is this
    /// edge's copy of etcd's data: what it serves when it starts (until it has caught up with
    /// etcd, or for as long as etcd is out of reach), and the journal IXFR reads (whose
    /// watchers are told only once the commit is in). Its commits are not durable before
    /// [`Engine::flush_copy`] anyway, so serving first and storing later give up nothing a
    /// crash would not. A revision is published as applied a commit sooner, and a small one is
    /// applied right on the calling task rather than handed to a blocking thread and back:
    /// with many edges on few CPUs each such hop is a wait for a thread to be scheduled.
    pub async fn apply_remote(self: &Arc<Self>, change: RemoteChange) -> Result<(), EngineError> {
        let writer = Arc::clone(&self.writer).lock_owned().await;
        let staged = if change.is_small() {
            self.stage_remote(change)
        } else {
            let this = Arc::clone(self);
            tokio::task::spawn_blocking(move || this.stage_remote(change))
                .await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        };
        let (staged, served) = if staged.compiles_quickly() {
            let served = self.serve_remote(&staged);
            (staged, served)
        } else {
            let this = Arc::clone(self);
            tokio::task::spawn_blocking(move || {
                let served = this.serve_remote(&staged);
                (staged, served)
            })
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
        };
        let quick = staged.compiles_quickly();
        let StagedRemote {
            prev,
            next,
            changes,
            journal,
            revision,
        } = staged;
        {
            let mut unstored = self.unstored.lock().unwrap_or_else(|p| p.into_inner());
            unstored.changes.merge(changes);
            unstored.journal.extend(journal);
            unstored.revision = Some(revision);
            unstored.replaced.push(prev);
        }
        // A small revision waits for the next flush (at most `fleet::FLUSH_DELAY` away) and
        // goes into the copy with the others that came meanwhile: a commit of its own, on a
        // thread of its own, for every revision on every edge was a large share of an edge's
        // CPU per write. A large one is stored now, with whatever waits, so that the version
        // it replaced is freed now.
        if quick {
            drop(writer);
            return served;
        }
        let this = Arc::clone(self);
        let commit = move || {
            let replaced = this.store_unstored(&next);
            drop(writer);
            replaced.into_iter().for_each(reclaim);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(commit)),
            Err(_) => commit(),
        }
        served
    }

    /// Stores the served revisions that wait, then makes them durable.
    pub async fn flush_copy(self: &Arc<Self>) -> Result<(), StoreError> {
        let writer = Arc::clone(&self.writer).lock_owned().await;
        let this = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            // Under the writer lock the served version is the newest revision's.
            let replaced = this.store_unstored(&this.zones());
            // Not the fsync: a disk busy with something else would hold up the next revisions'
            // way to the maps. Meanwhile small ones only go into `Unstored`, and the commit of
            // a large one waits for the store's own lock, so commits still land in order.
            drop(writer);
            let flushed = this.store.flush();
            replaced.into_iter().for_each(reclaim);
            flushed
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
    }

    /// A fleet revision on a copy of the served version, with what it changed.
    fn stage_remote(&self, change: RemoteChange) -> StagedRemote {
        let prev = self.zones();
        let mut next = ZoneSet::clone(&prev);
        let mut changes = ChangeSet::default();
        for edit in change.edits {
            let apex = edit.apex().clone();
            match next.apply(edit) {
                Ok(c) => changes.merge(c),
                Err(e) => {
                    error!(zone = %apex, revision = change.revision, "fleet change refused by the zone model; left out: {e}")
                }
            }
        }
        for (apex, soa, serial) in change.zone_meta {
            match next.set_zone_meta(&apex, soa, serial) {
                Ok(c) => changes.merge(c),
                Err(e) => {
                    error!(zone = %apex, revision = change.revision, "fleet zone settings refused; left out: {e}")
                }
            }
        }
        let journal = journal::diff(&prev, &next, &changes);
        StagedRemote {
            prev,
            next: Arc::new(next),
            changes,
            journal,
            revision: change.revision,
        }
    }

    /// Publishes a staged revision and writes it to the maps.
    fn serve_remote(&self, staged: &StagedRemote) -> Result<(), EngineError> {
        if staged.changes.is_empty() {
            return Ok(());
        }
        self.zones.publish(Arc::clone(&staged.next));
        let synced = self.with_fast(|fast| compile::sync(fast, &staged.next, &staged.changes));
        if let Some(Err(e)) = synced {
            error!("fast-path map write failed; switching the fast path off: {e:#}");
            self.switch_fast_path_off();
            return Err(EngineError::FastPath(e));
        }
        // Per revision: debug, not info (a busy fleet would log every write on every edge).
        debug!(
            revision = staged.revision,
            zones = staged.changes.zones_soa.len(),
            "fleet revision applied"
        );
        Ok(())
    }

    /// Commits the served revisions that wait to the local copy, as `zones` (the served
    /// version, with all of them) has them, at the newest one's revision; then tells the
    /// journal's readers. A commit that fails (a full disk) leaves them waiting for the next:
    /// the copy never holds a revision without the data of every one before it. Called under
    /// the writer lock; returns the versions they replaced, for the caller to free once it has
    /// let the lock go (freeing waits for a version's last readers).
    #[must_use]
    fn store_unstored(&self, zones: &ZoneSet) -> Vec<Arc<ZoneSet>> {
        let mut unstored = self.unstored.lock().unwrap_or_else(|p| p.into_inner());
        let Some(revision) = unstored.revision else {
            return Vec::new();
        };
        let replaced = std::mem::take(&mut unstored.replaced);
        let changed = !unstored.changes.is_empty();
        match self
            .store
            .persist_at(zones, &unstored.changes, &unstored.journal, revision)
        {
            Ok(()) => {
                *unstored = Unstored::default();
                drop(unstored);
                if changed {
                    // Only now: a secondary told of the change asks for it by IXFR, from the
                    // journal this commit wrote.
                    self.published.send_modify(|n| *n += 1);
                }
            }
            Err(e) => {
                drop(unstored);
                error!(
                    revision,
                    "commit of fleet revisions to the local copy failed; they go in with the next one: {e:#}"
                );
            }
        }
        replaced
    }

    /// [`Engine::apply`] under the writer lock.
    fn apply_blocking(&self, edit: Edit, progress: &Reporter) -> Result<Applied, EngineError> {
        let apex = normalize(edit.apex());
        let prev = self.zones();
        let mut next = ZoneSet::clone(&prev);
        let changes = next.apply(edit)?;
        let journal = journal::diff(&prev, &next, &changes);
        if let Err(e) = self.store.persist(&next, &changes, &journal) {
            error!(zone = %apex, "commit failed; the change is dropped: {e:#}");
            return Err(EngineError::Store(e));
        }
        let next = Arc::new(next);
        self.zones.publish(Arc::clone(&next));
        let serial = next.zone(&apex).map_or(0, |z| z.serial());
        let sync = match self.with_fast(|fast| compile::sync_with(fast, &next, &changes, progress))
        {
            None => SyncReport::default(),
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                error!("fast-path map write failed; switching the fast path off: {e:#}");
                self.switch_fast_path_off();
                self.published.send_modify(|n| *n += 1);
                return Err(EngineError::FastPath(e));
            }
        };
        // Only now: a secondary told of the change asks the fast path for our SOA first.
        self.published.send_modify(|n| *n += 1);
        info!(zone = %apex, serial, ?sync, "change applied");
        // Not under the writer lock: the wait for the version's last readers would hold up the
        // answer and the next write.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(move || reclaim(prev))),
            Err(_) => reclaim(prev),
        }
        Ok(Applied { serial, sync })
    }
}

/// The engine reads the journal its store keeps, so the fallback needs only the engine.
impl<S: Persist + JournalSource, M: MapWriter> JournalSource for Engine<S, M> {
    fn changes(&self, apex: &Name, from: u32, to: u32) -> Option<Vec<Diff>> {
        self.store.changes(apex, from, to)
    }
}

/// Frees the version a change replaced here, on a thread of the writer's. Whoever drops the last
/// reference to a version frees what only it held (a replaced zone can be a million records, tens
/// of milliseconds of freeing): left to chance, that would be a reader that was answering a query
/// when the new version was published, and its query would wait. Readers hold a version for one
/// answer, so it is normally free at once; after a short while it is left to the last holder.
fn reclaim(mut old: Arc<ZoneSet>) {
    const TRIES: u32 = 100;
    for _ in 0..TRIES {
        match Arc::try_unwrap(old) {
            Ok(zones) => {
                drop(zones);
                return;
            }
            Err(shared) => old = shared,
        }
        std::thread::sleep(std::time::Duration::from_micros(100));
    }
}
