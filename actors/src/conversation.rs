//! Conversations: which one a message belongs to, and the settings of the configured channel
//! behind it. A conversation is a configured channel, or a thread under one (its own id and
//! Claude session, the parent's settings).

use std::path::PathBuf;
use std::sync::Arc;

/// What the core needs of a configured channel: its id and name, the project directory the CLI
/// runs in, and how to run it there. (Who may talk in it is the front end's business.)
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChannelProfile {
    /// Discord channel id.
    pub id: u64,
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
    pub disallowed_tools: Vec<String>,
    /// `--permission-mode` here, else `claude.permission_mode`.
    pub permission_mode: Option<crate::claude::PermissionMode>,
    /// Approvers may change the permission mode from chat (`mode`).
    pub allow_mode_change: bool,
    /// Each thread works in its own git worktree of `project_dir`.
    pub thread_worktrees: bool,
    /// Where the worktrees go (else `<project_dir>/../<repo>.worktrees`).
    pub worktree_root: Option<PathBuf>,
}

/// Which conversation a message belongs to: a configured channel, or a thread under one
/// (its own id and session, the parent's profile).
#[derive(Debug, Clone)]
pub struct ConversationRef {
    /// Channel or thread id.
    pub id: u64,
    /// Human name; `parent/thread` for threads.
    pub name: String,
    /// The channel settings that apply.
    pub profile: Arc<ChannelProfile>,
}

impl ConversationRef {
    /// The conversation of a configured channel itself.
    pub fn channel(profile: Arc<ChannelProfile>) -> Self {
        Self {
            id: profile.id,
            name: profile.name.clone(),
            profile,
        }
    }

    /// The conversation of thread `id`, named `thread`, under the configured channel of
    /// `profile`: named `<channel>/<thread>`.
    pub fn thread(profile: Arc<ChannelProfile>, id: u64, thread: &str) -> Self {
        Self {
            id,
            name: format!("{}/{thread}", profile.name),
            profile,
        }
    }

    /// Whether it is a thread (not the configured channel itself).
    pub fn is_thread(&self) -> bool {
        self.id != self.profile.id
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
