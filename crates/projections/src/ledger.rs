//! The idempotency ledger: every event id the log holds, with the sequence it was first stored
//! at. It guards beyond the broker's duplicate window.

use sqlx::{PgConnection, PgPool};
use std::collections::HashMap;
use uuid::Uuid;

/// Looks up which of `ids` the log already holds, with their sequences.
pub async fn find(pool: &PgPool, ids: &[Uuid]) -> Result<HashMap<Uuid, u64>, sqlx::Error> {
    let rows: Vec<(Uuid, i64)> = sqlx::query_as("SELECT event_id, seq FROM event_ledger WHERE event_id = ANY($1)")
        .bind(ids)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(|(id, seq)| (id, seq as u64)).collect())
}

/// Records ids at their sequences; ids already recorded keep their first sequence.
pub async fn record(conn: &mut PgConnection, ids: &[Uuid], seqs: &[i64], orgs: &[String]) -> Result<(), sqlx::Error> {
    sqlx::query(
        // In one order, so that the gateway and the validator recording the same ids at once
        // wait for each other instead of deadlocking.
        "INSERT INTO event_ledger (event_id, seq, org_id)
         SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::text[]) AS u(event_id, seq, org_id) ORDER BY event_id
         ON CONFLICT DO NOTHING",
    )
    .bind(ids)
    .bind(seqs)
    .bind(orgs)
    .execute(conn)
    .await?;
    Ok(())
}
