//! The OpenAPI document (`GET /openapi.json`) against what the API does: the same routes as the
//! router, a typed body for every success and a problem for every error, and real answers that
//! match their schemas.

use crate::helpers::*;
use chrono::{TimeZone, Utc};
use relais::startup::ServeRole;
use relais_projections::{ManualClock, Role};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Every route of the router: `router()` in crates/gateway/src/lib.rs and `routes()` in
/// crates/gateway/src/org_views.rs. Axum cannot list its routes: keep this in step (the test
/// also reads those two files and fails when they differ from it).
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("GET", "/v1/catalogue"),
    ("GET", "/v1/catalogue/{event_type}/{version}"),
    ("POST", "/v1/events"),
    ("GET", "/v1/orgs/{org}/cases"),
    ("GET", "/v1/orgs/{org}/cases/{case}"),
    ("GET", "/v1/orgs/{org}/quarantine"),
    ("POST", "/v1/orgs/{org}/clients/{client}/erasure"),
    ("GET", "/v1/orgs/{org}/clients/{client}/export"),
    ("POST", "/v1/orgs/{org}/clients/{client}/key"),
    ("GET", "/v1/audit/events"),
    ("GET", "/v1/audit/public-key"),
    ("GET", "/v1/audit/access"),
    // org_views::routes()
    ("GET", "/v1/orgs/{org}/cases/{case}/timeline"),
    ("GET", "/v1/orgs/{org}/referrals"),
    ("GET", "/v1/orgs/{org}/coming-up"),
    ("GET", "/v1/orgs/{org}/activities"),
    ("GET", "/v1/orgs/{org}/activities/{activity}"),
    ("GET", "/v1/orgs/{org}/worklist"),
    ("GET", "/v1/orgs/{org}/statistics"),
    ("GET", "/v1/statistics"),
    ("GET", "/v1/monitor/alerts"),
    ("GET", "/v1/monitor/persons"),
];

const ROUTER_SOURCE: &str = include_str!("../../crates/gateway/src/lib.rs");
const ORG_VIEWS_SOURCE: &str = include_str!("../../crates/gateway/src/org_views.rs");

const METHODS: &[&str] = &["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// The `.route("path", method(handler)...)` calls of a source file, as (METHOD, path).
fn routes_in_source(source: &str) -> BTreeSet<(String, String)> {
    let mut found = BTreeSet::new();
    for (start, _) in source.match_indices(".route(\"") {
        let call = &source[start + ".route(".len()..];
        // The call's arguments: up to the parenthesis that closes `.route(`.
        let mut depth = 1;
        let end = call
            .char_indices()
            .find(|&(_, c)| {
                depth += match c {
                    '(' => 1,
                    ')' => -1,
                    _ => 0,
                };
                depth == 0
            })
            .map_or(call.len(), |(i, _)| i);
        let call = &call[..end];
        let path = call[1..].split('"').next().unwrap_or_default();
        let handlers = &call[path.len() + 2..];
        for m in METHODS {
            let named = handlers
                .match_indices(&format!("{m}("))
                .any(|(i, _)| i == 0 || !handlers[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_'));
            if named {
                found.insert((m.to_uppercase(), path.to_owned()));
            }
        }
    }
    found
}

/// The operations of the document, as (METHOD, path).
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            if METHODS.contains(&method.as_str()) {
                ops.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    ops
}

/// Each operation of the document: (METHOD path, operation).
fn operations(doc: &Value) -> Vec<(String, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("a path item") {
            if METHODS.contains(&method.as_str()) {
                ops.push((format!("{} {path}", method.to_uppercase()), op));
            }
        }
    }
    ops
}

async fn document(app: &TestApp) -> Value {
    let r = app.http.get(format!("{}/openapi.json", app.address)).send().await.expect("request sent");
    assert_eq!(r.status(), 200);
    let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    assert!(ct.starts_with("application/json"), "{ct}");
    r.json().await.expect("a JSON document")
}

#[tokio::test]
async fn the_openapi_document_lists_exactly_the_routes_of_the_router() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);

    let routes: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| ((*m).to_owned(), (*p).to_owned())).collect();
    assert_eq!(routes.len(), ROUTES.len(), "a route is listed twice");
    let ops = documented(&doc);
    let undocumented: Vec<_> = routes.difference(&ops).collect();
    let unrouted: Vec<_> = ops.difference(&routes).collect();
    assert!(undocumented.is_empty(), "routes missing from openapi.json: {undocumented:?}");
    assert!(unrouted.is_empty(), "operations of openapi.json the router does not have: {unrouted:?}");

    // The list above is the router's: the route calls in its source, and no other way in.
    let mut in_source = routes_in_source(ROUTER_SOURCE);
    in_source.extend(routes_in_source(ORG_VIEWS_SOURCE));
    assert_eq!(in_source, routes, "ROUTES differs from the .route(...) calls of lib.rs and org_views.rs");
    let merges: Vec<&str> = ROUTER_SOURCE.match_indices(".merge(").map(|(i, _)| &ROUTER_SOURCE[i..]).collect();
    assert!(
        merges.iter().all(|m| m.starts_with(".merge(org_views::routes())")) && merges.len() == 1,
        "the router merges another router: add its routes to ROUTES and routes_in_source"
    );
    for other in [".nest(", ".nest_service(", ".route_service("] {
        assert!(!ROUTER_SOURCE.contains(other), "the router uses {other}: add its routes to ROUTES");
    }

    // Each `{name}` of a path is a path parameter of its operations, and nothing else is.
    for (name, op) in operations(&doc) {
        let path = name.split_once(' ').map(|(_, p)| p).unwrap_or_default();
        let in_path: BTreeSet<&str> = path.split('/').filter_map(|s| s.strip_prefix('{')?.strip_suffix('}')).collect();
        let declared: BTreeSet<&str> = op["parameters"]
            .as_array()
            .map(|ps| ps.iter().filter(|p| p["in"] == "path").filter_map(|p| p["name"].as_str()).collect())
            .unwrap_or_default();
        assert_eq!(in_path, declared, "{name}: path parameters");
        for p in op["parameters"].as_array().into_iter().flatten().filter(|p| p["in"] == "path") {
            assert_eq!(p["required"], true, "{name}: path parameter {} is required", p["name"]);
        }
    }
}

/// The component a `$ref` names.
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// Every `$ref` of `value`, with where it is.
fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push((at.to_owned(), v.as_str().unwrap_or_default().to_owned()));
                } else {
                    refs(v, &format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn every_openapi_operation_has_a_typed_success_and_problem_errors() {
    let app = spawn_app().await;
    let doc = document(&app).await;

    let mut all = Vec::new();
    refs(&doc, "", &mut all);
    for (at, reference) in &all {
        assert!(
            reference.starts_with("#/components/schemas/") && resolve(&doc, reference).is_some(),
            "{at}: $ref {reference} does not resolve"
        );
    }

    let mut faults = Vec::new();
    for (name, op) in operations(&doc) {
        let responses = op["responses"].as_object().expect("responses");
        let successes: Vec<_> = responses.iter().filter(|(s, _)| s.starts_with('2')).collect();
        if successes.is_empty() {
            faults.push(format!("{name}: no 2xx response"));
        }
        for (status, response) in successes {
            let content = response["content"].as_object().filter(|c| !c.is_empty());
            let Some(content) = content else {
                faults.push(format!("{name} {status}: no content"));
                continue;
            };
            for (media, m) in content {
                let schema = &m["schema"];
                let named = |s: &Value| s["$ref"].as_str().and_then(|r| resolve(&doc, r)).is_some();
                let by_ref = named(schema)
                    || ["oneOf", "anyOf"]
                        .iter()
                        .any(|k| schema[*k].as_array().is_some_and(|alts| !alts.is_empty() && alts.iter().all(named)));
                if !by_ref {
                    faults.push(format!("{name} {status} {media}: the schema is not a $ref of the components"));
                }
            }
        }
        for (status, response) in responses.iter().filter(|(s, _)| s.starts_with('4') || s.starts_with('5')) {
            let content = response["content"].as_object();
            let problem = content.is_some_and(|c| {
                c.len() == 1 && c["application/problem+json"]["schema"]["$ref"] == "#/components/schemas/Problem"
            });
            if !problem {
                faults.push(format!("{name} {status}: not application/problem+json"));
            }
        }
        let public = op["security"].as_array().is_some_and(Vec::is_empty);
        if !public {
            for status in ["401", "403", "503"] {
                if !responses.contains_key(status) {
                    faults.push(format!("{name}: a route with a token answers {status}, undocumented"));
                }
            }
        }
        let takes_query = op["parameters"].as_array().is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
        if takes_query && !responses.contains_key("400") {
            faults.push(format!("{name}: query parameters but no 400"));
        }
    }
    assert!(faults.is_empty(), "{}", faults.join("\n"));
}

/// A checker of the JSON Schema keywords the document uses, stricter than JSON Schema on one
/// point: an object schema with `properties` and no `additionalProperties` admits no other
/// key (an answer with a field the document does not know is drift).
struct Checker<'a> {
    doc: &'a Value,
}

impl Checker<'_> {
    fn errors(&self, value: &Value, schema: &str) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(value, &json!({ "$ref": format!("#/components/schemas/{schema}") }), schema, false, &mut errors);
        errors
    }

    fn check(&self, v: &Value, schema: &Value, at: &str, open: bool, errors: &mut Vec<String>) {
        if let Some(r) = schema["$ref"].as_str() {
            match resolve(self.doc, r) {
                Some(s) => self.check(v, s, at, open, errors),
                None => errors.push(format!("{at}: unresolved {r}")),
            }
            return;
        }
        if let Some(alternatives) = schema["oneOf"].as_array() {
            let fits = alternatives
                .iter()
                .filter(|alt| {
                    let mut e = Vec::new();
                    self.check(v, alt, at, open, &mut e);
                    e.is_empty()
                })
                .count();
            if fits != 1 {
                errors.push(format!("{at}: matches {fits} of the oneOf alternatives, not one"));
            }
        }
        if let Some(parts) = schema["allOf"].as_array() {
            for part in parts {
                self.check(v, part, at, true, errors);
            }
            if !open && let Some(obj) = v.as_object() {
                let known: BTreeSet<String> = parts.iter().flat_map(|p| self.property_names(p)).collect();
                for k in obj.keys().filter(|k| !known.contains(*k)) {
                    errors.push(format!("{at}: `{k}` is not in the schema"));
                }
            }
        }
        if let Some(t) = schema.get("type") {
            let types: Vec<&str> = match t {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => Vec::new(),
            };
            let fits = types.iter().any(|t| match *t {
                "null" => v.is_null(),
                "boolean" => v.is_boolean(),
                "integer" => v.is_i64() || v.is_u64(),
                "number" => v.is_number(),
                "string" => v.is_string(),
                "array" => v.is_array(),
                "object" => v.is_object(),
                _ => false,
            });
            if !fits {
                errors.push(format!("{at}: {v} is not of type {t}"));
                return;
            }
        }
        if let Some(c) = schema.get("const")
            && c != v
        {
            errors.push(format!("{at}: {v} is not {c}"));
        }
        if let Some(values) = schema["enum"].as_array()
            && !values.contains(v)
        {
            errors.push(format!("{at}: {v} is not one of {}", schema["enum"]));
        }
        if let (Some(format), Some(s)) = (schema["format"].as_str(), v.as_str()) {
            let ok = match format {
                "date-time" => chrono::DateTime::parse_from_rfc3339(s).is_ok(),
                "date" => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok(),
                "uuid" => uuid::Uuid::parse_str(s).is_ok(),
                _ => true,
            };
            if !ok {
                errors.push(format!("{at}: {s:?} is not a {format}"));
            }
        }
        if let (Some(items), Some(values)) = (schema.get("items"), v.as_array()) {
            for (i, item) in values.iter().enumerate() {
                self.check(item, items, &format!("{at}[{i}]"), false, errors);
            }
        }
        let Some(obj) = v.as_object() else { return };
        for required in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !obj.contains_key(required) {
                errors.push(format!("{at}: required `{required}` is missing"));
            }
        }
        let properties = schema["properties"].as_object();
        for (k, value) in obj {
            match (properties.and_then(|p| p.get(k)), schema.get("additionalProperties")) {
                (Some(p), _) => self.check(value, p, &format!("{at}.{k}"), false, errors),
                (None, Some(Value::Bool(false))) => errors.push(format!("{at}: `{k}` is not allowed")),
                (None, Some(extra)) if extra.is_object() => {
                    self.check(value, extra, &format!("{at}.{k}"), false, errors)
                }
                (None, _) if properties.is_some() && !open => {
                    errors.push(format!("{at}: `{k}` is not a property of the schema"))
                }
                _ => {}
            }
        }
    }

    fn property_names(&self, schema: &Value) -> Vec<String> {
        if let Some(s) = schema["$ref"].as_str().and_then(|r| resolve(self.doc, r)) {
            return self.property_names(s);
        }
        schema["properties"].as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default()
    }
}

fn at(y: i32, m: u32, d: u32, h: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).single().expect("a time")
}

fn ev(org: &str, subject: &str, time: &str, event_type: &str, data: Value) -> Value {
    event_at(org, event_type, subject, time, data)
}

#[tokio::test]
async fn real_answers_match_their_openapi_schemas() {
    let clock = ManualClock::new(at(2026, 3, 10, 12));
    let c = clock.clone();
    let app = spawn_app_with_settings(ServeRole::All, move |s| {
        s.clock = Arc::new(c);
        s.clock_tick = std::time::Duration::from_millis(100);
    })
    .await;
    let doc = document(&app).await;
    let checker = Checker { doc: &doc };
    let apo = app.token("apo", Role::Org).await;
    let caw = app.token("caw-brussel", Role::Org).await;
    let coordinator = app.token("coordination", Role::Coordinator).await;
    let auditor = app.token("coordination", Role::Auditor).await;
    let lk = hex::encode(Sha256::digest(b"person-openapi"));

    // A case in detention, consented to the monitor, with a release ahead, an intervention, a
    // referral to caw-brussel (received there), then a transfer while it is open (an alert).
    let case = |time: &str, t: &str, data: Value| ev("apo", "cases/c1", time, t, data);
    let mut events = open_case("apo", "c1", "cl-1");
    events.extend([
        case(
            "2026-03-02T10:00:00Z",
            "relais.detention.started",
            json!({ "client_ref": "cl-1", "legal_status": "convict", "prison": "haren", "started_on": "2026-01-10" }),
        ),
        case(
            "2026-03-02T10:01:00Z",
            "relais.consent.given",
            json!({ "client_ref": "cl-1", "scope": "continuity_monitor", "linkage_key": lk }),
        ),
        case(
            "2026-03-02T10:02:00Z",
            "relais.consent.given",
            json!({ "client_ref": "cl-1", "scope": { "share_with_organisation": "caw-brussel" } }),
        ),
        case(
            "2026-03-02T10:03:00Z",
            "relais.release.scheduled",
            json!({ "client_ref": "cl-1", "kind": "conditional_release", "release_on": "2026-03-20" }),
        ),
        intervention("apo", "c1", "cl-1", "informing"),
        ev(
            "apo",
            "referrals/r1",
            "2026-03-02T11:00:00Z",
            "relais.referral.made",
            json!({
            "client_ref": "cl-1", "destination": { "organisation": "caw-brussel" }, "life_domains": ["housing"],
            "case_id": "c1", "message": "Zoekt woning" }),
        ),
        guidance_requested("apo", "c2", "cl-2"),
    ]);
    app.publish(&apo, &events).await;
    let received = ev(
        "caw-brussel",
        "referrals/r1",
        "2026-03-03T09:00:00Z",
        "relais.referral.received",
        json!({ "client_ref": "caw-1" }),
    );
    app.publish(&caw, &[received]).await;
    let transfer = case(
        "2026-03-04T10:00:00Z",
        "relais.detainee.transferred",
        json!({ "client_ref": "cl-1", "to_prison": "saint_gilles", "transferred_on": "2026-03-04" }),
    );
    app.publish(&apo, &[transfer]).await;
    app.wait_for_views().await;

    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while app.get_json(&coordinator, "/v1/monitor/alerts", 200).await["items"].as_array().is_none_or(Vec::is_empty) {
        assert!(tokio::time::Instant::now() < deadline, "no alert opened");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // (token, path, schema, whether the page must hold items)
    let (apo, caw, coordinator, auditor) = (apo.as_str(), caw.as_str(), coordinator.as_str(), auditor.as_str());
    let reads = [
        (apo, "/v1/orgs/apo/cases", "CasePage", true),
        (apo, "/v1/orgs/apo/cases/c1", "Case", false),
        (apo, "/v1/orgs/apo/cases/c1/timeline", "TimelinePage", true),
        (apo, "/v1/orgs/apo/referrals?direction=out", "ReferralPage", true),
        (caw, "/v1/orgs/caw-brussel/referrals?direction=in", "ReferralPage", true),
        (apo, "/v1/orgs/apo/coming-up", "ComingUpPage", true),
        (apo, "/v1/orgs/apo/worklist", "WorkItemPage", true),
        (caw, "/v1/orgs/caw-brussel/worklist", "WorkItemPage", true),
        (apo, "/v1/orgs/apo/activities", "ActivityPage", false),
        (apo, "/v1/orgs/apo/quarantine", "QuarantinePage", false),
        (apo, "/v1/orgs/apo/statistics?from=2026-01-01", "Statistics", false),
        (apo, "/v1/orgs/apo/clients/cl-1/export", "ClientExport", false),
        (coordinator, "/v1/monitor/alerts", "AlertPage", true),
        (coordinator, "/v1/monitor/persons", "PersonPage", true),
        (coordinator, "/v1/statistics?from=2026-01-01&group_by=organisation", "Statistics", false),
        (auditor, "/v1/audit/access", "AccessPage", true),
        (auditor, "/v1/audit/public-key", "PublicKey", false),
        (apo, "/readyz", "Readiness", false),
        (apo, "/v1/catalogue", "Catalogue", false),
    ];
    let mut faults = Vec::new();
    for (token, path, schema, filled) in reads {
        let answer = app.get_json(token, path, 200).await;
        if filled {
            assert!(answer["items"].as_array().is_some_and(|i| !i.is_empty()), "{path}: no items to check");
        }
        faults.extend(checker.errors(&answer, schema).into_iter().map(|e| format!("GET {path}: {e}")));
    }

    let catalogue = app.get_json(apo, "/v1/catalogue", 200).await;
    let dataschema = catalogue["event_types"][0]["dataschema"].as_str().expect("a dataschema").to_owned();
    faults.extend(checker.errors(&app.get_json(apo, &dataschema, 200).await, "JsonSchema"));

    // The case endpoint answers a CaseAsOf with as_of, and its 200 is oneOf Case, CaseAsOf.
    let case_schema = &doc["paths"]["/v1/orgs/{org}/cases/{case}"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    for path in ["/v1/orgs/apo/cases/c1", "/v1/orgs/apo/cases/c1?as_of=2026-03-03T00:00:00Z&basis=occurred"] {
        let answer = app.get_json(apo, path, 200).await;
        let mut e = Vec::new();
        checker.check(&answer, case_schema, path, false, &mut e);
        faults.extend(e);
    }
    let as_of = app.get_json(auditor, "/v1/orgs/apo/cases/c1?as_of=2026-03-03T00:00:00Z&basis=occurred", 200).await;
    faults.extend(checker.errors(&as_of, "CaseAsOf"));

    let key = app.post_empty(apo, "/v1/orgs/apo/clients/cl-1/key").await;
    assert_eq!(key.status(), 200);
    faults.extend(checker.errors(&key.json().await.expect("JSON"), "ClientKey"));
    let erasure = app.erase(apo, "apo", "cl-2").await;
    assert_eq!(erasure.status(), 202);
    faults.extend(checker.errors(&erasure.json().await.expect("JSON"), "Erasure"));
    faults.extend(checker.errors(&app.get_json(apo, "/v1/orgs/apo/clients/cl-2/export", 200).await, "ClientExport"));
    let stored = app.post_batch(apo, &[intervention("apo", "c1", "cl-1", "informing")]).await;
    assert_eq!(stored.status(), 201);
    faults.extend(checker.errors(&stored.json().await.expect("JSON"), "Stored"));
    let health = app.http.get(format!("{}/healthz", app.address)).send().await.expect("request sent");
    faults.extend(checker.errors(&json!(health.text().await.expect("text")), "Health"));

    // Problems: a parameter's pointer is `?name`; the quarantine's limit is a documented 400.
    for path in ["/v1/orgs/apo/quarantine?limit=0", "/v1/orgs/apo/worklist?kidn=referral_to_answer"] {
        let r = app.get(apo, path).await;
        assert_eq!(r.status(), 400, "{path}");
        let problem: Value = r.json().await.expect("a problem");
        faults.extend(checker.errors(&problem, "Problem").into_iter().map(|e| format!("{path}: {e}")));
        assert!(problem["pointer"].as_str().is_some_and(|p| p.starts_with('?')), "{path}: {problem}");
    }
    assert!(faults.is_empty(), "answers that do not match the document:\n{}", faults.join("\n"));
}
