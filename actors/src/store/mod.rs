//! The session store: one row per conversation (a Discord channel or thread), in SQLite.
//!
//! [`SessionStoreActor`] runs on an actix `SyncArbiter` (one OS thread per pooled connection),
//! so SQLite's blocking calls never run on an async actor's thread. The database is opened in
//! WAL mode with a `busy_timeout`, and its schema is versioned with `PRAGMA user_version`.
//! Every failure is a [`StoreError`] that says what went wrong in words a user can act on; a
//! locked, read-only or corrupt file never panics the service.
//!
//! Files: `open` (opening, migrations), `error` (what can go wrong), `inbox` (accepted
//! messages until they are answered), `outbox` (replies until they are delivered), `sessions`
//! (each conversation's sessions, run costs, and model and mode chosen from chat).

mod error;
mod inbox;
mod open;
mod outbox;
mod sessions;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use actix::{Actor, Handler, Message, SyncArbiter, SyncContext};
use hdrhistogram::Histogram;
use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

pub use error::{DbFailure, StoreError};
pub use inbox::{
    AcceptMessage, AttachmentMeta, Inbound, InboxState, LastSeen, ListLastSeen, MarkMessage,
    PruneDelivered, RetryInterrupted, TakeUnfinished, Unfinished,
};
pub use open::{check_writable, open_pool, StoreConfig};
pub use outbox::{Delivery, ListUndelivered, Outgoing, RecordDelivery};
pub use sessions::{
    GetUsage, ListSessions, LoadOverrides, Overrides, ResumeSession, SaveOverrides, SessionRecord,
    Usage,
};

use crate::cost::CostUpdate;

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
    /// The configured channel whose settings apply (itself, or a thread's parent).
    pub profile_id: u64,
    /// The project directory the CLI ran in.
    pub project_dir: PathBuf,
    /// The model the CLI reported, if any.
    pub model: Option<String>,
    /// The session id to resume next time; `None` forgets it (the next message starts fresh).
    pub session_id: Option<String>,
    /// What the run cost, and what its session has cost so far (computed by the run).
    pub cost: CostUpdate,
    /// A short description of the failure, or `None` when the run succeeded.
    pub error: Option<String>,
    /// The reply, stored in the outbox in the same transaction (its message marked answered).
    pub reply: Option<Outgoing>,
}

/// Forget a conversation's session id, so its next message starts a new Claude session.
/// Counters, cost totals and its "always" rules (which only approvers may clear) are kept.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct ResetConversation {
    /// Discord channel or thread id.
    pub id: u64,
}

/// The conversation's stored "always" rules (`Bash(touch x)`), oldest first.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<String>, StoreError>")]
pub struct LoadRules {
    /// Discord channel or thread id.
    pub id: u64,
}

/// Store "always" rules for a conversation (already stored ones are kept once).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct AddRules {
    /// Discord channel or thread id.
    pub id: u64,
    /// The rules, as the CLI spells them.
    pub rules: Vec<String>,
}

/// Forget a conversation's "always" rules; answers how many there were.
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, StoreError>")]
pub struct ClearRules {
    /// Discord channel or thread id.
    pub id: u64,
}

/// Record one permission decision in the audit.
#[derive(Debug, Clone, Message, PartialEq, Serialize)]
#[rtype(result = "Result<(), StoreError>")]
pub struct RecordApproval {
    /// Discord channel or thread id.
    pub conversation_id: u64,
    /// Its name.
    pub conversation: String,
    /// The tool asked for.
    pub tool: String,
    /// What was asked (bounded).
    pub summary: String,
    /// `allowed`, `allowed always`, `answered`, `denied`, `timed out`, `withdrawn`.
    pub decision: String,
    /// Who decided (none for a timeout or withdrawal).
    pub decided_by: Option<String>,
    /// The rule stored, for "always".
    pub rule: Option<String>,
    /// Unix milliseconds.
    pub at_ms: i64,
}

/// The audit, newest first: every decision, or one conversation's.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<RecordApproval>, StoreError>")]
pub struct ListApprovals {
    /// Only this conversation.
    pub conversation_id: Option<u64>,
}

/// A CLI process started (pid, and its kernel start time).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct RecordProcess {
    /// Its pid (its process group's id).
    pub pid: i32,
    /// `/proc/<pid>/stat` field 22.
    pub start_time: u64,
}

/// A CLI process was reaped.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct ForgetProcess {
    /// Its pid.
    pub pid: i32,
}

/// The CLI processes recorded as running (by an earlier instance, at start-up), forgotten as
/// they are handed out: (pid, start time).
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<(i32, u64)>, StoreError>")]
pub struct TakeLeftProcesses;

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
    // IMMEDIATE: take the write lock before reading, so the counts add to the last write.
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let now = now_ms();
    let previous = load(&tx, msg.id)?;
    let update = msg.cost;
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
    if let Some(reply) = &msg.reply {
        inbox::mark(&tx, reply.message_id, InboxState::Answered)?;
        outbox::insert(&tx, reply)?;
    }
    sessions::record_run(
        &tx,
        row.id,
        msg.profile_id,
        row.session_id.as_deref(),
        update.run_usd,
    )?;
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

impl Handler<LoadRules> for SessionStoreActor {
    type Result = Result<Vec<String>, StoreError>;

    fn handle(&mut self, msg: LoadRules, _: &mut Self::Context) -> Self::Result {
        self.timed(|s| {
            let conn = s.conn()?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT rule FROM permission_rules WHERE conversation_id = ?1 ORDER BY created_at_ms, rule",
                )
                .map_err(StoreError::database)?;
            let rows = stmt
                .query_map([to_sql_id(msg.id)], |r| r.get(0))
                .map_err(StoreError::database)?;
            rows.collect::<rusqlite::Result<Vec<String>>>()
                .map_err(StoreError::database)
        })
    }
}

impl Handler<AddRules> for SessionStoreActor {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, msg: AddRules, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            let mut conn = s.conn()?;
            let tx = conn.transaction().map_err(StoreError::database)?;
            for rule in &msg.rules {
                tx.execute(
                    "INSERT OR IGNORE INTO permission_rules (conversation_id, rule, created_at_ms) VALUES (?1, ?2, ?3)",
                    params![to_sql_id(msg.id), rule, now_ms()],
                )
                .map_err(StoreError::database)?;
            }
            tx.commit().map_err(StoreError::database)
        })
    }
}

impl Handler<ClearRules> for SessionStoreActor {
    type Result = Result<usize, StoreError>;

    fn handle(&mut self, msg: ClearRules, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            s.conn()?
                .execute(
                    "DELETE FROM permission_rules WHERE conversation_id = ?1",
                    [to_sql_id(msg.id)],
                )
                .map_err(StoreError::database)
        })
    }
}

impl Handler<RecordApproval> for SessionStoreActor {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, msg: RecordApproval, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            s.conn()?
                .execute(
                    "INSERT INTO approvals (conversation_id, conversation, tool, summary, decision, decided_by, rule, at_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        to_sql_id(msg.conversation_id),
                        msg.conversation,
                        msg.tool,
                        msg.summary,
                        msg.decision,
                        msg.decided_by,
                        msg.rule,
                        msg.at_ms
                    ],
                )
                .map(|_| ())
                .map_err(StoreError::database)
        })
    }
}

impl Handler<ListApprovals> for SessionStoreActor {
    type Result = Result<Vec<RecordApproval>, StoreError>;

    fn handle(&mut self, msg: ListApprovals, _: &mut Self::Context) -> Self::Result {
        self.timed(|s| {
            let conn = s.conn()?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT conversation_id, conversation, tool, summary, decision, decided_by, rule, at_ms \
                     FROM approvals WHERE ?1 IS NULL OR conversation_id = ?1 ORDER BY at_ms DESC, id DESC",
                )
                .map_err(StoreError::database)?;
            let rows = stmt
                .query_map([msg.conversation_id.map(to_sql_id)], |r| {
                    Ok(RecordApproval {
                        conversation_id: from_sql_id(r.get(0)?),
                        conversation: r.get(1)?,
                        tool: r.get(2)?,
                        summary: r.get(3)?,
                        decision: r.get(4)?,
                        decided_by: r.get(5)?,
                        rule: r.get(6)?,
                        at_ms: r.get(7)?,
                    })
                })
                .map_err(StoreError::database)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(StoreError::database)
        })
    }
}

impl Handler<RecordProcess> for SessionStoreActor {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, msg: RecordProcess, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            s.conn()?
                .execute(
                    "INSERT OR REPLACE INTO cli_processes (pid, start_time) VALUES (?1, ?2)",
                    params![msg.pid, i64::try_from(msg.start_time).unwrap_or(i64::MAX)],
                )
                .map(|_| ())
                .map_err(StoreError::database)
        })
    }
}

impl Handler<ForgetProcess> for SessionStoreActor {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, msg: ForgetProcess, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            s.conn()?
                .execute("DELETE FROM cli_processes WHERE pid = ?1", [msg.pid])
                .map(|_| ())
                .map_err(StoreError::database)
        })
    }
}

impl Handler<TakeLeftProcesses> for SessionStoreActor {
    type Result = Result<Vec<(i32, u64)>, StoreError>;

    fn handle(&mut self, _: TakeLeftProcesses, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            let mut conn = s.conn()?;
            let tx = conn.transaction().map_err(StoreError::database)?;
            let left = {
                let mut stmt = tx
                    .prepare("SELECT pid, start_time FROM cli_processes")
                    .map_err(StoreError::database)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((r.get::<_, i32>(0)?, r.get::<_, i64>(1)?.max(0) as u64))
                    })
                    .map_err(StoreError::database)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(StoreError::database)?
            };
            tx.execute("DELETE FROM cli_processes", [])
                .map_err(StoreError::database)?;
            tx.commit().map_err(StoreError::database)?;
            Ok(left)
        })
    }
}

/// Unix milliseconds now, for records made outside the store.
pub fn unix_ms() -> i64 {
    now_ms()
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
    fn ids_keep_all_64_bits() {
        for id in [0, 1, u64::MAX, 1 << 63, 1_234_567_890_123_456_789] {
            assert_eq!(from_sql_id(to_sql_id(id)), id);
        }
    }
}
