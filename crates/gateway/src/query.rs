//! Query strings read into typed parameters, with invalid ones answered as problem details
//! (axum's own `Query` answers in plain text).

use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

/// Typed query parameters; an invalid parameter, or one the endpoint does not know (a typo in a
/// filter would otherwise list everything unfiltered), is a 400 `invalid-parameter` problem
/// naming it.
#[derive(Debug, Clone)]
pub struct ValidQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ValidQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parse(parts.uri.query().unwrap_or_default()).map(Self)
    }
}

/// Reads a query string into `T`, refusing unknown parameters (a map takes every parameter).
fn parse<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let mut unknown = Vec::new();
    let pairs = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
    let mut note = |path: serde_ignored::Path<'_>| {
        unknown.push(match path {
            serde_ignored::Path::Map { parent: serde_ignored::Path::Root, key } => key,
            other => other.to_string(),
        })
    };
    let tracked = serde_ignored::Deserializer::new(pairs, &mut note);
    let parsed = serde_path_to_error::deserialize(tracked);
    if let Some(name) = unknown.first() {
        return Err(ApiError::invalid_parameter(
            name,
            "unknown parameter for this endpoint (see the OpenAPI document)",
        ));
    }
    parsed.map_err(|e| {
        let detail = e.inner().to_string();
        let path = e.path().to_string();
        // An error outside any one parameter (a repeated one) has the path `.`; serde names
        // the parameter in its message ("duplicate field `limit`").
        let name = match path.as_str() {
            "." => detail.split('`').nth(1).unwrap_or_default(),
            name => name,
        };
        ApiError::invalid_parameter(name, detail.clone())
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::collections::HashMap;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Listing {
        status: Option<String>,
        limit: Option<i64>,
        #[serde(rename = "type")]
        kind: Option<String>,
    }

    /// The problem's pointer: its display is `pointer: detail`.
    fn pointer(e: ApiError) -> String {
        e.to_string().split_once(": ").map(|(p, _)| p.to_owned()).unwrap_or_default()
    }

    #[test]
    fn known_parameters_are_read() {
        let q: Listing = parse("status=open&limit=5&type=relais.case.opened").expect("valid");
        assert_eq!(q, Listing { status: Some("open".into()), limit: Some(5), kind: Some("relais.case.opened".into()) });
        let none: Listing = parse("").expect("no parameters");
        assert_eq!(none, Listing { status: None, limit: None, kind: None });
    }

    #[test]
    fn an_unknown_parameter_is_refused_by_name() {
        let e = parse::<Listing>("stauts=closed").expect_err("a typo");
        assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(pointer(e), "?stauts");
    }

    #[test]
    fn a_parameter_of_the_wrong_type_is_refused_by_name() {
        let e = parse::<Listing>("limit=many").expect_err("not a number");
        assert_eq!(pointer(e), "?limit");
    }

    #[test]
    fn a_repeated_parameter_is_refused() {
        let e = parse::<Listing>("limit=5&limit=6").expect_err("twice");
        assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST);
        assert_eq!(pointer(e), "?limit");
    }

    #[test]
    fn a_map_takes_every_parameter() {
        let q: HashMap<String, String> = parse("as_of=2026-01-01T00:00:00Z&basis=log").expect("a map");
        assert_eq!(q.len(), 2);
    }
}
