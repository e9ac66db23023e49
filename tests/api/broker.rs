//! Autonomy enforced by NATS itself. nats-server runs with the deployed accounts
//! (`deploy/nats/accounts.conf`, passwords from its environment); Relais connects with its
//! backend users; an organisation's own system connects with its own user and may publish and
//! read its own events, and nothing of another organisation's.

use crate::helpers::*;
use async_nats::jetstream::{self, consumer::pull, context::ContextBuilder, message::PublishMessage};
use bytes::Bytes;
use chrono::Utc;
use relais::nats_server::{NatsServer, NatsServerOptions};
use relais::startup::{Application, ServeRole};
use relais_domain::envelope::Envelope;
use relais_domain::{OrgId, StoredEvent, seal};
use relais_eventlog::broker::{self, GATEWAY_USER, ORG_API_PREFIX, PROJECTOR_USER};
use relais_eventlog::{EventLog, Outgoing, subjects};
use relais_projections::{KeyStore, Role};
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Short: a denial at the broker is silence, so every wait for an answer that must not come
/// ends here.
const DENIED_WITHIN: Duration = Duration::from_secs(1);
/// Patient: what must succeed may take its time on a busy machine.
const ALLOWED_WITHIN: Duration = Duration::from_secs(10);

fn organisations() -> Vec<OrgId> {
    relais_domain::reference::default_organisations().into_iter().map(|o| o.id).collect()
}

pub(crate) fn deployed_accounts() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats/accounts.conf")
}

/// nats-server with the deployed accounts (`deploy/nats/accounts.conf`) and a fresh password
/// for every user, its store in `dir`; the passwords by user.
pub(crate) fn deployed_nats(dir: &Path) -> (NatsServer, HashMap<String, String>) {
    let store = dir.join("nats");
    std::fs::create_dir_all(&store).expect("store dir");
    std::fs::copy(deployed_accounts(), store.join("accounts.conf")).expect("accounts copied");
    let (env, passwords) = password_env();
    let nats = NatsServer::start_with_env(
        &NatsServerOptions {
            store_dir: store,
            sync_always: true,
            extra_config: "include \"accounts.conf\"\n".into(),
            port: None,
        },
        &env,
    )
    .expect("nats-server starts with the deployed accounts");
    (nats, passwords)
}

/// A password for every user of the deployed accounts, as nats-server's environment.
pub(crate) fn password_env() -> (Vec<(String, String)>, HashMap<String, String>) {
    let mut env = Vec::new();
    let mut by_user = HashMap::new();
    for user in broker::users(&organisations()) {
        let password = relais::deploy::generate_password();
        env.push((broker::password_variable(&user), password.clone()));
        by_user.insert(user, password);
    }
    (env, by_user)
}

struct Broker {
    app: TestApp,
    passwords: HashMap<String, String>,
    port: u16,
    stop_projector: CancellationToken,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop_projector.cancel();
    }
}

impl Broker {
    fn url(&self, user: &str) -> String {
        format!("nats://{user}:{}@127.0.0.1:{}", self.passwords[user], self.port)
    }

    /// An organisation's own system, connected with its own user; server errors (permission
    /// violations) arrive on the receiver.
    async fn org_client(&self, user: &str) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = async_nats::ConnectOptions::with_user_and_password(user.into(), self.passwords[user].clone())
            .request_timeout(Some(DENIED_WITHIN))
            .event_callback(move |event| {
                let tx = tx.clone();
                async move {
                    if let async_nats::Event::ServerError(e) = event {
                        let _ = tx.send(e.to_string());
                    }
                }
            })
            .connect(format!("nats://127.0.0.1:{}", self.port))
            .await
            .expect("the organisation's user connects");
        (client, rx)
    }

    async fn stream(&self) -> jetstream::stream::Stream {
        self.app.js.get_stream("RELAIS").await.expect("stream")
    }

    async fn subject_count(&self, filter: &str) -> u64 {
        use futures::TryStreamExt;
        let stream = self.stream().await;
        let counts: HashMap<String, usize> =
            stream.info_with_subjects(filter).await.expect("subjects").try_collect().await.expect("subject counts");
        counts.values().map(|n| *n as u64).sum()
    }
}

/// nats-server with the deployed accounts; Relais's gateway with the gateway user and its
/// projection workers, in an application of their own, with the projector user.
async fn start_broker() -> Broker {
    start_broker_with(|_| {}).await
}

/// Like [`start_broker`], with both processes' settings changed by `edit` first.
async fn start_broker_with(edit: impl FnOnce(&mut relais::config::Settings)) -> Broker {
    let dir = tempfile::tempdir().expect("temp dir");
    let (nats, passwords) = deployed_nats(dir.path());
    let port = nats.port();
    let gateway_url = format!("nats://{GATEWAY_USER}:{}@127.0.0.1:{port}", passwords[GATEWAY_USER]);
    let app = spawn_app_on_with(dir, nats, &gateway_url, ServeRole::Gateway, edit).await;
    let mut settings = app.settings.clone();
    settings.nats_url = format!("nats://{PROJECTOR_USER}:{}@127.0.0.1:{port}", passwords[PROJECTOR_USER]);
    let projector = Application::build(&settings, ServeRole::Projector).await.expect("projector connects");
    let stop_projector = projector.shutdown_token();
    tokio::spawn(projector.run_until_stopped());
    Broker { app, passwords, port, stop_projector }
}

/// An event as an organisation's own system stores it: envelope from the CloudEvent, personal
/// fields sealed with the client's data key.
async fn sealed(app: &TestApp, event: Value) -> Outgoing {
    let (envelope, expected) = Envelope::from_cloud_event(event, Utc::now(), "own-system").expect("valid event");
    let (mut stored, personal) = envelope.split_for_storage();
    if let Some(client_ref) = envelope.data.client_ref() {
        let keys = KeyStore::new(app.pool.clone(), app.settings.kek.clone());
        let (key_id, key) = keys.key_for_client(&envelope.org, client_ref).await.expect("client key");
        stored.sealed = Some(seal::seal(&key, key_id, envelope.id, rand::random(), &personal));
    }
    Outgoing {
        subject: subjects::event_subject(&envelope.org, &envelope.subject),
        event_id: envelope.id,
        event_type: envelope.data.event_type(),
        schema_version: envelope.data.spec().version,
        payload: Bytes::from(StoredEvent::V1(stored).encode()),
        expected_last_subject_sequence: expected,
        trace_headers: Vec::new(),
    }
}

/// Waits for the permission violation the server reports for `operation` (`Publish` or
/// `Subscription`) on `subject`.
async fn violation(errors: &mut mpsc::UnboundedReceiver<String>, operation: &str, subject: &str) {
    let wanted = format!("permissions violation for {operation} to \"{subject}\"").to_lowercase();
    let mut seen = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), errors.recv()).await {
            Ok(Some(e)) if e.to_lowercase().contains(&wanted) => return,
            Ok(Some(e)) => seen.push(e),
            _ => panic!("no permission violation for {operation} to {subject}; server errors seen: {seen:?}"),
        }
    }
}

#[tokio::test]
async fn an_organisation_publishes_its_own_events_directly_and_reads_back_only_its_own() {
    let b = start_broker().await;
    let apo_http = b.app.token("apo", Role::Org).await;
    let dsr_http = b.app.token("dsr", Role::Org).await;
    // Another organisation's events are in the same stream.
    assert_eq!(b.app.post_event(&dsr_http, &guidance_requested("dsr", "case-b", "cl-b")).await.status(), 201);

    // One event, published the way the deployment guide shows: plain JetStream publish.
    let (apo, mut errors) = b.org_client("apo").await;
    let one = sealed(&b.app, guidance_requested("apo", "case-direct", "cl-direct")).await;
    let js = jetstream::new(apo.clone());
    let ack = js
        .send_publish(
            one.subject.clone(),
            PublishMessage::build()
                .payload(one.payload.clone())
                .message_id(one.event_id.to_string())
                .header("Relais-Type", one.event_type),
        )
        .await
        .expect("sent")
        .await
        .expect("acknowledged by the stream through the account import");
    assert_eq!(ack.stream, "RELAIS");
    assert!(!ack.duplicate);
    // Three more as one atomic batch, with Relais's own publisher over the organisation's
    // connection.
    let batch = vec![
        sealed(&b.app, guidance_accepted("apo", "case-direct", "cl-direct")).await,
        sealed(&b.app, intervention("apo", "case-direct", "cl-direct", "informing")).await,
        sealed(&b.app, intervention("apo", "case-direct", "cl-direct", "planning")).await,
    ];
    let appended = EventLog::new(apo.clone()).append(&batch).await.expect("atomic batch stored");
    assert_eq!(appended[2].sequence, appended[0].sequence + 2);

    // The events reach the organisation's view, opened with the client's key.
    b.app.wait_for_projection("caseload").await;
    let r = b.app.get(&apo_http, "/v1/orgs/apo/cases/case-direct").await;
    assert_eq!(r.status(), 200);
    let case: Value = r.json().await.expect("json");
    assert_eq!(case["client_ref"], "cl-direct");
    assert_eq!(case["intervention_count"], 2);
    let (quarantined,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM quarantine").fetch_one(&b.app.pool).await.expect("count");
    assert_eq!(quarantined, 0);

    // Its own durable consumer gives exactly its own events, and acks go through.
    let own = ContextBuilder::new().api_prefix(ORG_API_PREFIX).timeout(ALLOWED_WITHIN).build(apo.clone());
    let consumer: jetstream::consumer::PullConsumer =
        own.get_consumer_from_stream("org-apo", "RELAIS").await.expect("its own consumer");
    let mut messages = consumer.fetch().max_messages(100).messages().await.expect("fetch");
    let mut subjects_read = Vec::new();
    while let Some(m) = futures::StreamExt::next(&mut messages).await {
        let m = m.expect("message");
        subjects_read.push(m.subject.to_string());
        m.double_ack().await.expect("acknowledged");
    }
    assert_eq!(subjects_read, vec!["relais.ev.apo.cases.case-direct"; 4]);
    let mut consumer = own.get_consumer_from_stream::<pull::Config, _, _>("org-apo", "RELAIS").await.expect("info");
    let info = consumer.info().await.expect("info");
    assert_eq!((info.num_pending, info.num_ack_pending), (0, 0));
    assert!(errors.try_recv().is_err(), "no permission violation on its own subjects");

    // The relais binary works through the accounts too (version check, stream, consumers).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_relais"))
        .arg("status")
        .env("RELAIS_NATS_URL", b.url(PROJECTOR_USER))
        .env("RELAIS_DATABASE_URL", db_url(&b.app.db_name))
        .env("RELAIS_KEK", &b.app.kek_b64.0)
        .env("RELAIS_CLIENT_REF_PEPPER", &b.app.kek_b64.1)
        .env("RELAIS_ADMISSION_KEY", &b.app.audit_b64.1)
        .output()
        .expect("relais status runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("stream last sequence: 5"), "{stdout}");
}

#[tokio::test]
async fn an_organisation_cannot_publish_as_another_nor_read_its_events() {
    let b = start_broker().await;
    let dsr_http = b.app.token("dsr", Role::Org).await;
    assert_eq!(b.app.post_event(&dsr_http, &guidance_requested("dsr", "case-b", "cl-b")).await.status(), 201);
    let dsr_before = b.subject_count("relais.ev.dsr.>").await;
    let total_before = b.app.stream_messages().await;
    let mut dsr_consumer = b.stream().await.get_consumer::<pull::Config>("org-dsr").await.expect("dsr's consumer");
    let dsr_info_before = dsr_consumer.info().await.expect("info").clone();

    let (apo, mut errors) = b.org_client("apo").await;
    let js = ContextBuilder::new().timeout(DENIED_WITHIN).build(apo.clone());

    // Publishing on dsr's subjects: a permission violation, and nothing stored.
    let forged = sealed(&b.app, guidance_requested("dsr", "case-forged", "cl-forged")).await;
    let err = js
        .send_publish(forged.subject.clone(), PublishMessage::build().payload(forged.payload.clone()))
        .await
        .expect("queued")
        .await
        .expect_err("publishing on another organisation's subject is refused");
    assert_eq!(err.kind(), jetstream::context::PublishErrorKind::TimedOut, "{err}");
    violation(&mut errors, "Publish", "relais.ev.dsr.cases.case-forged").await;
    apo.publish("relais.ev.dsr.cases.case-forged", forged.payload.clone()).await.expect("queued");
    apo.flush().await.expect("flushed");
    violation(&mut errors, "Publish", "relais.ev.dsr.cases.case-forged").await;

    // Creating a consumer over dsr's subjects, through the mapped API or the account's own.
    let over_dsr = pull::Config {
        durable_name: Some("peek".into()),
        filter_subject: "relais.ev.dsr.>".into(),
        ..Default::default()
    };
    let mapped = ContextBuilder::new().api_prefix(ORG_API_PREFIX).timeout(DENIED_WITHIN).build(apo.clone());
    assert!(mapped.create_consumer_on_stream(over_dsr.clone(), "RELAIS").await.is_err());
    violation(&mut errors, "Publish", "JS.RELAIS.API.CONSUMER.CREATE.RELAIS.peek.relais.ev.dsr.>").await;
    assert!(js.create_consumer_on_stream(over_dsr.clone(), "RELAIS").await.is_err());
    violation(&mut errors, "Publish", "$JS.API.CONSUMER.CREATE.RELAIS.peek.relais.ev.dsr.>").await;
    // Nor over everything, nor a consumer of its own making over its own subjects.
    let unfiltered = pull::Config { durable_name: Some("all".into()), ..Default::default() };
    assert!(mapped.create_consumer_on_stream(unfiltered, "RELAIS").await.is_err());
    violation(&mut errors, "Publish", "JS.RELAIS.API.CONSUMER.CREATE.RELAIS.all").await;
    let own_filter = pull::Config {
        durable_name: Some("mine".into()),
        filter_subject: "relais.ev.apo.>".into(),
        ..Default::default()
    };
    assert!(mapped.create_consumer_on_stream(own_filter, "RELAIS").await.is_err());
    violation(&mut errors, "Publish", "JS.RELAIS.API.CONSUMER.CREATE.RELAIS.mine.relais.ev.apo.>").await;
    for name in ["peek", "all", "mine"] {
        assert!(b.stream().await.consumer_info(name).await.is_err(), "no consumer {name} was created");
    }

    // Fetching from dsr's durable consumer.
    assert!(mapped.get_consumer_from_stream::<pull::Config, _, _>("org-dsr", "RELAIS").await.is_err());
    violation(&mut errors, "Publish", "JS.RELAIS.API.CONSUMER.INFO.RELAIS.org-dsr").await;
    let next = apo
        .request(
            "JS.RELAIS.API.CONSUMER.MSG.NEXT.RELAIS.org-dsr",
            Bytes::from_static(b"{\"batch\":10,\"no_wait\":true}"),
        )
        .await;
    assert!(next.is_err(), "no message of dsr's consumer is delivered");
    violation(&mut errors, "Publish", "JS.RELAIS.API.CONSUMER.MSG.NEXT.RELAIS.org-dsr").await;
    let next = apo.request("$JS.API.CONSUMER.MSG.NEXT.RELAIS.org-dsr", Bytes::from_static(b"{\"batch\":10}")).await;
    assert!(next.is_err());
    violation(&mut errors, "Publish", "$JS.API.CONSUMER.MSG.NEXT.RELAIS.org-dsr").await;

    // Nor any other read of the stream: info (it lists subjects), message get, direct get.
    for subject in [
        "JS.RELAIS.API.STREAM.INFO.RELAIS",
        "$JS.API.STREAM.INFO.RELAIS",
        "$JS.API.STREAM.MSG.GET.RELAIS",
        "$JS.API.DIRECT.GET.RELAIS.relais.ev.dsr.cases.case-b",
    ] {
        assert!(apo.request(subject, Bytes::from_static(b"{\"seq\":1}")).await.is_err(), "{subject} answered");
        violation(&mut errors, "Publish", subject).await;
    }
    // Nor listening on the event subjects.
    let _subscription = apo.subscribe("relais.ev.>").await.expect("queued");
    apo.flush().await.expect("flushed");
    violation(&mut errors, "Subscription", "relais.ev.>").await;

    // dsr's events and consumer are untouched.
    assert_eq!(b.subject_count("relais.ev.dsr.>").await, dsr_before);
    assert_eq!(b.app.stream_messages().await, total_before);
    let dsr_info = dsr_consumer.info().await.expect("info");
    assert_eq!(dsr_info.delivered.stream_sequence, dsr_info_before.delivered.stream_sequence);
    assert_eq!(dsr_info.num_pending, dsr_info_before.num_pending);

    // The projection workers' user may read everything but publish no event.
    let (projector, mut projector_errors) = b.org_client(PROJECTOR_USER).await;
    projector.publish("relais.ev.apo.cases.x", Bytes::from_static(b"x")).await.expect("queued");
    projector.flush().await.expect("flushed");
    violation(&mut projector_errors, "Publish", "relais.ev.apo.cases.x").await;
    assert_eq!(b.app.stream_messages().await, total_before);

    // Neither backend user may remove, purge or change a stream: a compromised gateway or
    // projector cannot erase history through the broker. (The operators' user may.)
    for user in [GATEWAY_USER, PROJECTOR_USER] {
        let (client, mut errors) = b.org_client(user).await;
        let js = jetstream::new(client);
        assert!(js.delete_stream("RELAIS").await.is_err(), "{user} deleted the stream");
        violation(&mut errors, "Publish", "$JS.API.STREAM.DELETE.RELAIS").await;
        let mut stream = js.get_stream("RELAIS").await.expect("stream info is allowed");
        assert!(stream.purge().await.is_err(), "{user} purged the stream");
        violation(&mut errors, "Publish", "$JS.API.STREAM.PURGE.RELAIS").await;
        let mut config = stream.info().await.expect("info").config.clone();
        config.max_age = Duration::from_secs(60);
        assert!(js.update_stream(config).await.is_err(), "{user} changed the stream");
        violation(&mut errors, "Publish", "$JS.API.STREAM.UPDATE.RELAIS").await;
    }
    assert_eq!(b.app.stream_messages().await, total_before);
    assert!(b.stream().await.info().await.expect("info").config.max_age.is_zero());

    // No connection without a user of the accounts, or with another's password.
    let url = format!("nats://127.0.0.1:{}", b.port);
    assert!(async_nats::connect(&url).await.is_err(), "anonymous connections are refused");
    let wrong = async_nats::ConnectOptions::with_user_and_password("apo".into(), b.passwords["dsr"].clone())
        .connect(&url)
        .await;
    assert!(wrong.is_err(), "a password opens only its own user");
}

#[test]
fn the_production_configuration_is_valid_and_needs_every_password() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats");
    let conf = std::fs::read_to_string(dir.join("nats.conf")).expect("deploy/nats/nats.conf");
    assert!(conf.contains("include \"accounts.conf\""));
    let bin = relais::nats_server::binary().expect("nats-server");
    let check = |env: &[(String, String)]| {
        std::process::Command::new(&bin)
            .args(["-t", "-c"])
            .arg(dir.join("nats.conf"))
            .envs(env.iter().cloned())
            .output()
            .expect("nats-server runs")
    };
    let (env, _) = password_env();
    let out = check(&env);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Without its passwords the server refuses to start: no user is ever left without one.
    let out = check(&env[1..]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&env[0].0));
}

/// Kills the server it holds when dropped.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_production_configuration_runs_a_server_that_syncs_every_write() {
    // The deployed file itself, only its addresses and store moved to this test's own: the
    // running server must report that it syncs every write (not only the file say so).
    let deployed = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nats");
    let conf = std::fs::read_to_string(deployed.join("nats.conf")).expect("deploy/nats/nats.conf");
    let dir = tempfile::tempdir().expect("temp dir");
    let (port, http) =
        (relais::nats_server::free_port().expect("port"), relais::nats_server::free_port().expect("port"));
    let moved = [
        ("listen: 0.0.0.0:4222", format!("listen: 127.0.0.1:{port}")),
        ("http: 127.0.0.1:8222", format!("http: 127.0.0.1:{http}")),
        ("store_dir: \"/var/lib/nats\"", format!("store_dir: {:?}", dir.path().join("store"))),
    ];
    let conf = moved.iter().fold(conf, |conf, (from, to)| {
        assert!(conf.contains(from), "deploy/nats/nats.conf no longer holds {from}");
        conf.replace(from, to)
    });
    std::fs::write(dir.path().join("nats.conf"), conf).expect("written");
    std::fs::copy(deployed.join("accounts.conf"), dir.path().join("accounts.conf")).expect("copied");
    let (env, _) = password_env();
    let _server = Running(
        std::process::Command::new(relais::nats_server::binary().expect("nats-server"))
            .arg("-c")
            .arg(dir.path().join("nats.conf"))
            .envs(env)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server starts"),
    );
    let url = format!("http://127.0.0.1:{http}/jsz?config=true");
    let deadline = tokio::time::Instant::now() + ALLOWED_WITHIN;
    let jsz: Value = loop {
        match reqwest::get(&url).await {
            Ok(r) => break r.json().await.expect("/jsz is JSON"),
            Err(e) if tokio::time::Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the monitoring port never answered: {e}"),
        }
    };
    assert_eq!(jsz["config"]["sync_always"], true, "{jsz}");
}

#[tokio::test]
async fn the_accounts_alone_confine_an_organisation_without_its_user_permissions() {
    // Defence in depth: with the user permissions taken out of the deployed file, the account
    // boundaries still hold (the permissions make a denial loud; the accounts make it so).
    let deployed = std::fs::read_to_string(deployed_accounts()).expect("accounts");
    let start = deployed.find("{ user: \"apo\"").expect("apo's user");
    let end = start + deployed[start..].find("} } }").expect("end of apo's user") + "} } }".len();
    let apo_user = format!("{{ user: \"apo\", password: ${} }}", broker::password_variable("apo"));
    let stripped = format!("{}{apo_user}{}", &deployed[..start], &deployed[end..]);
    assert!(!stripped.contains("publish: { allow: [\"relais.ev.apo.>\""), "apo's permissions are gone");
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("nats");
    std::fs::create_dir_all(&store).expect("store dir");
    std::fs::write(store.join("accounts.conf"), stripped).expect("written");
    let (env, passwords) = password_env();
    let nats = NatsServer::start_with_env(
        &NatsServerOptions {
            store_dir: store,
            sync_always: false,
            extra_config: "include \"accounts.conf\"\n".into(),
            port: None,
        },
        &env,
    )
    .expect("nats-server starts");
    let backend_url = format!("nats://{GATEWAY_USER}:{}@127.0.0.1:{}", passwords[GATEWAY_USER], nats.port());
    let backend = relais_eventlog::connect(&backend_url, "backend").await.expect("backend connects");
    let stream = relais_eventlog::ensure_stream(&jetstream::new(backend), &Default::default()).await.expect("stream");
    relais_eventlog::broker::ensure_org_consumers(&stream, &organisations()).await.expect("consumers");

    let apo = async_nats::ConnectOptions::with_user_and_password("apo".into(), passwords["apo"].clone())
        .request_timeout(Some(ALLOWED_WITHIN))
        .connect(nats.url())
        .await
        .expect("apo connects");
    let js = ContextBuilder::new().timeout(ALLOWED_WITHIN).build(apo.clone());
    let own = js.send_publish("relais.ev.apo.cases.x", PublishMessage::build().payload("x".into())).await;
    assert_eq!(own.expect("sent").await.expect("its own subjects are stored").stream, "RELAIS");
    let other = js.send_publish("relais.ev.dsr.cases.x", PublishMessage::build().payload("x".into())).await;
    let err = other.expect("sent").await.expect_err("another's subjects reach no stream");
    assert_eq!(err.kind(), jetstream::context::PublishErrorKind::StreamNotFound, "{err}");
    let over_dsr = pull::Config {
        durable_name: Some("peek".into()),
        filter_subject: "relais.ev.dsr.>".into(),
        ..Default::default()
    };
    let err = js.create_consumer_on_stream(over_dsr, "RELAIS").await.expect_err("no JetStream of its own");
    assert!(err.to_string().contains("10039") || err.to_string().to_lowercase().contains("not enabled"), "{err}");
    let mapped = ContextBuilder::new().api_prefix(ORG_API_PREFIX).timeout(ALLOWED_WITHIN).build(apo.clone());
    let err =
        mapped.get_consumer_from_stream::<pull::Config, _, _>("org-dsr", "RELAIS").await.expect_err("not imported");
    assert!(err.to_string().contains("does not exist"), "no responder behind the mapped subject: {err}");
    let mut stream = stream;
    assert_eq!(stream.info().await.expect("info").state.messages, 1);
    assert!(stream.consumer_info("peek").await.is_err());
}

#[tokio::test]
async fn in_the_split_deployment_the_retention_sweep_appends_its_erasures_admitted() {
    use crate::privacy::{accepted, closed, post_all, requested, with_time};
    // The gateway and the projector run as separate processes with their own NATS users, as
    // deployed; the projector's user may not publish events.
    let broker = start_broker_with(|s| {
        s.retention.policy = relais_projections::retention::RetentionPolicy::parse("default=30").expect("policy");
        s.retention.sweep_every = Some(Duration::from_millis(300));
    })
    .await;
    let app = &broker.app;
    let org = app.token("dsr", Role::Org).await;
    let old = (Utc::now() - chrono::Duration::days(100)).to_rfc3339();
    post_all(
        app,
        &org,
        &[
            with_time(requested("dsr", "c-old", "cl-old", "x"), &old),
            with_time(accepted("dsr", "c-old", "cl-old", "x"), &old),
            with_time(closed("dsr", "c-old", "cl-old", "x"), &old),
        ],
    )
    .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let sequence = loop {
        let appended: Option<i64> =
            sqlx::query_scalar("SELECT erasure_seq FROM client_keys WHERE erased_at IS NOT NULL")
                .fetch_optional(&app.pool)
                .await
                .expect("client keys")
                .flatten();
        if let Some(sequence) = appended {
            break sequence;
        }
        assert!(tokio::time::Instant::now() < deadline, "the periodic sweep never appended cl-old's erasure");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(broker.subject_count("relais.ev.dsr.clients.*").await, 1);
    assert_eq!(
        app.admission_at(sequence as u64).await,
        relais_audit::Admission::Gateway,
        "the sweep's erasure is admitted"
    );
}

/// A nats-server of its own, without accounts, for what is checked of existing streams and
/// consumers.
fn plain_server(dir: &tempfile::TempDir) -> NatsServer {
    NatsServer::start(&NatsServerOptions {
        store_dir: dir.path().join("nats"),
        sync_always: false,
        extra_config: String::new(),
        port: None,
    })
    .expect("nats-server starts")
}

#[tokio::test]
async fn an_existing_stream_that_could_lose_history_is_refused_with_its_reasons() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nats = plain_server(&dir);
    let js = jetstream::new(relais_eventlog::connect(&nats.url(), "test").await.expect("connects"));
    let fit = jetstream::stream::Config {
        name: "RELAIS".into(),
        subjects: vec!["relais.ev.>".into()],
        storage: jetstream::stream::StorageType::File,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        allow_atomic_publish: true,
        ..Default::default()
    };
    // Each setting that would let a publisher or an API call remove or expire messages. An
    // organisation publishing on its own subjects with a rollup header would purge the
    // others' history; with a TTL header its own events would expire.
    let unfit: [(&str, jetstream::stream::Config); 5] = [
        (
            "its retention is not limits",
            jetstream::stream::Config { retention: jetstream::stream::RetentionPolicy::Interest, ..fit.clone() },
        ),
        ("deny_delete is off", jetstream::stream::Config { deny_delete: false, ..fit.clone() }),
        ("deny_purge is off", jetstream::stream::Config { deny_purge: false, ..fit.clone() }),
        ("allow_rollup_hdrs is on", jetstream::stream::Config { allow_rollup: true, deny_purge: false, ..fit.clone() }),
        ("per-message TTLs are allowed", jetstream::stream::Config { allow_message_ttl: true, ..fit.clone() }),
    ];
    for (reason, config) in unfit {
        let _ = js.delete_stream("RELAIS").await;
        js.create_stream(config).await.expect("created as an operator might have");
        let err = relais_eventlog::ensure_stream(&js, &Default::default()).await.expect_err(reason).to_string();
        assert!(err.contains("unfit") && err.contains(reason), "{reason}: {err}");
    }

    // `relais serve` refuses to build on it; a command (`status` here, an auditor's `verify`
    // of a tampered log above all) names what is wrong and goes on.
    relais_eventlog::audit::ensure_audit_stream(&js, "RELAIS_AUDIT").await.expect("the audit stream");
    let name = format!("unfit_{}", uuid::Uuid::new_v4().simple());
    let relais = |command: &str| {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_relais"))
            .arg(command)
            .env("RELAIS_NATS_URL", nats.url())
            .env("RELAIS_DATABASE_URL", db_url(&name))
            .env("RELAIS_STATE_DIR", dir.path().join("state"))
            .env("RELAIS_LISTEN", "127.0.0.1:0")
            .env("RUST_LOG", "error")
            .kill_on_drop(true)
            .output()
    };
    let serve = tokio::time::timeout(Duration::from_secs(60), relais("serve")).await.expect("ends").expect("runs");
    let err = String::from_utf8_lossy(&serve.stderr);
    assert!(!serve.status.success() && err.contains("unfit: per-message TTLs are allowed"), "{err}");
    let status = tokio::time::timeout(Duration::from_secs(60), relais("status")).await.expect("ends").expect("runs");
    let err = String::from_utf8_lossy(&status.stderr);
    assert!(status.status.success(), "{err}");
    assert!(err.contains("warning: stream RELAIS does not protect its history: per-message TTLs are allowed"), "{err}");
    drop_database(&name).await;
    let _ = js.delete_stream("RELAIS").await;
    js.create_stream(fit).await.expect("created");
    relais_eventlog::ensure_stream(&js, &Default::default()).await.expect("a fit stream is taken as it is");

    // The audit stream is held to the same.
    let _ = js.delete_stream("RELAIS_AUDIT").await;
    js.create_stream(jetstream::stream::Config {
        name: "RELAIS_AUDIT".into(),
        subjects: vec!["relais.audit.>".into()],
        storage: jetstream::stream::StorageType::File,
        deny_delete: true,
        ..Default::default()
    })
    .await
    .expect("created");
    let err = relais_eventlog::audit::ensure_audit_stream(&js, "RELAIS_AUDIT").await.expect_err("unfit").to_string();
    assert!(err.contains("deny_purge is off"), "{err}");
}

#[tokio::test]
async fn an_organisation_consumer_that_reads_more_than_its_own_subjects_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nats = plain_server(&dir);
    let js = jetstream::new(relais_eventlog::connect(&nats.url(), "test").await.expect("connects"));
    let stream = relais_eventlog::ensure_stream(&js, &Default::default()).await.expect("stream");
    let dsr = OrgId::parse("dsr").expect("valid");
    // Recreated by hand with a wider filter, or none: dsr's account reaches it by its imports.
    for filter in ["relais.ev.>", ""] {
        let _ = stream.delete_consumer("org-dsr").await;
        stream
            .create_consumer(pull::Config {
                durable_name: Some("org-dsr".into()),
                filter_subject: filter.into(),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                ..Default::default()
            })
            .await
            .expect("created as an operator might have");
        let err =
            broker::ensure_org_consumers(&stream, std::slice::from_ref(&dsr)).await.expect_err(filter).to_string();
        assert!(err.contains("org-dsr") && err.contains("relais.ev.dsr.>"), "{filter}: {err}");
    }
    stream.delete_consumer("org-dsr").await.expect("deleted");
    broker::ensure_org_consumers(&stream, std::slice::from_ref(&dsr)).await.expect("recreated");
    let mut consumer: jetstream::consumer::PullConsumer = stream.get_consumer("org-dsr").await.expect("consumer");
    assert_eq!(consumer.info().await.expect("info").config.filter_subject, "relais.ev.dsr.>");
    // An existing consumer of the right filter is left as it is (its position is dsr's).
    broker::ensure_org_consumers(&stream, &[dsr]).await.expect("kept");
}

/// A stand-in for an older nats-server: it introduces itself as `version` and answers pings,
/// enough for a client to connect and read what it is; the lines it received are kept.
async fn server_of_version(version: &'static str) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bound");
    let address = listener.local_addr().expect("address");
    let received = Arc::new(Mutex::new(Vec::new()));
    let kept = received.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let info = format!(
                    "INFO {{\"server_id\":\"old\",\"server_name\":\"old\",\"version\":\"{version}\",\"proto\":1,\
                     \"host\":\"127.0.0.1\",\"port\":{},\"headers\":true,\"max_payload\":1048576,\"jetstream\":true}}\r\n",
                    address.port()
                );
                if write.write_all(info.as_bytes()).await.is_err() {
                    return;
                }
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.starts_with("PING") && write.write_all(b"PONG\r\n").await.is_err() {
                        return;
                    }
                    kept.lock().expect("lock").push(line);
                }
            });
        }
    });
    (address, received)
}

#[tokio::test]
async fn relais_refuses_to_start_on_a_server_older_than_2_12_1_and_says_why() {
    let (address, _) = server_of_version("2.11.9").await;
    let state = tempfile::tempdir().expect("dir");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_relais"))
        .arg("serve")
        .env("RELAIS_NATS_URL", format!("nats://{address}"))
        .env("RELAIS_DATABASE_URL", db_url("relais_never_created"))
        .env("RELAIS_STATE_DIR", state.path())
        .env("RELAIS_LISTEN", "127.0.0.1:0")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), out).await.expect("relais stops").expect("relais runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("is version 2.11.9; Relais needs nats-server >= 2.12.1"), "{stderr}");
    // The pinned server is accepted by the same check.
    let (address, _) = server_of_version(relais::nats_server::PINNED_VERSION).await;
    relais_eventlog::connect(&format!("nats://{address}"), "test").await.expect("the pinned version is accepted");
}

#[tokio::test]
async fn a_batch_is_not_sent_to_an_older_server_the_client_reconnected_to() {
    // The client reconnects on its own; where it lands on an older server (here connected to
    // one directly, as a reconnection would leave it), a batch would be stored message by
    // message. Nothing is sent, and the caller gets a refusal that stored nothing.
    let (address, received) = server_of_version("2.11.9").await;
    let client = async_nats::connect(format!("nats://{address}")).await.expect("connects");
    let log = EventLog::new(client.clone());
    let outgoing: Vec<Outgoing> = (0..3)
        .map(|i| Outgoing {
            subject: format!("relais.ev.apo.cases.case-{i}"),
            event_id: uuid::Uuid::new_v4(),
            event_type: "relais.case.opened",
            schema_version: 1,
            payload: Bytes::from_static(b"x"),
            expected_last_subject_sequence: None,
            trace_headers: Vec::new(),
        })
        .collect();
    let err = log.append(&outgoing).await.expect_err("refused").to_string();
    assert!(err.contains("version 2.11.9, older than 2.12.1") && err.contains("nothing was sent"), "{err}");
    client.flush().await.expect("flushed");
    let published: Vec<String> = received
        .lock()
        .expect("lock")
        .iter()
        .filter(|l| l.starts_with("PUB") || l.starts_with("HPUB"))
        .cloned()
        .collect();
    assert!(published.is_empty(), "{published:?}");
}
