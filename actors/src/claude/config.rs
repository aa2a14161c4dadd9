//! The `[claude]` settings: how to run the CLI, and how to read what it reports.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// A permission mode the CLI accepts (`--permission-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum PermissionMode {
    /// Ask (or refuse) for anything not allowed by a rule. `manual` is the same mode.
    #[default]
    #[serde(rename = "default", alias = "manual")]
    Default,
    /// Accept file edits inside the working directory.
    #[serde(rename = "acceptEdits")]
    AcceptEdits,
    /// Let the CLI decide.
    #[serde(rename = "auto")]
    Auto,
    /// Never ask (refused by the CLI as root unless in a sandbox).
    #[serde(rename = "bypassPermissions")]
    BypassPermissions,
    /// Refuse instead of asking.
    #[serde(rename = "dontAsk")]
    DontAsk,
    /// Plan only; no changes.
    #[serde(rename = "plan")]
    Plan,
}

impl PermissionMode {
    /// The modes that may be chosen from chat (never `bypassPermissions`).
    pub const CHAT: [Self; 5] = [
        Self::Default,
        Self::AcceptEdits,
        Self::Plan,
        Self::DontAsk,
        Self::Auto,
    ];

    /// A mode from its CLI name (any case; `manual` is `default`).
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.trim();
        if name.eq_ignore_ascii_case("manual") {
            return Some(Self::Default);
        }
        [
            Self::Default,
            Self::AcceptEdits,
            Self::Auto,
            Self::BypassPermissions,
            Self::DontAsk,
            Self::Plan,
        ]
        .into_iter()
        .find(|m| m.as_str().eq_ignore_ascii_case(name))
    }

    /// The value for `--permission-mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Default => "default",
            Self::AcceptEdits => "acceptEdits",
            Self::Auto => "auto",
            Self::BypassPermissions => "bypassPermissions",
            Self::DontAsk => "dontAsk",
            Self::Plan => "plan",
        }
    }
}

/// How to read `total_cost_usd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum CostReporting {
    /// Decide from the CLI's version in the init line: 2.1.330 and later report the session's
    /// running total; earlier versions (2.1.197 observed) report the call alone.
    #[default]
    Auto,
    /// Always the session's running total.
    Cumulative,
    /// Always this call alone.
    PerCall,
}

impl CostReporting {
    /// Whether a CLI of `version` reports a running total.
    pub fn is_cumulative(self, version: Option<&str>) -> bool {
        match self {
            Self::Cumulative => true,
            Self::PerCall => false,
            // Unknown version: assume a current CLI.
            Self::Auto => version
                .and_then(parse_version)
                .is_none_or(|v| v >= (2, 1, 330)),
        }
    }
}

fn parse_version(v: &str) -> Option<(u64, u64, u64)> {
    let mut parts = v
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(str::parse::<u64>);
    Some((
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    ))
}

/// The `[claude]` settings: how to run the CLI.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaudeConfig {
    /// The `claude` executable, a path or a name looked up in `PATH`.
    pub binary: PathBuf,
    /// Wall-clock limit for one run; the whole process group is stopped after it.
    pub timeout_secs: u64,
    /// After SIGINT (cancel, timeout), how long before SIGKILL to the process group.
    pub kill_grace_secs: u64,
    /// `--permission-mode` for every run.
    pub permission_mode: PermissionMode,
    /// `--model` unless the channel sets one; empty means the CLI's default.
    #[serde(default)]
    pub model: String,
    /// Runs in flight across all channels; others wait their turn, in order.
    pub max_concurrent_runs: usize,
    /// Passed as `CLAUDE_CODE_OAUTH_TOKEN`. From the environment
    /// (`COORDINATOR__CLAUDE__OAUTH_TOKEN`), or read from `oauth_token_file`; never in settings.
    #[serde(default)]
    pub oauth_token: Option<SecretString>,
    /// A file holding the OAuth token (else `$CREDENTIALS_DIRECTORY/claude-oauth-token`).
    #[serde(default)]
    pub oauth_token_file: Option<PathBuf>,
    /// Extra environment variables for the CLI.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Slash command names (without `/`) that run as CLI commands instead of being sent as text.
    #[serde(default)]
    pub passthrough_commands: Vec<String>,
    /// How to read `total_cost_usd`.
    #[serde(default)]
    pub cost_reporting: CostReporting,
    /// Keep one warm, two-way CLI process per active conversation (turns over stdin, Claude's
    /// permission requests answered from chat). `false`: one `claude -p` process per message.
    #[serde(default = "yes")]
    pub live_sessions: bool,
    /// Idle seconds before a warm process is ended (0: end it after every turn).
    #[serde(default = "default_keep_warm")]
    pub keep_warm_secs: u64,
    /// Warm processes across all conversations; beyond it the least recently used idle one is
    /// ended first.
    #[serde(default = "default_max_warm")]
    pub max_warm_sessions: usize,
    /// Seconds a permission request waits for an answer before it is denied (the CLI itself
    /// would wait for ever).
    #[serde(default = "default_approval_timeout")]
    pub approval_timeout_secs: u64,
}

fn yes() -> bool {
    true
}

fn default_keep_warm() -> u64 {
    600
}

fn default_max_warm() -> usize {
    4
}

fn default_approval_timeout() -> u64 {
    600
}

impl ClaudeConfig {
    /// Wall-clock limit for one run.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// After SIGINT, how long before SIGKILL of the process group.
    pub fn kill_grace(&self) -> Duration {
        Duration::from_secs(self.kill_grace_secs)
    }

    /// How long a warm process may idle.
    pub fn keep_warm(&self) -> Duration {
        Duration::from_secs(self.keep_warm_secs)
    }

    /// How long a permission request waits for an answer.
    pub fn approval_timeout(&self) -> Duration {
        Duration::from_secs(self.approval_timeout_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_reporting_follows_the_cli_version() {
        assert!(CostReporting::Auto.is_cumulative(Some("2.1.330")));
        assert!(CostReporting::Auto.is_cumulative(Some("2.2.0")));
        assert!(!CostReporting::Auto.is_cumulative(Some("2.1.197")));
        assert!(CostReporting::Auto.is_cumulative(None));
        assert!(!CostReporting::PerCall.is_cumulative(Some("2.1.330")));
    }
}
