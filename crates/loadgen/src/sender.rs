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
    /// Send a marker event once a second and poll `/v1/query` until each is visible, to
    /// measure freshness (2xx to visible in SQL).
    pub freshness: bool,
}

impl LoadConfig {
    /// A config with the defaults of `gamelake loadgen` for `target`.
    pub fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            path: "/v1/logs".into(),
            rate: 10_000,
            duration: Duration::from_secs(10),
            concurrency: 32,
            batch: 1000,
            generator: GenConfig::default(),
            compression: Compression::None,
            key: None,
            ack_log: None,
            progress: false,
            retries: 0,
            pregenerate: 0,
            freshness: false,
        }
    }
}

/// When each body is due: `bodies` bodies evenly spaced so that `batch`-line bodies offer
/// `rate` events per second for `duration`. The schedule never looks at answers (open loop).
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    interval: Duration,
    bodies: u64,
}

impl Schedule {
    pub fn new(rate: u64, batch: usize, duration: Duration) -> Self {
        let bodies_per_s = rate as f64 / batch as f64;
        Self {
            interval: Duration::from_secs_f64(1.0 / bodies_per_s),
            bodies: (bodies_per_s * duration.as_secs_f64()).round().max(1.0) as u64,
        }
    }

    /// Bodies in the run.
    pub fn bodies(&self) -> u64 {
        self.bodies
    }

    /// Offset from the start at which body `i` is due.
    pub fn due(&self, i: u64) -> Duration {
        self.interval.mul_f64(i as f64)
    }
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
    /// With `freshness`: markers sent, acknowledged, and seen in SQL; seconds from 2xx to
    /// visible (resolution: the 50 ms poll interval).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freshness: Option<Freshness>,
}

/// Freshness of a run: how long after its 2xx a marker event was visible to SQL.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Freshness {
    pub markers_acked: u64,
    pub markers_visible: u64,
    pub p50_s: f64,
    pub p99_s: f64,
    pub max_s: f64,
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
    let schedule = Schedule::new(cfg.rate, cfg.batch, cfg.duration);
    let run_id = format!("{:x}-{}", cfg.generator.seed, now_ms());
    let mut markers = cfg.freshness.then(|| Markers::new(&cfg, &client, &run_id));
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
    let mut next_marker = started;
    for i in 0..schedule.bodies() {
        let scheduled = started + schedule.due(i);
        tokio::time::sleep_until(scheduled.into()).await;
        if cfg.progress && Instant::now() >= next_report {
            print_second(&shared, offered - last_offered);
            last_offered = offered;
            next_report += Duration::from_secs(1);
        }
        if let Some(m) = &mut markers {
            if Instant::now() >= next_marker {
                m.send();
                next_marker += Duration::from_secs(1);
            }
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
    let freshness = match markers {
        Some(m) => Some(m.finish(Duration::from_secs(30)).await),
        None => None,
    };
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
        freshness,
    })
}

/// Code of the marker events; they land in `silver.loadgen_marker`.
pub const MARKER_CODE: &str = "loadgen_marker";

/// Marker events of a freshness measurement: one small body a second, each with a sequence
/// number; a poller asks `/v1/query` for the highest number visible. Tables commit in WAL
/// order, so a visible `n` means every marker up to `n` is visible.
struct Markers {
    request: Request,
    run_id: String,
    next: u64,
    /// Acknowledgement instants by marker number.
    acked: Arc<Mutex<BTreeMap<u64, Instant>>>,
    /// Seconds from 2xx to visible, by marker number.
    visible: Arc<Mutex<BTreeMap<u64, f64>>>,
    stop: Arc<tokio::sync::Notify>,
    poller: tokio::task::JoinHandle<()>,
}

impl Markers {
    fn new(cfg: &LoadConfig, client: &reqwest::Client, run_id: &str) -> Self {
        let base = cfg.target.trim_end_matches('/').to_string();
        let acked: Arc<Mutex<BTreeMap<u64, Instant>>> = Arc::default();
        let visible: Arc<Mutex<BTreeMap<u64, f64>>> = Arc::default();
        let stop = Arc::new(tokio::sync::Notify::new());
        let poller = tokio::spawn(poll_markers(
            client.clone(),
            format!("{base}/v1/query"),
            cfg.key.clone(),
            format!(
                "SELECT max(marker) FROM silver.{MARKER_CODE} WHERE run = '{}'",
                run_id
            ),
            acked.clone(),
            visible.clone(),
            stop.clone(),
        ));
        Self {
            request: Request {
                client: client.clone(),
                url: format!("{base}{}", cfg.path),
                key: cfg.key.clone(),
                payload: bytes::Bytes::new(),
                encoding: None,
                idempotency_key: None,
                retries: 3,
            },
            run_id: run_id.to_string(),
            next: 1,
            acked,
            visible,
            stop,
            poller,
        }
    }

    /// Sends the next marker without waiting for its answer.
    fn send(&mut self) {
        let n = self.next;
        self.next += 1;
        let line = format!(
            "{{\"ts\":\"{}\",\"code\":\"{MARKER_CODE}\",\"run\":\"{}\",\"marker\":{n}}}\n",
            crate::generator::utc_rfc3339(now_ms()),
            self.run_id
        );
        let mut request = self.request.clone();
        request.payload = bytes::Bytes::from(line);
        let acked = self.acked.clone();
        tokio::spawn(async move {
            if request.send().await.is_ok() {
                acked
                    .lock()
                    .expect("markers lock")
                    .insert(n, Instant::now());
            }
        });
    }

    /// Waits up to `grace` for the acknowledged markers to become visible, then summarises.
    async fn finish(self, grace: Duration) -> Freshness {
        let deadline = Instant::now() + grace;
        loop {
            let (acked, seen) = (
                self.acked.lock().expect("markers lock").len(),
                self.visible.lock().expect("markers lock").len(),
            );
            if seen >= acked || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.stop.notify_one();
        let _ = self.poller.await;
        let mut hist = Histogram::default();
        let visible = self.visible.lock().expect("markers lock");
        for s in visible.values() {
            hist.record((s * 1e6) as u64);
        }
        Freshness {
            markers_acked: self.acked.lock().expect("markers lock").len() as u64,
            markers_visible: visible.len() as u64,
            p50_s: hist.quantile_us(0.5) as f64 / 1e6,
            p99_s: hist.quantile_us(0.99) as f64 / 1e6,
            max_s: hist.max_us() as f64 / 1e6,
        }
    }
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

#[derive(Clone)]
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

/// Polls the highest visible marker every 50 ms until `stop`; records, for each newly visible
/// acknowledged marker, the seconds since its 2xx (0 when it was visible before its answer
/// arrived).
async fn poll_markers(
    client: reqwest::Client,
    url: String,
    key: Option<String>,
    sql: String,
    acked: Arc<Mutex<BTreeMap<u64, Instant>>>,
    visible: Arc<Mutex<BTreeMap<u64, f64>>>,
    stop: Arc<tokio::sync::Notify>,
) {
    let body = serde_json::json!({ "sql": sql }).to_string();
    loop {
        tokio::select! {
            _ = stop.notified() => return,
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        let mut req = client
            .post(&url)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(k) = &key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        // Before the first marker commits the table does not exist: an error, try again.
        let Ok(resp) = req.send().await else { continue };
        if !resp.status().is_success() {
            continue;
        }
        let Ok(v) = resp.json::<serde_json::Value>().await else {
            continue;
        };
        let Some(max) = v["rows"][0][0].as_u64() else {
            continue;
        };
        let now = Instant::now();
        let acked = acked.lock().expect("markers lock");
        let mut visible = visible.lock().expect("markers lock");
        for (&n, &at) in acked.range(..=max) {
            visible
                .entry(n)
                .or_insert_with(|| now.saturating_duration_since(at).as_secs_f64());
        }
    }
}

/// How to search for the highest sustainable rate.
#[derive(Debug, Clone)]
pub struct FindMax {
    /// First rate tried.
    pub start: u64,
    /// Each step multiplies the rate by this until a step fails.
    pub factor: f64,
    /// Steps between the last passing and the first failing rate, halving the gap.
    pub refine: u32,
    /// Length of each step.
    pub step: Duration,
    /// A step fails when its p99 ack latency passes this.
    pub max_p99: Duration,
    /// Pause between steps so the server drains.
    pub pause: Duration,
}

/// One step of a [`find_max`] search.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub rate: u64,
    pub sustained: bool,
    pub report: Report,
}

/// The outcome of [`find_max`].
#[derive(Debug, Clone, Serialize)]
pub struct MaxReport {
    /// Highest rate a step sustained (acked ≥ 99 % of offered, p99 within the bound), 0 if none.
    pub max_sustainable_per_s: u64,
    pub steps: Vec<Step>,
}

impl FindMax {
    /// Whether a step's report counts as sustained.
    pub fn sustained(&self, r: &Report) -> bool {
        r.offered_events > 0
            && r.acked_events as f64 >= 0.99 * r.offered_events as f64
            && r.latency_p99_ms <= self.max_p99.as_secs_f64() * 1000.0
    }
}

/// Steps the rate up by `search.factor` until a step is not sustained, then narrows the gap
/// between the last passing and the first failing rate `search.refine` times.
pub async fn find_max(base: LoadConfig, search: FindMax) -> anyhow::Result<MaxReport> {
    if search.factor <= 1.0 {
        bail!("the step factor must be above 1");
    }
    let mut steps: Vec<Step> = Vec::new();
    // Each step gets its own seed so its event ids are new.
    let try_rate = async |rate: u64, steps: &mut Vec<Step>| -> anyhow::Result<bool> {
        let mut cfg = base.clone();
        cfg.rate = rate;
        cfg.duration = search.step;
        cfg.generator.seed = base.generator.seed.wrapping_add(steps.len() as u64);
        let report = run(cfg).await?;
        let ok = search.sustained(&report);
        eprintln!(
            "step {rate}/s: acked {:.0}/s, p99 {:.1} ms -> {}",
            report.acked_per_s,
            report.latency_p99_ms,
            if ok { "sustained" } else { "not sustained" }
        );
        steps.push(Step {
            rate,
            sustained: ok,
            report,
        });
        tokio::time::sleep(search.pause).await;
        Ok(ok)
    };
    let (mut good, mut bad) = (0u64, search.start);
    while try_rate(bad, &mut steps).await? {
        good = bad;
        bad = (bad as f64 * search.factor).ceil() as u64;
    }
    for _ in 0..search.refine {
        let rate = (good + bad) / 2;
        if rate <= good || rate >= bad {
            break;
        }
        if try_rate(rate, &mut steps).await? {
            good = rate;
        } else {
            bad = rate;
        }
    }
    Ok(MaxReport {
        max_sustainable_per_s: good,
        steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

    #[test]
    fn schedule_spaces_bodies_evenly_over_the_run() {
        let s = Schedule::new(10_000, 100, Duration::from_secs(2));
        assert_eq!(s.bodies(), 200);
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(100), Duration::from_secs(1));
        assert_eq!(s.due(1) * 100, s.due(100));
        // A rate below one body a second still sends one body.
        assert_eq!(Schedule::new(1, 100, Duration::from_secs(1)).bodies(), 1);
    }

    #[test]
    fn a_step_is_sustained_only_within_one_percent_and_the_latency_bound() {
        let search = FindMax {
            start: 1000,
            factor: 1.5,
            refine: 0,
            step: Duration::from_secs(1),
            max_p99: Duration::from_millis(100),
            pause: Duration::ZERO,
        };
        let report = |offered, acked, p99| Report {
            offered_events: offered,
            acked_events: acked,
            latency_p99_ms: p99,
            ..Default::default()
        };
        assert!(search.sustained(&report(1000, 990, 99.0)));
        assert!(!search.sustained(&report(1000, 989, 10.0)));
        assert!(!search.sustained(&report(1000, 1000, 101.0)));
        assert!(!search.sustained(&report(0, 0, 0.0)));
    }

    /// A minimal HTTP/1.1 server that answers every request `200 {}` after `delay`.
    async fn slow_server(delay: Duration) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut stream = BufReader::new(stream);
                    loop {
                        let mut len = 0usize;
                        loop {
                            let mut line = String::new();
                            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                                return;
                            }
                            if line == "\r\n" {
                                break;
                            }
                            if let Some(v) =
                                line.to_ascii_lowercase().strip_prefix("content-length:")
                            {
                                len = v.trim().parse().unwrap();
                            }
                        }
                        let mut body = vec![0; len];
                        stream.read_exact(&mut body).await.unwrap();
                        tokio::time::sleep(delay).await;
                        let answer = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                        if stream.get_mut().write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    fn config(target: String, concurrency: usize) -> LoadConfig {
        LoadConfig {
            rate: 2000,
            batch: 100,
            duration: Duration::from_secs(1),
            concurrency,
            ..LoadConfig::new(target)
        }
    }

    #[tokio::test]
    async fn a_fast_server_gets_every_body_at_the_offered_rate() {
        let target = slow_server(Duration::ZERO).await;
        let r = run(config(target, 8)).await.unwrap();
        assert_eq!(r.offered_events, 2000);
        assert_eq!(r.acked_events, 2000, "{r:?}");
        assert!(r.elapsed_s < 1.5, "{r:?}");
    }

    #[tokio::test]
    async fn a_slow_server_does_not_slow_the_offered_load() {
        // 20 bodies in one second, each answered after 400 ms, at most 2 in flight: the client
        // keeps offering on schedule and counts what it cannot send as failed.
        let target = slow_server(Duration::from_millis(400)).await;
        let r = run(config(target, 2)).await.unwrap();
        assert_eq!(r.offered_events, 2000);
        assert!(
            r.elapsed_s < 1.8,
            "the schedule did not wait for answers: {r:?}"
        );
        let busy = r.failed_by_status.get("client_busy").copied().unwrap_or(0);
        assert!(busy >= 1000, "{r:?}");
        assert_eq!(r.acked_events + r.failed_events, r.offered_events);
        // Latency counts from the scheduled instant, so it includes the server's delay.
        assert!(r.latency_p50_ms >= 400.0, "{r:?}");
    }
}
