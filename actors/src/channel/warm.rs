//! The conversation's warm CLI process between turns (`claude.live_sessions`): kept for
//! `claude.keep_warm_secs` after a turn, ended then, or earlier when another conversation needs
//! its place under the cap ([`super::WarmPool`]), at shutdown, or by `!reset`. During a turn its
//! job holds it; a generation number makes a stale idle timer do nothing.

use actix::prelude::*;

use super::ChannelActor;
use crate::claude::LiveSession;
use crate::metrics::{Metric, RecordMetric, SessionMetric};

/// End the warm process now, if it is between turns.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct EndWarmSession {
    /// Why.
    pub reason: EndReason,
}

/// Why a warm process is ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// `claude.keep_warm_secs` passed.
    Idle,
    /// Another conversation needed its place (`claude.max_warm_sessions`).
    Evicted,
    /// `!reset`, `!rules clear`, a worktree closing, or shutdown.
    Other,
}

/// The process between turns, and the generation of its hand-overs.
#[derive(Default)]
pub(super) struct Warm {
    live: Option<LiveSession>,
    generation: u64,
}

impl Warm {
    pub(super) fn is_warm(&self) -> bool {
        self.live.is_some()
    }

    /// The process, for a turn (or to be ended); a pending idle timer no longer applies.
    pub(super) fn take(&mut self) -> Option<LiveSession> {
        self.generation += 1;
        self.live.take()
    }

    pub(super) fn get(&self) -> Option<&LiveSession> {
        self.live.as_ref()
    }
}

impl ChannelActor {
    /// Keeps `live` warm for `claude.keep_warm_secs` (or ends it at once when that is zero, or
    /// when shutting down).
    pub(super) fn hold_warm(&mut self, live: LiveSession, ctx: &mut Context<Self>) {
        let keep = self.deps.runner.config().keep_warm();
        self.warm.generation += 1;
        if keep.is_zero() || self.service_stopping() {
            self.deps.warm.remove(self.conversation.id);
            self.observe_session_end(EndReason::Idle);
            live.end();
            return;
        }
        self.warm.live = Some(live);
        self.deps
            .warm
            .idle(self.conversation.id, ctx.address().recipient());
        let generation = self.warm.generation;
        ctx.run_later(keep, move |act, _| {
            if act.warm.generation == generation && !act.queue.is_running() {
                act.end_warm(EndReason::Idle);
            }
        });
    }

    /// Ends the warm process, if there is one between turns.
    pub(super) fn end_warm(&mut self, reason: EndReason) {
        if let Some(live) = self.warm.take() {
            self.deps.warm.remove(self.conversation.id);
            self.observe_session_end(reason);
            live.end();
        }
    }

    fn observe_session_end(&self, reason: EndReason) {
        self.deps
            .metrics
            .do_send(RecordMetric(Metric::Session(match reason {
                EndReason::Idle => SessionMetric::EndedIdle,
                EndReason::Evicted => SessionMetric::EndedEvicted,
                EndReason::Other => SessionMetric::EndedReplaced,
            })));
    }
}

impl Handler<EndWarmSession> for ChannelActor {
    type Result = ();

    fn handle(&mut self, msg: EndWarmSession, _: &mut Self::Context) {
        // Between turns the process is here (a run waiting for its slot has not taken it yet).
        self.end_warm(msg.reason);
    }
}
