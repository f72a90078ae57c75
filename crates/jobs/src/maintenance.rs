//! Tables that maintain themselves: compaction, checkpoints and log clean-up, vacuum, and
//! retention of old partitions. Each is a Delta operation on one table, recorded in the run log
//! (job `compact`, `checkpoint`, `vacuum` or `retention`, partition = the table), and runs from
//! the scheduler on its own cron or by hand (`gamelake tables compact|vacuum`).
//!
//! - **compact** bin-packs the small files of each partition with at least `min_files` files
//!   into files of about `target_file_mb`. Its commit only removes and adds files with the same
//!   rows (`dataChange = false`), so streaming appends commit beside it; a conflicting commit is
//!   retried by Delta's conflict checker. It writes row groups of 128 Ki rows
//!   ([`gamelake_lake::sink::compaction_writer_properties`]) with one file in progress per two
//!   cores, so that it runs beside ingest in a bounded amount of memory.
//! - **checkpoint** writes a checkpoint of the current version (readers replay fewer JSON
//!   commits) and removes log files older than the table's log retention (30 days by default).
//!   Streaming commits skip that clean-up so that it costs them nothing.
//! - **vacuum** deletes data files no version within the retention (default 7 days) refers to,
//!   including files of failed writes (full mode). Time travel within the retention keeps working.
//! - **retention** deletes whole partitions older than the table's configured days (e.g. keep
//!   `bronze.raw_logs` 30 days). The files go at the next vacuum after the vacuum retention.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use gamelake_lake::{Lake, TableId};
use serde::Deserialize;

use crate::cron::Cron;
use crate::runs::{RunLog, RunRecord, RunStatus, Trigger};

/// Files compaction writes at once: half the cores, at least one. delta-rs's default is one per
/// core; each holds a row group and a read stream in memory, and ingest needs the other half of
/// the machine. On 2 cores, one task compacted a minute of bronze in 16 s instead of 12 s, at
/// 294 instead of 380 MiB peak (BENCHMARKS.md, issue 3, fourteenth session).
fn compaction_tasks() -> usize {
    std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
}

/// `[maintenance]` settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    /// Run maintenance from `serve`. Default true.
    pub enabled: bool,
    /// Cron of compaction and checkpoints. Default `40 * * * *` (hourly).
    pub compact_schedule: String,
    /// Cron of vacuum and retention. Default `0 4 * * *` (daily, game time zone).
    pub vacuum_schedule: String,
    /// Size compaction aims at, MiB. Default 128.
    pub target_file_mb: u64,
    /// Partitions with fewer files are left alone. Default 8.
    pub min_files: usize,
    /// Files no version newer than this refers to are deleted by vacuum, hours. Default 168
    /// (7 days), at least 1.
    pub vacuum_retention_hours: u64,
    /// Days of partitions kept per table (`"bronze.raw_logs" = 30`); tables not named are kept
    /// for ever.
    pub retention_days: BTreeMap<String, u32>,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            compact_schedule: "40 * * * *".into(),
            vacuum_schedule: "0 4 * * *".into(),
            target_file_mb: 128,
            min_files: 8,
            vacuum_retention_hours: 168,
            retention_days: BTreeMap::new(),
        }
    }
}

impl MaintenanceConfig {
    /// The first problem, naming the key.
    pub fn validate(&self) -> Result<(Cron, Cron), String> {
        let compact = Cron::parse(&self.compact_schedule)
            .map_err(|e| format!("`maintenance.compact_schedule`: {e}"))?;
        let vacuum = Cron::parse(&self.vacuum_schedule)
            .map_err(|e| format!("`maintenance.vacuum_schedule`: {e}"))?;
        if self.target_file_mb == 0 {
            return Err("`maintenance.target_file_mb` must be positive".into());
        }
        if self.vacuum_retention_hours == 0 {
            return Err(
                "`maintenance.vacuum_retention_hours` must be at least 1: files of writes still in progress would be deleted"
                    .into(),
            );
        }
        for (table, days) in &self.retention_days {
            if table.split('.').count() != 2 {
                return Err(format!(
                    "`maintenance.retention_days`: `{table}` is not schema.table"
                ));
            }
            if *days == 0 {
                return Err(format!(
                    "`maintenance.retention_days.\"{table}\"` must be at least 1 day"
                ));
            }
        }
        Ok((compact, vacuum))
    }
}

/// A maintenance task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    Compact,
    Checkpoint,
    Vacuum,
    Retention,
}

impl Task {
    pub fn name(&self) -> &'static str {
        match self {
            Task::Compact => "compact",
            Task::Checkpoint => "checkpoint",
            Task::Vacuum => "vacuum",
            Task::Retention => "retention",
        }
    }
}

/// Runs maintenance tasks on the tables of a lake.
#[derive(Clone)]
pub struct Maintenance {
    lake: Lake,
    cfg: MaintenanceConfig,
    log: RunLog,
    /// Where the tasks' work runs; the caller's runtime when `None`.
    runtime: Option<tokio::runtime::Handle>,
}

/// What one task did to one table.
#[derive(Debug, Clone, PartialEq)]
pub struct Done {
    pub files_before: u64,
    pub files_after: u64,
    pub detail: String,
}

impl Maintenance {
    pub fn new(lake: Lake, cfg: MaintenanceConfig, log: RunLog) -> Self {
        Self {
            lake,
            cfg,
            log,
            runtime: None,
        }
    }

    /// Runs the tasks' work (reads, rewrites, commits) on `runtime`: `serve` gives maintenance
    /// a runtime of its own at a lower priority than ingest's commits.
    pub fn with_runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    pub fn config(&self) -> &MaintenanceConfig {
        &self.cfg
    }

    /// Every stored table, `bronze` first.
    pub async fn tables(&self) -> anyhow::Result<Vec<TableId>> {
        let mut out = Vec::new();
        for schema in gamelake_common::STORED_SCHEMAS {
            for name in self.lake.list_tables(schema).await? {
                out.push(TableId::new(schema, name));
            }
        }
        Ok(out)
    }

    /// Runs one task on one table and records it. `vacuum_retention` overrides the configured
    /// retention (hand runs only).
    pub async fn run(
        &self,
        task: Task,
        id: &TableId,
        now: DateTime<Utc>,
        vacuum_retention: Option<Duration>,
    ) -> RunRecord {
        let mut record =
            RunRecord::start(task.name(), &id.to_string(), Trigger::Maintenance, 1, now);
        let _ = self.log.record(&record);
        let outcome = match &self.runtime {
            Some(runtime) => {
                let (this, id) = (self.clone(), id.clone());
                runtime
                    .spawn(async move { this.work(task, &id, now, vacuum_retention).await })
                    .await
                    .unwrap_or_else(|e| Err(anyhow::anyhow!("maintenance task ended: {e}")))
            }
            None => self.work(task, id, now, vacuum_retention).await,
        };
        match outcome {
            Ok(done) => {
                record.status = RunStatus::Succeeded;
                record.detail = Some(done.detail);
                record.rows = Some(done.files_after);
            }
            Err(e) => {
                record.status = RunStatus::Failed;
                record.error = Some(format!("{e:#}"));
            }
        }
        record.ended = Some(Utc::now().max(now));
        tracing::info!(task = task.name(), table = %id, status = record.status.as_str(), detail = ?record.detail, error = ?record.error, "maintenance");
        let _ = self.log.record(&record);
        record
    }

    async fn work(
        &self,
        task: Task,
        id: &TableId,
        now: DateTime<Utc>,
        vacuum_retention: Option<Duration>,
    ) -> anyhow::Result<Done> {
        match task {
            Task::Compact => self.compact(id).await,
            Task::Checkpoint => self.checkpoint(id).await,
            Task::Vacuum => {
                let retention = vacuum_retention
                    .unwrap_or(Duration::from_secs(self.cfg.vacuum_retention_hours * 3600));
                self.vacuum(id, retention).await
            }
            Task::Retention => self.retention(id, now).await,
        }
    }

    async fn loaded(&self, id: &TableId) -> anyhow::Result<gamelake_lake::deltalake::DeltaTable> {
        self.lake
            .load(id)
            .await?
            .ok_or_else(|| anyhow::anyhow!("table `{id}` does not exist"))
    }

    async fn compact(&self, id: &TableId) -> anyhow::Result<Done> {
        let files = self.lake.files(id).await?;
        let before = files.len() as u64;
        // Only partitions with enough files are worth a rewrite.
        let mut per_partition: BTreeMap<Vec<(String, Option<String>)>, usize> = BTreeMap::new();
        for f in &files {
            let mut key: Vec<(String, Option<String>)> = f.partition.clone().into_iter().collect();
            key.sort();
            *per_partition.entry(key).or_insert(0) += 1;
        }
        let crowded: Vec<_> = per_partition
            .into_iter()
            .filter(|(_, n)| *n >= self.cfg.min_files.max(2))
            .collect();
        if crowded.is_empty() {
            return Ok(Done {
                files_before: before,
                files_after: before,
                detail: format!(
                    "files {before}: no partition has {} files or more",
                    self.cfg.min_files.max(2)
                ),
            });
        }
        let target = NonZeroU64::new(self.cfg.target_file_mb << 20).expect("validated positive");
        let (mut rewritten, mut written) = (0, 0);
        for (key, _) in &crowded {
            let table = self.loaded(id).await?;
            let filters: Vec<gamelake_lake::deltalake::FilterLiteral> = key
                .iter()
                .filter_map(|(col, value)| {
                    value.as_deref().map(|v| {
                        (
                            col.as_str(),
                            gamelake_lake::deltalake::FilterOp::Eq,
                            gamelake_lake::deltalake::FilterValue::Scalar(v),
                        )
                    })
                })
                .collect();
            let (_, metrics) = table
                .optimize()
                .with_filters(&filters)
                .with_target_size(target)
                .with_writer_properties(gamelake_lake::sink::compaction_writer_properties())
                .with_max_concurrent_tasks(compaction_tasks())
                .await
                .map_err(|e| anyhow::anyhow!("compacting `{id}`: {e}"))?;
            rewritten += metrics.num_files_removed;
            written += metrics.num_files_added;
        }
        let after = self.lake.files(id).await?.len() as u64;
        Ok(Done {
            files_before: before,
            files_after: after,
            detail: format!(
                "files {before} -> {after}: {rewritten} small files rewritten into {written} in {} partitions{}",
                crowded.len(),
                match (after + rewritten).saturating_sub(written + before) {
                    0 => String::new(),
                    n => format!(", {n} appended meanwhile"),
                }
            ),
        })
    }

    async fn checkpoint(&self, id: &TableId) -> anyhow::Result<Done> {
        let table = self.loaded(id).await?;
        let version = table.version().unwrap_or(0);
        gamelake_lake::deltalake::checkpoints::create_checkpoint(&table, None)
            .await
            .map_err(|e| anyhow::anyhow!("checkpointing `{id}`: {e}"))?;
        let removed = gamelake_lake::deltalake::checkpoints::cleanup_metadata(&table, None)
            .await
            .map_err(|e| anyhow::anyhow!("cleaning the log of `{id}`: {e}"))?;
        let files = self.lake.files(id).await?.len() as u64;
        Ok(Done {
            files_before: files,
            files_after: files,
            detail: format!("checkpoint at version {version}; {removed} expired log files removed"),
        })
    }

    async fn vacuum(&self, id: &TableId, retention: Duration) -> anyhow::Result<Done> {
        let table = self.loaded(id).await?;
        let files = self.lake.files(id).await?.len() as u64;
        let (_, metrics) = table
            .vacuum()
            .with_mode(gamelake_lake::deltalake::operations::vacuum::VacuumMode::Full)
            .with_retention_period(chrono::Duration::from_std(retention)?)
            .with_enforce_retention_duration(false)
            .await
            .map_err(|e| anyhow::anyhow!("vacuuming `{id}`: {e}"))?;
        Ok(Done {
            files_before: files,
            files_after: files,
            detail: format!(
                "{} unreferenced files older than {}h deleted",
                metrics.files_deleted.len(),
                retention.as_secs() / 3600
            ),
        })
    }

    async fn retention(&self, id: &TableId, now: DateTime<Utc>) -> anyhow::Result<Done> {
        let files = self.lake.files(id).await?;
        let before = files.len() as u64;
        let Some(days) = self.cfg.retention_days.get(&id.to_string()) else {
            return Ok(Done {
                files_before: before,
                files_after: before,
                detail: "kept for ever (no retention_days)".into(),
            });
        };
        let table = self.loaded(id).await?;
        let column = table
            .snapshot()?
            .metadata()
            .partition_columns()
            .first()
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("`{id}` has no date partition to expire"))?;
        let cutoff: NaiveDate = now.date_naive() - chrono::Duration::days(*days as i64);
        let old = files.iter().any(|f| {
            f.partition
                .get(&column)
                .and_then(|v| v.as_deref())
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                .is_some_and(|d| d < cutoff)
        });
        if !old {
            return Ok(Done {
                files_before: before,
                files_after: before,
                detail: format!("no partition before {cutoff}"),
            });
        }
        let (_, metrics) = table
            .delete()
            .with_predicate(format!("{column} < '{cutoff}'"))
            .await
            .map_err(|e| anyhow::anyhow!("expiring `{id}`: {e}"))?;
        let after = self.lake.files(id).await?.len() as u64;
        Ok(Done {
            files_before: before,
            files_after: after,
            detail: format!(
                "partitions before {cutoff} deleted: {} files",
                metrics.num_removed_files
            ),
        })
    }
}
