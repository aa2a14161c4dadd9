//! Text shown to people, bounded: whatever Claude or a server wrote, a summary of it stays
//! short and valid UTF-8.

/// At most `max` characters, with `…` when cut; never splits a UTF-8 character.
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_never_splits_a_character() {
        assert_eq!(truncate_chars("ünïcödé", 3), "ünï…");
        assert_eq!(truncate_chars("short", 80), "short");
    }
}
