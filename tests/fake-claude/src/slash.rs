//! Built-in slash commands: run locally with no model call, like the real CLI.

use std::time::Instant;

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
