//! The service's stop, one signal every part listens to (after tokio's mini-redis
//! `shutdown.rs`): once it has begun, channel actors start no run (what is queued, and what
//! arrives, stays in the inbox for the next start) and the registry starts none either. Each
//! part holds a [`Busy`] while it has work that must not be cut off — a run and its record, a
//! reply being sent — and the stop waits until none is held ([`Shutdown::settled`]), at most as
//! long as it chooses.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The stop: cheap to clone, shared by every part.
#[derive(Clone, Debug)]
pub struct Shutdown {
    begun: CancellationToken,
    /// Work under way, counted by [`Busy`] guards.
    busy: Arc<watch::Sender<usize>>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A stop not begun, with nothing under way.
    pub fn new() -> Self {
        Self {
            begun: CancellationToken::new(),
            busy: Arc::new(watch::Sender::new(0)),
        }
    }

    /// Begins the stop (again is nothing).
    pub fn begin(&self) {
        self.begun.cancel();
    }

    /// Whether it has begun.
    pub fn is_begun(&self) -> bool {
        self.begun.is_cancelled()
    }

    /// Waits until it has begun.
    pub async fn begun(&self) {
        self.begun.cancelled().await;
    }

    /// Marks work under way until the guard is dropped.
    pub fn busy(&self) -> Busy {
        self.busy.send_modify(|n| *n += 1);
        Busy {
            busy: Arc::clone(&self.busy),
        }
    }

    /// Work under way now.
    pub fn under_way(&self) -> usize {
        *self.busy.borrow()
    }

    /// Waits until no work is under way.
    pub async fn settled(&self) {
        let mut rx = self.busy.subscribe();
        // The sender lives in `self`: the wait ends only when the count is zero.
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// Work under way, which the stop waits for; dropping it says the work is done.
#[derive(Debug)]
pub struct Busy {
    busy: Arc<watch::Sender<usize>>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.busy.send_modify(|n| *n = n.saturating_sub(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_rt::test]
    async fn the_stop_waits_for_every_busy_guard() {
        let s = Shutdown::new();
        assert!(!s.is_begun());
        let (a, b) = (s.busy(), s.busy());
        assert_eq!(s.under_way(), 2);
        s.begin();
        assert!(s.is_begun());
        s.begun().await;
        drop(a);
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), s.settled()).await;
        assert!(waited.is_err(), "one is still busy");
        drop(b);
        s.settled().await;
        assert_eq!(s.under_way(), 0);
    }
}
