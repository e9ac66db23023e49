//! The shared continuity monitor: who is about to fall between two services, across the
//! organisations, for clients who consented to it, by linkage key.
//!
//! **Who is in it.** A client's case joins on `relais.consent.given` with scope
//! `continuity_monitor` (which carries the linkage key) and leaves, with every fact held about
//! it, on `relais.consent.withdrawn` of that scope, when the consent expires, and when the
//! client is erased (`relais.client.erased`, found by key id). Facts recorded before the
//! consent are not in the monitor, and nothing recorded while the client is out of it is kept.
//! Cases of several organisations with the same linkage key are one person.
//!
//! **What it holds** (minimal, never free text, never shown with case ids or client
//! references): per member case the organisation, guidance status, detention, release date
//! and after-care; the referrals made from the case with their stages and dates; the moments
//! (released, transferred, guidance closed) that make open referrals urgent; the dropouts of
//! group activities registered by the same organisation with the same client key.
//!
//! **Alerts** are a function of those facts and the clock ([`MonitorSettings`] has the
//! thresholds): each alert opens when its condition becomes true (`opened_at` is that moment:
//! the due time of a time-based alert, the event time otherwise) and closes when the event that
//! resolves it happens (`closed_at`). They are brought up to the clock after every batch (for
//! the persons the batch touched) and on every tick (for everyone), so time-based alerts open
//! without a new event:
//! - `release_without_followup`: a release date (scheduled, or past) within
//!   `release_window_days`, and no after-care started and no referral accepted (or, for an
//!   outside service, no first contact) for the person since the detention started; it stays
//!   open after the release until follow-up is arranged;
//! - `referral_unanswered`: a referral to an organisation neither accepted nor declined (nor
//!   closed) within `answer_working_days` working days;
//! - `referral_no_first_contact`: accepted, and no first contact (nor closed) within
//!   `first_contact_working_days` working days;
//! - `released_with_open_referral`, `transferred_with_open_referral`: released or transferred
//!   while a referral of the person is open; closes when the referral closes;
//! - `closed_with_open_referral`: guidance closed at one organisation while a referral of the
//!   person to another organisation is open; closes when the referral closes;
//! - `dropout_without_feedback`: a dropout without a feedback conversation after
//!   `feedback_days` days.
//!
//! Working days are Monday to Friday without the Belgian public holidays ([`crate::clock`]).
//!
//! **Determinism.** The facts depend on the events only. A consent that expired is forgotten
//! by the first event about the member recorded after the expiry, or by a tick once the
//! projection has applied the whole stream (so a rebuild forgets exactly what the live view
//! forgot). Alerts are then a function of the facts and the clock: two runs over the same
//! events, brought to the same instant, hold the same rows.

use crate::clock::{brussels_midnight, working_days_deadline};
use crate::worker::{Applied, ClockCall, View};
use chrono::{DateTime, Duration, NaiveDate, Utc};
use futures::future::BoxFuture;
use relais_domain::AggregateKind;
use relais_domain::aggregates::brussels_date;
use relais_domain::envelope::PersonalState;
use relais_domain::events::{ConsentScope, EventData, ReferralDestination};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use uuid::Uuid;

/// Thresholds of the continuity monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorSettings {
    /// A release this many days ahead without follow-up opens an alert (default 14).
    pub release_window_days: i64,
    /// A referral to an organisation must be answered within this many working days (10).
    pub answer_working_days: u32,
    /// An accepted referral must reach first contact within this many working days (20).
    pub first_contact_working_days: u32,
    /// A dropout must have a feedback conversation within this many days (14).
    pub feedback_days: i64,
}

impl Default for MonitorSettings {
    fn default() -> Self {
        Self { release_window_days: 14, answer_working_days: 10, first_contact_working_days: 20, feedback_days: 14 }
    }
}

/// The kinds of alert.
pub const ALERT_KINDS: &[&str] = &[
    "release_without_followup",
    "referral_unanswered",
    "referral_no_first_contact",
    "released_with_open_referral",
    "transferred_with_open_referral",
    "closed_with_open_referral",
    "dropout_without_feedback",
];

/// The continuity monitor view.
pub struct Monitor {
    settings: MonitorSettings,
    /// Linkage keys whose facts changed in the batch being applied: their alerts are brought
    /// up to the clock in the same transaction.
    dirty: Mutex<BTreeSet<String>>,
}

impl Monitor {
    /// The monitor with its thresholds.
    pub fn new(settings: MonitorSettings) -> Self {
        Self { settings, dirty: Mutex::new(BTreeSet::new()) }
    }
}

impl View for Monitor {
    fn name(&self) -> &'static str {
        "monitor"
    }

    fn apply<'a>(&'a self, tx: &'a mut PgConnection, events: &'a [Applied]) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            let dirty = apply(tx, events).await?;
            if let Ok(mut d) = self.dirty.lock() {
                d.extend(dirty);
            }
            Ok(())
        })
    }

    fn tables(&self) -> &'static [&'static str] {
        &["monitor_members", "monitor_moments", "monitor_referrals", "monitor_dropouts", "monitor_alerts"]
    }

    fn uses_clock(&self) -> bool {
        true
    }

    fn on_clock<'a>(
        &'a self,
        tx: &'a mut PgConnection,
        now: DateTime<Utc>,
        why: ClockCall,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            match why {
                // A tick: everyone; expired consents are forgotten once the stream is applied.
                ClockCall::Tick { caught_up } => evaluate(tx, &self.settings, now, None, caught_up).await,
                ClockCall::AfterBatch => {
                    let dirty: Vec<String> = match self.dirty.lock() {
                        Ok(mut d) => std::mem::take(&mut *d).into_iter().collect(),
                        Err(_) => Vec::new(),
                    };
                    if dirty.is_empty() { Ok(()) } else { evaluate(tx, &self.settings, now, Some(dirty), false).await }
                }
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Deserialize)]
struct Member {
    org_id: String,
    case_id: String,
    linkage_key: String,
    key_id: Option<Uuid>,
    consent_expires_on: Option<NaiveDate>,
    joined_at: DateTime<Utc>,
    status: String,
    in_detention: bool,
    detention_started_at: Option<DateTime<Utc>>,
    release_on: Option<NaiveDate>,
    released: bool,
    aftercare_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Deserialize)]
struct MonitorReferral {
    referral_id: String,
    org_id: String,
    case_id: String,
    receiver_org: Option<String>,
    destination_kind: String,
    stage: String,
    made_at: DateTime<Utc>,
    answered_at: Option<DateTime<Utc>>,
    accepted_at: Option<DateTime<Utc>>,
    first_contact_at: Option<DateTime<Utc>>,
    closed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Deserialize)]
struct Moment {
    org_id: String,
    case_id: String,
    seq: i64,
    kind: String,
    at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Deserialize)]
struct Dropout {
    activity_id: String,
    org_id: String,
    key_id: Uuid,
    case_id: String,
    dropped_at: DateTime<Utc>,
    feedback_at: Option<DateTime<Utc>>,
}

/// An alert of the continuity monitor, as stored.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Deserialize)]
pub struct AlertRow {
    /// An opaque id (a hash of what the alert is about).
    pub alert_id: String,
    /// The person.
    pub linkage_key: String,
    /// One of [`ALERT_KINDS`].
    pub kind: String,
    /// The organisation concerned.
    pub org_id: String,
    /// The other organisation (a referral's receiver), if any.
    pub other_org: Option<String>,
    /// When the condition became true.
    pub opened_at: DateTime<Utc>,
    /// When the resolving event happened.
    pub closed_at: Option<DateTime<Utc>>,
    /// Minimal facts: dates and stages, never free text or case ids.
    pub detail: Json<Value>,
}

type MemberKey = (String, String);

/// The facts a batch touches, folded in memory.
#[derive(Default)]
struct Facts {
    members: BTreeMap<MemberKey, Member>,
    referrals: BTreeMap<String, MonitorReferral>,
    dropouts: BTreeMap<(String, String, Uuid), Dropout>,
    moments: Vec<Moment>,
    purged: BTreeSet<MemberKey>,
    dirty: BTreeSet<String>,
}

impl Facts {
    fn purge(&mut self, key: &MemberKey) {
        if let Some(m) = self.members.remove(key) {
            self.dirty.insert(m.linkage_key);
        }
        self.referrals.retain(|_, r| (&r.org_id, &r.case_id) != (&key.0, &key.1));
        self.dropouts.retain(|_, d| (&d.org_id, &d.case_id) != (&key.0, &key.1));
        self.moments.retain(|m| (&m.org_id, &m.case_id) != (&key.0, &key.1));
        self.purged.insert(key.clone());
    }

    /// Forgets a member whose consent expired before `e` was recorded; true if the member is
    /// (still) there.
    fn live_member(&mut self, key: &MemberKey, e: &Applied) -> bool {
        let expired = match self.members.get(key) {
            None => return false,
            Some(m) => m.consent_expires_on.is_some_and(|last| brussels_date(e.envelope.recorded_at) > last),
        };
        if expired {
            self.purge(key);
            return false;
        }
        true
    }

    fn member_mut(&mut self, key: &MemberKey) -> Option<&mut Member> {
        let m = self.members.get_mut(key)?;
        self.dirty.insert(m.linkage_key.clone());
        Some(m)
    }

    fn fold(&mut self, e: &Applied) {
        let env = &e.envelope;
        let at = env.occurred_at;
        let org = env.org.to_string();
        match env.subject.kind() {
            AggregateKind::Cases => self.fold_case(e, (org, env.subject.id().to_owned())),
            AggregateKind::Referrals => {
                let id = env.subject.id().to_owned();
                if let EventData::ReferralMade(d) = &env.data {
                    let key = (org.clone(), d.case_id.clone());
                    if !self.live_member(&key, e) {
                        return;
                    }
                    let (kind, receiver) = match &d.destination {
                        ReferralDestination::Organisation(o) => ("organisation", Some(o.to_string())),
                        ReferralDestination::OutsideService(_) => ("outside_service", None),
                    };
                    self.referrals.insert(
                        id.clone(),
                        MonitorReferral {
                            referral_id: id,
                            org_id: org,
                            case_id: d.case_id.clone(),
                            receiver_org: receiver,
                            destination_kind: kind.into(),
                            stage: "made".into(),
                            made_at: at,
                            answered_at: None,
                            accepted_at: None,
                            first_contact_at: None,
                            closed_at: None,
                        },
                    );
                    self.member_mut(&key);
                    return;
                }
                let Some(key) = self.referrals.get(&id).map(|r| (r.org_id.clone(), r.case_id.clone())) else {
                    return;
                };
                if !self.live_member(&key, e) {
                    return;
                }
                let Some(r) = self.referrals.get_mut(&id) else { return };
                match &env.data {
                    EventData::ReferralReceived(_) => r.stage = "received".into(),
                    EventData::ReferralAccepted(_) => {
                        r.stage = "accepted".into();
                        r.answered_at.get_or_insert(at);
                        r.accepted_at = Some(at);
                    }
                    EventData::ReferralDeclined(_) => {
                        r.stage = "declined".into();
                        r.answered_at.get_or_insert(at);
                        r.closed_at = Some(at);
                    }
                    EventData::ReferralFirstContactMade(_) => {
                        r.stage = "first_contact".into();
                        r.first_contact_at = Some(at);
                    }
                    EventData::ReferralCompleted(_) => {
                        r.stage = "completed".into();
                        r.closed_at = Some(at);
                    }
                    EventData::ReferralCancelled(_) => {
                        r.stage = "cancelled".into();
                        r.closed_at = Some(at);
                    }
                    EventData::ReferralExpired(_) => {
                        r.stage = "expired".into();
                        r.closed_at = Some(at);
                    }
                    _ => {}
                }
                self.member_mut(&key);
            }
            AggregateKind::Activities => {
                let Some(key_id) = e.key_id else { return };
                let activity = env.subject.id().to_owned();
                let dropout_key = (activity.clone(), org.clone(), key_id);
                match &env.data {
                    EventData::ParticipantDroppedOut(_) => {
                        let member = self
                            .members
                            .values()
                            .find(|m| m.org_id == org && m.key_id == Some(key_id))
                            .map(|m| (m.org_id.clone(), m.case_id.clone()));
                        let Some(member) = member else { return };
                        if !self.live_member(&member, e) {
                            return;
                        }
                        self.dropouts.insert(
                            dropout_key,
                            Dropout {
                                activity_id: activity,
                                org_id: org,
                                key_id,
                                case_id: member.1.clone(),
                                dropped_at: at,
                                feedback_at: None,
                            },
                        );
                        self.member_mut(&member);
                    }
                    EventData::DropoutFeedbackHeld(_) | EventData::ParticipantEnrolled(_) => {
                        let Some(member) =
                            self.dropouts.get(&dropout_key).map(|d| (d.org_id.clone(), d.case_id.clone()))
                        else {
                            return;
                        };
                        if !self.live_member(&member, e) {
                            return;
                        }
                        if matches!(env.data, EventData::ParticipantEnrolled(_)) {
                            // Enrolled again: the dropout is over.
                            self.dropouts.remove(&dropout_key);
                        } else if let Some(d) = self.dropouts.get_mut(&dropout_key) {
                            d.feedback_at.get_or_insert(at);
                        }
                        self.member_mut(&member);
                    }
                    _ => {}
                }
            }
            AggregateKind::Clients => {
                if let (EventData::ClientErased(_), Ok(key_id)) = (&env.data, Uuid::parse_str(env.subject.id())) {
                    let gone: Vec<MemberKey> = self
                        .members
                        .values()
                        .filter(|m| m.key_id == Some(key_id))
                        .map(|m| (m.org_id.clone(), m.case_id.clone()))
                        .collect();
                    for key in gone {
                        self.purge(&key);
                    }
                }
            }
            AggregateKind::Signals => {}
        }
    }

    fn fold_case(&mut self, e: &Applied, key: MemberKey) {
        let env = &e.envelope;
        let at = env.occurred_at;
        let live = self.live_member(&key, e);
        match &env.data {
            EventData::ConsentGiven(d) if d.scope == ConsentScope::ContinuityMonitor => {
                // An erased client's linkage key is gone: nothing to join with.
                let Some(lk) = d.linkage_key.as_ref().filter(|_| env.personal == PersonalState::Present) else {
                    return;
                };
                let lk = lk.as_str().to_owned();
                if live {
                    if let Some(m) = self.members.get_mut(&key) {
                        if m.linkage_key != lk {
                            let old = std::mem::replace(&mut m.linkage_key, lk.clone());
                            self.dirty.insert(old);
                        }
                        m.consent_expires_on = d.expires_on;
                        if e.key_id.is_some() {
                            m.key_id = e.key_id;
                        }
                    }
                } else {
                    self.members.insert(
                        key.clone(),
                        Member {
                            org_id: key.0.clone(),
                            case_id: key.1.clone(),
                            linkage_key: lk.clone(),
                            key_id: e.key_id,
                            consent_expires_on: d.expires_on,
                            joined_at: at,
                            status: "joined".into(),
                            in_detention: false,
                            detention_started_at: None,
                            release_on: None,
                            released: false,
                            aftercare_at: None,
                        },
                    );
                }
                self.dirty.insert(lk);
            }
            EventData::ConsentWithdrawn(d) if d.scope == ConsentScope::ContinuityMonitor && live => self.purge(&key),
            _ if live => {
                let mut moment = None;
                let Some(m) = self.member_mut(&key) else { return };
                if e.key_id.is_some() {
                    m.key_id = e.key_id;
                }
                match &env.data {
                    EventData::GuidanceRequested(_) => m.status = "requested".into(),
                    EventData::GuidanceAccepted(_) => m.status = "open".into(),
                    EventData::GuidanceDeclined(_) => m.status = "declined".into(),
                    EventData::GuidanceClosed(_) => {
                        m.status = "closed".into();
                        moment = Some("closed");
                    }
                    EventData::AftercareStarted(_) => {
                        m.status = "after_care".into();
                        m.aftercare_at = Some(at);
                    }
                    EventData::DetentionStarted(_) => {
                        m.in_detention = true;
                        m.detention_started_at = Some(at);
                        m.release_on = None;
                        m.released = false;
                    }
                    EventData::DetaineeTransferred(_) => moment = Some("transferred"),
                    EventData::ReleaseScheduled(d) => {
                        m.release_on = Some(d.release_on);
                        m.released = false;
                    }
                    EventData::DetaineeReleased(d) => {
                        m.in_detention = false;
                        m.release_on = Some(d.released_on);
                        m.released = true;
                        moment = Some("released");
                    }
                    _ => {}
                }
                if let Some(kind) = moment {
                    self.moments.push(Moment {
                        org_id: key.0,
                        case_id: key.1,
                        seq: e.seq as i64,
                        kind: kind.into(),
                        at,
                    });
                }
            }
            _ => {}
        }
    }
}

fn unzip_keys<'a>(keys: impl IntoIterator<Item = &'a MemberKey>) -> (Vec<String>, Vec<String>) {
    keys.into_iter().map(|(o, c)| (o.clone(), c.clone())).unzip()
}

/// Applies a batch to the facts; returns the linkage keys whose alerts must be re-evaluated.
async fn apply(tx: &mut PgConnection, events: &[Applied]) -> Result<BTreeSet<String>, sqlx::Error> {
    let mut member_keys: BTreeSet<MemberKey> = BTreeSet::new();
    let mut referral_ids: BTreeSet<String> = BTreeSet::new();
    let mut org_keys: BTreeSet<(String, Uuid)> = BTreeSet::new();
    let mut erased: Vec<Uuid> = Vec::new();
    for e in events {
        let env = &e.envelope;
        match env.subject.kind() {
            AggregateKind::Cases => {
                member_keys.insert((env.org.to_string(), env.subject.id().to_owned()));
            }
            AggregateKind::Referrals => {
                referral_ids.insert(env.subject.id().to_owned());
                if let EventData::ReferralMade(d) = &env.data {
                    member_keys.insert((env.org.to_string(), d.case_id.clone()));
                }
            }
            AggregateKind::Activities => {
                if let Some(k) = e.key_id {
                    org_keys.insert((env.org.to_string(), k));
                }
            }
            AggregateKind::Clients => {
                if let Ok(k) = Uuid::parse_str(env.subject.id()) {
                    erased.push(k);
                }
            }
            AggregateKind::Signals => {}
        }
    }
    if member_keys.is_empty() && referral_ids.is_empty() && org_keys.is_empty() && erased.is_empty() {
        return Ok(BTreeSet::new());
    }
    let ids: Vec<String> = referral_ids.into_iter().collect();
    let (m_org, m_case) = unzip_keys(&member_keys);
    let (k_org, k_key): (Vec<String>, Vec<Uuid>) = org_keys.iter().cloned().unzip();
    // The facts the batch may change, in one statement (one round trip instead of four on
    // every batch that touches the monitor): the members of the batch's cases, of the cases
    // whose referrals it touches, of its activities' client keys and of the erased keys; then
    // those members' referrals and dropouts, each set as a JSON array. Each way in is its own
    // indexed lookup (joined by OR, they made the plan read whole tables), and a member's rows
    // are found by a lateral lookup per member (`OFFSET 0` keeps the planner from turning it
    // into a join that scans the table: generic plans assume ten keys, a batch has one or two).
    type Sets = (Json<Vec<Member>>, Json<Vec<MonitorReferral>>, Json<Vec<Dropout>>);
    let (Json(members), Json(referrals), Json(dropouts)): Sets = sqlx::query_as(
        "WITH keys AS (
             SELECT * FROM UNNEST($1::text[], $2::text[]) AS k(org_id, case_id)
             UNION SELECT r.org_id, r.case_id FROM unnest($6::text[]) AS i(referral_id) CROSS JOIN LATERAL
               (SELECT org_id, case_id FROM monitor_referrals x WHERE x.referral_id = i.referral_id OFFSET 0) r),
           m AS MATERIALIZED (
             SELECT t.* FROM keys k CROSS JOIN LATERAL (SELECT * FROM monitor_members x
               WHERE x.org_id = k.org_id AND x.case_id = k.case_id OFFSET 0) t
             UNION SELECT t.* FROM UNNEST($3::text[], $4::uuid[]) AS u(org_id, key_id) CROSS JOIN LATERAL
               (SELECT * FROM monitor_members x WHERE x.key_id = u.key_id AND x.org_id = u.org_id OFFSET 0) t
             UNION SELECT t.* FROM monitor_members t WHERE t.key_id = ANY($5))
         SELECT
           (SELECT coalesce(jsonb_agg(t), '[]') FROM m t),
           (SELECT coalesce(jsonb_agg(t), '[]') FROM monitor_referrals t WHERE t.referral_id = ANY(ARRAY(
               SELECT unnest($6::text[])
               UNION SELECT r.referral_id FROM m CROSS JOIN LATERAL (SELECT referral_id FROM monitor_referrals x
                 WHERE x.org_id = m.org_id AND x.case_id = m.case_id OFFSET 0) r))),
           (SELECT coalesce(jsonb_agg(t), '[]') FROM m CROSS JOIN LATERAL (SELECT * FROM monitor_dropouts x
               WHERE x.org_id = m.org_id AND x.case_id = m.case_id OFFSET 0) t)",
    )
    .bind(&m_org)
    .bind(&m_case)
    .bind(&k_org)
    .bind(&k_key)
    .bind(&erased)
    .bind(&ids)
    .fetch_one(&mut *tx)
    .await?;
    let mut facts = Facts {
        members: members.into_iter().map(|m| ((m.org_id.clone(), m.case_id.clone()), m)).collect(),
        referrals: referrals.into_iter().map(|r| (r.referral_id.clone(), r)).collect(),
        dropouts: dropouts.into_iter().map(|d| ((d.activity_id.clone(), d.org_id.clone(), d.key_id), d)).collect(),
        ..Facts::default()
    };
    let before = (facts.members.clone(), facts.referrals.clone(), facts.dropouts.clone());

    for e in events {
        facts.fold(e);
    }

    // Forget the purged members first: one may have joined again later in the batch.
    if !facts.purged.is_empty() {
        let (p_org, p_case) = unzip_keys(&facts.purged);
        for table in ["monitor_members", "monitor_moments", "monitor_referrals", "monitor_dropouts"] {
            sqlx::query(&format!(
                "DELETE FROM {table} WHERE (org_id, case_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))"
            ))
            .bind(&p_org)
            .bind(&p_case)
            .execute(&mut *tx)
            .await?;
        }
    }
    // Rows that disappeared without a purge (a dropout enrolled again).
    let gone: Vec<(String, String, Uuid)> =
        before.2.keys().filter(|k| !facts.dropouts.contains_key(*k)).cloned().collect();
    if !gone.is_empty() {
        let mut a = Vec::new();
        let mut o = Vec::new();
        let mut k = Vec::new();
        for (x, y, z) in gone {
            a.push(x);
            o.push(y);
            k.push(z);
        }
        sqlx::query(
            "DELETE FROM monitor_dropouts WHERE (activity_id, org_id, key_id) IN
             (SELECT * FROM UNNEST($1::text[], $2::text[], $3::uuid[]))",
        )
        .bind(&a)
        .bind(&o)
        .bind(&k)
        .execute(&mut *tx)
        .await?;
    }
    let purged = &facts.purged;
    let changed = |key: &MemberKey| purged.contains(key);
    let members: Vec<&Member> =
        facts.members.iter().filter(|(k, m)| changed(k) || before.0.get(*k) != Some(*m)).map(|(_, m)| m).collect();
    upsert_members(tx, &members).await?;
    let referrals: Vec<&MonitorReferral> = facts
        .referrals
        .iter()
        .filter(|(k, r)| changed(&(r.org_id.clone(), r.case_id.clone())) || before.1.get(*k) != Some(*r))
        .map(|(_, r)| r)
        .collect();
    upsert_referrals(tx, &referrals).await?;
    let dropouts: Vec<&Dropout> = facts
        .dropouts
        .iter()
        .filter(|(k, d)| changed(&(d.org_id.clone(), d.case_id.clone())) || before.2.get(*k) != Some(*d))
        .map(|(_, d)| d)
        .collect();
    upsert_dropouts(tx, &dropouts).await?;
    insert_moments(tx, &facts.moments).await?;
    Ok(facts.dirty)
}

async fn upsert_members(tx: &mut PgConnection, rows: &[&Member]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let payload: Vec<Value> = rows
        .iter()
        .map(|m| {
            json!({
                "org_id": m.org_id, "case_id": m.case_id, "linkage_key": m.linkage_key, "key_id": m.key_id,
                "consent_expires_on": m.consent_expires_on, "joined_at": m.joined_at, "status": m.status,
                "in_detention": m.in_detention, "detention_started_at": m.detention_started_at,
                "release_on": m.release_on, "released": m.released, "aftercare_at": m.aftercare_at,
            })
        })
        .collect();
    sqlx::query(
        "INSERT INTO monitor_members SELECT * FROM jsonb_populate_recordset(NULL::monitor_members, $1)
         ON CONFLICT (org_id, case_id) DO UPDATE SET linkage_key = EXCLUDED.linkage_key, key_id = EXCLUDED.key_id,
            consent_expires_on = EXCLUDED.consent_expires_on, joined_at = EXCLUDED.joined_at,
            status = EXCLUDED.status, in_detention = EXCLUDED.in_detention,
            detention_started_at = EXCLUDED.detention_started_at, release_on = EXCLUDED.release_on,
            released = EXCLUDED.released, aftercare_at = EXCLUDED.aftercare_at",
    )
    .bind(Json(payload))
    .execute(tx)
    .await?;
    Ok(())
}

async fn upsert_referrals(tx: &mut PgConnection, rows: &[&MonitorReferral]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let payload: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "referral_id": r.referral_id, "org_id": r.org_id, "case_id": r.case_id, "receiver_org": r.receiver_org,
                "destination_kind": r.destination_kind, "stage": r.stage, "made_at": r.made_at,
                "answered_at": r.answered_at, "accepted_at": r.accepted_at, "first_contact_at": r.first_contact_at,
                "closed_at": r.closed_at,
            })
        })
        .collect();
    sqlx::query(
        "INSERT INTO monitor_referrals SELECT * FROM jsonb_populate_recordset(NULL::monitor_referrals, $1)
         ON CONFLICT (referral_id) DO UPDATE SET org_id = EXCLUDED.org_id, case_id = EXCLUDED.case_id,
            receiver_org = EXCLUDED.receiver_org, destination_kind = EXCLUDED.destination_kind,
            stage = EXCLUDED.stage, made_at = EXCLUDED.made_at, answered_at = EXCLUDED.answered_at,
            accepted_at = EXCLUDED.accepted_at, first_contact_at = EXCLUDED.first_contact_at,
            closed_at = EXCLUDED.closed_at",
    )
    .bind(Json(payload))
    .execute(tx)
    .await?;
    Ok(())
}

async fn upsert_dropouts(tx: &mut PgConnection, rows: &[&Dropout]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let payload: Vec<Value> = rows
        .iter()
        .map(|d| {
            json!({
                "activity_id": d.activity_id, "org_id": d.org_id, "key_id": d.key_id, "case_id": d.case_id,
                "dropped_at": d.dropped_at, "feedback_at": d.feedback_at,
            })
        })
        .collect();
    sqlx::query(
        "INSERT INTO monitor_dropouts SELECT * FROM jsonb_populate_recordset(NULL::monitor_dropouts, $1)
         ON CONFLICT (activity_id, org_id, key_id) DO UPDATE SET case_id = EXCLUDED.case_id,
            dropped_at = EXCLUDED.dropped_at, feedback_at = EXCLUDED.feedback_at",
    )
    .bind(Json(payload))
    .execute(tx)
    .await?;
    Ok(())
}

async fn insert_moments(tx: &mut PgConnection, rows: &[Moment]) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let payload: Vec<Value> = rows
        .iter()
        .map(|m| json!({ "org_id": m.org_id, "case_id": m.case_id, "seq": m.seq, "kind": m.kind, "at": m.at }))
        .collect();
    sqlx::query(
        "INSERT INTO monitor_moments SELECT * FROM jsonb_populate_recordset(NULL::monitor_moments, $1)
         ON CONFLICT DO NOTHING",
    )
    .bind(Json(payload))
    .execute(tx)
    .await?;
    Ok(())
}

/// Brings the alerts of the persons `keys` (everyone when `None`) up to `now`. With
/// `forget_expired`, members whose consent expired are forgotten first, with their facts.
///
/// Everyone is evaluated a page of persons at a time: alerts are a function of one person's
/// facts, and loading every member's facts at once made the projector's memory grow with the
/// history (a step at every clock tick while the views caught up, docs/BENCHMARKS.md).
pub async fn evaluate(
    tx: &mut PgConnection,
    settings: &MonitorSettings,
    now: DateTime<Utc>,
    keys: Option<Vec<String>>,
    forget_expired: bool,
) -> Result<(), sqlx::Error> {
    let today = brussels_date(now);
    if forget_expired {
        let expired: Vec<(String, String)> =
            sqlx::query_as("SELECT org_id, case_id FROM monitor_members WHERE consent_expires_on < $1")
                .bind(today)
                .fetch_all(&mut *tx)
                .await?;
        if !expired.is_empty() {
            let (o, c): (Vec<String>, Vec<String>) = expired.into_iter().unzip();
            for table in ["monitor_members", "monitor_moments", "monitor_referrals", "monitor_dropouts"] {
                sqlx::query(&format!(
                    "DELETE FROM {table} WHERE (org_id, case_id) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))"
                ))
                .bind(&o)
                .bind(&c)
                .execute(&mut *tx)
                .await?;
            }
        }
    }
    match keys {
        Some(keys) => evaluate_persons(tx, settings, now, &keys).await,
        None => {
            // Linkage keys are never empty: "" comes before every one of them.
            let mut after = String::new();
            loop {
                let page: Vec<String> = sqlx::query_scalar(
                    "SELECT DISTINCT linkage_key FROM monitor_members
                     WHERE linkage_key > $1 AND (consent_expires_on IS NULL OR consent_expires_on >= $2)
                     ORDER BY linkage_key LIMIT $3",
                )
                .bind(&after)
                .bind(today)
                .bind(PERSONS_PER_PAGE)
                .fetch_all(&mut *tx)
                .await?;
                let Some(last) = page.last() else { break };
                after = last.clone();
                evaluate_persons(tx, settings, now, &page).await?;
            }
            // Alerts of persons no longer in scope: no member left whose consent holds.
            sqlx::query(
                "DELETE FROM monitor_alerts a WHERE NOT EXISTS (SELECT 1 FROM monitor_members m
                   WHERE m.linkage_key = a.linkage_key AND (m.consent_expires_on IS NULL OR m.consent_expires_on >= $1))",
            )
            .bind(today)
            .execute(&mut *tx)
            .await?;
            Ok(())
        }
    }
}

/// How many persons' facts an evaluation of everyone loads at once.
const PERSONS_PER_PAGE: i64 = 500;

/// Brings the alerts of the persons `keys` up to `now`.
async fn evaluate_persons(
    tx: &mut PgConnection,
    settings: &MonitorSettings,
    now: DateTime<Utc>,
    keys: &[String],
) -> Result<(), sqlx::Error> {
    let today = brussels_date(now);
    // The members in scope: consent holding today.
    let scope = "SELECT * FROM monitor_members
                 WHERE linkage_key = ANY($1) AND (consent_expires_on IS NULL OR consent_expires_on >= $2)";
    // The facts of the persons in scope and their alerts, in one statement (one round trip
    // instead of five on every batch that touches the monitor): each set as a JSON array, in
    // the order the evaluation expects. A member's rows are found by a lateral lookup per
    // member (`OFFSET 0` keeps it one, rather than a join that scans the table).
    type Sets =
        (Json<Vec<Member>>, Json<Vec<MonitorReferral>>, Json<Vec<Moment>>, Json<Vec<Dropout>>, Json<Vec<AlertRow>>);
    let of_members = |table: &str| {
        format!(
            "scope s CROSS JOIN LATERAL (SELECT * FROM {table} x
               WHERE x.org_id = s.org_id AND x.case_id = s.case_id OFFSET 0) t"
        )
    };
    let (Json(members), Json(referrals), Json(moments), Json(dropouts), Json(existing)): Sets =
        sqlx::query_as(&format!(
            "WITH scope AS MATERIALIZED ({scope})
             SELECT
               (SELECT coalesce(jsonb_agg(t ORDER BY t.org_id, t.case_id), '[]') FROM scope t),
               (SELECT coalesce(jsonb_agg(t ORDER BY t.referral_id), '[]') FROM {}),
               (SELECT coalesce(jsonb_agg(t ORDER BY t.org_id, t.case_id, t.seq), '[]') FROM {}),
               (SELECT coalesce(jsonb_agg(t ORDER BY t.activity_id, t.org_id, t.key_id), '[]') FROM {}),
               (SELECT coalesce(jsonb_agg(t), '[]') FROM unnest($1::text[]) AS k(linkage_key) CROSS JOIN LATERAL
                 (SELECT * FROM monitor_alerts x WHERE x.linkage_key = k.linkage_key OFFSET 0) t)",
            of_members("monitor_referrals"),
            of_members("monitor_moments"),
            of_members("monitor_dropouts"),
        ))
        .bind(keys)
        .bind(today)
        .fetch_one(&mut *tx)
        .await?;
    let alerts = compute_alerts(settings, now, &members, &referrals, &moments, &dropouts);

    let existing: BTreeMap<String, AlertRow> = existing.into_iter().map(|a| (a.alert_id.clone(), a)).collect();
    let gone: Vec<String> = existing.keys().filter(|id| !alerts.contains_key(*id)).cloned().collect();
    if !gone.is_empty() {
        sqlx::query("DELETE FROM monitor_alerts WHERE alert_id = ANY($1)").bind(&gone).execute(&mut *tx).await?;
    }
    let changed: Vec<Value> = alerts
        .values()
        .filter(|a| existing.get(&a.alert_id) != Some(*a))
        .map(|a| {
            json!({
                "alert_id": a.alert_id, "linkage_key": a.linkage_key, "kind": a.kind, "org_id": a.org_id,
                "other_org": a.other_org, "opened_at": a.opened_at, "closed_at": a.closed_at, "detail": a.detail.0,
            })
        })
        .collect();
    if !changed.is_empty() {
        sqlx::query(
            "INSERT INTO monitor_alerts SELECT * FROM jsonb_populate_recordset(NULL::monitor_alerts, $1)
             ON CONFLICT (alert_id) DO UPDATE SET linkage_key = EXCLUDED.linkage_key, kind = EXCLUDED.kind,
                org_id = EXCLUDED.org_id, other_org = EXCLUDED.other_org, opened_at = EXCLUDED.opened_at,
                closed_at = EXCLUDED.closed_at, detail = EXCLUDED.detail",
        )
        .bind(Json(changed))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

fn alert_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..12])
}

fn earliest(times: impl IntoIterator<Item = Option<DateTime<Utc>>>) -> Option<DateTime<Utc>> {
    times.into_iter().flatten().min()
}

/// The earliest moment an event may carry (`relais_domain::envelope::EARLIEST_TIME_US`).
fn earliest_moment() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(relais_domain::envelope::EARLIEST_TIME_US).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The alerts of a set of persons at `now`: a pure function of the facts.
fn compute_alerts(
    settings: &MonitorSettings,
    now: DateTime<Utc>,
    members: &[Member],
    referrals: &[MonitorReferral],
    moments: &[Moment],
    dropouts: &[Dropout],
) -> BTreeMap<String, AlertRow> {
    let person_of: BTreeMap<(&str, &str), &str> =
        members.iter().map(|m| ((m.org_id.as_str(), m.case_id.as_str()), m.linkage_key.as_str())).collect();
    let person = |org: &str, case: &str| person_of.get(&(org, case)).copied();
    let mut out = BTreeMap::new();
    let mut push = |kind: &str,
                    parts: &[&str],
                    lk: &str,
                    org: &str,
                    other: Option<&str>,
                    opened: DateTime<Utc>,
                    closed: Option<DateTime<Utc>>,
                    detail: Value| {
        // A deadline counted back from a day early in year 1 would fall before it: PostgreSQL
        // writes such a moment in JSON as `... BC`, which the next read of the alerts could not
        // parse, batch after batch.
        let opened = opened.max(earliest_moment());
        // An alert exists once its condition came true, unless it was resolved by then.
        if opened > now || closed.is_some_and(|c| c <= opened) {
            return;
        }
        let mut all = vec![kind];
        all.extend_from_slice(parts);
        let id = alert_id(&all);
        out.insert(
            id.clone(),
            AlertRow {
                alert_id: id,
                linkage_key: lk.to_owned(),
                kind: kind.to_owned(),
                org_id: org.to_owned(),
                other_org: other.map(str::to_owned),
                opened_at: opened,
                closed_at: closed.filter(|c| *c <= now),
                detail: Json(detail),
            },
        );
    };
    let mut by_person: BTreeMap<&str, Vec<&MonitorReferral>> = BTreeMap::new();
    for r in referrals {
        if let Some(lk) = person(&r.org_id, &r.case_id) {
            by_person.entry(lk).or_default().push(r);
        }
    }
    let referrals_of = |lk: &str| by_person.get(lk).cloned().unwrap_or_default().into_iter();

    for m in members {
        let Some(release_on) = m.release_on else { continue };
        let lk = m.linkage_key.as_str();
        let since = m.detention_started_at;
        let after_detention = |t: Option<DateTime<Utc>>| t.filter(|t| since.is_none_or(|s| *t >= s));
        let aftercare =
            earliest(members.iter().filter(|o| o.linkage_key == lk).map(|o| after_detention(o.aftercare_at)));
        let referral = earliest(referrals_of(lk).map(|r| {
            let arranged = if r.destination_kind == "organisation" { r.accepted_at } else { r.first_contact_at };
            after_detention(arranged)
        }));
        let followup = earliest([aftercare, referral]);
        let due = brussels_midnight(release_on - Duration::days(settings.release_window_days));
        push(
            "release_without_followup",
            &[&m.org_id, &m.case_id, &release_on.to_string()],
            lk,
            &m.org_id,
            None,
            due,
            followup,
            json!({ "release_on": release_on, "released": m.released }),
        );
    }
    for r in referrals {
        let Some(lk) = person(&r.org_id, &r.case_id) else { continue };
        let detail =
            json!({ "stage": r.stage, "destination_kind": r.destination_kind, "made_on": brussels_date(r.made_at) });
        if r.destination_kind == "organisation" {
            let due = working_days_deadline(r.made_at, settings.answer_working_days);
            let resolved = earliest([r.answered_at, r.closed_at]);
            push(
                "referral_unanswered",
                &[&r.referral_id],
                lk,
                &r.org_id,
                r.receiver_org.as_deref(),
                due,
                resolved,
                detail.clone(),
            );
            if let Some(accepted) = r.accepted_at {
                let due = working_days_deadline(accepted, settings.first_contact_working_days);
                let resolved = earliest([r.first_contact_at, r.closed_at]);
                push(
                    "referral_no_first_contact",
                    &[&r.referral_id],
                    lk,
                    &r.org_id,
                    r.receiver_org.as_deref(),
                    due,
                    resolved,
                    detail.clone(),
                );
            }
        }
    }
    for mo in moments {
        let Some(lk) = person(&mo.org_id, &mo.case_id) else { continue };
        let seq = mo.seq.to_string();
        for r in referrals_of(lk) {
            let open_then = r.made_at <= mo.at && r.closed_at.is_none_or(|c| c > mo.at);
            if !open_then {
                continue;
            }
            let kind = match mo.kind.as_str() {
                "released" => "released_with_open_referral",
                "transferred" => "transferred_with_open_referral",
                _ => {
                    // Closed at one organisation while a referral to another is open.
                    if r.receiver_org.is_none() || r.receiver_org.as_deref() == Some(mo.org_id.as_str()) {
                        continue;
                    }
                    "closed_with_open_referral"
                }
            };
            let detail = json!({
                "stage": r.stage, "destination_kind": r.destination_kind, "made_on": brussels_date(r.made_at),
                "referred_by": r.org_id,
            });
            push(
                kind,
                &[&mo.org_id, &mo.case_id, &seq, &r.referral_id],
                lk,
                &mo.org_id,
                r.receiver_org.as_deref(),
                mo.at,
                r.closed_at,
                detail,
            );
        }
    }
    for d in dropouts {
        let Some(lk) = person(&d.org_id, &d.case_id) else { continue };
        let due = d.dropped_at + Duration::days(settings.feedback_days);
        let key = d.key_id.to_string();
        push(
            "dropout_without_feedback",
            &[&d.activity_id, &d.org_id, &key],
            lk,
            &d.org_id,
            None,
            due,
            d.feedback_at,
            json!({ "dropped_out_on": brussels_date(d.dropped_at) }),
        );
    }
    out
}

/// An alert as the coordinator sees it: by linkage key, never a case id or client reference.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertView {
    /// Opaque id.
    pub id: String,
    /// The person.
    pub linkage_key: String,
    /// One of [`ALERT_KINDS`].
    pub kind: String,
    /// The organisation concerned.
    pub organisation: String,
    /// The other organisation (a referral's receiver), if any.
    pub other_organisation: Option<String>,
    /// When the condition became true.
    pub opened_at: DateTime<Utc>,
    /// When it was resolved; `None` while open.
    pub closed_at: Option<DateTime<Utc>>,
    /// How long it has been (or was) open, in seconds.
    pub open_for_seconds: i64,
    /// How long it has been (or was) open, in whole days.
    pub open_for_days: i64,
    /// Minimal facts: dates and stages.
    pub detail: Value,
}

impl AlertView {
    /// The alert, aged at `now`.
    pub fn of(a: AlertRow, now: DateTime<Utc>) -> Self {
        let open_for = a.closed_at.unwrap_or(now) - a.opened_at;
        Self {
            id: a.alert_id,
            linkage_key: a.linkage_key,
            kind: a.kind,
            organisation: a.org_id,
            other_organisation: a.other_org,
            opened_at: a.opened_at,
            closed_at: a.closed_at,
            open_for_seconds: open_for.num_seconds().max(0),
            open_for_days: open_for.num_days().max(0),
            detail: a.detail.0,
        }
    }
}

/// Filters of the alerts listing.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// `open` (default), `closed` or `all`.
    pub state: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only alerts concerning this organisation (as organisation or other organisation).
    pub org: Option<String>,
    /// Only this person.
    pub linkage_key: Option<String>,
    /// Continue after (opened_at, id) of the last row.
    pub after: Option<(DateTime<Utc>, String)>,
    /// Page size.
    pub limit: i64,
    /// Today (Brussels): only alerts of persons with a member whose consent holds today are
    /// shown, as the tick keeps them, so that a consent that lapsed at midnight hides its
    /// alerts before the next tick forgets them.
    pub today: NaiveDate,
}

/// A page of alerts, longest open first.
pub async fn list_alerts(pool: &PgPool, filter: &AlertFilter) -> Result<Vec<AlertRow>, sqlx::Error> {
    let state = filter.state.as_deref().unwrap_or("open");
    let (after_at, after_id) = match &filter.after {
        Some((at, id)) => (Some(*at), Some(id.clone())),
        None => (None, None),
    };
    sqlx::query_as(
        "SELECT * FROM monitor_alerts
         WHERE ($1 = 'all' OR ($1 = 'open') = (closed_at IS NULL))
           AND ($2::text IS NULL OR kind = $2)
           AND ($3::text IS NULL OR org_id = $3 OR other_org = $3)
           AND ($4::text IS NULL OR linkage_key = $4)
           AND ($5::timestamptz IS NULL OR (opened_at, alert_id) > ($5, $6))
           AND EXISTS (SELECT 1 FROM monitor_members m WHERE m.linkage_key = monitor_alerts.linkage_key
                       AND (m.consent_expires_on IS NULL OR m.consent_expires_on >= $8))
         ORDER BY opened_at, alert_id LIMIT $7",
    )
    .bind(state)
    .bind(&filter.kind)
    .bind(&filter.org)
    .bind(&filter.linkage_key)
    .bind(after_at)
    .bind(after_id)
    .bind(filter.limit)
    .bind(filter.today)
    .fetch_all(pool)
    .await
}

/// One organisation's part in a person's help, as the monitor shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct MemberView {
    /// The organisation.
    pub organisation: String,
    /// Guidance status (`joined` until a status event follows the consent).
    pub status: String,
    /// In detention, as far as the monitor knows.
    pub in_detention: bool,
    /// Release date (scheduled, or of the release).
    pub release_on: Option<NaiveDate>,
    /// Released.
    pub released: bool,
    /// When after-care started.
    pub aftercare_at: Option<DateTime<Utc>>,
    /// The last day the consent holds.
    pub consent_expires_on: Option<NaiveDate>,
    /// The organisation's case: never shown to the coordinator, it names the read in the
    /// access log, where the client's subject access export finds it.
    #[serde(skip)]
    pub case_id: String,
}

/// An open referral of a person, as the monitor shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct OpenReferralView {
    /// The sending organisation.
    pub from_organisation: String,
    /// The receiving organisation, or none for an outside service.
    pub to_organisation: Option<String>,
    /// `organisation` or `outside_service`.
    pub destination_kind: String,
    /// Stage.
    pub stage: String,
    /// Made.
    pub made_at: DateTime<Utc>,
}

/// A person in the monitor.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PersonView {
    /// The person's linkage key.
    pub linkage_key: String,
    /// The organisations helping, with minimal facts.
    pub organisations: Vec<MemberView>,
    /// Open referrals.
    pub open_referrals: Vec<OpenReferralView>,
    /// Open alerts.
    pub open_alerts: i64,
}

/// The cases (organisation, case id) of the members of the persons `linkage_keys` whose
/// consent holds `today`: what a read about those persons is recorded against.
pub async fn member_cases(
    pool: &PgPool,
    linkage_keys: &[String],
    today: NaiveDate,
) -> Result<Vec<(String, String)>, sqlx::Error> {
    if linkage_keys.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_as(
        "SELECT org_id, case_id FROM monitor_members
         WHERE linkage_key = ANY($1) AND (consent_expires_on IS NULL OR consent_expires_on >= $2)
         ORDER BY org_id, case_id",
    )
    .bind(linkage_keys)
    .bind(today)
    .fetch_all(pool)
    .await
}

/// A page of persons, by linkage key, after `after`.
pub async fn list_persons(
    pool: &PgPool,
    today: NaiveDate,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<PersonView>, sqlx::Error> {
    let keys: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT linkage_key FROM monitor_members
         WHERE (consent_expires_on IS NULL OR consent_expires_on >= $1) AND ($2::text IS NULL OR linkage_key > $2)
         ORDER BY linkage_key LIMIT $3",
    )
    .bind(today)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    let mut out = Vec::with_capacity(keys.len());
    for lk in keys {
        let organisations: Vec<MemberView> = sqlx::query_as(
            "SELECT org_id AS organisation, status, in_detention, release_on, released, aftercare_at,
                consent_expires_on, case_id FROM monitor_members
             WHERE linkage_key = $1 AND (consent_expires_on IS NULL OR consent_expires_on >= $2) ORDER BY org_id",
        )
        .bind(&lk)
        .bind(today)
        .fetch_all(pool)
        .await?;
        let open_referrals: Vec<OpenReferralView> = sqlx::query_as(
            "SELECT r.org_id AS from_organisation, r.receiver_org AS to_organisation, r.destination_kind, r.stage,
                r.made_at
             FROM monitor_referrals r JOIN monitor_members m ON m.org_id = r.org_id AND m.case_id = r.case_id
             WHERE m.linkage_key = $1 AND r.closed_at IS NULL
               AND (m.consent_expires_on IS NULL OR m.consent_expires_on >= $2)
             ORDER BY r.made_at",
        )
        .bind(&lk)
        .bind(today)
        .fetch_all(pool)
        .await?;
        let open_alerts: i64 =
            // Only listed persons are counted, and they have a member in scope (the filter above).
            sqlx::query_scalar("SELECT count(*) FROM monitor_alerts WHERE linkage_key = $1 AND closed_at IS NULL")
                .bind(&lk)
                .fetch_one(pool)
                .await?;
        out.push(PersonView { linkage_key: lk, organisations, open_referrals, open_alerts });
    }
    Ok(out)
}

/// Brings every alert up to `now`, forgetting expired consents: what a tick does, callable
/// by a rebuild before its swap and by tests comparing two databases at one instant.
pub async fn settle(pool: &PgPool, settings: &MonitorSettings, now: DateTime<Utc>) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    evaluate(&mut tx, settings, now, None, true).await?;
    tx.commit().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, 10, 0, 0).single().expect("a time")
    }

    fn member(org: &str, case: &str, lk: &str) -> Member {
        Member {
            org_id: org.into(),
            case_id: case.into(),
            linkage_key: lk.into(),
            key_id: None,
            consent_expires_on: None,
            joined_at: t(2026, 1, 1),
            status: "open".into(),
            in_detention: true,
            detention_started_at: Some(t(2026, 1, 1)),
            release_on: None,
            released: false,
            aftercare_at: None,
        }
    }

    fn referral(id: &str, org: &str, case: &str, to: Option<&str>, made: DateTime<Utc>) -> MonitorReferral {
        MonitorReferral {
            referral_id: id.into(),
            org_id: org.into(),
            case_id: case.into(),
            receiver_org: to.map(str::to_owned),
            destination_kind: if to.is_some() { "organisation" } else { "outside_service" }.into(),
            stage: "made".into(),
            made_at: made,
            answered_at: None,
            accepted_at: None,
            first_contact_at: None,
            closed_at: None,
        }
    }

    fn kinds(alerts: &BTreeMap<String, AlertRow>) -> Vec<(String, bool)> {
        let mut k: Vec<(String, bool)> = alerts.values().map(|a| (a.kind.clone(), a.closed_at.is_none())).collect();
        k.sort();
        k
    }

    #[test]
    fn an_alert_due_before_the_year_1_opens_at_its_start() {
        // Fourteen days before 5 January of year 1 is in 1 BC, which PostgreSQL writes in
        // JSON as `... BC`: the next read of the alerts would fail on it, batch after batch.
        let s = MonitorSettings::default();
        let mut m = member("apo", "c1", "lk");
        m.release_on = NaiveDate::from_ymd_opt(1, 1, 5);
        let open = compute_alerts(&s, t(2026, 3, 5), &[m], &[], &[], &[]);
        let opened: Vec<DateTime<Utc>> = open.values().map(|a| a.opened_at).collect();
        assert_eq!(opened, vec![earliest_moment()]);
        assert_eq!(earliest_moment().to_rfc3339(), "0001-01-01T00:00:00+00:00");
    }

    #[test]
    fn a_release_opens_an_alert_fourteen_days_ahead_and_after_care_anywhere_closes_it() {
        let s = MonitorSettings::default();
        let mut m = member("apo", "c1", "lk");
        m.release_on = NaiveDate::from_ymd_opt(2026, 3, 20);
        assert!(compute_alerts(&s, t(2026, 3, 5), &[m.clone()], &[], &[], &[]).is_empty());
        let open = compute_alerts(&s, t(2026, 3, 6), &[m.clone()], &[], &[], &[]);
        assert_eq!(kinds(&open), vec![("release_without_followup".into(), true)]);
        let mut other = member("caw-brussel", "x9", "lk");
        other.aftercare_at = Some(t(2026, 3, 10));
        let closed = compute_alerts(&s, t(2026, 3, 12), &[m.clone(), other.clone()], &[], &[], &[]);
        assert_eq!(kinds(&closed), vec![("release_without_followup".into(), false)]);
        // After-care arranged before the window: no alert at all.
        other.aftercare_at = Some(t(2026, 2, 1));
        assert!(compute_alerts(&s, t(2026, 3, 12), &[m, other], &[], &[], &[]).is_empty());
    }

    #[test]
    fn an_unanswered_referral_opens_after_ten_working_days_and_closes_when_answered() {
        let s = MonitorSettings::default();
        let m = member("apo", "c1", "lk");
        // Made Monday 5 January 2026: the tenth working day is Monday 19 January.
        let mut r = referral("r1", "apo", "c1", Some("caw-brussel"), t(2026, 1, 5));
        assert!(
            compute_alerts(&s, t(2026, 1, 19), std::slice::from_ref(&m), std::slice::from_ref(&r), &[], &[]).is_empty()
        );
        let open = compute_alerts(&s, t(2026, 1, 20), std::slice::from_ref(&m), std::slice::from_ref(&r), &[], &[]);
        assert_eq!(kinds(&open), vec![("referral_unanswered".into(), true)]);
        r.answered_at = Some(t(2026, 1, 22));
        r.accepted_at = Some(t(2026, 1, 22));
        let later = compute_alerts(&s, t(2026, 1, 23), &[m], &[r], &[], &[]);
        assert_eq!(kinds(&later), vec![("referral_unanswered".into(), false)]);
    }

    #[test]
    fn a_release_while_a_referral_is_open_alerts_until_the_referral_closes() {
        let s = MonitorSettings::default();
        let m = member("apo", "c1", "lk");
        let mut r = referral("r1", "apo", "c1", None, t(2026, 1, 5));
        let mo =
            Moment { org_id: "apo".into(), case_id: "c1".into(), seq: 9, kind: "released".into(), at: t(2026, 1, 8) };
        let open = compute_alerts(
            &s,
            t(2026, 1, 9),
            std::slice::from_ref(&m),
            std::slice::from_ref(&r),
            std::slice::from_ref(&mo),
            &[],
        );
        assert_eq!(kinds(&open), vec![("released_with_open_referral".into(), true)]);
        r.closed_at = Some(t(2026, 1, 10));
        let closed = compute_alerts(&s, t(2026, 1, 11), &[m], &[r], &[mo], &[]);
        assert_eq!(kinds(&closed), vec![("released_with_open_referral".into(), false)]);
    }
}
