//! The session store actor against real SQLite files (one temp file per test).

use std::time::Duration;

use actix::Addr;
use actors::cost::{CostUpdate, ReportedCost};
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
        id,
        name: format!("chan-{id}"),
        project_dir: "/srv/project".into(),
        model: Some("claude-opus-5-5".into()),
        session_id: Some(session.into()),
        cost,
        error: None,
        reply: None,
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
        .send(LoadConversation { id })
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
    assert_eq!(found.id, big_id);
    assert_eq!(found.session_id.as_deref(), Some("s1"));

    assert!(store
        .send(ResetConversation { id: big_id })
        .await
        .expect("mailbox")
        .expect("reset"));
    let reset = store
        .send(LoadConversation { id: big_id })
        .await
        .expect("mailbox")
        .expect("load")
        .expect("row");
    assert_eq!(reset.session_id, None);
    assert_eq!(reset.message_count, 2, "counters survive a reset");
    assert!(!store
        .send(ResetConversation { id: 99 })
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
        .send(LoadConversation { id: 1 })
        .await
        .expect("mailbox")
        .expect("load");
    assert_eq!(row.and_then(|r| r.session_id).as_deref(), Some("s1"));
    let conn = rusqlite::Connection::open(&cfg.path).expect("open");
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("pragma");
    assert_eq!(
        version, 4,
        "conversations; rules and the approvals audit; the CLI processes running; inbox and outbox"
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
        .send(LoadConversation { id: 1 })
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
