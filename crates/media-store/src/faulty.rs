//! A datastore that fails on demand, for tests of what callers do when the datastore
//! breaks mid-run (a full disk, an I/O error): [`FaultyDatastore`] wraps a real datastore
//! and, once a given number of puts has succeeded, fails every further put (and sync)
//! the way a full filesystem does; its deletes can be made to fail too (a permission or
//! network error), for tests of deletion queues.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use futures::stream::BoxStream;
use media_core::datastore::{
    BlobKey, BlobPayload, ByteRange, Datastore, DeleteStatus, Put, PutOptions, StoreError,
};
use tokio::io::AsyncRead;

/// A datastore that lets `puts_before_failing` puts through to the wrapped datastore,
/// then fails every put and sync with `ENOSPC` ("No space left on device"); while
/// [`FaultyDatastore::fail_deletes`] is set, deletes fail with `EACCES`. Reads and
/// listings always pass through.
#[derive(Debug)]
pub struct FaultyDatastore {
    inner: Arc<dyn Datastore>,
    /// Puts still allowed to succeed.
    remaining: AtomicU64,
    /// Puts refused so far.
    refused: AtomicU64,
    /// Whether deletes fail.
    deletes_fail: AtomicBool,
}

impl FaultyDatastore {
    /// Wraps `inner`; the first `puts_before_failing` puts succeed.
    pub fn new(inner: Arc<dyn Datastore>, puts_before_failing: u64) -> Self {
        Self {
            inner,
            remaining: AtomicU64::new(puts_before_failing),
            refused: AtomicU64::new(0),
            deletes_fail: AtomicBool::new(false),
        }
    }

    /// A folder datastore at `root` whose first `puts_before_failing` puts succeed.
    pub async fn in_folder(
        root: impl Into<std::path::PathBuf>,
        puts_before_failing: u64,
    ) -> Result<Self, StoreError> {
        let folder = crate::FileDatastore::open(root).await?;
        Ok(Self::new(Arc::new(folder), puts_before_failing))
    }

    /// How many puts (and syncs) were refused.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// Makes every delete fail with "permission denied" (`true`) or pass through again.
    pub fn fail_deletes(&self, failing: bool) {
        self.deletes_fail.store(failing, Ordering::SeqCst);
    }

    fn failing(&self) -> bool {
        self.remaining.load(Ordering::SeqCst) == 0
    }

    /// Takes one allowed put, or fails like a full disk.
    fn admit(&self, operation: &'static str) -> Result<(), StoreError> {
        let admitted = self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if admitted {
            Ok(())
        } else {
            Err(self.full(operation))
        }
    }

    fn full(&self, operation: &'static str) -> StoreError {
        self.refused.fetch_add(1, Ordering::SeqCst);
        StoreError::Io {
            operation,
            target: self.inner.uri(),
            source: std::io::Error::from_raw_os_error(28), // ENOSPC
        }
    }
}

#[async_trait]
impl Datastore for FaultyDatastore {
    fn uri(&self) -> String {
        self.inner.uri()
    }

    async fn put(
        &self,
        data: &mut (dyn AsyncRead + Send + Unpin),
        options: &PutOptions,
    ) -> Result<Put, StoreError> {
        self.admit("write")?;
        self.inner.put(data, options).await
    }

    async fn put_file(
        &self,
        file: std::fs::File,
        limit: u64,
        options: &PutOptions,
    ) -> Result<Put, StoreError> {
        self.admit("write")?;
        self.inner.put_file(file, limit, options).await
    }

    async fn open(
        &self,
        key: &BlobKey,
        range: Option<ByteRange>,
    ) -> Result<BlobPayload, StoreError> {
        self.inner.open(key, range).await
    }

    async fn size(&self, key: &BlobKey) -> Result<Option<u64>, StoreError> {
        self.inner.size(key).await
    }

    async fn sizes(&self, keys: &[BlobKey]) -> Result<Vec<Option<u64>>, StoreError> {
        self.inner.sizes(keys).await
    }

    async fn sync(&self) -> Result<(), StoreError> {
        if self.failing() {
            return Err(self.full("sync"));
        }
        self.inner.sync().await
    }

    async fn delete(&self, key: &BlobKey) -> Result<DeleteStatus, StoreError> {
        if self.deletes_fail.load(Ordering::SeqCst) {
            return Err(StoreError::Io {
                operation: "delete",
                target: key.to_string(),
                source: std::io::Error::from(std::io::ErrorKind::PermissionDenied),
            });
        }
        self.inner.delete(key).await
    }

    fn list(&self) -> BoxStream<'_, Result<BlobKey, StoreError>> {
        self.inner.list()
    }

    fn is_ephemeral(&self) -> bool {
        self.inner.is_ephemeral()
    }

    async fn read_marker(&self) -> Result<Option<String>, StoreError> {
        self.inner.read_marker().await
    }

    async fn claim_marker(&self, proposed: &str) -> Result<String, StoreError> {
        self.inner.claim_marker(proposed).await
    }

    async fn replace_marker(&self, marker: &str) -> Result<(), StoreError> {
        self.inner.replace_marker(marker).await
    }
}
