//! The HTTP API on one port: ingest, query, tables, health, metrics and the dashboard.

pub mod auth;
pub mod error;
pub mod ingest;
pub mod query;

use std::sync::{Arc, OnceLock};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use gamelake_lake::{Lake, QueryEngine};

use crate::config::{Config, Role};
use crate::live::Live;
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Set once WAL recovery is done; until then ingest and readiness answer 503.
    pub pipeline: Arc<OnceLock<Arc<Pipeline>>>,
    pub query: QueryEngine,
    pub lake: Lake,
    pub live: Arc<Live>,
    pub queries: Arc<crate::system::QueryLog>,
}

impl AppState {
    /// The pipeline, or a 503 while recovery runs.
    pub fn pipeline(&self) -> Result<&Arc<Pipeline>, error::ApiError> {
        self.pipeline.get().ok_or_else(|| {
            error::ApiError::new(
                error::ErrorCode::NotReady,
                "the server is still recovering its write-ahead log; retry shortly",
            )
        })
    }
}

/// The routes of `DESIGN.md`.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/v1/logs", post(ingest::post_logs))
        .route("/v1/query", post(query::post_query))
        .route("/v1/tables", get(query::get_tables))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/live", get(live))
        .route("/", get(dashboard))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        // Ingest reads its body with its own limit and a message that names it.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

async fn count_requests(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route: &'static str = match req.extensions().get::<MatchedPath>().map(|p| p.as_str()) {
        Some("/v1/logs") => "/v1/logs",
        Some("/v1/query") => "/v1/query",
        Some("/v1/tables") => "/v1/tables",
        Some("/healthz") => "/healthz",
        Some("/readyz") => "/readyz",
        Some("/metrics") => "/metrics",
        Some("/v1/live") => "/v1/live",
        Some("/") => "/",
        _ => "other",
    };
    let resp = next.run(req).await;
    state.metrics.count_request(route, resp.status().as_u16());
    resp
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.pipeline.get().is_some_and(|p| !p.failed()) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: recovering the write-ahead log\n",
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    let body = state.metrics.render();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// The live feed of the dashboard as server-sent events: `init` (15 minutes of history and
/// the lake figures), then `point` every second and `lake` every 10 s.
async fn live(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Result<Response, error::ApiError> {
    auth::authorize(&state.config.keys, &headers, Role::Query)?;
    use axum::response::sse::{Event, KeepAlive, Sse};
    use futures::StreamExt;
    use tokio::sync::broadcast::error::RecvError;
    let init = Event::default().event("init").data(state.live.init_json());
    let rest = futures::stream::unfold(state.live.subscribe(), |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok((kind, json)) => return Some((Event::default().event(kind).data(&*json), rx)),
                // A slow page skips points rather than holding the sampler back.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    let stream = futures::stream::once(async { init })
        .chain(rest)
        .map(Ok::<_, std::convert::Infallible>);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// The dashboard: one page, its script and styles inline (no CDN, no asset server).
async fn dashboard() -> Response {
    (
        [(header::CACHE_CONTROL, "no-cache")],
        Html(include_str!("dashboard.html")),
    )
        .into_response()
}
