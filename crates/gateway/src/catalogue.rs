//! `GET /v1/catalogue`: every event type, with titles, JSON Schema, field classes and a
//! complete valid example CloudEvent. Public: it holds no data, and integrators build from it.

use crate::error::ApiError;
use axum::Json;
use axum::extract::Path;
use relais_domain::AggregateKind;
use relais_domain::events::{CATALOGUE, EventTypeSpec};
use serde_json::{Value, json};

fn example_event(spec: &EventTypeSpec) -> Value {
    let subject_id = match spec.aggregate {
        AggregateKind::Clients => "0b8e3c56-55f4-4c3e-9a3e-7d1f0c2a9b11",
        _ => "3f2a9c1e-8d4b-4f6a-b1c2-5e7d9f0a1b2c",
    };
    let source = if spec.aggregate == AggregateKind::Activities { "/orgs/coordination" } else { "/orgs/apo" };
    json!({
        "specversion": "1.0",
        "id": "018f6b1e-7c2a-7d3e-9f10-2a4b6c8d0e1f",
        "source": source,
        "type": spec.name,
        "subject": format!("{}/{subject_id}", spec.aggregate.as_str()),
        "time": "2026-03-02T09:30:00Z",
        "datacontenttype": "application/json",
        "data": spec.example_data(),
    })
}

fn entry(spec: &EventTypeSpec) -> Value {
    let fields: serde_json::Map<String, Value> = spec
        .schema()
        .get("properties")
        .and_then(Value::as_object)
        .map(|props| {
            props
                .keys()
                .map(|k| (k.clone(), serde_json::to_value(spec.field_class(k)).unwrap_or(Value::Null)))
                .collect()
        })
        .unwrap_or_default();
    json!({
        "type": spec.name,
        "version": spec.version,
        "legacy_versions": spec.legacy_versions,
        "aggregate": spec.aggregate.as_str(),
        "category": spec.category,
        "titles": spec.titles,
        "dataschema": relais_domain::envelope::dataschema(spec.name, spec.version),
        "fields": fields,
        "publishable": spec.category != relais_domain::events::Category::Privacy,
        "schema": spec.schema(),
        "example": example_event(spec),
    })
}

/// The catalogue.
pub async fn catalogue() -> Json<Value> {
    Json(json!({
        "event_types": CATALOGUE.iter().map(entry).collect::<Vec<_>>(),
        "reference": relais_domain::reference::reference_data(),
    }))
}

/// The JSON Schema of one type at a version it is read at, current or legacy (the `dataschema`
/// URI an event names).
pub async fn schema(Path((event_type, version)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    let spec = relais_domain::events::spec(&event_type).ok_or_else(|| ApiError::not_found("unknown event type"))?;
    let schema = version.strip_prefix('v').and_then(|v| v.parse::<u16>().ok()).and_then(|v| spec.schema_at(v));
    schema.map(Json).ok_or_else(|| {
        ApiError::not_found(format!(
            "{event_type} is read at versions {}",
            std::iter::once(spec.version)
                .chain(spec.legacy_versions.iter().copied())
                .map(|v| format!("v{v}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })
}
