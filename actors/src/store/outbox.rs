//! The outbox: the reply of every run, stored in the same transaction as the run's record
//! (and its message marked answered), and kept until the front end has delivered it.
//!
//! One row per reply. The front end splits it into messages the same way every time, so it
//! marks the row part by part (`parts_sent`) as each message is posted; after a restart the
//! unsent parts are sent again, in order, from the first one not marked. A part that was posted
//! but not yet marked goes again with the same nonce, which Discord answers with the message
//! already posted. A reply that could not be delivered stays, marked failed, until the next
//! start tries again.

use actix::{Handler, Message};
use rusqlite::{params, Connection, Row};
use serde::Serialize;

use super::{from_sql_id, to_sql_id, SessionStoreActor, StoreError};
use crate::frontend::{DeliverReply, Origin, ReplyKind, ReplyTo};
use crate::ids::{ChannelId, ConversationId, MessageId, UserId};
use crate::time::unix_ms;

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// Record how far the delivery of the reply to `message_id` has got.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct RecordDelivery {
    /// The message the reply answers.
    pub message_id: MessageId,
    /// Where it stands.
    pub state: Delivery,
}

/// The replies not yet delivered (pending or failed), oldest first; of one conversation, or
/// of all.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Outgoing>, StoreError>")]
pub struct ListUndelivered {
    /// Only this conversation.
    pub conversation_id: Option<ConversationId>,
}

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/// How far a reply's delivery has got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The first `n` parts are posted.
    Posted(usize),
    /// Every part is posted (or the whole reply went as one file).
    Sent,
    /// It could not be delivered after every retry.
    Failed(String),
}

/// A reply as the outbox keeps it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outgoing {
    /// The message it answers.
    pub message_id: MessageId,
    /// The conversation.
    pub conversation_id: ConversationId,
    /// Its name.
    pub conversation: String,
    /// The channel to post in.
    pub channel_id: ChannelId,
    /// Who is answered.
    pub author_id: UserId,
    /// What kind of reply: a run's answer or failure (a busy reply, a notice or a command's
    /// answer is sent, never kept).
    #[serde(serialize_with = "kind_name")]
    pub kind: ReplyKind,
    /// Whether it reports a failure.
    pub is_error: bool,
    /// The text.
    pub text: String,
    /// The session after the run.
    pub session_id: Option<String>,
    /// What the run cost.
    pub cost_usd: f64,
    /// Parts already posted.
    pub parts_sent: usize,
    /// Where its delivery stands.
    pub state: OutboxState,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Files to attach, with their bytes (kept in `outbox_files` until delivered).
    pub files: Vec<crate::files::ReplyFile>,
}

/// Where a reply's delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxState {
    /// Not (fully) posted yet.
    Pending,
    /// Every part is posted.
    Sent,
    /// The last attempt failed; the next start tries again.
    Failed,
}

impl OutboxState {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "sent" => Self::Sent,
            "failed" => Self::Failed,
            _ => Self::Pending,
        }
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's signature
fn kind_name<S: serde::Serializer>(kind: &ReplyKind, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(kind.as_str())
}

impl Outgoing {
    /// The outbox row for `reply`; `None` for the answer to a command, which is never kept.
    pub fn of(reply: &DeliverReply) -> Option<Self> {
        let ReplyTo::Message(origin) = reply.to else {
            return None;
        };
        Some(Self {
            message_id: origin.message_id,
            conversation_id: reply.conversation_id,
            conversation: reply.conversation.clone(),
            channel_id: origin.channel_id,
            author_id: origin.author_id,
            kind: reply.kind,
            is_error: reply.is_error,
            text: reply.text.clone(),
            session_id: reply.session_id.clone(),
            cost_usd: reply.cost_usd,
            parts_sent: 0,
            state: OutboxState::Pending,
            error: None,
            files: reply.files.clone(),
        })
    }

    /// The reply, to be sent again from its first unsent part.
    pub fn into_reply(self) -> DeliverReply {
        DeliverReply {
            conversation_id: self.conversation_id,
            conversation: self.conversation,
            to: ReplyTo::Message(Origin {
                channel_id: self.channel_id,
                message_id: self.message_id,
                author_id: self.author_id,
            }),
            kind: self.kind,
            text: self.text,
            is_error: self.is_error,
            session_id: self.session_id,
            cost_usd: self.cost_usd,
            durable: true,
            parts_sent: self.parts_sent,
            files: self.files,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

/// Stores `o` as pending inside a caller's transaction (the run's record). A message run again
/// (`!retry`) replaces its earlier reply.
pub(super) fn insert(conn: &Connection, o: &Outgoing) -> rusqlite::Result<()> {
    let now = unix_ms();
    conn.prepare_cached(
        "INSERT OR REPLACE INTO outbox (message_id, conversation_id, conversation, channel_id, author_id, \
         kind, is_error, text, session_id, cost_usd, parts_sent, state, attempts, error, created_at_ms, \
         updated_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 0, 'pending', 0, NULL, ?11, ?11)",
    )?
    .execute(params![
        to_sql_id(o.message_id),
        to_sql_id(o.conversation_id),
        o.conversation,
        to_sql_id(o.channel_id),
        to_sql_id(o.author_id),
        o.kind.as_str(),
        o.is_error,
        o.text,
        o.session_id,
        o.cost_usd,
        now,
    ])?;
    conn.prepare_cached("DELETE FROM outbox_files WHERE message_id = ?1")?
        .execute([to_sql_id(o.message_id)])?;
    for (i, f) in o.files.iter().enumerate() {
        conn.prepare_cached(
            "INSERT INTO outbox_files (message_id, position, name, bytes) VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            to_sql_id(o.message_id),
            i as i64,
            f.name,
            &*f.bytes
        ])?;
    }
    Ok(())
}

/// The files of the reply to `message_id`, in order.
fn files_of(conn: &Connection, message_id: i64) -> rusqlite::Result<Vec<crate::files::ReplyFile>> {
    let mut stmt = conn.prepare_cached(
        "SELECT name, bytes FROM outbox_files WHERE message_id = ?1 ORDER BY position",
    )?;
    let rows = stmt.query_map([message_id], |r| {
        Ok(crate::files::ReplyFile {
            name: r.get(0)?,
            bytes: r.get::<_, Vec<u8>>(1)?.into(),
        })
    })?;
    rows.collect()
}

fn row_to_outgoing(r: &Row<'_>) -> rusqlite::Result<Outgoing> {
    Ok(Outgoing {
        message_id: from_sql_id(r.get(0)?),
        conversation_id: from_sql_id(r.get(1)?),
        conversation: r.get(2)?,
        channel_id: from_sql_id(r.get(3)?),
        author_id: from_sql_id(r.get(4)?),
        kind: ReplyKind::parse(&r.get::<_, String>(5)?),
        is_error: r.get(6)?,
        text: r.get(7)?,
        session_id: r.get(8)?,
        cost_usd: r.get(9)?,
        parts_sent: r.get::<_, i64>(10)?.max(0) as usize,
        state: OutboxState::parse(&r.get::<_, String>(11)?),
        error: r.get(12)?,
        files: Vec::new(),
    })
}

impl Handler<RecordDelivery> for SessionStoreActor {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, msg: RecordDelivery, _: &mut Self::Context) -> Self::Result {
        let id = to_sql_id(msg.message_id);
        self.write(|s| {
            let conn = s.conn()?;
            // Parts only ever grow, and a sent row stays sent: updates run by different store
            // threads may land in either order.
            let result = match &msg.state {
                Delivery::Posted(n) => conn.execute(
                    "UPDATE outbox SET parts_sent = MAX(parts_sent, ?2), updated_at_ms = ?3 \
                     WHERE message_id = ?1 AND state != 'sent'",
                    params![id, *n as i64, unix_ms()],
                ),
                // Delivered: its files' bytes are no longer needed.
                Delivery::Sent => conn
                    .execute("DELETE FROM outbox_files WHERE message_id = ?1", [id])
                    .and_then(|_| {
                        conn.execute(
                            "UPDATE outbox SET state = 'sent', error = NULL, updated_at_ms = ?2 WHERE message_id = ?1",
                            params![id, unix_ms()],
                        )
                    }),
                Delivery::Failed(why) => conn.execute(
                    "UPDATE outbox SET state = 'failed', attempts = attempts + 1, error = ?2, updated_at_ms = ?3 \
                     WHERE message_id = ?1 AND state != 'sent'",
                    params![id, why, unix_ms()],
                ),
            };
            result.map(|_| ()).map_err(StoreError::database)
        })
    }
}

impl Handler<ListUndelivered> for SessionStoreActor {
    type Result = Result<Vec<Outgoing>, StoreError>;

    fn handle(&mut self, msg: ListUndelivered, _: &mut Self::Context) -> Self::Result {
        self.timed(|s| {
            let conn = s.conn()?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT message_id, conversation_id, conversation, channel_id, author_id, kind, is_error, \
                     text, session_id, cost_usd, parts_sent, state, error FROM outbox \
                     WHERE state != 'sent' AND (?1 IS NULL OR conversation_id = ?1) ORDER BY message_id",
                )
                .map_err(StoreError::database)?;
            let rows = stmt
                .query_map([msg.conversation_id.map(to_sql_id)], row_to_outgoing)
                .map_err(StoreError::database)?;
            let mut rows = rows
                .collect::<rusqlite::Result<Vec<_>>>()
                .map_err(StoreError::database)?;
            for row in &mut rows {
                row.files = files_of(&conn, to_sql_id(row.message_id)).map_err(StoreError::database)?;
            }
            Ok(rows)
        })
    }
}
