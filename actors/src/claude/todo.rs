//! Claude's to-do list, as the CLI keeps it, read from the stream.
//!
//! 2.1.330 in `-p` mode refuses `TodoWrite` ("disabled for this session") and, with
//! `CLAUDE_CODE_ENABLE_TODO_TOOLS=1` (which the service sets), offers `TaskCreate`, `TaskUpdate`,
//! `TaskList` and `TaskGet` behind `ToolSearch` (`o_todo_tools_live`): a task is created with a
//! `subject` and gets its id in the result (`tool_use_result.task.id`); an update names
//! `taskId` and a new `status` (`pending`, `in_progress`, `completed`, `deleted`) or
//! `subject`, and its result says whether it took; a list's result is the whole list. Older
//! CLIs send the whole list with every `TodoWrite` (`todos: [{content, status}]`). Both are
//! followed; the list lives as long as the conversation's session.

use std::collections::HashMap;

use serde_json::Value;

use super::stream_json::StreamEvent;
use crate::text::truncate_chars;

/// At most this many items are kept (a list longer than this is not a to-do list to show).
const MAX_ITEMS: usize = 50;
/// An item's text is cut to this many characters.
const MAX_TEXT: usize = 100;

/// Where an item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TodoStatus {
    /// Not started.
    Pending,
    /// Being worked on.
    InProgress,
    /// Done.
    Completed,
}

impl TodoStatus {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "in_progress" => Some(Self::InProgress),
            "completed" => Some(Self::Completed),
            _ => None,
        }
    }
}

/// One item of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TodoItem {
    /// What it is.
    pub text: String,
    /// Where it stands.
    pub status: TodoStatus,
}

/// A task tool call whose result has not come yet.
enum Asked {
    Create { subject: String },
    Update { task: String, input: Value },
    List,
}

/// The list, and the task tool calls waiting for their results.
#[derive(Default)]
pub struct TodoList {
    /// (task id, item), in the order they were made.
    items: Vec<(String, TodoItem)>,
    asked: HashMap<String, Asked>,
}

impl TodoList {
    /// The items, in order.
    pub fn items(&self) -> Vec<TodoItem> {
        self.items.iter().map(|(_, i)| i.clone()).collect()
    }

    /// Forgets everything (a new session has a new list).
    pub fn clear(&mut self) {
        self.items.clear();
        self.asked.clear();
    }

    /// Takes one event; answers whether the list changed.
    pub fn apply(&mut self, ev: &StreamEvent) -> bool {
        match ev {
            StreamEvent::ToolUse(t) => match t.name.as_str() {
                "TodoWrite" => self.replace(t.input["todos"].as_array(), "content", None),
                "TaskCreate" => {
                    let subject = text_of(&t.input["subject"]);
                    self.asked.insert(t.id.clone(), Asked::Create { subject });
                    false
                }
                "TaskUpdate" => {
                    let task = id_of(&t.input["taskId"]);
                    let input = t.input.clone();
                    self.asked
                        .insert(t.id.clone(), Asked::Update { task, input });
                    false
                }
                "TaskList" => {
                    self.asked.insert(t.id.clone(), Asked::List);
                    false
                }
                _ => false,
            },
            StreamEvent::ToolResult {
                tool_use_id,
                result,
            } => match self.asked.remove(tool_use_id) {
                Some(Asked::Create { subject }) => {
                    let id = id_of(&result["task"]["id"]);
                    if id.is_empty() || self.items.len() >= MAX_ITEMS {
                        return false;
                    }
                    let text = match result["task"]["subject"].as_str() {
                        Some(s) => truncate_chars(s, MAX_TEXT),
                        None => subject,
                    };
                    self.items.push((
                        id,
                        TodoItem {
                            text,
                            status: TodoStatus::Pending,
                        },
                    ));
                    true
                }
                // A list's result is the whole list.
                Some(Asked::List) => {
                    self.replace(result["tasks"].as_array(), "subject", Some("id"))
                }
                Some(Asked::Update { task, input }) => {
                    if result["success"] != Value::Bool(true) {
                        return false;
                    }
                    self.update(&task, &input)
                }
                None => false,
            },
            _ => false,
        }
    }

    /// The whole list from `todos` (each with `text_key` and `status`; ids from `id_key`, else
    /// by position).
    fn replace(
        &mut self,
        todos: Option<&Vec<Value>>,
        text_key: &str,
        id_key: Option<&str>,
    ) -> bool {
        let Some(todos) = todos else {
            return false;
        };
        let items: Vec<(String, TodoItem)> = todos
            .iter()
            .take(MAX_ITEMS)
            .enumerate()
            .filter_map(|(n, t)| {
                let status = TodoStatus::parse(t["status"].as_str().unwrap_or_default())?;
                let id = id_key.map_or_else(|| n.to_string(), |k| id_of(&t[k]));
                Some((
                    id,
                    TodoItem {
                        text: text_of(&t[text_key]),
                        status,
                    },
                ))
            })
            .collect();
        let changed = items != self.items;
        self.items = items;
        changed
    }

    /// An update that took: a new status (`deleted` removes it) or subject.
    fn update(&mut self, task: &str, input: &Value) -> bool {
        let Some(pos) = self.items.iter().position(|(id, _)| id == task) else {
            return false;
        };
        if input["status"] == "deleted" {
            self.items.remove(pos);
            return true;
        }
        let item = &mut self.items[pos].1;
        let before = item.clone();
        if let Some(status) = input["status"].as_str().and_then(TodoStatus::parse) {
            item.status = status;
        }
        if let Some(subject) = input["subject"].as_str() {
            item.text = truncate_chars(subject, MAX_TEXT);
        }
        *item != before
    }
}

/// A task id, given as a string or a number.
fn id_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => String::new(),
    }
}

fn text_of(v: &Value) -> String {
    truncate_chars(
        v.as_str()
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default(),
        MAX_TEXT,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::claude::stream_json::parse_line;

    fn fixture(name: &str) -> Vec<StreamEvent> {
        let path = format!(
            "{}/../tests/fixtures/claude-cli/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(path)
            .expect("fixture")
            .lines()
            .map(|l| parse_line(l).expect("json"))
            .collect()
    }

    #[test]
    fn the_observed_task_tools_build_the_list() {
        let mut list = TodoList::default();
        let mut seen = Vec::new();
        for ev in fixture("o_todo_tools_live.stdout") {
            if list.apply(&ev) {
                seen.push(list.items());
            }
        }
        let done = |text: &str, status| TodoItem {
            text: text.into(),
            status,
        };
        assert_eq!(
            seen.last().cloned().unwrap_or_default(),
            [
                done("Run the tests", TodoStatus::Completed),
                done("Fix the bug", TodoStatus::Pending)
            ]
        );
        // Created, created, in progress, completed; the final list call changed nothing.
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert_eq!(seen[2][0].status, TodoStatus::InProgress);
    }

    #[test]
    fn todo_write_replaces_the_list_and_a_deleted_task_goes() {
        let mut list = TodoList::default();
        let write = r#"{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t1","name":"TodoWrite","input":{"todos":[{"content":"a","status":"completed","activeForm":"A"},{"content":"b","status":"in_progress"}]}}]}}"#;
        assert!(list.apply(&parse_line(write).expect("json")));
        assert_eq!(list.items().len(), 2);
        assert!(
            !list.apply(&parse_line(write).expect("json")),
            "the same list"
        );
        list.items[0].0 = "7".into();
        let update = r#"{"type":"assistant","message":{"content":[{"type":"tool_use","id":"t2","name":"TaskUpdate","input":{"taskId":"7","status":"deleted"}}]}}"#;
        let result = r#"{"type":"user","message":{"content":[{"type":"tool_result","tool_use_id":"t2"}]},"tool_use_result":{"success":true,"taskId":"7"}}"#;
        assert!(!list.apply(&parse_line(update).expect("json")));
        assert!(list.apply(&parse_line(result).expect("json")));
        assert_eq!(list.items()[0].text, "b");
    }
}
