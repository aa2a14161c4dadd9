//! Reading the CLI's output: stdout split into lines, each bounded (a longer one is skipped
//! and counted, never kept in memory), and a bounded tail of stderr for error messages. Used by
//! the one-shot run and the live session alike.

/// The longest output line kept; a longer one fails the run (the CLI's lines are far shorter).
pub const MAX_LINE_BYTES: usize = 16 * 1024 * 1024;

/// How much of stderr to keep for error messages.
const STDERR_TAIL_BYTES: usize = 8 * 1024;

/// Splits a byte stream into lines (without their `\n`), keeping at most `max` bytes of a
/// line: the rest of a longer one is skipped, and it is counted in `too_long` instead.
pub(super) struct LineSplitter {
    partial: Vec<u8>,
    max: usize,
    /// Inside a line that passed `max`: skip to its end.
    skipping: bool,
    pub(super) too_long: usize,
}

impl LineSplitter {
    pub(super) fn new(max: usize) -> Self {
        Self {
            partial: Vec::new(),
            max,
            skipping: false,
            too_long: 0,
        }
    }

    /// Feeds `data`; calls `each` for every line it completes.
    pub(super) fn push(&mut self, mut data: &[u8], each: &mut impl FnMut(&[u8])) {
        while let Some(i) = data.iter().position(|&b| b == b'\n') {
            if self.skipping {
                self.skipping = false;
            } else if self.partial.len() + i > self.max {
                self.too_long += 1;
                self.partial.clear();
            } else if self.partial.is_empty() {
                each(&data[..i]);
            } else {
                self.partial.extend_from_slice(&data[..i]);
                each(&self.partial);
                self.partial.clear();
            }
            data = &data[i + 1..];
        }
        if self.skipping {
            return;
        }
        if self.partial.len() + data.len() > self.max {
            self.too_long += 1;
            self.skipping = true;
            self.partial = Vec::new();
        } else {
            self.partial.extend_from_slice(data);
        }
    }

    /// End of stream: a last line without `\n` still counts.
    pub(super) fn finish(&mut self, each: &mut impl FnMut(&[u8])) {
        if !self.partial.is_empty() {
            each(&self.partial);
            self.partial.clear();
        }
    }
}

pub(super) fn push_tail(tail: &mut String, line: &str) {
    tail.push_str(line);
    if tail.len() > STDERR_TAIL_BYTES {
        let mut cut = tail.len() - STDERR_TAIL_BYTES;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail.drain(..cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_split_across_reads_are_put_back_together() {
        let mut lines = Vec::new();
        let mut each = |l: &[u8]| lines.push(String::from_utf8_lossy(l).into_owned());
        let mut split = LineSplitter::new(1024);
        split.push(b"one\ntw", &mut each);
        split.push(b"o", &mut each);
        split.push(b"\nthree\n\nfou", &mut each);
        split.finish(&mut each);
        split.finish(&mut each);
        assert_eq!(lines, ["one", "two", "three", "", "fou"]);
    }

    #[test]
    fn a_line_past_the_bound_is_dropped_and_counted_not_kept() {
        let mut lines = Vec::new();
        let mut each = |l: &[u8]| lines.push(String::from_utf8_lossy(l).into_owned());
        let mut split = LineSplitter::new(8);
        split.push(b"short\nmuch too lo", &mut each);
        assert!(split.partial.is_empty(), "nothing of the long line is kept");
        split.push(b"ng still going", &mut each);
        split.push(b"\nok\n12345678\n123456789\nend", &mut each);
        split.finish(&mut each);
        assert_eq!(lines, ["short", "ok", "12345678", "end"]);
        assert_eq!(split.too_long, 2);
    }

    #[test]
    fn the_stderr_tail_is_bounded_and_valid_utf8() {
        let mut t = String::new();
        for _ in 0..2000 {
            push_tail(&mut t, "ünïcödé line\n");
        }
        assert!(t.len() <= STDERR_TAIL_BYTES);
        assert!(t.ends_with("ünïcödé line\n"));
    }
}
