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
use relais_domain::envelope::Envelope;
use serde_json::{Map, Value, json};

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
