//! The real binary: `console`, `sessions`, settings errors, environment handling, restarts.

use std::os::unix::fs::PermissionsExt;

use crate::support::{
    argv_of, json_lines, run_binary, run_with_config, run_with_config_as, TestEnv,
};

fn console(
    env: &TestEnv,
    stdin: &str,
    vars: &[(&str, &str)],
) -> (std::process::ExitStatus, String, String) {
    let overlay = env.overlay("", "");
    run_with_config(
        &overlay,
        &["console", "--channel", "alpha", "--json"],
        stdin,
        vars,
    )
}

#[test]
fn console_answers_every_line_as_json_and_exits_zero() {
    let env = TestEnv::new();
    let (status, out, err) = console(&env, "hello\n\n-v\n!status\n", &[]);
    assert!(status.success(), "{status}: {err}");
    let replies = json_lines(&out);
    assert_eq!(replies.len(), 3, "{out}");
    // Commands are answered at once; prompts in order as they complete.
    let prompts: Vec<&serde_json::Value> =
        replies.iter().filter(|r| r["kind"] == "answer").collect();
    assert_eq!(prompts[0]["reply"], "echo: hello");
    assert_eq!(prompts[1]["reply"], "echo: -v");
    for r in &prompts {
        assert_eq!(r["channel"], "alpha");
        assert_eq!(r["is_error"], false);
        assert!(
            r["session_id"].as_str().is_some_and(|s| s.len() == 36),
            "{r}"
        );
        assert!(
            (r["cost_usd"].as_f64().expect("cost") - 0.05).abs() < 1e-9,
            "{r}"
        );
    }
    assert_eq!(prompts[0]["session_id"], prompts[1]["session_id"]);
}

#[test]
fn the_console_adds_and_lists_schedules_and_they_outlive_it() {
    let env = TestEnv::new();
    let (status, out, err) = console(
        &env,
        "!schedule add \"0 9 * * 1-5\" run the tests\n!schedule add \"0 9 * *\" x\n",
        &[],
    );
    assert!(status.success(), "{err}");
    let replies = json_lines(&out);
    assert!(
        replies[0]["reply"]
            .as_str()
            .is_some_and(|r| r.starts_with("⏰ Schedule #1 added: `0 9 * * 1-5`")),
        "{out}"
    );
    assert_eq!(replies[1]["is_error"], true, "{out}");
    // Kept in the store: the next console sees it.
    let (status, out, err) = console(&env, "!schedule\n", &[]);
    assert!(status.success(), "{err}");
    let list = json_lines(&out)[0]["reply"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        list.contains("#1 `0 9 * * 1-5`") && list.contains("run the tests"),
        "{list}"
    );
}

#[test]
fn console_text_mode_prints_replies_and_progress() {
    let env = TestEnv::new();
    let overlay = env.overlay("", "");
    let (status, out, err) = run_with_config(
        &overlay,
        &["console", "--channel", "beta"],
        "TOOL:echo hi there\n",
        &[],
    );
    assert!(status.success(), "{err}");
    assert_eq!(out, "tool said: hi there\n");
    assert!(err.contains("… Bash: echo hi there"), "{err}");
}

#[test]
fn a_conversation_resumes_after_the_whole_application_restarts() {
    let env = TestEnv::new();
    let (status, out, _) = console(&env, "remember the word tangerine\n", &[]);
    assert!(status.success());
    let first = &json_lines(&out)[0];
    let session = first["session_id"].as_str().expect("session").to_string();

    // A new process, the same database file.
    let (status, out, _) = console(&env, "HISTORY\n", &[]);
    assert!(status.success());
    let second = &json_lines(&out)[0];
    assert_eq!(second["reply"], "history: remember the word tangerine");
    assert_eq!(second["session_id"], session.as_str());
    let starts = env.starts();
    let argv = argv_of(&starts[1]);
    let i = argv.iter().position(|a| a == "--resume").expect("--resume");
    assert_eq!(argv[i + 1], session);
}

#[test]
fn sessions_can_be_listed_shown_and_reset() {
    let env = TestEnv::new();
    let overlay = env.overlay("", "");
    assert!(console(&env, "one\ntwo\n", &[]).0.success());

    let (status, out, err) = run_with_config(&overlay, &["sessions", "list", "--json"], "", &[]);
    assert!(status.success(), "{err}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["name"], "alpha");
    assert_eq!(list[0]["id"], 1001);
    assert_eq!(list[0]["message_count"], 2);
    let session = list[0]["session_id"].as_str().expect("session").to_string();

    let (status, out, _) = run_with_config(&overlay, &["sessions", "show", "alpha"], "", &[]);
    assert!(status.success());
    assert!(
        out.contains(&session) && out.contains("messages:      2"),
        "{out}"
    );

    let (status, out, _) = run_with_config(&overlay, &["sessions", "reset", "alpha"], "", &[]);
    assert!(status.success());
    assert!(out.contains("session forgotten"), "{out}");
    let (_, out, _) = run_with_config(&overlay, &["sessions", "show", "1001", "--json"], "", &[]);
    let shown: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(shown["session_id"], serde_json::Value::Null);
    assert_eq!(shown["message_count"], 2, "counts are kept");

    // The next message starts a new session.
    assert!(console(&env, "three\n", &[]).0.success());
    let newest = env.starts().pop().expect("a start");
    assert!(!argv_of(&newest).contains(&"--resume".to_string()));

    let (status, _, err) = run_with_config(&overlay, &["sessions", "show", "nobody"], "", &[]);
    assert!(!status.success());
    assert!(
        err.contains("no stored conversation named `nobody`"),
        "{err}"
    );
}

#[test]
fn the_oauth_token_reaches_the_cli_claudecode_does_not_and_logs_never_show_the_token() {
    let env = TestEnv::new();
    let token = "sk-ant-oat01-TEST-SECRET-7f3a";
    let (status, out, err) = console(
        &env,
        "hello\n",
        &[
            ("CLAUDECODE", "1"),
            ("COORDINATOR__CLAUDE__OAUTH_TOKEN", token),
            ("RUST_LOG", "trace"),
        ],
    );
    assert!(status.success(), "{err}");
    let start = &env.starts()[0];
    assert_eq!(start["env"]["CLAUDE_CODE_OAUTH_TOKEN"], token);
    assert!(start["env"].get("CLAUDECODE").is_none(), "{start}");
    // claude.env extras are passed.
    assert_eq!(start["env"]["FAKE_CLAUDE_SLOW_MS"], "30000");
    assert!(!err.is_empty(), "trace logging produced output");
    assert!(
        !out.contains(token) && !err.contains(token),
        "the token leaked into output"
    );
}

#[test]
fn the_cli_gets_none_of_the_services_secrets_or_settings() {
    let env = TestEnv::new();
    let overlay = env.overlay("", "");
    let overlay = overlay.to_str().expect("utf-8");
    // The overlay comes from COORDINATOR_CONFIG here, not --config.
    let (status, _, err) = run_binary(
        &["console", "--channel", "alpha"],
        "run printenv\n",
        &[
            ("COORDINATOR_CONFIG", overlay),
            ("DISCORD_TOKEN", "bot-token-SECRET-1"),
            ("COORDINATOR__DISCORD__TOKEN", "bot-token-SECRET-2"),
            ("COORDINATOR__CLAUDE__OAUTH_TOKEN", "oauth-SECRET-3"),
            ("COORDINATOR__STORE__POOL_SIZE", "3"),
            // The settings read these too, whatever their case: so they are withheld too.
            ("coordinator__discord__token_file", "/run/secret-SECRET-4"),
            ("Discord_Token", "bot-token-SECRET-5"),
            ("CLAUDECODE", "1"),
            ("KEEP_ME", "visible"),
        ],
    );
    assert!(status.success(), "{err}");
    let start = &env.starts()[0];
    let vars = start["env"].as_object().expect("env");
    assert_eq!(vars["KEEP_ME"], "visible");
    assert_eq!(vars["CLAUDE_CODE_OAUTH_TOKEN"], "oauth-SECRET-3");
    assert_eq!(vars["FAKE_CLAUDE_SLOW_MS"], "30000", "claude.env is passed");
    for name in vars.keys() {
        let upper = name.to_ascii_uppercase();
        assert!(
            !(upper.starts_with("COORDINATOR")
                || upper == "DISCORD_TOKEN"
                || upper == "CLAUDECODE"),
            "{name} reached the CLI"
        );
    }
    assert!(!start.to_string().contains("bot-token-SECRET"), "{start}");
    assert!(!start.to_string().contains("SECRET-4"), "{start}");
}

#[test]
fn tokens_can_come_from_files_or_systemd_credentials() {
    let env = TestEnv::new();
    let creds = env.path("credentials");
    std::fs::create_dir_all(&creds).expect("mkdir");
    std::fs::write(creds.join("discord-token"), "cred-bot-SECRET\n").expect("write");
    std::fs::write(creds.join("claude-oauth-token"), "cred-oauth-SECRET\n").expect("write");
    let creds = creds.to_str().expect("utf-8");
    let overlay = env.overlay("", "[access]\nallowed_users = [7]\n");
    let (status, out, err) = run_with_config(
        &overlay,
        &["check"],
        "",
        &[("CREDENTIALS_DIRECTORY", creds)],
    );
    assert!(status.success(), "{out}{err}");
    assert!(out.contains("token present"), "{out}");
    assert!(!out.contains("cred-bot-SECRET") && !err.contains("cred-bot-SECRET"));
    let (status, _, err) = run_with_config(
        &overlay,
        &["console", "--channel", "alpha"],
        "hello\n",
        &[("CREDENTIALS_DIRECTORY", creds)],
    );
    assert!(status.success(), "{err}");
    let start = &env.starts()[0];
    assert_eq!(start["env"]["CLAUDE_CODE_OAUTH_TOKEN"], "cred-oauth-SECRET");
    assert!(
        start["env"].get("CREDENTIALS_DIRECTORY").is_none(),
        "{start}"
    );
    assert!(!start.to_string().contains("cred-bot-SECRET"), "{start}");
    // A token file that cannot be read is an error naming the key, not the secret.
    let overlay = env.overlay(
        "oauth_token_file = \"/nonexistent/oauth\"",
        "[access]\nallowed_users = [7]\n",
    );
    let (status, _, err) = run_with_config(&overlay, &["check"], "", &[]);
    assert_eq!(status.code(), Some(2));
    assert!(
        err.contains("claude.oauth_token_file") && err.contains("/nonexistent/oauth"),
        "{err}"
    );
}

#[test]
fn durations_too_large_for_a_clock_are_refused_naming_the_key() {
    let env = TestEnv::new();
    let overlay = env.overlay("", "");
    let huge = "18446744073709551615";
    for key in [
        "claude.timeout_secs",
        "claude.kill_grace_secs",
        "discord.progress_edit_secs",
        "discord.retry_backoff_ms",
        "access.refusal_cooldown_secs",
        "channels.idle_secs",
        "shutdown.grace_secs",
        "metrics.interval_secs",
        "store.busy_timeout_ms",
    ] {
        let var = format!("COORDINATOR__{}", key.replace('.', "__").to_uppercase());
        let (status, _, err) =
            run_with_config(&overlay, &["sessions", "list"], "", &[(var.as_str(), huge)]);
        assert_eq!(status.code(), Some(2), "{key}: {err}");
        assert!(
            err.contains(key) && err.contains("out of range"),
            "{key}: {err}"
        );
    }
}

#[test]
fn invalid_settings_fail_at_start_naming_the_key() {
    let env = TestEnv::new();
    let cases: [(&str, &str, &str); 18] = [
        ("", "[http]\nlisten = \"0.0.0.0:9464\"", "http.listen"),
        ("", "[http]\ntoken_file = \"/nonexistent/tokens\"", "http.token_file"),
        ("", "[http]\nmax_body_bytes = 10", "http.max_body_bytes"),
        ("", "[http]\nprompts_per_minute = 0", "http.prompts_per_minute"),
        ("", "[schedules]\ntimezone = \"Mars/Olympus\"", "timezone"),
        ("", "[schedules]\nmin_interval_secs = 10", "schedules.min_interval_secs"),
        ("", "[schedules]\ncatch_up = 10", "catch_up"),
        ("", "[http]\nlisten = \"localhost\"", "http.listen"),
        ("", "[limits]\nuser_daily_usd = -1", "limits.user_daily_usd"),
        ("", "[limits]\nuser_messages_per_hour = 1000001", "limits.user_messages_per_hour"),
        ("", "[limits]\ntimezone = \"Mars/Olympus\"", "timezone"),
        ("sandbox = \"sometimes\"", "", "claude.sandbox"),
        ("timeout_secs = 0", "", "claude.timeout_secs"),
        ("permission_mode = \"yolo\"", "", "claude.permission_mode"),
        ("max_concurrent_runs = \"many\"", "", "max_concurrent_runs"),
        ("timeuot_secs = 5", "", "timeuot_secs"),
        (
            "",
            "[[channel]]\nid = 1001\nname = \"delta\"\nproject_dir = \"/tmp\"",
            "channel[3].id",
        ),
        // A channel's table is read as two parts; a key neither takes is still named.
        (
            "",
            "[[channel]]\nid = 1004\nname = \"delta\"\nproject_dir = \"/tmp\"\nrequire_mentoin = true",
            "channel[3].require_mentoin",
        ),
    ];
    for (claude_extra, extra, key) in cases {
        let overlay = env.overlay(claude_extra, extra);
        let (status, _, err) = run_with_config(&overlay, &["sessions", "list"], "", &[]);
        assert_eq!(status.code(), Some(2), "{claude_extra} {extra}: {err}");
        assert!(err.contains(key), "{key} not named in: {err}");
    }
    // Environment overrides are validated the same way.
    let overlay = env.overlay("", "");
    let (status, _, err) = run_with_config(
        &overlay,
        &["sessions", "list"],
        "",
        &[("COORDINATOR__CLAUDE__MAX_CONCURRENT_RUNS", "0")],
    );
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("claude.max_concurrent_runs"), "{err}");
    // A missing overlay file is named too.
    let (status, _, err) = run_binary(
        &["--config", "/nonexistent/overlay.toml", "sessions", "list"],
        "",
        &[],
    );
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("/nonexistent/overlay.toml"), "{err}");
}

#[test]
fn secrets_in_settings_files_are_refused() {
    let env = TestEnv::new();
    let overlay = env.overlay("oauth_token = \"sk-in-a-file-0042\"", "");
    let (status, out, err) = run_with_config(&overlay, &["sessions", "list"], "", &[]);
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("COORDINATOR__CLAUDE__OAUTH_TOKEN"), "{err}");
    assert!(!err.contains("sk-in-a-file-0042") && !out.contains("sk-in-a-file-0042"));
}

#[test]
fn a_read_only_database_gets_a_clear_answer_and_loses_no_reply() {
    let env = TestEnv::new();
    assert!(console(&env, "first\n", &[]).0.success());
    // After a clean shutdown no `-wal` or `-shm` file is left beside the database (closing
    // the last connection removes them): make sure of it, so the service has to read a WAL
    // database it may not write without its shared-memory index.
    let db = rusqlite::Connection::open(env.path("data").join("coordinator.db")).expect("open");
    db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    drop(db);
    assert!(!env.path("data").join("coordinator.db-shm").exists());
    // Make the database unwritable for the user the service runs as. Root ignores file
    // modes, so as root the service runs as `nobody` against root's files, as in a
    // deployment whose database belongs to another user.
    let root = nix::unistd::geteuid().is_root();
    let mode = |p: &std::path::Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod");
    };
    mode(env.dir.path(), 0o755);
    mode(&env.path("home"), 0o777);
    mode(&env.log(), 0o666);
    mode(&env.path("data"), 0o555);
    for f in ["coordinator.db", "coordinator.db-shm", "coordinator.db-wal"] {
        let p = env.path("data").join(f);
        if p.exists() {
            mode(&p, 0o444);
        }
    }
    // The stand-in's transcripts were written by this user; let `nobody` read and extend them.
    for entry in walk(&env.path("home")) {
        mode(&entry, if entry.is_dir() { 0o777 } else { 0o666 });
    }
    let overlay = env.overlay("", "");
    let (status, stdout, stderr) = run_with_config_as(
        &overlay,
        &["console", "--channel", "alpha", "--json"],
        "HISTORY\n",
        &[],
        root.then_some(65534),
    );
    assert!(status.success(), "{stderr}");
    let reply = &json_lines(&stdout)[0];
    let text = reply["reply"].as_str().expect("reply");
    assert!(text.starts_with("history: first"), "{text}");
    assert!(
        text.contains("could not be saved") && text.contains("read-only"),
        "{text}"
    );
    mode(&env.path("data"), 0o755);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            }
            out.push(p);
        }
    }
    out
}

#[test]
fn the_console_answers_permission_requests_from_its_next_line_or_by_flag() {
    let env = TestEnv::new();
    let overlay = env.overlay("", "");
    let file = env.path("proj").join("made-here");
    let input = format!("TOOL:touch {}\ny\n", file.display());
    let (status, out, err) =
        run_with_config(&overlay, &["console", "--channel", "alpha"], &input, &[]);
    assert!(status.success(), "{err}");
    assert!(out.starts_with("Claude asks to use Bash: touch "), "{out}");
    assert!(
        out.ends_with("tool said: (Bash completed with no output)\n"),
        "{out}"
    );
    assert!(
        err.contains("permission request allowed by the console"),
        "{err}"
    );
    assert!(file.exists());
    // --approve none: denied without asking; the audit has both.
    let other = env.path("proj").join("not-made");
    let input = format!("TOOL:touch {}\n", other.display());
    let (status, out, err) = run_with_config(
        &overlay,
        &[
            "console",
            "--channel",
            "alpha",
            "--json",
            "--approve",
            "none",
        ],
        &input,
        &[],
    );
    assert!(status.success(), "{err}");
    let replies = json_lines(&out);
    assert_eq!(replies.len(), 1, "{out}");
    assert!(
        replies[0]["reply"]
            .as_str()
            .is_some_and(|r| r.starts_with("tool said: Denied by the console")),
        "{out}"
    );
    assert!(!other.exists());
    let (status, out, err) = run_with_config(&overlay, &["audit", "--json"], "", &[]);
    assert!(status.success(), "{err}");
    let audit: serde_json::Value = serde_json::from_str(&out).expect("json");
    let decisions: Vec<&str> = audit
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|a| a["decision"].as_str())
        .collect();
    assert_eq!(decisions, ["denied", "allowed"]);
    assert_eq!(audit[1]["decided_by"], "the console");
    assert_eq!(audit[1]["tool"], "Bash");
}
