//! The object store of a table on a local disk, through which delta-rs writes: a Parquet data
//! file, once written, is synced to the disk (`fdatasync`) and its pages are dropped from the
//! page cache (`POSIX_FADV_DONTNEED`) before the write returns, so before the commit that adds
//! it. Everything else is delegated unchanged.
//!
//! - **CPU.** On the benchmark VMs a page of memory that has been free for a while is slow to
//!   touch again: copying a new file into new page-cache pages ran at ~110–140 MB/s and took a
//!   fifth of the server's CPU at 380 000 events/s. A file's dropped pages are what the next
//!   file is written into, and those are quick (`python3 bench/page-cache-writes.py`: forty
//!   4 MiB files in 137 ms synced and dropped, 1 155–1 431 ms kept in the cache; BENCHMARKS.md,
//!   issue 3, fourteenth session).
//! - **Durability.** A commit's files are on the disk before the commit, which then no longer
//!   depends on the page cache's writeback after the write-ahead log has dropped its records.
//!
//! Queries then read fresh files from the disk rather than from the cache. Object stores
//! (`s3://` …) are not wrapped.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result, UploadPart,
};

use deltalake::logstore::ObjectStoreRef;

/// A table's local object store whose Parquet files are synced and dropped from the page cache
/// once written. `root` is the directory the store's paths are relative to.
#[derive(Debug)]
pub struct SettlingStore {
    inner: ObjectStoreRef,
    root: PathBuf,
}

impl SettlingStore {
    pub fn wrap(inner: ObjectStoreRef, root: PathBuf) -> ObjectStoreRef {
        std::sync::Arc::new(SettlingStore { inner, root })
    }

    /// The file behind `location` if it is a data file.
    fn data_file(&self, location: &Path) -> Option<PathBuf> {
        location
            .as_ref()
            .ends_with(".parquet")
            .then(|| self.root.join(location.as_ref()))
    }
}

impl fmt::Display for SettlingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Settling({})", self.inner)
    }
}

/// Syncs `path` to the disk and drops its pages from the page cache.
async fn settle(path: PathBuf) -> Result<()> {
    let done = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let file = std::fs::File::open(&path)?;
        file.sync_data()?;
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            // SAFETY: advice on an open descriptor; it only drops clean cached pages.
            #[allow(unsafe_code)]
            unsafe {
                libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
            }
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|join| Err(std::io::Error::other(join)));
    done.map_err(|source| object_store::Error::Generic {
        store: "gamelake",
        source: Box::new(source),
    })
}

/// A multipart upload whose file is settled when it completes.
#[derive(Debug)]
struct SettlingUpload {
    inner: Box<dyn MultipartUpload>,
    file: Option<PathBuf>,
}

#[async_trait]
impl MultipartUpload for SettlingUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.inner.put_part(data)
    }

    async fn complete(&mut self) -> Result<PutResult> {
        let result = self.inner.complete().await?;
        if let Some(file) = self.file.take() {
            settle(file).await?;
        }
        Ok(result)
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}

#[async_trait]
impl ObjectStore for SettlingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        let result = self.inner.put_opts(location, payload, opts).await?;
        if let Some(file) = self.data_file(location) {
            settle(file).await?;
        }
        Ok(result)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(SettlingUpload {
            inner,
            file: self.data_file(location),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::sync::Arc;

    use object_store::local::LocalFileSystem;
    use object_store::ObjectStoreExt;

    use super::*;
    use crate::{Lake, TableId};

    /// Pages of `path` in the page cache.
    #[allow(unsafe_code)]
    fn cached_pages(path: &std::path::Path) -> usize {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        let page = 4096;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: a read-only shared mapping of an open file, unmapped before returning;
        // mincore writes one byte a page into `vec`, which has one byte a page.
        unsafe {
            let addr = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(addr, libc::MAP_FAILED);
            assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0);
            libc::munmap(addr, len);
        }
        vec.iter().filter(|b| *b & 1 == 1).count()
    }

    /// A data file is out of the page cache once its write returns, whether written in one
    /// put or in parts; other files (the Delta log's) stay cached.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn data_files_leave_the_page_cache_once_written() {
        let dir = tempfile::tempdir().unwrap();
        let local: ObjectStoreRef = Arc::new(LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let store = SettlingStore::wrap(local, dir.path().to_path_buf());
        let body = vec![7u8; 1 << 20];

        store
            .put(&Path::from("d=1/a.parquet"), body.clone().into())
            .await
            .unwrap();
        let mut upload = store
            .put_multipart(&Path::from("d=1/b.parquet"))
            .await
            .unwrap();
        upload.put_part(body.clone().into()).await.unwrap();
        upload.put_part(body.clone().into()).await.unwrap();
        upload.complete().await.unwrap();
        store
            .put(&Path::from("_delta_log/0.json"), body.clone().into())
            .await
            .unwrap();

        // Looked at before reading them, which brings their pages back.
        assert_eq!(cached_pages(&dir.path().join("d=1/a.parquet")), 0);
        assert_eq!(cached_pages(&dir.path().join("d=1/b.parquet")), 0);
        assert!(cached_pages(&dir.path().join("_delta_log/0.json")) > 0);
        assert_eq!(
            std::fs::read(dir.path().join("d=1/a.parquet")).unwrap(),
            body
        );
        assert_eq!(
            std::fs::metadata(dir.path().join("d=1/b.parquet"))
                .unwrap()
                .len(),
            2 << 20
        );
    }

    /// The lake's tables on a local disk write through it, with paths under the table's root.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lake_tables_write_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path().to_str().unwrap()).unwrap();
        let table = lake.unloaded(&TableId::new("silver", "t")).unwrap();
        let store = table.log_store().object_store(None);
        assert!(store.to_string().starts_with("Settling("), "{store}");
        let root = table.log_store().root_url().to_file_path().unwrap();
        std::fs::create_dir_all(&root).unwrap();
        store
            .put(&Path::from("x.parquet"), vec![1u8; 8192].into())
            .await
            .unwrap();
        assert_eq!(cached_pages(&root.join("x.parquet")), 0);
    }
}
