//! The quarantine: messages of the stream that no view applies, with their reason.

use crate::ledger::Recorded;
use relais_domain::OrgId;
use serde::Serialize;
use sqlx::PgPool;
use std::collections::HashMap;
use uuid::Uuid;

/// One quarantined message (its bytes stay in the log; they are not repeated here).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Quarantined {
    /// Stream sequence.
    pub seq: i64,
    /// Subject.
    pub subject: String,
    /// Reason code: subject, undecodable, message-id-mismatch, invalid, mismatch,
    /// personal-data-in-clear, undecryptable, erasure-without-key, client-erased, duplicate,
    /// rule (the validator's); unprojectable (accepted, but a view cannot store it).
    pub reason: String,
    /// What is wrong.
    pub detail: String,
    /// When it was quarantined.
    pub quarantined_at: chrono::DateTime<chrono::Utc>,
}

/// The quarantined messages on an organisation's subjects after sequence `after`.
pub async fn list_for_org(pool: &PgPool, org: &OrgId, after: i64, limit: i64) -> Result<Vec<Quarantined>, sqlx::Error> {
    let prefix = format!("{}.{org}.", relais_eventlog::subjects::PREFIX);
    sqlx::query_as(
        "SELECT seq, subject, reason, detail, quarantined_at FROM quarantine
         WHERE starts_with(subject, $1) AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(prefix)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The first quarantined copy of each of `ids` that the quarantine holds (the id the broker
/// deduplicated it by: its message id header, else its payload's), with the organisation of
/// its subject. The organisation is empty when the subject is not an event subject or the
/// message holds no event with that id (`message-id-mismatch`): no organisation's event has
/// the id. The broker counts quarantined messages in its duplicate window too.
pub async fn first_sequences(pool: &PgPool, ids: &[Uuid]) -> Result<HashMap<Uuid, Recorded>, sqlx::Error> {
    let rows: Vec<(Uuid, i64, String, String)> = sqlx::query_as(
        "SELECT DISTINCT ON (event_id) event_id, seq, subject, reason FROM quarantine
         WHERE event_id = ANY($1) ORDER BY event_id, seq",
    )
    .bind(ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, seq, subject, reason)| {
            let org = relais_eventlog::subjects::parse_event_subject(&subject)
                .filter(|_| reason != "message-id-mismatch")
                .map(|(org, _)| org.to_string())
                .unwrap_or_default();
            (id, Recorded { sequence: seq as u64, org })
        })
        .collect())
}
