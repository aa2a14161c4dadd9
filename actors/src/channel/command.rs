//! The `!` commands (with the configured prefix): `!status`, `!cancel`, `!reset`, `!rules`,
//! `!retry`, `!usage`, `!sessions`, `!resume ID`, `!model [NAME]`, `!mode [MODE]`, `!handoff`,
//! `!context`, `!compact`, `!schedule …`, `!help` — parsed into the [`Command`] the `/claude` subcommands use
//! too — and the texts of answers. The session's own commands are in `sessions`.

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tracing::info;

use super::queue::Pending;
use super::{ChannelActor, EndReason};
use crate::claude::PermissionMode;
pub use crate::frontend::Command;
use crate::frontend::{CancelReason, Origin, ReplyKind, ReplyTo};
use crate::store::{
    ClearRules, GetUsage, ListSpend, LoadRules, Overrides, ResetConversation, RetryInterrupted,
    SaveOverrides, StoreError,
};

/// `text` as a command, if it is one (`prefix` empty: never).
pub(super) fn parse(text: &str, prefix: &str) -> Option<Command> {
    if prefix.is_empty() {
        return None;
    }
    let rest = text.trim().strip_prefix(prefix)?;
    let mut words = rest.split_whitespace();
    let name = words.next()?.to_ascii_lowercase();
    if name == "schedule" {
        let after = rest
            .trim_start()
            .get("schedule".len()..)
            .unwrap_or_default();
        return super::scheduling::parse(after).map(Command::Schedule);
    }
    let arg: Vec<&str> = words.collect();
    let one = || (arg.len() == 1).then(|| arg[0].to_string());
    match (name.as_str(), arg.len()) {
        ("status", 0) => Some(Command::Status),
        ("cancel" | "stop", 0) => Some(Command::Cancel),
        ("reset" | "new", 0) => Some(Command::New),
        ("rules", 0) => Some(Command::Rules),
        ("rules", 1) if arg[0].eq_ignore_ascii_case("clear") => Some(Command::RulesClear),
        ("retry", 0) => Some(Command::Retry),
        ("help", 0) => Some(Command::Help),
        ("usage", 0) => Some(Command::Usage),
        ("sessions", 0) => Some(Command::Sessions),
        ("resume", 1) => one().map(Command::Resume),
        ("model", 0) => Some(Command::Model(None)),
        ("model", 1) => Some(Command::Model(one())),
        ("mode", 0) => Some(Command::Mode(None)),
        ("mode", 1) => Some(Command::Mode(one())),
        ("fork", _) => Some(Command::Fork {
            name: (!arg.is_empty()).then(|| arg.join(" ")),
            thread: None,
        }),
        ("handoff", 0) => Some(Command::Handoff),
        ("context", 0) => Some(Command::Context),
        ("compact", 0) => Some(Command::Compact),
        ("limits", 0) => Some(Command::Limits),
        ("limits", 2) if arg[0].eq_ignore_ascii_case("lift") => {
            crate::text::mentioned_user(arg[1]).map(Command::LiftLimits)
        }
        _ => None,
    }
}

/// The answer to `rules`.
pub(super) fn rules_text(rules: &[String], prefix: &str) -> String {
    if rules.is_empty() {
        return "No \"always\" rules: Claude asks before each tool use that needs permission."
            .to_string();
    }
    let mut text =
        format!("\"Always\" rules of this conversation (`{prefix}rules clear` forgets them):");
    for r in rules {
        text.push_str("\n• `");
        text.push_str(&r.replace('`', "'"));
        text.push('`');
    }
    text
}

/// The answer to `help`.
pub(super) fn help(prefix: &str, project_dir: &Path) -> String {
    format!(
        "Messages here go to Claude Code, one at a time (working in `{}`). \
         Commands: `{prefix}status` (what is happening), `{prefix}cancel` (stop the current run), \
         `{prefix}reset` (start a new conversation), `{prefix}rules` (the \"always\" permissions; \
         `{prefix}rules clear` forgets them), `{prefix}retry` (run again the message a restart \
         interrupted or a limit refused), `{prefix}usage` (what it cost, per person), \
         `{prefix}limits` (spend and message limits; approvers: `{prefix}limits lift @user`), `{prefix}sessions` and `{prefix}resume ID` \
         (earlier Claude sessions), `{prefix}model [NAME]`, `{prefix}mode [MODE]`, `{prefix}handoff` \
         (continue in a terminal), `{prefix}context` and `{prefix}compact` (the context window), \
         `{prefix}schedule` (scheduled prompts; approvers: `{prefix}schedule add \"0 9 * * 1-5\" PROMPT`, \
         `{prefix}schedule pause|resume|remove ID`); \
         `/claude fork` opens a thread that starts from a copy of this conversation. The same as \
         `/claude` commands.",
        project_dir.display()
    )
}

impl ChannelActor {
    /// Answers `cmd` from `origin`; `approver`: the front end found the user an approver.
    pub(super) fn command(
        &mut self,
        cmd: &Command,
        origin: ReplyTo,
        approver: bool,
        ctx: &mut Context<Self>,
    ) {
        if cmd.needs_approver() && !approver {
            let text = "Only approvers may do that here (`access.approvers`).".to_string();
            self.reply(origin, ReplyKind::Command, text, true);
            return;
        }
        let p = self.deps.command_prefix.clone();
        let busy =
            |what: &str| format!("A run is in progress; `{p}cancel` it first, then `{p}{what}`.");
        let text = match cmd {
            Command::Status => self.status().describe(),
            Command::Cancel => {
                if self.queue.cancel(CancelReason::User, None) {
                    "Cancelling the current run.".to_string()
                } else {
                    "Nothing is running.".to_string()
                }
            }
            Command::Help => help(&p, &self.conversation.profile.project_dir),
            Command::New if self.is_idle() => return self.reset(origin, ctx),
            Command::New => busy("reset"),
            Command::Rules => return self.list_rules(origin, ctx),
            Command::Retry => return self.retry(origin, ctx),
            Command::RulesClear if self.is_idle() => return self.clear_rules(origin, ctx),
            Command::RulesClear => busy("rules clear"),
            Command::Usage => return self.usage(origin, ctx),
            Command::Sessions => return self.sessions(origin, ctx),
            Command::Resume(id) if self.is_idle() => {
                return self.resume(id.clone(), origin, approver, ctx)
            }
            Command::Resume(_) => busy("resume"),
            Command::Model(None) => self.model_text(),
            Command::Model(Some(m)) if self.is_idle() => {
                return self.set_model(m.clone(), origin, ctx)
            }
            Command::Mode(None) => self.mode_text(),
            Command::Mode(Some(m)) if self.is_idle() => return self.set_mode(m, origin, ctx),
            Command::Model(Some(_)) => busy("model"),
            Command::Mode(Some(_)) => busy("mode"),
            Command::Fork { name, thread } => {
                return self.fork(name.as_deref(), *thread, origin, ctx)
            }
            Command::Handoff if self.is_idle() => return self.handoff(origin),
            Command::Handoff => busy("handoff"),
            Command::Context => self.context_text(),
            Command::Compact => return self.compact(origin, ctx),
            Command::Limits => self.deps.limits.config.describe(),
            Command::LiftLimits(user) => return self.lift_limits(*user, origin, ctx),
            Command::Schedule(action) => return self.schedule(action.clone(), origin, ctx),
        };
        self.reply(origin, ReplyKind::Command, text, false);
    }

    /// The model the next run uses, and where that comes from.
    fn model_text(&self) -> String {
        match (&self.overrides.model, &self.conversation.profile.model) {
            (Some(m), _) => format!(
                "Model: `{m}` (chosen here; `{}model default` goes back to the channel's).",
                self.deps.command_prefix
            ),
            (None, Some(m)) => format!("Model: `{m}` (the channel's setting)."),
            (None, None) => match &self.deps.runner.config().model {
                None => "Model: the CLI's default.".to_string(),
                Some(m) => format!("Model: `{m}` (`claude.model`)."),
            },
        }
    }

    /// The permission mode the next run uses.
    fn mode_text(&self) -> String {
        let mode = self.permission_mode();
        let change = if self.conversation.profile.allow_mode_change {
            format!(
                " Approvers can change it: `{}mode MODE`.",
                self.deps.command_prefix
            )
        } else {
            " This channel does not allow changing it from chat.".to_string()
        };
        format!("Permission mode: `{}`.{change}", mode.as_str())
    }

    /// The permission mode of this conversation: chosen here, else the channel's, else
    /// `claude.permission_mode`.
    pub(super) fn permission_mode(&self) -> PermissionMode {
        let configured = self.configured_mode();
        // A choice from chat holds only while the channel allows it and its own mode is the
        // one it was chosen under: tightening the channel's policy ends it.
        self.overrides
            .permission_mode
            .filter(|_| self.conversation.profile.allow_mode_change)
            .filter(|_| self.overrides.mode_under == Some(configured))
            .unwrap_or(configured)
    }

    /// The channel's own mode: its `permission_mode`, else `claude.permission_mode`.
    fn configured_mode(&self) -> PermissionMode {
        self.conversation
            .profile
            .permission_mode
            .unwrap_or(self.deps.runner.config().permission_mode)
    }

    fn set_model(&mut self, model: String, origin: ReplyTo, ctx: &mut Context<Self>) {
        let valid = !model.is_empty()
            && model.len() <= 100
            && model
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c));
        if !valid {
            let text = format!(
                "`{}` is not a model name.",
                crate::text::truncate_chars(&model, 40).replace('`', "'")
            );
            return self.reply(origin, ReplyKind::Command, text, true);
        }
        let chosen = (model != "default").then_some(model);
        let overrides = Overrides {
            model: chosen.clone(),
            ..self.overrides.clone()
        };
        let text = match &chosen {
            Some(m) => format!("Model set to `{m}` for this conversation."),
            None => "Model: back to the channel's setting.".to_string(),
        };
        // The warm process is told at once; without one, the next spawn passes `--model`.
        if let Some(live) = self.warm.get() {
            live.set_model(chosen.as_deref());
        }
        self.save_overrides(overrides, origin, text, ctx);
    }

    fn set_mode(&mut self, mode: &str, origin: ReplyTo, ctx: &mut Context<Self>) {
        if !self.conversation.profile.allow_mode_change {
            let text = "This channel does not allow changing the permission mode from chat (`allow_mode_change`).".to_string();
            return self.reply(origin, ReplyKind::Command, text, true);
        }
        let Some(parsed) = PermissionMode::parse(mode) else {
            let text = format!(
                "Unknown permission mode. One of: {}.",
                PermissionMode::CHAT.map(PermissionMode::as_str).join(", ")
            );
            return self.reply(origin, ReplyKind::Command, text, true);
        };
        if parsed == PermissionMode::BypassPermissions {
            let text = "`bypassPermissions` cannot be chosen from chat.".to_string();
            return self.reply(origin, ReplyKind::Command, text, true);
        }
        let overrides = Overrides {
            permission_mode: Some(parsed),
            mode_under: Some(self.configured_mode()),
            ..self.overrides.clone()
        };
        if let Some(live) = self.warm.get() {
            live.set_permission_mode(parsed);
        }
        info!(
            channel_id = self.conversation.id.get(),
            mode = parsed.as_str(),
            "permission mode changed from chat"
        );
        let text = format!(
            "Permission mode set to `{}` for this conversation.",
            parsed.as_str()
        );
        self.save_overrides(overrides, origin, text, ctx);
    }

    fn save_overrides(
        &mut self,
        overrides: Overrides,
        origin: ReplyTo,
        text: String,
        ctx: &mut Context<Self>,
    ) {
        let save = self.deps.store.send(SaveOverrides {
            conversation_id: self.conversation.id,
            overrides: overrides.clone(),
        });
        // Wait: the next message runs with the new choice.
        ctx.wait(save.into_actor(self).map(move |res, act, _| {
            match res.map_err(StoreError::from).and_then(|r| r) {
                Ok(()) => {
                    act.overrides = overrides;
                    act.reply(origin, ReplyKind::Command, text, false);
                }
                Err(e) => act.reply(
                    origin,
                    ReplyKind::Command,
                    format!("Could not store that: {e}"),
                    true,
                ),
            }
        }));
    }

    fn usage(&mut self, origin: ReplyTo, ctx: &mut Context<Self>) {
        let limits = Arc::clone(&self.deps.limits);
        let windows = limits.config.windows(crate::time::unix_ms());
        let ask = self.deps.store.send(GetUsage {
            conversation_id: self.conversation.id,
            profile_id: self.conversation.profile.id,
            day_start_ms: windows.day.0,
        });
        let people = self.deps.store.send(ListSpend { windows });
        // The CLI's own count, where there is a warm process to ask (`get_usage`, p_22).
        let control = self
            .warm
            .get()
            .and_then(crate::claude::LiveSession::control);
        let work = async move {
            let stored = ask.await;
            let people = people.await;
            let cli = match control {
                Some(c) => c.ask("get_usage", Duration::from_secs(2)).await,
                None => None,
            };
            (
                stored,
                cli.and_then(|v| v["session"]["total_cost_usd"].as_f64()),
                people,
            )
        };
        ctx.spawn(work.into_actor(self).map(move |(res, cli, people), act, _| {
            let (mut text, is_error) = match res.map_err(StoreError::from).and_then(|r| r) {
                Ok(u) => (
                    format!(
                        "Cost: this conversation ${:.4}; its channel and threads ${:.4}; today ({}), all conversations ${:.4} over {} run(s).",
                        u.conversation_usd, u.channel_usd, limits.config.timezone.name(), u.today_usd, u.today_runs
                    ),
                    false,
                ),
                Err(e) => (format!("Could not read the costs: {e}"), true),
            };
            if let Some(usd) = cli {
                let _ = write!(text, " The CLI counts ${usd:.4} for its warm process's session.");
            }
            if let Ok(Ok(people)) = people {
                text.push_str(&limits.config.describe_spend(&people, &windows));
            }
            act.reply(origin, ReplyKind::Command, text, is_error);
        }));
    }

    fn reset(&mut self, origin: ReplyTo, ctx: &mut Context<Self>) {
        // A new session: the warm process holds the old one (and its session rules).
        self.end_warm(EndReason::Other);
        self.clear_todo();
        let reset = self.deps.store.send(ResetConversation {
            id: self.conversation.id,
        });
        // Wait: no run may start from a message that arrives before the reset is stored.
        ctx.wait(reset.into_actor(self).map(move |res, act, _| {
            let (text, is_error) = match res.map_err(StoreError::from).and_then(|r| r) {
                Ok(_) => {
                    if let Some(r) = act.record.as_mut() {
                        r.session_id = None;
                        r.session_cost_usd = 0.0;
                    }
                    ("Started a new conversation: the next message begins a fresh Claude session.".to_string(), false)
                }
                Err(e) => (format!("Could not reset the conversation: {e}"), true),
            };
            act.reply(origin, ReplyKind::Command, text, is_error);
        }));
    }

    fn list_rules(&mut self, origin: ReplyTo, ctx: &mut Context<Self>) {
        let load = self.deps.store.send(LoadRules {
            id: self.conversation.id,
        });
        ctx.spawn(load.into_actor(self).map(move |res, act, _| {
            let (text, is_error) = match res.map_err(StoreError::from).and_then(|r| r) {
                Ok(rules) => (rules_text(&rules, &act.deps.command_prefix), false),
                Err(e) => (format!("Could not read the rules: {e}"), true),
            };
            act.reply(origin, ReplyKind::Command, text, is_error);
        }));
    }

    /// `!retry`: queues again the newest message of this conversation that a restart
    /// interrupted; its answer replies to it.
    fn retry(&mut self, origin: ReplyTo, ctx: &mut Context<Self>) {
        let find = self.deps.store.send(RetryInterrupted {
            conversation_id: self.conversation.id,
        });
        // Wait: a message sent right after `!retry` runs after the retried one.
        ctx.wait(find.into_actor(self).map(move |res, act, ctx| {
            let (text, is_error) = match res.map_err(StoreError::from).and_then(|r| r) {
                Ok(Some(m)) => {
                    let preview =
                        crate::text::truncate_chars(m.text.lines().next().unwrap_or_default(), 80);
                    act.enqueue(
                        Pending {
                            origin: Origin {
                                channel_id: m.channel_id,
                                message_id: m.message_id,
                                author_id: m.author_id,
                            },
                            answer_to: None,
                            prompt: m.text,
                            command: None,
                            late: false,
                            stored: true,
                            attachments: m.attachments,
                            via: m.via,
                        },
                        ctx,
                    );
                    (format!("Running it again: “{preview}”."), false)
                }
                Ok(None) => ("No interrupted message to run again.".to_string(), false),
                Err(e) => (format!("Could not read the inbox: {e}"), true),
            };
            act.reply(origin, ReplyKind::Command, text, is_error);
        }));
    }

    fn clear_rules(&mut self, origin: ReplyTo, ctx: &mut Context<Self>) {
        // The warm process keeps its session rules until it ends.
        self.end_warm(EndReason::Other);
        let clear = self.deps.store.send(ClearRules {
            id: self.conversation.id,
        });
        ctx.wait(clear.into_actor(self).map(move |res, act, _| {
            let (text, is_error) = match res.map_err(StoreError::from).and_then(|r| r) {
                Ok(n) => (
                    format!("Forgot {n} \"always\" rule(s): Claude will ask again."),
                    false,
                ),
                Err(e) => (format!("Could not clear the rules: {e}"), true),
            };
            act.reply(origin, ReplyKind::Command, text, is_error);
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_need_the_prefix_and_a_known_name() {
        assert_eq!(parse("!status", "!"), Some(Command::Status));
        assert_eq!(parse("  !Cancel ", "!"), Some(Command::Cancel));
        assert_eq!(parse("!important: fix the build", "!"), None);
        assert_eq!(parse("!status of the build, please", "!"), None);
        assert_eq!(parse("status", "!"), None);
        assert_eq!(parse("!status", ""), None);
        assert_eq!(parse("!rules", "!"), Some(Command::Rules));
        assert_eq!(parse("!retry", "!"), Some(Command::Retry));
        assert_eq!(parse("!limits", "!"), Some(Command::Limits));
        assert_eq!(
            parse("!limits lift <@42>", "!"),
            Some(Command::LiftLimits(crate::ids::UserId(42)))
        );
        assert_eq!(parse("!limits lift nobody", "!"), None);
        assert_eq!(parse("!rules clear", "!"), Some(Command::RulesClear));
        assert_eq!(parse("!reset", "!"), Some(Command::New));
        assert_eq!(parse("!usage", "!"), Some(Command::Usage));
        assert_eq!(
            parse("!resume 7c82abb0", "!"),
            Some(Command::Resume("7c82abb0".into()))
        );
        assert_eq!(parse("!resume", "!"), None);
        assert_eq!(parse("!model", "!"), Some(Command::Model(None)));
        assert_eq!(
            parse("!model Sonnet", "!"),
            Some(Command::Model(Some("Sonnet".into())))
        );
        assert_eq!(
            parse("!mode plan", "!"),
            Some(Command::Mode(Some("plan".into())))
        );
    }
}
