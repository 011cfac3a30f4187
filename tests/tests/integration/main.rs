//! Integration tests: the real `edgedns` with its XDP program on a veth pair between two network
//! namespaces, queried with dig and kdig. They need root and the daemon: `cargo xtask test`
//! builds it and runs them one at a time (`-- FILTER` picks some).

mod clients;
mod defaults;
mod dist;
mod durability;
mod failed_start;
mod fallback;
mod fast_path;
mod fleet;
mod harness;
mod listen;
mod metrics;
mod progress;
mod reload;
mod rfc2136;
mod rrl;
mod secondary;
mod systemd_unit;
mod wire_diff;
mod xdp_test_run;
