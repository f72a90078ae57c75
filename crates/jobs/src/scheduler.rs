//! The scheduler: which partitions of which jobs to build now.
//!
//! [`plan`] is a pure function of the jobs, the run log, the source row counts and the time, so
//! cron, dependencies, retries, catch-up and late data are tested without sleeping. The
//! [`Scheduler`] calls it on every tick of its [`Clock`] and runs what it returns, at most
//! `concurrency` at a time.
//!
//! A partition of a job is due when:
//! - **schedule / catch-up**: a cron time `t` within the catch-up window (default 3 days) builds
//!   it (the day or hour that ended before `t`, and its `rebuild_back` partitions) and no build
//!   of it started at or after `t` succeeded. After downtime the missed times are in the window,
//!   so they run at start.
//! - **late data**: it was built, and its source tables now hold more rows in its day than when
//!   that build started (rows arrived late). Only days within `late_data_days` are watched;
//!   compaction keeps row counts, so it never triggers a rebuild. For `silver.*` the source
//!   tables are the silver tables the job's SQL reads through the `kpi` views
//!   ([`crate::runner::Runner::silver_reads`]): late item events rebuild the item economy, not revenue.
//! - **upstream**: a job it depends on rebuilt the partition after it was built.
//!
//! A due partition waits while a run of it is going on, while a job it depends on has not built
//! it or is due itself, and while its retry backoff (doubling from `retry_backoff`) runs; after
//! `retries` failed attempts it is left failed until its next trigger.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use crate::cron::Cron;
use crate::maintenance::{Maintenance, Task};
use crate::registry::Jobs;
use crate::runner::{DayRows, Runner};
use crate::runs::{RunRecord, RunStatus, Trigger};
use crate::spec::{Granularity, JobSpec, Partition};

/// Settings of the scheduler.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How far back missed cron times are caught up.
    pub catch_up: Duration,
    /// Days back (before today) whose built partitions are watched for late rows.
    pub late_data_days: u32,
    /// Builds at a time.
    pub concurrency: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            catch_up: Duration::from_secs(3 * 86400),
            late_data_days: 7,
            concurrency: 2,
        }
    }
}

/// A build to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub job: String,
    pub partition: Partition,
    pub trigger: Trigger,
    pub attempt: u32,
}

/// Rows per day of each job's source tables now: job → day → rows (in all, and by hour).
pub type SourceRows = HashMap<String, BTreeMap<NaiveDate, DayRows>>;

/// What the run log says about one partition of one job.
#[derive(Default, Debug)]
struct History<'a> {
    last_success: Option<&'a RunRecord>,
    running: bool,
    /// Failed attempts, oldest first.
    failures: Vec<&'a RunRecord>,
}

/// The builds due at `now`, in dependency order.
pub fn plan(
    jobs: &Jobs,
    runs: &[RunRecord],
    rows: &SourceRows,
    now: DateTime<Utc>,
    settings: &Settings,
) -> Vec<Due> {
    let mut history: HashMap<(&str, &str), History> = HashMap::new();
    for r in runs {
        let h = history.entry((&r.job, &r.partition)).or_default();
        match r.status {
            RunStatus::Running => h.running = true,
            RunStatus::Succeeded => {
                if h.last_success.is_none_or(|s| s.started <= r.started) {
                    h.last_success = Some(r);
                }
            }
            _ => h.failures.push(r),
        }
    }
    let catch_up =
        chrono::Duration::from_std(settings.catch_up).unwrap_or(chrono::Duration::days(3));
    let mut out: Vec<Due> = Vec::new();
    // Partitions wanted and not given up on (due now, running, waiting for a retry, an
    // upstream or an earlier day): the jobs after them in dependency order wait for them.
    let mut pending: HashSet<(&str, Partition)> = HashSet::new();
    for job in jobs.all() {
        // partition → (trigger, the instant since which it is wanted)
        let mut wanted: BTreeMap<Partition, (Trigger, DateTime<Utc>)> = BTreeMap::new();
        let key = |p: &Partition| p.to_string();
        if let Some(cron) = &job.schedule {
            for fire in cron.fires_between(now - catch_up, now, job.time_zone, 10_000) {
                for p in job.with_rebuilds(job.partition_for_fire(fire)) {
                    let k = key(&p);
                    let built = history
                        .get(&(job.name.as_str(), k.as_str()))
                        .and_then(|h| h.last_success)
                        .is_some_and(|s| s.started >= fire);
                    if !built {
                        wanted.entry(p).or_insert((Trigger::Schedule, fire));
                    }
                }
            }
        }
        late_data(job, &history, rows, now, settings, &mut wanted);
        for upstream in job.upstream_jobs() {
            for ((name, part), h) in history.iter() {
                if *name != upstream {
                    continue;
                }
                let (Some(up), Ok(p)) = (h.last_success, Partition::parse(part)) else {
                    continue;
                };
                let mine = history
                    .get(&(job.name.as_str(), *part))
                    .and_then(|h| h.last_success);
                if let (Some(mine), Some(up_end)) = (mine, up.ended) {
                    if up_end > mine.started {
                        wanted.entry(p).or_insert((Trigger::Upstream, up_end));
                    }
                }
            }
        }
        if job.depends_on_past {
            past(job, &history, rows, &mut wanted);
        }
        // For `depends_on_past`: the earliest partition wanted, and the earliest being built.
        let first_wanted = wanted.keys().next().copied();
        let first_running = history
            .iter()
            .filter(|((name, _), h)| *name == job.name && h.running)
            .filter_map(|((_, part), _)| Partition::parse(part).ok())
            .min();
        for (p, (trigger, since)) in wanted {
            let k = key(&p);
            let h = history.get(&(job.name.as_str(), k.as_str()));
            let failures: Vec<&RunRecord> = h
                .map(|h| {
                    h.failures
                        .iter()
                        .copied()
                        .filter(|f| f.started >= since)
                        .collect()
                })
                .unwrap_or_default();
            if failures.len() as u32 > job.retries {
                continue;
            }
            pending.insert((job.name.as_str(), p));
            if h.is_some_and(|h| h.running) {
                continue;
            }
            if job.depends_on_past
                && (first_wanted.is_some_and(|q| q < p) || first_running.is_some_and(|q| q < p))
            {
                continue;
            }
            let mut attempt = 1;
            let mut trigger = trigger;
            if let Some(last) = failures.last() {
                let tried = failures.len() as u32;
                let backoff = job.retry_backoff * 2u32.saturating_pow(tried - 1);
                let ready_at = last.ended.unwrap_or(last.started)
                    + chrono::Duration::from_std(backoff).unwrap_or_default();
                if now < ready_at {
                    continue;
                }
                attempt = tried + 1;
                trigger = Trigger::Retry;
            }
            let blocked = job.upstream_jobs().any(|up| {
                let up_built = history
                    .get(&(up, k.as_str()))
                    .is_some_and(|h| h.last_success.is_some() && !h.running);
                let up_due = pending.contains(&(up, p));
                !up_built || up_due
            });
            if blocked {
                continue;
            }
            out.push(Due {
                job: job.name.clone(),
                partition: p,
                trigger,
                attempt,
            });
        }
    }
    out
}

/// The partitions a `depends_on_past` job must build besides the ones already wanted: each
/// built partition that started before an earlier one's latest build ended (it read an
/// outdated earlier partition), and, before the last partition wanted or built, each partition
/// that may hold source rows and was never built.
fn past(
    job: &JobSpec,
    history: &HashMap<(&str, &str), History>,
    rows: &SourceRows,
    wanted: &mut BTreeMap<Partition, (Trigger, DateTime<Utc>)>,
) {
    let built: BTreeMap<Partition, &RunRecord> = history
        .iter()
        .filter(|((name, _), _)| *name == job.name)
        .filter_map(|((_, part), h)| Some((Partition::parse(part).ok()?, h.last_success?)))
        .collect();
    let mut earlier_end: Option<DateTime<Utc>> = None;
    for (p, run) in &built {
        if let Some(end) = earlier_end.filter(|end| *end > run.started) {
            wanted.entry(*p).or_insert((Trigger::Past, end));
        }
        earlier_end = earlier_end.max(run.ended);
    }
    // Before the last partition wanted or built: a partition whose first rows arrive after a
    // later one was built is wanted too, and then the later ones (they read without it).
    let last_built = built.keys().next_back().copied();
    let Some(last) = wanted.keys().next_back().copied().max(last_built) else {
        return;
    };
    for (day, n) in rows.get(&job.name).into_iter().flatten() {
        for p in n.partitions(*day, job.granularity) {
            if p < last && !built.contains_key(&p) {
                // Failures count from the beginning: a partition that keeps failing holds the
                // later ones.
                wanted
                    .entry(p)
                    .or_insert((Trigger::Past, DateTime::<Utc>::MIN_UTC));
            }
        }
    }
}

/// Built partitions whose source days gained rows since their build. An hourly partition is
/// rebuilt only when the files that may hold its hour gained rows too, so a late event rebuilds
/// its hour, not its whole day; this also watches today's hours that were already built.
fn late_data(
    job: &JobSpec,
    history: &HashMap<(&str, &str), History>,
    rows: &SourceRows,
    now: DateTime<Utc>,
    settings: &Settings,
    wanted: &mut BTreeMap<Partition, (Trigger, DateTime<Utc>)>,
) {
    let Some(by_day) = rows.get(&job.name) else {
        return;
    };
    let today = now.with_timezone(&job.time_zone).date_naive();
    let oldest = today - chrono::Duration::days(settings.late_data_days as i64);
    for ((name, part), h) in history {
        if *name != job.name {
            continue;
        }
        let (Some(success), Ok(p)) = (h.last_success, Partition::parse(part)) else {
            continue;
        };
        if p.date < oldest {
            continue;
        }
        let Some(before) = success.input_rows else {
            continue;
        };
        let now_rows = by_day.get(&p.date).cloned().unwrap_or_default();
        let hour_grew = match (job.granularity, p.hour, success.input_hour_rows) {
            (Granularity::Hour, Some(h), Some(before_hour)) => {
                now_rows.hours[usize::from(h) % 24] > before_hour
            }
            // Built before hours were counted: today's hours grow all day, so only past days
            // are watched, a whole day at a time.
            (Granularity::Hour, _, _) => p.date < today,
            (Granularity::Day, _, _) => true,
        };
        if now_rows.total > before && hour_grew {
            for q in job.with_rebuilds(p) {
                wanted
                    .entry(q)
                    .or_insert((Trigger::LateData, success.started));
            }
        }
    }
}

/// Where the scheduler gets the time; tests drive it by hand.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock set by hand.
#[derive(Clone)]
pub struct ManualClock(Arc<std::sync::Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Arc::new(std::sync::Mutex::new(at)))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().expect("clock lock") = at;
    }

    pub fn advance(&self, by: Duration) {
        let mut t = self.0.lock().expect("clock lock");
        *t += chrono::Duration::from_std(by).expect("small duration");
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock lock")
    }
}

/// Runs the jobs and the maintenance of a lake on a clock.
pub struct Scheduler {
    jobs: Jobs,
    runner: Runner,
    maintenance: Option<MaintenancePlan>,
    clock: Arc<dyn Clock>,
    settings: Settings,
    in_flight: Arc<Mutex<HashSet<(String, String)>>>,
    permits: Arc<Semaphore>,
    /// Woken when a run ends, so the next due build starts without waiting for the next tick.
    wake: Arc<tokio::sync::Notify>,
}

/// Maintenance with its two schedules, in the game's time zone.
pub struct MaintenancePlan {
    pub maintenance: Maintenance,
    pub compact: Cron,
    pub vacuum: Cron,
    pub time_zone: Tz,
}

impl Scheduler {
    pub fn new(
        jobs: Jobs,
        runner: Runner,
        maintenance: Option<MaintenancePlan>,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Self {
        let permits = Arc::new(Semaphore::new(settings.concurrency.max(1)));
        Self {
            jobs,
            runner,
            maintenance,
            clock,
            settings,
            in_flight: Arc::default(),
            permits,
            wake: Arc::default(),
        }
    }

    fn is_running(&self, key: &(String, String)) -> bool {
        self.in_flight.lock().expect("in-flight lock").contains(key)
    }

    /// Starts `run` under `keys` if a slot is free (`None`: none is). When it ends, the keys and
    /// the slot are freed and the loop is woken to start what is due next.
    fn launch(
        &self,
        keys: Vec<(String, String)>,
        run: impl std::future::Future<Output = Vec<RunRecord>> + Send + 'static,
    ) -> Option<JoinHandle<Vec<RunRecord>>> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        self.in_flight
            .lock()
            .expect("in-flight lock")
            .extend(keys.iter().cloned());
        let (in_flight, wake) = (self.in_flight.clone(), self.wake.clone());
        Some(tokio::spawn(async move {
            let records = run.await;
            let mut running = in_flight.lock().expect("in-flight lock");
            for key in &keys {
                running.remove(key);
            }
            drop(running);
            drop(permit);
            wake.notify_one();
            records
        }))
    }

    /// One pass: plans, and starts what is due while slots are free. Returns the started runs.
    pub async fn tick(&self) -> anyhow::Result<Vec<JoinHandle<Vec<RunRecord>>>> {
        let now = self.clock.now();
        let runs = self.runner.log().runs();
        let mut rows = SourceRows::new();
        // Each silver table is read once for every job's rows and the tables each job reads,
        // and the builds this pass starts read the same snapshots.
        let counter = self.runner.pinned_silver();
        for job in self.jobs.all() {
            rows.insert(job.name.clone(), counter.source_rows(job).await?);
        }
        let mut started = Vec::new();
        // First attempts of a job that does not read its own table, for one trigger, are built
        // together (one commit for many partitions: a catch-up after downtime, late rows in
        // many hours); the others one by one.
        let mut batches: Vec<(JobSpec, Trigger, Vec<Partition>)> = Vec::new();
        for due in plan(&self.jobs, &runs, &rows, now, &self.settings) {
            let key = (due.job.clone(), due.partition.to_string());
            if self.is_running(&key) {
                continue;
            }
            let job = self.jobs.get(&due.job).expect("planned jobs exist").clone();
            if due.attempt == 1 && !job.reads_itself() {
                match batches
                    .iter_mut()
                    .find(|(j, t, _)| j.name == job.name && *t == due.trigger)
                {
                    Some((_, _, parts)) => parts.push(due.partition),
                    None => batches.push((job, due.trigger, vec![due.partition])),
                }
                continue;
            }
            let (runner, clock) = (counter.clone(), self.clock.clone());
            let run = async move {
                let now = move || clock.now();
                let runner = runner.snapshot(&job).await;
                vec![
                    runner
                        .attempt(&job, due.partition, due.trigger, due.attempt, &now)
                        .await,
                ]
            };
            match self.launch(vec![key], run) {
                Some(handle) => started.push(handle),
                None => break,
            }
        }
        for (job, trigger, parts) in batches {
            let keys = parts
                .iter()
                .map(|p| (job.name.clone(), p.to_string()))
                .collect();
            let (runner, clock) = (counter.clone(), self.clock.clone());
            let run = async move {
                let now = move || clock.now();
                // One snapshot of the silver tables for the whole batch: the one this pass
                // counted the rows in.
                let runner = runner.snapshot(&job).await;
                let mut records = Vec::new();
                runner
                    .run_batched(&job, &parts, trigger, now, false, |r| {
                        records.push(r.clone())
                    })
                    .await;
                records
            };
            match self.launch(keys, run) {
                Some(handle) => started.push(handle),
                None => break,
            }
        }
        if let Some(m) = &self.maintenance {
            for (cron, tasks) in [
                (&m.compact, &[Task::Compact, Task::Checkpoint][..]),
                (&m.vacuum, &[Task::Retention, Task::Vacuum][..]),
            ] {
                let Some(fire) = cron
                    .fires_between(now - chrono::Duration::days(1), now, m.time_zone, 2000)
                    .pop()
                else {
                    continue;
                };
                let done = runs
                    .iter()
                    .any(|r| r.job == tasks[0].name() && r.started >= fire);
                let key = (tasks[0].name().to_string(), "*".to_string());
                if done || self.is_running(&key) {
                    continue;
                }
                let (maintenance, clock) = (m.maintenance.clone(), self.clock.clone());
                let tasks = tasks.to_vec();
                let run = async move {
                    let mut records = Vec::new();
                    match maintenance.tables().await {
                        Ok(tables) => {
                            for table in tables {
                                for task in &tasks {
                                    records.push(
                                        maintenance.run(*task, &table, clock.now(), None).await,
                                    );
                                }
                            }
                        }
                        Err(e) => tracing::error!(error = %e, "maintenance cannot list the tables"),
                    }
                    records
                };
                match self.launch(vec![key], run) {
                    Some(handle) => started.push(handle),
                    None => break,
                }
            }
        }
        Ok(started)
    }

    /// Ticks every `every`, and as soon as a run ends, until `shutdown` resolves; runs going on
    /// are left to finish (a run cut short by the process ending is marked interrupted at the
    /// next start).
    pub async fn run(self, every: Duration, shutdown: impl std::future::Future<Output = ()>) {
        if let Err(e) = self.runner.log().close_abandoned(self.clock.now()) {
            tracing::warn!(error = %e, "cannot update the run log");
        }
        tokio::pin!(shutdown);
        loop {
            if let Err(e) = self.tick().await {
                tracing::warn!(error = %e, "scheduler tick failed");
            }
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(every) => {}
                _ = self.wake.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::JobSpec;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn jobs(specs: &[(&str, &str)]) -> Jobs {
        Jobs::ordered(
            specs
                .iter()
                .map(|(name, text)| JobSpec::parse(name, name, text, chrono_tz::UTC).unwrap())
                .collect(),
        )
        .unwrap()
    }

    fn run(job: &str, p: &str, status: RunStatus, started: &str, ended: &str) -> RunRecord {
        let mut r = RunRecord::start(job, p, Trigger::Schedule, 1, utc(started));
        r.status = status;
        r.ended = Some(utc(ended));
        r.input_rows = Some(10);
        r
    }

    fn names(due: &[Due]) -> Vec<String> {
        due.iter()
            .map(|d| format!("{} {} {}", d.job, d.partition, d.trigger.as_str()))
            .collect()
    }

    const DAILY: &str = "-- schedule: 15 0 * * *\n-- retries: 2\n-- retry_backoff: 60s\nSELECT 1";

    #[test]
    fn cron_fires_build_the_day_before() {
        let j = jobs(&[("a", DAILY)]);
        let s = Settings {
            catch_up: Duration::from_secs(3600),
            ..Settings::default()
        };
        assert!(plan(&j, &[], &SourceRows::new(), utc("2026-11-28T00:14:00Z"), &s).is_empty());
        let due = plan(&j, &[], &SourceRows::new(), utc("2026-11-28T00:15:00Z"), &s);
        assert_eq!(names(&due), ["a 2026-11-27 schedule"]);
        // Built after the fire time: nothing more to do.
        let runs = [run(
            "a",
            "2026-11-27",
            RunStatus::Succeeded,
            "2026-11-28T00:15:01Z",
            "2026-11-28T00:15:05Z",
        )];
        assert!(plan(
            &j,
            &runs,
            &SourceRows::new(),
            utc("2026-11-28T00:20:00Z"),
            &s
        )
        .is_empty());
        // A run still going on is not started twice.
        let mut running = runs[0].clone();
        running.status = RunStatus::Running;
        assert!(plan(
            &j,
            &[running],
            &SourceRows::new(),
            utc("2026-11-28T00:20:00Z"),
            &s
        )
        .is_empty());
    }

    #[test]
    fn catch_up_after_downtime_within_the_window() {
        let j = jobs(&[("a", DAILY)]);
        let s = Settings::default(); // 3 days
                                     // Down since the 24th: the fires of the 26th, 27th and 28th are caught up.
        let runs = [run(
            "a",
            "2026-11-24",
            RunStatus::Succeeded,
            "2026-11-25T00:15:00Z",
            "2026-11-25T00:16:00Z",
        )];
        let due = plan(
            &j,
            &runs,
            &SourceRows::new(),
            utc("2026-11-28T09:00:00Z"),
            &s,
        );
        assert_eq!(
            names(&due),
            [
                "a 2026-11-25 schedule",
                "a 2026-11-26 schedule",
                "a 2026-11-27 schedule"
            ]
        );
    }

    #[test]
    fn retries_back_off_then_give_up() {
        let j = jobs(&[("a", DAILY)]);
        let s = Settings {
            catch_up: Duration::from_secs(3600),
            ..Settings::default()
        };
        let rows = SourceRows::new();
        let f1 = run(
            "a",
            "2026-11-27",
            RunStatus::Failed,
            "2026-11-28T00:15:00Z",
            "2026-11-28T00:15:10Z",
        );
        // Backoff 60 s after the first failure.
        assert!(plan(
            &j,
            std::slice::from_ref(&f1),
            &rows,
            utc("2026-11-28T00:16:00Z"),
            &s
        )
        .is_empty());
        let due = plan(
            &j,
            std::slice::from_ref(&f1),
            &rows,
            utc("2026-11-28T00:16:10Z"),
            &s,
        );
        assert_eq!(names(&due), ["a 2026-11-27 retry"]);
        assert_eq!(due[0].attempt, 2);
        // Then 120 s after the second.
        let f2 = run(
            "a",
            "2026-11-27",
            RunStatus::TimedOut,
            "2026-11-28T00:16:10Z",
            "2026-11-28T00:17:00Z",
        );
        assert!(plan(
            &j,
            &[f1.clone(), f2.clone()],
            &rows,
            utc("2026-11-28T00:18:59Z"),
            &s
        )
        .is_empty());
        assert_eq!(
            plan(
                &j,
                &[f1.clone(), f2.clone()],
                &rows,
                utc("2026-11-28T00:19:00Z"),
                &s
            )[0]
            .attempt,
            3
        );
        // Three failures with `retries: 2`: given up until the next trigger.
        let f3 = run(
            "a",
            "2026-11-27",
            RunStatus::Failed,
            "2026-11-28T00:19:00Z",
            "2026-11-28T00:19:01Z",
        );
        let all = [f1, f2, f3];
        assert!(plan(&j, &all, &rows, utc("2026-11-28T00:59:00Z"), &s).is_empty());
        // The next day's fire builds its own partition.
        let due = plan(&j, &all, &rows, utc("2026-11-29T00:15:00Z"), &s);
        assert_eq!(names(&due), ["a 2026-11-28 schedule"]);
    }

    #[test]
    fn dependencies_wait_and_follow_rebuilds() {
        let j = jobs(&[("b", "-- depends_on: a\nSELECT 1"), ("a", "SELECT 1")]);
        let s = Settings {
            catch_up: Duration::from_secs(3600),
            ..Settings::default()
        };
        let rows = SourceRows::new();
        let at = utc("2026-11-28T00:15:00Z");
        // `a` first; `b` waits for it.
        assert_eq!(
            names(&plan(&j, &[], &rows, at, &s)),
            ["a 2026-11-27 schedule"]
        );
        let a = run(
            "a",
            "2026-11-27",
            RunStatus::Succeeded,
            "2026-11-28T00:15:00Z",
            "2026-11-28T00:15:30Z",
        );
        assert_eq!(
            names(&plan(
                &j,
                std::slice::from_ref(&a),
                &rows,
                utc("2026-11-28T00:16:00Z"),
                &s
            )),
            ["b 2026-11-27 schedule"]
        );
        let b = run(
            "b",
            "2026-11-27",
            RunStatus::Succeeded,
            "2026-11-28T00:16:00Z",
            "2026-11-28T00:16:10Z",
        );
        assert!(plan(
            &j,
            &[a.clone(), b.clone()],
            &rows,
            utc("2026-11-28T00:17:00Z"),
            &s
        )
        .is_empty());
        // `a` rebuilt (by hand, say): `b` follows.
        let a2 = run(
            "a",
            "2026-11-27",
            RunStatus::Succeeded,
            "2026-11-28T03:00:00Z",
            "2026-11-28T03:00:30Z",
        );
        assert_eq!(
            names(&plan(
                &j,
                &[a, b, a2],
                &rows,
                utc("2026-11-28T03:01:00Z"),
                &s
            )),
            ["b 2026-11-27 upstream"]
        );
    }

    #[test]
    fn late_rows_rebuild_the_partition_and_its_rebuilds() {
        let j = jobs(&[("r", "-- rebuild_back: 1, 7\nSELECT 1")]);
        let s = Settings {
            catch_up: Duration::from_secs(3600),
            ..Settings::default()
        };
        let built = run(
            "r",
            "2026-11-26",
            RunStatus::Succeeded,
            "2026-11-27T00:15:00Z",
            "2026-11-27T00:16:00Z",
        );
        let at = utc("2026-11-28T05:00:00Z");
        let mut rows = SourceRows::new();
        let day = NaiveDate::from_ymd_opt(2026, 11, 26).unwrap();
        let total = |n| DayRows {
            total: n,
            hours: [n; 24],
        };
        rows.insert("r".into(), BTreeMap::from([(day, total(10))]));
        assert!(plan(&j, std::slice::from_ref(&built), &rows, at, &s).is_empty());
        rows.insert("r".into(), BTreeMap::from([(day, total(12))]));
        assert_eq!(
            names(&plan(&j, &[built], &rows, at, &s)),
            [
                "r 2026-11-19 late_data",
                "r 2026-11-25 late_data",
                "r 2026-11-26 late_data"
            ]
        );
    }

    /// An hourly job: late rows in one hour rebuild that hour only (also today), compaction
    /// (same total, files spanning more hours) rebuilds nothing.
    #[test]
    fn late_rows_rebuild_only_their_hour() {
        let j = jobs(&[("h", "-- granularity: hour\nSELECT 1")]);
        let s = Settings {
            catch_up: Duration::from_secs(60),
            ..Settings::default()
        };
        let day = NaiveDate::from_ymd_opt(2026, 11, 28).unwrap();
        let mut hours = [0u64; 24];
        hours[3] = 4;
        hours[4] = 6;
        let built: Vec<RunRecord> = [(3u8, 4u64), (4, 6)]
            .iter()
            .map(|(h, n)| {
                let mut r = run(
                    "h",
                    &format!("2026-11-28T{h:02}"),
                    RunStatus::Succeeded,
                    "2026-11-28T05:15:00Z",
                    "2026-11-28T05:16:00Z",
                );
                r.input_hour_rows = Some(*n);
                r
            })
            .collect();
        // Today, later in the day: the day keeps growing in other hours; nothing to rebuild.
        let at = utc("2026-11-28T09:00:00Z");
        let mut rows = SourceRows::new();
        let mut now = DayRows {
            total: 10 + 500,
            hours,
        };
        now.hours[8] = 500;
        rows.insert("h".into(), BTreeMap::from([(day, now.clone())]));
        assert!(plan(&j, &built, &rows, at, &s).is_empty());
        // Two late rows of 03:xx: hour 3 only.
        now.total += 2;
        now.hours[3] += 2;
        rows.insert("h".into(), BTreeMap::from([(day, now.clone())]));
        assert_eq!(
            names(&plan(&j, &built, &rows, at, &s)),
            ["h 2026-11-28T03 late_data"]
        );
        // Compaction of hours 3 and 4 into one file: both hours count the file, the total
        // does not change, nothing is rebuilt.
        let compacted = DayRows {
            total: 10,
            hours: {
                let mut h = [0u64; 24];
                h[3] = 10;
                h[4] = 10;
                h
            },
        };
        rows.insert("h".into(), BTreeMap::from([(day, compacted)]));
        assert!(plan(&j, &built, &rows, at, &s).is_empty());
    }

    #[test]
    fn manual_clock_moves() {
        let c = ManualClock::new(utc("2026-11-28T00:00:00Z"));
        c.advance(Duration::from_secs(90));
        assert_eq!(c.now(), utc("2026-11-28T00:01:30Z"));
    }
}
