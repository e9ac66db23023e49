//! The projection workers.
//!
//! The first worker, the **validator** (`ledger`), reads every message in order and decides
//! whether it is an event the views may apply: it decodes it, checks that its subject and
//! payload agree, that personal fields are sealed with a key that opens them, that its id is
//! new (the idempotency ledger, beyond the broker's window) and that it keeps its aggregate's
//! rules. A message that fails is quarantined with its sequence and reason; none is dropped
//! silently and none stops the worker.
//!
//! The **views** share one worker (`views`): one durable consumer, and one transaction per
//! batch in which every view applies the batch and moves its own checkpoint, so a batch is
//! read and opened once, committed once, and all views show the same moment. The worker
//! applies a batch only once the validator has judged it (its checkpoint is at least the
//! batch's last sequence) and skips quarantined sequences, so every view applies exactly the
//! same events on every run.
//!
//! The views' transaction first locks their checkpoint rows and checks that they still hold
//! the sequences the worker resumed from: `relais rebuild` swaps in rebuilt tables and moves the
//! checkpoint under a running worker, which then restarts from the new checkpoint.
//!
//! Views that depend on the clock (the continuity monitor) are also called every
//! [`ProjectorSettings::tick_interval`] without a new event, with [`ProjectorSettings::clock`].

use crate::clock::Clock;
use crate::db::Database;
use crate::keys::{KeyLookup, KeyStore};
use async_nats::jetstream::stream::Stream;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use relais_domain::envelope::{Envelope, StoredEventV1};
use relais_domain::{StoredEvent, seal};
use relais_eventlog::reader::{self, LogMessage};
use relais_eventlog::subjects;
use sqlx::{PgConnection, PgPool};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

/// Name of the validator's checkpoint.
pub const VALIDATOR: &str = "ledger";

/// Name of the views' worker (its durable consumer); each view keeps a checkpoint of its own.
pub const VIEWS: &str = "views";

/// One event as a view receives it: decoded, personal fields opened when the key exists.
#[derive(Debug, Clone)]
pub struct Applied {
    /// Stream sequence.
    pub seq: u64,
    /// The event.
    pub envelope: Envelope,
    /// The client's data key id, when the event has sealed personal fields.
    pub key_id: Option<Uuid>,
}

/// A view built from the log.
pub trait View: Send + Sync + 'static {
    /// The view's name: its checkpoint and durable consumer are named after it.
    fn name(&self) -> &'static str;
    /// Applies a batch of events, in order, inside the caller's transaction.
    fn apply<'a>(&'a self, tx: &'a mut PgConnection, events: &'a [Applied]) -> BoxFuture<'a, Result<(), sqlx::Error>>;

    /// The tables the view writes: `relais rebuild` rebuilds them together into copies and
    /// swaps them in. A view with none cannot be rebuilt.
    fn tables(&self) -> &'static [&'static str] {
        &[]
    }

    /// Indexes of [`View::tables`] that only readers use, never the view's own statements: a
    /// rebuild builds each once its tables are loaded, in one sort, instead of keeping it up
    /// to date row by row. None may be unique (a constraint the view's writes rely on).
    fn reader_indexes(&self) -> &'static [&'static str] {
        &[]
    }

    /// True if what the view holds depends on the clock: then [`View::on_clock`] is called
    /// after every batch and every tick.
    fn uses_clock(&self) -> bool {
        false
    }

    /// Brings what depends on the time up to `now`, inside the caller's transaction.
    fn on_clock<'a>(
        &'a self,
        _tx: &'a mut PgConnection,
        _now: DateTime<Utc>,
        _why: ClockCall,
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async { Ok(()) })
    }
}

/// Why [`View::on_clock`] is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockCall {
    /// Right after a batch, in its transaction: what the batch touched.
    AfterBatch,
    /// A tick, without a new event: everything. `caught_up` is true when the view has applied
    /// every event of the stream, so that forgetting by the clock cannot overtake events still
    /// to be applied.
    Tick {
        /// The view has applied the whole stream.
        caught_up: bool,
    },
}

/// Most events a projection worker applies in one transaction, by default. Batches fill up
/// while a worker catches up (ADR-9), and the projector holds a few of them: at 1,000,000
/// events its peak RSS was 60.9 MiB with 500 and 55.6 MiB with 300 (bound: 64 MiB), catching
/// up 115 and 132 s after the last publish (docs/BENCHMARKS.md).
pub const DEFAULT_BATCH_SIZE: usize = 300;

/// Settings of the projection workers.
#[derive(Debug, Clone)]
pub struct ProjectorSettings {
    /// Most events applied in one transaction.
    pub batch_size: usize,
    /// Prefix of the durable consumers' names, so that two deployments (or tests) projecting
    /// the same stream into different databases do not share consumers.
    pub consumer_prefix: String,
    /// Aggregate states the validator keeps per generation (see [`crate::rules::RuleBook`]).
    pub validator_states: usize,
    /// The clock of the views that depend on time.
    pub clock: Arc<dyn Clock>,
    /// How often views that depend on time are brought up to the clock without a new event.
    pub tick_interval: Duration,
    /// Thresholds of the continuity monitor.
    pub monitor: crate::monitor::MonitorSettings,
    /// The deployment's admission key: the validator accepts an erasure event only with
    /// Relais' own (gateway) admission tag, as a key store restore does.
    pub admission: relais_audit::AdmissionKey,
}

/// Why a batch could not be applied; the worker logs it, waits and resumes from its checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// PostgreSQL failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// A view's statements failed.
    #[error("view {view}: {source}")]
    View {
        /// The view.
        view: &'static str,
        /// What PostgreSQL answered.
        #[source]
        source: sqlx::Error,
    },
    /// The key store failed.
    #[error("key store: {0}")]
    Keys(#[from] crate::keys::KeyError),
    /// Reading the log failed.
    #[error("event log: {0}")]
    Log(#[from] reader::ReadError),
    /// The audit chain in PostgreSQL is not what the chain worker left there.
    #[error("audit chain: {0}")]
    Chain(String),
    /// Shut down while waiting.
    #[error("shutting down")]
    Shutdown,
    /// Ledger rows the validator's statement cannot see run after run: the ledger breaks its
    /// invariant (an id at a sequence whose message holds another).
    #[error("{0} ledger ids stay unseen by the validator's statement")]
    LedgerUnseen(usize),
    /// The checkpoint moved under the worker (a rebuild was swapped in): it restarts from the
    /// new checkpoint.
    #[error("checkpoint moved from {expected} to {found}")]
    CheckpointMoved {
        /// Where the worker was.
        expected: u64,
        /// Where the checkpoint now is.
        found: u64,
    },
    /// The validator's checkpoint is behind what this worker was told it judged (PostgreSQL
    /// lost its last commits in a crash, ADR-8): the worker restarts and waits for the
    /// validator to judge those events again.
    #[error("the validator has judged up to {judged}, not {wanted}")]
    NotJudged {
        /// What the batch needs judged.
        wanted: u64,
        /// Where the validator's checkpoint is.
        judged: u64,
    },
    /// The validator's checkpoint is not where the validator left it (PostgreSQL lost its
    /// last commits in a crash): it restarts from its checkpoint, judging those events again.
    #[error("the validator's checkpoint is not at {expected}")]
    ValidatorRewound {
        /// Where the validator left it.
        expected: u64,
    },
}

/// The longest subject a quarantine row keeps of a message whose subject is not Relais' own.
const MAX_STORED_SUBJECT: usize = 256;

/// A message's subject as the quarantine can store it. nats-server checks subjects only for
/// clients that ask it to, so an organisation may publish on a subject of its own holding a
/// NUL (which PostgreSQL's text refuses) or thousands of characters (beyond what a B-tree
/// index entry holds): stored as it came, it would fail the validator's statement batch after
/// batch. A subject that is not an event subject is kept escaped (`\0`) and cut, with `…`;
/// neither can appear in an event subject, so no reader takes it for a case's.
pub(crate) fn storable_subject(subject: &str) -> String {
    if subjects::parse_event_subject(subject).is_some() {
        return subject.to_owned();
    }
    let mut escaped: String = subject.escape_debug().collect();
    if escaped.len() > MAX_STORED_SUBJECT {
        let mut cut = MAX_STORED_SUBJECT;
        while !escaped.is_char_boundary(cut) {
            cut -= 1;
        }
        escaped.truncate(cut);
        escaped.push('…');
    }
    escaped
}

/// The quarantine reason of an event the views cannot store.
pub const UNPROJECTABLE: &str = "unprojectable";

/// The view and PostgreSQL's code when `e` is a view refusing a value itself (a data
/// exception such as a day or number out of range, a value too large for an index, a NULL or
/// a check the schema forbids): what the event carries, not a passing failure nor a broken
/// invariant (a duplicate key stays an error, restarting the worker).
fn unprojectable(e: &WorkerError) -> Option<(&'static str, String)> {
    let WorkerError::View { view, source: sqlx::Error::Database(d) } = e else { return None };
    let code = d.code()?;
    if !(code.starts_with("22") || code.starts_with("54") || code == "23502" || code == "23514") {
        return None;
    }
    // The code, table and constraint, never PostgreSQL's message: it quotes the value it
    // refused, which may be an opened personal field, and the quarantine is never erased.
    let mut why = format!("SQLSTATE {code}");
    if let Some(table) = d.table() {
        why.push_str(&format!(", table {table}"));
    }
    if let Some(constraint) = d.constraint() {
        why.push_str(&format!(", constraint {constraint}"));
    }
    Some((*view, why))
}

/// Quarantines the message `m` that `view` cannot store, with the reason, and moves every
/// view's checkpoint past it: the views go on, and every one of them (a rebuild too) leaves
/// the event out.
async fn quarantine_unprojectable(
    pool: &PgPool,
    names: &[&'static str],
    done: &[u64],
    m: &LogMessage,
    view: &str,
    why: &str,
) -> Result<Vec<u64>, WorkerError> {
    let event_id = StoredEvent::decode(&m.payload).ok().map(|e| e.into_v1().id);
    let detail = format!("the view {view} cannot store it: {why}");
    tracing::error!(seq = m.sequence, subject = %m.subject, %detail, "event quarantined: the views cannot store it");
    let mut tx = begin_projection(pool).await?;
    claim_judged_checkpoints(&mut tx, names, done, m.sequence).await?;
    sqlx::query(
        "INSERT INTO quarantine (seq, subject, reason, detail, payload, event_id) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (seq) DO NOTHING",
    )
    .bind(m.sequence as i64)
    .bind(storable_subject(&m.subject))
    .bind(UNPROJECTABLE)
    .bind(&detail)
    .bind(m.payload.as_ref())
    .bind(event_id)
    .execute(&mut *tx)
    .await?;
    let moved: Vec<u64> = done.iter().map(|d| (*d).max(m.sequence)).collect();
    set_checkpoints(&mut tx, names, &moved).await?;
    tx.commit().await?;
    Ok(moved)
}

/// What the validator of this process has judged, as the views' worker waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Judged {
    /// The validator's checkpoint: every sequence up to here is judged.
    upto: u64,
    /// Where this run of the validator started: it knows the verdicts beyond, not before.
    since: u64,
    /// The last sequence this run quarantined.
    last_quarantined: Option<u64>,
}

impl Judged {
    /// Whether this run judged every sequence from `first` on and quarantined none of them,
    /// so the views need not look the quarantine up (one round trip less per batch).
    fn none_quarantined_from(&self, first: u64) -> bool {
        first > self.since && self.last_quarantined.is_none_or(|q| q < first)
    }
}

/// The projection workers of one process.
#[derive(Clone)]
pub struct Projector {
    db: Database,
    keys: KeyStore,
    stream: Stream,
    settings: ProjectorSettings,
    views: Vec<Arc<dyn View>>,
    chain: Option<Arc<crate::audit::ChainSettings>>,
}

/// Reads a projection's checkpoint (0 when it never ran).
pub async fn checkpoint(pool: &PgPool, name: &str) -> Result<u64, sqlx::Error> {
    let seq: Option<i64> = sqlx::query_scalar("SELECT seq FROM projection_checkpoints WHERE projection = $1")
        .bind(name)
        .fetch_optional(pool)
        .await?;
    Ok(seq.unwrap_or(0) as u64)
}

/// Locks a projection's checkpoint row for the rest of the transaction and checks that it
/// still holds `expected`: the first statement of every view transaction, and of a rebuild's
/// swap, so the two never interleave.
pub(crate) async fn claim_checkpoint(tx: &mut PgConnection, name: &str, expected: u64) -> Result<(), WorkerError> {
    claim_checkpoints(tx, &[name], &[expected]).await
}

/// [`claim_checkpoint`] for several projections at once, in one order (no deadlock with a
/// rebuild's swap, which claims one).
pub(crate) async fn claim_checkpoints(
    tx: &mut PgConnection,
    names: &[&str],
    expected: &[u64],
) -> Result<(), WorkerError> {
    claim_judged_checkpoints(tx, names, expected, 0).await
}

/// [`claim_checkpoints`], checking in the same round trip that the validator's checkpoint has
/// reached `judged`: the views apply only what the validator's committed verdicts cover, even
/// when PostgreSQL lost the validator's last commits in a crash while the worker was told
/// otherwise.
pub(crate) async fn claim_judged_checkpoints(
    tx: &mut PgConnection,
    names: &[&str],
    expected: &[u64],
    judged: u64,
) -> Result<(), WorkerError> {
    const LOCK: &str = "SELECT p.projection, p.seq,
           coalesce((SELECT v.seq FROM projection_checkpoints v WHERE v.projection = $2), 0) AS judged
         FROM projection_checkpoints p WHERE p.projection = ANY($1) ORDER BY p.projection FOR UPDATE OF p";
    let mut found: Vec<(String, i64, i64)> =
        sqlx::query_as(LOCK).bind(names).bind(VALIDATOR).fetch_all(&mut *tx).await?;
    // A projection's first batch has no row to lock yet: create the missing rows, then lock all
    // (once per projection's life, so the usual batch pays one round trip here).
    if found.len() < names.len() {
        sqlx::query(
            "INSERT INTO projection_checkpoints (projection, seq) SELECT unnest($1::text[]), 0 ON CONFLICT DO NOTHING",
        )
        .bind(names)
        .execute(&mut *tx)
        .await?;
        found = sqlx::query_as(LOCK).bind(names).bind(VALIDATOR).fetch_all(&mut *tx).await?;
    }
    if let Some((_, _, at)) = found.first()
        && (*at as u64) < judged
    {
        return Err(WorkerError::NotJudged { wanted: judged, judged: *at as u64 });
    }
    for (name, want) in names.iter().zip(expected) {
        let got = found.iter().find(|(n, _, _)| n == name).map(|(_, s, _)| *s as u64).unwrap_or(0);
        if got != *want {
            return Err(WorkerError::CheckpointMoved { expected: *want, found: got });
        }
    }
    Ok(())
}

/// Moves the checkpoints of several projections and announces each move on
/// [`CHECKPOINT_CHANNEL`], in one round trip (delivered only if the transaction commits).
pub(crate) async fn set_checkpoints(tx: &mut PgConnection, names: &[&str], seqs: &[u64]) -> Result<(), sqlx::Error> {
    let seqs: Vec<i64> = seqs.iter().map(|s| *s as i64).collect();
    sqlx::query(
        "WITH moved AS (
             INSERT INTO projection_checkpoints (projection, seq) SELECT * FROM UNNEST($1::text[], $2::int8[])
             ON CONFLICT (projection) DO UPDATE SET seq = EXCLUDED.seq, updated_at = now()
             WHERE projection_checkpoints.seq IS DISTINCT FROM EXCLUDED.seq
             RETURNING projection, seq)
         SELECT pg_notify($3, projection || ' ' || seq) FROM moved",
    )
    .bind(names)
    .bind(&seqs)
    .bind(CHECKPOINT_CHANNEL)
    .execute(tx)
    .await?;
    Ok(())
}

/// The tail of a statement that writes a batch's rows and moves a checkpoint in one implicit
/// transaction, one round trip where `BEGIN`, the rows, the checkpoint and `COMMIT` were four:
/// the checkpoint row `$1` moved to `$2` and announced on `$3` (as [`set_checkpoints`] does),
/// the statement's `WITH` clauses before it. `flush` turns the WAL flush off for this
/// transaction only (ADR-8), as `SET LOCAL` does in [`begin_projection`]; it is joined in
/// where its value is read, so that it runs.
macro_rules! unflushed_batch_with_checkpoint {
    ($($cte:expr),+) => {
        $crate::worker::unflushed_batch_with_checkpoint!(
            @when "projection_checkpoints.seq IS DISTINCT FROM EXCLUDED.seq"; $($cte),+
        )
    };
    (@when $when:literal; $($cte:expr),+) => {
        concat!(
            "WITH flush AS (SELECT set_config('synchronous_commit', 'off', true) AS off), ",
            $($cte, ", ",)+
            "moved AS (
               INSERT INTO projection_checkpoints (projection, seq) VALUES ($1, $2)
               ON CONFLICT (projection) DO UPDATE SET seq = EXCLUDED.seq, updated_at = now()
               WHERE ", $when, "
               RETURNING projection, seq)
             SELECT pg_notify($3, m.projection || ' ' || m.seq), f.off FROM moved m, flush f"
        )
    };
    // `from`: the checkpoint moves only from there (0: it may be created); elsewhere, or
    // missing when it should be there, nothing moves. `raced`: a CTE of ids; while it holds
    // any, nothing moves either. The statement returns one row: how many checkpoints moved (0
    // or 1), and the ids.
    (@from $from:literal, @raced $raced:literal; $($cte:expr),+) => {
        concat!(
            "WITH flush AS (SELECT set_config('synchronous_commit', 'off', true) AS off), ",
            $($cte, ", ",)+
            "created AS (
               INSERT INTO projection_checkpoints (projection, seq) SELECT $1, $2 WHERE ", $from, " = 0
               AND NOT EXISTS (SELECT 1 FROM ", $raced, ")
               ON CONFLICT (projection) DO UPDATE SET seq = EXCLUDED.seq, updated_at = now()
               WHERE projection_checkpoints.seq = 0
               RETURNING projection, seq),
             advanced AS (
               UPDATE projection_checkpoints SET seq = $2, updated_at = now()
               WHERE projection = $1 AND seq = ", $from, " AND ", $from, " <> 0
               AND NOT EXISTS (SELECT 1 FROM ", $raced, ")
               RETURNING projection, seq),
             moved AS (SELECT * FROM created UNION ALL SELECT * FROM advanced),
             notified AS (SELECT pg_notify($3, m.projection || ' ' || m.seq), f.off FROM moved m, flush f)
             SELECT (SELECT count(*) FROM notified) AS moved, ARRAY(SELECT event_id FROM ", $raced, ") AS raced"
        )
    };
}

pub(crate) use unflushed_batch_with_checkpoint;

/// The PostgreSQL channel on which every checkpoint move is announced, as
/// `<projection> <sequence>`, when its transaction commits: dashboards and benchmarks learn
/// that a view changed without polling.
pub const CHECKPOINT_CHANNEL: &str = "relais_checkpoints";

pub(crate) async fn set_checkpoint(tx: &mut PgConnection, name: &str, seq: u64) -> Result<(), sqlx::Error> {
    set_checkpoints(tx, &[name], &[seq]).await
}

const BEGIN_PROJECTION: &str =
    "BEGIN; SET LOCAL synchronous_commit = off; SET LOCAL plan_cache_mode = force_generic_plan";

/// Begins a projection transaction: view changes and checkpoint commit together, without
/// waiting for the WAL flush (`synchronous_commit = off`). A projection is derived from the
/// log, so a commit lost in a crash loses the change and its checkpoint together (PostgreSQL
/// flushes commits in WAL order) and the worker applies the same events again: the view of a
/// clean run, for one disk flush less per batch.
///
/// Its statements run with generic plans (`plan_cache_mode = force_generic_plan`): they are
/// the same few prepared statements batch after batch, over arrays of keys, and planning
/// them again for each batch cost more than running them (about a fifth of a small batch's
/// time, docs/BENCHMARKS.md). A statement that a generic plan serves badly (`$1 IS NULL OR`)
/// is written as one statement per case instead.
pub(crate) async fn begin_projection(pool: &PgPool) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
    // One round trip: the settings travel with the BEGIN.
    pool.begin_with(BEGIN_PROJECTION).await
}

/// The default views of Relais, with default settings.
pub fn default_views() -> Vec<Arc<dyn View>> {
    views_monitoring(&crate::monitor::MonitorSettings::default())
}

/// The views of Relais, configured by `settings`.
pub fn views(settings: &ProjectorSettings) -> Vec<Arc<dyn View>> {
    views_monitoring(&settings.monitor)
}

fn views_monitoring(monitor: &crate::monitor::MonitorSettings) -> Vec<Arc<dyn View>> {
    vec![
        Arc::new(crate::caseload::Caseload),
        Arc::new(crate::client_events::ClientEvents),
        Arc::new(crate::timeline::Timeline),
        Arc::new(crate::referrals::Referrals),
        Arc::new(crate::activities::Activities),
        Arc::new(crate::monitor::Monitor::new(monitor.clone())),
        Arc::new(crate::statistics::Statistics),
    ]
}

/// The advisory lock a running projector holds: one per database ("relais_p").
pub const PROJECTOR_LOCK: i64 = 0x7265_6c61_6973_5f70;
/// How long the validator waits for events before it checks its checkpoint is where it left it.
const VALIDATOR_IDLE_CHECK: Duration = Duration::from_secs(2);
/// How often a running projector checks that it still holds its lock.
const LOCK_CHECK: Duration = Duration::from_secs(5);

/// The view of that name, configured by `settings`.
pub fn view_named(settings: &ProjectorSettings, name: &str) -> Option<Arc<dyn View>> {
    views(settings).into_iter().find(|v| v.name() == name)
}

impl Projector {
    /// Projection workers over the stream, with the default views.
    pub fn new(db: Database, keys: KeyStore, stream: Stream, settings: ProjectorSettings) -> Self {
        let views = views(&settings);
        Self { db, keys, stream, settings, views, chain: None }
    }

    /// The same workers with `views` instead of the default views (tests, and a deployment
    /// that projects a subset).
    pub fn with_views(mut self, views: Vec<Arc<dyn View>>) -> Self {
        self.views = views;
        self
    }

    /// Also runs the audit chain worker ([`crate::audit::chain`]) with these settings.
    pub fn with_chain(mut self, chain: crate::audit::ChainSettings) -> Self {
        self.chain = Some(Arc::new(chain));
        self
    }

    /// Runs the validator and every view until `shutdown`; a failing worker is restarted from
    /// its checkpoint after a pause, never taking the others down. One projector runs per
    /// database: a second one (a rolling deploy, a second `serve`) waits for the first to stop,
    /// since two would share the durable consumers and each see part of the log.
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            let Some(mut lock) = self.take_lock(&shutdown).await else { return };
            let round = shutdown.child_token();
            let workers = self.clone().run_workers(round.clone());
            tokio::pin!(workers);
            loop {
                tokio::select! {
                    _ = &mut workers => return,
                    _ = tokio::time::sleep(LOCK_CHECK) => {
                        if sqlx::query("SELECT 1").execute(&mut lock).await.is_ok() {
                            continue;
                        }
                        // The lock went with its connection: another projector may take it.
                        tracing::error!("the projector's database lock was lost: its workers stop, then it waits for the lock");
                        round.cancel();
                        (&mut workers).await;
                        break;
                    }
                }
            }
        }
    }

    /// Holds the projector lock on a connection of its own (`None` on shutdown), waiting while
    /// another projector holds it.
    async fn take_lock(&self, shutdown: &CancellationToken) -> Option<sqlx::PgConnection> {
        let mut told = false;
        loop {
            let attempt = async {
                let mut conn = self.db.pool().acquire().await?.detach();
                let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(PROJECTOR_LOCK)
                    .fetch_one(&mut conn)
                    .await?;
                Ok::<_, sqlx::Error>(locked.then_some(conn))
            };
            match attempt.await {
                Ok(Some(conn)) => {
                    if told {
                        tracing::info!("the other projector stopped: this one runs");
                    }
                    return Some(conn);
                }
                Ok(None) if !told => {
                    tracing::warn!("another projector runs on this database: waiting until it stops");
                    told = true;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot take the projector lock; retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn run_workers(self, shutdown: CancellationToken) {
        let initial = checkpoint(self.db.pool(), VALIDATOR).await.unwrap_or(0);
        let (validated_tx, validated_rx) =
            watch::channel(Judged { upto: initial, since: initial, last_quarantined: None });
        let mut tasks = tokio::task::JoinSet::new();
        {
            let this = self.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                this.supervise(VALIDATOR, shutdown.clone(), |p| {
                    let tx = validated_tx.clone();
                    let shutdown = shutdown.clone();
                    Box::pin(async move { p.run_validator(&tx, &shutdown).await })
                })
                .await
            });
        }
        if let Some(chain) = self.chain.clone() {
            let this = self.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                this.supervise(crate::audit::chain::CHAIN, shutdown.clone(), move |p| {
                    let chain = chain.clone();
                    let shutdown = shutdown.clone();
                    Box::pin(async move {
                        let name = p.settings.durable_name(crate::audit::chain::CHAIN);
                        crate::audit::chain::run(
                            p.db.pool(),
                            &p.stream,
                            &name,
                            &chain,
                            p.settings.batch_size,
                            &shutdown,
                        )
                        .await
                    })
                })
                .await
            });
        }
        {
            let this = self.clone();
            let shutdown = shutdown.clone();
            let rx = validated_rx.clone();
            tasks.spawn(async move {
                this.supervise(VIEWS, shutdown.clone(), move |p| {
                    let rx = rx.clone();
                    let shutdown = shutdown.clone();
                    Box::pin(async move { p.run_views(rx, &shutdown).await })
                })
                .await
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn supervise<F>(&self, name: &'static str, shutdown: CancellationToken, run: F)
    where
        F: Fn(Projector) -> BoxFuture<'static, Result<(), WorkerError>>,
    {
        let mut pause = Duration::from_millis(200);
        loop {
            let started = tokio::time::Instant::now();
            // Each attempt runs as a task of its own, so that even a panic (a bug) is
            // contained: the worker resumes from its checkpoint instead of stopping.
            match tokio::spawn(run(self.clone())).await {
                Ok(Ok(())) | Ok(Err(WorkerError::Shutdown)) => return,
                Ok(Err(e @ WorkerError::CheckpointMoved { .. })) => {
                    tracing::info!(projection = name, reason = %e, "projection worker restarts from its checkpoint");
                    pause = Duration::from_millis(200);
                    continue;
                }
                // Most likely the NATS client stopped asking for messages
                // (reader::PROJECTION_STALL), a known fault of the client: the worker restarts
                // at once with a new consumer.
                Ok(Err(e @ WorkerError::Log(reader::ReadError::Stalled { .. }))) => {
                    tracing::warn!(projection = name, reason = %e, "projection worker reopens its consumer");
                    continue;
                }
                Ok(Err(e)) => {
                    tracing::error!(projection = name, error = %e, "projection worker failed; resuming from its checkpoint");
                }
                Err(e) => {
                    tracing::error!(projection = name, error = %e, "projection worker panicked; resuming from its checkpoint");
                }
            }
            // Failures back off; one after a long healthy run starts the backoff again.
            if started.elapsed() > Duration::from_secs(60) {
                pause = Duration::from_millis(200);
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(10));
        }
    }

    async fn next_batch(
        consumer: &mut reader::ProjectionConsumer,
        max: usize,
        shutdown: &CancellationToken,
    ) -> Result<Vec<LogMessage>, WorkerError> {
        tokio::select! {
            _ = shutdown.cancelled() => Err(WorkerError::Shutdown),
            b = consumer.next_batch(max) => Ok(b?),
        }
    }

    async fn run_validator(
        &self,
        validated: &watch::Sender<Judged>,
        shutdown: &CancellationToken,
    ) -> Result<(), WorkerError> {
        let pool = self.db.pool();
        let mut done = checkpoint(pool, VALIDATOR).await?;
        let mut judged = Judged { upto: done, since: done, last_quarantined: None };
        validated.send_replace(judged);
        let mut rules = crate::rules::RuleBook::new(self.stream.clone(), self.keys.clone(), pool.clone(), done)
            .with_capacity(self.settings.validator_states);
        let mut consumer = reader::open_projection_consumer(
            &self.stream,
            &self.settings.durable_name(VALIDATOR),
            &subjects::all_events(),
            done,
            self.settings.batch_size,
        )
        .await?;
        loop {
            let batch = tokio::select! {
                b = Self::next_batch(&mut consumer, self.settings.batch_size, shutdown) => b?,
                // Idle: a database crash may have lost this validator's last commits while no
                // event came to show it (ADR-8); the views would wait for verdicts it believes
                // written. Its checkpoint must be where it left it.
                _ = tokio::time::sleep(VALIDATOR_IDLE_CHECK) => {
                    if checkpoint(pool, VALIDATOR).await? != done {
                        return Err(WorkerError::ValidatorRewound { expected: done });
                    }
                    continue;
                }
            };
            let batch: Vec<LogMessage> = batch.into_iter().filter(|m| m.sequence > done).collect();
            let Some(last) = batch.last().map(|m| m.sequence) else {
                consumer.ack_delivered().await?;
                continue;
            };
            let span = tracing::info_span!("projection.validate", events = batch.len(), last_seq = last);
            let quarantined = self.validate_batch(&batch, &mut rules, done, last).instrument(span).await?;
            consumer.ack_delivered().await?;
            done = last;
            judged = Judged { upto: done, last_quarantined: quarantined.or(judged.last_quarantined), ..judged };
            validated.send_replace(judged);
        }
    }

    /// Judges one batch and commits the verdicts with the checkpoint in one transaction.
    /// Returns the last sequence it quarantined.
    async fn validate_batch(
        &self,
        batch: &[LogMessage],
        rules: &mut crate::rules::RuleBook,
        done: u64,
        last: u64,
    ) -> Result<Option<u64>, WorkerError> {
        let pool = self.db.pool();
        let started = std::time::Instant::now();
        let verdicts = self.judge(batch, rules).await?;
        let judged = started.elapsed();
        let (mut ids, mut seqs, mut orgs) = (Vec::new(), Vec::new(), Vec::new());
        let (mut q_seq, mut q_subject, mut q_reason, mut q_detail, mut q_payload) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut q_event_id: Vec<Option<Uuid>> = Vec::new();
        for (m, Judgement { verdict, recorded }) in batch.iter().zip(verdicts) {
            if let Some((id, org)) = recorded {
                ids.push(id);
                seqs.push(m.sequence as i64);
                orgs.push(org);
            }
            if let Verdict::Quarantine { reason, detail } = verdict {
                tracing::warn!(seq = m.sequence, subject = %m.subject, reason, %detail, "event quarantined");
                q_seq.push(m.sequence as i64);
                q_subject.push(storable_subject(&m.subject));
                q_reason.push(reason.to_owned());
                q_detail.push(detail);
                // Personal fields in the clear are not copied out of the log (privacy).
                let keep = reason != "personal-data-in-clear";
                q_payload.push(if keep { m.payload.to_vec() } else { Vec::new() });
                // The id the broker deduplicated the message by (its message id header, else
                // the payload's): it answers a batch that repeats it (the gateway,
                // `quarantine::first_sequences`). Decoded again: quarantines are rare.
                let id = match &m.message_id {
                    Some(header) => Uuid::parse_str(header).ok(),
                    None => StoredEvent::decode(&m.payload).ok().map(|e| e.v1().id),
                };
                q_event_id.push(id);
            }
        }
        // Verdicts and checkpoint in one statement, its own transaction; the ledger's rows
        // with the gateway's insert (the same order of ids). An id the ledger holds at a later
        // sequence (the gateway recorded a later copy, stored after one published without a
        // message id, before this copy was judged) moves to this one, with its organisation, so
        // that the later copy is judged a duplicate. The statement sees the ledger as it was
        // when it started: an id the gateway recorded meanwhile makes the insert do nothing
        // unseen (`raced`), and then the checkpoint does not move and the statement runs again,
        // seeing it.
        // The checkpoint moves only from where this validator left it (`$13`): if PostgreSQL
        // lost its last commits in a crash, it is elsewhere (or its row is gone), nothing
        // moves, and the validator restarts from it. The rows this statement still writes are
        // the verdicts judging again gives (the rules fold the same history), kept by their
        // `DO NOTHING`.
        // A race needs an id the gateway records while this statement runs; run again, the
        // statement sees every id of the batch (this run left them all in the ledger), so it
        // cannot race twice on them: the bound only keeps a broken ledger from looping.
        for attempt in 0.. {
            let (moved, raced): (i64, Vec<Uuid>) = sqlx::query_as(unflushed_batch_with_checkpoint!(
                @from "$13::int8", @raced "raced";
                concat!("ledger AS (", crate::ledger::insert_rows!("$4", "$5", "$6"), " RETURNING event_id)"),
                "held AS (
                   SELECT u.event_id, u.seq, u.org_id, l.seq AS held_seq
                   FROM UNNEST($4::uuid[], $5::int8[], $6::text[]) AS u(event_id, seq, org_id)
                   LEFT JOIN event_ledger l ON l.event_id = u.event_id)",
                "first_copies AS (
                   UPDATE event_ledger l SET seq = h.seq, org_id = h.org_id FROM held h
                   WHERE l.event_id = h.event_id AND h.held_seq > h.seq)",
                "raced AS (
                   SELECT h.event_id FROM held h
                   WHERE h.held_seq IS NULL AND NOT EXISTS (SELECT 1 FROM ledger r WHERE r.event_id = h.event_id))",
                "quarantined AS (
                   INSERT INTO quarantine (seq, subject, reason, detail, payload, event_id)
                   SELECT * FROM UNNEST($7::int8[], $8::text[], $9::text[], $10::text[], $11::bytea[], $12::uuid[])
                   ON CONFLICT (seq) DO NOTHING)"
            ))
            .bind(VALIDATOR)
            .bind(last as i64)
            .bind(CHECKPOINT_CHANNEL)
            .bind(&ids)
            .bind(&seqs)
            .bind(&orgs)
            .bind(&q_seq)
            .bind(&q_subject)
            .bind(&q_reason)
            .bind(&q_detail)
            .bind(&q_payload)
            .bind(&q_event_id)
            .bind(done as i64)
            .fetch_one(pool)
            .await?;
            match (moved, raced.len()) {
                (0, 0) => return Err(WorkerError::ValidatorRewound { expected: done }),
                (0, n) if attempt < 3 => {
                    tracing::debug!(last, ids = n, "the gateway recorded ids while the validator did; run again");
                }
                (0, n) => return Err(WorkerError::LedgerUnseen(n)),
                _ => break,
            }
        }
        tracing::debug!(
            events = batch.len(),
            judged_ms = judged.as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "batch validated"
        );
        Ok(q_seq.last().map(|s| *s as u64))
    }

    /// Judges a batch: accept or quarantine each message, in order. Duplicate ids are found
    /// against the ledger and within the batch.
    async fn judge(
        &self,
        batch: &[LogMessage],
        rules: &mut crate::rules::RuleBook,
    ) -> Result<Vec<Judgement>, WorkerError> {
        let judge_started = std::time::Instant::now();
        let mut decoded: Vec<Result<(StoredEventV1, Envelope), Verdict>> = batch.iter().map(decode_checked).collect();
        // Sealed fields must open with the client's key (or the key was destroyed).
        let key_ids: Vec<Uuid> =
            decoded.iter().filter_map(|d| d.as_ref().ok()?.0.sealed.as_ref().map(|s| s.key_id)).collect();
        // Ids are looked up in the ledger with the keys, at once: an id found for an event that
        // is quarantined below is simply not asked for.
        let ids: Vec<Uuid> = decoded.iter().filter_map(|d| Some(d.as_ref().ok()?.0.id)).collect();
        let (keys, known) =
            futures::try_join!(async { self.keys.lookup_many(&key_ids).await.map_err(WorkerError::from) }, async {
                crate::ledger::find(self.db.pool(), &ids).await.map_err(WorkerError::from)
            },)?;
        // Events sealed with a destroyed key, judged below on their place in the log.
        let mut sealed_erased: Vec<(usize, Uuid)> = Vec::new();
        for (i, d) in decoded.iter_mut().enumerate() {
            let Ok((stored, envelope)) = d else { continue };
            // The rules of a single event are checked on the whole data: opened when sealed.
            // An erased client's fields cannot be checked any more; its statistical part
            // decoded above, which is all anyone will ever read of it.
            let full = match &stored.sealed {
                None => Some(envelope.data.clone()),
                Some(sealed) => match keys.get(&sealed.key_id) {
                    Some(KeyLookup::Key(k)) => match seal::open(k, stored.id, sealed) {
                        Ok(fields) => {
                            let mut data = envelope.data.clone();
                            data.put_personal(fields);
                            Some(data)
                        }
                        Err(e) => {
                            *d = Err(Verdict::Quarantine { reason: "undecryptable", detail: e.to_string() });
                            continue;
                        }
                    },
                    // A damaged key row is the key store's fault, not the event's: like an erased
                    // client, the statistical part is all that can be read (until a restore).
                    // The rules still run on a stand-in reference (see `erased_placeholder`).
                    Some(lookup @ (KeyLookup::Erased | KeyLookup::Damaged)) => {
                        if matches!(lookup, KeyLookup::Erased) {
                            sealed_erased.push((i, sealed.key_id));
                        }
                        envelope.data.put_personal(crate::rules::erased_placeholder(sealed.key_id));
                        None
                    }
                    Some(KeyLookup::Unknown) | None => {
                        let detail = format!("unknown data key {}", sealed.key_id);
                        *d = Err(Verdict::Quarantine { reason: "undecryptable", detail });
                        continue;
                    }
                },
            };
            if let Some(data) = full {
                if let Err(e) = data.validate() {
                    let detail = format!("/data{}: {}", e.pointer, e.detail);
                    *d = Err(Verdict::Quarantine { reason: "invalid", detail });
                    continue;
                }
                envelope.data = data;
                // The fields are opened: the rules must see them as present (an activity's
                // roster is keyed by the participant's reference).
                envelope.personal = relais_domain::envelope::PersonalState::Present;
            }
        }
        tracing::debug!(opened_ms = judge_started.elapsed().as_millis() as u64, "keys looked up and fields opened");
        // An erasure event is Relais' own, after the destruction of the key it names (privacy).
        let erasures: Vec<(usize, &LogMessage, &Envelope)> =
            decoded.iter().enumerate().filter_map(|(i, d)| Some((i, &batch[i], &d.as_ref().ok()?.1))).collect();
        let refused = crate::erasure::judge_erasures(self.db.pool(), &self.settings.admission, &erasures).await?;
        for (i, detail) in refused {
            decoded[i] = Err(Verdict::Quarantine { reason: "erasure-without-key", detail });
        }
        // An event sealed with a destroyed key: only the key's organisation's, and only if the
        // log holds it before the erasure event (rare: one query when it happens).
        if !sealed_erased.is_empty() {
            let erasures_here: HashMap<Uuid, u64> = batch
                .iter()
                .zip(&decoded)
                .filter_map(|(m, d)| {
                    let (_, e) = d.as_ref().ok()?;
                    matches!(e.data, relais_domain::events::EventData::ClientErased(_))
                        .then(|| Uuid::parse_str(e.subject.id()).ok().map(|k| (k, m.sequence)))
                        .flatten()
                })
                .collect();
            let uses: Vec<crate::erasure::SealedWithErasedKey<'_>> = sealed_erased
                .iter()
                .filter_map(|(i, key_id)| {
                    let (_, envelope) = decoded[*i].as_ref().ok()?;
                    Some(crate::erasure::SealedWithErasedKey {
                        index: *i,
                        sequence: batch[*i].sequence,
                        key_id: *key_id,
                        org: &envelope.org,
                    })
                })
                .collect();
            let refused = crate::erasure::judge_sealed_with_erased_keys(self.db.pool(), &uses, &erasures_here).await?;
            drop(uses);
            for (i, detail) in refused {
                decoded[i] = Err(Verdict::Quarantine { reason: "client-erased", detail });
            }
        }
        // Organisations named in the data must be registered (the gateway checks it too).
        let named: Vec<&str> = decoded
            .iter()
            .filter_map(|d| d.as_ref().ok())
            .flat_map(|(_, e)| e.data.organisations().into_iter().map(|(_, org)| org.as_str()))
            .collect();
        let unregistered = if named.is_empty() { HashSet::new() } else { rules.unregistered(&named).await? };
        if !unregistered.is_empty() {
            for d in decoded.iter_mut() {
                let Ok((_, envelope)) = d else { continue };
                let unknown =
                    envelope.data.organisations().into_iter().find(|(_, org)| unregistered.contains(org.as_str()));
                if let Some((pointer, org)) = unknown {
                    let detail = format!("/data{pointer}: no organisation {org:?} in the registry");
                    *d = Err(Verdict::Quarantine { reason: "invalid", detail });
                }
            }
        }
        let touched: Vec<&Envelope> = decoded.iter().filter_map(|d| Some(&d.as_ref().ok()?.1)).collect();
        if let Some(start) = batch.first().map(|m| m.sequence) {
            rules.prefetch(start, &touched).await?;
        }
        // The lowest sequence of each id recorded in this batch: accepted or quarantined, a
        // message that carries an id takes it (the gateway's early record takes it too).
        let mut seen_here: HashMap<Uuid, u64> = HashMap::new();
        let mut out = Vec::with_capacity(batch.len());
        for (m, d) in batch.iter().zip(decoded) {
            let earlier = |id: &Uuid, seen_here: &HashMap<Uuid, u64>| {
                [known.get(id).map(|r| &r.sequence), seen_here.get(id)]
                    .into_iter()
                    .flatten()
                    .min()
                    .copied()
                    .filter(|seq| *seq < m.sequence)
            };
            out.push(match d {
                Err(verdict) => {
                    let recorded = ledger_entry(m, &verdict).filter(|(id, _)| earlier(id, &seen_here).is_none());
                    if let Some((id, _)) = &recorded {
                        seen_here.insert(*id, m.sequence);
                    }
                    Judgement { verdict, recorded }
                }
                Ok((stored, envelope)) => {
                    // The first copy is the one at the lowest sequence: the ledger may name a
                    // later copy (the gateway records what it stored before this is judged).
                    match earlier(&stored.id, &seen_here) {
                        Some(seq) => Judgement {
                            verdict: Verdict::Quarantine {
                                reason: "duplicate",
                                detail: format!("event id {} was first stored at sequence {seq}", stored.id),
                            },
                            recorded: None,
                        },
                        None => {
                            let recorded = Some((stored.id, envelope.org.to_string()));
                            let judgement = match rules.admit(m.sequence, &envelope).await? {
                                Ok(()) => Judgement { verdict: Verdict::Accept, recorded },
                                Err(v) => Judgement {
                                    verdict: Verdict::Quarantine {
                                        reason: "rule",
                                        detail: format!("{}: {}", v.code, v.detail),
                                    },
                                    recorded: recorded.filter(|(id, _)| takes_id_when_quarantined(*id)),
                                },
                            };
                            if judgement.recorded.is_some() {
                                seen_here.insert(stored.id, m.sequence);
                            }
                            judgement
                        }
                    }
                }
            });
        }
        Ok(out)
    }

    /// The views' worker: one consumer and one transaction per batch for every view, so that
    /// a batch is read, opened and committed once and all views show the same moment. Each
    /// view keeps its own checkpoint (a rebuild swaps one view in and moves its checkpoint):
    /// the worker reads from the lowest and gives each view only what lies beyond its own.
    async fn run_views(
        &self,
        mut validated: watch::Receiver<Judged>,
        shutdown: &CancellationToken,
    ) -> Result<(), WorkerError> {
        let pool = self.db.pool();
        let views = &self.views;
        let names: Vec<&'static str> = views.iter().map(|v| v.name()).collect();
        let mut done: Vec<u64> = Vec::with_capacity(views.len());
        for name in &names {
            done.push(checkpoint(pool, name).await?);
        }
        let from = done.iter().copied().min().unwrap_or(0);
        let mut consumer = reader::open_projection_consumer(
            &self.stream,
            &self.settings.durable_name(VIEWS),
            &subjects::all_events(),
            from,
            self.settings.batch_size,
        )
        .await?;
        let clock = views.iter().any(|v| v.uses_clock());
        let mut ticks = tokio::time::interval(self.settings.tick_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let floor = done.iter().copied().min().unwrap_or(0);
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return Err(WorkerError::Shutdown),
                b = consumer.next_batch(self.settings.batch_size) => b?,
                _ = ticks.tick(), if clock => {
                    self.tick(&names, &done).await?;
                    continue;
                }
            };
            let batch: Vec<LogMessage> = batch.into_iter().filter(|m| m.sequence > floor).collect();
            let (Some(first), Some(last)) = (batch.first().map(|m| m.sequence), batch.last().map(|m| m.sequence))
            else {
                consumer.ack_delivered().await?;
                continue;
            };
            let started = std::time::Instant::now();
            // Decoded and opened while the validator judges the same batch: only the verdicts
            // are waited for.
            let opened = open_events(&self.keys, &batch.iter().collect::<Vec<_>>()).await?;
            // Apply only what the validator has judged.
            tokio::select! {
                _ = shutdown.cancelled() => return Err(WorkerError::Shutdown),
                r = validated.wait_for(|v| v.upto >= last) => { r.map_err(|_| WorkerError::Shutdown)?; }
            }
            let clean = validated.borrow().none_quarantined_from(first);
            let batch: Vec<&LogMessage> = batch.iter().collect();
            let moved = match self.apply_to_views(&names, &done, &batch, opened, last, clean, started).await {
                Ok(moved) => moved,
                Err(e) if unprojectable(&e).is_some() => {
                    // One event the views cannot store (a value PostgreSQL refuses) would stop
                    // every view, batch after batch: the batch is applied one event at a time,
                    // and the event at fault is quarantined with the reason, as the validator
                    // quarantines what it refuses.
                    tracing::warn!(error = %e, first, last, "the views cannot apply this batch: one event at a time");
                    let mut at = done.clone();
                    for m in &batch {
                        let one = open_events(&self.keys, &[*m]).await?;
                        let erasure = one
                            .iter()
                            .any(|a| matches!(a.envelope.data, relais_domain::events::EventData::ClientErased(_)));
                        match self.apply_to_views(&names, &at, &[*m], one, m.sequence, false, started).await {
                            Ok(moved) => at = moved,
                            // Only an event no view has applied yet, and never an erasure
                            // (the views must forget what it erases): otherwise the views
                            // would differ from a rebuild, and the worker stops as before.
                            Err(e) => match unprojectable(&e) {
                                Some((view, why)) if at.iter().all(|a| *a < m.sequence) && !erasure => {
                                    at = quarantine_unprojectable(pool, &names, &at, m, view, &why).await?;
                                }
                                _ => return Err(e),
                            },
                        }
                    }
                    at
                }
                Err(e) => return Err(e),
            };
            consumer.ack_delivered().await?;
            done = moved;
        }
    }

    /// Applies the messages of `batch` (up to `last`, opened as `opened`) to every view in one
    /// transaction with their checkpoints, each view what lies beyond its own (`done`);
    /// returns the checkpoints moved to `last`. `clean`: this process's validator judged the
    /// batch and quarantined none of it (no lookup of the quarantine).
    #[allow(clippy::too_many_arguments)]
    async fn apply_to_views(
        &self,
        names: &[&'static str],
        done: &[u64],
        batch: &[&LogMessage],
        opened: Vec<Applied>,
        last: u64,
        clean: bool,
        started: std::time::Instant,
    ) -> Result<Vec<u64>, WorkerError> {
        let pool = self.db.pool();
        let views = &self.views;
        let first = batch.first().map(|m| m.sequence).unwrap_or(last);
        let mut tx = begin_projection(pool).await?;
        claim_judged_checkpoints(&mut tx, names, done, last).await?;
        // Read after the claim: the verdicts it sees are those whose commit the claim saw.
        let quarantined = if clean { HashSet::new() } else { quarantined_between(&mut *tx, first, last).await? };
        let batch: Vec<&LogMessage> =
            batch.iter().copied().filter(|m| !quarantined.contains(&(m.sequence as i64))).collect();
        let applied: Vec<Applied> = opened.into_iter().filter(|a| !quarantined.contains(&(a.seq as i64))).collect();
        let spans: Vec<tracing::Span> = batch
            .iter()
            .filter_map(|m| {
                let tp = m.traceparent.as_deref()?;
                // A root span: its parent is the remote publisher's, not this task's.
                let span = tracing::info_span!(parent: None, "projection.apply", seq = m.sequence);
                relais_eventlog::trace::set_remote_parent(&span, tp, m.tracestate.as_deref());
                Some(span)
            })
            .collect();
        let judged = started.elapsed();
        // Where a batch's time goes, per view, for the debug log (tuning).
        let mut spent = String::new();
        for (view, at) in views.iter().zip(done) {
            let view_started = std::time::Instant::now();
            // Applied events are in sequence order: what this view still needs is a tail.
            let tail = &applied[applied.partition_point(|a| a.seq <= *at)..];
            let failed = |source| WorkerError::View { view: view.name(), source };
            if !tail.is_empty() {
                view.apply(&mut tx, tail).await.map_err(failed)?;
            }
            if view.uses_clock() {
                // Not the batch's fault: what depends on the clock reads what earlier events
                // stored too, so a failure there restarts the worker, never quarantines.
                view.on_clock(&mut tx, self.settings.clock.now(), ClockCall::AfterBatch).await?;
            }
            if tracing::enabled!(tracing::Level::DEBUG) {
                spent.push_str(&format!(" {}={:.1}", view.name(), view_started.elapsed().as_secs_f64() * 1e3));
            }
        }
        let moved: Vec<u64> = done.iter().map(|d| (*d).max(last)).collect();
        let committing = std::time::Instant::now();
        set_checkpoints(&mut tx, names, &moved).await?;
        tx.commit().await?;
        drop(spans);
        tracing::debug!(
            events = applied.len(),
            last_seq = last,
            ms = started.elapsed().as_millis() as u64,
            judged_ms = format!("{:.1}", judged.as_secs_f64() * 1e3),
            commit_ms = format!("{:.1}", committing.elapsed().as_secs_f64() * 1e3),
            views = spent.trim(),
            "batch applied to the views"
        );
        Ok(moved)
    }

    /// Brings the views that depend on the clock up to now, without a new event.
    async fn tick(&self, names: &[&'static str], done: &[u64]) -> Result<(), WorkerError> {
        let last = reader::last_sequence(&self.stream).await?;
        let mut tx = begin_projection(self.db.pool()).await?;
        claim_checkpoints(&mut tx, names, done).await?;
        for (view, at) in self.views.iter().zip(done) {
            if view.uses_clock() {
                let caught_up = last <= *at;
                view.on_clock(&mut tx, self.settings.clock.now(), ClockCall::Tick { caught_up }).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The quarantined sequences between `first` and `last`.
pub(crate) async fn quarantined_between(
    db: impl sqlx::PgExecutor<'_>,
    first: u64,
    last: u64,
) -> Result<HashSet<i64>, sqlx::Error> {
    Ok(sqlx::query_scalar::<_, i64>("SELECT seq FROM quarantine WHERE seq BETWEEN $1 AND $2")
        .bind(first as i64)
        .bind(last as i64)
        .fetch_all(db)
        .await?
        .into_iter()
        .collect())
}

/// Decodes validated messages and opens their personal fields where the key exists.
pub(crate) async fn open_events(keys: &KeyStore, batch: &[&LogMessage]) -> Result<Vec<Applied>, WorkerError> {
    let stored: Vec<(u64, StoredEventV1)> =
        batch.iter().filter_map(|m| Some((m.sequence, StoredEvent::decode(&m.payload).ok()?.into_v1()))).collect();
    let key_ids: Vec<Uuid> = stored.iter().filter_map(|(_, s)| s.sealed.as_ref().map(|x| x.key_id)).collect();
    let found = keys.lookup_many(&key_ids).await?;
    Ok(stored
        .into_iter()
        .filter_map(|(seq, s)| {
            let key_id = s.sealed.as_ref().map(|x| x.key_id);
            let personal = s.sealed.as_ref().and_then(|sealed| match found.get(&sealed.key_id) {
                Some(KeyLookup::Key(k)) => seal::open(k, s.id, sealed).ok(),
                _ => None,
            });
            // Validated events decode; a failure here would be a bug, and the event was
            // judged by the same code, so skipping cannot diverge between runs.
            let envelope = s.open(personal).ok()?;
            Some(Applied { seq, envelope, key_id })
        })
        .collect())
}

impl ProjectorSettings {
    fn durable_name(&self, projection: &str) -> String {
        format!("{}-{projection}", self.consumer_prefix)
    }
}

enum Verdict {
    Accept,
    Quarantine { reason: &'static str, detail: String },
}

/// A verdict, with the id the message takes in the ledger and its organisation: every message
/// whose payload names an id takes it at its first copy, accepted or quarantined, as the
/// gateway's early record does (so a lost early record changes nothing).
struct Judgement {
    verdict: Verdict,
    recorded: Option<(Uuid, String)>,
}

/// The id a message quarantined before the rules takes in the ledger, with the organisation
/// of its subject: none for a message that names no id the broker deduplicated it by (no event
/// subject, undecodable, a message id header naming another id) and for a duplicate.
fn ledger_entry(m: &LogMessage, verdict: &Verdict) -> Option<(Uuid, String)> {
    let Verdict::Quarantine { reason, .. } = verdict else { return None };
    if matches!(*reason, "subject" | "undecodable" | "mismatch" | "message-id-mismatch" | "duplicate") {
        return None;
    }
    let (org, _) = subjects::parse_event_subject(&m.subject)?;
    let id = StoredEvent::decode(&m.payload).ok()?.v1().id;
    takes_id_when_quarantined(id).then(|| (id, org.to_string()))
}

/// Whether a quarantined message takes its id: not one of version 8, the ids Relais derives
/// (an erasure's, from its key by a public formula, `erasure::erasure_event_id`): a forged
/// erasure, quarantined, must not take the id from the erasure Relais will record.
fn takes_id_when_quarantined(id: Uuid) -> bool {
    id.get_version_num() != 8
}

/// Decodes a message and checks everything that needs no database: subject scheme, envelope,
/// data, agreement of subject and payload, and that personal fields are not in the clear.
fn decode_checked(m: &LogMessage) -> Result<(StoredEventV1, Envelope), Verdict> {
    let q = |reason: &'static str, detail: String| Verdict::Quarantine { reason, detail };
    let (org, aggregate) = subjects::parse_event_subject(&m.subject)
        .ok_or_else(|| q("subject", "not a relais.ev.<org>.<kind>.<id> subject".into()))?;
    let stored = StoredEvent::decode(&m.payload).map_err(|e| q("undecodable", e.to_string()))?.into_v1();
    // The broker deduplicates by the message id header, the ledger by the payload's id: they
    // must agree, or a retry of one id would be judged by another's copy.
    if let Some(header) = &m.message_id
        && Uuid::parse_str(header).ok() != Some(stored.id)
    {
        return Err(q("message-id-mismatch", format!("message id {header:?} is not the event's id {}", stored.id)));
    }
    let envelope = stored.open(None).map_err(|e| q("invalid", e.to_string()))?;
    // Published straight to the log, past the gateway's checks: held to the same rules.
    envelope.check_admissible().and_then(|()| envelope.check_id()).map_err(|e| q("invalid", e.to_string()))?;
    if envelope.org != org || envelope.subject != aggregate {
        return Err(q(
            "mismatch",
            format!("payload says {} {} but subject is {}", envelope.org, envelope.subject, m.subject),
        ));
    }
    let mut data = envelope.data.clone();
    if stored.sealed.is_none() && !data.take_personal().is_empty() {
        return Err(q("personal-data-in-clear", "personal fields must be sealed with the client's data key".into()));
    }
    Ok((stored, envelope))
}

#[cfg(test)]
mod tests {
    use super::{Judged, MAX_STORED_SUBJECT, storable_subject};

    #[test]
    fn a_subject_that_is_not_an_event_subject_is_stored_escaped_and_cut() {
        assert_eq!(storable_subject("relais.ev.apo.cases.c-1"), "relais.ev.apo.cases.c-1");
        assert_eq!(storable_subject("relais.ev.apo.cases.x\0y"), "relais.ev.apo.cases.x\\0y");
        let long = format!("relais.ev.apo.cases.{}", "é".repeat(3000));
        let stored = storable_subject(&long);
        assert!(stored.len() <= MAX_STORED_SUBJECT + '…'.len_utf8() && stored.ends_with('…'), "{stored}");
        assert!(!stored.contains('\0'));
    }

    #[test]
    fn the_views_skip_the_quarantine_lookup_only_for_what_this_validator_run_judged_clean() {
        // Given a validator that started at 100, judged up to 200 and quarantined 150
        let judged = Judged { upto: 200, since: 100, last_quarantined: Some(150) };
        // Then a batch from beyond the quarantined sequence needs no lookup
        assert!(judged.none_quarantined_from(151));
        // But a batch holding it, or one judged before this run started, does
        assert!(!judged.none_quarantined_from(150));
        assert!(!judged.none_quarantined_from(120));
        assert!(!Judged { last_quarantined: None, ..judged }.none_quarantined_from(100));
        assert!(Judged { last_quarantined: None, ..judged }.none_quarantined_from(101));
    }
}
