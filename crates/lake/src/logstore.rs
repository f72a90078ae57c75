//! The log store every table of the lake is opened with: delta-rs's own, with a kernel engine
//! that reads [`LOG_READAHEAD`] log files ahead instead of 1 000.
//!
//! delta-rs asks the log store for a kernel engine whenever it replays a table's log: loading a
//! snapshot, updating it, listing its files, writing a checkpoint, vacuum. The kernel's default
//! engine opens up to 1 000 log files at once, each with a JSON decoder sized for 1 000 rows
//! (~100 KB), and on a local disk each open file holds a blocking thread. A table that streams
//! commits has up to 100 JSON commits after its last checkpoint, so every load of it held ~10 MB
//! of decoders, and the jobs, maintenance and queries load many tables at once. With the lean
//! engine a load holds a few files' worth. Everything else is delegated unchanged.

use std::sync::Arc;

use async_trait::async_trait;
use deltalake::datafusion::execution::object_store::ObjectStoreUrl;
use deltalake::kernel::transaction::TransactionError;
use deltalake::kernel::Version;
use deltalake::logstore::{
    object_store::path::Path, CommitOrBytes, LogStore, LogStoreConfig, LogStoreRef, ObjectStoreRef,
};
use deltalake::DeltaResult;
use url::Url;
use uuid::Uuid;

/// Log files the engine of a [`LeanLogStore`] reads ahead (the kernel's default is 1 000).
pub const LOG_READAHEAD: usize = 8;

/// A kernel engine over a table's root store that reads [`LOG_READAHEAD`] files ahead, on the
/// current runtime (or, as delta-rs does, a background one when the current runtime has a
/// single thread). Call it inside the runtime (a blocking task of it is fine).
fn lean_engine(root_store: ObjectStoreRef) -> Arc<dyn delta_kernel::Engine> {
    use delta_kernel_engine::executor::tokio::{TokioBackgroundExecutor, TokioMultiThreadExecutor};
    let readahead = std::num::NonZero::new(LOG_READAHEAD).expect("nonzero");
    let builder =
        delta_kernel_engine::DefaultEngineBuilder::new(root_store).with_buffer_size(readahead);
    let handle = tokio::runtime::Handle::current();
    match handle.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => Arc::new(
            builder
                .with_task_executor(Arc::new(TokioBackgroundExecutor::new()))
                .build(),
        ),
        _ => Arc::new(
            builder
                .with_task_executor(Arc::new(TokioMultiThreadExecutor::new(handle)))
                .build(),
        ),
    }
}

/// delta-rs's log store for a table, whose [`LogStore::engine`] reads [`LOG_READAHEAD`] log files
/// ahead.
pub struct LeanLogStore {
    inner: LogStoreRef,
}

impl LeanLogStore {
    pub fn wrap(inner: LogStoreRef) -> LogStoreRef {
        Arc::new(LeanLogStore { inner })
    }
}

impl std::fmt::Debug for LeanLogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeanLogStore")
            .field("inner", &self.inner.name())
            .finish()
    }
}

#[async_trait]
impl LogStore for LeanLogStore {
    fn name(&self) -> String {
        self.inner.name()
    }

    async fn refresh(&self) -> DeltaResult<()> {
        self.inner.refresh().await
    }

    async fn read_commit_entry(&self, version: Version) -> DeltaResult<Option<bytes::Bytes>> {
        self.inner.read_commit_entry(version).await
    }

    async fn write_commit_entry(
        &self,
        version: Version,
        commit_or_bytes: CommitOrBytes,
        operation_id: Uuid,
    ) -> Result<(), TransactionError> {
        self.inner
            .write_commit_entry(version, commit_or_bytes, operation_id)
            .await
    }

    async fn abort_commit_entry(
        &self,
        version: Version,
        commit_or_bytes: CommitOrBytes,
        operation_id: Uuid,
    ) -> Result<(), TransactionError> {
        self.inner
            .abort_commit_entry(version, commit_or_bytes, operation_id)
            .await
    }

    async fn get_latest_version(&self, start_version: Version) -> DeltaResult<Version> {
        self.inner.get_latest_version(start_version).await
    }

    /// On a local disk, the table's store syncs and drops each data file once written
    /// ([`crate::settle`]).
    fn object_store(&self, operation_id: Option<Uuid>) -> ObjectStoreRef {
        let store = self.inner.object_store(operation_id);
        let root = self.inner.root_url();
        match root.to_file_path() {
            Ok(dir) if root.scheme() == "file" => crate::settle::SettlingStore::wrap(store, dir),
            _ => store,
        }
    }

    fn root_object_store(&self, operation_id: Option<Uuid>) -> ObjectStoreRef {
        self.inner.root_object_store(operation_id)
    }

    fn engine(&self, operation_id: Option<Uuid>) -> Arc<dyn delta_kernel::Engine> {
        lean_engine(self.inner.root_object_store(operation_id))
    }

    fn to_uri(&self, location: &Path) -> String {
        self.inner.to_uri(location)
    }

    fn root_url(&self) -> &Url {
        self.inner.root_url()
    }

    fn log_path(&self) -> &Path {
        self.inner.log_path()
    }

    fn transaction_url(&self, operation_id: Option<Uuid>) -> DeltaResult<Url> {
        self.inner.transaction_url(operation_id)
    }

    async fn is_delta_table_location(&self) -> DeltaResult<bool> {
        self.inner.is_delta_table_location().await
    }

    fn config(&self) -> &LogStoreConfig {
        self.inner.config()
    }

    fn object_store_url(&self) -> ObjectStoreUrl {
        self.inner.object_store_url()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use deltalake::arrow::array::{Int64Array, RecordBatch};
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use deltalake::protocol::SaveMode;
    use deltalake::DeltaTable;

    use crate::{Lake, TableId};

    fn rows(a: i64) -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Int64, true)]));
        vec![RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(vec![a]))]).unwrap()]
    }

    fn is_lean(table: &DeltaTable) -> bool {
        table.log_store().as_any().is::<LeanLogStore>()
    }

    /// Tables the lake opens, and the tables delta-rs's operations hand back, replay their log
    /// with the lean engine; a log several times longer than its readahead replays to the same
    /// snapshot as with delta-rs's default engine.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lake_tables_replay_their_log_with_the_lean_engine() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let id = TableId::new("silver", "t");
        let commits = 4 * LOG_READAHEAD as i64;
        let mut table = lake.unloaded(&id).unwrap();
        assert!(is_lean(&table));
        for a in 0..commits {
            table = table
                .write(rows(a))
                .with_save_mode(SaveMode::Append)
                .await
                .unwrap();
            assert!(is_lean(&table), "the write operation kept the log store");
        }

        let ours = lake.load(&id).await.unwrap().unwrap();
        assert!(is_lean(&ours));
        let theirs = DeltaTable::try_from_url(lake.table_url(&id)).await.unwrap();
        assert!(!is_lean(&theirs));
        assert_eq!(ours.version(), Some(commits as u64 - 1));
        assert_eq!(ours.version(), theirs.version());
        let files = |t: &DeltaTable| {
            let mut f: Vec<String> = t.get_file_uris().unwrap().collect();
            f.sort();
            f
        };
        assert_eq!(files(&ours).len(), commits as usize);
        assert_eq!(files(&ours), files(&theirs));
        assert_eq!(
            crate::test_util::sum_of_a(&lake, "t").await,
            (0..commits).sum::<i64>()
        );
    }
}
