//! Spend and message limits per person and per channel (`[limits]`).
//!
//! A message is checked when its turn comes, just before it runs: the spend of runs (with who
//! asked) against the daily and monthly limits, and the messages that ran in the last hour
//! against the hourly ones — from the [`Ledger`] the channel actors keep as runs start and end
//! (loaded from the store at start), so a check is a lookup, not a query. A turn that crosses a limit finishes; the next one
//! is refused — kept in the inbox as refused, its author told which limit and when it frees
//! (days and months in `limits.timezone`), and `!retry` runs it once the limit allows.
//! Approvers may lift a person's own limits until the end of the day.
//!
//! This file holds the settings, the decision (pure: figures in, refusal out) and [`Limits`],
//! what the actors share; `ledger` the figures.

mod ledger;

pub use ledger::{Ledger, Whose};

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::ids::{ChannelId, UserId};

/// The `[limits]` settings; 0 means no limit.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// USD one person may spend per day, across channels.
    #[serde(default)]
    pub user_daily_usd: f64,
    /// USD one person may spend per month.
    #[serde(default)]
    pub user_monthly_usd: f64,
    /// USD one channel (with its threads) may spend per day.
    #[serde(default)]
    pub channel_daily_usd: f64,
    /// USD one channel may spend per month.
    #[serde(default)]
    pub channel_monthly_usd: f64,
    /// Messages one person may have run per hour (sliding).
    #[serde(default)]
    pub user_messages_per_hour: u32,
    /// Messages one channel may have run per hour.
    #[serde(default)]
    pub channel_messages_per_hour: u32,
    /// Where days and months begin (an IANA name).
    #[serde(default = "utc")]
    pub timezone: Tz,
}

fn utc() -> Tz {
    Tz::UTC
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            user_daily_usd: 0.0,
            user_monthly_usd: 0.0,
            channel_daily_usd: 0.0,
            channel_monthly_usd: 0.0,
            user_messages_per_hour: 0,
            channel_messages_per_hour: 0,
            timezone: Tz::UTC,
        }
    }
}

/// Which limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    /// `user_daily_usd`.
    UserDaily,
    /// `user_monthly_usd`.
    UserMonthly,
    /// `channel_daily_usd`.
    ChannelDaily,
    /// `channel_monthly_usd`.
    ChannelMonthly,
    /// `user_messages_per_hour`.
    UserRate,
    /// `channel_messages_per_hour`.
    ChannelRate,
}

impl LimitKind {
    /// The setting's name, for messages, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserDaily => "user_daily_usd",
            Self::UserMonthly => "user_monthly_usd",
            Self::ChannelDaily => "channel_daily_usd",
            Self::ChannelMonthly => "channel_monthly_usd",
            Self::UserRate => "user_messages_per_hour",
            Self::ChannelRate => "channel_messages_per_hour",
        }
    }

    /// Whether it is the person's own (an approver's lift covers it).
    pub fn is_personal(self) -> bool {
        matches!(self, Self::UserDaily | Self::UserMonthly | Self::UserRate)
    }
}

/// The periods a check looks at, in unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Now.
    pub now_ms: i64,
    /// Today's start and the next day's, in the limits' timezone.
    pub day: (i64, i64),
    /// This month's start and the next month's.
    pub month: (i64, i64),
    /// An hour ago.
    pub hour_ago_ms: i64,
}

/// What the store found for one message's author and channel.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Spent {
    /// The author's spend today and this month, in USD.
    pub user_day: f64,
    pub user_month: f64,
    /// The channel's (with its threads).
    pub channel_day: f64,
    pub channel_month: f64,
    /// When each of the author's messages that ran in the last hour arrived, oldest first.
    pub user_hour: Vec<i64>,
    /// The channel's.
    pub channel_hour: Vec<i64>,
    /// The author's limits are lifted until then.
    pub lifted_until_ms: Option<i64>,
}

/// One person's spend.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonSpend {
    /// Who.
    pub user: UserId,
    /// USD today.
    pub day: f64,
    /// USD this month.
    pub month: f64,
    /// Their limits are lifted until then.
    pub lifted_until_ms: Option<i64>,
}

/// Why a message is not run.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    /// The limit reached.
    pub kind: LimitKind,
    /// What it is set to, as said to the user (`$5.00 per day`).
    pub limit: String,
    /// When it frees (unix ms).
    pub frees_at_ms: i64,
}

impl LimitsConfig {
    /// Whether any limit is set (else nothing is checked, nothing read).
    pub fn is_active(&self) -> bool {
        self.user_daily_usd > 0.0
            || self.user_monthly_usd > 0.0
            || self.channel_daily_usd > 0.0
            || self.channel_monthly_usd > 0.0
            || self.user_messages_per_hour > 0
            || self.channel_messages_per_hour > 0
    }

    /// Every limit in range: (the key, why not) otherwise.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        for (key, usd) in [
            ("user_daily_usd", self.user_daily_usd),
            ("user_monthly_usd", self.user_monthly_usd),
            ("channel_daily_usd", self.channel_daily_usd),
            ("channel_monthly_usd", self.channel_monthly_usd),
        ] {
            if !(0.0..=1_000_000.0).contains(&usd) {
                return Err((
                    key,
                    format!("{usd} is out of range: must be between 0 (no limit) and 1000000"),
                ));
            }
        }
        for (key, n) in [
            ("user_messages_per_hour", self.user_messages_per_hour),
            ("channel_messages_per_hour", self.channel_messages_per_hour),
        ] {
            if n > 100_000 {
                return Err((
                    key,
                    format!("{n} is out of range: must be between 0 (no limit) and 100000"),
                ));
            }
        }
        Ok(())
    }

    /// The day, month and hour around `now_ms`.
    pub fn windows(&self, now_ms: i64) -> Windows {
        let tz = self.timezone;
        let now = tz.from_utc_datetime(
            &DateTime::<Utc>::from_timestamp_millis(now_ms)
                .unwrap_or_default()
                .naive_utc(),
        );
        let today = now.date_naive();
        let first = today.with_day(1).unwrap_or(today);
        let next_month = if first.month() == 12 {
            NaiveDate::from_ymd_opt(first.year() + 1, 1, 1)
        } else {
            NaiveDate::from_ymd_opt(first.year(), first.month() + 1, 1)
        }
        .unwrap_or(first);
        Windows {
            now_ms,
            day: (
                start_of(tz, today),
                start_of(tz, today.succ_opt().unwrap_or(today)),
            ),
            month: (start_of(tz, first), start_of(tz, next_month)),
            hour_ago_ms: now_ms - 3_600_000,
        }
    }

    /// The first limit `spent` reaches, if any. Spend is reached at or over the limit; rate
    /// when the messages that ran in the hour are as many as allowed.
    pub fn check(&self, spent: &Spent, w: &Windows) -> Option<Refusal> {
        let lifted = spent.lifted_until_ms.is_some_and(|t| t > w.now_ms);
        let money = [
            (
                LimitKind::UserDaily,
                self.user_daily_usd,
                spent.user_day,
                w.day.1,
                "day",
            ),
            (
                LimitKind::UserMonthly,
                self.user_monthly_usd,
                spent.user_month,
                w.month.1,
                "month",
            ),
            (
                LimitKind::ChannelDaily,
                self.channel_daily_usd,
                spent.channel_day,
                w.day.1,
                "day",
            ),
            (
                LimitKind::ChannelMonthly,
                self.channel_monthly_usd,
                spent.channel_month,
                w.month.1,
                "month",
            ),
        ];
        for (kind, limit, spent, frees, per) in money {
            if limit > 0.0 && spent >= limit && !(lifted && kind.is_personal()) {
                return Some(Refusal {
                    kind,
                    limit: format!("${limit:.2} per {per}"),
                    frees_at_ms: frees,
                });
            }
        }
        let rates = [
            (
                LimitKind::UserRate,
                self.user_messages_per_hour,
                &spent.user_hour,
            ),
            (
                LimitKind::ChannelRate,
                self.channel_messages_per_hour,
                &spent.channel_hour,
            ),
        ];
        for (kind, limit, ran) in rates {
            let limit_n = limit as usize;
            if limit > 0 && ran.len() >= limit_n && !(lifted && kind.is_personal()) {
                // One more may run when the one that leaves room for it is an hour old.
                let freeing = ran.get(ran.len() - limit_n).copied().unwrap_or(w.now_ms);
                return Some(Refusal {
                    kind,
                    limit: format!("{limit} message(s) per hour"),
                    frees_at_ms: freeing + 3_600_000,
                });
            }
        }
        None
    }

    /// The settings, as `/claude limits` shows them.
    pub fn describe(&self) -> String {
        if !self.is_active() {
            return "No spend or message limits are set (`[limits]`).".into();
        }
        let mut text = format!("Limits (days and months in {}):", self.timezone.name());
        let money = [
            ("each person", "day", self.user_daily_usd),
            ("each person", "month", self.user_monthly_usd),
            ("each channel", "day", self.channel_daily_usd),
            ("each channel", "month", self.channel_monthly_usd),
        ];
        for (who, per, usd) in money {
            if usd > 0.0 {
                let _ = write!(text, "\n• {who}: ${usd:.2} per {per}");
            }
        }
        for (who, n) in [
            ("each person", self.user_messages_per_hour),
            ("each channel", self.channel_messages_per_hour),
        ] {
            if n > 0 {
                let _ = write!(text, "\n• {who}: {n} message(s) per hour");
            }
        }
        text
    }

    /// Each person's spend (`/claude usage`), with what is left of their own limits.
    pub fn describe_spend(&self, people: &[PersonSpend], w: &Windows) -> String {
        if people.is_empty() {
            return String::new();
        }
        let mut text = String::from("\nBy person (today · this month):");
        for p in people.iter().take(20) {
            let _ = write!(text, "\n• <@{}>: ${:.4} · ${:.4}", p.user, p.day, p.month);
            let left = [
                (self.user_daily_usd, p.day, "today"),
                (self.user_monthly_usd, p.month, "this month"),
            ];
            for (limit, spent, when) in left {
                if limit > 0.0 {
                    let _ = write!(text, " — ${:.2} left {when}", (limit - spent).max(0.0));
                }
            }
            if p.lifted_until_ms.is_some_and(|t| t > w.now_ms) {
                text.push_str(" (lifted for today)");
            }
        }
        text
    }

    /// A time as the user is told it: in the limits' timezone.
    pub fn local_time(&self, at_ms: i64) -> String {
        crate::time::local_time(at_ms, self.timezone, "%Y-%m-%d %H:%M %Z")
    }

    /// What the author of a refused message is told.
    pub fn refusal_text(&self, r: &Refusal, author: UserId, prefix: &str) -> String {
        let whose = if r.kind.is_personal() {
            format!("<@{author}>, your")
        } else {
            "This channel's".to_string()
        };
        let what = match r.kind {
            LimitKind::UserRate | LimitKind::ChannelRate => "message limit",
            _ => "spend limit",
        };
        let lift = if r.kind.is_personal() {
            " An approver can lift it for today with `/claude limits lift`."
        } else {
            ""
        };
        format!(
            "Not run: {whose} {what} ({}) is reached. It frees at {}; then `{prefix}retry` runs this message.{lift}",
            r.limit,
            self.local_time(r.frees_at_ms)
        )
    }
}

/// The limits and their ledger, shared by every channel actor.
#[derive(Debug, Default)]
pub struct Limits {
    /// The settings.
    pub config: LimitsConfig,
    ledger: std::sync::Mutex<Ledger>,
}

impl Limits {
    /// Limits with the figures the store had.
    pub fn new(config: LimitsConfig, ledger: Ledger) -> Self {
        Self {
            config,
            ledger: std::sync::Mutex::new(ledger),
        }
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        // A panic elsewhere while it was held leaves figures that are still figures.
        self.ledger
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The limit a message of `author`'s in `channel` reaches at `now_ms`, if any.
    pub fn check(&self, author: UserId, channel: ChannelId, now_ms: i64) -> Option<Refusal> {
        if !self.config.is_active() {
            return None;
        }
        let w = self.config.windows(now_ms);
        let mut spent = self.ledger().spent(author, channel, &w);
        if !author.is_person() {
            // A prompt over HTTP has no person behind it: only the channel's limits (and the
            // HTTP rate limit) apply.
            spent.lifted_until_ms = Some(i64::MAX);
        }
        self.config.check(&spent, &w)
    }

    /// A message of `author`'s in `channel` starts running.
    pub fn ran(&self, author: UserId, channel: ChannelId, now_ms: i64) {
        if self.config.is_active() {
            self.ledger().add_run(author, channel, now_ms);
        }
    }

    /// A run in `channel` (asked for by `author`) cost `usd`.
    pub fn spent(&self, author: Option<UserId>, channel: ChannelId, usd: f64, now_ms: i64) {
        if self.config.is_active() {
            let w = self.config.windows(now_ms);
            self.ledger().add_spend(author, channel, usd, &w);
        }
    }

    /// `user`'s own limits are lifted until `until_ms`.
    pub fn lift(&self, user: UserId, until_ms: i64) {
        self.ledger().lift(user, until_ms);
    }
}

/// Midnight of `day` in `tz`, in unix ms (the first valid instant, where a change of clocks
/// skips midnight).
fn start_of(tz: Tz, day: NaiveDate) -> i64 {
    let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    (0..4)
        .find_map(|h| {
            tz.from_local_datetime(&(midnight + Duration::hours(h)))
                .earliest()
        })
        .map_or(0, |t| t.timestamp_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn berlin() -> LimitsConfig {
        LimitsConfig {
            user_daily_usd: 1.0,
            user_messages_per_hour: 2,
            timezone: "Europe/Berlin".parse().expect("tz"),
            ..LimitsConfig::default()
        }
    }

    /// 2026-12-06 22:30 UTC is 23:30 in Berlin.
    const NOW: i64 = 1_796_596_200_000;

    #[test]
    fn days_and_months_begin_in_the_limits_timezone() {
        let w = berlin().windows(NOW);
        // Berlin's 2026-12-06 00:00 is 2026-12-05 23:00 UTC.
        assert_eq!(w.day.0, 1_796_511_600_000);
        assert_eq!(w.day.1 - w.day.0, 86_400_000);
        assert_eq!(berlin().local_time(w.day.1), "2026-12-07 00:00 CET");
        assert_eq!(berlin().local_time(w.month.1), "2027-01-01 00:00 CET");
        assert_eq!(berlin().local_time(w.month.0), "2026-12-01 00:00 CET");
    }

    #[test]
    fn a_day_with_a_change_of_clocks_is_its_own_length() {
        let c = berlin();
        // 2026-03-29 12:00 UTC: Berlin's clocks went forward that night.
        let w = c.windows(1_774_785_600_000);
        assert_eq!(w.day.1 - w.day.0, 23 * 3_600_000);
    }

    #[test]
    fn spend_is_refused_at_the_limit_until_the_next_day_unless_lifted() {
        let c = berlin();
        let w = c.windows(NOW);
        let mut spent = Spent {
            user_day: 0.99,
            ..Spent::default()
        };
        assert_eq!(c.check(&spent, &w), None);
        spent.user_day = 1.0;
        let r = c.check(&spent, &w).expect("refused");
        assert_eq!(r.kind, LimitKind::UserDaily);
        assert_eq!(r.frees_at_ms, w.day.1);
        assert!(c
            .refusal_text(&r, UserId(7), "!")
            .contains("$1.00 per day) is reached. It frees at 2026-12-07 00:00 CET"));
        spent.lifted_until_ms = Some(w.day.1);
        assert_eq!(c.check(&spent, &w), None);
        // A lift ends; a channel's limit is never lifted by it.
        spent.lifted_until_ms = Some(NOW - 1);
        assert!(c.check(&spent, &w).is_some());
        let channel = LimitsConfig {
            channel_daily_usd: 0.5,
            ..berlin()
        };
        spent.lifted_until_ms = Some(w.day.1);
        assert_eq!(channel.check(&spent, &w), None);
        spent.channel_day = 0.5;
        assert_eq!(
            channel.check(&spent, &w).map(|r| r.kind),
            Some(LimitKind::ChannelDaily)
        );
    }

    #[test]
    fn the_rate_frees_when_the_message_that_makes_room_is_an_hour_old() {
        let c = berlin();
        let w = c.windows(NOW);
        let mut spent = Spent {
            user_hour: vec![NOW - 50 * 60_000],
            ..Spent::default()
        };
        assert_eq!(c.check(&spent, &w), None, "one of two ran");
        spent.user_hour.push(NOW - 10 * 60_000);
        let r = c.check(&spent, &w).expect("refused");
        assert_eq!(r.kind, LimitKind::UserRate);
        assert_eq!(
            r.frees_at_ms,
            NOW + 10 * 60_000,
            "the older one leaves in 10 min"
        );
        spent.user_hour.insert(0, NOW - 55 * 60_000);
        let r = c.check(&spent, &w).expect("refused");
        assert_eq!(
            r.frees_at_ms,
            NOW + 10 * 60_000,
            "two must leave: the second at +10"
        );
    }

    #[test]
    fn no_limit_set_is_inactive_and_describes_itself() {
        assert!(!LimitsConfig::default().is_active());
        assert!(berlin().is_active());
        let d = berlin().describe();
        assert!(
            d.contains("Europe/Berlin")
                && d.contains("$1.00 per day")
                && d.contains("2 message(s) per hour"),
            "{d}"
        );
    }

    #[test]
    fn no_person_asked_so_only_the_channels_limits_apply() {
        let config = LimitsConfig {
            channel_messages_per_hour: 3,
            ..berlin()
        };
        let limits = Limits::new(config, Ledger::default());
        let channel = ChannelId(1);
        for _ in 0..2 {
            limits.ran(UserId::NOBODY, channel, NOW - 60_000);
        }
        // Two messages in the hour: a person would be at their limit of two, no one is not.
        assert_eq!(
            limits.check(UserId(7), channel, NOW).map(|r| r.kind),
            None,
            "Alice ran none herself"
        );
        limits.ran(UserId(7), channel, NOW - 60_000);
        limits.ran(UserId(7), channel, NOW - 30_000);
        assert_eq!(
            limits.check(UserId(7), channel, NOW).map(|r| r.kind),
            Some(LimitKind::UserRate)
        );
        // Four in the channel now: over its three, for everyone, HTTP included.
        assert_eq!(
            limits.check(UserId::NOBODY, channel, NOW).map(|r| r.kind),
            Some(LimitKind::ChannelRate)
        );
        let under = Limits::new(berlin(), Ledger::default());
        for _ in 0..5 {
            under.ran(UserId::NOBODY, channel, NOW - 60_000);
        }
        assert_eq!(
            under.check(UserId::NOBODY, channel, NOW),
            None,
            "no personal limit"
        );
    }
}
