//! Sealing each CLI process in a bubblewrap sandbox (`claude.sandbox`, `[sandbox]`).
//!
//! A prompt, or a file Claude reads in a repository, can make Claude run anything its tools
//! allow; approvals stop that only until someone clicks "always" or a channel runs in
//! `acceptEdits`. So every CLI process (and every tool it runs) starts under `bwrap` with:
//! - its own PID namespace and `/proc`: the service's `/proc/<pid>/environ` is not there;
//! - the whole file system read-only (`--ro-bind / /`), a private `/tmp` and `/dev`;
//! - writable again: the run's working directory (the project, or the thread's worktree), the
//!   repository's `.git` when that is a worktree (a commit writes there), the CLI's own state
//!   (`$HOME/.claude`, `$HOME/.claude.json`) and `sandbox.writable_paths`;
//! - not there at all: the service's state directory (database, kept files), its token files,
//!   `$CREDENTIALS_DIRECTORY`, the settings overlay, every channel's project directory and
//!   worktrees but this run's own, and `sandbox.hide_paths` — a directory becomes an empty
//!   one, a file an unreadable one (no capabilities inside, so not even root reads it);
//! - the network as it is (the CLI needs its API).
//!
//! Mounts are made from the root down (a shallower path first), so a hidden directory can
//! hold this run's own project (bound again inside it) and a project can hold another
//! channel's (hidden again inside it). Every path is canonical: bubblewrap is never handed a
//! link to follow.
//!
//! What it does not stop: what the network reaches (the CLI's API, and anything else on the
//! machine's network, loopback included), Unix sockets in the read-only view (the Docker
//! socket, say: hide them with `sandbox.hide_paths`), and reads of the rest of the system that
//! file permissions allow the service's user. It is a wall around the service's secrets and
//! the other channels, not a jail for hostile code with a kernel exploit.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Deserialize;

/// `claude.sandbox`: whether CLI processes run under bubblewrap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SandboxMode {
    /// Bubblewrap when it works on this machine; otherwise none, said loudly at start and by
    /// `check`.
    #[default]
    Auto,
    /// Bubblewrap, or the service refuses to start.
    Bubblewrap,
    /// No sandbox: the CLI sees what the service's user sees.
    None,
}

/// The `[sandbox]` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxConfig {
    /// The `bwrap` executable, a path or a name looked up in `PATH`.
    pub bwrap: PathBuf,
    /// More paths the CLI must not see (files or directories).
    #[serde(default)]
    pub hide_paths: Vec<PathBuf>,
    /// More paths the CLI may write (a shared cache, say).
    #[serde(default)]
    pub writable_paths: Vec<PathBuf>,
}

/// Why no sandbox could be made.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// `bwrap` could not be started (not installed?).
    #[error("cannot start {bwrap}: {cause} (install Debian's `bubblewrap`, or set claude.sandbox = \"none\")")]
    Missing {
        /// What was started.
        bwrap: PathBuf,
        /// Why it failed.
        cause: std::io::Error,
    },
    /// `bwrap` ran but could not build a sandbox (user namespaces off, say).
    #[error("{bwrap} cannot make a sandbox here: {stderr}")]
    Refused {
        /// What ran.
        bwrap: PathBuf,
        /// What it said.
        stderr: String,
    },
    /// The placeholder for hidden files could not be made.
    #[error("cannot prepare {path}: {cause}")]
    Prepare {
        /// Where.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
}

/// A sandbox that works on this machine, with what it hides.
#[derive(Debug, Clone)]
pub struct Sandbox {
    bwrap: PathBuf,
    /// Canonical paths that must not be seen.
    hidden: Vec<PathBuf>,
    /// Canonical paths every run may write.
    writable: Vec<PathBuf>,
    /// An empty file nobody may read, mounted over hidden files.
    placeholder: PathBuf,
}

/// One mount, in the order bubblewrap must make them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mount {
    /// An empty directory in place of this one.
    Empty(PathBuf),
    /// The unreadable placeholder in place of this file.
    Unreadable(PathBuf),
    /// Writable.
    Writable(PathBuf),
}

impl Mount {
    fn path(&self) -> &Path {
        match self {
            Self::Empty(p) | Self::Unreadable(p) | Self::Writable(p) => p,
        }
    }
}

impl Sandbox {
    /// Prepares a sandbox hiding `hidden` (and `config.hide_paths`), and checks that `bwrap`
    /// builds one here. `state_dir` holds the placeholder for hidden files. Blocking.
    pub fn new(
        config: &SandboxConfig,
        hidden: impl IntoIterator<Item = PathBuf>,
        state_dir: &Path,
    ) -> Result<Self, SandboxError> {
        let placeholder = state_dir.join("sandbox-hidden");
        prepare_placeholder(&placeholder).map_err(|cause| SandboxError::Prepare {
            path: placeholder.clone(),
            cause,
        })?;
        let sandbox = Self {
            bwrap: config.bwrap.clone(),
            hidden: canonical(hidden.into_iter().chain(config.hide_paths.iter().cloned())),
            writable: canonical(config.writable_paths.iter().cloned()),
            placeholder,
        };
        sandbox.probe()?;
        Ok(sandbox)
    }

    /// Runs `true` in a sandbox like a run's: `Ok` when bubblewrap works here.
    fn probe(&self) -> Result<(), SandboxError> {
        let out = Command::new(&self.bwrap)
            .args(Self::base_args())
            .args(["--", "true"])
            .env_clear()
            .stdin(Stdio::null())
            .output()
            .map_err(|cause| SandboxError::Missing {
                bwrap: self.bwrap.clone(),
                cause,
            })?;
        if out.status.success() {
            return Ok(());
        }
        Err(SandboxError::Refused {
            bwrap: self.bwrap.clone(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    /// What every sandbox starts with: the system read-only, private PIDs, `/proc`, `/dev`,
    /// `/tmp` and IPC, no capabilities.
    /// Not `--die-with-parent`: its "parent" is the thread that spawned bwrap, and a warm
    /// process outlives that blocking thread; the process group is what stops a run.
    fn base_args() -> [&'static str; 11] {
        [
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--unshare-pid",
            "--unshare-ipc",
            "--cap-drop",
            "ALL",
        ]
    }

    /// The `bwrap` command that runs `binary` in `cwd` sealed off: `cwd` writable, and the
    /// repository's `.git` below `project_dir` when `cwd` is a worktree of it; `home`'s
    /// `.claude` and `.claude.json` writable. Arguments for `binary` go after it. Blocking
    /// (it resolves paths and makes `$HOME/.claude`).
    pub fn command(
        &self,
        binary: &Path,
        cwd: &Path,
        project_dir: &Path,
        home: Option<&Path>,
    ) -> Command {
        let cwd = std::fs::canonicalize(cwd).unwrap_or_else(|_| cwd.to_path_buf());
        let mut own = vec![cwd.clone()];
        if !cwd.starts_with(project_dir) {
            own.extend(git_dir_above(project_dir));
        }
        if let Some(home) = home {
            let state = home.join(".claude");
            // The CLI makes it itself, but a mount needs it first.
            let _ = std::fs::create_dir_all(&state);
            own.push(state);
            own.push(home.join(".claude.json"));
        }
        own.extend(self.writable.iter().cloned());
        let mounts = self.mounts(&own);
        let mut cmd = Command::new(&self.bwrap);
        cmd.args(Self::base_args());
        cmd.args(["--tmpfs", "/tmp"]);
        for m in &mounts {
            let p = m.path().as_os_str();
            match m {
                Mount::Empty(_) => cmd.args([OsStr::new("--tmpfs"), p]),
                Mount::Unreadable(_) => {
                    cmd.args([OsStr::new("--ro-bind"), self.placeholder.as_os_str(), p])
                }
                Mount::Writable(_) => cmd.args([OsStr::new("--bind"), p, p]),
            };
        }
        cmd.arg("--chdir").arg(&cwd).arg("--").arg(binary);
        cmd
    }

    /// The mounts for a run that owns `own`: those that exist, root first; a path both
    /// hidden and owned is owned.
    fn mounts(&self, own: &[PathBuf]) -> Vec<Mount> {
        let own: Vec<PathBuf> = canonical(own.iter().cloned());
        let mut mounts: Vec<Mount> = self
            .hidden
            .iter()
            .filter(|h| !own.contains(h))
            .filter_map(|h| match std::fs::symlink_metadata(h) {
                Ok(m) if m.is_dir() => Some(Mount::Empty(h.clone())),
                Ok(_) => Some(Mount::Unreadable(h.clone())),
                Err(_) => None,
            })
            .chain(
                own.iter()
                    .filter(|p| std::fs::symlink_metadata(p).is_ok())
                    .cloned()
                    .map(Mount::Writable),
            )
            .collect();
        // Shallower first; at one depth, hiding before binding (a bound path is never one
        // hidden: filtered above).
        mounts.sort_by_key(|m| {
            (
                m.path().components().count(),
                matches!(m, Mount::Writable(_)),
            )
        });
        mounts.dedup();
        mounts
    }

    /// The hidden paths, for `check` and the log.
    pub fn hidden(&self) -> &[PathBuf] {
        &self.hidden
    }
}

/// `paths`, canonical, each once. A path that does not exist yet (a worktrees directory made
/// by a thread's first run) is kept under its canonical parent: whether it is there is asked
/// again at each run.
fn canonical(paths: impl IntoIterator<Item = PathBuf>) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = paths
        .into_iter()
        .filter_map(|p| {
            std::fs::canonicalize(&p).ok().or_else(|| {
                let parent = std::fs::canonicalize(p.parent()?).ok()?;
                Some(parent.join(p.file_name()?))
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The `.git` directory of the repository holding `dir` (a real directory, never a link or a
/// `.git` file: those are the repository's to point anywhere).
fn git_dir_above(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .map(|a| a.join(".git"))
        .find(|g| std::fs::symlink_metadata(g).is_ok_and(|m| m.is_dir()))
}

/// The worktrees directory the service makes beside the repository holding `dir`
/// (`<repo>.worktrees`), if there is a repository.
pub fn worktrees_beside(dir: &Path) -> Option<PathBuf> {
    let git = git_dir_above(dir)?;
    let top = git.parent()?;
    let name = top.file_name()?;
    let mut beside: OsString = name.to_os_string();
    beside.push(".worktrees");
    Some(top.parent()?.join(beside))
}

/// An empty file with no permissions at all.
fn prepare_placeholder(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_file() => {}
        Ok(_) => return Err(std::io::Error::other("exists and is not a plain file")),
        Err(_) => {
            std::fs::File::create(path)?;
        }
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o000))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(hidden: &[&Path]) -> Sandbox {
        Sandbox {
            bwrap: "bwrap".into(),
            hidden: canonical(hidden.iter().map(|p| p.to_path_buf())),
            writable: Vec::new(),
            placeholder: "/nowhere".into(),
        }
    }

    #[test]
    fn mounts_go_root_first_and_a_run_keeps_its_own_directory() {
        let root = tempfile::tempdir().expect("tmp");
        let state = root.path().join("state");
        let a = root.path().join("a");
        let b = a.join("nested-b");
        let token = root.path().join("token");
        for d in [&state, &a, &b] {
            std::fs::create_dir_all(d).expect("mkdir");
        }
        std::fs::write(&token, "secret").expect("write");
        let root = std::fs::canonicalize(root.path()).expect("canonical");
        let s = sandbox(&[&root, &state, &a, &b, &token]);
        let mounts = s.mounts(std::slice::from_ref(&a));
        let a = root.join("a");
        assert_eq!(
            mounts,
            vec![
                Mount::Empty(root.clone()),
                Mount::Empty(root.join("state")),
                Mount::Unreadable(root.join("token")),
                Mount::Writable(a.clone()),
                Mount::Empty(a.join("nested-b")),
            ]
        );
    }

    #[test]
    fn a_link_is_resolved_before_it_is_mounted() {
        let root = tempfile::tempdir().expect("tmp");
        let real = root.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let s = sandbox(&[&link]);
        let real = std::fs::canonicalize(&real).expect("canonical");
        assert_eq!(s.hidden(), std::slice::from_ref(&real));
        // Owning it through the link owns the directory itself.
        assert_eq!(s.mounts(&[link]), vec![Mount::Writable(real)]);
    }

    #[test]
    fn a_directory_made_after_the_start_is_hidden_once_it_is_there() {
        let root = tempfile::tempdir().expect("tmp");
        let later = root.path().join("repo.worktrees");
        let s = sandbox(&[&later]);
        assert_eq!(s.mounts(&[]), vec![], "not there yet: nothing to mount");
        std::fs::create_dir(&later).expect("mkdir");
        let later = std::fs::canonicalize(&later).expect("canonical");
        assert_eq!(s.mounts(&[]), vec![Mount::Empty(later)]);
    }

    #[test]
    fn a_git_file_is_never_followed() {
        let root = tempfile::tempdir().expect("tmp");
        let repo = root.path().join("repo");
        std::fs::create_dir_all(repo.join("sub")).expect("mkdir");
        std::fs::write(repo.join("sub/.git"), "gitdir: /").expect("write");
        assert_eq!(git_dir_above(&repo.join("sub")), None);
        std::fs::create_dir(repo.join(".git")).expect("mkdir");
        assert_eq!(git_dir_above(&repo.join("sub")), Some(repo.join(".git")));
        assert_eq!(
            worktrees_beside(&repo.join("sub")),
            Some(root.path().join("repo.worktrees"))
        );
    }
}
