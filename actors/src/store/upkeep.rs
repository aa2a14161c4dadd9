//! The database as a whole: the WAL written back at shutdown, a consistent copy while the service
//! runs (`backup`), and the store's own figures for the metrics log.

use std::path::PathBuf;

use actix::{Handler, Message};

use super::{lock, SessionStoreActor, StoreError};

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// Write everything in the WAL back into the database file (at shutdown).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct Checkpoint;

/// Write a consistent copy of the database to `path` while the service runs (`VACUUM INTO`).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct BackupTo {
    /// The new file; must not exist.
    pub path: PathBuf,
}

/// Report the pool's occupancy and the operations so far (for the metrics log). The latency
/// percentile covers the operations since the previous ask.
#[derive(Debug, Message)]
#[rtype(result = "StoreStats")]
pub struct GetStoreStats;

/// The same figures, the latency window left as it is (for a `/metrics` scrape between two
/// reports).
#[derive(Debug, Message)]
#[rtype(result = "StoreStats")]
pub struct PeekStoreStats;

/// Whether the store answers a query (for `/readyz`).
#[derive(Debug, Message)]
#[rtype(result = "Result<(), StoreError>")]
pub struct CheckStore;

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

/// The answer to [`GetStoreStats`].
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreStats {
    /// Connections open.
    pub connections: u32,
    /// Connections idle.
    pub idle: u32,
    /// Operations since start.
    pub operations: u64,
    /// Failed operations since start.
    pub errors: u64,
    /// 95th percentile of operation latency since the previous ask, in microseconds.
    pub latency_p95_us: u64,
}

// ---------------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------------

impl Handler<Checkpoint> for SessionStoreActor {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, _: Checkpoint, _: &mut Self::Context) -> Self::Result {
        self.write(|s| {
            s.conn()?
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
                .map_err(StoreError::database)
        })
    }
}

impl Handler<BackupTo> for SessionStoreActor {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, msg: BackupTo, _: &mut Self::Context) -> Self::Result {
        // One read transaction: a consistent copy even while runs are being recorded.
        self.timed(|s| {
            s.conn()?
                .execute("VACUUM INTO ?1", [msg.path.to_string_lossy()])
                .map(|_| ())
                .map_err(StoreError::database)
        })
    }
}

impl SessionStoreActor {
    /// The pool and the operations; `reset` starts the next latency window.
    fn stats(&self, reset: bool) -> StoreStats {
        let pool = self.pool.state();
        let mut ops = lock(&self.shared.ops);
        let latency_p95_us = if ops.latency_us.is_empty() {
            0
        } else {
            ops.latency_us.value_at_quantile(0.95)
        };
        if reset {
            ops.latency_us.reset();
        }
        StoreStats {
            connections: pool.connections,
            idle: pool.idle_connections,
            operations: ops.operations,
            errors: ops.errors,
            latency_p95_us,
        }
    }
}

impl Handler<GetStoreStats> for SessionStoreActor {
    type Result = actix::MessageResult<GetStoreStats>;

    fn handle(&mut self, _: GetStoreStats, _: &mut Self::Context) -> Self::Result {
        actix::MessageResult(self.stats(true))
    }
}

impl Handler<PeekStoreStats> for SessionStoreActor {
    type Result = actix::MessageResult<PeekStoreStats>;

    fn handle(&mut self, _: PeekStoreStats, _: &mut Self::Context) -> Self::Result {
        actix::MessageResult(self.stats(false))
    }
}

impl Handler<CheckStore> for SessionStoreActor {
    type Result = Result<(), StoreError>;

    fn handle(&mut self, _: CheckStore, _: &mut Self::Context) -> Self::Result {
        self.timed(|s| {
            s.conn()?
                .query_row("SELECT 1", [], |_| Ok(()))
                .map_err(StoreError::database)
        })
    }
}
