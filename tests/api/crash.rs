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
