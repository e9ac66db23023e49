//! The referrals view: one row per referral, with its closed-loop stage (made, received,
//! accepted, first contact, completed / declined / cancelled / expired) and when each stage was
//! reached. The sender sees its referrals out, the receiving organisation its referrals in.
//!
//! Each side's personal fields are sealed with its own key of the client: the sender's client
//! reference and message, the receiver's client reference and decline text. They are forgotten
//! when that side's client is erased. The message is what the client consented to share with
//! the receiver: it is forgotten when the client withdraws that consent.
//!
//! What each side may see is decided by [`Direction`]: the receiver never sees the sender's
//! case id or client reference, the sender never sees the receiver's client reference.

use crate::support::{client_ref, code, erased_key_ids};
use crate::worker::{Applied, View};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use relais_domain::envelope::PersonalState;
use relais_domain::events::{ConsentScope, EventData, ReferralDestination};
use relais_domain::reference::CodeList;
use relais_domain::{AggregateKind, OrgId};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// The referrals view.
pub struct Referrals;

/// The stages of a referral, in loop order.
pub const STAGES: &[&str] =
    &["made", "received", "accepted", "first_contact", "completed", "declined", "cancelled", "expired"];

/// One referral as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ReferralRow {
    /// The referral id (the subject's id).
    pub referral_id: String,
    /// The sending organisation.
    pub sender_org: String,
    /// The sender's case the referral comes from.
    pub sender_case_id: String,
    /// The sender's data key of the client.
    pub sender_key_id: Option<Uuid>,
    /// The sender's reference of the client.
    pub sender_client_ref: Option<String>,
    /// `organisation` or `outside_service`.
    pub destination_kind: String,
    /// The receiving organisation's id or the outside service's code.
    pub destination: String,
    /// The receiving organisation, for a referral to one of the services.
    pub receiver_org: Option<String>,
    /// The receiver's data key of the client.
    pub receiver_key_id: Option<Uuid>,
    /// The receiver's reference of the client.
    pub receiver_client_ref: Option<String>,
    /// Life domains of the referral.
    pub life_domains: Vec<String>,
    /// The sender's message to the receiver.
    pub message: Option<String>,
    /// The stage reached.
    pub stage: String,
    /// Made.
    pub made_at: DateTime<Utc>,
    /// Received.
    pub received_at: Option<DateTime<Utc>>,
    /// Accepted.
    pub accepted_at: Option<DateTime<Utc>>,
    /// First contact.
    pub first_contact_at: Option<DateTime<Utc>>,
    /// Completed, declined, cancelled or expired.
    pub closed_at: Option<DateTime<Utc>>,
    /// When the current stage was reached.
    pub stage_at: DateTime<Utc>,
    /// Outcome, when completed.
    pub outcome: Option<String>,
    /// Why declined.
    pub decline_reason: Option<String>,
    /// The receiver's explanation to the sender.
    pub decline_text: Option<String>,
    /// Why cancelled.
    pub cancel_reason: Option<String>,
    /// Days open, when expired.
    pub days_open: Option<i32>,
    /// Stream sequence of the last event.
    pub version: i64,
}

impl View for Referrals {
    fn name(&self) -> &'static str {
        "referrals"
    }

    fn apply<'a>(&'a self, tx: &'a mut PgConnection, events: &'a [Applied]) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(apply(tx, events))
    }

    fn tables(&self) -> &'static [&'static str] {
        &["referrals"]
    }

    fn reader_indexes(&self) -> &'static [&'static str] {
        // The lists of referrals made and received; the view finds referrals by id, case and key.
        &["referrals_out", "referrals_in"]
    }
}

/// A withdrawal of consent to share: (sending organisation, case, receiving organisation).
type Withdrawal = (String, String, String);

fn withdrawal(e: &Applied) -> Option<Withdrawal> {
    match &e.envelope.data {
        EventData::ConsentWithdrawn(d) => match &d.scope {
            ConsentScope::ShareWithOrganisation(to) => {
                Some((e.envelope.org.to_string(), e.envelope.subject.id().to_owned(), to.to_string()))
            }
            _ => None,
        },
        _ => None,
    }
}

fn new_row(e: &Applied) -> Option<ReferralRow> {
    let EventData::ReferralMade(d) = &e.envelope.data else { return None };
    let at = e.envelope.occurred_at;
    let (kind, destination, receiver) = match &d.destination {
        ReferralDestination::Organisation(o) => ("organisation", o.to_string(), Some(o.to_string())),
        ReferralDestination::OutsideService(s) => ("outside_service", code(*s), None),
    };
    let present = e.envelope.personal == PersonalState::Present;
    Some(ReferralRow {
        referral_id: e.envelope.subject.id().to_owned(),
        sender_org: e.envelope.org.to_string(),
        sender_case_id: d.case_id.clone(),
        sender_key_id: e.key_id,
        sender_client_ref: client_ref(e),
        destination_kind: kind.into(),
        destination,
        receiver_org: receiver,
        receiver_key_id: None,
        receiver_client_ref: None,
        life_domains: crate::support::sorted_codes(d.life_domains.iter().map(|l| l.code())),
        message: if present { d.message.clone() } else { None },
        stage: "made".into(),
        made_at: at,
        received_at: None,
        accepted_at: None,
        first_contact_at: None,
        closed_at: None,
        stage_at: at,
        outcome: None,
        decline_reason: None,
        decline_text: None,
        cancel_reason: None,
        days_open: None,
        version: e.seq as i64,
    })
}

/// Folds a later event of a referral into its row.
fn evolve(row: &mut ReferralRow, e: &Applied) {
    let env = &e.envelope;
    let at = env.occurred_at;
    let by_sender = env.org.as_str() == row.sender_org;
    // Each side's reference is its own, sealed with its own key.
    if e.key_id.is_some() {
        if by_sender {
            row.sender_key_id = e.key_id;
        } else {
            row.receiver_key_id = e.key_id;
        }
    }
    if let Some(c) = client_ref(e) {
        if by_sender {
            row.sender_client_ref = Some(c);
        } else {
            row.receiver_client_ref = Some(c);
        }
    }
    let stage = |row: &mut ReferralRow, s: &str| {
        row.stage = s.to_owned();
        row.stage_at = at;
    };
    match &env.data {
        EventData::ReferralReceived(_) => {
            row.received_at = Some(at);
            stage(row, "received");
        }
        EventData::ReferralAccepted(_) => {
            row.accepted_at = Some(at);
            stage(row, "accepted");
        }
        EventData::ReferralDeclined(d) => {
            row.closed_at = Some(at);
            row.decline_reason = Some(code(d.reason));
            row.decline_text = if env.personal == PersonalState::Present { d.reason_text.clone() } else { None };
            stage(row, "declined");
        }
        EventData::ReferralFirstContactMade(_) => {
            row.first_contact_at = Some(at);
            stage(row, "first_contact");
        }
        EventData::ReferralCompleted(d) => {
            row.closed_at = Some(at);
            row.outcome = Some(code(d.outcome));
            stage(row, "completed");
        }
        EventData::ReferralCancelled(d) => {
            row.closed_at = Some(at);
            row.cancel_reason = Some(code(d.reason));
            stage(row, "cancelled");
        }
        EventData::ReferralExpired(d) => {
            row.closed_at = Some(at);
            row.days_open = Some(i32::from(d.days_open));
            stage(row, "expired");
        }
        _ => {}
    }
    row.version = e.seq as i64;
}

async fn apply(tx: &mut PgConnection, events: &[Applied]) -> Result<(), sqlx::Error> {
    let referral_ids: BTreeSet<String> = events
        .iter()
        .filter(|e| e.envelope.subject.kind() == AggregateKind::Referrals)
        .map(|e| e.envelope.subject.id().to_owned())
        .collect();
    let withdrawals: Vec<Withdrawal> = events.iter().filter_map(withdrawal).collect();
    let erased = erased_key_ids(events);
    if referral_ids.is_empty() && withdrawals.is_empty() && erased.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = referral_ids.into_iter().collect();
    let (w_org, w_case, w_to): (Vec<String>, Vec<String>, Vec<String>) =
        withdrawals.iter().cloned().fold((Vec::new(), Vec::new(), Vec::new()), |(mut a, mut b, mut c), (x, y, z)| {
            a.push(x);
            b.push(y);
            c.push(z);
            (a, b, c)
        });
    // The ids first, each way by its own index, then the rows by the primary key: with the
    // four ways joined by OR, the plan read the whole table on every batch.
    let existing: Vec<ReferralRow> = sqlx::query_as(
        "SELECT * FROM referrals WHERE referral_id = ANY(ARRAY(
            SELECT unnest($1::text[])
            UNION SELECT referral_id FROM referrals WHERE sender_key_id = ANY($2)
            UNION SELECT referral_id FROM referrals WHERE receiver_key_id = ANY($2)
            UNION SELECT r.referral_id FROM referrals r
                JOIN UNNEST($3::text[], $4::text[], $5::text[]) AS w(org_id, case_id, receiver_org)
                ON r.sender_org = w.org_id AND r.sender_case_id = w.case_id AND r.receiver_org = w.receiver_org))",
    )
    .bind(&ids)
    .bind(&erased)
    .bind(&w_org)
    .bind(&w_case)
    .bind(&w_to)
    .fetch_all(&mut *tx)
    .await?;
    let mut rows: BTreeMap<String, ReferralRow> = existing.into_iter().map(|r| (r.referral_id.clone(), r)).collect();
    let mut changed: BTreeSet<String> = BTreeSet::new();
    for e in events {
        let env = &e.envelope;
        if env.subject.kind() == AggregateKind::Referrals {
            let id = env.subject.id();
            match rows.get_mut(id) {
                Some(row) => evolve(row, e),
                None => {
                    // A referral's first event is `made` (the validator enforces it).
                    if let Some(row) = new_row(e) {
                        rows.insert(id.to_owned(), row);
                    }
                }
            }
            changed.insert(id.to_owned());
        } else if let Some((org, case, to)) = withdrawal(e) {
            for row in rows.values_mut().filter(|r| {
                r.sender_org == org && r.sender_case_id == case && r.receiver_org.as_deref() == Some(to.as_str())
            }) {
                row.message = None;
                changed.insert(row.referral_id.clone());
            }
        } else if matches!(env.data, EventData::ClientErased(_)) {
            let Ok(key) = Uuid::parse_str(env.subject.id()) else { continue };
            for row in rows.values_mut() {
                let mut touched = false;
                if row.sender_key_id == Some(key) {
                    row.sender_client_ref = None;
                    row.message = None;
                    touched = true;
                }
                if row.receiver_key_id == Some(key) {
                    row.receiver_client_ref = None;
                    row.decline_text = None;
                    touched = true;
                }
                if touched {
                    changed.insert(row.referral_id.clone());
                }
            }
        }
    }
    let rows: Vec<ReferralRow> = rows.into_values().filter(|r| changed.contains(&r.referral_id)).collect();
    upsert(tx, rows).await
}

async fn upsert(tx: &mut PgConnection, rows: Vec<ReferralRow>) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let n = rows.len();
    let mut referral_id = Vec::with_capacity(n);
    let mut sender_org = Vec::with_capacity(n);
    let mut sender_case_id = Vec::with_capacity(n);
    let mut sender_key_id = Vec::with_capacity(n);
    let mut sender_client_ref = Vec::with_capacity(n);
    let mut destination_kind = Vec::with_capacity(n);
    let mut destination = Vec::with_capacity(n);
    let mut receiver_org = Vec::with_capacity(n);
    let mut receiver_key_id = Vec::with_capacity(n);
    let mut receiver_client_ref = Vec::with_capacity(n);
    let mut life_domains = Vec::with_capacity(n);
    let mut message = Vec::with_capacity(n);
    let mut stage = Vec::with_capacity(n);
    let mut made_at = Vec::with_capacity(n);
    let mut received_at = Vec::with_capacity(n);
    let mut accepted_at = Vec::with_capacity(n);
    let mut first_contact_at = Vec::with_capacity(n);
    let mut closed_at = Vec::with_capacity(n);
    let mut stage_at = Vec::with_capacity(n);
    let mut outcome = Vec::with_capacity(n);
    let mut decline_reason = Vec::with_capacity(n);
    let mut decline_text = Vec::with_capacity(n);
    let mut cancel_reason = Vec::with_capacity(n);
    let mut days_open = Vec::with_capacity(n);
    let mut version = Vec::with_capacity(n);
    for r in rows {
        referral_id.push(r.referral_id);
        sender_org.push(r.sender_org);
        sender_case_id.push(r.sender_case_id);
        sender_key_id.push(r.sender_key_id);
        sender_client_ref.push(r.sender_client_ref);
        destination_kind.push(r.destination_kind);
        destination.push(r.destination);
        receiver_org.push(r.receiver_org);
        receiver_key_id.push(r.receiver_key_id);
        receiver_client_ref.push(r.receiver_client_ref);
        life_domains.push(r.life_domains.join(","));
        message.push(r.message);
        stage.push(r.stage);
        made_at.push(r.made_at);
        received_at.push(r.received_at);
        accepted_at.push(r.accepted_at);
        first_contact_at.push(r.first_contact_at);
        closed_at.push(r.closed_at);
        stage_at.push(r.stage_at);
        outcome.push(r.outcome);
        decline_reason.push(r.decline_reason);
        decline_text.push(r.decline_text);
        cancel_reason.push(r.cancel_reason);
        days_open.push(r.days_open);
        version.push(r.version);
    }
    sqlx::query(
        "INSERT INTO referrals (referral_id, sender_org, sender_case_id, sender_key_id, sender_client_ref,
            destination_kind, destination, receiver_org, receiver_key_id, receiver_client_ref, life_domains, message,
            stage, made_at, received_at, accepted_at, first_contact_at, closed_at, stage_at, outcome, decline_reason,
            decline_text, cancel_reason, days_open, version)
         SELECT referral_id, sender_org, sender_case_id, sender_key_id, sender_client_ref, destination_kind,
            destination, receiver_org, receiver_key_id, receiver_client_ref,
            coalesce(string_to_array(nullif(domains, ''), ','), '{}'), message, stage, made_at, received_at,
            accepted_at, first_contact_at, closed_at, stage_at, outcome, decline_reason, decline_text,
            cancel_reason, days_open, version
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::uuid[], $5::text[], $6::text[], $7::text[],
            $8::text[], $9::uuid[], $10::text[], $11::text[], $12::text[], $13::text[], $14::timestamptz[],
            $15::timestamptz[], $16::timestamptz[], $17::timestamptz[], $18::timestamptz[], $19::timestamptz[],
            $20::text[], $21::text[], $22::text[], $23::text[], $24::int4[], $25::int8[])
            AS u(referral_id, sender_org, sender_case_id, sender_key_id, sender_client_ref, destination_kind,
                 destination, receiver_org, receiver_key_id, receiver_client_ref, domains, message, stage, made_at,
                 received_at, accepted_at, first_contact_at, closed_at, stage_at, outcome, decline_reason,
                 decline_text, cancel_reason, days_open, version)
         ON CONFLICT (referral_id) DO UPDATE SET sender_key_id = EXCLUDED.sender_key_id,
            sender_client_ref = EXCLUDED.sender_client_ref, receiver_key_id = EXCLUDED.receiver_key_id,
            receiver_client_ref = EXCLUDED.receiver_client_ref, message = EXCLUDED.message, stage = EXCLUDED.stage,
            received_at = EXCLUDED.received_at, accepted_at = EXCLUDED.accepted_at,
            first_contact_at = EXCLUDED.first_contact_at, closed_at = EXCLUDED.closed_at,
            stage_at = EXCLUDED.stage_at, outcome = EXCLUDED.outcome, decline_reason = EXCLUDED.decline_reason,
            decline_text = EXCLUDED.decline_text, cancel_reason = EXCLUDED.cancel_reason,
            days_open = EXCLUDED.days_open, version = EXCLUDED.version",
    )
    .bind(&referral_id)
    .bind(&sender_org)
    .bind(&sender_case_id)
    .bind(&sender_key_id)
    .bind(&sender_client_ref)
    .bind(&destination_kind)
    .bind(&destination)
    .bind(&receiver_org)
    .bind(&receiver_key_id)
    .bind(&receiver_client_ref)
    .bind(&life_domains)
    .bind(&message)
    .bind(&stage)
    .bind(&made_at)
    .bind(&received_at)
    .bind(&accepted_at)
    .bind(&first_contact_at)
    .bind(&closed_at)
    .bind(&stage_at)
    .bind(&outcome)
    .bind(&decline_reason)
    .bind(&decline_text)
    .bind(&cancel_reason)
    .bind(&days_open)
    .bind(&version)
    .execute(tx)
    .await?;
    Ok(())
}

/// Which side of referrals an organisation reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Referrals the organisation made.
    Out,
    /// Referrals made to the organisation.
    In,
}

/// A referral as one side sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReferralView {
    /// The referral id.
    pub referral_id: String,
    /// `out` or `in`.
    pub direction: &'static str,
    /// The sending organisation.
    pub from_org: String,
    /// `organisation` or `outside_service`.
    pub destination_kind: String,
    /// The receiving organisation's id or the outside service's code.
    pub destination: String,
    /// Life domains.
    pub life_domains: Vec<String>,
    /// The stage reached.
    pub stage: String,
    /// True once the loop is closed.
    pub closed: bool,
    /// Made.
    pub made_at: DateTime<Utc>,
    /// Received.
    pub received_at: Option<DateTime<Utc>>,
    /// Accepted.
    pub accepted_at: Option<DateTime<Utc>>,
    /// First contact.
    pub first_contact_at: Option<DateTime<Utc>>,
    /// Closed.
    pub closed_at: Option<DateTime<Utc>>,
    /// When the current stage was reached.
    pub stage_at: DateTime<Utc>,
    /// Whole days since the referral was made (until it closed, if it did).
    pub age_days: i64,
    /// Whole days in the current stage (until it closed, if it did).
    pub days_in_stage: i64,
    /// Outcome, when completed.
    pub outcome: Option<String>,
    /// Why declined.
    pub decline_reason: Option<String>,
    /// The receiver's explanation (shown to the sender and the receiver).
    pub decline_text: Option<String>,
    /// Why cancelled.
    pub cancel_reason: Option<String>,
    /// The sender's message: what the client consented to share with the receiver.
    pub message: Option<String>,
    /// The reading organisation's own reference of the client.
    pub client_ref: Option<String>,
    /// The sender's case (only for the sender).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub case_id: Option<String>,
}

impl ReferralView {
    /// What `direction`'s side may see of a row, aged at `now`.
    pub fn of(row: ReferralRow, direction: Direction, now: DateTime<Utc>) -> Self {
        let end = row.closed_at.unwrap_or(now);
        let closed = row.closed_at.is_some();
        let (client_ref, case_id) = match direction {
            Direction::Out => (row.sender_client_ref, Some(row.sender_case_id)),
            Direction::In => (row.receiver_client_ref, None),
        };
        Self {
            referral_id: row.referral_id,
            direction: match direction {
                Direction::Out => "out",
                Direction::In => "in",
            },
            from_org: row.sender_org,
            destination_kind: row.destination_kind,
            destination: row.destination,
            life_domains: row.life_domains,
            stage: row.stage,
            closed,
            made_at: row.made_at,
            received_at: row.received_at,
            accepted_at: row.accepted_at,
            first_contact_at: row.first_contact_at,
            closed_at: row.closed_at,
            stage_at: row.stage_at,
            age_days: (end - row.made_at).num_days().max(0),
            days_in_stage: (end - row.stage_at).num_days().max(0),
            outcome: row.outcome,
            decline_reason: row.decline_reason,
            decline_text: row.decline_text,
            cancel_reason: row.cancel_reason,
            message: row.message,
            client_ref,
            case_id,
        }
    }
}

/// Filters of the referrals listing.
#[derive(Debug, Clone)]
pub struct ReferralFilter {
    /// Out or in.
    pub direction: Direction,
    /// Only referrals at this stage.
    pub stage: Option<String>,
    /// Only open (true) or closed (false) referrals.
    pub open: Option<bool>,
    /// Continue after this cursor (made_at, referral id of the last row).
    pub after: Option<(DateTime<Utc>, String)>,
    /// Page size.
    pub limit: i64,
}

/// A page of an organisation's referrals, most recently made first.
pub async fn list(pool: &PgPool, org: &OrgId, filter: &ReferralFilter) -> Result<Vec<ReferralRow>, sqlx::Error> {
    let column = match filter.direction {
        Direction::Out => "sender_org",
        Direction::In => "receiver_org",
    };
    let (after_at, after_id) = match &filter.after {
        Some((at, id)) => (Some(*at), Some(id.clone())),
        None => (None, None),
    };
    sqlx::query_as(&format!(
        "SELECT * FROM referrals WHERE {column} = $1
           AND ($2::text IS NULL OR stage = $2)
           AND ($3::bool IS NULL OR (closed_at IS NULL) = $3)
           AND ($4::timestamptz IS NULL OR (made_at, referral_id) < ($4, $5))
         ORDER BY made_at DESC, referral_id DESC LIMIT $6"
    ))
    .bind(org.as_str())
    .bind(&filter.stage)
    .bind(filter.open)
    .bind(after_at)
    .bind(after_id)
    .bind(filter.limit)
    .fetch_all(pool)
    .await
}
