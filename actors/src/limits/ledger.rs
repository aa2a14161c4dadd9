//! What the limits count, in memory: each person's and each channel's spend per day and per
//! month, the messages each ran in the last hour, and approvers' lifts. The channel actors add
//! to it as runs start and end (on the actors' thread, so a check never waits for the store
//! and never misses a run whose record is still being written); the store keeps the same
//! figures durably, and the ledger is loaded from it at start.

use std::collections::{HashMap, VecDeque};

use super::{Spent, Windows};
use crate::ids::{ChannelId, UserId};

/// Whose figures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Whose {
    /// A person's, across channels.
    User(UserId),
    /// A configured channel's, its threads included.
    Channel(ChannelId),
}

/// The figures; see the module.
#[derive(Debug, Default)]
pub struct Ledger {
    /// USD by whose and the period's start (a day's or a month's, in unix ms).
    spend: HashMap<(Whose, i64), f64>,
    /// When each message that ran in the last hour started, oldest first.
    ran: HashMap<Whose, VecDeque<i64>>,
    /// Lifted until (unix ms).
    lifts: HashMap<UserId, i64>,
}

impl Ledger {
    /// What `author` and `channel` have spent and run, as of `w`.
    pub fn spent(&mut self, author: UserId, channel: ChannelId, w: &Windows) -> Spent {
        let usd = |whose, start| self.spend.get(&(whose, start)).copied().unwrap_or(0.0);
        let (user, chan) = (Whose::User(author), Whose::Channel(channel));
        Spent {
            user_day: usd(user, w.day.0),
            user_month: usd(user, w.month.0),
            channel_day: usd(chan, w.day.0),
            channel_month: usd(chan, w.month.0),
            user_hour: self.last_hour(user, w),
            channel_hour: self.last_hour(chan, w),
            lifted_until_ms: self.lifts.get(&author).copied(),
        }
    }

    /// The starts within the hour before `w.now_ms` (older ones are forgotten).
    fn last_hour(&mut self, whose: Whose, w: &Windows) -> Vec<i64> {
        let Some(starts) = self.ran.get_mut(&whose) else {
            return Vec::new();
        };
        while starts.front().is_some_and(|t| *t < w.hour_ago_ms) {
            starts.pop_front();
        }
        starts.iter().copied().collect()
    }

    /// A run of `author`'s in `channel` cost `usd`, today.
    pub fn add_spend(&mut self, author: Option<UserId>, channel: ChannelId, usd: f64, w: &Windows) {
        if usd <= 0.0 || !usd.is_finite() {
            return;
        }
        let whose = std::iter::once(Whose::Channel(channel)).chain(author.map(Whose::User));
        for who in whose {
            for start in [w.day.0, w.month.0] {
                *self.spend.entry((who, start)).or_default() += usd;
            }
        }
        // Periods before this month's are never read again.
        if self.spend.len() > 4096 {
            self.spend.retain(|(_, start), _| *start >= w.month.0);
        }
    }

    /// A message of `author`'s in `channel` started running at `at_ms`.
    pub fn add_run(&mut self, author: UserId, channel: ChannelId, at_ms: i64) {
        for who in [Whose::User(author), Whose::Channel(channel)] {
            let starts = self.ran.entry(who).or_default();
            // Kept in order: a start older than the newest goes in its place (loading).
            let at = starts.partition_point(|t| *t <= at_ms);
            starts.insert(at, at_ms);
        }
    }

    /// `user`'s own limits are lifted until `until_ms`.
    pub fn lift(&mut self, user: UserId, until_ms: i64) {
        self.lifts.insert(user, until_ms);
    }

    /// Spend loaded from the store: `usd` of `whose` in the period starting at `start`.
    pub fn load_spend(&mut self, whose: Whose, start: i64, usd: f64) {
        *self.spend.entry((whose, start)).or_default() += usd;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::LimitsConfig;

    #[test]
    fn spend_counts_for_the_person_and_the_channel_in_the_day_and_the_month() {
        let w = LimitsConfig::default().windows(1_796_596_200_000);
        let mut l = Ledger::default();
        l.add_spend(Some(UserId(7)), ChannelId(1), 0.05, &w);
        l.add_spend(None, ChannelId(1), 0.02, &w);
        l.add_spend(Some(UserId(8)), ChannelId(2), 0.10, &w);
        let s = l.spent(UserId(7), ChannelId(1), &w);
        assert!((s.user_day - 0.05).abs() < 1e-9 && (s.user_month - 0.05).abs() < 1e-9);
        assert!((s.channel_day - 0.07).abs() < 1e-9, "{s:?}");
        // The next day starts from nothing; the month goes on.
        let tomorrow = LimitsConfig::default().windows(w.day.1 + 1000);
        let s = l.spent(UserId(7), ChannelId(1), &tomorrow);
        assert!(s.user_day.abs() < 1e-12, "{s:?}");
        assert!((s.user_month - 0.05).abs() < 1e-9);
    }

    #[test]
    fn runs_older_than_an_hour_are_forgotten() {
        let c = LimitsConfig::default();
        let now = 1_796_596_200_000;
        let mut l = Ledger::default();
        l.add_run(UserId(7), ChannelId(1), now - 10_000);
        l.add_run(UserId(7), ChannelId(1), now - 4_000_000);
        let s = l.spent(UserId(7), ChannelId(1), &c.windows(now));
        assert_eq!(s.user_hour, [now - 10_000]);
        assert_eq!(s.channel_hour, [now - 10_000]);
        assert!(l
            .spent(UserId(8), ChannelId(2), &c.windows(now))
            .user_hour
            .is_empty());
    }
}
