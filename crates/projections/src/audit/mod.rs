//! Audit: the hash chain over the stream and its signed checkpoints (`chain`, `checkpoints`),
//! replays of the log (`replay`), verification of the log against the chain (`verify`), and
//! the reconstruction of a case as it stood at a moment (`as_of`). The format itself (links,
//! statements, admission tags, replay lines) is `relais_audit`; this module reads and writes
//! it from NATS and PostgreSQL. `docs/AUDIT.md` says what each proof means.

pub mod as_of;
pub mod chain;
pub mod checkpoints;
pub mod replay;
pub mod verify;

use async_nats::jetstream;
use relais_audit::SigningKey;
use std::time::Duration;

/// Why an audit operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// PostgreSQL failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// Reading the log failed.
    #[error("event log: {0}")]
    Log(#[from] relais_eventlog::reader::ReadError),
    /// The key store failed.
    #[error("key store: {0}")]
    Keys(#[from] crate::keys::KeyError),
    /// The stored chain or checkpoints are not in the shape Relais writes.
    #[error("audit records: {0}")]
    Corrupt(String),
    /// A task of the replay's pipeline stopped (a panic, or the runtime shutting down).
    #[error("replay task: {0}")]
    Task(String),
}

/// What the chain worker needs.
#[derive(Clone)]
pub struct ChainSettings {
    /// The key that signs checkpoints.
    pub signing_key: SigningKey,
    /// The event stream's name (it is part of every signed statement).
    pub stream_name: String,
    /// A checkpoint after this many new sequences at most.
    pub every_events: u64,
    /// A checkpoint after this long at most, when the head moved.
    pub every: Duration,
    /// JetStream, to publish checkpoints on the audit stream.
    pub js: jetstream::Context,
}

impl std::fmt::Debug for ChainSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainSettings")
            .field("signing_key", &self.signing_key)
            .field("stream_name", &self.stream_name)
            .field("every_events", &self.every_events)
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}
