//! Scheduled prompts through the real binary, its clock set by the test (a file the debug build
//! reads, `COORDINATOR_TEST_CLOCK_FILE`) rather than slept through: a schedule runs at its
//! minute, once; it survives restarts; after downtime the latest missed time runs (late) and
//! the rest are skipped and said once; a time due while the previous run still waits is
//! skipped; bad expressions and non-approvers are refused with the reason.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::http::{free_port, get, sample};
use crate::support::discord::DiscordServer;
use crate::support::{spawn_run_with, stop_with, wait_until, TestEnv};

const ALICE: u64 = 7;
const BOB: u64 = 8;
const ALPHA: u64 = 1001;

struct Deployment {
    env: TestEnv,
    server: DiscordServer,
    extra: String,
    clock: std::path::PathBuf,
    /// Where `/metrics` is served.
    port: u16,
}

impl Deployment {
    async fn new() -> Self {
        let env = TestEnv::new();
        let server = DiscordServer::start().await;
        let port = free_port();
        let extra = format!(
            "[access]\nallowed_users = [{ALICE}, {BOB}]\napprovers = [{ALICE}]\n[schedules]\ntimezone = \"Europe/Berlin\"\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n"
        );
        let clock = env.path("clock");
        Self {
            env,
            server,
            extra,
            clock,
            port,
        }
    }

    /// Sets the service's clock (RFC 3339).
    fn at(&self, time: &str) {
        let tmp = self.clock.with_extension("tmp");
        std::fs::write(&tmp, time).expect("clock");
        std::fs::rename(&tmp, &self.clock).expect("clock");
    }

    async fn start(&self) -> std::process::Child {
        let clock = self.clock.to_str().expect("utf-8");
        let vars = [("COORDINATOR_TEST_CLOCK_FILE", clock), ("RUST_LOG", "info")];
        let readies = self.server.readies();
        let child = spawn_run_with(&self.env, &self.server, &self.extra, Some("tok"), &vars);
        self.server.wait_ready(readies + 1).await;
        child
    }

    /// Says `text` as `who` in alpha and waits for the answer that replies to it.
    async fn command(&self, who: u64, text: &str) -> String {
        let id = self.server.say(ALPHA, who, text);
        let id = id.to_string();
        let post = self
            .server
            .post_where(ALPHA, text, |r| {
                r.body["message_reference"]["message_id"].as_str() == Some(id.as_str())
            })
            .await;
        post.body["content"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The bot's posts in alpha that start with `prefix`.
    fn posts_starting(&self, prefix: &str) -> Vec<String> {
        self.server
            .posts(ALPHA)
            .into_iter()
            .filter_map(|r| r.body["content"].as_str().map(str::to_string))
            .filter(|t| t.starts_with(prefix))
            .collect()
    }

    fn runs_of(&self, prompt: &str) -> usize {
        self.env
            .prompts()
            .iter()
            .filter(|p| p.as_str() == prompt)
            .count()
    }

    /// Waits for the `n`th answer of schedule #1.
    async fn answered(&self, n: usize) -> String {
        let mut all = Vec::new();
        wait_until(
            || {
                all = self.posts_starting("⏰ Scheduled prompt #1");
                all.len() >= n
            },
            "the schedule's answer",
        )
        .await;
        all.swap_remove(n - 1)
    }
}

#[actix_rt::test]
async fn a_schedule_runs_at_its_minute_once_survives_restarts_and_catches_up_once() {
    let d = Deployment::new().await;
    // 08:59 in Berlin.
    d.at("2026-12-07T07:59:00Z");
    let child = d.start().await;

    let refused = d
        .command(BOB, "!schedule add \"0 9 * * *\" morning check")
        .await;
    assert!(refused.contains("Only approvers"), "{refused}");
    let bad = d
        .command(ALICE, "!schedule add \"61 9 * * *\" morning check")
        .await;
    assert!(
        bad.contains("No schedule added") && bad.contains("not a cron expression"),
        "{bad}"
    );
    let often = d
        .command(ALICE, "!schedule add \"* * * * *\" morning check")
        .await;
    assert!(often.contains("more often than every 5m"), "{often}");
    let empty = d.command(ALICE, "!schedule add \"0 9 * * *\"").await;
    assert!(empty.contains("needs a prompt"), "{empty}");
    let added = d
        .command(ALICE, "!schedule add \"0 9 * * *\" morning check")
        .await;
    assert!(
        added.contains("Schedule #1 added") && added.contains("Mon 7 Dec 09:00 CET"),
        "{added}"
    );

    // Not before its minute.
    d.at("2026-12-07T07:59:58Z");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(d.runs_of("morning check"), 0);
    // At its minute: one run, answered in the channel, saying it was scheduled.
    d.at("2026-12-07T08:00:00Z");
    let answer = d.answered(1).await;
    assert!(answer.contains("echo: morning check"), "{answer}");
    assert!(
        answer.contains("`0 9 * * *`") && answer.contains("> morning check"),
        "{answer}"
    );
    assert!(!answer.contains("Answered late"), "{answer}");
    // The minute goes on: still one.
    d.at("2026-12-07T08:00:40Z");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(d.runs_of("morning check"), 1);
    let list = d.command(BOB, "!schedule").await;
    assert!(
        list.contains("#1 `0 9 * * *`") && list.contains("ran 1, skipped 0"),
        "{list}"
    );
    assert!(list.contains("next Tue 8 Dec 09:00 CET"), "{list}");

    // A restart later that day runs nothing; the next day's time runs.
    stop_with(child, Signal::SIGTERM).await;
    d.at("2026-12-07T08:30:00Z");
    let child = d.start().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(d.runs_of("morning check"), 1, "not run again at start");
    d.at("2026-12-08T08:00:00Z");
    d.answered(2).await;

    // Down over the next day's time, back 30 minutes after it: that time runs, late.
    stop_with(child, Signal::SIGKILL).await;
    d.at("2026-12-09T08:30:00Z");
    let child = d.start().await;
    let late = d.answered(3).await;
    assert!(late.contains("Answered late"), "{late}");
    assert!(
        d.posts_starting("⏰ Schedule #1 (").is_empty(),
        "nothing skipped yet"
    );

    // Down three days, back within the hour: the latest runs, two are skipped, said once.
    stop_with(child, Signal::SIGKILL).await;
    d.at("2026-12-12T08:10:00Z");
    let child = d.start().await;
    d.answered(4).await;
    let skipped = d.posts_starting("⏰ Schedule #1 (");
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        skipped[0].contains("missed 2 time(s)") && skipped[0].contains("the latest runs now"),
        "{skipped:?}"
    );
    // Restarted again at once: nothing more runs or is said.
    stop_with(child, Signal::SIGTERM).await;
    let child = d.start().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(d.runs_of("morning check"), 4);
    assert_eq!(d.posts_starting("⏰ Schedule #1 (").len(), 1);

    // Down past the catch-up window: nothing runs, and that is said.
    stop_with(child, Signal::SIGKILL).await;
    d.at("2026-12-13T10:30:00Z");
    let child = d.start().await;
    wait_until(
        || d.posts_starting("⏰ Schedule #1 (").len() == 2,
        "the second notice",
    )
    .await;
    let notice = d.posts_starting("⏰ Schedule #1 (").remove(1);
    assert!(
        notice.contains("missed 1 time(s)") && notice.contains("none of them runs now"),
        "{notice}"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(d.runs_of("morning check"), 4);

    // Paused: its time passes without a run, and resuming does not run it; the next does.
    let paused = d.command(ALICE, "!schedule pause 1").await;
    assert!(paused.contains("#1 paused"), "{paused}");
    d.at("2026-12-14T08:00:00Z");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(d.runs_of("morning check"), 4);
    d.at("2026-12-14T08:20:00Z");
    let resumed = d.command(ALICE, "!schedule resume 1").await;
    assert!(resumed.contains("#1 resumed"), "{resumed}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        d.runs_of("morning check"),
        4,
        "the paused time does not run"
    );
    d.at("2026-12-15T08:00:00Z");
    d.answered(5).await;
    // Removed: gone.
    let removed = d.command(ALICE, "!schedule remove 1").await;
    assert!(removed.contains("#1 removed"), "{removed}");
    let list = d.command(ALICE, "!schedule list").await;
    assert!(list.contains("No schedules here"), "{list}");
    stop_with(child, Signal::SIGTERM).await;
}

#[actix_rt::test]
async fn a_time_that_comes_while_the_previous_run_still_waits_is_skipped_and_said() {
    let d = Deployment::new().await;
    d.at("2026-12-07T06:55:00Z");
    let child = d.start().await;
    let gate = d.env.gate("g");
    let prompt = format!("slow GATE:{}", gate.display());
    let added = d
        .command(ALICE, &format!("!schedule add \"0 * * * *\" {prompt}"))
        .await;
    assert!(added.contains("Schedule #1 added"), "{added}");
    d.at("2026-12-07T07:00:00Z");
    wait_until(|| d.runs_of(&prompt) == 1, "the first run").await;
    d.at("2026-12-07T08:00:00Z");
    wait_until(
        || !d.posts_starting("⏰ Schedule #1 skipped").is_empty(),
        "the skip notice",
    )
    .await;
    d.env.open_gate("g");
    d.answered(1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(d.runs_of(&prompt), 1, "never two runs of one schedule");
    let list = d.command(ALICE, "!schedule").await;
    assert!(list.contains("ran 1, skipped 1"), "{list}");
    let (_, metrics) = get(d.port, "/metrics").expect("metrics");
    let runs = |outcome: &str| {
        sample(
            &metrics,
            "coordinator_schedule_runs_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(
        (runs("queued"), runs("skipped")),
        (Some(1.0), Some(1.0)),
        "{metrics}"
    );
    stop_with(child, Signal::SIGTERM).await;
}

#[actix_rt::test]
async fn a_scheduled_run_queued_before_a_kill_9_is_answered_once_after_the_restart() {
    let d = Deployment::new().await;
    d.at("2026-12-07T07:58:00Z");
    let child = d.start().await;
    let added = d
        .command(ALICE, "!schedule add \"0 9 * * *\" nightly report")
        .await;
    assert!(added.contains("Schedule #1 added"), "{added}");
    // A message holds the conversation, so the schedule's run waits behind it.
    let gate = d.env.gate("g");
    d.server
        .say(ALPHA, ALICE, &format!("first GATE:{}", gate.display()));
    wait_until(|| d.env.prompts().len() == 1, "the first run").await;
    d.at("2026-12-07T08:00:00Z");
    let queued = || {
        let conn = rusqlite::Connection::open(d.env.db()).expect("db");
        conn.query_row(
            "SELECT count(*) FROM inbox WHERE message_id < 0 AND state = 'queued'",
            [],
            |r| r.get::<_, i64>(0),
        )
        .unwrap_or(0)
    };
    wait_until(|| queued() == 1, "the schedule's run in the inbox").await;
    stop_with(child, Signal::SIGKILL).await;

    d.env.open_gate("g");
    d.at("2026-12-07T08:00:30Z");
    let child = d.start().await;
    let answer = d.answered(1).await;
    assert!(answer.contains("echo: nightly report"), "{answer}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(d.runs_of("nightly report"), 1, "{:?}", d.env.prompts());
    assert_eq!(d.posts_starting("⏰ Scheduled prompt #1").len(), 1);
    stop_with(child, Signal::SIGTERM).await;
}

#[actix_rt::test]
async fn a_schedule_runs_as_its_maker_so_their_limits_apply() {
    let mut d = Deployment::new().await;
    d.extra.push_str("[limits]\nuser_messages_per_hour = 1\n");
    d.at("2026-12-07T07:58:00Z");
    let child = d.start().await;
    let added = d
        .command(ALICE, "!schedule add \"0 9 * * *\" morning check")
        .await;
    assert!(added.contains("Schedule #1 added"), "{added}");
    // Alice's one message of the hour.
    let mine = d.server.say(ALPHA, ALICE, "my own question");
    let mine = mine.to_string();
    d.server
        .post_where(ALPHA, "Alice's answer", |r| {
            r.body["message_reference"]["message_id"].as_str() == Some(mine.as_str())
        })
        .await;
    d.at("2026-12-07T08:00:00Z");
    let refused = d
        .server
        .post_where(ALPHA, "the refusal", |r| {
            r.body["content"]
                .as_str()
                .is_some_and(|t| t.starts_with("Not run:"))
        })
        .await;
    let text = refused.body["content"].as_str().unwrap_or_default();
    assert!(
        text.contains(&format!("<@{ALICE}>, your message limit")),
        "{text}"
    );
    assert!(
        refused.body["message_reference"].is_null(),
        "{}",
        refused.body
    );
    assert_eq!(d.runs_of("morning check"), 0);
    stop_with(child, Signal::SIGTERM).await;
}
