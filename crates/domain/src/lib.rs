//! The vocabulary and the rules of Relais.
//!
//! This crate is pure: no I/O, no async, no NATS or SQL types. The gateway, the projection
//! workers and any NGO that wants to validate events before publishing share it.
//!
//! - [`reference`](mod@reference): reference data (intervention modes, life domains, legal statuses, ...) with
//!   NL/FR/EN labels, and the organisations registry (data, not an enum).
//! - [`events`]: every event type the services record, its JSON Schema, its personal fields.
//! - [`envelope`]: the one envelope around every event, its stored (postcard) form and its
//!   CloudEvents JSON form, both lossless.
//! - [`seal`]: encryption of an event's personal fields with the client's data key.
//! - [`aggregates`]: case, referral, consent and activity in decide/evolve shape.

#![warn(missing_docs)]

pub mod aggregates;
pub mod envelope;
pub mod events;
pub mod ids;
pub mod labels;
pub mod reference;
pub mod seal;

pub use envelope::{CloudEvent, Envelope, EnvelopeError, StoredEvent};
pub use events::{AggregateKind, DataError, EventData, EventTypeSpec};
pub use ids::{AggregateRef, OrgId};
pub use labels::Labels;
