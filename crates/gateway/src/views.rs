//! Health, readiness and the organisation views.

use crate::{AppState, auth::Authenticated, error::ApiError, query::ValidQuery};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use base64::Engine;
use chrono::{DateTime, Utc};
use relais_projections::caseload::{self, CaseFilter, CaseRow};
use serde::{Deserialize, Serialize};

/// `GET /healthz`: the process is alive.
pub async fn healthz() -> &'static str {
    "ok"
}

/// `GET /readyz`: NATS and PostgreSQL are reachable.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let nats = state.log.client().connection_state() == async_nats::connection::State::Connected;
    let db = state.db.is_ready().await;
    if nats && db {
        Ok(Json(serde_json::json!({ "nats": "ok", "postgres": "ok" })))
    } else {
        Err(ApiError::unavailable(format!(
            "nats: {}, postgres: {}",
            if nats { "ok" } else { "unreachable" },
            if db { "ok" } else { "unreachable" }
        )))
    }
}

/// Query of the caseload listing.
#[derive(Debug, Deserialize)]
pub struct CaseQuery {
    status: Option<String>,
    in_detention: Option<bool>,
    open: Option<bool>,
    legal_status: Option<String>,
    language: Option<String>,
    life_domain: Option<String>,
    active_within_days: Option<i64>,
    limit: Option<i64>,
    cursor: Option<String>,
}

#[derive(Serialize)]
pub struct Page<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

const STATUSES: &[&str] = caseload::STATUSES;

fn encode_cursor(at: DateTime<Utc>, id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}|{id}", at.timestamp_micros()))
}

fn decode_cursor(c: &str) -> Option<(DateTime<Utc>, String)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(c).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (micros, id) = text.split_once('|')?;
    let micros: i64 = micros.parse().ok()?;
    // What PostgreSQL can take: a moment within the years 1 to 9999, an id without NUL.
    let admissible = relais_domain::envelope::EARLIEST_TIME_US..=relais_domain::envelope::LATEST_TIME_US;
    if !admissible.contains(&micros) || id.contains('\0') {
        return None;
    }
    Some((DateTime::from_timestamp_micros(micros)?, id.to_owned()))
}

/// `GET /v1/orgs/{org}/cases`: the organisation's caseload, most recently active first.
pub async fn list_cases(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(org): Path<String>,
    ValidQuery(q): ValidQuery<CaseQuery>,
) -> Result<Json<Page<CaseRow>>, ApiError> {
    let org = auth.require_org(&org)?;
    if let Some(s) = &q.status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::invalid_parameter("status", format!("one of {}", STATUSES.join(", "))));
    }
    crate::paging::one_of("legal_status", q.legal_status.as_deref(), &["suspect", "convict", "internee"])?;
    if let Some(l) = &q.language
        && relais_domain::reference::Language::parse(l).is_err()
    {
        return Err(ApiError::invalid_parameter("language", "an ISO 639 code (2 or 3 lower-case letters)"));
    }
    if let Some(d) = &q.life_domain {
        use relais_domain::reference::{CodeList, LifeDomain};
        if !LifeDomain::ALL.iter().any(|x| x.code() == d) {
            return Err(ApiError::invalid_parameter("life_domain", "a life domain code of the catalogue"));
        }
    }
    let active_since = match q.active_within_days {
        Some(d) if (0..=3660).contains(&d) => Some(state.settings.clock.now() - chrono::Duration::days(d)),
        Some(_) => return Err(ApiError::invalid_parameter("active_within_days", "between 0 and 3660")),
        None => None,
    };
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid_parameter("limit", "between 1 and 500"));
    }
    let after = match &q.cursor {
        Some(c) => Some(
            decode_cursor(c).ok_or_else(|| ApiError::invalid_parameter("cursor", "not a cursor of this listing"))?,
        ),
        None => None,
    };
    relais_projections::access::record(
        state.db.pool(),
        &auth.0,
        "cases.list",
        &format!("orgs/{org}/cases"),
        serde_json::json!({ "status": q.status, "in_detention": q.in_detention, "open": q.open,
            "legal_status": q.legal_status, "language": q.language, "life_domain": q.life_domain,
            "active_within_days": q.active_within_days, "cursor": q.cursor, "limit": limit }),
    )
    .await?;
    let filter = CaseFilter {
        status: q.status,
        in_detention: q.in_detention,
        open: q.open,
        legal_status: q.legal_status,
        language: q.language,
        life_domain: q.life_domain,
        active_since,
        after,
        limit,
    };
    let items = caseload::list(state.db.pool(), &org, &filter).await?;
    let next_cursor = if items.len() as i64 == limit {
        items.last().map(|r| encode_cursor(r.last_event_at, &r.case_id))
    } else {
        None
    };
    Ok(Json(Page { items, next_cursor }))
}

/// `GET /v1/orgs/{org}/cases/{case}`: one case of the organisation's caseload; with
/// `?as_of=`, the case as it stood then, rebuilt from the log (see `audit::case_as_of`).
pub async fn get_case(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((org, case)): Path<(String, String)>,
    crate::ValidQuery(q): crate::ValidQuery<std::collections::HashMap<String, String>>,
) -> Result<axum::response::Response, ApiError> {
    if q.contains_key("as_of") {
        return crate::audit::case_as_of(&state, &auth, &org, &case, &q).await;
    }
    crate::audit::unknown_parameters(&q, &["as_of"])?;
    let org = auth.require_org(&org)?;
    relais_projections::access::record(
        state.db.pool(),
        &auth.0,
        "case.read",
        &format!("orgs/{org}/cases/{case}"),
        serde_json::json!({}),
    )
    .await?;
    let row = caseload::get(state.db.pool(), &org, &case).await?.ok_or_else(|| ApiError::not_found("no such case"))?;
    Ok(axum::response::IntoResponse::into_response((StatusCode::OK, Json(row))))
}
