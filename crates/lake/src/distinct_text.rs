//! `count(DISTINCT <text>)` per group, with one hash table for all groups.
//!
//! DataFusion 55 counts distinct integers per group with a grouped accumulator, but distinct
//! strings through its adapter: each group keeps its own hash set, and every batch is sorted
//! by group and sliced into one call per group. dau's grouping sets count the day's 205 000
//! accounts in four breakdowns: 130 ms of a day's CPU against DuckDB's 48 ms (BENCHMARKS.md,
//! issue 5, twentieth session).
//!
//! [`crate::int_text::TextRule`], an optimizer rule of every gamelake session, replaces
//! `count(DISTINCT x)` of a `Utf8View` in a grouped aggregation by `count_distinct_text(x)`,
//! whose [`DistinctTextGroups`] keeps every (group, value) pair in one table: a value of up to
//! 12 bytes is its own 16-byte view, a longer one a view into an arena of the bytes. The
//! partial aggregation's state is each group's distinct values as a list, as DataFusion's own.

use std::sync::Arc;

use deltalake::arrow::array::builder::make_view;
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Int64Array, ListArray, StringViewArray,
};
use deltalake::arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use deltalake::arrow::datatypes::{DataType, Field, FieldRef};
use deltalake::datafusion::common::{DFSchema, Result, ScalarValue};
use deltalake::datafusion::functions_aggregate::count::count_udaf;
use deltalake::datafusion::logical_expr::expr::AggregateFunction;
use deltalake::datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use deltalake::datafusion::logical_expr::utils::format_state_name;
use deltalake::datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, EmitTo, Expr, ExprSchemable, GroupsAccumulator,
    Signature, Volatility,
};
use hashbrown::HashTable;

/// `count_distinct_text(x)`: the number of distinct non-null `x` (`Utf8View`) per group.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DistinctText {
    signature: Signature,
}

impl Default for DistinctText {
    fn default() -> Self {
        Self {
            signature: Signature::exact(vec![DataType::Utf8View], Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for DistinctText {
    fn name(&self) -> &str {
        "count_distinct_text"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn is_nullable(&self) -> bool {
        false
    }

    fn default_value(&self, _data_type: &DataType) -> Result<ScalarValue> {
        Ok(ScalarValue::Int64(Some(0)))
    }

    /// Each group's distinct values, as DataFusion's `count(DISTINCT …)` keeps them.
    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(vec![Arc::new(Field::new_list(
            format_state_name(args.name, "count distinct"),
            Field::new_list_field(DataType::Utf8View, true),
            true,
        ))])
    }

    /// Without groups: DataFusion's own accumulator (its state has the same form).
    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let mut args = args;
        args.is_distinct = true;
        count_udaf().accumulator(args)
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(DistinctTextGroups::default()))
    }
}

/// A distinct value and the first groups it is in: `view` is the value's string view, inline
/// (up to 12 bytes) or pointing at its bytes in the arena (buffer 0). An account is in a few
/// groups (dau's four breakdowns), whose checks then touch one entry, while it is still in
/// the cache. Further groups go to the overflow set.
#[derive(Debug, Clone, Copy)]
struct Entry {
    hash: u64,
    view: u128,
    id: u32,
    n: u32,
    groups: [u32; INLINE_GROUPS],
}

const INLINE_GROUPS: usize = 4;

/// The distinct values of every group: each value once, with its groups, and the count of
/// values per group.
#[derive(Debug, Default)]
pub struct DistinctTextGroups {
    seen: HashTable<Entry>,
    /// The bytes of values longer than 12 bytes.
    arena: Vec<u8>,
    /// Each value's view, by its id.
    views: Vec<u128>,
    /// (value id, group) of a value's groups beyond the first [`INLINE_GROUPS`].
    overflow: hashbrown::HashSet<u64>,
    counts: Vec<i64>,
    hasher: foldhash::fast::FixedState,
}

fn is_inline(view: u128) -> bool {
    (view as u32) <= 12
}

impl DistinctTextGroups {
    /// Adds `view` (of `bytes`, read only for values longer than 12 bytes) to `group`.
    fn insert<'a>(&mut self, group: u32, view: u128, bytes: impl FnOnce() -> &'a [u8]) {
        use std::hash::BuildHasher;
        let long = (!is_inline(view)).then(bytes);
        let hash = match long {
            None => self.hasher.hash_one(view),
            Some(b) => self.hasher.hash_one(b),
        };
        let arena = &self.arena;
        let found = self.seen.find_mut(hash, |e| {
            e.hash == hash
                && match long {
                    None => e.view == view,
                    Some(b) => {
                        e.view as u64 == view as u64 && {
                            let at = (e.view >> 96) as usize;
                            &arena[at..at + b.len()] == b
                        }
                    }
                }
        });
        let added = match found {
            Some(e) => {
                let n = e.n as usize;
                if e.groups[..n.min(INLINE_GROUPS)].contains(&group) {
                    false
                } else if n < INLINE_GROUPS {
                    e.groups[n] = group;
                    e.n += 1;
                    true
                } else {
                    self.overflow
                        .insert((u64::from(e.id) << 32) | u64::from(group))
                }
            }
            None => {
                let stored = match long {
                    None => view,
                    Some(b) => {
                        let at = u32::try_from(self.arena.len())
                            .expect("less than 4 GiB of distinct text");
                        self.arena.extend_from_slice(b);
                        make_view(b, 0, at)
                    }
                };
                let id = u32::try_from(self.views.len()).expect("less than 2^32 distinct values");
                self.views.push(stored);
                let mut groups = [0; INLINE_GROUPS];
                groups[0] = group;
                self.seen.insert_unique(
                    hash,
                    Entry {
                        hash,
                        view: stored,
                        id,
                        n: 1,
                        groups,
                    },
                    |e| e.hash,
                );
                true
            }
        };
        if added {
            self.counts[group as usize] += 1;
        }
    }

    /// Every (group, value view) pair.
    fn pairs(&self) -> impl Iterator<Item = (u32, u128)> + '_ {
        let inline = self.seen.iter().flat_map(|e| {
            e.groups[..(e.n as usize).min(INLINE_GROUPS)]
                .iter()
                .map(move |&g| (g, e.view))
        });
        let spilled = self
            .overflow
            .iter()
            .map(|&k| (k as u32, self.views[(k >> 32) as usize]));
        inline.chain(spilled)
    }

    /// Forgets the groups that `emit_to` hands out; with `First(n)`, the later groups move
    /// down by `n` (the values are added again).
    fn forget(&mut self, emit_to: EmitTo) {
        let kept: Vec<(u32, u128)> = match emit_to {
            EmitTo::All => Vec::new(),
            EmitTo::First(n) => self
                .pairs()
                .filter(|(g, _)| *g as usize >= n)
                .map(|(g, v)| (g - n as u32, v))
                .collect(),
        };
        let arena = std::mem::take(&mut self.arena);
        self.seen.clear();
        self.views.clear();
        self.overflow.clear();
        for (group, view) in kept {
            let at = (view >> 96) as usize;
            let len = view as u32 as usize;
            self.insert(group, view, || &arena[at..at + len]);
            // `insert` counted it again.
            self.counts[group as usize] -= 1;
        }
    }
}

impl GroupsAccumulator for DistinctTextGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.counts.resize(total_num_groups, 0);
        let texts = values[0].as_string_view();
        let views = texts.views();
        for (i, &group) in group_indices.iter().enumerate() {
            if texts.is_null(i) || opt_filter.is_some_and(|f| !f.is_valid(i) || !f.value(i)) {
                continue;
            }
            self.insert(group as u32, views[i], || texts.value(i).as_bytes());
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        let counts = emit_to.take_needed(&mut self.counts);
        self.forget(emit_to);
        Ok(Arc::new(Int64Array::from(counts)))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let groups = match emit_to {
            EmitTo::All => self.counts.len(),
            EmitTo::First(n) => n,
        };
        let mut offsets = Vec::with_capacity(groups + 1);
        offsets.push(0i32);
        for &c in &self.counts[..groups] {
            offsets.push(offsets.last().copied().unwrap_or(0) + c as i32);
        }
        let mut next: Vec<usize> = offsets[..groups].iter().map(|&o| o as usize).collect();
        let mut views = vec![0u128; *offsets.last().unwrap_or(&0) as usize];
        for (group, view) in self.pairs().filter(|(g, _)| (*g as usize) < groups) {
            let at = &mut next[group as usize];
            views[*at] = view;
            *at += 1;
        }
        // The arena goes with the state when every group does; otherwise the kept groups
        // still need it.
        let arena = match emit_to {
            EmitTo::All => std::mem::take(&mut self.arena),
            EmitTo::First(_) => self.arena.clone(),
        };
        let buffers = match arena.is_empty() {
            true => vec![],
            false => vec![Buffer::from_vec(arena)],
        };
        // SAFETY: each view is a valid view's copy (inline) or `make_view` of bytes copied
        // from a valid string array into the arena, which is buffer 0.
        #[allow(unsafe_code)]
        let values =
            unsafe { StringViewArray::new_unchecked(ScalarBuffer::from(views), buffers, None) };
        let lists = ListArray::new(
            Arc::new(Field::new_list_field(DataType::Utf8View, true)),
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            Arc::new(values),
            None,
        );
        let _ = emit_to.take_needed(&mut self.counts);
        self.forget(emit_to);
        Ok(vec![Arc::new(lists)])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.counts.resize(total_num_groups, 0);
        let lists = values[0].as_list::<i32>();
        let texts = lists.values().as_string_view();
        let views = texts.views();
        let offsets = lists.value_offsets();
        for (i, &group) in group_indices.iter().enumerate() {
            if lists.is_null(i) {
                continue;
            }
            for j in offsets[i] as usize..offsets[i + 1] as usize {
                if texts.is_null(j) {
                    continue;
                }
                self.insert(group as u32, views[j], || texts.value(j).as_bytes());
            }
        }
        Ok(())
    }

    /// Each row as a state of its own: a list of its value, empty where it is null or
    /// filtered out (when DataFusion skips the partial aggregation).
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let texts = values[0].as_string_view();
        let mut offsets = Vec::with_capacity(texts.len() + 1);
        offsets.push(0i32);
        let mut kept = Vec::with_capacity(texts.len());
        for i in 0..texts.len() {
            if texts.is_valid(i) && opt_filter.is_none_or(|f| f.is_valid(i) && f.value(i)) {
                kept.push(i as u32);
            }
            offsets.push(kept.len() as i32);
        }
        let kept = deltalake::arrow::array::UInt32Array::from(kept);
        let values = deltalake::arrow::compute::take(texts, &kept, None)?;
        Ok(vec![Arc::new(ListArray::new(
            Arc::new(Field::new_list_field(DataType::Utf8View, true)),
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            values,
            None,
        ))])
    }

    fn size(&self) -> usize {
        self.seen.capacity() * std::mem::size_of::<Entry>()
            + self.arena.capacity()
            + self.views.capacity() * std::mem::size_of::<u128>()
            + self.overflow.capacity() * std::mem::size_of::<u64>()
            + self.counts.capacity() * std::mem::size_of::<i64>()
    }
}

/// `count_distinct_text(x)` for `count(DISTINCT x)` of a `Utf8View` (no filter, no order),
/// for [`crate::int_text::TextRule`] in grouped aggregations.
pub(crate) fn count_distinct_text(
    e: &Expr,
    schema: &DFSchema,
    udaf: &Arc<AggregateUDF>,
) -> Option<Expr> {
    let Expr::AggregateFunction(AggregateFunction { func, params }) = e else {
        return None;
    };
    let plain = params.distinct
        && func.name() == "count"
        && params.filter.is_none()
        && params.order_by.is_empty();
    let [arg] = params.args.as_slice() else {
        return None;
    };
    (plain && arg.get_type(schema).ok() == Some(DataType::Utf8View)).then(|| {
        Expr::AggregateFunction(AggregateFunction::new_udf(
            udaf.clone(),
            vec![arg.clone()],
            false,
            None,
            vec![],
            None,
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Int64Array as Ints, RecordBatch};
    use deltalake::arrow::datatypes::Schema;
    use deltalake::datafusion::datasource::MemTable;
    use deltalake::datafusion::prelude::{SessionConfig, SessionContext};

    /// A value of up to 12 bytes, or a longer one.
    fn value(i: usize) -> String {
        match i % 3 {
            0 => format!("a{i}"),
            _ => format!("account_{i:06}_with_a_long_name"),
        }
    }

    fn texts(values: &[Option<String>]) -> ArrayRef {
        Arc::new(StringViewArray::from_iter(
            values.iter().map(|v| v.as_deref()),
        ))
    }

    fn counts(a: ArrayRef) -> Vec<i64> {
        a.as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .values()
            .to_vec()
    }

    /// Group g holds values 0..=g (each twice, and a null): value 0 is in every group, beyond
    /// the inline ones.
    fn fill(acc: &mut DistinctTextGroups, groups: usize) {
        let mut values = Vec::new();
        let mut indices = Vec::new();
        for g in 0..groups {
            for v in 0..=g {
                values.extend([Some(value(v)), Some(value(v))]);
                indices.extend([g, g]);
            }
            values.push(None);
            indices.push(g);
        }
        acc.update_batch(&[texts(&values)], &indices, None, groups)
            .unwrap();
    }

    #[test]
    fn groups_count_their_distinct_values_and_hand_them_on() {
        let mut acc = DistinctTextGroups::default();
        fill(&mut acc, 8);
        // The first three groups out; the others move down and keep their values.
        assert_eq!(
            counts(acc.evaluate(EmitTo::First(3)).unwrap()),
            vec![1, 2, 3]
        );
        let state = acc.state(EmitTo::First(2)).unwrap();
        // Groups 3 and 4, merged into a fresh accumulator as groups 1 and 0.
        let mut other = DistinctTextGroups::default();
        other.merge_batch(&state, &[1, 0], 2).unwrap();
        other.merge_batch(&state, &[1, 0], 2).unwrap();
        assert_eq!(counts(other.evaluate(EmitTo::All).unwrap()), vec![5, 4]);
        assert_eq!(counts(acc.evaluate(EmitTo::All).unwrap()), vec![6, 7, 8]);
        // A filter leaves rows out; a row's state of its own is its value or nothing.
        let mut acc = DistinctTextGroups::default();
        let values = texts(&[Some(value(1)), Some(value(2)), None, Some(value(1))]);
        let keep = BooleanArray::from(vec![true, false, true, true]);
        acc.update_batch(std::slice::from_ref(&values), &[0, 0, 0, 1], Some(&keep), 2)
            .unwrap();
        assert_eq!(counts(acc.evaluate(EmitTo::All).unwrap()), vec![1, 1]);
        let rows = acc.convert_to_state(&[values], Some(&keep)).unwrap();
        let lists = rows[0].as_list::<i32>();
        let sizes: Vec<usize> = (0..4).map(|i| lists.value(i).len()).collect();
        assert_eq!(sizes, vec![1, 0, 0, 1]);
    }

    /// A session over `t` (g, h: small integers as text; s: text with nulls and long values)
    /// in several partitions, with or without the rule.
    async fn session(rule: bool) -> SessionContext {
        let ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(3));
        if rule {
            ctx.add_optimizer_rule(Arc::new(crate::int_text::TextRule::default()));
        }
        let schema = Arc::new(Schema::new(vec![
            Field::new("g", DataType::Utf8View, true),
            Field::new("h", DataType::Int64, false),
            Field::new("s", DataType::Utf8View, true),
        ]));
        let part = |p: usize| {
            let rows: Vec<usize> = (p * 700..(p + 1) * 700).collect();
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    texts(
                        &rows
                            .iter()
                            .map(|i| Some(format!("g{}", i % 7)))
                            .collect::<Vec<_>>(),
                    ),
                    Arc::new(Ints::from_iter_values(rows.iter().map(|i| (i % 13) as i64))),
                    texts(
                        &rows
                            .iter()
                            .map(|i| (i % 11 != 0).then(|| value(i % 97)))
                            .collect::<Vec<_>>(),
                    ),
                ],
            )
            .unwrap()
        };
        let table = MemTable::try_new(
            schema.clone(),
            vec![vec![part(0)], vec![part(1)], vec![part(2)]],
        )
        .unwrap();
        ctx.register_table("t", Arc::new(table)).unwrap();
        ctx
    }

    #[tokio::test]
    async fn queries_count_the_same_with_the_rule() {
        let queries = [
            // Grouping sets, as dau's.
            "SELECT g, h, grouping(g) AS by_g, count(DISTINCT s) AS n FROM t \
             GROUP BY GROUPING SETS ((), (g), (h), (g, h)) ORDER BY by_g, g, h",
            // A value in 13 groups (more than those kept with it).
            "SELECT h, count(DISTINCT s) AS n, count(*) AS rows FROM t GROUP BY h ORDER BY h",
            // Without groups, and with a filter: DataFusion's own.
            "SELECT count(DISTINCT s) AS n FROM t",
            "SELECT g, count(DISTINCT s) FILTER (WHERE h > 3) AS n FROM t GROUP BY g ORDER BY g",
        ];
        let (plain, ours) = (session(false).await, session(true).await);
        for (i, sql) in queries.iter().enumerate() {
            let plan = crate::int_text::tests::same_answers(&plain, &ours, sql).await;
            assert_eq!(plan.contains("count_distinct_text"), i < 2, "{sql}: {plan}");
        }
    }
}
