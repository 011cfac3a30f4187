//! SIGHUP with the real fast path: the daemon re-reads its `--zone-file`, and the new data is
//! answered by the XDP program itself, with the program attached throughout.

use std::{fs, thread, time::Duration};

use tests::{dig, edgedns_bin, Daemon, NetNs, TempDir, DNS_PORT};

fn zone(serial: u32, addr: &str) -> String {
    format!(
        "$ORIGIN hup.example.\n$TTL 60\n\
         @ SOA ns1 hostmaster {serial} 3600 600 86400 30\n\
         @ NS ns1\nns1 A 192.0.2.53\nwww A {addr}\n"
    )
}

fn answered(d: &Daemon) -> u64 {
    d.stats()
        .counters
        .iter()
        .filter(|((metric, _), _)| metric == "answered")
        .map(|(_, n)| n)
        .sum()
}

#[test]
fn sighup_reloads_zone_files_into_the_fast_path() {
    let tmp = TempDir::new();
    let file = tmp.path().join("hup.zone");
    fs::write(&file, zone(1, "192.0.2.1")).expect("write the zone file");
    let ns = NetNs::new("hup");
    let mut daemon = Daemon::start(
        &edgedns_bin(),
        &ns,
        &[
            "--xdp-mode".as_ref(),
            "generic".as_ref(),
            "--zone-file".as_ref(),
            file.as_os_str(),
        ],
        &tmp.path().join("data"),
    );
    let a = dig(&ns, "127.0.0.1", DNS_PORT, "www.hup.example", "A");
    assert_eq!(a.rdata("A"), ["192.0.2.1"], "{}", a.raw);

    fs::write(&file, zone(2, "192.0.2.2")).expect("rewrite the zone file");
    let pid = libc::pid_t::try_from(daemon.process.pid()).expect("pid");
    // SAFETY: kill(2) on the daemon, our child, which is running (Daemon::start checked).
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let mut served: Vec<String> = Vec::new();
    for _ in 0..50 {
        daemon.process.assert_running();
        let a = dig(&ns, "127.0.0.1", DNS_PORT, "www.hup.example", "A");
        served = a.rdata("A").iter().map(|s| s.to_string()).collect();
        if served == ["192.0.2.2"] {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        served,
        ["192.0.2.2"],
        "not reloaded; log:\n{}",
        daemon.process.log_text()
    );
    let before = answered(&daemon);
    let a = dig(&ns, "127.0.0.1", DNS_PORT, "www.hup.example", "A");
    assert_eq!(a.rdata("A"), ["192.0.2.2"], "{}", a.raw);
    assert!(
        answered(&daemon) > before,
        "the new data is not answered at XDP"
    );
    daemon.process.assert_running();
}
