//! The `approvals` table: the audit of every permission decision — who, what, when, the rule
//! stored (`claude-coordinator audit`).

use actix::{Handler, Message};
use rusqlite::params;
use serde::Serialize;

use super::{from_sql_id, to_sql_id, SessionStoreActor, StoreError};
use crate::ids::ConversationId;

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// Record one permission decision in the audit.
#[derive(Debug, Clone, Message, PartialEq, Serialize)]
#[rtype(result = "Result<(), StoreError>")]
pub struct RecordApproval {
    /// Discord channel or thread id.
    pub conversation_id: ConversationId,
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
    pub conversation_id: Option<ConversationId>,
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

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
