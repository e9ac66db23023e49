//! PostgreSQL: the schema (migrations), the projection workers and the views they build, and
//! the stores the gateway needs (tokens, client data keys, the idempotency ledger). Only this
//! crate writes SQL.
//!
//! Invariant: a projection commits its view changes and its checkpoint in one transaction, so
//! a crash anywhere and a restart give the view of a clean run.

pub mod access;
pub mod activities;
pub mod audit;
pub mod caseload;
pub mod client_events;
pub mod clock;
pub mod db;
pub mod erasure;
pub mod key_backup;
pub mod keys;
pub mod ledger;
pub mod monitor;
pub mod quarantine;
pub mod rebuild;
pub mod referrals;
pub mod registry;
pub mod retention;
pub mod rules;
pub mod statistics;
pub mod status;
pub mod subject_access;
mod support;
pub mod timeline;
pub mod tokens;
pub mod worker;
pub mod worklist;

pub use clock::{Clock, ManualClock, SystemClock};
pub use db::{Database, DbError};
pub use keys::{ClientKeys, Kek, KeyError, KeyLookup, KeyStore};
pub use tokens::{Principal, Role, TokenStore};
pub use worker::{Projector, ProjectorSettings};
