//! Every metric of the server, rendered in the Prometheus text format. All names start with
//! `gamelake_` and carry their unit.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const LATENCY_BUCKETS_S: [f64; 20] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
    1.0, 2.0, 5.0, 10.0, 30.0,
];

/// The `q` quantile in seconds of cumulative bucket counts as [`Histogram::buckets`] gives
/// them (the last entry is the total), interpolated linearly inside the bucket as Prometheus'
/// `histogram_quantile` does; `None` with no observations.
pub fn bucket_quantile(cumulative: &[u64], q: f64) -> Option<f64> {
    let total = *cumulative.last()?;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, &n) in cumulative.iter().enumerate() {
        if n as f64 >= rank && n > below {
            let Some(&upper) = LATENCY_BUCKETS_S.get(i) else {
                return LATENCY_BUCKETS_S.last().copied();
            };
            let lower = if i == 0 {
                0.0
            } else {
                LATENCY_BUCKETS_S[i - 1]
            };
            let share = (rank - below as f64) / (n - below) as f64;
            return Some(lower + (upper - lower) * share.clamp(0.0, 1.0));
        }
        below = n;
    }
    LATENCY_BUCKETS_S.last().copied()
}

/// A Prometheus histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    inner: Mutex<(Vec<u64>, u64, f64)>,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let mut g = self.inner.lock().expect("histogram lock");
        if g.0.is_empty() {
            g.0 = vec![0; LATENCY_BUCKETS_S.len()];
        }
        for (i, b) in LATENCY_BUCKETS_S.iter().enumerate() {
            if s <= *b {
                g.0[i] += 1;
            }
        }
        g.1 += 1;
        g.2 += s;
    }

    /// Cumulative counts of each bucket, then the total.
    pub fn buckets(&self) -> Vec<u64> {
        let g = self.inner.lock().expect("histogram lock");
        let mut b = g.0.clone();
        b.resize(LATENCY_BUCKETS_S.len(), 0);
        b.push(g.1);
        b
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let g = self.inner.lock().expect("histogram lock");
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, b) in LATENCY_BUCKETS_S.iter().enumerate() {
            let n = g.0.get(i).copied().unwrap_or(0);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", g.1);
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", g.2);
        let _ = writeln!(out, "{name}_count{braces} {}", g.1);
    }
}

/// A per-table counter: name, help text, and how to read it from [`TableCommits`].
type PerTableCounter = (&'static str, &'static str, fn(&TableCommits) -> f64);

/// Per-table commit figures.
#[derive(Debug, Default, Clone)]
pub struct TableCommits {
    pub commits: u64,
    pub rows: u64,
    pub seconds: f64,
    pub errors: u64,
    pub committed_offset: Option<u64>,
}

/// Finished runs by job and status, and the end time of each job's last success.
fn render_job_runs(out: &mut String, runs: &[gamelake_jobs::RunRecord]) {
    let mut counts: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    let mut seconds: BTreeMap<&str, f64> = BTreeMap::new();
    let mut last_success: BTreeMap<&str, i64> = BTreeMap::new();
    for r in runs {
        let Some(ended) = r.ended else { continue };
        *counts.entry((&r.job, r.status.as_str())).or_default() += 1;
        *seconds.entry(&r.job).or_default() +=
            (ended - r.started).num_milliseconds() as f64 / 1000.0;
        if r.status == gamelake_jobs::RunStatus::Succeeded {
            let t = last_success.entry(&r.job).or_default();
            *t = (*t).max(ended.timestamp());
        }
    }
    let _ = writeln!(out, "# HELP gamelake_job_runs_total Finished runs of jobs and maintenance tasks, by status.\n# TYPE gamelake_job_runs_total counter");
    for ((job, status), n) in &counts {
        let _ = writeln!(
            out,
            "gamelake_job_runs_total{{job=\"{job}\",status=\"{status}\"}} {n}"
        );
    }
    let _ = writeln!(out, "# HELP gamelake_job_run_seconds_total Time spent in finished runs.\n# TYPE gamelake_job_run_seconds_total counter");
    for (job, s) in &seconds {
        let _ = writeln!(out, "gamelake_job_run_seconds_total{{job=\"{job}\"}} {s}");
    }
    let _ = writeln!(out, "# HELP gamelake_job_last_success_timestamp_seconds End of the last successful run.\n# TYPE gamelake_job_last_success_timestamp_seconds gauge");
    for (job, t) in &last_success {
        let _ = writeln!(
            out,
            "gamelake_job_last_success_timestamp_seconds{{job=\"{job}\"}} {t}"
        );
    }
}

/// The server's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    pub http_requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    pub ingest_bodies: AtomicU64,
    pub ingest_bytes: AtomicU64,
    pub ingest_lines_accepted: AtomicU64,
    pub ingest_lines_dead: Mutex<BTreeMap<String, u64>>,
    pub ingest_rows_by_table: Mutex<BTreeMap<String, u64>>,
    /// Input line bytes of accepted events, by silver table.
    pub ingest_bytes_by_table: Mutex<BTreeMap<String, u64>>,
    /// Input line bytes of dead-lettered lines, by reason.
    pub dead_letter_bytes: Mutex<BTreeMap<String, u64>>,
    pub ack_latency: Histogram,
    pub wal_bytes: AtomicU64,
    pub wal_segments: AtomicU64,
    pub wal_next_offset: AtomicU64,
    pub wal_committed_offset: AtomicU64,
    pub wal_syncs: AtomicU64,
    pub uncommitted_bytes: AtomicU64,
    /// Memory held by rows waiting for their table commit: Arrow batches queued for a table
    /// writer or buffered by it, and the Parquet pages of its open files.
    pub buffered_bytes: AtomicU64,
    /// Bodies refused with 503 by backpressure, by the limit (config key) that refused them.
    pub backpressure: Mutex<BTreeMap<String, u64>>,
    pub commits: Mutex<BTreeMap<String, TableCommits>>,
    pub queries: AtomicU64,
    pub query_errors: AtomicU64,
    pub query_latency: Histogram,
    /// The run log of jobs and maintenance, once the server opened it.
    pub job_runs: std::sync::OnceLock<gamelake_jobs::RunLog>,
}

impl Metrics {
    /// Updates the commit figures of one table.
    pub fn update_table(&self, table: &str, update: impl FnOnce(&mut TableCommits)) {
        let mut commits = self.commits.lock().expect("metrics lock");
        match commits.get_mut(table) {
            Some(c) => update(c),
            None => update(commits.entry(table.to_string()).or_default()),
        }
    }

    /// WAL records written but not committed by a table whose last committed offset is
    /// `committed` (`None`: nothing committed yet).
    pub fn wal_records_behind(&self, committed: Option<u64>) -> u64 {
        let next = self.wal_next_offset.load(Ordering::Relaxed);
        next.saturating_sub(committed.map_or(0, |o| o + 1))
    }

    /// [`Metrics::wal_records_behind`] of the slowest table (the all-tables watermark).
    pub fn wal_lag_records(&self) -> u64 {
        self.wal_records_behind(Some(self.wal_committed_offset.load(Ordering::Relaxed)))
    }

    pub fn count_request(&self, route: &'static str, status: u16) {
        *self
            .http_requests
            .lock()
            .expect("metrics lock")
            .entry((route, status))
            .or_default() += 1;
    }

    /// A body refused with 503 by backpressure, counted under the limit (config key) that refused it.
    pub fn count_backpressure(&self, limit: &str) {
        *self
            .backpressure
            .lock()
            .expect("metrics lock")
            .entry(limit.to_string())
            .or_default() += 1;
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let gauge = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        // A counter family with one label, from a map of label value to count.
        let by_label =
            |out: &mut String, name: &str, help: &str, label: &str, m: &BTreeMap<String, u64>| {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
                for (value, n) in m {
                    let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
                }
            };
        let _ = writeln!(out, "# HELP gamelake_http_requests_total HTTP requests by route and status.\n# TYPE gamelake_http_requests_total counter");
        for ((route, status), n) in self.http_requests.lock().expect("metrics lock").iter() {
            let _ = writeln!(
                out,
                "gamelake_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        counter(
            &mut out,
            "gamelake_ingest_bodies_total",
            "Request bodies made durable.",
            self.ingest_bodies.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "gamelake_ingest_bytes_total",
            "Decompressed body bytes made durable.",
            self.ingest_bytes.load(Ordering::Relaxed),
        );
        let _ = writeln!(out, "# HELP gamelake_ingest_lines_total Lines made durable, by outcome.\n# TYPE gamelake_ingest_lines_total counter");
        let _ = writeln!(
            out,
            "gamelake_ingest_lines_total{{outcome=\"accepted\"}} {}",
            self.ingest_lines_accepted.load(Ordering::Relaxed)
        );
        let dead = self.ingest_lines_dead.lock().expect("metrics lock");
        let _ = writeln!(
            out,
            "gamelake_ingest_lines_total{{outcome=\"dead_lettered\"}} {}",
            dead.values().sum::<u64>()
        );
        by_label(
            &mut out,
            "gamelake_dead_letters_total",
            "Rejected lines by reason.",
            "reason",
            &dead,
        );
        drop(dead);
        by_label(
            &mut out,
            "gamelake_dead_letter_bytes_total",
            "Bytes of rejected lines by reason.",
            "reason",
            &self.dead_letter_bytes.lock().expect("metrics lock"),
        );
        by_label(
            &mut out,
            "gamelake_ingest_events_total",
            "Accepted events by silver table.",
            "table",
            &self.ingest_rows_by_table.lock().expect("metrics lock"),
        );
        by_label(
            &mut out,
            "gamelake_ingest_event_bytes_total",
            "Input line bytes of accepted events by silver table.",
            "table",
            &self.ingest_bytes_by_table.lock().expect("metrics lock"),
        );
        let _ = writeln!(out, "# HELP gamelake_ingest_ack_latency_seconds Time from body received to 2xx.\n# TYPE gamelake_ingest_ack_latency_seconds histogram");
        self.ack_latency
            .render(&mut out, "gamelake_ingest_ack_latency_seconds", "");
        gauge(
            &mut out,
            "gamelake_wal_bytes",
            "Bytes of write-ahead-log segments on disk, spares kept for reuse included.",
            self.wal_bytes.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "gamelake_wal_segments",
            "Write-ahead-log segments on disk.",
            self.wal_segments.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "gamelake_wal_next_offset",
            "Offset the next body gets.",
            self.wal_next_offset.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "gamelake_wal_committed_offset",
            "Every body at or below this offset is committed to all its tables.",
            self.wal_committed_offset.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "gamelake_wal_syncs_total",
            "fsync calls of the write-ahead log (group commits).",
            self.wal_syncs.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "gamelake_uncommitted_bytes",
            "Body bytes durable in the log but not yet in every table.",
            self.uncommitted_bytes.load(Ordering::Relaxed),
        );
        gauge(
            &mut out,
            "gamelake_buffered_bytes",
            "Memory held by rows waiting for their table commit (Arrow batches, Parquet pages).",
            self.buffered_bytes.load(Ordering::Relaxed),
        );
        by_label(
            &mut out,
            "gamelake_ingest_backpressure_total",
            "Bodies refused with 503 by backpressure, by the limit that refused them.",
            "limit",
            &self.backpressure.lock().expect("metrics lock"),
        );
        let commits = self.commits.lock().expect("metrics lock");
        let per_table: [PerTableCounter; 4] = [
            (
                "gamelake_table_commits_total",
                "Delta commits by table.",
                |c| c.commits as f64,
            ),
            (
                "gamelake_table_commit_errors_total",
                "Failed Delta commits by table (retried).",
                |c| c.errors as f64,
            ),
            (
                "gamelake_table_rows_committed_total",
                "Rows committed by table.",
                |c| c.rows as f64,
            ),
            (
                "gamelake_table_commit_seconds_total",
                "Time spent committing by table.",
                |c| c.seconds,
            ),
        ];
        for (name, help, value) in per_table {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (t, c) in commits.iter() {
                let _ = writeln!(out, "{name}{{table=\"{t}\"}} {}", value(c));
            }
        }
        drop(commits);
        counter(
            &mut out,
            "gamelake_queries_total",
            "SQL queries run.",
            self.queries.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "gamelake_query_errors_total",
            "SQL queries that failed.",
            self.query_errors.load(Ordering::Relaxed),
        );
        let _ = writeln!(out, "# HELP gamelake_query_duration_seconds SQL query time.\n# TYPE gamelake_query_duration_seconds histogram");
        self.query_latency
            .render(&mut out, "gamelake_query_duration_seconds", "");
        if let Some(log) = self.job_runs.get() {
            render_job_runs(&mut out, &log.runs());
        }
        if let Some(rss) = process_rss_bytes() {
            gauge(
                &mut out,
                "gamelake_process_resident_memory_bytes",
                "Resident set size of the process.",
                rss,
            );
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                &mut out,
                "gamelake_process_open_fds",
                "Open file descriptors.",
                fds.count() as u64,
            );
        }
        out
    }
}

/// Resident set size from `/proc/self/statm` (Linux).
pub fn process_rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_the_bucket() {
        let h = Histogram::default();
        assert_eq!(bucket_quantile(&h.buckets(), 0.5), None);
        for ms in [12, 12, 12, 12, 40] {
            h.observe(Duration::from_millis(ms));
        }
        // Four in (10, 15] ms, one in (30, 50] ms.
        let p50 = bucket_quantile(&h.buckets(), 0.5).unwrap();
        assert!((0.010..=0.015).contains(&p50), "{p50}");
        let p99 = bucket_quantile(&h.buckets(), 0.99).unwrap();
        assert!((0.030..=0.050).contains(&p99), "{p99}");
        h.observe(Duration::from_secs(100));
        assert_eq!(bucket_quantile(&h.buckets(), 1.0), Some(30.0));
    }
}
