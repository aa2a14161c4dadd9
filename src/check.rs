//! `claude-coordinator check`, and the same checks at the start of `run`: the settings load,
//! the claude binary answers `--version`, the database opens, migrates and accepts writes,
//! every channel's project directory is usable, a Discord token is present (never shown), an
//! allowlist exists, and the CLI will not refuse `bypassPermissions` for running as root.
//!
//! Blocking (it runs the CLI and opens the database): call it on a blocking thread.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use actors::claude::{cli_environment, PermissionMode};
use actors::store::{check_writable, open_pool};

use crate::settings::Settings;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but probably not what you want.
    Warn,
    /// Will not work.
    Fail,
}

/// One thing checked.
#[derive(Debug, Clone)]
pub struct Finding {
    /// How bad.
    pub level: Level,
    /// What was checked, e.g. `claude`.
    pub topic: String,
    /// What was found.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        write!(f, "{level}  {:<10} {}", self.topic, self.message)
    }
}

fn finding(level: Level, topic: &str, message: impl Into<String>) -> Finding {
    Finding {
        level,
        topic: topic.into(),
        message: message.into(),
    }
}

/// Runs every check. `for_run`: Discord token and allowlist problems are failures (for `run`),
/// not warnings.
pub fn check(settings: &Settings, for_run: bool) -> Vec<Finding> {
    let mut out = vec![finding(
        Level::Ok,
        "settings",
        format!("loaded; {} channel(s)", settings.channel.len()),
    )];
    out.push(check_claude(settings));
    out.push(finding(
        Level::Ok,
        "processes",
        settings.claude.warm_cap().to_string(),
    ));
    out.extend(check_root_bypass(settings));
    out.push(check_store(settings));
    out.push(check_sandbox(settings));
    for ch in &settings.channel {
        out.push(check_project_dir(&ch.profile.name, &ch.profile.project_dir));
    }
    let discord_level = if for_run { Level::Fail } else { Level::Warn };
    out.push(if settings.discord.token.is_some() {
        finding(Level::Ok, "discord", "token present")
    } else {
        finding(
            discord_level,
            "discord",
            "no token: set DISCORD_TOKEN for `run`",
        )
    });
    let channels: Vec<_> = settings.channel.iter().map(|c| c.access.clone()).collect();
    out.push(if settings.access.allow_everyone {
        finding(Level::Warn, "access", "allow_everyone = true: anyone in these channels can run Claude")
    } else if settings.access.has_allowlist(&channels) {
        finding(Level::Ok, "access", "allowlist configured")
    } else {
        finding(
            discord_level,
            "access",
            "no allowlist: set access.allowed_users / access.allowed_roles (or access.allow_everyone = true)",
        )
    });
    out.push(check_http(settings));
    out
}

/// What `[http]` serves, and whether prompts over HTTP can be sent at all.
fn check_http(settings: &Settings) -> Finding {
    let h = &settings.http;
    match (h.listen, h.tokens.len()) {
        (None, 0) => finding(Level::Ok, "http", "off (http.listen is empty)"),
        (None, _) => finding(
            Level::Warn,
            "http",
            "tokens for prompts over HTTP are set, but http.listen is empty: nothing is served",
        ),
        (Some(addr), 0) => finding(
            Level::Ok,
            "http",
            format!("{addr}: /healthz, /readyz, /metrics; prompts over HTTP refused (no http.token_file or http-token credential)"),
        ),
        (Some(addr), n) => finding(
            Level::Ok,
            "http",
            format!("{addr}: /healthz, /readyz, /metrics, and prompts over HTTP for {n} token(s), {} a minute each", h.prompts_per_minute),
        ),
    }
}

/// Where a command name is found on `PATH`, or the path itself.
fn resolve(binary: &Path) -> Option<PathBuf> {
    if binary.components().count() > 1 {
        return binary.is_file().then(|| binary.to_path_buf());
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(binary))
            .find(|p| p.is_file())
    })
}

fn check_claude(settings: &Settings) -> Finding {
    let c = &settings.claude;
    let Some(path) = resolve(&c.binary) else {
        return finding(
            Level::Fail,
            "claude",
            format!(
                "`{}` not found (claude.binary; PATH for a bare name)",
                c.binary.display()
            ),
        );
    };
    let mut cmd = Command::new(&path);
    cmd.arg("--version")
        .env_clear()
        .envs(cli_environment(c, std::env::vars_os()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            return finding(
                Level::Fail,
                "claude",
                format!("cannot run {}: {e}", path.display()),
            )
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return finding(
                    Level::Fail,
                    "claude",
                    format!("{} --version did not answer in 20 s", path.display()),
                );
            }
        }
    }
    match child.wait_with_output() {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(&out.stdout);
            finding(
                Level::Ok,
                "claude",
                format!(
                    "{} {}",
                    path.display(),
                    version.lines().next().unwrap_or("").trim()
                ),
            )
        }
        Ok(out) => finding(
            Level::Fail,
            "claude",
            format!(
                "{} --version failed ({}): {}",
                path.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ),
        Err(e) => finding(Level::Fail, "claude", format!("{}: {e}", path.display())),
    }
}

/// The CLI refuses `bypassPermissions` as root unless `IS_SANDBOX=1` or
/// `CLAUDE_CODE_BUBBLEWRAP=1` (exactly `1`).
fn check_root_bypass(settings: &Settings) -> Option<Finding> {
    if !nix::unistd::geteuid().is_root() {
        return None;
    }
    let set_to_one = |name: &str| {
        settings.claude.env.get(name).map(String::as_str) == Some("1")
            || (!settings.claude.env.contains_key(name)
                && std::env::var(name).as_deref() == Ok("1"))
    };
    if settings.claude.permission_mode != PermissionMode::BypassPermissions {
        return Some(finding(
            Level::Warn,
            "user",
            "running as root: a dedicated non-root user is safer",
        ));
    }
    if set_to_one("IS_SANDBOX") || set_to_one("CLAUDE_CODE_BUBBLEWRAP") {
        return Some(finding(
            Level::Warn,
            "user",
            "root with bypassPermissions, allowed by IS_SANDBOX=1: only inside a real sandbox",
        ));
    }
    Some(finding(
        Level::Fail,
        "user",
        "running as root with claude.permission_mode = \"bypassPermissions\": the CLI refuses this. \
         Run the service as a non-root user (deploy/claude-coordinator.service does), or set \
         IS_SANDBOX = \"1\" in [claude.env] only inside a real sandbox",
    ))
}

/// Whether the CLI will run sealed: `bubblewrap` that cannot work here fails `run`; `auto`
/// that falls back to none is a loud warning.
fn check_sandbox(settings: &Settings) -> Finding {
    let profiles: Vec<_> = settings.channel.iter().map(|c| c.profile.clone()).collect();
    match crate::sandboxing::choose(settings, &profiles) {
        Ok((Some(s), _)) => finding(
            Level::Ok,
            "sandbox",
            format!(
                "bubblewrap: each CLI process sees only its own project writable, {} path(s) hidden",
                s.hidden().len()
            ),
        ),
        Ok((None, Some(why))) => finding(
            Level::Warn,
            "sandbox",
            format!("NONE — claude.sandbox = \"auto\" and bubblewrap does not work here ({why}); every CLI process sees the service's state, secrets and all channels' projects"),
        ),
        Ok((None, None)) => finding(
            Level::Warn,
            "sandbox",
            "none (claude.sandbox = \"none\"): every CLI process sees the service's state, secrets and all channels' projects",
        ),
        Err(e) => finding(Level::Fail, "sandbox", format!("claude.sandbox = \"bubblewrap\": {e}")),
    }
}

fn check_store(settings: &Settings) -> Finding {
    let config = settings.store.to_config();
    let path = config.path.display().to_string();
    match open_pool(&config)
        .map(drop)
        .and_then(|()| check_writable(&config))
    {
        Ok(()) => finding(
            Level::Ok,
            "store",
            format!("{path}: opened, migrated, writable"),
        ),
        Err(e) => finding(Level::Fail, "store", e.to_string()),
    }
}

fn check_project_dir(name: &str, dir: &Path) -> Finding {
    let topic = "channel";
    match std::fs::metadata(dir) {
        Ok(m) if m.is_dir() => {
            if let Err(e) = std::fs::read_dir(dir) {
                return finding(
                    Level::Fail,
                    topic,
                    format!("{name}: {} cannot be read: {e}", dir.display()),
                );
            }
            if nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_err() {
                return finding(
                    Level::Warn,
                    topic,
                    format!(
                        "{name}: {} is not writable; Claude cannot edit files there",
                        dir.display()
                    ),
                );
            }
            finding(Level::Ok, topic, format!("{name}: {}", dir.display()))
        }
        Ok(_) => finding(
            Level::Fail,
            topic,
            format!("{name}: {} is not a directory", dir.display()),
        ),
        Err(e) => finding(
            Level::Fail,
            topic,
            format!("{name}: project_dir {}: {e}", dir.display()),
        ),
    }
}
