//! Bearer-token authentication for `/v1/*` (`serve --api-token-file`).

use std::{
    fmt,
    path::{Path, PathBuf},
};

use axum::{
    extract::{Request, State},
    http::{header, HeaderMap, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
};
use tracing::warn;

use super::{ApiError, ApiState};

/// The token the API requires. Never printed, not even by `Debug`.
#[derive(Clone)]
pub struct ApiToken(Vec<u8>);

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("reading the API token file {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the API token file {} is empty", path.display())]
    Empty { path: PathBuf },
    #[error("the API token in {} has characters an Authorization header can't carry (use printable ASCII)", path.display())]
    Unprintable { path: PathBuf },
}

impl ApiToken {
    /// The token is the file's contents with surrounding whitespace (a trailing newline) trimmed.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let bytes = std::fs::read(path).map_err(|source| TokenError::Read {
            path: path.to_owned(),
            source,
        })?;
        let token = bytes.trim_ascii();
        if token.is_empty() {
            return Err(TokenError::Empty {
                path: path.to_owned(),
            });
        }
        if !token.iter().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::Unprintable {
                path: path.to_owned(),
            });
        }
        warn_if_readable_by_others(path);
        Ok(Self(token.to_vec()))
    }

    /// A token given directly (tests); `None` if it is empty.
    pub fn new(token: &str) -> Option<Self> {
        let t = token.trim();
        (!t.is_empty()).then(|| Self(t.as_bytes().to_vec()))
    }

    /// Whether `presented` is the token, in time that depends on the lengths only, not on where
    /// the bytes differ: response times then tell nothing about a guessed prefix.
    pub(super) fn matches(&self, presented: &[u8]) -> bool {
        if presented.len() != self.0.len() {
            return false;
        }
        let diff = self
            .0
            .iter()
            .zip(presented)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            warn!(
                path = %path.display(),
                "the API token file can be read by group or others; chmod 600 it"
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path) {}

/// The credentials of an `Authorization: Bearer <token>` header (RFC 6750 §2.1; the scheme is
/// case-insensitive, RFC 7235 §2.1).
fn bearer(value: &HeaderValue) -> Option<&[u8]> {
    let v = value.as_bytes();
    let (scheme, rest) = v.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
}

/// Whether `headers` carry `token` as `Authorization: Bearer <token>`.
pub(super) fn bearer_matches(token: &ApiToken, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(bearer)
        .is_some_and(|p| token.matches(p))
}

/// Lets a request through only with the right token, if one is configured. Runs before the
/// handler reads the body, so a refused request changes nothing.
pub(super) async fn require_token(
    State(st): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(token) = st.token() else {
        return next.run(req).await;
    };
    if bearer_matches(&token, req.headers()) {
        return next.run(req).await;
    }
    let mut resp = ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing or wrong API token: send Authorization: Bearer <token>",
    )
    .with_field("Authorization")
    .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"edgedns\""),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_compare_and_header() {
        let t = ApiToken::new(" s3cret\n").unwrap();
        assert!(t.matches(b"s3cret"));
        assert!(!t.matches(b"s3cres"));
        assert!(!t.matches(b"s3cret2"));
        assert!(!t.matches(b""));
        assert!(ApiToken::new(" \n").is_none());
        assert_eq!(
            bearer(&HeaderValue::from_static("bearer abc")),
            Some(&b"abc"[..])
        );
        assert_eq!(bearer(&HeaderValue::from_static("Basic abc")), None);
        assert_eq!(bearer(&HeaderValue::from_static("Bear")), None);
    }

    #[test]
    fn token_file_errors_name_the_file() {
        let dir = std::env::temp_dir().join(format!("edgedns-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty");
        std::fs::write(&empty, "\n").unwrap();
        let e = ApiToken::from_file(&empty).unwrap_err().to_string();
        assert!(
            e.contains("empty") && e.contains(&*empty.to_string_lossy()),
            "{e}"
        );
        let missing = dir.join("missing");
        let e = ApiToken::from_file(&missing).unwrap_err().to_string();
        assert!(e.contains(&*missing.to_string_lossy()), "{e}");
        let good = dir.join("good");
        std::fs::write(&good, "tok\n").unwrap();
        assert!(ApiToken::from_file(&good).unwrap().matches(b"tok"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
