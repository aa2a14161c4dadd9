//! The command line. Doc comments here are the `--help` text, so they are written for people
//! reading a terminal, not as Markdown.
#![allow(clippy::doc_markdown)]

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Converse with Claude Code from Discord: one conversation per channel, resumed across restarts.
#[derive(Debug, Parser)]
#[command(name = "claude-coordinator", version, about)]
pub struct Cli {
    /// Settings overlay, read after the built-in settings/default.toml and before
    /// COORDINATOR__SECTION__KEY environment variables.
    #[arg(long, global = true, env = "COORDINATOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service: connect to Discord and answer in the configured channels and their
    /// threads. Needs DISCORD_TOKEN and an allowlist (access.*), or access.allow_everyone.
    Run,
    /// Converse with a configured channel from the terminal: each input line is one message;
    /// each reply is printed as it completes. Exits 0 after the last reply.
    Console {
        /// The configured channel (its `name`) to talk to.
        #[arg(long, value_name = "NAME")]
        channel: String,
        /// Print one JSON object per reply: channel, message, reply, session_id, is_error,
        /// cost_usd, kind; and one per permission request (kind "approval").
        #[arg(long)]
        json: bool,
        /// How Claude's permission requests are answered: ask (print the request; the next
        /// input line answers it: y = allow once, a = always, n [reason] = deny, or an option
        /// for a question), all (allow every request), none (deny every request).
        #[arg(long, value_enum, default_value_t = Approve::Ask)]
        approve: Approve,
    },
    /// Check the settings, the claude binary (and its version), the database, the channels'
    /// project directories, the Discord token (never shown) and the allowlist. Exits 1 on any
    /// problem. `run` performs the same checks at start.
    Check,
    /// Write a consistent copy of the session database to FILE while the service runs.
    Backup {
        /// The new file (must not exist).
        file: PathBuf,
    },
    /// List the permission decisions (who allowed or denied which tool use, when, and the
    /// rule stored for "always"), newest first.
    Audit {
        /// Only this conversation (channel name, `channel/thread`, or id).
        #[arg(long, value_name = "NAME")]
        conversation: Option<String>,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Read and reset stored sessions.
    Sessions {
        /// What to do with them.
        #[command(subcommand)]
        action: SessionsCommand,
    },
}

/// How the console answers permission requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Approve {
    /// The next input line answers.
    Ask,
    /// Allow every request.
    All,
    /// Deny every request.
    None,
}

/// `sessions` subcommands.
#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List every stored conversation.
    List {
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show one conversation.
    Show {
        /// Conversation name (channel name, or `channel/thread`), or its id.
        name: String,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Forget a conversation's Claude session: its next message starts a new one.
    Reset {
        /// Conversation name (channel name, or `channel/thread`), or its id.
        name: String,
    },
}
