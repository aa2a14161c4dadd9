//! Streaming into the progress message: how soon a piece of text Claude writes is on Discord,
//! how many edits a turn makes, and whether Discord's per-route limits hold with several
//! channels streaming at once. The real binary against the test server enforcing Discord-style
//! buckets (5 requests per 5 s per route and channel, with `X-RateLimit-*` headers) and the
//! release stand-in writing text deltas over several seconds in the real CLI's shape.
//!
//! ```sh
//! cargo build --release -p fake-claude
//! cargo bench --bench streaming -- --pieces 20 --gap-ms 300 --channels 10
//! ```
//!
//! Latency: from the stand-in writing a delta (its log's `at_ms`) to the test server receiving
//! the first post or edit of the progress message that shows it — or the reply, for the last
//! pieces the turn ended on (`at_ms`); both clocks are the machine's.

#[allow(dead_code, unused_imports)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use support::discord::{content, highest_marker, DiscordServer, Recorded};
use support::{coordinator, TestEnv};

#[derive(Parser, Debug)]
struct Args {
    /// Text deltas per turn.
    #[arg(long, default_value_t = 20)]
    pieces: usize,
    /// Between deltas.
    #[arg(long, default_value_t = 300)]
    gap_ms: u64,
    /// Channels streaming at once in the second round.
    #[arg(long, default_value_t = 10)]
    channels: usize,
    /// `discord.stream_edit_ms`.
    #[arg(long, default_value_t = 1500)]
    edit_ms: u64,
    /// cargo bench passes this.
    #[arg(long, hide = true)]
    bench: bool,
}

const ALICE: u64 = 7;
const FIRST: u64 = 70_000;

/// What one round measured.
#[derive(Default)]
struct Round {
    latencies_ms: Vec<u64>,
    edits_per_turn: Vec<usize>,
    allowed_per_turn: Vec<usize>,
    rate_limited: u64,
    replies_once_in_order: usize,
    channels: usize,
}

fn records(log: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

async fn round(args: &Args, channels: usize) -> Round {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    server.enforce_rate_limits(5, Duration::from_secs(5));
    let log = env.log();
    let mut text = format!(
        "[claude]\nbinary = \"{}\"\nsandbox = \"none\"\n[claude.env]\nHOME = \"{}\"\nFAKE_CLAUDE_LOG = \"{}\"\n\
         [store]\npath = \"{}\"\n[discord]\napi_base_url = \"{}\"\nstream_edit_ms = {}\n\
         [access]\nallowed_users = [{ALICE}]\n[log]\nformat = \"json\"\nfilter = \"warn\"\n",
        support::fake_claude().display(),
        env.path("home").display(),
        log.display(),
        env.db().display(),
        server.base,
        args.edit_ms,
    );
    for i in 0..channels {
        let _ = write!(
            text,
            "[[channel]]\nid = {}\nname = \"c{i}\"\nproject_dir = \"{}\"\n",
            FIRST + i as u64,
            env.path("proj").display()
        );
    }
    let overlay = env.path("streaming.toml");
    std::fs::write(&overlay, text).expect("overlay");
    let mut child = coordinator(
        &["--config", overlay.to_str().expect("utf-8"), "run"],
        &[("DISCORD_TOKEN", "bench-token")],
    )
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("start");
    server.wait_ready(1).await;
    // Let the catch-up's reads go first: these turns are about streaming.
    let all: Vec<u64> = (0..channels as u64).map(|i| FIRST + i).collect();
    server.wait_histories_read(&all).await;
    let asked: Vec<(u64, u64)> = all
        .iter()
        .map(|&c| {
            let prompt = format!("ch{c} STREAM:{}:{}", args.pieces, args.gap_ms);
            (c, server.say(c, ALICE, &prompt))
        })
        .collect();
    let last = format!("[d{}]", args.pieces);
    server
        .wait("every reply", |s| {
            all.iter()
                .all(|c| s.answers(*c).iter().any(|r| content(r).contains(&last)))
        })
        .await;
    // The summaries' edits.
    tokio::time::sleep(Duration::from_millis(args.edit_ms + 500)).await;
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();

    let mut out = measure(args, &records(&log), &server.requests(), &asked);
    out.rate_limited = server.rate_limited();
    out.channels = channels;
    out
}

/// Latencies, edits and replies per turn, from the stand-in's log and what the server saw.
fn measure(args: &Args, recs: &[Value], requests: &[Recorded], asked: &[(u64, u64)]) -> Round {
    // The stand-in process of each channel, from its turn's prompt.
    let channel_of: HashMap<u64, u64> = recs
        .iter()
        .filter(|r| r["event"] == "turn")
        .filter_map(|r| {
            let prompt = r["prompt"].as_str()?;
            let c = prompt
                .strip_prefix("ch")?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((r["pid"].as_u64()?, c))
        })
        .collect();
    let mut emitted: HashMap<(u64, usize), u64> = HashMap::new();
    for r in recs.iter().filter(|r| r["event"] == "delta") {
        if let (Some(c), Some(n), Some(at)) = (
            r["pid"].as_u64().and_then(|p| channel_of.get(&p)),
            r["n"].as_u64(),
            r["at_ms"].as_u64(),
        ) {
            emitted.insert((*c, n as usize), at);
        }
    }
    let mut out = Round::default();
    for &(c, id) in asked {
        let progress = progress_of(requests, c, id);
        out.edits_per_turn.push(progress.len());
        let (first, last) = (emitted.get(&(c, 1)), emitted.get(&(c, args.pieces)));
        if let (Some(first), Some(last)) = (first, last) {
            let turn = Duration::from_millis(last.saturating_sub(*first));
            let allowed = (turn.as_secs_f64() / Duration::from_millis(args.edit_ms).as_secs_f64())
                .floor() as usize
                + 2;
            out.allowed_per_turn.push(allowed);
        }
        let mut shown = 0;
        for r in &progress {
            let now = highest_marker(&content(r));
            for k in shown + 1..=now {
                if let Some(at) = emitted.get(&(c, k)) {
                    out.latencies_ms.push(r.at_ms.saturating_sub(*at));
                }
            }
            shown = shown.max(now);
        }
        let replies: Vec<Recorded> = requests
            .iter()
            .filter(|r| {
                r.method == "POST"
                    && r.status == 200
                    && r.path == format!("/api/v10/channels/{c}/messages")
                    && content(r).contains(&format!("[d{}]", args.pieces))
                    && !support::discord::is_decoration(&content(r))
            })
            .cloned()
            .collect();
        if replies.len() == 1 && content(&replies[0]).starts_with("[d1]") {
            out.replies_once_in_order += 1;
        }
        // What the last edit had not shown yet, the reply shows.
        if let Some(reply) = replies.first() {
            for k in shown + 1..=args.pieces {
                if let Some(at) = emitted.get(&(c, k)) {
                    out.latencies_ms.push(reply.at_ms.saturating_sub(*at));
                }
            }
        }
    }
    out
}

/// The progress message of the run answering `id` in `channel`: its post, then its edits.
fn progress_of(requests: &[Recorded], channel: u64, id: u64) -> Vec<Recorded> {
    let Some(posted) = requests
        .iter()
        .find(|r| r.method == "POST" && r.body["nonce"] == format!("{id}-p") && r.status == 200)
    else {
        return Vec::new();
    };
    let mid = DiscordServer::message_of(posted, channel)["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut all = vec![posted.clone()];
    all.extend(
        requests
            .iter()
            .filter(|r| {
                r.method == "PATCH" && r.status == 200 && r.path.ends_with(&format!("/{mid}"))
            })
            .cloned(),
    );
    all
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, args: &Args, r: &mut Round) {
    // Without the stand-in's log there is nothing to measure: say so, not "0 ms".
    assert!(
        !r.latencies_ms.is_empty(),
        "{name}: no delta was measured (could the stand-in write its log?)"
    );
    r.latencies_ms.sort_unstable();
    println!(
        "{name}: {} channel(s), {} deltas {} ms apart, stream_edit_ms {}",
        r.channels, args.pieces, args.gap_ms, args.edit_ms
    );
    println!(
        "  delta → edit on the server: median {} ms, p95 {} ms, max {} ms ({} deltas; goal ≤ {} ms)",
        percentile(&r.latencies_ms, 0.5),
        percentile(&r.latencies_ms, 0.95),
        r.latencies_ms.last().copied().unwrap_or_default(),
        r.latencies_ms.len(),
        args.edit_ms + 300
    );
    println!(
        "  progress posts + edits per turn: {:?} (allowed: {:?})",
        r.edits_per_turn, r.allowed_per_turn
    );
    println!("  429s from the server's buckets: {}", r.rate_limited);
    println!(
        "  replies posted exactly once, whole: {}/{}",
        r.replies_once_in_order, r.channels
    );
}

fn main() {
    let args = Args::parse();
    let system = actix::System::new();
    system.block_on(async {
        let mut one = round(&args, 1).await;
        report("one channel", &args, &mut one);
        let mut many = round(&args, args.channels).await;
        report("at once", &args, &mut many);
    });
}
