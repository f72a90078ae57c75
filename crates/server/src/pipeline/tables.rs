//! Dispatching parsed bodies to one writer task per table, committing, and tracking which WAL
//! offsets are committed everywhere (the watermark).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use gamelake_common::{
    table_name_for_code, COL_EVENT_DATE, COL_INGEST_DATE, SCHEMA_BRONZE, SCHEMA_SILVER,
    TABLE_DEAD_LETTERS, TABLE_RAW_LOGS,
};
use gamelake_lake::arrow::array::RecordBatch;
use gamelake_lake::arrow::datatypes::Schema;
use gamelake_lake::{DeltaSink, Lake, TableId, TableSink};
use gamelake_parse::{with_offset, ColType, ParsedBody, SchemaHints};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::metrics::Metrics;

/// A durable body on its way to the tables.
pub struct Dispatch {
    pub offset: u64,
    pub parsed: ParsedBody,
    /// Body bytes, released from the backpressure budget once committed everywhere.
    pub bytes: u64,
}

/// Which offsets each table still has to commit.
#[derive(Default)]
pub struct Tracker {
    pending: HashMap<TableId, VecDeque<u64>>,
    bodies: VecDeque<(u64, u64)>,
    last_dispatched: Option<u64>,
}

impl Tracker {
    fn dispatched(&mut self, table: &TableId, offset: u64) {
        let q = self.pending.entry(table.clone()).or_default();
        if q.back() != Some(&offset) {
            q.push_back(offset);
        }
    }

    fn committed(&mut self, table: &TableId, through: u64) {
        if let Some(q) = self.pending.get_mut(table) {
            while q.front().is_some_and(|o| *o <= through) {
                q.pop_front();
            }
        }
    }

    /// Every body at or below the returned offset is committed to all its tables.
    pub fn watermark(&self) -> Option<u64> {
        match self.pending.values().filter_map(|q| q.front()).min() {
            Some(0) => None,
            Some(first_pending) => Some(first_pending - 1),
            None => self.last_dispatched,
        }
    }

    /// Pops the bodies at or below the watermark; returns their bytes.
    fn release(&mut self) -> u64 {
        let Some(w) = self.watermark() else { return 0 };
        let mut bytes = 0;
        while self.bodies.front().is_some_and(|(o, _)| *o <= w) {
            bytes += self.bodies.pop_front().expect("front exists").1;
        }
        bytes
    }
}

/// State shared by the dispatcher and the table writers.
pub struct TablesShared {
    pub lake: Lake,
    pub tracker: Mutex<Tracker>,
    pub hints: RwLock<Arc<SchemaHints>>,
    pub metrics: Arc<Metrics>,
    pub commit_interval: Duration,
    pub commit_max_rows: usize,
    /// Per table, the offset its commits had reached at start: replayed rows at or below it are
    /// skipped.
    pub committed_at_start: HashMap<TableId, u64>,
}

/// Column types of a committed table, as parse hints.
pub fn hints_of(schema: &Schema) -> HashMap<String, ColType> {
    schema
        .fields()
        .iter()
        .filter_map(|f| ColType::from_arrow(f.data_type()).map(|t| (f.name().clone(), t)))
        .collect()
}

/// Receives dispatches until the sequencer is gone, then lets every table commit and stop.
pub async fn dispatcher(
    shared: Arc<TablesShared>,
    mut rx: mpsc::UnboundedReceiver<Dispatch>,
    mut sinks: HashMap<TableId, DeltaSink>,
) {
    let mut writers: HashMap<TableId, mpsc::UnboundedSender<(u64, RecordBatch)>> = HashMap::new();
    let mut tasks = JoinSet::new();
    while let Some(Dispatch {
        offset,
        parsed,
        bytes,
    }) = rx.recv().await
    {
        let mut batches: Vec<(TableId, RecordBatch)> = Vec::with_capacity(parsed.silver.len() + 2);
        if let Some(b) = parsed.raw_logs {
            batches.push((TableId::new(SCHEMA_BRONZE, TABLE_RAW_LOGS), b));
        }
        if let Some(b) = parsed.dead_letters {
            batches.push((TableId::new(SCHEMA_BRONZE, TABLE_DEAD_LETTERS), b));
        }
        {
            let m = &shared.metrics;
            let mut rows = m.ingest_rows_by_table.lock().expect("metrics lock");
            let mut bytes = m.ingest_bytes_by_table.lock().expect("metrics lock");
            for ((name, b), line_bytes) in parsed.silver.iter().zip(&parsed.silver_bytes) {
                *rows.entry(name.clone()).or_default() += b.num_rows() as u64;
                *bytes.entry(name.clone()).or_default() += line_bytes;
            }
        }
        for (name, b) in parsed.silver {
            batches.push((TableId::new(SCHEMA_SILVER, table_name_for_code(&name)), b));
        }
        {
            let mut tracker = shared.tracker.lock().expect("tracker lock");
            tracker.bodies.push_back((offset, bytes));
            tracker.last_dispatched = Some(offset);
            batches.retain(|(id, _)| {
                shared
                    .committed_at_start
                    .get(id)
                    .is_none_or(|c| *c < offset)
            });
            for (id, _) in &batches {
                tracker.dispatched(id, offset);
            }
            let released = tracker.release();
            shared
                .metrics
                .uncommitted_bytes
                .fetch_sub(released, Ordering::Relaxed);
        }
        for (id, batch) in batches {
            let tx = writers.entry(id.clone()).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                let sink = sinks.remove(&id);
                tasks.spawn(table_writer(shared.clone(), id.clone(), sink, rx));
                tx
            });
            let _ = tx.send((offset, with_offset(&batch, offset)));
        }
    }
    drop(writers);
    while tasks.join_next().await.is_some() {}
}

/// The partition column of a table written by the pipeline.
pub fn partition_column(id: &TableId) -> &'static str {
    if id.schema == SCHEMA_BRONZE {
        COL_INGEST_DATE
    } else {
        COL_EVENT_DATE
    }
}

/// Buffers one table's rows and commits them every interval, or early at `commit_max_rows`;
/// commits the rest and stops when the dispatcher is gone.
async fn table_writer(
    shared: Arc<TablesShared>,
    id: TableId,
    sink: Option<DeltaSink>,
    mut rx: mpsc::UnboundedReceiver<(u64, RecordBatch)>,
) {
    let mut sink = match sink {
        Some(s) => s,
        None => loop {
            match DeltaSink::open(&shared.lake, id.clone(), partition_column(&id)).await {
                Ok(s) => break s,
                Err(e) => {
                    tracing::error!(table = %id, error = %e, "cannot open table; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        },
    };
    let mut buffer: Vec<RecordBatch> = Vec::new();
    let mut rows = 0usize;
    let mut last_offset = 0u64;
    let mut deadline: Option<Instant> = None;
    loop {
        let flush = tokio::select! {
            msg = rx.recv() => match msg {
                Some((offset, batch)) => {
                    rows += batch.num_rows();
                    buffer.push(batch);
                    last_offset = offset;
                    deadline.get_or_insert_with(|| Instant::now() + shared.commit_interval);
                    rows >= shared.commit_max_rows
                }
                None => {
                    if !buffer.is_empty() {
                        commit(&shared, &mut sink, std::mem::take(&mut buffer), last_offset).await;
                    }
                    return;
                }
            },
            _ = sleep_until_opt(deadline) => true,
        };
        if flush && !buffer.is_empty() {
            commit(&shared, &mut sink, std::mem::take(&mut buffer), last_offset).await;
            rows = 0;
            deadline = None;
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Commits until it succeeds: the rows are durable in the WAL, so a failing store only delays
/// them (and, through the backpressure budget, slows ingest).
async fn commit(
    shared: &TablesShared,
    sink: &mut DeltaSink,
    batches: Vec<RecordBatch>,
    through: u64,
) {
    let id = sink.id().clone();
    let mut backoff = Duration::from_millis(200);
    loop {
        match sink.append(batches.clone(), through).await {
            Ok(summary) => {
                shared.metrics.update_table(&id.to_string(), |c| {
                    c.commits += 1;
                    c.rows += summary.rows as u64;
                    c.seconds += summary.duration.as_secs_f64();
                });
                if !summary.new_columns.is_empty() || summary.version == 0 {
                    tracing::info!(table = %id, version = summary.version, new_columns = ?summary.new_columns, "table schema changed");
                }
                committed(shared, sink, through);
                return;
            }
            Err(e) => {
                shared
                    .metrics
                    .update_table(&id.to_string(), |c| c.errors += 1);
                tracing::error!(table = %id, error = %e, through, "commit failed; retrying");
                // The commit may have landed before the error surfaced: reload and look.
                if let Ok(reloaded) =
                    DeltaSink::open(&shared.lake, id.clone(), partition_column(&id)).await
                {
                    let landed = reloaded.committed_offset().is_some_and(|c| c >= through);
                    *sink = reloaded;
                    if landed {
                        committed(shared, sink, through);
                        return;
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Book-keeping after a table committed through `through`: parse hints, watermark, budget.
fn committed(shared: &TablesShared, sink: &DeltaSink, through: u64) {
    let id = sink.id();
    shared
        .metrics
        .update_table(&id.to_string(), |c| c.committed_offset = Some(through));
    if id.schema == SCHEMA_SILVER {
        if let Some(schema) = sink.schema() {
            let fresh = hints_of(&schema);
            let mut hints = shared.hints.write().expect("hints lock");
            if hints.get(&id.name) != Some(&fresh) {
                let mut next = SchemaHints::clone(&hints);
                next.insert(id.name.clone(), fresh);
                *hints = Arc::new(next);
            }
        }
    }
    let mut tracker = shared.tracker.lock().expect("tracker lock");
    tracker.committed(id, through);
    let released = tracker.release();
    shared
        .metrics
        .uncommitted_bytes
        .fetch_sub(released, Ordering::Relaxed);
    if let Some(w) = tracker.watermark() {
        shared
            .metrics
            .wal_committed_offset
            .store(w, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_waits_for_the_slowest_table() {
        let a = TableId::new("silver", "a");
        let b = TableId::new("silver", "b");
        let mut t = Tracker::default();
        assert_eq!(t.watermark(), None);
        for (o, id) in [(0, &a), (1, &b), (2, &a), (3, &a)] {
            t.dispatched(id, o);
            t.bodies.push_back((o, 10));
            t.last_dispatched = Some(o);
        }
        assert_eq!(t.watermark(), None);
        t.committed(&a, 3);
        assert_eq!(t.watermark(), Some(0), "b still needs offset 1");
        assert_eq!(t.release(), 10);
        t.committed(&b, 1);
        assert_eq!(t.watermark(), Some(3));
        assert_eq!(t.release(), 30);
    }
}
