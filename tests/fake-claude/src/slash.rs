//! Built-in slash commands: run locally with no model call, like the real CLI.

use std::time::Instant;

use serde_json::{json, Value};

use crate::files::{mangle, new_uuid, projects_dir};
use crate::output::Out;
use crate::session::{Session, TurnEnd};

/// Built-in commands the real CLI runs locally when a prompt starts with `/<name>`, with no API
/// call, whatever `--disable-slash-commands` says (BEHAVIOUR.md, `i_slash__*`,
/// `i_disable_slash__*`, `i_stdin_stream_slash`). Other names reach the model as text.
pub(crate) const BUILTIN_COMMANDS: [&str; 16] = [
    "clear", "compact", "config", "context", "cost", "doctor", "help", "init", "mcp", "model",
    "rename", "review", "status", "usage", "agents", "memory",
];

impl Session {
    /// A built-in command, run locally. `None` when `prompt` is not one.
    pub(crate) fn local_command(
        &mut self,
        out: &mut Out,
        prompt: &str,
        started: Instant,
    ) -> Option<TurnEnd> {
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
        // `/compact` in a live session, as `o_context_compact_live` shows it.
        if name == "compact" && !self.disable_slash_commands {
            let status = |status: Value, extra: Value| {
                let mut v = json!({"type": "system", "subtype": "status", "status": status,
                    "session_id": self.id, "uuid": new_uuid()});
                if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
                    o.extend(e.clone());
                }
                v
            };
            out.line(&status(json!("compacting"), json!({})));
            out.line(&status(Value::Null, json!({"compact_result": "success"})));
            self.init(out, &self.id.clone());
            out.line(&json!({"type": "system", "subtype": "compact_boundary",
                "session_id": self.id, "uuid": new_uuid(),
                "compact_metadata": {"trigger": "manual", "pre_tokens": 12_527, "post_tokens": 2_587,
                    "cumulative_dropped_tokens": 0, "duration_ms": 73}}));
            self.result(
                out,
                "success",
                false,
                Some(""),
                None,
                0.0,
                0,
                "completed",
                None,
                started,
            );
            return Some(TurnEnd::Done {
                code: 0,
                is_error: false,
            });
        }
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
