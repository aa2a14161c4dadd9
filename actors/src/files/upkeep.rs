//! The coordinator's files over time: retention (`inbox/` and `sent/` message directories
//! older than `files.retention_days` go) and, before a thread's worktree is removed, copying
//! what it kept there into the service's own state. Reached through the same directory handles
//! as everything in `disk`: a link is never followed, and only what the service made is removed.

use std::io::Read;
use std::path::Path;
use std::time::SystemTime;

use cap_fs_ext::DirExt as _;

use super::disk::{read_only, subdir, FilesError, FilesRoot};

/// What retention removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Message directories removed from `inbox/` and `sent/`.
    pub directories: usize,
    /// Files removed in them.
    pub files: usize,
}

impl FilesRoot {
    /// Removes the message directories of `inbox/` and `sent/` last changed before `before`:
    /// the files and links in them (a link itself, never what it points at) and then the
    /// directory; one holding a directory is left as it is.
    pub fn prune(&self, before: SystemTime) -> Result<Pruned, FilesError> {
        let mut pruned = Pruned::default();
        for sub in ["inbox", "sent"] {
            let shown = self.path.join(sub);
            let Some(dir) = subdir(&self.dir, sub, &shown, false)? else {
                continue;
            };
            let entries = dir.entries().map_err(|e| FilesError::io(&shown, e))?;
            for entry in entries.flatten() {
                let raw = entry.file_name();
                // Only directories the service made: named by a message id.
                let ours = raw.to_str().is_some_and(|n| n.parse::<u64>().is_ok());
                let old = entry
                    .metadata()
                    .ok()
                    .filter(cap_std::fs::Metadata::is_dir)
                    .and_then(|m| m.modified().ok())
                    .is_some_and(|t| t.into_std() < before);
                if !(ours && old) {
                    continue;
                }
                let Ok(message) = dir.open_dir_nofollow(&raw) else {
                    continue;
                };
                for inner in message.entries().into_iter().flatten().flatten() {
                    let is_dir = inner.file_type().is_ok_and(|t| t.is_dir());
                    if !is_dir && message.remove_file_or_symlink(inner.file_name()).is_ok() {
                        pruned.files += 1;
                    }
                }
                if dir.remove_dir(&raw).is_ok() {
                    pruned.directories += 1;
                }
            }
        }
        Ok(pruned)
    }

    /// Copies the regular files of `inbox/` and `sent/` into `dest` (the service's own state,
    /// created), as `dest/inbox/<message>/<name>`…; answers how many. For a worktree about to
    /// be removed: what the coordinator kept there outlives it.
    pub fn copy_out(&self, dest: &Path) -> Result<usize, FilesError> {
        let mut copied = 0;
        for sub in ["inbox", "sent"] {
            let shown = self.path.join(sub);
            let Some(dir) = subdir(&self.dir, sub, &shown, false)? else {
                continue;
            };
            for entry in dir.entries().into_iter().flatten().flatten() {
                let raw = entry.file_name();
                let Ok(message) = dir.open_dir_nofollow(&raw) else {
                    continue;
                };
                let target = dest.join(sub).join(&raw);
                for inner in message.entries().into_iter().flatten().flatten() {
                    if !inner.file_type().is_ok_and(|t| t.is_file()) {
                        continue;
                    }
                    let Ok(mut file) = message.open_with(inner.file_name(), &read_only()) else {
                        continue;
                    };
                    let mut bytes = Vec::new();
                    if file.read_to_end(&mut bytes).is_err() {
                        continue;
                    }
                    std::fs::create_dir_all(&target).map_err(|e| FilesError::io(&target, e))?;
                    let to = target.join(inner.file_name());
                    std::fs::write(&to, &bytes).map_err(|e| FilesError::io(&to, e))?;
                    copied += 1;
                }
            }
        }
        Ok(copied)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::files::disk::tests::{config, hostile, untouched};
    use crate::ids::{ConversationId, MessageId};

    #[test]
    fn retention_removes_only_old_message_directories_and_never_follows_a_link() {
        let config = config(10, 1000);
        let (project, outside) = hostile();
        let root = FilesRoot::open(project.path(), &config).expect("root");
        root.save_inbox(MessageId(1), vec![("a".into(), b"a".to_vec())])
            .expect("saved");
        std::fs::write(
            root.outbox(ConversationId(3))
                .expect("outbox")
                .join("out.txt"),
            "o",
        )
        .expect("write");
        root.collect(ConversationId(3), MessageId(2), &config)
            .expect("collect");
        // Something planted in a directory of ours: a link (removed, not followed) and a
        // directory (left, with its parent).
        let sent = project.path().join(".claude-coordinator/sent/2");
        symlink(outside.path().join("keep.txt"), sent.join("link")).expect("symlink");
        std::fs::create_dir(project.path().join(".claude-coordinator/inbox/1/planted"))
            .expect("mkdir");
        // Not named by a message id: not ours.
        std::fs::create_dir(project.path().join(".claude-coordinator/sent/notes")).expect("mkdir");
        assert_eq!(
            root.prune(SystemTime::UNIX_EPOCH).expect("prune"),
            Pruned::default(),
            "nothing is that old"
        );
        let pruned = root
            .prune(SystemTime::now() + std::time::Duration::from_secs(60))
            .expect("prune");
        assert_eq!(
            pruned,
            Pruned {
                directories: 1,
                files: 3
            }
        );
        assert!(!sent.exists());
        assert!(project
            .path()
            .join(".claude-coordinator/inbox/1/planted")
            .exists());
        assert!(project
            .path()
            .join(".claude-coordinator/sent/notes")
            .exists());
        untouched(project.path(), outside.path());
    }
}
