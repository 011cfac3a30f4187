//! The follower: brings this edge's zones to etcd's and keeps them there.
//!
//! It reads the data prefix at one revision and reconciles the engine's version with it (one
//! engine change), then watches from the next revision and applies each revision whole, in
//! order, as one engine change. Whatever ends the watch (an error, a compaction past the
//! revision it needs, a lost leader, an etcd restart, silence longer than the lease) sends it
//! back to the read and reconcile: a revision is never skipped or applied out of order. etcd's
//! client does not set a watch up again by itself; this loop does.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{atomic::Ordering, Arc},
    time::{Duration, Instant},
};

use etcd_client::{EventType, GetOptions, KeyValue, WatchOptions};
use hickory_proto::rr::{Name, RecordType};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{codec, request, DataKey, Fleet, FleetError, Value};
use crate::{
    engine::RemoteChange,
    zone::{normalize, Change, Edit, RrSet, SoaParams, Zone, ZoneSpec},
};

/// Keys per page when reading the prefix.
const PAGE: i64 = 1000;

/// The zones as etcd has them at one revision.
#[derive(Default)]
struct Snapshot {
    /// Apex to its settings, serial and the zone key's mod revision.
    zones: BTreeMap<Name, (SoaParams, u32, i64)>,
    rrsets: HashMap<Name, Vec<(Name, RecordType, RrSet)>>,
}

/// Why a watch ended.
enum End {
    /// The revision it needed is compacted away, or etcd cancelled it.
    Compacted,
    Lost(String),
}

pub(super) async fn run(
    fleet: Arc<Fleet>,
    first: oneshot::Sender<()>,
    shutdown: CancellationToken,
) {
    let mut first = Some(first);
    let mut backoff = super::BACKOFF_MIN;
    let mut reconciled_before = false;
    loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = reconcile(&fleet) => r,
        };
        let revision = match result {
            Ok(r) => r,
            Err(e) => {
                warn!(edge = %fleet.edge_id, "fleet: reading etcd: {}", crate::error_chain(&e));
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = super::next_backoff(backoff, Duration::ZERO);
                continue;
            }
        };
        if reconciled_before {
            fleet.stats.resyncs.fetch_add(1, Ordering::Relaxed);
        }
        reconciled_before = true;
        fleet.connected.store(true, Ordering::Relaxed);
        fleet.synced.store(true, Ordering::Relaxed);
        if fleet.cut_off.swap(false, Ordering::Relaxed) {
            info!(edge = %fleet.edge_id, revision, "fleet: reconciled after reconnecting");
            fleet.misses_changed.notify_one();
        }
        if let Some(f) = first.take() {
            let _ = f.send(());
        }
        let following = std::time::Instant::now();
        let end = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = follow(&fleet, revision + 1) => e,
        };
        // A watch that fails at once again and again must not turn into a busy loop of reads.
        backoff = super::next_backoff(backoff, following.elapsed());
        if backoff > super::BACKOFF_MIN {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
        }
        match end {
            End::Compacted => {
                warn!(edge = %fleet.edge_id, "fleet: the watch's revision was compacted; reading etcd again")
            }
            End::Lost(why) => {
                fleet.stats.watch_reconnects.fetch_add(1, Ordering::Relaxed);
                warn!(edge = %fleet.edge_id, "fleet: watch lost ({why}); reading etcd again");
            }
        }
    }
}

/// The exclusive end of the range of keys starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Every key under `prefix` at one revision (the current one if `revision` is 0), in pages.
/// Returns the revision read.
async fn read_prefix(
    fleet: &Fleet,
    prefix: &str,
    revision: i64,
    mut each: impl FnMut(&KeyValue),
) -> Result<i64, FleetError> {
    let mut kv = fleet.client.kv_client();
    let end = prefix_end(prefix.as_bytes());
    let mut from = prefix.as_bytes().to_vec();
    let mut revision = revision;
    loop {
        let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
        if revision > 0 {
            options = options.with_revision(revision);
        }
        let resp = request(kv.get(from.clone(), Some(options))).await?;
        fleet.contact();
        if revision == 0 {
            revision = resp.header().map_or(0, |h| h.revision());
        }
        for kv in resp.kvs() {
            each(kv);
        }
        match resp.kvs().last() {
            Some(last) if resp.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => return Ok(revision),
        }
    }
}

/// Reads the data prefix at one revision and makes the engine's zones what it holds.
async fn reconcile(fleet: &Fleet) -> Result<i64, FleetError> {
    let mut snap = Snapshot::default();
    let revision = read_prefix(fleet, &fleet.keys.data(), 0, |kv| {
        match codec::decode(kv.value()) {
            Ok(Value::Zone { apex, soa, serial }) => {
                snap.zones
                    .insert(normalize(&apex), (soa, serial, kv.mod_revision()));
            }
            Ok(Value::Rrset {
                apex,
                owner,
                rtype,
                set,
            }) => snap
                .rrsets
                .entry(normalize(&apex))
                .or_default()
                .push((owner, rtype, set)),
            Err(e) => warn!(key = %String::from_utf8_lossy(kv.key()), "fleet: unreadable value left out: {e}"),
        }
    })
    .await?;
    let mut applied = fleet.applied.lock().await;
    let local = fleet.engine.zones();
    let mut change = RemoteChange {
        revision: u64::try_from(revision).unwrap_or(0),
        ..RemoteChange::default()
    };
    for zone in local.zones() {
        if !snap.zones.contains_key(zone.apex()) {
            change.edits.push(Edit::DeleteZone(zone.apex().clone()));
        }
    }
    let mut mods = HashMap::new();
    for (apex, (soa, serial, m)) in snap.zones {
        mods.insert(apex.clone(), m);
        let sets = snap.rrsets.remove(&apex).unwrap_or_default();
        match local.zone(&apex) {
            None => change.edits.push(replace(apex, soa, serial, sets)),
            Some(zone) => {
                let want: HashMap<(Name, RecordType), RrSet> = sets
                    .into_iter()
                    .map(|(o, t, s)| ((normalize(&o), t), s))
                    .collect();
                let mut changes: Vec<Change> = zone
                    .records()
                    .filter(|(o, t, _, _)| !want.contains_key(&(o.clone(), *t)))
                    .map(|(name, rtype, _, _)| Change::Delete { name, rtype })
                    .collect();
                changes.extend(sets_that_differ(
                    zone,
                    want.into_iter()
                        .map(|((name, rtype), set)| (name, rtype, set)),
                ));
                let changed = !changes.is_empty();
                if changed {
                    change.edits.push(Edit::Batch(apex.clone(), changes));
                }
                if changed || zone.soa() != &soa || zone.serial() != serial {
                    change.zone_meta.push((apex, soa, serial));
                }
            }
        }
    }
    let edits = change.edits.len();
    // The engine frees the version it replaces once nobody holds it: not this copy.
    drop(local);
    fleet
        .engine
        .apply_remote(change)
        .await
        .map_err(|e| FleetError::Apply {
            revision,
            source: Box::new(e),
        })?;
    applied.zone_mods = mods;
    applied.revision = revision;
    drop(applied);
    // Whoever wrote what this read brought in hears of it from the registration.
    fleet.acks.applied(fleet, revision, &[]);
    fleet.saw(revision);
    fleet.applied_tx.send_replace(revision);
    info!(edge = %fleet.edge_id, revision, zone_changes = edits, "fleet: reconciled with etcd");
    Ok(revision)
}

/// A zone this edge doesn't have, whole.
fn replace(
    apex: Name,
    soa: SoaParams,
    serial: u32,
    rrsets: Vec<(Name, RecordType, RrSet)>,
) -> Edit {
    Edit::ReplaceZone {
        spec: ZoneSpec {
            apex,
            soa,
            serial,
            ns: Vec::new(),
            ns_ttl: 0,
        },
        rrsets,
    }
}

/// A `Change::Set` for each of `sets` that `zone` doesn't hold as it is: what the full
/// reconcile and each watched revision both write.
fn sets_that_differ<'a>(
    zone: &'a Zone,
    sets: impl IntoIterator<Item = (Name, RecordType, RrSet)> + 'a,
) -> impl Iterator<Item = Change> + 'a {
    sets.into_iter()
        .filter(move |(name, rtype, set)| zone.rrset(name, *rtype).as_ref() != Some(set))
        .map(|(name, rtype, set)| Change::Set {
            name,
            rtype,
            ttl: set.ttl,
            records: set.records,
        })
}

/// Why a watch is given up once the edge has been marked cut off. A watch can outlive a short
/// cut (its TCP connection resumes and delivers what it missed), but after a cut longer than
/// the lease the edge reconciles afresh rather than trust that it did.
const CUT_OFF: &str = "cut off from etcd longer than the lease";

/// Watches from `from` and applies each revision; returns when the watch ends.
async fn follow(fleet: &Fleet, from: i64) -> End {
    let mut client = fleet.client.watch_client();
    // The data and, just before it, the edges' sync keys (see `Keys::sync`): one watch, so
    // its events come in revision order across both.
    let options = WatchOptions::new()
        .with_range(prefix_end(fleet.keys.data().as_bytes()))
        .with_start_revision(from)
        .with_progress_notify();
    let stream = match request(client.watch(fleet.keys.sync(), Some(options))).await {
        Ok(s) => s,
        Err(e) => return End::Lost(crate::error_chain(&e)),
    };
    let (mut sender, mut responses) = stream.split();
    let lease = Duration::from_secs(u64::from(fleet.args.lease_ttl.max(1)));
    // A watch on a partitioned member can stay open and silent: ask for progress often, and
    // give up on it when nothing came for a lease.
    let mut tick = tokio::time::interval((lease / 3).max(Duration::from_millis(300)));
    let mut heard = Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if heard.elapsed() > lease {
                    return End::Lost(format!("nothing heard for {lease:?}"));
                }
                if fleet.cut_off.load(Ordering::Relaxed) {
                    return End::Lost(CUT_OFF.into());
                }
                if let Err(e) = sender.request_progress().await {
                    return End::Lost(e.to_string());
                }
            }
            msg = responses.message() => {
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => return End::Lost("the watch closed".into()),
                    Err(e) => return End::Lost(e.to_string()),
                };
                heard = Instant::now();
                fleet.contact();
                fleet.connected.store(true, Ordering::Relaxed);
                if resp.compact_revision() > 0 {
                    return End::Compacted;
                }
                if resp.canceled() {
                    return End::Lost(format!("cancelled: {}", resp.cancel_reason()));
                }
                // One response may carry several revisions; a revision's events are together.
                let events = resp.events();
                let mut at = 0;
                while at < events.len() {
                    let rev = events[at].kv().map_or(0, |kv| kv.mod_revision());
                    let mut end = at;
                    while end < events.len()
                        && events[end].kv().map_or(0, |kv| kv.mod_revision()) == rev
                    {
                        end += 1;
                    }
                    fleet.saw(rev);
                    if let Err(e) = apply_revision(fleet, rev, &events[at..end]).await {
                        return End::Lost(format!("applying revision {rev}: {}", crate::error_chain(&e)));
                    }
                    at = end;
                }
                if fleet.cut_off.load(Ordering::Relaxed) {
                    return End::Lost(CUT_OFF.into());
                }
            }
        }
    }
}

/// What one revision did to one zone.
#[derive(Default)]
struct ZoneEvents {
    /// The zone key's new value and mod revision.
    put: Option<(SoaParams, u32, i64)>,
    deleted: bool,
    sets: Vec<(Name, RecordType, RrSet)>,
    removed: Vec<(Name, RecordType)>,
}

/// Applies one revision's events as one engine change.
async fn apply_revision(
    fleet: &Fleet,
    revision: i64,
    events: &[etcd_client::Event],
) -> Result<(), FleetError> {
    let mut zones: BTreeMap<Name, ZoneEvents> = BTreeMap::new();
    // Who wrote this revision and where it takes acks.
    let mut writers = Vec::new();
    let write_acks = fleet.keys.write_acks();
    let mut data = false;
    for ev in events {
        let Some(kv) = ev.kv() else { continue };
        // An edge registering: nothing to apply, but the revision counts as applied.
        if kv.key().starts_with(fleet.keys.sync().as_bytes()) {
            continue;
        }
        if let Some(writer) = kv.key().strip_prefix(write_acks.as_bytes()) {
            if ev.event_type() == EventType::Put {
                if let (Ok(id), Ok(address)) =
                    (std::str::from_utf8(writer), std::str::from_utf8(kv.value()))
                {
                    writers.push((id.to_owned(), address.to_owned()));
                }
            }
            continue;
        }
        data = true;
        let key = match fleet.keys.parse(kv.key()) {
            Ok(k) => k,
            Err(e) => {
                warn!(revision, "fleet: {e}; left out");
                continue;
            }
        };
        let z = zones.entry(normalize(key.apex())).or_default();
        match (ev.event_type(), key) {
            (EventType::Delete, DataKey::Zone(_)) => z.deleted = true,
            (EventType::Delete, DataKey::Rrset(_, owner, rtype)) => z.removed.push((owner, rtype)),
            (EventType::Put, _) => match codec::decode(kv.value()) {
                Ok(Value::Zone { soa, serial, .. }) => {
                    z.put = Some((soa, serial, kv.mod_revision()));
                }
                Ok(Value::Rrset {
                    owner, rtype, set, ..
                }) => z.sets.push((owner, rtype, set)),
                Err(e) => {
                    warn!(revision, key = %String::from_utf8_lossy(kv.key()), "fleet: unreadable value left out: {e}")
                }
            },
        }
    }
    let mut applied = fleet.applied.lock().await;
    let local = fleet.engine.zones();
    let mut change = RemoteChange {
        revision: u64::try_from(revision).unwrap_or(0),
        ..RemoteChange::default()
    };
    let mut mods = Vec::new();
    for (apex, z) in zones {
        if z.deleted {
            if local.zone(&apex).is_some() {
                change.edits.push(Edit::DeleteZone(apex.clone()));
            }
            mods.push((apex, None));
            continue;
        }
        match local.zone(&apex) {
            None => {
                // RRsets of a zone whose key hasn't come yet (a seed in progress) wait for it.
                let Some((soa, serial, m)) = z.put else {
                    continue;
                };
                // A new zone: read it whole as of this revision (a seed puts it in several).
                let mut sets = Vec::new();
                read_prefix(fleet, &fleet.keys.zone_rrsets(&apex), revision, |kv| {
                    if let Ok(Value::Rrset {
                        owner, rtype, set, ..
                    }) = codec::decode(kv.value())
                    {
                        sets.push((owner, rtype, set));
                    }
                })
                .await?;
                change.edits.push(replace(apex.clone(), soa, serial, sets));
                mods.push((apex, Some(m)));
            }
            Some(zone) => {
                let mut changes: Vec<Change> = z
                    .removed
                    .into_iter()
                    .filter(|(name, rtype)| zone.has_rrset(name, *rtype))
                    .map(|(name, rtype)| Change::Delete { name, rtype })
                    .collect();
                changes.extend(sets_that_differ(zone, z.sets));
                let changed = !changes.is_empty();
                if changed {
                    change.edits.push(Edit::Batch(apex.clone(), changes));
                }
                match z.put {
                    Some((soa, serial, m)) => {
                        change.zone_meta.push((apex.clone(), soa, serial));
                        mods.push((apex, Some(m)));
                    }
                    // Only the zone's writers change RRsets, and they always write its key:
                    // keep the serial as etcd last said.
                    None if changed => {
                        change
                            .zone_meta
                            .push((apex, zone.soa().clone(), zone.serial()));
                    }
                    None => {}
                }
            }
        }
    }
    // The engine frees the version it replaces once nobody holds it: not this copy.
    drop(local);
    fleet
        .engine
        .apply_remote(change)
        .await
        .map_err(|e| FleetError::Apply {
            revision,
            source: Box::new(e),
        })?;
    for (apex, m) in mods {
        match m {
            Some(m) => applied.zone_mods.insert(apex, m),
            None => applied.zone_mods.remove(&apex),
        };
    }
    applied.revision = revision;
    drop(applied);
    // A registration's revision has nobody waiting for it; data without a writer's key (a
    // seed, an edge of an older version) is published at once.
    if !writers.is_empty() || data {
        fleet.acks.applied(fleet, revision, &writers);
    }
    fleet.applied_tx.send_replace(revision);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The follower's one watch covers the edges' sync keys, the writers' ack addresses and the
    /// data, and nothing else the fleet writes (registrations and write markers would be an
    /// event per edge per write).
    #[test]
    fn the_followed_range_holds_the_sync_and_ack_address_keys_and_the_data_only() {
        let keys = crate::fleet::Keys::new("/edgedns/v1");
        let (start, end) = (keys.sync().into_bytes(), prefix_end(keys.data().as_bytes()));
        let inside = |k: &str| start.as_slice() <= k.as_bytes() && k.as_bytes() < end.as_slice();
        let apex = Name::from_ascii("example.com.").expect("name");
        let owner = Name::from_ascii("www.example.com.").expect("name");
        assert!(inside(&keys.edge_sync("edge-1")));
        assert!(inside(&keys.edge_sync("\u{7f}")));
        assert!(inside(&keys.zone(&apex)));
        assert!(inside(&keys.rrset(&apex, &owner, RecordType::A)));
        assert!(inside(&keys.write_ack("edge-1")));
        assert!(inside(&keys.write_ack("\u{7f}")));
        assert!(!inside(&keys.ack_key()));
        assert!(!inside(&keys.edge("edge-1")));
        assert!(!inside(&keys.edge("")));
        assert!(!inside(&keys.write_marker("edge-1:1:0")));
        assert!(!inside("/edgedns/v1/"));
        assert!(!inside("/edgedns/v10/data/z/00"));
    }
}
