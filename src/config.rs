//! Typed configuration, read once from the environment at start-up.

use base64::Engine;
use relais_domain::reference::{Organisation, default_organisations};
use relais_projections::Clock;
use relais_projections::Kek;
use relais_projections::monitor::MonitorSettings;
use relais_projections::retention::{RetentionPolicy, RetentionSettings};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable has a value that cannot be used.
    #[error("{name}: {detail}")]
    Invalid {
        /// The variable.
        name: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A secret a command changes stored data with for good was not set in the environment.
    #[error(
        "{name} is not set: {action} needs it from the environment, not the development secret of RELAIS_STATE_DIR"
    )]
    NotInEnvironment {
        /// The variable.
        name: &'static str,
        /// What the command would have done with it.
        action: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The variable of the admission key, a secret every process of a deployment shares.
pub const ADMISSION_KEY: &str = "RELAIS_ADMISSION_KEY";
/// The variable of the client reference pepper, a secret every process of a deployment shares.
pub const CLIENT_REF_PEPPER: &str = "RELAIS_CLIENT_REF_PEPPER";
/// The secrets every process of a deployment shares (their variables).
pub const SHARED_SECRETS: [&str; 2] = [ADMISSION_KEY, CLIENT_REF_PEPPER];
/// The variable of the key-encryption key.
pub const KEK: &str = "RELAIS_KEK";
/// The variable of the seed of the key that signs audit checkpoints.
pub const AUDIT_SIGNING_KEY: &str = "RELAIS_AUDIT_SIGNING_KEY";
/// The variable that makes every secret come from the environment: set (`1`), a process whose
/// environment lacks one stops instead of generating a development secret (deployments set it:
/// `deploy/systemd/relais.env.example`).
pub const REQUIRE_SECRETS: &str = "RELAIS_REQUIRE_SECRETS";

/// Everything Relais is configured with.
#[derive(Clone)]
pub struct Settings {
    /// The variables of the secrets this process generated in `RELAIS_STATE_DIR` because they
    /// were not set (development only).
    pub generated_secrets: Vec<&'static str>,
    /// `RELAIS_NATS_URL`.
    pub nats_url: String,
    /// `RELAIS_DATABASE_URL`.
    pub database_url: String,
    /// `RELAIS_LISTEN`.
    pub listen: SocketAddr,
    /// `RELAIS_STREAM` (default `RELAIS`).
    pub stream: relais_eventlog::StreamSettings,
    /// The key-encryption key and client reference pepper (`RELAIS_KEK`,
    /// `RELAIS_CLIENT_REF_PEPPER`: base64 of 32 bytes each), and the previous KEKs that still
    /// unwrap keys not yet rotated (`RELAIS_KEK_PREVIOUS`: comma-separated base64).
    pub kek: Kek,
    /// The organisations registry (`RELAIS_ORGANISATIONS`: a JSON file; default the seven
    /// services and the coordinators).
    pub organisations: Vec<Organisation>,
    /// Projection batch size (`RELAIS_PROJECTION_BATCH`).
    pub projection_batch: usize,
    /// Prefix of the projections' durable consumer names (`RELAIS_CONSUMER_PREFIX`).
    pub consumer_prefix: String,
    /// Aggregate states the validator keeps per generation (`RELAIS_VALIDATOR_STATES`, default
    /// 40,000; two generations at most, about 0.2 KiB a state).
    pub validator_states: usize,
    /// Most PostgreSQL connections of this process (`RELAIS_DB_CONNECTIONS`, default 16).
    pub db_connections: u32,
    /// The clock of the views that depend on time (the system clock; tests set their own).
    pub clock: Arc<dyn Clock>,
    /// How often views that depend on time are brought up to the clock without a new event
    /// (`RELAIS_CLOCK_TICK_SECS`, default 60).
    pub clock_tick: Duration,
    /// Thresholds of the continuity monitor (`RELAIS_MONITOR_RELEASE_DAYS` 14,
    /// `RELAIS_MONITOR_ANSWER_WORKING_DAYS` 10, `RELAIS_MONITOR_FIRST_CONTACT_WORKING_DAYS` 20,
    /// `RELAIS_MONITOR_FEEDBACK_DAYS` 14).
    pub monitor: MonitorSettings,
    /// Retention of closed cases (`RELAIS_RETENTION`: `default=<days>,<org>=<days>,...`,
    /// default five years) and how often the gateway sweeps (`RELAIS_RETENTION_SWEEP_SECS`,
    /// default one day, at most a year, 0: only on demand).
    pub retention: RetentionSettings,
    /// The audit chain, its checkpoints and admission tags.
    pub audit: AuditSettings,
}

/// Settings of the audit chain (docs/AUDIT.md).
#[derive(Clone, Debug)]
pub struct AuditSettings {
    /// The checkpoint signing key (`RELAIS_AUDIT_SIGNING_KEY`: base64 of a 32-byte ed25519
    /// seed). `None` in a process given only `RELAIS_AUDIT_PUBLIC_KEY` (a gateway that does
    /// not run the chain).
    pub signing_key: Option<relais_audit::SigningKey>,
    /// The key that verifies current checkpoints (derived from the signing key, or
    /// `RELAIS_AUDIT_PUBLIC_KEY`).
    pub public_key: relais_audit::VerifyingKey,
    /// Keys of earlier checkpoints, after rotations (`RELAIS_AUDIT_RETIRED_PUBLIC_KEYS`:
    /// comma-separated base64).
    pub retired_public_keys: Vec<relais_audit::VerifyingKey>,
    /// The admission key (`RELAIS_ADMISSION_KEY`: base64 of 32 bytes).
    pub admission_key: relais_audit::AdmissionKey,
    /// A checkpoint after at most this many sequences (`RELAIS_CHECKPOINT_EVERY_EVENTS`).
    pub checkpoint_every_events: u64,
    /// A checkpoint after at most this long when the log moved (`RELAIS_CHECKPOINT_EVERY_SECS`).
    pub checkpoint_every: Duration,
    /// The audit stream (`RELAIS_AUDIT_STREAM`, default `RELAIS_AUDIT`).
    pub stream: String,
}

impl AuditSettings {
    /// Settings with these keys and the default cadence (every 10,000 events or 60 s).
    pub fn new(signing_seed: [u8; 32], admission_key: [u8; 32]) -> Self {
        let signing_key = relais_audit::SigningKey::from_seed(signing_seed);
        Self {
            public_key: signing_key.verifying_key(),
            signing_key: Some(signing_key),
            retired_public_keys: Vec::new(),
            admission_key: relais_audit::AdmissionKey::from_bytes(admission_key),
            checkpoint_every_events: 10_000,
            checkpoint_every: Duration::from_secs(60),
            stream: relais_eventlog::audit::DEFAULT_STREAM.into(),
        }
    }

    /// Every key that verifies checkpoints: the current one first, then the retired ones.
    pub fn public_keys(&self) -> Vec<relais_audit::VerifyingKey> {
        std::iter::once(self.public_key).chain(self.retired_public_keys.iter().copied()).collect()
    }

    fn from_env(local: &LocalSecrets) -> Result<Self, ConfigError> {
        let invalid = |name: &'static str, detail: String| ConfigError::Invalid { name, detail };
        let admission = match var(ADMISSION_KEY) {
            Some(v) => secret32(ADMISSION_KEY, &v)?,
            None => local.get(ADMISSION_KEY, "admission-key")?,
        };
        let signing_seed = match (var(AUDIT_SIGNING_KEY), var("RELAIS_AUDIT_PUBLIC_KEY")) {
            (Some(v), _) => Some(secret32(AUDIT_SIGNING_KEY, &v)?),
            (None, Some(_)) => None,
            (None, None) => Some(local.get(AUDIT_SIGNING_KEY, "audit-signing-key")?),
        };
        let mut settings = Self::new(signing_seed.unwrap_or([0; 32]), admission);
        if signing_seed.is_none() {
            settings.signing_key = None;
        }
        if let Some(public) = var("RELAIS_AUDIT_PUBLIC_KEY") {
            let key = relais_audit::VerifyingKey::from_base64(&public)
                .map_err(|e| invalid("RELAIS_AUDIT_PUBLIC_KEY", e.to_string()))?;
            if settings.signing_key.is_some() && key != settings.public_key {
                return Err(invalid(
                    "RELAIS_AUDIT_PUBLIC_KEY",
                    "is not the public key of RELAIS_AUDIT_SIGNING_KEY".into(),
                ));
            }
            settings.public_key = key;
        }
        if let Some(list) = var("RELAIS_AUDIT_RETIRED_PUBLIC_KEYS") {
            settings.retired_public_keys = list
                .split(',')
                .filter(|k| !k.trim().is_empty())
                .map(relais_audit::VerifyingKey::from_base64)
                .collect::<Result<_, _>>()
                .map_err(|e| invalid("RELAIS_AUDIT_RETIRED_PUBLIC_KEYS", e.to_string()))?;
        }
        if let Some(n) = var("RELAIS_CHECKPOINT_EVERY_EVENTS") {
            settings.checkpoint_every_events = n
                .parse()
                .ok()
                .filter(|n| *n >= 1)
                .ok_or_else(|| invalid("RELAIS_CHECKPOINT_EVERY_EVENTS", "a number of events, 1 or more".into()))?;
        }
        // At most a day: a longer period would add nothing an auditor could use, and a huge
        // one would overflow the chain worker's timer.
        settings.checkpoint_every = Duration::from_secs(number("RELAIS_CHECKPOINT_EVERY_SECS", 1..=86_400, 60)?);
        if let Some(name) = var("RELAIS_AUDIT_STREAM") {
            settings.stream = name;
        }
        Ok(settings)
    }
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("nats_url", &"(set)")
            .field("database_url", &"(set)")
            .field("listen", &self.listen)
            .field("stream", &self.stream)
            .field("kek", &self.kek)
            .field("audit", &self.audit)
            .finish_non_exhaustive()
    }
}

/// Default NATS URL.
pub const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Default database URL.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/relais";
/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Seconds in a (non-leap) year: the bound of the periods read from the environment.
const YEAR_SECS: u64 = 365 * 24 * 3600;

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn number<T>(name: &'static str, range: std::ops::RangeInclusive<T>, default: T) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    match var(name) {
        None => Ok(default),
        Some(v) => v.parse().ok().filter(|n| range.contains(n)).ok_or_else(|| ConfigError::Invalid {
            name,
            detail: format!("a number from {} to {}", range.start(), range.end()),
        }),
    }
}

fn secret32(name: &'static str, value: &str) -> Result<[u8; 32], ConfigError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .map_err(|e| ConfigError::Invalid { name, detail: format!("not base64: {e}") })?;
    bytes.try_into().map_err(|_| ConfigError::Invalid { name, detail: "must decode to exactly 32 bytes".into() })
}

/// Where a secret not set in the environment comes from: a file of `RELAIS_STATE_DIR`,
/// generated on first use (development), or nowhere where `RELAIS_REQUIRE_SECRETS` is set (a
/// deployment: a variable missing from its environment file stops the process instead of
/// giving it a secret no other process shares).
struct LocalSecrets {
    dir: PathBuf,
    refused: bool,
}

impl LocalSecrets {
    fn get(&self, variable: &'static str, file: &str) -> Result<[u8; 32], ConfigError> {
        if self.refused {
            return Err(ConfigError::NotInEnvironment {
                name: variable,
                action: format!("a process with {REQUIRE_SECRETS} set"),
            });
        }
        local_secret(&self.dir, file).map_err(|e| match e {
            ConfigError::Io { path, source } => ConfigError::Invalid {
                name: variable,
                detail: format!(
                    "not set, and its development secret cannot be kept in RELAIS_STATE_DIR ({}: {source})",
                    path.display()
                ),
            },
            other => other,
        })
    }
}

/// Whether a yes-or-no variable is set (`1`, `true`, `yes`; `0`, `false`, `no`; unset: no).
fn flag(name: &'static str) -> Result<bool, ConfigError> {
    match var(name).map(|v| v.trim().to_ascii_lowercase()).as_deref() {
        None | Some("0" | "false" | "no") => Ok(false),
        Some("1" | "true" | "yes") => Ok(true),
        Some(_) => Err(ConfigError::Invalid { name, detail: "1, true or yes; 0, false or no".into() }),
    }
}

/// Reads or creates a local secret file (development only: production sets the variables).
fn local_secret(dir: &Path, file: &str) -> Result<[u8; 32], ConfigError> {
    let path = dir.join(file);
    let io = |source| ConfigError::Io { path: path.clone(), source };
    if let Ok(text) = std::fs::read_to_string(&path) {
        return secret32("RELAIS_STATE_DIR", &text);
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut raw = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut raw);
    let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
    // Written whole under a name of its own, then linked into place, which fails if the file
    // exists: two processes starting at once on a new state directory (tests, a gateway and a
    // projector) both end with the one secret that won, never with a half-written file.
    let staged = dir.join(format!(".{file}.{}", uuid::Uuid::new_v4().simple()));
    #[cfg(unix)]
    {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&staged).map_err(io)?;
        f.write_all(encoded.as_bytes()).map_err(io)?;
    }
    #[cfg(not(unix))]
    std::fs::write(&staged, &encoded).map_err(io)?;
    let linked = std::fs::hard_link(&staged, &path);
    let _ = std::fs::remove_file(&staged);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let text = std::fs::read_to_string(&path).map_err(io)?;
            return secret32("RELAIS_STATE_DIR", &text);
        }
        Err(e) => return Err(io(e)),
    }
    tracing::warn!(path = %path.display(), "generated a local secret; production must set it in the environment");
    Ok(raw)
}

/// The organisations registry: the JSON file named by `RELAIS_ORGANISATIONS`, else the seven
/// services and the coordinators.
pub fn organisations_from_env() -> Result<Vec<Organisation>, ConfigError> {
    match var("RELAIS_ORGANISATIONS") {
        Some(path) => {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Invalid {
                name: "RELAIS_ORGANISATIONS",
                detail: format!("cannot read {path}: {source}"),
            })?;
            serde_json::from_str(&text)
                .map_err(|e| ConfigError::Invalid { name: "RELAIS_ORGANISATIONS", detail: e.to_string() })
        }
        None => Ok(default_organisations()),
    }
}

impl Settings {
    /// Refuses, for `action`, a secret this process took from `RELAIS_STATE_DIR` instead of the
    /// environment: some commands change stored data for good with the secret they hold (a
    /// KEK rotation re-wraps every data key, a checkpoint is signed into append-only stores),
    /// and a development secret there, picked up because a variable was not set in the
    /// operator's shell, would do lasting harm.
    pub fn require_from_environment(&self, variable: &'static str, action: &str) -> Result<(), ConfigError> {
        if self.generated_secrets.contains(&variable) {
            return Err(ConfigError::NotInEnvironment { name: variable, action: action.to_owned() });
        }
        Ok(())
    }

    /// Reads the settings from the environment, with defaults that work on a development
    /// machine.
    pub fn from_env() -> Result<Self, ConfigError> {
        let listen_text = var("RELAIS_LISTEN").unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen_text
            .parse()
            .map_err(|e| ConfigError::Invalid { name: "RELAIS_LISTEN", detail: format!("{listen_text}: {e}") })?;
        let state_dir = PathBuf::from(var("RELAIS_STATE_DIR").unwrap_or_else(|| ".relais".into()));
        let local = LocalSecrets { dir: state_dir, refused: flag(REQUIRE_SECRETS)? };
        let kek_key = match var(KEK) {
            Some(v) => secret32(KEK, &v)?,
            None => local.get(KEK, "kek")?,
        };
        let pepper = match var(CLIENT_REF_PEPPER) {
            Some(v) => secret32(CLIENT_REF_PEPPER, &v)?,
            None => local.get(CLIENT_REF_PEPPER, "client-ref-pepper")?,
        };
        let previous_keks = match var("RELAIS_KEK_PREVIOUS") {
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(|k| secret32("RELAIS_KEK_PREVIOUS", k))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        let mut retention = RetentionSettings::default();
        if let Some(text) = var("RELAIS_RETENTION") {
            retention.policy = RetentionPolicy::parse(&text)
                .map_err(|e| ConfigError::Invalid { name: "RELAIS_RETENTION", detail: e.to_string() })?;
        }
        if var("RELAIS_RETENTION_SWEEP_SECS").is_some() {
            // At most a year: a longer period would overflow the timer, and a sweep that never
            // runs is 0.
            let secs: u64 = number("RELAIS_RETENTION_SWEEP_SECS", 0..=YEAR_SECS, 0)?;
            retention.sweep_every = (secs > 0).then(|| Duration::from_secs(secs));
        }
        let organisations = organisations_from_env()?;
        let mut stream = relais_eventlog::StreamSettings::default();
        if let Some(name) = var("RELAIS_STREAM") {
            stream.name = name;
        }
        if var("RELAIS_DUPLICATE_WINDOW_SECS").is_some() {
            // The broker keeps the window in nanoseconds of an i64: beyond a year would be no
            // use, and beyond 292 years would wrap to a short window without a word.
            stream.duplicate_window = Duration::from_secs(number("RELAIS_DUPLICATE_WINDOW_SECS", 1..=YEAR_SECS, 3600)?);
        }
        let projection_batch = match var("RELAIS_PROJECTION_BATCH") {
            Some(v) => v.parse().ok().filter(|n| (1..=10_000).contains(n)).ok_or(ConfigError::Invalid {
                name: "RELAIS_PROJECTION_BATCH",
                detail: "between 1 and 10000".into(),
            })?,
            None => relais_projections::worker::DEFAULT_BATCH_SIZE,
        };
        Ok(Self {
            nats_url: var("RELAIS_NATS_URL").unwrap_or_else(|| DEFAULT_NATS_URL.into()),
            database_url: var("RELAIS_DATABASE_URL").unwrap_or_else(|| DEFAULT_DATABASE_URL.into()),
            listen,
            stream,
            kek: Kek::new(kek_key, pepper).with_previous(previous_keks),
            organisations,
            projection_batch,
            validator_states: number("RELAIS_VALIDATOR_STATES", 1..=10_000_000, 40_000)?,
            db_connections: number("RELAIS_DB_CONNECTIONS", 2..=1000, 16)?,
            consumer_prefix: var("RELAIS_CONSUMER_PREFIX").unwrap_or_else(|| "relais".into()),
            clock: relais_projections::clock::system(),
            clock_tick: Duration::from_secs(number("RELAIS_CLOCK_TICK_SECS", 1..=3600, 60)?),
            monitor: MonitorSettings {
                release_window_days: number("RELAIS_MONITOR_RELEASE_DAYS", 0..=365, 14)?,
                answer_working_days: number("RELAIS_MONITOR_ANSWER_WORKING_DAYS", 1..=250, 10)?,
                first_contact_working_days: number("RELAIS_MONITOR_FIRST_CONTACT_WORKING_DAYS", 1..=250, 20)?,
                feedback_days: number("RELAIS_MONITOR_FEEDBACK_DAYS", 0..=365, 14)?,
            },
            retention,
            audit: AuditSettings::from_env(&local)?,
            // The signing key counts as generated only where it was: a process given only the
            // public key has none.
            generated_secrets: [KEK, CLIENT_REF_PEPPER, ADMISSION_KEY, AUDIT_SIGNING_KEY]
                .into_iter()
                .filter(|v| var(v).is_none())
                .filter(|v| *v != AUDIT_SIGNING_KEY || var("RELAIS_AUDIT_PUBLIC_KEY").is_none())
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn processes_generating_a_local_secret_at_once_all_end_with_the_one_written() {
        // Two processes starting on a new state directory (a gateway and a projector, or
        // tests) must not end with different secrets, nor read a half-written file.
        for _ in 0..20 {
            let dir = tempfile::tempdir().expect("dir");
            let secrets: Vec<[u8; 32]> = std::thread::scope(|s| {
                let handles: Vec<_> =
                    (0..8).map(|_| s.spawn(|| super::local_secret(dir.path(), "kek").expect("a secret"))).collect();
                handles.into_iter().map(|h| h.join().expect("joined")).collect()
            });
            assert!(secrets.windows(2).all(|w| w[0] == w[1]), "every process has the secret written");
            let written = super::local_secret(dir.path(), "kek").expect("read back");
            assert_eq!(written, secrets[0]);
            let files: Vec<_> = std::fs::read_dir(dir.path()).expect("dir").collect();
            assert_eq!(files.len(), 1, "no staged file is left");
        }
    }
}
