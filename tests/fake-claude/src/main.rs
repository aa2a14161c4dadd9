//! A stand-in for the `claude` CLI, used by the tests and the benchmark.
//!
//! It accepts the real CLI's flags, prints the real CLI's `json` / `stream-json` / `text` shapes
//! (see `../shared/claude-cli/BEHAVIOUR.md`; copies of the samples it mirrors are in
//! `tests/fixtures/claude-cli/`), keeps sessions on disk under
//! `$HOME/.claude/projects/<cwd with non-alphanumerics as '-'>/<id>.jsonl` so `--resume` really
//! resumes, and fails like the real one on usage errors and unknown session ids.
//!
//! Words in the prompt steer it (the real CLI's mock API answers `echo: <prompt>` the same way):
//!
//! | word            | behaviour                                                                 |
//! |-----------------|---------------------------------------------------------------------------|
//! | `SLOW`          | sleep `FAKE_CLAUDE_SLOW_MS` (default 3000) before answering               |
//! | `GATE:<path>`   | wait until `<path>` exists before answering                               |
//! | `FAIL500`       | API error result: `subtype` success, `is_error` true, exit 1              |
//! | `MAXTURNS`      | `error_max_turns` result with `errors` and no `result`, exit 1            |
//! | `CRASH`         | print the init line, then exit 3 with a message on stderr                 |
//! | `HANG`          | ignore SIGINT and SIGTERM, start a grandchild `sleep`, never answer       |
//! | `GARBAGE`       | print non-JSON lines and no result, exit 0                                |
//! | `NOISE`         | print noise on stderr and succeed                                         |
//! | `HUGE` / `HUGE:<n>` | answer with n (or `FAKE_CLAUDE_HUGE_BYTES`, default 100000) bytes of Markdown |
//! | `TOOL` / `TOOL:<cmd>` | call Bash (`echo hi` or `<cmd>`, really run in the cwd) and report it |
//! | `HISTORY`       | answer with the earlier prompts of this session                           |
//! | `REPLYFILE:<path>` | answer with the contents of `<path>` (hostile replies in tests)        |
//! | `ASKQ` / `ASKQ2` / `ASKQODD` | ask `AskUserQuestion` (`p_41`); `ASKQ2` adds a multi-select question; `ASKQODD` asks one whose labels repeat and are 150 characters long |
//! | `USAGELIMIT:<t>` | until unix second `t`: a subscription's usage limit as observed (`u_oauth_limit_*`): a `rate_limit_event` (once per process), the error line with `api_error_params`, the `usage_limit_reached` result, exit 1; after `t`, as usual |
//! | `API429:<t>`    | until unix second `t`: the API key's 429 of `u_api429_*` (no reset time); after `t`, as usual |
//! | `WRITEFILE:<name>[:<bytes>]` | write a file (a line of text, or `<bytes>` bytes) to `$CLAUDE_COORDINATOR_OUTBOX` |
//! | `BADIMAGE`      | (or an image block whose bytes hold `BADPIXELS`) the API refuses an image: the synthetic `media_removed` assistant line of `i_image_unprocessable_live`, then the answer; as `2.1.197`, an error result for this and every later turn of the session |
//! | `LINKOUTBOX:<target>` | replace `$CLAUDE_COORDINATOR_OUTBOX` with a symbolic link to `<target>` (Claude's `ln -s`), before any `WRITEFILE` |
//!
//! A prompt starting with `/<name>` where `<name>` is a built-in command runs it locally with no
//! model call, like the real CLI, whatever `--disable-slash-commands` says (with it, the answer
//! is "/<name> isn't available in this environment."). With `--input-format stream-json` the
//! prompt argument is ignored and each user line on stdin is one turn, until stdin closes.
//!
//! SIGINT during `SLOW` / `GATE` prints an `error_during_execution` result and exits 0, like the
//! real CLI; SIGTERM keeps its default action (exit by signal 15).
//!
//! Environment: `FAKE_CLAUDE_LOG` (append one JSON line per start and end — argv, cwd, the whole
//! environment, stdin, pid, pgid — and, with stream-json input, per turn and turn end), `FAKE_CLAUDE_VERSION` (`2.1.330` default: cumulative
//! `total_cost_usd`; `2.1.197`: this call only), `FAKE_CLAUDE_COST` (per call, default 0.05).

use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

mod control;

use control::{Answer, Input, Rule, SessionState, Wake};

const PERMISSION_MODES: [&str; 7] = [
    "acceptEdits",
    "auto",
    "bypassPermissions",
    "manual",
    "default",
    "dontAsk",
    "plan",
];
const DEFAULT_MODEL: &str = "claude-opus-5-5";
const KNOWN_MODELS: [&str; 3] = ["claude-opus-5-5", "claude-sonnet-5-5", "claude-haiku-5-5"];
const TOOLS: [&str; 8] = [
    "Task", "Bash", "Edit", "Glob", "Grep", "Read", "WebFetch", "Write",
];

/// What the command line asked for.
#[derive(Default, Debug)]
#[allow(clippy::struct_excessive_bools)] // one per CLI flag
struct Args {
    print: bool,
    version: bool,
    output_format: String,
    input_format: String,
    verbose: bool,
    resume: Option<String>,
    session_id: Option<String>,
    model: Option<String>,
    system_prompt: Option<String>,
    permission_mode: Option<String>,
    tools: Option<Vec<String>>,
    disallowed_tools: Vec<String>,
    disable_slash_commands: bool,
    permission_prompt_tool: Option<String>,
    allowed_tools: Vec<String>,
    settings: Option<String>,
    prompt: Option<String>,
}

/// A usage error: the real CLI prints one line on stderr, nothing on stdout, and exits 1.
struct Usage(String);

fn parse_args(argv: &[String]) -> Result<Args, Usage> {
    let mut parsed = Args {
        output_format: "text".into(),
        input_format: "text".into(),
        ..Args::default()
    };
    let mut i = 0;
    let value = |i: &mut usize, name: &str| -> Result<String, Usage> {
        *i += 1;
        argv.get(*i)
            .cloned()
            .ok_or_else(|| Usage(format!("error: option '{name}' argument missing")))
    };
    // Variadic options (`--tools a b`) take arguments up to the next option or `--`.
    let variadic = |i: &mut usize| -> Vec<String> {
        let mut out = Vec::new();
        while let Some(next) = argv.get(*i + 1) {
            if next.starts_with('-') {
                break;
            }
            *i += 1;
            out.extend(
                next.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty()),
            );
        }
        out
    };
    while i < argv.len() {
        let arg = argv[i].as_str();
        match arg {
            "--" => {
                parsed.prompt = argv.get(i + 1).cloned();
                break;
            }
            "-p" | "--print" => parsed.print = true,
            "-v" | "--version" => parsed.version = true,
            "--verbose" => parsed.verbose = true,
            "--disable-slash-commands" => parsed.disable_slash_commands = true,
            "--output-format" => {
                let v = value(&mut i, "--output-format <format>")?;
                if !["text", "json", "stream-json"].contains(&v.as_str()) {
                    return Err(Usage(format!("error: option '--output-format <format>' argument '{v}' is invalid. Allowed choices are text, json, stream-json.")));
                }
                parsed.output_format = v;
            }
            "--input-format" => {
                let v = value(&mut i, "--input-format <format>")?;
                if !["text", "stream-json"].contains(&v.as_str()) {
                    return Err(Usage(format!("error: option '--input-format <format>' argument '{v}' is invalid. Allowed choices are text, stream-json.")));
                }
                parsed.input_format = v;
            }
            "-r" | "--resume" => parsed.resume = Some(value(&mut i, "--resume [value]")?),
            "--session-id" => parsed.session_id = Some(value(&mut i, "--session-id <uuid>")?),
            "--model" => parsed.model = Some(value(&mut i, "--model <model>")?),
            "--system-prompt" | "--append-system-prompt" => {
                parsed.system_prompt = Some(value(&mut i, "--system-prompt <prompt>")?);
            }
            "--max-turns" => {
                value(&mut i, "--max-turns <turns>")?;
            }
            "--permission-mode" => {
                let v = value(&mut i, "--permission-mode <mode>")?;
                if !PERMISSION_MODES.contains(&v.as_str()) {
                    return Err(Usage(format!("error: option '--permission-mode <mode>' argument '{v}' is invalid. Allowed choices are acceptEdits, auto, bypassPermissions, manual, dontAsk, plan.")));
                }
                parsed.permission_mode = Some(v);
            }
            "--dangerously-skip-permissions" => {
                parsed.permission_mode = Some("bypassPermissions".into());
            }
            "--tools" => parsed.tools = Some(variadic(&mut i)),
            "--allowedTools" | "--allowed-tools" => {
                parsed.allowed_tools.extend(variadic(&mut i));
            }
            "--permission-prompt-tool" => {
                parsed.permission_prompt_tool =
                    Some(value(&mut i, "--permission-prompt-tool <tool>")?);
            }
            "--settings" => parsed.settings = Some(value(&mut i, "--settings <file-or-json>")?),
            "--disallowedTools" | "--disallowed-tools" => {
                parsed.disallowed_tools.extend(variadic(&mut i));
            }
            other if other.starts_with('-') => {
                return Err(Usage(format!("error: unknown option '{other}'")));
            }
            other => {
                if parsed.prompt.is_none() {
                    parsed.prompt = Some(other.to_string());
                }
            }
        }
        i += 1;
    }
    Ok(parsed)
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// A random version-4 UUID from the kernel's random source.
fn new_uuid() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    });
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
}

fn projects_dir() -> PathBuf {
    home().join(".claude").join("projects")
}

fn mangle(cwd: &Path) -> String {
    cwd.to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Finds a stored session in any project directory (2.1.330 resumes across cwds).
fn find_session(id: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(projects_dir()).ok()?;
    entries
        .flatten()
        .map(|e| e.path().join(format!("{id}.jsonl")))
        .find(|p| p.exists())
}

/// One stored turn of a session.
struct Turn {
    prompt: String,
    cost: f64,
    model: String,
}

fn read_turns(path: &Path) -> Vec<Turn> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .map(|v| Turn {
            prompt: v["prompt"].as_str().unwrap_or_default().to_string(),
            cost: v["cost"].as_f64().unwrap_or(0.0),
            model: v["model"].as_str().unwrap_or(DEFAULT_MODEL).to_string(),
        })
        .collect()
}

fn append_turn(path: &Path, turn: &Turn) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let line = json!({"prompt": turn.prompt, "cost": turn.cost, "model": turn.model});
        let _ = writeln!(f, "{line}");
    }
}

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

/// A turn refused for a limit until `until`: a subscription's usage limit
/// (`u_oauth_limit_stream`, `u_oauth_limit_live`), or an API key's 429 (`u_api429_stream`).
fn usage_limited(
    s: &mut Session,
    out: &mut Out,
    prompt: &str,
    msg_id: &str,
    until: u64,
    subscription: bool,
    started: Instant,
) -> TurnEnd {
    let info = json!({"status": "rejected", "resetsAt": until, "rateLimitType": "five_hour",
                      "overageStatus": "rejected", "isUsingOverage": false});
    if subscription && !s.limit_announced {
        s.limit_announced = true;
        let mut event = info.clone();
        event["unifiedWindows"] =
            json!({"five_hour": {"utilization": 1, "resetsAt": until, "status": "rejected"}});
        out.line(
            &json!({"type": "rate_limit_event", "rate_limit_info": event,
                         "uuid": new_uuid(), "session_id": s.id}),
        );
    }
    let text = if subscription {
        let (h, m) = ((until / 3600) % 24, (until / 60) % 60);
        let (h12, half) = (
            if h % 12 == 0 { 12 } else { h % 12 },
            if h < 12 { "am" } else { "pm" },
        );
        format!("You've hit your limit · resets {h12}:{m:02}{half} (UTC)")
    } else {
        "API Error: Request rejected (429) · Rate limited (mock)".to_string()
    };
    let mut line = assistant_value(
        &s.id,
        &s.model,
        msg_id,
        &json!({"type": "text", "text": text}),
    );
    line["error"] = json!("rate_limit");
    line["is_api_error_message"] = json!(true);
    line["api_error_status"] = json!(429);
    line["api_error_type"] = json!("rate_limit_error");
    if subscription {
        line["api_error"] = json!("usage_limit_reached");
        line["api_error_params"] = json!({"rate_limit_info": info});
    }
    out.line(&line);
    let total = s.record(prompt, 0.0);
    s.api_error = subscription.then_some("usage_limit_reached");
    s.result(
        out,
        "success",
        true,
        Some(&text),
        None,
        total,
        1,
        "api_error",
        Some(429),
        started,
    );
    s.api_error = None;
    // A subscription's limit exits 1 in both formats; the API key's 429 exits 0 with
    // stream-json (`u_api429_stream`) and 1 with json.
    let code = u8::from(subscription || out.format != "stream-json");
    TurnEnd::Done {
        code,
        is_error: true,
    }
}

/// `WRITEFILE:<name>[:<bytes>]`: writes a file to `$CLAUDE_COORDINATOR_OUTBOX`, as Claude
/// would with its Write tool (`<name>` may be hostile: it is joined as given).
fn write_outbox_files(prompt: &str) {
    let Some(dir) = std::env::var_os("CLAUDE_COORDINATOR_OUTBOX") else {
        return;
    };
    for target in prompt
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("LINKOUTBOX:"))
    {
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::os::unix::fs::symlink(target, &dir);
    }
    for word in prompt.split_whitespace() {
        let Some(spec) = word.strip_prefix("WRITEFILE:") else {
            continue;
        };
        let (name, size) = match spec.rsplit_once(':') {
            Some((n, s)) if s.parse::<usize>().is_ok() => (n, s.parse().unwrap_or(0)),
            _ => (spec, 0),
        };
        let body = if size > 0 {
            vec![b'x'; size]
        } else {
            format!("written by the stand-in: {name}\n").into_bytes()
        };
        let _ = std::fs::write(Path::new(&dir).join(name), body);
    }
}

/// `USAGELIMIT:<t>` (a subscription, with a reset time) or `API429:<t>` in the prompt.
fn limited_until(prompt: &str) -> Option<(u64, bool)> {
    prompt.split_whitespace().find_map(|w| {
        w.strip_prefix("USAGELIMIT:")
            .map(|t| (t, true))
            .or_else(|| w.strip_prefix("API429:").map(|t| (t, false)))
            .and_then(|(t, announced)| t.parse().ok().map(|t| (t, announced)))
    })
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where the answer goes: one of the real CLI's output formats.
struct Out {
    format: String,
    stdout: std::io::Stdout,
}

impl Out {
    fn line(&mut self, v: &Value) {
        if self.format == "stream-json" {
            let mut lock = self.stdout.lock();
            let _ = writeln!(lock, "{v}");
            let _ = lock.flush();
        }
    }

    fn result(&mut self, v: &Value) {
        let mut lock = self.stdout.lock();
        match self.format.as_str() {
            "text" => {
                let text = v["result"].as_str().map(str::to_string).unwrap_or_default();
                let _ = writeln!(lock, "{text}");
            }
            _ => {
                let _ = writeln!(lock, "{v}");
            }
        }
        let _ = lock.flush();
    }
}

fn usage_block(input_tokens: u64, output_tokens: u64) -> Value {
    json!({
        "input_tokens": input_tokens, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
        "output_tokens": output_tokens, "output_tokens_details": {"thinking_tokens": 0},
        "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
        "service_tier": "standard",
        "cache_creation": {"ephemeral_1h_input_tokens": 0, "ephemeral_5m_input_tokens": 0},
        "inference_geo": "", "iterations": [], "speed": "standard", "fallback_credit": null
    })
}

/// The final `result` object, with the keys the real 2.1.330 CLI prints.
struct ResultParts<'a> {
    session_id: &'a str,
    model: &'a str,
    subtype: &'a str,
    is_error: bool,
    result: Option<&'a str>,
    errors: Option<Vec<String>>,
    total_cost: f64,
    num_turns: u32,
    terminal_reason: &'a str,
    api_error_status: Option<u16>,
    duration_ms: u128,
}

fn result_value(p: &ResultParts) -> Value {
    let model_usage = if p.total_cost > 0.0 {
        json!({p.model: {"inputTokens": 12524, "outputTokens": 9, "cacheReadInputTokens": 0,
            "cacheCreationInputTokens": 0, "webSearchRequests": 0, "costUSD": p.total_cost,
            "contextWindow": 1_000_000, "maxOutputTokens": 128_000, "thinkingTokens": 0,
            "canonicalModel": p.model, "provider": "firstParty", "costBasis": "list"}})
    } else {
        json!({})
    };
    let mut v = json!({
        "duration_api_ms": p.duration_ms / 2,
        "stop_reason": if p.is_error { Value::Null } else { json!("end_turn") },
        "session_id": p.session_id,
        // The real CLI prints a zero cost as the integer 0.
        "total_cost_usd": if p.total_cost == 0.0 { json!(0) } else { json!(p.total_cost) },
        "usage": usage_block(12524, 9),
        "modelUsage": model_usage,
        "permission_denials": [],
        "terminal_reason": p.terminal_reason,
        "fast_mode_state": "off",
        "safety_stops": 0,
        "is_error": p.is_error,
        "num_turns": p.num_turns,
        "subtype": p.subtype,
        "type": "result",
        "duration_ms": p.duration_ms,
        "uuid": new_uuid(),
        "queued_turn_count": 0,
        "result_index": 0,
    });
    if let Some(obj) = v.as_object_mut() {
        if let Some(r) = p.result {
            obj.insert("result".into(), json!(r));
            obj.insert("api_error_status".into(), json!(p.api_error_status));
        }
        if let Some(e) = &p.errors {
            obj.insert("errors".into(), json!(e));
        }
    }
    v
}

fn init_value(
    session_id: &str,
    model: &str,
    cwd: &Path,
    mode: &str,
    version: &str,
    tools: &[String],
) -> Value {
    json!({
        "type": "system", "subtype": "init", "cwd": cwd.display().to_string(),
        "session_id": session_id, "tools": tools, "mcp_servers": [], "model": model,
        "permissionMode": mode, "slash_commands": ["clear", "compact", "cost", "model"],
        "apiKeySource": "ANTHROPIC_API_KEY", "claude_code_version": version,
        "output_style": "default", "agents": [], "skills": [], "plugins": [],
        "uuid": new_uuid(), "original_cwd": cwd.display().to_string(),
        "additional_directories": [], "fast_mode_state": "off"
    })
}

fn assistant_value(session_id: &str, model: &str, msg_id: &str, block: &Value) -> Value {
    json!({
        "type": "assistant",
        "message": {"id": msg_id, "type": "message", "role": "assistant", "model": model,
            "content": [block], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 12526, "output_tokens": 1, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0}, "context_management": null},
        "parent_tool_use_id": null, "session_id": session_id, "uuid": new_uuid(),
        "timestamp": "2026-11-23T19:34:27.221Z", "request_id": format!("req_mock_{}", &new_uuid()[..8])
    })
}

fn huge_reply(bytes: usize) -> String {
    let mut out = String::from("Here is a long answer.\n\n");
    let mut section = 0;
    while out.len() < bytes {
        section += 1;
        let _ = writeln!(out, "## Section {section}\n");
        for line in 0..20 {
            let _ = writeln!(out, "Line {line} of section {section}: the quick brown fox jumps over the lazy dog — ünïcödé ✓.");
        }
        let _ = writeln!(out, "\n```rust\nfn section_{section}() {{");
        for line in 0..15 {
            let _ = writeln!(out, "    println!(\"{section}.{line}\");");
        }
        let _ = writeln!(out, "}}\n```\n");
    }
    out
}

/// Waits for `until` to say the wait is over, or for SIGINT, or (on stdin) for an interrupt or
/// `end_session`; returns whether the wait was cut short, and by what on stdin.
fn wait(
    interrupted: &AtomicBool,
    mut input: Option<&mut Input>,
    state: &mut SessionState,
    until: impl Fn() -> bool,
) -> (bool, Option<Wake>) {
    loop {
        if interrupted.load(Ordering::SeqCst) {
            return (true, None);
        }
        if until() {
            return (false, None);
        }
        match input.as_deref_mut() {
            Some(i) => {
                if let Some(w) = i.poll(state, Duration::from_millis(10)) {
                    return (true, Some(w));
                }
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// The `tool_result` line the model is given for `tool_use_id`.
fn tool_result_line(
    s: &Session,
    tool_use_id: &str,
    said: &str,
    is_error: bool,
    meta: &Value,
) -> Value {
    json!({"type": "user", "message": {"role": "user", "content": [{"tool_use_id": tool_use_id,
        "type": "tool_result", "content": said, "is_error": is_error}]}, "parent_tool_use_id": null,
        "session_id": s.id, "uuid": new_uuid(), "timestamp": "2026-11-23T19:45:16.143Z",
        "tool_use_result": {"stdout": if is_error { "" } else { said }, "stderr": "", "interrupted": false,
            "isImage": false, "noOutputExpected": false},
        "tool_result_meta": meta})
}

/// The turn ends as an interrupted tool call does (`p_07`, `p_21`): rejected, then
/// `error_during_execution` with `terminal_reason` `aborted_tools` and no `result`.
fn aborted_tools(s: &mut Session, out: &mut Out, tool_use_id: &str, started: Instant) -> TurnEnd {
    control::emit(&tool_result_line(
        s,
        tool_use_id,
        control::REJECTED,
        true,
        &json!([]),
    ));
    control::emit(
        &json!({"type": "user", "message": {"role": "user", "content": [{"type": "text",
        "text": "[Request interrupted by user for tool use]"}]}, "parent_tool_use_id": null, "session_id": s.id}),
    );
    let total = s.record("(interrupted)", s.per_call_cost);
    s.aborted(out, total, 1, "aborted_tools", started);
    TurnEnd::Done {
        code: 1,
        is_error: true,
    }
}

/// Asks the wrapper about a tool call (`can_use_tool`) and waits for the answer. `Ok` carries the
/// (possibly updated) input and whether it was allowed with an "always" rule; `Err(text)` a
/// denial whose text the model is given; the outer `Err` ends the turn.
fn ask(
    s: &mut Session,
    out: &mut Out,
    input: &mut Input,
    request: &Value,
    tool_use_id: &str,
    started: Instant,
) -> Result<Result<Value, String>, TurnEnd> {
    let request_id = request["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    control::emit(request);
    log_event("asked", &json!({"request_id": request_id}));
    match input.answer(&mut s.state, &request_id) {
        Answer::Got(resp) => {
            if resp["subtype"] == "error" {
                return Ok(Err(format!(
                    "Tool permission request failed: Error: {}",
                    resp["error"].as_str().unwrap_or_default()
                )));
            }
            let r = &resp["response"];
            match r["behavior"].as_str() {
                Some("allow") => {
                    for u in r["updatedPermissions"].as_array().into_iter().flatten() {
                        if u["type"] == "addRules" && u["behavior"] != "deny" {
                            s.state.rules.extend(
                                u["rules"].as_array().into_iter().flatten().filter_map(Rule::from_update),
                            );
                        }
                    }
                    Ok(Ok(r["updatedInput"].clone()))
                }
                Some("deny") if r["interrupt"] == true => Err(aborted_tools(s, out, tool_use_id, started)),
                Some("deny") => Ok(Err(r["message"].as_str().unwrap_or_default().to_string())),
                _ => Ok(Err("The canUseTool callback returned an invalid permission result. Expected {behavior: 'allow', updatedInput?: object} or {behavior: 'deny', message: string}".to_string())),
            }
        }
        Answer::Interrupted => {
            control::emit(&json!({"type": "control_cancel_request", "request_id": request_id}));
            Input::ack_interrupt(&mut s.state);
            Err(aborted_tools(s, out, tool_use_id, started))
        }
        Answer::Closed => Ok(Err("Tool permission request failed: AbortError: Tool permission stream closed before response received".to_string())),
        Answer::End => Err(TurnEnd::Exit(0)),
    }
}

/// One Bash call: run it if it is read-only or allowed by a rule or the mode; else ask the
/// wrapper (with the prompt tool) or refuse. Returns what the model is told.
fn tool_call(
    s: &mut Session,
    out: &mut Out,
    input: Option<&mut Input>,
    command: &str,
    tool_use_id: &str,
    started: Instant,
) -> Result<String, TurnEnd> {
    if !s.tools.iter().any(|t| t == "Bash") {
        return Ok("<tool_use_error>Error: No such tool available: Bash. Bash is disabled for this session, in subagents as well as here.</tool_use_error>".to_string());
    }
    let allowed = control::is_read_only(command)
        || s.state.rules.iter().any(|r| r.allows("Bash", command))
        || s.state.mode == "bypassPermissions";
    let mut command = command.to_string();
    let mut meta = json!([]);
    if !allowed {
        let decided = match input {
            Some(input) if s.state.prompt_tool && s.state.mode != "dontAsk" => {
                let request_id = new_uuid();
                let request = control::bash_request(
                    &request_id,
                    tool_use_id,
                    &command,
                    &s.cwd.display().to_string(),
                );
                ask(s, out, input, &request, tool_use_id, started)?
            }
            _ => Err(format!(
                "Permission to use Bash with command {command} has been denied."
            )),
        };
        match decided {
            Ok(updated) => {
                if let Some(c) = updated["command"].as_str() {
                    command = c.to_string();
                }
                meta = json!([{"permission_decision": {"decision": "accept", "source": "user_temporary"}}]);
            }
            Err(text) => {
                s.denials
                    .push(json!({"tool_name": "Bash", "tool_use_id": tool_use_id,
                    "tool_input": {"command": command, "description": "mock tool call"}}));
                out.line(&tool_result_line(s, tool_use_id, &text, true, &json!([])));
                return Ok(text);
            }
        }
    }
    let said = std::process::Command::new("sh")
        .arg("-c")
        .arg(&command)
        .output()
        .map_or_else(
            |e| format!("<tool_use_error>{e}</tool_use_error>"),
            |o| {
                let t = String::from_utf8_lossy(&o.stdout).trim().to_string();
                if t.is_empty() {
                    "(Bash completed with no output)".to_string()
                } else {
                    t
                }
            },
        );
    out.line(&tool_result_line(s, tool_use_id, &said, false, &meta));
    Ok(said)
}

/// `ASKQ`: the AskUserQuestion call of `p_41`–`p_43`; returns what the model is told.
fn ask_question(
    s: &mut Session,
    out: &mut Out,
    input: Option<&mut Input>,
    which: control::Questions,
    started: Instant,
) -> Result<String, TurnEnd> {
    let tool_use_id = format!("toolu_mock_{}", &new_uuid().replace('-', "")[..20]);
    let Some(input) = input.filter(|_| s.state.prompt_tool) else {
        return Ok("The user did not answer the questions.".to_string());
    };
    let request = control::question_request(&new_uuid(), &tool_use_id, which);
    out.line(&assistant_value(
        &s.id,
        &s.model,
        "msg_mock_askq",
        &json!({"type": "tool_use", "id": tool_use_id, "name": "AskUserQuestion", "input": request["request"]["input"]}),
    ));
    let said = match ask(s, out, input, &request, &tool_use_id, started)? {
        Ok(updated) => match updated["answers"].as_object() {
            Some(answers) if !answers.is_empty() => {
                let parts: Vec<String> = answers
                    .iter()
                    .map(|(q, a)| format!("\"{q}\"=\"{}\"", a.as_str().unwrap_or_default()))
                    .collect();
                format!(
                    "Your questions have been answered: {}. You can now continue with the user's answers in mind.",
                    parts.join(", ")
                )
            }
            _ => "The user did not answer the questions.".to_string(),
        },
        Err(text) => text,
    };
    control::emit(&tool_result_line(s, &tool_use_id, &said, false, &json!([])));
    Ok(said)
}

fn main() -> ExitCode {
    // First thing, so a SIGINT at any time after the start record ends the run cleanly.
    let interrupted = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&interrupted));
    let cli: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&cli) {
        Ok(a) => a,
        Err(Usage(msg)) => {
            eprintln!("{msg}");
            return ExitCode::from(1);
        }
    };
    let version = std::env::var("FAKE_CLAUDE_VERSION").unwrap_or_else(|_| "2.1.330".into());
    if args.version {
        println!("{version} (Claude Code)");
        return ExitCode::SUCCESS;
    }
    log_event("start", &json!({}));
    let code = run(&args, &version, &interrupted);
    log_event("end", &json!({"exit": code}));
    ExitCode::from(code)
}

/// Built-in commands the real CLI runs locally when a prompt starts with `/<name>`, with no API
/// call, whatever `--disable-slash-commands` says (BEHAVIOUR.md, `i_slash__*`,
/// `i_disable_slash__*`, `i_stdin_stream_slash`). Other names reach the model as text.
const BUILTIN_COMMANDS: [&str; 16] = [
    "clear", "compact", "config", "context", "cost", "doctor", "help", "init", "mcp", "model",
    "rename", "review", "status", "usage", "agents", "memory",
];

/// The session a process works on, across its turns.
struct Session {
    id: String,
    path: PathBuf,
    turns: Vec<Turn>,
    model: String,
    mode: String,
    tools: Vec<String>,
    cwd: PathBuf,
    version: String,
    cumulative: bool,
    per_call_cost: f64,
    disable_slash_commands: bool,
    /// Mode, rules and the prompt tool, as controls and permissions change them.
    state: SessionState,
    /// Tool calls denied in this turn, for the result's `permission_denials`.
    denials: Vec<Value>,
    /// A `rate_limit_event` was printed: a warm process prints it once (`u_oauth_limit_live`).
    limit_announced: bool,
    /// The next result's `api_error` (`usage_limit_reached`).
    api_error: Option<&'static str>,
}

/// How a turn ended.
enum TurnEnd {
    /// A result was printed (or, for `GARBAGE`, not): the exit code for a one-shot run and
    /// whether the result was an error.
    Done { code: u8, is_error: bool },
    /// The process must exit now with this code (a crash).
    Exit(u8),
}

impl Session {
    fn earlier_cost(&self) -> f64 {
        // An empty float sum is -0.0, which would print as "$-0.0000".
        self.turns.iter().map(|t| t.cost).sum::<f64>() + 0.0
    }

    fn reported(&self, call_cost: f64) -> f64 {
        if self.cumulative {
            self.earlier_cost() + call_cost
        } else {
            call_cost
        }
    }

    /// Stores the turn; returns the `total_cost_usd` to report for it.
    fn record(&mut self, prompt: &str, cost: f64) -> f64 {
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

    fn init(&self, out: &mut Out, session_id: &str) {
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
    fn result(
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
    fn aborted(&self, out: &mut Out, total: f64, num_turns: u32, reason: &str, started: Instant) {
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

    /// A built-in command, run locally. `None` when `prompt` is not one.
    fn local_command(&mut self, out: &mut Out, prompt: &str, started: Instant) -> Option<TurnEnd> {
        let name = prompt.strip_prefix('/')?.split_whitespace().next()?;
        if !BUILTIN_COMMANDS.contains(&name) {
            return None;
        }
        let text = if self.disable_slash_commands || name == "help" {
            format!("/{name} isn't available in this environment.")
        } else {
            match name {
                "cost" => format!(
                    "Estimated cost:        ${:.4}\nTotal duration (API):  0s",
                    self.earlier_cost()
                ),
                "model" => format!(
                    "Set model to `{}` for this session only",
                    prompt.split_whitespace().nth(1).unwrap_or_default()
                ),
                _ => String::new(),
            }
        };
        // `/clear` starts a new conversation: a new session id.
        if name == "clear" && !self.disable_slash_commands {
            self.id = new_uuid();
            self.path = projects_dir()
                .join(mangle(&self.cwd))
                .join(format!("{}.jsonl", self.id));
            self.turns.clear();
        }
        self.init(out, &self.id.clone());
        self.result(
            out,
            "success",
            false,
            Some(&text),
            None,
            0.0,
            0,
            "completed",
            None,
            started,
        );
        Some(TurnEnd::Done {
            code: 0,
            is_error: false,
        })
    }
}

fn run(args: &Args, version: &str, interrupted: &AtomicBool) -> u8 {
    if !args.print {
        eprintln!("stand-in claude: only --print mode is supported");
        return 2;
    }
    if args.output_format == "stream-json" && !args.verbose {
        eprintln!("Error: When using --print, --output-format=stream-json requires --verbose");
        return 1;
    }
    let mode = args
        .permission_mode
        .clone()
        .unwrap_or_else(|| "default".into());
    if mode == "bypassPermissions"
        && nix::unistd::geteuid().is_root()
        && std::env::var("IS_SANDBOX").as_deref() != Ok("1")
        && std::env::var("CLAUDE_CODE_BUBBLEWRAP").as_deref() != Ok("1")
    {
        eprintln!("--dangerously-skip-permissions cannot be used with root/sudo privileges for security reasons");
        return 1;
    }
    let stream_input = args.input_format == "stream-json";
    // With stream-json input a prompt argument is silently ignored (PERMISSIONS.md, p_40b).
    let prompt = if stream_input {
        None
    } else {
        let Some(prompt) = args.prompt.clone() else {
            eprintln!("Error: Input must be provided either through stdin or as a prompt argument when using --print");
            return 1;
        };
        if std::fs::read_link("/proc/self/fd/0")
            .is_ok_and(|p| p.to_string_lossy().starts_with("pipe:"))
        {
            eprintln!("Warning: no stdin data received in 3s, proceeding without it. If piping from a slow command, redirect stdin explicitly: < /dev/null to skip, or wait longer.");
        }
        Some(prompt)
    };
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let mut out = Out {
        format: args.output_format.clone(),
        stdout: std::io::stdout(),
    };
    let Some(mut session) = open_session(args, version, &mode, cwd, &mut out) else {
        return 1;
    };
    if let Some(p) = prompt {
        return match turn(&mut session, &mut out, &p, interrupted, None) {
            TurnEnd::Done { code, .. } | TurnEnd::Exit(code) => code,
        };
    }
    // One turn per user line; the exit code follows the last result.
    let mut input = Input::start();
    let mut last_error = false;
    loop {
        let p = match input.next_turn(&mut session.state) {
            Ok(p) => p,
            Err(Wake::End) if input.closed() => return u8::from(last_error),
            Err(_) => return 0,
        };
        log_event("turn", &json!({"prompt": p}));
        match turn(&mut session, &mut out, &p, interrupted, Some(&mut input)) {
            TurnEnd::Done { is_error, .. } => last_error = is_error,
            TurnEnd::Exit(code) => return code,
        }
    }
}

/// The text of a stream-json user line: a string `content`, or its last text block (the CLI
/// parses that one for commands: `observed-slash-escape.md`).
fn user_text(line: &str) -> Option<String> {
    let v: Value = serde_json::from_str(line).ok()?;
    if v["type"] != "user" {
        return None;
    }
    let content = &v["message"]["content"];
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(blocks) => blocks
            .iter()
            .rev()
            .find(|b| b["type"] == "text")
            .and_then(|b| b["text"].as_str())
            .map(str::to_string),
        _ => None,
    }
}

/// Resumes the session asked for, or starts a new one; `None` after a usage error (printed).
fn open_session(
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
        (id.clone(), path, turns)
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
        state: SessionState::new(
            mode,
            version,
            args.permission_prompt_tool.as_deref() == Some("stdio"),
            control::rules_from_args(&args.allowed_tools, args.settings.as_deref()),
        ),
        denials: Vec::new(),
    })
}

/// One turn: the answer to `prompt`.
#[allow(clippy::too_many_lines)]
fn turn(
    s: &mut Session,
    out: &mut Out,
    prompt: &str,
    interrupted: &AtomicBool,
    mut input: Option<&mut Input>,
) -> TurnEnd {
    let started = Instant::now();
    s.denials.clear();
    if let Some(end) = s.local_command(out, prompt, started) {
        return end;
    }
    s.init(out, &s.id.clone());
    let msg_id = format!("msg_mock_{}", &new_uuid().replace('-', "")[..20]);

    if prompt.contains("CRASH") {
        eprintln!("stand-in claude: simulated crash (CRASH in prompt)");
        return TurnEnd::Exit(3);
    }
    if prompt.contains("GARBAGE") {
        let mut lock = std::io::stdout().lock();
        let _ = writeln!(lock, "this is not json");
        let _ = writeln!(lock, "{{\"truncated\": ");
        let _ = writeln!(lock, "\u{1b}[31mcolour codes\u{1b}[0m");
        return TurnEnd::Done {
            code: 0,
            is_error: false,
        };
    }
    if prompt.contains("HANG") {
        // Ignore the polite signals, and leave a grandchild in the process group.
        let ignored = Arc::new(AtomicBool::new(false));
        let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, Arc::clone(&ignored));
        let child = std::process::Command::new("sleep").arg("3600").spawn();
        let grandchild = child.as_ref().map_or(0, std::process::Child::id);
        log_event("hang", &json!({"grandchild": grandchild}));
        loop {
            std::thread::sleep(Duration::from_secs(1));
        }
    }
    if prompt.contains("NOISE") {
        eprintln!(
            "[claude-code:telemetry] could not flush events (noise on stderr is not failure)"
        );
    }

    let mut waited = false;
    let mut woke = None;
    if prompt.contains("SLOW") {
        let ms: u64 = std::env::var("FAKE_CLAUDE_SLOW_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3000);
        let until = Instant::now() + Duration::from_millis(ms);
        (waited, woke) = wait(interrupted, input.as_deref_mut(), &mut s.state, || {
            Instant::now() >= until
        });
    }
    if let Some(gate) = prompt
        .split_whitespace()
        .find_map(|w| w.strip_prefix("GATE:"))
    {
        let gate = PathBuf::from(gate);
        if !waited {
            (waited, woke) = wait(interrupted, input.as_deref_mut(), &mut s.state, || {
                gate.exists()
            });
        }
    }
    match woke {
        Some(Wake::End) => return TurnEnd::Exit(0),
        Some(Wake::Interrupt) => {
            Input::ack_interrupt(&mut s.state);
            control::emit(
                &json!({"type": "user", "message": {"role": "user", "content": [{"type": "text", "text": "[Request interrupted by user]"}]},
                "parent_tool_use_id": null, "session_id": s.id}),
            );
        }
        None => {}
    }
    if waited {
        // SIGINT: the clean cancel. The turn is recorded, the result says error_during_execution.
        let total = s.record(prompt, 0.0);
        let turns = s.turns.len() as u32;
        s.aborted(out, total, turns, "aborted_streaming", started);
        return TurnEnd::Done {
            code: 0,
            is_error: true,
        };
    }

    if let Some((until, subscription)) = limited_until(prompt) {
        if now_secs() < until {
            return usage_limited(s, out, prompt, &msg_id, until, subscription, started);
        }
    }

    if prompt.contains("FAIL500") {
        let text = "API Error: 500 Internal server error (mock). This is a server-side issue, usually temporary — try again in a moment.";
        out.line(&assistant_value(
            &s.id,
            &s.model,
            &msg_id,
            &json!({"type": "text", "text": text}),
        ));
        let total = s.record(prompt, 0.0);
        s.result(
            out,
            "success",
            true,
            Some(text),
            None,
            total,
            1,
            "api_error",
            Some(500),
            started,
        );
        return TurnEnd::Done {
            code: 1,
            is_error: true,
        };
    }

    let bad_image = std::mem::take(&mut s.state.bad_image) || prompt.contains("BADIMAGE");
    if s.version == "2.1.197"
        && (bad_image || s.turns.iter().any(|t| t.prompt.contains("BADIMAGE")))
    {
        // An older CLI keeps the image the API refused and sends it again with every turn.
        let text = r#"API Error: 400 {"type":"error","error":{"type":"invalid_request_error","message":"Could not process image"}}"#;
        let total = s.record(&format!("{prompt} BADIMAGE"), 0.0);
        s.result(
            out,
            "success",
            true,
            Some(text),
            None,
            total,
            1,
            "api_error",
            Some(400),
            started,
        );
        return TurnEnd::Done {
            code: 1,
            is_error: true,
        };
    }
    if bad_image {
        // As observed: the CLI removes the image, says so in one synthetic line, and goes on.
        out.line(&json!({"type": "assistant", "message": {"id": new_uuid(), "model": "<synthetic>",
            "role": "assistant", "stop_reason": "tool_use", "type": "message",
            "content": [{"type": "text", "text": "API Error: an image in the conversation could not be processed and was removed. Re-read the file with a different approach if you still need it."}]},
            "parent_tool_use_id": null, "session_id": s.id, "uuid": new_uuid(),
            "error": "invalid_request", "is_api_error_message": true, "api_error": "media_removed",
            "api_error_params": {"media": "image", "media_reason": "unprocessable"}}));
    }
    write_outbox_files(prompt);
    let mut num_turns = 1;
    let mut answer = format!("echo: {prompt}");
    if let Some(cmd) = prompt
        .split_once("TOOL:")
        .map(|(_, c)| c.trim().to_string())
        .or_else(|| prompt.contains("TOOL").then(|| "echo hi".to_string()))
    {
        let tool_id = format!("toolu_mock_{}", &new_uuid().replace('-', "")[..20]);
        out.line(&assistant_value(
            &s.id,
            &s.model,
            &msg_id,
            &json!({"type": "text", "text": "running a tool"}),
        ));
        out.line(&assistant_value(
            &s.id,
            &s.model,
            &msg_id,
            &json!({"type": "tool_use", "id": tool_id, "name": "Bash",
            "input": {"command": cmd, "description": "mock tool call"}}),
        ));
        if prompt.contains("MAXTURNS") {
            let total = s.record(prompt, s.per_call_cost);
            s.result(
                out,
                "error_max_turns",
                true,
                None,
                Some(vec!["Reached maximum number of turns (1)".into()]),
                total,
                2,
                "max_turns",
                None,
                started,
            );
            return TurnEnd::Done {
                code: 1,
                is_error: true,
            };
        }
        let said = match tool_call(s, out, input.as_deref_mut(), &cmd, &tool_id, started) {
            Ok(said) => said,
            Err(end) => return end,
        };
        answer = format!("tool said: {said}");
        num_turns = 2;
    } else if prompt.contains("ASKQ") {
        let which = if prompt.contains("ASKQ2") {
            control::Questions::Two
        } else if prompt.contains("ASKQODD") {
            control::Questions::Odd
        } else {
            control::Questions::One
        };
        match ask_question(s, out, input, which, started) {
            Ok(said) => answer = format!("tool said: {said}"),
            Err(end) => return end,
        }
        num_turns = 2;
    } else if let Some(path) = prompt
        .split_whitespace()
        .find_map(|w| w.strip_prefix("REPLYFILE:"))
    {
        answer = std::fs::read_to_string(path)
            .unwrap_or_else(|e| format!("REPLYFILE {path} unreadable: {e}"));
    } else if prompt.contains("HUGE") {
        let bytes = prompt
            .split_whitespace()
            .find_map(|w| w.strip_prefix("HUGE:"))
            .and_then(|v| v.parse().ok())
            .or_else(|| {
                std::env::var("FAKE_CLAUDE_HUGE_BYTES")
                    .ok()
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or(100_000);
        answer = huge_reply(bytes);
    } else if prompt.contains("HISTORY") {
        let earlier: Vec<&str> = s.turns.iter().map(|t| t.prompt.as_str()).collect();
        answer = format!("history: {}", earlier.join(" | "));
    }
    let reply_id = format!("msg_mock_{}", &new_uuid().replace('-', "")[..20]);
    out.line(&assistant_value(
        &s.id,
        &s.model,
        &reply_id,
        &json!({"type": "text", "text": answer}),
    ));
    let total = s.record(prompt, s.per_call_cost);
    s.result(
        out,
        "success",
        false,
        Some(&answer),
        None,
        total,
        num_turns,
        "completed",
        None,
        started,
    );
    TurnEnd::Done {
        code: 0,
        is_error: false,
    }
}
