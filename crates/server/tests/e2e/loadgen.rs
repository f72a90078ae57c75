//! `gamelake loadgen` against the real server: every acknowledged event is in the tables once,
//! and the freshness markers are measured.

use std::collections::HashMap;

use crate::util::{gamelake, stdout_of, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_ack_log_matches_the_tables_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "[lake]\ncommit_interval_ms = 200\n");
    let ack_log = dir.path().join("acked.txt");
    let report_path = dir.path().join("report.json");
    let out = stdout_of(
        gamelake()
            .args(["loadgen", "--target", &s.url])
            .args(["--rate", "5000", "--duration", "3s", "--batch", "250"])
            .args([
                "--format",
                "mixed",
                "--malformed",
                "0.02",
                "--zstd",
                "--seed",
                "7",
            ])
            .args(["--freshness", "--ack-log"])
            .arg(&ack_log)
            .arg("--report")
            .arg(&report_path),
    );
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report,
        serde_json::from_slice::<serde_json::Value>(&std::fs::read(&report_path).unwrap()).unwrap()
    );
    assert_eq!(report["offered_events"], 15_000, "{report}");
    assert_eq!(report["acked_events"], 15_000, "{report}");
    let dead = report["dead_lettered"].as_u64().unwrap();
    assert!((100..=600).contains(&dead), "about 2 % malformed: {report}");

    let acked: Vec<String> = std::fs::read_to_string(&ack_log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    // The ack log holds the ids of the well-formed events of every acknowledged body.
    assert_eq!(acked.len() as u64, 15_000 - dead);
    // Each table commits on its own; wait until they have all caught up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut stored = s.stored_log_ids().await;
    while stored.len() < acked.len() && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        stored = s.stored_log_ids().await;
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for id in &stored {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    for id in &acked {
        assert_eq!(
            counts.get(id.as_str()),
            Some(&1),
            "event {id} stored {:?} times",
            counts.get(id.as_str())
        );
    }
    assert_eq!(
        stored.len(),
        acked.len(),
        "the tables hold only acknowledged events"
    );
    let dead_rows = s.query("SELECT count(*) FROM bronze.dead_letters").await;
    assert_eq!(dead_rows[0][0], dead);

    // One marker a second, each visible in SQL within seconds of its 2xx.
    let f = &report["freshness"];
    let markers = f["markers_acked"].as_u64().unwrap();
    assert!((2..=4).contains(&markers), "{report}");
    assert_eq!(f["markers_visible"], markers, "{report}");
    assert!(f["p99_s"].as_f64().unwrap() < 10.0, "{report}");
    let rows = s.query("SELECT count(*) FROM silver.loadgen_marker").await;
    assert_eq!(rows[0][0], markers);
}

#[test]
fn loadgen_dry_run_writes_the_lines_it_would_send() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("lines.log");
    let run = |path: &std::path::Path| {
        let status = gamelake()
            .args([
                "loadgen",
                "--dry-run",
                "--rate",
                "500",
                "--duration",
                "1s",
                "--seed",
                "3",
                "--out",
            ])
            .arg(path)
            .status()
            .unwrap();
        assert!(status.success());
        std::fs::read_to_string(path).unwrap()
    };
    let lines = run(&out);
    assert_eq!(lines.lines().count(), 500);
    // Event ids are `<seed hex>-<sequence>`, in order.
    assert!(
        lines.lines().next().unwrap().contains("3-0"),
        "{lines:.300}"
    );
    assert!(
        lines.lines().last().unwrap().contains("3-499"),
        "{lines:.300}"
    );
}
