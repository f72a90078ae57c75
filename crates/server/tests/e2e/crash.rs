//! Crash safety: SIGKILL under load, restart, every acknowledged event exactly once; SIGTERM
//! drains and exits 0.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use crate::util::{gamelake, one, stdout_of, Server};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_and_duplicates_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[lake]\ncommit_interval_ms = 300\n[wal]\nsegment_bytes = 1048576\n";
    let s = Server::start(dir.path(), config);
    let ack_log = dir.path().join("acked.txt");
    let (concurrency, batch) = (4usize, 200usize);
    let load = tokio::spawn(gamelake_loadgen::run(gamelake_loadgen::LoadConfig {
        rate: 20_000,
        // Longer than the kill takes: on a busy machine (CI runs browsers and Spark beside this
        // test) the first reused segment can take several seconds, and the kill must still
        // come while the client streams. Requests after the kill fail at once.
        duration: Duration::from_secs(20),
        concurrency,
        batch,
        generator: gamelake_loadgen::GenConfig {
            seed: 42,
            format: gamelake_loadgen::Format::Ndjson,
            ..Default::default()
        },
        ack_log: Some(ack_log.clone()),
        ..gamelake_loadgen::LoadConfig::new(s.url.clone())
    }));
    // Kill while the client streams: after some bodies are acknowledged, mid-stream, and once
    // the log writes over a segment it removed (1 MiB segments roll several times a second),
    // so that recovery reads segments with an older segment's records after their own.
    let wal_dir = dir.path().join("data").join("_wal");
    let deadline = std::time::Instant::now() + Duration::from_secs(18);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "no segment reused while the client streamed: {} reused",
            reused_segments(&wal_dir)
        );
        let m = s.metrics().await;
        let committed = m.lines().find(|l| {
            l.starts_with("gamelake_table_rows_committed_total{table=\"bronze.raw_logs\"}")
        });
        if committed.is_some_and(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap() > 5_000)
            && reused_segments(&wal_dir) > 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut s = s;
    s.signal(libc::SIGKILL);
    s.wait_exit(Duration::from_secs(10));
    let report = load.await.unwrap().unwrap();
    assert!(report.acked_events > 5_000, "{report:?}");
    assert!(
        report.failed_events > 0,
        "the kill happened mid-stream: {report:?}"
    );
    drop(s);

    // Restart on the same data dir: recovery replays what the tables miss.
    let s = Server::start(dir.path(), config);
    let acked: Vec<String> = std::fs::read_to_string(&ack_log)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(acked.len() as u64, report.acked_events);
    let acked_set: HashSet<&String> = acked.iter().collect();
    // Wait until every acknowledged event is visible.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let stored = loop {
        let stored = s.stored_log_ids().await;
        let set: HashSet<&String> = stored.iter().collect();
        if acked_set.iter().all(|id| set.contains(id)) {
            break stored;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "acknowledged events missing after restart"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let mut counts: HashMap<&String, usize> = HashMap::new();
    for id in &stored {
        *counts.entry(id).or_default() += 1;
    }
    let dups: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(dups.is_empty(), "duplicated events: {dups:?}");
    let extra = stored.len() - acked.len();
    assert!(
        extra <= concurrency * batch,
        "{extra} stored events were never acknowledged: more than were in flight"
    );
    // raw_logs agrees with silver: every stored event once.
    s.wait_for(
        "SELECT count(*) FROM bronze.raw_logs",
        one(stored.len() as i64),
    )
    .await;
}

/// Write-ahead log segments written over a removed one (their magic's sixth byte is 1).
fn reused_segments(wal_dir: &std::path::Path) -> usize {
    std::fs::read_dir(wal_dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
                .filter(|e| {
                    std::fs::read(e.path()).is_ok_and(|d| d.starts_with(b"GLWAL\x00\x01\x01"))
                })
                .count()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn sigterm_drains_commits_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    // A long commit interval: only the drain can make the rows visible.
    let config = "[lake]\ncommit_interval_ms = 600000\n";
    let mut s = Server::start(dir.path(), config);
    let mut body = Vec::new();
    let mut g = gamelake_loadgen::Generator::new(gamelake_loadgen::GenConfig {
        seed: 9,
        ..Default::default()
    });
    let ids = g.body(3000, 1_764_300_000_000, &mut body);
    assert_eq!(
        s.post_logs(body, &[]).await,
        (
            200,
            serde_json::json!({"accepted": 3000, "dead_lettered": 0})
        )
    );
    assert_eq!(ids.len(), 3000);
    s.signal(libc::SIGTERM);
    assert_eq!(
        s.wait_exit(Duration::from_secs(60)),
        Some(0),
        "{}",
        s.stderr()
    );
    let text = stdout_of(
        gamelake()
            .args(["sql", "--format", "csv", "--data-dir"])
            .arg(&s.dir)
            .arg("SELECT count(*) AS n FROM bronze.raw_logs"),
    );
    assert_eq!(
        text,
        "n
3000
"
    );
}
