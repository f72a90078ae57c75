//! Jobs end to end on the real binary: the command lines an Airflow DAG runs (exit codes,
//! backfill, history), the scheduler inside `serve` (catch-up, late data), and table
//! maintenance (compaction while ingest commits, vacuum).

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::{gamelake, one, Server};

const KPI_LOG: &str = include_str!("../sql/kpi.log");

/// `gamelake <args> --data-dir <dir>/data --config <dir>/gamelake.toml`.
fn cli(dir: &Path, args: &[&str]) -> Output {
    gamelake()
        .args(args)
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--config")
        .arg(dir.join("gamelake.toml"))
        .output()
        .expect("running gamelake")
}

/// A server whose own scheduler is off (the command lines drive the jobs), with `jobs` (file
/// name, SQL) in its jobs folder and the golden KPI lines ingested: their 10 logins are
/// committed when this returns.
async fn server_with_kpi_log(dir: &Path, jobs: &[(&str, &str)]) -> Server {
    let s = Server::start(
        dir,
        "[lake]\ncommit_interval_ms = 200\n[jobs]\nenabled = false\n",
    );
    let folder = dir.join("data").join("jobs");
    std::fs::create_dir_all(&folder).unwrap();
    for (name, sql) in jobs {
        std::fs::write(folder.join(name), sql).unwrap();
    }
    assert_eq!(s.post_logs(KPI_LOG, &[]).await.0, 200);
    s.wait_for("SELECT count(*) FROM silver.login", one(10))
        .await;
    s
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An hourly job that reads its own earlier hours (`depends_on_past`): `jobs run` of a late hour
/// is refused while earlier hours with events are not built, naming the first of them and the
/// backfill to run; the backfill then builds every hour in order, so each account is in one.
#[tokio::test]
async fn hourly_depends_on_past_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let s = server_with_kpi_log(
        dir.path(),
        &[(
            "first_hours.sql",
            "-- granularity: hour\n-- depends_on: silver.login\n-- depends_on_past: true\n\
             -- target_columns: account BIGINT, event_date DATE, event_hour INT\n\
             SELECT DISTINCT l.account_id AS account, :date AS event_date, :hour AS event_hour\n\
             FROM silver.login l WHERE l.event_time >= :start AND l.event_time < :end\n\
               AND l.account_id NOT IN (SELECT account FROM gold.first_hours\n\
                 WHERE event_date < :date OR (event_date = :date AND event_hour < :hour))",
        )],
    )
    .await;

    let out = cli(
        dir.path(),
        &["jobs", "run", "first_hours", "--date", "2026-11-01T12"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("hour(s) with events before 2026-11-01T12 are not built, 2026-10-31T20 first")
            && err.contains("gamelake jobs backfill first_hours --from 2026-10-31 --to 2026-11-01"),
        "{err}"
    );

    let out = cli(
        dir.path(),
        &[
            "jobs",
            "backfill",
            "first_hours",
            "--from",
            "2026-10-31",
            "--to",
            "2026-11-02",
        ],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("[72/72] first_hours 2026-11-02T23 succeeded"),
        "{}",
        text(&out.stderr)
    );
    // Account 4 logged in at 10-31 20:00 and again on 11-01: its first hour is the first one.
    let rows = s
        .query("SELECT account, CAST(event_date AS VARCHAR) || 'T' || CAST(event_hour AS VARCHAR) AS h FROM gold.first_hours ORDER BY account")
        .await;
    let accounts = s
        .query("SELECT count(DISTINCT account_id) FROM silver.login")
        .await;
    assert_eq!(Value::from(rows.len()), accounts[0][0], "{rows:?}");
    assert!(
        rows.contains(&vec![Value::from(4), Value::from("2026-10-31T20")]),
        "{rows:?}"
    );
    // Now the late hour's own run goes through.
    let out = cli(
        dir.path(),
        &["jobs", "run", "first_hours", "--date", "2026-11-01T12"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[tokio::test]
async fn airflow_command_lines_exit_codes_backfill_and_history() {
    let dir = tempfile::tempdir().unwrap();
    // The DAG drives the jobs: the server's own scheduler is off.
    let s = server_with_kpi_log(
        dir.path(),
        &[(
            "broken.sql",
            "-- retries: 1\n-- retry_backoff: 100ms\nSELECT :date AS event_date, no_such_column FROM silver.login",
        )],
    )
    .await;

    let list = cli(dir.path(), &["jobs", "list"]);
    assert!(list.status.success(), "{}", text(&list.stderr));
    for name in [
        "first_days",
        "dau",
        "revenue",
        "retention",
        "ccu",
        "item_economy",
        "currency_flow",
        "broken",
    ] {
        assert!(text(&list.stdout).contains(name), "{}", text(&list.stdout));
    }

    // revenue depends on dau, which has not built 11-01: exit 3, naming what to run.
    let out = cli(
        dir.path(),
        &["jobs", "run", "revenue", "--date", "2026-11-01"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("gamelake jobs run dau --date 2026-11-01"));

    // dau reads first_days, which has not built 11-01 either; first_days reads its own earlier
    // days, and 10-31 holds events: each is refused with exit 3 and the command to run.
    let out = cli(dir.path(), &["jobs", "run", "dau", "--date", "2026-11-01"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("gamelake jobs run first_days --date 2026-11-01"));
    let out = cli(
        dir.path(),
        &["jobs", "run", "first_days", "--date", "2026-11-01"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr)
            .contains("gamelake jobs backfill first_days --from 2026-10-31 --to 2026-10-31"),
        "{}",
        text(&out.stderr)
    );
    for date in ["2026-10-31", "2026-11-01"] {
        let out = cli(dir.path(), &["jobs", "run", "first_days", "--date", date]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    let out = cli(dir.path(), &["jobs", "run", "dau", "--date", "2026-11-01"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("dau 2026-11-01 succeeded: 10 rows"),
        "{}",
        text(&out.stdout)
    );
    let out = cli(
        dir.path(),
        &["jobs", "run", "revenue", "--date", "2026-11-01"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Wrong commands: exit 2 with what to fix.
    let out = cli(dir.path(), &["jobs", "run", "daus", "--date", "2026-11-01"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no job `daus`; the jobs are: first_days, dau,"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(dir.path(), &["jobs", "run", "dau", "--date", "2026-13-01"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("is not a date"),
        "{}",
        text(&out.stderr)
    );

    // A failing job: its retry runs, then exit 1 with the SQL error.
    let out = cli(
        dir.path(),
        &["jobs", "run", "broken", "--date", "2026-11-01"],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("failed after 2 attempt(s)"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        text(&out.stdout).contains("no_such_column"),
        "{}",
        text(&out.stdout)
    );

    // A backfill of dau alone stops before building when first_days lacks a day (11-02).
    let backfill = |job: &str, downstream: bool| {
        let mut args = vec![
            "jobs",
            "backfill",
            job,
            "--from",
            "2026-10-31",
            "--to",
            "2026-11-02",
        ];
        if downstream {
            args.push("--with-downstream");
        }
        cli(dir.path(), &args)
    };
    let out = backfill("dau", true);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            "gamelake jobs backfill first_days --from 2026-10-31 --to 2026-11-02 --with-downstream"
        ),
        "{}",
        text(&out.stderr)
    );

    // Backfill first_days and what depends on it (dau, revenue, retention), oldest day first.
    let out = backfill("first_days", true);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let progress = text(&out.stderr);
    assert!(
        progress.contains("[12/12] retention 2026-11-02 succeeded"),
        "{progress}"
    );

    // The server sees the CLI's builds and runs.
    let rows = s
        .query("SELECT CAST(event_date AS VARCHAR) AS d, dau, revenue, arpdau FROM gold.revenue ORDER BY event_date")
        .await;
    assert_eq!(
        rows,
        vec![
            vec![
                Value::from("2026-10-31"),
                Value::from(1),
                Value::from(0.0),
                Value::from(0.0)
            ],
            vec![
                Value::from("2026-11-01"),
                Value::from(4),
                Value::from(33000.0),
                Value::from(8250.0)
            ],
            vec![
                Value::from("2026-11-02"),
                Value::from(2),
                Value::from(1200.0),
                Value::from(600.0)
            ],
        ]
    );
    let runs = s
        .query("SELECT job, status, count(*) AS n FROM system.job_runs GROUP BY job, status ORDER BY job, status")
        .await;
    assert_eq!(
        runs,
        vec![
            vec![Value::from("broken"), Value::from("failed"), Value::from(2)],
            vec![Value::from("dau"), Value::from("succeeded"), Value::from(4)],
            vec![
                Value::from("first_days"),
                Value::from("succeeded"),
                Value::from(5)
            ],
            vec![
                Value::from("retention"),
                Value::from("succeeded"),
                Value::from(3)
            ],
            vec![
                Value::from("revenue"),
                Value::from("succeeded"),
                Value::from(4)
            ],
        ]
    );

    let metrics = s.metrics().await;
    for line in [
        "gamelake_job_runs_total{job=\"dau\",status=\"succeeded\"} 4",
        "gamelake_job_runs_total{job=\"broken\",status=\"failed\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} not in\n{metrics}");
    }
    assert!(metrics.contains("gamelake_job_last_success_timestamp_seconds{job=\"revenue\"}"));

    let out = cli(dir.path(), &["jobs", "history", "dau", "--json"]);
    assert!(out.status.success());
    let history: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(history.len(), 4);
    assert!(history
        .iter()
        .all(|r| r["status"] == "succeeded" && r["job"] == "dau"));
    assert_eq!(history[1]["trigger"], "backfill");

    // On a terminal (a pseudo-terminal from `script`), backfill draws a progress bar in place.
    let command = format!(
        "{} jobs backfill dau --from 2026-10-31 --to 2026-11-01 --data-dir {} --config {}",
        crate::util::BIN,
        dir.path().join("data").display(),
        dir.path().join("gamelake.toml").display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .output()
        .expect("script(1) runs");
    assert!(out.status.success(), "{}", text(&out.stdout));
    let screen = text(&out.stdout);
    assert!(
        screen.contains("\r\x1b[2K[###############...............] 1/2"),
        "{screen:?}"
    );
    assert!(
        screen.contains("[##############################] 2/2"),
        "{screen:?}"
    );
}

/// Today's date in Seoul, shifted by `days`; before 00:15 in Seoul, when the daily jobs'
/// default schedule (`15 0 * * *`) has not yet built yesterday, the day before counts as today,
/// so that `seoul_day(-1)` is always a day the scheduler has been due to build (CI runs at any
/// hour).
fn seoul_day(days: i64) -> String {
    let now = chrono::Utc::now() + chrono::Duration::hours(9) - chrono::Duration::minutes(15)
        + chrono::Duration::days(days);
    now.format("%Y-%m-%d").to_string()
}

#[tokio::test]
async fn scheduler_in_serve_catches_up_and_rebuilds_late_days() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        "[lake]\ncommit_interval_ms = 200\n[jobs]\ntick_s = 1\ndisabled = [\"retention\", \"ccu\", \"item_economy\", \"currency_flow\"]\n[maintenance]\nenabled = false\n",
    );
    // Two accounts yesterday (Seoul). The scheduler's catch-up builds yesterday at start.
    let yesterday = seoul_day(-1);
    let lines = format!(
        "{yesterday} 12:00:00 [login] {{server=kr-01, account_id=1}}\n{yesterday} 12:05:00 [login] {{server=kr-01, account_id=2}}\n"
    );
    assert_eq!(s.post_logs(lines, &[]).await.0, 200);
    let dau = format!(
        "SELECT dau FROM gold.dau WHERE event_date = DATE '{yesterday}' AND dimension = 'total'"
    );
    s.wait_for(&dau, one(2)).await;

    // A line for yesterday arrives late: dau rebuilds that day, and revenue after it.
    let late = format!("{yesterday} 23:59:00 [login] {{server=kr-02, account_id=3}}\n");
    assert_eq!(s.post_logs(late, &[]).await.0, 200);
    s.wait_for(&dau, one(3)).await;
    s.wait_for(
        &format!("SELECT dau FROM gold.revenue WHERE event_date = DATE '{yesterday}'"),
        one(3),
    )
    .await;
    let triggers = s
        .query(&format!(
            "SELECT DISTINCT trigger FROM system.job_runs WHERE job = 'dau' AND partition = '{yesterday}' AND status = 'succeeded' ORDER BY trigger"
        ))
        .await;
    assert!(
        triggers.contains(&vec![Value::from("late_data")]),
        "{triggers:?}"
    );
    // The views the jobs read answer ad-hoc SQL too, with the late line in them.
    assert_eq!(
        s.query(&format!(
            "SELECT count(DISTINCT account) FROM kpi.activity WHERE event_date = DATE '{yesterday}'"
        ))
        .await,
        vec![vec![Value::from(3)]]
    );
}

/// `jobs.concurrency` above the jobs runtime's old four blocking threads: a catch-up starts
/// eight builds at once, each loading tables, and every one of them finishes. (Each table load
/// holds a blocking thread while the kernel's file reads wait for another one; with four
/// threads and eight loads all four waited for ever.)
#[tokio::test]
async fn many_builds_at_once_all_finish() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        "[lake]\ncommit_interval_ms = 200\n[jobs]\ntick_s = 1\nconcurrency = 8\ncatch_up_days = 3\ndisabled = [\"ccu\"]\n[maintenance]\nenabled = false\n",
    );
    // Three past days of logins, payments, items and currency, in tables of their own.
    let mut lines = String::new();
    for back in 1..=3 {
        let day = seoul_day(-back);
        for account in 1..=back {
            lines.push_str(&format!(
                "{day} 10:00:00 [login] {{server=kr-01, account_id={account}}}\n\
                 {day} 10:05:00 [payment] {{server=kr-01, account_id={account}, price_krw=1100}}\n\
                 {day} 10:06:00 [item_acquire] {{server=kr-01, account_id={account}, item_id=7, count=1}}\n\
                 {day} 10:07:00 [currency] {{server=kr-01, account_id={account}, currency=gold, delta=-5}}\n"
            ));
        }
    }
    assert_eq!(s.post_logs(lines, &[]).await.0, 200);
    for back in 1..=3 {
        let day = seoul_day(-back);
        s.wait_for(
            &format!("SELECT dau FROM gold.revenue WHERE event_date = DATE '{day}'"),
            one(back),
        )
        .await;
    }
    let failed = s
        .query("SELECT job, \"partition\", status, error FROM system.job_runs WHERE status IN ('failed', 'timed_out')")
        .await;
    assert_eq!(failed, Vec::<Vec<Value>>::new(), "runs that failed");
}

/// An hourly job and a late event: only the event's hour is built again, also when the hour
/// is today's (the late-data check counts rows per hour from the files' event_time ranges).
#[tokio::test]
async fn late_events_rebuild_only_their_hour() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        "[lake]\ncommit_interval_ms = 200\n[jobs]\ntick_s = 1\ncatch_up_days = 1\ndisabled = [\"first_days\", \"dau\", \"revenue\", \"retention\", \"ccu\", \"currency_flow\"]\n[maintenance]\nenabled = false\n",
    );
    // Two hours that ended 3 and 2 hours ago (Seoul); the catch-up builds both.
    let seoul = |hours_ago: i64| {
        chrono::Utc::now() + chrono::Duration::hours(9) - chrono::Duration::hours(hours_ago)
    };
    let (a, b) = (seoul(3), seoul(2));
    let line = |t: chrono::DateTime<chrono::Utc>, account: u32, minute: u32| {
        format!(
            "{} {}:{minute:02}:00 [item_acquire] {{server=kr-01, account_id={account}, item_id=7, item_grade=rare, count=1, reason=quest}}\n",
            t.format("%Y-%m-%d"),
            t.format("%H")
        )
    };
    let part = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H").to_string();
    let body = format!("{}{}", line(a, 1, 10), line(b, 2, 10));
    assert_eq!(s.post_logs(body, &[]).await.0, 200);
    let acquired = |t: chrono::DateTime<chrono::Utc>| {
        format!(
            "SELECT sum(acquire_events) FROM gold.item_economy WHERE event_date = DATE '{}' AND event_hour = {}",
            t.format("%Y-%m-%d"),
            t.format("%H").to_string().parse::<u32>().unwrap()
        )
    };
    s.wait_for(&acquired(a), one(1)).await;
    s.wait_for(&acquired(b), one(1)).await;

    // A late event of the first hour. (The catch-up may have built both hours before the
    // first body's commit, and rebuilt both for it: only runs after this point count.)
    let posted = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S%.6fZ");
    assert_eq!(s.post_logs(line(a, 3, 40), &[]).await.0, 200);
    s.wait_for(&acquired(a), one(2)).await;
    let late = s
        .query(&format!("SELECT DISTINCT partition FROM system.job_runs WHERE job = 'item_economy' AND trigger = 'late_data' AND started_at >= TIMESTAMP '{posted}' ORDER BY partition"))
        .await;
    assert_eq!(late, vec![vec![Value::from(part(a))]], "b = {}", part(b));
    assert_eq!(s.query(&acquired(b)).await, vec![vec![Value::from(1)]]);
}

#[tokio::test]
async fn compaction_while_ingesting_then_vacuum() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(
        dir.path(),
        "[lake]\ncommit_interval_ms = 100\n[jobs]\nenabled = false\n[maintenance]\nmin_files = 2\n",
    );
    // Twenty commits of one table and day: twenty small files.
    let line = |i: usize| {
        format!("{{\"ts\":\"2026-11-28T10:00:00+09:00\",\"code\":\"quest\",\"quest_id\":{i},\"exp\":{}}}\n", i * 10)
    };
    for i in 0..20 {
        assert_eq!(s.post_logs(line(i), &[]).await.0, 200);
        s.wait_for("SELECT count(*) FROM silver.quest", one(i as i64 + 1))
            .await;
    }
    let files = "SELECT files FROM system.tables WHERE table_name = 'silver.quest'";
    let before = s.query(files).await[0][0].as_u64().unwrap();
    assert!(before >= 20, "{before} files");
    let answer = "SELECT count(*), sum(exp), min(quest_id), max(quest_id) FROM silver.quest";
    let expected = s.query(answer).await;

    // Compaction runs while ingest goes on committing.
    let compact = {
        let dir = dir.path().to_path_buf();
        std::thread::spawn(move || {
            let started = Instant::now();
            let out = cli(&dir, &["tables", "compact", "silver.quest"]);
            (out, started, Instant::now())
        })
    };
    let mut acked_during = 0;
    let mut i = 20;
    while !compact.is_finished() {
        assert_eq!(s.post_logs(line(i), &[]).await.0, 200);
        i += 1;
        acked_during += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (out, _, _) = compact.join().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stderr).contains("compact silver.quest: files"),
        "{}",
        text(&out.stderr)
    );
    assert!(acked_during > 0);
    // Every row acknowledged during compaction is there, once.
    s.wait_for("SELECT count(*) FROM silver.quest", one(i as i64))
        .await;
    assert_eq!(
        s.query("SELECT count(DISTINCT quest_id) FROM silver.quest")
            .await,
        one(i as i64)
    );
    // The rows from before read the same; the files are fewer.
    let old = "SELECT count(*), sum(exp), min(quest_id), max(quest_id) FROM silver.quest WHERE quest_id < 20";
    assert_eq!(s.query(old).await, expected);
    let after = s.query(files).await[0][0].as_u64().unwrap();
    assert!(
        after < before,
        "files {before} -> {after} with {acked_during} appends during compaction"
    );

    // Vacuum with no retention deletes the compacted-away files and nothing a snapshot needs.
    let out = cli(
        dir.path(),
        &["tables", "vacuum", "silver.quest", "--retention", "0s"],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "a retention under 1h needs --force"
    );
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(30)), Some(0));
    let out = cli(
        dir.path(),
        &[
            "tables",
            "vacuum",
            "silver.quest",
            "--retention",
            "0s",
            "--force",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let deleted: u64 = text(&out.stderr)
        .split("vacuum silver.quest: ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", text(&out.stderr)));
    assert!(deleted >= 20, "{deleted} files deleted");
    let out = gamelake()
        .args(["sql", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("SELECT count(*) FROM silver.quest")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(&i.to_string()),
        "{}",
        text(&out.stdout)
    );
    // Both tasks are in the run log.
    let out = cli(dir.path(), &["jobs", "history", "--json"]);
    let jobs: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["job"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for task in ["compact", "checkpoint", "retention", "vacuum"] {
        assert!(jobs.iter().any(|j| j == task), "{jobs:?}");
    }
}

/// The commands of docs/airflow/gamelake_kpi_dag.py, rendered as Airflow would (with stand-ins
/// for Airflow and pendulum), run in the DAG's order with only the config path changed.
#[tokio::test]
async fn airflow_dag_command_lines() {
    let python = std::env::var("GAMELAKE_TEST_PYTHON").unwrap_or_else(|_| "python3".into());
    let root = crate::util::crate_file("");
    let rendered = std::process::Command::new(&python)
        .arg(root.join("tests/clients/airflow_dag.py"))
        .arg(root.join("../../docs/airflow/gamelake_kpi_dag.py"))
        .args([
            "2026-10-31",
            "2026-11-01T23",
            "first_days",
            "2026-10-31",
            "2026-11-02",
        ])
        .output();
    let rendered = match rendered {
        Ok(o) if o.status.success() => text(&o.stdout),
        Ok(o) => panic!("rendering the DAG failed: {}", text(&o.stderr)),
        Err(_) => return crate::util::missing("python3"),
    };
    let dir = tempfile::tempdir().unwrap();
    let s = server_with_kpi_log(dir.path(), &[]).await;
    let config = dir.path().join("airflow.toml");
    std::fs::write(
        &config,
        format!(
            "data_dir = {:?}\n[jobs]\nenabled = false\n",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let mut ran = Vec::new();
    for line in rendered.lines() {
        let task: Value = serde_json::from_str(line).unwrap();
        let command = task["command"]
            .as_str()
            .unwrap()
            .replace("/etc/gamelake/gamelake.toml", config.to_str().unwrap());
        let words: Vec<&str> = command.split_whitespace().collect();
        assert_eq!(words[0], "gamelake", "{command}");
        let out = gamelake().args(&words[1..]).output().unwrap();
        assert!(
            out.status.success(),
            "{command}: exit {:?}\n{}{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        );
        ran.push(task["task"].as_str().unwrap().to_string());
    }
    assert_eq!(
        ran,
        [
            "first_days",
            "dau",
            "revenue",
            "retention",
            "ccu",
            "currency_flow",
            "item_economy",
            "backfill"
        ]
    );
    let built = s
        .query("SELECT job, count(*) AS n FROM system.job_runs WHERE status = 'succeeded' GROUP BY job ORDER BY job")
        .await;
    assert_eq!(
        built,
        vec![
            vec![Value::from("ccu"), Value::from(1)],
            vec![Value::from("currency_flow"), Value::from(1)],
            vec![Value::from("dau"), Value::from(4)],
            vec![Value::from("first_days"), Value::from(4)],
            vec![Value::from("item_economy"), Value::from(1)],
            vec![Value::from("retention"), Value::from(4)],
            vec![Value::from("revenue"), Value::from(4)],
        ]
    );
}

#[tokio::test]
async fn retention_drops_partitions_older_than_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(
        dir.path(),
        "[lake]\ncommit_interval_ms = 200\n[jobs]\nenabled = false\n[maintenance]\nenabled = false\nretention_days = { \"silver.quest\" = 7 }\n",
    );
    let today = seoul_day(0);
    let body = format!(
        "{{\"ts\":\"2026-01-05T10:00:00+09:00\",\"code\":\"quest\",\"quest_id\":1}}\n\
         {{\"ts\":\"{today}T10:00:00+09:00\",\"code\":\"quest\",\"quest_id\":2}}\n"
    );
    assert_eq!(s.post_logs(body, &[]).await.0, 200);
    s.wait_for("SELECT count(*) FROM silver.quest", one(2))
        .await;
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(30)), Some(0));
    let out = cli(dir.path(), &["tables", "vacuum", "silver.quest"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("retention silver.quest: partitions before"),
        "{}",
        text(&out.stderr)
    );
    let out = gamelake()
        .args(["sql", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--format", "csv", "SELECT quest_id FROM silver.quest"])
        .output()
        .unwrap();
    assert_eq!(
        text(&out.stdout).lines().skip(1).collect::<Vec<_>>(),
        ["2"],
        "{}",
        text(&out.stderr)
    );
}

/// Scheduled compaction inside `serve`: it runs on the maintenance runtime, whose threads are
/// ten nice steps below the process's (below the table commits), and writes zstd files in row
/// groups of at most 128 Ki rows, with the same rows as before.
#[tokio::test]
async fn scheduled_compaction_runs_at_low_priority_in_bounded_row_groups() {
    use gamelake_lake::deltalake::parquet::basic::Compression;
    use gamelake_lake::deltalake::parquet::file::reader::{FileReader, SerializedFileReader};

    let dir = tempfile::tempdir().unwrap();
    // Three commits of one table and day, 210 000 rows.
    let mut s = Server::start(
        dir.path(),
        "[lake]\ncommit_interval_ms = 100\n[jobs]\nenabled = false\n[maintenance]\nenabled = false\n",
    );
    let mut rows = 0;
    for part in 0..3 {
        let body: String = (0..70_000)
            .map(|i| {
                format!(
                    "2026-11-28 10:00:00 [quest] {{quest_id={}, exp={i}}}\n",
                    part * 70_000 + i
                )
            })
            .collect();
        assert_eq!(s.post_logs(body, &[]).await.0, 200);
        rows += 70_000;
        s.wait_for("SELECT count(*) FROM silver.quest", one(rows))
            .await;
    }
    let answer = "SELECT count(*), count(DISTINCT quest_id), sum(exp) FROM silver.quest";
    let expected = s.query(answer).await;
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(30)), Some(0));

    // Again with the scheduler on, no jobs, and compaction every minute: the minute that has
    // begun is due at the first tick.
    let s = Server::start(
        dir.path(),
        "[jobs]\ntick_s = 1\ndisabled = [\"first_days\", \"dau\", \"revenue\", \"retention\", \"ccu\", \"currency_flow\", \"item_economy\"]\n\
         [maintenance]\ncompact_schedule = \"* * * * *\"\nmin_files = 2\n",
    );
    s.wait_for(
        "SELECT count(*) FROM system.job_runs WHERE job = 'compact' AND partition = 'silver.quest' AND status = 'succeeded'",
        one(1),
    )
    .await;
    assert_eq!(s.query(answer).await, expected);
    let files = "SELECT files FROM system.tables WHERE table_name = 'silver.quest'";
    assert_eq!(s.query(files).await, one(1));

    // The maintenance runtime's threads, ten steps below the process's own priority.
    let pid = s.child.id();
    let nice = |stat: &str| -> i64 {
        // Fields after the command name (which may hold spaces): state is field 3, nice 19.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        after.split(' ').nth(16).unwrap().parse().unwrap()
    };
    let process_nice = nice(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap());
    let mut maintenance_threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let path = task.unwrap().path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() == "gamelake-maint" {
            maintenance_threads.push(nice(&std::fs::read_to_string(path.join("stat")).unwrap()));
        }
    }
    assert!(!maintenance_threads.is_empty(), "no gamelake-maint thread");
    assert!(
        maintenance_threads
            .iter()
            .all(|n| *n == (process_nice + 10).min(19)),
        "process at {process_nice}, maintenance threads at {maintenance_threads:?}"
    );

    // The compacted file: zstd, row groups of at most 128 Ki rows.
    let mut compacted = Vec::new();
    let mut stack = vec![dir.path().join("data/silver/quest")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.to_string_lossy().ends_with(".zstd.parquet") {
                compacted.push(path);
            }
        }
    }
    assert_eq!(compacted.len(), 1, "{compacted:?}");
    let reader = SerializedFileReader::new(std::fs::File::open(&compacted[0]).unwrap()).unwrap();
    let meta = reader.metadata();
    let groups: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
    assert_eq!(groups.iter().sum::<i64>(), 210_000);
    assert_eq!(groups, vec![131_072, 210_000 - 131_072]);
    assert!(meta
        .row_groups()
        .iter()
        .flat_map(|g| g.columns())
        .all(|c| matches!(c.compression(), Compression::ZSTD(_))));
}
