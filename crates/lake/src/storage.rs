//! The storage root and the tables under it: `<root>/<schema>/<table>/_delta_log/`.
//!
//! The directories are the catalog: a table exists when its `_delta_log` does, so any Delta
//! reader (Spark, Trino, DuckDB) finds the same tables by path.

use std::sync::Arc;

use deltalake::DeltaTable;
use futures::TryStreamExt;
use object_store::path::Path as StorePath;
use object_store::ObjectStore;
use url::Url;

use crate::logstore::LeanLogStore;
use crate::LakeError;

/// `schema.table`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TableId {
    pub schema: String,
    pub name: String,
}

impl TableId {
    pub fn new(schema: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            schema: schema.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for TableId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// What `gamelake tables` and `GET /v1/tables` show of a table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TableInfo {
    pub schema: String,
    pub name: String,
    pub location: String,
    pub version: u64,
    pub rows: u64,
    pub files: u64,
    pub bytes: u64,
    pub partition_columns: Vec<String>,
    /// (column, type) pairs.
    pub columns: Vec<(String, String)>,
}

/// The storage root of all tables.
#[derive(Debug, Clone)]
pub struct Lake {
    root: Url,
    store: Arc<dyn ObjectStore>,
    /// Path of the root within `store`.
    prefix: StorePath,
    /// With [`Lake::pinned`]: the snapshot each table of one schema was first loaded at.
    pinned: Option<Pinned>,
    /// The latest snapshot loaded of each table, shared by every clone of this lake: the next
    /// load of the table reads only the log entries after it (a listing of the log when none
    /// are new) instead of its last checkpoint and every commit since. gamelake never removes a
    /// table; one whose directory is removed by hand while the process runs keeps answering
    /// from its last snapshot (and fails on its missing files) until a restart.
    latest: Arc<std::sync::Mutex<std::collections::HashMap<TableId, DeltaTable>>>,
    /// One gate per table, shared like `latest`: a table not loaded yet (or pinned and not yet
    /// held) is loaded by one caller at a time, and callers that waited for it then read only
    /// the log after its snapshot. Queries that start together (a batched build's two, a
    /// dashboard's panels after a restart) so read a table's checkpoint once, and a pinned
    /// table is held at one snapshot.
    loading: Arc<std::sync::Mutex<std::collections::HashMap<TableId, Arc<tokio::sync::Mutex<()>>>>>,
    /// Loads from a checkpoint (or the first commit) so far, for tests.
    #[cfg(test)]
    afresh: Arc<std::sync::atomic::AtomicUsize>,
}

/// Tables of one schema held at the snapshot they were first loaded at.
#[derive(Debug, Clone)]
struct Pinned {
    schema: String,
    tables: Arc<std::sync::Mutex<std::collections::HashMap<String, DeltaTable>>>,
}

impl Lake {
    /// Opens the root: a local directory path (created if missing) or an `object_store` URL.
    pub fn open(root: &str) -> Result<Self, LakeError> {
        let invalid = |reason: String| LakeError::InvalidRoot {
            root: root.to_string(),
            reason,
        };
        let url = match Url::parse(root) {
            Ok(url) if url.scheme().len() > 1 => url,
            _ => {
                let path = std::path::Path::new(root);
                std::fs::create_dir_all(path)
                    .map_err(|e| invalid(format!("cannot create directory: {e}")))?;
                let abs = path.canonicalize().map_err(|e| invalid(e.to_string()))?;
                Url::from_directory_path(&abs)
                    .map_err(|_| invalid("not an absolute path".into()))?
            }
        };
        let mut url = url;
        if !url.path().ends_with('/') {
            url.set_path(&format!("{}/", url.path()));
        }
        let (store, prefix) = object_store::parse_url(&url).map_err(|e| invalid(e.to_string()))?;
        Ok(Self {
            root: url,
            store: Arc::from(store),
            prefix,
            pinned: None,
            latest: Arc::default(),
            loading: Arc::default(),
            #[cfg(test)]
            afresh: Arc::default(),
        })
    }

    pub fn root(&self) -> &Url {
        &self.root
    }

    /// URL of a table's directory.
    pub fn table_url(&self, id: &TableId) -> Url {
        self.root
            .join(&format!("{}/{}/", id.schema, id.name))
            .expect("schema and table names are plain path segments")
    }

    /// Names of the tables of a schema (directories that hold a `_delta_log`), sorted.
    pub async fn list_tables(&self, schema: &str) -> Result<Vec<String>, LakeError> {
        let prefix = self.prefix.clone().join(schema);
        let listing = match self.store.list_with_delimiter(Some(&prefix)).await {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(source) => {
                return Err(LakeError::Store {
                    prefix: prefix.to_string(),
                    source,
                })
            }
        };
        let mut names = Vec::new();
        for dir in listing.common_prefixes {
            let Some(name) = dir.filename() else { continue };
            let log = dir.clone().join("_delta_log");
            let mut entries = self.store.list(Some(&log));
            let has_log = entries
                .try_next()
                .await
                .map_err(|source| LakeError::Store {
                    prefix: log.to_string(),
                    source,
                })?
                .is_some();
            if has_log {
                names.push(name.to_string());
            }
        }
        names.sort();
        Ok(names)
    }

    /// Whether a table has a `_delta_log` (the table exists).
    pub async fn exists(&self, id: &TableId) -> Result<bool, LakeError> {
        let log = self
            .prefix
            .clone()
            .join(id.schema.as_str())
            .join(id.name.as_str())
            .join("_delta_log");
        let mut entries = self.store.list(Some(&log));
        match entries.try_next().await {
            Ok(first) => Ok(first.is_some()),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(source) => Err(LakeError::Store {
                prefix: log.to_string(),
                source,
            }),
        }
    }

    /// The same root, where each table of `schema` is loaded once and then kept at that
    /// snapshot: for a run over past data (a backfill) that reads the same tables many times
    /// and wants one consistent view of them. Tables of other schemas load their latest
    /// snapshot. A lake already pinned to `schema` is returned as it is, with the snapshots it
    /// holds.
    pub fn pinned(&self, schema: &str) -> Lake {
        if self.pinned.as_ref().is_some_and(|p| p.schema == schema) {
            return self.clone();
        }
        Lake {
            pinned: Some(Pinned {
                schema: schema.to_string(),
                tables: Arc::default(),
            }),
            ..self.clone()
        }
    }

    /// Loads the latest snapshot of a table (the pinned one, see [`Lake::pinned`]), or `None` if
    /// it does not exist yet.
    pub async fn load(&self, id: &TableId) -> Result<Option<DeltaTable>, LakeError> {
        let pin = self.pinned.as_ref().filter(|p| p.schema == id.schema);
        let held = || {
            let p = pin?;
            p.tables
                .lock()
                .expect("pinned tables")
                .get(&id.name)
                .cloned()
        };
        if let Some(t) = held() {
            return Ok(Some(t));
        }
        if pin.is_none() {
            if let Some(t) = self.update_known(id).await {
                return Ok(Some(t));
            }
        }
        let gate = self
            .loading
            .lock()
            .expect("table loads")
            .entry(id.clone())
            .or_default()
            .clone();
        let _loading = gate.lock().await;
        if let Some(t) = held() {
            return Ok(Some(t));
        }
        let table = match self.update_known(id).await {
            Some(t) => Some(t),
            None => self.load_afresh(id).await?,
        };
        if let (Some(p), Some(t)) = (pin, &table) {
            p.tables
                .lock()
                .expect("pinned tables")
                .insert(id.name.clone(), t.clone());
        }
        Ok(table)
    }

    /// The kept latest snapshot of a table brought up to date by reading the log after it, or
    /// `None` if none is kept (or the log could not be read on from it).
    async fn update_known(&self, id: &TableId) -> Option<DeltaTable> {
        let mut table = self
            .latest
            .lock()
            .expect("latest snapshots")
            .get(id)
            .cloned()?;
        match table.update_incremental(None).await {
            Ok(()) => {
                self.remember(id, &table);
                Some(table)
            }
            // The log could not be read on from there: load the table from its start.
            Err(e) => {
                tracing::debug!(table = %id, error = %e, "updating the last snapshot failed; loading afresh");
                self.latest.lock().expect("latest snapshots").remove(id);
                None
            }
        }
    }

    /// Loads a table from its last checkpoint and the commits after it.
    async fn load_afresh(&self, id: &TableId) -> Result<Option<DeltaTable>, LakeError> {
        if !self.exists(id).await? {
            return Ok(None);
        }
        #[cfg(test)]
        self.afresh
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let t0 = std::time::Instant::now();
        let mut table = self.unloaded(id)?;
        table.load().await.map_err(|source| LakeError::Delta {
            table: id.to_string(),
            source,
        })?;
        if table.version().is_none() {
            return Ok(None);
        }
        tracing::debug!(table = %id, version = table.version(), load_ms = t0.elapsed().as_millis() as u64, "table loaded");
        self.remember(id, &table);
        Ok(Some(table))
    }

    /// Keeps `table` as the latest snapshot of `id` unless a newer one is already kept (two
    /// loads, or a load and a write, may finish out of order).
    pub(crate) fn remember(&self, id: &TableId, table: &DeltaTable) {
        let mut latest = self.latest.lock().expect("latest snapshots");
        match latest.get(id) {
            Some(kept) if kept.version() >= table.version() => {}
            _ => {
                latest.insert(id.clone(), table.clone());
            }
        }
    }

    /// A handle on a table that may not exist yet (its first write creates it), over a
    /// [`LeanLogStore`].
    pub fn unloaded(&self, id: &TableId) -> Result<DeltaTable, LakeError> {
        deltalake::DeltaTableBuilder::from_url(self.table_url(id))
            .and_then(|b| b.build_storage())
            .map(|store| DeltaTable::new(LeanLogStore::wrap(store)))
            .map_err(|source| LakeError::Delta {
                table: id.to_string(),
                source,
            })
    }

    /// The column names of a table's latest snapshot (the pinned one, see [`Lake::pinned`]), or
    /// `None` if it does not exist yet: [`Lake::describe`] without going over its files.
    pub async fn columns(&self, id: &TableId) -> Result<Option<Vec<String>>, LakeError> {
        let Some(table) = self.load(id).await? else {
            return Ok(None);
        };
        let snapshot = table.snapshot().map_err(|source| LakeError::Delta {
            table: id.to_string(),
            source,
        })?;
        Ok(Some(
            snapshot
                .schema()
                .fields()
                .map(|f| f.name().to_string())
                .collect(),
        ))
    }

    /// Schema, size and counts of a table.
    pub async fn describe(&self, id: &TableId) -> Result<Option<TableInfo>, LakeError> {
        let Some(table) = self.load(id).await? else {
            return Ok(None);
        };
        let delta = |source| LakeError::Delta {
            table: id.to_string(),
            source,
        };
        let snapshot = table.snapshot().map_err(delta)?;
        let metadata = snapshot.metadata();
        let schema = snapshot.schema();
        let columns = schema
            .fields()
            .map(|f| {
                (
                    f.name().to_string(),
                    crate::unify::delta_type_name(f.data_type()),
                )
            })
            .collect();
        let (mut rows, mut files, mut bytes) = (0u64, 0u64, 0u64);
        for file in snapshot.log_data().iter() {
            files += 1;
            bytes += file.size() as u64;
            rows += file.stats().as_deref().map_or(0, num_records_of_stats);
        }
        Ok(Some(TableInfo {
            schema: id.schema.clone(),
            name: id.name.clone(),
            location: self.table_url(id).to_string(),
            version: table.version().unwrap_or(0),
            rows,
            files,
            bytes,
            partition_columns: metadata.partition_columns().to_vec(),
            columns,
        }))
    }
}

/// One data file of a table's current snapshot.
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub path: String,
    pub bytes: u64,
    pub rows: u64,
    /// Milliseconds since the epoch.
    pub modified_ms: i64,
    /// Partition column → value (`None`: null).
    pub partition: std::collections::HashMap<String, Option<String>>,
    /// The earliest and latest `event_time` in the file (microseconds since the epoch, UTC),
    /// from its statistics; `None` when the table has no such column or the file no statistics.
    pub event_time_us: Option<(i64, i64)>,
}

impl Lake {
    /// The data files of a table's latest snapshot (empty if the table does not exist).
    pub async fn files(&self, id: &TableId) -> Result<Vec<FileInfo>, LakeError> {
        let Some(table) = self.load(id).await? else {
            return Ok(Vec::new());
        };
        let snapshot = table.snapshot().map_err(|source| LakeError::Delta {
            table: id.to_string(),
            source,
        })?;
        Ok(snapshot
            .log_data()
            .iter()
            .map(|f| FileInfo {
                path: f.path().to_string(),
                bytes: f.size() as u64,
                rows: f.num_records().unwrap_or(0) as u64,
                modified_ms: f.modification_time(),
                partition: f.partition_values_map(),
                event_time_us: event_time_of(f.min_values()).zip(event_time_of(f.max_values())),
            })
            .collect())
    }
}

/// `event_time` in a file's minimum or maximum statistics as delta-rs parsed them (it rounds
/// the millisecond-truncated maximum of timestamps up), microseconds since the epoch.
fn event_time_of(values: Option<delta_kernel::expressions::Scalar>) -> Option<i64> {
    use delta_kernel::expressions::Scalar;
    let Some(Scalar::Struct(values)) = values else {
        return None;
    };
    let i = values
        .fields()
        .iter()
        .position(|f| f.name() == gamelake_common::COL_EVENT_TIME)?;
    match values.values().get(i)? {
        Scalar::Timestamp(us) | Scalar::TimestampNtz(us) => Some(*us),
        _ => None,
    }
}

/// `numRecords` of a Delta `add` action's JSON statistics.
fn num_records_of_stats(stats: &str) -> u64 {
    serde_json::from_str::<serde_json::Value>(stats)
        .ok()
        .and_then(|v| v.get("numRecords").and_then(|n| n.as_u64()))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{Int64Array, RecordBatch};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use deltalake::protocol::SaveMode;

    use crate::{Lake, TableId};

    async fn append(lake: &Lake, id: &TableId, a: i64) {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![a]))]);
        let table = match lake.load(id).await.unwrap() {
            Some(t) => t,
            None => lake.unloaded(id).unwrap(),
        };
        table
            .write(vec![batch.unwrap()])
            .with_save_mode(SaveMode::Append)
            .await
            .unwrap();
    }

    /// A pinned lake keeps the snapshot it loaded first; pinning it again for the same schema
    /// keeps those snapshots (a scheduler pass hands its snapshot to the builds it starts),
    /// while another schema, or the lake it came from, loads the latest.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pinning_a_pinned_lake_keeps_its_snapshots() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let silver = TableId::new("silver", "t");
        let gold = TableId::new("gold", "t");
        append(&lake, &silver, 1).await;
        append(&lake, &gold, 1).await;

        let pinned = lake.pinned("silver");
        let version = |t: Option<deltalake::DeltaTable>| t.unwrap().version();
        assert_eq!(version(pinned.load(&silver).await.unwrap()), Some(0));
        append(&lake, &silver, 2).await;
        append(&lake, &gold, 2).await;

        assert_eq!(version(pinned.load(&silver).await.unwrap()), Some(0));
        let again = pinned.pinned("silver");
        assert_eq!(version(again.load(&silver).await.unwrap()), Some(0));
        assert_eq!(version(again.load(&gold).await.unwrap()), Some(1));
        assert_eq!(
            version(lake.pinned("silver").load(&silver).await.unwrap()),
            Some(1)
        );
        assert_eq!(version(lake.load(&silver).await.unwrap()), Some(1));
    }

    /// Loads of a table that start together read its log from the start once: the others wait
    /// and read on from that snapshot. Pinned, they all get the one snapshot pinned.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loads_at_once_read_a_table_from_its_start_once() {
        use std::sync::atomic::Ordering::Relaxed;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let writer = Lake::open(root).unwrap();
        let id = TableId::new("silver", "t");
        for a in 1..=3 {
            append(&writer, &id, a).await;
        }
        async fn versions(lake: Lake, id: &TableId) -> Vec<Option<u64>> {
            let loads = (0..8).map(|_| {
                let (lake, id) = (lake.clone(), id.clone());
                tokio::spawn(async move { lake.load(&id).await.unwrap().unwrap().version() })
            });
            let mut versions = Vec::new();
            for v in futures::future::join_all(loads).await {
                versions.push(v.unwrap());
            }
            versions
        }

        let lake = Lake::open(root).unwrap();
        assert_eq!(versions(lake.clone(), &id).await, vec![Some(2); 8]);
        assert_eq!(lake.afresh.load(Relaxed), 1);

        let lake = Lake::open(root).unwrap();
        let pinned = lake.pinned("silver");
        let (first, rest) = tokio::join!(versions(pinned.clone(), &id), async {
            append(&writer, &id, 4).await;
            versions(pinned.clone(), &id).await
        });
        assert_eq!(lake.afresh.load(Relaxed), 1);
        let all: std::collections::BTreeSet<_> = first.into_iter().chain(rest).collect();
        assert_eq!(all.len(), 1, "one pinned snapshot: {all:?}");
        assert_eq!(
            versions(lake, &id).await,
            vec![Some(3); 8],
            "unpinned, the lake reads on"
        );
    }

    /// A load after the first reads only the log entries after the snapshot the lake kept: with
    /// the commits before it gone from the log, the table still loads, and sees a second
    /// writer's commits and a checkpoint written after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_later_load_reads_only_the_commits_after_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let id = TableId::new("silver", "t");
        for a in 1..=3 {
            append(&lake, &id, a).await;
        }
        let version = |t: Option<deltalake::DeltaTable>| t.unwrap().version();
        assert_eq!(version(lake.load(&id).await.unwrap()), Some(2));

        // Another process's lake writes the next commit; the earlier ones disappear.
        let other = Lake::open(dir.path().to_str().unwrap()).unwrap();
        append(&other, &id, 4).await;
        let log = dir.path().join("silver/t/_delta_log");
        let commit = |v: u64| log.join(format!("{v:020}.json"));
        let kept: Vec<Vec<u8>> = (0..=2).map(|v| std::fs::read(commit(v)).unwrap()).collect();
        for v in 0..=2 {
            std::fs::remove_file(commit(v)).unwrap();
        }
        assert!(
            Lake::open(dir.path().to_str().unwrap())
                .unwrap()
                .load(&id)
                .await
                .is_err(),
            "a fresh load cannot read a log without its first commits"
        );
        assert_eq!(version(lake.load(&id).await.unwrap()), Some(3));
        assert_eq!(lake.files(&id).await.unwrap().len(), 4);
        for (v, bytes) in kept.iter().enumerate() {
            std::fs::write(commit(v as u64), bytes).unwrap();
        }

        // A checkpoint after the kept snapshot, a commit, then the log before the checkpoint
        // cleaned up: read from the checkpoint on.
        append(&other, &id, 5).await;
        let table = other.load(&id).await.unwrap().unwrap();
        deltalake::checkpoints::create_checkpoint(&table, None)
            .await
            .unwrap();
        append(&other, &id, 6).await;
        for v in 0..=4 {
            std::fs::remove_file(commit(v)).unwrap();
        }
        assert_eq!(version(lake.load(&id).await.unwrap()), Some(5));
        assert_eq!(lake.files(&id).await.unwrap().len(), 6);
        assert_eq!(crate::test_util::sum_of_a(&lake, "t").await, 21);
    }
}
