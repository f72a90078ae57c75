//! The durable path from an accepted body to committed table rows.
//!
//! ```text
//! HTTP handler ──parse──► WalMsg::Append ──► sequencer thread: append, group fsync, in offset order
//!                                                 │ (reply: offset, after the fsync)
//!                                                 ▼
//!                                            dispatcher task ──► one writer task per table
//!                                                 │                 (encodes each batch into the next
//!                                                 │                  commit's files as it comes;
//!                                                 │                  commit every interval / N rows,
//!                                                 │                  txn = highest offset covered)
//!                                                 ▼
//!                                            tracker: watermark = every body at or below it is
//!                                            committed to all its tables → WAL trim, backpressure
//! ```
//!
//! # Invariants
//! - Offsets reach the dispatcher, and each table writer, in increasing order, so a table commit
//!   that covers offset `o` covers every row of that table from offsets `<= o`.
//! - On start, every row of a retained WAL record is re-dispatched unless its table's committed
//!   offset is at or above the record's: exactly the rows lost in a crash are written again.
//! - WAL segments are deleted only below the watermark.
//! - Rows wait for their commit as compressed Parquet pages, not as Arrow columns. If encoding or
//!   the commit fails, delta-rs's writer has discarded them: the table writer reads its rows of
//!   the uncommitted offsets again from the WAL (which still holds them: they are above the
//!   watermark) and commits them before anything newer.

pub mod idempotency;
pub mod record;
mod sequencer;
mod service;
mod tables;

pub use service::{start, Pipeline, PipelineTask, RecoveryReport, SubmitError};
