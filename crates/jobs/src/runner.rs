//! Building one partition of a job: the `kpi` views over the current silver tables, the job's
//! SQL with the partition's parameters, and one Delta commit that replaces exactly that
//! partition of `gold.<job>` (`replaceWhere`), so a re-run is idempotent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use gamelake_lake::arrow::array::RecordBatch;
use gamelake_lake::arrow::datatypes::{Field, Schema, SchemaRef};
use gamelake_lake::datafusion::catalog::{MemorySchemaProvider, SchemaProvider, TableProvider};
use gamelake_lake::datafusion::datasource::ViewTable;
use gamelake_lake::datafusion::error::{DataFusionError, Result as DfResult};
use gamelake_lake::datafusion::logical_expr::TableType;
use gamelake_lake::datafusion::prelude::DataFrame;
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
        if let Some(columns) = lake.columns(&id).await? {
            tables.insert(name, columns);
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
        // Each silver table's log is read once, for its columns and for the view's scans.
        let lake = self.lake.pinned(gamelake_common::SCHEMA_SILVER);
        let tables = silver_columns(&lake).await.map_err(external)?;
        let Some((_, sql)) = self.kpi.views(&tables).into_iter().find(|(v, _)| v == name) else {
            return Ok(None);
        };
        // Planned in a session of its own: the view's scans hold their tables' snapshots.
        let plan = QueryEngine::new(lake)
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

    /// The partitions of `day` that may hold rows: the day, or each hour whose count is not 0.
    pub fn partitions(&self, day: NaiveDate, granularity: Granularity) -> Vec<Partition> {
        match granularity {
            Granularity::Day if self.total > 0 => vec![Partition::day(day)],
            Granularity::Day => Vec::new(),
            Granularity::Hour => (0u8..24)
                .filter(|h| self.hours[usize::from(*h)] > 0)
                .map(|h| Partition::hour(day, h))
                .collect(),
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
    /// The source files of each silver table, listed the first time rows are counted in it
    /// and kept while its snapshot is pinned ([`Runner::pinned_silver`], [`Runner::frozen`]):
    /// shared by a scheduler pass and the builds it starts.
    file_lists: Option<FileLists>,
    /// The silver tables' columns the frozen views were built over ([`Runner::frozen`]).
    frozen_columns: Option<Arc<BTreeMap<String, Vec<String>>>>,
    /// The silver tables each job reads ([`Runner::silver_reads`]), shared by clones.
    reads: Arc<tokio::sync::Mutex<ReadSets>>,
    /// The views [`Runner::silver_reads`] plans with, built once per pinned pass
    /// ([`Runner::pinned_silver`]) with the columns they were built over.
    planner: Option<Arc<tokio::sync::OnceCell<(ColumnMap, QueryEngine)>>>,
}

/// Silver table name → its column names.
type ColumnMap = Arc<BTreeMap<String, Vec<String>>>;

/// Source files per silver table, shared by a pinned runner's clones.
type FileLists = Arc<std::sync::Mutex<HashMap<TableId, Arc<Vec<SourceFile>>>>>;

/// The silver tables jobs read, as planned over silver tables with these columns.
#[derive(Default)]
struct ReadSets {
    columns: Arc<BTreeMap<String, Vec<String>>>,
    /// A job's SQL (its text as written) → the silver tables it reads.
    jobs: HashMap<String, BTreeSet<String>>,
}

impl ReadSets {
    /// Forgets the reads planned over other columns than `columns`.
    fn keep_for(&mut self, columns: &ColumnMap) {
        if self.columns != *columns {
            *self = ReadSets {
                columns: columns.clone(),
                jobs: HashMap::new(),
            };
        }
    }
}

impl Runner {
    pub fn new(lake: Lake, kpi: KpiConfig, memory_limit: Option<usize>, log: RunLog) -> Self {
        Self {
            lake,
            kpi,
            memory_limit,
            log,
            frozen: None,
            file_lists: None,
            frozen_columns: None,
            reads: Arc::default(),
            planner: None,
        }
    }

    /// A runner that builds the `kpi` views once and reuses them for every build, each silver
    /// table read at one snapshot throughout: for a backfill, a `gamelake jobs run` and each
    /// scheduled build, it saves loading every silver table for the columns, the views and the
    /// row counts of each partition. Gold tables are read at their latest snapshot, so a job
    /// sees what its upstream built earlier in the same backfill. On a lake already pinned to
    /// silver (a scheduler pass's, [`Runner::pinned_silver`]) the snapshot is that one.
    pub async fn frozen(&self) -> anyhow::Result<Self> {
        let mut r = self.clone();
        // Each silver table is read from its log once, not for its columns, its view and its
        // file list each.
        // One table at a time: a load holds a blocking thread while the kernel waits on the
        // object store's blocking reads, and loads at once filled the jobs runtime's four
        // (BENCHMARKS.md, seventh session).
        r.lake = self.lake.pinned(gamelake_common::SCHEMA_SILVER);
        r.file_lists = Some(self.file_lists.clone().unwrap_or_default());
        let tables = r.silver_columns().await?;
        r.frozen = Some(r.engine_over(&tables).await?);
        r.frozen_columns = Some(Arc::new(tables));
        Ok(r)
    }

    /// [`Runner::frozen`], with the other tables `jobs` read and write (their gold tables and
    /// those of their upstream jobs) loaded meanwhile: their builds then read only the log
    /// after those snapshots. A CLI backfill of revenue otherwise read `gold.dau`'s log from
    /// its checkpoint in its first query, ~9 ms of its ~100 ms of builds (BENCHMARKS.md, issue
    /// 5, twenty-third session). A table that cannot be loaded is the build's to report.
    pub async fn frozen_for(&self, jobs: &[&JobSpec]) -> anyhow::Result<Self> {
        let mut others: Vec<TableId> = Vec::new();
        for job in jobs {
            others.push(job.target());
            for dep in &job.depends_on {
                match dep {
                    Dependency::Job(upstream) => {
                        others.push(TableId::new(gamelake_common::SCHEMA_GOLD, upstream))
                    }
                    Dependency::Table { schema, table }
                        if schema != gamelake_common::SCHEMA_SILVER && table != "*" =>
                    {
                        others.push(TableId::new(schema, table))
                    }
                    Dependency::Table { .. } => {}
                }
            }
        }
        others.sort();
        others.dedup();
        // One table at a time, beside the silver tables' loads (see [`Runner::frozen`]).
        let load_others = async {
            for id in &others {
                if let Err(e) = self.lake.load(id).await {
                    tracing::debug!(table = %id, error = %e, "cannot load a job's table ahead");
                }
            }
        };
        let (frozen, ()) = tokio::join!(self.frozen(), load_others);
        frozen
    }

    /// [`Runner::frozen_for`] the builds of `job`, or this runner when the silver tables
    /// cannot be read at one snapshot (the builds then read them as they go, and say so in
    /// their errors).
    pub async fn snapshot(&self, job: &JobSpec) -> Self {
        match self.frozen_for(&[job]).await {
            Ok(frozen) => frozen,
            Err(e) => {
                tracing::warn!(job = %job.name, error = %e, "building without a snapshot of the silver tables");
                self.clone()
            }
        }
    }

    /// This runner reading each silver table at most once until it is dropped (frozen runners
    /// already do): for one pass that counts rows of many jobs.
    pub fn pinned_silver(&self) -> Self {
        let mut r = self.clone();
        if r.frozen.is_none() {
            r.lake = self.lake.pinned(gamelake_common::SCHEMA_SILVER);
            r.file_lists = Some(self.file_lists.clone().unwrap_or_default());
            r.planner = Some(Arc::default());
        }
        r
    }

    /// The silver tables `job`'s SQL reads, through the `kpi` views: planned once per job while
    /// the silver tables' columns stay the same (a view gains a table when a table gains one of
    /// its fields). `silver.*` in `depends_on` watches these tables for late rows, so a late
    /// heartbeat does not rebuild the item economy.
    pub async fn silver_reads(&self, job: &JobSpec) -> anyhow::Result<BTreeSet<String>> {
        let columns = match &self.frozen_columns {
            Some(c) => c.clone(),
            None => Arc::new(self.silver_columns().await?),
        };
        let mut sets = self.reads.lock().await;
        sets.keep_for(&columns);
        if let Some(reads) = sets.jobs.get(&job.sql) {
            return Ok(reads.clone());
        }
        // One set of views for every job of a pass, as long as the columns are the same.
        let engine = match (&self.frozen, &self.planner) {
            (Some(e), _) => e.clone(),
            (None, Some(cell)) => {
                let (built_over, engine) = cell
                    .get_or_try_init(|| async {
                        anyhow::Ok((columns.clone(), self.engine_over(&columns).await?))
                    })
                    .await?;
                match *built_over == columns {
                    true => engine.clone(),
                    false => self.engine_over(&columns).await?,
                }
            }
            (None, None) => self.engine_over(&columns).await?,
        };
        // Any partition plans the same scans; today's is at hand.
        let today = Utc::now().with_timezone(&job.time_zone).date_naive();
        let p = Partition {
            date: today,
            hour: (job.granularity == Granularity::Hour).then_some(0),
        };
        let sql = job
            .sql_for(p, today)
            .map_err(|e| anyhow::anyhow!("{}: {e}", job.source))?;
        let reads = planned_reads(&engine, &sql).await?;
        sets.jobs.insert(job.sql.clone(), reads.clone());
        Ok(reads)
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
        let tables = self.silver_columns().await?;
        self.engine_over(&tables).await
    }

    /// A query session with the `kpi` views over silver tables with these columns.
    async fn engine_over(
        &self,
        tables: &BTreeMap<String, Vec<String>>,
    ) -> anyhow::Result<QueryEngine> {
        let engine = QueryEngine::with_memory_limit(self.lake.clone(), self.memory_limit);
        let ctx = engine.context();
        let catalog = ctx
            .catalog(gamelake_lake::query::CATALOG)
            .expect("the lake catalog is registered");
        catalog.register_schema("kpi", Arc::new(MemorySchemaProvider::new()))?;
        // Builds run two at a time (`run_batched`) on two cores: a final aggregation over one
        // partition instead of hash-repartitioned rows saves a copy of every group (retention
        // 0.88× of its time, the other jobs unchanged; BENCHMARKS.md, sixth session). A job
        // that reads its own table builds one partition at a time: [`Runner::query`] turns
        // the setting back on for it.
        ctx.sql("SET datafusion.optimizer.repartition_aggregations = false")
            .await?;
        for (name, sql) in self.kpi.views(tables) {
            ctx.sql(&format!("CREATE VIEW kpi.{name} AS {sql}"))
                .await
                .map_err(|e| anyhow::anyhow!("building view kpi.{name}: {e}"))?;
        }
        Ok(engine)
    }

    /// The tables whose late rows rebuild a job's partitions, from its `depends_on`:
    /// `silver.*` names the silver tables its SQL reads ([`Runner::silver_reads`]).
    pub async fn source_tables(&self, job: &JobSpec) -> anyhow::Result<Vec<TableId>> {
        let mut out = Vec::new();
        for dep in &job.depends_on {
            if let Dependency::Table { schema, table } = dep {
                if table == "*" {
                    let silver = schema.as_str() == gamelake_common::SCHEMA_SILVER;
                    // Of the silver tables, those the SQL reads (planned over all of them);
                    // every table of the schema while it cannot be planned (an upstream gold
                    // table not built yet).
                    let reads = match silver {
                        true => self
                            .silver_reads(job)
                            .await
                            .inspect_err(|e| {
                                tracing::debug!(job = %job.name, error = %e, "cannot plan the tables the job reads")
                            })
                            .ok(),
                        false => None,
                    };
                    let names: Vec<String> = match reads {
                        Some(reads) => reads.into_iter().collect(),
                        // A frozen runner listed the silver tables once; others list them now.
                        None => match self.frozen_columns.as_ref().filter(|_| silver) {
                            Some(columns) => columns.keys().cloned().collect(),
                            None => self.lake.list_tables(schema).await?,
                        },
                    };
                    out.extend(names.into_iter().map(|name| TableId::new(schema, name)));
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

    /// Rows per day (and per hour of the job's time zone) of all of a job's source tables.
    pub async fn source_rows(&self, job: &JobSpec) -> anyhow::Result<BTreeMap<NaiveDate, DayRows>> {
        let mut total: BTreeMap<NaiveDate, DayRows> = BTreeMap::new();
        for id in self.source_tables(job).await? {
            for f in self.files_of(&id).await?.iter() {
                total.entry(f.day).or_default().add(f, job.time_zone);
            }
        }
        Ok(total)
    }

    /// [`Runner::source_files`], listed once per pinned snapshot of a silver table. Other
    /// tables (a `gold.…` dependency) load their latest snapshot, so they are listed again.
    async fn files_of(&self, id: &TableId) -> anyhow::Result<Arc<Vec<SourceFile>>> {
        let lists = self
            .file_lists
            .as_ref()
            .filter(|_| id.schema.as_str() == gamelake_common::SCHEMA_SILVER);
        if let Some(files) = lists.and_then(|l| l.lock().expect("file lists lock").get(id).cloned())
        {
            return Ok(files);
        }
        let files = Arc::new(self.source_files(id).await?);
        if let Some(l) = lists {
            l.lock()
                .expect("file lists lock")
                .insert(id.clone(), files.clone());
        }
        Ok(files)
    }

    /// Builds one partition once (no retries), without recording a run.
    pub async fn build(
        &self,
        job: &JobSpec,
        p: Partition,
        today: NaiveDate,
    ) -> anyhow::Result<Built> {
        let q = self.query(job, p, today).await?;
        let rows = q.rows;
        let version = self.commit(job, &[p], vec![q]).await?;
        Ok(Built { rows, version })
    }

    /// Runs a partition's query and keeps its rows for [`Runner::commit`].
    async fn query(
        &self,
        job: &JobSpec,
        p: Partition,
        today: NaiveDate,
    ) -> anyhow::Result<Queried> {
        let sql = job
            .sql_for(p, today)
            .map_err(|e| anyhow::anyhow!("{}: {e}", job.source))?;
        let engine = match &self.frozen {
            Some(e) => e.clone(),
            None => self.engine().await?,
        };
        if let Some(fields) = &job.target_columns {
            self.create_empty(job, fields).await?;
        }
        let t0 = Instant::now();
        let mut df = engine.plan(&sql).await?;
        if job.reads_itself() {
            // Built alone (each partition waits for the one before), so its final
            // aggregations are better spread over the cores: first_days' query took 0.9 of
            // its time with them (BENCHMARKS.md, issue 5, nineteenth session).
            let (mut state, plan) = df.into_parts();
            state
                .config_mut()
                .options_mut()
                .optimizer
                .repartition_aggregations = true;
            df = DataFrame::new(state, plan);
        }
        let planned = t0.elapsed();
        let schema = Arc::new(df.schema().as_arrow().clone());
        for col in &partition_columns(job) {
            if schema.column_with_name(col).is_none() {
                anyhow::bail!(
                    "job `{}` must return a `{col}` column (the partition it builds, e.g. `:date AS {col}`)",
                    job.name
                );
            }
        }
        let task = Arc::new(df.task_ctx());
        // `DataFrame::create_physical_plan` in two steps, timed apart.
        let (state, plan) = df.into_parts();
        let plan = state.optimize(&plan)?;
        let optimized = t0.elapsed();
        if let Some(columns) = &self.frozen_columns {
            // The silver tables the plan scans are the job's reads ([`Runner::silver_reads`]):
            // kept, a batched build's first partition saves planning the job a second time.
            let mut sets = self.reads.lock().await;
            sets.keep_for(columns);
            if !sets.jobs.contains_key(&job.sql) {
                sets.jobs.insert(job.sql.clone(), silver_scans(&plan)?);
            }
        }
        let physical = state
            .query_planner()
            .create_physical_plan(&plan, &state)
            .await?;
        let physical_planned = t0.elapsed();
        let collected: Vec<RecordBatch> =
            gamelake_lake::datafusion::physical_plan::collect(physical, task).await?;
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
        let batches: Vec<RecordBatch> = collected
            .into_iter()
            .map(|b| RecordBatch::try_new(schema.clone(), b.columns().to_vec()))
            .collect::<Result<_, _>>()?;
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        tracing::debug!(
            job = %job.name,
            partition = %p,
            plan_ms = planned.as_millis() as u64,
            optimize_ms = (optimized - planned).as_millis() as u64,
            physical_ms = (physical_planned - optimized).as_millis() as u64,
            run_ms = (t0.elapsed() - physical_planned).as_millis() as u64,
            rows,
            "partition queried"
        );
        Ok(Queried {
            schema,
            batches,
            rows,
        })
    }

    /// One Delta commit that replaces exactly `parts` of the job's table with their rows.
    async fn commit(
        &self,
        job: &JobSpec,
        parts: &[Partition],
        queried: Vec<Queried>,
    ) -> anyhow::Result<u64> {
        let t0 = Instant::now();
        let target = job.target();
        let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
            anyhow::bail!("no partition to commit");
        };
        let label = match parts.len() {
            1 => first.to_string(),
            _ => format!("{first}..{last}"),
        };
        // A commit without rows still replaces the partitions (their rows are gone).
        let empty = RecordBatch::new_empty(queried[0].schema.clone());
        let mut batches: Vec<RecordBatch> = queried.into_iter().flat_map(|q| q.batches).collect();
        if batches.is_empty() {
            batches.push(empty);
        }
        // A daily job's partitions are whole days of its date column.
        let days: Option<Vec<NaiveDate>> =
            (job.granularity == Granularity::Day).then(|| parts.iter().map(|p| p.date).collect());
        let version = gamelake_lake::sink::replace_partition(
            &self.lake,
            &target,
            batches,
            &partition_columns(job),
            &replace_predicate(job, parts),
            days.as_deref(),
            [
                ("gamelake.job".to_string(), job.name.clone().into()),
                ("gamelake.partition".to_string(), label.into()),
            ],
        )
        .await?;
        tracing::debug!(
            job = %job.name,
            partitions = parts.len(),
            write_ms = t0.elapsed().as_millis() as u64,
            "partitions committed"
        );
        Ok(version)
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
            vec![empty],
            &partition_columns,
            "false",
            None,
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
        self.run_from(job, p, trigger, &now, retries, 1).await
    }

    /// [`Runner::run`] from attempt `first` on.
    async fn run_from(
        &self,
        job: &JobSpec,
        p: Partition,
        trigger: Trigger,
        now: &impl Fn() -> DateTime<Utc>,
        retries: bool,
        first: u32,
    ) -> RunRecord {
        let mut attempt = first;
        loop {
            let record = self.attempt(job, p, trigger, attempt, now).await;
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
        let (mut record, started) = self.begin(job, p, trigger, attempt, now).await;
        let today = now().with_timezone(&job.time_zone).date_naive();
        let outcome = match tokio::time::timeout(job.timeout, self.build(job, p, today)).await {
            Ok(built) => built,
            Err(_) => Err(timed_out(job)),
        };
        match outcome {
            Ok(built) => {
                record.status = RunStatus::Succeeded;
                record.rows = Some(built.rows);
                record.version = Some(built.version);
            }
            Err(e) => fail(&mut record, &e),
        }
        self.finish(&mut record, started, now);
        record
    }

    /// Builds `parts` of a job that does not read its own table, in order, committing several
    /// partitions at once: at most [`BATCH_PARTITIONS`] partitions or about [`BATCH_ROWS`] rows
    /// a commit. A backfill of hourly partitions so makes one commit a day instead of 24. Each
    /// partition still has its own run in the log (those committed together share their end
    /// and their version). With `retries`, a partition whose query fails, or whose commit
    /// fails, is built again alone with the job's retries (without, its failed run is final:
    /// the scheduler plans retries itself). `done` sees each partition's final run.
    pub async fn run_batched(
        &self,
        job: &JobSpec,
        parts: &[Partition],
        trigger: Trigger,
        now: impl Fn() -> DateTime<Utc>,
        retries: bool,
        mut done: impl FnMut(&RunRecord),
    ) {
        if job.reads_itself() {
            for &p in parts {
                done(&self.run_from(job, p, trigger, &now, retries, 1).await);
            }
            return;
        }
        // The target's log is read while the first partitions are queried, not when their
        // commit needs it: a CLI backfill loads it for the first time, and that load was about
        // 12 ms of revenue's 21 ms commit (17 commits since no checkpoint; BENCHMARKS.md,
        // issue 5, twenty-first session). A server's runs find it loaded and list the log.
        let mut target_loaded = {
            let (lake, target) = (self.lake.clone(), job.target());
            Some(tokio::spawn(async move { lake.load(&target).await }))
        };
        let mut pending: Vec<(RunRecord, Instant, Partition, Queried)> = Vec::new();
        let mut again: Vec<Partition> = Vec::new();
        let shared = Arc::new((self.clone(), job.clone()));
        // Two partitions are queried at a time (one plans while the other scans), committed
        // in order.
        let queries = futures::stream::iter(parts.iter().copied())
            .map(|p| {
                let now = &now;
                let shared = shared.clone();
                async move {
                    // Counted after the query when it may be: the first partition's query
                    // then finds the silver tables the job reads (`silver.*`) from its own
                    // plan, without planning the job once more to learn them.
                    let after = self.counts_after_query(job);
                    let (mut record, started) = match after {
                        true => self.start(job, p, trigger, 1, now),
                        false => self.begin(job, p, trigger, 1, now).await,
                    };
                    let today = now().with_timezone(&job.time_zone).date_naive();
                    // Each query in a task of its own: polled here, the two queries' planning
                    // (a third of revenue's CPU) ran on one thread, and the process used 1.3
                    // of the 2 cores (BENCHMARKS.md, issue 5, twenty-second session).
                    let task = AbortOnDrop(tokio::spawn(async move {
                        let (runner, job) = &*shared;
                        let query = runner.query(job, p, today);
                        match tokio::time::timeout(job.timeout, query).await {
                            Ok(q) => q,
                            Err(_) => Err(timed_out(job)),
                        }
                    }));
                    let queried = match task.join().await {
                        Ok(q) => q,
                        Err(e) => Err(anyhow::anyhow!("the query's task failed: {e}")),
                    };
                    // A failed run's rows are not compared later; counting them would plan
                    // the failing job again.
                    if after && queried.is_ok() {
                        self.count_input(job, p, &mut record).await;
                    }
                    (record, started, p, queried)
                }
            })
            .buffered(QUERIES_AT_ONCE);
        futures::pin_mut!(queries);
        while let Some((mut record, started, p, queried)) = queries.next().await {
            match queried {
                Ok(q) => {
                    let rows: u64 = pending.iter().map(|(.., q)| q.rows).sum();
                    let full = pending.len() >= BATCH_PARTITIONS
                        || rows + q.rows > BATCH_ROWS
                        || pending
                            .first()
                            .is_some_and(|(.., first)| first.schema != q.schema);
                    if full {
                        if let Some(loaded) = target_loaded.take() {
                            let _ = loaded.await;
                        }
                        self.commit_pending(
                            job,
                            &mut pending,
                            &now,
                            retries,
                            &mut again,
                            &mut done,
                        )
                        .await;
                    }
                    pending.push((record, started, p, q));
                }
                Err(e) => {
                    fail(&mut record, &e);
                    self.finish(&mut record, started, &now);
                    self.retry_or_done(job, p, &record, retries, &mut again, &mut done);
                }
            }
        }
        if let Some(loaded) = target_loaded.take() {
            // A failed load is the commit's to report: it loads the table again.
            let _ = loaded.await;
        }
        self.commit_pending(job, &mut pending, &now, retries, &mut again, &mut done)
            .await;
        for p in again {
            done(&self.run_from(job, p, trigger, &now, true, 2).await);
        }
    }

    /// Commits the partitions queried so far in one commit and finishes their runs.
    async fn commit_pending(
        &self,
        job: &JobSpec,
        pending: &mut Vec<(RunRecord, Instant, Partition, Queried)>,
        now: &impl Fn() -> DateTime<Utc>,
        retries: bool,
        again: &mut Vec<Partition>,
        done: &mut impl FnMut(&RunRecord),
    ) {
        if pending.is_empty() {
            return;
        }
        let mut runs = Vec::new();
        let mut parts = Vec::new();
        let mut queried = Vec::new();
        for (record, started, p, q) in pending.drain(..) {
            runs.push((record, started, q.rows));
            parts.push(p);
            queried.push(q);
        }
        let committed =
            match tokio::time::timeout(job.timeout, self.commit(job, &parts, queried)).await {
                Ok(c) => c,
                Err(_) => Err(timed_out(job)),
            };
        for ((mut record, started, rows), p) in runs.into_iter().zip(parts) {
            match &committed {
                Ok(version) => {
                    record.status = RunStatus::Succeeded;
                    record.rows = Some(rows);
                    record.version = Some(*version);
                }
                Err(e) => fail(&mut record, e),
            }
            self.finish(&mut record, started, now);
            self.retry_or_done(job, p, &record, retries, again, done);
        }
    }

    /// A failed first attempt of a batched build is built again alone if the job retries.
    fn retry_or_done(
        &self,
        job: &JobSpec,
        p: Partition,
        record: &RunRecord,
        retries: bool,
        again: &mut Vec<Partition>,
        done: &mut impl FnMut(&RunRecord),
    ) {
        if retries && record.status.is_failure() && job.retries > 0 {
            again.push(p);
        } else {
            done(record);
        }
    }

    /// Records the start of an attempt with the rows of the partition's day in the job's source
    /// tables (what the late-data check compares later).
    async fn begin(
        &self,
        job: &JobSpec,
        p: Partition,
        trigger: Trigger,
        attempt: u32,
        now: &impl Fn() -> DateTime<Utc>,
    ) -> (RunRecord, Instant) {
        let (mut record, started) = self.start(job, p, trigger, attempt, now);
        self.count_input(job, p, &mut record).await;
        (record, started)
    }

    /// Records the start of an attempt, without its source rows ([`Runner::count_input`]).
    fn start(
        &self,
        job: &JobSpec,
        p: Partition,
        trigger: Trigger,
        attempt: u32,
        now: &impl Fn() -> DateTime<Utc>,
    ) -> (RunRecord, Instant) {
        let record = RunRecord::start(&job.name, &p.to_string(), trigger, attempt, now());
        if let Err(e) = self.log.record(&record) {
            tracing::error!(error = %e, "cannot write the run log");
        }
        (record, Instant::now())
    }

    /// Sets the rows of the partition's day (and hour) in the job's source tables on `record`.
    async fn count_input(&self, job: &JobSpec, p: Partition, record: &mut RunRecord) {
        match self.pinned_silver().day_rows(job, p.date).await {
            Ok(day) => {
                record.input_rows = Some(day.total);
                record.input_hour_rows = p.hour.map(|h| day.hours[usize::from(h) % 24]);
            }
            Err(e) => tracing::warn!(job = %job.name, error = %e, "cannot count the source rows"),
        }
    }

    /// Whether a build's source rows may be counted after its query rather than before: the
    /// tables counted are then the silver tables its plan scanned, at the runner's pinned
    /// snapshot, which the query read too. A job with a gold (or other unpinned) table among
    /// its dependencies is counted first: rows committed there during its query would be
    /// counted and not built.
    fn counts_after_query(&self, job: &JobSpec) -> bool {
        self.frozen.is_some()
            && job.depends_on.iter().all(|d| match d {
                Dependency::Job(_) => true,
                Dependency::Table { schema, .. } => schema == gamelake_common::SCHEMA_SILVER,
            })
    }

    /// Rows of the job's source tables in one day.
    async fn day_rows(&self, job: &JobSpec, day: NaiveDate) -> anyhow::Result<DayRows> {
        let mut rows = DayRows::default();
        for id in self.source_tables(job).await? {
            for f in self.files_of(&id).await?.iter().filter(|f| f.day == day) {
                rows.add(f, job.time_zone);
            }
        }
        Ok(rows)
    }

    /// Ends an attempt's record and writes it to the run log.
    fn finish(&self, record: &mut RunRecord, started: Instant, now: &impl Fn() -> DateTime<Utc>) {
        record.ended = Some(now());
        tracing::info!(
            job = %record.job,
            partition = %record.partition,
            status = record.status.as_str(),
            rows = ?record.rows,
            ms = started.elapsed().as_millis() as u64,
            "job run"
        );
        if let Err(e) = self.log.record(record) {
            tracing::error!(error = %e, "cannot write the run log");
        }
    }
}

/// Partitions [`Runner::run_batched`] queries at a time.
const QUERIES_AT_ONCE: usize = 2;
/// At most this many partitions in one commit of [`Runner::run_batched`].
pub const BATCH_PARTITIONS: usize = 48;
/// A commit of [`Runner::run_batched`] holds about this many rows at most (one partition's
/// rows are never split).
pub const BATCH_ROWS: u64 = 250_000;

/// A partition's rows, queried and not yet committed.
struct Queried {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    rows: u64,
}

/// A task aborted when its handle is dropped: a batched build dropped mid-way (its caller's
/// timeout) stops its queries.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> AbortOnDrop<T> {
    async fn join(mut self) -> Result<T, tokio::task::JoinError> {
        (&mut self.0).await
    }
}

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A build or commit that ran longer than the job's `timeout`.
#[derive(Debug)]
struct TimedOut(std::time::Duration);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ran longer than the job's `timeout` of {:?}", self.0)
    }
}

impl std::error::Error for TimedOut {}

fn timed_out(job: &JobSpec) -> anyhow::Error {
    TimedOut(job.timeout).into()
}

/// Marks a record failed (or timed out) with the error.
fn fail(record: &mut RunRecord, e: &anyhow::Error) {
    record.status = if e.is::<TimedOut>() {
        RunStatus::TimedOut
    } else {
        RunStatus::Failed
    };
    record.error = Some(format!("{e:#}"));
}

/// The target's partition columns: the date column, and the hour for hourly jobs.
fn partition_columns(job: &JobSpec) -> Vec<String> {
    let mut columns = vec![job.partition_column.clone()];
    if job.granularity == Granularity::Hour {
        columns.push(COL_EVENT_HOUR.to_string());
    }
    columns
}

/// The partitions' rows of the target: `event_date IN ('2026-11-28')` for daily jobs;
/// `(event_date = '2026-11-28' AND event_hour IN (5, 6))` for each day of hourly ones, joined
/// by `OR`.
fn replace_predicate(job: &JobSpec, parts: &[Partition]) -> String {
    let col = &job.partition_column;
    let mut days: BTreeMap<NaiveDate, Vec<u8>> = BTreeMap::new();
    for p in parts {
        let hours = days.entry(p.date).or_default();
        hours.extend(p.hour);
    }
    if job.granularity == Granularity::Day {
        let list: Vec<String> = days.keys().map(|d| format!("'{d}'")).collect();
        return format!("{col} IN ({})", list.join(", "));
    }
    let terms: Vec<String> = days
        .iter()
        .map(|(d, hours)| {
            let list: Vec<String> = hours.iter().map(u8::to_string).collect();
            format!(
                "({col} = '{d}' AND {COL_EVENT_HOUR} IN ({}))",
                list.join(", ")
            )
        })
        .collect();
    terms.join(" OR ")
}

/// The silver tables a statement reads: the scans of its optimized plan (views are inlined when
/// planned, and union branches the optimizer proved empty read nothing).
async fn planned_reads(engine: &QueryEngine, sql: &str) -> anyhow::Result<BTreeSet<String>> {
    let plan = engine.plan(sql).await?.into_optimized_plan()?;
    silver_scans(&plan)
}

/// The silver tables an optimized plan scans.
fn silver_scans(
    plan: &gamelake_lake::datafusion::logical_expr::LogicalPlan,
) -> anyhow::Result<BTreeSet<String>> {
    use gamelake_lake::datafusion::common::tree_node::TreeNodeRecursion;
    use gamelake_lake::datafusion::logical_expr::LogicalPlan;
    let mut out = BTreeSet::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            if scan.table_name.schema() == Some(gamelake_common::SCHEMA_SILVER) {
                out.insert(scan.table_name.table().to_string());
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    Ok(out)
}

#[cfg(test)]
mod day_rows_tests {
    use super::*;

    #[test]
    fn a_timeout_is_told_from_other_failures_by_its_type() {
        let mut r = RunRecord::start("j", "2026-11-01", Trigger::Backfill, 1, Utc::now());
        let e: anyhow::Error = TimedOut(std::time::Duration::from_secs(5)).into();
        fail(&mut r, &e.context("building 2026-11-01"));
        assert_eq!(r.status, RunStatus::TimedOut);
        assert!(
            r.error.as_deref().unwrap().contains("`timeout` of 5s"),
            "{r:?}"
        );
        // The same words in another error are a failure.
        fail(
            &mut r,
            &anyhow::anyhow!("ran longer than the job's `timeout` of 5s"),
        );
        assert_eq!(r.status, RunStatus::Failed);
    }

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
