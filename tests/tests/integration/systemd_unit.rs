//! contrib/systemd/edgedns.service leaves the daemon only its CapabilityBoundingSet; this runs
//! the real daemon with exactly that set (as root, as the unit does) and checks the fast path
//! loads, attaches, binds port 53 and answers at XDP. bpffs is mounted first, as systemd mounts
//! it at boot (the unit gives no CAP_SYS_ADMIN to mount it).

use std::{fs, os::unix::fs::PermissionsExt as _, path::Path};

use tests::{dig, edgedns_bin, Daemon, NetNs, TempDir, DEMO_A, DEMO_NAME};

/// The capabilities the unit keeps, as setpriv names them (`bpf`, `net_admin`, ...).
fn unit_capabilities() -> Vec<String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/systemd/edgedns.service");
    let unit =
        fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let line = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet");
    line.split_whitespace()
        .map(|c| {
            c.strip_prefix("CAP_")
                .unwrap_or_else(|| panic!("capability {c}"))
                .to_ascii_lowercase()
        })
        .collect()
}

#[test]
fn systemd_unit_capabilities_run_the_fast_path() {
    let caps = unit_capabilities();
    assert!(!caps.iter().any(|c| c == "sys_admin"), "{caps:?}");
    let tmp = TempDir::new();
    let set: String = caps.iter().map(|c| format!(",+{c}")).collect();
    let wrapper = tmp.path().join("edgedns-capped");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n\
             mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || exit 1\n\
             exec setpriv --bounding-set=-all{set} --inh-caps=-all {} \"$@\"\n",
            edgedns_bin().display()
        ),
    )
    .expect("write the wrapper");
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).expect("chmod");

    let ns = NetNs::new("cap");
    let daemon = Daemon::start(
        &wrapper,
        &ns,
        &["--xdp-mode", "generic", "--dns-listen", "127.0.0.1:53"],
        &tmp.path().join("data"),
    );
    let answered = |s: &tests::Stats| -> u64 {
        s.counters
            .iter()
            .filter(|((metric, _), _)| metric == "answered")
            .map(|(_, n)| n)
            .sum()
    };
    let before = answered(&daemon.stats());
    let a = dig(&ns, "127.0.0.1", 53, DEMO_NAME, "A");
    assert_eq!(a.status, "NOERROR", "{}", a.raw);
    assert_eq!(a.rdata("A"), [DEMO_A], "{}", a.raw);
    assert!(
        answered(&daemon.stats()) > before,
        "the answer did not come from XDP; log:\n{}",
        daemon.process.log_text()
    );
}
