//! Another engine opens the tables: DuckDB with its Delta extension reads `silver` and `bronze`
//! and counts what gamelake counts.
//!
//! Needs a Python with `duckdb==1.5.5` and `duckdb-extension-delta==1.5.5` (`.ci/run` makes one
//! and passes it as `GAMELAKE_TEST_PYTHON`). Without it the test fails under `CI=true` and is
//! skipped with a note elsewhere.

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
