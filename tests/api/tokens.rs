//! Token management with the `relais` binary: a secret is shown once and stored only as a
//! hash, a revoked token is refused at once, and no secret reaches logs or traces.

use crate::helpers::*;
use sha2::Digest;
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::Command;
use uuid::Uuid;

/// The `relais` binary with the test application's database and secrets.
fn relais(app: &TestApp) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relais"));
    cmd.env("RELAIS_DATABASE_URL", db_url(&app.db_name))
        .env("RELAIS_NATS_URL", &app.settings.nats_url)
        .env("RELAIS_KEK", &app.kek_b64.0)
        .env("RELAIS_CLIENT_REF_PEPPER", &app.kek_b64.1)
        .env("RELAIS_ADMISSION_KEY", &app.audit_b64.1)
        .env("RUST_LOG", "trace")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .kill_on_drop(true);
    cmd
}

async fn run(app: &TestApp, args: &[&str]) -> (Output, String, String) {
    let out = relais(app).args(args).output().await.expect("relais runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out, stdout, stderr)
}

/// Creates a token with the command line; returns its id and secret.
async fn create(app: &TestApp, org: &str, role: &str) -> (Uuid, String) {
    let (out, stdout, stderr) = run(app, &["token", "create", "--org", org, "--role", role, "--label", "ci"]).await;
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "only the token on stdout: {stdout:?}");
    let secret = lines[0].to_owned();
    assert!(secret.starts_with("rls_") && secret.len() >= 40, "{secret}");
    assert!(!stderr.contains(&secret), "the secret is not logged");
    let id = stderr
        .split("created token ")
        .nth(1)
        .and_then(|rest| Uuid::parse_str(rest.get(..36)?).ok())
        .unwrap_or_else(|| panic!("the id on stderr: {stderr}"));
    (id, secret)
}

async fn token_count(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM api_tokens").fetch_one(&app.pool).await.expect("count")
}

#[tokio::test]
async fn a_token_is_shown_once_stored_as_a_hash_listed_without_secret_and_refused_once_revoked() {
    let app = spawn_app().await;
    let (id, secret) = create(&app, "apo", "org").await;
    assert_eq!(app.get(&secret, "/v1/orgs/apo/cases").await.status(), 200);

    // Only the hash is stored.
    let (hash_matches, rows_with_secret): (bool, i64) = sqlx::query_as(
        "SELECT (SELECT secret_hash = sha256(convert_to($1, 'UTF8')) FROM api_tokens WHERE id = $2),
                (SELECT count(*) FROM api_tokens t WHERE strpos(row_to_json(t)::text, $1) > 0)",
    )
    .bind(&secret)
    .bind(id)
    .fetch_one(&app.pool)
    .await
    .expect("query");
    assert!(hash_matches);
    assert_eq!(rows_with_secret, 0);

    let (out, stdout, stderr) = run(&app, &["token", "list"]).await;
    assert!(out.status.success(), "{stderr}");
    let row = stdout.lines().find(|l| l.contains(&id.to_string())).expect("the token is listed");
    for column in ["apo", "org", "active", "ci"] {
        assert!(row.contains(column), "{column} in {row}");
    }
    let random_part = &secret["rls_".len()..];
    for output in [&stdout, &stderr] {
        assert!(!output.contains(&random_part[..12]), "no part of the secret is listed");
    }

    let (out, stdout, stderr) = run(&app, &["token", "revoke", &id.to_string()]).await;
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout.trim(), format!("revoked {id}"));
    // Refused at once: the next request, without waiting.
    let r = app.get(&secret, "/v1/orgs/apo/cases").await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = app.post_event(&secret, &guidance_requested("apo", "case-1", "cl-1")).await;
    assert_eq!(r.status(), 401);
    assert_eq!(app.stream_messages().await, 0);
    let (_, stdout, _) = run(&app, &["token", "list"]).await;
    assert!(stdout.lines().any(|l| l.contains(&id.to_string()) && l.contains("revoked")), "{stdout}");

    // Revoking twice, an unknown id, an unknown organisation or role: errors, nothing changes.
    let before = token_count(&app).await;
    let (out, _, stderr) = run(&app, &["token", "revoke", &id.to_string()]).await;
    assert!(!out.status.success());
    assert!(stderr.contains("no active token"), "{stderr}");
    let (out, _, _) = run(&app, &["token", "revoke", &Uuid::new_v4().to_string()]).await;
    assert!(!out.status.success());
    let (out, stdout, stderr) = run(&app, &["token", "create", "--org", "nobody", "--role", "org"]).await;
    assert!(!out.status.success());
    assert!(stdout.is_empty() && stderr.contains("unknown organisation"), "{stderr}");
    let (out, stdout, stderr) = run(&app, &["token", "create", "--org", "apo", "--role", "root"]).await;
    assert!(!out.status.success());
    assert!(stdout.is_empty() && stderr.contains("--role"), "{stderr}");
    assert_eq!(token_count(&app).await, before);

    // Creating and revoking a token are recorded, by the operator, never with the secret.
    // (The attempts refused above are not: nothing was created.)
    let resource = format!("tokens/{id}");
    let recorded: Vec<(String, String, String)> =
        sqlx::query_as("SELECT role, action, resource FROM access_log WHERE action LIKE 'token.%' ORDER BY id")
            .fetch_all(&app.pool)
            .await
            .expect("access log");
    assert_eq!(
        recorded,
        [("operator", "token.create"), ("operator", "token.revoke")].map(|(r, a)| (
            r.to_owned(),
            a.to_owned(),
            resource.clone()
        ))
    );
    let log: String = sqlx::query_scalar("SELECT string_agg(row_to_json(a)::text, ' ') FROM access_log a")
        .fetch_one(&app.pool)
        .await
        .expect("access log");
    assert!(!log.contains(random_part), "no secret in the access log");
}

/// Collects what is exported to an OTLP/HTTP collector.
async fn otlp_collector() -> (String, Arc<Mutex<Vec<u8>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    let app = axum::Router::new().fallback(move |body: axum::body::Bytes| {
        let sink = sink.clone();
        async move {
            sink.lock().expect("lock").extend_from_slice(&body);
            ""
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

#[tokio::test]
async fn no_token_secret_reaches_the_logs_or_the_traces_even_at_trace_level() {
    let app = spawn_app().await;
    let (otlp_url, exported) = otlp_collector().await;
    let (token_id, secret) = create(&app, "apo", "org").await;
    let (revoked_id, revoked) = create(&app, "apo", "org").await;
    let (out, _, stderr) = run(&app, &["token", "revoke", &revoked_id.to_string()]).await;
    assert!(out.status.success(), "{stderr}");
    let unknown = "rls_ThisTokenWasNeverIssuedButLooksRealXYZ0123456789";

    let dir = tempfile::tempdir().expect("dir");
    let log_path = dir.path().join("serve.log");
    let port = relais::nats_server::free_port().expect("port");
    let mut serve = relais(&app)
        .args(["serve", "--role", "gateway"])
        .env("RELAIS_LISTEN", format!("127.0.0.1:{port}"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp_url)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).expect("log file"))
        .spawn()
        .expect("relais serve starts");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while app.http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "relais serve did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let send = |token: &str, method: reqwest::Method, path: &str| {
        app.http.request(method, format!("{base}{path}")).bearer_auth(token)
    };
    let get = reqwest::Method::GET;
    let post = reqwest::Method::POST;
    let event = guidance_requested("apo", "case-logs", "cl-logs").to_string();
    let statuses = [
        send(&secret, get.clone(), "/v1/orgs/apo/cases").send().await.expect("sent").status(),
        send(&secret, get.clone(), "/v1/orgs/apo/cases/case-missing").send().await.expect("sent").status(),
        send(&secret, get.clone(), "/v1/orgs/dsr/cases").send().await.expect("sent").status(),
        send(&secret, get.clone(), "/v1/orgs/apo/cases?limit=nonsense").send().await.expect("sent").status(),
        send(&secret, post.clone(), "/v1/events")
            .header("content-type", "application/cloudevents+json")
            .body(event.clone())
            .send()
            .await
            .expect("sent")
            .status(),
        send(&secret, post.clone(), "/v1/events")
            .header("content-type", "text/plain")
            .body(event.clone())
            .send()
            .await
            .expect("sent")
            .status(),
        send(&revoked, get.clone(), "/v1/orgs/apo/cases").send().await.expect("sent").status(),
        send(unknown, get.clone(), "/v1/orgs/apo/cases").send().await.expect("sent").status(),
        app.http
            .get(format!("{base}/v1/orgs/apo/cases"))
            .header("authorization", format!("Basic {secret}"))
            .send()
            .await
            .expect("sent")
            .status(),
    ];
    let statuses: Vec<u16> = statuses.iter().map(|s| s.as_u16()).collect();
    assert_eq!(statuses, vec![200, 404, 403, 400, 201, 415, 401, 401, 401]);

    // A graceful stop flushes the traces.
    let pid = serve.id().expect("pid").to_string();
    let stopped = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(stopped.success());
    let status = tokio::time::timeout(Duration::from_secs(60), serve.wait()).await.expect("stops").expect("status");
    assert!(status.success(), "relais serve exits cleanly on SIGTERM: {status}");

    let logs = std::fs::read_to_string(&log_path).expect("logs");
    let traces = exported.lock().expect("lock").clone();
    // The capture is real: requests were logged at trace level, named by their token id, and
    // their spans were exported.
    assert!(logs.contains("/v1/orgs/{org}/cases"), "requests are logged");
    assert!(logs.contains(&token_id.to_string()), "the token id names the caller in the logs");
    assert!(find(&traces, b"http.request"), "request spans were exported ({} bytes)", traces.len());
    let hash = hex_sha256(&secret);
    for (name, secret) in [("valid", secret.as_str()), ("revoked", revoked.as_str()), ("unknown", unknown)] {
        let random_part = &secret["rls_".len()..];
        assert!(!logs.contains(random_part), "the {name} token is in the logs");
        assert!(!find(&traces, random_part.as_bytes()), "the {name} token is in the traces");
    }
    assert!(!logs.contains(&hash), "not even the hash of a token is logged");
    // Nor the personal data of the event posted.
    assert!(!logs.contains("cl-logs") && !find(&traces, b"cl-logs"), "no client reference in logs or traces");
}

fn find(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn hex_sha256(s: &str) -> String {
    sha2::Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn an_organisation_taken_out_of_the_registry_is_retired_and_its_tokens_stop_working() {
    let app = spawn_app().await;
    let wsw = app.token("wsw", relais_projections::Role::Org).await;
    assert_eq!(app.get(&wsw, "/v1/orgs/wsw/cases").await.status(), 200);

    // A serving process starts with a registry without wsw.
    let mut settings = app.settings.clone();
    settings.organisations.retain(|o| o.id.as_str() != "wsw");
    let gateway = relais::startup::Application::build(&settings, relais::startup::ServeRole::Gateway)
        .await
        .expect("a gateway with the new registry");
    let stop = gateway.shutdown_token();
    tokio::spawn(gateway.run_until_stopped());
    assert_eq!(app.get(&wsw, "/v1/orgs/wsw/cases").await.status(), 401, "the retired organisation's token");
    let apo = app.token("apo", relais_projections::Role::Org).await;
    assert_eq!(app.get(&apo, "/v1/orgs/apo/cases").await.status(), 200, "the others' tokens work");
    // No token is created for it, by a command run with any registry.
    let (out, _, stderr) = run(&app, &["token", "create", "--org", "wsw", "--role", "org"]).await;
    assert!(!out.status.success(), "{stderr}");
    // Back in the registry, it is an organisation again (its tokens were never revoked).
    stop.cancel();
    let gateway = relais::startup::Application::build(&app.settings, relais::startup::ServeRole::Gateway)
        .await
        .expect("a gateway with the whole registry");
    let stop = gateway.shutdown_token();
    tokio::spawn(gateway.run_until_stopped());
    assert_eq!(app.get(&wsw, "/v1/orgs/wsw/cases").await.status(), 200);
    stop.cancel();
}

#[tokio::test]
async fn a_token_given_a_lifetime_is_refused_once_it_expires() {
    let app = spawn_app().await;
    let (out, stdout, stderr) =
        run(&app, &["token", "create", "--org", "apo", "--role", "org", "--expires-in-days", "30"]).await;
    assert!(out.status.success(), "{stderr}");
    let secret = stdout.trim().to_owned();
    assert_eq!(app.get(&secret, "/v1/orgs/apo/cases").await.status(), 200);
    let (_, listed, _) = run(&app, &["token", "list"]).await;
    let (created, expires): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT created_at, expires_at FROM api_tokens WHERE expires_at IS NOT NULL")
            .fetch_one(&app.pool)
            .await
            .expect("the token");
    let lifetime = expires - created;
    assert!((lifetime - chrono::Duration::days(30)).num_seconds().abs() < 60, "{lifetime}");
    let shown = expires.format("%Y-%m-%d %H:%M:%S").to_string();
    assert!(listed.lines().any(|l| l.contains("active") && l.contains(&shown)), "{listed}");
    // A lifetime out of range is refused, and nothing is created.
    let before = token_count(&app).await;
    let (out, _, stderr) =
        run(&app, &["token", "create", "--org", "apo", "--role", "org", "--expires-in-days", "0"]).await;
    assert!(!out.status.success() && stderr.contains("--expires-in-days"), "{stderr}");
    assert_eq!(token_count(&app).await, before);
    // The lifetime passes.
    sqlx::query("UPDATE api_tokens SET expires_at = now() - interval '1 second' WHERE expires_at IS NOT NULL")
        .execute(&app.pool)
        .await
        .expect("expired");
    let r = app.get(&secret, "/v1/orgs/apo/cases").await;
    assert_eq!(r.status(), 401);
    let (_, listed, _) = run(&app, &["token", "list"]).await;
    assert!(listed.lines().any(|l| l.contains("expired")), "{listed}");
}

#[tokio::test]
async fn a_listing_read_by_a_reader_that_stops_early_ends_quietly() {
    // `relais token list | head -1`: the reader has gone before the list is printed.
    let app = spawn_app().await;
    for _ in 0..3 {
        create(&app, "apo", "org").await;
    }
    let mut child = relais(&app)
        .args(["token", "list"])
        .env("RUST_LOG", "error")
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("relais runs");
    drop(child.stdout.take());
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("relais ends")
        .expect("waited");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "as a closed pipe ends other tools: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
