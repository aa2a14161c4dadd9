//! Nothing accepted is lost: the inbox and outbox across `kill -9` and restarts, catch-up of
//! what was posted while the service was down, replayed events — through the real binary, the
//! real serenity client and the test server.

use std::fmt::Write as _;

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::support::discord::{content, is_decoration, DiscordServer};
use crate::support::{spawn_run_with, stop_with};
use crate::support::{wait_until, TestEnv};

const ALICE: u64 = 7;
const BOB: u64 = 8;
const ALPHA: u64 = 1001;
const BETA: u64 = 1002;
const LOGS: [(&str, &str); 2] = [("COORDINATOR__LOG__FORMAT", "json"), ("RUST_LOG", "info")];

fn allow_alice(more: &str) -> String {
    format!("[access]\nallowed_users = [{ALICE}]\n{more}")
}

/// A deployment, the test server, and the service running against it (connected), with
/// `more` settings besides Alice's access.
async fn up(more: &str) -> (TestEnv, DiscordServer, String, std::process::Child) {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    let extra = allow_alice(more);
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &LOGS);
    server.wait_ready(1).await;
    (env, server, extra, child)
}

/// The bot's messages in `channel` that reply to message `id` (a reply's first chunk, a notice).
fn answers_to(server: &DiscordServer, channel: u64, id: u64) -> Vec<String> {
    server
        .history(channel)
        .into_iter()
        .filter(|m| m["author"]["bot"] == true)
        .filter(|m| !is_decoration(m["content"].as_str().unwrap_or_default()))
        .filter(|m| {
            m["message_reference"]["message_id"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                == Some(id)
        })
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// The inbox rows: (message id, state), in id order.
fn inbox(env: &TestEnv) -> Vec<(u64, String)> {
    let conn = rusqlite::Connection::open(env.db()).expect("open db");
    let mut stmt = conn
        .prepare("SELECT message_id, state FROM inbox ORDER BY message_id")
        .expect("prepare");
    stmt.query_map([], |r| {
        Ok((
            u64::from_ne_bytes(r.get::<_, i64>(0)?.to_ne_bytes()),
            r.get(1)?,
        ))
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

async fn wait_answered(server: &DiscordServer, channel: u64, id: u64, what: &str) -> String {
    server
        .wait(what, |s| !answers_to(s, channel, id).is_empty())
        .await;
    answers_to(server, channel, id).remove(0)
}

#[actix_rt::test]
async fn after_kill_9_the_queued_messages_run_in_order_and_the_interrupted_one_waits_for_retry() {
    let (env, server, extra, child) = up("").await;
    let gate = env.gate("g");
    let first = server.say(ALPHA, ALICE, &format!("first GATE:{}", gate.display()));
    wait_until(|| env.prompts().len() == 1, "the first run").await;
    let second = server.say(ALPHA, ALICE, "second");
    let third = server.say(ALPHA, ALICE, "third");
    wait_until(|| inbox(&env).len() == 3, "three messages in the inbox").await;
    let states: Vec<String> = inbox(&env).into_iter().map(|(_, s)| s).collect();
    assert_eq!(states, ["running", "queued", "queued"]);
    stop_with(child, Signal::SIGKILL).await;

    env.open_gate("g");
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &LOGS);
    let notice = wait_answered(&server, ALPHA, first, "the interrupted notice").await;
    assert!(notice.contains("!retry"), "{notice}");
    let a2 = wait_answered(&server, ALPHA, second, "the second answer").await;
    let a3 = wait_answered(&server, ALPHA, third, "the third answer").await;
    assert!(
        a2.contains("Answered late") && a2.contains("echo: second"),
        "{a2}"
    );
    assert!(a3.contains("echo: third"), "{a3}");
    // In order, and the interrupted one was not run again on its own.
    let prompts = env.prompts();
    assert_eq!(prompts[1..], ["second", "third"], "{prompts:?}");

    let retry = server.say(ALPHA, ALICE, "!retry");
    let said = wait_answered(&server, ALPHA, retry, "the answer to !retry").await;
    assert!(said.contains("Running it again"), "{said}");
    server
        .wait("the retried answer", |s| {
            answers_to(s, ALPHA, first)
                .iter()
                .any(|t| t.contains("echo: first"))
        })
        .await;
    assert_eq!(
        answers_to(&server, ALPHA, first).len(),
        2,
        "notice + answer"
    );
    assert_eq!(answers_to(&server, ALPHA, second).len(), 1);
    let nothing = server.say(ALPHA, ALICE, "!retry");
    let said = wait_answered(&server, ALPHA, nothing, "the second !retry").await;
    assert!(said.contains("No interrupted message"), "{said}");
    stop_with(child, Signal::SIGTERM).await;
}

#[actix_rt::test]
async fn with_rerun_interrupted_the_interrupted_message_runs_again_by_itself() {
    let (env, server, extra, child) = up("[recovery]\nrerun_interrupted = true\n").await;
    let gate = env.gate("g");
    let first = server.say(ALPHA, ALICE, &format!("first GATE:{}", gate.display()));
    wait_until(|| env.prompts().len() == 1, "the first run").await;
    stop_with(child, Signal::SIGKILL).await;
    env.open_gate("g");
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &LOGS);
    let answer = wait_answered(&server, ALPHA, first, "the rerun's answer").await;
    assert!(answer.contains("echo: first"), "{answer}");
    assert_eq!(env.prompts().len(), 2, "run twice");
    assert_eq!(answers_to(&server, ALPHA, first).len(), 1, "no notice");
    stop_with(child, Signal::SIGTERM).await;
}

#[actix_rt::test]
async fn messages_posted_while_the_service_was_down_are_answered_late_in_order() {
    let (env, server, extra, child) = up("[recovery]\ncatch_up_max = 4\n").await;
    let before = server.say(ALPHA, ALICE, "before");
    wait_answered(&server, ALPHA, before, "the first answer").await;
    stop_with(child, Signal::SIGTERM).await;
    wait_until(|| !server.is_connected(), "the bot to be gone").await;

    // While it is down: in alpha two prompts, a command and a stranger's message (four, as
    // many as `catch_up_max`); in beta five prompts, one more.
    let one = server.say(ALPHA, ALICE, "down one");
    let stranger = server.say(ALPHA, BOB, "let me in");
    let reset = server.say(ALPHA, ALICE, "!reset");
    let two = server.say(ALPHA, ALICE, "down two");
    let b: Vec<u64> = (1..=5)
        .map(|i| server.say(BETA, ALICE, &format!("beta {i}")))
        .collect();

    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &LOGS);
    let a1 = wait_answered(&server, ALPHA, one, "down one").await;
    let a2 = wait_answered(&server, ALPHA, two, "down two").await;
    assert!(
        a1.contains("Answered late") && a1.contains("echo: down one"),
        "{a1}"
    );
    assert!(a2.contains("echo: down two"), "{a2}");
    wait_answered(&server, BETA, b[3], "beta 4").await;
    // Let anything else that would be answered arrive.
    let probe = server.say(ALPHA, ALICE, "probe");
    wait_answered(&server, ALPHA, probe, "the probe").await;
    assert!(
        answers_to(&server, ALPHA, stranger).is_empty(),
        "no late refusal"
    );
    assert!(
        answers_to(&server, ALPHA, reset).is_empty(),
        "no late command"
    );
    assert!(
        answers_to(&server, BETA, b[4]).is_empty(),
        "beyond catch_up_max"
    );
    assert_eq!(
        answers_to(&server, ALPHA, before).len(),
        1,
        "not answered again"
    );
    let prompts = env.prompts();
    let alpha: Vec<&String> = prompts.iter().filter(|p| !p.starts_with("beta")).collect();
    assert_eq!(alpha, ["before", "down one", "down two", "probe"]);
    // After the restart the history was read from the last message the inbox had on.
    let fetches: Vec<Value> = server
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path == format!("/api/v10/channels/{ALPHA}/messages"))
        .map(|r| r.body)
        .collect();
    assert_eq!(fetches[1]["after"], before, "{fetches:?}");
    stop_with(child, Signal::SIGTERM).await;
}

#[actix_rt::test]
async fn after_a_gateway_session_that_could_not_be_resumed_the_gap_is_caught_up() {
    let (env, server, _, child) = up("").await;
    let before = server.say(ALPHA, ALICE, "before");
    wait_answered(&server, ALPHA, before, "the first answer").await;
    server.invalidate_session();
    // Discord does not deliver this one: the bot has no session.
    let gap = server.say(ALPHA, ALICE, "in the gap");
    server.wait_ready(2).await;
    let answer = wait_answered(&server, ALPHA, gap, "the gap's message").await;
    assert!(
        answer.contains("Answered late") && answer.contains("echo: in the gap"),
        "{answer}"
    );
    assert_eq!(server.resumes(), 0, "a new session, not a resumed one");
    assert_eq!(env.prompts(), ["before", "in the gap"]);
    stop_with(child, Signal::SIGTERM).await;
}

#[actix_rt::test]
async fn a_thread_the_inbox_knows_is_caught_up_too() {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    let extra = allow_alice("");
    let thread = 880_000_000_000_000_001;
    server.add_thread(thread, ALPHA, "fix-login");
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &LOGS);
    server.wait_ready(1).await;
    let first = server.say(thread, ALICE, "in the thread");
    wait_answered(&server, thread, first, "the thread's answer").await;
    stop_with(child, Signal::SIGTERM).await;
    wait_until(|| !server.is_connected(), "the bot to be gone").await;
    let later = server.say(thread, ALICE, "thread, while down");
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &LOGS);
    let answer = wait_answered(&server, thread, later, "the thread caught up").await;
    assert!(answer.contains("Answered late"), "{answer}");
    assert_eq!(env.prompts(), ["in the thread", "thread, while down"]);
    stop_with(child, Signal::SIGTERM).await;
}

#[actix_rt::test]
async fn a_live_message_during_catch_up_is_answered_after_the_older_ones() {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    let extra = allow_alice("");
    let old = server.say(ALPHA, ALICE, "posted while down");
    server.slow_history(std::time::Duration::from_millis(1500));
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &LOGS);
    server.wait_ready(1).await;
    // Delivered live while the history is still being read.
    let new = server.say(ALPHA, ALICE, "posted just now");
    wait_answered(&server, ALPHA, new, "the live message").await;
    assert_eq!(env.prompts(), ["posted while down", "posted just now"]);
    assert_eq!(answers_to(&server, ALPHA, old).len(), 1);
    stop_with(child, Signal::SIGTERM).await;
}

#[actix_rt::test]
async fn a_live_message_held_during_catch_up_is_answered_before_a_newer_one_the_history_shows() {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    let extra = allow_alice("");
    let old = server.say(ALPHA, ALICE, "posted while down");
    server.slow_history(std::time::Duration::from_millis(1500));
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &LOGS);
    server.wait_ready(1).await;
    // While the history is read: one message arrives live (and waits for the history), a
    // newer one is posted whose MESSAGE_CREATE only comes after the history was read.
    let live = server.say(ALPHA, ALICE, "live, held");
    let newer = server.say_unannounced(ALPHA, ALICE, "newer, announced late");
    wait_answered(&server, ALPHA, newer, "the newer message").await;
    server.replay(ALPHA, newer);
    let probe = server.say(ALPHA, ALICE, "probe");
    wait_answered(&server, ALPHA, probe, "the probe").await;
    assert_eq!(
        env.prompts(),
        [
            "posted while down",
            "live, held",
            "newer, announced late",
            "probe"
        ]
    );
    for id in [old, live, newer] {
        assert_eq!(answers_to(&server, ALPHA, id).len(), 1);
    }
    stop_with(child, Signal::SIGTERM).await;
}

#[actix_rt::test]
async fn a_message_delivered_again_after_a_restart_is_not_answered_twice() {
    let (env, server, extra, child) = up("").await;
    let id = server.say(ALPHA, ALICE, "once only");
    wait_answered(&server, ALPHA, id, "the answer").await;
    stop_with(child, Signal::SIGKILL).await;
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &LOGS);
    server.wait_ready(2).await;
    // A fresh process remembers nothing in memory; the inbox does.
    server.replay(ALPHA, id);
    let probe = server.say(ALPHA, ALICE, "probe");
    wait_answered(&server, ALPHA, probe, "the probe").await;
    assert_eq!(answers_to(&server, ALPHA, id).len(), 1);
    assert_eq!(env.prompts(), ["once only", "probe"]);
    stop_with(child, Signal::SIGTERM).await;
}

#[actix_rt::test]
async fn a_reply_cut_off_by_kill_9_is_finished_after_the_restart_without_repeating_a_chunk() {
    let (env, server, extra, child) = up("").await;
    // "echo: " + 4,500 characters: three chunks.
    let long = format!("long {}", "word ".repeat(900));
    server.hold_posts_after(1);
    let id = server.say(ALPHA, ALICE, &long);
    let nonce = |n: usize| format!("{id}-{n}");
    let posts_with = |s: &DiscordServer, n: usize| {
        s.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.body["nonce"] == nonce(n).as_str())
            .count()
    };
    server
        .wait("the first chunk", |s| posts_with(s, 0) == 1)
        .await;
    let parts = || {
        let conn = rusqlite::Connection::open(env.db()).expect("db");
        conn.query_row("SELECT parts_sent FROM outbox", [], |r| r.get::<_, i64>(0))
            .unwrap_or(-1)
    };
    wait_until(|| parts() == 1, "the first chunk recorded").await;
    stop_with(child, Signal::SIGKILL).await;
    server.release_posts();
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &LOGS);
    server
        .wait("the last chunk", |s| {
            s.posts(ALPHA)
                .iter()
                .any(|r| r.body["nonce"] == nonce(2).as_str())
        })
        .await;
    assert_eq!(posts_with(&server, 0), 1, "chunk 1 was not sent again");
    let created: Vec<String> = server
        .posts(ALPHA)
        .iter()
        .filter(|r| {
            r.body["nonce"]
                .as_str()
                .is_some_and(|n| n.starts_with(&id.to_string()))
        })
        .map(|r| r.body["nonce"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        created,
        [nonce(0), nonce(1), nonce(2)],
        "each chunk once, in order"
    );
    let text: String = server
        .posts(ALPHA)
        .iter()
        .filter(|r| {
            r.body["nonce"]
                .as_str()
                .is_some_and(|n| n.starts_with(&id.to_string()))
        })
        .map(content)
        .collect();
    assert_eq!(text.matches("word").count(), 900);
    assert_eq!(env.prompts().len(), 1, "the run was not repeated");
    wait_until(
        || {
            let conn = rusqlite::Connection::open(env.db()).expect("db");
            conn.query_row("SELECT state FROM outbox", [], |r| r.get::<_, String>(0))
                .is_ok_and(|s| s == "sent")
        },
        "the reply marked sent",
    )
    .await;
    stop_with(child, Signal::SIGTERM).await;
}

#[actix_rt::test]
async fn an_undelivered_reply_is_shown_as_failed_and_sent_at_the_next_start() {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    let extra = allow_alice("");
    let vars = [
        LOGS[0],
        LOGS[1],
        ("COORDINATOR__DISCORD__SEND_RETRIES", "0"),
    ];
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &vars);
    server.wait_ready(1).await;
    // The reply, its file fallback and the notice all refused.
    server.fail_next_posts(&[403, 403, 403]);
    let id = server.say(ALPHA, ALICE, "undeliverable for now");
    wait_until(
        || {
            let conn = rusqlite::Connection::open(env.db()).expect("db");
            conn.query_row("SELECT state FROM outbox", [], |r| r.get::<_, String>(0))
                .is_ok_and(|s| s == "failed")
        },
        "the reply marked failed",
    )
    .await;
    assert!(answers_to(&server, ALPHA, id).is_empty());
    stop_with(child, Signal::SIGTERM).await;

    let overlay = env.path("overlay.toml");
    let (status, out, err) =
        crate::support::run_with_config(&overlay, &["sessions", "show", "alpha"], "", &[]);
    assert!(status.success(), "{err}");
    assert!(out.contains("undelivered:   1"), "{out}");
    assert!(out.contains("failed") && out.contains("HTTP 403"), "{out}");
    let (status, out, err) = crate::support::run_with_config(
        &overlay,
        &["sessions", "show", "alpha", "--json"],
        "",
        &[],
    );
    assert!(status.success(), "{err}");
    let shown: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["undelivered"][0]["message_id"], id, "{shown}");
    assert_eq!(shown["undelivered"][0]["state"], "failed", "{shown}");

    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &LOGS);
    let answer = wait_answered(&server, ALPHA, id, "the reply, at last").await;
    assert!(answer.contains("echo: undeliverable for now"), "{answer}");
    assert_eq!(env.prompts().len(), 1, "not run again");
    stop_with(child, Signal::SIGTERM).await;
}

#[actix_rt::test]
async fn a_member_allowed_by_role_is_caught_up_once_their_roles_are_read() {
    const ROLE: u64 = 4_242;
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    // Only a role lets anyone in; history carries no member, so the roles must be read.
    let extra = format!("[access]\nallowed_roles = [{ROLE}]\n");
    server.set_roles(ALICE, &[ROLE]);
    server.set_roles(BOB, &[]);
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &LOGS);
    server.wait_ready(1).await;
    let live = server.say(ALPHA, ALICE, "live");
    wait_answered(&server, ALPHA, live, "the live answer").await;
    stop_with(child, Signal::SIGTERM).await;
    wait_until(|| !server.is_connected(), "the bot to be gone").await;

    let before_restart = server.requests().len();
    let one = server.say(ALPHA, ALICE, "down one");
    let stranger = server.say(ALPHA, BOB, "no role");
    let two = server.say(ALPHA, ALICE, "down two");
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &LOGS);
    let a1 = wait_answered(&server, ALPHA, one, "down one").await;
    let a2 = wait_answered(&server, ALPHA, two, "down two").await;
    assert!(
        a1.contains("Answered late") && a1.contains("echo: down one"),
        "{a1}"
    );
    assert!(a2.contains("echo: down two"), "{a2}");
    let probe = server.say(ALPHA, ALICE, "probe");
    wait_answered(&server, ALPHA, probe, "the probe").await;
    assert!(
        answers_to(&server, ALPHA, stranger).is_empty(),
        "no late refusal, no answer"
    );
    assert_eq!(env.prompts(), ["live", "down one", "down two", "probe"]);
    // Each author's roles were read once after the restart (then kept), in the channel's guild.
    let lookups: Vec<String> = server.requests()[before_restart..]
        .iter()
        .filter(|r| r.path.contains("/members/"))
        .map(|r| r.path.clone())
        .collect();
    let guild = crate::support::discord::GUILD_ID;
    assert_eq!(
        lookups,
        [
            format!("/api/v10/guilds/{guild}/members/{ALICE}"),
            format!("/api/v10/guilds/{guild}/members/{BOB}")
        ]
    );
    stop_with(child, Signal::SIGTERM).await;
}

#[actix_rt::test]
async fn histories_are_read_several_at_a_time_and_a_live_message_is_never_called_caught_up() {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    // Eight more channels besides the three of every test deployment.
    let mut extra =
        allow_alice("[recovery]\ncatch_up_concurrency = 4\ncatch_up_interval_ms = 10\n");
    for i in 0..8_u64 {
        let _ = write!(
            extra,
            "[[channel]]\nid = {}\nname = \"more{i}\"\nproject_dir = \"{}\"\n",
            2001 + i,
            env.path("proj").display()
        );
    }
    let old = server.say(BETA, ALICE, "posted while down");
    server.slow_history(std::time::Duration::from_millis(400));
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &LOGS);
    server.wait_ready(1).await;
    let live = server.say(ALPHA, ALICE, "posted just now");
    wait_answered(&server, ALPHA, live, "the live message").await;
    wait_answered(&server, BETA, old, "the old one").await;
    let output = stop_with(child, Signal::SIGTERM).await;
    let (all, one) = server.history_peak();
    assert!(all > 1, "histories read one at a time");
    assert!(all <= 4, "more than catch_up_concurrency at once: {all}");
    assert_eq!(one, 1, "one channel's pages are read one after another");
    // The log calls only the old message caught up.
    let logs = String::from_utf8_lossy(&output.stderr);
    let caught: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("caught up"))
        })
        .collect();
    let ids: Vec<String> = caught
        .iter()
        .map(|v| v["message_ids"].to_string())
        .collect();
    assert_eq!(caught.len(), 1, "{ids:?}");
    assert!(ids[0].contains(&old.to_string()), "{ids:?}");
    assert!(
        !ids.iter().any(|i| i.contains(&live.to_string())),
        "{ids:?}"
    );
}

#[actix_rt::test]
async fn an_undelivered_reply_keeps_its_files_bytes_not_a_path_into_the_project() {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    let extra = allow_alice("");
    let vars = [
        LOGS[0],
        LOGS[1],
        ("COORDINATOR__DISCORD__SEND_RETRIES", "0"),
    ];
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &vars);
    server.wait_ready(1).await;
    // The reply, its file fallback and the notice all refused.
    server.fail_next_posts(&[403, 403, 403]);
    let id = server.say(ALPHA, ALICE, "WRITEFILE:report.md");
    wait_until(
        || {
            let conn = rusqlite::Connection::open(env.db()).expect("db");
            conn.query_row("SELECT state FROM outbox", [], |r| r.get::<_, String>(0))
                .is_ok_and(|s| s == "failed")
        },
        "the reply marked failed",
    )
    .await;
    stop_with(child, Signal::SIGTERM).await;
    // While it is down, the kept copy in the project is replaced by a link to a secret.
    let secret = env.path("secret");
    std::fs::write(&secret, "SECRET").expect("write");
    let kept = env.path(&format!("proj/.claude-coordinator/sent/{id}/report.md"));
    std::fs::remove_file(&kept).expect("the kept copy");
    std::os::unix::fs::symlink(&secret, &kept).expect("symlink");

    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &LOGS);
    server
        .wait("the files, at last", |s| {
            s.posts(ALPHA).iter().any(|r| !r.files.is_empty())
        })
        .await;
    let files: Vec<(String, String, Vec<u8>)> = server
        .posts(ALPHA)
        .into_iter()
        .flat_map(|r| r.files)
        .collect();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].1, "report.md");
    assert_eq!(
        files[0].2, b"written by the stand-in: report.md\n",
        "the bytes read when the run ended"
    );
    // Delivered: the service's copy of the bytes is gone too.
    wait_until(
        || {
            let conn = rusqlite::Connection::open(env.db()).expect("db");
            conn.query_row("SELECT COUNT(*) FROM outbox_files", [], |r| {
                r.get::<_, i64>(0)
            })
            .is_ok_and(|n| n == 0)
        },
        "the bytes forgotten once delivered",
    )
    .await;
    assert_eq!(std::fs::read_to_string(&secret).expect("secret"), "SECRET");
    stop_with(child, Signal::SIGTERM).await;
}

#[actix_rt::test]
async fn spend_counted_before_a_kill_9_still_counts_after_the_restart() {
    let (env, server, extra, child) =
        up("[limits]\nuser_daily_usd = 0.05\ntimezone = \"America/New_York\"\n").await;
    let id = server.say(ALPHA, ALICE, "spend");
    wait_answered(&server, ALPHA, id, "the answer").await;
    stop_with(child, Signal::SIGKILL).await;
    // A fresh process knows the spend only from the store.
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &LOGS);
    server.wait_ready(2).await;
    let next = server.say(ALPHA, ALICE, "over the limit");
    let text = wait_answered(&server, ALPHA, next, "the refusal").await;
    assert!(
        text.starts_with("Not run:") && text.contains("($0.05 per day)"),
        "{text}"
    );
    // Midnight in New York, named as such.
    assert!(text.contains(" 00:00 E"), "{text}");
    assert_eq!(env.prompts(), ["spend"]);
    let states: Vec<String> = inbox(&env).into_iter().map(|(_, s)| s).collect();
    assert_eq!(states, ["answered", "refused"]);
    stop_with(child, Signal::SIGTERM).await;
}

#[actix_rt::test]
async fn the_hours_messages_and_a_lift_counted_before_a_kill_9_still_count_after_the_restart() {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    let extra = format!(
        "[access]\nallowed_users = [{ALICE}, {BOB}]\napprovers = [{BOB}]\n\
         [limits]\nuser_messages_per_hour = 1\n"
    );
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &LOGS);
    server.wait_ready(1).await;
    let first = server.say(ALPHA, ALICE, "the hour's one");
    wait_answered(&server, ALPHA, first, "the answer").await;
    stop_with(child, Signal::SIGKILL).await;
    // A fresh process knows the hour's messages only from the inbox.
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &LOGS);
    server.wait_ready(2).await;
    let second = server.say(ALPHA, ALICE, "one too many");
    let text = wait_answered(&server, ALPHA, second, "the refusal").await;
    assert!(
        text.starts_with("Not run:") && text.contains("(1 message(s) per hour)"),
        "{text}"
    );
    // An approver lifts Alice's limits; the lift, too, outlives a kill -9.
    let lift = server.say(ALPHA, BOB, &format!("!limits lift <@{ALICE}>"));
    let text = wait_answered(&server, ALPHA, lift, "the lift").await;
    assert!(text.contains("lifted until"), "{text}");
    stop_with(child, Signal::SIGKILL).await;
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &LOGS);
    server.wait_ready(3).await;
    let third = server.say(ALPHA, ALICE, "after the lift");
    let text = wait_answered(&server, ALPHA, third, "the answer after the lift").await;
    assert_eq!(text, "echo: after the lift");
    assert_eq!(env.prompts(), ["the hour's one", "after the lift"]);
    stop_with(child, Signal::SIGTERM).await;
}
