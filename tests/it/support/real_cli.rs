//! The real `claude` CLI from npm (2.1.330, the version the fixtures were observed with) and
//! the scriptable Messages-API stand-in it talks to (`tests/fixtures/claude-cli/mock_scripted.py`).
//! The CLI is installed into Cargo's target directory on first use (`npm install`), or taken
//! from `COORDINATOR_REAL_CLAUDE`.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The CLI version installed.
pub const VERSION: &str = "2.1.330";

/// The real CLI's native binary, installed if missing. Panics with what to do when npm fails.
pub fn real_claude() -> PathBuf {
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if let Some(path) = std::env::var_os("COORDINATOR_REAL_CLAUDE") {
        return PathBuf::from(path);
    }
    let _one_at_a_time = INSTALL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let prefix = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("real-claude-{VERSION}"));
    let binary = prefix.join("node_modules/@anthropic-ai/claude-code-linux-x64/claude");
    if !binary.exists() {
        std::fs::create_dir_all(&prefix).expect("mkdir");
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg(format!("@anthropic-ai/claude-code@{VERSION}"))
            .stdout(Stdio::null())
            .status();
        assert!(
            status.is_ok_and(|s| s.success()) && binary.exists(),
            "could not install the real CLI with npm into {} (or set COORDINATOR_REAL_CLAUDE)",
            prefix.display()
        );
    }
    binary
}

/// The Messages-API stand-in, on a free port of 127.0.0.1, stopped when dropped.
pub struct MessagesStub {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
}

impl MessagesStub {
    /// Starts it, logging every request to `log`.
    pub fn start(log: &Path) -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/claude-cli/mock_scripted.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg("0")
            .env("STUB_LOG", log)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 runs the Messages stand-in");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("the stand-in prints its port");
        let port: u16 = line.trim().parse().expect("a port");
        Self {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }
}

impl Drop for MessagesStub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
