//! What a run's progress message says: while it runs, Claude's to-do list, the last tools it
//! used, and the tail of the text it is writing (with `stream`); when it is over, a summary —
//! steps, time, cost — with the list and the steps as they ended (the reply holds the text). Never longer than one Discord message.

use std::fmt::Write as _;
use std::time::Duration;

use super::chunking::DISCORD_LIMIT;
use crate::claude::todo::{TodoItem, TodoStatus};
use crate::text::truncate_chars;

/// Tool steps shown (the newest); the earlier ones are counted.
const SHOWN_STEPS: usize = 5;
/// To-do items shown (the list's first ones); the rest are counted.
const SHOWN_TODO: usize = 12;
/// The most of the streamed text shown (its tail).
const SHOWN_TEXT: usize = 1_200;
/// The most of the streamed text kept (what may be shown, and a little more).
const KEPT_TEXT: usize = 8 * 1024;

/// How a run ended, for its summary.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// What it cost.
    pub cost_usd: f64,
    /// Its answer reports a failure.
    pub failed: bool,
}

/// What the progress message shows of one run.
#[derive(Debug, Default)]
pub struct ProgressView {
    steps: Vec<String>,
    todo: Vec<TodoItem>,
    /// The tail of the text written so far.
    text: String,
}

impl ProgressView {
    /// A tool used (or an API retry).
    pub fn step(&mut self, step: String) {
        self.steps.push(step);
    }

    /// More text, as Claude writes it.
    pub fn text(&mut self, more: &str) {
        self.text.push_str(more);
        if self.text.len() > KEPT_TEXT {
            let mut cut = self.text.len() - KEPT_TEXT / 2;
            while !self.text.is_char_boundary(cut) {
                cut += 1;
            }
            self.text.drain(..cut);
        }
    }

    /// The to-do list now.
    pub fn todo(&mut self, items: Vec<TodoItem>) {
        self.todo = items;
    }

    /// Whether text has streamed (edits then come at the streaming pace).
    pub fn is_streaming(&self) -> bool {
        !self.text.is_empty()
    }

    /// The message: working for `elapsed`, or `done`.
    pub fn render(&self, elapsed: Duration, done: Option<Summary>) -> String {
        let secs = elapsed.as_secs();
        let mut out = match done {
            None => format!("Working… ({secs} s)"),
            Some(s) => {
                let how = if s.failed {
                    " — ended with an error"
                } else {
                    ""
                };
                format!(
                    "Done — {} step(s) in {secs} s · ${:.4}{how}",
                    self.steps.len(),
                    s.cost_usd
                )
            }
        };
        self.render_todo(&mut out);
        self.render_steps(&mut out);
        if done.is_none() {
            self.render_text(&mut out);
        }
        truncate_chars(&out, DISCORD_LIMIT)
    }

    fn render_todo(&self, out: &mut String) {
        if self.todo.is_empty() {
            return;
        }
        out.push_str("\n**To do**");
        for item in self.todo.iter().take(SHOWN_TODO) {
            let mark = match item.status {
                TodoStatus::Completed => "✅",
                TodoStatus::InProgress => "🔄",
                TodoStatus::Pending => "⬜",
            };
            let _ = write!(out, "\n{mark} {}", item.text.replace('`', "'"));
        }
        let more = self.todo.len().saturating_sub(SHOWN_TODO);
        if more > 0 {
            let _ = write!(out, "\n… {more} more");
        }
    }

    fn render_steps(&self, out: &mut String) {
        let skipped = self.steps.len().saturating_sub(SHOWN_STEPS);
        if skipped > 0 {
            let _ = write!(out, "\n… {skipped} earlier step(s)");
        }
        for s in &self.steps[skipped..] {
            let _ = write!(out, "\n• `{}`", s.replace('`', "'"));
        }
    }

    /// The tail of the text, within what is left of the message; a code fence it leaves open
    /// is closed, so the tail cannot swallow what follows.
    fn render_text(&self, out: &mut String) {
        let room = DISCORD_LIMIT
            .saturating_sub(out.chars().count() + 8)
            .min(SHOWN_TEXT);
        if self.text.trim().is_empty() || room < 50 {
            return;
        }
        let chars = self.text.chars().count();
        let tail: String = self.text.chars().skip(chars.saturating_sub(room)).collect();
        out.push_str("\n\n");
        if chars > room {
            out.push('…');
        }
        out.push_str(tail.trim_start_matches('\n'));
        if tail.matches("```").count() % 2 == 1 {
            out.push_str("\n```");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_shows_the_last_steps_the_list_and_the_text_tail_within_the_limit() {
        let mut v = ProgressView::default();
        for i in 0..10 {
            v.step(format!("Bash: step {i}"));
        }
        let t = v.render(Duration::from_secs(3), None);
        assert!(t.starts_with("Working… (3 s)\n… 5 earlier step(s)"), "{t}");
        assert!(t.contains("`Bash: step 9`") && !t.contains("step 4`"));
        v.todo(vec![TodoItem {
            text: "Run the tests".into(),
            status: TodoStatus::InProgress,
        }]);
        v.text(&"word ".repeat(3000));
        v.text("```rust\nfn main() {");
        let t = v.render(Duration::from_secs(4), None);
        assert!(t.chars().count() <= DISCORD_LIMIT);
        assert!(t.contains("🔄 Run the tests"));
        assert!(
            t.ends_with("fn main() {\n```"),
            "the open fence is closed: {t}"
        );
        let done = v.render(
            Duration::from_secs(9),
            Some(Summary {
                cost_usd: 0.05,
                failed: false,
            }),
        );
        assert!(
            done.starts_with("Done — 10 step(s) in 9 s · $0.0500"),
            "{done}"
        );
        assert!(!done.contains("word"), "the reply holds the text");
    }
}
