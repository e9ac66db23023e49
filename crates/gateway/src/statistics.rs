//! Funder statistics: `GET /v1/statistics` (role `coordinator`: every organisation, per
//! authority, per organisation or in total) and `GET /v1/orgs/{org}/statistics` (role `org`:
//! its own). Anonymous: any cell with fewer than five people is suppressed. JSON by default;
//! CSV with `?format=csv` or `Accept: text/csv`.

use crate::ValidQuery;
use crate::org_views::csv_response;
use crate::{AppState, auth::Authenticated, error::ApiError};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, NaiveDate};
use relais_domain::OrgId;
use relais_projections::access;
use relais_projections::statistics::{self, Grouping, MEASURES, MIN_PEOPLE, Period, StatsQuery};
use serde::Deserialize;
use serde_json::json;

/// Query of the statistics.
#[derive(Debug, Deserialize)]
pub struct StatsParams {
    period: Option<String>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
    group_by: Option<String>,
    org: Option<String>,
    authority: Option<String>,
    measure: Option<String>,
    format: Option<String>,
}

fn wants_csv(p: &StatsParams, headers: &HeaderMap) -> Result<bool, ApiError> {
    match p.format.as_deref() {
        Some("csv") => return Ok(true),
        Some("json") => return Ok(false),
        Some(_) => return Err(ApiError::invalid_parameter("format", "json or csv")),
        None => {}
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    Ok(accept.split(',').any(|a| a.trim().starts_with("text/csv")))
}

fn parse(p: &StatsParams, today: NaiveDate) -> Result<(Period, NaiveDate, NaiveDate), ApiError> {
    let period = match p.period.as_deref() {
        None => Period::Month,
        Some(s) => Period::parse(s).ok_or_else(|| ApiError::invalid_parameter("period", "month, quarter or year"))?,
    };
    let from = p.from.unwrap_or_else(|| NaiveDate::from_ymd_opt(today.year(), 1, 1).unwrap_or(today));
    let to = p.to.unwrap_or_else(|| period.end_of(today));
    // The days events may name: PostgreSQL keeps no day before 4714 BC.
    for (name, day) in [("from", from), ("to", to)] {
        if !(relais_domain::events::EARLIEST_DATE..=relais_domain::events::LATEST_DATE).contains(&day) {
            return Err(ApiError::invalid_parameter(name, "a day from 0001-01-01 to 9999-12-31"));
        }
    }
    // Whole periods only: two answers whose windows differ by a day inside a cell would tell,
    // by their difference, what one person did that day (each cell passes the threshold).
    if from != period.start_of(from) {
        return Err(ApiError::invalid_parameter("from", format!("the first day of a {}", period.name())));
    }
    if to != period.end_of(to) {
        return Err(ApiError::invalid_parameter("to", format!("the last day of a {}", period.name())));
    }
    if from > to {
        return Err(ApiError::invalid_parameter("from", "on or before `to`"));
    }
    if (to - from).num_days() > 3660 {
        return Err(ApiError::invalid_parameter("from", "at most ten years before `to`"));
    }
    if let Some(m) = &p.measure
        && !MEASURES.contains(&m.as_str())
    {
        return Err(ApiError::invalid_parameter("measure", format!("one of {}", MEASURES.join(", "))));
    }
    Ok((period, from, to))
}

async fn answer(state: &AppState, q: StatsQuery, csv: bool, filename: &str) -> Result<Response, ApiError> {
    let cells = statistics::query(state.db.pool(), &q).await?;
    if csv {
        return Ok(csv_response(statistics::to_csv(&cells), filename));
    }
    Ok(Json(json!({
        "period": q.period.name(),
        "from": q.from,
        "to": q.to,
        "min_people": MIN_PEOPLE,
        "cells": cells,
    }))
    .into_response())
}

/// `GET /v1/statistics`: every organisation's statistics, for the coordinator.
pub async fn all_statistics(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    ValidQuery(p): ValidQuery<StatsParams>,
) -> Result<Response, ApiError> {
    auth.require_coordinator()?;
    let (period, from, to) = parse(&p, state.settings.clock.today())?;
    let grouping = match p.group_by.as_deref() {
        None => Grouping::Authority,
        Some(g) => Grouping::parse(g)
            .ok_or_else(|| ApiError::invalid_parameter("group_by", "authority, organisation or total"))?,
    };
    let org = match &p.org {
        Some(o) => Some(OrgId::parse(o).map_err(|e| ApiError::invalid_parameter("org", e.to_string()))?),
        None => None,
    };
    crate::paging::one_of(
        "authority",
        p.authority.as_deref(),
        &["cocom", "flemish_community", "french_community", "none"],
    )?;
    let csv = wants_csv(&p, &headers)?;
    access::record(
        state.db.pool(),
        &auth.0,
        "statistics.read",
        "statistics",
        json!({ "period": p.period, "from": from, "to": to, "group_by": p.group_by, "org": p.org,
                "authority": p.authority, "measure": p.measure, "csv": csv }),
    )
    .await?;
    let q = StatsQuery { period, from, to, grouping, org, authority: p.authority, measure: p.measure };
    answer(&state, q, csv, "relais-statistics.csv").await
}

/// `GET /v1/orgs/{org}/statistics`: the organisation's own statistics.
pub async fn org_statistics(
    State(state): State<AppState>,
    auth: Authenticated,
    headers: HeaderMap,
    Path(org): Path<String>,
    ValidQuery(p): ValidQuery<StatsParams>,
) -> Result<Response, ApiError> {
    let org = auth.require_org(&org)?;
    let (period, from, to) = parse(&p, state.settings.clock.today())?;
    let across = [("group_by", &p.group_by), ("org", &p.org), ("authority", &p.authority)];
    if let Some((name, _)) = across.iter().find(|(_, value)| value.is_some()) {
        return Err(ApiError::invalid_parameter(
            name,
            "an organisation's statistics are its own: no grouping, nor another organisation or authority",
        ));
    }
    let csv = wants_csv(&p, &headers)?;
    access::record(
        state.db.pool(),
        &auth.0,
        "statistics.read",
        &format!("orgs/{org}/statistics"),
        json!({ "period": p.period, "from": from, "to": to, "measure": p.measure, "csv": csv }),
    )
    .await?;
    let filename = format!("relais-statistics-{org}.csv");
    let q = StatsQuery {
        period,
        from,
        to,
        grouping: Grouping::Organisation,
        org: Some(org),
        authority: None,
        measure: p.measure,
    };
    answer(&state, q, csv, &filename).await
}
