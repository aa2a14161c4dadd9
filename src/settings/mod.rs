//! Settings: `settings/default.toml` (built in), then an optional overlay file (`--config FILE`
//! or `COORDINATOR_CONFIG`), then `COORDINATOR__SECTION__KEY` environment variables, parsed into
//! typed structs and validated. Every error names the key at fault. Secrets (the bot token, the
//! OAuth token) are refused in settings files: they come from a file of their own
//! (`discord.token_file`, `claude.oauth_token_file`, or systemd's credentials directory), or
//! from the environment.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use actors::claude::sandbox::SandboxConfig;
use actors::claude::ClaudeConfig;
use actors::conversation::ChannelProfile;
use actors::discord::{AccessConfig, ChannelAccess, DiscordConfig};
use actors::files::FilesConfig;
use actors::limits::LimitsConfig;
use actors::recovery::RecoveryConfig;
use actors::store::StoreConfig;
use config::{Config, Environment, File, FileFormat};
use secrecy::{ExposeSecret as _, SecretString};

mod operations;
pub use operations::{HttpSettings, ScheduleSettings};
use serde::Deserialize;

/// The built-in defaults; every key is documented there.
pub const DEFAULT_SETTINGS: &str = include_str!("../../settings/default.toml");

/// Keys that hold secrets and must never come from a settings file; what to use instead.
const SECRET_KEYS: [(&str, &str); 2] = [
    (
        "claude.oauth_token",
        "claude.oauth_token_file (or COORDINATOR__CLAUDE__OAUTH_TOKEN)",
    ),
    ("discord.token", "discord.token_file (or DISCORD_TOKEN)"),
];

/// The names of the secrets in systemd's `$CREDENTIALS_DIRECTORY` (`LoadCredential=NAME:PATH`).
const DISCORD_CREDENTIAL: &str = "discord-token";
const OAUTH_CREDENTIAL: &str = "claude-oauth-token";
const HTTP_CREDENTIAL: &str = "http-token";

/// A secret read from `path` (surrounding whitespace removed); errors name `key`, never the
/// secret.
fn read_secret(key: &str, path: &Path) -> Result<SecretString, SettingsError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(key, format!("cannot read {}: {e}", path.display())))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(invalid(key, format!("{} is empty", path.display())));
    }
    Ok(SecretString::from(token.to_string()))
}

/// Where a secret comes from, first found wins: the environment value `from_env`, the file
/// named by `file` (key `file_key`), then `$CREDENTIALS_DIRECTORY/credential` if it exists.
fn resolve_secret(
    from_env: Option<SecretString>,
    file: Option<&Path>,
    file_key: &str,
    credential: &str,
) -> Result<Option<SecretString>, SettingsError> {
    if from_env.is_some() {
        return Ok(from_env);
    }
    if let Some(path) = file {
        return read_secret(file_key, path).map(Some);
    }
    let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") else {
        return Ok(None);
    };
    let path = Path::new(&dir).join(credential);
    if path.exists() {
        return read_secret(&format!("$CREDENTIALS_DIRECTORY/{credential}"), &path).map(Some);
    }
    Ok(None)
}

/// All settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// How to run the `claude` CLI.
    pub claude: ClaudeConfig,
    /// Where sessions are kept.
    pub store: StoreSettings,
    /// Limits that apply to every channel.
    pub channels: ChannelLimits,
    /// The Discord connection.
    pub discord: DiscordConfig,
    /// Who may talk to Claude.
    pub access: AccessConfig,
    /// The configured channels.
    #[serde(default)]
    pub channel: Vec<ChannelSettings>,
    /// Logging.
    pub log: LogSettings,
    /// The metrics log.
    pub metrics: MetricsSettings,
    /// Stopping.
    pub shutdown: ShutdownSettings,
    /// Starting again after a stop.
    pub recovery: RecoveryConfig,
    /// Files in and out of conversations.
    pub files: FilesConfig,
    /// What each CLI process's sandbox hides and lets it write (`claude.sandbox` turns it on).
    pub sandbox: SandboxConfig,
    /// Spend and message limits per person and per channel.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Health checks, metrics and prompts over HTTP.
    #[serde(default)]
    pub http: HttpSettings,
    /// Scheduled prompts.
    #[serde(default)]
    pub schedules: ScheduleSettings,
    /// The overlay file these settings were read from (hidden from the CLI).
    #[serde(skip)]
    pub overlay: Option<PathBuf>,
}

/// A `[[channel]]`: a Discord channel bound to a project directory. One table, read twice: the
/// core's part ([`ChannelProfile`]: id, name, `project_dir`, model, tools, modes, worktrees)
/// and the Discord front end's ([`ChannelAccess`]: `require_mention` and the channel's own
/// allowlists). A key neither knows is an error naming it, as everywhere else.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ChannelSettings {
    /// What the core needs.
    #[serde(flatten)]
    pub profile: ChannelProfile,
    /// Who may talk here.
    #[serde(flatten)]
    pub access: ChannelAccess,
    /// Keys neither part took.
    #[serde(flatten, default)]
    unknown: BTreeMap<String, serde_json::Value>,
}

impl ChannelSettings {
    /// A channel's settings from its two parts.
    pub fn new(profile: ChannelProfile, access: ChannelAccess) -> Self {
        Self {
            profile,
            access,
            unknown: BTreeMap::new(),
        }
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSettings {
    /// Seconds between metrics events (0: only at shutdown).
    pub interval_secs: u64,
}

impl MetricsSettings {
    /// Time between metrics events (zero: only at shutdown).
    pub fn interval(&self) -> Duration {
        Duration::from_secs(self.interval_secs)
    }
}

/// `[shutdown]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownSettings {
    /// On SIGTERM/SIGINT, how long runs in flight may take to finish before they are cancelled.
    pub grace_secs: u64,
}

impl ShutdownSettings {
    /// How long runs in flight may take to finish at shutdown.
    pub fn grace(&self) -> Duration {
        Duration::from_secs(self.grace_secs)
    }
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSettings {
    /// The SQLite file, created with its directory if missing.
    pub path: PathBuf,
    /// Pooled connections (and store threads).
    pub pool_size: u32,
    /// How long a write waits for another process's lock, in milliseconds.
    pub busy_timeout_ms: u64,
}

impl StoreSettings {
    /// How long a write waits for another process's lock.
    pub fn busy_timeout(&self) -> Duration {
        Duration::from_millis(self.busy_timeout_ms)
    }

    /// The store actor's view of these settings.
    pub fn to_config(&self) -> StoreConfig {
        StoreConfig {
            path: self.path.clone(),
            pool_size: self.pool_size,
            busy_timeout: self.busy_timeout(),
        }
    }
}

/// `[channels]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelLimits {
    /// Messages that may wait behind the running one, per channel.
    pub queue_limit: usize,
    /// Stop a channel's actor after this many seconds without messages (0: never).
    pub idle_secs: u64,
    /// Prefix of coordinator commands (`!status`); empty disables them.
    pub command_prefix: String,
    /// When the API refuses a run for a limit without saying when it resets, every
    /// conversation waits this long, doubling while it goes on (up to 30 minutes).
    pub usage_backoff_secs: u64,
}

impl ChannelLimits {
    /// `usage_backoff_secs` as a duration.
    pub fn usage_backoff(&self) -> Duration {
        Duration::from_secs(self.usage_backoff_secs)
    }

    /// After how long without messages a channel's actor stops (zero: never).
    pub fn idle(&self) -> Duration {
        Duration::from_secs(self.idle_secs)
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// For people.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,actors=debug`; `RUST_LOG` wins when set.
    pub filter: String,
}

/// Why the settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// Reading or parsing a source failed; the message names the key or file.
    #[error("settings: {0}")]
    Load(#[from] config::ConfigError),
    /// A value is out of range.
    #[error("invalid setting `{key}`: {reason}")]
    Invalid {
        /// The key, e.g. `claude.timeout_secs` or `channel[2].name`.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(key: impl Into<String>, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key: key.into(),
        reason: reason.into(),
    }
}

impl Settings {
    /// Loads defaults, then `overlay` (if given), then the environment.
    pub fn load(overlay: Option<&Path>) -> Result<Self, SettingsError> {
        let files = |b: config::ConfigBuilder<config::builder::DefaultState>| {
            let b = b.add_source(File::from_str(DEFAULT_SETTINGS, FileFormat::Toml));
            match overlay {
                Some(p) => b.add_source(File::from(p).required(true)),
                None => b,
            }
        };
        let from_files = files(Config::builder()).build()?;
        for (key, env) in SECRET_KEYS {
            if from_files.get::<config::Value>(key).is_ok() {
                return Err(invalid(
                    key,
                    format!("secrets are not read from settings files; use {env}"),
                ));
            }
        }
        let env = Environment::with_prefix("COORDINATOR")
            .prefix_separator("__")
            .separator("__")
            .try_parsing(true)
            .list_separator(",")
            .with_list_parse_key("claude.passthrough_commands")
            .with_list_parse_key("access.allowed_users")
            .with_list_parse_key("access.allowed_roles")
            .with_list_parse_key("access.approvers")
            .with_list_parse_key("sandbox.hide_paths")
            .with_list_parse_key("sandbox.writable_paths");
        let mut settings: Settings = files(Config::builder())
            .add_source(env)
            .build()?
            .try_deserialize()?;
        settings.overlay =
            overlay.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
        // The conventional variable, when the namespaced one is not set.
        let discord_env = settings.discord.token.take().or_else(|| {
            std::env::var("DISCORD_TOKEN")
                .ok()
                .filter(|t| !t.trim().is_empty())
                .map(SecretString::from)
        });
        settings.discord.token = resolve_secret(
            discord_env,
            settings.discord.token_file.as_deref(),
            "discord.token_file",
            DISCORD_CREDENTIAL,
        )?;
        settings.claude.oauth_token = resolve_secret(
            settings.claude.oauth_token.take(),
            settings.claude.oauth_token_file.as_deref(),
            "claude.oauth_token_file",
            OAUTH_CREDENTIAL,
        )?;
        settings.http.tokens = resolve_secret(
            None,
            settings.http.token_file.as_deref(),
            "http.token_file",
            HTTP_CREDENTIAL,
        )?
        .map(|all| {
            all.expose_secret()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| SecretString::from(l.to_string()))
                .collect()
        })
        .unwrap_or_default();
        settings.validate()?;
        Ok(settings)
    }

    /// Checks ranges and consistency; each error names its key.
    pub fn validate(&self) -> Result<(), SettingsError> {
        self.validate_ranges()?;
        let c = &self.claude;
        if c.binary.as_os_str().is_empty() {
            return Err(invalid("claude.binary", "must not be empty"));
        }
        for name in &c.passthrough_commands {
            if name.is_empty() || name.starts_with('/') || name.contains(char::is_whitespace) {
                return Err(invalid(
                    "claude.passthrough_commands",
                    format!(
                        "`{name}` must be a bare command name such as `cost` (no slash, no spaces)"
                    ),
                ));
            }
        }
        for key in c.env.keys() {
            if key.is_empty() || key.contains(['=', '\0']) {
                return Err(invalid(
                    format!("claude.env.{key}"),
                    "not a valid variable name",
                ));
            }
            if key == "CLAUDE_CODE_OAUTH_TOKEN" {
                return Err(invalid(
                    format!("claude.env.{key}"),
                    "secrets are not read from settings files; use claude.oauth_token_file",
                ));
            }
        }
        let dir = &self.files.dir;
        if dir.as_os_str().is_empty()
            || dir.is_absolute()
            || dir
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)))
        {
            return Err(invalid(
                "files.dir",
                "must be a relative path inside the project directory, without `..`",
            ));
        }
        if self.store.path.as_os_str().is_empty() {
            return Err(invalid("store.path", "must not be empty"));
        }
        let d = &self.discord;
        if !(d.api_base_url.starts_with("https://") || d.api_base_url.starts_with("http://")) {
            return Err(invalid(
                "discord.api_base_url",
                "must start with https:// or http://",
            ));
        }
        let (mut ids, mut names) = (HashSet::new(), HashSet::new());
        for (i, settings) in self.channel.iter().enumerate() {
            let key = |field: &str| format!("channel[{i}].{field}");
            if let Some(field) = settings.unknown.keys().next() {
                return Err(invalid(key(field), "unknown key"));
            }
            let ch = &settings.profile;
            if ch.id.get() == 0 {
                return Err(invalid(key("id"), "must be a Discord channel id"));
            }
            if !ids.insert(ch.id) {
                return Err(invalid(key("id"), format!("{} is configured twice", ch.id)));
            }
            if ch.name.trim().is_empty() || ch.name.contains('/') {
                return Err(invalid(key("name"), "must be non-empty and contain no `/`"));
            }
            if !names.insert(ch.name.as_str()) {
                return Err(invalid(
                    key("name"),
                    format!("`{}` is configured twice", ch.name),
                ));
            }
            if ch.project_dir.as_os_str().is_empty() {
                return Err(invalid(key("project_dir"), "must not be empty"));
            }
            let tools = ch.tools.iter().flatten().chain(&ch.disallowed_tools);
            if tools.into_iter().any(|t| t.trim().is_empty()) {
                return Err(invalid(key("tools"), "tool names must not be empty"));
            }
        }
        Ok(())
    }

    /// Numbers that become durations, counts or sizes: bounded, so none can overflow a clock or
    /// a counter at run time.
    fn validate_ranges(&self) -> Result<(), SettingsError> {
        self.limits
            .validate()
            .map_err(|(key, reason)| invalid(format!("limits.{key}"), reason))?;
        if let Some(addr) = self.http.listen {
            crate::http::check_listen(addr, self.http.allow_remote)
                .map_err(|reason| invalid("http.listen", reason))?;
        }
        for (key, value, least, most) in self.ranges().into_iter().chain(self.operations_ranges()) {
            if !(least..=most).contains(&value) {
                return Err(invalid(
                    key,
                    format!("{value} is out of range: must be between {least} and {most}"),
                ));
            }
        }
        Ok(())
    }

    /// The bounded numbers of `[http]` and `[schedules]`: (key, value, least, most).
    fn operations_ranges(&self) -> [(&'static str, u64, u64, u64); 6] {
        let (h, s) = (&self.http, &self.schedules);
        let count = |v: usize| v as u64;
        [
            ("http.max_body_bytes", h.max_body_bytes, 1024, 10 << 20),
            (
                "http.prompts_per_minute",
                u64::from(h.prompts_per_minute),
                1,
                100_000,
            ),
            ("schedules.catch_up_secs", s.catch_up_secs, 0, 30 * 86_400),
            (
                "schedules.min_interval_secs",
                s.min_interval_secs,
                60,
                86_400,
            ),
            (
                "schedules.max_per_conversation",
                count(s.max_per_conversation),
                1,
                1000,
            ),
            (
                "schedules.max_prompt_chars",
                count(s.max_prompt_chars),
                1,
                100_000,
            ),
        ]
    }

    /// Every bounded number: (key, value, least, most).
    fn ranges(&self) -> Vec<(&'static str, u64, u64, u64)> {
        const DAY: u64 = 86_400;
        const MIB: u64 = 1024 * 1024;
        let (c, d, r, f) = (&self.claude, &self.discord, &self.recovery, &self.files);
        let count = |v: usize| v as u64;
        vec![
            ("files.max_attachments", count(f.max_attachments), 0, 10),
            ("files.max_bytes", f.max_bytes, 0, 500 * MIB),
            ("files.max_images", count(f.max_images), 0, 20),
            ("files.max_image_bytes", f.max_image_bytes, 0, 20 * MIB),
            (
                "files.download_timeout_secs",
                f.download_timeout_secs,
                1,
                600,
            ),
            (
                "files.max_attachment_bytes",
                f.max_attachment_bytes,
                1,
                500 * MIB,
            ),
            ("files.retention_days", f.retention_days, 0, 3650),
            ("recovery.retention_days", r.retention_days, 1, 3650),
            (
                "recovery.catch_up_concurrency",
                count(r.catch_up_concurrency),
                1,
                32,
            ),
            ("recovery.catch_up_max", count(r.catch_up_max), 0, 1000),
            (
                "recovery.catch_up_max_age_secs",
                r.catch_up_max_age_secs,
                0,
                30 * DAY,
            ),
            (
                "recovery.catch_up_interval_ms",
                r.catch_up_interval_ms,
                0,
                60_000,
            ),
            ("claude.timeout_secs", c.timeout_secs, 1, 7 * DAY),
            ("claude.kill_grace_secs", c.kill_grace_secs, 0, 3600),
            (
                "claude.max_concurrent_runs",
                count(c.max_concurrent_runs),
                1,
                256,
            ),
            (
                "claude.max_warm_sessions",
                count(c.max_warm_sessions),
                0,
                1024,
            ),
            (
                "store.busy_timeout_ms",
                self.store.busy_timeout_ms,
                0,
                600_000,
            ),
            ("store.pool_size", u64::from(self.store.pool_size), 1, 64),
            (
                "channels.usage_backoff_secs",
                self.channels.usage_backoff_secs,
                1,
                1800,
            ),
            (
                "channels.queue_limit",
                count(self.channels.queue_limit),
                0,
                100_000,
            ),
            ("channels.idle_secs", self.channels.idle_secs, 0, 30 * DAY),
            ("discord.max_chunks", count(d.max_chunks), 1, 100),
            ("discord.send_retries", u64::from(d.send_retries), 0, 20),
            ("discord.retry_backoff_ms", d.retry_backoff_ms, 1, 60_000),
            ("discord.progress_edit_secs", d.progress_edit_secs, 0, 3600),
            ("discord.stream_edit_ms", d.stream_edit_ms, 250, 60_000),
            (
                "discord.notify_after_secs",
                d.notify_after_secs,
                0,
                30 * DAY,
            ),
            (
                "access.refusal_cooldown_secs",
                self.access.refusal_cooldown_secs,
                0,
                30 * DAY,
            ),
            ("metrics.interval_secs", self.metrics.interval_secs, 0, DAY),
            ("shutdown.grace_secs", self.shutdown.grace_secs, 0, DAY),
        ]
    }

    /// The configured channel called `name`.
    pub fn channel_named(&self, name: &str) -> Option<&ChannelSettings> {
        self.channel.iter().find(|c| c.profile.name == name)
    }
}
