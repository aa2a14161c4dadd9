//! What each conversation did: its Claude sessions (for `sessions` and `resume`), the cost of
//! each run (for `usage`), and the model and permission mode chosen for it from chat.
//!
//! Sessions and run costs are written in the transaction of the run's record; run costs are
//! pruned with the inbox (`recovery.retention_days`), sessions are kept.

use actix::{Handler, Message};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::claude::PermissionMode;

use super::{to_sql_id, SessionStoreActor, StoreError};
use crate::ids::{ChannelId, ConversationId};
use crate::time::unix_ms;

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// A conversation's sessions, most recent first.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<SessionRecord>, StoreError>")]
pub struct ListSessions {
    /// The conversation.
    pub conversation_id: ConversationId,
}

/// Make `session_id` — one of the conversation's own sessions — the one its next message
/// resumes. Answers whether it was one of them.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct ResumeSession {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// The session to go back to.
    pub session_id: String,
    /// A session this conversation never had (one started in a terminal, whose file the caller
    /// found in the CLI's own session files for the project directory): taken on, from here.
    pub adopt: Option<AdoptSession>,
}

/// Where an adopted session was made.
#[derive(Debug, Clone)]
pub struct AdoptSession {
    /// The conversation's name (its row is made if it has none yet).
    pub name: String,
    /// Its configured channel.
    pub profile_id: ChannelId,
    /// The project directory the session belongs to.
    pub project_dir: std::path::PathBuf,
}

/// What a conversation, its channel and today (all conversations) cost.
#[derive(Debug, Message)]
#[rtype(result = "Result<Usage, StoreError>")]
pub struct GetUsage {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Its configured channel.
    pub profile_id: ChannelId,
    /// The start of "today", unix ms.
    pub day_start_ms: i64,
}

/// The model and permission mode chosen for a conversation from chat.
#[derive(Debug, Message)]
#[rtype(result = "Result<Overrides, StoreError>")]
pub struct LoadOverrides {
    /// The conversation.
    pub conversation_id: ConversationId,
}

/// Store the model and permission mode chosen for a conversation (`None`: the channel's).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct SaveOverrides {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// What to store.
    pub overrides: Overrides,
}

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/// One Claude session of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRecord {
    /// The CLI's session id.
    pub session_id: String,
    /// Unix ms of its first and last run.
    pub first_at_ms: i64,
    /// Unix ms.
    pub last_at_ms: i64,
    /// Runs in it.
    pub messages: u64,
    /// What they cost.
    pub cost_usd: f64,
}

/// The answer to [`GetUsage`], in USD.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    /// This conversation, over all its sessions.
    pub conversation_usd: f64,
    /// Its channel and the channel's threads.
    pub channel_usd: f64,
    /// Every conversation since `day_start_ms`.
    pub today_usd: f64,
    /// Runs since `day_start_ms`.
    pub today_runs: u64,
}

/// A conversation's choices made from chat.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Overrides {
    /// `--model`.
    pub model: Option<String>,
    /// `--permission-mode`.
    pub permission_mode: Option<PermissionMode>,
    /// The channel's configured mode when `permission_mode` was chosen: the choice holds only
    /// while that is still the channel's mode (and the channel allows mode changes).
    pub mode_under: Option<PermissionMode>,
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

/// Counts a run of `session` (if any) costing `cost` in a caller's transaction.
pub(super) fn record_run(
    conn: &Connection,
    conversation_id: ConversationId,
    profile_id: ChannelId,
    session: Option<&str>,
    cost: f64,
    author: Option<crate::ids::UserId>,
) -> rusqlite::Result<()> {
    let now = unix_ms();
    if let Some(session) = session {
        conn.prepare_cached(
            "INSERT INTO sessions (conversation_id, session_id, profile_id, first_at_ms, last_at_ms, messages, cost_usd) \
             VALUES (?1, ?2, ?3, ?4, ?4, 1, ?5) ON CONFLICT (conversation_id, session_id) DO UPDATE SET \
             last_at_ms = ?4, messages = messages + 1, cost_usd = cost_usd + ?5",
        )?
        .execute(params![to_sql_id(conversation_id), session, to_sql_id(profile_id), now, cost])?;
    }
    conn.prepare_cached(
        "INSERT INTO run_costs (at_ms, conversation_id, profile_id, cost_usd, author_id) \
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        now,
        to_sql_id(conversation_id),
        to_sql_id(profile_id),
        cost,
        author.map(to_sql_id)
    ])?;
    Ok(())
}

impl Handler<ListSessions> for SessionStoreActor {
    type Result = Result<Vec<SessionRecord>, StoreError>;

    fn handle(&mut self, msg: ListSessions, _: &mut Self::Context) -> Self::Result {
        self.timed(|s| {
            let conn = s.conn()?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT session_id, first_at_ms, last_at_ms, messages, cost_usd FROM sessions \
                     WHERE conversation_id = ?1 ORDER BY last_at_ms DESC, rowid DESC",
                )
                .map_err(StoreError::database)?;
            let rows = stmt
                .query_map([to_sql_id(msg.conversation_id)], |r| {
                    Ok(SessionRecord {
                        session_id: r.get(0)?,
                        first_at_ms: r.get(1)?,
                        last_at_ms: r.get(2)?,
                        messages: r.get::<_, i64>(3)?.max(0) as u64,
                        cost_usd: r.get(4)?,
                    })
                })
                .map_err(StoreError::database)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(StoreError::database)
        })
    }
}

impl Handler<ResumeSession> for SessionStoreActor {
    type Result = Result<bool, StoreError>;

    fn handle(&mut self, msg: ResumeSession, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            let mut conn = s.conn()?;
            let tx = conn.transaction().map_err(StoreError::database)?;
            let id = to_sql_id(msg.conversation_id);
            let cost: Option<f64> = tx
                .query_row(
                    "SELECT cost_usd FROM sessions WHERE conversation_id = ?1 AND session_id = ?2",
                    params![id, msg.session_id],
                    |r| r.get(0),
                )
                .optional()
                .map_err(StoreError::database)?;
            let cost = match (cost, &msg.adopt) {
                (Some(cost), _) => cost,
                (None, None) => return Ok(false),
                (None, Some(adopt)) => {
                    // What it cost in the terminal is not known here: this conversation's
                    // costs start from it.
                    let now = unix_ms();
                    tx.execute(
                        "INSERT INTO sessions (conversation_id, session_id, profile_id, first_at_ms, \
                         last_at_ms, messages, cost_usd) VALUES (?1, ?2, ?3, ?4, ?4, 0, 0)",
                        params![id, msg.session_id, to_sql_id(adopt.profile_id), now],
                    )
                    .map_err(StoreError::database)?;
                    tx.execute(
                        "INSERT INTO conversations (id, name, project_dir, created_at_ms, updated_at_ms, \
                         message_count, total_cost_usd, session_cost_usd) VALUES (?1, ?2, ?3, ?4, ?4, 0, 0, 0) \
                         ON CONFLICT(id) DO UPDATE SET project_dir = ?3",
                        params![id, adopt.name, adopt.project_dir.to_string_lossy(), now],
                    )
                    .map_err(StoreError::database)?;
                    0.0
                }
            };
            // The CLI reports a session's cost cumulatively: carry on from what it had.
            tx.execute(
                "UPDATE conversations SET session_id = ?2, session_cost_usd = ?3, fork_pending = 0, \
                 updated_at_ms = ?4 WHERE id = ?1",
                params![id, msg.session_id, cost, unix_ms()],
            )
            .map_err(StoreError::database)?;
            tx.commit().map_err(StoreError::database)?;
            Ok(true)
        })
    }
}

impl Handler<GetUsage> for SessionStoreActor {
    type Result = Result<Usage, StoreError>;

    fn handle(&mut self, msg: GetUsage, _: &mut Self::Context) -> Self::Result {
        self.timed(|s| {
            let conn = s.conn()?;
            let sum = |sql: &str, p: i64| -> rusqlite::Result<f64> {
                conn.query_row(sql, [p], |r| r.get::<_, Option<f64>>(0))
                    .map(Option::unwrap_or_default)
            };
            let conversation_usd = sum(
                "SELECT total_cost_usd FROM conversations WHERE id = ?1",
                to_sql_id(msg.conversation_id),
            )
            .map_err(StoreError::database)?;
            let channel_usd = sum(
                "SELECT SUM(cost_usd) FROM sessions WHERE profile_id = ?1",
                to_sql_id(msg.profile_id),
            )
            .map_err(StoreError::database)?;
            let (today_usd, today_runs) = conn
                .query_row(
                    "SELECT SUM(cost_usd), COUNT(*) FROM run_costs WHERE at_ms >= ?1",
                    [msg.day_start_ms],
                    |r| Ok((r.get::<_, Option<f64>>(0)?, r.get::<_, i64>(1)?)),
                )
                .map_err(StoreError::database)?;
            Ok(Usage {
                conversation_usd,
                channel_usd,
                today_usd: today_usd.unwrap_or_default(),
                today_runs: today_runs.max(0) as u64,
            })
        })
    }
}

impl Handler<LoadOverrides> for SessionStoreActor {
    type Result = Result<Overrides, StoreError>;

    fn handle(&mut self, msg: LoadOverrides, _: &mut Self::Context) -> Self::Result {
        self.timed(|s| {
            s.conn()?
                .query_row(
                    "SELECT model, permission_mode, mode_under FROM overrides WHERE conversation_id = ?1",
                    [to_sql_id(msg.conversation_id)],
                    |r| {
                        let mode = |i| -> rusqlite::Result<Option<PermissionMode>> {
                            Ok(r.get::<_, Option<String>>(i)?.as_deref().and_then(PermissionMode::parse))
                        };
                        Ok(Overrides {
                            model: r.get(0)?,
                            permission_mode: mode(1)?,
                            mode_under: mode(2)?,
                        })
                    },
                )
                .optional()
                .map(Option::unwrap_or_default)
                .map_err(StoreError::database)
        })
    }
}

impl Handler<SaveOverrides> for SessionStoreActor {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, msg: SaveOverrides, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            s.conn()?
                .execute(
                    "INSERT INTO overrides (conversation_id, model, permission_mode, mode_under) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (conversation_id) DO UPDATE SET model = ?2, permission_mode = ?3, mode_under = ?4",
                    params![
                        to_sql_id(msg.conversation_id),
                        msg.overrides.model,
                        msg.overrides.permission_mode.map(PermissionMode::as_str),
                        msg.overrides.mode_under.map(PermissionMode::as_str),
                    ],
                )
                .map(|_| ())
                .map_err(StoreError::database)
        })
    }
}
