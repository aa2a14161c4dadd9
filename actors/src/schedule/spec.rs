//! A schedule's cron expression: parsed by `croner` (five fields, minute granularity, or
//! `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`), its times in a time zone, and the
//! checks that refuse one with a reason a user can act on.

use std::time::Duration;

use chrono::{DateTime, TimeZone as _};
use chrono_tz::Tz;
use croner::Cron;

/// The longest expression taken.
const MAX_LEN: usize = 100;

/// How many of its first times a spacing check looks at.
const SPACING_SAMPLES: usize = 48;

/// A parsed cron expression.
#[derive(Debug, Clone)]
pub struct Spec {
    cron: Cron,
    text: String,
}

impl Spec {
    /// Parses `text`, refusing what would run more often than every `min_interval` (its first
    /// times, from `now_ms`, in `tz`). The error says why, for the user.
    pub fn parse(text: &str, min_interval: Duration, tz: Tz, now_ms: i64) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err(
                "a schedule needs a cron expression, e.g. `0 9 * * 1-5` (weekdays at 9:00)".into(),
            );
        }
        if text.chars().count() > MAX_LEN {
            return Err(format!("a cron expression is at most {MAX_LEN} characters"));
        }
        let fields = text.split_whitespace().count();
        if !text.starts_with('@') && fields != 5 {
            return Err(format!(
                "`{}` has {fields} field(s); a cron expression has five: minute hour day-of-month month day-of-week (e.g. `0 9 * * 1-5`)",
                text.replace('`', "'")
            ));
        }
        let cron = Cron::new(text).parse().map_err(|e| {
            format!(
                "`{}` is not a cron expression this service understands: {e}",
                text.replace('`', "'")
            )
        })?;
        let spec = Self {
            cron,
            text: text.to_string(),
        };
        let times: Vec<i64> =
            std::iter::successors(spec.next_after(now_ms, tz), |t| spec.next_after(*t, tz))
                .take(SPACING_SAMPLES)
                .collect();
        if times.is_empty() {
            return Err(format!("`{}` never runs", spec.text.replace('`', "'")));
        }
        let min_ms = i64::try_from(min_interval.as_millis()).unwrap_or(i64::MAX);
        if times.windows(2).any(|w| w[1] - w[0] < min_ms) {
            return Err(format!(
                "`{}` runs more often than every {} (schedules.min_interval_secs): Claude would be asked too often",
                spec.text.replace('`', "'"),
                humantime::format_duration(min_interval)
            ));
        }
        Ok(spec)
    }

    /// The expression, as given.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The first time it runs after `after_ms` (in `tz`), if any.
    pub fn next_after(&self, after_ms: i64, tz: Tz) -> Option<i64> {
        let after: DateTime<Tz> = tz.timestamp_millis_opt(after_ms).single()?;
        self.cron
            .find_next_occurrence(&after, false)
            .ok()
            .map(|t| t.timestamp_millis())
    }

    /// The times it ran in (`after_ms`, `upto_ms`]: how many (counted up to `cap`), and the
    /// latest.
    pub fn due_between(&self, after_ms: i64, upto_ms: i64, tz: Tz, cap: u64) -> (u64, Option<i64>) {
        let mut count = 0;
        let mut latest = None;
        let mut t = after_ms;
        while count < cap {
            match self.next_after(t, tz) {
                Some(next) if next <= upto_ms => {
                    count += 1;
                    latest = Some(next);
                    t = next;
                }
                _ => return (count, latest),
            }
        }
        // Past the cap, only the latest matters: find it from the end.
        let mut back = upto_ms;
        let step = 3_600_000;
        while back > t {
            let from = (back - step).max(t);
            let mut last = None;
            let mut u = from;
            while let Some(next) = self.next_after(u, tz).filter(|n| *n <= back) {
                last = Some(next);
                u = next;
            }
            if last.is_some() {
                return (count, last);
            }
            back = from;
        }
        (count, latest)
    }
}

/// `ms` as people read it in `tz`: `Mon 8 Dec 09:00 CET`.
pub fn local_time(ms: i64, tz: Tz) -> String {
    crate::time::local_time(ms, tz, "%a %-d %b %H:%M %Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(60);

    fn ms(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .timestamp_millis()
    }

    #[test]
    fn bad_expressions_are_refused_saying_why() {
        let now = ms("2026-12-07T08:00:00Z");
        let err = |s: &str| Spec::parse(s, MIN, Tz::UTC, now).expect_err(s);
        assert!(err("").contains("needs a cron expression"));
        assert!(err("0 9 * *").contains("has 4 field(s)"));
        assert!(err("0 0 9 * * *").contains("has 6 field(s)"));
        assert!(err("61 9 * * *").contains("not a cron expression"));
        assert!(err("0 9 31 2 *").contains("never runs"));
        let often = Spec::parse("*/5 * * * *", Duration::from_secs(600), Tz::UTC, now)
            .expect_err("every five minutes");
        assert!(often.contains("more often than every 10m"), "{often}");
        assert!(Spec::parse("@daily", MIN, Tz::UTC, now).is_ok());
        assert!(Spec::parse("0 9 * * 1-5", MIN, Tz::UTC, now).is_ok());
    }

    #[test]
    fn times_follow_the_time_zone() {
        let spec = Spec::parse("0 9 * * *", MIN, Tz::Europe__Berlin, 0).expect("spec");
        // 09:00 in Berlin in December is 08:00 UTC.
        assert_eq!(
            spec.next_after(ms("2026-12-07T07:00:00Z"), Tz::Europe__Berlin),
            Some(ms("2026-12-07T08:00:00Z"))
        );
        assert_eq!(
            local_time(ms("2026-12-07T08:00:00Z"), Tz::Europe__Berlin),
            "Mon 7 Dec 09:00 CET"
        );
    }

    #[test]
    fn the_times_missed_are_counted_and_the_latest_found_even_past_the_cap() {
        let spec = Spec::parse("0 * * * *", MIN, Tz::UTC, 0).expect("spec");
        let (n, latest) = spec.due_between(
            ms("2026-12-07T08:30:00Z"),
            ms("2026-12-07T13:10:00Z"),
            Tz::UTC,
            1000,
        );
        assert_eq!((n, latest), (5, Some(ms("2026-12-07T13:00:00Z"))));
        let (n, latest) = spec.due_between(
            ms("2026-12-07T08:30:00Z"),
            ms("2026-12-17T13:10:00Z"),
            Tz::UTC,
            10,
        );
        assert_eq!((n, latest), (10, Some(ms("2026-12-17T13:00:00Z"))));
        assert_eq!(
            spec.due_between(
                ms("2026-12-07T08:30:00Z"),
                ms("2026-12-07T08:59:00Z"),
                Tz::UTC,
                10
            ),
            (0, None)
        );
    }

    #[test]
    fn a_time_the_clock_skips_runs_when_it_jumps_and_a_repeated_hour_runs_once() {
        let tz = Tz::Europe__Berlin;
        let spec = Spec::parse("30 2 * * *", MIN, tz, 0).expect("spec");
        let times = |from: &str| -> Vec<String> {
            std::iter::successors(spec.next_after(ms(from), tz), |t| spec.next_after(*t, tz))
                .take(3)
                .map(|t| local_time(t, tz))
                .collect()
        };
        assert_eq!(
            times("2027-03-27T12:00:00Z"),
            [
                "Sun 28 Mar 03:00 CEST",
                "Mon 29 Mar 02:30 CEST",
                "Tue 30 Mar 02:30 CEST"
            ]
        );
        assert_eq!(
            times("2027-10-30T12:00:00Z"),
            [
                "Sun 31 Oct 02:30 CEST",
                "Mon 1 Nov 02:30 CET",
                "Tue 2 Nov 02:30 CET"
            ]
        );
    }
}
