//! Brings the machine to the point where the eBPF crate builds and the tests run, installing only
//! what is missing, so that a second run takes a moment:
//!
//! - the `nightly` toolchain with `rust-src` (aya-build runs `rustup run nightly cargo build
//!   -Z build-std=core --target bpfel-unknown-none`);
//! - bpf-linker [`BPF_LINKER_VERSION`] in `$XDG_CACHE_HOME` (or `~/.cache`)
//!   `/edgedns/tools/bpf-linker-<version>`, built by `cargo install`; its default features load
//!   the running rustc's own libLLVM, so it always matches nightly's LLVM. `dns-user/build.rs`
//!   derives the same path and puts it on PATH for the eBPF build;
//! - the Debian packages whose programs the task runs (dig, kdig, ip, curl, ethtool).
//!
//! What the installers print goes to stderr: stdout carries only `--print-path`'s answer.

use std::{
    env,
    ffi::OsString,
    io,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context as _, Result};
use clap::ValueEnum;

use crate::exec::{as_root, cargo, is_root, output, run, which};

/// The pinned bpf-linker. `dns-user/build.rs` has the same constant: change both together.
pub const BPF_LINKER_VERSION: &str = "0.10.3";
/// The toolchain that builds the eBPF crate (aya-build's default).
pub const NIGHTLY: &str = "nightly";

/// What the machine is being prepared for: each task needs a different set of programs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Task {
    Build,
    Run,
    Test,
}

impl Task {
    /// The programs the task runs (or, given as an absolute path, files it needs), each with
    /// the Debian package that has it.
    fn programs(self) -> &'static [(&'static str, &'static str)] {
        const DIG: (&str, &str) = ("dig", "bind9-dnsutils");
        const CURL: (&str, &str) = ("curl", "curl");
        const IP: (&str, &str) = ("ip", "iproute2");
        // etcd-client compiles etcd's protobuf definitions at build time; they import
        // protobuf's own well-known types, which protoc's package only recommends.
        const PROTOC: (&str, &str) = ("protoc", "protobuf-compiler");
        const PROTO_TYPES: (&str, &str) = (
            "/usr/include/google/protobuf/descriptor.proto",
            "libprotobuf-dev",
        );
        match self {
            Task::Build => &[PROTOC, PROTO_TYPES],
            // The try-it lines `cargo xtask run` prints use dig and curl.
            Task::Run => &[PROTOC, PROTO_TYPES, DIG, CURL, IP],
            Task::Test => &[
                PROTOC,
                PROTO_TYPES,
                IP,
                DIG,
                ("kdig", "knot-dnsutils"),
                // The secondary that follows edgedns by NOTIFY and IXFR.
                ("knotd", "knot"),
                CURL,
                ("ethtool", "ethtool"),
                // The fleet tests run a real etcd cluster, over TLS too (certificates made with
                // openssl).
                ("etcd", "etcd-server"),
                ("openssl", "openssl"),
            ],
        }
    }
}

#[derive(clap::Args)]
pub struct Options {
    /// Prepare for this task (decides which Debian packages are needed).
    #[arg(long = "for", value_enum, default_value = "test")]
    task: Task,
    /// Print the PATH to use (bpf-linker's directory first) on stdout, for `export PATH=...`.
    #[arg(long)]
    print_path: bool,
}

/// A bootstrapped machine.
pub struct Ready {
    /// PATH with bpf-linker's bin directory first: give it to every cargo that builds dns-user.
    pub path: OsString,
    /// Whether we are root (else root-only steps go through `sudo -E`).
    pub root: bool,
}

pub fn cmd(opts: Options) -> Result<()> {
    let ready = bootstrap(opts.task)?;
    if opts.print_path {
        println!("{}", ready.path.to_string_lossy());
    }
    Ok(())
}

/// Installs what `task` needs and is missing; fails with what is missing and how to get it.
pub fn bootstrap(task: Task) -> Result<Ready> {
    let root = is_root()?;
    ensure_nightly()?;
    let bin = ensure_bpf_linker()?;
    ensure_programs(task.programs(), root, false)?;
    if matches!(task, Task::Run | Task::Test) && !Path::new("/sys/kernel/btf/vmlinux").exists() {
        eprintln!(
            "xtask: warning: /sys/kernel/btf/vmlinux is missing: the kernel has no BTF, and \
             loading the XDP program will likely fail (edgedns needs Linux >= 5.18 with BTF)"
        );
    }

    let old = env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = env::split_paths(&old).collect();
    if dirs.first() != Some(&bin) {
        dirs.insert(0, bin);
    }
    let path = env::join_paths(dirs).context("PATH has a directory with ':' in its name")?;
    Ok(Ready { path, root })
}

fn ensure_nightly() -> Result<()> {
    if which("rustup").is_none() {
        bail!(
            "rustup is missing: edgedns builds its XDP program with a nightly toolchain managed \
             by rustup; install rustup from https://rustup.rs, then run this again"
        );
    }
    let how = format!(
        "the XDP program is built with `-Z build-std=core`, which needs the {NIGHTLY} toolchain \
         with its rust-src component; get both with `rustup toolchain install {NIGHTLY} \
         --profile minimal --component rust-src` (this needs access to the Rust release server)"
    );
    let installed = Command::new("rustup")
        .args(["component", "list", "--toolchain", NIGHTLY, "--installed"])
        .output();
    match installed {
        Ok(out) if out.status.success() => {
            let listed = String::from_utf8_lossy(&out.stdout);
            if !listed.lines().any(|l| l.trim().starts_with("rust-src")) {
                eprintln!("xtask: adding rust-src to the {NIGHTLY} toolchain");
                run(Command::new("rustup").stdout(io::stderr()).args([
                    "component",
                    "add",
                    "rust-src",
                    "--toolchain",
                    NIGHTLY,
                ]))
                .with_context(|| how.clone())?;
            }
        }
        _ => {
            eprintln!("xtask: installing the {NIGHTLY} toolchain with rust-src");
            run(Command::new("rustup").stdout(io::stderr()).args([
                "toolchain",
                "install",
                NIGHTLY,
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]))
            .with_context(|| how.clone())?;
        }
    }
    Ok(())
}

/// `$XDG_CACHE_HOME/edgedns/tools` or `~/.cache/edgedns/tools`.
pub fn tools_dir() -> Result<PathBuf> {
    let cache = env::var_os("XDG_CACHE_HOME")
        .filter(|d| Path::new(d).is_absolute())
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .context("neither XDG_CACHE_HOME nor HOME is set: no place to cache bpf-linker")?;
    Ok(cache.join("edgedns").join("tools"))
}

/// Returns the bin directory holding the pinned bpf-linker, installing it there if needed.
fn ensure_bpf_linker() -> Result<PathBuf> {
    let root = tools_dir()?.join(format!("bpf-linker-{BPF_LINKER_VERSION}"));
    let bin = root.join("bin");
    let exe = bin.join("bpf-linker");
    let want = format!("bpf-linker {BPF_LINKER_VERSION}");
    let version = |exe: &Path| output(Command::new(exe).arg("--version"));
    if version(&exe).is_ok_and(|v| v.trim() == want) {
        return Ok(bin);
    }
    eprintln!(
        "xtask: installing {want} into {} (builds from crates.io once, a few minutes)",
        root.display()
    );
    run(cargo()
        .stdout(io::stderr())
        .args(["install", &format!("bpf-linker@{BPF_LINKER_VERSION}")])
        .args(["--locked", "--force", "--root"])
        .arg(&root))
    .context(
        "bpf-linker links the XDP program; it is built from crates.io and needs no system LLVM \
         (it loads the nightly rustc's own libLLVM)",
    )?;
    let got = version(&exe)?;
    if got.trim() != want {
        bail!(
            "{} reports `{}`, wanted `{want}`",
            exe.display(),
            got.trim()
        );
    }
    Ok(bin)
}

/// Installs the Debian packages of the programs that are not on PATH. With `no_services`, the
/// packages' daemons are kept from starting on install (a temporary policy-rc.d that says no,
/// unless the machine has one): the benchmark starts Knot and NSD itself, in a namespace.
/// A program on PATH, or a file given by its absolute path.
fn present(program: &str) -> bool {
    if program.starts_with('/') {
        Path::new(program).exists()
    } else {
        which(program).is_some()
    }
}

pub(crate) fn ensure_programs(
    programs: &[(&str, &str)],
    root: bool,
    no_services: bool,
) -> Result<()> {
    let mut missing: Vec<&str> = programs
        .iter()
        .filter(|(program, _)| !present(program))
        .map(|&(_, package)| package)
        .collect();
    missing.sort_unstable();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing.join(" ");
    if which("apt-get").is_none() {
        bail!("missing programs: install the packages that provide them (Debian names: {list})");
    }
    eprintln!("xtask: installing Debian packages: {list}");
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let add_policy = no_services && root && !policy.exists();
    if add_policy {
        std::fs::write(
            policy,
            "#!/bin/sh\n# cargo xtask: no service starts\nexit 101\n",
        )?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))?;
    }
    let apt = |args: &[&str]| -> Result<()> {
        let mut cmd = as_root("apt-get", root)?;
        // Another apt run (unattended upgrades on a fresh machine) may hold the dpkg lock: wait.
        cmd.args(["-o", "DPkg::Lock::Timeout=600"])
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive");
        run(cmd.stdout(io::stderr()))
    };
    let r = apt(&["update", "-q"]).and_then(|()| {
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(&missing);
        apt(&args)
    });
    if add_policy {
        let _ = std::fs::remove_file(policy);
    }
    r.with_context(|| format!("could not install Debian packages {list}: install them by hand"))?;
    for (program, package) in programs {
        if !present(program) {
            bail!("`{program}` is still missing after installing {package}");
        }
    }
    Ok(())
}
