//! Configuration: `gamelake.toml` → `GAMELAKE_*` environment overrides → command-line flags →
//! validated [`Config`]. Runtime code sees only the validated value.
//!
//! Environment variables map to keys by lower-casing the name after `GAMELAKE_` and reading
//! `__` as a section separator: `GAMELAKE_DATA_DIR` sets `data_dir`,
//! `GAMELAKE_INGEST__MAX_BODY_BYTES` sets `ingest.max_body_bytes`. Values are read as TOML
//! scalars (numbers, booleans) and otherwise as text.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

/// The prefix of environment variables that override the file.
pub const ENV_PREFIX: &str = "GAMELAKE_";

/// `GAMELAKE_*` variables that are not configuration keys: the log filter, the client key of
/// `sql`/`loadgen`, and the test and CI helpers.
const ENV_NOT_CONFIG: [&str; 2] = ["GAMELAKE_LOG", "GAMELAKE_KEY"];
const ENV_NOT_CONFIG_PREFIXES: [&str; 2] = ["GAMELAKE_TEST_", "GAMELAKE_CI_"];

/// Role of an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// May send logs.
    Ingest,
    /// May run queries and read tables.
    Query,
    /// May do everything.
    Admin,
}

/// One API key.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    /// Name of the key, stored in `_source` of the rows it sends.
    pub id: String,
    /// The secret clients send as `Authorization: Bearer <secret>` or `X-Api-Key`.
    pub secret: String,
    pub role: Role,
}

/// How the game writes its logs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GameConfig {
    /// IANA time zone of local timestamps and of `event_date`. Default `Asia/Seoul`.
    pub time_zone: String,
    /// Field holding the event type in object lines. Default `code`.
    pub code_field: String,
    /// Fields tried in order for the event time of object lines.
    pub time_fields: Vec<String>,
}

impl Default for GameConfig {
    fn default() -> Self {
        let p = gamelake_parse::ParseConfig::default();
        Self {
            time_zone: p.time_zone,
            code_field: p.code_field,
            time_fields: p.time_fields,
        }
    }
}

/// Limits of `POST /v1/logs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Largest request body as sent (compressed or not), bytes. Default 16 MiB.
    pub max_body_bytes: usize,
    /// Largest body after decompression, bytes. Default 64 MiB.
    pub max_decompressed_bytes: usize,
    /// Lines longer than this become dead letters (`line_too_long`), bytes. Default 1 MiB.
    pub max_line_bytes: usize,
    /// How long an `Idempotency-Key` is remembered, seconds. Default 600.
    pub idempotency_window_s: u64,
    /// Bytes of bodies accepted but not yet committed to the tables before ingest answers 503.
    /// Default 256 MiB.
    pub max_uncommitted_bytes: usize,
    /// Memory that rows waiting for their table commit may hold (Arrow batches queued or
    /// buffered, Parquet pages of open files) before ingest answers 503. Input bytes alone do
    /// not bound it: parsed rows take about twice their input's bytes until encoded. Default
    /// 256 MiB.
    pub max_buffered_bytes: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 << 20,
            max_decompressed_bytes: 64 << 20,
            max_line_bytes: 1 << 20,
            idempotency_window_s: 600,
            max_uncommitted_bytes: 256 << 20,
            max_buffered_bytes: 256 << 20,
        }
    }
}

/// Table commits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LakeConfig {
    /// A table commits what it buffered at least this often, milliseconds. Default 1000.
    pub commit_interval_ms: u64,
    /// A table commits early once it buffered this many rows. Default 500 000.
    pub commit_max_rows: usize,
}

impl Default for LakeConfig {
    fn default() -> Self {
        Self {
            commit_interval_ms: 1000,
            commit_max_rows: 500_000,
        }
    }
}

/// The Postgres wire port.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PgConfig {
    /// PEM certificate chain; with `tls_key`, clients may connect with TLS (`sslmode=require`).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

/// Guard rails of SQL queries (HTTP, Postgres wire, dashboard).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// A query running longer is cancelled with an error naming this key, milliseconds.
    /// Default 300 000 (5 minutes).
    pub timeout_ms: u64,
    /// Memory all running queries may hold together, MiB; a query needing more spills to disk
    /// where its operators can, else fails with an error (the server goes on ingesting).
    /// Default 2048.
    pub memory_limit_mb: u64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout_ms: 300_000,
            memory_limit_mb: 2048,
        }
    }
}

/// The write-ahead log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    /// Directory of the log; default `<data_dir>/_wal` (must be a local disk).
    pub dir: Option<PathBuf>,
    /// Segment size, bytes. Default 64 MiB.
    pub segment_bytes: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            dir: None,
            segment_bytes: 64 << 20,
        }
    }
}

/// Scheduled jobs (`[jobs]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Run the scheduler inside `serve`. Default true.
    pub enabled: bool,
    /// Folder of job files (`*.sql`); default `<data_dir>/jobs` (beside `_wal` when `data_dir`
    /// is remote). A file named like a shipped job replaces it.
    pub dir: Option<PathBuf>,
    /// Local folder of the run log; default `_jobs` beside the WAL folder.
    pub state_dir: Option<PathBuf>,
    /// Ship the KPI jobs of shared/KPI.md. Default true.
    pub builtin: bool,
    /// Jobs not to run (`["ccu"]`).
    pub disabled: Vec<String>,
    /// Builds at a time. Default 2.
    pub concurrency: usize,
    /// Missed cron times this far back run at start, days. Default 3.
    pub catch_up_days: u32,
    /// Built partitions of this many past days are rebuilt when late rows arrive. Default 7.
    pub late_data_days: u32,
    /// How often the scheduler looks, seconds. Default 30.
    pub tick_s: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            state_dir: None,
            builtin: true,
            disabled: Vec::new(),
            concurrency: 2,
            catch_up_days: 3,
            late_data_days: 7,
            tick_s: 30,
        }
    }
}

/// The file as written (every key optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    /// Storage root: a directory or an `object_store` URL. Default `./gamelake-data`.
    pub data_dir: String,
    /// HTTP listen address. Default `127.0.0.1:8080`.
    pub http_addr: String,
    /// Postgres wire listen address. Default `127.0.0.1:5439`.
    pub pg_addr: String,
    pub game: GameConfig,
    pub ingest: IngestConfig,
    pub lake: LakeConfig,
    pub query: QueryConfig,
    pub pg: PgConfig,
    pub wal: WalConfig,
    pub jobs: JobsConfig,
    pub kpi: gamelake_jobs::KpiConfig,
    pub maintenance: gamelake_jobs::MaintenanceConfig,
    pub keys: Vec<KeyConfig>,
}

impl Default for ConfigFile {
    fn default() -> Self {
        Self {
            data_dir: "./gamelake-data".into(),
            http_addr: "127.0.0.1:8080".into(),
            pg_addr: "127.0.0.1:5439".into(),
            game: GameConfig::default(),
            ingest: IngestConfig::default(),
            lake: LakeConfig::default(),
            query: QueryConfig::default(),
            pg: PgConfig::default(),
            wal: WalConfig::default(),
            jobs: JobsConfig::default(),
            kpi: gamelake_jobs::KpiConfig::default(),
            maintenance: gamelake_jobs::MaintenanceConfig::default(),
            keys: Vec::new(),
        }
    }
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: String,
    pub http_addr: SocketAddr,
    pub pg_addr: SocketAddr,
    pub wal_dir: PathBuf,
    pub parse: gamelake_parse::ParseConfig,
    pub ingest: IngestConfig,
    pub lake: LakeConfig,
    pub query: QueryConfig,
    pub pg: PgConfig,
    pub wal: WalConfig,
    pub jobs: JobsConfig,
    /// Where the job files are.
    pub jobs_dir: PathBuf,
    /// Where the run log is.
    pub jobs_state_dir: PathBuf,
    pub kpi: gamelake_jobs::KpiConfig,
    pub maintenance: gamelake_jobs::MaintenanceConfig,
    pub keys: Vec<KeyConfig>,
}

impl Config {
    /// The jobs: shipped ones and the jobs folder, checked.
    pub fn load_jobs(&self) -> anyhow::Result<gamelake_jobs::Jobs> {
        let tz: chrono_tz::Tz = self
            .parse
            .time_zone
            .parse()
            .map_err(|_| anyhow::anyhow!("`game.time_zone` is not an IANA time zone"))?;
        gamelake_jobs::Jobs::load(
            Some(&self.jobs_dir),
            self.jobs.builtin,
            &self.jobs.disabled,
            tz,
        )
        .map_err(|e| anyhow::anyhow!("jobs (`jobs.dir` = {}): {e}", self.jobs_dir.display()))
    }
}

/// Flags that override file and environment.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub data_dir: Option<String>,
    pub http_addr: Option<String>,
    pub pg_addr: Option<String>,
}

/// Reads the file (if any), applies `env` and `flags`, and validates.
pub fn load(
    path: Option<&Path>,
    env: &HashMap<String, String>,
    flags: &Overrides,
) -> anyhow::Result<Config> {
    let mut doc: toml::Table = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("reading config `{}`", p.display()))?;
            text.parse()
                .with_context(|| format!("config `{}` is not valid TOML", p.display()))?
        }
        None => toml::Table::new(),
    };
    apply_env(&mut doc, env)?;
    let set = |doc: &mut toml::Table, key: &str, v: &Option<String>| {
        if let Some(v) = v {
            doc.insert(key.into(), toml::Value::String(v.clone()));
        }
    };
    set(&mut doc, "data_dir", &flags.data_dir);
    set(&mut doc, "http_addr", &flags.http_addr);
    set(&mut doc, "pg_addr", &flags.pg_addr);
    let file: ConfigFile =
        serde_path_to_error::deserialize(toml::Value::Table(doc)).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            if path.is_empty() || path == "." {
                anyhow::anyhow!("invalid configuration: {}", inner.message())
            } else {
                anyhow::anyhow!("invalid configuration key `{path}`: {}", inner.message())
            }
        })?;
    validate(file)
}

fn apply_env(doc: &mut toml::Table, env: &HashMap<String, String>) -> anyhow::Result<()> {
    let mut vars: Vec<(&String, &String)> = env
        .iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .filter(|(k, _)| {
            !ENV_NOT_CONFIG.contains(&k.as_str())
                && !ENV_NOT_CONFIG_PREFIXES.iter().any(|p| k.starts_with(p))
        })
        .collect();
    vars.sort();
    for (name, value) in vars {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .to_lowercase()
            .split("__")
            .map(str::to_string)
            .collect();
        if path.iter().any(|p| p.is_empty()) {
            bail!("environment variable `{name}` does not name a configuration key");
        }
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .filter(|v| !v.is_table())
            .unwrap_or_else(|| toml::Value::String(value.clone()));
        let mut table = &mut *doc;
        for section in &path[..path.len() - 1] {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry.as_table_mut().with_context(|| {
                format!("environment variable `{name}`: `{section}` is not a section")
            })?;
        }
        table.insert(path[path.len() - 1].clone(), parsed);
    }
    Ok(())
}

fn validate(file: ConfigFile) -> anyhow::Result<Config> {
    let http_addr: SocketAddr = file.http_addr.parse().with_context(|| {
        format!(
            "`http_addr` = `{}` is not HOST:PORT with an IP address",
            file.http_addr
        )
    })?;
    let pg_addr: SocketAddr = file.pg_addr.parse().with_context(|| {
        format!(
            "`pg_addr` = `{}` is not HOST:PORT with an IP address",
            file.pg_addr
        )
    })?;
    gamelake_common::GameClock::new(&file.game.time_zone)
        .map_err(|e| anyhow::anyhow!("`game.time_zone`: {e}"))?;
    if file.game.time_fields.is_empty() {
        bail!("`game.time_fields` must name at least one field");
    }
    if file.lake.commit_interval_ms == 0 {
        bail!("`lake.commit_interval_ms` must be positive");
    }
    match (&file.pg.tls_cert, &file.pg.tls_key) {
        (Some(_), None) => bail!("`pg.tls_cert` is set without `pg.tls_key`"),
        (None, Some(_)) => bail!("`pg.tls_key` is set without `pg.tls_cert`"),
        _ => {}
    }
    if file.query.timeout_ms == 0 {
        bail!("`query.timeout_ms` must be positive");
    }
    if file.query.memory_limit_mb == 0 {
        bail!("`query.memory_limit_mb` must be positive");
    }
    if file.ingest.max_uncommitted_bytes == 0 {
        bail!("`ingest.max_uncommitted_bytes` must be positive");
    }
    if file.ingest.max_buffered_bytes == 0 {
        bail!("`ingest.max_buffered_bytes` must be positive");
    }
    if file.lake.commit_max_rows == 0 {
        bail!("`lake.commit_max_rows` must be positive");
    }
    if file.ingest.max_decompressed_bytes < file.ingest.max_line_bytes {
        bail!(
            "`ingest.max_decompressed_bytes` ({}) must be at least `ingest.max_line_bytes` ({})",
            file.ingest.max_decompressed_bytes,
            file.ingest.max_line_bytes
        );
    }
    let mut seen = std::collections::HashSet::new();
    for key in &file.keys {
        if key.secret.len() < 16 {
            bail!(
                "`keys` entry `{}`: `secret` must be at least 16 characters",
                key.id
            );
        }
        if !seen.insert(key.secret.clone()) {
            bail!("`keys` entry `{}`: `secret` is used by another key", key.id);
        }
    }
    for (key, addr, risk) in [
        ("http_addr", http_addr, "write and read"),
        ("pg_addr", pg_addr, "read"),
    ] {
        if file.keys.is_empty() && !addr.ip().is_loopback() {
            bail!(
                "refusing to listen on `{key}` = {addr} without API keys: anyone could {risk} the data; \
                 add `[[keys]]` to the config or listen on 127.0.0.1"
            );
        }
    }
    let wal_dir = match &file.wal.dir {
        Some(d) => d.clone(),
        None => {
            if file.data_dir.contains("://") && !file.data_dir.starts_with("file://") {
                bail!(
                    "`wal.dir` must be set to a local directory when `data_dir` is remote (`{}`)",
                    file.data_dir
                );
            }
            PathBuf::from(file.data_dir.trim_start_matches("file://")).join("_wal")
        }
    };
    let local_root = wal_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let jobs_dir = file
        .jobs
        .dir
        .clone()
        .unwrap_or_else(|| local_root.join("jobs"));
    let jobs_state_dir = file
        .jobs
        .state_dir
        .clone()
        .unwrap_or_else(|| local_root.join("_jobs"));
    if file.jobs.concurrency == 0 {
        bail!("`jobs.concurrency` must be at least 1");
    }
    if file.jobs.tick_s == 0 {
        bail!("`jobs.tick_s` must be positive");
    }
    file.kpi.validate().map_err(|e| anyhow::anyhow!(e))?;
    file.maintenance
        .validate()
        .map_err(|e| anyhow::anyhow!(e))?;
    let parse = gamelake_parse::ParseConfig {
        time_zone: file.game.time_zone.clone(),
        code_field: file.game.code_field.clone(),
        time_fields: file.game.time_fields.clone(),
        max_line_bytes: file.ingest.max_line_bytes,
    };
    Ok(Config {
        data_dir: file.data_dir,
        http_addr,
        pg_addr,
        wal_dir,
        parse,
        ingest: file.ingest,
        lake: file.lake,
        query: file.query,
        pg: file.pg,
        wal: file.wal,
        jobs: file.jobs,
        jobs_dir,
        jobs_state_dir,
        kpi: file.kpi,
        maintenance: file.maintenance,
        keys: file.keys,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
        f
    }

    /// The example in README.md is a valid configuration.
    #[test]
    fn readme_example_loads() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("```toml\n").expect("README has a toml block") + 8;
        let end = start + readme[start..].find("```").unwrap();
        let f = write(&readme[start..end]);
        let c = load(Some(f.path()), &HashMap::new(), &Overrides::default()).unwrap();
        assert_eq!(c.maintenance.retention_days["bronze.raw_logs"], 30);
        assert_eq!(c.kpi.amount, ["price_krw", "priceKrw"]);
        assert!(c.jobs.enabled);
    }

    #[test]
    fn bad_job_and_maintenance_keys_are_named() {
        for (text, needle) in [
            ("[jobs]\nconcurrency = 0\n", "`jobs.concurrency`"),
            (
                "[maintenance]\ncompact_schedule = \"every hour\"\n",
                "`maintenance.compact_schedule`",
            ),
            (
                "[maintenance]\nvacuum_retention_hours = 0\n",
                "`maintenance.vacuum_retention_hours`",
            ),
            ("[kpi]\naccount = []\n", "`kpi.account`"),
            (
                "[ingest]\nmax_buffered_bytes = 0\n",
                "`ingest.max_buffered_bytes`",
            ),
            ("[kpi]\naccounts = [\"x\"]\n", "`kpi.accounts`"),
        ] {
            let f = write(text);
            let e = load(Some(f.path()), &HashMap::new(), &Overrides::default()).unwrap_err();
            assert!(format!("{e:#}").contains(needle), "{text}: {e:#}");
        }
    }

    #[test]
    fn full_example() {
        let f = write(
            r#"
data_dir = "/tmp/gl"
http_addr = "0.0.0.0:9000"
[game]
time_zone = "UTC"
code_field = "type"
time_fields = ["ts"]
[ingest]
max_body_bytes = 1000
max_line_bytes = 100
[lake]
commit_interval_ms = 250
[wal]
segment_bytes = 4096
[[keys]]
id = "servers"
secret = "0123456789abcdef"
role = "ingest"
"#,
        );
        let c = load(Some(f.path()), &HashMap::new(), &Overrides::default()).unwrap();
        assert_eq!(c.http_addr.port(), 9000);
        assert_eq!(c.parse.time_zone, "UTC");
        assert_eq!(c.parse.code_field, "type");
        assert_eq!(c.ingest.max_body_bytes, 1000);
        assert_eq!(c.lake.commit_interval_ms, 250);
        assert_eq!(c.wal_dir, PathBuf::from("/tmp/gl/_wal"));
        assert_eq!(c.keys[0].role, Role::Ingest);
    }

    #[test]
    fn minimal_file_gives_defaults() {
        let f = write("");
        let c = load(Some(f.path()), &HashMap::new(), &Overrides::default()).unwrap();
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:8080");
        assert_eq!(c.pg_addr.port(), 5439);
        assert_eq!(c.parse.time_zone, "Asia/Seoul");
        assert_eq!(c.lake.commit_interval_ms, 1000);
        assert_eq!(c.data_dir, "./gamelake-data");
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let f = write("data_dir = \"/a\"\n[lake]\ncommit_interval_ms = 5\n");
        let env = HashMap::from([
            ("GAMELAKE_DATA_DIR".to_string(), "/b".to_string()),
            (
                "GAMELAKE_LAKE__COMMIT_INTERVAL_MS".to_string(),
                "7".to_string(),
            ),
            (
                "GAMELAKE_GAME__TIME_ZONE".to_string(),
                "Europe/Paris".to_string(),
            ),
            ("OTHER".to_string(), "x".to_string()),
        ]);
        let c = load(Some(f.path()), &env, &Overrides::default()).unwrap();
        assert_eq!(c.data_dir, "/b");
        assert_eq!(c.lake.commit_interval_ms, 7);
        assert_eq!(c.parse.time_zone, "Europe/Paris");
        let flags = Overrides {
            data_dir: Some("/c".into()),
            ..Overrides::default()
        };
        assert_eq!(load(Some(f.path()), &env, &flags).unwrap().data_dir, "/c");
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases = [
            ("[lake]\ncommit_intervall_ms = 5\n", "commit_intervall_ms"),
            ("[game]\ntime_zone = \"Mars/Olympus\"\n", "game.time_zone"),
            ("http_addr = \"localhost\"\n", "http_addr"),
            ("http_addr = \"0.0.0.0:8080\"\n", "without API keys"),
            (
                "[lake]\ncommit_interval_ms = \"soon\"\n",
                "commit_interval_ms",
            ),
        ];
        for (text, needle) in cases {
            let f = write(text);
            let err = format!(
                "{:#}",
                load(Some(f.path()), &HashMap::new(), &Overrides::default()).unwrap_err()
            );
            assert!(err.contains(needle), "{text}: {err}");
        }
        let env = HashMap::from([("GAMELAKE_NOPE".to_string(), "1".to_string())]);
        let err = format!("{:#}", load(None, &env, &Overrides::default()).unwrap_err());
        assert!(err.contains("nope"), "{err}");
    }
}
