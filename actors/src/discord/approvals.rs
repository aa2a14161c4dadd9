//! Permission requests on Discord: the prompt message with its buttons (**Allow once**,
//! **Always allow (this conversation)**, **Deny**; for `AskUserQuestion` a select menu per
//! question — several choices where the question allows them — and **Decline**; for
//! `ExitPlanMode` **Approve** / **Keep planning**), what a click means, and the text the prompt
//! is edited to once the request is resolved.
//!
//! A button's `custom_id` is `cc:<action>:<token>`: the request's unguessable token (32 hex
//! characters, well inside Discord's 100) is both how the gateway finds the request and the
//! proof the channel actor checks. The **Stop** button of a progress message is
//! `cc:stop:<conversation>:<message>`: who may press it is checked by who clicks.

use std::fmt::Write as _;

use serenity::all::{
    ButtonStyle, CreateActionRow, CreateButton, CreateSelectMenu, CreateSelectMenuKind,
    CreateSelectMenuOption,
};

use crate::frontend::{ApprovalAnswer, ApprovalState};
use crate::ids::{ConversationId, MessageId};

/// What a button does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Allow once.
    Once,
    /// Always allow in this conversation.
    Always,
    /// Deny.
    Deny,
    /// An answer to question `n` (a select menu).
    Question(usize),
}

/// The questions a prompt can offer: Discord allows five rows, one is for **Decline**.
pub const MAX_QUESTIONS: usize = 4;
/// Options of a select menu (Discord's limit).
pub const MAX_OPTIONS: usize = 25;
/// Characters of an option's label (Discord's limit).
const MAX_LABEL: usize = 100;

/// The options a click chose, from their values (indices into `options`); `None` if any is not
/// one of them.
pub fn chosen<'a>(values: &[String], options: &'a [String]) -> Option<Vec<&'a str>> {
    values
        .iter()
        .map(|v| {
            v.parse::<usize>()
                .ok()
                .filter(|n| *n < MAX_OPTIONS)
                .and_then(|n| options.get(n))
                .map(String::as_str)
        })
        .collect()
}

/// The `custom_id` of `action` for the request with `token`.
pub fn custom_id(action: &Action, token: &str) -> String {
    let a = match action {
        Action::Once => "once".to_string(),
        Action::Always => "always".to_string(),
        Action::Deny => "deny".to_string(),
        Action::Question(n) => format!("q{n}"),
    };
    format!("cc:{a}:{token}")
}

/// Reads a `custom_id` this module made: the action and the token.
pub fn parse_custom_id(id: &str) -> Option<(Action, &str)> {
    let rest = id.strip_prefix("cc:")?;
    let (action, token) = rest.split_once(':')?;
    let action = match action {
        "once" => Action::Once,
        "always" => Action::Always,
        "deny" => Action::Deny,
        other => Action::Question(other.strip_prefix('q')?.parse().ok()?),
    };
    (!token.is_empty() && token.len() <= 64).then_some((action, token))
}

/// A button about `message` of `conversation`, whose `custom_id` is `cc:<kind>:<conv>:<msg>`.
fn message_button(
    kind: &str,
    conversation: ConversationId,
    message: MessageId,
    label: &str,
    style: ButtonStyle,
) -> Vec<CreateActionRow> {
    vec![CreateActionRow::Buttons(vec![CreateButton::new(format!(
        "cc:{kind}:{conversation}:{message}"
    ))
    .label(label)
    .style(style)])]
}

/// Reads a [`message_button`]'s `custom_id` of `kind`: the conversation and the message.
fn parse_message_button(id: &str, kind: &str) -> Option<(ConversationId, MessageId)> {
    let rest = id
        .strip_prefix("cc:")?
        .strip_prefix(kind)?
        .strip_prefix(':')?;
    let (conversation, message) = rest.split_once(':')?;
    Some((
        ConversationId(conversation.parse().ok()?),
        MessageId(message.parse().ok()?),
    ))
}

/// The **Stop** button of the progress message of the run answering `message` in
/// `conversation`.
pub fn stop_button(conversation: ConversationId, message: MessageId) -> Vec<CreateActionRow> {
    message_button("stop", conversation, message, "Stop", ButtonStyle::Danger)
}

/// Reads a Stop button's `custom_id`: the conversation and the message its run answers.
pub fn parse_stop(id: &str) -> Option<(ConversationId, MessageId)> {
    parse_message_button(id, "stop")
}

/// The *Interrupt and run this now* button of the "queued" notice of `message` in
/// `conversation`.
pub fn now_button(conversation: ConversationId, message: MessageId) -> Vec<CreateActionRow> {
    let label = "Interrupt and run this now";
    message_button("now", conversation, message, label, ButtonStyle::Primary)
}

/// Reads an *Interrupt and run this now* button's `custom_id`: the conversation and the
/// waiting message.
pub fn parse_now(id: &str) -> Option<(ConversationId, MessageId)> {
    parse_message_button(id, "now")
}

/// The answer a click gives (question answers are gathered by the gateway).
pub fn answer_of(action: &Action) -> Option<ApprovalAnswer> {
    Some(match action {
        Action::Once => ApprovalAnswer::AllowOnce,
        Action::Always => ApprovalAnswer::AllowAlways,
        Action::Deny => ApprovalAnswer::Deny(None),
        Action::Question(_) => return None,
    })
}

/// The prompt's text and buttons for an `Asked` request.
pub fn prompt(state: &ApprovalState, token: &str) -> (String, Vec<CreateActionRow>) {
    let ApprovalState::Asked {
        tool,
        summary,
        questions,
        requested_by,
        always,
    } = state
    else {
        return (String::new(), Vec::new());
    };
    // The summary is Claude's text: in a code block, with its backticks defused.
    let summary = summary.replace("```", "'''");
    if !questions.is_empty() {
        let mut text = format!("❓ Claude asks (for <@{requested_by}>'s message):");
        let mut rows = Vec::new();
        for (i, q) in questions.iter().take(MAX_QUESTIONS).enumerate() {
            let _ = write!(text, "\n**{}.** {}", i + 1, q.question.replace('*', "\\*"));
            // Claude's labels may repeat or run long: the value is the option's index (unique,
            // as Discord requires), the label cut to Discord's 100 characters.
            let options: Vec<CreateSelectMenuOption> = q
                .options
                .iter()
                .take(MAX_OPTIONS)
                .enumerate()
                .map(|(n, label)| {
                    let label = crate::text::truncate_chars(label.trim(), MAX_LABEL - 1);
                    let label = if label.is_empty() {
                        format!("({})", n + 1)
                    } else {
                        label
                    };
                    CreateSelectMenuOption::new(label, n.to_string())
                })
                .collect();
            let most = if q.multi_select { options.len() } else { 1 };
            rows.push(CreateActionRow::SelectMenu(
                CreateSelectMenu::new(
                    custom_id(&Action::Question(i), token),
                    CreateSelectMenuKind::String { options },
                )
                .placeholder(crate::text::truncate_chars(
                    &format!("{}. {}", i + 1, q.question),
                    140,
                ))
                .min_values(1)
                .max_values(u8::try_from(most.max(1)).unwrap_or(25)),
            ));
        }
        rows.push(CreateActionRow::Buttons(vec![CreateButton::new(
            custom_id(&Action::Deny, token),
        )
        .label("Decline")
        .style(ButtonStyle::Secondary)]));
        return (text, rows);
    }
    if tool == "ExitPlanMode" {
        let text =
            format!("📋 Claude's plan (for <@{requested_by}>'s message):\n```\n{summary}\n```");
        let buttons = vec![
            CreateButton::new(custom_id(&Action::Once, token))
                .label("Approve")
                .style(ButtonStyle::Success),
            CreateButton::new(custom_id(&Action::Deny, token))
                .label("Keep planning")
                .style(ButtonStyle::Secondary),
        ];
        return (text, vec![CreateActionRow::Buttons(buttons)]);
    }
    let text = format!(
        "🔐 Claude wants to use **{tool}** (for <@{requested_by}>'s message):\n```\n{summary}\n```"
    );
    let mut buttons = vec![CreateButton::new(custom_id(&Action::Once, token))
        .label("Allow once")
        .style(ButtonStyle::Success)];
    if !always.is_empty() {
        buttons.push(
            CreateButton::new(custom_id(&Action::Always, token))
                .label("Always allow (this conversation)")
                .style(ButtonStyle::Primary),
        );
    }
    buttons.push(
        CreateButton::new(custom_id(&Action::Deny, token))
            .label("Deny")
            .style(ButtonStyle::Danger),
    );
    (text, vec![CreateActionRow::Buttons(buttons)])
}

/// The line a resolved prompt ends with.
pub fn outcome(state: &ApprovalState) -> String {
    match state {
        ApprovalState::Asked { .. } => String::new(),
        ApprovalState::Allowed { by, always: false } => format!("✅ Allowed once by {by}."),
        ApprovalState::Allowed { by, always: true } => {
            format!("✅ Always allowed in this conversation, by {by}.")
        }
        ApprovalState::Denied { by } => format!("⛔ Denied by {by}."),
        ApprovalState::Answered { by } => format!("✅ Answered by {by}."),
        ApprovalState::TimedOut => "⌛ Timed out: no one answered, so it was denied.".into(),
        ApprovalState::Withdrawn => "↩️ Withdrawn: Claude no longer needs the answer.".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_ids_fit_discord_and_read_back() {
        let token = "0123456789abcdef0123456789abcdef";
        for action in [
            Action::Once,
            Action::Always,
            Action::Deny,
            Action::Question(3),
        ] {
            let id = custom_id(&action, token);
            assert!(id.len() <= 100);
            assert_eq!(parse_custom_id(&id), Some((action, token)));
        }
        assert_eq!(parse_custom_id("cc:maybe:tok"), None);
        assert_eq!(parse_custom_id("other:once:tok"), None);
        assert_eq!(parse_custom_id("cc:once:"), None);
        assert_eq!(
            parse_stop("cc:stop:1001:42"),
            Some((ConversationId(1001), MessageId(42)))
        );
        assert_eq!(parse_stop("cc:stop:1001"), None);
    }
}
