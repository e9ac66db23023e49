//! Retention: nothing is kept longer than needed (GDPR Art. 5(1)(e)). Each organisation has a
//! retention period for closed cases (configuration; five years by default). A client is due
//! for erasure when none of their cases at the organisation is open (every case's guidance was
//! closed or declined, or they have no case) and their last event there lies more than the
//! period in the past. The sweep erases exactly those clients, with the reason
//! `retention_expired`; it runs periodically in the projector process and on demand
//! (`relais retention sweep`), and `relais status` shows what is due.
//!
//! Time is passed in (`now`), so the sweep can be tested and previewed with any clock.

use crate::erasure::{Eraser, Erasure, ErasureError};
use async_nats::jetstream::stream::Stream;
use chrono::{DateTime, Duration, Utc};
use relais_domain::OrgId;
use relais_domain::events::ErasureReason;
use serde::Serialize;
use sqlx::PgPool;
use std::collections::BTreeMap;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The default retention period after the last closure: five years.
pub const DEFAULT_RETENTION_DAYS: i64 = 5 * 365 + 1;

/// Retention periods: one default and one per organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    default: Duration,
    per_org: BTreeMap<String, Duration>,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self { default: Duration::days(DEFAULT_RETENTION_DAYS), per_org: BTreeMap::new() }
    }
}

/// Why a retention policy could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retention {entry:?}: {detail} (expected default=<days>,<org>=<days>,...)")]
pub struct PolicyError {
    /// The entry at fault.
    pub entry: String,
    /// What is wrong.
    pub detail: String,
}

impl RetentionPolicy {
    /// Reads `default=<days>,<org>=<days>,...` (for example `default=1826,apo=3653`). Every
    /// period is at least one day.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let mut policy = Self::default();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let error = |detail: &str| PolicyError { entry: entry.to_owned(), detail: detail.to_owned() };
            let (name, days) = entry.split_once('=').ok_or_else(|| error("missing '='"))?;
            let days: i64 = days
                .trim()
                .parse()
                .ok()
                .filter(|d| (1..=36_500).contains(d))
                .ok_or_else(|| error("days from 1 to 36500"))?;
            let name = name.trim();
            if name == "default" {
                policy.default = Duration::days(days);
            } else {
                let org = OrgId::parse(name).map_err(|e| error(&e.to_string()))?;
                policy.per_org.insert(org.to_string(), Duration::days(days));
            }
        }
        Ok(policy)
    }

    /// The retention period of an organisation.
    pub fn period_for(&self, org: &str) -> Duration {
        self.per_org.get(org).copied().unwrap_or(self.default)
    }

    /// The default period.
    pub fn default_period(&self) -> Duration {
        self.default
    }

    /// The organisations with a period of their own.
    pub fn per_org(&self) -> &BTreeMap<String, Duration> {
        &self.per_org
    }
}

/// Retention settings: the policy and how often the projector process sweeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionSettings {
    /// The periods.
    pub policy: RetentionPolicy,
    /// How often the projector process sweeps; `None`: only on demand.
    pub sweep_every: Option<std::time::Duration>,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self { policy: RetentionPolicy::default(), sweep_every: Some(std::time::Duration::from_secs(24 * 3600)) }
    }
}

/// A client due for erasure.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct DueClient {
    /// The client's data key id.
    pub key_id: Uuid,
    /// The organisation.
    pub org_id: String,
    /// The client's last event at the organisation.
    pub last_event_at: DateTime<Utc>,
}

/// Event types that set a case's guidance status, and those of them that leave it open.
const STATUS_TYPES: &[&str] =
    &["relais.guidance.requested", "relais.guidance.accepted", "relais.guidance.declined", "relais.guidance.closed"];
const OPEN_TYPES: &[&str] = &["relais.guidance.requested", "relais.guidance.accepted"];

/// The clients due for erasure at `now`, oldest first per organisation.
pub async fn due(pool: &PgPool, policy: &RetentionPolicy, now: DateTime<Utc>) -> Result<Vec<DueClient>, sqlx::Error> {
    due_among(pool, policy, now, None).await
}

/// Like [`due`], among the clients of `only` when given.
async fn due_among(
    pool: &PgPool,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    only: Option<&[Uuid]>,
) -> Result<Vec<DueClient>, sqlx::Error> {
    let (orgs, cutoffs): (Vec<String>, Vec<DateTime<Utc>>) =
        policy.per_org.iter().map(|(org, period)| (org.clone(), now - *period)).unzip();
    sqlx::query_as(
        "WITH status AS (
             SELECT DISTINCT ON (key_id, subject) key_id, event_type FROM client_events
             WHERE event_type = ANY($1) AND ($6::uuid[] IS NULL OR key_id = ANY($6))
             ORDER BY key_id, subject, seq DESC
         ), open_clients AS (
             SELECT DISTINCT key_id FROM status WHERE event_type = ANY($2)
         ), last_events AS (
             SELECT key_id, org_id, max(occurred_at) AS last_event_at FROM client_events
             WHERE ($6::uuid[] IS NULL OR key_id = ANY($6)) GROUP BY key_id, org_id
         )
         SELECT l.key_id, l.org_id, l.last_event_at
         FROM last_events l
         JOIN client_keys k ON k.key_id = l.key_id AND k.org_id = l.org_id AND k.erased_at IS NULL
         LEFT JOIN UNNEST($3::text[], $4::timestamptz[]) AS p(org_id, cutoff) ON p.org_id = l.org_id
         WHERE l.last_event_at < coalesce(p.cutoff, $5)
           AND NOT EXISTS (SELECT 1 FROM open_clients o WHERE o.key_id = l.key_id)
         ORDER BY l.org_id, l.last_event_at, l.key_id",
    )
    .bind(STATUS_TYPES)
    .bind(OPEN_TYPES)
    .bind(&orgs)
    .bind(&cutoffs)
    .bind(now - policy.default)
    .bind(only)
    .fetch_all(pool)
    .await
}

/// How many clients are due at `now`, per organisation.
pub async fn due_counts(
    pool: &PgPool,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
) -> Result<BTreeMap<String, u64>, sqlx::Error> {
    let mut counts = BTreeMap::new();
    for d in due(pool, policy, now).await? {
        *counts.entry(d.org_id).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Why a sweep stopped.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The client index has not caught up with the log: a recent event could reopen a
    /// client, so nothing is erased. Retry when the projector has caught up.
    #[error("the client index is at sequence {checkpoint}, the log at {last}: run the projector and retry")]
    IndexBehind {
        /// The index's checkpoint.
        checkpoint: u64,
        /// The log's last sequence when the sweep started.
        last: u64,
    },
    /// Another sweep runs (another gateway replica, or the command line): this one did
    /// nothing.
    #[error("another retention sweep is running")]
    Busy,
    /// Reading the log failed.
    #[error(transparent)]
    Log(#[from] relais_eventlog::reader::ReadError),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// Appending an erasure event owed by an earlier erasure failed (the next sweep retries).
    #[error("appending an owed erasure event: {source}")]
    Owed {
        /// Why.
        #[source]
        source: ErasureError,
    },
    /// An erasure failed (the clients erased before it stay erased; the next sweep goes on).
    #[error("erasing {key_id}: {source}")]
    Erase {
        /// The client's key id.
        key_id: Uuid,
        /// Why.
        #[source]
        source: ErasureError,
    },
}

/// What a sweep did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SweepReport {
    /// The clients erased.
    pub erased: Vec<Erasure>,
    /// Erasures done before whose event the log did not take then, now appended.
    pub completed: Vec<Erasure>,
    /// Clients whose key this sweep destroyed but whose erasure event is still owed (its id
    /// held by a message not recorded as the erasure yet), with that message's sequence: a
    /// later sweep completes them.
    pub pending: Vec<(Uuid, u64)>,
}

/// Waits (up to `wait`) until the client index has applied the log as it is now; returns the
/// sequence it reached.
async fn index_caught_up(pool: &PgPool, stream: &Stream, wait: std::time::Duration) -> Result<u64, SweepError> {
    let last = relais_eventlog::reader::last_sequence(stream).await?;
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let checkpoint = crate::worker::checkpoint(pool, crate::client_events::NAME).await?;
        if checkpoint >= last {
            return Ok(checkpoint);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(SweepError::IndexBehind { checkpoint, last });
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The advisory lock a running sweep holds ("relais_r").
pub const SWEEP_LOCK: i64 = 0x7265_6c61_6973_5f72;

/// Erases every client due at `now`, calling `progress(done, total)` after each. The client
/// index must first catch up with the log (waiting up to 30 s).
#[tracing::instrument(name = "retention.sweep", skip_all)]
pub async fn sweep(
    eraser: &Eraser,
    pool: &PgPool,
    stream: &Stream,
    policy: &RetentionPolicy,
    now: DateTime<Utc>,
    mut progress: impl FnMut(u64, u64),
) -> Result<SweepReport, SweepError> {
    // One sweep at a time across the deployment (every gateway replica sweeps): held on a
    // connection of its own, released when it closes at the end.
    let mut lock = pool.acquire().await?.detach();
    let free: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock($1)").bind(SWEEP_LOCK).fetch_one(&mut lock).await?;
    if !free {
        return Err(SweepError::Busy);
    }
    let mut indexed_to = index_caught_up(pool, stream, std::time::Duration::from_secs(30)).await?;
    let mut report = SweepReport {
        completed: eraser.finish_owed().await.map_err(|source| SweepError::Owed { source })?,
        ..SweepReport::default()
    };
    let due = due(pool, policy, now).await?;
    let total = due.len() as u64;
    for (i, client) in due.into_iter().enumerate() {
        // A long sweep runs while clients come back: each client is asked again, on an index
        // that caught up with the log, just before their key is destroyed, so that a request
        // accepted meanwhile keeps its client.
        if relais_eventlog::reader::last_sequence(stream).await? > indexed_to {
            indexed_to = index_caught_up(pool, stream, std::time::Duration::from_secs(30)).await?;
            if due_among(pool, policy, now, Some(&[client.key_id])).await?.is_empty() {
                progress(i as u64 + 1, total);
                continue;
            }
        }
        let org = OrgId::parse(&client.org_id)
            .map_err(|_| SweepError::Erase { key_id: client.key_id, source: ErasureError::UnknownClient })?;
        let erasure =
            match eraser.erase_key(&org, client.key_id, ErasureReason::RetentionExpired, "relais:retention").await {
                Ok(erasure) => erasure,
                // The key is destroyed, its event owed: the next sweep completes it.
                Err(ErasureError::EventPending(sequence)) => {
                    tracing::warn!(key_id = %client.key_id, sequence, "erasure event owed");
                    report.pending.push((client.key_id, sequence));
                    progress(i as u64 + 1, total);
                    continue;
                }
                Err(source) => return Err(SweepError::Erase { key_id: client.key_id, source }),
            };
        // The sweep's own erasure event reopens nobody: when nothing came before it, the
        // next client needs no wait for the index.
        if erasure.sequence == indexed_to + 1 {
            indexed_to = erasure.sequence;
        }
        report.erased.push(erasure);
        progress(i as u64 + 1, total);
    }
    tracing::info!(erased = report.erased.len(), completed = report.completed.len(), "retention sweep done");
    Ok(report)
}

/// Sweeps every `every` until `shutdown`, first shortly after start. Failures are logged; the
/// next round tries again.
pub async fn run_periodic(
    eraser: Eraser,
    pool: PgPool,
    stream: Stream,
    policy: RetentionPolicy,
    every: std::time::Duration,
    shutdown: CancellationToken,
) {
    let mut next = tokio::time::Instant::now() + std::time::Duration::from_secs(1).min(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        next = tokio::time::Instant::now() + every;
        match sweep(&eraser, &pool, &stream, &policy, Utc::now(), |_, _| {}).await {
            Ok(report) if !report.erased.is_empty() || !report.completed.is_empty() => {
                tracing::info!(
                    erased = report.erased.len(),
                    completed = report.completed.len(),
                    "retention: clients past their period erased, owed erasure events appended"
                );
            }
            Ok(_) => {}
            Err(SweepError::Busy) => tracing::debug!("another process sweeps: this round is skipped"),
            Err(e) => tracing::warn!(error = %e, "retention sweep did not complete; retrying at the next round"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_parse_a_default_and_periods_per_organisation() {
        let p = RetentionPolicy::parse("default=30, apo=3653").expect("valid");
        assert_eq!(p.period_for("apo"), Duration::days(3653));
        assert_eq!(p.period_for("dsr"), Duration::days(30));
        assert_eq!(RetentionPolicy::parse("").expect("empty"), RetentionPolicy::default());
        assert!(RetentionPolicy::parse("apo").is_err());
        assert!(RetentionPolicy::parse("apo=0").is_err());
        assert!(RetentionPolicy::parse("APO=10").is_err());
        assert!(RetentionPolicy::parse("apo=ten").is_err());
    }
}
