//! The `permission_rules` table: each conversation's "always" rules (`Bash(touch x)`), passed
//! again to every new CLI process since the CLI's own die with it.

use actix::{Handler, Message};
use rusqlite::params;

use super::{to_sql_id, SessionStoreActor, StoreError};
use crate::ids::ConversationId;
use crate::time::unix_ms;

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// The conversation's stored "always" rules (`Bash(touch x)`), oldest first.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<String>, StoreError>")]
pub struct LoadRules {
    /// Discord channel or thread id.
    pub id: ConversationId,
}

/// Store "always" rules for a conversation (already stored ones are kept once).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct AddRules {
    /// Discord channel or thread id.
    pub id: ConversationId,
    /// The rules, as the CLI spells them.
    pub rules: Vec<String>,
}

/// Forget a conversation's "always" rules; answers how many there were.
#[derive(Debug, Message)]
#[rtype(result = "Result<usize, StoreError>")]
pub struct ClearRules {
    /// Discord channel or thread id.
    pub id: ConversationId,
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

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
                    params![to_sql_id(msg.id), rule, unix_ms()],
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
