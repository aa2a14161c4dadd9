//! The CLI's environment: the service's own, without its secrets and settings.
//!
//! A prompt, or a file in the repository that Claude reads, can say "run `printenv`": whatever
//! the CLI's environment holds, every tool it runs can post into the channel. So the bot
//! token, the settings (`COORDINATOR_CONFIG`, `COORDINATOR__*`, which may carry secrets) and
//! systemd's `CREDENTIALS_DIRECTORY` are withheld, and `CLAUDECODE` too (the CLI refuses to
//! start nested).
//!
//! Added: `CLAUDE_CODE_ENABLE_TODO_TOOLS=1`, so 2.1.330 offers Claude its to-do list (the
//! `Task*` tools: see `todo`), which the progress message shows; `claude.env` may set it
//! otherwise.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};

use secrecy::ExposeSecret;

use super::ClaudeConfig;

/// Variables of the service's own environment that the CLI (and every tool it runs) must not
/// see: secrets, and settings that may carry them — in any case, since the settings loader
/// reads `coordinator__…` as readily as `COORDINATOR__…`.
fn is_withheld(name: &OsStr) -> bool {
    let name = name.as_encoded_bytes().to_ascii_uppercase();
    name == b"DISCORD_TOKEN"
        || name == b"COORDINATOR_CONFIG"
        || name == b"CREDENTIALS_DIRECTORY"
        || name == b"CLAUDECODE"
        || name.starts_with(b"COORDINATOR__")
}

/// The CLI's whole environment: `inherited` (the service's own) without what
/// the secrets and settings it withholds, then `claude.env`, then `CLAUDE_CODE_OAUTH_TOKEN` when a token is set.
pub fn cli_environment(
    config: &ClaudeConfig,
    inherited: impl IntoIterator<Item = (OsString, OsString)>,
) -> Vec<(OsString, OsString)> {
    let mut env: BTreeMap<OsString, OsString> = inherited
        .into_iter()
        .filter(|(k, _)| !is_withheld(k))
        .collect();
    env.insert("CLAUDE_CODE_ENABLE_TODO_TOOLS".into(), "1".into());
    env.extend(
        config
            .env
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v))),
    );
    if let Some(token) = &config.oauth_token {
        env.insert(
            "CLAUDE_CODE_OAUTH_TOKEN".into(),
            token.expose_secret().into(),
        );
    }
    env.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use secrecy::SecretString;

    use super::*;
    use crate::claude::args::tests::config_with;

    #[test]
    fn the_cli_environment_holds_no_service_secrets() {
        let mut config = config_with(&[]);
        config.env.insert("EXTRA".into(), "1".into());
        config.oauth_token = Some(SecretString::from("oauth-secret"));
        let inherited = [
            ("DISCORD_TOKEN", "bot-secret"),
            ("COORDINATOR__CLAUDE__OAUTH_TOKEN", "oauth-secret"),
            ("COORDINATOR__STORE__PATH", "/x"),
            ("coordinator__discord__token_file", "/run/secret"),
            ("Discord_Token", "bot-secret"),
            ("COORDINATOR_CONFIG", "/etc/c.toml"),
            ("CREDENTIALS_DIRECTORY", "/run/credentials/c"),
            ("CLAUDECODE", "1"),
            ("PATH", "/usr/bin"),
        ]
        .map(|(k, v)| (OsString::from(k), OsString::from(v)));
        let env: BTreeMap<String, String> = cli_environment(&config, inherited)
            .into_iter()
            .map(|(k, v)| {
                (
                    k.to_string_lossy().into_owned(),
                    v.to_string_lossy().into_owned(),
                )
            })
            .collect();
        let keys: Vec<&str> = env.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "CLAUDE_CODE_ENABLE_TODO_TOOLS",
                "CLAUDE_CODE_OAUTH_TOKEN",
                "EXTRA",
                "PATH"
            ]
        );
        assert_eq!(env["CLAUDE_CODE_OAUTH_TOKEN"], "oauth-secret");
    }
}
