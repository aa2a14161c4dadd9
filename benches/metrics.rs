//! A `/metrics` scrape with 1,000 conversations known: `cargo bench --bench metrics`.
//! The real HTTP server (`claude_coordinator::http`) on 127.0.0.1 with the real metrics and
//! store actors; 1,000 configured channels (the worst case for the `channel` label), each with
//! runs and a queue, and every other figure non-zero; then `--scrapes` GETs of `/metrics`, one
//! after another, each timed from connect to the last byte. Prints median, p95 and size.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use actix::Actor;
use actors::ids::ConversationId;
use actors::metrics::{
    ApprovalOutcome, Metric, MetricsActor, RecordMetric, RunOutcome, SessionMetric,
};
use actors::shutdown::Shutdown;
use actors::store::{open_pool, SessionStoreActor, StoreConfig};
use hdrhistogram::Histogram;

fn scrapes_arg() -> usize {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|a| a == "--scrapes")
        .and_then(|i| argv.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn scrape(port: u16) -> (Duration, usize) {
    let started = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    assert!(raw.starts_with(b"HTTP/1.1 200"), "a scrape failed");
    (started.elapsed(), raw.len())
}

fn main() {
    let scrapes = scrapes_arg();
    let dir = tempfile::tempdir().expect("tmp");
    actix::System::new().block_on(async move {
        let pool = open_pool(&StoreConfig {
            path: dir.path().join("bench.db"),
            pool_size: 2,
            busy_timeout: Duration::from_secs(5),
        })
        .expect("store");
        let store = SessionStoreActor::start(pool, 2);
        let metrics = MetricsActor::new(Duration::ZERO, store.clone()).start();
        for i in 0..1000u64 {
            let (id, name) = (ConversationId(10_000 + i), format!("channel-{i}"));
            metrics.do_send(RecordMetric(Metric::RunStarted { id, name: name.clone() }));
            metrics.do_send(RecordMetric(Metric::QueueDepth { id, name, depth: (i % 7) as usize }));
            metrics.do_send(RecordMetric(Metric::RunFinished {
                outcome: RunOutcome::Succeeded,
                latency: Duration::from_millis(1500),
                cost_usd: 0.05,
            }));
        }
        metrics.do_send(RecordMetric(Metric::Session(SessionMetric::Spawned { resumed: false })));
        metrics.do_send(RecordMetric(Metric::Approval {
            outcome: ApprovalOutcome::Asked,
            waited: Duration::ZERO,
        }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let state = claude_coordinator::http::HttpState {
            metrics,
            store,
            gateway: None,
            shutdown: Shutdown::new(),
            prompts: None,
            max_body_bytes: 65_536,
        };
        actix_rt::spawn(claude_coordinator::http::serve(listener, state));
        let (hist, size) = actix_rt::task::spawn_blocking(move || {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let mut size = 0;
            for _ in 0..scrapes {
                let (took, bytes) = scrape(port);
                let _ = hist.record(u64::try_from(took.as_micros()).unwrap_or(u64::MAX).max(1));
                size = bytes;
            }
            (hist, size)
        })
        .await
        .expect("client");
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "/metrics with 1,000 conversations: {scrapes} scrapes, median {:.2} ms, p95 {:.2} ms, max {:.2} ms, {:.0} KiB each (goal p95 <= 5 ms)",
            ms(0.5),
            ms(0.95),
            ms(1.0),
            size as f64 / 1024.0
        );
    });
}
