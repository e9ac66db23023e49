//! Cursor pagination shared by the listings: a cursor is the sort key of the last item of a
//! page, as JSON, base64url-encoded. Clients pass it back unchanged.

use crate::error::ApiError;
use base64::Engine;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encodes the sort key of the last item of a page.
pub fn encode<T: Serialize>(key: &T) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(key).unwrap_or_default())
}

/// Decodes a cursor given back by a client; a foreign or damaged cursor is a 400.
pub fn decode<T: DeserializeOwned>(cursor: Option<&str>) -> Result<Option<T>, ApiError> {
    let Some(c) = cursor else { return Ok(None) };
    let bad = || ApiError::invalid_parameter("cursor", "not a cursor of this listing");
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?;
    serde_json::from_slice(&raw).map(Some).map_err(|_| bad())
}

/// The page size: `default` when absent, refused outside 1..=`max`.
pub fn limit(asked: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    let limit = asked.unwrap_or(default);
    if !(1..=max).contains(&limit) {
        return Err(ApiError::invalid_parameter("limit", format!("between 1 and {max}")));
    }
    Ok(limit)
}

/// One page of a listing.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// The cursor of the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// A page of `items`; if it is full, the next cursor is the key of its last item.
    pub fn of<K: Serialize>(items: Vec<T>, limit: i64, key: impl Fn(&T) -> K) -> Self {
        let next_cursor = if items.len() as i64 == limit { items.last().map(|i| encode(&key(i))) } else { None };
        Self { items, next_cursor }
    }
}

/// Checks an optional value against a closed list of codes.
pub fn one_of(name: &str, value: Option<&str>, allowed: &[&str]) -> Result<(), ApiError> {
    match value {
        Some(v) if !allowed.contains(&v) => {
            Err(ApiError::invalid_parameter(name, format!("one of {}", allowed.join(", "))))
        }
        _ => Ok(()),
    }
}
