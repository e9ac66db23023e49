//! Message headers Relais sets. Type and version are duplicated from the payload so that tools
//! can filter without decoding; the payload stays the truth.

/// The event type name.
pub const EVENT_TYPE: &str = "Relais-Type";
/// The schema version of the data.
pub const SCHEMA_VERSION: &str = "Relais-Schema-Version";
/// W3C trace context.
pub const TRACEPARENT: &str = "traceparent";
/// W3C trace state.
pub const TRACESTATE: &str = "tracestate";
/// Who admitted the message: an HMAC tag of the gateway or of a registered direct publisher
/// (format in `relais_audit::admission`).
pub const ADMISSION: &str = "Relais-Admission";
/// The broker's deduplication id (`Nats-Msg-Id`): the event's id.
pub const MESSAGE_ID: &str = "Nats-Msg-Id";
