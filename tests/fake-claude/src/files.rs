//! Session files: `$HOME/.claude/projects/<cwd with non-alphanumerics as '-'>/<id>.jsonl`,
//! one line per turn, so `--resume` really resumes; ids are UUIDs, as the CLI's.

use crate::args::DEFAULT_MODEL;
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub(crate) fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// A random version-4 UUID from the kernel's random source.
pub(crate) fn new_uuid() -> String {
    let mut b = [0u8; 16];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = std::io::Read::read_exact(&mut f, &mut b);
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    });
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

pub(crate) fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

pub(crate) fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from)
}

pub(crate) fn projects_dir() -> PathBuf {
    home().join(".claude").join("projects")
}

pub(crate) fn mangle(cwd: &Path) -> String {
    cwd.to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// Finds a stored session in any project directory (2.1.330 resumes across cwds).
pub(crate) fn find_session(id: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(projects_dir()).ok()?;
    entries
        .flatten()
        .map(|e| e.path().join(format!("{id}.jsonl")))
        .find(|p| p.exists())
}

/// One stored turn of a session.
pub(crate) struct Turn {
    pub(crate) prompt: String,
    pub(crate) cost: f64,
    pub(crate) model: String,
}

pub(crate) fn read_turns(path: &Path) -> Vec<Turn> {
    let Ok(file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Value>(&l).ok())
        .map(|v| Turn {
            prompt: v["prompt"].as_str().unwrap_or_default().to_string(),
            cost: v["cost"].as_f64().unwrap_or(0.0),
            model: v["model"].as_str().unwrap_or(DEFAULT_MODEL).to_string(),
        })
        .collect()
}

pub(crate) fn append_turn(path: &Path, turn: &Turn) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let line = json!({"prompt": turn.prompt, "cost": turn.cost, "model": turn.model});
        let _ = writeln!(f, "{line}");
    }
}
