//! The figures of spend and message limits (`crate::limits`) as the store keeps them: read
//! once at start into the limits' ledger (`run_costs` with who asked, the inbox's messages of
//! the last hour, approvers' lifts); lifts written; each person's spend for `usage`.

use actix::{Handler, Message};
use rusqlite::params;

use super::{from_sql_id, to_sql_id, SessionStoreActor, StoreError};
use crate::ids::UserId;
use crate::limits::{Ledger, PersonSpend, Whose, Windows};
use crate::time::unix_ms;

/// The limits' ledger as the store knows it (at start): this month's spend by person and
/// channel, the messages run in the last hour, the lifts in force.
#[derive(Debug, Message)]
#[rtype(result = "Result<Ledger, StoreError>")]
pub struct LoadLedger {
    /// The periods.
    pub windows: Windows,
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

impl Handler<LoadLedger> for SessionStoreActor {
    type Result = Result<Ledger, StoreError>;

    fn handle(&mut self, msg: LoadLedger, _: &mut Self::Context) -> Self::Result {
        self.timed(|s| {
            let conn = s.conn()?;
            let w = &msg.windows;
            let read = || -> rusqlite::Result<Ledger> {
                // One snapshot of the three tables.
                let tx = conn.unchecked_transaction()?;
                let mut ledger = Ledger::default();
                let mut st = tx.prepare(
                    "SELECT author_id, profile_id, at_ms, cost_usd FROM run_costs WHERE at_ms >= ?1",
                )?;
                let mut rows = st.query([w.month.0])?;
                while let Some(r) = rows.next()? {
                    let author: Option<i64> = r.get(0)?;
                    let (profile, at, usd): (i64, i64, f64) = (r.get(1)?, r.get(2)?, r.get(3)?);
                    let whose = std::iter::once(Whose::Channel(from_sql_id(profile)))
                        .chain(author.map(|a| Whose::User(from_sql_id(a))));
                    for who in whose {
                        ledger.load_spend(who, w.month.0, usd);
                        if at >= w.day.0 {
                            ledger.load_spend(who, w.day.0, usd);
                        }
                    }
                }
                let mut st = tx.prepare(
                    "SELECT author_id, profile_id, received_at_ms FROM inbox WHERE received_at_ms >= ?1 \
                     AND state IN ('running', 'answered', 'failed', 'interrupted')",
                )?;
                let mut rows = st.query([w.hour_ago_ms])?;
                while let Some(r) = rows.next()? {
                    let (author, profile, at): (i64, i64, i64) = (r.get(0)?, r.get(1)?, r.get(2)?);
                    ledger.add_run(from_sql_id(author), from_sql_id(profile), at);
                }
                let mut st = tx.prepare("SELECT user_id, until_ms FROM limit_lifts WHERE until_ms > ?1")?;
                let mut rows = st.query([w.now_ms])?;
                while let Some(r) = rows.next()? {
                    ledger.lift(from_sql_id(r.get(0)?), r.get(1)?);
                }
                Ok(ledger)
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
