//! The write path's failure handling, with a real store on disk that can be made to fail and a
//! map writer in memory that can be made to fail: what readers, the disk and the maps hold after
//! each kind of failure.

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use dns_common::{NameKey, ZoneValue};
use hickory_proto::rr::{rdata::A, Name, RData, RecordType};
use tempfile::TempDir;

use super::*;
use crate::{
    compile::name_key,
    maps::NameEntry,
    zone::{Change, ZoneSpec},
};

/// The real store, with a switch that makes its commits fail as a full disk would.
struct FlakyStore {
    inner: Store,
    fail: AtomicBool,
}

impl Persist for FlakyStore {
    fn persist(
        &self,
        zones: &ZoneSet,
        changes: &ChangeSet,
        journal: &[JournalOp],
    ) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::from(redb::StorageError::Io(
                std::io::Error::new(std::io::ErrorKind::StorageFull, "injected: disk full"),
            )));
        }
        self.inner.persist_journaled(zones, changes, journal)
    }

    fn persist_at(
        &self,
        zones: &ZoneSet,
        changes: &ChangeSet,
        journal: &[JournalOp],
        revision: u64,
    ) -> Result<(), StoreError> {
        if self.fail.load(Ordering::SeqCst) {
            return Err(StoreError::from(redb::StorageError::Io(
                std::io::Error::new(std::io::ErrorKind::StorageFull, "injected: disk full"),
            )));
        }
        self.inner.persist_copy(zones, changes, journal, revision)
    }
}

/// What the maps hold, shared with the test (the engine owns the writer).
#[derive(Default)]
struct MapState {
    names: HashMap<NameKey, NameEntry>,
    zones: HashMap<NameKey, ZoneValue>,
    /// Make every write fail from now on.
    fail: bool,
    disabled: bool,
}

#[derive(Clone, Default)]
struct MemMaps(Arc<Mutex<MapState>>);

impl MemMaps {
    fn state(&self) -> std::sync::MutexGuard<'_, MapState> {
        self.0.lock().expect("map state")
    }

    fn write(&self, f: impl FnOnce(&mut MapState)) -> Result<(), MapWriteError> {
        let mut s = self.state();
        if s.fail {
            return Err(MapWriteError {
                map: "NAMES_SMALL",
                source: aya::maps::MapError::KeyNotFound,
            });
        }
        f(&mut s);
        Ok(())
    }
}

impl MapWriter for MemMaps {
    fn set_name(&mut self, key: &NameKey, entry: &NameEntry) -> Result<(), MapWriteError> {
        self.write(|s| {
            s.names.insert(*key, entry.clone());
        })
    }

    fn remove_name(&mut self, key: &NameKey) -> Result<(), MapWriteError> {
        self.write(|s| {
            s.names.remove(key);
        })
    }

    fn set_zone(&mut self, key: &NameKey, value: &ZoneValue) -> Result<(), MapWriteError> {
        self.write(|s| {
            s.zones.insert(*key, *value);
        })
    }

    fn remove_zone(&mut self, key: &NameKey) -> Result<(), MapWriteError> {
        self.write(|s| {
            s.zones.remove(key);
        })
    }

    fn name_keys(&self) -> Vec<NameKey> {
        self.state().names.keys().copied().collect()
    }

    fn zone_keys(&self) -> Vec<NameKey> {
        self.state().zones.keys().copied().collect()
    }

    fn disable(&mut self) -> Result<(), MapWriteError> {
        // Switching off must work even when writes of answers fail: it is one config word.
        self.state().disabled = true;
        Ok(())
    }
}

fn n(s: &str) -> Name {
    Name::from_ascii(s).expect("test name")
}

const APEX: &str = "example.com.";

struct Bed {
    _dir: TempDir,
    engine: Arc<Engine<FlakyStore, MemMaps>>,
    maps: MemMaps,
}

impl Bed {
    async fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = FlakyStore {
            inner: Store::open(dir.path()).expect("store"),
            fail: AtomicBool::new(false),
        };
        let maps = MemMaps::default();
        let engine = Engine::new(ZoneSet::new(), Some(maps.clone()), store);
        let spec = ZoneSpec::new(
            n(APEX),
            n("ns1.example.com."),
            n("h.example.com."),
            vec![n("ns1.example.com.")],
        );
        engine
            .apply(Edit::CreateZone(spec))
            .await
            .expect("zone created");
        Self {
            _dir: dir,
            engine,
            maps,
        }
    }

    fn set_a(name: &str, ip: [u8; 4]) -> Edit {
        Edit::Rrset(
            n(APEX),
            Change::Set {
                name: n(name),
                rtype: RecordType::A,
                ttl: 60,
                records: vec![RData::A(A::from(std::net::Ipv4Addr::from(ip)))],
            },
        )
    }

    /// What the store holds now, read back from its committed state as a restart would (redb
    /// allows one open per process, so through the engine's own handle).
    fn on_disk(&self) -> ZoneSet {
        self.engine.store.inner.load().expect("store loads").zones
    }

    fn store_fails(&self, fail: bool) {
        self.engine.store.fail.store(fail, Ordering::SeqCst);
    }
}

fn has_a(zones: &ZoneSet, name: &str) -> bool {
    zones
        .zone(&n(APEX))
        .and_then(|z| z.rrset(&n(name), RecordType::A))
        .is_some()
}

#[tokio::test]
async fn a_failed_commit_changes_nothing_anywhere_and_the_next_write_lands() {
    let bed = Bed::new().await;
    let serial = bed.engine.zones().zone(&n(APEX)).expect("zone").serial();
    let names_in_maps = bed.maps.state().names.len();
    let published = bed.engine.subscribe();

    bed.store_fails(true);
    let err = bed
        .engine
        .apply(Bed::set_a("www.example.com.", [192, 0, 2, 1]))
        .await
        .expect_err("commit fails");
    assert!(matches!(err, EngineError::Store(_)), "{err}");
    // Readers, the disk and the maps are as before.
    let served = bed.engine.zones();
    assert!(!has_a(&served, "www.example.com."));
    assert_eq!(served.zone(&n(APEX)).expect("zone").serial(), serial);
    assert!(!has_a(&bed.on_disk(), "www.example.com."));
    let key = name_key(&n("www.example.com.")).expect("key");
    assert!(!bed.maps.state().names.contains_key(&key));
    assert_eq!(bed.maps.state().names.len(), names_in_maps);
    assert!(!bed.maps.state().disabled);
    // No journal entry, and nobody told of a change.
    let journal = &bed.engine.store.inner;
    assert_eq!(
        journal.changes(&n(APEX), serial, serial.wrapping_add(1)),
        None
    );
    assert!(!published.has_changed().expect("engine alive"));

    bed.store_fails(false);
    let applied = bed
        .engine
        .apply(Bed::set_a("www.example.com.", [192, 0, 2, 1]))
        .await
        .expect("write after the fault");
    assert_eq!(applied.serial, serial.wrapping_add(1));
    assert!(has_a(&bed.engine.zones(), "www.example.com."));
    assert!(has_a(&bed.on_disk(), "www.example.com."));
    assert!(bed.maps.state().names.contains_key(&key));
    // The change is in the journal, as the record it added, and the watch ticked.
    let diffs = journal
        .changes(&n(APEX), serial, applied.serial)
        .expect("journaled");
    let added: Vec<_> = diffs[0].added.iter().map(|r| r.record_type()).collect();
    assert_eq!(added, [RecordType::SOA, RecordType::A]);
    assert!(published.has_changed().expect("engine alive"));
}

/// One fleet revision that sets an A record.
fn revision(revision: u64, name: &str, ip: [u8; 4]) -> RemoteChange {
    RemoteChange {
        edits: vec![Bed::set_a(name, ip)],
        revision,
        ..RemoteChange::default()
    }
}

#[tokio::test]
async fn a_fleet_revision_is_served_even_when_its_store_commit_fails_and_is_stored_with_the_next() {
    let bed = Bed::new().await;
    let serial = bed.engine.zones().zone(&n(APEX)).expect("zone").serial();
    let store = &bed.engine.store.inner;

    bed.store_fails(true);
    bed.engine
        .apply_remote(revision(10, "a.example.com.", [192, 0, 2, 1]))
        .await
        .expect("served although the copy's commit fails");
    // Served and in the maps: the edge answers what etcd has.
    assert!(has_a(&bed.engine.zones(), "a.example.com."));
    let a = name_key(&n("a.example.com.")).expect("key");
    assert!(bed.maps.state().names.contains_key(&a));
    // The store is as it was, at the revision before, not at 10 without its data.
    bed.engine.flush_copy().await.expect("flushed");
    assert!(!has_a(&bed.on_disk(), "a.example.com."));
    assert_eq!(store.fleet_revision().expect("meta"), None);

    bed.store_fails(false);
    bed.engine
        .apply_remote(revision(11, "b.example.com.", [192, 0, 2, 2]))
        .await
        .expect("served");
    bed.engine.flush_copy().await.expect("flushed");
    // Both revisions' data with the second's revision, and both changes in the journal.
    let disk = bed.on_disk();
    assert!(has_a(&disk, "a.example.com.") && has_a(&disk, "b.example.com."));
    assert_eq!(store.fleet_revision().expect("meta"), Some(11));
    let diffs = store
        .changes(&n(APEX), serial, serial.wrapping_add(2))
        .expect("journaled");
    assert_eq!(diffs.len(), 2);
}

#[tokio::test]
async fn a_fleet_revision_is_in_the_maps_when_apply_remote_returns_and_on_disk_after_the_flush() {
    let bed = Bed::new().await;
    let published = bed.engine.subscribe();
    for (i, rev) in (20..30u64).enumerate() {
        let name = format!("r{i}.example.com.");
        bed.engine
            .apply_remote(revision(rev, &name, [192, 0, 2, i as u8]))
            .await
            .expect("served");
        let key = name_key(&n(&name)).expect("key");
        assert!(bed.maps.state().names.contains_key(&key), "{name}");
        assert!(has_a(&bed.engine.zones(), &name));
    }
    bed.engine.flush_copy().await.expect("flushed");
    let disk = bed.on_disk();
    assert!((0..10).all(|i| has_a(&disk, &format!("r{i}.example.com."))));
    assert_eq!(
        bed.engine.store.inner.fleet_revision().expect("meta"),
        Some(29)
    );
    // Whoever follows the serials (NOTIFY) was told, once the journal had the changes.
    assert!(published.has_changed().expect("engine alive"));
}

#[tokio::test]
async fn a_failed_map_write_switches_the_fast_path_off_and_keeps_the_change() {
    let bed = Bed::new().await;
    bed.maps.state().fail = true;
    let err = bed
        .engine
        .apply(Bed::set_a("www.example.com.", [192, 0, 2, 1]))
        .await
        .expect_err("map write fails");
    assert!(matches!(err, EngineError::FastPath(_)), "{err}");
    assert!(
        bed.maps.state().disabled,
        "fast path left on with stale maps"
    );
    // Committed, and served by the fallback from the published zones.
    assert!(has_a(&bed.engine.zones(), "www.example.com."));
    assert!(has_a(&bed.on_disk(), "www.example.com."));
}

#[tokio::test]
async fn a_refused_change_touches_neither_disk_nor_maps() {
    let bed = Bed::new().await;
    let before_disk = bed.on_disk().zone(&n(APEX)).expect("zone").serial();
    let names_in_maps = bed.maps.state().names.len();
    let batch = Edit::Batch(
        n(APEX),
        vec![
            Change::Set {
                name: n("ok.example.com."),
                rtype: RecordType::A,
                ttl: 60,
                records: vec![RData::A(A::new(192, 0, 2, 2))],
            },
            Change::Delete {
                name: n("missing.example.com."),
                rtype: RecordType::A,
            },
        ],
    );
    let err = bed.engine.apply(batch).await.expect_err("refused");
    assert!(
        matches!(err, EngineError::Invalid(ZoneError::Batch { index: 1, .. })),
        "{err}"
    );
    assert!(!has_a(&bed.engine.zones(), "ok.example.com."));
    let disk = bed.on_disk();
    assert!(!has_a(&disk, "ok.example.com."));
    assert_eq!(disk.zone(&n(APEX)).expect("zone").serial(), before_disk);
    assert_eq!(bed.maps.state().names.len(), names_in_maps);
}

#[tokio::test]
async fn a_reader_keeps_its_version_while_writes_land() {
    let bed = Bed::new().await;
    let held = bed.engine.zones();
    for i in 0..10u8 {
        bed.engine
            .apply(Bed::set_a(&format!("h{i}.example.com."), [192, 0, 2, i]))
            .await
            .expect("write");
    }
    assert!((0..10).all(|i| !has_a(&held, &format!("h{i}.example.com."))));
    let now = bed.engine.zones();
    assert!((0..10).all(|i| has_a(&now, &format!("h{i}.example.com."))));
}

#[tokio::test]
async fn a_large_batch_is_one_change_set_in_store_maps_and_memory() {
    let bed = Bed::new().await;
    let changes: Vec<Change> = (0..2000u32)
        .map(|i| Change::Set {
            name: n(&format!("b{i}.example.com.")),
            rtype: RecordType::A,
            ttl: 60,
            records: vec![RData::A(A::from(std::net::Ipv4Addr::from(0xc000_0200 + i)))],
        })
        .collect();
    let applied = bed
        .engine
        .apply(Edit::Batch(n(APEX), changes))
        .await
        .expect("batch");
    assert_eq!(
        applied.sync.names_written,
        2000 + 1,
        "the names and the apex"
    );
    let disk = bed.on_disk();
    assert_eq!(disk.zone(&n(APEX)).expect("zone").rrset_count(), 2000 + 1);
    assert!(has_a(&bed.engine.zones(), "b1999.example.com."));
}

/// `apply_with` builds each edit from the version it is applied to: twenty read-then-write
/// increments, all at once, end at twenty. Without the writer lock around check and apply, two
/// would read the same value and one increment would be lost.
#[tokio::test]
async fn apply_with_checks_and_applies_with_no_write_in_between() {
    #[derive(Debug)]
    struct Failed;
    impl From<EngineError> for Failed {
        fn from(e: EngineError) -> Self {
            panic!("engine error: {e}")
        }
    }
    let bed = Bed::new().await;
    let name = "counter.example.com.";
    let read = |zones: &ZoneSet| -> u8 {
        zones
            .zone(&n(APEX))
            .and_then(|z| z.rrset(&n(name), RecordType::A))
            .map_or(0, |s| match &s.records[0] {
                RData::A(a) => a.0.octets()[3],
                _ => 0,
            })
    };
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let engine = bed.engine.clone();
        tasks.push(tokio::spawn(async move {
            engine
                .apply_with(move |zones| {
                    // Leave the other tasks time to slip in, were they able to.
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    Ok::<_, Failed>(Some(Bed::set_a(name, [192, 0, 2, read(zones) + 1])))
                })
                .await
                .expect("applied")
                .expect("an edit")
        }));
    }
    for t in tasks {
        t.await.expect("task");
    }
    assert_eq!(read(&bed.engine.zones()), 20);

    // Nothing to change: nothing applied, the serial stays.
    let serial = bed.engine.zones().zone(&n(APEX)).expect("zone").serial();
    let none = bed
        .engine
        .apply_with(|_| Ok::<_, Failed>(None))
        .await
        .expect("ok");
    assert!(none.is_none());
    // A refusal from `build` comes back as it is, and changes nothing.
    let refused = bed
        .engine
        .apply_with(|_| Err::<Option<Edit>, _>(Failed))
        .await;
    assert!(matches!(refused, Err(Failed)));
    assert_eq!(
        bed.engine.zones().zone(&n(APEX)).expect("zone").serial(),
        serial
    );
}

/// A start-up map fill that fails (say, maps too small for the store) switches the fast path
/// off, so that the program passes queries up to the fallback instead of answering from maps
/// that hold part of the store.
#[tokio::test]
async fn a_failed_full_sync_switches_the_fast_path_off() {
    let bed = Bed::new().await;
    bed.maps.state().fail = true;
    assert!(bed
        .engine
        .full_sync_with(&crate::progress::Reporter::default())
        .is_err());
    assert!(bed.maps.state().disabled);
}

/// The start-up map fill reports names compiled while it runs and at its end, and the total it
/// announces is what ends up in the maps.
#[tokio::test]
async fn full_sync_reports_progress() {
    use crate::progress::{Reporter, CHECK_EVERY};

    let bed = Bed::new().await;
    let mut text = format!("$ORIGIN {APEX}\n$TTL 60\n@ SOA ns1 h 2 3600 600 86400 60\n@ NS ns1\n");
    for i in 0..3 * CHECK_EVERY {
        text.push_str(&format!("h{i} A 192.0.2.{}\n", i % 256));
    }
    let zf = crate::zonefile::parse("big.zone", &text, None).expect("zone file");
    let (_, spec, rrsets) = zf.into_parts();
    bed.engine
        .apply(Edit::ReplaceZone { spec, rrsets })
        .await
        .expect("zone replaced");

    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let reporter = Reporter::default()
        .with_interval(std::time::Duration::ZERO)
        .with_status(move |s| sink.lock().unwrap().push(s.to_string()));
    bed.engine.full_sync_with(&reporter).expect("full sync");

    // The apex and the A owners (ns1 has no address here).
    let total = 3 * CHECK_EVERY + 1;
    assert_eq!(bed.maps.state().names.len() as u64, total);
    let seen = seen.lock().unwrap();
    let prefix = "filling the maps: ";
    let midway = seen
        .iter()
        .filter(|s| s.starts_with(prefix) && s.ends_with(" s left"))
        .count();
    assert_eq!(midway, 3, "{seen:?}");
    assert!(
        seen.last().is_some_and(
            |s| s.starts_with(&format!("{prefix}{total}/{total} records, "))
                && s.ends_with(", done")
        ),
        "{seen:?}"
    );
}

/// A zone-file import reports the map fill of its zone while it runs and at its end.
#[tokio::test]
async fn import_reports_the_map_fill() {
    use crate::progress::{Reporter, CHECK_EVERY};

    let bed = Bed::new().await;
    let mut text = format!("$ORIGIN {APEX}\n$TTL 60\n@ SOA ns1 h 2 3600 600 86400 60\n@ NS ns1\n");
    for i in 0..3 * CHECK_EVERY {
        text.push_str(&format!("h{i} A 192.0.2.{}\n", i % 256));
    }
    let zf = crate::zonefile::parse("big.zone", &text, None).expect("zone file");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&seen);
    let reporter = Reporter::default()
        .with_interval(std::time::Duration::ZERO)
        .with_status(move |s| sink.lock().unwrap().push(s.to_string()));
    let imported = bed
        .engine
        .import_zone_with(zf, &reporter)
        .await
        .expect("imported");
    assert!(imported.changed);

    // The apex and the A owners.
    let total = 3 * CHECK_EVERY + 1;
    assert_eq!(bed.maps.state().names.len() as u64, total);
    let seen = seen.lock().unwrap();
    let prefix = "filling the maps for a zone: ";
    let midway: Vec<u64> = seen
        .iter()
        .filter(|s| s.ends_with(" s left"))
        .filter_map(|s| s.strip_prefix(prefix)?.split('/').next()?.parse().ok())
        .collect();
    assert_eq!(
        midway,
        [CHECK_EVERY, 2 * CHECK_EVERY, 3 * CHECK_EVERY],
        "{seen:?}"
    );
    assert!(
        seen.last().is_some_and(
            |s| s.starts_with(&format!("{prefix}{total}/{total} records, "))
                && s.ends_with(", done")
        ),
        "{seen:?}"
    );
}
