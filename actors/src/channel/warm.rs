//! The warm processes of all conversations, for `claude.max_warm_sessions`: which are busy,
//! and when the idle ones were last used, so the least recently used idle one is ended first.
//! Shared by the channel actors; every call is a few map operations under a short lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use actix::Recipient;

use super::EndWarmSession;

struct Entry {
    busy: bool,
    last_used: Instant,
    end: Recipient<EndWarmSession>,
}

/// The warm processes, by conversation.
#[derive(Clone)]
pub struct WarmPool {
    inner: Arc<Mutex<HashMap<u64, Entry>>>,
    max: usize,
}

impl WarmPool {
    /// A pool of at most `max` warm processes (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(HashMap::new())),
            max: max.max(1),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<u64, Entry>) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Conversation `id`'s process is running a turn (and will not be evicted).
    pub fn busy(&self, id: u64, end: Recipient<EndWarmSession>) {
        self.with(|m| {
            m.insert(
                id,
                Entry {
                    busy: true,
                    last_used: Instant::now(),
                    end,
                },
            );
        });
    }

    /// Conversation `id`'s process has finished a turn and idles (tracked again if an
    /// eviction came while it was busy); over the cap, the least recently used idle processes
    /// (never this one) are told to end.
    pub fn idle(&self, id: u64, end: Recipient<EndWarmSession>) {
        let evict = self.with(|m| {
            m.insert(
                id,
                Entry {
                    busy: false,
                    last_used: Instant::now(),
                    end,
                },
            );
            let mut idle: Vec<(Instant, u64)> = m
                .iter()
                .filter(|(k, e)| !e.busy && **k != id)
                .map(|(k, e)| (e.last_used, *k))
                .collect();
            idle.sort_unstable();
            let over = m.len().saturating_sub(self.max);
            idle.into_iter()
                .take(over)
                .filter_map(|(_, k)| m.remove(&k).map(|e| e.end))
                .collect::<Vec<_>>()
        });
        for end in evict {
            end.do_send(EndWarmSession {
                reason: super::EndReason::Evicted,
            });
        }
    }

    /// Conversation `id` has no warm process any more.
    pub fn remove(&self, id: u64) {
        self.with(|m| m.remove(&id));
    }
}
