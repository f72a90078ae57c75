//! Integers cast to text, faster than DataFusion's cast.
//!
//! The `kpi` views make one `account` column of text out of the account fields of every silver
//! table, and the snake_case logs carry a numeric `account_id`: `CAST(account_id AS STRING)` on
//! about half the rows of every job's scan. arrow's cast formats each integer through
//! `std::fmt` into a temporary string: on the 2.5 M rows of six days of `silver.combat` the cast
//! took about 60 ms of CPU, more than half of the view's projection, and a tenth of
//! `first_days`' query.
//!
//! The view then takes the first of the account fields that is set, `coalesce(a, b)`, which
//! DataFusion plans as `CASE WHEN a IS NOT NULL THEN a ELSE b END`: it filters the batch once
//! for each branch, evaluates each on its rows and merges them back, copying every string view
//! three times, another 40 % of the projection.
//!
//! [`TextRule`], a logical optimizer rule of every gamelake session, replaces
//! - `CAST(<integer> AS Utf8 | Utf8View)` by [`IntText`], which writes the same decimal digits
//!   with `itoa` straight into the array;
//! - `CASE WHEN a IS NOT NULL THEN a ELSE b END` over `Utf8View` by [`TextOr`], which picks
//!   each row's view from `a` or `b` in one pass;
//! - `count(DISTINCT x)` of a `Utf8View` in a grouped aggregation by `count_distinct_text(x)`
//!   ([`crate::distinct_text`]).
//!
//! The SQL, the column names and the values stay the same; the plan shows `int_text(...)`,
//! `text_or(...)` and `count_distinct_text(...)` where the cast, the `CASE` and the count were.

use std::sync::Arc;

use deltalake::arrow::array::builder::make_view;
use deltalake::arrow::array::{Array, ArrayRef, AsArray, StringBuilder, StringViewArray};
use deltalake::arrow::buffer::{Buffer, NullBuffer, ScalarBuffer};
use deltalake::arrow::datatypes::{
    ArrowPrimitiveType, DataType, Field, FieldRef, Int16Type, Int32Type, Int64Type, Int8Type,
    UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use deltalake::datafusion::common::tree_node::{Transformed, TreeNode};
use deltalake::datafusion::common::{exec_err, DFSchema, Result};
use deltalake::datafusion::logical_expr::expr::{Case, Cast, ScalarFunction};
use deltalake::datafusion::logical_expr::expr_rewriter::NamePreserver;
use deltalake::datafusion::logical_expr::utils::merge_schema;
use deltalake::datafusion::logical_expr::{
    AggregateUDF, ColumnarValue, Expr, ExprSchemable, LogicalPlan, ReturnFieldArgs,
    ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use deltalake::datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

/// `int_text(x)` / `int_text_view(x)`: the decimal text of an integer, as `Utf8` or `Utf8View`
/// (what `CAST(x AS ...)` gives).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct IntText {
    signature: Signature,
    view: bool,
}

impl IntText {
    fn new(view: bool) -> Self {
        Self {
            signature: Signature::any(1, Volatility::Immutable),
            view,
        }
    }

    fn output(&self) -> DataType {
        match self.view {
            true => DataType::Utf8View,
            false => DataType::Utf8,
        }
    }
}

impl ScalarUDFImpl for IntText {
    fn name(&self) -> &str {
        match self.view {
            true => "int_text_view",
            false => "int_text",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.output())
    }

    /// Null exactly where the integer is, as the cast.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let nullable = args.arg_fields.first().is_none_or(|f| f.is_nullable());
        Ok(Arc::new(Field::new(self.name(), self.output(), nullable)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!("{} takes one argument", self.name());
        };
        on_arrays(std::slice::from_ref(arg), args.number_rows, |a| {
            int_text(&a[0], self.view)
        })
    }
}

/// `f` over `args` as arrays of `rows` rows; a scalar again when every argument was one.
fn on_arrays(
    args: &[ColumnarValue],
    rows: usize,
    f: impl FnOnce(&[ArrayRef]) -> Result<ArrayRef>,
) -> Result<ColumnarValue> {
    let scalar = args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
    let arrays = args
        .iter()
        .map(|a| a.to_array(rows))
        .collect::<Result<Vec<_>>>()?;
    let out = f(&arrays)?;
    Ok(match scalar {
        true => ColumnarValue::Scalar(deltalake::datafusion::common::ScalarValue::try_from_array(
            &out, 0,
        )?),
        false => ColumnarValue::Array(out),
    })
}

/// Whether [`int_text`] takes arrays of this type.
fn is_integer(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
    )
}

/// The decimal text of each integer of `array` (null where it is null).
pub fn int_text(array: &ArrayRef, view: bool) -> Result<ArrayRef> {
    match array.data_type() {
        DataType::Int8 => Ok(text_of::<Int8Type>(array, view)),
        DataType::Int16 => Ok(text_of::<Int16Type>(array, view)),
        DataType::Int32 => Ok(text_of::<Int32Type>(array, view)),
        DataType::Int64 => Ok(text_of::<Int64Type>(array, view)),
        DataType::UInt8 => Ok(text_of::<UInt8Type>(array, view)),
        DataType::UInt16 => Ok(text_of::<UInt16Type>(array, view)),
        DataType::UInt32 => Ok(text_of::<UInt32Type>(array, view)),
        DataType::UInt64 => Ok(text_of::<UInt64Type>(array, view)),
        other => exec_err!("int_text takes integers, not {other}"),
    }
}

fn text_of<T>(array: &ArrayRef, view: bool) -> ArrayRef
where
    T: ArrowPrimitiveType,
    T::Native: itoa::Integer,
{
    let ints = array.as_primitive::<T>();
    let mut digits = itoa::Buffer::new();
    if view {
        // The views written directly: an id of up to 12 digits is inline, a longer one goes
        // to the one data buffer.
        let mut data: Vec<u8> = Vec::new();
        let views: ScalarBuffer<u128> = ints
            .values()
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                if ints.is_null(i) {
                    return 0;
                }
                let text = digits.format(v).as_bytes();
                let offset = u32::try_from(data.len()).expect("less than 4 GiB of digits");
                if text.len() > 12 {
                    data.extend_from_slice(text);
                }
                make_view(text, 0, offset)
            })
            .collect();
        let buffers = match data.is_empty() {
            true => vec![],
            false => vec![Buffer::from_vec(data)],
        };
        // SAFETY: each view is `make_view` of ASCII digits (valid UTF-8); a view of more than
        // 12 bytes points at the bytes just written to buffer 0; null slots hold the empty view.
        #[allow(unsafe_code)]
        let texts =
            unsafe { StringViewArray::new_unchecked(views, buffers, ints.nulls().cloned()) };
        Arc::new(texts)
    } else {
        // Up to 20 digits and a sign; most ids are far shorter.
        let mut b = StringBuilder::with_capacity(ints.len(), ints.len() * 8);
        for v in ints.iter() {
            match v {
                Some(v) => b.append_value(digits.format(v)),
                None => b.append_null(),
            }
        }
        Arc::new(b.finish())
    }
}

/// `text_or(a, b)`: `a` where it is not null, else `b`; both `Utf8View` (the `CASE` DataFusion
/// makes of `coalesce(a, b)`).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct TextOr {
    signature: Signature,
}

impl Default for TextOr {
    fn default() -> Self {
        Self {
            signature: Signature::exact(
                vec![DataType::Utf8View, DataType::Utf8View],
                Volatility::Immutable,
            ),
        }
    }
}

impl ScalarUDFImpl for TextOr {
    fn name(&self) -> &str {
        "text_or"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8View)
    }

    /// Null where both are.
    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        let nullable = args.arg_fields.iter().all(|f| f.is_nullable());
        Ok(Arc::new(Field::new(
            self.name(),
            DataType::Utf8View,
            nullable,
        )))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if args.args.len() != 2 {
            return exec_err!("text_or takes two arguments");
        }
        on_arrays(&args.args, args.number_rows, |a| {
            text_or(a[0].as_string_view(), a[1].as_string_view())
        })
    }
}

/// Each row of `a` that is not null, else the row of `b`: the views of both side by side, with
/// `b`'s data buffers after `a`'s.
pub fn text_or(a: &StringViewArray, b: &StringViewArray) -> Result<ArrayRef> {
    let Some(a_nulls) = a.nulls().filter(|n| n.null_count() > 0) else {
        return Ok(Arc::new(a.clone()));
    };
    if a_nulls.null_count() == a.len() {
        return Ok(Arc::new(b.clone()));
    }
    // Views of more than 12 bytes point into a data buffer: `b`'s move up by `a`'s count.
    let shift = u32::try_from(a.data_buffers().len()).expect("fewer than 2^32 buffers");
    let rebase = |v: u128| -> u128 {
        if (v as u32) <= 12 || shift == 0 {
            return v;
        }
        let index = ((v >> 64) as u32) + shift;
        (v & !(u128::from(u32::MAX) << 64)) | (u128::from(index) << 64)
    };
    let views: Vec<u128> = a
        .views()
        .iter()
        .zip(b.views().iter())
        .enumerate()
        .map(|(i, (&va, &vb))| match a_nulls.is_valid(i) {
            true => va,
            false => rebase(vb),
        })
        .collect();
    let views = ScalarBuffer::from(views);
    let buffers: Vec<_> = a
        .data_buffers()
        .iter()
        .chain(b.data_buffers())
        .cloned()
        .collect();
    // Valid where either is.
    let nulls = b
        .nulls()
        .map(|bn| NullBuffer::new(a_nulls.inner() | bn.inner()))
        .filter(|n| n.null_count() > 0);
    // SAFETY: every view is one of `a` at its own buffer index or one of `b` whose buffer index
    // moved up by the count of `a`'s buffers, which come first: each still points at the same
    // valid UTF-8 bytes, and inline views are unchanged.
    #[allow(unsafe_code)]
    let texts = unsafe { StringViewArray::new_unchecked(views, buffers, nulls) };
    Ok(Arc::new(texts))
}

/// The optimizer rule that puts [`IntText`] in place of integer-to-text casts, [`TextOr`] in
/// place of `coalesce` of two texts, and `count_distinct_text` in place of `count(DISTINCT …)`
/// of a text in grouped aggregations ([`crate::distinct_text`]).
#[derive(Debug)]
pub struct TextRule {
    text: Arc<ScalarUDF>,
    view: Arc<ScalarUDF>,
    or: Arc<ScalarUDF>,
    distinct: Arc<AggregateUDF>,
}

impl Default for TextRule {
    fn default() -> Self {
        Self {
            text: Arc::new(ScalarUDF::new_from_impl(IntText::new(false))),
            view: Arc::new(ScalarUDF::new_from_impl(IntText::new(true))),
            or: Arc::new(ScalarUDF::new_from_impl(TextOr::default())),
            distinct: Arc::new(AggregateUDF::new_from_impl(
                crate::distinct_text::DistinctText::default(),
            )),
        }
    }
}

impl OptimizerRule for TextRule {
    fn name(&self) -> &str {
        "gamelake_text"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let grouped = matches!(&plan, LogicalPlan::Aggregate(a) if !a.group_expr.is_empty());
        rewrite_expressions(plan, |e, schema| {
            if grouped {
                if let Some(counted) =
                    crate::distinct_text::count_distinct_text(&e, schema, &self.distinct)
                {
                    return Ok(Transformed::yes(counted));
                }
            }
            self.replace(e, schema)
        })
    }
}

/// `plan` with `replace` applied to every expression of the node, bottom up, each seen with
/// the node's input columns; the node's output names stay as they were. A node without inputs
/// (a scan, whose pushed filters are left as they are) is returned as it is.
pub(crate) fn rewrite_expressions(
    plan: LogicalPlan,
    replace: impl Fn(Expr, &DFSchema) -> Result<Transformed<Expr>>,
) -> Result<Transformed<LogicalPlan>> {
    if plan.inputs().is_empty() {
        return Ok(Transformed::no(plan));
    }
    let schema: DFSchema = merge_schema(&plan.inputs());
    let names = NamePreserver::new(&plan);
    plan.map_expressions(|expr| {
        let name = names.save(&expr);
        let rewritten = expr.transform_up(|e| replace(e, &schema))?;
        Ok(rewritten.update_data(|e| name.restore(e)))
    })
}

impl TextRule {
    fn replace(&self, e: Expr, schema: &DFSchema) -> Result<Transformed<Expr>> {
        if let Expr::Case(case) = &e {
            return Ok(match self.text_or(case, schema) {
                Some(replaced) => Transformed::yes(replaced),
                None => Transformed::no(e),
            });
        }
        let Expr::Cast(Cast { expr, field }) = &e else {
            return Ok(Transformed::no(e));
        };
        if !field.metadata().is_empty() {
            return Ok(Transformed::no(e));
        }
        let udf = match field.data_type() {
            DataType::Utf8 => &self.text,
            DataType::Utf8View => &self.view,
            _ => return Ok(Transformed::no(e)),
        };
        // An expression whose type cannot be told here is left to the cast.
        let integer = expr
            .get_type(schema)
            .map(|t| is_integer(&t))
            .unwrap_or(false);
        if !integer {
            return Ok(Transformed::no(e));
        }
        Ok(Transformed::yes(Expr::ScalarFunction(
            ScalarFunction::new_udf(udf.clone(), vec![expr.as_ref().clone()]),
        )))
    }

    /// `text_or(a, b)` for `CASE WHEN a IS NOT NULL THEN a ELSE b END` of two `Utf8View`s.
    fn text_or(&self, case: &Case, schema: &DFSchema) -> Option<Expr> {
        let Case {
            expr: None,
            when_then_expr,
            else_expr: Some(b),
        } = case
        else {
            return None;
        };
        let [(when, a)] = when_then_expr.as_slice() else {
            return None;
        };
        let Expr::IsNotNull(tested) = when.as_ref() else {
            return None;
        };
        let view = |e: &Expr| e.get_type(schema).ok() == Some(DataType::Utf8View);
        (tested == a && view(a) && view(b)).then(|| {
            Expr::ScalarFunction(ScalarFunction::new_udf(
                self.or.clone(),
                vec![a.as_ref().clone(), b.as_ref().clone()],
            ))
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use deltalake::arrow::array::{Int32Array, Int64Array, Int8Array, RecordBatch, UInt64Array};
    use deltalake::arrow::compute::cast;
    use deltalake::arrow::datatypes::Schema;
    use deltalake::arrow::util::pretty::pretty_format_batches;
    use deltalake::datafusion::datasource::MemTable;
    use deltalake::datafusion::prelude::SessionContext;

    fn arrays() -> Vec<ArrayRef> {
        vec![
            Arc::new(Int64Array::from(vec![
                Some(0),
                Some(-1),
                None,
                Some(i64::MIN),
                Some(i64::MAX),
                Some(123_456_789_012),
                Some(1_234_567_890_123),
            ])),
            Arc::new(Int32Array::from(vec![Some(i32::MIN), None, Some(42)])),
            Arc::new(Int8Array::from(vec![Some(-128), Some(127)])),
            Arc::new(UInt64Array::from(vec![Some(u64::MAX), None, Some(7)])),
        ]
    }

    #[test]
    fn the_text_is_the_casts_text() {
        for array in arrays() {
            for (view, to) in [(false, DataType::Utf8), (true, DataType::Utf8View)] {
                let ours = int_text(&array, view).unwrap();
                let theirs = cast(&array, &to).unwrap();
                assert_eq!(ours.data_type(), &to);
                assert_eq!(&ours, &theirs, "{} as {to}", array.data_type());
            }
        }
        assert!(int_text(&(Arc::new(Int64Array::from(vec![1])) as ArrayRef), true).is_ok());
        let text: ArrayRef = Arc::new(deltalake::arrow::array::StringArray::from(vec!["1"]));
        assert!(int_text(&text, true).is_err());
    }

    #[test]
    fn text_or_takes_the_first_text_that_is_set() {
        let long = |i: usize| format!("p_{i:06}_longer_than_twelve");
        // `a` over two data buffers (built in two parts), `b` with its own.
        let mut builder =
            deltalake::arrow::array::StringViewBuilder::new().with_fixed_block_size(64);
        for i in 0..40 {
            match i % 4 {
                0 => builder.append_null(),
                1 => builder.append_value(long(i)),
                2 => builder.append_value(format!("a{i}")),
                _ => builder.append_null(),
            }
        }
        let a = builder.finish();
        assert!(a.data_buffers().len() > 1);
        let b = StringViewArray::from_iter((0..40).map(|i| match i % 3 {
            0 => None,
            1 => Some(long(1000 + i)),
            _ => Some(format!("b{i}")),
        }));
        let expected = |a: &StringViewArray, b: &StringViewArray| -> Vec<Option<String>> {
            a.iter()
                .zip(b.iter())
                .map(|(x, y)| x.or(y).map(str::to_string))
                .collect()
        };
        let got = |a: &StringViewArray, b: &StringViewArray| -> Vec<Option<String>> {
            let out = text_or(a, b).unwrap();
            out.as_string_view()
                .iter()
                .map(|v| v.map(str::to_string))
                .collect()
        };
        assert_eq!(got(&a, &b), expected(&a, &b));
        assert_eq!(got(&b, &a), expected(&b, &a));
        // Without nulls in `a`, or only nulls: one side as it is.
        let full = StringViewArray::from_iter_values((0..40).map(long));
        let none = StringViewArray::from_iter((0..40).map(|_| None::<&str>));
        assert_eq!(got(&full, &b), expected(&full, &b));
        assert_eq!(got(&none, &b), expected(&none, &b));
        assert_eq!(got(&a, &none), expected(&a, &none));
        let out = text_or(&a, &b).unwrap();
        // Null only where both are (rows 0, 12, 24, 36 of 40 and every 3rd of the 4th).
        assert_eq!(
            out.null_count(),
            expected(&a, &b).iter().filter(|v| v.is_none()).count()
        );
        out.to_data().validate_full().unwrap();
    }

    /// A session over `t` (integers `a`, `b`, text `s`), with or without the rule.
    async fn session(rule: bool) -> SessionContext {
        let ctx = SessionContext::new();
        if rule {
            ctx.add_optimizer_rule(Arc::new(TextRule::default()));
        }
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("a", DataType::Int64, true),
                Field::new("b", DataType::Int32, false),
                Field::new("s", DataType::Utf8View, true),
            ])),
            vec![
                Arc::new(Int64Array::from(vec![Some(12), None, Some(-3), None])),
                Arc::new(Int32Array::from(vec![1, 2, 3, 4])),
                Arc::new(deltalake::arrow::array::StringViewArray::from(vec![
                    Some("x"),
                    Some("p_299996_longer_than_twelve"),
                    None,
                    None,
                ])),
            ],
        )
        .unwrap();
        let table = MemTable::try_new(batch.schema(), vec![vec![batch]]).unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    /// The optimized plan of `sql` in `ours`, after checking that `ours` answers it with the
    /// same rows and schema as `plain`.
    pub(crate) async fn same_answers(
        plain: &SessionContext,
        ours: &SessionContext,
        sql: &str,
    ) -> String {
        let expected = plain.sql(sql).await.unwrap().collect().await.unwrap();
        let df = ours.sql(sql).await.unwrap();
        let plan = format!(
            "{}",
            df.clone().into_optimized_plan().unwrap().display_indent()
        );
        let got = df.collect().await.unwrap();
        assert_eq!(
            pretty_format_batches(&got).unwrap().to_string(),
            pretty_format_batches(&expected).unwrap().to_string(),
            "{sql}"
        );
        assert_eq!(got[0].schema(), expected[0].schema(), "{sql}");
        plan
    }

    #[tokio::test]
    async fn queries_answer_the_same_with_the_casts_replaced() {
        let queries = [
            "SELECT CAST(a AS STRING), CAST(b AS VARCHAR) AS b, coalesce(CAST(a AS STRING), s) AS account FROM t",
            "SELECT arrow_cast(a, 'Utf8') AS u, CAST(b AS STRING) || '-' AS k FROM t WHERE CAST(b AS STRING) <> '2'",
            "SELECT CAST(a AS STRING) AS k, count(*) AS n FROM t GROUP BY CAST(a AS STRING) ORDER BY k",
            "SELECT CAST(CAST(b AS DOUBLE) AS STRING) AS d, CAST(s AS STRING) AS s FROM t",
            "SELECT coalesce(s, CAST(b AS STRING)) AS x, coalesce(CAST(a AS STRING), 'none') AS y FROM t",
        ];
        let (plain, ours) = (session(false).await, session(true).await);
        for sql in queries {
            let plan = same_answers(&plain, &ours, sql).await;
            // Casts of integers to text are gone; those of a float and of text stay.
            let floats = sql.contains("DOUBLE");
            assert_eq!(
                plan.contains("text_or"),
                sql.contains("coalesce"),
                "{sql}: {plan}"
            );
            assert_eq!(plan.contains("int_text"), !floats, "{sql}: {plan}");
            assert_eq!(
                plan.matches("CAST(").count(),
                usize::from(floats) * 3,
                "{sql}: {plan}"
            );
        }
    }
}
