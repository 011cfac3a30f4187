//! `cargo xtask bench`: a placeholder until the benchmark exists.

use anyhow::Result;

#[derive(clap::Args)]
pub struct Options {}

pub fn cmd(Options {}: Options) -> Result<()> {
    eprintln!("cargo xtask bench: not implemented yet: there is no benchmark in the tree.");
    std::process::exit(2)
}
