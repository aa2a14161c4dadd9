//! The session store: one row per conversation (a Discord channel or thread), in SQLite.
//!
//! [`SessionStoreActor`] runs on an actix `SyncArbiter` (one OS thread per pooled connection),
//! so SQLite's blocking calls never run on an async actor's thread. The database is opened in
//! WAL mode with a `busy_timeout`, and its schema is versioned with `PRAGMA user_version`.
//! Every failure is a [`StoreError`] that says what went wrong in words a user can act on; a
//! locked, read-only or corrupt file never panics the service.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::{Actor, Handler, Message, SyncArbiter, SyncContext};
use hdrhistogram::Histogram;
use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, Row};
use serde::Serialize;
use tracing::warn;

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// Load one conversation by its id.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<Conversation>, StoreError>")]
pub struct LoadConversation {
    /// Discord channel or thread id.
    pub id: u64,
}

/// Find a conversation by its human name (`sessions show NAME`).
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<Conversation>, StoreError>")]
pub struct FindConversation {
    /// The name given when the conversation was first recorded.
    pub name: String,
}

/// List every stored conversation, most recently updated first.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Conversation>, StoreError>")]
pub struct ListConversations;

/// Record the outcome of one Claude run: new session id, cost, counts, last error.
#[derive(Debug, Message)]
#[rtype(result = "Result<RecordedRun, StoreError>")]
pub struct RecordRun {
    /// Discord channel or thread id.
    pub id: u64,
    /// Human name, e.g. `backend` or `backend/fix-login` for a thread.
    pub name: String,
    /// The project directory the CLI ran in.
    pub project_dir: PathBuf,
    /// The model the CLI reported, if any.
    pub model: Option<String>,
    /// The session id to resume next time; `None` forgets it (the next message starts fresh).
    pub session_id: Option<String>,
    /// The cost the CLI reported, if it reported one.
    pub cost: Option<ReportedCost>,
    /// A short description of the failure, or `None` when the run succeeded.
    pub error: Option<String>,
}

/// Forget a conversation's session id, so its next message starts a new Claude session.
/// Counters and cost totals are kept.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct ResetConversation {
    /// Discord channel or thread id.
    pub id: u64,
}

/// Write everything in the WAL back into the database file (at shutdown).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Checkpoint;

/// Write a consistent copy of the database to `path` while the service runs (`VACUUM INTO`).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct BackupTo {
    /// The new file; must not exist.
    pub path: PathBuf,
}

/// Report the pool's occupancy and the operations so far (for the metrics log). The latency
/// percentile covers the operations since the previous ask.
#[derive(Debug, Message)]
#[rtype(result = "StoreStats")]
pub struct GetStoreStats;

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/// One conversation as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conversation {
    /// Discord channel or thread id.
    pub id: u64,
    /// Human name.
    pub name: String,
    /// The Claude CLI session id to `--resume`, if any.
    pub session_id: Option<String>,
    /// The directory the CLI runs in.
    pub project_dir: String,
    /// The model last reported by the CLI.
    pub model: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    /// Unix milliseconds.
    pub updated_at_ms: i64,
    /// Messages sent to Claude in this conversation.
    pub message_count: u64,
    /// Cost of this conversation in USD, over all its sessions.
    pub total_cost_usd: f64,
    /// Cost of the current session in USD (what a cumulative CLI reports next time).
    pub session_cost_usd: f64,
    /// The last run's failure, if the last run failed.
    pub last_error: Option<String>,
}

/// The cost a CLI run reported in `total_cost_usd`, and how to read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReportedCost {
    /// The value of `total_cost_usd`.
    pub total_usd: f64,
    /// True when the CLI reports the session's running total (2.1.330), false when it reports
    /// this call only (2.1.197).
    pub cumulative: bool,
}

impl ReportedCost {
    /// What this run cost and what the session has cost so far, given what was stored before.
    ///
    /// A different session id means a new session: its reported total is this run's cost.
    pub fn apply(
        self,
        previous_session: Option<&str>,
        previous_session_cost: f64,
        session: Option<&str>,
    ) -> CostUpdate {
        let same_session = previous_session.is_some() && previous_session == session;
        match (same_session, self.cumulative) {
            (true, true) => CostUpdate {
                run_usd: (self.total_usd - previous_session_cost).max(0.0),
                session_usd: self.total_usd,
            },
            (true, false) => CostUpdate {
                run_usd: self.total_usd,
                session_usd: previous_session_cost + self.total_usd,
            },
            (false, _) => CostUpdate {
                run_usd: self.total_usd,
                session_usd: self.total_usd,
            },
        }
    }
}

/// The result of [`ReportedCost::apply`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CostUpdate {
    /// What this one run cost.
    pub run_usd: f64,
    /// What the session has cost so far.
    pub session_usd: f64,
}

impl CostUpdate {
    /// The costs after a run that reported `cost` (or nothing), given what was stored before.
    pub fn after(
        cost: Option<ReportedCost>,
        previous_session: Option<&str>,
        previous_session_cost: f64,
        session: Option<&str>,
    ) -> Self {
        match cost {
            Some(c) => c.apply(previous_session, previous_session_cost, session),
            None => Self {
                run_usd: 0.0,
                session_usd: if session == previous_session {
                    previous_session_cost
                } else {
                    0.0
                },
            },
        }
    }
}

/// The answer to [`RecordRun`].
#[derive(Debug, Clone)]
pub struct RecordedRun {
    /// The row as it is now.
    pub conversation: Conversation,
    /// What this run cost in USD.
    pub run_cost_usd: f64,
}

/// The answer to [`GetStoreStats`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    /// Connections open.
    pub connections: u32,
    /// Connections idle.
    pub idle: u32,
    /// Operations since start.
    pub operations: u64,
    /// Failed operations since start.
    pub errors: u64,
    /// 95th percentile of operation latency since the previous ask, in microseconds.
    pub latency_p95_us: u64,
}

/// What kind of database failure happened, in terms a user can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// Another process holds a lock longer than `busy_timeout`.
    Busy,
    /// The file or its directory is not writable by this user.
    ReadOnly,
    /// The file is not a SQLite database, or is damaged.
    Corrupt,
    /// The file cannot be opened (missing directory, permissions).
    CannotOpen,
    /// The disk is full.
    Full,
    /// Anything else.
    Other,
}

impl std::fmt::Display for DbFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Busy => "the database is locked by another process",
            Self::ReadOnly => "the database is read-only",
            Self::Corrupt => "the database file is corrupt or not a SQLite database",
            Self::CannotOpen => "the database file cannot be opened",
            Self::Full => "the disk is full",
            Self::Other => "database error",
        })
    }
}

/// Errors at the session store's boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Creating the database's directory failed.
    #[error("cannot create the directory for {path}: {cause}")]
    CreateDir {
        /// The database path.
        path: PathBuf,
        /// The underlying error (in the message, so not also a `source`).
        cause: std::io::Error,
    },
    /// Opening or preparing the database failed.
    #[error("cannot open session store {path}: {kind} ({cause})")]
    Open {
        /// The database path.
        path: PathBuf,
        /// What kind of failure.
        kind: DbFailure,
        /// The underlying error (in the message, so not also a `source`).
        cause: rusqlite::Error,
    },
    /// The database was written by a newer version of this program.
    #[error("session store {path} has schema version {found}, newer than this build's {supported}; upgrade claude-coordinator")]
    SchemaTooNew {
        /// The database path.
        path: PathBuf,
        /// `user_version` in the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A query failed.
    #[error("session store: {kind} ({cause})")]
    Database {
        /// What kind of failure.
        kind: DbFailure,
        /// The underlying error (in the message, so not also a `source`).
        cause: rusqlite::Error,
    },
    /// No pooled connection became free in time.
    #[error("session store: no database connection available ({0})")]
    Pool(r2d2::Error),
    /// The store actor is gone (the service is shutting down).
    #[error("session store is not running")]
    Unavailable,
}

impl StoreError {
    fn database(cause: rusqlite::Error) -> Self {
        Self::Database {
            kind: classify(&cause),
            cause,
        }
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> Self {
        Self::Pool(e)
    }
}

impl From<actix::MailboxError> for StoreError {
    fn from(_: actix::MailboxError) -> Self {
        Self::Unavailable
    }
}

fn classify(e: &rusqlite::Error) -> DbFailure {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => DbFailure::Busy,
        Some(ErrorCode::ReadOnly) => DbFailure::ReadOnly,
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => DbFailure::Corrupt,
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => DbFailure::CannotOpen,
        Some(ErrorCode::DiskFull) => DbFailure::Full,
        _ => DbFailure::Other,
    }
}

// ---------------------------------------------------------------------------------------------
// Opening and migrating
// ---------------------------------------------------------------------------------------------

/// Schema migrations; `user_version` is the number applied. Append, never edit.
const MIGRATIONS: &[&str] = &["CREATE TABLE conversations (
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
    CREATE INDEX conversations_name ON conversations(name);"];

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

// ---------------------------------------------------------------------------------------------
// The actor
// ---------------------------------------------------------------------------------------------

/// Persists conversations. Runs on a `SyncArbiter`; start it with [`SessionStoreActor::start`].
pub struct SessionStoreActor {
    pool: Pool<SqliteConnectionManager>,
    shared: Arc<Shared>,
}

/// What the store's threads share besides the pool.
struct Shared {
    /// Held for every write transaction. SQLite takes one writer at a time; without this,
    /// two of our own threads would meet at the file lock, and the loser would sleep in
    /// SQLite's busy handler (1 ms and up) instead of waiting just as long as the write takes.
    write: Mutex<()>,
    /// Counted here rather than sent as a message per operation, which would wake the
    /// actors' thread for every store write.
    ops: Mutex<OpStats>,
}

struct OpStats {
    operations: u64,
    errors: u64,
    latency_us: Histogram<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding it leaves nothing half-done here worth refusing.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SessionStoreActor {
    /// Starts `threads` store actors sharing `pool`.
    pub fn start(pool: Pool<SqliteConnectionManager>, threads: usize) -> actix::Addr<Self> {
        let shared = Arc::new(Shared {
            write: Mutex::new(()),
            ops: Mutex::new(OpStats {
                operations: 0,
                errors: 0,
                // One hour in microseconds, 2 significant digits: a few KiB.
                latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 2)
                    .expect("valid histogram bounds"),
            }),
        });
        SyncArbiter::start(threads.max(1), move || Self {
            pool: pool.clone(),
            shared: Arc::clone(&shared),
        })
    }

    /// Runs `op`, counting its duration and success.
    fn timed<T>(&self, op: impl FnOnce(&Self) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = op(self);
        let latency = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut ops = lock(&self.shared.ops);
        ops.operations += 1;
        ops.errors += u64::from(result.is_err());
        let _ = ops.latency_us.record(latency.max(1));
        result
    }

    /// Runs a write `op` while holding the store's write lock.
    fn write<T>(&self, op: impl FnOnce(&Self) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.timed(|s| {
            let _writing = lock(&s.shared.write);
            op(s)
        })
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<SqliteConnectionManager>, StoreError> {
        Ok(self.pool.get()?)
    }
}

impl Actor for SessionStoreActor {
    type Context = SyncContext<Self>;
}

/// Discord ids are u64; SQLite integers are i64. Store the same 64 bits.
fn to_sql_id(id: u64) -> i64 {
    i64::from_ne_bytes(id.to_ne_bytes())
}

fn from_sql_id(id: i64) -> u64 {
    u64::from_ne_bytes(id.to_ne_bytes())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The columns of a [`Conversation`], in [`row_to_conversation`]'s order.
macro_rules! columns {
    () => {
        "id, name, session_id, project_dir, model, created_at_ms, updated_at_ms, \
         message_count, total_cost_usd, session_cost_usd, last_error"
    };
}

const SELECT_BY_ID: &str = concat!("SELECT ", columns!(), " FROM conversations WHERE id = ?1");
const SELECT_BY_NAME: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM conversations WHERE name = ?1 ORDER BY updated_at_ms DESC LIMIT 1"
);
const SELECT_ALL: &str = concat!(
    "SELECT ",
    columns!(),
    " FROM conversations ORDER BY updated_at_ms DESC, name"
);
const INSERT: &str = concat!(
    "INSERT INTO conversations (",
    columns!(),
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
);
// `name` is indexed: it is only written when it changed (threads can be renamed).
const UPDATE: &str = "UPDATE conversations SET session_id = ?3, project_dir = ?4, model = ?5, \
     updated_at_ms = ?7, message_count = ?8, total_cost_usd = ?9, session_cost_usd = ?10, \
     last_error = ?11 WHERE id = ?1 AND name = ?2";
const RENAME: &str = "UPDATE conversations SET name = ?2 WHERE id = ?1";

fn row_to_conversation(r: &Row<'_>) -> rusqlite::Result<Conversation> {
    Ok(Conversation {
        id: from_sql_id(r.get(0)?),
        name: r.get(1)?,
        session_id: r.get(2)?,
        project_dir: r.get(3)?,
        model: r.get(4)?,
        created_at_ms: r.get(5)?,
        updated_at_ms: r.get(6)?,
        message_count: r.get::<_, i64>(7)?.max(0) as u64,
        total_cost_usd: r.get(8)?,
        session_cost_usd: r.get(9)?,
        last_error: r.get(10)?,
    })
}

fn load(conn: &Connection, id: u64) -> rusqlite::Result<Option<Conversation>> {
    conn.prepare_cached(SELECT_BY_ID)?
        .query_row([to_sql_id(id)], row_to_conversation)
        .optional()
}

impl Handler<LoadConversation> for SessionStoreActor {
    type Result = Result<Option<Conversation>, StoreError>;

    fn handle(&mut self, msg: LoadConversation, _: &mut Self::Context) -> Self::Result {
        self.timed(|s| load(&*s.conn()?, msg.id).map_err(StoreError::database))
    }
}

impl Handler<FindConversation> for SessionStoreActor {
    type Result = Result<Option<Conversation>, StoreError>;

    fn handle(&mut self, msg: FindConversation, _: &mut Self::Context) -> Self::Result {
        self.timed(|s| {
            s.conn()?
                .prepare_cached(SELECT_BY_NAME)
                .and_then(|mut st| st.query_row([&msg.name], row_to_conversation).optional())
                .map_err(StoreError::database)
        })
    }
}

impl Handler<ListConversations> for SessionStoreActor {
    type Result = Result<Vec<Conversation>, StoreError>;

    fn handle(&mut self, _: ListConversations, _: &mut Self::Context) -> Self::Result {
        self.timed(|s| {
            let conn = s.conn()?;
            let mut stmt = conn
                .prepare_cached(SELECT_ALL)
                .map_err(StoreError::database)?;
            let rows = stmt
                .query_map([], row_to_conversation)
                .map_err(StoreError::database)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(StoreError::database)
        })
    }
}

impl Handler<RecordRun> for SessionStoreActor {
    type Result = Result<RecordedRun, StoreError>;

    fn handle(&mut self, msg: RecordRun, _: &mut Self::Context) -> Self::Result {
        self.write(|s| record_run(&mut *s.conn()?, msg).map_err(StoreError::database))
    }
}

fn record_run(conn: &mut Connection, msg: RecordRun) -> rusqlite::Result<RecordedRun> {
    // IMMEDIATE: take the write lock before reading, so the cost arithmetic sees the last write.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = now_ms();
    let previous = load(&tx, msg.id)?;
    let previous_session = previous.as_ref().and_then(|p| p.session_id.as_deref());
    let previous_session_cost = previous.as_ref().map_or(0.0, |p| p.session_cost_usd);
    let update = CostUpdate::after(
        msg.cost,
        previous_session,
        previous_session_cost,
        msg.session_id.as_deref(),
    );
    let row = Conversation {
        id: msg.id,
        name: msg.name,
        session_id: msg.session_id,
        project_dir: msg.project_dir.to_string_lossy().into_owned(),
        model: msg
            .model
            .or_else(|| previous.as_ref().and_then(|p| p.model.clone())),
        created_at_ms: previous.as_ref().map_or(now, |p| p.created_at_ms),
        updated_at_ms: now,
        message_count: previous.as_ref().map_or(0, |p| p.message_count) + 1,
        total_cost_usd: previous.as_ref().map_or(0.0, |p| p.total_cost_usd) + update.run_usd,
        session_cost_usd: update.session_usd,
        last_error: msg.error,
    };
    let values = params![
        to_sql_id(row.id),
        row.name,
        row.session_id,
        row.project_dir,
        row.model,
        row.created_at_ms,
        row.updated_at_ms,
        row.message_count as i64,
        row.total_cost_usd,
        row.session_cost_usd,
        row.last_error,
    ];
    match &previous {
        None => {
            tx.prepare_cached(INSERT)?.execute(values)?;
        }
        Some(p) => {
            if p.name != row.name {
                tx.prepare_cached(RENAME)?
                    .execute(params![to_sql_id(row.id), row.name])?;
            }
            tx.prepare_cached(UPDATE)?.execute(values)?;
        }
    }
    tx.commit()?;
    Ok(RecordedRun {
        conversation: row,
        run_cost_usd: update.run_usd,
    })
}

impl Handler<ResetConversation> for SessionStoreActor {
    type Result = Result<bool, StoreError>;

    fn handle(&mut self, msg: ResetConversation, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            let changed = s
                .conn()?
                .execute(
                    "UPDATE conversations SET session_id = NULL, session_cost_usd = 0, last_error = NULL,
                         updated_at_ms = ?2 WHERE id = ?1",
                    params![to_sql_id(msg.id), now_ms()],
                )
                .map_err(StoreError::database)?;
            Ok(changed > 0)
        })
    }
}

impl Handler<Checkpoint> for SessionStoreActor {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, _: Checkpoint, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            s.conn()?
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(StoreError::database)
        })
    }
}

impl Handler<BackupTo> for SessionStoreActor {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, msg: BackupTo, _: &mut Self::Context) -> Self::Result {
        // One read transaction: a consistent copy even while runs are being recorded.
        self.timed(|s| {
            s.conn()?
                .execute("VACUUM INTO ?1", [msg.path.to_string_lossy()])
                .map(|_| ())
                .map_err(StoreError::database)
        })
    }
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

impl Handler<GetStoreStats> for SessionStoreActor {
    type Result = actix::MessageResult<GetStoreStats>;

    fn handle(&mut self, _: GetStoreStats, _: &mut Self::Context) -> Self::Result {
        let pool = self.pool.state();
        let mut ops = lock(&self.shared.ops);
        let latency_p95_us = if ops.latency_us.is_empty() {
            0
        } else {
            ops.latency_us.value_at_quantile(0.95)
        };
        ops.latency_us.reset();
        actix::MessageResult(StoreStats {
            connections: pool.connections,
            idle: pool.idle_connections,
            operations: ops.operations,
            errors: ops.errors,
            latency_p95_us,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_cost_on_the_same_session_counts_only_the_increase() {
        let c = ReportedCost {
            total_usd: 0.15,
            cumulative: true,
        };
        let u = c.apply(Some("s1"), 0.10, Some("s1"));
        assert!((u.run_usd - 0.05).abs() < 1e-12);
        assert!((u.session_usd - 0.15).abs() < 1e-12);
    }

    #[test]
    fn per_call_cost_on_the_same_session_adds_up() {
        let c = ReportedCost {
            total_usd: 0.05,
            cumulative: false,
        };
        let u = c.apply(Some("s1"), 0.10, Some("s1"));
        assert!((u.run_usd - 0.05).abs() < 1e-12);
        assert!((u.session_usd - 0.15).abs() < 1e-12);
    }

    #[test]
    fn a_new_session_starts_its_cost_from_what_was_reported() {
        for cumulative in [true, false] {
            let c = ReportedCost {
                total_usd: 0.07,
                cumulative,
            };
            let u = c.apply(Some("old"), 0.50, Some("new"));
            assert!((u.run_usd - 0.07).abs() < 1e-12);
            assert!((u.session_usd - 0.07).abs() < 1e-12);
            let u = c.apply(None, 0.0, Some("new"));
            assert!((u.run_usd - 0.07).abs() < 1e-12);
        }
    }

    #[test]
    fn ids_keep_all_64_bits() {
        for id in [0, 1, u64::MAX, 1 << 63, 1_234_567_890_123_456_789] {
            assert_eq!(from_sql_id(to_sql_id(id)), id);
        }
    }
}
