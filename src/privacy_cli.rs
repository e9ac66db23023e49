//! The privacy commands: `relais erase`, `relais keys rotate|backup|restore`,
//! `relais retention sweep`, and the retention lines of `relais status`.

use crate::audit_cli::operator_detail;
use crate::config::Settings;
use crate::startup::Infra;
use anyhow::Context as _;
use chrono::Utc;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use relais_domain::OrgId;
use relais_domain::events::ErasureReason;
use relais_projections::erasure::{self, Eraser};
use relais_projections::key_backup::KeyBackup;
use relais_projections::{access, retention, subject_access};
use std::path::PathBuf;

/// Arguments of `relais erase`.
#[derive(Debug, Args)]
pub struct EraseArgs {
    /// The organisation id.
    #[arg(long)]
    org: String,
    /// The organisation's reference of the client.
    #[arg(long)]
    client: String,
    /// client_request or retention_expired.
    #[arg(long, default_value = "client_request")]
    reason: String,
}

/// `relais keys ...`.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Re-wraps every client data key under the current KEK (RELAIS_KEK), reading the older ones
    /// with RELAIS_KEK_PREVIOUS. The log is not touched.
    Rotate {
        /// Keys per transaction.
        #[arg(long, default_value_t = 1000)]
        batch: i64,
    },
    /// Writes the key store (wrapped keys, KEK ids, tombstones) to a new file, mode 0600.
    Backup {
        /// The file to create; it must not exist.
        #[arg(long)]
        output: PathBuf,
    },
    /// Restores a backup into an empty or partly empty key store. Idempotent; erasures the log
    /// records are applied again, so no erased client comes back.
    Restore {
        /// The backup file.
        #[arg(long)]
        input: PathBuf,
    },
}

/// `relais retention ...`.
#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Erases every client past the retention period of their organisation (RELAIS_RETENTION).
    Sweep {
        /// Only list the clients that are due, by key id.
        #[arg(long)]
        dry_run: bool,
    },
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!("{{spinner}} {what} [{{elapsed_precise}}] {{wide_bar}} {{pos}}/{{len}}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// A spinner for a wait of unknown length (hidden where stderr is not a terminal).
pub(crate) fn spinner(what: &str) -> ProgressBar {
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{elapsed_precise}]")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.set_message(what.to_owned());
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    spinner
}

fn parse_reason(text: &str) -> anyhow::Result<ErasureReason> {
    serde_json::from_value(serde_json::Value::String(text.to_owned()))
        .with_context(|| format!("--reason must be client_request or retention_expired, not {text:?}"))
}

/// `relais erase --org <org> --client <ref>`.
pub async fn erase(args: EraseArgs) -> anyhow::Result<()> {
    let org = OrgId::parse(&args.org).map_err(|e| anyhow::anyhow!("--org: {e}"))?;
    relais_domain::events::check_client_ref("client", &args.client)
        .map_err(|e| anyhow::anyhow!("--client: {}", e.detail))?;
    let reason = parse_reason(&args.reason)?;
    let settings = Settings::from_env()?;
    if !settings.organisations.iter().any(|o| o.id == org) {
        anyhow::bail!("--org: no organisation {org} in the registry (RELAIS_ORGANISATIONS)");
    }
    let infra = Infra::connect_needing(&settings, "relais-erase", &crate::config::SHARED_SECRETS).await?;
    let eraser = Eraser::new(infra.keys.clone(), infra.event_log(&settings), infra.db.pool().clone());
    let Some(info) = infra.keys.client_info(&org, &args.client).await? else {
        anyhow::bail!("{org} has no such client");
    };
    // Recorded before the key is destroyed, as over HTTP.
    access::record_operator(
        infra.db.pool(),
        "client.erase",
        &subject_access::client_resource(&org, info.key_id),
        operator_detail(serde_json::json!({ "reason": reason })),
    )
    .await?;
    match eraser.erase_key(&org, info.key_id, reason, "relais-cli").await {
        Ok(e) => {
            let how = if e.newly_erased { "erased" } else { "already erased" };
            println!(
                "{how}: key {} destroyed at {}, erasure event {} at sequence {}",
                e.key_id, e.erased_at, e.event_id, e.sequence
            );
            Ok(())
        }
        Err(erasure::ErasureError::UnknownClient) => anyhow::bail!("{org} has no such client"),
        Err(e) => Err(e.into()),
    }
}

/// `relais keys ...`.
pub async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    match command {
        KeysCommand::Rotate { batch } => {
            settings.require_from_environment(crate::config::KEK, "re-wrapping every data key")?;
            // Never a new database: a rotation of none would report that no key depends on
            // the previous KEK any more.
            let db = Infra::existing_database(&settings).await?;
            let keys = relais_projections::KeyStore::new(db.pool().clone(), settings.kek.clone());
            let total = keys.count_to_rotate().await?;
            let progress = bar(total, "re-wrapping data keys");
            let report = keys.rotate(batch, |n| progress.set_position(n)).await?;
            progress.finish_and_clear();
            println!("{} data keys now wrapped by KEK {}", report.rewrapped, keys.kek().id());
            if !report.failed.is_empty() {
                for (key_id, why) in &report.failed {
                    eprintln!("not re-wrapped: {key_id}: {why}");
                }
                anyhow::bail!(
                    "{} data keys could not be re-wrapped; keep their KEK in RELAIS_KEK_PREVIOUS",
                    report.failed.len()
                );
            }
            println!("no key depends on a previous KEK any more: RELAIS_KEK_PREVIOUS may be emptied");
            Ok(())
        }
        KeysCommand::Backup { output } => {
            // Never a new database: a backup of none would look like a backup.
            let db = Infra::existing_database(&settings).await?;
            access::record_operator(
                db.pool(),
                "keys.backup",
                "keys",
                operator_detail(serde_json::json!({ "output": output.display().to_string() })),
            )
            .await?;
            let keys = relais_projections::KeyStore::new(db.pool().clone(), settings.kek.clone());
            let progress = ProgressBar::new_spinner();
            let backup = keys.backup(5000, |n| progress.set_message(format!("{n} keys read"))).await?;
            progress.finish_and_clear();
            let text = serde_json::to_vec_pretty(&backup)?;
            write_private(&output, &text).with_context(|| format!("cannot write {}", output.display()))?;
            println!("{} keys (KEK {}) written to {}", backup.keys.len(), backup.current_kek, output.display());
            Ok(())
        }
        KeysCommand::Restore { input } => {
            let text = std::fs::read(&input).with_context(|| format!("cannot read {}", input.display()))?;
            let backup: KeyBackup = serde_json::from_slice(&text)
                .with_context(|| format!("{} is not a key store backup", input.display()))?;
            let infra =
                Infra::connect_creating(&settings, "relais-keys-restore", &[crate::config::ADMISSION_KEY]).await?;
            access::record_operator(
                infra.db.pool(),
                "keys.restore",
                "keys",
                operator_detail(serde_json::json!({ "input": input.display().to_string(), "keys": backup.keys.len() })),
            )
            .await?;
            let scanning = spinner("reading the erasures recorded in the log");
            let found = erasure::erasures_in_log(&infra.stream, &settings.audit.admission_key).await;
            scanning.finish_and_clear();
            let found = found?;
            if found.bad_gateway_tags > 0 {
                anyhow::bail!(
                    "{} erasure events carry a gateway admission tag that does not verify with this RELAIS_ADMISSION_KEY: \
                     set the deployment's admission key and retry (nothing was restored; `relais verify` names any \
                     message inserted with a forged tag)",
                    found.bad_gateway_tags
                );
            }
            if found.not_relais > 0 {
                eprintln!(
                    "{} erasure messages in the log were not appended by Relais (no gateway admission tag, or another organisation's subject): not applied",
                    found.not_relais
                );
            }
            let erased = found.erasures;
            let progress = bar(backup.keys.len() as u64, "restoring data keys");
            let report = infra.keys.restore(&backup, &erased, 1000, |n| progress.set_position(n)).await?;
            progress.finish_and_clear();
            println!(
                "{} keys restored, {} already present, {} erasures recorded in the log applied again",
                report.restored, report.already_present, report.erasures_reapplied
            );
            for key in &report.new_keys_of_erased_clients {
                println!(
                    "destroyed key {key}: given after the loss to a client the backup shows erased (its erasure event is owed: the next sweep appends it)"
                );
            }
            if !report.conflicts.is_empty() {
                for (backup, store) in &report.conflicts {
                    eprintln!(
                        "not restored: key {backup} of the backup; the store gave the same client key {store} after the loss"
                    );
                }
                anyhow::bail!(
                    "{} keys of the backup conflict with keys given since the loss: the clients' events sealed with them stay unreadable until resolved",
                    report.conflicts.len()
                );
            }
            Ok(())
        }
    }
}

/// Creates a file only its owner may read (mode 0600), never over an existing one: what Relais
/// writes to files (key backups, replays with opened personal fields) is secret.
pub(crate) fn create_private(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut file = create_private(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// `relais retention ...`.
pub async fn retention(command: RetentionCommand) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    let infra = Infra::connect_needing(&settings, "relais-retention", &[crate::config::ADMISSION_KEY]).await?;
    let policy = &settings.retention.policy;
    match command {
        RetentionCommand::Sweep { dry_run: true } => {
            let due = retention::due(infra.db.pool(), policy, Utc::now()).await?;
            println!("{:<36}  {:<12}  last event", "key id", "org");
            for d in &due {
                println!("{:<36}  {:<12}  {}", d.key_id, d.org_id, d.last_event_at.format("%Y-%m-%d"));
            }
            println!("{} clients due for erasure", due.len());
            Ok(())
        }
        RetentionCommand::Sweep { dry_run: false } => {
            // Who swept, recorded before any key is destroyed, as `relais erase` records its
            // erasure (the erasures themselves name `relais:retention` in the log).
            let due = retention::due(infra.db.pool(), policy, Utc::now()).await?;
            access::record_operator(
                infra.db.pool(),
                "retention.sweep",
                "clients",
                operator_detail(serde_json::json!({ "due": due.len() })),
            )
            .await?;
            let eraser = Eraser::new(infra.keys.clone(), infra.event_log(&settings), infra.db.pool().clone());
            let progress = bar(0, "erasing clients past retention");
            let report =
                retention::sweep(&eraser, infra.db.pool(), &infra.stream, policy, Utc::now(), |done, total| {
                    progress.set_length(total);
                    progress.set_position(done);
                })
                .await?;
            progress.finish_and_clear();
            if !report.completed.is_empty() {
                println!("{} erasure events owed by earlier erasures appended", report.completed.len());
            }
            println!("{} clients erased (retention expired)", report.erased.len());
            if !report.pending.is_empty() {
                println!(
                    "{} more clients' keys destroyed, their erasure events owed (completed by a later sweep)",
                    report.pending.len()
                );
            }
            Ok(())
        }
    }
}

/// The retention lines of `relais status`.
pub async fn print_retention_status(settings: &Settings, infra: &Infra) -> anyhow::Result<()> {
    let counts = retention::due_counts(infra.db.pool(), &settings.retention.policy, Utc::now()).await?;
    let total: u64 = counts.values().sum();
    println!("clients due for erasure (retention): {total}");
    for (org, n) in counts {
        let days = settings.retention.policy.period_for(&org).num_days();
        println!("  {org:<12}  {n:>8}  (period {days} days)");
    }
    Ok(())
}
