//! `cargo xtask`: the project's build, run and test entry points (see README.md).
//!
//! Every subcommand first bootstraps the machine ([`bootstrap`]): the nightly toolchain with
//! `rust-src` (the eBPF crate is built with `-Z build-std=core`), a pinned bpf-linker cached under
//! `~/.cache/edgedns`, and the Debian packages the subcommand uses.

mod bench;
mod bootstrap;
mod build;
mod dist;
mod exec;
mod run;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "edgedns build, run and test tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing (nightly + rust-src, bpf-linker, Debian packages) and say what is there.
    Bootstrap(bootstrap::Options),
    /// Build the daemon (`edgedns`, with the XDP program inside) and print its path.
    Build(build::Options),
    /// Build the daemon and run `edgedns serve [ARGS]` as root.
    Run(run::Options),
    /// Unit tests, then the integration tests (root, network namespaces) against the built daemon.
    Test(test::Options),
    /// Build the release daemon and a Debian package of it: target/dist/edgedns_<version>_<arch>.deb.
    Dist(dist::Options),
    /// Benchmarks side by side with Knot and NSD; writes BENCHMARKS.md.
    Bench(bench::Options),
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Bootstrap(opts) => bootstrap::cmd(opts),
        Command::Build(opts) => build::cmd(opts),
        Command::Run(opts) => run::cmd(opts),
        Command::Test(opts) => test::cmd(opts),
        Command::Dist(opts) => dist::cmd(opts),
        Command::Bench(opts) => bench::cmd(opts),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // The cause chain, without the backtrace anyhow adds under RUST_BACKTRACE=1.
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
