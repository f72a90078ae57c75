//! The `system` schema: the server's own state as SQL tables, built when a query reads them.
//!
//! - `system.tables`: every Delta table with its version, rows, files, bytes and columns.
//! - `system.ingest`: per table, events accepted, rows and commits, the WAL offset each has
//!   committed and how many WAL records it is behind; one row `*` with the WAL itself. Every
//!   row also carries the server's input bytes not yet committed everywhere and the memory
//!   rows waiting for their commit hold (the two limits of backpressure).
//! - `system.dead_letters`: dead-lettered lines since start by reason.
//! - `system.queries`: the last 1 000 queries of the HTTP API (and dashboard): when, who,
//!   the SQL, duration, rows, error.
//! - `system.job_runs`: every run of a job or maintenance task (from the run log): job,
//!   partition, trigger, attempt, status, start, end, rows written, error.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use gamelake_lake::arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray, UInt64Array,
};
use gamelake_lake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use gamelake_lake::datafusion::catalog::{MemTable, SchemaProvider, TableProvider};
use gamelake_lake::datafusion::error::{DataFusionError, Result as DfResult};
use gamelake_lake::Lake;

use crate::metrics::Metrics;

const TABLES: [&str; 5] = ["tables", "ingest", "dead_letters", "queries", "job_runs"];
const QUERY_LOG_LEN: usize = 1000;

/// One query, over HTTP (`source` = `http`) or the Postgres port (`pg`).
#[derive(Debug, Clone)]
pub struct QueryRecord {
    pub started_us: i64,
    pub source: &'static str,
    pub user: String,
    pub sql: String,
    pub duration_ms: f64,
    pub rows: Option<u64>,
    pub error: Option<String>,
}

/// The last queries, newest last.
#[derive(Debug, Default)]
pub struct QueryLog(Mutex<VecDeque<QueryRecord>>);

impl QueryLog {
    pub fn record(&self, r: QueryRecord) {
        let mut q = self.0.lock().expect("query log lock");
        if q.len() == QUERY_LOG_LEN {
            q.pop_front();
        }
        q.push_back(r);
    }
}

/// The `system` schema provider.
#[derive(Debug)]
pub struct SystemSchema {
    pub lake: Lake,
    pub metrics: Arc<Metrics>,
    pub queries: Arc<QueryLog>,
    pub runs: gamelake_jobs::RunLog,
}

fn field(name: &str, ty: DataType, nullable: bool) -> Field {
    Field::new(name, ty, nullable)
}

fn utc() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> DfResult<Arc<dyn TableProvider>> {
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new(schema.clone(), columns)?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

fn strings<'a>(v: impl IntoIterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(v))
}

fn u64s(v: impl IntoIterator<Item = u64>) -> ArrayRef {
    Arc::new(UInt64Array::from_iter_values(v))
}

impl SystemSchema {
    async fn tables(&self) -> DfResult<Arc<dyn TableProvider>> {
        let infos = crate::tables::describe_all(&self.lake)
            .await
            .map_err(|e| DataFusionError::External(e.into()))?;
        let names: Vec<String> = infos
            .iter()
            .map(|t| format!("{}.{}", t.schema, t.name))
            .collect();
        let columns: Vec<String> = infos
            .iter()
            .map(|t| {
                t.columns
                    .iter()
                    .map(|(c, ty)| format!("{c} {ty}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .collect();
        batch(
            vec![
                field("table_name", DataType::Utf8, false),
                field("schema_name", DataType::Utf8, false),
                field("version", DataType::UInt64, false),
                field("rows", DataType::UInt64, false),
                field("files", DataType::UInt64, false),
                field("bytes", DataType::UInt64, false),
                field("partition_columns", DataType::Utf8, false),
                field("columns", DataType::Utf8, false),
                field("location", DataType::Utf8, false),
            ],
            vec![
                strings(names.iter().map(String::as_str)),
                strings(infos.iter().map(|t| t.schema.as_str())),
                u64s(infos.iter().map(|t| t.version)),
                u64s(infos.iter().map(|t| t.rows)),
                u64s(infos.iter().map(|t| t.files)),
                u64s(infos.iter().map(|t| t.bytes)),
                strings(
                    infos
                        .iter()
                        .map(|t| t.partition_columns.join(","))
                        .collect::<Vec<_>>()
                        .iter()
                        .map(String::as_str),
                ),
                strings(columns.iter().map(String::as_str)),
                strings(infos.iter().map(|t| t.location.as_str())),
            ],
        )
    }

    fn ingest(&self) -> DfResult<Arc<dyn TableProvider>> {
        let m = &self.metrics;
        let next = m.wal_next_offset.load(Ordering::Relaxed);
        let events = m.ingest_rows_by_table.lock().expect("metrics lock").clone();
        let commits = m.commits.lock().expect("metrics lock").clone();
        // One row per table that has received or committed anything, then the WAL row `*`.
        let mut names: Vec<String> = commits.keys().cloned().collect();
        for t in events.keys() {
            let full = format!("{}.{t}", gamelake_common::SCHEMA_SILVER);
            if !names.contains(&full) {
                names.push(full);
            }
        }
        names.sort();
        let mut table = Vec::new();
        let (mut accepted, mut rows, mut n_commits, mut errors) = (vec![], vec![], vec![], vec![]);
        let (mut seconds, mut committed, mut lag) = (vec![], vec![], vec![]);
        for name in &names {
            let c = commits.get(name).cloned().unwrap_or_default();
            let short = name.strip_prefix("silver.").unwrap_or(name);
            table.push(name.as_str());
            accepted.push(events.get(short).copied());
            rows.push(Some(c.rows));
            n_commits.push(Some(c.commits));
            errors.push(Some(c.errors));
            seconds.push(Some(c.seconds));
            committed.push(c.committed_offset);
            lag.push(Some(m.wal_records_behind(c.committed_offset)));
        }
        let watermark = m.wal_committed_offset.load(Ordering::Relaxed);
        table.push("*");
        accepted.push(Some(m.ingest_lines_accepted.load(Ordering::Relaxed)));
        rows.push(None);
        n_commits.push(Some(m.wal_syncs.load(Ordering::Relaxed)));
        errors.push(None);
        seconds.push(None);
        committed.push(Some(watermark));
        lag.push(Some(m.wal_lag_records()));
        batch(
            vec![
                field("table_name", DataType::Utf8, false),
                field("events_accepted", DataType::UInt64, true),
                field("rows_committed", DataType::UInt64, true),
                field("commits", DataType::UInt64, true),
                field("commit_errors", DataType::UInt64, true),
                field("commit_seconds", DataType::Float64, true),
                field("committed_wal_offset", DataType::UInt64, true),
                field("wal_records_behind", DataType::UInt64, true),
                field("wal_next_offset", DataType::UInt64, false),
                field("uncommitted_bytes", DataType::UInt64, false),
                field("buffered_bytes", DataType::UInt64, false),
            ],
            vec![
                strings(table.iter().copied()),
                Arc::new(UInt64Array::from(accepted)),
                Arc::new(UInt64Array::from(rows)),
                Arc::new(UInt64Array::from(n_commits)),
                Arc::new(UInt64Array::from(errors)),
                Arc::new(Float64Array::from(seconds)),
                Arc::new(UInt64Array::from(committed)),
                Arc::new(UInt64Array::from(lag)),
                u64s(std::iter::repeat_n(next, table.len())),
                u64s(std::iter::repeat_n(
                    m.uncommitted_bytes.load(Ordering::Relaxed),
                    table.len(),
                )),
                u64s(std::iter::repeat_n(
                    m.buffered_bytes.load(Ordering::Relaxed),
                    table.len(),
                )),
            ],
        )
    }

    fn dead_letters(&self) -> DfResult<Arc<dyn TableProvider>> {
        let dead = self
            .metrics
            .ingest_lines_dead
            .lock()
            .expect("metrics lock")
            .clone();
        batch(
            vec![
                field("reason", DataType::Utf8, false),
                field("lines", DataType::UInt64, false),
            ],
            vec![
                strings(dead.keys().map(String::as_str)),
                u64s(dead.values().copied()),
            ],
        )
    }

    fn queries(&self) -> DfResult<Arc<dyn TableProvider>> {
        let q: Vec<QueryRecord> = self
            .queries
            .0
            .lock()
            .expect("query log lock")
            .iter()
            .cloned()
            .collect();
        batch(
            vec![
                field("started_at", utc(), false),
                field("source", DataType::Utf8, false),
                field("user_name", DataType::Utf8, false),
                field("sql", DataType::Utf8, false),
                field("duration_ms", DataType::Float64, false),
                field("rows", DataType::UInt64, true),
                field("error", DataType::Utf8, true),
            ],
            vec![
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(q.iter().map(|r| r.started_us))
                        .with_timezone("UTC"),
                ),
                strings(q.iter().map(|r| r.source)),
                strings(q.iter().map(|r| r.user.as_str())),
                strings(q.iter().map(|r| r.sql.as_str())),
                Arc::new(Float64Array::from_iter_values(
                    q.iter().map(|r| r.duration_ms),
                )),
                Arc::new(UInt64Array::from(
                    q.iter().map(|r| r.rows).collect::<Vec<_>>(),
                )),
                Arc::new(StringArray::from(
                    q.iter().map(|r| r.error.clone()).collect::<Vec<_>>(),
                )),
            ],
        )
    }
}

impl SystemSchema {
    fn job_runs(&self) -> DfResult<Arc<dyn TableProvider>> {
        let runs = self.runs.runs();
        let ts = |t: chrono::DateTime<chrono::Utc>| t.timestamp_micros();
        let opt_strings = |v: Vec<Option<String>>| -> ArrayRef { Arc::new(StringArray::from(v)) };
        batch(
            vec![
                field("run_id", DataType::Utf8, false),
                field("job", DataType::Utf8, false),
                field("partition", DataType::Utf8, false),
                field("trigger", DataType::Utf8, false),
                field("attempt", DataType::UInt64, false),
                field("status", DataType::Utf8, false),
                field("started_at", utc(), false),
                field("ended_at", utc(), true),
                field("duration_s", DataType::Float64, true),
                field("rows", DataType::UInt64, true),
                field("version", DataType::UInt64, true),
                field("input_rows", DataType::UInt64, true),
                field("error", DataType::Utf8, true),
                field("detail", DataType::Utf8, true),
            ],
            vec![
                strings(runs.iter().map(|r| r.run_id.as_str())),
                strings(runs.iter().map(|r| r.job.as_str())),
                strings(runs.iter().map(|r| r.partition.as_str())),
                strings(runs.iter().map(|r| r.trigger.as_str())),
                u64s(runs.iter().map(|r| r.attempt as u64)),
                strings(runs.iter().map(|r| r.status.as_str())),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(runs.iter().map(|r| ts(r.started)))
                        .with_timezone("UTC"),
                ),
                Arc::new(
                    TimestampMicrosecondArray::from(
                        runs.iter().map(|r| r.ended.map(ts)).collect::<Vec<_>>(),
                    )
                    .with_timezone("UTC"),
                ),
                Arc::new(Float64Array::from(
                    runs.iter()
                        .map(|r| {
                            r.ended
                                .map(|e| (e - r.started).num_milliseconds() as f64 / 1000.0)
                        })
                        .collect::<Vec<_>>(),
                )),
                Arc::new(UInt64Array::from(
                    runs.iter().map(|r| r.rows).collect::<Vec<_>>(),
                )),
                Arc::new(UInt64Array::from(
                    runs.iter().map(|r| r.version).collect::<Vec<_>>(),
                )),
                Arc::new(UInt64Array::from(
                    runs.iter().map(|r| r.input_rows).collect::<Vec<_>>(),
                )),
                opt_strings(runs.iter().map(|r| r.error.clone()).collect()),
                opt_strings(runs.iter().map(|r| r.detail.clone()).collect()),
            ],
        )
    }
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        Ok(Some(match name {
            "tables" => self.tables().await?,
            "ingest" => self.ingest()?,
            "dead_letters" => self.dead_letters()?,
            "queries" => self.queries()?,
            "job_runs" => self.job_runs()?,
            _ => return Ok(None),
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        TABLES.contains(&name)
    }
}
