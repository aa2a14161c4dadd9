//! The actors' own tests, one binary: the store against real SQLite files, the runner against
//! shell scripts and replays of the real CLI's recorded output, the stream-json parser against
//! every sample, and the reply splitter's properties.

mod chunking;
mod runner_process;
mod runner_samples;
mod store;
mod stream_samples;
mod support;
