//! Query strings read into typed parameters, with invalid ones answered as problem details
//! (axum's own `Query` answers in plain text).

use crate::error::ApiError;
use axum::extract::{FromRequestParts, Query};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// Typed query parameters; an invalid parameter is a 400 `invalid-parameter` problem naming it.
#[derive(Debug, Clone)]
pub struct ValidQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ValidQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        match Query::<T>::try_from_uri(&parts.uri) {
            Ok(Query(value)) => Ok(Self(value)),
            Err(rejection) => {
                // "Failed to deserialize query string: limit: invalid digit found in string"
                let text = rejection.body_text();
                let detail = text.split_once(": ").map(|(_, rest)| rest).unwrap_or(&text);
                let (name, detail) = match detail.split_once(": ") {
                    Some((name, rest)) if name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') => (name, rest),
                    _ => ("", detail),
                };
                Err(ApiError::invalid_parameter(name, detail.to_owned()))
            }
        }
    }
}

/// Refuses a request whose path segments or query parameters hold a control character (a NUL
/// cannot be stored in PostgreSQL text, so it would otherwise end as a 500) or whose path is
/// not UTF-8 once decoded: a 400 problem naming the parameter (`?case` for the path's
/// `{case}`, as the handlers name path parameters), before any handler runs.
pub async fn reject_control_characters(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let uri = request.uri();
    let bad = |segment: &str| match percent_encoding::percent_decode_str(segment).decode_utf8() {
        Ok(text) => text.chars().any(char::is_control),
        Err(_) => true,
    };
    if let Some(at) = uri.path().split('/').position(bad) {
        // Run after routing: the route's template names the parameter of the bad segment.
        let template = request.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str());
        let name = template.and_then(|t| t.split('/').nth(at));
        let name = name.and_then(|n| n.strip_prefix('{')?.strip_suffix('}')).unwrap_or("path");
        return ApiError::invalid_parameter(name, "control characters and bytes that are not UTF-8 are not allowed")
            .into_response();
    }
    if let Some(query) = uri.query() {
        for (name, value) in form_urlencoded::parse(query.as_bytes()) {
            if name.chars().chain(value.chars()).any(char::is_control) {
                return ApiError::invalid_parameter(
                    &name.replace(char::is_control, ""),
                    "control characters are not allowed",
                )
                .into_response();
            }
        }
    }
    next.run(request).await
}
