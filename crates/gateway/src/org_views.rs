//! The views each organisation works from, readable only by that organisation (role `org`):
//! case timeline, referrals out and in, coming up, group activities, work list. Every read is
//! recorded in the access log before it is answered.

use crate::ValidQuery;
use crate::paging::{self, Page};
use crate::{AppState, auth::Authenticated, error::ApiError};
use axum::Json;
use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Router, response::Response};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use relais_projections::referrals::{Direction, ReferralFilter, ReferralView};
use relais_projections::{access, activities, caseload, referrals, timeline, worklist};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// The routes of this module, merged into the router.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/orgs/{org}/cases/{case}/timeline", get(case_timeline))
        .route("/v1/orgs/{org}/referrals", get(list_referrals))
        .route("/v1/orgs/{org}/coming-up", get(coming_up))
        .route("/v1/orgs/{org}/activities", get(list_activities))
        .route("/v1/orgs/{org}/activities/{activity}", get(get_activity))
        .route("/v1/orgs/{org}/worklist", get(worklist))
        .route("/v1/orgs/{org}/statistics", get(crate::statistics::org_statistics))
        .route("/v1/statistics", get(crate::statistics::all_statistics))
        .route("/v1/monitor/alerts", get(crate::monitor::alerts))
        .route("/v1/monitor/persons", get(crate::monitor::persons))
}

/// Query of a case timeline.
#[derive(Debug, Deserialize)]
pub struct TimelineQuery {
    #[serde(rename = "type")]
    event_type: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// One event of a case timeline, as answered.
#[derive(Debug, Serialize)]
pub struct TimelineItem {
    seq: i64,
    id: uuid::Uuid,
    #[serde(rename = "type")]
    event_type: String,
    schemaversion: i32,
    occurred_at: DateTime<Utc>,
    recorded_at: DateTime<Utc>,
    actor: String,
    personal: &'static str,
    data: Value,
}

/// `GET /v1/orgs/{org}/cases/{case}/timeline`: every event of the case, in order, with who
/// recorded it. Personal fields are shown while the client's key exists (`personal`:
/// `present`), and are gone once the client is erased (`erased`).
pub async fn case_timeline(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((org, case)): Path<(String, String)>,
    ValidQuery(q): ValidQuery<TimelineQuery>,
) -> Result<Json<Page<TimelineItem>>, ApiError> {
    let org = auth.require_org(&org)?;
    let limit = paging::limit(q.limit, 100, 1000)?;
    let after: i64 = paging::decode(q.cursor.as_deref())?.unwrap_or(0);
    if let Some(t) = &q.event_type
        && relais_domain::events::spec(t).is_none()
    {
        return Err(ApiError::invalid_parameter("type", "an event type of the catalogue"));
    }
    access::record(
        state.db.pool(),
        &auth.0,
        "case.timeline",
        &format!("orgs/{org}/cases/{case}/timeline"),
        json!({ "type": q.event_type, "cursor": q.cursor, "limit": limit }),
    )
    .await?;
    let rows = timeline::list(state.db.pool(), &org, &case, after, q.event_type.as_deref(), limit).await?;
    // An empty first page is a case without events, that is no case; with a type filter, the
    // case may exist without events of that type.
    if rows.is_empty() && after == 0 {
        let exists = match q.event_type {
            None => false,
            Some(_) => !timeline::list(state.db.pool(), &org, &case, 0, None, 1).await?.is_empty(),
        };
        if !exists {
            return Err(ApiError::not_found("no such case"));
        }
    }
    let items: Vec<TimelineItem> = rows
        .into_iter()
        .map(|r| TimelineItem {
            seq: r.seq,
            id: r.event_id,
            event_type: r.event_type.clone(),
            schemaversion: r.schema_version,
            occurred_at: r.occurred_at,
            recorded_at: r.recorded_at,
            actor: r.actor.clone(),
            personal: r.personal_state(),
            data: r.full_data(),
        })
        .collect();
    Ok(Json(Page::of(items, limit, |i| i.seq)))
}

/// Query of the referrals listing.
#[derive(Debug, Deserialize)]
pub struct ReferralQuery {
    direction: Option<String>,
    stage: Option<String>,
    open: Option<bool>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /v1/orgs/{org}/referrals?direction=out|in`: the organisation's referrals out (made by
/// it; the default) or in (made to it), most recent first, with stage and age. The receiver
/// sees of a referral only what it carries: never the sender's case id or client reference.
pub async fn list_referrals(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(org): Path<String>,
    ValidQuery(q): ValidQuery<ReferralQuery>,
) -> Result<Json<Page<ReferralView>>, ApiError> {
    let org = auth.require_org(&org)?;
    let direction = match q.direction.as_deref() {
        None | Some("out") => Direction::Out,
        Some("in") => Direction::In,
        Some(_) => return Err(ApiError::invalid_parameter("direction", "out or in")),
    };
    paging::one_of("stage", q.stage.as_deref(), referrals::STAGES)?;
    let limit = paging::limit(q.limit, 50, 500)?;
    let after: Option<(DateTime<Utc>, String)> = paging::decode(q.cursor.as_deref())?;
    access::record(
        state.db.pool(),
        &auth.0,
        "referrals.list",
        &format!("orgs/{org}/referrals"),
        json!({ "direction": q.direction, "stage": q.stage, "open": q.open, "cursor": q.cursor, "limit": limit }),
    )
    .await?;
    let filter = ReferralFilter { direction, stage: q.stage, open: q.open, after, limit };
    let rows = referrals::list(state.db.pool(), &org, &filter).await?;
    let now = state.settings.clock.now();
    let items: Vec<ReferralView> = rows.into_iter().map(|r| ReferralView::of(r, direction, now)).collect();
    Ok(Json(Page::of(items, limit, |r| (r.made_at, r.referral_id.clone()))))
}

/// Query of the coming-up listing.
#[derive(Debug, Deserialize)]
pub struct ComingUpQuery {
    days: Option<i64>,
    item: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /v1/orgs/{org}/coming-up?days=N`: scheduled releases, prepared furloughs and escorted
/// outings of the organisation's cases from today (Brussels) to N days ahead (default 14).
pub async fn coming_up(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(org): Path<String>,
    ValidQuery(q): ValidQuery<ComingUpQuery>,
) -> Result<Json<Page<caseload::ComingUpRow>>, ApiError> {
    let org = auth.require_org(&org)?;
    let days = q.days.unwrap_or(14);
    if !(0..=366).contains(&days) {
        return Err(ApiError::invalid_parameter("days", "between 0 and 366"));
    }
    paging::one_of("item", q.item.as_deref(), &["release", "leave", "outing"])?;
    let limit = paging::limit(q.limit, 100, 1000)?;
    let after: Option<(NaiveDate, String, String, i64)> = paging::decode(q.cursor.as_deref())?;
    access::record(
        state.db.pool(),
        &auth.0,
        "coming_up.list",
        &format!("orgs/{org}/coming-up"),
        json!({ "days": days, "item": q.item, "cursor": q.cursor, "limit": limit }),
    )
    .await?;
    let today = state.settings.clock.today();
    let rows = caseload::coming_up(
        state.db.pool(),
        &org,
        today,
        today + Duration::days(days),
        q.item.as_deref(),
        after.as_ref(),
        limit,
    )
    .await?;
    Ok(Json(Page::of(rows, limit, |r| (r.on_date, r.case_id.clone(), r.item.clone(), r.item_seq))))
}

/// Query of the activities listing.
#[derive(Debug, Deserialize)]
pub struct ActivityQuery {
    kind: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /v1/orgs/{org}/activities`: the group activities the organisation organised, recorded
/// on or is a partner of, most recently active first, with sessions, evaluations and counts.
pub async fn list_activities(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(org): Path<String>,
    ValidQuery(q): ValidQuery<ActivityQuery>,
) -> Result<Json<Page<activities::ActivityRow>>, ApiError> {
    let org = auth.require_org(&org)?;
    paging::one_of("kind", q.kind.as_deref(), &["formative", "psychosocial", "sociocultural"])?;
    let limit = paging::limit(q.limit, 50, 500)?;
    let after: Option<(DateTime<Utc>, String)> = paging::decode(q.cursor.as_deref())?;
    access::record(
        state.db.pool(),
        &auth.0,
        "activities.list",
        &format!("orgs/{org}/activities"),
        json!({ "kind": q.kind, "cursor": q.cursor, "limit": limit }),
    )
    .await?;
    let rows = activities::list(state.db.pool(), &org, q.kind.as_deref(), after.as_ref(), limit).await?;
    Ok(Json(Page::of(rows, limit, |r| (r.last_event_at, r.activity_id.clone()))))
}

/// `GET /v1/orgs/{org}/activities/{activity}`: one activity with the organisation's own
/// participants (roster), attendance per session, dropouts still waiting for their feedback
/// conversation, and evaluations.
pub async fn get_activity(
    State(state): State<AppState>,
    auth: Authenticated,
    Path((org, activity)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let org = auth.require_org(&org)?;
    access::record(state.db.pool(), &auth.0, "activity.read", &format!("orgs/{org}/activities/{activity}"), json!({}))
        .await?;
    let (row, roster) = activities::get(state.db.pool(), &org, &activity)
        .await?
        .ok_or_else(|| ApiError::not_found("no such activity"))?;
    let waiting: Vec<&activities::ParticipantRow> =
        roster.iter().filter(|p| p.status == "dropped_out" && p.feedback_at.is_none()).collect();
    Ok(Json(json!({ "activity": row, "roster": roster, "dropouts_waiting_for_feedback": waiting })))
}

/// Query of the work list.
#[derive(Debug, Deserialize)]
pub struct WorklistQuery {
    kind: Option<String>,
    release_days: Option<i64>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// `GET /v1/orgs/{org}/worklist`: what needs action now, longest waiting first: referrals to
/// answer, accepted referrals without first contact, releases without after-care, dropouts
/// without feedback.
pub async fn worklist(
    State(state): State<AppState>,
    auth: Authenticated,
    Path(org): Path<String>,
    ValidQuery(q): ValidQuery<WorklistQuery>,
) -> Result<Json<Page<worklist::WorkItem>>, ApiError> {
    let org = auth.require_org(&org)?;
    paging::one_of("kind", q.kind.as_deref(), worklist::KINDS)?;
    let release_days = q.release_days.unwrap_or(14);
    if !(0..=366).contains(&release_days) {
        return Err(ApiError::invalid_parameter("release_days", "between 0 and 366"));
    }
    let limit = paging::limit(q.limit, 100, 1000)?;
    let after: Option<(DateTime<Utc>, String, String)> = paging::decode(q.cursor.as_deref())?;
    access::record(
        state.db.pool(),
        &auth.0,
        "worklist.list",
        &format!("orgs/{org}/worklist"),
        json!({ "kind": q.kind, "release_days": release_days, "cursor": q.cursor, "limit": limit }),
    )
    .await?;
    let today = state.settings.clock.today();
    let items =
        worklist::list(state.db.pool(), &org, today, release_days, q.kind.as_deref(), after.as_ref(), limit).await?;
    Ok(Json(Page::of(items, limit, |i| (i.since, i.kind.clone(), i.item_key.clone()))))
}

/// A CSV response.
pub fn csv_response(body: String, filename: &str) -> Response {
    use axum::http::{HeaderValue, header};
    use axum::response::IntoResponse;
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
        response.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    response
}
