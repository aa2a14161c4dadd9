//! `[recovery]`: what the service does at start-up about what a stop left behind — messages
//! still in the inbox, runs it interrupted, messages posted while it was down — and how long
//! the inbox and outbox keep what is finished.

use std::time::Duration;

use serde::Deserialize;

/// `[recovery]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RecoveryConfig {
    /// Run again a message that was running when the service stopped, instead of telling its
    /// user and waiting for `!retry` (its tools may already have acted once).
    pub rerun_interrupted: bool,
    /// Finished inbox rows and delivered replies are forgotten after this many days.
    pub retention_days: u64,
    /// At most this many messages per conversation are caught up after downtime (0: none).
    pub catch_up_max: usize,
    /// Messages older than this are not caught up.
    pub catch_up_max_age_secs: u64,
    /// Milliseconds between two history pages of one channel during the catch-up.
    pub catch_up_interval_ms: u64,
    /// Channel histories read at once during the catch-up (each is its own rate-limit bucket
    /// on Discord's side; all of them together stay under Discord's global limit).
    #[serde(default = "default_concurrency")]
    pub catch_up_concurrency: usize,
}

fn default_concurrency() -> usize {
    4
}

impl Default for RecoveryConfig {
    fn default() -> Self {
        Self {
            rerun_interrupted: false,
            retention_days: 30,
            catch_up_max: 50,
            catch_up_max_age_secs: 86_400,
            catch_up_interval_ms: 250,
            catch_up_concurrency: default_concurrency(),
        }
    }
}

impl RecoveryConfig {
    /// `retention_days` as a duration.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_days.saturating_mul(86_400))
    }

    /// `catch_up_max_age_secs` as a duration.
    pub fn catch_up_max_age(&self) -> Duration {
        Duration::from_secs(self.catch_up_max_age_secs)
    }

    /// `catch_up_interval_ms` as a duration.
    pub fn catch_up_interval(&self) -> Duration {
        Duration::from_millis(self.catch_up_interval_ms)
    }
}
