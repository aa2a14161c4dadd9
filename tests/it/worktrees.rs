//! A git worktree per thread, through the real binary's application, serenity and the test
//! server, with real git: keyed by the thread's id, removed only when nothing would be lost and
//! nothing is running, in the project directory's place — and git never runs a program the
//! repository configures.

use std::path::{Path, PathBuf};

use crate::discord::{start_with, Service};
use crate::support::{self, git, TestEnv};

const ALICE: u64 = 7;
const ALPHA: u64 = 1001;

/// A repository at `proj` with one commit (and `extra` files committed).
fn repo(env: &TestEnv, extra: &[(&str, &str)]) -> PathBuf {
    let repo = env.path("proj");
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "hello\n").expect("write");
    for (name, text) in extra {
        if let Some(dir) = Path::new(name).parent() {
            std::fs::create_dir_all(repo.join(dir)).expect("mkdir");
        }
        std::fs::write(repo.join(name), text).expect("write");
    }
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "init"]);
    repo
}

async fn with_worktrees(env: &TestEnv) -> Service {
    start_with(env, |st| st.channel[0].profile.thread_worktrees = true).await
}

/// Waits for `n` answers in `thread`; answers the last.
async fn answered(s: &Service, thread: u64, n: usize) -> String {
    s.server
        .wait("the thread's answer", |srv| {
            srv.answer_texts(thread).len() >= n
        })
        .await;
    s.server.answer_texts(thread).remove(n - 1)
}

/// The stand-in's working directories, in start order.
fn cwds(env: &TestEnv) -> Vec<PathBuf> {
    env.starts()
        .iter()
        .filter_map(|r| r["cwd"].as_str().map(PathBuf::from))
        .collect()
}

fn delete_thread(s: &Service, id: u64) {
    s.server.dispatch(
        "THREAD_DELETE",
        &serde_json::json!({"id": id.to_string(), "guild_id": support::discord::GUILD_ID.to_string(),
                            "parent_id": ALPHA.to_string(), "type": 11}),
    );
}

#[actix_rt::test]
async fn threads_work_in_their_own_worktrees_and_archiving_removes_only_clean_ones() {
    let env = TestEnv::new();
    let repo = repo(&env, &[]);
    let s = with_worktrees(&env).await;
    let (t1, t2) = (880_000_000_000_000_011, 880_000_000_000_000_012);
    s.server.add_thread(t1, ALPHA, "Fix login");
    s.server.add_thread(t2, ALPHA, "Add tests");
    s.server.say(t1, ALICE, "one");
    s.server.say(t2, ALICE, "two");
    let first = answered(&s, t1, 1).await;
    answered(&s, t2, 1).await;
    let worktrees = env.path("proj.worktrees");
    let (w1, w2) = (
        worktrees.join(format!("thread-{t1}")),
        worktrees.join(format!("thread-{t2}")),
    );
    assert!(
        first.contains("own git worktree") && first.contains(&format!("claude/thread-{t1}")),
        "{first}"
    );
    // Each ran in its own checkout.
    let cwds = cwds(&env);
    assert!(cwds.contains(&w1.canonicalize().expect("w1")), "{cwds:?}");
    assert!(cwds.contains(&w2.canonicalize().expect("w2")), "{cwds:?}");
    // Claude edits the second thread's checkout: the first and the main one do not see it.
    std::fs::write(w2.join("notes.md"), "work in progress\n").expect("write");
    assert!(!w1.join("notes.md").exists() && !repo.join("notes.md").exists());
    // The next message of a thread reuses its worktree, without a word about it.
    s.server.say(t1, ALICE, "again");
    assert!(!answered(&s, t1, 2).await.contains("worktree"));
    s.server.say(t1, ALICE, "!status");
    let status = answered(&s, t1, 3).await;
    assert!(status.contains(&format!("thread-{t1}")), "{status}");

    s.server.archive_thread(t1);
    support::wait_until(|| !w1.exists(), "the clean worktree removed").await;
    assert!(
        git(&repo, &["branch", "--list", "claude/*"]).contains(&format!("claude/thread-{t1}")),
        "the branch stays"
    );
    s.server.archive_thread(t2);
    s.server
        .wait("the channel told", |srv| {
            srv.answer_texts(ALPHA)
                .iter()
                .any(|t| t.contains("uncommitted changes"))
        })
        .await;
    assert!(w2.join("notes.md").exists(), "a dirty worktree is kept");
    assert!(!git(&repo, &["worktree", "list"]).contains(&format!("thread-{t1}")));
    // A deleted thread's clean worktree goes too.
    let t3 = 880_000_000_000_000_013;
    s.server.add_thread(t3, ALPHA, "short lived");
    s.server.say(t3, ALICE, "three");
    answered(&s, t3, 1).await;
    let w3 = worktrees.join(format!("thread-{t3}"));
    assert!(w3.exists());
    delete_thread(&s, t3);
    support::wait_until(|| !w3.exists(), "the deleted thread's worktree removed").await;
}

#[actix_rt::test]
async fn a_renamed_thread_keeps_its_worktree_branch_and_session() {
    let env = TestEnv::new();
    let repo = repo(&env, &[]);
    let s = with_worktrees(&env).await;
    let t = 880_000_000_000_000_021;
    s.server.add_thread(t, ALPHA, "Fix login");
    s.server.say(t, ALICE, "before the rename");
    answered(&s, t, 1).await;
    s.server.rename_thread(t, "Fix login, for real");
    s.server.say(t, ALICE, "after the rename");
    let after = answered(&s, t, 2).await;
    assert_eq!(
        after, "echo: after the rename",
        "no new worktree, no new conversation"
    );
    let cwds = cwds(&env);
    assert!(cwds.windows(2).all(|w| w[0] == w[1]), "{cwds:?}");
    let branches = git(&repo, &["branch", "--list", "claude/*"]);
    assert_eq!(branches.lines().count(), 1, "{branches}");
    // The stored conversation kept its session across the rename.
    let row = s
        .app
        .store()
        .send(actors::store::ListSessions {
            conversation_id: actors::ids::ConversationId(t),
        })
        .await
        .expect("store")
        .expect("sessions");
    assert_eq!(row.len(), 1, "{row:?}");
}

#[actix_rt::test]
async fn ignored_files_keep_a_worktree_and_the_coordinators_own_files_outlive_it() {
    let env = TestEnv::new();
    repo(&env, &[(".gitignore", ".env\ntarget/\n")]);
    let s = with_worktrees(&env).await;
    let (kept, gone) = (880_000_000_000_000_031, 880_000_000_000_000_032);
    s.server.add_thread(kept, ALPHA, "has secrets");
    s.server.add_thread(gone, ALPHA, "only files");
    s.server.say(kept, ALICE, "hello");
    let id = s.server.say(gone, ALICE, "WRITEFILE:report.md");
    answered(&s, kept, 1).await;
    answered(&s, gone, 1).await;
    let worktrees = env.path("proj.worktrees");
    let (w_kept, w_gone) = (
        worktrees.join(format!("thread-{kept}")),
        worktrees.join(format!("thread-{gone}")),
    );
    // An ignored file only this worktree has: removing it would lose it.
    std::fs::write(w_kept.join(".env"), "TOKEN=1\n").expect("write");
    s.server.archive_thread(kept);
    s.server
        .wait("the channel told", |srv| {
            srv.answer_texts(ALPHA)
                .iter()
                .any(|t| t.contains("ignored files"))
        })
        .await;
    assert!(w_kept.join(".env").exists());
    // The other has only the coordinator's own files (its sent copy of report.md): they are
    // kept in the service's state, and the worktree goes.
    assert!(w_gone
        .join(format!(".claude-coordinator/sent/{id}/report.md"))
        .exists());
    s.server.archive_thread(gone);
    support::wait_until(|| !w_gone.exists(), "the clean worktree removed").await;
    let kept_copy = env
        .db()
        .parent()
        .expect("state dir")
        .join(format!("threads/thread-{gone}/sent/{id}/report.md"));
    assert_eq!(
        std::fs::read_to_string(&kept_copy).expect("kept in the service's state"),
        "written by the stand-in: report.md\n"
    );
}

#[actix_rt::test]
async fn a_project_dir_below_the_repository_root_is_the_same_place_in_the_worktree() {
    let env = TestEnv::new();
    repo(&env, &[("services/api/main.rs", "fn main() {}\n")]);
    let s = start_with(&env, |st| {
        st.channel[0].profile.project_dir = env.path("proj/services/api");
        st.channel[0].profile.thread_worktrees = true;
    })
    .await;
    let t = 880_000_000_000_000_041;
    s.server.add_thread(t, ALPHA, "api work");
    s.server.say(t, ALICE, "hi");
    let first = answered(&s, t, 1).await;
    let place = env
        .path("proj.worktrees")
        .join(format!("thread-{t}/services/api"));
    assert!(first.contains(&place.display().to_string()), "{first}");
    let cwds = cwds(&env);
    assert_eq!(cwds, [place.canonicalize().expect("the subdirectory")]);
    assert!(place.join("main.rs").exists());
}

#[actix_rt::test]
async fn a_worktree_is_not_removed_while_its_run_is_in_flight() {
    let env = TestEnv::new();
    repo(&env, &[]);
    let s = with_worktrees(&env).await;
    let t = 880_000_000_000_000_051;
    s.server.add_thread(t, ALPHA, "long job");
    let gate = env.gate("long");
    s.server.say(t, ALICE, &format!("GATE:{}", gate.display()));
    let worktree = env.path("proj.worktrees").join(format!("thread-{t}"));
    env.wait_for_starts(1).await;
    s.server.archive_thread(t);
    // The close is asked for now; the run goes on in the worktree.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(worktree.exists(), "removed under a running CLI");
    env.open_gate("long");
    answered(&s, t, 1).await;
    // Then, its warm process ended, it goes.
    support::wait_until(|| !worktree.exists(), "removed once idle").await;
}

/// A marker script: every run of it appends its name and arguments to `marker`.
fn marker_script(dir: &Path, marker: &Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("evil.sh");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$0 $*\" >> {}\ncat\n", marker.display()),
    )
    .expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    script
}

/// Makes the repository at `repo` run `script` every way it can: every hook, the file-system
/// monitor, a filter driver every file uses, and submodule recursion.
fn arm(repo: &Path, script: &Path) {
    let hooks = repo.join(".git/hooks");
    for hook in [
        "post-checkout",
        "reference-transaction",
        "post-index-change",
        "pre-auto-gc",
        "post-commit",
        "pre-commit",
        "post-merge",
        "post-rewrite",
    ] {
        std::fs::copy(script, hooks.join(hook)).expect("hook");
    }
    let s = script.display().to_string();
    for (key, value) in [
        ("core.fsmonitor", s.as_str()),
        ("filter.evil.smudge", s.as_str()),
        ("filter.evil.clean", s.as_str()),
        ("filter.evil.process", s.as_str()),
        ("filter.evil.required", "true"),
        ("diff.evil.textconv", s.as_str()),
        ("submodule.recurse", "true"),
    ] {
        git(repo, &["config", key, value]);
    }
}

#[actix_rt::test]
async fn git_runs_none_of_the_repositorys_programs_through_a_threads_whole_life() {
    let env = TestEnv::new();
    let repo = repo(&env, &[(".gitattributes", "* filter=evil diff=evil\n")]);
    let marker = env.path("MARKER");
    let script = marker_script(&env.path("home"), &marker);
    arm(&repo, &script);
    // The trap is real: plain git in the armed repository runs it (and fails, since the
    // "filter" speaks no filter protocol; what matters is that it ran).
    let _ = std::process::Command::new("git")
        .arg("-C")
        .arg(&repo)
        .args(["worktree", "add", "-q", "-b", "probe"])
        .arg(env.path("probe"))
        .output()
        .expect("git");
    assert!(
        marker.exists(),
        "the armed repository's programs run under plain git"
    );
    std::fs::remove_file(&marker).expect("reset the marker");

    let s = with_worktrees(&env).await;
    let t = 880_000_000_000_000_061;
    s.server.add_thread(t, ALPHA, "armed");
    // Made and used (twice), with a change so status compares contents.
    s.server.say(t, ALICE, "one");
    answered(&s, t, 1).await;
    let worktree = env.path("proj.worktrees").join(format!("thread-{t}"));
    std::fs::write(worktree.join("README"), "changed\n").expect("write");
    s.server.say(t, ALICE, "two");
    answered(&s, t, 2).await;
    // Archived: status runs, finds the change, keeps it.
    s.server.archive_thread(t);
    s.server
        .wait("the channel told", |srv| {
            srv.answer_texts(ALPHA)
                .iter()
                .any(|x| x.contains("was kept"))
        })
        .await;
    // Cleaned and deleted: status again, then worktree remove.
    git(
        &worktree,
        &[
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "core.fsmonitor=false",
            "-c",
            "filter.evil.smudge=",
            "-c",
            "filter.evil.clean=",
            "-c",
            "filter.evil.process=",
            "-c",
            "filter.evil.required=false",
            "checkout",
            "README",
        ],
    );
    delete_thread(&s, t);
    support::wait_until(|| !worktree.exists(), "the worktree removed").await;
    assert!(
        !marker.exists(),
        "the repository's programs ran: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );
}
