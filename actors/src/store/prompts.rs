//! Prompts over HTTP (`POST /v1/conversations/{name}/messages`) as the store keeps them: each
//! caller's `Idempotency-Key` with the inbox row it made, written in ONE transaction with that
//! row — so a retried request finds the first one's record and runs nothing, and a prompt
//! accepted before a `kill -9` is in the inbox to be answered after it.

use actix::{Handler, Message};
use rusqlite::{params, OptionalExtension, Transaction};

use super::inbox::{insert, next_local_id, state_of};
use super::{from_sql_id, to_sql_id, Inbound, InboxState, SessionStoreActor, StoreError};
use crate::ids::MessageId;
use crate::time::unix_ms;

/// Accept a prompt over HTTP under `key`: a new inbox row (with the service's own message id),
/// or the record of the request that first used `key`.
#[derive(Debug, Message)]
#[rtype(result = "Result<Accepted, StoreError>")]
pub struct AcceptPrompt {
    /// The caller's `Idempotency-Key`.
    pub key: String,
    /// The prompt as the inbox keeps it (its `message_id` is assigned here).
    pub inbound: Inbound,
    /// The caller's `author`.
    pub author: String,
}

/// What [`AcceptPrompt`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Accepted {
    /// A new prompt, now queued in the inbox: submit it.
    New(PromptRecord),
    /// The key was used before for the same prompt: its record, nothing run.
    Replayed(PromptRecord),
    /// The key was used before for another prompt.
    Conflict(PromptRecord),
}

/// What an HTTP caller is told about its prompt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptRecord {
    /// The inbox row.
    pub message_id: MessageId,
    /// The conversation's name.
    pub conversation: String,
    /// The caller's `author`.
    pub author: String,
    /// When it was first accepted (unix ms).
    pub accepted_at_ms: i64,
    /// Its inbox state now; `None` once its row was pruned.
    pub state: Option<InboxState>,
}

impl Handler<AcceptPrompt> for SessionStoreActor {
    type Result = Result<Accepted, StoreError>;

    fn handle(&mut self, msg: AcceptPrompt, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            let mut conn = s.conn()?;
            let tx = conn.transaction().map_err(StoreError::database)?;
            let accepted = accept(&tx, msg).map_err(StoreError::database)?;
            tx.commit().map_err(StoreError::database)?;
            Ok(accepted)
        })
    }
}

fn accept(tx: &Transaction<'_>, msg: AcceptPrompt) -> rusqlite::Result<Accepted> {
    let before = tx
        .prepare_cached(
            "SELECT conversation, author, content, message_id, accepted_at_ms FROM http_prompts \
             WHERE idempotency_key = ?1",
        )?
        .query_row([&msg.key], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, i64>(4)?,
            ))
        })
        .optional()?;
    if let Some((conversation, author, content, id, at)) = before {
        let message_id: MessageId = from_sql_id(id);
        let same = conversation == msg.inbound.conversation
            && author == msg.author
            && content == msg.inbound.text;
        let record = PromptRecord {
            message_id,
            conversation,
            author,
            accepted_at_ms: at,
            state: state_of(tx, message_id)?,
        };
        return Ok(if same {
            Accepted::Replayed(record)
        } else {
            Accepted::Conflict(record)
        });
    }
    let mut inbound = msg.inbound;
    inbound.message_id = next_local_id(tx)?;
    insert(tx, &inbound)?;
    let now = unix_ms();
    tx.prepare_cached(
        "INSERT INTO http_prompts (idempotency_key, conversation, author, content, message_id, \
         accepted_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        msg.key,
        inbound.conversation,
        msg.author,
        inbound.text,
        to_sql_id(inbound.message_id),
        now,
    ])?;
    Ok(Accepted::New(PromptRecord {
        message_id: inbound.message_id,
        conversation: inbound.conversation,
        author: msg.author,
        accepted_at_ms: now,
        state: Some(InboxState::Queued),
    }))
}
