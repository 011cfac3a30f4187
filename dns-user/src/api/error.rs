//! [`ApiError`]: how every refusal looks on the wire.

use axum::{
    extract::rejection::{BytesRejection, PathRejection, QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde_json::{json, Value};

use crate::{
    engine::{EngineError, ImportError},
    zone::{TtlField, ZoneError},
    zonefile::ZoneFileError,
};

/// A request error: a status and the JSON body `{"error": reason, "field": field}`, where
/// `field` names the part of the request at fault (`"ttl"`, `"records[2]"`,
/// `"changes[3].name"`, a path parameter such as `"zone"`, or `"body"`) when there is one.
/// Zone-file errors also carry `"line"`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: String,
    field: Option<String>,
    line: Option<usize>,
}

impl ApiError {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            field: None,
            line: None,
        }
    }

    /// 400 about one field.
    pub fn bad(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason).with_field(field)
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    /// 500 for a failure that is ours, not the client's, with the whole cause chain: the
    /// operator reading the response has no other place to see it.
    pub fn internal(e: &(dyn std::error::Error + 'static)) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, crate::error_chain(e))
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.reason });
        if let Some(f) = self.field {
            body["field"] = Value::String(f);
        }
        if let Some(l) = self.line {
            body["line"] = json!(l);
        }
        (self.status, Json(body)).into_response()
    }
}

/// The zone model's refusals: 404 for what doesn't exist, 409 for a zone that does, 422 for
/// well-formed requests the model won't take (TTL range, CNAME rules, names outside the zone).
impl From<ZoneError> for ApiError {
    fn from(z: ZoneError) -> Self {
        let leaf = match &z {
            ZoneError::Batch { source, .. } => source.as_ref(),
            other => other,
        };
        let status = match leaf {
            ZoneError::UnknownZone { .. } | ZoneError::NoSuchRrset { .. } => StatusCode::NOT_FOUND,
            ZoneError::ZoneExists { .. } => StatusCode::CONFLICT,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        let field = zone_error_field(&z);
        let reason = match &z {
            ZoneError::Batch { index, source } => format!("change {index}: {source}"),
            other => other.to_string(),
        };
        Self::new(status, reason).with_field(field)
    }
}

/// The request field a zone-model refusal is about, in the API's names: `"name"`, `"ttl"`,
/// `"records[2]"`, `"type"`, or `"changes[3].ttl"` inside a batch.
pub(crate) fn zone_error_field(e: &ZoneError) -> String {
    match e {
        ZoneError::UnknownZone { .. }
        | ZoneError::ZoneExists { .. }
        | ZoneError::RootZone
        | ZoneError::WildcardApex => "zone".into(),
        ZoneError::NotInZone { .. } => "name".into(),
        ZoneError::TtlOutOfRange { field, .. } => match field {
            TtlField::Ttl => "ttl",
            TtlField::SoaTtl => "soa_ttl",
            TtlField::Refresh => "refresh",
            TtlField::Retry => "retry",
            TtlField::Expire => "expire",
            TtlField::Minimum => "negative_ttl",
            TtlField::NsTtl => "ns_ttl",
        }
        .into(),
        ZoneError::UnsupportedType { .. }
        | ZoneError::SoaRecord
        | ZoneError::CnameAtApex
        | ZoneError::CnameBesideData { .. }
        | ZoneError::DataBesideCname { .. }
        | ZoneError::WildcardNs
        | ZoneError::ApexNsRequired
        | ZoneError::NoSuchRrset { .. } => "type".into(),
        ZoneError::TypeMismatch { index, .. } | ZoneError::DuplicateRecord { index } => {
            format!("records[{index}]")
        }
        ZoneError::EmptyRecords | ZoneError::RrsetTooLarge { .. } => "records".into(),
        ZoneError::Unencodable { index, .. } | ZoneError::Unreadable { index, .. } => {
            format!("records[{index}]")
        }
        ZoneError::MultipleCnames => "records[1]".into(),
        ZoneError::NoNameServers => "ns".into(),
        ZoneError::DuplicateNameServer { index } => format!("ns[{index}]"),
        ZoneError::EmptyBatch => "changes".into(),
        ZoneError::Batch { index, source } => {
            format!("changes[{index}].{}", zone_error_field(source))
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Invalid(z) => z.into(),
            e @ (EngineError::Store(_) | EngineError::FastPath(_)) => Self::internal(&e),
            EngineError::Fleet(f) => Self::new(
                StatusCode::from_u16(f.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                crate::error_chain(&f),
            ),
        }
    }
}

impl From<ZoneFileError> for ApiError {
    fn from(e: ZoneFileError) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            line: e.line,
            reason: e.to_string(),
            field: Some("body".into()),
        }
    }
}

impl From<ImportError> for ApiError {
    fn from(e: ImportError) -> Self {
        match e {
            ImportError::File(f) => f.into(),
            ImportError::Engine(e) => e.into(),
        }
    }
}

/// A body that couldn't be read: 413 past the size limit.
impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        Self::new(r.status(), r.body_text()).with_field("body")
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::new(r.status(), r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, r.body_text())
    }
}
