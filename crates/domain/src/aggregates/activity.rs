//! A group activity (`activities/<id>`), organised by the community coordinators or a service.
//!
//! The rules, in short: an activity is planned once; candidates register, are screened, and
//! only admitted candidates are enrolled, never beyond the capacity (a dropout frees a place);
//! sessions have distinct numbers, are not held before the start date, and count at most the
//! enrolled participants; a feedback conversation is held once with every participant who
//! dropped out, and only with them; an evaluation that stops the activity ends it.
//!
//! A participant is identified by the recording organisation and its client reference
//! ([`ParticipantKey`]): references are per organisation, so the same text from two services
//! names two people. When an event's personal fields are erased (the client's key was
//! destroyed) [`evolve`] still counts it (enrolments, dropouts) but cannot place it on the
//! roster.

use super::{Context, checked};
use crate::envelope::{Envelope, PersonalState};
use crate::events::{
    ActivityEvaluated, ActivityPlanned, DataError, DropoutFeedbackHeld, EvaluationOutcome, EventData,
    NeedsSurveyRecorded, ParticipantDroppedOut, ParticipantEnrolled, ParticipantScreened, RegistrationReceived,
    SessionHeld,
};
use crate::ids::{AggregateKind, OrgId};
use crate::labels::Labels;
use crate::reference::ActivityKind;
use chrono::NaiveDate;
use std::collections::{BTreeMap, BTreeSet};

/// Who a participant is: the recording organisation and its reference of the client.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParticipantKey {
    /// The organisation that registered the participant.
    pub org: OrgId,
    /// That organisation's reference of the client.
    pub client_ref: String,
}

/// Where a participant stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParticipantStatus {
    /// Registered, not yet screened.
    Registered,
    /// Screened and admitted, not yet enrolled.
    Admitted,
    /// Screened and not admitted.
    NotAdmitted,
    /// Enrolled.
    Enrolled,
    /// Dropped out after enrolment.
    DroppedOut,
}

/// One participant on the roster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Participant {
    /// Where the participant stands.
    pub status: ParticipantStatus,
    /// True once the dropout feedback conversation was held.
    pub feedback_held: bool,
}

/// What the plan fixed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The organisation that planned it.
    pub organiser: OrgId,
    /// The kind of activity.
    pub kind: ActivityKind,
    /// The capacity.
    pub capacity: u16,
    /// The first day.
    pub starts_on: NaiveDate,
    /// The partner organisations, who run it with the organiser.
    pub partners: Vec<OrgId>,
}

impl Plan {
    /// Whether `org` runs the activity: its organiser or a partner.
    pub fn is_run_by(&self, org: &OrgId) -> bool {
        self.organiser == *org || self.partners.contains(org)
    }
}

/// The state of one activity, folded from its events. `Default`: never seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    plan: Option<Plan>,
    roster: BTreeMap<ParticipantKey, Participant>,
    enrolled: u16,
    sessions: BTreeSet<u16>,
    surveys: u32,
    evaluations: u32,
    ended: bool,
}

impl State {
    /// The plan, once planned.
    pub fn plan(&self) -> Option<&Plan> {
        self.plan.as_ref()
    }
    /// The participants, by key.
    pub fn roster(&self) -> &BTreeMap<ParticipantKey, Participant> {
        &self.roster
    }
    /// How many participants are enrolled now (dropouts excluded).
    pub fn enrolled(&self) -> u16 {
        self.enrolled
    }
    /// The numbers of the sessions held.
    pub fn sessions(&self) -> &BTreeSet<u16> {
        &self.sessions
    }
    /// How many needs surveys were recorded on this subject.
    pub fn surveys(&self) -> u32 {
        self.surveys
    }
    /// True once an evaluation stopped the activity.
    pub fn ended(&self) -> bool {
        self.ended
    }
}

/// What the organisers do with an activity. Each command carries the data of the event it
/// produces.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Record a needs survey.
    RecordNeedsSurvey(NeedsSurveyRecorded),
    /// Plan the activity.
    Plan(ActivityPlanned),
    /// Register a candidate.
    Register(RegistrationReceived),
    /// Record the screening of a candidate.
    Screen(ParticipantScreened),
    /// Enrol an admitted candidate.
    Enrol(ParticipantEnrolled),
    /// Record a session.
    HoldSession(SessionHeld),
    /// Record a dropout.
    RecordDropout(ParticipantDroppedOut),
    /// Record the feedback conversation with a dropout.
    HoldDropoutFeedback(DropoutFeedbackHeld),
    /// Record the evaluation.
    Evaluate(ActivityEvaluated),
}

impl Command {
    fn event(&self) -> EventData {
        match self {
            Self::RecordNeedsSurvey(d) => d.clone().into(),
            Self::Plan(d) => d.clone().into(),
            Self::Register(d) => d.clone().into(),
            Self::Screen(d) => d.clone().into(),
            Self::Enrol(d) => d.clone().into(),
            Self::HoldSession(d) => d.clone().into(),
            Self::RecordDropout(d) => d.clone().into(),
            Self::HoldDropoutFeedback(d) => d.clone().into(),
            Self::Evaluate(d) => d.clone().into(),
        }
    }
}

/// Why an event on an activity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The data breaks a rule of its own type.
    #[error("invalid data: {0}")]
    InvalidData(DataError),
    /// The event does not belong to an activity.
    #[error("{event_type} is not an activity event")]
    NotAnActivityEvent {
        /// The event type.
        event_type: String,
    },
    /// The activity was already planned.
    #[error("the activity was already planned")]
    AlreadyPlanned,
    /// The activity was never planned.
    #[error("the activity was not planned")]
    NotPlanned,
    /// An evaluation stopped the activity.
    #[error("the activity was stopped")]
    ActivityEnded,
    /// The candidate is already registered.
    #[error("the candidate is already registered")]
    AlreadyRegistered,
    /// The candidate is not registered.
    #[error("the candidate is not registered")]
    NotRegistered,
    /// The candidate was not admitted at screening (or not screened).
    #[error("the candidate was not admitted at screening")]
    NotAdmitted,
    /// The participant is already enrolled.
    #[error("the participant is already enrolled")]
    AlreadyEnrolled,
    /// All places are taken.
    #[error("all {capacity} places are taken")]
    CapacityReached {
        /// The capacity.
        capacity: u16,
    },
    /// A session number used before.
    #[error("session {session_number} was already held")]
    SessionAlreadyHeld {
        /// The number.
        session_number: u16,
    },
    /// A session before the start date.
    #[error("the session lies before the start of the activity ({starts_on})")]
    SessionBeforeStart {
        /// The first day.
        starts_on: NaiveDate,
    },
    /// More attendance counted than participants enrolled.
    #[error("attendance counts more people than the {enrolled} enrolled")]
    AttendanceExceedsEnrolment {
        /// How many are enrolled.
        enrolled: u16,
    },
    /// A dropout of someone not enrolled.
    #[error("the participant is not enrolled")]
    NotEnrolled,
    /// A dropout feedback conversation with someone who did not drop out.
    #[error("the participant did not drop out")]
    DidNotDropOut,
    /// The dropout feedback conversation was already held.
    #[error("the dropout feedback conversation was already held")]
    FeedbackAlreadyHeld,
    /// An evaluation before any session.
    #[error("no session was held yet")]
    NoSessionHeld,
    /// A session, an evaluation or a needs survey of a planned activity from an organisation
    /// that does not run it.
    #[error("only the organiser or a partner records this")]
    NotRunByOrganisation,
    /// An activity holds at most [`MAX_RECORDS`] needs surveys and as many evaluations (the
    /// activities view keeps each list with the activity).
    #[error("an activity holds at most {max} {what}")]
    TooManyRecords {
        /// Needs surveys or evaluations.
        what: &'static str,
        /// The bound.
        max: u32,
    },
}

/// The most needs surveys, and the most evaluations, one activity records: far more than a
/// group activity gathers, and few enough that the activities view, which keeps them with the
/// activity, never grows a row past what PostgreSQL stores.
pub const MAX_RECORDS: u32 = 1_000;

impl DomainError {
    /// A stable code for the refusal, for programs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidData(_) => "invalid_data",
            Self::NotAnActivityEvent { .. } => "not_an_activity_event",
            Self::AlreadyPlanned => "activity_already_planned",
            Self::NotPlanned => "activity_not_planned",
            Self::ActivityEnded => "activity_ended",
            Self::AlreadyRegistered => "already_registered",
            Self::NotRegistered => "not_registered",
            Self::NotAdmitted => "not_admitted",
            Self::AlreadyEnrolled => "already_enrolled",
            Self::CapacityReached { .. } => "capacity_reached",
            Self::SessionAlreadyHeld { .. } => "session_already_held",
            Self::TooManyRecords { .. } => "too_many_records",
            Self::SessionBeforeStart { .. } => "session_before_start",
            Self::AttendanceExceedsEnrolment { .. } => "attendance_exceeds_enrolment",
            Self::NotEnrolled => "not_enrolled",
            Self::DidNotDropOut => "did_not_drop_out",
            Self::FeedbackAlreadyHeld => "feedback_already_held",
            Self::NoSessionHeld => "no_session_held",
            Self::NotRunByOrganisation => "not_organiser_or_partner",
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
            Self::NotAnActivityEvent { .. } => Labels::new(
                "Dit event hoort niet bij een groepsactiviteit.",
                "Cet événement n'appartient pas à une activité de groupe.",
                "This event does not belong to a group activity.",
            ),
            Self::AlreadyPlanned => Labels::new(
                "De activiteit is al gepland.",
                "L'activité est déjà planifiée.",
                "The activity was already planned.",
            ),
            Self::NotPlanned => Labels::new(
                "De activiteit is niet gepland.",
                "L'activité n'est pas planifiée.",
                "The activity was not planned.",
            ),
            Self::ActivityEnded => {
                Labels::new("De activiteit werd stopgezet.", "L'activité a été arrêtée.", "The activity was stopped.")
            }
            Self::AlreadyRegistered => Labels::new(
                "De kandidaat is al ingeschreven.",
                "Le candidat est déjà inscrit.",
                "The candidate is already registered.",
            ),
            Self::NotRegistered => Labels::new(
                "De kandidaat is niet ingeschreven.",
                "Le candidat n'est pas inscrit.",
                "The candidate is not registered.",
            ),
            Self::NotAdmitted => Labels::new(
                "De kandidaat werd bij de screening niet toegelaten.",
                "Le candidat n'a pas été admis lors de la sélection.",
                "The candidate was not admitted at screening.",
            ),
            Self::AlreadyEnrolled => Labels::new(
                "De deelnemer neemt al deel.",
                "Le participant est déjà admis au groupe.",
                "The participant is already enrolled.",
            ),
            Self::CapacityReached { .. } => {
                Labels::new("Alle plaatsen zijn bezet.", "Toutes les places sont prises.", "All places are taken.")
            }
            Self::SessionAlreadyHeld { .. } => Labels::new(
                "Deze sessie werd al geregistreerd.",
                "Cette séance a déjà été enregistrée.",
                "This session was already recorded.",
            ),
            Self::SessionBeforeStart { .. } => Labels::new(
                "De sessie ligt vóór de start van de activiteit.",
                "La séance précède le début de l'activité.",
                "The session lies before the start of the activity.",
            ),
            Self::AttendanceExceedsEnrolment { .. } => Labels::new(
                "De aanwezigheden tellen meer mensen dan er deelnemers zijn.",
                "Les présences comptent plus de personnes qu'il n'y a de participants.",
                "Attendance counts more people than are enrolled.",
            ),
            Self::NotEnrolled => Labels::new(
                "De persoon neemt niet deel.",
                "La personne ne participe pas.",
                "The person is not enrolled.",
            ),
            Self::DidNotDropOut => Labels::new(
                "De deelnemer haakte niet af.",
                "Le participant n'a pas décroché.",
                "The participant did not drop out.",
            ),
            Self::FeedbackAlreadyHeld => Labels::new(
                "Het feedbackgesprek werd al gevoerd.",
                "L'entretien de retour a déjà eu lieu.",
                "The feedback conversation was already held.",
            ),
            Self::NoSessionHeld => Labels::new(
                "Er werd nog geen sessie gehouden.",
                "Aucune séance n'a encore eu lieu.",
                "No session was held yet.",
            ),
            Self::NotRunByOrganisation => Labels::new(
                "Alleen de organisator of een partner van de activiteit registreert dit.",
                "Seul l'organisateur ou un partenaire de l'activité enregistre ceci.",
                "Only the activity's organiser or a partner records this.",
            ),
            Self::TooManyRecords { .. } => Labels::new(
                "De activiteit heeft al het hoogste aantal behoeftepeilingen of evaluaties (1000).",
                "L'activité a déjà le nombre maximal d'enquêtes de besoins ou d'évaluations (1000).",
                "The activity already holds the most needs surveys or evaluations (1000).",
            ),
        }
    }
}

/// The events of a command on an activity, checked with [`check`].
pub fn decide(state: &State, command: &Command, ctx: &Context) -> Result<Vec<EventData>, DomainError> {
    checked(state, ctx, vec![command.event()], check, evolve)
}

/// The rules an incoming event on an activity must meet, given its earlier events.
pub fn check(state: &State, event: &Envelope) -> Result<(), DomainError> {
    event.data.validate().map_err(DomainError::InvalidData)?;
    if event.data.spec().aggregate != AggregateKind::Activities || event.subject.kind() != AggregateKind::Activities {
        return Err(DomainError::NotAnActivityEvent { event_type: event.data.event_type().to_owned() });
    }
    match &event.data {
        // Before planning, a survey is anyone's groundwork; once planned, the activity is its
        // organiser's and partners' to record on.
        EventData::NeedsSurveyRecorded(_) => {
            if state.surveys >= MAX_RECORDS {
                return Err(DomainError::TooManyRecords { what: "needs surveys", max: MAX_RECORDS });
            }
            run_by_sender(state, event)
        }
        EventData::ActivityPlanned(_) => {
            if state.plan.is_some() {
                Err(DomainError::AlreadyPlanned)
            } else {
                Ok(())
            }
        }
        EventData::RegistrationReceived(d) => {
            running(state)?;
            match state.roster.get(&key(event, &d.client_ref)) {
                Some(_) => Err(DomainError::AlreadyRegistered),
                None => Ok(()),
            }
        }
        EventData::ParticipantScreened(d) => {
            planned(state)?;
            match participant(state, event, &d.client_ref)?.status {
                ParticipantStatus::Enrolled | ParticipantStatus::DroppedOut => Err(DomainError::AlreadyEnrolled),
                ParticipantStatus::Registered | ParticipantStatus::Admitted | ParticipantStatus::NotAdmitted => Ok(()),
            }
        }
        EventData::ParticipantEnrolled(d) => {
            let plan = running(state)?;
            match participant(state, event, &d.client_ref)?.status {
                ParticipantStatus::Registered | ParticipantStatus::NotAdmitted => Err(DomainError::NotAdmitted),
                ParticipantStatus::Enrolled => Err(DomainError::AlreadyEnrolled),
                // A dropout may come back: they were admitted.
                ParticipantStatus::Admitted | ParticipantStatus::DroppedOut => {
                    if state.enrolled >= plan.capacity {
                        Err(DomainError::CapacityReached { capacity: plan.capacity })
                    } else {
                        Ok(())
                    }
                }
            }
        }
        EventData::SessionHeld(d) => {
            let plan = running(state)?;
            run_by_sender(state, event)?;
            if state.sessions.contains(&d.session_number) {
                return Err(DomainError::SessionAlreadyHeld { session_number: d.session_number });
            }
            if d.held_on < plan.starts_on {
                return Err(DomainError::SessionBeforeStart { starts_on: plan.starts_on });
            }
            if u32::from(d.attended_count) + u32::from(d.absent_count) > u32::from(state.enrolled) {
                return Err(DomainError::AttendanceExceedsEnrolment { enrolled: state.enrolled });
            }
            Ok(())
        }
        EventData::ParticipantDroppedOut(d) => {
            planned(state)?;
            match participant(state, event, &d.client_ref)?.status {
                ParticipantStatus::Enrolled => Ok(()),
                _ => Err(DomainError::NotEnrolled),
            }
        }
        EventData::DropoutFeedbackHeld(d) => {
            planned(state)?;
            let p = participant(state, event, &d.client_ref)?;
            if p.status != ParticipantStatus::DroppedOut {
                return Err(DomainError::DidNotDropOut);
            }
            if p.feedback_held { Err(DomainError::FeedbackAlreadyHeld) } else { Ok(()) }
        }
        EventData::ActivityEvaluated(_) => {
            running(state)?;
            run_by_sender(state, event)?;
            if state.evaluations >= MAX_RECORDS {
                return Err(DomainError::TooManyRecords { what: "evaluations", max: MAX_RECORDS });
            }
            if state.sessions.is_empty() { Err(DomainError::NoSessionHeld) } else { Ok(()) }
        }
        other => Err(DomainError::NotAnActivityEvent { event_type: other.event_type().to_owned() }),
    }
}

/// A planned activity's sessions, evaluation and surveys come from its organiser or a partner.
fn run_by_sender(state: &State, event: &Envelope) -> Result<(), DomainError> {
    match &state.plan {
        Some(plan) if !plan.is_run_by(&event.org) => Err(DomainError::NotRunByOrganisation),
        _ => Ok(()),
    }
}

/// Folds an event of an activity in; events of other aggregates leave the state as it is.
pub fn evolve(mut state: State, event: &Envelope) -> State {
    let present = event.personal == PersonalState::Present;
    match &event.data {
        EventData::NeedsSurveyRecorded(_) => state.surveys += 1,
        EventData::ActivityPlanned(d) => {
            state.plan = Some(Plan {
                organiser: event.org.clone(),
                kind: d.kind,
                capacity: d.capacity,
                starts_on: d.starts_on,
                partners: d.partners.clone(),
            });
        }
        EventData::RegistrationReceived(d) if present => {
            state.roster.insert(
                key(event, &d.client_ref),
                Participant { status: ParticipantStatus::Registered, feedback_held: false },
            );
        }
        EventData::ParticipantScreened(d) if present => {
            let status = if d.admitted { ParticipantStatus::Admitted } else { ParticipantStatus::NotAdmitted };
            set_status(&mut state, event, &d.client_ref, status);
        }
        EventData::ParticipantEnrolled(d) => {
            let was_enrolled = present
                && state.roster.get(&key(event, &d.client_ref)).map(|p| p.status) == Some(ParticipantStatus::Enrolled);
            if !was_enrolled {
                state.enrolled = state.enrolled.saturating_add(1);
            }
            if present {
                // A dropout who comes back starts afresh: a new dropout needs a new feedback.
                state.roster.insert(
                    key(event, &d.client_ref),
                    Participant { status: ParticipantStatus::Enrolled, feedback_held: false },
                );
            }
        }
        EventData::ParticipantDroppedOut(d) => {
            let was_enrolled = !present
                || state.roster.get(&key(event, &d.client_ref)).map(|p| p.status) == Some(ParticipantStatus::Enrolled);
            if was_enrolled {
                state.enrolled = state.enrolled.saturating_sub(1);
            }
            if present {
                set_status(&mut state, event, &d.client_ref, ParticipantStatus::DroppedOut);
            }
        }
        EventData::DropoutFeedbackHeld(d) if present => {
            if let Some(p) = state.roster.get_mut(&key(event, &d.client_ref)) {
                p.feedback_held = true;
            }
        }
        EventData::SessionHeld(d) => {
            state.sessions.insert(d.session_number);
        }
        EventData::ActivityEvaluated(d) => {
            state.evaluations = state.evaluations.saturating_add(1);
            if d.outcome == EvaluationOutcome::Stop {
                state.ended = true;
            }
        }
        _ => {}
    }
    state
}

fn key(event: &Envelope, client_ref: &str) -> ParticipantKey {
    ParticipantKey { org: event.org.clone(), client_ref: client_ref.to_owned() }
}

fn set_status(state: &mut State, event: &Envelope, client_ref: &str, status: ParticipantStatus) {
    state
        .roster
        .entry(key(event, client_ref))
        .and_modify(|p| p.status = status)
        .or_insert(Participant { status, feedback_held: false });
}

fn planned(state: &State) -> Result<&Plan, DomainError> {
    state.plan.as_ref().ok_or(DomainError::NotPlanned)
}

/// Planned and not stopped.
fn running(state: &State) -> Result<&Plan, DomainError> {
    let plan = planned(state)?;
    if state.ended { Err(DomainError::ActivityEnded) } else { Ok(plan) }
}

fn participant<'a>(state: &'a State, event: &Envelope, client_ref: &str) -> Result<&'a Participant, DomainError> {
    state.roster.get(&key(event, client_ref)).ok_or(DomainError::NotRegistered)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::aggregates::testing::{self, Aggregate, date, given};
    use crate::events::{DropoutReason, EventPayload, ScreeningRefusalReason};
    use proptest::prelude::*;

    struct Activity;
    impl Aggregate for Activity {
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

    const ACT: &str = "activities/a-1";

    fn ev(org: &str, day: (u32, u32), data: impl Into<EventData>) -> Envelope {
        testing::event(org, ACT, day, data)
    }

    fn on(org: &str, day: (u32, u32)) -> Context {
        testing::ctx(org, ACT, day)
    }

    fn planned_with(capacity: u16) -> Envelope {
        ev("coordination", (9, 1), ActivityPlanned { capacity, ..ActivityPlanned::example() })
    }

    fn registered(org: &str, r: &str) -> Envelope {
        ev(org, (9, 2), RegistrationReceived { client_ref: r.into() })
    }

    fn screened(org: &str, r: &str, admitted: bool) -> Envelope {
        let refusal_reason = if admitted { None } else { Some(ScreeningRefusalReason::LanguageLevel) };
        ev(org, (9, 3), ParticipantScreened { client_ref: r.into(), admitted, refusal_reason })
    }

    fn enrolled(org: &str, r: &str) -> Envelope {
        ev(org, (9, 4), ParticipantEnrolled { client_ref: r.into() })
    }

    fn dropped(org: &str, r: &str) -> Envelope {
        ev(org, (10, 1), ParticipantDroppedOut { client_ref: r.into(), reason: DropoutReason::LostInterest })
    }

    fn enrol(r: &str) -> Command {
        Command::Enrol(ParticipantEnrolled { client_ref: r.into() })
    }

    fn session(n: u16, attended: u16, absent: u16) -> SessionHeld {
        SessionHeld { session_number: n, held_on: date(9, 15), attended_count: attended, absent_count: absent }
    }

    #[test]
    fn an_admitted_candidate_is_enrolled() {
        let state = given::<Activity>([planned_with(2), registered("apo", "p1"), screened("apo", "p1", true)])
            .when(&on("apo", (9, 4)), enrol("p1"))
            .then(vec![ParticipantEnrolled { client_ref: "p1".into() }.into()]);
        assert_eq!(state.enrolled(), 1);
    }

    #[test]
    fn enrolling_a_candidate_not_admitted_at_screening_is_refused() {
        given::<Activity>([planned_with(2), registered("apo", "p1"), screened("apo", "p1", false)])
            .when(&on("apo", (9, 4)), enrol("p1"))
            .then_error(DomainError::NotAdmitted);
    }

    #[test]
    fn enrolling_a_candidate_not_yet_screened_is_refused() {
        given::<Activity>([planned_with(2), registered("apo", "p1")])
            .when(&on("apo", (9, 4)), enrol("p1"))
            .then_error(DomainError::NotAdmitted);
    }

    #[test]
    fn enrolling_beyond_capacity_is_refused_until_a_dropout_frees_a_place() {
        let history = vec![
            planned_with(1),
            registered("apo", "p1"),
            screened("apo", "p1", true),
            enrolled("apo", "p1"),
            registered("apo", "p2"),
            screened("apo", "p2", true),
        ];
        given::<Activity>(history.clone())
            .when(&on("apo", (9, 5)), enrol("p2"))
            .then_error(DomainError::CapacityReached { capacity: 1 });
        let mut freed = history;
        freed.push(dropped("apo", "p1"));
        given::<Activity>(freed)
            .when(&on("apo", (10, 2)), enrol("p2"))
            .then(vec![ParticipantEnrolled { client_ref: "p2".into() }.into()]);
    }

    #[test]
    fn the_same_reference_from_two_organisations_names_two_participants() {
        let g = given::<Activity>([planned_with(5), registered("apo", "p1"), screened("apo", "p1", true)]);
        g.when(&on("dsr", (9, 4)), enrol("p1")).then_error(DomainError::NotRegistered);
        g.when(&on("dsr", (9, 4)), Command::Register(RegistrationReceived { client_ref: "p1".into() }))
            .then(vec![RegistrationReceived { client_ref: "p1".into() }.into()]);
    }

    #[test]
    fn enrolling_or_screening_someone_already_enrolled_is_refused() {
        let g = given::<Activity>([
            planned_with(3),
            registered("apo", "p1"),
            screened("apo", "p1", true),
            enrolled("apo", "p1"),
        ]);
        g.when(&on("apo", (9, 5)), enrol("p1")).then_error(DomainError::AlreadyEnrolled);
        g.when(
            &on("apo", (9, 5)),
            Command::Screen(ParticipantScreened { client_ref: "p1".into(), admitted: true, refusal_reason: None }),
        )
        .then_error(DomainError::AlreadyEnrolled);
    }

    #[test]
    fn a_screening_refusal_without_a_reason_is_refused() {
        given::<Activity>([planned_with(3), registered("apo", "p1")])
            .when(
                &on("apo", (9, 3)),
                Command::Screen(ParticipantScreened { client_ref: "p1".into(), admitted: false, refusal_reason: None }),
            )
            .then_error(DomainError::InvalidData(DataError::at(
                "refusal_reason",
                "required when the candidate is not admitted",
            )));
    }

    #[test]
    fn an_event_of_another_aggregate_is_refused() {
        given::<Activity>([planned_with(3)])
            .when_event(testing::event("apo", "signals/s-1", (9, 3), crate::events::BottleneckSignalled::example()))
            .then_error(DomainError::NotAnActivityEvent { event_type: "relais.bottleneck.signalled".into() });
    }

    #[test]
    fn registering_twice_or_before_planning_is_refused() {
        given::<Activity>([])
            .when(&on("apo", (9, 2)), Command::Register(RegistrationReceived::example()))
            .then_error(DomainError::NotPlanned);
        given::<Activity>([planned_with(2), registered("apo", "cl-2025-0142")])
            .when(&on("apo", (9, 2)), Command::Register(RegistrationReceived::example()))
            .then_error(DomainError::AlreadyRegistered);
    }

    #[test]
    fn an_activity_is_planned_once() {
        given::<Activity>([planned_with(2)])
            .when(&on("coordination", (9, 1)), Command::Plan(ActivityPlanned::example()))
            .then_error(DomainError::AlreadyPlanned);
    }

    #[test]
    fn an_activity_holds_at_most_a_thousand_surveys_and_a_thousand_evaluations() {
        let surveys = (0..MAX_RECORDS).map(|_| ev("coordination", (6, 1), NeedsSurveyRecorded::example()));
        given::<Activity>(surveys)
            .when(&on("coordination", (6, 2)), Command::RecordNeedsSurvey(NeedsSurveyRecorded::example()))
            .then_error(DomainError::TooManyRecords { what: "needs surveys", max: MAX_RECORDS });
        let evaluated = |n: u32| {
            let mut history = vec![planned_with(3), ev("coordination", (9, 15), session(1, 0, 0))];
            history.extend((0..n).map(|_| ev("coordination", (12, 1), ActivityEvaluated::example())));
            given::<Activity>(history)
        };
        // The thousandth is taken, the thousand-and-first refused.
        evaluated(MAX_RECORDS - 1)
            .when(&on("coordination", (12, 2)), Command::Evaluate(ActivityEvaluated::example()))
            .then(vec![ActivityEvaluated::example().into()]);
        evaluated(MAX_RECORDS)
            .when(&on("coordination", (12, 2)), Command::Evaluate(ActivityEvaluated::example()))
            .then_error(DomainError::TooManyRecords { what: "evaluations", max: MAX_RECORDS });
    }

    #[test]
    fn a_needs_survey_may_come_before_the_plan() {
        let state = given::<Activity>([])
            .when(&on("coordination", (6, 1)), Command::RecordNeedsSurvey(NeedsSurveyRecorded::example()))
            .then(vec![NeedsSurveyRecorded::example().into()]);
        assert_eq!(state.surveys(), 1);
    }

    #[test]
    fn a_dropout_feedback_for_someone_who_did_not_drop_out_is_refused() {
        given::<Activity>([
            planned_with(2),
            registered("apo", "p1"),
            screened("apo", "p1", true),
            enrolled("apo", "p1"),
        ])
        .when(
            &on("apo", (10, 2)),
            Command::HoldDropoutFeedback(DropoutFeedbackHeld { client_ref: "p1".into(), note: None }),
        )
        .then_error(DomainError::DidNotDropOut);
    }

    #[test]
    fn a_dropout_feedback_is_held_once_with_a_dropout() {
        let feedback = DropoutFeedbackHeld { client_ref: "p1".into(), note: None };
        let history = [
            planned_with(2),
            registered("apo", "p1"),
            screened("apo", "p1", true),
            enrolled("apo", "p1"),
            dropped("apo", "p1"),
        ];
        let state = given::<Activity>(history.clone())
            .when(&on("apo", (10, 2)), Command::HoldDropoutFeedback(feedback.clone()))
            .then(vec![feedback.clone().into()]);
        assert!(state.roster().values().all(|p| p.feedback_held));
        let mut twice = history.to_vec();
        twice.push(ev("apo", (10, 2), feedback.clone()));
        given::<Activity>(twice)
            .when(&on("apo", (10, 3)), Command::HoldDropoutFeedback(feedback))
            .then_error(DomainError::FeedbackAlreadyHeld);
    }

    #[test]
    fn a_dropout_of_someone_not_enrolled_is_refused() {
        given::<Activity>([planned_with(2), registered("apo", "p1"), screened("apo", "p1", true)])
            .when(
                &on("apo", (10, 1)),
                Command::RecordDropout(ParticipantDroppedOut { client_ref: "p1".into(), reason: DropoutReason::Other }),
            )
            .then_error(DomainError::NotEnrolled);
    }

    #[test]
    fn sessions_have_distinct_numbers_start_on_time_and_count_at_most_the_enrolled() {
        let g = given::<Activity>([
            planned_with(3),
            registered("apo", "p1"),
            screened("apo", "p1", true),
            enrolled("apo", "p1"),
            ev("coordination", (9, 15), session(1, 1, 0)),
        ]);
        g.when(&on("coordination", (9, 22)), Command::HoldSession(session(1, 1, 0)))
            .then_error(DomainError::SessionAlreadyHeld { session_number: 1 });
        g.when(&on("coordination", (9, 22)), Command::HoldSession(session(2, 1, 1)))
            .then_error(DomainError::AttendanceExceedsEnrolment { enrolled: 1 });
        g.when(
            &on("coordination", (9, 22)),
            Command::HoldSession(SessionHeld { held_on: date(9, 1), ..session(2, 1, 0) }),
        )
        .then_error(DomainError::SessionBeforeStart { starts_on: date(9, 15) });
        g.when(&on("coordination", (9, 22)), Command::HoldSession(session(2, 0, 1)))
            .then(vec![session(2, 0, 1).into()]);
    }

    #[test]
    fn only_the_organiser_or_a_partner_holds_sessions_evaluates_and_surveys_a_planned_activity() {
        // Planned by the coordinators with caw-brussel as partner (the example's).
        let g = given::<Activity>([planned_with(2), ev("coordination", (9, 15), session(1, 0, 0))]);
        g.when(&on("dsr", (9, 22)), Command::HoldSession(session(2, 0, 0)))
            .then_error(DomainError::NotRunByOrganisation);
        g.when(&on("dsr", (12, 1)), Command::Evaluate(ActivityEvaluated::example()))
            .then_error(DomainError::NotRunByOrganisation);
        g.when(&on("dsr", (9, 22)), Command::RecordNeedsSurvey(NeedsSurveyRecorded::example()))
            .then_error(DomainError::NotRunByOrganisation);
        g.when(&on("caw-brussel", (9, 22)), Command::HoldSession(session(2, 0, 0))).then(vec![session(2, 0, 0).into()]);
        g.when(&on("coordination", (12, 1)), Command::Evaluate(ActivityEvaluated::example()))
            .then(vec![ActivityEvaluated::example().into()]);
        // Before it is planned, a needs survey is anyone's groundwork.
        given::<Activity>([])
            .when(&on("dsr", (8, 1)), Command::RecordNeedsSurvey(NeedsSurveyRecorded::example()))
            .then(vec![NeedsSurveyRecorded::example().into()]);
        assert_eq!(DomainError::NotRunByOrganisation.code(), "not_organiser_or_partner");
    }

    #[test]
    fn an_evaluation_needs_a_session_and_a_stop_ends_the_activity() {
        given::<Activity>([planned_with(2)])
            .when(&on("coordination", (12, 1)), Command::Evaluate(ActivityEvaluated::example()))
            .then_error(DomainError::NoSessionHeld);
        let stop = ActivityEvaluated { outcome: EvaluationOutcome::Stop, ..ActivityEvaluated::example() };
        let g = given::<Activity>([
            planned_with(2),
            ev("coordination", (9, 15), session(1, 0, 0)),
            ev("coordination", (12, 1), stop),
        ]);
        assert!(g.state().ended());
        g.when(&on("apo", (12, 2)), Command::Register(RegistrationReceived::example()))
            .then_error(DomainError::ActivityEnded);
    }

    #[test]
    fn erased_enrolments_still_count_against_the_capacity() {
        let mut erased = enrolled("apo", "p1");
        erased.personal = PersonalState::Erased;
        if let EventData::ParticipantEnrolled(d) = &mut erased.data {
            d.client_ref.clear();
        }
        let state = evolve(
            given::<Activity>([planned_with(1), registered("apo", "p1"), screened("apo", "p1", true)]).state().clone(),
            &erased,
        );
        assert_eq!(state.enrolled(), 1);
    }

    fn command_strategy() -> impl Strategy<Value = Command> {
        let r = prop_oneof![Just("p1"), Just("p2"), Just("p3"), Just("p4")].prop_map(String::from);
        prop_oneof![
            (1u16..4).prop_map(|capacity| Command::Plan(ActivityPlanned { capacity, ..ActivityPlanned::example() })),
            r.clone().prop_map(|client_ref| Command::Register(RegistrationReceived { client_ref })),
            (r.clone(), any::<bool>()).prop_map(|(client_ref, admitted)| Command::Screen(ParticipantScreened {
                client_ref,
                admitted,
                refusal_reason: if admitted { None } else { Some(ScreeningRefusalReason::Other) },
            })),
            r.clone().prop_map(|client_ref| Command::Enrol(ParticipantEnrolled { client_ref })),
            r.clone().prop_map(|client_ref| Command::RecordDropout(ParticipantDroppedOut {
                client_ref,
                reason: DropoutReason::Health
            })),
            r.prop_map(|client_ref| Command::HoldDropoutFeedback(DropoutFeedbackHeld { client_ref, note: None })),
            (1u16..5, 0u16..3, 0u16..3).prop_map(|(n, a, b)| Command::HoldSession(session(n, a, b))),
            Just(Command::Evaluate(ActivityEvaluated::example())),
            Just(Command::RecordNeedsSurvey(NeedsSurveyRecorded::example())),
        ]
    }

    proptest! {
        #[test]
        fn replaying_decided_events_gives_the_same_state_and_enrolment_never_exceeds_capacity(
            steps in proptest::collection::vec((command_strategy(), prop_oneof![Just("apo"), Just("dsr")]), 0..60),
        ) {
            let mut state = State::default();
            let mut log: Vec<Envelope> = Vec::new();
            for (i, (command, org)) in steps.into_iter().enumerate() {
                let ctx = on(org, (9, 15 + (i as u32 % 15)));
                if let Ok(events) = decide(&state, &command, &ctx) {
                    for data in events {
                        let e = ctx.envelope(uuid::Uuid::from_u128(i as u128), data);
                        state = evolve(state, &e);
                        log.push(e);
                    }
                }
                let on_roster = state.roster().values().filter(|p| p.status == ParticipantStatus::Enrolled).count();
                prop_assert_eq!(usize::from(state.enrolled()), on_roster);
                if let Some(plan) = state.plan() {
                    prop_assert!(state.enrolled() <= plan.capacity);
                }
                prop_assert!(state.roster().values().all(|p| !p.feedback_held || p.status == ParticipantStatus::DroppedOut));
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
