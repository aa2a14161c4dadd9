//! The save pipeline: after a run, its record (new session id, cost, counts) and its reply are
//! written to the store in one transaction, and only then is the reply sent. The save does not
//! hold up the next queued message: that run starts at once with what the last run left
//! ([`Prior`], carried), while the records are written one at a time, in order, each seeing the
//! one before. Once every record is written the carry is dropped and the store read again.

use std::collections::VecDeque;
use std::fmt::Write as _;

use actix::prelude::*;
use tracing::warn;

use super::job::{JobEnd, Prior, Ran};
use super::ChannelActor;
use crate::frontend::CancelReason;
use crate::metrics::{Metric, RecordMetric, RunOutcome};
use crate::store::{InboxState, Outgoing, StoreError};

/// Runs that have ended, oldest first, whose records are not written yet.
#[derive(Default)]
pub(super) struct Saves {
    unsaved: VecDeque<Ran>,
    /// A record is being written.
    saving: bool,
    /// What the last run leaves for the next one while its record is unwritten.
    carry: Option<Prior>,
}

impl Saves {
    /// What the next run starts from, if a record is still unwritten (else it reads the store).
    pub(super) fn carry(&self) -> Option<Prior> {
        self.carry.clone()
    }

    /// The next run reads the store (a session was chosen there).
    pub(super) fn forget_carry(&mut self) {
        self.carry = None;
    }

    /// Nothing waiting to be written.
    pub(super) fn is_empty(&self) -> bool {
        self.unsaved.is_empty() && !self.saving
    }

    fn push(&mut self, ran: Ran) {
        self.carry = Some(ran.next.clone());
        self.unsaved.push_back(ran);
    }

    /// The oldest unwritten run, unless one is being written (it is then being written).
    fn next(&mut self) -> Option<Ran> {
        if self.saving {
            return None;
        }
        let ran = self.unsaved.pop_front();
        match ran {
            Some(_) => self.saving = true,
            None => self.carry = None,
        }
        ran
    }
}

impl ChannelActor {
    /// A job has ended: its reply goes out (after its record, if it ran), the warm process is
    /// kept, and the next message starts.
    pub(super) fn job_ended(&mut self, end: JobEnd, ctx: &mut Context<Self>) {
        let current = self.queue.finish();
        // The turn is over: whatever it asked and nobody answered is moot.
        for r in self.approvals.withdraw_all() {
            self.publish(r, ctx);
        }
        let live = match end {
            JobEnd::NotRun(reply, live) => {
                if let Some(message) = reply.to.message_id() {
                    self.mark(message, InboxState::Failed);
                }
                self.deps.replies.do_send(*reply);
                live
            }
            JobEnd::Limited { resets_at, live } => {
                if let Some(c) = current {
                    self.limited(c, resets_at);
                }
                live
            }
            JobEnd::Ran(mut ran) => {
                self.pause.told = false;
                // Counted now, before the next message's check, not when the record is written.
                self.deps.limits.spent(
                    ran.record.author,
                    ran.record.profile_id,
                    ran.record.cost.run_usd,
                    crate::time::unix_ms(),
                );
                if ran.outcome == RunOutcome::Succeeded {
                    self.deps.usage.passed();
                }
                if ran.outcome == RunOutcome::Cancelled {
                    match current.map(|c| c.cancel_reason) {
                        Some(CancelReason::Shutdown) => {
                            ran.reply.text = "Stopped: the service is restarting. The conversation is saved; please send this message again in a minute.".into();
                        }
                        Some(CancelReason::Superseded) => {
                            ran.reply.text = "Interrupted: a newer message runs now. The conversation so far is kept.".into();
                        }
                        Some(CancelReason::User) | None => {}
                    }
                }
                let live = ran.live.take();
                self.saves.push(*ran);
                live
            }
        };
        match live {
            Some(live) => self.hold_warm(live, ctx),
            None => self.deps.warm.remove(self.conversation.id),
        }
        // The next run first: its spawn is on the critical path, the save is not.
        self.start_next(ctx);
        self.save_next(ctx);
        self.try_close_worktree(ctx);
    }

    /// Writes the oldest unwritten record, unless one is being written; then sends its reply.
    fn save_next(&mut self, ctx: &mut Context<Self>) {
        let Some(ran) = self.saves.next() else {
            self.notify_if_idle();
            return;
        };
        let Ran {
            mut record,
            mut reply,
            outcome,
            started,
            stored,
            ..
        } = ran;
        // The reply is stored with the record, and its message marked answered, in one
        // transaction: after a crash it is either still to run, or in the outbox.
        record.reply = stored.then(|| Outgoing::of(&reply)).flatten();
        let write = self.deps.store.send(record);
        ctx.spawn(write.into_actor(self).map(move |res, act, ctx| {
            act.saves.saving = false;
            match res.map_err(StoreError::from).and_then(|r| r) {
                Ok(saved) => {
                    act.record = Some(saved.conversation);
                    reply.durable = stored;
                }
                Err(e) => {
                    warn!(channel_id = act.conversation.id.get(), error = %e, "could not save the session");
                    let _ = write!(
                        reply.text,
                        "\n\nWarning: this conversation could not be saved ({e}); the next message may not continue it."
                    );
                }
            }
            act.deps.metrics.do_send(RecordMetric(Metric::RunFinished {
                outcome,
                latency: started.elapsed(),
                cost_usd: reply.cost_usd,
            }));
            act.deps.replies.do_send(reply);
            act.save_next(ctx);
            act.try_close_worktree(ctx);
        }));
    }
}
