//! Synthetic MMORPG logs and the HTTP load generator.
//!
//! - [`generator`]: deterministic (per seed) game events in the three wire formats of
//!   `LOG_FORMAT.md`, with Zipf-like accounts, Korean names and an optional share of malformed
//!   lines. The same generator feeds `gamelake demo`.
//! - [`sender`]: open-loop pacing of bodies against `POST /v1/logs`, with latency statistics
//!   and an acknowledgement log of `logId`s.

pub mod generator;
pub mod sender;
pub mod stats;

pub use generator::{Format, GenConfig, Generator};
pub use sender::{find_max, run, FindMax, LoadConfig, MaxReport, Report};
