//! Large puts: a multipart upload that streams the body part by part, hashing it on the
//! way, and is aborted on every way out but success (see the [parent module](super)).

use bytes::Bytes;
use media_core::datastore::{BlobKey, Put, PutOptions, PutStatus, StoreError};
use media_core::hashing::HashingReader;
use object_store::path::Path;
use object_store::{ObjectStoreExt, WriteMultipart};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::{PART_SIZE, PARTS_IN_FLIGHT, S3Datastore, TEMP_PREFIX, stored};

/// The largest object one S3 CopyObject request copies: a body whose digest was not
/// given in advance goes up to a temporary key and is copied into place, so it may be no
/// larger (S3's multipart copy is not available through `object_store`).
pub const MAX_COPY_SIZE: u64 = 5 << 30;

/// A multipart upload that is aborted unless it was finished: by [`Upload::abort`] on an
/// error path, or, when the put is cancelled (its future dropped), by a task spawned on
/// the current runtime. An upload neither finished nor aborted (a crash) is left to the
/// bucket's lifecycle rule (see the README).
struct Upload(Option<WriteMultipart>);

impl Upload {
    fn parts(&mut self) -> &mut WriteMultipart {
        self.0
            .as_mut()
            .expect("an upload is used only before it is finished")
    }

    /// Aborts the upload (if it was not finished), dropping its parts; best effort.
    async fn abort(&mut self) {
        if let Some(upload) = self.0.take() {
            upload.abort().await.ok();
        }
    }

    /// Sends the last part and completes the upload (which aborts it when that fails).
    async fn finish(&mut self) -> Result<(), object_store::Error> {
        let upload = self.0.take().expect("an upload is finished once");
        upload.finish().await.map(drop)
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(upload) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move { upload.abort().await.ok() });
        }
    }
}

impl S3Datastore {
    /// Streams a body of at least one part into a multipart upload: to its final key when
    /// the caller named its digest, else to a temporary key copied into place afterwards
    /// (at most [`MAX_COPY_SIZE`] bytes). Aborted on any failure.
    pub(super) async fn put_large(
        &self,
        first: Bytes,
        reader: HashingReader<&mut (dyn AsyncRead + Send + Unpin)>,
        options: &PutOptions,
    ) -> Result<Put, StoreError> {
        let digest_known = options.expected.sha256.is_some();
        if !digest_known && let Some(size) = options.expected.size.filter(|&s| s > MAX_COPY_SIZE) {
            return Err(self.too_large_to_copy(size));
        }
        let target = match &options.expected.sha256 {
            Some(sha256) => Path::from(BlobKey::for_hash(sha256).as_str()),
            None => Path::from(format!("{TEMP_PREFIX}/{:032x}", rand::random::<u128>())),
        };
        let upload = self
            .store
            .put_multipart(&target)
            .await
            .map_err(|e| self.error("start the upload of", &target, e))?;
        let mut upload = Upload(Some(WriteMultipart::new_with_chunk_size(upload, PART_SIZE)));
        let put = self
            .stream_and_place(&mut upload, first, reader, options, &target)
            .await;
        if put.is_err() {
            upload.abort().await;
        }
        put
    }

    /// The body of [`S3Datastore::put_large`]: on an error, the caller aborts `upload`.
    async fn stream_and_place(
        &self,
        upload: &mut Upload,
        first: Bytes,
        mut reader: HashingReader<&mut (dyn AsyncRead + Send + Unpin)>,
        options: &PutOptions,
        target: &Path,
    ) -> Result<Put, StoreError> {
        let copied = target.as_ref().starts_with(TEMP_PREFIX);
        upload.parts().put(first);
        loop {
            let chunk = read_chunk(&mut reader).await?;
            if chunk.is_empty() {
                break;
            }
            if copied && reader.bytes_read() > MAX_COPY_SIZE {
                return Err(self.too_large_to_copy(reader.bytes_read()));
            }
            upload
                .parts()
                .wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .map_err(|e| self.error("upload a part of", target, e))?;
            upload.parts().put(chunk);
        }
        let (sha256, size) = reader.finish();
        options.check(&sha256, size)?;
        let key = BlobKey::for_hash(&sha256);
        let path = Path::from(key.as_str());
        let _serialized = self.put_lock(&key).lock().await;
        let present = self.head(&path).await?.is_some();
        if !copied {
            if present {
                upload.abort().await;
                return Ok(stored(sha256, size, key, PutStatus::AlreadyPresent));
            }
            upload
                .finish()
                .await
                .map_err(|e| self.error("complete the upload of", target, e))?;
            return Ok(stored(sha256, size, key, PutStatus::Written));
        }
        upload
            .finish()
            .await
            .map_err(|e| self.error("complete the upload of", target, e))?;
        let placed = if present {
            Ok(PutStatus::AlreadyPresent)
        } else {
            self.store
                .copy(target, &path)
                .await
                .map(|()| PutStatus::Written)
                .map_err(|e| self.error("copy into place", &path, e))
        };
        let removed = self
            .store
            .delete(target)
            .await
            .map_err(|e| self.error("delete", target, e));
        let status = placed?;
        removed?;
        Ok(stored(sha256, size, key, status))
    }

    /// A body of `size` bytes (or more) cannot go through a temporary object.
    fn too_large_to_copy(&self, size: u64) -> StoreError {
        StoreError::Source {
            bytes_read: size,
            source: std::io::Error::new(
                std::io::ErrorKind::FileTooLarge,
                format!(
                    "S3 datastore {} takes a blob over 5 GiB only when its SHA-256 is given \
                     in advance (without it, the blob goes up under a temporary key and one \
                     S3 copy request, limited to 5 GiB, would move it into place)",
                    self.location.uri()
                ),
            ),
        }
    }
}

/// Reads up to one part from `reader`: fewer bytes only at the end of the body.
pub(super) async fn read_chunk<R: AsyncRead + Unpin>(
    reader: &mut HashingReader<R>,
) -> Result<Bytes, StoreError> {
    let mut chunk = Vec::with_capacity(PART_SIZE);
    match (&mut *reader)
        .take(PART_SIZE as u64)
        .read_to_end(&mut chunk)
        .await
    {
        Ok(_) => Ok(chunk.into()),
        Err(source) => Err(StoreError::Source {
            bytes_read: reader.bytes_read(),
            source,
        }),
    }
}
