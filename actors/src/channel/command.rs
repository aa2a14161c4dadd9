//! What the coordinator itself answers, rather than Claude: `!status`, `!cancel`, `!reset`,
//! `!help` (with the configured prefix).

use std::path::Path;

/// What the coordinator itself answers, rather than Claude.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Command {
    Status,
    Cancel,
    Reset,
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
            "help" => Some(Self::Help),
            _ => None,
        }
    }
}

/// The answer to `help`.
pub(super) fn help(prefix: &str, project_dir: &Path) -> String {
    format!(
        "Messages here go to Claude Code, one at a time (working in `{}`). \
         Commands: `{prefix}status` (what is happening), `{prefix}cancel` (stop the current run), \
         `{prefix}reset` (start a new conversation).",
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
    }
}
