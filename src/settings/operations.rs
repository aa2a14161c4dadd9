//! The settings of the service's operations side: `[http]` (health, metrics, prompts over
//! HTTP) and `[schedules]`.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

/// `[http]`: off unless `listen` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Where to listen, e.g. `127.0.0.1:9464`; unset: no HTTP server.
    #[serde(default, deserialize_with = "listen_address")]
    pub listen: Option<std::net::SocketAddr>,
    /// Listen on a non-loopback address too (the health and metrics endpoints have no
    /// authentication).
    #[serde(default)]
    pub allow_remote: bool,
    /// The bearer tokens of `POST /v1/conversations/{name}/messages`, one per line (or the
    /// systemd credential `http-token`); none: prompts over HTTP are refused.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The largest request body taken.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Prompts each token may send per minute.
    #[serde(default = "default_prompts_per_minute")]
    pub prompts_per_minute: u32,
    /// Read from `token_file` or the credential, never from a settings file.
    #[serde(skip)]
    pub tokens: Vec<SecretString>,
}

fn default_max_body_bytes() -> u64 {
    64 * 1024
}

fn default_prompts_per_minute() -> u32 {
    60
}

/// `[schedules]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleSettings {
    /// The IANA time zone cron expressions are read in.
    pub timezone: chrono_tz::Tz,
    /// A time missed while the service was down still runs at start if at most this old.
    pub catch_up_secs: u64,
    /// No schedule may run more often than this.
    pub min_interval_secs: u64,
    /// Schedules per conversation.
    pub max_per_conversation: usize,
    /// The longest prompt a schedule may have.
    pub max_prompt_chars: usize,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        let c = actors::schedule::ScheduleConfig::default();
        Self {
            timezone: c.timezone,
            catch_up_secs: c.catch_up.as_secs(),
            min_interval_secs: c.min_interval.as_secs(),
            max_per_conversation: c.max_per_conversation,
            max_prompt_chars: c.max_prompt_chars,
        }
    }
}

impl ScheduleSettings {
    /// The scheduler's settings.
    pub fn to_config(&self) -> actors::schedule::ScheduleConfig {
        actors::schedule::ScheduleConfig {
            timezone: self.timezone,
            catch_up: Duration::from_secs(self.catch_up_secs),
            min_interval: Duration::from_secs(self.min_interval_secs),
            max_per_conversation: self.max_per_conversation,
            max_prompt_chars: self.max_prompt_chars,
        }
    }
}

/// `http.listen`: an address, or empty for none.
fn listen_address<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<std::net::SocketAddr>, D::Error> {
    let text = Option::<String>::deserialize(d)?.unwrap_or_default();
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        serde::de::Error::custom(format!("`{text}` is not an address such as 127.0.0.1:9464"))
    })
}
