//! Logging: a tracing subscriber writing to stderr, as text or JSON lines, filtered by
//! `RUST_LOG` when set, else by `log.filter`.
//!
//! Lines are handed to a writer thread (`tracing-appender`), so a slow or stalled stderr (a
//! busy journal, a full pipe) never blocks the actors; if it stays stalled, lines are dropped
//! rather than the service.

use std::io::IsTerminal;

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::settings::{LogFormat, LogSettings};

/// Installs the global subscriber. Keep the guard until exit: dropping it flushes the lines
/// still queued.
pub fn init(log: &LogSettings) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colours only for a person at a terminal, not for journald or a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    // A second init (tests building several applications) is harmless: keep the first.
    let _ = if log.format == LogFormat::Json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.try_init()
    };
    guard
}
