//! Zone files (the RFC 1035 §5 master-file format) and the presentation format of record data,
//! which the API and the CLI take too.
//!
//! - `lex`: text into entries and tokens; the escapes.
//! - [`presentation`]: names, TTLs and record data as text, both ways; the API's record text.
//! - [`parse()`]: a master file into a [`ZoneFile`]: the zone's SOA settings and every RRset,
//!   checked by the zone model before anything is applied, with errors that name the file and
//!   line (`zone.db:12: ...`); [`StreamParser`] the same for text that arrives in pieces (an
//!   upload), parsed as it comes.
//! - [`export`]: a zone as a master file that [`parse()`] reads back as the same data.
//!
//! Applying a parsed file to the served zones is the engine's ([`crate::engine::Engine::import_zone`]):
//! nothing here knows the engine.
//!
//! Supported: `$ORIGIN`, `$TTL` (RFC 2308 §4), relative names, `@`, an omitted owner (a line that
//! starts with a blank repeats the previous owner), parentheses across lines, `;` comments, quoted
//! strings with `\X` and `\DDD` escapes, TTLs with BIND-style units (`1h30m`), class IN, the
//! record types the zone model stores ([`crate::zone::SUPPORTED_TYPES`]) and SOA. Not supported:
//! `$INCLUDE` (a file that names other files is a path-traversal hazard once it can be uploaded
//! over the API) and `$GENERATE`.

mod lex;
mod parse;
pub mod presentation;
mod print;

pub use parse::{parse, parse_with, StreamParser, ZoneFile, ZoneFileError};
pub use print::export;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
