//! The long run of the reply splitter: `cargo bench -p actors --bench chunking -- --cases N`
//! (default 1,000,000) generated replies (`tests/it/support/replies.rs`, the property test's
//! generator), each checked with `actors::discord::chunking::verify`. Exits 1 on the first failure, with
//! the input's size and the broken invariant; prints the count and the time.

#[path = "../tests/it/support/replies.rs"]
mod replies;

use std::time::Instant;

use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let cases: u64 = argv
        .iter()
        .position(|a| a == "--cases")
        .and_then(|i| argv.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let mut runner = TestRunner::new(Config::default());
    let strategy = (replies::reply(), replies::limit());
    let started = Instant::now();
    let mut bytes = 0u64;
    for i in 0..cases {
        let (text, limit) = match strategy.new_tree(&mut runner) {
            Ok(tree) => tree.current(),
            Err(e) => {
                eprintln!("generator failed: {e}");
                std::process::exit(2);
            }
        };
        bytes += text.len() as u64;
        if let Err(v) = actors::discord::chunking::verify(&text, limit) {
            eprintln!(
                "input {i} ({} bytes, limit {limit}) failed: {v}",
                text.len()
            );
            eprintln!("{text:?}");
            std::process::exit(1);
        }
        if (i + 1) % 100_000 == 0 {
            println!(
                "{} inputs checked, {:.0} s",
                i + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!(
        "{cases} inputs ({:.1} MB of text) split and verified, no failure, in {:.1} s",
        bytes as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
}
