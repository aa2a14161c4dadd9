//! Spend and message limits at the moment a message would run (`crate::limits`): the job
//! asks the store what its author and channel spent and ran (with what the runs whose records
//! are still being written cost), and is refused before it takes any time of Claude's; the actor keeps a refused
//! message as refused in the inbox and tells its author which limit and when it frees.

use std::sync::Arc;

use actix::prelude::*;
use tracing::{info, warn};

use super::job::Job;
use super::ChannelActor;
use crate::frontend::{Origin, ReplyKind, ReplyTo};
use crate::ids::UserId;
use crate::limits::Refusal;
use crate::metrics::{Metric, RecordMetric};
use crate::store::{InboxState, LiftLimits, MeasureSpend, StoreError};
use crate::time::unix_ms;

use super::queue::Pending;

impl Job {
    /// The limit this message reaches, if any. Commands' runs and messages outside the inbox
    /// are not checked; a store that cannot answer lets the message run (and says so in the
    /// log): refusing every message while the store is down would lose none of them, but
    /// helps nobody.
    pub(super) async fn over_limit(&self) -> Option<Refusal> {
        if !self.limits.is_active() || !self.stored || self.answer_to.is_some() {
            return None;
        }
        let windows = self.limits.windows(unix_ms());
        let author = self.origin.author_id;
        let measured = self
            .store
            .send(MeasureSpend {
                author,
                profile_id: self.conversation.profile.id,
                windows,
                except: self.origin.message_id,
                pending: self.pending_spend.clone(),
            })
            .await;
        let spent = match measured {
            Ok(Ok(spent)) => spent,
            Ok(Err(e)) => {
                warn!(error = %e, "could not read the spend for the limits; the message runs");
                return None;
            }
            Err(_) => return None,
        };
        self.limits.check(&spent, &windows)
    }
}

impl ChannelActor {
    /// A limit refused `message`: kept as refused (for `!retry`), counted, and its author told.
    pub(super) fn refused(&mut self, message: &Pending, refusal: &Refusal) {
        info!(
            limit = refusal.kind.as_str(),
            author_id = message.origin.author_id.get(),
            frees_at_ms = refusal.frees_at_ms,
            "a limit refused the message"
        );
        if message.stored {
            self.mark(message.origin.message_id, InboxState::Refused);
        }
        self.deps
            .metrics
            .do_send(RecordMetric(Metric::LimitRefused(refusal.kind)));
        let text = self.deps.limits.refusal_text(
            refusal,
            message.origin.author_id,
            &self.deps.command_prefix,
        );
        let origin: Origin = message.origin;
        self.reply(origin, ReplyKind::Notice, text, true);
    }
}

impl ChannelActor {
    /// `limits lift @user`: the person's own limits lifted until the end of the day.
    pub(super) fn lift_limits(&mut self, user: UserId, origin: ReplyTo, ctx: &mut Context<Self>) {
        let limits = Arc::clone(&self.deps.limits);
        let until_ms = limits.windows(unix_ms()).day.1;
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
                            limits.local_time(until_ms)
                        ),
                        false,
                    )
                }
                Err(e) => (format!("Could not lift the limits: {e}"), true),
            };
            act.reply(origin, ReplyKind::Command, text, is_error);
        }));
    }
}
