//! What `relais status` shows: each projection's checkpoint and lag, and the quarantine.

use async_nats::jetstream::stream::Stream;
use serde::Serialize;
use sqlx::PgPool;

/// One projection's position.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectionStatus {
    /// Name.
    pub name: String,
    /// Last applied stream sequence.
    pub checkpoint: u64,
    /// Stream last sequence − checkpoint.
    pub lag: u64,
}

/// The projections' state.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    /// The stream's last sequence.
    pub last_sequence: u64,
    /// Each projection (validator first).
    pub projections: Vec<ProjectionStatus>,
    /// Quarantined messages.
    pub quarantined: i64,
}

/// Why the status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Database.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
    /// Event log.
    #[error(transparent)]
    Log(#[from] relais_eventlog::reader::ReadError),
}

/// Reads the status.
pub async fn projection_status(pool: &PgPool, stream: &Stream) -> Result<Status, StatusError> {
    let last_sequence = relais_eventlog::reader::last_sequence(stream).await?;
    let mut names: Vec<String> = vec![crate::worker::VALIDATOR.to_owned()];
    names.extend(crate::worker::default_views().iter().map(|v| v.name().to_owned()));
    names.push(crate::audit::chain::CHAIN.to_owned());
    let mut projections = Vec::new();
    for name in names {
        let checkpoint = crate::worker::checkpoint(pool, &name).await?;
        projections.push(ProjectionStatus { lag: last_sequence.saturating_sub(checkpoint), name, checkpoint });
    }
    let quarantined: i64 = sqlx::query_scalar("SELECT count(*) FROM quarantine").fetch_one(pool).await?;
    Ok(Status { last_sequence, projections, quarantined })
}
