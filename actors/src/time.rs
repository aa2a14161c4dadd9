//! The wall clock as the records keep it: unix milliseconds.

use std::time::{SystemTime, UNIX_EPOCH};

/// Unix milliseconds `ms` as people read them in `tz`, in chrono's `format` (e.g.
/// `%Y-%m-%d %H:%M %Z`); the number itself if it is no time.
pub fn local_time(ms: i64, tz: chrono_tz::Tz, format: &str) -> String {
    use chrono::TimeZone as _;
    tz.timestamp_millis_opt(ms)
        .single()
        .map_or_else(|| ms.to_string(), |t| t.format(format).to_string())
}

/// Unix milliseconds now (0 if the clock is before 1970).
pub fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Where the scheduler reads the time: the system's clock, or — in tests, so a schedule's
/// minute comes when the test says rather than after a sleep — a file that holds the time.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// The time a test set: unix milliseconds, read from a file (see [`Clock::from_file`]).
    Set(std::sync::Arc<std::sync::atomic::AtomicI64>),
}

impl Clock {
    /// Unix milliseconds now.
    pub fn now_ms(&self) -> i64 {
        match self {
            Self::System => unix_ms(),
            Self::Set(t) => t.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    /// A clock that reads an RFC 3339 time (or unix milliseconds) from `path` every 50 ms on
    /// its own thread; until the file says otherwise it is the system's time.
    pub fn from_file(path: std::path::PathBuf) -> Self {
        let now = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(unix_ms()));
        let set = std::sync::Arc::clone(&now);
        let read = move || loop {
            if let Some(ms) = std::fs::read_to_string(&path)
                .ok()
                .and_then(|s| parse_time(s.trim()))
            {
                set.store(ms, std::sync::atomic::Ordering::Relaxed);
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        // A detached thread: the clock lives as long as the process.
        let _ = std::thread::Builder::new()
            .name("test-clock".into())
            .spawn(read);
        Self::Set(now)
    }
}

/// RFC 3339, or unix milliseconds.
fn parse_time(s: &str) -> Option<i64> {
    s.parse::<i64>().ok().or_else(|| {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.timestamp_millis())
    })
}
