//! The account's usage limit, shared by every conversation: all of them run on one Claude
//! account, so when one run is refused for a usage limit (or an API 429), no conversation
//! starts a run until the limit resets — or, when the CLI gave no reset time, until a backoff
//! (doubling from `channels.usage_backoff_secs`, capped at 30 minutes) has passed. A refused
//! run is not answered: its message goes back to the head of its queue, each conversation tells
//! its users once, and runs start by themselves when the pause ends.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use actix::prelude::*;
use tracing::info;

use super::queue::Current;
use super::ChannelActor;
use crate::frontend::ReplyKind;
use crate::metrics::{Metric, RecordMetric};
use crate::store::InboxState;

/// The longest backoff without a reset time.
const MAX_BACKOFF: Duration = Duration::from_secs(30 * 60);
/// Runs start this long after the announced reset, so the first one is not refused again.
const AFTER_RESET: Duration = Duration::from_secs(1);

/// A pause of every conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pause {
    /// When runs may start again.
    pub until: SystemTime,
    /// Whether `until` is the reset time the CLI announced (else a backoff).
    pub announced: bool,
    /// Which pause this is (conversations tell their users once per pause).
    pub number: u64,
}

#[derive(Debug, Default)]
struct State {
    pause: Option<Pause>,
    /// Pauses without a reset time in a row, for the backoff.
    unannounced: u32,
    pauses: u64,
}

/// The shared usage-limit gate (cheap to clone).
#[derive(Debug, Clone)]
pub struct UsageGate {
    backoff: Duration,
    state: Arc<Mutex<State>>,
}

impl UsageGate {
    /// A gate whose first backoff without a reset time is `backoff`.
    pub fn new(backoff: Duration) -> Self {
        Self {
            backoff: backoff.max(Duration::from_millis(1)),
            state: Arc::default(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic while holding it leaves nothing half-done worth refusing.
        f(&mut self.state.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A run was refused for the limit; `resets_at` is when the CLI said it resets. Answers
    /// the pause now in force (a later one already in force is kept), and whether it began
    /// now.
    pub fn limited(&self, resets_at: Option<SystemTime>) -> (Pause, bool) {
        let now = SystemTime::now();
        self.with(|s| {
            let (until, announced) = if let Some(t) = resets_at.filter(|t| *t > now) {
                (t + AFTER_RESET, true)
            } else {
                let factor = 2u32.saturating_pow(s.unannounced.min(16));
                s.unannounced += 1;
                (now + (self.backoff * factor).min(MAX_BACKOFF), false)
            };
            match s.pause.filter(|p| p.until > now) {
                Some(p) if p.until >= until => (p, false),
                Some(p) => {
                    let longer = Pause {
                        until,
                        announced,
                        ..p
                    };
                    s.pause = Some(longer);
                    (longer, false)
                }
                None => {
                    s.pauses += 1;
                    let new = Pause {
                        until,
                        announced,
                        number: s.pauses,
                    };
                    s.pause = Some(new);
                    (new, true)
                }
            }
        })
    }

    /// A run went through: the backoff starts small again.
    pub fn passed(&self) {
        self.with(|s| s.unannounced = 0);
    }

    /// The pause in force, if any.
    pub fn paused(&self) -> Option<Pause> {
        let now = SystemTime::now();
        self.with(|s| s.pause.filter(|p| p.until > now))
    }

    /// Pauses so far.
    pub fn pauses(&self) -> u64 {
        self.with(|s| s.pauses)
    }
}

/// What a conversation's users are told when their message waits for the limit.
pub fn pause_notice(pause: &Pause, queued: usize) -> String {
    let at = humantime::format_rfc3339_seconds(pause.until);
    let wait = pause
        .until
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .as_secs();
    let minutes = wait.div_ceil(60);
    if pause.announced {
        format!(
            "⏸️ Claude's usage limit is reached. {queued} message(s) here wait and run by themselves when it resets, at {at} (in about {minutes} min)."
        )
    } else {
        format!(
            "⏸️ Claude's API is refusing requests (rate or usage limit) and gave no reset time. {queued} message(s) here wait; trying again at {at} (in about {minutes} min)."
        )
    }
}

/// A conversation's view of the pause.
#[derive(Debug, Default)]
pub(super) struct PauseState {
    /// Its users were told (once, until a run goes through again: a backoff that is tried and
    /// refused again is no news).
    pub(super) told: bool,
    /// A start is scheduled for the end of the pause.
    wake_scheduled: bool,
}

impl ChannelActor {
    /// The usage limit refused the run of `c`: it goes back to the head of the queue.
    pub(super) fn limited(&mut self, c: Current, resets_at: Option<SystemTime>) {
        let (pause, new) = self.deps.usage.limited(resets_at);
        if new {
            self.deps.metrics.do_send(RecordMetric(Metric::UsagePause {
                until: pause.until,
                announced: pause.announced,
            }));
        }
        if c.message.stored {
            self.mark(c.message.origin.message_id, InboxState::Queued);
        }
        self.queue.put_back(c.message);
        self.observe_queue();
    }

    /// While every conversation is paused for the usage limit: tells the users (once) and
    /// schedules the next start for the end of the pause. Answers whether it is paused.
    pub(super) fn wait_for_pause(&mut self, ctx: &mut Context<Self>) -> bool {
        let Some(pause) = self.deps.usage.paused() else {
            return false;
        };
        self.tell_paused(&pause);
        if !self.pause.wake_scheduled {
            self.pause.wake_scheduled = true;
            let wait = pause
                .until
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            ctx.run_later(wait, |act, ctx| {
                act.pause.wake_scheduled = false;
                act.start_next(ctx);
            });
        }
        true
    }

    /// Tells this conversation's users of `pause`, once.
    fn tell_paused(&mut self, pause: &Pause) {
        if self.pause.told {
            return;
        }
        self.pause.told = true;
        let Some(first) = self.queue.first_waiting() else {
            return;
        };
        info!(channel_id = self.conversation.id.get(), until = %humantime::format_rfc3339_seconds(pause.until), "paused by the usage limit");
        let text = pause_notice(pause, self.queue.waiting());
        self.reply(first, ReplyKind::Notice, text, false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announced_reset_pauses_until_just_after_it() {
        let gate = UsageGate::new(Duration::from_secs(60));
        let reset = SystemTime::now() + Duration::from_secs(3600);
        let (p, new) = gate.limited(Some(reset));
        assert!(p.announced && new);
        assert_eq!(p.until, reset + AFTER_RESET);
        assert_eq!(gate.paused(), Some(p));
        // A second conversation hitting the same limit joins the same pause.
        let (q, new) = gate.limited(Some(reset));
        assert_eq!(q.number, p.number);
        assert!(!new);
        assert_eq!(gate.pauses(), 1);
    }

    #[test]
    fn without_a_reset_time_the_backoff_doubles_up_to_a_cap() {
        let gate = UsageGate::new(Duration::from_secs(60));
        let mut last = Duration::ZERO;
        for _ in 0..8 {
            // Each as if the previous pause had ended.
            gate.with(|s| s.pause = None);
            let (p, _) = gate.limited(None);
            assert!(!p.announced);
            let wait = p
                .until
                .duration_since(SystemTime::now())
                .unwrap_or_default();
            assert!(
                wait + Duration::from_secs(1) >= last,
                "{wait:?} after {last:?}"
            );
            assert!(wait <= MAX_BACKOFF);
            last = wait;
        }
        assert!(last + Duration::from_secs(5) > MAX_BACKOFF);
        gate.passed();
        gate.with(|s| s.pause = None);
        let (p, _) = gate.limited(None);
        let wait = p
            .until
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        assert!(wait <= Duration::from_secs(60));
    }

    #[test]
    fn a_reset_time_in_the_past_is_treated_as_none() {
        let gate = UsageGate::new(Duration::from_secs(5));
        let (p, _) = gate.limited(Some(SystemTime::now() - Duration::from_secs(10)));
        assert!(!p.announced);
        assert!(pause_notice(&p, 2).contains("2 message(s)"));
    }
}
