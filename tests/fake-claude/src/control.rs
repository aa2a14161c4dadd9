//! The stdin side of `--input-format stream-json`, as `../shared/claude-cli/PERMISSIONS.md` and its
//! `p_*` samples show the real CLI: user lines are turns; control requests from the wrapper
//! (`interrupt`, `end_session`, `initialize`, `set_permission_mode`, `set_model`, `list_models`) are answered (and logged);
//! with `--permission-prompt-tool stdio`, a tool call that no rule allows is asked about with a
//! `can_use_tool` control request, and the turn waits (for ever, like the CLI) for the answer.

use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::Duration;

use serde_json::{json, Value};

/// Lines from stdin, read on a thread of their own so a turn can wait for an answer, a gate
/// or a timer and still see an interrupt.
pub struct Input {
    rx: Receiver<String>,
    /// User lines that arrived while a turn ran: the next turns.
    queued: VecDeque<String>,
    closed: bool,
}

/// What interrupted a wait.
pub enum Wake {
    /// `interrupt` arrived (its success reply already printed).
    Interrupt,
    /// `end_session` arrived (its reply already printed): exit 0 now.
    End,
}

/// Prints one stream-json line.
pub fn emit(v: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn success(request_id: &str, response: &Value) -> Value {
    json!({"type": "control_response", "response": {"subtype": "success", "request_id": request_id, "response": response}})
}

impl Input {
    /// Starts reading stdin.
    pub fn start() -> Self {
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            rx,
            queued: VecDeque::new(),
            closed: false,
        }
    }

    /// Whether stdin has closed.
    pub fn closed(&self) -> bool {
        self.closed
    }

    /// The next raw line, waiting at most `wait`; `None` on timeout or end of input.
    fn line(&mut self, wait: Duration) -> Option<String> {
        match self.rx.recv_timeout(wait) {
            Ok(l) => Some(l),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                self.closed = true;
                None
            }
        }
    }

    /// Between turns: the next user line, answering control requests on the way. `Err` when
    /// the session is to end (stdin closed, or `end_session`).
    pub fn next_turn(&mut self, session: &mut SessionState) -> Result<String, Wake> {
        loop {
            if let Some(l) = self.queued.pop_front() {
                return Ok(l);
            }
            if self.closed {
                return Err(Wake::End);
            }
            let Some(line) = self.line(Duration::from_secs(3600)) else {
                continue;
            };
            match Self::take(&line, session) {
                Taken::User(text) => return Ok(text),
                Taken::End => return Err(Wake::End),
                Taken::Interrupt | Taken::Response(..) | Taken::Other => {}
            }
        }
    }

    /// During a turn: waits up to `step` for a line; user lines queue as next turns.
    pub fn poll(&mut self, session: &mut SessionState, step: Duration) -> Option<Wake> {
        let line = self.line(step)?;
        match Self::take(&line, session) {
            Taken::User(text) => {
                self.queued.push_back(text);
                None
            }
            Taken::Interrupt => Some(Wake::Interrupt),
            Taken::End => Some(Wake::End),
            Taken::Response(..) | Taken::Other => None,
        }
    }

    /// Waits for the answer to `can_use_tool` request `request_id`.
    pub fn answer(&mut self, session: &mut SessionState, request_id: &str) -> Answer {
        loop {
            if self.closed {
                return Answer::Closed;
            }
            let Some(line) = self.line(Duration::from_secs(3600)) else {
                continue;
            };
            match Self::take(&line, session) {
                Taken::Response(id, response) if id == request_id => return Answer::Got(response),
                Taken::User(text) => self.queued.push_back(text),
                Taken::Interrupt => return Answer::Interrupted,
                Taken::End => return Answer::End,
                Taken::Response(..) | Taken::Other => {}
            }
        }
    }

    fn take(line: &str, session: &mut SessionState) -> Taken {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            return Taken::Other;
        };
        match v["type"].as_str() {
            Some("user") => {
                // What the turn carries besides its text, for the tests: image blocks.
                let blocks: Vec<Value> = v["message"]["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| {
                        json!({"type": b["type"], "media_type": b["source"]["media_type"],
                               "bytes": b["source"]["data"].as_str().map_or(0, str::len)})
                    })
                    .collect();
                super::log_event("user_line", &json!({"blocks": blocks}));
                // The mock API cannot process an image whose bytes hold `BADPIXELS`.
                session.bad_image = v["message"]["content"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|b| b["source"]["data"].as_str())
                    .filter_map(|d| {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD.decode(d).ok()
                    })
                    .any(|bytes| bytes.windows(9).any(|w| w == b"BADPIXELS"));
                crate::stream::user_text(line).map_or(Taken::Other, Taken::User)
            }
            Some("control_response") => {
                let r = &v["response"];
                Taken::Response(
                    r["request_id"].as_str().unwrap_or_default().to_string(),
                    r.clone(),
                )
            }
            Some("control_request") => {
                let id = v["request_id"].as_str().unwrap_or_default();
                let req = &v["request"];
                // Logged, so a test can see what the wrapper asked.
                super::log_event("control", &json!({"request": req}));
                match req["subtype"].as_str().unwrap_or_default() {
                    "interrupt" => {
                        session.interrupt_id = Some(id.to_string());
                        Taken::Interrupt
                    }
                    "end_session" => {
                        emit(&success(id, &Value::Null));
                        Taken::End
                    }
                    "initialize" => {
                        emit(&success(
                            id,
                            &json!({"commands": [], "models": [], "pid": std::process::id(),
                                    "claude_code_version": session.version,
                                    "current_permission_mode": session.mode}),
                        ));
                        Taken::Other
                    }
                    "set_permission_mode" => {
                        let mode = req["mode"].as_str().unwrap_or_default();
                        if mode == "bypassPermissions" {
                            emit(
                                &json!({"type": "control_response", "response": {"subtype": "error", "request_id": id,
                                "error": "Cannot set permission mode to bypassPermissions because the session was not launched with --dangerously-skip-permissions"}}),
                            );
                        } else {
                            session.mode = mode.to_string();
                            emit(&success(id, &json!({"mode": mode})));
                        }
                        Taken::Other
                    }
                    "set_model" => {
                        emit(&success(id, &json!({"model": req["model"]})));
                        Taken::Other
                    }
                    "get_usage" => {
                        emit(&success(id, &usage_answer(session.cost_usd)));
                        Taken::Other
                    }
                    "list_models" => {
                        emit(&success(id, &models_answer()));
                        Taken::Other
                    }
                    other => {
                        emit(
                            &json!({"type": "control_response", "response": {"subtype": "error", "request_id": id,
                            "error": format!("Unsupported control request subtype: {other}")}}),
                        );
                        Taken::Other
                    }
                }
            }
            _ => Taken::Other,
        }
    }

    /// Prints the success reply to the interrupt that woke a wait.
    pub fn ack_interrupt(session: &mut SessionState) {
        if let Some(id) = session.interrupt_id.take() {
            emit(&success(&id, &json!({"still_queued": []})));
        }
    }
}

enum Taken {
    User(String),
    Response(String, Value),
    Interrupt,
    End,
    Other,
}

/// The answer to a `can_use_tool` request.
pub enum Answer {
    /// The `response` object of the `control_response`.
    Got(Value),
    /// An interrupt came first.
    Interrupted,
    /// stdin closed first.
    Closed,
    /// `end_session` came first.
    End,
}

/// What permissions and controls know of the process.
/// `get_usage`, in the shape of `p_22`.
fn usage_answer(cost_usd: f64) -> Value {
    json!({"session": {"total_cost_usd": cost_usd, "total_api_duration_ms": 0,
                       "total_duration_ms": 0, "total_lines_added": 0,
                       "total_lines_removed": 0, "model_usage": {}},
           "subscription_type": null, "rate_limits_available": false,
           "rate_limits": null, "behaviors": null})
}

/// `list_models`: the values of `p_22`, or `FAKE_CLAUDE_MODELS` (comma-separated).
fn models_answer() -> Value {
    let values: Vec<String> = std::env::var("FAKE_CLAUDE_MODELS").map_or_else(
        |_| {
            ["default", "opus", "fable", "sonnet", "haiku"]
                .map(String::from)
                .to_vec()
        },
        |v| v.split(',').map(str::to_string).collect(),
    );
    let models: Vec<Value> = values
        .iter()
        .map(|m| json!({"value": m, "displayName": m, "description": format!("{m} (stand-in)")}))
        .collect();
    json!({"models": models})
}

pub struct SessionState {
    pub mode: String,
    pub version: String,
    /// `--permission-prompt-tool stdio` was given.
    pub prompt_tool: bool,
    /// Rules from `--allowedTools` / `--settings`, and "always" answers for this process.
    pub rules: Vec<Rule>,
    /// What the session's turns cost so far (for `get_usage`).
    pub cost_usd: f64,
    /// The last user line carried an image the (mock) API cannot process.
    pub bad_image: bool,
    interrupt_id: Option<String>,
}

impl SessionState {
    pub fn new(mode: &str, version: &str, prompt_tool: bool, rules: Vec<Rule>) -> Self {
        Self {
            mode: mode.to_string(),
            version: version.to_string(),
            prompt_tool,
            rules,
            cost_usd: 0.0,
            bad_image: false,
            interrupt_id: None,
        }
    }
}

/// An allow rule: `Bash` (the whole tool), `Bash(cmd)` (that command), `Bash(prefix:*)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub tool: String,
    pub content: Option<String>,
}

impl Rule {
    /// Parses `Tool` or `Tool(content)`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if s.is_empty() {
            return None;
        }
        match s.split_once('(') {
            Some((tool, rest)) => Some(Self {
                tool: tool.to_string(),
                content: Some(rest.strip_suffix(')')?.to_string()),
            }),
            None => Some(Self {
                tool: s.to_string(),
                content: None,
            }),
        }
    }

    /// From an `addRules` entry of `updatedPermissions`.
    pub fn from_update(rule: &Value) -> Option<Self> {
        Some(Self {
            tool: rule["toolName"].as_str()?.to_string(),
            content: rule["ruleContent"].as_str().map(str::to_string),
        })
    }

    pub fn allows(&self, tool: &str, command: &str) -> bool {
        if self.tool != tool {
            return false;
        }
        match &self.content {
            None => true,
            Some(c) => match c.strip_suffix(":*") {
                Some(prefix) => command == prefix || command.starts_with(&format!("{prefix} ")),
                None => c == command,
            },
        }
    }
}

/// Rules given on the command line: `--allowedTools a,b` and `--settings '{"permissions":{"allow":[…]}}'`.
pub fn rules_from_args(allowed: &[String], settings: Option<&str>) -> Vec<Rule> {
    let mut rules: Vec<Rule> = allowed.iter().filter_map(|r| Rule::parse(r)).collect();
    if let Some(v) = settings.and_then(|s| serde_json::from_str::<Value>(s).ok()) {
        if let Some(allow) = v["permissions"]["allow"].as_array() {
            rules.extend(
                allow
                    .iter()
                    .filter_map(Value::as_str)
                    .filter_map(Rule::parse),
            );
        }
    }
    rules
}

/// Commands the real CLI runs without asking in default mode (`p_30`: `ls`).
pub fn is_read_only(command: &str) -> bool {
    let first = command.split_whitespace().next().unwrap_or_default();
    ["echo", "ls", "cat", "pwd", "true", "printenv", "date"].contains(&first)
}

/// The `can_use_tool` request for Bash `command`, as `p_01` shows it.
pub fn bash_request(request_id: &str, tool_use_id: &str, command: &str, cwd: &str) -> Value {
    json!({"type": "control_request", "request_id": request_id, "request": {
        "subtype": "can_use_tool", "tool_name": "Bash", "display_name": "Bash",
        "input": {"command": command, "description": "mock tool call"},
        "description": "mock tool call",
        "permission_suggestions": [
            {"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": command}],
             "behavior": "allow", "destination": "localSettings"},
            {"type": "addDirectories", "directories": [cwd], "destination": "session"},
            {"type": "setMode", "mode": "acceptEdits", "destination": "session"}],
        "tool_use_id": tool_use_id}})
}

/// The `AskUserQuestion` request of `p_41`; with `two`, a second question allowing several
/// answers (`multiSelect`, as the input schema has it).
/// Which questions `ASKQ…` asks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Questions {
    /// `ASKQ`: one.
    One,
    /// `ASKQ2`: two, the second multi-select.
    Two,
    /// `ASKQODD`: one whose labels repeat and run past Discord's 100 characters.
    Odd,
}

pub fn question_request(request_id: &str, tool_use_id: &str, which: Questions) -> Value {
    if which == Questions::Odd {
        let long = "L".repeat(150);
        let questions = vec![json!({"question": "Which one?", "header": "Odd",
            "options": [{"label": "Same"}, {"label": "Same"}, {"label": long}],
            "multiSelect": false})];
        return json!({"type": "control_request", "request_id": request_id, "request": {
            "subtype": "can_use_tool", "tool_name": "AskUserQuestion", "display_name": "AskUserQuestion",
            "input": {"questions": questions}, "requires_user_interaction": true,
            "tool_use_id": tool_use_id}});
    }
    let mut questions = vec![
        json!({"question": "Which color should the button be?", "header": "Color",
        "options": [{"label": "Blue", "description": "A calm blue"},
                    {"label": "Red", "description": "A bold red"}],
        "multiSelect": false}),
    ];
    if which == Questions::Two {
        questions.push(json!({"question": "Which sizes should it come in?", "header": "Sizes",
            "options": [{"label": "S", "description": "small"}, {"label": "M", "description": "medium"},
                        {"label": "L", "description": "large"}],
            "multiSelect": true}));
    }
    json!({"type": "control_request", "request_id": request_id, "request": {
        "subtype": "can_use_tool", "tool_name": "AskUserQuestion", "display_name": "AskUserQuestion",
        "input": {"questions": questions},
        "requires_user_interaction": true,
        "tool_use_id": tool_use_id}})
}

/// The standard text the model gets for a denial with `interrupt: true`, or an interrupt.
pub const REJECTED: &str = "The user doesn't want to proceed with this tool use. The tool use was rejected (eg. if it was a file edit, the new_string was NOT written to the file). STOP what you are doing and wait for the user to tell you how to proceed.";
