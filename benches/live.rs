//! Live sessions against a spawn per message.
//!
//! Run: `cargo build --release -p fake-claude && cargo bench --bench live` (options:
//! `-- --turns N`, default 400; `--limits`: every spend and message limit set, high enough
//! never to refuse, so each message pays for its check; `--scrape`: `/metrics` served and
//! scraped ten times a second while the turns run).
//!
//! 1. Per-turn time through the coordinator (message routed → reply delivered, the real
//!    registry, channel actors and SQLite store, the release stand-in), **cold** (`claude.
//!    live_sessions = false`: one `claude -p … -- PROMPT` process per message, as before) against
//!    **warm** (one live session per conversation, turns over stdin), at 1 and at 20
//!    conversations (each round sends one message to every conversation and waits for all
//!    replies; the first round, which starts the warm processes, is left out of both).
//! 2. The coordinator's own overhead on a warm turn: the same stand-in driven directly over its
//!    pipes (write a user line, read to its result), median against median.
//! 3. RSS per warm stand-in process, read from `/proc` while 20 sessions are warm.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Instant;

use actors::claude::args::live_args;
use actors::claude::{ClaudeRunner, RunRequest};
use actors::frontend::{Durability, FrontEnd, FrontendEvent, Origin, ReplySink, SubmitMessage};
use actors::ids::{MessageId, UserId};
use claude_coordinator::startup::Application;
use hdrhistogram::Histogram;

fn turns_arg() -> usize {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|a| a == "--turns")
        .and_then(|i| argv.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(400)
}

fn limits_arg() -> bool {
    std::env::args().any(|a| a == "--limits")
}

fn scrape_arg() -> bool {
    std::env::args().any(|a| a == "--scrape")
}

/// Scrapes `/metrics` at `addr` ten times a second until `stop` is set.
fn scraper(
    addr: std::net::SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        use std::io::Read as _;
        let mut scrapes = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            if let Ok(mut s) = std::net::TcpStream::connect(addr) {
                let _ =
                    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
                let mut body = Vec::new();
                if s.read_to_end(&mut body).is_ok() && body.starts_with(b"HTTP/1.1 200") {
                    scrapes += 1;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        scrapes
    })
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Per-turn latencies (µs) through the coordinator, and the stand-ins' RSS (KiB) while warm.
fn through_coordinator(
    conversations: usize,
    live: bool,
    turns: usize,
) -> (Histogram<u64>, Vec<u64>) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut settings = support::settings(dir.path(), conversations, conversations);
    settings.claude.live_sessions = live;
    settings.claude.max_warm_sessions = conversations;
    if scrape_arg() {
        settings.http.listen = "127.0.0.1:0".parse().ok();
    }
    if limits_arg() {
        let l = &mut settings.limits;
        l.user_daily_usd = 1e6;
        l.user_monthly_usd = 1e6;
        l.channel_daily_usd = 1e6;
        l.channel_monthly_usd = 1e6;
        l.user_messages_per_hour = 100_000;
        l.channel_messages_per_hour = 100_000;
    }
    let rounds = (turns / conversations).max(2) + 1;
    actix::System::new().block_on(async move {
        let app = Application::build(settings).await.expect("build");
        let (sink, mut events) = ReplySink::start();
        let registry = app.start_registry(FrontEnd::of(&sink));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let scraping = app
            .start_http(None, None)
            .await
            .expect("http")
            .map(|addr| scraper(addr, std::sync::Arc::clone(&stop)));
        let mut latencies = histogram();
        let mut rss = Vec::new();
        let mut id = 0;
        for round in 0..rounds {
            let mut sent: HashMap<MessageId, Instant> = HashMap::new();
            for profile in app.channels() {
                id += 1;
                sent.insert(MessageId(id), Instant::now());
                registry.do_send(SubmitMessage {
                    conversation: actors::ConversationRef::channel(std::sync::Arc::clone(profile)),
                    origin: Origin {
                        channel_id: profile.id,
                        message_id: MessageId(id),
                        author_id: UserId(1),
                    },
                    text: format!("message {round}"),
                    attachments: Vec::new(),
                    late: false,
                    inbox: Durability::New,
                    approver: true,
                    via: actors::via::Via::Chat,
                });
            }
            while !sent.is_empty() {
                match events.recv().await {
                    Some(FrontendEvent::Reply(r)) => {
                        assert!(!r.is_error, "{r:?}");
                        if let Some(t) = r.to.message_id().and_then(|m| sent.remove(&m)) {
                            if round > 0 {
                                let _ = latencies.record(t.elapsed().as_micros() as u64);
                            }
                        }
                    }
                    Some(_) => {}
                    None => panic!("the sink stopped"),
                }
            }
        }
        if live {
            rss = children_rss();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(scrapes) = scraping.and_then(|s| s.join().ok()) {
            assert!(scrapes > 0, "no scrape succeeded");
        }
        let _ = app.drain(&registry).await;
        (latencies, rss)
    })
}

/// RSS (KiB) of this process's children called `claude`.
fn children_rss() -> Vec<u64> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .map(str::to_string)
        };
        if field("PPid:").as_deref() == Some(me.as_str())
            && field("Name:").as_deref() == Some("claude")
        {
            if let Some(kib) = field("VmRSS:").and_then(|v| v.parse().ok()) {
                out.push(kib);
            }
        }
    }
    out
}

/// Per-turn latencies (µs) of the stand-in driven directly: the same arguments as a live
/// session, a user line written, its output read to the result.
fn direct(turns: usize) -> Histogram<u64> {
    let dir = tempfile::tempdir().expect("tmp");
    let settings = support::settings(dir.path(), 1, 1);
    let runner = ClaudeRunner::new(settings.claude.clone());
    let req = RunRequest {
        cwd: dir.path().join("proj"),
        project_dir: dir.path().join("proj"),
        ..RunRequest::default()
    };
    let mut child = Command::new(support::stand_in())
        .args(live_args(runner.config(), &req))
        .current_dir(&req.cwd)
        .env("HOME", dir.path().join("home"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut latencies = histogram();
    let mut line = String::new();
    for turn in 0..=turns {
        let started = Instant::now();
        writeln!(stdin, "{}", runner.user_line(&format!("message {turn}"))).expect("write");
        stdin.flush().expect("flush");
        loop {
            line.clear();
            assert!(
                stdout.read_line(&mut line).expect("read") > 0,
                "the stand-in ended"
            );
            if line.starts_with("{\"") && line.contains("\"type\":\"result\"") {
                break;
            }
        }
        if turn > 0 {
            let _ = latencies.record(started.elapsed().as_micros() as u64);
        }
    }
    drop(stdin);
    let _ = child.wait();
    latencies
}

fn main() {
    let turns = turns_arg();
    println!(
        "live sessions: {turns} turns per side (release stand-in){}",
        if limits_arg() {
            ", every limit set"
        } else {
            ""
        }
    );
    let mut warm_one = None;
    for conversations in [1, 20] {
        let (cold, _) = through_coordinator(conversations, false, turns);
        let (warm, rss) = through_coordinator(conversations, true, turns);
        println!(
            "{conversations:>2} conversation(s): cold median {:.2} ms (p95 {:.2}), warm median {:.2} ms (p95 {:.2}); cold / warm = {:.1}",
            ms(&cold, 0.5),
            ms(&cold, 0.95),
            ms(&warm, 0.5),
            ms(&warm, 0.95),
            ms(&cold, 0.5) / ms(&warm, 0.5)
        );
        if !rss.is_empty() {
            let total: u64 = rss.iter().sum();
            println!(
                "   {} warm stand-in processes: RSS {:.1} MiB each on average (max {:.1} MiB)",
                rss.len(),
                total as f64 / rss.len() as f64 / 1024.0,
                *rss.iter().max().unwrap_or(&0) as f64 / 1024.0
            );
        }
        if conversations == 1 {
            warm_one = Some(warm);
        }
    }
    let direct = direct(turns);
    if let Some(warm) = warm_one {
        let added_us = warm.value_at_quantile(0.5) as f64 - direct.value_at_quantile(0.5) as f64;
        println!(
            "warm turn, 1 conversation: coordinator median {:.3} ms, stand-in over its pipes median {:.3} ms: added {:.3} ms (goal <= 1 ms)",
            ms(&warm, 0.5),
            ms(&direct, 0.5),
            added_us / 1000.0
        );
    }
}
