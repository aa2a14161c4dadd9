//! Shared by the actors tests: a shell script standing in for `claude`, generated replies.
pub mod replies;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use actors::claude::{ClaudeConfig, ClaudeRunner, CostReporting, PermissionMode};

/// Writes `body` as the executable `dir/claude` (a `sh` script) and returns a runner for it,
/// with `env` passed to the script, a 60 s timeout and a 1 s kill grace.
pub fn script_runner(dir: &Path, body: &str, env: BTreeMap<String, String>) -> ClaudeRunner {
    let path = dir.join("claude");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    ClaudeRunner::new(ClaudeConfig {
        binary: path,
        timeout_secs: 60,
        kill_grace_secs: 1,
        permission_mode: PermissionMode::Default,
        model: None,
        max_concurrent_runs: 1,
        oauth_token: None,
        oauth_token_file: None,
        env,
        passthrough_commands: Vec::new(),
        cost_reporting: CostReporting::Auto,
        live_sessions: false,
        keep_warm_secs: 0,
        max_warm_sessions: 1,
        approval_timeout_secs: 60,
        sandbox: actors::claude::sandbox::SandboxMode::None,
    })
}
