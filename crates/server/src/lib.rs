//! The `gamelake` binary's library: configuration, the pipeline, the HTTP API and the commands.
//!
//! # Layout
//! - [`config`]: file, environment and flags into a validated [`config::Config`].
//! - [`pipeline`]: WAL, sequencing, table writers, recovery.
//! - [`http`]: the routes of `DESIGN.md`.
//! - [`live`]: the dashboard's per-second feed and live KPIs.
//! - [`pg`]: the Postgres wire protocol.
//! - [`system`]: the `system` schema (tables, ingest, dead letters, queries).
//! - [`serve`]: wiring it all on a listener with a shutdown future.
//! - [`sql`], [`tables`]: the `sql` and `tables` commands.

pub mod config;
pub mod http;
pub mod import;
pub mod jobs;
pub mod live;
pub mod metrics;
pub mod pg;
pub mod pg_compat;
pub mod pg_guard;
pub mod pipeline;
pub mod serve;
pub mod sql;
pub mod system;
pub mod tables;

/// A multi-threaded tokio runtime of a stage's own (two workers named `name`, at most
/// `max_blocking` blocking threads kept alive `keep_alive`), built on first use in `cell` and
/// never dropped, so the OS time-slices the stage against the HTTP workers and its allocations
/// stay on its own few threads. Its threads run `nice` steps below the process's priority, for
/// a stage with seconds of slack (table commits), while a request waits for its acknowledgement
/// on the HTTP workers and the WAL thread.
pub(crate) fn stage_runtime(
    cell: &'static std::sync::OnceLock<tokio::runtime::Runtime>,
    name: &str,
    max_blocking: usize,
    keep_alive: std::time::Duration,
    nice: i32,
) -> tokio::runtime::Handle {
    cell.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(max_blocking)
            .thread_keep_alive(keep_alive)
            .thread_name(name)
            .on_thread_start(move || lower_priority(nice))
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("starting the `{name}` runtime: {e}"))
    })
    .handle()
    .clone()
}

/// Sets the calling thread's scheduling priority `nice` steps below the process's, that is its
/// main thread's (Linux schedules threads one by one: `setpriority` on a thread id changes that
/// thread only). Not below the thread's own: a thread inherits its creator's nice value, and a
/// stage's blocking threads are started by its already lowered workers, so they would go twice
/// as low. Failure leaves the priority as it was.
#[allow(unsafe_code)]
fn lower_priority(nice: i32) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: gettid has no preconditions; setpriority only changes this thread's nice value.
    unsafe {
        let process = libc::getpriority(libc::PRIO_PROCESS, libc::getpid() as libc::id_t);
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, process + nice);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    #[allow(unsafe_code)]
    fn thread_nice() -> i32 {
        // SAFETY: reads this thread's nice value.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) }
    }

    #[test]
    fn stage_threads_run_below_the_callers_priority() {
        static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
        let rt = super::stage_runtime(
            &RUNTIME,
            "nice-test",
            2,
            std::time::Duration::from_secs(1),
            5,
        );
        let here = thread_nice();
        let (worker, blocking) = rt.block_on(async {
            let worker = tokio::spawn(async { thread_nice() }).await.unwrap();
            // Started by a worker, which is already lower: still `nice` below the process.
            let blocking = tokio::spawn(tokio::task::spawn_blocking(thread_nice))
                .await
                .unwrap()
                .unwrap();
            (worker, blocking)
        });
        // Nice values stop at 19.
        assert_eq!(worker, (here + 5).min(19));
        assert_eq!(blocking, (here + 5).min(19));
    }
}
