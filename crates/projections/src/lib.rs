//! PostgreSQL: the schema (migrations), the projection workers and the views they build, and
//! the stores the gateway needs (tokens, client data keys, the idempotency ledger). Only this
//! crate writes SQL.
//!
//! Invariant: a projection commits its view changes and its checkpoint in one transaction, so
//! a crash anywhere and a restart give the view of a clean run.

pub mod access;
pub mod audit;
pub mod caseload;
pub mod db;
pub mod keys;
pub mod ledger;
pub mod status;
pub mod tokens;
pub mod worker;

pub use db::{Database, DbError};
pub use keys::{Kek, KeyError, KeyLookup, KeyStore};
pub use tokens::{Principal, Role, TokenStore};
pub use worker::{Projector, ProjectorSettings};
