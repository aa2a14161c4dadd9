//! Text shown to people, bounded: whatever Claude or a server wrote, a summary of it stays
//! short and valid UTF-8.

/// At most `max` characters, with `…` when cut; never splits a UTF-8 character.
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

/// The user a word names: a mention (`<@123>`, `<@!123>`) or a bare id, as people type them
/// after a command.
pub fn mentioned_user(word: &str) -> Option<crate::ids::UserId> {
    let id = word
        .strip_prefix("<@")
        .and_then(|w| w.strip_suffix('>'))
        .map_or(word, |w| w.trim_start_matches('!'));
    id.parse::<u64>()
        .ok()
        .filter(|n| *n != 0)
        .map(crate::ids::UserId)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_is_named_by_mention_or_id() {
        use crate::ids::UserId;
        assert_eq!(mentioned_user("<@42>"), Some(UserId(42)));
        assert_eq!(mentioned_user("<@!42>"), Some(UserId(42)));
        assert_eq!(mentioned_user("42"), Some(UserId(42)));
        for bad in ["<@>", "<@x>", "@42", "<#42>", "0", "-1"] {
            assert_eq!(mentioned_user(bad), None, "{bad}");
        }
    }

    #[test]
    fn truncation_never_splits_a_character() {
        assert_eq!(truncate_chars("ünïcödé", 3), "ünï…");
        assert_eq!(truncate_chars("short", 80), "short");
    }
}
