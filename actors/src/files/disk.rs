//! The files root on disk, reached only through directory handles (`cap-std`'s `Dir`): the
//! project directory is opened once (it is the operator's), and everything below it — the root
//! `<files.dir>`, `inbox/`, `outbox/<id>/`, `sent/<id>/` and each entry — is opened from its
//! parent's handle with `O_NOFOLLOW`. A symbolic link at any level is refused
//! ([`FilesError::Link`]), so nothing outside the root is ever read, written, moved or
//! removed; files are read from the handle opened (`fstat` for the size), never re-opened by
//! path; and only what the service created (its directories, the inbox's files) or moved (the
//! outbox's regular files, into `sent/`) is ever removed, by retention.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use cap_fs_ext::{DirExt as _, FollowSymlinks, OpenOptionsFollowExt as _};
use cap_std::fs::{Dir, OpenOptions, OpenOptionsExt as _};
use tracing::warn;

use super::{sanitize_name, unique, Collected, FilesConfig, Listed, ReplyFile};
use crate::ids::{ConversationId, MessageId};

/// Why the files root, or something in it, could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The project directory is missing (it is never created: that is the run's error).
    #[error("the project directory {0} is not a directory")]
    NoProject(PathBuf),
    /// A symbolic link where a directory or file of the coordinator's should be.
    #[error(
        "`{0}` is a symbolic link; the coordinator never follows links in a project directory"
    )]
    Link(PathBuf),
    /// Something other than a directory where one should be.
    #[error("`{0}` is not a directory")]
    NotADirectory(PathBuf),
    /// `files.dir` leaves the project directory.
    #[error("files.dir must be a relative path inside the project directory, without `..`")]
    BadDir,
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

impl FilesError {
    pub(super) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// `<project>/<files.dir>`, open.
pub struct FilesRoot {
    pub(super) dir: Dir,
    /// Its path, for what is shown and for `CLAUDE_COORDINATOR_OUTBOX`.
    pub(super) path: PathBuf,
    /// Its path relative to the project directory.
    rel: PathBuf,
}

/// Opens directory `name` of `parent` without following a link, creating it if `create` and it
/// is missing; `None` if it is missing and not to be created. `shown` is its path, for errors.
pub(super) fn subdir(
    parent: &Dir,
    name: &str,
    shown: &Path,
    create: bool,
) -> Result<Option<Dir>, FilesError> {
    let opened = match parent.open_dir_nofollow(name) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            match parent.create_dir(name) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(FilesError::io(shown, e)),
            }
            parent.open_dir_nofollow(name)
        }
        other => other,
    };
    match opened {
        Ok(dir) => Ok(Some(dir)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(match parent.symlink_metadata(name) {
            Ok(m) if m.file_type().is_symlink() => FilesError::Link(shown.to_path_buf()),
            Ok(m) if !m.is_dir() => FilesError::NotADirectory(shown.to_path_buf()),
            _ => FilesError::io(shown, e),
        }),
    }
}

/// Options that open an existing regular file for reading: no link followed, and a FIFO put
/// there meanwhile does not block the open.
pub(super) fn read_only() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true)
        .follow(FollowSymlinks::No)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32);
    o
}

/// Options that create a new file (never an existing one, never through a link).
fn create_new() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.write(true).create_new(true).follow(FollowSymlinks::No);
    o
}

/// Reads at most `max` bytes of `file`; `None` if it holds more.
fn read_bounded(file: &mut cap_std::fs::File, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1)).read_to_end(&mut bytes)?;
    Ok((bytes.len() as u64 <= max).then_some(bytes))
}

impl FilesRoot {
    /// Opens `<project>/<files.dir>`, creating it (never the project directory) with a
    /// `.gitignore` of `*`; a link anywhere below the project is refused.
    pub fn open(project: &Path, config: &FilesConfig) -> Result<Self, FilesError> {
        Self::open_as(project, config, true)?.ok_or(FilesError::BadDir)
    }

    /// Opens `<project>/<files.dir>` if it exists (`None` otherwise, or if the project
    /// directory is gone), creating nothing.
    pub fn existing(project: &Path, config: &FilesConfig) -> Result<Option<Self>, FilesError> {
        match Self::open_as(project, config, false) {
            Err(FilesError::NoProject(_)) => Ok(None),
            other => other,
        }
    }

    fn open_as(
        project: &Path,
        config: &FilesConfig,
        create: bool,
    ) -> Result<Option<Self>, FilesError> {
        let mut dir = Dir::open_ambient_dir(project, cap_std::ambient_authority())
            .map_err(|_| FilesError::NoProject(project.to_path_buf()))?;
        let mut path = project.to_path_buf();
        let mut rel = PathBuf::new();
        for part in config.dir.components() {
            let Component::Normal(name) = part else {
                return Err(FilesError::BadDir);
            };
            let name = name.to_string_lossy();
            path.push(name.as_ref());
            rel.push(name.as_ref());
            match subdir(&dir, &name, &path, create)? {
                Some(d) => dir = d,
                None => return Ok(None),
            }
        }
        if rel.as_os_str().is_empty() {
            return Err(FilesError::BadDir);
        }
        let root = Self { dir, path, rel };
        if !create {
            return Ok(Some(root));
        }
        // Created only if missing, and never through a link: an existing one is left alone.
        match root.dir.open_with(".gitignore", &create_new()) {
            Ok(mut f) => f
                .write_all(b"# Written by claude-coordinator: its inbox and outbox.\n*\n")
                .map_err(|e| FilesError::io(&root.path.join(".gitignore"), e))?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(FilesError::io(&root.path.join(".gitignore"), e)),
        }
        Ok(Some(root))
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<root>/<a>/<b>`, opened (created if `create`); `None` if missing.
    fn nested(&self, a: &str, b: &str, create: bool) -> Result<Option<(Dir, PathBuf)>, FilesError> {
        let first = self.path.join(a);
        let Some(outer) = subdir(&self.dir, a, &first, create)? else {
            return Ok(None);
        };
        let second = first.join(b);
        Ok(subdir(&outer, b, &second, create)?.map(|d| (d, second)))
    }

    /// The outbox directory of `conversation` (created): what `CLAUDE_COORDINATOR_OUTBOX` names.
    pub fn outbox(&self, conversation: ConversationId) -> Result<PathBuf, FilesError> {
        self.nested("outbox", &conversation.to_string(), true)
            .map(|d| d.map(|(_, p)| p).unwrap_or_default())
    }

    /// Writes `files` (name, bytes) to `<root>/inbox/<message>/` as new files; answers their
    /// paths relative to the project directory, and sizes.
    pub fn save_inbox(
        &self,
        message: MessageId,
        files: Vec<(String, Vec<u8>)>,
    ) -> Result<Vec<(PathBuf, u64)>, FilesError> {
        let Some((dir, path)) = self.nested("inbox", &message.to_string(), true)? else {
            return Ok(Vec::new());
        };
        let rel = self.rel.join("inbox").join(message.to_string());
        let mut taken = std::collections::HashSet::new();
        let mut saved = Vec::new();
        for (name, bytes) in files {
            let name = unique(&sanitize_name(&name), &mut taken);
            let shown = path.join(&name);
            let mut file = dir
                .open_with(&name, &create_new())
                .map_err(|e| FilesError::io(&shown, e))?;
            file.write_all(&bytes)
                .map_err(|e| FilesError::io(&shown, e))?;
            saved.push((rel.join(&name), bytes.len() as u64));
        }
        Ok(saved)
    }

    /// Takes what a run left in `conversation`'s outbox: its regular files are read through
    /// their handles and moved to `<root>/sent/<message>/`; those within the limits are
    /// attached from the bytes read, the others listed. Anything else (a link, a directory) is
    /// left where it is, untouched, and named.
    pub fn collect(
        &self,
        conversation: ConversationId,
        message: MessageId,
        config: &FilesConfig,
    ) -> Result<Collected, FilesError> {
        let mut out = Collected::default();
        let Some((outbox, outbox_path)) =
            self.nested("outbox", &conversation.to_string(), false)?
        else {
            return Ok(out);
        };
        let mut found: Vec<(String, OsString)> = Vec::new();
        let entries = outbox
            .entries()
            .map_err(|e| FilesError::io(&outbox_path, e))?;
        for entry in entries.flatten() {
            let raw = entry.file_name();
            let name = sanitize_name(&String::from_utf8_lossy(raw.as_bytes()));
            // The entry's own type: a link is not followed to see what it points at.
            match entry.file_type() {
                Ok(t) if t.is_file() => found.push((name, raw)),
                _ => out.skipped.push(name),
            }
        }
        out.skipped.sort();
        if found.is_empty() {
            return Ok(out);
        }
        found.sort();
        let Some((sent, sent_path)) = self.nested("sent", &message.to_string(), true)? else {
            return Ok(out);
        };
        let mut taken = std::collections::HashSet::new();
        for (name, raw) in found {
            let read = outbox.open_with(&raw, &read_only()).and_then(|mut f| {
                let meta = f.metadata()?;
                if !meta.is_file() {
                    return Ok(None);
                }
                let fits = meta.len() <= config.max_attachment_bytes
                    && out.attach.len() < config.max_attachments;
                let bytes = if fits {
                    read_bounded(&mut f, config.max_attachment_bytes)?
                } else {
                    None
                };
                Ok(Some((meta.len(), bytes)))
            });
            // Swapped for something else since it was listed: left alone.
            let Ok(Some((size, bytes))) = read else {
                out.skipped.push(name);
                continue;
            };
            let kept = unique(&name, &mut taken);
            if let Err(e) = outbox.rename(&raw, &sent, &kept) {
                warn!(error = %e, file = %kept, "could not move a file out of the outbox; not attached");
                out.skipped.push(name);
                continue;
            }
            match bytes {
                Some(bytes) => out.attach.push(ReplyFile {
                    name: kept,
                    bytes: bytes.into(),
                }),
                None => out.listed.push(Listed {
                    path: sent_path.join(&kept),
                    name: kept,
                    size,
                }),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    pub(in crate::files) fn config(
        max_attachments: usize,
        max_attachment_bytes: u64,
    ) -> FilesConfig {
        FilesConfig {
            max_attachments,
            max_attachment_bytes,
            ..FilesConfig::default()
        }
    }

    #[test]
    fn the_outbox_is_collected_with_limits_and_links_are_left_alone() {
        let project = tempfile::tempdir().expect("tmp");
        let outside = tempfile::tempdir().expect("tmp");
        std::fs::write(outside.path().join("secret"), "secret").expect("write");
        let config = config(2, 10);
        let root = FilesRoot::open(project.path(), &config).expect("root");
        let outbox = root.outbox(ConversationId(42)).expect("outbox");
        std::fs::write(outbox.join("a.txt"), "small").expect("write");
        std::fs::write(outbox.join("b.txt"), "small too").expect("write");
        std::fs::write(outbox.join("c.txt"), "third").expect("write");
        std::fs::write(outbox.join("big.bin"), vec![0_u8; 100]).expect("write");
        symlink(outside.path().join("secret"), outbox.join("secret")).expect("symlink");
        symlink(outside.path(), outbox.join("elsewhere")).expect("symlink");
        let c = root
            .collect(ConversationId(42), MessageId(7), &config)
            .expect("collect");
        let names: Vec<&str> = c.attach.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["a.txt", "b.txt"]);
        assert_eq!(&*c.attach[0].bytes, b"small");
        let listed: Vec<&str> = c.listed.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(listed, ["big.bin", "c.txt"]);
        assert!(c.listed[0]
            .path
            .starts_with(project.path().join(".claude-coordinator/sent/7")));
        assert_eq!(c.skipped, ["elsewhere", "secret"]);
        // The links are where they were; what they point at untouched.
        let left: Vec<String> = std::fs::read_dir(&outbox)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert_eq!(
            std::fs::read_to_string(outside.path().join("secret")).expect("read"),
            "secret"
        );
        let ignore = std::fs::read_to_string(project.path().join(".claude-coordinator/.gitignore"))
            .expect("gitignore");
        assert!(ignore.lines().any(|l| l == "*"));
        // Nothing new: nothing to attach.
        let again = root
            .collect(ConversationId(42), MessageId(8), &config)
            .expect("collect");
        assert!(again.attach.is_empty() && again.listed.is_empty());
    }

    /// A tree with a file outside the project that a link points at, and one inside.
    pub(in crate::files) fn hostile() -> (tempfile::TempDir, tempfile::TempDir) {
        let project = tempfile::tempdir().expect("tmp");
        let outside = tempfile::tempdir().expect("tmp");
        std::fs::write(outside.path().join("keep.txt"), "precious").expect("write");
        std::fs::write(project.path().join("src.rs"), "fn main() {}").expect("write");
        (project, outside)
    }

    pub(in crate::files) fn untouched(project: &Path, outside: &Path) {
        assert_eq!(
            std::fs::read_to_string(outside.join("keep.txt")).expect("outside kept"),
            "precious"
        );
        assert_eq!(
            std::fs::read_to_string(project.join("src.rs")).expect("project kept"),
            "fn main() {}"
        );
    }

    #[test]
    fn a_link_at_any_level_is_refused_and_nothing_outside_is_touched() {
        let config = config(10, 1000);
        // The files root itself.
        let (project, outside) = hostile();
        symlink(outside.path(), project.path().join(".claude-coordinator")).expect("symlink");
        assert!(matches!(
            FilesRoot::open(project.path(), &config),
            Err(FilesError::Link(_))
        ));
        untouched(project.path(), outside.path());
        assert!(
            !outside.path().join(".gitignore").exists(),
            "nothing written through the link"
        );
        // `outbox`, pointing at the project itself.
        let (project, outside) = hostile();
        let root = FilesRoot::open(project.path(), &config).expect("root");
        symlink(
            project.path(),
            project.path().join(".claude-coordinator/outbox"),
        )
        .expect("symlink");
        assert!(matches!(
            root.outbox(ConversationId(9)),
            Err(FilesError::Link(_))
        ));
        assert!(matches!(
            root.collect(ConversationId(9), MessageId(1), &config),
            Err(FilesError::Link(_))
        ));
        untouched(project.path(), outside.path());
        // `outbox/<id>`, pointing at the project (`../..`).
        let (project, outside) = hostile();
        let root = FilesRoot::open(project.path(), &config).expect("root");
        std::fs::create_dir(project.path().join(".claude-coordinator/outbox")).expect("mkdir");
        symlink("../..", project.path().join(".claude-coordinator/outbox/9")).expect("symlink");
        assert!(matches!(
            root.collect(ConversationId(9), MessageId(1), &config),
            Err(FilesError::Link(_))
        ));
        untouched(project.path(), outside.path());
        assert!(
            !project.path().join(".claude-coordinator/sent").exists(),
            "nothing moved"
        );
        // An entry pointing outside: not read, not moved, not attached.
        let (project, outside) = hostile();
        let root = FilesRoot::open(project.path(), &config).expect("root");
        let outbox = root.outbox(ConversationId(9)).expect("outbox");
        symlink(outside.path().join("keep.txt"), outbox.join("keep.txt")).expect("symlink");
        let c = root
            .collect(ConversationId(9), MessageId(1), &config)
            .expect("collect");
        assert!(c.attach.is_empty() && c.listed.is_empty());
        assert_eq!(c.skipped, ["keep.txt"]);
        untouched(project.path(), outside.path());
        // `sent` and `inbox` as links: refused too.
        let (project, outside) = hostile();
        let root = FilesRoot::open(project.path(), &config).expect("root");
        std::fs::write(
            root.outbox(ConversationId(9))
                .expect("outbox")
                .join("a.txt"),
            "a",
        )
        .expect("write");
        symlink(
            outside.path(),
            project.path().join(".claude-coordinator/sent"),
        )
        .expect("symlink");
        symlink(
            outside.path(),
            project.path().join(".claude-coordinator/inbox"),
        )
        .expect("symlink");
        assert!(matches!(
            root.collect(ConversationId(9), MessageId(1), &config),
            Err(FilesError::Link(_))
        ));
        assert!(matches!(
            root.save_inbox(MessageId(1), vec![("x".into(), b"x".to_vec())]),
            Err(FilesError::Link(_))
        ));
        assert!(matches!(
            root.prune(std::time::SystemTime::now()),
            Err(FilesError::Link(_))
        ));
        untouched(project.path(), outside.path());
        assert_eq!(std::fs::read_dir(outside.path()).expect("dir").count(), 1);
    }

    #[test]
    fn the_inbox_gets_new_files_with_safe_names_and_never_writes_through_a_link() {
        let config = config(10, 1000);
        let (project, outside) = hostile();
        let root = FilesRoot::open(project.path(), &config).expect("root");
        let saved = root
            .save_inbox(
                MessageId(5),
                vec![
                    ("../../etc/passwd".into(), b"x".to_vec()),
                    ("a".into(), b"yy".to_vec()),
                    ("a".into(), b"z".to_vec()),
                ],
            )
            .expect("saved");
        let names: Vec<String> = saved.iter().map(|(p, _)| p.display().to_string()).collect();
        assert_eq!(
            names,
            [
                ".claude-coordinator/inbox/5/passwd",
                ".claude-coordinator/inbox/5/a",
                ".claude-coordinator/inbox/5/1-a"
            ]
        );
        // A link planted where the next file goes is not written through.
        symlink(
            outside.path().join("keep.txt"),
            project.path().join(".claude-coordinator/inbox/6"),
        )
        .expect("symlink");
        assert!(root
            .save_inbox(MessageId(6), vec![("b".into(), b"b".to_vec())])
            .is_err());
        untouched(project.path(), outside.path());
    }
}
