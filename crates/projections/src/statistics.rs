//! Funder statistics: per period, per recognising authority and per organisation, from the
//! statistical fields of the events only, so that past periods never change when a client is
//! erased later (erasure destroys keys; statistical fields stay readable).
//!
//! Each event gives facts (`stats_facts`): a measure, up to two dimensions, a counting key for
//! the person (an organisation's case, a referral's sending case, a participant's key id, all
//! opaque and never shown) and a value. The day of a fact is the Brussels date of the event.
//!
//! Measures that come from the same events are stored as one fact per event and told apart
//! when read ([`query`]), so that the projection, a rebuild and the table handle fewer rows
//! (docs/BENCHMARKS.md, "An eighth session"):
//! - a `clients_guided` fact carries the legal status, the place and the language (`dim1`,
//!   `dim2`, `dim3`): it is also read as `clients_by_legal_situation` and `clients_by_language`;
//! - an `interventions` fact (stored only) carries the mode, the life domains (`domains`) and
//!   the minutes as its value: it is read as `interventions_by_mode` (one),
//!   `intervention_minutes_by_mode` (the minutes) and `interventions_by_life_domain` (one per
//!   life domain);
//! - an `urgent_help` fact (stored only) carries the life domain: it is read as
//!   `interventions_by_mode` (`practical_help`) and `interventions_by_life_domain`.
//!
//! | measure | dimension 1 | dimension 2 | from |
//! |---|---|---|---|
//! | `new_requests` | channel | | guidance requested |
//! | `clients_guided` | | | every guidance, situation and network event after acceptance |
//! | `clients_by_legal_situation` | legal status or `unknown` | `in_detention` / `at_liberty` | same |
//! | `clients_by_language` | language or `unknown` | | same |
//! | `interventions_by_mode` | mode | | interventions; urgent help as `practical_help` |
//! | `interventions_by_life_domain` | life domain | | same |
//! | `intervention_minutes_by_mode` | mode | | interventions (value: minutes) |
//! | `family_contacts` | relation | form | family contact facilitated |
//! | `relatives_supported` | relation | | relative supported |
//! | `referrals` | stage | destination type (`organisation` or the outside service) | every referral event |
//! | `activity_participants` | activity kind | | participant enrolled |
//! | `activity_dropouts` | activity kind | reason | participant dropped out |
//!
//! **Anonymity.** A cell counts the distinct people in it; any cell with fewer than
//! [`MIN_PEOPLE`] people is suppressed: its people and count are withheld (`null` in JSON,
//! `<5` in CSV). Complementary cells are not suppressed: totals of a finer breakdown may
//! narrow a suppressed cell down, so publish one breakdown per table.

use crate::support::code;
use crate::worker::{Applied, View};
use chrono::{Datelike, NaiveDate};
use futures::future::BoxFuture;
use relais_domain::aggregates::brussels_date;
use relais_domain::events::{EventData, GuidanceSetting, ReferralDestination};
use relais_domain::reference::{CodeList, InterventionMode};
use relais_domain::{AggregateKind, OrgId};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;

/// Cells with fewer distinct people are suppressed.
pub const MIN_PEOPLE: i64 = 5;

/// The measures, in report order.
pub const MEASURES: &[&str] = &[
    "new_requests",
    "clients_guided",
    "clients_by_legal_situation",
    "clients_by_language",
    "interventions_by_mode",
    "interventions_by_life_domain",
    "intervention_minutes_by_mode",
    "family_contacts",
    "relatives_supported",
    "referrals",
    "activity_participants",
    "activity_dropouts",
];

/// The statistics view.
pub struct Statistics;

impl View for Statistics {
    fn name(&self) -> &'static str {
        "statistics"
    }

    fn apply<'a>(&'a self, tx: &'a mut PgConnection, events: &'a [Applied]) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(apply(tx, events))
    }

    fn tables(&self) -> &'static [&'static str] {
        &["stats_cases", "stats_referrals", "stats_activities", "stats_facts"]
    }

    fn reader_indexes(&self) -> &'static [&'static str] {
        // The statistics query reads by day; the view only appends facts.
        &["stats_facts_by_day"]
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct CaseState {
    org_id: String,
    case_id: String,
    legal_status: Option<String>,
    in_detention: bool,
    language: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
struct ReferralState {
    referral_id: String,
    sender_org: String,
    sender_case_id: String,
    destination_type: String,
}

struct Fact {
    seq: i64,
    n: i16,
    day: NaiveDate,
    org: String,
    measure: &'static str,
    dim1: String,
    dim2: String,
    dim3: String,
    /// Life domains, as codes joined by commas (codes have none).
    domains: String,
    person: String,
    value: i64,
}

#[derive(Default)]
struct Out {
    facts: Vec<Fact>,
}

impl Out {
    #[allow(clippy::too_many_arguments)]
    fn fact(&mut self, e: &Applied, measure: &'static str, dim1: &str, dim2: &str, person: &str, value: i64) {
        self.push(e, measure, [dim1, dim2, ""], String::new(), person, value);
    }

    fn push(&mut self, e: &Applied, measure: &'static str, dims: [&str; 3], domains: String, person: &str, value: i64) {
        let n = self.facts.iter().rev().take_while(|f| f.seq == e.seq as i64).count() as i16;
        self.facts.push(Fact {
            seq: e.seq as i64,
            n,
            day: brussels_date(e.envelope.occurred_at),
            org: e.envelope.org.to_string(),
            measure,
            dim1: dims[0].to_owned(),
            dim2: dims[1].to_owned(),
            dim3: dims[2].to_owned(),
            domains,
            person: person.to_owned(),
            value,
        });
    }
}

fn is_guidance(data: &EventData) -> bool {
    matches!(
        data,
        EventData::GuidanceAccepted(_)
            | EventData::IntakeHeld(_)
            | EventData::PlanSet(_)
            | EventData::PlanAdjusted(_)
            | EventData::InterventionRecorded(_)
            | EventData::UrgentRequestHandled(_)
            | EventData::FamilyContactFacilitated(_)
            | EventData::RelativeSupported(_)
            | EventData::AftercareStarted(_)
            | EventData::LeavePrepared(_)
            | EventData::OutingEscorted(_)
    )
}

fn fold_case(state: &mut CaseState, e: &Applied, out: &mut Out) {
    let person = format!("c:{}/{}", state.org_id, state.case_id);
    match &e.envelope.data {
        EventData::GuidanceRequested(d) => {
            state.language = Some(d.language.code().to_owned());
            out.fact(e, "new_requests", d.channel.code(), "", &person, 1);
        }
        EventData::GuidanceAccepted(d) => {
            if let Some(l) = d.legal_status {
                state.legal_status = Some(code(l));
            }
            state.in_detention = d.setting == GuidanceSetting::InDetention;
        }
        EventData::IntakeHeld(d) => state.language = Some(d.language.code().to_owned()),
        EventData::InterventionRecorded(d) => state.language = Some(d.language.code().to_owned()),
        EventData::DetentionStarted(d) => {
            state.in_detention = true;
            state.legal_status = Some(code(d.legal_status));
        }
        EventData::LegalStatusChanged(d) => state.legal_status = Some(code(d.legal_status)),
        EventData::DetaineeReleased(_) => state.in_detention = false,
        _ => {}
    }
    if !is_guidance(&e.envelope.data) {
        return;
    }
    // One fact for `clients_guided`, `clients_by_legal_situation` and `clients_by_language`
    // (told apart by `query`).
    let legal = state.legal_status.as_deref().unwrap_or("unknown");
    let place = if state.in_detention { "in_detention" } else { "at_liberty" };
    let language = state.language.as_deref().unwrap_or("unknown");
    out.push(e, "clients_guided", [legal, place, language], String::new(), &person, 1);
    match &e.envelope.data {
        EventData::InterventionRecorded(d) => {
            // Read as `interventions_by_mode`, `intervention_minutes_by_mode` and
            // `interventions_by_life_domain`.
            let domains = d.life_domains.iter().map(|l| l.code()).collect::<Vec<_>>().join(",");
            let minutes = i64::from(d.duration_minutes);
            out.push(e, "interventions", [d.mode.code(), "", ""], domains, &person, minutes);
        }
        // Read as `interventions_by_mode` (`practical_help`) and `interventions_by_life_domain`.
        EventData::UrgentRequestHandled(d) => out.fact(e, "urgent_help", d.life_domain.code(), "", &person, 1),
        EventData::FamilyContactFacilitated(d) => {
            out.fact(e, "family_contacts", d.relation.code(), d.form.code(), &person, 1);
        }
        EventData::RelativeSupported(d) => out.fact(e, "relatives_supported", d.relation.code(), "", &person, 1),
        _ => {}
    }
}

fn referral_stage(data: &EventData) -> Option<&'static str> {
    Some(match data {
        EventData::ReferralMade(_) => "made",
        EventData::ReferralReceived(_) => "received",
        EventData::ReferralAccepted(_) => "accepted",
        EventData::ReferralFirstContactMade(_) => "first_contact",
        EventData::ReferralCompleted(_) => "completed",
        EventData::ReferralDeclined(_) => "declined",
        EventData::ReferralCancelled(_) => "cancelled",
        EventData::ReferralExpired(_) => "expired",
        _ => return None,
    })
}

async fn apply(tx: &mut PgConnection, events: &[Applied]) -> Result<(), sqlx::Error> {
    let mut case_keys = (Vec::new(), Vec::new());
    let mut referral_ids = Vec::new();
    let mut activity_ids = Vec::new();
    for e in events {
        let id = e.envelope.subject.id().to_owned();
        match e.envelope.subject.kind() {
            AggregateKind::Cases => {
                case_keys.0.push(e.envelope.org.to_string());
                case_keys.1.push(id);
            }
            AggregateKind::Referrals => referral_ids.push(id),
            AggregateKind::Activities => activity_ids.push(id),
            _ => {}
        }
    }
    if case_keys.0.is_empty() && referral_ids.is_empty() && activity_ids.is_empty() {
        return Ok(());
    }
    // The states the batch builds on, in one statement (one round trip instead of three).
    type States = (Json<Vec<CaseState>>, Json<Vec<ReferralState>>, Json<Vec<(String, String)>>);
    let (Json(cases), Json(referrals), Json(activities)): States = sqlx::query_as(
        "SELECT
           (SELECT coalesce(jsonb_agg(t), '[]') FROM stats_cases t
             WHERE (t.org_id, t.case_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))),
           (SELECT coalesce(jsonb_agg(t), '[]') FROM stats_referrals t WHERE t.referral_id = ANY($3)),
           (SELECT coalesce(jsonb_agg(jsonb_build_array(t.activity_id, t.kind)), '[]') FROM stats_activities t
             WHERE t.activity_id = ANY($4))",
    )
    .bind(&case_keys.0)
    .bind(&case_keys.1)
    .bind(&referral_ids)
    .bind(&activity_ids)
    .fetch_one(&mut *tx)
    .await?;
    let before: BTreeMap<(String, String), CaseState> =
        cases.into_iter().map(|c| ((c.org_id.clone(), c.case_id.clone()), c)).collect();
    let mut cases = before.clone();
    let mut referrals: BTreeMap<String, ReferralState> =
        referrals.into_iter().map(|r| (r.referral_id.clone(), r)).collect();
    let mut activities: BTreeMap<String, String> = activities.into_iter().collect();
    let (mut new_referrals, mut new_activities) = (Vec::new(), Vec::new());
    let mut out = Out::default();
    for e in events {
        let env = &e.envelope;
        let id = env.subject.id();
        match env.subject.kind() {
            AggregateKind::Cases => {
                let key = (env.org.to_string(), id.to_owned());
                let state = cases.entry(key.clone()).or_insert_with(|| CaseState {
                    org_id: key.0,
                    case_id: key.1,
                    legal_status: None,
                    in_detention: false,
                    language: None,
                });
                fold_case(state, e, &mut out);
            }
            AggregateKind::Referrals => {
                if let EventData::ReferralMade(d) = &env.data {
                    let destination_type = match &d.destination {
                        ReferralDestination::Organisation(_) => "organisation".to_owned(),
                        ReferralDestination::OutsideService(s) => code(*s),
                    };
                    let r = ReferralState {
                        referral_id: id.to_owned(),
                        sender_org: env.org.to_string(),
                        sender_case_id: d.case_id.clone(),
                        destination_type,
                    };
                    new_referrals.push(r.clone());
                    referrals.insert(id.to_owned(), r);
                }
                let (Some(r), Some(stage)) = (referrals.get(id), referral_stage(&env.data)) else { continue };
                let person = format!("c:{}/{}", r.sender_org, r.sender_case_id);
                out.fact(e, "referrals", stage, &r.destination_type, &person, 1);
            }
            AggregateKind::Activities => {
                if let EventData::ActivityPlanned(d) = &env.data {
                    activities.insert(id.to_owned(), code(d.kind));
                    new_activities.push((id.to_owned(), code(d.kind)));
                }
                let kind = activities.get(id).cloned().unwrap_or_else(|| "unknown".into());
                let Some(key) = e.key_id else { continue };
                let person = format!("k:{key}");
                match &env.data {
                    EventData::ParticipantEnrolled(_) => out.fact(e, "activity_participants", &kind, "", &person, 1),
                    EventData::ParticipantDroppedOut(d) => {
                        out.fact(e, "activity_dropouts", &kind, d.reason.code(), &person, 1)
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    // Case states that changed or are new.
    let (mut o, mut c, mut l, mut d, mut g) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (key, s) in cases {
        if before.get(&key) == Some(&s) {
            continue;
        }
        o.push(s.org_id);
        c.push(s.case_id);
        l.push(s.legal_status);
        d.push(s.in_detention);
        g.push(s.language);
    }
    let (mut ra, mut rb, mut rc, mut rd) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in new_referrals {
        ra.push(r.referral_id);
        rb.push(r.sender_org);
        rc.push(r.sender_case_id);
        rd.push(r.destination_type);
    }
    let (aa, ak): (Vec<String>, Vec<String>) = new_activities.into_iter().unzip();
    let n = out.facts.len();
    let mut cols = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for f in out.facts {
        cols.0.push(f.seq);
        cols.1.push(f.n);
        cols.2.push(f.day);
        cols.3.push(f.org);
        cols.4.push(f.measure.to_owned());
        cols.5.push(f.dim1);
        cols.6.push(f.dim2);
        cols.7.push(f.dim3);
        cols.8.push(f.domains);
        cols.9.push(f.person);
        cols.10.push(f.value);
    }
    if o.is_empty() && ra.is_empty() && aa.is_empty() && cols.0.is_empty() {
        return Ok(());
    }
    // Every write in one statement (one round trip instead of up to four); the tables are
    // distinct, so the statement's single snapshot changes nothing. Facts are inserted
    // without `ON CONFLICT`: the batch's checkpoint is claimed in the same transaction, so no
    // sequence comes twice, and a duplicate would be a bug that should fail the batch, not
    // hide (the arbiter cost a probe and a WAL record per fact).
    sqlx::query(
        "WITH cases AS (
           INSERT INTO stats_cases (org_id, case_id, legal_status, in_detention, language)
           SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bool[], $5::text[])
           ON CONFLICT (org_id, case_id) DO UPDATE SET legal_status = EXCLUDED.legal_status,
              in_detention = EXCLUDED.in_detention, language = EXCLUDED.language),
         referrals AS (
           INSERT INTO stats_referrals (referral_id, sender_org, sender_case_id, destination_type)
           SELECT * FROM UNNEST($6::text[], $7::text[], $8::text[], $9::text[]) ON CONFLICT DO NOTHING),
         activities AS (
           INSERT INTO stats_activities (activity_id, kind) SELECT * FROM UNNEST($10::text[], $11::text[])
           ON CONFLICT (activity_id) DO UPDATE SET kind = EXCLUDED.kind)
         INSERT INTO stats_facts (seq, n, day, org_id, measure, dim1, dim2, dim3, domains, person, value)
         SELECT u.seq, u.n, u.day, u.org_id, u.measure, u.dim1, u.dim2, u.dim3, string_to_array(u.domains, ','),
                u.person, u.value
         FROM UNNEST($12::int8[], $13::int2[], $14::date[], $15::text[], $16::text[], $17::text[], $18::text[],
            $19::text[], $20::text[], $21::text[], $22::int8[])
           AS u (seq, n, day, org_id, measure, dim1, dim2, dim3, domains, person, value)",
    )
    .bind(&o)
    .bind(&c)
    .bind(&l)
    .bind(&d)
    .bind(&g)
    .bind(&ra)
    .bind(&rb)
    .bind(&rc)
    .bind(&rd)
    .bind(&aa)
    .bind(&ak)
    .bind(&cols.0)
    .bind(&cols.1)
    .bind(&cols.2)
    .bind(&cols.3)
    .bind(&cols.4)
    .bind(&cols.5)
    .bind(&cols.6)
    .bind(&cols.7)
    .bind(&cols.8)
    .bind(&cols.9)
    .bind(&cols.10)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The length of a period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// Calendar months.
    Month,
    /// Calendar quarters.
    Quarter,
    /// Calendar years.
    Year,
}

impl Period {
    /// Parses `month`, `quarter` or `year`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "month" => Some(Self::Month),
            "quarter" => Some(Self::Quarter),
            "year" => Some(Self::Year),
            _ => None,
        }
    }

    /// The first day of the period that holds `day`.
    pub fn start_of(self, day: NaiveDate) -> NaiveDate {
        let month = match self {
            Self::Month => day.month(),
            Self::Quarter => (day.month() - 1) / 3 * 3 + 1,
            Self::Year => 1,
        };
        NaiveDate::from_ymd_opt(day.year(), month, 1).unwrap_or(day)
    }

    /// The last day of the period that holds `day`.
    pub fn end_of(self, day: NaiveDate) -> NaiveDate {
        let months = match self {
            Self::Month => 1,
            Self::Quarter => 3,
            Self::Year => 12,
        };
        self.start_of(day)
            .checked_add_months(chrono::Months::new(months))
            .and_then(|next| next.pred_opt())
            .unwrap_or(day)
    }

    /// `month`, `quarter` or `year`.
    pub fn name(self) -> &'static str {
        self.sql()
    }

    fn sql(self) -> &'static str {
        match self {
            Self::Month => "month",
            Self::Quarter => "quarter",
            Self::Year => "year",
        }
    }
}

/// How cells are grouped besides the period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    /// Per recognising authority.
    Authority,
    /// Per organisation (with its authority).
    Organisation,
    /// All organisations together.
    Total,
}

impl Grouping {
    /// Parses `authority`, `organisation` or `total`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "authority" => Some(Self::Authority),
            "organisation" => Some(Self::Organisation),
            "total" => Some(Self::Total),
            _ => None,
        }
    }
}

/// What a statistics request asks for.
#[derive(Debug, Clone)]
pub struct StatsQuery {
    /// Period length.
    pub period: Period,
    /// First day (inclusive).
    pub from: NaiveDate,
    /// Last day (inclusive).
    pub to: NaiveDate,
    /// Grouping.
    pub grouping: Grouping,
    /// Only this organisation.
    pub org: Option<OrgId>,
    /// Only this authority.
    pub authority: Option<String>,
    /// Only this measure.
    pub measure: Option<String>,
}

/// One cell of the statistics, after suppression.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct Cell {
    /// The first day of the period.
    pub period: NaiveDate,
    /// The recognising authority (`none` for the coordinators), unless grouped in total.
    pub authority: Option<String>,
    /// The organisation, when grouped per organisation.
    pub organisation: Option<String>,
    /// The measure.
    pub measure: String,
    /// First dimension (empty when the measure has none).
    pub dimension_1: String,
    /// Second dimension.
    pub dimension_2: String,
    /// Distinct people in the cell; `None` when suppressed.
    pub people: Option<i64>,
    /// Events (or the measure's value, such as minutes); `None` when suppressed.
    pub count: Option<i64>,
    /// True when the cell had fewer than [`MIN_PEOPLE`] people.
    pub suppressed: bool,
}

/// The statistics cells of a query, small cells suppressed.
pub async fn query(pool: &PgPool, q: &StatsQuery) -> Result<Vec<Cell>, sqlx::Error> {
    let (authority, organisation, group) = match q.grouping {
        Grouping::Authority => ("coalesce(o.authority, 'none')", "NULL::text", "2"),
        Grouping::Organisation => ("coalesce(o.authority, 'none')", "f.org_id", "2, 3"),
        Grouping::Total => ("NULL::text", "NULL::text", "2"),
    };
    // Some facts stand for several measures (see the module's documentation).
    let mut cells: Vec<Cell> = sqlx::query_as(&format!(
        "SELECT date_trunc('{period}', f.day)::date AS period, {authority} AS authority,
            {organisation} AS organisation, m.measure, m.dim1 AS dimension_1, m.dim2 AS dimension_2,
            count(DISTINCT f.person) AS people, sum(m.value)::int8 AS count, false AS suppressed
         FROM stats_facts f LEFT JOIN organisations o ON o.id = f.org_id
         CROSS JOIN LATERAL (
           SELECT f.measure, f.dim1, f.dim2, f.value
            WHERE f.measure NOT IN ('clients_guided', 'interventions', 'urgent_help')
           UNION ALL SELECT 'clients_guided', '', '', f.value WHERE f.measure = 'clients_guided'
           UNION ALL SELECT 'clients_by_legal_situation', f.dim1, f.dim2, f.value WHERE f.measure = 'clients_guided'
           UNION ALL SELECT 'clients_by_language', f.dim3, '', f.value WHERE f.measure = 'clients_guided'
           UNION ALL SELECT 'interventions_by_mode', f.dim1, f.dim2, 1 WHERE f.measure = 'interventions'
           UNION ALL SELECT 'intervention_minutes_by_mode', f.dim1, f.dim2, f.value WHERE f.measure = 'interventions'
           UNION ALL SELECT 'interventions_by_life_domain', d, '', 1
             FROM unnest(f.domains) AS d WHERE f.measure = 'interventions'
           UNION ALL SELECT 'interventions_by_mode', $7::text, '', 1 WHERE f.measure = 'urgent_help'
           UNION ALL SELECT 'interventions_by_life_domain', f.dim1, '', 1 WHERE f.measure = 'urgent_help'
         ) AS m (measure, dim1, dim2, value)
         WHERE f.day BETWEEN $1 AND $2
           AND ($3::text IS NULL OR f.org_id = $3)
           AND ($4::text IS NULL OR coalesce(o.authority, 'none') = $4)
           AND ($5::text IS NULL OR m.measure = $5)
         GROUP BY 1, {group}, m.measure, m.dim1, m.dim2
         ORDER BY 1, 2, 3, array_position($6::text[], m.measure), m.dim1, m.dim2",
        period = q.period.sql(),
    ))
    .bind(q.from)
    .bind(q.to)
    .bind(q.org.as_ref().map(OrgId::as_str))
    .bind(&q.authority)
    .bind(&q.measure)
    .bind(MEASURES)
    .bind(InterventionMode::PracticalHelp.code())
    .fetch_all(pool)
    .await?;
    for c in &mut cells {
        if c.people.unwrap_or(0) < MIN_PEOPLE {
            c.people = None;
            c.count = None;
            c.suppressed = true;
        }
    }
    Ok(cells)
}

/// The cells as CSV (RFC 4180), suppressed cells shown as `<5` people and an empty count.
pub fn to_csv(cells: &[Cell]) -> String {
    fn field(s: &str) -> String {
        if s.contains([',', '"', '\n', '\r']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
    }
    let mut out = String::from("period,authority,organisation,measure,dimension_1,dimension_2,people,count\r\n");
    for c in cells {
        let people = match c.people {
            Some(p) => p.to_string(),
            None => format!("<{MIN_PEOPLE}"),
        };
        let count = c.count.map(|n| n.to_string()).unwrap_or_default();
        let row = [
            c.period.to_string(),
            c.authority.clone().unwrap_or_default(),
            c.organisation.clone().unwrap_or_default(),
            c.measure.clone(),
            c.dimension_1.clone(),
            c.dimension_2.clone(),
            people,
            count,
        ];
        out.push_str(&row.iter().map(|f| field(f)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).expect("a date")
    }

    #[test]
    fn a_period_starts_and_ends_on_calendar_boundaries() {
        assert_eq!(Period::Month.start_of(d(2026, 3, 15)), d(2026, 3, 1));
        assert_eq!(Period::Month.end_of(d(2026, 2, 10)), d(2026, 2, 28));
        assert_eq!(Period::Month.end_of(d(2028, 2, 10)), d(2028, 2, 29));
        assert_eq!(Period::Quarter.start_of(d(2026, 6, 30)), d(2026, 4, 1));
        assert_eq!(Period::Quarter.end_of(d(2026, 11, 25)), d(2026, 12, 31));
        assert_eq!(Period::Year.start_of(d(2026, 11, 25)), d(2026, 1, 1));
        assert_eq!(Period::Year.end_of(d(2026, 1, 1)), d(2026, 12, 31));
    }
}
