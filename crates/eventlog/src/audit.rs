//! The audit stream `RELAIS_AUDIT`: signed checkpoints of the audit chain, kept apart from the
//! event stream (and in PostgreSQL as well), so that whoever rewrites one store cannot silently
//! rewrite the checkpoints too.

use crate::server::{ConnectError, FoundStream};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use std::time::Duration;

/// Default name of the audit stream.
pub const DEFAULT_STREAM: &str = "RELAIS_AUDIT";

/// Subject of a checkpoint.
pub const CHECKPOINT_SUBJECT: &str = "relais.audit.checkpoint";

/// Every subject of the audit stream.
pub const ALL_SUBJECTS: &str = "relais.audit.>";

const AUDIT: crate::server::HistoryShape = crate::server::HistoryShape {
    subjects: ALL_SUBJECTS,
    uncaptured: "it does not capture relais.audit.>",
    atomic: false,
};

/// Creates the audit stream, or checks that an existing one keeps everything.
pub async fn ensure_audit_stream(js: &jetstream::Context, name: &str) -> Result<stream::Stream, ConnectError> {
    let config = crate::server::history_stream_config(name, ALL_SUBJECTS, Duration::from_secs(3600));
    crate::server::create_or_open(js, config, AUDIT).await?.fit()
}

/// Opens the existing audit stream without creating it, and reports what makes it unfit
/// instead of refusing it (as [`crate::server::open_stream`]).
pub async fn open_audit_stream(js: &jetstream::Context, name: &str) -> Result<FoundStream, ConnectError> {
    crate::server::open_existing(js, name, AUDIT).await
}

/// Publishes a checkpoint (its JSON) with `message_id` as `Nats-Msg-Id`, and waits for the
/// acknowledgement; returns its sequence in the audit stream.
pub async fn publish_checkpoint(
    js: &jetstream::Context,
    message_id: &str,
    body: Bytes,
) -> Result<u64, crate::reader::ReadError> {
    let ack = js
        .send_publish(
            CHECKPOINT_SUBJECT,
            jetstream::message::PublishMessage::build().payload(body).message_id(message_id),
        )
        .await
        .map_err(|e| crate::reader::ReadError::Api(e.to_string()))?
        .await
        .map_err(|e| crate::reader::ReadError::Api(e.to_string()))?;
    Ok(ack.sequence)
}
