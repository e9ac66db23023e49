//! One trace from an NGO system's request through the gateway and the log to the projections:
//! the spans are collected in memory, as an OpenTelemetry collector would receive them.

use crate::helpers::*;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SpanData, SpanProcessor};
use relais_projections::Role;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;

/// Keeps every finished span.
#[derive(Debug, Clone, Default)]
struct Collected(Arc<Mutex<Vec<SpanData>>>);

impl SpanProcessor for Collected {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}
    fn on_end(&self, span: SpanData) {
        self.0.lock().expect("spans").push(span);
    }
    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }
    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}

impl Collected {
    /// The ended spans that `matches`, once there is one: a span ends when its work is done,
    /// which for a request's span can be just after the client has its answer.
    async fn eventually(&self, what: &str, matches: impl Fn(&SpanData) -> bool) -> Vec<SpanData> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let found: Vec<SpanData> = self.0.lock().expect("spans").iter().filter(|s| matches(s)).cloned().collect();
            if !found.is_empty() {
                return found;
            }
            let names: Vec<String> = self.0.lock().expect("spans").iter().map(|s| s.name.to_string()).collect();
            assert!(tokio::time::Instant::now() < deadline, "no span of {what} among {names:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

const CALLERS_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLERS_SPAN: &str = "00f067aa0ba902b7";
const CALLERS_STATE: &str = "ngo=t61rcWkgMzE";
const DIRECT_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";

/// Matches the projection span of the message at `seq` (the layer records a u64 as text).
fn applying(seq: u64) -> impl Fn(&SpanData) -> bool {
    move |s| {
        s.name == "projection.apply"
            && s.attributes.iter().any(|kv| kv.key.as_str() == "seq" && kv.value.to_string() == seq.to_string())
    }
}

// The default (current-thread) runtime runs the gateway and the projector on this thread, so
// the subscriber set for this thread sees all their spans.
#[tokio::test]
async fn one_trace_runs_from_the_callers_request_through_the_log_to_the_projection() {
    let spans = Collected::default();
    let provider = relais::telemetry::tracer_provider("relais-test").with_span_processor(spans.clone()).build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("relais-test"))
        .with_filter(tracing::level_filters::LevelFilter::INFO);
    let _subscriber = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
    let app = spawn_app().await;
    let token = app.token("apo", Role::Org).await;

    // The caller's span is not sampled: Relais traces its own work all the same.
    let r = app
        .http
        .post(format!("{}/v1/events", app.address))
        .bearer_auth(&token)
        .header("content-type", "application/cloudevents+json")
        .header("traceparent", format!("00-{CALLERS_TRACE}-{CALLERS_SPAN}-00"))
        .header("tracestate", CALLERS_STATE)
        .body(guidance_requested("apo", "case-1", "cl-1").to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 201);
    let trace = TraceId::from_hex(CALLERS_TRACE).expect("trace id");

    // The gateway's request span continues the caller's trace.
    let request = spans
        .eventually("the request", |s| s.name == "http.request" && s.span_context.trace_id() == trace)
        .await
        .remove(0);
    assert_eq!(request.parent_span_id, SpanId::from_hex(CALLERS_SPAN).expect("span id"));
    assert!(request.parent_span_is_remote);

    // The stored message names the span that published it, in the caller's trace; the
    // caller's free-text trace state is not stored.
    let stream = app.js.get_stream("RELAIS").await.expect("stream");
    let stored = stream.get_raw_message(1).await.expect("message");
    let traceparent = stored.headers.get("traceparent").map(|v| v.as_str().to_owned()).expect("traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!((parts.len(), parts[1]), (4, CALLERS_TRACE), "{traceparent}");
    assert_eq!(stored.headers.get("tracestate").map(|v| v.as_str().to_owned()), None);
    let publisher = SpanId::from_hex(parts[2]).expect("span id");
    let publishing = spans.eventually("the publishing", |s| s.span_context.span_id() == publisher).await.remove(0);
    assert_eq!(publishing.span_context.trace_id(), trace);

    // The views applied it in a span whose parent is the publishing span.
    app.wait_for_views().await;
    for projection in spans.eventually("the projection", applying(1)).await {
        assert_eq!(projection.span_context.trace_id(), trace);
        assert_eq!(projection.parent_span_id, publisher);
        assert!(projection.parent_span_is_remote);
        assert_eq!(projection.span_context.trace_state().header(), "");
    }

    // A system publishing straight to the log sets its own trace context, state included: the
    // projection continues it.
    let (envelope, stored) = sealed_stored(&app, guidance_requested("apo", "case-3", "cl-3")).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("traceparent", format!("00-{DIRECT_TRACE}-{CALLERS_SPAN}-01").as_str());
    headers.insert("tracestate", CALLERS_STATE);
    let subject = relais_eventlog::subjects::event_subject(&envelope.org, &envelope.subject);
    let bytes = relais_domain::StoredEvent::V1(stored).encode();
    let ack = app.js.publish_with_headers(subject, headers, bytes.into()).await.expect("sent").await.expect("ack");
    app.wait_for_views().await;
    let direct = TraceId::from_hex(DIRECT_TRACE).expect("trace id");
    for projection in spans.eventually("the direct message's projection", applying(ack.sequence)).await {
        assert_eq!(projection.span_context.trace_id(), direct);
        assert_eq!(projection.parent_span_id, SpanId::from_hex(CALLERS_SPAN).expect("span id"));
        assert_eq!(projection.span_context.trace_state().header(), CALLERS_STATE);
    }

    // A malformed trace context is not an error: the request is traced on its own.
    let r = app
        .http
        .post(format!("{}/v1/events", app.address))
        .bearer_auth(&token)
        .header("content-type", "application/cloudevents+json")
        .header("traceparent", "00-not-a-trace-01")
        .body(guidance_requested("apo", "case-2", "cl-2").to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 201);
    let own = spans
        .eventually("the second request", |s| {
            s.name == "http.request" && ![trace, direct].contains(&s.span_context.trace_id())
        })
        .await;
    assert_eq!(own.len(), 1, "{own:?}");
    assert_eq!(own[0].parent_span_id, SpanId::INVALID);
}
