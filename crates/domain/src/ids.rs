//! Identifiers that appear in subjects and sources.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// An organisation id must be 1 to 32 characters of `a-z`, `0-9` and `-`.
    #[error("organisation id must be 1 to 32 characters of a-z, 0-9 and '-'")]
    InvalidOrgId,
    /// A subject must be `<kind>/<id>` with a known kind.
    #[error("subject must be '<kind>/<id>' with kind one of cases, referrals, activities, signals, clients")]
    InvalidSubjectKind,
    /// The id part of a subject must be 1 to 64 characters of `A-Z`, `a-z`, `0-9`, `-` and `_`.
    #[error("the id in a subject must be 1 to 64 characters of A-Z, a-z, 0-9, '-' and '_'")]
    InvalidSubjectId,
}

/// The id of an organisation of the registry (`apo`, `caw-brussel`, ...). Valid as one token of
/// a NATS subject, which is why the alphabet is narrow.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct OrgId(String);

impl OrgId {
    /// Checks and wraps an organisation id.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let ok = !s.is_empty()
            && s.len() <= 32
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if ok { Ok(Self(s.to_owned())) } else { Err(IdError::InvalidOrgId) }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for OrgId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        Self::parse(&s)
    }
}

impl From<OrgId> for String {
    fn from(o: OrgId) -> String {
        o.0
    }
}

impl fmt::Display for OrgId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl schemars::JsonSchema for OrgId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "OrgId".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[a-z0-9-]{1,32}$",
            "description": "The id of an organisation of the registry"
        })
    }
}

/// The kind of aggregate an event belongs to; the first half of a CloudEvents `subject`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateKind {
    /// A client's case at one organisation (guidance, situation, network, consent).
    Cases,
    /// A referral between two organisations or to an outside service.
    Referrals,
    /// A group activity organised with the community coordinators.
    Activities,
    /// A structural signal (bottleneck).
    Signals,
    /// A client of one organisation, by the opaque id of the client's data key; only privacy
    /// events (erasure) live here, so that they name no case and hold no personal data.
    Clients,
}

impl AggregateKind {
    /// Every kind, in a stable order.
    pub const ALL: [AggregateKind; 5] = [Self::Cases, Self::Referrals, Self::Activities, Self::Signals, Self::Clients];

    /// The kind as it appears in subjects (`cases`, `referrals`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Cases => "cases",
            Self::Referrals => "referrals",
            Self::Activities => "activities",
            Self::Signals => "signals",
            Self::Clients => "clients",
        }
    }

    /// Parses the kind of a subject.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or(IdError::InvalidSubjectKind)
    }
}

/// The aggregate an event belongs to: CloudEvents `subject` `<kind>/<id>`. The id is chosen by
/// the organisation; it is opaque and must not be personal data (it travels in NATS subjects).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AggregateRef {
    kind: AggregateKind,
    id: String,
}

impl AggregateRef {
    /// Parses `<kind>/<id>`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let (kind, id) = s.split_once('/').ok_or(IdError::InvalidSubjectKind)?;
        let kind = AggregateKind::parse(kind)?;
        Ok(Self { kind, id: Self::check_id(id)?.to_owned() })
    }

    /// Builds a reference from a kind and an id.
    pub fn new(kind: AggregateKind, id: &str) -> Result<Self, IdError> {
        Ok(Self { kind, id: Self::check_id(id)?.to_owned() })
    }

    fn check_id(id: &str) -> Result<&str, IdError> {
        let ok =
            !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok { Ok(id) } else { Err(IdError::InvalidSubjectId) }
    }

    /// The kind of aggregate.
    pub fn kind(&self) -> AggregateKind {
        self.kind
    }

    /// The id within the kind.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl fmt::Display for AggregateRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind.as_str(), self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn org_ids_are_narrow_subject_tokens() {
        assert!(OrgId::parse("caw-brussel").is_ok());
        assert_eq!(OrgId::parse("a.b"), Err(IdError::InvalidOrgId));
        assert_eq!(OrgId::parse(""), Err(IdError::InvalidOrgId));
        assert_eq!(OrgId::parse("APO"), Err(IdError::InvalidOrgId));
    }

    #[test]
    fn subjects_parse_kind_and_id() {
        let s = AggregateRef::parse("cases/3f2a-b_1").expect("valid");
        assert_eq!(s.kind(), AggregateKind::Cases);
        assert_eq!(s.to_string(), "cases/3f2a-b_1");
        assert_eq!(AggregateRef::parse("cases/a.b"), Err(IdError::InvalidSubjectId));
        assert_eq!(AggregateRef::parse("people/x"), Err(IdError::InvalidSubjectKind));
        assert_eq!(AggregateRef::parse("cases"), Err(IdError::InvalidSubjectKind));
    }
}
