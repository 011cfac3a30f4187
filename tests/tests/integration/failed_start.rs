//! A start that fails leaves bpffs as it found it: a daemon refused on an interface that another
//! XDP program holds exits with an error, without pins, and without disturbing the other program.

use std::{path::Path, time::Duration};

use tests::{
    edgedns_bin, run_timeout, wire::Bpffs, PassGuard, TempDir, TestBed, API_ADDR, DNS_PORT,
    SERVER_V4,
};

/// Every path below `dir`, depth first.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        out.push(path.display().to_string());
        if path.is_dir() {
            out.extend(tree(&path));
        }
    }
    out
}

#[test]
fn a_start_refused_on_a_busy_interface_leaves_no_pins() {
    let bin = edgedns_bin();
    let bed = TestBed::network();
    let pins = TempDir::new();
    let bpffs = Bpffs::mount(&pins.path().join("bpffs"));
    let iface = bed.veth.server_if.clone();
    // Another program holds the server's end of the veth in driver mode, so neither driver nor
    // generic mode can attach there.
    let other = PassGuard::start(&bin, &bed.server, &iface, bed.tmp.path());
    let data = bed.tmp.path().join("data");
    let listen = format!("{SERVER_V4}:{DNS_PORT}");
    // A fresh bpffs may hold the kernel's own files (progs.debug, maps.debug).
    let before = tree(bpffs.path());

    for mode in ["auto", "driver", "generic"] {
        let mut cmd = bed.server.command(&bin);
        cmd.args(["serve", "--iface", &iface, "--xdp-mode", mode])
            .args(["--dns-listen", &listen, "--api-listen", API_ADDR])
            .arg("--bpffs")
            .arg(bpffs.path())
            .arg("--data-dir")
            .arg(&data);
        let out = run_timeout(&mut cmd, Duration::from_secs(30));
        let text = format!("{}{}", out.stdout, out.stderr);
        assert!(
            out.status.is_some_and(|s| !s.success()),
            "--xdp-mode {mode}: serve did not fail on a busy interface ({:?}):\n{text}",
            out.status
        );
        assert!(
            text.contains("loading the XDP program on"),
            "--xdp-mode {mode}: failed for another reason:\n{text}"
        );
        assert_eq!(
            tree(bpffs.path()),
            before,
            "--xdp-mode {mode}: pins left behind; serve's output:\n{text}"
        );
    }

    // The other program was left alone.
    let link = bed.server.ip(&["link", "show", "dev", &iface]);
    assert!(
        link.contains("xdp"),
        "the other XDP program is gone:\n{link}"
    );
    drop(other);
}
