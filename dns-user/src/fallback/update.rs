//! Dynamic updates (RFC 2136): a message's prerequisites checked and its updates turned into one
//! [`Edit::Batch`], both against the version of the zones the batch is applied to, under the
//! engine's writer lock ([`Engine::apply_with`]). The response leaves once the engine has
//! returned: the change is then on disk, served here and answered at XDP.
//!
//! The parts of RFC 2136 §3.4.2 left to the implementation follow BIND and Knot:
//! - an SOA in the update section is ignored: the serial is ours, bumped once per message that
//!   changes something, and the other SOA fields change through the API;
//! - the apex SOA and NS are never deleted, and the last apex NS record stays (§3.4.2.4);
//! - CNAME exclusivity (§3.4.2.2): a CNAME added where other data is, or other data added where
//!   a CNAME is, is ignored; a CNAME added over a CNAME replaces it;
//! - a record added to an RRset gives the whole RRset its TTL (RFC 2181 §5.2: one TTL per
//!   RRset); adding a record that is there already only changes the TTL.
//!
//! Types the zones don't store (see [`crate::zone::SUPPORTED_TYPES`]) make the whole update
//! REFUSED, as any change the zone model refuses.

use std::{
    collections::BTreeMap, fmt, future::Future, net::IpAddr, pin::Pin, str::FromStr, sync::Arc,
};

use hickory_proto::{
    op::ResponseCode,
    rr::{DNSClass, Name, RData, RecordType},
    serialize::binary::{BinDecodable, BinDecoder, Restrict},
};
use tracing::{debug, info, warn};

use super::{
    request::Request,
    response::{Draft, Reply},
    FallbackConfig, Transport,
};
use crate::{
    compile::MapWriter,
    engine::{Applied, Engine, EngineError, Persist},
    tsig::{self, ResponseTsig},
    zone::{normalize, Change, Edit, RrSet, Zone, ZoneSet},
};

/// What applies an update: the daemon's [`Engine`].
pub trait UpdateHandler: Send + Sync + 'static {
    /// Runs `build` on the zones with no other write in between and applies the edit it
    /// returns (see [`Engine::apply_with`]).
    fn apply_update(
        self: Arc<Self>,
        build: Build,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Applied>, UpdateError>> + Send>>;
}

/// Builds the edit of an update from the zones it will be applied to. In a fleet it may run
/// again, on a newer version, when another writer committed first.
pub type Build = Box<dyn FnMut(&ZoneSet) -> Result<Option<Edit>, UpdateError> + Send>;

impl<S: Persist, M: MapWriter> UpdateHandler for Engine<S, M> {
    fn apply_update(
        self: Arc<Self>,
        build: Build,
    ) -> Pin<Box<dyn Future<Output = Result<Option<Applied>, UpdateError>> + Send>> {
        Box::pin(async move { self.apply_with(build).await })
    }
}

/// Why an update was not applied.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("zone {zone} is not served here")]
    NotAuth { zone: String },
    #[error("prerequisite {index} not met")]
    Prerequisite { index: usize, rcode: ResponseCode },
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl UpdateError {
    fn rcode(&self) -> ResponseCode {
        match self {
            UpdateError::NotAuth { .. } => ResponseCode::NotAuth,
            UpdateError::Prerequisite { rcode, .. } => *rcode,
            // The zone model refused the change (an unsupported type, a bad TTL): nothing
            // changed, and the client shouldn't retry it as it is.
            UpdateError::Engine(EngineError::Invalid(_)) => ResponseCode::Refused,
            // The commit failed (nothing changed) or the maps did (the change is stored and the
            // fast path is off): a server failure either way, as the API's 500.
            UpdateError::Engine(_) => ResponseCode::ServFail,
        }
    }
}

/// An address or prefix that may send unsigned updates (`--update-allow`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(p) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(p) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Prefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|e| format!("{s:?} is not an address or prefix: {e}"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = match len {
            None => max,
            Some(l) => l
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { addr, len })
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// What applies the updates. Who may send them is [`super::FallbackConfig::update_allow`] (and
/// the TSIG keys).
#[derive(Clone)]
pub struct Updates {
    pub handler: Arc<dyn UpdateHandler>,
}

impl fmt::Debug for Updates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Updates").finish_non_exhaustive()
    }
}

/// A prerequisite (RFC 2136 §2.4).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Prereq {
    /// §2.4.4 "Name Is In Use".
    NameInUse(Name),
    /// §2.4.5 "Name Is Not In Use".
    NameNotInUse(Name),
    /// §2.4.1 "RRset Exists (Value Independent)".
    Exists(Name, RecordType),
    /// §2.4.3 "RRset Does Not Exist".
    Absent(Name, RecordType),
    /// §2.4.2 "RRset Exists (Value Dependent)": the whole RRset, as a set.
    Equals(Name, RecordType, Vec<RData>),
}

/// An update (RFC 2136 §2.5).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Op {
    /// §2.5.1 "Add To An RRset".
    Add(Name, u32, RData),
    /// §2.5.2 "Delete An RRset".
    DeleteRrset(Name, RecordType),
    /// §2.5.3 "Delete All RRsets From A Name".
    DeleteName(Name),
    /// §2.5.4 "Delete An RR From An RRset".
    DeleteRr(Name, RData),
}

/// An update message, checked as far as it can be without the zone's data (RFC 2136 §3.1,
/// §3.2.1-§3.2.4's form checks, §3.4.1's prescan).
#[derive(Clone, Debug)]
pub(super) struct Update {
    zone: Name,
    prereqs: Vec<Prereq>,
    ops: Vec<Op>,
}

/// Meta types (RFC 6895 §3.1: 128-255) and OPT/TSIG: never data.
fn is_meta(t: u16) -> bool {
    (128..=255).contains(&t) || t == u16::from(RecordType::OPT) || t == tsig::TSIG_TYPE
}

const ANY: u16 = 255;
const CLASS_NONE: u16 = 254;

/// Reads the zone section: it must name, in class IN, a zone we serve.
pub(super) fn zone_of(req: &Request, zones: &ZoneSet) -> Result<Name, ResponseCode> {
    // RFC 2136 §3.1.1: "The Zone Section is checked to see that there is exactly one RR
    // therein and that the RR's ZTYPE is SOA, else signal FORMERR to the requestor."
    let Some(q) = req.question.as_ref().filter(|_| req.qdcount == 1) else {
        return Err(ResponseCode::FormErr);
    };
    if q.query_type() != RecordType::SOA || q.query_class() != DNSClass::IN {
        return Err(ResponseCode::FormErr);
    }
    // "Next, the ZNAME and ZCLASS are checked to see if the zone so named is one of this
    // server's authority zones, else signal NOTAUTH to the requestor."
    if zones.zone(q.name()).is_none() {
        return Err(ResponseCode::NotAuth);
    }
    Ok(q.name().clone())
}

/// Reads the prerequisite and update sections of `buf` (zone section checked by [`zone_of`]).
pub(super) fn parse(buf: &[u8], zone: Name) -> Result<Update, ResponseCode> {
    let count = |at: usize| u16::from_be_bytes([buf[at], buf[at + 1]]);
    let (zocount, prcount, upcount) = (count(4), count(6), count(8));
    let mut d = BinDecoder::new(buf);
    let formerr = |why: &str| {
        debug!("update FORMERR: {why}");
        ResponseCode::FormErr
    };
    d.read_slice(12).map_err(|_| formerr("header"))?;
    for _ in 0..zocount {
        Name::read(&mut d).map_err(|_| formerr("zone name"))?;
        d.read_slice(4).map_err(|_| formerr("zone section"))?;
    }
    let mut update = Update {
        zone: normalize(&zone),
        prereqs: Vec::new(),
        ops: Vec::new(),
    };
    let mut equals: BTreeMap<(Name, RecordType), Vec<RData>> = BTreeMap::new();
    for _ in 0..prcount {
        let rr = read(&mut d).map_err(|e| formerr(&e))?;
        update.in_zone(&rr.name)?;
        // RFC 2136 §3.2.1: "TTL must be specified as zero (0)", else FORMERR.
        if rr.ttl != 0 {
            return Err(formerr("prerequisite with a TTL"));
        }
        let rtype = RecordType::from(rr.rtype);
        match rr.class {
            ANY | CLASS_NONE if rr.rdata.is_some() => {
                return Err(formerr("prerequisite of class ANY or NONE with RDATA"))
            }
            ANY if rr.rtype == ANY => update.prereqs.push(Prereq::NameInUse(rr.name)),
            ANY => update.prereqs.push(Prereq::Exists(rr.name, rtype)),
            CLASS_NONE if rr.rtype == ANY => update.prereqs.push(Prereq::NameNotInUse(rr.name)),
            CLASS_NONE => update.prereqs.push(Prereq::Absent(rr.name, rtype)),
            // §3.2.3: the RRs of one name and type together form the RRset to compare.
            1 if !is_meta(rr.rtype) => {
                let rdata = rr
                    .rdata
                    .ok_or_else(|| formerr("prerequisite without RDATA"))?;
                let set = equals.entry((rr.name, rtype)).or_default();
                if !set.contains(&rdata) {
                    set.push(rdata);
                }
            }
            _ => return Err(formerr("prerequisite of another class or a meta type")),
        }
    }
    update.prereqs.extend(
        equals
            .into_iter()
            .map(|((name, t), set)| Prereq::Equals(name, t, set)),
    );
    for _ in 0..upcount {
        let rr = read(&mut d).map_err(|e| formerr(&e))?;
        update.in_zone(&rr.name)?;
        // RFC 2136 §3.4.1.3, the prescan.
        match rr.class {
            1 => {
                if is_meta(rr.rtype) || rr.rtype == ANY {
                    return Err(formerr("adding a meta type"));
                }
                let rdata = rr
                    .rdata
                    .ok_or_else(|| formerr("adding a record without RDATA"))?;
                update.ops.push(Op::Add(rr.name, rr.ttl, rdata));
            }
            ANY => {
                if rr.ttl != 0 || rr.rdata.is_some() || (is_meta(rr.rtype) && rr.rtype != ANY) {
                    return Err(formerr("bad delete of an RRset or a name"));
                }
                update.ops.push(if rr.rtype == ANY {
                    Op::DeleteName(rr.name)
                } else {
                    Op::DeleteRrset(rr.name, RecordType::from(rr.rtype))
                });
            }
            CLASS_NONE => {
                if rr.ttl != 0 || is_meta(rr.rtype) || rr.rtype == ANY {
                    return Err(formerr("bad delete of a record"));
                }
                let rdata = rr
                    .rdata
                    .ok_or_else(|| formerr("deleting a record without RDATA"))?;
                update.ops.push(Op::DeleteRr(rr.name, rdata));
            }
            _ => return Err(formerr("update of another class")),
        }
    }
    Ok(update)
}

/// One record of the prerequisite or update section.
struct RawRecord {
    name: Name,
    rtype: u16,
    class: u16,
    ttl: u32,
    /// `None` when RDLENGTH is 0.
    rdata: Option<RData>,
}

fn read(d: &mut BinDecoder<'_>) -> Result<RawRecord, String> {
    let de = |e: hickory_proto::serialize::binary::DecodeError| e.to_string();
    let name = Name::read(d).map_err(|e| e.to_string())?;
    let rtype = d.read_u16().map_err(de)?.unverified();
    let class = d.read_u16().map_err(de)?.unverified();
    let ttl = d.read_u32().map_err(de)?.unverified();
    let len = d.read_u16().map_err(de)?.unverified();
    let rdata = if len == 0 {
        None
    } else {
        let start = d.index();
        // Decoded in place: names in RDATA may point back into the message.
        let rdata = RData::read(d, RecordType::from(rtype), Restrict::new(len))
            .map_err(|e| format!("RDATA of {name}: {e}"))?;
        if d.index() - start != usize::from(len) {
            return Err(format!("RDATA of {name} is not {len} bytes"));
        }
        Some(rdata)
    };
    Ok(RawRecord {
        name: normalize(&name),
        rtype,
        class,
        ttl,
        rdata,
    })
}

impl Update {
    /// RFC 2136 §3.2.5/§3.4.1.3: a name outside the zone is NOTZONE.
    fn in_zone(&self, name: &Name) -> Result<(), ResponseCode> {
        if self.zone.zone_of(name) {
            Ok(())
        } else {
            debug!(%name, zone = %self.zone, "update NOTZONE");
            Err(ResponseCode::NotZone)
        }
    }

    /// Checks the prerequisites against `zones` and turns the updates into one batch; `None`:
    /// the updates change nothing.
    pub(super) fn build(self, zones: &ZoneSet) -> Result<Option<Edit>, UpdateError> {
        let zone = zones.zone(&self.zone).ok_or_else(|| UpdateError::NotAuth {
            zone: self.zone.to_string(),
        })?;
        for (index, p) in self.prereqs.iter().enumerate() {
            if let Some(rcode) = check(zone, p) {
                return Err(UpdateError::Prerequisite { index, rcode });
            }
        }
        let mut work = Work {
            zone,
            sets: BTreeMap::new(),
        };
        for op in self.ops {
            work.apply(op);
        }
        let changes = work.changes();
        Ok((!changes.is_empty()).then_some(Edit::Batch(self.zone, changes)))
    }
}

/// The RRset of `rtype` at `name`, the SOA included.
fn current(zone: &Zone, name: &Name, rtype: RecordType) -> Option<RrSet> {
    if rtype == RecordType::SOA {
        return (name == zone.apex()).then(|| {
            let soa = zone.soa_record();
            RrSet {
                ttl: soa.ttl(),
                records: vec![soa.data().clone()],
            }
        });
    }
    zone.rrset(name, rtype)
}

/// The types with data at `name` (not the SOA).
fn types_at(zone: &Zone, name: &Name) -> Vec<RecordType> {
    zone.records_from(name)
        .take_while(|(owner, ..)| owner == name)
        .map(|(_, t, ..)| t)
        .collect()
}

/// `Some(rcode)`: the prerequisite fails with it (RFC 2136 §3.2.5).
fn check(zone: &Zone, p: &Prereq) -> Option<ResponseCode> {
    let in_use = |name: &Name| name == zone.apex() || !types_at(zone, name).is_empty();
    let fail = |ok: bool, rcode| (!ok).then_some(rcode);
    match p {
        Prereq::NameInUse(name) => fail(in_use(name), ResponseCode::NXDomain),
        Prereq::NameNotInUse(name) => fail(!in_use(name), ResponseCode::YXDomain),
        Prereq::Exists(name, t) => fail(current(zone, name, *t).is_some(), ResponseCode::NXRRSet),
        Prereq::Absent(name, t) => fail(current(zone, name, *t).is_none(), ResponseCode::YXRRSet),
        Prereq::Equals(name, t, want) => {
            let same = current(zone, name, *t).is_some_and(|have| {
                have.records.len() == want.len() && want.iter().all(|r| have.records.contains(r))
            });
            fail(same, ResponseCode::NXRRSet)
        }
    }
}

/// The updates applied in order over the zone, RRset by RRset: `sets` holds what an update
/// touched (`None`: deleted), the zone the rest.
struct Work<'a> {
    zone: &'a Zone,
    sets: BTreeMap<(Name, RecordType), Option<RrSet>>,
}

impl Work<'_> {
    fn get(&self, name: &Name, t: RecordType) -> Option<RrSet> {
        match self.sets.get(&(name.clone(), t)) {
            Some(set) => set.clone(),
            None => current(self.zone, name, t),
        }
    }

    fn types_at(&self, name: &Name) -> Vec<RecordType> {
        let mut types = types_at(self.zone, name);
        for ((n, t), set) in self.sets.range((name.clone(), RecordType::Unknown(0))..) {
            if n != name {
                break;
            }
            types.retain(|x| x != t);
            if set.is_some() {
                types.push(*t);
            }
        }
        types
    }

    fn put(&mut self, name: &Name, t: RecordType, set: Option<RrSet>) {
        self.sets.insert((name.clone(), t), set);
    }

    fn apply(&mut self, op: Op) {
        let apex = self.zone.apex().clone();
        match op {
            Op::Add(name, ttl, rdata) => {
                let t = rdata.record_type();
                if t == RecordType::SOA {
                    debug!(%name, "update: SOA ignored, the serial is ours");
                    return;
                }
                let others = self.types_at(&name);
                if t == RecordType::CNAME && others.iter().any(|x| *x != RecordType::CNAME) {
                    debug!(%name, "update: CNAME beside other data ignored");
                    return;
                }
                if t != RecordType::CNAME && others.contains(&RecordType::CNAME) {
                    debug!(%name, %t, "update: data beside a CNAME ignored");
                    return;
                }
                let mut set = match self.get(&name, t) {
                    // A CNAME replaces the CNAME: there is one per name.
                    Some(_) if t == RecordType::CNAME => RrSet {
                        ttl,
                        records: Vec::new(),
                    },
                    Some(set) => set,
                    None => RrSet {
                        ttl,
                        records: Vec::new(),
                    },
                };
                set.ttl = ttl;
                if !set.records.contains(&rdata) {
                    set.records.push(rdata);
                }
                self.put(&name, t, Some(set));
            }
            Op::DeleteRrset(name, t) => {
                // §3.4.2.3: "if NAME == zone name and TYPE is SOA or NS, ignore".
                if name == apex && matches!(t, RecordType::SOA | RecordType::NS) {
                    return;
                }
                if t != RecordType::SOA && self.get(&name, t).is_some() {
                    self.put(&name, t, None);
                }
            }
            Op::DeleteName(name) => {
                for t in self.types_at(&name) {
                    // §3.4.2.3: at the apex, "all RRsets ... except SOA and NS".
                    if name == apex && t == RecordType::NS {
                        continue;
                    }
                    self.put(&name, t, None);
                }
            }
            Op::DeleteRr(name, rdata) => {
                let t = rdata.record_type();
                if t == RecordType::SOA {
                    return;
                }
                let Some(mut set) = self.get(&name, t) else {
                    return;
                };
                set.records.retain(|r| *r != rdata);
                // §3.4.2.4: the last apex NS record stays.
                if set.records.is_empty() && name == apex && t == RecordType::NS {
                    return;
                }
                let set = (!set.records.is_empty()).then_some(set);
                self.put(&name, t, set);
            }
        }
    }

    /// The touched RRsets that differ from the zone, as changes: deletions first, so that a
    /// CNAME that replaces other data (or the other way round) passes the zone's checks.
    fn changes(self) -> Vec<Change> {
        let mut deletes = Vec::new();
        let mut sets = Vec::new();
        for ((name, rtype), set) in self.sets {
            let before = current(self.zone, &name, rtype);
            match set {
                None if before.is_some() => deletes.push(Change::Delete { name, rtype }),
                Some(set) if before.as_ref() != Some(&set) => sets.push(Change::Set {
                    name,
                    rtype,
                    ttl: set.ttl,
                    records: set.records,
                }),
                _ => {}
            }
        }
        deletes.extend(sets);
        deletes
    }
}

/// An update that passed the checks that need no zone data, waiting for its turn to apply.
pub(super) struct Pending {
    pub req: Request,
    pub update: Update,
    pub tsig: Option<ResponseTsig>,
    pub transport: Transport,
    pub cfg: FallbackConfig,
}

impl Pending {
    /// Applies the update and returns the response, which says the change has landed.
    pub(super) async fn run(self, handler: Arc<dyn UpdateHandler>) -> Reply {
        let Pending {
            req,
            update,
            tsig,
            transport,
            cfg,
        } = self;
        let zone = update.zone.clone();
        let key = tsig
            .as_ref()
            .and_then(|t| t.key())
            .map(|k| k.name.to_string());
        let rcode = match handler
            .apply_update(Box::new(move |zones| update.clone().build(zones)))
            .await
        {
            Ok(Some(applied)) => {
                info!(%zone, serial = applied.serial, key = ?key, "dynamic update applied");
                ResponseCode::NoError
            }
            Ok(None) => {
                debug!(%zone, "dynamic update changed nothing");
                ResponseCode::NoError
            }
            Err(e) => {
                let rcode = e.rcode();
                if rcode == ResponseCode::ServFail {
                    warn!(%zone, "dynamic update failed: {e:#}");
                } else {
                    debug!(%zone, %rcode, "dynamic update not applied: {e:#}");
                }
                rcode
            }
        };
        finish(&req, &cfg, rcode, transport, tsig.as_ref())
    }
}

/// The response to an update: the header and zone section (RFC 2136 §3.8), signed if the
/// request was.
pub(super) fn finish(
    req: &Request,
    cfg: &FallbackConfig,
    rcode: ResponseCode,
    transport: Transport,
    tsig: Option<&ResponseTsig>,
) -> Reply {
    let mut reply = Draft::new(req, cfg, rcode).finish(transport);
    if let Some(t) = tsig {
        let now = tsig::now();
        for m in &mut reply.messages {
            t.sign(m, now);
        }
    }
    reply
}

#[cfg(test)]
mod tests;
