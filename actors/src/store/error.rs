//! The store's errors, in words a user can act on: a locked, read-only or corrupt file never
//! panics the service.

use std::path::PathBuf;

use rusqlite::ErrorCode;

/// What kind of database failure happened, in terms a user can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbFailure {
    /// Another process holds a lock longer than `busy_timeout`.
    Busy,
    /// The file or its directory is not writable by this user.
    ReadOnly,
    /// The file is not a SQLite database, or is damaged.
    Corrupt,
    /// The file cannot be opened (missing directory, permissions).
    CannotOpen,
    /// The disk is full.
    Full,
    /// Anything else.
    Other,
}

impl std::fmt::Display for DbFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Busy => "the database is locked by another process",
            Self::ReadOnly => "the database is read-only",
            Self::Corrupt => "the database file is corrupt or not a SQLite database",
            Self::CannotOpen => "the database file cannot be opened",
            Self::Full => "the disk is full",
            Self::Other => "database error",
        })
    }
}

/// Errors at the session store's boundary.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Creating the database's directory failed.
    #[error("cannot create the directory for {path}: {cause}")]
    CreateDir {
        /// The database path.
        path: PathBuf,
        /// The underlying error (in the message, so not also a `source`).
        cause: std::io::Error,
    },
    /// Opening or preparing the database failed.
    #[error("cannot open session store {path}: {kind} ({cause})")]
    Open {
        /// The database path.
        path: PathBuf,
        /// What kind of failure.
        kind: DbFailure,
        /// The underlying error (in the message, so not also a `source`).
        cause: rusqlite::Error,
    },
    /// The database was written by a newer version of this program.
    #[error("session store {path} has schema version {found}, newer than this build's {supported}; upgrade claude-coordinator")]
    SchemaTooNew {
        /// The database path.
        path: PathBuf,
        /// `user_version` in the file.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// A query failed.
    #[error("session store: {kind} ({cause})")]
    Database {
        /// What kind of failure.
        kind: DbFailure,
        /// The underlying error (in the message, so not also a `source`).
        cause: rusqlite::Error,
    },
    /// No pooled connection became free in time.
    #[error("session store: no database connection available ({0})")]
    Pool(r2d2::Error),
    /// The store actor is gone (the service is shutting down).
    #[error("session store is not running")]
    Unavailable,
}

impl StoreError {
    pub(super) fn database(cause: rusqlite::Error) -> Self {
        Self::Database {
            kind: classify(&cause),
            cause,
        }
    }
}

impl From<r2d2::Error> for StoreError {
    fn from(e: r2d2::Error) -> Self {
        Self::Pool(e)
    }
}

impl From<actix::MailboxError> for StoreError {
    fn from(_: actix::MailboxError) -> Self {
        Self::Unavailable
    }
}

pub(super) fn classify(e: &rusqlite::Error) -> DbFailure {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => DbFailure::Busy,
        Some(ErrorCode::ReadOnly) => DbFailure::ReadOnly,
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => DbFailure::Corrupt,
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => DbFailure::CannotOpen,
        Some(ErrorCode::DiskFull) => DbFailure::Full,
        _ => DbFailure::Other,
    }
}
