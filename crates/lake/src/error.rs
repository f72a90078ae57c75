//! Errors of the lake crate.

/// What went wrong reading or writing a table.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    #[error("invalid storage root `{root}`: {reason}")]
    InvalidRoot { root: String, reason: String },
    #[error("table `{table}`: {source}")]
    Delta {
        table: String,
        #[source]
        source: deltalake::DeltaTableError,
    },
    #[error("listing `{prefix}`: {source}")]
    Store {
        prefix: String,
        #[source]
        source: object_store::Error,
    },
    #[error("table `{table}`: {reason}")]
    Schema { table: String, reason: String },
    #[error(transparent)]
    Query(#[from] deltalake::datafusion::error::DataFusionError),
    #[error(transparent)]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
}
