//! Closing a thread's worktree (the thread was archived or deleted): never while a run is in
//! flight, a message waits, or the thread's CLI process is warm — the close waits for the
//! conversation to be idle, ends its warm process and gives it the kill grace to exit — and
//! then off the actors' thread. What the channel is told comes back as a notice.

use std::time::Duration;

use actix::prelude::*;
use tracing::{info, warn};

use super::{ChannelActor, ChannelDeps, EndReason};
use crate::conversation::ConversationRef;
use crate::frontend::{DeliverReply, Origin, ReplyKind};
use crate::ids::{MessageId, UserId};
use crate::worktree::Closed;

/// Close the worktree of this thread's conversation once it is idle.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CloseWorktree {
    /// The thread's conversation.
    pub conversation: ConversationRef,
}

/// Closes `conversation`'s worktree now (off the actors' thread) and tells its channel what
/// became of it when that is news: kept (something would be lost), or a failure.
pub async fn close_now(conversation: ConversationRef, deps: ChannelDeps) {
    let c = &conversation;
    if !c.profile.thread_worktrees || !c.is_thread() {
        return;
    }
    let (git, project, root, id, files, keep) = (
        deps.git.clone(),
        c.profile.project_dir.clone(),
        c.profile.worktree_root.clone(),
        c.id,
        deps.files.clone(),
        deps.state_dir.join("threads"),
    );
    let close = move || crate::worktree::close(&git, &project, root.as_deref(), id, &files, &keep);
    let text = match tokio::task::spawn_blocking(close).await {
        Ok(Ok(Closed::Removed(path, kept))) => {
            info!(channel_id = c.id.get(), path = %path.display(), kept, "thread closed; its worktree removed");
            return;
        }
        Ok(Ok(Closed::Kept(path))) => format!(
            "The thread `{}` was closed; its worktree `{}` has uncommitted changes or untracked or ignored files, so it was kept.",
            c.thread_name(),
            path.display()
        ),
        Ok(Err(e)) => format!(
            "The thread `{}` was closed; its worktree could not be removed: {e}",
            c.thread_name()
        ),
        Ok(Ok(Closed::None)) | Err(_) => return,
    };
    warn!(channel_id = c.id.get(), "{text}");
    // About the thread, in its parent channel (no message of its own to answer).
    let origin = Origin {
        channel_id: c.profile.id,
        message_id: MessageId(c.id.get()),
        author_id: UserId::default(),
    };
    deps.replies
        .do_send(DeliverReply::new(c, origin, ReplyKind::Notice, text, false));
}

impl ChannelActor {
    /// Closes the worktree if a close is pending and the conversation is idle; a warm process
    /// is ended first, and the close tried again once it has had time to exit.
    pub(super) fn try_close_worktree(&mut self, ctx: &mut Context<Self>) {
        if !self.close_worktree || !self.is_idle() {
            return;
        }
        if self.warm.is_warm() {
            self.end_warm(EndReason::Other);
            let exited = self.deps.runner.config().kill_grace() + Duration::from_secs(1);
            ctx.run_later(exited, Self::try_close_worktree);
            return;
        }
        self.close_worktree = false;
        let work = close_now(self.conversation.clone(), self.deps.clone());
        ctx.spawn(work.into_actor(self));
    }
}

impl Handler<CloseWorktree> for ChannelActor {
    type Result = ();

    fn handle(&mut self, _: CloseWorktree, ctx: &mut Self::Context) {
        self.close_worktree = true;
        self.try_close_worktree(ctx);
    }
}
