//! A case as it stood at a moment, rebuilt from its own events in the log (not from the
//! projection), with the same `evolve` as everywhere else.
//!
//! Only events the validator accepted count: quarantined sequences are skipped, and events the
//! validator has not judged yet are left out (`judged_through` says up to where). The moment
//! is compared with each event's `recordedat` (basis `recorded`: what Relais knew then) or its
//! `time` (basis `occurred`: what had happened by then, as recorded up to now, late entries
//! included).

use super::AuditError;
use crate::worker::{VALIDATOR, checkpoint};
use async_nats::jetstream::stream::Stream;
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use relais_domain::aggregates::brussels_date;
use relais_domain::aggregates::case::{self, CaseStatus, Detention};
use relais_domain::aggregates::consent::{ConsentStatus, Grant};
use relais_domain::{AggregateRef, OrgId, StoredEvent};
use relais_eventlog::{reader, subjects};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::collections::HashSet;

/// Which time of an event is compared with the moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AsOfBasis {
    /// When Relais recorded it (`recordedat`): what the system knew at the moment.
    #[default]
    Recorded,
    /// When it happened (`time`): what had happened by the moment, as known now.
    Occurred,
}

impl AsOfBasis {
    /// Parses `recorded` or `occurred`.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "recorded" => Some(Self::Recorded),
            "occurred" => Some(Self::Occurred),
            _ => None,
        }
    }
}

/// A case at a moment.
#[derive(Debug, Clone, Serialize)]
pub struct CaseAsOf {
    /// The organisation.
    pub org: String,
    /// The case id.
    pub case: String,
    /// The moment.
    pub as_of: DateTime<Utc>,
    /// Which time of the events was compared with it.
    pub basis: AsOfBasis,
    /// `requested`, `accepted`, `declined` or `closed`.
    pub status: &'static str,
    /// The client's legal status, if known.
    pub legal_status: Value,
    /// `{"state": "never_detained" | "in_detention" | "released", ...}`.
    pub detention: Value,
    /// The release scheduled, if any.
    pub scheduled_release: Value,
    /// A plan was set in the current guidance period.
    pub plan_set: bool,
    /// After-care started in the current guidance period.
    pub aftercare_started: bool,
    /// The client's consents, each with its status on the moment's day (Brussels).
    pub consents: Vec<Value>,
    /// How many events were folded.
    pub event_count: u64,
    /// The sequence of the last event folded.
    pub last_sequence: u64,
    /// The time (per basis) of the last event folded.
    pub last_event_at: DateTime<Utc>,
    /// The validator's position: later events were not considered.
    pub judged_through: u64,
}

fn status_name(s: CaseStatus) -> &'static str {
    match s {
        CaseStatus::NeverSeen => "never_seen",
        CaseStatus::Requested => "requested",
        CaseStatus::Accepted => "accepted",
        CaseStatus::Declined => "declined",
        CaseStatus::Closed => "closed",
    }
}

fn consents(state: &case::State, day: NaiveDate) -> Vec<Value> {
    state
        .consent()
        .grants()
        .map(|(scope, grant)| {
            let (given, expires_on) = match grant {
                Grant::Given { expires_on } => ("given", *expires_on),
                Grant::Withdrawn => ("withdrawn", None),
            };
            let status = match state.consent().status(scope, day) {
                ConsentStatus::NeverGiven => "never_given",
                ConsentStatus::Active { .. } => "active",
                ConsentStatus::Expired { .. } => "expired",
                ConsentStatus::Withdrawn => "withdrawn",
            };
            json!({ "scope": scope, "last_decision": given, "expires_on": expires_on, "status": status })
        })
        .collect()
}

/// Rebuilds `case` of `org` at `as_of`; `None` when no accepted event of it counts by then.
pub async fn case_as_of(
    pool: &PgPool,
    stream: &Stream,
    org: &OrgId,
    case: &AggregateRef,
    as_of: DateTime<Utc>,
    basis: AsOfBasis,
) -> Result<Option<CaseAsOf>, AuditError> {
    let subject = subjects::event_subject(org, case);
    let judged = checkpoint(pool, VALIDATOR).await?;
    let Some(last) = reader::last_sequence_of_subject(stream, &subject).await? else { return Ok(None) };
    let quarantined: HashSet<i64> = sqlx::query_scalar("SELECT seq FROM quarantine WHERE subject = $1")
        .bind(&subject)
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
    let mut messages = reader::ordered_range(stream, &subject, 1, last.min(judged)).await?;
    let mut state = case::State::default();
    let (mut count, mut last_sequence, mut last_event_at) = (0u64, 0u64, None);
    while let Some(m) = messages.next().await {
        let m = m?;
        if quarantined.contains(&(m.sequence as i64)) {
            continue;
        }
        // Accepted events decode (the validator checked); personal fields are not needed.
        let Some(envelope) = StoredEvent::decode(&m.payload).ok().and_then(|s| s.into_v1().open(None).ok()) else {
            continue;
        };
        let at = match basis {
            AsOfBasis::Recorded => envelope.recorded_at,
            AsOfBasis::Occurred => envelope.occurred_at,
        };
        if at > as_of {
            continue;
        }
        state = case::evolve(state, &envelope);
        count += 1;
        last_sequence = m.sequence;
        last_event_at = Some(last_event_at.map_or(at, |l: DateTime<Utc>| l.max(at)));
    }
    let Some(last_event_at) = last_event_at else { return Ok(None) };
    let detention = match state.detention() {
        Detention::NeverDetained => json!({ "state": "never_detained" }),
        Detention::InDetention { prison, since } => {
            json!({ "state": "in_detention", "prison": prison, "since": since })
        }
        Detention::Released { on, kind } => json!({ "state": "released", "on": on, "kind": kind }),
    };
    Ok(Some(CaseAsOf {
        org: org.to_string(),
        case: case.id().to_owned(),
        as_of,
        basis,
        status: status_name(state.status()),
        legal_status: json!(state.legal_status()),
        detention,
        scheduled_release: state.scheduled_release().map_or(Value::Null, |r| json!({ "on": r.on, "kind": r.kind })),
        plan_set: state.plan_set(),
        aftercare_started: state.aftercare_started(),
        consents: consents(&state, brussels_date(as_of)),
        event_count: count,
        last_sequence,
        last_event_at,
        judged_through: judged,
    }))
}
