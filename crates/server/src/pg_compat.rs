//! Index and constraint introspection that DataFusion cannot plan, answered as PostgreSQL
//! would answer it for gamelake's tables: with no rows.
//!
//! SQLAlchemy's PostgreSQL dialect (Superset, pandas, Airflow hooks) reflects a table with
//! queries over `pg_index` and `pg_constraint` that use PostgreSQL's array types:
//! `unnest(ix.indkey)` with `generate_subscripts` (primary key), `a.attnum = ANY(cons.conkey)`
//! (unique constraints), `i.reloptions` (indexes). datafusion-postgres' catalog stores those
//! columns as text and has no set-returning `generate_subscripts`, so the queries fail to
//! plan, and a failed reflection makes the tool report the table as missing.
//!
//! gamelake's tables have no indexes and no constraints: the rows of `pg_index` and
//! `pg_constraint` describe only PostgreSQL's own catalog. A query that reads either of them
//! through inner joins (in its `FROM` or in a derived table joined the same way) can only
//! return rows about those catalog objects, never about a gamelake table. So when such a query
//! does not plan, [`EmptyConstraints`] answers it with its column names and no rows. Queries
//! that plan are left alone, and so is every query where the two tables sit on the optional
//! side of an outer join.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion_postgres::pgwire;
use datafusion_postgres::QueryHook;
use gamelake_lake::datafusion::common::ParamValues;
use gamelake_lake::datafusion::logical_expr::{lit, LogicalPlan, LogicalPlanBuilder};
use gamelake_lake::datafusion::prelude::SessionContext;
use gamelake_lake::datafusion::scalar::ScalarValue;
use gamelake_lake::datafusion::sql::parser::Statement as DfStatement;
use gamelake_lake::datafusion::sql::sqlparser::ast::{
    Expr, JoinOperator, Query, SelectItem, SetExpr, Statement, TableFactor, TableWithJoins,
};
use pgwire::api::results::{FieldFormat, FieldInfo, QueryResponse, Response};
use pgwire::api::{ClientInfo, Type};
use pgwire::error::{PgWireError, PgWireResult};

/// Catalog tables that hold only PostgreSQL's own indexes and constraints.
const CONSTRAINT_TABLES: [&str; 2] = ["pg_index", "pg_constraint"];

/// The hook; see the module docs.
pub struct EmptyConstraints;

impl EmptyConstraints {
    /// The output column names when `statement` is a constraint lookup that does not plan.
    async fn columns(statement: &Statement, ctx: &SessionContext) -> Option<Vec<String>> {
        let Statement::Query(query) = statement else {
            return None;
        };
        if !query_reads_inner(query) {
            return None;
        }
        let state = ctx.state();
        let planned = match state
            .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
            .await
        {
            Ok(plan) => state.optimize(&plan).is_ok(),
            Err(_) => false,
        };
        if planned {
            return None;
        }
        let SetExpr::Select(select) = query.body.as_ref() else {
            return None;
        };
        select.projection.iter().map(column_name).collect()
    }
}

/// Whether `query` reads a constraint table through inner joins only.
fn query_reads_inner(query: &Query) -> bool {
    let SetExpr::Select(select) = query.body.as_ref() else {
        return false;
    };
    select.from.iter().any(from_reads_inner)
}

fn from_reads_inner(from: &TableWithJoins) -> bool {
    factor_reads_inner(&from.relation)
        || from.joins.iter().any(|j| {
            matches!(
                j.join_operator,
                JoinOperator::Join(_) | JoinOperator::Inner(_) | JoinOperator::CrossJoin(_)
            ) && factor_reads_inner(&j.relation)
        })
}

fn factor_reads_inner(factor: &TableFactor) -> bool {
    match factor {
        TableFactor::Table { name, .. } => name.0.last().is_some_and(|part| {
            part.as_ident().is_some_and(|id| {
                CONSTRAINT_TABLES
                    .iter()
                    .any(|t| id.value.eq_ignore_ascii_case(t))
            })
        }),
        TableFactor::Derived { subquery, .. } => query_reads_inner(subquery),
        TableFactor::NestedJoin {
            table_with_joins, ..
        } => from_reads_inner(table_with_joins),
        _ => false,
    }
}

/// The name PostgreSQL gives a select item's column.
fn column_name(item: &SelectItem) -> Option<String> {
    match item {
        SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
        SelectItem::UnnamedExpr(expr) => Some(match expr {
            Expr::Identifier(id) => id.value.clone(),
            Expr::CompoundIdentifier(parts) => parts.last()?.value.clone(),
            Expr::Function(f) => f.name.0.last()?.as_ident()?.value.clone(),
            Expr::Cast { expr, .. } => return column_name(&SelectItem::UnnamedExpr(*expr.clone())),
            _ => "?column?".to_string(),
        }),
        _ => None,
    }
}

#[async_trait]
impl QueryHook for EmptyConstraints {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &mut dyn datafusion_postgres::hooks::HookClient,
    ) -> Option<PgWireResult<Response>> {
        let columns = Self::columns(statement, ctx).await?;
        let fields = columns
            .into_iter()
            .map(|c| FieldInfo::new(c, None, None, Type::VARCHAR, FieldFormat::Text))
            .collect();
        Some(Ok(Response::Query(QueryResponse::new(
            Arc::new(fields),
            Box::pin(futures::stream::empty()),
        ))))
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        ctx: &SessionContext,
        _client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        let columns = Self::columns(statement, ctx).await?;
        let nulls = columns
            .into_iter()
            .map(|c| lit(ScalarValue::Utf8(None)).alias(c));
        Some(
            LogicalPlanBuilder::empty(false)
                .project(nulls)
                .and_then(|b| b.build())
                .map_err(|e| PgWireError::ApiError(Box::new(e))),
        )
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;

    async fn columns(sql: &str) -> Option<Vec<String>> {
        let ctx = SessionContext::new();
        crate::pg::setup_catalog(&ctx, "datafusion").unwrap();
        let statement = PostgresCompatibilityParser::new()
            .parse(sql)
            .unwrap()
            .remove(0);
        EmptyConstraints::columns(&statement, &ctx).await
    }

    #[tokio::test]
    async fn answers_unplannable_inner_constraint_lookups_only() {
        // SQLAlchemy's primary-key reflection: `pg_index` in a derived table, inner-joined.
        let pk = "SELECT a.attname FROM pg_attribute a JOIN (
                SELECT unnest(ix.indkey) attnum, generate_subscripts(ix.indkey, 1) ord
                FROM pg_index ix WHERE ix.indrelid = 16385 AND ix.indisprimary
            ) k ON a.attnum = k.attnum WHERE a.attrelid = 16385 ORDER BY k.ord";
        assert_eq!(columns(pk).await, Some(vec!["attname".to_string()]));
        // Unique constraints: `ANY` over the text `conkey`.
        let unique = "SELECT cons.conname AS name, cons.conkey AS key, a.attnum AS col_num,
                a.attname AS col_name FROM pg_catalog.pg_constraint cons
                JOIN pg_attribute a ON cons.conrelid = a.attrelid AND a.attnum = ANY(cons.conkey)
                WHERE cons.conrelid = 16385 AND cons.contype = 'u'";
        assert_eq!(
            columns(unique).await,
            Some(
                ["name", "key", "col_num", "col_name"]
                    .map(String::from)
                    .to_vec()
            )
        );
        // A lookup DataFusion can plan runs as usual.
        assert_eq!(
            columns("SELECT conname FROM pg_catalog.pg_constraint r WHERE r.contype = 'p'").await,
            None
        );
        // On the optional side of an outer join the table's absence would drop no rows: left
        // alone, whether or not it plans.
        let outer = "SELECT c.relname, ix.indkey FROM pg_class c
                LEFT JOIN pg_index ix ON c.oid = ix.indrelid AND 1 = ANY(ix.indkey)";
        assert_eq!(columns(outer).await, None);
        // Other queries are not looked at.
        assert_eq!(columns("SELECT nope FROM pg_class").await, None);
    }
}
