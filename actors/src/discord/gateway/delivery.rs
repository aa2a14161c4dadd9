//! What the core sends back, on Discord: replies (from the outbox: posted from their first
//! unposted part, each part recorded, so a restart resumes a reply instead of posting it twice)
//! and the progress of the message being worked on (typing and a progress message, one task per
//! run, fed its steps here). The answer to a `/claude` invocation goes to `slash`.

use std::collections::HashMap;

use actix::prelude::*;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tracing::{error, instrument};

use super::DiscordGateway;
use crate::frontend::{DeliverReply, ProgressStep, ReplyKind, ReplyTo, ShowProgress};
use crate::ids::MessageId;
use crate::store::RecordDelivery;

/// The runs in flight: message → its progress task's input (a step, or `None` at the end).
#[derive(Default)]
pub(super) struct Progress {
    working: HashMap<MessageId, UnboundedSender<Option<String>>>,
}

impl Progress {
    /// Ends the progress display of `message`'s run, if it has one.
    fn end(&mut self, message: MessageId) {
        if let Some(tx) = self.working.remove(&message) {
            let _ = tx.send(None);
        }
    }
}

impl Handler<ShowProgress> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, msg: ShowProgress, ctx: &mut Self::Context) {
        let key = msg.origin.message_id;
        let step = match msg.step {
            ProgressStep::Started => {
                let (tx, rx) = unbounded_channel();
                let worker = self
                    .outbound
                    .clone()
                    .progress(msg.origin.channel_id, key, rx);
                self.send_later(worker, ctx);
                self.progress.working.insert(key, tx);
                return;
            }
            ProgressStep::Queued { .. } => return,
            step => match step.describe() {
                Some(text) => text,
                None => return,
            },
        };
        if let Some(tx) = self.progress.working.get(&key) {
            let _ = tx.send(Some(step));
        }
    }
}

impl Handler<DeliverReply> for DiscordGateway {
    type Result = ();

    #[instrument(skip_all, fields(channel_id = msg.to.channel_id().get(), message_id = msg.to.message_id().map(MessageId::get)))]
    fn handle(&mut self, msg: DeliverReply, ctx: &mut Self::Context) {
        let origin = match msg.to {
            ReplyTo::Command(to) => return self.answer_command(to.command_id, &msg, ctx),
            ReplyTo::Message(origin) => origin,
        };
        self.progress.end(origin.message_id);
        if origin.channel_id.get() == 0 {
            error!(conversation = %msg.conversation, "reply without a Discord channel; not sent");
            return;
        }
        let out = self.outbound.clone();
        let text = if msg.is_error && msg.kind != ReplyKind::Notice {
            format!("⚠️ {}", msg.text)
        } else {
            msg.text
        };
        let (channel, reply_to) = (origin.channel_id, origin.message_id);
        if msg.kind == ReplyKind::Notice {
            self.send_in_order(
                channel,
                async move { out.send_note(channel, reply_to, &text).await },
                ctx,
            );
            return;
        }
        let (from, store, files) = (
            msg.parts_sent,
            msg.durable.then(|| self.store.clone()),
            msg.files,
        );
        self.send_in_order(
            channel,
            async move {
                let report = |state| {
                    if let Some(store) = &store {
                        store.do_send(RecordDelivery {
                            message_id: reply_to,
                            state,
                        });
                    }
                };
                out.send_reply(channel, reply_to, &text, &files, from, &report)
                    .await;
            },
            ctx,
        );
    }
}
