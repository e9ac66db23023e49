//! The auditors' endpoints: replay of the log, the public key of signed checkpoints, the
//! access log, and a case as it stood at a moment (`?as_of=` on the case endpoint).

use crate::ValidQuery;
use crate::{AppState, auth::Authenticated, error::ApiError};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use relais_audit::VerifyingKey;
use relais_domain::{AggregateKind, AggregateRef, OrgId};
use relais_projections::access::{self, AccessFilter, AccessRecord};
use relais_projections::audit::as_of::{self, AsOfBasis};
use relais_projections::audit::replay::{self, ReplayFilter};
use serde::Serialize;
use serde_json::json;
use std::collections::HashMap;

/// What the auditors' endpoints need beyond the common state.
#[derive(Clone, Debug)]
pub struct AuditState {
    /// The event stream (read side).
    pub stream: async_nats::jetstream::stream::Stream,
    /// The key that verifies checkpoints signed now.
    pub public_key: VerifyingKey,
    /// Keys that signed earlier checkpoints (after a rotation).
    pub retired_public_keys: Vec<VerifyingKey>,
}

/// Media type of a replay.
pub const NDJSON: &str = "application/x-ndjson";

/// Refuses a parameter of `q` not in `known`, naming it.
pub(crate) fn unknown_parameters(q: &HashMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    match q.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(ApiError::invalid_parameter(k, format!("unknown parameter; known: {}", known.join(", ")))),
        None => Ok(()),
    }
}

fn time_param(q: &HashMap<String, String>, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
    q.get(name)
        .map(|t| {
            DateTime::parse_from_rfc3339(t)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::invalid_parameter(name, "an RFC 3339 time, for example 2026-03-02T09:30:00Z"))
        })
        .transpose()
}

fn seq_param(q: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    q.get(name)
        .map(|t| {
            // PostgreSQL keeps sequences as i64: a larger one would wrap to a negative bound.
            t.parse::<u64>()
                .ok()
                .filter(|s| (1..=i64::MAX as u64).contains(s))
                .ok_or_else(|| ApiError::invalid_parameter(name, format!("a sequence number from 1 to {}", i64::MAX)))
        })
        .transpose()
}

/// Reads a replay filter from query parameters (the HTTP API and the command line share it).
pub fn replay_filter(q: &HashMap<String, String>) -> Result<ReplayFilter, ApiError> {
    unknown_parameters(q, &["org", "type", "case", "from", "to", "from_seq", "to_seq"])?;
    let org = q
        .get("org")
        .map(|o| OrgId::parse(o).map_err(|e| ApiError::invalid_parameter("org", e.to_string())))
        .transpose()?;
    let event_type = match q.get("type") {
        Some(t) if relais_domain::events::spec(t).is_none() => {
            return Err(ApiError::invalid_parameter("type", "not an event type of the catalogue"));
        }
        t => t.cloned(),
    };
    let case = match q.get("case") {
        Some(c) => {
            AggregateRef::new(AggregateKind::Cases, c)
                .map_err(|e| ApiError::invalid_parameter("case", e.to_string()))?;
            Some(c.clone())
        }
        None => None,
    };
    let filter = ReplayFilter {
        org,
        event_type,
        case,
        from: time_param(q, "from")?,
        to: time_param(q, "to")?,
        from_seq: seq_param(q, "from_seq")?,
        to_seq: seq_param(q, "to_seq")?,
        personal_of: None,
    };
    if let (Some(f), Some(t)) = (filter.from, filter.to)
        && t < f
    {
        return Err(ApiError::invalid_parameter("to", "after `from`"));
    }
    if let (Some(f), Some(t)) = (filter.from_seq, filter.to_seq)
        && t < f
    {
        return Err(ApiError::invalid_parameter("to_seq", "at least `from_seq`"));
    }
    Ok(filter)
}

/// `GET /v1/audit/events`: the log as NDJSON (auditors). Streamed: memory stays constant and
/// the first lines leave at once; it ends at the stream's last sequence at the request.
#[tracing::instrument(name = "audit.replay", skip_all)]
pub async fn replay_events(
    State(state): State<AppState>,
    auth: Authenticated,
    ValidQuery(q): ValidQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    auth.require_auditor()?;
    let mut filter = replay_filter(&q)?;
    filter.personal_of = auth.audited_org();
    // The selection (what the file's header states), and whose personal fields were opened.
    let mut detail = filter.to_json();
    detail["personal_of"] = json!(filter.personal_of.as_ref().map(|o| o.to_string()));
    access::record(state.db.pool(), &auth.0, "audit.replay", "audit/events", detail).await?;
    let replay = replay::open(state.db.pool(), &state.keys, &state.audit.stream, filter).await.map_err(|e| {
        tracing::error!(error = %e, "replay could not start");
        ApiError::unavailable("the event log cannot be read now; retry later")
    })?;
    let mut response = Body::from_stream(replay.into_ndjson()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    // Personal data: no cache keeps a copy.
    response.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `GET /v1/audit/public-key`: the ed25519 key that verifies signed checkpoints (public).
pub async fn public_key(State(state): State<AppState>) -> Json<serde_json::Value> {
    let key = |k: &VerifyingKey| json!({ "key_id": k.key_id(), "public_key": k.to_base64() });
    Json(json!({
        "algorithm": "ed25519",
        "key_id": state.audit.public_key.key_id(),
        "public_key": state.audit.public_key.to_base64(),
        "retired": state.audit.retired_public_keys.iter().map(key).collect::<Vec<_>>(),
    }))
}

/// A page of access records.
#[derive(Serialize)]
pub struct AccessPage {
    items: Vec<AccessRecord>,
    next_cursor: Option<String>,
}

/// `GET /v1/audit/access`: the access records, oldest first (auditors). Filters: `org` (the
/// reading token's organisation), `resource` (a prefix, for example `orgs/apo/cases/c-1`),
/// `cursor`, `limit`.
pub async fn access_records(
    State(state): State<AppState>,
    auth: Authenticated,
    ValidQuery(q): ValidQuery<HashMap<String, String>>,
) -> Result<Json<AccessPage>, ApiError> {
    auth.require_auditor()?;
    unknown_parameters(&q, &["org", "resource", "cursor", "limit"])?;
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| ApiError::invalid_parameter("limit", "between 1 and 1000"))?,
        None => 100,
    };
    let after_id = q
        .get("cursor")
        .map(|c| c.parse::<i64>().map_err(|_| ApiError::invalid_parameter("cursor", "not a cursor of this listing")))
        .transpose()?;
    // An organisation id that cannot be one is a typo, not an empty list.
    let org = q
        .get("org")
        .map(|o| OrgId::parse(o).map(|o| o.to_string()).map_err(|e| ApiError::invalid_parameter("org", e.to_string())))
        .transpose()?;
    // An auditor of a service sees the records about that service and those of its tokens.
    let scope = auth.audited_org().map(|o| o.to_string());
    let filter = AccessFilter { resource_prefix: q.get("resource").cloned(), org, scope, after_id, limit };
    access::record(
        state.db.pool(),
        &auth.0,
        "audit.access.list",
        "audit/access",
        json!({ "org": filter.org, "resource": filter.resource_prefix, "cursor": after_id, "limit": limit }),
    )
    .await?;
    let items = access::list(state.db.pool(), &filter).await?;
    let next_cursor = (items.len() as i64 == limit).then(|| items.last().map(|r| r.id.to_string())).flatten();
    Ok(Json(AccessPage { items, next_cursor }))
}

/// `GET /v1/orgs/{org}/cases/{case}?as_of=…[&basis=recorded|occurred]`: the case rebuilt from
/// its events in the log up to that moment (the organisation, or an auditor).
pub async fn case_as_of(
    state: &AppState,
    auth: &Authenticated,
    org: &str,
    case: &str,
    q: &HashMap<String, String>,
) -> Result<Response, ApiError> {
    let org = auth.require_org_or_auditor(org)?;
    unknown_parameters(q, &["as_of", "basis"])?;
    let as_of = time_param(q, "as_of")?.ok_or_else(|| ApiError::invalid_parameter("as_of", "required"))?;
    let basis = match q.get("basis") {
        Some(b) => AsOfBasis::parse(b).ok_or_else(|| ApiError::invalid_parameter("basis", "recorded or occurred"))?,
        None => AsOfBasis::Recorded,
    };
    let case_ref = AggregateRef::new(AggregateKind::Cases, case).map_err(|_| ApiError::not_found("no such case"))?;
    access::record(
        state.db.pool(),
        &auth.0,
        "case.read_as_of",
        &format!("orgs/{org}/cases/{case}"),
        json!({ "as_of": as_of, "basis": basis }),
    )
    .await?;
    let found =
        as_of::case_as_of(state.db.pool(), &state.audit.stream, &org, &case_ref, as_of, basis).await.map_err(|e| {
            tracing::error!(error = %e, "as-of reconstruction failed");
            ApiError::unavailable("the event log cannot be read now; retry later")
        })?;
    let state = found.ok_or_else(|| ApiError::not_found("the case had no recorded event at that moment"))?;
    Ok(Json(state).into_response())
}

/// Adds the auditors' paths to the OpenAPI document.
pub fn openapi_paths(doc: &mut serde_json::Value, problem: fn(&str) -> serde_json::Value) {
    let time = |name: &str, what: &str| json!({ "name": name, "in": "query", "schema": { "type": "string", "format": "date-time" }, "description": what });
    let seq = |name: &str, what: &str| json!({ "name": name, "in": "query", "schema": { "type": "integer", "minimum": 1 }, "description": what });
    let paths = json!({
        "/v1/audit/events": { "get": {
            "summary": "Replay of the log (auditors): NDJSON, streamed, ends at the stream's last sequence at the request",
            "description": "One JSON object a line, each with relaiskind: replay (header), event (a CloudEvent with sequence, recordedat and the chain fields relaissubject, relaispayload, relaisprev, relaislink, relaisadmission), message (a stored message that is not a readable event), checkpoint (a signed checkpoint), end. Format and offline verification: docs/AUDIT.md. Every replay is an access record.",
            "parameters": [
                { "name": "org", "in": "query", "schema": { "type": "string" } },
                { "name": "type", "in": "query", "schema": { "type": "string" }, "description": "An event type of the catalogue" },
                { "name": "case", "in": "query", "schema": { "type": "string" } },
                time("from", "recorded at or after"), time("to", "recorded before"),
                seq("from_seq", "from this stream sequence"), seq("to_seq", "up to this stream sequence") ],
            "responses": { "200": { "description": "the replay", "content": { "application/x-ndjson": { "schema": { "type": "string" } } } },
                "400": problem("invalid parameter"), "401": problem("no or unknown token"), "403": problem("not an auditor"), "503": problem("the log cannot be read") } } },
        "/v1/audit/public-key": { "get": {
            "summary": "The ed25519 public key that verifies signed checkpoints, with the keys retired by rotation",
            "security": [],
            "responses": { "200": { "description": "{algorithm, key_id, public_key (base64), retired: [{key_id, public_key}]}" } } } },
        "/v1/audit/access": { "get": {
            "summary": "Access records (auditors): who read what, when; oldest first",
            "parameters": [
                { "name": "org", "in": "query", "schema": { "type": "string" }, "description": "the reading token's organisation" },
                { "name": "resource", "in": "query", "schema": { "type": "string" }, "description": "a prefix, for example orgs/apo/cases/c-1" },
                { "name": "cursor", "in": "query", "schema": { "type": "string" } },
                { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } } ],
            "responses": { "200": { "description": "a page of access records" }, "400": problem("invalid parameter"), "401": problem("no or unknown token"), "403": problem("not an auditor") } } }
    });
    if let (Some(all), Some(new)) = (doc.get_mut("paths").and_then(|p| p.as_object_mut()), paths.as_object()) {
        for (k, v) in new {
            all.insert(k.clone(), v.clone());
        }
    }
    if let Some(case) = doc.pointer_mut("/paths/~1v1~1orgs~1{org}~1cases~1{case}/get") {
        case["summary"] = json!(
            "One case of the organisation's caseload; with as_of, the case as it stood then, rebuilt from the log (the organisation, or an auditor)"
        );
        if let Some(params) = case.get_mut("parameters").and_then(|p| p.as_array_mut()) {
            params.push(time("as_of", "rebuild the case from its events in the log up to this moment"));
            params.push(json!({ "name": "basis", "in": "query", "schema": { "enum": ["recorded", "occurred"], "default": "recorded" },
                "description": "compare the moment with when events were recorded (what Relais knew then) or when they happened" }));
        }
        if let Some(responses) = case.get_mut("responses").and_then(|r| r.as_object_mut()) {
            responses.insert("400".into(), problem("invalid parameter"));
        }
    }
}
