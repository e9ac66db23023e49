//! The clock of the projections and the views that depend on time (the continuity monitor's
//! time-based alerts, ages, "coming up in the next N days"), and the calendar they count in:
//! Brussels dates and Belgian working days.
//!
//! Production uses [`SystemClock`]; tests use [`ManualClock`] and move time by hand.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc, Weekday};
use relais_domain::aggregates::brussels_date;
use std::sync::{Arc, Mutex};

/// Where the current time comes from.
pub trait Clock: std::fmt::Debug + Send + Sync + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;

    /// Today in Brussels.
    fn today(&self) -> NaiveDate {
        brussels_date(self.now())
    }
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that stands still until it is set or advanced: for tests.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock standing at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self { now: Arc::new(Mutex::new(at)) }
    }

    /// Sets the time.
    pub fn set(&self, at: DateTime<Utc>) {
        if let Ok(mut now) = self.now.lock() {
            *now = at;
        }
    }

    /// Moves the time forward.
    pub fn advance(&self, by: Duration) {
        if let Ok(mut now) = self.now.lock() {
            *now += by;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.now.lock().map(|n| *n).unwrap_or_else(|poisoned| *poisoned.into_inner())
    }
}

/// The shared system clock.
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// The moment a Brussels calendar day starts (00:00 Europe/Brussels), in UTC.
pub fn brussels_midnight(day: NaiveDate) -> DateTime<Utc> {
    let utc_midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    // Brussels is UTC+1 or UTC+2: the day starts one or two hours before UTC midnight.
    for offset in [2, 1] {
        let candidate = utc_midnight - Duration::hours(offset);
        if brussels_date(candidate) == day && brussels_date(candidate - Duration::seconds(1)) != day {
            return candidate;
        }
    }
    utc_midnight - Duration::hours(1)
}

/// Easter Sunday of a year (Gregorian calendar; anonymous algorithm of Meeus/Jones/Butcher).
fn easter(year: i32) -> NaiveDate {
    let a = year % 19;
    let b = year / 100;
    let c = year % 100;
    let d = b / 4;
    let e = b % 4;
    let f = (b + 8) / 25;
    let g = (b - f + 1) / 3;
    let h = (19 * a + b - d - g + 15) % 30;
    let i = c / 4;
    let k = c % 4;
    let l = (32 + 2 * e + 2 * i - h - k) % 7;
    let m = (a + 11 * h + 22 * l) / 451;
    let month = (h + l - 7 * m + 114) / 31;
    let day = (h + l - 7 * m + 114) % 31 + 1;
    NaiveDate::from_ymd_opt(year, month as u32, day as u32).unwrap_or_default()
}

/// True on the ten Belgian public holidays: New Year, Easter Monday, Labour Day, Ascension,
/// Whit Monday, National Day (21 July), Assumption, All Saints, Armistice, Christmas. Regional
/// and community holidays (8 May, 11 July, 27 September) are not counted: the services work
/// for three communities.
pub fn is_belgian_public_holiday(day: NaiveDate) -> bool {
    let fixed = [(1, 1), (5, 1), (7, 21), (8, 15), (11, 1), (11, 11), (12, 25)];
    if fixed.contains(&(day.month(), day.day())) {
        return true;
    }
    let easter = easter(day.year());
    [1, 39, 50].iter().any(|offset| easter + Duration::days(*offset) == day)
}

/// True on Monday to Friday that are not Belgian public holidays.
pub fn is_working_day(day: NaiveDate) -> bool {
    !matches!(day.weekday(), Weekday::Sat | Weekday::Sun) && !is_belgian_public_holiday(day)
}

/// The `n`-th working day after `day` (`n` = 0: `day` itself).
pub fn add_working_days(day: NaiveDate, n: u32) -> NaiveDate {
    let mut d = day;
    let mut left = n;
    while left > 0 {
        d += Duration::days(1);
        if is_working_day(d) {
            left -= 1;
        }
    }
    d
}

/// When a deadline of `n` working days counted from the Brussels date of `from` has passed:
/// the start of the day after the `n`-th working day.
pub fn working_days_deadline(from: DateTime<Utc>, n: u32) -> DateTime<Utc> {
    brussels_midnight(add_working_days(brussels_date(from), n) + Duration::days(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("a date")
    }

    #[test]
    fn easter_is_computed_for_known_years() {
        assert_eq!(easter(2025), day(2025, 4, 20));
        assert_eq!(easter(2026), day(2026, 4, 5));
        assert_eq!(easter(2027), day(2027, 3, 28));
    }

    #[test]
    fn working_days_skip_weekends_and_belgian_holidays() {
        // Friday 31 October 2025, then Saturday 1 November (All Saints), Sunday, Monday 3.
        assert_eq!(add_working_days(day(2025, 10, 31), 1), day(2025, 11, 3));
        // Monday 10 November 2025 + 1: Tuesday 11 November is Armistice, so Wednesday.
        assert_eq!(add_working_days(day(2025, 11, 10), 1), day(2025, 11, 12));
        // Easter Monday 6 April 2026.
        assert!(!is_working_day(day(2026, 4, 6)));
        assert!(is_working_day(day(2026, 4, 7)));
        // Ten working days from Monday 5 January 2026: Monday 19 January.
        assert_eq!(add_working_days(day(2026, 1, 5), 10), day(2026, 1, 19));
    }

    #[test]
    fn a_brussels_day_starts_at_23_or_22_utc() {
        assert_eq!(
            brussels_midnight(day(2026, 1, 20)),
            Utc.with_ymd_and_hms(2026, 1, 19, 23, 0, 0).single().expect("a time")
        );
        assert_eq!(
            brussels_midnight(day(2026, 7, 20)),
            Utc.with_ymd_and_hms(2026, 7, 19, 22, 0, 0).single().expect("a time")
        );
    }

    #[test]
    fn a_deadline_of_ten_working_days_passes_at_the_start_of_the_next_day() {
        let made = Utc.with_ymd_and_hms(2026, 1, 5, 10, 0, 0).single().expect("a time");
        assert_eq!(working_days_deadline(made, 10), brussels_midnight(day(2026, 1, 20)));
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let start = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).single().expect("a time");
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::days(2));
        assert_eq!(clock.now(), start + Duration::days(2));
        assert_eq!(clock.today(), day(2026, 3, 3));
    }
}
