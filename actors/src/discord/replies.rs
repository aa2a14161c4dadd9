//! Replies on Discord: a reply posted in order, in chunks (`chunking`), or as a file with a
//! preview when it would take more than `discord.max_chunks` messages; the files Claude wrote in
//! one more message; and notes that are not answers. A reply is never dropped without a word: if
//! a chunk cannot be sent, the whole reply goes as a file, and if that fails too, a short notice;
//! every failure is logged with the channel and message ids. Each part posted is reported, so a
//! restart resumes a reply from its first unposted part.

use tracing::{error, warn};

use super::chunking::{preview, split_message, DISCORD_LIMIT};
use super::outbound::{Outbound, Part, SendError};
use crate::files::ReplyFile;
use std::time::Duration;

use crate::ids::{ChannelId, MessageId, UserId};
use crate::store::Delivery;

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

impl Outbound {
    /// Sends `text` as a reply to message `reply_to` in `channel` (from part `from` on: the
    /// ones before were posted already), then `files`; `report` hears each part posted, and
    /// the end.
    pub async fn send_reply(
        &self,
        channel: ChannelId,
        reply_to: MessageId,
        text: &str,
        files: &[ReplyFile],
        from: usize,
        report: &dyn Fn(Delivery),
    ) {
        let chunks = split_off_thread(text).await;
        let as_file = chunks.len() > self.max_chunks;
        let text_parts = if as_file { 1 } else { chunks.len() };
        if from < text_parts {
            let sent = if as_file {
                self.send_whole(channel, reply_to, text).await
            } else {
                self.send_chunks(channel, reply_to, text, &chunks, from, report)
                    .await
            };
            if let Err(why) = sent {
                report(Delivery::Failed(why.to_string()));
                return;
            }
            report(Delivery::Posted(text_parts));
        }
        if !files.is_empty() && from <= text_parts {
            match self.send_files(channel, reply_to, files).await {
                Ok(()) => report(Delivery::Posted(text_parts + 1)),
                Err(why) => {
                    report(Delivery::Failed(why.to_string()));
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
        reply_to: MessageId,
        text: &str,
    ) -> Result<(), SendError> {
        let head = preview(text, DISCORD_LIMIT - 200);
        let note = format!(
            "{head}\n\n… the full reply ({} characters) is attached as `reply.md`.",
            text.chars().count()
        );
        match self.post_as_file(channel, reply_to, &note, text).await {
            Ok(()) => Ok(()),
            Err(e) => {
                error!(channel_id = channel.get(), message_id = reply_to.get(), error = %e, "reply could not be delivered (file)");
                self.notify_undelivered(channel, reply_to, &e).await;
                Err(SendError::from(&e))
            }
        }
    }

    /// Chunks `from` on, each reported; after a failure the whole reply as a file instead.
    async fn send_chunks(
        &self,
        channel: ChannelId,
        reply_to: MessageId,
        text: &str,
        chunks: &[String],
        from: usize,
        report: &dyn Fn(Delivery),
    ) -> Result<(), SendError> {
        let total = chunks.len();
        for (i, chunk) in chunks.iter().enumerate().skip(from) {
            // Only the first chunk is a reply; the rest follow it in order.
            let reference = (i == 0).then_some(reply_to);
            let part = Part::Chunk(reply_to, i);
            if let Err(e) = self.send_one(channel, reference, chunk, &[], &part).await {
                error!(channel_id = channel.get(), message_id = reply_to.get(), chunk = i + 1, total, error = %e, "reply could not be delivered");
                return if self.deliver_as_file(channel, reply_to, text, i, &e).await {
                    Ok(())
                } else {
                    Err(SendError::from(&e))
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
        reply_to: MessageId,
        files: &[ReplyFile],
    ) -> Result<(), SendError> {
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
            error!(channel_id = channel.get(), message_id = reply_to.get(), error = %e, "the reply's files could not be delivered");
            SendError::from(&e)
        })
    }

    /// Mentions `asker` — only them — in a message of its own: the turn that answered
    /// `about` took `took`, and its reply is above.
    pub async fn ping(&self, channel: ChannelId, about: MessageId, asker: UserId, took: Duration) {
        if !asker.is_person() {
            return;
        }
        let secs = took.as_secs();
        let text = if secs >= 120 {
            format!(
                "<@{asker}> done: the answer above took {} min {} s.",
                secs / 60,
                secs % 60
            )
        } else {
            format!("<@{asker}> done: the answer above took {secs} s.")
        };
        let posted = self
            .post_with_buttons(
                channel,
                about,
                &text,
                Vec::new(),
                Part::Ping(about).nonce(),
                &[asker],
            )
            .await;
        if let Err(e) = posted {
            warn!(channel_id = channel.get(), message_id = about.get(), error = %e, "the asker could not be mentioned");
        }
    }

    /// Posts a notice about message `about` (one message, cut to Discord's limit).
    pub async fn send_note(&self, channel: ChannelId, about: MessageId, n: u32, text: &str) {
        let text = preview(text, DISCORD_LIMIT);
        if let Err(e) = self
            .send_one(channel, Some(about), &text, &[], &Part::Note(about, n))
            .await
        {
            error!(channel_id = channel.get(), message_id = about.get(), error = %e, "notice could not be delivered");
        }
    }

    /// After chunk `failed` could not be sent: the whole reply as a file, else a notice.
    /// Answers whether the file was posted.
    async fn deliver_as_file(
        &self,
        channel: ChannelId,
        reply_to: MessageId,
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
            SendError::from(cause)
        );
        match self.post_as_file(channel, reply_to, &note, text).await {
            Ok(()) => {
                warn!(
                    channel_id = channel.get(),
                    message_id = reply_to.get(),
                    "reply delivered as a file after a failed send"
                );
                true
            }
            Err(e) => {
                error!(channel_id = channel.get(), message_id = reply_to.get(), error = %e, "reply could not be delivered as a file either");
                self.notify_undelivered(channel, reply_to, &e).await;
                false
            }
        }
    }

    /// Posts `note` with the whole of `text` attached as `reply.md` (its nonce: the reply's
    /// file part, so a retry is posted once).
    async fn post_as_file(
        &self,
        channel: ChannelId,
        reply_to: MessageId,
        note: &str,
        text: &str,
    ) -> Result<(), serenity::Error> {
        self.send_one(
            channel,
            Some(reply_to),
            note,
            &[(text.as_bytes(), "reply.md")],
            &Part::File(reply_to),
        )
        .await
        .map(|_| ())
    }

    /// The last resort: a short notice that a reply was lost, so the user is not left waiting.
    async fn notify_undelivered(
        &self,
        channel: ChannelId,
        reply_to: MessageId,
        cause: &serenity::Error,
    ) {
        let notice = format!(
            "⚠️ The reply to this message could not be delivered ({}); please send your message again.",
            SendError::from(cause)
        );
        let part = Part::Notice(reply_to);
        if let Err(e) = self
            .send_one(channel, Some(reply_to), &notice, &[], &part)
            .await
        {
            error!(channel_id = channel.get(), message_id = reply_to.get(), error = %e, "notice of an undelivered reply could not be delivered");
        }
    }
}
