//! The organisation views: events in, expected rows out, for the caseload (the whole
//! vocabulary), coming up, the case timeline, referrals out and in, group activities and the
//! work list; who may read what; erasure and consent withdrawal forgetting.

use crate::helpers::*;
use chrono::{TimeZone, Utc};
use relais::startup::ServeRole;
use relais_projections::{ManualClock, Role};
use serde_json::{Value, json};
use std::sync::Arc;

fn at(y: i32, m: u32, d: u32, h: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).single().expect("a time")
}

async fn app_at(now: chrono::DateTime<Utc>) -> (TestApp, ManualClock) {
    let clock = ManualClock::new(now);
    let c = clock.clone();
    let app = spawn_app_with_settings(ServeRole::All, move |s| s.clock = Arc::new(c)).await;
    (app, clock)
}

fn case_ev(org: &str, case: &str, time: &str, event_type: &str, data: Value) -> Value {
    let mut e = event_at(org, event_type, &format!("cases/{case}"), time, data);
    e["actor"] = json!("worker-7");
    e
}

fn ids(page: &Value, field: &str) -> Vec<String> {
    page["items"].as_array().expect("items").iter().map(|i| i[field].as_str().unwrap_or_default().to_owned()).collect()
}

#[tokio::test]
async fn the_caseload_folds_the_whole_vocabulary_and_coming_up_lists_the_next_days() {
    let (app, _clock) = app_at(at(2026, 3, 10, 12)).await;
    let apo = app.token("apo", Role::Org).await;
    let c = |time: &str, t: &str, data: Value| case_ev("apo", "c1", time, t, data);
    let r = "cl-1";
    app.publish(
        &apo,
        &[
            c("2026-03-02T09:00:00Z", "relais.guidance.requested", json!({ "client_ref": r, "channel": "by_person", "language": "fr" })),
            c("2026-03-02T09:05:00Z", "relais.guidance.accepted", json!({ "client_ref": r, "setting": "in_detention", "legal_status": "suspect" })),
            c("2026-03-02T09:10:00Z", "relais.detention.started", json!({ "client_ref": r, "legal_status": "suspect", "prison": "haren", "started_on": "2026-02-20" })),
            c("2026-03-02T09:20:00Z", "relais.intake.held", json!({ "client_ref": r, "life_domains": ["justice_procedure", "housing"], "language": "fr", "interpreter": "none" })),
            c("2026-03-02T09:30:00Z", "relais.plan.set", json!({ "client_ref": r, "life_domains": ["housing", "work_training"], "goals": "Woning zoeken" })),
            c("2026-03-02T10:00:00Z", "relais.intervention.recorded", json!({ "client_ref": r, "mode": "informing", "life_domains": ["justice_procedure"], "duration_minutes": 30, "language": "fr", "interpreter": "none" })),
            c("2026-03-02T10:30:00Z", "relais.intervention.recorded", json!({ "client_ref": r, "mode": "informing", "life_domains": ["justice_procedure"], "duration_minutes": 20, "language": "ar", "interpreter": "telephone" })),
            c("2026-03-02T11:00:00Z", "relais.urgent_request.handled", json!({ "client_ref": r, "life_domain": "residence_status", "outcome": "resolved" })),
            c("2026-03-03T09:00:00Z", "relais.family_contact.facilitated", json!({ "client_ref": r, "relation": "child", "form": "visit" })),
            c("2026-03-03T10:00:00Z", "relais.detainee.transferred", json!({ "client_ref": r, "to_prison": "saint_gilles", "transferred_on": "2026-03-03" })),
            c("2026-03-03T11:00:00Z", "relais.legal_status.changed", json!({ "client_ref": r, "legal_status": "convict" })),
            c("2026-03-04T09:00:00Z", "relais.release.scheduled", json!({ "client_ref": r, "kind": "conditional_release", "release_on": "2026-03-20" })),
            c("2026-03-04T09:10:00Z", "relais.leave.prepared", json!({ "client_ref": r, "purpose": "family_return", "leave_on": "2026-03-14" })),
            c("2026-03-04T09:20:00Z", "relais.outing.escorted", json!({ "client_ref": r, "purpose": "court_hearing", "outing_on": "2026-03-04" })),
            case_ev("apo", "c2", "2026-03-05T09:00:00Z", "relais.guidance.requested", json!({ "client_ref": "cl-2", "channel": "by_relative", "language": "nl" })),
        ],
    )
    .await;
    app.wait_for_views().await;

    let case = app.get_json(&apo, "/v1/orgs/apo/cases/c1", 200).await;
    assert_eq!(case["status"], "open");
    assert_eq!(case["client_ref"], r);
    assert_eq!(case["channel"], "by_person");
    assert_eq!(case["legal_status"], "convict");
    assert_eq!(case["in_detention"], true);
    assert_eq!(case["prison"], "saint_gilles");
    assert_eq!(case["detention_since"], "2026-02-20");
    assert_eq!(case["release_scheduled_on"], "2026-03-20");
    assert_eq!(case["life_domains"], json!(["housing", "justice_procedure", "residence_status", "work_training"]));
    assert_eq!(case["interventions_by_mode"], json!({ "informing": 2, "practical_help": 1 }));
    assert_eq!(case["intervention_count"], 3);
    assert_eq!(case["urgent_request_count"], 1);
    assert_eq!(case["family_contact_count"], 1);
    assert_eq!(case["last_contact_at"], "2026-03-03T09:00:00Z");
    assert_eq!(case["language"], "ar");

    // Coming up: from today (10 March) on; the outing of 4 March is past.
    let next14 = app.get_json(&apo, "/v1/orgs/apo/coming-up?days=14", 200).await;
    assert_eq!(ids(&next14, "item"), vec!["leave", "release"]);
    assert_eq!(next14["items"][0]["on_date"], "2026-03-14");
    assert_eq!(next14["items"][0]["detail"], "family_return");
    assert_eq!(next14["items"][1]["detail"], "conditional_release");
    assert_eq!(next14["items"][1]["client_ref"], r);
    let next4 = app.get_json(&apo, "/v1/orgs/apo/coming-up?days=4", 200).await;
    assert_eq!(ids(&next4, "item"), vec!["leave"], "both ends count");
    let next3 = app.get_json(&apo, "/v1/orgs/apo/coming-up?days=3", 200).await;
    assert_eq!(ids(&next3, "item"), Vec::<String>::new());
    let page = app.get_json(&apo, "/v1/orgs/apo/coming-up?days=14&limit=1", 200).await;
    assert_eq!(ids(&page, "item"), vec!["leave"]);
    let cursor = page["next_cursor"].as_str().expect("a next page");
    let page2 = app.get_json(&apo, &format!("/v1/orgs/apo/coming-up?days=14&limit=1&cursor={cursor}"), 200).await;
    assert_eq!(ids(&page2, "item"), vec!["release"]);

    // The work list: a release within 14 days without after-care.
    let work = app.get_json(&apo, "/v1/orgs/apo/worklist", 200).await;
    assert_eq!(ids(&work, "kind"), vec!["release_without_aftercare"]);
    assert_eq!(work["items"][0]["subject"], "cases/c1");
    assert_eq!(work["items"][0]["detail"], "2026-03-20");

    // Released early, after-care, closed.
    app.publish(
        &apo,
        &[
            c(
                "2026-03-05T09:00:00Z",
                "relais.detainee.released",
                json!({ "client_ref": r, "kind": "conditional_release", "released_on": "2026-03-05" }),
            ),
            c(
                "2026-03-06T09:00:00Z",
                "relais.aftercare.started",
                json!({ "client_ref": r, "life_domains": ["social_security"] }),
            ),
        ],
    )
    .await;
    app.wait_for_views().await;
    let case = app.get_json(&apo, "/v1/orgs/apo/cases/c1", 200).await;
    assert_eq!(case["status"], "after_care");
    assert_eq!(case["in_detention"], false);
    assert_eq!(case["prison"], Value::Null);
    assert_eq!(case["released_on"], "2026-03-05");
    assert_eq!(case["release_scheduled_on"], Value::Null);
    assert!(case["life_domains"].as_array().expect("list").contains(&json!("social_security")));
    assert_eq!(ids(&app.get_json(&apo, "/v1/orgs/apo/coming-up?days=14", 200).await, "item"), vec!["leave"]);
    assert_eq!(ids(&app.get_json(&apo, "/v1/orgs/apo/worklist", 200).await, "kind"), Vec::<String>::new());
    app.publish(
        &apo,
        &[c(
            "2026-03-09T09:00:00Z",
            "relais.guidance.closed",
            json!({ "client_ref": r, "reason": "released_and_handed_over" }),
        )],
    )
    .await;
    app.wait_for_views().await;
    let case = app.get_json(&apo, "/v1/orgs/apo/cases/c1", 200).await;
    assert_eq!(case["status"], "closed");
    assert_eq!(case["closed_at"], "2026-03-09T09:00:00Z");

    // Filters.
    assert_eq!(ids(&app.get_json(&apo, "/v1/orgs/apo/cases?open=true", 200).await, "case_id"), vec!["c2"]);
    assert_eq!(ids(&app.get_json(&apo, "/v1/orgs/apo/cases?legal_status=convict", 200).await, "case_id"), vec!["c1"]);
    assert_eq!(ids(&app.get_json(&apo, "/v1/orgs/apo/cases?language=nl", 200).await, "case_id"), vec!["c2"]);
    assert_eq!(ids(&app.get_json(&apo, "/v1/orgs/apo/cases?life_domain=housing", 200).await, "case_id"), vec!["c1"]);
    assert_eq!(
        ids(&app.get_json(&apo, "/v1/orgs/apo/cases?active_within_days=6", 200).await, "case_id"),
        vec!["c1", "c2"]
    );
    assert_eq!(
        ids(&app.get_json(&apo, "/v1/orgs/apo/cases?active_within_days=0", 200).await, "case_id"),
        Vec::<String>::new()
    );
    let bad = app.get_json(&apo, "/v1/orgs/apo/cases?legal_status=guilty", 400).await;
    assert_eq!(bad["pointer"], "?legal_status");
    assert_eq!(app.get(&apo, "/v1/orgs/apo/coming-up?days=-1").await.status(), 400);
}

#[tokio::test]
async fn the_timeline_lists_every_event_with_who_recorded_it_and_forgets_personal_fields_on_erasure() {
    let (app, _clock) = app_at(at(2026, 3, 10, 12)).await;
    let apo = app.token("apo", Role::Org).await;
    let r = "cl-9";
    let c = |time: &str, t: &str, data: Value| case_ev("apo", "t1", time, t, data);
    app.publish(
        &apo,
        &[
            c("2026-03-02T09:00:00Z", "relais.guidance.requested", json!({ "client_ref": r, "channel": "by_person", "language": "fr", "note": "Vraagt hulp" })),
            c("2026-03-02T09:05:00Z", "relais.guidance.accepted", json!({ "client_ref": r, "setting": "at_liberty" })),
            c("2026-03-02T10:00:00Z", "relais.intervention.recorded", json!({ "client_ref": r, "mode": "planning", "life_domains": ["housing"], "duration_minutes": 30, "language": "fr", "interpreter": "none", "note": "Afspraak OCMW" })),
            c("2026-03-03T09:00:00Z", "relais.leave.prepared", json!({ "client_ref": r, "purpose": "job", "leave_on": "2026-03-12" })),
        ],
    )
    .await;
    app.wait_for_views().await;
    let page = app.get_json(&apo, "/v1/orgs/apo/cases/t1/timeline", 200).await;
    let items = page["items"].as_array().expect("items");
    // The leave needs a detention: the validator quarantined it; the timeline holds what the
    // views apply.
    assert_eq!(
        ids(&page, "type"),
        vec!["relais.guidance.requested", "relais.guidance.accepted", "relais.intervention.recorded"]
    );
    let seqs: Vec<i64> = items.iter().map(|i| i["seq"].as_i64().expect("seq")).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order: {seqs:?}");
    assert!(items.iter().all(|i| i["actor"] == "worker-7"));
    assert_eq!(items[0]["personal"], "present");
    assert_eq!(items[0]["data"]["note"], "Vraagt hulp");
    assert_eq!(items[2]["data"]["client_ref"], r);
    assert_eq!(items[2]["data"]["mode"], "planning");
    let first = app.get_json(&apo, "/v1/orgs/apo/cases/t1/timeline?limit=2", 200).await;
    let cursor = first["next_cursor"].as_str().expect("a next page");
    let rest = app.get_json(&apo, &format!("/v1/orgs/apo/cases/t1/timeline?limit=2&cursor={cursor}"), 200).await;
    assert_eq!(ids(&rest, "type"), vec!["relais.intervention.recorded"]);
    let only = app.get_json(&apo, "/v1/orgs/apo/cases/t1/timeline?type=relais.guidance.accepted", 200).await;
    assert_eq!(only["items"].as_array().expect("items").len(), 1);
    assert_eq!(app.get(&apo, "/v1/orgs/apo/cases/nope/timeline").await.status(), 404);
    // A type filter tells an unknown case from a case without events of that type.
    assert_eq!(app.get(&apo, "/v1/orgs/apo/cases/nope/timeline?type=relais.guidance.accepted").await.status(), 404);
    let none = app.get_json(&apo, "/v1/orgs/apo/cases/t1/timeline?type=relais.guidance.closed", 200).await;
    assert_eq!(none["items"], serde_json::json!([]));
    let other = app.token("dsr", Role::Org).await;
    assert_eq!(app.get(&other, "/v1/orgs/apo/cases/t1/timeline").await.status(), 403);

    // Reads are in the access log.
    let logged: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM access_log WHERE action = 'case.timeline' AND resource = 'orgs/apo/cases/t1/timeline'",
    )
    .fetch_one(&app.pool)
    .await
    .expect("count");
    assert!(logged >= 4, "{logged}");

    app.erase_client(&apo, "apo", r).await;
    app.wait_for_views().await;
    let page = app.get_json(&apo, "/v1/orgs/apo/cases/t1/timeline", 200).await;
    for item in page["items"].as_array().expect("items") {
        assert_eq!(item["personal"], "erased", "{item}");
        assert!(item["data"].get("client_ref").is_none() && item["data"].get("note").is_none(), "{item}");
    }
    assert_eq!(page["items"][2]["data"]["mode"], "planning", "statistical fields stay");
    let case = app.get_json(&apo, "/v1/orgs/apo/cases/t1", 200).await;
    assert_eq!(case["client_ref"], Value::Null);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM case_timeline WHERE personal IS NOT NULL")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(left, 0);
}

#[tokio::test]
async fn referrals_show_each_side_only_its_own_and_the_message_goes_with_the_consent() {
    let (app, clock) = app_at(at(2026, 3, 12, 12)).await;
    let apo = app.token("apo", Role::Org).await;
    let caw = app.token("caw-brussel", Role::Org).await;
    let dsr = app.token("dsr", Role::Org).await;
    let s = |time: &str, t: &str, data: Value| case_ev("apo", "s1", time, t, data);
    let referral = |org: &str, id: &str, time: &str, t: &str, data: Value| {
        event_at(org, t, &format!("referrals/{id}"), time, data)
    };
    app.publish(
        &apo,
        &[
            s("2026-03-02T09:00:00Z", "relais.guidance.requested", json!({ "client_ref": "ap-1", "channel": "by_person", "language": "fr" })),
            s("2026-03-02T09:05:00Z", "relais.guidance.accepted", json!({ "client_ref": "ap-1", "setting": "at_liberty" })),
            s("2026-03-02T09:10:00Z", "relais.consent.given", json!({ "client_ref": "ap-1", "scope": { "share_with_organisation": "caw-brussel" } })),
            referral("apo", "r1", "2026-03-02T10:00:00Z", "relais.referral.made", json!({
                "client_ref": "ap-1", "destination": { "organisation": "caw-brussel" }, "life_domains": ["housing"],
                "case_id": "s1", "message": "Zoekt woning na vrijlating" })),
            referral("apo", "r2", "2026-03-03T10:00:00Z", "relais.referral.made", json!({
                "client_ref": "ap-1", "destination": { "outside_service": "debt_mediation" }, "life_domains": ["finances_debts"],
                "case_id": "s1" })),
        ],
    )
    .await;
    app.wait_for_views().await;
    let work = app.get_json(&caw, "/v1/orgs/caw-brussel/worklist", 200).await;
    assert_eq!(ids(&work, "kind"), vec!["referral_to_answer"]);
    assert_eq!(work["items"][0]["subject"], "referrals/r1");
    app.publish(
        &caw,
        &[referral(
            "caw-brussel",
            "r1",
            "2026-03-04T09:00:00Z",
            "relais.referral.received",
            json!({ "client_ref": "caw-9" }),
        )],
    )
    .await;
    app.wait_for_views().await;

    let out = app.get_json(&apo, "/v1/orgs/apo/referrals?direction=out", 200).await;
    assert_eq!(ids(&out, "referral_id"), vec!["r2", "r1"]);
    let r1 = &out["items"][1];
    assert_eq!(r1["stage"], "received");
    assert_eq!(r1["case_id"], "s1");
    assert_eq!(r1["client_ref"], "ap-1");
    assert_eq!(r1["message"], "Zoekt woning na vrijlating");
    assert_eq!(r1["destination"], "caw-brussel");
    assert_eq!(r1["age_days"], 10);
    assert_eq!(r1["days_in_stage"], 8);
    assert_eq!(out["items"][0]["destination_kind"], "outside_service");
    assert_eq!(out["items"][0]["destination"], "debt_mediation");
    assert_eq!(ids(&app.get_json(&apo, "/v1/orgs/apo/referrals?stage=made", 200).await, "referral_id"), vec!["r2"]);

    let inbound = app.get_json(&caw, "/v1/orgs/caw-brussel/referrals?direction=in", 200).await;
    assert_eq!(ids(&inbound, "referral_id"), vec!["r1"]);
    let seen = &inbound["items"][0];
    assert_eq!(seen["from_org"], "apo");
    assert_eq!(seen["client_ref"], "caw-9");
    assert_eq!(seen["message"], "Zoekt woning na vrijlating");
    assert_eq!(seen["life_domains"], json!(["housing"]));
    let text = inbound.to_string();
    assert!(seen.get("case_id").is_none() && !text.contains("\"s1\"") && !text.contains("ap-1"), "{text}");
    assert!(!out.to_string().contains("caw-9"), "the sender never sees the receiver's reference");
    assert_eq!(
        ids(&app.get_json(&dsr, "/v1/orgs/dsr/referrals?direction=in", 200).await, "referral_id"),
        Vec::<String>::new()
    );
    assert_eq!(app.get(&dsr, "/v1/orgs/caw-brussel/referrals?direction=in").await.status(), 403);
    assert_eq!(app.get(&caw, "/v1/orgs/caw-brussel/referrals?direction=sideways").await.status(), 400);

    app.publish(
        &caw,
        &[referral(
            "caw-brussel",
            "r1",
            "2026-03-05T09:00:00Z",
            "relais.referral.accepted",
            json!({ "client_ref": "caw-9" }),
        )],
    )
    .await;
    app.wait_for_views().await;
    let work = app.get_json(&caw, "/v1/orgs/caw-brussel/worklist", 200).await;
    assert_eq!(ids(&work, "kind"), vec!["referral_first_contact"]);

    // The client withdraws the consent to share with caw-brussel: the message is forgotten.
    app.publish(
        &apo,
        &[s(
            "2026-03-06T09:00:00Z",
            "relais.consent.withdrawn",
            json!({ "client_ref": "ap-1", "scope": { "share_with_organisation": "caw-brussel" } }),
        )],
    )
    .await;
    app.wait_for_views().await;
    let seen = app.get_json(&caw, "/v1/orgs/caw-brussel/referrals?direction=in", 200).await;
    assert_eq!(seen["items"][0]["message"], Value::Null);
    assert_eq!(seen["items"][0]["stage"], "accepted");

    app.publish(
        &caw,
        &[
            referral(
                "caw-brussel",
                "r1",
                "2026-03-09T09:00:00Z",
                "relais.referral.first_contact_made",
                json!({ "client_ref": "caw-9" }),
            ),
            referral(
                "caw-brussel",
                "r1",
                "2026-03-10T09:00:00Z",
                "relais.referral.completed",
                json!({ "client_ref": "caw-9", "outcome": "in_guidance" }),
            ),
        ],
    )
    .await;
    app.wait_for_views().await;
    clock.advance(chrono::Duration::days(30));
    let out = app.get_json(&apo, "/v1/orgs/apo/referrals?open=false", 200).await;
    assert_eq!(ids(&out, "referral_id"), vec!["r1"]);
    assert_eq!(out["items"][0]["stage"], "completed");
    assert_eq!(out["items"][0]["outcome"], "in_guidance");
    assert_eq!(out["items"][0]["age_days"], 7, "the age stops when the loop closes");
    assert_eq!(ids(&app.get_json(&caw, "/v1/orgs/caw-brussel/worklist", 200).await, "kind"), Vec::<String>::new());

    // Erasing the receiver's client forgets its reference, not the sender's.
    app.erase_client(&caw, "caw-brussel", "caw-9").await;
    app.wait_for_views().await;
    let seen = app.get_json(&caw, "/v1/orgs/caw-brussel/referrals?direction=in", 200).await;
    assert_eq!(seen["items"][0]["client_ref"], Value::Null);
    let out = app.get_json(&apo, "/v1/orgs/apo/referrals?open=false", 200).await;
    assert_eq!(out["items"][0]["client_ref"], "ap-1");
}

#[tokio::test]
async fn group_activities_show_rosters_to_their_own_organisation_and_dropouts_wait_for_feedback() {
    let (app, _clock) = app_at(at(2026, 3, 20, 12)).await;
    let coord = app.token("coordination", Role::Org).await;
    let apo = app.token("apo", Role::Org).await;
    let caw = app.token("caw-brussel", Role::Org).await;
    let a = |org: &str, time: &str, t: &str, data: Value| event_at(org, t, "activities/a1", time, data);
    app.publish(&coord, &[
        a("coordination", "2026-03-01T09:00:00Z", "relais.needs_survey.recorded", json!({ "target_group": "men", "prison": "haren", "respondents": 12, "wanted": ["formative"], "languages": ["nl"] })),
        a("coordination", "2026-03-02T09:00:00Z", "relais.activity.planned", json!({
            "kind": "formative", "title": "Onthaalklas", "target_groups": ["men"], "prison": "haren", "partners": ["apo"],
            "languages": ["nl", "fr"], "capacity": 10, "starts_on": "2026-03-09" })),
        a("coordination", "2026-03-03T09:00:00Z", "relais.registration.received", json!({ "client_ref": "co-1" })),
        a("coordination", "2026-03-03T10:00:00Z", "relais.participant.screened", json!({ "client_ref": "co-1", "admitted": true })),
        a("coordination", "2026-03-03T11:00:00Z", "relais.participant.enrolled", json!({ "client_ref": "co-1" })),
    ]).await;
    app.publish(
        &apo,
        &[
            a("apo", "2026-03-04T09:00:00Z", "relais.registration.received", json!({ "client_ref": "ap-2" })),
            a(
                "apo",
                "2026-03-04T10:00:00Z",
                "relais.participant.screened",
                json!({ "client_ref": "ap-2", "admitted": true }),
            ),
            a("apo", "2026-03-04T11:00:00Z", "relais.participant.enrolled", json!({ "client_ref": "ap-2" })),
            a("apo", "2026-03-05T09:00:00Z", "relais.registration.received", json!({ "client_ref": "ap-3" })),
            a(
                "apo",
                "2026-03-05T10:00:00Z",
                "relais.participant.screened",
                json!({ "client_ref": "ap-3", "admitted": false, "refusal_reason": "language_level" }),
            ),
        ],
    )
    .await;
    app.publish(
        &coord,
        &[a(
            "coordination",
            "2026-03-09T14:00:00Z",
            "relais.session.held",
            json!({ "session_number": 1, "held_on": "2026-03-09", "attended_count": 2, "absent_count": 0 }),
        )],
    )
    .await;
    app.publish(
        &apo,
        &[a(
            "apo",
            "2026-03-10T09:00:00Z",
            "relais.participant.dropped_out",
            json!({ "client_ref": "ap-2", "reason": "schedule_conflict" }),
        )],
    )
    .await;
    app.publish(
        &coord,
        &[
            a(
                "coordination",
                "2026-03-16T14:00:00Z",
                "relais.session.held",
                json!({ "session_number": 2, "held_on": "2026-03-16", "attended_count": 1, "absent_count": 0 }),
            ),
            a(
                "coordination",
                "2026-03-17T14:00:00Z",
                "relais.activity.evaluated",
                json!({ "rating": 4, "outcome": "continue_adjusted", "evaluation_note": "Later in de namiddag" }),
            ),
        ],
    )
    .await;
    app.wait_for_views().await;

    let quarantined: Vec<(String, String)> =
        sqlx::query_as("SELECT subject, detail FROM quarantine").fetch_all(&app.pool).await.expect("quarantine");
    assert_eq!(quarantined, vec![]);
    let list = app.get_json(&apo, "/v1/orgs/apo/activities", 200).await;
    assert_eq!(ids(&list, "activity_id"), vec!["a1"]);
    let act = &list["items"][0];
    assert_eq!(act["organiser"], "coordination");
    assert_eq!(act["registrations"], 3);
    assert_eq!(act["admitted"], 2);
    assert_eq!(act["refused"], 1);
    assert_eq!(act["enrolled"], 1);
    assert_eq!(act["dropouts"], 1);
    assert_eq!(
        act["sessions"],
        json!([
        { "session_number": 1, "held_on": "2026-03-09", "attended_count": 2, "absent_count": 0 },
        { "session_number": 2, "held_on": "2026-03-16", "attended_count": 1, "absent_count": 0 }])
    );
    assert_eq!(act["evaluations"][0]["rating"], 4);
    assert_eq!(act["surveys"][0]["respondents"], 12);

    let detail = app.get_json(&apo, "/v1/orgs/apo/activities/a1", 200).await;
    let roster: Vec<(String, String)> = detail["roster"]
        .as_array()
        .expect("roster")
        .iter()
        .map(|p| {
            (
                p["client_ref"].as_str().unwrap_or_default().to_owned(),
                p["status"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        roster,
        vec![("ap-2".to_owned(), "dropped_out".to_owned()), ("ap-3".to_owned(), "not_admitted".to_owned())]
    );
    assert_eq!(detail["dropouts_waiting_for_feedback"][0]["client_ref"], "ap-2");
    let coord_detail = app.get_json(&coord, "/v1/orgs/coordination/activities/a1", 200).await;
    assert_eq!(coord_detail["roster"].as_array().expect("roster").len(), 1, "its own participant only");
    assert!(!coord_detail.to_string().contains("ap-2"));
    assert_eq!(app.get(&caw, "/v1/orgs/caw-brussel/activities/a1").await.status(), 404);
    assert_eq!(
        ids(&app.get_json(&caw, "/v1/orgs/caw-brussel/activities", 200).await, "activity_id"),
        Vec::<String>::new()
    );

    let work = app.get_json(&apo, "/v1/orgs/apo/worklist", 200).await;
    assert_eq!(ids(&work, "kind"), vec!["dropout_without_feedback"]);
    assert_eq!(work["items"][0]["client_ref"], "ap-2");
    app.publish(
        &apo,
        &[a(
            "apo",
            "2026-03-18T09:00:00Z",
            "relais.dropout_feedback.held",
            json!({ "client_ref": "ap-2", "note": "Werkt in de keuken" }),
        )],
    )
    .await;
    app.wait_for_views().await;
    assert_eq!(ids(&app.get_json(&apo, "/v1/orgs/apo/worklist", 200).await, "kind"), Vec::<String>::new());
    let detail = app.get_json(&apo, "/v1/orgs/apo/activities/a1", 200).await;
    assert_eq!(detail["dropouts_waiting_for_feedback"], json!([]));
    assert!(!detail.to_string().contains("keuken"), "feedback notes are not kept in the view");

    app.erase_client(&apo, "apo", "ap-2").await;
    app.wait_for_views().await;
    let detail = app.get_json(&apo, "/v1/orgs/apo/activities/a1", 200).await;
    assert!(!detail.to_string().contains("ap-2"));
}

#[tokio::test]
async fn organisation_views_are_for_the_organisation_only() {
    let app = spawn_app().await;
    let apo = app.token("apo", Role::Org).await;
    let coordinator = app.token("coordination", Role::Coordinator).await;
    let auditor = app.token("coordination", Role::Auditor).await;
    for path in [
        "/v1/orgs/apo/cases/x/timeline",
        "/v1/orgs/apo/referrals",
        "/v1/orgs/apo/coming-up",
        "/v1/orgs/apo/activities",
        "/v1/orgs/apo/activities/a",
        "/v1/orgs/apo/worklist",
        "/v1/orgs/apo/statistics",
    ] {
        assert_eq!(app.get(&coordinator, path).await.status(), 403, "coordinator on {path}");
        assert_eq!(app.get(&auditor, path).await.status(), 403, "auditor on {path}");
        let other = app.token("dsr", Role::Org).await;
        assert_eq!(app.get(&other, path).await.status(), 403, "another organisation on {path}");
        assert_eq!(app.http.get(format!("{}{path}", app.address)).send().await.expect("sent").status(), 401);
    }
    let openapi: Value =
        app.http.get(format!("{}/openapi.json", app.address)).send().await.expect("sent").json().await.expect("json");
    for path in [
        "/v1/orgs/{org}/cases",
        "/v1/orgs/{org}/cases/{case}/timeline",
        "/v1/orgs/{org}/referrals",
        "/v1/orgs/{org}/coming-up",
        "/v1/orgs/{org}/activities",
        "/v1/orgs/{org}/activities/{activity}",
        "/v1/orgs/{org}/worklist",
        "/v1/orgs/{org}/statistics",
        "/v1/statistics",
        "/v1/monitor/alerts",
        "/v1/monitor/persons",
    ] {
        assert!(openapi["paths"][path]["get"]["summary"].is_string(), "{path} in the OpenAPI document");
    }
    let bad = app.get_json(&apo, "/v1/orgs/apo/referrals?cursor=nonsense", 400).await;
    assert_eq!(bad["pointer"], "?cursor");
    assert_eq!(app.get(&apo, "/v1/orgs/apo/worklist?kind=other").await.status(), 400);
}
