//! The event log on NATS JetStream. Only this crate (and the binary's test helpers) speaks NATS.
//!
//! - [`connect`]: connects and refuses a server older than [`MIN_SERVER_VERSION`].
//! - [`ensure_stream`]: creates the stream or checks that an existing one is fit to keep
//!   history forever (file storage, no limits, atomic batches allowed, no deletes, purges,
//!   rollups or TTLs); [`open_stream`] reports what leaves its history unprotected instead of
//!   refusing it, for commands that must read a tampered log.
//! - [`EventLog::append`]: publishes one event as a plain publish, or several as one atomic
//!   batch (ADR-50), each with its event id as `Nats-Msg-Id`.
//! - [`subjects`]: the subject scheme `relais.ev.<org>.<kind>.<id>`.
//! - [`reader`]: durable consumers for projections and ordered reads for replays.
//! - [`broker`]: the NATS accounts that confine each organisation to its own subjects, and
//!   each organisation's durable consumer.
//! - [`audit`]: the audit stream of signed checkpoints.

pub mod audit;
pub mod broker;
pub mod headers;
pub mod reader;
pub mod subjects;
pub mod trace;

mod publish;
mod server;

pub use publish::{AdmissionTagger, AppendError, Appended, EventLog, Outgoing};
pub use server::{
    ConnectError, FoundStream, MIN_SERVER_VERSION, StreamSettings, connect, ensure_stream, meets_minimum, open_stream,
    parse_version,
};
