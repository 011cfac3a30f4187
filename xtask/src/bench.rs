//! `cargo xtask bench [--quick] [--only SECTION,...]`: the benchmarks, side by side with Knot and NSD.
//!
//! Installs what the comparison needs (Knot, its utilities with kxdpgun, NSD, dnsperf, bpftool)
//! when missing, builds the daemon and the measurement binary (`bench/`, crate `edgedns-bench`)
//! in release mode, and runs the measurements as root. They set up and remove their own network
//! namespaces and veth pair; see BENCHMARKS.md for the method and the figures. A full run writes
//! BENCHMARKS.md; `--quick` and `--only` write `target/edgedns-bench/BENCHMARKS.md` instead, so
//! a partial run never replaces the committed figures. Not part of `cargo xtask test` or CI.

use anyhow::{ensure, Context as _, Result};

use crate::{
    bootstrap::{bootstrap, Task},
    exec::{as_root, cargo, cmdline, run, target_dir, workspace_root},
};

/// Programs the benchmark runs beyond what `cargo xtask test` needs, with their Debian packages.
const PROGRAMS: &[(&str, &str)] = &[
    ("knotd", "knot"),
    ("knotc", "knot"),
    ("kxdpgun", "knot-dnsutils"),
    ("nsd", "nsd"),
    ("dnsperf", "dnsperf"),
    ("bpftool", "bpftool"),
    ("taskset", "util-linux"),
];

const SECTIONS: [&str; 11] = [
    "kernel", "wire", "cpu", "update", "memory", "writes", "fuzz", "fallback", "fleet", "rrl",
    "flood",
];

#[derive(clap::Args)]
pub struct Options {
    /// Fewer and shorter runs, 100k names instead of 1M for the memory figures (minutes, not a
    /// quarter of an hour); the report goes to target/edgedns-bench/.
    #[arg(long)]
    quick: bool,
    /// Only these sections (comma-separated): kernel, wire, cpu, update, memory, writes, fuzz,
    /// fallback, fleet, rrl, flood.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The fuzz section's seed, to replay a run (each run prints and records its own).
    #[arg(long)]
    seed: Option<u64>,
    /// An earlier edgedns binary whose fallback the fallback section measures too.
    #[arg(long)]
    fallback_baseline: Option<std::path::PathBuf>,
}

pub fn cmd(opts: Options) -> Result<()> {
    for s in &opts.only {
        ensure!(
            SECTIONS.contains(&s.as_str()),
            "unknown section {s:?}: one of {}",
            SECTIONS.join(", ")
        );
    }
    let ready = bootstrap(Task::Test)?;
    ensure_bench_programs(ready.root)?;

    // Release: the fallback server and the start-up time are measured, and a debug daemon would
    // misrepresent both (the XDP program itself is always built --release).
    run(cargo()
        .args([
            "build",
            "--release",
            "--package",
            "dns-user",
            "--bin",
            "edgedns",
            "--package",
            "edgedns-bench",
            "--bin",
            "edgedns-bench",
        ])
        .env("PATH", &ready.path))?;
    let release = target_dir()?.join("release");
    let edgedns = release.join("edgedns");
    let bench = release.join("edgedns-bench");
    ensure!(edgedns.is_file(), "cargo built no {}", edgedns.display());
    ensure!(bench.is_file(), "cargo built no {}", bench.display());

    let out_dir = target_dir()?.join("edgedns-bench");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let partial = opts.quick || !opts.only.is_empty();
    let report = if partial {
        out_dir.join("BENCHMARKS.md")
    } else {
        workspace_root().join("BENCHMARKS.md")
    };
    let mut cmd = as_root(&bench, ready.root)?;
    cmd.arg("--edgedns")
        .arg(&edgedns)
        .arg("--json")
        .arg(out_dir.join("results.json"))
        .arg("--report")
        .arg(&report)
        .env("PATH", &ready.path);
    if opts.quick {
        cmd.arg("--quick");
    }
    if !opts.only.is_empty() {
        cmd.arg("--only").arg(opts.only.join(","));
    }
    if let Some(seed) = opts.seed {
        cmd.arg("--seed").arg(seed.to_string());
    }
    if let Some(bin) = &opts.fallback_baseline {
        cmd.arg("--fallback-baseline").arg(bin);
    }
    eprintln!("xtask: {}", cmdline(&cmd));
    run(&mut cmd)?;
    eprintln!("xtask: report: {}", report.display());
    Ok(())
}

/// Installs the Debian packages of the missing programs (`apt-get update` first), without
/// letting their daemons start.
fn ensure_bench_programs(root: bool) -> Result<()> {
    crate::bootstrap::ensure_programs(PROGRAMS, root, true)
}
