//! The `/claude` application command: its definition (registered per guild with a bulk
//! overwrite, so a restart replaces it and never adds a second), how an invocation becomes the
//! core's [`Command`] (the same one the `!` commands parse to), and autocomplete choices.

use serde_json::{json, Value};
use serenity::all::{CommandData, CommandDataOption, CommandDataOptionValue};

use crate::claude::PermissionMode;
use crate::frontend::{Command, ScheduleAction};

/// The command's name: `/claude …`.
pub const NAME: &str = "claude";

/// Discord allows at most 25 autocomplete choices.
pub const MAX_CHOICES: usize = 25;

/// The `/claude` command with its subcommands, as Discord's `ApplicationCommandUpdateRequest`
/// (`../shared/discord/openapi.json`). Written out rather than built with serenity's
/// `CreateCommand`, which also sends fields the spec does not have (`nsfw`, and `channel_types`,
/// `min_length`, `max_length`… on every option).
pub fn definition() -> Value {
    let sub = |name: &str, description: &str, options: Vec<Value>| json!({"type": OPTION_SUBCOMMAND, "name": name, "description": description, "options": options});
    let string = |name: &str, description: &str, required: bool, autocomplete: bool| {
        json!({"type": OPTION_STRING, "name": name, "description": description,
               "required": required, "autocomplete": autocomplete})
    };
    let integer = |name: &str, description: &str| json!({"type": OPTION_INTEGER, "name": name, "description": description, "required": true, "min_value": 1});
    let mut mode = string(
        "mode",
        "The permission mode (approvers, where the channel allows it)",
        false,
        false,
    );
    mode["choices"] = PermissionMode::CHAT
        .iter()
        .map(|m| json!({"name": m.as_str(), "value": m.as_str()}))
        .collect();
    json!({
        "name": NAME,
        "type": 1,
        "description": "Claude Code in this channel",
        "dm_permission": false,
        "options": [
            sub("status", "What Claude is doing here", vec![]),
            sub("cancel", "Stop the run in flight", vec![]),
            sub("new", "Start a new Claude session here", vec![]),
            sub("retry", "Run again the message a restart interrupted", vec![]),
            sub("usage", "What this conversation, its channel and today cost", vec![]),
            sub("sessions", "This conversation's Claude sessions", vec![]),
            sub("resume", "Go back to one of this conversation's sessions",
                vec![string("id", "The session id", true, true)]),
            sub("model", "Show or set the model for this conversation",
                vec![string("name", "The model", false, true)]),
            sub("mode", "Show or set the permission mode", vec![mode]),
            sub("rules", "The \"always\" rules of this conversation", vec![
                json!({"type": OPTION_BOOLEAN, "name": "clear", "description": "Forget them (approvers)", "required": false})
            ]),
            sub("fork", "Open a thread that starts from a copy of this conversation",
                vec![string("name", "The thread's name", false, false)]),
            sub("handoff", "The command that continues this conversation in a terminal", vec![]),
            sub("context", "How full Claude's context window is", vec![]),
            sub("compact", "Summarize the conversation so far to free the context window", vec![]),
            sub("limits", "The spend and message limits; approvers may lift a person's for today", vec![
                json!({"type": OPTION_USER, "name": "lift", "description": "Lift this person's own limits until the end of the day (approvers)", "required": false})
            ]),
            json!({"type": OPTION_SUBCOMMAND_GROUP, "name": "schedule", "description": "Scheduled prompts in this conversation", "options": [
                sub("add", "Run a prompt at the times of a cron expression (approvers)", vec![
                    string("when", "A cron expression: minute hour day month weekday, e.g. 0 9 * * 1-5", true, false),
                    string("prompt", "What Claude is asked each time", true, false),
                ]),
                sub("list", "This conversation's schedules", vec![]),
                sub("remove", "Delete a schedule (approvers)", vec![integer("id", "The schedule's number")]),
                sub("pause", "Stop a schedule's runs (approvers)", vec![integer("id", "The schedule's number")]),
                sub("resume", "Start a paused schedule's runs again (approvers)", vec![integer("id", "The schedule's number")]),
            ]}),
            sub("help", "The commands", vec![]),
        ]
    })
}

/// Discord's application command option types used here.
const OPTION_SUBCOMMAND: u8 = 1;
const OPTION_SUBCOMMAND_GROUP: u8 = 2;
const OPTION_INTEGER: u8 = 4;
const OPTION_STRING: u8 = 3;
const OPTION_BOOLEAN: u8 = 5;
const OPTION_USER: u8 = 6;

/// The string option `name` of a subcommand's options.
fn string(options: &[CommandDataOption], name: &str) -> Option<String> {
    options
        .iter()
        .find(|o| o.name == name)
        .and_then(|o| match &o.value {
            CommandDataOptionValue::String(s) => Some(s.trim().to_string()),
            _ => None,
        })
}

/// What an invocation of `/claude` asks for; an error names what is wrong.
pub fn parse(data: &CommandData) -> Result<Command, String> {
    if data.name != NAME {
        return Err(format!("`/{}` is not this bot's command", data.name));
    }
    if let Some((group, inner)) = data.options.first().and_then(|o| match &o.value {
        CommandDataOptionValue::SubCommandGroup(opts) => Some((o.name.as_str(), opts.as_slice())),
        _ => None,
    }) {
        return match group {
            "schedule" => schedule(inner).map(Command::Schedule),
            other => Err(format!("`/claude {other}` is not a subcommand")),
        };
    }
    let Some((sub, options)) = data.options.first().and_then(|o| match &o.value {
        CommandDataOptionValue::SubCommand(opts) => Some((o.name.as_str(), opts.as_slice())),
        _ => None,
    }) else {
        return Err("a subcommand is needed, e.g. `/claude status`".into());
    };
    let optional = |name| string(options, name).filter(|s| !s.is_empty());
    Ok(match sub {
        "status" => Command::Status,
        "cancel" => Command::Cancel,
        "new" => Command::New,
        "retry" => Command::Retry,
        "usage" => Command::Usage,
        "sessions" => Command::Sessions,
        "help" => Command::Help,
        "resume" => Command::Resume(optional("id").ok_or("`/claude resume` needs a session id")?),
        "model" => Command::Model(optional("name")),
        "fork" => Command::Fork {
            name: optional("name"),
            thread: None,
        },
        "handoff" => Command::Handoff,
        "context" => Command::Context,
        "compact" => Command::Compact,
        "limits" => options
            .iter()
            .find_map(|o| match (o.name.as_str(), &o.value) {
                ("lift", CommandDataOptionValue::User(u)) => {
                    Some(Command::LiftLimits(crate::ids::UserId(u.get())))
                }
                _ => None,
            })
            .unwrap_or(Command::Limits),
        "mode" => Command::Mode(optional("mode")),
        "rules" => {
            let clear = options.iter().any(|o| {
                o.name == "clear" && matches!(o.value, CommandDataOptionValue::Boolean(true))
            });
            if clear {
                Command::RulesClear
            } else {
                Command::Rules
            }
        }
        other => return Err(format!("`/claude {other}` is not a subcommand")),
    })
}

/// `/claude schedule …`.
fn schedule(group: &[CommandDataOption]) -> Result<ScheduleAction, String> {
    let Some((sub, options)) = group.first().and_then(|o| match &o.value {
        CommandDataOptionValue::SubCommand(opts) => Some((o.name.as_str(), opts.as_slice())),
        _ => None,
    }) else {
        return Err("`/claude schedule` needs add, list, remove, pause or resume".into());
    };
    let id = || {
        options
            .iter()
            .find_map(|o| match (o.name.as_str(), &o.value) {
                ("id", CommandDataOptionValue::Integer(n)) => u64::try_from(*n).ok(),
                _ => None,
            })
            .map(crate::ids::ScheduleId)
            .ok_or_else(|| format!("`/claude schedule {sub}` needs the schedule's number"))
    };
    Ok(match sub {
        "add" => ScheduleAction::Add {
            cron: string(options, "when").unwrap_or_default(),
            prompt: string(options, "prompt").unwrap_or_default(),
        },
        "list" => ScheduleAction::List,
        "remove" => ScheduleAction::Remove(id()?),
        "pause" => ScheduleAction::Pause(id()?),
        "resume" => ScheduleAction::Resume(id()?),
        other => return Err(format!("`/claude schedule {other}` is not a subcommand")),
    })
}

/// Whether only the user who asked should see the answer (nothing changes for others).
pub fn is_private(command: &Command) -> bool {
    matches!(
        command,
        Command::Status
            | Command::Usage
            | Command::Sessions
            | Command::Help
            | Command::Rules
            | Command::Model(None)
            | Command::Mode(None)
            | Command::Handoff
            | Command::Context
            | Command::Limits
            | Command::Schedule(ScheduleAction::List)
    )
}

/// The choices among `candidates` for what the user typed: those containing it (any case),
/// at most [`MAX_CHOICES`], each at most 100 characters (Discord's limits).
pub fn choices(candidates: &[String], typed: &str) -> Vec<String> {
    let typed = typed.to_lowercase();
    candidates
        .iter()
        .filter(|c| c.to_lowercase().contains(&typed))
        .filter(|c| c.chars().count() <= 100)
        .take(MAX_CHOICES)
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(sub: &str, options: &serde_json::Value) -> CommandData {
        serde_json::from_value(json!({
            "id": "1", "name": "claude", "type": 1,
            "options": [{"type": 1, "name": sub, "options": options}]
        }))
        .expect("command data")
    }

    #[test]
    fn subcommands_become_the_core_commands() {
        assert_eq!(parse(&data("status", &json!([]))), Ok(Command::Status));
        assert_eq!(parse(&data("limits", &json!([]))), Ok(Command::Limits));
        assert_eq!(
            parse(&data(
                "limits",
                &json!([{"type": 6, "name": "lift", "value": "4242"}])
            )),
            Ok(Command::LiftLimits(crate::ids::UserId(4242)))
        );
        assert_eq!(parse(&data("new", &json!([]))), Ok(Command::New));
        assert_eq!(
            parse(&data(
                "model",
                &json!([{"type": 3, "name": "name", "value": "sonnet"}])
            )),
            Ok(Command::Model(Some("sonnet".into())))
        );
        assert_eq!(parse(&data("model", &json!([]))), Ok(Command::Model(None)));
        assert_eq!(
            parse(&data(
                "rules",
                &json!([{"type": 5, "name": "clear", "value": true}])
            )),
            Ok(Command::RulesClear)
        );
        assert_eq!(parse(&data("rules", &json!([]))), Ok(Command::Rules));
        assert!(parse(&data("resume", &json!([]))).is_err());
        let group = |sub: &str, options: &serde_json::Value| -> CommandData {
            serde_json::from_value(json!({
                "id": "1", "name": "claude", "type": 1,
                "options": [{"type": 2, "name": "schedule", "options": [{"type": 1, "name": sub, "options": options}]}]
            }))
            .expect("command data")
        };
        assert_eq!(
            parse(&group(
                "add",
                &json!([{"type": 3, "name": "when", "value": "0 9 * * 1-5"}, {"type": 3, "name": "prompt", "value": " run the tests "}])
            )),
            Ok(Command::Schedule(ScheduleAction::Add {
                cron: "0 9 * * 1-5".into(),
                prompt: "run the tests".into()
            }))
        );
        assert_eq!(
            parse(&group(
                "pause",
                &json!([{"type": 4, "name": "id", "value": 3}])
            )),
            Ok(Command::Schedule(ScheduleAction::Pause(
                crate::ids::ScheduleId(3)
            )))
        );
        assert!(parse(&group("remove", &json!([]))).is_err());
        assert!(parse(&data("explode", &json!([]))).is_err());
    }

    #[test]
    fn choices_match_anywhere_and_respect_discords_limits() {
        let all: Vec<String> = (0..40).map(|i| format!("model-{i}")).collect();
        assert_eq!(choices(&all, "").len(), MAX_CHOICES);
        assert_eq!(
            choices(&all, "-3"),
            [
                "model-3", "model-30", "model-31", "model-32", "model-33", "model-34", "model-35",
                "model-36", "model-37", "model-38", "model-39"
            ]
        );
        let long = vec!["x".repeat(101), "ok".into()];
        assert_eq!(choices(&long, ""), ["ok"]);
    }

    #[test]
    fn the_definition_serializes_as_discord_expects() {
        let v = definition();
        assert_eq!(v["name"], "claude");
        let subs: Vec<&str> = v["options"]
            .as_array()
            .expect("options")
            .iter()
            .map(|o| o["name"].as_str().unwrap_or_default())
            .collect();
        for s in [
            "status", "cancel", "new", "model", "mode", "sessions", "resume", "usage", "rules",
        ] {
            assert!(subs.contains(&s), "{s} missing: {subs:?}");
        }
        let mode = v["options"]
            .as_array()
            .expect("options")
            .iter()
            .find(|o| o["name"] == "mode")
            .expect("mode");
        let choices = mode["options"][0]["choices"].as_array().expect("choices");
        assert!(!choices.iter().any(|c| c["value"] == "bypassPermissions"));
    }
}
