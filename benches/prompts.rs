//! A prompt over HTTP: its own cost before it is queued.
//!
//! Run: `cargo build --release -p fake-claude && cargo bench --bench prompts` (options:
//! `-- --prompts N`, default 1000).
//!
//! The real application in-process (store on a temp SQLite file, registry, channel actor, the
//! release stand-in answering), the HTTP server on 127.0.0.1, and a client on its own thread
//! sending `POST /v1/conversations/c0/messages` one after another over one keep-alive
//! connection, each with a new `Idempotency-Key`. Each request's time, from writing it to
//! reading the whole `202` — bearer check, rate limit, JSON, the inbox row and key written in
//! one SQLite transaction, the message handed to the registry — is an upper bound on the
//! prompt's cost before it is queued (it includes the loopback round trip). Every prompt must
//! then be answered exactly once.

mod support;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::time::Instant;

use actors::frontend::{FrontEnd, FrontendEvent, ReplyKind, ReplySink};
use claude_coordinator::startup::Application;
use hdrhistogram::Histogram;
use secrecy::SecretString;

fn prompts_arg() -> usize {
    let argv: Vec<String> = std::env::args().collect();
    argv.iter()
        .position(|a| a == "--prompts")
        .and_then(|i| argv.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// Sends `n` prompts over one connection; their times (µs) and the ids the service gave.
fn client(addr: std::net::SocketAddr, n: usize) -> (Histogram<u64>, Vec<String>) {
    let stream = std::net::TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let body = format!("{{\"content\":\"prompt {i}\",\"author\":\"bench\"}}");
        let request = format!(
            "POST /v1/conversations/c0/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer bench-token\r\n\
             Idempotency-Key: bench-{i}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let start = Instant::now();
        writer.write_all(request.as_bytes()).expect("write");
        let mut status = String::new();
        reader.read_line(&mut status).expect("status line");
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("header");
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().expect("length");
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("body");
        let _ = hist.record(start.elapsed().as_micros() as u64);
        assert!(
            status.contains(" 202 "),
            "{status} {}",
            String::from_utf8_lossy(&body)
        );
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        ids.push(v["id"].as_str().expect("id").to_string());
    }
    (hist, ids)
}

fn main() {
    let n = prompts_arg();
    let dir = tempfile::tempdir().expect("tmp");
    let mut settings = support::settings(dir.path(), 1, 1);
    settings.http.listen = "127.0.0.1:0".parse().ok();
    settings.http.tokens = vec![SecretString::from("bench-token")];
    settings.http.prompts_per_minute = 1_000_000;
    actix::System::new().block_on(async move {
        let app = Application::build(settings).await.expect("build");
        let (sink, mut events) = ReplySink::start();
        let registry = app.start_registry(FrontEnd::of(&sink));
        let addr = app
            .start_http(None, Some(registry.clone()))
            .await
            .expect("http")
            .expect("listening");
        let sending = std::thread::spawn(move || client(addr, n));
        let mut answered: HashSet<u64> = HashSet::new();
        let mut twice = 0;
        while answered.len() < n {
            match events.recv().await {
                Some(FrontendEvent::Reply(r)) if r.kind == ReplyKind::Answer => {
                    assert!(!r.is_error, "{r:?}");
                    if let Some(m) = r.to.message_id() {
                        if !answered.insert(m.get()) {
                            twice += 1;
                        }
                    }
                }
                Some(_) => {}
                None => panic!("the sink stopped"),
            }
        }
        let (hist, ids) = sending.join().expect("client");
        let given: HashSet<u64> = ids.iter().filter_map(|i| i.parse().ok()).collect();
        assert_eq!(given, answered, "every accepted prompt answered");
        let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{n} prompts over HTTP, accept (request written → 202 read, loopback included): median {:.3} ms, p95 {:.3} ms, p99 {:.3} ms, max {:.3} ms (goal p95 <= 2 ms); answered {} once, {twice} twice",
            ms(0.5),
            ms(0.95),
            ms(0.99),
            hist.max() as f64 / 1000.0,
            answered.len()
        );
        assert_eq!(twice, 0);
        let _ = app.drain(&registry).await;
    });
}
