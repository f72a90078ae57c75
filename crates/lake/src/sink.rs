//! The narrow interface through which the pipeline writes a table: append batches that cover the
//! write-ahead log up to an offset, read back the last committed offset, evolve the schema.
//! [`DeltaSink`] implements it for Delta Lake; another table format can sit beside it without
//! touching ingest or parsing.
//!
//! Exactly-once: every commit carries an application transaction (`txn`) with app id
//! [`WAL_APP_ID`] and version = the highest WAL offset it covers. A sink only ever commits
//! every row of its table up to that offset (the caller feeds offsets in order), so after a crash
//! replaying the WAL and skipping rows at or below [`TableSink::committed_offset`] re-adds exactly
//! the rows that were lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::{Schema, SchemaRef};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::operations::write::SchemaMode;
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::SaveMode;
use deltalake::DeltaTable;

use crate::unify::{conform, merged_schema};
use crate::{Lake, LakeError, TableId};

/// The application id of the transactions that record WAL offsets.
pub const WAL_APP_ID: &str = "gamelake-wal";

/// What a commit did.
#[derive(Debug, Clone)]
pub struct CommitSummary {
    pub version: u64,
    pub rows: usize,
    pub duration: Duration,
    /// Columns this commit added to the table.
    pub new_columns: Vec<String>,
}

/// A table the pipeline appends to.
#[async_trait]
pub trait TableSink: Send {
    fn id(&self) -> &TableId;
    /// The highest WAL offset all of whose rows for this table are committed.
    fn committed_offset(&self) -> Option<u64>;
    /// The committed columns, or `None` before the first commit.
    fn schema(&self) -> Option<SchemaRef>;
    /// Commits `batches` (rows of WAL offsets up to `through_offset`) in one transaction,
    /// adding new columns as nullable.
    async fn append(
        &mut self,
        batches: Vec<RecordBatch>,
        through_offset: u64,
    ) -> Result<CommitSummary, LakeError>;
}

/// A Delta Lake table under the lake root.
pub struct DeltaSink {
    lake: Lake,
    id: TableId,
    partition_column: String,
    table: Option<DeltaTable>,
    committed: Option<u64>,
    schema: Option<SchemaRef>,
    writer_properties: WriterProperties,
}

impl DeltaSink {
    /// Opens the table (it may not exist yet) and reads its committed WAL offset.
    pub async fn open(lake: &Lake, id: TableId, partition_column: &str) -> Result<Self, LakeError> {
        let table = lake.load(&id).await?;
        let mut sink = Self {
            lake: lake.clone(),
            id,
            partition_column: partition_column.to_string(),
            table: None,
            committed: None,
            schema: None,
            writer_properties: WriterProperties::builder()
                .set_compression(Compression::ZSTD(
                    ZstdLevel::try_new(1).expect("level 1 is valid"),
                ))
                .build(),
        };
        if let Some(table) = table {
            sink.adopt(table).await?;
        }
        Ok(sink)
    }

    async fn adopt(&mut self, table: DeltaTable) -> Result<(), LakeError> {
        let delta = |source| LakeError::Delta {
            table: self.id.to_string(),
            source,
        };
        let state = table.snapshot().map_err(delta)?;
        let version = state
            .transaction_version(table.log_store().as_ref(), WAL_APP_ID)
            .await
            .map_err(delta)?;
        self.committed = version.and_then(|v| u64::try_from(v).ok());
        self.schema = Some(state.snapshot().arrow_schema());
        self.table = Some(table);
        Ok(())
    }
}

#[async_trait]
impl TableSink for DeltaSink {
    fn id(&self) -> &TableId {
        &self.id
    }

    fn committed_offset(&self) -> Option<u64> {
        self.committed
    }

    fn schema(&self) -> Option<SchemaRef> {
        self.schema.clone()
    }

    async fn append(
        &mut self,
        batches: Vec<RecordBatch>,
        through_offset: u64,
    ) -> Result<CommitSummary, LakeError> {
        let started = Instant::now();
        debug_assert!(
            self.committed.is_none_or(|c| c < through_offset),
            "offsets only grow"
        );
        let table_name = self.id.to_string();
        let merged = merged_schema(self.schema.as_deref(), &batches);
        let old_columns: Vec<String> = self
            .schema
            .as_ref()
            .map(|s| s.fields().iter().map(|f| f.name().clone()).collect())
            .unwrap_or_default();
        let new_columns: Vec<String> = merged
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .filter(|n| self.schema.is_some() && !old_columns.contains(n))
            .collect();
        let conformed: Vec<RecordBatch> = batches
            .iter()
            .map(|b| conform(b, &merged, &table_name))
            .collect::<Result<_, _>>()?;
        let rows = conformed.iter().map(|b| b.num_rows()).sum();
        let table = match self.table.take() {
            Some(t) => t,
            None => self.lake.unloaded(&self.id)?,
        };
        let commit = CommitProperties::default()
            .with_application_transaction(Transaction::new(WAL_APP_ID, through_offset as i64))
            // Streaming commits must not pay for log clean-up; maintenance does it.
            .with_cleanup_expired_logs(Some(false))
            .with_max_retries(5);
        let result = table
            .clone()
            .write(conformed)
            .with_save_mode(SaveMode::Append)
            .with_schema_mode(SchemaMode::Merge)
            .with_partition_columns([self.partition_column.clone()])
            .with_writer_properties(self.writer_properties.clone())
            .with_commit_properties(commit)
            .await;
        let table = match result {
            Ok(t) => t,
            Err(source) => {
                // Keep the previous handle so the next attempt starts from a known snapshot.
                self.table = Some(table);
                return Err(LakeError::Delta {
                    table: table_name,
                    source,
                });
            }
        };
        let version = table.version().unwrap_or(0);
        self.schema = Some(Arc::new(Schema::clone(
            &table
                .snapshot()
                .map_err(|source| LakeError::Delta {
                    table: table_name.clone(),
                    source,
                })?
                .snapshot()
                .arrow_schema(),
        )));
        self.committed = Some(through_offset);
        self.table = Some(table);
        Ok(CommitSummary {
            version,
            rows,
            duration: started.elapsed(),
            new_columns,
        })
    }
}

/// Replaces the rows of `table` that match `predicate` (a partition, e.g.
/// `event_date = '2026-11-28'`) with `batches` in one commit, creating the table partitioned
/// by `partition_columns` if needed. Rows outside the predicate make the commit fail. Returns
/// the new version and the table at it. `loaded` is a handle from an earlier call (saves
/// reading the log again; a commit made by someone else since is caught by Delta's conflict
/// check and the commit retried against it).
pub async fn replace_partition(
    lake: &Lake,
    id: &TableId,
    loaded: Option<DeltaTable>,
    batches: Vec<RecordBatch>,
    partition_columns: &[String],
    predicate: &str,
    metadata: impl IntoIterator<Item = (String, serde_json::Value)>,
) -> Result<(u64, DeltaTable), LakeError> {
    let delta = |source| LakeError::Delta {
        table: id.to_string(),
        source,
    };
    let commit = CommitProperties::default()
        .with_metadata(metadata)
        .with_max_retries(10);
    let existing = match loaded {
        Some(t) => Some(t),
        None => lake.load(id).await?,
    };
    let builder = match existing {
        Some(table) => table
            .write(batches)
            .with_save_mode(SaveMode::Overwrite)
            .with_replace_where(predicate.to_string()),
        None => lake
            .unloaded(id)?
            .write(batches)
            .with_save_mode(SaveMode::Append),
    };
    let table = builder
        .with_schema_mode(SchemaMode::Merge)
        .with_partition_columns(partition_columns.to_vec())
        .with_commit_properties(commit)
        .await
        .map_err(delta)?;
    Ok((table.version().unwrap_or(0), table))
}
