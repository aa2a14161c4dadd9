//! Catch-up at start with many channels: how long reading every history takes, and how long a
//! live message posted meanwhile waits. The real binary against the test server (each history
//! read answered after `--read-ms`, as a remote server would) and the release stand-in.
//!
//! ```sh
//! cargo build --release -p fake-claude
//! cargo bench --bench catchup -- --channels 101 --read-ms 100
//! ```
//!
//! For `catch_up_concurrency` 1 (one history after another) and the default 4: the time from
//! `READY` to the last history read; and, with a live message posted in *every* channel right
//! after `READY`, how long they waited for their answers (a channel's live messages wait for
//! its own history), and whether the log called any of them caught up.

#[allow(dead_code, unused_imports)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use clap::Parser;
use support::discord::{content, DiscordServer};
use support::{coordinator, TestEnv};

#[derive(Parser, Debug)]
struct Args {
    /// Configured channels.
    #[arg(long, default_value_t = 101)]
    channels: usize,
    /// How long the server takes to answer a history read.
    #[arg(long, default_value_t = 100)]
    read_ms: u64,
    /// cargo bench passes this.
    #[arg(long, hide = true)]
    bench: bool,
}

const ALICE: u64 = 7;
const FIRST: u64 = 60_000;

/// (seconds to read every history, the live messages' waits in seconds (sorted), how many the
/// log called caught up).
async fn once(args: &Args, concurrency: usize) -> (f64, Vec<f64>, usize) {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    let mut text = format!(
        "[claude]\nbinary = \"{}\"\n[claude.env]\nHOME = \"{}\"\n[store]\npath = \"{}\"\n\
         [discord]\napi_base_url = \"{}\"\n[access]\nallowed_users = [{ALICE}]\n\
         [recovery]\ncatch_up_interval_ms = 250\ncatch_up_concurrency = {concurrency}\n\
         [log]\nformat = \"json\"\nfilter = \"info\"\n",
        support::fake_claude().display(),
        env.path("home").display(),
        env.db().display(),
        server.base,
    );
    for i in 0..args.channels {
        let _ = write!(
            text,
            "[[channel]]\nid = {}\nname = \"c{i}\"\nproject_dir = \"{}\"\n",
            FIRST + i as u64,
            env.path("proj").display()
        );
    }
    let overlay = env.path("catchup.toml");
    std::fs::write(&overlay, text).expect("overlay");
    server.slow_history(Duration::from_millis(args.read_ms));
    let log = env.path("service.log");
    let mut child = coordinator(
        &["--config", overlay.to_str().expect("utf-8"), "run"],
        &[("DISCORD_TOKEN", "bench-token")],
    )
    .stdin(std::process::Stdio::null())
    .stdout(std::process::Stdio::null())
    .stderr(std::fs::File::create(&log).expect("log"))
    .spawn()
    .expect("start");
    server.wait_ready(1).await;
    let ready = Instant::now();
    let channels: Vec<u64> = (0..args.channels as u64).map(|i| FIRST + i).collect();
    let posted: Vec<(u64, u64, Instant)> = channels
        .iter()
        .map(|&c| (c, server.say(c, ALICE, "posted live"), Instant::now()))
        .collect();
    let mut waits = Vec::new();
    let mut left = posted.clone();
    while !left.is_empty() {
        left.retain(|(c, _, at)| {
            let answered = server
                .answers(*c)
                .iter()
                .any(|r| content(r) == "echo: posted live");
            if answered {
                waits.push(at.elapsed().as_secs_f64());
            }
            !answered
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    waits.sort_by(f64::total_cmp);
    server
        .wait("every history read", |s| {
            s.requests()
                .iter()
                .filter(|r| r.method == "GET" && r.path.ends_with("/messages"))
                .count()
                >= args.channels
        })
        .await;
    let last_read = server
        .requests()
        .iter()
        .filter(|r| r.method == "GET" && r.path.ends_with("/messages"))
        .map(|r| r.at)
        .max()
        .expect("reads");
    let read_all = (last_read + Duration::from_millis(args.read_ms))
        .saturating_duration_since(ready)
        .as_secs_f64();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid")),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let logged = posted
        .iter()
        .filter(|(_, id, _)| {
            text.lines()
                .any(|l| l.contains("caught up") && l.contains(&id.to_string()))
        })
        .count();
    (read_all, waits, logged)
}

#[actix_rt::main]
async fn main() {
    let args = Args::parse();
    println!(
        "{} channels, each history read answered after {} ms",
        args.channels, args.read_ms
    );
    for concurrency in [1, 4] {
        let (read_all, waits, logged) = once(&args, concurrency).await;
        println!(
            "catch_up_concurrency {concurrency}: every history read in {read_all:.1} s; live messages posted at READY answered after median {:.2} s, max {:.2} s; logged as caught up: {logged} of {}",
            waits[waits.len() / 2],
            waits[waits.len() - 1],
            waits.len()
        );
    }
}
