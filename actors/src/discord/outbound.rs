//! Outbound Discord REST work for the gateway: the machinery every send goes through — retries
//! with backoff, nonces, the fallback when the message answered is gone — and the messages that
//! are not replies: prompts with buttons and their edits, and answers to interactions. Replies
//! are in `replies`, the progress message and typing in `progress`.
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

use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serenity::all::{
    CommandInteraction, ComponentInteraction, CreateActionRow, CreateAllowedMentions,
    CreateAttachment, CreateInteractionResponse, CreateInteractionResponseFollowup,
    CreateInteractionResponseMessage, CreateMessage, EditInteractionResponse, EditMessage, Http,
    HttpError, InteractionId, Nonce,
};
use tokio::time::sleep;
use tracing::{debug, error, warn};

use super::chunking::{preview, DISCORD_LIMIT};
use super::ids::{to_channel, to_message, to_user};
use crate::ids::{ChannelId, MessageId, UserId};
use crate::metrics::RestStats;

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
    /// Minimum time between edits of a progress message while text streams.
    pub stream_every: Duration,
    /// A turn that ran this long mentions its asker once its reply is posted.
    pub notify_after: Duration,
    /// Counters.
    pub stats: Arc<RestStats>,
}

/// Why a send failed, in a few words for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Discord answered with this HTTP status.
    #[error("Discord answered HTTP {0}")]
    Answered(u16),
    /// No answer: the request itself failed (serenity's reason, shortened).
    #[error("{0}")]
    NoAnswer(String),
}

impl From<&serenity::Error> for SendError {
    fn from(e: &serenity::Error) -> Self {
        match status_of(e) {
            Some(status) => Self::Answered(status),
            None => Self::NoAnswer(crate::text::truncate_chars(&e.to_string(), 120)),
        }
    }
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
    Chunk(MessageId, usize),
    /// The reply to `id` as a file.
    File(MessageId),
    /// The notice that the reply to `id` could not be delivered.
    Notice(MessageId),
    /// The progress message of the run answering `id`.
    Progress(MessageId),
    /// Notice `n` about `id` that is not its answer (a usage-limit pause, an interrupted run,
    /// a limit's refusal).
    Note(MessageId, u32),
    /// The files attached to the reply to `id`.
    Files(MessageId),
    /// The "queued" notice of `id`.
    Queued(MessageId),
    /// The mention of the asker of `id` after a long turn.
    Ping(MessageId),
}

impl Part {
    /// The nonce: at most 25 characters, as Discord allows (a snowflake has at most 20 digits).
    pub fn nonce(&self) -> String {
        let nonce = match self {
            Self::Chunk(id, n) => format!("{id}-{n}"),
            Self::File(id) => format!("{id}-f"),
            Self::Notice(id) => format!("{id}-n"),
            Self::Progress(id) => format!("{id}-p"),
            Self::Note(id, 0) => format!("{id}-i"),
            Self::Note(id, n) => format!("{id}-i{n}"),
            Self::Files(id) => format!("{id}-a"),
            Self::Queued(id) => format!("{id}-q"),
            Self::Ping(id) => format!("{id}-m"),
        };
        crate::text::truncate_chars(&nonce, 25)
    }
}

/// The HTTP status Discord answered with, if the error is an answer.
pub(crate) fn status_of(e: &serenity::Error) -> Option<u16> {
    match e {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(r)) => Some(r.status_code.as_u16()),
        _ => None,
    }
}

/// A private answer to an interaction (only its user sees it).
pub fn private(text: &str) -> CreateInteractionResponse {
    CreateInteractionResponse::Message(
        CreateInteractionResponseMessage::new()
            .content(text)
            .ephemeral(true),
    )
}

/// What answering an interaction needs of it, whatever its kind (a click, a `/claude`).
#[derive(Debug, Clone)]
pub struct Answerable {
    id: InteractionId,
    token: String,
    channel: ChannelId,
}

impl From<Box<ComponentInteraction>> for Answerable {
    fn from(i: Box<ComponentInteraction>) -> Self {
        Self {
            id: i.id,
            token: i.token.clone(),
            channel: super::ids::channel(i.channel_id),
        }
    }
}

impl From<&CommandInteraction> for Answerable {
    fn from(i: &CommandInteraction) -> Self {
        Self {
            id: i.id,
            token: i.token.clone(),
            channel: super::ids::channel(i.channel_id),
        }
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

    /// Creates one message with `files` (bytes, name) attached, through serenity or, in proxy
    /// mode, our own request.
    async fn create(
        &self,
        channel: ChannelId,
        message: CreateMessage,
        files: &[(&[u8], &str)],
    ) -> Result<serenity::all::Message, serenity::Error> {
        let channel = to_channel(channel);
        if let Some(p) = &self.proxied {
            return p.post(channel, &message, files).await;
        }
        let message = files.iter().fold(message, |m, (bytes, name)| {
            m.add_file(CreateAttachment::bytes(bytes.to_vec(), *name))
        });
        channel.send_message(&*self.http, message).await
    }

    /// One message, retried; falls back to a plain message if the one it answers is gone.
    pub(super) async fn send_one(
        &self,
        channel: ChannelId,
        reply_to: Option<MessageId>,
        content: &str,
        files: &[(&[u8], &str)],
        part: &Part,
    ) -> Result<serenity::all::MessageId, serenity::Error> {
        let build = |reference: Option<MessageId>| {
            // Claude's text must never ping @everyone, roles or users; nor does the reply
            // itself: a long turn's asker is mentioned on purpose, once (`ping`).
            let mut m = CreateMessage::new()
                .content(content)
                .allowed_mentions(CreateAllowedMentions::new().replied_user(false))
                .nonce(Nonce::String(part.nonce()))
                .enforce_nonce(true);
            if let Some(id) = reference {
                m = m.reference_message((to_channel(channel), to_message(id)));
            }
            m
        };
        // The service's own prompts (a schedule's, an HTTP one) have no message to reply to.
        let reply_to = reply_to.filter(|id| !id.is_local());
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

    /// Posts a message with buttons (a permission prompt, a progress message, a "queued"
    /// notice), replying to `reply_to`, with `nonce` (at most 25 characters), pinging only
    /// `mention` (whom its text names); its id, or why Discord would not.
    pub async fn post_with_buttons(
        &self,
        channel: ChannelId,
        reply_to: MessageId,
        text: &str,
        components: Vec<CreateActionRow>,
        nonce: String,
        mention: &[UserId],
    ) -> Result<serenity::all::MessageId, SendError> {
        let users: Vec<serenity::all::UserId> = mention.iter().map(|u| to_user(*u)).collect();
        let build = || {
            let m = CreateMessage::new()
                .content(text)
                .allowed_mentions(CreateAllowedMentions::new().users(users.clone()))
                .components(components.clone())
                .nonce(Nonce::String(nonce.clone()))
                .enforce_nonce(true);
            if reply_to.is_local() {
                m
            } else {
                m.reference_message((to_channel(channel), to_message(reply_to)))
            }
        };
        match self
            .with_retry("post prompt", || self.create(channel, build(), &[]))
            .await
        {
            Ok(m) => Ok(m.id),
            Err(e) => {
                error!(channel_id = channel.get(), message_id = reply_to.get(), error = %e, "a message with buttons could not be posted");
                Err(SendError::from(&e))
            }
        }
    }

    /// Edits a prompt to `text` and takes its buttons away.
    pub async fn close_prompt(
        &self,
        channel: ChannelId,
        message: serenity::all::MessageId,
        text: &str,
    ) {
        let edited = self
            .with_retry("edit prompt", || {
                to_channel(channel).edit_message(
                    &*self.http,
                    message,
                    EditMessage::new().content(text).components(Vec::new()),
                )
            })
            .await;
        if let Err(e) = edited {
            warn!(channel_id = channel.get(), error = %e, "permission prompt could not be edited");
        }
    }

    /// Answers an interaction (within Discord's 3 s: one attempt, no retries).
    pub async fn respond(&self, to: &Answerable, response: CreateInteractionResponse) {
        if let Err(e) = self
            .http
            .create_interaction_response(to.id, &to.token, &response, Vec::new())
            .await
        {
            warn!(channel_id = to.channel.get(), error = %e, "an interaction could not be answered");
        }
    }

    /// Fills in a deferred answer with `text` (cut to Discord's limit).
    pub async fn edit_answer(&self, to: &Answerable, text: &str) {
        let text = preview(text, DISCORD_LIMIT);
        let edit = EditInteractionResponse::new()
            .content(text)
            .allowed_mentions(CreateAllowedMentions::new());
        let edited = self
            .with_retry("edit command answer", || {
                self.http
                    .edit_original_interaction_response(&to.token, &edit, Vec::new())
            })
            .await;
        if let Err(e) = edited {
            warn!(channel_id = to.channel.get(), error = %e, "/claude answer could not be delivered");
        }
    }

    /// A private note to whoever clicked, after the interaction was acknowledged.
    pub async fn whisper(&self, to: &Answerable, text: &str) {
        let note = CreateInteractionResponseFollowup::new()
            .content(text)
            .ephemeral(true);
        if let Err(e) = self
            .http
            .create_followup_message(&to.token, &note, Vec::new())
            .await
        {
            warn!(channel_id = to.channel.get(), error = %e, "follow-up could not be sent");
        }
    }
}
