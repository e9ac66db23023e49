//! One client's case at one organisation (`cases/<id>`): guidance, the detention situation,
//! the relational network and, embedded, the client's [`consent`].
//!
//! The rules, in short:
//! - the organisation that opened the case owns it: nobody else records on it;
//! - a case is one client's: an event about another client (`client_ref`) is refused, and so
//!   is a referral of another client made on the case's consent (while the client's fields
//!   are readable: once erased, nothing new is recorded about them anyway);
//! - guidance is voluntary: a case starts with a request, then is accepted or declined;
//!   interventions, plans, family work and escorts need accepted guidance that is not closed,
//!   and stop when the client withdraws consent to the guidance (closing stays possible);
//! - detention facts follow each other: a release (scheduled or done) needs a detention, a
//!   furlough or an escorted outing needs the client in detention, and no date of a detention
//!   event lies before the day the detention started;
//! - after-care follows a release.

use super::{Context, brussels_date, checked, consent};
use crate::envelope::{Envelope, PersonalState};
use crate::events::{
    AftercareStarted, ConsentGiven, ConsentScope, ConsentWithdrawn, DataError, DetaineeReleased, DetaineeTransferred,
    DetentionStarted, EventData, FamilyContactFacilitated, GuidanceAccepted, GuidanceClosed, GuidanceDeclined,
    GuidanceRequested, IntakeHeld, InterventionRecorded, LeavePrepared, LegalStatusChanged, OutingEscorted,
    PlanAdjusted, PlanSet, RelativeSupported, ReleaseScheduled, UrgentRequestHandled,
};
use crate::ids::{AggregateKind, OrgId};
use crate::labels::Labels;
use crate::reference::{LegalStatus, Prison, ReleaseKind};
use chrono::NaiveDate;

/// Where a case's guidance stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CaseStatus {
    /// No event yet.
    #[default]
    NeverSeen,
    /// Guidance was requested; not yet accepted or declined.
    Requested,
    /// Guidance is under way.
    Accepted,
    /// The request was not taken up (a new request may follow).
    Declined,
    /// Guidance ended (a new request may follow).
    Closed,
}

/// The client's detention, as far as the case knows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Detention {
    /// No detention recorded.
    #[default]
    NeverDetained,
    /// In detention.
    InDetention {
        /// The prison.
        prison: Prison,
        /// The day the detention started.
        since: NaiveDate,
    },
    /// Released.
    Released {
        /// The day of release.
        on: NaiveDate,
        /// How.
        kind: ReleaseKind,
    },
}

/// A release date that is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledRelease {
    /// The expected day.
    pub on: NaiveDate,
    /// How.
    pub kind: ReleaseKind,
}

/// The state of one case, folded from its events. `Default`: never seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    owner: Option<OrgId>,
    status: CaseStatus,
    plan_set: bool,
    aftercare_started: bool,
    legal_status: Option<LegalStatus>,
    detention: Detention,
    scheduled_release: Option<ScheduledRelease>,
    consent: consent::State,
}

impl State {
    /// The organisation that opened the case.
    pub fn owner(&self) -> Option<&OrgId> {
        self.owner.as_ref()
    }
    /// Where guidance stands.
    pub fn status(&self) -> CaseStatus {
        self.status
    }
    /// True once a plan was set in the current guidance period.
    pub fn plan_set(&self) -> bool {
        self.plan_set
    }
    /// True once after-care started in the current guidance period.
    pub fn aftercare_started(&self) -> bool {
        self.aftercare_started
    }
    /// The client's last known legal status.
    pub fn legal_status(&self) -> Option<LegalStatus> {
        self.legal_status
    }
    /// The client's detention.
    pub fn detention(&self) -> Detention {
        self.detention
    }
    /// The release that is scheduled, if any (cleared by the release).
    pub fn scheduled_release(&self) -> Option<ScheduledRelease> {
        self.scheduled_release
    }
    /// The client's consent on this case: what [`super::referral::check`] needs.
    pub fn consent(&self) -> &consent::State {
        &self.consent
    }
}

/// What a service does on a case. Each command carries the data of the event it produces.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Record a request for guidance (opens the case, or a new guidance period).
    RequestGuidance(GuidanceRequested),
    /// Take up the request.
    AcceptGuidance(GuidanceAccepted),
    /// Do not take up the request.
    DeclineGuidance(GuidanceDeclined),
    /// Record the intake conversation.
    HoldIntake(IntakeHeld),
    /// Set the guidance plan.
    SetPlan(PlanSet),
    /// Adjust the guidance plan.
    AdjustPlan(PlanAdjusted),
    /// Record an intervention.
    RecordIntervention(InterventionRecorded),
    /// Record an urgent help request handled.
    HandleUrgentRequest(UrgentRequestHandled),
    /// Close the guidance.
    CloseGuidance(GuidanceClosed),
    /// Start after-care after release.
    StartAftercare(AftercareStarted),
    /// Record the start of a detention.
    StartDetention(DetentionStarted),
    /// Record a transfer to another prison.
    RecordTransfer(DetaineeTransferred),
    /// Record a change of legal status.
    ChangeLegalStatus(LegalStatusChanged),
    /// Record a known release date.
    ScheduleRelease(ReleaseScheduled),
    /// Record a release.
    RecordRelease(DetaineeReleased),
    /// Record a furlough or leave prepared.
    PrepareLeave(LeavePrepared),
    /// Record an escorted outing.
    EscortOuting(OutingEscorted),
    /// Record family contact facilitated.
    FacilitateFamilyContact(FamilyContactFacilitated),
    /// Record support to a relative.
    SupportRelative(RelativeSupported),
    /// Record consent given.
    GiveConsent(ConsentGiven),
    /// Record consent withdrawn.
    WithdrawConsent(ConsentWithdrawn),
}

impl Command {
    fn event(&self) -> EventData {
        match self {
            Self::RequestGuidance(d) => d.clone().into(),
            Self::AcceptGuidance(d) => d.clone().into(),
            Self::DeclineGuidance(d) => d.clone().into(),
            Self::HoldIntake(d) => d.clone().into(),
            Self::SetPlan(d) => d.clone().into(),
            Self::AdjustPlan(d) => d.clone().into(),
            Self::RecordIntervention(d) => d.clone().into(),
            Self::HandleUrgentRequest(d) => d.clone().into(),
            Self::CloseGuidance(d) => d.clone().into(),
            Self::StartAftercare(d) => d.clone().into(),
            Self::StartDetention(d) => d.clone().into(),
            Self::RecordTransfer(d) => d.clone().into(),
            Self::ChangeLegalStatus(d) => d.clone().into(),
            Self::ScheduleRelease(d) => d.clone().into(),
            Self::RecordRelease(d) => d.clone().into(),
            Self::PrepareLeave(d) => d.clone().into(),
            Self::EscortOuting(d) => d.clone().into(),
            Self::FacilitateFamilyContact(d) => d.clone().into(),
            Self::SupportRelative(d) => d.clone().into(),
            Self::GiveConsent(d) => d.clone().into(),
            Self::WithdrawConsent(d) => d.clone().into(),
        }
    }
}

/// Why an event on a case was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The data breaks a rule of its own type.
    #[error("invalid data: {0}")]
    InvalidData(DataError),
    /// The event does not belong to a case.
    #[error("{event_type} is not a case event")]
    NotACaseEvent {
        /// The event type.
        event_type: String,
    },
    /// Another organisation owns the case.
    #[error("the case belongs to {owner}")]
    NotCaseOwner {
        /// The owner.
        owner: OrgId,
    },
    /// Nothing was ever requested on this case.
    #[error("no guidance was requested on this case")]
    CaseNotRequested,
    /// A request on a case whose guidance is already requested or under way.
    #[error("guidance is already requested or under way on this case")]
    AlreadyOpen,
    /// Guidance was already accepted.
    #[error("guidance was already accepted")]
    AlreadyAccepted,
    /// The request was declined.
    #[error("the request for guidance was declined")]
    GuidanceDeclined,
    /// The action needs accepted guidance.
    #[error("guidance was not accepted on this case")]
    GuidanceNotAccepted,
    /// The guidance is closed.
    #[error("the guidance on this case is closed")]
    CaseClosed,
    /// The client withdrew consent to the guidance: only closing is possible.
    #[error("the client withdrew consent to the guidance")]
    GuidanceConsentWithdrawn,
    /// A plan adjustment without a plan.
    #[error("no plan was set in this guidance")]
    NoPlanYet,
    /// After-care already started.
    #[error("after-care already started")]
    AftercareAlreadyStarted,
    /// After-care follows a release.
    #[error("after-care follows a release, and no release was recorded")]
    NotReleased,
    /// A detention while one is under way.
    #[error("the client is already in detention")]
    AlreadyInDetention,
    /// A new detention that starts before the last release.
    #[error("the detention starts before the last release ({released_on})")]
    DetentionStartBeforeRelease {
        /// The day of the last release.
        released_on: NaiveDate,
    },
    /// A release before any detention.
    #[error("no detention was recorded, so there is nothing to be released from")]
    DetentionNotStarted,
    /// The action needs the client in detention.
    #[error("the client is not in detention")]
    NotInDetention,
    /// A transfer to the prison the client is in.
    #[error("the client is already in {prison:?}")]
    AlreadyInThatPrison {
        /// The prison.
        prison: Prison,
    },
    /// A detention event dated before the detention started.
    #[error("{date} lies before the start of the detention ({started_on})")]
    DateBeforeDetentionStart {
        /// The event's date.
        date: NaiveDate,
        /// The day the detention started.
        started_on: NaiveDate,
    },
    /// The event is about another client than the case (a case is one client's).
    #[error("the event is about another client than the case")]
    ClientMismatch,
    /// A consent rule.
    #[error(transparent)]
    Consent(#[from] consent::DomainError),
}

impl DomainError {
    /// A stable code for the refusal, for programs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidData(_) => "invalid_data",
            Self::NotACaseEvent { .. } => "not_a_case_event",
            Self::NotCaseOwner { .. } => "not_case_owner",
            Self::CaseNotRequested => "case_not_requested",
            Self::AlreadyOpen => "case_already_open",
            Self::AlreadyAccepted => "guidance_already_accepted",
            Self::GuidanceDeclined => "guidance_declined",
            Self::GuidanceNotAccepted => "guidance_not_accepted",
            Self::CaseClosed => "case_closed",
            Self::GuidanceConsentWithdrawn => "guidance_consent_withdrawn",
            Self::NoPlanYet => "no_plan_yet",
            Self::AftercareAlreadyStarted => "aftercare_already_started",
            Self::NotReleased => "not_released",
            Self::AlreadyInDetention => "already_in_detention",
            Self::DetentionStartBeforeRelease { .. } => "detention_start_before_release",
            Self::DetentionNotStarted => "detention_not_started",
            Self::NotInDetention => "not_in_detention",
            Self::AlreadyInThatPrison { .. } => "already_in_that_prison",
            Self::DateBeforeDetentionStart { .. } => "date_before_detention_start",
            Self::ClientMismatch => "client_mismatch",
            Self::Consent(e) => e.code(),
        }
    }

    /// The refusal, for people, in NL/FR/EN.
    pub fn labels(&self) -> Labels {
        match self {
            Self::InvalidData(_) => Labels::new(
                "De gegevens van het event zijn ongeldig.",
                "Les données de l'événement sont invalides.",
                "The event's data is invalid.",
            ),
            Self::NotACaseEvent { .. } => Labels::new(
                "Dit event hoort niet bij een dossier.",
                "Cet événement n'appartient pas à un dossier.",
                "This event does not belong to a case.",
            ),
            Self::NotCaseOwner { .. } => Labels::new(
                "Dit dossier behoort toe aan een andere organisatie.",
                "Ce dossier appartient à une autre organisation.",
                "This case belongs to another organisation.",
            ),
            Self::CaseNotRequested => Labels::new(
                "Er werd geen begeleiding gevraagd in dit dossier.",
                "Aucun accompagnement n'a été demandé dans ce dossier.",
                "No guidance was requested on this case.",
            ),
            Self::AlreadyOpen => Labels::new(
                "Begeleiding is al gevraagd of loopt al.",
                "L'accompagnement est déjà demandé ou en cours.",
                "Guidance is already requested or under way.",
            ),
            Self::AlreadyAccepted => Labels::new(
                "De begeleiding werd al aanvaard.",
                "L'accompagnement a déjà été accepté.",
                "Guidance was already accepted.",
            ),
            Self::GuidanceDeclined => Labels::new(
                "De vraag naar begeleiding werd niet opgenomen.",
                "La demande d'accompagnement n'a pas été retenue.",
                "The request for guidance was declined.",
            ),
            Self::GuidanceNotAccepted => Labels::new(
                "De begeleiding werd niet aanvaard.",
                "L'accompagnement n'a pas été accepté.",
                "Guidance was not accepted.",
            ),
            Self::CaseClosed => Labels::new(
                "De begeleiding in dit dossier is afgesloten.",
                "L'accompagnement de ce dossier est clôturé.",
                "The guidance on this case is closed.",
            ),
            Self::GuidanceConsentWithdrawn => Labels::new(
                "De cliënt trok de toestemming voor begeleiding in.",
                "Le client a retiré son consentement à l'accompagnement.",
                "The client withdrew consent to the guidance.",
            ),
            Self::NoPlanYet => Labels::new(
                "Er is nog geen begeleidingsplan.",
                "Il n'y a pas encore de plan d'accompagnement.",
                "There is no guidance plan yet.",
            ),
            Self::AftercareAlreadyStarted => Labels::new(
                "De nazorg is al gestart.",
                "Le suivi post-pénitentiaire a déjà commencé.",
                "After-care already started.",
            ),
            Self::NotReleased => Labels::new(
                "Nazorg volgt op een vrijlating, en er is geen vrijlating geregistreerd.",
                "Le suivi post-pénitentiaire suit une libération, et aucune n'est enregistrée.",
                "After-care follows a release, and no release was recorded.",
            ),
            Self::AlreadyInDetention => Labels::new(
                "De cliënt is al in detentie.",
                "Le client est déjà en détention.",
                "The client is already in detention.",
            ),
            Self::DetentionStartBeforeRelease { .. } => Labels::new(
                "De detentie begint vóór de laatste vrijlating.",
                "La détention commence avant la dernière libération.",
                "The detention starts before the last release.",
            ),
            Self::DetentionNotStarted => Labels::new(
                "Er is geen detentie geregistreerd.",
                "Aucune détention n'est enregistrée.",
                "No detention was recorded.",
            ),
            Self::NotInDetention => Labels::new(
                "De cliënt is niet in detentie.",
                "Le client n'est pas en détention.",
                "The client is not in detention.",
            ),
            Self::AlreadyInThatPrison { .. } => Labels::new(
                "De cliënt verblijft al in die gevangenis.",
                "Le client se trouve déjà dans cette prison.",
                "The client is already in that prison.",
            ),
            Self::DateBeforeDetentionStart { .. } => Labels::new(
                "De datum ligt vóór het begin van de detentie.",
                "La date précède le début de la détention.",
                "The date lies before the start of the detention.",
            ),
            Self::ClientMismatch => Labels::new(
                "Dit event gaat over een andere cliënt dan het dossier.",
                "Cet événement concerne un autre client que le dossier.",
                "This event is about another client than the case.",
            ),
            Self::Consent(e) => e.labels(),
        }
    }
}

/// The events of a command on a case, checked with [`check`].
pub fn decide(state: &State, command: &Command, ctx: &Context) -> Result<Vec<EventData>, DomainError> {
    checked(state, ctx, vec![command.event()], check, evolve)
}

/// The rules an incoming event on a case must meet, given the case's earlier events.
pub fn check(state: &State, event: &Envelope) -> Result<(), DomainError> {
    event.data.validate().map_err(DomainError::InvalidData)?;
    if event.data.spec().aggregate != AggregateKind::Cases || event.subject.kind() != AggregateKind::Cases {
        return Err(DomainError::NotACaseEvent { event_type: event.data.event_type().to_owned() });
    }
    if let Some(owner) = &state.owner
        && *owner != event.org
    {
        return Err(DomainError::NotCaseOwner { owner: owner.clone() });
    }
    if let Some(client_ref) = readable_client(event)
        && !state.consent.is_of(client_ref)
    {
        return Err(DomainError::ClientMismatch);
    }
    match &event.data {
        EventData::GuidanceRequested(_) => match state.status {
            CaseStatus::Requested | CaseStatus::Accepted => Err(DomainError::AlreadyOpen),
            CaseStatus::NeverSeen | CaseStatus::Declined | CaseStatus::Closed => Ok(()),
        },
        EventData::GuidanceAccepted(_) | EventData::GuidanceDeclined(_) => match state.status {
            CaseStatus::NeverSeen => Err(DomainError::CaseNotRequested),
            CaseStatus::Requested => Ok(()),
            CaseStatus::Accepted => Err(DomainError::AlreadyAccepted),
            CaseStatus::Declined => Err(DomainError::GuidanceDeclined),
            CaseStatus::Closed => Err(DomainError::CaseClosed),
        },
        EventData::IntakeHeld(_) | EventData::UrgentRequestHandled(_) => require_open(state),
        EventData::PlanSet(_)
        | EventData::InterventionRecorded(_)
        | EventData::FamilyContactFacilitated(_)
        | EventData::RelativeSupported(_) => require_guidance_under_way(state, event),
        EventData::PlanAdjusted(_) => {
            require_guidance_under_way(state, event)?;
            if state.plan_set { Ok(()) } else { Err(DomainError::NoPlanYet) }
        }
        EventData::GuidanceClosed(_) => require_accepted(state),
        EventData::AftercareStarted(_) => {
            require_guidance_under_way(state, event)?;
            if state.aftercare_started {
                return Err(DomainError::AftercareAlreadyStarted);
            }
            match state.detention {
                Detention::Released { .. } => Ok(()),
                Detention::NeverDetained | Detention::InDetention { .. } => Err(DomainError::NotReleased),
            }
        }
        EventData::DetentionStarted(d) => {
            require_open(state)?;
            match state.detention {
                Detention::InDetention { .. } => Err(DomainError::AlreadyInDetention),
                Detention::Released { on, .. } if d.started_on < on => {
                    Err(DomainError::DetentionStartBeforeRelease { released_on: on })
                }
                Detention::Released { .. } | Detention::NeverDetained => Ok(()),
            }
        }
        EventData::DetaineeTransferred(d) => {
            require_open(state)?;
            let (prison, since) = in_detention(state)?;
            if d.to_prison == prison {
                return Err(DomainError::AlreadyInThatPrison { prison });
            }
            not_before(d.transferred_on, since)
        }
        EventData::LegalStatusChanged(_) => require_open(state),
        EventData::ReleaseScheduled(d) => {
            require_open(state)?;
            let since = released_from(state)?;
            not_before(d.release_on, since)
        }
        EventData::DetaineeReleased(d) => {
            require_open(state)?;
            let since = released_from(state)?;
            not_before(d.released_on, since)
        }
        EventData::LeavePrepared(d) => {
            require_guidance_under_way(state, event)?;
            let (_, since) = in_detention(state)?;
            not_before(d.leave_on, since)
        }
        EventData::OutingEscorted(d) => {
            require_guidance_under_way(state, event)?;
            let (_, since) = in_detention(state)?;
            not_before(d.outing_on, since)
        }
        EventData::ConsentGiven(_) => {
            require_open(state)?;
            Ok(consent::check(&state.consent, event)?)
        }
        EventData::ConsentWithdrawn(_) => {
            // Consent can be withdrawn at any time, the guidance closed or not.
            if state.status == CaseStatus::NeverSeen {
                return Err(DomainError::CaseNotRequested);
            }
            Ok(consent::check(&state.consent, event)?)
        }
        other => Err(DomainError::NotACaseEvent { event_type: other.event_type().to_owned() }),
    }
}

/// The client an event is about, when its personal fields are readable (an erased event's
/// `client_ref` is empty).
fn readable_client(event: &Envelope) -> Option<&str> {
    event.data.client_ref().filter(|c| !c.is_empty() && event.personal == PersonalState::Present)
}

/// Folds an event of a case in; events of other aggregates leave the state as it is.
pub fn evolve(mut state: State, event: &Envelope) -> State {
    if event.data.spec().aggregate != AggregateKind::Cases {
        return state;
    }
    if state.owner.is_none() {
        state.owner = Some(event.org.clone());
    }
    match &event.data {
        EventData::GuidanceRequested(_) => {
            state.status = CaseStatus::Requested;
            state.plan_set = false;
            state.aftercare_started = false;
        }
        EventData::GuidanceAccepted(d) => {
            state.status = CaseStatus::Accepted;
            if d.legal_status.is_some() {
                state.legal_status = d.legal_status;
            }
        }
        EventData::GuidanceDeclined(_) => state.status = CaseStatus::Declined,
        EventData::PlanSet(_) | EventData::PlanAdjusted(_) => state.plan_set = true,
        EventData::GuidanceClosed(_) => state.status = CaseStatus::Closed,
        EventData::AftercareStarted(_) => state.aftercare_started = true,
        EventData::DetentionStarted(d) => {
            state.detention = Detention::InDetention { prison: d.prison, since: d.started_on };
            state.legal_status = Some(d.legal_status);
            state.scheduled_release = None;
            // After-care follows a release: a new detention ends it, and the next release may
            // start it again.
            state.aftercare_started = false;
        }
        EventData::DetaineeTransferred(d) => {
            if let Detention::InDetention { since, .. } = state.detention {
                state.detention = Detention::InDetention { prison: d.to_prison, since };
            }
        }
        EventData::LegalStatusChanged(d) => state.legal_status = Some(d.legal_status),
        EventData::ReleaseScheduled(d) => {
            state.scheduled_release = Some(ScheduledRelease { on: d.release_on, kind: d.kind });
        }
        EventData::DetaineeReleased(d) => {
            state.detention = Detention::Released { on: d.released_on, kind: d.kind };
            state.scheduled_release = None;
        }
        EventData::ConsentGiven(_) | EventData::ConsentWithdrawn(_) => {
            state.consent = consent::evolve(std::mem::take(&mut state.consent), event);
        }
        _ => {}
    }
    if let Some(client_ref) = readable_client(event) {
        state.consent.set_client(client_ref);
    }
    state
}

/// Requested or accepted: not never seen, not declined, not closed.
fn require_open(state: &State) -> Result<(), DomainError> {
    match state.status {
        CaseStatus::Requested | CaseStatus::Accepted => Ok(()),
        CaseStatus::NeverSeen => Err(DomainError::CaseNotRequested),
        CaseStatus::Declined => Err(DomainError::GuidanceDeclined),
        CaseStatus::Closed => Err(DomainError::CaseClosed),
    }
}

/// Accepted and not closed.
fn require_accepted(state: &State) -> Result<(), DomainError> {
    match state.status {
        CaseStatus::Accepted => Ok(()),
        CaseStatus::Closed => Err(DomainError::CaseClosed),
        CaseStatus::NeverSeen | CaseStatus::Requested | CaseStatus::Declined => Err(DomainError::GuidanceNotAccepted),
    }
}

/// Accepted, not closed, and the client did not withdraw consent to the guidance.
fn require_guidance_under_way(state: &State, event: &Envelope) -> Result<(), DomainError> {
    require_accepted(state)?;
    let today = brussels_date(event.occurred_at);
    if state.consent.status(&ConsentScope::Guidance, today) == consent::ConsentStatus::Withdrawn {
        return Err(DomainError::GuidanceConsentWithdrawn);
    }
    Ok(())
}

/// The prison and start of the current detention.
fn in_detention(state: &State) -> Result<(Prison, NaiveDate), DomainError> {
    match state.detention {
        Detention::InDetention { prison, since } => Ok((prison, since)),
        Detention::NeverDetained | Detention::Released { .. } => Err(DomainError::NotInDetention),
    }
}

/// The start of the detention a release ends.
fn released_from(state: &State) -> Result<NaiveDate, DomainError> {
    match state.detention {
        Detention::InDetention { since, .. } => Ok(since),
        Detention::NeverDetained => Err(DomainError::DetentionNotStarted),
        Detention::Released { .. } => Err(DomainError::NotInDetention),
    }
}

fn not_before(date: NaiveDate, started_on: NaiveDate) -> Result<(), DomainError> {
    if date < started_on { Err(DomainError::DateBeforeDetentionStart { date, started_on }) } else { Ok(()) }
}

#[cfg(test)]
pub(crate) mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::aggregates::testing::{self, Aggregate, date, given};
    use crate::events::{ClosureReason, EventPayload, GuidanceSetting, LeavePurpose, OutingPurpose};
    use proptest::prelude::*;

    pub(crate) struct Case;
    impl Aggregate for Case {
        type State = State;
        type Command = Command;
        type Error = DomainError;
        type Input = ();
        fn decide(s: &State, c: &Command, ctx: &Context, _: &()) -> Result<Vec<EventData>, DomainError> {
            decide(s, c, ctx)
        }
        fn check(s: &State, e: &Envelope, _: &()) -> Result<(), DomainError> {
            check(s, e)
        }
        fn evolve(s: State, e: &Envelope) -> State {
            evolve(s, e)
        }
    }

    const CASE: &str = "cases/c-1";

    fn ev(day: (u32, u32), data: impl Into<EventData>) -> Envelope {
        testing::event("apo", CASE, day, data)
    }

    fn on(day: (u32, u32)) -> Context {
        testing::ctx("apo", CASE, day)
    }

    fn requested() -> Envelope {
        ev((1, 2), GuidanceRequested::example())
    }

    fn accepted() -> Envelope {
        ev((1, 3), GuidanceAccepted::example())
    }

    fn detained(day: (u32, u32), started_on: NaiveDate) -> Envelope {
        ev(day, DetentionStarted { started_on, ..DetentionStarted::example() })
    }

    fn released(day: (u32, u32), released_on: NaiveDate) -> Envelope {
        ev(day, DetaineeReleased { released_on, ..DetaineeReleased::example() })
    }

    fn closed(day: (u32, u32)) -> Envelope {
        ev(day, GuidanceClosed::example())
    }

    fn intervention() -> Command {
        Command::RecordIntervention(InterventionRecorded::example())
    }

    #[test]
    fn an_intervention_on_accepted_guidance_is_recorded() {
        given::<Case>([requested(), accepted()])
            .when(&on((1, 10)), intervention())
            .then(vec![InterventionRecorded::example().into()]);
    }

    #[test]
    fn an_event_about_another_client_is_refused_on_a_case() {
        let other = InterventionRecorded { client_ref: "cl-someone-else".into(), ..InterventionRecorded::example() };
        given::<Case>([requested(), accepted()])
            .when(&on((1, 10)), Command::RecordIntervention(other.clone()))
            .then_error(DomainError::ClientMismatch);
        // Once the client's fields are erased, their reference is unknown: nothing to compare
        // (the validator folds an erased history without checking it again).
        let mut erased_request = requested();
        erased_request.data.take_personal();
        erased_request.personal = PersonalState::Erased;
        let state = evolve(State::default(), &erased_request);
        let accepted_other = GuidanceAccepted { client_ref: "cl-someone-else".into(), ..GuidanceAccepted::example() };
        assert_eq!(check(&state, &ev((1, 3), accepted_other)), Ok(()));
    }

    #[test]
    fn an_intervention_on_a_case_never_accepted_is_refused() {
        given::<Case>([requested()]).when(&on((1, 10)), intervention()).then_error(DomainError::GuidanceNotAccepted);
        given::<Case>([]).when(&on((1, 10)), intervention()).then_error(DomainError::GuidanceNotAccepted);
    }

    #[test]
    fn an_intervention_on_a_declined_request_is_refused() {
        given::<Case>([requested(), ev((1, 3), GuidanceDeclined::example())])
            .when(&on((1, 10)), intervention())
            .then_error(DomainError::GuidanceNotAccepted);
    }

    #[test]
    fn an_intervention_on_a_closed_case_is_refused() {
        given::<Case>([requested(), accepted(), closed((2, 1))])
            .when(&on((2, 2)), intervention())
            .then_error(DomainError::CaseClosed);
    }

    #[test]
    fn an_intervention_after_the_client_withdrew_consent_to_the_guidance_is_refused_but_closing_is_not() {
        let guidance = ConsentGiven { scope: ConsentScope::Guidance, expires_on: None, ..ConsentGiven::example() };
        let withdrawn = ConsentWithdrawn { scope: ConsentScope::Guidance, ..ConsentWithdrawn::example() };
        let g = given::<Case>([requested(), accepted(), ev((1, 4), guidance), ev((1, 20), withdrawn)]);
        g.when(&on((1, 21)), intervention()).then_error(DomainError::GuidanceConsentWithdrawn);
        g.when(&on((1, 21)), Command::CloseGuidance(GuidanceClosed::example()))
            .then(vec![GuidanceClosed::example().into()]);
    }

    #[test]
    fn an_event_from_another_organisation_on_the_case_is_refused() {
        given::<Case>([requested(), accepted()])
            .when(&testing::ctx("dsr", CASE, (1, 10)), intervention())
            .then_error(DomainError::NotCaseOwner { owner: OrgId::parse("apo").unwrap() });
    }

    #[test]
    fn an_event_of_another_aggregate_is_refused() {
        given::<Case>([requested()])
            .when_event(testing::event("apo", "referrals/r-1", (1, 3), crate::events::ReferralAccepted::example()))
            .then_error(DomainError::NotACaseEvent { event_type: "relais.referral.accepted".into() });
    }

    #[test]
    fn a_second_request_while_guidance_is_under_way_is_refused_and_after_closure_opens_a_new_period() {
        given::<Case>([requested(), accepted()])
            .when(&on((1, 5)), Command::RequestGuidance(GuidanceRequested::example()))
            .then_error(DomainError::AlreadyOpen);
        let state = given::<Case>([requested(), accepted(), ev((1, 4), PlanSet::example()), closed((2, 1))])
            .when(&on((3, 1)), Command::RequestGuidance(GuidanceRequested::example()))
            .then(vec![GuidanceRequested::example().into()]);
        assert_eq!(state.status(), CaseStatus::Requested);
        assert!(!state.plan_set());
    }

    #[test]
    fn work_on_a_declined_request_is_refused_until_a_new_request() {
        let g = given::<Case>([requested(), ev((1, 3), GuidanceDeclined::example())]);
        g.when(&on((1, 4)), Command::HoldIntake(IntakeHeld::example())).then_error(DomainError::GuidanceDeclined);
        g.when(&on((1, 4)), Command::AcceptGuidance(GuidanceAccepted::example()))
            .then_error(DomainError::GuidanceDeclined);
        g.when(&on((1, 4)), Command::RequestGuidance(GuidanceRequested::example()))
            .then(vec![GuidanceRequested::example().into()]);
    }

    #[test]
    fn accepting_guidance_twice_is_refused() {
        given::<Case>([requested(), accepted()])
            .when(&on((1, 4)), Command::AcceptGuidance(GuidanceAccepted::example()))
            .then_error(DomainError::AlreadyAccepted);
    }

    #[test]
    fn accepting_guidance_that_was_never_requested_is_refused() {
        given::<Case>([])
            .when(&on((1, 4)), Command::AcceptGuidance(GuidanceAccepted::example()))
            .then_error(DomainError::CaseNotRequested);
    }

    #[test]
    fn an_intake_may_precede_acceptance_and_an_urgent_request_too() {
        let g = given::<Case>([requested()]);
        g.when(&on((1, 2)), Command::HoldIntake(IntakeHeld::example())).then(vec![IntakeHeld::example().into()]);
        g.when(&on((1, 2)), Command::HandleUrgentRequest(UrgentRequestHandled::example()))
            .then(vec![UrgentRequestHandled::example().into()]);
    }

    #[test]
    fn a_plan_is_set_then_adjusted_but_not_adjusted_before_it_is_set() {
        given::<Case>([requested(), accepted()])
            .when(&on((1, 5)), Command::AdjustPlan(PlanAdjusted::example()))
            .then_error(DomainError::NoPlanYet);
        let state = given::<Case>([requested(), accepted(), ev((1, 4), PlanSet::example())])
            .when(&on((1, 5)), Command::AdjustPlan(PlanAdjusted::example()))
            .then(vec![PlanAdjusted::example().into()]);
        assert!(state.plan_set());
    }

    #[test]
    fn invalid_data_is_refused_with_a_pointer_to_the_field() {
        let bad = PlanSet { life_domains: vec![], ..PlanSet::example() };
        given::<Case>([requested(), accepted()])
            .when(&on((1, 5)), Command::SetPlan(bad))
            .then_error(DomainError::InvalidData(DataError::at("life_domains", "at least 1 entries")));
    }

    #[test]
    fn a_detention_is_started_and_a_transfer_moves_the_client() {
        let state = given::<Case>([requested(), accepted(), detained((1, 4), date(1, 3))])
            .when(&on((2, 1)), Command::RecordTransfer(DetaineeTransferred::example()))
            .then(vec![DetaineeTransferred::example().into()]);
        assert_eq!(state.detention(), Detention::InDetention { prison: Prison::SaintGilles, since: date(1, 3) });
        assert_eq!(state.legal_status(), Some(LegalStatus::Suspect));
    }

    #[test]
    fn a_transfer_to_the_prison_the_client_is_in_is_refused() {
        given::<Case>([requested(), detained((1, 4), date(1, 3))])
            .when(
                &on((2, 1)),
                Command::RecordTransfer(DetaineeTransferred {
                    to_prison: Prison::Haren,
                    ..DetaineeTransferred::example()
                }),
            )
            .then_error(DomainError::AlreadyInThatPrison { prison: Prison::Haren });
    }

    #[test]
    fn a_second_detention_while_in_detention_is_refused() {
        given::<Case>([requested(), detained((1, 4), date(1, 3))])
            .when(&on((1, 5)), Command::StartDetention(DetentionStarted::example()))
            .then_error(DomainError::AlreadyInDetention);
    }

    #[test]
    fn a_new_detention_that_starts_before_the_last_release_is_refused() {
        given::<Case>([requested(), detained((1, 4), date(1, 3)), released((3, 1), date(3, 1))])
            .when(
                &on((3, 2)),
                Command::StartDetention(DetentionStarted { started_on: date(2, 1), ..DetentionStarted::example() }),
            )
            .then_error(DomainError::DetentionStartBeforeRelease { released_on: date(3, 1) });
    }

    #[test]
    fn a_release_scheduled_before_detention_started_is_refused() {
        given::<Case>([requested(), accepted()])
            .when(&on((1, 5)), Command::ScheduleRelease(ReleaseScheduled::example()))
            .then_error(DomainError::DetentionNotStarted);
    }

    #[test]
    fn a_release_before_detention_started_is_refused() {
        given::<Case>([requested(), accepted()])
            .when(&on((1, 5)), Command::RecordRelease(DetaineeReleased::example()))
            .then_error(DomainError::DetentionNotStarted);
    }

    #[test]
    fn a_release_dated_before_the_day_detention_started_is_refused() {
        given::<Case>([requested(), detained((1, 4), date(1, 3))])
            .when(
                &on((1, 5)),
                Command::RecordRelease(DetaineeReleased { released_on: date(1, 2), ..DetaineeReleased::example() }),
            )
            .then_error(DomainError::DateBeforeDetentionStart { date: date(1, 2), started_on: date(1, 3) });
    }

    #[test]
    fn a_second_release_is_refused() {
        given::<Case>([requested(), detained((1, 4), date(1, 3)), released((3, 1), date(3, 1))])
            .when(&on((3, 2)), Command::RecordRelease(DetaineeReleased::example()))
            .then_error(DomainError::NotInDetention);
    }

    #[test]
    fn a_scheduled_release_is_recorded_and_cleared_by_the_release() {
        let g = given::<Case>([requested(), detained((1, 4), date(1, 3)), ev((2, 1), ReleaseScheduled::example())]);
        assert_eq!(
            g.state().scheduled_release(),
            Some(ScheduledRelease { on: date(10, 1), kind: ReleaseKind::ConditionalRelease })
        );
        let state = g
            .when(&on((10, 1)), Command::RecordRelease(DetaineeReleased::example()))
            .then(vec![DetaineeReleased::example().into()]);
        assert_eq!(state.scheduled_release(), None);
        assert_eq!(state.detention(), Detention::Released { on: date(10, 1), kind: ReleaseKind::ConditionalRelease });
    }

    #[test]
    fn a_furlough_for_someone_not_in_detention_is_refused() {
        given::<Case>([requested(), accepted()])
            .when(&on((2, 1)), Command::PrepareLeave(LeavePrepared::example()))
            .then_error(DomainError::NotInDetention);
        given::<Case>([requested(), accepted(), detained((1, 4), date(1, 3)), released((3, 1), date(3, 1))])
            .when(&on((5, 1)), Command::PrepareLeave(LeavePrepared::example()))
            .then_error(DomainError::NotInDetention);
    }

    #[test]
    fn an_escorted_outing_for_someone_not_in_detention_is_refused() {
        given::<Case>([requested(), accepted()])
            .when(&on((2, 1)), Command::EscortOuting(OutingEscorted::example()))
            .then_error(DomainError::NotInDetention);
    }

    #[test]
    fn a_furlough_and_an_escorted_outing_during_detention_are_recorded() {
        let g = given::<Case>([requested(), accepted(), detained((1, 4), date(1, 3))]);
        let leave = LeavePrepared { purpose: LeavePurpose::Housing, ..LeavePrepared::example() };
        g.when(&on((5, 1)), Command::PrepareLeave(leave.clone())).then(vec![leave.into()]);
        let outing = OutingEscorted { purpose: OutingPurpose::MedicalAppointment, ..OutingEscorted::example() };
        g.when(&on((4, 1)), Command::EscortOuting(outing.clone())).then(vec![outing.into()]);
    }

    #[test]
    fn a_furlough_dated_before_detention_started_is_refused() {
        given::<Case>([requested(), accepted(), detained((1, 4), date(1, 3))])
            .when(
                &on((1, 5)),
                Command::PrepareLeave(LeavePrepared { leave_on: date(1, 1), ..LeavePrepared::example() }),
            )
            .then_error(DomainError::DateBeforeDetentionStart { date: date(1, 1), started_on: date(1, 3) });
    }

    #[test]
    fn after_care_follows_a_release_once() {
        given::<Case>([requested(), accepted(), detained((1, 4), date(1, 3))])
            .when(&on((2, 1)), Command::StartAftercare(AftercareStarted::example()))
            .then_error(DomainError::NotReleased);
        let g = given::<Case>([
            requested(),
            accepted(),
            detained((1, 4), date(1, 3)),
            released((3, 1), date(3, 1)),
            ev((3, 2), AftercareStarted::example()),
        ]);
        assert!(g.state().aftercare_started());
        g.when(&on((3, 3)), Command::StartAftercare(AftercareStarted::example()))
            .then_error(DomainError::AftercareAlreadyStarted);
        g.when(&on((3, 3)), intervention()).then(vec![InterventionRecorded::example().into()]);
    }

    #[test]
    fn a_new_detention_ends_after_care_and_the_next_release_may_start_it_again() {
        let detained_again = vec![
            requested(),
            accepted(),
            detained((1, 4), date(1, 3)),
            released((3, 1), date(3, 1)),
            ev((3, 2), AftercareStarted::example()),
            detained((4, 1), date(4, 1)),
        ];
        let g = given::<Case>(detained_again.clone());
        assert!(!g.state().aftercare_started());
        g.when(&on((4, 2)), Command::StartAftercare(AftercareStarted::example())).then_error(DomainError::NotReleased);
        given::<Case>(detained_again.into_iter().chain([released((5, 1), date(5, 1))]))
            .when(&on((5, 2)), Command::StartAftercare(AftercareStarted::example()))
            .then(vec![AftercareStarted::example().into()]);
    }

    #[test]
    fn family_work_needs_accepted_guidance() {
        given::<Case>([requested()])
            .when(&on((1, 3)), Command::FacilitateFamilyContact(FamilyContactFacilitated::example()))
            .then_error(DomainError::GuidanceNotAccepted);
        given::<Case>([requested(), accepted()])
            .when(&on((1, 4)), Command::SupportRelative(RelativeSupported::example()))
            .then(vec![RelativeSupported::example().into()]);
    }

    #[test]
    fn consent_is_given_on_an_open_case_and_withdrawn_even_after_closure() {
        given::<Case>([])
            .when(&on((1, 1)), Command::GiveConsent(ConsentGiven::example()))
            .then_error(DomainError::CaseNotRequested);
        let state = given::<Case>([requested(), ev((1, 2), ConsentGiven::example()), accepted(), closed((2, 1))])
            .when(&on((2, 2)), Command::WithdrawConsent(ConsentWithdrawn::example()))
            .then(vec![ConsentWithdrawn::example().into()]);
        let scope = ConsentWithdrawn::example().scope;
        assert_eq!(state.consent().status(&scope, date(2, 2)), consent::ConsentStatus::Withdrawn);
        given::<Case>([requested(), accepted(), closed((2, 1))])
            .when(&on((2, 2)), Command::GiveConsent(ConsentGiven::example()))
            .then_error(DomainError::CaseClosed);
    }

    #[test]
    fn consent_rules_apply_inside_the_case() {
        given::<Case>([requested()])
            .when(&on((1, 3)), Command::WithdrawConsent(ConsentWithdrawn::example()))
            .then_error(DomainError::Consent(consent::DomainError::NotGiven {
                scope: ConsentWithdrawn::example().scope,
            }));
    }

    #[test]
    fn every_refusal_has_a_code_and_three_messages() {
        let e = DomainError::Consent(consent::DomainError::ShareWithOwnOrganisation);
        assert_eq!(e.code(), "share_with_own_organisation");
        assert!(!DomainError::NotInDetention.labels().fr.is_empty());
    }

    // Random command sequences: the state after each accepted command equals the fold of all
    // events decided so far, every decided event passes `check` on replay, and invariants hold.

    fn command_strategy() -> impl Strategy<Value = (Command, u32)> {
        let domains = Just(vec![crate::reference::LifeDomain::Housing]);
        let day = 1u32..60;
        let cmd = prop_oneof![
            Just(Command::RequestGuidance(GuidanceRequested::example())),
            Just(Command::AcceptGuidance(GuidanceAccepted {
                setting: GuidanceSetting::AtLiberty,
                ..GuidanceAccepted::example()
            })),
            Just(Command::DeclineGuidance(GuidanceDeclined::example())),
            Just(Command::HoldIntake(IntakeHeld::example())),
            domains.prop_map(|d| Command::SetPlan(PlanSet { life_domains: d, ..PlanSet::example() })),
            Just(Command::AdjustPlan(PlanAdjusted::example())),
            Just(intervention()),
            Just(Command::HandleUrgentRequest(UrgentRequestHandled::example())),
            prop_oneof![Just(ClosureReason::GoalsReached), Just(ClosureReason::NoContact)]
                .prop_map(|reason| Command::CloseGuidance(GuidanceClosed { reason, ..GuidanceClosed::example() })),
            Just(Command::StartAftercare(AftercareStarted::example())),
            (0u32..60).prop_map(|d| Command::StartDetention(DetentionStarted {
                started_on: date(1, 1) + chrono::Duration::days(i64::from(d)),
                ..DetentionStarted::example()
            })),
            prop_oneof![Just(Prison::Haren), Just(Prison::SaintGilles)].prop_map(|p| {
                Command::RecordTransfer(DetaineeTransferred {
                    to_prison: p,
                    transferred_on: date(3, 1),
                    ..DetaineeTransferred::example()
                })
            }),
            Just(Command::ChangeLegalStatus(LegalStatusChanged::example())),
            Just(Command::ScheduleRelease(ReleaseScheduled { release_on: date(3, 1), ..ReleaseScheduled::example() })),
            (0u32..60).prop_map(|d| Command::RecordRelease(DetaineeReleased {
                released_on: date(1, 1) + chrono::Duration::days(i64::from(d)),
                ..DetaineeReleased::example()
            })),
            Just(Command::PrepareLeave(LeavePrepared { leave_on: date(3, 1), ..LeavePrepared::example() })),
            Just(Command::EscortOuting(OutingEscorted { outing_on: date(3, 1), ..OutingEscorted::example() })),
            Just(Command::FacilitateFamilyContact(FamilyContactFacilitated::example())),
            Just(Command::SupportRelative(RelativeSupported::example())),
            prop_oneof![
                Just(ConsentScope::Guidance),
                Just(ConsentScope::ShareWithOrganisation(OrgId::parse("dsr").unwrap()))
            ]
            .prop_map(|scope| Command::GiveConsent(ConsentGiven {
                scope,
                expires_on: None,
                ..ConsentGiven::example()
            })),
            prop_oneof![
                Just(ConsentScope::Guidance),
                Just(ConsentScope::ShareWithOrganisation(OrgId::parse("dsr").unwrap()))
            ]
            .prop_map(|scope| Command::WithdrawConsent(ConsentWithdrawn { scope, ..ConsentWithdrawn::example() })),
        ];
        (cmd, day)
    }

    proptest! {
        #[test]
        fn replaying_decided_events_gives_the_same_state_and_keeps_the_invariants(
            commands in proptest::collection::vec(command_strategy(), 0..40),
            orgs in proptest::collection::vec(prop_oneof![Just("apo"), Just("apo"), Just("dsr")], 40),
        ) {
            let mut state = State::default();
            let mut log: Vec<Envelope> = Vec::new();
            for (i, ((command, day), org)) in commands.into_iter().zip(orgs).enumerate() {
                let ctx = testing::ctx(org, CASE, (1 + day / 28, 1 + day % 28));
                if let Ok(events) = decide(&state, &command, &ctx) {
                    for data in events {
                        let e = ctx.envelope(uuid::Uuid::from_u128(i as u128), data);
                        state = evolve(state, &e);
                        log.push(e);
                    }
                }
                // Invariants of every reachable state.
                if state.aftercare_started() {
                    prop_assert!(matches!(state.detention(), Detention::Released { .. }), "after-care without release");
                }
                if state.scheduled_release().is_some() {
                    prop_assert!(matches!(state.detention(), Detention::InDetention { .. }), "scheduled release outside detention");
                }
                if state.owner().is_some() {
                    prop_assert!(log.iter().all(|e| Some(&e.org) == state.owner()));
                }
            }
            let mut replayed = State::default();
            for e in &log {
                prop_assert_eq!(check(&replayed, e), Ok(()));
                replayed = evolve(replayed, e);
            }
            prop_assert_eq!(replayed, state);
        }
    }
}
