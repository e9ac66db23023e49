//! The aggregates, in decide/evolve shape: pure functions, no I/O, no clock, no randomness.
//!
//! - [`case`]: one client's case at one organisation (guidance, situation, network), with its
//!   [`consent`] state embedded (consent events live in the case's stream `cases/<id>`);
//! - [`referral`]: a closed-loop referral (`referrals/<id>`);
//! - [`activity`]: a group activity (`activities/<id>`).
//!
//! Each module has a `State` (its `Default` is "never seen"), a `Command`, a `DomainError`,
//! and three functions:
//!
//! - `check(&State, &Envelope) -> Result<(), DomainError>`: the rules an already formed event
//!   must meet, given the earlier events of its subject. The gateway receives events, not
//!   commands: it folds the subject's earlier events with `evolve`, calls `check` on the new
//!   event, appends it, and folds it in.
//! - `evolve(State, &Envelope) -> State`: folds one event in. It never fails and checks
//!   nothing (the rules are in `check`); events of other aggregates leave the state as it is.
//! - `decide(&State, &Command, &Context) -> Result<Vec<EventData>, DomainError>`: the events
//!   a command produces, built from the command and passed through `check` (and `evolve`,
//!   between two events of one decision): there is one rule set.
//!
//! Dates in rules (consent expiry, "before detention started") are calendar dates in Brussels,
//! taken from the event's `occurred_at` with [`brussels_date`].

pub mod activity;
pub mod case;
pub mod consent;
pub mod referral;

#[cfg(test)]
pub(crate) mod testing;

use crate::envelope::{Envelope, PersonalState};
use crate::events::EventData;
use crate::ids::{AggregateRef, OrgId};
use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, Utc, Weekday};
use uuid::Uuid;

/// Who acts, on what and when: what a command needs besides the state. The caller passes the
/// clock (the crate reads none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// The organisation that acts (the events' `source`).
    pub org: OrgId,
    /// The aggregate acted on (the events' `subject`).
    pub subject: AggregateRef,
    /// When it happens (the events' `occurred_at`).
    pub at: DateTime<Utc>,
    /// The user or system that acts (the events' `actor`).
    pub actor: String,
}

impl Context {
    /// The envelope of an event decided in this context. `id` is the event id (the caller's:
    /// the crate makes no random ids); `recorded_at` is `at`.
    pub fn envelope(&self, id: Uuid, data: EventData) -> Envelope {
        Envelope {
            id,
            org: self.org.clone(),
            subject: self.subject.clone(),
            occurred_at: self.at,
            recorded_at: self.at,
            actor: self.actor.clone(),
            correlation_id: None,
            causation_id: None,
            data,
            personal: PersonalState::Present,
        }
    }
}

/// Passes the events of one decision through `check`, folding each into a scratch state with
/// `evolve` before checking the next: what every `decide` does after building its events.
fn checked<S: Clone, E>(
    state: &S,
    ctx: &Context,
    events: Vec<EventData>,
    check: impl Fn(&S, &Envelope) -> Result<(), E>,
    evolve: impl Fn(S, &Envelope) -> S,
) -> Result<Vec<EventData>, E> {
    let mut scratch = state.clone();
    let mut out = Vec::with_capacity(events.len());
    for data in events {
        // The id is not read by any rule; the caller gives the real ids when it publishes.
        let envelope = ctx.envelope(Uuid::nil(), data);
        check(&scratch, &envelope)?;
        scratch = evolve(scratch, &envelope);
        out.push(envelope.data);
    }
    Ok(out)
}

/// The calendar date in Brussels (Europe/Brussels: UTC+1, and UTC+2 from the last Sunday of
/// March 01:00 UTC to the last Sunday of October 01:00 UTC) of a moment. Rules about days
/// (consent expiry, dates of detention) use it so that an event at 23:30 in Brussels counts on
/// that day, not the next one in UTC.
pub fn brussels_date(at: DateTime<Utc>) -> NaiveDate {
    let year = at.year();
    let summer_starts = last_sunday_at_one_utc(year, 3);
    let summer_ends = last_sunday_at_one_utc(year, 10);
    let naive = at.naive_utc();
    let offset_hours = if naive >= summer_starts && naive < summer_ends { 2 } else { 1 };
    // At the very end of chrono's range there is no next hour: that day is the date.
    naive.checked_add_signed(Duration::hours(offset_hours)).unwrap_or(naive).date()
}

fn last_sunday_at_one_utc(year: i32, month: u32) -> NaiveDateTime {
    let last_day = NaiveDate::from_ymd_opt(year, month, 31).unwrap_or_default();
    let back = last_day.weekday().num_days_from_sunday();
    let sunday = last_day - Duration::days(i64::from(back));
    debug_assert_eq!(sunday.weekday(), Weekday::Sun);
    sunday.and_time(NaiveTime::from_hms_opt(1, 0, 0).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, min, 0).single().expect("a valid time")
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("a valid date")
    }

    #[test]
    fn a_late_evening_in_brussels_counts_on_that_day() {
        // 22:30 UTC in January is 23:30 in Brussels, the same day.
        assert_eq!(brussels_date(utc(2025, 1, 10, 22, 30)), day(2025, 1, 10));
        // 23:30 UTC in January is 00:30 the next day in Brussels.
        assert_eq!(brussels_date(utc(2025, 1, 10, 23, 30)), day(2025, 1, 11));
        // 22:30 UTC in July is 00:30 the next day in Brussels (summer time).
        assert_eq!(brussels_date(utc(2025, 7, 10, 22, 30)), day(2025, 7, 11));
    }

    #[test]
    fn summer_time_starts_and_ends_on_the_last_sundays_of_march_and_october() {
        // 2025: summer time from 30 March 01:00 UTC to 26 October 01:00 UTC.
        assert_eq!(brussels_date(utc(2025, 3, 30, 0, 59)), day(2025, 3, 30));
        assert_eq!(brussels_date(utc(2025, 3, 29, 22, 30)), day(2025, 3, 29));
        assert_eq!(brussels_date(utc(2025, 10, 25, 22, 30)), day(2025, 10, 26));
        assert_eq!(brussels_date(utc(2025, 10, 26, 22, 30)), day(2025, 10, 26));
    }
}
