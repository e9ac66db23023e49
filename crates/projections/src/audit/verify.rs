//! Verification of the log against the audit chain, its signed checkpoints and the
//! projections (`relais verify`).
//!
//! The walk re-reads the whole stream in order and recomputes the chain from genesis:
//! - against the stored links, sequence by sequence, to name where the log changed after it
//!   was chained: a message gone (*missing*), different bytes or subject (*altered*), a
//!   message chained elsewhere (*reordered*), one the chain never had there (*inserted*);
//! - against every signed checkpoint (from PostgreSQL and from the audit stream, which must
//!   agree), which catches a log and a stored chain rewritten together;
//! - against the admission tags, which names messages no legitimate writer published
//!   (*inserted*: appended with bare broker credentials);
//! - against the idempotency ledger: every event the projections applied must still be in the
//!   log, at its sequence, with its id.
//!
//! Memory stays constant: the log, the links and the ledger are read in pages side by side.

use super::{AuditError, chain, checkpoints};
use async_nats::jetstream::stream::Stream;
use futures::StreamExt;
use relais_audit::{Admission, AdmissionKey, Finding, FindingKind, GENESIS, Link, VerifyingKey};
use relais_domain::StoredEvent;
use relais_eventlog::reader::{self, LogMessage};
use relais_eventlog::subjects;
use sqlx::PgPool;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use uuid::Uuid;

const PAGE: i64 = 2000;
const MAX_FINDINGS: usize = 200;
/// How far from a broken sequence the walk looks for the message that was chained there.
const WINDOW: u64 = 64;

/// What to verify with.
#[derive(Debug, Clone)]
pub struct VerifyOptions {
    /// Keys whose checkpoints are accepted (the current key and retired ones).
    pub public_keys: Vec<VerifyingKey>,
    /// The admission key, to check who published each message; `None` skips that check.
    pub admission: Option<AdmissionKey>,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// Messages read from the log.
    pub messages: u64,
    /// The chain head recomputed from the log.
    pub head: Option<(u64, Link)>,
    /// The last sequence the chain worker has chained.
    pub chain_head: u64,
    /// Messages after the chain head (not yet chained, so not yet covered).
    pub unchained: u64,
    /// The last checkpoint whose signature verified and whose head matched the log.
    pub last_checkpoint: Option<u64>,
    /// Checkpoints checked (PostgreSQL and audit stream together, each once).
    pub checkpoints: u64,
    /// Ledger entries (events the projections applied) checked.
    pub ledger_checked: u64,
    /// Everything wrong: the walk's findings in sequence order, then the stores'.
    pub findings: Vec<Finding>,
    /// Findings beyond those kept.
    pub more_findings: u64,
}

impl VerifyReport {
    /// True when nothing was found.
    pub fn is_verified(&self) -> bool {
        self.findings.is_empty()
    }

    /// The summary line of a successful verification.
    pub fn summary(&self) -> String {
        let (seq, head) = self.head.unwrap_or((0, GENESIS));
        let checkpoint = match self.last_checkpoint {
            Some(c) => format!("last signed checkpoint at sequence {c}"),
            None => "no signed checkpoint".to_owned(),
        };
        format!("verified {} events, head {head} at sequence {seq}, {checkpoint}", self.messages)
    }

    fn find(&mut self, f: Finding) {
        if self.findings.len() < MAX_FINDINGS {
            self.findings.push(f);
        } else {
            self.more_findings += 1;
        }
    }
}

/// Reads pages of rows in sequence order.
struct Pager<T> {
    buf: VecDeque<T>,
    after: u64,
    done: bool,
}

impl<T> Pager<T> {
    fn new() -> Self {
        Self { buf: VecDeque::new(), after: 0, done: false }
    }
}

async fn all_checkpoints(pool: &PgPool) -> Result<Vec<checkpoints::StoredCheckpoint>, AuditError> {
    let mut out = Vec::new();
    let mut cursor = (-1i64, -1i64);
    loop {
        let page = checkpoints::page(pool, 0, i64::MAX as u64, cursor, 1000).await?;
        let Some(last) = page.last() else { break };
        cursor = (last.checkpoint.sequence as i64, last.id);
        let n = page.len();
        out.extend(page);
        if n < 1000 {
            break;
        }
    }
    Ok(out)
}

/// The heads of the checkpoints to compare with the log, by sequence, after checking both
/// stores against each other and every signature.
async fn checkpoint_heads(
    pool: &PgPool,
    audit: &Stream,
    stream_name: &str,
    keys: &[VerifyingKey],
    report: &mut VerifyReport,
    store_findings: &mut Vec<Finding>,
) -> Result<BTreeMap<u64, Vec<Link>>, AuditError> {
    let in_pg = all_checkpoints(pool).await?;
    let on_stream = checkpoints::from_audit_stream(audit).await?;
    let key = |c: &relais_audit::Checkpoint| (c.statement(), c.signature);
    let pg_set: HashSet<_> = in_pg.iter().map(|c| key(&c.checkpoint)).collect();
    let mut stream_set = HashSet::new();
    let mut all = Vec::new();
    for (audit_seq, parsed) in on_stream {
        match parsed {
            Err(e) => store_findings.push(Finding::general(
                FindingKind::Malformed,
                format!("message {audit_seq} of the audit stream is not a checkpoint: {e}"),
            )),
            Ok(c) => {
                if !pg_set.contains(&key(&c)) {
                    store_findings.push(Finding::at(
                        c.sequence,
                        FindingKind::Checkpoint,
                        format!("checkpoint {audit_seq} of the audit stream is not in PostgreSQL: deleted there"),
                    ));
                }
                if stream_set.insert(key(&c)) {
                    all.push(c);
                }
            }
        }
    }
    for stored in &in_pg {
        let c = &stored.checkpoint;
        if !stored.columns_agree {
            store_findings.push(Finding::at(
                c.sequence,
                FindingKind::Checkpoint,
                format!("checkpoint row {} disagrees with its own signed statement", stored.id),
            ));
        }
        if stored.published && !stream_set.contains(&key(c)) {
            store_findings.push(Finding::at(
                c.sequence,
                FindingKind::Checkpoint,
                format!("checkpoint row {} was published but is not on the audit stream: deleted there", stored.id),
            ));
        }
        if !stream_set.contains(&key(c)) {
            all.push(c.clone());
        }
    }
    let mut heads: BTreeMap<u64, Vec<Link>> = BTreeMap::new();
    for c in all {
        report.checkpoints += 1;
        if c.stream != stream_name {
            store_findings.push(Finding::at(c.sequence, FindingKind::Checkpoint, "signed for another stream"));
            continue;
        }
        if let Err(e) = c.verify(keys) {
            store_findings.push(Finding::at(c.sequence, FindingKind::Checkpoint, e.to_string()));
            continue;
        }
        let v = heads.entry(c.sequence).or_default();
        if !v.contains(&c.head) {
            v.push(c.head);
        }
    }
    Ok(heads)
}

/// Names what happened at `s`, where the link recomputed from the stored link at `s - 1` and
/// the message now at `s` differs from the stored link at `s`.
async fn classify(
    pool: &PgPool,
    s: u64,
    stored: &chain::StoredLink,
    msg: Option<&LogMessage>,
    next: Option<&LogMessage>,
) -> Result<Finding, AuditError> {
    let Some(m) = msg else {
        return Ok(Finding::at(s, FindingKind::Missing, "the message chained here is gone from the log"));
    };
    if stored.missing {
        return Ok(Finding::at(s, FindingKind::Inserted, "a message where the chain recorded none"));
    }
    let window: HashMap<u64, Link> = chain::links_after(pool, s.saturating_sub(WINDOW + 2), s + WINDOW, 256)
        .await?
        .into_iter()
        .map(|l| (l.seq, l.link))
        .collect();
    let prev_of = |t: u64| if t == 1 { Some(GENESIS) } else { window.get(&(t - 1)).copied() };
    // Whether `m` is the message that was chained at `t`.
    let chained_at = |m: &LogMessage, t: u64| match (prev_of(t), window.get(&t)) {
        (Some(p), Some(l)) => p.next(t, &m.subject, &m.payload) == *l,
        _ => false,
    };
    let next = next.filter(|n| n.sequence == s + 1);
    let next_was_here = next.is_some_and(|n| chained_at(n, s));
    let mut candidates: Vec<u64> = window.keys().copied().filter(|t| *t != s).collect();
    candidates.sort_by_key(|t| t.abs_diff(s));
    if let Some(t) = candidates.into_iter().find(|t| chained_at(m, *t)) {
        return Ok(if t == s + 1 && !next_was_here {
            Finding::at(s, FindingKind::Missing, "the message chained here is gone; later messages moved up")
        } else {
            Finding::at(s, FindingKind::Reordered, format!("this is the message chained at sequence {t}"))
        });
    }
    if next_was_here {
        return Ok(Finding::at(
            s,
            FindingKind::Inserted,
            "a message the chain never had; the message chained here moved down",
        ));
    }
    Ok(Finding::at(s, FindingKind::Altered, "its stored bytes or subject differ from what was chained"))
}

fn admission_finding(s: u64, m: &LogMessage, key: &AdmissionKey) -> Option<Finding> {
    let detail = match key.check(m.admission.as_deref(), &m.subject, &m.payload) {
        Admission::Gateway | Admission::Org => return None,
        Admission::Missing => format!(
            "on {} without an admission tag: published with broker credentials, not through the gateway \
             nor by the organisation's registered publisher",
            m.subject
        ),
        Admission::Invalid => {
            format!("on {} with an admission tag that does not verify: forged, or changed after admission", m.subject)
        }
    };
    Some(Finding::at(s, FindingKind::Inserted, detail))
}

/// Walks the whole log and checks it; `progress(position, end)` is called now and then.
pub async fn verify(
    pool: &PgPool,
    stream: &Stream,
    audit: &Stream,
    options: &VerifyOptions,
    mut progress: impl FnMut(u64, u64),
) -> Result<VerifyReport, AuditError> {
    let mut report = VerifyReport::default();
    let mut store_findings = Vec::new();
    let stream_name = stream.cached_info().config.name.clone();
    let upper = reader::last_sequence(stream).await?;
    report.chain_head = checkpoints::chain_head(pool).await?.0;
    let end = upper.max(report.chain_head);
    let heads =
        checkpoint_heads(pool, audit, &stream_name, &options.public_keys, &mut report, &mut store_findings).await?;

    let mut messages = Box::pin(reader::ordered_range(stream, &subjects::all_events(), 1, upper).await?.peekable());
    let mut links: Pager<chain::StoredLink> = Pager::new();
    let mut ledger: Pager<(u64, Uuid)> = Pager::new();
    let (mut pure, mut check) = (GENESIS, GENESIS);
    let mut pure_diverged = false;
    for s in 1..=end {
        let msg = match messages.as_mut().peek().await {
            Some(Ok(m)) if m.sequence == s => match messages.next().await {
                Some(Ok(m)) => Some(m),
                _ => None,
            },
            Some(Err(_)) => match messages.next().await {
                Some(Err(e)) => return Err(e.into()),
                _ => None,
            },
            _ => None,
        };
        if links.buf.is_empty() && !links.done {
            let page = chain::links_after(pool, links.after, end, PAGE).await?;
            links.done = (page.len() as i64) < PAGE;
            links.after = page.last().map_or(links.after, |l| l.seq);
            links.buf.extend(page);
        }
        let row = links.buf.front().filter(|l| l.seq == s).copied();
        if row.is_some() {
            links.buf.pop_front();
        }
        let (computed, next_pure) = match &msg {
            Some(m) => (check.next(s, &m.subject, &m.payload), pure.next(s, &m.subject, &m.payload)),
            None => (check.next_missing(s), pure.next_missing(s)),
        };
        pure = next_pure;
        if msg.is_some() {
            report.messages += 1;
        }
        let mut found_here = false;
        match row {
            None => {
                report.unchained += u64::from(msg.is_some());
                check = computed;
            }
            Some(row) => {
                if row.link == computed {
                    if msg.is_none() {
                        found_here = true;
                        report.find(Finding::at(
                            s,
                            FindingKind::Missing,
                            "no message here: the chain recorded the sequence as empty when it reached it \
                             (deleted before it was chained)",
                        ));
                    }
                } else {
                    let next = match messages.as_mut().peek().await {
                        Some(Ok(n)) => Some(n.clone()),
                        _ => None,
                    };
                    found_here = true;
                    pure_diverged = true;
                    report.find(classify(pool, s, &row, msg.as_ref(), next.as_ref()).await?);
                }
                check = row.link;
            }
        }
        if !found_here
            && let (Some(m), Some(key)) = (&msg, &options.admission)
            && let Some(f) = admission_finding(s, m, key)
        {
            found_here = true;
            report.find(f);
        }
        loop {
            if ledger.buf.is_empty() && !ledger.done {
                let page: Vec<(i64, Uuid)> =
                    sqlx::query_as("SELECT seq, event_id FROM event_ledger WHERE seq > $1 ORDER BY seq LIMIT $2")
                        .bind(ledger.after as i64)
                        .bind(PAGE)
                        .fetch_all(pool)
                        .await?;
                ledger.done = (page.len() as i64) < PAGE;
                ledger.after = page.last().map_or(ledger.after, |(s, _)| *s as u64);
                ledger.buf.extend(page.into_iter().map(|(s, id)| (s as u64, id)));
            }
            match ledger.buf.front().copied() {
                Some((seq, id)) if seq <= s => {
                    ledger.buf.pop_front();
                    report.ledger_checked += 1;
                    let held = msg.as_ref().filter(|_| seq == s).and_then(|m| StoredEvent::decode(&m.payload).ok());
                    let detail = match held {
                        Some(e) if e.v1().id == id => None,
                        Some(e) => Some((
                            FindingKind::Altered,
                            format!("holds event {} where the ledger recorded {id}", e.v1().id),
                        )),
                        None => Some((
                            FindingKind::Missing,
                            format!("event {id}, recorded in the ledger, is no longer in the log"),
                        )),
                    };
                    if let Some((kind, detail)) = detail
                        && !found_here
                    {
                        found_here = true;
                        report.find(Finding::at(seq, kind, detail));
                    }
                }
                _ => break,
            }
        }
        if let Some(signed) = heads.get(&s) {
            if signed.iter().all(|h| *h == pure) {
                report.last_checkpoint = Some(s);
            } else if !pure_diverged {
                pure_diverged = true;
                report.find(Finding::at(
                    s,
                    FindingKind::Checkpoint,
                    "the signed head differs from the log: the log and the stored chain were rewritten together \
                     at or before this sequence",
                ));
            }
        }
        if s % 1000 == 0 || s == end {
            progress(s, end);
        }
    }
    if end > 0 {
        report.head = Some((end, pure));
    }
    // Ledger entries beyond the end of the log.
    let beyond: Vec<(i64, Uuid)> =
        sqlx::query_as("SELECT seq, event_id FROM event_ledger WHERE seq > $1 ORDER BY seq LIMIT 20")
            .bind(end as i64)
            .fetch_all(pool)
            .await?;
    for (seq, id) in beyond {
        report.find(Finding::at(
            seq as u64,
            FindingKind::Missing,
            format!("event {id}, recorded in the ledger, is beyond the end of the log"),
        ));
    }
    for (&c, _) in heads.range(end.saturating_add(1)..) {
        report.find(Finding::at(
            c,
            FindingKind::Missing,
            "a signed checkpoint reaches beyond the end of the log: its tail is gone",
        ));
    }
    for f in store_findings {
        report.find(f);
    }
    Ok(report)
}
