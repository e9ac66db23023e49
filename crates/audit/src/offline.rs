//! Offline verification of a replay file, with nothing but the public keys: no NATS, no
//! PostgreSQL, no network.
//!
//! For each event or message line the verifier recomputes the line's chain link from its
//! `relaisprev`, `sequence`, `relaissubject` and `relaispayload`, checks that consecutive lines
//! link up, that an event shows what its stored bytes hold ([`check_event_content`]), and
//! that every checkpoint's signature verifies and its head equals the link of the line it
//! follows. A *complete* replay (nothing filtered out, from sequence 1) must also start at the
//! genesis link and hold every sequence: a hole is a missing message. A partial replay proves
//! each line's own link and the links between consecutive lines; a checkpoint ties to the
//! file only when the line of its sequence is in it.

use base64::Engine;
use serde_json::{Map, Value};

use crate::chain::{GENESIS, Link};
use crate::checkpoint::{Checkpoint, VerifyingKey};
use crate::finding::{Finding, FindingKind};
use crate::line::{check_event_content, kind};

/// Most findings kept (the first is the one that matters; the rest follow from it or not).
const MAX_FINDINGS: usize = 100;

/// What the header line said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayHeader {
    /// The event stream.
    pub stream: String,
    /// True when nothing was filtered out from sequence 1 on.
    pub complete: bool,
    /// The filter, as the replay recorded it.
    pub filter: Value,
}

/// The outcome of verifying a replay file.
#[derive(Debug, Clone, Default)]
pub struct OfflineReport {
    /// The header, if the file had one.
    pub header: Option<ReplayHeader>,
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

    /// The summary line `relais verify` prints when nothing was found.
    pub fn summary(&self) -> String {
        let (seq, head) = match self.head {
            Some((s, l)) => (s, l.to_hex()),
            None => (0, GENESIS.to_hex()),
        };
        let checkpoint = match self.last_checkpoint {
            Some(c) => format!("last signed checkpoint at sequence {c}"),
            None => "no signed checkpoint".to_owned(),
        };
        format!("verified {} events, head {head} at sequence {seq}, {checkpoint}", self.events + self.messages)
    }
}

/// Verifies a replay file line by line, in constant memory.
#[derive(Debug)]
pub struct FileVerifier {
    keys: Vec<VerifyingKey>,
    report: OfflineReport,
    line_no: u64,
    last_seq: Option<u64>,
    last_link: Option<Link>,
    chain_ended: bool,
    checkpoints: u64,
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
            report: OfflineReport::default(),
            line_no: 0,
            last_seq: None,
            last_link: None,
            chain_ended: false,
            checkpoints: 0,
            end: None,
        }
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
        self.report.header = Some(ReplayHeader {
            stream: stream.to_owned(),
            complete: obj.get("complete").and_then(Value::as_bool).unwrap_or(false),
            filter: obj.get("filter").cloned().unwrap_or(Value::Null),
        });
    }

    fn complete(&self) -> bool {
        self.report.header.as_ref().is_some_and(|h| h.complete)
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
        if let Some(last) = self.last_seq
            && seq <= last
        {
            self.find(Finding::at(seq, FindingKind::Reordered, format!("sequence {seq} comes after sequence {last}")));
        }
        // A complete replay holds every sequence from 1.
        let expected = self.last_seq.map_or(1, |l| l + 1);
        if self.complete() && seq > expected {
            let recorded_hole = match (self.last_link.or(self.last_seq.is_none().then_some(GENESIS)), prev) {
                (Some(mut l), Some(p)) => {
                    for s in expected..seq {
                        l = l.next_missing(s);
                    }
                    l == p
                }
                _ => false,
            };
            let detail = if recorded_hole {
                format!("no message at sequences {expected} to {}: the chain recorded them as missing", seq - 1)
            } else {
                format!("no line for sequences {expected} to {}: deleted from the log or from this file", seq - 1)
            };
            self.find(Finding::at(expected, FindingKind::Missing, detail));
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
                if prev.next(seq, &subject, &payload) != link {
                    self.find(Finding::at(
                        seq,
                        FindingKind::Altered,
                        "its subject or stored bytes do not give its chain link",
                    ));
                } else if self.last_seq == Some(seq - 1) && self.last_link.is_some_and(|l| l != prev) {
                    self.find(Finding::at(
                        seq,
                        FindingKind::Altered,
                        format!("the chain breaks between sequences {} and {seq}", seq - 1),
                    ));
                } else if self.complete() && seq == 1 && prev != GENESIS {
                    self.find(Finding::at(seq, FindingKind::Altered, "the first link does not start at genesis"));
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
            self.report.messages += 1;
        }
        self.last_seq = Some(seq);
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
                if n("events").zip(n("messages")).map(|(e, m)| e + m) != Some(lines)
                    || n("checkpoints") != Some(self.checkpoints)
                    || (lines > 0 && n("lastsequence") != self.last_seq)
                {
                    self.find(Finding::general(
                        FindingKind::Incomplete,
                        "the end line's counts differ from the lines in the file: lines were added or removed",
                    ));
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
        assert!(report.summary().starts_with("verified 4 events, head "));
        assert!(report.summary().ends_with("at sequence 4, last signed checkpoint at sequence 3"));
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
}
