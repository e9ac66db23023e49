//! The case timeline: every event of one case (subject `cases/<id>`), in stream order, with
//! who recorded it (the publisher's `actor`) and when. The statistical part of each event's
//! data is kept as it is; the personal part (client reference, notes, goals) is kept apart and
//! forgotten when the client is erased.

use crate::support::erased_key_ids;
use crate::worker::{Applied, View};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use relais_domain::envelope::PersonalState;
use relais_domain::{AggregateKind, OrgId};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The case timeline view.
pub struct Timeline;

impl View for Timeline {
    fn name(&self) -> &'static str {
        "timeline"
    }

    fn apply<'a>(&'a self, tx: &'a mut PgConnection, events: &'a [Applied]) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(apply(tx, events))
    }

    fn tables(&self) -> &'static [&'static str] {
        &["case_timeline"]
    }

    fn reader_indexes(&self) -> &'static [&'static str] {
        // A case's timeline is read by this; the view appends and erases by key.
        &["case_timeline_by_case"]
    }
}

async fn apply(tx: &mut PgConnection, events: &[Applied]) -> Result<(), sqlx::Error> {
    let mut seq = Vec::new();
    let mut org = Vec::new();
    let mut case = Vec::new();
    let mut id = Vec::new();
    let mut event_type = Vec::new();
    let mut version = Vec::new();
    let mut occurred = Vec::new();
    let mut recorded = Vec::new();
    let mut actor = Vec::new();
    let mut key = Vec::new();
    let mut data = Vec::new();
    let mut personal = Vec::new();
    for e in events.iter().filter(|e| e.envelope.subject.kind() == AggregateKind::Cases) {
        let env = &e.envelope;
        let mut statistical = env.data.clone();
        let fields = statistical.take_personal();
        let opened = match env.personal {
            PersonalState::Present if !fields.is_empty() => {
                let map: serde_json::Map<String, serde_json::Value> =
                    fields.0.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect();
                Some(serde_json::Value::Object(map).to_string())
            }
            _ => None,
        };
        seq.push(e.seq as i64);
        org.push(env.org.to_string());
        case.push(env.subject.id().to_owned());
        id.push(env.id);
        event_type.push(env.data.event_type().to_owned());
        version.push(i32::from(env.data.spec().version));
        occurred.push(env.occurred_at);
        recorded.push(env.recorded_at);
        actor.push(env.actor.clone());
        key.push(e.key_id);
        // The statistical part only: personal fields are left out, not shown empty.
        let mut json = statistical.to_json();
        if let Some(obj) = json.as_object_mut() {
            for field in env.data.spec().personal_fields {
                obj.remove(*field);
            }
        }
        data.push(json.to_string());
        personal.push(opened);
    }
    if !seq.is_empty() {
        // No `ON CONFLICT`: a claimed checkpoint brings each sequence once (see statistics).
        sqlx::query(
            "INSERT INTO case_timeline (seq, org_id, case_id, event_id, event_type, schema_version, occurred_at,
                recorded_at, actor, key_id, data, personal)
             SELECT seq, org_id, case_id, event_id, event_type, schema_version, occurred_at, recorded_at, actor,
                key_id, data::jsonb, personal::jsonb
             FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::int4[], $7::timestamptz[],
                $8::timestamptz[], $9::text[], $10::uuid[], $11::text[], $12::text[])
                AS u(seq, org_id, case_id, event_id, event_type, schema_version, occurred_at, recorded_at, actor,
                     key_id, data, personal)",
        )
        .bind(&seq)
        .bind(&org)
        .bind(&case)
        .bind(&id)
        .bind(&event_type)
        .bind(&version)
        .bind(&occurred)
        .bind(&recorded)
        .bind(&actor)
        .bind(&key)
        .bind(&data)
        .bind(&personal)
        .execute(&mut *tx)
        .await?;
    }
    let erased = erased_key_ids(events);
    if !erased.is_empty() {
        sqlx::query("UPDATE case_timeline SET personal = NULL WHERE key_id = ANY($1) AND personal IS NOT NULL")
            .bind(&erased)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

/// One event of a case's timeline.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct TimelineEntry {
    /// Stream sequence.
    pub seq: i64,
    /// The event id.
    pub event_id: Uuid,
    /// The event type.
    pub event_type: String,
    /// Its schema version.
    pub schema_version: i32,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// When Relais recorded it.
    pub recorded_at: DateTime<Utc>,
    /// Who recorded it (the publisher's user or system).
    pub actor: String,
    /// The statistical fields of the event's data.
    #[serde(skip)]
    pub data: sqlx::types::Json<serde_json::Value>,
    /// The personal fields, `None` when the event had none or the client was erased.
    #[serde(skip)]
    pub personal: Option<sqlx::types::Json<serde_json::Value>>,
    /// Whether the client's personal fields were erased (or the event had none).
    #[serde(skip)]
    pub key_id: Option<Uuid>,
}

impl TimelineEntry {
    /// The event's data, personal fields put back when they are still known.
    pub fn full_data(&self) -> serde_json::Value {
        let mut data = self.data.0.clone();
        if let (Some(obj), Some(p)) = (data.as_object_mut(), self.personal.as_ref().and_then(|p| p.0.as_object())) {
            for (k, v) in p {
                obj.insert(k.clone(), v.clone());
            }
        }
        data
    }

    /// `present` when the personal fields are shown (or the event had none), `erased` when
    /// the event had personal fields that are gone.
    pub fn personal_state(&self) -> &'static str {
        if self.key_id.is_some() && self.personal.is_none() { "erased" } else { "present" }
    }
}

/// A page of a case's timeline, in stream order, after sequence `after`.
pub async fn list(
    pool: &PgPool,
    org: &OrgId,
    case_id: &str,
    after: i64,
    event_type: Option<&str>,
    limit: i64,
) -> Result<Vec<TimelineEntry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT seq, event_id, event_type, schema_version, occurred_at, recorded_at, actor, data, personal, key_id
         FROM case_timeline WHERE org_id = $1 AND case_id = $2 AND seq > $3 AND ($4::text IS NULL OR event_type = $4)
         ORDER BY seq LIMIT $5",
    )
    .bind(org.as_str())
    .bind(case_id)
    .bind(after)
    .bind(event_type)
    .bind(limit)
    .fetch_all(pool)
    .await
}
