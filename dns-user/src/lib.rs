//! edgedns daemon library: the pieces `main.rs` wires together.
//!
//! - [`zone`]: the authoritative data model and the one place that decides what an answer is
//!   ([`zone::ZoneSet::resolve`]); the fallback server and the fast-path compiler both use it, so the
//!   two can't disagree.
//! - [`compile`]: turns `resolve` results into the XDP program's map values.
//! - [`maps`]: the sole writer of the BPF maps; [`loader`]: loads and attaches the program.
//! - [`fallback`]: UDP/TCP server for everything the XDP program passes up.
//! - [`store`], [`api`]: durable store and HTTP update API; [`engine`]: the write path through
//!   memory, disk and maps.
//! - [`zonefile`]: master-file import and export, and the record text format the API takes.
//! - [`webhook`]: the external-dns webhook provider protocol, onto the same write path.
//! - [`cli`]: the operator commands, which talk to a running server's API.
pub mod api;
pub mod cli;
pub mod compile;
pub mod engine;
pub mod fallback;
pub mod loader;
pub mod maps;
pub mod store;
pub mod webhook;
pub mod zone;
pub mod zonefile;
