//! The `gamelake` binary's library: configuration, the pipeline, the HTTP API and the commands.
//!
//! # Layout
//! - [`config`]: file, environment and flags into a validated [`config::Config`].
//! - [`pipeline`]: WAL, sequencing, table writers, recovery.
//! - [`http`]: the routes of `DESIGN.md`.
//! - [`live`]: the dashboard's per-second feed and live KPIs.
//! - [`pg`]: the Postgres wire protocol.
//! - [`system`]: the `system` schema (tables, ingest, dead letters, queries).
//! - [`serve`]: wiring it all on a listener with a shutdown future.
//! - [`sql`], [`tables`]: the `sql` and `tables` commands.

pub mod config;
pub mod http;
pub mod jobs;
pub mod live;
pub mod metrics;
pub mod pg;
pub mod pg_compat;
pub mod pg_guard;
pub mod pipeline;
pub mod serve;
pub mod sql;
pub mod system;
pub mod tables;

/// A multi-threaded tokio runtime of a stage's own (two workers named `name`, at most
/// `max_blocking` blocking threads kept alive `keep_alive`), built on first use in `cell` and
/// never dropped, so the OS time-slices the stage against the HTTP workers and its allocations
/// stay on its own few threads.
pub(crate) fn stage_runtime(
    cell: &'static std::sync::OnceLock<tokio::runtime::Runtime>,
    name: &str,
    max_blocking: usize,
    keep_alive: std::time::Duration,
) -> tokio::runtime::Handle {
    cell.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(max_blocking)
            .thread_keep_alive(keep_alive)
            .thread_name(name)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("starting the `{name}` runtime: {e}"))
    })
    .handle()
    .clone()
}
