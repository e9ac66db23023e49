//! `spawn_app()` and the test client.
#![allow(dead_code)]

use base64::Engine;
use relais::config::Settings;
use relais::nats_server::{NatsServer, NatsServerOptions};
use relais::startup::{Application, ServeRole};
use relais_domain::OrgId;
use relais_domain::reference::default_organisations;
use relais_projections::{Kek, Role, TokenStore};
use serde_json::{Value, json};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const ADMIN_DB_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

pub struct TestApp {
    pub address: String,
    pub settings: Settings,
    pub db_name: String,
    pub nats: NatsServer,
    pub http: reqwest::Client,
    pub pool: sqlx::PgPool,
    pub js: async_nats::jetstream::Context,
    pub kek_b64: (String, String),
    /// Base64 of the audit signing seed and of the admission key.
    pub audit_b64: (String, String),
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

fn random_secret() -> ([u8; 32], String) {
    let raw: [u8; 32] = rand::random();
    (raw, base64::engine::general_purpose::STANDARD.encode(raw))
}

pub fn db_url(name: &str) -> String {
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

/// Audit settings with fresh keys, and the base64 of the signing seed and admission key.
pub fn test_audit_settings() -> (relais::config::AuditSettings, (String, String)) {
    let (seed, seed_b64) = random_secret();
    let (admission, admission_b64) = random_secret();
    (relais::config::AuditSettings::new(seed, admission), (seed_b64, admission_b64))
}

/// Settings for a test: its own database, the given NATS, a free port, fresh secrets.
pub fn test_settings(nats_url: &str, db_name: &str) -> (Settings, (String, String)) {
    let (kek, kek_b64) = random_secret();
    let (pepper, pepper_b64) = random_secret();
    let settings = Settings {
        generated_secrets: Vec::new(),
        nats_url: nats_url.to_owned(),
        database_url: db_url(db_name),
        listen: "127.0.0.1:0".parse().expect("valid address"),
        stream: relais_eventlog::StreamSettings::default(),
        kek: Kek::new(kek, pepper),
        organisations: default_organisations(),
        projection_batch: 1000,
        consumer_prefix: "test".into(),
        validator_states: 20_000,
        db_connections: 16,
        clock: relais_projections::clock::system(),
        clock_tick: Duration::from_secs(60),
        monitor: relais_projections::monitor::MonitorSettings::default(),
        retention: relais_projections::retention::RetentionSettings::default(),
        audit: test_audit_settings().0,
    };
    (settings, (kek_b64, pepper_b64))
}

pub fn start_nats(dir: &std::path::Path) -> NatsServer {
    NatsServer::start(&NatsServerOptions {
        store_dir: dir.join("nats"),
        sync_always: false,
        extra_config: String::new(),
        port: None,
    })
    .expect("the pinned nats-server starts")
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(ServeRole::All).await
}

pub async fn spawn_app_with(role: ServeRole) -> TestApp {
    spawn_app_with_settings(role, |_| {}).await
}

/// An application whose settings `configure` adjusts before it starts.
pub async fn spawn_app_configured(role: ServeRole, configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_with_settings(role, configure).await
}

/// Like [`spawn_app_with`], with the test settings changed by `edit` first.
pub async fn spawn_app_with_settings(role: ServeRole, edit: impl FnOnce(&mut Settings)) -> TestApp {
    // The guard lives as long as the test process: dropping it would stop the tracer.
    std::mem::forget(relais::telemetry::init("relais-test", "warn"));
    let dir = tempfile::tempdir().expect("temp dir");
    let nats = start_nats(dir.path());
    let db_name = format!("relais_test_{}", Uuid::new_v4().simple());
    let (mut settings, kek_b64) = test_settings(&nats.url(), &db_name);
    let (audit, audit_b64) = test_audit_settings();
    settings.audit = audit;
    edit(&mut settings);
    start(settings, role, dir, nats, db_name, kek_b64, audit_b64).await
}

/// Like [`spawn_app_with`], on a NATS server the test started itself, connecting with
/// `nats_url` (which may carry a user and password).
pub async fn spawn_app_on(dir: tempfile::TempDir, nats: NatsServer, nats_url: &str, role: ServeRole) -> TestApp {
    spawn_app_on_with(dir, nats, nats_url, role, |_| {}).await
}

/// Like [`spawn_app_on`], with the test settings changed by `edit` first.
pub async fn spawn_app_on_with(
    dir: tempfile::TempDir,
    nats: NatsServer,
    nats_url: &str,
    role: ServeRole,
    edit: impl FnOnce(&mut Settings),
) -> TestApp {
    std::mem::forget(relais::telemetry::init("relais-test", "warn"));
    let db_name = format!("relais_test_{}", Uuid::new_v4().simple());
    let (mut settings, kek_b64) = test_settings(nats_url, &db_name);
    let (audit, audit_b64) = test_audit_settings();
    settings.audit = audit;
    edit(&mut settings);
    start(settings, role, dir, nats, db_name, kek_b64, audit_b64).await
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let name = self.db_name.clone();
        // Drop the test database from a thread of its own: Drop cannot await.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok(pool) = sqlx::PgPool::connect(ADMIN_DB_URL).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&pool).await;
                }
            });
        })
        .join();
    }
}

impl TestApp {
    /// The `relais` binary with this application's configuration (NATS, database, secrets).
    pub fn relais(&self) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_relais"));
        c.env("RELAIS_NATS_URL", &self.settings.nats_url)
            .env("RELAIS_DATABASE_URL", db_url(&self.db_name))
            .env("RELAIS_KEK", &self.kek_b64.0)
            .env("RELAIS_CLIENT_REF_PEPPER", &self.kek_b64.1)
            .env("RELAIS_AUDIT_SIGNING_KEY", &self.audit_b64.0)
            .env("RELAIS_ADMISSION_KEY", &self.audit_b64.1)
            .env("RELAIS_STATE_DIR", self._dir.path().join("state"))
            .env("RUST_LOG", "error");
        c
    }

    /// The directory of this test's files.
    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }

    pub async fn token(&self, org: &str, role: Role) -> String {
        let store = TokenStore::new(self.pool.clone());
        store.create(&OrgId::parse(org).expect("valid org"), role, "test").await.expect("token created").1
    }

    pub async fn post(&self, token: &str, content_type: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/events", self.address))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(body.to_string())
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_event(&self, token: &str, event: &Value) -> reqwest::Response {
        self.post(token, "application/cloudevents+json", event).await
    }

    pub async fn post_batch(&self, token: &str, events: &[Value]) -> reqwest::Response {
        self.post(token, "application/cloudevents-batch+json", &Value::Array(events.to_vec())).await
    }

    pub async fn get(&self, token: &str, path: &str) -> reqwest::Response {
        self.http.get(format!("{}{path}", self.address)).bearer_auth(token).send().await.expect("request sent")
    }

    pub async fn post_empty(&self, token: &str, path: &str) -> reqwest::Response {
        self.http.post(format!("{}{path}", self.address)).bearer_auth(token).send().await.expect("request sent")
    }

    /// `POST /v1/orgs/{org}/clients/{client}/erasure`.
    pub async fn erase(&self, token: &str, org: &str, client: &str) -> reqwest::Response {
        self.post_empty(token, &format!("/v1/orgs/{org}/clients/{client}/erasure")).await
    }

    /// `GET /v1/orgs/{org}/clients/{client}/export`.
    pub async fn export(&self, token: &str, org: &str, client: &str) -> reqwest::Response {
        self.get(token, &format!("/v1/orgs/{org}/clients/{client}/export")).await
    }

    /// Waits until every default view has applied everything up to the stream's last sequence.
    pub async fn wait_for_views(&self) {
        let target = self.stream_last_sequence().await;
        wait_for_checkpoint(&self.pool, relais_projections::worker::VALIDATOR, target).await;
        for view in relais_projections::worker::default_views() {
            wait_for_checkpoint(&self.pool, view.name(), target).await;
        }
    }

    /// The `relais` binary with this application's configuration in its environment.
    pub fn relais_command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_relais"));
        c.args(args)
            .env("RELAIS_NATS_URL", &self.settings.nats_url)
            .env("RELAIS_DATABASE_URL", db_url(&self.db_name))
            .env("RELAIS_KEK", &self.kek_b64.0)
            .env("RELAIS_CLIENT_REF_PEPPER", &self.kek_b64.1)
            .env("RELAIS_CONSUMER_PREFIX", "cli")
            .env("RELAIS_ADMISSION_KEY", &self.audit_b64.1)
            // Development secrets a test leaves unset are generated here, not in the checkout.
            .env("RELAIS_STATE_DIR", self._dir.path().join("state"))
            .env("RUST_LOG", "error")
            .kill_on_drop(true);
        c
    }

    /// Runs the `relais` binary to completion; returns (success, stdout, stderr).
    pub async fn run_relais(&self, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
        let mut c = self.relais_command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c.output().await.expect("relais runs");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub async fn stream_messages(&self) -> u64 {
        let mut stream = self.js.get_stream("RELAIS").await.expect("stream exists");
        stream.info().await.expect("stream info").state.messages
    }

    /// Who admitted the message stored at `sequence`, as its tag shows under this
    /// application's admission key.
    pub async fn admission_at(&self, sequence: u64) -> relais_audit::Admission {
        let stream = self.js.get_stream("RELAIS").await.expect("stream exists");
        let message = stream.get_raw_message(sequence).await.expect("a message at this sequence");
        let tag = message.headers.get(relais_eventlog::headers::ADMISSION).map(|v| v.as_str().to_owned());
        self.settings.audit.admission_key.check(tag.as_deref(), &message.subject, &message.payload)
    }

    pub async fn stream_last_sequence(&self) -> u64 {
        let mut stream = self.js.get_stream("RELAIS").await.expect("stream exists");
        stream.info().await.expect("stream info").state.last_sequence
    }

    pub async fn checkpoint(&self, projection: &str) -> u64 {
        relais_projections::worker::checkpoint(&self.pool, projection).await.expect("checkpoint read")
    }

    /// The log's append side as the gateway has it: every message tagged with this
    /// deployment's admission key.
    pub fn event_log(&self) -> relais_eventlog::EventLog {
        relais::startup::gateway_event_log(self.js.client(), &self.settings.audit.admission_key)
    }

    /// Waits until `projection` has applied everything up to the stream's last sequence.
    pub async fn wait_for_projection(&self, projection: &str) {
        let target = self.stream_last_sequence().await;
        wait_for_checkpoint(&self.pool, projection, target).await;
    }
}

/// Waits until `projection` reaches `target`; fails if it makes no progress for a minute.
pub async fn wait_for_checkpoint(pool: &sqlx::PgPool, projection: &str, target: u64) {
    let mut deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = 0;
    loop {
        let seq = relais_projections::worker::checkpoint(pool, projection).await.expect("checkpoint read");
        if seq >= target {
            return;
        }
        if seq > last {
            last = seq;
            deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        }
        assert!(tokio::time::Instant::now() < deadline, "{projection} stuck at {seq}, expected {target}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn event(org: &str, event_type: &str, subject: &str, data: Value) -> Value {
    json!({
        "specversion": "1.0",
        "id": Uuid::new_v4().to_string(),
        "source": format!("/orgs/{org}"),
        "type": event_type,
        "subject": subject,
        "time": "2026-03-02T09:30:00Z",
        "datacontenttype": "application/json",
        "data": data,
    })
}

pub fn guidance_requested(org: &str, case: &str, client_ref: &str) -> Value {
    event(
        org,
        "relais.guidance.requested",
        &format!("cases/{case}"),
        json!({ "client_ref": client_ref, "channel": "by_person", "language": "nl" }),
    )
}

pub fn guidance_accepted(org: &str, case: &str, client_ref: &str) -> Value {
    event(
        org,
        "relais.guidance.accepted",
        &format!("cases/{case}"),
        json!({ "client_ref": client_ref, "setting": "at_liberty", "legal_status": "convict" }),
    )
}

/// A case requested and accepted: interventions may follow.
pub fn open_case(org: &str, case: &str, client_ref: &str) -> Vec<Value> {
    vec![guidance_requested(org, case, client_ref), guidance_accepted(org, case, client_ref)]
}

pub fn intervention(org: &str, case: &str, client_ref: &str, mode: &str) -> Value {
    event(
        org,
        "relais.intervention.recorded",
        &format!("cases/{case}"),
        json!({
            "client_ref": client_ref, "mode": mode, "life_domains": ["housing"],
            "duration_minutes": 30, "language": "fr", "interpreter": "none"
        }),
    )
}

/// A checksum of every row of a table, in key order.
pub async fn table_checksum(pool: &sqlx::PgPool, table: &str, order: &str) -> (i64, String) {
    sqlx::query_as(&format!(
        "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY {order})), '') FROM {table} t"
    ))
    .fetch_one(pool)
    .await
    .expect("checksum query")
}

/// An event at a given time (RFC 3339).
pub fn event_at(org: &str, event_type: &str, subject: &str, time: &str, data: Value) -> Value {
    let mut e = event(org, event_type, subject, data);
    e["time"] = json!(time);
    e
}

/// Every view table of the projections, with its key order: what crash and rebuild
/// equivalence compare.
pub const VIEW_TABLES: &[(&str, &str)] = &[
    ("caseload", "org_id, case_id"),
    ("coming_up", "org_id, case_id, item, item_seq"),
    ("case_timeline", "seq"),
    ("referrals", "referral_id"),
    ("activities", "activity_id"),
    ("activity_participants", "activity_id, org_id, key_id"),
    ("monitor_members", "org_id, case_id"),
    ("monitor_moments", "org_id, case_id, seq"),
    ("monitor_referrals", "referral_id"),
    ("monitor_dropouts", "activity_id, org_id, key_id"),
    ("monitor_alerts", "alert_id"),
    ("stats_cases", "org_id, case_id"),
    ("stats_referrals", "referral_id"),
    ("stats_activities", "activity_id"),
    ("stats_facts", "seq, n"),
    ("client_events", "key_id, seq"),
];

/// The projections (views) of Relais.
pub const PROJECTIONS: &[&str] =
    &["caseload", "client_events", "timeline", "referrals", "activities", "monitor", "statistics"];

/// Checksums of every view table, the monitor brought to `at` first (its alerts depend on
/// the clock).
pub async fn views_checksum(pool: &sqlx::PgPool, at: chrono::DateTime<chrono::Utc>) -> Vec<(String, i64, String)> {
    relais_projections::monitor::settle(pool, &relais_projections::monitor::MonitorSettings::default(), at)
        .await
        .expect("monitor settled");
    let mut out = Vec::new();
    for (table, order) in VIEW_TABLES {
        let (n, sum) = table_checksum(pool, table, order).await;
        out.push(((*table).to_owned(), n, sum));
    }
    out
}

impl TestApp {
    /// Erases a client through the privacy endpoint (the key is destroyed, then
    /// `relais.client.erased` is recorded on `clients/<key id>`).
    pub async fn erase_client(&self, token: &str, org: &str, client_ref: &str) {
        let r = self
            .http
            .post(format!("{}/v1/orgs/{org}/clients/{client_ref}/erasure", self.address))
            .bearer_auth(token)
            .send()
            .await
            .expect("request sent");
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
    }

    /// GET as JSON, asserting the status.
    pub async fn get_json(&self, token: &str, path: &str, status: u16) -> Value {
        let r = self.get(token, path).await;
        assert_eq!(r.status().as_u16(), status, "GET {path}");
        r.json().await.expect("a JSON body")
    }

    /// Posts a batch and asserts it was stored.
    pub async fn publish(&self, token: &str, events: &[Value]) {
        let r = self.post_batch(token, events).await;
        let status = r.status();
        assert!(status.is_success(), "{status}: {}", r.text().await.unwrap_or_default());
    }
}

impl TestApp {
    /// Publishes a synthetic history of `clients` clients (about 25 events each) through the
    /// HTTP API, as `relais demo` does: one round per day, each organisation's events of the
    /// day in one batch. Returns the number of events.
    pub async fn load_history(&self, clients: usize) -> u64 {
        use relais::synth::{self, SynthOptions};
        let history = synth::generate(&SynthOptions { clients, ..Default::default() });
        let mut tokens = std::collections::HashMap::new();
        for org in self.settings.organisations.iter() {
            tokens.insert(org.id.to_string(), self.token(org.id.as_str(), Role::Org).await);
        }
        for round in synth::daily_batches(&history, 500) {
            let posts = round.into_iter().map(|(org, batch)| {
                let token = tokens.get(org).cloned().unwrap_or_default();
                async move {
                    let r = self.post_batch(&token, &batch).await;
                    assert!(r.status().is_success(), "{org}: {}", r.text().await.unwrap_or_default());
                }
            });
            futures::future::join_all(posts).await;
        }
        history.len() as u64
    }

    /// Runs a clean projector (in this process) over the same stream into a database of its
    /// own, with a copy of the key store, until it has applied the whole stream; returns its
    /// pool and the database name (drop it with [`drop_database`]).
    pub async fn clean_run(&self, suffix: &str) -> (sqlx::PgPool, String) {
        let clean_db = format!("{}_{suffix}", self.db_name);
        let (mut settings, _) = test_settings(&self.settings.nats_url, &clean_db);
        settings.kek = self.settings.kek.clone();
        // The same deployment: Relais' own erasures carry tags of this admission key.
        settings.audit = self.settings.audit.clone();
        settings.consumer_prefix = suffix.into();
        // The key store travels with a rebuild into another database (docs/OPERATIONS.md).
        relais_projections::Database::connect_and_migrate(&settings.database_url).await.expect("clean database");
        let clean_pool = sqlx::PgPool::connect(&settings.database_url).await.expect("clean pool");
        type KeyRow = (Uuid, String, Vec<u8>, Option<Vec<u8>>, String);
        copy_key_store(&self.pool, &clean_pool).await;
        let clean = Application::build(&settings, ServeRole::Projector).await.expect("clean projector");
        let stop = clean.shutdown_token();
        let running = tokio::spawn(clean.run_until_stopped());
        let target = self.stream_last_sequence().await;
        wait_for_checkpoint(&clean_pool, relais_projections::worker::VALIDATOR, target).await;
        for p in PROJECTIONS {
            wait_for_checkpoint(&clean_pool, p, target).await;
        }
        stop.cancel();
        let _ = running.await;
        (clean_pool, clean_db)
    }
}

/// Drops a database made by a test.
pub async fn drop_database(name: &str) {
    let admin = sqlx::PgPool::connect(ADMIN_DB_URL).await.expect("admin");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await.expect("dropped");
}

/// The environment of a `relais` process working on the test application's log and the
/// database `db_name`.
pub fn relais_command(app: &TestApp, db_name: &str, prefix: &str) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_relais"));
    c.env("RELAIS_NATS_URL", &app.settings.nats_url)
        .env("RELAIS_DATABASE_URL", db_url(db_name))
        .env("RELAIS_KEK", &app.kek_b64.0)
        .env("RELAIS_CLIENT_REF_PEPPER", &app.kek_b64.1)
        .env("RELAIS_ADMISSION_KEY", &app.audit_b64.1)
        .env("RELAIS_CONSUMER_PREFIX", prefix)
        .env("RELAIS_STATE_DIR", app.dir().join("state"))
        .env("RUST_LOG", "error");
    c
}

/// Copies the key store of one database into another: a rebuild into another database needs
/// the client data keys (and the tombstones of erased clients), as docs/OPERATIONS.md says.
pub async fn copy_key_store(from: &sqlx::PgPool, to: &sqlx::PgPool) {
    type KeyRow = (Uuid, String, Vec<u8>, Option<Vec<u8>>, String, Option<chrono::DateTime<chrono::Utc>>);
    let keys: Vec<KeyRow> =
        sqlx::query_as("SELECT key_id, org_id, client_ref_hash, wrapped_key, kek_id, erased_at FROM client_keys")
            .fetch_all(from)
            .await
            .expect("keys");
    for (id, org, hash, wrapped, kek, erased_at) in keys {
        sqlx::query(
            "INSERT INTO client_keys (key_id, org_id, client_ref_hash, wrapped_key, kek_id, erased_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(org)
        .bind(hash)
        .bind(wrapped)
        .bind(kek)
        .bind(erased_at)
        .execute(to)
        .await
        .expect("key copied");
    }
}

/// Builds and starts the application of a test, and the handle the test holds.
async fn start(
    settings: Settings,
    role: ServeRole,
    dir: tempfile::TempDir,
    nats: NatsServer,
    db_name: String,
    kek_b64: (String, String),
    audit_b64: (String, String),
) -> TestApp {
    let app = Application::build(&settings, role).await.expect("application builds");
    let address = format!("http://127.0.0.1:{}", app.port().unwrap_or(0));
    let shutdown = app.shutdown_token();
    let pool = app.infra().db.pool().clone();
    let js = app.infra().js.clone();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        settings,
        db_name,
        nats,
        http: reqwest::Client::new(),
        pool,
        js,
        kek_b64,
        audit_b64,
        shutdown,
        _dir: dir,
    }
}

/// The stored form of a CloudEvent as an organisation's own system writes it: personal fields
/// sealed with the client's data key (created if new).
pub async fn sealed_stored(
    app: &TestApp,
    event: Value,
) -> (relais_domain::Envelope, relais_domain::envelope::StoredEventV1) {
    let (envelope, _) =
        relais_domain::Envelope::from_cloud_event(event, chrono::Utc::now(), "own-system").expect("valid event");
    let (mut stored, personal) = envelope.split_for_storage();
    if let Some(client_ref) = envelope.data.client_ref() {
        let keys = relais_projections::KeyStore::new(app.pool.clone(), app.settings.kek.clone());
        let (key_id, key) = keys.key_for_client(&envelope.org, client_ref).await.expect("client key");
        stored.sealed = Some(relais_domain::seal::seal(&key, key_id, envelope.id, rand::random(), &personal));
    }
    (envelope, stored)
}

/// The quarantine's rows: sequence, reason, detail.
pub async fn quarantine_rows(pool: &sqlx::PgPool) -> Vec<(i64, String, String)> {
    sqlx::query_as("SELECT seq, reason, detail FROM quarantine ORDER BY seq").fetch_all(pool).await.expect("rows")
}

/// Makes the ledger's inserts that match `when` (a trigger's `WHEN` condition on `NEW`) wait on
/// an advisory lock the returned connection holds, until [`release_ledger_inserts`]: a test can
/// act while a worker or a request is inside its statement.
pub async fn hold_ledger_inserts(pool: &sqlx::PgPool, when: &str) -> sqlx::pool::PoolConnection<sqlx::Postgres> {
    for sql in [
        "CREATE FUNCTION wait_for_test() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN PERFORM pg_advisory_lock(4242); PERFORM pg_advisory_unlock(4242); RETURN NEW; END $$"
            .to_owned(),
        format!(
            "CREATE TRIGGER wait_for_test BEFORE INSERT ON event_ledger FOR EACH ROW WHEN ({when})
             EXECUTE FUNCTION wait_for_test()"
        ),
    ] {
        sqlx::query(&sql).execute(pool).await.expect("set up");
    }
    let mut lock = pool.acquire().await.expect("connection");
    sqlx::query("SELECT pg_advisory_lock(4242)").execute(&mut *lock).await.expect("locked");
    lock
}

/// Waits until an insert [`hold_ledger_inserts`] holds is waiting.
pub async fn wait_for_a_held_ledger_insert(pool: &sqlx::PgPool) {
    let waiting = async {
        loop {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND wait_event_type = 'Lock' AND wait_event = 'advisory'",
            )
            .fetch_one(pool)
            .await
            .expect("activity");
            if n > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(30), waiting).await.expect("a ledger insert waits");
}

/// Lets the inserts [`hold_ledger_inserts`] held go.
pub async fn release_ledger_inserts(mut lock: sqlx::pool::PoolConnection<sqlx::Postgres>) {
    sqlx::query("SELECT pg_advisory_unlock(4242)").execute(&mut *lock).await.expect("unlocked");
}

/// Starts a projector beside a gateway-only app; the returned token stops it.
pub async fn start_projector(app: &TestApp) -> tokio_util::sync::CancellationToken {
    let projector = relais::startup::Application::build(&app.settings, relais::startup::ServeRole::Projector)
        .await
        .expect("projector");
    let stop = projector.shutdown_token();
    tokio::spawn(projector.run_until_stopped());
    stop
}
