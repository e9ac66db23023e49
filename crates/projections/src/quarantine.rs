//! The quarantine: messages of the stream that no view applies, with their reason.

use relais_domain::OrgId;
use serde::Serialize;
use sqlx::PgPool;

/// One quarantined message (its bytes stay in the log; they are not repeated here).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Quarantined {
    /// Stream sequence.
    pub seq: i64,
    /// Subject.
    pub subject: String,
    /// Reason code: subject, undecodable, invalid, mismatch, personal-data-in-clear,
    /// undecryptable, duplicate, rule.
    pub reason: String,
    /// What is wrong.
    pub detail: String,
    /// When the validator judged it.
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
