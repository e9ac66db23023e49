//! The rules of the aggregates, applied by the validator to every event in stream order.
//!
//! The validator keeps the state of recently touched aggregates in memory (bounded); on a miss
//! it folds the aggregate's admitted history from the log (quarantined sequences skipped).
//! States are never written to PostgreSQL: they may hold personal data (an activity's roster
//! names participants), which only exists sealed in the log.

use crate::keys::{KeyLookup, KeyStore};
use crate::worker::WorkerError;
use async_nats::jetstream::stream::Stream;
use futures::{StreamExt, TryStreamExt};
use relais_domain::aggregates::{activity, case, referral};
use relais_domain::envelope::Envelope;
use relais_domain::{AggregateKind, AggregateRef, OrgId, StoredEvent, seal};
use relais_eventlog::reader;
use sqlx::PgPool;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};

/// Most aggregate states of one generation, by default: the book keeps two (the current one
/// and the one before), so at most twice this between two batches.
pub const DEFAULT_CAPACITY: usize = 40_000;

#[derive(Debug, Clone)]
enum AggregateState {
    Case(case::State),
    Referral(referral::State),
    Activity(activity::State),
}

/// The identity of an aggregate: cases belong to one organisation; referrals and activities
/// are shared by the organisations that take part in them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct AggregateKey {
    org: Option<OrgId>,
    subject: AggregateRef,
}

impl AggregateKey {
    fn of(org: &OrgId, subject: &AggregateRef) -> Option<Self> {
        match subject.kind() {
            AggregateKind::Cases => Some(Self { org: Some(org.clone()), subject: subject.clone() }),
            AggregateKind::Referrals | AggregateKind::Activities => Some(Self { org: None, subject: subject.clone() }),
            AggregateKind::Signals | AggregateKind::Clients => None,
        }
    }

    fn filter(&self) -> String {
        let org = self.org.as_ref().map(OrgId::as_str).unwrap_or("*");
        format!("{}.{org}.{}.{}", relais_eventlog::subjects::PREFIX, self.subject.kind().as_str(), self.subject.id())
    }

    fn initial(&self) -> AggregateState {
        match self.subject.kind() {
            AggregateKind::Referrals => AggregateState::Referral(referral::State::default()),
            AggregateKind::Activities => AggregateState::Activity(activity::State::default()),
            _ => AggregateState::Case(case::State::default()),
        }
    }
}

/// Where the book files an aggregate's state: 128 bits of two keyed hashes of its key, with keys
/// drawn at random for each book. A slot takes 16 bytes where the key's two strings took about
/// 140 with their allocations, and the book holds tens of thousands of states. Two aggregates
/// share a slot with a probability of about 10^-27 at a million aggregates, and nobody can aim
/// for it without the book's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Slot(u128);

/// The two hash keys of a book.
#[derive(Debug, Default)]
struct Filing {
    high: RandomState,
    low: RandomState,
}

impl Filing {
    fn slot(&self, key: &AggregateKey) -> Slot {
        // std derives the keys of successive `RandomState`s from one another: a tag per half
        // keeps the two hashes apart all the same.
        Slot((u128::from(self.high.hash_one((0u8, key))) << 64) | u128::from(self.low.hash_one((1u8, key))))
    }
}

/// Why an event breaks a rule: the domain's code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleViolation {
    /// The stable code of the domain error.
    pub code: &'static str,
    /// The message.
    pub detail: String,
}

/// The aggregates' states, as the validator knows them.
pub struct RuleBook {
    stream: Stream,
    keys: KeyStore,
    pool: PgPool,
    filing: Filing,
    states: HashMap<Slot, AggregateState>,
    /// The generation before `states`: what was not used since it was retired. A state found
    /// here moves back to `states`; the whole generation is forgotten at the next retirement,
    /// so recently used states stay (an approximation of least-recently-used, without
    /// bookkeeping per access).
    older: HashMap<Slot, AggregateState>,
    /// True while the book holds every aggregate that an admitted event touched: the book
    /// started at the beginning of the stream and never forgot. A miss then means a new
    /// aggregate, with no history to read.
    complete: bool,
    /// Most states of one generation.
    capacity: usize,
    /// Organisations found in the registry so far (organisations are added, never removed):
    /// the registry is asked only about names not seen yet.
    registered: HashSet<String>,
}

/// How many aggregate histories are read from the log at once when a batch brings aggregates
/// the book does not hold.
const PREFETCH_CONCURRENCY: usize = 32;

impl RuleBook {
    /// An empty rule book over the stream, for a validator that resumes after sequence
    /// `after` (0: from the start of the stream).
    pub fn new(stream: Stream, keys: KeyStore, pool: PgPool, after: u64) -> Self {
        Self {
            stream,
            keys,
            pool,
            filing: Filing::default(),
            states: HashMap::new(),
            older: HashMap::new(),
            complete: after == 0,
            capacity: DEFAULT_CAPACITY,
            registered: HashSet::new(),
        }
    }

    /// Which of `names` are not organisations of the registry. Events published directly
    /// must name only registered organisations, as the gateway requires: a referral to an
    /// organisation that does not exist would wait forever for an answer.
    pub async fn unregistered(&mut self, names: &[&str]) -> Result<HashSet<String>, WorkerError> {
        let asked: Vec<String> = names
            .iter()
            .filter(|n| !self.registered.contains(**n))
            .map(|n| (*n).to_owned())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if asked.is_empty() {
            return Ok(HashSet::new());
        }
        let found = crate::registry::known(&self.pool, &asked).await?;
        let missing = asked.into_iter().filter(|n| !found.contains(n)).collect();
        self.registered.extend(found);
        Ok(missing)
    }

    /// Keeps at most `capacity` states per generation (at least one).
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Prepares the book for a batch starting at sequence `batch_start`: retires the current
    /// generation of states if it is full (forgetting the one before), then loads, concurrently, the states of the aggregates the
    /// batch's `events` touch and the book does not hold, as of just before the batch. The
    /// batch's own events are then folded by [`RuleBook::admit`], in order, only if admitted;
    /// reading them from the log here would fold events this batch is about to quarantine.
    pub async fn prefetch(&mut self, batch_start: u64, events: &[&Envelope]) -> Result<(), WorkerError> {
        if self.states.len() >= self.capacity {
            // Forgetting is always safe: a forgotten state is folded again from the log.
            // Only between batches, so that no state of this batch is read mid-way.
            let current = std::mem::replace(&mut self.states, HashMap::with_capacity(self.capacity));
            let forgotten = std::mem::replace(&mut self.older, current);
            if !forgotten.is_empty() {
                self.complete = false;
            }
        }
        if self.complete {
            return Ok(());
        }
        let mut wanted: Vec<(AggregateKey, u64)> = Vec::new();
        let mut seen: HashSet<AggregateKey> = HashSet::new();
        for event in events {
            let own = AggregateKey::of(&event.org, &event.subject);
            let sender_case = match own.as_ref().map(|k| k.subject.kind()) {
                Some(AggregateKind::Referrals) => referral::sender_case(event)
                    .map(|case_ref| AggregateKey { org: Some(event.org.clone()), subject: case_ref }),
                _ => None,
            };
            for key in own.into_iter().chain(sender_case) {
                let slot = self.filing.slot(&key);
                if let Some(state) = self.older.remove(&slot) {
                    self.states.insert(slot, state);
                } else if !self.states.contains_key(&slot) && seen.insert(key.clone()) {
                    wanted.push((key, batch_start));
                }
            }
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let this = &*self;
        let loaded: Vec<(AggregateKey, AggregateState)> = futures::stream::iter(wanted)
            .map(|(key, before)| async move {
                let state = this.load(&key, before).await?;
                Ok::<_, WorkerError>((key, state))
            })
            .buffer_unordered(PREFETCH_CONCURRENCY)
            .try_collect()
            .await?;
        for (key, state) in loaded {
            self.remember(&key, state);
        }
        Ok(())
    }

    /// Checks `event` (at sequence `seq`) against its aggregate and, if it keeps the rules,
    /// folds it in. The caller passes events in stream order, each exactly once.
    pub async fn admit(&mut self, seq: u64, event: &Envelope) -> Result<Result<(), RuleViolation>, WorkerError> {
        let Some(key) = AggregateKey::of(&event.org, &event.subject) else { return Ok(Ok(())) };
        let state = self.state(&key, seq).await?;
        let verdict = match &state {
            AggregateState::Case(s) => case::check(s, event).map_err(|e| violation(e.code(), &e)),
            AggregateState::Activity(s) => activity::check(s, event).map_err(|e| violation(e.code(), &e)),
            AggregateState::Referral(s) => {
                let consent = match referral::sender_case(event) {
                    Some(case_ref) => {
                        let case_key = AggregateKey { org: Some(event.org.clone()), subject: case_ref };
                        match self.state(&case_key, seq).await? {
                            AggregateState::Case(c) => c.consent().clone(),
                            _ => Default::default(),
                        }
                    }
                    None => Default::default(),
                };
                referral::check(s, event, &consent).map_err(|e| violation(e.code(), &e))
            }
        };
        if verdict.is_ok() {
            let next = fold(state, event);
            self.remember(&key, next);
        }
        Ok(verdict)
    }

    fn remember(&mut self, key: &AggregateKey, state: AggregateState) {
        self.states.insert(self.filing.slot(key), state);
    }

    /// The state of an aggregate just before sequence `before`.
    async fn state(&mut self, key: &AggregateKey, before: u64) -> Result<AggregateState, WorkerError> {
        let slot = self.filing.slot(key);
        if let Some(s) = self.states.get(&slot) {
            return Ok(s.clone());
        }
        if let Some(s) = self.older.remove(&slot) {
            self.states.insert(slot, s.clone());
            return Ok(s);
        }
        let state = if self.complete { key.initial() } else { self.load(key, before).await? };
        self.states.insert(slot, state.clone());
        Ok(state)
    }

    /// Folds an aggregate's admitted history before sequence `before` from the log.
    async fn load(&self, key: &AggregateKey, before: u64) -> Result<AggregateState, WorkerError> {
        let history = reader::subject_history(&self.stream, &key.filter(), before).await?;
        let mut state = key.initial();
        if !history.is_empty() {
            let seqs: Vec<i64> = history.iter().map(|m| m.sequence as i64).collect();
            // The validator's own refusals: an event it accepted that a view could not store
            // (`unprojectable`) stays in the history it judges by, as in a warm state.
            let quarantined: HashSet<i64> =
                sqlx::query_scalar::<_, i64>("SELECT seq FROM quarantine WHERE seq = ANY($1) AND reason <> $2")
                    .bind(&seqs)
                    .bind(crate::worker::UNPROJECTABLE)
                    .fetch_all(&self.pool)
                    .await?
                    .into_iter()
                    .collect();
            let stored: Vec<_> = history
                .iter()
                .filter(|m| !quarantined.contains(&(m.sequence as i64)))
                .filter_map(|m| StoredEvent::decode(&m.payload).ok().map(StoredEvent::into_v1))
                .collect();
            let key_ids: Vec<uuid::Uuid> = stored.iter().filter_map(|s| s.sealed.as_ref().map(|x| x.key_id)).collect();
            let keys = self.keys.lookup_many(&key_ids).await?;
            for s in stored {
                let personal = s.sealed.as_ref().and_then(|sealed| match keys.get(&sealed.key_id) {
                    Some(KeyLookup::Key(k)) => seal::open(k, s.id, sealed).ok(),
                    Some(KeyLookup::Erased | KeyLookup::Damaged) => Some(erased_placeholder(sealed.key_id)),
                    _ => None,
                });
                if let Ok(envelope) = s.open(personal) {
                    state = fold(state, &envelope);
                }
            }
        }
        Ok(state)
    }
}

/// What stands in for an erased client's personal fields when the rules are checked: the
/// client reference becomes `erased.<key id>` (distinct per client, valid as a reference),
/// every other personal field stays empty. It exists only in the validator's memory, so that a
/// validator rebuilt after an erasure judges the client's events as the live one did.
pub fn erased_placeholder(key_id: uuid::Uuid) -> relais_domain::events::PersonalFields {
    relais_domain::events::PersonalFields(vec![("client_ref".to_owned(), format!("erased.{}", key_id.simple()))])
}

fn violation(code: &'static str, e: &dyn std::fmt::Display) -> RuleViolation {
    RuleViolation { code, detail: e.to_string() }
}

fn fold(state: AggregateState, event: &Envelope) -> AggregateState {
    match state {
        AggregateState::Case(s) => AggregateState::Case(case::evolve(s, event)),
        AggregateState::Referral(s) => AggregateState::Referral(referral::evolve(s, event)),
        AggregateState::Activity(s) => AggregateState::Activity(activity::evolve(s, event)),
    }
}
