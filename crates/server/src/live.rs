//! The dashboard's live feed.
//!
//! A sampler turns the cumulative [`Metrics`] into one [`Point`] a second (rates over that
//! second, ack-latency quantiles of that second, WAL lag) and keeps the last 15 minutes, so a
//! page opened now draws the whole window at once. Every 10 seconds it also refreshes the
//! [`LakeFigures`] (and at once when a new event code appears): tables with rows, files and
//! bytes, and the live KPIs read by SQL from the silver tables (concurrent users, DAU and
//! revenue of the game's today).
//!
//! `GET /v1/live` streams it as server-sent events: `init` (history + lake figures), then
//! `point` every second and `lake` every 10 s.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gamelake_lake::arrow::array::{Array, AsArray};
use gamelake_lake::arrow::datatypes::{Float64Type, Int64Type};
use gamelake_lake::{Lake, QueryEngine};
use serde::Serialize;

use crate::metrics::Metrics;

/// Seconds of history kept and sent to a new page.
pub const HISTORY_S: usize = 15 * 60;
const LAKE_EVERY: Duration = Duration::from_secs(10);

/// One second of the pipeline.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Point {
    /// Unix milliseconds at the end of the second.
    pub t: i64,
    pub events_per_s: f64,
    pub bytes_per_s: f64,
    pub dead_per_s: f64,
    /// Ack latency quantiles of the bodies answered in this second (none answered: null).
    pub ack_p50_ms: Option<f64>,
    pub ack_p99_ms: Option<f64>,
    /// Bytes acknowledged but not yet committed to every table.
    pub uncommitted_bytes: u64,
    /// WAL records written but not yet committed to every table.
    pub wal_lag_records: u64,
    pub queries_per_s: f64,
    /// Accepted events per second by silver table (event code).
    pub by_table: BTreeMap<String, f64>,
}

/// What the dashboard reads from the lake, refreshed every 10 s.
#[derive(Debug, Clone, Serialize, Default)]
pub struct LakeFigures {
    /// Unix milliseconds of the refresh.
    pub updated: i64,
    pub time_zone: String,
    /// The game's today (`event_date` of now), `YYYY-MM-DD`.
    pub today: String,
    pub tables: Vec<TableFigure>,
    /// Dead letters since start by reason, most first.
    pub dead_reasons: Vec<(String, u64)>,
    /// Accounts with a session open now (a `login` or `heartbeat` in the last 10 minutes and no
    /// `logout` after it).
    pub ccu: Option<i64>,
    /// Distinct accounts with a session event (`[kpi]` login, logout, heartbeat codes) today. The gold
    /// DAU job counts accounts with any event; the live figure reads only the session tables
    /// so that it stays cheap at launch volumes.
    pub dau_today: Option<i64>,
    /// Sum of payment amounts today (KRW).
    pub revenue_today: Option<f64>,
    /// Why a KPI is missing (no such table yet, a query error).
    pub kpi_notes: Vec<String>,
    /// Each job's and maintenance task's last finished run.
    pub jobs: Vec<serde_json::Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TableFigure {
    pub name: String,
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    pub version: u64,
}

/// The shared live state.
pub struct Live {
    history: Mutex<VecDeque<Point>>,
    lake: Mutex<LakeFigures>,
    events: tokio::sync::broadcast::Sender<(&'static str, Arc<str>)>,
    /// Signalled when a dashboard subscribes: the lake figures are computed only while one is.
    watched: tokio::sync::Notify,
    /// Signalled when a new event code is seen: its table appears with its first commit.
    new_table: tokio::sync::Notify,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            history: Mutex::new(VecDeque::with_capacity(HISTORY_S)),
            lake: Mutex::default(),
            events: tokio::sync::broadcast::channel(64).0,
            watched: tokio::sync::Notify::new(),
            new_table: tokio::sync::Notify::new(),
        }
    }
}

/// Cumulative readings of the metrics at one instant.
#[derive(Default)]
struct Reading {
    lines: u64,
    bytes: u64,
    dead: u64,
    queries: u64,
    ack_buckets: Vec<u64>,
    by_table: BTreeMap<String, u64>,
}

impl Reading {
    fn take(m: &Metrics) -> Self {
        Self {
            lines: m.ingest_lines_accepted.load(Ordering::Relaxed),
            bytes: m.ingest_bytes.load(Ordering::Relaxed),
            dead: m
                .ingest_lines_dead
                .lock()
                .expect("metrics lock")
                .values()
                .sum(),
            queries: m.queries.load(Ordering::Relaxed),
            ack_buckets: m.ack_latency.buckets(),
            by_table: m.ingest_rows_by_table.lock().expect("metrics lock").clone(),
        }
    }
}

impl Live {
    /// The `init` event: the history and the last lake figures.
    pub fn init_json(&self) -> String {
        let history = self.history.lock().expect("live lock");
        let lake = self.lake.lock().expect("live lock");
        serde_json::json!({ "history": &*history, "lake": &*lake }).to_string()
    }

    /// Live events as they come: `("point" | "lake", json)`.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<(&'static str, Arc<str>)> {
        let rx = self.events.subscribe();
        self.watched.notify_one();
        rx
    }

    /// Samples the metrics every second, forever. The lake figures are SQL over the tables
    /// and can take seconds under load: [`Live::refresh_lake`] runs as a task of its own, so
    /// the one-second points never wait for them.
    pub async fn run(self: Arc<Self>, metrics: Arc<Metrics>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last = Reading::take(&metrics);
        let mut last_at = std::time::Instant::now();
        loop {
            tick.tick().await;
            let now = Reading::take(&metrics);
            let secs = last_at.elapsed().as_secs_f64().max(1e-3);
            last_at = std::time::Instant::now();
            let point = point(&last, &now, secs, &metrics);
            if now.by_table.len() > last.by_table.len() {
                self.new_table.notify_one();
            }
            last = now;
            let json: Arc<str> = serde_json::to_string(&point).unwrap_or_default().into();
            {
                let mut h = self.history.lock().expect("live lock");
                if h.len() == HISTORY_S {
                    h.pop_front();
                }
                h.push_back(point);
            }
            let _ = self.events.send(("point", json));
        }
    }

    /// Refreshes the lake figures every [`LAKE_EVERY`], and two seconds after a new event code
    /// is seen (its table appears with its first commit, within a commit interval), while a
    /// dashboard is connected. They are SQL over today's rows of every table (DAU, CCU,
    /// revenue) and a listing of every table: a cost that grows with the day's data, which an
    /// unwatched server should not pay out of its ingest CPU.
    pub async fn refresh_lake(
        self: Arc<Self>,
        metrics: Arc<Metrics>,
        lake: Lake,
        query: QueryEngine,
        time_zone: String,
        kpi: gamelake_jobs::KpiConfig,
    ) {
        loop {
            if self.events.receiver_count() == 0 {
                self.watched.notified().await;
            }
            let figures = lake_figures(&metrics, &lake, &query, &time_zone, &kpi).await;
            let json: Arc<str> = serde_json::to_string(&figures).unwrap_or_default().into();
            *self.lake.lock().expect("live lock") = figures;
            let _ = self.events.send(("lake", json));
            tokio::select! {
                _ = tokio::time::sleep(LAKE_EVERY) => {}
                _ = self.new_table.notified() => tokio::time::sleep(Duration::from_secs(2)).await,
            }
        }
    }
}

fn point(last: &Reading, now: &Reading, secs: f64, m: &Metrics) -> Point {
    let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
    let second: Vec<u64> = now
        .ack_buckets
        .iter()
        .zip(last.ack_buckets.iter().chain(std::iter::repeat(&0)))
        .map(|(n, l)| n.saturating_sub(*l))
        .collect();
    Point {
        t: chrono::Utc::now().timestamp_millis(),
        events_per_s: rate(last.lines, now.lines),
        bytes_per_s: rate(last.bytes, now.bytes),
        dead_per_s: rate(last.dead, now.dead),
        ack_p50_ms: crate::metrics::bucket_quantile(&second, 0.5).map(|s| s * 1000.0),
        ack_p99_ms: crate::metrics::bucket_quantile(&second, 0.99).map(|s| s * 1000.0),
        uncommitted_bytes: m.uncommitted_bytes.load(Ordering::Relaxed),
        wal_lag_records: m.wal_lag_records(),
        queries_per_s: rate(last.queries, now.queries),
        by_table: now
            .by_table
            .iter()
            .map(|(t, n)| (t.clone(), rate(*last.by_table.get(t).unwrap_or(&0), *n)))
            .collect(),
    }
}

async fn lake_figures(
    metrics: &Metrics,
    lake: &Lake,
    query: &QueryEngine,
    time_zone: &str,
    kpi: &gamelake_jobs::KpiConfig,
) -> LakeFigures {
    let mut f = LakeFigures {
        updated: chrono::Utc::now().timestamp_millis(),
        time_zone: time_zone.to_string(),
        today: gamelake_common::GameClock::new(time_zone)
            .map(|c| {
                let micros = chrono::Utc::now().timestamp_micros();
                gamelake_common::time::format_date32(c.local_date(micros))
            })
            .unwrap_or_default(),
        ..Default::default()
    };
    let mut reasons: Vec<(String, u64)> = metrics
        .ingest_lines_dead
        .lock()
        .expect("metrics lock")
        .iter()
        .map(|(r, n)| (r.clone(), *n))
        .collect();
    reasons.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    f.dead_reasons = reasons;
    if let Some(log) = metrics.job_runs.get() {
        let mut last: BTreeMap<String, gamelake_jobs::RunRecord> = BTreeMap::new();
        for r in log.runs().into_iter().filter(|r| r.ended.is_some()) {
            last.insert(r.job.clone(), r);
        }
        f.jobs = last
            .into_values()
            .map(|r| {
                serde_json::json!({
                    "name": r.job,
                    "partition": r.partition,
                    "status": r.status.as_str(),
                    "finished": r.ended.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    "rows": r.rows,
                    "error": r.error,
                })
            })
            .collect();
    }
    let infos = match crate::tables::describe_all(lake).await {
        Ok(i) => i,
        Err(e) => {
            f.kpi_notes.push(format!("listing tables: {e:#}"));
            return f;
        }
    };
    f.tables = infos
        .iter()
        .map(|t| TableFigure {
            name: format!("{}.{}", t.schema, t.name),
            rows: t.rows,
            files: t.files,
            bytes: t.bytes,
            version: t.version,
        })
        .collect();
    // Session events and payments through the `kpi` views the jobs read, so the `[kpi]`
    // roles (which codes and fields) apply here too.
    let silver: BTreeMap<String, Vec<String>> = infos
        .iter()
        .filter(|t| t.schema == gamelake_common::SCHEMA_SILVER)
        .map(|t| {
            (
                t.name.clone(),
                t.columns.iter().map(|c| c.0.clone()).collect(),
            )
        })
        .collect();
    let views: BTreeMap<String, String> = kpi.views(&silver).into_iter().collect();
    let session_codes: Vec<&String> = [&kpi.login_codes, &kpi.logout_codes, &kpi.heartbeat_codes]
        .into_iter()
        .flatten()
        .collect();
    if !session_codes.iter().any(|c| silver.contains_key(*c)) {
        let names: Vec<&str> = session_codes.iter().map(|c| c.as_str()).collect();
        f.kpi_notes
            .push(format!("no session tables ({}) yet", names.join(", ")));
    } else {
        let sessions = &views["sessions"];
        let today = &f.today;
        f.dau_today = scalar_i64(
            query,
            &format!(
                "SELECT count(DISTINCT account) FROM ({sessions}) AS s WHERE event_date = DATE '{today}'"
            ),
            &mut f.kpi_notes,
        )
        .await;
        f.ccu = scalar_i64(
            query,
            &format!(
                "SELECT count(*) FROM (SELECT account, last_value(kind ORDER BY event_time) AS last \
                 FROM ({sessions}) AS s WHERE account IS NOT NULL \
                 AND event_time > now() - INTERVAL '10 minutes' GROUP BY account) \
                 WHERE last <> 'logout'"
            ),
            &mut f.kpi_notes,
        )
        .await;
    }
    let paid = kpi.payment_codes.iter().any(|c| {
        silver.get(c).is_some_and(|cols| {
            gamelake_jobs::kpi::coalesce_of(cols, &kpi.amount, "DOUBLE").is_some()
        })
    });
    if paid {
        f.revenue_today = scalar_f64(
            query,
            &format!(
                "SELECT coalesce(sum(amount), 0) FROM ({}) AS p WHERE event_date = DATE '{}'",
                views["payments"], f.today
            ),
            &mut f.kpi_notes,
        )
        .await;
    } else {
        f.kpi_notes.push(format!(
            "no payment table ({}) with an amount field ({}) yet",
            kpi.payment_codes.join(", "),
            kpi.amount.join(", ")
        ));
    }
    f
}

async fn scalar_i64(q: &QueryEngine, sql: &str, notes: &mut Vec<String>) -> Option<i64> {
    let (_, batches) = run_scalar(q, sql, notes).await?;
    let col = batches.first()?.column(0).clone();
    let col = col.as_primitive_opt::<Int64Type>()?;
    (!col.is_empty() && col.is_valid(0)).then(|| col.value(0))
}

async fn scalar_f64(q: &QueryEngine, sql: &str, notes: &mut Vec<String>) -> Option<f64> {
    let (_, batches) = run_scalar(q, sql, notes).await?;
    let col = batches.first()?.column(0).clone();
    let col = col.as_primitive_opt::<Float64Type>()?;
    (!col.is_empty() && col.is_valid(0)).then(|| col.value(0))
}

async fn run_scalar(
    q: &QueryEngine,
    sql: &str,
    notes: &mut Vec<String>,
) -> Option<(
    gamelake_lake::arrow::datatypes::SchemaRef,
    Vec<gamelake_lake::arrow::array::RecordBatch>,
)> {
    match q.sql(sql).await {
        Ok(r) => Some(r),
        Err(e) => {
            notes.push(format!("{e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_holds_the_rates_of_one_second() {
        let m = Metrics::default();
        let last = Reading::take(&m);
        m.ingest_lines_accepted.store(500, Ordering::Relaxed);
        m.ingest_bytes.store(1000, Ordering::Relaxed);
        for _ in 0..99 {
            m.ack_latency.observe(Duration::from_millis(3));
        }
        m.ack_latency.observe(Duration::from_millis(400));
        m.wal_next_offset.store(10, Ordering::Relaxed);
        m.wal_committed_offset.store(6, Ordering::Relaxed);
        let p = point(&last, &Reading::take(&m), 0.5, &m);
        assert_eq!(p.events_per_s, 1000.0);
        assert_eq!(p.bytes_per_s, 2000.0);
        let p50 = p.ack_p50_ms.unwrap();
        assert!((2.0..=5.0).contains(&p50), "{p50}");
        let p99 = p.ack_p99_ms.unwrap();
        assert!((2.0..=5.0).contains(&p99), "{p99}");
        assert_eq!(p.wal_lag_records, 3);
        // The next second saw nothing.
        let again = Reading::take(&m);
        let q = point(&again, &Reading::take(&m), 1.0, &m);
        assert_eq!(q.events_per_s, 0.0);
        assert_eq!(q.ack_p50_ms, None);
    }
}
