//! A git worktree per thread (`thread_worktrees = true` on a channel whose project directory is
//! a git repository): each thread works in its own checkout, `git worktree add`ed on branch
//! `claude/<thread name slug>-<thread id>` under `<project_dir>/../<repo>.worktrees/` (or the
//! channel's `worktree_root`), so parallel threads never edit the same files. When the thread
//! is archived or deleted, its worktree is removed if it has no uncommitted changes; else it is
//! kept (and the channel told). The branch stays: commits are never thrown away.
//!
//! Uses the `git` binary. Blocking: call these on a blocking thread.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why a worktree could not be made or removed, in words for the channel.
#[derive(Debug, thiserror::Error)]
pub enum WorktreeError {
    /// `git` could not be run.
    #[error("could not run git: {0}")]
    Git(#[from] std::io::Error),
    /// The project directory is not a git repository.
    #[error("{0} is not a git repository")]
    NotARepository(PathBuf),
    /// git refused.
    #[error("git {what} failed: {message}")]
    Refused {
        /// What was asked.
        what: &'static str,
        /// git's own words (its last lines).
        message: String,
    },
}

/// A thread's worktree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worktree {
    /// Where it is.
    pub path: PathBuf,
    /// Its branch.
    pub branch: String,
    /// Made just now (the thread's first run).
    pub created: bool,
}

/// What happened to a worktree when its thread closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// Removed (it was clean).
    Removed(PathBuf),
    /// Kept: it has uncommitted changes.
    Kept(PathBuf),
    /// There was none.
    None,
}

fn git(dir: &Path, args: &[&str], what: &'static str) -> Result<String, WorktreeError> {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        // Never ask for anything: no terminal here.
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let message = stderr
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("no message")
        .to_string();
    Err(WorktreeError::Refused { what, message })
}

/// A branch-safe slug of a thread's name: lowercase ASCII letters, digits and dashes, at most
/// 40 characters, never empty.
pub fn slug(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
        if out.len() >= 40 {
            break;
        }
    }
    let out = out.trim_matches('-').to_string();
    if out.is_empty() {
        "thread".into()
    } else {
        out
    }
}

/// Where the worktrees of `project`'s repository go: `root`, else `<top>/../<repo>.worktrees`.
fn worktrees_dir(top: &Path, root: Option<&Path>) -> PathBuf {
    root.map_or_else(
        || {
            let repo = top
                .file_name()
                .map_or_else(|| "repo".into(), |n| n.to_string_lossy().into_owned());
            top.parent()
                .unwrap_or(top)
                .join(format!("{repo}.worktrees"))
        },
        Path::to_path_buf,
    )
}

/// The worktree of thread `thread` (named `name`), made if it does not exist yet.
pub fn ensure(
    project: &Path,
    root: Option<&Path>,
    thread: u64,
    name: &str,
) -> Result<Worktree, WorktreeError> {
    let top = git(project, &["rev-parse", "--show-toplevel"], "rev-parse")
        .map_err(|_| WorktreeError::NotARepository(project.to_path_buf()))?;
    let top = PathBuf::from(top);
    let label = format!("{}-{thread}", slug(name));
    let path = worktrees_dir(&top, root).join(&label);
    let branch = format!("claude/{label}");
    if path.join(".git").exists() {
        return Ok(Worktree {
            path,
            branch,
            created: false,
        });
    }
    std::fs::create_dir_all(path.parent().unwrap_or(&path))?;
    let target = path.to_string_lossy().into_owned();
    let exists = git(
        &top,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}"),
        ],
        "rev-parse",
    )
    .is_ok();
    if exists {
        // The thread's branch outlived an earlier worktree: check it out again.
        git(&top, &["worktree", "add", &target, &branch], "worktree add")?;
    } else {
        git(
            &top,
            &["worktree", "add", "-b", &branch, &target],
            "worktree add",
        )?;
    }
    Ok(Worktree {
        path,
        branch,
        created: true,
    })
}

/// Removes thread `thread`'s worktree if it has no uncommitted changes (untracked files
/// count as changes).
pub fn close(
    project: &Path,
    root: Option<&Path>,
    thread: u64,
    name: &str,
) -> Result<Closed, WorktreeError> {
    let top = git(project, &["rev-parse", "--show-toplevel"], "rev-parse")
        .map_err(|_| WorktreeError::NotARepository(project.to_path_buf()))?;
    let dir = worktrees_dir(Path::new(&top), root);
    // The thread may have been renamed since: find it by its id.
    let suffix = format!("-{thread}");
    let found = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(&suffix))
        })
        .or_else(|| Some(dir.join(format!("{}{suffix}", slug(name)))).filter(|p| p.exists()));
    let Some(path) = found else {
        return Ok(Closed::None);
    };
    let status = git(&path, &["status", "--porcelain"], "status")?;
    if !status.is_empty() {
        return Ok(Closed::Kept(path));
    }
    git(
        Path::new(&top),
        &["worktree", "remove", &path.to_string_lossy()],
        "worktree remove",
    )?;
    Ok(Closed::Removed(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_safe_branch_names() {
        assert_eq!(slug("Fix the login!"), "fix-the-login");
        assert_eq!(slug("../../etc"), "etc");
        assert_eq!(slug("🙂🙂"), "thread");
        assert_eq!(slug("a--b  c"), "a-b-c");
        assert!(slug(&"x".repeat(100)).len() <= 40);
        assert_eq!(slug("Ünïcödé name"), "n-c-d-name");
    }
}
