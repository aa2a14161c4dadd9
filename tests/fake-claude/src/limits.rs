//! Usage limits and 429s as observed (`USAGELIMIT:<t>`, `API429:<t>`).

use crate::files::new_uuid;
use crate::output::{assistant_value, Out};
use crate::session::{Session, TurnEnd};
use serde_json::json;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A turn refused for a limit until `until`: a subscription's usage limit
/// (`u_oauth_limit_stream`, `u_oauth_limit_live`), or an API key's 429 (`u_api429_stream`).
pub(crate) fn usage_limited(
    s: &mut Session,
    out: &mut Out,
    prompt: &str,
    msg_id: &str,
    until: u64,
    subscription: bool,
    started: Instant,
) -> TurnEnd {
    let info = json!({"status": "rejected", "resetsAt": until, "rateLimitType": "five_hour",
                      "overageStatus": "rejected", "isUsingOverage": false});
    if subscription && !s.limit_announced {
        s.limit_announced = true;
        let mut event = info.clone();
        event["unifiedWindows"] =
            json!({"five_hour": {"utilization": 1, "resetsAt": until, "status": "rejected"}});
        out.line(
            &json!({"type": "rate_limit_event", "rate_limit_info": event,
                         "uuid": new_uuid(), "session_id": s.id}),
        );
    }
    let text = if subscription {
        let (h, m) = ((until / 3600) % 24, (until / 60) % 60);
        let (h12, half) = (
            if h % 12 == 0 { 12 } else { h % 12 },
            if h < 12 { "am" } else { "pm" },
        );
        format!("You've hit your limit · resets {h12}:{m:02}{half} (UTC)")
    } else {
        "API Error: Request rejected (429) · Rate limited (mock)".to_string()
    };
    let mut line = assistant_value(
        &s.id,
        &s.model,
        msg_id,
        &json!({"type": "text", "text": text}),
    );
    line["error"] = json!("rate_limit");
    line["is_api_error_message"] = json!(true);
    line["api_error_status"] = json!(429);
    line["api_error_type"] = json!("rate_limit_error");
    if subscription {
        line["api_error"] = json!("usage_limit_reached");
        line["api_error_params"] = json!({"rate_limit_info": info});
    }
    out.line(&line);
    let total = s.record(prompt, 0.0);
    s.api_error = subscription.then_some("usage_limit_reached");
    s.result(
        out,
        "success",
        true,
        Some(&text),
        None,
        total,
        1,
        "api_error",
        Some(429),
        started,
    );
    s.api_error = None;
    // A subscription's limit exits 1 in both formats; the API key's 429 exits 0 with
    // stream-json (`u_api429_stream`) and 1 with json.
    let code = u8::from(subscription || out.format != "stream-json");
    TurnEnd::Done {
        code,
        is_error: true,
    }
}

/// `USAGELIMIT:<t>` (a subscription, with a reset time) or `API429:<t>` in the prompt.
pub(crate) fn limited_until(prompt: &str) -> Option<(u64, bool)> {
    prompt.split_whitespace().find_map(|w| {
        w.strip_prefix("USAGELIMIT:")
            .map(|t| (t, true))
            .or_else(|| w.strip_prefix("API429:").map(|t| (t, false)))
            .and_then(|(t, announced)| t.parse().ok().map(|t| (t, announced)))
    })
}

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
