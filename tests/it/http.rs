//! `[http]` through the real binary: `/healthz`, `/readyz` following the gateway session down
//! and back, and `/metrics` parsed by a Prometheus text parser, its counters moving with the
//! work.

use std::io::{Read, Write};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::discord::DiscordServer;
use crate::support::{spawn_run_with, stop_with, wait_until, TestEnv};

const ALICE: u64 = 7;
const ALPHA: u64 = 1001;

/// A free port on 127.0.0.1 (bound and let go).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET path` over plain HTTP/1.1: the status and the body (`None` while nothing listens).
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    s.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    // Small bodies come whole or in one chunk; undo the chunking if so.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = String::new();
        let mut rest = body;
        while let Some((size, after)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).ok()?;
            if n == 0 {
                break;
            }
            out.push_str(after.get(..n)?);
            rest = after.get(n + 2..)?;
        }
        out
    } else {
        body.to_string()
    };
    Some((status, body))
}

/// The value of sample `name` with `labels` in a `/metrics` text (parsed as Prometheus does).
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the exposition parses");
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

async fn ready(port: u16, want: bool) -> String {
    let mut last = String::new();
    wait_until(
        || {
            // A plain blocking request: the service is another process, and it answers at once.
            let got = get(port, "/readyz");
            if let Some((_, body)) = &got {
                last.clone_from(body);
            }
            got.is_some_and(|(status, _)| (status == 200) == want)
        },
        if want {
            "/readyz ready"
        } else {
            "/readyz not ready"
        },
    )
    .await;
    last
}

#[actix_rt::test]
async fn health_readiness_and_metrics_follow_the_service() {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    let port = free_port();
    let extra =
        format!("[access]\nallowed_users = [{ALICE}]\n[http]\nlisten = \"127.0.0.1:{port}\"\n");
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &[]);
    server.wait_ready(1).await;
    let body = ready(port, true).await;
    assert!(body.contains("\"gateway\":\"connected\""), "{body}");
    assert_eq!(
        get(port, "/healthz"),
        Some((200, "{\"status\":\"ok\"}".to_string()))
    );
    let (status, before) = get(port, "/metrics").expect("metrics");
    assert_eq!(status, 200);
    let routed = |t: &str| sample(t, "coordinator_messages_routed_total", &[]).unwrap_or(-1.0);
    let succeeded =
        |t: &str| sample(t, "coordinator_runs_total", &[("outcome", "succeeded")]).unwrap_or(-1.0);
    assert!((routed(&before)).abs() < f64::EPSILON, "{before}");
    assert!((succeeded(&before)).abs() < f64::EPSILON, "{before}");
    assert_eq!(
        sample(&before, "coordinator_gateway_connected", &[]),
        Some(1.0)
    );

    // Work moves the counters.
    server.say(ALPHA, ALICE, "count me");
    server
        .answer_where(ALPHA, "the answer", |t| t == "echo: count me")
        .await;
    let mut after = String::new();
    wait_until(
        || {
            after = get(port, "/metrics").map(|(_, b)| b).unwrap_or_default();
            succeeded(&after) >= 1.0
        },
        "the run counted",
    )
    .await;
    assert!((routed(&after) - 1.0).abs() < f64::EPSILON, "{after}");
    assert_eq!(
        sample(
            &after,
            "coordinator_channel_runs_total",
            &[("channel", "alpha")]
        ),
        Some(1.0)
    );
    assert!(sample(&after, "coordinator_cost_usd_total", &[]).is_some_and(|c| c > 0.0));
    // The dashboard in deploy/ asks only for what is exposed.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/grafana-dashboard.json"
    ))
    .expect("dashboard");
    let exposed: Vec<&str> = after
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    for name in dashboard
        .match_indices("coordinator_")
        .map(|(i, _)| &dashboard[i..])
        .map(|rest| {
            rest.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("")
        })
        .filter(|n| n.len() > "coordinator_".len() && *n != "coordinator_")
    {
        assert!(
            exposed.contains(&name),
            "the dashboard asks for {name}, not exposed"
        );
    }

    // The gateway goes down: the connection closes and new ones are refused for a while.
    server.gateway_down(true);
    let body = ready(port, false).await;
    assert!(body.contains("\"gateway\":\"down\""), "{body}");
    assert!(body.contains("not connected"), "{body}");
    let (_, text) = get(port, "/metrics").expect("metrics");
    assert_eq!(
        sample(&text, "coordinator_gateway_connected", &[]),
        Some(0.0)
    );
    assert_eq!(
        get(port, "/healthz").map(|(s, _)| s),
        Some(200),
        "alive all along"
    );
    server.gateway_down(false);
    let body = ready(port, true).await;
    assert!(body.contains("\"ready\":true"), "{body}");
    stop_with(child, Signal::SIGTERM).await;
    assert_eq!(get(port, "/healthz"), None, "gone with the process");
}
