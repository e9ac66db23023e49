//! A given/when/then harness for the aggregates' unit tests:
//! `given::<A>(events).when(&ctx, command).then(events)` or `.then_error(error)`, and
//! `.when_event(envelope)` to check an incoming event as the gateway does.

#![allow(clippy::unwrap_used)]

use super::Context;
use crate::envelope::Envelope;
use crate::events::EventData;
use crate::ids::{AggregateRef, OrgId};
use chrono::{DateTime, TimeZone, Utc};
use std::fmt::Debug;
use uuid::Uuid;

/// What the harness needs of an aggregate module.
pub(crate) trait Aggregate {
    /// The state.
    type State: Default + Clone + Debug + PartialEq;
    /// The commands.
    type Command;
    /// The refusals.
    type Error: Debug + PartialEq;
    /// Input from outside the aggregate's own stream (the referral's sender consent).
    type Input: Default + Clone;
    /// The module's `decide`.
    fn decide(
        state: &Self::State,
        command: &Self::Command,
        ctx: &Context,
        input: &Self::Input,
    ) -> Result<Vec<EventData>, Self::Error>;
    /// The module's `check`.
    fn check(state: &Self::State, event: &Envelope, input: &Self::Input) -> Result<(), Self::Error>;
    /// The module's `evolve`.
    fn evolve(state: Self::State, event: &Envelope) -> Self::State;
}

/// The state after the given events (each is checked first: a scenario's history must be one
/// the rules allow).
pub(crate) struct Given<A: Aggregate> {
    state: A::State,
    input: A::Input,
}

/// Folds the given events; panics if one of them breaks a rule (with the given input).
pub(crate) fn given<A: Aggregate>(events: impl IntoIterator<Item = Envelope>) -> Given<A> {
    given_with::<A>(A::Input::default(), events)
}

/// Like [`given`], with input from outside the stream.
pub(crate) fn given_with<A: Aggregate>(input: A::Input, events: impl IntoIterator<Item = Envelope>) -> Given<A> {
    let mut state = A::State::default();
    for event in events {
        if let Err(e) = A::check(&state, &event, &input) {
            panic!("the given event {} breaks a rule: {e:?}", event.data.event_type());
        }
        state = A::evolve(state, &event);
    }
    Given { state, input }
}

impl<A: Aggregate> Given<A> {
    /// Decides a command.
    pub(crate) fn when(&self, ctx: &Context, command: A::Command) -> Then<A> {
        Then { result: A::decide(&self.state, &command, ctx, &self.input), state: self.state.clone(), ctx: ctx.clone() }
    }

    /// Checks an incoming event; on success the outcome is that one event.
    pub(crate) fn when_event(&self, event: Envelope) -> Then<A> {
        let ctx = Context {
            org: event.org.clone(),
            subject: event.subject.clone(),
            at: event.occurred_at,
            actor: event.actor.clone(),
        };
        let result = A::check(&self.state, &event, &self.input).map(|()| vec![event.data.clone()]);
        Then { result, state: self.state.clone(), ctx }
    }

    /// The state after the given events.
    pub(crate) fn state(&self) -> &A::State {
        &self.state
    }
}

/// The outcome of a `when`.
pub(crate) struct Then<A: Aggregate> {
    result: Result<Vec<EventData>, A::Error>,
    state: A::State,
    ctx: Context,
}

impl<A: Aggregate> Then<A> {
    /// Asserts the produced events; returns the state after them.
    #[track_caller]
    pub(crate) fn then(self, expected: Vec<EventData>) -> A::State {
        match self.result {
            Ok(events) => {
                assert_eq!(events, expected);
                events.into_iter().fold(self.state, |s, d| A::evolve(s, &self.ctx.envelope(Uuid::nil(), d)))
            }
            Err(e) => panic!("expected events, got the refusal {e:?}"),
        }
    }

    /// Asserts the refusal.
    #[track_caller]
    pub(crate) fn then_error(self, expected: A::Error) {
        match self.result {
            Ok(events) => panic!("expected the refusal {expected:?}, got {events:?}"),
            Err(e) => assert_eq!(e, expected),
        }
    }
}

/// 10:00 UTC on a day of 2025 (month, day).
pub(crate) fn at(month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, month, day, 10, 0, 0).single().unwrap()
}

/// A context: organisation, subject, day of 2025.
pub(crate) fn ctx(org: &str, subject: &str, (month, day): (u32, u32)) -> Context {
    Context {
        org: OrgId::parse(org).unwrap(),
        subject: AggregateRef::parse(subject).unwrap(),
        at: at(month, day),
        actor: "sw-1".into(),
    }
}

/// An event recorded by an organisation on a subject on a day of 2025.
pub(crate) fn event(org: &str, subject: &str, day: (u32, u32), data: impl Into<EventData>) -> Envelope {
    ctx(org, subject, day).envelope(Uuid::from_u128(u128::from(day.0 * 100 + day.1)), data.into())
}

/// A calendar date of 2025.
pub(crate) fn date(month: u32, day: u32) -> chrono::NaiveDate {
    chrono::NaiveDate::from_ymd_opt(2025, month, day).unwrap()
}
