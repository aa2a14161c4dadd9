//! The coordinator's own cost per message, and the memory of idle channel actors.
//!
//! Run: `cargo build --release -p fake-claude && cargo bench --bench throughput`
//! (options: `-- --messages N --rounds R --idle N`).
//!
//! 1. Throughput: N messages through the console path (the same `console::run` the binary
//!    uses, with the real registry, channel actors, runner and SQLite store) to a stand-in
//!    `claude` that answers at once, against the floor: spawning that same stand-in N times
//!    directly with the same arguments and the same concurrency. Reported as messages per
//!    second and as the ratio coordinator / floor, at 1 channel and at 100 channels. Two
//!    references sit between them: the floor plus the cheapest SQLite write per message (on the
//!    spawning thread), and the floor plus one write per message through the real
//!    `SessionStoreActor`; they show what persisting each message costs by itself.
//! 2. Memory: RSS growth after 10,000 channel actors have been started and left idle.

mod support;

use std::fmt::Write as _;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::conversation::ConversationRef;
use actors::cost::CostUpdate;
use actors::frontend::{Durability, FrontEnd, FrontendEvent, Origin, ReplySink, SubmitMessage};
use actors::ids::{ChannelId, ConversationId};
use actors::metrics::rss_kib;
use actors::registry::CountChannels;
use actors::store::{open_pool, GetStoreStats, RecordRun, SessionStoreActor};
use claude_coordinator::console::{self, ConsoleOptions};
use claude_coordinator::settings::Settings;
use claude_coordinator::startup::Application;

struct Args {
    messages: usize,
    rounds: usize,
    idle: usize,
    /// `floor`, `floor-sqlite`, `floor-store` or `coordinator`: run only that side, and print
    /// its own threads' CPU and context switches per message (for profiling one of them).
    only: Option<String>,
    channels: Option<usize>,
}

fn args() -> Args {
    let mut a = Args {
        messages: 2000,
        rounds: 3,
        idle: 10_000,
        only: None,
        channels: None,
    };
    let argv: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        argv.iter()
            .position(|x| x == name)
            .and_then(|i| argv.get(i + 1))
            .and_then(|v| v.parse().ok())
    };
    a.messages = value("--messages").unwrap_or(a.messages);
    a.rounds = value("--rounds").unwrap_or(a.rounds);
    a.idle = value("--idle").unwrap_or(a.idle);
    a.channels = value("--channels");
    a.only = argv
        .iter()
        .position(|x| x == "--only")
        .and_then(|i| argv.get(i + 1))
        .cloned();
    a
}

/// A deployment with `channels` channels, one `claude -p` process per message (the path this
/// benchmark measures).
fn settings(dir: &Path, channels: usize, cap: usize) -> Settings {
    let mut s = support::settings(dir, channels, cap);
    s.claude.live_sessions = false;
    s
}

/// Sends `messages` messages, spread evenly over the channels, each channel through its own
/// console; returns messages per second.
fn coordinator(messages: usize, channels: usize, cap: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tmp");
    let settings = settings(dir.path(), channels, cap);
    let system = actix::System::new();
    let elapsed = system.block_on(async move {
        let app = Rc::new(Application::build(settings).await.expect("build"));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for c in 0..channels {
            let app = Rc::clone(&app);
            let mut lines = String::new();
            for i in 0..messages / channels {
                let _ = writeln!(lines, "message {i} for channel {c}");
            }
            tasks.push(actix_rt::spawn(async move {
                let opts = ConsoleOptions {
                    channel: format!("c{c}"),
                    json: true,
                    approve: claude_coordinator::cli::Approve::None,
                };
                let input = std::io::Cursor::new(lines.into_bytes());
                console::run(
                    &app,
                    &opts,
                    input,
                    tokio::io::sink(),
                    tokio::io::sink(),
                    std::future::pending(),
                )
                .await
                .expect("console")
            }));
        }
        let mut answered = 0;
        for t in tasks {
            let s = t.await.expect("task");
            assert_eq!(s.errors, 0, "replies reported errors");
            answered += s.replies;
        }
        assert_eq!(answered, messages / channels * channels);
        started.elapsed()
    });
    (messages / channels * channels) as f64 / elapsed.as_secs_f64()
}

/// The floor: the same stand-in, the same arguments (resuming one session per channel), the
/// same concurrency, spawned directly; returns messages per second.
fn floor(messages: usize, channels: usize, cap: usize) -> f64 {
    floor_with(messages, channels, cap, |_, _| {})
}

/// A reference between the two: the floor, plus each run recorded through the real
/// `SessionStoreActor` (the one write per message the design asks for, sent from the
/// spawning thread without waiting); the time includes the last write.
fn floor_with_store(messages: usize, channels: usize, cap: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tmp");
    let settings = settings(dir.path(), 1, cap);
    actix::System::new().block_on(async move {
        let config = settings.store.to_config();
        let pool = actix_rt::task::spawn_blocking(move || open_pool(&config))
            .await
            .expect("open thread")
            .expect("open store");
        let store = SessionStoreActor::start(pool, settings.store.pool_size as usize);
        let project_dir = dir.path().join("proj");
        let sender = store.clone();
        let (started, total) = actix_rt::task::spawn_blocking(move || {
            let started = Instant::now();
            floor_with(messages, channels, cap, |c, session| {
                sender.do_send(RecordRun {
                    id: ConversationId(10_000 + c as u64),
                    name: format!("c{c}"),
                    profile_id: ChannelId(10_000 + c as u64),
                    project_dir: project_dir.clone(),
                    model: None,
                    session_id: Some(session.to_string()),
                    cost: CostUpdate {
                        run_usd: 0.01,
                        session_usd: 0.01,
                    },
                    error: None,
                    reply: None,
                    context: None,
                    author: None,
                });
            });
            (started, messages / channels * channels)
        })
        .await
        .expect("floor thread");
        loop {
            let stats = store.send(GetStoreStats).await.expect("store");
            assert_eq!(stats.errors, 0, "store writes failed");
            if stats.operations >= total as u64 {
                break;
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        total as f64 / started.elapsed().as_secs_f64()
    })
}

/// A reference: the floor, plus the cheapest write that records a message: one upsert in its
/// own transaction, on the spawning thread, in the store's database (WAL, same pragmas); no
/// actor, no other thread. What persisting each message costs by itself.
fn floor_with_sqlite(messages: usize, channels: usize, cap: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tmp");
    let settings = settings(dir.path(), 1, cap);
    let pool = open_pool(&settings.store.to_config()).expect("open store");
    // One writer at a time, as in the store (no sleeping in SQLite's busy handler).
    let writer = std::sync::Mutex::new(());
    floor_with(messages, channels, cap, |c, session| {
        let conn = pool.get().expect("connection");
        let _one = writer.lock().expect("lock");
        conn.prepare_cached(
            "INSERT INTO conversations (id, name, session_id, project_dir, created_at_ms, updated_at_ms) \
             VALUES (?1, ?2, ?3, '/', 0, 0) ON CONFLICT (id) DO UPDATE \
             SET session_id = excluded.session_id, message_count = message_count + 1",
        )
        .and_then(|mut st| st.execute(rusqlite::params![10_000 + c as i64, format!("c{c}"), session]))
        .expect("upsert");
    })
}

/// The floor's loop; `after_run(channel, session_id)` is called after each run.
fn floor_with(
    messages: usize,
    channels: usize,
    cap: usize,
    after_run: impl Fn(usize, &str) + Sync,
) -> f64 {
    let dir = tempfile::tempdir().expect("tmp");
    let home = dir.path().join("home");
    let proj = dir.path().join("proj");
    std::fs::create_dir_all(&home).expect("mkdir");
    std::fs::create_dir_all(&proj).expect("mkdir");
    let bin = support::stand_in();
    let run = |resume: Option<&str>, prompt: &str| -> String {
        let mut cmd = std::process::Command::new(&bin);
        cmd.args(["-p", "--output-format", "stream-json", "--verbose"]);
        if let Some(id) = resume {
            cmd.args(["--resume", id]);
        }
        cmd.args(["--permission-mode", "default", "--", prompt])
            .current_dir(&proj)
            .env("HOME", &home)
            .env_remove("CLAUDECODE")
            .stdin(std::process::Stdio::null());
        let out = cmd.output().expect("spawn stand-in");
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        let last = text.lines().last().expect("result line");
        let v: serde_json::Value = serde_json::from_str(last).expect("json");
        v["session_id"].as_str().expect("session").to_string()
    };
    let per_channel = messages / channels;
    let sessions: Vec<std::sync::Mutex<Option<String>>> =
        (0..channels).map(|_| std::sync::Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let total = per_channel * channels;
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..cap.min(channels) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                // Round-robin over channels; a channel's session lock keeps its runs serial,
                // as the coordinator does.
                let c = i % channels;
                let mut session = sessions[c].lock().expect("lock");
                let id = run(session.as_deref(), &format!("message {i} for channel {c}"));
                after_run(c, &id);
                *session = Some(id);
            });
        }
    });
    total as f64 / started.elapsed().as_secs_f64()
}

/// What this process's own threads (not its children) have used so far.
#[derive(Clone, Copy)]
struct Usage {
    cpu: Duration,
    context_switches: i64,
    page_faults: i64,
}

fn self_usage() -> Usage {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let t =
        |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
    Usage {
        cpu: t(u.user_time()) + t(u.system_time()),
        context_switches: u.voluntary_context_switches() + u.involuntary_context_switches(),
        page_faults: u.minor_page_faults() + u.major_page_faults(),
    }
}

/// RSS growth (KiB) after `n` channel actors were started (each answered `!status`, which
/// loads its row from the store) and left idle.
fn idle_actors(n: usize) -> (u64, u64) {
    let dir = tempfile::tempdir().expect("tmp");
    let settings = settings(dir.path(), 1, 4);
    actix::System::new().block_on(async move {
        let app = Application::build(settings).await.expect("build");
        let (sink, mut events) = ReplySink::start();
        let registry = app.start_registry(FrontEnd::of(&sink));
        let profile = Arc::clone(&app.channels()[0]);
        // Warm up allocator and store with a first batch that is not counted.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = rss_kib();
        for i in 0..n as u64 {
            registry.do_send(SubmitMessage {
                conversation: ConversationRef {
                    id: ConversationId(1_000_000 + i),
                    name: format!("idle-{i}"),
                    profile: Arc::clone(&profile),
                },
                origin: Origin::default(),
                text: "!status".into(),
                attachments: Vec::new(),
                late: false,
                inbox: Durability::New,
                approver: true,
                via: actors::via::Via::Chat,
            });
        }
        let mut replies = 0;
        while replies < n {
            match events.recv().await {
                Some(FrontendEvent::Reply(_)) => replies += 1,
                Some(FrontendEvent::Progress(_) | FrontendEvent::Approval(_)) => {}
                None => panic!("the sink stopped"),
            }
        }
        // Let the actors' start-up store loads finish.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let live = registry.send(CountChannels).await.expect("registry");
        assert_eq!(live, n);
        (before, rss_kib())
    })
}

/// What one measurement runs.
#[derive(Clone, Copy)]
enum Side {
    Floor,
    FloorSqlite,
    FloorStore,
    Coordinator,
}

impl Side {
    const ALL: [Side; 4] = [
        Side::Floor,
        Side::FloorSqlite,
        Side::FloorStore,
        Side::Coordinator,
    ];

    fn name(self) -> &'static str {
        match self {
            Side::Floor => "floor",
            Side::FloorSqlite => "floor-sqlite",
            Side::FloorStore => "floor-store",
            Side::Coordinator => "coordinator",
        }
    }

    /// Messages per second.
    fn run(self, messages: usize, channels: usize, cap: usize) -> f64 {
        match self {
            Side::Floor => floor(messages, channels, cap),
            Side::FloorSqlite => floor_with_sqlite(messages, channels, cap),
            Side::FloorStore => floor_with_store(messages, channels, cap),
            Side::Coordinator => coordinator(messages, channels, cap),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let a = args();
    let cap = 4;
    if let Some(only) = &a.only {
        let channels = a.channels.unwrap_or(1);
        let before = self_usage();
        let Some(side) = Side::ALL.into_iter().find(|s| s.name() == only) else {
            eprintln!("--only takes one of: floor, floor-sqlite, floor-store, coordinator");
            std::process::exit(2);
        };
        let rate = side.run(a.messages, channels, cap);
        let after = self_usage();
        let n = a.messages as f64;
        println!(
            "{only} at {channels} channel(s): {rate:.1} msg/s; per message, own threads: CPU {:.0} µs, \
             {:.1} context switches, {:.1} page faults",
            after.cpu.saturating_sub(before.cpu).as_micros() as f64 / n,
            (after.context_switches - before.context_switches) as f64 / n,
            (after.page_faults - before.page_faults) as f64 / n,
        );
        return;
    }
    println!(
        "machine: {} cores; stand-in: {}",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        support::stand_in().display()
    );
    println!(
        "messages per case: {}; rounds: {}; max_concurrent_runs: {cap}",
        a.messages, a.rounds
    );
    println!();
    println!(
        "| channels | floor msg/s (median) | coordinator msg/s (median) | ratio (median of rounds) \
         | reference: floor + SQLite write | reference: floor + store actor write |"
    );
    println!("|---:|---:|---:|---:|---:|---:|");
    for channels in [1, 100] {
        // Per side, the throughput of each round.
        let mut rates: Vec<Vec<f64>> = vec![Vec::new(); Side::ALL.len()];
        for _ in 0..a.rounds {
            // Interleaved, so all sides see the same machine conditions.
            for (i, side) in Side::ALL.into_iter().enumerate() {
                rates[i].push(side.run(a.messages, channels, cap));
            }
        }
        let ratios = |side: Side| -> Vec<f64> {
            let floor = &rates[Side::Floor as usize];
            rates[side as usize]
                .iter()
                .zip(floor)
                .map(|(x, f)| x / f)
                .collect()
        };
        let coordinator = ratios(Side::Coordinator);
        let rounds: Vec<String> = coordinator.iter().map(|x| format!("{x:.3}")).collect();
        println!(
            "| {channels} | {:.1} | {:.1} | {:.3} (rounds: {}) | {:.3} | {:.3} |",
            median(rates[Side::Floor as usize].clone()),
            median(rates[Side::Coordinator as usize].clone()),
            median(coordinator.clone()),
            rounds.join(", "),
            median(ratios(Side::FloorSqlite)),
            median(ratios(Side::FloorStore)),
        );
    }
    println!();
    let (before, after) = idle_actors(a.idle);
    println!(
        "idle channel actors: {} -> RSS {} KiB before, {} KiB after: +{:.1} MiB ({:.0} bytes per actor)",
        a.idle,
        before,
        after,
        after.saturating_sub(before) as f64 / 1024.0,
        after.saturating_sub(before) as f64 * 1024.0 / a.idle as f64
    );
}
