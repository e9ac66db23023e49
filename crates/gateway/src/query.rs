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
