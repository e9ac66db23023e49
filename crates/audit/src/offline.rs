//! Offline verification of a replay file, with nothing but the public keys: no NATS, no
//! PostgreSQL, no network.
//!
//! For each event or message line the verifier recomputes the line's chain link from its
//! `relaisprev`, `sequence`, `relaissubject` and `relaispayload`, checks that consecutive lines
//! link up, that an event shows what its stored bytes hold ([`check_event_content`]) and that
//! a message line neither holds an event nor shows decoded fields, and that every
//! checkpoint's signature verifies and its head equals the link of the line it follows.
//!
//! A file whose header claims no filter but a sequence range (a *complete* replay, from
//! sequence 1, or `from_seq`/`to_seq` only) holds every stored message of that range: a
//! sequence without a line, between the first and the last line or at either end of the
//! range, is **missing**. A file filtered by organisation, case, type or time proves each
//! line's own link and the links between lines adjacent in sequence; lines left out of it
//! cannot be detected, and lines not adjacent in sequence are not tied to each other. The
//! header is not signed: [`OfflineReport::summary`] repeats what it claims, and
//! [`FileVerifier::require_contiguous`] checks the file as a range whatever the header says.
//!
//! The work is bounded whatever the file holds: no arithmetic overflows, and the links of
//! sequences without a message are recomputed across holes for at most
//! [`MAX_HOLE_WALK`] sequences in all.

use base64::Engine;
use relais_domain::StoredEvent;
use serde_json::{Map, Value};

use crate::chain::{GENESIS, Link};
use crate::checkpoint::{Checkpoint, VerifyingKey};
use crate::finding::{Finding, FindingKind};
use crate::line::{check_event_content, kind};

/// Most findings kept (the first is the one that matters; the rest follow from it or not).
const MAX_FINDINGS: usize = 100;

/// Most "no message" links recomputed across holes, over the whole file, to tell a hole the
/// chain recorded from a deletion. A longer hole is reported without that distinction.
pub const MAX_HOLE_WALK: u64 = 1_000_000;

/// The members a message line may have (see [`crate::line::message_line`]).
const MESSAGE_MEMBERS: &[&str] = &[
    "relaiskind",
    "sequence",
    "relaissubject",
    "relaispayload",
    "relaisprev",
    "relaislink",
    "relaisadmission",
    "relaisquarantine",
];

/// The filter members that select only a sequence range.
const RANGE_MEMBERS: &[&str] = &["from_seq", "to_seq"];

/// What the header line said (it is not signed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayHeader {
    /// The event stream.
    pub stream: String,
    /// True when nothing was filtered out from sequence 1 on.
    pub complete: bool,
    /// The filter, as the replay recorded it.
    pub filter: Value,
    /// The first sequence the replay read (`fromsequence`).
    pub from_sequence: Option<u64>,
    /// The last sequence the replay read up to (`tosequence`).
    pub to_sequence: Option<u64>,
}

impl ReplayHeader {
    /// True when the filter selects at most a sequence range: every stored message of the
    /// range then has its line.
    pub fn is_sequence_range(&self) -> bool {
        match &self.filter {
            Value::Object(members) => {
                members.iter().all(|(name, value)| value.is_null() || RANGE_MEMBERS.contains(&name.as_str()))
            }
            _ => false,
        }
    }
}

/// The outcome of verifying a replay file.
#[derive(Debug, Clone, Default)]
pub struct OfflineReport {
    /// The header, if the file had one.
    pub header: Option<ReplayHeader>,
    /// True when the file was checked as a contiguous range (no sequence may lack its line).
    pub contiguous: bool,
    /// Event lines.
    pub events: u64,
    /// Message lines (stored messages that are not readable events).
    pub messages: u64,
    /// Lines the chain had not reached yet (no link): shown, not verified.
    pub unchained: u64,
    /// Events whose personal fields are sealed and so were not compared.
    pub sealed: u64,
    /// The last chained line: its sequence and link.
    pub head: Option<(u64, Link)>,
    /// The sequence of the last checkpoint whose signature verified and whose head matched.
    pub last_checkpoint: Option<u64>,
    /// The lines tied to that checkpoint by an unbroken chain: how many, and the sequence of
    /// the first.
    pub tied_to_checkpoint: (u64, u64),
    /// Lines after that checkpoint (not covered by a signature).
    pub after_checkpoint: u64,
    /// Checkpoints whose signature verified but whose sequence is not in the file.
    pub untied_checkpoints: u64,
    /// Everything wrong, in file order.
    pub findings: Vec<Finding>,
    /// More findings than were kept.
    pub more_findings: u64,
}

impl OfflineReport {
    /// True when nothing was found.
    pub fn is_verified(&self) -> bool {
        self.findings.is_empty()
    }

    /// What `relais verify` prints when nothing was found: the first line names the head and
    /// the last signed checkpoint; the next ones say how far that checkpoint reaches and what
    /// the (unsigned) header claims.
    pub fn summary(&self) -> String {
        let lines = self.events.saturating_add(self.messages);
        let (seq, head) = match self.head {
            Some((s, l)) => (s, l.to_hex()),
            None => (0, GENESIS.to_hex()),
        };
        let checkpoint = match self.last_checkpoint {
            Some(c) => format!("last signed checkpoint at sequence {c}"),
            None => "no signed checkpoint".to_owned(),
        };
        let mut out = format!("verified {lines} events, head {head} at sequence {seq}, {checkpoint}");
        if let Some(c) = self.last_checkpoint {
            let (tied, first) = self.tied_to_checkpoint;
            let genesis = if first == 1 { ", from genesis" } else { "" };
            out.push_str(&format!(
                "\nthe checkpoint at sequence {c} is tied by an unbroken chain to {tied} of the {lines} lines \
                 (sequences {first} to {c}{genesis})"
            ));
            if self.after_checkpoint > 0 {
                let n = self.after_checkpoint;
                let (noun, verb) = if n == 1 { ("line", "is") } else { ("lines", "are") };
                out.push_str(&format!("; the {n} {noun} after it {verb} not signed"));
            }
        }
        if let Some(h) = &self.header {
            let bound = |b: Option<u64>| b.map_or_else(|| "?".to_owned(), |b| b.to_string());
            let (from, to) = (bound(h.from_sequence), bound(h.to_sequence));
            out.push_str(&format!(
                "\nthe header claims (it is not signed: compare it with what you asked for): filter {}, \
                 sequences {from} to {to}, complete {}",
                h.filter, h.complete
            ));
            if self.contiguous {
                out.push_str(&format!("\nthe file holds a line for every sequence from {from} to {to}"));
            } else {
                out.push_str(
                    "\nthe file is filtered (organisation, case, type or time): lines left out of it cannot be \
                     detected, and lines not adjacent in sequence are not tied to each other",
                );
            }
        }
        out
    }
}

/// Verifies a replay file line by line, in constant memory.
#[derive(Debug)]
pub struct FileVerifier {
    keys: Vec<VerifyingKey>,
    require_contiguous: bool,
    report: OfflineReport,
    line_no: u64,
    last_seq: Option<u64>,
    last_link: Option<Link>,
    chain_ended: bool,
    checkpoints: u64,
    /// The unbroken chain that ends at the last line: how many lines, from which sequence.
    run: (u64, u64),
    /// "No message" links that may still be recomputed across holes.
    hole_walk: u64,
    end: Option<Map<String, Value>>,
}

fn hex_link(obj: &Map<String, Value>, name: &str) -> Result<Option<Link>, String> {
    match obj.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Link::from_hex(s).map(Some).ok_or_else(|| format!("{name} is not 64 hex digits")),
        Some(_) => Err(format!("{name} is not a string")),
    }
}

impl FileVerifier {
    /// A verifier that accepts checkpoints signed by any of `keys`.
    pub fn new(keys: Vec<VerifyingKey>) -> Self {
        Self {
            keys,
            require_contiguous: false,
            report: OfflineReport::default(),
            line_no: 0,
            last_seq: None,
            last_link: None,
            chain_ended: false,
            checkpoints: 0,
            run: (0, 0),
            hole_walk: MAX_HOLE_WALK,
            end: None,
        }
    }

    /// Checks the file as a contiguous range of sequences (from the header's `fromsequence`
    /// to its `tosequence`) whatever filter its header claims: for an auditor who asked for a
    /// sequence range, or for everything.
    pub fn require_contiguous(mut self) -> Self {
        self.require_contiguous = true;
        self.report.contiguous = true;
        self
    }

    fn find(&mut self, finding: Finding) {
        if self.report.findings.len() < MAX_FINDINGS {
            self.report.findings.push(finding);
        } else {
            self.report.more_findings += 1;
        }
    }

    fn malformed(&mut self, detail: impl std::fmt::Display) {
        let line = self.line_no;
        self.find(Finding::general(FindingKind::Malformed, format!("line {line}: {detail}")));
    }

    /// Reads the next line of the file.
    pub fn line(&mut self, text: &str) {
        self.line_no += 1;
        if text.trim().is_empty() {
            return;
        }
        let obj = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(obj)) => obj,
            _ => return self.malformed("not a JSON object"),
        };
        if self.end.is_some() {
            return self.malformed("a line after the end line");
        }
        let kind = obj.get("relaiskind").and_then(Value::as_str).unwrap_or_default().to_owned();
        if self.report.header.is_none() && kind != kind::REPLAY {
            return self.malformed("the first line must be the replay header");
        }
        match kind.as_str() {
            kind::REPLAY => self.header(&obj),
            kind::EVENT | kind::MESSAGE => self.message(&obj, kind == kind::EVENT),
            kind::CHECKPOINT => self.checkpoint(&obj),
            kind::END => self.end = Some(obj),
            kind::ERROR => {
                let detail = obj.get("detail").and_then(Value::as_str).unwrap_or("no detail").to_owned();
                self.find(Finding::general(
                    FindingKind::Incomplete,
                    format!("the replay stopped on an error: {detail}"),
                ));
            }
            other => self.malformed(format!("unknown relaiskind {other:?}")),
        }
    }

    fn header(&mut self, obj: &Map<String, Value>) {
        if self.report.header.is_some() {
            return self.malformed("a second header line");
        }
        if obj.get("version").and_then(Value::as_u64) != Some(crate::line::FORMAT_VERSION) {
            return self.malformed("unknown replay format version");
        }
        let Some(stream) = obj.get("stream").and_then(Value::as_str) else {
            return self.malformed("the header names no stream");
        };
        let header = ReplayHeader {
            stream: stream.to_owned(),
            complete: obj.get("complete").and_then(Value::as_bool).unwrap_or(false),
            filter: obj.get("filter").cloned().unwrap_or(Value::Null),
            from_sequence: obj.get("fromsequence").and_then(Value::as_u64),
            to_sequence: obj.get("tosequence").and_then(Value::as_u64),
        };
        if header.complete && (!header.is_sequence_range() || header.from_sequence != Some(1)) {
            self.malformed("the header says complete, but its filter or its first sequence says otherwise");
        }
        self.report.contiguous |= header.complete || header.is_sequence_range();
        if self.report.contiguous && (header.from_sequence.is_none() || header.to_sequence.is_none()) {
            self.malformed("the header gives no sequence range (fromsequence, tosequence)");
        }
        self.report.header = Some(header);
    }

    fn complete(&self) -> bool {
        self.report.header.as_ref().is_some_and(|h| h.complete)
    }

    /// The sequence the first line must have, in a contiguous file.
    fn first_sequence(&self) -> Option<u64> {
        let header = self.report.header.as_ref()?;
        if header.complete { Some(1) } else { header.from_sequence }
    }

    /// Reports the sequences `from` to `to` (inclusive) as missing. `before` is the link of
    /// `from - 1` when known, and `prev` the `relaisprev` of the line at `to + 1`: when the
    /// "no message" links lead from one to the other, the chain itself recorded the hole.
    /// Returns whether it did.
    fn hole(&mut self, from: u64, to: u64, before: Option<Link>, prev: Option<Link>) -> bool {
        let length = to.saturating_sub(from).saturating_add(1);
        let recorded = match (before, prev) {
            (Some(mut l), Some(p)) if length <= self.hole_walk => {
                self.hole_walk -= length;
                for s in from..=to {
                    l = l.next_missing(s);
                }
                l == p
            }
            _ => false,
        };
        let detail = if recorded {
            format!("no message at sequences {from} to {to}: the chain recorded them as missing")
        } else {
            format!("no line for sequences {from} to {to}: deleted from the log or from this file")
        };
        self.find(Finding::at(from, FindingKind::Missing, detail));
        recorded
    }

    fn message(&mut self, obj: &Map<String, Value>, is_event: bool) {
        let Some(seq) = obj.get("sequence").and_then(Value::as_u64).filter(|s| *s > 0) else {
            return self.malformed("no sequence");
        };
        let Some(subject) = obj.get("relaissubject").and_then(Value::as_str).map(str::to_owned) else {
            return self.malformed(format!("sequence {seq}: no relaissubject"));
        };
        let payload = match obj.get("relaispayload").and_then(Value::as_str) {
            Some(p) => match base64::engine::general_purpose::STANDARD.decode(p) {
                Ok(b) => b,
                Err(_) => return self.malformed(format!("sequence {seq}: relaispayload is not base64")),
            },
            None => return self.malformed(format!("sequence {seq}: no relaispayload")),
        };
        let (prev, link) = match (hex_link(obj, "relaisprev"), hex_link(obj, "relaislink")) {
            (Ok(p), Ok(l)) => (p, l),
            (Err(e), _) | (_, Err(e)) => return self.malformed(format!("sequence {seq}: {e}")),
        };
        let range = self.report.header.as_ref().map(|h| (h.from_sequence, h.to_sequence));
        if let Some((from, to)) = range
            && (from.is_some_and(|f| seq < f) || to.is_some_and(|t| seq > t))
        {
            self.malformed(format!("sequence {seq} is outside the range the header claims"));
        }
        if let Some(last) = self.last_seq
            && seq <= last
        {
            self.find(Finding::at(seq, FindingKind::Reordered, format!("sequence {seq} comes after sequence {last}")));
        }
        // A contiguous file holds every sequence of its range. `through_hole`: the chain
        // leads from the last line to this one across the hole.
        let mut through_hole = false;
        let expected = match self.last_seq {
            Some(last) => last.checked_add(1),
            None => self.first_sequence(),
        };
        if self.report.contiguous
            && let Some(expected) = expected
            && seq > expected
        {
            let before = match self.last_seq {
                Some(_) => self.last_link,
                None => (expected == 1).then_some(GENESIS),
            };
            through_hole = self.hole(expected, seq - 1, before, prev);
        }
        match (prev, link) {
            (_, None) => {
                self.chain_ended = true;
                self.report.unchained += 1;
            }
            (None, Some(_)) => self.malformed(format!("sequence {seq}: a link without relaisprev")),
            (Some(prev), Some(link)) => {
                if self.chain_ended {
                    self.malformed(format!("sequence {seq}: a chained line after an unchained one"));
                }
                let adjacent = self.last_seq == Some(seq - 1) && self.last_link.is_some();
                if prev.next(seq, &subject, &payload) != link {
                    self.find(Finding::at(
                        seq,
                        FindingKind::Altered,
                        "its subject or stored bytes do not give its chain link",
                    ));
                    self.run = (0, seq);
                } else if adjacent && self.last_link != Some(prev) {
                    self.find(Finding::at(
                        seq,
                        FindingKind::Altered,
                        format!("the chain breaks between sequences {} and {seq}", seq - 1),
                    ));
                    self.run = (1, seq);
                } else if seq == 1 && prev != GENESIS {
                    self.find(Finding::at(seq, FindingKind::Altered, "the first link does not start at genesis"));
                    self.run = (1, seq);
                } else if adjacent || through_hole {
                    self.run.0 += 1;
                } else {
                    self.run = (1, seq);
                }
                self.last_link = Some(link);
                self.report.head = Some((seq, link));
            }
        }
        if link.is_none() {
            self.last_link = None;
        }
        if is_event {
            match check_event_content(obj, &payload) {
                Ok(sealed) => self.report.sealed += u64::from(sealed),
                Err(detail) => self.find(Finding::at(seq, FindingKind::Altered, detail)),
            }
            self.report.events += 1;
        } else {
            self.check_message_content(seq, obj, &payload);
            self.report.messages += 1;
        }
        self.report.after_checkpoint += 1;
        self.last_seq = Some(seq);
    }

    /// A message line is written only for stored bytes that are not a readable event, and
    /// shows nothing decoded: an event line relabelled as a message would escape
    /// [`check_event_content`].
    fn check_message_content(&mut self, seq: u64, obj: &Map<String, Value>, payload: &[u8]) {
        if let Some(name) = obj.keys().find(|k| !MESSAGE_MEMBERS.contains(&k.as_str())) {
            self.find(Finding::at(
                seq,
                FindingKind::Altered,
                format!("a message line shows {name:?}: a message line shows nothing decoded from its stored bytes"),
            ));
        } else if StoredEvent::decode(payload).is_ok_and(|s| s.into_v1().open(None).is_ok()) {
            self.find(Finding::at(
                seq,
                FindingKind::Altered,
                "a message line whose stored bytes are an event: the replay shows it as an event line",
            ));
        }
    }

    fn checkpoint(&mut self, obj: &Map<String, Value>) {
        self.checkpoints += 1;
        let checkpoint = match Checkpoint::from_json(&Value::Object(obj.clone())) {
            Ok(c) => c,
            Err(e) => return self.malformed(e),
        };
        let c = checkpoint.sequence;
        if self.report.header.as_ref().is_some_and(|h| h.stream != checkpoint.stream) {
            self.find(Finding::at(c, FindingKind::Checkpoint, "signed for another stream"));
            return;
        }
        if let Err(e) = checkpoint.verify(&self.keys) {
            self.find(Finding::at(c, FindingKind::Checkpoint, e.to_string()));
            return;
        }
        match (self.last_seq, self.last_link) {
            (Some(s), Some(link)) if s == c => {
                if link == checkpoint.head {
                    self.report.last_checkpoint = Some(c);
                    self.report.tied_to_checkpoint = self.run;
                    self.report.after_checkpoint = 0;
                } else {
                    self.find(Finding::at(
                        c,
                        FindingKind::Checkpoint,
                        "the signed head differs from the chain in this file: history at or before it was rewritten",
                    ));
                }
            }
            _ if self.complete() => self.find(Finding::at(
                c,
                FindingKind::Checkpoint,
                "the checkpoint does not follow the chained line of its sequence",
            )),
            _ => self.report.untied_checkpoints += 1,
        }
    }

    /// Ends the file and returns the report.
    pub fn finish(mut self) -> OfflineReport {
        if self.report.header.is_none() {
            self.find(Finding::general(FindingKind::Malformed, "no replay header: not a Relais replay file"));
        }
        match self.end.take() {
            None => self.find(Finding::general(
                FindingKind::Incomplete,
                "the file has no end line: it was truncated or the replay did not finish",
            )),
            Some(end) => {
                let n = |name: &str| end.get(name).and_then(Value::as_u64);
                let lines = self.report.events + self.report.messages;
                if n("events").zip(n("messages")).and_then(|(e, m)| e.checked_add(m)) != Some(lines)
                    || n("checkpoints") != Some(self.checkpoints)
                    || (lines > 0 && n("lastsequence") != self.last_seq)
                {
                    self.find(Finding::general(
                        FindingKind::Incomplete,
                        "the end line's counts differ from the lines in the file: lines were added or removed",
                    ));
                }
                // The lines at the end of a contiguous range.
                let to = self.report.header.as_ref().and_then(|h| h.to_sequence);
                let next = match self.last_seq {
                    Some(last) => last.checked_add(1),
                    None => self.first_sequence(),
                };
                if self.report.contiguous
                    && let (Some(next), Some(to)) = (next, to)
                    && next <= to
                {
                    self.hole(next, to, None, None);
                }
            }
        }
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::SigningKey;
    use crate::line::{ChainFields, end_line, event_line, header_line};
    use chrono::Utc;
    use relais_domain::{Envelope, StoredEvent};
    use serde_json::json;

    fn envelope(i: u64) -> Envelope {
        let event = json!({
            "specversion": "1.0", "id": uuid_of(i), "source": "/orgs/apo", "type": "relais.intervention.recorded",
            "subject": "cases/c-1", "time": "2026-03-02T09:30:00Z",
            "data": { "client_ref": "cl-1", "mode": "informing", "life_domains": ["housing"],
                      "duration_minutes": 30 + i, "language": "fr", "interpreter": "none" }
        });
        Envelope::from_cloud_event(event, Utc::now(), "test").expect("valid event").0
    }

    fn uuid_of(i: u64) -> String {
        format!("00000000-0000-4000-8000-{i:012}")
    }

    /// A complete replay of `n` events (personal fields in the clear in the payload: the
    /// verifier does not care), signed at sequence `n - 1`.
    fn replay(n: u64) -> (Vec<String>, VerifyingKey) {
        let key = SigningKey::from_seed([9; 32]);
        let mut lines = vec![Value::Object(header_line("RELAIS", json!({}), 1, n, Utc::now(), true)).to_string()];
        let mut prev = GENESIS;
        for seq in 1..=n {
            let e = envelope(seq);
            let payload = StoredEvent::V1(e.split_for_storage().0).encode();
            let subject = "relais.ev.apo.cases.c-1";
            let link = prev.next(seq, subject, &payload);
            let chain = ChainFields {
                sequence: seq,
                subject,
                payload: &payload,
                prev: Some(prev),
                link: Some(link),
                admission: None,
                quarantine: None,
            };
            // The stored bytes hold no personal field (split_for_storage took them out): show
            // the event as stored.
            let shown = StoredEvent::decode(&payload).expect("decodes").into_v1().open(None).expect("opens");
            lines.push(Value::Object(event_line(&shown, &chain)).to_string());
            if seq == n - 1 {
                lines.push(Value::Object(key.sign("RELAIS", seq, link, Utc::now()).to_json()).to_string());
            }
            prev = link;
        }
        lines.push(Value::Object(end_line(n, 0, 1, n)).to_string());
        (lines, key.verifying_key())
    }

    fn verify(lines: &[String], key: VerifyingKey) -> OfflineReport {
        let mut v = FileVerifier::new(vec![key]);
        for l in lines {
            v.line(l);
        }
        v.finish()
    }

    #[test]
    fn an_untouched_complete_replay_verifies() {
        let (lines, key) = replay(4);
        let report = verify(&lines, key);
        assert!(report.is_verified(), "{:?}", report.findings);
        assert_eq!(report.events, 4);
        assert_eq!(report.last_checkpoint, Some(3));
        let summary = report.summary();
        let first = summary.lines().next().expect("a line");
        assert!(first.starts_with("verified 4 events, head "), "{summary}");
        assert!(first.ends_with("at sequence 4, last signed checkpoint at sequence 3"), "{summary}");
    }

    #[test]
    fn an_edited_field_is_named_at_its_sequence() {
        let (mut lines, key) = replay(4);
        lines[2] = lines[2].replace("\"duration_minutes\":32", "\"duration_minutes\":33");
        let report = verify(&lines, key);
        assert_eq!(report.findings[0].sequence, Some(2), "{:?}", report.findings);
        assert_eq!(report.findings[0].kind, FindingKind::Altered);
        assert!(report.findings[0].detail.contains("duration_minutes"));
    }

    #[test]
    fn a_removed_line_is_missing_and_swapped_lines_are_reordered() {
        let (lines, key) = replay(4);
        let mut removed = lines.clone();
        removed.remove(2);
        let report = verify(&removed, key);
        assert_eq!(report.findings[0], Finding::at(2, FindingKind::Missing, report.findings[0].detail.clone()));

        let mut swapped = lines.clone();
        swapped.swap(1, 2);
        let report = verify(&swapped, key);
        assert!(report.findings.iter().any(|f| f.kind == FindingKind::Reordered && f.sequence == Some(1)));
        assert!(!report.is_verified());
    }

    #[test]
    fn a_checkpoint_signed_by_another_key_or_a_truncated_file_fails() {
        let (lines, _) = replay(3);
        let other = SigningKey::from_seed([1; 32]).verifying_key();
        let report = verify(&lines, other);
        assert_eq!(report.findings[0].kind, FindingKind::Checkpoint);
        let (mut lines, key) = replay(3);
        lines.pop();
        let report = verify(&lines, key);
        assert_eq!(report.findings[0].kind, FindingKind::Incomplete);
    }

    #[test]
    fn a_recomputed_link_after_an_edit_breaks_the_signed_head() {
        // The forger edits the payload of sequence 1 and recomputes every link after it, but
        // cannot sign a new checkpoint.
        let (lines, key) = replay(3);
        let mut forged = Vec::new();
        let mut prev = GENESIS;
        for l in &lines {
            let mut obj: Map<String, Value> = serde_json::from_str(l).expect("json");
            if obj["relaiskind"] == "event" {
                let seq = obj["sequence"].as_u64().expect("seq");
                if seq == 1 {
                    let e = envelope(99);
                    let payload = StoredEvent::V1(e.split_for_storage().0).encode();
                    let shown = StoredEvent::decode(&payload).expect("decodes").into_v1().open(None).expect("opens");
                    let mut replaced = shown.to_cloud_event();
                    replaced.insert("relaiskind".into(), "event".into());
                    replaced.insert("sequence".into(), 1.into());
                    replaced.insert("relaissubject".into(), obj["relaissubject"].clone());
                    replaced.insert(
                        "relaispayload".into(),
                        base64::engine::general_purpose::STANDARD.encode(&payload).into(),
                    );
                    obj = replaced;
                }
                let payload = base64::engine::general_purpose::STANDARD
                    .decode(obj["relaispayload"].as_str().expect("payload"))
                    .expect("base64");
                let link = prev.next(seq, obj["relaissubject"].as_str().expect("subject"), &payload);
                obj.insert("relaisprev".into(), prev.to_hex().into());
                obj.insert("relaislink".into(), link.to_hex().into());
                prev = link;
            }
            forged.push(Value::Object(obj).to_string());
        }
        let report = verify(&forged, key);
        assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
        assert_eq!(report.findings[0].kind, FindingKind::Checkpoint);
        assert_eq!(report.findings[0].sequence, Some(2));
    }

    /// `replay(n)` under another header (`complete: false`, sequences `from` to `n`), without
    /// the lines before `from` and those `keep` drops, and with an end line counting the rest.
    fn reshaped(n: u64, filter: Value, from: u64, keep: impl Fn(u64) -> bool) -> (Vec<String>, VerifyingKey) {
        let (lines, key) = replay(n);
        let header = Value::Object(header_line("RELAIS", filter, from, n, Utc::now(), false)).to_string();
        let mut out = vec![header];
        let (mut events, mut checkpoints, mut last) = (0, 0, 0);
        for l in &lines[1..lines.len() - 1] {
            let obj: Map<String, Value> = serde_json::from_str(l).expect("json");
            let seq = obj["sequence"].as_u64().expect("seq");
            if obj["relaiskind"] == "checkpoint" {
                checkpoints += 1;
            } else if seq >= from && keep(seq) {
                events += 1;
                last = seq;
            } else {
                continue;
            }
            out.push(l.clone());
        }
        out.push(Value::Object(end_line(events, 0, checkpoints, last)).to_string());
        (out, key)
    }

    fn seq_range(from: u64, to: u64) -> Value {
        json!({ "org": null, "type": null, "case": null, "from": null, "to": null, "from_seq": from, "to_seq": to })
    }

    #[test]
    fn a_line_removed_from_a_sequence_range_is_missing() {
        let (lines, key) = reshaped(6, seq_range(2, 6), 2, |_| true);
        let report = verify(&lines, key);
        assert!(report.is_verified(), "{:?}", report.findings);
        // Inside the range, at its start and at its end (the end line rewritten each time).
        for removed in [4, 2, 6] {
            let (lines, key) = reshaped(6, seq_range(2, 6), 2, |s| s != removed);
            let report = verify(&lines, key);
            assert_eq!(report.findings.len(), 1, "{removed}: {:?}", report.findings);
            assert_eq!(report.findings[0].sequence, Some(removed), "{:?}", report.findings);
            assert_eq!(report.findings[0].kind, FindingKind::Missing);
        }
        // A header without a filter holds every message of its range too.
        let (lines, key) = reshaped(6, json!({}), 2, |s| s != 3);
        assert_eq!(
            verify(&lines, key).findings[0],
            Finding::at(
                3,
                FindingKind::Missing,
                "no line for sequences 3 to 3: deleted from the log or from this file"
            )
        );
    }

    #[test]
    fn a_verifier_can_require_a_contiguous_range_whatever_the_header_says() {
        let (lines, key) = reshaped(5, json!({ "org": "apo" }), 1, |s| s != 2);
        assert!(verify(&lines, key).is_verified());
        let mut v = FileVerifier::new(vec![key]).require_contiguous();
        for l in &lines {
            v.line(l);
        }
        let report = v.finish();
        assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
        assert_eq!(report.findings[0].sequence, Some(2));
        assert_eq!(report.findings[0].kind, FindingKind::Missing);
    }

    #[test]
    fn the_summary_claims_only_what_the_checkpoint_ties() {
        let (lines, key) = replay(4);
        let summary = verify(&lines, key).summary();
        assert!(summary.contains("tied by an unbroken chain to 3 of the 4 lines"), "{summary}");
        assert!(summary.contains("the file holds a line for every sequence from 1 to 4"), "{summary}");

        // Filtered by organisation: sequence 2 may be left out, and nothing ties 1 to 3.
        let (lines, key) = reshaped(4, json!({ "org": "apo" }), 1, |s| s != 2);
        let report = verify(&lines, key);
        assert!(report.is_verified(), "{:?}", report.findings);
        let summary = report.summary();
        assert!(summary.starts_with("verified 3 events, head "), "{summary}");
        assert!(summary.contains("tied by an unbroken chain to 1 of the 3 lines"), "{summary}");
        assert!(summary.contains("not adjacent in sequence are not tied to each other"), "{summary}");
        assert!(summary.contains(r#""org":"apo""#), "the claimed filter is shown: {summary}");
    }

    #[test]
    fn a_message_line_does_not_hide_an_event() {
        // An event line relabelled as a message, with a decoded field edited.
        let (mut lines, key) = replay(3);
        lines[2] = lines[2]
            .replace("\"relaiskind\":\"event\"", "\"relaiskind\":\"message\"")
            .replace("\"duration_minutes\":32", "\"duration_minutes\":99");
        lines[5] = Value::Object(end_line(2, 1, 1, 3)).to_string();
        let report = verify(&lines, key);
        assert!(
            report.findings.iter().any(|f| f.sequence == Some(2) && f.kind == FindingKind::Altered),
            "{:?}",
            report.findings
        );

        // A message that is not an event verifies, but not with decoded fields added to it.
        let payload = b"\xffnot an event";
        let subject = "relais.ev.apo.cases.c-1";
        let chain = ChainFields {
            sequence: 1,
            subject,
            payload,
            prev: Some(GENESIS),
            link: Some(GENESIS.next(1, subject, payload)),
            admission: None,
            quarantine: Some("not an event"),
        };
        let message = crate::line::message_line(&chain);
        let file = |m: &Map<String, Value>| {
            vec![
                Value::Object(header_line("RELAIS", json!({}), 1, 1, Utc::now(), true)).to_string(),
                Value::Object(m.clone()).to_string(),
                Value::Object(end_line(0, 1, 0, 1)).to_string(),
            ]
        };
        let report = verify(&file(&message), key);
        assert!(report.is_verified(), "{:?}", report.findings);
        let mut dressed = message.clone();
        dressed.insert("type".into(), "relais.intervention.recorded".into());
        dressed.insert("data".into(), json!({ "duration_minutes": 30 }));
        let report = verify(&file(&dressed), key);
        assert_eq!(report.findings.len(), 1, "{:?}", report.findings);
        assert_eq!(report.findings[0].sequence, Some(1));
        assert_eq!(report.findings[0].kind, FindingKind::Altered);
    }

    #[test]
    fn hostile_sequences_neither_hang_nor_panic() {
        let subject = "relais.ev.apo.cases.c-1";
        let message = |seq: u64| {
            let prev = Link([7; 32]);
            let chain = ChainFields {
                sequence: seq,
                subject,
                payload: b"x",
                prev: Some(prev),
                link: Some(prev.next(seq, subject, b"x")),
                admission: None,
                quarantine: None,
            };
            Value::Object(crate::line::message_line(&chain)).to_string()
        };
        let header = Value::Object(header_line("RELAIS", json!({}), 1, u64::MAX, Utc::now(), true)).to_string();
        let filtered =
            Value::Object(header_line("RELAIS", json!({ "org": "apo" }), 1, u64::MAX, Utc::now(), false)).to_string();
        let files = [
            // A hole of 10^18 sequences in a complete replay.
            vec![header, message(1_000_000_000_000_000_000), Value::Object(end_line(0, 1, 0, 1)).to_string()],
            // A line at the last sequence there is, then another.
            vec![filtered.clone(), message(u64::MAX), message(5)],
            // Counts that overflow.
            vec![filtered, message(1), Value::Object(end_line(u64::MAX, 1, 0, 1)).to_string()],
        ];
        let (sent, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let key = SigningKey::from_seed([9; 32]).verifying_key();
            let reports: Vec<OfflineReport> = files.iter().map(|f| verify(f, key)).collect();
            let _ = sent.send(reports);
        });
        let reports =
            received.recv_timeout(std::time::Duration::from_secs(30)).expect("verified in time, without a panic");
        for r in &reports {
            assert!(!r.is_verified());
        }
        assert_eq!(reports[0].findings[0].kind, FindingKind::Missing, "{:?}", reports[0].findings);
        assert!(reports[1].findings.iter().any(|f| f.kind == FindingKind::Reordered), "{:?}", reports[1].findings);
        assert!(reports[2].findings.iter().any(|f| f.kind == FindingKind::Incomplete), "{:?}", reports[2].findings);
    }
}
