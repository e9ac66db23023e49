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
    /// A projection consumer got nothing for [`PROJECTION_STALL`] while the broker said it held
    /// more for it, or its idle heartbeat went missing: most likely the client stopped asking
    /// (see [`ORDERED_STALL`]), else the broker was that slow. Reopening the consumer at the
    /// checkpoint resumes it.
    #[error("event log: the consumer got nothing for {waited:?} after sequence {after}")]
    Stalled {
        /// The last sequence the consumer delivered.
        after: u64,
        /// How long it waited.
        waited: Duration,
    },
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
    /// The W3C `tracestate` header that goes with it, if any.
    pub tracestate: Option<String>,
    /// The `Relais-Admission` header, if the publisher sent one.
    pub admission: Option<String>,
    /// The `Nats-Msg-Id` header, by which the broker deduplicated the message within its
    /// window, if the publisher sent one (the gateway sends the event's id).
    pub message_id: Option<String>,
}

/// How long a projection batch waits for messages the broker still holds for its consumer.
pub const BATCH_FILL_WAIT: Duration = Duration::from_millis(2);

/// How long a projection consumer waits for its next message while the broker still holds more
/// for it, before [`ProjectionConsumer::next_batch`] gives up with [`ReadError::Stalled`] (the
/// worker then reopens it at its checkpoint). The durable pull stream of async-nats 0.51 can
/// miscount what its pull requests are owed as the ordered one can ([`ORDERED_STALL`]); with no
/// request left at the broker its idle heartbeat goes missing, but only after twice
/// [`PROJECTION_HEARTBEAT`] (that too is reported as [`ReadError::Stalled`]: at the head of the
/// log, where nothing more is stored, it is the only sign).
pub const PROJECTION_STALL: Duration = Duration::from_secs(2);

/// The idle heartbeat a projection consumer's pull requests ask the broker for.
pub const PROJECTION_HEARTBEAT: Duration = Duration::from_secs(5);

/// A durable pull consumer of one projection, positioned just after its checkpoint.
pub struct ProjectionConsumer {
    messages: consumer::pull::Stream,
    last_delivered: Option<jetstream::Message>,
    /// The highest sequence this consumer delivered.
    highest: u64,
    /// How many messages the broker held for the consumer after the last one it delivered.
    owed: u64,
    /// When the wait for a message owed gives up; kept across cancelled calls, so that a caller
    /// racing [`ProjectionConsumer::next_batch`] against a clock does not restart it.
    stall_deadline: Option<tokio::time::Instant>,
    /// The batch being filled, kept here across a cancelled [`ProjectionConsumer::next_batch`].
    filling: Option<Filling>,
}

/// A batch being filled.
struct Filling {
    batch: Vec<LogMessage>,
    /// When the batch stops waiting for messages owed.
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
        .heartbeat(PROJECTION_HEARTBEAT)
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(api)?;
    Ok(ProjectionConsumer {
        messages,
        last_delivered: None,
        highest: after_sequence,
        owed: 0,
        stall_deadline: None,
        filling: None,
    })
}

/// A failure of a projection consumer's message stream, after sequence `after`: a missing idle
/// heartbeat is a stall.
fn stream_error(after: u64, e: consumer::pull::MessagesError) -> ReadError {
    match e.kind() {
        consumer::pull::MessagesErrorKind::MissingHeartbeat => {
            ReadError::Stalled { after, waited: PROJECTION_HEARTBEAT * 2 }
        }
        _ => api(e),
    }
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
        tracestate: header(crate::headers::TRACESTATE),
        admission: header(crate::headers::ADMISSION),
        message_id: header(crate::headers::MESSAGE_ID),
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
            // While more is stored, a consumer that waits long has most likely stopped asking
            // for it. The broker does not hold deliveries back for unacknowledged messages
            // here: a worker acknowledges each batch before it asks for the next, so fewer than
            // the consumer's limit (four batches) are ever unacknowledged.
            let next = if self.owed > 0 {
                let deadline =
                    *self.stall_deadline.get_or_insert_with(|| tokio::time::Instant::now() + PROJECTION_STALL);
                let next = tokio::time::timeout_at(deadline, self.messages.next()).await;
                self.stall_deadline = None;
                next.map_err(|_| ReadError::Stalled { after: self.highest, waited: PROJECTION_STALL })?
            } else {
                self.messages.next().await
            };
            let first = match next {
                Some(m) => m.map_err(|e| stream_error(self.highest, e))?,
                None => return Err(ReadError::Api("consumer stream ended".into())),
            };
            let mut batch = Vec::new();
            self.take(first, &mut batch)?;
            let until = tokio::time::Instant::now() + BATCH_FILL_WAIT;
            self.filling = Some(Filling { batch, until });
        }
        while let Some((len, until)) = self.filling.as_ref().map(|f| (f.batch.len(), f.until))
            && len < max
        {
            // Without more stored for the consumer, only what is already delivered, without a
            // timer: a timer at `now` ends at the clock's next millisecond, so the batch would
            // wait for nothing, and a caller that polls each call once (a worker whose clock
            // ticks as often) would never get the end of the log.
            let next = if self.owed > 0 {
                next_until(&mut self.messages, until).await
            } else {
                futures::FutureExt::now_or_never(self.messages.next())
            };
            let Some(Some(m)) = next else { break };
            let m = m.map_err(|e| stream_error(self.highest, e))?;
            // No await from here until the batch is back in place.
            if let Some(mut filling) = self.filling.take() {
                let taken = self.take(m, &mut filling.batch);
                self.filling = Some(filling);
                taken?;
            }
        }
        Ok(self.filling.take().map(|f| f.batch).unwrap_or_default())
    }

    /// Takes a delivered message into `out` unless it was delivered before, and notes how many
    /// messages the broker still holds for this consumer after it.
    fn take(&mut self, m: jetstream::Message, out: &mut Vec<LogMessage>) -> Result<(), ReadError> {
        let info = m.info().map_err(api)?;
        self.owed = info.pending;
        let message = log_message(&m, &info);
        if first_delivery(&mut self.highest, message.sequence) {
            out.push(message);
            // Acknowledging all up to the highest delivered covers the copies left out.
            self.last_delivered = Some(m);
        } else {
            tracing::debug!(seq = message.sequence, "a message delivered again is left out");
        }
        Ok(())
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

/// How long an ordered read waits for its next message while the broker still holds more for
/// it (the last message said so), before it reopens its consumer just after the last message it
/// delivered. async-nats 0.51's pull stream counts the messages its pull requests are owed and
/// asks for more when the count runs low; a message it takes before it has counted the request
/// that asked for it is subtracted from zero, and once the count is too high it waits for
/// messages nobody owes it until its own fallback, 35 s after its last request (seen in a
/// replay of 1,000,000 events; reproduced by delaying that count: docs/BENCHMARKS.md, tenth
/// session). A read that is merely slow loses nothing by reopening.
pub const ORDERED_STALL: Duration = Duration::from_secs(2);

/// A stored message of an ordered read, with how many more the broker holds for the read.
type Owed = (LogMessage, u64);

/// An ordered consumer of `filter` from `from_sequence`, its messages, and how many it has
/// to deliver.
async fn open_ordered(
    stream: jetstream::stream::Stream,
    filter: String,
    from_sequence: u64,
) -> Result<(futures::stream::BoxStream<'static, Result<Owed, ReadError>>, u64), ReadError> {
    let deliver_policy = if from_sequence <= 1 {
        consumer::DeliverPolicy::All
    } else {
        consumer::DeliverPolicy::ByStartSequence { start_sequence: from_sequence }
    };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig { filter_subject: filter, deliver_policy, ..Default::default() })
        .await
        .map_err(api)?;
    let pending = consumer.cached_info().num_pending;
    let messages = consumer.messages().await.map_err(api)?;
    let messages = messages.map(|m| {
        let m = m.map_err(api)?;
        let info = m.info().map_err(api)?;
        Ok((log_message(&m, &info), info.pending))
    });
    Ok((messages.boxed(), pending))
}

/// The messages of an ordered read of `filter` from `from_sequence`, guarded by
/// [`ORDERED_STALL`]; `None` when the broker holds nothing for it.
async fn guarded_ordered(
    stream: &jetstream::stream::Stream,
    filter: &str,
    from_sequence: u64,
    end_when_empty: bool,
) -> Result<Option<futures::stream::BoxStream<'static, Result<Owed, ReadError>>>, ReadError> {
    let (messages, pending) = open_ordered(stream.clone(), filter.to_owned(), from_sequence).await?;
    if end_when_empty && pending == 0 {
        return Ok(None);
    }
    let (stream, filter) = (stream.clone(), filter.to_owned());
    let reopen = move |next: u64| {
        let (stream, filter) = (stream.clone(), filter.clone());
        async move { open_ordered(stream, filter, next).await.map(|(messages, pending)| (messages, pending > 0)) }
    };
    let position = |(m, pending): &Owed| (m.sequence + 1, *pending > 0);
    Ok(Some(resuming(messages, pending > 0, from_sequence.max(1), ORDERED_STALL, position, reopen).boxed()))
}

/// The items of `first`, and after it of the sources `reopen` opens: when the broker owes the
/// read more items (`position` of the last one says whether, and the sequence after it) and
/// none came for `stall`, the source is reopened at the sequence after the last item; a new
/// source says whether it owes anything (one that owes nothing is waited for, not reopened
/// again). An error opening one ends the read with it.
fn resuming<T, S, Open, Fut>(
    first: S,
    owed: bool,
    next_sequence: u64,
    stall: Duration,
    position: fn(&T) -> (u64, bool),
    reopen: Open,
) -> impl futures::Stream<Item = Result<T, ReadError>> + Send + use<T, S, Open, Fut>
where
    T: Send,
    S: futures::Stream<Item = Result<T, ReadError>> + Send + Unpin,
    Open: FnMut(u64) -> Fut + Send,
    Fut: std::future::Future<Output = Result<(S, bool), ReadError>> + Send,
{
    struct Read<S, Open> {
        items: S,
        owed: bool,
        next_sequence: u64,
        reopen: Open,
        ended: bool,
    }
    let read = Read { items: first, owed, next_sequence, reopen, ended: false };
    futures::stream::unfold(read, move |mut read| async move {
        if read.ended {
            return None;
        }
        loop {
            // What is already there is taken without a timer.
            let item = match futures::FutureExt::now_or_never(read.items.next()) {
                Some(item) => item,
                None if read.owed => match tokio::time::timeout(stall, read.items.next()).await {
                    Ok(item) => item,
                    Err(_) => {
                        tracing::warn!(
                            next_sequence = read.next_sequence,
                            waited_ms = stall.as_millis() as u64,
                            "an ordered read got nothing while the broker holds more for it: reopening its consumer"
                        );
                        match (read.reopen)(read.next_sequence).await {
                            Ok((items, owed)) => {
                                (read.items, read.owed) = (items, owed);
                                continue;
                            }
                            Err(e) => {
                                read.ended = true;
                                return Some((Err(e), read));
                            }
                        }
                    }
                },
                None => read.items.next().await,
            };
            let item = item?;
            if let Ok(t) = &item {
                (read.next_sequence, read.owed) = position(t);
            }
            return Some((item, read));
        }
    })
}

/// Reads stored messages in order from `from_sequence`, with an ordered consumer (no acks,
/// flow-controlled, reopened when it stalls: [`ORDERED_STALL`]): what rebuilds use. It does
/// not end: it waits for new messages once it has delivered the stored ones.
pub async fn ordered_messages(
    stream: &jetstream::stream::Stream,
    filter: &str,
    from_sequence: u64,
) -> Result<impl futures::Stream<Item = Result<LogMessage, ReadError>> + use<>, ReadError> {
    let messages = guarded_ordered(stream, filter, from_sequence, false).await?;
    Ok(messages.unwrap_or_else(|| futures::stream::empty().boxed()).map(|r| r.map(|(m, _)| m)))
}

/// Reads the stored messages of `filter` with sequences `from_sequence..=to_sequence` in order,
/// with an ordered consumer (reopened when it stalls: [`ORDERED_STALL`]), and ends: at
/// `to_sequence`, or at the last message stored when the read started if that comes first.
/// Memory stays bounded by the consumer's batch.
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
    let Some(messages) = guarded_ordered(stream, filter, from_sequence, true).await? else {
        return Ok(futures::stream::empty().boxed());
    };
    Ok(futures::stream::unfold((messages, false), move |(mut messages, done)| async move {
        if done {
            return None;
        }
        let (lm, pending) = match messages.next().await? {
            Ok(owed) => owed,
            Err(e) => return Some((Err(e), (messages, true))),
        };
        if lm.sequence > to_sequence {
            return None;
        }
        let end = lm.sequence >= to_sequence || pending == 0;
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
    let mut out = Vec::new();
    let mut from = 1;
    while from < before_sequence {
        match next_on(stream, filter, from).await? {
            Some(m) if m.sequence < before_sequence => {
                from = m.sequence + 1;
                out.push(stream_message(m));
            }
            _ => break,
        }
    }
    Ok(out)
}

/// The first message on `filter` at or after sequence `from`, if any: one direct get.
async fn next_on(
    stream: &jetstream::stream::Stream,
    filter: &str,
    from: u64,
) -> Result<Option<async_nats::jetstream::message::StreamMessage>, ReadError> {
    use async_nats::jetstream::stream::DirectGetErrorKind;
    match stream.direct_get_next_for_subject(filter, Some(from)).await {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
        Err(e) => Err(api(e)),
    }
}

/// The sequence at which the event `event_id` is stored on `subject` after `after_sequence`,
/// looking at no more than `limit` messages. For a retry whose expected version no longer
/// holds because its own first attempt was stored: the broker checks a single publish's
/// expected subject sequence before its message id, so such a retry is refused as a conflict
/// instead of being acknowledged as a duplicate.
pub async fn find_on_subject_after(
    stream: &jetstream::stream::Stream,
    subject: &str,
    after_sequence: u64,
    event_id: &str,
    limit: usize,
) -> Result<Option<u64>, ReadError> {
    // A client may expect any version: one past the last possible sequence finds nothing.
    let Some(mut from) = after_sequence.checked_add(1) else { return Ok(None) };
    for _ in 0..limit {
        let Some(m) = next_on(stream, subject, from).await? else { return Ok(None) };
        if m.headers.get(async_nats::header::NATS_MESSAGE_ID).is_some_and(|id| id.as_str() == event_id) {
            return Ok(Some(m.sequence));
        }
        from = m.sequence + 1;
    }
    Ok(None)
}

fn stream_message(m: async_nats::jetstream::message::StreamMessage) -> LogMessage {
    let traceparent = m.headers.get(crate::headers::TRACEPARENT).map(|v| v.as_str().to_owned());
    LogMessage {
        sequence: m.sequence,
        subject: m.subject.to_string(),
        payload: m.payload,
        stored_at: m.time,
        traceparent,
        tracestate: m.headers.get(crate::headers::TRACESTATE).map(|v| v.as_str().to_owned()),
        admission: m.headers.get(crate::headers::ADMISSION).map(|v| v.as_str().to_owned()),
        message_id: m.headers.get(crate::headers::MESSAGE_ID).map(|v| v.as_str().to_owned()),
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
    let mut out = Vec::new();
    let mut from = 1;
    while let Some(m) = next_on(stream, filter, from).await? {
        from = m.sequence + 1;
        out.push(stream_message(m));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::{LogMessage, Owed, PROJECTION_HEARTBEAT, ReadError, first_delivery, resuming, stream_error};
    use futures::StreamExt;
    use futures::stream::{self, BoxStream};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    const STALL: Duration = Duration::from_millis(50);

    fn owed(sequence: u64, pending: u64) -> Result<Owed, ReadError> {
        let message = LogMessage {
            sequence,
            subject: "relais.events.apo.cases.c1".into(),
            payload: bytes::Bytes::new(),
            stored_at: chrono::Utc::now(),
            traceparent: None,
            tracestate: None,
            admission: None,
            message_id: None,
        };
        Ok((message, pending))
    }

    fn position((m, pending): &Owed) -> (u64, bool) {
        (m.sequence + 1, *pending > 0)
    }

    type Items = BoxStream<'static, Result<Owed, ReadError>>;
    /// A reopened source, and whether it owes anything.
    type Reopened = Result<(Items, bool), ReadError>;
    /// Where a source was asked to reopen, in order.
    type Asked = Arc<Mutex<Vec<u64>>>;

    /// A source opener that records where it was asked to reopen, answering with `then`.
    fn opener(
        then: impl Fn() -> Reopened + Send,
    ) -> (Asked, impl FnMut(u64) -> futures::future::Ready<Reopened> + Send) {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let recorded = asked.clone();
        let reopen = move |next: u64| {
            recorded.lock().expect("not poisoned").push(next);
            futures::future::ready(then())
        };
        (asked, reopen)
    }

    /// The sequences a read delivers, or a failure when it has not ended within 5 s (stalled).
    async fn sequences(items: impl futures::Stream<Item = Result<Owed, ReadError>>) -> Vec<Result<u64, String>> {
        let all = items.map(|r| r.map(|(m, _)| m.sequence).map_err(|e| e.to_string())).collect();
        tokio::time::timeout(Duration::from_secs(5), all).await.expect("the read stalled")
    }

    #[tokio::test]
    async fn an_ordered_read_that_gets_nothing_while_more_is_owed_reopens_after_its_last_message() {
        // Given a source that delivers 1 and 2, says one more is stored, then never delivers
        // it (the client lost count), when the read waits longer than the stall, then it
        // reopens at 3 and goes on from there.
        let first: Items = stream::iter([owed(1, 2), owed(2, 1)]).chain(stream::pending()).boxed();
        let (asked, reopen) = opener(|| Ok((stream::iter([owed(3, 0)]).boxed(), true)));
        let read = resuming(first, true, 1, STALL, position, reopen);
        assert_eq!(sequences(read).await, vec![Ok(1), Ok(2), Ok(3)]);
        assert_eq!(*asked.lock().expect("not poisoned"), vec![3]);
    }

    #[tokio::test]
    async fn an_ordered_read_that_waits_with_nothing_owed_keeps_its_consumer() {
        // Given a source that delivered everything stored (nothing pending), when a new
        // message comes only after longer than the stall, then the read waits for it.
        let later = stream::once(async {
            tokio::time::sleep(STALL * 3).await;
            owed(2, 0)
        });
        let first: Items = stream::iter([owed(1, 0)]).chain(later).boxed();
        let (asked, reopen) = opener(|| Ok((stream::empty().boxed(), false)));
        let read = resuming(first, true, 1, STALL, position, reopen);
        assert_eq!(sequences(read).await, vec![Ok(1), Ok(2)]);
        assert!(asked.lock().expect("not poisoned").is_empty());
    }

    #[tokio::test]
    async fn a_reopened_read_that_owes_nothing_waits_instead_of_reopening_again() {
        // Given a stalled source owed more, when the consumer opened in its place says it owes
        // nothing (and delivers a new message only later), then the read waits for it
        // without reopening a second time.
        let first: Items = stream::iter([owed(1, 3)]).chain(stream::pending()).boxed();
        let (asked, reopen) = opener(|| {
            let later = stream::once(async {
                tokio::time::sleep(STALL * 3).await;
                owed(2, 0)
            });
            Ok((later.boxed(), false))
        });
        let read = resuming(first, true, 1, STALL, position, reopen);
        assert_eq!(sequences(read).await, vec![Ok(1), Ok(2)]);
        assert_eq!(*asked.lock().expect("not poisoned"), vec![2]);
    }

    #[tokio::test]
    async fn an_ordered_read_that_cannot_reopen_ends_with_the_error() {
        // Given a stalled source owed more, when reopening fails, then the read ends with that
        // error after what it delivered.
        let first: Items = stream::iter([owed(1, 5)]).chain(stream::pending()).boxed();
        let (asked, reopen) = opener(|| Err(ReadError::Api("no responders".into())));
        let read = resuming(first, true, 1, STALL, position, reopen);
        assert_eq!(sequences(read).await, vec![Ok(1), Err("event log: no responders".into())]);
        assert_eq!(*asked.lock().expect("not poisoned"), vec![2]);
    }

    #[tokio::test]
    async fn an_ordered_read_that_stalls_before_its_first_message_reopens_where_it_started() {
        // Given a read from 7 whose consumer had messages to deliver and delivered none,
        // then it reopens at 7.
        let first: Items = stream::pending().boxed();
        let (asked, reopen) = opener(|| Ok((stream::iter([owed(7, 0)]).boxed(), true)));
        let read = resuming(first, true, 7, STALL, position, reopen);
        assert_eq!(sequences(read).await, vec![Ok(7)]);
        assert_eq!(*asked.lock().expect("not poisoned"), vec![7]);
    }

    #[test]
    fn a_message_delivered_again_into_the_same_batch_is_left_out() {
        // Given a consumer positioned after 4, when 5, 6 and 7 arrive, then 5 and 6 again
        // (held beyond the ack wait) and 8, then each sequence is taken once, in order.
        let mut highest = 4;
        let kept: Vec<u64> = [5, 6, 7, 5, 6, 8, 4].into_iter().filter(|s| first_delivery(&mut highest, *s)).collect();
        assert_eq!(kept, vec![5, 6, 7, 8]);
        assert_eq!(highest, 8);
    }

    #[test]
    fn a_projection_consumer_whose_heartbeat_goes_missing_has_stalled() {
        // Given a consumer's stream that failed, when its idle heartbeat went missing, then the
        // worker is told it stalled (and reopens at once); any other failure stays a failure.
        use async_nats::jetstream::consumer::pull::{MessagesError, MessagesErrorKind};
        let missing = stream_error(41, MessagesError::new(MessagesErrorKind::MissingHeartbeat));
        assert!(
            matches!(missing, ReadError::Stalled { after: 41, waited } if waited == PROJECTION_HEARTBEAT * 2),
            "{missing:?}"
        );
        let deleted = stream_error(41, MessagesError::new(MessagesErrorKind::ConsumerDeleted));
        assert!(matches!(deleted, ReadError::Api(_)), "{deleted:?}");
    }
}
