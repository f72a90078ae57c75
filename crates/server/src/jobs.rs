//! `gamelake jobs …` and `gamelake tables compact|vacuum`, and the scheduler `serve` runs.
//!
//! Exit codes (for Airflow's `BashOperator` and other drivers): 0 every build succeeded; 1 a
//! build failed (after the job's retries); 2 the command was wrong (unknown job, bad date,
//! bad configuration); 3 a job it depends on has not built the partition yet.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{NaiveDate, Utc};
use gamelake_jobs::maintenance::Task;
use gamelake_jobs::scheduler::{MaintenancePlan, Scheduler};
use gamelake_jobs::{
    JobSpec, Jobs, Maintenance, Partition, RunLog, RunRecord, RunStatus, Runner, Trigger,
};
use gamelake_lake::{Lake, TableId};

use crate::config::Config;

/// A command that failed with a specific exit code.
#[derive(Debug)]
pub struct Exit {
    pub code: i32,
    pub message: String,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Exit {}

pub(crate) fn exit(code: i32, message: impl Into<String>) -> anyhow::Error {
    Exit {
        code,
        message: message.into(),
    }
    .into()
}

/// Exit code of a failed build.
pub const EXIT_FAILED: i32 = 1;
/// Exit code of a wrong command.
pub const EXIT_USAGE: i32 = 2;
/// Exit code of a build whose upstream job has not built the partition.
pub const EXIT_UPSTREAM: i32 = 3;

/// Everything a jobs command needs.
pub struct Context {
    pub cfg: Config,
    pub lake: Lake,
    pub jobs: Jobs,
    pub runner: Runner,
}

impl Context {
    pub fn open(cfg: Config) -> anyhow::Result<Self> {
        let lake = Lake::open(&cfg.data_dir)?;
        let jobs = cfg
            .load_jobs()
            .map_err(|e| exit(EXIT_USAGE, format!("{e:#}")))?;
        let log = RunLog::open(&cfg.jobs_state_dir).map_err(|e| {
            exit(
                EXIT_USAGE,
                format!(
                    "opening the run log in `jobs.state_dir` = {}: {e}",
                    cfg.jobs_state_dir.display()
                ),
            )
        })?;
        let runner = Runner::new(
            lake.clone(),
            cfg.kpi.clone(),
            Some((cfg.query.memory_limit_mb as usize) << 20),
            log,
        );
        Ok(Self {
            cfg,
            lake,
            jobs,
            runner,
        })
    }

    fn maintenance(&self) -> Maintenance {
        Maintenance::new(
            self.lake.clone(),
            self.cfg.maintenance.clone(),
            self.runner.log().clone(),
        )
    }
}

/// The scheduler of `serve`.
pub fn scheduler(cfg: &Config, lake: Lake, jobs: Jobs, runs: RunLog) -> Scheduler {
    let runner = Runner::new(
        lake.clone(),
        cfg.kpi.clone(),
        Some((cfg.query.memory_limit_mb as usize) << 20),
        runs.clone(),
    );
    let maintenance = if cfg.maintenance.enabled {
        let (compact, vacuum) = cfg
            .maintenance
            .validate()
            .expect("the configuration was validated");
        Some(MaintenancePlan {
            maintenance: Maintenance::new(lake, cfg.maintenance.clone(), runs)
                .with_runtime(crate::serve::maintenance_runtime()),
            compact,
            vacuum,
            time_zone: cfg.parse.time_zone.parse().unwrap_or(chrono_tz::UTC),
        })
    } else {
        None
    };
    let settings = gamelake_jobs::Settings {
        catch_up: Duration::from_secs(cfg.jobs.catch_up_days as u64 * 86400),
        late_data_days: cfg.jobs.late_data_days,
        concurrency: cfg.jobs.concurrency,
    };
    Scheduler::new(
        jobs,
        runner,
        maintenance,
        Arc::new(gamelake_jobs::SystemClock),
        settings,
    )
}

/// `gamelake jobs list`.
pub fn list(ctx: &Context) -> anyhow::Result<()> {
    let runs = ctx.runner.log().runs();
    println!(
        "{:<16} {:<6} {:<22} {:<24} {:<34} SOURCE",
        "JOB", "EVERY", "SCHEDULE", "DEPENDS ON", "LAST RUN"
    );
    for job in ctx.jobs.all() {
        let last = runs
            .iter()
            .rev()
            .find(|r| r.job == job.name)
            .map(|r| {
                format!(
                    "{} {} {}",
                    r.partition,
                    r.status.as_str(),
                    r.started.format("%m-%d %H:%M")
                )
            })
            .unwrap_or_else(|| "never".into());
        let deps: Vec<String> = job
            .depends_on
            .iter()
            .map(|d| match d {
                gamelake_jobs::spec::Dependency::Job(j) => j.clone(),
                gamelake_jobs::spec::Dependency::Table { schema, table } => {
                    format!("{schema}.{table}")
                }
            })
            .collect();
        println!(
            "{:<16} {:<6} {:<22} {:<24} {:<34} {}",
            job.name,
            job.granularity.as_str(),
            job.schedule
                .as_ref()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "manual".into()),
            deps.join(","),
            last,
            job.source
        );
    }
    Ok(())
}

/// The partitions `--date` names for a job: a day (every hour of it for hourly jobs) or one
/// hour (`2026-11-28T05`).
fn partitions_of(job: &JobSpec, date: &str) -> anyhow::Result<Vec<Partition>> {
    let p = Partition::parse(date).map_err(|e| exit(EXIT_USAGE, e))?;
    Ok(match (job.granularity, p.hour) {
        (gamelake_jobs::spec::Granularity::Day, None) => vec![p],
        (gamelake_jobs::spec::Granularity::Day, Some(_)) => {
            return Err(exit(
                EXIT_USAGE,
                format!(
                    "job `{}` builds days: give --date without an hour",
                    job.name
                ),
            ))
        }
        (gamelake_jobs::spec::Granularity::Hour, Some(_)) => vec![p],
        (gamelake_jobs::spec::Granularity::Hour, None) => job.partitions(p.date, p.date),
    })
}

/// Whether the run log holds a successful build of `p` by `job`.
fn built(runs: &[RunRecord], job: &str, p: Partition) -> bool {
    let p = p.to_string();
    runs.iter()
        .any(|r| r.job == job && r.partition == p && r.status == RunStatus::Succeeded)
}

/// The first job `job` depends on, among those `consider` accepts, that has not built `p`.
fn unbuilt_upstream<'a>(
    runs: &[RunRecord],
    job: &'a JobSpec,
    p: Partition,
    consider: impl Fn(&str) -> bool,
) -> Option<&'a str> {
    job.upstream_jobs()
        .find(|up| consider(up) && !built(runs, up, p))
}

/// Fails with [`EXIT_UPSTREAM`] when a job `job` depends on has not built `p`.
fn check_upstream(ctx: &Context, job: &JobSpec, p: Partition) -> anyhow::Result<()> {
    let runs = ctx.runner.log().runs();
    match unbuilt_upstream(&runs, job, p, |_| true) {
        Some(up) => Err(exit(
            EXIT_UPSTREAM,
            format!(
                "job `{}` depends on `{up}`, which has not built {p} yet: run `gamelake jobs run {up} --date {p}` first (or pass --ignore-dependencies)",
                job.name
            ),
        )),
        None => Ok(()),
    }
}

/// For a `depends_on_past` job, fails with [`EXIT_UPSTREAM`] when a day (an hour) before
/// `from` may hold source rows and was never built: the builds from `from` on would read it.
async fn check_past(runner: &Runner, job: &JobSpec, from: Partition) -> anyhow::Result<()> {
    if !job.depends_on_past {
        return Ok(());
    }
    let runs = runner.log().runs();
    let rows = runner.source_rows(job).await?;
    let missing: Vec<Partition> = rows
        .iter()
        .filter(|(d, _)| **d <= from.date)
        .flat_map(|(d, n)| n.partitions(*d, job.granularity))
        .filter(|p| *p < from && !built(&runs, &job.name, *p))
        .collect();
    if let (Some(first), Some(last)) = (missing.first(), missing.last()) {
        let unit = job.granularity.as_str();
        return Err(exit(
            EXIT_UPSTREAM,
            format!(
                "job `{}` reads its own earlier {unit}s (depends_on_past), and {} {unit}(s) with events before {from} are not built, {first} first: run `gamelake jobs backfill {} --from {} --to {}` first (or pass --ignore-dependencies)",
                job.name,
                missing.len(),
                job.name,
                first.date,
                last.date
            ),
        ));
    }
    Ok(())
}

fn describe(r: &RunRecord) -> String {
    let secs = r
        .ended
        .map(|e| (e - r.started).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(0.0);
    match r.status {
        RunStatus::Succeeded => format!(
            "{} {} succeeded: {} rows, version {}, {secs:.1}s",
            r.job,
            r.partition,
            r.rows.unwrap_or(0),
            r.version.unwrap_or(0)
        ),
        _ => format!(
            "{} {} {} after {} attempt(s): {}",
            r.job,
            r.partition,
            r.status.as_str(),
            r.attempt,
            r.error.as_deref().unwrap_or("")
        ),
    }
}

/// `gamelake jobs run NAME --date D`.
pub async fn run(
    ctx: &Context,
    name: &str,
    date: &str,
    ignore_dependencies: bool,
    retries: bool,
) -> anyhow::Result<()> {
    let job = ctx.jobs.find(name).map_err(|e| exit(EXIT_USAGE, e))?;
    let partitions = partitions_of(job, date)?;
    // Each silver table's log is read once, at one snapshot, for the checks and the builds.
    let runner = ctx.runner.frozen_for(&[job]).await?;
    let mut failed = 0;
    for p in partitions {
        if !ignore_dependencies {
            check_upstream(ctx, job, p)?;
            check_past(&runner, job, p).await?;
        }
        let r = runner.run(job, p, Trigger::Manual, Utc::now, retries).await;
        println!("{}", describe(&r));
        if r.status != RunStatus::Succeeded {
            failed += 1;
        }
    }
    if failed > 0 {
        return Err(exit(
            EXIT_FAILED,
            format!("{failed} build(s) of `{name}` failed"),
        ));
    }
    Ok(())
}

/// Draws `[#####.....] 12/30 label` on a terminal; prints plain lines otherwise.
struct Progress {
    total: usize,
    done: usize,
    tty: bool,
    started: Instant,
}

impl Progress {
    fn new(total: usize) -> Self {
        Self {
            total,
            done: 0,
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
        }
    }

    fn step(&mut self, line: &str) {
        self.done += 1;
        let mut err = std::io::stderr();
        if self.tty {
            let width = 30;
            let filled = width * self.done / self.total.max(1);
            let eta = self.started.elapsed().as_secs_f64() / self.done as f64
                * (self.total - self.done) as f64;
            let _ = write!(
                err,
                "\r\x1b[2K[{}{}] {}/{} eta {:.0}s  {line}",
                "#".repeat(filled),
                ".".repeat(width - filled),
                self.done,
                self.total,
                eta
            );
            if self.done == self.total {
                let _ = writeln!(err);
            }
        } else {
            let _ = writeln!(err, "[{}/{}] {line}", self.done, self.total);
        }
        let _ = err.flush();
    }
}

/// `gamelake jobs backfill NAME --from D --to D`: every partition, oldest first, and with
/// `--with-downstream` then the jobs that depend on it, each after its upstream. A job that
/// does not read its own table commits many partitions at once ([`Runner::run_batched`]).
pub async fn backfill(
    ctx: &Context,
    name: &str,
    from: &str,
    to: &str,
    with_downstream: bool,
) -> anyhow::Result<()> {
    let job = ctx.jobs.find(name).map_err(|e| exit(EXIT_USAGE, e))?;
    let day = |s: &str, flag: &str| {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
            exit(
                EXIT_USAGE,
                format!("{flag} `{s}` is not a date like 2026-11-28"),
            )
        })
    };
    let (from, to) = (day(from, "--from")?, day(to, "--to")?);
    if from > to {
        return Err(exit(
            EXIT_USAGE,
            format!("--from {from} is after --to {to}"),
        ));
    }
    let mut order: Vec<&JobSpec> = vec![job];
    if with_downstream {
        // Dependency order is the registry's order.
        let mut names = vec![job.name.clone()];
        for j in ctx.jobs.all() {
            if j.upstream_jobs().any(|u| names.iter().any(|n| n == u)) && !names.contains(&j.name) {
                names.push(j.name.clone());
                order.push(j);
            }
        }
    }
    // Job by job (each after its upstream jobs), each job's partitions oldest first.
    let parts = job.partitions(from, to);
    let plan: Vec<(&JobSpec, Partition)> = order
        .iter()
        .flat_map(|j| parts.iter().map(move |p| (*j, *p)))
        .collect();
    // Each silver table's log is read once, at one snapshot, for the checks and the builds.
    let runner = ctx.runner.frozen_for(&order).await?;
    // What the backfill reads and does not build itself must be built already.
    for j in &order {
        let first = j.partitions(from, from)[0];
        check_past(&runner, j, first).await?;
    }
    // Upstream jobs the backfill builds itself are built before their dependents.
    let runs = ctx.runner.log().runs();
    for (j, p) in &plan {
        let outside = |u: &str| order.iter().all(|o| o.name != u);
        if let Some(up) = unbuilt_upstream(&runs, j, *p, outside) {
            return Err(exit(
                EXIT_UPSTREAM,
                format!(
                    "job `{}` depends on `{up}`, which has not built {p} yet: backfill `{up}` first, or both at once with `gamelake jobs backfill {up} --from {from} --to {to} --with-downstream`",
                    j.name
                ),
            ));
        }
    }
    let mut progress = Progress::new(plan.len());
    let mut failed = Vec::new();
    for j in order {
        runner
            .run_batched(j, &parts, Trigger::Backfill, Utc::now, true, |r| {
                progress.step(&describe(r));
                if r.status != RunStatus::Succeeded {
                    failed.push(format!("{} {}", r.job, r.partition));
                }
            })
            .await;
    }
    if !failed.is_empty() {
        return Err(exit(
            EXIT_FAILED,
            format!("{} build(s) failed: {}", failed.len(), failed.join(", ")),
        ));
    }
    Ok(())
}

/// `gamelake jobs history [NAME]`.
pub fn history(ctx: &Context, name: Option<&str>, limit: usize, json: bool) -> anyhow::Result<()> {
    let runs: Vec<RunRecord> = ctx
        .runner
        .log()
        .runs()
        .into_iter()
        .filter(|r| name.is_none_or(|n| r.job == n))
        .collect();
    let shown = &runs[runs.len().saturating_sub(limit)..];
    if json {
        for r in shown {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    println!(
        "{:<20} {:<14} {:<14} {:<11} {:<8} {:>3} {:>9} {:>8}  ERROR / DETAIL",
        "STARTED", "JOB", "PARTITION", "TRIGGER", "STATUS", "TRY", "ROWS", "SECONDS"
    );
    for r in shown {
        let secs = r
            .ended
            .map(|e| format!("{:.1}", (e - r.started).num_milliseconds() as f64 / 1000.0))
            .unwrap_or_default();
        println!(
            "{:<20} {:<14} {:<14} {:<11} {:<8} {:>3} {:>9} {:>8}  {}",
            r.started.format("%Y-%m-%d %H:%M:%S"),
            r.job,
            r.partition,
            r.trigger.as_str(),
            r.status.as_str(),
            r.attempt,
            r.rows.map(|n| n.to_string()).unwrap_or_default(),
            secs,
            r.error.as_deref().or(r.detail.as_deref()).unwrap_or("")
        );
    }
    Ok(())
}

/// `gamelake jobs views`: the `kpi` views over the tables as they are now.
pub async fn views(ctx: &Context) -> anyhow::Result<()> {
    let tables = ctx.runner.silver_columns().await?;
    for (name, sql) in ctx.cfg.kpi.views(&tables) {
        println!("CREATE VIEW kpi.{name} AS\n{sql};\n");
    }
    Ok(())
}

/// `gamelake jobs sql NAME --date D`: the SQL a build runs (for reading, or for running the
/// same query elsewhere).
pub fn show_sql(ctx: &Context, name: &str, date: &str) -> anyhow::Result<()> {
    let job = ctx.jobs.find(name).map_err(|e| exit(EXIT_USAGE, e))?;
    let p = Partition::parse(date).map_err(|e| exit(EXIT_USAGE, e))?;
    let today = Utc::now().with_timezone(&job.time_zone).date_naive();
    let sql = job.sql_for(p, today).map_err(|e| exit(EXIT_USAGE, e))?;
    println!("{sql};");
    Ok(())
}

/// `gamelake tables compact|vacuum [NAME]`.
pub async fn maintain(
    ctx: &Context,
    task: Task,
    name: Option<&str>,
    retention: Option<Duration>,
) -> anyhow::Result<()> {
    let m = ctx.maintenance();
    let tables = match name {
        Some(n) => {
            let (schema, table) = n.split_once('.').ok_or_else(|| {
                exit(
                    EXIT_USAGE,
                    format!("`{n}` is not schema.table, e.g. silver.item"),
                )
            })?;
            let id = TableId::new(schema, table);
            if !ctx.lake.exists(&id).await? {
                return Err(exit(EXIT_USAGE, format!("table `{n}` does not exist")));
            }
            vec![id]
        }
        None => m.tables().await?,
    };
    let tasks: &[Task] = match task {
        Task::Compact => &[Task::Compact, Task::Checkpoint],
        _ => &[Task::Retention, Task::Vacuum],
    };
    let mut progress = Progress::new(tables.len() * tasks.len());
    let mut failed = 0;
    for id in &tables {
        for t in tasks {
            let r = m.run(*t, id, Utc::now(), retention).await;
            let line = match r.status {
                RunStatus::Succeeded => {
                    format!("{} {id}: {}", t.name(), r.detail.unwrap_or_default())
                }
                _ => {
                    failed += 1;
                    format!("{} {id} failed: {}", t.name(), r.error.unwrap_or_default())
                }
            };
            progress.step(&line);
        }
    }
    if failed > 0 {
        return Err(exit(
            EXIT_FAILED,
            format!("{failed} maintenance task(s) failed"),
        ));
    }
    Ok(())
}
