//! `gamelake sql`: one statement, or a REPL, over a data dir or a running server.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
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

/// Runs `query`; without one, a REPL on a terminal (line editing, history kept across
/// sessions, Ctrl-C stops the running query), or statements ended by `;` read from a pipe.
pub async fn run(
    target: Target,
    query: Option<String>,
    format: OutputFormat,
) -> anyhow::Result<()> {
    let runner = Runner::new(target)?;
    if let Some(q) = query {
        return runner.run_and_print(&q, format).await;
    }
    if std::io::stdin().is_terminal() {
        return repl(&runner, format).await;
    }
    let mut statement = String::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.context("reading stdin")?;
        statement.push_str(&line);
        statement.push('\n');
        if line.trim_end().ends_with(';') {
            let sql = statement.trim().trim_end_matches(';').to_string();
            statement.clear();
            runner.run_and_print(&sql, format).await?;
        }
    }
    if !statement.trim().is_empty() {
        runner.run_and_print(statement.trim(), format).await?;
    }
    Ok(())
}

/// The history file: `$GAMELAKE_HISTORY`, else `$XDG_STATE_HOME/gamelake/history`, else
/// `~/.local/state/gamelake/history`.
fn history_path() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(p) = env("GAMELAKE_HISTORY") {
        return Some(PathBuf::from(p));
    }
    let state = env("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| env("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(state.join("gamelake").join("history"))
}

/// The interactive loop: a statement may span lines and ends with `;`; each statement is one
/// history entry, appended to the history file as soon as it is entered. Ctrl-C clears the
/// line being typed, or stops the running query; Ctrl-D on an empty line ends the session.
async fn repl(runner: &Runner, format: OutputFormat) -> anyhow::Result<()> {
    use rustyline::error::ReadlineError;
    let config = rustyline::Config::builder()
        .max_history_size(10_000)
        .context("history size")?
        .history_ignore_dups(true)
        .context("history settings")?
        .auto_add_history(false)
        .build();
    let mut editor =
        rustyline::DefaultEditor::with_config(config).context("starting the line editor")?;
    let history = history_path();
    if let Some(path) = &history {
        if let Some(dir) = path.parent() {
            let _ = std::fs::create_dir_all(dir);
        }
        // A missing file is a first session; an unreadable one is reported and not overwritten.
        if path.exists() {
            if let Err(e) = editor.load_history(path) {
                eprintln!(
                    "warning: not reading history from `{}`: {e}",
                    path.display()
                );
            }
        }
    }
    eprintln!("gamelake SQL; statements end with `;`, Ctrl-D leaves.");
    let mut statement = String::new();
    loop {
        let prompt = if statement.is_empty() {
            "gamelake> "
        } else {
            "      -> "
        };
        // Ctrl-D with a statement pending runs it, then leaves.
        let (line, last) = match editor.readline(prompt) {
            Ok(line) => (line, false),
            Err(ReadlineError::Interrupted) => {
                statement.clear();
                continue;
            }
            Err(ReadlineError::Eof) if !statement.trim().is_empty() => (String::new(), true),
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e).context("reading a line"),
        };
        if statement.is_empty() && line.trim().is_empty() {
            continue;
        }
        statement.push_str(&line);
        statement.push('\n');
        if !last && !line.trim_end().ends_with(';') {
            continue;
        }
        let entered = statement.trim_end().to_string();
        statement.clear();
        let _ = editor.add_history_entry(entered.as_str());
        if let Some(path) = &history {
            if let Err(e) = editor.append_history(path) {
                eprintln!("warning: not saving history to `{}`: {e}", path.display());
            }
        }
        let sql = entered.trim_end_matches(';');
        tokio::select! {
            r = runner.run_and_print(sql, format) => {
                if let Err(e) = r {
                    eprintln!("error: {e:#}");
                }
            }
            _ = tokio::signal::ctrl_c() => eprintln!("cancelled"),
        }
        if last {
            break;
        }
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
                let body = resp.bytes().await.context(
                    "reading the answer: the server stopped sending it (a query that fails \
                     after its first rows ends its answer early; `system.queries` has the error)",
                )?;
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
