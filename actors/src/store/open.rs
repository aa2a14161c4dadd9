//! Opening the database: WAL, pragmas, schema migrations (`PRAGMA user_version`), the pool,
//! and the immutable read-only fallback for a database this user may not write.
//!
//! Blocking: called at start-up on a blocking thread, never from an async actor's handler.

use std::path::{Path, PathBuf};
use std::time::Duration;

use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OpenFlags};
use tracing::warn;

use super::error::{classify, DbFailure, StoreError};

/// Schema migrations; `user_version` is the number applied. Append, never edit.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE conversations (
        id               INTEGER PRIMARY KEY,  -- Discord channel/thread id, u64 bits as i64
        name             TEXT    NOT NULL,
        session_id       TEXT,
        project_dir      TEXT    NOT NULL,
        model            TEXT,
        created_at_ms    INTEGER NOT NULL,
        updated_at_ms    INTEGER NOT NULL,
        message_count    INTEGER NOT NULL DEFAULT 0,
        total_cost_usd   REAL    NOT NULL DEFAULT 0,
        session_cost_usd REAL    NOT NULL DEFAULT 0,
        last_error       TEXT
    );
    CREATE INDEX conversations_name ON conversations(name);",
    // 2: "always" rules per conversation, and every permission decision (the audit).
    "CREATE TABLE permission_rules (
        conversation_id INTEGER NOT NULL,
        rule            TEXT    NOT NULL,
        created_at_ms   INTEGER NOT NULL,
        PRIMARY KEY (conversation_id, rule)
    );
    CREATE TABLE approvals (
        id              INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id INTEGER NOT NULL,
        conversation    TEXT    NOT NULL,
        tool            TEXT    NOT NULL,
        summary         TEXT    NOT NULL,
        decision        TEXT    NOT NULL,
        decided_by      TEXT,
        rule            TEXT,
        at_ms           INTEGER NOT NULL
    );
    CREATE INDEX approvals_conversation ON approvals(conversation_id, at_ms);",
    // 3: the CLI processes running, so a later instance can kill what a killed one left.
    "CREATE TABLE cli_processes (
        pid        INTEGER PRIMARY KEY,
        start_time INTEGER NOT NULL
    );",
    // 4: every accepted message (the queue in memory is a cache of it), and every reply of a
    // run until it has been delivered.
    "CREATE TABLE inbox (
        message_id      INTEGER PRIMARY KEY,  -- Discord message id: a second copy is dropped
        conversation_id INTEGER NOT NULL,
        profile_id      INTEGER NOT NULL,     -- the configured channel whose settings apply
        conversation    TEXT    NOT NULL,
        channel_id      INTEGER NOT NULL,
        author_id       INTEGER NOT NULL,
        text            TEXT    NOT NULL,
        attachments     TEXT    NOT NULL,     -- JSON: name, size, content type, url
        late            INTEGER NOT NULL,
        state           TEXT    NOT NULL,     -- queued running answered failed skipped interrupted
        received_at_ms  INTEGER NOT NULL,
        updated_at_ms   INTEGER NOT NULL
    );
    CREATE INDEX inbox_state ON inbox(state, conversation_id, message_id);
    CREATE INDEX inbox_conversation ON inbox(conversation_id, message_id);
    CREATE INDEX inbox_updated ON inbox(updated_at_ms);
    CREATE TABLE outbox (
        message_id      INTEGER PRIMARY KEY,  -- the message answered
        conversation_id INTEGER NOT NULL,
        conversation    TEXT    NOT NULL,
        channel_id      INTEGER NOT NULL,
        author_id       INTEGER NOT NULL,
        kind            TEXT    NOT NULL,
        is_error        INTEGER NOT NULL,
        text            TEXT    NOT NULL,
        session_id      TEXT,
        cost_usd        REAL    NOT NULL,
        parts_sent      INTEGER NOT NULL DEFAULT 0,
        state           TEXT    NOT NULL,     -- pending sent failed
        attempts        INTEGER NOT NULL DEFAULT 0,
        error           TEXT,
        created_at_ms   INTEGER NOT NULL,
        updated_at_ms   INTEGER NOT NULL
    );
    CREATE INDEX outbox_state ON outbox(state, message_id);",
    // 5: each conversation's sessions and runs (for `sessions`, `resume`, `usage`), and the
    // model and permission mode chosen for it from chat.
    "CREATE TABLE sessions (
        conversation_id INTEGER NOT NULL,
        session_id      TEXT    NOT NULL,
        profile_id      INTEGER NOT NULL,
        first_at_ms     INTEGER NOT NULL,
        last_at_ms      INTEGER NOT NULL,
        messages        INTEGER NOT NULL,
        cost_usd        REAL    NOT NULL,
        PRIMARY KEY (conversation_id, session_id)
    );
    CREATE INDEX sessions_profile ON sessions(profile_id);
    CREATE TABLE run_costs (
        at_ms           INTEGER NOT NULL,
        conversation_id INTEGER NOT NULL,
        profile_id      INTEGER NOT NULL,
        cost_usd        REAL    NOT NULL
    );
    CREATE INDEX run_costs_at ON run_costs(at_ms);
    CREATE TABLE overrides (
        conversation_id INTEGER PRIMARY KEY,
        model           TEXT,
        permission_mode TEXT
    );",
    // 6: the files a reply attaches (JSON: name, path, size). Unused since 7: a path into a
    // project directory is not to be opened again.
    "ALTER TABLE outbox ADD COLUMN files TEXT NOT NULL DEFAULT '[]';",
    // 7: the bytes of the files a reply attaches, read when its run ended, until delivered.
    "CREATE TABLE outbox_files (
        message_id INTEGER NOT NULL,
        position   INTEGER NOT NULL,
        name       TEXT    NOT NULL,
        bytes      BLOB    NOT NULL,
        PRIMARY KEY (message_id, position)
    );",
    // 8: the channel's configured permission mode when a mode was chosen from chat (the choice
    // holds only while that stays the channel's mode).
    "ALTER TABLE overrides ADD COLUMN mode_under TEXT;",
    // 9: a thread forked from its channel starts from a copy of its session (the next run
    // passes `--fork-session`); how full the context window was after the last run.
    "ALTER TABLE conversations ADD COLUMN fork_pending INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE conversations ADD COLUMN context_tokens INTEGER;
     ALTER TABLE conversations ADD COLUMN context_window INTEGER;",
    // 10: spend and message limits: who asked for each run, and approvers' lifts. (Read once
    // at start into the limits' ledger: no index is kept up on the path of every message.)
    "ALTER TABLE run_costs ADD COLUMN author_id INTEGER;
     CREATE TABLE limit_lifts (
         user_id    INTEGER PRIMARY KEY,
         until_ms   INTEGER NOT NULL,
         lifted_by  INTEGER NOT NULL,
         at_ms      INTEGER NOT NULL
     );",
    // 11: prompts that are not chat messages (a schedule's runs, prompts over HTTP): where each
    // came from, the service's own message numbers for them, HTTP idempotency keys, and the
    // schedules.
    "ALTER TABLE inbox ADD COLUMN via TEXT;  -- NULL: a chat message; else JSON (`Via`)
     CREATE TABLE local_ids (next INTEGER NOT NULL);
     INSERT INTO local_ids (next) VALUES (1);
     CREATE TABLE http_prompts (
         idempotency_key TEXT PRIMARY KEY,
         conversation    TEXT    NOT NULL,
         author          TEXT    NOT NULL,
         content         TEXT    NOT NULL,
         message_id      INTEGER NOT NULL,
         accepted_at_ms  INTEGER NOT NULL
     );
     CREATE TABLE schedules (
         id              INTEGER PRIMARY KEY AUTOINCREMENT,
         conversation_id INTEGER NOT NULL,
         profile_id      INTEGER NOT NULL,
         conversation    TEXT    NOT NULL,
         channel_id      INTEGER NOT NULL,
         cron            TEXT    NOT NULL,
         prompt          TEXT    NOT NULL,
         created_by      INTEGER NOT NULL,
         created_at_ms   INTEGER NOT NULL,
         paused          INTEGER NOT NULL DEFAULT 0,
         checked_to_ms   INTEGER NOT NULL,  -- every run due at or before this was handled
         last_message_id INTEGER,           -- the inbox row of its latest run
         runs            INTEGER NOT NULL DEFAULT 0,
         skipped         INTEGER NOT NULL DEFAULT 0
     );",
];

/// How to open the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// The SQLite file; created with its directory if missing.
    pub path: PathBuf,
    /// Pooled connections, and store threads.
    pub pool_size: u32,
    /// How long a statement waits for another process's lock.
    pub busy_timeout: Duration,
}

/// Opens (creating if needed) and migrates the database, then builds the connection pool.
///
/// Blocking: call it at start-up (the binary does, on a blocking thread), never from an
/// async actor's handler.
pub fn open_pool(config: &StoreConfig) -> Result<Pool<SqliteConnectionManager>, StoreError> {
    let path = &config.path;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|cause| StoreError::CreateDir {
            path: path.clone(),
            cause,
        })?;
    }
    let open_err = |cause: rusqlite::Error| StoreError::Open {
        path: path.clone(),
        kind: classify(&cause),
        cause,
    };
    let busy = config.busy_timeout;
    // Open and migrate one connection directly first: r2d2 would retry a failing open until
    // its timeout and hide the cause.
    let opened = Connection::open(path).and_then(|conn| {
        prepare_connection(&conn, busy)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        Ok(conn)
    });
    let manager = match opened {
        Ok(mut conn) => {
            migrate(&mut conn, path)?;
            SqliteConnectionManager::file(path).with_init(move |c| prepare_connection(c, busy))
        }
        // A WAL database this user may not write, whose directory holds no `-shm` file (the
        // last writer closed cleanly): SQLite cannot set up its shared index, so it cannot
        // even read. Opened as immutable (no locks, no index) it can: this service cannot
        // write it anyway, and every save then fails with a clear "read-only" error while
        // the answers still go out. (A write by another process meanwhile may go unseen.)
        Err(cause) if classify(&cause) == DbFailure::ReadOnly => {
            warn!(
                path = %path.display(),
                "the session store is read-only for this user: conversations are read but cannot be saved"
            );
            let uri = immutable_uri(path);
            let mut conn =
                Connection::open_with_flags(&uri, read_only_flags()).map_err(open_err)?;
            prepare_connection(&conn, busy).map_err(open_err)?;
            migrate(&mut conn, path)?;
            SqliteConnectionManager::file(uri)
                .with_flags(read_only_flags())
                .with_init(move |c| prepare_connection(c, busy))
        }
        Err(cause) => return Err(open_err(cause)),
    };
    Pool::builder()
        .max_size(config.pool_size.max(1))
        .min_idle(Some(1))
        // SQLite connections to a local file do not go stale; skip the per-checkout probe.
        .test_on_check_out(false)
        .connection_timeout(busy + Duration::from_secs(1))
        .build(manager)
        .map_err(StoreError::Pool)
}

fn read_only_flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_URI | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

/// `file:PATH?immutable=1`, with the characters a URI path may not hold escaped.
fn immutable_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => uri.push_str("%25"),
            '?' => uri.push_str("%3F"),
            '#' => uri.push_str("%23"),
            c => uri.push(c),
        }
    }
    uri.push_str("?immutable=1");
    uri
}

fn prepare_connection(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy_timeout)?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // Reading the schema here turns "not a database" into an error at open, not at first use.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(()))
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let open_err = |cause: rusqlite::Error| StoreError::Open {
        path: path.to_path_buf(),
        kind: classify(&cause),
        cause,
    };
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(open_err)?;
    let supported = MIGRATIONS.len() as i64;
    if version > supported {
        return Err(StoreError::SchemaTooNew {
            path: path.to_path_buf(),
            found: version,
            supported,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction().map_err(open_err)?;
        tx.execute_batch(sql).map_err(open_err)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(open_err)?;
        tx.commit().map_err(open_err)?;
    }
    Ok(())
}

/// Whether the database accepts writes: takes and releases the write lock. Blocking; for
/// `check` at start-up.
pub fn check_writable(config: &StoreConfig) -> Result<(), StoreError> {
    let conn = Connection::open(&config.path).map_err(StoreError::database)?;
    conn.busy_timeout(config.busy_timeout)
        .map_err(StoreError::database)?;
    conn.execute_batch("BEGIN IMMEDIATE; ROLLBACK;")
        .map_err(StoreError::database)
}
