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
    let stream = match planned {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(run.fail(e.to_string())),
        Err(_) => return Err(run.fail(run.timeout_message())),
    };
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let format = Format::from_accept(accept);
    let schema = stream.schema();
    let head = format.head(&schema).map_err(|e| run.fail(e.to_string()))?;
    // Rows go out batch by batch as the engine produces them; an error or the timeout after
    // the first byte ends the body early (the client sees a truncated answer, and the query
    // log and metrics record the error).
    let body = futures::stream::unfold(
        (Some(stream), run, format, schema, Some(head), false),
        move |(mut stream, mut run, format, schema, head, mut first_done)| async move {
            if let Some(h) = head {
                return Some((Ok(h), (stream, run, format, schema, None, first_done)));
            }
            let s = stream.as_mut()?;
            match tokio::time::timeout_at(deadline, s.next()).await {
                Ok(Some(Ok(batch))) => {
                    run.rows += batch.num_rows() as u64;
                    match format.batch(&schema, &batch, !first_done) {
                        Ok(bytes) => {
                            first_done |= batch.num_rows() > 0;
                            Some((Ok(bytes), (stream, run, format, schema, None, first_done)))
                        }
                        Err(e) => {
                            let msg = format!("encoding the result: {e}");
                            run.error = Some(msg.clone());
                            Some((
                                Err(std::io::Error::other(msg)),
                                (None, run, format, schema, None, first_done),
                            ))
                        }
                    }
                }
                Ok(Some(Err(e))) => {
                    run.error = Some(e.to_string());
                    Some((
                        Err(std::io::Error::other(e.to_string())),
                        (None, run, format, schema, None, first_done),
                    ))
                }
                Ok(None) => {
                    let tail = format.tail();
                    Some((Ok(tail), (None, run, format, schema, None, first_done)))
                }
                Err(_) => {
                    let msg = run.timeout_message();
                    run.error = Some(msg.clone());
                    Some((
                        Err(std::io::Error::other(msg)),
                        (None, run, format, schema, None, first_done),
                    ))
                }
            }
        },
    );
    let mut r = axum::body::Body::from_stream(body).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    Ok(r)
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

    /// What goes before the rows: JSON's column list, CSV's header, Arrow's schema message.
    fn head(self, schema: &SchemaRef) -> Arrow<axum::body::Bytes> {
        Ok(match self {
            Format::Json => {
                let columns: Vec<Value> = schema
                    .fields()
                    .iter()
                    .map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string()}))
                    .collect();
                format!("{{\"columns\":{},\"rows\":[", Value::Array(columns)).into()
            }
            Format::Ndjson => axum::body::Bytes::new(),
            Format::Csv => {
                let mut out = Vec::new();
                gamelake_lake::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out)
                    .write(&RecordBatch::new_empty(schema.clone()))?;
                out.into()
            }
            Format::Arrow => {
                let mut w =
                    gamelake_lake::arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema)?;
                w.flush()?;
                std::mem::take(w.get_mut()).into()
            }
        })
    }

    /// One batch of rows; `first` when no row was sent before (JSON's separators).
    fn batch(
        self,
        schema: &SchemaRef,
        batch: &RecordBatch,
        first: bool,
    ) -> Arrow<axum::body::Bytes> {
        let mut out = Vec::new();
        match self {
            Format::Json => {
                let cols = json_columns(batch)?;
                for row in 0..batch.num_rows() {
                    if row > 0 || !first {
                        out.push(b',');
                    }
                    let values: Vec<Value> = cols.iter().map(|c| c[row].clone()).collect();
                    serde_json::to_writer(&mut out, &values).map_err(|e| {
                        gamelake_lake::arrow::error::ArrowError::ExternalError(e.into())
                    })?;
                }
            }
            Format::Ndjson => write_ndjson(&mut out, schema, std::slice::from_ref(batch))?,
            Format::Csv => gamelake_lake::arrow::csv::WriterBuilder::new()
                .with_header(false)
                .build(&mut out)
                .write(batch)?,
            Format::Arrow => {
                // A stream message per batch: the schema went in `head`, so write the batch
                // with an IPC encoder that skips it.
                let mut w =
                    gamelake_lake::arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema)?;
                w.flush()?;
                let schema_len = w.get_ref().len();
                w.write(batch)?;
                w.flush()?;
                out = w.get_ref()[schema_len..].to_vec();
            }
        }
        Ok(out.into())
    }

    /// What closes the body.
    fn tail(self) -> axum::body::Bytes {
        match self {
            Format::Json => "]}".into(),
            // The end-of-stream marker: continuation + zero length.
            Format::Arrow => vec![0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0].into(),
            Format::Ndjson | Format::Csv => axum::body::Bytes::new(),
        }
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
