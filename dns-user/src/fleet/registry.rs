//! The edges of the fleet: each registers under a lease (its key goes when it stops renewing
//! it) and publishes the last revision it has applied, which its maps answer: at once when a
//! writer may be waiting for it without an ack (see `acks`), else within a second. A write is
//! confirmed once each live edge has acked or published its revision; the edge that wrote it
//! watches the registrations meanwhile (for which edges are live).

use std::{
    collections::BTreeMap,
    sync::{atomic::Ordering, Arc},
    time::Duration,
};

use etcd_client::{
    Compare, CompareOp, EventType, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{
    acks::{Publish, LAZY_PUBLISH},
    request, unix_now, Fleet, FleetError,
};

/// An edge's registration, as stored (JSON) under `{prefix}/edges/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EdgeInfo {
    pub id: String,
    pub address: String,
    pub region: String,
    pub version: String,
    pub applied_revision: i64,
    /// When the edge wrote this, in seconds since the Unix epoch.
    pub updated: f64,
    /// The registering daemon's data directory, as a token kept in it: a registration with
    /// this edge's id and token is this edge's own from before a crash, one with another token
    /// is another edge's.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
}

/// A live edge: its registration and the lease it goes with.
#[derive(Clone, Debug)]
pub struct EdgeRecord {
    pub info: EdgeInfo,
    pub lease: i64,
}

/// The live edges, as of an etcd revision.
#[derive(Clone, Debug, Default)]
pub struct Edges {
    pub map: BTreeMap<String, EdgeRecord>,
    /// The etcd revision the map reflects: events at or before it are in it already.
    pub revision: i64,
}

/// The live edges whose applied revision is older than `revision`.
pub fn behind(fleet: &Fleet, edges: &Edges, revision: i64) -> Vec<String> {
    edges
        .map
        .values()
        .filter(|e| applied(fleet, e) < revision)
        .map(|e| e.info.id.clone())
        .collect()
}

/// What `edge` has applied, as this edge knows best: its registration says what it published,
/// its acks to this edge (under the registration's lease) may tell of newer. This edge counts
/// by what it has applied itself, which its registration publishes only later.
fn applied(fleet: &Fleet, edge: &EdgeRecord) -> i64 {
    let mut applied = edge.info.applied_revision;
    if edge.info.id == fleet.edge_id {
        applied = applied.max(fleet.applied_revision());
    }
    if let Some(acked) = fleet.acks.acked(&edge.info.id, edge.lease) {
        applied = applied.max(acked);
    }
    applied
}

/// One row of `GET /v1/edges`.
#[derive(Clone, Debug, Serialize)]
pub struct EdgeRow {
    pub id: String,
    pub address: String,
    pub region: String,
    pub version: String,
    pub applied_revision: i64,
    pub lag_revisions: i64,
    pub lag_seconds: f64,
    /// When the edge last renewed its lease or wrote its registration, seconds since the Unix
    /// epoch.
    pub last_contact: f64,
    pub live: bool,
}

/// `GET /v1/edges`: the newest revision any live edge has applied, and every live edge.
#[derive(Clone, Debug, Serialize)]
pub struct EdgeView {
    pub revision: i64,
    pub edges: Vec<EdgeRow>,
}

pub(super) fn view(fleet: &Fleet) -> EdgeView {
    let edges = fleet.edges_tx.borrow().map.clone();
    let applied: BTreeMap<&str, i64> = edges
        .values()
        .map(|e| (e.info.id.as_str(), self::applied(fleet, e)))
        .collect();
    let newest = applied
        .values()
        .copied()
        .chain([fleet.applied_revision()])
        .max()
        .unwrap_or(0);
    let rows = edges
        .values()
        .map(|e| {
            let applied = applied[e.info.id.as_str()];
            let lag = (newest - applied).max(0);
            EdgeRow {
                id: e.info.id.clone(),
                address: e.info.address.clone(),
                region: e.info.region.clone(),
                version: e.info.version.clone(),
                applied_revision: applied,
                lag_revisions: lag,
                lag_seconds: if lag > 0 {
                    fleet.lag_seconds(applied)
                } else {
                    0.0
                },
                last_contact: e.info.updated,
                live: true,
            }
        })
        .collect();
    EdgeView {
        revision: newest,
        edges: rows,
    }
}

/// [`view`], with each edge's last contact taken from its lease: an edge renews it every third
/// of its TTL, so the time left tells when it last did (to a second, etcd's resolution),
/// whether or not its registration changed since.
pub(super) async fn view_with_contact(fleet: &Fleet) -> EdgeView {
    fresh(fleet).await;
    let mut view = view(fleet);
    let leases: BTreeMap<String, i64> = fleet
        .edges_tx
        .borrow()
        .map
        .iter()
        .map(|(id, r)| (id.clone(), r.lease))
        .collect();
    let mut client = fleet.client.lease_client();
    let now = unix_now();
    for row in &mut view.edges {
        let Some(&lease) = leases.get(&row.id).filter(|l| **l != 0) else {
            continue;
        };
        if let Ok(ttl) = request(client.time_to_live(lease, None)).await {
            if ttl.ttl() > 0 {
                let renewed = now - (ttl.granted_ttl() - ttl.ttl()) as f64;
                row.last_contact = row.last_contact.max(renewed);
            }
        }
    }
    view
}

/// How long the registry watch goes on after the last write that needed it.
pub(super) const WATCH_IDLE: Duration = Duration::from_secs(30);

/// Keeps [`Fleet::edges_tx`] in step with the registrations in etcd while this edge's writes
/// wait for confirmations: read them, then watch; set up again whenever the watch ends.
///
/// Only an edge whose writes are waiting needs the registrations as they change (which edges
/// are live; what the ones without acks have applied), so the watch runs from the first such
/// write until none came for [`WATCH_IDLE`], and a reader of the view at other times
/// ([`fresh`]) reads the registrations once instead. (When every edge published each
/// revision it applied, a watch on every edge cost one event per edge per write on each.)
pub(super) async fn watch_edges(fleet: Arc<Fleet>, shutdown: CancellationToken) {
    let prefix = fleet.keys.edges();
    let mut backoff = super::BACKOFF_MIN;
    loop {
        if fleet.edges_idle() {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = fleet.edges_wanted.notified() => {}
            }
            continue;
        }
        let started = std::time::Instant::now();
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = follow_edges(&fleet, &prefix) => r,
            () = until_idle(&fleet) => Ok(()),
        };
        fleet.edges_watching.store(false, Ordering::Relaxed);
        let Err(why) = result else { continue };
        backoff = super::next_backoff(backoff, started.elapsed());
        warn!(edge = %fleet.edge_id, "fleet: edge registry watch lost ({why}); reading again in {backoff:?}");
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}

/// Returns once no write has wanted the registrations for [`WATCH_IDLE`] and none waits on
/// them.
async fn until_idle(fleet: &Fleet) {
    loop {
        if fleet.edges_waiters.load(Ordering::Relaxed) > 0 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        let wanted = *fleet
            .edges_wanted_at
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let Some(at) = wanted else { return };
        let until = at + WATCH_IDLE;
        if until <= std::time::Instant::now() {
            return;
        }
        tokio::time::sleep_until(until.into()).await;
    }
}

/// Brings the view of the registrations up to date for a reader: nothing to do while the watch
/// runs, else one read (if etcd doesn't answer, the view stays as it was).
pub(super) async fn fresh(fleet: &Fleet) {
    // A scrape or a status call must not hang on an etcd out of reach.
    if !fleet.edges_watching.load(Ordering::Relaxed) && !fleet.cut_off.load(Ordering::Relaxed) {
        let _ = tokio::time::timeout(FRESH_WITHIN, refresh(fleet)).await;
    }
}

/// How long [`fresh`] waits for etcd.
const FRESH_WITHIN: Duration = Duration::from_millis(500);

fn record(kv: &etcd_client::KeyValue) -> Option<EdgeRecord> {
    let info: EdgeInfo = serde_json::from_slice(kv.value()).ok()?;
    Some(EdgeRecord {
        info,
        lease: kv.lease(),
    })
}

/// Reads the registrations whole; the map takes them if they are newer than what it has.
/// Returns the revision read.
pub(super) async fn refresh(fleet: &Fleet) -> Result<i64, String> {
    let mut kv = fleet.client.kv_client();
    let prefix = fleet.keys.edges();
    let resp = request(kv.get(prefix, Some(GetOptions::new().with_prefix())))
        .await
        .map_err(|e| crate::error_chain(&e))?;
    fleet.contact();
    let revision = resp.header().map_or(0, |h| h.revision());
    take(fleet, resp.kvs(), revision);
    Ok(revision)
}

/// The registrations as read whole at `revision`: the map takes them if they are newer than
/// what it has.
pub(super) fn take(fleet: &Fleet, kvs: &[etcd_client::KeyValue], revision: i64) {
    let map = kvs
        .iter()
        .filter_map(record)
        .map(|r| (r.info.id.clone(), r))
        .collect();
    fleet.edges_tx.send_if_modified(|edges| {
        if revision <= edges.revision {
            return false;
        }
        *edges = Edges { map, revision };
        true
    });
}

async fn follow_edges(fleet: &Fleet, prefix: &str) -> Result<(), String> {
    let revision = refresh(fleet).await?;
    let mut watch = fleet.client.watch_client();
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut stream = request(watch.watch(prefix, Some(options)))
        .await
        .map_err(|e| crate::error_chain(&e))?;
    fleet.edges_watching.store(true, Ordering::Relaxed);
    loop {
        let resp = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => return Err("the watch closed".into()),
            Err(e) => return Err(e.to_string()),
        };
        if resp.canceled() || resp.compact_revision() > 0 {
            return Err("the watch was cancelled".into());
        }
        fleet.edges_tx.send_if_modified(|edges| {
            let mut modified = false;
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                // A whole read newer than the event has it already.
                if kv.mod_revision() <= edges.revision {
                    continue;
                }
                edges.revision = kv.mod_revision();
                modified = true;
                let id = String::from_utf8_lossy(kv.key())
                    .trim_start_matches(prefix)
                    .to_string();
                match ev.event_type() {
                    EventType::Delete => {
                        edges.map.remove(&id);
                    }
                    EventType::Put => {
                        if let Some(r) = record(kv) {
                            edges.map.insert(id, r);
                        }
                    }
                }
            }
            modified
        });
    }
}

/// Registers this edge under a lease, renews it, and publishes the revisions it applies (see
/// [`settle`]).
/// A lost lease is granted again; a clean stop revokes it, so the fleet stops waiting for this
/// edge at once.
pub(super) async fn presence(
    fleet: Arc<Fleet>,
    registered: tokio::sync::oneshot::Sender<Result<(), FleetError>>,
    shutdown: CancellationToken,
) {
    let mut registered = Some(registered);
    let ttl = i64::from(fleet.args.lease_ttl.max(1));
    let key = fleet.keys.edge(&fleet.edge_id);
    let mut backoff = super::BACKOFF_MIN;
    loop {
        if shutdown.is_cancelled() {
            return;
        }
        let started = std::time::Instant::now();
        let result = hold_lease(&fleet, &key, ttl, &mut registered, &shutdown).await;
        // Stale misses before a revoke tells the others to stop waiting for this edge.
        fleet.unregistered();
        backoff = super::next_backoff(backoff, started.elapsed());
        match result {
            Ok(()) => {
                // Stopping: let the others know now rather than when the lease runs out.
                let lease = fleet.lease.swap(0, Ordering::Relaxed);
                if lease != 0 {
                    let mut client = fleet.client.lease_client();
                    let _ =
                        tokio::time::timeout(Duration::from_secs(1), client.revoke(lease)).await;
                }
                return;
            }
            Err(Lost::Taken(e)) => match registered.take() {
                // At start-up: the daemon stops with this error.
                Some(r) => {
                    let _ = r.send(Err(e));
                    return;
                }
                None => {
                    backoff = super::BACKOFF_MAX;
                    tracing::error!(edge = %fleet.edge_id, "fleet: not registered: {}; trying again in {backoff:?}", crate::error_chain(&e));
                }
            },
            Err(Lost::Other(why)) => {
                warn!(edge = %fleet.edge_id, "fleet: lease lost ({why}); registering again in {backoff:?}")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
    }
}

/// This edge's registration as it is now, and the applied revision it holds.
fn registration(fleet: &Fleet) -> Result<(Vec<u8>, i64), String> {
    let info = EdgeInfo {
        id: fleet.edge_id.clone(),
        address: fleet.edge_address.clone(),
        region: fleet.args.region.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        applied_revision: fleet.applied_revision(),
        updated: unix_now(),
        instance: fleet.instance.clone(),
    };
    let revision = info.applied_revision;
    Ok((
        serde_json::to_vec(&info).map_err(|e| e.to_string())?,
        revision,
    ))
}

/// Why a lease was given up.
enum Lost {
    /// Another live edge holds this edge's id.
    Taken(FleetError),
    Other(String),
}

impl From<String> for Lost {
    fn from(why: String) -> Self {
        Lost::Other(why)
    }
}

impl From<&str> for Lost {
    fn from(why: &str) -> Self {
        Lost::Other(why.into())
    }
}

/// Creates this edge's registration under `lease`, only if no live edge holds the id: two
/// daemons with one id would confirm writes for each other. A registration left by this
/// edge's own data directory (a crash, its lease not yet run out) is this edge's: its lease is
/// revoked and the registration made again. Returns the revision of the registration.
async fn register(fleet: &Fleet, key: &str, lease: i64) -> Result<i64, Lost> {
    let mut kv = fleet.client.kv_client();
    for _ in 0..3 {
        let (value, applied) = registration(fleet)?;
        let txn = Txn::new()
            .when([Compare::version(key, CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(key, value, Some(PutOptions::new().with_lease(lease))),
                TxnOp::put(
                    fleet.keys.edge_sync(&fleet.edge_id),
                    fleet.instance.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
            ])
            .or_else([TxnOp::get(key, None)]);
        let resp = request(kv.txn(txn))
            .await
            .map_err(|e| crate::error_chain(&e))?;
        fleet.contact();
        if resp.succeeded() {
            fleet.acks.published(applied);
            return Ok(resp.header().map_or(0, |h| h.revision()));
        }
        let held = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(g) => g.kvs().first().cloned(),
            _ => None,
        });
        let Some(held) = held else { continue };
        let mine = record(&held).is_some_and(|r| r.info.instance == fleet.instance);
        if !mine {
            return Err(Lost::Taken(FleetError::DuplicateEdge {
                id: fleet.edge_id.clone(),
                ttl: fleet.args.lease_ttl,
            }));
        }
        info!(edge = %fleet.edge_id, lease = held.lease(), "fleet: this edge's registration from before is still there; taking it over");
        let mut leases = fleet.client.lease_client();
        match request(leases.revoke(held.lease())).await {
            Ok(_) => {}
            Err(FleetError::Unavailable(e)) if super::lease_gone(&e) => {}
            Err(e) => return Err(Lost::Other(crate::error_chain(&e))),
        }
    }
    Err(Lost::Other("the registration kept changing".into()))
}

/// Publishes this edge's registration (what it has applied) under `lease`, giving up after
/// `within`.
async fn put_registration(
    fleet: &Fleet,
    key: &str,
    lease: i64,
    within: Duration,
) -> Result<(), String> {
    let (value, applied) = registration(fleet)?;
    let mut kv = fleet.client.kv_client();
    let put = request(kv.put(key, value, Some(PutOptions::new().with_lease(lease))));
    tokio::time::timeout(within, put)
        .await
        .map_err(|_| format!("etcd did not answer within {within:?}"))?
        .map_err(|e| crate::error_chain(&e))?;
    fleet.contact();
    fleet.acks.published(applied);
    Ok(())
}

/// Holds one lease until it is lost (`Err`) or `shutdown` (`Ok`).
async fn hold_lease(
    fleet: &Fleet,
    key: &str,
    ttl: i64,
    registered: &mut Option<tokio::sync::oneshot::Sender<Result<(), FleetError>>>,
    shutdown: &CancellationToken,
) -> Result<(), Lost> {
    let mut leases = fleet.client.lease_client();
    let asked = std::time::Instant::now();
    let grant = request(leases.grant(ttl, None))
        .await
        .map_err(|e| crate::error_chain(&e))?;
    let lease = grant.id();
    let granted = grant.ttl();
    fleet.lease_renewed(lease, granted);
    fleet.lease_surely_holds(lease, granted, asked);
    fleet.lease.store(lease, Ordering::Relaxed);
    fleet.contact();
    // Subscribe before the first put: a revision applied in between is published next.
    let mut applied = fleet.applied_tx.subscribe();
    applied.mark_unchanged();
    let revision = match register(fleet, key, lease).await {
        Ok(r) => r,
        Err(e) => {
            // Not ours to hold: the lease goes (the next one is granted when registering again).
            if matches!(e, Lost::Taken(_)) {
                fleet.lease.store(0, Ordering::Relaxed);
                let _ = request(leases.revoke(lease)).await;
            }
            return Err(e);
        }
    };
    info!(edge = %fleet.edge_id, lease, revision, "fleet: edge registered");
    fleet.registered(revision);
    if let Some(r) = registered.take() {
        let _ = r.send(Ok(()));
    }
    let period = Duration::from_millis((u64::try_from(ttl).unwrap_or(1) * 1000 / 3).max(300));
    let mut tick = tokio::time::interval(period);
    // The lease is the cluster's, not one member's: a keep-alive stream that breaks (its member
    // died or a leader changed) is opened again, through whichever member answers, for as long
    // as the lease still holds by this edge's clock. Giving the lease up instead would leave the
    // registration unable to publish what this edge applies until a new one is made, and a
    // write would wait for this edge meanwhile. While the lease holds, a request that hangs
    // (sent to a member that just died, before the client stops using it) is given up quickly
    // and sent again: the lease runs out otherwise.
    let quick =
        Duration::from_millis((u64::try_from(ttl).unwrap_or(1) * 1000 / 4).clamp(250, 1000));
    let mut unpublished = false;
    // When to stop waiting for the receipts of acks sent.
    let mut receipt: Option<std::time::Instant> = None;
    // When to publish revisions that were confirmed without the registration.
    let mut lazy: Option<tokio::time::Instant> = None;
    loop {
        let opening = std::time::Instant::now();
        let opened = tokio::time::timeout(quick, request(leases.keep_alive(lease))).await;
        let (mut keeper, mut stream) = match opened {
            // Opening it renewed the lease (the client checks the first answer, whose TTL is
            // the one granted).
            Ok(Ok(s)) => {
                fleet.lease_answered(lease, granted, opening);
                s
            }
            Ok(Err(e)) => {
                still_held(fleet, lease, crate::error_chain(&e))?;
                pause(shutdown).await;
                continue;
            }
            Err(_) => {
                still_held(
                    fleet,
                    lease,
                    "opening the keep-alive stream timed out".into(),
                )?;
                continue;
            }
        };
        if unpublished {
            unpublished = !publish(fleet, key, lease, quick).await?;
        }
        // A member that stops answering without closing the stream is noticed too.
        let mut answered = std::time::Instant::now();
        // When each renewal not yet answered was sent: etcd counts the lease from its receipt.
        let mut sent = std::collections::VecDeque::new();
        let broke = loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {
                    if answered.elapsed() > 2 * period {
                        break format!("no keep-alive answer for {:?}", answered.elapsed());
                    }
                    let sending = std::time::Instant::now();
                    if let Err(e) = keeper.keep_alive().await {
                        break e.to_string();
                    }
                    sent.push_back(sending);
                    if unpublished {
                        unpublished = !publish(fleet, key, lease, quick).await?;
                    }
                }
                msg = stream.message() => match msg {
                    Ok(Some(r)) if r.ttl() > 0 => {
                        answered = std::time::Instant::now();
                        match sent.pop_front() {
                            Some(at) => fleet.lease_answered(lease, r.ttl(), at),
                            None => fleet.lease_renewed(lease, r.ttl()),
                        }
                        fleet.contact();
                    }
                    Ok(Some(_)) => return Err("the lease expired".into()),
                    Ok(None) => break "the keep-alive stream closed".to_string(),
                    Err(e) => break e.to_string(),
                },
                changed = applied.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    applied.mark_unchanged();
                    if let Some(failed) = settle(fleet, key, lease, quick, &mut receipt, &mut lazy).await? {
                        unpublished = failed;
                    }
                }
                () = sleep_until(receipt.map(tokio::time::Instant::from_std)) => {
                    receipt = None;
                    if let Some(failed) = settle(fleet, key, lease, quick, &mut receipt, &mut lazy).await? {
                        unpublished = failed;
                    }
                }
                () = sleep_until(lazy) => {
                    lazy = None;
                    if fleet.acks.unpublished(fleet.applied_revision()) {
                        unpublished = !publish(fleet, key, lease, quick).await?;
                    }
                }
            }
        };
        still_held(fleet, lease, broke.clone())?;
        warn!(edge = %fleet.edge_id, lease, "fleet: the lease's keep-alive stream broke ({broke}); opening it again");
        pause(shutdown).await;
    }
}

/// Publishes what this edge has applied now, or arms the wait for an ack's receipt or the
/// lazy update, as the acks say ([`super::acks::Acks::publish_when`]). `Some`: it published,
/// or failed to (`Some(true)`: not published now, a member just died; tried again at each
/// tick, since writes wait for it).
async fn settle(
    fleet: &Fleet,
    key: &str,
    lease: i64,
    quick: Duration,
    receipt: &mut Option<std::time::Instant>,
    lazy: &mut Option<tokio::time::Instant>,
) -> Result<Option<bool>, Lost> {
    match fleet.acks.publish_when() {
        Publish::Now => {
            (*receipt, *lazy) = (None, None);
            Ok(Some(!publish(fleet, key, lease, quick).await?))
        }
        Publish::AfterReceipt(at) => {
            *receipt = Some(at);
            Ok(None)
        }
        Publish::Later => {
            lazy.get_or_insert(tokio::time::Instant::now() + LAZY_PUBLISH);
            Ok(None)
        }
    }
}

/// Sleeps until `at`; never returns for None.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Publishes the registration once (bounded by `within`, so keep-alives are not held up).
/// `Ok(false)`: not published, the lease still holds (the caller tries again at its next
/// tick); `Err`: the lease is lost.
async fn publish(fleet: &Fleet, key: &str, lease: i64, within: Duration) -> Result<bool, Lost> {
    match put_registration(fleet, key, lease, within).await {
        Ok(()) => Ok(true),
        Err(why) => {
            still_held(fleet, lease, why.clone())?;
            warn!(edge = %fleet.edge_id, "fleet: publishing what this edge applied: {why}; trying again");
            Ok(false)
        }
    }
}

/// Ok while `lease` holds by this edge's clock; else the lease is lost, for `why`.
fn still_held(fleet: &Fleet, lease: i64, why: String) -> Result<(), Lost> {
    match fleet.lease_expires(lease) {
        Some(until) if until > std::time::Instant::now() => Ok(()),
        _ => Err(Lost::Other(why)),
    }
}

/// A short wait before asking etcd again (the client drops a member that doesn't answer).
async fn pause(shutdown: &CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => {}
        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
    }
}
