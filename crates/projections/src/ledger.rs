//! The idempotency ledger: every event id the log holds, with the sequence it was first stored
//! at. It guards beyond the broker's duplicate window.

use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use uuid::Uuid;

/// An event id the log holds: where it was first stored, and by which organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The sequence of the id's first copy.
    pub sequence: u64,
    /// The organisation whose subject that copy is on.
    pub org: String,
}

/// Looks up which of `ids` the log already holds, with their sequences and organisations.
pub async fn find(pool: &PgPool, ids: &[Uuid]) -> Result<HashMap<Uuid, Recorded>, sqlx::Error> {
    let rows: Vec<(Uuid, i64, String)> =
        sqlx::query_as("SELECT event_id, seq, org_id FROM event_ledger WHERE event_id = ANY($1)")
            .bind(ids)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(|(id, seq, org)| (id, Recorded { sequence: seq as u64, org })).collect())
}

/// The ledger's insert of the ids, sequences and organisations in the array parameters named,
/// with a `WITH` clause joined into its `FROM` where one is given (joined, so that it runs).
/// Ids are inserted in one order, so that the gateway and the validator recording the same ids
/// at once wait for each other instead of deadlocking: both use this insert.
macro_rules! insert_rows {
    ($ids:literal, $seqs:literal, $orgs:literal $(, $joined:literal)?) => {
        concat!(
            "INSERT INTO event_ledger (event_id, seq, org_id)
             SELECT u.event_id, u.seq, u.org_id FROM UNNEST(",
            $ids,
            "::uuid[], ",
            $seqs,
            "::int8[], ",
            $orgs,
            "::text[]) AS u(event_id, seq, org_id)",
            $(", ", $joined,)?
            // No conflict target: the gateway and the validator record the same rows at
            // once, and only an insert arbitrated on both unique indexes waits and does
            // nothing instead of failing on the one it does not name.
            " ORDER BY u.event_id ON CONFLICT DO NOTHING"
        )
    };
}
pub(crate) use insert_rows;

/// The ledger's insert of `$1`, `$2`, `$3` after a `WITH` clause named `flush`.
macro_rules! insert_after {
    ($with:literal) => {
        concat!("WITH flush AS (", $with, ") ", insert_rows!("$1", "$2", "$3", "flush"))
    };
}

/// Records ids at their sequences; ids already recorded keep their first sequence.
pub async fn record(conn: &mut PgConnection, ids: &[Uuid], seqs: &[i64], orgs: &[String]) -> Result<(), sqlx::Error> {
    insert(conn, insert_after!("SELECT 1"), ids, seqs, orgs).await
}

/// Records ids as [`record`] does, without waiting for the WAL flush: the gateway's early
/// record only narrows the gap until the validator records the same ids with its verdicts. A
/// record lost in a crash reopens that gap, which the broker's duplicate window covers; waiting
/// cost a disk flush per request (docs/BENCHMARKS.md, "A fifth session").
pub async fn record_early(pool: &PgPool, ids: &[Uuid], seqs: &[i64], orgs: &[String]) -> Result<(), sqlx::Error> {
    // `set_config(..., true)` holds for the statement's own transaction: no extra round trip.
    insert(pool, insert_after!("SELECT set_config('synchronous_commit', 'off', true)"), ids, seqs, orgs).await
}

async fn insert<'c>(
    on: impl sqlx::PgExecutor<'c>,
    sql: &'static str,
    ids: &[Uuid],
    seqs: &[i64],
    orgs: &[String],
) -> Result<(), sqlx::Error> {
    sqlx::query(sql).bind(ids).bind(seqs).bind(orgs).execute(on).await?;
    Ok(())
}
