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
        // Urgent help counts as an intervention (`practical_help`) without minutes.
        batch.push(event_at(
            "apo",
            "relais.urgent_request.handled",
            &format!("cases/apo-s{n}"),
            "2026-03-10T10:00:00Z",
            json!({ "client_ref": format!("apo-r{n}"), "life_domain": "housing", "outcome": "resolved" }),
        ));
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
    assert_eq!(guided["count"], 18, "acceptance, intervention and urgent help of each client");
    assert_eq!(cell(&by_org, "interventions_by_mode", Some("apo"), "informing", "")["count"], 6);
    assert_eq!(cell(&by_org, "interventions_by_mode", Some("apo"), "practical_help", "")["count"], 6);
    assert_eq!(cell(&by_org, "interventions_by_life_domain", Some("apo"), "housing", "")["count"], 12);
    assert_eq!(cell(&by_org, "interventions_by_life_domain", Some("apo"), "health", "")["count"], 6);
    assert_eq!(cell(&by_org, "intervention_minutes_by_mode", Some("apo"), "informing", "")["count"], 180);
    let minutes_of_urgent_help = by_org["cells"]
        .as_array()
        .expect("cells")
        .iter()
        .find(|c| c["measure"] == "intervention_minutes_by_mode" && c["dimension_1"] == "practical_help");
    assert_eq!(minutes_of_urgent_help, None, "urgent help has no minutes");
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
    // A day PostgreSQL cannot keep is the caller's error, not the server's.
    let far = "/v1/statistics?from=-5000-01-01&to=-5000-12-31&period=year";
    assert_eq!(app.get_json(&coordinator, far, 400).await["pointer"], "?from");
    // Whole periods only: windows that differ by a day inside a cell would single out whoever
    // was guided that day by their difference.
    for (query, pointer) in [
        ("from=2026-03-01&to=2026-03-14", "?to"),
        ("from=2026-03-02&to=2026-03-31", "?from"),
        ("period=quarter&from=2026-02-01&to=2026-06-30", "?from"),
        ("period=quarter&from=2026-01-01&to=2026-05-31", "?to"),
    ] {
        let problem = app.get_json(&coordinator, &format!("/v1/statistics?{query}"), 400).await;
        assert_eq!(problem["pointer"], pointer, "{query}: {problem}");
        let problem = app.get_json(&apo, &format!("/v1/orgs/apo/statistics?{query}"), 400).await;
        assert_eq!(problem["pointer"], pointer, "{query}: {problem}");
    }

    // A later erasure leaves past periods as they were.
    let before = app.get_json(&coordinator, &format!("/v1/statistics?{march}&group_by=organisation"), 200).await;
    app.erase_client(&apo, "apo", "apo-r0").await;
    app.wait_for_views().await;
    let after = app.get_json(&coordinator, &format!("/v1/statistics?{march}&group_by=organisation"), 200).await;
    assert_eq!(before, after);
}

/// Migration 0050 gives facts projected before it the shape the projection now writes: one
/// `clients_guided` fact per guidance event with the legal situation and the language, one
/// `interventions` fact per intervention with its minutes and life domains, one `urgent_help`
/// fact per urgent help with its life domain, the facts of each event numbered from 0 without
/// gaps.
#[tokio::test]
async fn facts_projected_before_one_fact_per_event_take_its_shape() {
    use sqlx::Connection;
    let name = format!("relais_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::PgConnection::connect(&db_url("postgres")).await.expect("postgres");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("database");
    let mut conn = sqlx::PgConnection::connect(&db_url(&name)).await.expect("test database");
    let migrator = sqlx::migrate::Migrator::new(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations"))
        .await
        .expect("migrations");
    let (before, after): (Vec<_>, Vec<_>) = migrator.iter().partition(|m| m.version < 50);
    for m in before {
        sqlx::raw_sql(&m.sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("migration {}: {e}", m.version));
    }
    // Three facts per guidance event, as the projection wrote them before.
    sqlx::raw_sql(
        "INSERT INTO stats_facts (seq, n, day, org_id, measure, dim1, dim2, person, value) VALUES
           (10, 0, '2026-03-02', 'apo', 'clients_guided', '', '', 'c:apo/c-1', 1),
           (10, 1, '2026-03-02', 'apo', 'clients_by_legal_situation', 'convict', 'in_detention', 'c:apo/c-1', 1),
           (10, 2, '2026-03-02', 'apo', 'clients_by_language', 'fr', '', 'c:apo/c-1', 1),
           (10, 3, '2026-03-02', 'apo', 'interventions_by_mode', 'informing', '', 'c:apo/c-1', 1),
           (10, 4, '2026-03-02', 'apo', 'intervention_minutes_by_mode', 'informing', '', 'c:apo/c-1', 30),
           (10, 5, '2026-03-02', 'apo', 'interventions_by_life_domain', 'housing', '', 'c:apo/c-1', 1),
           (10, 6, '2026-03-02', 'apo', 'interventions_by_life_domain', 'health', '', 'c:apo/c-1', 1),
           (11, 0, '2026-03-03', 'apo', 'new_requests', 'phone', '', 'c:apo/c-2', 1),
           (12, 0, '2026-03-04', 'apo', 'clients_guided', '', '', 'c:apo/c-2', 1),
           (12, 1, '2026-03-04', 'apo', 'clients_by_legal_situation', 'unknown', 'at_liberty', 'c:apo/c-2', 1),
           (12, 2, '2026-03-04', 'apo', 'clients_by_language', 'unknown', '', 'c:apo/c-2', 1),
           (13, 0, '2026-03-05', 'apo', 'clients_guided', '', '', 'c:apo/c-2', 1),
           (13, 1, '2026-03-05', 'apo', 'clients_by_legal_situation', 'unknown', 'at_liberty', 'c:apo/c-2', 1),
           (13, 2, '2026-03-05', 'apo', 'clients_by_language', 'unknown', '', 'c:apo/c-2', 1),
           (13, 3, '2026-03-05', 'apo', 'interventions_by_mode', 'practical_help', '', 'c:apo/c-2', 1),
           (13, 4, '2026-03-05', 'apo', 'interventions_by_life_domain', 'housing', '', 'c:apo/c-2', 1)",
    )
    .execute(&mut conn)
    .await
    .expect("old facts");
    for m in after {
        sqlx::raw_sql(&m.sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("migration {}: {e}", m.version));
    }
    #[derive(Debug, PartialEq, sqlx::FromRow)]
    struct Fact {
        seq: i64,
        n: i16,
        measure: String,
        dim1: String,
        dim2: String,
        dim3: String,
        domains: Vec<String>,
        value: i64,
    }
    let facts: Vec<Fact> =
        sqlx::query_as("SELECT seq, n, measure, dim1, dim2, dim3, domains, value FROM stats_facts ORDER BY seq, n")
            .fetch_all(&mut conn)
            .await
            .expect("facts");
    let fact = |seq: i64, n: i16, measure: &str, [dim1, dim2, dim3]: [&str; 3], domains: &[&str], value: i64| Fact {
        seq,
        n,
        measure: measure.to_owned(),
        dim1: dim1.to_owned(),
        dim2: dim2.to_owned(),
        dim3: dim3.to_owned(),
        domains: domains.iter().map(|d| d.to_string()).collect(),
        value,
    };
    assert_eq!(
        facts,
        vec![
            fact(10, 0, "clients_guided", ["convict", "in_detention", "fr"], &[], 1),
            fact(10, 1, "interventions", ["informing", "", ""], &["housing", "health"], 30),
            fact(11, 0, "new_requests", ["phone", "", ""], &[], 1),
            fact(12, 0, "clients_guided", ["unknown", "at_liberty", "unknown"], &[], 1),
            fact(13, 0, "clients_guided", ["unknown", "at_liberty", "unknown"], &[], 1),
            fact(13, 1, "urgent_help", ["housing", "", ""], &[], 1),
        ]
    );
    conn.close().await.expect("closed");
    sqlx::query(&format!("DROP DATABASE {name}")).execute(&mut admin).await.expect("dropped");
}
