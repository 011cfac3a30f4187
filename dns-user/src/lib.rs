//! edgedns daemon library: the pieces `main.rs` wires together.
//!
//! - [`zone`]: the authoritative data model and the one place that decides what an answer is
//!   ([`zone::ZoneSet::resolve`]); the fallback server and the fast-path compiler both use it, so the
//!   two can't disagree.
//! - [`compile`]: turns `resolve` results into the XDP program's map values.
//! - [`maps`]: the sole writer of the BPF maps; [`loader`]: loads and attaches the program.
//! - [`fallback`]: UDP/TCP server for everything the XDP program passes up.
//! - [`engine`]: the one writer: an [`zone::Edit`] goes through the zone model, the [`store`], the
//!   served snapshot and the maps, in that order; [`api`]: the HTTP update API in front of it.
//! - [`journal`]: the IXFR journal the write path keeps; [`notify`]: NOTIFY to secondaries and
//!   the flags for them.
//! - [`zonefile`]: master-file parsing and printing, and the record text format the API takes.
//! - [`webhook`]: the external-dns webhook provider protocol, onto the same write path.
//! - [`fleet`]: with `--etcd`, the daemon is an edge of a fleet whose source of truth is etcd:
//!   writes go there, and every edge applies its revisions through the engine.
//! - [`cli`]: the operator commands, which talk to a running server's API.
//! - [`daemon`]: the daemon assembled from a config and bound sockets (`edgedns serve`);
//!   [`config`]: its settings from flags, environment and a TOML file; [`sd_notify`]: systemd's
//!   readiness protocol.
pub mod api;
pub mod cli;
pub mod compile;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod fallback;
pub mod fleet;
pub mod journal;
pub mod limit;
pub mod loader;
pub mod maps;
pub mod notify;
pub mod progress;
pub mod sd_notify;
pub mod store;
pub mod tsig;
pub mod webhook;
pub mod zone;
pub mod zonefile;

/// `clock`'s time now in nanoseconds. CLOCK_MONOTONIC is the clock the XDP program reads
/// (`bpf_ktime_get_ns`), and the one `Instant` runs on.
pub fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clocks asked for are always supported.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// Fills `buf` from the kernel's random source (getrandom(2), as /dev/urandom).
pub fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    // SAFETY: writes at most `buf.len()` bytes into `buf`.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if usize::try_from(n).ok() != Some(buf.len()) {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `e` and its causes, `: `-separated, for a reason shown to an operator (a log line, a 500's
/// body), who has no other place to see the causes.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
