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
//!
//! # Cost per commit
//!
//! A streaming table gets a commit a second for as long as the server runs, so a commit must not
//! cost more as the table grows. delta-rs's commit path keeps an eager snapshot and, after every
//! commit, replays the list of every file of the table into it (a 10-minute soak spent ~30 % of
//! the server's CPU there, growing with the file count). A blind append needs none of that: it
//! reads nothing, so it only needs the table's metadata (schema, partition columns, protocol) and
//! the version it commits after. [`DeltaSink`] therefore keeps a metadata-only view
//! ([`BlindDeltaTable`]) and writes the commit itself with delta-rs's log store: the `add`
//! actions of the files delta-rs's writer produced (with their statistics), the `txn`, and
//! `commitInfo`, put at `version + 1` only if that version does not exist yet. When another
//! writer took that version (compaction, another tool), its actions are checked for what
//! conflicts with a blind append (a schema or protocol change, the same WAL offsets) and the
//! commit moves on to the next version. Every `delta.checkpointInterval` commits (100 by
//! default) it writes a checkpoint in the background, as delta-rs's commit would.
//!
//! # Memory of checkpoints
//!
//! A checkpoint replays the commits since the last one. The kernel's default engine opens up to
//! 1 000 log files at once, each with a JSON decoder sized for 1 000 rows (~100 KB), and on a
//! local disk each open file holds a blocking thread. The streaming tables all reach their
//! hundredth commit within seconds of each other, so at 250 000 events/s the thirteen
//! checkpoints of one round held ~430 MB of decoders and ~50 more threads at once. Checkpoints
//! therefore run one at a time in the process ([`CHECKPOINTS`]), with the engine of the lake's
//! log store, which reads [`LOG_READAHEAD`](crate::logstore::LOG_READAHEAD) files ahead
//! ([`LeanLogStore`](crate::logstore::LeanLogStore)): a background checkpoint has no one
//! waiting for it. Tables whose
//! protocol needs more of a writer than this (column mapping, row tracking, in-commit
//! timestamps, …) and commits that add columns take delta-rs's write operation instead.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use deltalake::arrow::array::{Array, BooleanArray, Date32Array, RecordBatch};
use deltalake::arrow::compute::filter_record_batch;
use deltalake::arrow::datatypes::{DataType, SchemaRef};
use deltalake::kernel::transaction::{
    CommitBuilder, CommitData, CommitProperties, TransactionError,
};
use deltalake::kernel::{Action, Protocol, Transaction};
use deltalake::logstore::{CommitOrBytes, LogStoreRef};
use deltalake::operations::write::SchemaMode;
use deltalake::parquet::basic::Compression;
use deltalake::parquet::file::properties::{
    EnabledStatistics, WriterProperties, WriterPropertiesBuilder,
};
use deltalake::parquet::schema::types::ColumnPath;
use deltalake::protocol::{DeltaOperation, SaveMode};
use deltalake::writer::{DeltaWriter, RecordBatchWriter, WriteMode};
use deltalake::{BlindDeltaTable, DeltaTable, DeltaTableError};

use crate::unify::{adds_columns, conform, merged_schema};
use crate::{Lake, LakeError, TableId};

/// The application id of the transactions that record WAL offsets.
pub const WAL_APP_ID: &str = "gamelake-wal";

/// One background checkpoint at a time in the process (see "Memory of checkpoints").
static CHECKPOINTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

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

/// How many times a commit moves on to the next version after other writers took it.
const MAX_COMMIT_ATTEMPTS: usize = 50;

/// A Delta Lake table under the lake root.
pub struct DeltaSink {
    lake: Lake,
    id: TableId,
    partition_column: String,
    /// The table's metadata, without its file list; `None` before the table exists and after a
    /// write operation changed it (read again before the next blind append).
    blind: Option<BlindDeltaTable>,
    /// Whether the table's protocol allows blind appends written by this sink.
    blind_ok: bool,
    /// The latest table version this sink knows of (its own last commit, or the one it read).
    version: Option<u64>,
    committed: Option<u64>,
    schema: Option<SchemaRef>,
    writer_properties: WriterProperties,
    /// The background checkpoint, if one is being written.
    checkpoint: Option<tokio::task::JoinHandle<()>>,
    /// Rows encoded into the next commit's files as they came (see [`DeltaSink::stream`]).
    stream: Option<Stream>,
}

/// The open files of the next blind append, and what they hold.
struct Stream {
    writer: RecordBatchWriter,
    rows: usize,
    through: u64,
}

impl DeltaSink {
    /// Opens the table (it may not exist yet) and reads its committed WAL offset.
    pub async fn open(lake: &Lake, id: TableId, partition_column: &str) -> Result<Self, LakeError> {
        let mut sink = Self {
            lake: lake.clone(),
            id,
            partition_column: partition_column.to_string(),
            blind: None,
            blind_ok: false,
            version: None,
            committed: None,
            schema: None,
            writer_properties: writer_properties(),
            checkpoint: None,
            stream: None,
        };
        if lake.exists(&sink.id).await? {
            sink.read_metadata().await?;
        }
        Ok(sink)
    }

    /// Encodes `batch`, the table's rows of WAL offset `offset`, into the files of the next
    /// commit at once: the rows then wait for their commit as compressed Parquet pages instead
    /// of Arrow columns, which hold about twice the input's bytes (BENCHMARKS.md, issue 3,
    /// fifteenth session). [`DeltaSink::commit_stream`] commits them as a blind append.
    ///
    /// `Ok(false)`: the batch cannot go this way (a table not created yet, new columns, a
    /// protocol without blind appends); the caller commits the stream, then appends the batch
    /// with [`TableSink::append`]. On `Err` the stream is gone with every row in it, as
    /// delta-rs's writer discards its window on an error: the caller writes those rows again.
    pub async fn stream(&mut self, batch: &RecordBatch, offset: u64) -> Result<bool, LakeError> {
        debug_assert!(
            self.stream
                .as_ref()
                .map_or(self.committed, |s| Some(s.through))
                < Some(offset),
            "offsets only grow"
        );
        if self.version.is_none() {
            return Ok(false);
        }
        if self.blind.is_none() {
            self.read_metadata().await?;
        }
        let Some(schema) = self.schema.clone().filter(|_| self.blind_ok) else {
            return Ok(false);
        };
        if adds_columns(&schema, &batch.schema()) {
            return Ok(false);
        }
        let conformed = match conform(batch, &schema, &self.id.to_string()) {
            Ok(c) => c,
            Err(e) => {
                // As documented: an error ends the stream, whose rows are then written again.
                self.stream = None;
                return Err(e);
            }
        };
        let Some(parts) = by_partition(std::slice::from_ref(&conformed), &self.partition_column)
        else {
            return Ok(false);
        };
        if self.stream.is_none() {
            let writer = self.blind_writer().map_err(|e| self.delta_error(e))?;
            self.stream = Some(Stream {
                writer,
                rows: 0,
                through: offset,
            });
        }
        let stream = self.stream.as_mut().expect("opened above");
        if let Err(e) = write_days(&mut stream.writer, &self.partition_column, parts).await {
            self.stream = None;
            return Err(self.delta_error(e));
        }
        stream.rows += conformed.num_rows();
        stream.through = offset;
        Ok(true)
    }

    /// The rows encoded by [`DeltaSink::stream`] and not committed yet, and the highest WAL
    /// offset among them.
    pub fn streamed(&self) -> Option<(usize, u64)> {
        self.stream.as_ref().map(|s| (s.rows, s.through))
    }

    /// Approximate bytes of the open files of the stream (encoded pages, and the pages being
    /// filled).
    pub fn streamed_bytes(&self) -> usize {
        self.stream.as_ref().map_or(0, |s| s.writer.buffer_len())
    }

    /// Commits the streamed rows as one blind append. On `Err` the stream is gone: unless the
    /// commit landed after all ([`TableSink::committed_offset`] of a sink opened again), its
    /// rows must be written again.
    pub async fn commit_stream(&mut self) -> Result<CommitSummary, LakeError> {
        let started = Instant::now();
        let Some(Stream {
            mut writer,
            rows,
            through,
        }) = self.stream.take()
        else {
            return Err(LakeError::Schema {
                table: self.id.to_string(),
                reason: "no streamed rows to commit".into(),
            });
        };
        let adds = writer.flush().await.map_err(|e| self.delta_error(e))?;
        let version = self
            .commit_adds(adds, through)
            .await
            .map_err(|e| self.delta_error(e))?;
        self.committed = Some(through);
        Ok(CommitSummary {
            version,
            rows,
            duration: started.elapsed(),
            new_columns: Vec::new(),
        })
    }

    fn delta_error(&self, source: DeltaTableError) -> LakeError {
        LakeError::Delta {
            table: self.id.to_string(),
            source,
        }
    }

    /// Reads the latest version's metadata and committed WAL offset (not the file list).
    async fn read_metadata(&mut self) -> Result<(), LakeError> {
        let log_store = self.lake.unloaded(&self.id)?.log_store();
        let table = BlindDeltaTable::try_new_with_log_store(log_store.clone())
            .await
            .map_err(|e| self.delta_error(e))?;
        let version = table.version();
        let committed = wal_offset_at(&log_store, self.lake.table_url(&self.id), version)
            .await
            .map_err(|e| self.delta_error(e))?;
        self.committed = committed.and_then(|v| u64::try_from(v).ok());
        self.schema = Some(table.arrow_schema().map_err(|e| self.delta_error(e))?);
        self.blind_ok = blind_appends_supported(table.protocol())
            && table
                .table_properties()
                .column_mapping_mode
                .is_none_or(|m| m == delta_kernel::table_features::ColumnMappingMode::None);
        self.version = Some(version);
        self.blind = Some(table);
        Ok(())
    }
}

/// The WAL offset recorded by the `txn` of [`WAL_APP_ID`] as of `version`, read by the kernel's
/// log replay of transactions only.
async fn wal_offset_at(
    log_store: &LogStoreRef,
    root: url::Url,
    version: u64,
) -> Result<Option<i64>, DeltaTableError> {
    let engine = log_store.engine(None);
    tokio::task::spawn_blocking(move || {
        let snapshot = delta_kernel::snapshot::Snapshot::builder_for(root)
            .at_version(version)
            .build(engine.as_ref())?;
        snapshot.get_app_id_version(WAL_APP_ID, engine.as_ref())
    })
    .await
    .map_err(|e| DeltaTableError::Generic(e.to_string()))?
    .map_err(DeltaTableError::from)
}

/// Whether appending files with `add` actions alone is a valid write under `protocol`: writer
/// version 2 or lower, or table features that put no duty on an appending writer.
fn blind_appends_supported(protocol: &Protocol) -> bool {
    const APPEND_SAFE: [&str; 5] = [
        "appendOnly",
        "timestampNtz",
        "deletionVectors",
        "vacuumProtocolCheck",
        "changeDataFeed",
    ];
    let Ok(json) = serde_json::to_value(protocol) else {
        return false;
    };
    let writer_version = json["minWriterVersion"].as_i64().unwrap_or(i64::MAX);
    match json["writerFeatures"].as_array() {
        None => writer_version <= 2,
        Some(features) => features
            .iter()
            .all(|f| f.as_str().is_some_and(|f| APPEND_SAFE.contains(&f))),
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
        debug_assert!(self.stream.is_none(), "the stream is committed first");
        if self.blind.is_none() && self.version.is_some() {
            self.read_metadata().await?;
        }
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
        // The common case, no new column on an existing table: a blind append, one Parquet file
        // per partition value, no query plan and no file list. New columns and the first commit
        // go through the write operation, which merges the schema (the streaming writer drops
        // new columns of partitioned tables, delta-rs issue 2355).
        let parts = match self.blind_ok && new_columns.is_empty() {
            true => by_partition(&conformed, &self.partition_column),
            false => None,
        };
        let version = match parts {
            Some(parts) => self.append_blind(parts, through_offset).await,
            None => self.append_write(conformed, through_offset).await,
        }
        .map_err(|e| self.delta_error(e))?;
        self.committed = Some(through_offset);
        Ok(CommitSummary {
            version,
            rows,
            duration: started.elapsed(),
            new_columns,
        })
    }
}

/// Parquet settings of ingest commits: Snappy for every column, several times cheaper to
/// encode than zstd (zstd level 1 was ~10 % of server CPU at saturation) and read by every
/// engine. Not LZ4_RAW, though it encodes a little faster: parquet-java up to 1.15 (Spark 4.0,
/// EMR, Hive) fails on LZ4_RAW pages over 8 KiB when it evaluates a filter against a column's
/// dictionary ("all input must be consumed", apache/parquet-java#3478), so a Spark query with
/// `WHERE event_time >= …` failed on our files. Ingest files are short-lived: compaction
/// rewrites them with delta-rs's default, zstd level 4 (hourly by default), as ClickHouse's
/// merges rewrite its LZ4 parts. The raw `line` is set as in [`with_raw_line`]. Other columns
/// keep a dictionary until it reaches 64 KiB instead of 1 MiB.
/// Codes, worlds and item grades fit in far less. A column of unique values (`logId`, names)
/// gives up on its dictionary after ~2 000 values instead of ~30 000, each of which costs a hash
/// and a compare. That saves ~2 % of the server's CPU (dictionary interning 6.3 % → 4.6 % of the
/// profile) for files ~5 % larger until compaction rewrites them (BENCHMARKS.md, issue 3,
/// eighth session). Data pages are of [`DATA_PAGE_BYTES`], row groups of [`ROW_GROUP_ROWS`] as
/// in compacted files.
fn writer_properties() -> WriterProperties {
    with_raw_line(WriterProperties::builder())
        .set_compression(Compression::SNAPPY)
        .set_dictionary_page_size_limit(64 * 1024)
        .set_data_page_size_limit(DATA_PAGE_BYTES)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build()
}

/// The raw `line` of the bronze tables (unique text, ~240 bytes) without a dictionary and
/// min/max statistics, in ingest and compacted files alike: they cost CPU on every value and
/// help neither size nor pruning.
fn with_raw_line(builder: WriterPropertiesBuilder) -> WriterPropertiesBuilder {
    let line = ColumnPath::from(gamelake_common::names::COL_LINE);
    builder
        .set_column_dictionary_enabled(line.clone(), false)
        .set_column_statistics_enabled(line, EnabledStatistics::None)
}

/// Rows in a row group, of ingest and compacted files alike. delta-rs's default is parquet's,
/// 1 Mi rows. 128 Ki rows is about DuckDB's row group (122 880 rows) and gives readers finer
/// pruning. Both sides of a compaction hold about a row group of each file at a time:
/// - the writer holds a whole row group's encoded pages until it is complete: for bronze
///   (~250-byte lines) over 100 MiB a file with 1 Mi rows. On a minute of bronze at 400 000
///   events/s (48 files, 1.4 GB) a one-task compaction peaked at 399 MiB with 1 Mi rows and
///   294 MiB with 128 Ki (BENCHMARKS.md, issue 3, fourteenth session);
/// - the reader fetches each row group's column chunks whole. A second of bronze at 450 000
///   events/s is a file of ~27 MB; in one row group, the compaction's two read streams held
///   ~60 MB of it (heaptrack). Compacting 30 s of bronze peaked at 262–282 MiB from such files
///   and at 214–218 MiB from files in row groups of 128 Ki rows (BENCHMARKS.md, issue 3,
///   seventeenth session). Queries over the newest files read less for the same reason.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Bytes in a data page of ingest files, before compression; parquet's default is 1 MiB.
/// The writer encodes a page into a buffer that grows from empty, compresses it into another
/// and keeps the result until the row group is written: with 1 MiB pages those buffers are
/// large allocations, fresh memory each time (page faults) and copied at each growth. At
/// 450 000 events/s the growth of such buffers took 11 % of the server's CPU and its page
/// faults 7.7 %; with 64 KiB pages 8.1 % and 4.9 %, and the server spent ~4 % less CPU for
/// 1 % more bytes on disk (BENCHMARKS.md, issue 3, eighteenth session). Snappy compresses in
/// blocks of 64 KiB anyway. Compacted files keep 1 MiB pages, where zstd gains from them.
const DATA_PAGE_BYTES: usize = 64 * 1024;

/// Parquet settings of compaction: zstd level 4 as delta-rs's optimize uses by default (the
/// files are kept for years, so size matters more than encoding CPU), the raw `line` as in
/// ingest files ([`with_raw_line`]), and row groups of [`ROW_GROUP_ROWS`].
pub fn compaction_writer_properties() -> WriterProperties {
    with_raw_line(WriterProperties::builder())
        .set_compression(Compression::ZSTD(
            deltalake::parquet::basic::ZstdLevel::try_new(4).expect("zstd level 4 is valid"),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build()
}

impl DeltaSink {
    /// One commit through delta-rs's write operation on the fully loaded table: creates the
    /// table, merges new columns. Afterwards the metadata is read again before the next blind
    /// append.
    async fn append_write(
        &mut self,
        batches: Vec<RecordBatch>,
        through_offset: u64,
    ) -> Result<u64, DeltaTableError> {
        let loaded = match self.version {
            Some(_) => self.lake.load(&self.id).await.map_err(|e| match e {
                LakeError::Delta { source, .. } => source,
                other => DeltaTableError::Generic(other.to_string()),
            })?,
            None => None,
        };
        let table = match loaded {
            Some(t) => t,
            None => self
                .lake
                .unloaded(&self.id)
                .map_err(|e| DeltaTableError::Generic(e.to_string()))?,
        };
        let commit = CommitProperties::default()
            .with_application_transaction(Transaction::new(WAL_APP_ID, through_offset as i64))
            // Streaming commits must not pay for log clean-up; maintenance does it.
            .with_cleanup_expired_logs(Some(false))
            .with_max_retries(5);
        let table = table
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .with_schema_mode(SchemaMode::Merge)
            .with_partition_columns([self.partition_column.clone()])
            .with_writer_properties(self.writer_properties.clone())
            .with_commit_properties(commit)
            .await?;
        let version = table.version().unwrap_or(0);
        self.schema = Some(table.snapshot()?.snapshot().arrow_schema());
        self.version = Some(version);
        self.blind = None;
        Ok(version)
    }

    /// One commit of `parts` (rows of one day each, with only columns the table has) as a blind
    /// append: delta-rs's writer makes the Parquet files and their `add` actions, and the commit
    /// is put at the next free version (see the module docs).
    async fn append_blind(
        &mut self,
        parts: Vec<(i32, RecordBatch)>,
        through_offset: u64,
    ) -> Result<u64, DeltaTableError> {
        let mut writer = self.blind_writer()?;
        write_days(&mut writer, &self.partition_column, parts).await?;
        let adds = writer.flush().await?;
        self.commit_adds(adds, through_offset).await
    }

    /// delta-rs's writer of the files of a blind append, for the metadata this sink read.
    fn blind_writer(&self) -> Result<RecordBatchWriter, DeltaTableError> {
        let table = self
            .blind
            .as_ref()
            .expect("blind appends need the metadata");
        Ok(RecordBatchWriter::for_blind_appends(table)?
            .with_writer_properties(self.writer_properties.clone()))
    }

    /// Commits the files of `adds` (written for the metadata this sink read) at the next free
    /// version, with the `txn` of `through_offset`.
    async fn commit_adds(
        &mut self,
        adds: Vec<deltalake::kernel::Add>,
        through_offset: u64,
    ) -> Result<u64, DeltaTableError> {
        let table = self
            .blind
            .as_ref()
            .expect("blind appends need the metadata");
        let log_store = table.log_store();
        let checkpoint_every = table
            .table_properties()
            .checkpoint_interval
            .map_or(100, |n| n.get());
        let txn = Transaction::new_with_last_update(
            WAL_APP_ID,
            through_offset as i64,
            Some(chrono::Utc::now().timestamp_millis()),
        );
        let operation = DeltaOperation::Write {
            mode: SaveMode::Append,
            partition_by: Some(vec![self.partition_column.clone()]),
            predicate: None,
        };
        let data = CommitData::new(
            adds.into_iter().map(Action::Add).collect(),
            operation,
            HashMap::new(),
            vec![txn],
        );
        let bytes = data.get_bytes()?;
        let operation_id = uuid::Uuid::new_v4();
        // As delta-rs does: stores with conditional put take the bytes; the others a temporary
        // file that the log store renames into place.
        let entry = match ["DefaultLogStore", "LakeFSLogStore"].contains(&log_store.name().as_str())
        {
            true => CommitOrBytes::LogBytes(bytes),
            false => {
                let path = object_store::path::Path::from_iter([
                    "_delta_log",
                    &format!("_commit_{operation_id}.json.tmp"),
                ]);
                object_store::ObjectStoreExt::put(
                    log_store.object_store(Some(operation_id)).as_ref(),
                    &path,
                    bytes.into(),
                )
                .await?;
                CommitOrBytes::TmpCommit(path)
            }
        };
        let mut version = self.version.expect("blind appends follow a read") + 1;
        let mut attempts = 0;
        let outcome = loop {
            attempts += 1;
            match log_store
                .write_commit_entry(version, entry.clone(), operation_id)
                .await
            {
                Ok(()) => break Ok(version),
                Err(TransactionError::VersionAlreadyExists(_))
                    if attempts < MAX_COMMIT_ATTEMPTS =>
                {
                    let winner = log_store.read_commit_entry(version).await?;
                    if let Err(e) = blind_append_fits_after(winner.as_deref(), through_offset) {
                        break Err(e);
                    }
                    version += 1;
                }
                Err(e) => break Err(e.into()),
            }
        };
        let version = match outcome {
            Ok(v) => v,
            Err(e) => {
                let _ = log_store
                    .abort_commit_entry(version, entry, operation_id)
                    .await;
                // Read the table again before the next attempt.
                self.blind = None;
                return Err(e);
            }
        };
        self.version = Some(version);
        if (version + 1).is_multiple_of(checkpoint_every) {
            self.checkpoint_in_background(log_store, version);
        }
        Ok(version)
    }

    /// Writes a checkpoint of `version` with the kernel, unless the previous one still runs;
    /// after the other tables' checkpoints that are already waiting.
    fn checkpoint_in_background(&mut self, log_store: LogStoreRef, version: u64) {
        if self.checkpoint.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let table = self.id.to_string();
        let root = self.lake.table_url(&self.id);
        self.checkpoint = Some(tokio::spawn(async move {
            let Ok(_turn) = CHECKPOINTS.acquire().await else {
                return;
            };
            let engine = log_store.engine(None);
            let written = tokio::task::spawn_blocking(move || {
                delta_kernel::snapshot::Snapshot::builder_for(root)
                    .at_version(version)
                    .build(engine.as_ref())
                    .and_then(|s| s.checkpoint(engine.as_ref(), None))
            })
            .await;
            match written {
                Ok(Ok(_)) => tracing::debug!(%table, version, "checkpoint written"),
                Ok(Err(error)) => tracing::warn!(%table, version, %error, "checkpoint failed"),
                Err(error) => tracing::warn!(%table, version, %error, "checkpoint panicked"),
            }
        }));
    }
}

/// Writes rows of one day each into `writer`'s file of that day.
async fn write_days(
    writer: &mut RecordBatchWriter,
    partition_column: &str,
    parts: Vec<(i32, RecordBatch)>,
) -> Result<(), DeltaTableError> {
    for (date, batch) in parts {
        let values = indexmap::IndexMap::from([(
            partition_column.to_string(),
            delta_kernel::expressions::Scalar::Date(date),
        )]);
        writer
            .write_partition(batch, &values, WriteMode::Default)
            .await?;
    }
    Ok(())
}

/// Checks that a commit another writer made (`winner`, its log entry) leaves a blind append of
/// the rows through `through_offset` valid on top of it: no schema, protocol or partitioning
/// change (the files were written for the schema this sink read), and no `txn` of the WAL at or
/// beyond these offsets (another process writing the same WAL).
fn blind_append_fits_after(
    winner: Option<&[u8]>,
    through_offset: u64,
) -> Result<(), DeltaTableError> {
    let conflict = |what: String| {
        DeltaTableError::Generic(format!(
            "a concurrent commit conflicts with this append: {what}; the table is read again"
        ))
    };
    let Some(winner) = winner else {
        return Err(conflict("the winning commit cannot be read".into()));
    };
    for line in winner.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let action: Action = serde_json::from_slice(line)
            .map_err(|e| conflict(format!("unreadable action ({e})")))?;
        match action {
            Action::Metadata(_) => return Err(conflict("it changed the table metadata".into())),
            Action::Protocol(_) => return Err(conflict("it changed the protocol".into())),
            Action::Txn(t) if t.app_id == WAL_APP_ID && t.version >= through_offset as i64 => {
                return Err(conflict(format!(
                    "another writer committed WAL offset {}",
                    t.version
                )))
            }
            _ => {}
        }
    }
    Ok(())
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
/// the new version; the lake keeps the table at it, so the next load of the table (the next
/// partition's commit, a query of it) reads nothing it wrote again.
///
/// `days`, when given, says that the predicate is `<partition column> IN (days)` of a table
/// partitioned by that date alone (a daily job's): if the table exists and the rows fit its
/// schema, the replacement is written here ([`replace_days`]) instead of by delta-rs's write
/// with `replaceWhere`, which plans and runs a DataFusion query over the rows and lists the
/// whole log after the commit.
pub async fn replace_partition(
    lake: &Lake,
    id: &TableId,
    batches: Vec<RecordBatch>,
    partition_columns: &[String],
    predicate: &str,
    days: Option<&[chrono::NaiveDate]>,
    metadata: impl IntoIterator<Item = (String, serde_json::Value)>,
) -> Result<u64, LakeError> {
    let delta = |source| LakeError::Delta {
        table: id.to_string(),
        source,
    };
    // Like streaming commits, a partition's replacement leaves the clean-up of expired log
    // files to maintenance's checkpoints.
    let commit = CommitProperties::default()
        .with_metadata(metadata)
        .with_cleanup_expired_logs(Some(false))
        .with_max_retries(10);
    let loaded = lake.load(id).await?;
    if let (Some(table), Some(days), [column]) = (&loaded, days, partition_columns) {
        if let Some(parts) = days_to_write(table, &batches, column, days) {
            let table = replace_days(table, column, parts, days, predicate, commit)
                .await
                .map_err(delta)?;
            lake.remember(id, &table);
            return Ok(table.version().unwrap_or(0));
        }
    }
    let builder = match loaded {
        Some(table) => table
            .write(batches)
            .with_save_mode(SaveMode::Overwrite)
            .with_replace_where(predicate.to_string()),
        // A new table is checkpointed every 10 commits (Delta's own default; delta-rs's is
        // 100): a job's table gets a commit per run, and a `gamelake jobs run` reads its log
        // afresh in each process, so without a server's maintenance it replayed up to 99 JSON
        // commits a run (BENCHMARKS.md, issue 5, twenty-second session).
        None => lake
            .unloaded(id)?
            .write(batches)
            .with_save_mode(SaveMode::Append)
            .with_configuration([(
                "delta.checkpointInterval",
                Some(GOLD_CHECKPOINT_INTERVAL.to_string()),
            )]),
    };
    let table = builder
        .with_schema_mode(SchemaMode::Merge)
        .with_partition_columns(partition_columns.to_vec())
        .with_commit_properties(commit)
        .await
        .map_err(delta)?;
    lake.remember(id, &table);
    Ok(table.version().unwrap_or(0))
}

/// `delta.checkpointInterval` of the tables [`replace_partition`] creates.
pub const GOLD_CHECKPOINT_INTERVAL: u64 = 10;

/// `batches` by day, if [`replace_days`] can write them into `table`: the table is partitioned
/// by `column` alone, every row's day is one of `days`, and the batches have the table's
/// columns, in any order, with its types (text as `Utf8` or `Utf8View`). Otherwise `None`, and
/// delta-rs's write merges the schema or refuses rows outside the predicate.
fn days_to_write(
    table: &DeltaTable,
    batches: &[RecordBatch],
    column: &str,
    days: &[chrono::NaiveDate],
) -> Option<Vec<(i32, RecordBatch)>> {
    let snapshot = table.snapshot().ok()?;
    let partitioned_by = snapshot.metadata().partition_columns();
    if partitioned_by.len() != 1 || partitioned_by[0] != column {
        return None;
    }
    // The table's columns in its own order; a job's rows may name them in another.
    let schema = snapshot.snapshot().arrow_schema();
    let text =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8);
    // Each batch's columns in the table's order and types (the writer takes `Utf8View` for a
    // `Utf8` column as a mismatch); `None` for a missing or extra column or another type.
    let batches: Vec<RecordBatch> = batches
        .iter()
        .map(|b| {
            if b.num_columns() != schema.fields().len() {
                return None;
            }
            let columns = schema
                .fields()
                .iter()
                .map(|f| {
                    let c = b.column_by_name(f.name())?;
                    match (c.data_type(), f.data_type()) {
                        (have, want) if have == want => Some(c.clone()),
                        (have, want) if text(have) && text(want) => {
                            deltalake::arrow::compute::cast(c, want).ok()
                        }
                        _ => None,
                    }
                })
                .collect::<Option<Vec<_>>>()?;
            RecordBatch::try_new(schema.clone(), columns).ok()
        })
        .collect::<Option<_>>()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).expect("the epoch is a date");
    let allowed: Vec<i32> = days
        .iter()
        .map(|d| (*d - epoch).num_days() as i32)
        .collect();
    let parts = by_partition(&batches, column)?;
    parts
        .iter()
        .all(|(day, _)| allowed.contains(day))
        .then_some(parts)
}

/// One commit that removes every file of `days` and adds the files of `parts` (rows of those
/// days), as delta-rs's write with `replaceWhere` on the partition column does: the operation
/// is an overwrite with `predicate`, so the conflict checker sees what it read. Ingest-sized
/// Parquet settings ([`writer_properties`]): a build's rows are a few MB.
async fn replace_days(
    table: &DeltaTable,
    column: &str,
    parts: Vec<(i32, RecordBatch)>,
    days: &[chrono::NaiveDate],
    predicate: &str,
    commit: CommitProperties,
) -> Result<DeltaTable, DeltaTableError> {
    // One writer per day, flushed at once: a writer puts its files one after the other, each
    // synced to the disk before the next (`crate::settle`), and a build of eight days waited
    // for eight syncs in turn.
    let flushes = parts.into_iter().map(|part| async move {
        let mut writer =
            RecordBatchWriter::for_table(table)?.with_writer_properties(writer_properties());
        write_days(&mut writer, column, vec![part]).await?;
        writer.flush().await
    });
    let mut actions: Vec<Action> = futures::future::try_join_all(flushes)
        .await?
        .into_iter()
        .flatten()
        .map(Action::Add)
        .collect();
    let snapshot = table.snapshot()?;
    let replaced: Vec<String> = days.iter().map(|d| d.to_string()).collect();
    actions.extend(
        snapshot
            .log_data()
            .iter()
            .filter(|f| {
                f.partition_values_map()
                    .get(column)
                    .and_then(|v| v.as_deref())
                    .is_some_and(|v| replaced.iter().any(|d| d == v))
            })
            .map(|f| Action::Remove(f.remove_action(true))),
    );
    let operation = DeltaOperation::Write {
        mode: SaveMode::Overwrite,
        partition_by: Some(vec![column.to_string()]),
        predicate: Some(predicate.to_string()),
    };
    let finalized = CommitBuilder::from(commit)
        .with_actions(actions)
        .build(Some(snapshot), table.log_store(), operation)
        .await?;
    let mut table = table.clone();
    table.state = Some(finalized.snapshot());
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use deltalake::arrow::array::{ArrayRef, Int64Array};
    use deltalake::arrow::datatypes::Schema;
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

    /// A lake in a temp dir and a sink on its (not yet existing) table `silver.t`.
    async fn new_table() -> (tempfile::TempDir, Lake, TableId, DeltaSink) {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let id = TableId::new("silver", "t");
        let sink = DeltaSink::open(&lake, id.clone(), "event_date")
            .await
            .unwrap();
        (dir, lake, id, sink)
    }

    /// First commit (write operation), a two-day commit with known columns (streaming writer),
    /// a commit with a new column (write operation again): every row lands in its day, the
    /// offsets are the ones committed, and the new column reads NULL for older rows.
    #[tokio::test]
    async fn appends_stream_known_columns_and_merge_new_ones() {
        let (_dir, lake, id, mut sink) = new_table().await;
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

    /// Rows streamed into the next commit's files land in one blind append, in their days, with
    /// the highest offset; a new table or a new column is refused (the caller appends those);
    /// a stream whose commit meets a metadata change fails and leaves nothing behind.
    #[tokio::test]
    async fn streamed_rows_commit_as_one_append() {
        let (_dir, lake, id, mut sink) = new_table().await;
        let first = batch(&[20000], &[("a", vec![1])]);
        assert!(!sink.stream(&first, 1).await.unwrap(), "no table yet");
        sink.append(vec![first], 1).await.unwrap();
        let two_days = batch(&[20000, 20001], &[("a", vec![2, 3])]);
        assert!(sink.stream(&two_days, 2).await.unwrap());
        // Columns missing from a batch are written as NULL.
        let no_a = batch(&[20001], &[]);
        assert!(sink.stream(&no_a, 3).await.unwrap());
        assert_eq!(sink.streamed(), Some((3, 3)));
        let new_column = batch(&[20001], &[("a", vec![9]), ("b", vec![90])]);
        assert!(!sink.stream(&new_column, 4).await.unwrap());
        assert_eq!(sink.committed_offset(), Some(1), "nothing committed yet");
        let s = sink.commit_stream().await.unwrap();
        assert_eq!((s.version, s.rows), (1, 3));
        assert_eq!(sink.streamed(), None);
        assert_eq!(sink.committed_offset(), Some(3));
        sink.append(vec![new_column], 4).await.unwrap();
        let expected = [
            "+---+----+",
            "| n | s  |",
            "+---+----+",
            "| 5 | 15 |",
            "+---+----+",
        ]
        .join("\n");
        assert_eq!(count_and_sum(&lake, "silver.t").await, expected);

        // Another writer changes the metadata while rows are streamed: the commit fails, and
        // the table is as before.
        assert!(sink
            .stream(&batch(&[20001], &[("a", vec![100])]), 5)
            .await
            .unwrap());
        lake.load(&id)
            .await
            .unwrap()
            .unwrap()
            .set_tbl_properties()
            .with_properties(HashMap::from([(
                "delta.checkpointInterval".to_string(),
                "50".to_string(),
            )]))
            .await
            .unwrap();
        let err = sink.commit_stream().await.unwrap_err().to_string();
        assert!(err.contains("changed the table metadata"), "{err}");
        assert_eq!(sink.streamed(), None);
        let reopened = DeltaSink::open(&lake, id.clone(), "event_date")
            .await
            .unwrap();
        assert_eq!(reopened.committed_offset(), Some(4));
        assert_eq!(count_and_sum(&lake, "silver.t").await, expected);
    }

    /// Ingest files are written in row groups of at most [`ROW_GROUP_ROWS`] rows and data pages
    /// of about [`DATA_PAGE_BYTES`], by each of the three ways a commit writes: the write
    /// operation (a table's first commit), a blind append, and a stream.
    #[tokio::test]
    async fn ingest_files_hold_row_groups_of_bounded_rows_and_small_pages() {
        use deltalake::parquet::file::reader::{FileReader, SerializedFileReader};
        use deltalake::parquet::file::serialized_reader::ReadOptionsBuilder;

        let (dir, _lake, _id, mut sink) = new_table().await;
        let rows = ROW_GROUP_ROWS + 1_000;
        let day = batch(&vec![20000; rows], &[("a", (0..rows as i64).collect())]);
        sink.append(vec![day.clone()], 1).await.unwrap();
        sink.append(vec![day.clone()], 2).await.unwrap();
        assert!(sink.stream(&day, 3).await.unwrap());
        sink.commit_stream().await.unwrap();

        let mut groups = Vec::new();
        let mut dirs = vec![dir.path().to_path_buf()];
        while let Some(d) = dirs.pop() {
            for entry in std::fs::read_dir(d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "parquet") {
                    let file = std::fs::File::open(&path).unwrap();
                    let options = ReadOptionsBuilder::new().with_page_index().build();
                    let reader = SerializedFileReader::new_with_options(file, options).unwrap();
                    // Each column chunk of the full row group is in several pages, none much
                    // larger than DATA_PAGE_BYTES (the writer checks the size after each
                    // mini-batch of 1 024 values, 8 KiB of this column).
                    let chunks = reader.metadata().offset_index().expect("offset index");
                    for column in &chunks[0] {
                        let pages = column.page_locations();
                        assert!(pages.len() > 1, "{} page(s)", pages.len());
                        for page in pages {
                            assert!(
                                page.compressed_page_size as usize <= DATA_PAGE_BYTES + 8 * 1024,
                                "a page of {} bytes",
                                page.compressed_page_size
                            );
                        }
                    }
                    let rows: Vec<i64> = reader
                        .metadata()
                        .row_groups()
                        .iter()
                        .map(|g| g.num_rows())
                        .collect();
                    groups.push(rows);
                }
            }
        }
        assert_eq!(groups, vec![vec![ROW_GROUP_ROWS as i64, 1_000]; 3]);
    }

    async fn count_and_sum(lake: &Lake, table: &str) -> String {
        let q = crate::QueryEngine::new(lake.clone());
        let (_, rows) = q
            .sql(&format!("SELECT count(*) AS n, sum(a) AS s FROM {table}"))
            .await
            .unwrap();
        deltalake::arrow::util::pretty::pretty_format_batches(&rows)
            .unwrap()
            .to_string()
    }

    /// Two builds that create a job's table at once (a catch-up and a late-data run of two
    /// days): both commit, each its own day.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replacements_that_create_the_table_at_once_both_commit() {
        for round in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().to_str().unwrap().to_string();
            let id = TableId::new("gold", "c");
            // Each in a lake of its own, as two processes.
            let replace = |d: i32| {
                let (root, id) = (root.clone(), id.clone());
                tokio::spawn(async move {
                    let date = chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()
                        + chrono::Days::new(d as u64);
                    replace_partition(
                        &Lake::open(&root).unwrap(),
                        &id,
                        vec![batch(&[d], &[("a", vec![d as i64])])],
                        &["event_date".to_string()],
                        &format!("event_date = '{date}'"),
                        Some(&[date]),
                        [("gamelake.job".to_string(), "c".into())],
                    )
                    .await
                })
            };
            let (five, six) = tokio::join!(replace(5), replace(6));
            five.unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            six.unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            let files = Lake::open(&root).unwrap().files(&id).await.unwrap();
            assert_eq!(files.len(), 2, "round {round}: {files:?}");
        }
    }

    /// A day's replacement: its files go and the new rows come in one overwrite commit with the
    /// predicate, other days stay; a day replaced by no rows is empty; rows outside the days and
    /// a new column take delta-rs's write (which refuses the first and merges the second).
    #[tokio::test]
    async fn replaced_days_swap_their_files_and_nothing_else() {
        use deltalake::arrow::array::StringViewArray;
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let id = TableId::new("gold", "d");
        let day = |n: i64| {
            chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Days::new(n as u64)
        };
        let rows = |days: &[i32], a: &[i64], text: bool| {
            let mut b = batch(days, &[("a", a.to_vec())]);
            if text {
                // Text as a query gives it (Utf8View), where the table has Utf8.
                let s: Vec<String> = a.iter().map(|v| format!("s{v}")).collect();
                let mut fields = b.schema().fields().to_vec();
                fields.push(Arc::new(Field::new("s", DataType::Utf8View, true)));
                let mut columns = b.columns().to_vec();
                columns.push(Arc::new(StringViewArray::from_iter_values(s)));
                b = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
            }
            b
        };
        let replace = |batches: Vec<RecordBatch>, days: Vec<i64>| {
            let lake = lake.clone();
            let id = id.clone();
            async move {
                let days: Vec<_> = days.into_iter().map(day).collect();
                let list: Vec<String> = days.iter().map(|d| format!("'{d}'")).collect();
                replace_partition(
                    &lake,
                    &id,
                    batches,
                    &["event_date".to_string()],
                    &format!("event_date IN ({})", list.join(", ")),
                    Some(&days),
                    [("gamelake.job".to_string(), "d".into())],
                )
                .await
            }
        };
        // Created by delta-rs's write; then days 5 and 6 replaced here.
        replace(
            vec![rows(&[5, 5, 6, 7], &[1, 2, 3, 4], true)],
            vec![5, 6, 7],
        )
        .await
        .unwrap();
        let files_of = |lake: Lake, d: &'static str| async move {
            lake.files(&TableId::new("gold", "d"))
                .await
                .unwrap()
                .into_iter()
                .filter(|f| f.partition.get("event_date") == Some(&Some(d.to_string())))
                .map(|f| f.path)
                .collect::<Vec<_>>()
        };
        let day7 = files_of(lake.clone(), "1970-01-08").await;
        let v = replace(
            vec![rows(&[5, 6], &[10, 20], true), rows(&[5], &[30], true)],
            vec![5, 6],
        )
        .await
        .unwrap();
        assert_eq!(
            count_and_sum(&lake, "gold.d").await,
            count_and_sum_text(3 + 1, 60 + 4)
        );
        assert_eq!(
            files_of(lake.clone(), "1970-01-08").await,
            day7,
            "day 7 untouched"
        );
        let table = lake.load(&id).await.unwrap().unwrap();
        assert_eq!(table.version(), Some(v));
        let history: Vec<_> = futures::StreamExt::collect::<Vec<_>>(table.history(Some(1)))
            .await
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap();
        let last = &history[0];
        assert_eq!(last.operation.as_deref(), Some("WRITE"));
        let params = last.operation_parameters.as_ref().unwrap();
        assert_eq!(params["mode"], "Overwrite");
        assert!(
            params["predicate"].as_str().unwrap().contains("1970-01-06"),
            "{params:?}"
        );
        // Columns in another order than the table's: taken by name.
        let turned = rows(&[5], &[7], true);
        let turned = turned.project(&[2, 1, 0]).unwrap();
        replace(vec![turned], vec![5]).await.unwrap();
        assert_eq!(
            count_and_sum(&lake, "gold.d").await,
            count_and_sum_text(1 + 1 + 1, 7 + 20 + 4)
        );
        replace(vec![rows(&[5, 5], &[10, 30], true)], vec![5])
            .await
            .unwrap();
        // Day 6 replaced by nothing: its rows are gone.
        replace(vec![], vec![6]).await.unwrap();
        assert_eq!(
            count_and_sum(&lake, "gold.d").await,
            count_and_sum_text(2 + 1, 40 + 4)
        );
        assert!(files_of(lake.clone(), "1970-01-07").await.is_empty());
        // A row of day 7 in a replacement of day 5: refused, nothing changes.
        let err = replace(vec![rows(&[5, 7], &[1, 1], true)], vec![5])
            .await
            .unwrap_err();
        assert!(err.to_string().contains("failed validation"), "{err}");
        assert_eq!(
            count_and_sum(&lake, "gold.d").await,
            count_and_sum_text(3, 44)
        );
        // A new column: merged by delta-rs's write.
        let mut wide = rows(&[5], &[100], true);
        let mut fields = wide.schema().fields().to_vec();
        fields.push(Arc::new(Field::new("b", DataType::Int64, true)));
        let mut columns = wide.columns().to_vec();
        columns.push(Arc::new(Int64Array::from(vec![9])));
        wide = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
        replace(vec![wide], vec![5]).await.unwrap();
        assert_eq!(
            count_and_sum(&lake, "gold.d").await,
            count_and_sum_text(2, 104)
        );
        assert!(lake
            .columns(&id)
            .await
            .unwrap()
            .unwrap()
            .contains(&"b".to_string()));
        // Checkpointed every 10 commits: version 9 has one, the log is read from it.
        let interval = |lake: Lake, id: TableId| async move {
            let table = lake.load(&id).await.unwrap().unwrap();
            let every = table.snapshot().unwrap().table_config().checkpoint_interval;
            (table.version().unwrap(), every.map(|n| n.get()))
        };
        let (mut version, every) = interval(lake.clone(), id.clone()).await;
        assert_eq!(every, Some(GOLD_CHECKPOINT_INTERVAL));
        let checkpoint = dir
            .path()
            .join("gold/d/_delta_log/00000000000000000009.checkpoint.parquet");
        assert!(version < 9 && !checkpoint.exists());
        while version < 9 {
            version = replace(vec![rows(&[5], &[version as i64], true)], vec![5])
                .await
                .unwrap();
        }
        assert!(checkpoint.exists(), "no checkpoint at version 9");
    }

    fn count_and_sum_text(n: i64, s: i64) -> String {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("n", DataType::Int64, false),
                Field::new("s", DataType::Int64, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![n])),
                Arc::new(Int64Array::from(vec![s])),
            ],
        )
        .unwrap();
        deltalake::arrow::util::pretty::pretty_format_batches(&[batch])
            .unwrap()
            .to_string()
    }

    /// Blind appends move past commits of other writers that only add or remove files, refuse
    /// to land after a metadata change (and land once the table is read again), refuse offsets
    /// another writer of the same WAL committed, and write checkpoints at the table's
    /// `delta.checkpointInterval`.
    #[tokio::test]
    async fn blind_appends_go_past_other_writers_and_stop_at_conflicts() {
        let (dir, lake, id, mut sink) = new_table().await;
        let rows = |a: i64| vec![batch(&[20000], &[("a", vec![a])])];
        assert_eq!(sink.append(rows(1), 1).await.unwrap().version, 0);
        assert_eq!(sink.append(rows(2), 2).await.unwrap().version, 1);

        // Another tool appends (no txn): the sink's next commit goes to the version after it.
        let other = lake.load(&id).await.unwrap().unwrap();
        let other = other
            .write(rows(100))
            .with_save_mode(SaveMode::Append)
            .await
            .unwrap();
        assert_eq!(other.version(), Some(2));
        assert_eq!(sink.append(rows(3), 3).await.unwrap().version, 3);

        // A metadata change: the append fails with a clear reason, then lands after re-reading.
        let other = lake.load(&id).await.unwrap().unwrap();
        other
            .set_tbl_properties()
            .with_properties(HashMap::from([(
                "delta.checkpointInterval".to_string(),
                "3".to_string(),
            )]))
            .await
            .unwrap();
        let err = sink.append(rows(4), 4).await.unwrap_err().to_string();
        assert!(err.contains("changed the table metadata"), "{err}");
        assert_eq!(sink.committed_offset(), Some(3));
        assert_eq!(sink.append(rows(4), 4).await.unwrap().version, 5);

        // Version 5 is the third of interval 3: a checkpoint is written in the background.
        let checkpoint = dir
            .path()
            .join("silver/t/_delta_log/00000000000000000005.checkpoint.parquet");
        let deadline = Instant::now() + Duration::from_secs(20);
        while !checkpoint.exists() {
            assert!(Instant::now() < deadline, "no checkpoint at version 5");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        // A second writer of the same WAL got further: the first must not commit offset 5.
        let mut second = DeltaSink::open(&lake, id.clone(), "event_date")
            .await
            .unwrap();
        assert_eq!(second.committed_offset(), Some(4));
        second.append(rows(10), 10).await.unwrap();
        let err = sink.append(rows(5), 5).await.unwrap_err().to_string();
        assert!(
            err.contains("another writer committed WAL offset 10"),
            "{err}"
        );

        let reopened = DeltaSink::open(&lake, id.clone(), "event_date")
            .await
            .unwrap();
        assert_eq!(reopened.committed_offset(), Some(10));
        let expected = [
            "+---+-----+",
            "| n | s   |",
            "+---+-----+",
            "| 6 | 120 |",
            "+---+-----+",
        ]
        .join("\n");
        assert_eq!(count_and_sum(&lake, "silver.t").await, expected);
    }
}
