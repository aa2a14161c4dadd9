//! Actor metrics for the logs: every `metrics.interval_secs` (and once at shutdown) one
//! structured tracing event with target `metrics` per actor kind — gateway, registry, channels,
//! store, process.
//!
//! Channel and registry actors report what happens with `do_send` of a [`RecordMetric`] (no
//! locks on their hot paths); this actor alone owns their aggregates and latency histograms.
//! The store counts its own operations (a message per operation would wake the actors'
//! thread for every write) and is asked for them at each report; the gateway's counters are
//! atomics it shares. Counters are totals since start; latency percentiles cover the last
//! window (`window_secs`) and are reset after each report. The same state is rendered for
//! Prometheus at each `/metrics` scrape (`prometheus`).

mod prometheus;

pub use prometheus::{RenderMetrics, CONTENT_TYPE};

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use hdrhistogram::Histogram;
use tracing::info;

use crate::store::{GetStoreStats, SessionStoreActor};

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/// Record one observation.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RecordMetric(pub Metric);

/// Emit the metrics events now (the interval timer does this; shutdown does it once more).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct EmitMetrics;

/// Include the gateway's counters in the reports.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AttachGateway(pub Arc<GatewayStats>);

/// What happened.
#[derive(Debug, Clone)]
pub enum Metric {
    /// A run got its slot and is starting.
    RunStarted {
        /// The conversation.
        id: crate::ids::ConversationId,
        /// Conversation name.
        name: String,
    },
    /// A run ended.
    RunFinished {
        /// How it ended.
        outcome: RunOutcome,
        /// From slot granted to reply ready.
        latency: Duration,
        /// What it cost.
        cost_usd: f64,
    },
    /// A channel's queue changed.
    QueueDepth {
        /// The conversation.
        id: crate::ids::ConversationId,
        /// Conversation name.
        name: String,
        /// Messages waiting now.
        depth: usize,
    },
    /// A live session started or ended.
    Session(SessionMetric),
    /// A permission request was asked, or resolved after `waited`.
    Approval {
        /// What happened.
        outcome: ApprovalOutcome,
        /// From asked to resolved (zero when asked).
        waited: Duration,
    },
    /// Every conversation pauses for the account's usage limit.
    UsagePause {
        /// Until then.
        until: std::time::SystemTime,
        /// Whether the CLI announced that time (else a backoff).
        announced: bool,
    },
    /// A spend or message limit refused a message.
    LimitRefused(crate::limits::LimitKind),
    /// A schedule's time was handled: its run queued (or not), and times skipped.
    ScheduleFired {
        /// A run was queued.
        queued: bool,
        /// Times skipped (missed while down, or due while the previous run waited).
        skipped: u64,
    },
    /// A prompt over HTTP was answered.
    HttpPrompt(HttpOutcome),
    /// The registry's state.
    Registry {
        /// Channel actors alive.
        live: usize,
        /// Started since start.
        spawned: u64,
        /// Stopped for idleness since start.
        stopped_idle: u64,
    },
}

/// How a prompt over HTTP was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpOutcome {
    /// Accepted and queued (202).
    Accepted,
    /// Its key was seen before: nothing run (200, 422).
    Replayed,
    /// Refused: a token, a rate limit, a name, a body (401, 429, 404, 413, 400).
    Refused,
}

/// What happened to a live session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMetric {
    /// A warm process was started (`resumed`: with `--resume`).
    Spawned {
        /// Whether it resumed a stored session.
        resumed: bool,
    },
    /// Ended after `claude.keep_warm_secs` idle.
    EndedIdle,
    /// Ended to make room (`claude.max_warm_sessions`).
    EndedEvicted,
    /// Died on its own (between turns or mid-turn).
    EndedCrashed,
    /// Ended for another reason (reset, another session, shutdown).
    EndedReplaced,
}

/// What happened to a permission request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalOutcome {
    /// Shown to people.
    Asked,
    /// Allowed (once or always) or answered.
    Allowed,
    /// Denied by a person.
    Denied,
    /// No answer in time.
    TimedOut,
    /// Withdrawn by the CLI.
    Withdrawn,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The CLI answered without error.
    Succeeded,
    /// The CLI reported an error, failed, or could not run.
    Failed,
    /// Stopped by `claude.timeout_secs`.
    TimedOut,
    /// Stopped by a user or by shutdown.
    Cancelled,
}

// ---------------------------------------------------------------------------------------------
// Counters a front end keeps (atomics, read at each report)
// ---------------------------------------------------------------------------------------------

/// What the Discord gateway has done.
#[derive(Debug, Default)]
pub struct GatewayStats {
    /// Gateway events received (messages, ready, resumes, threads).
    pub events: AtomicU64,
    /// Messages sent on to a channel actor.
    pub routed: AtomicU64,
    /// Messages from users not on the allowlist.
    pub refused: AtomicU64,
    /// Gateway sessions started or resumed after the first.
    pub reconnects: AtomicU64,
    /// Messages found by catch-up (posted while the service was down).
    pub caught_up: AtomicU64,
    /// REST work.
    pub rest: Arc<RestStats>,
    /// A gateway session is connected and identified (READY or RESUMED, not lost since).
    pub connected: std::sync::atomic::AtomicBool,
}

impl GatewayStats {
    /// The gateway session is up (identified) or down.
    pub fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
    }

    /// Whether a gateway session is up.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// A gateway event arrived.
    pub fn event(&self) {
        self.events.fetch_add(1, Ordering::Relaxed);
    }

    /// A message went on to its conversation.
    pub fn routed(&self) {
        self.routed.fetch_add(1, Ordering::Relaxed);
    }

    /// A message was refused (its author may not talk there).
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A gateway session started again, or resumed.
    pub fn reconnected(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Catch-up found `n` messages posted while the service was down.
    pub fn caught_up(&self, n: usize) {
        self.caught_up.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// Discord REST work.
#[derive(Debug, Default)]
pub struct RestStats {
    /// Requests that succeeded.
    pub sends: AtomicU64,
    /// Attempts repeated after a failure.
    pub retries: AtomicU64,
    /// Requests given up on.
    pub failures: AtomicU64,
}

// ---------------------------------------------------------------------------------------------
// The actor
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct PerChannel {
    name: String,
    queue: usize,
    runs: u64,
}

/// Aggregates observations and writes the metrics events.
pub struct MetricsActor {
    interval: Duration,
    started: Instant,
    window_start: Instant,
    store: Addr<SessionStoreActor>,
    gateway: Option<Arc<GatewayStats>>,
    channels: HashMap<crate::ids::ConversationId, PerChannel>,
    queue_max: usize,
    runs_started: u64,
    succeeded: u64,
    failed: u64,
    timed_out: u64,
    cancelled: u64,
    cost_usd: f64,
    run_ms: Histogram<u64>,
    registry: (usize, u64, u64),
    /// Spawned, resumed, ended idle, evicted, crashed, replaced.
    sessions: [u64; 6],
    /// Asked, allowed, denied, timed out, withdrawn.
    approvals: [u64; 5],
    approval_wait_ms: Histogram<u64>,
    /// Usage-limit pauses so far, and the end of the latest.
    usage_pauses: u64,
    paused_until: Option<std::time::SystemTime>,
    /// Messages refused by a limit: per person (spend, rate), per channel (spend, rate).
    limit_refusals: [u64; 4],
    /// Schedule runs queued, and times skipped.
    schedule_runs: (u64, u64),
    /// Prompts over HTTP: accepted, replayed, refused.
    http_prompts: [u64; 3],
}

impl MetricsActor {
    /// A reporter that emits every `interval` (zero: only when asked, e.g. at shutdown).
    pub fn new(interval: Duration, store: Addr<SessionStoreActor>) -> Self {
        let hist = |max| Histogram::new_with_bounds(1, max, 2).expect("valid histogram bounds");
        Self {
            interval,
            started: Instant::now(),
            window_start: Instant::now(),
            store,
            gateway: None,
            channels: HashMap::new(),
            queue_max: 0,
            runs_started: 0,
            succeeded: 0,
            failed: 0,
            timed_out: 0,
            cancelled: 0,
            cost_usd: 0.0,
            run_ms: hist(24 * 3600 * 1000),
            registry: (0, 0, 0),
            sessions: [0; 6],
            approvals: [0; 5],
            approval_wait_ms: hist(24 * 3600 * 1000),
            usage_pauses: 0,
            paused_until: None,
            limit_refusals: [0; 4],
            schedule_runs: (0, 0),
            http_prompts: [0; 3],
        }
    }

    fn busiest(&self) -> String {
        let mut all: Vec<&PerChannel> = self
            .channels
            .values()
            .filter(|c| c.runs > 0 || c.queue > 0)
            .collect();
        all.sort_by(|a, b| {
            (b.queue, b.runs)
                .cmp(&(a.queue, a.runs))
                .then_with(|| a.name.cmp(&b.name))
        });
        let mut out = String::new();
        for c in all.into_iter().take(3) {
            let _ = write!(
                out,
                "{}{}:runs={},queue={}",
                if out.is_empty() { "" } else { " " },
                c.name,
                c.runs,
                c.queue
            );
        }
        out
    }

    /// Limits, schedules and prompts over HTTP.
    fn emit_operations(&self) {
        let [user_spend, user_rate, channel_spend, channel_rate] = self.limit_refusals;
        info!(
            target: "metrics",
            kind = "limits",
            refused_user_spend = user_spend,
            refused_user_rate = user_rate,
            refused_channel_spend = channel_spend,
            refused_channel_rate = channel_rate,
        );
        let [http_accepted, http_replayed, http_refused] = self.http_prompts;
        info!(
            target: "metrics",
            kind = "operations",
            schedule_runs = self.schedule_runs.0,
            schedule_skipped = self.schedule_runs.1,
            http_prompts_accepted = http_accepted,
            http_prompts_replayed = http_replayed,
            http_prompts_refused = http_refused,
        );
    }

    /// Writes the events; the future ends after the last one (the pool state is asked of a
    /// store thread).
    fn emit(&mut self) -> ResponseActFuture<Self, ()> {
        let window = self.window_start.elapsed().as_secs();
        if let Some(g) = &self.gateway {
            let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
            info!(
                target: "metrics",
                kind = "gateway",
                events_received = n(&g.events),
                messages_routed = n(&g.routed),
                messages_refused = n(&g.refused),
                rest_sends = n(&g.rest.sends),
                rest_retries = n(&g.rest.retries),
                rest_failures = n(&g.rest.failures),
                reconnects = n(&g.reconnects),
                caught_up = n(&g.caught_up),
            );
        }
        let (live, spawned, stopped_idle) = self.registry;
        info!(target: "metrics", kind = "registry", live_channels = live, spawned, stopped_idle);
        let paused = self
            .paused_until
            .filter(|t| *t > std::time::SystemTime::now());
        info!(
            target: "metrics",
            kind = "usage",
            paused = paused.is_some(),
            paused_until = paused.map(|t| humantime::format_rfc3339_seconds(t).to_string()).unwrap_or_default(),
            pauses = self.usage_pauses,
        );
        self.emit_operations();
        let q = |h: &Histogram<u64>, p: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(p)
            }
        };
        info!(
            target: "metrics",
            kind = "channels",
            queue_depth = self.channels.values().map(|c| c.queue).sum::<usize>(),
            queue_max = self.queue_max,
            runs_started = self.runs_started,
            runs_succeeded = self.succeeded,
            runs_failed = self.failed,
            runs_timed_out = self.timed_out,
            runs_cancelled = self.cancelled,
            latency_p50_ms = q(&self.run_ms, 0.5),
            latency_p95_ms = q(&self.run_ms, 0.95),
            latency_max_ms = self.run_ms.max(),
            window_secs = window,
            cost_usd = (self.cost_usd * 1e6).round() / 1e6,
            busiest = %self.busiest(),
        );
        let [spawned, resumed, idle, evicted, crashed, replaced] = self.sessions;
        let [asked, allowed, denied, timed_out, withdrawn] = self.approvals;
        info!(
            target: "metrics",
            kind = "sessions",
            warm_sessions = spawned.saturating_sub(idle + evicted + crashed + replaced),
            spawns = spawned,
            resumes = resumed,
            ended_idle = idle,
            ended_evicted = evicted,
            ended_crashed = crashed,
            ended_other = replaced,
            approvals_asked = asked,
            approvals_allowed = allowed,
            approvals_denied = denied,
            approvals_timed_out = timed_out,
            approvals_withdrawn = withdrawn,
            approval_wait_p50_ms = q(&self.approval_wait_ms, 0.5),
            approval_wait_p95_ms = q(&self.approval_wait_ms, 0.95),
        );
        self.approval_wait_ms.reset();
        let uptime = self.started.elapsed().as_secs();
        let rss = rss_kib();
        // The store's figures come from a store thread; everything else is already known.
        let stats = self.store.send(GetStoreStats);
        self.run_ms.reset();
        self.window_start = Instant::now();
        Box::pin(stats.into_actor(self).map(move |stats, _, _| {
            let stats = stats.unwrap_or_default();
            info!(
                target: "metrics",
                kind = "store",
                operations = stats.operations,
                errors = stats.errors,
                latency_p95_us = stats.latency_p95_us,
                pool_connections = stats.connections,
                pool_idle = stats.idle,
            );
            info!(target: "metrics", kind = "process", uptime_secs = uptime, rss_kib = rss);
        }))
    }
}

/// Resident set size in KiB from `/proc/self/status` (a procfs read, which does not block on
/// disk); 0 where unavailable.
pub fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

impl Actor for MetricsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.interval > Duration::ZERO {
            ctx.run_interval(self.interval, |act, ctx| {
                let report = act.emit();
                ctx.wait(report);
            });
        }
    }
}

impl Handler<RecordMetric> for MetricsActor {
    type Result = ();

    fn handle(&mut self, RecordMetric(m): RecordMetric, _: &mut Self::Context) {
        match m {
            Metric::RunStarted { id, name } => {
                self.runs_started += 1;
                let c = self.channels.entry(id).or_default();
                c.name = name;
                c.runs += 1;
            }
            Metric::RunFinished {
                outcome,
                latency,
                cost_usd,
            } => {
                match outcome {
                    RunOutcome::Succeeded => self.succeeded += 1,
                    RunOutcome::Failed => self.failed += 1,
                    RunOutcome::TimedOut => self.timed_out += 1,
                    RunOutcome::Cancelled => self.cancelled += 1,
                }
                self.cost_usd += cost_usd;
                let _ = self.run_ms.record((latency.as_millis() as u64).max(1));
            }
            Metric::QueueDepth { id, name, depth } => {
                self.queue_max = self.queue_max.max(depth);
                let c = self.channels.entry(id).or_default();
                c.name = name;
                c.queue = depth;
            }
            Metric::Session(m) => {
                let i = match m {
                    SessionMetric::Spawned { resumed } => {
                        self.sessions[1] += u64::from(resumed);
                        0
                    }
                    SessionMetric::EndedIdle => 2,
                    SessionMetric::EndedEvicted => 3,
                    SessionMetric::EndedCrashed => 4,
                    SessionMetric::EndedReplaced => 5,
                };
                self.sessions[i] += 1;
            }
            Metric::Approval { outcome, waited } => {
                let i = match outcome {
                    ApprovalOutcome::Asked => 0,
                    ApprovalOutcome::Allowed => 1,
                    ApprovalOutcome::Denied => 2,
                    ApprovalOutcome::TimedOut => 3,
                    ApprovalOutcome::Withdrawn => 4,
                };
                self.approvals[i] += 1;
                if outcome != ApprovalOutcome::Asked {
                    let _ = self
                        .approval_wait_ms
                        .record((waited.as_millis() as u64).max(1));
                }
            }
            Metric::Registry {
                live,
                spawned,
                stopped_idle,
            } => {
                self.registry = (live, spawned, stopped_idle);
            }
            Metric::UsagePause { until, .. } => {
                self.usage_pauses += 1;
                self.paused_until = Some(until);
            }
            Metric::LimitRefused(kind) => {
                use crate::limits::LimitKind as K;
                let i = match kind {
                    K::UserDaily | K::UserMonthly => 0,
                    K::UserRate => 1,
                    K::ChannelDaily | K::ChannelMonthly => 2,
                    K::ChannelRate => 3,
                };
                self.limit_refusals[i] += 1;
            }
            Metric::ScheduleFired { queued, skipped } => {
                self.schedule_runs.0 += u64::from(queued);
                self.schedule_runs.1 += skipped;
            }
            Metric::HttpPrompt(outcome) => {
                self.http_prompts[outcome as usize] += 1;
            }
        }
    }
}

impl Handler<EmitMetrics> for MetricsActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: EmitMetrics, _: &mut Self::Context) -> Self::Result {
        self.emit()
    }
}

impl Handler<AttachGateway> for MetricsActor {
    type Result = ();

    fn handle(&mut self, msg: AttachGateway, _: &mut Self::Context) {
        self.gateway = Some(msg.0);
    }
}
