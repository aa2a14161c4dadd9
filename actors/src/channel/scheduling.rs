//! The channel's side of schedules: `!schedule …` parsed into the [`ScheduleAction`] that
//! `/claude schedule` gives too, and the command handed to the scheduler, whose answer is the
//! reply.

use actix::prelude::*;

use super::ChannelActor;
use crate::frontend::{ReplyKind, ReplyTo, ScheduleAction};

/// `schedule …` after its name: `add EXPR PROMPT` (EXPR in quotes or backticks, an `@daily`
/// style name, or five fields), `list` (also nothing), `remove|pause|resume ID`.
pub(super) fn parse(rest: &str) -> Option<ScheduleAction> {
    let rest = rest.trim();
    let (verb, args) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
    let args = args.trim();
    let id = || {
        args.trim_start_matches('#')
            .parse::<u64>()
            .ok()
            .map(crate::ids::ScheduleId)
    };
    match verb.to_ascii_lowercase().as_str() {
        "" | "list" if args.is_empty() => Some(ScheduleAction::List),
        "remove" | "delete" => id().map(ScheduleAction::Remove),
        "pause" => id().map(ScheduleAction::Pause),
        "resume" => id().map(ScheduleAction::Resume),
        "add" => {
            let (cron, prompt) = if let Some(q) = args
                .chars()
                .next()
                .filter(|c| matches!(c, '"' | '`' | '\''))
            {
                let inner = &args[1..];
                let end = inner.find(q)?;
                (&inner[..end], &inner[end + 1..])
            } else if args.starts_with('@') {
                args.split_once(char::is_whitespace).unwrap_or((args, ""))
            } else {
                // Five fields, then the prompt.
                let mut rest = args;
                for _ in 0..5 {
                    let field = rest.trim_start();
                    rest = &field[field.find(char::is_whitespace).unwrap_or(field.len())..];
                }
                args.split_at(args.len() - rest.len())
            };
            Some(ScheduleAction::Add {
                cron: cron.trim().to_string(),
                prompt: prompt.trim().to_string(),
            })
        }
        _ => None,
    }
}

impl ChannelActor {
    /// `schedule`: answered by the scheduler.
    pub(super) fn schedule(
        &mut self,
        action: ScheduleAction,
        origin: ReplyTo,
        ctx: &mut Context<Self>,
    ) {
        let Some(schedules) = self.deps.schedules.clone() else {
            let text = "Schedules are not available here.".to_string();
            return self.reply(origin, ReplyKind::Command, text, true);
        };
        let asked = schedules.send(crate::schedule::ManageSchedules {
            conversation: self.conversation.clone(),
            channel_id: origin.channel_id(),
            by: origin.author_id(),
            action,
        });
        ctx.spawn(asked.into_actor(self).map(move |res, act, _| {
            let (text, is_error) =
                res.unwrap_or_else(|_| ("The scheduler has stopped.".to_string(), true));
            act.reply(origin, ReplyKind::Command, text, is_error);
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::super::command::{self, Command};
    use super::*;

    #[test]
    fn schedule_commands_parse_with_the_expression_quoted_named_or_as_five_fields() {
        use crate::ids::ScheduleId;
        let add = |cron: &str, prompt: &str| {
            Some(Command::Schedule(ScheduleAction::Add {
                cron: cron.into(),
                prompt: prompt.into(),
            }))
        };
        assert_eq!(
            command::parse("!schedule add \"0 9 * * 1-5\" run the tests", "!"),
            add("0 9 * * 1-5", "run the tests")
        );
        assert_eq!(
            command::parse("!schedule add `*/30 8-18 * * *` check CI", "!"),
            add("*/30 8-18 * * *", "check CI")
        );
        assert_eq!(
            command::parse("!schedule add 0 9 * * 1-5 run the tests", "!"),
            add("0 9 * * 1-5", "run the tests")
        );
        assert_eq!(
            command::parse("!schedule add @daily summarize", "!"),
            add("@daily", "summarize")
        );
        // Too few fields: the scheduler says what is wrong.
        assert_eq!(command::parse("!schedule add 0 9 *", "!"), add("0 9 *", ""));
        assert_eq!(command::parse("!schedule add \"0 9 * *", "!"), None);
        assert_eq!(
            command::parse("!schedule", "!"),
            Some(Command::Schedule(ScheduleAction::List))
        );
        assert_eq!(
            command::parse("!schedule list", "!"),
            Some(Command::Schedule(ScheduleAction::List))
        );
        assert_eq!(
            command::parse("!schedule pause #3", "!"),
            Some(Command::Schedule(ScheduleAction::Pause(ScheduleId(3))))
        );
        assert_eq!(
            command::parse("!schedule remove 4", "!"),
            Some(Command::Schedule(ScheduleAction::Remove(ScheduleId(4))))
        );
        assert_eq!(command::parse("!schedule remove four", "!"), None);
    }
}
