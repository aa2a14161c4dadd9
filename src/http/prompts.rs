//! `POST /v1/conversations/{name}/messages`: a prompt from CI or a webhook, answered in the
//! conversation's channel like a message. `Authorization: Bearer` must match one of the tokens
//! of `http.token_file` (or the systemd credential `http-token`); the body is
//! `{"content": "...", "author": "ci"}`; an `Idempotency-Key` header is required. The prompt
//! and its key are written to the store in one transaction before it is queued, so the same
//! key again returns the first request's record and runs nothing, and a prompt accepted before
//! a `kill -9` is answered after the restart. Errors are JSON: 400, 401, 404, 413, 422, 429.
//! The token is never logged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use actix::{Addr, Recipient};
use actors::conversation::ConversationRef;
use actors::frontend::{Durability, Origin, SubmitMessage};
use actors::ids::{MessageId, UserId};
use actors::metrics::{HttpOutcome, Metric, RecordMetric};
use actors::registry::{ChannelRegistry, CountChannels};
use actors::store::{AcceptPrompt, Accepted, Inbound, InboxState, PromptRecord, SessionStoreActor};
use actors::via::Via;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{json, Value};
use tracing::{info, warn};

/// The longest `Idempotency-Key` and `author` taken.
const MAX_KEY: usize = 200;
const MAX_AUTHOR: usize = 64;

/// What the prompts endpoint needs.
#[derive(Clone)]
pub struct Prompts {
    /// Where prompts are queued (and, once, waited on: see `restored`).
    pub registry: Addr<ChannelRegistry>,
    /// Where they are written first.
    pub store: Addr<SessionStoreActor>,
    /// Where each outcome is counted.
    pub metrics: Recipient<RecordMetric>,
    /// The configured channels' conversations, by name.
    pub conversations: Arc<HashMap<String, ConversationRef>>,
    /// The accepted bearer tokens.
    pub tokens: Arc<Vec<SecretString>>,
    /// Each token's allowance.
    pub buckets: Arc<Mutex<Vec<Bucket>>>,
    /// `http.prompts_per_minute`.
    pub per_minute: u32,
    /// The registry has restored the inbox (checked once).
    pub restored: Arc<AtomicBool>,
}

impl Prompts {
    /// The endpoint over `conversations`, taking `tokens`, each `per_minute` prompts a minute.
    pub fn new(
        registry: Addr<ChannelRegistry>,
        store: Addr<SessionStoreActor>,
        metrics: Recipient<RecordMetric>,
        conversations: HashMap<String, ConversationRef>,
        tokens: Vec<SecretString>,
        per_minute: u32,
    ) -> Self {
        let buckets = tokens.iter().map(|_| Bucket::full(per_minute)).collect();
        Self {
            registry,
            store,
            metrics,
            conversations: Arc::new(conversations),
            tokens: Arc::new(tokens),
            buckets: Arc::new(Mutex::new(buckets)),
            per_minute,
            restored: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Which token `headers` carry, if one of ours.
    fn token_of(&self, headers: &HeaderMap) -> Option<usize> {
        let (scheme, given) = headers
            .get(header::AUTHORIZATION)?
            .to_str()
            .ok()?
            .split_once(' ')?;
        // The scheme is case-insensitive (RFC 9110).
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let given = given.trim();
        self.tokens
            .iter()
            .position(|t| same(t.expose_secret().as_bytes(), given.as_bytes()))
    }

    /// Takes one prompt from token `i`'s allowance; else how many seconds until one is free.
    fn take(&self, i: usize) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        match buckets.get_mut(i) {
            Some(b) => b.take(self.per_minute, Instant::now()),
            None => Ok(()),
        }
    }
}

/// A token bucket: `per_minute` prompts, refilled evenly.
#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    left: f64,
    at: Instant,
}

impl Bucket {
    fn full(per_minute: u32) -> Self {
        Self {
            left: f64::from(per_minute),
            at: Instant::now(),
        }
    }

    fn take(&mut self, per_minute: u32, now: Instant) -> Result<(), u64> {
        let rate = f64::from(per_minute) / 60.0;
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.left = (self.left + elapsed * rate).min(f64::from(per_minute));
        self.at = now;
        if self.left >= 1.0 {
            self.left -= 1.0;
            Ok(())
        } else {
            // Whole seconds, rounded up: at least 1.
            let wait = ((1.0 - self.left) / rate).ceil();
            Err(if wait.is_finite() && wait >= 1.0 {
                wait as u64
            } else {
                1
            })
        }
    }
}

/// Compares in time that does not depend on where the bytes differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0_u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A request refused: its status, a code and a message for the caller (JSON).
#[derive(Debug)]
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// `Retry-After` (seconds), for 429.
    retry_after: Option<u64>,
}

fn error(status: StatusCode, code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        code,
        message: message.into(),
        retry_after: None,
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = json!({"error": self.code, "message": self.message});
        let mut r = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(v) = self
            .retry_after
            .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

fn record_json(r: &PromptRecord, replayed: bool) -> Value {
    let at = chrono::DateTime::from_timestamp_millis(r.accepted_at_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    json!({
        // A string: the id is above what JSON numbers hold exactly.
        "id": r.message_id.get().to_string(),
        "conversation": r.conversation,
        "author": r.author,
        "state": r.state.map_or("pruned", InboxState::as_str),
        "accepted_at": at,
        "replayed": replayed,
    })
}

/// What a valid request asks.
struct Request {
    content: String,
    author: String,
    key: String,
}

/// The body and headers of a request, checked.
fn parse(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Request, Refusal> {
    let body = body.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "the body is larger than http.max_body_bytes",
            )
        } else {
            error(StatusCode::BAD_REQUEST, "bad_body", r.body_text())
        }
    })?;
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "bad_request", m);
    let value: Value =
        serde_json::from_slice(&body).map_err(|e| bad(&format!("the body is not JSON: {e}")))?;
    let content = value
        .get("content")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| bad("`content` (a non-empty string) is required"))?
        .to_string();
    let author = match value.get("author") {
        None | Some(Value::Null) => "http".to_string(),
        Some(Value::String(a)) => a.trim().to_string(),
        Some(_) => return Err(bad("`author` must be a string")),
    };
    let fine = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@' | ' ');
    if author.is_empty() || author.chars().count() > MAX_AUTHOR || !author.chars().all(fine) {
        return Err(bad(&format!(
            "`author` must be 1–{MAX_AUTHOR} letters, digits, spaces or . _ - @"
        )));
    }
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty() && k.len() <= MAX_KEY)
        .ok_or_else(|| {
            bad(&format!(
                "an `Idempotency-Key` header (1–{MAX_KEY} characters) is required, so a retried request runs nothing twice"
            ))
        })?
        .to_string();
    Ok(Request {
        content,
        author,
        key,
    })
}

/// The caller's token, checked and charged: 401 without a valid one, 429 over its minute.
fn authorize(p: &Prompts, headers: &HeaderMap, name: &str) -> Result<(), Refusal> {
    let Some(token) = p.token_of(headers) else {
        warn!(
            conversation = %name,
            "a prompt over HTTP without a valid bearer token refused"
        );
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid `Authorization: Bearer` token is required",
        ));
    };
    p.take(token).map_err(|wait| Refusal {
        retry_after: Some(wait),
        ..error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "more than {} prompts a minute with this token; try again in {wait} s",
                p.per_minute
            ),
        )
    })
}

/// `POST /v1/conversations/{name}/messages`.
pub async fn post_message(
    State(p): State<Prompts>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let answer = match authorize(&p, &headers, &name) {
        Err(refused) => Err(refused),
        Ok(()) => match p.conversations.get(&name).cloned() {
            None => Err(error(
                StatusCode::NOT_FOUND,
                "unknown_conversation",
                "no configured channel has that name",
            )),
            Some(conversation) => match parse(&headers, body) {
                Ok(req) => accept(&p, conversation, req).await,
                Err(refused) => Err(refused),
            },
        },
    };
    let outcome = match &answer {
        Ok(r) if r.status() == StatusCode::ACCEPTED => HttpOutcome::Accepted,
        Ok(_) => HttpOutcome::Replayed,
        Err(_) => HttpOutcome::Refused,
    };
    p.metrics.do_send(RecordMetric(Metric::HttpPrompt(outcome)));
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// Writes the prompt and its key to the store; a new one is then queued.
async fn accept(
    p: &Prompts,
    conversation: ConversationRef,
    req: Request,
) -> Result<Response, Refusal> {
    let stopping = || {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "stopping",
            "the service is stopping",
        )
    };
    if !p.restored.load(Ordering::Acquire) {
        // The registry answers only once the inbox is restored: a prompt written before the
        // restore read the inbox would be queued twice.
        p.registry
            .send(CountChannels)
            .await
            .map_err(|_| stopping())?;
        p.restored.store(true, Ordering::Release);
    }
    let via = Via::Http {
        author: req.author.clone(),
    };
    let inbound = Inbound {
        message_id: MessageId::default(),
        conversation_id: conversation.id,
        profile_id: conversation.profile.id,
        conversation: conversation.name.clone(),
        channel_id: conversation.id.into(),
        author_id: UserId::NOBODY,
        text: req.content.clone(),
        attachments: Vec::new(),
        late: false,
        via: via.clone(),
    };
    let accepted = p
        .store
        .send(AcceptPrompt {
            key: req.key,
            inbound,
            author: req.author,
        })
        .await
        .map_err(|_| stopping())?
        .map_err(|e| {
            warn!(error = %e, "a prompt over HTTP could not be written to the inbox");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("the prompt could not be stored, so it was not queued: {e}"),
            )
        })?;
    Ok(match accepted {
        Accepted::New(record) => {
            info!(
                channel_id = conversation.id.get(),
                message_id = record.message_id.get(),
                author = %record.author,
                "a prompt over HTTP accepted"
            );
            p.registry.do_send(SubmitMessage {
                origin: Origin {
                    channel_id: conversation.id.into(),
                    message_id: record.message_id,
                    author_id: UserId::NOBODY,
                },
                conversation,
                text: req.content,
                attachments: Vec::new(),
                late: false,
                inbox: Durability::Stored,
                approver: false,
                via,
            });
            (StatusCode::ACCEPTED, Json(record_json(&record, false))).into_response()
        }
        Accepted::Replayed(record) => {
            info!(
                message_id = record.message_id.get(),
                "a prompt over HTTP repeated with its idempotency key; nothing run"
            );
            (StatusCode::OK, Json(record_json(&record, true))).into_response()
        }
        Accepted::Conflict(record) => {
            let mut body = record_json(&record, true);
            body["error"] = json!("idempotency_key_reused");
            body["message"] =
                json!("this Idempotency-Key was used for another prompt; nothing run");
            (StatusCode::UNPROCESSABLE_ENTITY, Json(body)).into_response()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_minute_then_says_when_one_is_free() {
        let start = Instant::now();
        let mut b = Bucket {
            left: 2.0,
            at: start,
        };
        assert_eq!(b.take(2, start), Ok(()));
        assert_eq!(b.take(2, start), Ok(()));
        assert_eq!(b.take(2, start), Err(30));
        assert_eq!(
            b.take(2, start + std::time::Duration::from_secs(31)),
            Ok(())
        );
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(same(b"secret", b"secret"));
        assert!(!same(b"secret", b"secreT"));
        assert!(!same(b"secret", b"secret2"));
        assert!(!same(b"", b"x"));
    }
}
