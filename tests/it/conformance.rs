//! The checks that keep the test server honest (`support::openapi`, `support::gateway_docs`):
//! what they find in payloads Discord would not send or take. Every test that starts the test
//! server is checked the same way when the server is dropped.

use serde_json::{json, Value};

use crate::support::gateway_docs::check_dispatch;
use crate::support::openapi::Spec;

/// A message as `GET /channels/{id}/messages` answers it.
fn history_message() -> Value {
    json!({
        "id": "1300000000000000001", "channel_id": "1001",
        "author": {"id": "42", "username": "someone", "discriminator": "0", "avatar": null,
                   "public_flags": 0, "flags": 0, "global_name": null, "primary_guild": null},
        "content": "hello", "timestamp": "2026-11-23T12:00:00+00:00", "edited_timestamp": null,
        "tts": false, "mention_everyone": false, "mentions": [], "mention_roles": [],
        "attachments": [], "embeds": [], "components": [], "pinned": false, "flags": 0, "type": 0
    })
}

#[test]
fn history_carries_no_guild_id_and_no_member() {
    let spec = Spec::get();
    let path = "/api/v10/channels/1001/messages";
    let plain = Value::Array(vec![history_message()]);
    assert_eq!(
        spec.check_response("GET", path, 200, Some(&plain)),
        Vec::<String>::new()
    );
    // What the old test server sent: the gateway's fields on a REST message.
    let mut kinder = history_message();
    kinder["guild_id"] = json!("777000000000000001");
    kinder["member"] = json!({"roles": []});
    let found = spec.check_response("GET", path, 200, Some(&Value::Array(vec![kinder])));
    assert!(
        found
            .iter()
            .any(|e| e.contains("guild_id: a field the spec does not have")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|e| e.contains("member: a field the spec does not have")),
        "{found:?}"
    );
}

#[test]
fn the_gateway_adds_guild_id_and_member_to_message_create_only() {
    let mut live = history_message();
    live["guild_id"] = json!("777000000000000001");
    live["member"] = json!({"roles": [], "joined_at": "2026-01-01T00:00:00+00:00", "deaf": false, "mute": false});
    assert_eq!(
        check_dispatch("MESSAGE_CREATE", &live),
        Vec::<String>::new()
    );
    // The page's member is partial and lacks the user.
    live["member"]["user"] = json!({"id": "42"});
    assert!(!check_dispatch("MESSAGE_CREATE", &live).is_empty());
    // A message missing what Discord always sends.
    let mut thin = history_message();
    thin.as_object_mut().map(|m| m.remove("edited_timestamp"));
    let found = check_dispatch("MESSAGE_CREATE", &thin);
    assert!(
        found
            .iter()
            .any(|e| e.contains("`edited_timestamp` is required")),
        "{found:?}"
    );
}

#[test]
fn a_guild_interaction_has_a_member_not_a_user() {
    let member = json!({"user": history_message()["author"], "roles": [], "joined_at": "2026-01-01T00:00:00+00:00",
        "deaf": false, "mute": false, "flags": 0, "pending": false, "nick": null, "avatar": null,
        "banner": null, "premium_since": null, "communication_disabled_until": null, "permissions": "0"});
    let mut interaction = json!({
        "id": "5", "application_id": "6", "type": 2, "data": {"id": "7", "name": "claude", "type": 1},
        "guild_id": "777000000000000001", "channel_id": "1001", "member": member, "token": "t",
        "version": 1, "locale": "en-US", "app_permissions": "0", "entitlements": [],
        "authorizing_integration_owners": {"0": "777000000000000001"}, "attachment_size_limit": 26_214_400
    });
    assert_eq!(
        check_dispatch("INTERACTION_CREATE", &interaction),
        Vec::<String>::new()
    );
    interaction["user"] = history_message()["author"].clone();
    assert!(!check_dispatch("INTERACTION_CREATE", &interaction).is_empty());
    interaction
        .as_object_mut()
        .map(|m| m.remove("app_permissions"));
    let found = check_dispatch("INTERACTION_CREATE", &interaction);
    assert!(
        found
            .iter()
            .any(|e| e.contains("`app_permissions` is required")),
        "{found:?}"
    );
}

#[test]
fn the_command_definition_has_only_what_the_spec_takes() {
    let spec = Spec::get();
    let path = "/api/v10/applications/555/guilds/777/commands";
    let ours = json!([actors::discord::commands::definition()]);
    assert_eq!(
        spec.check_request("PUT", path, &[], Some(&ours)),
        Vec::<String>::new()
    );
    // serenity's CreateCommand, which the service used to send, adds fields the spec lacks.
    let builder = serenity::all::CreateCommand::new("claude")
        .description("d")
        .add_option(serenity::all::CreateCommandOption::new(
            serenity::all::CommandOptionType::SubCommand,
            "status",
            "s",
        ));
    let theirs = json!([serde_json::to_value(builder).expect("json")]);
    let found = spec.check_request("PUT", path, &[], Some(&theirs));
    assert!(
        found
            .iter()
            .any(|e| e.contains("nsfw: a field the spec does not have")),
        "{found:?}"
    );
}

#[test]
fn attachment_ids_of_a_post_are_snowflake_strings() {
    let spec = Spec::get();
    let path = "/api/v10/channels/1001/messages";
    let ok = json!({"content": "x", "attachments": [{"id": "0", "filename": "a.txt"}]});
    assert_eq!(
        spec.check_request("POST", path, &[], Some(&ok)),
        Vec::<String>::new()
    );
    let numeric = json!({"content": "x", "attachments": [{"id": 0, "filename": "a.txt"}]});
    assert!(!spec
        .check_request("POST", path, &[], Some(&numeric))
        .is_empty());
}

#[test]
fn unknown_routes_statuses_and_query_parameters_are_errors() {
    let spec = Spec::get();
    assert!(!spec
        .check_request("POST", "/api/v10/nowhere", &[], None)
        .is_empty());
    let query = [("before_or_after".to_string(), "1".to_string())];
    assert!(!spec
        .check_request("GET", "/api/v10/channels/1/messages", &query, None)
        .is_empty());
    let limit = [("limit".to_string(), "101".to_string())];
    assert!(!spec
        .check_request("GET", "/api/v10/channels/1/messages", &limit, None)
        .is_empty());
    // The spec lists no 301 for a message post.
    assert!(!spec
        .check_response("POST", "/api/v10/channels/1/messages", 301, None)
        .is_empty());
}
