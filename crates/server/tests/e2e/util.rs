//! Starting the real `gamelake` binary on a free port and a temp dir, and talking to it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_gamelake");

/// A file of this crate's source tree. The directory comes from the environment cargo and
/// nextest set when they run a test, not from the path compiled in: a target directory shared
/// by two checkouts (CI's cache) reuses a test binary built in the other checkout.
pub fn crate_file(relative: &str) -> PathBuf {
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    root.join(relative)
}

/// A test's outside tool (`what`) is missing: under `CI=true` that fails the test (CI must
/// install it), elsewhere the test is skipped with a note. Call it and return.
pub fn missing(what: &str) {
    assert!(std::env::var("CI").is_err(), "CI must provide {what}");
    eprintln!("skipping: no {what}");
}

/// A free loopback port (bound and released; good enough for tests).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running server.
pub struct Server {
    pub child: Child,
    /// The Postgres wire port.
    pub pg_port: u16,
    pub dir: PathBuf,
    pub url: String,
    pub client: reqwest::Client,
    pub key: Option<String>,
    stderr_path: PathBuf,
}

/// A command with every `GAMELAKE_*` variable removed.
pub fn gamelake() -> Command {
    let mut cmd = Command::new(BIN);
    for (k, _) in std::env::vars() {
        if k.starts_with("GAMELAKE_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("GAMELAKE_LOG", "info,deltalake=warn,datafusion=warn");
    cmd
}

impl Server {
    /// Starts `gamelake serve` on `dir` with `config` (TOML) and waits for its ready line.
    pub fn start(dir: &Path, config: &str) -> Server {
        Self::start_with_key(dir, config, None)
    }

    pub fn start_with_key(dir: &Path, config: &str, key: Option<&str>) -> Server {
        Self::start_command(dir, config, key, &["serve"])
    }

    /// Starts `gamelake <command…>` with the data dir, address and config flags added.
    pub fn start_command(dir: &Path, config: &str, key: Option<&str>, command: &[&str]) -> Server {
        let port = free_port();
        let cfg_path = dir.join("gamelake.toml");
        std::fs::write(&cfg_path, config).unwrap();
        let stderr_path = dir.join(format!("server-{port}.log"));
        let data = dir.join("data");
        let mut child = gamelake()
            .args(command)
            .arg("--data-dir")
            .arg(&data)
            .args(["--http-addr", &format!("127.0.0.1:{port}")])
            .args(["--pg-addr", "127.0.0.1:0", "--config"])
            .arg(&cfg_path)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .expect("starting gamelake");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("gamelake ready") {
                    let _ = tx.send(line);
                }
            }
        });
        let pg_port = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(line) => {
                assert!(line.contains(&format!("http=127.0.0.1:{port}")), "{line}");
                line.rsplit(':').next().unwrap().parse::<u16>().unwrap()
            }
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not print its ready line; stderr:\n{}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                );
            }
        };
        Server {
            pg_port,
            child,
            dir: data,
            url: format!("http://127.0.0.1:{port}"),
            client: reqwest::Client::new(),
            key: key.map(str::to_string),
            stderr_path,
        }
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.key {
            Some(k) => req.bearer_auth(k),
            None => req,
        }
    }

    /// Posts a body to `/v1/logs`; returns status and JSON answer.
    pub async fn post_logs(
        &self,
        body: impl Into<reqwest::Body>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut req = self.auth(self.client.post(format!("{}/v1/logs", self.url)).body(body));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        let req = self.client.get(format!("{}/metrics", self.url));
        req.send().await.unwrap().text().await.unwrap()
    }

    /// `GET /v1/tables` as JSON.
    pub async fn tables(&self) -> Value {
        let resp = self
            .auth(self.client.get(format!("{}/v1/tables", self.url)))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.json().await.unwrap()
    }

    /// Runs SQL over HTTP; panics on error.
    /// The event id of every row of every silver table (one entry per row, so a duplicate
    /// shows twice). Bare JSON-like lines name it `logId`, the others `log_id`: a table that
    /// received both formats has both columns. Tables without either (loadgen's freshness
    /// markers) are left out.
    pub async fn stored_log_ids(&self) -> Vec<String> {
        let tables = self.tables().await;
        let mut ids = Vec::new();
        for t in tables["tables"].as_array().unwrap() {
            if t["schema"] != "silver" {
                continue;
            }
            let columns: Vec<String> = t["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c[0].as_str().unwrap().to_string())
                .filter(|c| c == "log_id" || c == "logId")
                .map(|c| format!("\"{c}\""))
                .collect();
            let id = match columns.len() {
                0 => continue,
                1 => columns[0].clone(),
                _ => format!("coalesce({})", columns.join(", ")),
            };
            let sql = format!("SELECT {id} FROM silver.{}", t["name"].as_str().unwrap());
            let rows = self.query(&sql).await;
            ids.extend(rows.into_iter().map(|r| r[0].as_str().unwrap().to_string()));
        }
        ids
    }

    pub async fn query(&self, sql: &str) -> Vec<Vec<Value>> {
        let (status, v) = self.try_query(sql).await;
        assert_eq!(status, 200, "{sql}: {v}");
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_array().unwrap().clone())
            .collect()
    }

    pub async fn try_query(&self, sql: &str) -> (u16, Value) {
        let resp = self
            .auth(self.client.post(format!("{}/v1/query", self.url)))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .unwrap();
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    /// Polls `sql` until it returns `expected` (tables commit about once a second).
    pub async fn wait_for(&self, sql: &str, expected: Vec<Vec<Value>>) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = (0, Value::Null);
        while Instant::now() < deadline {
            last = self.try_query(sql).await;
            if last.0 == 200 {
                let rows: Vec<Vec<Value>> = last.1["rows"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_array().unwrap().clone())
                    .collect();
                if rows == expected {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("`{sql}` never returned {expected:?}; last answer: {last:?}");
    }

    pub fn signal(&self, sig: i32) {
        let rc = unsafe_kill(self.child.id() as i32, sig);
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to exit; returns its exit code (None if killed by a signal).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "server did not exit within {timeout:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(unsafe_code)]
fn unsafe_kill(pid: i32, sig: i32) -> i32 {
    // SAFETY: `kill` has no memory-safety preconditions; the pid is our own child.
    unsafe { libc::kill(pid, sig) }
}

/// Runs a command to completion; asserts it succeeded and returns its stdout.
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().expect("running the command");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `[[n]]` as JSON rows.
pub fn one(n: i64) -> Vec<Vec<Value>> {
    vec![vec![Value::from(n)]]
}

/// Rows of (text, count) pairs.
pub fn pairs(p: &[(&str, i64)]) -> Vec<Vec<Value>> {
    p.iter()
        .map(|(k, n)| vec![Value::from(*k), Value::from(*n)])
        .collect()
}
