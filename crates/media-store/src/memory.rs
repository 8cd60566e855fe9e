//! An in-memory datastore, for tests and dry runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream, StreamExt};
use media_core::datastore::{
    BlobKey, BlobPayload, ByteRange, Datastore, DeleteStatus, Put, PutOptions, PutStatus,
    StoreError, StoredBlob,
};
use media_core::hashing::HashingReader;
use tokio::io::{AsyncRead, AsyncReadExt};

/// A datastore that keeps blobs in memory. Clones share the same blobs (and marker).
#[derive(Debug, Clone, Default)]
pub struct MemoryDatastore {
    blobs: Arc<Mutex<BTreeMap<BlobKey, Bytes>>>,
    marker: Arc<Mutex<Option<String>>>,
    /// The URI of the missing folder this store stands in for, if it does.
    stand_in_for: Option<String>,
}

impl MemoryDatastore {
    /// An empty datastore.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store standing in for a datastore that does not exist yet (a dry run's
    /// or a read-only tool's view of a missing folder): it reports `uri` as its own and
    /// is not [ephemeral](Datastore::is_ephemeral), because it stands for that folder.
    pub fn stand_in_for(uri: String) -> Self {
        Self {
            stand_in_for: Some(uri),
            ..Self::default()
        }
    }

    fn blob(&self, key: &BlobKey) -> Option<Bytes> {
        self.blobs.lock().expect("poisoned").get(key).cloned()
    }
}

#[async_trait]
impl Datastore for MemoryDatastore {
    fn uri(&self) -> String {
        self.stand_in_for
            .clone()
            .unwrap_or_else(|| "memory://".to_owned())
    }

    fn is_ephemeral(&self) -> bool {
        self.stand_in_for.is_none()
    }

    async fn read_marker(&self) -> Result<Option<String>, StoreError> {
        Ok(self.marker.lock().expect("poisoned").clone())
    }

    async fn claim_marker(&self, proposed: &str) -> Result<String, StoreError> {
        let mut marker = self.marker.lock().expect("poisoned");
        Ok(marker.get_or_insert_with(|| proposed.to_owned()).clone())
    }

    async fn replace_marker(&self, marker: &str) -> Result<(), StoreError> {
        *self.marker.lock().expect("poisoned") = Some(marker.to_owned());
        Ok(())
    }

    async fn put(
        &self,
        data: &mut (dyn AsyncRead + Send + Unpin),
        options: &PutOptions,
    ) -> Result<Put, StoreError> {
        let mut reader = HashingReader::new(data);
        let mut bytes = Vec::new();
        if let Err(source) = reader.read_to_end(&mut bytes).await {
            return Err(StoreError::Source {
                bytes_read: reader.bytes_read(),
                source,
            });
        }
        let (sha256, size) = reader.finish();
        options.check(&sha256, size)?;
        let key = BlobKey::for_hash(&sha256);
        let mut blobs = self.blobs.lock().expect("poisoned");
        let status = if blobs.contains_key(&key) {
            PutStatus::AlreadyPresent
        } else {
            blobs.insert(key.clone(), Bytes::from(bytes));
            PutStatus::Written
        };
        Ok(Put {
            blob: StoredBlob { sha256, size, key },
            status,
        })
    }

    async fn open(
        &self,
        key: &BlobKey,
        range: Option<ByteRange>,
    ) -> Result<BlobPayload, StoreError> {
        let bytes = self
            .blob(key)
            .ok_or_else(|| StoreError::NotFound { key: key.clone() })?;
        let size = bytes.len() as u64;
        let slice = match range {
            None => bytes,
            Some(r) if r.start <= size && r.start <= r.end => {
                bytes.slice(r.start as usize..r.end.min(size) as usize)
            }
            Some(r) => {
                return Err(StoreError::InvalidRange {
                    key: key.clone(),
                    start: r.start,
                    end: r.end,
                    size,
                });
            }
        };
        Ok(BlobPayload::Stream(Box::pin(std::io::Cursor::new(slice))))
    }

    async fn size(&self, key: &BlobKey) -> Result<Option<u64>, StoreError> {
        Ok(self.blob(key).map(|b| b.len() as u64))
    }

    async fn delete(&self, key: &BlobKey) -> Result<DeleteStatus, StoreError> {
        Ok(match self.blobs.lock().expect("poisoned").remove(key) {
            Some(_) => DeleteStatus::Deleted,
            None => DeleteStatus::NotFound,
        })
    }

    fn list(&self) -> BoxStream<'_, Result<BlobKey, StoreError>> {
        let mut keys: Vec<BlobKey> = self
            .blobs
            .lock()
            .expect("poisoned")
            .keys()
            .cloned()
            .collect();
        keys.sort_unstable();
        stream::iter(keys.into_iter().map(Ok)).boxed()
    }
}
