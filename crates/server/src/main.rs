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
    /// List tables, or describe one (`silver.item`).
    Tables {
        /// `list` (default) or `describe`.
        #[arg(default_value = "list")]
        action: String,
        /// The table to describe.
        name: Option<String>,
        #[arg(long, default_value = "./gamelake-data")]
        data_dir: String,
    },
    /// Send synthetic game logs at a target rate and report acknowledged rates and latency.
    Loadgen(LoadgenArgs),
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
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
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
    #[arg(long, conflicts_with = "zstd")]
    gzip: bool,
    #[arg(long)]
    zstd: bool,
    /// API key.
    #[arg(long, env = "GAMELAKE_KEY")]
    key: Option<String>,
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
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    step_duration: Duration,
    /// With `--find-max`: rate factor between steps.
    #[arg(long, default_value_t = 1.25)]
    step_factor: f64,
    /// With `--find-max`: halvings of the gap between the last sustained and the first
    /// failed rate.
    #[arg(long, default_value_t = 2)]
    refine: u32,
    /// With `--find-max`: p99 acknowledgement latency a sustained step stays within.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    max_p99: Duration,
    /// Write the lines to `--out` instead of sending them.
    #[arg(long, requires = "out")]
    dry_run: bool,
    #[arg(long)]
    out: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30s, 2m or 1h"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("`{s}`: unit must be ms, s, m or h")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GAMELAKE_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,deltalake=warn,deltalake_core=warn,datafusion=warn,buoyant_kernel=warn,buoyant_kernel_engine=warn")
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
        let mut buf = Vec::with_capacity(total * 320);
        let now = chrono::Utc::now().timestamp_millis();
        g.body(total, now, &mut buf);
        std::fs::write(&out, buf).with_context(|| format!("writing `{}`", out.display()))?;
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
            data_dir,
        } => {
            let lake = gamelake_lake::Lake::open(&data_dir)?;
            match action.as_str() {
                "list" => gamelake::tables::run(&lake, None).await,
                "describe" => {
                    let name = name.context(
                        "`gamelake tables describe` needs a table name, e.g. `silver.item`",
                    )?;
                    gamelake::tables::run(&lake, Some(&name)).await
                }
                other => anyhow::bail!("unknown action `{other}`: use `list` or `describe NAME`"),
            }
        }
        Command::Loadgen(args) => loadgen(args).await,
    }
}

fn main() {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    if let Err(e) = runtime.block_on(main_async(cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
