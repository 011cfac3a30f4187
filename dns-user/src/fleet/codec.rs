//! The fleet's keys and values in etcd.
//!
//! Under the prefix (`--etcd-prefix`, default `/edgedns/v1`):
//!
//! ```text
//! {prefix}/data/z/{apex}                  zone settings: SOA fields and serial
//! {prefix}/data/r/{apex}/{owner}/{type}   one RRset
//! {prefix}/edges/{id}                     an edge's registration (JSON, under its lease)
//! {prefix}/data-sync/{id}                 put with each registration (under its lease)
//! {prefix}/data-write/{id}                put with each of an edge's writes: where it takes acks
//! {prefix}/writes/{id}                    an edge's last write's id (under its lease)
//! {prefix}/ack-key                        the key acks between edges are signed with
//! ```
//!
//! Names in keys are their wire form (lower-cased, as the zone model keys them) in hex: a label
//! may hold any byte, `/` included, and hex keeps each key one exact, unambiguous path whose
//! zone part is a prefix (a zone's RRsets are one range). Edges watch from `{prefix}/data-sync/`
//! to the end of `{prefix}/data/` (`data-write/` sorts in between), so updates of an edge's
//! registration and write marker never wake the others' followers.
//!
//! Values start with a format byte ([`FORMAT`]) and a kind byte, then the names in wire form
//! and the store's own encodings of zone settings and RRsets ([`crate::store`]): compact, exact
//! for any record the zone model takes, and readable by an edge alone. A value of another format
//! is refused, never guessed at.

use hickory_proto::rr::{Name, RecordType};

use crate::{
    store::{
        decode_name, decode_rrset, decode_zone_meta, encode_name, encode_rrset, encode_zone_meta,
        wire_name_len,
    },
    zone::{normalize, RrSet, SoaParams},
};

/// The value format this version writes and reads.
pub const FORMAT: u8 = 1;
const KIND_ZONE: u8 = b'Z';
const KIND_RRSET: u8 = b'R';

/// The key layout under one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

/// What a data key names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataKey {
    Zone(Name),
    Rrset(Name, Name, RecordType),
}

impl DataKey {
    /// The zone the key belongs to.
    pub fn apex(&self) -> &Name {
        match self {
            DataKey::Zone(apex) | DataKey::Rrset(apex, _, _) => apex,
        }
    }
}

/// A data value, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Zone {
        apex: Name,
        soa: SoaParams,
        serial: u32,
    },
    Rrset {
        apex: Name,
        owner: Name,
        rtype: RecordType,
        set: RrSet,
    },
}

impl Keys {
    /// `prefix` without its trailing slashes (`/edgedns/v1`).
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.trim_end_matches('/').to_string(),
        }
    }

    /// Everything the fleet keeps: data and edges.
    pub fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    /// Zones and RRsets: what followers watch.
    pub fn data(&self) -> String {
        format!("{}/data/", self.prefix)
    }

    pub fn edges(&self) -> String {
        format!("{}/edges/", self.prefix)
    }

    /// Where each edge's registration transaction also puts a key (under the same lease), just
    /// before [`Keys::data`] in key order, so that the followers' watch (which covers both)
    /// brings it in revision order with the data: an edge that has seen its own registration's
    /// revision there has seen every data revision before it.
    pub fn sync(&self) -> String {
        format!("{}/data-sync/", self.prefix)
    }

    pub fn edge_sync(&self, id: &str) -> String {
        format!("{}{id}", self.sync())
    }

    /// Where each of an edge's write transactions says where it takes acks (see the fleet's
    /// `acks`): in the followers' watch range, like [`Keys::sync`], so it comes with the
    /// revision it tells of.
    pub fn write_acks(&self) -> String {
        format!("{}/data-write/", self.prefix)
    }

    pub fn write_ack(&self, id: &str) -> String {
        format!("{}{id}", self.write_acks())
    }

    /// The key the edges sign acks with.
    pub fn ack_key(&self) -> String {
        format!("{}/ack-key", self.prefix)
    }

    pub fn edge(&self, id: &str) -> String {
        format!("{}{id}", self.edges())
    }

    /// The key each of an edge's write transactions puts its write's id in, under the edge's
    /// lease: how the edge finds out whether a transaction whose answer it lost was applied,
    /// and why one that reaches etcd after the lease ran out is refused whole.
    pub fn write_marker(&self, id: &str) -> String {
        format!("{}/writes/{id}", self.prefix)
    }

    pub fn zone(&self, apex: &Name) -> String {
        format!("{}z/{}", self.data(), hex(apex))
    }

    /// The prefix of every RRset key of the zone.
    pub fn zone_rrsets(&self, apex: &Name) -> String {
        format!("{}r/{}/", self.data(), hex(apex))
    }

    pub fn rrset(&self, apex: &Name, owner: &Name, rtype: RecordType) -> String {
        format!(
            "{}{}/{}",
            self.zone_rrsets(apex),
            hex(owner),
            u16::from(rtype)
        )
    }

    /// What a key under [`Keys::data`] names.
    pub fn parse(&self, key: &[u8]) -> Result<DataKey, String> {
        let key = std::str::from_utf8(key).map_err(|_| "key is not UTF-8".to_string())?;
        let rest = key
            .strip_prefix(&self.data())
            .ok_or_else(|| format!("key {key:?} is not under {}", self.data()))?;
        let bad = || format!("bad fleet key {key:?}");
        let mut parts = rest.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("z"), Some(apex), None, None) => Ok(DataKey::Zone(unhex(apex).ok_or_else(bad)?)),
            (Some("r"), Some(apex), Some(owner), Some(t)) if parts.next().is_none() => {
                let t: u16 = t.parse().map_err(|_| bad())?;
                Ok(DataKey::Rrset(
                    unhex(apex).ok_or_else(bad)?,
                    unhex(owner).ok_or_else(bad)?,
                    RecordType::from(t),
                ))
            }
            _ => Err(bad()),
        }
    }
}

fn hex(name: &Name) -> String {
    data_encoding::HEXLOWER.encode(&encode_name(&normalize(name)))
}

fn unhex(text: &str) -> Option<Name> {
    let wire = data_encoding::HEXLOWER.decode(text.as_bytes()).ok()?;
    decode_name(&wire).ok()
}

/// A zone's settings as stored in etcd.
pub fn encode_zone(apex: &Name, soa: &SoaParams, serial: u32) -> Vec<u8> {
    let mut out = vec![FORMAT, KIND_ZONE];
    out.extend_from_slice(&encode_name(&normalize(apex)));
    out.extend_from_slice(&encode_zone_meta(soa, serial));
    out
}

/// An RRset as stored in etcd.
pub fn encode_rrset_value(
    apex: &Name,
    owner: &Name,
    rtype: RecordType,
    set: &RrSet,
) -> Result<Vec<u8>, String> {
    let mut out = vec![FORMAT, KIND_RRSET];
    out.extend_from_slice(&encode_name(&normalize(apex)));
    out.extend_from_slice(&encode_name(&normalize(owner)));
    out.extend_from_slice(&u16::from(rtype).to_be_bytes());
    out.extend_from_slice(&encode_rrset(set.ttl, &set.records)?);
    Ok(out)
}

/// A value [`encode_zone`] or [`encode_rrset_value`] wrote.
pub fn decode(value: &[u8]) -> Result<Value, String> {
    let (&format, rest) = value.split_first().ok_or("empty value")?;
    if format != FORMAT {
        return Err(format!(
            "value format {format} (this version reads format {FORMAT})"
        ));
    }
    let (&kind, rest) = rest.split_first().ok_or("value cut short")?;
    let name = |b: &[u8]| -> Result<(Name, usize), String> {
        let n = wire_name_len(b).ok_or("name cut short")?;
        Ok((decode_name(&b[..n])?, n))
    };
    match kind {
        KIND_ZONE => {
            let (apex, n) = name(rest)?;
            let (soa, serial) = decode_zone_meta(&rest[n..])?;
            Ok(Value::Zone { apex, soa, serial })
        }
        KIND_RRSET => {
            let (apex, n) = name(rest)?;
            let rest = &rest[n..];
            let (owner, n) = name(rest)?;
            let rest = &rest[n..];
            let (t, rest) = rest.split_at_checked(2).ok_or("type cut short")?;
            let rtype = RecordType::from(u16::from_be_bytes([t[0], t[1]]));
            let set = decode_rrset(rtype, rest)?;
            Ok(Value::Rrset {
                apex,
                owner,
                rtype,
                set,
            })
        }
        other => Err(format!("unknown value kind {other}")),
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_proto::rr::{
        rdata::{A, TXT},
        RData,
    };

    use super::*;

    fn name(s: &str) -> Name {
        Name::from_str(s).unwrap()
    }

    #[test]
    fn zone_values_round_trip() {
        let mut soa = SoaParams::new(name("ns1.a.test."), name("hostmaster.a.test."));
        soa.minimum = 60;
        let v = encode_zone(&name("A.Test."), &soa, 4_000_000_000);
        assert_eq!(v[0], FORMAT);
        assert_eq!(
            decode(&v).unwrap(),
            Value::Zone {
                apex: name("a.test."),
                soa,
                serial: 4_000_000_000
            }
        );
    }

    #[test]
    fn rrset_values_round_trip_any_label_bytes() {
        let owner =
            Name::from_labels(vec![b"we/ird".as_slice(), b"a".as_slice(), b"test"]).unwrap();
        let set = RrSet {
            ttl: 30,
            records: vec![
                RData::A(A::new(192, 0, 2, 1)),
                RData::A(A::new(192, 0, 2, 2)),
            ],
        };
        let v = encode_rrset_value(&name("a.test."), &owner, RecordType::A, &set).unwrap();
        assert_eq!(
            decode(&v).unwrap(),
            Value::Rrset {
                apex: name("a.test."),
                owner: owner.clone(),
                rtype: RecordType::A,
                set
            }
        );
        let txt = RrSet {
            ttl: 0,
            records: vec![RData::TXT(TXT::new(vec!["v=spf1 -all".into()]))],
        };
        let v = encode_rrset_value(&name("a.test."), &owner, RecordType::TXT, &txt).unwrap();
        assert!(matches!(decode(&v).unwrap(), Value::Rrset { set, .. } if set == txt));
    }

    #[test]
    fn other_formats_and_cut_values_are_refused() {
        let soa = SoaParams::new(name("ns1.a.test."), name("h.a.test."));
        let mut v = encode_zone(&name("a.test."), &soa, 1);
        for cut in 0..v.len() {
            assert!(decode(&v[..cut]).is_err(), "cut at {cut}");
        }
        v[0] = 2;
        assert!(decode(&v).unwrap_err().contains("format 2"));
        let mut v = encode_zone(&name("a.test."), &soa, 1);
        v[1] = b'X';
        assert!(decode(&v).is_err());
    }

    #[test]
    fn keys_parse_back_and_zones_are_prefixes() {
        let keys = Keys::new("/edgedns/v1/");
        let apex = name("a.test.");
        let owner = Name::from_labels(vec![b"x/y".as_slice(), b"a", b"test"]).unwrap();
        let k = keys.rrset(&apex, &owner, RecordType::AAAA);
        assert!(k.starts_with(&keys.zone_rrsets(&apex)));
        assert!(k.starts_with("/edgedns/v1/data/r/"));
        assert_eq!(
            keys.parse(k.as_bytes()).unwrap(),
            DataKey::Rrset(apex.clone(), owner, RecordType::AAAA)
        );
        assert_eq!(
            keys.parse(keys.zone(&name("A.TEST.")).as_bytes()).unwrap(),
            DataKey::Zone(apex.clone())
        );
        // A zone's RRset prefix doesn't cover a child zone's RRsets.
        let child = name("b.a.test.");
        assert!(!keys
            .rrset(&child, &child, RecordType::A)
            .starts_with(&keys.zone_rrsets(&apex)));
        assert!(keys.parse(b"/edgedns/v1/data/r/zz/00/1").is_err());
        assert!(keys.parse(b"/other/data/z/00").is_err());
        assert!(!keys.edge("e1").starts_with(&keys.data()));
    }
}
