//! Building and running the application: one function that `relais serve`, the demo and the
//! tests all call.

use crate::config::Settings;
use crate::config::{ADMISSION_KEY, CLIENT_REF_PEPPER, SHARED_SECRETS};
use anyhow::Context as _;
use async_nats::jetstream;
use relais_eventlog::EventLog;
use relais_gateway::{AppState, GatewaySettings};
use relais_projections::db::SharedSecret;
use relais_projections::{Database, KeyStore, Projector, ProjectorSettings, TokenStore};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Which parts run in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ServeRole {
    /// Gateway and projection workers.
    All,
    /// The HTTP gateway only.
    Gateway,
    /// The projection workers only.
    Projector,
}

/// Connections every part needs: NATS (version checked, stream ensured) and PostgreSQL
/// (migrated, registry synced).
#[derive(Clone)]
pub struct Infra {
    /// The database.
    pub db: Database,
    /// NATS.
    pub client: async_nats::Client,
    /// JetStream.
    pub js: jetstream::Context,
    /// The event stream.
    pub stream: jetstream::stream::Stream,
    /// Client data keys.
    pub keys: KeyStore,
    /// Tokens.
    pub tokens: TokenStore,
    /// The audit stream of signed checkpoints.
    pub audit_stream: jetstream::stream::Stream,
}

impl Infra {
    /// Connects to NATS and PostgreSQL and prepares the streams, for a command that needs none
    /// of the shared secrets: those it was given are checked against the fingerprints the
    /// database holds. The database must be a Relais database at this binary's schema version:
    /// a command run with a mistyped `RELAIS_DATABASE_URL` creates nothing and stops, where it
    /// would otherwise report on an empty database as if it were the deployment's (`relais
    /// serve` creates and migrates).
    pub async fn connect(settings: &Settings, name: &str) -> anyhow::Result<Self> {
        Self::connect_as(settings, name, &[], DatabaseUse::Existing).await
    }

    /// As [`Infra::connect`], for a command that needs the shared secrets `needs` (their
    /// variables): one it generated for want of the variable is refused where the database
    /// holds a fingerprint.
    pub async fn connect_needing(settings: &Settings, name: &str, needs: &[&str]) -> anyhow::Result<Self> {
        Self::connect_as(settings, name, needs, DatabaseUse::Existing).await
    }

    /// As [`Infra::connect_needing`], for a command that may be the first on a new database
    /// (`keys restore` after the loss of the database): it creates and migrates it.
    pub async fn connect_creating(settings: &Settings, name: &str, needs: &[&str]) -> anyhow::Result<Self> {
        Self::connect_as(settings, name, needs, DatabaseUse::Create).await
    }

    /// As [`Infra::connect`], for a serving process, which needs every shared secret, creates
    /// and migrates the database, and records the fingerprints of the secrets it was given on
    /// a new database.
    pub async fn connect_serving(settings: &Settings, name: &str) -> anyhow::Result<Self> {
        Self::connect_as(settings, name, &SHARED_SECRETS, DatabaseUse::Serve).await
    }

    /// As [`Infra::connect_needing`], for a command that only reads (`status`, `replay`,
    /// `verify`, `case show`): it creates nothing. A database that does not exist or holds no
    /// Relais data, or a server without the stream, is an error naming the variable to check,
    /// where the command would otherwise report an empty history as a sound one.
    pub async fn connect_reading(settings: &Settings, name: &str, needs: &[&str]) -> anyhow::Result<Self> {
        let client = relais_eventlog::connect(&settings.nats_url, name).await?;
        let db = Database::connect_existing(&settings.database_url, settings.db_connections).await?;
        db.check_shared_secrets(&settings.shared_secrets(needs), false).await?;
        let js = jetstream::new(client.clone());
        // Reported, not refused: an auditor's `verify` must read a log someone tampered with.
        let stream = unfit_warning(relais_eventlog::open_stream(&js, &settings.stream).await?);
        let audit_stream = unfit_warning(relais_eventlog::audit::open_audit_stream(&js, &settings.audit.stream).await?);
        let keys = KeyStore::new(db.pool().clone(), settings.kek.clone());
        let tokens = TokenStore::new(db.pool().clone());
        Ok(Self { db, client, js, stream, keys, tokens, audit_stream })
    }

    async fn connect_as(settings: &Settings, name: &str, needs: &[&str], using: DatabaseUse) -> anyhow::Result<Self> {
        let serving = using == DatabaseUse::Serve;
        let client = relais_eventlog::connect(&settings.nats_url, name).await?;
        let db = match using {
            DatabaseUse::Existing => {
                Database::connect_existing(&settings.database_url, settings.db_connections).await?
            }
            DatabaseUse::Create | DatabaseUse::Serve => {
                Database::connect_and_migrate_with(&settings.database_url, settings.db_connections)
                    .await
                    .context("cannot use the PostgreSQL database (RELAIS_DATABASE_URL)")?
            }
        };
        // Before anything is created or changed: a process with another secret does nothing.
        db.check_shared_secrets(&settings.shared_secrets(needs), serving).await?;
        let js = jetstream::new(client.clone());
        // A process that appends or builds on a stream refuses one that could lose history.
        let stream = relais_eventlog::ensure_stream(&js, &settings.stream).await?;
        // Each organisation's own durable consumer, which its NATS account may read (and no
        // other): docs/DEPLOYMENT.md.
        let orgs: Vec<relais_domain::OrgId> = settings.organisations.iter().map(|o| o.id.clone()).collect();
        relais_eventlog::broker::ensure_org_consumers(&stream, &orgs).await?;
        let audit_stream = relais_eventlog::audit::ensure_audit_stream(&js, &settings.audit.stream).await?;
        db.sync_organisations(&settings.organisations).await?;
        let keys = KeyStore::new(db.pool().clone(), settings.kek.clone());
        let tokens = TokenStore::new(db.pool().clone());
        Ok(Self { db, client, js, stream, keys, tokens, audit_stream })
    }

    /// The chain worker's settings, when this process has the signing key.
    pub fn chain_settings(&self, settings: &Settings) -> Option<relais_projections::audit::ChainSettings> {
        Some(relais_projections::audit::ChainSettings {
            signing_key: settings.audit.signing_key.clone()?,
            stream_name: settings.stream.name.clone(),
            every_events: settings.audit.checkpoint_every_events,
            every: settings.audit.checkpoint_every,
            js: self.js.clone(),
        })
    }

    /// The event log's append side, tagging every message with the gateway's admission tag.
    pub fn event_log(&self, settings: &Settings) -> EventLog {
        gateway_event_log(self.client.clone(), &settings.audit.admission_key)
    }

    /// Connects to PostgreSQL only, to a Relais database that exists at this binary's schema
    /// version, creating and migrating nothing (for commands that need no NATS and create
    /// nothing, such as listing tokens).
    pub async fn existing_database(settings: &Settings) -> anyhow::Result<Database> {
        Ok(Database::connect_existing(&settings.database_url, 4).await?)
    }

    /// Connects to PostgreSQL only, creating and migrating the database (for `token create`,
    /// which may be the first act on a new deployment's database).
    pub async fn database(settings: &Settings) -> anyhow::Result<Database> {
        let db = Database::connect_and_migrate(&settings.database_url)
            .await
            .context("cannot use the PostgreSQL database (RELAIS_DATABASE_URL)")?;
        db.sync_organisations(&settings.organisations).await?;
        Ok(db)
    }
}

/// What a process may do to the database it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DatabaseUse {
    /// Use a Relais database at this binary's schema version; create and migrate nothing.
    Existing,
    /// Create and migrate it if needed.
    Create,
    /// Create and migrate it if needed, and record the secrets' fingerprints on a new one.
    Serve,
}

/// The stream, after a warning on stderr of what makes it unfit to keep history, if anything.
fn unfit_warning(found: relais_eventlog::FoundStream) -> jetstream::stream::Stream {
    if !found.problems.is_empty() {
        let name = &found.stream.cached_info().config.name;
        let problems = found.problems.join(", ");
        tracing::warn!(stream = %name, %problems, "the stream does not protect its history");
        eprintln!("warning: stream {name} does not protect its history: {problems}");
    }
    found.stream
}

/// The event log's append side over `client`, tagging every message with the gateway's
/// admission tag under `admission`: how Relais itself appends.
pub fn gateway_event_log(client: async_nats::Client, admission: &relais_audit::AdmissionKey) -> EventLog {
    let admission = admission.clone();
    EventLog::new(client)
        .with_admission(Arc::new(move |subject: &str, payload: &[u8]| admission.gateway_tag(subject, payload)))
}

impl Settings {
    /// The secrets every process of a deployment shares, each marked as `needed` when its
    /// variable is in `needs`: the validator judges erasures by the admission key's tags, and
    /// the key store finds a client's key by the pepper.
    pub fn shared_secrets(&self, needs: &[&str]) -> Vec<SharedSecret> {
        [(ADMISSION_KEY, self.audit.admission_key.fingerprint()), (CLIENT_REF_PEPPER, self.kek.pepper_fingerprint())]
            .into_iter()
            .map(|(variable, fingerprint)| SharedSecret {
                variable,
                fingerprint,
                generated: self.generated_secrets.contains(&variable),
                needed: needs.contains(&variable),
            })
            .collect()
    }

    /// The settings of the projection workers.
    pub fn projector_settings(&self) -> ProjectorSettings {
        ProjectorSettings {
            batch_size: self.projection_batch,
            consumer_prefix: self.consumer_prefix.clone(),
            validator_states: self.validator_states,
            clock: self.clock.clone(),
            tick_interval: self.clock_tick,
            monitor: self.monitor.clone(),
            admission: self.audit.admission_key.clone(),
        }
    }
}

/// A running Relais: gateway and/or projection workers.
pub struct Application {
    port: Option<u16>,
    shutdown: CancellationToken,
    tasks: tokio::task::JoinSet<anyhow::Result<()>>,
    infra: Infra,
}

impl Application {
    /// Connects, prepares and starts the parts of `role`. The gateway binds `settings.listen`
    /// (port 0 picks a free port: see [`Application::port`]).
    pub async fn build(settings: &Settings, role: ServeRole) -> anyhow::Result<Self> {
        let infra = Infra::connect_serving(settings, &format!("relais-{role:?}").to_lowercase()).await?;
        // A chain worker signing with a development key, generated for want of the variable,
        // would leave checkpoints no verifier trusts in both append-only stores: refused where
        // the deployment's key has signed before.
        if matches!(role, ServeRole::All | ServeRole::Projector)
            && settings.generated_secrets.contains(&crate::config::AUDIT_SIGNING_KEY)
            && let Some(theirs) = relais_projections::audit::checkpoints::signed_by_another_key(
                infra.db.pool(),
                &settings.audit.public_key.key_id(),
            )
            .await?
        {
            anyhow::bail!(
                "RELAIS_AUDIT_SIGNING_KEY is not set, and this database's checkpoints are signed by key {theirs}: set it to \
                 the deployment's (the chain would sign with the development key of RELAIS_STATE_DIR)"
            );
        }
        // The gateway's configuration is the registry its tokens answer to: an organisation
        // taken out of it is retired (the projector, which answers no token, leaves it alone).
        if matches!(role, ServeRole::All | ServeRole::Gateway) {
            for org in infra.db.retire_organisations_not_in(&settings.organisations).await? {
                tracing::warn!(org = %org, "organisation no longer in the registry: retired, its tokens stop working");
            }
        }
        let shutdown = CancellationToken::new();
        let mut tasks = tokio::task::JoinSet::new();
        let mut port = None;
        if matches!(role, ServeRole::All | ServeRole::Gateway) {
            let listener = tokio::net::TcpListener::bind(settings.listen)
                .await
                .with_context(|| format!("cannot listen on {}", settings.listen))?;
            port = Some(listener.local_addr()?.port());
            let state = AppState {
                db: infra.db.clone(),
                tokens: infra.tokens.clone(),
                keys: infra.keys.clone(),
                log: infra.event_log(settings),
                settings: Arc::new(GatewaySettings { clock: settings.clock.clone(), ..GatewaySettings::default() }),
                stream: infra.stream.clone(),
                audit: relais_gateway::AuditState {
                    stream: infra.stream.clone(),
                    public_key: settings.audit.public_key,
                    retired_public_keys: settings.audit.retired_public_keys.clone(),
                },
            };
            let app = relais_gateway::router(state);
            let stop = shutdown.clone();
            tasks.spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
                    .context("gateway stopped")
            });
        }
        if matches!(role, ServeRole::All | ServeRole::Projector) {
            let mut projector = Projector::new(
                infra.db.clone(),
                infra.keys.clone(),
                infra.stream.clone(),
                settings.projector_settings(),
            );
            match infra.chain_settings(settings) {
                Some(chain) => projector = projector.with_chain(chain),
                None => tracing::warn!("no RELAIS_AUDIT_SIGNING_KEY: the audit chain does not run in this process"),
            }
            let stop = shutdown.clone();
            tasks.spawn(async move {
                projector.run(stop).await;
                Ok(())
            });
        }
        // The retention sweep appends erasure events, so it runs where the log may be appended
        // to: the gateway (the projector's NATS user may not publish events, and its messages
        // would carry no admission tag).
        if matches!(role, ServeRole::All | ServeRole::Gateway)
            && let Some(every) = settings.retention.sweep_every
        {
            let eraser = relais_projections::erasure::Eraser::new(
                infra.keys.clone(),
                infra.event_log(settings),
                infra.db.pool().clone(),
            );
            let sweep = relais_projections::retention::run_periodic(
                eraser,
                infra.db.pool().clone(),
                infra.stream.clone(),
                settings.retention.policy.clone(),
                every,
                shutdown.clone(),
            );
            tasks.spawn(async move {
                sweep.await;
                Ok(())
            });
        }
        Ok(Self { port, shutdown, tasks, infra })
    }

    /// The gateway's port, when this process runs the gateway.
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// Cancelling this token stops the application gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// The connections of the application.
    pub fn infra(&self) -> &Infra {
        &self.infra
    }

    /// Runs until stopped (shutdown token, SIGINT or SIGTERM) or until a part fails.
    pub async fn run_until_stopped(mut self) -> anyhow::Result<()> {
        let stop = self.shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            stop.cancel();
        });
        let mut result = Ok(());
        while let Some(done) = self.tasks.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "a part of relais stopped");
                    result = Err(e);
                    self.shutdown.cancel();
                }
                Err(e) => {
                    result = Err(anyhow::anyhow!("a part of relais panicked: {e}"));
                    self.shutdown.cancel();
                }
            }
        }
        result
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}
