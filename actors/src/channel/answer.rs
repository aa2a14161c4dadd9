//! What a run means to the user: the text of its answer, or why there is none.

use std::fmt::Write as _;

use crate::claude::{RunReport, StopReason};

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
    if let (Some((before, after)), false) = (report.compacted, result.is_error) {
        let tokens = |t: Option<u64>| t.map_or_else(|| "?".to_string(), |t| t.to_string());
        return format!(
            "Compacted the conversation: {} → {} tokens in the context.",
            tokens(before),
            tokens(after)
        );
    }
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
