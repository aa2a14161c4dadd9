//! The CLI's own session files: `$HOME/.claude/projects/<cwd, every character but letters and
//! digits turned into '-'>/<session id>.jsonl` (BEHAVIOUR.md; observed:
//! `/work/scratch/obs/p19` → `-work-scratch-obs-p19`). A session started in a terminal in a
//! conversation's directory is one of them, which `/claude resume ID` can take on; and
//! `/claude handoff` gives the command that goes the other way.

use std::path::{Path, PathBuf};

use super::ClaudeRunner;

/// Whether `id` has a session id's shape (a UUID): anything else never names a file.
pub fn is_session_id(id: &str) -> bool {
    id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The directory the CLI keeps `cwd`'s sessions in, under `home`.
pub fn sessions_dir(home: &Path, cwd: &Path) -> PathBuf {
    let mangled: String = cwd
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    home.join(".claude").join("projects").join(mangled)
}

/// A shell word for `s`: single-quoted unless it needs no quoting.
pub fn shell_word(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:@%,".contains(c));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

impl ClaudeRunner {
    /// The CLI's `HOME` (its environment's, which is the service's unless `claude.env` says).
    pub fn cli_home(&self) -> Option<PathBuf> {
        self.helper_env()
            .into_iter()
            .find(|(k, _)| k == "HOME")
            .map(|(_, v)| PathBuf::from(v))
    }

    /// Whether the CLI has a session `id` for `cwd`: a regular file (not a link) in its session
    /// files for that directory. Blocking: call it on a blocking thread.
    pub fn has_session(&self, cwd: &Path, id: &str) -> bool {
        if !is_session_id(id) {
            return false;
        }
        let Some(home) = self.cli_home() else {
            return false;
        };
        let file = sessions_dir(&home, cwd).join(format!("{id}.jsonl"));
        std::fs::symlink_metadata(file).is_ok_and(|m| m.file_type().is_file())
    }

    /// The command that continues session `id` in a terminal, in `cwd`.
    pub fn handoff_command(&self, cwd: &Path, id: &str) -> String {
        format!(
            "cd {} && claude --resume {}",
            shell_word(&cwd.to_string_lossy()),
            shell_word(id)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_uuids_name_sessions_and_directories_are_mangled_as_observed() {
        assert!(is_session_id("6cc56283-b036-48e4-b2f6-75a2ed2a3220"));
        assert!(!is_session_id("../../etc/passwd-0000-0000-000000000000"));
        assert!(!is_session_id("6cc56283-b036-48e4-b2f6-75a2ed2a322"));
        assert_eq!(
            sessions_dir(Path::new("/h"), Path::new("/work/scratch/obs/p19")),
            Path::new("/h/.claude/projects/-work-scratch-obs-p19")
        );
        assert_eq!(shell_word("/srv/my repo"), "'/srv/my repo'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word("/srv/app"), "/srv/app");
    }
}
