//! The `cli_processes` table: every CLI process started, until it is reaped, so the next start
//! can kill the process groups a killed instance left running.

use actix::{Handler, Message};
use rusqlite::params;

use super::{SessionStoreActor, StoreError};

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

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
