//! `GET /openapi.json`: the OpenAPI 3.1 description of the HTTP API.
//!
//! Every successful response names its body by a schema of `components/schemas`, written from
//! the Rust types the handlers serialise (crate's handlers, `relais_projections` rows): keep
//! them in step when a field is added, renamed or skipped. tests/api/openapi.rs compares the
//! document with the router and real answers with these schemas.

use axum::Json;
use serde_json::{Map, Value, json};

fn problem(description: &str) -> Value {
    json!({ "description": description, "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } } })
}

/// A reference to a schema of the components.
fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A JSON response whose body is the component `schema`.
fn body(description: &str, schema: &str) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema_ref(schema) } } })
}

/// The 503 of a route that needs a token: the token store (the database) cannot be read.
const TOKEN_STORE_DOWN: &str = "the token store or the database is unavailable; retry later";

fn string() -> Value {
    json!({ "type": "string" })
}
fn string_or_null() -> Value {
    json!({ "type": ["string", "null"] })
}
fn integer() -> Value {
    json!({ "type": "integer" })
}
fn boolean() -> Value {
    json!({ "type": "boolean" })
}
fn date_time() -> Value {
    json!({ "type": "string", "format": "date-time" })
}
fn date_time_or_null() -> Value {
    json!({ "type": ["string", "null"], "format": "date-time" })
}
fn date() -> Value {
    json!({ "type": "string", "format": "date" })
}
fn date_or_null() -> Value {
    json!({ "type": ["string", "null"], "format": "date" })
}
fn strings() -> Value {
    json!({ "type": "array", "items": { "type": "string" } })
}
fn uuid() -> Value {
    json!({ "type": "string", "format": "uuid" })
}
fn one_of(values: &[&str]) -> Value {
    json!({ "type": "string", "enum": values })
}
fn one_of_or_null(values: &[&str]) -> Value {
    let mut all: Vec<Value> = values.iter().map(|v| json!(v)).collect();
    all.push(Value::Null);
    json!({ "type": ["string", "null"], "enum": all })
}
fn described(mut schema: Value, description: &str) -> Value {
    schema["description"] = json!(description);
    schema
}

/// An object schema whose fields are all required (always serialised, also when null) except
/// `optional` (left out when unset).
fn object(description: &str, optional: &[&str], properties: Value) -> Value {
    let required: Vec<&String> = match &properties {
        Value::Object(members) => members.keys().filter(|k| !optional.contains(&k.as_str())).collect(),
        _ => Vec::new(),
    };
    let schema = json!({ "type": "object", "required": required, "properties": properties });
    if description.is_empty() { schema } else { described(schema, description) }
}

/// The listing envelope of the paged views: `{ items, next_cursor }`.
fn page(item: &str, what: &str) -> Value {
    object(
        &format!("A page of {what}. Pass next_cursor as `cursor` for the next page; it is null on the last page."),
        &[],
        json!({
            "items": { "type": "array", "items": schema_ref(item) },
            "next_cursor": described(string_or_null(), "the cursor of the next page; null when this page is the last")
        }),
    )
}

/// The schemas of the protocol: problems, CloudEvents, ingest, health, catalogue.
fn protocol_schemas() -> Map<String, Value> {
    let mut s = Map::new();
    s.insert("Problem".into(), json!({
        "type": "object",
        "description": "Problem details (RFC 9457); `type` is urn:relais:problem:<kind> (invalid-event, invalid-parameter, unauthenticated, forbidden, wrong-organisation, not-found, version-conflict, client-erased, id-taken, too-large, unsupported-media-type, unavailable, internal, ...)",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": { "type": "string", "format": "uri-reference" },
            "title": string(),
            "status": integer(),
            "detail": string(),
            "pointer": { "type": "string", "description": "Where the problem is: a JSON pointer into the request body (`/data/mode`; `/3/id` for the fourth event of a batch; empty for the whole body), or `?name` for a query or path parameter (`?limit`, `?client`)" },
            "errors": { "type": "array", "description": "The same pointer and detail, as a list (present when there is a pointer)",
                "items": { "type": "object", "required": ["pointer", "detail"], "properties": {
                    "pointer": { "type": "string", "description": "as `pointer`" }, "detail": string() } } }
        }
    }));
    s.insert("CloudEvent".into(), json!({
        "type": "object",
        "required": ["specversion", "id", "source", "type", "subject", "data"],
        "properties": {
            "specversion": { "const": "1.0" },
            "id": { "type": "string", "format": "uuid", "description": "Idempotency key: the same id is stored once" },
            "source": { "type": "string", "pattern": "^/orgs/[a-z0-9-]{1,32}$" },
            "type": { "type": "string", "description": "An event type of GET /v1/catalogue" },
            "subject": { "type": "string", "pattern": "^(cases|referrals|activities|signals|clients)/[A-Za-z0-9_-]{1,64}$" },
            "time": { "type": "string", "format": "date-time" },
            "datacontenttype": { "const": "application/json" },
            "dataschema": { "type": "string" },
            "schemaversion": { "type": "integer", "minimum": 1 },
            "actor": { "type": "string", "maxLength": 128 },
            "correlationid": { "type": "string", "maxLength": 128 },
            "causationid": { "type": "string", "maxLength": 128 },
            "expectedversion": { "type": "integer", "minimum": 0, "description": "Stream sequence of the subject's last event (0: no event yet); 409 on mismatch" },
            "data": { "type": "object" }
        }
    }));
    s.insert("Stored".into(), object("The events of the request, in order, with their stream sequence", &[], json!({
        "events": { "type": "array", "items": object("", &[], json!({
            "id": uuid(), "sequence": integer(),
            "duplicate": described(boolean(), "true when an event with this id was stored before (nothing stored again)") })) } })));
    s.insert("Health".into(), json!({ "type": "string", "const": "ok", "description": "text/plain" }));
    s.insert(
        "Readiness".into(),
        object(
            "Both dependencies reachable",
            &[],
            json!({
        "nats": { "const": "ok" }, "postgres": { "const": "ok" } }),
        ),
    );
    s.insert("OpenApiDocument".into(), object("This document (OpenAPI 3.1)", &["security"], json!({
        "openapi": { "type": "string", "pattern": "^3\\.1\\." }, "info": { "type": "object" }, "paths": { "type": "object" },
        "components": { "type": "object" }, "security": { "type": "array" } })));
    s.insert(
        "Labels".into(),
        object(
            "A text in Dutch, French and English",
            &[],
            json!({
        "nl": string(), "fr": string(), "en": string() }),
        ),
    );
    s.insert("JsonSchema".into(), json!({ "type": "object", "description": "A JSON Schema (2020-12) of an event type's data; each property carries `x-relais-class`: statistical or personal" }));
    s.insert("CatalogueEntry".into(), object("One event type", &[], json!({
        "type": string(),
        "version": described(integer(), "the current schema version"),
        "legacy_versions": { "type": "array", "items": integer(), "description": "older versions still read (upcast)" },
        "aggregate": one_of(&["cases", "referrals", "activities", "signals", "clients"]),
        "category": one_of(&["guidance", "situation", "network", "referral", "consent", "group_activity", "structural", "privacy"]),
        "titles": schema_ref("Labels"),
        "dataschema": described(string(), "where GET /v1/catalogue/{event_type}/{version} serves the schema"),
        "fields": { "type": "object", "description": "each data field's class", "additionalProperties": one_of(&["statistical", "personal"]) },
        "publishable": described(boolean(), "false for the types Relais records itself (privacy)"),
        "schema": schema_ref("JsonSchema"),
        "example": schema_ref("CloudEvent") })));
    s.insert("Catalogue".into(), object("Every event type, and the reference data (code lists with labels)", &[], json!({
        "event_types": { "type": "array", "items": schema_ref("CatalogueEntry") },
        "reference": { "type": "object", "description": "code lists by name (intervention_modes, life_domains, prisons, ...), each a list of codes with labels" } })));
    s
}

/// The schemas of the organisation views (crate::views, crate::org_views, crate::quarantine).
fn view_schemas() -> Map<String, Value> {
    use relais_projections::{caseload, referrals, worklist};
    let mut s = Map::new();
    s.insert("Case".into(), object("One case of the caseload (relais_projections::caseload::CaseRow)", &[], json!({
        "org_id": string(),
        "case_id": string(),
        "client_ref": described(string_or_null(), "the organisation's reference of the client; null once erased"),
        "status": one_of(caseload::STATUSES),
        "channel": described(string_or_null(), "how the request came in (a request channel of the catalogue)"),
        "requested_at": date_time(),
        "closed_at": date_time_or_null(),
        "legal_status": one_of_or_null(&["suspect", "convict", "internee"]),
        "in_detention": boolean(),
        "prison": described(string_or_null(), "a prison code, while in detention"),
        "detention_since": date_or_null(),
        "release_scheduled_on": date_or_null(),
        "released_on": date_or_null(),
        "aftercare_started_at": date_time_or_null(),
        "life_domains": strings(),
        "interventions_by_mode": { "type": "object", "additionalProperties": integer(), "description": "intervention mode code: count" },
        "intervention_count": integer(),
        "urgent_request_count": integer(),
        "family_contact_count": integer(),
        "last_contact_at": date_time_or_null(),
        "language": string_or_null(),
        "last_event_at": date_time(),
        "version": described(integer(), "stream sequence of the last message stored on the case (an applied event, or one the validator quarantined): the value for `expectedversion`") })));
    s.insert("CasePage".into(), page("Case", "cases"));
    s.insert("CaseAsOf".into(), object("A case as it stood at a moment, rebuilt from its events in the log (GET .../cases/{case}?as_of=; relais_projections::audit::as_of::CaseAsOf). Not the caseload row.", &[], json!({
        "org": string(),
        "case": string(),
        "as_of": date_time(),
        "basis": one_of(&["recorded", "occurred"]),
        "status": one_of(&["never_seen", "requested", "accepted", "declined", "closed"]),
        "legal_status": one_of_or_null(&["suspect", "convict", "internee"]),
        "detention": object("", &["kind", "on", "prison", "since"], json!({
            "state": one_of(&["never_detained", "in_detention", "released"]),
            "prison": described(string(), "in_detention"), "since": described(date(), "in_detention"),
            "on": described(date(), "released"), "kind": described(string(), "released: the release kind") })),
        "scheduled_release": { "type": ["object", "null"], "required": ["on", "kind"], "properties": { "on": date(), "kind": string() } },
        "plan_set": boolean(),
        "aftercare_started": boolean(),
        "consents": { "type": "array", "items": object("A consent of the client, with its status on the moment's day (Brussels)", &[], json!({
            "scope": { "description": "\"guidance\", \"continuity_monitor\" or {\"share_with_organisation\": org}", "type": ["string", "object"] },
            "last_decision": one_of(&["given", "withdrawn"]),
            "expires_on": date_or_null(),
            "status": one_of(&["never_given", "active", "expired", "withdrawn"]) })) },
        "event_count": integer(),
        "last_sequence": integer(),
        "last_event_at": date_time(),
        "judged_through": described(integer(), "the validator's position: later events were not considered") })));
    s.insert("QuarantinedEvent".into(), object("A message of the log that no view applies (its bytes stay in the log)", &[], json!({
        "seq": described(integer(), "stream sequence"),
        "subject": described(string(), "the NATS subject"),
        "reason": described(string(), "subject, undecodable, message-id-mismatch, invalid, mismatch, personal-data-in-clear, undecryptable, erasure-without-key, client-erased, duplicate, rule, unprojectable (a value a view cannot store: PostgreSQL's words in the detail)"),
        "detail": described(string(), "what is wrong"),
        "quarantined_at": date_time() })));
    s.insert("QuarantinePage".into(), object("Quarantined events, oldest first", &[], json!({
        "items": { "type": "array", "items": schema_ref("QuarantinedEvent") },
        "next_after": { "type": ["integer", "null"], "description": "when the page is full, the seq of its last item: pass it as `after` for the next page; null otherwise" } })));
    s.insert("TimelineEvent".into(), object("One event of a case timeline", &[], json!({
        "seq": described(integer(), "stream sequence"),
        "id": uuid(),
        "type": described(string(), "an event type of the catalogue"),
        "schemaversion": integer(),
        "occurred_at": date_time(),
        "recorded_at": date_time(),
        "actor": described(string(), "who recorded it"),
        "personal": { "enum": ["present", "erased"], "description": "erased: the event's personal fields are gone from `data`" },
        "data": { "type": "object", "description": "the event's data (its type's schema in the catalogue)" } })));
    s.insert("TimelinePage".into(), page("TimelineEvent", "events of a case"));
    s.insert(
        "Referral".into(),
        object(
            "A referral as one side sees it (relais_projections::referrals::ReferralView)",
            &["case_id"],
            json!({
        "referral_id": string(),
        "direction": one_of(&["out", "in"]),
        "from_org": described(string(), "the sending organisation"),
        "destination_kind": one_of(&["organisation", "outside_service"]),
        "destination": described(string(), "the receiving organisation's id or the outside service's code"),
        "life_domains": strings(),
        "stage": one_of(referrals::STAGES),
        "closed": boolean(),
        "made_at": date_time(),
        "received_at": date_time_or_null(),
        "accepted_at": date_time_or_null(),
        "first_contact_at": date_time_or_null(),
        "closed_at": date_time_or_null(),
        "stage_at": described(date_time(), "when the current stage was reached"),
        "age_days": described(integer(), "whole days since made (until closed)"),
        "days_in_stage": integer(),
        "outcome": string_or_null(),
        "decline_reason": string_or_null(),
        "decline_text": string_or_null(),
        "cancel_reason": string_or_null(),
        "message": described(string_or_null(), "what the client consented to share with the receiver"),
        "client_ref": described(string_or_null(), "the reading organisation's own reference of the client"),
        "case_id": described(string(), "the sender's case: only in direction out") }),
        ),
    );
    s.insert("ReferralPage".into(), page("Referral", "referrals"));
    s.insert(
        "ComingUpItem".into(),
        object(
            "A release, furlough or escorted outing of a case",
            &[],
            json!({
        "case_id": string(),
        "item": one_of(&["release", "leave", "outing"]),
        "on_date": date(),
        "detail": described(string(), "the release kind, or the purpose of the leave or outing"),
        "client_ref": string_or_null() }),
        ),
    );
    s.insert("ComingUpPage".into(), page("ComingUpItem", "coming-up items"));
    s.insert(
        "Activity".into(),
        object(
            "A group activity (relais_projections::activities::ActivityRow)",
            &[],
            json!({
        "activity_id": string(),
        "organiser": string_or_null(),
        "kind": one_of_or_null(&["formative", "psychosocial", "sociocultural"]),
        "title": string_or_null(),
        "target_groups": strings(),
        "prison": string_or_null(),
        "partners": strings(),
        "languages": strings(),
        "capacity": { "type": ["integer", "null"] },
        "starts_on": date_or_null(),
        "orgs": described(strings(), "the organisations that recorded events on it"),
        "surveys": { "type": "array", "items": { "type": "object" }, "description": "needs surveys recorded" },
        "sessions": { "type": "array", "items": { "type": "object" }, "description": "sessions held, with attendance" },
        "evaluations": { "type": "array", "items": { "type": "object" } },
        "registrations": integer(),
        "admitted": integer(),
        "refused": integer(),
        "enrolled": integer(),
        "dropouts": integer(),
        "feedbacks": integer(),
        "stopped": boolean(),
        "last_event_at": date_time(),
        "version": integer() }),
        ),
    );
    s.insert("ActivityPage".into(), page("Activity", "activities"));
    s.insert(
        "Participant".into(),
        object(
            "A participant the reading organisation registered",
            &[],
            json!({
        "client_ref": string_or_null(),
        "status": one_of(&["registered", "admitted", "not_admitted", "enrolled", "dropped_out"]),
        "registered_at": date_time_or_null(),
        "screened_at": date_time_or_null(),
        "refusal_reason": string_or_null(),
        "enrolled_at": date_time_or_null(),
        "dropped_out_at": date_time_or_null(),
        "dropout_reason": string_or_null(),
        "feedback_at": date_time_or_null() }),
        ),
    );
    s.insert(
        "ActivityDetail".into(),
        object(
            "One activity with the organisation's own participants",
            &[],
            json!({
        "activity": schema_ref("Activity"),
        "roster": { "type": "array", "items": schema_ref("Participant") },
        "dropouts_waiting_for_feedback": { "type": "array", "items": schema_ref("Participant") } }),
        ),
    );
    s.insert(
        "WorkItem".into(),
        object(
            "One thing to do",
            &[],
            json!({
        "kind": one_of(worklist::KINDS),
        "since": date_time(),
        "subject": described(string(), "referrals/<id>, cases/<id> or activities/<id>"),
        "client_ref": string_or_null(),
        "detail": described(string_or_null(), "a stage, a release date or a dropout reason") }),
        ),
    );
    s.insert("WorkItemPage".into(), page("WorkItem", "work items"));
    s
}

/// The schemas of the shared views, privacy and audit endpoints.
fn shared_schemas() -> Map<String, Value> {
    use relais_projections::{monitor, statistics};
    let mut s = Map::new();
    s.insert("StatisticsCell".into(), object("One cell; fewer than min_people people: suppressed, people and count null", &[], json!({
        "period": described(date(), "the first day of the period"),
        "authority": described(string_or_null(), "the recognising authority (none for the coordinators); null when grouped in total"),
        "organisation": described(string_or_null(), "when grouped per organisation"),
        "measure": one_of(statistics::MEASURES),
        "dimension_1": described(string(), "empty when the measure has none"),
        "dimension_2": string(),
        "people": { "type": ["integer", "null"] },
        "count": { "type": ["integer", "null"] },
        "suppressed": boolean() })));
    s.insert(
        "Statistics".into(),
        object(
            "Statistics per period",
            &[],
            json!({
        "period": one_of(&["month", "quarter", "year"]),
        "from": date(),
        "to": date(),
        "min_people": integer(),
        "cells": { "type": "array", "items": schema_ref("StatisticsCell") } }),
        ),
    );
    s.insert("StatisticsCsv".into(), json!({ "type": "string", "description": "CSV of the cells (text/csv); suppressed cells show `<5` and an empty count" }));
    s.insert(
        "Alert".into(),
        object(
            "A continuity alert, by linkage key (never a case id or client reference)",
            &[],
            json!({
        "id": string(),
        "linkage_key": string(),
        "kind": one_of(monitor::ALERT_KINDS),
        "organisation": string(),
        "other_organisation": described(string_or_null(), "a referral's receiver, if any"),
        "opened_at": date_time(),
        "closed_at": described(date_time_or_null(), "null while open"),
        "open_for_seconds": integer(),
        "open_for_days": integer(),
        "detail": { "type": "object", "description": "minimal facts: dates and stages" } }),
        ),
    );
    s.insert("AlertPage".into(), page("Alert", "alerts"));
    s.insert(
        "MonitorMember".into(),
        object(
            "One organisation's part in a person's help",
            &[],
            json!({
        "organisation": string(),
        "status": described(string(), "guidance status (`joined` until a status event follows the consent)"),
        "in_detention": boolean(),
        "release_on": date_or_null(),
        "released": boolean(),
        "aftercare_at": date_time_or_null(),
        "consent_expires_on": date_or_null() }),
        ),
    );
    s.insert(
        "MonitorOpenReferral".into(),
        object(
            "An open referral of a person",
            &[],
            json!({
        "from_organisation": string(),
        "to_organisation": described(string_or_null(), "null for an outside service"),
        "destination_kind": one_of(&["organisation", "outside_service"]),
        "stage": string(),
        "made_at": date_time() }),
        ),
    );
    s.insert(
        "Person".into(),
        object(
            "A consented person, by linkage key",
            &[],
            json!({
        "linkage_key": string(),
        "organisations": { "type": "array", "items": schema_ref("MonitorMember") },
        "open_referrals": { "type": "array", "items": schema_ref("MonitorOpenReferral") },
        "open_alerts": integer() }),
        ),
    );
    s.insert("PersonPage".into(), page("Person", "persons"));
    s.insert(
        "Erasure".into(),
        object(
            "A completed erasure",
            &[],
            json!({
        "key_id": uuid(), "erased": { "const": true }, "erased_at": date_time(), "event_id": uuid(),
        "sequence": integer(), "reason": one_of(&["client_request", "retention_expired"]) }),
        ),
    );
    s.insert("ExportedEvent".into(), json!({ "allOf": [schema_ref("CloudEvent"), { "type": "object", "properties": {
        "sequence": integer(), "recordedat": date_time(), "titles": schema_ref("Labels"),
        "personaldata": { "enum": ["erased", "unreadable", "withheld"], "description": "present when personal fields are not shown: erased, unreadable (a key that does not open them), or withheld (another organisation's, from an auditor of one service)" } } }] }));
    s.insert("ClientExport".into(), object("Everything the organisation holds about a client; once erased only organisation, client, erased, erased_at and exported_at", &["erased_at", "events", "cases", "access", "problems"], json!({
        "organisation": string(),
        "client": object("", &["client_ref"], json!({ "client_ref": described(string(), "absent once erased"), "key_id": uuid() })),
        "erased": boolean(),
        "erased_at": date_time(),
        "exported_at": date_time(),
        "events": { "type": "array", "items": schema_ref("ExportedEvent"), "description": "CloudEvents with personal fields opened, in log order" },
        "cases": { "type": "array", "items": schema_ref("Case") },
        "access": { "type": "array", "items": schema_ref("AccessRecord") },
        "problems": { "type": "array", "items": object("An event whose personal fields could not be read", &[], json!({
            "event_id": { "type": ["string", "null"], "format": "uuid" }, "sequence": integer(), "problem": string() })) } })));
    s.insert(
        "ClientKey".into(),
        object(
            "A client's data key",
            &[],
            json!({
        "key_id": uuid(), "key": { "type": "string", "contentEncoding": "base64" },
        "algorithm": { "const": "XChaCha20-Poly1305" }, "associated_data": string() }),
        ),
    );
    s.insert("AuditReplay".into(), json!({ "type": "string", "description": "NDJSON (application/x-ndjson): one JSON object a line, each with relaiskind replay, event, message, checkpoint or end (docs/AUDIT.md)" }));
    s.insert("PublicKey".into(), object("The key that verifies signed checkpoints, and the keys retired by rotation", &[], json!({
        "algorithm": { "const": "ed25519" },
        "key_id": { "type": "string", "pattern": "^[0-9a-f]{16}$", "description": "hex of the first 8 bytes of SHA-256 of the key" },
        "public_key": { "type": "string", "contentEncoding": "base64" },
        "retired": { "type": "array", "items": object("", &[], json!({
            "key_id": { "type": "string", "pattern": "^[0-9a-f]{16}$" }, "public_key": { "type": "string", "contentEncoding": "base64" } })) } })));
    s.insert("AccessRecord".into(), object("Who read what, when", &[], json!({
        "id": described(integer(), "sequence of the record"),
        "at": date_time(),
        "token_id": described(uuid(), "nil for the command line"),
        "org_id": string(),
        "role": described(string(), "the token's role (org, coordinator, auditor, admin), or operator for the command line"),
        "action": described(string(), "for example cases.list, case.read, audit.replay"),
        "resource": described(string(), "for example orgs/apo/cases/c-1"),
        "detail": { "description": "the filter or parameters of the read (free-form JSON)" } })));
    s.insert("AccessPage".into(), page("AccessRecord", "access records, oldest first"));
    s
}

/// The paths of the data subject's rights (crate::privacy).
fn privacy_paths(org_param: &Value) -> Value {
    let client_param = json!({ "name": "client", "in": "path", "required": true,
        "description": "The organisation's pseudonymous reference of the client",
        "schema": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$" } });
    let params = json!([org_param, client_param]);
    json!({
        "/v1/orgs/{org}/clients/{client}/erasure": { "post": {
            "summary": "Erase a client (GDPR Art. 17): destroy the client's data key and record relais.client.erased",
            "description": "Crypto-shredding: the log is not rewritten; the client's personal fields become unreadable everywhere at once. Idempotent.",
            "parameters": params,
            "requestBody": { "required": false, "content": { "application/json": { "schema": {
                "type": "object", "additionalProperties": false,
                "properties": { "reason": { "enum": ["client_request", "retention_expired"], "default": "client_request" } } } } } },
            "responses": {
                "202": body("erased by this request", "Erasure"),
                "200": body("erased before", "Erasure"),
                "400": problem("invalid client reference or body"), "401": problem("no or unknown token"),
                "403": problem("another organisation or role"), "404": problem("the organisation has no such client"),
                "503": problem("the event log, the key store or the database is unavailable, or the key is destroyed and its erasure event pending (another message holds its id for now); retry: the retry completes the erasure") } } },
        "/v1/orgs/{org}/clients/{client}/export": { "get": {
            "summary": "Everything the organisation holds about a client (GDPR Art. 15), or that the client was erased",
            "parameters": params,
            "responses": {
                "200": body("events (CloudEvents, personal fields opened, titles in NL/FR/EN), cases and access records; or {organisation, client, erased: true, erased_at, exported_at}", "ClientExport"),
                "400": problem("invalid client reference"), "401": problem("no or unknown token"),
                "403": problem("another organisation or role"), "404": problem("the organisation has no such client"),
                "503": problem("the event log, the key store or the database is unavailable; retry later") } } },
        "/v1/orgs/{org}/clients/{client}/key": { "post": {
            "summary": "The client's data key (created on first use), for a system that seals events and publishes directly on NATS",
            "parameters": params,
            "responses": {
                "200": body("the key", "ClientKey"),
                "400": problem("invalid client reference"), "401": problem("no or unknown token"),
                "403": problem("another organisation or role"), "409": problem("the client was erased"),
                "503": problem("the key store or the database is unavailable; retry later") } } }
    })
}

/// The paths of health, the catalogue, ingest, the caseload and the quarantine.
fn core_paths(org_param: &Value) -> Value {
    json!({
        "/healthz": { "get": { "summary": "The process is alive", "security": [],
            "responses": { "200": { "description": "alive", "content": { "text/plain": { "schema": schema_ref("Health") } } } } } },
        "/readyz": { "get": { "summary": "NATS and PostgreSQL are reachable", "security": [],
            "responses": { "200": body("ready", "Readiness"), "503": problem("not ready: the detail names what is unreachable") } } },
        "/openapi.json": { "get": { "summary": "This OpenAPI 3.1 document", "security": [],
            "responses": { "200": body("the document", "OpenApiDocument") } } },
        "/v1/catalogue": { "get": { "summary": "Every event type with titles, JSON Schema, field classes and an example", "security": [],
            "responses": { "200": body("the catalogue", "Catalogue") } } },
        "/v1/catalogue/{event_type}/{version}": { "get": { "summary": "The JSON Schema of an event type's data at a version it is read at (current or legacy: what an event's dataschema names)", "security": [],
            "parameters": [ { "name": "event_type", "in": "path", "required": true, "schema": { "type": "string" } }, { "name": "version", "in": "path", "required": true, "schema": { "type": "string", "pattern": "^v[0-9]+$" } } ],
            "responses": { "200": body("JSON Schema 2020-12", "JsonSchema"), "404": problem("unknown type or version") } } },
        "/v1/events": { "post": {
            "summary": "Publish one event or an all-or-nothing batch",
            "parameters": [
                { "name": "traceparent", "in": "header", "description": "W3C trace context of the caller's span (on every route): the request, the publishing and the projection of its events are traced as its children, and Relais records its spans whatever the caller's sampling flag. A malformed value is ignored; tracestate is not taken (it would be stored with each event)",
                    "schema": { "type": "string", "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$" } } ],
            "requestBody": { "required": true, "content": {
                "application/cloudevents+json": { "schema": schema_ref("CloudEvent") },
                "application/cloudevents-batch+json": { "schema": { "type": "array", "maxItems": 1000, "items": schema_ref("CloudEvent") } } } },
            "responses": {
                "201": body("stored", "Stored"),
                "200": body("every event was already stored", "Stored"),
                "400": problem("invalid event, or one naming an organisation outside the registry; nothing stored"), "401": problem("no or unknown token"), "403": problem("wrong organisation or role"),
                "409": problem("version conflict, erased client, or an id that is another organisation's event (`id-taken`); nothing stored"), "413": problem("too large"), "415": problem("wrong media type"),
                "503": problem("the event log, the token store or the database is unavailable; retry with the same ids") } } },
        "/v1/orgs/{org}/cases": { "get": {
            "summary": "The organisation's caseload, most recently active first",
            "parameters": [ org_param,
                { "name": "status", "in": "query", "schema": { "enum": relais_projections::caseload::STATUSES } },
                { "name": "in_detention", "in": "query", "schema": { "type": "boolean" } },
                { "name": "open", "in": "query", "description": "true: requested, open, after_care; false: declined, closed", "schema": { "type": "boolean" } },
                { "name": "legal_status", "in": "query", "schema": { "enum": ["suspect", "convict", "internee"] } },
                { "name": "language", "in": "query", "schema": { "type": "string", "pattern": "^[a-z]{2,3}$" } },
                { "name": "life_domain", "in": "query", "schema": { "type": "string" } },
                { "name": "active_within_days", "in": "query", "description": "only cases with an event in the last N days (recent)", "schema": { "type": "integer", "minimum": 0, "maximum": 3660 } },
                { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 500, "default": 50 } },
                { "name": "cursor", "in": "query", "description": "next_cursor of the previous page", "schema": { "type": "string" } } ],
            "responses": { "200": body("a page of cases", "CasePage"), "400": problem("invalid or unknown parameter"), "401": problem("no or unknown token"), "403": problem("another organisation") } } },
        "/v1/orgs/{org}/quarantine": { "get": {
            "summary": "The organisation's events the log holds but no view applies, with the reason",
            "parameters": [ org_param,
                { "name": "after", "in": "query", "description": "next_after of the previous page: only events after this stream sequence", "schema": { "type": "integer", "minimum": 0 } },
                { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } } ],
            "responses": { "200": body("quarantined events, oldest first; next_after continues", "QuarantinePage"),
                "400": problem("invalid or unknown parameter (limit outside 1..1000)"), "401": problem("no or unknown token"), "403": problem("another organisation") } } },
        "/v1/orgs/{org}/cases/{case}": { "get": {
            "summary": "One case of the organisation's caseload",
            "parameters": [ org_param, { "name": "case", "in": "path", "required": true, "schema": { "type": "string" } } ],
            "responses": {
                "200": { "description": "without as_of: the case's caseload row (Case); with as_of: the case rebuilt from the log at that moment (CaseAsOf)",
                    "content": { "application/json": { "schema": { "oneOf": [schema_ref("Case"), schema_ref("CaseAsOf")] } } } },
                "401": problem("no or unknown token"), "403": problem("another organisation"), "404": problem("no such case"),
                "503": problem("the event log cannot be read (as_of), or the token store or the database is unavailable; retry later") } } }
    })
}

/// The OpenAPI document.
pub async fn openapi() -> Json<Value> {
    let org_param = json!({ "name": "org", "in": "path", "required": true, "schema": { "type": "string", "pattern": "^[a-z0-9-]{1,32}$" } });
    let mut schemas = protocol_schemas();
    schemas.extend(view_schemas());
    schemas.extend(shared_schemas());
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Relais",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Event-sourced coordination backend of the Brussels justice-welfare services. Events are CloudEvents 1.0; the catalogue lists every type with its JSON Schema. Listings answer { items, next_cursor } (the quarantine: { items, next_after }); every error is application/problem+json."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": schemas
        },
        "security": [{ "bearer": [] }],
        "paths": core_paths(&org_param)
    });
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        if let Value::Object(more) = privacy_paths(&org_param) {
            paths.extend(more);
        }
        paths.extend(view_paths());
    }
    crate::audit::openapi_paths(&mut doc, problem);
    complete(&mut doc);
    Json(doc)
}

/// Completes what crate::audit adds (its bodies), and the responses every operation shares:
/// a 503 where a token is checked, a 400 where a path or query parameter can be refused.
fn complete(doc: &mut Value) {
    let bodies = [
        ("/paths/~1v1~1audit~1public-key/get/responses/200", "PublicKey"),
        ("/paths/~1v1~1audit~1access/get/responses/200", "AccessPage"),
    ];
    for (pointer, schema) in bodies {
        if let Some(response) = doc.pointer_mut(pointer) {
            response["content"] = json!({ "application/json": { "schema": schema_ref(schema) } });
        }
    }
    if let Some(replay) = doc.pointer_mut("/paths/~1v1~1audit~1events/get/responses/200/content/application~1x-ndjson")
    {
        replay["schema"] = schema_ref("AuditReplay");
    }
    if let Some(events) = doc.pointer_mut("/paths/~1v1~1audit~1events/get/responses/503") {
        *events = problem("the log cannot be read, or the token store or the database is unavailable; retry later");
    }
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else { return };
    for operation in paths.values_mut().filter_map(Value::as_object_mut).flat_map(|p| p.values_mut()) {
        let public = operation.get("security").and_then(Value::as_array).is_some_and(Vec::is_empty);
        let takes_query = operation
            .get("parameters")
            .and_then(Value::as_array)
            .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
        let Some(responses) = operation.get_mut("responses").and_then(Value::as_object_mut) else { continue };
        if !public && !responses.contains_key("503") {
            responses.insert("503".into(), problem(TOKEN_STORE_DOWN));
        }
        if !responses.contains_key("400") {
            // Every route refuses control characters in its path or query (crate::query); a
            // route with query parameters also refuses unknown ones.
            let what = if takes_query {
                "invalid or unknown parameter"
            } else {
                "a control character, or a byte that is not UTF-8, in the path or query"
            };
            responses.insert("400".into(), problem(what));
        }
    }
}

/// The paths of the organisation views, the continuity monitor and the statistics.
fn view_paths() -> serde_json::Map<String, Value> {
    let org = json!({ "name": "org", "in": "path", "required": true, "schema": { "type": "string", "pattern": "^[a-z0-9-]{1,32}$" } });
    let limit = |max: i64, default: i64| json!({ "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": max, "default": default } });
    let cursor = json!({ "name": "cursor", "in": "query", "description": "next_cursor of the previous page", "schema": { "type": "string" } });
    let page = |what: &str, schema: &str| body(&format!("a page of {what}: {{ items, next_cursor }}"), schema);
    let org_reads = |what: &str, schema: &str| json!({ "200": page(what, schema), "400": problem("invalid or unknown parameter"), "401": problem("no or unknown token"), "403": problem("another organisation or another role") });
    let stats_params = |shared: bool| {
        let mut p = vec![
            json!({ "name": "period", "in": "query", "schema": { "enum": ["month", "quarter", "year"], "default": "month" } }),
            json!({ "name": "from", "in": "query", "description": "first day, the first day of a period (default: 1 January of this year)", "schema": { "type": "string", "format": "date" } }),
            json!({ "name": "to", "in": "query", "description": "last day, the last day of a period (default: the end of the period holding today; a period not yet over holds what is recorded so far)", "schema": { "type": "string", "format": "date" } }),
            json!({ "name": "measure", "in": "query", "schema": { "enum": relais_projections::statistics::MEASURES } }),
            json!({ "name": "format", "in": "query", "description": "or Accept: text/csv", "schema": { "enum": ["json", "csv"] } }),
        ];
        if shared {
            p.push(json!({ "name": "group_by", "in": "query", "schema": { "enum": ["authority", "organisation", "total"], "default": "authority" } }));
            p.push(json!({ "name": "org", "in": "query", "schema": { "type": "string" } }));
            p.push(json!({ "name": "authority", "in": "query", "schema": { "enum": ["cocom", "flemish_community", "french_community", "none"] } }));
        }
        p
    };
    let stats_responses = json!({
        "200": { "description": "cells { period, authority, organisation, measure, dimension_1, dimension_2, people, count, suppressed }; cells with fewer than 5 people have people and count null (CSV: `<5` and empty)",
            "content": { "application/json": { "schema": schema_ref("Statistics") }, "text/csv": { "schema": schema_ref("StatisticsCsv") } } },
        "400": problem("invalid or unknown parameter"), "401": problem("no or unknown token"), "403": problem("wrong role or organisation") });
    let paths = json!({
        "/v1/orgs/{org}/cases/{case}/timeline": { "get": {
            "summary": "Every event of one case, in order, with who recorded it; personal fields while the client is not erased",
            "parameters": [ org.clone(), { "name": "case", "in": "path", "required": true, "schema": { "type": "string" } },
                { "name": "type", "in": "query", "schema": { "type": "string" } }, limit(1000, 100), cursor.clone() ],
            "responses": { "200": page("events", "TimelinePage"), "400": problem("invalid or unknown parameter"), "401": problem("no or unknown token"), "403": problem("another organisation"), "404": problem("no such case") } } },
        "/v1/orgs/{org}/referrals": { "get": {
            "summary": "Referrals out (made by the organisation) or in (made to it), with closed-loop stage and age; the receiver never sees the sender's case id or client reference",
            "parameters": [ org.clone(),
                { "name": "direction", "in": "query", "schema": { "enum": ["out", "in"], "default": "out" } },
                { "name": "stage", "in": "query", "schema": { "enum": relais_projections::referrals::STAGES } },
                { "name": "open", "in": "query", "schema": { "type": "boolean" } }, limit(500, 50), cursor.clone() ],
            "responses": org_reads("referrals", "ReferralPage") } },
        "/v1/orgs/{org}/coming-up": { "get": {
            "summary": "Scheduled releases, prepared furloughs and escorted outings from today (Brussels) to N days ahead",
            "parameters": [ org.clone(),
                { "name": "days", "in": "query", "schema": { "type": "integer", "minimum": 0, "maximum": 366, "default": 14 } },
                { "name": "item", "in": "query", "schema": { "enum": ["release", "leave", "outing"] } }, limit(1000, 100), cursor.clone() ],
            "responses": org_reads("items", "ComingUpPage") } },
        "/v1/orgs/{org}/activities": { "get": {
            "summary": "Group activities the organisation organised, recorded on or is a partner of, with sessions (attendance), evaluations and counts",
            "parameters": [ org.clone(), { "name": "kind", "in": "query", "schema": { "enum": ["formative", "psychosocial", "sociocultural"] } }, limit(500, 50), cursor.clone() ],
            "responses": org_reads("activities", "ActivityPage") } },
        "/v1/orgs/{org}/activities/{activity}": { "get": {
            "summary": "One activity with the organisation's own participants, dropouts waiting for their feedback conversation, sessions and evaluations",
            "parameters": [ org.clone(), { "name": "activity", "in": "path", "required": true, "schema": { "type": "string" } } ],
            "responses": { "200": body("{ activity, roster, dropouts_waiting_for_feedback }", "ActivityDetail"), "401": problem("no or unknown token"), "403": problem("another organisation"), "404": problem("no such activity for this organisation") } } },
        "/v1/orgs/{org}/worklist": { "get": {
            "summary": "What needs action now, longest waiting first: referrals to answer, accepted referrals without first contact, releases without after-care, dropouts without feedback",
            "parameters": [ org.clone(),
                { "name": "kind", "in": "query", "schema": { "enum": relais_projections::worklist::KINDS } },
                { "name": "release_days", "in": "query", "schema": { "type": "integer", "minimum": 0, "maximum": 366, "default": 14 } }, limit(1000, 100), cursor.clone() ],
            "responses": org_reads("work items", "WorkItemPage") } },
        "/v1/orgs/{org}/statistics": { "get": {
            "summary": "The organisation's own statistics per period (small cells suppressed)",
            "parameters": std::iter::once(org.clone()).chain(stats_params(false)).collect::<Vec<_>>(),
            "responses": stats_responses.clone() } },
        "/v1/statistics": { "get": {
            "summary": "Funder statistics of every organisation per period and per recognising authority, organisation or in total (role coordinator); anonymous: cells under 5 people suppressed",
            "parameters": stats_params(true),
            "responses": stats_responses } },
        "/v1/monitor/alerts": { "get": {
            "summary": "Continuity monitor alerts by linkage key, longest open first, with how long each has been open (role coordinator; consented clients only; never case ids or client references)",
            "parameters": [
                { "name": "state", "in": "query", "schema": { "enum": ["open", "closed", "all"], "default": "open" } },
                { "name": "kind", "in": "query", "schema": { "enum": relais_projections::monitor::ALERT_KINDS } },
                { "name": "org", "in": "query", "schema": { "type": "string" } },
                { "name": "linkage_key", "in": "query", "schema": { "type": "string", "pattern": "^[0-9a-f]{64}$" } }, limit(1000, 100), cursor.clone() ],
            "responses": { "200": page("alerts", "AlertPage"), "400": problem("invalid or unknown parameter"), "401": problem("no or unknown token"), "403": problem("not the coordinator role") } } },
        "/v1/monitor/persons": { "get": {
            "summary": "Consented persons by linkage key: organisations helping (status, detention, release, after-care), open referrals, open alerts (role coordinator)",
            "parameters": [ limit(500, 100), cursor ],
            "responses": { "200": page("persons", "PersonPage"), "400": problem("invalid or unknown parameter"), "401": problem("no or unknown token"), "403": problem("not the coordinator role") } } }
    });
    match paths {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}
