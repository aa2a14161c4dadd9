//! The limit check's own cost per message: `cargo bench -p actors --bench limits`.
//! Every limit set (Europe/Berlin days), a ledger holding a month of spend for 1,000 people in
//! 100 channels and a full hour of messages; per message what the channel actor does — the
//! check when its turn comes, the start counted, the run's cost counted when it ends. Prints
//! the median and p99 of batches, per message.

use std::time::Instant;

use actors::ids::{ChannelId, UserId};
use actors::limits::{Ledger, Limits, LimitsConfig};

fn main() {
    let config = LimitsConfig {
        user_daily_usd: 1e6,
        user_monthly_usd: 1e6,
        channel_daily_usd: 1e6,
        channel_monthly_usd: 1e6,
        user_messages_per_hour: 100_000,
        channel_messages_per_hour: 100_000,
        timezone: "Europe/Berlin".parse().expect("tz"),
    };
    let now = actors::time::unix_ms();
    let w = config.windows(now);
    let mut ledger = Ledger::default();
    for i in 0..30_000u64 {
        let (user, channel) = (UserId(i % 1000 + 1), ChannelId(i % 100 + 1));
        ledger.add_spend(Some(user), channel, 0.05, &w);
        ledger.add_run(user, channel, now - 3_000_000 + i as i64 * 100);
    }
    let limits = Limits::new(config, ledger);
    let (batch, batches) = (1_000u64, 200);
    let mut per_message_ns: Vec<f64> = Vec::with_capacity(batches);
    let mut refused = 0;
    for b in 0..batches {
        let started = Instant::now();
        for i in 0..batch {
            let (user, channel) = (
                UserId((b as u64 * batch + i) % 1000 + 1),
                ChannelId(i % 100 + 1),
            );
            let at = now + i as i64;
            if limits.check(user, channel, at).is_some() {
                refused += 1;
            }
            limits.ran(user, channel, at);
            limits.spent(Some(user), channel, 0.05, at);
        }
        per_message_ns.push(started.elapsed().as_nanos() as f64 / batch as f64);
    }
    per_message_ns.sort_by(f64::total_cmp);
    let q = |p: f64| per_message_ns[((per_message_ns.len() - 1) as f64 * p) as usize];
    println!(
        "limit check + start + spend per message: median {:.2} µs, p99 {:.2} µs ({} messages, {refused} refused; goal <= 100 µs)",
        q(0.5) / 1000.0,
        q(0.99) / 1000.0,
        batch * batches as u64
    );
}
