//! `gamelake import FILE…`: bulk load of existing log files through the same write-ahead log,
//! parser and tables as `POST /v1/logs`, without a server.
//!
//! - A file is plain text, gzip or zstd, told by its first bytes (not its name). Its lines are
//!   cut into bodies of about [`BODY_BYTES`] at line ends; each body is parsed, made durable in
//!   the data dir's write-ahead log (fsync), then committed to its tables like any other.
//! - Nothing is lost: a line that does not parse lands in `bronze.dead_letters` with the reason,
//!   as over HTTP.
//! - No duplicates across a crash: each body carries an idempotency key made of the file's
//!   identity (path, size, modification time) and the body's number, and after each durable
//!   body `imports.json` beside the write-ahead log records how many bodies of the file are
//!   in. An import run again skips those (read, not parsed), and the keys catch a body made
//!   durable just before a crash that the file did not record yet (within
//!   `ingest.idempotency_window_s`).
//! - The write-ahead log is locked while a process has it open: an import refuses to run beside
//!   a `gamelake serve` of the same data dir (send the lines to the server instead).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use gamelake_lake::Lake;

use crate::config::Config;
use crate::jobs::{exit, EXIT_USAGE};
use crate::metrics::Metrics;
use crate::pipeline;
use crate::pipeline::idempotency::{Answer, Begin};

/// Bytes of lines per body: large enough that the fsync per body is a small share, small
/// enough that a body's parsed rows stay a few tens of MiB.
pub const BODY_BYTES: usize = 4 << 20;

/// What one file gave.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    bodies: u64,
    skipped_bodies: u64,
    accepted: u64,
    dead_lettered: u64,
    bytes: u64,
}

/// Name of the record of imported files in the write-ahead log's directory.
pub const IMPORTS_FILE: &str = "imports.json";

/// What an earlier import made durable of a file.
#[derive(Debug, Default, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Imported {
    bodies: u64,
    accepted: u64,
    dead_lettered: u64,
}

impl Imported {
    /// With one more body, answered `a`.
    fn then(self, a: Answer) -> Self {
        Imported {
            bodies: self.bodies + 1,
            accepted: self.accepted + a.accepted as u64,
            dead_lettered: self.dead_lettered + a.dead_lettered as u64,
        }
    }
}

impl Counts {
    fn add(&mut self, a: Answer) {
        self.accepted += a.accepted as u64;
        self.dead_lettered += a.dead_lettered as u64;
    }

    fn merge(&mut self, c: Counts) {
        self.bodies += c.bodies;
        self.skipped_bodies += c.skipped_bodies;
        self.accepted += c.accepted;
        self.dead_lettered += c.dead_lettered;
        self.bytes += c.bytes;
    }
}

/// `imports.json`: file identity → [`Imported`], rewritten (by rename) after each body.
struct Imports {
    path: PathBuf,
    files: std::collections::BTreeMap<String, Imported>,
}

impl Imports {
    fn open(wal_dir: &Path) -> anyhow::Result<Self> {
        let path = wal_dir.join(IMPORTS_FILE);
        let files = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| format!("reading `{}`", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(e) => return Err(e).with_context(|| format!("reading `{}`", path.display())),
        };
        Ok(Self { path, files })
    }

    fn get(&self, identity: &str) -> Imported {
        self.files.get(identity).copied().unwrap_or_default()
    }

    fn set(&mut self, identity: &str, imported: Imported) -> anyhow::Result<()> {
        self.files.insert(identity.to_string(), imported);
        let tmp = self.path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec(&self.files)?)
            .and_then(|()| std::fs::rename(&tmp, &self.path))
            .with_context(|| format!("writing `{}`", self.path.display()))
    }
}

/// Imports `files` into the data dir of `cfg`, then commits every line to its tables.
pub async fn run(cfg: Config, files: &[PathBuf], source: &str) -> anyhow::Result<()> {
    if files.is_empty() {
        return Err(exit(EXIT_USAGE, "name at least one file to import"));
    }
    let mut identities = Vec::new();
    for f in files {
        let identity = identity(f)
            .map_err(|e| exit(EXIT_USAGE, format!("cannot read `{}`: {e}", f.display())))?;
        identities.push(identity);
    }
    let lake = Lake::open(&cfg.data_dir)
        .with_context(|| format!("opening the storage root `{}`", cfg.data_dir))?;
    let metrics = Arc::new(Metrics::default());
    // Recovery first: what an earlier import or server left in the log reaches its tables.
    let (pipeline, task, _) = pipeline::start(&cfg, lake, metrics).await?;
    let mut imports = Imports::open(&cfg.wal_dir)?;
    let started = Instant::now();
    let mut total = Counts::default();
    let mut result = Ok(());
    for (file, identity) in files.iter().zip(&identities) {
        match import_file(&pipeline, &mut imports, file, identity, source).await {
            Ok(c) => {
                println!(
                    "{}: {} lines accepted, {} dead-lettered, {:.1} MiB in {} bodies{}",
                    file.display(),
                    c.accepted,
                    c.dead_lettered,
                    c.bytes as f64 / (1 << 20) as f64,
                    c.bodies,
                    match c.skipped_bodies {
                        0 => String::new(),
                        n => format!(" ({n} already imported, skipped)"),
                    }
                );
                total.merge(c);
            }
            Err(e) => {
                result = Err(e.context(format!("importing `{}`", file.display())));
                break;
            }
        }
    }
    // What is durable is committed to the tables, also after a failed file.
    pipeline.close();
    task.join().await.context("committing the imported lines")?;
    result?;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "imported {} files: {} lines accepted, {} dead-lettered, {:.1} MiB in {:.1} s ({:.0} lines/s), committed",
        files.len(),
        total.accepted,
        total.dead_lettered,
        total.bytes as f64 / (1 << 20) as f64,
        secs,
        (total.accepted + total.dead_lettered) as f64 / secs.max(1e-3),
    );
    Ok(())
}

/// The file's absolute path, size and modification time (ns since the epoch): the key of its
/// record in `imports.json` and the prefix of its bodies' idempotency keys. Written out, not
/// hashed: it is kept across releases, and std's hashers are not stable across them.
fn identity(path: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    std::fs::File::open(path)?;
    let modified = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let path = std::fs::canonicalize(path)?;
    Ok(format!("{}:{}:{modified}", path.display(), meta.len()))
}

/// The file's lines, gzip and zstd undone.
fn open_lines(path: &Path) -> std::io::Result<Box<dyn BufRead + Send>> {
    let mut file = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let head = file.fill_buf()?;
    let reader: Box<dyn Read + Send> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(file))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(file)?)
    } else {
        Box::new(file)
    };
    Ok(Box::new(BufReader::with_capacity(1 << 20, reader)))
}

/// Reads the file on a thread of its own and sends its bodies (whole lines, about
/// [`BODY_BYTES`] each); at most two wait.
fn read_bodies(path: PathBuf) -> tokio::sync::mpsc::Receiver<std::io::Result<Bytes>> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    std::thread::spawn(move || {
        let mut lines = match open_lines(&path) {
            Ok(l) => l,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        loop {
            let mut body = Vec::with_capacity(BODY_BYTES + (64 << 10));
            while body.len() < BODY_BYTES {
                match lines.read_until(b'\n', &mut body) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        let _ = tx.blocking_send(Err(e));
                        return;
                    }
                }
            }
            if body.is_empty() || tx.blocking_send(Ok(Bytes::from(body))).is_err() {
                return;
            }
        }
    });
    rx
}

async fn import_file(
    pipeline: &pipeline::Pipeline,
    imports: &mut Imports,
    path: &Path,
    identity: &str,
    source: &str,
) -> anyhow::Result<Counts> {
    let mut counts = Counts::default();
    let mut done = imports.get(identity);
    counts.accepted = done.accepted;
    counts.dead_lettered = done.dead_lettered;
    let mut bodies = read_bodies(path.to_path_buf());
    let mut n = 0u64;
    while let Some(body) = bodies.recv().await {
        let body = body.context("reading the file")?;
        let key = format!("import:{identity}:{n}");
        n += 1;
        counts.bodies += 1;
        counts.bytes += body.len() as u64;
        if n <= done.bodies {
            counts.skipped_bodies += 1;
            continue;
        }
        match pipeline.idempotency.begin(source, &key, now_ms()) {
            Begin::New => {}
            Begin::Replay(answer) => {
                counts.skipped_bodies += 1;
                counts.add(answer);
                done = done.then(answer);
                imports.set(identity, done)?;
                continue;
            }
            Begin::InFlight => anyhow::bail!("body {key} is being imported by this process twice"),
        }
        let answer = submit(pipeline, source, &key, body).await;
        match answer {
            Ok(a) => {
                pipeline.idempotency.finish(source, &key, now_ms(), a);
                counts.add(a);
                done = done.then(a);
                imports.set(identity, done)?;
            }
            Err(e) => {
                pipeline.idempotency.abort(source, &key);
                return Err(e);
            }
        }
    }
    Ok(counts)
}

/// Parses a body and makes it durable, waiting while the tables' commits are behind (the
/// limits that make the server answer 503).
async fn submit(
    pipeline: &pipeline::Pipeline,
    source: &str,
    key: &str,
    body: Bytes,
) -> anyhow::Result<Answer> {
    while pipeline.overloaded().is_some() {
        if pipeline.failed() {
            anyhow::bail!("the write-ahead log failed");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(pipeline.ingest(source, Some(key), body).await?)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
