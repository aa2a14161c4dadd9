//! What the sandbox costs per CLI start: `claude --version` started and reaped, directly and
//! under the bubblewrap command the service builds (`actors::claude::sandbox`), for the release
//! stand-in and for the real CLI (2.1.330 from npm: `--real PATH`, or `COORDINATOR_REAL_CLAUDE`).
//! Alternating, so the machine's noise falls on both sides alike.
//!
//! ```sh
//! apt-get install -y bubblewrap
//! cargo build --release -p fake-claude
//! cargo bench --bench sandbox -- --starts 200 --real target/tmp/real-claude-2.1.330/node_modules/@anthropic-ai/claude-code-linux-x64/claude
//! ```

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use actors::claude::sandbox::{Sandbox, SandboxConfig};
use clap::Parser;
use hdrhistogram::Histogram;

#[derive(Parser, Debug)]
struct Args {
    /// Starts per side for the stand-in (the real CLI gets a fifth of them).
    #[arg(long, default_value_t = 200)]
    starts: usize,
    /// The real CLI's binary.
    #[arg(long, env = "COORDINATOR_REAL_CLAUDE")]
    real: Option<PathBuf>,
    /// Ignored (cargo bench passes it).
    #[arg(long)]
    bench: bool,
}

fn run(mut cmd: Command) -> u64 {
    let started = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("start");
    assert!(status.success(), "{cmd:?} failed");
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn report(name: &str, plain: &Histogram<u64>, sealed: &Histogram<u64>) {
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{name}: direct median {:.2} ms (p95 {:.2}), sandboxed median {:.2} ms (p95 {:.2}): +{:.2} ms per start",
        ms(plain, 0.5),
        ms(plain, 0.95),
        ms(sealed, 0.5),
        ms(sealed, 0.95),
        ms(sealed, 0.5) - ms(plain, 0.5),
    );
}

fn measure(name: &str, binary: &Path, sandbox: &Sandbox, dir: &Path, starts: usize) {
    let hist = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let (mut plain, mut sealed) = (hist(), hist());
    let (proj, home) = (dir.join("proj"), dir.join("home"));
    for _ in 0..starts {
        let mut direct = Command::new(binary);
        direct
            .arg("--version")
            .current_dir(&proj)
            .env("HOME", &home);
        let _ = plain.record(run(direct));
        let mut wrapped = sandbox.command(binary, &proj, &proj, Some(&home));
        wrapped
            .arg("--version")
            .current_dir(&proj)
            .env("HOME", &home);
        let _ = sealed.record(run(wrapped));
    }
    report(name, &plain, &sealed);
}

fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().expect("tmp");
    for d in ["proj", "home", "state", "other"] {
        std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
    }
    let config = SandboxConfig {
        bwrap: "bwrap".into(),
        hide_paths: Vec::new(),
        writable_paths: Vec::new(),
    };
    // What a deployment hides: its state and another channel's project.
    let hidden = [dir.path().join("state"), dir.path().join("other")];
    let sandbox = Sandbox::new(&config, hidden, &dir.path().join("state"))
        .expect("bubblewrap works here (apt-get install -y bubblewrap)");
    println!(
        "sandbox cost per CLI start: {} starts per side (stand-in)",
        args.starts
    );
    measure(
        "stand-in",
        &support::stand_in(),
        &sandbox,
        dir.path(),
        args.starts,
    );
    match &args.real {
        Some(real) => measure(
            "real CLI",
            real,
            &sandbox,
            dir.path(),
            (args.starts / 5).max(5),
        ),
        None => println!("real CLI: not measured (--real PATH or COORDINATOR_REAL_CLAUDE)"),
    }
}
