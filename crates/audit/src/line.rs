//! The NDJSON replay format: one JSON object a line, each with `relaiskind`.
//!
//! - `replay` (first line): `version`, `stream`, `filter`, `fromsequence`, `tosequence`,
//!   `generatedat`, `complete` (true when nothing was filtered out from sequence 1 on).
//! - `event`: the CloudEvent (with `recordedat`, and `personaldata: "erased"` for an erased
//!   client, `"unreadable"` when the key could not open the fields, `"withheld"` for another
//!   organisation's fields replayed by an auditor of one service) plus `sequence`, `relaissubject` (the NATS subject), `relaispayload` (standard
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
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use relais_domain::StoredEvent;
use relais_domain::envelope::{Envelope, PersonalState};
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
    obj.insert("relaispayload".into(), STANDARD.encode(chain.payload).into());
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
/// first. Replays write millions of lines; this is their hot path, so the members whose text
/// cannot need escaping (base64, hex, numbers, times, ids) are written as they are.
pub fn write_event_line(out: &mut Vec<u8>, envelope: &Envelope, chain: &ChainFields<'_>) {
    let spec = envelope.data.spec();
    let mut w = LineWriter::new(out);
    // Members in the order a `serde_json::Map` (sorted by name) gives them, so that both
    // writers give the same bytes.
    w.string("actor", &envelope.actor);
    if let Some(c) = &envelope.causation_id {
        w.string("causationid", c);
    }
    if let Some(c) = &envelope.correlation_id {
        w.string("correlationid", c);
    }
    w.name("data");
    write_data(w.out, envelope);
    w.plain("datacontenttype", "application/json");
    w.name("dataschema");
    w.out.extend_from_slice(b"\"/v1/catalogue/");
    w.contents(spec.name);
    w.out.extend_from_slice(b"/v");
    w.out.extend_from_slice(itoa::Buffer::new().format(spec.version).as_bytes());
    w.out.push(b'"');
    w.name("id");
    w.out.push(b'"');
    w.out.extend_from_slice(envelope.id.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()).as_bytes());
    w.out.push(b'"');
    if let Some(shown) = envelope.personal.shown_as() {
        w.plain("personaldata", shown);
    }
    w.time("recordedat", &envelope.recorded_at);
    w.relais_members(kind::EVENT, chain);
    w.number("schemaversion", u64::from(spec.version));
    w.number("sequence", chain.sequence);
    w.name("source");
    w.out.extend_from_slice(b"\"/orgs/");
    w.contents(envelope.org.as_str());
    w.out.push(b'"');
    w.plain("specversion", "1.0");
    w.name("subject");
    w.out.push(b'"');
    w.contents(envelope.subject.kind().as_str());
    w.out.push(b'/');
    w.contents(envelope.subject.id());
    w.out.push(b'"');
    w.time("time", &envelope.occurred_at);
    w.string("type", spec.name);
    w.end();
}

/// Writes the line of a stored message that is not a readable event, and its newline: the same
/// bytes as serialising [`message_line`].
pub fn write_message_line(out: &mut Vec<u8>, chain: &ChainFields<'_>) {
    let mut w = LineWriter::new(out);
    w.relais_members(kind::MESSAGE, chain);
    w.number("sequence", chain.sequence);
    w.end();
}

/// Writes `data` as serialising [`Envelope::shown_data`] would (members sorted by name, unset
/// optional fields and an erased client's personal fields left out), without building the
/// JSON tree: the members are serialised one by one and sorted. A member holding an object is
/// written through the tree (nested members are sorted too); data that is not a struct falls
/// back to the tree whole.
fn write_data(out: &mut Vec<u8>, envelope: &Envelope) {
    let left_out: &[&str] =
        if envelope.personal != PersonalState::Present { envelope.data.spec().personal_fields } else { &[] };
    let mut members = DataMembers { bytes: Vec::with_capacity(256), members: Vec::new(), left_out };
    if envelope.data.serialize_declared(&mut members).is_err() {
        // Serialising a JSON value into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, &envelope.shown_data());
        return;
    }
    members.members.sort_unstable_by_key(|(name, _)| *name);
    let mut w = LineWriter::new(out);
    for (name, range) in &members.members {
        w.name(name);
        w.out.extend_from_slice(&members.bytes[range.clone()]);
    }
    if w.first {
        w.out.extend_from_slice(b"{}");
    } else {
        w.out.push(b'}');
    }
}

/// The members of a struct serialised one by one (see [`write_data`]).
struct DataMembers<'a> {
    bytes: Vec<u8>,
    members: Vec<(&'static str, std::ops::Range<usize>)>,
    left_out: &'a [&'a str],
}

/// Data that [`write_data`] leaves to the JSON tree.
#[derive(Debug, thiserror::Error)]
#[error("not a struct")]
struct NotAStruct;

impl serde::ser::Error for NotAStruct {
    fn custom<T: std::fmt::Display>(_: T) -> Self {
        NotAStruct
    }
}

impl serde::ser::SerializeStruct for &mut DataMembers<'_> {
    type Ok = ();
    type Error = NotAStruct;

    fn serialize_field<T: serde::Serialize + ?Sized>(
        &mut self,
        name: &'static str,
        value: &T,
    ) -> Result<(), NotAStruct> {
        if self.left_out.contains(&name) {
            return Ok(());
        }
        if needs_escaping(name) {
            return Err(NotAStruct);
        }
        let start = self.bytes.len();
        serde_json::to_writer(&mut self.bytes, value).map_err(|_| NotAStruct)?;
        let written = &self.bytes[start..];
        if written == b"null" {
            // `shown_data` leaves unset optional members out.
            self.bytes.truncate(start);
            return Ok(());
        }
        if written.contains(&b'{') {
            // An object inside: its members are sorted only by the tree.
            self.bytes.truncate(start);
            let tree = serde_json::to_value(value).map_err(|_| NotAStruct)?;
            serde_json::to_writer(&mut self.bytes, &tree).map_err(|_| NotAStruct)?;
        }
        self.members.push((name, start..self.bytes.len()));
        Ok(())
    }

    fn end(self) -> Result<(), NotAStruct> {
        Ok(())
    }
}

impl serde::Serializer for &mut DataMembers<'_> {
    type Ok = ();
    type Error = NotAStruct;
    type SerializeSeq = serde::ser::Impossible<(), NotAStruct>;
    type SerializeTuple = serde::ser::Impossible<(), NotAStruct>;
    type SerializeTupleStruct = serde::ser::Impossible<(), NotAStruct>;
    type SerializeTupleVariant = serde::ser::Impossible<(), NotAStruct>;
    type SerializeMap = serde::ser::Impossible<(), NotAStruct>;
    type SerializeStruct = Self;
    type SerializeStructVariant = serde::ser::Impossible<(), NotAStruct>;

    fn serialize_struct(self, _: &'static str, len: usize) -> Result<Self, NotAStruct> {
        self.members.reserve(len);
        Ok(self)
    }

    // Everything but a struct goes to the JSON tree.
    fn serialize_bool(self, _: bool) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_i8(self, _: i8) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_i16(self, _: i16) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_i32(self, _: i32) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_i64(self, _: i64) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_u8(self, _: u8) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_u16(self, _: u16) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_u32(self, _: u32) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_u64(self, _: u64) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_f32(self, _: f32) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_f64(self, _: f64) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_char(self, _: char) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_str(self, _: &str) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_none(self) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_some<T: serde::Serialize + ?Sized>(self, _: &T) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_unit(self) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_newtype_struct<T: serde::Serialize + ?Sized>(self, _: &'static str, _: &T) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_newtype_variant<T: serde::Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<(), NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotAStruct> {
        Err(NotAStruct)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotAStruct> {
        Err(NotAStruct)
    }
}

/// True when `serde_json` escapes something in `s`: quotes, backslashes and control
/// characters; everything else is written as it is.
fn needs_escaping(s: &str) -> bool {
    // Without a short cut, so that the compiler checks many bytes at once.
    s.bytes().fold(false, |found, b| found | (b < 0x20) | (b == b'"') | (b == b'\\'))
}

/// Writes one JSON object, member by member, as `serde_json` would write it.
struct LineWriter<'a> {
    out: &'a mut Vec<u8>,
    first: bool,
}

impl<'a> LineWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out, first: true }
    }

    /// A member's name and colon; names are ours and need no escaping.
    fn name(&mut self, name: &str) {
        self.out.push(if self.first { b'{' } else { b',' });
        self.first = false;
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// A string's contents, escaped as `serde_json` escapes them (quotes, backslashes and
    /// control characters; everything else as it is).
    fn contents(&mut self, s: &str) {
        if !needs_escaping(s) {
            self.out.extend_from_slice(s.as_bytes());
        } else {
            // Serialising a string into a Vec cannot fail; the quotes are dropped.
            let quoted = serde_json::to_vec(s).unwrap_or_default();
            self.out.extend_from_slice(quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or_default());
        }
    }

    fn string(&mut self, name: &str, value: &str) {
        self.name(name);
        self.out.push(b'"');
        self.contents(value);
        self.out.push(b'"');
    }

    /// A string of ours that needs no escaping.
    fn plain(&mut self, name: &str, value: &str) {
        self.name(name);
        self.out.push(b'"');
        self.out.extend_from_slice(value.as_bytes());
        self.out.push(b'"');
    }

    fn optional_string(&mut self, name: &str, value: Option<&str>) {
        match value {
            Some(v) => self.string(name, v),
            None => {
                self.name(name);
                self.out.extend_from_slice(b"null");
            }
        }
    }

    fn number(&mut self, name: &str, n: u64) {
        self.name(name);
        self.out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    }

    fn time(&mut self, name: &str, t: &DateTime<Utc>) {
        self.plain(name, &t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
    }

    fn link(&mut self, name: &str, link: Option<Link>) {
        self.name(name);
        match link {
            Some(l) => {
                let mut buf = [0u8; 64];
                // 32 bytes always fit 64 hex digits.
                let _ = hex::encode_to_slice(l.0, &mut buf);
                self.out.push(b'"');
                self.out.extend_from_slice(&buf);
                self.out.push(b'"');
            }
            None => self.out.extend_from_slice(b"null"),
        }
    }

    /// The `relais…` members every event and message line carries, consecutive in name order.
    fn relais_members(&mut self, kind: &str, chain: &ChainFields<'_>) {
        self.optional_string("relaisadmission", chain.admission);
        self.plain("relaiskind", kind);
        self.link("relaislink", chain.link);
        self.name("relaispayload");
        self.out.push(b'"');
        let at = self.out.len();
        self.out.resize(at + base64::encoded_len(chain.payload.len(), true).unwrap_or(0), 0);
        let written = STANDARD.encode_slice(chain.payload, &mut self.out[at..]).unwrap_or(0);
        self.out.truncate(at + written);
        self.out.push(b'"');
        self.link("relaisprev", chain.prev);
        if let Some(q) = chain.quarantine {
            self.string("relaisquarantine", q);
        }
        self.string("relaissubject", chain.subject);
    }

    fn end(self) {
        self.out.extend_from_slice(if self.first { b"{}\n" } else { b"}\n" });
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
    use relais_domain::events::EventData;

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
    fn the_data_of_every_event_type_is_written_as_the_json_tree_writes_it() {
        let payload = [1u8, 2, 3];
        let c = chain(&payload, true, None);
        for spec in relais_domain::events::CATALOGUE {
            let mut example = spec.example_data();
            // Every optional member unset as well as set: unset ones are left out.
            let mut sparse = example.clone();
            if let Some(members) = sparse.as_object_mut() {
                members.retain(|name, _| !name.starts_with("note"));
            }
            for data in [std::mem::take(&mut example), sparse] {
                let Ok(data) = EventData::from_json(spec.name, spec.version, data) else { continue };
                for personal in
                    [PersonalState::Present, PersonalState::Erased, PersonalState::Unreadable, PersonalState::Withheld]
                {
                    let mut e = envelope();
                    e.data = data.clone();
                    e.personal = personal;
                    let mut direct = Vec::new();
                    write_event_line(&mut direct, &e, &c);
                    let mut tree = serde_json::to_vec(&event_line(&e, &c)).expect("serialises");
                    tree.push(b'\n');
                    assert_eq!(String::from_utf8_lossy(&direct), String::from_utf8_lossy(&tree), "{}", spec.name);
                }
            }
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
        let mut controls = envelope();
        controls.actor = "tab\there, bell\u{7}, delete\u{7f}, line\nend".into();
        controls.correlation_id = Some("\u{1f}é\u{2028}".into());
        for e in [envelope(), erased, related, controls] {
            for (linked, quarantine) in
                [(true, None), (false, Some("stale \\ version")), (true, Some("x")), (true, Some("new\r\nline"))]
            {
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
