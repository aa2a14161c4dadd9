//! The CLI sealed in bubblewrap (`claude.sandbox`): through the real binary's console, the
//! stand-in's Bash tool really runs commands inside the sandbox and reports what they saw.
//! The same probes run without the sandbox first, so each one is shown to reach its target
//! when nothing stops it.

use std::path::Path;

use crate::support::real_cli::{real_claude, MessagesStub};
use crate::support::{run_with_config, TestEnv};

/// Paths a CLI in channel `alpha` must not read, named for the report.
struct Secrets {
    token_file: String,
    http_tokens: String,
    database: String,
    credential: String,
    other_project: String,
    overlay: String,
}

/// A deployment outside `/tmp` with a token file, a credentials directory, a second channel's
/// repository and the database, all readable by the service's user.
fn deployment(env: &TestEnv, sandbox: &str) -> (std::path::PathBuf, Secrets) {
    let secrets = env.path("secrets");
    std::fs::create_dir_all(&secrets).expect("mkdir");
    std::fs::write(secrets.join("discord-token"), "TOKEN-SECRET\n").expect("write");
    std::fs::write(secrets.join("http-tokens"), "HTTP-SECRET\n").expect("write");
    let creds = env.path("credentials");
    std::fs::create_dir_all(&creds).expect("mkdir");
    std::fs::write(creds.join("claude-oauth-token"), "CRED-SECRET\n").expect("write");
    std::fs::write(env.path("proj2/plans.txt"), "BETA-SECRET\n").expect("write");
    let overlay = env.overlay(
        &format!("sandbox = \"{sandbox}\""),
        &format!(
            "[discord]\ntoken_file = \"{}\"\n[http]\ntoken_file = \"{}\"\n",
            secrets.join("discord-token").display(),
            secrets.join("http-tokens").display()
        ),
    );
    let s = Secrets {
        token_file: secrets.join("discord-token").display().to_string(),
        http_tokens: secrets.join("http-tokens").display().to_string(),
        database: env.db().display().to_string(),
        credential: creds.join("claude-oauth-token").display().to_string(),
        other_project: env.path("proj2/plans.txt").display().to_string(),
        overlay: overlay.display().to_string(),
    };
    (overlay, s)
}

/// A Bash script that tries each secret, the environment of every process it can see (the
/// service's holds the bot token), and writes `written` into its own project.
fn probe_script(s: &Secrets, written: &str) -> String {
    use std::fmt::Write as _;
    let mut script = String::from("cat /dev/null");
    for (name, path) in [
        ("token", &s.token_file),
        ("http-tokens", &s.http_tokens),
        ("database", &s.database),
        ("credential", &s.credential),
        ("beta", &s.other_project),
        ("overlay", &s.overlay),
    ] {
        let _ = write!(
            script,
            "; if head -c 64 '{path}' >/dev/null 2>&1; then echo READ-{name}; else echo DENIED-{name}; fi"
        );
    }
    script.push_str(
        "; if grep -qa BOT-ENV-SECRET /proc/[0-9]*/environ 2>/dev/null; then echo READ-environ; else echo DENIED-environ; fi",
    );
    let _ = write!(script, "; echo {written} > written.txt && echo WROTE-alpha");
    script
}

/// One message to `alpha` whose Bash call tries each secret, the environment of every process
/// it can see, and a write into its own project; the console's output.
fn probe(env: &TestEnv, overlay: &Path, s: &Secrets) -> String {
    let script = probe_script(s, "in-alpha");
    let creds = env.path("credentials");
    let (status, out, err) = run_with_config(
        overlay,
        &["console", "--channel", "alpha"],
        &format!("TOOL:{script}\n"),
        &[
            ("CREDENTIALS_DIRECTORY", creds.to_str().expect("utf-8")),
            ("DISCORD_TOKEN", "BOT-ENV-SECRET"),
        ],
    );
    assert!(status.success(), "{out}{err}");
    out
}

const TARGETS: [&str; 7] = [
    "token",
    "http-tokens",
    "database",
    "credential",
    "beta",
    "overlay",
    "environ",
];

#[test]
fn without_the_sandbox_every_probe_reaches_its_target() {
    let env = TestEnv::outside_tmp();
    let (overlay, s) = deployment(&env, "none");
    let out = probe(&env, &overlay, &s);
    for t in TARGETS {
        assert!(out.contains(&format!("READ-{t}")), "{t}: {out}");
    }
    assert!(out.contains("WROTE-alpha"), "{out}");
}

#[test]
fn inside_the_sandbox_secrets_the_database_and_other_channels_are_out_of_reach() {
    let env = TestEnv::outside_tmp();
    let (overlay, s) = deployment(&env, "bubblewrap");
    let out = probe(&env, &overlay, &s);
    for t in TARGETS {
        assert!(out.contains(&format!("DENIED-{t}")), "{t}: {out}");
    }
    assert!(out.contains("WROTE-alpha"), "{out}");
    assert_eq!(
        std::fs::read_to_string(env.path("proj/written.txt")).expect("written"),
        "in-alpha\n"
    );
    // The service's own files are still there, and untouched.
    assert_eq!(
        std::fs::read_to_string(env.path("proj2/plans.txt")).expect("beta"),
        "BETA-SECRET\n"
    );
}

#[test]
fn bubblewrap_that_cannot_run_stops_the_start_and_auto_goes_on_without_it() {
    let env = TestEnv::outside_tmp();
    let missing = env.path("no-such-bwrap");
    let overlay = env.overlay(
        "sandbox = \"bubblewrap\"",
        &format!("[sandbox]\nbwrap = \"{}\"\n", missing.display()),
    );
    let (status, out, err) = run_with_config(&overlay, &["check"], "", &[]);
    assert!(!status.success(), "{out}{err}");
    assert!(
        out.contains("sandbox") && out.contains("no-such-bwrap"),
        "{out}"
    );
    let (status, _, err) =
        run_with_config(&overlay, &["console", "--channel", "alpha"], "hi\n", &[]);
    assert!(!status.success(), "{err}");
    assert!(err.contains("claude.sandbox"), "{err}");
    let overlay = env.overlay(
        "sandbox = \"auto\"",
        &format!("[sandbox]\nbwrap = \"{}\"\n", missing.display()),
    );
    let (status, out, err) =
        run_with_config(&overlay, &["console", "--channel", "alpha"], "hi\n", &[]);
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("echo: hi"), "{out}");
    assert!(err.contains("NO SANDBOX"), "{err}");
}

#[test]
fn the_real_cli_in_the_sandbox_cannot_reach_secrets_through_bash_or_read() {
    let env = TestEnv::outside_tmp();
    let claude = real_claude();
    let stub = MessagesStub::start(&env.path("messages.jsonl"));
    let (_, s) = deployment(&env, "bubblewrap");
    let overlay = env.path("real.toml");
    std::fs::write(
        &overlay,
        format!(
            "[claude]\nbinary = \"{}\"\nsandbox = \"bubblewrap\"\npermission_mode = \"bypassPermissions\"\n\
             timeout_secs = 120\n\
             [claude.env]\nHOME = \"{}\"\nANTHROPIC_BASE_URL = \"{}\"\nANTHROPIC_API_KEY = \"sk-test\"\n\
             IS_SANDBOX = \"1\"\nDISABLE_AUTOUPDATER = \"1\"\n\
             [store]\npath = \"{}\"\n[discord]\ntoken_file = \"{}\"\n[http]\ntoken_file = \"{}\"\n\
             [[channel]]\nid = 1001\nname = \"alpha\"\nproject_dir = \"{}\"\n\
             [[channel]]\nid = 1002\nname = \"beta\"\nproject_dir = \"{}\"\n",
            claude.display(),
            env.path("home").display(),
            stub.base,
            s.database,
            s.token_file,
            s.http_tokens,
            env.path("proj").display(),
            env.path("proj2").display(),
        ),
    )
    .expect("overlay");
    let s = Secrets {
        overlay: overlay.display().to_string(),
        ..s
    };
    let bash = probe_script(&s, "real");
    let call = |tool: &str, input: serde_json::Value| format!("CALL:{tool}:{input}\n");
    let stdin = [
        call("Bash", serde_json::json!({ "command": bash })),
        call("Read", serde_json::json!({ "file_path": s.token_file })),
        call("Read", serde_json::json!({ "file_path": s.other_project })),
    ]
    .concat();
    let creds = env.path("credentials");
    let (status, out, err) = run_with_config(
        &overlay,
        &["console", "--channel", "alpha"],
        &stdin,
        &[
            ("CREDENTIALS_DIRECTORY", creds.to_str().expect("utf-8")),
            ("DISCORD_TOKEN", "BOT-ENV-SECRET"),
        ],
    );
    assert!(status.success(), "{out}{err}");
    for t in TARGETS {
        assert!(out.contains(&format!("DENIED-{t}")), "{t}: {out}");
    }
    assert!(out.contains("WROTE-alpha"), "{out}");
    assert_eq!(
        std::fs::read_to_string(env.path("proj/written.txt")).expect("written"),
        "real\n"
    );
    // The Read tool: a hidden file is an unreadable one, a hidden directory an empty one.
    assert!(out.contains("EACCES: permission denied"), "{out}");
    assert!(out.contains("File does not exist"), "{out}");
    for secret in [
        "TOKEN-SECRET",
        "BETA-SECRET",
        "CRED-SECRET",
        "BOT-ENV-SECRET",
    ] {
        assert!(!out.contains(secret), "{secret}: {out}");
    }
}

#[actix_rt::test]
async fn a_thread_commits_in_its_own_worktree_inside_the_sandbox_and_sees_no_other_thread() {
    use actors::claude::sandbox::SandboxMode;
    use actors::claude::PermissionMode;
    let env = TestEnv::outside_tmp();
    let repo = env.path("proj");
    crate::support::git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README"), "hello\n").expect("write");
    crate::support::git(&repo, &["add", "-A"]);
    crate::support::git(&repo, &["commit", "-q", "-m", "init"]);
    let root = env.dir.path().to_path_buf();
    let s = crate::discord::start_with(&env, |st| {
        st.channel[0].profile.thread_worktrees = true;
        st.claude.sandbox = SandboxMode::Bubblewrap;
        // The stand-in's log is written at the deployment's root (the state directory, the
        // projects and the worktrees below it stay hidden).
        st.sandbox.writable_paths = vec![root];
        st.claude.permission_mode = PermissionMode::BypassPermissions;
        st.claude.env.insert("IS_SANDBOX".into(), "1".into());
    })
    .await;
    let (t1, t2) = (880_000_000_000_000_031, 880_000_000_000_000_032);
    s.server.add_thread(t1, 1001, "Sealed one");
    s.server.add_thread(t2, 1001, "Sealed two");
    s.server.say(
        t1,
        7,
        "TOOL:echo change > file.txt && git add file.txt && git -c user.name=c -c user.email=c@example.com commit -q -m sealed && echo COMMITTED",
    );
    let w1 = env.path(&format!("proj.worktrees/thread-{t1}"));
    let said = s
        .server
        .answer_where(t1, "the commit", |t| t.contains("tool said"))
        .await;
    assert!(said.contains("COMMITTED"), "{said}");
    assert!(
        crate::support::git(&w1, &["log", "--oneline", "-1"]).contains("sealed"),
        "the commit is in the thread's branch"
    );
    // Another thread of the same channel cannot see the first one's worktree, nor the
    // channel's own checkout, but works in its own.
    s.server.say(
        t2,
        7,
        &format!(
            "TOOL:ls {} >/dev/null 2>&1 && echo SEEN-t1 || echo HIDDEN-t1; cat {}/README >/dev/null 2>&1 && echo SEEN-main || echo HIDDEN-main; cat README",
            w1.display(),
            repo.display()
        ),
    );
    let said = s
        .server
        .answer_where(t2, "the look", |t| t.contains("tool said"))
        .await;
    assert!(
        said.contains("HIDDEN-t1") && said.contains("HIDDEN-main"),
        "{said}"
    );
    assert!(said.contains("hello"), "its own checkout: {said}");
}
