//! Funder statistics: cells per period, authority and organisation from the events; cells
//! under five people suppressed; CSV; each organisation its own; past periods unchanged by a
//! later erasure.

use crate::helpers::*;
use chrono::{TimeZone, Utc};
use relais::startup::ServeRole;
use relais_projections::{ManualClock, Role};
use serde_json::{Value, json};
use std::sync::Arc;

fn client(org: &str, n: usize, day: &str, in_detention: bool, mode: &str) -> Vec<Value> {
    let case = format!("cases/{org}-s{n}");
    let r = format!("{org}-r{n}");
    let at = |time: &str| format!("{day}T{time}:00Z");
    vec![
        event_at(
            org,
            "relais.guidance.requested",
            &case,
            &at("08:00"),
            json!({ "client_ref": r, "channel": "by_person", "language": "fr" }),
        ),
        event_at(
            org,
            "relais.guidance.accepted",
            &case,
            &at("08:10"),
            json!({
            "client_ref": r, "setting": if in_detention { "in_detention" } else { "at_liberty" }, "legal_status": "convict" }),
        ),
        event_at(
            org,
            "relais.intervention.recorded",
            &case,
            &at("09:00"),
            json!({
            "client_ref": r, "mode": mode, "life_domains": ["housing", "health"], "duration_minutes": 30,
            "language": "fr", "interpreter": "none" }),
        ),
    ]
}

fn cell<'a>(cells: &'a Value, measure: &str, org: Option<&str>, dim1: &str, dim2: &str) -> &'a Value {
    cells["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .find(|c| {
            c["measure"] == measure
                && c["dimension_1"] == dim1
                && c["dimension_2"] == dim2
                && org.is_none_or(|o| c["organisation"] == o)
        })
        .unwrap_or_else(|| panic!("no cell {measure} {org:?} {dim1} {dim2} in {cells}"))
}

#[tokio::test]
async fn statistics_count_people_per_cell_suppress_small_cells_and_do_not_change_after_erasure() {
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 4, 15, 12, 0, 0).single().expect("a time"));
    let c = clock.clone();
    let app = spawn_app_with_settings(ServeRole::All, move |s| s.clock = Arc::new(c)).await;
    let apo = app.token("apo", Role::Org).await;
    let dsr = app.token("dsr", Role::Org).await;
    let caw = app.token("caw-brussel", Role::Org).await;
    let coordinator = app.token("coordination", Role::Coordinator).await;
    let mut batch = Vec::new();
    for n in 0..6 {
        batch.extend(client("apo", n, "2026-03-10", true, "informing"));
    }
    app.publish(&apo, &batch).await;
    let mut batch = Vec::new();
    for n in 0..3 {
        batch.extend(client("dsr", n, "2026-03-11", false, "listening_support"));
    }
    app.publish(&dsr, &batch).await;
    app.publish(&caw, &client("caw-brussel", 0, "2026-04-02", false, "planning")).await;
    app.wait_for_views().await;

    let march = "from=2026-03-01&to=2026-03-31";
    let by_org = app.get_json(&coordinator, &format!("/v1/statistics?{march}&group_by=organisation"), 200).await;
    assert_eq!(by_org["min_people"], 5);
    let apo_requests = cell(&by_org, "new_requests", Some("apo"), "by_person", "");
    assert_eq!((apo_requests["people"].clone(), apo_requests["count"].clone()), (json!(6), json!(6)));
    assert_eq!(apo_requests["authority"], "cocom");
    assert_eq!(apo_requests["period"], "2026-03-01");
    let dsr_requests = cell(&by_org, "new_requests", Some("dsr"), "by_person", "");
    assert_eq!(dsr_requests["suppressed"], true);
    assert_eq!((dsr_requests["people"].clone(), dsr_requests["count"].clone()), (Value::Null, Value::Null));
    let guided = cell(&by_org, "clients_by_legal_situation", Some("apo"), "convict", "in_detention");
    assert_eq!(guided["people"], 6);
    assert_eq!(guided["count"], 12, "acceptance and intervention of each client");
    assert_eq!(cell(&by_org, "interventions_by_mode", Some("apo"), "informing", "")["count"], 6);
    assert_eq!(cell(&by_org, "interventions_by_life_domain", Some("apo"), "health", "")["count"], 6);
    assert_eq!(cell(&by_org, "intervention_minutes_by_mode", Some("apo"), "informing", "")["count"], 180);
    assert_eq!(cell(&by_org, "clients_by_language", Some("apo"), "fr", "")["people"], 6);
    assert!(!by_org.to_string().contains("caw-brussel"), "April is another period");

    // Per authority, apo and dsr together make nine people: no suppression.
    let by_authority = app.get_json(&coordinator, &format!("/v1/statistics?{march}&measure=new_requests"), 200).await;
    let cocom = &by_authority["cells"][0];
    assert_eq!((cocom["authority"].clone(), cocom["people"].clone()), (json!("cocom"), json!(9)));
    assert_eq!(by_authority["cells"].as_array().expect("cells").len(), 1);
    let quarter = app
        .get_json(
            &coordinator,
            "/v1/statistics?from=2026-01-01&to=2026-06-30&period=quarter&group_by=total&measure=clients_guided",
            200,
        )
        .await;
    let quarters: Vec<(Value, Value, Value)> = quarter["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .map(|c| (c["period"].clone(), c["people"].clone(), c["suppressed"].clone()))
        .collect();
    assert_eq!(
        quarters,
        vec![(json!("2026-01-01"), json!(9), json!(false)), (json!("2026-04-01"), Value::Null, json!(true))],
        "nine clients in the first quarter, one (suppressed) in the second"
    );
    assert_eq!(quarter["cells"][0]["authority"], Value::Null);

    // CSV, by parameter or by Accept.
    let r = app
        .get(&coordinator, &format!("/v1/statistics?{march}&group_by=organisation&measure=new_requests&format=csv"))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");
    let csv = r.text().await.expect("body");
    assert_eq!(
        csv,
        "period,authority,organisation,measure,dimension_1,dimension_2,people,count\r\n\
         2026-03-01,cocom,apo,new_requests,by_person,,6,6\r\n\
         2026-03-01,cocom,dsr,new_requests,by_person,,<5,\r\n"
    );
    let r = app
        .http
        .get(format!("{}/v1/statistics?{march}&measure=new_requests", app.address))
        .bearer_auth(&coordinator)
        .header("accept", "text/csv")
        .send()
        .await
        .expect("sent");
    assert!(r.text().await.expect("body").starts_with("period,authority"));

    // Each organisation its own, with the same suppression.
    let own = app.get_json(&apo, &format!("/v1/orgs/apo/statistics?{march}"), 200).await;
    assert!(own["cells"].as_array().expect("cells").iter().all(|c| c["organisation"] == "apo"));
    assert_eq!(cell(&own, "new_requests", Some("apo"), "by_person", "")["people"], 6);
    let dsr_own = app.get_json(&dsr, &format!("/v1/orgs/dsr/statistics?{march}"), 200).await;
    assert!(dsr_own["cells"].as_array().expect("cells").iter().all(|c| c["suppressed"] == true));
    assert_eq!(app.get(&apo, "/v1/orgs/dsr/statistics").await.status(), 403);
    assert_eq!(app.get(&apo, "/v1/statistics").await.status(), 403);
    assert_eq!(app.get(&coordinator, "/v1/orgs/apo/statistics").await.status(), 403);
    assert_eq!(app.get_json(&coordinator, "/v1/statistics?period=week", 400).await["pointer"], "?period");
    assert_eq!(app.get(&coordinator, "/v1/statistics?from=2026-05-01&to=2026-04-01").await.status(), 400);
    assert_eq!(app.get(&coordinator, "/v1/statistics?measure=nothing").await.status(), 400);

    // A later erasure leaves past periods as they were.
    let before = app.get_json(&coordinator, &format!("/v1/statistics?{march}&group_by=organisation"), 200).await;
    app.erase_client(&apo, "apo", "apo-r0").await;
    app.wait_for_views().await;
    let after = app.get_json(&coordinator, &format!("/v1/statistics?{march}&group_by=organisation"), 200).await;
    assert_eq!(before, after);
}
