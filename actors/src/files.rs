//! Files in and out of a conversation, on disk under `<project_dir>/<files.dir>`
//! (`.claude-coordinator` by default, with a `.gitignore` of `*` so git never sees it):
//!
//! - `outbox/<conversation>/`: the directory a run's `CLAUDE_COORDINATOR_OUTBOX` names. After
//!   each run, the regular files Claude wrote there are moved to `sent/<message id>/` and
//!   attached to the reply — at most `files.max_attachments`, each at most
//!   `files.max_attachment_bytes`; the rest are listed with their paths.
//!
//! Anything here comes from Claude or from users, so it is untrusted: names are sanitized
//! (no separators, no `..`, no control characters, length capped), only regular files are
//! taken (a symlink could point anywhere), and sizes are checked before anything is read.
//!
//! Blocking: call these on a blocking thread, never on an actor's.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

/// `[files]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// The directory, relative to the project directory, that holds the inbox and outbox.
    pub dir: PathBuf,
    /// Files attached to one reply (Discord allows 10 per message).
    pub max_attachments: usize,
    /// Bytes per attached file (Discord's limit for bots without boosts is 10 MiB).
    pub max_attachment_bytes: u64,
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(".claude-coordinator"),
            max_attachments: 10,
            max_attachment_bytes: 10 * 1024 * 1024,
        }
    }
}

/// A file that goes with a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplyFile {
    /// The name it is shown with (sanitized).
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// Bytes.
    pub size: u64,
}

/// What a run left in its outbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// To attach.
    pub attach: Vec<ReplyFile>,
    /// Too many or too large: their paths go in the reply.
    pub listed: Vec<ReplyFile>,
    /// Entries skipped (not regular files), by sanitized name.
    pub skipped: Vec<String>,
}

/// The longest file name kept, in characters.
const MAX_NAME: usize = 100;

/// A safe file name for `raw`: its last path component, without control characters or
/// separators, never `.`/`..`/empty, at most [`MAX_NAME`] characters (the extension kept).
pub fn sanitize_name(raw: &str) -> String {
    let last = raw.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim_start_matches('.').trim().to_string();
    let cleaned = if cleaned.is_empty() {
        "file".to_string()
    } else {
        cleaned
    };
    if cleaned.chars().count() <= MAX_NAME {
        return cleaned;
    }
    // Keep a short extension; cut the stem.
    let (stem, ext) = match cleaned.rsplit_once('.') {
        Some((s, e)) if !s.is_empty() && e.chars().count() <= 10 => {
            (s.to_string(), format!(".{e}"))
        }
        _ => (cleaned.clone(), String::new()),
    };
    let keep = MAX_NAME - ext.chars().count();
    format!("{}{ext}", stem.chars().take(keep).collect::<String>())
}

/// `<project>/<files.dir>`, created with a `.gitignore` of `*` if missing (the project
/// directory itself never is: a missing one is the run's error to report).
pub fn root(project: &Path, config: &FilesConfig) -> std::io::Result<PathBuf> {
    if !project.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} is not a directory", project.display()),
        ));
    }
    let root = project.join(&config.dir);
    std::fs::create_dir_all(&root)?;
    let ignore = root.join(".gitignore");
    if !ignore.exists() {
        std::fs::write(
            &ignore,
            "# Written by claude-coordinator: its inbox and outbox.\n*\n",
        )?;
    }
    Ok(root)
}

/// The outbox directory of `conversation` (created).
pub fn outbox_dir(
    project: &Path,
    config: &FilesConfig,
    conversation: u64,
) -> std::io::Result<PathBuf> {
    let dir = root(project, config)?
        .join("outbox")
        .join(conversation.to_string());
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Moves what is in `outbox` to `<root>/sent/<message>/` and says what to attach.
pub fn collect_outbox(
    outbox: &Path,
    project: &Path,
    config: &FilesConfig,
    message: u64,
) -> std::io::Result<Collected> {
    let mut out = Collected::default();
    let entries = match std::fs::read_dir(outbox) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    let mut found: Vec<(String, PathBuf, std::fs::Metadata)> = Vec::new();
    for entry in entries.flatten() {
        let raw = entry.file_name().to_string_lossy().into_owned();
        let name = sanitize_name(&raw);
        // Not followed: a symlink could point at anything the service can read.
        match std::fs::symlink_metadata(entry.path()) {
            Ok(m) if m.file_type().is_file() => found.push((name, entry.path(), m)),
            _ => out.skipped.push(name),
        }
    }
    if found.is_empty() {
        return Ok(out);
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let sent = root(project, config)?
        .join("sent")
        .join(message.to_string());
    std::fs::create_dir_all(&sent)?;
    let mut names = std::collections::HashSet::new();
    for (name, path, meta) in found {
        // Two names that sanitize alike must not overwrite each other.
        let mut unique = name.clone();
        let mut n = 1;
        while !names.insert(unique.clone()) {
            unique = format!("{n}-{name}");
            n += 1;
        }
        let target = sent.join(&unique);
        if let Err(e) = std::fs::rename(&path, &target) {
            warn!(error = %e, file = %unique, "could not move a file out of the outbox");
            continue;
        }
        let file = ReplyFile {
            name: unique,
            path: target,
            size: meta.len(),
        };
        if file.size <= config.max_attachment_bytes && out.attach.len() < config.max_attachments {
            out.attach.push(file);
        } else {
            out.listed.push(file);
        }
    }
    for entry in std::fs::read_dir(outbox).into_iter().flatten().flatten() {
        // What was skipped is not left for the next run to attach by surprise.
        let _ =
            std::fs::remove_file(entry.path()).or_else(|_| std::fs::remove_dir_all(entry.path()));
    }
    Ok(out)
}

/// The reply's note on files that were not attached.
pub fn listed_note(c: &Collected) -> Option<String> {
    if c.listed.is_empty() && c.skipped.is_empty() {
        return None;
    }
    let mut text = String::new();
    if !c.listed.is_empty() {
        text.push_str("Files too many or too large to attach, kept on the server:");
        for f in &c.listed {
            let _ = write!(text, "\n• `{}` ({} bytes)", f.path.display(), f.size);
        }
    }
    if !c.skipped.is_empty() {
        if !text.is_empty() {
            text.push('\n');
        }
        let _ = write!(
            text,
            "Not attached (not regular files): {}",
            c.skipped.join(", ")
        );
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_safe() {
        assert_eq!(sanitize_name("../../etc/passwd"), "passwd");
        assert_eq!(sanitize_name("..\\..\\boot.ini"), "boot.ini");
        assert_eq!(sanitize_name("/abs/path/report.pdf"), "report.pdf");
        assert_eq!(sanitize_name(".."), "file");
        assert_eq!(sanitize_name(""), "file");
        assert_eq!(sanitize_name(".hidden"), "hidden");
        assert_eq!(sanitize_name("a\u{0}b\nc.txt"), "a_b_c.txt");
        assert_eq!(sanitize_name("what?.md"), "what_.md");
        let long = format!("{}.txt", "x".repeat(300));
        let cut = sanitize_name(&long);
        assert_eq!(cut.chars().count(), MAX_NAME);
        assert_eq!(cut.rsplit_once('.').map(|(_, e)| e), Some("txt"));
        let wide = "é".repeat(300);
        assert_eq!(sanitize_name(&wide).chars().count(), MAX_NAME);
    }

    #[test]
    fn the_outbox_is_collected_with_limits_and_symlinks_are_not_followed() {
        let project = tempfile::tempdir().expect("tmp");
        let config = FilesConfig {
            max_attachments: 2,
            max_attachment_bytes: 10,
            ..FilesConfig::default()
        };
        let outbox = outbox_dir(project.path(), &config, 42).expect("outbox");
        std::fs::write(outbox.join("a.txt"), "small").expect("write");
        std::fs::write(outbox.join("b.txt"), "small too").expect("write");
        std::fs::write(outbox.join("c.txt"), "third").expect("write");
        std::fs::write(outbox.join("big.bin"), vec![0_u8; 100]).expect("write");
        std::os::unix::fs::symlink("/etc/passwd", outbox.join("secret")).expect("symlink");
        let c = collect_outbox(&outbox, project.path(), &config, 7).expect("collect");
        let names = |v: &[ReplyFile]| v.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&c.attach), ["a.txt", "b.txt"]);
        assert_eq!(names(&c.listed), ["big.bin", "c.txt"]);
        assert_eq!(c.skipped, ["secret"]);
        assert!(c.attach[0]
            .path
            .starts_with(project.path().join(".claude-coordinator/sent/7")));
        assert_eq!(
            std::fs::read_dir(&outbox).expect("dir").count(),
            0,
            "emptied"
        );
        let ignore = std::fs::read_to_string(project.path().join(".claude-coordinator/.gitignore"))
            .expect("gitignore");
        assert!(ignore.lines().any(|l| l == "*"));
        assert!(listed_note(&c).is_some_and(|n| n.contains("big.bin") && n.contains("secret")));
        // Nothing there: nothing to attach, and no sent directory.
        let empty = collect_outbox(&outbox, project.path(), &config, 8).expect("collect");
        assert_eq!(empty, Collected::default());
    }
}
