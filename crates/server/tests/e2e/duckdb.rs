//! Other engines open the tables: DuckDB with its Delta extension reads `silver` and `bronze`,
//! and Apache Spark reads the silver Parquet files with pushed-down filters; both count what
//! gamelake counts.
//!
//! Needs a Python with `duckdb==1.5.5`, `duckdb-extension-delta==1.5.5` and `pyspark==4.0.1`
//! (`.ci/run` makes one and passes it as `GAMELAKE_TEST_PYTHON`), and Java 17 for Spark.
//! Without them the tests fail under `CI=true` and are skipped with a note elsewhere.

use std::process::Command;

use crate::ingest::MIXED_BODY;
use crate::util::{missing, one, stdout_of, Server};

fn python() -> Option<String> {
    if let Ok(p) = std::env::var("GAMELAKE_TEST_PYTHON") {
        return Some(p);
    }
    let ok = Command::new("python3")
        .args(["-c", "import duckdb, duckdb_extension_delta"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then(|| "python3".to_string())
}

#[tokio::test]
async fn duckdb_reads_the_same_counts() {
    let Some(python) = python() else {
        return missing("GAMELAKE_TEST_PYTHON with duckdb and duckdb-extension-delta");
    };
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "");
    assert_eq!(s.post_logs(MIXED_BODY, &[]).await.0, 200);
    assert_eq!(s.post_logs(MIXED_BODY, &[]).await.0, 200);
    s.wait_for("SELECT count(*) FROM bronze.raw_logs", one(24))
        .await;
    s.wait_for("SELECT count(*) FROM bronze.dead_letters", one(8))
        .await;
    s.wait_for("SELECT count(*) FROM silver.item", one(6)).await;
    let script = crate::util::crate_file("tests/duckdb_counts.py");
    let out = stdout_of(Command::new(&python).arg(&script).arg(&s.dir).args([
        "bronze/raw_logs",
        "bronze/dead_letters",
        "silver/item",
        "silver/combat",
    ]));
    let counts: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        counts,
        serde_json::json!({"bronze/raw_logs": 24, "bronze/dead_letters": 8, "silver/item": 6, "silver/combat": 2, "silver/item:kr-03": 2})
    );
}

/// Spark 4.0 (parquet-java 1.15) reads the files of an ingest commit, including through its
/// dictionary filter: a filter on `event_time` over a day of events with distinct times makes
/// it decompress dictionary pages larger than 8 KiB, which failed for LZ4_RAW files
/// (apache/parquet-java#3478).
#[tokio::test]
async fn spark_reads_the_silver_files_with_pushed_filters() {
    let Some(python) = python() else {
        return missing("GAMELAKE_TEST_PYTHON with pyspark");
    };
    let has_spark = Command::new(&python)
        .args(["-c", "import pyspark"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_spark || Command::new("java").arg("-version").output().is_err() {
        return missing("pyspark in GAMELAKE_TEST_PYTHON, and java");
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "[maintenance]\nenabled = false\n");
    // 20 000 events of every code over the last hours, each with its own time.
    let events = dir.path().join("events.ndjson");
    let gen = crate::util::gamelake()
        .args([
            "loadgen",
            "--dry-run",
            "--rate",
            "20000",
            "--duration",
            "1s",
        ])
        .args([
            "--spread", "6h", "--format", "ndjson", "--seed", "7", "--out",
        ])
        .arg(&events)
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let body = std::fs::read_to_string(&events).unwrap();
    assert_eq!(s.post_logs(body, &[]).await.0, 200);
    s.wait_for("SELECT count(*) FROM bronze.raw_logs", one(20000))
        .await;
    let since = (chrono::Utc::now() - chrono::Duration::hours(3))
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    let tables = ["combat", "item_acquire", "currency", "login"];
    let mut want = serde_json::Map::new();
    for t in tables {
        let all = s
            .query(&format!("SELECT count(*) AS n FROM silver.{t}"))
            .await;
        let recent = s
            .query(&format!(
                "SELECT count(*) AS n FROM silver.{t} WHERE event_time >= TIMESTAMP '{since}Z'"
            ))
            .await;
        assert!(all[0][0].as_i64().unwrap() > 500, "{t}: {all:?}");
        want.insert(t.into(), serde_json::json!([all[0][0], recent[0][0]]));
    }
    let script = crate::util::crate_file("tests/spark_counts.py");
    let out = stdout_of(
        Command::new(&python)
            .arg(&script)
            .arg(&s.dir)
            .arg(&since)
            .args(tables),
    );
    let got: serde_json::Value = serde_json::from_str(out.trim().lines().last().unwrap()).unwrap();
    assert_eq!(got, serde_json::Value::Object(want));
}
