//! Splitting a reply into Discord messages.
//!
//! Discord accepts at most 2,000 characters per message, counted in UTF-16 code units (as
//! JavaScript does). Claude's text is untrusted (it may repeat anything from a repository), so
//! the split is right by construction for every input, not only for well-formed Markdown:
//!
//! - A reply is cut on line boundaries where possible, else inside a long line (after the last
//!   whitespace that leaves a long enough piece, else at a character boundary), never inside a
//!   UTF-8 character or a UTF-16 surrogate pair.
//! - A **fence line** is a line whose text, after leading spaces and tabs, starts with three
//!   backticks, and which is at most a quarter of the limit long. A longer one is plain text: it
//!   could not be reopened in the next chunk and still leave room for anything else.
//! - A code block open at a cut is closed at the end of the chunk (`\n` and three backticks) and
//!   reopened with its info string at the start of the next, so every chunk renders on its own.
//! - A piece cut out of a long line is never itself a fence line: every piece but the last is
//!   longer than a fence line may be, and the last is left that long too when it would look like
//!   one. So the fences in every chunk are balanced.
//!
//! [`chunks`] gives the structure (what was added around which slice of the text), so the
//! invariants can be checked ([`verify`]: a property test and a long run use it); [`split_message`]
//! renders the messages to send.

use std::fmt;

/// Discord's message length limit.
pub const DISCORD_LIMIT: usize = 2000;
/// The smallest limit the splitter works with; smaller requests are raised to it.
pub const MIN_LIMIT: usize = 64;

const FENCE: &str = "```";
/// What closes an open block at the end of a chunk (its newline included).
const CLOSE: &str = "\n```";

fn units(s: &str) -> usize {
    #[cfg(test)]
    tests::SCANNED.with(|n| n.set(n.get() + s.len()));
    s.encode_utf16().count()
}

/// The longest line, in UTF-16 units, that can be a fence line under `limit`.
fn max_fence_units(limit: usize) -> usize {
    limit / 4
}

/// The info string of `line` if it is a fence line under `limit` (see the module docs).
pub fn fence_info(line: &str, limit: usize) -> Option<&str> {
    let body = line.strip_suffix('\n').unwrap_or(line);
    let body = body.strip_suffix('\r').unwrap_or(body);
    // Counted only as far as it matters: a long line is text, however long.
    let most = max_fence_units(limit);
    if body.len() > 4 * most || body.encode_utf16().take(most + 1).count() > most {
        return None;
    }
    body.trim_start_matches([' ', '\t'])
        .strip_prefix(FENCE)
        .map(str::trim)
}

/// One message: a slice of the reply, with what the splitter added around it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk<'a> {
    /// The fence line that reopens a block left open by the chunk before (with its `\n`).
    pub reopen: Option<String>,
    /// The text of the reply this chunk carries, verbatim.
    pub body: &'a str,
    /// Whether a block is still open at the end, so the chunk closes it.
    pub close: bool,
}

impl Chunk<'_> {
    /// The message text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(self.body.len() + 16);
        if let Some(r) = &self.reopen {
            out.push_str(r);
        }
        out.push_str(self.body);
        if self.close {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(FENCE);
        }
        out
    }

    /// A chunk of nothing but whitespace is not sent (Discord refuses empty messages).
    fn is_blank(&self) -> bool {
        self.reopen.is_none() && !self.close && self.body.trim().is_empty()
    }
}

/// The splitter's state while it walks the reply.
struct Splitter<'a> {
    text: &'a str,
    limit: usize,
    out: Vec<Chunk<'a>>,
    /// Byte offset where the current chunk's body starts.
    start: usize,
    /// Byte offset where it ends (exclusive).
    end: usize,
    /// The reopen line of the current chunk, if any.
    reopen: Option<String>,
    /// UTF-16 units of the current chunk so far (reopen + body).
    used: usize,
    /// The info string of the block open at `end`, if any.
    open: Option<String>,
}

impl<'a> Splitter<'a> {
    /// What a chunk must keep free to close the block open at its end.
    fn close_cost(open: Option<&String>) -> usize {
        if open.is_some() {
            units(CLOSE)
        } else {
            0
        }
    }

    fn has_body(&self) -> bool {
        self.end > self.start
    }

    /// Ends the current chunk (closing an open block) and starts the next (reopening it).
    fn flush(&mut self) {
        self.out.push(Chunk {
            reopen: self.reopen.take(),
            body: &self.text[self.start..self.end],
            close: self.open.is_some(),
        });
        self.start = self.end;
        self.reopen = self.open.as_ref().map(|info| format!("{FENCE}{info}\n"));
        self.used = self.reopen.as_deref().map_or(0, units);
    }

    /// Room left in the current chunk for text that keeps `open` as it is.
    fn room(&self) -> usize {
        self.limit
            .saturating_sub(self.used + Self::close_cost(self.open.as_ref()))
    }

    fn line(&mut self, line: &'a str) {
        let info = fence_info(line, self.limit);
        let next_open = match (&info, &self.open) {
            (Some(_), Some(_)) => None,
            (Some(i), None) => Some((*i).to_string()),
            (None, o) => o.clone(),
        };
        let line_units = units(line);
        let need = line_units + Self::close_cost(next_open.as_ref());
        if self.used + need > self.limit && self.has_body() {
            self.flush();
        }
        if self.used + need <= self.limit {
            self.end += line.len();
            self.used += line_units;
            self.open = next_open;
            return;
        }
        // Only a text line gets here: a fence line is at most a quarter of the limit, and so is
        // a reopen line, which leaves room for both and the close.
        debug_assert!(info.is_none());
        self.long_line(line, line_units);
    }

    /// Cuts a text line that does not fit in a chunk of its own. Linear in the line's length:
    /// its units are counted once, and each cut only looks as far as the chunk's room.
    fn long_line(&mut self, line: &'a str, line_units: usize) {
        // Longer than a fence line may be, even when the last piece's line ending (up to two
        // units, not counted in a fence line) is taken off, and when a surrogate pair at the
        // cut leaves a head one unit short.
        let min_piece = max_fence_units(self.limit) + 3;
        let mut rest = line;
        let mut left = line_units;
        loop {
            let room = self.room();
            if left <= room {
                self.end += rest.len();
                self.used += left;
                return;
            }
            // Leave the rest long enough that it cannot be taken for a fence line.
            let most = if left - room < min_piece {
                left - min_piece
            } else {
                room
            };
            let (cut, head_units) = cut_point(rest, min_piece, most);
            self.end += cut;
            self.used += head_units;
            left -= head_units;
            rest = &rest[cut..];
            self.flush();
        }
    }
}

/// The chunks of `text` under `limit` UTF-16 units (at least [`MIN_LIMIT`]).
pub fn chunks(text: &str, limit: usize) -> Vec<Chunk<'_>> {
    let limit = limit.max(MIN_LIMIT);
    let mut s = Splitter {
        text,
        limit,
        out: Vec::new(),
        start: 0,
        end: 0,
        reopen: None,
        used: 0,
        open: None,
    };
    for line in text.split_inclusive('\n') {
        s.line(line);
    }
    if s.has_body() {
        s.flush();
    }
    s.out
}

/// Splits `text` into messages of at most `limit` UTF-16 units, each with balanced code
/// fences. Chunks of only whitespace are left out.
pub fn split_message(text: &str, limit: usize) -> Vec<String> {
    chunks(text, limit)
        .into_iter()
        .filter(|c| !c.is_blank())
        .map(|c| c.render())
        .collect()
}

/// Where to cut `s`, and the UTF-16 units of the head: the head holds at least `least` and at
/// most `most` units (`least <= most`), ending after the last whitespace in that range if there
/// is one, else at the last character boundary that fits. A character is never split, so the
/// head may hold one unit less than `least` when a surrogate pair straddles it. Reads at most
/// `most` units of `s`.
fn cut_point(s: &str, least: usize, most: usize) -> (usize, usize) {
    let mut used = 0;
    let mut last_fit = (0, 0);
    let mut last_space = None;
    for (i, c) in s.char_indices() {
        if used + c.len_utf16() > most {
            break;
        }
        used += c.len_utf16();
        last_fit = (i + c.len_utf8(), used);
        if c.is_whitespace() && used >= least {
            last_space = Some(last_fit);
        }
    }
    let cut = last_space.unwrap_or(last_fit);
    if cut.0 == 0 {
        s.chars()
            .next()
            .map_or((s.len(), 0), |c| (c.len_utf8(), c.len_utf16()))
    } else {
        cut
    }
}

/// The first part of `text` as a preview of at most `limit` units (fences balanced), for a
/// reply that is sent as a file. Only the text's beginning is split: a preview of a huge reply
/// costs no more than one of a short one.
pub fn preview(text: &str, limit: usize) -> String {
    let mut head = text.len().min(8 * limit.max(MIN_LIMIT));
    while !text.is_char_boundary(head) {
        head -= 1;
    }
    split_message(&text[..head], limit)
        .into_iter()
        .next()
        .unwrap_or_default()
}

/// A broken invariant, found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// A message is longer than the limit.
    TooLong {
        /// Which chunk.
        chunk: usize,
        /// Its length in UTF-16 units.
        units: usize,
    },
    /// A message opens or closes a code block it does not close or open.
    Unbalanced {
        /// Which chunk.
        chunk: usize,
    },
    /// The chunks' bodies do not add up to the text.
    NotTheText,
    /// A chunk's reopen line does not reopen the block the chunk before left open.
    WrongReopen {
        /// Which chunk.
        chunk: usize,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLong { chunk, units } => write!(f, "chunk {chunk} has {units} units"),
            Self::Unbalanced { chunk } => write!(f, "chunk {chunk} has unbalanced fences"),
            Self::NotTheText => f.write_str("the chunks do not give back the text"),
            Self::WrongReopen { chunk } => write!(f, "chunk {chunk} reopens the wrong block"),
        }
    }
}

/// Checks every invariant of [`chunks`] on `text`: each rendered chunk fits `limit`, has
/// balanced fences (as defined for `limit`), reopens what the one before left open, and the
/// bodies are the text. For the property test and the long run in `benches/`.
pub fn verify(text: &str, limit: usize) -> Result<(), Violation> {
    let limit = limit.max(MIN_LIMIT);
    let all = chunks(text, limit);
    let mut rebuilt = String::with_capacity(text.len());
    let mut left_open = false;
    for (i, c) in all.iter().enumerate() {
        let rendered = c.render();
        let n = units(&rendered);
        if n > limit {
            return Err(Violation::TooLong { chunk: i, units: n });
        }
        let fences = rendered
            .split_inclusive('\n')
            .filter(|l| fence_info(l, limit).is_some())
            .count();
        if fences % 2 != 0 {
            return Err(Violation::Unbalanced { chunk: i });
        }
        if c.reopen.is_some() != left_open {
            return Err(Violation::WrongReopen { chunk: i });
        }
        left_open = c.close;
        rebuilt.push_str(c.body);
    }
    if rebuilt != text {
        return Err(Violation::NotTheText);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    thread_local! {
        /// Bytes whose UTF-16 units were counted on this thread: the splitter's work.
        pub(super) static SCANNED: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// Splits `text` and answers how many bytes were scanned per byte of text.
    fn work(text: &str) -> f64 {
        SCANNED.with(|n| n.set(0));
        let parts = split_message(text, DISCORD_LIMIT);
        assert!(!parts.is_empty());
        SCANNED.with(std::cell::Cell::get) as f64 / text.len() as f64
    }

    #[test]
    fn the_work_of_a_split_grows_linearly_with_the_text() {
        // One line of 4 MB, as a reply of minified output can be; and many lines.
        for unit in ["x", "é", "word ", "🙂"] {
            for size in [10_000, 1_000_000, 4_000_000] {
                let line = unit.repeat(size / unit.len());
                let per_byte = work(&line);
                assert!(
                    per_byte <= 2.0,
                    "{unit:?} × {size}: {per_byte} bytes scanned per byte"
                );
            }
        }
        let lines = "a line of text\n".repeat(300_000);
        assert!(work(&lines) <= 2.0);
    }

    fn balanced(chunk: &str) -> bool {
        chunk
            .split_inclusive('\n')
            .filter(|l| fence_info(l, DISCORD_LIMIT).is_some())
            .count()
            % 2
            == 0
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
        assert_eq!(chunks.concat(), text);
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
        assert!(chunks
            .last()
            .is_some_and(|c| c.trim_end().ends_with("Done.")));
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
        for c in split_message(&text, 64) {
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

    /// Defect: an info string longer than a chunk made the splitter loop for ever.
    #[test]
    fn a_fence_line_longer_than_a_chunk_is_text_and_the_split_ends() {
        let text = format!("```{}\n{}", "a".repeat(2100), "line of code\n".repeat(200));
        assert_eq!(
            fence_info(text.lines().next().unwrap_or_default(), 2000),
            None
        );
        let chunks = split_message(&text, DISCORD_LIMIT);
        assert!(chunks.len() >= 2);
        assert_eq!(verify(&text, DISCORD_LIMIT), Ok(()));
    }

    /// Defect: a closing fence at the edge gave a first chunk of 2,001 characters.
    #[test]
    fn a_closing_fence_at_the_edge_stays_within_the_limit() {
        let text = format!("```\n{}\n```\nmore text", "a".repeat(1991));
        for c in split_message(&text, DISCORD_LIMIT) {
            assert!(units(&c) <= DISCORD_LIMIT, "{} units", units(&c));
            assert!(balanced(&c), "{c}");
        }
        assert_eq!(verify(&text, DISCORD_LIMIT), Ok(()));
    }

    #[test]
    fn pieces_of_a_cut_line_never_look_like_fences() {
        // A long text line whose tail after any cut would begin with backticks.
        let text = format!("{}```tail\nafter\n", "x ".repeat(1500));
        assert_eq!(verify(&text, DISCORD_LIMIT), Ok(()));
        let text = "`".repeat(7000);
        assert_eq!(verify(&text, DISCORD_LIMIT), Ok(()));
        let text = format!("```{}", " ```".repeat(2000));
        assert_eq!(verify(&text, 200), Ok(()));
    }

    #[test]
    fn whitespace_only_chunks_are_not_sent() {
        let text = format!("{}\n{}", "a".repeat(1999), " ".repeat(3000));
        let messages = split_message(&text, DISCORD_LIMIT);
        assert!(
            messages.iter().all(|m| !m.trim().is_empty()),
            "{messages:?}"
        );
        assert_eq!(verify(&text, DISCORD_LIMIT), Ok(()));
    }
}
