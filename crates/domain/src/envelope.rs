//! The one envelope around every event: its stored form (postcard, versioned, personal fields
//! sealed) and its CloudEvents 1.0 JSON form. Both mappings are lossless for everything Relais
//! stores.
//!
//! The stored bytes are forever: [`StoredEvent`] is an enum whose postcard variant index is the
//! format version, so a later format is a new variant and every old message still decodes.
//! The audit chain hashes these exact bytes, sealed boxes included, so proofs survive erasure.

use crate::events::{self, DataError, DecodeError, EventData, PersonalFields};
use crate::ids::{AggregateRef, OrgId};
use crate::seal::Sealed;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

/// Longest `actor`, `correlationid` or `causationid`, in bytes.
pub const MAX_META_LEN: usize = 128;

/// Why an envelope was refused or could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// A CloudEvent (or its data) is invalid; `pointer` is a JSON pointer into the event.
    #[error("{pointer}: {detail}")]
    Invalid {
        /// JSON pointer to the offending attribute, for example `/data/mode`.
        pointer: String,
        /// What is wrong, for a person.
        detail: String,
    },
    /// Stored bytes are not an envelope of any known format.
    #[error("not a stored Relais event: {0}")]
    Malformed(String),
    /// The envelope decoded but its data did not.
    #[error(transparent)]
    Data(#[from] DecodeError),
}

impl EnvelopeError {
    fn invalid(pointer: &str, detail: impl Into<String>) -> Self {
        Self::Invalid { pointer: pointer.to_owned(), detail: detail.into() }
    }

    fn in_data(e: DataError) -> Self {
        Self::Invalid { pointer: format!("/data{}", e.pointer), detail: e.detail }
    }
}

/// Whether the personal fields of a decoded event are present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PersonalState {
    /// The personal fields are in `data` (opened, or the event had none).
    Present,
    /// The client was erased (or the key is not available to this reader): personal fields
    /// are empty and must not be shown as if they were.
    Erased,
    /// The client's key is there but could not open the fields (damaged, unknown, or the
    /// sealed box does not open): personal fields are empty, and this is not an erasure.
    Unreadable,
    /// The reader may not see this organisation's personal fields (an auditor of another
    /// organisation): they stay sealed, and this is not an erasure.
    Withheld,
}

impl PersonalState {
    /// How the CloudEvent extension `personaldata` names a state without personal fields.
    pub fn shown_as(self) -> Option<&'static str> {
        match self {
            PersonalState::Present => None,
            PersonalState::Erased => Some("erased"),
            PersonalState::Unreadable => Some("unreadable"),
            PersonalState::Withheld => Some("withheld"),
        }
    }
}

/// An event with its metadata, decoded and typed.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The event id, chosen by the publisher; the idempotency key.
    pub id: Uuid,
    /// The organisation that recorded it (CloudEvents `source` `/orgs/<id>`).
    pub org: OrgId,
    /// The aggregate it belongs to (CloudEvents `subject`).
    pub subject: AggregateRef,
    /// When it happened (CloudEvents `time`).
    pub occurred_at: DateTime<Utc>,
    /// When Relais recorded it.
    pub recorded_at: DateTime<Utc>,
    /// Who recorded it: the publisher's user or system (extension `actor`).
    pub actor: String,
    /// Correlation id (extension `correlationid`).
    pub correlation_id: Option<String>,
    /// Causation id (extension `causationid`).
    pub causation_id: Option<String>,
    /// The typed data, at the current schema version.
    pub data: EventData,
    /// Whether the personal fields of `data` are present.
    pub personal: PersonalState,
}

/// The stored form of an event: the postcard encoding of this enum is the JetStream payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredEvent {
    /// Format 1.
    V1(StoredEventV1),
}

/// Format 1 of the stored envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEventV1 {
    /// The event id.
    pub id: Uuid,
    /// The organisation id.
    pub org: String,
    /// The event type name.
    pub event_type: String,
    /// The schema version `data` was written at.
    pub schema_version: u16,
    /// `<kind>/<id>`.
    pub subject: String,
    /// Microseconds since the Unix epoch.
    pub occurred_at_us: i64,
    /// Microseconds since the Unix epoch.
    pub recorded_at_us: i64,
    /// Who recorded it.
    pub actor: String,
    /// Correlation id.
    pub correlation_id: Option<String>,
    /// Causation id.
    pub causation_id: Option<String>,
    /// Postcard encoding of the data with its personal fields emptied.
    pub data: Vec<u8>,
    /// The personal fields, sealed with the client's data key; `None` when there are none.
    pub sealed: Option<Sealed>,
}

impl StoredEvent {
    /// The bytes to store.
    pub fn encode(&self) -> Vec<u8> {
        // Owned plain data into a Vec: postcard cannot fail here.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// Reads stored bytes. Untrusted input: an error, never a panic; allocation is bounded by
    /// the input length.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let (event, rest) =
            postcard::take_from_bytes::<StoredEvent>(bytes).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
        if !rest.is_empty() {
            return Err(EnvelopeError::Malformed(format!("{} trailing bytes", rest.len())));
        }
        Ok(event)
    }

    /// The format-1 body (the only format so far).
    pub fn v1(&self) -> &StoredEventV1 {
        match self {
            StoredEvent::V1(v) => v,
        }
    }

    /// Consumes into the format-1 body.
    pub fn into_v1(self) -> StoredEventV1 {
        match self {
            StoredEvent::V1(v) => v,
        }
    }
}

/// Earliest moment an event may carry: 0001-01-01T00:00:00Z. RFC 3339 can write year 0, but
/// PostgreSQL writes it in JSON as `0001-... BC`, which no reader parses: a view reading such
/// a moment back would fail on it batch after batch.
pub const EARLIEST_TIME_US: i64 = -62_135_596_800_000_000;
/// Latest moment an event may carry: 9999-12-31T23:59:59.999999Z, the last an RFC 3339
/// timestamp can write.
pub const LATEST_TIME_US: i64 = 253_402_300_799_999_999;

fn micros_to_time(us: i64, what: &str) -> Result<DateTime<Utc>, EnvelopeError> {
    DateTime::from_timestamp_micros(us).ok_or_else(|| EnvelopeError::Malformed(format!("{what} out of range")))
}

impl StoredEventV1 {
    /// Decodes the typed envelope. `personal` is the opened sealed box, if the reader may and
    /// can open it; without it, an event that had personal fields reads as erased.
    pub fn open(&self, personal: Option<PersonalFields>) -> Result<Envelope, EnvelopeError> {
        let org = OrgId::parse(&self.org).map_err(|e| EnvelopeError::Malformed(format!("org: {e}")))?;
        let subject =
            AggregateRef::parse(&self.subject).map_err(|e| EnvelopeError::Malformed(format!("subject: {e}")))?;
        let mut data = EventData::decode(&self.event_type, self.schema_version, &self.data)?;
        if data.spec().aggregate != subject.kind() {
            return Err(EnvelopeError::Malformed(format!(
                "{} belongs to {} but subject is {}",
                self.event_type,
                data.spec().aggregate.as_str(),
                self.subject
            )));
        }
        let personal_state = match (&self.sealed, personal) {
            (None, _) => PersonalState::Present,
            (Some(_), Some(fields)) => {
                data.put_personal(fields);
                PersonalState::Present
            }
            (Some(_), None) => PersonalState::Erased,
        };
        Ok(Envelope {
            id: self.id,
            org,
            subject,
            occurred_at: micros_to_time(self.occurred_at_us, "occurred_at")?,
            recorded_at: micros_to_time(self.recorded_at_us, "recorded_at")?,
            actor: self.actor.clone(),
            correlation_id: self.correlation_id.clone(),
            causation_id: self.causation_id.clone(),
            data,
            personal: personal_state,
        })
    }
}

impl Envelope {
    /// Whether the envelope's metadata and times are what the gateway admits: `actor`,
    /// `correlationid` and `causationid` of 1 to [`MAX_META_LEN`] printable characters, times
    /// within the years 0001 to 9999 in UTC. The validator holds events published straight to
    /// the log to the same rules (a NUL cannot be stored in the views). Reading stored bytes
    /// ([`StoredEventV1::open`]) does not check them: what was admitted once stays readable.
    pub fn check_admissible(&self) -> Result<(), EnvelopeError> {
        for (name, value) in [
            ("actor", Some(&self.actor)),
            ("correlationid", self.correlation_id.as_ref()),
            ("causationid", self.causation_id.as_ref()),
        ] {
            // A NUL, or any control character, cannot be stored in the views' text.
            if value.is_some_and(|v| v.is_empty() || v.len() > MAX_META_LEN || v.chars().any(char::is_control)) {
                return Err(EnvelopeError::invalid(
                    &format!("/{name}"),
                    format!("1 to {MAX_META_LEN} printable characters"),
                ));
            }
        }
        for (name, at) in [("time", self.occurred_at), ("recordedat", self.recorded_at)] {
            if !(EARLIEST_TIME_US..=LATEST_TIME_US).contains(&at.timestamp_micros()) {
                return Err(EnvelopeError::invalid(
                    &format!("/{name}"),
                    "must be within the years 0001 to 9999 in UTC",
                ));
            }
        }
        Ok(())
    }

    /// Whether a new event may take its id: UUIDs of version 8 are those Relais derives from
    /// what an event names (an erasure's from its key, so that an erasure call finds its
    /// event), and only an erasure takes one. The gateway checks it of ids the log does not
    /// hold yet (a retry of an id stored before is still answered as a duplicate), the
    /// validator of every message it judges; reading what was admitted once does not.
    pub fn check_id(&self) -> Result<(), EnvelopeError> {
        if self.id.get_version_num() == 8 && !matches!(self.data, crate::events::EventData::ClientErased(_)) {
            return Err(EnvelopeError::invalid(
                "/id",
                "UUIDs of version 8 are reserved for the events Relais derives (erasures)",
            ));
        }
        Ok(())
    }

    /// The stored body with its personal fields taken out (and `sealed` left empty), and those
    /// personal fields, for the caller to seal with the client's key.
    pub fn split_for_storage(&self) -> (StoredEventV1, PersonalFields) {
        let mut data = self.data.clone();
        let personal = data.take_personal();
        let stored = StoredEventV1 {
            id: self.id,
            org: self.org.to_string(),
            event_type: self.data.event_type().to_owned(),
            schema_version: self.data.spec().version,
            subject: self.subject.to_string(),
            occurred_at_us: self.occurred_at.timestamp_micros(),
            recorded_at_us: self.recorded_at.timestamp_micros(),
            actor: self.actor.clone(),
            correlation_id: self.correlation_id.clone(),
            causation_id: self.causation_id.clone(),
            data: data.encode(),
            sealed: None,
        };
        (stored, personal)
    }

    /// Reads a CloudEvent (JSON) as published to Relais. `recorded_at` is now; `default_actor`
    /// is used when the event has no `actor` extension. Returns the envelope and the optional
    /// `expectedversion` (optimistic concurrency on the subject). Errors carry a JSON pointer.
    pub fn from_cloud_event(
        event: Value,
        recorded_at: DateTime<Utc>,
        default_actor: &str,
    ) -> Result<(Envelope, Option<u64>), EnvelopeError> {
        Self::parse_cloud_event(event, Some(recorded_at), default_actor)
    }

    /// Reads a CloudEvent as Relais wrote it (in a replay or an export): `recordedat` and
    /// `actor` are taken from the event, `sequence` and `personaldata` are ignored.
    pub fn from_recorded_cloud_event(event: Value) -> Result<Envelope, EnvelopeError> {
        let mut event = event;
        let mut erased = false;
        if let Some(obj) = event.as_object_mut() {
            obj.remove("sequence");
            erased = obj.remove("personaldata").is_some_and(|v| v == "erased");
        }
        if erased {
            return Err(EnvelopeError::invalid("/personaldata", "an erased event cannot be read back as data"));
        }
        Self::parse_cloud_event(event, None, "").map(|(e, _)| e)
    }

    fn parse_cloud_event(
        event: Value,
        recorded_at: Option<DateTime<Utc>>,
        default_actor: &str,
    ) -> Result<(Envelope, Option<u64>), EnvelopeError> {
        let Value::Object(mut obj) = event else {
            return Err(EnvelopeError::invalid("", "a CloudEvent is a JSON object"));
        };
        let mut take_str = |name: &str, required: bool| -> Result<Option<String>, EnvelopeError> {
            match obj.remove(name) {
                Some(Value::String(s)) => Ok(Some(s)),
                None | Some(Value::Null) if !required => Ok(None),
                None | Some(Value::Null) => Err(EnvelopeError::invalid(&format!("/{name}"), "required")),
                Some(_) => Err(EnvelopeError::invalid(&format!("/{name}"), "must be a string")),
            }
        };
        let recorded_at = match recorded_at {
            Some(t) => t,
            None => {
                let t = take_str("recordedat", true)?.unwrap_or_default();
                DateTime::parse_from_rfc3339(&t)
                    .map_err(|_| EnvelopeError::invalid("/recordedat", "must be an RFC 3339 timestamp"))?
                    .with_timezone(&Utc)
            }
        };
        let specversion = take_str("specversion", true)?.unwrap_or_default();
        if specversion != "1.0" {
            return Err(EnvelopeError::invalid("/specversion", "must be \"1.0\""));
        }
        let id_text = take_str("id", true)?.unwrap_or_default();
        let id = Uuid::parse_str(&id_text).map_err(|_| EnvelopeError::invalid("/id", "must be a UUID"))?;
        let source = take_str("source", true)?.unwrap_or_default();
        let org = source
            .strip_prefix("/orgs/")
            .and_then(|o| OrgId::parse(o).ok())
            .ok_or_else(|| EnvelopeError::invalid("/source", "must be /orgs/<organisation id>"))?;
        let event_type = take_str("type", true)?.unwrap_or_default();
        let spec = events::spec(&event_type)
            .ok_or_else(|| EnvelopeError::invalid("/type", format!("unknown event type {event_type:?}")))?;
        let subject_text = take_str("subject", true)?.unwrap_or_default();
        let subject =
            AggregateRef::parse(&subject_text).map_err(|e| EnvelopeError::invalid("/subject", e.to_string()))?;
        if subject.kind() != spec.aggregate {
            return Err(EnvelopeError::invalid(
                "/subject",
                format!("{event_type} belongs to {}/<id>", spec.aggregate.as_str()),
            ));
        }
        let occurred_at = match take_str("time", false)? {
            Some(t) => DateTime::parse_from_rfc3339(&t)
                .map_err(|_| EnvelopeError::invalid("/time", "must be an RFC 3339 timestamp"))?
                .with_timezone(&Utc),
            None => recorded_at,
        };
        if let Some(ct) = take_str("datacontenttype", false)?
            && ct != "application/json"
        {
            return Err(EnvelopeError::invalid("/datacontenttype", "must be application/json"));
        }
        let actor = take_str("actor", false)?.unwrap_or_else(|| default_actor.to_owned());
        let correlation_id = take_str("correlationid", false)?;
        let causation_id = take_str("causationid", false)?;
        let schema_version = match obj.remove("schemaversion") {
            None | Some(Value::Null) => spec.version,
            Some(v) => v
                .as_u64()
                .and_then(|v| u16::try_from(v).ok())
                .ok_or_else(|| EnvelopeError::invalid("/schemaversion", "must be a small positive integer"))?,
        };
        let expected_version = match obj.remove("expectedversion") {
            None | Some(Value::Null) => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| EnvelopeError::invalid("/expectedversion", "must be a non-negative integer"))?,
            ),
        };
        let data_value = obj.remove("data").ok_or_else(|| EnvelopeError::invalid("/data", "required"))?;
        // The dataschema attribute, if given, must name the same type and version.
        if let Some(ds) = obj.remove("dataschema") {
            let expected = dataschema(spec.name, schema_version);
            if ds.as_str() != Some(expected.as_str()) {
                return Err(EnvelopeError::invalid("/dataschema", format!("must be {expected} or absent")));
            }
        }
        if let Some(unknown) = obj.keys().next() {
            return Err(EnvelopeError::invalid(
                &format!("/{unknown}"),
                "unknown attribute: Relais stores every attribute it accepts, so it accepts only those it knows",
            ));
        }
        let data = EventData::from_json(&event_type, schema_version, data_value).map_err(EnvelopeError::in_data)?;
        data.validate().map_err(EnvelopeError::in_data)?;
        let envelope = Envelope {
            id,
            org,
            subject,
            occurred_at,
            recorded_at,
            actor,
            correlation_id,
            causation_id,
            data,
            personal: PersonalState::Present,
        };
        // The same rules the validator holds direct events to (an offset can also carry a
        // written year 9999 past the end of the year in UTC).
        envelope.check_admissible()?;
        Ok((envelope, expected_version))
    }

    /// The `data` member as shown: the typed data as JSON, without personal fields once the
    /// client was erased (shared by the CloudEvent and the replay line writers).
    pub fn shown_data(&self) -> Value {
        let mut data = self.data.to_json();
        if self.personal != PersonalState::Present
            && let Some(d) = data.as_object_mut()
        {
            for field in self.data.spec().personal_fields {
                d.remove(*field);
            }
        }
        data
    }

    /// The CloudEvent (JSON object) of this envelope, with extensions `actor`, `recordedat`,
    /// `schemaversion`, and `correlationid`/`causationid` when set. An erased event's personal
    /// properties are left out of `data` and the extension `personaldata` says `erased` (or
    /// `unreadable`, when the key could not open them).
    pub fn to_cloud_event(&self) -> Map<String, Value> {
        let spec = self.data.spec();
        let data = self.shown_data();
        let mut obj = Map::new();
        obj.insert("specversion".into(), "1.0".into());
        obj.insert("id".into(), self.id.to_string().into());
        obj.insert("source".into(), format!("/orgs/{}", self.org).into());
        obj.insert("type".into(), spec.name.into());
        obj.insert("subject".into(), self.subject.to_string().into());
        obj.insert("time".into(), self.occurred_at.to_rfc3339_opts(SecondsFormat::AutoSi, true).into());
        obj.insert("datacontenttype".into(), "application/json".into());
        obj.insert("dataschema".into(), dataschema(spec.name, spec.version).into());
        obj.insert("schemaversion".into(), spec.version.into());
        obj.insert("actor".into(), self.actor.clone().into());
        if let Some(c) = &self.correlation_id {
            obj.insert("correlationid".into(), c.clone().into());
        }
        if let Some(c) = &self.causation_id {
            obj.insert("causationid".into(), c.clone().into());
        }
        obj.insert("recordedat".into(), self.recorded_at.to_rfc3339_opts(SecondsFormat::AutoSi, true).into());
        if let Some(shown) = self.personal.shown_as() {
            obj.insert("personaldata".into(), shown.into());
        }
        obj.insert("data".into(), data);
        obj
    }
}

/// The `dataschema` URI of a type at a version: where the catalogue serves its schema.
pub fn dataschema(event_type: &str, version: u16) -> String {
    format!("/v1/catalogue/{event_type}/v{version}")
}

/// Attributes that Relais adds on output and refuses on input (they are its to set).
pub const OUTPUT_ONLY_ATTRIBUTES: &[&str] = &["recordedat", "personaldata", "sequence"];

/// A CloudEvent as sent over HTTP (JSON object), for callers that want a type to hold one.
pub type CloudEvent = Map<String, Value>;
