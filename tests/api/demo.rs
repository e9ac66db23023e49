//! README's first command: `relais demo` starts its own pinned nats-server, Relais, and loads
//! a synthetic history through the HTTP API until every projection has caught up.

use crate::helpers::*;
use std::time::Duration;

#[tokio::test]
async fn the_demo_loads_its_history_and_every_projection_catches_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let name = format!("demo_{}", uuid::Uuid::new_v4().simple());
    // Its own database (created by Relais), state directory and a free port: nothing shared
    // with other tests or a demo running on this machine. No secrets: the demo's development
    // ones are generated into the state directory.
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_relais"))
        .args(["demo", "--clients", "20", "--exit-after-load"])
        .env("RELAIS_DATABASE_URL", db_url(&name))
        .env("RELAIS_STATE_DIR", dir.path())
        .env("RELAIS_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "error")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run).await.expect("the demo ends").expect("relais runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("Relais is running with a year of synthetic history."), "{stdout}");
    assert!(stdout.contains("A token of APO (role org):"), "{stdout}");
    let caught_up = stderr.lines().find(|l| l.starts_with("projections up to date at sequence ")).expect(&stderr);
    let sequence: u64 = caught_up["projections up to date at sequence ".len()..]
        .split(';')
        .next()
        .and_then(|n| n.parse().ok())
        .expect(caught_up);
    assert!(sequence > 100, "{caught_up}");

    // What the demo printed is what its views hold.
    let pool = sqlx::PgPool::connect(&db_url(&name)).await.expect("the demo's database");
    let checkpoints: Vec<(String, i64)> =
        sqlx::query_as("SELECT projection, seq FROM projection_checkpoints").fetch_all(&pool).await.expect("rows");
    for p in PROJECTIONS {
        assert!(checkpoints.iter().any(|(n, s)| n == p && *s as u64 == sequence), "{p}: {checkpoints:?}");
    }
    let cases: i64 = sqlx::query_scalar("SELECT count(*) FROM caseload").fetch_one(&pool).await.expect("count");
    assert!(cases > 0);
    pool.close().await;
    drop_database(&name).await;
}
