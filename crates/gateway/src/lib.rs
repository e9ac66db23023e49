//! The HTTP API of Relais (axum). Only this crate knows HTTP.
//!
//! Invariant: a request either changes nothing or stores exactly what it was answered for;
//! every error is `application/problem+json` (RFC 9457) with a stable `type`.

mod audit;
mod auth;
mod catalogue;
mod error;
mod ingest;
mod monitor;
mod openapi;
mod org_views;
mod paging;
mod privacy;
mod quarantine;
mod query;
mod statistics;
mod views;

pub use audit::{AuditState, replay_filter};
pub use auth::Authenticated;
pub use error::ApiError;
pub use query::ValidQuery;

use axum::Router;
use axum::routing::{get, post};
use relais_eventlog::EventLog;
use relais_projections::{Database, KeyStore, TokenStore};
use std::sync::Arc;
use tower_http::trace::TraceLayer;

/// Limits of the ingest endpoint.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Largest request body, in bytes.
    pub max_body_bytes: usize,
    /// Most events in one batch (the broker's atomic batch limit is 1000).
    pub max_batch_events: usize,
    /// The clock of ages, "today" and "the next N days" in the views.
    pub clock: Arc<dyn relais_projections::Clock>,
}

impl Default for GatewaySettings {
    fn default() -> Self {
        Self { max_body_bytes: 4 * 1024 * 1024, max_batch_events: 1000, clock: relais_projections::clock::system() }
    }
}

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub db: Database,
    /// Tokens.
    pub tokens: TokenStore,
    /// Client data keys.
    pub keys: KeyStore,
    /// The event log (append side).
    pub log: EventLog,
    /// Settings.
    pub settings: Arc<GatewaySettings>,
    /// The event stream (reads by sequence: subject access exports).
    pub stream: async_nats::jetstream::stream::Stream,
    /// What the auditors' endpoints need.
    pub audit: AuditState,
}

/// The router of the whole HTTP API.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(views::healthz))
        .route("/readyz", get(views::readyz))
        .route("/openapi.json", get(openapi::openapi))
        .route("/v1/catalogue", get(catalogue::catalogue))
        .route("/v1/catalogue/{event_type}/{version}", get(catalogue::schema))
        .route("/v1/events", post(ingest::post_events))
        .route("/v1/orgs/{org}/cases", get(views::list_cases))
        .route("/v1/orgs/{org}/cases/{case}", get(views::get_case))
        .route("/v1/orgs/{org}/quarantine", get(quarantine::list))
        .merge(org_views::routes())
        .route("/v1/orgs/{org}/clients/{client}/erasure", post(privacy::post_erasure))
        .route("/v1/orgs/{org}/clients/{client}/export", get(privacy::get_export))
        .route("/v1/orgs/{org}/clients/{client}/key", post(privacy::post_key))
        .route("/v1/audit/events", get(audit::replay_events))
        .route("/v1/audit/public-key", get(audit::public_key))
        .route("/v1/audit/access", get(audit::access_records))
        .route_layer(axum::middleware::from_fn(query::reject_control_characters))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::map_response(error::problems_only))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            let route = req
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_else(|| "unmatched".into());
            // The path template, never the raw path: raw paths hold client and case ids.
            let span = tracing::info_span!("http.request", method = %req.method(), route = %route, status = tracing::field::Empty, token_id = tracing::field::Empty);
            continue_callers_trace(&span, req.headers());
            span
        }))
        .with_state(state)
}

/// Makes the request's span a child of the caller's span when the request carries a W3C
/// `traceparent`, so that an NGO system's own trace goes on through the gateway, the log and
/// the projections. The caller's `tracestate` is not taken: it is free text, and the trace
/// context is stored with every event, in a log nothing can erase (docs/PRIVACY.md).
fn continue_callers_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    let Some(traceparent) = headers.get(relais_eventlog::headers::TRACEPARENT).and_then(|v| v.to_str().ok()) else {
        return;
    };
    relais_eventlog::trace::set_remote_parent(span, traceparent, None);
}
