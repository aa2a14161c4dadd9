//! The inbox: every message accepted for Claude, from the moment it is accepted until it has
//! been answered, so a crash, `kill -9` or deploy loses none of them.
//!
//! A row is written before its message is queued (the queue in memory is a cache of this
//! table), keyed by the Discord message id so a second copy of a message is dropped. Its state
//! only moves forward — queued → running → answered / failed, queued → skipped, running →
//! interrupted (found running at start-up) → queued again (`!retry`), queued → refused (a
//! spend or message limit) → queued again (`!retry`), running → queued (a usage limit put
//! it back) — and every update names the states it may move from, so two
//! updates that the store's threads happen to run out of order cannot move a row backwards.

use actix::{Handler, Message};
use rusqlite::{params, Connection, OptionalExtension, Row};

pub use crate::files::AttachmentMeta;

use super::{from_sql_id, to_sql_id, SessionStoreActor, StoreError};
use crate::ids::{ChannelId, ConversationId, MessageId, UserId};
use crate::time::unix_ms;
use crate::via::Via;

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// Write an accepted message to the inbox as queued. Answers `false` if a message with that
/// id is there already (a copy: drop it).
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct AcceptMessage(pub Inbound);

/// Move a message to `state`, if it is in one of the states that may move there.
#[derive(Debug, Message)]
#[rtype(result = "Result<bool, StoreError>")]
pub struct MarkMessage {
    /// The Discord message id.
    pub message_id: MessageId,
    /// Where it goes.
    pub state: InboxState,
}

/// At start-up: every message not yet answered, oldest first. Those that were running when the
/// previous instance stopped are marked interrupted in the same transaction.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Unfinished>, StoreError>")]
pub struct TakeUnfinished;

/// `!retry`: the conversation's most recent message a stop interrupted or a limit refused,
/// queued again.
#[derive(Debug, Message)]
#[rtype(result = "Result<Option<Inbound>, StoreError>")]
pub struct RetryInterrupted {
    /// The conversation.
    pub conversation_id: ConversationId,
}

/// For catch-up: the newest message id the inbox has seen in each conversation.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<LastSeen>, StoreError>")]
pub struct ListLastSeen;

/// Forget finished inbox rows, delivered replies and run costs older than `before_ms` (the
/// newest inbox row of each conversation stays: catch-up starts after it). Answers how many
/// rows went.
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, StoreError>")]
pub struct PruneDelivered {
    /// Unix milliseconds.
    pub before_ms: i64,
}

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/// Where an inbox message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxState {
    /// Waiting for its turn.
    Queued,
    /// Given to Claude.
    Running,
    /// Its reply is in the outbox.
    Answered,
    /// It could not be run; the user was told.
    Failed,
    /// Refused (the queue was full); the user was told.
    Skipped,
    /// It was running when the service stopped; only `!retry` runs it again.
    Interrupted,
    /// A spend or message limit refused it; the user was told, and `!retry` runs it.
    Refused,
}

impl InboxState {
    /// Every state.
    const ALL: [Self; 7] = [
        Self::Queued,
        Self::Running,
        Self::Answered,
        Self::Failed,
        Self::Skipped,
        Self::Interrupted,
        Self::Refused,
    ];

    /// Its name, as the store keeps it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Answered => "answered",
            Self::Failed => "failed",
            Self::Skipped => "skipped",
            Self::Interrupted => "interrupted",
            Self::Refused => "refused",
        }
    }

    /// The states a row may move here from.
    fn comes_from(self) -> &'static [&'static str] {
        match self {
            // `!retry` of an interrupted or refused one; a run put back by a usage limit.
            Self::Queued => &["interrupted", "refused", "running"],
            Self::Running | Self::Skipped => &["queued"],
            Self::Answered | Self::Failed | Self::Refused => &["queued", "running"],
            Self::Interrupted => &["running"],
        }
    }
}

/// An accepted message, as the inbox keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Inbound {
    /// The Discord message id.
    pub message_id: MessageId,
    /// The conversation (channel or thread).
    pub conversation_id: ConversationId,
    /// The configured channel whose settings apply (the thread's parent).
    pub profile_id: ChannelId,
    /// The conversation's name.
    pub conversation: String,
    /// The channel to answer in.
    pub channel_id: ChannelId,
    /// Who wrote it.
    pub author_id: UserId,
    /// What they wrote.
    pub text: String,
    /// Its files.
    pub attachments: Vec<AttachmentMeta>,
    /// Posted while the service was down (found by catch-up, or queued over a restart).
    pub late: bool,
    /// How it came (a chat message, a schedule's run, a prompt over HTTP).
    pub via: Via,
}

/// A message found unanswered at start-up.
#[derive(Debug, Clone)]
pub struct Unfinished {
    /// The message.
    pub inbound: Inbound,
    /// It was running when the previous instance stopped (now marked interrupted).
    pub interrupted: bool,
}

/// The newest message seen in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastSeen {
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Its configured channel.
    pub profile_id: ChannelId,
    /// The newest message id.
    pub message_id: MessageId,
    /// When it was received (unix ms).
    pub received_at_ms: i64,
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

const COLUMNS: &str = "message_id, conversation_id, profile_id, conversation, channel_id, \
     author_id, text, attachments, late, via";

fn row_to_inbound(r: &Row<'_>) -> rusqlite::Result<Inbound> {
    let attachments: String = r.get(7)?;
    Ok(Inbound {
        message_id: from_sql_id(r.get(0)?),
        conversation_id: from_sql_id(r.get(1)?),
        profile_id: from_sql_id(r.get(2)?),
        conversation: r.get(3)?,
        channel_id: from_sql_id(r.get(4)?),
        author_id: from_sql_id(r.get(5)?),
        text: r.get(6)?,
        // Written by us as JSON; a row someone edited by hand loses only its file list.
        attachments: serde_json::from_str(&attachments).unwrap_or_default(),
        late: r.get(8)?,
        via: Via::from_column(r.get::<_, Option<String>>(9)?.as_deref()),
    })
}

/// Moves `message_id` to `state` inside a caller's transaction (the run's record uses it).
pub(super) fn mark(
    conn: &Connection,
    message_id: MessageId,
    state: InboxState,
) -> rusqlite::Result<bool> {
    let from = state.comes_from();
    let changed = conn.prepare_cached(
        "UPDATE inbox SET state = ?2, updated_at_ms = ?3 WHERE message_id = ?1 AND state IN (?4, ?5)",
    )?
    .execute(params![
        to_sql_id(message_id),
        state.as_str(),
        unix_ms(),
        from[0],
        from.get(1).copied().unwrap_or(from[0]),
    ])?;
    Ok(changed > 0)
}

/// Writes `m` to the inbox as queued inside a caller's transaction (a schedule's run and an
/// HTTP prompt are written with their own rows). Answers `false` if its id is there already.
pub(super) fn insert(conn: &Connection, m: &Inbound) -> rusqlite::Result<bool> {
    let attachments = serde_json::to_string(&m.attachments).unwrap_or_else(|_| "[]".into());
    let now = unix_ms();
    conn.prepare_cached(
        "INSERT OR IGNORE INTO inbox (message_id, conversation_id, profile_id, conversation, \
         channel_id, author_id, text, attachments, late, via, state, received_at_ms, updated_at_ms) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'queued', ?11, ?11)",
    )?
    .execute(params![
        to_sql_id(m.message_id),
        to_sql_id(m.conversation_id),
        to_sql_id(m.profile_id),
        m.conversation,
        to_sql_id(m.channel_id),
        to_sql_id(m.author_id),
        m.text,
        attachments,
        m.late,
        m.via.to_column(),
        now,
    ])
    .map(|n| n > 0)
}

/// The next of the service's own message ids ([`MessageId::local`]), inside a caller's
/// transaction: a counter that only grows, so an id is never given twice, even after pruning.
pub(super) fn next_local_id(conn: &Connection) -> rusqlite::Result<MessageId> {
    let n: i64 = conn
        .prepare_cached("UPDATE local_ids SET next = next + 1 RETURNING next - 1")?
        .query_row([], |r| r.get(0))?;
    Ok(MessageId::local(u64::try_from(n).unwrap_or(0)))
}

/// The state of an inbox row, if it is there (a name this version does not know reads as
/// none).
pub(super) fn state_of(
    conn: &Connection,
    message_id: MessageId,
) -> rusqlite::Result<Option<InboxState>> {
    let name: Option<String> = conn
        .prepare_cached("SELECT state FROM inbox WHERE message_id = ?1")?
        .query_row([to_sql_id(message_id)], |r| r.get(0))
        .optional()?;
    Ok(name.and_then(|n| InboxState::ALL.into_iter().find(|s| s.as_str() == n)))
}

impl Handler<AcceptMessage> for SessionStoreActor {
    type Result = Result<bool, StoreError>;

    fn handle(&mut self, AcceptMessage(m): AcceptMessage, _: &mut Self::Context) -> Self::Result {
        self.write(|s| insert(&*s.conn()?, &m).map_err(StoreError::database))
    }
}

impl Handler<MarkMessage> for SessionStoreActor {
    type Result = Result<bool, StoreError>;

    fn handle(&mut self, msg: MarkMessage, _: &mut Self::Context) -> Self::Result {
        self.write(|s| mark(&*s.conn()?, msg.message_id, msg.state).map_err(StoreError::database))
    }
}

impl Handler<TakeUnfinished> for SessionStoreActor {
    type Result = Result<Vec<Unfinished>, StoreError>;

    fn handle(&mut self, _: TakeUnfinished, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            let mut conn = s.conn()?;
            let tx = conn.transaction().map_err(StoreError::database)?;
            let rows = {
                let mut stmt = tx
                    .prepare(&format!(
                        "SELECT {COLUMNS}, state FROM inbox WHERE state IN ('queued', 'running') \
                         ORDER BY conversation_id, received_at_ms, message_id"
                    ))
                    .map_err(StoreError::database)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok(Unfinished {
                            inbound: row_to_inbound(r)?,
                            interrupted: r.get::<_, String>(10)? == "running",
                        })
                    })
                    .map_err(StoreError::database)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(StoreError::database)?
            };
            tx.execute(
                "UPDATE inbox SET state = 'interrupted', updated_at_ms = ?1 WHERE state = 'running'",
                [unix_ms()],
            )
            .map_err(StoreError::database)?;
            tx.commit().map_err(StoreError::database)?;
            Ok(rows)
        })
    }
}

impl Handler<RetryInterrupted> for SessionStoreActor {
    type Result = Result<Option<Inbound>, StoreError>;

    fn handle(&mut self, msg: RetryInterrupted, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            let conn = s.conn()?;
            let found = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM inbox WHERE conversation_id = ?1 AND state IN ('interrupted', 'refused') \
                     ORDER BY received_at_ms DESC, message_id DESC LIMIT 1"
                ))
                .and_then(|mut st| {
                    st.query_row([to_sql_id(msg.conversation_id)], row_to_inbound)
                        .optional()
                })
                .map_err(StoreError::database)?;
            match found {
                Some(mut m) => {
                    mark(&conn, m.message_id, InboxState::Queued).map_err(StoreError::database)?;
                    m.late = false;
                    Ok(Some(m))
                }
                None => Ok(None),
            }
        })
    }
}

impl Handler<ListLastSeen> for SessionStoreActor {
    type Result = Result<Vec<LastSeen>, StoreError>;

    fn handle(&mut self, _: ListLastSeen, _: &mut Self::Context) -> Self::Result {
        self.timed(|s| {
            let conn = s.conn()?;
            // SQLite takes the bare columns from the row holding the MAX.
            let mut stmt = conn
                .prepare_cached(
                    // The service's own ids (negative here) are no Discord messages.
                    "SELECT conversation_id, profile_id, MAX(message_id), received_at_ms FROM inbox \
                     WHERE message_id >= 0 GROUP BY conversation_id",
                )
                .map_err(StoreError::database)?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(LastSeen {
                        conversation_id: from_sql_id(r.get(0)?),
                        profile_id: from_sql_id(r.get(1)?),
                        message_id: from_sql_id(r.get(2)?),
                        received_at_ms: r.get(3)?,
                    })
                })
                .map_err(StoreError::database)?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
                .map_err(StoreError::database)
        })
    }
}

impl Handler<PruneDelivered> for SessionStoreActor {
    type Result = Result<usize, StoreError>;

    fn handle(&mut self, msg: PruneDelivered, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            let mut conn = s.conn()?;
            let tx = conn.transaction().map_err(StoreError::database)?;
            let inbox = tx
                .execute(
                    "DELETE FROM inbox WHERE updated_at_ms < ?1 \
                     AND state IN ('answered', 'failed', 'skipped', 'interrupted', 'refused') \
                     AND message_id NOT IN (SELECT MAX(message_id) FROM inbox WHERE message_id >= 0 GROUP BY conversation_id)",
                    [msg.before_ms],
                )
                .map_err(StoreError::database)?;
            let outbox = tx
                .execute(
                    "DELETE FROM outbox WHERE updated_at_ms < ?1 AND state = 'sent'",
                    [msg.before_ms],
                )
                .map_err(StoreError::database)?;
            let costs = tx
                // Monthly spend limits read back to the first of the month.
                .execute(
                    "DELETE FROM run_costs WHERE at_ms < ?1",
                    [msg.before_ms.min(crate::time::unix_ms() - 32 * 86_400_000)],
                )
                .map_err(StoreError::database)?;
            // An idempotency key is kept as long as the prompt's row could be.
            tx.execute(
                "DELETE FROM http_prompts WHERE accepted_at_ms < ?1",
                [msg.before_ms],
            )
            .map_err(StoreError::database)?;
            tx.execute(
                "DELETE FROM outbox_files WHERE message_id NOT IN (SELECT message_id FROM outbox)",
                [],
            )
            .map_err(StoreError::database)?;
            tx.commit().map_err(StoreError::database)?;
            Ok(inbox + outbox + costs)
        })
    }
}
