//! A closed-loop referral (`referrals/<id>`): made by a sender, to another organisation (which
//! receives, accepts or declines, makes first contact and completes it) or to an outside
//! service (whose side the sender records).
//!
//! **Consent.** Sharing with another organisation needs the client's consent: a referral made
//! to an organisation is refused unless the sender's case (`cases/<case_id>`, named by the
//! event's `case_id`) holds an active, unexpired consent `share_with_organisation` for exactly
//! that organisation on the Brussels date of the event. The consent lives in another stream, so
//! [`check`] and [`decide`] take it as input: the caller folds the sender's case with
//! [`super::case::evolve`] and passes [`super::case::State::consent`]. [`sender_case`] says
//! which case to fold; for every other event the input is not read and
//! `&consent::State::default()` will do.
//!
//! Who may record what: see [`crate::events`] (referral module). Anyone else is refused, and an
//! organisation that is neither sender nor receiver learns nothing of the referral's state
//! from a refusal: it is refused as for a referral never made (`referral_not_made`). Referral
//! ids are shared by all organisations, so a `referral.made` with an id already taken is
//! refused (`referral_already_made`), which tells its sender the id is taken: ids should be
//! unguessable (UUIDs).

use super::consent::{self, ConsentStatus};
use super::{Context, brussels_date, checked};
use crate::envelope::{Envelope, PersonalState};
use crate::events::{
    ConsentScope, DataError, EventData, ReferralAccepted, ReferralCancelled, ReferralCompleted, ReferralDeclined,
    ReferralDestination, ReferralExpired, ReferralFirstContactMade, ReferralMade, ReferralReceived,
};
use crate::ids::{AggregateKind, AggregateRef, OrgId};
use crate::labels::Labels;
use chrono::NaiveDate;

/// Where a referral stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReferralStatus {
    /// No event yet.
    #[default]
    NotMade,
    /// Made, no answer yet.
    Made,
    /// Received by the receiving organisation.
    Received,
    /// Accepted by the receiving organisation.
    Accepted,
    /// The client and the help referred to met.
    FirstContactMade,
    /// Closed with an outcome.
    Completed,
    /// Declined by the receiving organisation.
    Declined,
    /// Cancelled by the sender.
    Cancelled,
    /// Closed without answer.
    Expired,
}

impl ReferralStatus {
    /// True once the loop is closed (completed, declined, cancelled or expired).
    pub fn is_closed(self) -> bool {
        matches!(self, Self::Completed | Self::Declined | Self::Cancelled | Self::Expired)
    }
}

/// The state of one referral, folded from its events. `Default`: not made.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    status: ReferralStatus,
    sender: Option<OrgId>,
    destination: Option<ReferralDestination>,
    case_id: Option<String>,
    ever_accepted: bool,
    ever_declined: bool,
}

impl State {
    /// Where the referral stands.
    pub fn status(&self) -> ReferralStatus {
        self.status
    }
    /// The organisation that made it.
    pub fn sender(&self) -> Option<&OrgId> {
        self.sender.as_ref()
    }
    /// Where it goes.
    pub fn destination(&self) -> Option<&ReferralDestination> {
        self.destination.as_ref()
    }
    /// The receiving organisation, for a referral to one of the services.
    pub fn receiver(&self) -> Option<&OrgId> {
        self.destination.as_ref().and_then(ReferralDestination::organisation)
    }
    /// The sender's case id.
    pub fn case_id(&self) -> Option<&str> {
        self.case_id.as_deref()
    }
    /// True if the referral was ever accepted.
    pub fn ever_accepted(&self) -> bool {
        self.ever_accepted
    }
    /// True if the referral was ever declined.
    pub fn ever_declined(&self) -> bool {
        self.ever_declined
    }
}

/// What the sender or the receiver does with a referral. Each command carries the data of the
/// event it produces.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Make the referral (sender).
    Make(ReferralMade),
    /// Acknowledge receipt (receiver).
    Receive(ReferralReceived),
    /// Accept (receiver).
    Accept(ReferralAccepted),
    /// Decline (receiver).
    Decline(ReferralDeclined),
    /// Record the first contact (receiver; the sender for an outside service).
    RecordFirstContact(ReferralFirstContactMade),
    /// Close the loop with an outcome (receiver; the sender for an outside service).
    Complete(ReferralCompleted),
    /// Cancel (sender).
    Cancel(ReferralCancelled),
    /// Close without answer (sender).
    Expire(ReferralExpired),
}

impl Command {
    fn event(&self) -> EventData {
        match self {
            Self::Make(d) => d.clone().into(),
            Self::Receive(d) => d.clone().into(),
            Self::Accept(d) => d.clone().into(),
            Self::Decline(d) => d.clone().into(),
            Self::RecordFirstContact(d) => d.clone().into(),
            Self::Complete(d) => d.clone().into(),
            Self::Cancel(d) => d.clone().into(),
            Self::Expire(d) => d.clone().into(),
        }
    }
}

/// Why an event on a referral was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The data breaks a rule of its own type.
    #[error("invalid data: {0}")]
    InvalidData(DataError),
    /// The event does not belong to a referral.
    #[error("{event_type} is not a referral event")]
    NotAReferralEvent {
        /// The event type.
        event_type: String,
    },
    /// The referral was already made.
    #[error("the referral was already made")]
    AlreadyMade,
    /// The referral was never made.
    #[error("no referral was made")]
    NotMade,
    /// A referral to the sender itself.
    #[error("a referral goes to another organisation than the sender")]
    ReferralToOwnOrganisation,
    /// The referral is about another client than the sender's case (whose consent it needs).
    #[error("the referral is about another client than its case")]
    ClientMismatch,
    /// No consent to share with the receiving organisation was given.
    #[error("the client did not consent to sharing with {organisation}")]
    NoConsentToShare {
        /// The receiving organisation.
        organisation: OrgId,
    },
    /// The consent to share with the receiving organisation was withdrawn.
    #[error("the client withdrew consent to sharing with {organisation}")]
    ConsentWithdrawn {
        /// The receiving organisation.
        organisation: OrgId,
    },
    /// The consent to share with the receiving organisation expired.
    #[error("the consent to sharing with {organisation} expired on {expired_on}")]
    ConsentExpired {
        /// The receiving organisation.
        organisation: OrgId,
        /// The last day it held.
        expired_on: NaiveDate,
    },
    /// Only the receiving organisation records this.
    #[error("only the receiving organisation records this")]
    NotTheReceiver,
    /// Only the sender records this.
    #[error("only the sending organisation records this")]
    NotTheSender,
    /// The referral goes to an outside service, which does not record in Relais.
    #[error("the referral goes to an outside service: the sender records its progress")]
    NotAddressedToAnOrganisation,
    /// The referral was already received.
    #[error("the referral was already received")]
    AlreadyReceived,
    /// The referral was already accepted.
    #[error("the referral was already accepted")]
    AlreadyAccepted,
    /// The action needs an accepted referral.
    #[error("the referral was not accepted")]
    NotAccepted,
    /// The first contact was already recorded.
    #[error("the first contact was already recorded")]
    FirstContactAlreadyMade,
    /// The loop is closed.
    #[error("the referral is closed ({status:?})")]
    AlreadyClosed {
        /// How it was closed.
        status: ReferralStatus,
    },
}

impl DomainError {
    /// A stable code for the refusal, for programs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidData(_) => "invalid_data",
            Self::NotAReferralEvent { .. } => "not_a_referral_event",
            Self::AlreadyMade => "referral_already_made",
            Self::NotMade => "referral_not_made",
            Self::ReferralToOwnOrganisation => "referral_to_own_organisation",
            Self::ClientMismatch => "client_mismatch",
            Self::NoConsentToShare { .. } => "no_consent_to_share",
            Self::ConsentWithdrawn { .. } => "consent_to_share_withdrawn",
            Self::ConsentExpired { .. } => "consent_to_share_expired",
            Self::NotTheReceiver => "not_the_receiver",
            Self::NotTheSender => "not_the_sender",
            Self::NotAddressedToAnOrganisation => "not_addressed_to_an_organisation",
            Self::AlreadyReceived => "referral_already_received",
            Self::AlreadyAccepted => "referral_already_accepted",
            Self::NotAccepted => "referral_not_accepted",
            Self::FirstContactAlreadyMade => "first_contact_already_made",
            Self::AlreadyClosed { .. } => "referral_closed",
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
            Self::NotAReferralEvent { .. } => Labels::new(
                "Dit event hoort niet bij een doorverwijzing.",
                "Cet événement n'appartient pas à une orientation.",
                "This event does not belong to a referral.",
            ),
            Self::AlreadyMade => Labels::new(
                "Deze doorverwijzing bestaat al.",
                "Cette orientation existe déjà.",
                "This referral already exists.",
            ),
            Self::NotMade => Labels::new(
                "Deze doorverwijzing bestaat niet.",
                "Cette orientation n'existe pas.",
                "This referral does not exist.",
            ),
            Self::ReferralToOwnOrganisation => Labels::new(
                "Een doorverwijzing gaat naar een andere organisatie.",
                "Une orientation vise une autre organisation.",
                "A referral goes to another organisation.",
            ),
            Self::ClientMismatch => Labels::new(
                "De doorverwijzing gaat over een andere cliënt dan het dossier.",
                "L'orientation concerne un autre client que le dossier.",
                "The referral is about another client than its case.",
            ),
            Self::NoConsentToShare { .. } => Labels::new(
                "De cliënt gaf geen toestemming om met deze organisatie te delen.",
                "Le client n'a pas consenti au partage avec cette organisation.",
                "The client did not consent to sharing with this organisation.",
            ),
            Self::ConsentWithdrawn { .. } => Labels::new(
                "De cliënt trok de toestemming om met deze organisatie te delen in.",
                "Le client a retiré son consentement au partage avec cette organisation.",
                "The client withdrew consent to sharing with this organisation.",
            ),
            Self::ConsentExpired { .. } => Labels::new(
                "De toestemming om met deze organisatie te delen is verlopen.",
                "Le consentement au partage avec cette organisation a expiré.",
                "The consent to sharing with this organisation expired.",
            ),
            Self::NotTheReceiver => Labels::new(
                "Alleen de ontvangende organisatie registreert dit.",
                "Seule l'organisation destinataire enregistre ceci.",
                "Only the receiving organisation records this.",
            ),
            Self::NotTheSender => Labels::new(
                "Alleen de verwijzende organisatie registreert dit.",
                "Seule l'organisation qui oriente enregistre ceci.",
                "Only the sending organisation records this.",
            ),
            Self::NotAddressedToAnOrganisation => Labels::new(
                "De doorverwijzing gaat naar een externe dienst; de verwijzer registreert het verloop.",
                "L'orientation vise un service externe ; l'organisation qui oriente en enregistre le suivi.",
                "The referral goes to an outside service; the sender records its progress.",
            ),
            Self::AlreadyReceived => Labels::new(
                "De doorverwijzing werd al ontvangen.",
                "L'orientation a déjà été reçue.",
                "The referral was already received.",
            ),
            Self::AlreadyAccepted => Labels::new(
                "De doorverwijzing werd al aanvaard.",
                "L'orientation a déjà été acceptée.",
                "The referral was already accepted.",
            ),
            Self::NotAccepted => Labels::new(
                "De doorverwijzing werd niet aanvaard.",
                "L'orientation n'a pas été acceptée.",
                "The referral was not accepted.",
            ),
            Self::FirstContactAlreadyMade => Labels::new(
                "Het eerste contact werd al geregistreerd.",
                "Le premier contact a déjà été enregistré.",
                "The first contact was already recorded.",
            ),
            Self::AlreadyClosed { .. } => Labels::new(
                "De doorverwijzing is afgesloten.",
                "L'orientation est clôturée.",
                "The referral is closed.",
            ),
        }
    }
}

/// The case whose consent [`check`] needs for this event: `cases/<case_id>` of a referral made
/// to another organisation (the sender's case, in the sender's stream); `None` for every other
/// event.
pub fn sender_case(event: &Envelope) -> Option<AggregateRef> {
    match &event.data {
        EventData::ReferralMade(d) if d.destination.organisation().is_some() => {
            AggregateRef::new(AggregateKind::Cases, &d.case_id).ok()
        }
        _ => None,
    }
}

/// The events of a command on a referral, checked with [`check`]. `sender_consent` is the
/// consent state of the sender's case (see the module documentation); only `Make` to an
/// organisation reads it.
pub fn decide(
    state: &State,
    command: &Command,
    ctx: &Context,
    sender_consent: &consent::State,
) -> Result<Vec<EventData>, DomainError> {
    checked(state, ctx, vec![command.event()], |s, e| check(s, e, sender_consent), evolve)
}

/// The rules an incoming event on a referral must meet, given the referral's earlier events
/// and, for a referral made to an organisation, the consent state of the sender's case
/// ([`sender_case`]); for other events `sender_consent` is not read.
pub fn check(state: &State, event: &Envelope, sender_consent: &consent::State) -> Result<(), DomainError> {
    event.data.validate().map_err(DomainError::InvalidData)?;
    if event.data.spec().aggregate != AggregateKind::Referrals || event.subject.kind() != AggregateKind::Referrals {
        return Err(DomainError::NotAReferralEvent { event_type: event.data.event_type().to_owned() });
    }
    if let EventData::ReferralMade(d) = &event.data {
        return check_made(state, event, d, sender_consent);
    }
    let (Some(sender), Some(destination)) = (&state.sender, &state.destination) else {
        return Err(DomainError::NotMade);
    };
    let by_sender = *sender == event.org;
    let receiver = destination.organisation();
    let by_receiver = receiver == Some(&event.org);
    // Someone who is neither party learns nothing of the referral, not even that it exists:
    // the same refusal as for a referral never made.
    if !by_sender && !by_receiver {
        return Err(DomainError::NotMade);
    }
    let status = state.status;
    let closed = || {
        if status.is_closed() { Err(DomainError::AlreadyClosed { status }) } else { Ok(()) }
    };
    match &event.data {
        EventData::ReferralReceived(_) => {
            receiver_only(receiver, by_receiver)?;
            closed()?;
            match status {
                ReferralStatus::Made => Ok(()),
                _ => Err(DomainError::AlreadyReceived),
            }
        }
        EventData::ReferralAccepted(_) => {
            receiver_only(receiver, by_receiver)?;
            if state.ever_accepted {
                return Err(DomainError::AlreadyAccepted);
            }
            closed()
        }
        EventData::ReferralDeclined(_) => {
            receiver_only(receiver, by_receiver)?;
            if state.ever_accepted {
                return Err(DomainError::AlreadyAccepted);
            }
            closed()
        }
        EventData::ReferralFirstContactMade(_) => {
            recorder_of_progress(receiver, by_sender, by_receiver)?;
            closed()?;
            match (status, receiver) {
                (ReferralStatus::FirstContactMade, _) => Err(DomainError::FirstContactAlreadyMade),
                (ReferralStatus::Accepted, Some(_)) | (ReferralStatus::Made, None) => Ok(()),
                _ => Err(DomainError::NotAccepted),
            }
        }
        EventData::ReferralCompleted(_) => {
            recorder_of_progress(receiver, by_sender, by_receiver)?;
            closed()?;
            match (status, receiver) {
                (ReferralStatus::Accepted | ReferralStatus::FirstContactMade, Some(_))
                | (ReferralStatus::Made | ReferralStatus::FirstContactMade, None) => Ok(()),
                _ => Err(DomainError::NotAccepted),
            }
        }
        EventData::ReferralCancelled(_) => {
            if !by_sender {
                return Err(DomainError::NotTheSender);
            }
            closed()
        }
        EventData::ReferralExpired(_) => {
            if !by_sender {
                return Err(DomainError::NotTheSender);
            }
            closed()?;
            match status {
                ReferralStatus::Made | ReferralStatus::Received => Ok(()),
                ReferralStatus::FirstContactMade => Err(DomainError::FirstContactAlreadyMade),
                _ => Err(DomainError::AlreadyAccepted),
            }
        }
        other => Err(DomainError::NotAReferralEvent { event_type: other.event_type().to_owned() }),
    }
}

fn check_made(
    state: &State,
    event: &Envelope,
    made: &ReferralMade,
    sender_consent: &consent::State,
) -> Result<(), DomainError> {
    if state.status != ReferralStatus::NotMade {
        return Err(DomainError::AlreadyMade);
    }
    // The case's consent is one client's: it carries no one else's data.
    if event.personal == PersonalState::Present
        && !made.client_ref.is_empty()
        && !sender_consent.is_of(&made.client_ref)
    {
        return Err(DomainError::ClientMismatch);
    }
    let ReferralDestination::Organisation(organisation) = &made.destination else {
        // Nothing is shared with another organisation: the client is given an address.
        return Ok(());
    };
    if *organisation == event.org {
        return Err(DomainError::ReferralToOwnOrganisation);
    }
    let scope = ConsentScope::ShareWithOrganisation(organisation.clone());
    let organisation = organisation.clone();
    match sender_consent.status(&scope, brussels_date(event.occurred_at)) {
        ConsentStatus::Active { .. } => Ok(()),
        ConsentStatus::NeverGiven => Err(DomainError::NoConsentToShare { organisation }),
        ConsentStatus::Withdrawn => Err(DomainError::ConsentWithdrawn { organisation }),
        ConsentStatus::Expired { expired_on } => Err(DomainError::ConsentExpired { organisation, expired_on }),
    }
}

/// Received, accepted and declined come from the receiving organisation, and only exist for a
/// referral to one.
fn receiver_only(receiver: Option<&OrgId>, by_receiver: bool) -> Result<(), DomainError> {
    match receiver {
        None => Err(DomainError::NotAddressedToAnOrganisation),
        Some(_) if by_receiver => Ok(()),
        Some(_) => Err(DomainError::NotTheReceiver),
    }
}

/// First contact and completion come from the receiving organisation, or from the sender for
/// an outside service.
fn recorder_of_progress(receiver: Option<&OrgId>, by_sender: bool, by_receiver: bool) -> Result<(), DomainError> {
    match receiver {
        Some(_) if by_receiver => Ok(()),
        Some(_) => Err(DomainError::NotTheReceiver),
        None if by_sender => Ok(()),
        None => Err(DomainError::NotTheSender),
    }
}

/// Folds an event of a referral in; events of other aggregates leave the state as it is.
pub fn evolve(mut state: State, event: &Envelope) -> State {
    match &event.data {
        EventData::ReferralMade(d) => {
            state.status = ReferralStatus::Made;
            state.sender = Some(event.org.clone());
            state.destination = Some(d.destination.clone());
            state.case_id = Some(d.case_id.clone());
        }
        EventData::ReferralReceived(_) => state.status = ReferralStatus::Received,
        EventData::ReferralAccepted(_) => {
            state.status = ReferralStatus::Accepted;
            state.ever_accepted = true;
        }
        EventData::ReferralDeclined(_) => {
            state.status = ReferralStatus::Declined;
            state.ever_declined = true;
        }
        EventData::ReferralFirstContactMade(_) => state.status = ReferralStatus::FirstContactMade,
        EventData::ReferralCompleted(_) => state.status = ReferralStatus::Completed,
        EventData::ReferralCancelled(_) => state.status = ReferralStatus::Cancelled,
        EventData::ReferralExpired(_) => state.status = ReferralStatus::Expired,
        _ => {}
    }
    state
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::aggregates::testing::{self, Aggregate, date, given, given_with};
    use crate::events::{
        ConsentGiven, ConsentWithdrawn, EventPayload, ReferralCancelReason, ReferralDeclineReason, ReferralOutcome,
    };
    use crate::reference::OutsideService;
    use proptest::prelude::*;

    struct Referral;
    impl Aggregate for Referral {
        type State = State;
        type Command = Command;
        type Error = DomainError;
        type Input = consent::State;
        fn decide(s: &State, c: &Command, ctx: &Context, i: &consent::State) -> Result<Vec<EventData>, DomainError> {
            decide(s, c, ctx, i)
        }
        fn check(s: &State, e: &Envelope, i: &consent::State) -> Result<(), DomainError> {
            check(s, e, i)
        }
        fn evolve(s: State, e: &Envelope) -> State {
            evolve(s, e)
        }
    }

    const REF: &str = "referrals/r-1";
    const SENDER: &str = "apo";
    const RECEIVER: &str = "caw-brussel";

    fn org(id: &str) -> OrgId {
        OrgId::parse(id).unwrap()
    }

    /// The sender's case consent: shared with the receiver from 1 January, until `expires_on`.
    fn consent_to_share(expires_on: Option<NaiveDate>) -> consent::State {
        let given = ConsentGiven {
            scope: ConsentScope::ShareWithOrganisation(org(RECEIVER)),
            expires_on,
            ..ConsentGiven::example()
        };
        consent::evolve(consent::State::default(), &testing::event(SENDER, "cases/case-2025-0142", (1, 1), given))
    }

    fn made_to_receiver() -> ReferralMade {
        ReferralMade::example()
    }

    fn made_to_outside_service() -> ReferralMade {
        ReferralMade {
            destination: ReferralDestination::OutsideService(OutsideService::DebtMediation),
            message: None,
            ..ReferralMade::example()
        }
    }

    fn by(org: &str, day: (u32, u32), data: impl Into<EventData>) -> Envelope {
        testing::event(org, REF, day, data)
    }

    fn ctx(org: &str, day: (u32, u32)) -> Context {
        testing::ctx(org, REF, day)
    }

    fn made() -> Envelope {
        by(SENDER, (2, 1), made_to_receiver())
    }

    fn received() -> Envelope {
        by(RECEIVER, (2, 2), ReferralReceived::example())
    }

    fn accepted() -> Envelope {
        by(RECEIVER, (2, 3), ReferralAccepted::example())
    }

    fn declined() -> Envelope {
        by(RECEIVER, (2, 3), ReferralDeclined::example())
    }

    fn given_to_receiver(events: impl IntoIterator<Item = Envelope>) -> testing::Given<Referral> {
        given_with::<Referral>(consent_to_share(None), events)
    }

    #[test]
    fn a_referral_to_an_organisation_with_consent_to_share_is_made() {
        given_to_receiver([])
            .when(&ctx(SENDER, (2, 1)), Command::Make(made_to_receiver()))
            .then(vec![made_to_receiver().into()]);
    }

    #[test]
    fn a_referral_to_an_organisation_without_consent_is_refused() {
        given::<Referral>([])
            .when(&ctx(SENDER, (2, 1)), Command::Make(made_to_receiver()))
            .then_error(DomainError::NoConsentToShare { organisation: org(RECEIVER) });
    }

    #[test]
    fn a_consent_to_share_with_another_organisation_does_not_cover_this_one() {
        let mut made = made_to_receiver();
        made.destination = ReferralDestination::Organisation(org("dsr"));
        given_to_receiver([])
            .when(&ctx(SENDER, (2, 1)), Command::Make(made))
            .then_error(DomainError::NoConsentToShare { organisation: org("dsr") });
    }

    #[test]
    fn a_referral_after_consent_was_withdrawn_is_refused() {
        let withdrawn = ConsentWithdrawn {
            scope: ConsentScope::ShareWithOrganisation(org(RECEIVER)),
            ..ConsentWithdrawn::example()
        };
        let consent = consent::evolve(
            consent_to_share(None),
            &testing::event(SENDER, "cases/case-2025-0142", (1, 20), withdrawn),
        );
        given_with::<Referral>(consent, [])
            .when(&ctx(SENDER, (2, 1)), Command::Make(made_to_receiver()))
            .then_error(DomainError::ConsentWithdrawn { organisation: org(RECEIVER) });
    }

    #[test]
    fn a_referral_after_the_consent_expired_is_refused_by_the_date_it_occurred() {
        let g = given_with::<Referral>(consent_to_share(Some(date(1, 31))), []);
        g.when(&ctx(SENDER, (1, 31)), Command::Make(made_to_receiver())).then(vec![made_to_receiver().into()]);
        g.when(&ctx(SENDER, (2, 1)), Command::Make(made_to_receiver()))
            .then_error(DomainError::ConsentExpired { organisation: org(RECEIVER), expired_on: date(1, 31) });
    }

    #[test]
    fn a_referral_about_another_client_than_its_case_is_refused_whatever_the_consent() {
        // The sender's case: one client's request, accepted, with consent to share.
        let on_case = |day, data: EventData| testing::event(SENDER, "cases/case-2025-0142", day, data);
        let sender_case = [
            on_case((1, 1), crate::events::GuidanceRequested::example().into()),
            on_case((1, 1), crate::events::GuidanceAccepted::example().into()),
            on_case(
                (1, 1),
                ConsentGiven {
                    scope: ConsentScope::ShareWithOrganisation(org(RECEIVER)),
                    expires_on: None,
                    ..ConsentGiven::example()
                }
                .into(),
            ),
        ]
        .iter()
        .fold(super::super::case::State::default(), super::super::case::evolve);
        let consent = sender_case.consent().clone();
        let g = given_with::<Referral>(consent, []);
        g.when(&ctx(SENDER, (2, 1)), Command::Make(made_to_receiver())).then(vec![made_to_receiver().into()]);
        let someone_else = ReferralMade { client_ref: "cl-someone-else".into(), ..made_to_receiver() };
        g.when(&ctx(SENDER, (2, 1)), Command::Make(someone_else)).then_error(DomainError::ClientMismatch);
    }

    #[test]
    fn a_referral_to_an_outside_service_needs_no_consent_to_share() {
        given::<Referral>([])
            .when(&ctx(SENDER, (2, 1)), Command::Make(made_to_outside_service()))
            .then(vec![made_to_outside_service().into()]);
    }

    #[test]
    fn a_referral_to_the_sender_itself_is_refused() {
        let mut made = made_to_receiver();
        made.destination = ReferralDestination::Organisation(org(SENDER));
        given_to_receiver([])
            .when(&ctx(SENDER, (2, 1)), Command::Make(made))
            .then_error(DomainError::ReferralToOwnOrganisation);
    }

    #[test]
    fn a_referral_made_twice_is_refused() {
        given_to_receiver([made()])
            .when(&ctx(SENDER, (2, 2)), Command::Make(made_to_receiver()))
            .then_error(DomainError::AlreadyMade);
    }

    #[test]
    fn sender_case_names_the_case_whose_consent_is_needed() {
        assert_eq!(sender_case(&made()), Some(AggregateRef::parse("cases/case-2025-0142").unwrap()));
        assert_eq!(sender_case(&by(SENDER, (2, 1), made_to_outside_service())), None);
        assert_eq!(sender_case(&accepted()), None);
    }

    #[test]
    fn the_receiver_receives_accepts_makes_first_contact_and_completes() {
        let state = given_to_receiver([made(), received(), accepted()])
            .when(&ctx(RECEIVER, (2, 10)), Command::RecordFirstContact(ReferralFirstContactMade::example()))
            .then(vec![ReferralFirstContactMade::example().into()]);
        assert_eq!(state.status(), ReferralStatus::FirstContactMade);
        let state = given_to_receiver([made(), received(), accepted()])
            .when(&ctx(RECEIVER, (3, 1)), Command::Complete(ReferralCompleted::example()))
            .then(vec![ReferralCompleted::example().into()]);
        assert_eq!(state.status(), ReferralStatus::Completed);
        assert!(state.ever_accepted() && !state.ever_declined());
    }

    #[test]
    fn a_referral_may_be_accepted_without_a_separate_receipt() {
        given_to_receiver([made()])
            .when(&ctx(RECEIVER, (2, 2)), Command::Accept(ReferralAccepted::example()))
            .then(vec![ReferralAccepted::example().into()]);
    }

    #[test]
    fn receiving_a_referral_twice_is_refused() {
        given_to_receiver([made(), received()])
            .when(&ctx(RECEIVER, (2, 3)), Command::Receive(ReferralReceived::example()))
            .then_error(DomainError::AlreadyReceived);
    }

    #[test]
    fn recording_the_first_contact_twice_is_refused() {
        given_to_receiver([made(), accepted(), by(RECEIVER, (2, 10), ReferralFirstContactMade::example())])
            .when(&ctx(RECEIVER, (2, 11)), Command::RecordFirstContact(ReferralFirstContactMade::example()))
            .then_error(DomainError::FirstContactAlreadyMade);
    }

    #[test]
    fn a_decline_with_a_reason_text_but_no_client_reference_is_refused() {
        let decline = ReferralDeclined { client_ref: None, ..ReferralDeclined::example() };
        given_to_receiver([made()]).when(&ctx(RECEIVER, (2, 2)), Command::Decline(decline)).then_error(
            DomainError::InvalidData(DataError::at(
                "client_ref",
                "required with reason_text: the text is sealed with the client's key",
            )),
        );
    }

    #[test]
    fn an_event_of_another_aggregate_is_refused() {
        given_to_receiver([made()])
            .when_event(testing::event(RECEIVER, "cases/c-9", (2, 2), crate::events::GuidanceAccepted::example()))
            .then_error(DomainError::NotAReferralEvent { event_type: "relais.guidance.accepted".into() });
    }

    #[test]
    fn accepting_a_referral_twice_is_refused() {
        given_to_receiver([made(), received(), accepted()])
            .when(&ctx(RECEIVER, (2, 4)), Command::Accept(ReferralAccepted::example()))
            .then_error(DomainError::AlreadyAccepted);
    }

    #[test]
    fn accepting_a_referral_not_addressed_to_the_organisation_is_refused() {
        // A third party is told what it would be told of a referral never made.
        given_to_receiver([made(), received()])
            .when(&ctx("dsr", (2, 3)), Command::Accept(ReferralAccepted::example()))
            .then_error(DomainError::NotMade);
    }

    #[test]
    fn only_the_receiver_declines_receives_makes_first_contact_or_completes() {
        let g = given_to_receiver([made(), received(), accepted()]);
        g.when(&ctx(SENDER, (2, 4)), Command::RecordFirstContact(ReferralFirstContactMade::example()))
            .then_error(DomainError::NotTheReceiver);
        g.when(&ctx(SENDER, (2, 4)), Command::Complete(ReferralCompleted::example()))
            .then_error(DomainError::NotTheReceiver);
        let g = given_to_receiver([made()]);
        g.when(&ctx(SENDER, (2, 2)), Command::Receive(ReferralReceived::example()))
            .then_error(DomainError::NotTheReceiver);
        g.when(&ctx("dsr", (2, 2)), Command::Decline(ReferralDeclined::example())).then_error(DomainError::NotMade);
    }

    #[test]
    fn a_referral_declined_after_it_was_accepted_is_refused() {
        given_to_receiver([made(), accepted()])
            .when(&ctx(RECEIVER, (2, 4)), Command::Decline(ReferralDeclined::example()))
            .then_error(DomainError::AlreadyAccepted);
    }

    #[test]
    fn completing_a_declined_referral_is_refused() {
        let declined_for = |reason| by(RECEIVER, (2, 3), ReferralDeclined { reason, ..ReferralDeclined::example() });
        given_to_receiver([made(), received(), declined_for(ReferralDeclineReason::NoCapacity)])
            .when(&ctx(RECEIVER, (2, 4)), Command::Complete(ReferralCompleted::example()))
            .then_error(DomainError::AlreadyClosed { status: ReferralStatus::Declined });
        given_to_receiver([made(), declined()])
            .when(&ctx(RECEIVER, (2, 4)), Command::Accept(ReferralAccepted::example()))
            .then_error(DomainError::AlreadyClosed { status: ReferralStatus::Declined });
    }

    #[test]
    fn completing_before_acceptance_is_refused() {
        given_to_receiver([made(), received()])
            .when(&ctx(RECEIVER, (2, 4)), Command::Complete(ReferralCompleted::example()))
            .then_error(DomainError::NotAccepted);
    }

    #[test]
    fn a_referral_to_an_outside_service_is_followed_up_and_closed_by_the_sender() {
        let g = given::<Referral>([by(SENDER, (2, 1), made_to_outside_service())]);
        let contact = ReferralFirstContactMade { client_ref: "cl-2025-0142".into() };
        g.when(&ctx(SENDER, (2, 10)), Command::RecordFirstContact(contact.clone())).then(vec![contact.into()]);
        let done = ReferralCompleted {
            client_ref: "cl-2025-0142".into(),
            outcome: ReferralOutcome::HelpProvided,
            outcome_note: None,
        };
        g.when(&ctx(SENDER, (3, 1)), Command::Complete(done.clone())).then(vec![done.into()]);
        // RECEIVER is no party to a referral to an outside service.
        g.when(&ctx(RECEIVER, (3, 1)), Command::Complete(ReferralCompleted::example()))
            .then_error(DomainError::NotMade);
        g.when(&ctx(SENDER, (2, 2)), Command::Accept(ReferralAccepted::example()))
            .then_error(DomainError::NotAddressedToAnOrganisation);
    }

    #[test]
    fn only_the_sender_cancels_or_expires_a_referral() {
        let g = given_to_receiver([made(), received()]);
        g.when(&ctx(RECEIVER, (2, 5)), Command::Cancel(ReferralCancelled::example()))
            .then_error(DomainError::NotTheSender);
        let cancel = ReferralCancelled { reason: ReferralCancelReason::ClientWithdrew, ..ReferralCancelled::example() };
        g.when(&ctx(SENDER, (2, 5)), Command::Cancel(cancel.clone())).then(vec![cancel.into()]);
        g.when(&ctx(SENDER, (3, 5)), Command::Expire(ReferralExpired::example()))
            .then(vec![ReferralExpired::example().into()]);
    }

    #[test]
    fn an_accepted_referral_does_not_expire_and_a_cancelled_one_cannot_be_cancelled_again() {
        given_to_receiver([made(), accepted()])
            .when(&ctx(SENDER, (3, 5)), Command::Expire(ReferralExpired::example()))
            .then_error(DomainError::AlreadyAccepted);
        given_to_receiver([made(), by(SENDER, (2, 2), ReferralCancelled::example())])
            .when(&ctx(SENDER, (2, 3)), Command::Cancel(ReferralCancelled::example()))
            .then_error(DomainError::AlreadyClosed { status: ReferralStatus::Cancelled });
    }

    #[test]
    fn an_event_on_a_referral_never_made_is_refused() {
        given::<Referral>([])
            .when(&ctx(RECEIVER, (2, 2)), Command::Accept(ReferralAccepted::example()))
            .then_error(DomainError::NotMade);
    }

    fn command_strategy() -> impl Strategy<Value = Command> {
        prop_oneof![
            Just(Command::Make(made_to_receiver())),
            Just(Command::Make(made_to_outside_service())),
            Just(Command::Receive(ReferralReceived { client_ref: None })),
            Just(Command::Accept(ReferralAccepted::example())),
            Just(Command::Decline(ReferralDeclined::example())),
            Just(Command::RecordFirstContact(ReferralFirstContactMade::example())),
            Just(Command::Complete(ReferralCompleted::example())),
            Just(Command::Cancel(ReferralCancelled::example())),
            Just(Command::Expire(ReferralExpired::example())),
        ]
    }

    proptest! {
        #[test]
        fn replaying_decided_events_gives_the_same_state_and_an_accepted_referral_is_never_declined(
            steps in proptest::collection::vec(
                (command_strategy(), prop_oneof![Just(SENDER), Just(RECEIVER), Just("dsr")], any::<bool>()),
                0..30,
            ),
        ) {
            let mut state = State::default();
            let mut log: Vec<(Envelope, consent::State)> = Vec::new();
            for (i, (command, acting, with_consent)) in steps.into_iter().enumerate() {
                let consent = if with_consent { consent_to_share(None) } else { consent::State::default() };
                let ctx = ctx(acting, (2, 1 + (i as u32 % 27)));
                if let Ok(events) = decide(&state, &command, &ctx, &consent) {
                    for data in events {
                        let e = ctx.envelope(uuid::Uuid::from_u128(i as u128), data);
                        state = evolve(state, &e);
                        log.push((e, consent.clone()));
                    }
                }
                prop_assert!(!(state.ever_accepted() && state.ever_declined()));
                if state.status().is_closed() {
                    prop_assert!(log.iter().filter(|(e, _)| matches!(
                        e.data,
                        EventData::ReferralCompleted(_) | EventData::ReferralDeclined(_)
                            | EventData::ReferralCancelled(_) | EventData::ReferralExpired(_)
                    )).count() == 1);
                }
                if let Some(ReferralDestination::Organisation(_)) = state.destination() {
                    // A referral to an organisation was made with the consent to share.
                    prop_assert!(log.first().is_some_and(|(_, c)| c.is_active(
                        &ConsentScope::ShareWithOrganisation(org(RECEIVER)),
                        date(2, 1),
                    )));
                }
            }
            let mut replayed = State::default();
            for (e, consent) in &log {
                prop_assert_eq!(check(&replayed, e, consent), Ok(()));
                replayed = evolve(replayed, e);
            }
            prop_assert_eq!(replayed, state);
        }
    }
}
