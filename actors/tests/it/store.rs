//! The session store actor against real SQLite files (one temp file per test).

use std::time::Duration;

use actix::Addr;
use actors::cost::{CostUpdate, ReportedCost};
use actors::frontend::ReplyKind;
use actors::ids::{ChannelId, ConversationId, MessageId, UserId};
use actors::store::{
    open_pool, DbFailure, FindConversation, ListConversations, LoadConversation, RecordRun,
    RecordedRun, ResetConversation, SessionStoreActor, StoreConfig, StoreError,
};

fn config(dir: &tempfile::TempDir) -> StoreConfig {
    StoreConfig {
        path: dir.path().join("nested/dir/store.db"),
        pool_size: 3,
        busy_timeout: Duration::from_millis(100),
    }
}

fn start(config: &StoreConfig) -> Addr<SessionStoreActor> {
    SessionStoreActor::start(open_pool(config).expect("open"), 3)
}

fn run(id: u64, session: &str, cost: CostUpdate) -> RecordRun {
    RecordRun {
        id: ConversationId(id),
        name: format!("chan-{id}"),
        profile_id: ChannelId(id),
        project_dir: "/srv/project".into(),
        model: Some("claude-opus-5-5".into()),
        session_id: Some(session.into()),
        cost,
        error: None,
        reply: None,
        context: None,
        author: None,
    }
}

/// A run's cost, as a run works it out: from what the stored conversation had before it.
fn first_run(total: f64) -> CostUpdate {
    CostUpdate {
        run_usd: total,
        session_usd: total,
    }
}

/// Records a run whose CLI reported the cumulative `total`, working its cost out from the
/// stored row first, as a channel's run does.
async fn record(
    store: &Addr<SessionStoreActor>,
    id: u64,
    session: &str,
    total: f64,
) -> Result<RecordedRun, StoreError> {
    let before = store
        .send(LoadConversation {
            id: ConversationId(id),
        })
        .await
        .expect("mailbox")?;
    let cost = CostUpdate::after(
        Some(ReportedCost {
            total_usd: total,
            cumulative: true,
        }),
        before.as_ref().and_then(|c| c.session_id.as_deref()),
        before.as_ref().map_or(0.0, |c| c.session_cost_usd),
        Some(session),
    );
    store.send(run(id, session, cost)).await.expect("mailbox")
}

#[actix_rt::test]
async fn runs_are_recorded_listed_found_and_reset() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = start(&config(&dir));
    let big_id = u64::MAX - 5;
    record(&store, big_id, "s1", 0.05).await.expect("record");
    let second = record(&store, big_id, "s1", 0.12).await.expect("record");
    assert!((second.run_cost_usd - 0.07).abs() < 1e-12);
    assert_eq!(second.conversation.message_count, 2);
    assert!((second.conversation.total_cost_usd - 0.12).abs() < 1e-12);
    record(&store, 7, "other", 0.01).await.expect("record");

    let all = store
        .send(ListConversations)
        .await
        .expect("mailbox")
        .expect("list");
    assert_eq!(all.len(), 2);
    let found = store
        .send(FindConversation {
            name: format!("chan-{big_id}"),
        })
        .await
        .expect("mailbox")
        .expect("find")
        .expect("row");
    assert_eq!(found.id, ConversationId(big_id));
    assert_eq!(found.session_id.as_deref(), Some("s1"));

    assert!(store
        .send(ResetConversation {
            id: ConversationId(big_id)
        })
        .await
        .expect("mailbox")
        .expect("reset"));
    let reset = store
        .send(LoadConversation {
            id: ConversationId(big_id),
        })
        .await
        .expect("mailbox")
        .expect("load")
        .expect("row");
    assert_eq!(reset.session_id, None);
    assert_eq!(reset.message_count, 2, "counters survive a reset");
    assert!(!store
        .send(ResetConversation {
            id: ConversationId(99)
        })
        .await
        .expect("mailbox")
        .expect("reset"));

    // A new session after the reset: its reported total is this run's cost.
    let fresh = record(&store, big_id, "s2", 0.03).await.expect("record");
    assert!((fresh.run_cost_usd - 0.03).abs() < 1e-12);
    assert!((fresh.conversation.total_cost_usd - 0.15).abs() < 1e-12);
}

#[actix_rt::test]
async fn data_survives_reopening_and_migrations_run_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&dir);
    {
        let store = start(&cfg);
        store
            .send(run(1, "s1", first_run(0.05)))
            .await
            .expect("mailbox")
            .expect("record");
    }
    let store = start(&cfg);
    let row = store
        .send(LoadConversation {
            id: ConversationId(1),
        })
        .await
        .expect("mailbox")
        .expect("load");
    assert_eq!(row.and_then(|r| r.session_id).as_deref(), Some("s1"));
    let conn = rusqlite::Connection::open(&cfg.path).expect("open");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("pragma");
    assert_eq!(
        version, 11,
        "conversations; rules and the approvals audit; the CLI processes running; inbox and outbox; sessions, run costs, overrides; outbox files; their bytes; the mode a chat choice was made under; forks and the context window; who asked for each run, and limit lifts; prompts that are not chat messages, HTTP keys, schedules"
    );
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .expect("pragma");
    assert_eq!(mode, "wal");
}

#[test]
fn a_corrupt_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&dir);
    std::fs::create_dir_all(cfg.path.parent().expect("parent")).expect("mkdir");
    std::fs::write(
        &cfg.path,
        b"this is not a database, just some text in a file...",
    )
    .expect("write");
    let err = open_pool(&cfg).expect_err("corrupt file must not open");
    assert!(
        matches!(
            err,
            StoreError::Open {
                kind: DbFailure::Corrupt,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("corrupt or not a SQLite database"),
        "{err}"
    );
}

#[test]
fn a_directory_in_place_of_the_file_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&dir);
    std::fs::create_dir_all(&cfg.path).expect("mkdir");
    let err = open_pool(&cfg).expect_err("a directory is not a database");
    assert!(
        matches!(
            err,
            StoreError::Open {
                kind: DbFailure::CannotOpen,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn a_database_from_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&dir);
    open_pool(&cfg).expect("open");
    let conn = rusqlite::Connection::open(&cfg.path).expect("open");
    conn.pragma_update(None, "user_version", 99)
        .expect("pragma");
    drop(conn);
    let err = open_pool(&cfg).expect_err("newer schema");
    assert!(err.to_string().contains("schema version 99"), "{err}");
}

#[actix_rt::test]
async fn a_locked_database_is_a_busy_error_and_the_store_recovers() {
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&dir);
    let store = start(&cfg);
    let other = rusqlite::Connection::open(&cfg.path).expect("open");
    other.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    let err = store
        .send(run(1, "s1", first_run(0.05)))
        .await
        .expect("mailbox")
        .expect_err("locked");
    assert!(
        matches!(
            err,
            StoreError::Database {
                kind: DbFailure::Busy,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("locked by another process"),
        "{err}"
    );
    // Readers are not blocked by a writer in WAL mode.
    assert!(store
        .send(LoadConversation {
            id: ConversationId(1)
        })
        .await
        .expect("mailbox")
        .is_ok());
    other.execute_batch("ROLLBACK").expect("unlock");
    store
        .send(run(1, "s1", first_run(0.05)))
        .await
        .expect("mailbox")
        .expect("record after unlock");
}

#[actix_rt::test]
async fn the_store_threads_never_wait_on_each_other_in_sqlite() {
    // With no busy timeout, a write that meets another connection's lock fails at once: our
    // own threads must take turns before SQLite sees them.
    let dir = tempfile::tempdir().expect("tmp");
    let mut cfg = config(&dir);
    cfg.busy_timeout = Duration::ZERO;
    let store = start(&cfg);
    let writes: Vec<_> = (0..300_u64)
        .map(|i| {
            store.send(run(
                i % 30,
                &format!("s{}", i % 30),
                first_run(0.01 * (i / 30 + 1) as f64),
            ))
        })
        .collect();
    // `send` queues at once; the answers are awaited afterwards.
    for w in writes {
        w.await.expect("mailbox").expect("every write succeeds");
    }
    let all = store
        .send(ListConversations)
        .await
        .expect("mailbox")
        .expect("list");
    assert_eq!(all.len(), 30);
    assert!(all.iter().all(|c| c.message_count == 10), "{all:?}");
}

fn inbound(id: u64, conversation: u64) -> actors::store::Inbound {
    actors::store::Inbound {
        message_id: MessageId(id),
        conversation_id: ConversationId(conversation),
        profile_id: ChannelId(conversation),
        conversation: format!("chan-{conversation}"),
        channel_id: ChannelId(conversation),
        author_id: UserId(7),
        text: format!("message {id}"),
        attachments: vec![actors::store::AttachmentMeta {
            name: "notes.txt".into(),
            size: 12,
            content_type: Some("text/plain".into()),
            url: "https://cdn.discordapp.com/a/notes.txt".into(),
        }],
        late: false,
        via: actors::via::Via::Chat,
    }
}

fn reply_to(id: u64, conversation: u64) -> actors::store::Outgoing {
    actors::store::Outgoing {
        message_id: MessageId(id),
        conversation_id: ConversationId(conversation),
        conversation: format!("chan-{conversation}"),
        channel_id: ChannelId(conversation),
        author_id: UserId(7),
        kind: ReplyKind::Answer,
        is_error: false,
        text: format!("echo: message {id}"),
        session_id: Some("s1".into()),
        cost_usd: 0.01,
        parts_sent: 0,
        state: actors::store::OutboxState::Pending,
        error: None,
        files: Vec::new(),
    }
}

#[actix_rt::test]
async fn the_inbox_drops_copies_moves_states_forward_and_hands_back_the_unfinished() {
    use actors::store::{AcceptMessage, InboxState, MarkMessage, RetryInterrupted, TakeUnfinished};
    let dir = tempfile::tempdir().expect("tmp");
    let store = start(&config(&dir));
    let send = |m| store.send(m);
    for id in [10, 11, 12] {
        assert!(send(AcceptMessage(inbound(id, 1)))
            .await
            .expect("mailbox")
            .expect("accept"));
    }
    assert!(
        !send(AcceptMessage(inbound(11, 1)))
            .await
            .expect("mailbox")
            .expect("accept"),
        "a copy"
    );
    let mark = |id, state| {
        store.send(MarkMessage {
            message_id: id,
            state,
        })
    };
    assert!(mark(MessageId(10), InboxState::Running)
        .await
        .expect("mailbox")
        .expect("mark"));
    // Answered, then a late "running" from another store thread: the row stays answered.
    let mut answered = run(1, "s1", first_run(0.01));
    answered.reply = Some(reply_to(10, 1));
    store
        .send(answered)
        .await
        .expect("mailbox")
        .expect("record");
    assert!(!mark(MessageId(10), InboxState::Running)
        .await
        .expect("mailbox")
        .expect("mark"));
    assert!(mark(MessageId(11), InboxState::Running)
        .await
        .expect("mailbox")
        .expect("mark"));
    // A restart: 11 was running (now interrupted), 12 queued; 10 is done.
    let left = store
        .send(TakeUnfinished)
        .await
        .expect("mailbox")
        .expect("take");
    let ids: Vec<(u64, bool)> = left
        .iter()
        .map(|u| (u.inbound.message_id.get(), u.interrupted))
        .collect();
    assert_eq!(ids, [(11, true), (12, false)]);
    assert_eq!(left[1].inbound.attachments[0].name, "notes.txt");
    let retried = store
        .send(RetryInterrupted {
            conversation_id: ConversationId(1),
        })
        .await
        .expect("mailbox")
        .expect("retry");
    assert_eq!(retried.map(|m| m.message_id), Some(MessageId(11)));
    let again = store
        .send(RetryInterrupted {
            conversation_id: ConversationId(1),
        })
        .await
        .expect("mailbox")
        .expect("retry");
    assert!(again.is_none(), "queued again only once");
}

#[actix_rt::test]
async fn the_outbox_records_delivery_part_by_part_and_pruning_keeps_what_catch_up_needs() {
    use actors::store::{
        AcceptMessage, Delivery, ListLastSeen, ListUndelivered, PruneDelivered, RecordDelivery,
    };
    let dir = tempfile::tempdir().expect("tmp");
    let store = start(&config(&dir));
    for id in [20, 21] {
        store
            .send(AcceptMessage(inbound(id, 2)))
            .await
            .expect("mailbox")
            .expect("accept");
        let mut r = run(2, "s1", first_run(0.01));
        r.reply = Some(reply_to(id, 2));
        store.send(r).await.expect("mailbox").expect("record");
    }
    let deliver = |id, state| {
        store.send(RecordDelivery {
            message_id: id,
            state,
        })
    };
    deliver(MessageId(20), Delivery::Posted(2))
        .await
        .expect("mailbox")
        .expect("posted");
    // Out of order: fewer parts never lower the count.
    deliver(MessageId(20), Delivery::Posted(1))
        .await
        .expect("mailbox")
        .expect("posted");
    deliver(
        MessageId(21),
        Delivery::Failed("Discord answered HTTP 403".into()),
    )
    .await
    .expect("mailbox")
    .expect("failed");
    let undelivered = store
        .send(ListUndelivered {
            conversation_id: Some(ConversationId(2)),
        })
        .await
        .expect("mailbox")
        .expect("list");
    let seen: Vec<(u64, usize, &str)> = undelivered
        .iter()
        .map(|o| (o.message_id.get(), o.parts_sent, o.state.as_str()))
        .collect();
    assert_eq!(seen, [(20, 2, "pending"), (21, 0, "failed")]);
    deliver(MessageId(20), Delivery::Sent)
        .await
        .expect("mailbox")
        .expect("sent");
    deliver(MessageId(20), Delivery::Failed("late".into()))
        .await
        .expect("mailbox")
        .expect("noop");
    deliver(MessageId(21), Delivery::Sent)
        .await
        .expect("mailbox")
        .expect("sent");
    let left = store
        .send(ListUndelivered {
            conversation_id: None,
        })
        .await
        .expect("mailbox")
        .expect("list");
    assert!(left.is_empty(), "{left:?}");
    // Everything is finished and older than "now + 1 s": all goes but the newest inbox row.
    let pruned = store
        .send(PruneDelivered {
            before_ms: actors::time::unix_ms() + 1000,
        })
        .await
        .expect("mailbox")
        .expect("prune");
    // Run costs are younger than 32 days: monthly spend limits read back that far.
    assert_eq!(pruned, 3, "one inbox row and both replies");
    let last = store
        .send(ListLastSeen)
        .await
        .expect("mailbox")
        .expect("last");
    assert_eq!(
        last.iter().map(|l| l.message_id.get()).collect::<Vec<_>>(),
        [21]
    );
}

#[actix_rt::test]
async fn sessions_costs_and_choices_are_kept_per_conversation() {
    use actors::store::{
        GetUsage, ListSessions, LoadOverrides, Overrides, ResumeSession, SaveOverrides,
    };
    let dir = tempfile::tempdir().expect("tmp");
    let store = start(&config(&dir));
    record(&store, 5, "s1", 0.10).await.expect("record");
    record(&store, 5, "s1", 0.25).await.expect("record");
    // A new session (after a reset) that costs 0.05.
    store
        .send(ResetConversation {
            id: ConversationId(5),
        })
        .await
        .expect("mailbox")
        .expect("reset");
    record(&store, 5, "s2", 0.05).await.expect("record");
    let sessions = store
        .send(ListSessions {
            conversation_id: ConversationId(5),
        })
        .await
        .expect("mailbox")
        .expect("list");
    let seen: Vec<(&str, u64)> = sessions
        .iter()
        .map(|s| (s.session_id.as_str(), s.messages))
        .collect();
    assert_eq!(seen, [("s2", 1), ("s1", 2)]);
    assert!((sessions[1].cost_usd - 0.25).abs() < 1e-9);
    // Back to s1: it resumes with its cumulative cost, so the next run's cost is right.
    let ok = store
        .send(ResumeSession {
            conversation_id: ConversationId(5),
            session_id: "s1".into(),
            adopt: None,
        })
        .await
        .expect("mailbox")
        .expect("resume");
    assert!(ok);
    let not_ours = store
        .send(ResumeSession {
            conversation_id: ConversationId(6),
            session_id: "s1".into(),
            adopt: None,
        })
        .await
        .expect("mailbox")
        .expect("resume");
    assert!(!not_ours, "another conversation's session");
    let row = store
        .send(LoadConversation {
            id: ConversationId(5),
        })
        .await
        .expect("mailbox")
        .expect("load")
        .expect("row");
    assert_eq!(row.session_id.as_deref(), Some("s1"));
    let next = record(&store, 5, "s1", 0.30).await.expect("record");
    assert!(
        (next.run_cost_usd - 0.05).abs() < 1e-9,
        "{}",
        next.run_cost_usd
    );
    let usage = store
        .send(GetUsage {
            conversation_id: ConversationId(5),
            profile_id: ChannelId(5),
            day_start_ms: 0,
        })
        .await
        .expect("mailbox")
        .expect("usage");
    assert!((usage.conversation_usd - 0.35).abs() < 1e-9, "{usage:?}");
    assert!((usage.channel_usd - 0.35).abs() < 1e-9, "{usage:?}");
    assert_eq!(usage.today_runs, 4);
    // Choices made from chat.
    let choice = Overrides {
        model: Some("sonnet".into()),
        permission_mode: Some(actors::claude::PermissionMode::Plan),
        mode_under: Some(actors::claude::PermissionMode::Default),
    };
    store
        .send(SaveOverrides {
            conversation_id: ConversationId(5),
            overrides: choice.clone(),
        })
        .await
        .expect("mailbox")
        .expect("save");
    let loaded = store
        .send(LoadOverrides {
            conversation_id: ConversationId(5),
        })
        .await
        .expect("mailbox")
        .expect("load");
    assert_eq!(loaded, choice);
    let none = store
        .send(LoadOverrides {
            conversation_id: ConversationId(9),
        })
        .await
        .expect("mailbox")
        .expect("load");
    assert_eq!(none, Overrides::default());
}

#[actix_rt::test]
async fn a_replys_files_are_kept_as_bytes_until_it_is_delivered() {
    use actors::files::ReplyFile;
    use actors::store::{AcceptMessage, Delivery, ListUndelivered, RecordDelivery};
    let dir = tempfile::tempdir().expect("tmp");
    let cfg = config(&dir);
    let store = start(&cfg);
    store
        .send(AcceptMessage(inbound(30, 3)))
        .await
        .expect("mailbox")
        .expect("accept");
    let mut r = run(3, "s1", first_run(0.01));
    let mut reply = reply_to(30, 3);
    reply.files = vec![
        ReplyFile {
            name: "a.bin".into(),
            bytes: vec![0, 1, 2, 255].into(),
        },
        ReplyFile {
            name: "b.txt".into(),
            bytes: b"bee".to_vec().into(),
        },
    ];
    r.reply = Some(reply.clone());
    store.send(r).await.expect("mailbox").expect("record");
    let pending = store
        .send(ListUndelivered {
            conversation_id: Some(ConversationId(3)),
        })
        .await
        .expect("mailbox")
        .expect("list");
    assert_eq!(pending[0].files, reply.files, "the same bytes, in order");
    store
        .send(RecordDelivery {
            message_id: MessageId(30),
            state: Delivery::Sent,
        })
        .await
        .expect("mailbox")
        .expect("sent");
    let conn = rusqlite::Connection::open(&cfg.path).expect("open");
    let left: i64 = conn
        .query_row("SELECT COUNT(*) FROM outbox_files", [], |r| r.get(0))
        .expect("count");
    assert_eq!(left, 0, "delivered: the bytes are not kept");
}

#[actix_rt::test]
async fn prompts_of_the_services_own_are_idempotent_and_invisible_to_catch_up() {
    use actors::store::{AcceptMessage, AcceptPrompt, Accepted, ListLastSeen, TakeUnfinished};
    let dir = tempfile::tempdir().expect("tmp");
    let store = start(&config(&dir));
    store
        .send(AcceptMessage(inbound(20, 2)))
        .await
        .expect("mailbox")
        .expect("accept");
    let prompt = |key: &str, text: &str| {
        // Restored in order of acceptance, to the millisecond: these are accepted apart.
        std::thread::sleep(Duration::from_millis(3));
        let mut m = inbound(0, 2);
        m.text = text.into();
        m.via = actors::via::Via::Http {
            author: "ci".into(),
        };
        store.send(AcceptPrompt {
            key: key.into(),
            inbound: m,
            author: "ci".into(),
        })
    };
    let Accepted::New(first) = prompt("k1", "build failed")
        .await
        .expect("mailbox")
        .expect("accept")
    else {
        panic!("a new prompt")
    };
    let Accepted::New(second) = prompt("k2", "deploy failed")
        .await
        .expect("mailbox")
        .expect("accept")
    else {
        panic!("a new prompt")
    };
    assert!(first.message_id.is_local() && second.message_id.is_local());
    assert_ne!(first.message_id, second.message_id);
    let again = prompt("k1", "build failed")
        .await
        .expect("mailbox")
        .expect("accept");
    assert_eq!(again, Accepted::Replayed(first.clone()));
    let other = prompt("k1", "something else")
        .await
        .expect("mailbox")
        .expect("accept");
    assert!(matches!(other, Accepted::Conflict(r) if r.message_id == first.message_id));
    // Catch-up starts after the newest Discord message, never after one of ours.
    let last = store
        .send(ListLastSeen)
        .await
        .expect("mailbox")
        .expect("last");
    assert_eq!(
        last.iter().map(|l| l.message_id.get()).collect::<Vec<_>>(),
        [20]
    );
    // Restored in the order they were accepted, with where they came from.
    let unfinished = store
        .send(TakeUnfinished)
        .await
        .expect("mailbox")
        .expect("take");
    let order: Vec<(u64, String)> = unfinished
        .iter()
        .map(|u| (u.inbound.message_id.get(), u.inbound.text.clone()))
        .collect();
    assert_eq!(
        order,
        [
            (20, "message 20".to_string()),
            (first.message_id.get(), "build failed".to_string()),
            (second.message_id.get(), "deploy failed".to_string()),
        ]
    );
    assert_eq!(
        unfinished[1].inbound.via,
        actors::via::Via::Http {
            author: "ci".into()
        }
    );
    // An idempotency key lives as long as its prompt's row may: pruned with it.
    for u in &unfinished {
        store
            .send(actors::store::MarkMessage {
                message_id: u.inbound.message_id,
                state: actors::store::InboxState::Running,
            })
            .await
            .expect("mailbox")
            .expect("running");
        store
            .send(actors::store::MarkMessage {
                message_id: u.inbound.message_id,
                state: actors::store::InboxState::Answered,
            })
            .await
            .expect("mailbox")
            .expect("answered");
    }
    store
        .send(actors::store::PruneDelivered {
            before_ms: actors::time::unix_ms() + 1000,
        })
        .await
        .expect("mailbox")
        .expect("prune");
    let after = prompt("k1", "build failed")
        .await
        .expect("mailbox")
        .expect("accept");
    assert!(
        matches!(&after, Accepted::New(r) if r.message_id != first.message_id),
        "{after:?}"
    );
}
