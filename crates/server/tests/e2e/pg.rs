//! The Postgres wire protocol with real clients: psql, psycopg (Python) and the PostgreSQL
//! JDBC driver, against the real binary.
//!
//! psql comes from Debian's `postgresql-client`, the JDBC driver from
//! `libpostgresql-jdbc-java` (`/usr/share/java/postgresql.jar`, run with Java 17), psycopg from
//! PyPI in `GAMELAKE_TEST_PYTHON`; `.ci/run` installs them. Without them the tests fail under
//! `CI=true` and are skipped with a note elsewhere.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::Value;

use crate::ingest::MIXED_BODY;
use crate::util::{missing, one, Server};

const KEYS: &str = r#"
[lake]
commit_interval_ms = 200
[[keys]]
id = "ops"
secret = "admin-secret-00001"
role = "admin"
[[keys]]
id = "analyst"
secret = "query-secret-00001"
role = "query"
[[keys]]
id = "servers"
secret = "ingest-secret-0001"
role = "ingest"
"#;

/// Whether `cmd version_arg` runs; if not, the test is skipped (or fails under CI).
fn have(cmd: &str, version_arg: &str, what: &str) -> bool {
    let ok = Command::new(cmd)
        .arg(version_arg)
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        missing(what);
    }
    ok
}

/// Runs psql with `args` against the server; (success, stdout + stderr).
fn psql(s: &Server, user: &str, password: Option<&str>, args: &[&str]) -> (bool, String) {
    let mut cmd = Command::new("psql");
    cmd.args([
        "-h",
        "127.0.0.1",
        "-p",
        &s.pg_port.to_string(),
        "-U",
        user,
        "-d",
        "gamelake",
    ])
    .args(["-X", "-v", "ON_ERROR_STOP=1", "--no-password"])
    .args(args)
    .env_remove("PGPASSWORD");
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    let out = cmd.output().expect("running psql");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `psql` as the `analyst` user of a server without keys.
fn as_analyst(s: &Server, args: &[&str]) -> (bool, String) {
    psql(s, "analyst", None, args)
}

async fn loaded(config: &str, key: Option<&str>) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with_key(dir.path(), config, key);
    assert_eq!(s.post_logs(MIXED_BODY, &[]).await.0, 200);
    s.wait_for("SELECT count(*) FROM silver.payment", one(1))
        .await;
    s.wait_for("SELECT count(*) FROM silver.item", one(3)).await;
    (dir, s)
}

#[tokio::test]
async fn psql_lists_describes_queries_and_cannot_write() {
    if !have("psql", "--version", "psql (postgresql-client)") {
        return;
    }
    let (_dir, s) = loaded("[lake]\ncommit_interval_ms = 200\n", None).await;
    let (ok, out) = as_analyst(&s, &["-c", r"\dt silver.*"]);
    assert!(ok, "{out}");
    for t in [
        "payment",
        "item",
        "item_acquire",
        "currency",
        "combat",
        "resource",
    ] {
        assert!(out.contains(&format!(" {t} ")), "\\dt lacks {t}:\n{out}");
    }
    let (ok, out) = as_analyst(&s, &["-c", r"\d silver.payment"]);
    assert!(ok, "{out}");
    for (col, ty) in [
        ("price_krw", "bigint"),
        ("store", "text"),
        ("event_date", "date"),
        ("event_time", "timestamp"),
    ] {
        assert!(
            out.lines().any(|l| l.contains(col) && l.contains(ty)),
            "\\d silver.payment: no {col} {ty}:\n{out}"
        );
    }
    let (ok, out) = as_analyst(
        &s,
        &[
            "-At",
            "-c",
            "SELECT account_id, price_krw, store, event_date FROM silver.payment",
            "-c",
            "SELECT count(*) FROM bronze.dead_letters",
        ],
    );
    assert!(ok, "{out}");
    assert_eq!(out, "777|33000|google|2026-11-28\n4\n");
    // Read-only: DDL and DML are refused with a message, and nothing changes.
    for stmt in [
        "CREATE TABLE silver.x AS SELECT 1 AS a",
        "INSERT INTO silver.payment (account_id) VALUES (1)",
        "CREATE SCHEMA scratch",
    ] {
        let (ok, out) = as_analyst(&s, &["-c", stmt]);
        assert!(!ok && out.contains("read-only"), "{stmt}: {out}");
    }
    // Every connection (and HTTP) shares the engine's session: a connection cannot change its
    // settings for the others. A client's own settings still work.
    let (ok, out) = as_analyst(&s, &["-c", "SET datafusion.execution.batch_size = 7"]);
    assert!(!ok && out.contains("SET of engine settings"), "{out}");
    let (ok, out) = as_analyst(
        &s,
        &[
            "-At",
            "-c",
            "SET statement_timeout = '5s'",
            "-c",
            "SELECT 1",
        ],
    );
    assert!(ok && out.ends_with("1\n"), "{out}");
    let batch = s.query("SHOW datafusion.execution.batch_size").await;
    assert_eq!(batch[0][1], "8192");
    s.wait_for("SELECT count(*) FROM silver.payment", one(1))
        .await;
}

#[tokio::test]
async fn passwords_are_api_keys_and_wrong_ones_are_refused() {
    if !have("psql", "--version", "psql (postgresql-client)") {
        return;
    }
    let (_dir, s) = loaded(KEYS, Some("admin-secret-00001")).await;
    let (ok, out) = psql(
        &s,
        "analyst",
        Some("query-secret-00001"),
        &["-At", "-c", "SELECT count(*) FROM silver.item"],
    );
    assert!(ok, "{out}");
    assert_eq!(out, "3\n");
    for (user, password) in [
        ("analyst", "query-secret-00002"),
        ("servers", "ingest-secret-0001"),
        ("nobody", "query-secret-00001"),
    ] {
        let (ok, out) = psql(&s, user, Some(password), &["-c", "SELECT 1"]);
        assert!(
            !ok && out
                .to_lowercase()
                .contains("password authentication failed"),
            "{user}: {out}"
        );
    }
    let (ok, out) = as_analyst(&s, &["-c", "SELECT 1"]);
    assert!(!ok, "no password must not get in: {out}");
}

/// A query whose rows take long to compute: DataFusion plans it at once and works while the
/// rows are pulled, so it tests the guard around the rows, not only around planning.
const SLOW: &str = "SELECT sum(value) FROM range(0, 100000000000)";

/// The deadline (`query.timeout_ms`, or the session's `statement_timeout`) and psql's Ctrl-C
/// stop a query while DataFusion computes its rows, with SQLSTATE 57014 and the cause; each
/// query is in `system.queries` with source `pg`, the user, rows or the error.
#[tokio::test]
async fn psql_queries_time_out_are_cancelled_by_ctrl_c_and_are_logged() {
    if !have("psql", "--version", "psql (postgresql-client)") {
        return;
    }
    let config = format!("{KEYS}\n[query]\ntimeout_ms = 4000\n");
    let (_dir, s) = loaded(&config, Some("admin-secret-00001")).await;
    let pw = Some("query-secret-00001");

    let started = std::time::Instant::now();
    let (ok, out) = psql(&s, "analyst", pw, &["-c", SLOW]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("canceling statement due to statement timeout (`query.timeout_ms` = 4000 ms)"),
        "{out}"
    );
    assert!(started.elapsed().as_secs_f64() < 30.0);

    let (ok, out) = psql(
        &s,
        "analyst",
        pw,
        &["-c", "SET statement_timeout = '300ms'", "-c", SLOW],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("statement timeout (the session's statement_timeout = 300 ms)"),
        "{out}"
    );

    // Ctrl-C: psql sends a cancel request on SIGINT.
    let child = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &s.pg_port.to_string()])
        .args(["-U", "analyst", "-d", "gamelake", "-X", "-c", SLOW])
        .env("PGPASSWORD", "query-secret-00001")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let signalled = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(signalled.success());
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("canceling statement due to user request"),
        "{text}"
    );

    // The server goes on answering, and logged all four.
    let (ok, out) = psql(
        &s,
        "analyst",
        pw,
        &["-c", "SELECT count(*) FROM silver.item"],
    );
    assert!(ok && out.contains(" 3"), "{out}");
    let (ok, out) = psql(
        &s,
        "analyst",
        pw,
        &[
            "-A",
            "-t",
            "-c",
            "SELECT user_name, coalesce(CAST(rows AS VARCHAR), '-'), coalesce(error, '-') \
             FROM system.queries WHERE source = 'pg' AND (sql LIKE '%range(0%' \
             OR sql = 'SELECT count(*) FROM silver.item') ORDER BY started_at",
        ],
    );
    assert!(ok, "{out}");
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with(
            "analyst|-|canceling statement due to statement timeout (`query.timeout_ms`"
        ),
        "{out}"
    );
    assert!(lines[0].ends_with("(SQLSTATE 57014)"), "{out}");
    assert!(lines[1].contains("statement_timeout = 300 ms"), "{out}");
    assert!(
        lines[2].contains("canceling statement due to user request"),
        "{out}"
    );
    assert_eq!(lines[3], "analyst|1|-", "{out}");
}

#[tokio::test]
async fn psycopg_reads_types_and_binds_server_side_parameters() {
    let Ok(python) = std::env::var("GAMELAKE_TEST_PYTHON") else {
        return missing("GAMELAKE_TEST_PYTHON with psycopg");
    };
    let (_dir, s) = loaded(KEYS, Some("admin-secret-00001")).await;
    let out = Command::new(python)
        .arg(crate::util::crate_file("tests/clients/pg_psycopg.py"))
        .args([&s.pg_port.to_string(), "analyst", "query-secret-00001"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["version"]
            .as_str()
            .unwrap()
            .starts_with("PostgreSQL 16.6 (gamelake"),
        "{v}"
    );
    let tables: Vec<&str> = v["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap())
        .collect();
    for t in [
        "bronze.raw_logs",
        "bronze.dead_letters",
        "silver.payment",
        "silver.item",
    ] {
        assert!(tables.contains(&t), "{t} not in {tables:?}");
    }
    let p = &v["payment"];
    assert_eq!(p["account_id"], serde_json::json!(["int", "777"]));
    assert_eq!(p["price_krw"], serde_json::json!(["int", "33000"]));
    assert_eq!(p["store"], serde_json::json!(["str", "google"]));
    assert_eq!(p["event_date"], serde_json::json!(["date", "2026-11-28"]));
    // 02:10:12.004 in Seoul is 17:10:12.004 UTC the day before, with its time zone.
    assert_eq!(p["event_time"][0], "datetime");
    assert!(
        p["event_time"][1]
            .as_str()
            .unwrap()
            .starts_with("2026-11-27 17:10:12.004"),
        "{p}"
    );
    assert!(
        p["event_time"][1].as_str().unwrap().ends_with("+00:00"),
        "{p}"
    );
    assert_eq!(v["param"], serde_json::json!([1, 50012]));
    assert_eq!(v["param_prepared"], serde_json::json!([3, 1, 1, 0]));
    assert_eq!(
        v["nulls"],
        serde_json::json!([null, "p_1029384", true, 1.5])
    );
    assert_eq!(v["ddl"][0], "25006", "{v}");
    // psycopg's cancel (the extended protocol) stops a query while its rows are computed.
    assert_eq!(v["cancel"][0], "57014", "{v}");
    assert!(
        v["cancel"][1]
            .as_str()
            .unwrap()
            .contains("canceling statement due to user request"),
        "{v}"
    );
    assert!(v["cancel"][2].as_f64().unwrap() < 30.0, "{v}");
    assert_eq!(v["after_cancel"], serde_json::json!([1]), "{v}");
    assert!(
        v["wrong_password"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("password authentication failed"),
        "{v}"
    );
}

#[tokio::test]
async fn jdbc_lists_tables_reads_types_and_binds_parameters() {
    let jar = "/usr/share/java/postgresql.jar";
    if !std::path::Path::new(jar).exists() {
        return missing("/usr/share/java/postgresql.jar (libpostgresql-jdbc-java)");
    }
    let (_dir, s) = loaded(KEYS, Some("admin-secret-00001")).await;
    let out = Command::new("java")
        .args(["-cp", jar])
        .arg(crate::util::crate_file("tests/clients/PgJdbc.java"))
        .args([&s.pg_port.to_string(), "analyst", "query-secret-00001"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut columns = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split('\t').collect();
        match f[0] {
            "tables" => {
                for t in ["silver.payment", "silver.item", "silver.combat"] {
                    assert!(f[1].split(',').any(|x| x == t), "{t} not in {}", f[1]);
                }
            }
            "column" => {
                columns.insert(f[1].to_string(), (f[2].to_string(), f[3].to_string()));
            }
            "param" => assert_eq!(f[2], "1", "round {}: {line}", f[1]),
            "wrong_password" => assert!(
                f[1] == "28P01"
                    && f[2]
                        .to_lowercase()
                        .contains("password authentication failed"),
                "{line}"
            ),
            _ => panic!("unexpected line {line}"),
        }
    }
    assert_eq!(columns["price_krw"], ("int8".into(), "Long:33000".into()));
    assert_eq!(columns["store"], ("text".into(), "String:google".into()));
    assert_eq!(
        columns["event_date"],
        ("date".into(), "Date:2026-11-28".into())
    );
    assert_eq!(columns["event_time"].0, "timestamptz");
    assert_eq!(text.lines().filter(|l| l.starts_with("param")).count(), 6);
}

#[tokio::test]
async fn tls_from_the_config_carries_psql_sessions() {
    if !have("psql", "--version", "psql (postgresql-client)")
        || !have("openssl", "version", "openssl")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=localhost", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(status.status.success(), "{status:?}");
    let config = format!(
        "{KEYS}\n[pg]\ntls_cert = \"{}\"\ntls_key = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let s = Server::start_with_key(dir.path(), &config, Some("admin-secret-00001"));
    let conn = |mode: &str| {
        format!(
            "host=127.0.0.1 port={} user=analyst dbname=gamelake sslmode={mode}",
            s.pg_port
        )
    };
    // `sslmode=require` fails against a server without TLS; here it connects, and the
    // session reports TLS.
    let out = Command::new("psql")
        .arg(conn("require"))
        .args(["-X", "-At", "-c", "SELECT 1", "-c", r"\conninfo"])
        .env("PGPASSWORD", "query-secret-00001")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(
        text.starts_with("1\n") && text.contains("SSL connection"),
        "{text}"
    );
    drop(s);

    // A key file that is not there refuses to start, naming the key.
    std::fs::remove_file(&key).unwrap();
    let out = crate::util::gamelake()
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--pg-addr",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(dir.path().join("gamelake.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pg.tls_key"), "{err}");
}

/// Apache Superset as analysts use it: registers gamelake as a PostgreSQL database through its
/// REST API (SQLAlchemy's PostgreSQL dialect over psycopg2: `version()`, `current_schema()`,
/// `SHOW …`, the `pg_type` probe, `pg_class`/`pg_namespace`/`pg_attribute` introspection,
/// `BEGIN`/`ROLLBACK`), lists schemas and tables, adds a `silver` table as a dataset, saves a
/// chart and reads its data, and runs SQL Lab.
#[tokio::test]
async fn superset_registers_lists_tables_and_charts_a_silver_table() {
    let Ok(python) = std::env::var("GAMELAKE_TEST_SUPERSET_PYTHON") else {
        return missing("GAMELAKE_TEST_SUPERSET_PYTHON (a virtualenv with apache-superset)");
    };
    let (_dir, s) = loaded(KEYS, Some("admin-secret-00001")).await;
    let home = tempfile::tempdir().unwrap();
    let out = Command::new(python)
        .arg(crate::util::crate_file("tests/clients/superset_probe.py"))
        .arg(home.path())
        .args([&s.pg_port.to_string(), "analyst", "query-secret-00001"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n--- superset.log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(home.path().join("superset.log")).unwrap_or_default()
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();

    // gamelake refused the wrong password, and Superset passed the reason on.
    let bad = &v["bad_password"];
    assert!(bad[0].as_u64().unwrap() >= 400, "{bad}");
    assert!(
        bad[1]
            .as_str()
            .unwrap()
            .contains("Password authentication failed"),
        "{bad}"
    );

    let schemas: Vec<&str> = v["schemas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    for schema in ["bronze", "silver", "gold", "system"] {
        assert!(schemas.contains(&schema), "{schema} not in {schemas:?}");
    }
    let tables = v["silver_tables"].as_array().unwrap();
    for t in ["item", "payment", "resource", "combat"] {
        assert!(
            tables.contains(&serde_json::json!(t)),
            "{t} not in {tables:?}"
        );
    }
    // The dataset's columns come from `pg_attribute` with their Postgres types.
    let cols = &v["dataset_columns"];
    assert_eq!(cols["account_id"], "BIGINT", "{cols}");
    assert_eq!(cols["server"], "TEXT", "{cols}");
    assert!(
        cols["event_time"]
            .as_str()
            .unwrap()
            .starts_with("TIMESTAMP"),
        "{cols}"
    );
    assert_eq!(cols["event_date"], "DATE", "{cols}");
    // The chart's data: one bar per server (the bare-format line names `gameWorld` instead).
    assert_eq!(
        v["chart_rows"],
        serde_json::json!([["kr-03", 1], ["kr-04", 1], [null, 1]]),
        "{v}"
    );
    assert!(
        v["chart_query"].as_str().unwrap().contains("silver.item"),
        "{v}"
    );
    assert_eq!(v["sqllab"], serde_json::json!([["item", 3]]), "{v}");

    // SQL Lab's table panel: columns, no primary key, no indexes.
    let meta = &v["table_metadata"];
    assert_eq!(meta["columns"], cols.as_object().unwrap().len(), "{meta}");
    assert_eq!(meta["primary_key"], serde_json::json!([]), "{meta}");
    assert_eq!(meta["indexes"], serde_json::json!([]), "{meta}");

    // Every statement Superset sent was answered: its connection-time queries, the reflection
    // of `silver.item` (columns, primary key, indexes, constraints), the chart, SQL Lab.
    // (psycopg2 wraps them in `BEGIN` … `ROLLBACK`, which have no rows and are not logged.)
    let failed = s
        .query("SELECT sql, error FROM system.queries WHERE source = 'pg' AND error IS NOT NULL")
        .await;
    assert!(failed.is_empty(), "{failed:?}");
    let sent = s
        .query("SELECT sql FROM system.queries WHERE source = 'pg' AND user_name = 'analyst'")
        .await;
    let sent: Vec<String> = sent
        .iter()
        .map(|r| r[0].as_str().unwrap().to_lowercase())
        .collect();
    for probe in [
        "version()",
        "current_schema()",
        "show standard_conforming_strings",
        "typname = 'hstore'",
        "pg_type_is_visible",
        "pg_index",
        "pg_constraint",
        "from pg_attribute",
        "silver.item",
    ] {
        assert!(
            sent.iter().any(|q| q.contains(probe)),
            "no `{probe}` among {sent:#?}"
        );
    }
}
