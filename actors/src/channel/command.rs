//! What the coordinator itself answers, rather than Claude: `!status`, `!cancel`, `!reset`,
//! `!rules`, `!retry`, `!help` (with the configured prefix).

use std::path::Path;

/// What the coordinator itself answers, rather than Claude.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Command {
    Status,
    Cancel,
    Reset,
    Rules,
    RulesClear,
    Retry,
    Help,
}

impl Command {
    pub(super) fn parse(text: &str, prefix: &str) -> Option<Self> {
        if prefix.is_empty() {
            return None;
        }
        match text
            .trim()
            .strip_prefix(prefix)?
            .to_ascii_lowercase()
            .as_str()
        {
            "status" => Some(Self::Status),
            "cancel" | "stop" => Some(Self::Cancel),
            "reset" | "new" => Some(Self::Reset),
            "rules" => Some(Self::Rules),
            "rules clear" => Some(Self::RulesClear),
            "retry" => Some(Self::Retry),
            "help" => Some(Self::Help),
            _ => None,
        }
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
         interrupted).",
        project_dir.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_need_the_prefix_and_a_known_name() {
        assert_eq!(Command::parse("!status", "!"), Some(Command::Status));
        assert_eq!(Command::parse("  !Cancel ", "!"), Some(Command::Cancel));
        assert_eq!(Command::parse("!important: fix the build", "!"), None);
        assert_eq!(Command::parse("status", "!"), None);
        assert_eq!(Command::parse("!status", ""), None);
        assert_eq!(Command::parse("!rules", "!"), Some(Command::Rules));
        assert_eq!(Command::parse("!retry", "!"), Some(Command::Retry));
        assert_eq!(
            Command::parse("!rules clear", "!"),
            Some(Command::RulesClear)
        );
    }
}
