//! Spend and message limits per person and per channel, through the real serenity client
//! against the test server: a refusal names the limit and when it frees (in the limits'
//! timezone), the refused message stays in the inbox, an approver lifts a person's limit for
//! the day, and `!retry` runs the refused message once it may.

use crate::discord::start_with;
use crate::slash::answered;
use crate::support::TestEnv;

const ALICE: u64 = 7;
const BOB: u64 = 8;
const ALPHA: u64 = 1001;

/// The inbox state of message `id`, read from the database file.
fn inbox_state(env: &TestEnv, id: u64) -> String {
    let conn = rusqlite::Connection::open(env.db()).expect("open db");
    conn.query_row(
        "SELECT state FROM inbox WHERE message_id = ?1",
        [i64::from_ne_bytes(id.to_ne_bytes())],
        |r| r.get(0),
    )
    .expect("inbox row")
}

/// Turns the stand-in ran, by prompt.
fn turns(env: &TestEnv) -> Vec<String> {
    env.runs().into_iter().map(|r| r.prompt).collect()
}

#[actix_rt::test]
async fn a_spend_limit_refuses_the_next_message_until_an_approver_lifts_it_and_retry_runs_it() {
    let env = TestEnv::new();
    let s = start_with(&env, |st| {
        st.limits.user_daily_usd = 0.08;
        st.limits.timezone = "Europe/Berlin".parse().expect("tz");
        st.access.allowed_users.push(actors::ids::UserId(BOB));
        st.access.approvers = Some(vec![actors::ids::UserId(BOB)]);
    })
    .await;
    // Three at once: the first two run (the second crosses $0.08 and finishes: each run costs
    // $0.05), the third is refused — whether the second's record is written yet or not.
    let first = s.server.say(ALPHA, ALICE, "one");
    let second = s.server.say(ALPHA, ALICE, "two");
    let third = s.server.say(ALPHA, ALICE, "three");
    let refusal = s
        .server
        .answer_where(ALPHA, "the refusal", |t| t.starts_with("Not run:"))
        .await;
    assert!(
        refusal.contains("your spend limit ($0.08 per day) is reached"),
        "{refusal}"
    );
    // Midnight in Berlin, named as such.
    assert!(refusal.contains(" 00:00 CE"), "{refusal}");
    assert!(refusal.contains("`!retry`"), "{refusal}");
    s.server
        .answer_where(ALPHA, "the second answer", |t| t == "echo: two")
        .await;
    assert_eq!(
        turns(&env),
        ["one", "two"],
        "the third never reached Claude"
    );
    assert_eq!(inbox_state(&env, third), "refused");
    assert_eq!(inbox_state(&env, first), "answered");
    assert_eq!(inbox_state(&env, second), "answered");
    // `/claude usage` shows what Alice spent and that nothing is left today.
    let token = s
        .server
        .command(ALPHA, ALICE, "usage", &serde_json::json!([]));
    let (_, usage) = answered(&s.server, &token).await;
    assert!(
        usage.contains("<@7>: $0.1000 · $0.1000 — $0.00 left today"),
        "{usage}"
    );
    // Alice may not lift her own limit; Bob, an approver, may.
    let lift = serde_json::json!([{"type": 6, "name": "lift", "value": ALICE.to_string()}]);
    let token = s.server.command(ALPHA, ALICE, "limits", &lift);
    let callback = s.server.callback(&token).await;
    let text = callback.body["data"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(text.starts_with("Only approvers"), "{text}");
    let token = s.server.command(ALPHA, BOB, "limits", &lift);
    let (_, text) = answered(&s.server, &token).await;
    assert!(
        text.contains("<@7>'s own limits are lifted until"),
        "{text}"
    );
    // The refused message runs on `!retry`, and its answer replies to it.
    s.server.say(ALPHA, ALICE, "!retry");
    s.server
        .answer_where(ALPHA, "the retried answer", |t| t == "echo: three")
        .await;
    assert_eq!(inbox_state(&env, third), "answered");
    assert_eq!(turns(&env), ["one", "two", "three"]);
}

#[actix_rt::test]
async fn message_limits_per_person_and_per_channel_refuse_with_the_time_they_free() {
    let env = TestEnv::new();
    let s = start_with(&env, |st| {
        st.limits.user_messages_per_hour = 2;
        st.limits.channel_messages_per_hour = 3;
        st.access.allowed_users.push(actors::ids::UserId(BOB));
    })
    .await;
    for text in ["a1", "a2"] {
        s.server.say(ALPHA, ALICE, text);
        s.server
            .answer_where(ALPHA, text, |t| t == format!("echo: {text}"))
            .await;
    }
    let a3 = s.server.say(ALPHA, ALICE, "a3");
    let refusal = s
        .server
        .answer_where(ALPHA, "Alice's refusal", |t| t.starts_with("Not run:"))
        .await;
    assert!(
        refusal
            .contains("<@7>, your message limit (2 message(s) per hour) is reached. It frees at"),
        "{refusal}"
    );
    assert!(refusal.contains("UTC"), "{refusal}");
    // Bob's own count is untouched, but the channel's third run is his, and then it is full.
    s.server.say(ALPHA, BOB, "b1");
    s.server
        .answer_where(ALPHA, "Bob's answer", |t| t == "echo: b1")
        .await;
    s.server.say(ALPHA, BOB, "b2");
    let refusal = s
        .server
        .answer_where(ALPHA, "the channel's refusal", |t| {
            t.starts_with("Not run: This channel's")
        })
        .await;
    assert!(
        refusal.contains("message limit (3 message(s) per hour) is reached"),
        "{refusal}"
    );
    assert!(
        !refusal.contains("lift"),
        "a channel's limit is not a person's to lift"
    );
    // Still refused on `!retry`: nothing has freed, and the message is kept.
    s.server.say(ALPHA, ALICE, "!retry");
    s.server
        .wait("the second refusal", |srv| {
            srv.answer_texts(ALPHA)
                .iter()
                .filter(|t| t.starts_with("Not run:"))
                .count()
                >= 3
        })
        .await;
    assert_eq!(inbox_state(&env, a3), "refused");
    assert_eq!(turns(&env), ["a1", "a2", "b1"]);
    // `/claude limits` says what is set.
    let token = s
        .server
        .command(ALPHA, ALICE, "limits", &serde_json::json!([]));
    let (_, text) = answered(&s.server, &token).await;
    assert!(
        text.contains("each person: 2 message(s) per hour")
            && text.contains("each channel: 3 message(s) per hour"),
        "{text}"
    );
}
