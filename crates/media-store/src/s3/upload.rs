//! Large puts: a multipart upload that streams the body part by part, hashing it on the
//! way, within the datastore's memory budget, and is aborted on every way out but success
//! (see the [parent module](super)).

use bytes::Bytes;
use media_core::datastore::{BlobKey, Put, PutOptions, PutStatus, StoreError};
use media_core::hashing::HashingReader;
use object_store::path::Path;
use object_store::{MultipartUpload, ObjectStoreExt};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinSet;

use super::{PART_SIZE, PARTS_IN_FLIGHT, S3Datastore, TEMP_PREFIX, stored};

/// The largest object one S3 CopyObject request copies: a body whose digest was not
/// given in advance goes up to a temporary key and is copied into place, so it may be no
/// larger (S3's multipart copy is not available through `object_store`).
pub const MAX_COPY_SIZE: u64 = 5 << 30;

/// A part of a body in memory, holding its share of the datastore's memory budget
/// ([`super::PART_BUFFERS`]) until it is sent or dropped.
pub(super) type Part = (Bytes, OwnedSemaphorePermit);

/// A multipart upload whose parts are sent by tasks of their own, at most
/// [`PARTS_IN_FLIGHT`] at a time. It is aborted unless it was completed: by
/// [`Upload::abort`] on an error path, or, when the put is cancelled (its future
/// dropped), by a task spawned on the current runtime. An upload neither completed nor
/// aborted (a crash) is left to the bucket's lifecycle rule (see the README).
struct Upload {
    upload: Option<Box<dyn MultipartUpload>>,
    parts: JoinSet<Result<(), object_store::Error>>,
}

impl Upload {
    /// Sends a part (releasing its budget once it is sent), after waiting until fewer
    /// than [`PARTS_IN_FLIGHT`] parts are in flight.
    async fn send(&mut self, (bytes, budget): Part) -> Result<(), object_store::Error> {
        while self.parts.len() >= PARTS_IN_FLIGHT {
            self.sent_one().await?;
        }
        let upload = self
            .upload
            .as_mut()
            .expect("parts are sent before completion");
        let sending = upload.put_part(bytes.into());
        self.parts.spawn(async move {
            let sent = sending.await;
            drop(budget);
            sent
        });
        Ok(())
    }

    /// Waits for one part in flight to be sent.
    async fn sent_one(&mut self) -> Result<(), object_store::Error> {
        match self.parts.join_next().await {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(e)) => Err(object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            }),
        }
    }

    /// Waits for every part to be sent, then completes the upload.
    async fn complete(&mut self) -> Result<(), object_store::Error> {
        while !self.parts.is_empty() {
            self.sent_one().await?;
        }
        let upload = self.upload.as_mut().expect("an upload is completed once");
        upload.complete().await?;
        self.upload = None;
        Ok(())
    }

    /// Aborts the upload (unless it was completed), dropping its parts; best effort.
    async fn abort(&mut self) {
        self.parts.shutdown().await;
        if let Some(mut upload) = self.upload.take() {
            upload.abort().await.ok();
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(mut upload) = self.upload.take()
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
        first: Part,
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
        let mut upload = Upload {
            upload: Some(upload),
            parts: JoinSet::new(),
        };
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
        first: Part,
        mut reader: HashingReader<&mut (dyn AsyncRead + Send + Unpin)>,
        options: &PutOptions,
        target: &Path,
    ) -> Result<Put, StoreError> {
        let copied = target.as_ref().starts_with(TEMP_PREFIX);
        let sent = |e| self.error("upload a part of", target, e);
        upload.send(first).await.map_err(sent)?;
        loop {
            let budget = self.part_buffer().await;
            let bytes = read_chunk(&mut reader, Vec::new(), PART_SIZE).await?;
            if bytes.is_empty() {
                break;
            }
            if copied && reader.bytes_read() > MAX_COPY_SIZE {
                return Err(self.too_large_to_copy(reader.bytes_read()));
            }
            upload.send((bytes, budget)).await.map_err(sent)?;
        }
        let (sha256, size) = reader.finish();
        options.check(&sha256, size)?;
        let key = BlobKey::for_hash(&sha256);
        let path = Path::from(key.as_str());
        let _serialized = self.put_lock(&key).lock().await;
        let present = self.head(&path).await?.is_some();
        let completed = |e| self.error("complete the upload of", target, e);
        if !copied {
            if present {
                upload.abort().await;
                return Ok(stored(sha256, size, key, PutStatus::AlreadyPresent));
            }
            upload.complete().await.map_err(completed)?;
            return Ok(stored(sha256, size, key, PutStatus::Written));
        }
        upload.complete().await.map_err(completed)?;
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

/// Reads from `reader` onto the end of `chunk` until it holds `len` bytes or the body
/// ends (reserving room for `len` bytes first).
pub(super) async fn read_chunk<R: AsyncRead + Unpin>(
    reader: &mut HashingReader<R>,
    mut chunk: Vec<u8>,
    len: usize,
) -> Result<Bytes, StoreError> {
    let missing = len.saturating_sub(chunk.len());
    chunk.reserve_exact(missing);
    match (&mut *reader)
        .take(missing as u64)
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
