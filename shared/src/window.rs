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
                let (year, month, _) = civil_from_days(now_ms / DAY_MS);
                let (next_year, next_month) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
                Span {
                    id: format!("{year:04}-{month:02}"),
                    start_ms: days_from_civil(year, month, 1) * DAY_MS,
                    end_ms: days_from_civil(next_year, next_month, 1) * DAY_MS,
                }
            }
        }
    }
}

/// Days since 1970-01-01 to (year, month, day), for dates from 1970 on (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) to days since 1970-01-01, for dates from 1970 on.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year / 400;
    let yoe = year - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
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
    fn civil_round_trip() {
        for days in (0..40_000).step_by(97) {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }
}
