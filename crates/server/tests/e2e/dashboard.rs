//! The dashboard in a real browser, and `/metrics` read by a real Prometheus parser.
//!
//! The browser tests need Node.js with `playwright-core` and `puppeteer-core` (their folder in
//! `GAMELAKE_TEST_NODE_PATH`), Debian's Chromium (`/usr/bin/chromium` or
//! `GAMELAKE_TEST_CHROMIUM`) and Firefox ESR (`/usr/bin/firefox-esr` or `GAMELAKE_TEST_FIREFOX`);
//! the metrics test a Python with `prometheus_client` (`GAMELAKE_TEST_PYTHON`). `.ci/run`
//! installs them all; without them the tests fail under `CI=true` and are skipped with a note
//! elsewhere.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::ingest::MIXED_BODY;
use crate::util::{missing, Server};

fn number(text: &str) -> f64 {
    text.chars()
        .filter(|c| c.is_ascii_digit() || *c == '.')
        .collect::<String>()
        .parse()
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_live_traffic_and_runs_sql_in_chromium() {
    let chromium = std::env::var("GAMELAKE_TEST_CHROMIUM").unwrap_or("/usr/bin/chromium".into());
    dashboard_in("chromium", &chromium, "GAMELAKE_TEST_CHROMIUM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_live_traffic_and_runs_sql_in_firefox() {
    let firefox = std::env::var("GAMELAKE_TEST_FIREFOX").unwrap_or("/usr/bin/firefox-esr".into());
    dashboard_in("firefox", &firefox, "GAMELAKE_TEST_FIREFOX").await;
}

/// Opens the dashboard of a server receiving loadgen traffic in `browser` (driven by
/// `tests/browser/dashboard.cjs`) at a wide light and a laptop dark size, and checks what shows.
async fn dashboard_in(browser: &str, executable: &str, env_name: &'static str) {
    let node_path = std::env::var("GAMELAKE_TEST_NODE_PATH").ok();
    let Some(node_path) = node_path.filter(|_| std::path::Path::new(executable).exists()) else {
        return missing(&format!(
            "GAMELAKE_TEST_NODE_PATH (playwright-core, puppeteer-core) and {browser} ({env_name})"
        ));
    };
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "[lake]\ncommit_interval_ms = 300\n");
    let load = tokio::spawn(gamelake_loadgen::run(gamelake_loadgen::LoadConfig {
        rate: 2000,
        batch: 100,
        duration: Duration::from_secs(90),
        generator: gamelake_loadgen::GenConfig {
            malformed: 0.02,
            ..Default::default()
        },
        ..gamelake_loadgen::LoadConfig::new(s.url.clone())
    }));
    let shots =
        std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("dashboard-{browser}"));
    std::fs::create_dir_all(&shots).unwrap();
    let script = crate::util::crate_file("tests/browser/dashboard.cjs");
    let url = format!("{}/", s.url);
    let shots_arg = shots.clone();
    let (browser_arg, executable) = (browser.to_string(), executable.to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .arg(browser_arg)
            .arg(url)
            .arg(shots_arg)
            .env("NODE_PATH", node_path)
            .env(env_name, executable)
            .output()
            .expect("running node")
    })
    .await
    .unwrap();
    load.abort();
    assert!(
        out.status.success(),
        "browser script failed in {browser}:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("screenshots in {}", shots.display());
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    for size in ["wide", "laptop"] {
        let v = &seen[size];
        assert_eq!(
            v["errors"],
            serde_json::json!([]),
            "{browser}: page errors at {size}"
        );
        let (first, second) = (&v["first"], &v["second"]);
        // Traffic shows, and the live chart moves between two reads.
        assert!(number(first["rate"].as_str().unwrap()) > 0.0, "{v}");
        assert!(number(second["rate"].as_str().unwrap()) > 0.0, "{v}");
        assert_ne!(
            first["ratePath"], second["ratePath"],
            "{browser}: the rate chart did not change"
        );
        assert!(first["codes"].as_u64().unwrap() >= 5, "events by code: {v}");
        // Tables with rows, files and bytes.
        let combat = v["tables"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r[0] == "silver.combat")
            .unwrap_or_else(|| panic!("no silver.combat row: {v}"));
        assert!(number(combat[1].as_str().unwrap()) > 0.0, "{combat}");
        // Live KPIs read by SQL from the silver tables.
        for kpi in ["dau", "ccu", "revenue"] {
            assert!(number(v["kpis"][kpi].as_str().unwrap()) > 0.0, "{kpi}: {v}");
        }
        // The jobs card: the scheduler built dau's recent days at start.
        let dau = v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r[0] == "dau")
            .unwrap_or_else(|| panic!("no dau row: {v}"));
        assert_eq!(dau[2], "succeeded", "{v}");
        let (page, viewport) = (&v["overflow"]["page"], &v["overflow"]["viewport"]);
        assert!(
            page.as_u64() <= viewport.as_u64(),
            "{browser} at {size}: the page is {page} px wide in a {viewport} px viewport"
        );
        // The SQL page: rows and a bar chart; a bad query an error naming the column.
        assert_eq!(v["sqlRows"][0][0], "combat", "{v}");
        assert!(number(v["sqlRows"][0][1].as_str().unwrap()) > 0.0, "{v}");
        assert!(v["bars"].as_u64().unwrap() >= 1, "{v}");
        let err = v["sqlError"].as_str().unwrap();
        assert!(err.starts_with("400") && err.contains("nope"), "{err}");
    }
    for shot in ["dashboard-wide.png", "sql-laptop.png"] {
        assert!(std::fs::metadata(shots.join(shot)).unwrap().len() > 10_000);
    }
}

#[tokio::test]
async fn metrics_parse_as_prometheus_text_and_count_what_was_sent() {
    let Ok(python) = std::env::var("GAMELAKE_TEST_PYTHON") else {
        return missing("GAMELAKE_TEST_PYTHON with prometheus_client");
    };
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "[lake]\ncommit_interval_ms = 200\n");
    let (status, answer) = s.post_logs(MIXED_BODY, &[]).await;
    assert_eq!(status, 200);
    let (accepted, dead) = (
        answer["accepted"].as_u64().unwrap(),
        answer["dead_lettered"].as_u64().unwrap(),
    );
    assert_eq!(s.post_logs(MIXED_BODY, &[]).await.0, 200);
    assert_eq!(
        s.post_logs("no code here\n", &[("content-encoding", "br")])
            .await
            .0,
        415
    );
    // bronze.raw_logs keeps every line, dead-lettered ones too.
    s.wait_for(
        "SELECT count(*) FROM bronze.raw_logs",
        crate::util::one(2 * (accepted + dead) as i64),
    )
    .await;
    // The table's metrics are updated just after its commit lands: wait for them too.
    let committed = format!(
        "gamelake_table_rows_committed_total{{table=\"bronze.raw_logs\"}} {}\n",
        2 * (accepted + dead)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut text = s.metrics().await;
    while !text.contains(&committed) && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        text = s.metrics().await;
    }
    let mut child = Command::new(&python)
        .arg(crate::util::crate_file("tests/prometheus_parse.py"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the parser rejected /metrics: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let m = &parsed["samples"];
    let get = |k: &str| {
        let key = if k.contains('{') {
            k.to_string()
        } else {
            format!("{k}{{}}")
        };
        m[&key]
            .as_f64()
            .unwrap_or_else(|| panic!("no sample {key}"))
    };
    assert_eq!(
        get("gamelake_ingest_lines_total{outcome=accepted}"),
        2.0 * accepted as f64
    );
    assert_eq!(
        get("gamelake_ingest_lines_total{outcome=dead_lettered}"),
        2.0 * dead as f64
    );
    let dead_by_reason: f64 = m
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("gamelake_dead_letters_total{"))
        .map(|(_, v)| v.as_f64().unwrap())
        .sum();
    assert_eq!(dead_by_reason, 2.0 * dead as f64);
    assert_eq!(get("gamelake_ingest_bodies_total"), 2.0);
    assert_eq!(
        get("gamelake_ingest_bytes_total"),
        2.0 * MIXED_BODY.len() as f64
    );
    assert_eq!(
        get("gamelake_http_requests_total{route=/v1/logs,status=200}"),
        2.0
    );
    assert_eq!(
        get("gamelake_http_requests_total{route=/v1/logs,status=415}"),
        1.0
    );
    assert_eq!(get("gamelake_ingest_events_total{table=payment}"), 2.0);
    // Bytes by table and by dead-letter reason: the payment line twice, and every non-blank line
    // (without its newline) counted once per body in exactly one of them.
    let payment_line = MIXED_BODY
        .lines()
        .find(|l| l.contains("[payment]"))
        .unwrap();
    assert_eq!(
        get("gamelake_ingest_event_bytes_total{table=payment}"),
        2.0 * payment_line.len() as f64
    );
    let sum_of = |prefix: &str| -> f64 {
        m.as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.as_f64().unwrap())
            .sum()
    };
    let line_bytes: usize = MIXED_BODY
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::len)
        .sum();
    assert_eq!(
        sum_of("gamelake_ingest_event_bytes_total{") + sum_of("gamelake_dead_letter_bytes_total{"),
        2.0 * line_bytes as f64
    );
    assert!(get("gamelake_dead_letter_bytes_total{reason=truncated}") > 0.0);
    assert_eq!(get("gamelake_ingest_ack_latency_seconds_count"), 2.0);
    assert_eq!(
        get("gamelake_table_rows_committed_total{table=bronze.raw_logs}"),
        2.0 * (accepted + dead) as f64
    );
    assert!(get("gamelake_process_resident_memory_bytes") > 1e6);
    assert!(get("gamelake_process_open_fds") > 3.0);
    assert_eq!(
        parsed["types"]["gamelake_ingest_ack_latency_seconds"],
        "histogram"
    );
    assert_eq!(parsed["types"]["gamelake_wal_bytes"], "gauge");
}
