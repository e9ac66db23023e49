//! PostgreSQL: the schema (migrations), the projection workers and the views they build, and
//! the stores the gateway needs (tokens, client data keys, the idempotency ledger). Only this
//! crate writes SQL.
//!
//! Invariant: a projection commits its view changes and its checkpoint in one transaction, so
//! a crash anywhere and a restart give the view of a clean run.

pub mod access;
pub mod audit;
pub mod caseload;
pub mod client_events;
pub mod db;
pub mod erasure;
pub mod key_backup;
pub mod keys;
pub mod ledger;
pub mod quarantine;
pub mod registry;
pub mod retention;
pub mod rules;
pub mod status;
pub mod subject_access;
pub mod tokens;
pub mod worker;

pub use db::{Database, DbError};
pub use keys::{Kek, KeyError, KeyLookup, KeyStore};
pub use tokens::{Principal, Role, TokenStore};
pub use worker::{Projector, ProjectorSettings};
