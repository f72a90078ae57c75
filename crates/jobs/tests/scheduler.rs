//! The scheduler over a real lake with a hand-driven clock: cron and catch-up, dependencies,
//! late data, retries with backoff. No test sleeps: every tick's builds are awaited.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use gamelake_jobs::scheduler::Scheduler;
use gamelake_jobs::{
    Jobs, KpiConfig, ManualClock, Partition, RunLog, RunRecord, RunStatus, Runner, Settings,
    Trigger,
};
use gamelake_lake::arrow::array::{
    ArrayRef, Date32Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use gamelake_lake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use gamelake_lake::{DeltaSink, Lake, QueryEngine, TableId, TableSink};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Logins of `accounts` at `at` (UTC) on game day `day`, committed as WAL offset `offset`.
async fn logins(sink: &mut DeltaSink, accounts: &[i64], at: &str, day: &str, offset: u64) {
    events(sink, "login", accounts, None, at, day, offset).await;
}

/// Events of `code` by `accounts` (paying `price_krw` when given) at `at` (UTC) on game day
/// `day`, committed as WAL offset `offset`.
async fn events(
    sink: &mut DeltaSink,
    code: &str,
    accounts: &[i64],
    price_krw: Option<i64>,
    at: &str,
    day: &str,
    offset: u64,
) {
    let mut fields = vec![
        Field::new("code", DataType::Utf8, false),
        Field::new("account_id", DataType::Int64, true),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
        Field::new("event_date", DataType::Date32, false),
    ];
    let n = accounts.len();
    let days = (NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap()
        - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
    .num_days() as i32;
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![code; n])),
        Arc::new(Int64Array::from(accounts.to_vec())),
        Arc::new(
            TimestampMicrosecondArray::from(vec![utc(at).timestamp_micros(); n])
                .with_timezone("UTC"),
        ),
        Arc::new(Date32Array::from(vec![days; n])),
    ];
    if let Some(price) = price_krw {
        fields.push(Field::new("price_krw", DataType::Int64, true));
        columns.push(Arc::new(Int64Array::from(vec![price; n])));
    }
    let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap();
    sink.append(vec![batch], offset).await.unwrap();
}

/// The shipped jobs and those of `dir` (Seoul time), only the ones named.
fn kept(dir: Option<&std::path::Path>, names: &[&str]) -> Jobs {
    let all = Jobs::load(dir, true, &[], chrono_tz::Asia::Seoul).unwrap();
    let jobs = all
        .all()
        .iter()
        .filter(|j| names.contains(&j.name.as_str()));
    Jobs::ordered(jobs.cloned().collect()).unwrap()
}

/// A lake in a temp dir with `sql_files` (name, text) in its jobs folder; the shipped and
/// written jobs named in `names`; a run log, a runner, and a sink into `silver.login`.
struct Fixture {
    _dir: tempfile::TempDir,
    lake: Lake,
    jobs: Jobs,
    log: RunLog,
    runner: Runner,
    sink: DeltaSink,
}

async fn fixture(sql_files: &[(&str, &str)], names: &[&str]) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().join("lake").display().to_string()).unwrap();
    let jobs_dir = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs_dir).unwrap();
    for (name, text) in sql_files {
        std::fs::write(jobs_dir.join(format!("{name}.sql")), text).unwrap();
    }
    let jobs = kept(Some(&jobs_dir), names);
    let log = RunLog::open(&dir.path().join("_jobs")).unwrap();
    let runner = Runner::new(lake.clone(), KpiConfig::default(), None, log.clone());
    let sink = DeltaSink::open(&lake, TableId::new("silver", "login"), "event_date")
        .await
        .unwrap();
    Fixture {
        _dir: dir,
        lake,
        jobs,
        log,
        runner,
        sink,
    }
}

async fn tick(s: &Scheduler) -> Vec<RunRecord> {
    let mut out = Vec::new();
    for h in s.tick().await.unwrap() {
        out.extend(h.await.unwrap());
    }
    out
}

/// `n` ticks half a minute apart: what they ran, in order.
async fn ticks(s: &Scheduler, clock: &ManualClock, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.extend(summary(&tick(s).await));
        clock.advance(Duration::from_secs(30));
    }
    out
}

fn summary(runs: &[RunRecord]) -> Vec<String> {
    let mut v: Vec<String> = runs
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {}",
                r.job,
                r.partition,
                r.trigger.as_str(),
                r.status.as_str()
            )
        })
        .collect();
    v.sort();
    v
}

async fn scalar(lake: &Lake, sql: &str) -> String {
    let (_, batches) = QueryEngine::new(lake.clone()).sql(sql).await.unwrap();
    let b = &batches[0];
    gamelake_lake::arrow::util::display::array_value_to_string(b.column(0), 0).unwrap()
}

#[tokio::test]
async fn cron_catch_up_dependencies_late_data_and_retries() {
    // A job that always fails, retried once after 60 s.
    let Fixture {
        _dir,
        lake,
        jobs,
        log,
        runner,
        mut sink,
    } = fixture(
        &[(
            "broken",
            "-- retries: 1\n-- retry_backoff: 60s\nSELECT :date AS event_date, no_such_column FROM silver.login",
        )],
        &["first_days", "dau", "revenue", "broken"],
    )
    .await;
    // Two accounts on 10-31, three on 11-01 (Seoul days).
    logins(&mut sink, &[1, 2], "2026-10-31T03:00:00Z", "2026-10-31", 1).await;
    logins(
        &mut sink,
        &[1, 2, 3],
        "2026-11-01T03:00:00Z",
        "2026-11-01",
        2,
    )
    .await;

    // The server was down; it starts at 00:20 on 11-02 in Seoul, after the 00:15 cron time.
    let clock = ManualClock::new(utc("2026-11-01T15:20:00Z"));
    let settings = Settings {
        catch_up: Duration::from_secs(2 * 86400),
        late_data_days: 7,
        concurrency: 8,
    };
    let s = Scheduler::new(jobs, runner, None, Arc::new(clock.clone()), settings);

    // Catch-up: the cron times within two days (00:15 on 11-01 and 11-02) build 10-31 and 11-01.
    // first_days builds one day at a time, oldest first (each reads the days before it); dau
    // waits for first_days, revenue for dau.
    let first = tick(&s).await;
    assert_eq!(
        summary(&first),
        [
            "broken 2026-10-31 schedule failed",
            "broken 2026-11-01 schedule failed",
            "first_days 2026-10-31 schedule succeeded",
        ]
    );

    // Half a minute later: the next day of first_days, and dau's first day; broken waits out
    // its 60 s backoff.
    clock.advance(Duration::from_secs(30));
    let second = tick(&s).await;
    assert_eq!(
        summary(&second),
        [
            "dau 2026-10-31 schedule succeeded",
            "first_days 2026-11-01 schedule succeeded",
        ]
    );
    // After the backoff, broken's second and last attempt; then it is left alone.
    clock.advance(Duration::from_secs(40));
    let third = tick(&s).await;
    let (broken, others): (Vec<RunRecord>, Vec<RunRecord>) =
        third.into_iter().partition(|r| r.job == "broken");
    assert_eq!(broken.len(), 2);
    assert!(broken
        .iter()
        .all(|r| r.attempt == 2 && r.trigger.as_str() == "retry" && r.status == RunStatus::Failed));
    assert!(
        broken[0]
            .error
            .as_deref()
            .unwrap()
            .contains("no_such_column"),
        "{:?}",
        broken[0].error
    );
    assert_eq!(
        summary(&others),
        [
            "dau 2026-11-01 schedule succeeded",
            "revenue 2026-10-31 schedule succeeded",
        ]
    );
    // DAU 3 on 11-01, of whom 1 (account 3) is new.
    assert_eq!(
        scalar(
            &lake,
            "SELECT dau || '/' || nru FROM gold.dau WHERE event_date = DATE '2026-11-01' AND dimension = 'total'"
        )
        .await,
        "3/1"
    );
    clock.advance(Duration::from_secs(600));
    assert_eq!(
        summary(&tick(&s).await),
        ["revenue 2026-11-01 schedule succeeded"]
    );
    clock.advance(Duration::from_secs(30));
    assert!(tick(&s).await.is_empty());

    // Late rows for 11-01: first_days, dau and revenue rebuild 11-01 in that order. The first
    // two read the logins (`kpi.activity`), so their trigger is late data; revenue reads no
    // login (`kpi.payments`), so it is rebuilt because dau was (upstream).
    logins(&mut sink, &[4], "2026-11-01T14:59:00Z", "2026-11-01", 3).await;
    clock.advance(Duration::from_secs(30));
    let late: Vec<String> = summary(&tick(&s).await)
        .into_iter()
        .filter(|l| !l.starts_with("broken"))
        .collect();
    assert_eq!(late, ["first_days 2026-11-01 late_data succeeded"]);
    clock.advance(Duration::from_secs(30));
    let late = summary(&tick(&s).await);
    assert_eq!(late, ["dau 2026-11-01 late_data succeeded"]);
    assert_eq!(
        scalar(
            &lake,
            "SELECT dau FROM gold.dau WHERE event_date = DATE '2026-11-01' AND dimension = 'total'"
        )
        .await,
        "4"
    );
    clock.advance(Duration::from_secs(30));
    let follow = summary(&tick(&s).await);
    assert_eq!(follow, ["revenue 2026-11-01 upstream succeeded"]);
    assert_eq!(
        scalar(
            &lake,
            "SELECT dau FROM gold.revenue WHERE event_date = DATE '2026-11-01'"
        )
        .await,
        "4"
    );

    // The next day's cron time builds 11-02 only.
    clock.set(utc("2026-11-02T15:15:00Z"));
    let next: Vec<String> = summary(&tick(&s).await)
        .into_iter()
        .filter(|l| !l.starts_with("broken"))
        .collect();
    assert_eq!(next, ["first_days 2026-11-02 schedule succeeded"]);
    clock.advance(Duration::from_secs(30));
    let next: Vec<String> = summary(&tick(&s).await)
        .into_iter()
        .filter(|l| !l.starts_with("broken"))
        .collect();
    assert_eq!(next, ["dau 2026-11-02 schedule succeeded"]);
    assert!(log.runs().iter().all(|r| r.status != RunStatus::Running));
}

/// A `depends_on_past` job (first_days): days never built before the wanted one are filled in,
/// oldest first, one per tick; late rows in an earlier day rebuild it and then the later days,
/// so an account whose first day moved earlier leaves the later day.
#[tokio::test]
async fn past_days_are_filled_in_order_and_rebuilt_after_an_earlier_day() {
    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().join("lake").display().to_string()).unwrap();
    let jobs = kept(None, &["first_days"]);
    let log = RunLog::open(&dir.path().join("_jobs")).unwrap();
    let runner = Runner::new(lake.clone(), KpiConfig::default(), None, log.clone());
    let mut sink = DeltaSink::open(&lake, TableId::new("silver", "login"), "event_date")
        .await
        .unwrap();
    logins(&mut sink, &[1], "2026-10-29T03:00:00Z", "2026-10-29", 1).await;
    logins(&mut sink, &[1, 2], "2026-10-30T03:00:00Z", "2026-10-30", 2).await;
    logins(&mut sink, &[2, 3], "2026-10-31T03:00:00Z", "2026-10-31", 3).await;
    // Started at 00:20 on 11-01 in Seoul with a catch-up of one day: the schedule wants 10-31;
    // 10-29 and 10-30 hold rows and were never built, so they come first.
    let clock = ManualClock::new(utc("2026-10-31T15:20:00Z"));
    let settings = Settings {
        catch_up: Duration::from_secs(86400),
        late_data_days: 7,
        concurrency: 8,
    };
    let s = Scheduler::new(jobs, runner, None, Arc::new(clock.clone()), settings);
    assert_eq!(
        ticks(&s, &clock, 4).await,
        [
            "first_days 2026-10-29 past succeeded",
            "first_days 2026-10-30 past succeeded",
            "first_days 2026-10-31 schedule succeeded",
        ]
    );
    let firsts = "SELECT string_agg(CAST(account AS VARCHAR) || '@' || CAST(first_date AS VARCHAR), ' ' ORDER BY account, first_date) FROM gold.first_days";
    assert_eq!(
        scalar(&lake, firsts).await,
        "1@2026-10-29 2@2026-10-30 3@2026-10-31"
    );

    // Account 3's late login on 10-30: 10-30 is rebuilt, then 10-31, which no longer holds it.
    logins(&mut sink, &[3], "2026-10-30T05:00:00Z", "2026-10-30", 4).await;
    assert_eq!(
        ticks(&s, &clock, 3).await,
        [
            "first_days 2026-10-30 late_data succeeded",
            "first_days 2026-10-31 past succeeded",
        ]
    );
    assert_eq!(
        scalar(&lake, firsts).await,
        "1@2026-10-29 2@2026-10-30 3@2026-10-30"
    );
}

/// An hourly `depends_on_past` job (each account's first hour): the hours with rows before the
/// scheduled one are built first, in order; late rows in an hour that was never built, before
/// the last built one, build it and then rebuild the later hours.
#[tokio::test]
async fn past_hours_are_filled_in_order_and_rebuilt_after_an_earlier_hour() {
    let Fixture {
        _dir,
        lake,
        jobs,
        runner,
        mut sink,
        ..
    } = fixture(
        &[(
            "first_hours",
            "-- granularity: hour\n-- depends_on: silver.login\n-- depends_on_past: true\n\
             -- target_columns: account BIGINT, event_date DATE, event_hour INT\n\
             SELECT DISTINCT l.account_id AS account, :date AS event_date, :hour AS event_hour\n\
             FROM silver.login l\n\
             WHERE l.event_time >= :start AND l.event_time < :end\n\
               AND l.account_id NOT IN (SELECT account FROM gold.first_hours\n\
                 WHERE event_date < :date OR (event_date = :date AND event_hour < :hour))",
        )],
        &["first_hours"],
    )
    .await;
    // Seoul hours 02, 05 and 09 of 11-01.
    logins(&mut sink, &[1], "2026-10-31T17:10:00Z", "2026-11-01", 1).await;
    logins(&mut sink, &[1, 2], "2026-10-31T20:10:00Z", "2026-11-01", 2).await;
    logins(&mut sink, &[2, 3], "2026-11-01T00:10:00Z", "2026-11-01", 3).await;
    // 10:20 in Seoul with a catch-up of half an hour: the schedule wants hour 09; 02 and 05
    // hold rows and were never built, so they come first.
    let clock = ManualClock::new(utc("2026-11-01T01:20:00Z"));
    let settings = Settings {
        catch_up: Duration::from_secs(1800),
        late_data_days: 7,
        concurrency: 8,
    };
    let s = Scheduler::new(jobs, runner, None, Arc::new(clock.clone()), settings);
    assert_eq!(
        ticks(&s, &clock, 4).await,
        [
            "first_hours 2026-11-01T02 past succeeded",
            "first_hours 2026-11-01T05 past succeeded",
            "first_hours 2026-11-01T09 schedule succeeded",
        ]
    );
    let firsts = "SELECT string_agg(CAST(account AS VARCHAR) || '@' || CAST(event_hour AS VARCHAR), ' ' ORDER BY account) FROM gold.first_hours";
    assert_eq!(scalar(&lake, firsts).await, "1@2 2@5 3@9");

    // Account 3's late login in hour 04, never built: 04 is built, then 05 and 09 again.
    logins(&mut sink, &[3], "2026-10-31T19:10:00Z", "2026-11-01", 4).await;
    assert_eq!(
        ticks(&s, &clock, 4).await,
        [
            "first_hours 2026-11-01T04 past succeeded",
            "first_hours 2026-11-01T05 past succeeded",
            "first_hours 2026-11-01T09 past succeeded",
        ]
    );
    assert_eq!(scalar(&lake, firsts).await, "1@2 2@5 3@4");
}

#[tokio::test]
async fn maintenance_runs_on_its_cron_and_compacts() {
    use gamelake_jobs::cron::Cron;
    use gamelake_jobs::scheduler::MaintenancePlan;
    use gamelake_jobs::{Maintenance, MaintenanceConfig};

    let dir = tempfile::tempdir().unwrap();
    let lake = Lake::open(&dir.path().join("lake").display().to_string()).unwrap();
    let mut sink = DeltaSink::open(&lake, TableId::new("silver", "login"), "event_date")
        .await
        .unwrap();
    for i in 0..6 {
        logins(
            &mut sink,
            &[i],
            "2026-11-01T03:00:00Z",
            "2026-11-01",
            i as u64 + 1,
        )
        .await;
    }
    let id = TableId::new("silver", "login");
    assert_eq!(lake.files(&id).await.unwrap().len(), 6);
    let count = "SELECT count(*) FROM silver.login";
    assert_eq!(scalar(&lake, count).await, "6");

    let log = RunLog::open(&dir.path().join("_jobs")).unwrap();
    let cfg = MaintenanceConfig {
        min_files: 2,
        ..MaintenanceConfig::default()
    };
    let plan = MaintenancePlan {
        maintenance: Maintenance::new(lake.clone(), cfg.clone(), log.clone()),
        compact: Cron::parse(&cfg.compact_schedule).unwrap(),
        vacuum: Cron::parse(&cfg.vacuum_schedule).unwrap(),
        time_zone: chrono_tz::UTC,
    };
    let clock = ManualClock::new(utc("2026-11-02T10:39:00Z"));
    let runner = Runner::new(lake.clone(), KpiConfig::default(), None, log.clone());
    let s = Scheduler::new(
        Jobs::default(),
        runner,
        Some(plan),
        Arc::new(clock.clone()),
        Settings::default(),
    );
    // At start, the last cron times of both (09:40 for compaction, 04:00 for vacuum) have not
    // run: both run.
    let first = tick(&s).await;
    assert_eq!(
        summary(&first),
        [
            "checkpoint silver.login maintenance succeeded",
            "compact silver.login maintenance succeeded",
            "retention silver.login maintenance succeeded",
            "vacuum silver.login maintenance succeeded"
        ]
    );
    let compact = first.iter().find(|r| r.job == "compact").unwrap();
    assert!(
        compact
            .detail
            .as_deref()
            .unwrap()
            .starts_with("files 6 -> 1"),
        "{:?}",
        compact.detail
    );
    assert_eq!(lake.files(&id).await.unwrap().len(), 1);
    assert_eq!(scalar(&lake, count).await, "6");
    // Nothing until 10:40; then compaction again, with nothing left to do.
    assert!(tick(&s).await.is_empty());
    clock.set(utc("2026-11-02T10:40:30Z"));
    let again = tick(&s).await;
    assert_eq!(
        summary(&again),
        [
            "checkpoint silver.login maintenance succeeded",
            "compact silver.login maintenance succeeded"
        ]
    );
    assert!(
        again[0]
            .detail
            .as_deref()
            .unwrap()
            .contains("no partition has"),
        "{:?}",
        again[0].detail
    );
    // Done for this hour.
    clock.set(utc("2026-11-02T10:59:00Z"));
    assert!(tick(&s).await.is_empty());
}

#[tokio::test]
async fn a_batched_backfill_commits_many_hours_at_once_and_retries_a_failed_one_alone() {
    // An hourly count of logins whose 05:00 hour of 11-01 fails to plan (a cast of 'x').
    let Fixture {
        _dir,
        lake,
        jobs,
        log,
        runner,
        mut sink,
    } = fixture(
        &[(
            "hourly_logins",
            "-- granularity: hour\n-- retries: 1\n-- retry_backoff: 1ms\n-- depends_on: silver.login\n\
             SELECT :date AS event_date, :hour AS event_hour, count(*) AS logins,\n\
               CAST(CASE WHEN :date = DATE '2026-11-01' AND :hour = 5 THEN 'x' ELSE '0' END AS INT) AS boom\n\
             FROM silver.login WHERE event_time >= :start AND event_time < :end",
        )],
        &["hourly_logins", "first_days"],
    )
    .await;
    let job = jobs.find("hourly_logins").unwrap().clone();
    assert!(!job.reads_itself());
    assert!(jobs.find("first_days").unwrap().reads_itself());
    // Seoul hours 00, 05 and 10 of 11-01, 03 of 11-02.
    logins(&mut sink, &[1, 2], "2026-10-31T15:10:00Z", "2026-11-01", 1).await;
    logins(&mut sink, &[3], "2026-10-31T20:10:00Z", "2026-11-01", 2).await;
    logins(
        &mut sink,
        &[4, 5, 6],
        "2026-11-01T01:10:00Z",
        "2026-11-01",
        3,
    )
    .await;
    logins(&mut sink, &[7], "2026-11-01T18:10:00Z", "2026-11-02", 4).await;
    let day = |d: &str| NaiveDate::parse_from_str(d, "%Y-%m-%d").unwrap();
    let parts = job.partitions(day("2026-11-01"), day("2026-11-02"));
    assert_eq!(parts.len(), 48);
    let now = || utc("2026-11-05T00:00:00Z");

    let frozen = runner.frozen().await.unwrap();
    let mut done = Vec::new();
    frozen
        .run_batched(&job, &parts, Trigger::Backfill, now, true, |r| {
            done.push(r.clone())
        })
        .await;
    // Every partition once; the failing hour was tried in the batch, then once alone.
    assert_eq!(done.len(), 48);
    let failed: Vec<_> = done
        .iter()
        .filter(|r| r.status != RunStatus::Succeeded)
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(
        (failed[0].partition.as_str(), failed[0].attempt),
        ("2026-11-01T05", 2)
    );
    assert!(
        failed[0].error.as_deref().unwrap().contains("'x'"),
        "{failed:?}"
    );
    let first_tries: Vec<_> = log
        .runs()
        .into_iter()
        .filter(|r| r.partition == "2026-11-01T05")
        .map(|r| (r.attempt, r.status))
        .collect();
    assert_eq!(
        first_tries,
        [(1, RunStatus::Failed), (2, RunStatus::Failed)]
    );
    // The 47 others in one commit: the table's first version, shared by their runs.
    assert!(done
        .iter()
        .filter(|r| r.status == RunStatus::Succeeded)
        .all(|r| r.version == Some(0)));
    let target = TableId::new("gold", "hourly_logins");
    assert_eq!(
        lake.load(&target).await.unwrap().unwrap().version(),
        Some(0)
    );
    let hours = "SELECT count(*) FROM gold.hourly_logins";
    let counted = "SELECT CAST(event_date AS VARCHAR) || 'T' || CAST(event_hour AS VARCHAR) || '=' || CAST(logins AS VARCHAR) FROM gold.hourly_logins WHERE logins > 0 ORDER BY 1";
    assert_eq!(scalar(&lake, hours).await, "47");
    let listed = |lake: Lake| async move {
        let (_, batches) = QueryEngine::new(lake).sql(counted).await.unwrap();
        let mut out = Vec::new();
        for b in &batches {
            for i in 0..b.num_rows() {
                out.push(
                    gamelake_lake::arrow::util::display::array_value_to_string(b.column(0), i)
                        .unwrap(),
                );
            }
        }
        out
    };
    assert_eq!(
        listed(lake.clone()).await,
        ["2026-11-01T0=2", "2026-11-01T10=3", "2026-11-02T3=1"]
    );

    // A re-run replaces exactly what it builds: same rows, one more version.
    let mut again = 0;
    runner
        .frozen()
        .await
        .unwrap()
        .run_batched(&job, &parts, Trigger::Backfill, now, true, |_| again += 1)
        .await;
    assert_eq!(again, 48);
    assert_eq!(
        lake.load(&target).await.unwrap().unwrap().version(),
        Some(1)
    );
    assert_eq!(scalar(&lake, hours).await, "47");

    // A late login in 11-02 03:00; rebuilding that hour alone changes that row only.
    logins(&mut sink, &[8], "2026-11-01T18:20:00Z", "2026-11-02", 5).await;
    let late = [Partition::parse("2026-11-02T03").unwrap()];
    runner
        .frozen()
        .await
        .unwrap()
        .run_batched(&job, &late, Trigger::LateData, now, true, |r| {
            assert_eq!(r.status, RunStatus::Succeeded, "{r:?}")
        })
        .await;
    assert_eq!(scalar(&lake, hours).await, "47");
    assert_eq!(
        listed(lake.clone()).await,
        ["2026-11-01T0=2", "2026-11-01T10=3", "2026-11-02T3=2"]
    );
}

#[tokio::test]
async fn a_catch_up_of_many_hours_is_one_commit() {
    let Fixture {
        _dir,
        lake,
        jobs,
        runner,
        mut sink,
        ..
    } = fixture(
        &[(
            "hourly_logins",
            "-- granularity: hour\n-- depends_on: silver.login\n\
             SELECT :date AS event_date, :hour AS event_hour, count(*) AS logins\n\
             FROM silver.login WHERE event_time >= :start AND event_time < :end",
        )],
        &["hourly_logins"],
    )
    .await;
    logins(&mut sink, &[1, 2], "2026-10-31T15:10:00Z", "2026-11-01", 1).await;
    logins(&mut sink, &[3], "2026-11-01T01:10:00Z", "2026-11-01", 2).await;
    // Down all of 11-01 (Seoul); back at 00:20 on 11-02: every hour of the last day is due.
    let clock = ManualClock::new(utc("2026-11-01T15:20:00Z"));
    let settings = Settings {
        catch_up: Duration::from_secs(86400),
        late_data_days: 7,
        concurrency: 2,
    };
    let s = Scheduler::new(jobs, runner, None, Arc::new(clock.clone()), settings);
    let runs = tick(&s).await;
    assert_eq!(runs.len(), 24, "{:?}", summary(&runs));
    assert!(runs
        .iter()
        .all(|r| r.status == RunStatus::Succeeded && r.trigger.as_str() == "schedule"));
    // One commit for the 24 hours.
    assert!(runs.iter().all(|r| r.version == Some(0)), "{runs:?}");
    let target = TableId::new("gold", "hourly_logins");
    assert_eq!(
        lake.load(&target).await.unwrap().unwrap().version(),
        Some(0)
    );
    assert_eq!(
        scalar(
            &lake,
            "SELECT sum(logins) || '/' || count(*) FROM gold.hourly_logins"
        )
        .await,
        "3/24"
    );
    // Nothing more is due.
    clock.advance(Duration::from_secs(30));
    assert!(tick(&s).await.is_empty());
}

/// `silver.*` watches the silver tables a job reads through the `kpi` views: a late payment
/// rebuilds the job that counts payments and not the one that counts logins, and the other way
/// round; a job reading a table by name watches that table.
#[tokio::test]
async fn late_rows_rebuild_only_the_jobs_that_read_their_table() {
    let Fixture {
        _dir,
        lake,
        jobs,
        runner,
        mut sink,
        ..
    } = fixture(
        &[
            (
                "pays",
                "-- depends_on: silver.*\n\
                 SELECT :date AS event_date, count(*) AS n FROM kpi.payments WHERE event_date = :date",
            ),
            (
                "sessions",
                "-- depends_on: silver.*\n\
                 SELECT :date AS event_date, count(*) AS n FROM kpi.sessions WHERE event_date = :date",
            ),
            (
                "by_name",
                "-- depends_on: silver.*\n\
                 SELECT :date AS event_date, count(*) AS n FROM silver.payment WHERE event_date = :date",
            ),
        ],
        &["pays", "sessions", "by_name"],
    )
    .await;
    let mut pay = DeltaSink::open(&lake, TableId::new("silver", "payment"), "event_date")
        .await
        .unwrap();
    logins(&mut sink, &[1, 2], "2026-11-01T03:00:00Z", "2026-11-01", 1).await;
    events(
        &mut pay,
        "payment",
        &[1],
        Some(5500),
        "2026-11-01T03:05:00Z",
        "2026-11-01",
        2,
    )
    .await;
    let reads = |name: &str| {
        let job = jobs.get(name).unwrap().clone();
        let runner = runner.clone();
        async move { runner.source_tables(&job).await.unwrap() }
    };
    let payment = vec![TableId::new("silver", "payment")];
    assert_eq!(reads("pays").await, payment);
    assert_eq!(reads("by_name").await, payment);
    assert_eq!(reads("sessions").await, [TableId::new("silver", "login")]);

    let clock = ManualClock::new(utc("2026-11-01T15:20:00Z"));
    let settings = Settings {
        catch_up: Duration::from_secs(86400),
        late_data_days: 7,
        concurrency: 4,
    };
    let s = Scheduler::new(jobs, runner, None, Arc::new(clock.clone()), settings);
    assert_eq!(
        summary(&tick(&s).await),
        [
            "by_name 2026-11-01 schedule succeeded",
            "pays 2026-11-01 schedule succeeded",
            "sessions 2026-11-01 schedule succeeded",
        ]
    );
    clock.advance(Duration::from_secs(30));
    assert!(tick(&s).await.is_empty());

    // A late payment: the two jobs that read silver.payment.
    events(
        &mut pay,
        "payment",
        &[2],
        Some(1100),
        "2026-11-01T14:00:00Z",
        "2026-11-01",
        3,
    )
    .await;
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        summary(&tick(&s).await),
        [
            "by_name 2026-11-01 late_data succeeded",
            "pays 2026-11-01 late_data succeeded",
        ]
    );
    assert_eq!(
        scalar(
            &lake,
            "SELECT n FROM gold.pays WHERE event_date = DATE '2026-11-01'"
        )
        .await,
        "2"
    );
    // A late login: the job that reads kpi.sessions only.
    logins(&mut sink, &[3], "2026-11-01T14:30:00Z", "2026-11-01", 4).await;
    clock.advance(Duration::from_secs(30));
    assert_eq!(
        summary(&tick(&s).await),
        ["sessions 2026-11-01 late_data succeeded"]
    );
    assert_eq!(
        scalar(
            &lake,
            "SELECT n FROM gold.sessions WHERE event_date = DATE '2026-11-01'"
        )
        .await,
        "3"
    );
    clock.advance(Duration::from_secs(30));
    assert!(tick(&s).await.is_empty());
}

/// A frozen runner counts a silver table's rows at its snapshot, however many times it is asked
/// (the file lists are kept), while a `gold.…` dependency, which is not pinned, is counted as it
/// is now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_counts_silver_rows_at_the_snapshot_and_gold_rows_as_they_are() {
    let mut f = fixture(
        &[(
            "watch",
            "-- depends_on: silver.login, gold.base\nSELECT :date AS event_date",
        )],
        &["watch"],
    )
    .await;
    let job = f.jobs.get("watch").unwrap().clone();
    let day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    logins(
        &mut f.sink,
        &[1, 2],
        "2026-11-01T01:00:00Z",
        "2026-11-01",
        1,
    )
    .await;
    let mut gold = DeltaSink::open(&f.lake, TableId::new("gold", "base"), "event_date")
        .await
        .unwrap();
    events(
        &mut gold,
        "base",
        &[1],
        None,
        "2026-11-01T01:00:00Z",
        "2026-11-01",
        1,
    )
    .await;

    let frozen = f.runner.frozen().await.unwrap();
    let total = |rows: &std::collections::BTreeMap<NaiveDate, gamelake_jobs::runner::DayRows>| {
        rows.get(&day).map_or(0, |r| r.total)
    };
    assert_eq!(total(&frozen.source_rows(&job).await.unwrap()), 3);

    logins(&mut f.sink, &[3], "2026-11-01T02:00:00Z", "2026-11-01", 2).await;
    events(
        &mut gold,
        "base",
        &[2, 3],
        None,
        "2026-11-01T02:00:00Z",
        "2026-11-01",
        2,
    )
    .await;
    // 2 silver rows at the snapshot, 3 gold rows now.
    assert_eq!(total(&frozen.source_rows(&job).await.unwrap()), 5);
    // A new snapshot sees the new login too.
    let fresh = f.runner.frozen().await.unwrap();
    assert_eq!(total(&fresh.source_rows(&job).await.unwrap()), 6);
}

#[tokio::test]
async fn a_batched_build_counts_the_silver_rows_its_query_read_at_the_snapshot() {
    // `silver.*`: the silver tables the SQL reads, here `silver.login` and not `silver.logout`.
    let mut f = fixture(
        &[(
            "daily_logins",
            "-- depends_on: silver.*\n\
             SELECT :date AS event_date, count(*) AS logins FROM silver.login WHERE event_date = :date",
        )],
        &["daily_logins"],
    )
    .await;
    let job = f.jobs.get("daily_logins").unwrap().clone();
    logins(
        &mut f.sink,
        &[1, 2],
        "2026-11-01T01:00:00Z",
        "2026-11-01",
        1,
    )
    .await;
    let mut logout = DeltaSink::open(&f.lake, TableId::new("silver", "logout"), "event_date")
        .await
        .unwrap();
    events(
        &mut logout,
        "logout",
        &[1, 2, 3],
        None,
        "2026-11-01T02:00:00Z",
        "2026-11-01",
        1,
    )
    .await;
    let frozen = f.runner.frozen().await.unwrap();
    // A login after the snapshot is neither built nor counted by this build.
    logins(&mut f.sink, &[3], "2026-11-01T03:00:00Z", "2026-11-01", 2).await;
    let p = Partition::parse("2026-11-01").unwrap();
    let mut done = Vec::new();
    frozen
        .run_batched(
            &job,
            &[p],
            Trigger::Backfill,
            || utc("2026-11-05T00:00:00Z"),
            false,
            |r| done.push(r.clone()),
        )
        .await;
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].status, RunStatus::Succeeded, "{done:?}");
    assert_eq!(
        scalar(&f.lake, "SELECT logins FROM gold.daily_logins").await,
        "2"
    );
    assert_eq!(done[0].input_rows, Some(2), "{done:?}");
    assert_eq!(
        frozen.source_tables(&job).await.unwrap(),
        [TableId::new("silver", "login")]
    );
    // The next snapshot counts the third login: more than the build saw, so it is late data.
    let day = NaiveDate::from_ymd_opt(2026, 11, 1).unwrap();
    let fresh = f.runner.frozen().await.unwrap();
    assert_eq!(fresh.source_rows(&job).await.unwrap()[&day].total, 3);
}
