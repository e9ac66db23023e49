//! Every event type Relais accepts: its name, version, titles, JSON Schema, example and the
//! class of each of its fields.
//!
//! The catalogue is declared once, in `catalogue!` below; the enum [`EventData`], the
//! dispatch by type name, postcard and JSON coding, upcasting of old versions and the split of
//! personal fields are all generated from that one list, so they cannot disagree.
//!
//! Field classes: a field named in `personal: [...]` is personal data and is stored encrypted
//! with the client's data key; every other field is statistical and kept in the clear. A field
//! that is not allowed (a name, a national number, ...) has no place in any type: the data
//! types refuse unknown fields.
//!
//! Stored data is postcard, which is positional: a data type must never skip a field when
//! serializing (no `skip_serializing_if`), or the bytes no longer decode. Optional fields carry
//! `#[serde(default)]` so JSON may leave them out, and [`EventData::to_json`] leaves out the
//! top-level fields that are `null`, so the JSON form stays as short as before.

mod activity;
mod consent;
mod guidance;
mod network;
mod privacy;
mod referral;
mod situation;
mod structural;

pub use activity::*;
pub use consent::*;
pub use guidance::*;
pub use network::*;
pub use privacy::*;
pub use referral::*;
pub use situation::*;
pub use structural::*;

pub use crate::ids::AggregateKind;
use crate::labels::Labels;
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// Longest free text any event may carry, in characters. Free text stays optional and short:
/// it is personal data and it is what escapes every statistical safeguard.
pub const MAX_FREE_TEXT_CHARS: usize = 500;

/// Why an event's `data` was refused, with a JSON pointer (relative to `data`) to the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{pointer}: {detail}")]
pub struct DataError {
    /// JSON pointer into `data`, for example `/life_domains/0`; empty for `data` itself.
    pub pointer: String,
    /// What is wrong, for a person.
    pub detail: String,
}

impl DataError {
    /// An error at the given field of `data`.
    pub fn at(field: &str, detail: impl Into<String>) -> Self {
        Self { pointer: format!("/{field}"), detail: detail.into() }
    }
}

/// Why stored bytes or a type name could not be turned into event data.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The type name is not in the catalogue.
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    /// The type is known but not at this schema version.
    #[error("event type {event_type:?} has no schema version {version}")]
    UnknownVersion {
        /// The type name.
        event_type: String,
        /// The version asked for.
        version: u16,
    },
    /// The bytes are not a valid postcard encoding of that type and version.
    #[error("malformed data of {event_type:?} v{version}: {detail}")]
    Malformed {
        /// The type name.
        event_type: String,
        /// The version.
        version: u16,
        /// What postcard said.
        detail: String,
    },
}

/// The category of an event type, for grouping in the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Guidance of one client: request, intake, plan, interventions, closure, after-care.
    Guidance,
    /// The client's legal and detention situation.
    Situation,
    /// The client's relational network: family contact, relatives supported.
    Network,
    /// Closed-loop referrals between the services or to outside services.
    Referral,
    /// Consent given or withdrawn, per scope.
    Consent,
    /// Group activities organised with the community coordinators.
    GroupActivity,
    /// Structural work: bottlenecks signalled.
    Structural,
    /// Privacy operations recorded in the log (erasure).
    Privacy,
}

/// Builds the JSON Schema of one version of a type's data.
type SchemaFn = fn() -> serde_json::Value;

/// What the catalogue knows of one event type.
#[derive(Debug, Clone, Copy)]
pub struct EventTypeSpec {
    /// The CloudEvents `type`, for example `relais.intervention.recorded`.
    pub name: &'static str,
    /// The current schema version; older versions are upcast on reading.
    pub version: u16,
    /// Older schema versions that are still read.
    pub legacy_versions: &'static [u16],
    /// The aggregate kind its subject must name.
    pub aggregate: AggregateKind,
    /// The category, for grouping.
    pub category: Category,
    /// Titles in NL/FR/EN.
    pub titles: Labels,
    /// The fields that are personal data (stored encrypted); all others are statistical.
    pub personal_fields: &'static [&'static str],
    schema: SchemaFn,
    legacy_schemas: &'static [(u16, SchemaFn)],
    example: fn() -> serde_json::Value,
}

impl EventTypeSpec {
    /// The JSON Schema (2020-12) of the type's `data`, each property carrying
    /// `x-relais-class: statistical | personal`.
    pub fn schema(&self) -> serde_json::Value {
        self.classified((self.schema)())
    }

    /// The JSON Schema of the type's `data` at `version`, current or legacy (what a
    /// `dataschema` naming that version describes); `None` for a version never read.
    pub fn schema_at(&self, version: u16) -> Option<serde_json::Value> {
        if version == self.version {
            return Some(self.schema());
        }
        self.legacy_schemas.iter().find(|(v, _)| *v == version).map(|(_, schema)| self.classified(schema()))
    }

    /// `schema` with each property marked with its class.
    fn classified(&self, mut schema: serde_json::Value) -> serde_json::Value {
        if let Some(props) = schema.get_mut("properties").and_then(|p| p.as_object_mut()) {
            for (name, prop) in props.iter_mut() {
                let class = if self.personal_fields.contains(&name.as_str()) { "personal" } else { "statistical" };
                if let Some(obj) = prop.as_object_mut() {
                    obj.insert("x-relais-class".into(), class.into());
                } else {
                    // `true` schemas (any value) become objects so they can carry the class.
                    *prop = serde_json::json!({ "x-relais-class": class });
                }
            }
        }
        schema
    }

    /// A complete, valid example of the type's `data`.
    pub fn example_data(&self) -> serde_json::Value {
        (self.example)()
    }

    /// The class of one top-level field of `data`.
    pub fn field_class(&self, field: &str) -> FieldClass {
        if self.personal_fields.contains(&field) { FieldClass::Personal } else { FieldClass::Statistical }
    }
}

/// How a field of an event is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldClass {
    /// Kept in the clear: non-identifying facts that statistics are made of.
    Statistical,
    /// Stored encrypted with the client's data key; gone when the key is destroyed.
    Personal,
}

/// What every event's data type provides beside its serde and schema derives.
pub trait EventPayload: Serialize + DeserializeOwned + schemars::JsonSchema + Clone {
    /// A complete, valid example, shown in the catalogue and used in tests.
    fn example() -> Self;

    /// Checks the rules a single event must meet on its own (lengths, dates in order, ...).
    fn validate(&self) -> Result<(), DataError> {
        Ok(())
    }

    /// The organisation's pseudonymous reference of the client this event is about, if any.
    fn client_ref(&self) -> Option<&str> {
        None
    }

    /// The other organisations this event names (a referral's destination, a consent's
    /// organisation, an activity's partners), each with a JSON pointer into `data`, so that an
    /// event naming an organisation outside the registry can be refused.
    fn organisations(&self) -> Vec<(String, &crate::ids::OrgId)> {
        Vec::new()
    }
}

/// A personal field that can be taken out of an event (to be sealed) and put back (opened).
pub trait PersonalSlot {
    /// Takes the value out, leaving the field empty; `None` if it was empty.
    fn take_out(&mut self) -> Option<String>;
    /// Puts a value back.
    fn put_in(&mut self, value: String);
}

impl PersonalSlot for String {
    fn take_out(&mut self) -> Option<String> {
        if self.is_empty() { None } else { Some(std::mem::take(self)) }
    }
    fn put_in(&mut self, value: String) {
        *self = value;
    }
}

impl PersonalSlot for Option<String> {
    fn take_out(&mut self) -> Option<String> {
        self.take()
    }
    fn put_in(&mut self, value: String) {
        *self = Some(value);
    }
}

impl PersonalSlot for Option<LinkageKey> {
    fn take_out(&mut self) -> Option<String> {
        self.take().map(String::from)
    }
    /// A value that is not a linkage key (which a sealed box written by Relais never holds)
    /// leaves the field empty.
    fn put_in(&mut self, value: String) {
        *self = LinkageKey::parse(&value).ok();
    }
}

/// The personal fields of one event, by name, taken out to be sealed or opened to be put back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonalFields(pub Vec<(String, String)>);

impl PersonalFields {
    /// True when the event carried no personal value at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of one field, if present.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == field).map(|(_, v)| v.as_str())
    }
}

/// Checks an optional free text: short, no control characters but newlines.
pub fn check_free_text(field: &str, text: Option<&str>) -> Result<(), DataError> {
    match text {
        Some(t) if t.chars().count() > MAX_FREE_TEXT_CHARS => {
            Err(DataError::at(field, format!("free text is limited to {MAX_FREE_TEXT_CHARS} characters")))
        }
        Some(t) if t.chars().any(|c| c.is_control() && c != '\n') => {
            Err(DataError::at(field, "control characters are not allowed"))
        }
        _ => Ok(()),
    }
}

/// Checks a pseudonymous client reference: 1 to 64 characters of `A-Z a-z 0-9 - _ .`, so that
/// a name or a national number with spaces or slashes cannot pass by accident.
pub fn check_client_ref(field: &str, client_ref: &str) -> Result<(), DataError> {
    let ok = !client_ref.is_empty()
        && client_ref.len() <= 64
        && client_ref.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(DataError::at(field, "a client reference is 1 to 64 characters of A-Z, a-z, 0-9, '-', '_', '.'"))
    }
}

/// The earliest day an event may name: 1 January of year 1, as for an event's `time`.
pub const EARLIEST_DATE: chrono::NaiveDate = match chrono::NaiveDate::from_ymd_opt(1, 1, 1) {
    Some(d) => d,
    None => chrono::NaiveDate::MIN,
};
/// The latest day an event may name: 31 December 9999, as for an event's `time`.
pub const LATEST_DATE: chrono::NaiveDate = match chrono::NaiveDate::from_ymd_opt(9999, 12, 31) {
    Some(d) => d,
    None => chrono::NaiveDate::MAX,
};

/// Checks a day an event names: within years 1 to 9999. The JSON reader takes any signed
/// year, but PostgreSQL stores no day before 4714 BC and writes days before year 1 in JSON as
/// `... BC`, which no reader parses, so a day outside these years would stop every view that
/// stores it.
pub fn check_date(field: &str, day: Option<&chrono::NaiveDate>) -> Result<(), DataError> {
    match day {
        Some(d) if !(EARLIEST_DATE..=LATEST_DATE).contains(d) => {
            Err(DataError::at(field, "a day from 0001-01-01 to 9999-12-31"))
        }
        _ => Ok(()),
    }
}

/// The most entries a list of codes holds: more than any code list has (or than the
/// organisations of the registry), and few enough that finding an entry listed twice costs
/// nothing (a body of 4 MiB could otherwise hold a list of hundreds of thousands).
pub const MAX_LIST_ENTRIES: usize = 64;

/// Checks a list of codes: at least `min` entries, at most [`MAX_LIST_ENTRIES`], and no entry
/// twice.
pub fn check_distinct<T: PartialEq>(field: &str, items: &[T], min: usize) -> Result<(), DataError> {
    if items.len() < min {
        return Err(DataError::at(field, format!("at least {min} entries")));
    }
    if items.len() > MAX_LIST_ENTRIES {
        return Err(DataError::at(field, format!("at most {MAX_LIST_ENTRIES} entries")));
    }
    for (i, item) in items.iter().enumerate() {
        if items[..i].contains(item) {
            return Err(DataError::at(&format!("{field}/{i}"), "listed twice"));
        }
    }
    Ok(())
}

/// Leaves out the top-level properties of a JSON object that are `null`: optional fields are
/// written to postcard always (it is positional) but to JSON only when set.
fn without_nulls(mut value: serde_json::Value) -> serde_json::Value {
    if let Some(obj) = value.as_object_mut() {
        obj.retain(|_, v| !v.is_null());
    }
    value
}

fn json_error_to_data_error(err: serde_path_to_error::Error<serde_json::Error>) -> DataError {
    let mut pointer = String::new();
    for segment in err.path().iter() {
        use serde_path_to_error::Segment;
        match segment {
            Segment::Seq { index } => pointer.push_str(&format!("/{index}")),
            Segment::Map { key } => {
                pointer.push('/');
                pointer.push_str(&key.replace('~', "~0").replace('/', "~1"));
            }
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    let detail = err.inner().to_string();
    // serde names a missing or unknown field in its message, at the parent's path: point at
    // the field itself, which is what an integrator needs.
    for prefix in ["missing field `", "unknown field `"] {
        if let Some(rest) = detail.strip_prefix(prefix)
            && let Some(end) = rest.find('`')
        {
            let field = format!("/{}", &rest[..end]);
            if !pointer.ends_with(&field) {
                pointer.push_str(&field);
            }
        }
    }
    let detail = match detail.find(" at line ") {
        Some(i) => detail[..i].to_owned(),
        None => detail,
    };
    DataError { pointer, detail }
}

fn from_json<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, DataError> {
    serde_path_to_error::deserialize(value).map_err(json_error_to_data_error)
}

fn decode_postcard<T: DeserializeOwned>(name: &str, version: u16, bytes: &[u8]) -> Result<T, DecodeError> {
    postcard::from_bytes(bytes).map_err(|e| DecodeError::Malformed {
        event_type: name.to_owned(),
        version,
        detail: e.to_string(),
    })
}

fn encode_postcard<T: Serialize>(value: &T) -> Vec<u8> {
    // Encoding owned, plain data types into a Vec cannot fail: postcard fails only on
    // unsized sequences or a full buffer, and our types have neither.
    postcard::to_allocvec(value).unwrap_or_default()
}

fn schema_of<T: schemars::JsonSchema>() -> serde_json::Value {
    schemars::schema_for!(T).to_value()
}

fn example_of<T: EventPayload>() -> serde_json::Value {
    without_nulls(serde_json::to_value(T::example()).unwrap_or_default())
}

/// Declares the catalogue: one line per event type. See the module documentation.
macro_rules! catalogue {
    ( $(
        $variant:ident ( $ty:ty ) {
            name: $name:literal,
            version: $ver:literal,
            aggregate: $kind:ident,
            category: $cat:ident,
            titles: ($nl:literal, $fr:literal, $en:literal),
            personal: [ $( $pf:ident ),* $(,)? ],
            legacy: [ $( $lv:literal => $lty:ty ),* $(,)? ] $(,)?
        }
    ),* $(,)? ) => {
        /// The data of one event, typed: one variant per event type of the catalogue, always at
        /// the current schema version (older stored versions are upcast when read).
        #[derive(Debug, Clone, PartialEq)]
        #[allow(clippy::large_enum_variant)]
        pub enum EventData {
            $(
                #[doc = $en]
                $variant($ty),
            )*
        }

        /// Every event type of the catalogue, in catalogue order.
        pub static CATALOGUE: &[EventTypeSpec] = &[
            $(
                EventTypeSpec {
                    name: $name,
                    version: $ver,
                    legacy_versions: &[ $( $lv ),* ],
                    aggregate: AggregateKind::$kind,
                    category: Category::$cat,
                    titles: Labels::new($nl, $fr, $en),
                    personal_fields: &[ $( stringify!($pf) ),* ],
                    schema: schema_of::<$ty>,
                    legacy_schemas: &[ $( ($lv, schema_of::<$lty>) ),* ],
                    example: example_of::<$ty>,
                },
            )*
        ];

        impl EventData {
            /// The catalogue entry of this event's type.
            pub fn spec(&self) -> &'static EventTypeSpec {
                let name = match self { $( Self::$variant(_) => $name, )* };
                spec(name).unwrap_or(&CATALOGUE[0])
            }

            /// The CloudEvents `type` of this event.
            pub fn event_type(&self) -> &'static str {
                match self { $( Self::$variant(_) => $name, )* }
            }

            /// Reads `data` of the given type and schema version from JSON, upcasting an old
            /// version; the error points at the offending field.
            pub fn from_json(
                event_type: &str,
                version: u16,
                data: serde_json::Value,
            ) -> Result<Self, DataError> {
                match event_type {
                    $(
                        $name => {
                            if version == $ver {
                                return from_json::<$ty>(data).map(Self::$variant);
                            }
                            $(
                                if version == $lv {
                                    return from_json::<$lty>(data).map(|old| Self::$variant(old.into()));
                                }
                            )*
                            Err(DataError {
                                pointer: String::new(),
                                detail: format!("event type {event_type} has no schema version {version}"),
                            })
                        }
                    )*
                    _ => Err(DataError { pointer: String::new(), detail: format!("unknown event type {event_type}") }),
                }
            }

            /// The data as JSON, at the current schema version; optional fields that are not set
            /// are left out.
            pub fn to_json(&self) -> serde_json::Value {
                let value = match self { $( Self::$variant(d) => serde_json::to_value(d).unwrap_or_default(), )* };
                without_nulls(value)
            }

            /// Serialises the data at the current schema version as it is declared: fields in
            /// declaration order, optional fields that are not set as `null`. For writers that
            /// order and leave out fields themselves; [`EventData::to_json`] gives the JSON.
            pub fn serialize_declared<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                match self { $( Self::$variant(d) => serde::Serialize::serialize(d, serializer), )* }
            }

            /// The postcard encoding of the data, at the current schema version.
            pub fn encode(&self) -> Vec<u8> {
                match self { $( Self::$variant(d) => encode_postcard(d), )* }
            }

            /// Decodes stored data of the given type and version (upcasting old versions).
            /// Untrusted bytes give an error, never a panic.
            pub fn decode(event_type: &str, version: u16, bytes: &[u8]) -> Result<Self, DecodeError> {
                match event_type {
                    $(
                        $name => {
                            if version == $ver {
                                return decode_postcard::<$ty>($name, version, bytes).map(Self::$variant);
                            }
                            $(
                                if version == $lv {
                                    return decode_postcard::<$lty>($name, version, bytes)
                                        .map(|old| Self::$variant(old.into()));
                                }
                            )*
                            Err(DecodeError::UnknownVersion { event_type: event_type.to_owned(), version })
                        }
                    )*
                    _ => Err(DecodeError::UnknownType(event_type.to_owned())),
                }
            }

            /// Checks the rules this event must meet on its own.
            pub fn validate(&self) -> Result<(), DataError> {
                match self { $( Self::$variant(d) => EventPayload::validate(d)?, )* }
                // Personal fields are sealed with the client's data key: an event that carries
                // any must name its client.
                if self.client_ref().is_none() && !self.clone().take_personal().is_empty() {
                    return Err(DataError::at(
                        "client_ref",
                        "required when the event carries personal fields: they are sealed with the client's key",
                    ));
                }
                Ok(())
            }

            /// The pseudonymous client reference (`data.client_ref`), if the event is about a
            /// client.
            pub fn client_ref(&self) -> Option<&str> {
                match self { $( Self::$variant(d) => EventPayload::client_ref(d), )* }
            }

            /// The organisations this event names in its data, with JSON pointers into `data`
            /// (see [`EventPayload::organisations`]).
            pub fn organisations(&self) -> Vec<(String, &crate::ids::OrgId)> {
                match self { $( Self::$variant(d) => EventPayload::organisations(d), )* }
            }

            /// Takes the personal fields out, leaving them empty: what remains is statistical.
            pub fn take_personal(&mut self) -> PersonalFields {
                let mut out = Vec::new();
                match self {
                    $(
                        #[allow(unused_variables)]
                        Self::$variant(d) => {
                            $(
                                if let Some(v) = PersonalSlot::take_out(&mut d.$pf) {
                                    out.push((stringify!($pf).to_owned(), v));
                                }
                            )*
                        }
                    )*
                }
                PersonalFields(out)
            }

            /// Puts personal fields back (after opening them); unknown names are ignored, so
            /// that a field later removed from a type does not make old events unreadable.
            pub fn put_personal(&mut self, fields: PersonalFields) {
                match self {
                    $(
                        #[allow(unused_variables)]
                        Self::$variant(d) => {
                            for (name, value) in fields.0 {
                                match name.as_str() {
                                    $( stringify!($pf) => PersonalSlot::put_in(&mut d.$pf, value), )*
                                    _ => {}
                                }
                            }
                        }
                    )*
                }
            }
        }

        $(
            impl From<$ty> for EventData {
                fn from(d: $ty) -> Self {
                    Self::$variant(d)
                }
            }
        )*
    };
}

/// The catalogue entry of a type name.
pub fn spec(name: &str) -> Option<&'static EventTypeSpec> {
    CATALOGUE.iter().find(|s| s.name == name)
}

catalogue! {
    GuidanceRequested(GuidanceRequested) {
        name: "relais.guidance.requested",
        version: 1,
        aggregate: Cases,
        category: Guidance,
        titles: ("Begeleiding gevraagd", "Accompagnement demandé", "Guidance requested"),
        personal: [client_ref, note],
        legacy: [],
    },
    GuidanceAccepted(GuidanceAccepted) {
        name: "relais.guidance.accepted",
        version: 1,
        aggregate: Cases,
        category: Guidance,
        titles: ("Begeleiding aanvaard", "Accompagnement accepté", "Guidance accepted"),
        personal: [client_ref, note],
        legacy: [],
    },
    GuidanceDeclined(GuidanceDeclined) {
        name: "relais.guidance.declined",
        version: 1,
        aggregate: Cases,
        category: Guidance,
        titles: ("Begeleiding niet opgenomen", "Accompagnement non entamé", "Guidance declined"),
        personal: [client_ref, note],
        legacy: [],
    },
    IntakeHeld(IntakeHeld) {
        name: "relais.intake.held",
        version: 1,
        aggregate: Cases,
        category: Guidance,
        titles: ("Intakegesprek gevoerd", "Entretien d'accueil réalisé", "Intake held"),
        personal: [client_ref, note],
        legacy: [],
    },
    PlanSet(PlanSet) {
        name: "relais.plan.set",
        version: 1,
        aggregate: Cases,
        category: Guidance,
        titles: ("Begeleidingsplan opgesteld", "Plan d'accompagnement établi", "Guidance plan set"),
        personal: [client_ref, goals],
        legacy: [],
    },
    PlanAdjusted(PlanAdjusted) {
        name: "relais.plan.adjusted",
        version: 1,
        aggregate: Cases,
        category: Guidance,
        titles: ("Begeleidingsplan bijgestuurd", "Plan d'accompagnement ajusté", "Guidance plan adjusted"),
        personal: [client_ref, goals],
        legacy: [],
    },
    InterventionRecorded(InterventionRecorded) {
        name: "relais.intervention.recorded",
        version: 2,
        aggregate: Cases,
        category: Guidance,
        titles: ("Interventie geregistreerd", "Intervention enregistrée", "Intervention recorded"),
        personal: [client_ref, note],
        legacy: [1 => InterventionRecordedV1],
    },
    UrgentRequestHandled(UrgentRequestHandled) {
        name: "relais.urgent_request.handled",
        version: 1,
        aggregate: Cases,
        category: Guidance,
        titles: ("Dringende hulpvraag behandeld", "Demande d'aide urgente traitée", "Urgent help request handled"),
        personal: [client_ref, note],
        legacy: [],
    },
    GuidanceClosed(GuidanceClosed) {
        name: "relais.guidance.closed",
        version: 1,
        aggregate: Cases,
        category: Guidance,
        titles: ("Begeleiding afgesloten", "Accompagnement clôturé", "Guidance closed"),
        personal: [client_ref, note],
        legacy: [],
    },
    AftercareStarted(AftercareStarted) {
        name: "relais.aftercare.started",
        version: 1,
        aggregate: Cases,
        category: Guidance,
        titles: ("Nazorg gestart", "Suivi post-pénitentiaire entamé", "After-care started"),
        personal: [client_ref, note],
        legacy: [],
    },
    DetentionStarted(DetentionStarted) {
        name: "relais.detention.started",
        version: 1,
        aggregate: Cases,
        category: Situation,
        titles: ("Detentie begonnen", "Détention commencée", "Detention started"),
        personal: [client_ref],
        legacy: [],
    },
    DetaineeTransferred(DetaineeTransferred) {
        name: "relais.detainee.transferred",
        version: 1,
        aggregate: Cases,
        category: Situation,
        titles: ("Gedetineerde overgeplaatst", "Détenu transféré", "Detainee transferred"),
        personal: [client_ref],
        legacy: [],
    },
    LegalStatusChanged(LegalStatusChanged) {
        name: "relais.legal_status.changed",
        version: 1,
        aggregate: Cases,
        category: Situation,
        titles: ("Juridisch statuut gewijzigd", "Statut juridique modifié", "Legal status changed"),
        personal: [client_ref],
        legacy: [],
    },
    ReleaseScheduled(ReleaseScheduled) {
        name: "relais.release.scheduled",
        version: 1,
        aggregate: Cases,
        category: Situation,
        titles: ("Vrijlating gepland", "Libération prévue", "Release scheduled"),
        personal: [client_ref],
        legacy: [],
    },
    DetaineeReleased(DetaineeReleased) {
        name: "relais.detainee.released",
        version: 1,
        aggregate: Cases,
        category: Situation,
        titles: ("Gedetineerde vrijgelaten", "Détenu libéré", "Detainee released"),
        personal: [client_ref],
        legacy: [],
    },
    LeavePrepared(LeavePrepared) {
        name: "relais.leave.prepared",
        version: 1,
        aggregate: Cases,
        category: Situation,
        titles: ("Uitgaansvergunning of verlof voorbereid", "Permission de sortie ou congé préparé", "Furlough or leave prepared"),
        personal: [client_ref, note],
        legacy: [],
    },
    OutingEscorted(OutingEscorted) {
        name: "relais.outing.escorted",
        version: 1,
        aggregate: Cases,
        category: Situation,
        titles: ("Uitgang begeleid", "Sortie accompagnée", "Outing escorted"),
        personal: [client_ref],
        legacy: [],
    },
    FamilyContactFacilitated(FamilyContactFacilitated) {
        name: "relais.family_contact.facilitated",
        version: 1,
        aggregate: Cases,
        category: Network,
        titles: ("Contact met familie gefaciliteerd", "Contact familial facilité", "Family contact facilitated"),
        personal: [client_ref, note],
        legacy: [],
    },
    RelativeSupported(RelativeSupported) {
        name: "relais.relative.supported",
        version: 1,
        aggregate: Cases,
        category: Network,
        titles: ("Naaste ondersteund", "Proche soutenu", "Relative supported"),
        personal: [client_ref, note],
        legacy: [],
    },
    ConsentGiven(ConsentGiven) {
        name: "relais.consent.given",
        version: 1,
        aggregate: Cases,
        category: Consent,
        titles: ("Toestemming gegeven", "Consentement donné", "Consent given"),
        personal: [client_ref, linkage_key],
        legacy: [],
    },
    ConsentWithdrawn(ConsentWithdrawn) {
        name: "relais.consent.withdrawn",
        version: 1,
        aggregate: Cases,
        category: Consent,
        titles: ("Toestemming ingetrokken", "Consentement retiré", "Consent withdrawn"),
        personal: [client_ref],
        legacy: [],
    },
    ReferralMade(ReferralMade) {
        name: "relais.referral.made",
        version: 1,
        aggregate: Referrals,
        category: Referral,
        titles: ("Doorverwijzing gemaakt", "Orientation effectuée", "Referral made"),
        personal: [client_ref, message],
        legacy: [],
    },
    ReferralReceived(ReferralReceived) {
        name: "relais.referral.received",
        version: 1,
        aggregate: Referrals,
        category: Referral,
        titles: ("Doorverwijzing ontvangen", "Orientation reçue", "Referral received"),
        personal: [client_ref],
        legacy: [],
    },
    ReferralAccepted(ReferralAccepted) {
        name: "relais.referral.accepted",
        version: 1,
        aggregate: Referrals,
        category: Referral,
        titles: ("Doorverwijzing aanvaard", "Orientation acceptée", "Referral accepted"),
        personal: [client_ref],
        legacy: [],
    },
    ReferralDeclined(ReferralDeclined) {
        name: "relais.referral.declined",
        version: 1,
        aggregate: Referrals,
        category: Referral,
        titles: ("Doorverwijzing geweigerd", "Orientation refusée", "Referral declined"),
        personal: [client_ref, reason_text],
        legacy: [],
    },
    ReferralFirstContactMade(ReferralFirstContactMade) {
        name: "relais.referral.first_contact_made",
        version: 1,
        aggregate: Referrals,
        category: Referral,
        titles: ("Eerste contact na doorverwijzing", "Premier contact après orientation", "First contact after referral"),
        personal: [client_ref],
        legacy: [],
    },
    ReferralCompleted(ReferralCompleted) {
        name: "relais.referral.completed",
        version: 1,
        aggregate: Referrals,
        category: Referral,
        titles: ("Doorverwijzing afgerond", "Orientation clôturée", "Referral completed"),
        personal: [client_ref, outcome_note],
        legacy: [],
    },
    ReferralCancelled(ReferralCancelled) {
        name: "relais.referral.cancelled",
        version: 1,
        aggregate: Referrals,
        category: Referral,
        titles: ("Doorverwijzing geannuleerd", "Orientation annulée", "Referral cancelled"),
        personal: [client_ref],
        legacy: [],
    },
    ReferralExpired(ReferralExpired) {
        name: "relais.referral.expired",
        version: 1,
        aggregate: Referrals,
        category: Referral,
        titles: ("Doorverwijzing verlopen", "Orientation expirée", "Referral expired"),
        personal: [client_ref],
        legacy: [],
    },
    NeedsSurveyRecorded(NeedsSurveyRecorded) {
        name: "relais.needs_survey.recorded",
        version: 1,
        aggregate: Activities,
        category: GroupActivity,
        titles: ("Behoeftepeiling geregistreerd", "Enquête de besoins enregistrée", "Needs survey recorded"),
        personal: [],
        legacy: [],
    },
    ActivityPlanned(ActivityPlanned) {
        name: "relais.activity.planned",
        version: 1,
        aggregate: Activities,
        category: GroupActivity,
        titles: ("Groepsactiviteit gepland", "Activité de groupe planifiée", "Group activity planned"),
        personal: [],
        legacy: [],
    },
    RegistrationReceived(RegistrationReceived) {
        name: "relais.registration.received",
        version: 1,
        aggregate: Activities,
        category: GroupActivity,
        titles: ("Inschrijving ontvangen", "Inscription reçue", "Registration received"),
        personal: [client_ref],
        legacy: [],
    },
    ParticipantScreened(ParticipantScreened) {
        name: "relais.participant.screened",
        version: 1,
        aggregate: Activities,
        category: GroupActivity,
        titles: ("Kandidaat gescreend", "Candidat sélectionné", "Candidate screened"),
        personal: [client_ref],
        legacy: [],
    },
    ParticipantEnrolled(ParticipantEnrolled) {
        name: "relais.participant.enrolled",
        version: 1,
        aggregate: Activities,
        category: GroupActivity,
        titles: ("Deelnemer ingeschreven", "Participant inscrit", "Participant enrolled"),
        personal: [client_ref],
        legacy: [],
    },
    SessionHeld(SessionHeld) {
        name: "relais.session.held",
        version: 1,
        aggregate: Activities,
        category: GroupActivity,
        titles: ("Sessie gehouden", "Séance tenue", "Session held"),
        personal: [],
        legacy: [],
    },
    ParticipantDroppedOut(ParticipantDroppedOut) {
        name: "relais.participant.dropped_out",
        version: 1,
        aggregate: Activities,
        category: GroupActivity,
        titles: ("Deelnemer afgehaakt", "Participant décroché", "Participant dropped out"),
        personal: [client_ref],
        legacy: [],
    },
    DropoutFeedbackHeld(DropoutFeedbackHeld) {
        name: "relais.dropout_feedback.held",
        version: 1,
        aggregate: Activities,
        category: GroupActivity,
        titles: ("Feedbackgesprek met afhaker gevoerd", "Entretien de retour avec un décrocheur", "Dropout feedback conversation held"),
        personal: [client_ref, note],
        legacy: [],
    },
    ActivityEvaluated(ActivityEvaluated) {
        name: "relais.activity.evaluated",
        version: 1,
        aggregate: Activities,
        category: GroupActivity,
        titles: ("Groepsactiviteit geëvalueerd", "Activité de groupe évaluée", "Group activity evaluated"),
        personal: [],
        legacy: [],
    },
    BottleneckSignalled(BottleneckSignalled) {
        name: "relais.bottleneck.signalled",
        version: 1,
        aggregate: Signals,
        category: Structural,
        titles: ("Knelpunt gesignaleerd", "Difficulté structurelle signalée", "Bottleneck signalled"),
        personal: [],
        legacy: [],
    },
    ClientErased(ClientErased) {
        name: "relais.client.erased",
        version: 1,
        aggregate: Clients,
        category: Privacy,
        titles: ("Cliënt gewist", "Client effacé", "Client erased"),
        personal: [],
        legacy: [],
    },
}
