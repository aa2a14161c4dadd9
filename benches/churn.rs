//! Warm-process churn: how often a message has to start a new CLI process when more
//! conversations are active than `claude.max_warm_sessions` allows warm.
//!
//! Run: `cargo build --release -p fake-claude && cargo bench --bench churn` (options:
//! `-- --messages N`, default 1300; `--conversations N`, default 8).
//!
//! Messages go one at a time (each waits for its reply) to conversations picked at random
//! (a fixed seed), through the real registry, channel actors and SQLite store with the release
//! stand-in. For the old default cap (4) and the cap derived from this machine's memory, it
//! counts the processes started per message and the per-message time. With the real CLI a
//! start costs 400–490 ms against ~68 ms for a warm turn (measured for issue 17): the last
//! column prices the churn at those figures.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Instant;

use actors::claude::WarmCap;
use actors::frontend::{Durability, FrontEnd, FrontendEvent, Origin, ReplySink, SubmitMessage};
use actors::ids::{MessageId, UserId};
use claude_coordinator::startup::Application;

fn arg(name: &str, default: usize) -> usize {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|a| a == name)
        .and_then(|i| argv.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A small deterministic generator (xorshift), so each run picks the same conversations.
struct Picks(u64);

impl Picks {
    fn next(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// (processes started, median ms per message).
fn run(conversations: usize, cap: usize, messages: usize) -> (usize, f64) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut settings = support::settings(dir.path(), conversations, conversations);
    settings.claude.max_warm_sessions = cap;
    let log = dir.path().join("claude.log");
    settings
        .claude
        .env
        .insert("FAKE_CLAUDE_LOG".into(), log.display().to_string());
    let mut picks = Picks(0x9e37_79b9_7f4a_7c15);
    let mut times = Vec::with_capacity(messages);
    actix::System::new().block_on(async {
        let app = Application::build(settings).await.expect("build");
        let (sink, mut events) = ReplySink::start();
        let registry = app.start_registry(FrontEnd::of(&sink));
        let channels: Vec<_> = app.channels().to_vec();
        for id in 1..=messages as u64 {
            let profile = &channels[picks.next(channels.len())];
            let started = Instant::now();
            let id = MessageId(id);
            registry.do_send(SubmitMessage {
                conversation: actors::ConversationRef::channel(Arc::clone(profile)),
                origin: Origin {
                    channel_id: profile.id,
                    message_id: id,
                    author_id: UserId(1),
                },
                text: format!("message {id}"),
                attachments: Vec::new(),
                late: false,
                inbox: Durability::New,
                approver: true,
                via: actors::via::Via::Chat,
            });
            loop {
                match events.recv().await {
                    Some(FrontendEvent::Reply(r)) if r.to.message_id() == Some(id) => break,
                    Some(_) => {}
                    None => panic!("the sink stopped"),
                }
            }
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        let _ = app.drain(&registry).await;
    });
    let starts = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("\"event\":\"start\""))
        .count();
    times.sort_by(f64::total_cmp);
    (starts, times[times.len() / 2])
}

fn main() {
    let messages = arg("--messages", 1300);
    let conversations = arg("--conversations", 8);
    let derived = actors::claude::machine_memory().map_or(
        WarmCap {
            max: 4,
            memory: None,
        },
        WarmCap::for_memory,
    );
    println!("{messages} messages, one at a time, to {conversations} conversations at random");
    println!("derived cap on this machine: {derived}");
    let mut seen = HashSet::new();
    for (label, cap) in [("old default", 4), ("derived", derived.max)] {
        if !seen.insert(cap) {
            continue;
        }
        let (starts, median) = run(conversations, cap, messages);
        let per = starts as f64 / messages as f64;
        // Real-CLI pricing: 68 ms a warm turn, 400-490 ms a turn that starts a process.
        let real = |cold: f64| 68.0 + per * (cold - 68.0);
        println!(
            "cap {cap:>3} ({label:<11}): {starts:>5} processes started, {per:.3} per message; stand-in median {median:.2} ms/message; with the real CLI ~{:.0}-{:.0} ms/message",
            real(400.0),
            real(490.0)
        );
    }
}
