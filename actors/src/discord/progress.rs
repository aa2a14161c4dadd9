//! A run's progress on Discord: "typing…" while it runs, and a progress message listing the
//! tools it uses (`Bash: cargo test`), edited at most every `discord.progress_edit_secs`, with a
//! **Stop** button that goes when the run ends and the message says what was done.

use std::fmt::Write as _;
use std::time::Duration;

use serenity::all::EditMessage;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{interval, sleep_until, Instant, MissedTickBehavior};
use tracing::{debug, warn};

use super::ids::to_channel;
use super::outbound::{Outbound, Part};
use crate::ids::{ChannelId, MessageId};

impl Outbound {
    /// Keeps the typing indicator alive and maintains a progress message for one run, until
    /// `steps` reports the end (a `None` step, or the sender dropped).
    pub async fn progress(
        self,
        channel: ChannelId,
        reply_to: MessageId,
        mut steps: UnboundedReceiver<Option<String>>,
    ) {
        // Discord shows "typing" for ~10 s per request.
        let mut typing = interval(Duration::from_secs(8));
        typing.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut seen: Vec<String> = Vec::new();
        let mut message: Option<serenity::all::MessageId> = None;
        let mut dirty = false;
        let mut next_edit = Instant::now();
        loop {
            tokio::select! {
                _ = typing.tick() => {
                    if let Err(e) = to_channel(channel).broadcast_typing(&*self.http).await {
                        debug!(error = %e, "typing indicator failed");
                    }
                }
                step = steps.recv() => match step {
                    Some(Some(s)) => {
                        seen.push(s);
                        dirty = true;
                    }
                    Some(None) | None => break,
                },
                () = sleep_until(next_edit), if dirty => {
                    let text = progress_text(&seen, false);
                    message = self.show(channel, reply_to, message, &text, false).await;
                    dirty = false;
                    next_edit = Instant::now() + self.progress_every;
                }
            }
        }
        // Finalize: the message now says what was done, not that work is going on.
        if message.is_some() {
            sleep_until(next_edit).await;
            let text = progress_text(&seen, true);
            self.show(channel, reply_to, message, &text, true).await;
        }
    }

    /// Posts the progress message (with its **Stop** button), or edits it — taking the button
    /// away when the run is `done`; returns its id.
    async fn show(
        &self,
        channel: ChannelId,
        reply_to: MessageId,
        message: Option<serenity::all::MessageId>,
        text: &str,
        done: bool,
    ) -> Option<serenity::all::MessageId> {
        if let Some(id) = message {
            let edited = self
                .with_retry("edit progress", || {
                    let mut edit = EditMessage::new().content(text);
                    if done {
                        edit = edit.components(Vec::new());
                    }
                    to_channel(channel).edit_message(&*self.http, id, edit)
                })
                .await;
            if let Err(e) = edited {
                warn!(channel_id = channel.get(), error = %e, "progress message could not be edited");
            }
            Some(id)
        } else {
            let stop = super::approvals::stop_button(channel.into(), reply_to);
            let nonce = Part::Progress(reply_to).nonce();
            self.post_with_buttons(channel, reply_to, text, stop, nonce)
                .await
                .ok()
        }
    }
}

/// The progress message: the last few steps, and how many there were.
fn progress_text(steps: &[String], done: bool) -> String {
    const SHOWN: usize = 8;
    let skipped = steps.len().saturating_sub(SHOWN);
    let mut text = if done {
        format!("Done — {} step(s):", steps.len())
    } else {
        "Working…".to_string()
    };
    if skipped > 0 {
        let _ = write!(text, "\n… {skipped} earlier step(s)");
    }
    for s in &steps[skipped..] {
        text.push_str("\n• `");
        text.push_str(&s.replace('`', "'"));
        text.push('`');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_text_shows_the_last_steps() {
        let steps: Vec<String> = (0..10).map(|i| format!("Bash: step {i}")).collect();
        let t = progress_text(&steps, false);
        assert!(t.starts_with("Working…\n… 2 earlier step(s)"));
        assert!(t.contains("`Bash: step 9`") && !t.contains("step 1`"));
        assert!(progress_text(&steps, true).starts_with("Done — 10 step(s):"));
    }
}
