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

pub mod distinct_text;
pub mod error;
pub mod int_text;
pub mod logstore;
pub mod query;
pub mod settle;
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

/// Helpers of the crate's tests.
#[cfg(test)]
pub(crate) mod test_util {
    use deltalake::arrow::array::Int64Array;

    use crate::{Lake, QueryEngine};

    /// `sum(a)` of `silver.<table>` as a query over the lake sees it.
    pub(crate) async fn sum_of_a(lake: &Lake, table: &str) -> i64 {
        let (_, batches) = QueryEngine::new(lake.clone())
            .sql(&format!("SELECT sum(a) AS s FROM silver.{table}"))
            .await
            .unwrap();
        batches[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0)
    }
}
