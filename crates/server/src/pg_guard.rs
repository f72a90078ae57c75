//! Deadlines, cancellation and the query log for the Postgres port.
//!
//! datafusion-postgres plans a statement, then hands pgwire a lazy row stream. pgwire sends that
//! stream after the query handler returns, and DataFusion does its real work (scans, aggregates)
//! while the rows are pulled. Both `SET statement_timeout` (datafusion-postgres) and pgwire's own
//! cancel hook stop only the planning. [`Guarded`] wraps datafusion-postgres's handler. It puts
//! one deadline and one cancel signal around the planning and around every row of the result:
//! - the deadline is the session's `statement_timeout` if set, else `query.timeout_ms`;
//! - the cancel signal is a client's cancel request (psql's Ctrl-C), matched by the backend
//!   pid and secret key.
//!
//! Either one ends the query with SQLSTATE `57014` and a message naming the cause. The stream
//! is dropped, and so is DataFusion's plan and its memory. Every statement that returns rows, and
//! every statement that fails, is recorded in `system.queries` with source `pg`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion_postgres::pgwire;
use datafusion_postgres::DfSessionService;
use futures::{Sink, Stream};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::portal::Portal;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    DescribePortalResponse, DescribeStatementResponse, QueryResponse, Response,
};
use pgwire::api::stmt::StoredStatement;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::cancel::CancelRequest;
use pgwire::messages::data::DataRow;
use pgwire::messages::PgWireBackendMessage;
use tokio::sync::Notify;

use crate::system::{QueryLog, QueryRecord};

/// The metadata key datafusion-postgres keeps `SET statement_timeout` under, milliseconds.
const STATEMENT_TIMEOUT_KEY: &str = "statement_timeout_ms";

/// The cancel signal of each connection's running query, by backend pid.
#[derive(Debug, Default)]
pub struct RunningQueries(Mutex<HashMap<i32, Arc<Notify>>>);

impl RunningQueries {
    fn start(self: &Arc<Self>, pid: i32) -> (Arc<Notify>, Running) {
        let signal = Arc::new(Notify::new());
        self.0
            .lock()
            .expect("running queries lock")
            .insert(pid, signal.clone());
        let running = Running {
            queries: self.clone(),
            pid,
            signal: signal.clone(),
        };
        (signal, running)
    }
}

/// Removes a query's cancel signal when it ends (a later cancel request finds nothing to stop).
struct Running {
    queries: Arc<RunningQueries>,
    pid: i32,
    signal: Arc<Notify>,
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut map = self.queries.0.lock().expect("running queries lock");
        if map
            .get(&self.pid)
            .is_some_and(|s| Arc::ptr_eq(s, &self.signal))
        {
            map.remove(&self.pid);
        }
    }
}

/// Cancel requests: pgwire's handler (which checks the secret key and stops the planning), then
/// the running query's signal, which stops its rows.
pub struct Cancel {
    pub connections: Arc<ConnectionManager>,
    pub running: Arc<RunningQueries>,
}

#[async_trait]
impl CancelHandler for Cancel {
    async fn on_cancel_request(&self, request: CancelRequest) {
        // `cancel` is true only when the pid and the secret key belong to a live connection.
        if !self
            .connections
            .cancel(request.pid, &request.secret_key)
            .await
        {
            return;
        }
        let signal = self
            .running
            .0
            .lock()
            .expect("running queries lock")
            .get(&request.pid)
            .cloned();
        if let Some(signal) = signal {
            // A stored permit: the query sees it even if it is between two polls.
            signal.notify_one();
        }
    }
}

/// datafusion-postgres's handler with deadlines, cancellation and the query log around it.
pub struct Guarded {
    pub inner: Arc<DfSessionService>,
    /// `query.timeout_ms`.
    pub timeout: Duration,
    pub running: Arc<RunningQueries>,
    pub log: Arc<QueryLog>,
}

/// Why a query was stopped.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Deadline(Duration, bool),
    Cancelled,
}

impl Stop {
    fn error(self) -> PgWireError {
        let message = match self {
            Stop::Deadline(d, true) => format!(
                "canceling statement due to statement timeout (the session's statement_timeout = {} ms)",
                d.as_millis()
            ),
            Stop::Deadline(d, false) => format!(
                "canceling statement due to statement timeout (`query.timeout_ms` = {} ms)",
                d.as_millis()
            ),
            Stop::Cancelled => "canceling statement due to user request".to_string(),
        };
        PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            "57014".into(),
            message,
        )))
    }
}

type StopFuture = Pin<Box<dyn Future<Output = Stop> + Send>>;

/// One statement's bookkeeping: its deadline and cancel signal, and what goes to the log.
struct Query {
    stop: StopFuture,
    _running: Running,
    record: Option<QueryRecord>,
    started: Instant,
    log: Arc<QueryLog>,
}

impl Query {
    fn finish(&mut self, rows: Option<u64>, error: Option<String>) {
        if let Some(mut r) = self.record.take() {
            r.duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
            r.rows = rows;
            r.error = error;
            self.log.record(r);
        }
    }
}

impl Guarded {
    fn begin<C: ClientInfo>(&self, client: &C, sql: &str) -> Query {
        let (timeout, from_session) = match client
            .metadata()
            .get(STATEMENT_TIMEOUT_KEY)
            .and_then(|ms| ms.parse::<u64>().ok())
        {
            Some(ms) if ms > 0 => (Duration::from_millis(ms), true),
            _ => (self.timeout, false),
        };
        let (pid, _) = client.pid_and_secret_key();
        let (signal, running) = self.running.start(pid);
        let deadline = tokio::time::Instant::now() + timeout;
        let stop: StopFuture = Box::pin(async move {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => Stop::Deadline(timeout, from_session),
                _ = signal.notified() => Stop::Cancelled,
            }
        });
        Query {
            stop,
            _running: running,
            record: Some(QueryRecord {
                started_us: chrono::Utc::now().timestamp_micros(),
                source: "pg",
                user: client
                    .metadata()
                    .get(pgwire::api::METADATA_USER)
                    .cloned()
                    .unwrap_or_default(),
                sql: sql.to_string(),
                duration_ms: 0.0,
                rows: None,
                error: None,
            }),
            started: Instant::now(),
            log: self.log.clone(),
        }
    }

    /// Runs the planning under the query's stop signal; a result's rows then run under it too.
    async fn guard<F>(&self, mut query: Query, planning: F) -> PgWireResult<Vec<Response>>
    where
        F: Future<Output = PgWireResult<Vec<Response>>> + Send,
    {
        let planned = tokio::select! {
            r = planning => r,
            stop = &mut query.stop => Err(stop.error()),
        };
        let responses = match planned {
            Ok(r) => r,
            Err(e) => {
                query.finish(None, Some(error_text(&e)));
                return Err(e);
            }
        };
        // The stop signal and the log entry go with the (first) row stream; statements
        // without rows (SET, BEGIN) are not logged.
        let mut query = Some(query);
        Ok(responses
            .into_iter()
            .map(|response| match response {
                Response::Query(rows) => match query.take() {
                    Some(q) => Response::Query(guarded_rows(rows, q)),
                    None => Response::Query(rows),
                },
                other => other,
            })
            .collect())
    }
}

/// What `system.queries` shows of an error: the message a client sees, with its SQLSTATE.
fn error_text(e: &PgWireError) -> String {
    match e {
        PgWireError::UserError(info) => format!("{} (SQLSTATE {})", info.message, info.code),
        PgWireError::ApiError(inner) => inner.to_string(),
        other => other.to_string(),
    }
}

fn guarded_rows(mut response: QueryResponse, query: Query) -> QueryResponse {
    let rows = std::mem::replace(
        response.data_rows(),
        Box::pin(futures::stream::empty::<PgWireResult<DataRow>>()),
    );
    let mut guarded = QueryResponse::new(
        response.row_schema(),
        GuardedRows {
            rows,
            query,
            count: 0,
            done: false,
        },
    );
    guarded.set_command_tag(response.command_tag());
    guarded
}

/// A result's rows that end with an error when the query's deadline passes or it is cancelled.
struct GuardedRows {
    rows: pgwire::api::results::SendableRowStream,
    query: Query,
    count: u64,
    done: bool,
}

impl Stream for GuardedRows {
    type Item = PgWireResult<DataRow>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(stop) = this.query.stop.as_mut().poll(cx) {
            this.done = true;
            let error = stop.error();
            this.query.finish(None, Some(error_text(&error)));
            return Poll::Ready(Some(Err(error)));
        }
        match this.rows.as_mut().poll_next(cx) {
            Poll::Ready(Some(Ok(row))) => {
                this.count += 1;
                Poll::Ready(Some(Ok(row)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.done = true;
                this.query.finish(None, Some(error_text(&e)));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.done = true;
                let count = this.count;
                this.query.finish(Some(count), None);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for GuardedRows {
    fn drop(&mut self) {
        // The client went away, or the portal was closed before its last row.
        if !self.done {
            self.query
                .finish(None, Some("the result was not read to its end".into()));
        }
    }
}

#[async_trait]
impl SimpleQueryHandler for Guarded {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let q = self.begin(client, query);
        self.guard(q, SimpleQueryHandler::do_query(&*self.inner, client, query))
            .await
    }
}

#[async_trait]
impl ExtendedQueryHandler for Guarded {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = <DfSessionService as ExtendedQueryHandler>::QueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.inner.query_parser()
    }

    async fn do_describe_statement<C>(
        &self,
        client: &mut C,
        target: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.inner.do_describe_statement(client, target).await
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        target: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.inner.do_describe_portal(client, target).await
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let q = self.begin(client, &portal.statement.statement.0);
        let planning = async {
            ExtendedQueryHandler::do_query(&*self.inner, client, portal, max_rows)
                .await
                .map(|r| vec![r])
        };
        let mut responses = self.guard(q, planning).await?;
        Ok(responses.pop().unwrap_or(Response::EmptyQuery))
    }
}
