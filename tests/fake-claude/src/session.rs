//! A session: its id, its turns on disk, its costs, and the lines a turn starts and ends
//! with; opened new, resumed (`--resume`) or forked.

use crate::args::Args;
use crate::args::{DEFAULT_MODEL, KNOWN_MODELS, TOOLS};
use crate::control;
use crate::control::SessionState;
use crate::files::{
    append_turn, find_session, is_uuid, mangle, new_uuid, projects_dir, read_turns, Turn,
};
use crate::log::log_event;
use crate::output::{init_value, result_value, Out, ResultParts};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::Instant;

/// The session a process works on, across its turns.
// Each flag is one independent CLI switch the stand-in mirrors.
#[allow(clippy::struct_excessive_bools)]
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) path: PathBuf,
    pub(crate) turns: Vec<Turn>,
    pub(crate) model: String,
    pub(crate) mode: String,
    pub(crate) tools: Vec<String>,
    pub(crate) cwd: PathBuf,
    pub(crate) version: String,
    pub(crate) cumulative: bool,
    pub(crate) per_call_cost: f64,
    pub(crate) disable_slash_commands: bool,
    /// Mode, rules and the prompt tool, as controls and permissions change them.
    pub(crate) state: SessionState,
    /// Tool calls denied in this turn, for the result's `permission_denials`.
    pub(crate) denials: Vec<Value>,
    /// A `rate_limit_event` was printed: a warm process prints it once (`u_oauth_limit_live`).
    pub(crate) limit_announced: bool,
    /// The next result's `api_error` (`usage_limit_reached`).
    pub(crate) api_error: Option<&'static str>,
    /// Print the text as it is written (`--include-partial-messages`).
    pub(crate) partial: bool,
}

/// How a turn ended.
pub(crate) enum TurnEnd {
    /// A result was printed (or, for `GARBAGE`, not): the exit code for a one-shot run and
    /// whether the result was an error.
    Done { code: u8, is_error: bool },
    /// The process must exit now with this code (a crash).
    Exit(u8),
}

impl Session {
    pub(crate) fn earlier_cost(&self) -> f64 {
        // An empty float sum is -0.0, which would print as "$-0.0000".
        self.turns.iter().map(|t| t.cost).sum::<f64>() + 0.0
    }

    pub(crate) fn reported(&self, call_cost: f64) -> f64 {
        if self.cumulative {
            self.earlier_cost() + call_cost
        } else {
            call_cost
        }
    }

    /// Stores the turn; returns the `total_cost_usd` to report for it.
    pub(crate) fn record(&mut self, prompt: &str, cost: f64) -> f64 {
        let total = self.reported(cost);
        self.turns.push(Turn {
            prompt: prompt.to_string(),
            cost,
            model: self.model.clone(),
        });
        append_turn(&self.path, self.turns.last().expect("just pushed"));
        self.state.cost_usd = self.turns.iter().map(|t| t.cost).sum();
        total
    }

    pub(crate) fn init(&self, out: &mut Out, session_id: &str) {
        out.line(&init_value(
            session_id,
            &self.model,
            &self.cwd,
            &self.mode,
            &self.version,
            &self.tools,
        ));
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn result(
        &self,
        out: &mut Out,
        subtype: &str,
        is_error: bool,
        result: Option<&str>,
        errors: Option<Vec<String>>,
        total_cost: f64,
        num_turns: u32,
        terminal_reason: &str,
        api_error_status: Option<u16>,
        started: Instant,
    ) {
        let mut v = result_value(&ResultParts {
            session_id: &self.id,
            model: &self.model,
            subtype,
            is_error,
            result,
            errors,
            total_cost,
            num_turns,
            terminal_reason,
            api_error_status,
            duration_ms: started.elapsed().as_millis(),
        });
        v["permission_denials"] = json!(self.denials);
        if let Some(e) = self.api_error {
            v["api_error"] = json!(e);
        }
        // Before the result: whoever reads the result may look at the log at once.
        log_event("turn_end", &json!({}));
        out.result(&v);
    }

    /// The result of a turn stopped before its end (`d_slow_sigint_json`, `p_07`, `p_21`):
    /// `error_during_execution`, no `result`, the reason in `terminal_reason`.
    pub(crate) fn aborted(
        &self,
        out: &mut Out,
        total: f64,
        num_turns: u32,
        reason: &str,
        started: Instant,
    ) {
        self.result(
            out,
            "error_during_execution",
            true,
            None,
            Some(vec![
                "[ede_diagnostic] result_type=user last_content_type=n/a stop_reason=null".into(),
            ]),
            total,
            num_turns,
            reason,
            None,
            started,
        );
    }
}

/// Resumes the session asked for, or starts a new one; `None` after a usage error (printed).
pub(crate) fn open_session(
    args: &Args,
    version: &str,
    mode: &str,
    cwd: PathBuf,
    out: &mut Out,
) -> Option<Session> {
    let (id, path, turns) = if let Some(id) = &args.resume {
        if !is_uuid(id) {
            eprintln!("Error: --resume requires a valid session ID or session title when used with --print. Usage: claude -p --resume <session-id|title>. Provided value \"{id}\" is not a UUID and does not match any session title.");
            return None;
        }
        let Some(path) = find_session(id) else {
            let msg = format!("No conversation found with session ID: {id}");
            eprintln!("{msg}");
            if out.format == "stream-json" {
                out.line(&result_value(&ResultParts {
                    session_id: id,
                    model: DEFAULT_MODEL,
                    subtype: "error_during_execution",
                    is_error: true,
                    result: None,
                    errors: Some(vec![msg]),
                    total_cost: 0.0,
                    num_turns: 0,
                    terminal_reason: "completed",
                    api_error_status: None,
                    duration_ms: 0,
                }));
            }
            return None;
        };
        let turns = read_turns(&path);
        if args.fork {
            // A copy: a new id in this directory, the history carried over, the original left
            // as it was (o_fork_live); its cost goes on from the original's.
            let copy = new_uuid();
            let path = projects_dir()
                .join(mangle(&cwd))
                .join(format!("{copy}.jsonl"));
            for t in &turns {
                append_turn(&path, t);
            }
            (copy, path, turns)
        } else {
            (id.clone(), path, turns)
        }
    } else {
        let id = args.session_id.clone().unwrap_or_else(new_uuid);
        let path = projects_dir()
            .join(mangle(&cwd))
            .join(format!("{id}.jsonl"));
        if path.exists() {
            eprintln!("Error: Session ID {id} is already in use.");
            return None;
        }
        (id, path, Vec::new())
    };
    let model = args
        .model
        .clone()
        .or_else(|| turns.last().map(|t| t.model.clone()))
        .unwrap_or_else(|| DEFAULT_MODEL.into());
    if !KNOWN_MODELS.contains(&model.as_str()) {
        eprintln!(
            "[claude-code:unrecognized_model] {{\"model\":\"{model}\",\"query_source\":\"sdk\"}}"
        );
    }
    let tools: Vec<String> = match &args.tools {
        Some(t) if t.iter().any(|x| x == "default") => {
            TOOLS.iter().map(|s| (*s).to_string()).collect()
        }
        Some(t) => t.clone(),
        None => TOOLS.iter().map(|s| (*s).to_string()).collect(),
    };
    let tools = tools
        .into_iter()
        .filter(|t| !args.disallowed_tools.contains(t))
        .collect();
    Some(Session {
        id,
        path,
        turns,
        model,
        mode: mode.to_string(),
        tools,
        cwd,
        version: version.to_string(),
        cumulative: version != "2.1.197",
        per_call_cost: std::env::var("FAKE_CLAUDE_COST")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.05),
        disable_slash_commands: args.disable_slash_commands,
        limit_announced: false,
        api_error: None,
        partial: args.partial,
        state: SessionState::new(
            mode,
            version,
            args.permission_prompt_tool.as_deref() == Some("stdio"),
            control::rules_from_args(&args.allowed_tools, args.settings.as_deref()),
        ),
        denials: Vec::new(),
    })
}
