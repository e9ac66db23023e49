//! The NDJSON replay format: one JSON object a line, each with `relaiskind`.
//!
//! - `replay` (first line): `version`, `stream`, `filter`, `fromsequence`, `tosequence`,
//!   `generatedat`, `complete` (true when nothing was filtered out from sequence 1 on).
//! - `event`: the CloudEvent (with `recordedat`, and `personaldata: "erased"` for an erased
//!   client) plus `sequence`, `relaissubject` (the NATS subject), `relaispayload` (standard
//!   base64 of the exact stored bytes), `relaisprev` and `relaislink` (hex chain links, `null`
//!   when the chain has not reached the sequence yet), `relaisadmission` (the admission header
//!   as stored, or `null`) and, for a quarantined message, `relaisquarantine` (the reason).
//! - `message`: a stored message that is not a readable event (quarantined as such): the same
//!   `sequence` and `relais…` fields, without CloudEvent attributes.
//! - `checkpoint`: a signed checkpoint ([`crate::checkpoint`]), placed after the line of its
//!   sequence.
//! - `end` (last line): `events`, `messages`, `checkpoints`, `lastsequence`.
//! - `error`: the replay stopped early (`detail`); no `end` follows.

use base64::Engine;
use chrono::{DateTime, SecondsFormat, Utc};
use relais_domain::StoredEvent;
use relais_domain::envelope::{Envelope, PersonalState};
use serde::{Serialize, Serializer};
use serde_json::{Map, Value, json};
use std::fmt::Display;

use crate::chain::Link;

/// Version of the replay format.
pub const FORMAT_VERSION: u64 = 1;

/// The `relaiskind` values.
pub mod kind {
    /// The first line.
    pub const REPLAY: &str = "replay";
    /// A decoded event.
    pub const EVENT: &str = "event";
    /// A stored message that is not a readable event.
    pub const MESSAGE: &str = "message";
    /// A signed checkpoint.
    pub const CHECKPOINT: &str = "checkpoint";
    /// The last line.
    pub const END: &str = "end";
    /// The replay stopped on an error.
    pub const ERROR: &str = "error";
}

/// What every event and message line carries for the chain.
#[derive(Debug, Clone, Copy)]
pub struct ChainFields<'a> {
    /// Stream sequence.
    pub sequence: u64,
    /// NATS subject.
    pub subject: &'a str,
    /// The exact stored bytes.
    pub payload: &'a [u8],
    /// The chain link at `sequence - 1`, when the chain reached `sequence`.
    pub prev: Option<Link>,
    /// The chain link at `sequence`, when the chain reached it.
    pub link: Option<Link>,
    /// The `Relais-Admission` header as stored.
    pub admission: Option<&'a str>,
    /// The quarantine reason, when the validator quarantined the message.
    pub quarantine: Option<&'a str>,
}

fn put_chain_fields(obj: &mut Map<String, Value>, chain: &ChainFields<'_>) {
    obj.insert("sequence".into(), chain.sequence.into());
    obj.insert("relaissubject".into(), chain.subject.into());
    obj.insert("relaispayload".into(), base64::engine::general_purpose::STANDARD.encode(chain.payload).into());
    obj.insert("relaisprev".into(), chain.prev.map(|l| Value::from(l.to_hex())).unwrap_or(Value::Null));
    obj.insert("relaislink".into(), chain.link.map(|l| Value::from(l.to_hex())).unwrap_or(Value::Null));
    obj.insert("relaisadmission".into(), chain.admission.map(Value::from).unwrap_or(Value::Null));
    if let Some(q) = chain.quarantine {
        obj.insert("relaisquarantine".into(), q.into());
    }
}

/// The line of a decoded event.
pub fn event_line(envelope: &Envelope, chain: &ChainFields<'_>) -> Map<String, Value> {
    let mut obj = envelope.to_cloud_event();
    obj.insert("relaiskind".into(), kind::EVENT.into());
    put_chain_fields(&mut obj, chain);
    obj
}

/// The line of a stored message that is not a readable event.
pub fn message_line(chain: &ChainFields<'_>) -> Map<String, Value> {
    let mut obj = Map::new();
    obj.insert("relaiskind".into(), kind::MESSAGE.into());
    put_chain_fields(&mut obj, chain);
    obj
}

/// Writes the line of a decoded event, and its newline, straight into `out`: the same bytes
/// as serialising [`event_line`] (members in the same order), without building the JSON tree
/// first. Replays write millions of lines; this is their hot path.
pub fn write_event_line(out: &mut Vec<u8>, envelope: &Envelope, chain: &ChainFields<'_>) {
    let spec = envelope.data.spec();
    let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    let line = EventLine {
        actor: &envelope.actor,
        causationid: envelope.causation_id.as_deref(),
        correlationid: envelope.correlation_id.as_deref(),
        data: envelope.shown_data(),
        datacontenttype: "application/json",
        dataschema: Shown(format_args!("/v1/catalogue/{}/v{}", spec.name, spec.version)),
        id: Shown(envelope.id),
        personaldata: (envelope.personal == PersonalState::Erased).then_some("erased"),
        recordedat: time(&envelope.recorded_at),
        relais: RelaisMembers::of(kind::EVENT, chain),
        schemaversion: spec.version,
        sequence: chain.sequence,
        source: Shown(format_args!("/orgs/{}", envelope.org)),
        specversion: "1.0",
        subject: Shown(&envelope.subject),
        time: time(&envelope.occurred_at),
        r#type: spec.name,
    };
    write_line(out, &line);
}

/// Writes the line of a stored message that is not a readable event, and its newline: the same
/// bytes as serialising [`message_line`].
pub fn write_message_line(out: &mut Vec<u8>, chain: &ChainFields<'_>) {
    let line = MessageLine { relais: RelaisMembers::of(kind::MESSAGE, chain), sequence: chain.sequence };
    write_line(out, &line);
}

fn write_line(out: &mut Vec<u8>, line: &impl Serialize) {
    // Serialising into a Vec fails only on a Serialize impl that fails; these cannot.
    let _ = serde_json::to_writer(&mut *out, line);
    out.push(b'\n');
}

// Members in the order a `serde_json::Map` (sorted by name) gives them, so that both writers
// give the same bytes.
#[derive(Serialize)]
#[serde(bound = "")]
struct EventLine<'a, D1: Display, D2: Display, D3: Display, D4: Display> {
    actor: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    causationid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    correlationid: Option<&'a str>,
    data: Value,
    datacontenttype: &'static str,
    dataschema: Shown<D1>,
    id: Shown<D4>,
    #[serde(skip_serializing_if = "Option::is_none")]
    personaldata: Option<&'static str>,
    recordedat: String,
    #[serde(flatten)]
    relais: RelaisMembers<'a>,
    schemaversion: u16,
    sequence: u64,
    source: Shown<D2>,
    specversion: &'static str,
    subject: Shown<D3>,
    time: String,
    r#type: &'static str,
}

#[derive(Serialize)]
struct MessageLine<'a> {
    #[serde(flatten)]
    relais: RelaisMembers<'a>,
    sequence: u64,
}

/// The `relais…` members every event and message line carries, consecutive in name order.
#[derive(Serialize)]
struct RelaisMembers<'a> {
    relaisadmission: Option<&'a str>,
    relaiskind: &'static str,
    relaislink: Option<Hex>,
    relaispayload: Base64<'a>,
    relaisprev: Option<Hex>,
    #[serde(skip_serializing_if = "Option::is_none")]
    relaisquarantine: Option<&'a str>,
    relaissubject: &'a str,
}

impl<'a> RelaisMembers<'a> {
    fn of(kind: &'static str, chain: &ChainFields<'a>) -> Self {
        Self {
            relaisadmission: chain.admission,
            relaiskind: kind,
            relaislink: chain.link.map(Hex),
            relaispayload: Base64(chain.payload),
            relaisprev: chain.prev.map(Hex),
            relaisquarantine: chain.quarantine,
            relaissubject: chain.subject,
        }
    }
}

/// Serialises as the string its `Display` writes, without allocating it first.
struct Shown<D: Display>(D);

impl<D: Display> Serialize for Shown<D> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// A chain link as 64 lower-case hex digits.
struct Hex(Link);

impl Serialize for Hex {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; 64];
        // 32 bytes always fit 64 hex digits.
        let _ = hex::encode_to_slice(self.0.0, &mut buf);
        s.serialize_str(std::str::from_utf8(&buf).unwrap_or_default())
    }
}

/// Bytes as standard base64.
struct Base64<'a>(&'a [u8]);

impl Serialize for Base64<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&base64::display::Base64Display::new(self.0, &base64::engine::general_purpose::STANDARD))
    }
}

/// The first line.
pub fn header_line(
    stream: &str,
    filter: Value,
    from_sequence: u64,
    to_sequence: u64,
    generated_at: DateTime<Utc>,
    complete: bool,
) -> Map<String, Value> {
    as_map(json!({
        "relaiskind": kind::REPLAY,
        "version": FORMAT_VERSION,
        "stream": stream,
        "filter": filter,
        "fromsequence": from_sequence,
        "tosequence": to_sequence,
        "generatedat": generated_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        "complete": complete,
    }))
}

/// The last line.
pub fn end_line(events: u64, messages: u64, checkpoints: u64, last_sequence: u64) -> Map<String, Value> {
    as_map(json!({
        "relaiskind": kind::END,
        "events": events,
        "messages": messages,
        "checkpoints": checkpoints,
        "lastsequence": last_sequence,
    }))
}

/// The line that ends a replay stopped by an error.
pub fn error_line(detail: &str) -> Map<String, Value> {
    as_map(json!({ "relaiskind": kind::ERROR, "detail": detail }))
}

fn as_map(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Checks that an event line shows what its stored bytes hold: every CloudEvent attribute and
/// every statistical field of `data`. Personal fields are sealed in the stored bytes and
/// cannot be checked without the client's key: they are left out of the comparison. Returns
/// whether the event has sealed personal fields, or what differs.
pub fn check_event_content(line: &Map<String, Value>, payload: &[u8]) -> Result<bool, String> {
    let stored = StoredEvent::decode(payload).map_err(|e| format!("the stored bytes are not an event: {e}"))?.into_v1();
    let sealed = stored.sealed.is_some();
    let envelope = stored.open(None).map_err(|e| format!("the stored bytes are not an event: {e}"))?;
    let mut expected = envelope.to_cloud_event();
    expected.remove("personaldata");
    let mut shown: Map<String, Value> = line
        .iter()
        .filter(|(k, _)| !k.starts_with("relais") && *k != "sequence" && *k != "personaldata")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if !sealed && line.contains_key("personaldata") {
        return Err("the line says personal data was erased, but the event has none sealed".into());
    }
    if sealed && let Some(Value::Object(data)) = shown.get_mut("data") {
        for field in envelope.data.spec().personal_fields {
            data.remove(*field);
        }
    }
    if shown == expected {
        return Ok(sealed);
    }
    let mut names: Vec<&String> = shown.keys().chain(expected.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        match (shown.get(name), expected.get(name)) {
            (Some(Value::Object(a)), Some(Value::Object(b))) if name == "data" => {
                let mut fields: Vec<&String> = a.keys().chain(b.keys()).collect();
                fields.sort();
                fields.dedup();
                if let Some(f) = fields.into_iter().find(|f| a.get(*f) != b.get(*f)) {
                    return Err(format!("data.{f} differs from the stored bytes"));
                }
            }
            (a, b) if a != b => return Err(format!("{name} differs from the stored bytes")),
            _ => {}
        }
    }
    Err("the event differs from the stored bytes".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::GENESIS;

    fn envelope() -> Envelope {
        let event = json!({
            "specversion": "1.0", "id": "00000000-0000-4000-8000-000000000007", "source": "/orgs/apo",
            "type": "relais.intervention.recorded", "subject": "cases/c-1", "time": "2026-03-02T09:30:00Z",
            "data": { "client_ref": "cl-1", "mode": "informing", "life_domains": ["housing"],
                      "duration_minutes": 30, "language": "fr", "interpreter": "none" }
        });
        Envelope::from_cloud_event(event, Utc::now(), "équipe \"nord\"").expect("valid event").0
    }

    fn chain<'a>(payload: &'a [u8], linked: bool, quarantine: Option<&'a str>) -> ChainFields<'a> {
        let link = GENESIS.next(7, "relais.ev.apo.cases.c-1", payload);
        ChainFields {
            sequence: 7,
            subject: "relais.ev.apo.cases.c-1",
            payload,
            prev: linked.then_some(GENESIS),
            link: linked.then_some(link),
            admission: linked.then_some("v1 k1 abc"),
            quarantine,
        }
    }

    #[test]
    fn the_direct_writers_give_the_bytes_of_the_json_tree() {
        let payload: Vec<u8> = (0..=255).collect();
        let mut erased = envelope();
        erased.personal = PersonalState::Erased;
        let mut related = envelope();
        related.correlation_id = Some("corr \"1\"".into());
        related.causation_id = Some("cause/2".into());
        for e in [envelope(), erased, related] {
            for (linked, quarantine) in [(true, None), (false, Some("stale \\ version")), (true, Some("x"))] {
                let c = chain(&payload, linked, quarantine);
                let mut direct = Vec::new();
                write_event_line(&mut direct, &e, &c);
                let mut tree = serde_json::to_vec(&event_line(&e, &c)).expect("serialises");
                tree.push(b'\n');
                assert_eq!(String::from_utf8_lossy(&direct), String::from_utf8_lossy(&tree));

                let mut direct = Vec::new();
                write_message_line(&mut direct, &c);
                let mut tree = serde_json::to_vec(&message_line(&c)).expect("serialises");
                tree.push(b'\n');
                assert_eq!(String::from_utf8_lossy(&direct), String::from_utf8_lossy(&tree));
            }
        }
    }
}
