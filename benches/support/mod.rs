//! Shared by the benchmarks: the release build of the stand-in `claude`, and a deployment of
//! N channels in a temporary directory, loaded by the real settings loader.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use claude_coordinator::settings::Settings;

/// The stand-in `claude` of this build profile.
pub fn stand_in() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/release/deps/BENCH-HASH -> target/release/claude
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("claude"))
        .expect("target dir");
    assert!(
        path.exists(),
        "{} missing: run `cargo build --release -p fake-claude` first",
        path.display()
    );
    path
}

/// A deployment with `channels` channels sharing one project directory, streaming off (the
/// streaming bench measures that; these measure the coordinator's own cost per turn).
pub fn settings(dir: &Path, channels: usize, cap: usize) -> Settings {
    let mut text = format!(
        "[claude]\nbinary = \"{}\"\nmax_concurrent_runs = {cap}\nsandbox = \"none\"\n[claude.env]\nHOME = \"{}\"\n\
         [store]\npath = \"{}\"\n[channels]\nqueue_limit = 100000\nidle_secs = 0\ncommand_prefix = \"!\"\n\
         [log]\nformat = \"text\"\nfilter = \"error\"\n",
        stand_in().display(),
        dir.join("home").display(),
        dir.join("bench.db").display(),
    );
    for i in 0..channels {
        let _ = write!(
            text,
            "[[channel]]\nid = {}\nname = \"c{i}\"\nproject_dir = \"{}\"\nstream = false\n",
            10_000 + i,
            dir.join("proj").display()
        );
    }
    std::fs::create_dir_all(dir.join("proj")).expect("mkdir");
    std::fs::create_dir_all(dir.join("home")).expect("mkdir");
    let overlay = dir.join("bench.toml");
    std::fs::write(&overlay, text).expect("write overlay");
    Settings::load(Some(&overlay)).expect("settings")
}
