//! A start that fails leaves bpffs as it found it: a daemon refused on an interface that another
//! XDP program holds exits with an error, without pins, and without disturbing the other program;
//! one that fails after attaching detaches its program and removes its pins, as a clean exit does.

use std::{path::Path, time::Duration};

use tests::{
    edgedns_bin, run_timeout, Bpffs, PassGuard, TempDir, TestBed, API_ADDR, DNS_PORT, SERVER_V4,
};

/// Every file below `dir` (pins are files; an empty directory left is no pin).
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

/// `edgedns serve --iface IFACE --bpffs BPFFS --data-dir DATA ARGS` in the server namespace, to
/// its end; panics unless it fails. Returns its output.
fn failed_serve(bed: &TestBed, bpffs: &Path, data: &Path, args: &[&str]) -> String {
    let listen = format!("{SERVER_V4}:{DNS_PORT}");
    let mut cmd = bed.server.command(edgedns_bin());
    cmd.args(["serve", "--iface", &bed.veth.server_if])
        .args(["--dns-listen", &listen, "--api-listen", API_ADDR])
        .arg("--bpffs")
        .arg(bpffs)
        .arg("--data-dir")
        .arg(data)
        .args(args);
    let out = run_timeout(&mut cmd, Duration::from_secs(30)).expect("serve runs");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        out.status.is_some_and(|s| !s.success()),
        "serve {args:?} did not fail ({:?}):\n{text}",
        out.status
    );
    text
}

/// The failed start left no pins beside `before` in `bpffs` and no program on the server's
/// interface.
fn assert_nothing_left(bed: &TestBed, bpffs: &Path, before: &[String], text: &str) {
    assert_eq!(
        files(bpffs),
        before,
        "pins left behind; serve's output:\n{text}"
    );
    let link = bed.server.ip(&["link", "show", "dev", &bed.veth.server_if]);
    assert!(
        !link.contains("xdp"),
        "the failed start left a program attached:\n{link}"
    );
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
    // A fresh bpffs may hold the kernel's own files (progs.debug, maps.debug).
    let before = files(bpffs.path());

    for mode in ["auto", "driver", "generic"] {
        let text = failed_serve(&bed, bpffs.path(), &data, &["--xdp-mode", mode]);
        assert!(
            text.contains("loading the XDP program on"),
            "--xdp-mode {mode}: failed for another reason:\n{text}"
        );
        assert_eq!(
            files(bpffs.path()),
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

#[test]
fn a_start_failing_after_the_attach_detaches_and_removes_its_pins() {
    let bed = TestBed::network();
    let pins = TempDir::new();
    let bpffs = Bpffs::mount(&pins.path().join("bpffs"));
    let before = files(bpffs.path());
    let data = bed.tmp.path().join("data");
    // A label of 64 bytes: `--zone` is checked only once the program is attached.
    let zone = format!("{}.example.net", "x".repeat(64));
    let text = failed_serve(
        &bed,
        bpffs.path(),
        &data,
        &["--xdp-mode", "driver", "--zone", &zone],
    );
    assert!(
        text.contains("XDP program attached") && text.contains("bad --zone"),
        "failed for another reason, or before the attach:\n{text}"
    );
    assert_nothing_left(&bed, bpffs.path(), &before, &text);
}

#[test]
fn a_start_that_cannot_read_its_store_attaches_nothing_and_leaves_no_pins() {
    let bed = TestBed::network();
    let pins = TempDir::new();
    let bpffs = Bpffs::mount(&pins.path().join("bpffs"));
    let before = files(bpffs.path());
    let data = bed.tmp.path().join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    // Not a redb file: the store can't be opened. The program is loaded and verified while the
    // store is read, and must be dropped, not attached, when the read fails.
    std::fs::write(data.join("edgedns.redb"), vec![0x5a; 8192]).expect("store file");
    let text = failed_serve(&bed, bpffs.path(), &data, &["--xdp-mode", "driver"]);
    assert!(
        text.contains("store") && !text.contains("XDP program attached"),
        "failed for another reason, or after the attach:\n{text}"
    );
    assert_nothing_left(&bed, bpffs.path(), &before, &text);
}
