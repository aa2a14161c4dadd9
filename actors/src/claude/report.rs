//! Reading a run's output: what the stream said (init, result), and what that means for the
//! run — success, an error result, a stale session, a usage error, or nothing usable.

use tracing::debug;

use super::stream_json::{parse_line, RateLimitInfo, ResultLine, StreamEvent};
use super::{ClaudeConfig, ContextUse, RunError, RunReport, RunRequest, StopReason};
use crate::cost::ReportedCost;

/// What the stream has told us so far.
#[derive(Default)]
pub(super) struct StreamState {
    pub(super) init_session: Option<String>,
    pub(super) model: Option<String>,
    pub(super) version: Option<String>,
    pub(super) result: Option<ResultLine>,
    /// The last `rate_limit_event`.
    pub(super) rate_limit: Option<RateLimitInfo>,
    /// Images (or other media) the API refused and the CLI removed.
    pub(super) media_removed: usize,
    pub(super) unparsed: usize,
    /// Lines longer than [`MAX_LINE_BYTES`], dropped.
    pub(super) too_long: usize,
    /// The context the last API call filled (after a compaction: what is left).
    pub(super) context_tokens: Option<u64>,
    /// A compaction: the tokens before and after.
    pub(super) compacted: Option<(Option<u64>, Option<u64>)>,
}

impl StreamState {
    /// Takes one output line; returns the event for the progress display.
    /// The session id the stream has named, if any.
    pub(super) fn session_id(&self) -> Option<&str> {
        self.result
            .as_ref()
            .and_then(|r| r.session_id.as_deref())
            .or(self.init_session.as_deref())
    }

    /// Takes one parsed event (a live session's reader has parsed it already).
    pub(super) fn take_event(&mut self, ev: &StreamEvent) {
        match ev {
            StreamEvent::Init {
                session_id,
                model,
                version,
            } => {
                self.init_session.clone_from(session_id);
                self.model.clone_from(model);
                self.version.clone_from(version);
            }
            StreamEvent::Result(r) => self.result = Some(r.clone()),
            StreamEvent::RateLimit(r) => self.rate_limit = Some(r.clone()),
            StreamEvent::MediaRemoved { .. } => self.media_removed += 1,
            StreamEvent::Text {
                context_tokens: Some(t),
                ..
            } => self.context_tokens = Some(*t),
            StreamEvent::ToolUse(t) if t.context_tokens.is_some() => {
                self.context_tokens = t.context_tokens;
            }
            StreamEvent::Compacted {
                pre_tokens,
                post_tokens,
            } => {
                self.compacted = Some((*pre_tokens, *post_tokens));
                self.context_tokens = *post_tokens;
            }
            _ => {}
        }
    }

    pub(super) fn take_line(&mut self, line: &[u8]) -> Option<StreamEvent> {
        if line.is_empty() {
            return None;
        }
        let ev = match parse_line(line) {
            Ok(ev) => ev,
            Err(e) => {
                self.unparsed += 1;
                debug!(error = %e, "claude printed a line that is not JSON");
                return None;
            }
        };
        self.take_event(&ev);
        Some(ev)
    }
}

/// The report of a run that ended with `exit` (`success`: exit code 0), given what its output
/// said; or why it produced nothing usable.
pub(super) fn report(
    config: &ClaudeConfig,
    req: &RunRequest,
    state: StreamState,
    stopped: Option<StopReason>,
    exit: String,
    stderr_tail: String,
    success: bool,
) -> Result<RunReport, RunError> {
    if state.too_long > 0 {
        return Err(RunError::LineTooLong);
    }
    let unknown_session = |text: &str| {
        req.resume.is_some()
            && (text.contains("No conversation found with session ID")
                || text.contains("--resume requires a valid session ID"))
    };
    let resumed_id = || req.resume.clone().unwrap_or_default();
    if let Some(r) = &state.result {
        if r.is_error && unknown_session(&r.text()) {
            return Err(RunError::UnknownSession {
                session_id: resumed_id(),
                message: r.text(),
            });
        }
    } else if stopped.is_none() {
        let message = last_lines(&stderr_tail, 3);
        if unknown_session(&message) {
            return Err(RunError::UnknownSession {
                session_id: resumed_id(),
                message,
            });
        }
        if success {
            return Err(RunError::NoResult {
                exit,
                unparsed: state.unparsed,
            });
        }
        return Err(RunError::Failed {
            exit,
            message: if message.is_empty() {
                "no output".into()
            } else {
                message
            },
        });
    }
    let cumulative = config
        .cost_reporting
        .is_cumulative(state.version.as_deref());
    let cost = state
        .result
        .as_ref()
        .and_then(|r| r.total_cost_usd)
        .map(|total_usd| ReportedCost {
            total_usd,
            cumulative,
        });
    let context = state.context_tokens.map(|tokens| ContextUse {
        tokens,
        window: state.result.as_ref().and_then(|r| r.context_window),
    });
    Ok(RunReport {
        context,
        compacted: state.compacted,
        session_id: state
            .result
            .as_ref()
            .and_then(|r| r.session_id.clone())
            .or(state.init_session),
        model: state.model,
        result: state.result,
        rate_limit: state.rate_limit,
        media_removed: state.media_removed,
        stopped,
        cost,
        exit,
        stderr_tail,
    })
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
