//! Publishing over HTTP (and directly on NATS) and reading the caseload back.

use crate::helpers::*;
use relais_projections::Role;
use serde_json::{Value, json};

#[tokio::test]
async fn one_event_and_a_batch_are_stored_and_reach_the_caseload() {
    let app = spawn_app().await;
    let token = app.token("apo", Role::Org).await;

    let one = guidance_requested("apo", "case-a", "cl-a");
    let r = app.post_event(&token, &one).await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["events"][0]["id"], one["id"]);
    assert_eq!(body["events"][0]["sequence"], 1);
    assert_eq!(body["events"][0]["duplicate"], false);

    let mut batch = open_case("apo", "case-b", "cl-b");
    batch.extend([
        guidance_accepted("apo", "case-a", "cl-a"),
        intervention("apo", "case-b", "cl-b", "informing"),
        intervention("apo", "case-b", "cl-b", "informing"),
        intervention("apo", "case-a", "cl-a", "planning"),
    ]);
    let r = app.post_batch(&token, &batch).await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.expect("json");
    let seqs: Vec<u64> =
        body["events"].as_array().expect("array").iter().map(|e| e["sequence"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, vec![2, 3, 4, 5, 6, 7]);
    assert_eq!(app.stream_messages().await, 7);

    app.wait_for_projection("caseload").await;
    let r = app.get(&token, "/v1/orgs/apo/cases").await;
    assert_eq!(r.status(), 200);
    let page: Value = r.json().await.expect("json");
    let items = page["items"].as_array().expect("items");
    assert_eq!(items.len(), 2);
    let b = items.iter().find(|c| c["case_id"] == "case-b").expect("case-b");
    assert_eq!(b["client_ref"], "cl-b");
    assert_eq!(b["intervention_count"], 2);
    assert_eq!(b["interventions_by_mode"]["informing"], 2);
    assert_eq!(b["version"], 6);
    let a = items.iter().find(|c| c["case_id"] == "case-a").expect("case-a");
    assert_eq!(a["intervention_count"], 1);
    assert_eq!(a["life_domains"], json!(["housing"]));
}

#[tokio::test]
async fn the_same_id_twice_is_stored_once_and_answered_with_the_original_sequence() {
    let app = spawn_app().await;
    let token = app.token("dsr", Role::Org).await;
    let e = guidance_requested("dsr", "case-1", "cl-1");
    assert_eq!(app.post_event(&token, &e).await.status(), 201);
    let r = app.post_event(&token, &e).await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["events"][0]["duplicate"], true);
    assert_eq!(body["events"][0]["sequence"], 1);

    // In a batch with a new event: the known one is a duplicate, the new one is stored.
    let fresh = intervention("dsr", "case-1", "cl-1", "informing");
    let r = app.post_batch(&token, &[e.clone(), fresh.clone()]).await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["events"][0]["duplicate"], true);
    assert_eq!(body["events"][0]["sequence"], 1);
    assert_eq!(body["events"][1]["duplicate"], false);
    assert_eq!(app.stream_messages().await, 2);
}

#[tokio::test]
async fn an_invalid_event_in_a_batch_rejects_the_batch_with_a_pointer_and_stores_nothing() {
    let app = spawn_app().await;
    let token = app.token("apo", Role::Org).await;
    let mut bad = intervention("apo", "case-1", "cl-1", "informing");
    bad["data"]["mode"] = json!("astrology");
    let batch = vec![guidance_requested("apo", "case-1", "cl-1"), bad];
    let r = app.post_batch(&token, &batch).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: Value = r.json().await.expect("json");
    assert_eq!(problem["pointer"], "/1/data/mode");
    assert_eq!(problem["type"], "urn:relais:problem:invalid-event");
    assert_eq!(app.stream_messages().await, 0);

    // A missing field points at the field itself.
    let mut missing = guidance_requested("apo", "case-1", "cl-1");
    missing["data"].as_object_mut().expect("object").remove("channel");
    let problem: Value = app.post_event(&token, &missing).await.json().await.expect("json");
    assert_eq!(problem["pointer"], "/data/channel");
    // A field that is not allowed (personal data the catalogue does not know) is refused.
    let mut extra = guidance_requested("apo", "case-1", "cl-1");
    extra["data"]["national_number"] = json!("85.07.30-033.61");
    let problem: Value = app.post_event(&token, &extra).await.json().await.expect("json");
    assert_eq!(problem["pointer"], "/data/national_number");
    assert_eq!(app.stream_messages().await, 0);
}

#[tokio::test]
async fn another_organisations_source_is_forbidden_and_stores_nothing() {
    let app = spawn_app().await;
    let token = app.token("apo", Role::Org).await;
    let forged = guidance_requested("dsr", "case-1", "cl-1");
    let r = app.post_event(&token, &forged).await;
    assert_eq!(r.status(), 403);
    let problem: Value = r.json().await.expect("json");
    assert_eq!(problem["pointer"], "/source");
    let r = app.post_batch(&token, &[guidance_requested("apo", "c", "x"), forged]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(app.stream_messages().await, 0);
}

#[tokio::test]
async fn reading_another_organisations_cases_is_forbidden() {
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    let r = app.get(&apo, "/v1/orgs/dsr/cases").await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = app.get(&apo, "/v1/orgs/dsr/cases/case-1").await;
    assert_eq!(r.status(), 403);
    let r = app.get("rls_not-a-token", "/v1/orgs/apo/cases").await;
    assert_eq!(r.status(), 401);
    let r = app.http.get(format!("{}/v1/orgs/apo/cases", app.address)).send().await.expect("sent");
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn bad_requests_get_problem_details_and_change_nothing() {
    let app = spawn_app().await;
    let token = app.token("apo", Role::Org).await;
    let e = guidance_requested("apo", "case-1", "cl-1");
    let r = app.post(&token, "application/json", &e).await;
    assert_eq!(r.status(), 415);
    let huge = Value::Array(vec![e.clone(); 1001]);
    let r = app.post(&token, "application/cloudevents-batch+json", &huge).await;
    assert_eq!(r.status(), 413);
    let r = app
        .http
        .post(format!("{}/v1/events", app.address))
        .bearer_auth(&token)
        .header("content-type", "application/cloudevents+json")
        .body("{not json")
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 400);
    let big_body = "x".repeat(5 * 1024 * 1024);
    let r = app
        .http
        .post(format!("{}/v1/events", app.address))
        .bearer_auth(&token)
        .header("content-type", "application/cloudevents+json")
        .body(big_body)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 413);
    let auditor = app.token("apo", Role::Auditor).await;
    assert_eq!(app.post_event(&auditor, &e).await.status(), 403);
    assert_eq!(app.stream_messages().await, 0);
}

#[tokio::test]
async fn expectedversion_detects_a_concurrent_change() {
    let app = spawn_app().await;
    let token = app.token("apo", Role::Org).await;
    let mut first = guidance_requested("apo", "case-1", "cl-1");
    first["expectedversion"] = json!(0);
    assert_eq!(app.post_event(&token, &first).await.status(), 201);
    let mut stale = intervention("apo", "case-1", "cl-1", "informing");
    stale["expectedversion"] = json!(0);
    let r = app.post_event(&token, &stale).await;
    assert_eq!(r.status(), 409);
    let problem: Value = r.json().await.expect("json");
    assert_eq!(problem["type"], "urn:relais:problem:version-conflict");
    // In a batch, a stale version rejects the whole batch.
    let other = guidance_requested("apo", "case-2", "cl-2");
    let r = app.post_batch(&token, &[other, stale.clone()]).await;
    assert_eq!(r.status(), 409);
    assert_eq!(app.stream_messages().await, 1);
    stale["expectedversion"] = json!(1);
    assert_eq!(app.post_event(&token, &stale).await.status(), 201);
}

/// The case's version is what `expectedversion` must name, even after a quarantined message
/// on the case (the broker counts every message stored on the subject).
#[tokio::test]
async fn the_version_of_a_case_is_its_expected_version_even_after_a_quarantined_message() {
    let app = spawn_app().await;
    let token = app.token("apo", Role::Org).await;
    assert_eq!(app.post_event(&token, &guidance_requested("apo", "case-1", "cl-1")).await.status(), 201);
    // The same request again: stored, then quarantined (the case is already open).
    assert_eq!(app.post_event(&token, &guidance_requested("apo", "case-1", "cl-1")).await.status(), 201);
    app.wait_for_views().await;
    let quarantined: i64 = sqlx::query_scalar("SELECT count(*) FROM quarantine").fetch_one(&app.pool).await.expect("n");
    assert_eq!(quarantined, 1);
    let case = app.get_json(&token, "/v1/orgs/apo/cases/case-1", 200).await;
    assert_eq!(case["version"], 2, "{case}");
    let listed = app.get_json(&token, "/v1/orgs/apo/cases", 200).await;
    assert_eq!(listed["items"][0]["version"], 2, "the list says the same: {listed}");
    let mut accepted = guidance_accepted("apo", "case-1", "cl-1");
    accepted["expectedversion"] = case["version"].clone();
    let r = app.post_event(&token, &accepted).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
}

#[tokio::test]
async fn a_duplicate_published_directly_on_nats_and_over_http_is_stored_once() {
    let app = spawn_app().await;
    let token = app.token("apo", Role::Org).await;
    assert_eq!(app.post_batch(&token, &open_case("apo", "case-1", "cl-1")).await.status(), 201);
    // An NGO's own system publishes directly, with the event id as message id.
    let e = intervention("apo", "case-1", "cl-1", "informing");
    let id = e["id"].as_str().expect("id").to_owned();
    // First over HTTP, to get a correctly sealed payload; then the same bytes directly.
    let r = app.post_event(&token, &e).await;
    assert_eq!(r.status(), 201);
    let stream = app.js.get_stream("RELAIS").await.expect("stream");
    let stored = stream.get_raw_message(3).await.expect("message 3");
    let direct = app
        .js
        .send_publish(
            "relais.ev.apo.cases.case-1",
            async_nats::jetstream::message::PublishMessage::build()
                .payload(stored.payload.clone())
                .message_id(id.as_str()),
        )
        .await
        .expect("published")
        .await
        .expect("acknowledged");
    assert!(direct.duplicate, "the broker knows the id within its window");
    // Over HTTP again, alone and inside a batch.
    let r = app.post_event(&token, &e).await;
    assert_eq!(r.status(), 200);
    let other = guidance_requested("apo", "case-2", "cl-2");
    let r = app.post_batch(&token, &[other, e.clone()]).await;
    assert_eq!(r.status(), 201);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["events"][1]["duplicate"], true);
    assert_eq!(body["events"][1]["sequence"], 3);
    assert_eq!(app.stream_messages().await, 4);

    // Beyond the broker's window (simulated: a direct publish without message id) the
    // validator quarantines the second copy, so no view counts it twice.
    app.js
        .publish("relais.ev.apo.cases.case-1", stored.payload.clone())
        .await
        .expect("published")
        .await
        .expect("acknowledged");
    app.wait_for_projection("caseload").await;
    let (reason,): (String,) =
        sqlx::query_as("SELECT reason FROM quarantine WHERE seq = 5").fetch_one(&app.pool).await.expect("quarantined");
    assert_eq!(reason, "duplicate");
    let case: Value = app.get(&token, "/v1/orgs/apo/cases/case-1").await.json().await.expect("json");
    assert_eq!(case["intervention_count"], 1);
}

#[tokio::test]
async fn a_malformed_or_unsealed_direct_event_is_quarantined_and_the_worker_goes_on() {
    let app = spawn_app().await;
    let token = app.token("apo", Role::Org).await;
    app.js.publish("relais.ev.apo.cases.x", "not postcard".into()).await.expect("sent").await.expect("ack");
    // Personal fields in the clear: a valid envelope whose client_ref was not sealed.
    let (envelope, _) = relais_domain::Envelope::from_cloud_event(
        guidance_requested("apo", "case-9", "cl-9"),
        chrono::Utc::now(),
        "direct",
    )
    .expect("valid");
    let mut data = envelope.data.clone();
    let mut stored = envelope.split_for_storage().0;
    let _ = data.take_personal();
    stored.data = envelope.data.encode();
    let bytes = relais_domain::StoredEvent::V1(stored).encode();
    app.js.publish("relais.ev.apo.cases.case-9", bytes.into()).await.expect("sent").await.expect("ack");
    assert_eq!(app.post_event(&token, &guidance_requested("apo", "case-2", "cl-2")).await.status(), 201);
    app.wait_for_projection("caseload").await;
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT seq, reason FROM quarantine ORDER BY seq").fetch_all(&app.pool).await.expect("rows");
    assert_eq!(rows, vec![(1, "undecodable".to_owned()), (2, "personal-data-in-clear".to_owned())]);
    let page: Value = app.get(&token, "/v1/orgs/apo/cases").await.json().await.expect("json");
    assert_eq!(page["items"].as_array().expect("items").len(), 1);
    // The auditors' replay shows each stored message with its quarantine reason, if any.
    let auditor = app.token("apo", Role::Auditor).await;
    let r = app.get(&auditor, "/v1/audit/events").await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("body");
    let shown: Vec<(u64, String, Option<String>)> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("a JSON line"))
        .filter_map(|l| {
            let kind = l["relaiskind"].as_str()?.to_owned();
            Some((l["sequence"].as_u64()?, kind, l["relaisquarantine"].as_str().map(str::to_owned)))
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            (1, "message".to_owned(), Some("undecodable".to_owned())),
            (2, "event".to_owned(), Some("personal-data-in-clear".to_owned())),
            (3, "event".to_owned(), None),
        ]
    );
}

#[tokio::test]
async fn a_direct_event_with_metadata_or_a_time_the_views_cannot_store_is_quarantined_and_the_views_go_on() {
    let app = spawn_app().await;
    let token = app.token("apo", Role::Org).await;
    for e in open_case("apo", "case-1", "cl-1") {
        assert_eq!(app.post_event(&token, &e).await.status(), 201);
    }
    // Interventions sealed as an organisation's own system would, published straight to the
    // log past the gateway's checks: a NUL in the actor (PostgreSQL refuses it in text), and a
    // time at chrono's last moment (its Brussels date has no next hour). Both pass the rules.
    let (_, mut nul_actor) = sealed_stored(&app, intervention("apo", "case-1", "cl-1", "informing")).await;
    nul_actor.actor = "own\0system".into();
    let (_, mut last_moment) = sealed_stored(&app, intervention("apo", "case-1", "cl-1", "informing")).await;
    last_moment.occurred_at_us = chrono::DateTime::<chrono::Utc>::MAX_UTC.timestamp_micros();
    for stored in [nul_actor, last_moment] {
        let bytes = relais_domain::StoredEvent::V1(stored).encode();
        app.js.publish("relais.ev.apo.cases.case-1", bytes.into()).await.expect("sent").await.expect("ack");
    }
    assert_eq!(app.post_event(&token, &guidance_requested("apo", "case-2", "cl-2")).await.status(), 201);
    app.wait_for_projection("caseload").await;
    let rows = quarantine_rows(&app.pool).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[0].0, rows[0].1.as_str()), (3, "invalid"));
    assert!(rows[0].2.contains("actor"), "{rows:?}");
    assert_eq!((rows[1].0, rows[1].1.as_str()), (4, "invalid"));
    assert!(rows[1].2.contains("/time"), "{rows:?}");
    let page: Value = app.get(&token, "/v1/orgs/apo/cases").await.json().await.expect("json");
    let mut cases: Vec<&str> =
        page["items"].as_array().expect("items").iter().filter_map(|c| c["case_id"].as_str()).collect();
    cases.sort_unstable();
    assert_eq!(cases, vec!["case-1", "case-2"]);
}

#[tokio::test]
async fn personal_fields_are_stored_encrypted_and_trace_context_rides_in_headers() {
    let app = spawn_app().await;
    let token = app.token("apo", Role::Org).await;
    let mut e = guidance_requested("apo", "case-1", "cl-distinctive-4711");
    e["data"]["note"] = json!("a very distinctive note 0815");
    assert_eq!(app.post_event(&token, &e).await.status(), 201);
    let stream = app.js.get_stream("RELAIS").await.expect("stream");
    let stored = stream.get_raw_message(1).await.expect("message");
    let haystack = String::from_utf8_lossy(&stored.payload);
    assert!(!haystack.contains("distinctive"), "personal fields are sealed in the stored bytes");
    assert_eq!(stored.headers.get("Relais-Type").map(|v| v.as_str()), Some("relais.guidance.requested"));
    assert_eq!(stored.headers.get("Nats-Msg-Id").map(|v| v.as_str()), e["id"].as_str());
    let tp = stored.headers.get("traceparent").map(|v| v.as_str().to_owned()).expect("traceparent header");
    assert!(tp.starts_with("00-") && tp.len() == 55, "W3C traceparent: {tp}");
}

#[tokio::test]
async fn the_catalogue_lists_every_type_with_schema_classes_and_a_valid_example() {
    let app = spawn_app().await;
    let token = app.token("apo", Role::Org).await;
    let catalogue: Value =
        app.http.get(format!("{}/v1/catalogue", app.address)).send().await.expect("sent").json().await.expect("json");
    let types = catalogue["event_types"].as_array().expect("types");
    assert!(types.len() >= 35, "the whole vocabulary: {}", types.len());
    for t in types {
        for (name, prop) in t["schema"]["properties"].as_object().expect("properties") {
            let class = prop["x-relais-class"].as_str().unwrap_or_default();
            assert!(class == "statistical" || class == "personal", "{}.{name}: {class}", t["type"]);
        }
        assert!(t["titles"]["nl"].is_string() && t["titles"]["fr"].is_string() && t["titles"]["en"].is_string());
    }
    // Every example is accepted as it is (by its example organisation).
    let mut tokens = std::collections::HashMap::new();
    for t in types {
        let example = &t["example"];
        let org = example["source"].as_str().expect("source").trim_start_matches("/orgs/").to_owned();
        if !tokens.contains_key(&org) {
            tokens.insert(org.clone(), app.token(&org, Role::Org).await);
        }
        let mut e = example.clone();
        e["id"] = json!(uuid::Uuid::new_v4().to_string());
        let r = app.post_event(&tokens[&org], &e).await;
        let status = r.status();
        if t["publishable"] == false {
            // Erasures are recorded by Relais itself (POST .../clients/{client}/erasure).
            assert_eq!(status, 400, "{}", t["type"]);
            continue;
        }
        assert_eq!(status, 201, "{}: {}", t["type"], r.text().await.unwrap_or_default());
    }
    // Every version a type is read at has its schema where its `dataschema` points, legacy
    // versions too; others are a 404.
    let schema_at = |path: String| {
        let http = app.http.clone();
        async move { http.get(path).send().await.expect("sent") }
    };
    for t in types {
        let name = t["type"].as_str().expect("type");
        let mut versions = vec![t["version"].as_u64().expect("version")];
        versions.extend(t["legacy_versions"].as_array().expect("legacy").iter().map(|v| v.as_u64().expect("v")));
        for v in versions {
            let r = schema_at(format!("{}/v1/catalogue/{name}/v{v}", app.address)).await;
            assert_eq!(r.status(), 200, "{name} v{v}");
            let schema: Value = r.json().await.expect("json");
            assert!(schema["properties"].is_object(), "{name} v{v}: {schema}");
        }
        let r = schema_at(format!("{}/v1/catalogue/{name}/v99", app.address)).await;
        assert_eq!(r.status(), 404);
    }
    let intervention = types.iter().find(|t| t["type"] == "relais.intervention.recorded").expect("type");
    assert_eq!(intervention["legacy_versions"], json!([1]), "a legacy version is exercised above");
    drop(token);
    let openapi: Value =
        app.http.get(format!("{}/openapi.json", app.address)).send().await.expect("sent").json().await.expect("json");
    assert_eq!(openapi["openapi"], "3.1.0");
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let r = app.http.get(format!("{}/healthz", app.address)).send().await.expect("sent");
    assert_eq!(r.status(), 200);
    let r = app.http.get(format!("{}/readyz", app.address)).send().await.expect("sent");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn an_event_that_breaks_a_rule_is_quarantined_with_its_reason_and_listed_for_its_organisation() {
    let app = spawn_app().await;
    let token = app.token("sireas", Role::Org).await;
    // An intervention on a case that was never accepted.
    assert_eq!(app.post_event(&token, &guidance_requested("sireas", "c-1", "cl-1")).await.status(), 201);
    assert_eq!(app.post_event(&token, &intervention("sireas", "c-1", "cl-1", "informing")).await.status(), 201);
    // Then accepted, and the intervention is applied.
    assert_eq!(app.post_event(&token, &guidance_accepted("sireas", "c-1", "cl-1")).await.status(), 201);
    assert_eq!(app.post_event(&token, &intervention("sireas", "c-1", "cl-1", "planning")).await.status(), 201);
    // A referral to another service without the client's consent to share with it.
    let referral = event(
        "sireas",
        "relais.referral.made",
        "referrals/r-1",
        json!({ "client_ref": "cl-1", "destination": { "organisation": "apo" }, "life_domains": ["housing"], "case_id": "c-1" }),
    );
    assert_eq!(app.post_event(&token, &referral).await.status(), 201);
    app.wait_for_projection("caseload").await;

    let listed: Value = app.get(&token, "/v1/orgs/sireas/quarantine").await.json().await.expect("json");
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{listed}");
    assert_eq!(items[0]["seq"], 2);
    assert_eq!(items[0]["reason"], "rule");
    assert_eq!(items[1]["seq"], 5);
    assert_eq!(items[1]["reason"], "rule");
    assert!(items[1]["detail"].as_str().unwrap_or_default().contains("consent"), "{}", items[1]["detail"]);
    let case: Value = app.get(&token, "/v1/orgs/sireas/cases/c-1").await.json().await.expect("json");
    assert_eq!(case["intervention_count"], 1);
    assert_eq!(case["interventions_by_mode"], json!({ "planning": 1 }));
    // Another organisation sees nothing of it.
    let apo = app.token("apo", Role::Org).await;
    assert_eq!(app.get(&apo, "/v1/orgs/sireas/quarantine").await.status(), 403);
    let own: Value = app.get(&apo, "/v1/orgs/apo/quarantine").await.json().await.expect("json");
    assert_eq!(own["items"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn a_case_is_one_clients_and_its_consent_carries_no_one_elses_data() {
    let app = spawn_app().await;
    let token = app.token("sireas", Role::Org).await;
    app.publish(&token, &open_case("sireas", "c-1", "cl-1")).await;
    let consent = event(
        "sireas",
        "relais.consent.given",
        "cases/c-1",
        json!({ "client_ref": "cl-1", "scope": { "share_with_organisation": "apo" } }),
    );
    app.publish(&token, &[consent]).await;
    // Another client's intervention on cl-1's case, and a referral of another client made
    // on cl-1's consent: both stored, both quarantined by the validator.
    let other = intervention("sireas", "c-1", "cl-2", "informing");
    let referral = event(
        "sireas",
        "relais.referral.made",
        "referrals/r-1",
        json!({ "client_ref": "cl-2", "destination": { "organisation": "apo" }, "life_domains": ["housing"], "case_id": "c-1" }),
    );
    assert_eq!(app.post_batch(&token, &[other, referral]).await.status(), 201);
    app.wait_for_views().await;
    let listed: Value = app.get(&token, "/v1/orgs/sireas/quarantine").await.json().await.expect("json");
    let items = listed["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{listed}");
    for item in items {
        assert_eq!(item["reason"], "rule");
        assert!(item["detail"].as_str().unwrap_or_default().contains("another client"), "{item}");
    }
    let case: Value = app.get(&token, "/v1/orgs/sireas/cases/c-1").await.json().await.expect("json");
    assert_eq!(case["intervention_count"], 0);
    let apo = app.token("apo", Role::Org).await;
    let incoming: Value = app.get(&apo, "/v1/orgs/apo/referrals?direction=in").await.json().await.expect("json");
    assert_eq!(incoming["items"], json!([]), "nothing reached the receiver");
}

#[tokio::test]
async fn a_direct_event_naming_an_organisation_not_in_the_registry_is_quarantined() {
    let app = spawn_app().await;
    let token = app.token("sireas", Role::Org).await;
    app.publish(&token, &open_case("sireas", "c-1", "cl-1")).await;
    // Over HTTP the gateway refuses it; published directly, the validator does.
    let share = |org: &str| {
        event(
            "sireas",
            "relais.consent.given",
            "cases/c-1",
            json!({ "client_ref": "cl-1", "scope": { "share_with_organisation": org } }),
        )
    };
    assert_eq!(app.post_event(&token, &share("ghost")).await.status(), 400);
    for org in ["ghost", "apo"] {
        let (_, stored) = sealed_stored(&app, share(org)).await;
        let bytes = relais_domain::StoredEvent::V1(stored).encode();
        app.js.publish("relais.ev.sireas.cases.c-1", bytes.into()).await.expect("sent").await.expect("ack");
    }
    app.wait_for_views().await;
    let quarantined = quarantine_rows(&app.pool).await;
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!(quarantined[0].1, "invalid");
    assert!(quarantined[0].2.contains("\"ghost\""), "{quarantined:?}");
    // The consent to share with a registered organisation was applied.
    let referral = event(
        "sireas",
        "relais.referral.made",
        "referrals/r-1",
        json!({ "client_ref": "cl-1", "destination": { "organisation": "apo" }, "life_domains": ["housing"], "case_id": "c-1" }),
    );
    app.publish(&token, &[referral]).await;
    app.wait_for_views().await;
    assert_eq!(quarantine_rows(&app.pool).await.len(), 1);
}

#[tokio::test]
async fn concurrent_batches_for_the_same_new_clients_in_opposite_orders_are_all_stored() {
    // Two requests creating data keys for the same new clients, listed in opposite orders,
    // must wait for each other, not deadlock (a 500 for one of them).
    let app = spawn_app().await;
    let token = app.token("apo", Role::Org).await;
    for round in 0..4 {
        let clients: Vec<String> = (0..60).map(|i| format!("ap-r{round}-{i}")).collect();
        let forward: Vec<Value> =
            clients.iter().enumerate().map(|(i, c)| guidance_requested("apo", &format!("f{round}-{i}"), c)).collect();
        let backward: Vec<Value> = clients
            .iter()
            .enumerate()
            .rev()
            .map(|(i, c)| guidance_requested("apo", &format!("b{round}-{i}"), c))
            .collect();
        let (a, b) = tokio::join!(app.post_batch(&token, &forward), app.post_batch(&token, &backward));
        assert_eq!(a.status(), 201, "round {round}: {}", a.text().await.unwrap_or_default());
        assert_eq!(b.status(), 201, "round {round}: {}", b.text().await.unwrap_or_default());
    }
    // One key per client, whichever request created it.
    let keys: i64 = sqlx::query_scalar("SELECT count(*) FROM client_keys WHERE org_id = 'apo'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(keys, 240);
    assert_eq!(app.stream_messages().await, 480);
}

#[tokio::test]
async fn the_gateway_s_early_ledger_record_keeps_the_first_sequence_of_an_id() {
    // Given an id recorded early at sequence 7 (the gateway, after the broker stored it),
    // when it is recorded again at 9 (a later record of the same id), then the ledger keeps 7.
    let app = spawn_app().await;
    let id = uuid::Uuid::new_v4();
    let org = vec!["dsr".to_owned()];
    relais_projections::ledger::record_early(&app.pool, &[id], &[7], &org).await.expect("recorded");
    relais_projections::ledger::record_early(&app.pool, &[id], &[9], &org).await.expect("recorded again");
    let known = relais_projections::ledger::find(&app.pool, &[id]).await.expect("found");
    assert_eq!(known.get(&id).map(|r| r.sequence), Some(7));
}

/// A batch of `n` new cases of apo.
fn new_cases(n: usize, tag: &str) -> Vec<Value> {
    (0..n).map(|i| guidance_requested("apo", &format!("{tag}-{i}"), &format!("cl-{tag}-{i}"))).collect()
}

#[tokio::test]
async fn a_batch_the_broker_cannot_take_now_is_a_503_that_stored_nothing() {
    let app = spawn_app().await;
    let token = app.token("apo", Role::Org).await;
    // Another publisher holds every atomic batch the stream allows open (50 by default).
    let other = async_nats::connect(&app.settings.nats_url).await.expect("connected");
    for i in 0..50 {
        let mut h = async_nats::HeaderMap::new();
        h.insert(async_nats::header::NATS_BATCH_ID, format!("held-{i}").as_str());
        h.insert(async_nats::header::NATS_BATCH_SEQUENCE, "1");
        other.publish_with_headers("relais.ev.apo.cases.held", h, "held".into()).await.expect("sent");
    }
    other.flush().await.expect("flushed");
    let r = app.post_batch(&token, &new_cases(3, "busy")).await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: Value = r.json().await.expect("json");
    assert_eq!(problem["type"], "urn:relais:problem:unavailable");
    assert!(problem["detail"].as_str().is_some_and(|d| d.contains("nothing was stored")), "{problem}");
    assert_eq!(app.stream_messages().await, 0);
}

#[tokio::test]
async fn batches_posted_while_the_broker_is_down_are_answered_in_bounded_time() {
    let mut app = spawn_app().await;
    let token = app.token("apo", Role::Org).await;
    assert_eq!(app.post_batch(&token, &new_cases(2, "before")).await.status(), 201);
    app.nats.stop();
    // More messages than the NATS client queues while it reconnects (2,048): without a bound,
    // the later batches would wait for the broker's return.
    let posts = (0..4).map(|b| {
        let (app, token) = (&app, &token);
        async move { app.post_batch(token, &new_cases(700, &format!("down{b}"))).await }
    });
    // Each batch has 10 s to be handed to the client and 10 s for its acknowledgement.
    let answers = tokio::time::timeout(std::time::Duration::from_secs(60), futures::future::join_all(posts))
        .await
        .expect("every batch is answered while the broker is down");
    for r in answers {
        assert_eq!(r.status(), 503);
        let problem: Value = r.json().await.expect("json");
        assert_eq!(problem["type"], "urn:relais:problem:unavailable", "{problem}");
    }
}

#[tokio::test]
async fn a_retried_event_with_an_expected_version_whose_first_attempt_was_stored_is_a_duplicate() {
    // No validator: the ledger learns nothing but the gateway's early record.
    let app = spawn_app_with(relais::startup::ServeRole::Gateway).await;
    let token = app.token("apo", Role::Org).await;
    let mut first = guidance_requested("apo", "case-1", "cl-1");
    first["expectedversion"] = json!(0);
    assert_eq!(app.post_event(&token, &first).await.status(), 201);
    // The first answer was lost, and with it the early ledger record (it is written after the
    // answer): only the broker knows the event.
    let id = uuid::Uuid::parse_str(first["id"].as_str().expect("id")).expect("uuid");
    lose_ledger_record(&app, id, 1).await;
    // The retry.
    let r = app.post_event(&token, &first).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.expect("json");
    assert_eq!(answer["events"][0]["duplicate"], true);
    assert_eq!(answer["events"][0]["sequence"], 1);
    assert_eq!(app.stream_messages().await, 1);
    // A real conflict is still one: the same version expected by another event.
    let mut other = guidance_requested("apo", "case-1", "cl-1");
    other["expectedversion"] = json!(0);
    assert_eq!(app.post_event(&token, &other).await.status(), 409);
    // And so is a version no subject can reach (the look along the subject starts past it).
    other["expectedversion"] = json!(u64::MAX);
    assert_eq!(app.post_event(&token, &other).await.status(), 409);
    assert_eq!(app.stream_messages().await, 1);
}

#[tokio::test]
async fn a_copy_stored_before_the_one_the_gateway_recorded_is_the_one_the_views_count() {
    // No projector yet: the ledger knows only what the gateway records.
    let app = spawn_app_with(relais::startup::ServeRole::Gateway).await;
    let token = app.token("apo", Role::Org).await;
    assert_eq!(app.post_batch(&token, &open_case("apo", "case-1", "cl-1")).await.status(), 201);
    // An organisation's system publishes an intervention directly, without a message id
    // (or beyond the broker's window), then posts the same event over HTTP.
    let e = intervention("apo", "case-1", "cl-1", "informing");
    let (envelope, stored) = sealed_stored(&app, e.clone()).await;
    let bytes = relais_domain::StoredEvent::V1(stored).encode();
    app.js.publish("relais.ev.apo.cases.case-1", bytes.into()).await.expect("sent").await.expect("ack");
    let r = app.post_event(&token, &e).await;
    assert_eq!(r.status(), 201);
    let answer: Value = r.json().await.expect("json");
    assert_eq!(answer["events"][0]["sequence"], 4);

    // The projector judges the copies in order: the first (3) counts, the second is the duplicate.
    let projector = relais::startup::Application::build(&app.settings, relais::startup::ServeRole::Projector)
        .await
        .expect("projector");
    let stop = projector.shutdown_token();
    tokio::spawn(projector.run_until_stopped());
    app.wait_for_projection("caseload").await;
    let quarantined = quarantine_rows(&app.pool).await;
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!((quarantined[0].0, quarantined[0].1.as_str()), (4, "duplicate"));
    assert!(quarantined[0].2.ends_with("sequence 3"), "{quarantined:?}");
    let known = relais_projections::ledger::find(&app.pool, &[envelope.id]).await.expect("ledger");
    assert_eq!(known.get(&envelope.id).map(|r| r.sequence), Some(3));
    let case: Value = app.get(&token, "/v1/orgs/apo/cases/case-1").await.json().await.expect("json");
    assert_eq!(case["intervention_count"], 1);
    stop.cancel();
}

#[tokio::test]
async fn the_gateway_and_the_validator_recording_the_same_ids_at_once_both_succeed() {
    let app = spawn_app().await;
    // The gateway records what it stored while the validator records the same rows with its
    // verdicts: neither insert may fail on the other's rows (nor deadlock).
    for round in 0..30i64 {
        let ids: Vec<uuid::Uuid> = (0..500).map(|_| uuid::Uuid::new_v4()).collect();
        let seqs: Vec<i64> = (0..500).map(|i| 1_000_000 + round * 1000 + i).collect();
        let orgs = vec!["apo".to_owned(); ids.len()];
        let mut conn = app.pool.acquire().await.expect("connection");
        let (early, validator) = tokio::join!(
            relais_projections::ledger::record_early(&app.pool, &ids, &seqs, &orgs),
            relais_projections::ledger::record(&mut conn, &ids, &seqs, &orgs),
        );
        early.expect("the gateway's record");
        validator.expect("the validator's record");
    }
}

#[tokio::test]
async fn a_batch_repeating_the_id_of_a_quarantined_direct_event_answers_it_as_a_duplicate() {
    let app = spawn_app().await;
    let token = app.token("apo", Role::Org).await;
    // An organisation's system publishes an event directly, with its id as message id but its
    // personal fields in the clear: the validator quarantines it (its id is taken all the same).
    let x = guidance_requested("apo", "case-x", "cl-x");
    let (envelope, _) =
        relais_domain::Envelope::from_cloud_event(x.clone(), chrono::Utc::now(), "own-system").expect("valid");
    let mut stored = envelope.split_for_storage().0;
    stored.data = envelope.data.encode();
    let bytes = relais_domain::StoredEvent::V1(stored).encode();
    let id = envelope.id.to_string();
    app.js
        .send_publish(
            "relais.ev.apo.cases.case-x",
            async_nats::jetstream::message::PublishMessage::build().payload(bytes.into()).message_id(id.as_str()),
        )
        .await
        .expect("published")
        .await
        .expect("acknowledged");
    // The same id in a batch, which the broker refuses whole while the id is in its window.
    let y = guidance_requested("apo", "case-y", "cl-y");
    let r = app.post_batch(&token, &[x, y]).await;
    assert_eq!(r.status(), 201);
    let answer: Value = r.json().await.expect("json");
    assert_eq!(answer["events"][0]["duplicate"], true);
    assert_eq!(answer["events"][0]["sequence"], 1);
    assert_eq!(answer["events"][1]["duplicate"], false);
    assert_eq!(answer["events"][1]["sequence"], 2);
    app.wait_for_projection("caseload").await;
    let reasons: Vec<(i64, String)> =
        sqlx::query_as("SELECT seq, reason FROM quarantine ORDER BY seq").fetch_all(&app.pool).await.expect("rows");
    assert_eq!(reasons, vec![(1, "personal-data-in-clear".to_owned())]);
}

/// Asserts that a post was refused because an event's id is another organisation's.
async fn assert_id_taken(r: reqwest::Response, pointer: &str) {
    assert_eq!(r.status(), 409);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let problem: Value = r.json().await.expect("json");
    assert_eq!(problem["type"], "urn:relais:problem:id-taken", "{problem}");
    assert_eq!(problem["pointer"], pointer, "{problem}");
}

#[tokio::test]
async fn an_id_another_organisation_stored_is_refused_never_answered_as_stored() {
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    let dsr = app.token("dsr", Role::Org).await;
    let with_id = |mut e: Value, id: &Value| {
        e["id"] = id.clone();
        e
    };

    // An id the ledger holds: apo's event, posted and judged.
    let recorded = guidance_requested("apo", "case-1", "cl-1");
    assert_eq!(app.post_event(&apo, &recorded).await.status(), 201);
    app.wait_for_views().await;
    let batch = [
        guidance_requested("dsr", "case-1", "cl-1"),
        with_id(guidance_requested("dsr", "case-2", "cl-2"), &recorded["id"]),
    ];
    assert_id_taken(app.post_batch(&dsr, &batch).await, "/1/id").await;
    assert_eq!(app.stream_messages().await, 1, "nothing of the batch is stored");

    // An id of a quarantined message: apo's own system publishes directly an intervention on a
    // case it never opened, with its id as message id; the validator quarantines it.
    let (envelope, stored) = sealed_stored(&app, intervention("apo", "case-9", "cl-9", "informing")).await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, envelope.id.to_string().as_str());
    let bytes = relais_domain::StoredEvent::V1(stored).encode();
    app.js
        .publish_with_headers("relais.ev.apo.cases.case-9", headers, bytes.into())
        .await
        .expect("sent")
        .await
        .expect("ack");
    app.wait_for_views().await;
    assert_eq!(quarantine_rows(&app.pool).await.len(), 1);
    let quarantined_id = json!(envelope.id.to_string());
    // In a batch, the broker refuses the whole batch and the quarantine names the id's owner.
    let batch = [
        guidance_requested("dsr", "case-3", "cl-3"),
        with_id(guidance_requested("dsr", "case-4", "cl-4"), &quarantined_id),
    ];
    assert_id_taken(app.post_batch(&dsr, &batch).await, "/1/id").await;
    // Alone, the broker acknowledges it as a duplicate of the stored copy, which is apo's.
    let alone = with_id(guidance_requested("dsr", "case-5", "cl-5"), &quarantined_id);
    assert_id_taken(app.post_event(&dsr, &alone).await, "/id").await;
    assert_eq!(app.stream_messages().await, 2, "dsr stored nothing");

    // apo's own retries are still duplicates.
    let r = app.post_event(&apo, &recorded).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.expect("json");
    assert_eq!(
        (answer["events"][0]["duplicate"].clone(), answer["events"][0]["sequence"].clone()),
        (json!(true), json!(1))
    );
}

/// Waits until the ledger holds `id` at `sequence` (the gateway records after its answer).
async fn wait_for_ledger(app: &TestApp, id: uuid::Uuid, sequence: u64) {
    for _ in 0..500 {
        let known = relais_projections::ledger::find(&app.pool, &[id]).await.expect("ledger");
        if known.get(&id).map(|r| r.sequence) == Some(sequence) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the ledger never held {id} at {sequence}");
}

/// Deletes the ledger's record of `id` once it holds it at `sequence`: a crash right after the
/// gateway's answer lost its early record.
async fn lose_ledger_record(app: &TestApp, id: uuid::Uuid, sequence: u64) {
    wait_for_ledger(app, id, sequence).await;
    let deleted = sqlx::query("DELETE FROM event_ledger WHERE event_id = $1")
        .bind(id)
        .execute(&app.pool)
        .await
        .expect("deleted")
        .rows_affected();
    assert_eq!(deleted, 1);
}

/// Publishes an organisation's event straight to the log, sealed as its own system would,
/// without a message id; returns its envelope and sequence.
async fn publish_directly(app: &TestApp, event: Value) -> (relais_domain::Envelope, u64) {
    let (envelope, stored) = sealed_stored(app, event).await;
    let subject = relais_eventlog::subjects::event_subject(&envelope.org, &envelope.subject);
    let bytes = relais_domain::StoredEvent::V1(stored).encode();
    let ack = app.js.publish(subject, bytes.into()).await.expect("sent").await.expect("ack");
    (envelope, ack.sequence)
}

#[tokio::test]
async fn a_later_copy_the_gateway_records_while_the_validator_records_the_first_is_still_a_duplicate() {
    let app = spawn_app_with(relais::startup::ServeRole::Gateway).await;
    let token = app.token("apo", Role::Org).await;
    assert_eq!(app.post_batch(&token, &open_case("apo", "case-1", "cl-1")).await.status(), 201);
    let e = intervention("apo", "case-1", "cl-1", "informing");
    let (envelope, first) = publish_directly(&app, e.clone()).await;
    // The validator's record of the first copy waits, before its insert, on a lock the test
    // holds: the gateway stores a second copy and records it meanwhile, unseen by the
    // validator's statement.
    let lock = hold_ledger_inserts(&app.pool, &format!("NEW.seq = {first}")).await;
    let stop = start_projector(&app).await;
    wait_for_a_held_ledger_insert(&app.pool).await;
    let r = app.post_event(&token, &e).await;
    assert_eq!(r.status(), 201);
    let answer: Value = r.json().await.expect("json");
    assert_eq!(answer["events"][0]["sequence"], first + 1);
    wait_for_ledger(&app, envelope.id, first + 1).await;
    release_ledger_inserts(lock).await;

    app.wait_for_projection("caseload").await;
    let quarantined = quarantine_rows(&app.pool).await;
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!((quarantined[0].0, quarantined[0].1.as_str()), (first as i64 + 1, "duplicate"));
    let known = relais_projections::ledger::find(&app.pool, &[envelope.id]).await.expect("ledger");
    assert_eq!(known.get(&envelope.id).map(|r| r.sequence), Some(first));
    let case: Value = app.get(&token, "/v1/orgs/apo/cases/case-1").await.json().await.expect("json");
    assert_eq!(case["intervention_count"], 1);
    stop.cancel();
}

#[tokio::test]
async fn an_id_first_stored_by_another_organisation_stays_theirs_when_the_gateway_recorded_a_later_copy() {
    let app = spawn_app_with(relais::startup::ServeRole::Gateway).await;
    let (apo, dsr) = (app.token("apo", Role::Org).await, app.token("dsr", Role::Org).await);
    assert_eq!(app.post_batch(&dsr, &open_case("dsr", "case-d", "cl-d")).await.status(), 201);
    // dsr's system publishes an event directly, without a message id; apo then posts an event
    // with the same id, which the broker stores as new and the gateway records as apo's.
    let theirs = intervention("dsr", "case-d", "cl-d", "informing");
    let (envelope, first) = publish_directly(&app, theirs.clone()).await;
    let mut mine = intervention("apo", "case-a", "cl-a", "informing");
    mine["id"] = theirs["id"].clone();
    let r = app.post_event(&apo, &mine).await;
    assert_eq!(r.status(), 201);
    let answer: Value = r.json().await.expect("json");
    assert_eq!(answer["events"][0]["sequence"], first + 1);
    wait_for_ledger(&app, envelope.id, first + 1).await;

    let stop = start_projector(&app).await;
    app.wait_for_projection("caseload").await;
    let known = relais_projections::ledger::find(&app.pool, &[envelope.id]).await.expect("ledger");
    let recorded = known.get(&envelope.id).expect("recorded");
    assert_eq!((recorded.sequence, recorded.org.as_str()), (first, "dsr"));
    let quarantined = quarantine_rows(&app.pool).await;
    assert_eq!((quarantined[0].0, quarantined[0].1.as_str()), (first as i64 + 1, "duplicate"), "{quarantined:?}");
    // The id is dsr's: apo is told so, dsr that its event is stored where it is.
    let r = app.post_event(&apo, &mine).await;
    assert_eq!(r.status(), 409);
    let problem: Value = r.json().await.expect("json");
    assert_eq!(problem["type"], "urn:relais:problem:id-taken", "{problem}");
    let r = app.post_event(&dsr, &theirs).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.expect("json");
    assert_eq!(
        (answer["events"][0]["duplicate"].clone(), answer["events"][0]["sequence"].clone()),
        (json!(true), json!(first))
    );
    stop.cancel();
}

#[tokio::test]
async fn an_id_whose_first_copy_was_quarantined_stays_taken_when_the_gateways_record_is_lost() {
    let app = spawn_app_with_settings(relais::startup::ServeRole::Gateway, |s| {
        s.stream.duplicate_window = std::time::Duration::from_secs(1);
    })
    .await;
    let token = app.token("apo", Role::Org).await;
    // An intervention on a case not opened yet: stored, then quarantined by the rules.
    let e = intervention("apo", "case-1", "cl-1", "informing");
    assert_eq!(app.post_event(&token, &e).await.status(), 201);
    // The gateway's early record is lost (a crash right after the answer).
    let id = uuid::Uuid::parse_str(e["id"].as_str().expect("id")).expect("uuid");
    lose_ledger_record(&app, id, 1).await;
    let stop = start_projector(&app).await;
    app.wait_for_projection("caseload").await;
    assert_eq!(quarantine_rows(&app.pool).await[0].1, "rule");
    assert_eq!(app.post_batch(&token, &open_case("apo", "case-1", "cl-1")).await.status(), 201);
    // Past the broker's window, the client's outbox retries the event: as in a run where the
    // record was kept, it is the copy already stored, and it is not applied.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let r = app.post_event(&token, &e).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.expect("json");
    assert_eq!(
        (answer["events"][0]["duplicate"].clone(), answer["events"][0]["sequence"].clone()),
        (json!(true), json!(1))
    );
    app.wait_for_projection("caseload").await;
    assert_eq!(app.stream_messages().await, 3);
    let case: Value = app.get(&token, "/v1/orgs/apo/cases/case-1").await.json().await.expect("json");
    assert_eq!(case["intervention_count"], 0);
    stop.cancel();
}

#[tokio::test]
async fn a_message_whose_message_id_is_not_its_events_id_is_quarantined_and_blocks_no_batch() {
    let app = spawn_app().await;
    let token = app.token("apo", Role::Org).await;
    // A direct publisher deduplicates by one id and stores an event with another.
    let x = guidance_requested("apo", "case-x", "cl-x");
    let stored_event = guidance_requested("apo", "case-z", "cl-z");
    let (_, stored) = sealed_stored(&app, stored_event).await;
    let bytes = relais_domain::StoredEvent::V1(stored).encode();
    let header_id = x["id"].as_str().expect("id").to_owned();
    app.js
        .send_publish(
            "relais.ev.apo.cases.case-z",
            async_nats::jetstream::message::PublishMessage::build()
                .payload(bytes.into())
                .message_id(header_id.as_str()),
        )
        .await
        .expect("published")
        .await
        .expect("acknowledged");
    app.wait_for_projection("caseload").await;
    let quarantined = quarantine_rows(&app.pool).await;
    assert_eq!((quarantined[0].0, quarantined[0].1.as_str()), (1, "message-id-mismatch"), "{quarantined:?}");
    // A batch repeating the header's id, which the broker refuses whole while it is in its
    // window: answered at once, as an id taken (no event with it is stored), nothing stored.
    let y = guidance_requested("apo", "case-y", "cl-y");
    let r = tokio::time::timeout(std::time::Duration::from_secs(5), app.post_batch(&token, &[x.clone(), y]))
        .await
        .expect("answered without waiting out the broker's window");
    assert_eq!(r.status(), 409);
    let problem: Value = r.json().await.expect("json");
    assert_eq!(problem["type"], "urn:relais:problem:id-taken", "{problem}");
    assert_eq!(problem["pointer"], "/0/id", "{problem}");
    // Alone, the broker acknowledges it as a duplicate of that message: taken too.
    let r = app.post_event(&token, &x).await;
    assert_eq!(r.status(), 409);
    let problem: Value = r.json().await.expect("json");
    assert_eq!(problem["type"], "urn:relais:problem:id-taken", "{problem}");
    assert_eq!(app.stream_messages().await, 1);
}

#[tokio::test]
async fn ids_of_version_8_are_refused_on_new_events_but_a_retry_of_one_stored_before_is_a_duplicate() {
    let app = spawn_app_with(relais::startup::ServeRole::Gateway).await;
    let token = app.token("apo", Role::Org).await;
    let v8 = |n: u128| uuid::Uuid::from_u128(0x0123_4567_89ab_8000_8000_0000_0000_0000 | n);
    // An id of version 8 the log holds (admitted before they were reserved for erasures).
    sqlx::query("INSERT INTO event_ledger (event_id, seq, org_id) VALUES ($1, 99, 'apo')")
        .bind(v8(1))
        .execute(&app.pool)
        .await
        .expect("recorded");
    let mut stored_before = guidance_requested("apo", "case-1", "cl-1");
    stored_before["id"] = json!(v8(1).to_string());
    let r = app.post_event(&token, &stored_before).await;
    assert_eq!(r.status(), 200);
    let answer: Value = r.json().await.expect("json");
    assert_eq!(answer["events"][0]["sequence"], 99);
    let mut new = guidance_requested("apo", "case-2", "cl-2");
    new["id"] = json!(v8(2).to_string());
    let r = app.post_batch(&token, &[guidance_requested("apo", "case-3", "cl-3"), new]).await;
    assert_eq!(r.status(), 400);
    let problem: Value = r.json().await.expect("json");
    assert_eq!(problem["pointer"], "/1/id", "{problem}");
    assert_eq!(app.stream_messages().await, 0);
}
