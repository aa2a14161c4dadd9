//! The integration tests, one binary: the real application in-process and the real binary,
//! with real SQLite files, the stand-in `claude` (`tests/fake-claude`) as a real child process,
//! and the real serenity client against a Discord-compatible server on 127.0.0.1.

mod channels;
mod conformance;
mod console;
mod discord;
mod experience;
mod http;
mod limits;
mod live;
mod recovery;
mod sandbox;
mod schedules;
mod service;
mod slash;
mod support;
mod worktrees;
