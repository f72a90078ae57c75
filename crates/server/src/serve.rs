//! `gamelake serve` and `gamelake demo`: the whole pipeline on an already-bound listener, until
//! the shutdown future resolves; then drain: stop accepting, commit what the WAL holds, return.

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use gamelake_lake::{Lake, QueryEngine};
use tokio::net::TcpListener;

use crate::config::Config;
use crate::http::{self, AppState};
use crate::metrics::Metrics;

/// Built-in synthetic traffic for `gamelake demo`.
#[derive(Debug, Clone)]
pub struct DemoTraffic {
    pub events_per_s: u64,
}

/// Runs the server until `shutdown` resolves.
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
    demo: Option<DemoTraffic>,
) -> anyhow::Result<()> {
    let lake = Lake::open(&cfg.data_dir)
        .with_context(|| format!("opening the storage root `{}`", cfg.data_dir))?;
    // A bad job file stops the start, naming the file and line.
    let jobs = cfg.load_jobs()?;
    let runs = gamelake_jobs::RunLog::open(&cfg.jobs_state_dir).with_context(|| {
        format!(
            "opening the run log in `jobs.state_dir` = {}",
            cfg.jobs_state_dir.display()
        )
    })?;
    let metrics = Arc::new(Metrics::default());
    let _ = metrics.job_runs.set(runs.clone());
    let cell = Arc::new(OnceLock::new());
    let live = Arc::new(crate::live::Live::default());
    let query = QueryEngine::with_memory_limit(
        lake.clone(),
        Some((cfg.query.memory_limit_mb as usize) << 20),
    )
    .shared();
    let queries = Arc::new(crate::system::QueryLog::default());
    query.register_schema(
        "system",
        Arc::new(crate::system::SystemSchema {
            lake: lake.clone(),
            metrics: metrics.clone(),
            queries: queries.clone(),
            runs: runs.clone(),
        }),
    );
    query.register_schema(
        "kpi",
        Arc::new(gamelake_jobs::KpiSchema::new(lake.clone(), cfg.kpi.clone())),
    );
    crate::pg::setup_catalog(query.context(), gamelake_lake::query::CATALOG)?;
    let pg_listener = TcpListener::bind(cfg.pg_addr)
        .await
        .with_context(|| format!("listening on `pg_addr` = {}", cfg.pg_addr))?;
    let pg_addr = pg_listener
        .local_addr()
        .context("reading the Postgres listen address")?;
    let tls = match (&cfg.pg.tls_cert, &cfg.pg.tls_key) {
        (Some(cert), Some(key)) => Some(crate::pg::tls_acceptor(cert, key)?),
        _ => None,
    };
    let pg = tokio::spawn(crate::pg::serve(
        pg_listener,
        query.clone(),
        cfg.keys.clone(),
        tls,
        Duration::from_millis(cfg.query.timeout_ms),
        queries.clone(),
    ));
    let sampler = tokio::spawn(live.clone().run(metrics.clone()));
    let lake_figures = tokio::spawn(live.clone().refresh_lake(
        metrics.clone(),
        lake.clone(),
        query.clone(),
        cfg.parse.time_zone.clone(),
        cfg.kpi.clone(),
    ));
    let state = AppState {
        config: Arc::new(cfg.clone()),
        metrics: metrics.clone(),
        pipeline: cell.clone(),
        query,
        lake: lake.clone(),
        live,
        queries,
    };
    let addr = listener
        .local_addr()
        .context("reading the listen address")?;
    // Serve health and readiness (503) while recovery runs.
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, http::app(state))
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await
    });
    let lake_for_jobs = lake.clone();
    let (pipeline, task, report) = crate::pipeline::start(&cfg, lake, metrics).await?;
    tracing::info!(
        replayed = report.wal_records_replayed,
        torn_bytes = report.torn_bytes_truncated,
        tables = report.tables_opened,
        "recovery done"
    );
    let _ = cell.set(pipeline.clone());
    let scheduler = cfg.jobs.enabled.then(|| {
        let scheduler = crate::jobs::scheduler(&cfg, lake_for_jobs, jobs, runs);
        jobs_runtime(cfg.jobs.concurrency)
            .spawn(scheduler.run(Duration::from_secs(cfg.jobs.tick_s), std::future::pending()))
    });
    let traffic = demo.map(|d| {
        print_demo_banner(&addr.to_string(), &d, &cfg);
        tokio::spawn(demo_traffic(
            addr.to_string(),
            d,
            cfg.keys.first().map(|k| k.secret.clone()),
        ))
    });
    println!("gamelake ready http={addr} pg={pg_addr}");
    shutdown.await;
    let _ = stop_tx.send(());
    server
        .await
        .context("joining the HTTP server")?
        .context("serving HTTP")?;
    if let Some(t) = traffic {
        t.abort();
    }
    sampler.abort();
    lake_figures.abort();
    pg.abort();
    if let Some(s) = scheduler {
        s.abort();
    }
    tracing::info!("draining: committing what the write-ahead log holds");
    pipeline.close();
    task.join().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

fn print_demo_banner(addr: &str, demo: &DemoTraffic, cfg: &Config) {
    println!(
        "gamelake demo: synthetic MMORPG traffic at {} events/s (about 2 % malformed on purpose)\n\
         \n  dashboard   http://{addr}/\
         \n  send logs   curl --data-binary @game.log http://{addr}/v1/logs\
         \n  query       curl -s http://{addr}/v1/query -d '{{\"sql\": \"SELECT count(*) FROM silver.item_acquire\"}}'\
         \n              gamelake sql --server http://{addr} \"SELECT count(*) FROM silver.combat\"\
         \n              gamelake sql --data-dir {} \"SELECT reason, count(*) FROM bronze.dead_letters GROUP BY reason\"\
         \n              psql -h {} -p {} -U analyst gamelake\
         \n  tables      curl -s http://{addr}/v1/tables\
         \n  metrics     curl -s http://{addr}/metrics\n",
        demo.events_per_s,
        cfg.data_dir,
        cfg.pg_addr.ip(),
        cfg.pg_addr.port()
    );
}

async fn demo_traffic(addr: String, demo: DemoTraffic, key: Option<String>) {
    // Wait for the server to take requests.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut seed = 1u64;
    loop {
        let cfg = gamelake_loadgen::LoadConfig {
            rate: demo.events_per_s,
            duration: Duration::from_secs(60),
            concurrency: 8,
            batch: (demo.events_per_s / 10).clamp(1, 1000) as usize,
            generator: gamelake_loadgen::GenConfig {
                seed,
                malformed: 0.02,
                ..Default::default()
            },
            key: key.clone(),
            retries: 3,
            ..gamelake_loadgen::LoadConfig::new(format!("http://{addr}"))
        };
        if let Err(e) = gamelake_loadgen::run(cfg).await {
            tracing::warn!(error = %e, "demo traffic stopped; restarting");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        seed += 1;
    }
}

/// The runtime scheduled maintenance (compaction, checkpoints, vacuum) does its work on, ten
/// steps below the process's priority: below the table commits (five), which must keep up with
/// ingest. Compaction rewrites the day's files while ingest runs at full speed; at the
/// process's priority it took CPU the commits needed, their backlog of parsed bodies grew to
/// the backpressure limit, and the RSS with it (BENCHMARKS.md, issue 3, fourteenth session).
/// Unlike a job build, nothing waits on maintenance; `gamelake tables compact` by hand runs in
/// its own process at its own priority.
pub(crate) fn maintenance_runtime() -> tokio::runtime::Handle {
    const MAINTENANCE_NICE: i32 = 10;
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    // One task at a time: a table load holding a blocking thread and the reads it waits for.
    crate::stage_runtime(
        &RUNTIME,
        "gamelake-maint",
        8,
        Duration::from_secs(60),
        MAINTENANCE_NICE,
    )
}

/// The runtime the scheduler and its job builds run on. A start-up catch-up runs a hundred
/// builds while ingest runs at full speed; on the HTTP runtime their object-store reads fanned
/// out over a growing blocking pool, and the threads' heaps kept 150–250 MiB of freed memory
/// after the builds ended (BENCHMARKS.md, "RSS at the maximum"). Here they get two workers and
/// a small blocking pool of long-lived threads, whose heaps are reused from build to build.
///
/// The pool's size follows `builds` (`jobs.concurrency`). Loading a Delta table holds one
/// blocking thread while the kernel waits for file reads that each need another, so the pool
/// must outnumber the loads that can run at once: one per build (maintenance takes a build's
/// slot) and the scheduler's tick, plus one for luck. With a fixed four, eight builds filled it
/// with waiting loads and nothing ran again (e2e `many_builds_at_once_all_finish`). Four more
/// threads serve the reads.
fn jobs_runtime(builds: usize) -> tokio::runtime::Handle {
    /// Builds run at the process's priority. Nice values weigh against every thread of the
    /// machine, not only this process's (unless the service has a cgroup of its own): at 10,
    /// builds starved behind a browser and a compiler on a busy 2-core machine, and the
    /// dashboard test's first build did not finish in 30 s.
    const JOBS_NICE: i32 = 0;
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    crate::stage_runtime(
        &RUNTIME,
        "gamelake-jobs",
        builds + 2 + 4,
        Duration::from_secs(600),
        JOBS_NICE,
    )
}
