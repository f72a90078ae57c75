//! `gamelake import` on the real binary: plain, gzip and zstd files into a data dir, each line
//! once (also when the import runs again), malformed lines as dead letters, clear refusals.

use std::io::Write;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::util::{gamelake, Server};

fn import(dir: &Path, files: &[&str]) -> Output {
    import_with(dir, files, &[])
}

fn import_with(dir: &Path, files: &[&str], args: &[&str]) -> Output {
    gamelake()
        .arg("import")
        .args(files.iter().map(|f| dir.join(f)))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(args)
        .output()
        .expect("running gamelake import")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `SELECT …` over the data dir with `gamelake sql`, as CSV without its header.
fn sql(dir: &Path, query: &str) -> String {
    let out = gamelake()
        .args(["sql", query, "--format", "csv", "--data-dir"])
        .arg(dir.join("data"))
        .output()
        .expect("running gamelake sql");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .skip(1)
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_loads_plain_gzip_and_zstd_files_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Plain kv lines, more than one body (4 MiB), and a line that is not a log.
    let logins = 80_000;
    let mut plain = String::new();
    for i in 0..logins {
        plain += &format!("2026-11-01 10:00:00 [login] {{server=kr-01, account_id={i}}}\n");
    }
    plain += "this is not a log line\n";
    assert!(plain.len() > 4 << 20);
    std::fs::write(d.join("server.log"), &plain).unwrap();
    // NDJSON, gzip-compressed; the name does not say so.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for i in 0..300 {
        writeln!(
            gz,
            r#"{{"ts":"2026-11-01T01:00:00Z","code":"payment","account_id":{i},"price_krw":1100}}"#
        )
        .unwrap();
    }
    std::fs::write(d.join("platform.log"), gz.finish().unwrap()).unwrap();
    // zstd, with CRLF line ends and an empty line.
    let mut lines = String::new();
    for i in 0..200 {
        lines += &format!("2026-11-01 11:00:00 [logout] {{server=kr-02, account_id={i}}}\r\n");
    }
    lines += "\r\n";
    std::fs::write(
        d.join("client.zst"),
        zstd::encode_all(lines.as_bytes(), 3).unwrap(),
    )
    .unwrap();

    let files = ["server.log", "platform.log", "client.zst"];
    let out = import(d, &files);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("server.log: 80000 lines accepted, 1 dead-lettered")
            && stdout.contains("in 2 bodies"),
        "{stdout}"
    );
    assert!(
        stdout.contains("platform.log: 300 lines accepted, 0 dead-lettered"),
        "{stdout}"
    );
    assert!(
        stdout.contains("client.zst: 200 lines accepted, 0 dead-lettered"),
        "{stdout}"
    );
    let counts = "SELECT (SELECT count(*) FROM silver.login) AS logins, \
        (SELECT count(DISTINCT account_id) FROM silver.login) AS accounts, \
        (SELECT sum(price_krw) FROM silver.payment) AS krw, \
        (SELECT count(*) FROM silver.logout) AS logouts, \
        (SELECT count(*) FROM bronze.raw_logs) AS raw, \
        (SELECT count(*) FROM bronze.dead_letters) AS dead";
    assert_eq!(sql(d, counts), "80000,80000,330000,200,80501,1");
    let dead = sql(
        d,
        "SELECT CAST(line AS VARCHAR), reason, _source FROM bronze.dead_letters",
    );
    assert_eq!(dead, "this is not a log line,syntax,import");

    // Again, with idempotency keys forgotten at once: the record of imported files beside the
    // write-ahead log still knows every body, and nothing is written twice.
    let config = d.join("window0.toml");
    std::fs::write(&config, "[ingest]\nidempotency_window_s = 0\n").unwrap();
    let out = import_with(d, &files, &["--config", config.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("server.log: 80000 lines accepted, 1 dead-lettered, 4.")
            && stdout.contains("(2 already imported, skipped)"),
        "{stdout}"
    );
    assert_eq!(sql(d, counts), "80000,80000,330000,200,80501,1");

    // A file that is not there: exit 2 before anything is read, naming it.
    let out = import(d, &["server.log", "missing.log"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot read `") && text(&out.stderr).contains("missing.log"),
        "{}",
        text(&out.stderr)
    );

    // Beside a server of the same data dir: refused, the log is the server's.
    let mut s = Server::start(d, "");
    let out = import(d, &["server.log"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("in use by another process"),
        "{}",
        text(&out.stderr)
    );
    // The server sees what was imported.
    let rows = s.query("SELECT count(*) FROM silver.login").await;
    assert_eq!(rows, vec![vec![Value::from(80000)]]);
    s.signal(15);
    assert_eq!(s.wait_exit(Duration::from_secs(60)), Some(0));
}
