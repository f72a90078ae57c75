//! The Postgres wire protocol on `pg_addr`: psql, JDBC and Python drivers and BI tools run SQL
//! over the same catalog as `POST /v1/query`.
//!
//! The protocol, the `pg_catalog` tables and the type mapping are datafusion-postgres' (pgwire
//! underneath); gamelake adds:
//! - authentication: with API keys configured, SCRAM-SHA-256 where the user is a key's `id` and
//!   the password its `secret`, for keys with the `query` or `admin` role; without keys, any user
//!   is let in, and (as for HTTP) the address must be loopback;
//! - read-only: statements that would create, change or drop anything are refused before they
//!   run (DataFusion's own DDL/DML check on the planned statement);
//! - a deadline and cancellation (psql's Ctrl-C) that cover the whole query, rows included,
//!   and a line per query in `system.queries` ([`crate::pg_guard`]);
//! - index and constraint introspection (SQLAlchemy's reflection) that DataFusion cannot plan
//!   is answered with no rows, as gamelake's tables have neither ([`crate::pg_compat`]);
//! - TLS when `pg.tls_cert` and `pg.tls_key` are set (clients may still connect without it).

use std::fmt::Debug;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;

use async_trait::async_trait;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_postgres::datafusion_pg_catalog::pg_catalog::setup_pg_catalog;
use datafusion_postgres::pgwire;
use datafusion_postgres::{DfSessionService, QueryHook};
use futures::Sink;
use gamelake_lake::datafusion::common::ParamValues;
use gamelake_lake::datafusion::logical_expr::LogicalPlan;
use gamelake_lake::datafusion::prelude::SessionContext;
use gamelake_lake::datafusion::sql::parser::Statement as DfStatement;
use gamelake_lake::datafusion::sql::sqlparser::ast::Statement;
use gamelake_lake::query::Refused;
use gamelake_lake::QueryEngine;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::scram::{gen_salted_password, ScramAuth};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::results::Response;
use pgwire::api::{ClientInfo, ConnectionManager, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::tokio_rustls::TlsAcceptor;
use tokio::net::TcpListener;

use crate::config::{KeyConfig, Role};
use crate::pg_guard::{Cancel, Guarded, RunningQueries};

const SCRAM_ITERATIONS: usize = 4096;

/// TLS for the port from `pg.tls_cert` and `pg.tls_key` (PEM files).
pub fn tls_acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    use pgwire::tokio::tokio_rustls::rustls;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| {
            format!(
                "`pg.tls_cert`: reading PEM certificates from `{}`",
                cert.display()
            )
        })?;
    if certs.is_empty() {
        anyhow::bail!("`pg.tls_cert`: no certificate in `{}`", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "`pg.tls_key`: reading a PEM private key from `{}`",
            key.display()
        )
    })?;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("`pg.tls_cert` / `pg.tls_key`: the key does not fit the certificate")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Serves the protocol on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    engine: QueryEngine,
    keys: Vec<KeyConfig>,
    tls: Option<TlsAcceptor>,
    timeout: std::time::Duration,
    log: Arc<crate::system::QueryLog>,
) {
    let handlers = Arc::new(Handlers::new(engine, &keys, timeout, log));
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accepting a Postgres connection");
                continue;
            }
        };
        let (handlers, tls) = (handlers.clone(), tls.clone());
        tokio::spawn(async move {
            if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                tracing::debug!(%peer, error = %e, "Postgres connection ended with an error");
            }
        });
    }
}

/// What `version()` answers: drivers and BI tools (SQLAlchemy among them) parse
/// `PostgreSQL <major>.<minor>` out of it.
pub fn version_string() -> String {
    format!(
        "PostgreSQL 16.6 (gamelake {}, DataFusion query engine) on {}",
        env!("CARGO_PKG_VERSION"),
        std::env::consts::ARCH
    )
}

/// Adds `pg_catalog` (and the functions drivers call when they connect) to the session, and a
/// Postgres-shaped `version()`.
pub fn setup_catalog(ctx: &SessionContext, catalog: &str) -> anyhow::Result<()> {
    use gamelake_lake::datafusion::arrow::datatypes::DataType;
    use gamelake_lake::datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
    use gamelake_lake::datafusion::scalar::ScalarValue;
    setup_pg_catalog(ctx, catalog, EmptyContextProvider)
        .map_err(|e| anyhow::anyhow!("setting up pg_catalog: {e}"))?;
    // SQLAlchemy's PostgreSQL dialect (Superset) lists domains and enums with
    // `pg_type_is_visible(oid)` when it reads a table's columns. Every type of this catalog is
    // in `pg_catalog`, always on the search path: the catalog's `pg_table_is_visible` (true)
    // answers for types too.
    ctx.register_udf(
        datafusion_postgres::datafusion_pg_catalog::pg_catalog::create_pg_table_is_visible()
            .with_aliases(["pg_type_is_visible"]),
    );
    let version = version_string();
    ctx.register_udf(create_udf(
        "version",
        vec![],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |_| {
            Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(
                version.clone(),
            ))))
        }),
    ));
    Ok(())
}

struct Handlers {
    session: Arc<Guarded>,
    connections: Arc<ConnectionManager>,
    cancel: Arc<Cancel>,
    auth: Option<Arc<KeyAuth>>,
    parameters: Arc<DefaultServerParameterProvider>,
}

impl Handlers {
    fn new(
        engine: QueryEngine,
        keys: &[KeyConfig],
        timeout: std::time::Duration,
        log: Arc<crate::system::QueryLog>,
    ) -> Self {
        let ctx = engine.context().clone();
        let hooks: Vec<Arc<dyn QueryHook>> = vec![
            Arc::new(BeforePlanning(engine)),
            Arc::new(crate::pg_compat::EmptyConstraints),
            Arc::new(datafusion_postgres::hooks::set_show::SetShowHook),
            Arc::new(datafusion_postgres::hooks::transactions::TransactionStatementHook),
            Arc::new(datafusion_postgres::hooks::cursor::CursorStatementHook),
        ];
        let connections = Arc::new(ConnectionManager::new());
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = format!("16.6 (gamelake {})", env!("CARGO_PKG_VERSION"));
        parameters.search_path = gamelake_common::SCHEMA_SILVER.into();
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        let running = Arc::new(RunningQueries::default());
        Self {
            session: Arc::new(Guarded {
                inner: Arc::new(DfSessionService::new_with_hooks(Arc::new(ctx), hooks)),
                timeout,
                running: running.clone(),
                log,
            }),
            cancel: Arc::new(Cancel {
                connections: connections.clone(),
                running,
            }),
            connections,
            auth: (!keys.is_empty()).then(|| Arc::new(KeyAuth::new(keys))),
            parameters: Arc::new(parameters),
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        self.session.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        self.session.clone()
    }

    /// A new handler per connection: SASL keeps the exchange's state in it.
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        Arc::new(match &self.auth {
            None => Startup::Open(Open(self.connections.clone())),
            Some(auth) => Startup::Scram(Box::new(
                SASLAuthStartupHandler::new(self.parameters.clone())
                    .with_scram(ScramAuth::new(auth.clone()))
                    .with_connection_manager(self.connections.clone()),
            )),
        })
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}

/// No keys configured: anyone who can reach the (loopback) address.
struct Open(Arc<ConnectionManager>);

impl NoopStartupHandler for Open {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.0.clone())
    }
}

enum Startup {
    Open(Open),
    Scram(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match self {
            Startup::Open(h) => h.on_startup(client, message).await,
            Startup::Scram(h) => h.on_startup(client, message).await,
        }
    }
}

/// Users and SCRAM-salted passwords from the API keys that may query.
#[derive(Debug)]
struct KeyAuth {
    users: Vec<(String, Vec<u8>, Vec<u8>)>,
}

impl KeyAuth {
    fn new(keys: &[KeyConfig]) -> Self {
        let users = keys
            .iter()
            .filter(|k| matches!(k.role, Role::Query | Role::Admin))
            .map(|k| {
                let salt = random_salt();
                let salted = gen_salted_password(&k.secret, &salt, SCRAM_ITERATIONS);
                (k.id.clone(), salt, salted)
            })
            .collect();
        Self { users }
    }
}

/// 16 bytes from the OS's random source for a SCRAM salt (the clock if it cannot be read:
/// a salt must be unique, not secret).
fn random_salt() -> Vec<u8> {
    let mut salt = vec![0u8; 16];
    let read = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut salt));
    if read.is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(7);
        salt.copy_from_slice(&nanos.to_le_bytes());
    }
    salt
}

#[async_trait]
impl AuthSource for KeyAuth {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        match self.users.iter().find(|(id, _, _)| id == user) {
            Some((_, salt, salted)) => Ok(Password::new(Some(salt.clone()), salted.clone())),
            None => Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28P01".into(),
                format!(
                    "password authentication failed for user \"{user}\" (users are the ids of API keys with the query or admin role)"
                ),
            )))),
        }
    }
}

/// What every statement goes through before DataFusion plans it: the lake's tables are
/// re-listed (as `QueryEngine::plan` does for HTTP queries, so `\dt`, information_schema and
/// pg_catalog show new tables at once), and statements that would create, change or drop
/// anything, or the session every connection shares (`SET datafusion.…`), are refused
/// ([`QueryEngine::admit`], as for HTTP queries).
struct BeforePlanning(QueryEngine);

impl BeforePlanning {
    /// `Some(error)` when the engine refuses `statement`'s plan. Statements DataFusion cannot
    /// plan (a client's `SET statement_timeout`, `BEGIN`, …) are left to the next hooks.
    async fn check(&self, statement: &Statement, ctx: &SessionContext) -> Option<PgWireError> {
        if let Err(e) = self.0.refresh().await {
            tracing::warn!(error = %e, "listing tables");
        }
        let plan = ctx
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
            .await
            .ok()?;
        let (code, msg) = match self.0.admit(&plan).err()? {
            // 25006: read_only_sql_transaction.
            Refused::Writes(e) => (
                "25006",
                format!("gamelake serves tables read-only over SQL: {e}"),
            ),
            // 0A000: feature_not_supported.
            Refused::SharedSession(msg) => ("0A000", msg),
        };
        Some(PgWireError::UserError(Box::new(ErrorInfo::new(
            "ERROR".into(),
            code.into(),
            msg,
        ))))
    }
}

#[async_trait]
impl QueryHook for BeforePlanning {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &mut dyn datafusion_postgres::hooks::HookClient,
    ) -> Option<PgWireResult<Response>> {
        self.check(statement, ctx).await.map(Err)
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        self.check(statement, ctx).await.map(Err)
    }

    async fn handle_extended_query(
        &self,
        _statement: &Statement,
        _plan: &LogicalPlan,
        _params: &ParamValues,
        _ctx: &SessionContext,
        _client: &mut dyn datafusion_postgres::hooks::HookClient,
    ) -> Option<PgWireResult<Response>> {
        None
    }
}
