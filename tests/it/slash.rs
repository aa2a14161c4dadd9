//! `/claude`: registered once per guild by bulk overwrite, each subcommand answered through the
//! same implementation as the `!` commands, refusals private, autocomplete from the CLI's
//! models and the conversation's sessions — the real serenity client against the test server.

use std::time::Duration;

use serde_json::json;

use crate::support::discord::{DiscordServer, Recorded, GUILD_ID};
use crate::support::{wait_until, TestEnv};
use actors::discord::DiscordConnection;
use claude_coordinator::settings::Settings;
use claude_coordinator::startup::Application;
use secrecy::SecretString;

const ALICE: u64 = 7;
const MALLORY: u64 = 666;
const ALPHA: u64 = 1001;
const BETA: u64 = 1002;
const APP: &str = "555555555555555555";

struct Service {
    _app: Application,
    _conn: DiscordConnection,
    server: DiscordServer,
}

async fn start_with(env: &TestEnv, change: impl FnOnce(&mut Settings)) -> Service {
    let server = DiscordServer::start().await;
    let mut settings = env.settings();
    settings.discord.api_base_url.clone_from(&server.base);
    settings.discord.retry_backoff_ms = 20;
    settings.access.allowed_users = vec![actors::ids::UserId(ALICE)];
    settings.discord.token = Some(SecretString::from("test-bot-token-slash"));
    settings.claude.env.insert(
        "FAKE_CLAUDE_MODELS".into(),
        "opus-from-cli,sonnet-from-cli".into(),
    );
    change(&mut settings);
    let app = Application::build(settings).await.expect("build");
    let conn = app.start_discord().await.expect("gateway starts");
    server.wait_ready(1).await;
    Service {
        _app: app,
        _conn: conn,
        server,
    }
}

fn puts(server: &DiscordServer) -> Vec<Recorded> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/commands"))
        .collect()
}

/// The deferred answer's callback, then the text it was filled in with.
pub(crate) async fn answered(server: &DiscordServer, token: &str) -> (Recorded, String) {
    let callback = server.callback(token).await;
    let path = format!("/api/v10/webhooks/{APP}/{token}/messages/@original");
    server
        .wait("the answer filled in", |s| {
            s.requests().iter().any(|r| r.path == path)
        })
        .await;
    let edit = server
        .requests()
        .into_iter()
        .find(|r| r.path == path)
        .expect("edit");
    let text = edit.body["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    (callback, text)
}

fn ephemeral(callback: &Recorded) -> bool {
    callback.body["data"]["flags"]
        .as_u64()
        .is_some_and(|f| f & 64 != 0)
}

#[actix_rt::test]
async fn claude_is_registered_once_per_guild_by_bulk_overwrite_and_again_on_a_new_session() {
    let env = TestEnv::new();
    let s = start_with(&env, |_| {}).await;
    s.server
        .wait("/claude registered", |srv| !puts(srv).is_empty())
        .await;
    let first = puts(&s.server);
    assert_eq!(first.len(), 1, "one guild for three channels");
    assert_eq!(first[0].method, "PUT", "a bulk overwrite, never a POST");
    assert_eq!(
        first[0].path,
        format!("/api/v10/applications/{APP}/guilds/{GUILD_ID}/commands")
    );
    let names: Vec<&str> = first[0].body[0]["options"]
        .as_array()
        .expect("subcommands")
        .iter()
        .filter_map(|o| o["name"].as_str())
        .collect();
    for sub in [
        "status", "cancel", "new", "model", "mode", "sessions", "resume", "usage", "rules",
    ] {
        assert!(names.contains(&sub), "{sub}: {names:?}");
    }
    // A session that cannot be resumed: a new READY registers again, replacing.
    s.server.invalidate_session();
    s.server.wait_ready(2).await;
    s.server
        .wait("registered again", |srv| puts(srv).len() == 2)
        .await;
    assert!(puts(&s.server).iter().all(|r| r.method == "PUT"));
}

#[actix_rt::test]
async fn each_subcommand_is_answered_within_discords_three_seconds() {
    let env = TestEnv::new();
    let s = start_with(&env, |_| {}).await;
    let token = s.server.command(ALPHA, ALICE, "status", &json!([]));
    let (callback, text) = answered(&s.server, &token).await;
    assert_eq!(callback.status, 204, "acknowledged in time");
    assert_eq!(callback.body["type"], 5, "deferred");
    assert!(ephemeral(&callback), "status is private");
    assert!(text.contains("Idle") && text.contains("alpha"), "{text}");
    assert!(text.contains("permission mode default"), "{text}");

    // A prompt, so there is a session and a cost.
    s.server.say(ALPHA, ALICE, "hello");
    s.server
        .wait("the answer", |srv| {
            srv.answer_texts(ALPHA).iter().any(|t| t == "echo: hello")
        })
        .await;
    let token = s.server.command(ALPHA, ALICE, "usage", &json!([]));
    let usage = answered(&s.server, &token).await.1;
    assert!(usage.contains("this conversation $0.0500"), "{usage}");
    // The warm process was asked too (get_usage).
    assert!(usage.contains("The CLI counts $0.0500"), "{usage}");
    let token = s.server.command(ALPHA, ALICE, "sessions", &json!([]));
    assert!(answered(&s.server, &token).await.1.contains("← current"));
    let token = s.server.command(ALPHA, ALICE, "cancel", &json!([]));
    let (callback, text) = answered(&s.server, &token).await;
    assert!(!ephemeral(&callback), "cancel is for everyone to see");
    assert_eq!(text, "Nothing is running.");
    let token = s.server.command(ALPHA, ALICE, "rules", &json!([]));
    assert!(answered(&s.server, &token)
        .await
        .1
        .contains("No \"always\" rules"));
    let conn = rusqlite::Connection::open(env.db()).expect("db");
    let session: String = conn
        .query_row(
            "SELECT session_id FROM conversations WHERE id = ?1",
            [i64::try_from(ALPHA).expect("id")],
            |r| r.get(0),
        )
        .expect("a session");
    let token = s.server.command(ALPHA, ALICE, "new", &json!([]));
    assert!(answered(&s.server, &token)
        .await
        .1
        .contains("fresh Claude session"));
    let token = s.server.command(
        ALPHA,
        ALICE,
        "resume",
        &json!([{"type": 3, "name": "id", "value": session}]),
    );
    let text = answered(&s.server, &token).await.1;
    assert!(
        text.contains(&format!("continues session `{session}`")),
        "{text}"
    );
    let token = s.server.command(ALPHA, ALICE, "help", &json!([]));
    assert!(answered(&s.server, &token).await.1.contains("/claude"));
    let token = s.server.command(ALPHA, ALICE, "retry", &json!([]));
    assert!(answered(&s.server, &token)
        .await
        .1
        .contains("No interrupted message"));
    let token = s.server.command(ALPHA, ALICE, "model", &json!([]));
    assert!(answered(&s.server, &token).await.1.starts_with("Model:"));
    let token = s.server.command(ALPHA, ALICE, "mode", &json!([]));
    assert!(answered(&s.server, &token)
        .await
        .1
        .contains("Permission mode: `default`"));
    // The ! commands still answer, the same way.
    s.server.say(ALPHA, ALICE, "!usage");
    s.server
        .wait("!usage", |srv| {
            srv.answer_texts(ALPHA)
                .iter()
                .any(|t| t.starts_with("Cost: "))
        })
        .await;
}

#[actix_rt::test]
async fn refusals_are_private_and_nothing_is_run() {
    let env = TestEnv::new();
    let s = start_with(&env, |st| {
        st.access.approvers = Some(vec![actors::ids::UserId(999)]);
        st.channel[1].profile.allow_mode_change = true;
    })
    .await;
    let refused = |token: String| {
        let server = s.server.clone();
        async move {
            let callback = server.callback(&token).await;
            assert_eq!(callback.body["type"], 4, "answered at once");
            assert!(ephemeral(&callback));
            callback.body["data"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        }
    };
    let text = refused(s.server.command(ALPHA, MALLORY, "status", &json!([]))).await;
    assert!(text.contains("allowlist"), "{text}");
    // Alice may talk here, but is not an approver.
    let text = refused(s.server.command(
        BETA,
        ALICE,
        "mode",
        &json!([{"type": 3, "name": "mode", "value": "plan"}]),
    ))
    .await;
    assert!(text.contains("Only approvers"), "{text}");
    let text = refused(s.server.command(
        ALPHA,
        ALICE,
        "rules",
        &json!([{"type": 5, "name": "clear", "value": true}]),
    ))
    .await;
    assert!(text.contains("Only approvers"), "{text}");
    let text = refused(s.server.command(9999, ALICE, "status", &json!([]))).await;
    assert!(text.contains("does not work in this channel"), "{text}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !s.server
            .requests()
            .iter()
            .any(|r| r.path.ends_with("@original")),
        "nothing was routed"
    );
}

fn choices_of(callback: &Recorded) -> Vec<String> {
    callback.body["data"]["choices"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|v| v["value"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[actix_rt::test]
async fn autocomplete_offers_the_clis_models_and_this_conversations_sessions() {
    let env = TestEnv::new();
    let s = start_with(&env, |_| {}).await;
    // Before any live session: the models p_22 recorded.
    let token = s.server.autocomplete(ALPHA, ALICE, "model", "name", "so");
    let callback = s.server.callback(&token).await;
    assert_eq!(callback.body["type"], 8);
    assert_eq!(choices_of(&callback), ["sonnet"]);
    // A live session asks the CLI once (list_models); its answer is offered from then on.
    s.server.say(ALPHA, ALICE, "hello");
    s.server
        .wait("the answer", |srv| {
            srv.answer_texts(ALPHA).iter().any(|t| t == "echo: hello")
        })
        .await;
    wait_until(
        || {
            env.records()
                .iter()
                .any(|r| r["event"] == "control" && r["request"]["subtype"] == "list_models")
        },
        "list_models asked",
    )
    .await;
    let mut offered = Vec::new();
    for _ in 0..50 {
        let token = s
            .server
            .autocomplete(ALPHA, ALICE, "model", "name", "from-cli");
        offered = choices_of(&s.server.callback(&token).await);
        if !offered.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(offered, ["opus-from-cli", "sonnet-from-cli"]);
    // Sessions of this conversation, as the store has them.
    let conn = rusqlite::Connection::open(env.db()).expect("db");
    let session: String = conn
        .query_row(
            "SELECT session_id FROM sessions WHERE conversation_id = ?1",
            [i64::try_from(ALPHA).expect("id")],
            |r| r.get(0),
        )
        .expect("a session");
    let token = s
        .server
        .autocomplete(ALPHA, ALICE, "resume", "id", &session[..4]);
    assert_eq!(choices_of(&s.server.callback(&token).await), [session]);
    // A stranger is offered nothing.
    let token = s.server.autocomplete(ALPHA, MALLORY, "resume", "id", "");
    assert!(choices_of(&s.server.callback(&token).await).is_empty());
}

#[actix_rt::test]
async fn a_model_chosen_with_claude_model_reaches_the_warm_process_with_set_model() {
    let env = TestEnv::new();
    let s = start_with(&env, |_| {}).await;
    s.server.say(ALPHA, ALICE, "warm up");
    s.server
        .wait("the answer", |srv| {
            srv.answer_texts(ALPHA).iter().any(|t| t == "echo: warm up")
        })
        .await;
    let token = s.server.command(
        ALPHA,
        ALICE,
        "model",
        &json!([{"type": 3, "name": "name", "value": "sonnet"}]),
    );
    let (callback, text) = answered(&s.server, &token).await;
    assert!(!ephemeral(&callback));
    assert!(text.contains("`sonnet`"), "{text}");
    wait_until(
        || {
            env.records().iter().any(|r| {
                r["event"] == "control"
                    && r["request"]["subtype"] == "set_model"
                    && r["request"]["model"] == "sonnet"
            })
        },
        "set_model sent to the warm process",
    )
    .await;
    let token = s.server.command(ALPHA, ALICE, "model", &json!([]));
    assert!(answered(&s.server, &token)
        .await
        .1
        .contains("`sonnet` (chosen here"));
}

#[actix_rt::test]
async fn a_mode_chosen_by_an_approver_reaches_the_warm_process_and_bypass_never_does() {
    let env = TestEnv::new();
    let s = start_with(&env, |st| st.channel[1].profile.allow_mode_change = true).await;
    s.server.say(BETA, ALICE, "warm up");
    s.server
        .wait("the answer", |srv| {
            srv.answer_texts(BETA).iter().any(|t| t == "echo: warm up")
        })
        .await;
    let mode = |m: &str| json!([{"type": 3, "name": "mode", "value": m}]);
    let token = s
        .server
        .command(BETA, ALICE, "mode", &mode("bypassPermissions"));
    assert!(answered(&s.server, &token)
        .await
        .1
        .contains("cannot be chosen from chat"));
    let token = s.server.command(BETA, ALICE, "mode", &mode("plan"));
    assert!(answered(&s.server, &token).await.1.contains("`plan`"));
    wait_until(
        || {
            env.records().iter().any(|r| {
                r["event"] == "control"
                    && r["request"]["subtype"] == "set_permission_mode"
                    && r["request"]["mode"] == "plan"
            })
        },
        "set_permission_mode sent to the warm process",
    )
    .await;
    assert!(!env
        .records()
        .iter()
        .any(|r| r["request"]["mode"] == "bypassPermissions"));
    // Alpha does not allow it at all.
    let token = s.server.command(ALPHA, ALICE, "mode", &mode("plan"));
    assert!(answered(&s.server, &token)
        .await
        .1
        .contains("allow_mode_change"));
}

#[actix_rt::test]
async fn schedules_are_added_listed_and_paused_with_the_schedule_group() {
    let env = TestEnv::new();
    let s = start_with(&env, |_| {}).await;
    let token = s.server.command_in_group(
        ALPHA,
        ALICE,
        "schedule",
        "add",
        &json!([{"type": 3, "name": "when", "value": "30 8 * * 1-5"},
                {"type": 3, "name": "prompt", "value": "summarize yesterday's commits"}]),
    );
    let (callback, text) = answered(&s.server, &token).await;
    assert!(!ephemeral(&callback), "a change is shown to the channel");
    assert!(text.contains("Schedule #1 added: `30 8 * * 1-5`"), "{text}");
    let token = s.server.command_in_group(
        ALPHA,
        ALICE,
        "schedule",
        "add",
        &json!([{"type": 3, "name": "when", "value": "0 9 * *"},
                {"type": 3, "name": "prompt", "value": "x"}]),
    );
    let (_, text) = answered(&s.server, &token).await;
    assert!(text.contains("has 4 field(s)"), "{text}");
    let token = s
        .server
        .command_in_group(ALPHA, ALICE, "schedule", "list", &json!([]));
    let (callback, text) = answered(&s.server, &token).await;
    assert!(ephemeral(&callback), "a list is private");
    assert!(
        text.contains("#1 `30 8 * * 1-5`") && text.contains("summarize yesterday's commits"),
        "{text}"
    );
    let token = s.server.command_in_group(
        ALPHA,
        ALICE,
        "schedule",
        "pause",
        &json!([{"type": 4, "name": "id", "value": 1}]),
    );
    let (_, text) = answered(&s.server, &token).await;
    assert!(text.contains("#1 paused"), "{text}");
    // Another conversation does not see or change it.
    let token = s.server.command_in_group(
        BETA,
        ALICE,
        "schedule",
        "remove",
        &json!([{"type": 4, "name": "id", "value": 1}]),
    );
    let (_, text) = answered(&s.server, &token).await;
    assert!(
        text.contains("no schedule #1 in this conversation"),
        "{text}"
    );
    assert!(env.prompts().is_empty(), "nothing ran");
}
