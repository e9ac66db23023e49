//! The audit format of Relais, pure (no I/O): what `relais verify` checks, online and offline,
//! and what an auditor would re-implement to check a replay file without trusting Relais.
//!
//! - [`chain`]: the hash chain over the stream in sequence order. Each link commits to the
//!   previous link, the sequence number, the subject and the exact stored bytes of the message
//!   (ADR-1: the postcard payload, sealed personal fields included), so proofs survive erasure.
//! - [`checkpoint`]: ed25519-signed statements of the chain head at a sequence.
//! - [`admission`]: HMAC tags that the gateway (and registered direct publishers) put on what
//!   they publish, so that a message published with bare broker credentials can be named.
//! - [`line`]: the NDJSON replay format (one JSON object a line).
//! - [`offline`]: the verifier of a replay file, given only the public keys.
//! - [`finding`]: what a verification found, by sequence.
//!
//! The format is documented for re-implementers in `docs/AUDIT.md`.

#![warn(missing_docs)]

pub mod admission;
pub mod chain;
pub mod checkpoint;
pub mod finding;
pub mod line;
pub mod offline;

pub use admission::{Admission, AdmissionKey};
pub use chain::{GENESIS, Link};
pub use checkpoint::{Checkpoint, CheckpointError, SigningKey, VerifyingKey};
pub use finding::{Finding, FindingKind};
