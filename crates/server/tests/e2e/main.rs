//! End-to-end tests: the real `gamelake` binary on free ports and temp dirs.

mod crash;
mod dashboard;
mod duckdb;
mod evolution;
mod import;
mod ingest;
mod jobs;
mod loadgen;
mod pg;
mod repl;
mod util;
