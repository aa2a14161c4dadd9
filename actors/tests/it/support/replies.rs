//! Generated replies that stress the splitter (`actors::chunking`): long lines, fences with and
//! without info strings (some longer than a chunk), fences at and around every cut, backtick
//! runs, multi-byte and UTF-16 surrogate text, CRLF. Shared by the property test and the long
//! run in `benches/chunking.rs`.

use proptest::prelude::*;

/// One line of a reply, with its line ending (or none).
pub fn line() -> impl Strategy<Value = String> {
    let ending = prop_oneof![Just("\n"), Just("\r\n"), Just("")];
    let body = prop_oneof![
        3 => "[a-z ]{0,40}",
        1 => Just("```".to_string()),
        1 => "```[a-z]{0,8}",
        1 => "[ \t]{0,3}```[a-z+#-]{0,12}",
        1 => (0usize..2600).prop_map(|n| format!("```{}", "a".repeat(n))),
        1 => (0usize..3000).prop_map(|n| "x".repeat(n)),
        1 => (0usize..1200).prop_map(|n| "word ".repeat(n)),
        1 => (0usize..1500).prop_map(|n| "ü✓😀".repeat(n)),
        1 => (0usize..800).prop_map(|n| " ```".repeat(n)),
        1 => (0usize..3000).prop_map(|n| "`".repeat(n)),
        1 => "[😀ü ]{0,30}",
        1 => "\\PC{0,20}",
    ];
    (body, ending).prop_map(|(b, e)| b + e)
}

/// A reply: up to 40 such lines.
pub fn reply() -> impl Strategy<Value = String> {
    prop::collection::vec(line(), 0..40).prop_map(|lines| lines.concat())
}

/// A message limit: Discord's, or any other the splitter accepts.
pub fn limit() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(actors::discord::chunking::DISCORD_LIMIT),
        actors::discord::chunking::MIN_LIMIT..2100
    ]
}
