//! W3C trace context in NATS headers, so that one trace shows HTTP request → publish →
//! projection.

use opentelemetry::propagation::{Extractor, Injector};
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct Carrier(HashMap<String, String>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The trace context headers of the current span (`traceparent`, `tracestate`), empty when no
/// OpenTelemetry propagator is installed or the span is not sampled.
pub fn current_headers() -> Vec<(&'static str, String)> {
    let cx = tracing::Span::current().context();
    let mut carrier = Carrier(HashMap::new());
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    let mut out = Vec::new();
    if let Some(tp) = carrier.0.remove(crate::headers::TRACEPARENT) {
        out.push((crate::headers::TRACEPARENT, tp));
    }
    if let Some(ts) = carrier.0.remove(crate::headers::TRACESTATE).filter(|ts| !ts.is_empty()) {
        out.push((crate::headers::TRACESTATE, ts));
    }
    out
}

/// Makes `span` a child of the trace a message's `traceparent` names.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str) {
    let mut map = HashMap::new();
    map.insert(crate::headers::TRACEPARENT.to_owned(), traceparent.to_owned());
    let carrier = Carrier(map);
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    // Fails only when the span is disabled; then there is nothing to link.
    let _ = span.set_parent(cx);
}
