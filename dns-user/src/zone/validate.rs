//! The rules a change must pass before it touches a zone: TTL ranges, supported types, RRset
//! shape, CNAME exclusivity.

use hickory_proto::{
    rr::{RData, RecordType},
    serialize::binary::BinEncodable as _,
};

use super::{model::Node, name::CanonName, TtlField, ZoneError};

/// RFC 2181 §8: "The definition of values appropriate to the TTL field in STD 13 is not as clear
/// as it could be [...] it is hereby specified that a TTL value is an unsigned number, with a
/// minimum value of 0, and a maximum value of 2147483647."
pub const MAX_TTL: u32 = 2_147_483_647;
/// The largest DNS message: what TCP's 16-bit length prefix allows.
pub(super) const MAX_MESSAGE: usize = 65535;

/// Record types that can be stored with [`ZoneSet::set_rrset`]. SOA is set through the zone
/// calls ([`ZoneSet::create_zone`], [`ZoneSet::set_soa`]).
pub const SUPPORTED_TYPES: [RecordType; 9] = [
    RecordType::A,
    RecordType::AAAA,
    RecordType::CNAME,
    RecordType::TXT,
    RecordType::MX,
    RecordType::NS,
    RecordType::SRV,
    RecordType::CAA,
    RecordType::PTR,
];

pub(super) fn check_ttl(field: TtlField, value: u32) -> Result<(), ZoneError> {
    if value > MAX_TTL {
        return Err(ZoneError::TtlOutOfRange { field, value });
    }
    Ok(())
}

/// The checks of [`Zone::check_set`], given the zone's apex and the node at `name` as it is
/// (`None`: no data there).
pub(super) fn check_set_at(
    apex: &CanonName,
    name: &CanonName,
    node: Option<&Node>,
    rtype: RecordType,
    ttl: u32,
    records: &[RData],
) -> Result<(), ZoneError> {
    check_set_alone(apex, name, rtype, ttl, records)?;
    check_set_beside(name, node, rtype)
}

/// The checks of [`check_set_at`] that need no other RRset of the name: the store's load runs
/// them on many RRsets at once, before the nodes are built.
pub(super) fn check_set_alone(
    apex: &CanonName,
    name: &CanonName,
    rtype: RecordType,
    ttl: u32,
    records: &[RData],
) -> Result<(), ZoneError> {
    if rtype == RecordType::SOA {
        return Err(ZoneError::SoaRecord);
    }
    if !SUPPORTED_TYPES.contains(&rtype) {
        return Err(ZoneError::UnsupportedType { rtype });
    }
    check_ttl(TtlField::Ttl, ttl)?;
    if records.is_empty() {
        return Err(ZoneError::EmptyRecords);
    }
    check_message_size(name, records)?;
    for (index, r) in records.iter().enumerate() {
        if r.record_type() != rtype {
            return Err(ZoneError::TypeMismatch {
                index,
                expected: rtype,
                found: r.record_type(),
            });
        }
        // RFC 2181 §5: an RRset is a set; the same record twice is a client mistake.
        if records[..index].contains(r) {
            return Err(ZoneError::DuplicateRecord { index });
        }
    }
    if rtype == RecordType::CNAME {
        // RFC 1034 §3.6.2: "If a CNAME RR is present at a node, no other data should be
        // present"; the apex always has SOA and NS.
        if name == apex {
            return Err(ZoneError::CnameAtApex);
        }
        // RFC 2181 §10.1: "there should only be one such [CNAME] record" per name.
        if records.len() > 1 {
            return Err(ZoneError::MultipleCnames);
        }
    }
    Ok(())
}

/// The rest of [`check_set_at`], given the node at `name` as it is (`None`: no data there).
pub(super) fn check_set_beside(
    name: &CanonName,
    node: Option<&Node>,
    rtype: RecordType,
) -> Result<(), ZoneError> {
    if rtype == RecordType::CNAME {
        if let Some(existing) = node.and_then(|n| n.types().find(|t| *t != RecordType::CNAME)) {
            return Err(ZoneError::CnameBesideData {
                name: name.to_string(),
                existing,
            });
        }
    } else if node.is_some_and(|n| n.contains(RecordType::CNAME)) {
        return Err(ZoneError::DataBesideCname {
            name: name.to_string(),
        });
    }
    // RFC 4592 §4.2: NS at a wildcard "has unclear semantics"; refuse it.
    if rtype == RecordType::NS && name.is_wildcard() {
        return Err(ZoneError::WildcardNs);
    }
    Ok(())
}

/// The whole RRset must fit one DNS message (see `ZoneError::RrsetTooLarge` for what is
/// counted). Checked before the per-record checks, which take time quadratic in the count;
/// counting stops at the limit, so a huge set is refused without encoding all of it.
fn check_message_size(name: &CanonName, records: &[RData]) -> Result<(), ZoneError> {
    let owner = name.wire_len();
    let mut size = 12 + owner + 4;
    for (index, r) in records.iter().enumerate() {
        let rdata = match r {
            RData::A(_) => 4,
            RData::AAAA(_) => 16,
            _ => r
                .to_bytes()
                .map_err(|e| ZoneError::Unencodable {
                    index,
                    reason: e.to_string(),
                })?
                .len(),
        };
        size += 2 + 10 + rdata;
        if size > MAX_MESSAGE {
            // The rest count at least their fixed 12 bytes each.
            let rest = records.len() - index - 1;
            return Err(ZoneError::RrsetTooLarge {
                size: size + rest * 12,
            });
        }
    }
    Ok(())
}
