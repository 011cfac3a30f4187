//! The authoritative data model and the one decision procedure, [`ZoneSet::resolve`].
//!
//! Both the fallback server and the fast-path compiler ask [`ZoneSet::resolve`] what the answer to
//! a question is, so the two can only disagree through a serialisation bug. Everything else here
//! keeps the data in a shape that makes `resolve` simple and the compiler's job incremental:
//!
//! - Names are stored lowercased and fully qualified, in ordered maps keyed by [`CanonName`]:
//!   bytes whose order is the canonical name order (RFC 4034 §6.1). In that order a name's descendants
//!   directly follow it, so "does this name have descendants" (is it an empty non-terminal?) is one
//!   range lookup, and so is "which key is the closest ancestor of this name".
//! - Every change goes through [`ZoneSet::apply`], validates and changes nothing on error, bumps
//!   the SOA serial, and returns a [`ChangeSet`]: what the store writes and the names whose
//!   answers may have changed, which is what the compiler recompiles.
//! - The maps are persistent (`imbl`), so a copy of the whole set is cheap: the write path
//!   changes a copy while readers answer from the version they hold ([`SharedZones`]).
//!
//! What is deliberately not here: DNSSEC, DNAME (RFC 6672), additional-section processing beyond
//! referral glue (RFC 1034 allows leaving it out; it keeps [`ChangeSet`] exact).

use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::rr::Name;
use imbl::OrdMap;

mod change;
mod error;
mod model;
mod name;
mod resolve;
#[cfg(test)]
mod tests;
mod validate;

pub use change::{import_serial, serial_newer, Change, ChangeSet, Edit, SoaChange};
pub use error::{TtlField, ZoneError};
pub(crate) use model::read_rdata;
pub use model::{ExistingName, LoadedOwner, RrSet, SoaParams, StoredSet, Zone, ZoneSpec};
pub use name::normalize;
pub use resolve::{Resolution, ResolutionKind};
pub use validate::{MAX_TTL, SUPPORTED_TYPES};

use name::CanonName;

/// Most CNAME records `resolve` follows for one question (loops stop earlier).
pub const MAX_CNAME_CHAIN: usize = 8;
/// Default TTL of the SOA record itself.
pub const DEFAULT_SOA_TTL: u32 = 3600;
/// Default SOA MINIMUM, which is the negative-caching TTL (RFC 2308 §4).
pub const DEFAULT_NEGATIVE_TTL: u32 = 30;
/// Default TTL of the apex NS set given at zone creation.
pub const DEFAULT_NS_TTL: u32 = 3600;

/// The zones as the daemon shares them: readers (the fallback, the API) take the current version
/// and answer from it for as long as they like; the one writer publishes a new version whole. A
/// write never waits for a reader nor a reader for a write, and a reader never sees half of a
/// change.
#[derive(Clone, Debug, Default)]
pub struct SharedZones(Arc<ArcSwap<ZoneSet>>);

impl SharedZones {
    pub fn new(zones: ZoneSet) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(zones)))
    }

    /// The current version. Later writes don't change it.
    pub fn load(&self) -> Arc<ZoneSet> {
        self.0.load_full()
    }

    /// Makes `zones` the current version. Only the write path calls this, after the change is
    /// stored.
    pub(crate) fn publish(&self, zones: Arc<ZoneSet>) {
        self.0.store(zones);
    }
}

/// The zones served, keyed by apex.
#[derive(Clone, Debug, Default)]
pub struct ZoneSet {
    zones: OrdMap<CanonName, Zone>,
}

impl ZoneSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// The zone whose apex is `apex` (any case).
    pub fn zone(&self, apex: &Name) -> Option<&Zone> {
        self.zones.get(&CanonName::new(apex))
    }

    /// Every zone, in canonical order of the apex.
    pub fn zones(&self) -> impl Iterator<Item = &Zone> {
        self.zones.values()
    }

    pub fn len(&self) -> usize {
        self.zones.len()
    }

    pub fn is_empty(&self) -> bool {
        self.zones.is_empty()
    }

    /// The zone `name` belongs to: the one with the longest apex that is a suffix of `name`.
    pub fn find_zone(&self, name: &Name) -> Option<&Zone> {
        if self.zones.is_empty() {
            return None;
        }
        self.find_zone_of(&CanonName::new(name))
    }

    /// [`ZoneSet::find_zone`] for a name in key form.
    fn find_zone_of(&self, name: &CanonName) -> Option<&Zone> {
        name.closest_key(|n| self.zones.range::<_, CanonName>(..=n).next_back())
            .map(|(_, zone)| zone)
    }
}
