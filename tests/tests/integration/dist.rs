//! `cargo xtask dist` makes a Debian package that works once unpacked: every file in its place
//! with a sane mode and root as owner, the control fields filled in, the configuration a
//! conffile, and the unpacked binary, started with the unpacked configuration, answers DNS and
//! `/healthz`. The package is made from the test daemon (`--binary`), not a release build, which
//! would take most of the suite's time: what is tested is the packaging.

use std::{
    collections::BTreeMap,
    ffi::OsStr,
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use tests::{
    dig, edgedns_bin, run_ok, try_run_ok, Daemon, NetNs, TempDir, DEMO_A, DEMO_NAME, DNS_PORT,
};

/// Running `cargo xtask dist`: xtask is built already (`cargo xtask test` runs through it), so
/// this is the stripping and the compression of the package.
const DIST_TIMEOUT: Duration = Duration::from_secs(180);

/// Each packaged file and the mode `dpkg-deb --contents` must show for it.
const FILES: [(&str, &str); 9] = [
    ("usr/bin/edgedns", "-rwxr-xr-x"),
    ("lib/systemd/system/edgedns.service", "-rw-r--r--"),
    ("etc/edgedns/edgedns.toml", "-rw-r--r--"),
    ("usr/share/man/man1/edgedns.1.gz", "-rw-r--r--"),
    // A page per subcommand, so `man edgedns-serve` lists every flag.
    ("usr/share/man/man1/edgedns-serve.1.gz", "-rw-r--r--"),
    ("usr/share/man/man1/edgedns-zone-import.1.gz", "-rw-r--r--"),
    (
        "usr/share/bash-completion/completions/edgedns",
        "-rw-r--r--",
    ),
    ("usr/share/zsh/vendor-completions/_edgedns", "-rw-r--r--"),
    (
        "usr/share/fish/vendor_completions.d/edgedns.fish",
        "-rw-r--r--",
    ),
];

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// dns-user's version, read here independently of xtask.
fn crate_version() -> String {
    let manifest = fs::read_to_string(workspace_root().join("dns-user/Cargo.toml"))
        .expect("read dns-user/Cargo.toml");
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("dns-user has a version")
        .to_owned()
}

/// `cargo xtask dist --binary BIN --out-dir OUT`; returns the path it prints.
fn build_deb(bin: &Path, out: &Path) -> PathBuf {
    let cargo = option_env!("CARGO").unwrap_or("cargo");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["run", "--quiet", "--package", "xtask", "--", "dist"])
        .arg("--binary")
        .arg(bin)
        .arg("--out-dir")
        .arg(out);
    let stdout = try_run_ok(&mut cmd, DIST_TIMEOUT).unwrap_or_else(|e| panic!("{e}"));
    let deb = PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("xtask dist prints the package"),
    );
    assert!(deb.starts_with(out), "{}", deb.display());
    assert!(deb.is_file(), "{} is no file", deb.display());
    deb
}

/// `dpkg-deb --contents`: path (without the leading `./`) to (mode, owner).
fn contents(deb: &Path) -> BTreeMap<String, (String, String)> {
    run_ok(Command::new("dpkg-deb").arg("--contents").arg(deb))
        .lines()
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            assert!(f.len() >= 6, "dpkg-deb --contents line: {line}");
            let path = f[5].trim_start_matches("./").trim_end_matches('/');
            (path.to_owned(), (f[0].to_owned(), f[1].to_owned()))
        })
        .collect()
}

#[test]
fn dist_package_installs_and_serves() {
    let bin = edgedns_bin();
    let tmp = TempDir::new();
    let deb = build_deb(&bin, &tmp.path().join("out"));
    let arch = run_ok(Command::new("dpkg").arg("--print-architecture"));
    let version = crate_version();
    assert_eq!(
        deb.file_name().and_then(|n| n.to_str()),
        Some(format!("edgedns_{version}_{}.deb", arch.trim()).as_str())
    );
    // Nothing but the package is left behind (the scratch tree is removed).
    let left: Vec<_> = fs::read_dir(tmp.path().join("out"))
        .expect("read the out dir")
        .map(|e| e.expect("dir entry").file_name())
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");

    // Every file in its place, owned by root, with its mode; no directory or file writable by
    // anyone but root.
    let listed = contents(&deb);
    for (path, mode) in FILES {
        let (got, owner) = listed
            .get(path)
            .unwrap_or_else(|| panic!("{path} is not in the package: {listed:#?}"));
        assert_eq!(got, mode, "{path}");
        assert_eq!(owner, "root/root", "{path}");
    }
    for (path, (mode, owner)) in &listed {
        assert_eq!(owner, "root/root", "{path}");
        assert!(
            mode.starts_with('d') || mode.starts_with('-'),
            "{path}: {mode}"
        );
        assert_eq!(&mode[5..6], "-", "{path} is group-writable: {mode}");
        assert_eq!(&mode[8..9], "-", "{path} is world-writable: {mode}");
    }

    // The control fields.
    let field = |name: &str| {
        run_ok(Command::new("dpkg-deb").arg("--field").arg(&deb).arg(name))
            .trim()
            .to_owned()
    };
    assert_eq!(field("Package"), "edgedns");
    assert_eq!(field("Version"), version);
    assert_eq!(field("Architecture"), arch.trim());
    assert!(field("Maintainer").contains('@'), "{}", field("Maintainer"));
    assert!(
        field("Depends").starts_with("libc6 (>= 2."),
        "{}",
        field("Depends")
    );
    assert!(!field("Description").is_empty());
    let info = run_ok(Command::new("dpkg-deb").arg("--info").arg(&deb));
    // `SIZE bytes, N lines [*] NAME`: `*` marks an executable member.
    let member = |name: &str| -> Vec<String> {
        info.lines()
            .map(|l| l.split_whitespace().skip(4).take(2).collect::<Vec<_>>())
            .find(|w| w.last() == Some(&name))
            .unwrap_or_else(|| panic!("no {name} in the control archive:\n{info}"))
            .into_iter()
            .map(str::to_owned)
            .collect()
    };
    for name in ["control", "conffiles"] {
        assert_eq!(member(name), [name], "{info}");
    }
    for name in ["postinst", "prerm", "postrm"] {
        assert_eq!(
            member(name),
            ["*", name],
            "{name} is not executable:\n{info}"
        );
    }

    // The control archive: the configuration is a conffile; the scripts are executable shell
    // that parses, and manage the unit as the description says.
    let control = tmp.path().join("control");
    run_ok(
        Command::new("dpkg-deb")
            .arg("--control")
            .arg(&deb)
            .arg(&control),
    );
    let conffiles = fs::read_to_string(control.join("conffiles")).expect("read conffiles");
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        ["/etc/edgedns/edgedns.toml"]
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.join(script);
        run_ok(Command::new("sh").arg("-n").arg(&path));
        let text = fs::read_to_string(&path).expect("read the script");
        assert!(text.starts_with("#!/bin/sh\n"), "{script}:\n{text}");
    }
    let postinst = fs::read_to_string(control.join("postinst")).expect("read postinst");
    assert!(postinst.contains("daemon-reload"), "{postinst}");
    assert!(postinst.contains("enable edgedns.service"), "{postinst}");
    assert!(
        !postinst
            .replace("try-restart", "")
            .contains("start edgedns"),
        "postinst starts the service:\n{postinst}"
    );
    let prerm = fs::read_to_string(control.join("prerm")).expect("read prerm");
    assert!(prerm.contains("stop edgedns.service"), "{prerm}");
    scripts_manage_the_unit(&control, tmp.path());

    // Unpacked, the files are what the binary generates.
    let root = tmp.path().join("root");
    run_ok(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&root));
    let packaged = root.join("usr/bin/edgedns");
    assert_eq!(
        run_ok(Command::new(&packaged).arg("--version")).trim(),
        format!("edgedns {version}")
    );
    let config = root.join("etc/edgedns/edgedns.toml");
    let check = run_ok(
        Command::new(&packaged)
            .arg("config")
            .arg("check")
            .arg(&config),
    );
    eprintln!("edgedns config check: {}", check.trim());
    let man = run_ok(
        Command::new("gzip")
            .arg("-dc")
            .arg(root.join("usr/share/man/man1/edgedns.1.gz")),
    );
    assert!(man.contains(".TH edgedns 1"), "{man}");
    let serve = run_ok(
        Command::new("gzip")
            .arg("-dc")
            .arg(root.join("usr/share/man/man1/edgedns-serve.1.gz")),
    );
    assert!(serve.contains(".TH edgedns-serve 1"), "{serve}");
    assert!(
        serve.contains("dns\\-listen"),
        "the serve page lists its flags"
    );
    for (shell, path) in [
        ("bash", "usr/share/bash-completion/completions/edgedns"),
        ("zsh", "usr/share/zsh/vendor-completions/_edgedns"),
        ("fish", "usr/share/fish/vendor_completions.d/edgedns.fish"),
    ] {
        let text = fs::read_to_string(root.join(path)).expect("read the completions");
        assert_eq!(
            text,
            run_ok(Command::new(&packaged).args(["completions", shell])),
            "{path}"
        );
    }

    // The unit starts the packaged binary, and the configuration agrees with the unit on where
    // the store and bpffs are (StateDirectory=edgedns is /var/lib/edgedns).
    let unit =
        fs::read_to_string(root.join("lib/systemd/system/edgedns.service")).expect("read the unit");
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("the unit has ExecStart");
    assert!(exec.starts_with("/usr/bin/edgedns serve "), "{exec}");
    assert!(
        unit.lines().any(|l| l == "StateDirectory=edgedns"),
        "{unit}"
    );
    assert!(
        unit.lines().any(|l| l == "RequiresMountsFor=/sys/fs/bpf"),
        "{unit}"
    );
    let toml = fs::read_to_string(&config).expect("read the config");
    assert!(
        toml.lines()
            .any(|l| l == r#"data-dir = "/var/lib/edgedns""#),
        "{toml}"
    );
    assert!(
        toml.lines().any(|l| l == r#"bpffs = "/sys/fs/bpf""#),
        "{toml}"
    );
    verify_unit(&unit, &packaged, tmp.path());

    // The unpacked binary with the unpacked configuration serves: no XDP (the fast path has its
    // own tests) and a store in the test's directory; the addresses are the configuration's own,
    // free in a fresh namespace. Daemon::start waits for /healthz to answer 200.
    let ns = NetNs::new("dist");
    let daemon = Daemon::start(
        &packaged,
        &ns,
        &[
            OsStr::new("--config"),
            config.as_os_str(),
            OsStr::new("--xdp-mode"),
            OsStr::new("off"),
        ],
        &tmp.path().join("data"),
    );
    assert!(
        toml.lines()
            .any(|l| l == format!("dns-listen = \"127.0.0.1:{DNS_PORT}\"")),
        "{toml}"
    );
    let a = dig(&ns, "127.0.0.1", DNS_PORT, DEMO_NAME, "A");
    assert_eq!(a.status, "NOERROR", "{}", a.raw);
    assert_eq!(a.rdata("A"), [DEMO_A], "{}", a.raw);
    assert_eq!(daemon.http("GET", "/healthz", None).0, 200);
}

/// Runs postinst and postrm as dpkg would on a first install and a purge, with
/// `deb-systemd-helper` and `systemctl` replaced by scripts that log their arguments (dpkg -i
/// would change this host's systemd): the first install enables the unit and starts nothing,
/// the purge forgets it.
fn scripts_manage_the_unit(control: &Path, dir: &Path) {
    let bin = dir.join("stub-bin");
    let log = dir.join("stub.log");
    fs::create_dir_all(&bin).expect("create the stub dir");
    for tool in ["deb-systemd-helper", "systemctl"] {
        let stub = bin.join(tool);
        fs::write(
            &stub,
            format!("#!/bin/sh\necho \"{tool} $*\" >> '{}'\n", log.display()),
        )
        .expect("write a stub");
        fs::set_permissions(&stub, fs::Permissions::from_mode(0o755)).expect("chmod a stub");
    }
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin.display());
    let calls = |script: &str, args: &[&str]| -> Vec<String> {
        let _ = fs::remove_file(&log);
        run_ok(
            Command::new("sh")
                .arg(control.join(script))
                .args(args)
                .env("PATH", &path),
        );
        fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    };

    let install = calls("postinst", &["configure", ""]);
    assert!(
        install
            .iter()
            .any(|c| c == "deb-systemd-helper enable edgedns.service"),
        "{install:?}"
    );
    assert!(
        !install.iter().any(|c| c.contains("start")),
        "a first install starts the service: {install:?}"
    );
    let purge = calls("postrm", &["purge"]);
    assert!(
        purge
            .iter()
            .any(|c| c == "deb-systemd-helper purge edgedns.service"),
        "{purge:?}"
    );
}

/// `systemd-analyze verify` on the unpacked unit, when systemd-analyze is installed. verify wants
/// ExecStart's binary to exist, and /usr/bin/edgedns is not installed here: a copy of the unit
/// points at the unpacked one instead.
fn verify_unit(unit: &str, packaged: &Path, dir: &Path) {
    let analyze = ["/usr/bin/systemd-analyze", "/bin/systemd-analyze"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(analyze) = analyze else {
        eprintln!("systemd-analyze is not installed: skipping `systemd-analyze verify`");
        return;
    };
    let copy = dir.join("edgedns.service");
    let unit = unit.replace(
        "ExecStart=/usr/bin/edgedns ",
        &format!("ExecStart={} ", packaged.display()),
    );
    fs::write(&copy, unit).expect("write the unit copy");
    let out = tests::run_timeout(
        Command::new(analyze)
            .args(["verify", "--man=no"])
            .arg(&copy),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let text = format!("{}{}", out.stdout, out.stderr);
    // Warnings (an unknown key, a bad value) exit 0 but name the unit: none may.
    let about_unit: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("edgedns.service"))
        .collect();
    assert!(
        out.success() && about_unit.is_empty(),
        "systemd-analyze verify: {:?}\n{text}",
        out.status
    );
}
