//! Guidance of one client: request, acceptance, intake, plan, interventions, urgent help,
//! closure and after-care. Subject `cases/<case id>`.

use super::{DataError, EventPayload, check_client_ref, check_date, check_distinct, check_free_text};
use crate::reference::{InterventionMode, Language, LegalStatus, LifeDomain, code_list};
use chrono::NaiveDate;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

code_list! {
    /// How a request for guidance reached the service: guidance is voluntary and demand-driven.
    RequestChannel {
        /// The person asked.
        ByPerson = "by_person": ("Door de persoon zelf", "Par la personne elle-même", "By the person"),
        /// A relative asked on the person's behalf.
        ByRelative = "by_relative": ("Door een naaste", "Par un proche", "By a relative"),
        /// The service offered guidance and the person accepted.
        OfferedAndAccepted = "offered_and_accepted": ("Aangeboden en aanvaard", "Proposé et accepté", "Offered and accepted"),
        /// Another service referred the person.
        ByReferral = "by_referral": ("Via doorverwijzing", "Par orientation", "By referral"),
    }
}

code_list! {
    /// How an interpreter took part in an intervention.
    Interpreter {
        /// No interpreter.
        None = "none": ("Geen tolk", "Pas d'interprète", "No interpreter"),
        /// A telephone interpreter.
        Telephone = "telephone": ("Telefoontolk", "Interprète par téléphone", "Telephone interpreter"),
        /// An interpreter present in person.
        InPerson = "in_person": ("Tolk ter plaatse", "Interprète sur place", "Interpreter in person"),
        /// An interpreter took part, how is not known (upcast from version 1).
        Unspecified = "unspecified": ("Tolk, wijze onbekend", "Interprète, mode inconnu", "Interpreter, how unknown"),
    }
}

code_list! {
    /// Where guidance takes place.
    GuidanceSetting {
        /// In prison, during detention or internment.
        InDetention = "in_detention": ("In de gevangenis", "En prison", "In prison"),
        /// At liberty, at the office.
        AtLiberty = "at_liberty": ("In vrijheid", "En liberté", "At liberty"),
    }
}

code_list! {
    /// Why a request for guidance was not taken up.
    GuidanceDeclineReason {
        /// The request is outside the service's mission.
        OutsideMission = "outside_mission": ("Buiten de opdracht van de dienst", "Hors de la mission du service", "Outside the service's mission"),
        /// The service has no capacity.
        NoCapacity = "no_capacity": ("Geen capaciteit", "Pas de capacité", "No capacity"),
        /// Another service is better placed.
        BetterServedElsewhere = "better_served_elsewhere": ("Andere dienst beter geplaatst", "Un autre service est mieux placé", "Another service is better placed"),
        /// The person withdrew the request.
        ClientWithdrew = "client_withdrew": ("Cliënt zag af van de vraag", "La personne a renoncé à sa demande", "The person withdrew the request"),
        /// Another reason.
        Other = "other": ("Andere reden", "Autre raison", "Other reason"),
    }
}

code_list! {
    /// How an urgent help request ended.
    UrgentOutcome {
        /// Resolved by the service.
        Resolved = "resolved": ("Opgelost", "Résolu", "Resolved"),
        /// Referred to another service.
        Referred = "referred": ("Doorverwezen", "Orienté", "Referred"),
        /// Could not be resolved.
        NotResolvable = "not_resolvable": ("Niet op te lossen", "Impossible à résoudre", "Could not be resolved"),
    }
}

code_list! {
    /// Why guidance ended.
    ClosureReason {
        /// The goals of the plan were reached.
        GoalsReached = "goals_reached": ("Doelen bereikt", "Objectifs atteints", "Goals reached"),
        /// The client ended the guidance.
        ClientEnded = "client_ended": ("Beëindigd door de cliënt", "Arrêté par le client", "Ended by the client"),
        /// Released, and handed over to a service at liberty.
        ReleasedAndHandedOver = "released_and_handed_over": ("Vrijgelaten en overgedragen", "Libéré et relais passé", "Released and handed over"),
        /// Transferred to a prison outside Brussels.
        TransferredOutOfBrussels = "transferred_out_of_brussels": ("Overgeplaatst buiten Brussel", "Transféré hors de Bruxelles", "Transferred out of Brussels"),
        /// The client died.
        Deceased = "deceased": ("Overleden", "Décédé", "Deceased"),
        /// No contact any more.
        NoContact = "no_contact": ("Geen contact meer", "Plus de contact", "No contact any more"),
        /// Another reason.
        Other = "other": ("Andere reden", "Autre raison", "Other reason"),
    }
}

/// Guidance was requested for a client: the start of a case (or of a new guidance period of a
/// closed case).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuidanceRequested {
    /// The organisation's pseudonymous reference of the client (never a name or number).
    pub client_ref: String,
    /// How the request came in.
    pub channel: RequestChannel,
    /// The language the client prefers.
    pub language: Language,
    /// A short note.
    #[serde(default)]
    pub note: Option<String>,
}

impl EventPayload for GuidanceRequested {
    fn example() -> Self {
        Self {
            client_ref: "cl-2025-0142".into(),
            channel: RequestChannel::ByPerson,
            language: Language::parse("fr").unwrap_or_else(|_| unreachable!()),
            note: Some("Vraagt hulp bij voorbereiding uitgangsvergunning".into()),
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)?;
        check_free_text("note", self.note.as_deref())
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// The service took up the request: guidance starts. Guidance is voluntary, so this records
/// that the client asked for or accepted it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuidanceAccepted {
    /// The organisation's pseudonymous reference of the client.
    pub client_ref: String,
    /// In prison or at liberty.
    pub setting: GuidanceSetting,
    /// The client's legal status; `None` when not known or for a relative served in their own
    /// right.
    #[serde(default)]
    pub legal_status: Option<LegalStatus>,
    /// A short note.
    #[serde(default)]
    pub note: Option<String>,
}

impl EventPayload for GuidanceAccepted {
    fn example() -> Self {
        Self {
            client_ref: "cl-2025-0142".into(),
            setting: GuidanceSetting::InDetention,
            legal_status: Some(LegalStatus::Convict),
            note: None,
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)?;
        check_free_text("note", self.note.as_deref())
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// The service did not take up the request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuidanceDeclined {
    /// The organisation's pseudonymous reference of the client.
    pub client_ref: String,
    /// Why.
    pub reason: GuidanceDeclineReason,
    /// A short note.
    #[serde(default)]
    pub note: Option<String>,
}

impl EventPayload for GuidanceDeclined {
    fn example() -> Self {
        Self {
            client_ref: "cl-2025-0142".into(),
            reason: GuidanceDeclineReason::BetterServedElsewhere,
            note: Some("Vraag gaat over slachtofferhulp".into()),
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)?;
        check_free_text("note", self.note.as_deref())
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// The intake conversation was held: the needs per life domain are known.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IntakeHeld {
    /// The organisation's pseudonymous reference of the client.
    pub client_ref: String,
    /// The life domains the client needs help in (at least one, no repeats).
    pub life_domains: Vec<LifeDomain>,
    /// The language the intake was held in.
    pub language: Language,
    /// How an interpreter took part, if one did.
    pub interpreter: Interpreter,
    /// A short note.
    #[serde(default)]
    pub note: Option<String>,
}

impl EventPayload for IntakeHeld {
    fn example() -> Self {
        Self {
            client_ref: "cl-2025-0142".into(),
            life_domains: vec![LifeDomain::JusticeProcedure, LifeDomain::Housing, LifeDomain::FamilyRelations],
            language: Language::parse("fr").unwrap_or_else(|_| unreachable!()),
            interpreter: Interpreter::None,
            note: None,
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)?;
        check_distinct("life_domains", &self.life_domains, 1)?;
        check_free_text("note", self.note.as_deref())
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// A guidance plan was set with the client: the life domains it works on and, in the client's
/// words, the goals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanSet {
    /// The organisation's pseudonymous reference of the client.
    pub client_ref: String,
    /// The life domains the plan works on (at least one, no repeats).
    pub life_domains: Vec<LifeDomain>,
    /// The goals per life domain, short.
    #[serde(default)]
    pub goals: Option<String>,
    /// When the plan is to be evaluated with the client.
    #[serde(default)]
    pub review_on: Option<NaiveDate>,
}

impl EventPayload for PlanSet {
    fn example() -> Self {
        Self {
            client_ref: "cl-2025-0142".into(),
            life_domains: vec![LifeDomain::Housing, LifeDomain::WorkTraining],
            goals: Some("Huisvesting: woning zoeken voor vrijlating. Werk: inschrijving opleiding.".into()),
            review_on: NaiveDate::from_ymd_opt(2025, 6, 30),
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_date("review_on", self.review_on.as_ref())?;
        check_client_ref("client_ref", &self.client_ref)?;
        check_distinct("life_domains", &self.life_domains, 1)?;
        check_free_text("goals", self.goals.as_deref())
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// The plan was evaluated and adjusted: the life domains it now works on and the new goals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlanAdjusted {
    /// The organisation's pseudonymous reference of the client.
    pub client_ref: String,
    /// The life domains the plan now works on (at least one, no repeats).
    pub life_domains: Vec<LifeDomain>,
    /// The goals per life domain, short.
    #[serde(default)]
    pub goals: Option<String>,
    /// When the plan is next to be evaluated.
    #[serde(default)]
    pub review_on: Option<NaiveDate>,
}

impl EventPayload for PlanAdjusted {
    fn example() -> Self {
        Self {
            client_ref: "cl-2025-0142".into(),
            life_domains: vec![LifeDomain::Housing, LifeDomain::FinancesDebts],
            goals: Some("Schulden: afspraak schuldbemiddeling.".into()),
            review_on: NaiveDate::from_ymd_opt(2025, 9, 30),
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_date("review_on", self.review_on.as_ref())?;
        check_client_ref("client_ref", &self.client_ref)?;
        check_distinct("life_domains", &self.life_domains, 1)?;
        check_free_text("goals", self.goals.as_deref())
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// An intervention with a client, version 2: adds whether an interpreter was used by
/// telephone or in person (v1 had only a yes/no).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InterventionRecorded {
    /// The organisation's pseudonymous reference of the client.
    pub client_ref: String,
    /// One of the eight intervention modes.
    pub mode: InterventionMode,
    /// The life domains worked on (at least one).
    pub life_domains: Vec<LifeDomain>,
    /// Duration in minutes.
    pub duration_minutes: u16,
    /// The language the intervention was held in.
    pub language: Language,
    /// How an interpreter took part, if one did.
    pub interpreter: Interpreter,
    /// A short note.
    #[serde(default)]
    pub note: Option<String>,
}

impl EventPayload for InterventionRecorded {
    fn example() -> Self {
        Self {
            client_ref: "cl-2025-0142".into(),
            mode: InterventionMode::ContactAssistance,
            life_domains: vec![LifeDomain::Housing, LifeDomain::Administration],
            duration_minutes: 45,
            language: Language::parse("ar").unwrap_or_else(|_| unreachable!()),
            interpreter: Interpreter::Telephone,
            note: None,
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)?;
        // Each life domain once: statistics count the intervention once per domain listed.
        check_distinct("life_domains", &self.life_domains, 1)?;
        if self.duration_minutes == 0 || self.duration_minutes > 24 * 60 {
            return Err(DataError::at("duration_minutes", "between 1 and 1440 minutes"));
        }
        check_free_text("note", self.note.as_deref())
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// An intervention, version 1 (still read: stored events are never rewritten).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InterventionRecordedV1 {
    /// The organisation's pseudonymous reference of the client.
    pub client_ref: String,
    /// One of the eight intervention modes.
    pub mode: InterventionMode,
    /// The life domains worked on.
    pub life_domains: Vec<LifeDomain>,
    /// Duration in minutes.
    pub duration_minutes: u16,
    /// The language the intervention was held in.
    pub language: Language,
    /// Whether an interpreter was used.
    pub interpreter_used: bool,
    /// A short note.
    #[serde(default)]
    pub note: Option<String>,
}

impl From<InterventionRecordedV1> for InterventionRecorded {
    fn from(v1: InterventionRecordedV1) -> Self {
        Self {
            client_ref: v1.client_ref,
            mode: v1.mode,
            life_domains: v1.life_domains,
            duration_minutes: v1.duration_minutes,
            language: v1.language,
            interpreter: if v1.interpreter_used { Interpreter::Unspecified } else { Interpreter::None },
            note: v1.note,
        }
    }
}

/// An urgent help request was handled (practical services and urgent help, intervention
/// mode 7). May happen before guidance is accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UrgentRequestHandled {
    /// The organisation's pseudonymous reference of the client.
    pub client_ref: String,
    /// The life domain the request was about.
    pub life_domain: LifeDomain,
    /// How it ended.
    pub outcome: UrgentOutcome,
    /// A short note.
    #[serde(default)]
    pub note: Option<String>,
}

impl EventPayload for UrgentRequestHandled {
    fn example() -> Self {
        Self {
            client_ref: "cl-2025-0142".into(),
            life_domain: LifeDomain::ResidenceStatus,
            outcome: UrgentOutcome::Resolved,
            note: Some("Verblijfsdocument verloopt morgen; afspraak gemeente geregeld".into()),
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)?;
        check_free_text("note", self.note.as_deref())
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// Guidance ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GuidanceClosed {
    /// The organisation's pseudonymous reference of the client.
    pub client_ref: String,
    /// Why.
    pub reason: ClosureReason,
    /// A short note.
    #[serde(default)]
    pub note: Option<String>,
}

impl EventPayload for GuidanceClosed {
    fn example() -> Self {
        Self { client_ref: "cl-2025-0142".into(), reason: ClosureReason::ReleasedAndHandedOver, note: None }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)?;
        check_free_text("note", self.note.as_deref())
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}

/// After-care started: guidance continues after release, at the office (post-penitentiary).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AftercareStarted {
    /// The organisation's pseudonymous reference of the client.
    pub client_ref: String,
    /// The life domains after-care works on (at least one, no repeats).
    pub life_domains: Vec<LifeDomain>,
    /// A short note.
    #[serde(default)]
    pub note: Option<String>,
}

impl EventPayload for AftercareStarted {
    fn example() -> Self {
        Self {
            client_ref: "cl-2025-0142".into(),
            life_domains: vec![LifeDomain::Housing, LifeDomain::SocialSecurity],
            note: None,
        }
    }
    fn validate(&self) -> Result<(), DataError> {
        check_client_ref("client_ref", &self.client_ref)?;
        check_distinct("life_domains", &self.life_domains, 1)?;
        check_free_text("note", self.note.as_deref())
    }
    fn client_ref(&self) -> Option<&str> {
        Some(&self.client_ref)
    }
}
