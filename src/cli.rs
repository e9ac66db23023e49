//! The command line: `relais serve | token | deploy | demo | status | rebuild | erase | keys | retention |
//! replay | verify | checkpoint | audit | case`.

use crate::config::Settings;
use crate::startup::{Application, Infra, ServeRole};
use anyhow::Context as _;
use clap::{Parser, Subcommand};
use relais_domain::OrgId;
use relais_projections::{Role, TokenStore};
use std::process::ExitCode;

/// What every command reads from its environment (README.md, "Running Relais", has them all).
const ENVIRONMENT: &str = "\
Environment (read once at start; README.md lists every variable):
  RELAIS_DATABASE_URL     PostgreSQL (default postgres://postgres@127.0.0.1:5432/relais)
  RELAIS_NATS_URL         nats-server >= 2.12.1 (default nats://127.0.0.1:4222)
  RELAIS_KEK, RELAIS_CLIENT_REF_PEPPER, RELAIS_ADMISSION_KEY, RELAIS_AUDIT_SIGNING_KEY
                          secrets, base64 of 32 bytes; unset: a development secret in
                          RELAIS_STATE_DIR (.relais), refused where RELAIS_REQUIRE_SECRETS=1
  RELAIS_ORGANISATIONS    the registry (a JSON file; default the seven services)
  RUST_LOG                log filter (info for serve, warn for commands)";

/// Relais: event-sourced coordination backend of the Brussels justice-welfare services.
#[derive(Debug, Parser)]
#[command(name = "relais", version, about, after_help = ENVIRONMENT)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the HTTP gateway and the projection workers (or one of them).
    Serve {
        /// Which part to run in this process.
        #[arg(long, value_enum, default_value = "all")]
        role: ServeRole,
    },
    /// Manages API tokens.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Writes deployment files.
    Deploy {
        #[command(subcommand)]
        command: DeployCommand,
    },
    /// Starts NATS (the pinned server), Relais and loads a year of synthetic history.
    Demo(crate::demo::DemoArgs),
    /// Shows each projection's checkpoint, lag and quarantined count.
    Status,
    /// Rebuilds a projection (or all) from the start of the stream into fresh tables while the
    /// live ones keep serving, then swaps them in atomically. Needs the projector running (its
    /// validator judges the events). See docs/OPERATIONS.md.
    Rebuild {
        /// The projection: caseload, timeline, referrals, activities, monitor, statistics, or the
        /// client index client_events.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        projection: Option<String>,
        /// Every projection, from one reading of the log (each batch applied to every view).
        #[arg(long)]
        all: bool,
    },
    /// Erases a client: destroys the client's data key and records the erasure in the log.
    Erase(crate::privacy_cli::EraseArgs),
    /// Manages the key store: KEK rotation, backup and restore.
    Keys {
        #[command(subcommand)]
        command: crate::privacy_cli::KeysCommand,
    },
    /// Retention of closed cases: erases clients past their organisation's period.
    Retention {
        #[command(subcommand)]
        command: crate::privacy_cli::RetentionCommand,
    },
    /// Replays the log (NDJSON, verifiable offline, or CSV) to stdout or a file.
    Replay(crate::audit_cli::ReplayArgs),
    /// Verifies the log against the audit chain and its signed checkpoints, or a replay file
    /// offline (--file, --public-key).
    Verify(crate::audit_cli::VerifyArgs),
    /// Signs a checkpoint of the audit chain now.
    Checkpoint(crate::audit_cli::CheckpointArgs),
    /// Audit keys.
    Audit {
        #[command(subcommand)]
        command: crate::audit_cli::AuditCommand,
    },
    /// Cases as they stood at a moment.
    Case {
        #[command(subcommand)]
        command: crate::audit_cli::CaseCommand,
    },
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Creates a token and prints it, and nothing else, on stdout. It is shown only once.
    Create {
        /// The organisation id.
        #[arg(long, value_parser = parse_org)]
        org: OrgId,
        /// org, coordinator, auditor or admin.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A label to recognise the token by.
        #[arg(long, default_value = "")]
        label: String,
        /// The token stops working after this many days (by default it works until revoked).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3660))]
        expires_in_days: Option<u32>,
    },
    /// Lists tokens (never their secrets).
    List,
    /// Revokes a token by id; it is refused at once.
    Revoke {
        /// The token id (from `token list`).
        id: uuid::Uuid,
    },
}

#[derive(Debug, Subcommand)]
enum DeployCommand {
    /// Writes the NATS accounts (one per organisation of the registry, confined to its own
    /// subjects) to an accounts file that nats.conf includes: docs/DEPLOYMENT.md.
    NatsConfig {
        /// Where to write the accounts.
        #[arg(long, default_value = "deploy/nats/accounts.conf")]
        out: std::path::PathBuf,
        /// Also write fresh passwords to this new file (mode 0600, never overwritten), one
        /// `VARIABLE=password` line per user.
        #[arg(long)]
        passwords: Option<std::path::PathBuf>,
        /// The stream's name.
        #[arg(long, env = "RELAIS_STREAM", default_value = "RELAIS")]
        stream: String,
    },
}

/// `--org`, read before anything connects.
fn parse_org(text: &str) -> Result<OrgId, String> {
    OrgId::parse(text).map_err(|e| e.to_string())
}

/// `--role`, read before anything connects.
fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| "one of org, coordinator, auditor, admin".into())
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    quiet_on_a_closed_pipe();
    let cli = Cli::parse();
    // The projector alone waits on PostgreSQL and NATS far more than it computes: one thread
    // serves it, and one allocator arena keeps its memory flat (each thread that allocates
    // gets an arena of its own, and fragmentation grows with their number).
    let runtime = match cli.command {
        Command::Serve { role: ServeRole::Projector } => {
            tokio::runtime::Builder::new_current_thread().enable_all().build()
        }
        _ => tokio::runtime::Runtime::new(),
    };
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let default_filter = match cli.command {
        Command::Serve { .. } => "info,sqlx=warn",
        _ => "warn",
    };
    let _telemetry = runtime.block_on(async { crate::telemetry::init("relais", default_filter) });
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// `relais status | head -1`: a reader that stops early closes stdout, and Rust's printing
/// panics on the closed pipe. Ends the command as a closed pipe ends other tools (status 141,
/// 128 + SIGPIPE), without a panic's message and backtrace; any other panic is reported as
/// before.
fn quiet_on_a_closed_pipe() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(141);
        }
        report(info);
    }));
}

/// An error and its causes on one line, each cause once: many errors repeat their source in
/// their own message, which `{:#}` would print again.
fn error_chain(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { role } => {
            let settings = Settings::from_env()?;
            let app = Application::build(&settings, role).await?;
            if let Some(port) = app.port() {
                tracing::info!(port, "gateway listening");
            }
            app.run_until_stopped().await
        }
        Command::Token { command } => {
            let settings = Settings::from_env()?;
            // Creating a token may be the first act on a new deployment's database; listing and
            // revoking create nothing (a mistyped URL is an error, not a new empty database).
            let db = match command {
                TokenCommand::Create { .. } => Infra::database(&settings).await?,
                TokenCommand::List | TokenCommand::Revoke { .. } => Infra::existing_database(&settings).await?,
            };
            let tokens = TokenStore::new(db.pool().clone());
            match command {
                TokenCommand::Create { org, role, label, expires_in_days } => {
                    // Who may read what changes: recorded before, like any access (never the
                    // secret), so no token exists unrecorded.
                    tokens.check_organisation(&org).await?;
                    let expires_at = expires_in_days.map(|d| chrono::Utc::now() + chrono::Duration::days(i64::from(d)));
                    let id = uuid::Uuid::new_v4();
                    relais_projections::access::record_operator(
                        db.pool(),
                        "token.create",
                        &format!("tokens/{id}"),
                        crate::audit_cli::operator_detail(serde_json::json!({
                            "org": org.as_str(), "role": role.as_str(), "label": label, "expires_at": expires_at })),
                    )
                    .await?;
                    let (id, secret) = tokens.create_as(id, &org, role, &label, expires_at).await?;
                    // The secret alone on stdout, for scripts; the id (to revoke it) on stderr.
                    println!("{secret}");
                    eprintln!("created token {id} ({} for {org}); the secret above is shown only once", role.as_str());
                }
                TokenCommand::List => {
                    println!(
                        "{:<36}  {:<12}  {:<11}  {:<20}  {:<8}  {:<20}  label",
                        "id", "org", "role", "created (UTC)", "state", "expires (UTC)"
                    );
                    let now = chrono::Utc::now();
                    for t in tokens.list().await? {
                        let state = match (t.revoked_at, t.expires_at) {
                            (Some(_), _) => "revoked",
                            (None, Some(at)) if at <= now => "expired",
                            _ => "active",
                        };
                        let expires = t.expires_at.map(|at| at.format("%Y-%m-%d %H:%M:%S").to_string());
                        println!(
                            "{:<36}  {:<12}  {:<11}  {:<20}  {:<8}  {:<20}  {}",
                            t.id,
                            t.org,
                            t.role,
                            t.created_at.format("%Y-%m-%d %H:%M:%S"),
                            state,
                            expires.as_deref().unwrap_or("never"),
                            t.label
                        );
                    }
                }
                TokenCommand::Revoke { id } => {
                    if tokens.revoke(id).await? {
                        relais_projections::access::record_operator(
                            db.pool(),
                            "token.revoke",
                            &format!("tokens/{id}"),
                            crate::audit_cli::operator_detail(serde_json::json!({})),
                        )
                        .await?;
                        println!("revoked {id}");
                    } else {
                        anyhow::bail!("no active token {id}");
                    }
                }
            }
            Ok(())
        }
        Command::Deploy { command: DeployCommand::NatsConfig { out, passwords, stream } } => {
            let orgs: Vec<OrgId> = crate::config::organisations_from_env()?.into_iter().map(|o| o.id).collect();
            crate::deploy::write_nats_config(&stream, &orgs, &out, passwords.as_deref())?;
            eprintln!("wrote {} for {} organisations", out.display(), orgs.len());
            if let Some(p) = passwords {
                eprintln!("wrote fresh passwords to {} (keep it secret)", p.display());
            }
            Ok(())
        }
        Command::Demo(args) => crate::demo::run(args).await,
        Command::Status => {
            let settings = Settings::from_env()?;
            let infra = Infra::connect_reading(&settings, "relais-status", &[]).await?;
            let status = relais_projections::status::projection_status(infra.db.pool(), &infra.stream).await?;
            println!("stream last sequence: {}", status.last_sequence);
            let width = status.projections.iter().map(|p| p.name.len()).chain(["projection".len()]).max().unwrap_or(10);
            println!("{:<width$}  {:>12}  {:>10}", "projection", "checkpoint", "lag");
            for p in &status.projections {
                println!("{:<width$}  {:>12}  {:>10}", p.name, p.checkpoint, p.lag);
            }
            println!("quarantined events: {}", status.quarantined);
            crate::privacy_cli::print_retention_status(&settings, &infra).await?;
            Ok(())
        }
        Command::Rebuild { projection, all } => rebuild(projection, all).await,
        Command::Erase(args) => crate::privacy_cli::erase(args).await,
        Command::Keys { command } => crate::privacy_cli::keys(command).await,
        Command::Retention { command } => crate::privacy_cli::retention(command).await,
        Command::Replay(args) => crate::audit_cli::replay(args).await,
        Command::Verify(args) => crate::audit_cli::verify(args).await,
        Command::Checkpoint(args) => crate::audit_cli::checkpoint(args).await,
        Command::Audit { command } => crate::audit_cli::audit(command).await,
        Command::Case { command } => crate::audit_cli::case(command).await,
    }
}

async fn rebuild(projection: Option<String>, all: bool) -> anyhow::Result<()> {
    use indicatif::{ProgressBar, ProgressStyle};
    use relais_projections::rebuild::{RebuildError, RebuildProgress};
    let settings = Settings::from_env()?;
    let projector = settings.projector_settings();
    let views = match (projection, all) {
        (_, true) => relais_projections::worker::views(&projector),
        (Some(name), false) => vec![
            relais_projections::worker::view_named(&projector, &name)
                .ok_or(RebuildError::UnknownProjection(name))
                .with_context(|| {
                    let names: Vec<&str> =
                        relais_projections::worker::default_views().iter().map(|v| v.name()).collect();
                    format!("projections: {}", names.join(", "))
                })?,
        ],
        (None, false) => anyhow::bail!("name a projection or give --all"),
    };
    let infra = Infra::connect(&settings, "relais-rebuild").await?;
    let names: Vec<&str> = views.iter().map(|v| v.name()).collect();
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} ({rate}, eta {eta}) {msg}")
            .map(|s| s.with_key("rate", crate::audit_cli::whole_rate))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(if names.len() == 1 { names[0].to_owned() } else { format!("{} views", names.len()) });
    // The clock moves while the rebuild waits (for the validator, for PostgreSQL).
    bar.enable_steady_tick(std::time::Duration::from_secs(1));
    let progress = {
        let bar = bar.clone();
        move |p: RebuildProgress| {
            bar.set_length(p.target);
            bar.set_position(p.at);
            match p.waiting_for_validator {
                Some(validated) => bar.set_message(format!(
                    "{} events; waiting for the validator, at sequence {validated} (the projector judges)",
                    p.events
                )),
                None => bar.set_message(format!("{} events", p.events)),
            }
        }
    };
    // One read of the log for every view named.
    let reports =
        relais_projections::rebuild::rebuild_many(&infra.db, &infra.keys, &infra.stream, &projector, views, &progress)
            .await
            .with_context(|| format!("rebuilding {}", names.join(", ")));
    // Cleared, so that neither the summary below nor an error starts on the bar's line.
    bar.finish_and_clear();
    let reports = reports?;
    for report in reports {
        println!(
            "{}: {} events in {:.1} s ({:.0} events/s); swapped in at sequence {}",
            report.projection,
            report.events,
            report.elapsed.as_secs_f64(),
            report.events_per_second(),
            report.checkpoint
        );
    }
    Ok(())
}
