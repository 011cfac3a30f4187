//! `cargo xtask build`: the daemon, with the XDP program built into it by `dns-user/build.rs`.
//!
//! xtask builds the daemon with the dev profile everywhere (build, run, test): the XDP program is
//! always built `--release` by aya-build whatever the daemon's profile, and a dev daemon shares
//! its dependencies with the unit tests, which matters on a 2-core machine.

use std::path::PathBuf;

use anyhow::{ensure, Result};

use crate::{
    bootstrap::{bootstrap, Ready, Task},
    exec::{cargo, run, target_dir},
};

/// The cargo profile directory the daemon is built into.
const PROFILE_DIR: &str = "debug";

#[derive(clap::Args)]
pub struct Options {}

pub fn cmd(Options {}: Options) -> Result<()> {
    let ready = bootstrap(Task::Build)?;
    let bin = build_daemon(&ready)?;
    println!("{}", bin.display());
    Ok(())
}

/// Builds `edgedns` and returns its path.
pub fn build_daemon(ready: &Ready) -> Result<PathBuf> {
    run(cargo()
        .args(["build", "--package", "dns-user", "--bin", "edgedns"])
        .env("PATH", &ready.path))?;
    let bin = target_dir()?.join(PROFILE_DIR).join("edgedns");
    ensure!(bin.is_file(), "cargo built no {}", bin.display());
    eprintln!("xtask: daemon: {}", bin.display());
    Ok(bin)
}
