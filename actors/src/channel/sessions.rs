//! Commands about the Claude session itself: the conversation's sessions and going back to one
//! (`resume`, which for approvers also takes on a session started in a terminal in the same
//! directory), `fork` (a thread that starts from a copy: `--fork-session`), `handoff` (the
//! command that continues it in a terminal), `context` (how full the window is) and `compact`
//! (the CLI's `/compact`, run as a turn).

use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use actix::prelude::*;
use tracing::info;

use super::queue::Pending;
use super::{ChannelActor, EndReason};
use crate::claude::CliCommand;
use crate::conversation::ConversationRef;
use crate::frontend::{Origin, ReplyKind, ReplyTo};
use crate::ids::{ChannelId, MessageId};
use crate::store::{AdoptSession, ListSessions, ResumeSession, SeedFork, StoreError};

impl ChannelActor {
    pub(super) fn sessions(&mut self, origin: ReplyTo, ctx: &mut Context<Self>) {
        let ask = self.deps.store.send(ListSessions {
            conversation_id: self.conversation.id,
        });
        ctx.spawn(ask.into_actor(self).map(move |res, act, _| {
            let current = act.record.as_ref().and_then(|r| r.session_id.clone());
            let (text, is_error) = match res.map_err(StoreError::from).and_then(|r| r) {
                Ok(all) if all.is_empty() => ("No Claude sessions yet.".to_string(), false),
                Ok(all) => {
                    let mut text = format!(
                        "Sessions of this conversation (`{}resume ID` goes back to one):",
                        act.deps.command_prefix
                    );
                    for s in all.iter().take(10) {
                        let mark = if current.as_deref() == Some(s.session_id.as_str()) {
                            " ← current"
                        } else {
                            ""
                        };
                        let last = humantime::format_rfc3339_seconds(
                            UNIX_EPOCH + Duration::from_millis(s.last_at_ms.max(0) as u64),
                        );
                        let _ = write!(
                            text,
                            "\n• `{}` — {} message(s), ${:.4}, last {last}{mark}",
                            s.session_id, s.messages, s.cost_usd
                        );
                    }
                    (text, false)
                }
                Err(e) => (format!("Could not read the sessions: {e}"), true),
            };
            act.reply(origin, ReplyKind::Command, text, is_error);
        }));
    }

    /// Goes back to one of this conversation's sessions; an approver may also name a session
    /// the CLI has for this conversation's directory (one started in a terminal), which it
    /// takes on.
    pub(super) fn resume(
        &mut self,
        session: String,
        origin: ReplyTo,
        approver: bool,
        ctx: &mut Context<Self>,
    ) {
        let (store, runner, cwd) = (
            self.deps.store.clone(),
            self.deps.runner.clone(),
            self.cwd(),
        );
        let (id, name, profile_id) = (
            self.conversation.id,
            self.conversation.name.clone(),
            self.conversation.profile.id,
        );
        let wanted = session.clone();
        let ask = async move {
            let known = store
                .send(ResumeSession {
                    conversation_id: id,
                    session_id: wanted.clone(),
                    adopt: None,
                })
                .await
                .map_err(StoreError::from)
                .and_then(|r| r)?;
            if known || !approver {
                return Ok((known, false));
            }
            // Reading the CLI's files: off the actors' thread.
            let (dir, probe) = (cwd.clone(), wanted.clone());
            let found = tokio::task::spawn_blocking(move || runner.has_session(&dir, &probe))
                .await
                .unwrap_or(false);
            if !found {
                return Ok((false, false));
            }
            let adopt = AdoptSession {
                name,
                profile_id,
                project_dir: cwd,
            };
            store
                .send(ResumeSession {
                    conversation_id: id,
                    session_id: wanted,
                    adopt: Some(adopt),
                })
                .await
                .map_err(StoreError::from)
                .and_then(|r| r)
                .map(|taken| (taken, true))
        };
        // Wait: the next message resumes the chosen session.
        ctx.wait(ask.into_actor(self).map(move |res, act, _| {
            let (text, is_error) = match res {
                Ok((true, adopted)) => {
                    // The warm process holds the other session.
                    act.end_warm(EndReason::Other);
                    act.saves.forget_carry();
                    act.clear_todo();
                    if let Some(r) = act.record.as_mut() {
                        r.session_id = Some(session.clone());
                    }
                    let from = if adopted { " (taken on from the terminal)" } else { "" };
                    (format!("The next message continues session `{session}`{from}."), false)
                }
                Ok((false, _)) => (
                    format!(
                        "`{}` is not one of this conversation's sessions (`{}sessions` lists them){}.",
                        crate::text::truncate_chars(&session, 40).replace('`', "'"),
                        act.deps.command_prefix,
                        if approver {
                            ", nor a session the CLI has for this conversation's directory"
                        } else {
                            ""
                        }
                    ),
                    true,
                ),
                Err(e) => (format!("Could not switch sessions: {e}"), true),
            };
            act.reply(origin, ReplyKind::Command, text, is_error);
        }));
    }

    /// Where this conversation's runs work: its stored directory (a thread's worktree), else
    /// its channel's project directory.
    fn cwd(&self) -> std::path::PathBuf {
        self.record.as_ref().map_or_else(
            || self.conversation.profile.project_dir.clone(),
            |r| std::path::PathBuf::from(&r.project_dir),
        )
    }

    /// Starts thread `thread` (made by the front end) from a copy of this conversation's
    /// session; this conversation goes on unchanged.
    pub(super) fn fork(
        &mut self,
        name: Option<&str>,
        thread: Option<ChannelId>,
        origin: ReplyTo,
        ctx: &mut Context<Self>,
    ) {
        let Some(thread) = thread else {
            let text = "A fork opens a thread: use `/claude fork` in Discord.".to_string();
            return self.reply(origin, ReplyKind::Command, text, true);
        };
        let Some((session, cost)) = self
            .record
            .as_ref()
            .and_then(|r| r.session_id.clone().map(|s| (s, r.session_cost_usd)))
        else {
            let text = "Nothing to fork yet: this conversation has no Claude session.".to_string();
            return self.reply(origin, ReplyKind::Command, text, true);
        };
        let profile = std::sync::Arc::clone(&self.conversation.profile);
        let copy = ConversationRef::thread(profile, thread, name.unwrap_or("fork"));
        let seed = self.deps.store.send(SeedFork {
            id: copy.id,
            name: copy.name.clone(),
            profile_id: copy.profile.id,
            project_dir: self.cwd(),
            session_id: session.clone(),
            session_cost_usd: cost,
        });
        ctx.spawn(seed.into_actor(self).map(move |res, act, _| {
            let (text, is_error) = match res.map_err(StoreError::from).and_then(|r| r) {
                Ok(true) => {
                    info!(thread_id = thread.get(), %session, "conversation forked into a thread");
                    (
                        format!(
                            "Forked into <#{thread}>: it starts from this conversation (session `{session}`); this one goes on unchanged."
                        ),
                        false,
                    )
                }
                Ok(false) => ("That thread has a conversation already.".to_string(), true),
                Err(e) => (format!("Could not fork: {e}"), true),
            };
            act.reply(origin, ReplyKind::Command, text, is_error);
        }));
    }

    /// The command that continues this conversation in a terminal. The warm process ends, so
    /// the terminal and the chat never write the session at once.
    pub(super) fn handoff(&mut self, origin: ReplyTo) {
        let Some(session) = self.record.as_ref().and_then(|r| r.session_id.clone()) else {
            let text = "No Claude session here yet: send a message first.".to_string();
            return self.reply(origin, ReplyKind::Command, text, true);
        };
        self.end_warm(EndReason::Other);
        let command = self.deps.runner.handoff_command(&self.cwd(), &session);
        let text = format!(
            "To continue in a terminal on the server (as the service's user):\n```sh\n{command}\n```\n\
             The bot's process for this conversation has stopped, so the two never write the session \
             at once; a message here afterwards continues it, with what the terminal added."
        );
        self.reply(origin, ReplyKind::Command, text, false);
    }

    /// How full the context window was after the last run that said.
    pub(super) fn context_text(&self) -> String {
        let Some(r) = self.record.as_ref().filter(|r| r.session_id.is_some()) else {
            return "No Claude session here yet.".to_string();
        };
        match (r.context_tokens, r.context_window) {
            (Some(t), Some(w)) if w > 0 => format!(
                "Context: {} of {} tokens ({}%) after the last message. `{}compact` summarizes it.",
                thousands(t),
                thousands(w),
                t.saturating_mul(100) / w,
                self.deps.command_prefix
            ),
            (Some(t), _) => format!("Context: {} tokens after the last message.", thousands(t)),
            _ => "Not known yet: the CLI says after the next message.".to_string(),
        }
    }

    /// Runs the CLI's `/compact` as a turn of this conversation, queued like a message.
    pub(super) fn compact(&mut self, origin: ReplyTo, ctx: &mut Context<Self>) {
        if self
            .record
            .as_ref()
            .and_then(|r| r.session_id.as_ref())
            .is_none()
        {
            let text =
                "Nothing to compact yet: this conversation has no Claude session.".to_string();
            return self.reply(origin, ReplyKind::Command, text, true);
        }
        let (message, answer_to) = match origin {
            ReplyTo::Message(o) => (o, None),
            // A command has no message to show progress on: its answer edits the command's.
            ReplyTo::Command(c) => (
                Origin {
                    channel_id: c.channel_id,
                    message_id: MessageId::default(),
                    author_id: c.author_id,
                },
                Some(c),
            ),
        };
        self.enqueue(
            Pending {
                origin: message,
                answer_to,
                prompt: CliCommand::Compact.as_str().to_string(),
                command: Some(CliCommand::Compact),
                attachments: Vec::new(),
                late: false,
                stored: false,
                via: crate::via::Via::Chat,
            },
            ctx,
        );
        self.track_busy();
    }
}

/// `1234567` as `1,234,567`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
