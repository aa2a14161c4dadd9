//! What the core sends back, on Discord: replies (from the outbox: posted from their first
//! unposted part, each part recorded, so a restart resumes a reply instead of posting it twice),
//! the progress of the message being worked on (one task per run, fed here: steps, streamed
//! text, the to-do list), and the "queued" notice of a message that waits, with its
//! *Interrupt and run this now* button. A turn that ran longer than `discord.notify_after_secs`
//! mentions its asker in a message of its own once its reply is posted (an edit notifies
//! nobody). The answer to a `/claude` invocation goes to `slash`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio::sync::oneshot;
use tracing::{error, instrument};

use super::DiscordGateway;
use crate::discord::approvals::now_button;
use crate::discord::outbound::Part;
use crate::discord::progress::ProgressUpdate;
use crate::discord::progress_view::Summary;
use crate::frontend::{DeliverReply, Origin, ProgressStep, ReplyKind, ReplyTo, ShowProgress};
use crate::ids::{ChannelId, ConversationId, MessageId, UserId};
use crate::store::RecordDelivery;

/// How long a reply waits for its progress task to stop "typing…".
const TYPING_STOP_WAIT: Duration = Duration::from_secs(5);

/// A run in flight: its progress task's input, and when it started.
struct Running {
    updates: UnboundedSender<ProgressUpdate>,
    since: Instant,
}

/// A waiting message's "queued" notice.
pub(super) struct Queued {
    pub(super) channel: ChannelId,
    /// Its author, who may run it now (as may an approver).
    pub(super) author: UserId,
    /// The notice, once posted.
    posted: Option<serenity::all::MessageId>,
    /// It started (or was answered) before its notice was posted: close it once it is.
    over: bool,
}

/// The runs in flight and the messages waiting, by message.
#[derive(Default)]
pub(super) struct Progress {
    running: HashMap<MessageId, Running>,
    pub(super) queued: HashMap<MessageId, Queued>,
    /// Notices sent about each message not answered yet: each gets its own nonce (a message
    /// refused, retried and refused again is told twice), and the answer forgets the count.
    notes: HashMap<MessageId, u32>,
}

impl Progress {
    /// The number of the next notice about `about` (0 first).
    pub(super) fn next_note(&mut self, about: MessageId) -> u32 {
        let count = self.notes.entry(about).or_default();
        *count += 1;
        *count - 1
    }
}

/// Remember where a "queued" notice was posted.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct NoticePosted {
    message: MessageId,
    notice: Option<serenity::all::MessageId>,
}

impl Handler<ShowProgress> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, msg: ShowProgress, ctx: &mut Self::Context) {
        let key = msg.origin.message_id;
        let update = match msg.step {
            ProgressStep::Started => {
                self.close_notice(key, ctx);
                let (tx, rx) = unbounded_channel();
                let worker = self
                    .outbound
                    .clone()
                    .progress(msg.origin.channel_id, key, rx);
                self.send_later(worker, ctx);
                self.progress.running.insert(
                    key,
                    Running {
                        updates: tx,
                        since: Instant::now(),
                    },
                );
                return;
            }
            ProgressStep::Queued { position } => {
                return self.post_notice(msg.conversation_id, msg.origin, position, ctx);
            }
            ProgressStep::Text(t) => ProgressUpdate::Text(t),
            ProgressStep::Todo(items) => ProgressUpdate::Todo(items),
            step => match step.describe() {
                Some(text) => ProgressUpdate::Step(text),
                None => return,
            },
        };
        if let Some(run) = self.progress.running.get(&key) {
            let _ = run.updates.send(update);
        }
    }
}

impl DiscordGateway {
    /// Posts the "queued" notice of `origin`'s message (once).
    fn post_notice(
        &mut self,
        conversation: ConversationId,
        origin: Origin,
        position: usize,
        ctx: &mut Context<Self>,
    ) {
        let key = origin.message_id;
        if self.progress.queued.contains_key(&key) {
            return;
        }
        self.progress.queued.insert(
            key,
            Queued {
                channel: origin.channel_id,
                author: origin.author_id,
                posted: None,
                over: false,
            },
        );
        let (out, me, channel) = (self.outbound.clone(), ctx.address(), origin.channel_id);
        let text = format!(
            "⏳ Queued (position {position}): Claude is working on an earlier message. Its author or an approver may interrupt that and run this one now."
        );
        self.send_in_order(
            channel,
            async move {
                let buttons = now_button(conversation, key);
                let nonce = Part::Queued(key).nonce();
                let notice = out
                    .post_with_buttons(channel, key, &text, buttons, nonce, &[])
                    .await
                    .ok();
                me.do_send(NoticePosted {
                    message: key,
                    notice,
                });
            },
            ctx,
        );
    }

    /// The message of a "queued" notice runs (or was answered): the notice loses its button.
    fn close_notice(&mut self, message: MessageId, ctx: &mut Context<Self>) {
        let Some(q) = self.progress.queued.get_mut(&message) else {
            return;
        };
        let Some(notice) = q.posted else {
            q.over = true;
            return;
        };
        let (out, channel) = (self.outbound.clone(), q.channel);
        self.progress.queued.remove(&message);
        self.send_later(
            async move {
                out.close_prompt(channel, notice, "▶️ Queued, and now running.")
                    .await;
            },
            ctx,
        );
    }
}

impl Handler<NoticePosted> for DiscordGateway {
    type Result = ();

    fn handle(&mut self, msg: NoticePosted, ctx: &mut Self::Context) {
        let Some(q) = self.progress.queued.get_mut(&msg.message) else {
            return;
        };
        if msg.notice.is_none() {
            self.progress.queued.remove(&msg.message);
            return;
        }
        q.posted = msg.notice;
        if q.over {
            self.close_notice(msg.message, ctx);
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
        if origin.channel_id.get() == 0 {
            error!(conversation = %msg.conversation, "reply without a Discord channel; not sent");
            return;
        }
        let (channel, reply_to) = (origin.channel_id, origin.message_id);
        let out = self.outbound.clone();
        if msg.kind == ReplyKind::Notice {
            let n = self.progress.next_note(reply_to);
            self.send_in_order(
                channel,
                async move { out.send_note(channel, reply_to, n, &msg.text).await },
                ctx,
            );
            return;
        }
        self.progress.notes.remove(&reply_to);
        self.close_notice(reply_to, ctx);
        // The run's progress ends first; the reply waits until no "typing…" can follow it.
        let (stopped, ran_for) = match self.progress.running.remove(&reply_to) {
            Some(run) => {
                let (ack, stopped) = oneshot::channel();
                let summary = Summary {
                    cost_usd: msg.cost_usd,
                    failed: msg.is_error,
                };
                let _ = run.updates.send(ProgressUpdate::End { summary, ack });
                (Some(stopped), Some(run.since.elapsed()))
            }
            None => (None, None),
        };
        let ping = ran_for
            .filter(|t| *t >= self.outbound.notify_after)
            .map(|t| (origin.author_id, t));
        let text = if msg.is_error {
            format!("⚠️ {}", msg.text)
        } else {
            msg.text
        };
        let (from, store, files) = (
            msg.parts_sent,
            msg.durable.then(|| self.store.clone()),
            msg.files,
        );
        self.send_in_order(
            channel,
            async move {
                if let Some(stopped) = stopped {
                    let _ = tokio::time::timeout(TYPING_STOP_WAIT, stopped).await;
                }
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
                if let Some((asker, took)) = ping {
                    out.ping(channel, reply_to, asker, took).await;
                }
            },
            ctx,
        );
    }
}
