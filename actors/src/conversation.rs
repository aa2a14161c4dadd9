//! Conversations: which one a message belongs to, and the settings of the configured channel
//! behind it. A conversation is a configured channel, or a thread under one (its own id and
//! Claude session, the parent's settings).

use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::ids::{ChannelId, ConversationId};

/// What the core needs of a configured channel: its id and name, the project directory the CLI
/// runs in, and how to run it there. (Who may talk in it is the front end's business.) Read
/// from a `[[channel]]` table, beside the front end's part of it.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct ChannelProfile {
    /// The configured channel.
    pub id: ChannelId,
    /// Human name, used by `console --channel NAME` and in logs.
    pub name: String,
    /// The directory `claude` runs in.
    pub project_dir: PathBuf,
    /// `--model` for this channel (else `claude.model`).
    pub model: Option<String>,
    /// `--system-prompt` for this channel.
    pub system_prompt: Option<String>,
    /// `--tools`: the built-in tools Claude may use here (absent = the CLI's default set).
    pub tools: Option<Vec<String>>,
    /// `--disallowedTools`.
    #[serde(default)]
    pub disallowed_tools: Vec<String>,
    /// `--permission-mode` here, else `claude.permission_mode`.
    pub permission_mode: Option<crate::claude::PermissionMode>,
    /// Approvers may change the permission mode from chat (`mode`).
    #[serde(default)]
    pub allow_mode_change: bool,
    /// Each thread works in its own git worktree of `project_dir` (a git repository), on branch
    /// `claude/thread-<id>`; removed when the thread is archived or deleted, if clean.
    #[serde(default)]
    pub thread_worktrees: bool,
    /// Where the worktrees go (else `<project_dir>/../<repo>.worktrees`).
    pub worktree_root: Option<PathBuf>,
    /// Show Claude's text as it is written (the progress message, edited); else only the reply.
    #[serde(default = "yes")]
    pub stream: bool,
    /// What a message that arrives while a turn runs does.
    #[serde(default)]
    pub while_busy: WhileBusy,
}

/// What a message that arrives while a turn runs does (`while_busy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WhileBusy {
    /// It waits its turn (its "queued" notice offers to interrupt).
    #[default]
    Queue,
    /// It interrupts the turn in flight and runs next.
    Interrupt,
}

fn yes() -> bool {
    true
}

/// Which conversation a message belongs to: a configured channel, or a thread under one
/// (its own id and session, the parent's profile).
#[derive(Debug, Clone)]
pub struct ConversationRef {
    /// Its id: the channel's or the thread's.
    pub id: ConversationId,
    /// Human name; `parent/thread` for threads.
    pub name: String,
    /// The channel settings that apply.
    pub profile: Arc<ChannelProfile>,
}

impl ConversationRef {
    /// The conversation of a configured channel itself.
    pub fn channel(profile: Arc<ChannelProfile>) -> Self {
        Self {
            id: profile.id.into(),
            name: profile.name.clone(),
            profile,
        }
    }

    /// The conversation of thread `id`, named `thread`, under the configured channel of
    /// `profile`: named `<channel>/<thread>`.
    pub fn thread(profile: Arc<ChannelProfile>, id: ChannelId, thread: &str) -> Self {
        Self {
            id: id.into(),
            name: format!("{}/{thread}", profile.name),
            profile,
        }
    }

    /// Whether it is a thread (not the configured channel itself).
    pub fn is_thread(&self) -> bool {
        self.id != self.profile.id.into()
    }

    /// Where its messages are posted: its channel or thread.
    pub fn channel_id(&self) -> ChannelId {
        self.id.into()
    }

    /// A thread's own name (its channel's prefix taken off); the channel's name otherwise.
    pub fn thread_name(&self) -> &str {
        self.name
            .strip_prefix(self.profile.name.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .filter(|_| self.is_thread())
            .unwrap_or(&self.name)
    }
}
