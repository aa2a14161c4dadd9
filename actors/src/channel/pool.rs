//! The warm processes of all conversations, capped by `claude.max_warm_sessions` at every
//! moment: a live CLI process holds a [`ProcessSlot`] from before it is spawned until it has
//! been reaped (the slot goes into the thread that reaps it). A run that needs a new process
//! when every slot is taken asks the least recently used *idle* process of another
//! conversation to end, and waits for a slot; if every process is busy, it waits until one
//! turn ends. A process counts as busy only while a turn runs on it: one whose next message
//! still waits for a run slot is idle, and may be ended for another (its message then starts a
//! new process when its turn comes). Every call is a few map operations under a short lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use actix::Recipient;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::debug;

use crate::ids::ConversationId;

use super::warm::{EndReason, EndWarmSession};

/// One live process's place under the cap; given back when dropped (after the reap).
#[derive(Debug)]
pub struct ProcessSlot(#[allow(dead_code)] OwnedSemaphorePermit);

struct Entry {
    busy: bool,
    last_used: Instant,
    end: Recipient<EndWarmSession>,
}

/// The warm processes, by conversation, and the slots under the cap.
#[derive(Clone)]
pub struct WarmPool {
    inner: Arc<Mutex<HashMap<ConversationId, Entry>>>,
    slots: Arc<Semaphore>,
    /// A process went idle: a run waiting for a slot may ask it to end.
    idled: Arc<Notify>,
    max: usize,
}

impl WarmPool {
    /// A pool of at most `max` live processes (at least one).
    pub fn new(max: usize) -> Self {
        let max = max.max(1);
        Self {
            inner: Arc::new(Mutex::new(HashMap::new())),
            slots: Arc::new(Semaphore::new(max)),
            idled: Arc::new(Notify::new()),
            max,
        }
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Live processes now (slots taken).
    pub fn live(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<ConversationId, Entry>) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A slot for a new process of conversation `id`: at once if one is free; else the least
    /// recently used idle process of another conversation is asked to end, and this waits for
    /// its slot (or, all being busy, for one to go idle).
    pub async fn acquire(&self, id: ConversationId) -> ProcessSlot {
        loop {
            if let Ok(permit) = Arc::clone(&self.slots).try_acquire_owned() {
                return ProcessSlot(permit);
            }
            // Registered before looking, so a process going idle meanwhile is not missed.
            let idled = self.idled.notified();
            tokio::pin!(idled);
            idled.as_mut().enable();
            if let Some((victim, end)) = self.least_recently_used_idle(id) {
                debug!(
                    channel_id = victim.get(),
                    for_channel = id.get(),
                    "ending an idle warm process for another conversation"
                );
                end.do_send(EndWarmSession {
                    reason: EndReason::Evicted,
                });
            }
            tokio::select! {
                permit = Arc::clone(&self.slots).acquire_owned() => {
                    if let Ok(permit) = permit {
                        return ProcessSlot(permit);
                    }
                }
                () = idled => {}
            }
        }
    }

    /// The least recently used idle process of a conversation other than `id`, taken off the
    /// list (it is being ended).
    fn least_recently_used_idle(
        &self,
        id: ConversationId,
    ) -> Option<(ConversationId, Recipient<EndWarmSession>)> {
        self.with(|m| {
            let victim = m
                .iter()
                .filter(|(k, e)| !e.busy && **k != id)
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| *k)?;
            m.remove(&victim).map(|e| (victim, e.end))
        })
    }

    /// Conversation `id`'s process is running a turn (and will not be asked to end).
    pub fn busy(&self, id: ConversationId, end: Recipient<EndWarmSession>) {
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

    /// Conversation `id`'s process idles between turns: it may be asked to end for another.
    pub fn idle(&self, id: ConversationId, end: Recipient<EndWarmSession>) {
        self.with(|m| {
            m.insert(
                id,
                Entry {
                    busy: false,
                    last_used: Instant::now(),
                    end,
                },
            );
        });
        self.idled.notify_waiters();
    }

    /// Conversation `id` has no warm process any more (its slot is given back when the
    /// process is reaped).
    pub fn remove(&self, id: ConversationId) {
        self.with(|m| m.remove(&id));
    }
}
