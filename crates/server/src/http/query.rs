//! `POST /v1/query` and `GET /v1/tables`.
//!
//! Results are encoded by `Accept`: JSON (default) `{"columns": [...], "rows": [[...]]}`,
//! `application/x-ndjson` (one object per row), `text/csv`, or
//! `application/vnd.apache.arrow.stream`. In JSON, integers and floats are numbers, booleans
//! `true`/`false`, timestamps RFC 3339 text, dates `YYYY-MM-DD`, NULL `null`, binary as text when
//! it is UTF-8 and hex otherwise.

use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use gamelake_lake::arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use gamelake_lake::arrow::datatypes::{
    DataType, Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, SchemaRef,
    UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use gamelake_lake::arrow::util::display::{ArrayFormatter, FormatOptions};
use serde::Deserialize;
use serde_json::Value;

use super::error::{ApiError, ErrorCode};
use super::AppState;
use crate::config::Role;

#[derive(Deserialize)]
pub struct QueryRequest {
    sql: String,
}

pub async fn post_query(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let caller = super::auth::authorize(&state.config.keys, &headers, Role::Query)?;
    let req: QueryRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("body must be JSON `{{\"sql\": \"...\"}}`: {e}"),
        )
    })?;
    state
        .metrics
        .queries
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut run = Run {
        state: state.clone(),
        started: Instant::now(),
        started_us: chrono::Utc::now().timestamp_micros(),
        user: caller.id,
        sql: req.sql,
        rows: 0,
        error: None,
    };
    let timeout = std::time::Duration::from_millis(state.config.query.timeout_ms);
    let deadline = tokio::time::Instant::now() + timeout;
    // Planning errors (bad SQL, unknown column) answer 400 before any row is sent.
    let planned = tokio::time::timeout_at(deadline, state.query.stream(&run.sql)).await;
    let mut stream = match planned {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(run.fail(e.to_string())),
        Err(_) => return Err(run.fail(run.timeout_message())),
    };
    // The answer starts with the first batch, so that an error before it (a value that does
    // not cast, a division by zero, memory, the timeout) still answers 400 with its message.
    // Aggregations and sorts produce their first rows last, so most errors are caught here.
    let first = match tokio::time::timeout_at(deadline, stream.next()).await {
        Ok(Some(Ok(batch))) => Some(batch),
        Ok(Some(Err(e))) => return Err(run.fail(e.to_string())),
        Ok(None) => None,
        Err(_) => return Err(run.fail(run.timeout_message())),
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let (encoder, head) = Encoder::new(Format::from_accept(accept), stream.schema())
        .map_err(|e| run.fail(format!("encoding the result: {e}")))?;
    let content_type = encoder.format.content_type();
    // Rows go out batch by batch as the engine produces them. An error or the timeout after
    // the first batch cannot change the status any more: the body gets the error's JSON on a
    // line of its own (not in Arrow IPC), then ends without its closing bytes, so that no
    // client takes the rows before it for the whole answer. The query log, the metrics and
    // the server's log record the error.
    let sending = Sending {
        rows: Some(stream),
        run,
        encoder,
        head: Some(head),
        first: Some(first),
        failed: None,
    };
    let body = futures::stream::unfold(sending, move |mut s| async move {
        if let Some(head) = s.head.take() {
            return Some((Ok(head), s));
        }
        if let Some(msg) = s.failed.take() {
            s.rows = None;
            // hyper drops what it has buffered but not written when the body fails in the
            // same turn; yielding once lets it flush the error's line to the socket first.
            tokio::task::yield_now().await;
            return Some((Err(std::io::Error::other(msg)), s));
        }
        let rows = s.rows.as_mut()?;
        // The item read before the answer started (a batch, or the end), then the stream's.
        let next = match s.first.take() {
            Some(first) => Ok(first.map(Ok)),
            None => tokio::time::timeout_at(deadline, rows.next()).await,
        };
        let encoded = match next {
            Ok(Some(Ok(batch))) => {
                s.run.rows += batch.num_rows() as u64;
                s.encoder.batch(&batch)
            }
            Ok(Some(Err(e))) => Err(e.to_string()),
            Ok(None) => {
                s.rows = None;
                s.encoder.finish()
            }
            Err(_) => Err(s.run.timeout_message()),
        };
        match encoded {
            Ok(bytes) => Some((Ok(bytes), s)),
            Err(msg) => {
                tracing::warn!(error = %msg, rows_sent = s.run.rows, "a query failed after its first rows were sent");
                s.run.error = Some(msg.clone());
                s.failed = Some(msg.clone());
                Some((Ok(s.encoder.error_line(&msg)), s))
            }
        }
    });
    let mut r = axum::body::Body::from_stream(body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    Ok(r)
}

/// The state of a streamed answer: the rows still to come, the query's record, the encoder,
/// and the head (column list, CSV header, Arrow schema) until it is sent.
struct Sending {
    rows: Option<gamelake_lake::datafusion::execution::SendableRecordBatchStream>,
    run: Run,
    encoder: Encoder,
    head: Option<axum::body::Bytes>,
    /// What the stream gave before the answer started (a batch, or its end), until sent.
    first: Option<Option<RecordBatch>>,
    /// The error that ends the body, once its line went out.
    failed: Option<String>,
}

/// One query of the API: recorded in `system.queries` and the metrics when it ends (its
/// body fully sent, failed, or dropped by the client).
struct Run {
    state: AppState,
    started: Instant,
    started_us: i64,
    user: String,
    sql: String,
    rows: u64,
    error: Option<String>,
}

impl Run {
    fn timeout_message(&self) -> String {
        format!(
            "the query ran longer than `query.timeout_ms` = {} ms and was cancelled",
            self.state.config.query.timeout_ms
        )
    }

    fn fail(&mut self, msg: String) -> ApiError {
        self.error = Some(msg.clone());
        ApiError::new(ErrorCode::BadQuery, msg)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let m = &self.state.metrics;
        m.query_latency.observe(self.started.elapsed());
        if self.error.is_some() {
            m.query_errors
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.state.queries.record(crate::system::QueryRecord {
            started_us: self.started_us,
            source: "http",
            user: std::mem::take(&mut self.user),
            sql: std::mem::take(&mut self.sql),
            duration_ms: self.started.elapsed().as_secs_f64() * 1000.0,
            rows: self.error.is_none().then_some(self.rows),
            error: self.error.take(),
        });
    }
}

/// Result encodings, chosen by `Accept`.
#[derive(Clone, Copy)]
enum Format {
    Json,
    Ndjson,
    Csv,
    Arrow,
}

type Arrow<T> = Result<T, gamelake_lake::arrow::error::ArrowError>;

impl Format {
    fn from_accept(accept: &str) -> Self {
        if accept.contains("text/csv") {
            Format::Csv
        } else if accept.contains("application/vnd.apache.arrow.stream") {
            Format::Arrow
        } else if accept.contains("application/x-ndjson") {
            Format::Ndjson
        } else {
            Format::Json
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => "application/vnd.apache.arrow.stream",
        }
    }
}

/// Encodes one answer as it streams; Arrow IPC keeps one stream writer for the whole answer.
struct Encoder {
    format: Format,
    schema: SchemaRef,
    arrow: Option<gamelake_lake::arrow::ipc::writer::StreamWriter<Vec<u8>>>,
    /// Whether a JSON row went out (the next one needs a comma).
    rows_sent: bool,
}

impl Encoder {
    /// The encoder and what goes before the rows: JSON's column list, CSV's header, Arrow's
    /// schema message.
    fn new(format: Format, schema: SchemaRef) -> Arrow<(Self, axum::body::Bytes)> {
        let mut arrow = None;
        let head: Vec<u8> = match format {
            Format::Json => {
                let columns: Vec<Value> = schema
                    .fields()
                    .iter()
                    .map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string()}))
                    .collect();
                format!("{{\"columns\":{},\"rows\":[", Value::Array(columns)).into_bytes()
            }
            Format::Ndjson => Vec::new(),
            Format::Csv => {
                let mut out = Vec::new();
                gamelake_lake::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out)
                    .write(&RecordBatch::new_empty(schema.clone()))?;
                out
            }
            Format::Arrow => {
                let mut w =
                    gamelake_lake::arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &schema)?;
                let head = std::mem::take(w.get_mut());
                arrow = Some(w);
                head
            }
        };
        let encoder = Self {
            format,
            schema,
            arrow,
            rows_sent: false,
        };
        Ok((encoder, head.into()))
    }

    /// One batch of rows.
    fn batch(&mut self, batch: &RecordBatch) -> Result<axum::body::Bytes, String> {
        let encoding =
            |e: gamelake_lake::arrow::error::ArrowError| format!("encoding the result: {e}");
        let mut out = Vec::new();
        match self.format {
            Format::Json => {
                let cols = json_columns(batch).map_err(encoding)?;
                for row in 0..batch.num_rows() {
                    if self.rows_sent {
                        out.push(b',');
                    }
                    self.rows_sent = true;
                    let values: Vec<Value> = cols.iter().map(|c| c[row].clone()).collect();
                    serde_json::to_writer(&mut out, &values)
                        .map_err(|e| format!("encoding the result: {e}"))?;
                }
            }
            Format::Ndjson => write_ndjson(&mut out, &self.schema, std::slice::from_ref(batch))
                .map_err(encoding)?,
            Format::Csv => gamelake_lake::arrow::csv::WriterBuilder::new()
                .with_header(false)
                .build(&mut out)
                .write(batch)
                .map_err(encoding)?,
            Format::Arrow => {
                let w = self.arrow.as_mut().expect("an Arrow answer has its writer");
                w.write(batch).map_err(encoding)?;
                out = std::mem::take(w.get_mut());
            }
        }
        Ok(out.into())
    }

    /// The line that tells a client reading a failed answer why it ends early: the error body
    /// of the API on a line of its own; nothing in Arrow IPC, where text would only corrupt the
    /// stream further.
    fn error_line(&self, msg: &str) -> axum::body::Bytes {
        if let Format::Arrow = self.format {
            return axum::body::Bytes::new();
        }
        let body = ApiError::new(ErrorCode::BadQuery, msg).body();
        format!("\n{body}\n").into()
    }

    /// What closes the answer: JSON's brackets, Arrow's end-of-stream marker.
    fn finish(&mut self) -> Result<axum::body::Bytes, String> {
        Ok(match (self.format, self.arrow.as_mut()) {
            (Format::Json, _) => "]}".into(),
            (Format::Arrow, Some(w)) => {
                w.finish()
                    .map_err(|e| format!("encoding the result: {e}"))?;
                std::mem::take(w.get_mut()).into()
            }
            _ => axum::body::Bytes::new(),
        })
    }
}

/// Writes one JSON object per row, keys in column order.
pub fn write_ndjson(
    out: &mut Vec<u8>,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<(), gamelake_lake::arrow::error::ArrowError> {
    let names: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| Value::from(f.name().as_str()).to_string())
        .collect();
    for b in batches {
        let cols = json_columns(b)?;
        for row in 0..b.num_rows() {
            out.push(b'{');
            for (i, (name, col)) in names.iter().zip(&cols).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(name.as_bytes());
                out.push(b':');
                out.extend_from_slice(col[row].to_string().as_bytes());
            }
            out.extend_from_slice(b"}\n");
        }
    }
    Ok(())
}

/// Each column of a batch as JSON values.
pub fn json_columns(
    batch: &RecordBatch,
) -> Result<Vec<Vec<Value>>, gamelake_lake::arrow::error::ArrowError> {
    batch.columns().iter().map(json_column).collect()
}

fn json_column(array: &ArrayRef) -> Result<Vec<Value>, gamelake_lake::arrow::error::ArrowError> {
    let n = array.len();
    let nullable = |f: &dyn Fn(usize) -> Value| -> Vec<Value> {
        (0..n)
            .map(|i| if array.is_null(i) { Value::Null } else { f(i) })
            .collect()
    };
    macro_rules! ints {
        ($t:ty) => {{
            let a = array.as_primitive::<$t>();
            nullable(&|i| Value::from(a.value(i)))
        }};
    }
    macro_rules! floats {
        ($t:ty) => {{
            let a = array.as_primitive::<$t>();
            nullable(&|i| {
                serde_json::Number::from_f64(a.value(i) as f64).map_or(Value::Null, Value::Number)
            })
        }};
    }
    Ok(match array.data_type() {
        DataType::Int8 => ints!(Int8Type),
        DataType::Int16 => ints!(Int16Type),
        DataType::Int32 => ints!(Int32Type),
        DataType::Int64 => ints!(Int64Type),
        DataType::UInt8 => ints!(UInt8Type),
        DataType::UInt16 => ints!(UInt16Type),
        DataType::UInt32 => ints!(UInt32Type),
        DataType::UInt64 => ints!(UInt64Type),
        DataType::Float32 => floats!(Float32Type),
        DataType::Float64 => floats!(Float64Type),
        DataType::Boolean => {
            let a = array.as_boolean();
            nullable(&|i| Value::Bool(a.value(i)))
        }
        DataType::Binary => {
            let a = array.as_binary::<i32>();
            nullable(&|i| Value::String(binary_text(a.value(i))))
        }
        DataType::LargeBinary => {
            let a = array.as_binary::<i64>();
            nullable(&|i| Value::String(binary_text(a.value(i))))
        }
        DataType::BinaryView => {
            let a = array.as_binary_view();
            nullable(&|i| Value::String(binary_text(a.value(i))))
        }
        _ => {
            let options = FormatOptions::default().with_display_error(true);
            let f = ArrayFormatter::try_new(array.as_ref(), &options)?;
            nullable(&|i| Value::String(f.value(i).to_string()))
        }
    })
}

fn binary_text(bytes: &[u8]) -> String {
    match std::str::from_utf8(bytes) {
        Ok(s) => s.to_string(),
        Err(_) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
    }
}

pub async fn get_tables(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    super::auth::authorize(&state.config.keys, &headers, Role::Query)?;
    let infos = crate::tables::describe_all(&state.lake)
        .await
        .map_err(|e| ApiError::new(ErrorCode::Internal, format!("listing tables: {e:#}")))?;
    Ok(Json(serde_json::json!({ "tables": infos })).into_response())
}
