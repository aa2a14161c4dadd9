//! What the CLI is given: its command line for a run, and the user's text, escaped so that it
//! reaches Claude as text (never as an option, never as a built-in command).

use std::borrow::Cow;
use std::ffi::OsString;

use super::{ClaudeConfig, CliCommand, RunRequest};

/// What the CLI is given for a user's message: the text itself, or, for `/name …` whose name
/// is not in `passthrough`, the text after one space (so the CLI does not run it as a command).
pub fn cli_prompt<'a>(prompt: &'a str, passthrough: &[String]) -> Cow<'a, str> {
    let blocked = prompt.strip_prefix('/').is_some_and(|rest| {
        let name = rest.split_whitespace().next().unwrap_or_default();
        !passthrough.iter().any(|p| p == name)
    });
    if blocked {
        Cow::Owned(format!(" {prompt}"))
    } else {
        Cow::Borrowed(prompt)
    }
}

/// The stream-json user line (`--input-format stream-json`) that sends `prompt` as one turn,
/// escaped like a prompt argument ([`cli_prompt`]).
pub fn user_line(prompt: &str, passthrough: &[String]) -> String {
    let line = serde_json::json!({
        "type": "user",
        "message": {"role": "user", "content": cli_prompt(prompt, passthrough)},
        "parent_tool_use_id": null,
        "session_id": "",
    });
    line.to_string()
}

/// The stream-json user line that runs `command`: its text as is, which the CLI takes as the
/// command (`i_stdin_stream_slash`).
pub fn command_line(command: CliCommand) -> String {
    serde_json::json!({
        "type": "user",
        "message": {"role": "user", "content": command.as_str()},
        "parent_tool_use_id": null,
        "session_id": "",
    })
    .to_string()
}

/// [`user_line`] with `images` as image blocks before the text (the last block: the one the
/// CLI reads for commands, so the escape still holds).
pub fn user_line_with_images(
    prompt: &str,
    passthrough: &[String],
    images: &[crate::files::Image],
) -> String {
    use base64::Engine as _;
    if images.is_empty() {
        return user_line(prompt, passthrough);
    }
    let mut content: Vec<serde_json::Value> = images
        .iter()
        .map(|i| {
            serde_json::json!({"type": "image", "source": {"type": "base64", "media_type": i.media_type,
                "data": base64::engine::general_purpose::STANDARD.encode(&i.bytes)}})
        })
        .collect();
    content.push(serde_json::json!({"type": "text", "text": cli_prompt(prompt, passthrough)}));
    serde_json::json!({
        "type": "user",
        "message": {"role": "user", "content": content},
        "parent_tool_use_id": null,
        "session_id": "",
    })
    .to_string()
}

/// The command-line arguments for a one-shot run of `req` (everything after the binary name).
pub fn args(config: &ClaudeConfig, req: &RunRequest) -> Vec<OsString> {
    let mut args = words(&["-p", "--output-format", "stream-json", "--verbose"]);
    flags(config, req, &mut args);
    args.push("--".into());
    match req.command {
        Some(command) => args.push(command.as_str().into()),
        None => args.push(
            cli_prompt(&req.prompt, &config.passthrough_commands)
                .as_ref()
                .into(),
        ),
    }
    args
}

/// The CLI's scheduling tools, which the service turns off.
pub const SCHEDULING_TOOLS: [&str; 4] = ["CronCreate", "CronDelete", "CronList", "ScheduleWakeup"];

/// What Claude is told about them.
pub const SCHEDULING_OFF: &str = "Your scheduling tools (CronCreate, CronList, CronDelete, ScheduleWakeup) are turned off in this chat: anything they schedule would end with this process, which the service ends between messages. To run something later or regularly, ask the user to add a durable schedule with `/claude schedule add when:<cron expression> prompt:<text>` (approvers) — do not claim to have scheduled anything yourself.";

/// The command-line arguments for a live session of `req`: stdin carries the turns and the
/// answers to permission requests (`--permission-prompt-tool stdio`); no prompt in argv, so
/// no other local user sees it in `/proc/*/cmdline`.
pub fn live_args(config: &ClaudeConfig, req: &RunRequest) -> Vec<OsString> {
    let mut args = words(&[
        "-p",
        "--input-format",
        "stream-json",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-prompt-tool",
        "stdio",
    ]);
    if req.stream {
        args.push("--include-partial-messages".into());
    }
    flags(config, req, &mut args);
    args
}

fn words(w: &[&str]) -> Vec<OsString> {
    w.iter().map(OsString::from).collect()
}

/// The flags both kinds of run share.
fn flags(config: &ClaudeConfig, req: &RunRequest, args: &mut Vec<OsString>) {
    if req.fork && req.resume.is_some() {
        args.push("--fork-session".into());
    }
    let mut push = |flag: &str, value: &str| {
        args.push(flag.into());
        args.push(value.into());
    };
    if let Some(id) = &req.resume {
        push("--resume", id);
    }
    let model = req.model.as_deref().or(config.model.as_deref());
    if let Some(m) = model {
        push("--model", m);
    }
    if let Some(s) = &req.system_prompt {
        push("--system-prompt", s);
    }
    let mut told = Vec::new();
    if let Some(dir) = &req.outbox {
        told.push(format!(
            "Files you write to the directory named by $CLAUDE_COORDINATOR_OUTBOX ({}) are attached to your reply in the chat.",
            dir.display()
        ));
    }
    told.push(SCHEDULING_OFF.to_string());
    push("--append-system-prompt", &told.join("\n"));
    let mode = req.permission_mode.unwrap_or(config.permission_mode);
    push("--permission-mode", mode.as_str());
    // Under bypassPermissions `--allowedTools` restricts nothing: only `--tools` and
    // `--disallowedTools` do. One comma-joined value each, as both are variadic.
    if let Some(tools) = &req.tools {
        push("--tools", &tools.join(","));
    }
    // The CLI's own schedules live in its process, which the service ends when it likes, and
    // fire turns no message asked for (`observed-schedules.md`): never offered.
    let disallowed: Vec<&str> = req
        .disallowed_tools
        .iter()
        .map(String::as_str)
        .chain(SCHEDULING_TOOLS)
        .collect();
    push("--disallowedTools", &disallowed.join(","));
    // Stored "always" rules as flag settings (`p_36`): a rule may hold a comma, which the
    // variadic `--allowedTools` would split.
    if !req.allowed_tools.is_empty() {
        let settings = serde_json::json!({"permissions": {"allow": req.allowed_tools}});
        push("--settings", &settings.to_string());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::claude::{CostReporting, PermissionMode};

    /// Settings for a CLI called `claude`, with these passthrough commands.
    pub(crate) fn config_with(passthrough: &[&str]) -> ClaudeConfig {
        ClaudeConfig {
            binary: "claude".into(),
            timeout_secs: 60,
            kill_grace_secs: 1,
            permission_mode: PermissionMode::Default,
            model: None,
            max_concurrent_runs: 1,
            oauth_token: None,
            oauth_token_file: None,
            env: BTreeMap::new(),
            passthrough_commands: passthrough.iter().map(|s| (*s).to_string()).collect(),
            cost_reporting: CostReporting::Auto,
            live_sessions: true,
            keep_warm_secs: 600,
            max_warm_sessions: 4,
            approval_timeout_secs: 600,
            sandbox: crate::claude::sandbox::SandboxMode::None,
        }
    }

    fn args_of(config: &ClaudeConfig, prompt: &str) -> Vec<String> {
        args(
            config,
            &RunRequest {
                prompt: prompt.into(),
                ..RunRequest::default()
            },
        )
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect()
    }

    #[test]
    fn the_prompt_always_follows_a_double_dash() {
        let a = args_of(&config_with(&[]), "-v is a flag");
        assert_eq!(&a[a.len() - 2..], ["--", "-v is a flag"]);
    }

    #[test]
    fn slash_messages_are_text_unless_passed_through() {
        let r = config_with(&["cost"]);
        let last = |prompt: &str| args_of(&r, prompt).pop().unwrap_or_default();
        assert_eq!(last("/clear now"), " /clear now");
        assert_eq!(last("/cost"), "/cost");
        assert_eq!(last("hello /clear"), "hello /clear");
        assert!(!args_of(&r, "/clear").contains(&"--disable-slash-commands".to_string()));
        let line: serde_json::Value =
            serde_json::from_str(&user_line("/model x", &r.passthrough_commands)).expect("json");
        assert_eq!(line["message"]["content"], " /model x");
        assert_eq!(line["type"], "user");
    }

    #[test]
    fn the_clis_own_scheduling_tools_are_never_offered_and_claude_is_told_why() {
        let a = args_of(&config_with(&[]), "hi");
        let value = |flag: &str| {
            a.iter()
                .position(|x| x == flag)
                .and_then(|i| a.get(i + 1))
                .cloned()
                .unwrap_or_default()
        };
        let off = value("--disallowedTools");
        for tool in SCHEDULING_TOOLS {
            assert!(off.split(',').any(|t| t == tool), "{tool} in {off}");
        }
        assert!(value("--append-system-prompt").contains("/claude schedule add"));
        assert_eq!(
            a.iter().filter(|x| *x == "--append-system-prompt").count(),
            1
        );
    }
}
