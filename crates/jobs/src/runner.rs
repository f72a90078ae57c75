//! Building one partition of a job: the `kpi` views over the current silver tables, the job's
//! SQL with the partition's parameters, and one Delta commit that replaces exactly that
//! partition of `gold.<job>` (`replaceWhere`), so a re-run is idempotent.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use gamelake_lake::arrow::array::RecordBatch;
use gamelake_lake::arrow::datatypes::{Field, Schema};
use gamelake_lake::datafusion::catalog::{MemorySchemaProvider, SchemaProvider, TableProvider};
use gamelake_lake::datafusion::datasource::ViewTable;
use gamelake_lake::datafusion::error::{DataFusionError, Result as DfResult};
use gamelake_lake::datafusion::logical_expr::TableType;
use gamelake_lake::deltalake::DeltaTable;
use gamelake_lake::{Lake, QueryEngine, TableId};

use crate::kpi::KpiConfig;
use crate::runs::{RunLog, RunRecord, RunStatus, Trigger};
use crate::spec::{Dependency, Granularity, JobSpec, Partition};

/// Column of the hour in hourly gold tables.
pub const COL_EVENT_HOUR: &str = "event_hour";

/// The column names of every silver table of `lake`.
async fn silver_columns(lake: &Lake) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let mut tables = BTreeMap::new();
    for name in lake.list_tables(gamelake_common::SCHEMA_SILVER).await? {
        let id = TableId::new(gamelake_common::SCHEMA_SILVER, &name);
        if let Some(info) = lake.describe(&id).await? {
            tables.insert(name, info.columns.into_iter().map(|c| c.0).collect());
        }
    }
    Ok(tables)
}

/// The `kpi` schema of ad-hoc SQL (`gamelake sql`, `/v1/query`, the Postgres port): the views
/// the jobs read, each planned when a query names it over the silver tables as they are then,
/// so new fields and codes show without a restart. Jobs build the same views per run
/// ([`Runner::engine`]).
#[derive(Debug)]
pub struct KpiSchema {
    lake: Lake,
    kpi: KpiConfig,
}

impl KpiSchema {
    pub fn new(lake: Lake, kpi: KpiConfig) -> Self {
        Self { lake, kpi }
    }
}

#[async_trait::async_trait]
impl SchemaProvider for KpiSchema {
    fn table_names(&self) -> Vec<String> {
        crate::kpi::VIEWS.iter().map(|v| v.to_string()).collect()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        if !self.table_exist(name) {
            return Ok(None);
        }
        let external = |e: anyhow::Error| DataFusionError::External(e.into());
        let tables = silver_columns(&self.lake).await.map_err(external)?;
        let Some((_, sql)) = self.kpi.views(&tables).into_iter().find(|(v, _)| v == name) else {
            return Ok(None);
        };
        // Planned in a session of its own: the view's scans hold their tables' snapshots.
        let plan = QueryEngine::new(self.lake.clone())
            .plan(&sql)
            .await
            .map_err(|e| external(anyhow::anyhow!("planning view kpi.{name}: {e}")))?
            .into_unoptimized_plan();
        Ok(Some(Arc::new(ViewTable::new(plan, Some(sql)))))
    }

    /// Without planning the view: catalog listings (`information_schema`, `\d`) ask for every
    /// table's type.
    async fn table_type(&self, name: &str) -> DfResult<Option<TableType>> {
        Ok(self.table_exist(name).then_some(TableType::View))
    }

    fn table_exist(&self, name: &str) -> bool {
        crate::kpi::VIEWS.contains(&name)
    }
}

/// What a successful build wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct Built {
    pub rows: u64,
    pub version: u64,
}

/// One data file of a source table, as the late-data check sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceFile {
    pub day: NaiveDate,
    pub rows: u64,
    /// Earliest and latest `event_time`, microseconds since the epoch (UTC).
    pub event_time_us: Option<(i64, i64)>,
}

/// Rows of a job's source tables in one day: in all, and per hour of the job's time zone as
/// far as the files' `event_time` ranges tell. A file counts in every hour its range touches, and
/// a file without a range in all 24. So an hour's count only grows when a file that may hold
/// rows of that hour is added. Compaction merges files into ones that span more hours without
/// changing the day's total, so the scheduler looks at the hours only when the total grew.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DayRows {
    pub total: u64,
    pub hours: [u64; 24],
}

impl DayRows {
    pub fn add(&mut self, f: &SourceFile, tz: chrono_tz::Tz) {
        self.total += f.rows;
        let (first, last) = f
            .event_time_us
            .map(|(lo, hi)| {
                (
                    hour_in_day(lo, f.day, tz, 0),
                    hour_in_day(hi, f.day, tz, 23),
                )
            })
            .unwrap_or((0, 23));
        for h in first..=last.max(first) {
            self.hours[h] += f.rows;
        }
    }
}

/// The hour of `day` (in `tz`) that instant `us` falls in; `outside` when it is not in that day
/// (a file's range clamped to its partition's day) or not a valid time.
fn hour_in_day(us: i64, day: NaiveDate, tz: chrono_tz::Tz, outside: usize) -> usize {
    use chrono::Timelike;
    match DateTime::<Utc>::from_timestamp_micros(us).map(|t| t.with_timezone(&tz)) {
        Some(local) if local.date_naive() == day => local.hour() as usize,
        _ => outside,
    }
}

/// Runs jobs against a lake.
#[derive(Clone)]
pub struct Runner {
    lake: Lake,
    kpi: KpiConfig,
    memory_limit: Option<usize>,
    log: RunLog,
    /// A session whose `kpi` views were built once ([`Runner::frozen`]).
    frozen: Option<QueryEngine>,
    /// Source files per table, listed once ([`Runner::frozen`]).
    frozen_rows: Option<Arc<HashMap<TableId, Vec<SourceFile>>>>,
    /// Gold tables as this runner last wrote them ([`Runner::frozen`]).
    frozen_gold: Option<Arc<std::sync::Mutex<HashMap<TableId, DeltaTable>>>>,
}

impl Runner {
    pub fn new(lake: Lake, kpi: KpiConfig, memory_limit: Option<usize>, log: RunLog) -> Self {
        Self {
            lake,
            kpi,
            memory_limit,
            log,
            frozen: None,
            frozen_rows: None,
            frozen_gold: None,
        }
    }

    /// A runner that builds the `kpi` views once and reuses them for every build: for a
    /// backfill of past days, which does not need rows arriving meanwhile, it saves listing and
    /// loading every silver table per partition (each is read at one snapshot throughout).
    /// Gold tables are still read afresh, so a job sees what its upstream built earlier in the
    /// same backfill.
    pub async fn frozen(&self) -> anyhow::Result<Self> {
        let mut r = self.clone();
        // Each silver table is read from its log once, not for its columns, its view and its
        // file list each.
        r.lake = self.lake.pinned(gamelake_common::SCHEMA_SILVER);
        r.frozen = Some(r.engine().await?);
        let mut rows = HashMap::new();
        for name in r.lake.list_tables(gamelake_common::SCHEMA_SILVER).await? {
            let id = TableId::new(gamelake_common::SCHEMA_SILVER, name);
            let files = r.source_files(&id).await?;
            rows.insert(id, files);
        }
        r.frozen_rows = Some(Arc::new(rows));
        r.frozen_gold = Some(Arc::default());
        Ok(r)
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    pub fn log(&self) -> &RunLog {
        &self.log
    }

    /// The column names of every silver table, which the `kpi` views are built from.
    pub async fn silver_columns(&self) -> anyhow::Result<BTreeMap<String, Vec<String>>> {
        silver_columns(&self.lake).await
    }

    /// A query session with the `kpi` views registered over the tables as they are now.
    pub async fn engine(&self) -> anyhow::Result<QueryEngine> {
        let engine = QueryEngine::with_memory_limit(self.lake.clone(), self.memory_limit);
        let tables = self.silver_columns().await?;
        let ctx = engine.context();
        let catalog = ctx
            .catalog(gamelake_lake::query::CATALOG)
            .expect("the lake catalog is registered");
        catalog.register_schema("kpi", Arc::new(MemorySchemaProvider::new()))?;
        for (name, sql) in self.kpi.views(&tables) {
            ctx.sql(&format!("CREATE VIEW kpi.{name} AS {sql}"))
                .await
                .map_err(|e| anyhow::anyhow!("building view kpi.{name}: {e}"))?;
        }
        Ok(engine)
    }

    /// The tables a job reads, from its `depends_on` (`silver.*` names every silver table).
    pub async fn source_tables(&self, job: &JobSpec) -> anyhow::Result<Vec<TableId>> {
        let mut out = Vec::new();
        for dep in &job.depends_on {
            if let Dependency::Table { schema, table } = dep {
                if table == "*" {
                    for name in self.lake.list_tables(schema).await? {
                        out.push(TableId::new(schema, name));
                    }
                } else {
                    out.push(TableId::new(schema, table));
                }
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// The files of a table's current snapshot as the late-data check counts them: day, rows
    /// and `event_time` range, from the Delta log's statistics (no data is read).
    pub async fn source_files(&self, id: &TableId) -> anyhow::Result<Vec<SourceFile>> {
        let mut out = Vec::new();
        for f in self.lake.files(id).await? {
            let day = f
                .partition
                .get(gamelake_common::COL_EVENT_DATE)
                .and_then(|v| v.as_deref())
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
            if let Some(day) = day {
                out.push(SourceFile {
                    day,
                    rows: f.rows,
                    event_time_us: f.event_time_us,
                });
            }
        }
        Ok(out)
    }

    /// Rows per day (and per hour of the job's time zone) of all of a job's source tables;
    /// `cache` holds tables already listed.
    pub async fn source_rows(
        &self,
        job: &JobSpec,
        cache: &mut HashMap<TableId, Vec<SourceFile>>,
    ) -> anyhow::Result<BTreeMap<NaiveDate, DayRows>> {
        let mut total: BTreeMap<NaiveDate, DayRows> = BTreeMap::new();
        for id in self.source_tables(job).await? {
            if !cache.contains_key(&id) {
                let files = self.source_files(&id).await?;
                cache.insert(id.clone(), files);
            }
            for f in &cache[&id] {
                total.entry(f.day).or_default().add(f, job.time_zone);
            }
        }
        Ok(total)
    }

    /// Builds one partition once (no retries), without recording a run.
    pub async fn build(
        &self,
        job: &JobSpec,
        p: Partition,
        today: NaiveDate,
    ) -> anyhow::Result<Built> {
        let sql = job
            .sql_for(p, today)
            .map_err(|e| anyhow::anyhow!("{}: {e}", job.source))?;
        let engine = match &self.frozen {
            Some(e) => e.clone(),
            None => self.engine().await?,
        };
        let target = job.target();
        if let Some(fields) = &job.target_columns {
            self.create_empty(job, fields).await?;
        }
        let t0 = Instant::now();
        let df = engine.plan(&sql).await?;
        let planned = t0.elapsed();
        let schema = Arc::new(df.schema().as_arrow().clone());
        let partition_columns = partition_columns(job);
        for col in &partition_columns {
            if schema.column_with_name(col).is_none() {
                anyhow::bail!(
                    "job `{}` must return a `{col}` column (the partition it builds, e.g. `:date AS {col}`)",
                    job.name
                );
            }
        }
        let collected: Vec<RecordBatch> = df.collect().await?;
        let queried = t0.elapsed();
        // Every gold column is nullable: the planner may prove a column non-null for one
        // partition (a CASE folded away) that is null in another. The batches' own types are
        // kept (the plan's schema may say Utf8 where the batches hold Utf8View).
        let schema = Arc::new(Schema::new(
            collected
                .first()
                .map(|b| b.schema())
                .unwrap_or(schema)
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ));
        let mut batches: Vec<RecordBatch> = collected
            .into_iter()
            .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
            .collect::<Result<_, _>>()?;
        let rows: u64 = batches.iter().map(|b| b.num_rows() as u64).sum();
        if batches.is_empty() {
            batches.push(RecordBatch::new_empty(schema.clone()));
        }
        let loaded = self
            .frozen_gold
            .as_ref()
            .and_then(|g| g.lock().expect("gold lock").remove(&target));
        let (version, table) = gamelake_lake::sink::replace_partition(
            &self.lake,
            &target,
            loaded,
            batches,
            &partition_columns,
            &replace_predicate(job, p),
            [
                ("gamelake.job".to_string(), job.name.clone().into()),
                ("gamelake.partition".to_string(), p.to_string().into()),
            ],
        )
        .await?;
        if let Some(g) = &self.frozen_gold {
            g.lock().expect("gold lock").insert(target, table);
        }
        tracing::debug!(
            job = %job.name,
            partition = %p,
            plan_ms = planned.as_millis() as u64,
            query_ms = (queried - planned).as_millis() as u64,
            write_ms = (t0.elapsed() - queried).as_millis() as u64,
            "build phases"
        );
        Ok(Built { rows, version })
    }

    /// Creates `gold.<job>` with `fields` and no rows if it does not exist yet, for a job that
    /// reads its own earlier partitions (`target_columns`).
    async fn create_empty(&self, job: &JobSpec, fields: &[Field]) -> anyhow::Result<()> {
        let target = job.target();
        if self.lake.load(&target).await?.is_some() {
            return Ok(());
        }
        let partition_columns = partition_columns(job);
        let empty = RecordBatch::new_empty(Arc::new(Schema::new(fields.to_vec())));
        gamelake_lake::sink::replace_partition(
            &self.lake,
            &target,
            None,
            vec![empty],
            &partition_columns,
            "false",
            [("gamelake.job".to_string(), job.name.clone().into())],
        )
        .await?;
        tracing::info!(table = %target, "created empty for the job's reads of its own partitions");
        Ok(())
    }

    /// Builds a partition with the job's retries, timeout and backoff, recording every attempt.
    /// `sleep` waits between attempts (tests pass one that does not).
    pub async fn run(
        &self,
        job: &JobSpec,
        p: Partition,
        trigger: Trigger,
        now: impl Fn() -> DateTime<Utc>,
        retries: bool,
    ) -> RunRecord {
        let mut attempt = 1;
        loop {
            let record = self.attempt(job, p, trigger, attempt, &now).await;
            let retry = retries && record.status.is_failure() && attempt <= job.retries;
            if !retry {
                return record;
            }
            let backoff = job.retry_backoff * 2u32.saturating_pow(attempt - 1);
            tracing::warn!(job = %job.name, partition = %p, attempt, error = ?record.error, ?backoff, "job failed; retrying");
            tokio::time::sleep(backoff).await;
            attempt += 1;
        }
    }

    /// One attempt, recorded in the run log.
    pub async fn attempt(
        &self,
        job: &JobSpec,
        p: Partition,
        trigger: Trigger,
        attempt: u32,
        now: &impl Fn() -> DateTime<Utc>,
    ) -> RunRecord {
        let mut record = RunRecord::start(&job.name, &p.to_string(), trigger, attempt, now());
        if let Err(e) = self.log.record(&record) {
            tracing::error!(error = %e, "cannot write the run log");
        }
        let today = now().with_timezone(&job.time_zone).date_naive();
        let started = Instant::now();
        let mut cache = self
            .frozen_rows
            .as_ref()
            .map(|c| HashMap::clone(c))
            .unwrap_or_default();
        match self.source_rows(job, &mut cache).await {
            Ok(rows) => {
                let day = rows.get(&p.date).cloned().unwrap_or_default();
                record.input_rows = Some(day.total);
                record.input_hour_rows = p.hour.map(|h| day.hours[usize::from(h) % 24]);
            }
            Err(e) => tracing::warn!(job = %job.name, error = %e, "cannot count the source rows"),
        }
        tracing::debug!(job = %job.name, ms = started.elapsed().as_millis() as u64, "source rows counted");
        let outcome = tokio::time::timeout(job.timeout, self.build(job, p, today)).await;
        match outcome {
            Ok(Ok(built)) => {
                record.status = RunStatus::Succeeded;
                record.rows = Some(built.rows);
                record.version = Some(built.version);
            }
            Ok(Err(e)) => {
                record.status = RunStatus::Failed;
                record.error = Some(format!("{e:#}"));
            }
            Err(_) => {
                record.status = RunStatus::TimedOut;
                record.error = Some(format!(
                    "ran longer than the job's `timeout` of {:?}",
                    job.timeout
                ));
            }
        }
        record.ended = Some(now());
        tracing::info!(
            job = %job.name,
            partition = %p,
            status = record.status.as_str(),
            rows = ?record.rows,
            ms = started.elapsed().as_millis() as u64,
            "job run"
        );
        if let Err(e) = self.log.record(&record) {
            tracing::error!(error = %e, "cannot write the run log");
        }
        record
    }
}

/// The target's partition columns: the date column, and the hour for hourly jobs.
fn partition_columns(job: &JobSpec) -> Vec<String> {
    let mut columns = vec![job.partition_column.clone()];
    if job.granularity == Granularity::Hour {
        columns.push(COL_EVENT_HOUR.to_string());
    }
    columns
}

/// `event_date = '2026-11-28'` (and `event_hour = 5` for hourly jobs).
fn replace_predicate(job: &JobSpec, p: Partition) -> String {
    let mut pred = format!("{} = '{}'", job.partition_column, p.date);
    if let Some(h) = p.hour {
        pred.push_str(&format!(" AND {COL_EVENT_HOUR} = {h}"));
    }
    pred
}

#[cfg(test)]
mod day_rows_tests {
    use super::*;

    fn at(s: &str) -> i64 {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    /// Hours are the job's time zone's: a file counts in each hour its event_time range
    /// touches, clamped to its day; a file without a range counts in every hour.
    #[test]
    fn files_count_in_the_hours_they_may_hold() {
        let day = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        let seoul = chrono_tz::Asia::Seoul;
        let mut rows = DayRows::default();
        let file = |rows, range| SourceFile {
            day,
            rows,
            event_time_us: range,
        };
        // 03:10-03:20 Seoul (18:10-18:20 UTC the day before).
        rows.add(
            &file(
                5,
                Some((at("2026-11-27T18:10:00Z"), at("2026-11-27T18:20:00Z"))),
            ),
            seoul,
        );
        // 04:59:59-05:00:01 Seoul: hours 4 and 5.
        rows.add(
            &file(
                2,
                Some((at("2026-11-27T19:59:59Z"), at("2026-11-27T20:00:01Z"))),
            ),
            seoul,
        );
        // Starts the day before (Seoul): clamped to hour 0.
        rows.add(
            &file(
                1,
                Some((at("2026-11-27T14:30:00Z"), at("2026-11-27T15:10:00Z"))),
            ),
            seoul,
        );
        rows.add(&file(7, None), seoul);
        assert_eq!(rows.total, 15);
        let mut want = [7u64; 24];
        want[0] += 1;
        want[3] += 5;
        want[4] += 2;
        want[5] += 2;
        assert_eq!(rows.hours, want);
    }
}
