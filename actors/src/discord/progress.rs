//! A run's progress on Discord: "typing…" while it runs, and a progress message (its content in
//! `progress_view`) with a **Stop** button that goes when the run ends.
//!
//! Edits are paced: at most one every `discord.stream_edit_ms` while text streams (else every
//! `discord.progress_edit_secs`), never sooner than the route's rate-limit headers allow, one at
//! a time — what changes meanwhile is folded into the next edit, and a 429 only delays it, so
//! edits never queue up. When the run ends the task answers its `ack` before anything else:
//! after that no "typing…" is sent, so none can follow the reply, which waits for it.

use std::time::Duration;

use serenity::all::EditMessage;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::oneshot;
use tokio::time::{interval, sleep_until, Instant, MissedTickBehavior};
use tracing::{debug, warn};

use super::ids::to_channel;
use super::outbound::{Outbound, Part};
use super::progress_view::{ProgressView, Summary};
use super::proxied::Edited;
use crate::claude::todo::TodoItem;
use crate::ids::{ChannelId, MessageId};

/// What one run's progress task is told.
#[derive(Debug)]
pub enum ProgressUpdate {
    /// A tool used, or an API retry.
    Step(String),
    /// More text, as Claude writes it.
    Text(String),
    /// Claude's to-do list now.
    Todo(Vec<TodoItem>),
    /// The run is over; `ack` is answered once no "typing…" can follow.
    End {
        /// For the summary.
        summary: Summary,
        /// Answered first thing.
        ack: oneshot::Sender<()>,
    },
}

impl Outbound {
    /// Keeps the typing indicator alive and maintains the progress message of one run, until
    /// `updates` says it ended (or its sender goes).
    pub async fn progress(
        self,
        channel: ChannelId,
        reply_to: MessageId,
        mut updates: UnboundedReceiver<ProgressUpdate>,
    ) {
        let started = Instant::now();
        // Discord shows "typing" for ~10 s per request.
        let mut typing = interval(Duration::from_secs(8));
        typing.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut view = ProgressView::default();
        let mut message: Option<serenity::all::MessageId> = None;
        let mut dirty = false;
        let mut not_before = Instant::now();
        let end = loop {
            tokio::select! {
                // A typing request under way is finished before an update is looked at.
                _ = typing.tick() => {
                    if let Err(e) = to_channel(channel).broadcast_typing(&*self.http).await {
                        debug!(error = %e, "typing indicator failed");
                    }
                }
                update = updates.recv() => match update {
                    Some(ProgressUpdate::End { summary, ack }) => break Some((summary, ack)),
                    None => break None,
                    Some(ProgressUpdate::Step(s)) => { view.step(s); dirty = true; }
                    Some(ProgressUpdate::Text(t)) => { view.text(&t); dirty = true; }
                    Some(ProgressUpdate::Todo(items)) => { view.todo(items); dirty = true; }
                },
                () = sleep_until(not_before), if dirty => {
                    let text = view.render(started.elapsed(), None);
                    let (shown, wait) = self.show(channel, reply_to, message, &text, false).await;
                    message = shown.or(message);
                    // A refused edit (429) keeps what changed for the next one.
                    dirty = wait.is_some_and(|w| w.refused);
                    let pace = if view.is_streaming() { self.stream_every } else { self.progress_every };
                    not_before = Instant::now() + match wait {
                        Some(Wait { wait, refused: true }) => wait,
                        Some(Wait { wait, refused: false }) => wait.max(pace),
                        None => pace,
                    };
                }
            }
        };
        let Some((summary, ack)) = end else {
            return;
        };
        // No "typing…" from here on: the reply may go.
        let _ = ack.send(());
        if message.is_some() {
            sleep_until(not_before).await;
            let text = view.render(started.elapsed(), Some(summary));
            self.show(channel, reply_to, message, &text, true).await;
        }
    }

    /// Posts the progress message (with its **Stop** button), or edits it — taking the button
    /// away when the run is `done`; its id (when posted now), and when the next edit may go.
    async fn show(
        &self,
        channel: ChannelId,
        reply_to: MessageId,
        message: Option<serenity::all::MessageId>,
        text: &str,
        done: bool,
    ) -> (Option<serenity::all::MessageId>, Option<Wait>) {
        let Some(id) = message else {
            let stop = super::approvals::stop_button(channel.into(), reply_to);
            let nonce = Part::Progress(reply_to).nonce();
            let posted = self
                .post_with_buttons(channel, reply_to, text, stop, nonce, &[])
                .await
                .ok();
            return (posted, None);
        };
        let mut edit = EditMessage::new().content(text);
        if done {
            edit = edit.components(Vec::new());
        }
        let edited = match &self.proxied {
            Some(p) => p.edit(to_channel(channel), id, &edit).await,
            // Serenity's own rate limiter paces the edits against Discord.
            None => self
                .with_retry("edit progress", || {
                    to_channel(channel).edit_message(&*self.http, id, edit.clone())
                })
                .await
                .map(|_| Edited::Done(None)),
        };
        match edited {
            Ok(Edited::Done(spent)) => (
                None,
                spent.map(|wait| Wait {
                    wait,
                    refused: false,
                }),
            ),
            Ok(Edited::RateLimited(wait)) => {
                debug!(
                    channel_id = channel.get(),
                    wait_ms = wait.as_millis() as u64,
                    "a progress edit was rate-limited; the next one carries it"
                );
                (
                    None,
                    Some(Wait {
                        wait,
                        refused: true,
                    }),
                )
            }
            Err(e) => {
                warn!(channel_id = channel.get(), error = %e, "progress message could not be edited");
                (None, None)
            }
        }
    }
}

/// When the next edit may go, from the last one's answer.
#[derive(Debug, Clone, Copy)]
struct Wait {
    wait: Duration,
    /// The edit was refused (429): what it carried is still to show.
    refused: bool,
}
