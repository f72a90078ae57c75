//! Starting the pipeline (recovery included), submitting bodies, and shutting down.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use gamelake_common::{SCHEMA_BRONZE, SCHEMA_SILVER, TABLE_DEAD_LETTERS, TABLE_RAW_LOGS};
use gamelake_lake::{DeltaSink, Lake, TableId, TableSink};
use gamelake_parse::{BodyParser, IngestMeta, ParseConfig, ParsedBody, SchemaHints};
use gamelake_wal::{Wal, WalConfig};
use tokio::sync::{mpsc, oneshot};

use super::idempotency::{Answer, IdempotencyStore};
use super::record;
use super::sequencer::{Sequencer, WalMsg};
use super::tables::{dispatcher, hints_of, partition_column, Dispatch, TablesShared, Tracker};
use crate::config::Config;
use crate::metrics::Metrics;

/// Why a body could not be made durable.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("{0}")]
    Wal(String),
}

/// What recovery did at start.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    pub wal_records_replayed: u64,
    pub torn_bytes_truncated: u64,
    pub tables_opened: usize,
}

/// The running pipeline, shared by the HTTP handlers.
pub struct Pipeline {
    tx: RwLock<Option<std::sync::mpsc::Sender<WalMsg>>>,
    shared: Arc<TablesShared>,
    pub metrics: Arc<Metrics>,
    pub idempotency: Arc<IdempotencyStore>,
    pub parse_config: ParseConfig,
    max_uncommitted_bytes: u64,
    max_buffered_bytes: u64,
    failed: Arc<AtomicBool>,
}

/// What to await for a clean stop, after [`Pipeline::close`].
pub struct PipelineTask {
    sequencer: std::thread::JoinHandle<Result<(), String>>,
    dispatcher: tokio::task::JoinHandle<()>,
    trimmer: tokio::task::JoinHandle<()>,
}

impl PipelineTask {
    /// Waits until every durable body is committed to its tables.
    pub async fn join(self) -> anyhow::Result<()> {
        self.trimmer.abort();
        let seq = tokio::task::spawn_blocking(move || self.sequencer.join())
            .await
            .context("joining the sequencer")?;
        self.dispatcher.await.context("joining the table writers")?;
        match seq {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(anyhow::anyhow!(e)),
            Err(_) => Err(anyhow::anyhow!("the write-ahead log thread panicked")),
        }
    }
}

thread_local! {
    static PARSER: std::cell::RefCell<Option<BodyParser>> = const { std::cell::RefCell::new(None) };
}

impl Pipeline {
    /// Parses a body on the calling thread (each thread keeps its own parser).
    pub fn parse(&self, body: &[u8], meta: &IngestMeta) -> ParsedBody {
        let hints = self.hints();
        PARSER.with(|cell| {
            let mut slot = cell.borrow_mut();
            let parser = match slot.as_mut() {
                Some(p) if p.config().time_zone == self.parse_config.time_zone => p,
                _ => slot.insert(
                    BodyParser::new(self.parse_config.clone())
                        .expect("time zone validated with the config"),
                ),
            };
            parser.parse_body(body, meta, &hints)
        })
    }

    pub fn hints(&self) -> Arc<SchemaHints> {
        self.shared.hints.read().expect("hints lock").clone()
    }

    /// The limit that ingest is over, if any, by its config key (answer 503): input bytes not
    /// committed to every table, or memory held by rows waiting for their commit.
    pub fn overloaded(&self) -> Option<&'static str> {
        let m = &self.metrics;
        if m.uncommitted_bytes.load(Ordering::Relaxed) > self.max_uncommitted_bytes {
            Some("ingest.max_uncommitted_bytes")
        } else if m.buffered_bytes.load(Ordering::Relaxed) > self.max_buffered_bytes {
            Some("ingest.max_buffered_bytes")
        } else {
            None
        }
    }

    pub fn failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// Makes a parsed body durable; returns its WAL offset once fsync'ed. `parts` is the
    /// record's payload in pieces ([`record::parts`]).
    pub async fn submit(
        &self,
        parts: [Bytes; 2],
        parsed: ParsedBody,
        bytes: u64,
    ) -> Result<u64, SubmitError> {
        let (reply, answer) = oneshot::channel();
        let (accepted, dead_reasons) = (parsed.accepted as u64, parsed.dead_reasons.clone());
        {
            let guard = self.tx.read().expect("sender lock");
            let Some(tx) = guard.as_ref() else {
                return Err(SubmitError::ShuttingDown);
            };
            self.metrics
                .uncommitted_bytes
                .fetch_add(bytes, Ordering::Relaxed);
            if tx
                .send(WalMsg::Append {
                    parts,
                    parsed,
                    bytes,
                    reply,
                })
                .is_err()
            {
                self.metrics
                    .uncommitted_bytes
                    .fetch_sub(bytes, Ordering::Relaxed);
                return Err(SubmitError::ShuttingDown);
            }
        }
        match answer.await {
            Ok(Ok(offset)) => {
                // Durable: count the body and its lines.
                let m = &self.metrics;
                m.ingest_bodies.fetch_add(1, Ordering::Relaxed);
                m.ingest_bytes.fetch_add(bytes, Ordering::Relaxed);
                m.ingest_lines_accepted
                    .fetch_add(accepted, Ordering::Relaxed);
                if !dead_reasons.is_empty() {
                    let mut dead = m.ingest_lines_dead.lock().expect("metrics lock");
                    let mut dead_bytes = m.dead_letter_bytes.lock().expect("metrics lock");
                    for (reason, n, bytes) in dead_reasons {
                        *dead.entry(reason.to_string()).or_default() += n as u64;
                        *dead_bytes.entry(reason.to_string()).or_default() += bytes;
                    }
                }
                Ok(offset)
            }
            Ok(Err(e)) => {
                self.metrics
                    .uncommitted_bytes
                    .fetch_sub(bytes, Ordering::Relaxed);
                self.failed.store(true, Ordering::Relaxed);
                Err(SubmitError::Wal(e))
            }
            Err(_) => {
                self.metrics
                    .uncommitted_bytes
                    .fetch_sub(bytes, Ordering::Relaxed);
                Err(SubmitError::ShuttingDown)
            }
        }
    }

    /// Parses a body of `source` and makes it durable with its idempotency key: what `POST
    /// /v1/logs` and `gamelake import` do with each body. A body without lines is answered
    /// without a record.
    pub async fn ingest(
        &self,
        source: &str,
        key: Option<&str>,
        body: Bytes,
    ) -> Result<Answer, SubmitError> {
        let ingest_time_us = chrono::Utc::now().timestamp_micros();
        let meta = gamelake_parse::IngestMeta {
            ingest_time_us,
            source: source.to_string(),
        };
        let parsed = self.parse(&body, &meta);
        let answer = Answer {
            accepted: parsed.accepted,
            dead_lettered: parsed.dead_lettered,
        };
        if parsed.lines() == 0 {
            return Ok(answer);
        }
        let bytes = body.len() as u64;
        let parts = record::parts(ingest_time_us, source, key, body);
        self.submit(parts, parsed, bytes).await?;
        Ok(answer)
    }

    /// Stops taking bodies; the WAL thread finishes what it has and the tables commit the rest.
    pub fn close(&self) {
        self.tx.write().expect("sender lock").take();
    }

    /// Watermark and per-table offsets, for `system` views and tests.
    pub fn committed_watermark(&self) -> Option<u64> {
        self.shared
            .tracker
            .lock()
            .expect("tracker lock")
            .watermark()
    }
}

/// Opens the WAL and the tables, replays what the tables miss, and starts the threads.
pub async fn start(
    cfg: &Config,
    lake: Lake,
    metrics: Arc<Metrics>,
) -> anyhow::Result<(Arc<Pipeline>, PipelineTask, RecoveryReport)> {
    let wal_dir = cfg.wal_dir.clone();
    let wal_cfg = WalConfig {
        segment_bytes: cfg.wal.segment_bytes,
    };
    let (wal, recovery) = tokio::task::spawn_blocking({
        let dir = wal_dir.clone();
        move || Wal::open(&dir, wal_cfg)
    })
    .await?
    .with_context(|| format!("opening the write-ahead log in `{}`", wal_dir.display()))?;
    let mut report = RecoveryReport {
        torn_bytes_truncated: recovery.truncated_bytes,
        ..Default::default()
    };

    let idempotency = Arc::new(IdempotencyStore::new(cfg.ingest.idempotency_window_s));
    let idempotency_path = wal_dir.join("idempotency.json");
    idempotency
        .load(&idempotency_path)
        .with_context(|| format!("reading `{}`", idempotency_path.display()))?;

    // Open every existing table: their committed offsets decide what replay must re-add.
    let mut sinks: HashMap<TableId, DeltaSink> = HashMap::new();
    let mut ids = vec![
        TableId::new(SCHEMA_BRONZE, TABLE_RAW_LOGS),
        TableId::new(SCHEMA_BRONZE, TABLE_DEAD_LETTERS),
    ];
    for name in lake.list_tables(SCHEMA_SILVER).await? {
        ids.push(TableId::new(SCHEMA_SILVER, name));
    }
    let mut committed_at_start = HashMap::new();
    let mut hints = SchemaHints::new();
    for id in ids {
        let sink = DeltaSink::open(&lake, id.clone(), partition_column(&id))
            .await
            .with_context(|| format!("opening table `{id}`"))?;
        if let Some(offset) = sink.committed_offset() {
            committed_at_start.insert(id.clone(), offset);
        }
        if let (Some(schema), true) = (sink.schema(), id.schema == SCHEMA_SILVER) {
            hints.insert(id.name.clone(), hints_of(&schema));
        }
        if sink.schema().is_some() {
            report.tables_opened += 1;
            sinks.insert(id, sink);
        }
    }
    for (id, offset) in &committed_at_start {
        metrics.update_table(&id.to_string(), |c| c.committed_offset = Some(*offset));
    }

    let shared = Arc::new(TablesShared {
        lake,
        tracker: Mutex::new(Tracker::default()),
        hints: RwLock::new(Arc::new(hints)),
        metrics: metrics.clone(),
        commit_interval: Duration::from_millis(cfg.lake.commit_interval_ms),
        commit_max_rows: cfg.lake.commit_max_rows,
        committed_at_start,
        wal_dir: wal_dir.clone(),
        parse_config: cfg.parse.clone(),
    });
    let (dispatch_tx, dispatch_rx) = mpsc::unbounded_channel::<Dispatch>();
    let dispatcher_task = commit_runtime().spawn(dispatcher(shared.clone(), dispatch_rx, sinks));

    let pipeline = Arc::new(Pipeline {
        tx: RwLock::new(None),
        shared: shared.clone(),
        metrics: metrics.clone(),
        idempotency: idempotency.clone(),
        parse_config: cfg.parse.clone(),
        max_uncommitted_bytes: cfg.ingest.max_uncommitted_bytes as u64,
        max_buffered_bytes: cfg.ingest.max_buffered_bytes as u64,
        failed: Arc::new(AtomicBool::new(false)),
    });

    // Replay every retained record; the dispatcher skips rows their tables already have.
    if recovery.first_offset.is_some() {
        report.wal_records_replayed = replay(&pipeline, &wal_dir, &dispatch_tx).await?;
    }
    metrics
        .wal_next_offset
        .store(wal.next_offset(), Ordering::Relaxed);
    metrics.wal_bytes.store(wal.disk_bytes(), Ordering::Relaxed);
    metrics
        .wal_segments
        .store(wal.segment_count() as u64, Ordering::Relaxed);

    let (tx, rx) = std::sync::mpsc::channel::<WalMsg>();
    let sequencer = Sequencer {
        wal,
        dispatch: dispatch_tx,
        metrics: metrics.clone(),
        idempotency,
        idempotency_path,
    };
    let sequencer = std::thread::Builder::new()
        .name("gamelake-wal".into())
        .spawn(move || sequencer.run(rx))
        .context("starting the write-ahead log thread")?;
    let trimmer = tokio::spawn(trim_loop(shared.clone(), tx.clone()));
    *pipeline.tx.write().expect("sender lock") = Some(tx);
    Ok((
        pipeline,
        PipelineTask {
            sequencer,
            dispatcher: dispatcher_task,
            trimmer,
        },
        report,
    ))
}

async fn replay(
    pipeline: &Arc<Pipeline>,
    wal_dir: &Path,
    dispatch: &mpsc::UnboundedSender<Dispatch>,
) -> anyhow::Result<u64> {
    let pipeline = pipeline.clone();
    let dispatch = dispatch.clone();
    let dir = wal_dir.to_path_buf();
    tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let mut n = 0u64;
        gamelake_wal::replay_from(&dir, 0, |offset, payload| -> anyhow::Result<()> {
            let rec = record::decode(payload)
                .map_err(|e| anyhow::anyhow!("write-ahead log record {offset}: {e}"))?;
            let meta = IngestMeta {
                ingest_time_us: rec.ingest_time_us,
                source: rec.source.to_string(),
            };
            let parsed = pipeline.parse(rec.body, &meta);
            if let Some(key) = rec.idempotency_key {
                let answer = Answer {
                    accepted: parsed.accepted,
                    dead_lettered: parsed.dead_lettered,
                };
                pipeline
                    .idempotency
                    .finish(rec.source, key, rec.ingest_time_us / 1000, answer);
            }
            let bytes = rec.body.len() as u64;
            pipeline
                .metrics
                .uncommitted_bytes
                .fetch_add(bytes, Ordering::Relaxed);
            let _ = dispatch.send(Dispatch {
                offset,
                parsed,
                bytes,
            });
            n += 1;
            Ok(())
        })
        .context("replaying the write-ahead log")??;
        Ok(n)
    })
    .await?
}

/// Every second, lets the WAL drop the segments below the watermark: at 100 MB/s of ingest that
/// is one or two segments, which the WAL keeps as spares to write over (see `gamelake_wal`).
async fn trim_loop(shared: Arc<TablesShared>, tx: std::sync::mpsc::Sender<WalMsg>) {
    let mut last = None;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let w = shared.tracker.lock().expect("tracker lock").watermark();
        if let Some(through) = w.filter(|_| w != last) {
            last = w;
            if tx.send(WalMsg::Trim(through)).is_err() {
                return;
            }
        }
    }
}

/// How far below the HTTP workers the table writers run. A second of all tables' rows is
/// encoded at once, on both cores; at the same priority the requests waiting for their acks
/// were held up for hundreds of milliseconds each time (BENCHMARKS.md, issue 3, thirteenth
/// session). Commits that fall behind fill `ingest.max_uncommitted_bytes`, and ingest answers
/// 503: backpressure, not lost rows.
const COMMIT_NICE: i32 = 5;

/// The runtime the table writers run on: Parquet encoding and commits, on threads of their own.
/// A commit encodes a second of a table's rows at once (tens of milliseconds of CPU); on the
/// HTTP runtime's workers that burst would hold up the requests waiting for their acks until it
/// finished, while the OS time-slices separate threads.
fn commit_runtime() -> tokio::runtime::Handle {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    // tokio's defaults for the blocking pool (object-store writes).
    crate::stage_runtime(
        &RUNTIME,
        "gamelake-commit",
        512,
        Duration::from_secs(10),
        COMMIT_NICE,
    )
}
