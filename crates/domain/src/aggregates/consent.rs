//! The consent of one client at one organisation, per scope.
//!
//! Consent events live in the client's case stream (`cases/<id>`): the [`super::case`]
//! aggregate embeds this state and hands consent events to [`check`] and [`evolve`] here. The
//! referral rules read it: a referral to another organisation needs an active consent to share
//! with that organisation on the sender's case (see [`super::referral::check`]).

use super::{Context, brussels_date, checked};
use crate::envelope::Envelope;
use crate::events::{ConsentGiven, ConsentScope, ConsentWithdrawn, DataError, EventData};
use crate::labels::Labels;
use chrono::NaiveDate;

/// The last recorded decision of the client for one scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// Given, until `expires_on` (inclusive) if set.
    Given {
        /// The last day the consent holds.
        expires_on: Option<NaiveDate>,
    },
    /// Withdrawn.
    Withdrawn,
}

/// Whether a consent holds on a given day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentStatus {
    /// Never given.
    NeverGiven,
    /// Given and holding.
    Active {
        /// The last day it holds, if it expires.
        expires_on: Option<NaiveDate>,
    },
    /// Given but expired.
    Expired {
        /// The last day it held.
        expired_on: NaiveDate,
    },
    /// Withdrawn.
    Withdrawn,
}

/// The consent of one client at one organisation, per scope. `Default`: nothing given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Sorted by scope, one entry per scope. A client has a few scopes at most, and the
    /// validator keeps thousands of case states in memory: a small vector takes a tenth of the
    /// room of a tree map's node.
    grants: Vec<(ConsentScope, Grant)>,
    /// Whose consent this is: a hash of the client's `client_ref`, set by the case from its
    /// first readable event (`None` while unknown, or once the client's fields are erased). A
    /// hash, not the reference: the validator keeps thousands of states, and only compares.
    client: Option<u64>,
}

impl State {
    /// False when `client_ref` is known to be another client than the one whose consent this
    /// is: their consent does not cover it.
    pub fn is_of(&self, client_ref: &str) -> bool {
        self.client.is_none_or(|c| c == client_hash(client_ref))
    }

    /// Records whose consent this is, once.
    pub(crate) fn set_client(&mut self, client_ref: &str) {
        if self.client.is_none() {
            self.client = Some(client_hash(client_ref));
        }
    }

    fn get(&self, scope: &ConsentScope) -> Option<&Grant> {
        let at = self.grants.binary_search_by(|(s, _)| s.cmp(scope)).ok()?;
        self.grants.get(at).map(|(_, grant)| grant)
    }

    fn record(&mut self, scope: &ConsentScope, grant: Grant) {
        match self.grants.binary_search_by(|(s, _)| s.cmp(scope)) {
            Ok(at) => {
                if let Some(entry) = self.grants.get_mut(at) {
                    entry.1 = grant;
                }
            }
            Err(at) => self.grants.insert(at, (scope.clone(), grant)),
        }
    }

    /// Whether the consent for `scope` holds on `day` (a Brussels calendar date).
    pub fn status(&self, scope: &ConsentScope, day: NaiveDate) -> ConsentStatus {
        match self.get(scope) {
            None => ConsentStatus::NeverGiven,
            Some(Grant::Withdrawn) => ConsentStatus::Withdrawn,
            Some(Grant::Given { expires_on: Some(last) }) if day > *last => {
                ConsentStatus::Expired { expired_on: *last }
            }
            Some(Grant::Given { expires_on }) => ConsentStatus::Active { expires_on: *expires_on },
        }
    }

    /// True if the consent for `scope` holds on `day`.
    pub fn is_active(&self, scope: &ConsentScope, day: NaiveDate) -> bool {
        matches!(self.status(scope, day), ConsentStatus::Active { .. })
    }

    /// The last decision per scope, in the order of the scopes.
    pub fn grants(&self) -> impl Iterator<Item = (&ConsentScope, &Grant)> {
        self.grants.iter().map(|(scope, grant)| (scope, grant))
    }
}

/// What a client can decide about consent.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Give consent (or renew it, with a new expiry).
    Give(ConsentGiven),
    /// Withdraw consent.
    Withdraw(ConsentWithdrawn),
}

/// Why a consent event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The data breaks a rule of its own type.
    #[error("invalid data: {0}")]
    InvalidData(DataError),
    /// The event is not a consent event.
    #[error("{event_type} is not a consent event")]
    NotAConsentEvent {
        /// The event type.
        event_type: String,
    },
    /// A consent to share with the organisation that records it means nothing.
    #[error("a consent to share names another organisation than the one that records it")]
    ShareWithOwnOrganisation,
    /// The expiry date lies before the day the consent is given.
    #[error("the consent expires on {expires_on}, before the day it is given ({given_on})")]
    ExpiresBeforeGiven {
        /// The expiry date.
        expires_on: NaiveDate,
        /// The day it is given.
        given_on: NaiveDate,
    },
    /// There is no consent to withdraw.
    #[error("no consent for {scope} was given")]
    NotGiven {
        /// The scope.
        scope: ConsentScope,
    },
    /// The consent was already withdrawn.
    #[error("the consent for {scope} was already withdrawn")]
    AlreadyWithdrawn {
        /// The scope.
        scope: ConsentScope,
    },
}

impl DomainError {
    /// A stable code for the refusal, for programs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidData(_) => "invalid_data",
            Self::NotAConsentEvent { .. } => "not_a_consent_event",
            Self::ShareWithOwnOrganisation => "share_with_own_organisation",
            Self::ExpiresBeforeGiven { .. } => "consent_expires_before_given",
            Self::NotGiven { .. } => "consent_not_given",
            Self::AlreadyWithdrawn { .. } => "consent_already_withdrawn",
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
            Self::NotAConsentEvent { .. } => Labels::new(
                "Dit event gaat niet over toestemming.",
                "Cet événement ne concerne pas un consentement.",
                "This event is not about consent.",
            ),
            Self::ShareWithOwnOrganisation => Labels::new(
                "Toestemming om te delen geldt voor een andere organisatie.",
                "Le consentement au partage vise une autre organisation.",
                "A consent to share names another organisation.",
            ),
            Self::ExpiresBeforeGiven { .. } => Labels::new(
                "De toestemming verloopt vóór de dag waarop ze gegeven wordt.",
                "Le consentement expire avant le jour où il est donné.",
                "The consent expires before the day it is given.",
            ),
            Self::NotGiven { .. } => Labels::new(
                "Er werd geen toestemming gegeven om in te trekken.",
                "Aucun consentement n'a été donné qui puisse être retiré.",
                "No consent was given that could be withdrawn.",
            ),
            Self::AlreadyWithdrawn { .. } => Labels::new(
                "De toestemming werd al ingetrokken.",
                "Le consentement a déjà été retiré.",
                "The consent was already withdrawn.",
            ),
        }
    }
}

/// The consent events of a command, checked.
pub fn decide(state: &State, command: &Command, ctx: &Context) -> Result<Vec<EventData>, DomainError> {
    let data = match command {
        Command::Give(d) => EventData::ConsentGiven(d.clone()),
        Command::Withdraw(d) => EventData::ConsentWithdrawn(d.clone()),
    };
    checked(state, ctx, vec![data], check, evolve)
}

/// The consent rules of an incoming consent event. Expiry dates compare with the Brussels date
/// of the event's `occurred_at`.
pub fn check(state: &State, event: &Envelope) -> Result<(), DomainError> {
    event.data.validate().map_err(DomainError::InvalidData)?;
    match &event.data {
        EventData::ConsentGiven(d) => {
            if let ConsentScope::ShareWithOrganisation(org) = &d.scope
                && *org == event.org
            {
                return Err(DomainError::ShareWithOwnOrganisation);
            }
            let given_on = brussels_date(event.occurred_at);
            match d.expires_on {
                Some(expires_on) if expires_on < given_on => {
                    Err(DomainError::ExpiresBeforeGiven { expires_on, given_on })
                }
                _ => Ok(()),
            }
        }
        EventData::ConsentWithdrawn(d) => match state.get(&d.scope) {
            None => Err(DomainError::NotGiven { scope: d.scope.clone() }),
            Some(Grant::Withdrawn) => Err(DomainError::AlreadyWithdrawn { scope: d.scope.clone() }),
            Some(Grant::Given { .. }) => Ok(()),
        },
        other => Err(DomainError::NotAConsentEvent { event_type: other.event_type().to_owned() }),
    }
}

/// A deterministic hash of a client reference (the same in every run: states are compared
/// within one process only, but rebuilt the same way each time).
fn client_hash(client_ref: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    client_ref.hash(&mut hasher);
    hasher.finish()
}

/// Folds a consent event in; other events leave the state as it is.
pub fn evolve(mut state: State, event: &Envelope) -> State {
    match &event.data {
        EventData::ConsentGiven(d) => {
            state.record(&d.scope, Grant::Given { expires_on: d.expires_on });
        }
        EventData::ConsentWithdrawn(d) => {
            state.record(&d.scope, Grant::Withdrawn);
        }
        _ => {}
    }
    state
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::aggregates::testing::{self, Aggregate, date, given};
    use crate::events::{ConsentScope, EventPayload, LinkageKey};
    use crate::ids::OrgId;

    struct Consent;
    impl Aggregate for Consent {
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

    fn share_with(org: &str) -> ConsentScope {
        ConsentScope::ShareWithOrganisation(OrgId::parse(org).unwrap())
    }

    fn given_consent(scope: ConsentScope, expires_on: Option<NaiveDate>) -> ConsentGiven {
        ConsentGiven { client_ref: "cl-1".into(), scope, expires_on, linkage_key: None }
    }

    fn withdrawn(scope: ConsentScope) -> ConsentWithdrawn {
        ConsentWithdrawn { client_ref: "cl-1".into(), scope }
    }

    fn event(day: (u32, u32), data: impl Into<EventData>) -> Envelope {
        testing::event("apo", CASE, day, data)
    }

    #[test]
    fn a_consent_to_share_holds_until_its_last_day_and_not_after() {
        let g = given::<Consent>([event((3, 1), given_consent(share_with("caw-brussel"), Some(date(3, 31))))]);
        let scope = share_with("caw-brussel");
        assert!(g.state().is_active(&scope, date(3, 31)));
        assert_eq!(g.state().status(&scope, date(4, 1)), ConsentStatus::Expired { expired_on: date(3, 31) });
        assert_eq!(g.state().status(&share_with("dsr"), date(3, 2)), ConsentStatus::NeverGiven);
    }

    #[test]
    fn a_withdrawn_consent_no_longer_holds() {
        let g = given::<Consent>([
            event((3, 1), given_consent(ConsentScope::Guidance, None)),
            event((3, 5), withdrawn(ConsentScope::Guidance)),
        ]);
        assert_eq!(g.state().status(&ConsentScope::Guidance, date(3, 6)), ConsentStatus::Withdrawn);
    }

    #[test]
    fn giving_consent_records_it() {
        let data = given_consent(share_with("dsr"), None);
        given::<Consent>([])
            .when(&testing::ctx("apo", CASE, (3, 1)), Command::Give(data.clone()))
            .then(vec![data.into()]);
    }

    #[test]
    fn each_scope_keeps_its_own_last_decision_whatever_the_order_of_the_scopes() {
        let in_one_order = given::<Consent>([
            event((3, 1), given_consent(share_with("dsr"), None)),
            event((3, 2), given_consent(ConsentScope::Guidance, None)),
            event((3, 3), given_consent(share_with("caw-brussel"), Some(date(3, 31)))),
            event((3, 4), withdrawn(share_with("dsr"))),
        ]);
        let in_another = given::<Consent>([
            event((3, 1), given_consent(share_with("caw-brussel"), Some(date(3, 31)))),
            event((3, 2), given_consent(share_with("dsr"), None)),
            event((3, 3), withdrawn(share_with("dsr"))),
            event((3, 4), given_consent(ConsentScope::Guidance, None)),
        ]);
        assert_eq!(in_one_order.state(), in_another.state());
        let s = in_one_order.state();
        assert_eq!(s.status(&share_with("dsr"), date(3, 5)), ConsentStatus::Withdrawn);
        assert!(s.is_active(&ConsentScope::Guidance, date(3, 5)));
        assert!(s.is_active(&share_with("caw-brussel"), date(3, 5)));
        assert_eq!(s.status(&ConsentScope::ContinuityMonitor, date(3, 5)), ConsentStatus::NeverGiven);
        let scopes: Vec<&ConsentScope> = s.grants().map(|(scope, _)| scope).collect();
        assert!(scopes.windows(2).all(|w| w[0] < w[1]), "one entry per scope, in order: {scopes:?}");
        assert_eq!(scopes.len(), 3);
    }

    #[test]
    fn a_consent_given_again_renews_the_expiry() {
        let g = given::<Consent>([
            event((3, 1), given_consent(share_with("dsr"), Some(date(3, 10)))),
            event((3, 9), given_consent(share_with("dsr"), Some(date(6, 30)))),
        ]);
        assert!(g.state().is_active(&share_with("dsr"), date(5, 1)));
    }

    #[test]
    fn a_consent_to_share_with_the_recording_organisation_itself_is_refused() {
        given::<Consent>([])
            .when(&testing::ctx("apo", CASE, (3, 1)), Command::Give(given_consent(share_with("apo"), None)))
            .then_error(DomainError::ShareWithOwnOrganisation);
    }

    #[test]
    fn a_consent_that_expires_before_it_is_given_is_refused() {
        given::<Consent>([])
            .when(
                &testing::ctx("apo", CASE, (3, 10)),
                Command::Give(given_consent(ConsentScope::Guidance, Some(date(3, 9)))),
            )
            .then_error(DomainError::ExpiresBeforeGiven { expires_on: date(3, 9), given_on: date(3, 10) });
    }

    #[test]
    fn withdrawing_a_consent_never_given_is_refused() {
        given::<Consent>([])
            .when(&testing::ctx("apo", CASE, (3, 1)), Command::Withdraw(withdrawn(ConsentScope::Guidance)))
            .then_error(DomainError::NotGiven { scope: ConsentScope::Guidance });
    }

    #[test]
    fn an_event_that_is_not_about_consent_is_refused() {
        given::<Consent>([])
            .when_event(event((3, 1), crate::events::GuidanceRequested::example()))
            .then_error(DomainError::NotAConsentEvent { event_type: "relais.guidance.requested".into() });
    }

    #[test]
    fn withdrawing_a_consent_twice_is_refused() {
        given::<Consent>([
            event((3, 1), given_consent(ConsentScope::Guidance, None)),
            event((3, 2), withdrawn(ConsentScope::Guidance)),
        ])
        .when(&testing::ctx("apo", CASE, (3, 3)), Command::Withdraw(withdrawn(ConsentScope::Guidance)))
        .then_error(DomainError::AlreadyWithdrawn { scope: ConsentScope::Guidance });
    }

    #[test]
    fn a_consent_to_the_continuity_monitor_without_a_linkage_key_is_refused() {
        let data = given_consent(ConsentScope::ContinuityMonitor, None);
        given::<Consent>([]).when(&testing::ctx("apo", CASE, (3, 1)), Command::Give(data)).then_error(
            DomainError::InvalidData(DataError::at(
                "linkage_key",
                "a consent to the continuity monitor carries the linkage key",
            )),
        );
    }

    #[test]
    fn a_consent_to_the_continuity_monitor_with_a_linkage_key_is_recorded() {
        let mut data = ConsentGiven::example();
        data.scope = ConsentScope::ContinuityMonitor;
        data.linkage_key = Some(LinkageKey::parse(&"ab".repeat(32)).unwrap());
        given::<Consent>([])
            .when(&testing::ctx("apo", CASE, (3, 1)), Command::Give(data.clone()))
            .then(vec![data.into()]);
    }
}
