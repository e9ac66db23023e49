//! Problem details (RFC 9457): every error the API answers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error answered to a client. Internal causes are logged, never echoed.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    title: &'static str,
    detail: String,
    pointer: Option<String>,
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    problem_type: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pointer: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    errors: Vec<FieldError<'a>>,
}

#[derive(Serialize)]
struct FieldError<'a> {
    pointer: &'a str,
    detail: &'a str,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, title: &'static str, detail: impl Into<String>) -> Self {
        Self { status, kind, title, detail: detail.into(), pointer: None }
    }

    /// 400: the request or an event in it is invalid; `pointer` is a JSON pointer into the body.
    pub fn invalid(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            pointer: Some(pointer.into()),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid-event", "Invalid event", detail)
        }
    }

    /// 400: a query parameter is invalid.
    pub fn invalid_parameter(name: &str, detail: impl Into<String>) -> Self {
        Self {
            pointer: Some(format!("?{name}")),
            ..Self::new(StatusCode::BAD_REQUEST, "invalid-parameter", "Invalid parameter", detail)
        }
    }

    /// 401: no token, or an unknown or revoked one.
    pub fn unauthenticated() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "Authentication required",
            "send a valid bearer token in the Authorization header",
        )
    }

    /// 403: the token may not do this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden", detail)
    }

    /// 403 for an event whose source is not the token's organisation.
    pub fn wrong_source(pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            pointer: Some(pointer.into()),
            ..Self::new(StatusCode::FORBIDDEN, "wrong-organisation", "Wrong organisation", detail)
        }
    }

    /// 404.
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", "Not found", detail)
    }

    /// 409: the case moved on since `expectedversion`.
    pub fn version_conflict(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "version-conflict", "Version conflict", detail)
    }

    /// 409: the client was erased; nothing new can be recorded about them.
    pub fn client_erased(pointer: impl Into<String>) -> Self {
        Self {
            pointer: Some(pointer.into()),
            ..Self::new(
                StatusCode::CONFLICT,
                "client-erased",
                "Client erased",
                "this client was erased; record nothing more about them",
            )
        }
    }

    /// 409: the event's id belongs to an event of another organisation. Ids are unique across
    /// the log (the broker's duplicate detection spans the stream), so this event cannot be
    /// stored under it; answering it as a duplicate would tell the client it was stored.
    pub fn id_taken(pointer: impl Into<String>) -> Self {
        Self {
            pointer: Some(pointer.into()),
            ..Self::new(
                StatusCode::CONFLICT,
                "id-taken",
                "Event id taken",
                "another organisation's event has this id; give this event a new id (nothing was stored)",
            )
        }
    }

    /// 413.
    pub fn too_large(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too-large", "Request too large", detail)
    }

    /// 415.
    pub fn unsupported_media_type(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported-media-type", "Unsupported media type", detail)
    }

    /// 503: the event log (or the database) is unavailable; the detail says whether anything
    /// may have been stored.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Service unavailable", detail)
    }

    /// 500, after logging the cause.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            "an internal error occurred; it was logged",
        )
    }

    /// Prefixes the pointer (for an event inside a batch: `/3`).
    pub fn within(mut self, prefix: &str) -> Self {
        if let Some(p) = self.pointer.take() {
            self.pointer = Some(format!("{prefix}{p}"));
        }
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.pointer {
            Some(p) => write!(f, "{p}: {}", self.detail),
            None => f.write_str(&self.detail),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed => {
                tracing::error!(error = %e, "database unavailable");
                Self::unavailable("the database is unavailable; retry later")
            }
            e => Self::internal(&e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let errors = match &self.pointer {
            Some(p) => vec![FieldError { pointer: p, detail: &self.detail }],
            None => Vec::new(),
        };
        let body = Problem {
            problem_type: format!("urn:relais:problem:{}", self.kind),
            title: self.title,
            status: self.status.as_u16(),
            detail: &self.detail,
            pointer: self.pointer.as_deref(),
            errors,
        };
        let mut response = (self.status, serde_json::to_vec(&body).unwrap_or_default()).into_response();
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        response
    }
}

/// Answers unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such resource")
}

/// Answers a known route called with a method it does not have.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "Method not allowed",
        "this resource does not answer this method",
    )
}

/// Turns an error answered in another form (an extractor's or a layer's plain-text rejection,
/// such as axum's body limit) into a problem, so that every error is
/// `application/problem+json`; its text becomes the detail. The handlers answer problems
/// themselves: one that reaches here is logged, to be answered at its source.
pub async fn problems_only(response: Response) -> Response {
    let status = response.status();
    let is_problem = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if !(status.is_client_error() || status.is_server_error()) || is_problem {
        return response;
    }
    let (parts, body) = response.into_parts();
    // Rejection texts are short; a longer body is cut, never buffered whole.
    let text = match axum::body::to_bytes(body, 4096).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    tracing::warn!(status = status.as_u16(), detail = %text, "an error not answered as a problem was converted");
    let (kind, title) = match status {
        StatusCode::BAD_REQUEST => ("invalid-request", "Invalid request"),
        StatusCode::PAYLOAD_TOO_LARGE => ("too-large", "Request too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ("unsupported-media-type", "Unsupported media type"),
        StatusCode::UNPROCESSABLE_ENTITY => ("invalid-request", "Invalid request"),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "Request timeout"),
        s if s.is_server_error() => ("internal", "Internal error"),
        _ => ("error", "Error"),
    };
    let detail = if text.is_empty() { status.canonical_reason().unwrap_or("error").to_owned() } else { text };
    let mut converted = ApiError::new(status, kind, title, detail).into_response();
    // Keep what the rejection said beside its body (`Allow`, `Retry-After`, ...).
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            converted.headers_mut().insert(name.clone(), value.clone());
        }
    }
    converted
}
