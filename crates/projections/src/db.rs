//! The connection pool and the migrations.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection as _, PgPool};
use std::str::FromStr;
use std::time::Duration;

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL is not a PostgreSQL URL.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// The server could not be reached, or a query failed.
    #[error("database: {0}")]
    Sqlx(#[from] sqlx::Error),
    /// The server could not be reached or refused the connection (its cause named: the pool
    /// alone would retry until its timeout and report only that).
    #[error("cannot connect to PostgreSQL at {target} (RELAIS_DATABASE_URL): {why}")]
    Unreachable {
        /// Host, port and database (never the password).
        target: String,
        /// The cause.
        why: String,
    },
    /// Migrations failed.
    #[error("database migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// This process was configured with another secret than the one the deployment's first
    /// process recorded.
    #[error(
        "{variable} is not the one this database was first used with (fingerprint {recorded}; this process has \
         {configured}): every Relais process of a deployment needs the same {variable}"
    )]
    SecretMismatch {
        /// The environment variable of the secret.
        variable: &'static str,
        /// The fingerprint the database holds.
        recorded: String,
        /// The fingerprint of this process's secret.
        configured: String,
    },
    /// A serving process without a shared secret the database holds a fingerprint of.
    #[error(
        "{variable} is not set, and this database was first used with one (fingerprint {recorded}): set {variable} \
         to the deployment's (a secret generated for development would judge and pseudonymise differently)"
    )]
    SecretNotSet {
        /// The environment variable of the secret.
        variable: &'static str,
        /// The fingerprint the database holds.
        recorded: String,
    },
    /// A command that only reads was pointed at a database that does not exist, or holds no
    /// Relais data: most likely a mistyped URL, where it would otherwise report an empty
    /// history.
    #[error("the database {name:?} {why}: is RELAIS_DATABASE_URL the deployment's? (this command creates nothing)")]
    NotRelais {
        /// The database's name.
        name: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A command that only reads, and so does not migrate, met a schema of another version.
    #[error(
        "the database {name:?} is at schema version {found}, this binary reads version {needed}: a command that only \
         reads does not migrate; run it with the deployed version of Relais (`relais serve` of this version migrates)"
    )]
    SchemaVersion {
        /// The database's name.
        name: String,
        /// The last migration it holds.
        found: i64,
        /// The last migration this binary has.
        needed: i64,
    },
}

/// Every migration of this binary.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// A secret every process of a deployment shares, known to the database by a fingerprint.
#[derive(Debug, Clone)]
pub struct SharedSecret {
    /// Its environment variable.
    pub variable: &'static str,
    /// Its fingerprint, which reveals nothing of it.
    pub fingerprint: String,
    /// True when its variable was not set and this process generated it (development).
    pub generated: bool,
    /// True when this process uses it: one generated and needed is refused where the
    /// database holds a fingerprint.
    pub needed: bool,
}

/// The database of Relais: a pool on a migrated schema.
#[derive(Clone, Debug)]
pub struct Database {
    pool: PgPool,
}

/// How long the first connection to PostgreSQL may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// One connection, within [`CONNECT_TIMEOUT`], failing with its cause named: a database that
/// does not exist as such ([`DbError::NotRelais`]), anything else as [`DbError::Unreachable`]
/// (host, port and database; never the password).
async fn connect_once(options: &PgConnectOptions) -> Result<sqlx::PgConnection, DbError> {
    let name = options.get_database().unwrap_or_default().to_owned();
    let target = format!("{}:{}/{name}", options.get_host(), options.get_port());
    match tokio::time::timeout(CONNECT_TIMEOUT, options.connect()).await {
        Err(_) => Err(DbError::Unreachable { target, why: format!("no answer within {CONNECT_TIMEOUT:?}") }),
        Ok(Err(sqlx::Error::Database(d))) if d.code().as_deref() == Some("3D000") => {
            Err(DbError::NotRelais { name, why: "does not exist" })
        }
        Ok(Err(e)) => Err(DbError::Unreachable { target, why: root_cause(&e) }),
        Ok(Ok(conn)) => Ok(conn),
    }
}

/// The innermost cause of an error, once (sqlx repeats its source in its own message).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

impl Database {
    /// Connects, creating the database if it does not exist, and applies the migrations (a
    /// pool of at most 16 connections).
    pub async fn connect_and_migrate(url: &str) -> Result<Self, DbError> {
        Self::connect_and_migrate_with(url, 16).await
    }

    /// Like [`Database::connect_and_migrate`], with at most `max_connections` connections.
    /// Each connection keeps buffers as large as the largest statement it sent (a batch of
    /// rows), so a process that needs few should not hold more.
    pub async fn connect_and_migrate_with(url: &str, max_connections: u32) -> Result<Self, DbError> {
        Self::open(url, max_connections, true).await
    }

    /// Like [`Database::connect_and_migrate_with`], for a command that only reads: a database
    /// that does not exist, or holds no Relais data, is [`DbError::NotRelais`] and is left as
    /// it is (a mistyped URL creates nothing and is not reported as an empty history).
    pub async fn connect_existing(url: &str, max_connections: u32) -> Result<Self, DbError> {
        Self::open(url, max_connections, false).await
    }

    async fn open(url: &str, max_connections: u32, create: bool) -> Result<Self, DbError> {
        let options = PgConnectOptions::from_str(url)
            .map_err(|e| DbError::InvalidUrl(e.to_string()))?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2))
            // What Relais reads is almost always in memory: a batch touches the rows of recent
            // cases, and a request those of one organisation. At the default cost of a random
            // page (4, for spinning disks) the planner chose whole-table scans of views of a few
            // thousand rows over index lookups, and a scan grows with the history.
            .options([("random_page_cost", "1.1")]);
        let name = options.get_database().unwrap_or_default().to_owned();
        if create {
            create_database_if_missing(&options).await?;
        }
        // One connection first, to name the cause at once: the pool retries a refused
        // connection until its acquire timeout and then reports the timeout alone.
        let _ = connect_once(&options).await?.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(10))
            // No ping before each use: it is a round trip per statement outside a transaction
            // and per transaction, on every batch and request. A connection that died meanwhile
            // fails its statement instead, is dropped from the pool, and the caller's error path
            // runs (a worker restarts from its checkpoint; the gateway answers 503 and the
            // publisher retries with the same event ids).
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        if !create {
            // Relais' own tables, not only sqlx's: any sqlx application has that one.
            let relais: bool = sqlx::query_scalar(
                "SELECT to_regclass('_sqlx_migrations') IS NOT NULL AND to_regclass('event_ledger') IS NOT NULL \
                 AND to_regclass('projection_checkpoints') IS NOT NULL",
            )
            .fetch_one(&pool)
            .await?;
            if !relais {
                return Err(DbError::NotRelais { name, why: "holds no Relais data" });
            }
            let found: Option<i64> =
                sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations WHERE success").fetch_one(&pool).await?;
            let needed = MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0);
            let found = found.unwrap_or(0);
            if found != needed {
                return Err(DbError::SchemaVersion { name, found, needed });
            }
            return Ok(Self { pool });
        }
        MIGRATOR.run(&pool).await?;
        Ok(Self { pool })
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// True if the database answers.
    pub async fn is_ready(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// Checks that this process shares the deployment's secrets against the fingerprints the
    /// database holds: a process given another secret (a gateway whose tags the validator
    /// would refuse, a pepper that finds no client's key) gets [`DbError::SecretMismatch`],
    /// and one that generated a secret it needs for want of the variable gets
    /// [`DbError::SecretNotSet`] where the database holds a fingerprint. A secret generated and
    /// not needed is not checked. With `record` (a serving process), the fingerprints of the
    /// secrets it was given are recorded where the database holds none, after every check has
    /// passed; a command records nothing, so one run with a wrong secret on a new or restored
    /// database leaves no wrong fingerprint.
    pub async fn check_shared_secrets(&self, secrets: &[SharedSecret], record: bool) -> Result<(), DbError> {
        self.compare_fingerprints(secrets).await?;
        if !record {
            return Ok(());
        }
        for secret in secrets.iter().filter(|s| !s.generated) {
            sqlx::query(
                "INSERT INTO secret_fingerprints (variable, fingerprint) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(secret.variable)
            .bind(&secret.fingerprint)
            .execute(&self.pool)
            .await?;
        }
        // Again: another process may have recorded another secret meanwhile.
        self.compare_fingerprints(secrets).await
    }

    async fn compare_fingerprints(&self, secrets: &[SharedSecret]) -> Result<(), DbError> {
        for secret in secrets.iter().filter(|s| s.needed || !s.generated) {
            let recorded: Option<String> =
                sqlx::query_scalar("SELECT fingerprint FROM secret_fingerprints WHERE variable = $1")
                    .bind(secret.variable)
                    .fetch_optional(&self.pool)
                    .await?;
            let variable = secret.variable;
            match recorded {
                Some(recorded) if recorded != secret.fingerprint => {
                    return Err(if secret.generated {
                        DbError::SecretNotSet { variable, recorded }
                    } else {
                        DbError::SecretMismatch { variable, recorded, configured: secret.fingerprint.clone() }
                    });
                }
                None if secret.generated => {
                    tracing::warn!(variable, "not set: this process uses a secret generated for development");
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Writes the organisations registry (data, from configuration) into the database.
    pub async fn sync_organisations(&self, orgs: &[relais_domain::reference::Organisation]) -> Result<(), DbError> {
        use relais_domain::reference::CodeList;
        for o in orgs {
            sqlx::query(
                "INSERT INTO organisations (id, name, authority, keeps_cases) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, authority = EXCLUDED.authority,
                 keeps_cases = EXCLUDED.keeps_cases",
            )
            .bind(o.id.as_str())
            .bind(&o.name)
            .bind(o.authority.map(|a| a.code()))
            .bind(o.keeps_cases)
            .execute(&self.pool)
            .await?;
        }
        Ok(())
    }

    /// Retires every organisation that is not in the registry `orgs` (the serving processes'
    /// configuration), and brings back those that are: a retired organisation's tokens stop
    /// working and no token is created for it. Returns the organisations retired now. Only a
    /// serving process calls this at start-up: a command run with another configuration
    /// neither retires nor brings back anyone.
    pub async fn retire_organisations_not_in(
        &self,
        orgs: &[relais_domain::reference::Organisation],
    ) -> Result<Vec<String>, DbError> {
        let ids: Vec<&str> = orgs.iter().map(|o| o.id.as_str()).collect();
        sqlx::query("UPDATE organisations SET retired_at = NULL WHERE retired_at IS NOT NULL AND id = ANY($1)")
            .bind(&ids)
            .execute(&self.pool)
            .await?;
        let retired: Vec<String> = sqlx::query_scalar(
            "UPDATE organisations SET retired_at = now() WHERE retired_at IS NULL AND NOT (id = ANY($1)) RETURNING id",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        Ok(retired)
    }
}

async fn create_database_if_missing(options: &PgConnectOptions) -> Result<(), DbError> {
    let Some(name) = options.get_database().map(str::to_owned) else { return Ok(()) };
    let mut conn = connect_once(&options.clone().database("postgres")).await?;
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(&name)
        .fetch_one(&mut conn)
        .await?;
    if !exists {
        // Identifiers cannot be bound; quote it.
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        match sqlx::query(&format!("CREATE DATABASE {quoted}")).execute(&mut conn).await {
            Ok(_) => {}
            // Another process created it in between.
            Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
