//! Fitting batches to one table schema before a commit.
//!
//! Batches of one table can disagree: a new field appears in some bodies only, or two bodies
//! parsed at the same moment picked different types for the same new field. The table's
//! existing columns keep their types; new fields are appended as nullable columns; a column of a
//! batch whose type the table's column cannot take losslessly moves its values into the row's
//! `_conflicts` JSON object, so nothing is dropped.

use std::sync::Arc;

use deltalake::arrow::array::{
    new_null_array, Array, ArrayRef, RecordBatch, StringArray, StringBuilder,
};
use deltalake::arrow::compute::cast;
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use gamelake_common::COL_CONFLICTS;

use crate::LakeError;

/// Whether a value of type `from` fits a column of type `to` without loss.
pub fn fits(from: &DataType, to: &DataType) -> bool {
    from == to
        || matches!(
            (from, to),
            (DataType::Int64, DataType::Float64)
                | (
                    DataType::Int64 | DataType::Float64 | DataType::Boolean,
                    DataType::Utf8
                )
                | (DataType::Null, _)
        )
}

/// The schema that holds `table` (the committed schema, if any) and every column of `batches`.
pub fn merged_schema(table: Option<&Schema>, batches: &[RecordBatch]) -> SchemaRef {
    let mut fields: Vec<Field> = table
        .map(|s| s.fields().iter().map(|f| f.as_ref().clone()).collect())
        .unwrap_or_default();
    let mut needs_conflicts = false;
    for batch in batches {
        for field in batch.schema().fields() {
            match fields.iter().find(|f| f.name() == field.name()) {
                Some(existing) => {
                    if !fits(field.data_type(), existing.data_type()) {
                        needs_conflicts = true;
                    }
                }
                None => fields.push(field.as_ref().clone().with_nullable(true)),
            }
        }
    }
    if needs_conflicts && !fields.iter().any(|f| f.name() == COL_CONFLICTS) {
        fields.push(Field::new(COL_CONFLICTS, DataType::Utf8, true));
    }
    Arc::new(Schema::new(fields))
}

/// Whether [`merged_schema`] of `table` and `batch` would add a column: one `batch` has and
/// `table` lacks, or `_conflicts` for a value that does not fit its column. Per batch on the
/// ingest path, so it allocates nothing.
pub fn adds_columns(table: &Schema, batch: &Schema) -> bool {
    let mut needs_conflicts = false;
    for field in batch.fields() {
        match table.field_with_name(field.name()) {
            Ok(existing) => needs_conflicts |= !fits(field.data_type(), existing.data_type()),
            Err(_) => return true,
        }
    }
    needs_conflicts && table.field_with_name(COL_CONFLICTS).is_err()
}

/// `batch` with exactly the columns of `schema`: missing ones null, castable ones cast, the rest
/// moved into `_conflicts`.
pub fn conform(
    batch: &RecordBatch,
    schema: &SchemaRef,
    table: &str,
) -> Result<RecordBatch, LakeError> {
    let rows = batch.num_rows();
    let mut moved: Vec<(String, ArrayRef)> = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column = match batch.column_by_name(field.name()) {
            None => new_null_array(field.data_type(), rows),
            Some(col) if col.data_type() == field.data_type() => col.clone(),
            Some(col) if fits(col.data_type(), field.data_type()) => cast(col, field.data_type())?,
            Some(col) => {
                moved.push((field.name().clone(), col.clone()));
                new_null_array(field.data_type(), rows)
            }
        };
        columns.push(column);
    }
    if !moved.is_empty() {
        let idx = schema
            .index_of(COL_CONFLICTS)
            .map_err(|_| LakeError::Schema {
                table: table.into(),
                reason: "`_conflicts` missing from merged schema".into(),
            })?;
        columns[idx] = merge_conflicts(&columns[idx], &moved)?;
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// Adds `{"name": value}` entries for every non-null value of `moved` to the rows' JSON objects.
fn merge_conflicts(
    existing: &ArrayRef,
    moved: &[(String, ArrayRef)],
) -> Result<ArrayRef, LakeError> {
    let existing = cast(existing, &DataType::Utf8)?;
    let existing = existing
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("cast to Utf8");
    let texts: Vec<(String, bool, ArrayRef)> = moved
        .iter()
        .map(|(name, col)| {
            let quoted = matches!(
                col.data_type(),
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            );
            cast(col, &DataType::Utf8).map(|t| (name.clone(), quoted, t))
        })
        .collect::<Result<_, _>>()?;
    let mut out = StringBuilder::new();
    for row in 0..existing.len() {
        let mut obj: serde_json::Map<String, serde_json::Value> = if existing.is_valid(row) {
            serde_json::from_str(existing.value(row)).unwrap_or_default()
        } else {
            serde_json::Map::new()
        };
        for (name, quoted, text) in &texts {
            let text = text
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("cast to Utf8");
            if text.is_null(row) {
                continue;
            }
            let value = if *quoted {
                serde_json::Value::String(text.value(row).to_string())
            } else {
                serde_json::from_str(text.value(row))
                    .unwrap_or_else(|_| serde_json::Value::String(text.value(row).into()))
            };
            obj.insert(name.clone(), value);
        }
        if obj.is_empty() {
            out.append_null();
        } else {
            out.append_value(serde_json::Value::Object(obj).to_string());
        }
    }
    Ok(Arc::new(out.finish()))
}

/// SQL-ish name of a Delta column type, for listings.
pub fn delta_type_name(dt: &deltalake::kernel::DataType) -> String {
    use deltalake::kernel::{DataType as D, PrimitiveType as P};
    match dt {
        D::Primitive(P::Long) => "bigint".into(),
        D::Primitive(P::Double) => "double".into(),
        D::Primitive(P::Boolean) => "boolean".into(),
        D::Primitive(P::String) => "string".into(),
        D::Primitive(P::Binary) => "binary".into(),
        D::Primitive(P::Date) => "date".into(),
        D::Primitive(P::Timestamp) => "timestamp".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Float64Array, Int64Array};

    fn batch(cols: Vec<(&str, ArrayRef)>) -> RecordBatch {
        RecordBatch::try_from_iter(cols).unwrap()
    }

    /// `adds_columns` agrees with `merged_schema` on new columns, conflicts with and without a
    /// `_conflicts` column, and batches the table holds.
    #[test]
    fn adds_columns_is_what_merging_would_add() {
        let table = |conflicts: bool| {
            let mut fields = vec![
                Field::new("x", DataType::Int64, true),
                Field::new("s", DataType::Utf8, true),
            ];
            if conflicts {
                fields.push(Field::new(COL_CONFLICTS, DataType::Utf8, true));
            }
            Schema::new(fields)
        };
        let batches = [
            vec![Field::new("x", DataType::Int64, true)],
            vec![Field::new("s", DataType::Int64, true)],
            vec![Field::new("x", DataType::Utf8, true)],
            vec![Field::new("y", DataType::Int64, true)],
            vec![],
        ];
        let mut added = Vec::new();
        for conflicts in [false, true] {
            let table = table(conflicts);
            for fields in &batches {
                let batch = RecordBatch::new_empty(Arc::new(Schema::new(fields.clone())));
                let merged = merged_schema(Some(&table), std::slice::from_ref(&batch));
                let adds = adds_columns(&table, &batch.schema());
                assert_eq!(
                    adds,
                    merged.fields().len() != table.fields().len(),
                    "{fields:?}"
                );
                added.push(adds);
            }
        }
        assert_eq!(
            added,
            [false, false, true, true, false, false, false, false, true, false]
        );
    }

    #[test]
    fn new_columns_are_added_and_missing_ones_are_null() {
        let a = batch(vec![(
            "x",
            Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef,
        )]);
        let b = batch(vec![(
            "y",
            Arc::new(StringArray::from(vec!["p"])) as ArrayRef,
        )]);
        let schema = merged_schema(None, &[a.clone(), b.clone()]);
        assert_eq!(schema.fields().len(), 2);
        let a2 = conform(&a, &schema, "t").unwrap();
        assert_eq!(a2.column(1).null_count(), 2);
    }

    #[test]
    fn mismatched_types_move_into_conflicts() {
        let table = Schema::new(vec![
            Field::new("x", DataType::Int64, true),
            Field::new("f", DataType::Float64, true),
        ]);
        let b = batch(vec![
            (
                "x",
                Arc::new(StringArray::from(vec![Some("many"), None])) as ArrayRef,
            ),
            ("f", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        ]);
        let schema = merged_schema(Some(&table), std::slice::from_ref(&b));
        let out = conform(&b, &schema, "t").unwrap();
        let f = out
            .column_by_name("f")
            .unwrap()
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap();
        assert_eq!(f.value(1), 2.0);
        let c = out
            .column_by_name(COL_CONFLICTS)
            .unwrap()
            .as_any()
            .downcast_ref::<StringArray>()
            .unwrap();
        assert_eq!(c.value(0), r#"{"x":"many"}"#);
        assert!(c.is_null(1));
    }
}
