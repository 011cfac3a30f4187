//! The fleet's writer: an edit is validated by the zone model on a copy of this edge's version
//! of the zones, turned into the keys it puts and deletes, and committed as one etcd
//! transaction guarded by the mod revisions of the zones it read. Every edit changes its zone's
//! key (the serial moves), so "the zone key is at the mod revision my version has" means "the
//! zone is exactly as I validated against": two edges validating against their own versions
//! can't both win, and the loser retries on the newer version once its follower has it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
};
use hickory_proto::rr::Name;
use tracing::{debug, info};

use super::{codec, connect, request, EtcdArgs, Fleet, FleetError, Keys, LOCAL_APPLY_WAIT};
use crate::{
    compile::SyncReport,
    engine::{Applied, EngineError, RemoteBuild, RemoteWriter},
    store::Store,
    zone::{normalize, ChangeSet, RrSet, ZoneSet},
};
use std::sync::atomic::Ordering;

/// etcd's default `--max-txn-ops`: operations in one transaction.
pub const MAX_OPS: usize = 128;
/// etcd's default `--max-request-bytes` (1.5 MiB), less room for the request's framing.
pub const MAX_BYTES: usize = 1536 * 1024 - 16 * 1024;
/// Tries of one write when other writers keep committing to the same zone first.
const MAX_ATTEMPTS: usize = 16;

tokio::task_local! {
    /// The HTTP request a write belongs to: its `If-Match` revision, and where the writer
    /// leaves the revision it committed and the edges that hadn't applied it in time, for the
    /// API to answer with (`X-Edgedns-Revision`, 202).
    pub static WRITE: WriteContext;
}

/// See [`WRITE`].
#[derive(Debug, Default)]
pub struct WriteContext {
    pub if_match: Option<i64>,
    pub outcome: Mutex<Option<Outcome>>,
}

/// What a committed write came to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub revision: i64,
    /// Live edges that had not applied the revision when the wait ended (empty: in sync).
    pub behind: Vec<String>,
}

/// The engine's [`RemoteWriter`] in a fleet. It holds the fleet weakly: the fleet holds the
/// engine, and a cycle would keep both (and the store's file) alive after the daemon stops.
pub struct Writer(pub std::sync::Weak<Fleet>);

impl RemoteWriter for Writer {
    fn write(
        &self,
        build: RemoteBuild,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Option<Applied>, EngineError>> + Send>,
    > {
        let fleet = self.0.upgrade();
        Box::pin(async move {
            match fleet {
                Some(fleet) => write(&fleet, build).await,
                None => Err(FleetError::Stopped.into()),
            }
        })
    }
}

/// The keys one edit puts and deletes.
#[derive(Debug, Default)]
struct Plan {
    puts: BTreeMap<String, Vec<u8>>,
    deletes: BTreeSet<String>,
    /// Key prefixes deleted whole (a deleted zone's RRsets).
    prefix_deletes: BTreeSet<String>,
    /// The zones the edit changed: each one's key is in `puts` or `deletes`.
    zones: BTreeSet<Name>,
}

impl Plan {
    fn ops(&self) -> usize {
        self.puts.len() + self.deletes.len() + self.prefix_deletes.len()
    }

    fn bytes(&self) -> usize {
        // Each operation carries its key and a few bytes of framing.
        self.puts
            .iter()
            .map(|(k, v)| k.len() + v.len() + 8)
            .sum::<usize>()
            + self
                .deletes
                .iter()
                .chain(&self.prefix_deletes)
                .map(|k| 2 * k.len() + 8)
                .sum::<usize>()
    }

    fn check_limits(&self) -> Result<(), FleetError> {
        // And the write's marker.
        let ops = self.ops() + 1;
        if ops > MAX_OPS {
            return Err(FleetError::TooManyOps {
                needed: ops,
                limit: MAX_OPS,
            });
        }
        let bytes = self.bytes();
        if bytes > MAX_BYTES {
            return Err(FleetError::TooLarge {
                bytes,
                limit: MAX_BYTES,
            });
        }
        Ok(())
    }

    fn txn_ops(&self) -> Vec<TxnOp> {
        let mut ops = Vec::with_capacity(self.ops());
        for (k, v) in &self.puts {
            ops.push(TxnOp::put(k.as_str(), v.clone(), None));
        }
        for k in &self.deletes {
            ops.push(TxnOp::delete(k.as_str(), None));
        }
        for p in &self.prefix_deletes {
            ops.push(TxnOp::delete(
                p.as_str(),
                Some(DeleteOptions::new().with_prefix()),
            ));
        }
        ops
    }
}

fn encode_set(
    keys: &Keys,
    plan: &mut Plan,
    apex: &Name,
    owner: &Name,
    rtype: hickory_proto::rr::RecordType,
    set: &RrSet,
) -> Result<(), FleetError> {
    let v = codec::encode_rrset_value(apex, owner, rtype, set).map_err(|reason| {
        FleetError::Encode {
            what: format!("the {rtype} record set at {owner}"),
            reason,
        }
    })?;
    plan.puts.insert(keys.rrset(apex, owner, rtype), v);
    Ok(())
}

/// The keys that make etcd hold what `changes` names, as `next` has it (`prev`: the version
/// the edit was applied to). The same reading of a [`ChangeSet`] as the store's.
fn plan(
    keys: &Keys,
    prev: &ZoneSet,
    next: &ZoneSet,
    changes: &ChangeSet,
) -> Result<Plan, FleetError> {
    let mut plan = Plan::default();
    for apex in changes.zones_soa.iter().chain(&changes.zones_replaced) {
        plan.zones.insert(apex.clone());
        match next.zone(apex) {
            Some(z) => {
                plan.puts.insert(
                    keys.zone(apex),
                    codec::encode_zone(apex, z.soa(), z.serial()),
                );
            }
            None => {
                plan.deletes.insert(keys.zone(apex));
                plan.prefix_deletes.insert(keys.zone_rrsets(apex));
            }
        }
    }
    for apex in &changes.zones_replaced {
        let Some(zone) = next.zone(apex) else {
            continue;
        };
        for (owner, rtype, ttl, records) in zone.records() {
            let set = RrSet {
                ttl,
                records: records.to_vec(),
            };
            encode_set(keys, &mut plan, apex, &owner, rtype, &set)?;
        }
        if let Some(old) = prev.zone(apex) {
            for (owner, rtype, _, _) in old.records() {
                let k = keys.rrset(apex, &owner, rtype);
                if !plan.puts.contains_key(&k) {
                    plan.deletes.insert(k);
                }
            }
        }
    }
    for (apex, owner, rtype) in &changes.rrsets {
        if changes.zones_replaced.contains(apex) {
            continue;
        }
        plan.zones.insert(apex.clone());
        let Some(zone) = next.zone(apex) else {
            continue;
        };
        match zone.rrset(owner, *rtype) {
            Some(set) => encode_set(keys, &mut plan, apex, owner, *rtype, &set)?,
            None => {
                plan.deletes.insert(keys.rrset(apex, owner, *rtype));
            }
        }
    }
    Ok(plan)
}

/// An etcd refusal of a request's size, as the 413 it is.
fn size_error(e: FleetError) -> FleetError {
    match &e {
        FleetError::Unavailable(etcd_client::Error::GRpcStatus(s))
            if s.message().contains("too large") || s.message().contains("too many operations") =>
        {
            FleetError::TooLarge {
                bytes: 0,
                limit: MAX_BYTES,
            }
        }
        _ => e,
    }
}

async fn write(fleet: &Arc<Fleet>, mut build: RemoteBuild) -> Result<Option<Applied>, EngineError> {
    let if_match = WRITE.try_with(|c| c.if_match).ok().flatten();
    let started = Instant::now();
    let mut last_zone = String::new();
    // Every transaction of this write puts this id in the edge's marker key: a transaction
    // whose answer was lost is found out by reading the marker (or by a retry that loses on
    // the zone's mod revision and reads it), so a write never applies twice.
    let write_id = fleet.next_write_id();
    let marker = fleet.keys.write_marker(&fleet.edge_id);
    let edges = fleet.keys.edges();
    let mut unknown = Unknown::default();
    let mut retry_pause = Duration::from_millis(50);
    let mut attempt = 0;
    while attempt < MAX_ATTEMPTS {
        // One transaction in flight per edge: this edge's writers would only race each other
        // (every write to a zone moves its key). Held until this edge has applied the write, so
        // the next one validates against it; not while the other edges confirm.
        let turn = fleet.write_turn.lock().await;
        // The version and the zone keys' mod revisions it was made from, as one pair.
        let (zones, mods) = {
            let applied = fleet.applied.lock().await;
            (fleet.engine.zones(), applied.zone_mods.clone())
        };
        let Some(edit) = build(&zones) else {
            return Ok(None);
        };
        let Some(edit) = edit else {
            return Ok(None);
        };
        let apex = normalize(edit.apex());
        last_zone = apex.to_string();
        let mut next = ZoneSet::clone(&zones);
        let changes = next.apply(edit)?;
        let plan = plan(&fleet.keys, &zones, &next, &changes)?;
        // Not held while the write waits: the engine frees a version it replaces once nobody
        // holds it (on a blocking task, waiting a little for the last readers).
        drop((zones, next, changes));
        plan.check_limits()?;
        let mut compares = Vec::new();
        let mut reads = Vec::new();
        for z in &plan.zones {
            let key = fleet.keys.zone(z);
            compares.push(match mods.get(z) {
                Some(m) => Compare::mod_revision(key.as_str(), CompareOp::Equal, *m),
                None => Compare::version(key.as_str(), CompareOp::Equal, 0),
            });
            if let Some(r) = if_match {
                compares.push(Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Less,
                    r.saturating_add(1),
                ));
            }
            reads.push(TxnOp::get(key.as_str(), None));
        }
        reads.push(TxnOp::get(marker.as_str(), None));
        // Under the edge's lease: once the lease has run out, a transaction still on its way
        // (queued in a connection cut off from etcd) is refused whole when it arrives.
        let lease = fleet.lease.load(std::sync::atomic::Ordering::Relaxed);
        // Cut off from etcd for longer than the lease (its keep-alives and the watch's
        // progress answer several times a lease when it is within reach): a transaction would
        // only wait out its timeout and then the lease, to be sure it can't land. None is
        // sent, so none can.
        let silent = fleet
            .since_contact()
            .filter(|d| *d > Duration::from_secs(fleet.args.lease_ttl.into()));
        let refusal = match (lease, silent) {
            (0, _) => Some(FleetError::NoLease),
            (_, Some(silent)) => Some(FleetError::CutOff(silent)),
            _ => None,
        };
        if let Some(refusal) = refusal {
            if unknown.leases.is_empty() {
                return Err(refusal.into());
            }
            // An earlier attempt's outcome is still unknown, and a 503 must mean that nothing
            // of the write lands, then or later: wait until that is known.
            loop {
                match landed(fleet, &marker, &write_id, &mut unknown, started).await {
                    Landed::Yes(revision) => {
                        return committed(fleet, turn, revision, None, &apex, started).await;
                    }
                    Landed::Never(e) => return Err(e.into()),
                    Landed::No => tokio::time::sleep(retry_pause).await,
                }
            }
        }
        let mut ops = plan.txn_ops();
        ops.push(TxnOp::put(
            marker.as_str(),
            write_id.as_bytes().to_vec(),
            Some(PutOptions::new().with_lease(lease)),
        ));
        // Where the other edges ack the write (see `acks`): left out at the operation limit,
        // and then they publish it in their registrations.
        if let Some(address) = fleet.acks.address() {
            if ops.len() < MAX_OPS {
                ops.push(TxnOp::put(
                    fleet.keys.write_ack(&fleet.edge_id),
                    address,
                    Some(PutOptions::new().with_lease(lease)),
                ));
            }
        }
        // The edges' registrations as of the write, read by the transaction itself: the
        // confirmation waits for every edge registered by then without reading them again
        // (a round trip to etcd's leader on every write). Left out of a batch at the
        // operation limit, which then reads them after the commit.
        let read_edges = ops.len() < MAX_OPS;
        if read_edges {
            ops.push(TxnOp::get(
                edges.as_str(),
                Some(GetOptions::new().with_prefix()),
            ));
        }
        let txn = Txn::new().when(compares).and_then(ops).or_else(reads);
        let mut kv = fleet.client.kv_client();
        let sent = tokio::time::timeout(ATTEMPT_TIMEOUT, kv.txn(txn)).await;
        let resp = match sent.map(|r| r.map_err(|e| size_error(FleetError::Unavailable(e)))) {
            Ok(Ok(resp)) => resp,
            Ok(Err(e @ FleetError::TooLarge { .. })) => return Err(e.into()),
            outcome => {
                // The transaction may or may not have been applied (or may still be on its
                // way): find out before answering, and retry on another connection if it
                // was not.
                let error = match outcome {
                    Ok(Err(e)) => e,
                    _ => FleetError::Timeout(ATTEMPT_TIMEOUT),
                };
                debug!(zone = %apex, attempt, "fleet write's outcome unknown: {}", crate::error_chain(&error));
                unknown.note(lease, error);
                match landed(fleet, &marker, &write_id, &mut unknown, started).await {
                    Landed::Yes(revision) => {
                        return committed(fleet, turn, revision, None, &apex, started).await;
                    }
                    Landed::No => {
                        // Again in a moment, when the client may have dropped a dead
                        // endpoint or the edge holds a new lease.
                        drop(turn);
                        tokio::time::sleep(retry_pause).await;
                        retry_pause = super::next_backoff(retry_pause, Duration::ZERO);
                        continue;
                    }
                    Landed::Never(e) => return Err(e.into()),
                }
            }
        };
        fleet.contact();
        let revision = resp.header().map_or(0, |h| h.revision());
        if resp.succeeded() {
            debug!(zone = %apex, revision, attempt, "fleet write committed");
            let registrations = match resp.op_responses().pop() {
                Some(TxnOpResponse::Get(g)) if read_edges => Some(g),
                _ => None,
            };
            return committed(fleet, turn, revision, registrations, &apex, started).await;
        }
        // An earlier transaction of this write whose answer was lost landed after all (and
        // moved the zone's key, so this one lost).
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(g) = op {
                for kv in g.kvs() {
                    if kv.key() == marker.as_bytes() && kv.value() == write_id.as_bytes() {
                        let revision = kv.mod_revision();
                        return committed(fleet, turn, revision, None, &apex, started).await;
                    }
                }
            }
        }
        // Someone else changed a zone first (or this edge hadn't applied it yet): catch up to
        // the zone keys as they are now, then validate again.
        let mut newest = 0;
        for op in resp.op_responses() {
            if let TxnOpResponse::Get(g) = op {
                for kv in g.kvs() {
                    if kv.key() == marker.as_bytes() {
                        continue;
                    }
                    newest = newest.max(kv.mod_revision());
                    if let Some(r) = if_match {
                        if kv.mod_revision() > r {
                            return Err(FleetError::PreconditionFailed {
                                zone: apex.to_string(),
                                if_match: r,
                                current: kv.mod_revision(),
                            }
                            .into());
                        }
                    }
                }
            }
        }
        debug!(zone = %apex, revision, newest, attempt, "fleet write lost a race; catching up");
        let needed = if newest == 0 { revision } else { newest };
        wait_applied(fleet, needed, LOCAL_APPLY_WAIT).await?;
        drop(turn);
        attempt += 1;
    }
    Err(FleetError::Contended { zone: last_zone }.into())
}

/// Longest one transaction may take before its outcome counts as unknown.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest one read of the marker may take.
const MARKER_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Past the latest moment the edge's lease could run out by its own clock, how long to wait
/// more before counting on it: etcd's leader measures it, and a new leader extends leases by
/// an election timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(2);

/// The transactions of one write whose outcome was unknown: the leases they were put under and
/// the last error.
#[derive(Default)]
struct Unknown {
    leases: Vec<i64>,
    error: Option<FleetError>,
    /// Those leases were revoked: nothing of this write can land any more.
    fenced: bool,
}

impl Unknown {
    fn note(&mut self, lease: i64, error: FleetError) {
        if !self.leases.contains(&lease) {
            self.leases.push(lease);
        }
        self.error = Some(error);
    }

    /// Whether none of the transactions can land any more: their leases were revoked, or have
    /// surely run out by now.
    fn settled(&self, fleet: &Fleet) -> bool {
        self.fenced
            || self.leases.iter().all(|lease| {
                fleet
                    .lease_expires(*lease)
                    .is_some_and(|t| Instant::now() >= t + LEASE_MARGIN)
            })
    }

    fn failure(&mut self) -> FleetError {
        match self.error.take() {
            Some(e @ FleetError::Unavailable(_)) => e,
            _ => FleetError::Timeout(super::REQUEST_TIMEOUT),
        }
    }
}

enum Landed {
    /// Applied at this revision.
    Yes(i64),
    /// Not applied yet: a retry is safe (if the earlier one lands first, the retry loses on
    /// the zone's mod revision and reads the marker).
    No,
    /// Not applied, and can't be any more: the answer is that error.
    Never(FleetError),
}

/// The marker's mod revision if it holds `write_id` (None: it doesn't; Err: etcd didn't answer).
async fn read_marker(fleet: &Fleet, marker: &str, write_id: &str) -> Result<Option<i64>, ()> {
    let mut kv = fleet.client.kv_client();
    match tokio::time::timeout(MARKER_READ_TIMEOUT, kv.get(marker, None)).await {
        Ok(Ok(resp)) => {
            fleet.contact();
            Ok(resp
                .kvs()
                .first()
                .filter(|kv| kv.value() == write_id.as_bytes())
                .map(|kv| kv.mod_revision()))
        }
        _ => Err(()),
    }
}

/// Revokes the leases the write's lost transactions were put under: one still on its way is
/// then refused when it arrives. The edge registers again under a new lease.
async fn fence(fleet: &Fleet, leases: &[i64]) -> bool {
    // Revoking the registration's lease ends the registration: writes stop waiting for this
    // edge at once, so its misses are stale from before the revoke is sent.
    let registration = if leases.contains(&fleet.lease.load(Ordering::Relaxed)) {
        fleet.unregistered()
    } else {
        super::NOT_REGISTERED
    };
    let mut client = fleet.client.lease_client();
    for lease in leases {
        match tokio::time::timeout(MARKER_READ_TIMEOUT, client.revoke(*lease)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) if super::lease_gone(&e) => {}
            _ => {
                // Not revoked, as far as this edge can tell: the registration may stand.
                fleet.registration_in_doubt(registration);
                return false;
            }
        }
    }
    true
}

/// Finds out whether one of this write's transactions landed. Within the request timeout a
/// "not yet" lets the write try again; the answer is a failure only once nothing of the write
/// can land any more (its leases revoked or run out), so a 503 means nothing was written,
/// then or later. Bounded: the lease's end (with a margin), or twice the request timeout.
async fn landed(
    fleet: &Fleet,
    marker: &str,
    write_id: &str,
    unknown: &mut Unknown,
    started: Instant,
) -> Landed {
    let mut backoff = super::BACKOFF_MIN;
    let lease = Duration::from_secs(fleet.args.lease_ttl.into());
    let give_up = started + (super::REQUEST_TIMEOUT * 2).max(lease + LEASE_MARGIN * 2);
    loop {
        let read = read_marker(fleet, marker, write_id).await;
        let out_of_time = started.elapsed() >= super::REQUEST_TIMEOUT;
        // Nothing of the write can land any more: no need to wait for the request timeout.
        if read.is_err() && unknown.settled(fleet) {
            return Landed::Never(unknown.failure());
        }
        match read {
            Ok(Some(revision)) => return Landed::Yes(revision),
            Ok(None) if !out_of_time => return Landed::No,
            Ok(None) if unknown.settled(fleet) => return Landed::Never(unknown.failure()),
            Ok(None) => {
                if fence(fleet, &unknown.leases).await {
                    unknown.fenced = true;
                    // It may have landed between the read and the revoke.
                    match read_marker(fleet, marker, write_id).await {
                        Ok(Some(revision)) => return Landed::Yes(revision),
                        Ok(None) => return Landed::Never(unknown.failure()),
                        Err(()) => {}
                    }
                }
            }
            Err(()) if out_of_time && unknown.settled(fleet) => {
                return Landed::Never(unknown.failure());
            }
            Err(()) => {}
        }
        if Instant::now() >= give_up {
            return Landed::Never(unknown.failure());
        }
        tokio::time::sleep(backoff).await;
        backoff = super::next_backoff(backoff, Duration::ZERO);
    }
}

/// A committed write: whatever happens now, the answer is a success. If this edge hasn't
/// applied it within the wait, it is one of the edges behind (202). `registrations`: the
/// edges' registrations as the write's transaction read them, if it did.
async fn committed(
    fleet: &Arc<Fleet>,
    turn: tokio::sync::MutexGuard<'_, ()>,
    revision: i64,
    registrations: Option<etcd_client::GetResponse>,
    apex: &Name,
    started: Instant,
) -> Result<Option<Applied>, EngineError> {
    // Starts the watch (if it isn't running) while this edge applies the write: its first
    // read comes after the write's commit, so no registration put after it is missed.
    fleet.want_edges();
    match &registrations {
        Some(g) => super::registry::take(fleet, g.kvs(), revision),
        // The registrations as of the write at least: an edge that registered just before it
        // is waited for even if this edge's watch hasn't told of it yet. If etcd can't be
        // read now, the watch's view is what there is.
        None => {
            let _ = super::registry::refresh(fleet).await;
        }
    }
    let _ = wait_applied(fleet, revision, fleet.confirm_wait()).await;
    drop(turn);
    let behind = confirm(fleet, revision).await;
    fleet.stats.observe_confirm(started.elapsed().as_secs_f64());
    let _ = WRITE.try_with(|c| {
        *c.outcome.lock().unwrap_or_else(|p| p.into_inner()) = Some(Outcome {
            revision,
            behind: behind.clone(),
        });
    });
    if !behind.is_empty() {
        info!(
            revision,
            ?behind,
            "fleet write committed; edges still behind"
        );
    }
    let serial = fleet.engine.zones().zone(apex).map_or(0, |z| z.serial());
    Ok(Some(Applied {
        serial,
        sync: SyncReport::default(),
    }))
}

/// Waits (at most `wait`) until this edge has applied `revision`.
async fn wait_applied(
    fleet: &Fleet,
    revision: i64,
    wait: std::time::Duration,
) -> Result<(), FleetError> {
    let mut rx = fleet.applied_tx.subscribe();
    let reached = tokio::time::timeout(wait, rx.wait_for(|a| *a >= revision))
        .await
        .is_ok_and(|r| r.is_ok());
    if reached {
        Ok(())
    } else {
        Err(FleetError::Behind { revision })
    }
}

/// Waits (up to `--confirm-wait-ms`) until every live edge has applied `revision`; returns the
/// ones that hadn't by then. The registrations as of the write are in the map already.
pub(super) async fn confirm(fleet: &Fleet, revision: i64) -> Vec<String> {
    /// Counts a waiting write for as long as it waits.
    struct Waiting<'a>(&'a Fleet);
    impl Drop for Waiting<'_> {
        fn drop(&mut self) {
            self.0.edges_waiters.fetch_sub(1, Ordering::Relaxed);
        }
    }
    fleet.edges_waiters.fetch_add(1, Ordering::Relaxed);
    let _waiting = Waiting(fleet);
    fleet.want_edges();
    let mut rx = fleet.edges_tx.subscribe();
    let mut acks = fleet.acks.subscribe();
    let deadline = tokio::time::Instant::now() + fleet.confirm_wait();
    loop {
        acks.mark_unchanged();
        let behind = super::registry::behind(fleet, &rx.borrow_and_update(), revision);
        if behind.is_empty() {
            return behind;
        }
        let changed = async {
            tokio::select! {
                r = rx.changed() => r.is_ok(),
                r = acks.changed() => r.is_ok(),
            }
        };
        match tokio::time::timeout_at(deadline, changed).await {
            Ok(true) => {}
            _ => return fleet.behind(revision),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error("opening the store in {}", dir.display())]
    Store {
        dir: std::path::PathBuf,
        #[source]
        source: crate::store::StoreError,
    },
    #[error("the etcd prefix {prefix} already holds data; a seed only fills an empty prefix")]
    NotEmpty { prefix: String },
}

/// What a seed pushed.
#[derive(Debug, Clone, Copy)]
pub struct Seeded {
    pub zones: usize,
    pub rrsets: usize,
    pub revision: i64,
}

/// Pushes a single host's store (`data_dir`) into an empty prefix: each zone's RRsets in
/// transactions of at most [`MAX_OPS`] keys, its zone key last, so an edge that sees the zone
/// key reads the zone whole. Refused if the prefix holds data.
pub async fn seed(args: &EtcdArgs, data_dir: &Path) -> Result<Seeded, SeedError> {
    let store = Store::open(data_dir).map_err(|source| SeedError::Store {
        dir: data_dir.to_owned(),
        source,
    })?;
    let zones = store
        .load()
        .map_err(|source| SeedError::Store {
            dir: data_dir.to_owned(),
            source,
        })?
        .zones;
    let keys = Keys::new(&args.etcd_prefix);
    let client = connect(args).await?;
    let mut kv = client.kv_client();
    let data = keys.data();
    let existing = request(kv.get(
        data.as_str(),
        Some(GetOptions::new().with_prefix().with_count_only()),
    ))
    .await?;
    if existing.count() > 0 {
        return Err(SeedError::NotEmpty { prefix: data });
    }
    let mut seeded = Seeded {
        zones: 0,
        rrsets: 0,
        revision: 0,
    };
    let mut first = true;
    for zone in zones.zones() {
        let apex = zone.apex().clone();
        let mut ops = Vec::new();
        for (owner, rtype, ttl, records) in zone.records() {
            let set = RrSet {
                ttl,
                records: records.to_vec(),
            };
            let v = codec::encode_rrset_value(&apex, &owner, rtype, &set).map_err(|reason| {
                FleetError::Encode {
                    what: format!("the {rtype} record set at {owner}"),
                    reason,
                }
            })?;
            ops.push(TxnOp::put(keys.rrset(&apex, &owner, rtype), v, None));
            seeded.rrsets += 1;
        }
        ops.push(TxnOp::put(
            keys.zone(&apex),
            codec::encode_zone(&apex, zone.soa(), zone.serial()),
            None,
        ));
        for chunk in ops.chunks(MAX_OPS) {
            // The first transaction checks that nobody else seeded or wrote meanwhile: the
            // prefix is still empty.
            let guard = if first {
                vec![Compare::version(data.as_str(), CompareOp::Equal, 0).with_prefix()]
            } else {
                Vec::new()
            };
            let txn = Txn::new().when(guard).and_then(chunk.to_vec());
            let resp = request(kv.txn(txn)).await?;
            if !resp.succeeded() {
                return Err(SeedError::NotEmpty { prefix: data });
            }
            first = false;
            seeded.revision = resp.header().map_or(0, |h| h.revision());
        }
        seeded.zones += 1;
    }
    Ok(seeded)
}
