//! Scheduled SQL jobs and table maintenance: the EMR + Airflow part of a game data lake.
//!
//! ```text
//! jobs/*.sql ──► Jobs (registry) ──► scheduler::plan(runs, source rows, now) ──► Due builds
//!                                                                                  │
//!   kpi views over silver ◄── Runner::attempt ◄────────────────────────────────────┘
//!          │                       │
//!          └── job SQL (:date …) ──┴──► gold.<job>, one partition replaced per commit
//!                                  └──► RunLog (job_runs.jsonl) ──► system.job_runs, `jobs history`
//! ```
//!
//! - [`spec`]: a job file (header + SQL) and its partitions and parameters.
//! - [`cron`]: cron schedules in a time zone.
//! - [`kpi`]: the `kpi.*` views that map a game's field names to the KPI roles.
//! - [`registry`]: the shipped jobs and the jobs folder.
//! - [`runner`]: one build of one partition.
//! - [`runs`]: the run log.
//! - [`scheduler`]: what is due (pure) and the loop that runs it.
//! - [`maintenance`]: compaction, checkpoints, vacuum, retention.

pub mod cron;
pub mod kpi;
pub mod maintenance;
pub mod registry;
pub mod runner;
pub mod runs;
pub mod scheduler;
pub mod spec;

pub use kpi::KpiConfig;
pub use maintenance::{Maintenance, MaintenanceConfig, Task};
pub use registry::Jobs;
pub use runner::{KpiSchema, Runner};
pub use runs::{RunLog, RunRecord, RunStatus, Trigger};
pub use scheduler::{Clock, ManualClock, Settings, SystemClock};
pub use spec::{JobSpec, Partition};
