//! Splitting a reply into Discord messages.
//!
//! Discord accepts at most 2,000 characters per message (counted in UTF-16 code units, as
//! JavaScript does). A reply is cut on line boundaries where possible, never inside a UTF-8
//! character; a code block that spans a cut is closed at the end of one chunk and reopened, with
//! its language tag, at the start of the next, so every chunk renders on its own.

/// Discord's message length limit.
pub const DISCORD_LIMIT: usize = 2000;

fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

/// The fence a line opens or closes, if it is a fence line: returns the info string (language
/// tag) after the backticks.
fn fence(line: &str) -> Option<&str> {
    line.trim_start().strip_prefix("```").map(str::trim)
}

/// Splits `text` into chunks of at most `limit` UTF-16 units, each with balanced code fences.
pub fn split_message(text: &str, limit: usize) -> Vec<String> {
    let mut chunks = Vec::new();
    let mut current = String::new();
    // The language tag of the code block we are inside, if any.
    let mut open: Option<String> = None;
    let closing = "```";
    for line in text.split_inclusive('\n') {
        // Room a chunk must keep to close an open block: a newline and the fence.
        let reserve = |open: &Option<String>| {
            if open.is_some() {
                units(closing) + 1
            } else {
                0
            }
        };
        let next_open = match (fence(line), &open) {
            (Some(_), Some(_)) => None,
            (Some(tag), None) => Some(tag.to_string()),
            (None, o) => o.clone(),
        };
        if units(&current) + units(line) + reserve(&next_open) > limit && !current.trim().is_empty()
        {
            flush(&mut chunks, &mut current, open.as_deref());
        }
        let budget = limit.saturating_sub(reserve(&next_open).max(reserve(&open)));
        if units(&current) + units(line) > budget {
            // A single line longer than a chunk: cut it, preferring whitespace.
            let mut rest = line;
            while units(&current) + units(rest) > budget {
                let room = budget.saturating_sub(units(&current)).max(1);
                let cut = cut_point(rest, room);
                current.push_str(&rest[..cut]);
                rest = &rest[cut..];
                flush(&mut chunks, &mut current, open.as_deref());
            }
            current.push_str(rest);
        } else {
            current.push_str(line);
        }
        open = next_open;
    }
    if !current.trim().is_empty() {
        if open.is_some() {
            if !current.ends_with('\n') {
                current.push('\n');
            }
            current.push_str(closing);
        }
        chunks.push(current.trim_end_matches('\n').to_string());
    }
    chunks
}

/// Ends the current chunk (closing an open block) and starts the next (reopening it).
fn flush(chunks: &mut Vec<String>, current: &mut String, open: Option<&str>) {
    let mut chunk = std::mem::take(current);
    if open.is_some() {
        if !chunk.ends_with('\n') {
            chunk.push('\n');
        }
        chunk.push_str("```");
    }
    let chunk = chunk.trim_end_matches('\n').to_string();
    if !chunk.trim().is_empty() {
        chunks.push(chunk);
    }
    if let Some(tag) = open {
        current.push_str("```");
        current.push_str(tag);
        current.push('\n');
    }
}

/// The byte index at which to cut `s` so the head fits `room` UTF-16 units: after the last
/// whitespace that fits, else at the last character boundary that fits; at least one character.
fn cut_point(s: &str, room: usize) -> usize {
    let mut used = 0;
    let mut last_fit = 0;
    let mut last_space = None;
    for (i, c) in s.char_indices() {
        used += c.len_utf16();
        if used > room {
            break;
        }
        last_fit = i + c.len_utf8();
        if c.is_whitespace() {
            last_space = Some(last_fit);
        }
    }
    let cut = last_space.filter(|&p| p > 0).unwrap_or(last_fit);
    if cut == 0 {
        s.chars().next().map_or(s.len(), char::len_utf8)
    } else {
        cut
    }
}

/// The first part of `text` as a preview of at most `limit` units (fences balanced), for a
/// reply that is sent as a file.
pub fn preview(text: &str, limit: usize) -> String {
    split_message(text, limit)
        .into_iter()
        .next()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    fn balanced(chunk: &str) -> bool {
        chunk.lines().filter(|l| fence(l).is_some()).count() % 2 == 0
    }

    #[test]
    fn short_text_is_one_chunk() {
        assert_eq!(split_message("hello\nworld", 2000), ["hello\nworld"]);
    }

    #[test]
    fn long_text_is_cut_on_line_boundaries() {
        let text = (0..300).fold(String::new(), |mut s, i| {
            let _ = writeln!(s, "line number {i}");
            s
        });
        let chunks = split_message(&text, 200);
        assert!(chunks.len() > 1);
        for c in &chunks {
            assert!(units(c) <= 200, "{}", units(c));
            assert!(c.starts_with("line number"), "{c}");
            assert!(
                c.lines().all(|l| l.starts_with("line number ")),
                "cut inside a line: {c}"
            );
        }
        assert_eq!(chunks.join("\n") + "\n", text);
    }

    #[test]
    fn code_blocks_are_closed_and_reopened_with_their_language() {
        let code = (0..100).fold(String::new(), |mut s, i| {
            let _ = writeln!(s, "    let x{i} = {i};");
            s
        });
        let text = format!("Here:\n```rust\n{code}```\nDone.\n");
        let chunks = split_message(&text, 300);
        assert!(chunks.len() > 2);
        for (i, c) in chunks.iter().enumerate() {
            assert!(units(c) <= 300);
            assert!(balanced(c), "chunk {i} unbalanced: {c}");
            if i > 0 && i < chunks.len() - 1 {
                assert!(c.starts_with("```rust\n"), "chunk {i}: {c}");
            }
        }
        assert!(chunks.last().is_some_and(|c| c.ends_with("Done.")));
        // Every code line survives exactly once.
        let joined = chunks.join("\n");
        for i in 0..100 {
            assert_eq!(joined.matches(&format!("let x{i} = {i};")).count(), 1);
        }
    }

    #[test]
    fn a_huge_line_is_cut_without_splitting_characters() {
        let text = "ü✓😀".repeat(1000);
        let chunks = split_message(&text, 100);
        for c in &chunks {
            assert!(units(c) <= 100);
        }
        assert_eq!(chunks.concat(), text);
    }

    #[test]
    fn words_are_kept_whole_when_a_line_is_cut() {
        let text = "word ".repeat(100);
        for c in split_message(&text, 52) {
            assert!(c.split_whitespace().all(|w| w == "word"), "{c}");
        }
    }

    #[test]
    fn the_preview_fits_and_is_balanced() {
        let text = format!("```python\n{}```\n", "print(1)\n".repeat(500));
        let p = preview(&text, 400);
        assert!(units(&p) <= 400);
        assert!(balanced(&p));
        assert!(p.starts_with("```python\n"));
    }
}
