//! The caseload view: one row per case of an organisation, with status, legal situation, life
//! domains, interventions by mode, last contact and language.

use crate::worker::{Applied, View};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use relais_domain::envelope::PersonalState;
use relais_domain::events::EventData;
use relais_domain::reference::CodeList;
use relais_domain::{AggregateKind, OrgId};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use uuid::Uuid;

/// The caseload view.
pub struct Caseload;

/// One case as the caseload shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct CaseRow {
    /// Organisation.
    pub org_id: String,
    /// Case id (the subject's id).
    pub case_id: String,
    /// The client's data key id.
    #[serde(skip)]
    pub key_id: Option<Uuid>,
    /// The organisation's reference of the client; `None` once erased.
    pub client_ref: Option<String>,
    /// requested, open, declined, closed, after_care.
    pub status: String,
    /// How the request came in.
    pub channel: Option<String>,
    /// When guidance was requested.
    pub requested_at: DateTime<Utc>,
    /// When the case was closed or declined.
    pub closed_at: Option<DateTime<Utc>>,
    /// suspect, convict, internee.
    pub legal_status: Option<String>,
    /// In detention now.
    pub in_detention: bool,
    /// Prison, when in detention.
    pub prison: Option<String>,
    /// Life domains worked on.
    pub life_domains: Vec<String>,
    /// Interventions counted by mode.
    pub interventions_by_mode: sqlx::types::Json<BTreeMap<String, i64>>,
    /// Interventions in all.
    pub intervention_count: i32,
    /// Last intervention or contact.
    pub last_contact_at: Option<DateTime<Utc>>,
    /// The client's language.
    pub language: Option<String>,
    /// Last event of the case.
    pub last_event_at: DateTime<Utc>,
    /// Stream sequence of the case's last event: the value for `expectedversion`.
    pub version: i64,
}

impl CaseRow {
    fn new(org: &str, case_id: &str, at: DateTime<Utc>) -> Self {
        Self {
            org_id: org.to_owned(),
            case_id: case_id.to_owned(),
            key_id: None,
            client_ref: None,
            status: "requested".into(),
            channel: None,
            requested_at: at,
            closed_at: None,
            legal_status: None,
            in_detention: false,
            prison: None,
            life_domains: Vec::new(),
            interventions_by_mode: sqlx::types::Json(BTreeMap::new()),
            intervention_count: 0,
            last_contact_at: None,
            language: None,
            last_event_at: at,
            version: 0,
        }
    }

    fn add_domains<'a>(&mut self, domains: impl IntoIterator<Item = &'a str>) {
        let mut set: BTreeSet<String> = self.life_domains.drain(..).collect();
        set.extend(domains.into_iter().map(str::to_owned));
        self.life_domains = set.into_iter().collect();
    }
}

fn code<T: Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

/// Folds one event into a case row (the row exists or is created by the first event).
fn evolve(row: &mut CaseRow, e: &Applied) {
    let env = &e.envelope;
    let at = env.occurred_at;
    if e.key_id.is_some() {
        row.key_id = e.key_id;
    }
    if let Some(c) = env.data.client_ref().filter(|_| env.personal == PersonalState::Present) {
        row.client_ref = Some(c.to_owned());
    }
    match &env.data {
        EventData::GuidanceRequested(d) => {
            row.requested_at = at;
            row.channel = Some(code(&d.channel));
            row.language = Some(d.language.code().to_owned());
        }
        EventData::InterventionRecorded(d) => {
            row.intervention_count += 1;
            *row.interventions_by_mode.0.entry(d.mode.code().to_owned()).or_insert(0) += 1;
            row.add_domains(d.life_domains.iter().map(|l| l.code()));
            row.last_contact_at = Some(row.last_contact_at.map_or(at, |l| l.max(at)));
            row.language = Some(d.language.code().to_owned());
        }
        _ => {}
    }
    row.last_event_at = row.last_event_at.max(at);
    row.version = e.seq as i64;
}

impl View for Caseload {
    fn name(&self) -> &'static str {
        "caseload"
    }

    fn apply<'a>(&'a self, tx: &'a mut PgConnection, events: &'a [Applied]) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(apply(tx, events))
    }
}

async fn apply(tx: &mut PgConnection, events: &[Applied]) -> Result<(), sqlx::Error> {
    let cases: Vec<&Applied> = events.iter().filter(|e| e.envelope.subject.kind() == AggregateKind::Cases).collect();
    let erased: Vec<Uuid> = events
        .iter()
        .filter(|e| matches!(e.envelope.data, EventData::ClientErased(_)))
        .filter_map(|e| Uuid::parse_str(e.envelope.subject.id()).ok())
        .collect();
    if !cases.is_empty() {
        let (orgs, ids): (Vec<String>, Vec<String>) = cases
            .iter()
            .map(|e| (e.envelope.org.to_string(), e.envelope.subject.id().to_owned()))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .unzip();
        let existing: Vec<CaseRow> = sqlx::query_as(
            "SELECT c.* FROM caseload c JOIN UNNEST($1::text[], $2::text[]) AS k(org_id, case_id)
             ON c.org_id = k.org_id AND c.case_id = k.case_id",
        )
        .bind(&orgs)
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        let mut rows: HashMap<(String, String), CaseRow> =
            existing.into_iter().map(|r| ((r.org_id.clone(), r.case_id.clone()), r)).collect();
        for e in &cases {
            let key = (e.envelope.org.to_string(), e.envelope.subject.id().to_owned());
            let row = rows.entry(key).or_insert_with(|| {
                CaseRow::new(e.envelope.org.as_str(), e.envelope.subject.id(), e.envelope.occurred_at)
            });
            evolve(row, e);
        }
        upsert(tx, rows.into_values().collect()).await?;
    }
    if !erased.is_empty() {
        sqlx::query("UPDATE caseload SET client_ref = NULL WHERE key_id = ANY($1)")
            .bind(&erased)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

async fn upsert(tx: &mut PgConnection, rows: Vec<CaseRow>) -> Result<(), sqlx::Error> {
    let mut c = Columns::default();
    for r in rows {
        c.org_id.push(r.org_id);
        c.case_id.push(r.case_id);
        c.key_id.push(r.key_id);
        c.client_ref.push(r.client_ref);
        c.status.push(r.status);
        c.channel.push(r.channel);
        c.requested_at.push(r.requested_at);
        c.closed_at.push(r.closed_at);
        c.legal_status.push(r.legal_status);
        c.in_detention.push(r.in_detention);
        c.prison.push(r.prison);
        c.life_domains.push(r.life_domains.join(","));
        c.by_mode.push(serde_json::to_string(&r.interventions_by_mode.0).unwrap_or_else(|_| "{}".into()));
        c.intervention_count.push(r.intervention_count);
        c.last_contact_at.push(r.last_contact_at);
        c.language.push(r.language);
        c.last_event_at.push(r.last_event_at);
        c.version.push(r.version);
    }
    sqlx::query(
        "INSERT INTO caseload (org_id, case_id, key_id, client_ref, status, channel, requested_at, closed_at,
            legal_status, in_detention, prison, life_domains, interventions_by_mode, intervention_count,
            last_contact_at, language, last_event_at, version)
         SELECT org_id, case_id, key_id, client_ref, status, channel, requested_at, closed_at, legal_status,
            in_detention, prison, coalesce(string_to_array(nullif(domains, ''), ','), '{}'), by_mode::jsonb,
            intervention_count, last_contact_at, language, last_event_at, version
         FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
            $8::timestamptz[], $9::text[], $10::bool[], $11::text[], $12::text[], $13::text[], $14::int4[],
            $15::timestamptz[], $16::text[], $17::timestamptz[], $18::int8[])
            AS u(org_id, case_id, key_id, client_ref, status, channel, requested_at, closed_at, legal_status,
                 in_detention, prison, domains, by_mode, intervention_count, last_contact_at, language,
                 last_event_at, version)
         ON CONFLICT (org_id, case_id) DO UPDATE SET key_id = EXCLUDED.key_id, client_ref = EXCLUDED.client_ref,
            status = EXCLUDED.status, channel = EXCLUDED.channel, requested_at = EXCLUDED.requested_at,
            closed_at = EXCLUDED.closed_at, legal_status = EXCLUDED.legal_status,
            in_detention = EXCLUDED.in_detention, prison = EXCLUDED.prison, life_domains = EXCLUDED.life_domains,
            interventions_by_mode = EXCLUDED.interventions_by_mode,
            intervention_count = EXCLUDED.intervention_count, last_contact_at = EXCLUDED.last_contact_at,
            language = EXCLUDED.language, last_event_at = EXCLUDED.last_event_at, version = EXCLUDED.version",
    )
    .bind(&c.org_id)
    .bind(&c.case_id)
    .bind(&c.key_id)
    .bind(&c.client_ref)
    .bind(&c.status)
    .bind(&c.channel)
    .bind(&c.requested_at)
    .bind(&c.closed_at)
    .bind(&c.legal_status)
    .bind(&c.in_detention)
    .bind(&c.prison)
    .bind(&c.life_domains)
    .bind(&c.by_mode)
    .bind(&c.intervention_count)
    .bind(&c.last_contact_at)
    .bind(&c.language)
    .bind(&c.last_event_at)
    .bind(&c.version)
    .execute(tx)
    .await?;
    Ok(())
}

#[derive(Default)]
struct Columns {
    org_id: Vec<String>,
    case_id: Vec<String>,
    key_id: Vec<Option<Uuid>>,
    client_ref: Vec<Option<String>>,
    status: Vec<String>,
    channel: Vec<Option<String>>,
    requested_at: Vec<DateTime<Utc>>,
    closed_at: Vec<Option<DateTime<Utc>>>,
    legal_status: Vec<Option<String>>,
    in_detention: Vec<bool>,
    prison: Vec<Option<String>>,
    life_domains: Vec<String>,
    by_mode: Vec<String>,
    intervention_count: Vec<i32>,
    last_contact_at: Vec<Option<DateTime<Utc>>>,
    language: Vec<Option<String>>,
    last_event_at: Vec<DateTime<Utc>>,
    version: Vec<i64>,
}

/// Filters of the caseload listing.
#[derive(Debug, Clone, Default)]
pub struct CaseFilter {
    /// Only cases with this status.
    pub status: Option<String>,
    /// Only cases in (true) or out of (false) detention.
    pub in_detention: Option<bool>,
    /// Continue after this cursor (from the previous page).
    pub after: Option<(DateTime<Utc>, String)>,
    /// Page size.
    pub limit: i64,
}

/// One page of an organisation's caseload, most recently active first.
pub async fn list(pool: &PgPool, org: &OrgId, filter: &CaseFilter) -> Result<Vec<CaseRow>, sqlx::Error> {
    let (after_at, after_id) = match &filter.after {
        Some((at, id)) => (Some(*at), Some(id.clone())),
        None => (None, None),
    };
    sqlx::query_as(
        "SELECT * FROM caseload WHERE org_id = $1
           AND ($2::text IS NULL OR status = $2)
           AND ($3::bool IS NULL OR in_detention = $3)
           AND ($4::timestamptz IS NULL OR (last_event_at, case_id) < ($4, $5))
         ORDER BY last_event_at DESC, case_id DESC LIMIT $6",
    )
    .bind(org.as_str())
    .bind(&filter.status)
    .bind(filter.in_detention)
    .bind(after_at)
    .bind(after_id)
    .bind(filter.limit)
    .fetch_all(pool)
    .await
}

/// One case of an organisation.
pub async fn get(pool: &PgPool, org: &OrgId, case_id: &str) -> Result<Option<CaseRow>, sqlx::Error> {
    sqlx::query_as("SELECT * FROM caseload WHERE org_id = $1 AND case_id = $2")
        .bind(org.as_str())
        .bind(case_id)
        .fetch_optional(pool)
        .await
}
