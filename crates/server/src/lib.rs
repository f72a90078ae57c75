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
