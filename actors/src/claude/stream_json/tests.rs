//! Parsing the CLI's recorded lines (`../shared/claude-cli/samples/` and our own fixtures).
use super::*;

#[test]
fn a_tool_use_block_becomes_a_summary() {
    let line = r#"{"type":"assistant","message":{"id":"m","content":[{"type":"tool_use","id":"t","name":"Edit","input":{"file_path":"src/lib.rs","old_string":"a"}}]}}"#;
    let StreamEvent::ToolUse(t) = parse_line(line).expect("valid json") else {
        panic!("not a tool use");
    };
    assert_eq!(t.summary(), "Edit: src/lib.rs");
}

#[test]
fn a_result_without_is_error_is_not_success() {
    let StreamEvent::Result(r) = parse_line(r#"{"type":"result","result":"x"}"#).expect("json")
    else {
        panic!("not a result");
    };
    assert!(r.is_error);
}

#[test]
fn escaped_strings_and_odd_errors_are_read() {
    let line = r#"{"type":"result","is_error":true,"session_id":"a\"b","errors":["x",{"code":1}]}"#;
    let StreamEvent::Result(r) = parse_line(line).expect("json") else {
        panic!("not a result");
    };
    assert_eq!(r.session_id.as_deref(), Some("a\"b"));
    assert_eq!(r.errors, ["x", "{\"code\":1}"]);
}

#[test]
fn a_rate_limit_event_is_read_whatever_the_shape_of_its_reset_time() {
    let read = |reset: &str| {
        let line = format!(
            r#"{{"type":"rate_limit_event","rate_limit_info":{{"status":"rejected","resetsAt":{reset},"rateLimitType":"five_hour"}},"session_id":"s"}}"#
        );
        match parse_line(line).expect("json") {
            StreamEvent::RateLimit(r) => r,
            other => panic!("not a rate limit: {other:?}"),
        }
    };
    for reset in [
        "1764650000",
        "1764650000.5",
        "\"1764650000\"",
        "1764650000000",
    ] {
        let r = read(reset);
        assert!(r.is_rejected());
        assert_eq!(r.resets_at, Some(1_764_650_000), "{reset}");
        assert_eq!(r.limit_type.as_deref(), Some("five_hour"));
    }
    assert_eq!(read("null").resets_at, None);
    assert_eq!(read("\"soon\"").resets_at, None);
    let StreamEvent::RateLimit(r) = parse_line(r#"{"type":"rate_limit_event"}"#).expect("json")
    else {
        panic!("not a rate limit");
    };
    assert!(!r.is_rejected());
}

#[test]
fn the_observed_partial_messages_todo_tools_and_compaction_are_read() {
    let fixture = |name: &str| {
        let path = format!(
            "{}/../tests/fixtures/claude-cli/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(path).expect("fixture")
    };
    let events = |name: &str| -> Vec<StreamEvent> {
        fixture(name)
            .lines()
            .map(|l| parse_line(l).expect("json"))
            .collect()
    };
    let partial = events("o_live_partial.stdout");
    let deltas: String = partial
        .iter()
        .filter_map(|e| match e {
            StreamEvent::TextDelta(t) => Some(t.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(deltas, "echo: hello DELTAS:5:300");
    assert!(partial.iter().any(|e| matches!(
        e,
        StreamEvent::Text { text, context_tokens: Some(1001) } if text == &deltas
    )));
    let Some(StreamEvent::Result(r)) = partial.last() else {
        panic!("no result");
    };
    assert_eq!(r.context_window, Some(1_000_000));
    let todo = events("o_todo_tools_live.stdout");
    let created = todo
        .iter()
        .find_map(|e| match e {
            StreamEvent::ToolUse(t) if t.name == "TaskCreate" => Some(t.clone()),
            _ => None,
        })
        .expect("a TaskCreate");
    assert_eq!(created.input["subject"], "Run the tests");
    let result = todo
        .iter()
        .find_map(|e| match e {
            StreamEvent::ToolResult {
                tool_use_id,
                result,
            } if *tool_use_id == created.id => Some(result.clone()),
            _ => None,
        })
        .expect("its result");
    assert_eq!(result["task"]["id"], "1");
    assert!(events("o_context_compact_live.stdout")
        .iter()
        .any(|e| matches!(
            e,
            StreamEvent::Compacted {
                pre_tokens: Some(1138),
                post_tokens: Some(2587)
            }
        )));
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(parse_line("this is not json").is_err());
    assert!(parse_line("[1,2]").is_err(), "not an object");
    assert_eq!(
        parse_line(r#"{"type":"stream_event"}"#).expect("json"),
        StreamEvent::Other
    );
}
