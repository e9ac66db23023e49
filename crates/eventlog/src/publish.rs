//! Appending events: one as a plain JetStream publish, several as one atomic batch (ADR-50).
//!
//! Every message carries its event id as `Nats-Msg-Id`, so the broker stores an id once within
//! its duplicate window; beyond the window the caller's ledger (PostgreSQL) guards. A batch is
//! all or nothing at the broker: a failed check on any message stores none of them, and the
//! whole batch costs one disk sync under `sync_interval: always`.

use crate::headers;
use async_nats::header::{HeaderMap, NATS_BATCH_COMMIT, NATS_BATCH_COMMIT_FINAL, NATS_BATCH_ID, NATS_BATCH_SEQUENCE};
use bytes::Bytes;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use uuid::Uuid;

/// Largest atomic batch the server accepts by default (`jetstream.limits.batch.max_msgs`).
pub const MAX_BATCH: usize = 1000;

/// How many batches may be open on the stream at once: the server allows 50 per stream by
/// default; staying below leaves room for NGOs publishing batches directly.
const MAX_INFLIGHT_BATCHES: usize = 32;

/// One event ready to be appended.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The subject (`relais.ev.<org>.<kind>.<id>`).
    pub subject: String,
    /// The event id, used as `Nats-Msg-Id`.
    pub event_id: Uuid,
    /// The event type, copied into a header.
    pub event_type: &'static str,
    /// The schema version, copied into a header.
    pub schema_version: u16,
    /// The stored bytes (postcard envelope).
    pub payload: Bytes,
    /// Optimistic concurrency: the stream sequence of the subject's last event (0: none yet).
    pub expected_last_subject_sequence: Option<u64>,
    /// W3C trace context headers (`traceparent`, `tracestate`) to carry to the projections.
    pub trace_headers: Vec<(&'static str, String)>,
}

/// Where an appended event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Its stream sequence.
    pub sequence: u64,
    /// True if the broker already had this event id (nothing new was stored).
    pub duplicate: bool,
}

/// Why events were not appended. In every case nothing of the request was stored, except
/// for [`AppendError::Unavailable`], where the outcome is unknown and a retry with the same
/// ids is safe.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// An expected subject sequence did not match: another event was appended first (409).
    #[error("version conflict: {0}")]
    Conflict(String),
    /// An id of the batch is already in the stream (the broker refuses duplicates inside
    /// atomic batches instead of acknowledging them); the caller resolves them and retries.
    #[error("the batch holds an event id that is already stored")]
    DuplicateInBatch,
    /// The log did not answer (timeout, no stream, connection lost): the events may or may
    /// not be stored; retry with the same ids, which stores each once.
    #[error("the event log is unavailable: {0}")]
    Unavailable(String),
    /// The broker could not take the batch now and stored none of it (too many batches open
    /// on the stream, or the batch reached it incomplete); retry with the same ids.
    #[error("the event log could not take the batch now: {0}")]
    Busy(String),
    /// The batch is larger than the broker accepts.
    #[error("a batch holds at most {MAX_BATCH} events")]
    TooLarge,
    /// The broker refused for another reason.
    #[error("the event log refused the events: {description} (code {err_code})")]
    Rejected {
        /// JetStream error code.
        err_code: u64,
        /// The server's description.
        description: String,
    },
}

#[derive(Deserialize)]
struct ApiError {
    #[serde(default)]
    err_code: u64,
    #[serde(default)]
    description: String,
}

#[derive(Deserialize)]
struct PubAckResponse {
    #[serde(default)]
    error: Option<ApiError>,
    #[serde(default)]
    seq: u64,
    #[serde(default)]
    duplicate: bool,
    #[serde(default)]
    count: Option<u64>,
}

/// JetStream error codes Relais acts on.
mod codes {
    pub const WRONG_LAST_SEQUENCE: u64 = 10071;
    pub const EXPECTED_SEQUENCE_TWICE_IN_BATCH: u64 = 10164;
    pub const DUPLICATE_MSG_ID_IN_BATCH: u64 = 10201;
    pub const BATCH_TOO_LARGE: u64 = 10199;
    /// The commit arrived for a batch the broker does not hold whole: a message was refused
    /// (too many batches open) or lost (a reconnect), or the batch outlived its timeout.
    pub const BATCH_INCOMPLETE: u64 = 10176;
    pub const TOO_MANY_BATCHES_IN_FLIGHT: u64 = 10210;
}

/// Computes the `Relais-Admission` header value of a message from its subject and payload.
pub type AdmissionTagger = Arc<dyn Fn(&str, &[u8]) -> String + Send + Sync>;

/// The append side of the event log.
#[derive(Clone)]
pub struct EventLog {
    client: async_nats::Client,
    batches: Arc<Semaphore>,
    timeout: Duration,
    admission: Option<AdmissionTagger>,
}

impl EventLog {
    /// Wraps a connected client.
    pub fn new(client: async_nats::Client) -> Self {
        Self {
            client,
            batches: Arc::new(Semaphore::new(MAX_INFLIGHT_BATCHES)),
            timeout: Duration::from_secs(10),
            admission: None,
        }
    }

    /// Tags every appended message with `Relais-Admission` (see `relais_audit::admission`), so
    /// that audits can tell what Relais admitted from what was published with bare broker
    /// credentials.
    pub fn with_admission(mut self, tagger: AdmissionTagger) -> Self {
        self.admission = Some(tagger);
        self
    }

    /// The NATS client.
    pub fn client(&self) -> &async_nats::Client {
        &self.client
    }

    fn headers_of(&self, event: &Outgoing) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(tag) = &self.admission {
            h.insert(headers::ADMISSION, tag(&event.subject, &event.payload).as_str());
        }
        h.insert(async_nats::header::NATS_MESSAGE_ID, event.event_id.to_string().as_str());
        h.insert(headers::EVENT_TYPE, event.event_type);
        h.insert(headers::SCHEMA_VERSION, event.schema_version.to_string().as_str());
        if let Some(seq) = event.expected_last_subject_sequence {
            h.insert(async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, seq.to_string().as_str());
        }
        for (name, value) in &event.trace_headers {
            h.insert(*name, value.as_str());
        }
        h
    }

    async fn request(&self, subject: &str, headers: HeaderMap, payload: Bytes) -> Result<PubAckResponse, AppendError> {
        let reply =
            tokio::time::timeout(self.timeout, self.client.request_with_headers(subject.to_owned(), headers, payload))
                .await
                .map_err(|_| AppendError::Unavailable("no acknowledgement in time".into()))?
                .map_err(|e| match e.kind() {
                    async_nats::RequestErrorKind::NoResponders => {
                        AppendError::Unavailable("no stream captures the subject".into())
                    }
                    async_nats::RequestErrorKind::TimedOut => {
                        AppendError::Unavailable("no acknowledgement in time".into())
                    }
                    async_nats::RequestErrorKind::MaxPayloadExceeded => AppendError::Rejected {
                        err_code: 0,
                        description: "message larger than the server's max_payload".into(),
                    },
                    _ => AppendError::Unavailable(e.to_string()),
                })?;
        let ack: PubAckResponse = serde_json::from_slice(&reply.payload)
            .map_err(|e| AppendError::Unavailable(format!("unreadable acknowledgement: {e}")))?;
        if let Some(err) = ack.error {
            return Err(match err.err_code {
                codes::WRONG_LAST_SEQUENCE | codes::EXPECTED_SEQUENCE_TWICE_IN_BATCH => {
                    AppendError::Conflict(err.description)
                }
                codes::DUPLICATE_MSG_ID_IN_BATCH => AppendError::DuplicateInBatch,
                codes::BATCH_TOO_LARGE => AppendError::TooLarge,
                codes::BATCH_INCOMPLETE | codes::TOO_MANY_BATCHES_IN_FLIGHT => AppendError::Busy(err.description),
                err_code => AppendError::Rejected { err_code, description: err.description },
            });
        }
        Ok(ack)
    }

    /// Appends events: one as a plain publish, more as one atomic batch. Returns, per event in
    /// order, its sequence and whether it was a duplicate (only a single publish can be
    /// acknowledged as a duplicate; a batch with a known id fails with
    /// [`AppendError::DuplicateInBatch`]).
    #[tracing::instrument(name = "eventlog.append", skip_all, fields(events = events.len()))]
    pub async fn append(&self, events: &[Outgoing]) -> Result<Vec<Appended>, AppendError> {
        match events {
            [] => Ok(Vec::new()),
            [one] => {
                let ack = self.request(&one.subject, self.headers_of(one), one.payload.clone()).await?;
                Ok(vec![Appended { sequence: ack.seq, duplicate: ack.duplicate }])
            }
            many => self.append_batch(many).await,
        }
    }

    async fn append_batch(&self, events: &[Outgoing]) -> Result<Vec<Appended>, AppendError> {
        if events.len() > MAX_BATCH {
            return Err(AppendError::TooLarge);
        }
        // The version is checked at connect, but the client reconnects on its own, possibly to
        // an older server (a downgrade, another node), which would store each message of the
        // batch on its own: nothing is sent there.
        let version = self.client.server_info().version;
        if !crate::server::meets_minimum(&version) {
            return Err(AppendError::Busy(format!(
                "the connected nats-server is version {version}, older than {}.{}.{}, where a batch would not be all \
                 or nothing: nothing was sent",
                crate::server::MIN_SERVER_VERSION.0,
                crate::server::MIN_SERVER_VERSION.1,
                crate::server::MIN_SERVER_VERSION.2
            )));
        }
        // Waiting for a permit and handing the batch's messages to the client are bounded
        // too: while the client reconnects its queue is not drained, and a request must not
        // wait for the broker's return. A batch left without its commit stores nothing (the
        // broker drops it after its own timeout), so giving up here is safe.
        let deadline = tokio::time::Instant::now() + self.timeout;
        let not_handed = || AppendError::Busy("the batch could not be handed to the broker in time".into());
        let _permit = tokio::time::timeout_at(deadline, self.batches.acquire())
            .await
            .map_err(|_| not_handed())?
            .map_err(|_| AppendError::Unavailable("event log is shutting down".into()))?;
        let batch_id = Uuid::new_v4().simple().to_string();
        let last = events.len() - 1;
        for (i, event) in events[..last].iter().enumerate() {
            let mut h = self.headers_of(event);
            h.insert(NATS_BATCH_ID, batch_id.as_str());
            h.insert(NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
            tokio::time::timeout_at(
                deadline,
                self.client.publish_with_headers(event.subject.clone(), h, event.payload.clone()),
            )
            .await
            .map_err(|_| not_handed())?
            .map_err(|e| AppendError::Busy(e.to_string()))?;
        }
        let mut h = self.headers_of(&events[last]);
        h.insert(NATS_BATCH_ID, batch_id.as_str());
        h.insert(NATS_BATCH_SEQUENCE, (last + 1).to_string().as_str());
        h.insert(NATS_BATCH_COMMIT, NATS_BATCH_COMMIT_FINAL);
        let ack = self.request(&events[last].subject, h, events[last].payload.clone()).await?;
        let n = events.len() as u64;
        if ack.count != Some(n) {
            return Err(AppendError::Unavailable(format!(
                "batch acknowledged with count {:?}, expected {n}",
                ack.count
            )));
        }
        // An atomic batch is committed under the stream lock: its messages are consecutive.
        let first = ack.seq + 1 - n;
        Ok((0..n).map(|i| Appended { sequence: first + i, duplicate: false }).collect())
    }
}
