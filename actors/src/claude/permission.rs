//! The control protocol of a live session (`--permission-prompt-tool stdio`, as
//! `../shared/claude-cli/PERMISSIONS.md` shows it): what Claude asks (`can_use_tool`), how an
//! answer is written, and the wrapper's own requests (`interrupt`, `end_session`).
//!
//! Everything here reads text Claude produced, so a summary is bounded whatever it holds.

use serde_json::{json, Value};

use crate::text::truncate_chars;

/// A `can_use_tool` request: Claude wants to use a tool that no rule allows.
#[derive(Debug, Clone, PartialEq)]
pub struct PermissionRequest {
    /// The id to answer with.
    pub request_id: String,
    /// `Bash`, `Edit`, `AskUserQuestion`, …
    pub tool_name: String,
    /// The tool's input, as Claude gave it.
    pub input: Value,
    /// The `addRules` suggestions, the only ones "always" may pass back (never `setMode` or
    /// `addDirectories`, which are far broader than the call asked about).
    pub rule_suggestions: Vec<Value>,
}

/// What a person decided.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Run it (with this input in place of Claude's, if given).
    Allow {
        /// Replaces the input (AskUserQuestion answers go here).
        updated_input: Option<Value>,
        /// Session rules to add ("always"), from the request's suggestions.
        rules: Vec<Value>,
    },
    /// Do not run it; Claude is told `message` and the turn goes on.
    Deny {
        /// What Claude is told.
        message: String,
    },
}

impl PermissionRequest {
    /// Reads a control request; `None` for anything but `can_use_tool`.
    pub fn parse(request_id: &str, request: &Value) -> Option<Self> {
        if request["subtype"] != "can_use_tool" {
            return None;
        }
        let rule_suggestions = request["permission_suggestions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["type"] == "addRules" && s["behavior"] == "allow")
            .flat_map(|s| s["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        Some(Self {
            request_id: request_id.to_string(),
            tool_name: request["tool_name"].as_str().unwrap_or("tool").to_string(),
            input: request["input"].clone(),
            rule_suggestions,
        })
    }

    /// A readable summary of what is asked: the command; the file and a short diff for edits;
    /// the URL for fetches; the questions for AskUserQuestion. At most ~600 characters.
    pub fn summary(&self) -> String {
        let field = |k: &str| self.input[k].as_str().unwrap_or_default();
        let text = match self.tool_name.as_str() {
            "Bash" => field("command").to_string(),
            "Edit" | "MultiEdit" => format!(
                "{}\n- {}\n+ {}",
                field("file_path"),
                truncate_chars(field("old_string"), 200),
                truncate_chars(field("new_string"), 200)
            ),
            "Write" => format!(
                "{} ({} characters)\n{}",
                field("file_path"),
                field("content").chars().count(),
                truncate_chars(field("content"), 300)
            ),
            "WebFetch" => field("url").to_string(),
            "AskUserQuestion" => self
                .questions()
                .iter()
                .map(|q| q.question.clone())
                .collect::<Vec<_>>()
                .join("\n"),
            _ => self.input.to_string(),
        };
        truncate_chars(&text, 600)
    }

    /// The questions of an `AskUserQuestion` request (empty for other tools).
    pub fn questions(&self) -> Vec<Question> {
        self.input["questions"]
            .as_array()
            .into_iter()
            .flatten()
            .take(5)
            .map(|q| Question {
                question: truncate_chars(q["question"].as_str().unwrap_or_default(), 300),
                options: q["options"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .take(25)
                    .filter_map(|o| o["label"].as_str())
                    .map(|l| truncate_chars(l, 80))
                    .collect(),
                multi_select: q["multiSelect"] == true,
            })
            .collect()
    }

    /// The rules "always" would add: the `addRules` suggestions, each as the CLI spells a rule
    /// (`Bash(touch x)`, or `Bash` for the whole tool).
    pub fn always_rules(&self) -> Vec<String> {
        self.rule_suggestions.iter().filter_map(rule_text).collect()
    }

    /// The answers to this request's questions, as `updatedInput`: the original input plus
    /// `answers` (`question` → chosen labels, comma-separated).
    pub fn answered(&self, answers: &[(String, String)]) -> Value {
        let mut input = self.input.clone();
        let map: serde_json::Map<String, Value> = answers
            .iter()
            .map(|(q, a)| (q.clone(), Value::String(a.clone())))
            .collect();
        input["answers"] = Value::Object(map);
        input
    }
}

/// One question of an `AskUserQuestion` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Its text.
    pub question: String,
    /// The option labels.
    pub options: Vec<String>,
    /// Whether several may be chosen.
    pub multi_select: bool,
}

/// `Bash(cmd)`, or `Bash` when a rule has no content.
fn rule_text(rule: &Value) -> Option<String> {
    let tool = rule["toolName"].as_str()?;
    Some(match rule["ruleContent"].as_str() {
        Some(c) => format!("{tool}({c})"),
        None => tool.to_string(),
    })
}

/// The `control_response` line answering `request_id` with `decision`.
pub fn response_line(request_id: &str, decision: &Decision) -> String {
    let response = match decision {
        Decision::Allow {
            updated_input,
            rules,
        } => {
            let mut r = json!({"behavior": "allow"});
            if let Some(input) = updated_input {
                r["updatedInput"] = input.clone();
            }
            if !rules.is_empty() {
                // Session rules only: the coordinator keeps them itself and passes them again
                // on every respawn, since session rules die with the process.
                r["updatedPermissions"] = json!([{"type": "addRules", "rules": rules,
                    "behavior": "allow", "destination": "session"}]);
            }
            r
        }
        Decision::Deny { message } => json!({"behavior": "deny", "message": message}),
    };
    json!({"type": "control_response",
           "response": {"subtype": "success", "request_id": request_id, "response": response}})
    .to_string()
}

/// A control request the wrapper sends (`interrupt`, `end_session`).
pub fn control_line(request_id: &str, subtype: &str) -> String {
    json!({"type": "control_request", "request_id": request_id, "request": {"subtype": subtype}})
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Value {
        json!({"subtype": "can_use_tool", "tool_name": "Bash",
            "input": {"command": "touch x", "description": "d"},
            "permission_suggestions": [
                {"type": "addRules", "rules": [{"toolName": "Bash", "ruleContent": "touch x"}],
                 "behavior": "allow", "destination": "localSettings"},
                {"type": "addDirectories", "directories": ["/srv"], "destination": "session"},
                {"type": "setMode", "mode": "acceptEdits", "destination": "session"}]})
    }

    #[test]
    fn always_passes_back_only_the_add_rules_suggestion_as_a_session_rule() {
        let r = PermissionRequest::parse("R", &request()).expect("can_use_tool");
        assert_eq!(r.summary(), "touch x");
        assert_eq!(r.always_rules(), ["Bash(touch x)"]);
        let line: Value = serde_json::from_str(&response_line(
            "R",
            &Decision::Allow {
                updated_input: None,
                rules: r.rule_suggestions.clone(),
            },
        ))
        .expect("json");
        let update = &line["response"]["response"]["updatedPermissions"];
        assert_eq!(update.as_array().map(Vec::len), Some(1));
        assert_eq!(update[0]["destination"], "session");
        assert_eq!(update[0]["rules"][0]["ruleContent"], "touch x");
        assert_eq!(line["response"]["request_id"], "R");
    }

    #[test]
    fn summaries_are_bounded_whatever_claude_wrote() {
        let mut req = request();
        req["input"]["command"] = json!("x".repeat(10_000));
        let r = PermissionRequest::parse("R", &req).expect("can_use_tool");
        assert!(r.summary().chars().count() <= 601);
        assert!(PermissionRequest::parse("R", &json!({"subtype": "initialize"})).is_none());
    }
}
