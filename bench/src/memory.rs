//! Section 5: kernel map memory per record, daemon RSS and start-up time at 1M A records.

use std::{
    collections::BTreeMap,
    fs,
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result};
use dns_user::{
    compile::{compile_name, full_sync},
    loader::{load_detached, served_keys, xdp_config},
    store::Store,
};
use hickory_proto::rr::RecordType;
use serde_json::{json, Value};
use testkit::dns_client::{DnsClient, Reply};

use crate::{
    servers,
    sys::{self, Bed},
    zonegen::{self, Shape, APEX},
};

/// `/proc/meminfo` fields in kB.
fn meminfo() -> BTreeMap<String, i64> {
    fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.to_owned(), v.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// The BPF maps a process holds: `(map id, map_type, memlock bytes)` from /proc/PID/fdinfo.
fn maps_of(pid: u32) -> Vec<(u64, u64, u64)> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return out;
    };
    for e in rd.flatten() {
        let Ok(s) = fs::read_to_string(e.path()) else {
            continue;
        };
        let get = |k: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(k)?.trim().parse::<u64>().ok())
        };
        if let (Some(id), Some(t), Some(m)) = (get("map_id:"), get("map_type:"), get("memlock:")) {
            out.push((id, t, m));
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// The map's name, from bpftool.
fn map_name(id: u64) -> String {
    std::process::Command::new("bpftool")
        .args(["-j", "map", "show", "id", &id.to_string()])
        .output()
        .ok()
        .and_then(|o| serde_json::from_slice::<Value>(&o.stdout).ok())
        .and_then(|v| v["name"].as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("id {id}"))
}

/// `BPF_MAP_TYPE_HASH`: the name maps and ZONES (whatever they are called; the layout changes).
const MAP_TYPE_HASH: u64 = 1;

/// Every map of the process by name, with its memlock; and the sum over its hash maps.
fn named_maps(pid: u32) -> (BTreeMap<String, u64>, u64) {
    let maps = maps_of(pid);
    let hash = maps
        .iter()
        .filter(|(_, t, _)| *t == MAP_TYPE_HASH)
        .map(|(_, _, m)| m)
        .sum();
    (
        maps.into_iter()
            .map(|(id, _, m)| (map_name(id), m))
            .collect(),
        hash,
    )
}

fn rss_kb(pid: u32) -> (u64, u64) {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let get = |k: &str| {
        s.lines()
            .find_map(|l| l.strip_prefix(k)?.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    (get("VmRSS:"), get("VmHWM:"))
}

pub fn run(bed: &Bed, edgedns: &Path, names: u32) -> Result<Value> {
    let shape = Shape {
        names,
        extras: false,
    };
    let t = Instant::now();
    let zones = zonegen::zone_set(shape)?;
    let build = t.elapsed();

    // Maps filled in this process, as the daemon fills them at start.
    let before = meminfo();
    let listen: SocketAddr = "[::]:53".parse().expect("address");
    let (ebpf, mut fast) = load_detached(xdp_config(1232, true), &served_keys(&[listen]))
        .map_err(|e| anyhow::anyhow!("{:#}", anyhow::Error::new(e)))?;
    let me = std::process::id();
    let maps_empty = named_maps(me);
    let t = Instant::now();
    let report = full_sync(&mut fast, &zones).context("filling the maps")?;
    let fill = t.elapsed();
    // Let deferred frees and per-CPU caches settle a moment.
    std::thread::sleep(Duration::from_millis(500));
    let after = meminfo();
    let maps_full = named_maps(me);
    drop(fast);
    drop(ebpf);
    std::thread::sleep(Duration::from_millis(1500));
    let released = meminfo();
    let d = |k: &str, a: &BTreeMap<String, i64>, b: &BTreeMap<String, i64>| {
        (b.get(k).copied().unwrap_or(0) - a.get(k).copied().unwrap_or(0)) * 1024
    };
    let n = f64::from(names);
    let (maps_empty, memlock_empty) = maps_empty;
    let (maps_full, memlock_names) = maps_full;
    let (memlock_empty, memlock_names) = (memlock_empty as i64, memlock_names as i64);
    let slab = d("Slab", &before, &after);
    let avail = -d("MemAvailable", &before, &after);
    let in_process = json!({
        "names_written": report.names_written,
        "zone_build_s": build.as_secs_f64(),
        "fill_s": fill.as_secs_f64(),
        "memlock_empty": maps_empty,
        "memlock_full": maps_full,
        "memlock_name_maps_bytes": memlock_names,
        "memlock_per_record": (memlock_names - memlock_empty) as f64 / n,
        "memlock_per_record_total": memlock_names as f64 / n,
        "slab_delta_bytes": slab,
        "slab_per_record": slab as f64 / n,
        "memavailable_drop_bytes": avail,
        "memavailable_per_record": avail as f64 / n,
        "slab_released_bytes": -d("Slab", &after, &released),
    });
    drop(zones);
    eprintln!("bench: memory: {names} names into the maps in {fill:.1?}");

    // The daemon: a store with the names, then `edgedns serve` from start to `ready`.
    let data = bed.dir.join("mem-data");
    let _ = fs::remove_dir_all(&data);
    let t = Instant::now();
    zonegen::write_store(&data, &zonegen::zone_set(shape)?)?;
    let store_s = t.elapsed();
    // What the daemon's start consists of, timed in pieces: reading the store into zones, then
    // compiling every name (without writing the maps); the rest of `fill_s` is map writes.
    let (load_s, compile_s) = {
        let t = Instant::now();
        let store = Store::open(&data)?;
        let zones = store.load().context("loading the store")?.zones;
        let load_s = t.elapsed();
        let t = Instant::now();
        let mut compiled = 0usize;
        for zone in zones.zones() {
            for name in zone.existing_names() {
                compiled += usize::from(compile_name(&zones, zone, &name).is_some());
            }
        }
        let compile_s = t.elapsed();
        anyhow::ensure!(compiled >= names as usize, "compiled {compiled} names");
        (load_s, compile_s)
    };
    // Once pinned to one CPU as the other sections run servers, for comparison with the figures
    // before; then, the headline, unpinned: on an edge host the daemon has every CPU, and its
    // start reads the store and compiles on all of them.
    let (ready_pinned, rss_pinned) = {
        let (mut p, ready) = servers::start_edgedns(
            bed,
            edgedns,
            &data,
            servers::EdgeOpts {
                xdp: true,
                pinned: true,
                extra: &[],
            },
            &bed.dir.join("mem-daemon-pinned.log"),
            Duration::from_secs(300),
        )?;
        let (rss, _) = rss_kb(p.pid());
        p.check_running()?;
        p.stop();
        bed.xdp_off(&bed.s, sys::S_IF);
        // The kernel frees the million-entry maps of the stopped daemon after it has gone, on
        // its own workers: without a pause that work ran beside the next start and made it a
        // second or two slower.
        std::thread::sleep(Duration::from_secs(5));
        (ready, rss)
    };
    let (mut p, ready) = servers::start_edgedns(
        bed,
        edgedns,
        &data,
        servers::EdgeOpts {
            xdp: true,
            pinned: false,
            extra: &[],
        },
        &bed.dir.join("mem-daemon.log"),
        Duration::from_secs(300),
    )?;
    let pid = p.pid();
    let (rss, hwm) = rss_kb(pid);
    let (daemon_maps, daemon_hash_memlock) = named_maps(pid);
    // A few names answered by the fast path, as a sanity check.
    let ok = {
        let _pass = servers::client_pass(bed, edgedns, &bed.dir.join("mem-pass.log"))?;
        let r = sys::in_ns(&bed.c, move || {
            let mut c = DnsClient::new(servers::server_addr(), Duration::from_millis(500))?;
            let mut ok = 0;
            for k in 0..5u32 {
                let i = (k * 199_999 + 17) % names;
                if let Reply::Answer { rcode, addrs } =
                    c.query(&format!("n{i}.{APEX}"), RecordType::A)
                {
                    if rcode == "NoError" && addrs == [zonegen::a_of(i).to_string()] {
                        ok += 1;
                    }
                }
            }
            Ok(ok)
        })?;
        bed.xdp_off(&bed.c, sys::C_IF);
        r
    };
    p.check_running()?;
    p.stop();
    let _ = fs::remove_dir_all(&data);
    Ok(json!({
        "names": names,
        "in_process": in_process,
        "store_write_s": store_s.as_secs_f64(),
        "store_load_s": load_s.as_secs_f64(),
        "compile_only_s": compile_s.as_secs_f64(),
        "start_to_ready_s": ready.as_secs_f64(),
        "start_to_ready_pinned_s": ready_pinned.as_secs_f64(),
        "daemon_rss_pinned_bytes": rss_pinned * 1024,
        "daemon_rss_bytes": rss * 1024,
        "daemon_hwm_bytes": hwm * 1024,
        "daemon_rss_per_record": (rss * 1024) as f64 / n,
        "daemon_maps": daemon_maps,
        "daemon_hash_maps_memlock_per_record": daemon_hash_memlock as f64 / n,
        "sample_answers_right": ok,
    }))
}
