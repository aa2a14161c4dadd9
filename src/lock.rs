//! One service per database: `run` holds an exclusive lock on `<store.path>.lock` for its
//! whole life, and the commands that would run Claude or change a session (`console`,
//! `sessions reset`) take it too, so they refuse while a service holds the database — two
//! processes resuming one session fork its transcript (`../shared/claude-cli/BEHAVIOUR.md`).
//! The kernel drops the lock when its holder dies, even by `kill -9`: no stale lock to clean.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// The held lock; dropping it releases it. `None` inside: the lock file could not be opened
/// at all (a database this user may only read, in a directory it may not write), and the
/// command goes on unlocked, as it did before there was a lock.
#[derive(Debug)]
pub struct DatabaseLock {
    _lock: Option<Flock<File>>,
}

/// Why the lock could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("the session store {db} is in use by another claude-coordinator ({holder}); stop it first, or talk to it from Discord")]
    Held {
        /// The database.
        db: PathBuf,
        /// What the lock file says of its holder.
        holder: String,
    },
    /// The lock file cannot be opened.
    #[error("cannot open the lock file {path}: {cause}")]
    Open {
        /// The lock file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
}

/// The lock file of database `db`.
fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the lock of database `db` for `what` (e.g. `run`), or says who holds it. Never waits.
pub fn lock(db: &Path, what: &str) -> Result<DatabaseLock, LockError> {
    let path = lock_path(db);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        let _ = std::fs::create_dir_all(dir);
    }
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        // flock needs no write access: an existing lock file this user may only read will do.
        .or_else(|_| File::open(&path));
    let file = match opened {
        Ok(f) => f,
        Err(cause) if cause.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::warn!(path = %path.display(), "cannot create the database lock file (read-only directory): going on without it");
            return Ok(DatabaseLock { _lock: None });
        }
        Err(cause) => return Err(LockError::Open { path, cause }),
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(mut lock) => {
            // Who holds it, for the next one's error message (if this user may write it).
            let _ = lock.set_len(0);
            let _ = lock.rewind();
            let _ = write!(lock, "pid {} ({what})", std::process::id());
            let _ = lock.flush();
            Ok(DatabaseLock { _lock: Some(lock) })
        }
        Err((mut file, _)) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            Err(LockError::Held {
                db: db.to_path_buf(),
                holder: if holder.trim().is_empty() {
                    "pid unknown".into()
                } else {
                    holder.trim().to_string()
                },
            })
        }
    }
}
