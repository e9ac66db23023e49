//! The client index: which events are about which client, by the id of the client's data key.
//! The subject access export reads a client's events through it, and the retention sweep
//! finds clients whose cases are all closed. It holds ids, sequences, types and times only,
//! so an erasure leaves nothing in it to blank.

use crate::worker::{Applied, View};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The client index view.
pub struct ClientEvents;

/// The view's name (its checkpoint and durable consumer).
pub const NAME: &str = "client_events";

/// One event of a client, as indexed.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClientEvent {
    /// The client's data key id.
    pub key_id: Uuid,
    /// Stream sequence.
    pub seq: i64,
    /// The organisation that recorded it.
    pub org_id: String,
    /// `<kind>/<id>`.
    pub subject: String,
    /// The event type.
    pub event_type: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

impl View for ClientEvents {
    fn name(&self) -> &'static str {
        NAME
    }

    fn apply<'a>(&'a self, tx: &'a mut PgConnection, events: &'a [Applied]) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(apply(tx, events))
    }

    fn tables(&self) -> &'static [&'static str] {
        &["client_events"]
    }

    fn reader_indexes(&self) -> &'static [&'static str] {
        // Subject access and retention read by this; the view only appends.
        &["client_events_by_org"]
    }
}

async fn apply(tx: &mut PgConnection, events: &[Applied]) -> Result<(), sqlx::Error> {
    let (mut keys, mut seqs, mut orgs, mut subjects, mut types, mut times) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for e in events {
        let Some(key_id) = e.key_id else { continue };
        keys.push(key_id);
        seqs.push(e.seq as i64);
        orgs.push(e.envelope.org.to_string());
        subjects.push(e.envelope.subject.to_string());
        types.push(e.envelope.data.event_type().to_owned());
        times.push(e.envelope.occurred_at);
    }
    if keys.is_empty() {
        return Ok(());
    }
    // No `ON CONFLICT`: a claimed checkpoint brings each sequence once (see statistics).
    sqlx::query(
        "INSERT INTO client_events (key_id, seq, org_id, subject, event_type, occurred_at)
         SELECT * FROM UNNEST($1::uuid[], $2::int8[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])",
    )
    .bind(&keys)
    .bind(&seqs)
    .bind(&orgs)
    .bind(&subjects)
    .bind(&types)
    .bind(&times)
    .execute(tx)
    .await?;
    Ok(())
}

/// The events of one client recorded by `org`, in stream order.
pub async fn of_client(pool: &PgPool, org: &str, key_id: Uuid) -> Result<Vec<ClientEvent>, sqlx::Error> {
    sqlx::query_as(
        "SELECT key_id, seq, org_id, subject, event_type, occurred_at FROM client_events
         WHERE key_id = $1 AND org_id = $2 ORDER BY seq",
    )
    .bind(key_id)
    .bind(org)
    .fetch_all(pool)
    .await
}
