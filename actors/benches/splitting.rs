//! The reply splitter's time per MB as replies grow: `cargo bench -p actors --bench splitting`.
//! For 10 KB, 100 KB, 1 MB and 10 MB of one long line (minified output, a log without line
//! breaks), of many short lines, and of code blocks, prints the median of several splits in ms
//! and in ms per MB. Linear work shows as a flat ms/MB column.

use std::fmt::Write as _;
use std::time::Instant;

use actors::discord::chunking::{split_message, DISCORD_LIMIT};

fn text(kind: &str, bytes: usize) -> String {
    match kind {
        "one line" => "abcdefghij".repeat(bytes / 10),
        "one line, words" => "lorem ipsum dolor sit amet ".repeat(bytes / 27),
        "lines" => "a line of ordinary text, as replies have\n".repeat(bytes / 42),
        _ => {
            let mut s = String::with_capacity(bytes);
            while s.len() < bytes {
                let _ = write!(s, "```rust\nfn main() {{\n    println!(\"hi\");\n}}\n```\nsome prose between blocks\n");
            }
            s
        }
    }
}

fn main() {
    println!(
        "{:<18} {:>10} {:>10} {:>10} {:>8}",
        "text", "size", "ms", "ms/MB", "chunks"
    );
    for kind in ["one line", "one line, words", "lines", "code blocks"] {
        for bytes in [10_000, 100_000, 1_000_000, 10_000_000] {
            let t = text(kind, bytes);
            let rounds = (20_000_000 / bytes).clamp(3, 200);
            let mut times: Vec<f64> = (0..rounds)
                .map(|_| {
                    let started = Instant::now();
                    let chunks = split_message(&t, DISCORD_LIMIT);
                    std::hint::black_box(chunks);
                    started.elapsed().as_secs_f64() * 1000.0
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            let chunks = split_message(&t, DISCORD_LIMIT).len();
            println!(
                "{kind:<18} {:>9}K {median:>10.3} {:>10.3} {chunks:>8}",
                t.len() / 1000,
                median / (t.len() as f64 / 1e6)
            );
        }
    }
}
