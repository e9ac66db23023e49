//! `GET /v1/orgs/{org}/quarantine`: the organisation's events that the log holds but no view
//! applies, with the reason (invalid, a rule broken, a duplicate, personal data in the clear,
//! ...), so that its systems can correct them with new events.

use crate::{AppState, auth::Authenticated, error::ApiError};
use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;

/// Query of the quarantine listing.
#[derive(Debug, Deserialize)]
pub struct QuarantineQuery {
    after: Option<i64>,
    limit: Option<i64>,
}

/// Lists the organisation's quarantined events, oldest first; `next_after` continues.
pub async fn list(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(org): Path<String>,
    crate::ValidQuery(q): crate::ValidQuery<QuarantineQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let org = auth.require_org(&org)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid_parameter("limit", "between 1 and 1000"));
    }
    relais_projections::access::record(
        state.db.pool(),
        &auth.0,
        "quarantine.list",
        &format!("orgs/{org}/quarantine"),
        serde_json::json!({ "after": q.after, "limit": limit }),
    )
    .await?;
    let items =
        relais_projections::quarantine::list_for_org(state.db.pool(), &org, q.after.unwrap_or(0), limit).await?;
    let next_after = if items.len() as i64 == limit { items.last().map(|i| i.seq) } else { None };
    Ok(Json(serde_json::json!({ "items": items, "next_after": next_after })))
}
