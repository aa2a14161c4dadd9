//! A run's files: the message's attachments saved where Claude can read them (images as
//! content blocks of the turn), and what Claude left in the conversation's outbox taken for the
//! reply. File work runs on blocking threads, never on the actors' thread.

use std::path::{Path, PathBuf};

use tracing::warn;

use super::job::Job;

impl Job {
    /// Saves the message's attachments into the project (or the state dir) and tells Claude
    /// where they are; images ride along as content blocks.
    pub(super) async fn fetch_attachments(&mut self, cwd: &Path, notes: &mut Vec<String>) {
        let attachments = std::mem::take(&mut self.attachments);
        let fetched = crate::files::fetch_attachments(
            &attachments,
            cwd,
            &self.files,
            self.origin.message_id,
            self.live_mode,
        )
        .await;
        notes.extend(fetched.notes.iter().cloned());
        if let Some(note) = fetched.prompt_note() {
            self.prompt = format!("{}\n\n{note}", self.prompt);
        }
        self.images = fetched.images;
    }

    /// The conversation's outbox directory, created (off the actors' thread); `None` — with a
    /// note for the user — if it cannot be (a link planted in the project, say).
    pub(super) async fn outbox_dir(&self, cwd: &Path, notes: &mut Vec<String>) -> Option<PathBuf> {
        let (project, files, id) = (cwd.to_path_buf(), self.files.clone(), self.conversation.id);
        let open = move || crate::files::FilesRoot::open(&project, &files)?.outbox(id);
        match tokio::task::spawn_blocking(open).await {
            Ok(Ok(dir)) => Some(dir),
            Ok(Err(e)) => {
                warn!(error = %e, "no outbox for this run");
                notes.push(format!(
                    "Files Claude writes cannot be attached this time: {e}."
                ));
                None
            }
            Err(_) => None,
        }
    }

    /// What the run left in its outbox, taken for its reply (off the actors' thread): the files
    /// to attach, and notes for the user (what was not attached, or why nothing could be).
    pub(super) async fn collect_outbox(
        &self,
        cwd: &Path,
    ) -> (Vec<crate::files::ReplyFile>, Vec<String>) {
        let (project, files, id, message) = (
            cwd.to_path_buf(),
            self.files.clone(),
            self.conversation.id,
            self.origin.message_id,
        );
        let collect =
            move || crate::files::FilesRoot::open(&project, &files)?.collect(id, message, &files);
        match tokio::task::spawn_blocking(collect).await {
            Ok(Ok(c)) => {
                let note = crate::files::listed_note(&c);
                (c.attach, note.into_iter().collect())
            }
            Ok(Err(e)) => {
                warn!(error = %e, "could not take the files of the outbox");
                (
                    Vec::new(),
                    vec![format!("Files Claude wrote were not attached: {e}.")],
                )
            }
            Err(_) => (Vec::new(), Vec::new()),
        }
    }
}
