//! Rebuild equivalence: `relais rebuild` builds every view again from the start of the stream
//! into fresh tables while the live ones keep serving, swaps them in, and the result is exactly
//! the live view; with events arriving during the rebuild, the live worker goes on from the
//! swapped-in checkpoint and ends with the view of a clean run.

use crate::helpers::*;
use relais_projections::Role;
use std::process::Stdio;
use std::time::Duration;

/// Every index of the live schema with its full definition: the indexes a rebuild builds only
/// once its tables are loaded (`View::reader_indexes`) must come back exactly as the migrations
/// made them.
async fn index_names(pool: &sqlx::PgPool) -> Vec<(String, String, String)> {
    sqlx::query_as(
        "SELECT tablename::text, indexname::text, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .expect("indexes")
}

/// What a rebuild called from a test needs, as `relais rebuild` builds it.
async fn rebuild_parts(
    app: &TestApp,
) -> (
    relais_projections::Database,
    relais_projections::KeyStore,
    async_nats::jetstream::stream::Stream,
    relais_projections::ProjectorSettings,
) {
    let db = relais_projections::Database::connect_and_migrate(&app.settings.database_url).await.expect("database");
    let keys = relais_projections::KeyStore::new(app.pool.clone(), app.settings.kek.clone());
    let stream = app.js.get_stream("RELAIS").await.expect("stream");
    (db, keys, stream, app.settings.projector_settings())
}

/// Rebuild schemas and rebuild checkpoints left in the database.
async fn rebuild_leftovers(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'rebuild_%')
              + (SELECT count(*) FROM projection_checkpoints WHERE projection LIKE '%:rebuild')",
    )
    .fetch_one(pool)
    .await
    .expect("count")
}

#[tokio::test]
async fn a_rebuild_gives_exactly_the_live_view_while_the_live_view_keeps_serving() {
    let app = spawn_app().await;
    app.load_history(120).await;
    app.wait_for_views().await;
    let at = chrono::Utc::now();
    let live = views_checksum(&app.pool, at).await;
    let indexes = index_names(&app.pool).await;
    let last = app.stream_last_sequence().await;

    let apo = app.token("apo", Role::Org).await;
    let child = relais_command(&app, &app.db_name, "rebuild")
        .args(["rebuild", "--all"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("relais rebuild starts");
    let pid = child.id();
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    // The live views answer all along.
    let mut reads = 0;
    while !waiting.is_finished() {
        let r = app.get(&apo, "/v1/orgs/apo/cases?limit=5").await;
        assert_eq!(r.status(), 200, "read during the rebuild of process {pid}");
        let r = app.get(&apo, "/v1/orgs/apo/referrals?limit=5").await;
        assert_eq!(r.status(), 200);
        reads += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let output = waiting.await.expect("joined").expect("output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{}", String::from_utf8_lossy(&output.stderr));
    for p in PROJECTIONS {
        assert!(stdout.contains(&format!("{p}: ")) && stdout.contains("events/s"), "{stdout}");
    }
    assert!(reads > 0);

    let rebuilt = views_checksum(&app.pool, at).await;
    assert_eq!(live, rebuilt);
    assert_eq!(
        indexes,
        index_names(&app.pool).await,
        "the swapped-in tables keep the indexes, their names and definitions"
    );
    for p in PROJECTIONS {
        assert_eq!(app.checkpoint(p).await, last, "{p}");
    }
    assert_eq!(rebuild_leftovers(&app.pool).await, 0);

    // `relais status` shows every projection caught up.
    let status = relais_command(&app, &app.db_name, "status").arg("status").output().expect("relais status");
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(status.status.success(), "{text}");
    for p in PROJECTIONS {
        let line = text.lines().find(|l| l.starts_with(p)).unwrap_or_else(|| panic!("{p} in {text}"));
        assert!(line.trim_end().ends_with(" 0"), "lag 0: {line}");
    }
    assert!(text.contains("quarantined events: 0"), "{text}");

    // The live view goes on after the swap.
    let case = event(
        "apo",
        "relais.guidance.requested",
        "cases/after-rebuild",
        serde_json::json!({
        "client_ref": "ap-after", "channel": "by_person", "language": "nl" }),
    );
    assert_eq!(app.post_event(&apo, &case).await.status(), 201);
    app.wait_for_views().await;
    assert_eq!(app.get(&apo, "/v1/orgs/apo/cases/after-rebuild").await.status(), 200);
}

#[tokio::test]
async fn a_rebuild_while_events_arrive_ends_with_the_view_of_a_clean_run() {
    let app = spawn_app().await;
    app.load_history(60).await;
    app.wait_for_views().await;
    let (db, keys, stream, settings) = rebuild_parts(&app).await;
    let apo = app.token("apo", Role::Org).await;

    let rebuilding = async {
        // Two views in one read of the log (each swap catches up on its own), then one alone.
        let views: Vec<_> = ["caseload", "monitor"]
            .into_iter()
            .map(|name| relais_projections::worker::view_named(&settings, name).expect("a view"))
            .collect();
        let reports = relais_projections::rebuild::rebuild_many(&db, &keys, &stream, &settings, views, &|_| {})
            .await
            .expect("rebuilt");
        assert_eq!(reports.len(), 2);
        assert!(reports.iter().all(|r| r.events > 0));
        let view = relais_projections::worker::view_named(&settings, "statistics").expect("a view");
        let report =
            relais_projections::rebuild::rebuild(&db, &keys, &stream, &settings, view, &|_| {}).await.expect("rebuilt");
        assert!(report.events > 0);
    };
    let posting = async {
        for n in 0..40 {
            let batch = open_case("apo", &format!("during-{n}"), &format!("ap-during-{n}"));
            app.publish(&apo, &batch).await;
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
    };
    tokio::join!(rebuilding, posting);
    app.wait_for_views().await;
    let during: i64 = sqlx::query_scalar("SELECT count(*) FROM caseload WHERE case_id LIKE 'during-%'")
        .fetch_one(&app.pool)
        .await
        .expect("count");
    assert_eq!(during, 40);

    let (clean_pool, clean_db) = app.clean_run("clean").await;
    let at = chrono::Utc::now();
    assert_eq!(views_checksum(&app.pool, at).await, views_checksum(&clean_pool, at).await);
    clean_pool.close().await;
    drop_database(&clean_db).await;
}

/// The timeline view, naming indexes for readers that cannot wait for the end of a rebuild.
struct TimelineNaming(&'static [&'static str]);

impl relais_projections::worker::View for TimelineNaming {
    fn name(&self) -> &'static str {
        "timeline"
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut sqlx::PgConnection,
        events: &'a [relais_projections::worker::Applied],
    ) -> futures::future::BoxFuture<'a, Result<(), sqlx::Error>> {
        relais_projections::timeline::Timeline.apply(tx, events)
    }

    fn tables(&self) -> &'static [&'static str] {
        relais_projections::timeline::Timeline.tables()
    }

    fn reader_indexes(&self) -> &'static [&'static str] {
        self.0
    }
}

#[tokio::test]
async fn a_view_naming_a_unique_or_unknown_index_for_readers_is_refused_before_anything_changes() {
    let app = spawn_app().await;
    app.load_history(20).await;
    app.wait_for_views().await;
    let at = chrono::Utc::now();
    let before = views_checksum(&app.pool, at).await;
    let (db, keys, stream, settings) = rebuild_parts(&app).await;
    // The primary key is a constraint the view's writes rely on; the second name is no index;
    // the third is another view's.
    // Named beside a view that is right (as `--all` does), which must leave nothing either.
    for wrong in ["case_timeline_pkey", "case_timeline_by_nothing", "client_events_by_org"] {
        let caseload = relais_projections::worker::view_named(&settings, "caseload").expect("a view");
        let naming: std::sync::Arc<dyn relais_projections::worker::View> =
            std::sync::Arc::new(TimelineNaming(Box::leak(Box::new([wrong]))));
        let refused =
            relais_projections::rebuild::rebuild_many(&db, &keys, &stream, &settings, vec![caseload, naming], &|_| {})
                .await;
        match refused {
            Err(relais_projections::rebuild::RebuildError::ReaderIndex { projection, index }) => {
                assert_eq!((projection.as_str(), index.as_str()), ("timeline", wrong));
            }
            other => panic!("{wrong}: {:?}", other.map(|r| r.len())),
        }
    }
    assert_eq!(before, views_checksum(&app.pool, at).await, "the live views are untouched");
    assert_eq!(app.checkpoint("timeline").await, app.stream_last_sequence().await);
    assert_eq!(rebuild_leftovers(&app.pool).await, 0, "the refused rebuild left no tables behind");
}
