//! What a run's stream shows the front end while it runs ([`ShowProgress`]): tool use and API
//! retries as steps, the text as Claude writes it (with the channel's `stream`), and Claude's
//! to-do list each time it changes. The to-do list is the conversation's: it lives as long as
//! its session, across turns.

use std::sync::{Arc, Mutex, PoisonError};

use actix::Recipient;

use crate::claude::stream_json::StreamEvent;
use crate::claude::todo::TodoList;
use crate::frontend::{Origin, ProgressStep, ShowProgress};
use crate::ids::ConversationId;

/// The tools that keep the to-do list or find other tools: shown as the list, not as steps.
const QUIET_TOOLS: [&str; 6] = [
    "TodoWrite",
    "TaskCreate",
    "TaskUpdate",
    "TaskList",
    "TaskGet",
    "ToolSearch",
];

/// Passes a run's events on to the front end's progress display.
#[derive(Clone)]
pub(super) struct Relay {
    pub(super) progress: Recipient<ShowProgress>,
    pub(super) conversation_id: ConversationId,
    pub(super) origin: Origin,
    /// Pass the text on as it is written.
    pub(super) stream: bool,
    pub(super) todo: Arc<Mutex<TodoList>>,
}

impl Relay {
    /// Takes one event (on whatever thread reads the run's output).
    pub(super) fn relay(&self, event: &StreamEvent) {
        // A run with no message to show progress on (a command's).
        if self.origin.message_id.get() == 0 {
            return;
        }
        let todo = {
            let mut list = self.todo.lock().unwrap_or_else(PoisonError::into_inner);
            list.apply(event).then(|| list.items())
        };
        if let Some(items) = todo {
            self.send(ProgressStep::Todo(items));
        }
        if let Some(step) = self.step(event) {
            self.send(step);
        }
    }

    fn step(&self, event: &StreamEvent) -> Option<ProgressStep> {
        match event {
            StreamEvent::TextDelta(text) if self.stream => Some(ProgressStep::Text(text.clone())),
            StreamEvent::ToolUse(t) if !QUIET_TOOLS.contains(&t.name.as_str()) => {
                Some(ProgressStep::Tool(t.summary()))
            }
            StreamEvent::Retry {
                attempt,
                error_status,
                ..
            } => Some(ProgressStep::Retrying {
                attempt: *attempt,
                status: *error_status,
            }),
            _ => None,
        }
    }

    fn send(&self, step: ProgressStep) {
        self.progress.do_send(ShowProgress {
            conversation_id: self.conversation_id,
            origin: self.origin,
            step,
        });
    }
}
