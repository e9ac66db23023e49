//! Replays of the log as NDJSON lines (`relais_audit::line`): read with an ordered consumer up
//! to the stream's last sequence at the start, a batch at a time, so memory stays constant
//! whatever the size of the history. Each event is decoded, its personal fields opened where
//! the client's key still exists, and shown with its sequence, its exact stored bytes and its
//! chain links; signed checkpoints are placed after the line of their sequence.
//!
//! The NDJSON answer is a pipeline: the messages are read in order and cut into chunks; each
//! chunk is looked up (links, quarantine, data keys), opened and written as NDJSON in a task
//! of its own, a few at once; the chunks are then joined in order with the checkpoints between
//! them. A data key looked up once is kept for the rest of the replay, except that before
//! each chunk the keys erased since the last chunk are dropped: an erasure during a long
//! replay hides the client's personal fields from the next chunk on.

use super::{AuditError, chain, checkpoints};
use crate::keys::{KeyLookup, KeyStore};
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::StreamExt;
use futures::stream::BoxStream;
use relais_audit::line::{self, ChainFields};
use relais_audit::{GENESIS, Link};
use relais_domain::envelope::Envelope;
use relais_domain::{OrgId, StoredEvent, seal};
use relais_eventlog::reader::{self, LogMessage, ReadError};
use relais_eventlog::subjects;
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

/// Most messages decoded and answered per chunk: each costs its lookups, a task and a write,
/// and 1,024 took a tenth less of the gateway's CPU than 512 (docs/BENCHMARKS.md, ninth session).
const CHUNK: usize = 1024;

/// Chunks rendered at once, each in a task of its own (so both cores of a small machine work on
/// a replay); the answer still leaves in the log's order.
const CHUNKS_IN_FLIGHT: usize = 3;

/// How long a chunk waits to fill up: a filtered replay over a long history may find its
/// messages slowly, and its first lines should not wait for a whole chunk.
const CHUNK_WAIT: Duration = Duration::from_millis(20);

/// Most data keys a replay keeps between chunks (about 150 bytes each); past it, it forgets
/// them all and looks them up again.
const KEYS_KEPT: usize = 50_000;

/// What a replay shows. Times filter on `recordedat` (when Relais recorded the event):
/// `from` inclusive, `to` exclusive. Sequences are inclusive.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    /// Only this organisation's subjects.
    pub org: Option<OrgId>,
    /// Only events of this type.
    pub event_type: Option<String>,
    /// Only this case (`cases/<id>`); a valid aggregate id, checked by the caller.
    pub case: Option<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
    /// From this sequence.
    pub from_seq: Option<u64>,
    /// Up to this sequence.
    pub to_seq: Option<u64>,
    /// Opens personal fields of this organisation's events only (an auditor of one
    /// organisation); those of the others are shown `withheld`, their stored bytes and chain
    /// links as for everyone, so the file verifies the same. `None`: every event's (an
    /// auditor of the federation, an operator).
    pub personal_of: Option<OrgId>,
}

impl ReplayFilter {
    /// The NATS subject filter that selects the messages.
    pub fn subject_filter(&self) -> String {
        match (&self.org, &self.case) {
            (Some(o), Some(c)) => format!("{}.{o}.cases.{c}", subjects::PREFIX),
            (Some(o), None) => subjects::org_filter(o),
            (None, Some(c)) => format!("{}.*.cases.{c}", subjects::PREFIX),
            (None, None) => subjects::all_events(),
        }
    }

    /// True when nothing is filtered out from sequence 1 on (the replay can be verified as a
    /// whole chain from genesis).
    pub fn is_complete(&self) -> bool {
        self.org.is_none()
            && self.event_type.is_none()
            && self.case.is_none()
            && self.from.is_none()
            && self.to.is_none()
            && self.from_seq.unwrap_or(1) <= 1
            && self.to_seq.is_none()
    }

    /// The filter as recorded in the access log and the replay header.
    pub fn to_json(&self) -> Value {
        let time = |t: &Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, true));
        json!({
            "org": self.org.as_ref().map(|o| o.to_string()),
            "type": self.event_type,
            "case": self.case,
            "from": time(&self.from),
            "to": time(&self.to),
            "from_seq": self.from_seq,
            "to_seq": self.to_seq,
        })
    }

    fn keeps(&self, e: &Envelope) -> bool {
        self.event_type.as_deref().is_none_or(|t| e.data.event_type() == t)
            && self.from.is_none_or(|f| e.recorded_at >= f)
            && self.to.is_none_or(|t| e.recorded_at < t)
    }

    fn filters_content(&self) -> bool {
        self.event_type.is_some() || self.from.is_some() || self.to.is_some()
    }
}

/// A replay under way.
pub struct Replay {
    pool: PgPool,
    chunks: ChunkReader,
    stream_name: String,
    filter: ReplayFilter,
    from: u64,
    upper: u64,
    /// The chain's head when the replay started: the replay shows no link and no checkpoint
    /// past it, so that a chain that moves on during the replay does not leave a chained line
    /// after an unchained one.
    chained: u64,
    generated_at: DateTime<Utc>,
    messages: BoxStream<'static, Result<LogMessage, ReadError>>,
    checkpoints: VecDeque<checkpoints::StoredCheckpoint>,
    checkpoint_cursor: (i64, i64),
    checkpoints_exhausted: bool,
    events: u64,
    others: u64,
    checkpoints_shown: u64,
    last_shown: u64,
    position: u64,
    finished: bool,
}

/// Starts a replay of `stream` up to its last sequence now (or `filter.to_seq`).
pub async fn open(pool: &PgPool, keys: &KeyStore, stream: &Stream, filter: ReplayFilter) -> Result<Replay, AuditError> {
    let last = reader::last_sequence(stream).await?;
    let upper = filter.to_seq.map_or(last, |t| t.min(last));
    let from = filter.from_seq.unwrap_or(1).max(1);
    let messages = reader::ordered_range(stream, &filter.subject_filter(), from, upper).await?;
    let (chained, _) = checkpoints::chain_head(pool).await?;
    Ok(Replay {
        pool: pool.clone(),
        chunks: ChunkReader {
            pool: pool.clone(),
            keys: keys.clone(),
            chained,
            kept_keys: Arc::new(Mutex::new(HashMap::new())),
            erased_since: Arc::new(Mutex::new(Utc::now() - ERASURE_OVERLAP)),
            filter: Arc::new(filter.clone()),
        },
        stream_name: stream.cached_info().config.name.clone(),
        filter,
        from,
        upper,
        chained,
        generated_at: Utc::now(),
        messages,
        checkpoints: VecDeque::new(),
        checkpoint_cursor: (0, 0),
        checkpoints_exhausted: false,
        events: 0,
        others: 0,
        checkpoints_shown: 0,
        last_shown: 0,
        position: from.saturating_sub(1),
        finished: false,
    })
}

impl Replay {
    /// The first line.
    pub fn header(&self) -> Map<String, Value> {
        line::header_line(
            &self.stream_name,
            self.filter.to_json(),
            self.from,
            self.upper,
            self.generated_at,
            self.filter.is_complete(),
        )
    }

    /// The first sequence read.
    pub fn from_sequence(&self) -> u64 {
        self.from
    }

    /// The last sequence the replay reads up to.
    pub fn upper_sequence(&self) -> u64 {
        self.upper
    }

    /// The last sequence read so far (for progress).
    pub fn position(&self) -> u64 {
        self.position
    }

    /// The sequence of the next checkpoint to show, if any.
    async fn next_checkpoint_sequence(&mut self) -> Result<Option<u64>, AuditError> {
        self.load_checkpoints().await?;
        Ok(self.checkpoints.front().map(|c| c.checkpoint.sequence))
    }

    async fn load_checkpoints(&mut self) -> Result<(), AuditError> {
        if self.checkpoints.is_empty() && !self.checkpoints_exhausted {
            let until = self.upper.min(self.chained);
            let page = checkpoints::page(&self.pool, self.from, until, self.checkpoint_cursor, 256).await?;
            self.checkpoints_exhausted = page.len() < 256;
            if let Some(last) = page.last() {
                self.checkpoint_cursor = (last.checkpoint.sequence as i64, last.id);
            }
            self.checkpoints.extend(page);
        }
        Ok(())
    }

    async fn next_checkpoint_before(&mut self, seq: u64) -> Result<Option<Map<String, Value>>, AuditError> {
        self.load_checkpoints().await?;
        match self.checkpoints.front() {
            Some(c) if c.checkpoint.sequence < seq => {
                let c = self.checkpoints.pop_front().map(|c| c.checkpoint.to_json());
                self.checkpoints_shown += u64::from(c.is_some());
                Ok(c)
            }
            _ => Ok(None),
        }
    }

    async fn checkpoints_before(&mut self, seq: u64, lines: &mut Vec<Map<String, Value>>) -> Result<(), AuditError> {
        while let Some(c) = self.next_checkpoint_before(seq).await? {
            lines.push(c);
        }
        Ok(())
    }

    fn end_line(&self) -> Map<String, Value> {
        line::end_line(self.events, self.others, self.checkpoints_shown, self.last_shown)
    }

    /// The next lines (one chunk) as JSON objects, or `None` once the end line was given. The
    /// NDJSON answer uses [`Replay::into_chunks`], which gives the same lines faster.
    pub async fn next_lines(&mut self) -> Result<Option<Vec<Map<String, Value>>>, AuditError> {
        if self.finished {
            return Ok(None);
        }
        let mut lines = Vec::new();
        let Some(batch) = next_batch(&mut self.messages).await? else {
            self.checkpoints_before(self.upper.saturating_add(1), &mut lines).await?;
            lines.push(self.end_line());
            self.finished = true;
            return Ok(Some(lines));
        };
        for opened in self.chunks.open(batch).await? {
            self.checkpoints_before(opened.message.sequence, &mut lines).await?;
            self.position = opened.message.sequence;
            let chain = opened.chain();
            match &opened.shown {
                Shown::Event(e) => {
                    lines.push(line::event_line(e, &chain));
                    self.events += 1;
                    self.last_shown = opened.message.sequence;
                }
                Shown::Message => {
                    lines.push(line::message_line(&chain));
                    self.others += 1;
                    self.last_shown = opened.message.sequence;
                }
                Shown::Hidden => {}
            }
        }
        Ok(Some(lines))
    }

    /// Places the checkpoints that come before each line of a rendered chunk, and the chunk.
    async fn join(&mut self, chunk: RenderedChunk) -> Result<Vec<u8>, AuditError> {
        self.events += chunk.events;
        self.others += chunk.others;
        if let Some(s) = chunk.last_shown {
            self.last_shown = s;
        }
        self.position = chunk.position;
        // Most chunks hold no checkpoint: they leave as they are, without a copy.
        let last_line = chunk.lines.last().map_or(0, |(seq, _)| *seq);
        if self.next_checkpoint_sequence().await?.is_none_or(|c| c >= last_line) {
            return Ok(chunk.bytes);
        }
        let mut out = Vec::with_capacity(chunk.bytes.len() + 1024);
        let (mut written, mut start) = (0, 0);
        for (seq, end) in &chunk.lines {
            while let Some(c) = self.next_checkpoint_before(*seq).await? {
                out.extend_from_slice(&chunk.bytes[written..start]);
                written = start;
                write_json_line(&mut out, &c);
            }
            start = *end;
        }
        out.extend_from_slice(&chunk.bytes[written..]);
        Ok(out)
    }

    /// The replay as NDJSON chunks with the position reached after each: the header, the
    /// chunks, the end line. An error ends the replay with an `error` line (and no end line),
    /// after logging it. Chunks are rendered [`CHUNKS_IN_FLIGHT`] at a time, in tasks of
    /// their own: call it within a Tokio runtime.
    pub fn into_chunks(mut self) -> impl futures::Stream<Item = (Bytes, u64)> + Send {
        let messages = std::mem::replace(&mut self.messages, futures::stream::empty().boxed());
        let reader = self.chunks.clone();
        let rendered = futures::stream::unfold(messages, |mut messages| async move {
            match next_batch(&mut messages).await {
                Ok(Some(batch)) => Some((Ok(batch), messages)),
                Ok(None) => None,
                // Ends the read: the error is given once.
                Err(e) => Some((Err(e), futures::stream::empty().boxed())),
            }
        })
        .map(move |batch| {
            let reader = reader.clone();
            let task = batch.map(|b| tokio::spawn(async move { reader.render(b).await }));
            async move {
                match task {
                    Ok(handle) => handle.await.map_err(|e| AuditError::Task(e.to_string()))?,
                    Err(e) => Err(AuditError::from(e)),
                }
            }
        })
        .buffered(CHUNKS_IN_FLIGHT)
        .boxed();
        let header = to_ndjson(&[self.header()]);
        let start = self.position;
        futures::stream::once(async move { (header, start) }).chain(futures::stream::unfold(
            (self, rendered),
            |(mut replay, mut rendered)| async move {
                if replay.finished {
                    return None;
                }
                let next = match rendered.next().await {
                    Some(Ok(chunk)) => replay.join(chunk).await,
                    Some(Err(e)) => Err(e),
                    None => {
                        let mut lines = Vec::new();
                        let end = replay.checkpoints_before(replay.upper.saturating_add(1), &mut lines).await;
                        end.map(|()| {
                            lines.push(replay.end_line());
                            replay.finished = true;
                            to_ndjson(&lines).to_vec()
                        })
                    }
                };
                let bytes = match next {
                    Ok(bytes) => Bytes::from(bytes),
                    Err(e) => {
                        tracing::error!(error = %e, "replay stopped");
                        replay.finished = true;
                        to_ndjson(&[line::error_line("the replay stopped on an internal error; it was logged")])
                    }
                };
                let position = replay.position;
                Some(((bytes, position), (replay, rendered)))
            },
        ))
    }

    /// The replay as NDJSON (see [`Replay::into_chunks`]).
    pub fn into_ndjson(self) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
        self.into_chunks().map(|(bytes, _)| Ok(bytes))
    }
}

/// The next messages, at most a chunk: waits for the first, then takes the others as they come
/// for at most [`CHUNK_WAIT`]. The ordered consumer delivers a few hundred at a time; a chunk
/// cut at each delivery would pay its lookups (and their round trips) for fewer messages.
async fn next_batch(
    messages: &mut BoxStream<'static, Result<LogMessage, ReadError>>,
) -> Result<Option<Vec<LogMessage>>, ReadError> {
    let Some(first) = messages.next().await else {
        return Ok(None);
    };
    let mut batch = Vec::with_capacity(CHUNK);
    batch.push(first?);
    let deadline = tokio::time::Instant::now() + CHUNK_WAIT;
    while batch.len() < CHUNK {
        let Some(Some(m)) = reader::next_until(messages, deadline).await else { break };
        batch.push(m?);
    }
    Ok(Some(batch))
}

/// Looks up, opens and renders chunks of messages; cheap to clone into a task.
#[derive(Clone)]
struct ChunkReader {
    pool: PgPool,
    keys: KeyStore,
    /// The chain's head when the replay started (links past it are not shown).
    chained: u64,
    /// The data keys looked up so far in this replay.
    kept_keys: Arc<Mutex<HashMap<Uuid, KeyLookup>>>,
    /// Keys erased at or after this moment (the database's clock) are dropped from
    /// `kept_keys` before the next chunk is opened.
    erased_since: Arc<Mutex<DateTime<Utc>>>,
    filter: Arc<ReplayFilter>,
}

/// How far back each look for erased keys reaches beyond the previous one: an erasure's time
/// is its transaction's start, and it may commit a little after a look that began later.
const ERASURE_OVERLAP: chrono::TimeDelta = chrono::TimeDelta::seconds(10);

/// How a stored message is shown.
enum Shown {
    /// As an event line.
    Event(Box<Envelope>),
    /// As a message line (not a readable event).
    Message,
    /// Not at all (filtered out).
    Hidden,
}

/// A stored message with what the replay shows of it.
struct Opened {
    message: LogMessage,
    link: Option<Link>,
    prev: Option<Link>,
    quarantine: Option<String>,
    shown: Shown,
}

impl Opened {
    fn chain(&self) -> ChainFields<'_> {
        ChainFields {
            sequence: self.message.sequence,
            subject: &self.message.subject,
            payload: &self.message.payload,
            prev: self.link.and(self.prev),
            link: self.link,
            admission: self.message.admission.as_deref(),
            quarantine: self.quarantine.as_deref(),
        }
    }
}

/// A chunk written as NDJSON, with where each line ends.
struct RenderedChunk {
    bytes: Vec<u8>,
    /// Sequence and end offset of each line.
    lines: Vec<(u64, usize)>,
    events: u64,
    others: u64,
    last_shown: Option<u64>,
    /// The last sequence of the chunk.
    position: u64,
}

impl ChunkReader {
    /// Chain links, quarantine reasons and data keys of a chunk (concurrently), then each
    /// message decoded and opened.
    async fn open(&self, batch: Vec<LogMessage>) -> Result<Vec<Opened>, AuditError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(Vec::new());
        };
        let (first, last) = (first.sequence, last.sequence);
        // A dense chunk (a whole replay) reads its links and quarantine entries as a range; a
        // sparse one (one case across the history) by sequence. As a range, the quarantine
        // costs one index descent per chunk instead of one per message.
        let dense = last - first.saturating_sub(1) <= 2 * batch.len() as u64;
        let links = async {
            let lo = first.saturating_sub(1);
            if dense {
                chain::links_between(&self.pool, lo, last).await
            } else {
                let wanted: Vec<i64> = batch.iter().flat_map(|m| [m.sequence as i64, m.sequence as i64 - 1]).collect();
                chain::links_at(&self.pool, &wanted).await
            }
        };
        let quarantine = async {
            let query = if dense {
                sqlx::query_as::<_, (i64, String)>("SELECT seq, reason FROM quarantine WHERE seq BETWEEN $1 AND $2")
                    .bind(first as i64)
                    .bind(last as i64)
            } else {
                let seqs: Vec<i64> = batch.iter().map(|m| m.sequence as i64).collect();
                sqlx::query_as::<_, (i64, String)>("SELECT seq, reason FROM quarantine WHERE seq = ANY($1)").bind(seqs)
            };
            query.fetch_all(&self.pool).await.map_err(AuditError::from)
        };
        let stored: Vec<Option<relais_domain::envelope::StoredEventV1>> =
            batch.iter().map(|m| StoredEvent::decode(&m.payload).ok().map(StoredEvent::into_v1)).collect();
        // Another organisation's fields are withheld from an auditor of one: its keys are not
        // even looked up.
        let opens = |s: &relais_domain::envelope::StoredEventV1| {
            self.filter.personal_of.as_ref().is_none_or(|org| org.as_str() == s.org)
        };
        let key_ids: Vec<Uuid> =
            stored.iter().filter_map(|s| s.as_ref().filter(|s| opens(s))?.sealed.as_ref().map(|x| x.key_id)).collect();
        let (links, quarantine, keys) = futures::try_join!(links, quarantine, self.keys_of(&key_ids))?;
        let links: HashMap<u64, Link> = links.into_iter().filter(|(s, _)| *s <= self.chained).collect();
        let mut quarantine: HashMap<i64, String> = quarantine.into_iter().collect();
        let mut out = Vec::with_capacity(batch.len());
        for (message, stored) in batch.into_iter().zip(stored) {
            let seq = message.sequence;
            let envelope = stored.and_then(|s| {
                // Only a destroyed key is an erasure; a key that is missing, damaged or does not
                // open the fields is shown as such (as a subject access export does).
                if s.sealed.is_some() && !opens(&s) {
                    let mut envelope = s.open(None).ok()?;
                    envelope.personal = relais_domain::envelope::PersonalState::Withheld;
                    return Some(envelope);
                }
                let (personal, unreadable) = match s.sealed.as_ref().map(|sealed| (sealed, keys.get(&sealed.key_id))) {
                    None | Some((_, Some(KeyLookup::Erased))) => (None, false),
                    Some((sealed, Some(KeyLookup::Key(k)))) => match seal::open(k, s.id, sealed) {
                        Ok(fields) => (Some(fields), false),
                        Err(_) => (None, true),
                    },
                    Some((_, _)) => (None, true),
                };
                let mut envelope = s.open(personal).ok()?;
                if unreadable {
                    envelope.personal = relais_domain::envelope::PersonalState::Unreadable;
                }
                Some(envelope)
            });
            let shown = match envelope {
                Some(e) if self.filter.keeps(&e) => Shown::Event(Box::new(e)),
                Some(_) => Shown::Hidden,
                None if self.filter.filters_content() => Shown::Hidden,
                None => Shown::Message,
            };
            out.push(Opened {
                link: links.get(&seq).copied(),
                prev: if seq == 1 { Some(GENESIS) } else { links.get(&(seq - 1)).copied() },
                quarantine: quarantine.remove(&(seq as i64)),
                message,
                shown,
            });
        }
        Ok(out)
    }

    /// The data keys of `key_ids`: those this replay looked up before, the others from the
    /// key store.
    async fn keys_of(&self, key_ids: &[Uuid]) -> Result<HashMap<Uuid, KeyLookup>, AuditError> {
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        if key_ids.is_empty() {
            return Ok(found);
        }
        let since = *self.erased_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (now, erased): (DateTime<Utc>, Vec<Uuid>) =
            sqlx::query_as("SELECT now(), coalesce(array_agg(key_id), '{}') FROM client_keys WHERE erased_at >= $1")
                .bind(since)
                .fetch_one(&self.pool)
                .await?;
        {
            let mut since = self.erased_since.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *since = (*since).max(now - ERASURE_OVERLAP);
        }
        {
            let mut kept = self.kept_keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for id in &erased {
                kept.remove(id);
            }
            for id in key_ids {
                match kept.get(id) {
                    Some(k) => {
                        found.insert(*id, k.clone());
                    }
                    None => missing.push(*id),
                }
            }
        }
        if !missing.is_empty() {
            let looked_up = self.keys.lookup_many(&missing).await?;
            let mut kept = self.kept_keys.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if kept.len() + looked_up.len() > KEYS_KEPT {
                kept.clear();
            }
            for (id, k) in looked_up {
                kept.insert(id, k.clone());
                found.insert(id, k);
            }
        }
        Ok(found)
    }

    /// A chunk opened and written as NDJSON.
    async fn render(self, batch: Vec<LogMessage>) -> Result<RenderedChunk, AuditError> {
        let position = batch.last().map_or(0, |m| m.sequence);
        let opened = self.open(batch).await?;
        let mut chunk = RenderedChunk {
            bytes: Vec::with_capacity(opened.len() * 1024),
            lines: Vec::with_capacity(opened.len()),
            events: 0,
            others: 0,
            last_shown: None,
            position,
        };
        for o in &opened {
            let chain = o.chain();
            match &o.shown {
                Shown::Event(e) => {
                    line::write_event_line(&mut chunk.bytes, e, &chain);
                    chunk.events += 1;
                }
                Shown::Message => {
                    line::write_message_line(&mut chunk.bytes, &chain);
                    chunk.others += 1;
                }
                Shown::Hidden => continue,
            }
            chunk.last_shown = Some(o.message.sequence);
            chunk.lines.push((o.message.sequence, chunk.bytes.len()));
        }
        Ok(chunk)
    }
}

fn write_json_line(out: &mut Vec<u8>, line: &Map<String, Value>) {
    // Serialising a JSON map into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, line);
    out.push(b'\n');
}

/// Serialises lines as NDJSON.
pub fn to_ndjson(lines: &[Map<String, Value>]) -> Bytes {
    let mut out = Vec::with_capacity(lines.len() * 512);
    for l in lines {
        write_json_line(&mut out, l);
    }
    Bytes::from(out)
}
