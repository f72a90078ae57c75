//! `gamelake tables`: what tables exist, their schema, rows and files.

use gamelake_common::STORED_SCHEMAS;
use gamelake_lake::{Lake, TableId, TableInfo};

/// Every table of every stored schema.
pub async fn describe_all(lake: &Lake) -> anyhow::Result<Vec<TableInfo>> {
    let mut out = Vec::new();
    for schema in STORED_SCHEMAS {
        for name in lake.list_tables(schema).await? {
            if let Some(info) = lake.describe(&TableId::new(schema, name)).await? {
                out.push(info);
            }
        }
    }
    Ok(out)
}

/// Prints the table list, or one table's columns.
pub async fn run(lake: &Lake, describe: Option<&str>) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match describe {
        None => {
            writeln!(
                stdout,
                "{:<32} {:>12} {:>7} {:>14} {:>8}",
                "table", "rows", "files", "bytes", "version"
            )?;
            for t in describe_all(lake).await? {
                writeln!(
                    stdout,
                    "{:<32} {:>12} {:>7} {:>14} {:>8}",
                    format!("{}.{}", t.schema, t.name),
                    t.rows,
                    t.files,
                    t.bytes,
                    t.version
                )?;
            }
        }
        Some(name) => {
            let (schema, table) = name
                .split_once('.')
                .unwrap_or((gamelake_common::SCHEMA_SILVER, name));
            let Some(t) = lake.describe(&TableId::new(schema, table)).await? else {
                anyhow::bail!("no table `{schema}.{table}` under `{}`", lake.root());
            };
            writeln!(
                stdout,
                "{}.{}  ({} rows, {} files, {} bytes, version {})",
                t.schema, t.name, t.rows, t.files, t.bytes, t.version
            )?;
            writeln!(stdout, "location: {}", t.location)?;
            writeln!(stdout, "partitioned by: {}", t.partition_columns.join(", "))?;
            for (col, ty) in t.columns {
                writeln!(stdout, "  {col:<32} {ty}")?;
            }
        }
    }
    Ok(())
}
