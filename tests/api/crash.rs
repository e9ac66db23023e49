//! Crash equivalence: the projector (`relais serve --role projector`) killed with SIGKILL at
//! random points while it projects a synthetic history, and restarted, ends with exactly the
//! view of an uninterrupted run into another database: every view table compared by checksum.
//!
//! The size is `RELAIS_CRASH_EVENTS` (default 50,000 events: the synthetic history gives about
//! 21 events per client, so 2,400 clients). Measured on the 2-core development machine, shared
//! with other builds: 49,283 events in 3 min 20 s (quiet) to 5 min 50 s (busy: loading through
//! HTTP about 80 s, the killed and restarted projector about 130 s, the clean run about 125 s);
//! set `RELAIS_CRASH_EVENTS=5000` for a quick run (under 1 min).

use crate::helpers::*;
use rand::Rng;
use relais::startup::ServeRole;
use std::process::Child;
use std::time::Duration;

fn projector(app: &TestApp) -> Child {
    relais_command(app, &app.db_name, "crash")
        .args(["serve", "--role", "projector"])
        .env("RELAIS_PROJECTION_BATCH", "250")
        .spawn()
        .expect("projector starts")
}

/// The lowest checkpoint of the validator and the views.
async fn slowest(app: &TestApp) -> u64 {
    let mut low = app.checkpoint(relais_projections::worker::VALIDATOR).await;
    for p in PROJECTIONS {
        low = low.min(app.checkpoint(p).await);
    }
    low
}

#[tokio::test]
async fn a_projector_killed_at_random_points_ends_with_the_view_of_an_uninterrupted_run() {
    let events: usize = std::env::var("RELAIS_CRASH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(50_000);
    let app = spawn_app_with(ServeRole::Gateway).await;
    let loaded = app.load_history((events / 21).max(20)).await;
    let total = app.stream_last_sequence().await;
    assert_eq!(total, loaded);

    // Kill points: random fractions of the run, checked against the slowest projection.
    let mut rng = rand::rng();
    let mut points: Vec<f64> = (0..4).map(|_| rng.random_range(0.05..0.9)).collect();
    points.sort_by(f64::total_cmp);
    let mut killed_at = Vec::new();
    for point in points {
        let mut child = projector(&app);
        let goal = (total as f64 * point) as u64;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        while slowest(&app).await < goal && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..20))).await;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        killed_at.push(slowest(&app).await);
    }
    assert!(killed_at.iter().all(|k| *k < total), "killed before the end: {killed_at:?}");
    let mut child = projector(&app);
    app.wait_for_views().await;
    child.kill().expect("stopped");
    child.wait().expect("reaped");

    let (clean_pool, clean_db) = app.clean_run("clean").await;
    let at = chrono::Utc::now();
    let crashed = views_checksum(&app.pool, at).await;
    let reference = views_checksum(&clean_pool, at).await;
    for ((table, n, _), (_, m, _)) in crashed.iter().zip(&reference) {
        assert_eq!(n, m, "{table}: rows (killed at {killed_at:?})");
    }
    assert_eq!(crashed, reference, "killed at checkpoints {killed_at:?}");
    let caseload = crashed.iter().find(|(t, _, _)| t == "caseload").map(|(_, n, _)| *n).unwrap_or(0);
    assert!(caseload as usize >= events / 21 / 2, "{caseload} cases");
    let alerts = crashed.iter().find(|(t, _, _)| t == "monitor_alerts").map(|(_, n, _)| *n).unwrap_or(0);
    assert!(alerts > 0, "the history makes alerts");
    clean_pool.close().await;
    drop_database(&clean_db).await;
}

/// PostgreSQL may lose its last commits in a crash (ADR-8: `synchronous_commit = off`) while
/// the projector runs on: here the validator's verdict on a quarantined event and its
/// checkpoint are "lost" (rewound and deleted), and the views rewound too. Neither the views
/// (told by the validator, in memory, that the event was judged) nor the validator (which
/// left its checkpoint further on) may build on the lost commit: the event is judged again,
/// quarantined again, and never applied.
#[tokio::test]
async fn verdicts_lost_by_a_database_crash_are_judged_again_before_any_view_applies_their_events() {
    let app = spawn_app().await;
    let apo = app.token("apo", relais_projections::Role::Org).await;
    assert_eq!(app.post_event(&apo, &guidance_requested("apo", "case-1", "cl-1")).await.status(), 201);
    // An intervention on a case that does not exist: stored, then quarantined.
    assert_eq!(app.post_event(&apo, &intervention("apo", "case-none", "cl-9", "informing")).await.status(), 201);
    app.wait_for_views().await;
    let quarantined = |app: &TestApp| {
        let pool = app.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT seq FROM quarantine ORDER BY seq")
                .fetch_all(&pool)
                .await
                .expect("rows")
        }
    };
    assert_eq!(quarantined(&app).await, [2]);

    // The crash loses the commits from sequence 2 on: verdicts, ledger rows, checkpoints.
    sqlx::query("DELETE FROM quarantine WHERE seq >= 2").execute(&app.pool).await.expect("lost");
    sqlx::query("DELETE FROM event_ledger WHERE seq >= 2").execute(&app.pool).await.expect("lost");
    sqlx::query("UPDATE projection_checkpoints SET seq = 1 WHERE seq >= 2").execute(&app.pool).await.expect("lost");

    // The projector carries on with the next event.
    assert_eq!(app.post_event(&apo, &guidance_requested("apo", "case-2", "cl-2")).await.status(), 201);
    app.wait_for_views().await;
    assert_eq!(quarantined(&app).await, [2], "the lost verdict is judged again");
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM case_timeline ORDER BY seq").fetch_all(&app.pool).await.expect("timeline");
    assert_eq!(applied, [1, 3], "the quarantined event is never applied");
}

/// As above, but nothing new comes to the log after the crash: the views (restarted by their
/// clock, which finds their checkpoints moved) must wait for the validator, which finds, idle,
/// that its checkpoint is not where it left it, and judges the lost verdicts again.
#[tokio::test]
async fn verdicts_lost_while_the_log_is_quiet_are_judged_again_before_the_views_apply_their_events() {
    let app = spawn_app_with_settings(ServeRole::All, |s| s.clock_tick = Duration::from_millis(100)).await;
    let apo = app.token("apo", relais_projections::Role::Org).await;
    assert_eq!(app.post_event(&apo, &guidance_requested("apo", "case-1", "cl-1")).await.status(), 201);
    assert_eq!(app.post_event(&apo, &intervention("apo", "case-none", "cl-9", "informing")).await.status(), 201);
    app.wait_for_views().await;
    sqlx::query("DELETE FROM quarantine WHERE seq >= 2").execute(&app.pool).await.expect("lost");
    sqlx::query("DELETE FROM event_ledger WHERE seq >= 2").execute(&app.pool).await.expect("lost");
    sqlx::query("UPDATE projection_checkpoints SET seq = 1 WHERE seq >= 2").execute(&app.pool).await.expect("lost");
    // Let the views' clock find their checkpoints moved and restart, before anything else.
    tokio::time::sleep(Duration::from_millis(500)).await;
    app.wait_for_views().await;
    let quarantined: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM quarantine ORDER BY seq").fetch_all(&app.pool).await.expect("rows");
    assert_eq!(quarantined, [2], "the lost verdict is judged again");
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT seq FROM case_timeline ORDER BY seq").fetch_all(&app.pool).await.expect("timeline");
    assert_eq!(applied, [1], "the quarantined event is never applied");
}
