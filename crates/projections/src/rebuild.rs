//! Rebuilding a projection from the start of the stream into fresh tables while the live ones
//! keep serving, then swapping them in atomically (`relais rebuild <projection>|--all`).
//!
//! 1. The view's tables are copied empty into a schema of their own, `rebuild_<projection>`
//!    (`CREATE TABLE ... (LIKE <live> INCLUDING ALL)`: the live definition, made by the
//!    migrations, is the only definition). The indexes only readers use
//!    ([`View::reader_indexes`]) are left out until the tables are loaded, then built each in
//!    one sort with their live definition and name: maintained row by row they were a good part
//!    of PostgreSQL's work in a rebuild (docs/BENCHMARKS.md, "A ninth session").
//! 2. The stream is read from sequence 1 with an ordered consumer; every batch is applied, as
//!    the live worker would (only what the validator accepted, quarantined sequences skipped,
//!    personal fields opened with the key store), with `search_path` set to the rebuild schema,
//!    and committed with a checkpoint of its own (`<projection>:rebuild`), up to the stream's
//!    last sequence. Several projections (`--all`) share one read: each batch is read, judged
//!    and opened once and applied to every view, each view in a task and a transaction of its
//!    own, at its own pace (the read stays at most two batches ahead).
//! 3. The swap, in one transaction: lock the live checkpoint row (the live worker takes the
//!    same lock first in each of its transactions, so it is either done with its batch or
//!    waits), apply what the live view applied since the rebuild caught up, drop the live
//!    tables, move the rebuilt ones in, give their indexes the live names, set the live
//!    checkpoint. Readers wait for the swap for a moment and then read the new tables.
//! 4. A live worker that finds its checkpoint moved (it was behind the rebuild) restarts from
//!    the new checkpoint.
//!
//! The validator must be running (a `relais serve` with the projector), since only judged
//! events are applied. A rebuild that stops half-way leaves the live view untouched; the next
//! rebuild starts afresh.

use crate::db::Database;
use crate::keys::KeyStore;
use crate::worker::{
    self, ClockCall, ProjectorSettings, VALIDATOR, View, WorkerError, claim_checkpoint, open_events,
    quarantined_between, set_checkpoint,
};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use relais_eventlog::reader::{self, LogMessage, ReadError};
use relais_eventlog::subjects;
use sqlx::{PgConnection, PgPool};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Why a rebuild failed. The live view is untouched unless the swap committed.
#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    /// No projection of that name.
    #[error("no projection named {0:?}")]
    UnknownProjection(String),
    /// The projection has no tables (the validator cannot be rebuilt).
    #[error("{0} cannot be rebuilt")]
    NotRebuildable(String),
    /// The validator does not advance: no projector is running.
    #[error(
        "the validator is at sequence {validated} and the stream at {target}: start the projector (`relais serve`) so that it judges the events"
    )]
    ValidatorStalled {
        /// The validator's checkpoint.
        validated: u64,
        /// The sequence the rebuild waits for.
        target: u64,
    },
    /// The ordered read of the log ended early.
    #[error("the event log stopped delivering at sequence {0}")]
    LogEnded(u64),
    /// Applying failed.
    #[error(transparent)]
    Worker(#[from] WorkerError),
    /// PostgreSQL failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// NATS failed.
    #[error(transparent)]
    Log(#[from] ReadError),
    /// A view's task ended without an answer (it panicked or was cancelled).
    #[error("a view's rebuild task failed: {0}")]
    Task(String),
    /// A view names a reader index that its tables do not have, or one that is unique or backs a
    /// constraint.
    #[error(
        "{projection}: {index} is not an index of its tables without a constraint, so it cannot wait for the end of a rebuild"
    )]
    ReaderIndex {
        /// The projection.
        projection: String,
        /// The index it names.
        index: String,
    },
}

/// What a rebuild did.
#[derive(Debug, Clone)]
pub struct RebuildReport {
    /// The projection.
    pub projection: &'static str,
    /// Events applied (quarantined ones are skipped).
    pub events: u64,
    /// The checkpoint the swapped-in view has.
    pub checkpoint: u64,
    /// How long it took.
    pub elapsed: Duration,
}

impl RebuildReport {
    /// Events per second.
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-6)
    }
}

/// Where a rebuild is, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct RebuildProgress {
    /// The last sequence applied.
    pub at: u64,
    /// The sequence the rebuild runs to (it may grow while the stream grows).
    pub target: u64,
    /// Events applied so far.
    pub events: u64,
    /// While the rebuild waits for the validator to judge what it read: the validator's
    /// sequence (the projector judges; without it running, the rebuild stops after a while).
    pub waiting_for_validator: Option<u64>,
}

/// Events per transaction of a rebuild: larger than a live batch, since nobody waits for
/// freshness and every transaction costs a commit per view.
const REBUILD_BATCH: usize = 10000;

/// Judged batches read ahead of each view (memory: this many batches of opened events).
const BATCHES_AHEAD: usize = 2;

/// A batch as every view applies it.
#[derive(Clone)]
struct JudgedBatch {
    events: Arc<Vec<worker::Applied>>,
    last: u64,
}

/// How far one view's rebuild got: the last sequence applied and the events applied.
#[derive(Default)]
struct AppliedSoFar {
    at: std::sync::atomic::AtomicU64,
    events: std::sync::atomic::AtomicU64,
}

impl AppliedSoFar {
    fn add(&self, at: u64, events: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.events.fetch_add(events, Relaxed);
        self.at.store(at, Relaxed);
    }

    fn get(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.at.load(Relaxed), self.events.load(Relaxed))
    }
}

/// The name of a rebuild's checkpoint.
pub fn rebuild_checkpoint(projection: &str) -> String {
    format!("{projection}:rebuild")
}

fn rebuild_schema(projection: &str) -> String {
    format!("rebuild_{projection}")
}

/// How long the rebuild waits for the validator without progress.
const VALIDATOR_PATIENCE: Duration = Duration::from_secs(60);

/// The reading side of a rebuild: an ordered consumer cut into batches.
struct Reader {
    messages: std::pin::Pin<Box<dyn futures::Stream<Item = Result<LogMessage, ReadError>> + Send>>,
    done: u64,
}

impl Reader {
    /// The next messages up to `until` (inclusive), at most `max`. It waits for them: the
    /// ordered consumer delivers a few hundred at a time, and a batch applied per delivery
    /// costs every view a transaction of its own statements for a few hundred events.
    async fn batch(&mut self, until: u64, max: usize) -> Result<Vec<LogMessage>, RebuildError> {
        let mut out = Vec::with_capacity(max.min(until.saturating_sub(self.done) as usize));
        while self.done < until && out.len() < max {
            let next = match tokio::time::timeout(Duration::from_secs(30), self.messages.next()).await {
                Ok(n) => n,
                Err(_) => return Err(RebuildError::LogEnded(self.done)),
            };
            let Some(m) = next else { return Err(RebuildError::LogEnded(self.done)) };
            let m = m?;
            self.done = m.sequence;
            out.push(m);
        }
        Ok(out)
    }
}

/// Rebuilds the projection `view` and swaps it in; `progress` is called after each batch.
pub async fn rebuild(
    db: &Database,
    keys: &KeyStore,
    stream: &Stream,
    settings: &ProjectorSettings,
    view: Arc<dyn View>,
    progress: &(dyn Fn(RebuildProgress) + Send + Sync),
) -> Result<RebuildReport, RebuildError> {
    let name = view.name();
    let mut reports = rebuild_many(db, keys, stream, settings, vec![view], progress).await?;
    reports.pop().ok_or_else(|| RebuildError::NotRebuildable(name.to_owned()))
}

/// Rebuilds several projections in one read of the log (each batch is read, judged and opened
/// once, then applied to every view concurrently, each into its own tables) and swaps each in;
/// `progress` is called after each batch. What `relais rebuild --all` runs.
#[tracing::instrument(
    name = "projection.rebuild",
    skip_all,
    fields(projections = %views.iter().map(|v| v.name()).collect::<Vec<_>>().join(","))
)]
pub async fn rebuild_many(
    db: &Database,
    keys: &KeyStore,
    stream: &Stream,
    settings: &ProjectorSettings,
    views: Vec<Arc<dyn View>>,
    progress: &(dyn Fn(RebuildProgress) + Send + Sync),
) -> Result<Vec<RebuildReport>, RebuildError> {
    let started = Instant::now();
    for view in &views {
        if view.tables().is_empty() {
            return Err(RebuildError::NotRebuildable(view.name().to_owned()));
        }
    }
    let pool = db.pool();
    let live_schema: String = sqlx::query_scalar("SELECT current_schema()").fetch_one(pool).await?;
    // One transaction for every view: a view refused leaves no copies of the others behind.
    let mut deferred = Vec::with_capacity(views.len());
    let mut tx = pool.begin().await?;
    for view in &views {
        deferred.push(prepare(&mut tx, &live_schema, view.as_ref()).await?);
    }
    tx.commit().await?;

    let messages = reader::ordered_messages(stream, &subjects::all_events(), 1).await?;
    let mut reader = Reader { messages: Box::pin(messages), done: 0 };
    let target = reader::last_sequence(stream).await?;
    progress(RebuildProgress { at: 0, target, events: 0, waiting_for_validator: None });
    // A pipeline: the log is read, judged and opened ahead while the views apply, and each
    // view applies at its own pace (a few batches may wait for the slowest), so that neither
    // the read nor the slowest view's statements leave PostgreSQL idle.
    let applied_by: Vec<Arc<AppliedSoFar>> = views.iter().map(|_| Arc::default()).collect();
    let (senders, receivers): (Vec<_>, Vec<_>) =
        views.iter().map(|_| tokio::sync::mpsc::channel::<JudgedBatch>(BATCHES_AHEAD)).unzip();
    let report = |target: u64, waiting_for_validator: Option<u64>| {
        let (at, events) = applied_by.iter().map(|a| a.get()).min().unwrap_or_default();
        progress(RebuildProgress { at, target, events, waiting_for_validator });
    };
    let read = async move {
        let mut target = target;
        // Twice: to the last sequence at the start, then to the one reached meanwhile; the
        // swap applies whatever the live view got beyond that.
        for _ in 0..2 {
            while reader.done < target {
                let batch = reader.batch(target, settings.batch_size.max(REBUILD_BATCH)).await?;
                let (Some(first), Some(last)) = (batch.first().map(|m| m.sequence), batch.last().map(|m| m.sequence))
                else {
                    continue;
                };
                wait_for_validator(pool, last, |validated| report(target, Some(validated))).await?;
                let judged = JudgedBatch { events: Arc::new(judged(pool, keys, &batch, first, last).await?), last };
                for sender in &senders {
                    // A view that stopped gives its error from its own side of the join.
                    if sender.send(judged.clone()).await.is_err() {
                        return Ok(reader.done);
                    }
                }
                report(target, None);
            }
            target = reader::last_sequence(stream).await?;
        }
        drop(senders);
        Ok::<u64, RebuildError>(reader.done)
    };
    // Each view in a task of its own: building a view's statements takes CPU too.
    let mut appliers = tokio::task::JoinSet::new();
    for (((view, mut batches), applied), deferred) in views.iter().zip(receivers).zip(&applied_by).zip(deferred) {
        let (view, applied, pool, live_schema) = (view.clone(), applied.clone(), pool.clone(), live_schema.clone());
        let applier = async move {
            while let Some(batch) = batches.recv().await {
                apply_batch(&pool, view.as_ref(), &live_schema, &batch.events, batch.last).await?;
                applied.add(batch.last, batch.events.len() as u64);
            }
            // Loaded: the readers' indexes, while slower views still apply.
            for index in deferred {
                sqlx::query(&index.create(&rebuild_schema(view.name()))).execute(&pool).await?;
            }
            Ok::<(), RebuildError>(())
        };
        appliers.spawn(applier.instrument(tracing::Span::current()));
    }
    // Dropped on an error of the read, the set aborts the appliers.
    let apply = async move {
        while let Some(done) = appliers.join_next().await {
            done.map_err(|e| RebuildError::Task(e.to_string()))??;
        }
        Ok(())
    };
    let (rebuilt_at, _) = futures::future::try_join(read, apply).await?;
    let events = applied_by.iter().map(|a| a.get().1).min().unwrap_or_default();
    let mut reports = Vec::with_capacity(views.len());
    for view in &views {
        let name = view.name();
        let schema = rebuild_schema(name);
        // What depends on the clock, as a tick of the live worker would: forgetting by the
        // clock only once nothing more is stored, so that it cannot overtake an event (a
        // renewed consent) still to be applied by the swap.
        if view.uses_clock() {
            let caught_up = reader::last_sequence(stream).await? <= rebuilt_at;
            let mut tx = worker::begin_projection(pool).await?;
            set_search_path(&mut tx, &schema, &live_schema).await?;
            view.on_clock(&mut tx, settings.clock.now(), ClockCall::Tick { caught_up }).await?;
            tx.commit().await?;
        }
        let checkpoint = swap(pool, keys, stream, view.as_ref(), rebuilt_at, settings, &live_schema).await?;
        tracing::info!(projection = name, events, checkpoint, "projection rebuilt and swapped in");
        reports.push(RebuildReport { projection: name, events, checkpoint, elapsed: started.elapsed() });
    }
    progress(RebuildProgress { at: rebuilt_at, target: rebuilt_at, events, waiting_for_validator: None });
    Ok(reports)
}

/// An index built once a rebuild's tables are loaded.
struct DeferredIndex {
    /// Its live name, which the rebuilt one takes.
    name: String,
    table: String,
    /// The definition from `USING` on, without name and schema.
    using: String,
}

impl DeferredIndex {
    fn create(&self, schema: &str) -> String {
        format!("CREATE INDEX {} ON {}.{} {}", ident(&self.name), ident(schema), ident(&self.table), self.using)
    }
}

/// Creates the empty copies of the live tables, without the indexes only readers use; returns
/// those, to be built once the copies are loaded.
async fn prepare(tx: &mut PgConnection, live: &str, view: &dyn View) -> Result<Vec<DeferredIndex>, RebuildError> {
    let (schema, temp) = (&rebuild_schema(view.name()), &rebuild_checkpoint(view.name()));
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", ident(schema))).execute(&mut *tx).await?;
    sqlx::query(&format!("CREATE SCHEMA {}", ident(schema))).execute(&mut *tx).await?;
    for t in view.tables() {
        sqlx::query(&format!(
            "CREATE TABLE {s}.{t} (LIKE {l}.{t} INCLUDING ALL)",
            s = ident(schema),
            l = ident(live),
            t = ident(t)
        ))
        .execute(&mut *tx)
        .await?;
    }
    let mut deferred = Vec::new();
    for name in view.reader_indexes() {
        let unusable = || RebuildError::ReaderIndex { projection: view.name().to_owned(), index: (*name).to_owned() };
        // Neither unique nor backing any other constraint (an exclusion): those the writes need.
        let found: Option<(String, String)> = sqlx::query_as(
            "SELECT t.relname::text, pg_get_indexdef(i.indexrelid)
               FROM pg_index i
               JOIN pg_class c ON c.oid = i.indexrelid
               JOIN pg_class t ON t.oid = i.indrelid
               JOIN pg_namespace n ON n.oid = c.relnamespace
              WHERE n.nspname = $1 AND c.relname = $2 AND NOT i.indisunique
                AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)",
        )
        .bind(live)
        .bind(name)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((table, def)) = found.filter(|(t, _)| view.tables().contains(&t.as_str())) else {
            return Err(unusable());
        };
        // `LIKE ... INCLUDING ALL` named the copy itself: found by its definition.
        let copy = indexes(&mut *tx, schema, &table).await?.into_iter().find(|(_, d)| normalise(d) == normalise(&def));
        let (Some((copy, _)), Some(at)) = (copy, def.find(" USING ")) else { return Err(unusable()) };
        sqlx::query(&format!("DROP INDEX {}.{}", ident(schema), ident(&copy))).execute(&mut *tx).await?;
        deferred.push(DeferredIndex { name: (*name).to_owned(), table, using: def[at + 1..].to_owned() });
    }
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1").bind(temp).execute(&mut *tx).await?;
    Ok(deferred)
}

fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn set_search_path(tx: &mut PgConnection, schema: &str, live: &str) -> Result<(), sqlx::Error> {
    // The view's SQL names its tables without a schema: inside this transaction they are the
    // rebuild's copies; everything else (checkpoints, quarantine, registry) is the live one.
    sqlx::query(&format!("SET LOCAL search_path TO {}, {}", ident(schema), ident(live))).execute(&mut *tx).await?;
    Ok(())
}

/// Waits until the validator has judged `last`.
async fn wait_for_validator(pool: &PgPool, last: u64, waiting: impl Fn(u64)) -> Result<(), RebuildError> {
    let mut seen = worker::checkpoint(pool, VALIDATOR).await?;
    let mut since = Instant::now();
    while seen < last {
        waiting(seen);
        if since.elapsed() > VALIDATOR_PATIENCE {
            return Err(RebuildError::ValidatorStalled { validated: seen, target: last });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = worker::checkpoint(pool, VALIDATOR).await?;
        if now > seen {
            since = Instant::now();
        }
        seen = now;
    }
    Ok(())
}

/// Applies one judged batch into a view's rebuild tables, with the rebuild's checkpoint.
async fn apply_batch(
    pool: &PgPool,
    view: &dyn View,
    live: &str,
    applied: &[worker::Applied],
    last: u64,
) -> Result<(), RebuildError> {
    let name = view.name();
    let mut tx = worker::begin_projection(pool).await?;
    set_search_path(&mut tx, &rebuild_schema(name), live).await?;
    // Facts only: what depends on the clock is brought up to it once, before the swap.
    view.apply(&mut tx, applied).await?;
    set_checkpoint(&mut tx, &rebuild_checkpoint(name), last).await?;
    tx.commit().await?;
    Ok(())
}

async fn judged(
    pool: &PgPool,
    keys: &KeyStore,
    batch: &[LogMessage],
    first: u64,
    last: u64,
) -> Result<Vec<worker::Applied>, RebuildError> {
    let quarantined = quarantined_between(pool, first, last).await?;
    let kept: Vec<&LogMessage> = batch.iter().filter(|m| !quarantined.contains(&(m.sequence as i64))).collect();
    Ok(open_events(keys, &kept).await?)
}

/// The swap, in one transaction; returns the live checkpoint it set. The rebuilt tables hold
/// the log up to `rebuilt_at`.
async fn swap(
    pool: &PgPool,
    keys: &KeyStore,
    stream: &Stream,
    view: &dyn View,
    rebuilt_at: u64,
    settings: &ProjectorSettings,
    live: &str,
) -> Result<u64, RebuildError> {
    let name = view.name();
    let schema = &rebuild_schema(name);
    let temp = &rebuild_checkpoint(name);
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL lock_timeout = '60s'").execute(&mut *tx).await?;
    // The live worker's lock: it is between two batches from here on.
    let live_at = worker::checkpoint(pool, name).await?;
    let locked = claim_checkpoint(&mut tx, name, live_at).await;
    let live_at = match locked {
        Ok(()) => live_at,
        // It committed a batch in between: lock whatever it reached.
        Err(WorkerError::CheckpointMoved { found, .. }) => {
            claim_checkpoint(&mut tx, name, found).await?;
            found
        }
        Err(e) => return Err(e.into()),
    };
    // Catch up with what the live view applied since (it was judged: the live view applied it).
    set_search_path(&mut tx, schema, live).await?;
    let mut reader = Reader { messages: futures::stream::empty().boxed(), done: rebuilt_at };
    if live_at > rebuilt_at {
        reader.messages = Box::pin(reader::ordered_messages(stream, &subjects::all_events(), rebuilt_at + 1).await?);
    }
    while reader.done < live_at {
        let batch = reader.batch(live_at, settings.batch_size).await?;
        let (Some(first), Some(last)) = (batch.first().map(|m| m.sequence), batch.last().map(|m| m.sequence)) else {
            break;
        };
        let applied = judged(pool, keys, &batch, first, last).await?;
        view.apply(&mut tx, &applied).await?;
    }
    if view.uses_clock() {
        let caught_up = reader::last_sequence(stream).await? <= reader.done;
        view.on_clock(&mut tx, settings.clock.now(), ClockCall::Tick { caught_up }).await?;
    }
    sqlx::query("SET LOCAL search_path TO DEFAULT").execute(&mut *tx).await?;
    let checkpoint = reader.done;
    let mut live_names: BTreeMap<(String, String), String> = BTreeMap::new();
    for t in view.tables() {
        for (index, def) in indexes(&mut tx, live, t).await? {
            live_names.insert((t.to_string(), normalise(&def)), index);
        }
    }
    let mut rebuilt: Vec<(String, String, String)> = Vec::new();
    for t in view.tables() {
        for (index, def) in indexes(&mut tx, schema, t).await? {
            rebuilt.push((t.to_string(), index, normalise(&def)));
        }
    }
    for t in view.tables() {
        sqlx::query(&format!("DROP TABLE {}.{}", ident(live), ident(t))).execute(&mut *tx).await?;
    }
    for t in view.tables() {
        sqlx::query(&format!("ALTER TABLE {}.{} SET SCHEMA {}", ident(schema), ident(t), ident(live)))
            .execute(&mut *tx)
            .await?;
    }
    for (table, index, def) in rebuilt {
        if let Some(live_name) = live_names.get(&(table, def))
            && *live_name != index
        {
            sqlx::query(&format!("ALTER INDEX {}.{} RENAME TO {}", ident(live), ident(&index), ident(live_name)))
                .execute(&mut *tx)
                .await?;
        }
    }
    sqlx::query(&format!("DROP SCHEMA {}", ident(schema))).execute(&mut *tx).await?;
    set_checkpoint(&mut tx, name, checkpoint).await?;
    sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1").bind(temp).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(checkpoint)
}

async fn indexes(tx: &mut PgConnection, schema: &str, table: &str) -> Result<Vec<(String, String)>, sqlx::Error> {
    sqlx::query_as("SELECT indexname::text, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2")
        .bind(schema)
        .bind(table)
        .fetch_all(tx)
        .await
}

/// An index definition without its name and schema: `UNIQUE USING btree (a, b) WHERE ...`.
fn normalise(def: &str) -> String {
    let unique = def.starts_with("CREATE UNIQUE INDEX");
    let body = def.find(" USING ").map(|i| &def[i..]).unwrap_or(def);
    format!("{}{body}", if unique { "UNIQUE" } else { "" })
}

#[cfg(test)]
mod tests {
    use super::normalise;

    #[test]
    fn index_definitions_compare_without_name_and_schema() {
        let live =
            "CREATE INDEX caseload_by_activity ON public.caseload USING btree (org_id, last_event_at DESC, case_id)";
        let copy = "CREATE INDEX caseload_org_id_last_event_at_case_id_idx ON rebuild_caseload.caseload USING btree (org_id, last_event_at DESC, case_id)";
        assert_eq!(normalise(live), normalise(copy));
        let pk = "CREATE UNIQUE INDEX caseload_pkey ON public.caseload USING btree (org_id, case_id)";
        assert_ne!(normalise(pk), normalise("CREATE INDEX x ON public.caseload USING btree (org_id, case_id)"));
        // A block range index with its storage parameter (migration 0040), as `LIKE ...
        // INCLUDING ALL` copies it.
        let brin = "CREATE INDEX stats_facts_by_day ON public.stats_facts USING brin (day) WITH (autosummarize='on')";
        let brin_copy = "CREATE INDEX stats_facts_day_idx ON rebuild_statistics.stats_facts USING brin (day) WITH (autosummarize='on')";
        assert_eq!(normalise(brin), normalise(brin_copy));
        assert_ne!(normalise(brin), normalise("CREATE INDEX x ON public.stats_facts USING btree (day)"));
    }
}
