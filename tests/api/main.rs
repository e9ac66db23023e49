//! End-to-end tests: the real `relais` application against a real nats-server (the pinned
//! build, one per test, on a free port) and a real PostgreSQL (one database per test).

mod crash;
mod helpers;
mod ingest;
mod monitor;
mod privacy;
mod projector;
mod rebuild;
mod statistics;
mod views;
