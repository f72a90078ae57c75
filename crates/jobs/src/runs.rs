//! The run log: one JSON line per state change of a run (started, then finished), appended to
//! `<state_dir>/job_runs.jsonl`. It is what `system.job_runs` and `gamelake jobs history` show,
//! and what the scheduler reads to know which partitions are built. Maintenance runs are in it
//! too, under the job names `compact`, `checkpoint`, `vacuum` and `retention`.
//!
//! Several processes may append (a `serve` and a `gamelake jobs run` beside it): each line is
//! one `write` to a file opened for appending, and readers re-read the file when it grew.

use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    TimedOut,
    /// The process ended while the run was going on.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::TimedOut => "timed_out",
            RunStatus::Interrupted => "interrupted",
        }
    }

    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            RunStatus::Failed | RunStatus::TimedOut | RunStatus::Interrupted
        )
    }
}

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Its cron time came (or came while the server was down: catch-up).
    Schedule,
    /// An earlier attempt failed.
    Retry,
    /// Rows arrived in a source partition after the last build.
    LateData,
    /// An upstream job rebuilt the partition.
    Upstream,
    /// A `depends_on_past` job: an earlier day was rebuilt after this one was built, or this
    /// day was never built and a later one reads it.
    Past,
    /// `gamelake jobs run`.
    Manual,
    /// `gamelake jobs backfill`.
    Backfill,
    /// Table maintenance.
    Maintenance,
}

impl Trigger {
    pub fn as_str(&self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Retry => "retry",
            Trigger::LateData => "late_data",
            Trigger::Upstream => "upstream",
            Trigger::Past => "past",
            Trigger::Manual => "manual",
            Trigger::Backfill => "backfill",
            Trigger::Maintenance => "maintenance",
        }
    }
}

/// One run of a job for one partition (or of a maintenance task for one table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub run_id: String,
    pub job: String,
    /// `2026-11-28`, `2026-11-28T05`, or a table name for maintenance.
    pub partition: String,
    pub trigger: Trigger,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub status: RunStatus,
    pub started: DateTime<Utc>,
    pub ended: Option<DateTime<Utc>>,
    pub rows: Option<u64>,
    /// The Delta version the run committed.
    pub version: Option<u64>,
    pub error: Option<String>,
    /// Rows of the job's source tables in the partition's day when the build started (a later,
    /// larger count means late data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_rows: Option<u64>,
    /// For an hourly partition: rows of the files that may hold its hour when the build started
    /// ([`crate::runner::DayRows`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_hour_rows: Option<u64>,
    /// What a maintenance run did, e.g. `files 120 -> 3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The process that ran it.
    pub pid: u32,
}

impl RunRecord {
    pub fn start(
        job: &str,
        partition: &str,
        trigger: Trigger,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Self {
        Self {
            run_id: new_run_id(now),
            job: job.to_string(),
            partition: partition.to_string(),
            trigger,
            attempt,
            status: RunStatus::Running,
            started: now,
            ended: None,
            rows: None,
            version: None,
            error: None,
            input_rows: None,
            input_hour_rows: None,
            detail: None,
            pid: std::process::id(),
        }
    }
}

fn new_run_id(now: DateTime<Utc>) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEQ: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}-{}",
        now.format("%Y%m%dT%H%M%S"),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// The run log, shared by the runner, the scheduler and `system.job_runs`.
#[derive(Clone)]
pub struct RunLog {
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    path: PathBuf,
    /// Bytes of the file read so far.
    read: u64,
    runs: Vec<RunRecord>,
    by_id: HashMap<String, usize>,
}

impl std::fmt::Debug for RunLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.inner.lock().expect("run log lock");
        f.debug_struct("RunLog")
            .field("path", &inner.path)
            .field("runs", &inner.runs.len())
            .finish()
    }
}

impl RunLog {
    /// Opens (creating the directory) and reads the log.
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let log = Self {
            inner: Arc::new(Mutex::new(Inner {
                path: dir.join("job_runs.jsonl"),
                read: 0,
                runs: Vec::new(),
                by_id: HashMap::new(),
            })),
        };
        log.reload()?;
        Ok(log)
    }

    /// Reads lines other processes appended since the last read.
    pub fn reload(&self) -> std::io::Result<()> {
        let mut inner = self.inner.lock().expect("run log lock");
        let file = match std::fs::File::open(&inner.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len <= inner.read {
            return Ok(());
        }
        let mut reader = std::io::BufReader::new(file);
        std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(inner.read))?;
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line)?;
            // A line still being written (no newline yet) is read next time.
            if n == 0 || !line.ends_with('\n') {
                break;
            }
            inner.read += n as u64;
            match serde_json::from_str::<RunRecord>(line.trim_end()) {
                Ok(r) => inner.upsert(r),
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable line of the run log"),
            }
        }
        Ok(())
    }

    /// Appends a record (a new run, or a new state of one).
    pub fn record(&self, r: &RunRecord) -> std::io::Result<()> {
        let mut line = serde_json::to_string(r).expect("run records serialise");
        line.push('\n');
        let mut inner = self.inner.lock().expect("run log lock");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&inner.path)?;
        file.write_all(line.as_bytes())?;
        drop(file);
        inner.upsert(r.clone());
        Ok(())
    }

    /// Every run, oldest first, in its latest state.
    pub fn runs(&self) -> Vec<RunRecord> {
        let _ = self.reload();
        self.inner.lock().expect("run log lock").runs.clone()
    }

    /// Marks runs of this host's earlier processes that never finished as interrupted.
    pub fn close_abandoned(&self, now: DateTime<Utc>) -> std::io::Result<usize> {
        let me = std::process::id();
        let stale: Vec<RunRecord> = self
            .runs()
            .into_iter()
            .filter(|r| r.status == RunStatus::Running && r.pid != me && !pid_alive(r.pid))
            .collect();
        for mut r in stale.iter().cloned() {
            r.status = RunStatus::Interrupted;
            r.ended = Some(now);
            r.error = Some("the process running it ended before it finished".into());
            self.record(&r)?;
        }
        Ok(stale.len())
    }
}

impl Inner {
    fn upsert(&mut self, r: RunRecord) {
        match self.by_id.get(&r.run_id) {
            Some(&i) => self.runs[i] = r,
            None => {
                self.by_id.insert(r.run_id.clone(), self.runs.len());
                self.runs.push(r);
            }
        }
    }
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_collapse_by_run_and_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = RunLog::open(dir.path()).unwrap();
        let now = Utc::now();
        let mut r = RunRecord::start("dau", "2026-11-28", Trigger::Manual, 1, now);
        log.record(&r).unwrap();
        assert_eq!(log.runs()[0].status, RunStatus::Running);
        r.status = RunStatus::Succeeded;
        r.rows = Some(7);
        log.record(&r).unwrap();
        let other = RunLog::open(dir.path()).unwrap();
        let runs = other.runs();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].rows, Some(7));
        // A second handle sees what the first appends later.
        let r2 = RunRecord::start("dau", "2026-11-29", Trigger::Manual, 1, now);
        log.record(&r2).unwrap();
        assert_eq!(other.runs().len(), 2);
    }

    #[test]
    fn runs_of_dead_processes_become_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let log = RunLog::open(dir.path()).unwrap();
        let mut r = RunRecord::start("dau", "2026-11-28", Trigger::Schedule, 1, Utc::now());
        r.pid = u32::MAX - 1; // no such process
        log.record(&r).unwrap();
        let mine = RunRecord::start("dau", "2026-11-29", Trigger::Schedule, 1, Utc::now());
        log.record(&mine).unwrap();
        assert_eq!(log.close_abandoned(Utc::now()).unwrap(), 1);
        let runs = log.runs();
        assert_eq!(runs[0].status, RunStatus::Interrupted);
        assert_eq!(runs[1].status, RunStatus::Running);
    }
}
