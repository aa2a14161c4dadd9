//! The stand-in speaks the real CLI's shapes: compared with the recorded samples in
//! tests/fixtures/claude-cli (copied from ../shared/claude-cli/samples).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn sample(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/claude-cli")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

struct Stand {
    dir: tempfile::TempDir,
}

impl Stand {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tmp"),
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_claude"));
        c.args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env_remove("FAKE_CLAUDE_LOG")
            .env_remove("IS_SANDBOX")
            .stdin(Stdio::null());
        c
    }

    /// A process reading turns from stdin (`--input-format stream-json`), pipes open.
    fn stream_input(&self, extra: &[&str]) -> std::process::Child {
        let mut args = vec![
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
        ];
        args.extend_from_slice(extra);
        self.cmd(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn")
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run stand-in")
    }
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn types(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("json line");
            let block = v
                .pointer("/message/content/0/type")
                .and_then(Value::as_str)
                .unwrap_or("");
            format!(
                "{}{}",
                v["type"].as_str().unwrap_or(""),
                if block.is_empty() {
                    String::new()
                } else {
                    format!("/{block}")
                }
            )
        })
        .collect()
}

#[test]
fn json_results_carry_the_keys_a_wrapper_reads() {
    let real: Value = serde_json::from_str(&sample("a_json.stdout")).expect("sample");
    let out = Stand::new().run(&["-p", "--output-format", "json", "--", "hello"]);
    assert!(out.status.success());
    let fake: Value = serde_json::from_slice(&out.stdout).expect("json");
    for key in [
        "type",
        "subtype",
        "is_error",
        "result",
        "session_id",
        "total_cost_usd",
        "duration_ms",
        "duration_api_ms",
        "num_turns",
        "usage",
        "modelUsage",
        "permission_denials",
        "terminal_reason",
        "api_error_status",
    ] {
        assert!(keys(&real).contains(key), "the sample lacks {key}");
        assert!(keys(&fake).contains(key), "the stand-in lacks {key}");
    }
    assert!(
        keys(&fake).is_subset(&keys(&real)),
        "extra keys: {:?}",
        keys(&fake).difference(&keys(&real))
    );
    assert_eq!(fake["result"], "echo: hello");
}

#[test]
fn stream_json_lines_come_in_the_real_order() {
    let stand = Stand::new();
    let out = stand.run(&[
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--",
        "hello stream",
    ]);
    assert_eq!(
        types(&String::from_utf8_lossy(&out.stdout)),
        types(&sample("b_stream_json.stdout"))
    );
    let out = stand.run(&[
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--",
        "TOOL please",
    ]);
    assert_eq!(
        types(&String::from_utf8_lossy(&out.stdout)),
        types(&sample("f_tool_stream.stdout"))
    );
}

#[test]
fn resume_keeps_the_session_and_the_cost_is_cumulative() {
    let stand = Stand::new();
    let first: Value = serde_json::from_slice(
        &stand
            .run(&["-p", "--output-format", "json", "--", "one"])
            .stdout,
    )
    .expect("json");
    let id = first["session_id"].as_str().expect("id");
    let second: Value = serde_json::from_slice(
        &stand
            .run(&[
                "-p",
                "--output-format",
                "json",
                "--resume",
                id,
                "--",
                "HISTORY",
            ])
            .stdout,
    )
    .expect("json");
    assert_eq!(second["session_id"], id);
    assert_eq!(second["result"], "history: one");
    let total = second["total_cost_usd"].as_f64().expect("cost");
    assert!((total - 2.0 * first["total_cost_usd"].as_f64().expect("cost")).abs() < 1e-9);
}

#[test]
fn usage_errors_match_the_real_cli() {
    let stand = Stand::new();
    let unknown = "11111111-2222-3333-4444-555555555555";
    for (args, name) in [
        (
            vec![
                "-p",
                "--output-format",
                "json",
                "--resume",
                unknown,
                "--",
                "x",
            ],
            "c_resume_unknown_uuid",
        ),
        (
            vec![
                "-p",
                "--output-format",
                "json",
                "--resume",
                "garbage-id-xyz",
                "--",
                "x",
            ],
            "c_resume_garbage",
        ),
        (
            vec!["-p", "--output-format", "stream-json", "--", "x"],
            "g_stream_json_without_verbose",
        ),
    ] {
        let out = stand.run(&args);
        assert_eq!(out.status.code(), Some(1), "{name}");
        assert!(out.stdout.is_empty(), "{name}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            sample(&format!("{name}.stderr")),
            "{name}"
        );
    }
    // In stream-json an unknown session also prints an error result line.
    let out = stand.run(&[
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--resume",
        unknown,
        "--",
        "x",
    ]);
    let line: Value = serde_json::from_slice(&out.stdout).expect("json");
    let real: Value =
        serde_json::from_str(&sample("c_resume_unknown_uuid_stream.stdout")).expect("json");
    for key in ["subtype", "is_error", "errors", "session_id", "num_turns"] {
        assert_eq!(line[key], real[key], "{key}");
    }
}

#[test]
fn bypass_as_root_is_refused_like_the_real_cli() {
    if !nix_is_root() {
        return;
    }
    let out = Stand::new().run(&[
        "-p",
        "--output-format",
        "json",
        "--permission-mode",
        "bypassPermissions",
        "--",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        sample("e_bypass_root_json.stderr")
    );
    let out = Stand::new()
        .cmd(&[
            "-p",
            "--output-format",
            "json",
            "--permission-mode",
            "bypassPermissions",
            "--",
            "x",
        ])
        .env("IS_SANDBOX", "1")
        .output()
        .expect("run");
    assert!(out.status.success());
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn sigint_during_a_slow_run_gives_the_clean_error_result() {
    use std::io::BufRead;
    let stand = Stand::new();
    let mut child = stand
        .cmd(&[
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--",
            "be SLOW please",
        ])
        .env("FAKE_CLAUDE_SLOW_MS", "60000")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    // The init line comes after the signal handler is installed.
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut init = String::new();
    stdout.read_line(&mut init).expect("init line");
    assert!(init.contains("\"subtype\":\"init\""), "{init}");
    let pid = child.id().to_string();
    Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .expect("kill");
    let mut last = String::new();
    stdout.read_line(&mut last).expect("result line");
    assert_eq!(child.wait().expect("wait").code(), Some(0));
    let fake: Value = serde_json::from_str(&last).expect("json");
    let real: Value = serde_json::from_str(&sample("d_slow_sigint_json.stdout")).expect("json");
    for key in ["subtype", "is_error", "terminal_reason"] {
        assert_eq!(fake[key], real[key], "{key}");
    }
    assert!(fake.get("result").is_none() && fake["errors"].is_array());
}

#[test]
fn built_in_commands_run_without_a_model_call_even_with_disable_slash_commands() {
    let stand = Stand::new();
    for (prompt, name) in [
        ("/cost", "i_disable_slash__cost"),
        ("/clear now", "i_disable_slash__clear"),
    ] {
        let out = stand.run(&[
            "-p",
            "--output-format",
            "json",
            "--disable-slash-commands",
            "--",
            prompt,
        ]);
        let fake: Value = serde_json::from_slice(&out.stdout).expect("json");
        let real: Value = serde_json::from_str(&sample(&format!("{name}.stdout"))).expect("sample");
        for key in ["result", "num_turns", "is_error", "total_cost_usd"] {
            assert_eq!(fake[key], real[key], "{name}: {key}");
        }
    }
    // A leading space reaches the model.
    let out = stand.run(&["-p", "--output-format", "json", "--", " /cost"]);
    let fake: Value = serde_json::from_slice(&out.stdout).expect("json");
    let real: Value =
        serde_json::from_str(&sample("i_leading_space_slash.stdout")).expect("sample");
    assert_eq!(fake["result"], real["result"]);
    assert_eq!(fake["num_turns"], real["num_turns"]);
}

#[test]
fn a_command_on_stdin_runs_like_the_real_cli_and_each_line_is_a_turn() {
    use std::io::Write;
    let stand = Stand::new();
    let mut child = stand.stream_input(&[]);
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(sample("i_stdin_stream_slash.stdin").as_bytes())
        .expect("write");
    writeln!(
        stdin,
        r#"{{"type":"user","message":{{"role":"user","content":"HISTORY"}},"parent_tool_use_id":null,"session_id":""}}"#
    )
    .expect("write");
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let results: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json line"))
        .filter(|v| v["type"] == "result")
        .collect();
    let real: Vec<Value> = sample("i_stdin_stream_slash.stdout")
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("json line"))
        .filter(|v| v["type"] == "result")
        .collect();
    assert_eq!(results.len(), 2);
    assert_eq!(results[0]["num_turns"], real[0]["num_turns"]);
    assert!(results[0]["result"]
        .as_str()
        .is_some_and(|r| r.starts_with("Estimated cost:")));
    assert_eq!(results[1]["result"], "history: ");
}

/// The line kinds of a stream (`type`, `type/subtype` for control lines and results).
fn kinds(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            let t = v["type"].as_str().unwrap_or_default().to_string();
            match t.as_str() {
                "control_request" => {
                    format!("{t}/{}", v["request"]["subtype"].as_str().unwrap_or(""))
                }
                "result" | "system" => format!("{t}/{}", v["subtype"].as_str().unwrap_or("")),
                _ => t,
            }
        })
        .collect()
}

/// Runs a live session and plays `script`: a user line, then for each `can_use_tool` the
/// answer `answer(request)` gives; returns stdout.
fn live_session(stand: &Stand, prompt: &str, answer: impl Fn(&Value) -> Vec<Value>) -> String {
    use std::io::{BufRead, Write};
    let mut child = stand.stream_input(&["--permission-prompt-tool", "stdio"]);
    let mut stdin = child.stdin.take().expect("stdin");
    let user = serde_json::json!({"type": "user", "message": {"role": "user", "content": prompt},
        "parent_tool_use_id": null, "session_id": ""});
    writeln!(stdin, "{user}").expect("write");
    let mut out = String::new();
    let mut reader = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    while reader.read_line(&mut line).expect("read") > 0 {
        out.push_str(&line);
        let v: Value = serde_json::from_str(&line).expect("json line");
        line.clear();
        if v["type"] == "control_request" {
            for a in answer(&v) {
                writeln!(stdin, "{a}").expect("write");
            }
        }
        if v["type"] == "result" {
            break;
        }
    }
    drop(stdin);
    let _ = child.wait();
    out
}

#[test]
fn an_allowed_tool_call_prints_the_lines_of_the_real_cli_in_its_order() {
    let stand = Stand::new();
    let file = stand.dir.path().join("x");
    let out = live_session(&stand, &format!("TOOL:touch {}", file.display()), |req| {
        vec![
            serde_json::json!({"type": "control_response", "response": {"subtype": "success",
            "request_id": req["request_id"], "response": {"behavior": "allow"}}}),
        ]
    });
    assert_eq!(kinds(&out), kinds(&sample("p_01_allow.stdout")));
    assert!(file.exists());
    let request: Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "control_request")
        .expect("request");
    let real: Value = sample("p_01_allow.stdout")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "control_request")
        .expect("request");
    assert_eq!(
        keys(&request["request"]),
        keys(&real["request"])
            .into_iter()
            .filter(|k| k != "blocked_path")
            .collect()
    );
    let suggestions = |v: &Value| -> Vec<Value> {
        v["request"]["permission_suggestions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| s["type"].clone())
            .collect()
    };
    assert_eq!(suggestions(&request), suggestions(&real));
}

#[test]
fn an_interrupt_while_a_request_is_pending_withdraws_it_like_the_real_cli() {
    let stand = Stand::new();
    let file = stand.dir.path().join("never");
    let out = live_session(&stand, &format!("TOOL:touch {}", file.display()), |_| {
        vec![
            serde_json::json!({"type": "control_request", "request_id": "int-1",
            "request": {"subtype": "interrupt"}}),
        ]
    });
    let real = sample("p_21_interrupt_pending_permission.stdout");
    // The real transcript goes on with a second turn; compare up to the first result.
    let first_turn: Vec<String> = kinds(&real)
        .into_iter()
        .take_while(|k| !k.starts_with("result"))
        .chain(std::iter::once("result/error_during_execution".to_string()))
        .collect();
    assert_eq!(kinds(&out), first_turn);
    let result: Value = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["type"] == "result")
        .expect("result");
    assert_eq!(result["terminal_reason"], "aborted_tools");
    assert!(result.get("result").is_none());
    assert!(!file.exists());
}

#[test]
fn a_usage_limit_looks_like_the_real_clis_and_a_warm_process_announces_it_once() {
    let until = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 3600;
    let stand = Stand::new();
    let prompt = format!("hello USAGELIMIT:{until}");
    let out = stand.run(&[
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--",
        &prompt,
    ]);
    let real = sample("u_oauth_limit_stream.stdout");
    let fake = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(types(&fake), types(&real));
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit 1, as u_oauth_limit_stream.rc"
    );
    let lines = |t: &str| -> Vec<Value> {
        t.lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect()
    };
    let (real, fake) = (lines(&real), lines(&fake));
    for (r, f) in real.iter().zip(&fake).skip(1) {
        let missing: Vec<_> = keys(r)
            .into_iter()
            .filter(|k| {
                !keys(f).contains(k) && !["timestamp", "request_id", "uuid"].contains(&k.as_str())
            })
            .collect();
        assert!(
            missing.is_empty() || r["type"] == "result",
            "{} lacks {missing:?}",
            r["type"]
        );
    }
    assert_eq!(fake[1]["rate_limit_info"]["resetsAt"], until);
    assert_eq!(
        fake[2]["api_error_params"]["rate_limit_info"]["resetsAt"],
        until
    );
    let result = fake.last().expect("result");
    assert_eq!(result["api_error"], "usage_limit_reached");
    assert!(result["result"]
        .as_str()
        .is_some_and(|t| t.starts_with("You've hit your limit · resets ")));

    // A warm process: the event once, the error line every turn (u_oauth_limit_live).
    let mut child = stand.stream_input(&[]);
    let mut stdin = child.stdin.take().expect("stdin");
    for _ in 0..2 {
        let line = json_user_line(&prompt);
        std::io::Write::write_all(&mut stdin, line.as_bytes()).expect("write");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("\"rate_limit_event\"").count(), 1, "{text}");
    assert_eq!(text.matches("usage_limit_reached").count(), 4, "{text}");
}

fn json_user_line(text: &str) -> String {
    format!(
        "{}\n",
        serde_json::json!({"type": "user", "message": {"role": "user", "content": [{"type": "text", "text": text}]}})
    )
}
