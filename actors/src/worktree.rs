//! A git worktree per thread (`thread_worktrees = true` on a channel whose project directory is
//! in a git repository): each thread works in its own checkout, `git worktree add`ed on branch
//! `claude/thread-<thread id>` as `<repo>/../<repo>.worktrees/thread-<thread id>` (or under the
//! channel's `worktree_root`), so parallel threads never edit the same files. Both are keyed by
//! the thread's id: renaming a thread changes nothing on disk. A `project_dir` below the
//! repository's root gives the thread the same subdirectory of its worktree. When the thread is
//! archived or deleted, its worktree is removed only if nothing in it would be lost —
//! uncommitted changes, untracked *and ignored* files (`.env`, build output) all count; the
//! coordinator's own directory is copied to the service's state first — else it is kept (and
//! the channel told). The branch stays: commits are never thrown away.
//!
//! The repository is untrusted (a clone, or Claude, decides its `.git`): [`Git`] runs every
//! command so that git runs none of the programs a repository or user configuration can name —
//! see [`SAFE_CONFIG`] and [`Git::drivers`] — with the CLI's scrubbed environment.
//!
//! Blocking: call these on a blocking thread.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use crate::ids::ConversationId;

/// Why a worktree could not be made or removed, in words for the channel.
#[derive(Debug, thiserror::Error)]
pub enum WorktreeError {
    /// `git` could not be run.
    #[error("could not run git: {0}")]
    Git(#[from] std::io::Error),
    /// The project directory is not in a git repository.
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
    /// The coordinator's files could not be kept before the worktree went.
    #[error("its coordinator files could not be kept: {0}")]
    Files(#[from] crate::files::FilesError),
}

/// Every way git runs a program that configuration can name, turned off for each command the
/// service runs (`-c`, which wins over every configuration file; `git-config(1)`):
/// hooks (every one, `core.hooksPath`), the file-system monitor, the pager and editors, the
/// external diff, transport helpers and protocols (none of these commands uses the network,
/// but a configuration could make one), submodule recursion (a submodule's own configuration),
/// and background maintenance. Filter, diff and merge drivers have names of the repository's
/// choosing: [`Git::drivers`] finds and turns off each.
pub const SAFE_CONFIG: [(&str, &str); 16] = [
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
    ("core.pager", "cat"),
    ("core.editor", ":"),
    ("sequence.editor", ":"),
    ("diff.external", ""),
    ("core.sshCommand", ""),
    ("core.askPass", ""),
    ("core.gitProxy", ""),
    ("credential.helper", ""),
    ("protocol.allow", "never"),
    ("core.alternateRefsCommand", ""),
    ("uploadpack.packObjectsHook", ""),
    ("submodule.recurse", "false"),
    ("gc.auto", "0"),
    ("maintenance.auto", "false"),
];

/// Runs `git` safely: see the module's docs.
#[derive(Clone)]
pub struct Git {
    env: Arc<Vec<(OsString, OsString)>>,
}

impl std::fmt::Debug for Git {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Git").finish_non_exhaustive()
    }
}

impl Git {
    /// git with `env` (the CLI's scrubbed environment) as its whole environment, less any
    /// `GIT_*` variable (which could point it at another repository or configuration).
    pub fn new(env: impl IntoIterator<Item = (OsString, OsString)>) -> Self {
        let mut env: Vec<(OsString, OsString)> = env
            .into_iter()
            .filter(|(k, _)| !k.as_encoded_bytes().starts_with(b"GIT_"))
            .collect();
        // Never ask for anything (no terminal), never page.
        env.push(("GIT_TERMINAL_PROMPT".into(), "0".into()));
        env.push(("GIT_PAGER".into(), "cat".into()));
        Self { env: Arc::new(env) }
    }

    fn command(&self, dir: &Path, config: &[(String, String)]) -> Command {
        let mut cmd = Command::new("git");
        cmd.env_clear().envs(self.env.iter().map(|(k, v)| (k, v)));
        for (key, value) in SAFE_CONFIG
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .chain(config.iter().cloned())
        {
            cmd.arg("-c").arg(format!("{key}={value}"));
        }
        cmd.arg("-C").arg(dir);
        cmd
    }

    /// The configuration that names a program for a driver of the repository's choosing
    /// (`filter.<name>.clean|smudge|process`, `diff.<name>.command|textconv`,
    /// `merge.<name>.driver`), each turned off; filters also made optional. Reading the
    /// configuration runs nothing.
    pub fn drivers(&self, dir: &Path) -> Vec<(String, String)> {
        let listed = self
            .command(dir, &[])
            .args([
                "config",
                "--name-only",
                "--get-regexp",
                r"^(filter|diff|merge)\.",
            ])
            .output();
        let Ok(out) = listed else {
            return Vec::new();
        };
        let mut off = Vec::new();
        for key in String::from_utf8_lossy(&out.stdout).lines() {
            let key = key.trim();
            let Some((section, rest)) = key.split_once('.') else {
                continue;
            };
            let Some((name, _)) = rest.rsplit_once('.') else {
                continue;
            };
            let fields: &[&str] = match section {
                "filter" => &["clean", "smudge", "process"],
                "diff" => &["command", "textconv"],
                "merge" => &["driver"],
                _ => &[],
            };
            for field in fields {
                off.push((format!("{section}.{name}.{field}"), String::new()));
            }
            if section == "filter" {
                off.push((format!("filter.{name}.required"), "false".into()));
            }
        }
        off.sort();
        off.dedup();
        off
    }

    /// Runs `git -C dir args…` with [`SAFE_CONFIG`] and `drivers`; its trimmed stdout.
    fn run(
        &self,
        dir: &Path,
        drivers: &[(String, String)],
        args: &[&str],
        what: &'static str,
    ) -> Result<String, WorktreeError> {
        let out = self.command(dir, drivers).args(args).output()?;
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
}

/// A thread's worktree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worktree {
    /// Where it is.
    pub path: PathBuf,
    /// Where the thread works: the project directory's place in it.
    pub cwd: PathBuf,
    /// Its branch.
    pub branch: String,
    /// Made just now (the thread's first run).
    pub created: bool,
}

/// What happened to a worktree when its thread closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// Removed (nothing in it would be lost); the coordinator's files were kept, this many.
    Removed(PathBuf, usize),
    /// Kept: it has uncommitted changes, or untracked or ignored files.
    Kept(PathBuf),
    /// There was none.
    None,
}

/// Where a repository's thread worktrees are, and what its project directory is in it.
struct Repo {
    top: PathBuf,
    /// The project directory relative to `top` (`""` at the root).
    prefix: PathBuf,
    /// `worktree_root`, else `<top>/../<repo>.worktrees`.
    worktrees: PathBuf,
    drivers: Vec<(String, String)>,
}

impl Repo {
    fn of(git: &Git, project: &Path, root: Option<&Path>) -> Result<Self, WorktreeError> {
        let drivers = git.drivers(project);
        let not_one = |_| WorktreeError::NotARepository(project.to_path_buf());
        let top = PathBuf::from(
            git.run(
                project,
                &drivers,
                &["rev-parse", "--show-toplevel"],
                "rev-parse",
            )
            .map_err(not_one)?,
        );
        let prefix = PathBuf::from(
            git.run(
                project,
                &drivers,
                &["rev-parse", "--show-prefix"],
                "rev-parse",
            )
            .map_err(not_one)?,
        );
        let worktrees = root.map_or_else(
            || {
                let repo = top
                    .file_name()
                    .map_or_else(|| "repo".into(), |n| n.to_string_lossy().into_owned());
                top.parent()
                    .unwrap_or(&top)
                    .join(format!("{repo}.worktrees"))
            },
            Path::to_path_buf,
        );
        Ok(Self {
            top,
            prefix,
            worktrees,
            drivers,
        })
    }

    /// Thread `id`'s worktree directory: `thread-<id>`, or one an earlier version named
    /// `<name>-<id>`.
    fn path_of(&self, id: ConversationId) -> PathBuf {
        let keyed = self.worktrees.join(format!("thread-{id}"));
        if keyed.exists() {
            return keyed;
        }
        let suffix = format!("-{id}");
        std::fs::read_dir(&self.worktrees)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().ends_with(&suffix))
            })
            .unwrap_or(keyed)
    }
}

/// The worktree of thread `id`, made if it does not exist yet.
pub fn ensure(
    git: &Git,
    project: &Path,
    root: Option<&Path>,
    id: ConversationId,
) -> Result<Worktree, WorktreeError> {
    let repo = Repo::of(git, project, root)?;
    let path = repo.path_of(id);
    // The branch of an earlier version's worktree is found by its id too.
    let branches = git.run(
        &repo.top,
        &repo.drivers,
        &[
            "for-each-ref",
            "--format=%(refname:short)",
            "refs/heads/claude/",
        ],
        "for-each-ref",
    )?;
    let suffix = format!("-{id}");
    let existing = branches
        .lines()
        .find(|b| b.ends_with(&suffix))
        .map(str::to_string);
    let branch = existing
        .clone()
        .unwrap_or_else(|| format!("claude/thread-{id}"));
    let cwd = path.join(&repo.prefix);
    if path.join(".git").exists() {
        return Ok(Worktree {
            path,
            cwd,
            branch,
            created: false,
        });
    }
    std::fs::create_dir_all(&repo.worktrees)?;
    let target = path.to_string_lossy().into_owned();
    let add: Vec<&str> = if existing.is_some() {
        // The thread's branch outlived an earlier worktree: check it out again.
        vec!["worktree", "add", &target, &branch]
    } else {
        vec!["worktree", "add", "-b", &branch, &target]
    };
    git.run(&repo.top, &repo.drivers, &add, "worktree add")?;
    Ok(Worktree {
        path,
        cwd,
        branch,
        created: true,
    })
}

/// Removes thread `id`'s worktree if nothing in it would be lost: no uncommitted change and no
/// untracked or ignored file outside the coordinator's own directory (`files.dir` of the
/// thread's working directory), whose inbox and sent files are first copied to `keep_to`.
pub fn close(
    git: &Git,
    project: &Path,
    root: Option<&Path>,
    id: ConversationId,
    files: &crate::files::FilesConfig,
    keep_to: &Path,
) -> Result<Closed, WorktreeError> {
    let repo = Repo::of(git, project, root)?;
    let path = repo.path_of(id);
    if !path.join(".git").exists() {
        return Ok(Closed::None);
    }
    let status = git.run(
        &path,
        &repo.drivers,
        &[
            "status",
            "--porcelain",
            "--ignored=matching",
            "--untracked-files=all",
        ],
        "status",
    )?;
    let own = repo.prefix.join(&files.dir);
    let own = own.to_string_lossy();
    let dirt = status.lines().any(|line| {
        // `XY path`; the coordinator's directory is ignored by its own `.gitignore`.
        let file = line.get(3..).unwrap_or_default().trim_matches('"');
        !(file == own || file.starts_with(&format!("{own}/")))
    });
    if dirt {
        return Ok(Closed::Kept(path));
    }
    let kept = match crate::files::FilesRoot::existing(&path.join(&repo.prefix), files)? {
        Some(root) => root.copy_out(&keep_to.join(format!("thread-{id}")))?,
        None => 0,
    };
    git.run(
        &repo.top,
        &repo.drivers,
        &["worktree", "remove", &path.to_string_lossy()],
        "worktree remove",
    )?;
    Ok(Closed::Removed(path, kept))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_loses_every_git_variable() {
        let git = Git::new([
            ("PATH".into(), "/usr/bin".into()),
            ("GIT_DIR".into(), "/elsewhere".into()),
            ("GIT_CONFIG_GLOBAL".into(), "/evil".into()),
        ]);
        let keys: Vec<String> = git
            .env
            .iter()
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert_eq!(keys, ["PATH", "GIT_TERMINAL_PROMPT", "GIT_PAGER"]);
    }
}
