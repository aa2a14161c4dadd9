//! Files in and out of a conversation, on disk under `<project_dir>/<files.dir>`
//! (`.claude-coordinator` by default, with a `.gitignore` of `*` so git never sees it):
//!
//! - `inbox/<message id>/`: files attached to a message (other than images Claude sees
//!   inline), downloaded when the message runs — only from Discord's attachment hosts (or, in
//!   proxy mode, the configured server), with a timeout, at most `files.max_bytes` each — and
//!   named in the prompt. Images (png, jpeg, gif, webp; at most `files.max_images`, each at
//!   most `files.max_image_bytes`) go to Claude as image blocks of the turn instead (a one-shot
//!   run, which has no turn to carry them, gets them as files too).
//! - `outbox/<conversation>/`: the directory a run's `CLAUDE_COORDINATOR_OUTBOX` names. After
//!   each run, the regular files Claude wrote there are moved to `sent/<message id>/` and
//!   attached to the reply — at most `files.max_attachments`, each at most
//!   `files.max_attachment_bytes`; the rest are listed with their paths.
//!
//! Anything here comes from Claude or from users, so it is untrusted: names are sanitized
//! (no separators, no `..`, no control characters, length capped), only regular files are
//! taken (a symlink could point anywhere), and sizes are checked before anything is read.
//!
//! Blocking: call the file-system functions on a blocking thread, never on an actor's;
//! [`fetch_attachments`] is async.

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
        }
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

/// An image for the turn, as its API block needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    /// `image/png`, `image/jpeg`, `image/gif` or `image/webp`.
    pub media_type: String,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// What a message's attachments became.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fetched {
    /// Images for the turn's content blocks.
    pub images: Vec<Image>,
    /// Files saved in the inbox, as paths relative to the project directory.
    pub saved: Vec<(PathBuf, u64)>,
    /// What the user is told: refused or failed attachments.
    pub notes: Vec<String>,
}

impl Fetched {
    /// The lines added to the prompt, naming the saved files.
    pub fn prompt_note(&self) -> Option<String> {
        if self.saved.is_empty() {
            return None;
        }
        let mut text = String::from("[Files attached to this message, saved in the project:");
        for (path, size) in &self.saved {
            let _ = write!(text, "\n- {} ({size} bytes)", path.display());
        }
        text.push(']');
        Some(text)
    }
}

/// The image media type of an attachment, if it is one Claude takes inline.
fn image_type(a: &AttachmentMeta) -> Option<&'static str> {
    let by_type = a
        .content_type
        .as_deref()
        .and_then(|t| match t.split(';').next()?.trim() {
            "image/png" => Some("image/png"),
            "image/jpeg" => Some("image/jpeg"),
            "image/gif" => Some("image/gif"),
            "image/webp" => Some("image/webp"),
            _ => None,
        });
    by_type.or_else(|| {
        let ext = a.name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "png" => Some("image/png"),
            "jpg" | "jpeg" => Some("image/jpeg"),
            "gif" => Some("image/gif"),
            "webp" => Some("image/webp"),
            _ => None,
        }
    })
}

/// Whether `url` may be downloaded: http(s) on one of `hosts` (any port for a host given
/// with one, e.g. `127.0.0.1:4242` in proxy mode).
pub fn allowed_url(url: &str, hosts: &[String]) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    if !matches!(u.scheme(), "https" | "http") || !u.username().is_empty() {
        return false;
    }
    let Some(host) = u.host_str() else {
        return false;
    };
    let with_port = u.port().map(|p| format!("{host}:{p}"));
    hosts
        .iter()
        .any(|h| h.eq_ignore_ascii_case(host) || with_port.as_deref().is_some_and(|w| h == w))
}

/// The client for attachment downloads: one for the service, built once, its connections
/// reused; it follows no redirect (one could lead off Discord's hosts).
fn downloads() -> &'static reqwest::Client {
    static CLIENT: std::sync::OnceLock<reqwest::Client> = std::sync::OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default()
    })
}

/// Downloads `url` (at most `limit` bytes, within `timeout`), checking the status and that the
/// length is the `expected` one.
async fn download(
    client: &reqwest::Client,
    url: &str,
    limit: u64,
    expected: u64,
    timeout: std::time::Duration,
) -> Result<Vec<u8>, String> {
    let mut response = client.get(url).timeout(timeout).send().await.map_err(|e| {
        if e.is_timeout() {
            "the download timed out".to_string()
        } else {
            "the download failed".to_string()
        }
    })?;
    if !response.status().is_success() {
        return Err(format!(
            "the download failed (HTTP {})",
            response.status().as_u16()
        ));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|_| "the download was cut off".to_string())?
    {
        if (bytes.len() + chunk.len()) as u64 > limit {
            return Err("it is larger than it said".into());
        }
        bytes.extend_from_slice(&chunk);
    }
    if bytes.len() as u64 != expected {
        return Err(format!("{} of {expected} bytes arrived", bytes.len()));
    }
    Ok(bytes)
}

/// Fetches a message's attachments: images for the turn (when `inline_images`), the rest saved
/// to `<root>/inbox/<message>/`. Nothing here fails the run: what cannot be had is a note.
pub async fn fetch_attachments(
    attachments: &[AttachmentMeta],
    project: &Path,
    config: &FilesConfig,
    message: u64,
    inline_images: bool,
) -> Fetched {
    let mut out = Fetched::default();
    if attachments.is_empty() {
        return out;
    }
    let client = downloads();
    let timeout = std::time::Duration::from_secs(config.download_timeout_secs.max(1));
    let mut to_save: Vec<(String, Vec<u8>)> = Vec::new();
    for a in attachments {
        let name = sanitize_name(&a.name);
        let image = image_type(a).filter(|_| inline_images && out.images.len() < config.max_images);
        let limit = if image.is_some() {
            config.max_image_bytes
        } else {
            config.max_bytes
        };
        if a.size > limit {
            out.notes.push(format!(
                "`{name}` ({} bytes) was not read: files may have at most {limit} bytes here.",
                a.size
            ));
            continue;
        }
        if !allowed_url(&a.url, &config.download_hosts) {
            warn!(file = %name, "an attachment not on Discord's attachment hosts; not downloaded");
            out.notes.push(format!(
                "`{name}` was not read: it is not on Discord's attachment hosts."
            ));
            continue;
        }
        match download(client, &a.url, limit, a.size, timeout).await {
            Ok(bytes) => match image {
                Some(media_type) => out.images.push(Image {
                    media_type: media_type.to_string(),
                    bytes,
                }),
                None => to_save.push((name, bytes)),
            },
            Err(why) => {
                warn!(file = %name, %why, "an attachment could not be downloaded");
                out.notes.push(format!(
                    "`{name}` could not be read: {why}. The message ran without it."
                ));
            }
        }
    }
    if to_save.is_empty() {
        return out;
    }
    let (project, config) = (project.to_path_buf(), config.clone());
    let save = move || save_inbox(&project, &config, message, to_save);
    match tokio::task::spawn_blocking(save).await {
        Ok(Ok(saved)) => out.saved = saved,
        Ok(Err(e)) => {
            warn!(error = %e, "could not save attachments to the inbox");
            out.notes
                .push("The attached files could not be saved on the server.".into());
        }
        Err(_) => {}
    }
    out
}

/// Writes `files` to `<root>/inbox/<message>/`; answers their paths relative to `project`.
fn save_inbox(
    project: &Path,
    config: &FilesConfig,
    message: u64,
    files: Vec<(String, Vec<u8>)>,
) -> std::io::Result<Vec<(PathBuf, u64)>> {
    let dir = root(project, config)?
        .join("inbox")
        .join(message.to_string());
    std::fs::create_dir_all(&dir)?;
    let mut saved = Vec::new();
    let mut names = std::collections::HashSet::new();
    for (name, bytes) in files {
        let mut unique = name.clone();
        let mut n = 1;
        while !names.insert(unique.clone()) {
            unique = format!("{n}-{name}");
            n += 1;
        }
        let path = dir.join(&unique);
        std::fs::write(&path, &bytes)?;
        let relative = path
            .strip_prefix(project)
            .map(Path::to_path_buf)
            .unwrap_or(path);
        saved.push((relative, bytes.len() as u64));
    }
    Ok(saved)
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
    fn only_discords_attachment_hosts_are_downloaded_from() {
        let hosts = FilesConfig::default().download_hosts;
        assert!(allowed_url(
            "https://cdn.discordapp.com/attachments/1/2/a.png",
            &hosts
        ));
        assert!(allowed_url("https://media.discordapp.net/x.png", &hosts));
        assert!(!allowed_url(
            "https://cdn.discordapp.com.evil.example/a.png",
            &hosts
        ));
        assert!(!allowed_url(
            "https://evil.example/cdn.discordapp.com/a.png",
            &hosts
        ));
        assert!(!allowed_url(
            "https://user@cdn.discordapp.com/a.png",
            &hosts
        ));
        assert!(!allowed_url("file:///etc/passwd", &hosts));
        assert!(!allowed_url("not a url", &hosts));
        let proxied = vec!["127.0.0.1:4242".to_string()];
        assert!(allowed_url(
            "http://127.0.0.1:4242/attachments/1/a.txt",
            &proxied
        ));
        assert!(!allowed_url(
            "http://127.0.0.1:9999/attachments/1/a.txt",
            &proxied
        ));
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
