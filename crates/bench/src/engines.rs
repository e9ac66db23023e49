//! The limit side: the engines alone, doing the same work with the same bytes.

use anyhow::Context as _;
use async_nats::header::{HeaderMap, NATS_BATCH_COMMIT, NATS_BATCH_ID, NATS_BATCH_SEQUENCE, NATS_MESSAGE_ID};
use async_nats::jetstream;
use bytes::Bytes;
use futures::StreamExt;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

/// One stored message, as Relais stored it: what the bare publisher republishes.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// Subject.
    pub subject: String,
    /// Message id (the event id).
    pub msg_id: String,
    /// The stored bytes.
    pub payload: Bytes,
    /// The other headers Relais stored with it (admission tag, type, version, trace context).
    pub headers: Vec<(String, String)>,
}

/// The headers of message `i` (from 0) of an atomic batch: its id, the batch's, the commit on
/// the last, and with `stored_headers` the other headers Relais stored with it.
fn batch_headers(m: &StoredMessage, batch_id: &str, i: usize, last: bool, stored_headers: bool) -> HeaderMap {
    let mut h = HeaderMap::new();
    if stored_headers {
        for (name, value) in &m.headers {
            h.insert(name.as_str(), value.as_str());
        }
    }
    h.insert(NATS_MESSAGE_ID, m.msg_id.as_str());
    h.insert(NATS_BATCH_ID, batch_id);
    h.insert(NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
    if last {
        h.insert(NATS_BATCH_COMMIT, "1");
    }
    h
}

/// fdatasync calls per second on the disk that holds `dir` (8 KiB writes), measured for 2 s.
pub fn fsync_rate(dir: &Path) -> anyhow::Result<f64> {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let block = vec![0u8; 8192];
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        f.write_all(&block)?;
        f.sync_data()?;
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    std::fs::remove_file(&path)?;
    Ok(rate)
}

/// fsync and fdatasync calls of a process, counted by `perf stat` on the syscall tracepoints
/// while it runs (no tracing, no slowdown worth measuring).
pub struct SyncCounter {
    child: std::process::Child,
    out: std::path::PathBuf,
}

/// Events stored and disk syncs made to store them.
#[derive(Debug, Clone, Copy)]
pub struct SyncCount {
    /// Events stored while counting.
    pub events: u64,
    /// fsync and fdatasync calls.
    pub syncs: u64,
}

impl SyncCount {
    /// Events carried by each disk sync.
    pub fn events_per_sync(&self) -> f64 {
        self.events as f64 / self.syncs.max(1) as f64
    }
}

impl SyncCounter {
    /// Starts counting the syncs of `pid`; `None` where perf cannot (not installed, not
    /// permitted): the caller falls back to the bound from the disk's fsync rate.
    pub fn attach(pid: u32) -> Option<Self> {
        let out = std::env::temp_dir().join(format!("relais-bench-perf-{}.csv", uuid::Uuid::new_v4().simple()));
        let child = std::process::Command::new("perf")
            .args(["stat", "-x,", "-e", "syscalls:sys_enter_fsync,syscalls:sys_enter_fdatasync", "-o"])
            .arg(&out)
            .args(["-p", &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        // perf needs a moment to attach to the tracepoints.
        std::thread::sleep(Duration::from_millis(300));
        Some(Self { child, out })
    }

    /// Stops counting (SIGINT, as perf expects) and reads the counts.
    pub fn finish(mut self, events: u64) -> Option<SyncCount> {
        let _ = std::process::Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let status = self.child.wait().ok()?;
        let text = std::fs::read_to_string(&self.out).ok();
        let _ = std::fs::remove_file(&self.out);
        if !status.success() && text.is_none() {
            return None;
        }
        let mut syncs = 0u64;
        let mut found = false;
        for line in text?.lines() {
            let mut fields = line.split(',');
            let (Some(value), Some(event)) = (fields.next(), fields.nth(1)) else { continue };
            if event.contains("sys_enter_f") {
                syncs += value.trim().parse::<u64>().ok()?;
                found = true;
            }
        }
        found.then_some(SyncCount { events, syncs })
    }
}

/// Reads back every event message of `stream` with a bare ordered consumer; also the longest wait
/// for one message, in seconds.
pub async fn read_stream(js: &jetstream::Context, stream: &str) -> anyhow::Result<(Vec<StoredMessage>, f64)> {
    let mut out = Vec::new();
    let gap = read_to_last(js, stream, |m| {
        let mut msg_id = String::new();
        let mut headers = Vec::new();
        for (name, values) in m.headers.iter().flat_map(|h| h.iter()) {
            let Some(value) = values.first() else { continue };
            if AsRef::<str>::as_ref(name) == AsRef::<str>::as_ref(&NATS_MESSAGE_ID) {
                msg_id = value.as_str().to_owned();
            } else if !AsRef::<str>::as_ref(name).to_ascii_lowercase().starts_with("nats-") {
                // The broker's own headers (the batch's id, sequence and commit) stay out.
                headers.push((name.to_string(), value.as_str().to_owned()));
            }
        }
        out.push(StoredMessage { subject: m.subject.to_string(), msg_id, payload: m.payload.clone(), headers });
    })
    .await?;
    Ok((out, gap))
}

/// Reads the stream to its last message with a bare ordered consumer, keeping nothing: the
/// replay pair's limit side (what an auditor's own client could do with the broker alone).
/// Returns the messages read, their payload bytes and the longest wait for the next message.
pub async fn consume_stream(js: &jetstream::Context, stream: &str) -> anyhow::Result<(u64, u64, f64)> {
    let (mut count, mut bytes) = (0u64, 0u64);
    let gap = read_to_last(js, stream, |m| {
        count += 1;
        bytes += m.payload.len() as u64;
    })
    .await?;
    Ok((count, bytes, gap))
}

/// Hands every event message of `stream`, from the first to the last stored when it starts, to
/// `each`, through a bare ordered consumer; returns the longest wait for a message, in seconds.
async fn read_to_last(
    js: &jetstream::Context,
    stream: &str,
    mut each: impl FnMut(&jetstream::Message),
) -> anyhow::Result<f64> {
    let mut s = js.get_stream(stream).await?;
    let last = s.info().await?.state.last_sequence;
    let consumer = s
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: "relais.ev.>".into(),
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let (mut previous, mut gap) = (std::time::Instant::now(), 0.0f64);
    while let Some(m) = messages.next().await {
        gap = gap.max(previous.elapsed().as_secs_f64());
        previous = std::time::Instant::now();
        let m = m?;
        let seq = m.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence;
        each(&m);
        if seq >= last {
            break;
        }
    }
    Ok(gap)
}

/// Creates the bare stream: the same settings Relais uses.
pub async fn bare_stream(js: &jetstream::Context) -> anyhow::Result<()> {
    relais_eventlog::ensure_stream(js, &relais_eventlog::StreamSettings::default()).await?;
    Ok(())
}

/// Publishes with pipelined acknowledgements (up to 5,000 in flight): events per second.
pub async fn publish_pipelined(client: async_nats::Client, messages: &[StoredMessage]) -> anyhow::Result<f64> {
    // Under `sync_interval: always` single publishes are slow: allow each ack a long wait.
    let js = jetstream::context::ContextBuilder::new()
        .timeout(Duration::from_secs(120))
        .ack_timeout(Duration::from_secs(120))
        .build(client);
    let started = Instant::now();
    let mut pending = futures::stream::FuturesUnordered::new();
    for m in messages {
        let ack = js
            .send_publish(
                m.subject.clone(),
                jetstream::message::PublishMessage::build().payload(m.payload.clone()).message_id(m.msg_id.as_str()),
            )
            .await?;
        pending.push(ack.into_future());
        while pending.len() >= 5000 {
            if let Some(r) = pending.next().await {
                r?;
            }
        }
    }
    while let Some(r) = pending.next().await {
        r?;
    }
    Ok(messages.len() as f64 / started.elapsed().as_secs_f64())
}

/// Latencies (ms) of publishing `messages` as atomic batches of `size`, one batch at a time:
/// what the broker alone takes to store each small batch of the same bytes.
pub async fn atomic_batch_latencies(
    client: async_nats::Client,
    messages: &[StoredMessage],
    size: usize,
) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for chunk in messages.chunks(size) {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let started = Instant::now();
        for (i, m) in chunk.iter().enumerate() {
            let h = batch_headers(m, &id, i, i + 1 == chunk.len(), false);
            if i + 1 == chunk.len() {
                let reply = client.request_with_headers(m.subject.clone(), h, m.payload.clone()).await?;
                anyhow::ensure!(!String::from_utf8_lossy(&reply.payload).contains("\"error\""), "batch refused");
            } else {
                client.publish_with_headers(m.subject.clone(), h, m.payload.clone()).await?;
            }
        }
        out.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}

/// Latencies (ms) of publishing `messages` in groups of `size` as single publishes, the group's
/// acknowledgements awaited together, one group at a time: the broker's time for the same bytes
/// without an atomic batch's staging (beside [`atomic_batch_latencies`]).
pub async fn pipelined_group_latencies(
    client: async_nats::Client,
    messages: &[StoredMessage],
    size: usize,
) -> anyhow::Result<Vec<f64>> {
    let js = jetstream::new(client);
    let mut out = Vec::new();
    for chunk in messages.chunks(size) {
        let started = Instant::now();
        let mut acks = Vec::with_capacity(chunk.len());
        for m in chunk {
            let message =
                jetstream::message::PublishMessage::build().payload(m.payload.clone()).message_id(m.msg_id.as_str());
            acks.push(js.send_publish(m.subject.clone(), message).await?);
        }
        for ack in acks {
            ack.await?;
        }
        out.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(out)
}

/// Publishes atomic batches of `batch` from `publishers` concurrent tasks: events per second.
/// With `stored_headers`, each message also carries the other headers Relais stored with it.
pub async fn publish_atomic_batches(
    client: async_nats::Client,
    messages: &[StoredMessage],
    batch: usize,
    publishers: usize,
    stored_headers: bool,
) -> anyhow::Result<f64> {
    let chunks: Vec<Vec<StoredMessage>> = messages.chunks(batch).map(<[StoredMessage]>::to_vec).collect();
    let queue = std::sync::Arc::new(tokio::sync::Mutex::new(chunks.into_iter()));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..publishers {
        let client = client.clone();
        let queue = queue.clone();
        tasks.spawn(async move {
            loop {
                let Some(chunk) = queue.lock().await.next() else { return anyhow::Ok(()) };
                let id = uuid::Uuid::new_v4().simple().to_string();
                let last = chunk.len() - 1;
                for (i, m) in chunk.iter().enumerate() {
                    let h = batch_headers(m, &id, i, i == last, stored_headers);
                    if i == last {
                        let reply = client.request_with_headers(m.subject.clone(), h, m.payload.clone()).await?;
                        let text = String::from_utf8_lossy(&reply.payload);
                        anyhow::ensure!(!text.contains("\"error\""), "batch refused: {text}");
                    } else {
                        client.publish_with_headers(m.subject.clone(), h, m.payload.clone()).await?;
                    }
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("publisher task")??;
    }
    Ok(messages.len() as f64 / started.elapsed().as_secs_f64())
}
