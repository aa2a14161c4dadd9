//! `[http]` through the real binary: `/healthz`, `/readyz` following the gateway session down
//! and back, `/metrics` parsed by a Prometheus text parser, its counters moving with the work,
//! and prompts over HTTP (`POST /v1/conversations/{name}/messages`): answered once in the
//! channel, idempotent, refused with the right status, and answered once across `kill -9`.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::support::discord::DiscordServer;
use crate::support::{spawn_run_with, stop_with, wait_until, TestEnv};

const ALICE: u64 = 7;
const ALPHA: u64 = 1001;

/// A free port on 127.0.0.1 (bound and let go).
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `GET path` over plain HTTP/1.1: the status and the body (`None` while nothing listens).
pub(crate) fn get(port: u16, path: &str) -> Option<(u16, String)> {
    request(port, "GET", path, &[], "")
}

/// One HTTP/1.1 request: the status and the body (`None` while nothing listens).
fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (k, v) in headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    if !body.is_empty() {
        let _ = write!(
            head,
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
    }
    write!(s, "{head}\r\n{body}").ok()?;
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
pub(crate) fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
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

const TOKEN: &str = "s3cret-token";
const OTHER_TOKEN: &str = "another-token";

/// A prompt over HTTP to `conversation` with `token` and `key` (none: left out).
fn post_prompt(
    port: u16,
    conversation: &str,
    token: &str,
    key: Option<&str>,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let auth = format!("Bearer {token}");
    let mut headers = vec![("Authorization", auth.as_str())];
    if let Some(k) = key {
        headers.push(("Idempotency-Key", k));
    }
    let (status, text) = request(
        port,
        "POST",
        &format!("/v1/conversations/{conversation}/messages"),
        &headers,
        &body.to_string(),
    )
    .expect("the service answers");
    let json = serde_json::from_str(&text).unwrap_or_else(|_| serde_json::json!({"raw": text}));
    (status, json)
}

/// The settings of a service that takes prompts over HTTP with two tokens.
fn prompt_settings(env: &TestEnv, port: u16, more: &str) -> String {
    let tokens = env.path("http-token");
    std::fs::write(&tokens, format!("{TOKEN}\n{OTHER_TOKEN}\n")).expect("token file");
    format!(
        "[access]\nallowed_users = [{ALICE}]\n[http]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = \"{}\"\n{more}",
        tokens.display()
    )
}

/// The bot's posts in `channel` that answer the HTTP prompt `content`.
fn http_answers(server: &DiscordServer, channel: u64, content: &str) -> Vec<serde_json::Value> {
    server
        .posts(channel)
        .into_iter()
        .map(|r| r.body)
        .filter(|b| {
            let t = b["content"].as_str().unwrap_or_default();
            t.starts_with("📨 From `ci` over HTTP:") && t.contains(&format!("echo: {content}"))
        })
        .collect()
}

#[actix_rt::test]
async fn a_prompt_over_http_is_answered_once_in_its_channel_and_its_key_again_runs_nothing() {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    let port = free_port();
    let extra = prompt_settings(
        &env,
        port,
        "max_body_bytes = 2048\nprompts_per_minute = 12\n",
    );
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &[]);
    server.wait_ready(1).await;
    ready(port, true).await;
    let prompt = serde_json::json!({"content": "build failed on main", "author": "ci"});

    // Refused, and nothing runs.
    let (status, body) = post_prompt(port, "alpha", "wrong", Some("k0"), &prompt);
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
    let (status, _) = request(
        port,
        "POST",
        "/v1/conversations/alpha/messages",
        &[("Idempotency-Key", "k0")],
        &prompt.to_string(),
    )
    .expect("answer");
    assert_eq!(status, 401, "no Authorization header");
    let (status, body) = post_prompt(port, "nowhere", TOKEN, Some("k0"), &prompt);
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("unknown_conversation")),
        "{body}"
    );
    let (status, body) = post_prompt(port, "alpha", TOKEN, None, &prompt);
    assert_eq!(status, 400, "no Idempotency-Key: {body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("Idempotency-Key"),
        "{body}"
    );
    let (status, body) = post_prompt(
        port,
        "alpha",
        TOKEN,
        Some("k0"),
        &serde_json::json!({"author": "ci"}),
    );
    assert_eq!(status, 400, "no content: {body}");
    let bad_author = serde_json::json!({"content": "hi", "author": "<@&123> everyone"});
    let (status, body) = post_prompt(port, "alpha", TOKEN, Some("k0"), &bad_author);
    assert_eq!(status, 400, "a bad author: {body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("`author`"),
        "{body}"
    );
    let big = serde_json::json!({"content": "x".repeat(4000), "author": "ci"});
    let (status, body) = post_prompt(port, "alpha", TOKEN, Some("k0"), &big);
    assert_eq!(
        (status, body["error"].as_str()),
        (413, Some("too_large")),
        "{body}"
    );
    assert!(env.prompts().is_empty(), "nothing ran: {:?}", env.prompts());

    // Accepted: answered in the channel, once, saying who asked.
    let (status, first) = post_prompt(port, "alpha", TOKEN, Some("ci-run-1"), &prompt);
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["state"], "queued");
    assert_eq!(first["author"], "ci");
    assert_eq!(first["replayed"], false);
    let id = first["id"].as_str().expect("an id").to_string();
    server
        .wait("the answer in alpha", |s| {
            !http_answers(s, ALPHA, "build failed on main").is_empty()
        })
        .await;
    let answer = http_answers(&server, ALPHA, "build failed on main").remove(0);
    let text = answer["content"].as_str().unwrap_or_default();
    assert!(
        text.contains("> build failed on main"),
        "the prompt is quoted: {text}"
    );
    assert!(
        answer["message_reference"].is_null(),
        "nothing to reply to: {answer}"
    );

    // The same key again: the first request's record, nothing run.
    let mut again = serde_json::Value::Null;
    wait_until(
        || {
            again = post_prompt(port, "alpha", TOKEN, Some("ci-run-1"), &prompt).1;
            again["state"] == "answered"
        },
        "the replayed record says answered",
    )
    .await;
    assert_eq!(again["id"].as_str(), Some(id.as_str()), "{again}");
    assert_eq!(again["replayed"], true);
    let other = serde_json::json!({"content": "something else", "author": "ci"});
    let (status, body) = post_prompt(port, "alpha", TOKEN, Some("ci-run-1"), &other);
    assert_eq!(
        (status, body["error"].as_str()),
        (422, Some("idempotency_key_reused")),
        "{body}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        env.prompts()
            .iter()
            .filter(|p| p.as_str() == "build failed on main")
            .count(),
        1,
        "{:?}",
        env.prompts()
    );
    assert_eq!(env.prompts().len(), 1, "{:?}", env.prompts());
    assert_eq!(
        http_answers(&server, ALPHA, "build failed on main").len(),
        1
    );

    // A rate limit per token: the other token's minute runs out, this one's does not.
    let mut limited = None;
    for i in 0..14 {
        let (status, body) = post_prompt(
            port,
            "nowhere",
            OTHER_TOKEN,
            Some(&format!("r{i}")),
            &prompt,
        );
        if status == 429 {
            limited = Some((i, body));
            break;
        }
        assert_eq!(status, 404);
    }
    let (i, body) = limited.expect("a 429");
    assert_eq!(i, 12, "twelve a minute: {body}");
    assert_eq!(body["error"], "rate_limited");
    let (status, _) = post_prompt(port, "nowhere", TOKEN, Some("r"), &prompt);
    assert_eq!(status, 404, "the first token still has room");
    // Counted as they were answered.
    let (_, metrics) = get(port, "/metrics").expect("metrics");
    let prompts = |outcome: &str| {
        sample(
            &metrics,
            "coordinator_http_prompts_total",
            &[("outcome", outcome)],
        )
        .unwrap_or(-1.0)
    };
    assert!(
        (prompts("accepted") - 1.0).abs() < f64::EPSILON,
        "{metrics}"
    );
    assert!(prompts("replayed") >= 2.0, "{metrics}");
    assert!(prompts("refused") >= 21.0, "{metrics}");

    let out = stop_with(child, Signal::SIGTERM).await;
    let logs =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        !logs.contains(TOKEN) && !logs.contains(OTHER_TOKEN),
        "a token was logged"
    );
}

#[actix_rt::test]
async fn a_prompt_over_http_accepted_before_a_kill_9_is_answered_once_after_the_restart() {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    let port = free_port();
    let extra = prompt_settings(&env, port, "");
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &[]);
    server.wait_ready(1).await;
    ready(port, true).await;
    // A run holds the conversation, so the prompt waits in the queue.
    let gate = env.gate("g");
    server.say(ALPHA, ALICE, &format!("first GATE:{}", gate.display()));
    wait_until(|| env.prompts().len() == 1, "the first run").await;
    let prompt = serde_json::json!({"content": "deploy went wrong", "author": "ci"});
    let (status, body) = post_prompt(port, "alpha", TOKEN, Some("deploy-7"), &prompt);
    assert_eq!(status, 202, "{body}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop_with(child, Signal::SIGKILL).await;
    assert!(
        http_answers(&server, ALPHA, "deploy went wrong").is_empty(),
        "not answered before the kill"
    );

    env.open_gate("g");
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &[]);
    server
        .wait("the answer after the restart", |s| {
            !http_answers(s, ALPHA, "deploy went wrong").is_empty()
        })
        .await;
    // The caller retries after the restart: the same record, nothing run again.
    ready(port, true).await;
    let (status, again) = post_prompt(port, "alpha", TOKEN, Some("deploy-7"), &prompt);
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["id"], body["id"]);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(http_answers(&server, ALPHA, "deploy went wrong").len(), 1);
    assert_eq!(
        env.prompts()
            .iter()
            .filter(|p| p.as_str() == "deploy went wrong")
            .count(),
        1,
        "{:?}",
        env.prompts()
    );
    // Text that looks like a command is a prompt all the same: `!new` resets nothing.
    let command = serde_json::json!({"content": "!new", "author": "ci"});
    let (status, body) = post_prompt(port, "alpha", TOKEN, Some("looks-like-a-command"), &command);
    assert_eq!(status, 202, "{body}");
    server
        .wait("the answer to !new", |s| {
            !http_answers(s, ALPHA, "!new").is_empty()
        })
        .await;
    assert!(
        env.prompts().iter().any(|p| p == "!new"),
        "{:?}",
        env.prompts()
    );
    stop_with(child, Signal::SIGTERM).await;
}

#[actix_rt::test]
async fn a_permission_request_of_a_prompt_over_http_asks_the_approvers_and_their_click_runs_it() {
    let env = TestEnv::new();
    let server = DiscordServer::start().await;
    let port = free_port();
    let extra = prompt_settings(&env, port, "")
        .replace("[http]", &format!("approvers = [{ALICE}]\n[http]"));
    let child = spawn_run_with(&env, &server, &extra, Some("tok"), &[]);
    server.wait_ready(1).await;
    ready(port, true).await;
    let file = env.path("proj/from-ci");
    let content = format!("TOOL:touch {}", file.display());
    // No `author`: the answer says `http`.
    let prompt = serde_json::json!({"content": content});
    let (status, body) = post_prompt(port, "alpha", TOKEN, Some("tool-1"), &prompt);
    assert_eq!(status, 202, "{body}");
    let asked = server
        .post_where(ALPHA, "the permission prompt", |r| {
            r.body["content"]
                .as_str()
                .is_some_and(|t| t.starts_with("🔐"))
        })
        .await;
    // No Discord user asked: the approvers are, and nothing is replied to.
    assert_eq!(
        asked.body["allowed_mentions"]["users"],
        serde_json::json!([ALICE.to_string()]),
        "{}",
        asked.body
    );
    assert!(asked.body["message_reference"].is_null(), "{}", asked.body);
    let allow = asked.body["components"][0]["components"][0]["custom_id"]
        .as_str()
        .expect("the Allow button")
        .to_string();
    let message = DiscordServer::message_of(&asked, ALPHA);
    server.click(ALPHA, &message, &allow, ALICE);
    wait_until(|| file.exists(), "the tool ran once allowed").await;
    server
        .wait("the answer", |s| {
            s.posts(ALPHA).iter().any(|r| {
                r.body["content"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("📨 From `http` over HTTP:"))
            })
        })
        .await;
    stop_with(child, Signal::SIGTERM).await;
}
