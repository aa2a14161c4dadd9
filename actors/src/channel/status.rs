//! What a conversation is doing, for `!status` / `/claude status` and the console.

use std::fmt::Write as _;
use std::time::SystemTime;

use actix::Message;

use super::ChannelActor;
use crate::claude::PermissionMode;
use crate::ids::ConversationId;

/// What a conversation is doing (`None` if it has no live actor). A front end sends it to the
/// registry, which hands it to the conversation's channel actor.
#[derive(Debug, Message)]
#[rtype(result = "Option<ChannelStatus>")]
pub struct GetStatus {
    /// The conversation.
    pub conversation_id: ConversationId,
}

/// What a channel is doing.
#[derive(Debug, Clone, PartialEq)]
pub struct ChannelStatus {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Human name.
    pub name: String,
    /// When the run in flight started (a run slot was granted).
    pub running_since: Option<SystemTime>,
    /// When the current message began waiting for a run slot.
    pub waiting_since: Option<SystemTime>,
    /// Messages queued behind the current one.
    pub queued: usize,
    /// The stored session id.
    pub session_id: Option<String>,
    /// Messages sent to Claude so far.
    pub message_count: u64,
    /// Total cost in USD.
    pub total_cost_usd: f64,
    /// Whether a warm process is up between turns.
    pub warm: bool,
    /// Permission requests waiting for an answer.
    pub pending_approvals: usize,
    /// Runs wait for the account's usage limit until then.
    pub paused_until: Option<SystemTime>,
    /// Where it works, when not the channel's project directory (a thread's worktree).
    pub workdir: Option<String>,
    /// The model of the next run (chosen here, the channel's, or the CLI's last report).
    pub model: Option<String>,
    /// The permission mode of the next run.
    pub permission_mode: PermissionMode,
}

impl ChannelStatus {
    /// A one-paragraph description for users.
    pub fn describe(&self) -> String {
        let ago = |t: SystemTime| t.elapsed().unwrap_or_default().as_secs();
        let activity = match (self.running_since, self.waiting_since) {
            (Some(t), _) => format!("Running for {} s", ago(t)),
            (None, Some(t)) => format!("Waiting {} s for a free run slot", ago(t)),
            (None, None) => "Idle".to_string(),
        };
        let session = self
            .session_id
            .as_deref()
            .map_or_else(|| "no session yet".to_string(), |s| format!("session {s}"));
        let model = self.model.as_deref().unwrap_or("the CLI's default");
        let mut text = format!(
            "{activity}; {} waiting. Conversation `{}`: {session}, {} message(s), ${:.4} spent; model {model}, permission mode {}.",
            self.queued,
            self.name,
            self.message_count,
            self.total_cost_usd,
            self.permission_mode.as_str()
        );
        if self.pending_approvals > 0 {
            let _ = write!(
                text,
                " {} permission request(s) waiting for an answer.",
                self.pending_approvals
            );
        }
        if self.warm {
            text.push_str(" Claude's process is warm.");
        }
        if let Some(dir) = &self.workdir {
            let _ = write!(text, " Works in `{dir}`.");
        }
        if let Some(until) = self.paused_until {
            let _ = write!(
                text,
                " Paused by Claude's usage limit: queued messages run after {}.",
                humantime::format_rfc3339_seconds(until)
            );
        }
        text
    }
}

impl ChannelActor {
    pub(super) fn status(&self) -> ChannelStatus {
        let record = self.record.as_ref();
        let current = self.queue.current();
        ChannelStatus {
            conversation_id: self.conversation.id,
            name: self.conversation.name.clone(),
            running_since: current.and_then(|c| c.started_at),
            waiting_since: current
                .filter(|c| c.started_at.is_none())
                .map(|c| c.accepted_at),
            queued: self.queue.waiting(),
            session_id: record.and_then(|r| r.session_id.clone()),
            message_count: record.map_or(0, |r| r.message_count),
            total_cost_usd: record.map_or(0.0, |r| r.total_cost_usd),
            warm: self.warm.is_warm(),
            pending_approvals: self.approvals.len(),
            paused_until: self.deps.usage.paused().map(|p| p.until),
            workdir: record
                .map(|r| r.project_dir.clone())
                .filter(|d| std::path::Path::new(d) != self.conversation.profile.project_dir),
            model: self
                .overrides
                .model
                .clone()
                .or_else(|| self.conversation.profile.model.clone())
                .or_else(|| record.and_then(|r| r.model.clone())),
            permission_mode: self.permission_mode(),
        }
    }
}
