//! Tools: Bash really run in the cwd (`TOOL`), files written to the outbox (`WRITEFILE`),
//! permission requests (`can_use_tool`) and `AskUserQuestion`, and what a cancel leaves.

use crate::control;
use crate::control::{Answer, Input, Rule};
use crate::files::new_uuid;
use crate::log::log_event;
use crate::output::{assistant_value, Out};
use crate::session::{Session, TurnEnd};
use serde_json::{json, Value};
use std::path::Path;
use std::time::Instant;

/// `WRITEFILE:<name>[:<bytes>]`: writes a file to `$CLAUDE_COORDINATOR_OUTBOX`, as Claude
/// would with its Write tool (`<name>` may be hostile: it is joined as given).
pub(crate) fn write_outbox_files(prompt: &str) {
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

/// The `tool_result` line the model is given for `tool_use_id`.
pub(crate) fn tool_result_line(
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
pub(crate) fn aborted_tools(
    s: &mut Session,
    out: &mut Out,
    tool_use_id: &str,
    started: Instant,
) -> TurnEnd {
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
pub(crate) fn ask(
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
pub(crate) fn tool_call(
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
pub(crate) fn ask_question(
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

/// `TODO`: Claude keeps a to-do list. With `CLAUDE_CODE_ENABLE_TODO_TOOLS=1` (2.1.330), as
/// `o_todo_tools_live` shows: the task tools found with `ToolSearch`, two tasks created, the
/// first started and completed, each call answered with its structured result; else with one
/// `TodoWrite` of the whole list (older CLIs). Steps `FAKE_CLAUDE_TODO_GAP_MS` apart (default
/// 300). Returns what the model is told at the end.
pub(crate) fn todo_list(s: &mut Session, out: &mut Out) -> String {
    let gap = std::time::Duration::from_millis(
        std::env::var("FAKE_CLAUDE_TODO_GAP_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(300),
    );
    let mut call = |name: &str, input: Value, said: &str, result: Value| {
        let id = format!("toolu_mock_{}", &new_uuid().replace('-', "")[..20]);
        let msg_id = format!("msg_mock_{}", &new_uuid().replace('-', "")[..20]);
        out.line(&assistant_value(
            &s.id,
            &s.model,
            &msg_id,
            &json!({"type": "tool_use", "id": id, "name": name, "input": input}),
        ));
        out.line(
            &json!({"type": "user", "message": {"role": "user", "content": [
                {"tool_use_id": id, "type": "tool_result", "content": said}]},
            "parent_tool_use_id": null, "session_id": s.id, "uuid": new_uuid(),
            "timestamp": "2026-12-06T22:12:47.795Z", "tool_use_result": result}),
        );
        std::thread::sleep(gap);
    };
    if std::env::var("CLAUDE_CODE_ENABLE_TODO_TOOLS").as_deref() != Ok("1") {
        call(
            "TodoWrite",
            json!({"todos": [
                {"content": "Run the tests", "status": "completed", "activeForm": "Running the tests"},
                {"content": "Fix the bug", "status": "in_progress", "activeForm": "Fixing the bug"}]}),
            "Todos have been modified successfully.",
            json!({"oldTodos": [], "newTodos": []}),
        );
        return "the list is kept".into();
    }
    call(
        "ToolSearch",
        json!({"query": "select:TaskCreate,TaskUpdate", "max_results": 5}),
        "",
        json!({"matches": ["TaskCreate", "TaskUpdate"], "query": "select:TaskCreate,TaskUpdate", "total_deferred_tools": 16}),
    );
    for (n, subject) in [(1, "Run the tests"), (2, "Fix the bug")] {
        call(
            "TaskCreate",
            json!({"subject": subject, "description": subject, "activeForm": subject}),
            &format!("Task #{n} created successfully: {subject}"),
            json!({"task": {"id": n.to_string(), "subject": subject, "description": subject}}),
        );
    }
    for (from, to) in [("pending", "in_progress"), ("in_progress", "completed")] {
        call(
            "TaskUpdate",
            json!({"taskId": "1", "status": to}),
            "Updated task #1 status",
            json!({"success": true, "taskId": "1", "updatedFields": ["status"],
                "statusChange": {"from": from, "to": to}}),
        );
    }
    "the list is kept".into()
}
