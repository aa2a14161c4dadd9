//! Parsing the `claude` CLI's `--output-format stream-json` lines.
//!
//! One JSON object per line (see `../shared/claude-cli/BEHAVIOUR.md`): `system/init`,
//! `system/api_retry`, `assistant` (one line per content block), `user` (tool results),
//! `stream_event` (with `--include-partial-messages`: the text as it is written,
//! `b_stream_json_partial`, `o_live_partial`), `system/compact_boundary` (after `/compact`:
//! `o_context_compact_live`), and last `result`. Key order is not stable and many keys are optional, so this reads fields by name
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
    Text {
        /// The block's text (the whole of it: deltas came before, as [`StreamEvent::TextDelta`]).
        text: String,
        /// How much of the context window the API call behind it used.
        context_tokens: Option<u64>,
    },
    /// A piece of text as the model writes it (`stream_event` / `content_block_delta` /
    /// `text_delta`, with `--include-partial-messages`).
    TextDelta(String),
    /// A `user` line carrying a tool's result (`tool_use_result`), for the tool use `tool_use_id`.
    ToolResult {
        /// The [`ToolUse::id`] it answers.
        tool_use_id: String,
        /// `tool_use_result`: the tool's structured result (its shape is the tool's own).
        result: Value,
    },
    /// `system/compact_boundary`: the conversation was compacted (`/compact`, or automatically).
    Compacted {
        /// Tokens in the context before.
        pre_tokens: Option<u64>,
        /// Tokens in the context after.
        post_tokens: Option<u64>,
    },
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
#[derive(Debug, Clone, PartialEq)]
pub struct ToolUse {
    /// The block's id (`toolu_…`), which its result names.
    pub id: String,
    /// Tool name, e.g. `Bash`.
    pub name: String,
    /// The interesting part of its input, e.g. the command or file path; may be empty.
    pub detail: String,
    /// The whole input (the to-do tools are read from it).
    pub input: Value,
    /// How much of the context window the API call behind it used.
    pub context_tokens: Option<u64>,
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
    /// The model's context window (`modelUsage.<model>.contextWindow`; the largest if several).
    pub context_window: Option<u64>,
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
    event: Option<PartialEvent>,
    tool_use_result: Option<Value>,
    compact_metadata: Option<CompactMetadata>,
    #[serde(rename = "modelUsage")]
    model_usage: Option<std::collections::HashMap<String, ModelUsage>>,
}

#[derive(Deserialize)]
struct Message {
    /// A `user` line's content may be a plain string.
    #[serde(default, deserialize_with = "blocks")]
    content: Vec<Block>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
    name: Option<String>,
    text: Option<String>,
    input: Option<Value>,
    tool_use_id: Option<String>,
}

/// An API call's usage, as an `assistant` line's `message.usage` carries it.
#[derive(Deserialize)]
#[allow(clippy::struct_field_names)] // the CLI's own names
struct Usage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    cache_creation_input_tokens: u64,
    #[serde(default)]
    cache_read_input_tokens: u64,
}

impl Usage {
    /// The context the call filled: what it read and what it wrote.
    fn context(&self) -> u64 {
        self.input_tokens
            + self.cache_creation_input_tokens
            + self.cache_read_input_tokens
            + self.output_tokens
    }
}

/// A `stream_event`'s `event`: only a text delta is read.
#[derive(Deserialize)]
struct PartialEvent {
    #[serde(rename = "type")]
    kind: Option<String>,
    delta: Option<Delta>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
}

#[derive(Deserialize)]
struct CompactMetadata {
    pre_tokens: Option<u64>,
    post_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct ModelUsage {
    #[serde(rename = "contextWindow")]
    context_window: Option<u64>,
}

/// `content` as blocks; a string (a `user` line's own text) has none this module reads.
fn blocks<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Block>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Content {
        Blocks(Vec<Block>),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Content::deserialize(d)? {
        Content::Blocks(b) => b,
        Content::Other(_) => Vec::new(),
    })
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
        (Some("system"), Some("compact_boundary")) => {
            let m = l.compact_metadata;
            StreamEvent::Compacted {
                pre_tokens: m.as_ref().and_then(|m| m.pre_tokens),
                post_tokens: m.as_ref().and_then(|m| m.post_tokens),
            }
        }
        (Some("stream_event"), _) => match l.event {
            Some(PartialEvent {
                kind: Some(k),
                delta:
                    Some(Delta {
                        kind: Some(d),
                        text: Some(text),
                    }),
            }) if k == "content_block_delta" && d == "text_delta" => StreamEvent::TextDelta(text),
            _ => StreamEvent::Other,
        },
        (Some("user"), _) => match (l.tool_use_result, l.message) {
            (Some(result), Some(m)) => m.content.into_iter().find_map(|b| b.tool_use_id).map_or(
                StreamEvent::Other,
                |tool_use_id| StreamEvent::ToolResult {
                    tool_use_id,
                    result,
                },
            ),
            _ => StreamEvent::Other,
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
            control_response(l.response.as_ref().unwrap_or(&Value::Null))
        }
        (Some("rate_limit_event"), _) => StreamEvent::RateLimit(RateLimitInfo::parse(
            l.rate_limit_info.as_ref().unwrap_or(&Value::Null),
        )),
        (Some("result"), _) => StreamEvent::Result(ResultLine::from_line(l)),
        _ => StreamEvent::Other,
    })
}

impl ResultLine {
    /// The last line of a run.
    fn from_line(l: Line<'_>) -> Self {
        Self {
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
            context_window: l
                .model_usage
                .iter()
                .flat_map(|m| m.values())
                .filter_map(|u| u.context_window)
                .max(),
        }
    }
}
/// The CLI's answer to one of our control requests; the model list rides in one.
fn control_response(r: &Value) -> StreamEvent {
    if let Some(models) = r["response"]["models"].as_array() {
        return StreamEvent::Models(
            models
                .iter()
                .filter_map(|m| m["value"].as_str().map(str::to_string))
                .collect(),
        );
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

/// The CLI prints one `assistant` line per content block, so the first block decides.
fn assistant_event(message: Option<Message>) -> StreamEvent {
    let Some(message) = message else {
        return StreamEvent::Other;
    };
    let context_tokens = message.usage.as_ref().map(Usage::context);
    let Some(block) = message.content.into_iter().next() else {
        return StreamEvent::Other;
    };
    match block.kind.as_str() {
        "tool_use" => {
            let name = block.name.unwrap_or_else(|| "tool".into());
            let input = block.input.unwrap_or(Value::Null);
            let detail = tool_detail(&name, &input);
            StreamEvent::ToolUse(ToolUse {
                id: block.id.unwrap_or_default(),
                name,
                detail,
                input,
                context_tokens,
            })
        }
        "text" => StreamEvent::Text {
            text: block.text.unwrap_or_default(),
            context_tokens,
        },
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
mod tests;
