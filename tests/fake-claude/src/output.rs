//! The output shapes: `json`, `stream-json` and `text`, the `system/init`, assistant and
//! `result` lines, as the samples in `../shared/claude-cli/samples` show them.

use crate::files::new_uuid;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;

/// Where the answer goes: one of the real CLI's output formats.
pub(crate) struct Out {
    pub(crate) format: String,
    pub(crate) stdout: std::io::Stdout,
}

impl Out {
    pub(crate) fn line(&mut self, v: &Value) {
        if self.format == "stream-json" {
            let mut lock = self.stdout.lock();
            let _ = writeln!(lock, "{v}");
            let _ = lock.flush();
        }
    }

    pub(crate) fn result(&mut self, v: &Value) {
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

pub(crate) fn usage_block(input_tokens: u64, output_tokens: u64) -> Value {
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
pub(crate) struct ResultParts<'a> {
    pub(crate) session_id: &'a str,
    pub(crate) model: &'a str,
    pub(crate) subtype: &'a str,
    pub(crate) is_error: bool,
    pub(crate) result: Option<&'a str>,
    pub(crate) errors: Option<Vec<String>>,
    pub(crate) total_cost: f64,
    pub(crate) num_turns: u32,
    pub(crate) terminal_reason: &'a str,
    pub(crate) api_error_status: Option<u16>,
    pub(crate) duration_ms: u128,
}

pub(crate) fn result_value(p: &ResultParts) -> Value {
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

pub(crate) fn init_value(
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

pub(crate) fn assistant_value(session_id: &str, model: &str, msg_id: &str, block: &Value) -> Value {
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

pub(crate) fn huge_reply(bytes: usize) -> String {
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

/// One `stream_event` line (with `--include-partial-messages`), as `o_live_partial` shows.
fn stream_event(session_id: &str, msg_id: &str, event: &Value) -> Value {
    json!({"type": "stream_event", "event": event, "session_id": session_id,
        "parent_tool_use_id": null, "uuid": new_uuid(), "api_message_id": msg_id})
}

/// The answer's text block: with `partial`, first as `pieces` text deltas `gap` apart (each
/// logged as a `delta` record, numbered from 1), the `assistant` line in between as the real
/// CLI prints it, then the message's closing events; else the `assistant` line alone.
#[allow(clippy::too_many_arguments)]
pub(crate) fn text_block(
    out: &mut Out,
    session_id: &str,
    model: &str,
    msg_id: &str,
    text: &str,
    partial: bool,
    pieces: &[String],
    gap: std::time::Duration,
) {
    let assistant = assistant_value(
        session_id,
        model,
        msg_id,
        &json!({"type": "text", "text": text}),
    );
    if !partial {
        out.line(&assistant);
        return;
    }
    out.line(&stream_event(session_id, msg_id, &json!({"type": "message_start", "message": {
        "id": msg_id, "type": "message", "role": "assistant", "model": model, "content": [],
        "stop_reason": null, "stop_sequence": null,
        "usage": {"input_tokens": 12526, "output_tokens": 1, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}})));
    out.line(&stream_event(
        session_id,
        msg_id,
        &json!({"type": "content_block_start", "index": 0,
        "content_block": {"type": "text", "text": ""}}),
    ));
    for (n, piece) in pieces.iter().enumerate() {
        if n > 0 && !gap.is_zero() {
            std::thread::sleep(gap);
        }
        crate::log::log_event("delta", &json!({"n": n + 1, "text": piece}));
        out.line(&stream_event(
            session_id,
            msg_id,
            &json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    out.line(&assistant);
    out.line(&stream_event(
        session_id,
        msg_id,
        &json!({"type": "content_block_stop", "index": 0}),
    ));
    out.line(&stream_event(session_id, msg_id, &json!({"type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 50}})));
    out.line(&stream_event(
        session_id,
        msg_id,
        &json!({"type": "message_stop"}),
    ));
}
