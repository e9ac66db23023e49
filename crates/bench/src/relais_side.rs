//! The Relais side: the real `relais` binary (gateway and projector as separate processes,
//! as deployed) on its own nats-server and database.

use crate::engines::{self, StoredMessage};
use crate::{Args, Pair, median};
use anyhow::{Context as _, bail};
use base64::Engine;
use bytes::Bytes;
use relais::nats_server::{NatsServer, NatsServerOptions};
use relais::synth::{self, SynthEvent, SynthOptions};
use relais_domain::reference::default_organisations;
use relais_projections::{Database, Role, TokenStore};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A synthetic history of exactly `n` events (or as many as the generator gives).
pub fn history(n: usize) -> Vec<SynthEvent> {
    let mut events = synth::generate(&SynthOptions { clients: n / 18 + 10, ..Default::default() });
    events.truncate(n);
    events
}

fn relais_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("RELAIS_BIN") {
        return Ok(PathBuf::from(p));
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("binary directory")?;
    // Test binaries live in deps/, next to the target profile directory.
    for candidate in [dir.join("relais"), dir.join("../relais")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "the relais binary is not next to relais-bench: build it (cargo build --release --bin relais) or set RELAIS_BIN"
    )
}

/// A running Relais on its own nats-server and database.
pub struct Instance {
    nats: NatsServer,
    db_name: String,
    pub pool: sqlx::PgPool,
    gateway: Option<Child>,
    projector: Option<Child>,
    pub base: String,
    pub tokens: HashMap<String, String>,
    /// The environment of the relais processes (for `relais rebuild`).
    env: Vec<(String, String)>,
}

const ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Lets the writes of the parts before settle, so that a timed part starts on a quiet disk:
/// PostgreSQL writes its dirty pages (`CHECKPOINT`; dropping the databases of earlier runs
/// leaves many) and the system flushes its page cache (`sync`; earlier runs' store
/// directories). The timed parts themselves still meet checkpoints as they come.
async fn settle() -> anyhow::Result<()> {
    let mut admin = <sqlx::PgConnection as sqlx::Connection>::connect(ADMIN_URL).await?;
    sqlx::query("CHECKPOINT").execute(&mut admin).await?;
    let synced = tokio::task::spawn_blocking(|| Command::new("sync").status()).await?;
    if !synced.is_ok_and(|s| s.success()) {
        eprintln!("  (sync did not run; the disk may still be writing earlier runs' data)");
    }
    Ok(())
}

fn db_url(name: &str) -> String {
    format!("postgres://postgres@127.0.0.1:5432/{name}")
}

fn secret() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

impl Instance {
    pub async fn start(dir: &Path, sync_always: bool, gateway: bool, projector: bool) -> anyhow::Result<Self> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let nats = NatsServer::start(&NatsServerOptions {
            store_dir: dir.join(format!("nats-{id}")),
            sync_always,
            extra_config: String::new(),
            port: None,
        })?;
        let db_name = format!("relais_bench_{id}");
        let db = Database::connect_and_migrate(&db_url(&db_name)).await?;
        db.sync_organisations(&default_organisations()).await?;
        let store = TokenStore::new(db.pool().clone());
        let mut tokens = HashMap::new();
        for org in default_organisations() {
            tokens.insert(org.id.to_string(), store.create(&org.id, Role::Org, "bench").await?.1);
        }
        let port = relais::nats_server::free_port()?;
        let env: Vec<(String, String)> = vec![
            ("RELAIS_NATS_URL".into(), nats.url()),
            ("RELAIS_DATABASE_URL".into(), db_url(&db_name)),
            ("RELAIS_LISTEN".into(), format!("127.0.0.1:{port}")),
            ("RELAIS_KEK".into(), secret()),
            ("RELAIS_CLIENT_REF_PEPPER".into(), secret()),
            ("RELAIS_ADMISSION_KEY".into(), secret()),
            ("RUST_LOG".into(), std::env::var("RELAIS_BENCH_LOG").unwrap_or_else(|_| "error".into())),
            // The deployed environment (docs/DEPLOYMENT.md): the allocator returns freed memory
            // at once, which keeps a gateway serving long replays within its memory bound.
            ("MIMALLOC_PURGE_DELAY".into(), std::env::var("MIMALLOC_PURGE_DELAY").unwrap_or_else(|_| "0".into())),
        ];
        let spawn = |role: &str| -> anyhow::Result<Child> {
            Command::new(relais_binary()?)
                .args(["serve", "--role", role])
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .stdout(Stdio::null())
                .spawn()
                .context("cannot start relais")
        };
        // The gateway creates the stream; the projector starts after it.
        let gateway = if gateway { Some(spawn("gateway")?) } else { None };
        let base = format!("http://127.0.0.1:{port}");
        let mut instance =
            Self { nats, db_name, pool: db.pool().clone(), gateway, projector: None, base, tokens, env: env.clone() };
        if instance.gateway.is_some() {
            instance.wait_ready().await?;
        }
        if projector {
            instance.projector = Some(spawn("projector")?);
        }
        Ok(instance)
    }

    async fn wait_ready(&self) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(r) = http.get(format!("{}/readyz", self.base)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("relais gateway not ready in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn js(&self) -> anyhow::Result<async_nats::jetstream::Context> {
        Ok(async_nats::jetstream::new(async_nats::connect(self.nats.url()).await?))
    }

    pub async fn checkpoint(&self, projection: &str) -> anyhow::Result<u64> {
        Ok(relais_projections::worker::checkpoint(&self.pool, projection).await?)
    }

    /// Posts a history in batches of one organisation and waits until the caseload covers the
    /// last stored message: ten minutes, or a millisecond per event for larger histories.
    /// Returns when the last batch was answered, and the last stored sequence.
    async fn publish_and_project(&self, history: &[SynthEvent], args: &Args) -> anyhow::Result<(Instant, u64)> {
        post_all(self, &org_batches(history, args.batch), args.clients).await?;
        let posted = Instant::now();
        let last = self.js().await?.get_stream("RELAIS").await?.info().await?.state.last_sequence;
        let limit = Duration::from_secs(600).max(Duration::from_millis(history.len() as u64));
        while self.checkpoint("caseload").await? < last {
            if posted.elapsed() > limit {
                bail!("projector did not catch up in {} s", limit.as_secs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok((posted, last))
    }

    fn pids(&self) -> (Option<u32>, Option<u32>) {
        (self.gateway.as_ref().map(Child::id), self.projector.as_ref().map(Child::id))
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        for child in [self.gateway.as_mut(), self.projector.as_mut()].into_iter().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.nats.stop();
        let name = self.db_name.clone();
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                if let Ok(pool) = sqlx::PgPool::connect(ADMIN_URL).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&pool).await;
                }
            });
        })
        .join();
    }
}

/// Batches of one organisation each, in the history's order per organisation, serialised
/// ahead of time (the client's JSON work is not Relais's).
pub fn org_batches(history: &[SynthEvent], batch: usize) -> Vec<(String, Bytes, usize)> {
    let mut per_org: Vec<(&str, Vec<&Value>)> = Vec::new();
    for e in history {
        match per_org.iter_mut().find(|(o, _)| *o == e.org) {
            Some((_, v)) => v.push(&e.event),
            None => per_org.push((e.org, vec![&e.event])),
        }
    }
    // Interleave the organisations' batches, as several NGOs publish at once.
    let mut chunks: Vec<std::collections::VecDeque<(String, Bytes, usize)>> = per_org
        .into_iter()
        .map(|(org, events)| {
            events
                .chunks(batch)
                .map(|c| (org.to_owned(), Bytes::from(serde_json::to_vec(c).unwrap_or_default()), c.len()))
                .collect()
        })
        .collect();
    let mut out = Vec::new();
    while chunks.iter().any(|c| !c.is_empty()) {
        for c in chunks.iter_mut() {
            if let Some(b) = c.pop_front() {
                out.push(b);
            }
        }
    }
    out
}

/// Batches of one organisation each, due in the order of their first event in the history, so
/// that every organisation publishes at its own share of the rate throughout the run.
pub fn batches_in_history_order(history: &[SynthEvent], batch: usize) -> Vec<(String, Bytes, usize)> {
    let mut open: HashMap<&str, (usize, Vec<&Value>)> = HashMap::new();
    let mut out: Vec<(usize, String, Bytes, usize)> = Vec::new();
    let close = |org: &str, first: usize, events: &[&Value], out: &mut Vec<(usize, String, Bytes, usize)>| {
        out.push((first, org.to_owned(), Bytes::from(serde_json::to_vec(events).unwrap_or_default()), events.len()));
    };
    for (i, e) in history.iter().enumerate() {
        let entry = open.entry(e.org).or_insert_with(|| (i, Vec::new()));
        if entry.1.is_empty() {
            entry.0 = i;
        }
        entry.1.push(&e.event);
        if entry.1.len() == batch {
            let (first, events) = std::mem::take(entry);
            close(e.org, first, &events, &mut out);
        }
    }
    for (org, (first, events)) in open {
        if !events.is_empty() {
            close(org, first, &events, &mut out);
        }
    }
    out.sort_by_key(|b| b.0);
    out.into_iter().map(|(_, org, body, n)| (org, body, n)).collect()
}

/// Most messages the bare pipelined publisher sends per run.
const PIPELINED_SAMPLE: usize = 10_000;

/// Posts every batch with `clients` concurrent HTTP clients; events per second.
pub async fn post_all(instance: &Instance, batches: &[(String, Bytes, usize)], clients: usize) -> anyhow::Result<f64> {
    let owned: Vec<(String, Bytes, usize)> = batches.to_owned();
    let queue = Arc::new(tokio::sync::Mutex::new(owned.into_iter()));
    let total: usize = batches.iter().map(|b| b.2).sum();
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let queue = queue.clone();
        let http = http.clone();
        let url = format!("{}/v1/events", instance.base);
        let tokens = instance.tokens.clone();
        tasks.spawn(async move {
            loop {
                let Some((org, body, _)) = queue.lock().await.next() else { return anyhow::Ok(()) };
                let r = http
                    .post(&url)
                    .bearer_auth(tokens.get(&org).cloned().unwrap_or_default())
                    .header("content-type", "application/cloudevents-batch+json")
                    .body(body)
                    .send()
                    .await?;
                if !r.status().is_success() {
                    bail!("{org}: {} {}", r.status(), r.text().await.unwrap_or_default());
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("client task")??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

/// The ingest pair: Relais `POST /v1/events` against the best bare publisher of the same bytes;
/// with it, under `sync_always`, the fsync calls nats-server made during the first Relais run
/// (when `perf` can count them).
pub async fn ingest_pair(
    args: &Args,
    history: &[SynthEvent],
    sync_always: bool,
    dir: &Path,
) -> anyhow::Result<(Pair, Option<engines::SyncCount>)> {
    let batches = org_batches(history, args.batch);
    let mut stored: Option<Vec<StoredMessage>> = None;
    let mut syncs = None;
    let (mut relais, mut limit) = (Vec::new(), Vec::new());
    let mut best_bare = "";
    let mut bare_with_headers = Vec::new();
    // The CPU each process spent on Relais' side (the bare side runs on instances of its own).
    let mut relais_work = Work::default();
    for rep in 0..args.reps {
        let relais_first = rep % 2 == 0 || stored.is_none();
        for side in if relais_first { [0, 1] } else { [1, 0] } {
            settle().await?;
            if side == 0 {
                let instance = Instance::start(dir, sync_always, true, false).await?;
                // The instance's own set-up (a database created and migrated) is written out
                // before the timed part, as the bare side's runs are by `bare_run`.
                settle().await?;
                // Counting syscalls through perf's tracepoints costs little, but only the first
                // run is counted so that the others are untouched.
                let counter = if sync_always && syncs.is_none() {
                    engines::SyncCounter::attach(instance.nats.pid())
                } else {
                    None
                };
                let before = Work::now(&instance).await?;
                let eps = post_all(&instance, &batches, args.clients).await?;
                relais_work.add(Work::now(&instance).await?.since(&before));
                if let Some(counter) = counter {
                    syncs = counter.finish(history.len() as u64);
                }
                eprintln!("  ingest relais: {eps:.0} events/s");
                relais.push(eps);
                if stored.is_none() {
                    stored = Some(engines::read_stream(&instance.js().await?, "RELAIS").await?.0);
                }
            } else {
                let messages = stored.as_deref().unwrap_or_default();
                // Under `sync_interval: always` single publishes run at a fraction of batches'
                // speed: a rate over the first 10,000 keeps the run short.
                let sample = if sync_always { &messages[..messages.len().min(PIPELINED_SAMPLE)] } else { messages };
                let pipelined = bare_run(dir, sync_always, |c| engines::publish_pipelined(c, sample)).await?;
                let batched = bare_run(dir, sync_always, |c| {
                    engines::publish_atomic_batches(c, messages, args.batch, args.clients, false)
                })
                .await?;
                // Not the limit (that is the same events with their ids, as the issue sets it):
                // how much of the gap the headers Relais stores account for.
                let with_headers = bare_run(dir, sync_always, |c| {
                    engines::publish_atomic_batches(c, messages, args.batch, args.clients, true)
                })
                .await?;
                eprintln!(
                    "  ingest bare: pipelined {pipelined:.0}/s, atomic batches {batched:.0}/s \
                     (with Relais' stored headers {with_headers:.0}/s)"
                );
                bare_with_headers.push(with_headers);
                best_bare = if batched >= pipelined { "atomic batches" } else { "pipelined acks" };
                limit.push(pipelined.max(batched));
            }
        }
    }
    let ingested = history.len() as f64 * relais.len() as f64;
    let pair = Pair {
        name: "ingest",
        relais: median(relais),
        limit: median(limit),
        note: format!(
            "batches of {}, {} HTTP clients; limit: bare async-nats, {best_bare}; sync_interval {}; \
             bare atomic batches carrying Relais' stored headers too: {:.0}/s",
            args.batch,
            args.clients,
            if sync_always { "always" } else { "default" },
            median(bare_with_headers)
        ),
        cpu: Some(json!({ "relais": relais_work.cpu_json(ingested) })),
        more: Default::default(),
    };
    eprintln!("    CPU per event, relais side: {}", relais_work.cpu_summary(ingested));
    Ok((pair, syncs))
}

async fn bare_run<'a, T, F, Fut>(dir: &Path, sync_always: bool, f: F) -> anyhow::Result<T>
where
    F: FnOnce(async_nats::Client) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>> + 'a,
{
    let nats = NatsServer::start(&NatsServerOptions {
        store_dir: dir.join(format!("bare-{}", uuid::Uuid::new_v4().simple())),
        sync_always,
        extra_config: String::new(),
        port: None,
    })?;
    let client = async_nats::connect(nats.url()).await?;
    engines::bare_stream(&async_nats::jetstream::new(client.clone())).await?;
    // Earlier runs' writes land before this one, as before each timed side of Relais.
    settle().await?;
    f(client).await
}

/// Freshness figures.
pub struct Freshness {
    /// The broker alone: atomic batches of 10 of the same stored bytes, published and
    /// acknowledged one at a time.
    pub floor_p50_ms: f64,
    pub floor_p99_ms: f64,
    /// The same groups of 10 as single publishes, their acknowledgements awaited together: the
    /// broker without an atomic batch's staging (nats-server stages each atomic batch of a
    /// single-replica file stream in a file store of its own).
    pub single_p50_ms: f64,
    pub single_p99_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub samples: usize,
    /// Due → answered by the gateway (stored in the log), for comparison.
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    /// The work the machine did for the timed part, per event: it separates changes of a few
    /// per cent that the latencies of a noisy machine cannot.
    pub work: Work,
    /// Events of the timed part.
    pub events: f64,
}

/// Work counted over a part of a run: PostgreSQL's WAL (`pg_stat_wal`, the whole cluster) and
/// the busy time of the machine's CPUs (`/proc/stat`).
#[derive(Debug, Clone, Default)]
pub struct Work {
    pub wal_records: f64,
    pub wal_bytes: f64,
    pub wal_syncs: f64,
    pub cpu_busy_secs: f64,
    /// CPU seconds of each process (by pid), with the part it plays: `gateway`, `projector`,
    /// or its command name (`postgres`, `nats-server`, ...).
    pub processes: HashMap<u32, (String, f64)>,
}

impl Work {
    /// The counters now.
    pub async fn now(instance: &Instance) -> anyhow::Result<Self> {
        let (wal_records, wal_bytes, wal_syncs): (i64, f64, i64) =
            sqlx::query_as("SELECT wal_records, wal_bytes::float8, wal_sync FROM pg_stat_wal")
                .fetch_one(&instance.pool)
                .await?;
        Ok(Self {
            wal_records: wal_records as f64,
            wal_bytes,
            wal_syncs: wal_syncs as f64,
            cpu_busy_secs: cpu_busy_secs(),
            processes: process_cpu_secs(instance.pids()),
        })
    }

    /// The work from `earlier` to `self`. A process that started in between counts whole; one
    /// that ended in between is not counted.
    pub fn since(self, earlier: &Self) -> Self {
        let processes = self
            .processes
            .into_iter()
            .map(|(pid, (role, secs))| {
                let before = earlier.processes.get(&pid).filter(|(r, _)| *r == role).map_or(0.0, |(_, s)| *s);
                (pid, (role, secs - before))
            })
            .collect();
        Self {
            wal_records: self.wal_records - earlier.wal_records,
            wal_bytes: self.wal_bytes - earlier.wal_bytes,
            wal_syncs: self.wal_syncs - earlier.wal_syncs,
            cpu_busy_secs: self.cpu_busy_secs - earlier.cpu_busy_secs,
            processes,
        }
    }

    /// CPU seconds by part played, largest first.
    pub fn cpu_by_role(&self) -> Vec<(String, f64)> {
        let mut by: HashMap<&str, f64> = HashMap::new();
        for (role, secs) in self.processes.values() {
            *by.entry(role).or_default() += secs;
        }
        let mut v: Vec<(String, f64)> = by.into_iter().map(|(r, s)| (r.to_owned(), s)).collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    }

    /// Adds the work of another part (counted by pid; the same pid adds up).
    pub fn add(&mut self, other: Self) {
        self.wal_records += other.wal_records;
        self.wal_bytes += other.wal_bytes;
        self.wal_syncs += other.wal_syncs;
        self.cpu_busy_secs += other.cpu_busy_secs;
        for (pid, (role, secs)) in other.processes {
            self.processes.entry(pid).or_insert((role, 0.0)).1 += secs;
        }
    }

    /// CPU microseconds per event by part played (those that spent any, and the gateway and
    /// projector always).
    fn cpu_json(&self, events: f64) -> serde_json::Map<String, Value> {
        let per = |x: f64| if events > 0.0 { x / events } else { 0.0 };
        self.cpu_by_role()
            .into_iter()
            .filter(|(r, s)| *s > 0.0 || r == "gateway" || r == "projector")
            .map(|(r, s)| (r, json!(per(s * 1e6))))
            .collect()
    }

    /// The CPU per event by part, on one line: `gateway 5.1 µs, nats-server 4.0 µs, ...`.
    fn cpu_summary(&self, events: f64) -> String {
        let mut parts: Vec<String> = self
            .cpu_json(events)
            .into_iter()
            .filter_map(|(r, v)| Some((r, v.as_f64()?)))
            .filter(|(_, us)| *us >= 0.05)
            .map(|(r, us)| format!("{r} {us:.1} µs"))
            .collect();
        let busy = if events > 0.0 { self.cpu_busy_secs * 1e6 / events } else { 0.0 };
        parts.push(format!("machine busy {busy:.1} µs"));
        parts.join(", ")
    }

    fn json(&self, events: f64) -> Value {
        let per = |x: f64| if events > 0.0 { x / events } else { 0.0 };
        let cpu = self.cpu_json(events);
        json!({ "wal_records_per_event": per(self.wal_records), "wal_bytes_per_event": per(self.wal_bytes),
                "wal_syncs": self.wal_syncs, "cpu_busy_ms_per_event": per(self.cpu_busy_secs * 1000.0),
                "cpu_busy_secs": self.cpu_busy_secs, "cpu_us_per_event_by_process": cpu })
    }
}

/// CPU seconds (user and system) of every process of the machine, by pid, with its part.
fn process_cpu_secs((gateway, projector): (Option<u32>, Option<u32>)) -> HashMap<u32, (String, f64)> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // `pid (comm) state ...`: the command may hold spaces, so split after its `)`.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else { continue };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the command.
        let ticks: f64 = [11, 12].iter().filter_map(|i| fields.get(*i)?.parse::<f64>().ok()).sum();
        let role = if Some(pid) == gateway {
            "gateway".to_owned()
        } else if Some(pid) == projector {
            "projector".to_owned()
        } else {
            // A kernel worker's name ends with the work queue it serves at the moment
            // (`kworker/u8:2-writeback`): without it, the same thread keeps one name.
            let comm = &stat[open + 1..close];
            match comm.split_once('-') {
                Some((worker, _)) if comm.starts_with("kworker/") => worker.to_owned(),
                _ => comm.to_owned(),
            }
        };
        out.insert(pid, (role, ticks / 100.0));
    }
    out
}

/// Busy seconds of all CPUs since boot (user, nice, system, irq, softirq; not idle, iowait
/// or steal), or 0 where `/proc/stat` cannot be read.
fn cpu_busy_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let ticks: Vec<f64> =
        stat.lines().next().unwrap_or_default().split_whitespace().skip(1).filter_map(|t| t.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal; USER_HZ is 100 on Linux.
    [0, 1, 2, 5, 6].iter().filter_map(|i| ticks.get(*i)).sum::<f64>() / 100.0
}

impl Freshness {
    pub fn json(&self) -> Value {
        json!({ "p50_ms": self.p50_ms, "p99_ms": self.p99_ms, "max_ms": self.max_ms, "batches": self.samples,
                "stored_p50_ms": self.ack_p50_ms, "stored_p99_ms": self.ack_p99_ms,
                "broker_atomic_batch_of_10_p50_ms": self.floor_p50_ms,
                "broker_atomic_batch_of_10_p99_ms": self.floor_p99_ms,
                "broker_10_single_publishes_p50_ms": self.single_p50_ms,
                "broker_10_single_publishes_p99_ms": self.single_p99_ms,
                "work": self.work.json(self.events) })
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted.get(((sorted.len() as f64 * q) as usize).min(sorted.len().saturating_sub(1))).copied().unwrap_or(0.0)
}

/// Requests of one organisation in flight at once in the freshness run.
const LANE_IN_FLIGHT: usize = 4;

/// Publish → visible in the caseload view, at `rate` events/s in batches of 10.
///
/// Each organisation is a lane that posts its batches in the history's order, a few at once
/// (`LANE_IN_FLIGHT`); a batch's clock starts when it is due, so time spent waiting for its
/// lane counts. Visibility is learnt from the projector's checkpoint
/// announcements (`LISTEN relais_checkpoints`), not by polling.
pub async fn freshness(args: &Args, sync_always: bool, dir: &Path) -> anyhow::Result<Freshness> {
    let n = (args.freshness_rate * args.freshness_secs) as usize;
    let mut events = history(args.freshness_history() + n);
    let timed = events.split_off(args.freshness_history().min(events.len()));
    let batches = batches_in_history_order(&timed, 10);
    let instance = Instance::start(dir, sync_always, true, true).await?;
    if !events.is_empty() {
        seed(&instance, &events, args).await?;
    }
    settle().await?;
    let mut listener = sqlx::postgres::PgListener::connect_with(&instance.pool).await?;
    listener.listen(relais_projections::worker::CHECKPOINT_CHANNEL).await?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut seen: Vec<(Instant, u64)> = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(100), listener.recv()).await else {
                    continue;
                };
                let at = Instant::now();
                if let Some(seq) = n.payload().strip_prefix("caseload ").and_then(|s| s.parse::<u64>().ok()) {
                    seen.push((at, seq));
                }
            }
            seen
        })
    };
    let http = reqwest::Client::new();
    let mut lanes: HashMap<String, tokio::sync::mpsc::UnboundedSender<(Instant, Bytes)>> = HashMap::new();
    let mut lane_tasks = tokio::task::JoinSet::new();
    for org in default_organisations() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Bytes)>();
        lanes.insert(org.id.to_string(), tx);
        let http = http.clone();
        let url = format!("{}/v1/events", instance.base);
        let token = instance.tokens.get(org.id.as_str()).cloned().unwrap_or_default();
        lane_tasks.spawn(async move {
            // A few requests of one organisation in flight at once, started in order, as an
            // NGO's system with a small connection pool would send them.
            let mut in_flight = futures::stream::FuturesOrdered::new();
            let mut out = Vec::new();
            let post = |due: Instant, body: Bytes| {
                let (http, url, token) = (http.clone(), url.clone(), token.clone());
                async move {
                    let r = http
                        .post(&url)
                        .bearer_auth(&token)
                        .header("content-type", "application/cloudevents-batch+json")
                        .body(body)
                        .send()
                        .await?;
                    anyhow::ensure!(r.status().is_success(), "freshness batch answered {}", r.status());
                    let answer: Value = r.json().await?;
                    let max_seq =
                        answer["events"].as_array().into_iter().flatten().filter_map(|e| e["sequence"].as_u64()).max();
                    anyhow::Ok((due, max_seq.unwrap_or(0), due.elapsed()))
                }
            };
            loop {
                tokio::select! {
                    next = rx.recv(), if in_flight.len() < LANE_IN_FLIGHT => match next {
                        Some((due, body)) => in_flight.push_back(post(due, body)),
                        None => break,
                    },
                    Some(done) = futures::StreamExt::next(&mut in_flight) => out.push(done?),
                }
            }
            while let Some(done) = futures::StreamExt::next(&mut in_flight).await {
                out.push(done?);
            }
            anyhow::Ok(out)
        });
    }
    let work_before = Work::now(&instance).await?;
    let interval = Duration::from_secs_f64(10.0 / args.freshness_rate as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for (org, body, _) in batches {
        // The batch's clock starts when it is due, not when this loop gets round to it: a
        // delay of the benchmark's own loop counts against Relais.
        let due = ticker.tick().await.into_std();
        let lane = lanes.get(&org).with_context(|| format!("no lane for {org}"))?;
        lane.send((due, body)).map_err(|_| anyhow::anyhow!("the lane of {org} stopped"))?;
    }
    lanes.clear();
    let mut published = Vec::new();
    while let Some(r) = lane_tasks.join_next().await {
        published.extend(r.context("lane")??);
    }
    let mut acks: Vec<f64> = published.iter().map(|p| p.2.as_secs_f64() * 1000.0).collect();
    acks.sort_by(f64::total_cmp);
    let acks_by_due: HashMap<Instant, f64> = published.iter().map(|p| (p.0, p.2.as_secs_f64() * 1000.0)).collect();
    let mut published: Vec<(Instant, u64)> = published.into_iter().map(|p| (p.0, p.1)).collect();
    let target = published.iter().map(|p| p.1).max().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    while instance.checkpoint("caseload").await? < target && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let work = Work::now(&instance).await?.since(&work_before);
    // The last announcement may still be on its way.
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = watcher.await?;
    published.sort_by_key(|p| p.0);
    // The first seconds warm connections and caches up: 2 s, or a tenth of a short run.
    let warm = Duration::from_secs(2).min(Duration::from_millis(args.freshness_secs * 100));
    let warmup = published.first().map(|p| p.0 + warm);
    // Announcements arrive in checkpoint order.
    let visible_after = |at: Instant, seq: u64| {
        let visible = seen.get(seen.partition_point(|(_, s)| *s < seq))?.0;
        Some(visible.saturating_duration_since(at).as_secs_f64() * 1000.0)
    };
    if let Ok(path) = std::env::var("RELAIS_BENCH_FRESHNESS_TRACE") {
        let path = format!("{path}.{}.csv", if sync_always { "always" } else { "default" });
        trace_batches(&path, &published, &acks_by_due, visible_after)?;
    }
    // A batch never seen visible counts, at least, until the wait gave up: never left out.
    let mut unseen = 0usize;
    let mut latencies: Vec<f64> = published
        .iter()
        .filter(|(at, _)| warmup.is_none_or(|w| *at >= w))
        .map(|(at, seq)| {
            visible_after(*at, *seq).unwrap_or_else(|| {
                unseen += 1;
                deadline.saturating_duration_since(*at).as_secs_f64() * 1000.0
            })
        })
        .collect();
    if unseen > 0 {
        eprintln!("  freshness: {unseen} batches never became visible within the wait (counted at the wait's end)");
    }
    latencies.sort_by(f64::total_cmp);
    // The broker's part: the first 300 batches' stored bytes, republished bare one at a time.
    let mut stored = engines::read_stream(&instance.js().await?, "RELAIS").await?.0;
    stored.truncate(3000);
    drop(instance);
    let mut floor = bare_run(dir, sync_always, |c| engines::atomic_batch_latencies(c, &stored, 10)).await?;
    floor.sort_by(f64::total_cmp);
    let mut single = bare_run(dir, sync_always, |c| engines::pipelined_group_latencies(c, &stored, 10)).await?;
    single.sort_by(f64::total_cmp);
    let f = Freshness {
        floor_p50_ms: quantile(&floor, 0.5),
        floor_p99_ms: quantile(&floor, 0.99),
        single_p50_ms: quantile(&single, 0.5),
        single_p99_ms: quantile(&single, 0.99),
        p50_ms: quantile(&latencies, 0.5),
        p99_ms: quantile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        samples: latencies.len(),
        ack_p50_ms: quantile(&acks, 0.5),
        ack_p99_ms: quantile(&acks, 0.99),
        work: work.clone(),
        events: timed.len() as f64,
    };
    let events = f.events;
    eprintln!(
        "  freshness ({}): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} batches (stored: p50 {:.1} ms, p99 {:.1} ms; bare atomic batch of 10: p50 {:.1} ms, p99 {:.1} ms; 10 bare single publishes: p50 {:.1} ms, p99 {:.1} ms)",
        if sync_always { "always" } else { "default" },
        f.p50_ms,
        f.p99_ms,
        f.max_ms,
        f.samples,
        f.ack_p50_ms,
        f.ack_p99_ms,
        f.floor_p50_ms,
        f.floor_p99_ms,
        f.single_p50_ms,
        f.single_p99_ms
    );
    eprintln!(
        "  work ({}): {:.1} WAL records and {:.0} WAL bytes per event, {} WAL syncs, {:.3} ms of busy CPU per event",
        if sync_always { "always" } else { "default" },
        work.wal_records / events,
        work.wal_bytes / events,
        work.wal_syncs,
        work.cpu_busy_secs * 1000.0 / events,
    );
    eprintln!("  CPU per event by process: {}", work.cpu_summary(events));
    Ok(f)
}

/// Writes one line per batch of a freshness run (`RELAIS_BENCH_FRESHNESS_TRACE=path` gives `path.default.csv` and `path.always.csv`), to lay
/// its stalls beside what the machine did at the time: when it was due (Unix time, ms), the
/// gateway's answer and the visibility (ms after due).
fn trace_batches(
    path: &str,
    published: &[(Instant, u64)],
    acks: &HashMap<Instant, f64>,
    visible_after: impl Fn(Instant, u64) -> Option<f64>,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let (now, wall) = (Instant::now(), std::time::SystemTime::now());
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).with_context(|| format!("creating {path}"))?);
    writeln!(out, "due_unix_ms,sequence,stored_ms,visible_ms")?;
    for &(at, seq) in published {
        let due = wall - now.saturating_duration_since(at);
        let due_ms = due.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64() * 1000.0).unwrap_or(0.0);
        let stored = acks.get(&at).copied().unwrap_or(f64::NAN);
        let visible = visible_after(at, seq).unwrap_or(f64::NAN);
        writeln!(out, "{due_ms:.1},{seq},{stored:.2},{visible:.2}")?;
    }
    out.flush()?;
    Ok(())
}

/// Gives a freshness run the history a running system holds: the events are published and
/// projected, then the database is analysed, as autovacuum does on a running system. On an
/// empty database the plans of the first minute are made for empty tables, and some of them
/// scan tables that meanwhile grew (docs/BENCHMARKS.md).
async fn seed(instance: &Instance, events: &[SynthEvent], args: &Args) -> anyhow::Result<()> {
    instance.publish_and_project(events, args).await.context("the freshness history")?;
    sqlx::query("ANALYZE").execute(&instance.pool).await?;
    eprintln!("  freshness history: {} events, projected and analysed", events.len());
    Ok(())
}

/// Peak resident memory of the gateway and the projector after ingesting and projecting the
/// whole history.
pub struct Memory {
    pub gateway_mib: f64,
    pub projector_mib: f64,
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

/// What the loaded instance gives: memory, and the replay and rebuild pairs.
pub struct Loaded {
    pub memory: Memory,
    pub replay: Pair,
    pub rebuild: Pair,
}

pub async fn loaded(args: &Args, history: &[SynthEvent], dir: &Path) -> anyhow::Result<Loaded> {
    let instance = Instance::start(dir, false, true, true).await?;
    let (posted, last) = instance.publish_and_project(history, args).await?;
    eprintln!(
        "  projector caught up {:.1} s after the last publish (validator at {}, caseload at {})",
        posted.elapsed().as_secs_f64(),
        instance.checkpoint("ledger").await?,
        instance.checkpoint("caseload").await?
    );
    let (g, p) = instance.pids();
    let m =
        Memory { gateway_mib: g.map(peak_rss_mib).unwrap_or(0.0), projector_mib: p.map(peak_rss_mib).unwrap_or(0.0) };
    eprintln!(
        "  peak RSS after {} events: gateway {:.1} MiB, projector {:.1} MiB",
        history.len(),
        m.gateway_mib,
        m.projector_mib
    );
    let replay = replay_pair(args, &instance, last).await?;
    let rebuild = rebuild_pair(args, &instance).await?;
    // The peak over the whole run: serving the replays (the gateway) and projecting during the
    // rebuilds (the projector) count too.
    let m = Memory {
        gateway_mib: g.map(peak_rss_mib).unwrap_or(0.0).max(m.gateway_mib),
        projector_mib: p.map(peak_rss_mib).unwrap_or(0.0).max(m.projector_mib),
    };
    eprintln!(
        "  peak RSS over ingest, replay and rebuild: gateway {:.1} MiB, projector {:.1} MiB",
        m.gateway_mib, m.projector_mib
    );
    Ok(Loaded { memory: m, replay, rebuild })
}

/// The rebuild pair on a loaded instance: `relais rebuild --all` (the real command, as a
/// process, with the projector running) against a bare `COPY ... FROM STDIN (FORMAT binary)`
/// of the same final view rows into empty copies of the view tables (same indexes), in one
/// transaction.
async fn rebuild_pair(args: &Args, instance: &Instance) -> anyhow::Result<Pair> {
    let tables: Vec<&str> =
        relais_projections::worker::default_views().iter().flat_map(|v| v.tables()).copied().collect();
    let (mut relais, mut limit) = (Vec::new(), Vec::new());
    let (mut relais_secs, mut limit_secs) = (Vec::new(), Vec::new());
    let mut rows_total = 0u64;
    let mut events_total = 0u64;
    let mut rebuild_rss = Vec::new();
    for rep in 0..args.reps {
        for side in if rep % 2 == 0 { [0, 1] } else { [1, 0] } {
            if side == 0 {
                let started = Instant::now();
                let env = instance.env.clone();
                let (out, peak) = tokio::task::spawn_blocking(move || rebuild_process(&env)).await??;
                let elapsed = started.elapsed().as_secs_f64();
                rebuild_rss.push(peak);
                let text = String::from_utf8_lossy(&out.stdout);
                anyhow::ensure!(out.status.success(), "relais rebuild --all failed: {text}");
                // "<view>: <n> events in ..." — every view applied the same events.
                events_total = text
                    .lines()
                    .filter_map(|l| l.split(": ").nth(1)?.split(' ').next()?.parse::<u64>().ok())
                    .max()
                    .unwrap_or(0);
                anyhow::ensure!(events_total > 0, "relais rebuild --all reported no events: {text}");
                relais.push(events_total as f64 / elapsed);
                relais_secs.push(elapsed);
            } else {
                let (rows, secs) = bare_copy(&instance.pool, &tables).await?;
                rows_total = rows;
                limit.push(rows as f64 / secs);
                limit_secs.push(secs);
            }
        }
    }
    // The ratio compares events/s with rows/s, so the views' rows per event cap it; the time
    // each side takes to produce the same rows is reported beside it.
    let (relais_secs, limit_secs) = (median(relais_secs), median(limit_secs));
    let time_ratio = if relais_secs > 0.0 { limit_secs / relais_secs } else { 0.0 };
    let rows_per_event = if events_total > 0 { rows_total as f64 / events_total as f64 } else { 0.0 };
    let rebuild_rss = rebuild_rss.into_iter().fold(0.0, f64::max);
    eprintln!(
        "  rebuild: relais {:.0} events/s ({events_total} events, {relais_secs:.2} s, peak RSS {rebuild_rss:.1} MiB), \
         bare COPY {:.0} rows/s ({rows_total} rows, {rows_per_event:.1} per event, {limit_secs:.2} s); time ratio \
         {time_ratio:.2}",
        median(relais.clone()),
        median(limit.clone())
    );
    Ok(Pair {
        name: "rebuild",
        relais: median(relais),
        limit: median(limit),
        note: format!(
            "relais rebuild --all ({events_total} events, {} views, one read of the log) against a bare binary COPY of the {rows_total} final view rows into empty tables with the same indexes",
            relais_projections::worker::default_views().len()
        ),
        cpu: None,
        more: serde_json::Map::from_iter([
            ("rows_per_event".to_owned(), json!(rows_per_event)),
            ("relais_seconds".to_owned(), json!(relais_secs)),
            ("limit_seconds".to_owned(), json!(limit_secs)),
            ("time_ratio".to_owned(), json!(time_ratio)),
            ("rebuild_peak_rss_mib".to_owned(), json!(rebuild_rss)),
        ]),
    })
}

/// Runs `relais rebuild --all` and follows its peak resident memory (VmHWM, read every 20 ms
/// while it runs: it misses at most what the last 20 ms added). Blocking: run it off the runtime.
fn rebuild_process(env: &[(String, String)]) -> anyhow::Result<(std::process::Output, f64)> {
    let mut child = Command::new(relais_binary()?)
        .args(["rebuild", "--all"])
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot run relais rebuild")?;
    let mut stdout = child.stdout.take().context("the rebuild's output")?;
    let reader = std::thread::spawn(move || {
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut stdout, &mut text).map(|_| text)
    });
    let mut peak = 0.0f64;
    let status = loop {
        peak = peak.max(peak_rss_mib(child.id()));
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                // A rebuild left running would weigh on every later measurement.
                let _ = child.kill();
                let _ = child.wait();
                return Err(e.into());
            }
        }
    };
    let stdout = reader.join().map_err(|_| anyhow::anyhow!("the rebuild's output reader panicked"))??;
    Ok((std::process::Output { status, stdout, stderr: Vec::new() }, peak))
}

/// Copies the rows of `tables` out, then times loading them into empty copies of the tables
/// (same columns, constraints and indexes) with binary `COPY`: rows and seconds.
async fn bare_copy(pool: &sqlx::PgPool, tables: &[&str]) -> anyhow::Result<(u64, f64)> {
    use futures::TryStreamExt;
    let mut conn = pool.acquire().await?;
    let mut dumps: Vec<(&str, Vec<bytes::Bytes>)> = Vec::new();
    for t in tables {
        let chunks: Vec<bytes::Bytes> =
            conn.copy_out_raw(&format!("COPY {t} TO STDOUT (FORMAT binary)")).await?.try_collect().await?;
        dumps.push((t, chunks));
    }
    let mut rows = 0u64;
    for t in tables {
        rows += sqlx::query_scalar::<_, i64>(&format!("SELECT count(*) FROM {t}")).fetch_one(&mut *conn).await? as u64;
    }
    sqlx::query("DROP SCHEMA IF EXISTS bench_copy CASCADE").execute(&mut *conn).await?;
    sqlx::query("CREATE SCHEMA bench_copy").execute(&mut *conn).await?;
    for t in tables {
        sqlx::query(&format!("CREATE TABLE bench_copy.{t} (LIKE public.{t} INCLUDING ALL)"))
            .execute(&mut *conn)
            .await?;
    }
    let started = Instant::now();
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    for (t, chunks) in &dumps {
        let mut copy = tx.copy_in_raw(&format!("COPY bench_copy.{t} FROM STDIN (FORMAT binary)")).await?;
        for c in chunks {
            copy.send(c.as_ref()).await?;
        }
        copy.finish().await?;
    }
    tx.commit().await?;
    let secs = started.elapsed().as_secs_f64();
    sqlx::query("DROP SCHEMA bench_copy CASCADE").execute(&mut *conn).await?;
    Ok((rows, secs))
}

/// The replay pair on a loaded instance: `GET /v1/audit/events` read to the end by an HTTP
/// client, against a bare ordered JetStream consumer over the same stream.
async fn replay_pair(args: &Args, instance: &Instance, last: u64) -> anyhow::Result<Pair> {
    use futures::StreamExt;
    let coordination = relais_domain::OrgId::parse("coordination").map_err(|e| anyhow::anyhow!("{e}"))?;
    let auditor = TokenStore::new(instance.pool.clone()).create(&coordination, Role::Auditor, "bench").await?.1;
    let http = reqwest::Client::new();
    let js = instance.js().await?;
    // Ingest and projection leave dirty pages whose write-back (kernel threads) otherwise takes
    // CPU from whichever side runs first; the replay itself writes nothing.
    settle().await?;
    let (mut relais, mut limit) = (Vec::new(), Vec::new());
    // The CPU each process spent on each side: what the ratio is made of on a small machine.
    let mut work = [Work::default(), Work::default()];
    // The longest wait for the next bytes on each side: a stall shows as one long gap, a slow
    // read as none.
    let mut gaps = [0.0f64; 2];
    for rep in 0..args.reps {
        for side in if rep % 2 == 0 { [0, 1] } else { [1, 0] } {
            let before = Work::now(instance).await?;
            let started = Instant::now();
            if side == 0 {
                let r = http.get(format!("{}/v1/audit/events", instance.base)).bearer_auth(&auditor).send().await?;
                anyhow::ensure!(r.status().is_success(), "replay answered {}", r.status());
                let mut body = r.bytes_stream();
                let mut lines = 0u64;
                let mut previous = Instant::now();
                while let Some(chunk) = body.next().await {
                    lines += chunk?.iter().filter(|b| **b == b'\n').count() as u64;
                    gaps[0] = gaps[0].max(previous.elapsed().as_secs_f64());
                    previous = Instant::now();
                }
                anyhow::ensure!(lines >= last, "replay gave {lines} lines for {last} events");
                relais.push(last as f64 / started.elapsed().as_secs_f64());
            } else {
                let (messages, _, gap) = engines::consume_stream(&js, "RELAIS").await?;
                gaps[1] = gaps[1].max(gap);
                anyhow::ensure!(messages == last, "ordered consumer read {messages}");
                limit.push(last as f64 / started.elapsed().as_secs_f64());
            }
            work[side].add(Work::now(instance).await?.since(&before));
        }
    }
    eprintln!(
        "  replay: relais {:.0} events/s, bare ordered consumer {:.0} events/s (longest wait for the next bytes: \
         {:.0} and {:.0} ms)",
        median(relais.clone()),
        median(limit.clone()),
        gaps[0] * 1e3,
        gaps[1] * 1e3
    );
    let events = last as f64 * args.reps as f64;
    for (side, w) in ["relais", "bare"].iter().zip(&work) {
        eprintln!("    CPU per event, {side} side: {}", w.cpu_summary(events));
    }
    Ok(Pair {
        name: "replay",
        relais: median(relais),
        limit: median(limit),
        note: "GET /v1/audit/events (decoded, opened, NDJSON with chain links) read to the end, against a bare ordered consumer"
            .into(),
        cpu: Some(json!({ "relais": work[0].cpu_json(events), "limit": work[1].cpu_json(events) })),
        more: serde_json::Map::from_iter([
            ("relais_longest_gap_ms".to_owned(), json!(gaps[0] * 1e3)),
            ("limit_longest_gap_ms".to_owned(), json!(gaps[1] * 1e3)),
        ]),
    })
}
