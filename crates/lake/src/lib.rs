//! The lake: Delta Lake tables under one storage root, written by the pipeline and read with
//! DataFusion.
//!
//! ```text
//! batches + WAL offset ──► TableSink (DeltaSink) ──► Parquet files + _delta_log commit (txn = offset)
//!                                                             │
//!      SQL ──► QueryEngine (DataFusion) ──► LakeSchema ──► DeltaScan per table, latest snapshot
//! ```
//!
//! # Layout
//! - [`storage`]: the storage root (an `object_store` URL) and where each table lives.
//! - [`logstore`]: the log store tables are opened with (a kernel engine with a small readahead).
//! - [`sink`]: the narrow write interface ([`TableSink`]) and its Delta implementation.
//! - [`unify`]: fitting batches with differing schemas to one table schema.
//! - [`query`]: the DataFusion session with the `bronze`, `silver`, `gold` schemas.
//!
//! Table I/O goes through `object_store` only, so the same code serves `file://` and `s3://`.

pub mod error;
pub mod logstore;
pub mod query;
pub mod sink;
pub mod storage;
pub mod unify;

pub use deltalake;
pub use deltalake::arrow;
pub use deltalake::datafusion;
pub use error::LakeError;
pub use query::QueryEngine;
pub use sink::{CommitSummary, DeltaSink, TableSink};
pub use storage::{FileInfo, Lake, TableId, TableInfo};
