//! `relais demo`: the pinned NATS server (JetStream, `sync_interval: always`) on its own port,
//! a fresh demo database, Relais (gateway and projection workers), and a year of synthetic
//! history loaded through the same HTTP ingest path an NGO uses, with a progress bar.

use crate::config::Settings;
use crate::nats_server::{NatsServer, NatsServerOptions};
use crate::startup::{Application, ServeRole};
use crate::synth::{self, SynthOptions};
use anyhow::{Context as _, bail};
use indicatif::{ProgressBar, ProgressStyle};
use relais_domain::OrgId;
use relais_projections::{Role, TokenStore};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Options of the demo.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// How many clients the synthetic history has (about 25 events each).
    #[arg(long, default_value_t = 1200)]
    pub clients: usize,
    /// Load the history and stop, instead of serving until interrupted.
    #[arg(long)]
    pub exit_after_load: bool,
}

const DEMO_DATABASE: &str = "relais_demo";

/// How long the projections may make no progress before the demo gives up on them.
const CATCH_UP_STALL: Duration = Duration::from_secs(120);

/// Runs the demo.
pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    let mut settings = Settings::from_env()?;
    if std::env::var_os("RELAIS_DATABASE_URL").is_some() {
        refuse_used_database(&settings.database_url).await?;
    }
    let state_dir = PathBuf::from(std::env::var("RELAIS_STATE_DIR").unwrap_or_else(|_| ".relais".into())).join("demo");
    let nats_dir = state_dir.join("nats");
    if nats_dir.exists() {
        std::fs::remove_dir_all(&nats_dir).with_context(|| format!("cannot clear {}", nats_dir.display()))?;
    }
    let port = match std::env::var("RELAIS_DEMO_NATS_PORT") {
        Ok(p) => Some(p.parse().context("RELAIS_DEMO_NATS_PORT must be a port number")?),
        Err(_) => None,
    };
    eprintln!("starting nats-server {} (JetStream, sync_interval: always)", crate::nats_server::PINNED_VERSION);
    let nats = NatsServer::start(&NatsServerOptions {
        store_dir: nats_dir,
        sync_always: true,
        extra_config: String::new(),
        port,
    })?;
    settings.nats_url = nats.url();
    if std::env::var_os("RELAIS_DATABASE_URL").is_none() {
        settings.database_url = format!("postgres://postgres@127.0.0.1:5432/{DEMO_DATABASE}");
        recreate_database(DEMO_DATABASE).await?;
    }
    eprintln!("starting relais (gateway and projection workers)");
    let app = Application::build(&settings, ServeRole::All).await?;
    let port = app.port().context("the gateway did not bind")?;
    let base = format!("http://127.0.0.1:{port}");
    let pool = app.infra().db.pool().clone();
    let stream = app.infra().stream.clone();
    let stop = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());

    let tokens = TokenStore::new(pool.clone());
    let mut org_tokens = std::collections::HashMap::new();
    for org in settings.organisations.iter() {
        let (_, t) = tokens.create(&org.id, Role::Org, "demo").await?;
        org_tokens.insert(org.id.to_string(), t);
    }
    let coordination = OrgId::parse("coordination").map_err(|e| anyhow::anyhow!("{e}"))?;
    let (_, auditor) = tokens.create(&coordination, Role::Auditor, "demo auditor").await?;
    let (_, coordinator) = tokens.create(&coordination, Role::Coordinator, "demo coordinator").await?;

    let history = synth::generate(&SynthOptions { clients: args.clients, ..Default::default() });
    let rounds = synth::daily_batches(&history, 500);
    let bar = ProgressBar::new(history.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} loading history [{elapsed_precise}] {wide_bar} {pos}/{len} events ({rate})",
        )
        .map(|s| s.with_key("rate", crate::audit_cli::whole_rate))
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let http = reqwest::Client::new();
    let started = Instant::now();
    for round in rounds {
        let posts = round.into_iter().map(|(org, batch)| {
            let http = http.clone();
            let url = format!("{base}/v1/events");
            let token = org_tokens.get(org).cloned().unwrap_or_default();
            async move {
                let n = batch.len() as u64;
                let response = http
                    .post(url)
                    .bearer_auth(token)
                    .header("content-type", "application/cloudevents-batch+json")
                    .json(&batch)
                    .send()
                    .await?;
                if !response.status().is_success() {
                    bail!("{org}: {} {}", response.status(), response.text().await.unwrap_or_default());
                }
                Ok(n)
            }
        });
        for n in futures::future::try_join_all(posts).await? {
            bar.inc(n);
        }
    }
    // Cleared: the summary line says the same, on a line of its own.
    bar.finish_and_clear();
    let load_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} events published in {load_secs:.1} s ({:.0} events/s)",
        history.len(),
        history.len() as f64 / load_secs
    );

    let spinner = ProgressBar::new_spinner();
    spinner.set_message("projections catching up");
    spinner.enable_steady_tick(Duration::from_millis(100));
    // A projector that stopped, or stopped moving, ends the demo with the reason instead of a
    // spinner that never stops (hidden where stderr is not a terminal).
    let (mut least_lag, mut moved_at) = (u64::MAX, Instant::now());
    loop {
        if running.is_finished() {
            spinner.finish_and_clear();
            running.await.context("relais stopped")??;
            bail!("relais stopped before its projections caught up");
        }
        let status = relais_projections::status::projection_status(&pool, &stream).await?;
        let lag: u64 = status.projections.iter().map(|p| p.lag).max().unwrap_or(0);
        spinner.set_message(format!("projections catching up: lag {lag}"));
        if lag < least_lag {
            (least_lag, moved_at) = (lag, Instant::now());
        } else if moved_at.elapsed() > CATCH_UP_STALL {
            spinner.finish_and_clear();
            stop.cancel();
            bail!(
                "the projections made no progress for {} s (lag {lag}); see `relais status` and the log (RUST_LOG=info)",
                CATCH_UP_STALL.as_secs()
            );
        }
        if lag == 0 {
            spinner.finish_and_clear();
            eprintln!(
                "projections up to date at sequence {}; {} quarantined",
                status.last_sequence, status.quarantined
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let apo = org_tokens.get("apo").cloned().unwrap_or_default();
    println!();
    println!("Relais is running with a year of synthetic history.");
    println!("  API:        {base}   (OpenAPI: {base}/openapi.json, catalogue: {base}/v1/catalogue)");
    println!("  NATS:       {}   (JetStream stream RELAIS)", nats.url());
    println!("  PostgreSQL: {}", redact(&settings.database_url));
    println!();
    println!("A token of APO (role org):");
    println!("  {apo}");
    println!("An auditor token:");
    println!("  {auditor}");
    println!("A coordinator token (continuity monitor, statistics):");
    println!("  {coordinator}");
    println!();
    println!("Try:");
    println!("  curl -s -H 'Authorization: Bearer {apo}' '{base}/v1/orgs/apo/cases?limit=5'");
    println!("  curl -s -H 'Authorization: Bearer {apo}' '{base}/v1/orgs/apo/worklist?limit=5'");
    println!("  curl -s -H 'Authorization: Bearer {apo}' '{base}/v1/orgs/apo/referrals?direction=in'");
    println!("  curl -s -H 'Authorization: Bearer {coordinator}' '{base}/v1/monitor/alerts?limit=5'");
    println!(
        "  curl -s -H 'Authorization: Bearer {coordinator}' '{base}/v1/statistics?from=2026-01-01&format=csv' | head"
    );
    println!("  curl -s '{base}/v1/catalogue' | head -c 600");
    println!();
    if args.exit_after_load {
        stop.cancel();
        let _ = running.await;
        return Ok(());
    }
    println!("Press Ctrl-C to stop.");
    running.await.context("relais stopped")??;
    drop(nats);
    Ok(())
}

fn redact(url: &str) -> String {
    // The last `@` ends the credentials (a password may hold one).
    match url.rsplit_once('@') {
        Some((_, host)) => format!("postgres://…@{host}"),
        None => url.to_owned(),
    }
}

/// The demo starts a new log; a database named by `RELAIS_DATABASE_URL` that already holds
/// Relais' views or ledger would be ahead of it (its views would skip the demo's events) and
/// would receive synthetic data. Only an empty one is used.
async fn refuse_used_database(url: &str) -> anyhow::Result<()> {
    let pool = match sqlx::PgPool::connect(url).await {
        Ok(pool) => pool,
        // A database that does not exist yet is empty: Relais creates it.
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("3D000") => return Ok(()),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot reach the database of RELAIS_DATABASE_URL ({})", redact(url)));
        }
    };
    let used: bool = sqlx::query_scalar(
        "SELECT to_regclass('projection_checkpoints') IS NOT NULL OR to_regclass('event_ledger') IS NOT NULL",
    )
    .fetch_one(&pool)
    .await?;
    pool.close().await;
    if used {
        anyhow::bail!(
            "RELAIS_DATABASE_URL ({}) names a database that already holds Relais data; the demo loads synthetic \
             history into a new log and needs an empty database: name an empty one, or unset RELAIS_DATABASE_URL \
             (the demo then recreates its own {DEMO_DATABASE} database)",
            redact(url)
        );
    }
    Ok(())
}

async fn recreate_database(name: &str) -> anyhow::Result<()> {
    let admin = sqlx::PgPool::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .context("cannot reach PostgreSQL on 127.0.0.1:5432 as postgres")?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&admin).await?;
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&admin).await?;
    Ok(())
}
