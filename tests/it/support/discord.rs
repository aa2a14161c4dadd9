//! A Discord-compatible server on 127.0.0.1 for end-to-end tests with the real serenity client
//! (see ../shared/discord/SERENITY-LOCAL.md): the REST routes serenity uses and the gateway
//! websocket. It records every request, lets a test inject gateway events and REST failures,
//! and can drop the gateway connection to make serenity resume. It keeps every channel's
//! history (`GET /channels/{id}/messages` with `after`, newest first, as Discord answers), so
//! a message said while no bot is connected is there for catch-up. Ids are snowflakes of the
//! current time, as Discord's are.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, patch, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use super::gateway_docs::check_dispatch;
use super::openapi::Spec;
use super::PATIENCE;

/// The bot's user id, as the server reports it.
pub const BOT_ID: u64 = 424_242_424_242_424_242;
/// The guild every channel belongs to.
pub const GUILD_ID: u64 = 777_000_000_000_000_001;
/// Discord's epoch in unix milliseconds.
const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// One REST request the server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The JSON body (for multipart: `payload_json`).
    pub body: Value,
    /// Files of a multipart body: (field name, file name, bytes).
    pub files: Vec<(String, String, Vec<u8>)>,
    /// The `Authorization` header.
    pub auth: String,
    /// The status the server answered.
    pub status: u16,
    /// Whether this request created a message (a repeated nonce creates none).
    pub created: bool,
    /// When it arrived.
    pub at: Instant,
    /// When it arrived, in unix milliseconds (to compare with other processes' clocks).
    #[allow(dead_code)] // read by benches/streaming.rs, which shares this module
    pub at_ms: u64,
}

enum WsCommand {
    Send(Value),
    Close(u16),
}

#[derive(Default)]
struct Inner {
    requests: Mutex<Vec<Recorded>>,
    channels: Mutex<HashMap<u64, Value>>,
    post_failures: Mutex<VecDeque<u16>>,
    /// Posts to create and then answer with these statuses (a response lost after the fact).
    lost_responses: Mutex<VecDeque<u16>>,
    /// (channel, nonce) → the message created with it.
    nonces: Mutex<HashMap<(u64, String), Value>>,
    lookup_failures: Mutex<VecDeque<u16>>,
    /// Every message of each channel, oldest first.
    history: Mutex<HashMap<u64, Vec<Value>>>,
    /// Posts still let through before posts are held (unanswered until released).
    hold_after: Mutex<Option<usize>>,
    /// How long a history read takes.
    history_delay: Mutex<Duration>,
    /// Attachment downloads: path → bytes.
    attachments: Mutex<HashMap<String, Vec<u8>>>,
    /// Posts to answer with 429, and the `retry_after` (seconds) each names.
    rate_limits: Mutex<VecDeque<f64>>,
    /// Interactions dispatched, and whether each has had its callback.
    interactions: Mutex<HashMap<String, (bool, u64)>>,
    /// When each interaction was dispatched: a callback after 3 s is refused, as on Discord.
    dispatched: Mutex<HashMap<String, Instant>>,
    connection: Mutex<Option<UnboundedSender<WsCommand>>>,
    frames: Mutex<Vec<Value>>,
    next_id: AtomicU64,
    seq: AtomicU64,
    readies: AtomicU64,
    resumes: AtomicU64,
    base: Mutex<String>,
    /// Where a request or an answer differed from Discord's spec, or a dispatch from its pages.
    violations: Mutex<Vec<String>>,
    /// Permission prompts (posts starting with 🔐) still to refuse with 400.
    refuse_prompts: AtomicU64,
    /// Guild members' roles, by user (`GET /guilds/{g}/members/{u}`; others are not members).
    roles: Mutex<HashMap<u64, Vec<u64>>>,
    /// History reads under way now, per channel, and the most at once (in all, and of one
    /// channel).
    history_now: Mutex<HashMap<u64, usize>>,
    history_peak: Mutex<(usize, usize)>,
    /// Per-route rate limits, when enforced: (requests, window) per bucket.
    limits: Mutex<Option<(usize, Duration)>>,
    /// Each bucket's requests in its current window: (window start, count).
    buckets: Mutex<HashMap<String, (Instant, usize)>>,
    /// Requests answered 429 by the per-route limits.
    limited: AtomicU64,
    /// Message edits to answer with 429, and the `retry_after` (seconds) each names.
    edit_limits: Mutex<VecDeque<f64>>,
    /// The gateway is down: new connections are refused.
    gateway_down: std::sync::atomic::AtomicBool,
}

/// The highest `[dN]` marker a text shows: the stand-in's `STREAM:<n>:<ms>` writes parts
/// `[d1]` … `[dn]`, so this is how far a progress edit or a reply had got.
pub fn highest_marker(text: &str) -> usize {
    text.match_indices("[d")
        .filter_map(|(i, _)| {
            let rest = &text[i + 2..];
            rest[..rest.find(']')?].parse().ok()
        })
        .max()
        .unwrap_or(0)
}

/// The running server.
#[derive(Clone)]
pub struct DiscordServer {
    inner: Arc<Inner>,
    /// `http://127.0.0.1:PORT`
    pub base: String,
}

impl Drop for DiscordServer {
    /// Every test that used the server fails if anything crossed it that Discord would not
    /// send or take (each clone checks; the test's own handle is dropped at its end).
    fn drop(&mut self) {
        if std::thread::panicking() {
            return;
        }
        let found = self.violations();
        assert!(
            found.is_empty(),
            "the test server saw what Discord's published API does not have:\n{}",
            found.join("\n")
        );
    }
}

impl DiscordServer {
    /// What crossed the server that Discord's spec (REST) or pages (gateway) do not allow.
    pub fn violations(&self) -> Vec<String> {
        self.inner.violations.lock().expect("lock").clone()
    }

    /// Starts the server on an ephemeral port of 127.0.0.1 (on the current runtime).
    pub async fn start() -> Self {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis() as u64;
        let inner = Arc::new(Inner {
            next_id: AtomicU64::new((now_ms - DISCORD_EPOCH_MS) << 22),
            ..Inner::default()
        });
        let app = Router::new()
            .route("/api/v10/gateway", get(gateway_url))
            .route("/api/v10/gateway/bot", get(gateway_bot))
            .route("/api/v10/users/@me", get(me))
            .route("/api/v10/channels/{id}", get(channel))
            .route(
                "/api/v10/channels/{id}/messages",
                post(create_message).get(history),
            )
            .route(
                "/api/v10/channels/{id}/messages/{mid}",
                patch(edit_message).delete(delete_message),
            )
            .route("/api/v10/channels/{id}/typing", post(typing))
            .route("/api/v10/channels/{id}/threads", post(create_thread))
            .route("/api/v10/guilds/{guild}/members/{user}", get(member))
            .route(
                "/api/v10/interactions/{id}/{token}/callback",
                post(interaction_callback),
            )
            .route("/api/v10/webhooks/{app}/{token}", post(followup))
            .route(
                "/api/v10/webhooks/{app}/{token}/messages/@original",
                patch(edit_original),
            )
            .route(
                "/api/v10/applications/{app}/guilds/{guild}/commands",
                axum::routing::put(overwrite_commands).post(unknown),
            )
            .route("/attachments/{id}/{name}", get(attachment))
            .route("/gateway", get(websocket))
            .fallback(any(unknown))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&inner),
                rate_limit,
            ))
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&inner),
                conform,
            ))
            .with_state(Arc::clone(&inner));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        inner.base.lock().expect("lock").clone_from(&base);
        // The configured channels of the tests' settings, as guild text channels.
        for id in [1001_u64, 1002, 1003] {
            inner
                .channels
                .lock()
                .expect("lock")
                .insert(id, guild_channel_json(id, &format!("channel-{id}")));
        }
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { inner, base }
    }

    /// Makes `GET /channels/{id}` answer with a thread under `parent`.
    pub fn add_thread(&self, id: u64, parent: u64, name: &str) {
        self.inner
            .channels
            .lock()
            .expect("lock")
            .insert(id, thread_json(id, parent, name));
    }

    /// Renames thread `id` (`THREAD_UPDATE` with its new name; lookups answer it too).
    pub fn rename_thread(&self, id: u64, name: &str) {
        let thread = {
            let mut channels = self.inner.channels.lock().expect("lock");
            let thread = channels
                .get_mut(&id)
                .expect("a thread added with add_thread");
            thread["name"] = json!(name);
            thread.clone()
        };
        self.dispatch("THREAD_UPDATE", &thread);
    }

    /// Archives thread `id` (`THREAD_UPDATE` with `thread_metadata.archived`).
    pub fn archive_thread(&self, id: u64) {
        let mut thread = self
            .inner
            .channels
            .lock()
            .expect("lock")
            .get(&id)
            .cloned()
            .expect("a thread added with add_thread");
        thread["thread_metadata"]["archived"] = json!(true);
        // A payload serenity cannot parse would silently become Event::Unknown.
        if let Err(e) = serde_json::from_value::<serenity::all::GuildChannel>(thread.clone()) {
            panic!("serenity cannot parse this thread ({e}): {thread}");
        }
        self.dispatch("THREAD_UPDATE", &thread);
    }

    /// The next `n` message posts fail with `status` (e.g. 429, 500).
    pub fn fail_next_posts(&self, statuses: &[u16]) {
        self.inner
            .post_failures
            .lock()
            .expect("lock")
            .extend(statuses);
    }

    /// The next posts are created, but answered with `statuses` (as when a response is lost
    /// after Discord created the message).
    pub fn lose_next_responses(&self, statuses: &[u16]) {
        self.inner
            .lost_responses
            .lock()
            .expect("lock")
            .extend(statuses);
    }

    /// The next `GET /channels/{id}` lookups fail with `statuses`.
    pub fn fail_next_lookups(&self, statuses: &[u16]) {
        self.inner
            .lookup_failures
            .lock()
            .expect("lock")
            .extend(statuses);
    }

    /// After `n` more posts, posts are held: not answered (nor created) until
    /// [`DiscordServer::release_posts`].
    pub fn hold_posts_after(&self, n: usize) {
        *self.inner.hold_after.lock().expect("lock") = Some(n);
    }

    /// The next posts are rate-limited: 429 with `retry_after` (header and body) of each
    /// value, in seconds.
    pub fn rate_limit_next_posts(&self, waits: &[f64]) {
        self.inner.rate_limits.lock().expect("lock").extend(waits);
    }

    /// The next `n` permission prompts (posts starting with 🔐) are refused with 400, as Discord
    /// refuses a message it finds malformed.
    pub fn refuse_next_prompts(&self, n: u64) {
        self.inner.refuse_prompts.store(n, Ordering::SeqCst);
    }

    /// Makes `user` a member of the guild with `roles`.
    pub fn set_roles(&self, user: u64, roles: &[u64]) {
        self.inner
            .roles
            .lock()
            .expect("lock")
            .insert(user, roles.to_vec());
    }

    /// The most history reads that were under way at once: in all, and of one channel.
    pub fn history_peak(&self) -> (usize, usize) {
        *self.inner.history_peak.lock().expect("lock")
    }

    /// History reads take `delay` from now on.
    pub fn slow_history(&self, delay: Duration) {
        *self.inner.history_delay.lock().expect("lock") = delay;
    }

    /// Enforces Discord-style per-route limits from now on: at most `requests` per `window`
    /// per bucket (a route's method and path with the channel it names), with the
    /// `X-RateLimit-*` headers of `reference/rate-limits.mdx` on every answer, and 429 beyond.
    pub fn enforce_rate_limits(&self, requests: usize, window: Duration) {
        *self.inner.limits.lock().expect("lock") = Some((requests, window));
    }

    /// The next message edits (`PATCH …/messages/{id}`) are refused with 429 and each
    /// `retry_after` (seconds), as Discord answers a route whose bucket another client emptied.
    pub fn rate_limit_next_edits(&self, waits: &[f64]) {
        self.inner.edit_limits.lock().expect("lock").extend(waits);
    }

    /// Requests refused with 429 by the per-route limits.
    pub fn rate_limited(&self) -> u64 {
        self.inner.limited.load(Ordering::SeqCst)
    }

    /// Lets held posts through.
    pub fn release_posts(&self) {
        *self.inner.hold_after.lock().expect("lock") = None;
    }

    /// Every REST request so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.requests.lock().expect("lock").clone()
    }

    /// Messages created in `channel` (successful posts), in order.
    pub fn posts(&self, channel: u64) -> Vec<Recorded> {
        let path = format!("/api/v10/channels/{channel}/messages");
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path == path && r.created)
            .collect()
    }

    /// Replies posted in `channel` (not progress messages, "queued" notices or pings), in
    /// order.
    pub fn answers(&self, channel: u64) -> Vec<Recorded> {
        self.posts(channel)
            .into_iter()
            .filter(|r| !is_decoration(&content(r)))
            .collect()
    }

    /// The text of the replies posted in `channel`.
    pub fn answer_texts(&self, channel: u64) -> Vec<String> {
        self.answers(channel).iter().map(content).collect()
    }

    /// Gateway frames serenity sent (IDENTIFY, RESUME, heartbeats).
    pub fn frames(&self) -> Vec<Value> {
        self.inner.frames.lock().expect("lock").clone()
    }

    pub fn readies(&self) -> u64 {
        self.inner.readies.load(Ordering::SeqCst)
    }

    pub fn resumes(&self) -> u64 {
        self.inner.resumes.load(Ordering::SeqCst)
    }

    /// Waits until `cond` holds for the server's state.
    pub async fn wait(&self, what: &str, mut cond: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !cond(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; what differed from Discord's API so far: {:#?}",
                self.violations()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for a message posted in `channel` that satisfies `pred`; returns the first.
    pub async fn post_where(
        &self,
        channel: u64,
        what: &str,
        pred: impl Fn(&Recorded) -> bool,
    ) -> Recorded {
        self.wait(what, |srv| srv.posts(channel).iter().any(&pred))
            .await;
        self.posts(channel)
            .into_iter()
            .find(|r| pred(r))
            .expect("the post waited for")
    }

    /// Waits for a reply in `channel` whose text satisfies `pred`; returns its text.
    pub async fn answer_where(
        &self,
        channel: u64,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        self.wait(what, |srv| {
            srv.answer_texts(channel).iter().any(|t| pred(t))
        })
        .await;
        self.answer_texts(channel)
            .into_iter()
            .find(|t| pred(t))
            .expect("the answer waited for")
    }

    /// Waits for a gateway session (READY sent).
    pub async fn wait_ready(&self, n: u64) {
        self.wait("READY", |s| s.readies() >= n && s.connected())
            .await;
    }

    fn connected(&self) -> bool {
        self.inner.connection.lock().expect("lock").is_some()
    }

    /// An attachment for a message payload (`attachments: [...]`), served by this server;
    /// `size` is what the payload claims (normally the length of `bytes`).
    pub fn attachment(&self, name: &str, bytes: &[u8], content_type: &str, size: usize) -> Value {
        let id = snowflake(&self.inner);
        let path = format!("/attachments/{id}/{}", urlencode(name));
        self.inner
            .attachments
            .lock()
            .expect("lock")
            .insert(path.clone(), bytes.to_vec());
        json!({"id": id.to_string(), "filename": name, "size": size,
               "url": format!("{}{path}", self.base), "proxy_url": format!("{}{path}", self.base),
               "content_type": content_type})
    }

    /// Whether a bot is connected to the gateway.
    pub fn is_connected(&self) -> bool {
        self.connected()
    }

    /// Sends a dispatch event on the current gateway connection.
    pub fn dispatch(&self, event: &str, data: &Value) {
        note_dispatch(&self.inner, event, data);
        let seq = self.inner.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let frame = json!({"op": 0, "s": seq, "t": event, "d": data.clone()});
        let conn = self.inner.connection.lock().expect("lock");
        conn.as_ref()
            .expect("gateway connected")
            .send(WsCommand::Send(frame))
            .expect("connection alive");
    }

    /// Injects a guild message of Discord message type `kind` (0 ordinary, 19 reply, 18 thread
    /// created, 4 channel renamed, 6 pinned, 7 member joined…); returns its id.
    pub fn say_kind(&self, channel: u64, author: u64, content: &str, kind: u8) -> u64 {
        self.say_with(channel, author, content, |m| m["type"] = json!(kind))
    }

    /// Injects a guild message; returns its id.
    pub fn say(&self, channel: u64, author: u64, content: &str) -> u64 {
        self.say_with(channel, author, content, |_| {})
    }

    /// Injects a guild message after `edit` adjusts the payload; returns its id.
    pub fn say_with(
        &self,
        channel: u64,
        author: u64,
        content: &str,
        edit: impl FnOnce(&mut Value),
    ) -> u64 {
        let id = snowflake(&self.inner);
        let mut data = gateway_message(
            &self.inner,
            message_json(id, channel, author, false, content),
        );
        edit(&mut data);
        self.keep(channel, &data);
        // No bot connected: it is only in the history, as on Discord while a bot is down (or
        // one that is dying: what is in flight on its connection is lost with it).
        let seq = self.inner.seq.fetch_add(1, Ordering::SeqCst) + 1;
        note_dispatch(&self.inner, "MESSAGE_CREATE", &data);
        let frame = json!({"op": 0, "s": seq, "t": "MESSAGE_CREATE", "d": data});
        if let Some(conn) = self.inner.connection.lock().expect("lock").as_ref() {
            let _ = conn.send(WsCommand::Send(frame));
        }
        id
    }

    /// Waits until the bot has read the history of each of `channels` since its latest
    /// `READY` (its catch-up), so a message said next is plainly live.
    pub async fn wait_histories_read(&self, channels: &[u64]) {
        let readies = usize::try_from(self.readies()).expect("count");
        self.wait("the catch-up's history reads", |s| {
            let reads = s.requests();
            channels.iter().all(|c| {
                let path = format!("/api/v10/channels/{c}/messages");
                reads
                    .iter()
                    .filter(|r| r.method == "GET" && r.path == path)
                    .count()
                    >= readies
            })
        })
        .await;
    }

    /// Posts a guild message whose `MESSAGE_CREATE` has not reached the bot yet: it is in the
    /// history only (deliver it later with [`Self::replay`]); returns its id.
    pub fn say_unannounced(&self, channel: u64, author: u64, content: &str) -> u64 {
        let id = snowflake(&self.inner);
        let data = gateway_message(
            &self.inner,
            message_json(id, channel, author, false, content),
        );
        self.keep(channel, &data);
        id
    }

    /// Delivers message `id` of `channel` again (as a resumed gateway session may).
    pub fn replay(&self, channel: u64, id: u64) {
        let message = self
            .history(channel)
            .into_iter()
            .find(|m| m["id"].as_str().and_then(|s| s.parse::<u64>().ok()) == Some(id))
            .expect("a message of this channel");
        self.dispatch("MESSAGE_CREATE", &gateway_message(&self.inner, message));
    }

    /// Every message of `channel`, oldest first (the users' and the bot's).
    pub fn history(&self, channel: u64) -> Vec<Value> {
        self.inner
            .history
            .lock()
            .expect("lock")
            .get(&channel)
            .cloned()
            .unwrap_or_default()
    }

    fn keep(&self, channel: u64, message: &Value) {
        let mut kept = message.clone();
        // History is REST's message object: no `guild_id`, no `member` (only the gateway's
        // MESSAGE_CREATE adds them).
        if let Some(m) = kept.as_object_mut() {
            m.remove("member");
            m.remove("guild_id");
        }
        self.inner
            .history
            .lock()
            .expect("lock")
            .entry(channel)
            .or_default()
            .push(kept);
    }

    /// A click by `user` on the button `custom_id` of the bot's message `message` (a recorded
    /// post) in `channel`: dispatches `INTERACTION_CREATE` as Discord does; returns the
    /// interaction's token.
    pub fn click(&self, channel: u64, message: &Value, custom_id: &str, user: u64) -> String {
        self.interact(
            channel,
            message,
            &json!({"custom_id": custom_id, "component_type": 2}),
            user,
        )
    }

    /// A choice of `values` by `user` in the select menu `custom_id` of message `message`.
    pub fn select(
        &self,
        channel: u64,
        message: &Value,
        custom_id: &str,
        values: &[&str],
        user: u64,
    ) -> String {
        let data = json!({"custom_id": custom_id, "component_type": 3, "values": values});
        self.interact(channel, message, &data, user)
    }

    /// Dispatches a component interaction with `data`; returns its token.
    fn interact(&self, channel: u64, message: &Value, data: &Value, user: u64) -> String {
        self.interaction(channel, 3, Some(message), data, user)
    }

    /// `/claude SUB` by `user` in `channel`, with `options` (`[{"type": 3, "name": …,
    /// "value": …}]`); returns the interaction's token.
    pub fn command(&self, channel: u64, user: u64, sub: &str, options: &Value) -> String {
        let data = json!({"id": "777", "name": "claude", "type": 1,
                          "options": [{"type": 1, "name": sub, "options": options}]});
        self.interaction(channel, 2, None, &data, user)
    }

    /// `/claude GROUP SUB` by `user` in `channel`, with `options`; returns the interaction's
    /// token.
    pub fn command_in_group(
        &self,
        channel: u64,
        user: u64,
        group: &str,
        sub: &str,
        options: &Value,
    ) -> String {
        let data = json!({"id": "777", "name": "claude", "type": 1,
                          "options": [{"type": 2, "name": group, "options": [
                              {"type": 1, "name": sub, "options": options}]}]});
        self.interaction(channel, 2, None, &data, user)
    }

    /// Autocomplete while `user` types `typed` into option `option` of `/claude SUB`.
    pub fn autocomplete(
        &self,
        channel: u64,
        user: u64,
        sub: &str,
        option: &str,
        typed: &str,
    ) -> String {
        let data = json!({"id": "777", "name": "claude", "type": 1,
                          "options": [{"type": 1, "name": sub, "options": [
                              {"type": 3, "name": option, "value": typed, "focused": true}]}]});
        self.interaction(channel, 4, None, &data, user)
    }

    /// Dispatches an interaction of Discord type `kind`; returns its token.
    fn interaction(
        &self,
        channel: u64,
        kind: u8,
        message: Option<&Value>,
        data: &Value,
        user: u64,
    ) -> String {
        let n = snowflake(&self.inner);
        let token = format!("itoken-{n}");
        self.inner
            .interactions
            .lock()
            .expect("lock")
            .insert(token.clone(), (false, channel));
        self.inner
            .dispatched
            .lock()
            .expect("lock")
            .insert(token.clone(), Instant::now());
        let mut data = json!({
            "id": n.to_string(), "application_id": "555555555555555555", "type": kind,
            "data": data,
            "guild_id": GUILD_ID.to_string(), "channel_id": channel.to_string(),
            // In a guild Discord sends `member` (with the user and their permissions), not `user`.
            "member": interaction_member(user),
            "token": token, "version": 1, "locale": "en-US", "guild_locale": "en-US",
            "app_permissions": "2248473465835073", "context": 0,
            "authorizing_integration_owners": {"0": GUILD_ID.to_string()},
            "entitlements": [], "attachment_size_limit": 26_214_400
        });
        if let Some(m) = message {
            data["message"] = m.clone();
        }
        // A payload serenity cannot parse would silently become Event::Unknown.
        if let Err(e) = serde_json::from_value::<serenity::all::Interaction>(data.clone()) {
            panic!("serenity cannot parse this interaction ({e}): {data}");
        }
        self.dispatch("INTERACTION_CREATE", &data);
        token
    }

    /// The callback the bot made for the interaction with `token`, once it has.
    pub async fn callback(&self, token: &str) -> Recorded {
        let path = "/callback";
        self.wait("the interaction's callback", |srv| {
            srv.requests()
                .iter()
                .any(|r| r.path.contains(token) && r.path.ends_with(path))
        })
        .await;
        self.requests()
            .into_iter()
            .find(|r| r.path.contains(token) && r.path.ends_with(path))
            .expect("callback")
    }

    /// The message a recorded post created (as the server answered it).
    pub fn message_of(r: &Recorded, channel: u64) -> Value {
        let id = r.body["__id"].as_u64().unwrap_or_default();
        message_json(id, channel, BOT_ID, true, &content(r))
    }

    /// Ends the gateway session for good (`INVALID_SESSION`, not resumable): serenity waits
    /// ~5 s and identifies afresh. Until its new `READY`, messages said are only in the history.
    pub fn invalidate_session(&self) {
        if let Some(conn) = self.inner.connection.lock().expect("lock").take() {
            let _ = conn.send(WsCommand::Send(json!({"op": 9, "d": false})));
        }
    }

    /// Takes the gateway down (the connection closed, new ones refused) or brings it back.
    pub fn gateway_down(&self, down: bool) {
        self.inner.gateway_down.store(down, Ordering::SeqCst);
        if down {
            self.drop_connection(1001);
        }
    }

    /// Closes the gateway connection with `code` (serenity reconnects and resumes).
    pub fn drop_connection(&self, code: u16) {
        if let Some(conn) = self.inner.connection.lock().expect("lock").take() {
            let _ = conn.send(WsCommand::Close(code));
        }
    }
}

/// A new id: a snowflake of the current time, as Discord's, and larger than every id before.
fn snowflake(inner: &Inner) -> u64 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let now = now_ms.saturating_sub(DISCORD_EPOCH_MS) << 22;
    let mut prev = inner.next_id.load(Ordering::SeqCst);
    loop {
        let next = now.max(prev + 1);
        match inner
            .next_id
            .compare_exchange(prev, next, Ordering::SeqCst, Ordering::SeqCst)
        {
            Ok(_) => return next,
            Err(actual) => prev = actual,
        }
    }
}

/// A message as REST answers it (Discord's `MessageResponse`: no `guild_id`, no `member`).
fn message_json(id: u64, channel: u64, author: u64, bot: bool, content: &str) -> Value {
    json!({
        "id": id.to_string(), "channel_id": channel.to_string(),
        "author": user_json(author, if bot { "coordinator" } else { "someone" }, bot),
        "content": content, "timestamp": "2026-11-23T12:00:00+00:00", "edited_timestamp": null,
        "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
        "attachments": [], "embeds": [], "components": [], "pinned": false, "flags": 0, "type": 0
    })
}

/// `message` as the gateway's `MESSAGE_CREATE` carries it in a guild: with `guild_id` and the
/// author's partial `member` (no `user`), with the roles [`DiscordServer::set_roles`] gave.
fn gateway_message(inner: &Inner, mut message: Value) -> Value {
    let author = message["author"]["id"]
        .as_str()
        .and_then(|a| a.parse::<u64>().ok());
    let roles: Vec<String> = author
        .and_then(|a| inner.roles.lock().expect("lock").get(&a).cloned())
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect();
    message["guild_id"] = json!(GUILD_ID.to_string());
    message["member"] = json!({"roles": roles, "joined_at": "2026-01-01T00:00:00+00:00",
        "deaf": false, "mute": false, "flags": 0, "pending": false, "nick": null, "avatar": null,
        "banner": null, "premium_since": null, "communication_disabled_until": null});
    message
}

/// A user object (Discord's `UserResponse`).
pub fn user_json(id: u64, name: &str, bot: bool) -> Value {
    let mut user = json!({"id": id.to_string(), "username": name, "discriminator": "0",
        "avatar": null, "public_flags": 0, "flags": 0, "global_name": null, "primary_guild": null});
    if bot {
        user["bot"] = json!(true);
    }
    user
}

/// A guild member (Discord's `GuildMemberResponse`), with `roles`.
fn member_json(user: u64, roles: &[u64]) -> Value {
    json!({"user": user_json(user, "someone", false),
        "roles": roles.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "joined_at": "2026-01-01T00:00:00+00:00", "deaf": false, "mute": false, "flags": 0,
        "pending": false, "nick": null, "avatar": null, "banner": null, "premium_since": null,
        "communication_disabled_until": null})
}

/// The invoking member of an interaction: a member with its `permissions`.
fn interaction_member(user: u64) -> Value {
    let mut member = member_json(user, &[]);
    member["permissions"] = json!("2248473465835073");
    member
}

/// A guild text channel (Discord's `GuildChannelResponse`).
fn guild_channel_json(id: u64, name: &str) -> Value {
    json!({"id": id.to_string(), "type": 0, "guild_id": GUILD_ID.to_string(), "name": name,
        "flags": 0, "position": 0, "parent_id": null, "last_message_id": null,
        "rate_limit_per_user": 0, "topic": null, "nsfw": false, "permission_overwrites": []})
}

/// A public thread under `parent` (Discord's `ThreadResponse`).
fn thread_json(id: u64, parent: u64, name: &str) -> Value {
    json!({"id": id.to_string(), "type": 11, "guild_id": GUILD_ID.to_string(),
        "parent_id": parent.to_string(), "name": name, "flags": 0, "owner_id": "1",
        "message_count": 0, "member_count": 1, "total_message_sent": 0, "last_message_id": null,
        "rate_limit_per_user": 0,
        "thread_metadata": {"archived": false, "auto_archive_duration": 1440,
                            "archive_timestamp": "2026-11-23T10:00:00+00:00", "locked": false}})
}

/// Records a request that created a message.
fn record_created(
    inner: &Inner,
    method: &str,
    path: String,
    body: Value,
    files: Vec<(String, String, Vec<u8>)>,
    headers: &HeaderMap,
    status: u16,
) {
    record(inner, method, path, body, files, headers, status);
    if let Some(last) = inner.requests.lock().expect("lock").last_mut() {
        last.created = true;
    }
}

fn record(
    inner: &Inner,
    method: &str,
    path: String,
    body: Value,
    files: Vec<(String, String, Vec<u8>)>,
    headers: &HeaderMap,
    status: u16,
) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    inner.requests.lock().expect("lock").push(Recorded {
        method: method.into(),
        path,
        body,
        files,
        auth,
        status,
        created: false,
        at: Instant::now(),
        at_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    });
}

/// Records what is wrong with a dispatch the server is about to send.
fn note_dispatch(inner: &Inner, event: &str, data: &Value) {
    let found = check_dispatch(event, data);
    inner.violations.lock().expect("lock").extend(found);
}

/// An injected 429 for an edit ([`DiscordServer::rate_limit_next_edits`]), recorded with the
/// text it would have shown.
async fn refuse_edit(inner: &Inner, req: Request, retry: f64) -> Response {
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    let body = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Null);
    record(inner, "PATCH", path, body, Vec::new(), &headers, 429);
    let mut r = (
        StatusCode::TOO_MANY_REQUESTS,
        Json(json!({"message": "You are being rate limited.", "retry_after": retry, "global": false, "code": 0})),
    )
        .into_response();
    for (name, value) in [
        ("retry-after", format!("{}", retry.ceil())),
        ("x-ratelimit-limit", "5".to_string()),
        ("x-ratelimit-remaining", "0".to_string()),
        ("x-ratelimit-reset-after", format!("{retry:.3}")),
        ("x-ratelimit-scope", "shared".to_string()),
    ] {
        if let Ok(v) = value.parse() {
            r.headers_mut().insert(name, v);
        }
    }
    r
}

/// The per-route limits (see [`DiscordServer::enforce_rate_limits`]), for a channel's message
/// routes and typing.
async fn rate_limit(
    State(inner): State<Arc<Inner>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let is_edit = req.method() == Method::PATCH && req.uri().path().contains("/messages/");
    let refused = if is_edit {
        inner.edit_limits.lock().expect("lock").pop_front()
    } else {
        None
    };
    if let Some(retry) = refused {
        return refuse_edit(&inner, req, retry).await;
    }
    let Some((limit, window)) = *inner.limits.lock().expect("lock") else {
        return next.run(req).await;
    };
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches("/api/v10/").split('/').collect();
    let route = match parts.as_slice() {
        ["channels", channel, "messages"] => format!("messages:{channel}"),
        ["channels", channel, "messages", _] => format!("message:{channel}"),
        ["channels", channel, "typing"] => format!("typing:{channel}"),
        _ => return next.run(req).await,
    };
    if req.method() == Method::GET {
        return next.run(req).await;
    }
    let bucket = format!("{} {route}", req.method());
    let (remaining, reset_after) = {
        let mut buckets = inner.buckets.lock().expect("lock");
        let now = Instant::now();
        let entry = buckets.entry(bucket.clone()).or_insert((now, 0));
        if now.duration_since(entry.0) >= window {
            *entry = (now, 0);
        }
        let reset_after = window.saturating_sub(now.duration_since(entry.0));
        if entry.1 >= limit {
            (None, reset_after)
        } else {
            entry.1 += 1;
            (Some(limit - entry.1), reset_after)
        }
    };
    let headers = |r: &mut Response, remaining: usize| {
        let h = r.headers_mut();
        let reset_at = std::time::SystemTime::now() + reset_after;
        let epoch = reset_at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        for (name, value) in [
            ("x-ratelimit-limit", limit.to_string()),
            ("x-ratelimit-remaining", remaining.to_string()),
            ("x-ratelimit-reset", format!("{epoch:.3}")),
            (
                "x-ratelimit-reset-after",
                format!("{:.3}", reset_after.as_secs_f64()),
            ),
            ("x-ratelimit-bucket", bucket.clone()),
        ] {
            if let Ok(v) = value.parse() {
                h.insert(name, v);
            }
        }
    };
    let Some(remaining) = remaining else {
        inner.limited.fetch_add(1, Ordering::SeqCst);
        let retry = reset_after.as_secs_f64();
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            Json(json!({"message": "You are being rate limited.", "retry_after": retry, "global": false, "code": 0})),
        )
            .into_response();
        headers(&mut r, 0);
        if let Ok(v) = format!("{}", retry.ceil()).parse() {
            r.headers_mut().insert("retry-after", v);
        }
        if let Ok(v) = "user".parse() {
            r.headers_mut().insert("x-ratelimit-scope", v);
        }
        return r;
    };
    let mut r = next.run(req).await;
    headers(&mut r, remaining);
    r
}

/// `POST /channels/{id}/threads`: a public thread under channel `id`, without a message
/// (`CreateTextThreadWithoutMessageRequest`), announced with `THREAD_CREATE` as Discord does.
async fn create_thread(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<u64>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    record(
        &inner,
        "POST",
        format!("/api/v10/channels/{id}/threads"),
        body.clone(),
        Vec::new(),
        &headers,
        201,
    );
    let thread_id = snowflake(&inner);
    let name = body["name"].as_str().unwrap_or("thread");
    let thread = thread_json(thread_id, id, name);
    inner
        .channels
        .lock()
        .expect("lock")
        .insert(thread_id, thread.clone());
    let mut created = thread.clone();
    created["newly_created"] = json!(true);
    let seq = inner.seq.fetch_add(1, Ordering::SeqCst) + 1;
    note_dispatch(&inner, "THREAD_CREATE", &created);
    let frame = json!({"op": 0, "s": seq, "t": "THREAD_CREATE", "d": created});
    if let Some(conn) = inner.connection.lock().expect("lock").as_ref() {
        let _ = conn.send(WsCommand::Send(frame));
    }
    (StatusCode::CREATED, Json(thread)).into_response()
}

/// Checks every REST request the service sends, and every answer the server gives, against
/// Discord's OpenAPI spec (`support::openapi`); what differs is kept for the test to fail on.
async fn conform(
    State(inner): State<Arc<Inner>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path().to_string();
    if !path.starts_with("/api/v10/") {
        return next.run(req).await;
    }
    let method = req.method().as_str().to_string();
    let query: Vec<(String, String)> = req
        .uri()
        .query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default();
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let headers = parts.headers.clone();
    let sent = if bytes.is_empty() {
        None
    } else {
        let mut copy = Request::new(axum::body::Body::from(bytes.clone()));
        *copy.headers_mut() = headers.clone();
        Some(read_post(copy, &headers).await.0)
    };
    let mut found = Spec::get().check_request(&method, &path, &query, sent.as_ref());
    // The original parts: they carry the matched route's parameters.
    let response = next
        .run(Request::from_parts(parts, axum::body::Body::from(bytes)))
        .await;
    let status = response.status().as_u16();
    let (rparts, rbody) = response.into_parts();
    let answer = axum::body::to_bytes(rbody, usize::MAX)
        .await
        .unwrap_or_default();
    let answered = if answer.is_empty() {
        None
    } else {
        match serde_json::from_slice::<Value>(&answer) {
            Ok(v) => Some(v),
            Err(e) => {
                found.push(format!(
                    "{method} {path} {status}: an answer that is not JSON ({e})"
                ));
                None
            }
        }
    };
    found.extend(Spec::get().check_response(&method, &path, status, answered.as_ref()));
    inner.violations.lock().expect("lock").extend(found);
    Response::from_parts(rparts, axum::body::Body::from(answer))
}

async fn gateway_url(State(inner): State<Arc<Inner>>) -> Json<Value> {
    let base = inner.base.lock().expect("lock").replace("http://", "ws://");
    Json(json!({"url": format!("{base}/gateway")}))
}

async fn gateway_bot(State(inner): State<Arc<Inner>>) -> Json<Value> {
    let base = inner.base.lock().expect("lock").replace("http://", "ws://");
    Json(json!({"url": format!("{base}/gateway"), "shards": 1,
        "session_start_limit": {"total": 1000, "remaining": 1000, "reset_after": 0, "max_concurrency": 1}}))
}

async fn me() -> Json<Value> {
    let mut me = user_json(BOT_ID, "coordinator", true);
    me["mfa_enabled"] = json!(false);
    me["locale"] = json!("en-US");
    Json(me)
}

async fn channel(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> Response {
    // The configured channels are looked up at every READY (registering /claude): failures
    // set up by a test are for the channels it looks up itself.
    let failure = if (1001..=1003).contains(&id) {
        None
    } else {
        inner.lookup_failures.lock().expect("lock").pop_front()
    };
    let found = inner.channels.lock().expect("lock").get(&id).cloned();
    let status = failure.unwrap_or(if found.is_some() { 200 } else { 404 });
    record(
        &inner,
        "GET",
        format!("/api/v10/channels/{id}"),
        Value::Null,
        Vec::new(),
        &headers,
        status,
    );
    match (failure, found) {
        (None, Some(c)) => Json(c).into_response(),
        _ => error_response(status),
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `GET /guilds/{guild}/members/{user}`: the member with their roles, or 404 (10007) for a
/// user who is not one.
async fn member(
    State(inner): State<Arc<Inner>>,
    Path((guild, user)): Path<(u64, u64)>,
    headers: HeaderMap,
) -> Response {
    let roles = inner.roles.lock().expect("lock").get(&user).cloned();
    let path = format!("/api/v10/guilds/{guild}/members/{user}");
    let status = if roles.is_some() { 200 } else { 404 };
    record(
        &inner,
        "GET",
        path,
        Value::Null,
        Vec::new(),
        &headers,
        status,
    );
    match roles {
        Some(roles) => Json(member_json(user, &roles)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "Unknown Member", "code": 10007})),
        )
            .into_response(),
    }
}

/// `GET /attachments/{id}/{name}`: an attachment's bytes (recorded: a test can tell what was
/// downloaded).
async fn attachment(
    State(inner): State<Arc<Inner>>,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let path = format!("/attachments/{id}/{}", urlencode(&name));
    let found = inner.attachments.lock().expect("lock").get(&path).cloned();
    record(
        &inner,
        "GET",
        path,
        Value::Null,
        Vec::new(),
        &headers,
        if found.is_some() { 200 } else { 404 },
    );
    match found {
        Some(bytes) => bytes.into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `GET /channels/{id}/messages?after=ID&limit=N`: the N messages right after ID, newest first.
async fn history(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<u64>,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    {
        let mut now = inner.history_now.lock().expect("lock");
        *now.entry(id).or_default() += 1;
        let (all, one) = (now.values().sum::<usize>(), now[&id]);
        let mut peak = inner.history_peak.lock().expect("lock");
        *peak = (peak.0.max(all), peak.1.max(one));
    }
    let delay = *inner.history_delay.lock().expect("lock");
    tokio::time::sleep(delay).await;
    if let Some(n) = inner.history_now.lock().expect("lock").get_mut(&id) {
        *n -= 1;
    }
    let after: u64 = query.get("after").and_then(|v| v.parse().ok()).unwrap_or(0);
    let limit: usize = query
        .get("limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(50)
        .clamp(1, 100);
    record(
        &inner,
        "GET",
        format!("/api/v10/channels/{id}/messages"),
        json!({"after": after, "limit": limit}),
        Vec::new(),
        &headers,
        200,
    );
    let all = inner.history.lock().expect("lock");
    let mut page: Vec<Value> = all
        .get(&id)
        .map(|h| {
            h.iter()
                .filter(|m| m["id"].as_str().and_then(|s| s.parse::<u64>().ok()) > Some(after))
                .take(limit)
                .cloned()
                .collect()
        })
        .unwrap_or_default();
    page.reverse();
    Json(Value::Array(page)).into_response()
}

/// Waits while posts are held (see [`DiscordServer::hold_posts_after`]).
async fn wait_if_held(inner: &Inner) {
    loop {
        let held = {
            let mut hold = inner.hold_after.lock().expect("lock");
            match hold.as_mut() {
                Some(0) => true,
                Some(n) => {
                    *n -= 1;
                    false
                }
                None => false,
            }
        };
        if !held {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A message post's JSON body (for multipart: `payload_json`) and its files.
async fn read_post(req: Request, headers: &HeaderMap) -> (Value, Vec<(String, String, Vec<u8>)>) {
    let multipart = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/"));
    if multipart {
        let mut form = Multipart::from_request(req, &()).await.expect("multipart");
        let (mut body, mut files) = (Value::Null, Vec::new());
        while let Ok(Some(field)) = form.next_field().await {
            let name = field.name().unwrap_or_default().to_string();
            let file = field.file_name().map(str::to_string);
            let bytes = field.bytes().await.expect("field").to_vec();
            if name == "payload_json" {
                body = serde_json::from_slice(&bytes).expect("payload_json");
            } else {
                files.push((name, file.unwrap_or_default(), bytes));
            }
        }
        (body, files)
    } else {
        let bytes = Bytes::from_request(req, &()).await.expect("body");
        (
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            Vec::new(),
        )
    }
}

/// Whether Discord refuses this message post as malformed (400, 50035): a select menu whose
/// options repeat a value — Discord's own behaviour, which the OpenAPI spec does not state (its
/// options have no `uniqueItems`) — or a prompt the test asked to be refused.
fn refused_as_malformed(inner: &Inner, body: &Value) -> bool {
    let repeated = body["components"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|row| row["components"].as_array().cloned().unwrap_or_default())
        .any(|c| {
            let values: Vec<&Value> = c["options"]
                .as_array()
                .map(|o| o.iter().map(|x| &x["value"]).collect())
                .unwrap_or_default();
            let distinct: std::collections::HashSet<String> =
                values.iter().map(ToString::to_string).collect();
            distinct.len() != values.len()
        });
    let refuse_prompt = body["content"]
        .as_str()
        .is_some_and(|c| c.starts_with("🔐"))
        && inner
            .refuse_prompts
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    repeated || refuse_prompt
}

async fn create_message(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<u64>,
    req: Request,
) -> Response {
    wait_if_held(&inner).await;
    let headers = req.headers().clone();
    let path = format!("/api/v10/channels/{id}/messages");
    let (body, files) = read_post(req, &headers).await;
    let limited = inner.rate_limits.lock().expect("lock").pop_front();
    if let Some(wait) = limited {
        record(&inner, "POST", path, body, files, &headers, 429);
        let body = json!({"message": "You are being rate limited.", "retry_after": wait, "global": false, "code": 0});
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", wait.to_string())],
            Json(body),
        )
            .into_response();
    }
    if let Some(status) = inner.post_failures.lock().expect("lock").pop_front() {
        record(&inner, "POST", path, body, files, &headers, status);
        return error_response(status);
    }
    let mut body = body;
    let content = body["content"].as_str().unwrap_or_default().to_string();
    // Discord's rules: at most 2,000 characters (message.mdx; the OpenAPI spec's `maxLength`
    // says 4000, and the pages win), counted here in UTF-16 units — how Discord counts is settled
    // by neither, so the stricter reading is taken — (50035), and not empty unless files are
    // attached (50006).
    let empty = content.trim().is_empty() && files.is_empty();
    if content.encode_utf16().count() > 2000 || empty {
        record(&inner, "POST", path, body, files, &headers, 400);
        let error = if empty {
            json!({"message": "Cannot send an empty message", "code": 50006})
        } else {
            json!({"message": "Invalid Form Body", "code": 50035})
        };
        return (StatusCode::BAD_REQUEST, Json(error)).into_response();
    }
    if refused_as_malformed(&inner, &body) {
        record(&inner, "POST", path, body, files, &headers, 400);
        let error = json!({"message": "Invalid Form Body", "code": 50035});
        return (StatusCode::BAD_REQUEST, Json(error)).into_response();
    }
    // A nonce seen before with enforce_nonce: the message created then, not a second one.
    let nonce = body["nonce"].as_str().map(str::to_string);
    if let (Some(n), true) = (&nonce, body["enforce_nonce"] == true) {
        let earlier = inner
            .nonces
            .lock()
            .expect("lock")
            .get(&(id, n.clone()))
            .cloned();
        if let Some(message) = earlier {
            record(&inner, "POST", path, body, files, &headers, 200);
            return Json(message).into_response();
        }
    }
    let mid = snowflake(&inner);
    // Kept with the recording, so a test can click the message's buttons.
    body["__id"] = json!(mid);
    let mut message = message_json(mid, id, BOT_ID, true, &content);
    if let Some(reference) = body["message_reference"]["message_id"].as_str() {
        message["message_reference"] = json!({"type": 0, "message_id": reference, "channel_id": id.to_string(),
                   "guild_id": GUILD_ID.to_string()});
    }
    {
        let mut all = inner.history.lock().expect("lock");
        all.entry(id).or_default().push(message.clone());
    }
    if let Some(n) = nonce {
        inner
            .nonces
            .lock()
            .expect("lock")
            .insert((id, n), message.clone());
    }
    let lost = inner.lost_responses.lock().expect("lock").pop_front();
    record_created(
        &inner,
        "POST",
        path,
        body,
        files,
        &headers,
        lost.unwrap_or(200),
    );
    match lost {
        Some(status) => error_response(status),
        None => Json(message).into_response(),
    }
}

/// `POST /interactions/{id}/{token}/callback`: within 3 s of the event (receiving-and-
/// responding.mdx; later, the token is invalid: 404, code 10062) and once (a second is a 400,
/// code 40060 — Discord's behaviour as SERENITY-LOCAL.md records it; neither the spec nor the
/// pages give the codes).
async fn interaction_callback(
    State(inner): State<Arc<Inner>>,
    Path((id, token)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let path = format!("/api/v10/interactions/{id}/{token}/callback");
    let too_late = inner
        .dispatched
        .lock()
        .expect("lock")
        .get(&token)
        .is_some_and(|t| t.elapsed() > Duration::from_secs(3));
    let status = {
        let mut all = inner.interactions.lock().expect("lock");
        match all.get_mut(&token) {
            None => 404,
            Some(_) if too_late => 404,
            Some((answered, _)) if *answered => 400,
            Some((answered, _)) => {
                *answered = true;
                204
            }
        }
    };
    record(&inner, "POST", path, body, Vec::new(), &headers, status);
    match status {
        204 => StatusCode::NO_CONTENT.into_response(),
        400 => (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": "Interaction has already been acknowledged.", "code": 40060})),
        )
            .into_response(),
        _ => (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "Unknown interaction", "code": 10062})),
        )
            .into_response(),
    }
}

/// `POST /webhooks/{app}/{token}`: a follow-up, only after the interaction's callback.
async fn followup(
    State(inner): State<Arc<Inner>>,
    Path((app, token)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let path = format!("/api/v10/webhooks/{app}/{token}");
    webhook_message(&inner, "POST", path, &token, body, &headers)
}

/// `PATCH /webhooks/{app}/{token}/messages/@original`: fills in a deferred answer, only after
/// the interaction's callback.
async fn edit_original(
    State(inner): State<Arc<Inner>>,
    Path((app, token)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let path = format!("/api/v10/webhooks/{app}/{token}/messages/@original");
    webhook_message(&inner, "PATCH", path, &token, body, &headers)
}

/// A message through an interaction's webhook: recorded; a 404 (10015) before its callback.
fn webhook_message(
    inner: &Inner,
    method: &str,
    path: String,
    token: &str,
    body: Value,
    headers: &HeaderMap,
) -> Response {
    let (answered, channel) = inner
        .interactions
        .lock()
        .expect("lock")
        .get(token)
        .copied()
        .unwrap_or((false, 1));
    let content = body["content"].as_str().unwrap_or_default().to_string();
    let status = if answered { 200 } else { 404 };
    record(inner, method, path, body, Vec::new(), headers, status);
    if !answered {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"message": "Unknown Webhook", "code": 10015})),
        )
            .into_response();
    }
    let mid = snowflake(inner);
    Json(message_json(mid, channel, BOT_ID, true, &content)).into_response()
}

/// `PUT /applications/{app}/guilds/{guild}/commands`: a bulk overwrite; answers the commands
/// as Discord stores them (with ids).
async fn overwrite_commands(
    State(inner): State<Arc<Inner>>,
    Path((app, guild)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let path = format!("/api/v10/applications/{app}/guilds/{guild}/commands");
    record(&inner, "PUT", path, body.clone(), Vec::new(), &headers, 200);
    let stored: Vec<Value> = body
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut c| {
            c["id"] = json!(snowflake(&inner).to_string());
            c["application_id"] = json!(app);
            c["guild_id"] = json!(guild);
            c["version"] = json!(snowflake(&inner).to_string());
            c["type"] = json!(1);
            c["default_member_permissions"] = Value::Null;
            c
        })
        .collect();
    Json(Value::Array(stored)).into_response()
}

/// What Discord answers with `status`.
fn error_response(status: u16) -> Response {
    let body = match status {
        429 => {
            json!({"message": "You are being rate limited.", "retry_after": 0.05, "global": false, "code": 0})
        }
        403 => json!({"message": "Missing Permissions", "code": 50013}),
        404 => json!({"message": "Unknown Channel", "code": 10003}),
        400 => json!({"message": "Invalid Form Body", "code": 50035}),
        _ => json!({"message": "Internal Server Error", "code": 0}),
    };
    (
        StatusCode::from_u16(status).expect("status"),
        [("retry-after", "0.05")],
        Json(body),
    )
        .into_response()
}

async fn edit_message(
    State(inner): State<Arc<Inner>>,
    Path((id, mid)): Path<(u64, u64)>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Json<Value> {
    let content = body["content"].as_str().unwrap_or_default().to_string();
    record(
        &inner,
        "PATCH",
        format!("/api/v10/channels/{id}/messages/{mid}"),
        body,
        Vec::new(),
        &headers,
        200,
    );
    Json(message_json(mid, id, BOT_ID, true, &content))
}

async fn delete_message(
    State(inner): State<Arc<Inner>>,
    Path((id, mid)): Path<(u64, u64)>,
    headers: HeaderMap,
) -> StatusCode {
    record(
        &inner,
        "DELETE",
        format!("/api/v10/channels/{id}/messages/{mid}"),
        Value::Null,
        Vec::new(),
        &headers,
        204,
    );
    StatusCode::NO_CONTENT
}

async fn typing(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> StatusCode {
    record(
        &inner,
        "POST",
        format!("/api/v10/channels/{id}/typing"),
        Value::Null,
        Vec::new(),
        &headers,
        204,
    );
    StatusCode::NO_CONTENT
}

async fn unknown(State(inner): State<Arc<Inner>>, method: Method, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let headers = req.headers().clone();
    record(
        &inner,
        method.as_str(),
        path,
        Value::Null,
        Vec::new(),
        &headers,
        404,
    );
    (
        StatusCode::NOT_FOUND,
        Json(json!({"message": "404: Not Found", "code": 0})),
    )
        .into_response()
}

async fn websocket(State(inner): State<Arc<Inner>>, ws: WebSocketUpgrade) -> Response {
    if inner.gateway_down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    ws.on_upgrade(move |socket| session(inner, socket))
}

/// One gateway connection: `HELLO`, then `IDENTIFY` → `READY` or `RESUME` → `RESUMED`, heartbeats acknowledged,
/// injected events sent, until the test drops it or serenity closes it.
async fn session(inner: Arc<Inner>, mut socket: WebSocket) {
    let (tx, mut rx) = unbounded_channel();
    let hello = json!({"op": 10, "d": {"heartbeat_interval": 41250}});
    if socket
        .send(WsMessage::Text(hello.to_string().into()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        tokio::select! {
            frame = socket.recv() => {
                let Some(Ok(frame)) = frame else { break };
                let text = match frame {
                    WsMessage::Text(t) => t.to_string(),
                    WsMessage::Close(_) => break,
                    _ => continue,
                };
                let Ok(v) = serde_json::from_str::<Value>(&text) else { continue };
                inner.frames.lock().expect("lock").push(v.clone());
                let reply = match v["op"].as_u64() {
                    Some(1) => Some(json!({"op": 11})),
                    Some(2) => {
                        let base = inner.base.lock().expect("lock").replace("http://", "ws://");
                        let seq = inner.seq.fetch_add(1, Ordering::SeqCst) + 1;
                        Some(json!({"op": 0, "s": seq, "t": "READY", "d": {
                            "v": 10,
                            "user": user_json(BOT_ID, "coordinator", true),
                            "guilds": [{"id": GUILD_ID.to_string(), "unavailable": true}],
                            "session_id": "test-session",
                            "resume_gateway_url": format!("{base}/gateway"),
                            "application": {"id": "555555555555555555", "flags": 0}
                        }}))
                    }
                    Some(6) => {
                        let seq = inner.seq.fetch_add(1, Ordering::SeqCst) + 1;
                        Some(json!({"op": 0, "s": seq, "t": "RESUMED", "d": {}}))
                    }
                    _ => None,
                };
                if let Some(r) = reply {
                    if let Some(event) = r["t"].as_str() {
                        note_dispatch(&inner, event, &r["d"]);
                    }
                    let op = v["op"].as_u64();
                    if socket.send(WsMessage::Text(r.to_string().into())).await.is_err() {
                        break;
                    }
                    // Only now can the test inject events.
                    match op {
                        Some(2) => {
                            *inner.connection.lock().expect("lock") = Some(tx.clone());
                            inner.readies.fetch_add(1, Ordering::SeqCst);
                        }
                        Some(6) => {
                            *inner.connection.lock().expect("lock") = Some(tx.clone());
                            inner.resumes.fetch_add(1, Ordering::SeqCst);
                        }
                        _ => {}
                    }
                }
            }
            cmd = rx.recv() => match cmd {
                Some(WsCommand::Send(v)) => {
                    if socket.send(WsMessage::Text(v.to_string().into())).await.is_err() {
                        break;
                    }
                }
                Some(WsCommand::Close(code)) => {
                    let _ = socket.send(WsMessage::Close(Some(CloseFrame { code, reason: "test".into() }))).await;
                    break;
                }
                None => break,
            }
        }
    }
    // Gone: messages said from now on are only kept in the history.
    let mut conn = inner.connection.lock().expect("lock");
    if conn.as_ref().is_some_and(|c| c.same_channel(&tx)) {
        *conn = None;
    }
}

/// Whether a message's `content` is the service's decoration of a turn, not an answer: a
/// progress message, a "queued" notice, the mention after a long turn.
pub fn is_decoration(content: &str) -> bool {
    content.starts_with("Working…")
        || content.starts_with("Done —")
        || content.contains("Queued") && (content.starts_with("⏳") || content.starts_with("▶️"))
        || content.starts_with("<@") && content.contains("> done: the answer above took")
}

/// The `content` of a recorded message post or edit.
pub fn content(r: &Recorded) -> String {
    r.body["content"].as_str().unwrap_or_default().to_string()
}
