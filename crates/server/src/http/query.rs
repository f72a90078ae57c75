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
    let started = Instant::now();
    let metrics = &state.metrics;
    metrics
        .queries
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let started_us = chrono::Utc::now().timestamp_micros();
    let timeout = std::time::Duration::from_millis(state.config.query.timeout_ms);
    let result = match tokio::time::timeout(timeout, state.query.sql(&req.sql)).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!(
            "the query ran longer than `query.timeout_ms` = {} ms and was cancelled",
            state.config.query.timeout_ms
        )),
    };
    metrics.query_latency.observe(started.elapsed());
    state.queries.record(crate::system::QueryRecord {
        started_us,
        source: "http",
        user: caller.id.clone(),
        sql: req.sql.clone(),
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        rows: result
            .as_ref()
            .ok()
            .map(|(_, b)| b.iter().map(|b| b.num_rows() as u64).sum()),
        error: result.as_ref().err().cloned(),
    });
    let (schema, batches) = result.map_err(|e| {
        metrics
            .query_errors
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        ApiError::new(ErrorCode::BadQuery, e)
    })?;
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    encode(accept, &schema, &batches)
}

/// Encodes a result in the format `accept` asks for.
pub fn encode(
    accept: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Response, ApiError> {
    let internal = |e: gamelake_lake::arrow::error::ArrowError| {
        ApiError::new(ErrorCode::Internal, format!("encoding the result: {e}"))
    };
    let with_type = |body: Vec<u8>, ct: &'static str| {
        let mut r = body.into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        r
    };
    if accept.contains("text/csv") {
        let mut out = Vec::new();
        {
            let mut w = gamelake_lake::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            if batches.is_empty() {
                w.write(&RecordBatch::new_empty(schema.clone()))
                    .map_err(internal)?;
            }
            for b in batches {
                w.write(b).map_err(internal)?;
            }
        }
        return Ok(with_type(out, "text/csv; charset=utf-8"));
    }
    if accept.contains("application/vnd.apache.arrow.stream") {
        let mut out = Vec::new();
        {
            let mut w = gamelake_lake::arrow::ipc::writer::StreamWriter::try_new(&mut out, schema)
                .map_err(internal)?;
            for b in batches {
                w.write(b).map_err(internal)?;
            }
            w.finish().map_err(internal)?;
        }
        return Ok(with_type(out, "application/vnd.apache.arrow.stream"));
    }
    if accept.contains("application/x-ndjson") {
        let mut out = Vec::new();
        write_ndjson(&mut out, schema, batches).map_err(internal)?;
        return Ok(with_type(out, "application/x-ndjson"));
    }
    let columns: Vec<Value> = schema
        .fields()
        .iter()
        .map(|f| serde_json::json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    let mut rows = Vec::new();
    for b in batches {
        let cols = json_columns(b).map_err(internal)?;
        for row in 0..b.num_rows() {
            rows.push(Value::Array(cols.iter().map(|c| c[row].clone()).collect()));
        }
    }
    Ok(Json(serde_json::json!({ "columns": columns, "rows": rows })).into_response())
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
