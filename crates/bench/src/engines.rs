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

/// Reads back every message of a stream, in order.
pub async fn read_stream(js: &jetstream::Context, stream: &str) -> anyhow::Result<Vec<StoredMessage>> {
    let mut s = js.get_stream(stream).await?;
    let last = s.info().await?.state.last_sequence;
    let consumer = s
        .create_consumer(jetstream::consumer::pull::OrderedConfig {
            filter_subject: "relais.ev.>".into(),
            ..Default::default()
        })
        .await?;
    let mut messages = consumer.messages().await?;
    let mut out = Vec::with_capacity(last as usize);
    while let Some(m) = messages.next().await {
        let m = m?;
        let seq = m.info().map_err(|e| anyhow::anyhow!("{e}"))?.stream_sequence;
        let msg_id =
            m.headers.as_ref().and_then(|h| h.get(NATS_MESSAGE_ID)).map(|v| v.as_str().to_owned()).unwrap_or_default();
        out.push(StoredMessage { subject: m.subject.to_string(), msg_id, payload: m.payload.clone() });
        if seq >= last {
            break;
        }
    }
    Ok(out)
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

/// Publishes atomic batches of `batch` from `publishers` concurrent tasks: events per second.
pub async fn publish_atomic_batches(
    client: async_nats::Client,
    messages: &[StoredMessage],
    batch: usize,
    publishers: usize,
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
                    let mut h = HeaderMap::new();
                    h.insert(NATS_MESSAGE_ID, m.msg_id.as_str());
                    h.insert(NATS_BATCH_ID, id.as_str());
                    h.insert(NATS_BATCH_SEQUENCE, (i + 1).to_string().as_str());
                    if i == last {
                        h.insert(NATS_BATCH_COMMIT, "1");
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
