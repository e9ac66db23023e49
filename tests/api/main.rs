//! End-to-end tests: the real `relais` application against a real nats-server (the pinned
//! build, one per test, on a free port) and a real PostgreSQL (one database per test).

mod access_matrix;
mod audit;
mod bad_input;
mod broker;
mod crash;
mod demo;
mod deploy;
mod helpers;
mod ingest;
mod monitor;
mod openapi;
mod privacy;
mod projector;
mod rebuild;
mod statistics;
mod tokens;
mod trace;
mod views;
