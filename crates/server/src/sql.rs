//! `gamelake sql`: one statement, or a REPL, over a data dir or a running server.

use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;

use anyhow::{bail, Context};
use gamelake_lake::arrow::array::RecordBatch;
use gamelake_lake::arrow::datatypes::SchemaRef;
use gamelake_lake::{Lake, QueryEngine};

/// Output format of results.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Table,
    Csv,
    Json,
}

/// Where queries run.
pub enum Target {
    DataDir(String),
    Server { url: String, key: Option<String> },
}

/// Runs `query`, or a REPL reading statements (ended by `;`) from stdin.
pub async fn run(
    target: Target,
    query: Option<String>,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let runner = Runner::new(target)?;
    if let Some(q) = query {
        return runner.run_and_print(&q, format).await;
    }
    let stdin = std::io::stdin();
    let interactive = stdin.is_terminal();
    let mut statement = String::new();
    let prompt = |cont: bool| {
        if interactive {
            eprint!("{}", if cont { "      -> " } else { "gamelake> " });
            let _ = std::io::stderr().flush();
        }
    };
    prompt(false);
    for line in stdin.lock().lines() {
        let line = line.context("reading stdin")?;
        statement.push_str(&line);
        statement.push('\n');
        if line.trim_end().ends_with(';') {
            let sql = statement.trim().trim_end_matches(';').to_string();
            statement.clear();
            if let Err(e) = runner.run_and_print(&sql, format).await {
                eprintln!("error: {e:#}");
                if !interactive {
                    return Err(e);
                }
            }
        }
        prompt(!statement.trim().is_empty());
    }
    if !statement.trim().is_empty() {
        runner.run_and_print(statement.trim(), format).await?;
    }
    Ok(())
}

enum Runner {
    Local(QueryEngine),
    Remote {
        client: reqwest::Client,
        url: String,
        key: Option<String>,
    },
}

impl Runner {
    fn new(target: Target) -> anyhow::Result<Self> {
        Ok(match target {
            Target::DataDir(dir) => {
                let lake = Lake::open(&dir).with_context(|| format!("opening `{dir}`"))?;
                let engine = QueryEngine::new(lake.clone());
                // The KPI views with the default roles (a server applies its `[kpi]` config).
                engine.register_schema(
                    "kpi",
                    Arc::new(gamelake_jobs::KpiSchema::new(lake, Default::default())),
                );
                Runner::Local(engine)
            }
            Target::Server { url, key } => Runner::Remote {
                client: reqwest::Client::new(),
                url: url.trim_end_matches('/').to_string(),
                key,
            },
        })
    }

    async fn run_and_print(&self, sql: &str, format: OutputFormat) -> anyhow::Result<()> {
        let (schema, batches) = match self {
            Runner::Local(engine) => engine.sql(sql).await?,
            Runner::Remote { client, url, key } => {
                let mut req = client
                    .post(format!("{url}/v1/query"))
                    .header("accept", "application/vnd.apache.arrow.stream")
                    .json(&serde_json::json!({ "sql": sql }));
                if let Some(k) = key {
                    req = req.bearer_auth(k);
                }
                let resp = req
                    .send()
                    .await
                    .with_context(|| format!("sending the query to `{url}`"))?;
                let status = resp.status();
                let body = resp.bytes().await.context("reading the answer")?;
                if !status.is_success() {
                    let msg = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                    bail!("server answered {status}: {msg}");
                }
                let reader = gamelake_lake::arrow::ipc::reader::StreamReader::try_new(
                    std::io::Cursor::new(body),
                    None,
                )?;
                let schema = reader.schema();
                let batches = reader.collect::<Result<Vec<_>, _>>()?;
                (schema, batches)
            }
        };
        print(&schema, &batches, format)
    }
}

fn print(schema: &SchemaRef, batches: &[RecordBatch], format: OutputFormat) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        OutputFormat::Table => {
            let text = if batches.is_empty() {
                gamelake_lake::arrow::util::pretty::pretty_format_batches(&[
                    RecordBatch::new_empty(schema.clone()),
                ])?
            } else {
                gamelake_lake::arrow::util::pretty::pretty_format_batches(batches)?
            };
            writeln!(out, "{text}")?;
        }
        OutputFormat::Csv => {
            let mut w = gamelake_lake::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            if batches.is_empty() {
                w.write(&RecordBatch::new_empty(schema.clone()))?;
            }
            for b in batches {
                w.write(b)?;
            }
        }
        OutputFormat::Json => {
            let mut buf = Vec::new();
            crate::http::query::write_ndjson(&mut buf, schema, batches)?;
            out.write_all(&buf)?;
        }
    }
    Ok(())
}
