//! `POST /v1/logs`: read and decompress the body within limits, parse it, make it durable in
//! the write-ahead log, answer `{"accepted": N, "dead_lettered": M}`.

use std::io::Read;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::error::{ApiError, ErrorCode};
use super::AppState;
use crate::config::Role;
use crate::pipeline::idempotency::{Answer, Begin};
use crate::pipeline::Pipeline;

/// Reads a refused request's body to its end (at most `limit` bytes) and drops it. A body left
/// unread makes the server close the connection after answering; under backpressure every
/// client would then reconnect for each retry, and connection churn costs more than reading.
async fn discard(body: Body, limit: usize) {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut read = 0;
    while let Some(Ok(chunk)) = stream.next().await {
        read += chunk.len();
        if read > limit {
            break;
        }
    }
}

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

pub async fn post_logs(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let received = Instant::now();
    let caller = super::auth::authorize(&state.config.keys, &headers, Role::Ingest)?;
    let pipeline = state.pipeline()?;
    if pipeline.failed() {
        return Err(ApiError::new(
            ErrorCode::Overloaded,
            "the write-ahead log failed; the server needs an operator",
        ));
    }
    if let Some(limit) = pipeline.overloaded() {
        pipeline.metrics.count_backpressure(limit);
        discard(body, state.config.ingest.max_body_bytes).await;
        return Err(ApiError::new(
            ErrorCode::Overloaded,
            format!("ingest is ahead of table commits (`{limit}` reached); retry after the Retry-After delay"),
        ));
    }
    let limits = &state.config.ingest;
    let raw = axum::body::to_bytes(body, limits.max_body_bytes)
        .await
        .map_err(|_| {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "request body is over `ingest.max_body_bytes` = {} bytes: send smaller batches",
                    limits.max_body_bytes
                ),
            )
        })?;
    let body = decompress(&headers, raw, limits.max_decompressed_bytes)?;
    let key = idempotency_key(&headers)?;
    if let Some(k) = &key {
        match pipeline.idempotency.begin(&caller.id, k, now_ms()) {
            Begin::New => {}
            Begin::Replay(answer) => {
                let mut resp = Json(answer).into_response();
                resp.headers_mut()
                    .insert("idempotent-replayed", HeaderValue::from_static("true"));
                return Ok(resp);
            }
            Begin::InFlight => {
                return Err(ApiError::new(
                    ErrorCode::InProgress,
                    format!("a request with Idempotency-Key `{k}` is still being processed"),
                ))
            }
        }
    }
    let result = make_durable(pipeline, &caller.id, key.as_deref(), body).await;
    match (&result, &key) {
        (Ok(answer), Some(k)) => pipeline
            .idempotency
            .finish(&caller.id, k, now_ms(), *answer),
        (Err(_), Some(k)) => pipeline.idempotency.abort(&caller.id, k),
        _ => {}
    }
    let answer = result?;
    pipeline.metrics.ack_latency.observe(received.elapsed());
    Ok(Json(answer).into_response())
}

async fn make_durable(
    pipeline: &Pipeline,
    source: &str,
    key: Option<&str>,
    body: Bytes,
) -> Result<Answer, ApiError> {
    pipeline
        .ingest(source, key, body)
        .await
        .map_err(|e| match e {
            crate::pipeline::SubmitError::ShuttingDown => ApiError::new(
                ErrorCode::Overloaded,
                "the server is shutting down; retry on another instance or later",
            ),
            crate::pipeline::SubmitError::Wal(msg) => ApiError::new(ErrorCode::Internal, msg),
        })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let k = v
        .to_str()
        .map_err(|_| {
            ApiError::new(
                ErrorCode::BadRequest,
                "`Idempotency-Key` must be visible ASCII",
            )
        })?
        .trim();
    if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY_BYTES {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            format!("`Idempotency-Key` must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} characters"),
        ));
    }
    Ok(Some(k.to_string()))
}

/// The body as lines: `Content-Encoding` `gzip` or `zstd` is undone within `limit` bytes.
fn decompress(headers: &HeaderMap, raw: Bytes, limit: usize) -> Result<Bytes, ApiError> {
    let encoding = headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let too_large = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("decompressed body is over `ingest.max_decompressed_bytes` = {limit} bytes: send smaller batches"),
        )
    };
    let read_limited = |mut reader: Box<dyn Read + '_>, what: &str| -> Result<Bytes, ApiError> {
        let mut out = Vec::with_capacity(raw.len().saturating_mul(4).min(limit));
        let n = reader
            .by_ref()
            .take(limit as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|e| {
                ApiError::new(
                    ErrorCode::BadRequest,
                    format!("body is not valid {what}: {e}"),
                )
            })?;
        if n > limit {
            return Err(too_large());
        }
        Ok(Bytes::from(out))
    };
    match encoding.as_str() {
        "identity" | "" => {
            if raw.len() > limit {
                return Err(too_large());
            }
            Ok(raw)
        }
        "gzip" | "x-gzip" => read_limited(
            Box::new(flate2::read::MultiGzDecoder::new(&raw[..])),
            "gzip",
        ),
        "zstd" => {
            let decoder = zstd::stream::read::Decoder::new(&raw[..]).map_err(|e| {
                ApiError::new(
                    ErrorCode::BadRequest,
                    format!("body is not valid zstd: {e}"),
                )
            })?;
            read_limited(Box::new(decoder), "zstd")
        }
        other => Err(ApiError::new(
            ErrorCode::UnsupportedEncoding,
            format!("`Content-Encoding: {other}` is not supported: use gzip, zstd or none"),
        )),
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
