//! What a run means to the user: the text of its answer (or why there is none), and the
//! progress steps shown while it runs.

use std::fmt::Write as _;

use crate::claude::stream_json::StreamEvent;
use crate::claude::{RunReport, StopReason};
use crate::frontend::ProgressStep;

/// What a progress display shows of `event`: tool use and API retries.
pub(super) fn progress_step(event: &StreamEvent) -> Option<ProgressStep> {
    match event {
        StreamEvent::ToolUse(t) => Some(ProgressStep::Tool(t.summary())),
        StreamEvent::Retry {
            attempt,
            error_status,
            ..
        } => Some(ProgressStep::Retrying {
            attempt: *attempt,
            status: *error_status,
        }),
        _ => None,
    }
}

/// The user-facing text of a run that produced a report.
pub(super) fn answer_text(report: &RunReport, timeout_secs: u64, live: bool) -> String {
    match report.stopped {
        Some(StopReason::Cancelled) => return "Cancelled.".into(),
        Some(StopReason::TimedOut) => {
            return format!("Timed out after {timeout_secs} s; the run was stopped.")
        }
        None => {}
    }
    let Some(result) = &report.result else {
        return format!("Claude ended without a result ({}).", report.exit);
    };
    let mut text = result.text();
    if text.trim().is_empty() {
        text = if result.is_error {
            format!("Claude reported an error ({}).", result.subtype)
        } else {
            "(Claude returned an empty reply.)".into()
        };
    }
    if !result.permission_denials.is_empty() {
        // Live: someone was asked (or a rule decided); one-shot: no one could be asked.
        let why = if live {
            "Denied"
        } else {
            "Refused by the permission mode"
        };
        let _ = write!(
            text,
            "\n\n({why}: {}.)",
            result.permission_denials.join(", ")
        );
    }
    text
}

/// The first line of `text`, cut to 200 characters (for a stored error).
pub(super) fn first_line(text: &str) -> String {
    crate::text::truncate_chars(text.lines().next().unwrap_or_default(), 200)
}
