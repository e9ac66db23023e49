//! Replays of the log as NDJSON lines (`relais_audit::line`): read with an ordered consumer up
//! to the stream's last sequence at the start, a batch at a time, so memory stays constant
//! whatever the size of the history. Each event is decoded, its personal fields opened where
//! the client's key still exists, and shown with its sequence, its exact stored bytes and its
//! chain links; signed checkpoints are placed after the line of their sequence.

use super::{AuditError, chain, checkpoints};
use crate::keys::{KeyLookup, KeyStore};
use async_nats::jetstream::stream::Stream;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use relais_audit::line::{self, ChainFields};
use relais_audit::{GENESIS, Link};
use relais_domain::envelope::Envelope;
use relais_domain::{OrgId, StoredEvent, seal};
use relais_eventlog::reader::{self, LogMessage, ReadError};
use relais_eventlog::subjects;
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use std::collections::{HashMap, VecDeque};
use uuid::Uuid;

/// Most messages decoded and answered per chunk.
const CHUNK: usize = 512;

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
    keys: KeyStore,
    stream_name: String,
    filter: ReplayFilter,
    from: u64,
    upper: u64,
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
    Ok(Replay {
        pool: pool.clone(),
        keys: keys.clone(),
        stream_name: stream.cached_info().config.name.clone(),
        filter,
        from,
        upper,
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

    async fn next_checkpoint_before(&mut self, seq: u64) -> Result<Option<Map<String, Value>>, AuditError> {
        if self.checkpoints.is_empty() && !self.checkpoints_exhausted {
            let page = checkpoints::page(&self.pool, self.from, self.upper, self.checkpoint_cursor, 256).await?;
            self.checkpoints_exhausted = page.len() < 256;
            if let Some(last) = page.last() {
                self.checkpoint_cursor = (last.checkpoint.sequence as i64, last.id);
            }
            self.checkpoints.extend(page);
        }
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

    /// The next lines (one chunk), or `None` once the end line was given.
    pub async fn next_lines(&mut self) -> Result<Option<Vec<Map<String, Value>>>, AuditError> {
        if self.finished {
            return Ok(None);
        }
        let mut lines = Vec::new();
        let mut batch = Vec::new();
        match self.messages.next().await {
            None => {
                self.checkpoints_before(self.upper.saturating_add(1), &mut lines).await?;
                lines.push(line::end_line(self.events, self.others, self.checkpoints_shown, self.last_shown));
                self.finished = true;
                return Ok(Some(lines));
            }
            Some(m) => batch.push(m?),
        }
        while batch.len() < CHUNK {
            match self.messages.next().now_or_never() {
                Some(Some(m)) => batch.push(m?),
                Some(None) | None => break,
            }
        }
        let wanted: Vec<i64> = batch.iter().flat_map(|m| [m.sequence as i64, m.sequence as i64 - 1]).collect();
        let links: HashMap<u64, Link> = chain::links_at(&self.pool, &wanted).await?.into_iter().collect();
        let seqs: Vec<i64> = batch.iter().map(|m| m.sequence as i64).collect();
        let quarantine: HashMap<i64, String> =
            sqlx::query_as::<_, (i64, String)>("SELECT seq, reason FROM quarantine WHERE seq = ANY($1)")
                .bind(&seqs)
                .fetch_all(&self.pool)
                .await?
                .into_iter()
                .collect();
        let stored: Vec<Option<relais_domain::envelope::StoredEventV1>> =
            batch.iter().map(|m| StoredEvent::decode(&m.payload).ok().map(StoredEvent::into_v1)).collect();
        let key_ids: Vec<Uuid> = stored.iter().filter_map(|s| s.as_ref()?.sealed.as_ref().map(|x| x.key_id)).collect();
        let keys = self.keys.lookup_many(&key_ids).await?;
        for (m, stored) in batch.iter().zip(stored) {
            self.checkpoints_before(m.sequence, &mut lines).await?;
            self.position = m.sequence;
            let link = links.get(&m.sequence).copied();
            let prev = if m.sequence == 1 { Some(GENESIS) } else { links.get(&(m.sequence - 1)).copied() };
            let chain = ChainFields {
                sequence: m.sequence,
                subject: &m.subject,
                payload: &m.payload,
                prev: link.and(prev),
                link,
                admission: m.admission.as_deref(),
                quarantine: quarantine.get(&(m.sequence as i64)).map(String::as_str),
            };
            let envelope = stored.and_then(|s| {
                let personal = s.sealed.as_ref().and_then(|sealed| match keys.get(&sealed.key_id) {
                    Some(KeyLookup::Key(k)) => seal::open(k, s.id, sealed).ok(),
                    _ => None,
                });
                s.open(personal).ok()
            });
            match envelope {
                Some(e) if self.filter.keeps(&e) => {
                    lines.push(line::event_line(&e, &chain));
                    self.events += 1;
                    self.last_shown = m.sequence;
                }
                Some(_) => {}
                None if self.filter.filters_content() => {}
                None => {
                    lines.push(line::message_line(&chain));
                    self.others += 1;
                    self.last_shown = m.sequence;
                }
            }
        }
        Ok(Some(lines))
    }

    /// The replay as NDJSON chunks: the header, one chunk per batch, the end line. An error
    /// ends the replay with an `error` line (and no end line), after logging it.
    pub fn into_ndjson(self) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send {
        futures::stream::unfold((self, false), |(mut replay, started)| async move {
            if !started {
                let header = to_ndjson(&[replay.header()]);
                return Some((Ok(header), (replay, true)));
            }
            match replay.next_lines().await {
                Ok(Some(lines)) => Some((Ok(to_ndjson(&lines)), (replay, true))),
                Ok(None) => None,
                Err(e) => {
                    tracing::error!(error = %e, "replay stopped");
                    replay.finished = true;
                    Some((
                        Ok(to_ndjson(&[line::error_line("the replay stopped on an internal error; it was logged")])),
                        (replay, true),
                    ))
                }
            }
        })
    }
}

/// Serialises lines as NDJSON.
pub fn to_ndjson(lines: &[Map<String, Value>]) -> Bytes {
    let mut out = Vec::with_capacity(lines.len() * 512);
    for l in lines {
        // Serialising a JSON map into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, l);
        out.push(b'\n');
    }
    Bytes::from(out)
}
