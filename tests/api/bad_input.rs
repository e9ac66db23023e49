//! Bad input of every kind the autonomy issue lists (unknown or revoked tokens, forged
//! sources, oversized bodies and batches, wrong media types, events for unknown
//! organisations) and then some: each gets its problem details, and nothing changes anywhere.
//! (tests/api/ingest.rs covers the first cases of the spine; these are the others.)

use crate::helpers::*;
use base64::Engine as _;
use bytes::Bytes;
use relais_projections::{Role, TokenStore};
use serde_json::{Value, json};
use std::fmt::Write as _;
use uuid::Uuid;

/// Everything a request could change: the log, and every table a request writes.
async fn snapshot(app: &TestApp) -> Vec<(String, (i64, String))> {
    let mut out = vec![("stream".to_owned(), (app.stream_messages().await as i64, String::new()))];
    for (table, order) in [
        ("event_ledger", "seq"),
        ("client_keys", "key_id"),
        ("api_tokens", "id"),
        ("access_log", "id"),
        ("quarantine", "seq"),
        ("caseload", "org_id, case_id"),
    ] {
        out.push((table.to_owned(), table_checksum(&app.pool, table, order).await));
    }
    out
}

fn example(event_type: &str, org: &str, subject_kind: &str) -> Value {
    let spec = relais_domain::events::spec(event_type).expect("known type");
    event(org, event_type, &format!("{subject_kind}/{}", Uuid::new_v4().simple()), spec.example_data())
}

/// One bad request and the problem it must get.
struct Bad {
    what: &'static str,
    request: reqwest::RequestBuilder,
    status: u16,
    problem: &'static str,
    /// The JSON pointer the problem must carry, if any.
    pointer: Option<&'static str>,
}

#[tokio::test]
async fn bad_input_gets_problem_details_and_changes_nothing() {
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    let coordination = app.token("coordination", Role::Org).await;
    let store = TokenStore::new(app.pool.clone());
    let (revoked_id, revoked) =
        store.create(&relais_domain::OrgId::parse("apo").expect("valid"), Role::Org, "revoked").await.expect("token");
    assert!(store.revoke(revoked_id).await.expect("revoked"));
    // Something stored already, so that "unchanged" is about real rows.
    assert_eq!(app.post_event(&apo, &guidance_requested("apo", "case-0", "cl-0")).await.status(), 201);
    app.wait_for_projection("caseload").await;

    let events = format!("{}/v1/events", app.address);
    let post = |token: &str, content_type: &str, body: String| {
        app.http.post(&events).bearer_auth(token).header("content-type", content_type).body(body)
    };
    let single = |token: &str, body: &Value| post(token, "application/cloudevents+json", body.to_string());
    let batch =
        |token: &str, body: &[Value]| post(token, "application/cloudevents-batch+json", json!(body).to_string());
    let valid = || guidance_requested("apo", &format!("case-{}", Uuid::new_v4().simple()), "cl-1");
    let with = |mut e: Value, pointer: &str, value: Value| {
        *e.pointer_mut(pointer).expect("pointer exists") = value;
        e
    };
    let without = |mut e: Value, field: &str| {
        e.as_object_mut().expect("object").remove(field);
        e
    };
    let over_limit = 4 * 1024 * 1024 + 1;
    // A valid batch padded with whitespace beyond the body limit.
    let padded = format!("[{}{}]", valid(), " ".repeat(over_limit));
    let chunks: Vec<Result<Bytes, std::io::Error>> = (0..80).map(|_| Ok(Bytes::from(vec![b' '; 64 * 1024]))).collect();
    let referral = example("relais.referral.made", "apo", "referrals");
    let consent = example("relais.consent.given", "apo", "cases");
    let activity = example("relais.activity.planned", "coordination", "activities");
    let duplicate = valid();

    let cases: Vec<Bad> = vec![
        // Tokens.
        Bad {
            what: "an unknown token",
            request: single("rls_unknownUnknownUnknownUnknownUnknown00000", &valid()),
            status: 401,
            problem: "unauthenticated",
            pointer: None,
        },
        Bad {
            what: "a revoked token",
            request: single(&revoked, &valid()),
            status: 401,
            problem: "unauthenticated",
            pointer: None,
        },
        Bad {
            what: "a token without the rls_ prefix",
            request: single("not-a-relais-token", &valid()),
            status: 401,
            problem: "unauthenticated",
            pointer: None,
        },
        Bad {
            what: "an overlong token",
            request: single(&format!("rls_{}", "A".repeat(10_000)), &valid()),
            status: 401,
            problem: "unauthenticated",
            pointer: None,
        },
        Bad {
            what: "another authorization scheme",
            request: app
                .http
                .post(&events)
                .header("authorization", format!("Basic {apo}"))
                .header("content-type", "application/cloudevents+json")
                .body(valid().to_string()),
            status: 401,
            problem: "unauthenticated",
            pointer: None,
        },
        Bad {
            what: "an unknown token and a wrong media type: the token is judged first",
            request: post("rls_unknownUnknownUnknownUnknownUnknown00000", "text/plain", valid().to_string()),
            status: 401,
            problem: "unauthenticated",
            pointer: None,
        },
        // Forged sources.
        Bad {
            what: "an unknown organisation as source",
            request: single(&apo, &with(valid(), "/source", json!("/orgs/nobody"))),
            status: 403,
            problem: "wrong-organisation",
            pointer: Some("/source"),
        },
        Bad {
            what: "another organisation's source deep in a batch",
            request: batch(&apo, &[valid(), valid(), guidance_requested("dsr", "case-x", "cl-x")]),
            status: 403,
            problem: "wrong-organisation",
            pointer: Some("/2/source"),
        },
        Bad {
            what: "no source",
            request: single(&apo, &without(valid(), "source")),
            status: 400,
            problem: "invalid-event",
            pointer: Some("/source"),
        },
        Bad {
            what: "a source that is not /orgs/<id>",
            request: single(&apo, &with(valid(), "/source", json!("apo"))),
            status: 400,
            problem: "invalid-event",
            pointer: Some("/source"),
        },
        // Oversized.
        Bad {
            what: "a batch body over the limit, padded",
            request: post(&apo, "application/cloudevents-batch+json", padded),
            status: 413,
            problem: "too-large",
            pointer: None,
        },
        Bad {
            what: "a body over the limit without a content length (chunked)",
            request: app
                .http
                .post(&events)
                .bearer_auth(&apo)
                .header("content-type", "application/cloudevents+json")
                .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks))),
            status: 413,
            problem: "too-large",
            pointer: None,
        },
        Bad {
            what: "an overlong free text",
            request: single(&apo, &{
                let mut e = valid();
                e["data"]["note"] = json!("n".repeat(501));
                e
            }),
            status: 400,
            problem: "invalid-event",
            pointer: Some("/data/note"),
        },
        Bad {
            what: "an overlong actor",
            request: single(&apo, &{
                let mut e = valid();
                e["actor"] = json!("a".repeat(129));
                e
            }),
            status: 400,
            problem: "invalid-event",
            pointer: Some("/actor"),
        },
        // Media types and shapes.
        Bad {
            what: "no media type",
            request: app.http.post(&events).bearer_auth(&apo).body(valid().to_string()),
            status: 415,
            problem: "unsupported-media-type",
            pointer: None,
        },
        Bad {
            what: "text/plain",
            request: post(&apo, "text/plain", valid().to_string()),
            status: 415,
            problem: "unsupported-media-type",
            pointer: None,
        },
        Bad {
            what: "a form",
            request: post(&apo, "multipart/form-data; boundary=x", valid().to_string()),
            status: 415,
            problem: "unsupported-media-type",
            pointer: None,
        },
        Bad {
            what: "one event sent as a batch",
            request: post(&apo, "application/cloudevents-batch+json", valid().to_string()),
            status: 400,
            problem: "invalid-event",
            pointer: Some(""),
        },
        Bad {
            what: "a batch sent as one event",
            request: post(&apo, "application/cloudevents+json", json!([valid()]).to_string()),
            status: 400,
            problem: "invalid-event",
            pointer: Some(""),
        },
        Bad {
            what: "an empty batch",
            request: batch(&apo, &[]),
            status: 400,
            problem: "invalid-event",
            pointer: Some(""),
        },
        // Events for unknown organisations.
        Bad {
            what: "a referral to an organisation outside the registry",
            request: single(&apo, &with(referral.clone(), "/data/destination", json!({ "organisation": "nobody" }))),
            status: 400,
            problem: "invalid-event",
            pointer: Some("/data/destination/organisation"),
        },
        Bad {
            what: "a consent to share with an organisation outside the registry",
            request: single(
                &apo,
                &with(consent.clone(), "/data/scope", json!({ "share_with_organisation": "nobody" })),
            ),
            status: 400,
            problem: "invalid-event",
            pointer: Some("/data/scope/share_with_organisation"),
        },
        Bad {
            what: "an activity with a partner outside the registry",
            request: single(&coordination, &with(activity.clone(), "/data/partners", json!(["caw-brussel", "nobody"]))),
            status: 400,
            problem: "invalid-event",
            pointer: Some("/data/partners/1"),
        },
        Bad {
            what: "a batch whose second event names an organisation outside the registry",
            request: batch(
                &apo,
                &[valid(), with(referral.clone(), "/data/destination", json!({ "organisation": "nobody" }))],
            ),
            status: 400,
            problem: "invalid-event",
            pointer: Some("/1/data/destination/organisation"),
        },
        // Other shapes Relais refuses.
        Bad {
            what: "an attribute only Relais sets",
            request: single(&apo, &{
                let mut e = valid();
                e["recordedat"] = json!("2026-03-02T09:30:00Z");
                e
            }),
            status: 400,
            problem: "invalid-event",
            pointer: Some("/recordedat"),
        },
        Bad {
            what: "the same id twice in a batch",
            request: batch(&apo, &[duplicate.clone(), with(valid(), "/id", duplicate["id"].clone())]),
            status: 400,
            problem: "invalid-event",
            pointer: Some("/1/id"),
        },
        // Other endpoints.
        Bad {
            what: "a method the resource does not have",
            request: app.http.get(&events).bearer_auth(&apo),
            status: 405,
            problem: "method-not-allowed",
            pointer: None,
        },
        Bad {
            what: "deleting a caseload",
            request: app.http.delete(format!("{}/v1/orgs/apo/cases", app.address)).bearer_auth(&apo),
            status: 405,
            problem: "method-not-allowed",
            pointer: None,
        },
        Bad {
            what: "an unknown path",
            request: app.http.get(format!("{}/v1/nothing-here", app.address)).bearer_auth(&apo),
            status: 404,
            problem: "not-found",
            pointer: None,
        },
        Bad {
            what: "a limit that is not a number",
            request: app.http.get(format!("{}/v1/orgs/apo/cases?limit=ten", app.address)).bearer_auth(&apo),
            status: 400,
            problem: "invalid-parameter",
            pointer: Some("?limit"),
        },
        Bad {
            what: "a boolean that is not one",
            request: app.http.get(format!("{}/v1/orgs/apo/cases?in_detention=maybe", app.address)).bearer_auth(&apo),
            status: 400,
            problem: "invalid-parameter",
            pointer: Some("?in_detention"),
        },
        Bad {
            what: "a forged cursor",
            request: app.http.get(format!("{}/v1/orgs/apo/cases?cursor=Zm9yZ2Vk", app.address)).bearer_auth(&apo),
            status: 400,
            problem: "invalid-parameter",
            pointer: Some("?cursor"),
        },
        Bad {
            what: "an unknown status",
            request: app.http.get(format!("{}/v1/orgs/apo/cases?status=astral", app.address)).bearer_auth(&apo),
            status: 400,
            problem: "invalid-parameter",
            pointer: Some("?status"),
        },
    ];

    let before = snapshot(&app).await;
    let mut failures = String::new();
    for bad in cases {
        let r = bad.request.send().await.expect("request sent");
        let status = r.status().as_u16();
        let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        let problem = format!("urn:relais:problem:{}", bad.problem);
        let pointer_ok = bad.pointer.is_none_or(|p| body["pointer"] == p);
        if status != bad.status
            || content_type != "application/problem+json"
            || body["type"] != problem.as_str()
            || body["status"] != bad.status
            || !pointer_ok
        {
            let _ = writeln!(
                failures,
                "{}: {status} {content_type} {body} (expected {} {problem} at {:?})",
                bad.what, bad.status, bad.pointer
            );
        }
    }
    assert!(failures.is_empty(), "bad input answered wrongly:\n{failures}");
    assert_eq!(snapshot(&app).await, before, "bad input changed something");

    // The same requests made right are accepted: the cases above fail for the reason named.
    let charset = post(&apo, "application/cloudevents+json; charset=utf-8", valid().to_string());
    assert_eq!(charset.send().await.expect("sent").status(), 201);
    assert_eq!(single(&apo, &referral).send().await.expect("sent").status(), 201);
    assert_eq!(single(&apo, &consent).send().await.expect("sent").status(), 201);
    assert_eq!(single(&coordination, &activity).send().await.expect("sent").status(), 201);
}

#[tokio::test]
async fn every_query_parameter_unknown_of_the_wrong_type_or_with_a_nul_is_a_problem_naming_it_and_changes_nothing() {
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    let coordinator = app.token("coordination", Role::Coordinator).await;
    let auditor = app.token("coordination", Role::Auditor).await;
    let cursor = |text: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text);
    let cases_far_back = format!("/v1/orgs/apo/cases?cursor={}", cursor("-9000000000000000000|case-1"));
    let referrals_far_back = format!("/v1/orgs/apo/referrals?cursor={}", cursor(r#"["-5000-01-01T00:00:00Z","r-1"]"#));
    let referrals_nul = format!("/v1/orgs/apo/referrals?cursor={}", cursor(r#"["2026-01-01T00:00:00Z","r\u0000"]"#));
    let requests: &[(&str, &str, &str)] = &[
        (&apo, "/v1/orgs/apo/cases/case-1/timeline?limit=ten", "?limit"),
        (&apo, "/v1/orgs/apo/referrals?open=maybe", "?open"),
        (&apo, "/v1/orgs/apo/referrals?limit=1.5", "?limit"),
        (&apo, "/v1/orgs/apo/coming-up?days=x", "?days"),
        (&apo, "/v1/orgs/apo/activities?limit=-x", "?limit"),
        (&apo, "/v1/orgs/apo/worklist?release_days=soon", "?release_days"),
        (&apo, "/v1/orgs/apo/statistics?from=garbage", "?from"),
        (&coordinator, "/v1/statistics?to=2026-13-01", "?to"),
        (&coordinator, "/v1/monitor/alerts?limit=x", "?limit"),
        (&coordinator, "/v1/monitor/persons?limit=x", "?limit"),
        (&apo, "/v1/orgs/apo/quarantine?limit=x", "?limit"),
        (&apo, "/v1/orgs/apo/cases?limit=x", "?limit"),
        // A typo in a filter would otherwise list everything, unfiltered.
        (&apo, "/v1/orgs/apo/cases?stauts=closed", "?stauts"),
        (&apo, "/v1/orgs/apo/cases/case-1?asof=2026-01-01T00:00:00Z", "?asof"),
        (&apo, "/v1/orgs/apo/referrals?direction=in&limit=5&limit=6", "?limit"),
        (&coordinator, "/v1/monitor/alerts?organisation=apo", "?organisation"),
        (&apo, "/v1/orgs/apo/statistics?authority=cocom", "?authority"),
        (&auditor, "/v1/audit/access?org=NOPE", "?org"),
        // A NUL cannot be stored in PostgreSQL text: refused before any handler, not a 500.
        (&apo, "/v1/orgs/apo/cases?cursor=a%00b", "?cursor"),
        // Crafted cursors holding what PostgreSQL refuses: a moment before year 1, a NUL.
        (&apo, &cases_far_back, "?cursor"),
        (&apo, &referrals_far_back, "?cursor"),
        (&apo, &referrals_nul, "?cursor"),
        (&apo, "/v1/orgs/apo/cases/case%00-1", "?case"),
        (&apo, "/v1/orgs/apo/cases/case%FF", "?case"),
        (&apo, "/v1/orgs/apo/clients/cl%00/export", "?client"),
        (&apo, "/v1/orgs/ap%00o/referrals", "?org"),
    ];
    let before = snapshot(&app).await;
    let mut failures = String::new();
    for (token, path, pointer) in requests {
        let r = app.get(token, path).await;
        let status = r.status().as_u16();
        let content_type = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status != 400
            || content_type != "application/problem+json"
            || body["type"] != "urn:relais:problem:invalid-parameter"
            || body["pointer"] != *pointer
        {
            let _ = writeln!(failures, "{path}: {status} {content_type} {body} (expected 400 at {pointer})");
        }
    }
    assert!(failures.is_empty(), "query parameters answered wrongly:\n{failures}");
    assert_eq!(snapshot(&app).await, before, "bad query parameters changed something");
    // The same endpoints with valid parameters answer.
    for (token, path) in [
        (&apo, "/v1/orgs/apo/referrals?open=true&limit=5"),
        (&apo, "/v1/orgs/apo/coming-up?days=7"),
        (&coordinator, "/v1/monitor/alerts?limit=5"),
        (&coordinator, "/v1/statistics?from=2026-01-01&to=2026-12-31"),
    ] {
        assert_eq!(app.get(token, path).await.status(), 200, "{path}");
    }
}

#[tokio::test]
async fn a_bad_erasure_request_is_a_problem_naming_what_is_wrong_and_erases_nothing() {
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    app.publish(&apo, &open_case("apo", "case-1", "cl-1")).await;
    app.wait_for_views().await;
    let url = format!("{}/v1/orgs/apo/clients/cl-1/erasure", app.address);
    let requests: Vec<(Vec<u8>, u16, Option<&str>)> = vec![
        (b"not json".to_vec(), 400, Some("")),
        (br#"{"reason": "whim"}"#.to_vec(), 400, Some("/reason")),
        (br#""client_request""#.to_vec(), 400, Some("")),
        // Past axum's body limit: its own rejection, answered as a problem too.
        (vec![b' '; 3 * 1024 * 1024], 413, None),
    ];
    let before = snapshot(&app).await;
    for (body, status, pointer) in requests {
        let r = app.http.post(&url).bearer_auth(&apo).body(body).send().await.expect("sent");
        assert_eq!(r.status().as_u16(), status);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let problem: Value = r.json().await.expect("json");
        assert_eq!(problem["status"], status, "{problem}");
        if let Some(pointer) = pointer {
            assert_eq!(problem["pointer"], pointer, "{problem}");
        }
    }
    assert_eq!(snapshot(&app).await, before, "nothing changed");
}

#[tokio::test]
async fn the_demo_refuses_a_database_that_already_holds_relais_data() {
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    app.publish(&apo, &open_case("apo", "case-1", "cl-1")).await;
    app.wait_for_views().await;
    let before = snapshot(&app).await;
    // The test application's environment names its own, used, database.
    let (ok, _, err) = app.run_relais(&["demo", "--clients", "5", "--exit-after-load"], &[]).await;
    assert!(!ok, "the demo ran into a used database");
    assert!(err.contains("already holds Relais data"), "{err}");
    assert_eq!(snapshot(&app).await, before, "nothing changed");
}

#[tokio::test]
async fn a_body_malformed_on_the_way_is_a_400_not_a_413_and_stores_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    let before = snapshot(&app).await;
    let address = app.address.trim_start_matches("http://").to_owned();
    let mut connection = tokio::net::TcpStream::connect(&address).await.expect("connected");
    // A chunked body whose second chunk size is not hexadecimal: cut off by a broken client
    // or proxy, not too large.
    let request = format!(
        "POST /v1/events HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {apo}\r\n\
         Content-Type: application/cloudevents+json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{{\"a\":\r\nzz\r\n"
    );
    connection.write_all(request.as_bytes()).await.expect("sent");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), connection.read_to_end(&mut response)).await;
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("application/problem+json"), "{text}");
    assert!(text.contains("could not be read to its end"), "{text}");
    assert_eq!(snapshot(&app).await, before, "nothing changed");
}

#[tokio::test]
async fn a_message_on_a_subject_postgresql_cannot_store_is_quarantined_and_judging_goes_on() {
    // nats-server checks subjects only for clients that ask it to: an organisation's own
    // system may publish on a subject of its own holding a NUL, or thousands of characters.
    let app = spawn_app().await;
    let token = app.token("apo", Role::Org).await;
    let long =
        format!("relais.ev.apo.cases.{}", (0..100).map(|_| Uuid::new_v4().simple().to_string()).collect::<String>());
    for subject in ["relais.ev.apo.cases.x\0y".to_owned(), long] {
        app.js
            .publish(subject, Bytes::from_static(b"not an event"))
            .await
            .expect("published")
            .await
            .expect("stored by the broker");
    }
    assert_eq!(app.post_event(&token, &guidance_requested("apo", "case-after", "cl-after")).await.status(), 201);
    wait_for_checkpoint(&app.pool, "caseload", 3).await;
    let rows: Vec<(i64, String, String)> = sqlx::query_as("SELECT seq, subject, reason FROM quarantine ORDER BY seq")
        .fetch_all(&app.pool)
        .await
        .expect("q");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].1, "relais.ev.apo.cases.x\\0y");
    assert!(rows[1].1.len() < 300 && rows[1].1.ends_with('…'), "{}", rows[1].1);
    assert!(rows.iter().all(|r| r.2 == "subject"), "{rows:?}");
    let cases: i64 = sqlx::query_scalar("SELECT count(*) FROM caseload").fetch_one(&app.pool).await.expect("count");
    assert_eq!(cases, 1);
}
