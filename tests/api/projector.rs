//! The projector killed with SIGKILL between and inside batches resumes to the view of a run
//! that was never interrupted.

use crate::helpers::*;
use relais::startup::{Application, ServeRole};
use relais_projections::Role;
use std::process::{Child, Command};
use std::time::Duration;

fn projector_process(app: &TestApp, db_name: &str, prefix: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_relais"))
        .args(["serve", "--role", "projector"])
        .env("RELAIS_NATS_URL", &app.settings.nats_url)
        .env("RELAIS_DATABASE_URL", db_url(db_name))
        .env("RELAIS_KEK", &app.kek_b64.0)
        .env("RELAIS_CLIENT_REF_PEPPER", &app.kek_b64.1)
        .env("RELAIS_AUDIT_SIGNING_KEY", &app.audit_b64.0)
        .env("RELAIS_ADMISSION_KEY", &app.audit_b64.1)
        .env("RELAIS_CONSUMER_PREFIX", prefix)
        .env("RELAIS_PROJECTION_BATCH", "37")
        .env("RUST_LOG", "error")
        .spawn()
        .expect("projector starts")
}

#[tokio::test]
async fn a_projector_killed_mid_run_resumes_to_the_view_of_a_clean_run() {
    let app = spawn_app_with(ServeRole::Gateway).await;
    let token = app.token("wsw", Role::Org).await;
    let mut total = 0;
    let mut opening = Vec::new();
    for c in 0..40 {
        opening.extend(open_case("wsw", &format!("case-{c}"), &format!("cl-{c}")));
    }
    assert_eq!(app.post_batch(&token, &opening).await.status(), 201);
    total += opening.len() as u64;
    for b in 0..10 {
        let batch: Vec<_> = (0..25)
            .map(|i| {
                let c = (b * 7 + i) % 40;
                intervention(
                    "wsw",
                    &format!("case-{c}"),
                    &format!("cl-{c}"),
                    if i % 3 == 0 { "planning" } else { "informing" },
                )
            })
            .collect();
        assert_eq!(app.post_batch(&token, &batch).await.status(), 201);
        total += batch.len() as u64;
    }
    assert_eq!(app.stream_last_sequence().await, total);

    // The projector of the application's database, killed twice while it works.
    let mut killed_at = Vec::new();
    for _ in 0..2 {
        let mut child = projector_process(&app, &app.db_name, "crash");
        let before = app.checkpoint("caseload").await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while app.checkpoint("caseload").await == before && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        killed_at.push(app.checkpoint("caseload").await);
    }
    assert!(killed_at[1] < total, "killed before the end: {killed_at:?}");
    let mut child = projector_process(&app, &app.db_name, "crash");
    wait_for_checkpoint(&app.pool, "caseload", total).await;
    child.kill().expect("stopped");
    child.wait().expect("reaped");

    // A clean run over the same stream into a database of its own.
    let clean_db = format!("{}_clean", app.db_name);
    let (mut settings, _) = test_settings(&app.settings.nats_url, &clean_db);
    settings.kek = app.settings.kek.clone();
    settings.audit = app.settings.audit.clone();
    settings.consumer_prefix = "clean".into();
    // The key store travels with a rebuild into another database (docs/OPERATIONS.md).
    relais_projections::Database::connect_and_migrate(&settings.database_url).await.expect("clean database");
    let clean_pool = sqlx::PgPool::connect(&settings.database_url).await.expect("clean pool");
    copy_key_store(&app.pool, &clean_pool).await;
    let clean = Application::build(&settings, ServeRole::Projector).await.expect("clean projector");
    let stop = clean.shutdown_token();
    tokio::spawn(clean.run_until_stopped());
    wait_for_checkpoint(&clean_pool, "caseload", total).await;
    stop.cancel();

    let crashed = table_checksum(&app.pool, "caseload", "org_id, case_id").await;
    let reference = table_checksum(&clean_pool, "caseload", "org_id, case_id").await;
    assert_eq!(crashed.0, 40);
    assert_eq!(crashed, reference, "killed at checkpoints {killed_at:?}");
    let ledger_crashed = table_checksum(&app.pool, "event_ledger", "seq").await;
    let ledger_clean = table_checksum(&clean_pool, "event_ledger", "seq").await;
    assert_eq!(ledger_crashed, ledger_clean);
    clean_pool.close().await;
    let admin = sqlx::PgPool::connect(ADMIN_DB_URL).await.expect("admin");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {clean_db} WITH (FORCE)")).execute(&admin).await.expect("dropped");
}

#[tokio::test]
async fn every_view_announces_its_checkpoint_when_its_batch_commits() {
    let app = spawn_app().await;
    let mut listener = sqlx::postgres::PgListener::connect_with(&app.pool).await.expect("listener");
    listener.listen(relais_projections::worker::CHECKPOINT_CHANNEL).await.expect("listen");
    let apo = app.token("apo", Role::Org).await;
    app.publish(&apo, &open_case("apo", "announced", "ap-announced")).await;
    let last = app.stream_last_sequence().await;
    let mut waiting: std::collections::BTreeSet<String> =
        relais_projections::worker::default_views().iter().map(|v| v.name().to_owned()).collect();
    waiting.insert(relais_projections::worker::VALIDATOR.to_owned());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !waiting.is_empty() {
        let n = tokio::time::timeout_at(deadline, listener.recv())
            .await
            .unwrap_or_else(|_| panic!("no announcement from {waiting:?}"))
            .expect("notification");
        let (name, seq) = n.payload().split_once(' ').expect("<projection> <sequence>");
        let seq: u64 = seq.parse().expect("a sequence");
        assert!(seq <= last, "{name} announced {seq} beyond the stream's {last}");
        if seq == last {
            // The announcement follows the commit: the checkpoint is readable at once.
            assert_eq!(app.checkpoint(name).await, last, "{name}");
            waiting.remove(name);
        }
    }
}

#[tokio::test]
async fn a_validator_that_keeps_only_a_few_states_judges_as_one_that_keeps_them_all() {
    // Three states per generation: the validator forgets all the time and folds histories
    // again from the log; its verdicts and the views must be those of a clean run.
    let app = spawn_app_with_settings(ServeRole::All, |s| s.validator_states = 3).await;
    app.load_history(40).await;
    app.wait_for_views().await;
    let quarantined: i64 =
        sqlx::query_scalar("SELECT count(*) FROM quarantine").fetch_one(&app.pool).await.expect("count");
    assert_eq!(quarantined, 0, "the synthetic history keeps every rule");
    let (clean_pool, clean_db) = app.clean_run("roomy").await;
    let at = chrono::Utc::now();
    assert_eq!(views_checksum(&app.pool, at).await, views_checksum(&clean_pool, at).await);
    assert_eq!(
        table_checksum(&app.pool, "event_ledger", "seq").await,
        table_checksum(&clean_pool, "event_ledger", "seq").await
    );
    clean_pool.close().await;
    drop_database(&clean_db).await;
}

/// The log alone: a nats-server of its own with Relais' stream, for tests of the reader.
struct BareLog {
    js: async_nats::jetstream::Context,
    stream: async_nats::jetstream::stream::Stream,
    _nats: relais::nats_server::NatsServer,
    _dir: tempfile::TempDir,
}

impl BareLog {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let nats = start_nats(dir.path());
        let client = async_nats::connect(nats.url()).await.expect("connects");
        let js = async_nats::jetstream::new(client);
        let stream = relais_eventlog::ensure_stream(&js, &Default::default()).await.expect("stream");
        BareLog { js, stream, _nats: nats, _dir: dir }
    }
}

/// A projection batch waits a moment for messages the broker still holds (a worker catching
/// up fills its batches); the workers race that wait against their clock and shutdown, so a
/// call dropped while it waits must lose nothing it took, and the end of the log must reach a
/// caller that polls each call only once.
#[tokio::test]
async fn a_projection_batch_dropped_while_it_fills_loses_no_message() {
    use futures::FutureExt;
    let log = BareLog::start().await;
    let (js, stream) = (&log.js, &log.stream);
    const MESSAGES: u64 = 3000;
    let mut acks = Vec::new();
    for i in 0..MESSAGES {
        let subject = format!("relais.ev.apo.cases.c-{}", i % 50);
        acks.push(js.publish(subject, format!("m{i}").into()).await.expect("published"));
    }
    for ack in acks {
        ack.await.expect("stored");
    }
    let mut consumer = relais_eventlog::reader::open_projection_consumer(
        stream,
        "fill-test",
        &relais_eventlog::subjects::all_events(),
        0,
        200,
    )
    .await
    .expect("consumer");
    let (mut seen, mut dropped) = (Vec::new(), 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while (seen.len() as u64) < MESSAGES && std::time::Instant::now() < deadline {
        // One poll, then the call is dropped if it waits: at any of its awaits. At most 199
        // (3000 is no multiple of it): the last batch is most likely short, ends because the
        // broker holds nothing more for the consumer, and must come back from a single poll.
        match consumer.next_batch(199).now_or_never() {
            Some(batch) => {
                seen.extend(batch.expect("a batch").iter().map(|m| m.sequence));
                consumer.ack_delivered().await.expect("acknowledged");
            }
            None => {
                dropped += 1;
                tokio::time::sleep(Duration::from_micros(300)).await;
            }
        }
    }
    assert!(dropped > 0, "no call was dropped: the test did not test");
    assert_eq!(seen, (1..=MESSAGES).collect::<Vec<_>>(), "every message once, in order ({dropped} calls dropped)");

    // One more message at the head of the log: a batch of one, which always ends because
    // nothing more is stored, whatever the batches above happened to be.
    js.publish("relais.ev.apo.cases.c-last", "last".into()).await.expect("published").await.expect("stored");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let last = loop {
        if let Some(batch) = consumer.next_batch(199).now_or_never() {
            break batch.expect("a batch").iter().map(|m| m.sequence).collect::<Vec<_>>();
        }
        assert!(std::time::Instant::now() < deadline, "the head of the log never came back from a single poll");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert_eq!(last, vec![MESSAGES + 1]);
}

/// A projection consumer that gets nothing while the broker holds more for it has stalled (the
/// NATS client can stop asking: `reader::PROJECTION_STALL`); it says so within the guard's time,
/// reopened at its checkpoint it goes on, and one that is owed nothing just waits.
#[tokio::test]
async fn a_projection_consumer_that_gets_nothing_while_more_is_stored_says_it_stalled() {
    use relais_eventlog::reader::{self, PROJECTION_STALL, ReadError};
    let log = BareLog::start().await;
    let (js, stream) = (&log.js, &log.stream);
    for i in 0..20 {
        js.publish(format!("relais.ev.apo.cases.c-{i}"), format!("m{i}").into())
            .await
            .expect("published")
            .await
            .expect("stored");
    }
    let filter = relais_eventlog::subjects::all_events();
    // Batches of one: the broker delivers at most four unacknowledged, then nothing more, as a
    // client that stopped asking would get.
    let mut consumer = reader::open_projection_consumer(stream, "stall-test", &filter, 0, 1).await.expect("consumer");
    for expected in 1..=4u64 {
        let batch = consumer.next_batch(1).await.expect("a batch");
        assert_eq!(batch.iter().map(|m| m.sequence).collect::<Vec<_>>(), vec![expected]);
    }
    let started = tokio::time::Instant::now();
    let stalled = tokio::time::timeout(Duration::from_secs(9), consumer.next_batch(1))
        .await
        .expect("the stall is reported before the idle heartbeat's 10 s");
    assert!(
        matches!(stalled, Err(ReadError::Stalled { after: 4, .. })),
        "stalled after the fourth message: {:?}",
        stalled.map(|b| b.len())
    );
    assert!(started.elapsed() >= PROJECTION_STALL, "not before the guard's time");

    // Reopened at its checkpoint (4), acknowledging as a worker does: the rest, then a wait.
    drop(consumer);
    let mut consumer = reader::open_projection_consumer(stream, "stall-test", &filter, 4, 200).await.expect("reopened");
    let mut seen = Vec::new();
    while seen.len() < 16 {
        let batch = tokio::time::timeout(Duration::from_secs(9), consumer.next_batch(200))
            .await
            .expect("delivered")
            .expect("a batch");
        seen.extend(batch.iter().map(|m| m.sequence));
        consumer.ack_delivered().await.expect("acknowledged");
    }
    assert_eq!(seen, (5..=20).collect::<Vec<_>>());
    let waited = tokio::time::timeout(PROJECTION_STALL + Duration::from_secs(1), consumer.next_batch(200)).await;
    assert!(waited.is_err(), "a consumer owed nothing waits: {:?}", waited.map(|b| b.map(|b| b.len())));
}

/// Projectors holding the lock of this database.
async fn lock_holders(app: &TestApp) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database =
           (SELECT oid FROM pg_database WHERE datname = current_database())
           AND ((classid::bigint << 32) | objid::bigint) = $1",
    )
    .bind(relais_projections::worker::PROJECTOR_LOCK)
    .fetch_one(&app.pool)
    .await
    .expect("locks")
}

/// Two projectors on one database would share the durable consumers, each seeing part of the
/// log: a second one (a rolling deploy) waits until the first stops, then takes over.
#[tokio::test]
async fn a_second_projector_on_the_same_database_waits_for_the_first_to_stop_then_takes_over() {
    let app = spawn_app_with(ServeRole::Gateway).await;
    let first = Application::build(&app.settings, ServeRole::Projector).await.expect("the first projector");
    let stop_first = first.shutdown_token();
    let first = tokio::spawn(first.run_until_stopped());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while lock_holders(&app).await != 1 {
        assert!(tokio::time::Instant::now() < deadline, "the first projector never took the lock");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = Application::build(&app.settings, ServeRole::Projector).await.expect("the second projector");
    let stop_second = second.shutdown_token();
    let second = tokio::spawn(second.run_until_stopped());

    let apo = app.token("apo", Role::Org).await;
    assert_eq!(app.post_event(&apo, &guidance_requested("apo", "case-1", "cl-1")).await.status(), 201);
    app.wait_for_views().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(lock_holders(&app).await, 1, "one projector runs");

    stop_first.cancel();
    first.await.expect("joined").expect("the first stops cleanly");
    assert_eq!(app.post_event(&apo, &guidance_requested("apo", "case-2", "cl-2")).await.status(), 201);
    app.wait_for_views().await;
    let cases: i64 = sqlx::query_scalar("SELECT count(*) FROM caseload").fetch_one(&app.pool).await.expect("caseload");
    assert_eq!(cases, 2, "the second projector took over");
    assert_eq!(lock_holders(&app).await, 1);
    stop_second.cancel();
    second.await.expect("joined").expect("the second stops cleanly");
}

/// A view that refuses the events of cases named `poison-…` as PostgreSQL refuses a value it
/// cannot store (a data exception: here a division by zero, SQLSTATE 22012).
struct Refusing;

impl relais_projections::worker::View for Refusing {
    fn name(&self) -> &'static str {
        "refusing_probe"
    }

    fn apply<'a>(
        &'a self,
        tx: &'a mut sqlx::PgConnection,
        events: &'a [relais_projections::worker::Applied],
    ) -> futures::future::BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            if events.iter().any(|e| e.envelope.subject.to_string().contains("poison-")) {
                sqlx::query("SELECT 1 / 0").execute(&mut *tx).await?;
            }
            Ok(())
        })
    }
}

/// A projector of the default views and [`Refusing`], started afresh (a cold validator).
async fn start_refusing_projector(app: &TestApp) -> tokio_util::sync::CancellationToken {
    let db = relais_projections::Database::connect_and_migrate(&app.settings.database_url).await.expect("database");
    let keys = relais_projections::KeyStore::new(app.pool.clone(), app.settings.kek.clone());
    let stream = app.js.get_stream("RELAIS").await.expect("stream");
    let mut views = relais_projections::worker::default_views();
    views.push(std::sync::Arc::new(Refusing));
    let projector =
        relais_projections::Projector::new(db, keys, stream, app.settings.projector_settings()).with_views(views);
    let stop = tokio_util::sync::CancellationToken::new();
    tokio::spawn(projector.run(stop.clone()));
    stop
}

#[tokio::test]
async fn an_event_a_view_cannot_store_is_quarantined_with_the_reason_and_every_view_goes_on() {
    let app = spawn_app_with(ServeRole::Gateway).await;
    let token = app.token("apo", Role::Org).await;
    let stop = start_refusing_projector(&app).await;

    // One batch: the event at fault between two that are not.
    let batch = vec![
        guidance_requested("apo", "case-ok-1", "cl-ok-1"),
        guidance_requested("apo", "poison-1", "cl-poison-1"),
        guidance_requested("apo", "case-ok-2", "cl-ok-2"),
    ];
    assert_eq!(app.post_batch(&token, &batch).await.status(), 201);
    for view in ["caseload", "timeline", "refusing_probe"] {
        wait_for_checkpoint(&app.pool, view, 3).await;
    }
    let quarantined: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT seq, reason, detail FROM quarantine").fetch_all(&app.pool).await.expect("rows");
    assert_eq!(quarantined.len(), 1, "{quarantined:?}");
    let (seq, reason, detail) = &quarantined[0];
    assert_eq!((*seq, reason.as_str()), (2, "unprojectable"));
    // The view and PostgreSQL's code, never its message (which quotes the value refused).
    assert_eq!(detail, "the view refusing_probe cannot store it: SQLSTATE 22012");
    // Every view leaves the event out, and has the others.
    let cases: Vec<String> =
        sqlx::query_scalar("SELECT case_id FROM caseload ORDER BY case_id").fetch_all(&app.pool).await.expect("cases");
    assert_eq!(cases, ["case-ok-1", "case-ok-2"]);
    // The organisation sees why, and the views go on with what comes next.
    let listed = app.get_json(&token, "/v1/orgs/apo/quarantine", 200).await;
    assert!(listed.to_string().contains("unprojectable"), "{listed}");
    assert_eq!(app.post_event(&token, &guidance_requested("apo", "case-ok-3", "cl-ok-3")).await.status(), 201);
    wait_for_checkpoint(&app.pool, "caseload", 4).await;
    let cases: i64 = sqlx::query_scalar("SELECT count(*) FROM caseload").fetch_one(&app.pool).await.expect("count");
    assert_eq!(cases, 3);

    // A validator started afresh judges by the history it accepted, the unprojectable event
    // included, as the one that judged it did: the case was requested, so its acceptance is
    // not refused (the probe view refuses it in turn).
    stop.cancel();
    let stop = start_refusing_projector(&app).await;
    assert_eq!(app.post_event(&token, &guidance_accepted("apo", "poison-1", "cl-poison-1")).await.status(), 201);
    wait_for_checkpoint(&app.pool, "caseload", 5).await;
    let reason: String = sqlx::query_scalar("SELECT reason FROM quarantine WHERE seq = 5")
        .fetch_one(&app.pool)
        .await
        .expect("the acceptance is quarantined");
    assert_eq!(reason, "unprojectable", "judged by the validator as the first one would have");
    stop.cancel();
}
