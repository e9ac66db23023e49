//! The caseload view: one row per case of an organisation, with status, legal situation, life
//! domains, interventions by mode, last contact and language; and, in the same projection,
//! what is coming up for each case (scheduled releases, prepared furloughs, escorted outings).
//!
//! How each event type is folded:
//! - status: `requested` (guidance requested, also a new guidance period), `open` (accepted),
//!   `declined`, `closed`, `after_care` (after-care started);
//! - legal situation: detention started (in detention, prison, legal status, since),
//!   transferred (prison), legal status changed, release scheduled, released (at liberty);
//!   guidance accepted gives the legal status, and the setting while no detention is recorded;
//! - life domains: the union of those of intake, plan, interventions, urgent help, after-care
//!   and support to relatives;
//! - interventions by mode: every intervention recorded, and every urgent help request handled
//!   as mode `practical_help` (intervention mode 7 covers urgent help requests);
//! - last contact: interventions, intake, family contact facilitated, urgent help handled;
//! - language: of the request, the intake and the interventions (the last one given).
//!
//! Personal fields (`client_ref`) are forgotten when the client is erased.

use crate::support::{client_ref, code, erased_key_ids};
use crate::worker::{Applied, View};
use chrono::{DateTime, NaiveDate, Utc};
use futures::future::BoxFuture;
use relais_domain::events::{EventData, GuidanceSetting};
use relais_domain::reference::{CodeList, InterventionMode};
use relais_domain::{AggregateKind, OrgId};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use uuid::Uuid;

/// The caseload view.
pub struct Caseload;

/// Statuses a case can have in the caseload.
pub const STATUSES: &[&str] = &["requested", "open", "declined", "closed", "after_care"];

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
    /// The day the current detention started.
    pub detention_since: Option<NaiveDate>,
    /// The expected day of release, while it is ahead.
    pub release_scheduled_on: Option<NaiveDate>,
    /// The day of the last release.
    pub released_on: Option<NaiveDate>,
    /// When after-care started (in the current guidance period).
    pub aftercare_started_at: Option<DateTime<Utc>>,
    /// Life domains worked on.
    pub life_domains: Vec<String>,
    /// Interventions counted by mode.
    pub interventions_by_mode: sqlx::types::Json<BTreeMap<String, i64>>,
    /// Interventions in all.
    pub intervention_count: i32,
    /// Urgent help requests handled (also counted as `practical_help` interventions).
    pub urgent_request_count: i32,
    /// Family contacts facilitated.
    pub family_contact_count: i32,
    /// Last intervention or contact.
    pub last_contact_at: Option<DateTime<Utc>>,
    /// The client's language.
    pub language: Option<String>,
    /// Last event of the case.
    pub last_event_at: DateTime<Utc>,
    /// Stream sequence of the case's last applied event; [`get`] answers the later of it and
    /// the case's last quarantined message: the value for `expectedversion`.
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
            detention_since: None,
            release_scheduled_on: None,
            released_on: None,
            aftercare_started_at: None,
            life_domains: Vec::new(),
            interventions_by_mode: sqlx::types::Json(BTreeMap::new()),
            intervention_count: 0,
            urgent_request_count: 0,
            family_contact_count: 0,
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

    fn contact(&mut self, at: DateTime<Utc>) {
        self.last_contact_at = Some(self.last_contact_at.map_or(at, |l| l.max(at)));
    }

    fn count_intervention(&mut self, mode: InterventionMode) {
        self.intervention_count += 1;
        *self.interventions_by_mode.0.entry(mode.code().to_owned()).or_insert(0) += 1;
    }
}

/// Folds one event into a case row (the row exists or is created by the first event).
fn evolve(row: &mut CaseRow, e: &Applied) {
    let env = &e.envelope;
    let at = env.occurred_at;
    if e.key_id.is_some() {
        row.key_id = e.key_id;
    }
    if let Some(c) = client_ref(e) {
        row.client_ref = Some(c);
    }
    match &env.data {
        EventData::GuidanceRequested(d) => {
            row.status = "requested".into();
            row.requested_at = at;
            row.closed_at = None;
            row.aftercare_started_at = None;
            row.channel = Some(code(d.channel));
            row.language = Some(d.language.code().to_owned());
        }
        EventData::GuidanceAccepted(d) => {
            row.status = "open".into();
            if let Some(l) = d.legal_status {
                row.legal_status = Some(code(l));
            }
            if row.detention_since.is_none() && row.released_on.is_none() {
                row.in_detention = d.setting == GuidanceSetting::InDetention;
            }
        }
        EventData::GuidanceDeclined(_) => {
            row.status = "declined".into();
            row.closed_at = Some(at);
        }
        EventData::GuidanceClosed(_) => {
            row.status = "closed".into();
            row.closed_at = Some(at);
        }
        EventData::AftercareStarted(d) => {
            row.status = "after_care".into();
            row.aftercare_started_at = Some(at);
            row.add_domains(d.life_domains.iter().map(|l| l.code()));
        }
        EventData::IntakeHeld(d) => {
            row.add_domains(d.life_domains.iter().map(|l| l.code()));
            row.language = Some(d.language.code().to_owned());
            row.contact(at);
        }
        EventData::PlanSet(d) => row.add_domains(d.life_domains.iter().map(|l| l.code())),
        EventData::PlanAdjusted(d) => row.add_domains(d.life_domains.iter().map(|l| l.code())),
        EventData::InterventionRecorded(d) => {
            row.count_intervention(d.mode);
            row.add_domains(d.life_domains.iter().map(|l| l.code()));
            row.language = Some(d.language.code().to_owned());
            row.contact(at);
        }
        EventData::UrgentRequestHandled(d) => {
            row.urgent_request_count += 1;
            row.count_intervention(InterventionMode::PracticalHelp);
            row.add_domains([d.life_domain.code()]);
            row.contact(at);
        }
        EventData::FamilyContactFacilitated(_) => {
            row.family_contact_count += 1;
            row.contact(at);
        }
        EventData::RelativeSupported(d) => row.add_domains(d.life_domains.iter().map(|l| l.code())),
        EventData::DetentionStarted(d) => {
            row.in_detention = true;
            row.prison = Some(code(d.prison));
            row.legal_status = Some(code(d.legal_status));
            row.detention_since = Some(d.started_on);
            row.release_scheduled_on = None;
            row.released_on = None;
            row.aftercare_started_at = None;
        }
        EventData::DetaineeTransferred(d) => row.prison = Some(code(d.to_prison)),
        EventData::LegalStatusChanged(d) => row.legal_status = Some(code(d.legal_status)),
        EventData::ReleaseScheduled(d) => row.release_scheduled_on = Some(d.release_on),
        EventData::DetaineeReleased(d) => {
            row.in_detention = false;
            row.prison = None;
            row.released_on = Some(d.released_on);
            row.release_scheduled_on = None;
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

    fn tables(&self) -> &'static [&'static str] {
        &["caseload", "coming_up"]
    }

    fn reader_indexes(&self) -> &'static [&'static str] {
        // The lists and the coming-up agenda read by these; the view writes by case and erases by key.
        &["caseload_by_activity", "caseload_by_release", "coming_up_by_date"]
    }
}

/// One thing coming up for a case.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct ComingUpRow {
    /// Organisation.
    #[serde(skip)]
    pub org_id: String,
    /// The case.
    pub case_id: String,
    /// `release`, `leave` or `outing`.
    pub item: String,
    /// Sequence of the event that announced it (0 for the scheduled release of a case).
    #[serde(skip)]
    pub item_seq: i64,
    /// The day.
    pub on_date: NaiveDate,
    /// The release kind, or the purpose of the leave or outing.
    pub detail: String,
    /// The client's data key id.
    #[serde(skip)]
    pub key_id: Option<Uuid>,
    /// The organisation's reference of the client; `None` once erased.
    pub client_ref: Option<String>,
}

enum Release {
    Scheduled(ComingUpRow),
    Cleared,
}

async fn apply(tx: &mut PgConnection, events: &[Applied]) -> Result<(), sqlx::Error> {
    let cases: Vec<&Applied> = events.iter().filter(|e| e.envelope.subject.kind() == AggregateKind::Cases).collect();
    let erased = erased_key_ids(events);
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
        let mut releases: HashMap<(String, String), Release> = HashMap::new();
        let mut items: Vec<ComingUpRow> = Vec::new();
        for e in &cases {
            let env = &e.envelope;
            let key = (env.org.to_string(), env.subject.id().to_owned());
            let row = rows
                .entry(key.clone())
                .or_insert_with(|| CaseRow::new(env.org.as_str(), env.subject.id(), env.occurred_at));
            evolve(row, e);
            let item = |item: &str, item_seq: i64, on_date: NaiveDate, detail: String| ComingUpRow {
                org_id: key.0.clone(),
                case_id: key.1.clone(),
                item: item.to_owned(),
                item_seq,
                on_date,
                detail,
                key_id: e.key_id,
                client_ref: client_ref(e),
            };
            match &env.data {
                EventData::ReleaseScheduled(d) => {
                    releases.insert(key.clone(), Release::Scheduled(item("release", 0, d.release_on, code(d.kind))));
                }
                EventData::DetaineeReleased(_) | EventData::DetentionStarted(_) => {
                    releases.insert(key.clone(), Release::Cleared);
                }
                EventData::LeavePrepared(d) => items.push(item("leave", e.seq as i64, d.leave_on, code(d.purpose))),
                EventData::OutingEscorted(d) => items.push(item("outing", e.seq as i64, d.outing_on, code(d.purpose))),
                _ => {}
            }
        }
        upsert(tx, rows.into_values().collect()).await?;
        if !releases.is_empty() {
            let (orgs, ids): (Vec<String>, Vec<String>) = releases.keys().cloned().unzip();
            sqlx::query(
                "DELETE FROM coming_up c USING UNNEST($1::text[], $2::text[]) AS k(org_id, case_id)
                 WHERE c.org_id = k.org_id AND c.case_id = k.case_id AND c.item = 'release'",
            )
            .bind(&orgs)
            .bind(&ids)
            .execute(&mut *tx)
            .await?;
            items.extend(releases.into_values().filter_map(|r| match r {
                Release::Scheduled(row) => Some(row),
                Release::Cleared => None,
            }));
        }
        insert_coming_up(tx, items).await?;
    }
    if !erased.is_empty() {
        sqlx::query("UPDATE caseload SET client_ref = NULL WHERE key_id = ANY($1)")
            .bind(&erased)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE coming_up SET client_ref = NULL WHERE key_id = ANY($1)")
            .bind(&erased)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}

async fn insert_coming_up(tx: &mut PgConnection, items: Vec<ComingUpRow>) -> Result<(), sqlx::Error> {
    if items.is_empty() {
        return Ok(());
    }
    let mut org = Vec::new();
    let mut case = Vec::new();
    let mut item = Vec::new();
    let mut seq = Vec::new();
    let mut on = Vec::new();
    let mut detail = Vec::new();
    let mut key = Vec::new();
    let mut cref = Vec::new();
    for r in items {
        org.push(r.org_id);
        case.push(r.case_id);
        item.push(r.item);
        seq.push(r.item_seq);
        on.push(r.on_date);
        detail.push(r.detail);
        key.push(r.key_id);
        cref.push(r.client_ref);
    }
    sqlx::query(
        "INSERT INTO coming_up (org_id, case_id, item, item_seq, on_date, detail, key_id, client_ref)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::date[], $6::text[], $7::uuid[],
            $8::text[])
         ON CONFLICT (org_id, case_id, item, item_seq) DO UPDATE SET on_date = EXCLUDED.on_date,
            detail = EXCLUDED.detail, key_id = EXCLUDED.key_id, client_ref = EXCLUDED.client_ref",
    )
    .bind(&org)
    .bind(&case)
    .bind(&item)
    .bind(&seq)
    .bind(&on)
    .bind(&detail)
    .bind(&key)
    .bind(&cref)
    .execute(tx)
    .await?;
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
        c.detention_since.push(r.detention_since);
        c.release_scheduled_on.push(r.release_scheduled_on);
        c.released_on.push(r.released_on);
        c.aftercare_started_at.push(r.aftercare_started_at);
        c.urgent_request_count.push(r.urgent_request_count);
        c.family_contact_count.push(r.family_contact_count);
    }
    sqlx::query(
        "INSERT INTO caseload (org_id, case_id, key_id, client_ref, status, channel, requested_at, closed_at,
            legal_status, in_detention, prison, life_domains, interventions_by_mode, intervention_count,
            last_contact_at, language, last_event_at, version, detention_since, release_scheduled_on, released_on,
            aftercare_started_at, urgent_request_count, family_contact_count)
         SELECT org_id, case_id, key_id, client_ref, status, channel, requested_at, closed_at, legal_status,
            in_detention, prison, coalesce(string_to_array(nullif(domains, ''), ','), '{}'), by_mode::jsonb,
            intervention_count, last_contact_at, language, last_event_at, version, detention_since,
            release_scheduled_on, released_on, aftercare_started_at, urgent_request_count, family_contact_count
         FROM UNNEST($1::text[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::timestamptz[],
            $8::timestamptz[], $9::text[], $10::bool[], $11::text[], $12::text[], $13::text[], $14::int4[],
            $15::timestamptz[], $16::text[], $17::timestamptz[], $18::int8[], $19::date[], $20::date[],
            $21::date[], $22::timestamptz[], $23::int4[], $24::int4[])
            AS u(org_id, case_id, key_id, client_ref, status, channel, requested_at, closed_at, legal_status,
                 in_detention, prison, domains, by_mode, intervention_count, last_contact_at, language,
                 last_event_at, version, detention_since, release_scheduled_on, released_on, aftercare_started_at,
                 urgent_request_count, family_contact_count)
         ON CONFLICT (org_id, case_id) DO UPDATE SET key_id = EXCLUDED.key_id, client_ref = EXCLUDED.client_ref,
            status = EXCLUDED.status, channel = EXCLUDED.channel, requested_at = EXCLUDED.requested_at,
            closed_at = EXCLUDED.closed_at, legal_status = EXCLUDED.legal_status,
            in_detention = EXCLUDED.in_detention, prison = EXCLUDED.prison, life_domains = EXCLUDED.life_domains,
            interventions_by_mode = EXCLUDED.interventions_by_mode,
            intervention_count = EXCLUDED.intervention_count, last_contact_at = EXCLUDED.last_contact_at,
            language = EXCLUDED.language, last_event_at = EXCLUDED.last_event_at, version = EXCLUDED.version,
            detention_since = EXCLUDED.detention_since, release_scheduled_on = EXCLUDED.release_scheduled_on,
            released_on = EXCLUDED.released_on, aftercare_started_at = EXCLUDED.aftercare_started_at,
            urgent_request_count = EXCLUDED.urgent_request_count,
            family_contact_count = EXCLUDED.family_contact_count",
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
    .bind(&c.detention_since)
    .bind(&c.release_scheduled_on)
    .bind(&c.released_on)
    .bind(&c.aftercare_started_at)
    .bind(&c.urgent_request_count)
    .bind(&c.family_contact_count)
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
    detention_since: Vec<Option<NaiveDate>>,
    release_scheduled_on: Vec<Option<NaiveDate>>,
    released_on: Vec<Option<NaiveDate>>,
    aftercare_started_at: Vec<Option<DateTime<Utc>>>,
    urgent_request_count: Vec<i32>,
    family_contact_count: Vec<i32>,
}

/// Filters of the caseload listing.
#[derive(Debug, Clone, Default)]
pub struct CaseFilter {
    /// Only cases with this status.
    pub status: Option<String>,
    /// Only open cases (requested, open, after_care: true) or ended ones (declined, closed:
    /// false).
    pub open: Option<bool>,
    /// Only cases in (true) or out of (false) detention.
    pub in_detention: Option<bool>,
    /// Only clients with this legal status.
    pub legal_status: Option<String>,
    /// Only clients with this language.
    pub language: Option<String>,
    /// Only cases that worked on this life domain.
    pub life_domain: Option<String>,
    /// Only cases active (last event) on or after this moment: "recent".
    pub active_since: Option<DateTime<Utc>>,
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
    let rows: Vec<CaseRow> = sqlx::query_as(
        "SELECT * FROM caseload WHERE org_id = $1
           AND ($2::text IS NULL OR status = $2)
           AND ($3::bool IS NULL OR in_detention = $3)
           AND ($4::timestamptz IS NULL OR (last_event_at, case_id) < ($4, $5))
           AND ($7::bool IS NULL OR (status IN ('requested', 'open', 'after_care')) = $7)
           AND ($8::text IS NULL OR legal_status = $8)
           AND ($9::text IS NULL OR language = $9)
           AND ($10::text IS NULL OR $10 = ANY(life_domains))
           AND ($11::timestamptz IS NULL OR last_event_at >= $11)
         ORDER BY last_event_at DESC, case_id DESC LIMIT $6",
    )
    .bind(org.as_str())
    .bind(&filter.status)
    .bind(filter.in_detention)
    .bind(after_at)
    .bind(after_id)
    .bind(filter.limit)
    .bind(filter.open)
    .bind(&filter.legal_status)
    .bind(&filter.language)
    .bind(&filter.life_domain)
    .bind(filter.active_since)
    .fetch_all(pool)
    .await?;
    with_refused_versions(pool, org, rows).await
}

/// One case of an organisation.
pub async fn get(pool: &PgPool, org: &OrgId, case_id: &str) -> Result<Option<CaseRow>, sqlx::Error> {
    let row: Option<CaseRow> = sqlx::query_as("SELECT * FROM caseload WHERE org_id = $1 AND case_id = $2")
        .bind(org.as_str())
        .bind(case_id)
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(with_refused_versions(pool, org, vec![row]).await?.pop())
}

/// The broker checks `expectedversion` against the last message stored on a case's subject, a
/// quarantined one included: each row's version becomes the later of its last applied event
/// and its last quarantined message (one indexed lookup for the rows).
async fn with_refused_versions(
    pool: &PgPool,
    org: &OrgId,
    mut rows: Vec<CaseRow>,
) -> Result<Vec<CaseRow>, sqlx::Error> {
    if rows.is_empty() {
        return Ok(rows);
    }
    let subject = |case_id: &str| {
        format!("{}.{org}.{}.{case_id}", relais_eventlog::subjects::PREFIX, AggregateKind::Cases.as_str())
    };
    let subjects: Vec<String> = rows.iter().map(|r| subject(&r.case_id)).collect();
    let refused: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT subject, max(seq) FROM quarantine WHERE subject = ANY($1) GROUP BY subject",
    )
    .bind(&subjects)
    .fetch_all(pool)
    .await?
    .into_iter()
    .collect();
    for (row, subject) in rows.iter_mut().zip(&subjects) {
        if let Some(seq) = refused.get(subject) {
            row.version = row.version.max(*seq);
        }
    }
    Ok(rows)
}

/// What is coming up for an organisation's cases between two days (inclusive), by day;
/// `after` continues a page: (day, case, item, item_seq) of the last row.
pub async fn coming_up(
    pool: &PgPool,
    org: &OrgId,
    from: NaiveDate,
    to: NaiveDate,
    item: Option<&str>,
    after: Option<&(NaiveDate, String, String, i64)>,
    limit: i64,
) -> Result<Vec<ComingUpRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT * FROM coming_up WHERE org_id = $1 AND on_date BETWEEN $2 AND $3
           AND ($4::text IS NULL OR item = $4)
           AND ($5::date IS NULL OR (on_date, case_id, item, item_seq) > ($5, $6, $7, $8))
         ORDER BY on_date, case_id, item, item_seq LIMIT $9",
    )
    .bind(org.as_str())
    .bind(from)
    .bind(to)
    .bind(item)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1.clone()))
    .bind(after.map(|a| a.2.clone()))
    .bind(after.map(|a| a.3))
    .bind(limit)
    .fetch_all(pool)
    .await
}
