//! The stream loop: one turn per prompt (one-shot) or per user line on stdin
//! (`--input-format stream-json`), with waits that see interrupts.

use crate::args::Args;
use crate::control;
use crate::control::{Input, SessionState, Wake};
use crate::files::new_uuid;
use crate::limits::{limited_until, now_secs, usage_limited};
use crate::log::log_event;
use crate::output::{assistant_value, huge_reply, text_block, Out};
use crate::session::{open_session, Session, TurnEnd};
use crate::tools::{ask_question, todo_list, tool_call, write_outbox_files};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Waits for `until` to say the wait is over, or for SIGINT, or (on stdin) for an interrupt or
/// `end_session`; returns whether the wait was cut short, and by what on stdin.
pub(crate) fn wait(
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

pub(crate) fn run(args: &Args, version: &str, interrupted: &AtomicBool) -> u8 {
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
pub(crate) fn user_text(line: &str) -> Option<String> {
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

/// One turn: the answer to `prompt`.
#[allow(clippy::too_many_lines)]
pub(crate) fn turn(
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
        return api_error(s, out, prompt, text, 500, started);
    }

    let bad_image = std::mem::take(&mut s.state.bad_image) || prompt.contains("BADIMAGE");
    if s.version == "2.1.197"
        && (bad_image || s.turns.iter().any(|t| t.prompt.contains("BADIMAGE")))
    {
        // An older CLI keeps the image the API refused and sends it again with every turn.
        let text = r#"API Error: 400 {"type":"error","error":{"type":"invalid_request_error","message":"Could not process image"}}"#;
        return api_error(s, out, &format!("{prompt} BADIMAGE"), text, 400, started);
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
    } else if prompt.contains("TODO") {
        answer = todo_list(s, out);
        num_turns = 2;
    }
    // `STREAM:<n>:<ms>`: the answer is written in n marked pieces, ms apart.
    let (pieces, gap) = match prompt
        .split_whitespace()
        .find_map(|w| w.strip_prefix("STREAM:"))
        .and_then(|v| v.split_once(':'))
        .and_then(|(n, ms)| Some((n.parse::<usize>().ok()?, ms.parse::<u64>().ok()?)))
    {
        Some((n, ms)) => {
            let pieces: Vec<String> = (1..=n.max(1))
                .map(|k| format!("[d{k}] streamed words for part {k}. "))
                .collect();
            answer = pieces.concat();
            (pieces, Duration::from_millis(ms))
        }
        None => (vec![answer.clone()], Duration::ZERO),
    };
    let reply_id = format!("msg_mock_{}", &new_uuid().replace('-', "")[..20]);
    text_block(
        out, &s.id, &s.model, &reply_id, &answer, s.partial, &pieces, gap,
    );
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

/// A turn the API refused with `status`: `text` as the result, `is_error`, exit code 1.
fn api_error(
    s: &mut Session,
    out: &mut Out,
    recorded: &str,
    text: &str,
    status: u16,
    started: Instant,
) -> TurnEnd {
    let total = s.record(recorded, 0.0);
    s.result(
        out,
        "success",
        true,
        Some(text),
        None,
        total,
        1,
        "api_error",
        Some(status),
        started,
    );
    TurnEnd::Done {
        code: 1,
        is_error: true,
    }
}
