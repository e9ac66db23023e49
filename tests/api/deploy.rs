//! The systemd units of `deploy/systemd`, run as systemd would run them: their command lines,
//! their `Environment=` lines and the environment files an operator fills in from the
//! examples beside them (every `<...>` replaced, nothing else), in an otherwise empty
//! environment, against nats-server with the deployed accounts and a new database.

use crate::broker::deployed_nats;
use crate::helpers::*;
use base64::Engine as _;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use uuid::Uuid;

fn systemd_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/systemd")
}

/// A unit's service as systemd would start it.
struct Service {
    program: String,
    args: Vec<String>,
    /// `Environment=` lines.
    environment: Vec<(String, String)>,
    /// `EnvironmentFile=` paths, as installed.
    files: Vec<String>,
}

fn service(unit: &str) -> Service {
    let text = std::fs::read_to_string(systemd_dir().join(unit)).expect("unit readable");
    let mut s = Service { program: String::new(), args: Vec::new(), environment: Vec::new(), files: Vec::new() };
    for line in text.lines() {
        if let Some(command) = line.strip_prefix("ExecStart=") {
            let mut words = command.split_whitespace().map(str::to_owned);
            s.program = words.next().expect("a program");
            s.args = words.collect();
        } else if let Some(pair) = line.strip_prefix("Environment=") {
            let (k, v) = pair.split_once('=').expect("NAME=value");
            s.environment.push((k.to_owned(), v.to_owned()));
        } else if let Some(path) = line.strip_prefix("EnvironmentFile=") {
            s.files.push(path.to_owned());
        }
    }
    s
}

/// The assignments of an environment file (what systemd reads: `NAME=value` lines; comments
/// and blank lines skipped).
fn assignments(path: &Path) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l.split_once('=').unwrap_or_else(|| panic!("{}: not NAME=value: {l}", path.display()));
            (k.to_owned(), v.to_owned())
        })
        .collect()
}

/// What an operator writes for each `<...>` of the examples, in this test's deployment.
struct Deployment {
    db_name: String,
    nats_port: u16,
    passwords: HashMap<String, String>,
    secrets: HashMap<&'static str, String>,
    public_key: String,
}

impl Deployment {
    fn fill(&self, name: &str, placeholder: &str, listen: u16) -> String {
        match name {
            "RELAIS_DATABASE_URL" => db_url(&self.db_name),
            "RELAIS_NATS_URL" => {
                // The user the example names is the one that must work: the gateway's may
                // publish, the projector's may not.
                let user =
                    placeholder.trim_start_matches("<nats://").split(':').next().expect("a user in the example's URL");
                let password = self.passwords.get(user).unwrap_or_else(|| panic!("no NATS user {user}"));
                format!("nats://{user}:{password}@127.0.0.1:{}", self.nats_port)
            }
            "RELAIS_LISTEN" => format!("127.0.0.1:{listen}"),
            "RELAIS_AUDIT_PUBLIC_KEY" => self.public_key.clone(),
            other => {
                self.secrets.get(other).cloned().unwrap_or_else(|| {
                    panic!("the examples ask for {other}, which this test does not know how to fill")
                })
            }
        }
    }

    /// The environment of `unit`'s process: its files' examples filled in, then its own lines.
    fn environment(&self, unit: &Service, listen: u16) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for file in &unit.files {
            let name = Path::new(file).file_name().expect("a file name").to_string_lossy().into_owned();
            for (k, v) in assignments(&systemd_dir().join(format!("{name}.example"))) {
                let v = if v.starts_with('<') && v.ends_with('>') { self.fill(&k, &v, listen) } else { v };
                env.insert(k, v);
            }
        }
        env.extend(unit.environment.iter().cloned());
        env
    }
}

fn command(unit: &Service, env: &BTreeMap<String, String>, cwd: &Path) -> tokio::process::Command {
    assert_eq!(unit.program, "/usr/local/bin/relais", "the units run the installed binary");
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_relais"));
    c.args(&unit.args)
        .env_clear()
        .envs(env)
        .current_dir(cwd)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

/// Runs a process that must refuse to start: its stderr.
async fn refused(mut c: tokio::process::Command, what: &str) -> String {
    let out = tokio::time::timeout(Duration::from_secs(30), c.output())
        .await
        .unwrap_or_else(|_| panic!("{what}: still running after 30 s instead of refusing to start"))
        .expect("runs");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{what}: succeeded: {err}");
    err
}

async fn stop(child: &mut tokio::process::Child, what: &str) {
    let pid = child.id().expect("running");
    let sent = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill runs");
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .unwrap_or_else(|_| panic!("{what} did not stop within 30 s of SIGTERM (TimeoutStopSec)"))
        .expect("waited");
    assert!(status.success(), "{what} stops cleanly on SIGTERM (KillSignal): {status}");
    // What journald receives: plain text, no terminal colours.
    let mut log = String::new();
    if let Some(mut e) = child.stderr.take() {
        use tokio::io::AsyncReadExt as _;
        e.read_to_string(&mut log).await.expect("stderr read");
    }
    assert!(!log.is_empty() && !log.contains('\u{1b}'), "{what}'s log is plain text: {log:?}");
}

#[test]
fn the_units_are_valid_for_systemd() {
    let Ok(probe) = std::process::Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed here: the units' syntax is not checked");
        return;
    };
    assert!(probe.status.success());
    // systemd-analyze checks that ExecStart's program exists: the installed paths, pointed at
    // this build and the pinned nats-server.
    let dir = tempfile::tempdir().expect("dir");
    let nats = relais::nats_server::binary().and_then(|p| Ok(p.canonicalize()?)).expect("the pinned nats-server");
    for unit in ["relais-gateway.service", "relais-projector.service", "nats-server.service"] {
        let text = std::fs::read_to_string(systemd_dir().join(unit)).expect("unit");
        let text = text
            .replace("/usr/local/bin/relais", env!("CARGO_BIN_EXE_relais"))
            .replace("/usr/local/bin/nats-server", &nats.to_string_lossy());
        std::fs::write(dir.path().join(unit), text).expect("copied");
    }
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .args(["relais-gateway.service", "relais-projector.service", "nats-server.service"])
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze runs");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "systemd-analyze verify: {said}");
}

#[tokio::test]
async fn the_units_run_relais_with_the_environment_files_of_the_examples() {
    let dir = tempfile::tempdir().expect("dir");
    let (nats, passwords) = deployed_nats(dir.path());
    let seed: [u8; 32] = rand::random();
    let b64 = |raw: [u8; 32]| base64::engine::general_purpose::STANDARD.encode(raw);
    let deployment = Deployment {
        db_name: format!("relais_test_{}", Uuid::new_v4().simple()),
        nats_port: nats.port(),
        passwords,
        secrets: HashMap::from([
            ("RELAIS_KEK", b64(rand::random())),
            ("RELAIS_CLIENT_REF_PEPPER", b64(rand::random())),
            ("RELAIS_ADMISSION_KEY", b64(rand::random())),
            ("RELAIS_AUDIT_SIGNING_KEY", b64(seed)),
        ]),
        public_key: relais_audit::SigningKey::from_seed(seed).verifying_key().to_base64(),
    };
    let gateway = service("relais-gateway.service");
    let projector = service("relais-projector.service");
    assert_eq!(gateway.args, ["serve", "--role", "gateway"]);
    assert_eq!(projector.args, ["serve", "--role", "projector"]);
    let port = relais::nats_server::free_port().expect("a free port");
    let gateway_env = deployment.environment(&gateway, port);
    let projector_env = deployment.environment(&projector, port);
    assert_eq!(gateway_env.get("RELAIS_REQUIRE_SECRETS").map(String::as_str), Some("1"));
    assert_eq!(gateway_env.get("MIMALLOC_PURGE_DELAY").map(String::as_str), Some("0"));
    let cwd = dir.path().join("cwd");
    std::fs::create_dir_all(&cwd).expect("cwd");

    // A secret left out of the files stops the process, naming it, before it connects or
    // writes anything (no development secret in place of the deployment's).
    for secret in ["RELAIS_KEK", "RELAIS_CLIENT_REF_PEPPER", "RELAIS_ADMISSION_KEY"] {
        let mut env = gateway_env.clone();
        env.remove(secret);
        let err = refused(command(&gateway, &env, &cwd), secret).await;
        assert!(err.contains(&format!("{secret} is not set")), "{secret}: {err}");
    }
    let mut env = projector_env.clone();
    env.remove("RELAIS_AUDIT_SIGNING_KEY");
    let err = refused(command(&projector, &env, &cwd), "RELAIS_AUDIT_SIGNING_KEY").await;
    assert!(err.contains("RELAIS_AUDIT_SIGNING_KEY is not set"), "{err}");
    let mut env = gateway_env.clone();
    env.insert("RELAIS_REQUIRE_SECRETS".into(), "maybe".into());
    let err = refused(command(&gateway, &env, &cwd), "RELAIS_REQUIRE_SECRETS=maybe").await;
    assert!(err.contains("RELAIS_REQUIRE_SECRETS"), "{err}");
    let created: bool = sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
        .bind(&deployment.db_name)
        .fetch_one(&sqlx::PgPool::connect(ADMIN_DB_URL).await.expect("admin"))
        .await
        .expect("asked");
    assert!(!created, "a refused process created no database");

    // The whole deployment: the gateway creates the database, the projector builds the views.
    let mut gateway_process = command(&gateway, &gateway_env, &cwd).spawn().expect("gateway starts");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            break;
        }
        if let Ok(Some(status)) = gateway_process.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = gateway_process.stderr.take() {
                use tokio::io::AsyncReadExt as _;
                let _ = e.read_to_string(&mut err).await;
            }
            panic!("the gateway stopped ({status}): {err}");
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the gateway is not ready after 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut projector_process = command(&projector, &projector_env, &cwd).spawn().expect("projector starts");
    // The operator creates a token with the gateway's environment.
    let mut token_cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_relais"));
    token_cmd
        .args(["token", "create", "--org", "apo", "--role", "org", "--label", "deploy test"])
        .env_clear()
        .envs(&gateway_env)
        .current_dir(&cwd);
    let out = token_cmd.output().await.expect("token create runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8_lossy(&out.stdout).trim().to_owned();

    let case = format!("case-{}", Uuid::new_v4().simple());
    let answer = http
        .post(format!("{base}/v1/events"))
        .bearer_auth(&token)
        .header("content-type", "application/cloudevents+json")
        .body(guidance_requested("apo", &case, "client-deploy").to_string())
        .send()
        .await
        .expect("posted");
    assert!(answer.status().is_success(), "{}", answer.text().await.unwrap_or_default());
    let started = Instant::now();
    loop {
        let r = http.get(format!("{base}/v1/orgs/apo/cases/{case}")).bearer_auth(&token).send().await.expect("asked");
        if r.status().is_success() {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the projector did not show the case within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The audit chain runs in the projector with the signing key of its file: the gateway
    // publishes the matching public key.
    let published: serde_json::Value = http
        .get(format!("{base}/v1/audit/public-key"))
        .bearer_auth(&token)
        .send()
        .await
        .expect("asked")
        .json()
        .await
        .unwrap_or_default();
    assert_eq!(published["public_key"], deployment.public_key.as_str(), "{published}");

    stop(&mut projector_process, "the projector").await;
    stop(&mut gateway_process, "the gateway").await;
    let left: Vec<_> = std::fs::read_dir(&cwd).expect("cwd").collect();
    assert!(left.is_empty(), "nothing written beside the processes (no development secret): {left:?}");
    drop_database(&deployment.db_name).await;
}
