//! Why the zone model refused a change.

use hickory_proto::rr::RecordType;

use super::validate::MAX_MESSAGE;

/// Why a mutation was refused. Names are kept as text: they are only for the message, and keep
/// the error small. Which request field is at fault is the API's business (it maps variants to
/// its own field names).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    #[error("no zone {apex}")]
    UnknownZone { apex: String },
    #[error("zone {apex} already exists")]
    ZoneExists { apex: String },
    #[error("the root zone can't be served: it would make this server answer for every name")]
    RootZone,
    #[error("{name} is not inside zone {apex}")]
    NotInZone { name: String, apex: String },
    #[error("{field} {value} is out of range 0..=2147483647")]
    TtlOutOfRange { field: TtlField, value: u32 },
    #[error("record type {rtype} is not supported")]
    UnsupportedType { rtype: RecordType },
    #[error("the SOA record is changed through the zone's SOA settings, not as a record set")]
    SoaRecord,
    #[error("record {index} is of type {found}, not {expected}")]
    TypeMismatch {
        index: usize,
        expected: RecordType,
        found: RecordType,
    },
    #[error("empty record list: delete the record set instead")]
    EmptyRecords,
    #[error("record {index} is a duplicate")]
    DuplicateRecord { index: usize },
    #[error("a CNAME record set holds exactly one record")]
    MultipleCnames,
    #[error("a CNAME can't be at the zone apex, which has SOA and NS")]
    CnameAtApex,
    #[error("{name} has {existing} records: a CNAME can't be added beside other data")]
    CnameBesideData { name: String, existing: RecordType },
    #[error("{name} has a CNAME: no other data can be added beside it")]
    DataBesideCname { name: String },
    #[error("a wildcard name can't own NS records")]
    WildcardNs,
    /// RFC 4592 §4.2: NS at a wildcard "has unclear semantics", and an apex owns NS.
    #[error("a zone's apex can't be a wildcard name")]
    WildcardApex,
    #[error("the apex NS set can't be deleted")]
    ApexNsRequired,
    #[error("no {rtype} record set at {name}")]
    NoSuchRrset { name: String, rtype: RecordType },
    #[error("a zone needs at least one name server")]
    NoNameServers,
    #[error("name server {index} is listed twice")]
    DuplicateNameServer { index: usize },
    #[error("empty change list")]
    EmptyBatch,
    /// An RRset that could never be served: the whole set must fit one DNS message of 65,535
    /// bytes (the most TCP's length prefix allows) with the question. Counted: the header (12),
    /// the question (the owner in wire form, uncompressed, + type and class, 4), and for each
    /// record its owner as a compression pointer (2), type, class, TTL and RDLENGTH (10), and
    /// its RDATA in wire form as stored (names in it uncompressed). Not counted: an OPT record
    /// or other sections, so an answer near the limit may still be truncated over UDP. The
    /// store's encoding (16-bit counts and lengths) holds whatever passes.
    #[error("the record set does not fit one DNS message: it needs at least {size} bytes with its question, and the limit is {MAX_MESSAGE}")]
    RrsetTooLarge { size: usize },
    #[error("record {index} can't be written in wire form: {reason}")]
    Unencodable { index: usize, reason: String },
    /// A stored record whose wire form doesn't read (the store's load).
    #[error("record {index}: {reason}")]
    Unreadable { index: usize, reason: String },
    #[error("change {index} is invalid")]
    Batch {
        index: usize,
        #[source]
        source: Box<ZoneError>,
    },
}

/// Which TTL-like value was out of range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtlField {
    /// A record set's TTL.
    Ttl,
    /// The SOA record's own TTL.
    SoaTtl,
    Refresh,
    Retry,
    Expire,
    /// SOA MINIMUM, the negative-caching TTL.
    Minimum,
    /// The apex NS set's TTL given at zone creation.
    NsTtl,
}

impl std::fmt::Display for TtlField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TtlField::Ttl => "TTL",
            TtlField::SoaTtl => "SOA TTL",
            TtlField::Refresh => "SOA refresh",
            TtlField::Retry => "SOA retry",
            TtlField::Expire => "SOA expire",
            TtlField::Minimum => "negative TTL (SOA minimum)",
            TtlField::NsTtl => "NS TTL",
        })
    }
}
