//! SQL golden tests in the sqllogictest format over the tables gamelake writes.
//!
//! Each `tests/sql/<topic>.slt` gets a fresh data dir. The statement `LOAD '<file>'` ingests a
//! log file (relative to `tests/sql/`) through the real pipeline (parse, WAL, table commits) and
//! returns once it is committed; `RUN JOB <name> <partition> [AT <rfc3339>]` builds one
//! partition of a job (shipped or under `tests/sql/jobs/`) as `gamelake jobs run` does, with
//! the clock at `AT` (default 2030-01-01, when every day of the fixtures is over); every other
//! statement runs on the query engine.
//!
//! Run one file: `cargo test -p gamelake --test sqllogictests -- <topic>`; rewrite the expected
//! results after a reviewed change: `... -- <topic> --complete`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use gamelake::config::{self, Overrides};
use gamelake_lake::arrow::array::RecordBatch;
use gamelake_lake::arrow::util::display::{ArrayFormatter, FormatOptions};
use gamelake_lake::{Lake, QueryEngine};
use gamelake_parse::IngestMeta;
use sqllogictest::{DBOutput, DefaultColumnType};

#[derive(Debug)]
struct SltError(String);

impl std::fmt::Display for SltError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SltError {}

struct Db {
    data_dir: PathBuf,
    fixtures: PathBuf,
    engine: QueryEngine,
    /// Shared by every LOAD of a file, and read by the `system` schema.
    metrics: Arc<gamelake::metrics::Metrics>,
    runs: gamelake_jobs::RunLog,
}

impl Db {
    async fn load(&self, file: &str) -> Result<(), SltError> {
        let err = |e: anyhow::Error| SltError(format!("{e:#}"));
        let body = std::fs::read(self.fixtures.join(file))
            .map_err(|e| SltError(format!("reading `{file}`: {e}")))?;
        let flags = Overrides {
            data_dir: Some(self.data_dir.display().to_string()),
            ..Overrides::default()
        };
        let cfg = config::load(None, &HashMap::new(), &flags).map_err(err)?;
        let lake = Lake::open(&cfg.data_dir).map_err(|e| SltError(e.to_string()))?;
        let (pipeline, task, _) = gamelake::pipeline::start(&cfg, lake, self.metrics.clone())
            .await
            .map_err(err)?;
        // A fixed ingest time keeps `_ingest_time` and `ingest_date` stable in expected output.
        let meta = IngestMeta {
            ingest_time_us: 1_764_288_000_000_000,
            source: "slt".into(),
        };
        let parsed = pipeline.parse(&body, &meta);
        let bytes = body.len() as u64;
        let parts = gamelake::pipeline::record::parts(meta.ingest_time_us, "slt", None, body);
        pipeline
            .submit(parts, parsed, bytes)
            .await
            .map_err(|e| SltError(e.to_string()))?;
        pipeline.close();
        task.join().await.map_err(err)
    }
}

impl Db {
    async fn run_job(&self, args: &str) -> Result<(), SltError> {
        let words: Vec<&str> = args.split_whitespace().collect();
        let (name, partition, at) = match words.as_slice() {
            [name, p] => (*name, *p, "2030-01-01T00:00:00Z"),
            [name, p, "AT", at] => (*name, *p, *at),
            _ => {
                return Err(SltError(format!(
                    "RUN JOB <name> <partition> [AT <time>]: `{args}`"
                )))
            }
        };
        let at = chrono::DateTime::parse_from_rfc3339(at)
            .map_err(|e| SltError(format!("AT `{at}`: {e}")))?
            .with_timezone(&chrono::Utc);
        let jobs = gamelake_jobs::Jobs::load(
            Some(&self.fixtures.join("jobs")),
            true,
            &[],
            chrono_tz::Asia::Seoul,
        )
        .map_err(SltError)?;
        let job = jobs.find(name).map_err(SltError)?;
        let p = gamelake_jobs::Partition::parse(partition).map_err(SltError)?;
        let lake = Lake::open(&self.data_dir.display().to_string())
            .map_err(|e| SltError(e.to_string()))?;
        let runner = gamelake_jobs::Runner::new(
            lake,
            gamelake_jobs::KpiConfig::default(),
            None,
            self.runs.clone(),
        );
        let r = runner
            .attempt(job, p, gamelake_jobs::Trigger::Manual, 1, &move || at)
            .await;
        match r.status {
            gamelake_jobs::RunStatus::Succeeded => Ok(()),
            _ => Err(SltError(r.error.unwrap_or_default())),
        }
    }
}

#[async_trait]
impl sqllogictest::AsyncDB for Db {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let trimmed = sql.trim();
        if let Some(rest) = trimmed.strip_prefix("LOAD ") {
            self.load(rest.trim().trim_matches('\'')).await?;
            return Ok(DBOutput::StatementComplete(0));
        }
        if let Some(rest) = trimmed.strip_prefix("RUN JOB ") {
            self.run_job(rest).await?;
            return Ok(DBOutput::StatementComplete(0));
        }
        let (schema, batches) = self
            .engine
            .sql(sql)
            .await
            .map_err(|e| SltError(e.to_string()))?;
        let types = schema
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        let mut rows = Vec::new();
        let data_dir = self.data_dir.display().to_string();
        for b in &batches {
            let formatted = format_rows(b).map_err(|e| SltError(e.to_string()))?;
            for row in formatted {
                let row: Vec<String> = row
                    .into_iter()
                    .map(|cell| stable_paths(cell.trim_end(), data_dir.trim_start_matches('/')))
                    .collect();
                // A multi-line cell (a plan) becomes one result line per text line, as the
                // file shows it.
                let joined = row.join(" ");
                if joined.contains('\n') {
                    rows.extend(joined.lines().map(|l| vec![l.to_string()]));
                } else {
                    rows.push(row);
                }
            }
        }
        if schema.fields().is_empty() {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows { types, rows })
    }

    async fn shutdown(&mut self) {}
}

/// Plans name files by path; golden files must not depend on the temp dir or the random part
/// of file names: `<tmp>/data/silver/item/event_date=D/part-00000-<uuid>-c000.zstd.parquet`
/// becomes `<data>/silver/item/event_date=D/part-*.parquet`.
fn stable_paths(cell: &str, data_dir: &str) -> String {
    let text = cell.replace(data_dir, "<data>");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(start) = rest.find("part-") {
        out.push_str(&rest[..start + 5]);
        rest = &rest[start + 5..];
        match rest.find(".parquet") {
            Some(end) if !rest[..end].contains([' ', ',', ']']) => {
                out.push_str("*.parquet");
                rest = &rest[end + 8..];
            }
            _ => {}
        }
    }
    out.push_str(rest);
    out
}

fn column_type(dt: &gamelake_lake::arrow::datatypes::DataType) -> DefaultColumnType {
    use gamelake_lake::arrow::datatypes::DataType as D;
    match dt {
        D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32 | D::UInt64 => {
            DefaultColumnType::Integer
        }
        D::Float32 | D::Float64 | D::Decimal128(..) => DefaultColumnType::FloatingPoint,
        D::Utf8 | D::LargeUtf8 | D::Utf8View => DefaultColumnType::Text,
        _ => DefaultColumnType::Any,
    }
}

fn format_rows(
    batch: &RecordBatch,
) -> Result<Vec<Vec<String>>, gamelake_lake::arrow::error::ArrowError> {
    let options = FormatOptions::default().with_null("NULL");
    let formatters: Vec<ArrayFormatter> = batch
        .columns()
        .iter()
        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
        .collect::<Result<_, _>>()?;
    Ok((0..batch.num_rows())
        .map(|row| {
            formatters
                .iter()
                .map(|f| {
                    let s = f.value(row).to_string();
                    if s.is_empty() {
                        "(empty)".to_string()
                    } else {
                        s
                    }
                })
                .collect()
        })
        .collect())
}

async fn run_file(path: &Path, complete: bool) -> Result<(), String> {
    let fixtures = path.parent().unwrap().to_path_buf();
    let scratch = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data_dir = scratch.path().join("data");
    let metrics = Arc::new(gamelake::metrics::Metrics::default());
    let runs =
        gamelake_jobs::RunLog::open(&scratch.path().join("_jobs")).map_err(|e| e.to_string())?;
    let make = {
        let data_dir = data_dir.clone();
        move || {
            let data_dir = data_dir.clone();
            let fixtures = fixtures.clone();
            let metrics = metrics.clone();
            let runs = runs.clone();
            async move {
                let lake = Lake::open(&data_dir.display().to_string())
                    .map_err(|e| SltError(e.to_string()))?;
                let engine = QueryEngine::new(lake.clone());
                // As `serve` does: the KPI views for ad-hoc SQL, and the system tables.
                engine.register_schema(
                    "kpi",
                    Arc::new(gamelake_jobs::KpiSchema::new(
                        lake.clone(),
                        Default::default(),
                    )),
                );
                engine.register_schema(
                    "system",
                    Arc::new(gamelake::system::SystemSchema {
                        lake,
                        metrics: metrics.clone(),
                        queries: Arc::default(),
                        runs: runs.clone(),
                    }),
                );
                Ok::<_, SltError>(Db {
                    data_dir,
                    fixtures,
                    engine,
                    metrics,
                    runs,
                })
            }
        }
    };
    let mut runner = sqllogictest::Runner::new(make);
    if complete {
        runner
            .update_test_file(
                path,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::default_column_validator,
            )
            .await
            .map_err(|e| e.to_string())
    } else {
        runner
            .run_file_async(path)
            .await
            .map_err(|e| e.display(true).to_string())
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The directory cargo and nextest name when they run the test, before the one compiled in:
    // a target directory shared by two checkouts reuses a binary built in the other one.
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let dir = root.join("tests/sql");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    let name = |p: &PathBuf| p.file_name().unwrap().to_string_lossy().into_owned();
    // libtest's listing protocol, so `cargo nextest` can run each file as a test.
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            for f in &files {
                println!("{}: test", name(f));
            }
        }
        return;
    }
    let complete = args.iter().any(|a| a == "--complete");
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    files.retain(|p| filters.is_empty() || filters.iter().any(|f| name(p).contains(f.as_str())));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (mut passed, mut failed) = (0, 0);
    for f in &files {
        match runtime.block_on(run_file(f, complete)) {
            Ok(()) => {
                passed += 1;
                println!("ok   {}", name(f));
            }
            Err(e) => {
                failed += 1;
                println!("FAIL {}\n{e}", name(f));
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 || files.is_empty() {
        std::process::exit(1);
    }
}
