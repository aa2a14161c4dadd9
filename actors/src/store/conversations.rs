//! The `conversations` table: one row per conversation — its Claude session id, project
//! directory, model, counts, cost and last error. A run's record is written here together with
//! its reply (outbox), its message marked answered (inbox) and its cost (run costs), in one
//! transaction.

use std::path::PathBuf;

use actix::{Handler, Message};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde::Serialize;

use super::outbox::{self, Outgoing};
use super::{from_sql_id, inbox, sessions, to_sql_id, InboxState, SessionStoreActor, StoreError};
use crate::cost::CostUpdate;
use crate::ids::{ChannelId, ConversationId};
use crate::time::unix_ms;

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// Load one conversation by its id.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<Conversation>, StoreError>")]
pub struct LoadConversation {
    /// Discord channel or thread id.
    pub id: ConversationId,
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

/// Start a conversation (a thread just made by `/claude fork`) from a copy of another's
/// session: its first run resumes `session_id` with `--fork-session`, in `project_dir`, and
/// records the copy's own session id.
/// Answers `false` (and changes nothing) if the conversation has a session already.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct SeedFork {
    /// The new conversation (the thread).
    pub id: ConversationId,
    /// Its name.
    pub name: String,
    /// The configured channel whose settings apply.
    pub profile_id: ChannelId,
    /// Where the session being copied was run.
    pub project_dir: PathBuf,
    /// The session being copied.
    pub session_id: String,
    /// What that session has cost so far (a forked session's reported cost goes on from it:
    /// `o_fork_live`).
    pub session_cost_usd: f64,
}

/// Record the outcome of one Claude run: new session id, cost, counts, last error.
#[derive(Debug, Message)]
#[rtype(result = "Result<RecordedRun, StoreError>")]
pub struct RecordRun {
    /// Discord channel or thread id.
    pub id: ConversationId,
    /// Human name, e.g. `backend` or `backend/fix-login` for a thread.
    pub name: String,
    /// The configured channel whose settings apply (itself, or a thread's parent).
    pub profile_id: ChannelId,
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
    /// How full the context window was after the run (tokens, window), if it said.
    pub context: Option<(u64, Option<u64>)>,
    /// Who asked for the run (`None`: the service itself), for spend limits.
    pub author: Option<crate::ids::UserId>,
}

/// Forget a conversation's session id, so its next message starts a new Claude session.
/// Counters, cost totals and its "always" rules (which only approvers may clear) are kept.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct ResetConversation {
    /// Discord channel or thread id.
    pub id: ConversationId,
}

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/// One conversation as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Conversation {
    /// Discord channel or thread id.
    pub id: ConversationId,
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
    /// The session is a copy still to be made: the next run resumes it with `--fork-session`.
    pub fork_pending: bool,
    /// Tokens in the context window after the last run that said.
    pub context_tokens: Option<u64>,
    /// The model's context window, as the last run that said reported it.
    pub context_window: Option<u64>,
}

/// The answer to [`RecordRun`].
#[derive(Debug, Clone)]
pub struct RecordedRun {
    /// The row as it is now.
    pub conversation: Conversation,
    /// What this run cost in USD.
    pub run_cost_usd: f64,
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

/// The columns of a [`Conversation`], in [`row_to_conversation`]'s order.
macro_rules! columns {
    () => {
        "id, name, session_id, project_dir, model, created_at_ms, updated_at_ms, \
         message_count, total_cost_usd, session_cost_usd, last_error, fork_pending, \
         context_tokens, context_window"
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
    ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
);
// `name` is indexed: it is only written when it changed (threads can be renamed).
const UPDATE: &str = "UPDATE conversations SET session_id = ?3, project_dir = ?4, model = ?5, \
     updated_at_ms = ?7, message_count = ?8, total_cost_usd = ?9, session_cost_usd = ?10, \
     last_error = ?11, fork_pending = ?12, context_tokens = ?13, context_window = ?14 \
     WHERE id = ?1 AND name = ?2";
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
        fork_pending: r.get(11)?,
        context_tokens: r.get::<_, Option<i64>>(12)?.map(|t| t.max(0) as u64),
        context_window: r.get::<_, Option<i64>>(13)?.map(|t| t.max(0) as u64),
    })
}

fn load(conn: &Connection, id: ConversationId) -> rusqlite::Result<Option<Conversation>> {
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
    let now = unix_ms();
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
        fork_pending: false,
        context_tokens: msg
            .context
            .map(|(t, _)| t)
            .or_else(|| previous.as_ref().and_then(|p| p.context_tokens)),
        context_window: msg
            .context
            .and_then(|(_, w)| w)
            .or_else(|| previous.as_ref().and_then(|p| p.context_window)),
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
        msg.author,
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
        row.fork_pending,
        row.context_tokens.map(|t| t as i64),
        row.context_window.map(|t| t as i64),
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

impl Handler<SeedFork> for SessionStoreActor {
    type Result = Result<bool, StoreError>;

    fn handle(&mut self, msg: SeedFork, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            let mut conn = s.conn()?;
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(StoreError::database)?;
            let existing = load(&tx, msg.id).map_err(StoreError::database)?;
            if existing.as_ref().is_some_and(|c| c.session_id.is_some()) {
                return Ok(false);
            }
            let now = unix_ms();
            tx.execute(
                "INSERT INTO conversations (id, name, session_id, project_dir, created_at_ms, \
                 updated_at_ms, message_count, total_cost_usd, session_cost_usd, fork_pending) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5, 0, 0, ?6, 1) \
                 ON CONFLICT(id) DO UPDATE SET session_id = ?3, project_dir = ?4, \
                 updated_at_ms = ?5, session_cost_usd = ?6, fork_pending = 1",
                params![
                    to_sql_id(msg.id),
                    msg.name,
                    msg.session_id,
                    msg.project_dir.to_string_lossy(),
                    now,
                    msg.session_cost_usd,
                ],
            )
            .map_err(StoreError::database)?;
            tx.commit().map_err(StoreError::database)?;
            Ok(true)
        })
    }
}

impl Handler<ResetConversation> for SessionStoreActor {
    type Result = Result<bool, StoreError>;

    fn handle(&mut self, msg: ResetConversation, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            let changed = s
                .conn()?
                .execute(
                    "UPDATE conversations SET session_id = NULL, session_cost_usd = 0, last_error = NULL,
                         fork_pending = 0, context_tokens = NULL, updated_at_ms = ?2 WHERE id = ?1",
                    params![to_sql_id(msg.id), unix_ms()],
                )
                .map_err(StoreError::database)?;
            Ok(changed > 0)
        })
    }
}
