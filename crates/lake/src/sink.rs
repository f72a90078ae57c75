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
use deltalake::arrow::array::{Array, BooleanArray, Date32Array, RecordBatch};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::{Schema, SchemaRef};
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::operations::write::SchemaMode;
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::SaveMode;
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::{DeltaTable, DeltaTableError};

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
            writer_properties: writer_properties(),
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
        // The common case, no new column on an existing table: delta-rs's streaming writer, one
        // Parquet file per partition value and no query plan. New columns and the first commit
        // go through the write operation, which merges the schema (the streaming writer drops
        // new columns of partitioned tables, delta-rs issue 2355).
        let streaming = match self.schema.is_some() && new_columns.is_empty() {
            true => by_partition(&conformed, &self.partition_column),
            false => None,
        };
        let result = if let Some(parts) = streaming {
            self.append_streaming(table.clone(), parts, commit).await
        } else {
            table
                .clone()
                .write(conformed)
                .with_save_mode(SaveMode::Append)
                .with_schema_mode(SchemaMode::Merge)
                .with_partition_columns([self.partition_column.clone()])
                .with_writer_properties(self.writer_properties.clone())
                .with_commit_properties(commit)
                .await
        };
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

/// Parquet settings of ingest commits: zstd level 1; the raw `line` of the bronze tables (unique
/// text, ~240 bytes) without a dictionary or min/max statistics, which cost CPU on every value
/// and help neither size nor pruning.
fn writer_properties() -> WriterProperties {
    let line = ColumnPath::from(gamelake_common::names::COL_LINE);
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("level 1 is valid"),
        ))
        .set_column_dictionary_enabled(line.clone(), false)
        .set_column_statistics_enabled(line, EnabledStatistics::None)
        .build()
}

impl DeltaSink {
    /// One commit of `parts` (rows of one day each, with only columns the table has) through
    /// the streaming writer.
    async fn append_streaming(
        &self,
        mut table: DeltaTable,
        parts: Vec<(i32, RecordBatch)>,
        commit: CommitProperties,
    ) -> Result<DeltaTable, DeltaTableError> {
        let mut writer = RecordBatchWriter::for_table(&table)?
            .with_writer_properties(self.writer_properties.clone())
            .with_commit_properties(commit);
        for (date, batch) in parts {
            let values = indexmap::IndexMap::from([(
                self.partition_column.clone(),
                delta_kernel::expressions::Scalar::Date(date),
            )]);
            writer
                .write_partition(batch, &values, WriteMode::Default)
                .await?;
        }
        writer.flush_and_commit(&mut table).await?;
        Ok(table)
    }
}

/// `batches` split by their `Date32` partition column: one (day, rows) per day in each batch,
/// the batch itself when it holds one day (the usual case: live traffic). `None` when the
/// column is missing, not a date or has nulls.
fn by_partition(batches: &[RecordBatch], column: &str) -> Option<Vec<(i32, RecordBatch)>> {
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let days = batch
            .column_by_name(column)?
            .as_any()
            .downcast_ref::<Date32Array>()?;
        if days.null_count() > 0 {
            return None;
        }
        let values = days.values();
        let Some(&first) = values.first() else {
            continue;
        };
        if values.iter().all(|d| *d == first) {
            out.push((first, batch.clone()));
            continue;
        }
        let mut distinct: Vec<i32> = values.to_vec();
        distinct.sort_unstable();
        distinct.dedup();
        for day in distinct {
            let mask = BooleanArray::from_iter(values.iter().map(|d| Some(*d == day)));
            out.push((day, filter_record_batch(batch, &mask).ok()?));
        }
    }
    Some(out)
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

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{ArrayRef, Int64Array};
    use deltalake::arrow::datatypes::{DataType, Field};

    fn batch(days: &[i32], columns: &[(&str, Vec<i64>)]) -> RecordBatch {
        let mut fields = vec![Field::new("event_date", DataType::Date32, true)];
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(Date32Array::from(days.to_vec()))];
        for (name, values) in columns {
            fields.push(Field::new(*name, DataType::Int64, true));
            arrays.push(Arc::new(Int64Array::from(values.clone())));
        }
        RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays).unwrap()
    }

    #[test]
    fn batches_split_by_day_only_when_they_span_days() {
        let one = batch(&[5, 5, 5], &[("n", vec![1, 2, 3])]);
        let parts = by_partition(std::slice::from_ref(&one), "event_date").unwrap();
        assert_eq!(parts.len(), 1);
        assert_eq!((parts[0].0, parts[0].1.num_rows()), (5, 3));
        let two = batch(&[6, 5, 6], &[("n", vec![1, 2, 3])]);
        let parts = by_partition(&[two], "event_date").unwrap();
        let got: Vec<(i32, usize)> = parts.iter().map(|(d, b)| (*d, b.num_rows())).collect();
        assert_eq!(got, vec![(5, 1), (6, 2)]);
        // Not a date column, or a missing one: the caller takes the write operation.
        assert!(by_partition(std::slice::from_ref(&one), "n").is_none());
        assert!(by_partition(&[one], "nope").is_none());
        let nulls = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "event_date",
                DataType::Date32,
                true,
            )])),
            vec![Arc::new(Date32Array::from(vec![Some(1), None]))],
        )
        .unwrap();
        assert!(by_partition(&[nulls], "event_date").is_none());
    }

    /// First commit (write operation), a two-day commit with known columns (streaming writer),
    /// a commit with a new column (write operation again): every row lands in its day, the
    /// offsets are the ones committed, and the new column reads NULL for older rows.
    #[tokio::test]
    async fn appends_stream_known_columns_and_merge_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let id = TableId::new("silver", "t");
        let mut sink = DeltaSink::open(&lake, id.clone(), "event_date")
            .await
            .unwrap();
        sink.append(vec![batch(&[20000], &[("a", vec![1])])], 1)
            .await
            .unwrap();
        let two_days = batch(&[20000, 20001, 20001], &[("a", vec![2, 3, 4])]);
        let s = sink.append(vec![two_days], 2).await.unwrap();
        assert_eq!((s.version, s.rows), (1, 3));
        assert!(s.new_columns.is_empty());
        let s = sink
            .append(vec![batch(&[20001], &[("a", vec![5]), ("b", vec![50])])], 3)
            .await
            .unwrap();
        assert_eq!(s.new_columns, vec!["b".to_string()]);

        let reopened = DeltaSink::open(&lake, id.clone(), "event_date")
            .await
            .unwrap();
        assert_eq!(reopened.committed_offset(), Some(3));
        let mut by_day: Vec<(String, u64)> = lake
            .files(&id)
            .await
            .unwrap()
            .into_iter()
            .map(|f| (f.partition["event_date"].clone().unwrap(), f.rows))
            .collect();
        by_day.sort();
        assert_eq!(
            by_day,
            vec![
                ("2024-10-04".to_string(), 1),
                ("2024-10-04".to_string(), 1),
                ("2024-10-05".to_string(), 1),
                ("2024-10-05".to_string(), 2),
            ]
        );
        let q = crate::QueryEngine::new(lake);
        let (_, rows) = q
            .sql("SELECT CAST(event_date AS VARCHAR) AS d, a, b FROM silver.t ORDER BY a")
            .await
            .unwrap();
        let rows = deltalake::arrow::util::pretty::pretty_format_batches(&rows)
            .unwrap()
            .to_string();
        let expected = [
            "+------------+---+----+",
            "| d          | a | b  |",
            "+------------+---+----+",
            "| 2024-10-04 | 1 |    |",
            "| 2024-10-04 | 2 |    |",
            "| 2024-10-05 | 3 |    |",
            "| 2024-10-05 | 4 |    |",
            "| 2024-10-05 | 5 | 50 |",
            "+------------+---+----+",
        ]
        .join("\n");
        assert_eq!(rows, expected);
    }
}
