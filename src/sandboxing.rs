//! Which sandbox the CLI runs in: `claude.sandbox` against what this machine can do, and what
//! the service hides from it (its state directory, secrets, settings overlay and every
//! channel's project and worktrees; each run gets its own back). Blocking: it runs `bwrap`.

use std::path::{Path, PathBuf};

use actors::claude::sandbox::{worktrees_beside, Sandbox, SandboxError, SandboxMode};
use actors::conversation::ChannelProfile;

use crate::settings::Settings;

/// The service's own state directory: the database's (absolute, so it means the same
/// whatever directory the service runs in).
pub fn state_dir(settings: &Settings) -> PathBuf {
    let db = &settings.store.path;
    let dir = db
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}

/// What no CLI process may see (each run's own project and worktree are given back to it).
pub fn hidden_paths(settings: &Settings, channels: &[ChannelProfile]) -> Vec<PathBuf> {
    let mut hidden = vec![state_dir(settings)];
    hidden.extend(settings.discord.token_file.iter().cloned());
    hidden.extend(settings.claude.oauth_token_file.iter().cloned());
    hidden.extend(settings.http.token_file.iter().cloned());
    hidden.extend(std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from));
    hidden.extend(settings.overlay.iter().cloned());
    for c in channels {
        hidden.push(c.project_dir.clone());
        hidden.extend(c.worktree_root.iter().cloned());
        hidden.extend(worktrees_beside(&c.project_dir));
    }
    hidden
}

/// The sandbox to run the CLI in, or `None` (mode `none`, or `auto` where bubblewrap does not
/// work: the reason is returned beside it, for the log). Mode `bubblewrap` where it does not
/// work is an error.
pub fn choose(
    settings: &Settings,
    channels: &[ChannelProfile],
) -> Result<(Option<Sandbox>, Option<SandboxError>), SandboxError> {
    match settings.claude.sandbox {
        SandboxMode::None => Ok((None, None)),
        mode => match Sandbox::new(
            &settings.sandbox,
            hidden_paths(settings, channels),
            &state_dir(settings),
        ) {
            Ok(s) => Ok((Some(s), None)),
            Err(e) if mode == SandboxMode::Auto => Ok((None, Some(e))),
            Err(e) => Err(e),
        },
    }
}
