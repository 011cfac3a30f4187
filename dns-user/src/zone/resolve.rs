//! [`ZoneSet::resolve`]: RFC 1034 §4.3.2 for an authoritative-only server, with RFC 2308 negative
//! answers and RFC 4592 wildcards.

use std::borrow::Cow;

use hickory_proto::{
    op::ResponseCode,
    rr::{Name, RData, Record, RecordType},
};

use super::{
    change::cname_target,
    model::{Node, SetRef},
    name::CanonName,
    Zone, ZoneSet, MAX_CNAME_CHAIN,
};

/// What kind of answer a [`Resolution`] is; the compiler keys its "can the fast path say this"
/// decision on it, the fallback counts it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolutionKind {
    /// Records in the answer section (possibly only CNAMEs leading out of the zone or stopped
    /// by the chain limit).
    Answer,
    /// The name exists but has no data of the type: NOERROR, SOA in authority.
    Nodata,
    /// The name doesn't exist: NXDOMAIN, SOA in authority.
    Nxdomain,
    /// The name is at or below a zone cut: NS in authority, glue in additional.
    Referral,
    /// No zone here contains the name.
    Refused,
}

/// The answer to one question, section by section, ready to encode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub rcode: ResponseCode,
    /// The AA bit.
    pub aa: bool,
    pub answers: Vec<Record>,
    pub authority: Vec<Record>,
    pub additional: Vec<Record>,
    pub kind: ResolutionKind,
    /// Some answer was synthesized from a wildcard (RFC 4592).
    pub wildcard: bool,
}

impl Resolution {
    fn new() -> Self {
        Self {
            rcode: ResponseCode::NoError,
            aa: true,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
            kind: ResolutionKind::Answer,
            wildcard: false,
        }
    }

    /// RFC 1035 §4.1.1 REFUSED: "The name server refuses to perform the specified operation for
    /// policy reasons": we don't serve the name and don't recurse.
    pub fn refused() -> Self {
        Self {
            rcode: ResponseCode::Refused,
            aa: false,
            kind: ResolutionKind::Refused,
            ..Self::new()
        }
    }
}

/// What a name is in the zone.
enum Found<'a> {
    Node(&'a Node),
    /// An empty non-terminal, or a wildcard that exists only as one.
    Empty,
    Missing,
}

impl ZoneSet {
    /// THE decision procedure: what this server answers to `qname`/`qtype` (class IN).
    ///
    /// `qname` is matched case-insensitively; records owned by the question name carry `qname`
    /// exactly as given (so the encoder compresses them to the question), records owned by other
    /// names (CNAME targets, the SOA, NS and glue) carry the stored lowercase name.
    ///
    /// `ANY` returns every RRset at the name (the SOA too at the apex), not the RFC 8482 minimal
    /// answer: the data is public anyway, and UDP size limits still apply through truncation.
    pub fn resolve(&self, qname: &Name, qtype: RecordType) -> Resolution {
        let name = CanonName::new(qname);
        match self.find_zone_of(&name) {
            // A CNAME target inside a nested zone served here belongs to that zone, not to the
            // one that holds the CNAME: the chain stops there, as for any other zone.
            Some(zone) => zone.resolve_with(qname, name, qtype, |target| {
                self.find_zone_of(target)
                    .is_some_and(|z| z.apex == zone.apex)
            }),
            None => Resolution::refused(),
        }
    }

    /// [`ZoneSet::resolve`] of one name for each of `qtypes`, the same answers, with the name's
    /// zone and node found once instead of once a type: the compiler asks every name for A,
    /// AAAA and CNAME, and at a million names the lookups were most of its time.
    pub fn resolve_types<const N: usize>(
        &self,
        qname: &Name,
        qtypes: [RecordType; N],
    ) -> [Resolution; N] {
        let name = CanonName::new(qname);
        let Some(zone) = self.find_zone_of(&name) else {
            return qtypes.map(|_| Resolution::refused());
        };
        let node = zone.nodes.get(&name);
        qtypes.map(|qtype| {
            zone.resolve_from(qname, Cow::Borrowed(&name), qtype, Some(node), |target| {
                self.find_zone_of(target)
                    .is_some_and(|z| z.apex == zone.apex)
            })
        })
    }
}

impl Zone {
    /// [`ZoneSet::resolve`] inside this zone (REFUSED if `qname` is outside it).
    pub fn resolve(&self, qname: &Name, qtype: RecordType) -> Resolution {
        self.resolve_with(qname, CanonName::new(qname), qtype, |_| true)
    }

    fn resolve_with(
        &self,
        qname: &Name,
        name: CanonName,
        qtype: RecordType,
        authoritative: impl Fn(&CanonName) -> bool,
    ) -> Resolution {
        self.resolve_from(qname, Cow::Owned(name), qtype, None, authoritative)
    }

    /// [`Zone::resolve`] of `qname` (`name` in key form), following a CNAME only to targets
    /// inside the zone for which `authoritative` holds. `first`, if given, is what looking
    /// `name` up in this zone's nodes gives, found already by the caller.
    fn resolve_from(
        &self,
        qname: &Name,
        mut name: Cow<'_, CanonName>,
        qtype: RecordType,
        mut first: Option<Option<&Node>>,
        authoritative: impl Fn(&CanonName) -> bool,
    ) -> Resolution {
        let mut res = Resolution::new();
        let mut owner = qname.clone();
        owner.set_fqdn(true);
        if !name.is_at_or_below(&self.apex) {
            return Resolution::refused();
        }
        // Owners of the CNAMEs followed so far, to stop on loops.
        let mut followed: Vec<CanonName> = Vec::new();
        loop {
            if let Some(cut) = self.cut_above(&name) {
                // RFC 4035 §3.1.4.1 (and RFC 1034's parent-side rule): DS lives in the parent, so
                // a DS question at the cut itself is answered here, not referred.
                if !(*cut == *name && qtype == RecordType::DS) {
                    self.referral(cut, &mut res);
                    return res;
                }
            }
            let looked_up = match first.take() {
                Some(node) => node,
                None => self.nodes.get(&*name),
            };
            let found = match looked_up {
                Some(node) => Found::Node(node),
                None if self.has_descendants(&name) => Found::Empty,
                None => self.wildcard(&name, &mut res.wildcard),
            };
            let node = match found {
                Found::Node(node) => node,
                Found::Empty => return self.negative(res, ResolutionKind::Nodata),
                Found::Missing => return self.negative(res, ResolutionKind::Nxdomain),
            };
            let at_apex = *name == self.apex;
            if qtype == RecordType::ANY {
                if at_apex {
                    res.answers.push(self.soa_owned_by(&owner));
                }
                for set in node.iter() {
                    push_set(&mut res.answers, &owner, set);
                }
                return res;
            }
            if qtype == RecordType::SOA && at_apex {
                res.answers.push(self.soa_owned_by(&owner));
                return res;
            }
            if let Some(set) = node.get(qtype) {
                push_set(&mut res.answers, &owner, set);
                return res;
            }
            let Some(cname) = node.get(RecordType::CNAME) else {
                return self.negative(res, ResolutionKind::Nodata);
            };
            // RFC 1034 §4.3.2 step 3a: "If the data at the node is a CNAME, and QTYPE doesn't
            // match CNAME, copy the CNAME RR into the answer section of the response, change
            // QNAME to the canonical name in the CNAME RR, and go back to step 1."
            push_set(&mut res.answers, &owner, cname);
            followed.push(name.into_owned());
            let Some(target) = cname.first().as_ref().and_then(cname_target) else {
                return res;
            };
            // Out of this zone: the client follows it. Loops and long chains stop here with
            // the CNAMEs found so far, as other servers do.
            if !target.is_at_or_below(&self.apex)
                || !authoritative(&target)
                || followed.contains(&target)
                || followed.len() >= MAX_CNAME_CHAIN
            {
                return res;
            }
            owner = target.name();
            name = Cow::Owned(target);
        }
    }

    /// The SOA record with the owner spelled as asked.
    fn soa_owned_by(&self, owner: &Name) -> Record {
        Record::from_rdata(owner.clone(), self.soa.ttl, self.soa_rdata())
    }

    /// Finishes a NODATA or NXDOMAIN answer.
    ///
    /// RFC 2308 §2.1/§2.2: the authority section carries the zone's SOA; §3: "the TTL of this
    /// record is set from the minimum of the MINIMUM field of the SOA record and the TTL of the
    /// SOA itself". After a CNAME chain the RCODE is that of the last name (RFC 6604 §2.1).
    fn negative(&self, mut res: Resolution, kind: ResolutionKind) -> Resolution {
        if kind == ResolutionKind::Nxdomain {
            res.rcode = ResponseCode::NXDomain;
        }
        res.kind = kind;
        res.authority.push(self.negative_soa());
        res
    }

    /// RFC 1034 §4.3.2 step 3b: "copy the NS RRs for the subzone into the authority section of
    /// the reply. Put whatever addresses are available into the additional section, using glue
    /// RRs if the addresses are not available from authoritative data or the cache."
    fn referral(&self, cut: &CanonName, res: &mut Resolution) {
        res.kind = ResolutionKind::Referral;
        // AA: "the responding name server is an authority for the domain name in question
        // section". A bare referral isn't; a CNAME chain that led into the delegation was.
        res.aa = !res.answers.is_empty();
        let Some(ns) = self.rrset_lower(cut, RecordType::NS) else {
            return;
        };
        push_set(&mut res.authority, &cut.name(), ns);
        for rd in ns.records() {
            let RData::NS(target) = rd else { continue };
            let target = CanonName::new(&target.0);
            if !target.is_at_or_below(&self.apex) {
                continue;
            }
            for t in [RecordType::A, RecordType::AAAA] {
                if let Some(glue) = self.rrset_lower(&target, t) {
                    push_set(&mut res.additional, &target.name(), glue);
                }
            }
        }
    }

    /// RFC 4592 §3.3.1: for a name that doesn't exist, the source of synthesis is `*.` prepended
    /// to its closest encloser; if that exists, answers are synthesized from it.
    fn wildcard(&self, name: &CanonName, used: &mut bool) -> Found<'_> {
        // A source of synthesis exists only if some owner has a `*` label.
        if self.stars.is_empty() || *name == self.apex {
            return Found::Missing;
        }
        let encloser = self.closest_encloser(&name.parent());
        let Ok(source) = encloser.name().prepend_label("*").map(CanonName::from_name) else {
            return Found::Missing;
        };
        let found = match self.nodes.get(&source) {
            Some(node) => Found::Node(node),
            // RFC 4592 §4.2 (empty non-terminal wildcard): it matches, with no data.
            None if self.has_descendants(&source) => Found::Empty,
            None => return Found::Missing,
        };
        *used = true;
        found
    }
}

fn push_set(out: &mut Vec<Record>, owner: &Name, set: SetRef<'_>) {
    out.extend(
        set.records()
            .map(|rd| Record::from_rdata(owner.clone(), set.ttl, rd)),
    );
}
