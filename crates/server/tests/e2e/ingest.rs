//! `POST /v1/logs` end to end: formats, counts, dead letters, encodings, keys, limits.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use crate::util::{gamelake, one, pairs, stdout_of, Server};

/// Three formats and malformed lines in one body, with known answers.
pub const MIXED_BODY: &str = concat!(
    "2026-11-28 02:10:11.123 [item_acquire] {server=kr-03, account_id=12345, char_id=98761, item_id=50012, item_name='오딘의 검', count=1, reason=drop, log_id=a1}\n",
    "2026-11-28 02:10:11.130 [currency] {server=kr-03, account_id=12345, char_id=98761, currency=gold, delta=-1500, balance=88200, reason=\"shop:buy\", log_id=a2}\n",
    "2026-11-28T02:10:12.004+09:00 [payment] {server=kr-01, account_id=777, product_id=pkg_start_01, price_krw=33000, store=google, order_id=\"GPA.3381-2219\", log_id=a3}\n",
    "2026-11-28 02:10:12.551 [combat] {server=kr-07, char_id=5501, target=boss:fenrir, damage=18234.5, crit=true, party=[5501, 5502, 5503], pos={x: 102.3, y: 88.1}, log_id=a4}\n",
    "{code:\"resource\", appId:\"odin\", playerId:\"p_1029384\", gameWorld:\"kr-03\", rCurrency:\"Gold\", amount:1500, delta:1500, paid:false, reason:\"A_QUEST\", modTime:\"2026-11-28 02:10:11.123\", logId:\"b1\"}\n",
    "{code:\"item\", appId:\"odin\", playerId:\"p_1029384\", gameWorld:\"kr-03\", itemId:50012, itemNm:'오딘의 검', itemGrade:\"legendary\", count:1, reason:drop, modTime:\"2026-11-28 02:10:12.004\", logId:\"b2\"}\n",
    "{\"ts\":\"2026-11-28T02:10:11.123+09:00\",\"code\":\"item\",\"server\":\"kr-03\",\"account_id\":12345,\"item_id\":50012,\"count\":1,\"log_id\":\"c1\"}\n",
    "{\"ts\":\"2026-11-27T23:59:59Z\",\"code\":\"item\",\"server\":\"kr-04\",\"account_id\":5,\"item_id\":7,\"count\":3,\"log_id\":\"c2\"}\n",
    "\n",
    "{\"ts\":\"2026-11-28T02:10:11Z\",\"code\":\"item\",\"count\":1\n",
    "2026-11-28 02:10:11.123 [item_acquire] {name=\"bad \\q escape\"}\n",
    "{ts:\"2026-11-28 02:10:11\", count:1}\n",
    "{code:\"item\", count:2}\n",
);

async fn check_mixed_body(s: &Server, headers: &[(&str, &str)], body: Vec<u8>, copies: i64) {
    let (status, answer) = s.post_logs(body, headers).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer,
        serde_json::json!({"accepted": 8, "dead_lettered": 4})
    );
    s.wait_for("SELECT count(*) FROM bronze.raw_logs", one(12 * copies))
        .await;
    s.wait_for(
        "SELECT reason, count(*) FROM bronze.dead_letters GROUP BY reason ORDER BY reason",
        pairs(&[
            ("bad_escape", copies),
            ("missing_code", copies),
            ("missing_time", copies),
            ("truncated", copies),
        ]),
    )
    .await;
    for (table, n) in [
        ("item", 3),
        ("item_acquire", 1),
        ("currency", 1),
        ("payment", 1),
        ("combat", 1),
        ("resource", 1),
    ] {
        s.wait_for(
            &format!("SELECT count(*) FROM silver.{table}"),
            one(n * copies),
        )
        .await;
    }
}

#[tokio::test]
async fn mixed_formats_land_in_their_tables_with_exact_counts() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "");
    check_mixed_body(&s, &[], MIXED_BODY.as_bytes().to_vec(), 1).await;

    // Same body gzip- and zstd-encoded: counts double, then triple.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(MIXED_BODY.as_bytes()).unwrap();
    check_mixed_body(&s, &[("content-encoding", "gzip")], gz.finish().unwrap(), 2).await;
    let zst = zstd::encode_all(MIXED_BODY.as_bytes(), 3).unwrap();
    check_mixed_body(&s, &[("content-encoding", "zstd")], zst, 3).await;

    // Columns, types and derived times.
    let rows = s
        .query("SELECT DISTINCT \"itemNm\", item_id, \"logId\", log_id, CAST(event_date AS VARCHAR), event_time FROM silver.item WHERE \"logId\" = 'b2' OR log_id = 'c2' ORDER BY event_time")
        .await;
    assert_eq!(rows.len(), 2, "{rows:?}");
    // b2: 02:10:12.004 in Seoul is 17:10:12.004Z on the 27th, still the 28th as a game day.
    assert_eq!(
        rows[0][..5],
        [
            Value::from("오딘의 검"),
            Value::Null,
            Value::from("b2"),
            Value::Null,
            Value::from("2026-11-28")
        ]
    );
    // c2: 23:59:59Z on the 27th is already the 28th in Seoul.
    assert_eq!(
        rows[1][..5],
        [
            Value::Null,
            Value::from(7),
            Value::Null,
            Value::from("c2"),
            Value::from("2026-11-28")
        ]
    );
    assert_eq!(rows[1][5], Value::from("2026-11-27T23:59:59Z"));
    let combat = s
        .query("SELECT damage, crit, party, pos FROM silver.combat LIMIT 1")
        .await;
    assert_eq!(
        combat[0],
        vec![
            Value::from(18234.5),
            Value::from(true),
            Value::from("[5501,5502,5503]"),
            Value::from(r#"{"x":102.3,"y":88.1}"#)
        ]
    );

    // Dead letters keep the line byte for byte, with stage and detail.
    let dead = s.query("SELECT line, stage, detail FROM bronze.dead_letters WHERE reason = 'bad_escape' LIMIT 1").await;
    assert_eq!(
        dead[0][0],
        Value::from("2026-11-28 02:10:11.123 [item_acquire] {name=\"bad \\q escape\"}")
    );
    assert_eq!(dead[0][1], Value::from("parse"));
    assert!(dead[0][2].as_str().unwrap().contains("escape"), "{dead:?}");

    // The table listing and the CLI see the same tables.
    let tables = s.tables().await;
    let names: Vec<String> = tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}.{}",
                t["schema"].as_str().unwrap(),
                t["name"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        names.contains(&"silver.item".to_string())
            && names.contains(&"bronze.dead_letters".to_string()),
        "{names:?}"
    );
    let item = tables["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "item")
        .unwrap();
    assert_eq!(item["rows"], Value::from(9));
    assert_eq!(item["partition_columns"], serde_json::json!(["event_date"]));

    let text = stdout_of(gamelake().args(["tables", "--data-dir"]).arg(&s.dir));
    assert!(
        text.lines()
            .any(|l| l.starts_with("silver.item ") && l.contains(" 9 ")),
        "{text}"
    );

    // Health, readiness and metrics.
    for path in ["/healthz", "/readyz"] {
        assert_eq!(
            s.client
                .get(format!("{}{path}", s.url))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let metrics = s.metrics().await;
    assert!(
        metrics.contains("gamelake_ingest_lines_total{outcome=\"accepted\"} 24"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gamelake_dead_letters_total{reason=\"truncated\"} 3"),
        "{metrics}"
    );
}

#[tokio::test]
async fn query_formats_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "");
    let (status, _) = s.post_logs(MIXED_BODY, &[]).await;
    assert_eq!(status, 200);
    s.wait_for("SELECT count(*) FROM silver.payment", one(1))
        .await;
    let csv = s
        .client
        .post(format!("{}/v1/query", s.url))
        .header("accept", "text/csv")
        .json(&serde_json::json!({"sql": "SELECT price_krw, store FROM silver.payment"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(csv, "price_krw,store\n33000,google\n");
    let nd = s
        .client
        .post(format!("{}/v1/query", s.url))
        .header("accept", "application/x-ndjson")
        .json(&serde_json::json!({"sql": "SELECT price_krw, CAST(event_date AS DATE) AS d FROM payment"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(nd, "{\"price_krw\":33000,\"d\":\"2026-11-28\"}\n");
    let (status, err) = s.try_query("SELECT nope FROM silver.payment").await;
    assert_eq!(status, 400);
    assert_eq!(err["code"], "bad_query");
    assert!(err["error"].as_str().unwrap().contains("nope"), "{err}");
    // An error while the query runs, before its first rows: 400 with the engine's message.
    let (status, err) = s
        .try_query("SELECT CAST(store AS INT) FROM silver.payment")
        .await;
    assert_eq!(status, 400, "{err}");
    assert_eq!(err["code"], "bad_query");
    assert!(err["error"].as_str().unwrap().contains("'google'"), "{err}");
    // Engine settings are the server's: one user cannot change them for every other one.
    for stmt in [
        "SET datafusion.execution.batch_size = 7",
        "RESET datafusion.execution.batch_size",
        "PREPARE p AS SELECT 1",
    ] {
        let (status, err) = s.try_query(stmt).await;
        assert_eq!(status, 400, "{stmt}: {err}");
        assert!(
            err["error"]
                .as_str()
                .unwrap()
                .contains("every user of this server shares"),
            "{stmt}: {err}"
        );
    }
    let batch = s.query("SHOW datafusion.execution.batch_size").await;
    assert_eq!(batch[0][1], "8192");
    let (status, err) = s.try_query("DROP TABLE silver.payment").await;
    assert_eq!(status, 400, "{err}");
    let bad = s
        .client
        .post(format!("{}/v1/query", s.url))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    // `gamelake sql` against the server and against the data dir.
    for target in [
        vec!["--server".to_string(), s.url.clone()],
        vec!["--data-dir".to_string(), s.dir.display().to_string()],
    ] {
        let text = stdout_of(gamelake().arg("sql").args(&target).args([
            "--format",
            "csv",
            "SELECT price_krw FROM silver.payment",
        ]));
        assert_eq!(
            text,
            "price_krw
33000
"
        );
    }
    let out = gamelake()
        .args(["sql", "--server", &s.url, "SELECT nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nope"));
}

#[tokio::test]
async fn idempotency_key_resend_gets_the_first_answer() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "");
    let body =
        "{\"ts\":\"2026-11-28T02:10:11Z\",\"code\":\"login\",\"account_id\":1}\n{\"code\":\"x\"}\n";
    let first = s
        .post_logs(body, &[("idempotency-key", "batch-0001")])
        .await;
    assert_eq!(
        first,
        (200, serde_json::json!({"accepted": 1, "dead_lettered": 1}))
    );
    let resp = s
        .client
        .post(format!("{}/v1/logs", s.url))
        .header("idempotency-key", "batch-0001")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("idempotent-replayed").unwrap(), "true");
    // A different key is a different body.
    assert_eq!(
        s.post_logs(body, &[("idempotency-key", "batch-0002")])
            .await
            .0,
        200
    );
    s.wait_for("SELECT count(*) FROM bronze.raw_logs", one(4))
        .await;
    s.wait_for("SELECT count(*) FROM silver.login", one(2))
        .await;
    let (status, err) = s.post_logs(body, &[("idempotency-key", "")]).await;
    assert_eq!(status, 400, "{err}");
}

#[tokio::test]
async fn keys_limits_and_encodings_answer_with_the_right_status() {
    let dir = tempfile::tempdir().unwrap();
    let config = r#"
[ingest]
max_body_bytes = 4096
max_decompressed_bytes = 8192
max_line_bytes = 1024
[[keys]]
id = "servers"
secret = "ingest-secret-0001"
role = "ingest"
[[keys]]
id = "analysts"
secret = "query-secret-00001"
role = "query"
"#;
    let s = Server::start_with_key(dir.path(), config, Some("ingest-secret-0001"));
    let url = format!("{}/v1/logs", s.url);
    let line = "{\"ts\":\"2026-11-28T02:10:11Z\",\"code\":\"login\",\"account_id\":1}\n";
    let c = &s.client;

    let r = c.post(&url).body(line).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.json::<Value>().await.unwrap()["code"], "missing_key");
    let r = c
        .post(&url)
        .bearer_auth("not-a-key")
        .body(line)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = c
        .post(&url)
        .header("x-api-key", "query-secret-00001")
        .body(line)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "a query key cannot ingest");
    let r = c
        .post(&url)
        .bearer_auth("ingest-secret-0001")
        .body(line)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let big = line.repeat(100);
    let r = c
        .post(&url)
        .bearer_auth("ingest-secret-0001")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("ingest.max_body_bytes"));
    // Small on the wire, large once decompressed.
    let bomb = zstd::encode_all(big.repeat(10).as_bytes(), 19).unwrap();
    assert!(bomb.len() < 4096);
    let r = c
        .post(&url)
        .bearer_auth("ingest-secret-0001")
        .header("content-encoding", "zstd")
        .body(bomb)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("ingest.max_decompressed_bytes"));
    let r = c
        .post(&url)
        .bearer_auth("ingest-secret-0001")
        .header("content-encoding", "br")
        .body(line)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = c
        .post(&url)
        .bearer_auth("ingest-secret-0001")
        .header("content-encoding", "gzip")
        .body("not gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // A line over `max_line_bytes` is kept as a dead letter, not refused.
    let long = format!(
        "{{\"ts\":\"2026-11-28T02:10:11Z\",\"code\":\"login\",\"pad\":\"{}\"}}\n",
        "x".repeat(2000)
    );
    let r = c
        .post(&url)
        .bearer_auth("ingest-secret-0001")
        .body(long)
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        serde_json::json!({"accepted": 0, "dead_lettered": 1})
    );

    // Queries need a query (or admin) key.
    let q = format!("{}/v1/query", s.url);
    let r = c
        .post(&q)
        .bearer_auth("ingest-secret-0001")
        .json(&serde_json::json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let r = c
            .post(&q)
            .bearer_auth("query-secret-00001")
            .json(&serde_json::json!({"sql": "SELECT reason, count(*) FROM bronze.dead_letters GROUP BY reason"}))
            .send()
            .await
            .unwrap();
        if r.status() == 200
            && r.json::<Value>().await.unwrap()["rows"] == serde_json::json!([["line_too_long", 1]])
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dead letter never visible"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        c.get(format!("{}/v1/tables", s.url))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

#[test]
fn refuses_to_listen_beyond_loopback_without_keys() {
    let dir = tempfile::tempdir().unwrap();
    // The HTTP and the Postgres port follow the same rule.
    for (flag, key) in [("--http-addr", "http_addr"), ("--pg-addr", "pg_addr")] {
        let out = gamelake()
            .args(["serve", "--data-dir"])
            .arg(dir.path())
            .args([flag, &format!("0.0.0.0:{}", crate::util::free_port())])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("without API keys") && err.contains(key),
            "{err}"
        );
    }
}

#[test]
fn bad_config_refuses_to_start_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[lake]\ncommit_interval_ms = 0\n").unwrap();
    let out = gamelake()
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("lake.commit_interval_ms"));
}

#[tokio::test]
async fn demo_fills_every_tier_with_synthetic_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_command(dir.path(), "", None, &["demo", "--rate", "2000"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let tables = s.tables().await;
        let rows = |schema: &str, name: &str| {
            tables["tables"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["schema"] == schema && t["name"] == name)
                .map_or(0, |t| t["rows"].as_u64().unwrap())
        };
        let silver = tables["tables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["schema"] == "silver")
            .count();
        // All three formats and the Korean item names arrive; about 2 % are dead letters.
        if rows("bronze", "raw_logs") > 1000
            && rows("bronze", "dead_letters") > 0
            && silver >= 10
            && rows("silver", "item") > 0
        {
            let korean = s.query("SELECT count(*) FROM silver.item_acquire WHERE item_name LIKE '%검%' OR item_name LIKE '%방패%'").await;
            assert!(korean[0][0].as_i64().unwrap() > 0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "demo traffic did not fill the tables: {tables}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn large_results_stream_in_every_format_and_the_timeout_holds() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "[lake]\ncommit_interval_ms = 200\n");
    let mut body = Vec::new();
    let mut g = gamelake_loadgen::Generator::new(gamelake_loadgen::GenConfig {
        seed: 11,
        ..Default::default()
    });
    g.body(30_000, 1_764_300_000_000, &mut body);
    assert_eq!(s.post_logs(body, &[]).await.0, 200);
    s.wait_for("SELECT count(*) FROM bronze.raw_logs", one(30_000))
        .await;
    let fetch = |accept: &'static str| {
        let req = s
            .client
            .post(format!("{}/v1/query", s.url))
            .header("accept", accept)
            .json(&serde_json::json!({"sql": "SELECT _offset, line FROM bronze.raw_logs"}));
        async move { req.send().await.unwrap().bytes().await.unwrap() }
    };
    let nd = fetch("application/x-ndjson").await;
    assert_eq!(
        nd.split(|b| *b == b'\n').filter(|l| !l.is_empty()).count(),
        30_000
    );
    let csv = fetch("text/csv").await;
    let csv = String::from_utf8(csv.to_vec()).unwrap();
    assert!(csv.starts_with("_offset,line\n"));
    let json: serde_json::Value = serde_json::from_slice(&fetch("application/json").await).unwrap();
    assert_eq!(json["rows"].as_array().unwrap().len(), 30_000);
    assert_eq!(json["columns"][1]["name"], "line");
    // Arrow IPC stream, read back with arrow's own reader.
    let ipc = fetch("application/vnd.apache.arrow.stream").await;
    let reader =
        gamelake_lake::arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)
            .unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 30_000);
    // The query log counts the rows each streamed answer sent.
    let logged = s
        .query("SELECT rows FROM system.queries WHERE sql = 'SELECT _offset, line FROM bronze.raw_logs'")
        .await;
    assert_eq!(logged.len(), 4);
    assert!(logged.iter().all(|r| r[0] == 30_000), "{logged:?}");

    // An error after the first rows went out: the body carries the error on a line of its own,
    // then ends without closing the JSON, so no client mistakes the rows before it for the
    // answer. generate_series yields its rows in order, 8 192 at a time: the third batch fails.
    let mut failing = s
        .client
        .post(format!("{}/v1/query", s.url))
        .json(&serde_json::json!({"sql": "SELECT CAST(CASE WHEN value < 20000 THEN '1' ELSE 'x' END AS INT) AS v FROM generate_series(1, 100000)"}))
        .send()
        .await
        .unwrap();
    assert_eq!(failing.status(), 200);
    let mut body = Vec::new();
    let ended = loop {
        match failing.chunk().await {
            Ok(Some(c)) => body.extend_from_slice(&c),
            Ok(None) => break "cleanly",
            Err(_) => break "with an error",
        }
    };
    assert_eq!(ended, "with an error");
    let body = String::from_utf8(body).unwrap();
    assert!(
        body.starts_with("{\"columns\":[{\"name\":\"v\""),
        "{}",
        &body[..80]
    );
    let last: serde_json::Value = serde_json::from_str(body.lines().last().unwrap()).unwrap();
    assert_eq!(last["code"], "bad_query");
    assert!(last["error"].as_str().unwrap().contains("'x'"), "{last}");
    assert!(serde_json::from_str::<serde_json::Value>(&body).is_err());
    let logged = s
        .query("SELECT error FROM system.queries WHERE sql LIKE '%generate_series(1, 100000)%' AND error IS NOT NULL")
        .await;
    assert_eq!(logged.len(), 1);
    assert!(logged[0][0].as_str().unwrap().contains("'x'"), "{logged:?}");
    drop(s);

    // A query running past `query.timeout_ms` is cancelled with an error that names the key.
    let s = Server::start(dir.path(), "[query]\ntimeout_ms = 1\n");
    let (status, err) = s
        .try_query(
            "SELECT count(*) FROM bronze.raw_logs a JOIN bronze.raw_logs b ON a._offset = b._offset",
        )
        .await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("query.timeout_ms"),
        "{err}"
    );
}

/// One HTTP/1.1 request on an open connection; returns the status line, the headers and the
/// body of the answer.
async fn exchange(
    conn: &mut tokio::net::TcpStream,
    method: &str,
    path: &str,
    body: &[u8],
) -> (String, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: gamelake\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "the server closed the connection: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content-length");
    while buf.len() < end + length {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "the server closed the connection mid-answer");
        buf.extend_from_slice(&chunk[..n]);
    }
    let (status, headers) = head.split_once("\r\n").unwrap();
    let body = String::from_utf8_lossy(&buf[end..end + length]).to_string();
    (status.to_string(), headers.to_lowercase(), body)
}

/// Backpressure: past `ingest.max_uncommitted_bytes` a body is refused with 503 and
/// Retry-After, read to its end so that the client's connection stays open, and nothing of it
/// is stored; the same body sent again after the commit is stored once.
#[tokio::test]
async fn backpressure_answers_503_keeps_the_connection_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        "[ingest]\nmax_uncommitted_bytes = 1\n[lake]\ncommit_interval_ms = 3000\n",
    );
    // Two bodies of 4 000 lines (~1.1 MB each: more than the server reads ahead).
    let body = |batch: &str| {
        let mut b = String::new();
        for i in 0..4000 {
            b.push_str(&format!(
                "2026-11-28T02:10:12.004+09:00 [login] {{server=kr-01, account_id={i}, os=android, log_id={batch}-{i}, note='{}'}}\n",
                "x".repeat(200)
            ));
        }
        b.into_bytes()
    };
    let (first, second) = (body("a"), body("b"));
    let port = s.url.rsplit(':').next().unwrap();
    let mut conn = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let (status, _, answer) = exchange(&mut conn, "POST", "/v1/logs", &first).await;
    assert!(status.contains(" 200 "), "{status} {answer}");
    // The first body waits for its commit (3 s): the second is refused.
    let (status, headers, answer) = exchange(&mut conn, "POST", "/v1/logs", &second).await;
    assert!(status.contains(" 503 "), "{status} {answer}");
    assert!(headers.contains("retry-after:"), "{headers}");
    assert!(answer.contains("max_uncommitted_bytes"), "{answer}");
    // The same connection still answers.
    let (status, _, answer) = exchange(&mut conn, "GET", "/metrics", b"").await;
    assert!(status.contains(" 200 "), "{status}");
    assert!(answer.contains("gamelake_ingest_lines_total"), "{answer}");
    // Once the first body is committed to all its tables (silver.login can be visible a moment
    // before bronze.raw_logs is), the budget is free again and the second body is accepted, on
    // the same connection.
    s.wait_for("SELECT count(*) FROM silver.login", one(4000))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !s
        .metrics()
        .await
        .lines()
        .any(|l| l == "gamelake_uncommitted_bytes 0")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the first body never counted as committed everywhere"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, answer) = exchange(&mut conn, "POST", "/v1/logs", &second).await;
    assert!(status.contains(" 200 "), "{status} {answer}");
    s.wait_for("SELECT count(*) FROM silver.login", one(8000))
        .await;
    let mut ids = s.stored_log_ids().await;
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 8000);
}

/// Backpressure on memory: rows waiting for their commit hold memory (Parquet pages of the
/// open files once a table exists), counted in `gamelake_buffered_bytes`; past
/// `ingest.max_buffered_bytes` a body is refused with 503 naming the key, though the input
/// bytes are far under `ingest.max_uncommitted_bytes`. The count returns to 0 after the
/// commit, and the refused body is then accepted and stored once.
#[tokio::test]
async fn backpressure_on_buffered_memory_names_its_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(
        dir.path(),
        "[ingest]\nmax_buffered_bytes = 1\n[lake]\ncommit_interval_ms = 3000\n",
    );
    let body = |batch: &str, n: usize| {
        let mut b = String::new();
        for i in 0..n {
            b.push_str(&format!(
                "2026-11-28T02:10:12.004+09:00 [login] {{server=kr-01, account_id={i}, os=android, log_id={batch}-{i}}}\n"
            ));
        }
        b.into_bytes()
    };
    let buffered = || async {
        let metrics = s.metrics().await;
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("gamelake_buffered_bytes "))
            .expect("gamelake_buffered_bytes is exported")
            .parse::<u64>()
            .unwrap()
    };
    // The first body creates the tables at once; the count is back to 0 after that commit.
    let (status, answer) = s.post_logs(body("a", 10), &[]).await;
    assert_eq!(status, 200, "{answer}");
    s.wait_for("SELECT count(*) FROM silver.login", one(10))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while buffered().await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "memory never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The second body's rows wait for the next commit (3 s) as pages of open files.
    let (status, answer) = s.post_logs(body("b", 2000), &[]).await;
    assert_eq!(status, 200, "{answer}");
    while buffered().await == 0 {
        assert!(std::time::Instant::now() < deadline, "rows never counted");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let third = body("c", 2000);
    let (status, answer) = s.post_logs(third.clone(), &[]).await;
    assert_eq!(status, 503, "{answer}");
    assert!(
        s.metrics()
            .await
            .lines()
            .any(|l| l
                == "gamelake_ingest_backpressure_total{limit=\"ingest.max_buffered_bytes\"} 1"),
        "the refusal is counted by its limit"
    );
    assert!(
        answer.to_string().contains("`ingest.max_buffered_bytes`"),
        "{answer}"
    );
    // After the commit the memory is free and the refused body goes in.
    s.wait_for("SELECT count(*) FROM silver.login", one(2010))
        .await;
    while buffered().await != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "memory never released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, answer) = s.post_logs(third.clone(), &[]).await;
    assert_eq!(status, 200, "{answer}");
    s.wait_for("SELECT count(*) FROM silver.login", one(4010))
        .await;
    let mut ids = s.stored_log_ids().await;
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 4010);
}
