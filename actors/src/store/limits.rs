//! The figures spend and message limits are checked against (`crate::limits`): what each
//! person and each channel spent today and this month (`run_costs`, with who asked), the
//! messages each ran in the last hour (the inbox), and approvers' lifts.

use actix::{Handler, Message};
use rusqlite::{params, Connection, OptionalExtension};

use super::{from_sql_id, to_sql_id, SessionStoreActor, StoreError};
use crate::ids::{ChannelId, MessageId, UserId};
use crate::limits::{PendingSpend, PersonSpend, Spent, Windows};
use crate::time::unix_ms;

/// What `author` and channel `profile_id` spent and ran, for the message `except` (which is
/// not counted).
#[derive(Debug, Message)]
#[rtype(result = "Result<Spent, StoreError>")]
pub struct MeasureSpend {
    /// Who asked.
    pub author: UserId,
    /// The configured channel (threads count with it).
    pub profile_id: ChannelId,
    /// The periods.
    pub windows: Windows,
    /// The message being checked.
    pub except: MessageId,
    /// This conversation's runs whose records may not be written yet: counted unless written.
    pub pending: Vec<PendingSpend>,
}

/// Lifts `user`'s own limits until `until_ms` (`/claude limits lift`).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct LiftLimits {
    /// Whose.
    pub user: UserId,
    /// Until (unix ms).
    pub until_ms: i64,
    /// The approver.
    pub by: UserId,
}

/// Each person's spend today and this month (`/claude usage`), most first.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<PersonSpend>, StoreError>")]
pub struct ListSpend {
    /// The periods.
    pub windows: Windows,
}

/// Today's and this month's spend where `column` is `id`.
fn spend(conn: &Connection, column: &str, id: i64, w: &Windows) -> rusqlite::Result<(f64, f64)> {
    conn.prepare_cached(&format!(
        "SELECT COALESCE(SUM(CASE WHEN at_ms >= ?2 THEN cost_usd END), 0), COALESCE(SUM(cost_usd), 0) \
         FROM run_costs WHERE {column} = ?1 AND at_ms >= ?3"
    ))?
    .query_row(params![id, w.day.0, w.month.0], |r| Ok((r.get(0)?, r.get(1)?)))
}

/// When the messages that ran in the last hour where `column` is `id` arrived, oldest first.
fn ran_in_hour(
    conn: &Connection,
    column: &str,
    id: i64,
    w: &Windows,
    except: i64,
) -> rusqlite::Result<Vec<i64>> {
    let mut st = conn.prepare_cached(&format!(
        "SELECT received_at_ms FROM inbox WHERE {column} = ?1 AND received_at_ms >= ?2 \
         AND message_id != ?3 AND state IN ('running', 'answered', 'failed', 'interrupted') \
         ORDER BY received_at_ms"
    ))?;
    let rows = st.query_map(params![id, w.hour_ago_ms, except], |r| r.get(0))?;
    rows.collect()
}

impl Handler<MeasureSpend> for SessionStoreActor {
    type Result = Result<Spent, StoreError>;

    fn handle(&mut self, msg: MeasureSpend, _: &mut Self::Context) -> Self::Result {
        self.timed(|s| {
            let conn = s.conn()?;
            let (author, profile, w) = (
                to_sql_id(msg.author),
                to_sql_id(msg.profile_id),
                &msg.windows,
            );
            let except = to_sql_id(msg.except);
            let read = || -> rusqlite::Result<Spent> {
                // One snapshot: a record written meanwhile is either in both the sums and the
                // check below, or in neither.
                let tx = conn.unchecked_transaction()?;
                let conn = &*tx;
                let (mut user_day, mut user_month) = spend(conn, "author_id", author, w)?;
                let (mut channel_day, mut channel_month) = spend(conn, "profile_id", profile, w)?;
                // A run ended today whose record is not written yet: this channel's, and the
                // author's own if theirs.
                for p in &msg.pending {
                    let written = conn
                        .prepare_cached("SELECT 1 FROM run_costs WHERE message_id = ?1")?
                        .query_row([to_sql_id(p.message)], |_| Ok(()))
                        .optional()?
                        .is_some();
                    if !written {
                        channel_day += p.usd;
                        channel_month += p.usd;
                        if p.author == Some(msg.author) {
                            user_day += p.usd;
                            user_month += p.usd;
                        }
                    }
                }
                let lifted_until_ms = conn
                    .prepare_cached("SELECT until_ms FROM limit_lifts WHERE user_id = ?1")?
                    .query_row([author], |r| r.get(0))
                    .optional()?;
                let spent = Spent {
                    user_day,
                    user_month,
                    channel_day,
                    channel_month,
                    user_hour: ran_in_hour(conn, "author_id", author, w, except)?,
                    channel_hour: ran_in_hour(conn, "profile_id", profile, w, except)?,
                    lifted_until_ms,
                };
                Ok(spent)
            };
            read().map_err(StoreError::database)
        })
    }
}

impl Handler<LiftLimits> for SessionStoreActor {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, msg: LiftLimits, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            s.conn()?
                .execute(
                    "INSERT INTO limit_lifts (user_id, until_ms, lifted_by, at_ms) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (user_id) DO UPDATE SET until_ms = ?2, lifted_by = ?3, at_ms = ?4",
                    params![to_sql_id(msg.user), msg.until_ms, to_sql_id(msg.by), unix_ms()],
                )
                .map(drop)
                .map_err(StoreError::database)
        })
    }
}

impl Handler<ListSpend> for SessionStoreActor {
    type Result = Result<Vec<PersonSpend>, StoreError>;

    fn handle(&mut self, msg: ListSpend, _: &mut Self::Context) -> Self::Result {
        self.timed(|s| {
            let conn = s.conn()?;
            let w = &msg.windows;
            let mut st = conn
                .prepare_cached(
                    "SELECT r.author_id, COALESCE(SUM(CASE WHEN r.at_ms >= ?1 THEN r.cost_usd END), 0) AS day, \
                     SUM(r.cost_usd), l.until_ms FROM run_costs r LEFT JOIN limit_lifts l ON l.user_id = r.author_id \
                     WHERE r.at_ms >= ?2 AND r.author_id IS NOT NULL \
                     GROUP BY r.author_id ORDER BY SUM(r.cost_usd) DESC",
                )
                .map_err(StoreError::database)?;
            let rows = st
                .query_map(params![w.day.0, w.month.0], |r| {
                    Ok(PersonSpend {
                        user: from_sql_id(r.get(0)?),
                        day: r.get(1)?,
                        month: r.get(2)?,
                        lifted_until_ms: r.get(3)?,
                    })
                })
                .and_then(Iterator::collect)
                .map_err(StoreError::database)?;
            Ok(rows)
        })
    }
}
