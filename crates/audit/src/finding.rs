//! What a verification found.

use serde::Serialize;

/// The kind of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// The message at the sequence is not the one that was chained there (its bytes or its
    /// subject changed), or the event shown differs from its stored bytes.
    Altered,
    /// No message where one was chained (deleted), or a hole in a replay of a whole sequence range.
    Missing,
    /// The message chained at one sequence now sits at another.
    Reordered,
    /// A message the chain did not have there, or one that no legitimate writer admitted.
    Inserted,
    /// A signed checkpoint that does not verify or does not match the history.
    Checkpoint,
    /// A line or record that is not in the documented format.
    Malformed,
    /// The replay or the walk did not reach its end.
    Incomplete,
}

impl FindingKind {
    /// The word printed by `relais verify`.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::Altered => "altered",
            FindingKind::Missing => "missing",
            FindingKind::Reordered => "reordered",
            FindingKind::Inserted => "inserted",
            FindingKind::Checkpoint => "checkpoint",
            FindingKind::Malformed => "malformed",
            FindingKind::Incomplete => "incomplete",
        }
    }
}

/// One finding, at a sequence when it has one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The stream sequence concerned.
    pub sequence: Option<u64>,
    /// What kind of break.
    pub kind: FindingKind,
    /// What exactly, for a person.
    pub detail: String,
}

impl Finding {
    /// A finding at a sequence.
    pub fn at(sequence: u64, kind: FindingKind, detail: impl Into<String>) -> Self {
        Self { sequence: Some(sequence), kind, detail: detail.into() }
    }

    /// A finding without a sequence.
    pub fn general(kind: FindingKind, detail: impl Into<String>) -> Self {
        Self { sequence: None, kind, detail: detail.into() }
    }
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.sequence {
            Some(s) => write!(f, "{} at sequence {s}: {}", self.kind.as_str(), self.detail),
            None => write!(f, "{}: {}", self.kind.as_str(), self.detail),
        }
    }
}
