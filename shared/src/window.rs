//! Fixed UTC time windows for limits: second, minute, hour, day and calendar month.
//!
//! Every replica computes the same window from the wall clock, so the window id can name a
//! counter shared through Redis (`...:2026-11`, `...:29521680`).

use serde::Deserialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    Second,
    Minute,
    Hour,
    Day,
    /// Calendar month in UTC (1st 00:00 to the next 1st).
    Month,
}

/// One occurrence of a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Span {
    /// Stable name of this occurrence, for counter keys.
    pub id: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

impl Span {
    /// Milliseconds left until the window resets (at least 1).
    pub fn remaining_ms(&self, now_ms: u64) -> u64 {
        self.end_ms.saturating_sub(now_ms).max(1)
    }
}

const DAY_MS: u64 = 86_400_000;

impl Window {
    pub fn name(self) -> &'static str {
        match self {
            Window::Second => "second",
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Month => "month",
        }
    }

    /// The occurrence of this window that contains `now_ms` (Unix epoch milliseconds).
    pub fn span(self, now_ms: u64) -> Span {
        let fixed = |length: u64| {
            let index = now_ms / length;
            let start_ms = index * length;
            Span { id: index.to_string(), start_ms, end_ms: start_ms + length }
        };
        match self {
            Window::Second => fixed(1_000),
            Window::Minute => fixed(60_000),
            Window::Hour => fixed(3_600_000),
            Window::Day => fixed(DAY_MS),
            Window::Month => {
                let (year, month) = year_month(now_ms);
                let next = if month == time::Month::December {
                    (year + 1, time::Month::January)
                } else {
                    (year, month.next())
                };
                Span {
                    id: format!("{year:04}-{:02}", u8::from(month)),
                    start_ms: first_of_month_ms(year, month),
                    end_ms: first_of_month_ms(next.0, next.1),
                }
            }
        }
    }
}

/// The UTC calendar year and month of an epoch time in milliseconds.
fn year_month(now_ms: u64) -> (i32, time::Month) {
    let seconds = i64::try_from(now_ms / 1_000).unwrap_or(i64::MAX);
    let date = time::OffsetDateTime::from_unix_timestamp(seconds).map_or(time::Date::MIN, |t| t.date());
    (date.year(), date.month())
}

/// Epoch milliseconds of the 1st of a month, 00:00 UTC (0 before 1970).
fn first_of_month_ms(year: i32, month: time::Month) -> u64 {
    let first = time::Date::from_calendar_date(year, month, 1).unwrap_or(time::Date::MIN);
    let days = first.to_julian_day()
        - time::Date::from_calendar_date(1970, time::Month::January, 1).map_or(0, time::Date::to_julian_day);
    u64::try_from(days).unwrap_or(0) * DAY_MS
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    // 2026-11-23T10:15:30.250Z
    const NOW: u64 = 1_795_428_930_250;

    #[test]
    fn fixed_windows() {
        let minute = Window::Minute.span(NOW);
        assert_eq!(minute.start_ms, 1_795_428_900_000);
        assert_eq!(minute.end_ms, 1_795_428_960_000);
        assert_eq!(minute.remaining_ms(NOW), 29_750);
        assert_eq!(Window::Second.span(NOW).remaining_ms(NOW), 750);
        assert_eq!(Window::Hour.span(NOW).start_ms, 1_795_428_000_000);
        assert_eq!(Window::Day.span(NOW).start_ms, 1_795_392_000_000);
        assert_ne!(Window::Minute.span(NOW).id, Window::Minute.span(NOW + 60_000).id);
    }

    #[test]
    fn calendar_months() {
        let november = Window::Month.span(NOW);
        assert_eq!(november.id, "2026-11");
        assert_eq!(november.start_ms, 1_793_491_200_000); // 2026-11-01
        assert_eq!(november.end_ms, 1_796_083_200_000); // 2026-12-01
        let december = Window::Month.span(november.end_ms);
        assert_eq!(december.id, "2026-12");
        assert_eq!(december.end_ms, 1_798_761_600_000); // 2027-01-01
        assert_eq!(Window::Month.span(november.end_ms - 1).id, "2026-11");
        // Leap February.
        let feb = Window::Month.span(1_835_395_200_000); // 2028-03-01 minus a day
        assert_eq!(feb.id, "2028-02");
        assert_eq!(feb.end_ms - feb.start_ms, 29 * DAY_MS);
        assert_eq!(Window::Month.span(0).id, "1970-01");
    }

    #[test]
    fn months_tile_the_calendar() {
        for days in (0..40_000u64).step_by(97) {
            let now = days * DAY_MS + 43_200_000;
            let month = Window::Month.span(now);
            assert!(month.start_ms <= now && now < month.end_ms, "{month:?}");
            assert_eq!(Window::Month.span(month.end_ms).start_ms, month.end_ms);
            if month.start_ms > 0 {
                assert_ne!(Window::Month.span(month.start_ms - 1).id, month.id);
            }
            assert!((28..=31).contains(&((month.end_ms - month.start_ms) / DAY_MS)));
        }
    }
}
