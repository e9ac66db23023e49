//! The shared continuity monitor: consented clients by linkage key, alerts opening (time-based
//! ones with a controllable clock, without a new event) and closing with the event that
//! resolves them, withdrawal, expiry and erasure forgetting, and no case identifiers shown.

use crate::helpers::*;
use chrono::{DateTime, TimeZone, Utc};
use relais::startup::ServeRole;
use relais_projections::{ManualClock, Role};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::sync::Arc;

fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).single().expect("a time")
}

fn linkage_key(person: &str) -> String {
    hex::encode(Sha256::digest(person.as_bytes()))
}

async fn monitor_app(now: DateTime<Utc>) -> (TestApp, ManualClock) {
    let clock = ManualClock::new(now);
    let c = clock.clone();
    let app = spawn_app_with_settings(ServeRole::All, move |s| {
        s.clock = Arc::new(c);
        s.clock_tick = std::time::Duration::from_millis(100);
    })
    .await;
    (app, clock)
}

fn case(org: &str, case: &str, time: &str, event_type: &str, data: Value) -> Value {
    event_at(org, event_type, &format!("cases/{case}"), time, data)
}

fn referral(org: &str, id: &str, time: &str, event_type: &str, data: Value) -> Value {
    event_at(org, event_type, &format!("referrals/{id}"), time, data)
}

/// Opens a case in detention (or at liberty) with a consent to the continuity monitor.
fn joined(org: &str, id: &str, client: &str, lk: &str, day: &str, in_detention: bool) -> Vec<Value> {
    let mut v = vec![
        case(
            org,
            id,
            &format!("{day}T08:00:00Z"),
            "relais.guidance.requested",
            json!({ "client_ref": client, "channel": "by_person", "language": "fr" }),
        ),
        case(
            org,
            id,
            &format!("{day}T08:01:00Z"),
            "relais.guidance.accepted",
            json!({
            "client_ref": client, "setting": if in_detention { "in_detention" } else { "at_liberty" }, "legal_status": "convict" }),
        ),
    ];
    if in_detention {
        v.push(case(
            org,
            id,
            &format!("{day}T08:02:00Z"),
            "relais.detention.started",
            json!({
            "client_ref": client, "legal_status": "convict", "prison": "haren", "started_on": "2026-01-10" }),
        ));
    }
    v.push(case(
        org,
        id,
        &format!("{day}T08:03:00Z"),
        "relais.consent.given",
        json!({
        "client_ref": client, "scope": "continuity_monitor", "linkage_key": lk }),
    ));
    v
}

async fn alerts(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let page = app.get_json(token, &format!("/v1/monitor/alerts?{query}"), 200).await;
    page["items"].as_array().expect("items").clone()
}

fn kinds(alerts: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = alerts.iter().map(|a| a["kind"].as_str().unwrap_or_default().to_owned()).collect();
    k.sort();
    k
}

/// Waits for the monitor's tick to bring the alerts to `expected` (no event is published).
async fn wait_for_alerts(app: &TestApp, token: &str, query: &str, expected: &[&str]) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let found = alerts(app, token, query).await;
        if kinds(&found) == expected {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "alerts {:?}, expected {expected:?}", kinds(&found));
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn alerts_open_with_the_clock_and_close_with_the_event_that_resolves_them() {
    let (app, clock) = monitor_app(at(2026, 3, 2, 12)).await;
    let apo = app.token("apo", Role::Org).await;
    let caw = app.token("caw-brussel", Role::Org).await;
    let dsr = app.token("dsr", Role::Org).await;
    let coordinator = app.token("coordination", Role::Coordinator).await;
    let lk_a = linkage_key("person-a");
    let lk_b = linkage_key("person-b");

    // Person A: in detention, followed by apo, referred to caw-brussel, which knows the person too.
    let mut a = joined("apo", "case-ma", "ap-ma", &lk_a, "2026-03-02", true);
    a.push(case(
        "apo",
        "case-ma",
        "2026-03-02T09:00:00Z",
        "relais.consent.given",
        json!({
        "client_ref": "ap-ma", "scope": { "share_with_organisation": "caw-brussel" } }),
    ));
    a.push(referral("apo", "ref-a", "2026-03-02T10:00:00Z", "relais.referral.made", json!({
        "client_ref": "ap-ma", "destination": { "organisation": "caw-brussel" }, "life_domains": ["housing"], "case_id": "case-ma" })));
    app.publish(&apo, &a).await;
    app.publish(&caw, &joined("caw-brussel", "case-ka", "caw-ka", &lk_a, "2026-03-02", false)).await;
    app.wait_for_views().await;
    assert_eq!(alerts(&app, &coordinator, "").await, Vec::<Value>::new());
    let persons = app.get_json(&coordinator, "/v1/monitor/persons", 200).await;
    let person = &persons["items"][0];
    assert_eq!(person["linkage_key"], lk_a.as_str());
    let orgs: Vec<&str> =
        person["organisations"].as_array().expect("list").iter().filter_map(|o| o["organisation"].as_str()).collect();
    assert_eq!(orgs, vec!["apo", "caw-brussel"]);
    assert_eq!(person["open_referrals"][0]["to_organisation"], "caw-brussel");

    // Ten working days later (Monday 2 March + 10 = Monday 16 March), without any new event.
    clock.set(at(2026, 3, 16, 20));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(alerts(&app, &coordinator, "").await, Vec::<Value>::new(), "not before the deadline");
    clock.set(at(2026, 3, 17, 11));
    let open = wait_for_alerts(&app, &coordinator, "", &["referral_unanswered"]).await;
    assert_eq!(open[0]["linkage_key"], lk_a.as_str());
    assert_eq!(open[0]["organisation"], "apo");
    assert_eq!(open[0]["other_organisation"], "caw-brussel");
    assert_eq!(open[0]["opened_at"], "2026-03-16T23:00:00Z");
    assert_eq!(open[0]["open_for_seconds"], 12 * 3600);
    clock.set(at(2026, 3, 20, 8));
    assert_eq!(alerts(&app, &coordinator, "").await[0]["open_for_days"], 3);

    // caw-brussel accepts: the alert closes at that moment.
    clock.set(at(2026, 3, 20, 10));
    app.publish(
        &caw,
        &[
            referral(
                "caw-brussel",
                "ref-a",
                "2026-03-20T09:00:00Z",
                "relais.referral.received",
                json!({ "client_ref": "caw-ka" }),
            ),
            referral(
                "caw-brussel",
                "ref-a",
                "2026-03-20T09:05:00Z",
                "relais.referral.accepted",
                json!({ "client_ref": "caw-ka" }),
            ),
        ],
    )
    .await;
    app.wait_for_views().await;
    assert_eq!(alerts(&app, &coordinator, "").await, Vec::<Value>::new());
    let closed = alerts(&app, &coordinator, "state=closed").await;
    assert_eq!(kinds(&closed), vec!["referral_unanswered"]);
    assert_eq!(closed[0]["closed_at"], "2026-03-20T09:05:00Z");

    // Person B: a release is scheduled, nobody arranges follow-up.
    let mut b = joined("apo", "case-mb", "ap-mb", &lk_b, "2026-03-20", true);
    b.push(case(
        "apo",
        "case-mb",
        "2026-03-20T10:00:00Z",
        "relais.release.scheduled",
        json!({
        "client_ref": "ap-mb", "kind": "end_of_sentence", "release_on": "2026-04-10" }),
    ));
    app.publish(&apo, &b).await;
    app.wait_for_views().await;
    assert_eq!(alerts(&app, &coordinator, "kind=release_without_followup").await, Vec::<Value>::new());
    clock.set(at(2026, 3, 28, 9));
    let open = wait_for_alerts(&app, &coordinator, "", &["release_without_followup"]).await;
    assert_eq!(open[0]["linkage_key"], lk_b.as_str());
    assert_eq!(open[0]["opened_at"], "2026-03-26T23:00:00Z", "fourteen days before, at midnight in Brussels");
    assert_eq!(open[0]["detail"]["release_on"], "2026-04-10");

    // A referral accepted by dsr is follow-up: the alert closes.
    app.publish(&apo, &[
        case("apo", "case-mb", "2026-03-29T09:00:00Z", "relais.consent.given", json!({
            "client_ref": "ap-mb", "scope": { "share_with_organisation": "dsr" } })),
        referral("apo", "ref-b", "2026-03-29T09:10:00Z", "relais.referral.made", json!({
            "client_ref": "ap-mb", "destination": { "organisation": "dsr" }, "life_domains": ["housing"], "case_id": "case-mb" })),
    ]).await;
    app.publish(
        &dsr,
        &[referral(
            "dsr",
            "ref-b",
            "2026-03-30T09:00:00Z",
            "relais.referral.accepted",
            json!({ "client_ref": "dsr-b" }),
        )],
    )
    .await;
    app.wait_for_views().await;
    clock.set(at(2026, 3, 30, 12));
    let closed = wait_for_alerts(
        &app,
        &coordinator,
        "state=closed&kind=release_without_followup",
        &["release_without_followup"],
    )
    .await;
    assert_eq!(closed[0]["closed_at"], "2026-03-30T09:00:00Z");
    assert_eq!(alerts(&app, &coordinator, "").await, Vec::<Value>::new());

    // Released, then guidance closed at apo, while the referral to dsr is still open.
    clock.set(at(2026, 4, 11, 12));
    app.publish(
        &apo,
        &[
            case(
                "apo",
                "case-mb",
                "2026-04-10T09:00:00Z",
                "relais.detainee.released",
                json!({
            "client_ref": "ap-mb", "kind": "end_of_sentence", "released_on": "2026-04-10" }),
            ),
            case(
                "apo",
                "case-mb",
                "2026-04-11T09:00:00Z",
                "relais.guidance.closed",
                json!({ "client_ref": "ap-mb", "reason": "released_and_handed_over" }),
            ),
        ],
    )
    .await;
    app.wait_for_views().await;
    let open = alerts(&app, &coordinator, "").await;
    assert_eq!(kinds(&open), vec!["closed_with_open_referral", "released_with_open_referral"]);
    assert!(open.iter().all(|a| a["other_organisation"] == "dsr" && a["linkage_key"] == lk_b.as_str()));
    assert_eq!(alerts(&app, &coordinator, "org=dsr").await.len(), 2);
    assert_eq!(alerts(&app, &coordinator, &format!("linkage_key={lk_a}")).await.len(), 0);
    app.publish(
        &dsr,
        &[
            referral(
                "dsr",
                "ref-b",
                "2026-04-11T10:00:00Z",
                "relais.referral.first_contact_made",
                json!({ "client_ref": "dsr-b" }),
            ),
            referral(
                "dsr",
                "ref-b",
                "2026-04-11T11:00:00Z",
                "relais.referral.completed",
                json!({ "client_ref": "dsr-b", "outcome": "in_guidance" }),
            ),
        ],
    )
    .await;
    app.wait_for_views().await;
    assert_eq!(alerts(&app, &coordinator, "").await, Vec::<Value>::new());
    assert_eq!(alerts(&app, &coordinator, "state=all").await.len(), 4);

    // Never a case id or a client reference, to the coordinator.
    let everything = format!(
        "{}{}",
        app.get_json(&coordinator, "/v1/monitor/alerts?state=all", 200).await,
        app.get_json(&coordinator, "/v1/monitor/persons", 200).await
    );
    for secret in ["case-ma", "case-ka", "case-mb", "ap-ma", "caw-ka", "ap-mb", "dsr-b", "ref-a", "ref-b"] {
        assert!(!everything.contains(secret), "{secret} shown to the coordinator");
    }
    // Only the coordinator reads the monitor.
    assert_eq!(app.get(&apo, "/v1/monitor/alerts").await.status(), 403);
    assert_eq!(app.get(&apo, "/v1/monitor/persons").await.status(), 403);
    let bad = app.get_json(&coordinator, "/v1/monitor/alerts?kind=everything", 400).await;
    assert_eq!(bad["pointer"], "?kind");
}

#[tokio::test]
async fn a_dropout_without_feedback_alerts_after_fourteen_days() {
    let (app, clock) = monitor_app(at(2026, 3, 10, 12)).await;
    let apo = app.token("apo", Role::Org).await;
    let coord = app.token("coordination", Role::Org).await;
    let coordinator = app.token("coordination", Role::Coordinator).await;
    let lk = linkage_key("person-c");
    app.publish(&apo, &joined("apo", "case-mc", "ap-mc", &lk, "2026-03-02", true)).await;
    let act = |org: &str, time: &str, t: &str, data: Value| event_at(org, t, "activities/act-c", time, data);
    app.publish(
        &coord,
        &[act(
            "coordination",
            "2026-03-02T09:00:00Z",
            "relais.activity.planned",
            json!({
        "kind": "sociocultural", "title": "Theater", "target_groups": ["men"], "prison": "haren", "languages": ["fr"],
        "capacity": 8, "starts_on": "2026-03-03" }),
        )],
    )
    .await;
    app.publish(
        &apo,
        &[
            act("apo", "2026-03-02T10:00:00Z", "relais.registration.received", json!({ "client_ref": "ap-mc" })),
            act(
                "apo",
                "2026-03-02T11:00:00Z",
                "relais.participant.screened",
                json!({ "client_ref": "ap-mc", "admitted": true }),
            ),
            act("apo", "2026-03-02T12:00:00Z", "relais.participant.enrolled", json!({ "client_ref": "ap-mc" })),
            act(
                "apo",
                "2026-03-05T12:00:00Z",
                "relais.participant.dropped_out",
                json!({ "client_ref": "ap-mc", "reason": "lost_interest" }),
            ),
        ],
    )
    .await;
    app.wait_for_views().await;
    assert_eq!(alerts(&app, &coordinator, "").await, Vec::<Value>::new());
    clock.set(at(2026, 3, 19, 13));
    let open = wait_for_alerts(&app, &coordinator, "", &["dropout_without_feedback"]).await;
    assert_eq!(open[0]["opened_at"], "2026-03-19T12:00:00Z");
    assert_eq!(open[0]["detail"]["dropped_out_on"], "2026-03-05");
    clock.set(at(2026, 3, 20, 10));
    app.publish(
        &apo,
        &[act("apo", "2026-03-20T09:00:00Z", "relais.dropout_feedback.held", json!({ "client_ref": "ap-mc" }))],
    )
    .await;
    app.wait_for_views().await;
    assert_eq!(alerts(&app, &coordinator, "").await, Vec::<Value>::new());
    assert_eq!(alerts(&app, &coordinator, "state=closed").await[0]["closed_at"], "2026-03-20T09:00:00Z");
}

async fn members(app: &TestApp) -> Vec<(String, String)> {
    sqlx::query_as("SELECT org_id, linkage_key FROM monitor_members ORDER BY org_id")
        .fetch_all(&app.pool)
        .await
        .expect("members")
}

/// Every tick evaluates everyone a page of persons at a time. An alert of a person with no member
/// left in scope is in no page, and must go all the same.
#[tokio::test]
async fn a_tick_drops_the_alerts_of_a_person_no_longer_in_scope() {
    let (app, _clock) = monitor_app(at(2026, 3, 17, 12)).await;
    let coordinator = app.token("coordination", Role::Coordinator).await;
    // An alert left behind for a person without members, as a restore of older alerts would.
    let inserted = sqlx::query(
        "INSERT INTO monitor_alerts (alert_id, linkage_key, kind, org_id, opened_at)
         VALUES ('left-behind', $1, 'referral_unanswered', 'apo', $2)",
    )
    .bind(linkage_key("person-gone"))
    .bind(at(2026, 3, 1, 12))
    .execute(&app.pool)
    .await
    .expect("an alert row");
    assert_eq!(inserted.rows_affected(), 1);
    // Never shown (no member holds a consent), and gone at a tick.
    assert_eq!(alerts(&app, &coordinator, "state=all").await, Vec::<Value>::new());
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let left: i64 =
            sqlx::query_scalar("SELECT count(*) FROM monitor_alerts").fetch_one(&app.pool).await.expect("count");
        if left == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the tick left the alert of a person out of scope");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Between midnight and the next tick, a person whose consent lapsed keeps alert rows: the
/// gateway shows none of them (the tick here never comes).
#[tokio::test]
async fn the_alerts_of_a_person_whose_consent_lapsed_are_not_shown_before_the_tick_forgets_them() {
    let clock = ManualClock::new(at(2026, 3, 17, 12));
    let c = clock.clone();
    let app = spawn_app_with_settings(ServeRole::All, move |s| {
        s.clock = Arc::new(c);
        s.clock_tick = std::time::Duration::from_secs(3600);
    })
    .await;
    let apo = app.token("apo", Role::Org).await;
    let coordinator = app.token("coordination", Role::Coordinator).await;
    let lk = linkage_key("person-lapsing");
    let mut events = joined("apo", "case-l", "ap-l", &lk, "2026-03-02", false);
    if let Some(consent) = events.last_mut() {
        consent["data"]["expires_on"] = json!("2026-03-20");
    }
    app.publish(&apo, &events).await;
    app.wait_for_views().await;
    sqlx::query(
        "INSERT INTO monitor_alerts (alert_id, linkage_key, kind, org_id, opened_at)
         VALUES ('lapsing', $1, 'referral_unanswered', 'apo', $2)",
    )
    .bind(&lk)
    .bind(at(2026, 3, 10, 12))
    .execute(&app.pool)
    .await
    .expect("an alert row");
    assert_eq!(kinds(&alerts(&app, &coordinator, "").await), ["referral_unanswered"], "shown while the consent holds");
    let recorded: Vec<String> =
        sqlx::query_scalar("SELECT resource FROM access_log WHERE action = 'monitor.alert' ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .expect("access log");
    assert_eq!(recorded, ["orgs/apo/cases/case-l/monitor"], "the alert's person is recorded as read");
    clock.set(at(2026, 3, 21, 12));
    assert_eq!(alerts(&app, &coordinator, "state=all").await, Vec::<Value>::new());
    assert_eq!(alerts(&app, &coordinator, &format!("linkage_key={lk}")).await, Vec::<Value>::new());
}

#[tokio::test]
async fn withdrawal_expiry_and_erasure_take_the_client_out_of_the_monitor() {
    let (app, clock) = monitor_app(at(2026, 3, 17, 12)).await;
    let apo = app.token("apo", Role::Org).await;
    let caw = app.token("caw-brussel", Role::Org).await;
    let coordinator = app.token("coordination", Role::Coordinator).await;
    let lk = linkage_key("person-d");
    let lk_e = linkage_key("person-e");
    let mut d = joined("apo", "case-md", "ap-md", &lk, "2026-03-02", true);
    d.push(case(
        "apo",
        "case-md",
        "2026-03-02T09:00:00Z",
        "relais.consent.given",
        json!({
        "client_ref": "ap-md", "scope": { "share_with_organisation": "caw-brussel" } }),
    ));
    d.push(referral("apo", "ref-d", "2026-03-02T10:00:00Z", "relais.referral.made", json!({
        "client_ref": "ap-md", "destination": { "organisation": "caw-brussel" }, "life_domains": ["health"], "case_id": "case-md" })));
    app.publish(&apo, &d).await;
    app.publish(&caw, &joined("caw-brussel", "case-kd", "caw-kd", &lk, "2026-03-03", false)).await;
    // Person E's consent holds until 20 March.
    app.publish(
        &apo,
        &[
            case(
                "apo",
                "case-me",
                "2026-03-02T08:00:00Z",
                "relais.guidance.requested",
                json!({ "client_ref": "ap-me", "channel": "by_person", "language": "nl" }),
            ),
            case(
                "apo",
                "case-me",
                "2026-03-02T08:01:00Z",
                "relais.guidance.accepted",
                json!({ "client_ref": "ap-me", "setting": "at_liberty" }),
            ),
            case(
                "apo",
                "case-me",
                "2026-03-02T08:02:00Z",
                "relais.consent.given",
                json!({
            "client_ref": "ap-me", "scope": "continuity_monitor", "linkage_key": lk_e, "expires_on": "2026-03-20" }),
            ),
        ],
    )
    .await;
    app.wait_for_views().await;
    let open = wait_for_alerts(&app, &coordinator, "", &["referral_unanswered"]).await;
    assert_eq!(open[0]["linkage_key"], lk.as_str());
    assert_eq!(members(&app).await.len(), 3);

    // The client withdraws the consent at apo: apo's part is forgotten, with its alert.
    app.publish(
        &apo,
        &[case(
            "apo",
            "case-md",
            "2026-03-17T09:00:00Z",
            "relais.consent.withdrawn",
            json!({
        "client_ref": "ap-md", "scope": "continuity_monitor" }),
        )],
    )
    .await;
    app.wait_for_views().await;
    assert_eq!(alerts(&app, &coordinator, "state=all").await, Vec::<Value>::new());
    let person = app.get_json(&coordinator, "/v1/monitor/persons", 200).await;
    let d_orgs: Vec<Value> = person["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter(|p| p["linkage_key"] == lk.as_str())
        .flat_map(|p| p["organisations"].as_array().expect("orgs").clone())
        .map(|o| o["organisation"].clone())
        .collect();
    assert_eq!(d_orgs, vec![json!("caw-brussel")]);
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM monitor_referrals").fetch_one(&app.pool).await.expect("count");
    assert_eq!(stored, 0, "the referral facts went with the consent");

    // Later events of that case are not shared.
    app.publish(
        &apo,
        &[case(
            "apo",
            "case-md",
            "2026-03-17T10:00:00Z",
            "relais.release.scheduled",
            json!({
        "client_ref": "ap-md", "kind": "end_of_sentence", "release_on": "2026-03-25" }),
        )],
    )
    .await;
    app.wait_for_views().await;
    clock.set(at(2026, 3, 18, 12));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(alerts(&app, &coordinator, "state=all").await, Vec::<Value>::new());
    assert_eq!(members(&app).await, vec![("apo".to_owned(), lk_e.clone()), ("caw-brussel".to_owned(), lk.clone())]);

    // Person E's consent expires: gone at the next tick, without an event.
    clock.set(at(2026, 3, 21, 12));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while members(&app).await.len() != 1 {
        assert!(tokio::time::Instant::now() < deadline, "the expired consent stays: {:?}", members(&app).await);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let persons = app.get_json(&coordinator, "/v1/monitor/persons", 200).await;
    assert!(!persons.to_string().contains(&lk_e));

    // caw-brussel's client is erased: the person is gone.
    app.erase_client(&caw, "caw-brussel", "caw-kd").await;
    app.wait_for_views().await;
    assert_eq!(members(&app).await, vec![]);
    let persons = app.get_json(&coordinator, "/v1/monitor/persons", 200).await;
    assert_eq!(persons["items"], json!([]));
}

#[tokio::test]
async fn an_accepted_referral_without_first_contact_and_a_transfer_while_it_is_open_alert() {
    let (app, clock) = monitor_app(at(2026, 3, 5, 12)).await;
    let apo = app.token("apo", Role::Org).await;
    let caw = app.token("caw-brussel", Role::Org).await;
    let coordinator = app.token("coordination", Role::Coordinator).await;
    let lk = linkage_key("person-f");
    let mut f = joined("apo", "case-mf", "ap-mf", &lk, "2026-03-02", true);
    f.push(case(
        "apo",
        "case-mf",
        "2026-03-02T09:00:00Z",
        "relais.consent.given",
        json!({
        "client_ref": "ap-mf", "scope": { "share_with_organisation": "caw-brussel" } }),
    ));
    f.push(referral("apo", "ref-f", "2026-03-02T10:00:00Z", "relais.referral.made", json!({
        "client_ref": "ap-mf", "destination": { "organisation": "caw-brussel" }, "life_domains": ["work_training"], "case_id": "case-mf" })));
    app.publish(&apo, &f).await;
    app.publish(
        &caw,
        &[
            referral(
                "caw-brussel",
                "ref-f",
                "2026-03-03T09:00:00Z",
                "relais.referral.received",
                json!({ "client_ref": "caw-f" }),
            ),
            referral(
                "caw-brussel",
                "ref-f",
                "2026-03-03T10:00:00Z",
                "relais.referral.accepted",
                json!({ "client_ref": "caw-f" }),
            ),
        ],
    )
    .await;
    app.publish(
        &apo,
        &[case(
            "apo",
            "case-mf",
            "2026-03-04T10:00:00Z",
            "relais.detainee.transferred",
            json!({
        "client_ref": "ap-mf", "to_prison": "other", "transferred_on": "2026-03-04" }),
        )],
    )
    .await;
    app.wait_for_views().await;
    let open = alerts(&app, &coordinator, "").await;
    assert_eq!(kinds(&open), vec!["transferred_with_open_referral"]);
    assert_eq!(open[0]["opened_at"], "2026-03-04T10:00:00Z");

    // Accepted Tuesday 3 March; twenty working days later is Tuesday 31 March.
    clock.set(at(2026, 3, 31, 12));
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(kinds(&alerts(&app, &coordinator, "").await), vec!["transferred_with_open_referral"]);
    clock.set(at(2026, 4, 1, 12));
    let open =
        wait_for_alerts(&app, &coordinator, "", &["referral_no_first_contact", "transferred_with_open_referral"]).await;
    let late = open.iter().find(|a| a["kind"] == "referral_no_first_contact").expect("the alert");
    assert_eq!(late["opened_at"], "2026-03-31T22:00:00Z", "the start of 1 April in Brussels (summer time)");

    app.publish(
        &caw,
        &[referral(
            "caw-brussel",
            "ref-f",
            "2026-04-01T09:00:00Z",
            "relais.referral.first_contact_made",
            json!({ "client_ref": "caw-f" }),
        )],
    )
    .await;
    app.wait_for_views().await;
    assert_eq!(
        kinds(&alerts(&app, &coordinator, "").await),
        vec!["transferred_with_open_referral"],
        "first contact is not the end of the loop"
    );
    app.publish(
        &caw,
        &[referral(
            "caw-brussel",
            "ref-f",
            "2026-04-01T10:00:00Z",
            "relais.referral.completed",
            json!({ "client_ref": "caw-f", "outcome": "help_provided" }),
        )],
    )
    .await;
    app.wait_for_views().await;
    assert_eq!(alerts(&app, &coordinator, "").await, Vec::<Value>::new());
    let closed = alerts(&app, &coordinator, "state=closed").await;
    assert_eq!(kinds(&closed), vec!["referral_no_first_contact", "transferred_with_open_referral"]);
}

#[tokio::test]
async fn a_read_of_the_monitor_about_a_person_is_in_their_subject_access_export() {
    let (app, _clock) = monitor_app(at(2026, 3, 17, 12)).await;
    let apo = app.token("apo", Role::Org).await;
    let coordinator = app.token("coordination", Role::Coordinator).await;
    let lk = linkage_key("person-read");
    app.publish(&apo, &joined("apo", "case-read", "ap-read", &lk, "2026-03-02", true)).await;
    app.wait_for_views().await;
    let persons = app.get_json(&coordinator, "/v1/monitor/persons", 200).await;
    assert!(persons.to_string().contains(&lk), "{persons}");
    assert!(!persons.to_string().contains("case-read"), "the coordinator never sees the case: {persons}");
    let export: Value = app.export(&apo, "apo", "ap-read").await.json().await.expect("json");
    let reads: Vec<(&str, &str)> = export["access"]
        .as_array()
        .expect("access")
        .iter()
        .filter(|a| a["action"] == "monitor.person")
        .map(|a| (a["role"].as_str().unwrap_or_default(), a["resource"].as_str().unwrap_or_default()))
        .collect();
    assert_eq!(reads, [("coordinator", "orgs/apo/cases/case-read/monitor")]);
}
