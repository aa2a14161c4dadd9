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
    /// `--model` unless the channel sets one; `None` (or an empty string) is the CLI's
    /// default.
    #[serde(default, deserialize_with = "non_empty")]
    pub model: Option<String>,
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
    /// Live CLI processes across all conversations, at every moment; a run that needs one more
    /// ends the least recently used idle one, or waits. 0: derived from the machine's memory
    /// ([`ClaudeConfig::warm_cap`]).
    #[serde(default)]
    pub max_warm_sessions: usize,
    /// Seconds a permission request waits for an answer before it is denied (the CLI itself
    /// would wait for ever).
    #[serde(default = "default_approval_timeout")]
    pub approval_timeout_secs: u64,
    /// Whether each CLI process runs sealed in a bubblewrap sandbox ([`super::sandbox`]).
    #[serde(default)]
    pub sandbox: super::sandbox::SandboxMode,
}

fn yes() -> bool {
    true
}

fn default_keep_warm() -> u64 {
    600
}

fn default_approval_timeout() -> u64 {
    600
}

/// What one real CLI process holds: 210–260 MB resident were measured (2.1.330); the cap is
/// worked out from the upper end.
pub const CLI_RSS_BYTES: u64 = 260 * 1024 * 1024;

/// The cap on live CLI processes, and where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WarmCap {
    /// At most this many live processes.
    pub max: usize,
    /// The memory it was derived from (`None`: set in the settings).
    pub memory: Option<u64>,
}

impl WarmCap {
    /// The cap for `memory` bytes of memory: half of it, at [`CLI_RSS_BYTES`] per process, at
    /// least 1 and at most 64.
    pub fn for_memory(memory: u64) -> Self {
        Self {
            max: usize::try_from(memory / 2 / CLI_RSS_BYTES)
                .unwrap_or(64)
                .clamp(1, 64),
            memory: Some(memory),
        }
    }
}

impl std::fmt::Display for WarmCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.memory {
            Some(m) => write!(
                f,
                "at most {} live CLI processes (half of {:.1} GiB of memory at ~{} MB each; set claude.max_warm_sessions to choose)",
                self.max,
                m as f64 / f64::from(1 << 30),
                CLI_RSS_BYTES / (1024 * 1024)
            ),
            None => write!(f, "at most {} live CLI processes (claude.max_warm_sessions)", self.max),
        }
    }
}

/// The memory this service may use: the machine's (`MemTotal`), or its cgroup's limit if lower.
pub fn machine_memory() -> Option<u64> {
    let total = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .map(|kb| kb * 1024)
        })?;
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok());
    Some(cgroup.map_or(total, |c| c.min(total)))
}

impl ClaudeConfig {
    /// The cap on live CLI processes: `max_warm_sessions`, or derived from the memory (4 when
    /// it cannot be read).
    pub fn warm_cap(&self) -> WarmCap {
        if self.max_warm_sessions > 0 {
            return WarmCap {
                max: self.max_warm_sessions,
                memory: None,
            };
        }
        machine_memory().map_or(
            WarmCap {
                max: 4,
                memory: None,
            },
            WarmCap::for_memory,
        )
    }

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

/// An optional string where an empty one (an environment variable set to nothing) means none.
fn non_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let s: Option<String> = Option::deserialize(d)?;
    Ok(s.filter(|s| !s.trim().is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_warm_cap_follows_the_memory() {
        const GIB: u64 = 1 << 30;
        assert_eq!(
            WarmCap::for_memory(GIB).max,
            1,
            "a small machine still gets one"
        );
        assert_eq!(WarmCap::for_memory(4 * GIB).max, 7);
        assert_eq!(WarmCap::for_memory(24 * GIB).max, 47);
        assert_eq!(WarmCap::for_memory(512 * GIB).max, 64, "bounded");
        assert!(WarmCap::for_memory(24 * GIB)
            .to_string()
            .contains("24.0 GiB"));
    }

    #[test]
    fn cost_reporting_follows_the_cli_version() {
        assert!(CostReporting::Auto.is_cumulative(Some("2.1.330")));
        assert!(CostReporting::Auto.is_cumulative(Some("2.2.0")));
        assert!(!CostReporting::Auto.is_cumulative(Some("2.1.197")));
        assert!(CostReporting::Auto.is_cumulative(None));
        assert!(!CostReporting::PerCall.is_cumulative(Some("2.1.330")));
    }
}
