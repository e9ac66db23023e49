//! The subject scheme: `relais.ev.<org>.<kind>.<id>`. The organisation is a subject token so
//! that the broker can enforce who publishes and reads what; the aggregate is too, so that
//! per-case concurrency (`Nats-Expected-Last-Subject-Sequence`) works on the broker.

use relais_domain::{AggregateKind, AggregateRef, OrgId};

/// Prefix of every event subject.
pub const PREFIX: &str = "relais.ev";

/// The subject of an event of `org` about `aggregate`.
pub fn event_subject(org: &OrgId, aggregate: &AggregateRef) -> String {
    format!("{PREFIX}.{org}.{}.{}", aggregate.kind().as_str(), aggregate.id())
}

/// All subjects of one organisation.
pub fn org_filter(org: &OrgId) -> String {
    format!("{PREFIX}.{org}.>")
}

/// All event subjects.
pub fn all_events() -> String {
    format!("{PREFIX}.>")
}

/// Splits an event subject into organisation and aggregate; `None` if it is not one.
pub fn parse_event_subject(subject: &str) -> Option<(OrgId, AggregateRef)> {
    let rest = subject.strip_prefix(PREFIX)?.strip_prefix('.')?;
    let mut parts = rest.splitn(3, '.');
    let org = OrgId::parse(parts.next()?).ok()?;
    let kind = AggregateKind::parse(parts.next()?).ok()?;
    let aggregate = AggregateRef::new(kind, parts.next()?).ok()?;
    Some((org, aggregate))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_round_trip() {
        let org = OrgId::parse("caw-brussel").expect("valid");
        let agg = AggregateRef::parse("cases/abc-1").expect("valid");
        let s = event_subject(&org, &agg);
        assert_eq!(s, "relais.ev.caw-brussel.cases.abc-1");
        assert_eq!(parse_event_subject(&s), Some((org, agg)));
        assert_eq!(parse_event_subject("relais.ev.apo.cases.a.b"), None);
        assert_eq!(parse_event_subject("other.apo.cases.a"), None);
    }
}
