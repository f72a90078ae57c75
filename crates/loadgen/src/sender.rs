//! Open-loop load against `POST /v1/logs`.
//!
//! Bodies are scheduled at a fixed pace from the target rate; a body is sent at its scheduled
//! instant whatever the server does, and its latency counts from that instant, so a slow server
//! shows as latency and failures instead of as a slower client (no coordinated omission). When
//! `concurrency` requests are already in flight, the body is counted as failed (`client_busy`).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use serde::Serialize;

use crate::generator::{GenConfig, Generator};
use crate::stats::Histogram;

/// Body compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// A load run.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Base URL of the server, e.g. `http://127.0.0.1:8080`.
    pub target: String,
    /// Path and query the bodies are posted to: `/v1/logs` for gamelake; another system's
    /// ingest path for a peer measured with the same lines (e.g. ClickHouse's
    /// `/?query=INSERT+INTO+t+FORMAT+JSONEachRow`).
    pub path: String,
    /// Offered events per second.
    pub rate: u64,
    pub duration: Duration,
    /// Requests in flight at most.
    pub concurrency: usize,
    /// Lines per body.
    pub batch: usize,
    pub generator: GenConfig,
    pub compression: Compression,
    pub key: Option<String>,
    /// File that receives the `logId` of every event of every acknowledged body.
    pub ack_log: Option<std::path::PathBuf>,
    /// Print one line a second to stderr.
    pub progress: bool,
    /// Send each body with an `Idempotency-Key` and retry 429/503/transport errors with it.
    pub retries: u32,
    /// Generate this many bodies before the run and send them round-robin (0: generate each
    /// body when it is due). Takes the generator's CPU out of a throughput measurement;
    /// event ids then repeat, so it cannot be combined with `ack_log`.
    pub pregenerate: usize,
}

/// Totals of a run.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Report {
    pub offered_events: u64,
    pub acked_events: u64,
    pub failed_events: u64,
    pub dead_lettered: u64,
    pub failed_by_status: BTreeMap<String, u64>,
    pub elapsed_s: f64,
    pub offered_per_s: f64,
    pub acked_per_s: f64,
    pub acked_mb_per_s: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
}

#[derive(Default)]
struct Shared {
    hist: Histogram,
    second_hist: Histogram,
    acked: u64,
    acked_bytes: u64,
    dead: u64,
    failed: u64,
    second_acked: u64,
    second_failed: u64,
    failed_by_status: BTreeMap<String, u64>,
    in_flight: usize,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Runs the load and returns its report.
pub async fn run(cfg: LoadConfig) -> anyhow::Result<Report> {
    if cfg.rate == 0 || cfg.batch == 0 || cfg.concurrency == 0 {
        bail!("`--rate`, `--batch` and `--concurrency` must be positive");
    }
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(cfg.concurrency)
        .timeout(Duration::from_secs(60))
        .build()
        .context("building the HTTP client")?;
    let url = format!("{}{}", cfg.target.trim_end_matches('/'), cfg.path);
    let shared = Arc::new(Mutex::new(Shared::default()));
    let ack_log = match &cfg.ack_log {
        Some(p) => Some(Arc::new(Mutex::new(std::io::BufWriter::new(
            std::fs::File::create(p)
                .with_context(|| format!("creating ack log `{}`", p.display()))?,
        )))),
        None => None,
    };
    if cfg.pregenerate > 0 && cfg.ack_log.is_some() {
        bail!("`--pregenerate` repeats event ids, so it cannot be combined with `--ack-log`");
    }
    let bodies_per_s = cfg.rate as f64 / cfg.batch as f64;
    let interval = Duration::from_secs_f64(1.0 / bodies_per_s);
    let total_bodies = (bodies_per_s * cfg.duration.as_secs_f64()).round().max(1.0) as u64;
    let mut generator = Generator::new(cfg.generator.clone());
    let pool: Vec<(bytes::Bytes, u64)> = (0..cfg.pregenerate)
        .map(|_| {
            let mut body = Vec::with_capacity(cfg.batch * 330);
            generator.body(cfg.batch, now_ms(), &mut body);
            let raw = body.len() as u64;
            compress(&body, cfg.compression).map(|(p, _)| (bytes::Bytes::from(p), raw))
        })
        .collect::<anyhow::Result<_>>()?;
    let started = Instant::now();
    let mut offered = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    let mut next_report = started + Duration::from_secs(1);
    let mut last_offered = 0u64;
    for i in 0..total_bodies {
        let scheduled = started + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        if cfg.progress && Instant::now() >= next_report {
            print_second(&shared, offered - last_offered);
            last_offered = offered;
            next_report += Duration::from_secs(1);
        }
        let (payload, raw_bytes, ids) = if pool.is_empty() {
            let mut body = Vec::with_capacity(cfg.batch * 330);
            let ids = generator.body(cfg.batch, now_ms(), &mut body);
            let raw = body.len() as u64;
            (
                bytes::Bytes::from(compress(&body, cfg.compression)?.0),
                raw,
                ids,
            )
        } else {
            let (p, raw) = &pool[i as usize % pool.len()];
            (p.clone(), *raw, Vec::new())
        };
        offered += cfg.batch as u64;
        {
            let mut s = shared.lock().expect("stats lock");
            if s.in_flight >= cfg.concurrency {
                s.failed += cfg.batch as u64;
                s.second_failed += cfg.batch as u64;
                *s.failed_by_status.entry("client_busy".into()).or_default() += cfg.batch as u64;
                continue;
            }
            s.in_flight += 1;
        }
        let encoding = match cfg.compression {
            Compression::None => None,
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
        };
        let request = Request {
            client: client.clone(),
            url: url.clone(),
            key: cfg.key.clone(),
            payload,
            encoding,
            idempotency_key: (cfg.retries > 0).then(|| format!("{:x}-{i}", cfg.generator.seed)),
            retries: cfg.retries,
        };
        let shared = shared.clone();
        let ack_log = ack_log.clone();
        let lines = cfg.batch as u64;
        tasks.spawn(async move {
            let outcome = request.send().await;
            let elapsed = scheduled.elapsed();
            let mut s = shared.lock().expect("stats lock");
            s.in_flight -= 1;
            match outcome {
                Ok(dead) => {
                    s.hist.record(elapsed.as_micros() as u64);
                    s.second_hist.record(elapsed.as_micros() as u64);
                    s.acked += lines;
                    s.second_acked += lines;
                    s.acked_bytes += raw_bytes;
                    s.dead += dead;
                    drop(s);
                    if let Some(log) = ack_log {
                        let mut w = log.lock().expect("ack log lock");
                        for id in ids {
                            let _ = writeln!(w, "{id}");
                        }
                    }
                }
                Err(status) => {
                    s.failed += lines;
                    s.second_failed += lines;
                    *s.failed_by_status.entry(status).or_default() += lines;
                }
            }
        });
        while let Some(done) = tasks.try_join_next() {
            done.context("request task")?;
        }
    }
    while let Some(done) = tasks.join_next().await {
        done.context("request task")?;
    }
    if let Some(log) = ack_log {
        log.lock()
            .expect("ack log lock")
            .flush()
            .context("writing the ack log")?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let s = shared.lock().expect("stats lock");
    Ok(Report {
        offered_events: offered,
        acked_events: s.acked,
        failed_events: s.failed,
        dead_lettered: s.dead,
        failed_by_status: s.failed_by_status.clone(),
        elapsed_s: elapsed,
        offered_per_s: offered as f64 / elapsed,
        acked_per_s: s.acked as f64 / elapsed,
        acked_mb_per_s: s.acked_bytes as f64 / elapsed / 1e6,
        latency_p50_ms: s.hist.quantile_us(0.5) as f64 / 1000.0,
        latency_p99_ms: s.hist.quantile_us(0.99) as f64 / 1000.0,
        latency_max_ms: s.hist.max_us() as f64 / 1000.0,
    })
}

fn print_second(shared: &Mutex<Shared>, offered: u64) {
    let mut s = shared.lock().expect("stats lock");
    let failed: Vec<String> = s
        .failed_by_status
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    eprintln!(
        "offered/s={offered} acked/s={} failed/s={} p50={:.1}ms p99={:.1}ms max={:.1}ms in_flight={} failed_total[{}]",
        s.second_acked,
        s.second_failed,
        s.second_hist.quantile_us(0.5) as f64 / 1000.0,
        s.second_hist.quantile_us(0.99) as f64 / 1000.0,
        s.second_hist.max_us() as f64 / 1000.0,
        s.in_flight,
        failed.join(" ")
    );
    s.second_acked = 0;
    s.second_failed = 0;
    s.second_hist = Histogram::default();
}

fn compress(body: &[u8], c: Compression) -> anyhow::Result<(Vec<u8>, Option<&'static str>)> {
    Ok(match c {
        Compression::None => (body.to_vec(), None),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(body)?;
            (e.finish()?, Some("gzip"))
        }
        Compression::Zstd => (zstd::encode_all(body, 1)?, Some("zstd")),
    })
}

struct Request {
    client: reqwest::Client,
    url: String,
    key: Option<String>,
    payload: bytes::Bytes,
    encoding: Option<&'static str>,
    idempotency_key: Option<String>,
    retries: u32,
}

impl Request {
    /// Sends the body; `Ok(dead_lettered)` on 200, `Err(status)` otherwise.
    async fn send(self) -> Result<u64, String> {
        let payload = self.payload;
        let mut attempt = 0;
        loop {
            let mut req = self.client.post(&self.url).body(payload.clone());
            if let Some(enc) = self.encoding {
                req = req.header("content-encoding", enc);
            }
            if let Some(key) = &self.key {
                req = req.header("authorization", format!("Bearer {key}"));
            }
            if let Some(k) = &self.idempotency_key {
                req = req.header("idempotency-key", k);
            }
            let status = match req.send().await {
                Ok(resp) if resp.status().is_success() => {
                    // gamelake answers its counts; a peer may answer nothing.
                    let body: Option<serde_json::Value> = resp.json().await.ok();
                    return Ok(body
                        .and_then(|b| b.get("dead_lettered").and_then(|v| v.as_u64()))
                        .unwrap_or(0));
                }
                Ok(resp) => resp.status().as_u16().to_string(),
                Err(e) if e.is_timeout() => "timeout".to_string(),
                Err(_) => "connect".to_string(),
            };
            let retryable = matches!(status.as_str(), "429" | "503" | "connect" | "timeout");
            if !retryable || attempt >= self.retries {
                return Err(status);
            }
            attempt += 1;
            tokio::time::sleep(Duration::from_millis(100 * attempt as u64)).await;
        }
    }
}
