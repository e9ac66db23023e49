//! Auditors: replays, signed checkpoints, tamper evidence on a real stream, offline
//! verification, bounded memory, and cases as they stood at a moment.

use crate::helpers::*;
use relais_projections::Role;
use serde_json::{Value, json};
use std::process::Output;

fn run(mut c: std::process::Command) -> Output {
    c.output().expect("the relais binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Publishes a few cases through the gateway, with personal fields; returns the org token.
async fn some_history(app: &TestApp) -> String {
    let token = app.token("apo", Role::Org).await;
    let batch = vec![
        guidance_requested("apo", "case-a", "cl-a"),
        intervention("apo", "case-a", "cl-a", "informing"),
        guidance_requested("apo", "case-b", "cl-b"),
    ];
    assert_eq!(app.post_batch(&token, &batch).await.status(), 201);
    assert_eq!(app.post_event(&token, &intervention("apo", "case-b", "cl-b", "planning")).await.status(), 201);
    let dsr = app.token("dsr", Role::Org).await;
    assert_eq!(app.post_event(&dsr, &guidance_requested("dsr", "case-c", "cl-c")).await.status(), 201);
    assert_eq!(app.post_event(&token, &intervention("apo", "case-a", "cl-a", "planning")).await.status(), 201);
    token
}

async fn chained(app: &TestApp) {
    let last = app.stream_last_sequence().await;
    wait_for_checkpoint(&app.pool, "chain", last).await;
}

fn checkpoint_now(app: &TestApp) -> String {
    let o = run({
        let mut c = app.relais();
        c.arg("checkpoint");
        c
    });
    assert!(o.status.success(), "relais checkpoint: {}", String::from_utf8_lossy(&o.stderr));
    stdout(&o)
}

fn verify_online(app: &TestApp, nats_url: Option<&str>) -> Output {
    let mut c = app.relais();
    c.arg("verify");
    if let Some(url) = nats_url {
        c.env("RELAIS_NATS_URL", url);
    }
    run(c)
}

async fn replay_lines(app: &TestApp, token: &str, query: &str) -> (String, Vec<Value>) {
    let r = app.get(token, &format!("/v1/audit/events{query}")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.expect("body");
    let lines = text.lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
    (text, lines)
}

fn public_key(app: &TestApp) -> String {
    let o = run({
        let mut c = app.relais();
        c.args(["audit", "public-key"]);
        c
    });
    assert!(o.status.success());
    stdout(&o).trim().to_owned()
}

fn verify_file(app: &TestApp, path: &std::path::Path, key: &str) -> Output {
    // Offline: no NATS, no database in the environment at all.
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_relais"));
    c.args(["verify", "--file"]).arg(path).args(["--public-key", key]).env_clear().env("RUST_LOG", "error");
    let _ = app;
    run(c)
}

#[tokio::test]
async fn a_replay_streams_decoded_events_with_their_chain_and_checkpoints_and_verifies_offline() {
    let app = spawn_app().await;
    let org = some_history(&app).await;
    chained(&app).await;
    let signed = checkpoint_now(&app);
    assert!(signed.starts_with("signed checkpoint at sequence 6, head "), "{signed}");

    // Only auditors replay.
    let r = app.get(&org, "/v1/audit/events").await;
    assert_eq!(r.status(), 403);
    let auditor = app.token("apo", Role::Auditor).await;
    let (text, lines) = replay_lines(&app, &auditor, "").await;
    assert_eq!(lines[0]["relaiskind"], "replay");
    assert_eq!(lines[0]["complete"], true);
    let events: Vec<&Value> = lines.iter().filter(|l| l["relaiskind"] == "event").collect();
    assert_eq!(events.len(), 6);
    assert_eq!(events.iter().map(|e| e["sequence"].as_u64().expect("seq")).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5, 6]);
    assert_eq!(events[0]["type"], "relais.guidance.requested");
    assert_eq!(events[0]["data"]["client_ref"], "cl-a", "personal fields opened for the auditor");
    assert!(events[0]["recordedat"].is_string());
    assert_eq!(events[0]["relaissubject"], "relais.ev.apo.cases.case-a");
    assert!(events[0]["relaisadmission"].as_str().expect("admission").starts_with("gateway:"));
    assert_eq!(events[0]["relaisprev"], "0".repeat(64));
    for w in events.windows(2) {
        assert_eq!(w[1]["relaisprev"], w[0]["relaislink"]);
    }
    let checkpoint = lines.iter().position(|l| l["relaiskind"] == "checkpoint").expect("a checkpoint line");
    assert_eq!(lines[checkpoint]["sequence"], 6);
    assert_eq!(lines[checkpoint]["head"], events[5]["relaislink"]);
    assert_eq!(lines.last().expect("end")["relaiskind"], "end");
    assert_eq!(lines.last().expect("end")["events"], 6);

    // Filters: one organisation, one type, a sequence range.
    let (_, dsr) = replay_lines(&app, &auditor, "?org=dsr").await;
    let dsr_events: Vec<&Value> = dsr.iter().filter(|l| l["relaiskind"] == "event").collect();
    assert_eq!(dsr_events.len(), 1);
    assert_eq!(dsr_events[0]["source"], "/orgs/dsr");
    assert_eq!(dsr[0]["complete"], false);
    let (_, typed) = replay_lines(&app, &auditor, "?type=relais.intervention.recorded&from_seq=3").await;
    let seqs: Vec<u64> =
        typed.iter().filter(|l| l["relaiskind"] == "event").map(|l| l["sequence"].as_u64().expect("seq")).collect();
    assert_eq!(seqs, vec![4, 6]);
    let r = app.get(&auditor, "/v1/audit/events?from=yesterday").await;
    assert_eq!(r.status(), 400);
    let problem: Value = r.json().await.expect("json");
    assert_eq!(problem["pointer"], "?from");

    // Every replay is an access record, which auditors can list.
    let records: Value = app.get(&auditor, "/v1/audit/access?resource=audit/events").await.json().await.expect("json");
    let replays: Vec<&Value> =
        records["items"].as_array().expect("items").iter().filter(|r| r["action"] == "audit.replay").collect();
    assert_eq!(replays.len(), 3);
    assert_eq!(replays[1]["detail"]["org"], "dsr");
    assert_eq!(replays[0]["role"], "auditor");

    // Offline: the exported file verifies with the public key, and fails after one edit.
    let key = public_key(&app);
    let published: Value = app.http.get(format!("{}/v1/audit/public-key", app.address)).send().await.expect("sent").json().await.expect("json");
    assert_eq!(published["public_key"], key.as_str());
    assert_eq!(published["algorithm"], "ed25519");
    let file = app.dir().join("replay.ndjson");
    std::fs::write(&file, &text).expect("written");
    let o = verify_file(&app, &file, &key);
    assert!(o.status.success(), "{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    let last_link = events[5]["relaislink"].as_str().expect("link");
    assert_eq!(
        stdout(&o).lines().next().expect("a line"),
        format!("verified 6 events, head {last_link} at sequence 6, last signed checkpoint at sequence 6")
    );
    let edited = text.replacen("\"mode\":\"informing\"", "\"mode\":\"planning\"", 1);
    assert_ne!(edited, text);
    std::fs::write(&file, &edited).expect("written");
    let o = verify_file(&app, &file, &key);
    assert!(!o.status.success());
    assert!(stdout(&o).contains("altered at sequence 2: data.mode differs from the stored bytes"), "{}", stdout(&o));
    // Another key does not verify the checkpoint.
    std::fs::write(&file, &text).expect("written");
    let other = relais_audit::SigningKey::from_seed([1; 32]).verifying_key().to_base64();
    let o = verify_file(&app, &file, &other);
    assert!(!o.status.success());
    assert!(stdout(&o).contains("checkpoint at sequence 6"), "{}", stdout(&o));

    // Online, the untouched log verifies.
    let o = verify_online(&app, None);
    assert!(o.status.success(), "{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).starts_with(&format!("verified 6 events, head {last_link} at sequence 6, last signed checkpoint at sequence 6")));
}
