//! The auditors' commands: `relais replay`, `relais verify`, `relais checkpoint`,
//! `relais audit public-key | admission-key`, `relais case show`.
//!
//! They read NATS and PostgreSQL with the operator's configuration (like `relais status`),
//! except `relais verify --file`, which needs nothing but the file and the public key.

use crate::config::Settings;
use crate::startup::Infra;
use anyhow::Context as _;
use base64::Engine;
use futures::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use relais_audit::VerifyingKey;
use relais_audit::offline::FileVerifier;
use relais_domain::{AggregateKind, AggregateRef, OrgId};
use relais_projections::access;
use relais_projections::audit::as_of::{self, AsOfBasis};
use relais_projections::audit::{checkpoints, replay, verify};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

/// Output format of a replay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReplayFormat {
    /// One JSON object a line (verifiable offline).
    Ndjson,
    /// A spreadsheet-friendly table of the events (not verifiable).
    Csv,
}

/// `relais replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Only this organisation.
    #[arg(long)]
    org: Option<String>,
    /// Only this event type (for example relais.intervention.recorded).
    #[arg(long = "type")]
    event_type: Option<String>,
    /// Only this case (its id).
    #[arg(long)]
    case: Option<String>,
    /// Recorded at or after (RFC 3339).
    #[arg(long)]
    from: Option<String>,
    /// Recorded before (RFC 3339).
    #[arg(long)]
    to: Option<String>,
    /// From this stream sequence.
    #[arg(long)]
    from_seq: Option<u64>,
    /// Up to this stream sequence.
    #[arg(long)]
    to_seq: Option<u64>,
    /// ndjson or csv.
    #[arg(long, value_enum, default_value = "ndjson")]
    format: ReplayFormat,
    /// Write to this new file instead of stdout (mode 0600: the replay holds opened personal
    /// fields; an existing file is never overwritten).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// `relais verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// Verify this replay file offline (no NATS, no PostgreSQL).
    #[arg(long)]
    file: Option<PathBuf>,
    /// A public key (base64, or a file holding it) whose checkpoints are accepted; repeat for
    /// keys retired by rotation. Required with --file; online, the configured keys are used
    /// when none is given.
    #[arg(long = "public-key")]
    public_keys: Vec<String>,
    /// With --file: check the file as a sequence range with no line missing, whatever filter
    /// its (unsigned) header claims; for a replay asked for a range or for everything.
    #[arg(long, requires = "file")]
    contiguous: bool,
}

/// `relais checkpoint`.
#[derive(Debug, clap::Args)]
pub struct CheckpointArgs {
    /// Wait up to this many seconds (at most a day) for the chain to reach the log's last
    /// sequence first.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    wait: u64,
}

/// `relais audit …`.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Prints the public key (base64) that verifies signed checkpoints.
    PublicKey,
    /// Prints the admission key (base64) of an organisation's direct publisher.
    AdmissionKey {
        /// The organisation.
        #[arg(long)]
        org: String,
    },
}

/// `relais case …`.
#[derive(Debug, clap::Subcommand)]
pub enum CaseCommand {
    /// Prints a case as it stood at a moment, rebuilt from its events in the log.
    Show {
        /// The organisation.
        #[arg(long)]
        org: String,
        /// The case id.
        #[arg(long)]
        case: String,
        /// The moment (RFC 3339).
        #[arg(long)]
        as_of: String,
        /// recorded (what Relais knew then) or occurred (what had happened by then).
        #[arg(long, default_value = "recorded")]
        basis: String,
    },
}

/// A progress bar's rate in whole units a second (indicatif's own shows four decimals).
pub(crate) fn whole_rate(state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write) {
    let _ = write!(w, "{:.0}/s", state.per_sec());
}

fn progress_bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!("{what} {{bar:40}} {{pos}}/{{len}} sequences ({{rate}}, {{eta}})"))
            .map(|s| s.with_key("rate", whole_rate))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// What an operator's access record says of the command line: the system user and the
/// parameters. The user is the account the process runs as (its uid, named from
/// `/etc/passwd`), not `$USER`: anyone can set that, and services run without it.
pub(crate) fn operator_detail(extra: Value) -> Value {
    let (user, uid) = system_user();
    json!({ "via": "cli", "user": user, "uid": uid, "parameters": extra })
}

/// The name and uid of the account this process runs as; the name is `uid:<n>` where the
/// account database does not name it.
fn system_user() -> (String, Option<u32>) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // /proc/self belongs to the process's own (effective) user.
        let Ok(uid) = std::fs::metadata("/proc/self").map(|m| m.uid()) else {
            // No /proc (not Linux): what the environment claims, marked as such.
            return (format!("$USER={}", std::env::var("USER").unwrap_or_default()), None);
        };
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        (account_name(&passwd, uid).unwrap_or_else(|| format!("uid:{uid}")), Some(uid))
    }
    #[cfg(not(unix))]
    {
        (format!("$USER={}", std::env::var("USER").unwrap_or_default()), None)
    }
}

/// The name of `uid` in a `/etc/passwd` text (`name:password:uid:...` lines).
fn account_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid && !name.is_empty()).then(|| name.to_owned())
    })
}

/// `relais replay`.
pub async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    let mut q = HashMap::new();
    for (name, value) in [
        ("org", args.org),
        ("type", args.event_type),
        ("case", args.case),
        ("from", args.from),
        ("to", args.to),
        ("from_seq", args.from_seq.map(|s| s.to_string())),
        ("to_seq", args.to_seq.map(|s| s.to_string())),
    ] {
        if let Some(v) = value {
            q.insert(name.to_owned(), v);
        }
    }
    let filter = relais_gateway::replay_filter(&q).map_err(|e| anyhow::anyhow!("{}", problem_detail(e)))?;
    let settings = Settings::from_env()?;
    let infra = Infra::connect_reading(&settings, "relais-replay", &[]).await?;
    let out: Box<dyn Write> =
        match &args.output {
            Some(path) => {
                // Opened personal fields: readable by the operator alone, and never written over
                // an earlier replay.
                Box::new(crate::privacy_cli::create_private(path).with_context(|| {
                    format!("cannot create {} (an existing file is never overwritten)", path.display())
                })?)
            }
            None => Box::new(std::io::stdout().lock()),
        };
    access::record_operator(infra.db.pool(), "audit.replay", "audit/events", operator_detail(filter.to_json())).await?;
    let mut replay = replay::open(infra.db.pool(), &infra.keys, &infra.stream, filter).await?;
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, out);
    let from = replay.from_sequence();
    let bar = progress_bar(replay.upper_sequence().saturating_sub(from) + 1, "replay");
    match args.format {
        ReplayFormat::Ndjson => {
            let mut chunks = std::pin::pin!(replay.into_chunks());
            while let Some((bytes, position)) = chunks.next().await {
                out.write_all(&bytes)?;
                bar.set_position(position.saturating_sub(from) + 1);
            }
        }
        ReplayFormat::Csv => {
            writeln!(out, "{}", CSV_COLUMNS.join(","))?;
            while let Some(lines) = replay.next_lines().await? {
                write_csv(&mut out, &lines)?;
                bar.set_position(replay.position().saturating_sub(from) + 1);
            }
        }
    }
    out.flush()?;
    bar.finish_and_clear();
    Ok(())
}

/// A problem about a query parameter (`?from_seq: …`), worded for the command line (`--from-seq: …`).
fn problem_detail(e: relais_gateway::ApiError) -> String {
    let text = e.to_string();
    match text.strip_prefix('?').and_then(|t| t.split_once(':')) {
        Some((name, rest)) => format!("--{}:{rest}", name.replace('_', "-")),
        None => text,
    }
}

const CSV_COLUMNS: &[&str] = &[
    "sequence",
    "kind",
    "recordedat",
    "time",
    "source",
    "type",
    "subject",
    "id",
    "actor",
    "personaldata",
    "data",
    "quarantine",
    "link",
];

/// One CSV cell. A cell a spreadsheet would read as a formula (it starts with `=`, `+`, `-`,
/// `@`, a tab or a carriage return: text from events, actors or subjects is not ours) gets a
/// leading apostrophe, as OWASP recommends against CSV injection; then the cell is quoted if
/// it needs to be.
fn csv_field(v: Option<&Value>) -> String {
    let mut text = match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        text.insert(0, '\'');
    }
    if text.contains([',', '"', '\n', '\r']) { format!("\"{}\"", text.replace('"', "\"\"")) } else { text }
}

fn write_csv(out: &mut impl Write, lines: &[Map<String, Value>]) -> anyhow::Result<()> {
    for l in lines {
        let kind = l.get("relaiskind").and_then(Value::as_str).unwrap_or_default();
        let row: Vec<String> = match kind {
            "event" | "message" => vec![
                csv_field(l.get("sequence")),
                kind.to_owned(),
                csv_field(l.get("recordedat")),
                csv_field(l.get("time")),
                csv_field(l.get("source")),
                csv_field(l.get("type")),
                csv_field(l.get("subject").or(l.get("relaissubject"))),
                csv_field(l.get("id")),
                csv_field(l.get("actor")),
                csv_field(l.get("personaldata")),
                csv_field(l.get("data")),
                csv_field(l.get("relaisquarantine")),
                csv_field(l.get("relaislink")),
            ],
            "checkpoint" => {
                let mut row = vec![String::new(); CSV_COLUMNS.len()];
                row[0] = csv_field(l.get("sequence"));
                row[1] = kind.to_owned();
                row[2] = csv_field(l.get("signedat"));
                row[10] = csv_field(l.get("statement"));
                row[12] = csv_field(l.get("head"));
                row
            }
            _ => continue,
        };
        writeln!(out, "{}", row.join(","))?;
    }
    Ok(())
}

fn public_key_arg(text: &str) -> anyhow::Result<VerifyingKey> {
    let path = std::path::Path::new(text);
    if path.is_file() {
        let key = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        return VerifyingKey::from_base64(&key).map_err(|e| anyhow::anyhow!("--public-key: {}: {e}", path.display()));
    }
    VerifyingKey::from_base64(text)
        .map_err(|e| anyhow::anyhow!("--public-key: {text:?} is neither a file nor a base64 ed25519 public key ({e})"))
}

fn print_findings(findings: &[relais_audit::Finding], more: u64) {
    if let Some(first) = findings.iter().filter(|f| f.sequence.is_some()).min_by_key(|f| f.sequence) {
        println!("the chain breaks at sequence {}: {first}", first.sequence.unwrap_or_default());
    }
    for f in findings {
        println!("  {f}");
    }
    if more > 0 {
        println!("  … and {more} more");
    }
}

/// `relais verify`.
pub async fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let keys: Vec<VerifyingKey> = args.public_keys.iter().map(|k| public_key_arg(k)).collect::<Result<_, _>>()?;
    if let Some(path) = args.file {
        if keys.is_empty() {
            anyhow::bail!("--file needs --public-key: the key you trust, from GET /v1/audit/public-key");
        }
        return verify_file(&path, keys, args.contiguous);
    }
    let settings = Settings::from_env()?;
    let keys = if keys.is_empty() { settings.audit.public_keys() } else { keys };
    let infra = Infra::connect_reading(&settings, "relais-verify", &[crate::config::ADMISSION_KEY]).await?;
    let options = verify::VerifyOptions { public_keys: keys, admission: Some(settings.audit.admission_key.clone()) };
    let bar = progress_bar(0, "verify");
    let report = verify::verify(infra.db.pool(), &infra.stream, &infra.audit_stream, &options, |pos, end| {
        bar.set_length(end);
        bar.set_position(pos);
    })
    .await?;
    bar.finish_and_clear();
    if report.is_verified() {
        println!("{}", report.summary());
        if report.unchained > 0 {
            println!(
                "note: {} events after sequence {} are not chained yet (the chain worker is behind or not running)",
                report.unchained, report.chain_head
            );
        }
        println!(
            "checked {} checkpoints and {} events applied by the projections",
            report.checkpoints, report.ledger_checked
        );
        return Ok(());
    }
    print_findings(&report.findings, report.more_findings);
    anyhow::bail!("verification failed: {} findings", report.findings.len() as u64 + report.more_findings)
}

fn verify_file(path: &std::path::Path, keys: Vec<VerifyingKey>, contiguous: bool) -> anyhow::Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = progress_bar(size, "verify");
    let mut verifier = FileVerifier::new(keys);
    if contiguous {
        verifier = verifier.require_contiguous();
    }
    let mut reader = std::io::BufReader::with_capacity(256 * 1024, file);
    let mut line = String::new();
    let mut read = 0u64;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        read += n as u64;
        verifier.line(line.trim_end_matches(['\n', '\r']));
        if read % (1 << 20) < n as u64 {
            bar.set_position(read);
        }
    }
    bar.finish_and_clear();
    let report = verifier.finish();
    if report.is_verified() {
        println!("{}", report.summary());
        if report.untied_checkpoints > 0 {
            println!("note: {} signed checkpoints name sequences not in this file", report.untied_checkpoints);
        }
        if report.unchained > 0 {
            println!("note: {} events at the end were not chained yet when replayed: not verified", report.unchained);
        }
        if report.sealed > 0 {
            println!("note: the sealed personal fields of {} events cannot be compared offline", report.sealed);
        }
        return Ok(());
    }
    print_findings(&report.findings, report.more_findings);
    anyhow::bail!("verification failed: {} findings", report.findings.len() as u64 + report.more_findings)
}

/// `relais checkpoint`.
pub async fn checkpoint(args: CheckpointArgs) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    settings.require_from_environment(crate::config::AUDIT_SIGNING_KEY, "signing a checkpoint")?;
    let infra = Infra::connect(&settings, "relais-checkpoint").await?;
    let chain = infra.chain_settings(&settings).context("signing a checkpoint needs RELAIS_AUDIT_SIGNING_KEY")?;
    let target = relais_eventlog::reader::last_sequence(&infra.stream).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait);
    let mut chained =
        relais_projections::worker::checkpoint(infra.db.pool(), relais_projections::audit::chain::CHAIN).await?;
    let waiting = (chained < target).then(|| crate::privacy_cli::spinner("waiting for the chain"));
    while chained < target && tokio::time::Instant::now() < deadline {
        if let Some(w) = &waiting {
            w.set_message(format!("waiting for the chain: at sequence {chained} of {target}"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        chained =
            relais_projections::worker::checkpoint(infra.db.pool(), relais_projections::audit::chain::CHAIN).await?;
    }
    if let Some(w) = waiting {
        w.finish_and_clear();
    }
    if chained < target {
        eprintln!("warning: the chain is at sequence {chained}, the log at {target}: is the projector running?");
    }
    match checkpoints::sign_head(infra.db.pool(), &chain).await? {
        Some(c) => println!("signed checkpoint at sequence {}, head {} (key {})", c.sequence, c.head, c.key_id),
        None => println!("nothing is chained yet: no checkpoint signed"),
    }
    Ok(())
}

/// `relais audit …`.
pub async fn audit(command: AuditCommand) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    // These keys are handed to auditors and organisations: one derived from a development
    // secret, generated because a variable was not set here, would not be the deployment's.
    let development = |variable: &'static str| {
        if settings.generated_secrets.contains(&variable) {
            eprintln!(
                "warning: {variable} is not set: this key comes from the development secret in RELAIS_STATE_DIR, not the deployment's"
            );
        }
    };
    match command {
        AuditCommand::PublicKey => {
            development(crate::config::AUDIT_SIGNING_KEY);
            println!("{}", settings.audit.public_key.to_base64());
        }
        AuditCommand::AdmissionKey { org } => {
            development(crate::config::ADMISSION_KEY);
            let org = OrgId::parse(&org).map_err(|e| anyhow::anyhow!("--org: {e}"))?;
            let key = settings.audit.admission_key.org_key(org.as_str());
            println!("{}", base64::engine::general_purpose::STANDARD.encode(key));
        }
    }
    Ok(())
}

/// `relais case …`.
pub async fn case(command: CaseCommand) -> anyhow::Result<()> {
    let CaseCommand::Show { org, case, as_of, basis } = command;
    let org = OrgId::parse(&org).map_err(|e| anyhow::anyhow!("--org: {e}"))?;
    let case_ref = AggregateRef::new(AggregateKind::Cases, &case).map_err(|e| anyhow::anyhow!("--case: {e}"))?;
    let as_of = chrono::DateTime::parse_from_rfc3339(&as_of)
        .map_err(|_| anyhow::anyhow!("--as-of: an RFC 3339 time, for example 2026-03-02T09:30:00Z"))?
        .with_timezone(&chrono::Utc);
    let basis = AsOfBasis::parse(&basis).context("--basis: recorded or occurred")?;
    let settings = Settings::from_env()?;
    let infra = Infra::connect_reading(&settings, "relais-case", &[]).await?;
    access::record_operator(
        infra.db.pool(),
        "case.read_as_of",
        &format!("orgs/{org}/cases/{case}"),
        operator_detail(json!({ "as_of": as_of, "basis": basis })),
    )
    .await?;
    match as_of::case_as_of(infra.db.pool(), &infra.stream, &org, &case_ref, as_of, basis).await? {
        Some(state) => println!("{}", serde_json::to_string_pretty(&state)?),
        None => anyhow::bail!("case {case} of {org} had no recorded event at {as_of}"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_named_by_its_uid_in_the_password_file() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n# a comment\nbroken\nrelais:x:1001:1001::/srv:/bin/sh\n";
        assert_eq!(account_name(passwd, 0).as_deref(), Some("root"));
        assert_eq!(account_name(passwd, 1001).as_deref(), Some("relais"));
        assert_eq!(account_name(passwd, 7), None);
    }

    #[test]
    fn csv_cells_cannot_be_read_as_formulas() {
        let cell = |s: &str| csv_field(Some(&Value::from(s)));
        assert_eq!(cell("=HYPERLINK(\"http://x\",\"y\")"), "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"");
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("-2+3"), "'-2+3");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("\tx"), "'\tx");
        assert_eq!(cell("\rx"), "\"'\rx\"");
        assert_eq!(cell("a=b, c"), "\"a=b, c\"");
        assert_eq!(cell("2026-03-02T09:30:00Z"), "2026-03-02T09:30:00Z");
        assert_eq!(csv_field(Some(&Value::from(7))), "7");
        assert_eq!(csv_field(None), "");
    }
}
