//! Reading the log: durable consumers for projection workers, ordered reads for replays, and
//! the stream's last sequence for lag.

use async_nats::HeaderName;
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use std::time::Duration;

/// Why the log could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A JetStream API call failed.
    #[error("event log: {0}")]
    Api(String),
}

fn api(e: impl std::fmt::Display) -> ReadError {
    ReadError::Api(e.to_string())
}

/// One message of the log, as a reader sees it.
#[derive(Debug, Clone)]
pub struct LogMessage {
    /// Stream sequence.
    pub sequence: u64,
    /// Subject.
    pub subject: String,
    /// The stored bytes.
    pub payload: Bytes,
    /// When the broker stored it.
    pub stored_at: DateTime<Utc>,
    /// The W3C `traceparent` header, if the publisher sent one.
    pub traceparent: Option<String>,
    /// The `Relais-Admission` header, if the publisher sent one.
    pub admission: Option<String>,
}

/// How long a projection batch waits for messages the broker still holds for its consumer.
pub const BATCH_FILL_WAIT: Duration = Duration::from_millis(2);

/// A durable pull consumer of one projection, positioned just after its checkpoint.
pub struct ProjectionConsumer {
    messages: consumer::pull::Stream,
    last_delivered: Option<jetstream::Message>,
    /// The highest sequence this consumer delivered.
    highest: u64,
    /// The batch being filled, kept here across a cancelled [`ProjectionConsumer::next_batch`].
    filling: Option<Filling>,
}

/// A batch being filled.
struct Filling {
    batch: Vec<LogMessage>,
    /// Messages the broker still held for the consumer after the last one taken.
    pending: u64,
    /// When the batch stops waiting.
    until: tokio::time::Instant,
}

/// Whether a delivered message is new to this consumer, moving `highest`. A message held
/// unacknowledged beyond the ack wait (a worker waiting for its validator, or for a lock) is
/// delivered again, possibly into the same batch as its first copy: the copy is dropped, so
/// that no projection applies a sequence twice.
fn first_delivery(highest: &mut u64, sequence: u64) -> bool {
    let new = sequence > *highest;
    *highest = (*highest).max(sequence);
    new
}

/// Opens the durable consumer `name` over `filter`, delivering from `after_sequence + 1`.
///
/// The PostgreSQL checkpoint is the truth, not the consumer's ack floor: the consumer is
/// recreated at each start so that a crash between commit and ack, or before the commit,
/// resumes exactly after the checkpoint without waiting for redelivery timeouts.
pub async fn open_projection_consumer(
    stream: &jetstream::stream::Stream,
    name: &str,
    filter: &str,
    after_sequence: u64,
    batch_size: usize,
) -> Result<ProjectionConsumer, ReadError> {
    // Deleting a consumer that does not exist is not an error worth stopping for.
    let _ = stream.delete_consumer(name).await;
    let deliver_policy = if after_sequence == 0 {
        consumer::DeliverPolicy::All
    } else {
        consumer::DeliverPolicy::ByStartSequence { start_sequence: after_sequence + 1 }
    };
    let config = consumer::pull::Config {
        durable_name: Some(name.to_owned()),
        filter_subject: filter.to_owned(),
        deliver_policy,
        ack_policy: consumer::AckPolicy::All,
        ack_wait: Duration::from_secs(60),
        max_ack_pending: (batch_size * 4) as i64,
        ..Default::default()
    };
    let consumer = stream.create_consumer(config).await.map_err(api)?;
    let messages = consumer
        .stream()
        .max_messages_per_batch(batch_size)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(api)?;
    Ok(ProjectionConsumer { messages, last_delivered: None, highest: after_sequence, filling: None })
}

fn to_log_message(m: &jetstream::Message) -> Result<LogMessage, ReadError> {
    let info = m.info().map_err(api)?;
    Ok(log_message(m, &info))
}

/// The message with its already parsed delivery info (parsing it is a good part of the cost of
/// reading a message).
fn log_message(m: &jetstream::Message, info: &jetstream::message::Info<'_>) -> LogMessage {
    // A name from a static string: looking a header up by `&str` validates and copies it.
    let header = |name: &'static str| {
        let name = HeaderName::from_static(name);
        m.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned())
    };
    LogMessage {
        sequence: info.stream_sequence,
        subject: m.subject.to_string(),
        payload: m.payload.clone(),
        stored_at: info.published,
        traceparent: header(crate::headers::TRACEPARENT),
        admission: header(crate::headers::ADMISSION),
    }
}

impl ProjectionConsumer {
    /// Waits for at least one message, then takes every message already delivered, up to
    /// `max`: batches grow under load and stay small (fresh) when the log is quiet. While the
    /// broker says more is stored for this consumer, the batch waits for it a moment
    /// ([`BATCH_FILL_WAIT`]): a worker catching up would otherwise commit a transaction per
    /// delivery of a few hundred messages. Messages delivered again are left out, so a batch
    /// holds rising sequences (it may be empty).
    ///
    /// Cancel-safe (workers race it against their clock and shutdown): what a cancelled call
    /// took waits in the consumer for the next call.
    pub async fn next_batch(&mut self, max: usize) -> Result<Vec<LogMessage>, ReadError> {
        if self.filling.is_none() {
            let first = match self.messages.next().await {
                Some(m) => m.map_err(api)?,
                None => return Err(ReadError::Api("consumer stream ended".into())),
            };
            let mut batch = Vec::new();
            let pending = self.take(first, &mut batch)?;
            let until = tokio::time::Instant::now() + BATCH_FILL_WAIT;
            self.filling = Some(Filling { batch, pending, until });
        }
        while let Some((len, pending, until)) = self.filling.as_ref().map(|f| (f.batch.len(), f.pending, f.until))
            && len < max
        {
            // Without more stored for the consumer, only what is already delivered.
            let until = if pending > 0 { until } else { tokio::time::Instant::now() };
            let Some(Some(m)) = next_until(&mut self.messages, until).await else { break };
            let m = m.map_err(api)?;
            // No await from here until the batch is back in place.
            if let Some(mut filling) = self.filling.take() {
                let taken = self.take(m, &mut filling.batch);
                filling.pending = *taken.as_ref().unwrap_or(&0);
                self.filling = Some(filling);
                taken?;
            }
        }
        Ok(self.filling.take().map(|f| f.batch).unwrap_or_default())
    }

    /// Takes a delivered message into `out` unless it was delivered before; returns how many
    /// messages the broker still holds for this consumer after it.
    fn take(&mut self, m: jetstream::Message, out: &mut Vec<LogMessage>) -> Result<u64, ReadError> {
        let info = m.info().map_err(api)?;
        let pending = info.pending;
        let message = log_message(&m, &info);
        if first_delivery(&mut self.highest, message.sequence) {
            out.push(message);
            // Acknowledging all up to the highest delivered covers the copies left out.
            self.last_delivered = Some(m);
        } else {
            tracing::debug!(seq = message.sequence, "a message delivered again is left out");
        }
        Ok(pending)
    }

    /// Acknowledges everything delivered so far (AckAll), once the batch is committed.
    pub async fn ack_delivered(&mut self) -> Result<(), ReadError> {
        if let Some(m) = self.last_delivered.take() {
            m.ack().await.map_err(|e| ReadError::Api(e.to_string()))?;
        }
        Ok(())
    }
}

/// The next item of `items`: at once when it is already there (without a timer), otherwise the
/// one that comes before `until`; `None` when none came in time. Batches and chunks fill up
/// with it: a delivery of the log holds a few hundred messages.
pub async fn next_until<S: futures::Stream + Unpin>(
    items: &mut S,
    until: tokio::time::Instant,
) -> Option<Option<S::Item>> {
    match futures::FutureExt::now_or_never(items.next()) {
        Some(next) => Some(next),
        None => tokio::time::timeout_at(until, items.next()).await.ok(),
    }
}

/// The stream's last sequence (0 when empty).
pub async fn last_sequence(stream: &jetstream::stream::Stream) -> Result<u64, ReadError> {
    Ok(stream.get_info().await.map_err(api)?.state.last_sequence)
}

/// Reads stored messages in order from `from_sequence`, with an ordered consumer (no acks,
/// flow-controlled): what replays and `as of` reconstructions use.
pub async fn ordered_messages(
    stream: &jetstream::stream::Stream,
    filter: &str,
    from_sequence: u64,
) -> Result<impl futures::Stream<Item = Result<LogMessage, ReadError>> + use<>, ReadError> {
    let deliver_policy = if from_sequence <= 1 {
        consumer::DeliverPolicy::All
    } else {
        consumer::DeliverPolicy::ByStartSequence { start_sequence: from_sequence }
    };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(api)?;
    let messages = consumer.messages().await.map_err(api)?;
    Ok(messages.map(|m| to_log_message(&m.map_err(api)?)))
}

/// Reads the stored messages of `filter` with sequences `from_sequence..=to_sequence` in order,
/// with an ordered consumer, and ends: at `to_sequence`, or at the last message stored when
/// the read started if that comes first. Memory stays bounded by the consumer's batch.
pub async fn ordered_range(
    stream: &jetstream::stream::Stream,
    filter: &str,
    from_sequence: u64,
    to_sequence: u64,
) -> Result<futures::stream::BoxStream<'static, Result<LogMessage, ReadError>>, ReadError> {
    let from_sequence = from_sequence.max(1);
    if to_sequence < from_sequence {
        return Ok(futures::stream::empty().boxed());
    }
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: from_sequence },
            ..Default::default()
        })
        .await
        .map_err(api)?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(futures::stream::empty().boxed());
    }
    let messages = consumer.messages().await.map_err(api)?;
    Ok(futures::stream::unfold((messages, false), move |(mut messages, done)| async move {
        if done {
            return None;
        }
        let m = match messages.next().await? {
            Ok(m) => m,
            Err(e) => return Some((Err(api(e)), (messages, true))),
        };
        let info = match m.info() {
            Ok(info) => info,
            Err(e) => return Some((Err(api(e)), (messages, true))),
        };
        let lm = log_message(&m, &info);
        if lm.sequence > to_sequence {
            return None;
        }
        let end = lm.sequence >= to_sequence || info.pending == 0;
        Some((Ok(lm), (messages, end)))
    })
    .fuse()
    .boxed())
}

/// The sequence of the last message stored on `subject` (no wildcards), if any.
pub async fn last_sequence_of_subject(
    stream: &jetstream::stream::Stream,
    subject: &str,
) -> Result<Option<u64>, ReadError> {
    match stream.get_last_raw_message_by_subject(subject).await {
        Ok(m) => Ok(Some(m.sequence)),
        Err(e) if matches!(e.kind(), jetstream::stream::LastRawMessageErrorKind::NoMessageFound) => Ok(None),
        Err(e) => Err(api(e)),
    }
}

/// The messages of one subject filter with a sequence below `before_sequence`, in order: an
/// aggregate's history up to an event (aggregates are short, so this is read whole). One
/// direct get per message, and no consumer: when thousands of histories are read, creating and
/// deleting a consumer for each cost the server twice as much (docs/BENCHMARKS.md).
pub async fn subject_history(
    stream: &jetstream::stream::Stream,
    filter: &str,
    before_sequence: u64,
) -> Result<Vec<LogMessage>, ReadError> {
    use async_nats::jetstream::stream::DirectGetErrorKind;
    let mut out = Vec::new();
    let mut from = 1;
    while from < before_sequence {
        match stream.direct_get_next_for_subject(filter, Some(from)).await {
            Ok(m) if m.sequence < before_sequence => {
                from = m.sequence + 1;
                out.push(stream_message(m));
            }
            Ok(_) => break,
            Err(e) if e.kind() == DirectGetErrorKind::NotFound => break,
            Err(e) => return Err(api(e)),
        }
    }
    Ok(out)
}

fn stream_message(m: async_nats::jetstream::message::StreamMessage) -> LogMessage {
    let traceparent = m.headers.get(crate::headers::TRACEPARENT).map(|v| v.as_str().to_owned());
    LogMessage {
        sequence: m.sequence,
        subject: m.subject.to_string(),
        payload: m.payload,
        stored_at: m.time,
        traceparent,
        admission: m.headers.get(crate::headers::ADMISSION).map(|v| v.as_str().to_owned()),
    }
}

/// The message stored at `sequence`, read from the stream leader (so it is never stale);
/// `None` if the stream holds no message there.
pub async fn message_at(stream: &jetstream::stream::Stream, sequence: u64) -> Result<Option<LogMessage>, ReadError> {
    use async_nats::jetstream::stream::RawMessageErrorKind;
    match stream.get_raw_message(sequence).await {
        Ok(m) => Ok(Some(stream_message(m))),
        Err(e) if matches!(e.kind(), RawMessageErrorKind::NoMessageFound) => Ok(None),
        Err(e) => Err(api(e)),
    }
}

/// Every message stored so far whose subject matches `filter` (wildcards allowed), in order,
/// one direct get per message: for small sets such as the erasures (`relais.ev.*.clients.*`).
pub async fn messages_matching(stream: &jetstream::stream::Stream, filter: &str) -> Result<Vec<LogMessage>, ReadError> {
    use async_nats::jetstream::stream::DirectGetErrorKind;
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        match stream.direct_get_next_for_subject(filter, Some(from)).await {
            Ok(m) => {
                from = m.sequence + 1;
                out.push(stream_message(m));
            }
            Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => return Ok(out),
            Err(e) => return Err(api(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::first_delivery;

    #[test]
    fn a_message_delivered_again_into_the_same_batch_is_left_out() {
        // Given a consumer positioned after 4, when 5, 6 and 7 arrive, then 5 and 6 again
        // (held beyond the ack wait) and 8, then each sequence is taken once, in order.
        let mut highest = 4;
        let kept: Vec<u64> = [5, 6, 7, 5, 6, 8, 4].into_iter().filter(|s| first_delivery(&mut highest, *s)).collect();
        assert_eq!(kept, vec![5, 6, 7, 8]);
        assert_eq!(highest, 8);
    }
}
