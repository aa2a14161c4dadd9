//! Gateway payloads as Discord's own pages describe them (`../shared/discord/reference/`): the
//! test server checks every dispatch it sends against them before serenity sees it.
//!
//! The OpenAPI spec covers REST only, so an event is checked against the field table of its page
//! (a field without `?` is required, one not in the table is an error) and, where the page says
//! the payload is a REST object (a message, a channel, a user), against that object's schema in
//! the spec, with the extra fields the page lists.

use std::collections::BTreeSet;

use serde_json::Value;

use super::openapi::Spec;

/// One row of a field table: its name and whether it may be left out.
#[derive(Debug, Clone)]
struct Field {
    name: String,
    optional: bool,
}

/// The field table under the heading `heading` of `page` in `../shared/discord/reference/`.
fn table(page: &str, heading: &str) -> Vec<Field> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/discord/reference")
        .join(page);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("Discord's page {}: {e}", path.display()));
    let mut lines = text.lines().skip_while(|l| l.trim() != heading).skip(1);
    let rows: Vec<&str> = lines
        .by_ref()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert!(!rows.is_empty(), "no table under {heading:?} in {page}");
    rows.iter()
        .skip(2)
        .filter_map(|row| {
            let cell = row.trim_matches('|').split('|').next()?.trim();
            // Footnote marks (`data?\*`) are not part of the name.
            let cell = cell.replace("\\*", "");
            let optional = cell.ends_with('?');
            Some(Field {
                name: cell.trim_end_matches('?').to_string(),
                optional,
            })
        })
        .collect()
}

/// Required fields missing from `v`, and fields `v` has that `fields` does not list.
fn check_table(fields: &[Field], v: &Value, at: &str) -> Vec<String> {
    let Some(object) = v.as_object() else {
        return vec![format!("{at}: not an object")];
    };
    let mut errors = Vec::new();
    for f in fields.iter().filter(|f| !f.optional) {
        if !object.contains_key(&f.name) {
            errors.push(format!("{at}: `{}` is required and missing", f.name));
        }
    }
    let known: BTreeSet<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    for name in object.keys().filter(|k| !known.contains(k.as_str())) {
        errors.push(format!("{at}.{name}: a field the page does not list"));
    }
    errors
}

/// A partial object (e.g. `MESSAGE_CREATE`'s `member`): each field it has is checked against
/// schema `name`'s property, and none may be unknown; nothing is required.
fn check_partial(spec: &Spec, name: &str, v: &Value, at: &str) -> Vec<String> {
    let schema = spec.schema(name);
    let Some(object) = v.as_object() else {
        return vec![format!("{at}: not an object")];
    };
    let mut errors = Vec::new();
    for (field, value) in object {
        match schema["properties"].get(field) {
            Some(p) => errors.extend(spec.check(p, value, &format!("{at}.{field}"))),
            None => errors.push(format!("{at}.{field}: a field {name} does not have")),
        }
    }
    errors
}

/// `v` without the fields `extra`, for checking the rest against a REST object's schema.
fn without(v: &Value, extra: &[&str]) -> Value {
    let mut rest = v.clone();
    if let Some(o) = rest.as_object_mut() {
        for f in extra {
            o.remove(*f);
        }
    }
    rest
}

/// What is wrong with the dispatch `event` carrying `data`. Events these pages do not describe
/// are reported too: the test server should send none.
pub fn check_dispatch(event: &str, data: &Value) -> Vec<String> {
    let spec = Spec::get();
    let at = event;
    match event {
        "READY" => {
            let mut errors = check_table(
                &table("gateway-events.mdx", "###### Ready Event Fields"),
                data,
                at,
            );
            errors.extend(spec.check(spec.schema("UserResponse"), &data["user"], "READY.user"));
            errors.extend(check_partial(
                spec,
                "ApplicationResponse",
                &data["application"],
                "READY.application",
            ));
            // guild.mdx shows an unavailable guild by example only: `id` and `unavailable`.
            let unavailable =
                [("id", false), ("unavailable", true)].map(|(name, optional)| Field {
                    name: name.to_string(),
                    optional,
                });
            for (i, g) in data["guilds"].as_array().into_iter().flatten().enumerate() {
                errors.extend(check_table(&unavailable, g, &format!("READY.guilds[{i}]")));
            }
            errors
        }
        "RESUMED" => Vec::new(),
        "MESSAGE_CREATE" => {
            // A message object with the page's extra fields; `mentions` may carry a member.
            let extra = ["guild_id", "member", "channel_type"];
            let mut errors = spec.check(spec.schema("MessageResponse"), &without(data, &extra), at);
            if let Some(g) = data.get("guild_id") {
                errors.extend(spec.check(
                    spec.schema("SnowflakeType"),
                    g,
                    "MESSAGE_CREATE.guild_id",
                ));
            }
            if let Some(m) = data.get("member") {
                // Partial: without `user` (the author is the message's).
                if m.get("user").is_some() {
                    errors.push(
                        "MESSAGE_CREATE.member.user: the page's member lacks the user".into(),
                    );
                }
                errors.extend(check_partial(
                    spec,
                    "GuildMemberResponse",
                    m,
                    "MESSAGE_CREATE.member",
                ));
            }
            errors
        }
        "THREAD_CREATE" | "THREAD_UPDATE" => {
            let rest = without(data, &["newly_created"]);
            spec.check(spec.schema("ThreadResponse"), &rest, at)
        }
        "THREAD_DELETE" => {
            let fields = ["id", "guild_id", "parent_id", "type"].map(|name| Field {
                name: name.to_string(),
                optional: false,
            });
            check_table(&fields, data, at)
        }
        "INTERACTION_CREATE" => {
            let mut errors = check_table(
                &table(
                    "receiving-and-responding.mdx",
                    "###### Interaction Structure",
                ),
                data,
                at,
            );
            if data.get("guild_id").is_some() && data.get("user").is_some() {
                errors.push(
                    "INTERACTION_CREATE.user: sent only in DMs; a guild's has `member`".into(),
                );
            }
            if let Some(m) = data.get("member") {
                let rest = without(m, &["permissions"]);
                errors.extend(spec.check(
                    spec.schema("GuildMemberResponse"),
                    &rest,
                    "INTERACTION_CREATE.member",
                ));
            }
            if let Some(m) = data.get("message") {
                errors.extend(spec.check(
                    spec.schema("MessageResponse"),
                    m,
                    "INTERACTION_CREATE.message",
                ));
            }
            errors
        }
        other => vec![format!("{other}: an event these checks do not know")],
    }
}
