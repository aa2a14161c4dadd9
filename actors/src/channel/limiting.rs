//! Spend and message limits at the moment a message would run (`crate::limits`): a lookup in
//! the shared ledger, on the actor's thread; a refused message is kept as refused in the
//! inbox and its author told which limit and when it frees. And `limits lift @user`.

use std::sync::Arc;

use actix::prelude::*;
use tracing::info;

use super::queue::Pending;
use super::ChannelActor;
use crate::frontend::{ReplyKind, ReplyTo};
use crate::ids::UserId;
use crate::limits::Refusal;
use crate::metrics::{Metric, RecordMetric};
use crate::store::{InboxState, LiftLimits, StoreError};
use crate::time::unix_ms;

impl ChannelActor {
    /// The limit `message` reaches if it runs now. Commands' runs and messages the inbox
    /// could not take are not checked.
    pub(super) fn over_limit(&self, message: &Pending) -> Option<Refusal> {
        if !message.stored || message.answer_to.is_some() {
            return None;
        }
        self.deps.limits.check(
            message.origin.author_id,
            self.conversation.profile.id,
            unix_ms(),
        )
    }

    /// A limit refused `message`: kept as refused (for `!retry`), counted, and its author told.
    pub(super) fn refused(&mut self, message: &Pending, refusal: &Refusal) {
        info!(
            limit = refusal.kind.as_str(),
            author_id = message.origin.author_id.get(),
            frees_at_ms = refusal.frees_at_ms,
            "a limit refused the message"
        );
        self.mark(message.origin.message_id, InboxState::Refused);
        self.deps
            .metrics
            .do_send(RecordMetric(Metric::LimitRefused(refusal.kind)));
        let text = self.deps.limits.config.refusal_text(
            refusal,
            message.origin.author_id,
            &self.deps.command_prefix,
        );
        self.reply(message.origin, ReplyKind::Notice, text, true);
    }

    /// `limits lift @user`: the person's own limits lifted until the end of the day.
    pub(super) fn lift_limits(&mut self, user: UserId, origin: ReplyTo, ctx: &mut Context<Self>) {
        let limits = Arc::clone(&self.deps.limits);
        let until_ms = limits.config.windows(unix_ms()).day.1;
        // In force at once; stored so a restart keeps it.
        limits.lift(user, until_ms);
        let lift = self.deps.store.send(LiftLimits {
            user,
            until_ms,
            by: origin.author_id(),
        });
        ctx.spawn(lift.into_actor(self).map(move |res, act, _| {
            let (text, is_error) = match res.map_err(StoreError::from).and_then(|r| r) {
                Ok(()) => {
                    info!(user_id = user.get(), by = origin.author_id().get(), until_ms, "limits lifted");
                    (
                        format!(
                            "<@{user}>'s own limits are lifted until {} (a channel's limits still apply).",
                            limits.config.local_time(until_ms)
                        ),
                        false,
                    )
                }
                Err(e) => (
                    format!("Lifted until the service restarts; it could not be stored: {e}"),
                    true,
                ),
            };
            act.reply(origin, ReplyKind::Command, text, is_error);
        }));
    }
}
