//! Parsing the `claude` CLI's `--output-format stream-json` lines.
//!
//! One JSON object per line (see `../shared/claude-cli/BEHAVIOUR.md`): `system/init`,
//! `system/api_retry`, `assistant` (one line per content block), `user` (tool results), and last
//! `result`. Key order is not stable and many keys are optional, so this reads fields by name
//! and tolerates anything missing; success is decided from `is_error`, never from `subtype`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use crate::text::truncate_chars;

/// One parsed stream-json line.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// `system/init`: the session has started.
    Init {
        /// The session id (also present when resuming: the same id).
        session_id: Option<String>,
        /// The model in use.
        model: Option<String>,
        /// `claude_code_version`, e.g. `2.1.330`.
        version: Option<String>,
    },
    /// `system/api_retry`: the CLI is retrying an API call.
    Retry {
        /// Attempt number.
        attempt: u64,
        /// Attempts allowed.
        max_retries: Option<u64>,
        /// HTTP status that caused the retry.
        error_status: Option<u64>,
    },
    /// An `assistant` line holding a `tool_use` block.
    ToolUse(ToolUse),
    /// An `assistant` line holding a `text` block.
    Text(String),
    /// The final `result` line.
    Result(ResultLine),
    /// A `control_request` from the CLI (`can_use_tool`): its id and its `request` object.
    ControlRequest {
        /// The id to answer with.
        request_id: String,
        /// The request (`subtype`, `tool_name`, `input`, `permission_suggestions`, …).
        request: Value,
    },
    /// The CLI withdrew a control request (an interrupt came while it was pending).
    ControlCancel {
        /// The withdrawn request's id.
        request_id: String,
    },
    /// The CLI's answer to a control request the wrapper sent (`interrupt`, `end_session`, …).
    ControlResponse {
        /// The id the wrapper sent.
        request_id: String,
        /// Whether it succeeded.
        success: bool,
        /// What it answered (`response`), or why not (`error`).
        payload: Value,
    },
    /// The answer to `list_models`: the models' `value`s (`p_22`).
    Models(Vec<String>),
    /// `rate_limit_event` (subscription logins; `u_oauth_limit_stream`), or the
    /// `api_error_params.rate_limit_info` of an API-error `assistant` line (a warm process
    /// prints the event only once: `u_oauth_limit_live`): where the account stands against its
    /// usage limits. Parsed defensively.
    RateLimit(RateLimitInfo),
    /// The API refused an image (or other media) in the conversation and the CLI removed it and
    /// went on without it (`api_error: media_removed`: `i_image_unprocessable_live`).
    MediaRemoved {
        /// `api_error_params.media`, e.g. `image`.
        media: String,
    },
    /// Anything else (tool results, partial messages, hooks).
    Other,
}

/// What a `rate_limit_event` says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RateLimitInfo {
    /// `allowed`, `allowed_warning` or `rejected`.
    pub status: String,
    /// When the limit resets, in unix seconds.
    pub resets_at: Option<u64>,
    /// `five_hour`, `seven_day`, …
    pub limit_type: Option<String>,
}

impl RateLimitInfo {
    /// Whether the account may not make calls now.
    pub fn is_rejected(&self) -> bool {
        self.status == "rejected"
    }

    fn parse(info: &Value) -> Self {
        // Seconds as a number or a string; a value that big must be milliseconds.
        let resets_at = match &info["resetsAt"] {
            Value::Number(n) => n.as_u64().or_else(|| n.as_f64().map(|f| f.max(0.0) as u64)),
            Value::String(s) => s.trim().parse::<f64>().ok().map(|f| f.max(0.0) as u64),
            _ => None,
        }
        .map(|t| if t > 100_000_000_000 { t / 1000 } else { t });
        Self {
            status: info["status"].as_str().unwrap_or_default().to_string(),
            resets_at,
            limit_type: info["rateLimitType"].as_str().map(str::to_string),
        }
    }
}

/// A tool the model asked to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolUse {
    /// Tool name, e.g. `Bash`.
    pub name: String,
    /// The interesting part of its input, e.g. the command or file path; may be empty.
    pub detail: String,
}

impl ToolUse {
    /// A one-line description for a progress display, e.g. `Bash: cargo test`.
    pub fn summary(&self) -> String {
        if self.detail.is_empty() {
            self.name.clone()
        } else {
            format!("{}: {}", self.name, self.detail)
        }
    }
}

/// The `result` line (or the single object of `--output-format json`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResultLine {
    /// `subtype`: `success`, `error_max_turns`, `error_during_execution`, …
    pub subtype: String,
    /// The only reliable success flag.
    pub is_error: bool,
    /// The final assistant text; absent for `error_*` subtypes.
    pub result: Option<String>,
    /// Error descriptions, present when `result` is absent.
    pub errors: Vec<String>,
    /// The session id.
    pub session_id: Option<String>,
    /// `total_cost_usd` (cumulative over the session in 2.1.330, this call in 2.1.197).
    pub total_cost_usd: Option<f64>,
    /// Turns taken.
    pub num_turns: u64,
    /// `api_error_status`, when an API error ended the run.
    pub api_error_status: Option<u64>,
    /// `api_error`, e.g. `usage_limit_reached`.
    pub api_error: Option<String>,
    /// Tools the permission mode refused, by name.
    pub permission_denials: Vec<String>,
}

impl ResultLine {
    /// The text to show: `result`, or the joined `errors` when there is no result.
    pub fn text(&self) -> String {
        match &self.result {
            Some(r) => r.clone(),
            None => self.errors.join("\n"),
        }
    }
}

/// The fields of a line that this module reads; everything else is skipped unparsed (the init
/// line alone carries dozens of keys), which keeps per-line cost low.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow)]
    subtype: Option<Cow<'a, str>>,
    #[serde(borrow)]
    session_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow)]
    claude_code_version: Option<Cow<'a, str>>,
    attempt: Option<u64>,
    max_retries: Option<u64>,
    error_status: Option<u64>,
    message: Option<Message>,
    is_error: Option<bool>,
    result: Option<String>,
    errors: Option<Vec<Value>>,
    total_cost_usd: Option<f64>,
    num_turns: Option<u64>,
    api_error_status: Option<u64>,
    permission_denials: Option<Vec<Denial>>,
    #[serde(borrow)]
    request_id: Option<Cow<'a, str>>,
    request: Option<Value>,
    response: Option<Value>,
    rate_limit_info: Option<Value>,
    api_error_params: Option<Value>,
    #[serde(borrow)]
    api_error: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Message {
    #[serde(default)]
    content: Vec<Block>,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    text: Option<String>,
    input: Option<Value>,
}

#[derive(Deserialize)]
struct Denial {
    tool_name: Option<String>,
}

fn owned(s: Option<Cow<'_, str>>) -> Option<String> {
    s.map(Cow::into_owned)
}

/// Parses one line of CLI output (or the single object of `--output-format json`). Lines that
/// are not JSON objects, or not UTF-8, are an error (the caller logs and skips them); unknown
/// object shapes are [`StreamEvent::Other`].
pub fn parse_line(line: impl AsRef<[u8]>) -> Result<StreamEvent, serde_json::Error> {
    let l: Line<'_> = serde_json::from_slice(line.as_ref())?;
    Ok(match (l.kind.as_deref(), l.subtype.as_deref()) {
        (Some("system"), Some("init")) => StreamEvent::Init {
            session_id: owned(l.session_id),
            model: owned(l.model),
            version: owned(l.claude_code_version),
        },
        (Some("system"), Some("api_retry")) => StreamEvent::Retry {
            attempt: l.attempt.unwrap_or(0),
            max_retries: l.max_retries,
            error_status: l.error_status,
        },
        (Some("assistant"), _) => {
            let params = l.api_error_params.as_ref();
            match params.map(|p| &p["rate_limit_info"]) {
                Some(info) if info.is_object() => {
                    StreamEvent::RateLimit(RateLimitInfo::parse(info))
                }
                _ if l.api_error.as_deref() == Some("media_removed") => StreamEvent::MediaRemoved {
                    media: params
                        .and_then(|p| p["media"].as_str())
                        .unwrap_or("image")
                        .to_string(),
                },
                _ => assistant_event(l.message),
            }
        }
        (Some("control_request"), _) => StreamEvent::ControlRequest {
            request_id: owned(l.request_id).unwrap_or_default(),
            request: l.request.unwrap_or(Value::Null),
        },
        (Some("control_cancel_request"), _) => StreamEvent::ControlCancel {
            request_id: owned(l.request_id).unwrap_or_default(),
        },
        (Some("control_response"), _) => {
            let r = l.response.unwrap_or(Value::Null);
            if let Some(models) = r["response"]["models"].as_array() {
                return Ok(StreamEvent::Models(
                    models
                        .iter()
                        .filter_map(|m| m["value"].as_str().map(str::to_string))
                        .collect(),
                ));
            }
            StreamEvent::ControlResponse {
                request_id: r["request_id"].as_str().unwrap_or_default().to_string(),
                success: r["subtype"] == "success",
                payload: if r["subtype"] == "success" {
                    r["response"].clone()
                } else {
                    r["error"].clone()
                },
            }
        }
        (Some("rate_limit_event"), _) => StreamEvent::RateLimit(RateLimitInfo::parse(
            l.rate_limit_info.as_ref().unwrap_or(&Value::Null),
        )),
        (Some("result"), _) => StreamEvent::Result(ResultLine {
            subtype: owned(l.subtype).unwrap_or_default(),
            // A result without `is_error` is not trusted as success.
            is_error: l.is_error.unwrap_or(true),
            result: l.result,
            errors: l
                .errors
                .unwrap_or_default()
                .into_iter()
                .map(|e| match e {
                    Value::String(s) => s,
                    other => other.to_string(),
                })
                .collect(),
            session_id: owned(l.session_id),
            total_cost_usd: l.total_cost_usd,
            num_turns: l.num_turns.unwrap_or(0),
            api_error_status: l.api_error_status,
            api_error: owned(l.api_error),
            permission_denials: l
                .permission_denials
                .unwrap_or_default()
                .into_iter()
                .filter_map(|d| d.tool_name)
                .collect(),
        }),
        _ => StreamEvent::Other,
    })
}

/// The CLI prints one `assistant` line per content block, so the first block decides.
fn assistant_event(message: Option<Message>) -> StreamEvent {
    let Some(block) = message.and_then(|m| m.content.into_iter().next()) else {
        return StreamEvent::Other;
    };
    match block.kind.as_str() {
        "tool_use" => {
            let name = block.name.unwrap_or_else(|| "tool".into());
            let detail = tool_detail(&name, block.input.as_ref().unwrap_or(&Value::Null));
            StreamEvent::ToolUse(ToolUse { name, detail })
        }
        "text" => StreamEvent::Text(block.text.unwrap_or_default()),
        _ => StreamEvent::Other,
    }
}

/// Picks the input field that says what a tool is doing, first line only, at most 80 chars.
fn tool_detail(name: &str, input: &Value) -> String {
    let keys: &[&str] = match name {
        "Bash" => &["command"],
        "Read" | "Write" | "Edit" | "MultiEdit" | "NotebookEdit" => &["file_path", "notebook_path"],
        "Grep" | "Glob" => &["pattern"],
        "WebFetch" => &["url"],
        "WebSearch" => &["query"],
        "Task" | "Agent" => &["description"],
        _ => &[
            "description",
            "command",
            "file_path",
            "path",
            "pattern",
            "url",
        ],
    };
    let raw = keys
        .iter()
        .find_map(|k| input.get(*k).and_then(Value::as_str))
        .unwrap_or_default();
    let line = raw.lines().next().unwrap_or_default().trim();
    truncate_chars(line, 80)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tool_use_block_becomes_a_summary() {
        let line = r#"{"type":"assistant","message":{"id":"m","content":[{"type":"tool_use","id":"t","name":"Edit","input":{"file_path":"src/lib.rs","old_string":"a"}}]}}"#;
        let StreamEvent::ToolUse(t) = parse_line(line).expect("valid json") else {
            panic!("not a tool use");
        };
        assert_eq!(t.summary(), "Edit: src/lib.rs");
    }

    #[test]
    fn a_result_without_is_error_is_not_success() {
        let StreamEvent::Result(r) = parse_line(r#"{"type":"result","result":"x"}"#).expect("json")
        else {
            panic!("not a result");
        };
        assert!(r.is_error);
    }

    #[test]
    fn escaped_strings_and_odd_errors_are_read() {
        let line =
            r#"{"type":"result","is_error":true,"session_id":"a\"b","errors":["x",{"code":1}]}"#;
        let StreamEvent::Result(r) = parse_line(line).expect("json") else {
            panic!("not a result");
        };
        assert_eq!(r.session_id.as_deref(), Some("a\"b"));
        assert_eq!(r.errors, ["x", "{\"code\":1}"]);
    }

    #[test]
    fn a_rate_limit_event_is_read_whatever_the_shape_of_its_reset_time() {
        let read = |reset: &str| {
            let line = format!(
                r#"{{"type":"rate_limit_event","rate_limit_info":{{"status":"rejected","resetsAt":{reset},"rateLimitType":"five_hour"}},"session_id":"s"}}"#
            );
            match parse_line(line).expect("json") {
                StreamEvent::RateLimit(r) => r,
                other => panic!("not a rate limit: {other:?}"),
            }
        };
        for reset in [
            "1764650000",
            "1764650000.5",
            "\"1764650000\"",
            "1764650000000",
        ] {
            let r = read(reset);
            assert!(r.is_rejected());
            assert_eq!(r.resets_at, Some(1_764_650_000), "{reset}");
            assert_eq!(r.limit_type.as_deref(), Some("five_hour"));
        }
        assert_eq!(read("null").resets_at, None);
        assert_eq!(read("\"soon\"").resets_at, None);
        let StreamEvent::RateLimit(r) = parse_line(r#"{"type":"rate_limit_event"}"#).expect("json")
        else {
            panic!("not a rate limit");
        };
        assert!(!r.is_rejected());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_line("this is not json").is_err());
        assert!(parse_line("[1,2]").is_err(), "not an object");
        assert_eq!(
            parse_line(r#"{"type":"stream_event"}"#).expect("json"),
            StreamEvent::Other
        );
    }
}
