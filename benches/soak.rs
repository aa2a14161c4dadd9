//! The soak: the real service binary (`claude-coordinator run`) against the Discord-compatible
//! test server and the release stand-in `claude`, while the service is `kill -9`ed and
//! restarted at random moments. Every message goes to one of the conversations, live while
//! the service is up and into the history only while it is down (catch-up finds it).
//!
//! Reports messages accepted, answered exactly once, answered twice (must be 0), never
//! answered (must be 0), per-conversation order violations (must be 0), and the time to
//! drain after the last message. Exits 1 if any of the must-be-zero counts is not.
//!
//! ```sh
//! cargo build --release -p fake-claude
//! cargo bench --bench soak -- --messages 10000 --conversations 200 --kills 20
//! ```

#[allow(dead_code, unused_imports)]
#[path = "../tests/it/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::process::Child;
use std::time::{Duration, Instant};

use clap::Parser;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use support::discord::DiscordServer;
use support::{coordinator, TestEnv};

#[derive(Parser, Debug)]
#[command(about = "kill -9 soak of the real service")]
struct Args {
    /// Messages to send in all.
    #[arg(long, default_value_t = 10_000)]
    messages: usize,
    /// Conversations (configured channels) they are spread over.
    #[arg(long, default_value_t = 200)]
    conversations: usize,
    /// Times the service is killed with SIGKILL and started again.
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Messages per second sent.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Give up waiting for the drain after this many seconds.
    #[arg(long, default_value_t = 900)]
    drain_timeout: u64,
    /// cargo bench passes this.
    #[arg(long, hide = true)]
    bench: bool,
}

/// A small deterministic generator (xorshift64*): the same seed, the same run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const ALICE: u64 = 7;
const FIRST_CHANNEL: u64 = 50_000;

fn overlay(env: &TestEnv, server: &DiscordServer, conversations: usize) -> std::path::PathBuf {
    let mut text = format!(
        "[claude]\nbinary = \"{}\"\ntimeout_secs = 60\nkill_grace_secs = 1\nmax_concurrent_runs = 8\n\
         [claude.env]\nHOME = \"{}\"\n\
         [store]\npath = \"{}\"\n\
         [channels]\nqueue_limit = 100000\nidle_secs = 0\n\
         [discord]\napi_base_url = \"{}\"\nretry_backoff_ms = 20\nsend_retries = 8\n\
         [access]\nallowed_users = [{ALICE}]\n\
         [recovery]\nrerun_interrupted = true\ncatch_up_max = 1000\ncatch_up_interval_ms = 0\n\
         [metrics]\ninterval_secs = 0\n[log]\nformat = \"json\"\nfilter = \"warn,actors::registry=info,actors::discord::gateway=info\"\n",
        support::fake_claude().display(),
        env.path("home").display(),
        env.db().display(),
        server.base,
    );
    for i in 0..conversations {
        let _ = write!(
            text,
            "[[channel]]\nid = {}\nname = \"c{i}\"\nproject_dir = \"{}\"\n",
            FIRST_CHANNEL + i as u64,
            env.path("proj").display()
        );
    }
    let path = env.path("soak.toml");
    std::fs::write(&path, text).expect("write overlay");
    path
}

/// Starts the service, its log to `log`.
fn start(overlay: &std::path::Path, log: &std::path::Path) -> Child {
    let mut cmd = coordinator(
        &["--config", overlay.to_str().expect("utf-8"), "run"],
        &[("DISCORD_TOKEN", "soak-token")],
    );
    let log = std::fs::File::create(log).expect("log file");
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log);
    cmd.spawn().expect("start the service")
}

/// What the services' logs say they recovered: messages queued again, interrupted runs run
/// again, messages caught up.
fn recovered(logs: &[std::path::PathBuf]) -> (u64, u64, u64) {
    let (mut queued, mut rerun, mut caught) = (0, 0, 0);
    for path in logs {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let n = |k: &str| v[k].as_u64().unwrap_or(0);
            match v["message"].as_str() {
                Some("inbox restored") => {
                    queued += n("queued");
                    rerun += n("rerun");
                }
                Some("caught up on messages posted while the service was down") => {
                    caught += n("messages");
                }
                _ => {}
            }
        }
    }
    (queued, rerun, caught)
}

fn kill_9(child: &mut Child) {
    let pid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let _ = kill(pid, Signal::SIGKILL);
    let _ = child.wait();
}

/// What the channels' histories say about the messages sent.
#[derive(Debug, Default)]
struct Tally {
    once: usize,
    twice: usize,
    never: usize,
    order_violations: usize,
    notices: usize,
}

fn tally(server: &DiscordServer, sent: &HashMap<u64, Vec<(u64, String)>>) -> Tally {
    let mut t = Tally::default();
    for (channel, messages) in sent {
        let history = server.history(*channel);
        // Answer id by the message it answers; more than one answer is counted twice.
        let mut answers: HashMap<u64, Vec<u64>> = HashMap::new();
        let decoration = |m: &serde_json::Value| {
            support::discord::is_decoration(m["content"].as_str().unwrap_or_default())
        };
        for m in history
            .iter()
            .filter(|m| m["author"]["bot"] == true && !decoration(m))
        {
            let id = |v: &serde_json::Value| v.as_str().and_then(|s| s.parse::<u64>().ok());
            let (Some(to), Some(own)) = (id(&m["message_reference"]["message_id"]), id(&m["id"]))
            else {
                continue;
            };
            if m["content"].as_str().is_some_and(|c| c.contains("echo: ")) {
                answers.entry(to).or_default().push(own);
            } else {
                t.notices += 1;
            }
        }
        let mut last_answer = 0;
        for (id, _) in messages {
            match answers.get(id).map_or(0, Vec::len) {
                0 => t.never += 1,
                1 => t.once += 1,
                _ => t.twice += 1,
            }
            if let Some(first) = answers.get(id).and_then(|a| a.first()) {
                if *first < last_answer {
                    t.order_violations += 1;
                }
                last_answer = last_answer.max(*first);
            }
        }
    }
    t
}

#[actix_rt::main]
async fn main() {
    let args = Args::parse();
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    let overlay = overlay(&env, &server, args.conversations);
    let mut rng = Rng(args.seed.max(1) * 0x9E37_79B9_7F4A_7C15);

    // Kill moments: message indices, spread at random over the run.
    let mut kill_at: Vec<usize> = (0..args.kills)
        .map(|_| rng.below(args.messages as u64) as usize)
        .collect();
    kill_at.sort_unstable();

    let mut logs = vec![env.path("run-0.log")];
    let mut child = start(&overlay, &logs[0]);
    let started = Instant::now();
    let gap = Duration::from_micros(1_000_000 / args.rate.max(1));
    let mut sent: HashMap<u64, Vec<(u64, String)>> = HashMap::new();
    let mut kills = 0;
    let mut down_until: Option<Instant> = None;
    for i in 0..args.messages {
        while kill_at.first() == Some(&i) {
            kill_at.remove(0);
            kill_9(&mut child);
            kills += 1;
            // Down for up to a second: what is said meanwhile waits in the history.
            down_until = Some(Instant::now() + Duration::from_millis(rng.below(1000)));
        }
        if down_until.is_some_and(|t| Instant::now() >= t) {
            down_until = None;
            logs.push(env.path(&format!("run-{}.log", logs.len())));
            child = start(&overlay, &logs[logs.len() - 1]);
        }
        let channel = FIRST_CHANNEL + rng.below(args.conversations as u64);
        let n = sent.get(&channel).map_or(0, Vec::len);
        let text = format!("m{channel}-{n}");
        let id = server.say(channel, ALICE, &text);
        sent.entry(channel).or_default().push((id, text));
        tokio::time::sleep(gap).await;
    }
    if down_until.is_some() {
        logs.push(env.path(&format!("run-{}.log", logs.len())));
        child = start(&overlay, &logs[logs.len() - 1]);
    }
    let last_sent = Instant::now();
    let deadline = last_sent + Duration::from_secs(args.drain_timeout);
    let mut t = tally(&server, &sent);
    while t.never > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        t = tally(&server, &sent);
    }
    let drain = last_sent.elapsed();
    // A little longer, so a reply sent twice would have shown up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let t = tally(&server, &sent);
    kill_9(&mut child);

    println!(
        "soak: {} messages over {} conversations, {kills} kill -9 + restarts, {} s sending",
        args.messages,
        args.conversations,
        last_sent.duration_since(started).as_secs()
    );
    println!("  accepted:                {}", args.messages);
    println!("  answered exactly once:   {}", t.once);
    println!("  answered twice or more:  {} (must be 0)", t.twice);
    println!("  never answered:          {} (must be 0)", t.never);
    println!(
        "  order violations:        {} (must be 0)",
        t.order_violations
    );
    println!("  other notices:           {}", t.notices);
    println!(
        "  drain after the last message: {:.1} s",
        drain.as_secs_f64()
    );
    let (queued, rerun, caught) = recovered(&logs);
    println!(
        "  recovered at restarts:   {queued} queued again, {rerun} interrupted runs run again, {caught} caught up from history"
    );
    if t.twice > 0 || t.never > 0 || t.order_violations > 0 {
        std::process::exit(1);
    }
}
