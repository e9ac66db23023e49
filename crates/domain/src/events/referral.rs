//! Closed-loop referrals between the services, or to an outside service, so that nobody falls
//! between two services. Subject `referrals/<referral id>`, chosen by the sender.
//!
//! Which organisation records what:
//! - the **sender** records `made`, `cancelled`, `expired`, and, for a referral to an outside
//!   service (which does not publish to Relais), also `first_contact_made` and `completed`;
//! - the **receiver** (a referral to one of the services) records `received`, `accepted`,
//!   `declined`, `first_contact_made` and `completed`.
//!
//! Client references are per organisation: `client_ref` is always the reference *of the
//! organisation that records the event*. In `made` it is the sender's; in the receiver's events
//! it is the receiver's own reference of the client. The receiver may have none yet when it
//! records `received` or `declined` (it never opened a case), so it is optional there; from
//! `accepted` on the receiver has a case and its reference is required. The two references are
//! never linked in an event: each stays sealed with its own organisation's client key.

use super::{DataError, EventPayload, check_client_ref, check_distinct, check_free_text};
use crate::ids::{AggregateKind, AggregateRef, OrgId};
use crate::reference::{LifeDomain, OutsideService, code_list};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Where a referral goes: one of the organisations of the registry, or a kind of outside
/// service. JSON: `{"organisation": "caw-brussel"}` or `{"outside_service": "debt_mediation"}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReferralDestination {
    /// Another organisation of the registry, which records its side of the loop itself.
    Organisation(OrgId),
    /// An outside service; the sender closes the loop.
    OutsideService(OutsideService),
}

impl ReferralDestination {
    /// The receiving organisation, if the referral goes to one of the services.
    pub fn organisation(&self) -> Option<&OrgId> {
        match self {
            Self::Organisation(org) => Some(org),
            Self::OutsideService(_) => None,
        }
    }
}

code_list! {
    /// Why the receiving organisation declined a referral.
    ReferralDeclineReason {
        /// Outside the receiver's mission.
        OutsideMission = "outside_mission": ("Buiten de opdracht van de dienst", "Hors de la mission du service", "Outside the service's mission"),
        /// The receiver has no capacity.
        NoCapacity = "no_capacity": ("Geen capaciteit", "Pas de capacité", "No capacity"),
        /// The client could not be reached.
        ClientNotReachable = "client_not_reachable": ("Cliënt niet bereikbaar", "Client injoignable", "Client could not be reached"),
        /// The client refused the help offered.
        ClientRefused = "client_refused": ("Cliënt weigerde", "Le client a refusé", "Client refused"),
        /// Another reason.
        Other = "other": ("Andere reden", "Autre raison", "Other reason"),
    }
}

code_list! {
    /// How a referral ended, once the loop is closed.
    ReferralOutcome {
        /// The help was provided.
        HelpProvided = "help_provided": ("Hulp verleend", "Aide fournie", "Help provided"),
        /// The client is now in guidance with the receiver.
        InGuidance = "in_guidance": ("In begeleiding genomen", "Pris en accompagnement", "Taken into guidance"),
        /// The client did not come.
        ClientDidNotAttend = "client_did_not_attend": ("Cliënt kwam niet opdagen", "Le client ne s'est pas présenté", "Client did not attend"),
        /// The client refused the help.
        ClientRefused = "client_refused": ("Cliënt weigerde de hulp", "Le client a refusé l'aide", "Client refused the help"),
        /// The client was not eligible.
        NotEligible = "not_eligible": ("Niet in aanmerking", "Non éligible", "Not eligible"),
        /// Another outcome.
        Other = "other": ("Andere afloop", "Autre issue", "Other outcome"),
    }
}

code_list! {
    /// Why the sender cancelled a referral.
    ReferralCancelReason {
        /// The client withdrew (consent or request).
        ClientWithdrew = "client_withdrew": ("Cliënt trok zich terug", "Le client s'est retiré", "Client withdrew"),
        /// The need was met otherwise.
        NeedResolved = "need_resolved": ("Nood elders opgelost", "Besoin résolu autrement", "Need resolved otherwise"),
        /// The client was released or transferred.
        ClientReleasedOrTransferred = "client_released_or_transferred": ("Cliënt vrijgelaten of overgeplaatst", "Client libéré ou transféré", "Client released or transferred"),
        /// Sent in error.
        SentInError = "sent_in_error": ("Verkeerd verstuurd", "Envoyé par erreur", "Sent in error"),
        /// Another reason.
        Other = "other": ("Andere reden", "Autre raison", "Other reason"),
    }
}

/// A referral was made (recorded by the sender).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferralMade {
    /// The sender's pseudonymous reference of the client.
    pub client_ref: String,
    /// Where the client is referred to.
    pub destination: ReferralDestination,
    /// The life domains the referral is about (at least one, no repeats).
    pub life_domains: Vec<LifeDomain>,
    /// The id of the sender's case (`cases/<case_id>`) the referral comes from. It is an opaque
    /// id of the kind that already travels in subjects, so it is classed statistical and kept
    /// in the clear: Relais needs it to check the client's consent on that case. It is the
    /// sender's own: views for the receiving organisation must not show it.
    pub case_id: String,
    /// A short message to the receiver, holding only what the client consented to share.
    #[serde(default)]
    pub message: Option<String>,
}

impl EventPayload for ReferralMade {
    fn example() -> Self {
        Self {
            client_ref: "cl-2025-0142".into(),
            destination: ReferralDestination::Organisation(
                OrgId::parse("caw-brussel").unwrap_or_else(|_| unreachable!()),
            ),
            life_domains: vec![LifeDomain::Housing],
            case_id: "case-2025-0142".into(),
            message: Some("Zoekt woning na vrijlating in oktober; spreekt Frans en Arabisch".into()),
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)?;
        check_distinct("life_domains", &self.life_domains, 1)?;
        AggregateRef::new(AggregateKind::Cases, &self.case_id).map_err(|e| DataError::at("case_id", e.to_string()))?;
        check_free_text("message", self.message.as_deref())
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
    fn organisations(&self) -> Vec<(String, &OrgId)> {
        self.destination.organisation().map(|o| ("/destination/organisation".to_owned(), o)).into_iter().collect()
    }
}

/// The receiving organisation received the referral.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferralReceived {
    /// The receiver's own reference of the client, if it already has one (it may not: the
    /// client may be new to it).
    #[serde(default)]
    pub client_ref: Option<String>,
}

impl EventPayload for ReferralReceived {
    fn example() -> Self {
        Self { client_ref: Some("caw-7731".into()) }
    }
    fn validate(&self) -> Result<(), DataError> {
        match &self.client_ref {
            Some(r) => check_client_ref("client_ref", r),
            None => Ok(()),
        }
    }
    fn client_ref(&self) -> Option<&str> {
        self.client_ref.as_deref()
    }
}

/// The receiving organisation accepted the referral: it takes the client on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferralAccepted {
    /// The receiver's own reference of the client.
    pub client_ref: String,
}

impl EventPayload for ReferralAccepted {
    fn example() -> Self {
        Self { client_ref: "caw-7731".into() }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// The receiving organisation declined the referral.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferralDeclined {
    /// The receiver's own reference of the client, if it has one.
    #[serde(default)]
    pub client_ref: Option<String>,
    /// Why.
    pub reason: ReferralDeclineReason,
    /// A short explanation for the sender. It is personal, sealed with the receiver's key of
    /// the client, so it can only be given with `client_ref`.
    #[serde(default)]
    pub reason_text: Option<String>,
}

impl EventPayload for ReferralDeclined {
    fn example() -> Self {
        Self {
            client_ref: Some("caw-7731".into()),
            reason: ReferralDeclineReason::NoCapacity,
            reason_text: Some("Wachtlijst tot september".into()),
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        match (&self.client_ref, &self.reason_text) {
            (Some(r), _) => check_client_ref("client_ref", r)?,
            (None, Some(_)) => {
                return Err(DataError::at(
                    "client_ref",
                    "required with reason_text: the text is sealed with the client's key",
                ));
            }
            (None, None) => {}
        }
        check_free_text("reason_text", self.reason_text.as_deref())
    }
    fn client_ref(&self) -> Option<&str> {
        self.client_ref.as_deref()
    }
}

/// The first contact between the client and the help referred to took place.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferralFirstContactMade {
    /// The recording organisation's reference of the client (the receiver's, or the sender's
    /// for an outside service).
    pub client_ref: String,
}

impl EventPayload for ReferralFirstContactMade {
    fn example() -> Self {
        Self { client_ref: "caw-7731".into() }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// The loop is closed: the referral ended with an outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferralCompleted {
    /// The recording organisation's reference of the client (the receiver's, or the sender's
    /// for an outside service).
    pub client_ref: String,
    /// How it ended.
    pub outcome: ReferralOutcome,
    /// A short note on the outcome.
    #[serde(default)]
    pub outcome_note: Option<String>,
}

impl EventPayload for ReferralCompleted {
    fn example() -> Self {
        Self { client_ref: "caw-7731".into(), outcome: ReferralOutcome::InGuidance, outcome_note: None }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)?;
        check_free_text("outcome_note", self.outcome_note.as_deref())
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// The sender cancelled the referral.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferralCancelled {
    /// The sender's reference of the client.
    pub client_ref: String,
    /// Why.
    pub reason: ReferralCancelReason,
}

impl EventPayload for ReferralCancelled {
    fn example() -> Self {
        Self { client_ref: "cl-2025-0142".into(), reason: ReferralCancelReason::NeedResolved }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// The referral got no answer (or, for an outside service, no first contact) in time; the
/// sender records that the loop closed without result, so it shows up in follow-up.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReferralExpired {
    /// The sender's reference of the client.
    pub client_ref: String,
    /// How many days the referral stayed open (at least 1).
    pub days_open: u16,
}

impl EventPayload for ReferralExpired {
    fn example() -> Self {
        Self { client_ref: "cl-2025-0142".into(), days_open: 30 }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)?;
        if self.days_open == 0 {
            return Err(DataError::at("days_open", "at least 1 day"));
        }
        Ok(())
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}
