//! Posting a message in proxy mode (`discord.api_base_url` other than Discord's): serenity's
//! rate limiter must be off there (SERENITY-LOCAL.md), and serenity's errors keep no headers
//! and no `retry_after`, so a 429 could only be retried blindly. Message posts — every reply,
//! notice, prompt and progress message — go through this instead: the same JSON serenity would
//! send, by our own request, and a 429 is retried after the `Retry-After` it names (header, or
//! the body's `retry_after`), at most `send_retries` times and never longer than a minute a
//! time. Any other failure becomes serenity's own error, for the usual retries.
//!
//! Progress edits go this way too ([`ProxiedPoster::edit`]), one attempt each: the answer's
//! `X-RateLimit-Remaining` / `X-RateLimit-Reset-After` (`reference/rate-limits.mdx`) say when
//! the next edit of that route may go, and a 429 says how long to wait; the caller coalesces
//! what changed meanwhile into the next edit instead of queueing edits.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use serenity::all::{
    ChannelId, CreateMessage, EditMessage, ErrorResponse, HttpError, Message, MessageId,
};
use tracing::warn;

/// The longest wait a 429 may ask for, per attempt.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Posts messages to a Discord-compatible server at `base`.
#[derive(Clone)]
pub struct ProxiedPoster {
    client: reqwest::Client,
    base: String,
    token: SecretString,
    retries: u32,
    stats: std::sync::Arc<crate::metrics::RestStats>,
}

impl std::fmt::Debug for ProxiedPoster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the token.
        f.debug_struct("ProxiedPoster")
            .field("base", &self.base)
            .field("retries", &self.retries)
            .finish_non_exhaustive()
    }
}

/// How long a 429 answer asks to wait: the `Retry-After` header, else the body's
/// `retry_after`, in seconds (fractions allowed); at most `MAX_WAIT`.
pub fn retry_after(headers: &reqwest::header::HeaderMap, body: &[u8]) -> Option<Duration> {
    let from_header = headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok());
    let from_body = || {
        serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v["retry_after"].as_f64())
    };
    from_header
        .or_else(from_body)
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s).min(MAX_WAIT))
}

/// How an edit went, as far as pacing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edited {
    /// Done; the route's bucket is spent until this long from now, if it said so.
    Done(Option<Duration>),
    /// Refused with 429: wait this long.
    RateLimited(Duration),
}

/// When a route's bucket frees up: `X-RateLimit-Reset-After`, if `X-RateLimit-Remaining` is 0.
pub fn spent_for(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|n| n.is_finite() && *n >= 0.0)
    };
    (number("x-ratelimit-remaining")? < 1.0)
        .then(|| number("x-ratelimit-reset-after"))
        .flatten()
        .map(|s| Duration::from_secs_f64(s).min(MAX_WAIT))
}

impl ProxiedPoster {
    /// The `Authorization` header's value.
    fn auth(&self) -> String {
        let token = self.token.expose_secret();
        if token.starts_with("Bot ") {
            token.to_string()
        } else {
            format!("Bot {token}")
        }
    }

    /// Edits `message` of `channel` once (see the module's docs).
    pub async fn edit(
        &self,
        channel: ChannelId,
        message: MessageId,
        edit: &EditMessage,
    ) -> Result<Edited, serenity::Error> {
        let url = format!(
            "{}/api/v10/channels/{}/messages/{}",
            self.base,
            channel.get(),
            message.get()
        );
        let response = self
            .client
            .patch(&url)
            .header("authorization", self.auth())
            .json(edit)
            .send()
            .await
            .map_err(HttpError::Request)?;
        let status = response.status();
        let headers = response.headers().clone();
        if status.is_success() {
            self.stats
                .sends
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(Edited::Done(spent_for(&headers)));
        }
        if status.as_u16() == 429 {
            let body = response.bytes().await.map_err(HttpError::Request)?;
            self.stats
                .retries
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Ok(Edited::RateLimited(
                retry_after(&headers, &body).unwrap_or(Duration::from_secs(1)),
            ));
        }
        let error = ErrorResponse::from_response(response, reqwest::Method::PATCH).await;
        Err(serenity::Error::Http(HttpError::UnsuccessfulRequest(error)))
    }

    /// A poster for the server at `base` (scheme, host and port).
    pub fn new(
        base: &str,
        token: SecretString,
        retries: u32,
        stats: std::sync::Arc<crate::metrics::RestStats>,
    ) -> Self {
        Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap_or_default(),
            base: base.trim_end_matches('/').to_string(),
            token,
            retries,
            stats,
        }
    }

    /// Posts `message` with `files` (bytes, name) attached to `channel`.
    pub async fn post(
        &self,
        channel: ChannelId,
        message: &CreateMessage,
        files: &[(&[u8], &str)],
    ) -> Result<Message, serenity::Error> {
        let url = format!("{}/api/v10/channels/{}/messages", self.base, channel.get());
        let mut payload = serde_json::to_value(message)?;
        if !files.is_empty() {
            payload["attachments"] = files
                .iter()
                .enumerate()
                // Discord's attachment ids are snowflakes, which its spec types as strings.
                .map(|(i, (_, name))| serde_json::json!({"id": i.to_string(), "filename": name}))
                .collect();
        }
        let auth = self.auth();
        let mut waited = 0;
        loop {
            let request = self.client.post(&url).header("authorization", &auth);
            let request = if files.is_empty() {
                request.json(&payload)
            } else {
                let mut form =
                    reqwest::multipart::Form::new().text("payload_json", payload.to_string());
                for (i, (bytes, name)) in files.iter().enumerate() {
                    let part =
                        reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_string());
                    form = form.part(format!("files[{i}]"), part);
                }
                request.multipart(form)
            };
            let response = request.send().await.map_err(HttpError::Request)?;
            let status = response.status();
            if status.is_success() {
                let body = response.bytes().await.map_err(HttpError::Request)?;
                return Ok(serde_json::from_slice(&body)?);
            }
            if status.as_u16() == 429 && waited < self.retries {
                let headers = response.headers().clone();
                let body = response.bytes().await.map_err(HttpError::Request)?;
                let wait = retry_after(&headers, &body).unwrap_or(Duration::from_secs(1));
                waited += 1;
                self.stats
                    .retries
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                warn!(
                    channel_id = channel.get(),
                    wait_ms = wait.as_millis() as u64,
                    attempt = waited,
                    "Discord rate-limited a post; waiting as it asked"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            let error = ErrorResponse::from_response(response, reqwest::Method::POST).await;
            return Err(serenity::Error::Http(HttpError::UnsuccessfulRequest(error)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_comes_from_the_header_else_the_body_and_is_bounded() {
        let mut headers = reqwest::header::HeaderMap::new();
        let body =
            br#"{"message": "You are being rate limited.", "retry_after": 2.5, "global": false}"#;
        assert_eq!(
            retry_after(&headers, body),
            Some(Duration::from_millis(2500))
        );
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "0.75".parse().expect("header"),
        );
        assert_eq!(
            retry_after(&headers, body),
            Some(Duration::from_millis(750))
        );
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "86400".parse().expect("header"),
        );
        assert_eq!(retry_after(&headers, body), Some(MAX_WAIT));
        let none = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&none, b"not json"), None);
        assert_eq!(retry_after(&none, br#"{"retry_after": -1}"#), None);
    }
}
