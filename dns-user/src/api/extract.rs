//! Request extractors whose rejections are [`ApiError`]s: JSON bodies that name the field at
//! fault, text bodies, path parameters and query strings.

use std::collections::HashMap;

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Query, Request},
    http::{header::CONTENT_TYPE, request::Parts, HeaderMap, StatusCode},
};
use http_body_util::BodyExt as _;
use serde::de::DeserializeOwned;
use serde_json::error::Category;

use super::{ApiError, ApiState};
use crate::{
    progress::Reporter,
    zonefile::{StreamParser, ZoneFile},
};

/// The media type of JSON bodies.
pub const JSON: &str = "application/json";
/// The media type of zone files (RFC 4027).
pub const ZONE_FILE: &str = "text/dns";

/// Checks the body's media type. Bodies must say what they are: besides catching mistakes, a
/// type other than the three a browser may send cross-origin without asking first
/// (`text/plain`, form data) means a web page can't post changes to a local API.
fn require_type(headers: &HeaderMap, want: &str) -> Result<(), ApiError> {
    let given = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim());
    match given {
        Some(t) if t.eq_ignore_ascii_case(want) => Ok(()),
        Some(t) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type is {t:?}; this endpoint takes {want}"),
        )
        .with_field("Content-Type")),
        None => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("no Content-Type; this endpoint takes {want}"),
        )
        .with_field("Content-Type")),
    }
}

/// A JSON body (`Content-Type: application/json`, at most [`super::BODY_LIMIT`] bytes). Errors
/// name the field at fault: `changes[2].ttl`, or the unknown field itself.
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        require_type(req.headers(), JSON)?;
        let bytes = Bytes::from_request(req, state).await?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Deserializes `bytes`, reporting where it failed.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        json_error(&path, e.inner())
    })?;
    de.end().map_err(|e| json_error(".", &e))?;
    Ok(value)
}

fn json_error(path: &str, e: &serde_json::Error) -> ApiError {
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::bad("body", format!("malformed JSON: {e}"))
        }
        Category::Data => {
            // serde puts the unknown or missing field's name in the message only; the path is
            // the object it is in.
            let msg = e.to_string();
            let named = ["unknown field `", "missing field `"]
                .iter()
                .find_map(|p| msg.strip_prefix(p))
                .and_then(|rest| rest.split('`').next());
            let field = match (path, named) {
                (".", Some(name)) => name.to_string(),
                (p, Some(name)) if !p.ends_with(name) => format!("{p}.{name}"),
                (".", None) => "body".to_string(),
                (p, _) => p.to_string(),
            };
            ApiError::bad(field, msg)
        }
    }
}

/// A zone file body (`Content-Type: text/dns`, UTF-8), at most the state's
/// `zonefile_max_bytes` (the router's [`super::BODY_LIMIT`] is for JSON and doesn't apply),
/// parsed as it arrives: the text is never held whole, and a mistake is answered as soon as
/// its line is in.
pub struct ZoneFileUpload {
    body: axum::body::Body,
    limit: usize,
    /// `Content-Length`, when the client sent one: the total for the progress lines.
    length: Option<u64>,
}

impl FromRequest<ApiState> for ZoneFileUpload {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &ApiState) -> Result<Self, ApiError> {
        require_type(req.headers(), ZONE_FILE)?;
        let length = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(Self {
            body: req.into_body(),
            limit: state.zonefile_max_bytes,
            length,
        })
    }
}

impl ZoneFileUpload {
    /// Reads the body into `parser` piece by piece, on a blocking thread (parsing a large file
    /// takes a while) that works while the next pieces arrive, reporting the bytes parsed to
    /// `progress` (stage "reading zone file").
    pub async fn parse(
        self,
        mut parser: StreamParser,
        progress: &Reporter,
    ) -> Result<ZoneFile, ApiError> {
        let limit = self.limit;
        let mut progress = progress.start("reading zone file", self.length);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
        let parse = tokio::task::spawn_blocking(move || {
            while let Some(piece) = rx.blocking_recv() {
                parser.push(&piece)?;
                progress.add(piece.len() as u64);
            }
            let zf = parser.finish()?;
            progress.finish();
            Ok::<_, crate::zonefile::ZoneFileError>(zf)
        });
        let mut body = self.body;
        let mut read = 0usize;
        let mut refused = None;
        while let Some(frame) = body.frame().await {
            let piece = match frame {
                // Trailers, if any, say nothing about the zone.
                Ok(frame) => match frame.into_data() {
                    Ok(piece) => piece,
                    Err(_) => continue,
                },
                Err(e) => {
                    refused = Some(ApiError::bad("body", format!("reading the body: {e}")));
                    break;
                }
            };
            read += piece.len();
            if read > limit {
                refused = Some(
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "the zone file is over the {limit}-byte limit for zone files (serve --zonefile-max-bytes)"
                        ),
                    )
                    .with_field("body"),
                );
                break;
            }
            // A closed channel: the parser stopped at a mistake, which it returns below.
            if tx.send(piece).await.is_err() {
                break;
            }
        }
        drop(tx);
        let parsed = parse.await.map_err(|e| ApiError::internal(&e))?;
        // The body's own fault (too large, unreadable) comes first: a parse error of a body cut
        // short would name a line that isn't wrong.
        match refused {
            Some(e) => Err(e),
            None => Ok(parsed?),
        }
    }
}

/// Path parameters.
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(t) = Path::<T>::from_request_parts(parts, state).await?;
        Ok(ApiPath(t))
    }
}

/// Query parameters, only those in `allowed`: an unknown one is refused, so a misspelt
/// `limit` is not silently ignored.
pub struct ApiQuery(pub HashMap<String, String>);

impl ApiQuery {
    pub fn only(self, allowed: &[&str]) -> Result<HashMap<String, String>, ApiError> {
        if let Some(k) = self.0.keys().find(|k| !allowed.contains(&k.as_str())) {
            return Err(ApiError::bad(
                k.clone(),
                format!(
                    "unknown query parameter {k:?} (allowed: {})",
                    allowed.join(", ")
                ),
            ));
        }
        Ok(self.0)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ApiQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(q) = Query::<HashMap<String, String>>::from_request_parts(parts, state).await?;
        Ok(ApiQuery(q))
    }
}
