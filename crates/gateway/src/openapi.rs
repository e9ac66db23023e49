//! `GET /openapi.json`: the OpenAPI 3.1 description of the HTTP API.

use axum::Json;
use serde_json::{Value, json};

fn problem(description: &str) -> Value {
    json!({ "description": description, "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } } })
}

/// The paths of the data subject's rights (crate::privacy).
fn privacy_paths(org_param: &Value) -> Value {
    let client_param = json!({ "name": "client", "in": "path", "required": true,
        "description": "The organisation's pseudonymous reference of the client",
        "schema": { "type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$" } });
    let erasure = json!({ "type": "object", "properties": {
        "key_id": { "type": "string", "format": "uuid" }, "erased": { "const": true },
        "erased_at": { "type": "string", "format": "date-time" }, "event_id": { "type": "string", "format": "uuid" },
        "sequence": { "type": "integer" }, "reason": { "enum": ["client_request", "retention_expired"] } } });
    let export = json!({ "type": "object", "required": ["organisation", "client", "erased", "exported_at"], "properties": {
        "organisation": { "type": "string" }, "client": { "type": "object" }, "erased": { "type": "boolean" },
        "erased_at": { "type": "string", "format": "date-time" }, "exported_at": { "type": "string", "format": "date-time" },
        "events": { "type": "array", "items": { "$ref": "#/components/schemas/CloudEvent" } },
        "cases": { "type": "array" }, "access": { "type": "array" },
        "problems": { "type": "array", "items": { "type": "object", "properties": {
            "event_id": { "type": "string" }, "sequence": { "type": "integer" }, "problem": { "type": "string" } } } } } });
    let key = json!({ "type": "object", "properties": {
        "key_id": { "type": "string", "format": "uuid" }, "key": { "type": "string", "contentEncoding": "base64" },
        "algorithm": { "const": "XChaCha20-Poly1305" }, "associated_data": { "type": "string" } } });
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
                "202": { "description": "erased by this request", "content": { "application/json": { "schema": erasure } } },
                "200": { "description": "erased before", "content": { "application/json": { "schema": erasure } } },
                "400": problem("invalid client reference or body"), "401": problem("no or unknown token"),
                "403": problem("another organisation or role"), "404": problem("the organisation has no such client"),
                "503": problem("retry: the retry completes the erasure") } } },
        "/v1/orgs/{org}/clients/{client}/export": { "get": {
            "summary": "Everything the organisation holds about a client (GDPR Art. 15), or that the client was erased",
            "parameters": params,
            "responses": {
                "200": { "description": "events (CloudEvents, personal fields opened, titles in NL/FR/EN), cases and access records; or {client, erased: true, erased_at}",
                    "content": { "application/json": { "schema": export } } },
                "400": problem("invalid client reference"), "401": problem("no or unknown token"),
                "403": problem("another organisation or role"), "404": problem("the organisation has no such client") } } },
        "/v1/orgs/{org}/clients/{client}/key": { "post": {
            "summary": "The client's data key (created on first use), for a system that seals events and publishes directly on NATS",
            "parameters": params,
            "responses": {
                "200": { "description": "the key", "content": { "application/json": { "schema": key } } },
                "400": problem("invalid client reference"), "401": problem("no or unknown token"),
                "403": problem("another organisation or role"), "409": problem("the client was erased") } } }
    })
}

/// The OpenAPI document.
pub async fn openapi() -> Json<Value> {
    let org_param = json!({ "name": "org", "in": "path", "required": true, "schema": { "type": "string", "pattern": "^[a-z0-9-]{1,32}$" } });
    let privacy = privacy_paths(&org_param);
    let mut doc = json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Relais",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Event-sourced coordination backend of the Brussels justice-welfare services. Events are CloudEvents 1.0; the catalogue lists every type with its JSON Schema."
        },
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer" } },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "required": ["type", "title", "status", "detail"],
                    "properties": {
                        "type": { "type": "string", "format": "uri-reference" },
                        "title": { "type": "string" },
                        "status": { "type": "integer" },
                        "detail": { "type": "string" },
                        "pointer": { "type": "string", "description": "JSON pointer to the offending field of the request body" },
                        "errors": { "type": "array", "items": { "type": "object", "properties": { "pointer": { "type": "string" }, "detail": { "type": "string" } } } }
                    }
                },
                "CloudEvent": {
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
                },
                "Stored": {
                    "type": "object",
                    "properties": { "events": { "type": "array", "items": { "type": "object", "properties": {
                        "id": { "type": "string", "format": "uuid" }, "sequence": { "type": "integer" }, "duplicate": { "type": "boolean" } } } } }
                }
            }
        },
        "security": [{ "bearer": [] }],
        "paths": {
            "/healthz": { "get": { "summary": "The process is alive", "security": [], "responses": { "200": { "description": "alive" } } } },
            "/readyz": { "get": { "summary": "NATS and PostgreSQL are reachable", "security": [], "responses": { "200": { "description": "ready" }, "503": problem("not ready") } } },
            "/v1/catalogue": { "get": { "summary": "Every event type with titles, JSON Schema, field classes and an example", "security": [], "responses": { "200": { "description": "the catalogue" } } } },
            "/v1/catalogue/{event_type}/{version}": { "get": { "summary": "The JSON Schema of an event type's data", "security": [],
                "parameters": [ { "name": "event_type", "in": "path", "required": true, "schema": { "type": "string" } }, { "name": "version", "in": "path", "required": true, "schema": { "type": "string", "pattern": "^v[0-9]+$" } } ],
                "responses": { "200": { "description": "JSON Schema 2020-12" }, "404": problem("unknown type or version") } } },
            "/v1/events": { "post": {
                "summary": "Publish one event or an all-or-nothing batch",
                "requestBody": { "required": true, "content": {
                    "application/cloudevents+json": { "schema": { "$ref": "#/components/schemas/CloudEvent" } },
                    "application/cloudevents-batch+json": { "schema": { "type": "array", "maxItems": 1000, "items": { "$ref": "#/components/schemas/CloudEvent" } } } } },
                "responses": {
                    "201": { "description": "stored", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Stored" } } } },
                    "200": { "description": "every event was already stored", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Stored" } } } },
                    "400": problem("invalid event, or one naming an organisation outside the registry; nothing stored"), "401": problem("no or unknown token"), "403": problem("wrong organisation or role"),
                    "409": problem("version conflict, erased client, or an id that is another organisation's event (`id-taken`); nothing stored"), "413": problem("too large"), "415": problem("wrong media type"),
                    "503": problem("event log unavailable; retry with the same ids") } } },
            "/v1/orgs/{org}/cases": { "get": {
                "summary": "The organisation's caseload, most recently active first",
                "parameters": [ org_param.clone(),
                    { "name": "status", "in": "query", "schema": { "enum": ["requested", "open", "declined", "closed", "after_care"] } },
                    { "name": "in_detention", "in": "query", "schema": { "type": "boolean" } },
                    { "name": "open", "in": "query", "description": "true: requested, open, after_care; false: declined, closed", "schema": { "type": "boolean" } },
                    { "name": "legal_status", "in": "query", "schema": { "enum": ["suspect", "convict", "internee"] } },
                    { "name": "language", "in": "query", "schema": { "type": "string", "pattern": "^[a-z]{2,3}$" } },
                    { "name": "life_domain", "in": "query", "schema": { "type": "string" } },
                    { "name": "active_within_days", "in": "query", "description": "only cases with an event in the last N days (recent)", "schema": { "type": "integer", "minimum": 0, "maximum": 3660 } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 500, "default": 50 } },
                    { "name": "cursor", "in": "query", "schema": { "type": "string" } } ],
                "responses": { "200": { "description": "a page of cases" }, "400": problem("invalid parameter"), "401": problem("no or unknown token"), "403": problem("another organisation") } } },
            "/v1/orgs/{org}/quarantine": { "get": {
                "summary": "The organisation's events the log holds but no view applies, with the reason",
                "parameters": [ { "name": "org", "in": "path", "required": true, "schema": { "type": "string" } },
                    { "name": "after", "in": "query", "schema": { "type": "integer", "minimum": 0 } },
                    { "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 100 } } ],
                "responses": { "200": { "description": "quarantined events, oldest first" }, "401": problem("no or unknown token"), "403": problem("another organisation") } } },
            "/v1/orgs/{org}/cases/{case}": { "get": {
                "summary": "One case of the organisation's caseload",
                "parameters": [ org_param, { "name": "case", "in": "path", "required": true, "schema": { "type": "string" } } ],
                "responses": { "200": { "description": "the case" }, "401": problem("no or unknown token"), "403": problem("another organisation"), "404": problem("no such case") } } }
        }
    });
    if let (Some(paths), Value::Object(more)) = (doc.get_mut("paths").and_then(Value::as_object_mut), privacy) {
        paths.extend(more);
    }
    if let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) {
        paths.extend(view_paths());
    }
    crate::audit::openapi_paths(&mut doc, problem);
    Json(doc)
}

/// The paths of the organisation views, the continuity monitor and the statistics.
fn view_paths() -> serde_json::Map<String, Value> {
    let org = json!({ "name": "org", "in": "path", "required": true, "schema": { "type": "string", "pattern": "^[a-z0-9-]{1,32}$" } });
    let limit = |max: i64, default: i64| json!({ "name": "limit", "in": "query", "schema": { "type": "integer", "minimum": 1, "maximum": max, "default": default } });
    let cursor = json!({ "name": "cursor", "in": "query", "description": "next_cursor of the previous page", "schema": { "type": "string" } });
    let page = |what: &str| json!({ "description": format!("a page of {what}: {{ items, next_cursor }}") });
    let org_reads = |what: &str| json!({ "200": page(what), "400": problem("invalid parameter"), "401": problem("no or unknown token"), "403": problem("another organisation or another role") });
    let stats_params = |shared: bool| {
        let mut p = vec![
            json!({ "name": "period", "in": "query", "schema": { "enum": ["month", "quarter", "year"], "default": "month" } }),
            json!({ "name": "from", "in": "query", "description": "first day (default: 1 January of this year)", "schema": { "type": "string", "format": "date" } }),
            json!({ "name": "to", "in": "query", "description": "last day (default: today)", "schema": { "type": "string", "format": "date" } }),
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
            "content": { "application/json": {}, "text/csv": {} } },
        "400": problem("invalid parameter"), "401": problem("no or unknown token"), "403": problem("wrong role or organisation") });
    let paths = json!({
        "/v1/orgs/{org}/cases/{case}/timeline": { "get": {
            "summary": "Every event of one case, in order, with who recorded it; personal fields while the client is not erased",
            "parameters": [ org.clone(), { "name": "case", "in": "path", "required": true, "schema": { "type": "string" } },
                { "name": "type", "in": "query", "schema": { "type": "string" } }, limit(1000, 100), cursor.clone() ],
            "responses": { "200": page("events"), "400": problem("invalid parameter"), "401": problem("no or unknown token"), "403": problem("another organisation"), "404": problem("no such case") } } },
        "/v1/orgs/{org}/referrals": { "get": {
            "summary": "Referrals out (made by the organisation) or in (made to it), with closed-loop stage and age; the receiver never sees the sender's case id or client reference",
            "parameters": [ org.clone(),
                { "name": "direction", "in": "query", "schema": { "enum": ["out", "in"], "default": "out" } },
                { "name": "stage", "in": "query", "schema": { "enum": relais_projections::referrals::STAGES } },
                { "name": "open", "in": "query", "schema": { "type": "boolean" } }, limit(500, 50), cursor.clone() ],
            "responses": org_reads("referrals") } },
        "/v1/orgs/{org}/coming-up": { "get": {
            "summary": "Scheduled releases, prepared furloughs and escorted outings from today (Brussels) to N days ahead",
            "parameters": [ org.clone(),
                { "name": "days", "in": "query", "schema": { "type": "integer", "minimum": 0, "maximum": 366, "default": 14 } },
                { "name": "item", "in": "query", "schema": { "enum": ["release", "leave", "outing"] } }, limit(1000, 100), cursor.clone() ],
            "responses": org_reads("items") } },
        "/v1/orgs/{org}/activities": { "get": {
            "summary": "Group activities the organisation organised, recorded on or is a partner of, with sessions (attendance), evaluations and counts",
            "parameters": [ org.clone(), { "name": "kind", "in": "query", "schema": { "enum": ["formative", "psychosocial", "sociocultural"] } }, limit(500, 50), cursor.clone() ],
            "responses": org_reads("activities") } },
        "/v1/orgs/{org}/activities/{activity}": { "get": {
            "summary": "One activity with the organisation's own participants, dropouts waiting for their feedback conversation, sessions and evaluations",
            "parameters": [ org.clone(), { "name": "activity", "in": "path", "required": true, "schema": { "type": "string" } } ],
            "responses": { "200": { "description": "{ activity, roster, dropouts_waiting_for_feedback }" }, "401": problem("no or unknown token"), "403": problem("another organisation"), "404": problem("no such activity for this organisation") } } },
        "/v1/orgs/{org}/worklist": { "get": {
            "summary": "What needs action now, longest waiting first: referrals to answer, accepted referrals without first contact, releases without after-care, dropouts without feedback",
            "parameters": [ org.clone(),
                { "name": "kind", "in": "query", "schema": { "enum": relais_projections::worklist::KINDS } },
                { "name": "release_days", "in": "query", "schema": { "type": "integer", "minimum": 0, "maximum": 366, "default": 14 } }, limit(1000, 100), cursor.clone() ],
            "responses": org_reads("work items") } },
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
            "responses": { "200": page("alerts"), "400": problem("invalid parameter"), "401": problem("no or unknown token"), "403": problem("not the coordinator role") } } },
        "/v1/monitor/persons": { "get": {
            "summary": "Consented persons by linkage key: organisations helping (status, detention, release, after-care), open referrals, open alerts (role coordinator)",
            "parameters": [ limit(500, 100), cursor ],
            "responses": { "200": page("persons"), "400": problem("invalid parameter"), "401": problem("no or unknown token"), "403": problem("not the coordinator role") } } }
    });
    match paths {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    }
}
