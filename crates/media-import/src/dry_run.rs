//! The dry run's stand-in for the datastore: the same reading and checks as a real
//! run, and the same decision whether a blob would be written, with nothing written.

use media_core::datastore::{BlobKey, Put, PutOptions, PutStatus, StoreError, StoredBlob};
use media_core::hashing::HashingReader;

use crate::context::Context;

/// A dry run's "put": hashes and checks the bytes, and says whether a real run would
/// write them (new to the repository and to this run) without writing anything.
pub(crate) async fn hash_only(
    context: &Context,
    source: &mut (dyn tokio::io::AsyncRead + Send + Unpin),
    expected: &PutOptions,
) -> Result<Put, StoreError> {
    let mut reader = HashingReader::new(source);
    if let Err(source) = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await {
        return Err(StoreError::Source {
            bytes_read: reader.bytes_read(),
            source,
        });
    }
    let (sha256, size) = reader.finish();
    expected.check(&sha256, size)?;
    let known = context
        .sink
        .stored_size(&sha256)
        .await
        .map_err(|e| StoreError::Config(e.to_string()))?
        .is_some();
    let first_time = context
        .dry_run_seen
        .lock()
        .await
        .insert_if_new(&sha256, "")
        .await
        .map_err(|e| StoreError::Config(e.to_string()))?;
    let key = BlobKey::for_hash(&sha256);
    Ok(Put {
        blob: StoredBlob { sha256, size, key },
        status: if first_time && !known {
            PutStatus::Written
        } else {
            PutStatus::AlreadyPresent
        },
    })
}
