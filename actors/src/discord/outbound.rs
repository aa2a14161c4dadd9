//! Outbound Discord REST work for the gateway: replies (chunked, or as a file), the typing
//! indicator and the progress message, each send retried with backoff.
//!
//! Every message carries a nonce with `enforce_nonce`, derived from the message it answers and
//! its part (`<message id>-<part>`), so a retry after a timeout or a 5xx — when Discord may have
//! created the message after all — returns the message already posted instead of a second copy.
//!
//! A send that fails with 429, a 5xx or a connection error is retried up to `send_retries`
//! times. A 429 is waited out as long as it asks: with the ratelimiter on, serenity does that
//! itself; in proxy mode message posts go through [`super::proxied`], which reads the wait
//! serenity's errors drop. A reply that still cannot be sent is logged with its channel and
//! message ids — never dropped silently.

use std::fmt::Write as _;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serenity::all::{
    ChannelId, ComponentInteraction, CreateActionRow, CreateAllowedMentions, CreateAttachment,
    CreateInteractionResponse, CreateInteractionResponseFollowup, CreateMessage, EditMessage, Http,
    HttpError, MessageId, Nonce,
};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{interval, sleep, sleep_until, Instant, MissedTickBehavior};
use tracing::{debug, error, warn};

use super::chunking::{preview, split_message, DISCORD_LIMIT};
use crate::files::ReplyFile;
use crate::metrics::RestStats;
use crate::store::Delivery;

/// How outbound sends behave.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Serenity's HTTP client.
    pub http: Arc<Http>,
    /// In proxy mode: message posts, with 429s waited out as asked.
    pub proxied: Option<super::proxied::ProxiedPoster>,
    /// Beyond this many chunks a reply goes as a `.md` file with a preview.
    pub max_chunks: usize,
    /// Retries after the first attempt.
    pub send_retries: u32,
    /// First backoff; doubled each retry (capped at 16 times this).
    pub backoff: Duration,
    /// Minimum time between edits of a progress message.
    pub progress_every: Duration,
    /// Counters.
    pub stats: Arc<RestStats>,
}

/// Why a REST call failed, and whether trying again can help.
fn retry_delay(e: &serenity::Error, attempt: u32, base: Duration) -> Option<Duration> {
    let backoff = base * 2u32.pow(attempt.min(4));
    match e {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(r)) => {
            let status = r.status_code.as_u16();
            (status == 429 || status >= 500).then_some(backoff)
        }
        serenity::Error::Http(HttpError::Request(_)) | serenity::Error::Io(_) => Some(backoff),
        _ => None,
    }
}

/// Which message of the answer to one user message a send is: the key of its nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Chunk `n` of the reply to message `id`.
    Chunk(u64, usize),
    /// The reply to `id` as a file.
    File(u64),
    /// The notice that the reply to `id` could not be delivered.
    Notice(u64),
    /// The progress message of the run answering `id`.
    Progress(u64),
    /// A notice about `id` that is not its answer (a usage-limit pause, an interrupted run).
    Note(u64),
    /// The files attached to the reply to `id`.
    Files(u64),
}

impl Part {
    /// The nonce: at most 25 characters, as Discord allows (a snowflake has at most 20 digits).
    pub fn nonce(&self) -> String {
        let nonce = match self {
            Self::Chunk(id, n) => format!("{id}-{n}"),
            Self::File(id) => format!("{id}-f"),
            Self::Notice(id) => format!("{id}-n"),
            Self::Progress(id) => format!("{id}-p"),
            Self::Note(id) => format!("{id}-i"),
            Self::Files(id) => format!("{id}-a"),
        };
        crate::text::truncate_chars(&nonce, 25)
    }
}

/// A few words on why a send failed, for the user: the HTTP status, or serenity's reason.
fn short_reason(e: &serenity::Error) -> String {
    match status_of(e) {
        Some(status) => format!("Discord answered HTTP {status}"),
        None => crate::text::truncate_chars(&e.to_string(), 120),
    }
}

/// The HTTP status Discord answered with, if the error is an answer.
pub(crate) fn status_of(e: &serenity::Error) -> Option<u16> {
    match e {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(r)) => Some(r.status_code.as_u16()),
        _ => None,
    }
}

impl Outbound {
    /// Runs `op` until it succeeds, fails for good, or runs out of retries.
    pub(crate) async fn with_retry<T, F, Fut>(
        &self,
        what: &str,
        mut op: F,
    ) -> Result<T, serenity::Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, serenity::Error>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Ok(v) => {
                    self.stats.sends.fetch_add(1, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => match retry_delay(&e, attempt, self.backoff) {
                    Some(delay) if attempt < self.send_retries => {
                        attempt += 1;
                        self.stats.retries.fetch_add(1, Ordering::Relaxed);
                        warn!(what, attempt, status = status_of(&e), delay_ms = delay.as_millis() as u64, error = %e, "Discord request failed; retrying");
                        sleep(delay).await;
                    }
                    _ => {
                        self.stats.failures.fetch_add(1, Ordering::Relaxed);
                        return Err(e);
                    }
                },
            }
        }
    }

    /// Sends `text` as a reply to message `reply_to` in `channel`: in order, in chunks (from
    /// part `from` on: the ones before were posted already), or as a file with a preview when
    /// it would take more than `max_chunks` messages; then `files`, attached to one more
    /// message. A reply is never dropped without a word: if a chunk cannot be sent, the whole
    /// reply goes as a file, and if that fails too, a short notice; every failure is logged
    /// with the channel and message ids. `report` hears each part posted, and the end.
    pub async fn send_reply(
        &self,
        channel: u64,
        reply_to: u64,
        text: &str,
        files: &[ReplyFile],
        from: usize,
        report: &dyn Fn(Delivery),
    ) {
        let channel_id = ChannelId::new(channel.max(1));
        let chunks = split_off_thread(text).await;
        let as_file = chunks.len() > self.max_chunks;
        let text_parts = if as_file { 1 } else { chunks.len() };
        if from < text_parts {
            let sent = if as_file {
                self.send_whole(channel_id, reply_to, text).await
            } else {
                self.send_chunks(channel_id, reply_to, text, &chunks, from, report)
                    .await
            };
            if let Err(why) = sent {
                report(Delivery::Failed(why));
                return;
            }
            report(Delivery::Posted(text_parts));
        }
        if !files.is_empty() && from <= text_parts {
            match self.send_files(channel_id, reply_to, files).await {
                Ok(()) => report(Delivery::Posted(text_parts + 1)),
                Err(why) => {
                    report(Delivery::Failed(why));
                    return;
                }
            }
        }
        report(Delivery::Sent);
    }

    /// The reply as `reply.md` with a preview (more than `max_chunks` messages).
    async fn send_whole(
        &self,
        channel: ChannelId,
        reply_to: u64,
        text: &str,
    ) -> Result<(), String> {
        let head = preview(text, DISCORD_LIMIT - 200);
        let note = format!(
            "{head}\n\n… the full reply ({} characters) is attached as `reply.md`.",
            text.chars().count()
        );
        let sent = self
            .send_one(
                channel,
                Some(reply_to),
                &note,
                &[(text.as_bytes(), "reply.md")],
                &Part::File(reply_to),
            )
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) => {
                error!(channel_id = channel.get(), message_id = reply_to, error = %e, "reply could not be delivered (file)");
                self.notify_undelivered(channel, reply_to, &e).await;
                Err(short_reason(&e))
            }
        }
    }

    /// Chunks `from` on, each reported; after a failure the whole reply as a file instead.
    async fn send_chunks(
        &self,
        channel: ChannelId,
        reply_to: u64,
        text: &str,
        chunks: &[String],
        from: usize,
        report: &dyn Fn(Delivery),
    ) -> Result<(), String> {
        let total = chunks.len();
        for (i, chunk) in chunks.iter().enumerate().skip(from) {
            // Only the first chunk is a reply; the rest follow it in order.
            let reference = (i == 0).then_some(reply_to);
            let part = Part::Chunk(reply_to, i);
            if let Err(e) = self.send_one(channel, reference, chunk, &[], &part).await {
                error!(channel_id = channel.get(), message_id = reply_to, chunk = i + 1, total, error = %e, "reply could not be delivered");
                return if self.deliver_as_file(channel, reply_to, text, i, &e).await {
                    Ok(())
                } else {
                    Err(short_reason(&e))
                };
            }
            report(Delivery::Posted(i + 1));
        }
        Ok(())
    }

    /// The files Claude wrote, attached to one message, from the bytes the reply carries (read
    /// when the run ended; nothing is read from the project now).
    async fn send_files(
        &self,
        channel: ChannelId,
        reply_to: u64,
        files: &[ReplyFile],
    ) -> Result<(), String> {
        let content = format!("📎 {} file(s) from Claude", files.len());
        let attach: Vec<(&[u8], &str)> =
            files.iter().map(|f| (&*f.bytes, f.name.as_str())).collect();
        let sent = self
            .send_one(
                channel,
                Some(reply_to),
                &content,
                &attach,
                &Part::Files(reply_to),
            )
            .await;
        sent.map(|_| ()).map_err(|e| {
            error!(channel_id = channel.get(), message_id = reply_to, error = %e, "the reply's files could not be delivered");
            short_reason(&e)
        })
    }

    /// Posts a notice about message `about` (one message, cut to Discord's limit).
    pub async fn send_note(&self, channel: u64, about: u64, text: &str) {
        let channel_id = ChannelId::new(channel.max(1));
        let text = preview(text, DISCORD_LIMIT);
        if let Err(e) = self
            .send_one(channel_id, Some(about), &text, &[], &Part::Note(about))
            .await
        {
            error!(channel_id = channel, message_id = about, error = %e, "notice could not be delivered");
        }
    }

    /// After chunk `failed` could not be sent: the whole reply as a file, else a notice.
    /// Answers whether the file was posted.
    async fn deliver_as_file(
        &self,
        channel: ChannelId,
        reply_to: u64,
        text: &str,
        failed: usize,
        cause: &serenity::Error,
    ) -> bool {
        let what = if failed == 0 {
            "This reply"
        } else {
            "The rest of this reply"
        };
        let note = format!(
            "⚠️ {what} could not be posted as messages ({}); the whole reply is attached as `reply.md`.",
            short_reason(cause)
        );
        match self
            .send_one(
                channel,
                Some(reply_to),
                &note,
                &[(text.as_bytes(), "reply.md")],
                &Part::File(reply_to),
            )
            .await
        {
            Ok(_) => {
                warn!(
                    channel_id = channel.get(),
                    message_id = reply_to,
                    "reply delivered as a file after a failed send"
                );
                true
            }
            Err(e) => {
                error!(channel_id = channel.get(), message_id = reply_to, error = %e, "reply could not be delivered as a file either");
                self.notify_undelivered(channel, reply_to, &e).await;
                false
            }
        }
    }

    /// The last resort: a short notice that a reply was lost, so the user is not left waiting.
    async fn notify_undelivered(&self, channel: ChannelId, reply_to: u64, cause: &serenity::Error) {
        let notice = format!(
            "⚠️ The reply to this message could not be delivered ({}); please send your message again.",
            short_reason(cause)
        );
        let part = Part::Notice(reply_to);
        if let Err(e) = self
            .send_one(channel, Some(reply_to), &notice, &[], &part)
            .await
        {
            error!(channel_id = channel.get(), message_id = reply_to, error = %e, "notice of an undelivered reply could not be delivered");
        }
    }

    /// Creates one message with `files` (bytes, name) attached, through serenity or, in proxy
    /// mode, our own request.
    async fn create(
        &self,
        channel: ChannelId,
        message: CreateMessage,
        files: &[(&[u8], &str)],
    ) -> Result<serenity::all::Message, serenity::Error> {
        if let Some(p) = &self.proxied {
            return p.post(channel, &message, files).await;
        }
        let message = files.iter().fold(message, |m, (bytes, name)| {
            m.add_file(CreateAttachment::bytes(bytes.to_vec(), *name))
        });
        channel.send_message(&*self.http, message).await
    }

    /// One message, retried; falls back to a plain message if the one it answers is gone.
    async fn send_one(
        &self,
        channel: ChannelId,
        reply_to: Option<u64>,
        content: &str,
        files: &[(&[u8], &str)],
        part: &Part,
    ) -> Result<MessageId, serenity::Error> {
        let build = |reference: Option<u64>| {
            // Claude's text must never ping @everyone, roles or users.
            let mut m = CreateMessage::new()
                .content(content)
                .allowed_mentions(CreateAllowedMentions::new().replied_user(true))
                .nonce(Nonce::String(part.nonce()))
                .enforce_nonce(true);
            if let Some(id) = reference {
                m = m.reference_message((channel, MessageId::new(id.max(1))));
            }
            m
        };
        let first = self
            .with_retry("send message", || {
                self.create(channel, build(reply_to), files)
            })
            .await;
        match first {
            Err(e) if reply_to.is_some() && status_of(&e) == Some(400) => {
                debug!(error = %e, "reply refused (original message gone?); sending without reference");
                self.with_retry("send message", || self.create(channel, build(None), files))
                    .await
                    .map(|m| m.id)
            }
            other => other.map(|m| m.id),
        }
    }

    /// Posts a message with buttons (a permission prompt, a progress message), replying to
    /// `reply_to`, with `nonce` (at most 25 characters); its id, or why Discord would not.
    pub async fn post_with_buttons(
        &self,
        channel: u64,
        reply_to: u64,
        text: &str,
        components: Vec<CreateActionRow>,
        nonce: String,
    ) -> Result<MessageId, String> {
        let channel_id = ChannelId::new(channel.max(1));
        let build = || {
            CreateMessage::new()
                .content(text)
                .allowed_mentions(CreateAllowedMentions::new())
                .reference_message((channel_id, MessageId::new(reply_to.max(1))))
                .components(components.clone())
                .nonce(Nonce::String(nonce.clone()))
                .enforce_nonce(true)
        };
        match self
            .with_retry("post prompt", || self.create(channel_id, build(), &[]))
            .await
        {
            Ok(m) => Ok(m.id),
            Err(e) => {
                error!(channel_id = channel, message_id = reply_to, error = %e, "a message with buttons could not be posted");
                Err(short_reason(&e))
            }
        }
    }

    /// Edits a prompt to `text` and takes its buttons away.
    pub async fn close_prompt(&self, channel: u64, message: MessageId, text: &str) {
        let channel_id = ChannelId::new(channel.max(1));
        let edited = self
            .with_retry("edit prompt", || {
                channel_id.edit_message(
                    &*self.http,
                    message,
                    EditMessage::new().content(text).components(Vec::new()),
                )
            })
            .await;
        if let Err(e) = edited {
            warn!(channel_id = channel, error = %e, "permission prompt could not be edited");
        }
    }

    /// Answers an interaction (within Discord's 3 s: one attempt, no retries).
    pub async fn respond(
        &self,
        interaction: &ComponentInteraction,
        response: CreateInteractionResponse,
    ) {
        if let Err(e) = interaction.create_response(&*self.http, response).await {
            warn!(channel_id = interaction.channel_id.get(), error = %e, "interaction could not be answered");
        }
    }

    /// Answers a `/claude` invocation or autocomplete (within Discord's 3 s: one attempt).
    pub async fn respond_command(
        &self,
        interaction: &serenity::all::CommandInteraction,
        response: CreateInteractionResponse,
    ) {
        if let Err(e) = interaction.create_response(&*self.http, response).await {
            warn!(channel_id = interaction.channel_id.get(), error = %e, "/claude could not be answered");
        }
    }

    /// Fills in a deferred `/claude` answer with `text` (cut to Discord's limit).
    pub async fn edit_command_response(
        &self,
        interaction: &serenity::all::CommandInteraction,
        text: &str,
    ) {
        let text = preview(text, DISCORD_LIMIT);
        let edited = self
            .with_retry("edit command answer", || {
                interaction.edit_response(
                    &*self.http,
                    serenity::all::EditInteractionResponse::new()
                        .content(text.clone())
                        .allowed_mentions(CreateAllowedMentions::new()),
                )
            })
            .await;
        if let Err(e) = edited {
            warn!(channel_id = interaction.channel_id.get(), error = %e, "/claude answer could not be delivered");
        }
    }

    /// A private note to whoever clicked, after the interaction was acknowledged.
    pub async fn whisper(&self, interaction: &ComponentInteraction, text: &str) {
        let note = CreateInteractionResponseFollowup::new()
            .content(text)
            .ephemeral(true);
        if let Err(e) = interaction.create_followup(&*self.http, note).await {
            warn!(channel_id = interaction.channel_id.get(), error = %e, "follow-up could not be sent");
        }
    }

    /// Keeps the typing indicator alive and maintains a progress message for one run, until
    /// `steps` reports the end (a `None` step, or the sender dropped).
    pub async fn progress(
        self,
        channel: u64,
        reply_to: u64,
        mut steps: UnboundedReceiver<Option<String>>,
    ) {
        let channel_id = ChannelId::new(channel.max(1));
        // Discord shows "typing" for ~10 s per request.
        let mut typing = interval(Duration::from_secs(8));
        typing.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut seen: Vec<String> = Vec::new();
        let mut message: Option<MessageId> = None;
        let mut dirty = false;
        let mut next_edit = Instant::now();
        loop {
            tokio::select! {
                _ = typing.tick() => {
                    if let Err(e) = channel_id.broadcast_typing(&*self.http).await {
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
                    message = self.show(channel_id, reply_to, message, &text, false).await;
                    dirty = false;
                    next_edit = Instant::now() + self.progress_every;
                }
            }
        }
        // Finalize: the message now says what was done, not that work is going on.
        if message.is_some() {
            sleep_until(next_edit).await;
            let text = progress_text(&seen, true);
            self.show(channel_id, reply_to, message, &text, true).await;
        }
    }

    /// Posts the progress message, or edits it if it exists; returns its id.
    /// Posts the progress message (with its **Stop** button), or edits it — taking the button
    /// away when the run is `done`; returns its id.
    async fn show(
        &self,
        channel: ChannelId,
        reply_to: u64,
        message: Option<MessageId>,
        text: &str,
        done: bool,
    ) -> Option<MessageId> {
        if let Some(id) = message {
            let edited = self
                .with_retry("edit progress", || {
                    let mut edit = EditMessage::new().content(text);
                    if done {
                        edit = edit.components(Vec::new());
                    }
                    channel.edit_message(&*self.http, id, edit)
                })
                .await;
            if let Err(e) = edited {
                warn!(channel_id = channel.get(), error = %e, "progress message could not be edited");
            }
            Some(id)
        } else {
            let stop = super::approvals::stop_button(channel.get(), reply_to);
            let nonce = Part::Progress(reply_to).nonce();
            self.post_with_buttons(channel.get(), reply_to, text, stop, nonce)
                .await
                .ok()
        }
    }
}

/// Above this many bytes a reply is split on a blocking thread: a split is linear, but a few
/// megabytes of it would still hold up every other conversation's replies on the actors' thread.
const SPLIT_OFF_THREAD: usize = 64 * 1024;

/// The messages of `text` ([`split_message`]), split off the actors' thread when it is large.
async fn split_off_thread(text: &str) -> Vec<String> {
    if text.len() <= SPLIT_OFF_THREAD {
        return split_message(text, DISCORD_LIMIT);
    }
    let owned = text.to_string();
    tokio::task::spawn_blocking(move || split_message(&owned, DISCORD_LIMIT))
        .await
        .unwrap_or_else(|_| split_message(text, DISCORD_LIMIT))
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
