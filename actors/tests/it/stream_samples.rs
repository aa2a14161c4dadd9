//! The stream-json parser against every recorded sample of the real CLI.

use std::path::PathBuf;

use actors::claude::stream_json::{parse_line, ResultLine, StreamEvent};

fn result(text: &str) -> ResultLine {
    match parse_line(text.trim()).expect("json") {
        StreamEvent::Result(r) => r,
        other => panic!("not a result: {other:?}"),
    }
}

fn sample(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/claude-cli")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn every_stream_sample_line_parses_and_ends_with_a_result() {
    for name in [
        "b_stream_json",
        "f_tool_stream",
        "v197_stream",
        "d_api500_stream_maxretries2",
    ] {
        let text = sample(&format!("{name}.stdout"));
        let events: Vec<StreamEvent> = text
            .lines()
            .map(|l| parse_line(l).unwrap_or_else(|e| panic!("{name}: {e}")))
            .collect();
        assert!(
            matches!(
                events.first(),
                Some(StreamEvent::Init {
                    session_id: Some(_),
                    ..
                })
            ),
            "{name}"
        );
        assert!(
            matches!(events.last(), Some(StreamEvent::Result(_))),
            "{name}"
        );
    }
}

#[test]
fn json_results_without_a_result_field_use_errors() {
    let r = result(&sample("g_max_turns_1_tool.stdout"));
    assert!(r.is_error);
    assert_eq!(r.result, None);
    assert_eq!(r.text(), "Reached maximum number of turns (1)");
    let r = result(&sample("d_slow_sigint_json.stdout"));
    assert_eq!(r.subtype, "error_during_execution");
    assert!(r.is_error);
}

#[test]
fn key_order_does_not_matter() {
    // 2.1.197 puts `type` first, 2.1.330 does not.
    for name in ["a_json", "v197_a_json"] {
        let r = result(&sample(&format!("{name}.stdout")));
        assert!(!r.is_error, "{name}");
        assert_eq!(r.text(), "echo: hello", "{name}");
        assert!(r.total_cost_usd.is_some_and(|c| c > 0.0), "{name}");
    }
}

#[test]
fn a_warm_process_names_the_reset_time_again_in_its_error_line() {
    // The second turn of u_oauth_limit_live has no rate_limit_event: the assistant line's
    // api_error_params carry it.
    let text = sample("u_oauth_limit_live.stdout");
    let limits: Vec<usize> = text
        .lines()
        .map(|l| parse_line(l).expect("json"))
        .enumerate()
        .filter(
            |(_, e)| matches!(e, StreamEvent::RateLimit(r) if r.resets_at == Some(1_796_183_334)),
        )
        .map(|(i, _)| i)
        .collect();
    let results: Vec<usize> = text
        .lines()
        .map(|l| parse_line(l).expect("json"))
        .enumerate()
        .filter(|(_, e)| matches!(e, StreamEvent::Result(r) if r.api_error.as_deref() == Some("usage_limit_reached")))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(results.len(), 2, "two turns");
    // Each turn has a rate limit with the reset time before its result.
    assert!(limits.iter().any(|&i| i < results[0]));
    assert!(limits.iter().any(|&i| i > results[0] && i < results[1]));
}

#[test]
fn an_image_the_api_could_not_process_is_reported_removed_and_the_turn_still_succeeds() {
    let text = sample("i_image_unprocessable_live.stdout");
    let events: Vec<StreamEvent> = text.lines().map(|l| parse_line(l).expect("json")).collect();
    let removed: Vec<&StreamEvent> = events
        .iter()
        .filter(|e| matches!(e, StreamEvent::MediaRemoved { .. }))
        .collect();
    assert_eq!(
        removed,
        [&StreamEvent::MediaRemoved {
            media: "image".into()
        }]
    );
    let results: Vec<&ResultLine> = events
        .iter()
        .filter_map(|e| match e {
            StreamEvent::Result(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(results.len(), 2, "two turns");
    assert!(results.iter().all(|r| !r.is_error));
}
