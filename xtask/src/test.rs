//! `cargo xtask test [-- FILTER...]`: the unit tests of the userspace crates, then the integration
//! tests (crate `tests`) as root against the freshly built daemon, one at a time.

use std::{ffi::OsString, process::Command};

use anyhow::{Context as _, Result};

use crate::{
    bootstrap::{bootstrap, Task},
    build::build_daemon,
    exec::{cargo, output, run},
};

#[derive(clap::Args)]
pub struct Options {
    /// Run only the integration tests.
    #[arg(long)]
    integration_only: bool,
    /// Arguments for the integration test binaries, e.g. `-- fast_path --nocapture`.
    #[arg(last = true)]
    args: Vec<OsString>,
}

pub fn cmd(opts: Options) -> Result<()> {
    let ready = bootstrap(Task::Test)?;

    if !opts.integration_only {
        // dns-ebpf is no_std/no_main for bpfel-unknown-none: it has no host tests.
        run(cargo()
            .args([
                "test",
                "--workspace",
                "--exclude",
                "dns-ebpf",
                "--exclude",
                "tests",
            ])
            .env("PATH", &ready.path))?;
    }

    let bin = build_daemon(&ready)?;
    let mut cmd = cargo();
    // `--tests`: the harness's unit tests and the integration tests, not the (empty) doc tests,
    // so that the run closes on the integration tests' result line.
    cmd.args([
        "test",
        "--package",
        "tests",
        "--tests",
        "--",
        "--test-threads=1",
    ])
    .args(&opts.args)
    .env("PATH", &ready.path)
    .env("EDGEDNS_BIN", &bin);
    if !ready.root {
        // Build as the user, run the test binaries as root (as aya's xtask does).
        let var = format!(
            "CARGO_TARGET_{}_RUNNER",
            host_triple()?.to_uppercase().replace('-', "_")
        );
        cmd.env(var, "sudo -E");
    }
    run(&mut cmd)
}

/// The host target triple (`rustc -vV`'s `host:` line).
fn host_triple() -> Result<String> {
    let v = output(Command::new("rustc").arg("-vV"))?;
    v.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(str::to_owned)
        .context("`rustc -vV` printed no host line")
}
