//! `/metrics`: the figures the metrics log reports, in Prometheus' exposition format (the
//! `prometheus-client` crate, `OpenMetrics` text). Rendered from the [`MetricsActor`]'s state at
//! each scrape, so the log and the scrape never disagree. Labels are bounded: a conversation is
//! counted under its configured channel (a thread under its parent), and outcomes, events and
//! limits are closed sets.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use actix::prelude::*;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{rss_kib, MetricsActor};
use crate::store::{PeekStoreStats, StoreStats};

/// The exposition text, for `GET /metrics`.
#[derive(Debug, Message)]
#[rtype(result = "String")]
pub struct RenderMetrics;

/// The content type of [`RenderMetrics`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

fn counter(registry: &mut Registry, name: &str, help: &str, value: u64) {
    let c: Counter = Counter::default();
    c.inc_by(value);
    registry.register(name, help, c);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, value: f64) {
    let g: Gauge<f64, AtomicU64> = Gauge::default();
    g.set(value);
    registry.register(name, help, g);
}

fn counters(
    registry: &mut Registry,
    name: &str,
    help: &str,
    label: &'static str,
    values: &[(&str, u64)],
) {
    let family = Family::<Labels, Counter>::default();
    for (v, n) in values {
        family
            .get_or_create(&vec![(label, (*v).to_string())])
            .inc_by(*n);
    }
    registry.register(name, help, family);
}

impl MetricsActor {
    /// The registry of everything known now, with the store's figures.
    fn registry(&self, store: &StoreStats) -> Registry {
        let mut r = Registry::with_prefix("coordinator");
        self.register_runs(&mut r);
        self.register_sessions(&mut r);
        register_store(&mut r, store);
        self.register_gateway(&mut r);
        let uptime = self.started.elapsed().as_secs_f64();
        gauge(&mut r, "uptime_seconds", "Seconds since start", uptime);
        let rss = (rss_kib() * 1024) as f64;
        gauge(&mut r, "resident_memory_bytes", "Resident set size", rss);
        r
    }

    /// Runs, cost, channels and queues.
    fn register_runs(&self, r: &mut Registry) {
        let started = self.runs_started;
        counter(
            r,
            "runs_started",
            "Runs that got their slot and started",
            started,
        );
        let outcomes = [
            ("succeeded", self.succeeded),
            ("failed", self.failed),
            ("timed_out", self.timed_out),
            ("cancelled", self.cancelled),
        ];
        counters(r, "runs", "Runs ended, by outcome", "outcome", &outcomes);
        let cost: Counter<f64, AtomicU64> = Counter::default();
        cost.inc_by(self.cost_usd.max(0.0));
        r.register(
            "cost_usd",
            "What the runs cost, as the CLI reported it",
            cost,
        );
        // Per configured channel (a thread counts with its parent): bounded by the settings.
        let mut per_channel: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
        for c in self.channels.values() {
            let channel = c.name.split('/').next().unwrap_or_default();
            let e = per_channel.entry(channel).or_default();
            e.0 += c.runs;
            e.1 += c.queue;
        }
        let runs = Family::<Labels, Counter>::default();
        let queue = Family::<Labels, Gauge>::default();
        for (channel, (n, depth)) in &per_channel {
            let labels = vec![("channel", (*channel).to_string())];
            runs.get_or_create(&labels).inc_by(*n);
            let depth = i64::try_from(*depth).unwrap_or(i64::MAX);
            queue.get_or_create(&labels).set(depth);
        }
        r.register("channel_runs", "Runs started, by configured channel", runs);
        r.register(
            "queue_depth",
            "Messages waiting, by configured channel",
            queue,
        );
        let max = self.queue_max as f64;
        gauge(r, "queue_depth_max", "The longest queue seen", max);
    }

    /// Live sessions, approvals, usage pauses, limits, actors.
    fn register_sessions(&self, r: &mut Registry) {
        let [spawned, resumed, idle, evicted, crashed, replaced] = self.sessions;
        let warm = spawned.saturating_sub(idle + evicted + crashed + replaced) as f64;
        gauge(
            r,
            "warm_processes",
            "Live CLI processes (warm sessions)",
            warm,
        );
        let events = [
            ("spawned", spawned),
            ("resumed", resumed),
            ("ended_idle", idle),
            ("evicted", evicted),
            ("crashed", crashed),
            ("replaced", replaced),
        ];
        counters(
            r,
            "sessions",
            "Live sessions started and ended, by event",
            "event",
            &events,
        );
        let [asked, allowed, denied, timed_out, withdrawn] = self.approvals;
        let outcomes = [
            ("asked", asked),
            ("allowed", allowed),
            ("denied", denied),
            ("timed_out", timed_out),
            ("withdrawn", withdrawn),
        ];
        counters(
            r,
            "approvals",
            "Permission requests, by outcome",
            "outcome",
            &outcomes,
        );
        counter(
            r,
            "usage_pauses",
            "Pauses for the account's usage limit",
            self.usage_pauses,
        );
        let waiting = self
            .paused_until
            .is_some_and(|t| t > std::time::SystemTime::now());
        let paused = f64::from(u8::from(waiting));
        gauge(
            r,
            "usage_paused",
            "1 while runs wait for the account's usage limit",
            paused,
        );
        let [user_spend, user_rate, channel_spend, channel_rate] = self.limit_refusals;
        let limits = [
            ("user_spend", user_spend),
            ("user_rate", user_rate),
            ("channel_spend", channel_spend),
            ("channel_rate", channel_rate),
        ];
        let help = "Messages refused by a spend or message limit";
        counters(r, "limit_refusals", help, "limit", &limits);
        let (queued, skipped) = self.schedule_runs;
        let help = "Schedule times: runs queued, times skipped";
        let outcomes = [("queued", queued), ("skipped", skipped)];
        counters(r, "schedule_runs", help, "outcome", &outcomes);
        let [http_accepted, http_replayed, http_refused] = self.http_prompts;
        let help = "Prompts over HTTP, by outcome";
        let outcomes = [
            ("accepted", http_accepted),
            ("replayed", http_replayed),
            ("refused", http_refused),
        ];
        counters(r, "http_prompts", help, "outcome", &outcomes);
        let (live, spawned_actors, stopped_idle) = self.registry;
        gauge(
            r,
            "channel_actors",
            "Conversation actors alive",
            live as f64,
        );
        counter(
            r,
            "channel_actors_spawned",
            "Conversation actors started",
            spawned_actors,
        );
        let help = "Conversation actors stopped for idleness";
        counter(r, "channel_actors_stopped_idle", help, stopped_idle);
    }

    /// The gateway's session and Discord REST work.
    fn register_gateway(&self, r: &mut Registry) {
        let Some(g) = &self.gateway else {
            return;
        };
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let up = f64::from(u8::from(g.is_connected()));
        gauge(
            r,
            "gateway_connected",
            "1 while a Discord gateway session is identified",
            up,
        );
        counter(r, "gateway_events", "Gateway events received", n(&g.events));
        counter(
            r,
            "messages_routed",
            "Messages sent on to a conversation",
            n(&g.routed),
        );
        counter(
            r,
            "messages_refused",
            "Messages from people not allowed",
            n(&g.refused),
        );
        counter(
            r,
            "gateway_reconnects",
            "Gateway sessions after the first",
            n(&g.reconnects),
        );
        counter(
            r,
            "messages_caught_up",
            "Messages found by catch-up",
            n(&g.caught_up),
        );
        counter(
            r,
            "discord_requests",
            "Discord REST requests that succeeded",
            n(&g.rest.sends),
        );
        counter(
            r,
            "discord_retries",
            "Discord REST attempts repeated",
            n(&g.rest.retries),
        );
        counter(
            r,
            "discord_failures",
            "Discord REST requests given up on",
            n(&g.rest.failures),
        );
    }
}

/// The store's work.
fn register_store(r: &mut Registry, store: &StoreStats) {
    counter(r, "store_operations", "Store operations", store.operations);
    counter(
        r,
        "store_errors",
        "Store operations that failed",
        store.errors,
    );
    let p95 = store.latency_p95_us as f64 / 1e6;
    let help = "95th percentile of store operation latency since the previous metrics log report";
    gauge(r, "store_latency_p95_seconds", help, p95);
    let open = f64::from(store.connections);
    gauge(r, "store_pool_connections", "Store connections open", open);
}

impl Handler<RenderMetrics> for MetricsActor {
    type Result = ResponseActFuture<Self, String>;

    fn handle(&mut self, _: RenderMetrics, _: &mut Self::Context) -> Self::Result {
        let stats = self.store.send(PeekStoreStats);
        Box::pin(stats.into_actor(self).map(|stats, act, _| {
            let mut text = String::new();
            // Writing into a String cannot fail.
            let _ = encode(&mut text, &act.registry(&stats.unwrap_or_default()));
            text
        }))
    }
}
