//! Group activities in prison, organised with the community coordinators: needs survey, plan,
//! registration, screening, enrolment, sessions, dropouts and their feedback conversation,
//! evaluation. Subject `activities/<activity id>`; recorded by `coordination` or a service.
//!
//! A participant is known by the client reference *of the organisation that registered them*;
//! the later events about that participant (screening, enrolment, dropout, feedback) come from
//! the same organisation with the same reference. Sessions record counts, never names or
//! references in a list.

use super::{DataError, EventPayload, check_client_ref, check_date, check_distinct, check_free_text};
use crate::ids::OrgId;
use crate::reference::{ActivityKind, Language, Prison, TargetGroup, code_list};
use chrono::NaiveDate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest activity title, in characters.
pub const MAX_TITLE_CHARS: usize = 80;

code_list! {
    /// Why a candidate was not admitted at screening.
    ScreeningRefusalReason {
        /// Not in the activity's target group.
        NotInTargetGroup = "not_in_target_group": ("Niet in de doelgroep", "Hors du groupe cible", "Not in the target group"),
        /// The language level does not fit.
        LanguageLevel = "language_level": ("Taalniveau past niet", "Niveau de langue inadapté", "Language level does not fit"),
        /// Advice of the prison's services (regime, security).
        PrisonServicesAdvice = "prison_services_advice": ("Advies van de gevangenisdiensten", "Avis des services de la prison", "Advice of the prison services"),
        /// The schedule conflicts with work, training or visits.
        ScheduleConflict = "schedule_conflict": ("Overlapt met ander programma", "Conflit d'horaire", "Schedule conflict"),
        /// Another reason.
        Other = "other": ("Andere reden", "Autre raison", "Other reason"),
    }
}

code_list! {
    /// Why a participant dropped out.
    DropoutReason {
        /// Released.
        Released = "released": ("Vrijgelaten", "Libéré", "Released"),
        /// Transferred to another prison.
        Transferred = "transferred": ("Overgeplaatst", "Transféré", "Transferred"),
        /// Lost interest.
        LostInterest = "lost_interest": ("Interesse verloren", "Perte d'intérêt", "Lost interest"),
        /// The schedule conflicts with work, training or visits.
        ScheduleConflict = "schedule_conflict": ("Overlapt met ander programma", "Conflit d'horaire", "Schedule conflict"),
        /// Health.
        Health = "health": ("Gezondheid", "Santé", "Health"),
        /// Excluded from the group.
        Excluded = "excluded": ("Uitgesloten", "Exclu", "Excluded"),
        /// Another reason.
        Other = "other": ("Andere reden", "Autre raison", "Other reason"),
    }
}

code_list! {
    /// What an evaluation decided for the activity.
    EvaluationOutcome {
        /// Continue as it is.
        ContinueUnchanged = "continue_unchanged": ("Ongewijzigd voortzetten", "Poursuivre tel quel", "Continue unchanged"),
        /// Continue with adjustments.
        ContinueAdjusted = "continue_adjusted": ("Bijgestuurd voortzetten", "Poursuivre avec ajustements", "Continue with adjustments"),
        /// Stop the activity: it takes no new registrations or sessions afterwards.
        Stop = "stop": ("Stopzetten", "Arrêter", "Stop"),
    }
}

/// A needs survey among a target group was recorded (the start of the coordinators' cycle).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NeedsSurveyRecorded {
    /// The target group surveyed.
    pub target_group: TargetGroup,
    /// The prison.
    pub prison: Prison,
    /// How many people answered (at least 1).
    pub respondents: u16,
    /// The kinds of activity asked for (no repeats).
    #[serde(default)]
    pub wanted: Vec<ActivityKind>,
    /// The languages respondents asked for (no repeats).
    #[serde(default)]
    pub languages: Vec<Language>,
}

impl EventPayload for NeedsSurveyRecorded {
    fn example() -> Self {
        Self {
            target_group: TargetGroup::Women,
            prison: Prison::Haren,
            respondents: 23,
            wanted: vec![ActivityKind::Formative, ActivityKind::Sociocultural],
            languages: vec![
                Language::parse("fr").unwrap_or_else(|_| unreachable!()),
                Language::parse("ro").unwrap_or_else(|_| unreachable!()),
            ],
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        if self.respondents == 0 {
            return Err(DataError::at("respondents", "at least 1 respondent"));
        }
        check_distinct("wanted", &self.wanted, 0)?;
        check_distinct("languages", &self.languages, 0)
    }
}

/// A group activity was planned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivityPlanned {
    /// Formative, psychosocial or sociocultural.
    pub kind: ActivityKind,
    /// The activity's title, at most 80 characters. Not personal: it names the activity and
    /// must never name a person.
    pub title: String,
    /// The target groups (at least one, no repeats).
    pub target_groups: Vec<TargetGroup>,
    /// The prison.
    pub prison: Prison,
    /// Partner organisations of the registry (no repeats).
    #[serde(default)]
    pub partners: Vec<OrgId>,
    /// The languages the activity is held in (at least one, no repeats).
    pub languages: Vec<Language>,
    /// How many participants can be enrolled at once (at least 1).
    pub capacity: u16,
    /// The first day.
    pub starts_on: NaiveDate,
}

impl EventPayload for ActivityPlanned {
    fn example() -> Self {
        Self {
            kind: ActivityKind::Formative,
            title: "Onthaalklas Nederlands / classe d'accueil".into(),
            target_groups: vec![TargetGroup::Men, TargetGroup::Suspects],
            prison: Prison::Haren,
            partners: vec![OrgId::parse("caw-brussel").unwrap_or_else(|_| unreachable!())],
            languages: vec![
                Language::parse("nl").unwrap_or_else(|_| unreachable!()),
                Language::parse("fr").unwrap_or_else(|_| unreachable!()),
            ],
            capacity: 12,
            starts_on: NaiveDate::from_ymd_opt(2025, 9, 15).unwrap_or_default(),
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_date("starts_on", Some(&self.starts_on))?;
        let title = self.title.trim();
        if title.is_empty() || self.title.chars().count() > MAX_TITLE_CHARS {
            return Err(DataError::at("title", format!("1 to {MAX_TITLE_CHARS} characters")));
        }
        if self.title.chars().any(char::is_control) {
            return Err(DataError::at("title", "control characters are not allowed"));
        }
        check_distinct("target_groups", &self.target_groups, 1)?;
        check_distinct("partners", &self.partners, 0)?;
        check_distinct("languages", &self.languages, 1)?;
        if self.capacity == 0 {
            return Err(DataError::at("capacity", "at least 1 participant"));
        }
        Ok(())
    }
    fn organisations(&self) -> Vec<(String, &OrgId)> {
        self.partners.iter().enumerate().map(|(i, o)| (format!("/partners/{i}"), o)).collect()
    }
}

/// A candidate registered for the activity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationReceived {
    /// The recording organisation's pseudonymous reference of the participant.
    pub client_ref: String,
}

impl EventPayload for RegistrationReceived {
    fn example() -> Self {
        Self { client_ref: "cl-2025-0142".into() }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// A registered candidate was screened: admitted or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParticipantScreened {
    /// The recording organisation's pseudonymous reference of the participant.
    pub client_ref: String,
    /// Whether the candidate was admitted.
    pub admitted: bool,
    /// Why not, when not admitted (required then, refused otherwise).
    #[serde(default)]
    pub refusal_reason: Option<ScreeningRefusalReason>,
}

impl EventPayload for ParticipantScreened {
    fn example() -> Self {
        Self { client_ref: "cl-2025-0142".into(), admitted: true, refusal_reason: None }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)?;
        match (self.admitted, self.refusal_reason) {
            (false, None) => Err(DataError::at("refusal_reason", "required when the candidate is not admitted")),
            (true, Some(_)) => Err(DataError::at("refusal_reason", "only given when the candidate is not admitted")),
            _ => Ok(()),
        }
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// An admitted candidate was enrolled: a place of the capacity is taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParticipantEnrolled {
    /// The recording organisation's pseudonymous reference of the participant.
    pub client_ref: String,
}

impl EventPayload for ParticipantEnrolled {
    fn example() -> Self {
        Self { client_ref: "cl-2025-0142".into() }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// A session of the activity was held. Attendance is counted, not listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionHeld {
    /// The session's number (1 for the first).
    pub session_number: u16,
    /// The day it was held.
    pub held_on: NaiveDate,
    /// How many enrolled participants attended.
    pub attended_count: u16,
    /// How many enrolled participants were absent.
    pub absent_count: u16,
}

impl EventPayload for SessionHeld {
    fn example() -> Self {
        Self {
            session_number: 1,
            held_on: NaiveDate::from_ymd_opt(2025, 9, 15).unwrap_or_default(),
            attended_count: 9,
            absent_count: 1,
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_date("held_on", Some(&self.held_on))?;
        if self.session_number == 0 {
            return Err(DataError::at("session_number", "sessions are numbered from 1"));
        }
        Ok(())
    }
}

/// An enrolled participant dropped out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ParticipantDroppedOut {
    /// The recording organisation's pseudonymous reference of the participant.
    pub client_ref: String,
    /// Why.
    pub reason: DropoutReason,
}

impl EventPayload for ParticipantDroppedOut {
    fn example() -> Self {
        Self { client_ref: "cl-2025-0142".into(), reason: DropoutReason::ScheduleConflict }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// The feedback conversation with a participant who dropped out was held (one with every
/// dropout).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DropoutFeedbackHeld {
    /// The recording organisation's pseudonymous reference of the participant.
    pub client_ref: String,
    /// A short note of what the participant said.
    #[serde(default)]
    pub note: Option<String>,
}

impl EventPayload for DropoutFeedbackHeld {
    fn example() -> Self {
        Self { client_ref: "cl-2025-0142".into(), note: Some("Werk in de keuken valt samen met de sessies".into()) }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)?;
        check_free_text("note", self.note.as_deref())
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// The activity was evaluated (and adjusted or stopped).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActivityEvaluated {
    /// The overall rating, 1 (poor) to 5 (very good).
    pub rating: u8,
    /// What was decided.
    pub outcome: EvaluationOutcome,
    /// A short organisational note on the activity. Not personal: it is about the activity
    /// and must never name or describe a participant.
    #[serde(default)]
    pub evaluation_note: Option<String>,
}

impl EventPayload for ActivityEvaluated {
    fn example() -> Self {
        Self {
            rating: 4,
            outcome: EvaluationOutcome::ContinueAdjusted,
            evaluation_note: Some("Sessies verplaatsen naar de namiddag wegens werkrooster".into()),
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        if !(1..=5).contains(&self.rating) {
            return Err(DataError::at("rating", "from 1 to 5"));
        }
        check_free_text("evaluation_note", self.evaluation_note.as_deref())
    }
}
