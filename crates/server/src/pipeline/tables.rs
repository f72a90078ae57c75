//! Dispatching parsed bodies to one writer task per table, committing, and tracking which WAL
//! offsets are committed everywhere (the watermark).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
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
use gamelake_parse::{
    with_offset, BodyParser, ColType, IngestMeta, ParseConfig, ParsedBody, SchemaHints,
};
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
    /// Where rows a failed commit lost from memory are read again ([`reread`]).
    pub wal_dir: PathBuf,
    pub parse_config: ParseConfig,
}

/// Column types of a committed table, as parse hints.
pub fn hints_of(schema: &Schema) -> HashMap<String, ColType> {
    schema
        .fields()
        .iter()
        .filter_map(|f| ColType::from_arrow(f.data_type()).map(|t| (f.name().clone(), t)))
        .collect()
}

/// A parsed body's batches, each with its table.
fn by_table(parsed: ParsedBody) -> Vec<(TableId, RecordBatch)> {
    let mut batches: Vec<(TableId, RecordBatch)> = Vec::with_capacity(parsed.silver.len() + 2);
    if let Some(b) = parsed.raw_logs {
        batches.push((TableId::new(SCHEMA_BRONZE, TABLE_RAW_LOGS), b));
    }
    if let Some(b) = parsed.dead_letters {
        batches.push((TableId::new(SCHEMA_BRONZE, TABLE_DEAD_LETTERS), b));
    }
    for (name, b) in parsed.silver {
        batches.push((TableId::new(SCHEMA_SILVER, table_name_for_code(&name)), b));
    }
    batches
}

/// Receives dispatches until the sequencer is gone, then lets every table commit and stop.
pub async fn dispatcher(
    shared: Arc<TablesShared>,
    mut rx: mpsc::UnboundedReceiver<Dispatch>,
    mut sinks: HashMap<TableId, DeltaSink>,
) {
    let mut writers: HashMap<TableId, mpsc::UnboundedSender<(u64, RecordBatch, u64)>> =
        HashMap::new();
    let mut tasks = JoinSet::new();
    while let Some(Dispatch {
        offset,
        parsed,
        bytes,
    }) = rx.recv().await
    {
        {
            let m = &shared.metrics;
            let mut rows = m.ingest_rows_by_table.lock().expect("metrics lock");
            let mut bytes = m.ingest_bytes_by_table.lock().expect("metrics lock");
            for ((name, b), line_bytes) in parsed.silver.iter().zip(&parsed.silver_bytes) {
                *rows.entry(name.clone()).or_default() += b.num_rows() as u64;
                *bytes.entry(name.clone()).or_default() += line_bytes;
            }
        }
        let mut batches = by_table(parsed);
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
            let batch = with_offset(&batch, offset);
            let memory = hold(&shared, &batch);
            if tx.send((offset, batch, memory)).is_err() {
                release(&shared, memory);
            }
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

/// Writes one table: encodes each batch into the next commit's files as it comes
/// ([`DeltaSink::stream`]) and commits them every interval, or early at `commit_max_rows`;
/// commits the rest and stops when the dispatcher is gone. Batches the stream cannot take
/// (a new table, new columns) wait as they are for delta-rs's write operation, after the stream
/// is committed.
async fn table_writer(
    shared: Arc<TablesShared>,
    id: TableId,
    sink: Option<DeltaSink>,
    mut rx: mpsc::UnboundedReceiver<(u64, RecordBatch, u64)>,
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
    let mut pending = Pending::default();
    let mut deadline: Option<Instant> = None;
    loop {
        let flush = tokio::select! {
            msg = rx.recv() => match msg {
                Some((offset, batch, memory)) => {
                    let now = pending.add(&shared, &mut sink, offset, batch, memory).await;
                    deadline.get_or_insert_with(|| Instant::now() + shared.commit_interval);
                    now || pending.rows >= shared.commit_max_rows
                }
                None => {
                    pending.commit(&shared, &mut sink).await;
                    return;
                }
            },
            _ = sleep_until_opt(deadline) => true,
        };
        if flush {
            pending.commit(&shared, &mut sink).await;
            deadline = None;
        }
    }
}

/// A table's rows since its last commit.
#[derive(Default)]
struct Pending {
    rows: usize,
    /// Batches for the write operation; they come after the streamed rows.
    buffer: Vec<RecordBatch>,
    last_offset: u64,
    /// A stream failed: the rows of offsets after the committed one through this are read
    /// again from the WAL before the next commit.
    lost_through: Option<u64>,
    /// Time spent encoding the streamed rows, counted as commit time.
    encoding: Duration,
    /// Memory of the batches in `buffer`, and of the stream's files as last counted, in
    /// [`crate::metrics::Metrics::buffered_bytes`] until the commit.
    held: u64,
    encoded: u64,
}

/// A batch on its way to a table writer: its memory counts in
/// [`crate::metrics::Metrics::buffered_bytes`] until [`release`]d. Returns it.
fn hold(shared: &TablesShared, batch: &RecordBatch) -> u64 {
    let memory = batch.get_array_memory_size() as u64;
    shared
        .metrics
        .buffered_bytes
        .fetch_add(memory, Ordering::Relaxed);
    memory
}

/// Rows that no longer wait in memory: `bytes` off [`crate::metrics::Metrics::buffered_bytes`].
fn release(shared: &TablesShared, bytes: u64) {
    shared
        .metrics
        .buffered_bytes
        .fetch_sub(bytes, Ordering::Relaxed);
}

impl Pending {
    /// Takes the table's next batch. Returns whether to commit at once: a table that does not
    /// exist yet is created by its first batch alone, so that the batches after it are
    /// streamed instead of waiting as Arrow columns for the interval.
    async fn add(
        &mut self,
        shared: &TablesShared,
        sink: &mut DeltaSink,
        offset: u64,
        batch: RecordBatch,
        memory: u64,
    ) -> bool {
        self.rows += batch.num_rows();
        self.last_offset = offset;
        if self.lost_through.is_some() {
            // Read again with the lost rows, in order.
            self.lost_through = Some(offset);
            release(shared, memory);
            return false;
        }
        if !self.buffer.is_empty() {
            self.buffer.push(batch);
            self.held += memory;
            return false;
        }
        let started = Instant::now();
        let streamed = sink.stream(&batch, offset).await;
        self.encoding += started.elapsed();
        match streamed {
            Ok(true) => {
                // The batch is now pages of the open files, whose size only grows until the
                // commit (delta-rs's `buffer_len`): count what it added.
                let encoded = (sink.streamed_bytes() as u64).max(self.encoded);
                shared
                    .metrics
                    .buffered_bytes
                    .fetch_add(encoded - self.encoded, Ordering::Relaxed);
                self.encoded = encoded;
                release(shared, memory);
                false
            }
            Ok(false) => {
                self.buffer.push(batch);
                self.held += memory;
                sink.schema().is_none()
            }
            Err(e) => {
                // The stream is gone with its files.
                release(shared, memory + std::mem::take(&mut self.encoded));
                record_error(shared, sink.id());
                tracing::error!(table = %sink.id(), error = %e, offset, "encoding rows failed; they will be read again from the write-ahead log");
                self.lost_through = Some(offset);
                false
            }
        }
    }

    /// Commits the stream, then rows to read again, then the buffer, each until it succeeds.
    async fn commit(&mut self, shared: &TablesShared, sink: &mut DeltaSink) {
        let Pending {
            buffer,
            last_offset,
            mut lost_through,
            encoding,
            held,
            encoded,
            ..
        } = std::mem::take(self);
        if let Some((_, through)) = sink.streamed() {
            match sink.commit_stream().await {
                Ok(mut summary) => {
                    summary.duration += encoding;
                    record_commit(shared, sink.id(), &summary);
                    committed(shared, sink, through);
                }
                Err(e) => {
                    record_error(shared, sink.id());
                    tracing::error!(table = %sink.id(), error = %e, through, "commit failed; its rows will be read again from the write-ahead log");
                    lost_through = Some(lost_through.map_or(through, |l| l.max(through)));
                }
            }
        }
        if let Some(through) = lost_through {
            recommit(shared, sink, through).await;
        }
        if !buffer.is_empty() {
            commit(shared, sink, buffer, last_offset).await;
        }
        release(shared, held + encoded);
    }
}

/// Commits the table's rows of the WAL records after its committed offset through `through`,
/// read again: a stream that failed lost them from memory. The failed commit may have landed.
async fn recommit(shared: &TablesShared, sink: &mut DeltaSink, through: u64) {
    let id = sink.id().clone();
    let mut backoff = Duration::from_millis(200);
    loop {
        match DeltaSink::open(&shared.lake, id.clone(), partition_column(&id)).await {
            Ok(reloaded) => {
                *sink = reloaded;
                if sink.committed_offset().is_some_and(|c| c >= through) {
                    committed(shared, sink, through);
                    return;
                }
                match reread(shared, &id, sink.committed_offset(), through).await {
                    Ok(batches) if batches.is_empty() => {
                        committed(shared, sink, through);
                        return;
                    }
                    Ok(batches) => {
                        commit(shared, sink, batches, through).await;
                        return;
                    }
                    Err(e) => {
                        tracing::error!(table = %id, error = %e, through, "reading rows again from the write-ahead log failed; retrying")
                    }
                }
            }
            Err(e) => tracing::error!(table = %id, error = %e, "cannot open table; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// The rows of table `id` in the WAL records after `after` through `through`, parsed again as
/// on start (the parse is deterministic given the record and the table's column types, which
/// only its own commits change).
async fn reread(
    shared: &TablesShared,
    id: &TableId,
    after: Option<u64>,
    through: u64,
) -> anyhow::Result<Vec<RecordBatch>> {
    let dir = shared.wal_dir.clone();
    let cfg = shared.parse_config.clone();
    let hints = shared.hints.read().expect("hints lock").clone();
    let id = id.clone();
    tokio::task::spawn_blocking(move || {
        let mut parser = BodyParser::new(cfg).map_err(anyhow::Error::msg)?;
        let mut out = Vec::new();
        let mut last = None;
        let from = after.map_or(0, |a| a + 1);
        let visited = gamelake_wal::replay_from(&dir, from, |offset, payload| {
            if offset > through {
                return Err(None::<String>);
            }
            let rec = super::record::decode(payload)
                .map_err(|e| Some(format!("record {offset}: {e}")))?;
            let meta = IngestMeta {
                ingest_time_us: rec.ingest_time_us,
                source: rec.source.to_string(),
            };
            let parsed = parser.parse_body(rec.body, &meta, &hints);
            for (table, batch) in by_table(parsed) {
                if table == id {
                    out.push(with_offset(&batch, offset));
                }
            }
            last = Some(offset);
            Ok(())
        })?;
        if let Err(Some(e)) = visited {
            anyhow::bail!("{e}");
        }
        if last != Some(through) {
            anyhow::bail!(
                "the write-ahead log holds offsets {from}..={} of {from}..={through}",
                last.map_or("none".to_string(), |l| l.to_string())
            );
        }
        Ok(out)
    })
    .await?
}

fn record_commit(shared: &TablesShared, id: &TableId, summary: &gamelake_lake::CommitSummary) {
    shared.metrics.update_table(&id.to_string(), |c| {
        c.commits += 1;
        c.rows += summary.rows as u64;
        c.seconds += summary.duration.as_secs_f64();
    });
    if !summary.new_columns.is_empty() || summary.version == 0 {
        tracing::info!(table = %id, version = summary.version, new_columns = ?summary.new_columns, "table schema changed");
    }
}

fn record_error(shared: &TablesShared, id: &TableId) {
    shared
        .metrics
        .update_table(&id.to_string(), |c| c.errors += 1);
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
                record_commit(shared, &id, &summary);
                committed(shared, sink, through);
                return;
            }
            Err(e) => {
                record_error(shared, &id);
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

    /// A stream whose commit fails (another writer changed the table's metadata meanwhile)
    /// has lost its rows from memory: they are read again from the WAL and committed once.
    #[tokio::test]
    async fn rows_of_a_failed_stream_are_read_again_from_the_wal() {
        use gamelake_lake::arrow::array::{Array, Int64Array};
        let dir = tempfile::tempdir().unwrap();
        let wal_dir = dir.path().join("wal");
        let lake = Lake::open(dir.path().join("data").to_str().unwrap()).unwrap();
        let (mut wal, _) = gamelake_wal::Wal::open(&wal_dir, Default::default()).unwrap();
        let shared = TablesShared {
            lake: lake.clone(),
            tracker: Mutex::new(Tracker::default()),
            hints: RwLock::new(Arc::new(SchemaHints::new())),
            metrics: Arc::new(Metrics::default()),
            commit_interval: Duration::from_secs(1),
            commit_max_rows: 1000,
            committed_at_start: HashMap::new(),
            wal_dir: wal_dir.clone(),
            parse_config: ParseConfig::default(),
        };
        let mut parser = BodyParser::new(ParseConfig::default()).unwrap();
        let id = TableId::new(SCHEMA_SILVER, "login");
        let mut sink = DeltaSink::open(&lake, id.clone(), partition_column(&id))
            .await
            .unwrap();
        let mut pending = Pending::default();
        let meta = IngestMeta {
            ingest_time_us: 1_765_000_000_000_000,
            source: "test".into(),
        };
        let mut last = 0;
        for n in 0..4 {
            let body =
                format!("{{\"ts\":\"2026-12-06T10:00:0{n}Z\",\"code\":\"login\",\"n\":{n}}}\n");
            let parts = crate::pipeline::record::parts(
                meta.ingest_time_us,
                &meta.source,
                None,
                body.clone().into_bytes(),
            );
            last = wal.append_parts(&parts).unwrap();
            wal.sync().unwrap();
            let hints = shared.hints.read().unwrap().clone();
            for (table, batch) in by_table(parser.parse_body(body.as_bytes(), &meta, &hints)) {
                if table != id {
                    continue;
                }
                let batch = with_offset(&batch, last);
                let memory = hold(&shared, &batch);
                let now = pending.add(&shared, &mut sink, last, batch, memory).await;
                assert_eq!(now, n == 0, "only the table's first batch commits at once");
            }
            if n == 0 {
                // The first commit creates the table; the next rows are streamed.
                pending.commit(&shared, &mut sink).await;
            }
        }
        assert_eq!(sink.streamed(), Some((3, last)));
        assert_eq!(
            shared.metrics.buffered_bytes.load(Ordering::Relaxed),
            sink.streamed_bytes() as u64,
            "the streamed rows count as their files' pages"
        );
        assert!(sink.streamed_bytes() > 0);
        lake.load(&id)
            .await
            .unwrap()
            .unwrap()
            .set_tbl_properties()
            .with_properties(HashMap::from([(
                "delta.checkpointInterval".to_string(),
                "50".to_string(),
            )]))
            .await
            .unwrap();
        pending.commit(&shared, &mut sink).await;
        assert_eq!(sink.committed_offset(), Some(last));
        assert_eq!(
            shared.metrics.commits.lock().unwrap()["silver.login"].errors,
            1
        );
        let (_, rows) = gamelake_lake::QueryEngine::new(lake)
            .sql("SELECT count(*), count(DISTINCT n), sum(n) FROM silver.login")
            .await
            .unwrap();
        let got: Vec<i64> = rows[0]
            .columns()
            .iter()
            .map(|c| c.as_any().downcast_ref::<Int64Array>().unwrap().value(0))
            .collect();
        assert_eq!(got, vec![4, 4, 6], "each row once");
        assert_eq!(
            shared.metrics.buffered_bytes.load(Ordering::Relaxed),
            0,
            "the memory of every batch is released, the failed stream's too"
        );
    }

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
