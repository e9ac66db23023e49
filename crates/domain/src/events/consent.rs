//! Consent given or withdrawn, per scope. Subject `cases/<case id>`: consent belongs to the
//! client's case at one organisation.
//!
//! Guidance is voluntary, and passing anything about a client to another organisation needs the
//! client's recorded, revocable consent: a referral to another service is refused without an
//! active consent to share with that service.

use super::{DataError, EventPayload, check_client_ref, check_date};
use crate::ids::OrgId;
use crate::reference::code_list;
use chrono::NaiveDate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a consent covers. JSON: `"guidance"`, `{"share_with_organisation": "apo"}` or
/// `"continuity_monitor"`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentScope {
    /// The guidance itself (guidance is voluntary; the client can end it).
    Guidance,
    /// Sharing what is needed for a referral with this organisation.
    ShareWithOrganisation(OrgId),
    /// Taking part in the continuity monitor, which follows the help around one person across
    /// the services through a [`LinkageKey`].
    ContinuityMonitor,
}

impl ConsentScope {
    /// The organisation a sharing consent names.
    pub fn organisation(&self) -> Option<&OrgId> {
        match self {
            Self::ShareWithOrganisation(org) => Some(org),
            Self::Guidance | Self::ContinuityMonitor => None,
        }
    }

    /// The kind of scope, without its organisation.
    pub fn kind(&self) -> ConsentScopeKind {
        match self {
            Self::Guidance => ConsentScopeKind::Guidance,
            Self::ShareWithOrganisation(_) => ConsentScopeKind::ShareWithOrganisation,
            Self::ContinuityMonitor => ConsentScopeKind::ContinuityMonitor,
        }
    }
}

impl fmt::Display for ConsentScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Guidance => f.write_str("guidance"),
            Self::ShareWithOrganisation(org) => write!(f, "share_with_organisation {org}"),
            Self::ContinuityMonitor => f.write_str("continuity_monitor"),
        }
    }
}

code_list! {
    /// The kinds of consent scope, with labels (see [`ConsentScope`]).
    ConsentScopeKind {
        /// The guidance itself.
        Guidance = "guidance": ("Begeleiding", "Accompagnement", "Guidance"),
        /// Sharing with one organisation.
        ShareWithOrganisation = "share_with_organisation": ("Delen met een organisatie", "Partage avec une organisation", "Sharing with an organisation"),
        /// The continuity monitor.
        ContinuityMonitor = "continuity_monitor": ("Continuïteitsmonitor", "Moniteur de continuité", "Continuity monitor"),
    }
}

/// A key that links one person's cases across the services for the continuity monitor,
/// without telling Relais who the person is: 64 lower-case hexadecimal characters, the
/// hex-encoded HMAC-SHA256
///
/// `HMAC-SHA256(key = shared secret, message = normalised identity string)`
///
/// where
/// - the **shared secret** is agreed on by the services among themselves and never given to
///   the platform (so Relais can neither compute nor reverse a key);
/// - the **normalised identity string** is the person's national register number, digits only
///   (`"85073100190"`), or when there is none `"<FAMILY NAME>|<GIVEN NAME>|<YYYY-MM-DD>"`,
///   upper-cased, Unicode NFC, surrounding spaces removed.
///
/// The derivation happens at the service, never in Relais. The key is personal data (it links
/// across organisations): it is sealed with the client's data key, only sent with a consent to
/// the continuity monitor, and gone when the client is erased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LinkageKey(String);

impl LinkageKey {
    /// Checks and wraps a linkage key.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            Ok(Self(s.to_owned()))
        } else {
            Err("a linkage key is 64 lower-case hexadecimal characters (HMAC-SHA256)".to_owned())
        }
    }

    /// The key as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LinkageKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<LinkageKey> for String {
    fn from(k: LinkageKey) -> String {
        k.0
    }
}

impl JsonSchema for LinkageKey {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "LinkageKey".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9a-f]{64}$",
            "description": "HMAC-SHA256 (hex) of the normalised identity, keyed with the services' shared secret"
        })
    }
}

/// The client gave consent for a scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentGiven {
    /// The organisation's pseudonymous reference of the client.
    pub client_ref: String,
    /// What the consent covers.
    pub scope: ConsentScope,
    /// The last day the consent holds; absent, it holds until withdrawn.
    #[serde(default)]
    pub expires_on: Option<NaiveDate>,
    /// The linkage key; required for the continuity monitor and refused for other scopes.
    #[serde(default)]
    pub linkage_key: Option<LinkageKey>,
}

impl EventPayload for ConsentGiven {
    fn example() -> Self {
        Self {
            client_ref: "cl-2025-0142".into(),
            scope: ConsentScope::ShareWithOrganisation(OrgId::parse("caw-brussel").unwrap_or_else(|_| unreachable!())),
            expires_on: NaiveDate::from_ymd_opt(2026, 3, 31),
            linkage_key: None,
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_date("expires_on", self.expires_on.as_ref())?;
        check_client_ref("client_ref", &self.client_ref)?;
        match (&self.scope, &self.linkage_key) {
            (ConsentScope::ContinuityMonitor, None) => {
                Err(DataError::at("linkage_key", "a consent to the continuity monitor carries the linkage key"))
            }
            (ConsentScope::Guidance | ConsentScope::ShareWithOrganisation(_), Some(_)) => {
                Err(DataError::at("linkage_key", "a linkage key is only sent with a consent to the continuity monitor"))
            }
            _ => Ok(()),
        }
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
    fn organisations(&self) -> Vec<(String, &OrgId)> {
        self.scope.organisation().map(|o| ("/scope/share_with_organisation".to_owned(), o)).into_iter().collect()
    }
}

/// The client withdrew consent for a scope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentWithdrawn {
    /// The organisation's pseudonymous reference of the client.
    pub client_ref: String,
    /// What the withdrawn consent covered.
    pub scope: ConsentScope,
}

impl EventPayload for ConsentWithdrawn {
    fn example() -> Self {
        Self {
            client_ref: "cl-2025-0142".into(),
            scope: ConsentScope::ShareWithOrganisation(OrgId::parse("caw-brussel").unwrap_or_else(|_| unreachable!())),
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
    fn organisations(&self) -> Vec<(String, &OrgId)> {
        self.scope.organisation().map(|o| ("/scope/share_with_organisation".to_owned(), o)).into_iter().collect()
    }
}
