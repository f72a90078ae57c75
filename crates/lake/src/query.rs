//! SQL over the lake with DataFusion.
//!
//! The catalog `gamelake` has one schema per storage schema (`bronze`, `silver`, `gold`), whose
//! tables are the directories under the root; `silver` is the default schema, so `item` means
//! `silver.item`. Each query resolves a table to its latest Delta snapshot, so rows are visible as
//! soon as their commit lands. Other schemas (such as `system`) can be registered by the server.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, SchemaProvider, TableProvider,
};
use deltalake::datafusion::error::{DataFusionError, Result as DfResult};
use deltalake::datafusion::execution::memory_pool::FairSpillPool;
use deltalake::datafusion::execution::runtime_env::RuntimeEnvBuilder;
use deltalake::datafusion::execution::SendableRecordBatchStream;
use deltalake::datafusion::logical_expr::{LogicalPlan, Statement};
use deltalake::datafusion::prelude::{DataFrame, SQLOptions, SessionConfig, SessionContext};
use gamelake_common::{SCHEMA_SILVER, STORED_SCHEMAS};

use crate::{Lake, LakeError, TableId};

/// Name of the catalog that holds every schema.
pub const CATALOG: &str = "gamelake";

/// A DataFusion session over the lake; cheap to share between requests.
#[derive(Clone)]
pub struct QueryEngine {
    ctx: SessionContext,
    catalog: Arc<MemoryCatalogProvider>,
    schemas: Vec<Arc<LakeSchema>>,
    /// Whether many users share the session (a server): statements that would change it for
    /// all of them are refused ([`changes_shared_session`]).
    shared: bool,
}

impl QueryEngine {
    /// A session without a memory limit (tools and tests).
    pub fn new(lake: Lake) -> Self {
        Self::with_memory_limit(lake, None)
    }

    /// A session whose queries together hold at most `limit` bytes (DataFusion's fair spill
    /// pool: sorts and aggregations spill to disk, other operators fail with a clear error
    /// instead of the process running out of memory).
    pub fn with_memory_limit(lake: Lake, limit: Option<usize>) -> Self {
        let config = SessionConfig::new()
            .with_default_catalog_and_schema(CATALOG, SCHEMA_SILVER)
            .with_information_schema(true);
        let ctx = match limit {
            None => SessionContext::new_with_config(config),
            Some(bytes) => {
                let runtime = RuntimeEnvBuilder::new()
                    .with_memory_pool(Arc::new(FairSpillPool::new(bytes)))
                    .build_arc()
                    .expect("a runtime with a memory pool builds");
                SessionContext::new_with_config_rt(config, runtime)
            }
        };
        ctx.add_optimizer_rule(Arc::new(crate::int_text::TextRule::default()));
        let catalog = Arc::new(MemoryCatalogProvider::new());
        let mut schemas = Vec::new();
        for name in STORED_SCHEMAS {
            let schema = Arc::new(LakeSchema {
                lake: lake.clone(),
                schema: name.to_string(),
                names: RwLock::new(Vec::new()),
            });
            catalog
                .register_schema(name, schema.clone())
                .expect("memory catalog accepts schemas");
            schemas.push(schema);
        }
        ctx.register_catalog(CATALOG, catalog.clone());
        Self {
            ctx,
            catalog,
            schemas,
            shared: false,
        }
    }

    /// The same engine for a server, whose users share one session: `SET` and `RESET` of
    /// engine settings and SQL `PREPARE`/`DEALLOCATE` are refused, since they would change
    /// the session of every other user. A local session (`gamelake sql --data-dir`) keeps them.
    pub fn shared(mut self) -> Self {
        self.shared = true;
        self
    }

    /// The session, for registering extra schemas or functions.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Adds a schema (such as `system`) to the catalog.
    pub fn register_schema(&self, name: &str, schema: Arc<dyn SchemaProvider>) {
        self.catalog
            .register_schema(name, schema)
            .expect("memory catalog accepts schemas");
    }

    /// Re-lists the tables of every stored schema (for `SHOW TABLES` and `information_schema`).
    pub async fn refresh(&self) -> Result<(), LakeError> {
        for schema in &self.schemas {
            let names = schema.lake.list_tables(&schema.schema).await?;
            *schema.names.write().expect("table name lock") = names;
        }
        Ok(())
    }

    /// Plans a read-only SQL statement (no DDL, no DML).
    pub async fn plan(&self, sql: &str) -> Result<DataFrame, LakeError> {
        // Tables are found by name when a statement names them; the listing is only read by
        // `SHOW TABLES` and `information_schema`, and costs one LIST per table (on S3, a request
        // each), so statements that cannot read it do not pay for it.
        if lists_tables(sql) {
            self.refresh().await?;
        }
        // `SessionContext::sql_with_options`, with [`QueryEngine::admit`] between planning and
        // execution (a `SET` takes effect when it executes).
        let plan = self.ctx.state().create_logical_plan(sql).await?;
        if let Err(refused) = self.admit(&plan) {
            return Err(DataFusionError::Plan(refused.to_string()).into());
        }
        Ok(self.ctx.execute_logical_plan(plan).await?)
    }

    /// Whether the engine runs a planned statement: read-only SQL (no DDL, no DML) and, on a
    /// [`shared`](QueryEngine::shared) engine, nothing that changes the session every user
    /// shares. HTTP queries and the Postgres port both go through it.
    pub fn admit(&self, plan: &LogicalPlan) -> Result<(), Refused> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(true);
        options
            .verify_plan(plan)
            .map_err(|e| Refused::Writes(e.to_string()))?;
        match changes_shared_session(plan) {
            Some(msg) if self.shared => Err(Refused::SharedSession(msg)),
            _ => Ok(()),
        }
    }

    /// Runs a statement and collects its rows.
    pub async fn sql(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>), LakeError> {
        let df = self.plan(sql).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok((schema, batches))
    }

    /// Runs a statement and streams its rows.
    pub async fn stream(&self, sql: &str) -> Result<SendableRecordBatchStream, LakeError> {
        Ok(self.plan(sql).await?.execute_stream().await?)
    }
}

/// A statement the engine does not run ([`QueryEngine::admit`]), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// DDL or DML: the lake's tables are read-only over SQL.
    Writes(String),
    /// A change to the session every user of a server shares.
    SharedSession(String),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Writes(msg) | Refused::SharedSession(msg) => f.write_str(msg),
        }
    }
}

/// Why a planned statement would change a session that many users share, if it would: an
/// engine setting (`SET`/`RESET`) holds for every later query of every user, and a prepared
/// statement stays in the session for anyone to run. A server's settings are its config.
fn changes_shared_session(plan: &LogicalPlan) -> Option<String> {
    let LogicalPlan::Statement(statement) = plan else {
        return None;
    };
    // DataFusion keeps the variables under `datafusion.` (`datafusion.runtime.` too) in the
    // session; it refuses other names when the statement runs, and a Postgres client's own
    // (`statement_timeout`, `extra_float_digits`) are the pg layer's, per connection.
    let engine_setting = |name: &str| name.to_ascii_lowercase().starts_with("datafusion.");
    let what = match statement {
        Statement::SetVariable(v) if engine_setting(&v.variable) => "SET of engine settings",
        Statement::ResetVariable(v) if engine_setting(&v.variable) => "RESET of engine settings",
        Statement::Prepare(_) | Statement::Deallocate(_) => "SQL PREPARE and DEALLOCATE",
        _ => return None,
    };
    Some(format!(
        "{what} would change the session every user of this server shares, so gamelake refuses \
         them; the server's query limits are `[query]` in its config file"
    ))
}

/// Whether a statement may read the catalog's table listing (`SHOW …`, `information_schema`).
/// Errs on the side of listing: any mention of either word counts.
fn lists_tables(sql: &str) -> bool {
    let lower = sql.to_ascii_lowercase();
    lower.contains("information_schema") || lower.contains("show")
}

/// One storage schema: its tables are the Delta tables under `<root>/<schema>/`.
#[derive(Debug)]
struct LakeSchema {
    lake: Lake,
    schema: String,
    /// Table names as of the last [`QueryEngine::refresh`].
    names: RwLock<Vec<String>>,
}

#[async_trait]
impl SchemaProvider for LakeSchema {
    fn table_names(&self) -> Vec<String> {
        self.names.read().expect("table name lock").clone()
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let id = TableId::new(&self.schema, name);
        let table = self
            .lake
            .load(&id)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let Some(table) = table else { return Ok(None) };
        let provider = table.table_provider().await?;
        Ok(Some(provider))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.names
            .read()
            .expect("table name lock")
            .iter()
            .any(|n| n == name)
    }
}

#[cfg(test)]
mod tests {
    use super::lists_tables;

    #[test]
    fn only_catalog_statements_list_the_tables() {
        assert!(lists_tables("SHOW TABLES"));
        assert!(lists_tables(
            "select table_name from INFORMATION_SCHEMA.tables where table_schema = 'silver'"
        ));
        assert!(!lists_tables("SELECT count(*) FROM silver.login"));
        assert!(!lists_tables(
            "SELECT * FROM kpi.activity WHERE event_date = '2026-11-28'"
        ));
    }
}
