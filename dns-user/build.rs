//! Builds the XDP program (`dns-ebpf`) for bpfel-unknown-none with aya-build; `src/loader.rs`
//! embeds the object from OUT_DIR. `AYA_BUILD_SKIP=1` skips it (the loader then fails at run time).

use std::{env, path::PathBuf};

use anyhow::{anyhow, Context as _};

/// Must match `xtask`'s pinned bpf-linker: both derive the same cache path.
const BPF_LINKER_VERSION: &str = "0.10.3";

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name == "dns-ebpf")
        .ok_or_else(|| anyhow!("dns-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("dns-ebpf manifest has no parent"))?
        .as_str()
        .to_owned();

    // `cargo xtask` installs bpf-linker under the cache dir; put it on PATH for the child cargo so
    // that a plain `cargo build` works too once xtask has bootstrapped the machine.
    if let Some(bin) = cached_bpf_linker_bin() {
        if bin.join("bpf-linker").exists() {
            let path = env::var_os("PATH").unwrap_or_default();
            let mut paths = vec![bin];
            paths.extend(env::split_paths(&path));
            let joined = env::join_paths(paths).context("join PATH")?;
            // SAFETY (edition 2021: safe fn): build scripts are single-threaded here.
            env::set_var("PATH", joined);
        }
    }

    // aya-build relays the child cargo's stderr as build warnings: keep it to real diagnostics.
    env::set_var("CARGO_TERM_QUIET", "true");

    aya_build::build_ebpf(
        [aya_build::Package {
            name: "dns-ebpf",
            root_dir: &root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

fn cached_bpf_linker_bin() -> Option<PathBuf> {
    let cache = env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(
        cache
            .join("edgedns")
            .join("tools")
            .join(format!("bpf-linker-{BPF_LINKER_VERSION}"))
            .join("bin"),
    )
}
