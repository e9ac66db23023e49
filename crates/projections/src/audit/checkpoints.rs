//! Signed checkpoints: stored in PostgreSQL (`audit_checkpoints`) and published on the audit
//! stream, each store kept apart from the event stream.

use super::{AuditError, ChainSettings};
use bytes::Bytes;
use chrono::Utc;
use relais_audit::{Checkpoint, Link};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};

/// A checkpoint as stored in PostgreSQL.
#[derive(Debug, Clone)]
pub struct StoredCheckpoint {
    /// Row id.
    pub id: i64,
    /// The checkpoint, read from its signed statement.
    pub checkpoint: Checkpoint,
    /// True once it is on the audit stream.
    pub published: bool,
    /// False when the row's columns (sequence, head) disagree with its statement.
    pub columns_agree: bool,
}

type Row = (i64, i64, Vec<u8>, String, Vec<u8>, bool);

fn from_row((id, seq, head, statement, signature, published): Row) -> Result<StoredCheckpoint, AuditError> {
    let checkpoint = Checkpoint::from_statement(&statement, &signature)
        .map_err(|e| AuditError::Corrupt(format!("checkpoint {id}: {e}")))?;
    let columns_agree = checkpoint.sequence as i64 == seq && Link::from_slice(&head) == Some(checkpoint.head);
    Ok(StoredCheckpoint { id, checkpoint, published, columns_agree })
}

const COLUMNS: &str = "id, seq, head, statement, signature, published";

/// Stores a checkpoint, inside the caller's transaction.
pub async fn insert(conn: &mut PgConnection, c: &Checkpoint) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO audit_checkpoints (seq, head, stream, signed_at, key_id, statement, signature)
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(c.sequence as i64)
    .bind(c.head.0.as_slice())
    .bind(&c.stream)
    .bind(c.signed_at)
    .bind(&c.key_id)
    .bind(c.statement())
    .bind(c.signature.as_slice())
    .fetch_one(conn)
    .await
}

/// The `Nats-Msg-Id` of a checkpoint on the audit stream: derived from its statement, so that
/// a retried publish is stored once.
pub fn message_id(c: &Checkpoint) -> String {
    format!("checkpoint-{}", hex::encode(&Sha256::digest(c.statement().as_bytes())[..16]))
}

/// Publishes every stored checkpoint that is not yet on the audit stream; returns how many.
pub async fn publish_pending(pool: &PgPool, js: &async_nats::jetstream::Context) -> Result<u64, AuditError> {
    let rows: Vec<Row> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM audit_checkpoints WHERE NOT published ORDER BY id LIMIT 1000"))
            .fetch_all(pool)
            .await?;
    let mut done = 0;
    for row in rows {
        let stored = from_row(row)?;
        let body = serde_json::to_vec(&stored.checkpoint.to_json()).unwrap_or_default();
        relais_eventlog::audit::publish_checkpoint(js, &message_id(&stored.checkpoint), Bytes::from(body)).await?;
        sqlx::query("UPDATE audit_checkpoints SET published = true WHERE id = $1")
            .bind(stored.id)
            .execute(pool)
            .await?;
        done += 1;
    }
    Ok(done)
}

/// The chain head: its sequence and link (0 and genesis before the first message).
pub async fn chain_head(pool: &PgPool) -> Result<(u64, Link), AuditError> {
    let row: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, link FROM audit_chain ORDER BY seq DESC LIMIT 1").fetch_optional(pool).await?;
    match row {
        None => Ok((0, relais_audit::GENESIS)),
        Some((seq, link)) => Ok((
            seq as u64,
            Link::from_slice(&link).ok_or_else(|| AuditError::Corrupt(format!("link at {seq} is not 32 bytes")))?,
        )),
    }
}

/// Signs the current chain head now (on demand: `relais checkpoint`), stores and publishes it.
/// `None` when nothing is chained yet.
pub async fn sign_head(pool: &PgPool, settings: &ChainSettings) -> Result<Option<Checkpoint>, AuditError> {
    let (seq, head) = chain_head(pool).await?;
    if seq == 0 {
        return Ok(None);
    }
    let checkpoint = settings.signing_key.sign(&settings.stream_name, seq, head, Utc::now());
    let mut conn = pool.acquire().await?;
    insert(&mut conn, &checkpoint).await?;
    drop(conn);
    publish_pending(pool, &settings.js).await?;
    Ok(Some(checkpoint))
}

/// The id of a key other than `key_id` that signed a stored checkpoint, if any.
pub async fn signed_by_another_key(pool: &PgPool, key_id: &str) -> Result<Option<String>, AuditError> {
    Ok(sqlx::query_scalar("SELECT key_id FROM audit_checkpoints WHERE key_id <> $1 LIMIT 1")
        .bind(key_id)
        .fetch_optional(pool)
        .await?)
}

/// The latest checkpoint by sequence, if any.
pub async fn latest(pool: &PgPool) -> Result<Option<StoredCheckpoint>, AuditError> {
    let row: Option<Row> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM audit_checkpoints ORDER BY seq DESC, id DESC LIMIT 1"))
            .fetch_optional(pool)
            .await?;
    row.map(from_row).transpose()
}

/// Checkpoints with `from_seq <= seq <= to_seq`, in (sequence, id) order after the cursor
/// `(after_seq, after_id)`, at most `limit`.
pub async fn page(
    pool: &PgPool,
    from_seq: u64,
    to_seq: u64,
    after: (i64, i64),
    limit: i64,
) -> Result<Vec<StoredCheckpoint>, AuditError> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM audit_checkpoints
         WHERE seq BETWEEN $1 AND $2 AND (seq, id) > ($3, $4)
         ORDER BY seq, id LIMIT $5"
    ))
    .bind(from_seq as i64)
    .bind(to_seq as i64)
    .bind(after.0)
    .bind(after.1)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(from_row).collect()
}

/// Every checkpoint on the audit stream, in order, with its sequence there; unreadable
/// messages are returned as errors to report, not to stop on.
pub async fn from_audit_stream(
    audit: &async_nats::jetstream::stream::Stream,
) -> Result<Vec<(u64, Result<Checkpoint, String>)>, AuditError> {
    use futures::StreamExt;
    let last = relais_eventlog::reader::last_sequence(audit).await?;
    let mut messages =
        relais_eventlog::reader::ordered_range(audit, relais_eventlog::audit::ALL_SUBJECTS, 1, last).await?;
    let mut out = Vec::new();
    while let Some(m) = messages.next().await {
        let m = m?;
        let parsed = serde_json::from_slice::<serde_json::Value>(&m.payload)
            .map_err(|e| e.to_string())
            .and_then(|v| Checkpoint::from_json(&v).map_err(|e| e.to_string()));
        out.push((m.sequence, parsed));
    }
    Ok(out)
}
