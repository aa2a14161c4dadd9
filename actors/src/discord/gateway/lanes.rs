//! Outbound work beside the gateway actor: one lane per Discord channel, so replies go out in
//! the order of the messages they answer and the chunks of consecutive replies never
//! interleave; other work (progress, prompt edits, interaction answers) runs beside them. All of
//! it is counted: the service's stop waits for it ([`Shutdown`] busy) and [`FlushOutbound`]
//! answers once none is left.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;

use actix::prelude::*;

use super::DiscordGateway;
use crate::ids::{ChannelId, CommandId};
use crate::shutdown::{Busy, Shutdown};

/// Answer once every reply and progress update under way has been sent (for the stop: after
/// the core has settled, a round trip through the gateway's mailbox, then its own work).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct FlushOutbound;

type Work = Pin<Box<dyn Future<Output = ()>>>;

/// What a lane's sends are for: a channel's messages, or one interaction's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum LaneKey {
    /// Messages posted in a channel.
    Channel(ChannelId),
    /// The answers to one interaction (its deferral, then its edit).
    Interaction(CommandId),
}

impl From<ChannelId> for LaneKey {
    fn from(id: ChannelId) -> Self {
        Self::Channel(id)
    }
}

/// One lane's sends, in order.
#[derive(Default)]
struct Lane {
    queue: VecDeque<Work>,
    running: bool,
}

/// The gateway's outbound work.
pub(super) struct Lanes {
    by_key: HashMap<LaneKey, Lane>,
    /// Work queued or under way.
    pending: usize,
    /// Held while `pending` is not zero.
    busy: Option<Busy>,
    shutdown: Shutdown,
    /// Waiting for `pending` to reach zero ([`FlushOutbound`]).
    flush_waiters: Vec<tokio::sync::oneshot::Sender<()>>,
}

impl Lanes {
    pub(super) fn new(shutdown: Shutdown) -> Self {
        Self {
            by_key: HashMap::new(),
            pending: 0,
            busy: None,
            shutdown,
            flush_waiters: Vec::new(),
        }
    }

    fn started(&mut self) {
        self.pending += 1;
        if self.busy.is_none() {
            self.busy = Some(self.shutdown.busy());
        }
    }

    fn done(&mut self) {
        self.pending -= 1;
        if self.pending == 0 {
            self.busy = None;
            for w in self.flush_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }
}

impl DiscordGateway {
    /// Runs outbound work beside the actor, counted for [`FlushOutbound`] and the stop.
    pub(super) fn send_later(
        &mut self,
        work: impl Future<Output = ()> + 'static,
        ctx: &mut Context<Self>,
    ) {
        self.lanes.started();
        ctx.spawn(work.into_actor(self).map(|(), act, _| act.lanes.done()));
    }

    /// Runs outbound work for `lane` (a channel, or an interaction) after the work queued for it
    /// before.
    pub(super) fn send_in_order(
        &mut self,
        lane: impl Into<LaneKey>,
        work: impl Future<Output = ()> + 'static,
        ctx: &mut Context<Self>,
    ) {
        let channel = lane.into();
        self.lanes.started();
        let lane = self.lanes.by_key.entry(channel).or_default();
        lane.queue.push_back(Box::pin(work));
        if !lane.running {
            lane.running = true;
            self.run_lane(channel, ctx);
        }
    }

    fn run_lane(&mut self, channel: LaneKey, ctx: &mut Context<Self>) {
        let Some(work) = self
            .lanes
            .by_key
            .get_mut(&channel)
            .and_then(|l| l.queue.pop_front())
        else {
            self.lanes.by_key.remove(&channel);
            return;
        };
        ctx.spawn(work.into_actor(self).map(move |(), act, ctx| {
            act.lanes.done();
            act.run_lane(channel, ctx);
        }));
    }
}

impl Handler<FlushOutbound> for DiscordGateway {
    type Result = ResponseFuture<()>;

    fn handle(&mut self, _: FlushOutbound, _: &mut Self::Context) -> Self::Result {
        if self.lanes.pending == 0 {
            return Box::pin(async {});
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.lanes.flush_waiters.push(tx);
        Box::pin(async move {
            let _ = rx.await;
        })
    }
}
