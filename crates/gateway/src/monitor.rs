//! The shared continuity monitor (role `coordinator`): alerts and persons, by linkage key,
//! never with a case id or a client reference of any organisation.

use crate::ValidQuery;
use crate::paging::{self, Page};
use crate::{AppState, auth::Authenticated, error::ApiError};
use axum::Json;
use axum::extract::State;
use chrono::{DateTime, Utc};
use relais_projections::access;
use relais_projections::monitor::{self, ALERT_KINDS, AlertFilter, AlertView, PersonView};
use serde::Deserialize;
use serde_json::json;

/// Query of the alerts listing.
#[derive(Debug, Deserialize)]
pub struct AlertQuery {
    state: Option<String>,
    kind: Option<String>,
    org: Option<String>,
    linkage_key: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /v1/monitor/alerts`: alerts, longest open first, each with how long it has been open.
/// `state`: `open` (default), `closed` or `all`.
pub async fn alerts(
    State(state): State<AppState>,
    auth: Authenticated,
    ValidQuery(q): ValidQuery<AlertQuery>,
) -> Result<Json<Page<AlertView>>, ApiError> {
    auth.require_coordinator()?;
    paging::one_of("state", q.state.as_deref(), &["open", "closed", "all"])?;
    paging::one_of("kind", q.kind.as_deref(), ALERT_KINDS)?;
    if let Some(o) = &q.org
        && relais_domain::OrgId::parse(o).is_err()
    {
        return Err(ApiError::invalid_parameter("org", "an organisation id"));
    }
    if let Some(lk) = &q.linkage_key
        && relais_domain::events::LinkageKey::parse(lk).is_err()
    {
        return Err(ApiError::invalid_parameter("linkage_key", "64 lower-case hexadecimal characters"));
    }
    let limit = paging::limit(q.limit, 100, 1000)?;
    let after: Option<(DateTime<Utc>, String)> = paging::decode(q.cursor.as_deref())?;
    access::record(
        state.db.pool(),
        &auth.0,
        "monitor.alerts",
        "monitor/alerts",
        json!({ "state": q.state, "kind": q.kind, "org": q.org, "linkage_key": q.linkage_key.is_some(),
                "cursor": q.cursor, "limit": limit }),
    )
    .await?;
    let filter = AlertFilter {
        state: q.state,
        kind: q.kind,
        org: q.org,
        linkage_key: q.linkage_key,
        after,
        limit,
        today: state.settings.clock.today(),
    };
    let rows = monitor::list_alerts(state.db.pool(), &filter).await?;
    // The persons the alerts are about: recorded against each organisation's case, as for the
    // persons listing.
    let mut persons: Vec<String> = rows.iter().map(|a| a.linkage_key.clone()).collect();
    persons.sort_unstable();
    persons.dedup();
    let shown: Vec<String> = monitor::member_cases(state.db.pool(), &persons, filter.today)
        .await?
        .into_iter()
        .map(|(org, case)| format!("orgs/{org}/cases/{case}/monitor"))
        .collect();
    access::record_each(state.db.pool(), &auth.0, "monitor.alert", &shown, json!({ "via": "monitor/alerts" })).await?;
    let now = state.settings.clock.now();
    let items: Vec<AlertView> = rows.into_iter().map(|a| AlertView::of(a, now)).collect();
    Ok(Json(Page::of(items, limit, |a| (a.opened_at, a.id.clone()))))
}

/// Query of the persons listing.
#[derive(Debug, Deserialize)]
pub struct PersonQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /v1/monitor/persons`: the consented persons, by linkage key, with the organisations
/// helping them (status, detention, release, after-care), their open referrals and the number
/// of open alerts.
pub async fn persons(
    State(state): State<AppState>,
    auth: Authenticated,
    ValidQuery(q): ValidQuery<PersonQuery>,
) -> Result<Json<Page<PersonView>>, ApiError> {
    auth.require_coordinator()?;
    let limit = paging::limit(q.limit, 100, 500)?;
    let after: Option<String> = paging::decode(q.cursor.as_deref())?;
    access::record(
        state.db.pool(),
        &auth.0,
        "monitor.persons",
        "monitor/persons",
        json!({ "cursor": q.cursor, "limit": limit }),
    )
    .await?;
    let items = monitor::list_persons(state.db.pool(), state.settings.clock.today(), after.as_deref(), limit).await?;
    // Each person shown is recorded against each organisation's case, before the answer, so
    // that the client's subject access export shows that the monitor was read about them.
    let shown: Vec<String> = items
        .iter()
        .flat_map(|p| p.organisations.iter().map(|m| format!("orgs/{}/cases/{}/monitor", m.organisation, m.case_id)))
        .collect();
    access::record_each(state.db.pool(), &auth.0, "monitor.person", &shown, json!({ "via": "monitor/persons" }))
        .await?;
    Ok(Json(Page::of(items, limit, |p| p.linkage_key.clone())))
}
