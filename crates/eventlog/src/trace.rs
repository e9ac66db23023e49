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

/// The longest `tracestate` Relais carries: W3C trace context asks every vendor to pass on at
/// least 512 characters, and the header is stored with each event, so no more than that.
pub const TRACESTATE_MAX: usize = 512;

/// `tracestate` cut to at most [`TRACESTATE_MAX`] characters by dropping whole list members
/// from the right, as W3C trace context allows; `None` when nothing is left.
pub fn bounded_tracestate(tracestate: &str) -> Option<String> {
    let mut out = String::new();
    for member in tracestate.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        let needed = if out.is_empty() { member.len() } else { out.len() + 1 + member.len() };
        if needed > TRACESTATE_MAX {
            break;
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(member);
    }
    (!out.is_empty()).then_some(out)
}

/// Makes `span` a child of the remote span a W3C trace context names: `traceparent`, with
/// its `tracestate` if any (bounded by [`bounded_tracestate`]). A malformed `traceparent`
/// leaves the span the root of a trace of its own.
pub fn set_remote_parent(span: &tracing::Span, traceparent: &str, tracestate: Option<&str>) {
    let mut map = HashMap::new();
    map.insert(crate::headers::TRACEPARENT.to_owned(), traceparent.to_owned());
    if let Some(ts) = tracestate.and_then(bounded_tracestate) {
        map.insert(crate::headers::TRACESTATE.to_owned(), ts);
    }
    let carrier = Carrier(map);
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    // Fails only when the span is disabled; then there is nothing to link.
    let _ = span.set_parent(cx);
}

#[cfg(test)]
mod tests {
    use super::{TRACESTATE_MAX, bounded_tracestate};

    #[test]
    fn a_short_tracestate_is_kept_as_it_is() {
        assert_eq!(
            bounded_tracestate("relais=t61rcWkgMzE,other=00f067aa0ba902b7").as_deref(),
            Some("relais=t61rcWkgMzE,other=00f067aa0ba902b7")
        );
        assert_eq!(bounded_tracestate(" , "), None);
    }

    #[test]
    fn a_long_tracestate_loses_whole_members_from_the_right() {
        let member = |i: usize| format!("v{i:02}={}", "x".repeat(60));
        let long: Vec<String> = (0..20).map(member).collect();
        let kept = bounded_tracestate(&long.join(",")).expect("some members kept");
        assert!(kept.len() <= TRACESTATE_MAX, "{}", kept.len());
        let members: Vec<&str> = kept.split(',').collect();
        assert_eq!(members.len(), 7, "7 members of 64 characters and their commas fit in 512");
        assert_eq!(members, long[..7].iter().map(String::as_str).collect::<Vec<_>>());
        assert_eq!(bounded_tracestate(&"y".repeat(TRACESTATE_MAX + 1)), None);
    }
}
