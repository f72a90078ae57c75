//! The `gamelake` command: parses arguments, sets up logging, and calls the library.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use gamelake::config::{self, Overrides};
use gamelake::serve::DemoTraffic;
use gamelake::sql::{OutputFormat, Target};
use gamelake_loadgen::sender::Compression;

// The hot path builds many short-lived buffers; mimalloc is markedly faster than glibc malloc
// there (it was 15 % of the server's CPU under load, see BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "gamelake",
    version,
    about = "A game-log lakehouse in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ServerArgs {
    /// Configuration file (TOML).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Storage root: a directory or an object-store URL.
    #[arg(long)]
    data_dir: Option<String>,
    /// HTTP listen address (ingest, query, dashboard, metrics).
    #[arg(long)]
    http_addr: Option<String>,
    /// Postgres wire listen address (psql, JDBC, BI tools).
    #[arg(long)]
    pg_addr: Option<String>,
    /// Log as JSON lines (for log shippers).
    #[arg(long)]
    log_json: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole pipeline: ingest, processing, tables, query endpoints, dashboard.
    Serve(ServerArgs),
    /// `serve` with built-in synthetic game traffic.
    Demo {
        #[command(flatten)]
        server: ServerArgs,
        /// Synthetic events per second.
        #[arg(long, default_value_t = 2000)]
        rate: u64,
    },
    /// Run SQL over a data dir or a running server; a REPL without QUERY.
    Sql {
        /// The statement; read statements ending in `;` from stdin when absent.
        query: Option<String>,
        /// Query the tables of this storage root directly.
        #[arg(long, conflicts_with = "server")]
        data_dir: Option<String>,
        /// Query a running server, e.g. `http://127.0.0.1:8080`.
        #[arg(long)]
        server: Option<String>,
        /// API key for `--server`.
        #[arg(long, env = "GAMELAKE_KEY")]
        key: Option<String>,
        #[arg(long, value_enum, default_value_t = OutputFormat::Table)]
        format: OutputFormat,
    },
    /// List tables, describe one (`silver.item`), or compact or vacuum them.
    Tables {
        /// `list` (default), `describe NAME`, `compact [NAME]` (bin-pack small files, then
        /// checkpoint) or `vacuum [NAME]` (expire old partitions, delete unreferenced files).
        #[arg(default_value = "list")]
        action: String,
        /// The table (`silver.item`); all tables when absent.
        name: Option<String>,
        #[command(flatten)]
        cfg: ConfigArgs,
        /// `vacuum`: delete files unreferenced for this long (default
        /// `maintenance.vacuum_retention_hours`).
        #[arg(long, value_parser = gamelake_common::parse_duration)]
        retention: Option<Duration>,
        /// `vacuum`: allow a retention under one hour (files of writes in progress may go).
        #[arg(long)]
        force: bool,
    },
    /// Scheduled SQL jobs: list, run, backfill, history.
    Jobs {
        #[command(flatten)]
        cfg: ConfigArgs,
        #[command(subcommand)]
        action: JobsAction,
    },
    /// Send synthetic game logs at a target rate and report acknowledged rates and latency.
    Loadgen(LoadgenArgs),
    /// Bulk load existing log files (plain, gzip or zstd) into the data dir, without a server.
    Import {
        /// The files; each is read whole, its lines parsed like `POST /v1/logs` bodies.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        cfg: ConfigArgs,
        /// The `source` recorded with the lines in `bronze.raw_logs`.
        #[arg(long, default_value = "import")]
        source: String,
    },
}

/// Where the configuration and the data are (for commands that do not serve).
#[derive(Args, Clone)]
struct ConfigArgs {
    /// Configuration file (TOML).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Storage root: a directory or an object-store URL.
    #[arg(long, global = true)]
    data_dir: Option<String>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<config::Config> {
        let env: HashMap<String, String> = std::env::vars().collect();
        let flags = Overrides {
            data_dir: self.data_dir.clone(),
            ..Overrides::default()
        };
        config::load(self.config.as_deref(), &env, &flags).map_err(|e| {
            gamelake::jobs::Exit {
                code: gamelake::jobs::EXIT_USAGE,
                message: format!("{e:#}"),
            }
            .into()
        })
    }
}

#[derive(Subcommand)]
enum JobsAction {
    /// The jobs, their schedules, dependencies and last runs.
    List,
    /// Build one partition: `--date 2026-11-28` (every hour of it for hourly jobs) or
    /// `--date 2026-11-28T05` (one hour).
    Run {
        name: String,
        #[arg(long)]
        date: String,
        /// Build even if a job it depends on has not built the partition.
        #[arg(long)]
        ignore_dependencies: bool,
        /// Fail at the first error instead of retrying as the job's header says.
        #[arg(long)]
        no_retries: bool,
    },
    /// Build every partition from `--from` to `--to` (days, inclusive), oldest first.
    Backfill {
        name: String,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        /// Also rebuild the jobs that depend on it, after each partition.
        #[arg(long)]
        with_downstream: bool,
    },
    /// Runs of jobs and maintenance, newest last.
    History {
        name: Option<String>,
        #[arg(long, default_value_t = 30)]
        limit: usize,
        /// One JSON object per run.
        #[arg(long)]
        json: bool,
    },
    /// The `kpi.*` views the jobs read, as SQL over the current tables.
    Views,
    /// The SQL a build of one partition runs, parameters filled in.
    Sql {
        name: String,
        #[arg(long)]
        date: String,
    },
}

#[derive(Args)]
struct LoadgenArgs {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    target: String,
    /// Path the bodies are posted to (another system's ingest path to measure a peer).
    #[arg(long, default_value = "/v1/logs")]
    path: String,
    /// Offered events per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// How long to run: `30s`, `2m`, `1h`.
    #[arg(long, default_value = "10s", value_parser = gamelake_common::parse_duration)]
    duration: Duration,
    /// Requests in flight at most.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Lines per request body.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// kv, ndjson, bare or mixed.
    #[arg(long, default_value = "mixed")]
    format: gamelake_loadgen::Format,
    /// Share of malformed lines, 0 to 1.
    #[arg(long, default_value_t = 0.0)]
    malformed: f64,
    /// Compress each body with gzip (`Content-Encoding: gzip`).
    #[arg(long, conflicts_with = "zstd")]
    gzip: bool,
    /// Compress each body with zstd (`Content-Encoding: zstd`).
    #[arg(long)]
    zstd: bool,
    /// API key.
    #[arg(long, env = "GAMELAKE_KEY")]
    key: Option<String>,
    /// Seed of the generator: the same seed and options give the same events, their times aside.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Distinct accounts.
    #[arg(long, default_value_t = 100_000)]
    accounts: u64,
    /// Write the logId of every event of every acknowledged body to this file.
    #[arg(long)]
    ack_log: Option<PathBuf>,
    /// Write the summary as JSON to this file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Retries of a body on 429/503/connection errors, with one Idempotency-Key.
    #[arg(long, default_value_t = 0)]
    retries: u32,
    /// Generate this many bodies up front and send them round-robin (takes the generator's CPU
    /// out of throughput runs; event ids repeat, so not with `--ack-log`).
    #[arg(long, default_value_t = 0)]
    pregenerate: usize,
    /// Send a marker event a second and report how long after its 2xx SQL sees it.
    #[arg(long)]
    freshness: bool,
    /// Step the rate up from `--rate` until a step is not sustained (acked < 99 % of offered
    /// or p99 above `--max-p99`) and report the highest sustained rate.
    #[arg(long)]
    find_max: bool,
    /// With `--find-max`: length of each step.
    #[arg(long, default_value = "20s", value_parser = gamelake_common::parse_duration)]
    step_duration: Duration,
    /// With `--find-max`: rate factor between steps.
    #[arg(long, default_value_t = 1.25)]
    step_factor: f64,
    /// With `--find-max`: halvings of the gap between the last sustained and the first
    /// failed rate.
    #[arg(long, default_value_t = 2)]
    refine: u32,
    /// With `--find-max`: p99 acknowledgement latency a sustained step stays within.
    #[arg(long, default_value = "500ms", value_parser = gamelake_common::parse_duration)]
    max_p99: Duration,
    /// Write the lines to `--out` instead of sending them.
    #[arg(long, requires = "out")]
    dry_run: bool,
    /// File the lines of `--dry-run` are written to.
    #[arg(long)]
    out: Option<PathBuf>,
    /// With `--dry-run`: spread the events' times evenly over this long before now (e.g.
    /// `7d` of history for the jobs benchmark) instead of stamping them all now.
    #[arg(long, value_parser = gamelake_common::parse_duration)]
    spread: Option<Duration>,
}

/// Warnings only (the command prints its own progress), unless `GAMELAKE_LOG` says otherwise.
/// delta-rs warns once per file written that it keeps no statistics of a binary column (the
/// bronze `line`, by design); that is left out as in `serve`.
fn init_cli_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GAMELAKE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("warn,deltalake_core::writer::stats=error")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GAMELAKE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,deltalake=warn,deltalake_core=warn,deltalake_core::writer::stats=error,datafusion=warn,buoyant_kernel=warn,buoyant_kernel_engine=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutdown requested");
}

async fn serve(args: ServerArgs, demo: Option<DemoTraffic>) -> anyhow::Result<()> {
    init_tracing(args.log_json);
    let env: HashMap<String, String> = std::env::vars().collect();
    let flags = Overrides {
        data_dir: args.data_dir,
        http_addr: args.http_addr,
        pg_addr: args.pg_addr,
    };
    let cfg = config::load(args.config.as_deref(), &env, &flags)?;
    let listener = tokio::net::TcpListener::bind(cfg.http_addr)
        .await
        .with_context(|| format!("listening on `http_addr` = {}", cfg.http_addr))?;
    gamelake::serve::run(cfg, listener, shutdown_signal(), demo).await
}

async fn loadgen(a: LoadgenArgs) -> anyhow::Result<()> {
    let generator = gamelake_loadgen::GenConfig {
        seed: a.seed,
        format: a.format,
        malformed: a.malformed,
        accounts: a.accounts,
        ..Default::default()
    };
    if a.dry_run {
        let out = a.out.expect("clap requires --out with --dry-run");
        let mut g = gamelake_loadgen::Generator::new(generator);
        let total = (a.rate as f64 * a.duration.as_secs_f64()) as usize;
        let now = chrono::Utc::now().timestamp_millis();
        let span = a.spread.map_or(0, |d| d.as_millis() as i64);
        let file =
            std::fs::File::create(&out).with_context(|| format!("writing `{}`", out.display()))?;
        let mut w = std::io::BufWriter::new(file);
        let mut buf = Vec::with_capacity(1 << 20);
        for i in 0..total {
            let t = now - span + (span as i128 * i as i128 / total.max(1) as i128) as i64;
            g.line(t, &mut buf);
            if buf.len() > (1 << 20) {
                std::io::Write::write_all(&mut w, &buf)?;
                buf.clear();
            }
        }
        std::io::Write::write_all(&mut w, &buf)?;
        std::io::Write::flush(&mut w).with_context(|| format!("writing `{}`", out.display()))?;
        eprintln!("wrote {total} lines to {}", out.display());
        return Ok(());
    }
    let compression = if a.gzip {
        Compression::Gzip
    } else if a.zstd {
        Compression::Zstd
    } else {
        Compression::None
    };
    let cfg = gamelake_loadgen::LoadConfig {
        target: a.target,
        path: a.path,
        rate: a.rate,
        duration: a.duration,
        concurrency: a.concurrency,
        batch: a.batch,
        generator,
        compression,
        key: a.key,
        ack_log: a.ack_log,
        progress: true,
        retries: a.retries,
        pregenerate: a.pregenerate,
        freshness: a.freshness,
    };
    let text = if a.find_max {
        let search = gamelake_loadgen::FindMax {
            start: a.rate,
            factor: a.step_factor,
            refine: a.refine,
            step: a.step_duration,
            max_p99: a.max_p99,
            pause: Duration::from_secs(5),
        };
        serde_json::to_string_pretty(&gamelake_loadgen::find_max(cfg, search).await?)?
    } else {
        serde_json::to_string_pretty(&gamelake_loadgen::run(cfg).await?)?
    };
    println!("{text}");
    if let Some(path) = a.report {
        std::fs::write(&path, &text).with_context(|| format!("writing `{}`", path.display()))?;
    }
    Ok(())
}

async fn main_async(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve(args, None).await,
        Command::Demo { server, rate } => {
            serve(server, Some(DemoTraffic { events_per_s: rate })).await
        }
        Command::Sql {
            query,
            data_dir,
            server,
            key,
            format,
        } => {
            let target = match server {
                Some(url) => Target::Server { url, key },
                None => Target::DataDir(data_dir.unwrap_or_else(|| "./gamelake-data".into())),
            };
            gamelake::sql::run(target, query, format).await
        }
        Command::Tables {
            action,
            name,
            cfg,
            retention,
            force,
        } => {
            let cfg = cfg.load()?;
            match action.as_str() {
                "list" => gamelake::tables::run(&gamelake_lake::Lake::open(&cfg.data_dir)?, None).await,
                "describe" => {
                    let name = name.context(
                        "`gamelake tables describe` needs a table name, e.g. `silver.item`",
                    )?;
                    gamelake::tables::run(&gamelake_lake::Lake::open(&cfg.data_dir)?, Some(&name)).await
                }
                "compact" | "vacuum" => {
                    init_cli_tracing();
                    if retention.is_some_and(|r| r < Duration::from_secs(3600)) && !force {
                        return Err(gamelake::jobs::Exit {
                            code: gamelake::jobs::EXIT_USAGE,
                            message: "--retention under 1h deletes files of writes still in progress; add --force if nothing writes to the table".into(),
                        }
                        .into());
                    }
                    let task = if action == "compact" {
                        gamelake_jobs::Task::Compact
                    } else {
                        gamelake_jobs::Task::Vacuum
                    };
                    let ctx = gamelake::jobs::Context::open(cfg)?;
                    gamelake::jobs::maintain(&ctx, task, name.as_deref(), retention).await
                }
                other => anyhow::bail!(
                    "unknown action `{other}`: use `list`, `describe NAME`, `compact [NAME]` or `vacuum [NAME]`"
                ),
            }
        }
        Command::Jobs { cfg, action } => {
            init_cli_tracing();
            let ctx = gamelake::jobs::Context::open(cfg.load()?)?;
            match action {
                JobsAction::List => gamelake::jobs::list(&ctx),
                JobsAction::Run {
                    name,
                    date,
                    ignore_dependencies,
                    no_retries,
                } => {
                    gamelake::jobs::run(&ctx, &name, &date, ignore_dependencies, !no_retries).await
                }
                JobsAction::Backfill {
                    name,
                    from,
                    to,
                    with_downstream,
                } => gamelake::jobs::backfill(&ctx, &name, &from, &to, with_downstream).await,
                JobsAction::History { name, limit, json } => {
                    gamelake::jobs::history(&ctx, name.as_deref(), limit, json)
                }
                JobsAction::Views => gamelake::jobs::views(&ctx).await,
                JobsAction::Sql { name, date } => gamelake::jobs::show_sql(&ctx, &name, &date),
            }
        }
        Command::Loadgen(args) => loadgen(args).await,
        Command::Import { files, cfg, source } => {
            init_cli_tracing();
            gamelake::import::run(cfg.load()?, &files, &source).await
        }
    }
}

/// Transparent huge pages off for this process. The allocator asks for them on its arenas, and
/// each first touch of a 2 MiB page then zeroes all of it: RSS 100–150 MiB higher at the
/// ingest maximum and about twice as high in job builds, with twice their system time. Ingest
/// loses 0–5 % of its maximum without them (BENCHMARKS.md, seventh session).
#[allow(unsafe_code)]
fn without_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl with PR_SET_THP_DISABLE only sets a flag of this process's memory map.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

/// The allocator's purge delay: how long memory freed stays mapped before it is returned to the
/// OS, unless `MIMALLOC_PURGE_DELAY` sets it. mimalloc 3 waits 1 000 ms (times 10 for its
/// arenas), so that each burst of buffers (a commit's Parquet files, a compaction's row groups)
/// stays resident for up to ten seconds after it is freed. At 450 000 events/s with compaction
/// every minute, 250 ms took the RSS peak from 1 391 to 1 083 MiB for 2 % more CPU; 10 ms cost
/// 7 % of the events acknowledged (BENCHMARKS.md, fifteenth session).
const PURGE_DELAY_MS: std::ffi::c_long = 250;

/// The purge delay of the batch commands (`jobs`, `tables`, `sql`): never. They end when their
/// work is done, and a job's build frees and allocates hash tables of tens of MiB query after
/// query. Returning them to the OS in between (unmapping, then faulting the pages in again)
/// doubled `jobs backfill dau`'s system time, 0.44–0.54 s against 0.85–0.99 s, and cost 9 % of
/// its wall time (BENCHMARKS.md, issue 5, nineteenth session).
const BATCH_PURGE_DELAY_MS: std::ffi::c_long = -1;

#[allow(unsafe_code)]
fn allocator_purge_delay(delay_ms: std::ffi::c_long) {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // `mi_option_purge_delay` of mimalloc 3's `mimalloc.h`; libmimalloc-sys does not export
    // the constant, so the version is checked before the option is set.
    const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;
    unsafe extern "C" {
        fn mi_version() -> std::ffi::c_int;
        fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    }
    // SAFETY: both are plain C functions of the linked mimalloc; the option is a number the
    // allocator reads each time it schedules a purge.
    unsafe {
        if (30_000..40_000).contains(&mi_version()) {
            mi_option_set(MI_OPTION_PURGE_DELAY, delay_ms);
        }
    }
}

/// The commands that print results end quietly when their reader goes away (`gamelake sql …
/// | head`), as Unix tools do: Rust's runtime ignores SIGPIPE, which turns a closed pipe into
/// an error or a panic at the next write. The servers keep ignoring it (their sockets are
/// written with `MSG_NOSIGNAL` anyway).
#[allow(unsafe_code)]
fn default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: restores the default action of one signal before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() {
    without_huge_pages();
    let cli = Cli::parse();
    allocator_purge_delay(match cli.command {
        Command::Jobs { .. } | Command::Tables { .. } | Command::Sql { .. } => BATCH_PURGE_DELAY_MS,
        _ => PURGE_DELAY_MS,
    });
    if !matches!(cli.command, Command::Serve(_) | Command::Demo { .. }) {
        default_sigpipe();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    if let Err(e) = runtime.block_on(main_async(cli)) {
        eprintln!("error: {e:#}");
        let code = e
            .downcast_ref::<gamelake::jobs::Exit>()
            .map_or(1, |x| x.code);
        std::process::exit(code);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_is_set_on_the_allocator_in_use() {
        unsafe extern "C" {
            fn mi_option_get(option: std::ffi::c_int) -> std::ffi::c_long;
        }
        // SAFETY: reads one of the linked mimalloc's options.
        let get = || unsafe { mi_option_get(15) };
        if let Some(set) = std::env::var_os("MIMALLOC_PURGE_DELAY") {
            let set: std::ffi::c_long = set.to_str().unwrap().parse().unwrap();
            assert_eq!(get(), set, "option 15 is not the purge delay");
            return;
        }
        // mimalloc 3's default purge delay: option 15 is the purge delay before it is set.
        assert_eq!(get(), 1000, "option 15 is not mimalloc 3's purge delay");
        super::allocator_purge_delay(super::PURGE_DELAY_MS);
        assert_eq!(get(), super::PURGE_DELAY_MS);
        super::allocator_purge_delay(super::BATCH_PURGE_DELAY_MS);
        assert_eq!(get(), -1);
    }
}
