//! Privacy by design: erasure by crypto-shredding, subject access, the client's key for direct
//! publishing, KEK rotation, key store backup and restore, retention, and the record of
//! processing in docs/PRIVACY.md.

use crate::helpers::*;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use futures::StreamExt;
use relais::startup::{Application, ServeRole};
use relais_domain::events::CATALOGUE;
use relais_domain::seal::{self, DataKey};
use relais_domain::{Envelope, StoredEvent};
use relais_projections::retention::{self, RetentionPolicy};
use relais_projections::{Kek, KeyLookup, KeyStore, Role};
use serde_json::{Value, json};
use std::collections::HashMap;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------------
// Events

pub(crate) fn with_time(mut e: Value, time: &str) -> Value {
    e["time"] = json!(time);
    e
}

pub(crate) fn requested(org: &str, case: &str, client: &str, note: &str) -> Value {
    event(
        org,
        "relais.guidance.requested",
        &format!("cases/{case}"),
        json!({ "client_ref": client, "channel": "by_person", "language": "nl", "note": note }),
    )
}

pub(crate) fn accepted(org: &str, case: &str, client: &str, note: &str) -> Value {
    event(
        org,
        "relais.guidance.accepted",
        &format!("cases/{case}"),
        json!({ "client_ref": client, "setting": "in_detention", "legal_status": "convict", "note": note }),
    )
}

fn intake(org: &str, case: &str, client: &str, note: &str) -> Value {
    event(
        org,
        "relais.intake.held",
        &format!("cases/{case}"),
        json!({ "client_ref": client, "life_domains": ["housing", "justice_procedure"], "language": "nl",
                "interpreter": "none", "note": note }),
    )
}

fn noted_intervention(org: &str, case: &str, client: &str, mode: &str, note: &str) -> Value {
    let mut e = intervention(org, case, client, mode);
    e["data"]["note"] = json!(note);
    e
}

fn plan(org: &str, case: &str, client: &str, goals: &str) -> Value {
    event(
        org,
        "relais.plan.set",
        &format!("cases/{case}"),
        json!({ "client_ref": client, "life_domains": ["housing"], "goals": goals }),
    )
}

fn consent_to_share(org: &str, case: &str, client: &str, with: &str) -> Value {
    event(
        org,
        "relais.consent.given",
        &format!("cases/{case}"),
        json!({ "client_ref": client, "scope": { "share_with_organisation": with } }),
    )
}

fn referral_made(org: &str, referral: &str, case: &str, client: &str, to: &str, message: &str) -> Value {
    event(
        org,
        "relais.referral.made",
        &format!("referrals/{referral}"),
        json!({ "client_ref": client, "destination": { "organisation": to }, "life_domains": ["housing"],
                "case_id": case, "message": message }),
    )
}

fn referral_received(org: &str, referral: &str, client: &str) -> Value {
    event(org, "relais.referral.received", &format!("referrals/{referral}"), json!({ "client_ref": client }))
}

fn declined(org: &str, case: &str, client: &str) -> Value {
    event(
        org,
        "relais.guidance.declined",
        &format!("cases/{case}"),
        json!({ "client_ref": client, "reason": "no_capacity" }),
    )
}

pub(crate) fn closed(org: &str, case: &str, client: &str, note: &str) -> Value {
    event(
        org,
        "relais.guidance.closed",
        &format!("cases/{case}"),
        json!({ "client_ref": client, "reason": "goals_reached", "note": note }),
    )
}

pub(crate) async fn post_all(app: &TestApp, token: &str, events: &[Value]) {
    let r = app.post_batch(token, events).await;
    let status = r.status();
    assert_eq!(status, 201, "{}", r.text().await.unwrap_or_default());
}

// ---------------------------------------------------------------------------------------------
// Searching for planted values

/// Values planted in the erased client's personal fields: none may be found after erasure.
const ERASED_MARKERS: &[&str] = &["ERASE-ME", "ERASE-MARK"];
/// Values planted in another client's personal fields: found before and after (the search
/// works).
const KEPT_MARKERS: &[&str] = &["KEEP-ME", "KEEP-MARK"];

fn found<'a>(haystack: &str, markers: &[&'a str]) -> Vec<&'a str> {
    markers.iter().copied().filter(|m| haystack.contains(m)).collect()
}

/// Every endpoint answer searched for the erased client's values: (role, organisation of the
/// token, path). Endpoints added later (timelines, referrals, replay, statistics) belong here.
fn endpoints_to_search() -> Vec<(Role, &'static str, String)> {
    vec![
        (Role::Org, "apo", "/v1/orgs/apo/cases".into()),
        (Role::Org, "apo", "/v1/orgs/apo/cases?status=requested".into()),
        (Role::Org, "apo", "/v1/orgs/apo/cases/case-erase".into()),
        (Role::Org, "apo", "/v1/orgs/apo/cases/case-keep".into()),
        (Role::Org, "apo", "/v1/orgs/apo/clients/cl-ERASE-ME-7q/export".into()),
        (Role::Org, "apo", "/v1/orgs/apo/clients/cl-KEEP-ME-3r/export".into()),
        (Role::Org, "caw-brussel", "/v1/orgs/caw-brussel/cases".into()),
        (Role::Org, "caw-brussel", "/v1/orgs/caw-brussel/clients/caw-77/export".into()),
        (Role::Org, "apo", "/v1/orgs/apo/cases/case-erase/timeline".into()),
        (Role::Org, "apo", "/v1/orgs/apo/cases/case-erase?as_of=2030-01-01T00:00:00Z".into()),
        (Role::Org, "apo", "/v1/orgs/apo/referrals?direction=out".into()),
        (Role::Org, "caw-brussel", "/v1/orgs/caw-brussel/referrals?direction=in".into()),
        (Role::Org, "apo", "/v1/orgs/apo/coming-up?days=365".into()),
        (Role::Org, "apo", "/v1/orgs/apo/worklist".into()),
        (Role::Org, "apo", "/v1/orgs/apo/statistics".into()),
        (Role::Org, "apo", "/v1/orgs/apo/quarantine".into()),
        (Role::Coordinator, "coordination", "/v1/monitor/alerts".into()),
        (Role::Coordinator, "coordination", "/v1/monitor/persons".into()),
        (Role::Coordinator, "coordination", "/v1/statistics".into()),
        (Role::Auditor, "coordination", "/v1/audit/events".into()),
        (Role::Auditor, "coordination", "/v1/audit/access".into()),
        (Role::Org, "apo", "/v1/catalogue".into()),
        (Role::Org, "apo", "/openapi.json".into()),
    ]
}

/// The text of every answer of [`endpoints_to_search`].
async fn endpoint_answers(app: &TestApp) -> Vec<(String, String)> {
    let mut tokens: HashMap<(Role, &str), String> = HashMap::new();
    let mut out = Vec::new();
    for (role, org, path) in endpoints_to_search() {
        let token = match tokens.get(&(role, org)) {
            Some(t) => t.clone(),
            None => {
                let t = app.token(org, role).await;
                tokens.insert((role, org), t.clone());
                t
            }
        };
        let r = app.get(&token, &path).await;
        assert!(r.status().is_success(), "{path}: {}", r.status());
        out.push((path, r.text().await.expect("body")));
    }
    out
}

/// The text of every row of every table of the database, with the tables' names.
async fn all_table_text(pool: &sqlx::PgPool) -> Vec<(String, String)> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(pool)
    .await
    .expect("tables");
    assert!(tables.len() >= 8, "{tables:?}");
    let mut out = Vec::new();
    for t in tables {
        let text: Option<String> = sqlx::query_scalar(&format!("SELECT string_agg(x::text, '\n') FROM \"{t}\" x"))
            .fetch_one(pool)
            .await
            .expect("table text");
        // Binary columns read as hex in the row text: search their bytes too.
        let binary: Vec<String> = sqlx::query_scalar(
            "SELECT column_name::text FROM information_schema.columns
             WHERE table_schema = 'public' AND table_name = $1 AND data_type = 'bytea'",
        )
        .bind(&t)
        .fetch_all(pool)
        .await
        .expect("columns");
        let mut bytes_text = String::new();
        for c in binary {
            let values: Vec<Option<Vec<u8>>> =
                sqlx::query_scalar(&format!("SELECT \"{c}\" FROM \"{t}\"")).fetch_all(pool).await.expect("bytes");
            for v in values.into_iter().flatten() {
                bytes_text.push_str(&String::from_utf8_lossy(&v));
            }
        }
        out.push((t, format!("{}\n{bytes_text}", text.unwrap_or_default())));
    }
    out
}

/// Every message of the stream: raw payloads, and each event decoded as a full replay reads it
/// (personal fields opened with the key store where the key exists).
async fn replay(app: &TestApp, keys: &KeyStore) -> (Vec<Vec<u8>>, Vec<Value>) {
    let stream = app.js.get_stream("RELAIS").await.expect("stream");
    let last = app.stream_last_sequence().await;
    let mut messages = relais_eventlog::reader::ordered_messages(&stream, "relais.ev.>", 1).await.expect("replay");
    let (mut raw, mut events) = (Vec::new(), Vec::new());
    while let Some(m) = messages.next().await {
        let m = m.expect("message");
        raw.push(m.payload.to_vec());
        let stored = StoredEvent::decode(&m.payload).expect("decodes").into_v1();
        let personal = match &stored.sealed {
            Some(s) => match keys.lookup(s.key_id).await.expect("lookup") {
                KeyLookup::Key(k) => Some(seal::open(&k, stored.id, s).expect("opens")),
                _ => None,
            },
            None => None,
        };
        events.push(Value::Object(stored.open(personal).expect("opens").to_cloud_event()));
        if m.sequence >= last {
            break;
        }
    }
    assert_eq!(raw.len() as u64, last);
    (raw, events)
}

/// The statistical columns of the caseload: what erasure must not change.
async fn caseload_statistics(pool: &sqlx::PgPool) -> String {
    sqlx::query_scalar(
        "SELECT string_agg(concat_ws('|', org_id, case_id, status, channel, requested_at, closed_at, legal_status,
             in_detention, prison, life_domains::text, interventions_by_mode::text, intervention_count,
             last_contact_at, language, last_event_at, version), '\n' ORDER BY org_id, case_id) FROM caseload",
    )
    .fetch_one(pool)
    .await
    .expect("statistics")
}

/// Projects the whole stream again into a database of its own, with a copy of the key store
/// and the given KEKs; returns its pool and name (drop it with [`drop_database`]).
async fn rebuild(app: &TestApp, kek: Kek, name: &str) -> (sqlx::PgPool, String) {
    let db_name = format!("{}_{name}", app.db_name);
    let (mut settings, _) = test_settings(&app.settings.nats_url, &db_name);
    settings.kek = kek;
    settings.audit = app.settings.audit.clone();
    settings.consumer_prefix = name.into();
    settings.retention.sweep_every = None;
    relais_projections::Database::connect_and_migrate(&settings.database_url).await.expect("rebuild database");
    let pool = sqlx::PgPool::connect(&settings.database_url).await.expect("rebuild pool");
    copy_key_store(&app.pool, &pool).await;
    let projector = Application::build(&settings, ServeRole::Projector).await.expect("rebuild projector");
    let stop = projector.shutdown_token();
    tokio::spawn(projector.run_until_stopped());
    let target = app.stream_last_sequence().await;
    wait_for_checkpoint(&pool, relais_projections::worker::VALIDATOR, target).await;
    for view in relais_projections::worker::default_views() {
        wait_for_checkpoint(&pool, view.name(), target).await;
    }
    stop.cancel();
    (pool, db_name)
}

async fn drop_database(pool: sqlx::PgPool, name: &str) {
    pool.close().await;
    let admin = sqlx::PgPool::connect(ADMIN_DB_URL).await.expect("admin");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await.expect("dropped");
}

fn b64(bytes: &[u8]) -> [u8; 32] {
    bytes.try_into().expect("32 bytes")
}

fn decode32(text: &str) -> [u8; 32] {
    b64(&base64::engine::general_purpose::STANDARD.decode(text).expect("base64"))
}

// ---------------------------------------------------------------------------------------------
// Erasure

#[tokio::test]
async fn an_erased_client_leaves_no_personal_value_in_any_answer_table_replay_or_rebuild() {
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    let caw = app.token("caw-brussel", Role::Org).await;
    let erase_me = "cl-ERASE-ME-7q";
    let keep_me = "cl-KEEP-ME-3r";
    post_all(
        &app,
        &apo,
        &[
            requested("apo", "case-erase", erase_me, "ERASE-MARK-request vraagt hulp bij woning"),
            accepted("apo", "case-erase", erase_me, "ERASE-MARK-accepted"),
            intake("apo", "case-erase", erase_me, "ERASE-MARK-intake psychiatrisch verleden"),
            noted_intervention("apo", "case-erase", erase_me, "informing", "ERASE-MARK-intervention"),
            noted_intervention("apo", "case-erase", erase_me, "planning", "ERASE-MARK-intervention-2"),
            plan("apo", "case-erase", erase_me, "ERASE-MARK-goals woning"),
            consent_to_share("apo", "case-erase", erase_me, "caw-brussel"),
            referral_made("apo", "ref-erase", "case-erase", erase_me, "caw-brussel", "ERASE-MARK-message aan CAW"),
            requested("apo", "case-keep", keep_me, "KEEP-MARK-request"),
            accepted("apo", "case-keep", keep_me, "KEEP-MARK-accepted"),
            noted_intervention("apo", "case-keep", keep_me, "informing", "KEEP-MARK-intervention"),
        ],
    )
    .await;
    post_all(&app, &caw, &[referral_received("caw-brussel", "ref-erase", "caw-77")]).await;
    post_all(&app, &apo, &[closed("apo", "case-erase", erase_me, "ERASE-MARK-closed")]).await;
    app.wait_for_views().await;

    // Before: the planted values are found where they belong (the search can find them).
    let before: Value = app.export(&apo, "apo", erase_me).await.json().await.expect("export");
    assert_eq!(before["erased"], false);
    assert_eq!(found(&before.to_string(), ERASED_MARKERS), ERASED_MARKERS.to_vec());
    let tables = all_table_text(&app.pool).await;
    assert!(tables.iter().any(|(t, text)| t == "caseload" && text.contains(erase_me)));
    let statistics_before = caseload_statistics(&app.pool).await;
    let keys = KeyStore::new(app.pool.clone(), app.settings.kek.clone());
    let (_, events_before) = replay(&app, &keys).await;
    assert!(!found(&Value::Array(events_before).to_string(), ERASED_MARKERS).is_empty());

    // Erase.
    let r = app.erase(&apo, "apo", erase_me).await;
    assert_eq!(r.status(), 202);
    let erasure: Value = r.json().await.expect("json");
    assert_eq!(erasure["erased"], true);
    assert!(found(&erasure.to_string(), ERASED_MARKERS).is_empty());
    let r = app.export(&apo, "apo", erase_me).await;
    assert_eq!(r.status(), 200);
    let after: Value = r.json().await.expect("json");
    assert_eq!(after["erased"], true, "the erasure is complete at once: {after}");
    assert_eq!(after["client"]["key_id"], erasure["key_id"]);
    app.wait_for_views().await;

    // No endpoint answer holds anything of the erased client; the kept client is still there.
    let answers = endpoint_answers(&app).await;
    for (path, text) in &answers {
        assert!(found(text, ERASED_MARKERS).is_empty(), "{path} holds {:?}: {text}", found(text, ERASED_MARKERS));
    }
    let all_answers: String = answers.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(found(&all_answers, KEPT_MARKERS), KEPT_MARKERS.to_vec());

    // No row of any table holds it.
    for (table, text) in all_table_text(&app.pool).await {
        assert!(found(&text, ERASED_MARKERS).is_empty(), "table {table} holds {:?}", found(&text, ERASED_MARKERS));
    }

    // The log never held it in the clear, and a full replay reads nothing of it any more.
    let (raw, events) = replay(&app, &keys).await;
    for payload in &raw {
        let text = String::from_utf8_lossy(payload);
        assert!(found(&text, ERASED_MARKERS).is_empty() && found(&text, KEPT_MARKERS).is_empty());
    }
    let replayed = Value::Array(events.clone()).to_string();
    assert!(found(&replayed, ERASED_MARKERS).is_empty(), "{:?}", found(&replayed, ERASED_MARKERS));
    assert_eq!(found(&replayed, KEPT_MARKERS), KEPT_MARKERS.to_vec());
    // Each of the erased client's events still shows its type, time and statistical facts.
    let erased_events: Vec<&Value> = events.iter().filter(|e| e["personaldata"] == "erased").collect();
    assert_eq!(erased_events.len(), 9);
    let intake = erased_events.iter().find(|e| e["type"] == "relais.intake.held").expect("intake");
    assert_eq!(intake["data"]["life_domains"], json!(["housing", "justice_procedure"]));
    assert!(intake["data"].get("client_ref").is_none() && intake["data"].get("note").is_none());
    // The erasure itself holds no personal data, and names no case.
    let erased = events.iter().find(|e| e["type"] == "relais.client.erased").expect("erasure event");
    assert_eq!(erased["data"], json!({ "reason": "client_request" }));
    assert_eq!(erased["subject"], format!("clients/{}", erasure["key_id"].as_str().expect("key id")));

    // Statistics of the past do not change.
    assert_eq!(caseload_statistics(&app.pool).await, statistics_before);

    // A rebuild from the start of the stream gives the same views.
    let (clean, clean_name) = rebuild(&app, app.settings.kek.clone(), "rebuild").await;
    for (table, order) in [("caseload", "org_id, case_id"), ("client_events", "key_id, seq")] {
        let live = table_checksum(&app.pool, table, order).await;
        assert!(live.0 > 0);
        assert_eq!(table_checksum(&clean, table, order).await, live, "{table}");
    }
    for (table, text) in all_table_text(&clean).await {
        assert!(found(&text, ERASED_MARKERS).is_empty(), "rebuilt table {table}");
    }
    drop_database(clean, &clean_name).await;
}

#[tokio::test]
async fn erasure_is_idempotent_refused_to_others_and_nothing_new_is_recorded_about_the_client() {
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    post_all(&app, &apo, &[requested("apo", "case-1", "cl-1", "n"), requested("apo", "case-2", "cl-2", "n")]).await;

    // Unknown clients, other organisations, other roles, bad references.
    assert_eq!(app.erase(&apo, "apo", "cl-never-seen").await.status(), 404);
    let dsr = app.token("dsr", Role::Org).await;
    assert_eq!(app.erase(&dsr, "apo", "cl-1").await.status(), 403);
    assert_eq!(app.erase(&dsr, "dsr", "cl-1").await.status(), 404, "dsr has no client cl-1");
    let auditor = app.token("apo", Role::Auditor).await;
    assert_eq!(app.erase(&auditor, "apo", "cl-1").await.status(), 403);
    assert_eq!(app.export(&dsr, "apo", "cl-1").await.status(), 403);
    assert_eq!(app.erase(&apo, "apo", "bad%20ref").await.status(), 400);
    let r = app
        .http
        .post(format!("{}/v1/orgs/apo/clients/cl-1/erasure", app.address))
        .bearer_auth(&apo)
        .header("content-type", "application/json")
        .body(r#"{"reason":"boredom"}"#)
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 400);
    assert_eq!(app.stream_messages().await, 2, "refused erasures store nothing");

    // Twice: one erasure, one event.
    let first = app.erase(&apo, "apo", "cl-1").await;
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.expect("json");
    let second = app.erase(&apo, "apo", "cl-1").await;
    assert_eq!(second.status(), 200);
    let second: Value = second.json().await.expect("json");
    assert_eq!(first["event_id"], second["event_id"]);
    assert_eq!(first["sequence"], second["sequence"]);
    assert_eq!(app.stream_messages().await, 3);

    // The command line erases through the same function.
    let (ok, out, err) = app.run_relais(&["erase", "--org", "apo", "--client", "cl-1"], &[]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("already erased"), "{out}");
    let (ok, out, err) =
        app.run_relais(&["erase", "--org", "apo", "--client", "cl-2", "--reason", "client_request"], &[]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("erased"), "{out}");
    // It appends as the gateway does: with an admission tag, or `relais verify` reports it
    // inserted.
    let admitted = app.admission_at(app.stream_last_sequence().await).await;
    assert_eq!(admitted, relais_audit::Admission::Gateway, "the CLI's erasure is admitted");
    let (ok, _, err) = app.run_relais(&["erase", "--org", "apo", "--client", "cl-nobody"], &[]).await;
    assert!(!ok && err.contains("no such client"), "{err}");
    // An organisation the registry does not hold is named as such, not as a missing client.
    let (ok, _, err) = app.run_relais(&["erase", "--org", "nosuchorg", "--client", "cl-1"], &[]).await;
    assert!(!ok && err.contains("no organisation nosuchorg in the registry"), "{err}");
    assert_eq!(app.stream_messages().await, 4);
    // Every erasure asked for is recorded, over HTTP and on the command line, against the
    // client's key.
    let recorded: Vec<(String, String)> =
        sqlx::query_as("SELECT role, resource FROM access_log WHERE action = 'client.erase' ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .expect("access log");
    let cl_2: Uuid = sqlx::query_scalar("SELECT key_id FROM client_keys WHERE key_id <> $1 AND erased_at IS NOT NULL")
        .bind(Uuid::parse_str(first["key_id"].as_str().expect("key id")).expect("uuid"))
        .fetch_one(&app.pool)
        .await
        .expect("cl-2's key");
    let cl_1 = format!("orgs/apo/clients/{}", first["key_id"].as_str().expect("key id"));
    let cl_2 = format!("orgs/apo/clients/{cl_2}");
    assert_eq!(
        recorded,
        [("org", &cl_1), ("org", &cl_1), ("operator", &cl_1), ("operator", &cl_2)]
            .map(|(role, resource)| (role.to_owned(), resource.clone()))
    );
    let export: Value = app.export(&apo, "apo", "cl-2").await.json().await.expect("json");
    assert_eq!(export["erased"], true);

    // Nothing new is recorded about an erased client, and its key is not handed out.
    let r = app.post_event(&apo, &noted_intervention("apo", "case-1", "cl-1", "informing", "x")).await;
    assert_eq!(r.status(), 409);
    let problem: Value = r.json().await.expect("json");
    assert_eq!(problem["type"], "urn:relais:problem:client-erased");
    assert_eq!(app.post_empty(&apo, "/v1/orgs/apo/clients/cl-1/key").await.status(), 409);

    // Erasures are recorded by Relais only: not over the ingest endpoint, and a direct one
    // for a key that was not destroyed is quarantined.
    let key_id = Uuid::parse_str(first["key_id"].as_str().expect("key id")).expect("uuid");
    let forged =
        event("apo", "relais.client.erased", &format!("clients/{key_id}"), json!({ "reason": "client_request" }));
    let r = app.post_event(&apo, &forged).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.expect("json")["pointer"], "/type");
    post_all(&app, &apo, &[requested("apo", "case-3", "cl-3", "n")]).await;
    let live_key: Uuid = sqlx::query_scalar("SELECT key_id FROM client_keys WHERE erased_at IS NULL")
        .fetch_one(&app.pool)
        .await
        .expect("key");
    let (envelope, _) = Envelope::from_cloud_event(
        event("apo", "relais.client.erased", &format!("clients/{live_key}"), json!({ "reason": "client_request" })),
        Utc::now(),
        "direct",
    )
    .expect("valid envelope");
    let bytes = StoredEvent::V1(envelope.split_for_storage().0).encode();
    let subject = format!("relais.ev.apo.clients.{live_key}");
    app.js.publish(subject, bytes.into()).await.expect("sent").await.expect("ack");
    app.wait_for_views().await;
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM quarantine ORDER BY seq").fetch_all(&app.pool).await.expect("rows");
    assert_eq!(reasons, vec!["erasure-without-key".to_owned()]);
    let case: Value = app.get(&apo, "/v1/orgs/apo/cases/case-3").await.json().await.expect("json");
    assert_eq!(case["client_ref"], "cl-3", "a forged erasure blanks nothing");
}

// ---------------------------------------------------------------------------------------------
// Subject access

#[tokio::test]
async fn the_export_holds_the_clients_events_cases_and_who_read_them() {
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    post_all(
        &app,
        &apo,
        &[
            requested("apo", "case-1", "cl-1", "vraagt hulp"),
            accepted("apo", "case-1", "cl-1", "aanvaard"),
            noted_intervention("apo", "case-1", "cl-1", "informing", "uitleg over procedure"),
            consent_to_share("apo", "case-1", "cl-1", "caw-brussel"),
            referral_made("apo", "ref-1", "case-1", "cl-1", "caw-brussel", "zoekt woning"),
            requested("apo", "case-2", "cl-2", "another client"),
        ],
    )
    .await;
    app.wait_for_views().await;
    assert_eq!(app.get(&apo, "/v1/orgs/apo/cases/case-1").await.status(), 200);

    let r = app.export(&apo, "apo", "cl-1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let export: Value = r.json().await.expect("json");
    assert_eq!(export["organisation"], "apo");
    assert_eq!(export["client"]["client_ref"], "cl-1");
    assert_eq!(export["erased"], false);
    let events = export["events"].as_array().expect("events");
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().expect("type")).collect();
    assert_eq!(
        types,
        [
            "relais.guidance.requested",
            "relais.guidance.accepted",
            "relais.intervention.recorded",
            "relais.consent.given",
            "relais.referral.made"
        ]
    );
    assert_eq!(events[2]["data"]["note"], "uitleg over procedure");
    assert_eq!(events[4]["data"]["message"], "zoekt woning");
    assert_eq!(events[2]["sequence"], 3);
    assert_eq!(events[2]["titles"]["fr"], "Intervention enregistrée");
    assert!(!export.to_string().contains("another client"), "only this client's events");
    assert_eq!(export["cases"].as_array().expect("cases").len(), 1);
    assert_eq!(export["cases"][0]["case_id"], "case-1");
    assert!(export.get("problems").is_none());
    let actions: Vec<&str> =
        export["access"].as_array().expect("access").iter().map(|a| a["action"].as_str().expect("action")).collect();
    assert_eq!(actions, ["case.read", "client.export"], "the export records itself");
    // Access records name the client by key id, never by reference.
    let resources: Vec<String> =
        sqlx::query_scalar("SELECT resource FROM access_log").fetch_all(&app.pool).await.expect("resources");
    assert!(resources.iter().all(|r| !r.contains("cl-1")), "{resources:?}");

    assert_eq!(app.export(&apo, "apo", "cl-unknown").await.status(), 404);
}

// ---------------------------------------------------------------------------------------------
// Direct publishing

#[tokio::test]
async fn an_event_sealed_by_the_organisation_and_published_on_nats_is_accepted_one_in_the_clear_is_not() {
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    // The NGO's system obtains the client's data key with its organisation's token.
    let r = app.post_empty(&apo, "/v1/orgs/apo/clients/cl-direct/key").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["cache-control"], "no-store");
    let key: Value = r.json().await.expect("json");
    let key_id = Uuid::parse_str(key["key_id"].as_str().expect("key id")).expect("uuid");
    let data_key = DataKey::from_bytes(decode32(key["key"].as_str().expect("key")));
    let again: Value = app.post_empty(&apo, "/v1/orgs/apo/clients/cl-direct/key").await.json().await.expect("json");
    assert_eq!(again["key_id"], key["key_id"], "one key per client");
    let dsr = app.token("dsr", Role::Org).await;
    assert_eq!(app.post_empty(&dsr, "/v1/orgs/apo/clients/cl-direct/key").await.status(), 403);

    // It seals with relais-domain and publishes with the event id as message id.
    let ce = requested("apo", "case-direct", "cl-direct", "sealed by the NGO");
    let (envelope, _) = Envelope::from_cloud_event(ce, Utc::now(), "apo-system").expect("valid");
    let (mut stored, personal) = envelope.split_for_storage();
    let nonce: [u8; 24] = rand::random();
    stored.sealed = Some(seal::seal(&data_key, key_id, envelope.id, nonce, &personal));
    let bytes = StoredEvent::V1(stored).encode();
    let ack = app
        .js
        .send_publish(
            "relais.ev.apo.cases.case-direct",
            async_nats::jetstream::message::PublishMessage::build()
                .payload(bytes.into())
                .message_id(envelope.id.to_string().as_str()),
        )
        .await
        .expect("published")
        .await
        .expect("acknowledged");
    assert!(!ack.duplicate);

    // The same in the clear is quarantined.
    let (clear, _) = Envelope::from_cloud_event(
        requested("apo", "case-clear", "cl-clear", "in the clear"),
        Utc::now(),
        "apo-system",
    )
    .expect("valid");
    let mut stored = clear.split_for_storage().0;
    stored.data = clear.data.encode();
    app.js
        .publish("relais.ev.apo.cases.case-clear", StoredEvent::V1(stored).encode().into())
        .await
        .expect("sent")
        .await
        .expect("ack");
    app.wait_for_views().await;

    let case: Value = app.get(&apo, "/v1/orgs/apo/cases/case-direct").await.json().await.expect("json");
    assert_eq!(case["client_ref"], "cl-direct");
    let export: Value = app.export(&apo, "apo", "cl-direct").await.json().await.expect("json");
    assert_eq!(export["events"][0]["data"]["note"], "sealed by the NGO");
    assert_eq!(app.get(&apo, "/v1/orgs/apo/cases/case-clear").await.status(), 404);
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM quarantine ORDER BY seq").fetch_all(&app.pool).await.expect("rows");
    assert_eq!(reasons, vec!["personal-data-in-clear".to_owned()]);
    let payload: Vec<u8> =
        sqlx::query_scalar("SELECT payload FROM quarantine").fetch_one(&app.pool).await.expect("row");
    assert!(payload.is_empty(), "personal fields in the clear are not copied out of the log");
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM access_log WHERE action = 'client.key'")
        .fetch_all(&app.pool)
        .await
        .expect("rows");
    assert_eq!(actions.len(), 2, "handing out a key is recorded");
}

/// Seals `ce` with `key` and publishes it directly on `subject`, with its id as message id.
async fn publish_sealed(app: &TestApp, subject: &str, ce: Value, key_id: Uuid, key: &DataKey) {
    let (envelope, _) = Envelope::from_cloud_event(ce, Utc::now(), "own-system").expect("valid");
    let (mut stored, personal) = envelope.split_for_storage();
    stored.sealed = Some(seal::seal(key, key_id, envelope.id, rand::random(), &personal));
    app.js
        .send_publish(
            subject.to_owned(),
            async_nats::jetstream::message::PublishMessage::build()
                .payload(StoredEvent::V1(stored).encode().into())
                .message_id(envelope.id.to_string().as_str()),
        )
        .await
        .expect("published")
        .await
        .expect("acknowledged");
}

#[tokio::test]
async fn nothing_sealed_with_an_erased_clients_key_is_admitted_after_the_erasure_even_published_directly() {
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    // apo's system holds the client's key and records with it.
    let key: Value = app.post_empty(&apo, "/v1/orgs/apo/clients/cl-kept/key").await.json().await.expect("json");
    let key_id = Uuid::parse_str(key["key_id"].as_str().expect("key id")).expect("uuid");
    let data_key = DataKey::from_bytes(decode32(key["key"].as_str().expect("key")));
    let before = requested("apo", "case-kept", "cl-kept", "before the erasure");
    publish_sealed(&app, "relais.ev.apo.cases.case-kept", before, key_id, &data_key).await;
    app.wait_for_views().await;
    // The client is erased; the system kept the key in memory and records on.
    assert_eq!(app.erase(&apo, "apo", "cl-kept").await.status(), 202);
    let after = accepted("apo", "case-kept", "cl-kept", "AFTER-ERASURE-MARK");
    publish_sealed(&app, "relais.ev.apo.cases.case-kept", after, key_id, &data_key).await;
    // Another organisation attaches an event to the erased key (it cannot open, nobody can).
    let foreign = requested("dsr", "case-foreign", "cl-foreign", "FOREIGN-MARK");
    publish_sealed(&app, "relais.ev.dsr.cases.case-foreign", foreign, key_id, &DataKey::from_bytes([7; 32])).await;
    app.wait_for_views().await;

    let rows: Vec<(i64, String, String)> = sqlx::query_as("SELECT seq, reason, detail FROM quarantine ORDER BY seq")
        .fetch_all(&app.pool)
        .await
        .expect("rows");
    let reasons: Vec<&str> = rows.iter().map(|(_, r, _)| r.as_str()).collect();
    assert_eq!(reasons, ["client-erased", "client-erased"], "{rows:?}");
    assert!(rows[0].2.contains("was erased at sequence 2"), "{rows:?}");
    assert!(rows[1].2.contains("is not a key of dsr"), "{rows:?}");
    // The event before the erasure stays, with its statistical part.
    let case: Value = app.get(&apo, "/v1/orgs/apo/cases/case-kept").await.json().await.expect("json");
    assert_eq!(case["status"], "requested", "{case}");
    assert_eq!(app.get(&apo, "/v1/orgs/dsr/cases/case-foreign").await.status(), 403);
    let dsr = app.token("dsr", Role::Org).await;
    assert_eq!(app.get(&dsr, "/v1/orgs/dsr/cases/case-foreign").await.status(), 404);
    // A validator judging the whole log afresh, in another database with the key store as it
    // is now (the key destroyed), decides the same: the decision rests on positions in the log.
    let (clean, clean_db) = app.clean_run("judged_again").await;
    let again: Vec<(i64, String)> =
        sqlx::query_as("SELECT seq, reason FROM quarantine ORDER BY seq").fetch_all(&clean).await.expect("rows");
    assert_eq!(again, rows.iter().map(|(s, r, _)| (*s, r.clone())).collect::<Vec<_>>());
    let status: String = sqlx::query_scalar("SELECT status FROM caseload WHERE case_id = 'case-kept'")
        .fetch_one(&clean)
        .await
        .expect("the case");
    assert_eq!(status, "requested");
    clean.close().await;
    crate::helpers::drop_database(&clean_db).await;
}

// ---------------------------------------------------------------------------------------------
// Keys: typed outcomes, rotation, backup and restore

#[tokio::test]
async fn a_damaged_or_missing_key_is_a_typed_outcome_and_stops_no_worker() {
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    post_all(
        &app,
        &apo,
        &[
            requested("apo", "case-a", "cl-a", "a"),
            accepted("apo", "case-a", "cl-a", "a1"),
            noted_intervention("apo", "case-a", "cl-a", "informing", "a2"),
        ],
    )
    .await;
    app.wait_for_views().await;
    let (key_a,): (Uuid,) = sqlx::query_as("SELECT key_id FROM client_keys").fetch_one(&app.pool).await.expect("key");
    sqlx::query("UPDATE client_keys SET wrapped_key = decode(repeat('ab', 72), 'hex')")
        .execute(&app.pool)
        .await
        .expect("damaged");

    // A reader without the key in memory gets a typed outcome naming the key.
    let fresh = KeyStore::new(app.pool.clone(), app.settings.kek.clone());
    assert_eq!(fresh.lookup(key_a).await.expect("lookup"), KeyLookup::Damaged);
    let unknown = Uuid::new_v4();
    assert_eq!(fresh.lookup(unknown).await.expect("lookup"), KeyLookup::Unknown);
    // A KEK that is not configured is an error that names the key, for the operator.
    let other = KeyStore::new(app.pool.clone(), Kek::new(rand::random(), rand::random()));
    let e = other.lookup(key_a).await.expect_err("unknown KEK");
    assert!(e.to_string().contains(&key_a.to_string()), "{e}");

    // An export from a process without the key in memory names every unreadable event.
    let (mut settings, _) = test_settings(&app.settings.nats_url, &app.db_name);
    settings.kek = app.settings.kek.clone();
    settings.audit = app.settings.audit.clone();
    settings.retention.sweep_every = None;
    let gateway = Application::build(&settings, ServeRole::Gateway).await.expect("gateway");
    let address = format!("http://127.0.0.1:{}", gateway.port().expect("port"));
    let stop = gateway.shutdown_token();
    tokio::spawn(gateway.run_until_stopped());
    let export: Value = app
        .http
        .get(format!("{address}/v1/orgs/apo/clients/cl-a/export"))
        .bearer_auth(&apo)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    // A replay does not call them erased either: the client was not.
    let auditor = app.token("coordination", Role::Auditor).await;
    let replay = app
        .http
        .get(format!("{address}/v1/audit/events?org=apo"))
        .bearer_auth(&auditor)
        .send()
        .await
        .expect("sent")
        .text()
        .await
        .expect("text");
    stop.cancel();
    let shown: Vec<Value> = replay
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json"))
        .filter(|l| l["relaiskind"] == "event")
        .map(|l| l["personaldata"].clone())
        .collect();
    assert_eq!(shown, vec![json!("unreadable"); 3], "{replay}");
    let problems = export["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 3, "{export}");
    let events = export["events"].as_array().expect("events");
    for (p, e) in problems.iter().zip(events) {
        assert_eq!(p["event_id"], e["id"]);
        assert!(p["problem"].as_str().expect("text").contains("damaged"));
        assert_eq!(e["personaldata"], "unreadable");
        assert!(e["data"].get("note").is_none());
    }

    // A rebuild over the damaged key store reaches the end: the events read as unreadable.
    post_all(&app, &apo, &[requested("apo", "case-b", "cl-b", "b")]).await;
    let (clean, name) = rebuild(&app, app.settings.kek.clone(), "damaged").await;
    let refs: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT case_id, client_ref FROM caseload ORDER BY case_id")
            .fetch_all(&clean)
            .await
            .expect("rows");
    assert_eq!(refs, vec![("case-a".to_owned(), None), ("case-b".to_owned(), Some("cl-b".to_owned()))]);
    drop_database(clean, &name).await;
}

#[tokio::test]
async fn rotating_the_kek_keeps_every_event_that_was_not_erased_readable() {
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    let mut events = Vec::new();
    for i in 0..5 {
        events.push(requested("apo", &format!("case-{i}"), &format!("cl-{i}"), &format!("note {i}")));
    }
    post_all(&app, &apo, &events).await;
    assert_eq!(app.erase(&apo, "apo", "cl-4").await.status(), 202);
    app.wait_for_views().await;

    let kek1 = decode32(&app.kek_b64.0);
    let pepper = decode32(&app.kek_b64.1);
    let kek2: [u8; 32] = rand::random();
    let kek2_b64 = base64::engine::general_purpose::STANDARD.encode(kek2);
    let only_kek2 = Kek::new(kek2, pepper);
    let key_ids: Vec<Uuid> =
        sqlx::query_scalar("SELECT key_id FROM client_keys ORDER BY key_id").fetch_all(&app.pool).await.expect("ids");
    // Before: KEK2 alone cannot read keys wrapped by KEK1 (a configuration error, named).
    let before = KeyStore::new(app.pool.clone(), only_kek2.clone());
    assert!(matches!(before.lookup_many(&key_ids).await, Err(relais_projections::KeyError::UnknownKek { .. })));

    // RELAIS_KEK left out of the operator's shell: the development KEK of the state directory
    // would become the only one that opens the keys. Refused, and nothing is re-wrapped.
    let kek_ids = || async {
        let ids: Vec<String> = sqlx::query_scalar("SELECT kek_id FROM client_keys ORDER BY key_id")
            .fetch_all(&app.pool)
            .await
            .expect("ids");
        ids
    };
    let wrapped_before = kek_ids().await;
    let unset = [("RELAIS_KEK", ""), ("RELAIS_KEK_PREVIOUS", app.kek_b64.0.as_str())];
    let (ok, _, err) = app.run_relais(&["keys", "rotate"], &unset).await;
    assert!(!ok && err.contains("RELAIS_KEK is not set"), "{err}");
    assert_eq!(kek_ids().await, wrapped_before);

    // Rotate with KEK2 current and KEK1 previous.
    let env = [("RELAIS_KEK", kek2_b64.as_str()), ("RELAIS_KEK_PREVIOUS", app.kek_b64.0.as_str())];
    let (ok, out, err) = app.run_relais(&["keys", "rotate", "--batch", "2"], &env).await;
    assert!(ok, "{err}");
    assert!(out.contains("4 data keys now wrapped"), "{out}");
    let keks: Vec<(String, bool)> = sqlx::query_as("SELECT kek_id, erased_at IS NOT NULL FROM client_keys ORDER BY 1")
        .fetch_all(&app.pool)
        .await
        .expect("rows");
    let kek1_id = Kek::new(kek1, pepper).id().to_owned();
    assert_eq!(keks.iter().filter(|(k, e)| *k == only_kek2.id() && !e).count(), 4);
    assert_eq!(keks.iter().filter(|(k, e)| *k == kek1_id && *e).count(), 1, "the tombstone stays a tombstone");
    let (ok, out, _) = app.run_relais(&["keys", "rotate"], &env).await;
    assert!(ok && out.contains("0 data keys now wrapped"), "{out}");

    // KEK1 dropped from configuration: every event not erased is readable, the erased one not.
    let after = KeyStore::new(app.pool.clone(), only_kek2.clone());
    let (_, replayed) = replay(&app, &after).await;
    let requests: Vec<&Value> = replayed.iter().filter(|e| e["type"] == "relais.guidance.requested").collect();
    assert_eq!(requests.len(), 5);
    for e in &requests {
        let erased = e["subject"] == "cases/case-4";
        assert_eq!(e["personaldata"] == "erased", erased, "{e}");
        assert_eq!(e["data"].get("note").is_some(), !erased, "{e}");
    }
    let (clean, name) = rebuild(&app, only_kek2, "rotated").await;
    let live = table_checksum(&app.pool, "caseload", "org_id, case_id").await;
    assert_eq!(table_checksum(&clean, "caseload", "org_id, case_id").await, live);
    drop_database(clean, &name).await;
}

#[tokio::test]
async fn a_key_store_restored_from_a_backup_reads_every_event_again_and_no_erasure_is_undone() {
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    post_all(
        &app,
        &apo,
        &[
            requested("apo", "case-a", "cl-a", "note of a"),
            requested("apo", "case-b", "cl-b", "note of b"),
            requested("apo", "case-c", "cl-c", "note of c"),
        ],
    )
    .await;
    assert_eq!(app.erase(&apo, "apo", "cl-c").await.status(), 202);
    // Two erasures of cl-a's live key published directly, which the validator quarantines: one
    // on apo's own subject, one on dsr's subject naming apo in its payload. A restore applies
    // neither.
    let keys = KeyStore::new(app.pool.clone(), app.settings.kek.clone());
    let org = relais_domain::OrgId::parse("apo").expect("org");
    let (key_a, _) = keys.find_client(&org, "cl-a").await.expect("key").expect("cl-a has a key");
    let (forged, _) = Envelope::from_cloud_event(
        event("apo", "relais.client.erased", &format!("clients/{key_a}"), json!({ "reason": "client_request" })),
        Utc::now(),
        "direct",
    )
    .expect("valid envelope");
    let bytes = StoredEvent::V1(forged.split_for_storage().0).encode();
    for subject in [format!("relais.ev.apo.clients.{key_a}"), format!("relais.ev.dsr.clients.{key_a}")] {
        app.js.publish(subject, bytes.clone().into()).await.expect("sent").await.expect("ack");
    }
    app.wait_for_views().await;
    let reasons: Vec<String> =
        sqlx::query_scalar("SELECT reason FROM quarantine ORDER BY seq").fetch_all(&app.pool).await.expect("rows");
    assert_eq!(reasons.len(), 2, "both forgeries are quarantined: {reasons:?}");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("keys.json");
    let file_arg = file.to_str().expect("path");
    let (ok, out, err) = app.run_relais(&["keys", "backup", "--output", file_arg], &[]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("3 keys"), "{out}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&file).expect("file").permissions().mode() & 0o777, 0o600);
    }
    let text = std::fs::read_to_string(&file).expect("backup");
    assert!(!text.contains("cl-a"), "the backup names no client reference");
    let (ok, _, err) = app.run_relais(&["keys", "backup", "--output", file_arg], &[]).await;
    assert!(!ok && err.contains("cannot write"), "an existing backup is never overwritten: {err}");

    // cl-b is erased after the backup was taken.
    assert_eq!(app.erase(&apo, "apo", "cl-b").await.status(), 202);
    app.wait_for_views().await;

    // The key store is lost, and the quarantine with it (the database was lost): the
    // restore judges the erasures from the log alone.
    sqlx::query("DELETE FROM client_keys").execute(&app.pool).await.expect("lost");
    sqlx::query("DELETE FROM quarantine").execute(&app.pool).await.expect("lost");
    sqlx::query("DELETE FROM secret_fingerprints").execute(&app.pool).await.expect("lost");
    let keys = KeyStore::new(app.pool.clone(), app.settings.kek.clone());
    let (_, lost) = replay(&app, &keys).await;
    assert!(!Value::Array(lost).to_string().contains("note of a"), "without keys nothing personal reads");
    assert_eq!(app.export(&apo, "apo", "cl-a").await.status(), 404);

    // With another deployment's admission key, Relais's erasures cannot be told from forged
    // ones: the restore stops before writing anything (it would bring erased clients back).
    let other_key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    let (ok, _, err) = app
        .run_relais(&["keys", "restore", "--input", file_arg], &[("RELAIS_ADMISSION_KEY", other_key.as_str())])
        .await;
    assert!(!ok && err.contains("does not verify with this RELAIS_ADMISSION_KEY"), "{err}");
    let keys_now: i64 = sqlx::query_scalar("SELECT count(*) FROM client_keys").fetch_one(&app.pool).await.expect("n");
    assert_eq!(keys_now, 0, "nothing restored");

    // Restored: everything not erased reads again, and both erasures hold.
    let (ok, out, err) = app.run_relais(&["keys", "restore", "--input", file_arg], &[]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("3 keys restored"), "{out}");
    assert!(err.contains("2 erasure messages in the log were not appended by Relais"), "{err}");
    let (_, restored) = replay(&app, &keys).await;
    let text = Value::Array(restored).to_string();
    assert!(text.contains("note of a"));
    assert!(!text.contains("note of b") && !text.contains("note of c"), "no erasure is undone");
    let a: Value = app.export(&apo, "apo", "cl-a").await.json().await.expect("json");
    assert_eq!(a["events"][0]["data"]["note"], "note of a");
    let b: Value = app.export(&apo, "apo", "cl-b").await.json().await.expect("json");
    assert_eq!(b["erased"], true);
    // Idempotent.
    let (ok, out, err) = app.run_relais(&["keys", "restore", "--input", file_arg], &[]).await;
    assert!(ok, "{err}");
    assert!(out.starts_with("0 keys restored, 3 already present"), "{out}");
    // Reading out every wrapped key and writing them back are recorded, as any access is
    // (the restore refused with another admission key too: it was asked for).
    let recorded: Vec<(String, String)> = sqlx::query_as(
        "SELECT role, action FROM access_log WHERE action LIKE 'keys.%' AND resource = 'keys' ORDER BY id",
    )
    .fetch_all(&app.pool)
    .await
    .expect("access log");
    assert_eq!(
        recorded,
        [
            ("operator", "keys.backup"),
            ("operator", "keys.backup"),
            ("operator", "keys.restore"),
            ("operator", "keys.restore"),
            ("operator", "keys.restore")
        ]
        .map(|(r, a)| (r.to_owned(), a.to_owned()))
    );
}

#[tokio::test]
async fn a_restore_after_the_store_gave_new_keys_brings_no_erased_client_back_and_reports_conflicts() {
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    post_all(&app, &apo, &[requested("apo", "case-a", "cl-a", "note of a"), requested("apo", "case-b", "cl-b", "b")])
        .await;
    assert_eq!(app.erase(&apo, "apo", "cl-b").await.status(), 202);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("keys.json");
    let file_arg = file.to_str().expect("path");
    let (ok, _, err) = app.run_relais(&["keys", "backup", "--output", file_arg], &[]).await;
    assert!(ok, "{err}");
    // The key store's rows are lost while the gateway runs on: both clients get new keys.
    sqlx::query("DELETE FROM client_keys").execute(&app.pool).await.expect("lost");
    post_all(&app, &apo, &[requested("apo", "case-a2", "cl-a", "after"), requested("apo", "case-b2", "cl-b", "after")])
        .await;
    app.wait_for_views().await;

    let (ok, out, err) = app.run_relais(&["keys", "restore", "--input", file_arg], &[]).await;
    assert!(!ok, "a conflict is not a success: {out}");
    assert!(out.starts_with("0 keys restored, 0 already present"), "{out}");
    assert!(out.contains("destroyed key"), "{out}");
    assert!(err.contains("not restored: key") && err.contains("1 keys of the backup conflict"), "{err}");
    // cl-b stays erased: its new key is destroyed, its erasure event owed.
    let b: Value = app.export(&apo, "apo", "cl-b").await.json().await.expect("json");
    assert_eq!(b["erased"], true, "{b}");
    let r = app.post_event(&apo, &requested("apo", "case-b3", "cl-b", "again")).await;
    assert_eq!(r.status(), 409);
    let owed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM client_keys WHERE erased_at IS NOT NULL AND erasure_seq IS NULL")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(owed, 1, "the new key's erasure event is owed");
    // cl-a keeps the key it was given since; the conflict is left to the operator.
    let a: Value = app.export(&apo, "apo", "cl-a").await.json().await.expect("json");
    assert_eq!(a["erased"], false);
}

// ---------------------------------------------------------------------------------------------
// Retention

fn days_ago(now: DateTime<Utc>, days: i64) -> String {
    (now - Duration::days(days)).to_rfc3339()
}

#[tokio::test]
async fn the_retention_sweep_erases_exactly_the_clients_past_their_period() {
    let app = spawn_app_with_settings(ServeRole::All, |s| s.retention.sweep_every = None).await;
    let now = Utc::now();
    let dsr = app.token("dsr", Role::Org).await;
    let apo = app.token("apo", Role::Org).await;
    let t = |days| days_ago(now, days);
    post_all(
        &app,
        &dsr,
        &[
            // Closed long ago: due.
            with_time(requested("dsr", "d1", "cl-d1", "x"), &t(2000)),
            with_time(accepted("dsr", "d1", "cl-d1", "x"), &t(2000)),
            with_time(closed("dsr", "d1", "cl-d1", "x"), &t(1900)),
            // One case closed long ago, another still open: not due.
            with_time(requested("dsr", "d2a", "cl-d2", "x"), &t(2000)),
            with_time(accepted("dsr", "d2a", "cl-d2", "x"), &t(2000)),
            with_time(closed("dsr", "d2a", "cl-d2", "x"), &t(1900)),
            with_time(requested("dsr", "d2b", "cl-d2", "x"), &t(1800)),
            // Closed 100 days ago: due only once a year has passed.
            with_time(requested("dsr", "d3", "cl-d3", "x"), &t(400)),
            with_time(accepted("dsr", "d3", "cl-d3", "x"), &t(400)),
            with_time(closed("dsr", "d3", "cl-d3", "x"), &t(100)),
            // Declined long ago: due.
            with_time(requested("dsr", "d4", "cl-d4", "x"), &t(3000)),
            with_time(declined("dsr", "d4", "cl-d4"), &t(2990)),
            // Closed, then a new request on the same case that is still open: not due.
            with_time(requested("dsr", "d5", "cl-d5", "x"), &t(3000)),
            with_time(accepted("dsr", "d5", "cl-d5", "x"), &t(3000)),
            with_time(closed("dsr", "d5", "cl-d5", "x"), &t(2900)),
            with_time(requested("dsr", "d5", "cl-d5", "x"), &t(2800)),
        ],
    )
    .await;
    post_all(
        &app,
        &apo,
        &[
            // apo keeps ten years: closed six years ago is not due, twelve years ago is.
            with_time(requested("apo", "a1", "cl-a1", "x"), &t(2300)),
            with_time(accepted("apo", "a1", "cl-a1", "x"), &t(2300)),
            with_time(closed("apo", "a1", "cl-a1", "x"), &t(2200)),
            with_time(requested("apo", "a2", "cl-a2", "x"), &t(4500)),
            with_time(accepted("apo", "a2", "cl-a2", "x"), &t(4500)),
            with_time(closed("apo", "a2", "cl-a2", "x"), &t(4400)),
        ],
    )
    .await;
    app.wait_for_views().await;
    let policy = RetentionPolicy::parse("default=365,apo=3650").expect("policy");
    let keys = KeyStore::new(app.pool.clone(), app.settings.kek.clone());
    let mut key_of = HashMap::new();
    for (org, client) in [("dsr", "cl-d1"), ("dsr", "cl-d2"), ("dsr", "cl-d3"), ("dsr", "cl-d4")] {
        let id = keys.find_client(&relais_domain::OrgId::parse(org).expect("org"), client).await.expect("key");
        key_of.insert(id.expect("known").0, client);
    }
    for (org, client) in [("dsr", "cl-d5"), ("apo", "cl-a1"), ("apo", "cl-a2")] {
        let id = keys.find_client(&relais_domain::OrgId::parse(org).expect("org"), client).await.expect("key");
        key_of.insert(id.expect("known").0, client);
    }
    let due_names = |due: Vec<retention::DueClient>| {
        let mut names: Vec<&str> = due.iter().map(|d| key_of[&d.key_id]).collect();
        names.sort_unstable();
        names
    };

    // The clock is ours: now, and a year later.
    assert_eq!(due_names(retention::due(&app.pool, &policy, now).await.expect("due")), ["cl-a2", "cl-d1", "cl-d4"]);
    let later = now + Duration::days(300);
    assert_eq!(
        due_names(retention::due(&app.pool, &policy, later).await.expect("due")),
        ["cl-a2", "cl-d1", "cl-d3", "cl-d4"]
    );

    // `relais status` shows what is due.
    let env = [("RELAIS_RETENTION", "default=365,apo=3650")];
    let (ok, out, err) = app.run_relais(&["status"], &env).await;
    assert!(ok, "{err}");
    assert!(out.contains("clients due for erasure (retention): 3"), "{out}");

    // The sweep erases exactly those.
    let eraser = relais_projections::erasure::Eraser::new(keys.clone(), app.event_log(), app.pool.clone());
    let stream = app.js.get_stream("RELAIS").await.expect("stream");
    let report = retention::sweep(&eraser, &app.pool, &stream, &policy, now, |_, _| {}).await.expect("sweep");
    let mut erased: Vec<&str> = report.erased.iter().map(|e| key_of[&e.key_id]).collect();
    erased.sort_unstable();
    assert_eq!(erased, ["cl-a2", "cl-d1", "cl-d4"]);
    for (org, token, client, expect_erased) in [
        ("dsr", &dsr, "cl-d1", true),
        ("dsr", &dsr, "cl-d2", false),
        ("dsr", &dsr, "cl-d3", false),
        ("dsr", &dsr, "cl-d4", true),
        ("dsr", &dsr, "cl-d5", false),
        ("apo", &apo, "cl-a1", false),
        ("apo", &apo, "cl-a2", true),
    ] {
        let export: Value = app.export(token, org, client).await.json().await.expect("json");
        assert_eq!(export["erased"], expect_erased, "{client}");
    }
    app.wait_for_views().await;
    let reasons: Vec<Value> = replay(&app, &keys)
        .await
        .1
        .into_iter()
        .filter(|e| e["type"] == "relais.client.erased")
        .map(|e| e["data"]["reason"].clone())
        .collect();
    assert_eq!(reasons, vec![json!("retention_expired"); 3]);
    let (ok, out, err) = app.run_relais(&["status"], &env).await;
    assert!(ok, "{err}");
    assert!(out.contains("clients due for erasure (retention): 0"), "{out}");
    let again = retention::sweep(&eraser, &app.pool, &stream, &policy, now, |_, _| {}).await.expect("sweep");
    assert!(again.erased.is_empty());
}

/// A long first sweep runs while clients come back: one whose request is accepted while the
/// sweep erases others keeps their key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_who_comes_back_while_a_sweep_runs_is_not_erased() {
    let app = spawn_app_with_settings(ServeRole::All, |s| s.retention.sweep_every = None).await;
    let now = Utc::now();
    let dsr = app.token("dsr", Role::Org).await;
    let t = |days| days_ago(now, days);
    post_all(
        &app,
        &dsr,
        &[
            with_time(requested("dsr", "b1", "cl-b1", "x"), &t(2000)),
            with_time(accepted("dsr", "b1", "cl-b1", "x"), &t(2000)),
            with_time(closed("dsr", "b1", "cl-b1", "x"), &t(1900)),
            with_time(requested("dsr", "b2", "cl-b2", "x"), &t(1990)),
            with_time(accepted("dsr", "b2", "cl-b2", "x"), &t(1990)),
            with_time(closed("dsr", "b2", "cl-b2", "x"), &t(1800)),
        ],
    )
    .await;
    app.wait_for_views().await;
    let policy = RetentionPolicy::parse("default=365").expect("policy");
    let due: Vec<Uuid> = retention::due(&app.pool, &policy, now).await.expect("due").iter().map(|d| d.key_id).collect();
    assert_eq!(due.len(), 2);
    let keys = KeyStore::new(app.pool.clone(), app.settings.kek.clone());
    let eraser = relais_projections::erasure::Eraser::new(keys, app.event_log(), app.pool.clone());
    let stream = app.js.get_stream("RELAIS").await.expect("stream");
    let handle = tokio::runtime::Handle::current();
    let report = retention::sweep(&eraser, &app.pool, &stream, &policy, now, |done, _| {
        if done == 1 {
            // cl-b2 asks for guidance again while the sweep is between the two.
            tokio::task::block_in_place(|| {
                handle.block_on(post_all(&app, &dsr, &[requested("dsr", "b2-again", "cl-b2", "back")]))
            });
        }
    })
    .await
    .expect("sweep");
    assert_eq!(report.erased.iter().map(|e| e.key_id).collect::<Vec<_>>(), due[..1]);
    let b1: Value = app.export(&dsr, "dsr", "cl-b1").await.json().await.expect("json");
    assert_eq!(b1["erased"], true);
    let b2: Value = app.export(&dsr, "dsr", "cl-b2").await.json().await.expect("json");
    assert_eq!(b2["erased"], false, "the client who came back keeps their key");
}

/// Every gateway replica sweeps: one sweep runs at a time, the others skip their round.
#[tokio::test]
async fn one_retention_sweep_runs_at_a_time() {
    let app = spawn_app_with_settings(ServeRole::All, |s| s.retention.sweep_every = None).await;
    let eraser = relais_projections::erasure::Eraser::new(
        KeyStore::new(app.pool.clone(), app.settings.kek.clone()),
        app.event_log(),
        app.pool.clone(),
    );
    let stream = app.js.get_stream("RELAIS").await.expect("stream");
    let policy = RetentionPolicy::default();
    let mut other = app.pool.acquire().await.expect("connection").detach();
    sqlx::query("SELECT pg_advisory_lock($1)").bind(retention::SWEEP_LOCK).execute(&mut other).await.expect("locked");
    let busy = retention::sweep(&eraser, &app.pool, &stream, &policy, Utc::now(), |_, _| {}).await;
    assert!(matches!(busy, Err(retention::SweepError::Busy)), "{busy:?}");
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(retention::SWEEP_LOCK)
        .execute(&mut other)
        .await
        .expect("unlocked");
    sqlx::Connection::close(other).await.expect("closed");
    retention::sweep(&eraser, &app.pool, &stream, &policy, Utc::now(), |_, _| {}).await.expect("the sweep runs");
    // An operator's sweep is an access record, made before it erases, as `relais erase` is.
    let (ok, out, err) = app.run_relais(&["retention", "sweep"], &[]).await;
    assert!(ok && out.contains("0 clients erased"), "{out} {err}");
    let recorded: Vec<(String, Value)> =
        sqlx::query_as("SELECT resource, detail FROM access_log WHERE action = 'retention.sweep'")
            .fetch_all(&app.pool)
            .await
            .expect("records");
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(recorded[0].0, "clients");
    assert_eq!(recorded[0].1["parameters"]["due"], 0);
    assert_eq!(recorded[0].1["via"], "cli");
}

#[tokio::test]
async fn an_erasure_whose_event_the_log_did_not_take_is_completed_by_the_next_sweep() {
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    let client = "cl-OWED-MARK-9x";
    post_all(
        &app,
        &apo,
        &[
            requested("apo", "case-owed", client, "OWED-MARK-request"),
            accepted("apo", "case-owed", client, "OWED-MARK-a"),
        ],
    )
    .await;
    app.wait_for_views().await;
    let shown = |tables: Vec<(String, String)>| -> Vec<String> {
        tables.into_iter().filter(|(_, text)| text.contains("OWED-MARK")).map(|(t, _)| t).collect()
    };
    assert!(!shown(all_table_text(&app.pool).await).is_empty());

    // The erasure destroys the key, then the log does not take its event: here, the eraser's
    // broker has no stream.
    let dir = tempfile::tempdir().expect("dir");
    let elsewhere = start_nats(dir.path());
    let keys = KeyStore::new(app.pool.clone(), app.settings.kek.clone());
    let broken = relais_projections::erasure::Eraser::new(
        keys.clone(),
        relais_eventlog::EventLog::new(async_nats::connect(elsewhere.url()).await.expect("connected")),
        app.pool.clone(),
    );
    let org = relais_domain::OrgId::parse("apo").expect("org");
    let failed =
        broken.erase_client(&org, client, relais_domain::events::ErasureReason::ClientRequest, "token:owed-test").await;
    assert!(matches!(failed, Err(relais_projections::erasure::ErasureError::Log(_))), "{failed:?}");
    // The key is gone, but the views still show what they showed: the event is owed.
    assert!(matches!(keys.find_client(&org, client).await.expect("key"), Some((_, true))));
    app.wait_for_views().await;
    assert!(!shown(all_table_text(&app.pool).await).is_empty());

    // The next sweep, with nobody due, appends it with the erasure's own reason and actor.
    let eraser = relais_projections::erasure::Eraser::new(keys.clone(), app.event_log(), app.pool.clone());
    let stream = app.js.get_stream("RELAIS").await.expect("stream");
    let policy = RetentionPolicy::default();
    let sweep = || retention::sweep(&eraser, &app.pool, &stream, &policy, Utc::now(), |_, _| {});
    let report = sweep().await.expect("sweep");
    assert!(report.erased.is_empty());
    assert_eq!(report.completed.len(), 1);
    app.wait_for_views().await;
    assert_eq!(shown(all_table_text(&app.pool).await), Vec::<String>::new());
    let (_, events) = replay(&app, &keys).await;
    let erased: Vec<&Value> = events.iter().filter(|e| e["type"] == "relais.client.erased").collect();
    assert_eq!(erased.len(), 1);
    assert_eq!(erased[0]["data"], json!({ "reason": "client_request" }));
    assert_eq!(erased[0]["actor"], "token:owed-test");
    // Nothing is owed any more.
    let again = sweep().await.expect("sweep");
    assert!(again.completed.is_empty() && again.erased.is_empty());
    // A key erased before erasures kept their reason and sequence (as after migration 0060):
    // its event is found in the ledger, marked, and neither appended again nor counted.
    sqlx::query("UPDATE client_keys SET erasure_seq = NULL, erasure_reason = NULL, erasure_actor = NULL")
        .execute(&app.pool)
        .await
        .expect("updated");
    let before = app.stream_messages().await;
    let marked = sweep().await.expect("sweep");
    assert!(marked.completed.is_empty() && marked.erased.is_empty());
    assert_eq!(app.stream_messages().await, before);
    let (owed,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM client_keys WHERE erased_at IS NOT NULL AND erasure_seq IS NULL")
            .fetch_one(&app.pool)
            .await
            .expect("count");
    assert_eq!(owed, 0);
}

#[tokio::test]
async fn an_erasure_asked_for_again_while_its_event_is_owed_records_the_first_erasures_reason_and_actor() {
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    post_all(&app, &apo, &[requested("apo", "case-r", "cl-r", "x")]).await;
    let keys = KeyStore::new(app.pool.clone(), app.settings.kek.clone());
    let org = relais_domain::OrgId::parse("apo").expect("org");
    let (key_id, _) = keys.find_client(&org, "cl-r").await.expect("key").expect("a key");
    // The retention sweep destroyed the key, and the log did not take its event.
    keys.erase_key(key_id, "retention_expired", "relais:retention").await.expect("erased");
    // The organisation asks for the erasure before the next sweep: the event records the
    // erasure that happened.
    let r = app.erase(&apo, "apo", "cl-r").await;
    assert!(r.status().is_success(), "{}", r.status());
    let (_, events) = replay(&app, &keys).await;
    let erased: Vec<&Value> = events.iter().filter(|e| e["type"] == "relais.client.erased").collect();
    assert_eq!(erased.len(), 1);
    assert_eq!(erased[0]["data"], json!({ "reason": "retention_expired" }));
    assert_eq!(erased[0]["actor"], "relais:retention");
}

#[tokio::test]
async fn a_replay_under_way_stops_opening_a_client_erased_meanwhile() {
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    // The client's first events, more than a replay chunk of others, then the client again.
    post_all(
        &app,
        &apo,
        &[requested("apo", "case-x", "cl-x", "EARLY-MARK"), accepted("apo", "case-x", "cl-x", "EARLY-MARK-2")],
    )
    .await;
    for b in 0..3 {
        let others: Vec<Value> =
            (0..400).map(|i| requested("apo", &format!("case-{b}-{i}"), &format!("cl-{b}-{i}"), "other")).collect();
        post_all(&app, &apo, &others).await;
    }
    post_all(&app, &apo, &[noted_intervention("apo", "case-x", "cl-x", "informing", "LATE-MARK")]).await;
    app.wait_for_views().await;

    let keys = KeyStore::new(app.pool.clone(), app.settings.kek.clone());
    let stream = app.js.get_stream("RELAIS").await.expect("stream");
    let mut replay =
        relais_projections::audit::replay::open(&app.pool, &keys, &stream, Default::default()).await.expect("replay");
    let first = replay.next_lines().await.expect("lines").expect("a chunk");
    let first_text = Value::Array(first.into_iter().map(Value::Object).collect()).to_string();
    assert!(first_text.contains("EARLY-MARK"), "the client's key is used in the first chunk");
    assert!(!first_text.contains("LATE-MARK"), "the client's last event comes in a later chunk");

    // The client is erased while the replay is under way.
    assert_eq!(app.erase(&apo, "apo", "cl-x").await.status(), 202);
    let mut rest = Vec::new();
    while let Some(lines) = replay.next_lines().await.expect("lines") {
        rest.extend(lines.into_iter().map(Value::Object));
    }
    let late = rest
        .iter()
        .find(|l| l["type"] == "relais.intervention.recorded" && l["subject"] == "cases/case-x")
        .expect("the client's last event is replayed");
    assert_eq!(late["personaldata"], "erased", "{late}");
    assert!(!Value::Array(rest).to_string().contains("LATE-MARK"));
}

#[tokio::test]
async fn the_gateway_process_sweeps_periodically() {
    let app = spawn_app_with_settings(ServeRole::All, |s| {
        s.retention.policy = RetentionPolicy::parse("default=30").expect("policy");
        s.retention.sweep_every = Some(std::time::Duration::from_millis(300));
    })
    .await;
    let org = app.token("dsr", Role::Org).await;
    let old = (Utc::now() - Duration::days(100)).to_rfc3339();
    post_all(
        &app,
        &org,
        &[
            with_time(requested("dsr", "c-old", "cl-old", "x"), &old),
            with_time(accepted("dsr", "c-old", "cl-old", "x"), &old),
            with_time(closed("dsr", "c-old", "cl-old", "x"), &old),
            with_time(requested("dsr", "c-open", "cl-open", "x"), &old),
        ],
    )
    .await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let export: Value = app.export(&org, "dsr", "cl-old").await.json().await.expect("json");
        if export["erased"] == true {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the periodic sweep never erased cl-old");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let open: Value = app.export(&org, "dsr", "cl-open").await.json().await.expect("json");
    assert_eq!(open["erased"], false);
}

// ---------------------------------------------------------------------------------------------
// The record of processing

/// The table of docs/PRIVACY.md between its markers, generated from the catalogue.
fn field_table() -> String {
    let mut out = String::from("| Event type | Personal (sealed) | Statistical (in the clear) |\n|---|---|---|\n");
    for spec in CATALOGUE {
        let schema = spec.schema();
        let names: Vec<&String> = schema["properties"].as_object().map(|p| p.keys().collect()).unwrap_or_default();
        let class = |c: &str| -> String {
            let fields: Vec<String> = names
                .iter()
                .filter(|n| schema["properties"][n.as_str()]["x-relais-class"] == c)
                .map(|n| format!("`{n}`"))
                .collect();
            if fields.is_empty() { "none".into() } else { fields.join(", ") }
        };
        out.push_str(&format!("| `{}` | {} | {} |\n", spec.name, class("personal"), class("statistical")));
    }
    out
}

#[test]
fn privacy_md_lists_every_field_of_every_event_type_with_its_class() {
    let doc = include_str!("../../docs/PRIVACY.md");
    let begin = "<!-- fields:begin (generated from the catalogue; a test keeps it true) -->\n";
    let end = "<!-- fields:end -->";
    let start = doc.find(begin).expect("begin marker") + begin.len();
    let stop = doc.find(end).expect("end marker");
    let expected = field_table();
    assert!(
        doc[start..stop] == expected,
        "docs/PRIVACY.md is out of date with the catalogue; paste this between the markers:\n{expected}"
    );
    for spec in CATALOGUE {
        for field in spec.personal_fields {
            assert_eq!(spec.schema()["properties"][*field]["x-relais-class"], "personal", "{}.{field}", spec.name);
        }
    }
}

#[tokio::test]
async fn the_catalogue_classes_every_field_and_marks_erasure_as_recorded_by_relais() {
    let app = spawn_app().await;
    let catalogue: Value =
        app.http.get(format!("{}/v1/catalogue", app.address)).send().await.expect("sent").json().await.expect("json");
    for t in catalogue["event_types"].as_array().expect("types") {
        for (name, class) in t["fields"].as_object().expect("fields") {
            assert_eq!(t["schema"]["properties"][name]["x-relais-class"], *class, "{}.{name}", t["type"]);
        }
        let has_client = t["schema"]["properties"].get("client_ref").is_some();
        if has_client {
            assert_eq!(t["fields"]["client_ref"], "personal", "{}", t["type"]);
        }
        assert_eq!(t["publishable"], t["type"] != "relais.client.erased");
    }
    let openapi: Value =
        app.http.get(format!("{}/openapi.json", app.address)).send().await.expect("sent").json().await.expect("json");
    for (path, method) in [("erasure", "post"), ("export", "get"), ("key", "post")] {
        let op = &openapi["paths"][format!("/v1/orgs/{{org}}/clients/{{client}}/{path}")][method];
        assert!(op["responses"].is_object(), "{path}");
    }
    assert!(openapi["paths"]["/v1/orgs/{org}/cases"]["get"].is_object());
}

/// apo with one client (`cl-f`, case `case-f`), and the erasure event Relais would record for
/// the client's key as apo's own system could forge it to publish straight to the log (its id
/// derives from the key): apo's token, the key, the erasure's id and the stored bytes.
async fn a_client_and_a_forged_erasure(app: &TestApp) -> (String, Uuid, Uuid, Vec<u8>) {
    let apo = app.token("apo", Role::Org).await;
    post_all(app, &apo, &[requested("apo", "case-f", "cl-f", "n"), accepted("apo", "case-f", "cl-f", "n")]).await;
    let key_id: Uuid =
        sqlx::query_scalar("SELECT key_id FROM client_keys").fetch_one(&app.pool).await.expect("the client's key");
    let erasure_id = relais_projections::erasure::erasure_event_id(key_id);
    let mut forged =
        event("apo", "relais.client.erased", &format!("clients/{key_id}"), json!({ "reason": "client_request" }));
    forged["id"] = json!(erasure_id.to_string());
    let (envelope, _) = Envelope::from_cloud_event(forged, Utc::now(), "direct").expect("valid envelope");
    (apo, key_id, erasure_id, StoredEvent::V1(envelope.split_for_storage().0).encode())
}

/// The validator judges erasures by the admission key and finds clients' keys by the pepper:
/// a process configured with another one would decide differently, so it does not start.
#[tokio::test]
async fn a_process_configured_with_another_admission_key_or_pepper_refuses_to_start() {
    let app = spawn_app().await;
    let other = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);
    for variable in ["RELAIS_ADMISSION_KEY", "RELAIS_CLIENT_REF_PEPPER"] {
        let (ok, _, err) = app.run_relais(&["status"], &[(variable, other.as_str())]).await;
        assert!(!ok, "{variable}");
        assert!(err.contains(&format!("{variable} is not the one this database was first used with")), "{err}");
    }
    let (ok, _, err) = app.run_relais(&["status"], &[]).await;
    assert!(ok, "the deployment's own secrets: {err}");

    // Nor does a serving process.
    let mut settings = app.settings.clone();
    settings.audit.admission_key = relais_audit::AdmissionKey::from_bytes([9; 32]);
    let Err(e) = Application::build(&settings, ServeRole::Projector).await else {
        panic!("a projector with another admission key started")
    };
    assert!(format!("{e:#}").contains("RELAIS_ADMISSION_KEY is not the one"), "{e:#}");

    // Without the variable, a command that does not need the secret is not checked on it; a
    // command that needs it and a serving process, which would generate one for development,
    // say what to set.
    let state = tempfile::tempdir().expect("dir");
    let unset = |args: &[&str]| {
        let mut c = app.relais_command(args);
        c.env_remove("RELAIS_ADMISSION_KEY").env("RELAIS_STATE_DIR", state.path());
        c
    };
    let out = unset(&["status"]).output().await.expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = unset(&["retention", "sweep", "--dry-run"]).output().await.expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("RELAIS_ADMISSION_KEY is not set"), "{err}");
    let out =
        tokio::time::timeout(std::time::Duration::from_secs(60), unset(&["serve", "--role", "projector"]).output())
            .await
            .expect("the projector stops at once")
            .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("RELAIS_ADMISSION_KEY is not set"), "{err}");
}

#[tokio::test]
async fn an_erasure_forged_before_the_real_one_is_refused_even_when_judged_after_it() {
    // The validator is not running yet: it meets the forged erasure only after the key's
    // destruction, as a validator that lags or a rebuild of its verdicts would.
    let app = spawn_app_with(ServeRole::Gateway).await;
    // apo's own system publishes the erasure Relais would record, without a message id.
    let (apo, key_id, erasure_id, bytes) = a_client_and_a_forged_erasure(&app).await;
    let forged_at = app
        .js
        .publish(format!("relais.ev.apo.clients.{key_id}"), bytes.into())
        .await
        .expect("sent")
        .await
        .expect("ack");
    // The real erasure: the key is destroyed and Relais appends its own erasure event.
    assert_eq!(app.erase(&apo, "apo", "cl-f").await.status(), 202);
    let recorded: Option<i64> = sqlx::query_scalar("SELECT erasure_seq FROM client_keys WHERE key_id = $1")
        .bind(key_id)
        .fetch_one(&app.pool)
        .await
        .expect("key row");
    let recorded = recorded.expect("the erasure is recorded");
    assert!(recorded as u64 > forged_at.sequence);

    let projector = start_projector(&app).await;
    app.wait_for_views().await;
    let quarantined = quarantine_rows(&app.pool).await;
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    assert_eq!((quarantined[0].0, quarantined[0].1.as_str()), (forged_at.sequence as i64, "erasure-without-key"));
    assert!(quarantined[0].2.contains("admission tag"), "{quarantined:?}");
    // Relais' own erasure holds the id, and the views applied it.
    let ledger = relais_projections::ledger::find(&app.pool, &[erasure_id]).await.expect("ledger");
    assert_eq!(ledger.get(&erasure_id).map(|r| r.sequence as i64), Some(recorded));
    let case: Value = app.get(&apo, "/v1/orgs/apo/cases/case-f").await.json().await.expect("json");
    assert_ne!(case["client_ref"], "cl-f", "{case}");
    projector.cancel();
}

#[tokio::test]
async fn an_erasure_forged_before_the_real_one_does_not_take_its_place() {
    let app = spawn_app_with_settings(ServeRole::All, |s| {
        s.stream.duplicate_window = std::time::Duration::from_secs(1);
    })
    .await;
    // apo's own system publishes the erasure Relais would record, before any erasure:
    // quarantined.
    let (apo, key_id, erasure_id, bytes) = a_client_and_a_forged_erasure(&app).await;
    let id = erasure_id.to_string();
    app.js
        .send_publish(
            format!("relais.ev.apo.clients.{key_id}"),
            async_nats::jetstream::message::PublishMessage::build().payload(bytes.into()).message_id(id.as_str()),
        )
        .await
        .expect("published")
        .await
        .expect("acknowledged");
    app.wait_for_views().await;
    assert_eq!(
        quarantine_rows(&app.pool).await.iter().map(|q| q.1.as_str()).collect::<Vec<_>>(),
        ["erasure-without-key"]
    );
    let erasure_seq = || async {
        sqlx::query_scalar::<_, Option<i64>>("SELECT erasure_seq FROM client_keys WHERE key_id = $1")
            .bind(key_id)
            .fetch_one(&app.pool)
            .await
            .expect("key row")
    };

    // Nor can an event of another type take the erasure's id.
    let mut squatter = requested("apo", "case-g", "cl-g", "n");
    squatter["id"] = json!(erasure_id.to_string());
    let r = app.post_event(&apo, &squatter).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.json::<Value>().await.expect("json")["pointer"], "/id");

    // The real erasure, while the broker still holds the forged message's id: the key is
    // destroyed, its event is owed (not taken as recorded by the forged message), and the
    // answer says so.
    let r = app.erase(&apo, "apo", "cl-f").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.json::<Value>().await.expect("json")["type"], "urn:relais:problem:unavailable");
    assert_eq!(erasure_seq().await, None);
    let destroyed: bool = sqlx::query_scalar("SELECT erased_at IS NOT NULL FROM client_keys WHERE key_id = $1")
        .bind(key_id)
        .fetch_one(&app.pool)
        .await
        .expect("key row");
    assert!(destroyed);
    // Past the broker's window, the erasure asked again records its event, which the views apply.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(app.erase(&apo, "apo", "cl-f").await.status(), 202);
    let recorded = erasure_seq().await.expect("the erasure event is recorded");
    assert!(recorded > 3, "recorded at {recorded}, after the forged message");
    app.wait_for_views().await;
    assert_eq!(quarantine_rows(&app.pool).await.len(), 1, "the real erasure is accepted");
    let case: Value = app.get(&apo, "/v1/orgs/apo/cases/case-f").await.json().await.expect("json");
    assert_ne!(case["client_ref"], "cl-f", "{case}");
    // An erasure of the destroyed key under another id, published straight to the log, is
    // refused: an erasure's id is its key's.
    let other =
        event("apo", "relais.client.erased", &format!("clients/{key_id}"), json!({ "reason": "client_request" }));
    let (envelope, _) = Envelope::from_cloud_event(other, Utc::now(), "direct").expect("valid envelope");
    let bytes = StoredEvent::V1(envelope.split_for_storage().0).encode();
    app.js.publish(format!("relais.ev.apo.clients.{key_id}"), bytes.into()).await.expect("sent").await.expect("ack");
    app.wait_for_views().await;
    let quarantined = quarantine_rows(&app.pool).await;
    assert_eq!(quarantined.len(), 2, "{quarantined:?}");
    assert!(quarantined[1].2.contains(&erasure_id.to_string()), "{quarantined:?}");
}

#[tokio::test]
async fn two_erasures_of_one_client_at_once_both_succeed_and_record_one_event() {
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    post_all(&app, &apo, &[requested("apo", "case-t", "cl-t", "n"), accepted("apo", "case-t", "cl-t", "n")]).await;
    app.wait_for_views().await;
    let key_id: Uuid =
        sqlx::query_scalar("SELECT key_id FROM client_keys").fetch_one(&app.pool).await.expect("the client's key");
    let erasure_id = relais_projections::erasure::erasure_event_id(key_id);
    // The first erasure's record of its event waits on a lock the test holds (as does the
    // validator's): the second erasure's publish is acknowledged as a duplicate meanwhile.
    let lock = hold_ledger_inserts(&app.pool, &format!("NEW.event_id = '{erasure_id}'")).await;
    let first = tokio::spawn({
        let (url, token) = (app.address.clone(), apo.clone());
        async move {
            reqwest::Client::new()
                .post(format!("{url}/v1/orgs/apo/clients/cl-t/erasure"))
                .bearer_auth(token)
                .send()
                .await
                .expect("answered")
                .status()
        }
    });
    wait_for_a_held_ledger_insert(&app.pool).await;
    let second = async { app.erase(&apo, "apo", "cl-t").await.status() };
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        release_ledger_inserts(lock).await;
    };
    let (second, ()) = tokio::join!(second, release);
    let first = first.await.expect("first erasure");
    assert_eq!((first.as_u16(), second.as_u16()), (202, 200));
    app.wait_for_views().await;
    let erasures: i64 = sqlx::query_scalar("SELECT count(*) FROM event_ledger WHERE event_id = $1")
        .bind(erasure_id)
        .fetch_one(&app.pool)
        .await
        .expect("ledger");
    assert_eq!(erasures, 1);
    assert!(quarantine_rows(&app.pool).await.is_empty());
    let recorded: Option<i64> = sqlx::query_scalar("SELECT erasure_seq FROM client_keys WHERE key_id = $1")
        .bind(key_id)
        .fetch_one(&app.pool)
        .await
        .expect("key row");
    assert!(recorded.is_some());
}

#[tokio::test]
async fn an_erasure_retried_while_a_later_copy_of_its_event_waits_for_the_validator_is_recorded_at_the_first() {
    // No projector at first: what the validator will judge piles up.
    let app = spawn_app_with_settings(ServeRole::Gateway, |s| {
        s.stream.duplicate_window = std::time::Duration::from_secs(2);
    })
    .await;
    let apo = app.token("apo", Role::Org).await;
    post_all(&app, &apo, &[requested("apo", "case-r", "cl-r", "n")]).await;
    let key_id: Uuid =
        sqlx::query_scalar("SELECT key_id FROM client_keys").fetch_one(&app.pool).await.expect("the client's key");
    let erasure_id = relais_projections::erasure::erasure_event_id(key_id);
    // Two attempts whose answers were lost, the second past the broker's window: the log holds
    // two copies of the erasure event, and nothing says so in the database.
    let forget = || async {
        sqlx::query("DELETE FROM event_ledger WHERE event_id = $1")
            .bind(erasure_id)
            .execute(&app.pool)
            .await
            .expect("ledger");
        sqlx::query("UPDATE client_keys SET erasure_seq = NULL").execute(&app.pool).await.expect("key");
    };
    assert_eq!(app.erase(&apo, "apo", "cl-r").await.status(), 202);
    forget().await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(app.erase(&apo, "apo", "cl-r").await.status(), 202);
    forget().await;
    assert_eq!(app.stream_messages().await, 3);
    // A third attempt, within the window of the second copy, while the validator's record of
    // the first copy waits: the answer comes once the validator judged it.
    let lock = hold_ledger_inserts(&app.pool, &format!("NEW.event_id = '{erasure_id}'")).await;
    let projector = Application::build(&app.settings, ServeRole::Projector).await.expect("projector");
    let stop = projector.shutdown_token();
    tokio::spawn(projector.run_until_stopped());
    wait_for_a_held_ledger_insert(&app.pool).await;
    let third = async { app.erase(&apo, "apo", "cl-r").await };
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        release_ledger_inserts(lock).await;
    };
    let (third, ()) = tokio::join!(third, release);
    assert_eq!(third.status(), 200);
    let answer: Value = third.json().await.expect("json");
    assert_eq!(answer["sequence"], 2, "{answer}");
    let recorded: Option<i64> = sqlx::query_scalar("SELECT erasure_seq FROM client_keys WHERE key_id = $1")
        .bind(key_id)
        .fetch_one(&app.pool)
        .await
        .expect("key row");
    assert_eq!(recorded, Some(2));
    app.wait_for_views().await;
    assert_eq!(
        quarantine_rows(&app.pool).await.iter().map(|q| (q.0, q.1.as_str())).collect::<Vec<_>>(),
        [(3, "duplicate")]
    );
    stop.cancel();
}
