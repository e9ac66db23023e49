//! The chain worker: one writer, in stream order, so concurrent gateways cannot fork the chain.
//!
//! It reads every message of the stream (quarantined ones included: the chain is over what was
//! stored, not over what was accepted) with its own durable consumer, computes each link
//! (`relais_audit::chain`), records a sequence that holds no message as missing, and commits
//! the links, its position and, when one is due, a signed checkpoint in one transaction. Then
//! it publishes the checkpoint on the audit stream.

use super::{AuditError, ChainSettings, checkpoints};
use crate::worker::{WorkerError, checkpoint, set_checkpoint};
use async_nats::jetstream::stream::Stream;
use chrono::Utc;
use relais_audit::{GENESIS, Link};
use relais_eventlog::reader::{self, LogMessage};
use relais_eventlog::subjects;
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Name of the chain worker's position (in `projection_checkpoints`) and consumer.
pub const CHAIN: &str = "chain";

/// The link at `seq` (genesis at 0).
pub async fn link_at(pool: &PgPool, seq: u64) -> Result<Option<Link>, AuditError> {
    if seq == 0 {
        return Ok(Some(GENESIS));
    }
    let row: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT link FROM audit_chain WHERE seq = $1").bind(seq as i64).fetch_optional(pool).await?;
    row.map(|l| Link::from_slice(&l).ok_or_else(|| AuditError::Corrupt(format!("link at {seq} is not 32 bytes"))))
        .transpose()
}

/// The stored links at the given sequences.
pub async fn links_at(pool: &PgPool, seqs: &[i64]) -> Result<Vec<(u64, Link)>, AuditError> {
    let rows: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT seq, link FROM audit_chain WHERE seq = ANY($1)").bind(seqs).fetch_all(pool).await?;
    decode_links(rows)
}

/// Stored links with sequences `from..=to` (a range scan: cheaper than [`links_at`] for the
/// dense sequences of a replay).
pub async fn links_between(pool: &PgPool, from: u64, to: u64) -> Result<Vec<(u64, Link)>, AuditError> {
    let rows: Vec<(i64, Vec<u8>)> = sqlx::query_as("SELECT seq, link FROM audit_chain WHERE seq BETWEEN $1 AND $2")
        .bind(from as i64)
        .bind(to as i64)
        .fetch_all(pool)
        .await?;
    decode_links(rows)
}

fn decode_links(rows: Vec<(i64, Vec<u8>)>) -> Result<Vec<(u64, Link)>, AuditError> {
    rows.into_iter()
        .map(|(s, l)| {
            Link::from_slice(&l)
                .map(|l| (s as u64, l))
                .ok_or_else(|| AuditError::Corrupt(format!("link at {s} is not 32 bytes")))
        })
        .collect()
}

/// One stored link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredLink {
    /// Sequence.
    pub seq: u64,
    /// Link.
    pub link: Link,
    /// The sequence held no message when the chain reached it.
    pub missing: bool,
}

/// Stored links with `seq > after` (and `<= until`), in order, at most `limit`.
pub async fn links_after(pool: &PgPool, after: u64, until: u64, limit: i64) -> Result<Vec<StoredLink>, AuditError> {
    let rows: Vec<(i64, Vec<u8>, bool)> =
        sqlx::query_as("SELECT seq, link, missing FROM audit_chain WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3")
            .bind(after as i64)
            .bind(until as i64)
            .bind(limit)
            .fetch_all(pool)
            .await?;
    rows.into_iter()
        .map(|(s, l, missing)| {
            Link::from_slice(&l)
                .map(|link| StoredLink { seq: s as u64, link, missing })
                .ok_or_else(|| AuditError::Corrupt(format!("link at {s} is not 32 bytes")))
        })
        .collect()
}

fn chain_error(e: AuditError) -> WorkerError {
    match e {
        AuditError::Db(e) => WorkerError::Db(e),
        AuditError::Log(e) => WorkerError::Log(e),
        AuditError::Keys(e) => WorkerError::Keys(e),
        AuditError::Corrupt(d) | AuditError::Task(d) => WorkerError::Chain(d),
    }
}

/// Links of a batch, after `prev` at `done`: one per sequence, holes included.
fn links_of(batch: &[LogMessage], done: u64, mut prev: Link) -> (Vec<i64>, Vec<Vec<u8>>, Vec<bool>, Link) {
    let (mut seqs, mut links, mut missing) = (Vec::new(), Vec::new(), Vec::new());
    let mut next = done + 1;
    for m in batch {
        while next < m.sequence {
            tracing::warn!(seq = next, "no message at this sequence: the chain records it as missing");
            prev = prev.next_missing(next);
            seqs.push(next as i64);
            links.push(prev.0.to_vec());
            missing.push(true);
            next += 1;
        }
        prev = prev.next(m.sequence, &m.subject, &m.payload);
        seqs.push(m.sequence as i64);
        links.push(prev.0.to_vec());
        missing.push(false);
        next = m.sequence + 1;
    }
    (seqs, links, missing, prev)
}

async fn sign_into(
    tx: &mut PgConnection,
    settings: &ChainSettings,
    seq: u64,
    head: Link,
) -> Result<relais_audit::Checkpoint, sqlx::Error> {
    let c = settings.signing_key.sign(&settings.stream_name, seq, head, Utc::now());
    checkpoints::insert(tx, &c).await?;
    tracing::info!(seq, head = %head, "signed a checkpoint of the audit chain");
    Ok(c)
}

async fn publish(pool: &PgPool, settings: &ChainSettings) {
    // The checkpoint is stored; publishing is retried after the next batch and at start.
    if let Err(e) = checkpoints::publish_pending(pool, &settings.js).await {
        tracing::warn!(error = %e, "checkpoint not yet on the audit stream; will retry");
    }
}

/// Runs the chain worker until `shutdown`.
pub async fn run(
    pool: &PgPool,
    stream: &Stream,
    consumer_name: &str,
    settings: &ChainSettings,
    batch_size: usize,
    shutdown: &CancellationToken,
) -> Result<(), WorkerError> {
    let mut done = checkpoint(pool, CHAIN).await?;
    let mut prev = link_at(pool, done)
        .await
        .map_err(chain_error)?
        .ok_or_else(|| WorkerError::Chain(format!("no link at the chain's position {done}")))?;
    let (mut signed_seq, mut signed_at) = match checkpoints::latest(pool).await.map_err(chain_error)? {
        Some(c) => (c.checkpoint.sequence, Instant::now()),
        None => (0, Instant::now()),
    };
    publish(pool, settings).await;
    let mut consumer =
        reader::open_projection_consumer(stream, consumer_name, &subjects::all_events(), done, batch_size).await?;
    let far = Duration::from_secs(86_400 * 365);
    loop {
        let due = (done > signed_seq).then(|| signed_at + settings.every);
        let batch = tokio::select! {
            _ = shutdown.cancelled() => return Err(WorkerError::Shutdown),
            _ = tokio::time::sleep_until(due.unwrap_or_else(|| Instant::now() + far)), if due.is_some() => {
                let mut conn = pool.acquire().await?;
                sign_into(&mut conn, settings, done, prev).await?;
                drop(conn);
                (signed_seq, signed_at) = (done, Instant::now());
                publish(pool, settings).await;
                continue;
            }
            b = consumer.next_batch(batch_size) => b?,
        };
        let batch: Vec<LogMessage> = batch.into_iter().filter(|m| m.sequence > done).collect();
        let Some(last) = batch.last().map(|m| m.sequence) else {
            consumer.ack_delivered().await?;
            continue;
        };
        // Never entered: a guard held across the awaits below would corrupt the span stack of
        // whichever thread resumes the task.
        tracing::debug!(events = batch.len(), last_seq = last, "chaining a batch");
        let (seqs, links, missing, head) = links_of(&batch, done, prev);
        let sign = last - signed_seq >= settings.every_events || signed_at.elapsed() >= settings.every;
        // Links are a function of the log: a batch of links lost in a crash is chained again
        // to the same bytes, so it commits without waiting for the WAL flush, like the views
        // (ADR-8). A signed checkpoint is published on the audit stream after the commit and
        // carries its signing time: it waits for the flush, so what was published is kept.
        if sign {
            let mut tx = pool.begin().await?;
            sqlx::query(
                "INSERT INTO audit_chain (seq, link, missing)
                 SELECT * FROM UNNEST($1::int8[], $2::bytea[], $3::bool[])",
            )
            .bind(&seqs)
            .bind(&links)
            .bind(&missing)
            .execute(&mut *tx)
            .await?;
            set_checkpoint(&mut tx, CHAIN, last).await?;
            sign_into(&mut tx, settings, last, head).await?;
            tx.commit().await?;
        } else {
            // Links and checkpoint in one statement, its own transaction: one round trip.
            sqlx::query(crate::worker::unflushed_batch_with_checkpoint!(
                "links AS (
                   INSERT INTO audit_chain (seq, link, missing)
                   SELECT * FROM UNNEST($4::int8[], $5::bytea[], $6::bool[]))"
            ))
            .bind(CHAIN)
            .bind(last as i64)
            .bind(crate::worker::CHECKPOINT_CHANNEL)
            .bind(&seqs)
            .bind(&links)
            .bind(&missing)
            .execute(pool)
            .await?;
        }
        consumer.ack_delivered().await?;
        done = last;
        prev = head;
        if sign {
            (signed_seq, signed_at) = (last, Instant::now());
            publish(pool, settings).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn msg(seq: u64) -> LogMessage {
        LogMessage {
            sequence: seq,
            subject: "relais.ev.apo.cases.c-1".into(),
            payload: Bytes::from(vec![seq as u8]),
            stored_at: Utc::now(),
            traceparent: None,
            tracestate: None,
            admission: None,
            message_id: None,
        }
    }

    #[test]
    fn a_hole_in_the_sequences_is_chained_as_missing() {
        let (seqs, links, missing, head) = links_of(&[msg(1), msg(4)], 0, GENESIS);
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        assert_eq!(missing, vec![false, true, true, false]);
        let l1 = GENESIS.next(1, "relais.ev.apo.cases.c-1", &[1]);
        let l3 = l1.next_missing(2).next_missing(3);
        assert_eq!(head, l3.next(4, "relais.ev.apo.cases.c-1", &[4]));
        assert_eq!(links[3], head.0.to_vec());
    }
}
