//! How a prompt reached its conversation when it was not a chat message: a schedule's run or a
//! prompt over HTTP. Such a prompt has a message id of the service's own
//! ([`crate::ids::MessageId::local`]), nothing to reply to, so its answer says where it came
//! from and what it asked.

use serde::{Deserialize, Serialize};

use crate::ids::ScheduleId;
use crate::text::truncate_chars;

/// Where a prompt came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Via {
    /// A message in the chat (or the console).
    #[default]
    Chat,
    /// A schedule's run.
    Schedule {
        /// The schedule.
        id: ScheduleId,
        /// Its cron expression, as given.
        cron: String,
    },
    /// `POST /v1/conversations/{name}/messages`.
    Http {
        /// The `author` the caller named.
        author: String,
    },
}

/// How much of the prompt the heading of its answer quotes.
const QUOTED: usize = 300;

impl Via {
    /// The line the answer starts with (none for a chat message, which the answer replies to).
    pub fn heading(&self, prompt: &str) -> Option<String> {
        let quoted = quote(prompt);
        match self {
            Self::Chat => None,
            Self::Schedule { id, cron } => Some(format!(
                "⏰ Scheduled prompt #{id} (`{}`):\n{quoted}",
                cron.replace('`', "'")
            )),
            Self::Http { author } => Some(format!("📨 From `{author}` over HTTP:\n{quoted}")),
        }
    }

    /// The store's form: `NULL` for a chat message, else JSON.
    pub fn to_column(&self) -> Option<String> {
        match self {
            Self::Chat => None,
            other => serde_json::to_string(other).ok(),
        }
    }

    /// From the store's form (a row someone edited into nonsense reads as a chat message).
    pub fn from_column(value: Option<&str>) -> Self {
        value
            .and_then(|v| serde_json::from_str(v).ok())
            .unwrap_or_default()
    }
}

/// `prompt` as a block quote, cut short (its backticks made plain: a fence opened in the
/// quote would swallow the answer).
fn quote(prompt: &str) -> String {
    truncate_chars(prompt.trim(), QUOTED)
        .replace('`', "'")
        .lines()
        .map(|l| format!("> {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_form_round_trips_and_a_chat_message_has_none() {
        for via in [
            Via::Chat,
            Via::Schedule {
                id: ScheduleId(3),
                cron: "0 9 * * 1-5".into(),
            },
            Via::Http {
                author: "ci".into(),
            },
        ] {
            assert_eq!(Via::from_column(via.to_column().as_deref()), via);
        }
        assert_eq!(Via::Chat.to_column(), None);
        assert_eq!(Via::from_column(Some("{not json")), Via::Chat);
    }

    #[test]
    fn the_heading_names_the_source_and_quotes_every_line_of_the_prompt() {
        let h = Via::Http {
            author: "ci".into(),
        }
        .heading("build failed\non main")
        .expect("a heading");
        assert_eq!(h, "📨 From `ci` over HTTP:\n> build failed\n> on main");
        let s = Via::Schedule {
            id: ScheduleId(2),
            cron: "0 9 * * *".into(),
        }
        .heading("x".repeat(1000).as_str())
        .expect("a heading");
        assert!(s.starts_with("⏰ Scheduled prompt #2 (`0 9 * * *`):\n> xxx"));
        assert!(s.chars().count() < 400, "quoted short: {}", s.len());
        assert_eq!(Via::Chat.heading("hi"), None);
    }
}
