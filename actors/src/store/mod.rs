//! The session store: one row per conversation (a Discord channel or thread), in SQLite.
//!
//! [`SessionStoreActor`] runs on an actix `SyncArbiter` (one OS thread per pooled connection),
//! so SQLite's blocking calls never run on an async actor's thread. The database is opened in
//! WAL mode with a `busy_timeout`, and its schema is versioned with `PRAGMA user_version`.
//! Every failure is a [`StoreError`] that says what went wrong in words a user can act on; a
//! locked, read-only or corrupt file never panics the service.
//!
//! This file is the actor and its pool; one module per table: `conversations`, `rules` (the
//! "always" rules), `audit` (permission decisions), `processes` (CLI processes running),
//! `inbox` (accepted messages until they are answered), `outbox` (replies until they are
//! delivered), `sessions` (each conversation's sessions, run costs, and the model and mode
//! chosen from chat), `limits` (spend and messages per person and channel, and lifts), `prompts` (HTTP prompts'
//! idempotency keys), `schedules` (scheduled prompts and their runs); and `open` (opening, migrations), `upkeep` (checkpoint, backup, figures),
//! `error` (what can go wrong).

mod audit;
mod conversations;
mod error;
mod inbox;
mod limits;
mod open;
mod outbox;
mod processes;
mod prompts;
mod rules;
mod schedules;
mod sessions;
mod upkeep;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use actix::{Actor, SyncArbiter, SyncContext};
use hdrhistogram::Histogram;
use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;

pub use audit::{ListApprovals, RecordApproval};
pub use conversations::{
    Conversation, FindConversation, ListConversations, LoadConversation, RecordRun, RecordedRun,
    ResetConversation, SeedFork,
};
pub use error::{DbFailure, StoreError};
pub use inbox::{
    AcceptMessage, AttachmentMeta, Inbound, InboxState, LastSeen, ListLastSeen, MarkMessage,
    PruneDelivered, RetryInterrupted, TakeUnfinished, Unfinished,
};
pub use limits::{LiftLimits, ListSpend, LoadLedger};
pub use open::{check_writable, open_pool, StoreConfig};
pub use outbox::{Delivery, ListUndelivered, OutboxState, Outgoing, RecordDelivery};
pub use processes::{ForgetProcess, RecordProcess, TakeLeftProcesses};
pub use prompts::{AcceptPrompt, Accepted, PromptRecord};
pub use rules::{AddRules, ClearRules, LoadRules};
pub use schedules::*;
pub use sessions::{
    AdoptSession, GetUsage, ListSessions, LoadOverrides, Overrides, ResumeSession, SaveOverrides,
    SessionRecord, Usage,
};
pub use upkeep::{BackupTo, CheckStore, Checkpoint, GetStoreStats, PeekStoreStats, StoreStats};

// ---------------------------------------------------------------------------------------------
// The actor
// ---------------------------------------------------------------------------------------------

/// Persists conversations. Runs on a `SyncArbiter`; start it with [`SessionStoreActor::start`].
pub struct SessionStoreActor {
    pool: Pool<SqliteConnectionManager>,
    shared: Arc<Shared>,
}

/// What the store's threads share besides the pool.
struct Shared {
    /// Held for every write transaction. SQLite takes one writer at a time; without this,
    /// two of our own threads would meet at the file lock, and the loser would sleep in
    /// SQLite's busy handler (1 ms and up) instead of waiting just as long as the write takes.
    write: Mutex<()>,
    /// Counted here rather than sent as a message per operation, which would wake the
    /// actors' thread for every store write.
    ops: Mutex<OpStats>,
}

struct OpStats {
    operations: u64,
    errors: u64,
    latency_us: Histogram<u64>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic elsewhere while holding it leaves nothing half-done here worth refusing.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SessionStoreActor {
    /// Starts `threads` store actors sharing `pool`.
    pub fn start(pool: Pool<SqliteConnectionManager>, threads: usize) -> actix::Addr<Self> {
        let shared = Arc::new(Shared {
            write: Mutex::new(()),
            ops: Mutex::new(OpStats {
                operations: 0,
                errors: 0,
                // One hour in microseconds, 2 significant digits: a few KiB.
                latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 2)
                    .expect("valid histogram bounds"),
            }),
        });
        SyncArbiter::start(threads.max(1), move || Self {
            pool: pool.clone(),
            shared: Arc::clone(&shared),
        })
    }

    /// Runs `op`, counting its duration and success.
    fn timed<T>(&self, op: impl FnOnce(&Self) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let started = Instant::now();
        let result = op(self);
        let latency = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut ops = lock(&self.shared.ops);
        ops.operations += 1;
        ops.errors += u64::from(result.is_err());
        let _ = ops.latency_us.record(latency.max(1));
        result
    }

    /// Runs a write `op` while holding the store's write lock.
    fn write<T>(&self, op: impl FnOnce(&Self) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.timed(|s| {
            let _writing = lock(&s.shared.write);
            op(s)
        })
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<SqliteConnectionManager>, StoreError> {
        Ok(self.pool.get()?)
    }
}

impl Actor for SessionStoreActor {
    type Context = SyncContext<Self>;
}

/// An id as SQLite keeps it: ids are u64, SQLite integers i64; the same 64 bits are stored.
pub(crate) trait SqlId: Copy {
    /// The 64 bits.
    fn bits(self) -> u64;
}

impl SqlId for u64 {
    fn bits(self) -> u64 {
        self
    }
}

macro_rules! sql_ids {
    ($($t:ty),*) => {$(
        impl SqlId for $t {
            fn bits(self) -> u64 {
                self.get()
            }
        }
    )*};
}

sql_ids!(
    crate::ids::ConversationId,
    crate::ids::ChannelId,
    crate::ids::MessageId,
    crate::ids::ScheduleId,
    crate::ids::UserId
);

/// `id` as stored.
pub(crate) fn to_sql_id(id: impl SqlId) -> i64 {
    i64::from_ne_bytes(id.bits().to_ne_bytes())
}

/// A stored id.
pub(crate) fn from_sql_id<T: From<u64>>(id: i64) -> T {
    T::from(u64::from_ne_bytes(id.to_ne_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_all_64_bits() {
        for id in [0, 1, u64::MAX, 1 << 63, 1_234_567_890_123_456_789] {
            assert_eq!(from_sql_id::<u64>(to_sql_id(id)), id);
        }
    }
}
