//! `FAKE_CLAUDE_LOG`: one JSON line per start, end, turn and turn end, for the tests to read.

use crate::files::now_ms;
use serde_json::{json, Value};
use std::io::Write;

/// Appends one record to `FAKE_CLAUDE_LOG` so tests can see what this process received.
pub(crate) fn log_event(event: &str, extra: &Value) {
    let Some(path) = std::env::var_os("FAKE_CLAUDE_LOG") else {
        return;
    };
    // The whole environment: tests check what the CLI may and may not see.
    let env: serde_json::Map<String, Value> = std::env::vars()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let mut record = json!({
        "event": event,
        "pid": std::process::id(),
        "pgid": nix::unistd::getpgrp().as_raw(),
        "at_ms": now_ms() as u64,
        "argv": std::env::args().skip(1).collect::<Vec<_>>(),
        "cwd": std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default(),
        "env": env,
        "stdin": std::fs::read_link("/proc/self/fd/0").map(|p| p.display().to_string()).unwrap_or_default(),
    });
    if let (Some(obj), Some(more)) = (record.as_object_mut(), extra.as_object()) {
        obj.extend(more.clone());
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // One write per record, so records from concurrent processes do not interleave.
        let _ = f.write_all(format!("{record}\n").as_bytes());
    }
}
