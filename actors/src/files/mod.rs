//! Files in and out of a conversation, on disk under `<project_dir>/<files.dir>`
//! (`.claude-coordinator` by default, with a `.gitignore` of `*` so git never sees it):
//!
//! - `inbox/<message id>/`: files attached to a message (other than images Claude sees
//!   inline), downloaded when the message runs and named in the prompt (`download`).
//! - `outbox/<conversation>/`: the directory a run's `CLAUDE_COORDINATOR_OUTBOX` names. After
//!   each run, the regular files Claude wrote there are read, moved to `sent/<message id>/`, and
//!   attached to the reply from the bytes read — at most `files.max_attachments`, each at most
//!   `files.max_attachment_bytes`; the rest are listed with where they are kept (`disk`).
//! - `inbox/` and `sent/` are pruned after `files.retention_days`.
//!
//! A project directory is untrusted: a repository that was cloned, or Claude in one `ln -s`,
//! decides what is in it. So below the project directory nothing is reached by path: every
//! directory and file is opened from its parent's handle without following a link (`disk`), a
//! link anywhere is refused and said so, and only what the service itself created or moved is
//! ever removed. A reply keeps its attachments' bytes in the service's own state (the outbox
//! table), never a path into the project. Names are sanitized, sizes checked before anything is
//! read, and an attachment becomes an image block only if its bytes are one (`download`).
//!
//! Blocking: call the file-system functions on a blocking thread, never on an actor's;
//! [`fetch_attachments`] is async.

mod disk;
mod download;
mod upkeep;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use disk::{FilesError, FilesRoot};
pub use download::{allowed_url, fetch_attachments, image_of, Fetched, Image};
pub use upkeep::Pruned;

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
    /// Bytes per file a user attaches; larger ones are not downloaded, and the user is told.
    pub max_bytes: u64,
    /// Images per message sent to Claude as image blocks.
    pub max_images: usize,
    /// Bytes per image (the API takes at most 5 MB).
    pub max_image_bytes: u64,
    /// Hosts attachments are downloaded from; any other URL is refused.
    pub download_hosts: Vec<String>,
    /// Seconds a download may take.
    pub download_timeout_secs: u64,
    /// Days the inbox's and `sent/`'s files are kept (0: for ever).
    #[serde(default = "default_retention_days")]
    pub retention_days: u64,
}

fn default_retention_days() -> u64 {
    30
}

impl Default for FilesConfig {
    fn default() -> Self {
        Self {
            dir: PathBuf::from(".claude-coordinator"),
            max_attachments: 10,
            max_attachment_bytes: 10 * 1024 * 1024,
            max_bytes: 25 * 1024 * 1024,
            max_images: 4,
            max_image_bytes: 5 * 1024 * 1024,
            download_hosts: vec!["cdn.discordapp.com".into(), "media.discordapp.net".into()],
            download_timeout_secs: 30,
            retention_days: default_retention_days(),
        }
    }
}

impl FilesConfig {
    /// How long the inbox's and `sent/`'s files are kept (`None`: for ever).
    pub fn retention(&self) -> Option<std::time::Duration> {
        (self.retention_days > 0)
            .then(|| std::time::Duration::from_secs(self.retention_days.saturating_mul(86_400)))
    }
}

/// One file attached to a message (its metadata; the file stays on Discord).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentMeta {
    /// The file name the user gave.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// MIME type, if Discord said.
    pub content_type: Option<String>,
    /// Where it can be downloaded.
    pub url: String,
}

/// A file that goes with a reply: its name and the bytes read when the run ended (kept in the
/// outbox until delivered, never re-read from the project).
#[derive(Clone, PartialEq, Eq)]
pub struct ReplyFile {
    /// The name it is shown with (sanitized).
    pub name: String,
    /// Its contents.
    pub bytes: Arc<[u8]>,
}

impl std::fmt::Debug for ReplyFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplyFile")
            .field("name", &self.name)
            .field("size", &self.bytes.len())
            .finish()
    }
}

impl Serialize for ReplyFile {
    /// Its name and size (the bytes are not for listings).
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct as _;
        let mut st = s.serialize_struct("ReplyFile", 2)?;
        st.serialize_field("name", &self.name)?;
        st.serialize_field("size", &self.bytes.len())?;
        st.end()
    }
}

/// A file a run left that is not attached: too large, or one too many.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its sanitized name.
    pub name: String,
    /// Where it is kept (`…/sent/<message id>/<name>`).
    pub path: PathBuf,
    /// Bytes.
    pub size: u64,
}

/// What a run left in its outbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// To attach.
    pub attach: Vec<ReplyFile>,
    /// Too many or too large: where they are kept goes in the reply.
    pub listed: Vec<Listed>,
    /// Entries left alone (not regular files: links, directories…), by sanitized name.
    pub skipped: Vec<String>,
}

/// The longest file name kept, in characters.
const MAX_NAME: usize = 100;

/// A safe file name for `raw`: its last path component, without control characters or
/// separators, never `.`/`..`/empty, at most `MAX_NAME` characters (the extension kept).
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

/// `name`, or `<n>-name` for the first `n` not yet in `taken` (which it joins): two names that
/// sanitize alike never overwrite each other.
fn unique(name: &str, taken: &mut std::collections::HashSet<String>) -> String {
    let mut candidate = name.to_string();
    let mut n = 1;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{n}-{name}");
        n += 1;
    }
    candidate
}

/// Applies retention to the files root of each of `projects` (their inbox and `sent/` files
/// last changed before `before`); one that cannot be pruned (a link planted, say) is logged
/// and skipped. Blocking.
pub fn prune_all(
    projects: &[PathBuf],
    config: &FilesConfig,
    before: std::time::SystemTime,
) -> Pruned {
    let mut total = Pruned::default();
    for project in projects {
        match FilesRoot::existing(project, config)
            .and_then(|root| root.map(|r| r.prune(before)).transpose())
        {
            Ok(Some(p)) => {
                total.directories += p.directories;
                total.files += p.files;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(project = %project.display(), error = %e, "could not prune the coordinator's files");
            }
        }
    }
    total
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
            "Not attached, and left where they are (not regular files): {}",
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
    fn names_that_clash_get_a_number() {
        let mut taken = std::collections::HashSet::new();
        assert_eq!(unique("a.txt", &mut taken), "a.txt");
        assert_eq!(unique("a.txt", &mut taken), "1-a.txt");
        assert_eq!(unique("a.txt", &mut taken), "2-a.txt");
    }
}
