//! A stand-in for the `claude` CLI, used by the tests and the benchmark.
//!
//! It accepts the real CLI's flags, prints the real CLI's `json` / `stream-json` / `text` shapes
//! (see `../shared/claude-cli/BEHAVIOUR.md`; copies of the samples it mirrors are in
//! `tests/fixtures/claude-cli/`), keeps sessions on disk under
//! `$HOME/.claude/projects/<cwd with non-alphanumerics as '-'>/<id>.jsonl` so `--resume` really
//! resumes, and fails like the real one on usage errors and unknown session ids.
//!
//! Words in the prompt steer it (the real CLI's mock API answers `echo: <prompt>` the same way):
//!
//! | word            | behaviour                                                                 |
//! |-----------------|---------------------------------------------------------------------------|
//! | `SLOW`          | sleep `FAKE_CLAUDE_SLOW_MS` (default 3000) before answering               |
//! | `GATE:<path>`   | wait until `<path>` exists before answering                               |
//! | `FAIL500`       | API error result: `subtype` success, `is_error` true, exit 1              |
//! | `MAXTURNS`      | `error_max_turns` result with `errors` and no `result`, exit 1            |
//! | `CRASH`         | print the init line, then exit 3 with a message on stderr                 |
//! | `HANG`          | ignore SIGINT and SIGTERM, start a grandchild `sleep`, never answer       |
//! | `GARBAGE`       | print non-JSON lines and no result, exit 0                                |
//! | `NOISE`         | print noise on stderr and succeed                                         |
//! | `HUGE` / `HUGE:<n>` | answer with n (or `FAKE_CLAUDE_HUGE_BYTES`, default 100000) bytes of Markdown |
//! | `TOOL` / `TOOL:<cmd>` | call Bash (`echo hi` or `<cmd>`, really run in the cwd) and report it |
//! | `HISTORY`       | answer with the earlier prompts of this session                           |
//! | `REPLYFILE:<path>` | answer with the contents of `<path>` (hostile replies in tests)        |
//! | `ASKQ` / `ASKQ2` / `ASKQODD` | ask `AskUserQuestion` (`p_41`); `ASKQ2` adds a multi-select question; `ASKQODD` asks one whose labels repeat and are 150 characters long |
//! | `USAGELIMIT:<t>` | until unix second `t`: a subscription's usage limit as observed (`u_oauth_limit_*`): a `rate_limit_event` (once per process), the error line with `api_error_params`, the `usage_limit_reached` result, exit 1; after `t`, as usual |
//! | `API429:<t>`    | until unix second `t`: the API key's 429 of `u_api429_*` (no reset time); after `t`, as usual |
//! | `WRITEFILE:<name>[:<bytes>]` | write a file (a line of text, or `<bytes>` bytes) to `$CLAUDE_COORDINATOR_OUTBOX` |
//! | `BADIMAGE`      | (or an image block whose bytes hold `BADPIXELS`) the API refuses an image: the synthetic `media_removed` assistant line of `i_image_unprocessable_live`, then the answer; as `2.1.197`, an error result for this and every later turn of the session |
//! | `LINKOUTBOX:<target>` | replace `$CLAUDE_COORDINATOR_OUTBOX` with a symbolic link to `<target>` (Claude's `ln -s`), before any `WRITEFILE` |
//!
//! A prompt starting with `/<name>` where `<name>` is a built-in command runs it locally with no
//! model call, like the real CLI, whatever `--disable-slash-commands` says (with it, the answer
//! is "/<name> isn't available in this environment."). With `--input-format stream-json` the
//! prompt argument is ignored and each user line on stdin is one turn, until stdin closes.
//!
//! SIGINT during `SLOW` / `GATE` prints an `error_during_execution` result and exits 0, like the
//! real CLI; SIGTERM keeps its default action (exit by signal 15).
//!
//! Environment: `FAKE_CLAUDE_LOG` (append one JSON line per start and end — argv, cwd, the whole
//! environment, stdin, pid, pgid — and, with stream-json input, per turn and turn end), `FAKE_CLAUDE_VERSION` (`2.1.330` default: cumulative
//! `total_cost_usd`; `2.1.197`: this call only), `FAKE_CLAUDE_COST` (per call, default 0.05).
//!
//! Files: `args` (the command line), `files` (session files), `session` (a session and its
//! turns), `stream` (the stream loop), `output` (output shapes), `tools` (tools and permission
//! requests), `slash` (built-in commands), `limits` (usage limits), `log` (`FAKE_CLAUDE_LOG`),
//! `control` (the stdin control protocol).

mod args;
mod control;
mod files;
mod limits;
mod log;
mod output;
mod session;
mod slash;
mod stream;
mod tools;

use crate::args::{parse_args, Usage};
use crate::log::log_event;
use crate::stream::run;
use serde_json::json;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn main() -> ExitCode {
    // First thing, so a SIGINT at any time after the start record ends the run cleanly.
    let interrupted = Arc::new(AtomicBool::new(false));
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, Arc::clone(&interrupted));
    let cli: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&cli) {
        Ok(a) => a,
        Err(Usage(msg)) => {
            eprintln!("{msg}");
            return ExitCode::from(1);
        }
    };
    let version = std::env::var("FAKE_CLAUDE_VERSION").unwrap_or_else(|_| "2.1.330".into());
    if args.version {
        println!("{version} (Claude Code)");
        return ExitCode::SUCCESS;
    }
    log_event("start", &json!({}));
    let code = run(&args, &version, &interrupted);
    log_event("end", &json!({"exit": code}));
    ExitCode::from(code)
}
