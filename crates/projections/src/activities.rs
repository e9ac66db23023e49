//! The group activities view: each activity with its plan, needs surveys, sessions (attendance
//! counted, never listed), evaluations and counts; and the rosters: one row per participant,
//! known by the registering organisation's client key.
//!
//! An organisation sees the activities it recorded events on or is a partner of, and of their
//! rosters only its own participants. Participants' references are forgotten when the client
//! is erased; feedback notes are never kept here.

use crate::support::{client_ref, code, erased_key_ids, sorted_codes};
use crate::worker::{Applied, View};
use chrono::{DateTime, NaiveDate, Utc};
use futures::future::BoxFuture;
use relais_domain::events::{EvaluationOutcome, EventData};
use relais_domain::reference::CodeList;
use relais_domain::{AggregateKind, OrgId};
use serde::Serialize;
use serde_json::{Value, json};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// The group activities view.
pub struct Activities;

impl View for Activities {
    fn name(&self) -> &'static str {
        "activities"
    }

    fn apply<'a>(&'a self, tx: &'a mut PgConnection, events: &'a [Applied]) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(apply(tx, events))
    }

    fn tables(&self) -> &'static [&'static str] {
        &["activities", "activity_participants"]
    }

    fn reader_indexes(&self) -> &'static [&'static str] {
        // The lists of activities and participants; the view writes by id and erases by key.
        &["activities_by_orgs", "activities_by_partners", "activity_participants_by_org"]
    }
}

/// One group activity.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ActivityRow {
    /// The activity id (the subject's id).
    pub activity_id: String,
    /// The organisation that planned it.
    pub organiser: Option<String>,
    /// Formative, psychosocial or sociocultural.
    pub kind: Option<String>,
    /// Title.
    pub title: Option<String>,
    /// Target groups.
    pub target_groups: Vec<String>,
    /// Prison.
    pub prison: Option<String>,
    /// Partner organisations.
    pub partners: Vec<String>,
    /// Languages.
    pub languages: Vec<String>,
    /// Capacity.
    pub capacity: Option<i32>,
    /// First day.
    pub starts_on: Option<NaiveDate>,
    /// The organisations that recorded events on it.
    pub orgs: Vec<String>,
    /// Needs surveys recorded on it.
    pub surveys: Json<Vec<Value>>,
    /// Sessions held, with attendance.
    pub sessions: Json<Vec<Value>>,
    /// Evaluations.
    pub evaluations: Json<Vec<Value>>,
    /// Registrations received.
    pub registrations: i32,
    /// Candidates admitted at screening.
    pub admitted: i32,
    /// Candidates not admitted.
    pub refused: i32,
    /// Participants enrolled now.
    pub enrolled: i32,
    /// Dropouts.
    pub dropouts: i32,
    /// Feedback conversations held with dropouts.
    pub feedbacks: i32,
    /// Stopped by an evaluation.
    pub stopped: bool,
    /// Last event.
    pub last_event_at: DateTime<Utc>,
    /// Stream sequence of the last event.
    pub version: i64,
}

impl ActivityRow {
    fn new(id: &str, at: DateTime<Utc>) -> Self {
        Self {
            activity_id: id.to_owned(),
            organiser: None,
            kind: None,
            title: None,
            target_groups: Vec::new(),
            prison: None,
            partners: Vec::new(),
            languages: Vec::new(),
            capacity: None,
            starts_on: None,
            orgs: Vec::new(),
            surveys: Json(Vec::new()),
            sessions: Json(Vec::new()),
            evaluations: Json(Vec::new()),
            registrations: 0,
            admitted: 0,
            refused: 0,
            enrolled: 0,
            dropouts: 0,
            feedbacks: 0,
            stopped: false,
            last_event_at: at,
            version: 0,
        }
    }
}

/// One participant of an activity, as the registering organisation sees it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ParticipantRow {
    /// The activity.
    #[serde(skip)]
    pub activity_id: String,
    /// The registering organisation.
    #[serde(skip)]
    pub org_id: String,
    /// The client's data key id.
    #[serde(skip)]
    pub key_id: Uuid,
    /// The organisation's reference of the participant; `None` once erased.
    pub client_ref: Option<String>,
    /// registered, admitted, not_admitted, enrolled, dropped_out.
    pub status: String,
    /// Registered.
    pub registered_at: Option<DateTime<Utc>>,
    /// Screened.
    pub screened_at: Option<DateTime<Utc>>,
    /// Why not admitted.
    pub refusal_reason: Option<String>,
    /// Enrolled.
    pub enrolled_at: Option<DateTime<Utc>>,
    /// Dropped out.
    pub dropped_out_at: Option<DateTime<Utc>>,
    /// Why.
    pub dropout_reason: Option<String>,
    /// Feedback conversation held (after the last dropout).
    pub feedback_at: Option<DateTime<Utc>>,
}

impl ParticipantRow {
    fn new(activity_id: &str, org: &str, key_id: Uuid) -> Self {
        Self {
            activity_id: activity_id.to_owned(),
            org_id: org.to_owned(),
            key_id,
            client_ref: None,
            status: "registered".into(),
            registered_at: None,
            screened_at: None,
            refusal_reason: None,
            enrolled_at: None,
            dropped_out_at: None,
            dropout_reason: None,
            feedback_at: None,
        }
    }
}

type ParticipantKey = (String, String, Uuid);

fn participant_key(e: &Applied) -> Option<ParticipantKey> {
    let env = &e.envelope;
    let about_a_participant = matches!(
        env.data,
        EventData::RegistrationReceived(_)
            | EventData::ParticipantScreened(_)
            | EventData::ParticipantEnrolled(_)
            | EventData::ParticipantDroppedOut(_)
            | EventData::DropoutFeedbackHeld(_)
    );
    if !about_a_participant {
        return None;
    }
    Some((env.subject.id().to_owned(), env.org.to_string(), e.key_id?))
}

fn evolve_activity(row: &mut ActivityRow, e: &Applied) {
    let env = &e.envelope;
    let at = env.occurred_at;
    let org = env.org.to_string();
    if !row.orgs.contains(&org) {
        row.orgs.push(org.clone());
        row.orgs.sort();
    }
    match &env.data {
        EventData::NeedsSurveyRecorded(d) => row.surveys.0.push(json!({
            "target_group": code(d.target_group), "prison": code(d.prison), "respondents": d.respondents,
            "wanted": d.wanted.iter().map(|w| w.code()).collect::<Vec<_>>(),
            "languages": d.languages.iter().map(|l| l.code()).collect::<Vec<_>>(), "recorded_at": at,
        })),
        EventData::ActivityPlanned(d) => {
            row.organiser = Some(org);
            row.kind = Some(code(d.kind));
            row.title = Some(d.title.clone());
            row.target_groups = sorted_codes(d.target_groups.iter().map(|t| t.code()));
            row.prison = Some(code(d.prison));
            row.partners = sorted_codes(d.partners.iter().map(OrgId::as_str));
            row.languages = sorted_codes(d.languages.iter().map(|l| l.code()));
            row.capacity = Some(i32::from(d.capacity));
            row.starts_on = Some(d.starts_on);
        }
        EventData::RegistrationReceived(_) => row.registrations += 1,
        EventData::ParticipantScreened(d) => {
            if d.admitted {
                row.admitted += 1;
            } else {
                row.refused += 1;
            }
        }
        EventData::ParticipantEnrolled(_) => row.enrolled += 1,
        EventData::ParticipantDroppedOut(_) => {
            row.enrolled = (row.enrolled - 1).max(0);
            row.dropouts += 1;
        }
        EventData::DropoutFeedbackHeld(_) => row.feedbacks += 1,
        EventData::SessionHeld(d) => row.sessions.0.push(json!({
            "session_number": d.session_number, "held_on": d.held_on,
            "attended_count": d.attended_count, "absent_count": d.absent_count,
        })),
        EventData::ActivityEvaluated(d) => {
            row.evaluations.0.push(json!({
                "rating": d.rating, "outcome": code(d.outcome), "evaluation_note": d.evaluation_note, "evaluated_at": at,
            }));
            if d.outcome == EvaluationOutcome::Stop {
                row.stopped = true;
            }
        }
        _ => {}
    }
    row.last_event_at = row.last_event_at.max(at);
    row.version = e.seq as i64;
}

fn evolve_participant(p: &mut ParticipantRow, e: &Applied) {
    let at = e.envelope.occurred_at;
    if let Some(c) = client_ref(e) {
        p.client_ref = Some(c);
    }
    match &e.envelope.data {
        EventData::RegistrationReceived(_) => {
            p.status = "registered".into();
            p.registered_at = Some(at);
        }
        EventData::ParticipantScreened(d) => {
            p.screened_at = Some(at);
            p.status = if d.admitted { "admitted" } else { "not_admitted" }.into();
            p.refusal_reason = d.refusal_reason.map(code);
        }
        EventData::ParticipantEnrolled(_) => {
            // A dropout who comes back starts afresh.
            p.status = "enrolled".into();
            p.enrolled_at = Some(at);
            p.dropped_out_at = None;
            p.dropout_reason = None;
            p.feedback_at = None;
        }
        EventData::ParticipantDroppedOut(d) => {
            p.status = "dropped_out".into();
            p.dropped_out_at = Some(at);
            p.dropout_reason = Some(code(d.reason));
        }
        EventData::DropoutFeedbackHeld(_) => p.feedback_at = Some(at),
        _ => {}
    }
}

async fn apply(tx: &mut PgConnection, events: &[Applied]) -> Result<(), sqlx::Error> {
    let ids: BTreeSet<String> = events
        .iter()
        .filter(|e| e.envelope.subject.kind() == AggregateKind::Activities)
        .map(|e| e.envelope.subject.id().to_owned())
        .collect();
    let erased = erased_key_ids(events);
    if !ids.is_empty() {
        let ids: Vec<String> = ids.into_iter().collect();
        let existing: Vec<ActivityRow> = sqlx::query_as("SELECT * FROM activities WHERE activity_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
        let mut rows: BTreeMap<String, ActivityRow> =
            existing.into_iter().map(|r| (r.activity_id.clone(), r)).collect();
        let keys: BTreeSet<ParticipantKey> = events.iter().filter_map(participant_key).collect();
        let (mut k_act, mut k_org, mut k_key) = (Vec::new(), Vec::new(), Vec::new());
        for (a, o, k) in &keys {
            k_act.push(a.clone());
            k_org.push(o.clone());
            k_key.push(*k);
        }
        let existing: Vec<ParticipantRow> = sqlx::query_as(
            "SELECT p.* FROM activity_participants p
             JOIN UNNEST($1::text[], $2::text[], $3::uuid[]) AS k(activity_id, org_id, key_id)
             ON p.activity_id = k.activity_id AND p.org_id = k.org_id AND p.key_id = k.key_id",
        )
        .bind(&k_act)
        .bind(&k_org)
        .bind(&k_key)
        .fetch_all(&mut *tx)
        .await?;
        let mut participants: BTreeMap<ParticipantKey, ParticipantRow> =
            existing.into_iter().map(|p| ((p.activity_id.clone(), p.org_id.clone(), p.key_id), p)).collect();
        for e in events.iter().filter(|e| e.envelope.subject.kind() == AggregateKind::Activities) {
            let id = e.envelope.subject.id();
            let row = rows.entry(id.to_owned()).or_insert_with(|| ActivityRow::new(id, e.envelope.occurred_at));
            evolve_activity(row, e);
            if let Some(key) = participant_key(e) {
                let p = participants.entry(key.clone()).or_insert_with(|| ParticipantRow::new(&key.0, &key.1, key.2));
                evolve_participant(p, e);
            }
        }
        upsert_activities(tx, rows.into_values().collect()).await?;
        upsert_participants(tx, participants.into_values().collect()).await?;
    }
    if !erased.is_empty() {
        sqlx::query("UPDATE activity_participants SET client_ref = NULL WHERE key_id = ANY($1)")
            .bind(&erased)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

fn json_text<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

async fn upsert_activities(tx: &mut PgConnection, rows: Vec<ActivityRow>) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    // Arrays of arrays are awkward to bind: list columns travel as JSON.
    let payload: Vec<String> = rows
        .iter()
        .map(|r| {
            json_text(&json!({
                "activity_id": r.activity_id, "organiser": r.organiser, "kind": r.kind, "title": r.title,
                "target_groups": r.target_groups, "prison": r.prison, "partners": r.partners,
                "languages": r.languages, "capacity": r.capacity, "starts_on": r.starts_on, "orgs": r.orgs,
                "surveys": r.surveys.0, "sessions": r.sessions.0, "evaluations": r.evaluations.0,
                "registrations": r.registrations, "admitted": r.admitted, "refused": r.refused,
                "enrolled": r.enrolled, "dropouts": r.dropouts, "feedbacks": r.feedbacks, "stopped": r.stopped,
                "last_event_at": r.last_event_at, "version": r.version,
            }))
        })
        .collect();
    sqlx::query(
        "INSERT INTO activities (activity_id, organiser, kind, title, target_groups, prison, partners, languages,
            capacity, starts_on, orgs, surveys, sessions, evaluations, registrations, admitted, refused, enrolled,
            dropouts, feedbacks, stopped, last_event_at, version)
         SELECT j->>'activity_id', j->>'organiser', j->>'kind', j->>'title',
            ARRAY(SELECT jsonb_array_elements_text(j->'target_groups')), j->>'prison',
            ARRAY(SELECT jsonb_array_elements_text(j->'partners')),
            ARRAY(SELECT jsonb_array_elements_text(j->'languages')), (j->>'capacity')::int4,
            (j->>'starts_on')::date, ARRAY(SELECT jsonb_array_elements_text(j->'orgs')), j->'surveys',
            j->'sessions', j->'evaluations', (j->>'registrations')::int4, (j->>'admitted')::int4,
            (j->>'refused')::int4, (j->>'enrolled')::int4, (j->>'dropouts')::int4, (j->>'feedbacks')::int4,
            (j->>'stopped')::bool, (j->>'last_event_at')::timestamptz, (j->>'version')::int8
         FROM UNNEST($1::jsonb[]) AS u(j)
         ON CONFLICT (activity_id) DO UPDATE SET organiser = EXCLUDED.organiser, kind = EXCLUDED.kind,
            title = EXCLUDED.title, target_groups = EXCLUDED.target_groups, prison = EXCLUDED.prison,
            partners = EXCLUDED.partners, languages = EXCLUDED.languages, capacity = EXCLUDED.capacity,
            starts_on = EXCLUDED.starts_on, orgs = EXCLUDED.orgs, surveys = EXCLUDED.surveys,
            sessions = EXCLUDED.sessions, evaluations = EXCLUDED.evaluations,
            registrations = EXCLUDED.registrations, admitted = EXCLUDED.admitted, refused = EXCLUDED.refused,
            enrolled = EXCLUDED.enrolled, dropouts = EXCLUDED.dropouts, feedbacks = EXCLUDED.feedbacks,
            stopped = EXCLUDED.stopped, last_event_at = EXCLUDED.last_event_at, version = EXCLUDED.version",
    )
    .bind(&payload)
    .execute(tx)
    .await?;
    Ok(())
}

async fn upsert_participants(tx: &mut PgConnection, rows: Vec<ParticipantRow>) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let (mut act, mut org, mut key, mut cref, mut status) =
        (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n), Vec::new());
    let (mut reg, mut scr, mut refusal, mut enr, mut drop, mut reason, mut fb) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for p in rows {
        act.push(p.activity_id);
        org.push(p.org_id);
        key.push(p.key_id);
        cref.push(p.client_ref);
        status.push(p.status);
        reg.push(p.registered_at);
        scr.push(p.screened_at);
        refusal.push(p.refusal_reason);
        enr.push(p.enrolled_at);
        drop.push(p.dropped_out_at);
        reason.push(p.dropout_reason);
        fb.push(p.feedback_at);
    }
    sqlx::query(
        "INSERT INTO activity_participants (activity_id, org_id, key_id, client_ref, status, registered_at,
            screened_at, refusal_reason, enrolled_at, dropped_out_at, dropout_reason, feedback_at)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::timestamptz[],
            $7::timestamptz[], $8::text[], $9::timestamptz[], $10::timestamptz[], $11::text[], $12::timestamptz[])
         ON CONFLICT (activity_id, org_id, key_id) DO UPDATE SET client_ref = EXCLUDED.client_ref,
            status = EXCLUDED.status, registered_at = EXCLUDED.registered_at, screened_at = EXCLUDED.screened_at,
            refusal_reason = EXCLUDED.refusal_reason, enrolled_at = EXCLUDED.enrolled_at,
            dropped_out_at = EXCLUDED.dropped_out_at, dropout_reason = EXCLUDED.dropout_reason,
            feedback_at = EXCLUDED.feedback_at",
    )
    .bind(&act)
    .bind(&org)
    .bind(&key)
    .bind(&cref)
    .bind(&status)
    .bind(&reg)
    .bind(&scr)
    .bind(&refusal)
    .bind(&enr)
    .bind(&drop)
    .bind(&reason)
    .bind(&fb)
    .execute(tx)
    .await?;
    Ok(())
}

/// A page of the activities an organisation organised, recorded on or is a partner of, most
/// recently active first; `after` continues after (last_event_at, activity id).
pub async fn list(
    pool: &PgPool,
    org: &OrgId,
    kind: Option<&str>,
    after: Option<&(DateTime<Utc>, String)>,
    limit: i64,
) -> Result<Vec<ActivityRow>, sqlx::Error> {
    sqlx::query_as(
        // `@>`, not `= ANY`: the GIN indexes on both arrays serve only the former.
        "SELECT * FROM activities WHERE (orgs @> ARRAY[$1::text] OR partners @> ARRAY[$1::text])
           AND ($2::text IS NULL OR kind = $2)
           AND ($3::timestamptz IS NULL OR (last_event_at, activity_id) < ($3, $4))
         ORDER BY last_event_at DESC, activity_id DESC LIMIT $5",
    )
    .bind(org.as_str())
    .bind(kind)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1.clone()))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One activity, if the organisation may see it, with the organisation's own participants.
pub async fn get(
    pool: &PgPool,
    org: &OrgId,
    activity_id: &str,
) -> Result<Option<(ActivityRow, Vec<ParticipantRow>)>, sqlx::Error> {
    let row: Option<ActivityRow> =
        sqlx::query_as("SELECT * FROM activities WHERE activity_id = $2 AND ($1 = ANY(orgs) OR $1 = ANY(partners))")
            .bind(org.as_str())
            .bind(activity_id)
            .fetch_optional(pool)
            .await?;
    let Some(row) = row else { return Ok(None) };
    let roster: Vec<ParticipantRow> = sqlx::query_as(
        "SELECT * FROM activity_participants WHERE activity_id = $1 AND org_id = $2
         ORDER BY registered_at NULLS LAST, key_id",
    )
    .bind(activity_id)
    .bind(org.as_str())
    .fetch_all(pool)
    .await?;
    Ok(Some((row, roster)))
}
