//! A content-addressed datastore in a bucket of any S3-compatible object store (AWS, Garage,
//! MinIO, Ceph, …), on `object_store`'s S3 client.
//!
//! Layout, below the URI's optional prefix: `ab/cd/abcdef…` for each blob (the same keys as
//! a folder store), `.tmp/…` for large uploads whose digest was not known in advance, and
//! `.datastore-id` for the store's identity marker (see [`Datastore::claim_marker`]).
//!
//! A put hashes the bytes while it streams them. A body smaller than one [`PART_SIZE`]
//! part is buffered, hashed, checked and uploaded in one request under its final key. A
//! larger one goes up as a multipart upload, at most [`PARTS_IN_FLIGHT`] parts at a time:
//! straight to its final key when the caller said which digest the bytes have (the upload
//! only becomes visible when it is completed, after the check), else to a temporary key
//! that is copied to the final key once the digest is known and then deleted. A failed
//! read or check, or a cancelled put, aborts the upload, so nothing appears under a blob
//! key; an upload interrupted by a crash is invisible (an incomplete multipart upload, for
//! the bucket's lifecycle rule) or a `.tmp/` object, which [`Datastore::list`] never
//! reports and [`S3Datastore::cleanup`] removes.
//!
//! Memory: a body known to be smaller than [`SMALL_BODY`] is read freely into a buffer of
//! its size, as are the first [`SMALL_BODY`] bytes of a body of unknown size; beyond
//! that (and from the start for a body known to be larger), every buffer
//! of up to one part (being read, or being sent) takes one of the datastore's
//! [`PART_BUFFERS`] until it is sent, so all the puts into one datastore read or send at
//! most that many parts at once, however many run; and at most [`IDLE_CONNECTIONS`] idle
//! connections (each holding its last body) are kept. Eight concurrent puts of 64 MiB
//! peak at 73 MiB resident (`examples/s3_put_memory.rs`).
//!
//! Correctness never depends on conditional writes (several S3-compatible servers ignore
//! them): a blob's key is its digest, so two writers of one key write the same bytes, and
//! the repository's database decides which of them records it. Within one process, puts
//! of the same bytes are serialized so that exactly one reports
//! [`PutStatus::Written`].
//!
//! An S3 put is durable when it returns, so [`Datastore::sync`] has nothing to do.
//!
//! Credentials: see [`credentials`] (keys given in code, the AWS environment variables or
//! a profile of the AWS shared files).

pub mod credentials;
mod diagnosis;
mod upload;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use media_core::datastore::{
    BlobKey, BlobPayload, ByteRange, Datastore, DeleteStatus, Put, PutOptions, PutStatus,
    StoreError, StoredBlob,
};
use media_core::hashing::HashingReader;
use media_core::ids::Sha256Hex;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    BackoffConfig, ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode,
    RetryConfig, StaticCredentialProvider,
};
use tokio::io::AsyncRead;

use self::credentials::{AwsEnvironment, Resolved};
pub use self::credentials::{S3Credentials, S3Keys};
use self::diagnosis::Cause;
pub use self::upload::MAX_COPY_SIZE;
use self::upload::read_chunk;
use crate::fs::{CleanupReport, MARKER_FILE};

/// Bytes per part of a multipart upload; a body shorter than this goes up in one request.
pub const PART_SIZE: usize = 8 << 20;
/// Parts of one multipart upload sent at once.
pub const PARTS_IN_FLIGHT: usize = 2;
/// Buffers of up to [`PART_SIZE`] bytes that the puts into one datastore hold at once, in
/// all (being read or being sent): the memory budget of large puts, whatever their number.
pub const PART_BUFFERS: usize = 8;
/// Idle connections to the server kept for reuse: each keeps its last request body (up to
/// one part) alive until it is used again.
pub const IDLE_CONNECTIONS: usize = 4;
/// Bytes of a body a put reads before it takes one of the [`PART_BUFFERS`]: smaller bodies
/// never wait for one.
pub const SMALL_BODY: usize = 1 << 20;
/// Folder, below the prefix, of large uploads whose digest is not known yet.
pub const TEMP_PREFIX: &str = ".tmp";
/// How old a `.tmp/` object must be before [`S3Datastore::open`] takes it for what a
/// crashed writer left (see [`S3Datastore::cleanup`]).
pub const STALE_TEMPORARY_AGE: Duration = Duration::from_secs(24 * 60 * 60);
/// In-process locks that puts of one key share (by the key's first byte).
const PUT_LOCKS: usize = 256;

/// Where an `s3://` datastore URI points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The folder inside the bucket (no leading or trailing `/`), empty for the whole bucket.
    pub prefix: String,
    /// The server's URL for S3-compatible servers (requests use path-style addressing);
    /// `None` for AWS.
    pub endpoint: Option<String>,
    /// The region; `None` to take it from `AWS_REGION`/`AWS_DEFAULT_REGION`, else from
    /// the profile the credentials come from (else the client's default).
    pub region: Option<String>,
    /// The profile of the AWS shared files to take the credentials from (see
    /// [`credentials`]); `None` for the standard order.
    pub profile: Option<String>,
}

impl S3Location {
    /// Parses `s3://bucket/optional/prefix?endpoint=http://127.0.0.1:3900&region=garage`
    /// (each parameter optional; `&profile=NAME` names a profile of the AWS shared files).
    pub fn parse(uri: &str) -> Result<Self, StoreError> {
        let bad = |why: &str| {
            StoreError::Config(format!(
                "unsupported datastore {uri:?}: {why}; use \
                 s3://bucket/optional/prefix?endpoint=http://host:port&region=name"
            ))
        };
        let url = url::Url::parse(uri).map_err(|e| bad(&e.to_string()))?;
        if url.scheme() != "s3" {
            return Err(bad("the scheme is not s3"));
        }
        if !url.username().is_empty() || url.password().is_some() || url.port().is_some() {
            return Err(bad(
                "credentials and ports do not belong in the bucket name (credentials come \
                 from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or a profile named by \
                 ?profile=, the server from ?endpoint=)",
            ));
        }
        let bucket = url.host_str().unwrap_or_default().to_owned();
        if bucket.is_empty() {
            return Err(bad("it names no bucket"));
        }
        // From the URI as written: parsing resolves `..` away.
        let written = uri["s3://".len()..]
            .split(['?', '#'])
            .next()
            .unwrap_or_default();
        let prefix = written
            .split_once('/')
            .map_or("", |(_, path)| path.trim_matches('/'))
            .to_owned();
        if prefix
            .split('/')
            .any(|part| (part.is_empty() && !prefix.is_empty()) || part == "." || part == "..")
        {
            return Err(bad("the prefix has an empty, '.' or '..' folder"));
        }
        let (mut endpoint, mut region, mut profile) = (None, None, None);
        for (name, value) in url.query_pairs() {
            let slot = match &*name {
                "endpoint" => &mut endpoint,
                "region" => &mut region,
                "profile" => &mut profile,
                other => return Err(bad(&format!("unknown parameter {other:?}"))),
            };
            if value.is_empty() {
                return Err(bad(&format!("parameter {name:?} is empty")));
            }
            *slot = Some(value.into_owned());
        }
        if let Some(endpoint) = &endpoint
            && !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
        {
            return Err(bad("the endpoint is not an http:// or https:// URL"));
        }
        Ok(Self {
            bucket,
            prefix,
            endpoint,
            region,
            profile,
        })
    }

    /// The URI in its canonical form.
    pub fn uri(&self) -> String {
        let mut uri = format!("s3://{}", self.bucket);
        if !self.prefix.is_empty() {
            uri.push('/');
            uri.push_str(&self.prefix);
        }
        let params: Vec<String> = [
            ("endpoint", &self.endpoint),
            ("region", &self.region),
            ("profile", &self.profile),
        ]
        .into_iter()
        .filter_map(|(name, value)| value.as_ref().map(|v| format!("{name}={v}")))
        .collect();
        if !params.is_empty() {
            uri.push('?');
            uri.push_str(&params.join("&"));
        }
        uri
    }

    /// An S3 client for this location with these credentials, timeouts and retries.
    fn client(
        &self,
        credentials: &Resolved,
        patience: Patience,
    ) -> Result<Arc<dyn ObjectStore>, StoreError> {
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_client_options(patience.client_options())
            .with_retry(patience.retry_config());
        if let Resolved::Keys { keys, region, .. } = credentials {
            // A credential provider replaces every key, token or role the environment
            // holds.
            builder =
                builder.with_credentials(Arc::new(StaticCredentialProvider::new(keys.to_aws())));
            if let Some(region) = region
                && builder
                    .get_config_value(&AmazonS3ConfigKey::Region)
                    .is_none()
            {
                builder = builder.with_region(region);
            }
        }
        if let Some(endpoint) = &self.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"))
                .with_virtual_hosted_style_request(false);
        }
        if let Some(region) = &self.region {
            builder = builder.with_region(region);
        }
        let s3 = builder.build().map_err(|e| {
            StoreError::Config(format!("cannot set up S3 datastore {}: {e}", self.uri()))
        })?;
        Ok(if self.prefix.is_empty() {
            Arc::new(s3)
        } else {
            Arc::new(PrefixStore::new(s3, self.prefix.as_str()))
        })
    }
}

/// How long requests may take and how often they are retried.
#[derive(Debug, Clone, Copy)]
enum Patience {
    /// The start-up check: an unreachable server is reported within seconds.
    StartUp,
    /// Everyday work: transient failures are retried with backoff, for a bounded time.
    Work,
}

impl Patience {
    fn client_options(self) -> ClientOptions {
        let options = ClientOptions::new().with_connect_timeout(Duration::from_secs(5));
        match self {
            Self::StartUp => options.with_timeout(Duration::from_secs(10)),
            // One request moves at most one part; a stalled response fails after a minute.
            // A streamed read cut by the timeout resumes where it stopped.
            // An idle pooled connection keeps its last request's body (up to one part) alive
            // until it is used again: a few idle connections, not one per worker that
            // ever ran (8 puts of 64 MiB peaked at 200 MiB, 73 MiB with this cap).
            Self::Work => options
                .with_timeout(Duration::from_secs(300))
                .with_read_timeout(Duration::from_secs(60))
                .with_pool_max_idle_per_host(IDLE_CONNECTIONS),
        }
    }

    fn retry_config(self) -> RetryConfig {
        match self {
            Self::StartUp => RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 1,
                retry_timeout: Duration::from_secs(5),
            },
            Self::Work => RetryConfig {
                backoff: BackoffConfig::default(),
                max_retries: 6,
                retry_timeout: Duration::from_secs(120),
            },
        }
    }
}

/// A datastore in an S3 bucket. See the [module documentation](self).
pub struct S3Datastore {
    location: S3Location,
    /// Where the credentials came from (never a secret), for messages.
    credentials: String,
    store: Arc<dyn ObjectStore>,
    /// Serialize puts of one key in this process (see the module documentation).
    put_locks: Arc<[tokio::sync::Mutex<()>]>,
    /// The [`PART_BUFFERS`] budget.
    part_buffers: Arc<tokio::sync::Semaphore>,
}

impl fmt::Debug for S3Datastore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Datastore")
            .field("uri", &self.location.uri())
            .finish_non_exhaustive()
    }
}

/// What a tool does with the S3 datastore it opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3Access {
    /// It writes: opening removes the temporary objects crashed writers left (see
    /// [`S3Datastore::cleanup`]).
    Write,
    /// It only reads: opening writes and deletes nothing.
    ReadOnly,
}

impl S3Datastore {
    /// Opens the datastore at `location` for writing, with the [standard
    /// credentials](S3Credentials::Standard): see [`S3Datastore::open_with`].
    pub async fn open(location: S3Location) -> Result<Self, StoreError> {
        Self::open_with(location, &S3Credentials::Standard, S3Access::Write).await
    }

    /// Opens the datastore at `location` for reading only, with the [standard
    /// credentials](S3Credentials::Standard): see [`S3Datastore::open_with`].
    pub async fn open_read_only(location: S3Location) -> Result<Self, StoreError> {
        Self::open_with(location, &S3Credentials::Standard, S3Access::ReadOnly).await
    }

    /// Opens the datastore at `location` with `credentials` after checking, within
    /// seconds, that its server answers, its bucket exists and the credentials are
    /// accepted (by listing the prefix); any of these failing, or credentials that cannot
    /// be found (see [`credentials`]), is [`StoreError::Config`]. For
    /// [`S3Access::Write`], then removes the temporary objects older than
    /// [`STALE_TEMPORARY_AGE`]; for [`S3Access::ReadOnly`], nothing is written or deleted.
    pub async fn open_with(
        location: S3Location,
        credentials: &S3Credentials,
        access: S3Access,
    ) -> Result<Self, StoreError> {
        let credentials = credentials::resolve(
            credentials,
            location.profile.as_deref(),
            &AwsEnvironment::current(),
        )?;
        let probe = location.client(&credentials, Patience::StartUp)?;
        if let Err(e) = probe.list_with_delimiter(None).await {
            let uri = location.uri();
            return Err(StoreError::Config(match Cause::of(&e) {
                Some(cause) => format!(
                    "cannot use S3 datastore {uri}: {} ({e})",
                    cause.advice(&location, &credentials.origin())
                ),
                None => format!(
                    "cannot use S3 datastore {uri}: {e}. Check that the endpoint answers, \
                     that the bucket exists and that the server accepts the credentials ({})",
                    credentials.origin(),
                ),
            }));
        }
        let store = location.client(&credentials, Patience::Work)?;
        let opened = Self {
            location,
            credentials: credentials.origin(),
            store,
            put_locks: (0..PUT_LOCKS).map(|_| Default::default()).collect(),
            part_buffers: Arc::new(tokio::sync::Semaphore::new(PART_BUFFERS)),
        };
        if access == S3Access::Write {
            opened.cleanup(STALE_TEMPORARY_AGE).await?;
        }
        Ok(opened)
    }

    /// Removes the temporary objects (`.tmp/…`) last modified more than `older_than` ago:
    /// what writers that crashed between completing a temporary upload and deleting it
    /// left. A running writer's temporary object lives for seconds after its upload
    /// completes, but S3 dates a multipart object by the start of its upload, so the age
    /// must exceed the longest upload ([`S3Datastore::open`] uses
    /// [`STALE_TEMPORARY_AGE`]). Ages are measured on the server's clock against this
    /// machine's.
    pub async fn cleanup(&self, older_than: Duration) -> Result<CleanupReport, StoreError> {
        let cutoff = std::time::SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(std::time::SystemTime::UNIX_EPOCH);
        let temp = Path::from(TEMP_PREFIX);
        let mut report = CleanupReport::default();
        let mut objects = self.store.list(Some(&temp));
        while let Some(meta) = objects.next().await {
            let meta = meta.map_err(|e| self.error("list", &temp, e))?;
            if std::time::SystemTime::from(meta.last_modified) > cutoff {
                continue;
            }
            match self.store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.error("delete", &meta.location, e)),
            }
            report.removed_files += 1;
            report.removed_bytes += meta.size;
        }
        Ok(report)
    }

    /// The location this store was opened at.
    pub fn location(&self) -> &S3Location {
        &self.location
    }

    /// Waits for one of the [`PART_BUFFERS`], held until the permit is dropped.
    async fn part_buffer(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.part_buffers
            .clone()
            .acquire_owned()
            .await
            .expect("the budget is never closed")
    }

    fn put_lock(&self, key: &BlobKey) -> &tokio::sync::Mutex<()> {
        let first_byte = u8::from_str_radix(&key.sha256().as_str()[..2], 16)
            .expect("a digest starts with two hex digits");
        &self.put_locks[usize::from(first_byte) % self.put_locks.len()]
    }

    /// A failed request, with what the operator must fix when that is clear.
    fn error(&self, operation: &'static str, target: &Path, e: object_store::Error) -> StoreError {
        let source = match Cause::of(&e) {
            Some(cause) => std::io::Error::other(format!(
                "{}: {e}",
                cause.advice(&self.location, &self.credentials)
            )),
            None => std::io::Error::other(e),
        };
        StoreError::Io {
            operation,
            target: format!("{}/{target}", self.location.uri()),
            source,
        }
    }

    /// The size of the object at `path`, or `None` when there is none.
    async fn head(&self, path: &Path) -> Result<Option<u64>, StoreError> {
        match self.store.head(path).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error("head", path, e)),
        }
    }

    /// Uploads a body that fits in one part under its final key, unless the key is there.
    async fn put_small(&self, bytes: Bytes, sha256: Sha256Hex) -> Result<Put, StoreError> {
        let size = bytes.len() as u64;
        let key = BlobKey::for_hash(&sha256);
        let path = Path::from(key.as_str());
        let _serialized = self.put_lock(&key).lock().await;
        let status = if self.head(&path).await?.is_some() {
            PutStatus::AlreadyPresent
        } else {
            self.store
                .put(&path, bytes.into())
                .await
                .map_err(|e| self.error("put", &path, e))?;
            PutStatus::Written
        };
        Ok(stored(sha256, size, key, status))
    }
}

fn stored(sha256: Sha256Hex, size: u64, key: BlobKey, status: PutStatus) -> Put {
    Put {
        blob: StoredBlob { sha256, size, key },
        status,
    }
}

#[async_trait]
impl Datastore for S3Datastore {
    fn uri(&self) -> String {
        self.location.uri()
    }

    async fn put(
        &self,
        data: &mut (dyn AsyncRead + Send + Unpin),
        options: &PutOptions,
    ) -> Result<Put, StoreError> {
        let mut reader = HashingReader::new(data);
        let expected_size = options.expected.size.map(|size| size as usize);
        // A small body (most media) is read without waiting for the memory budget; a body
        // known to be larger waits for it first and is read into one buffer of its size
        // (capped at one part, plus one byte that a longer, damaged body fills: its check
        // fails below), never grown and copied.
        let (first, budget) = match expected_size {
            Some(size) if size < SMALL_BODY => {
                let len = size + 1;
                (read_chunk(&mut reader, Vec::new(), len).await?, None)
            }
            Some(size) => {
                let budget = self.part_buffer().await;
                let first_part = size.saturating_add(1).min(PART_SIZE);
                (
                    read_chunk(&mut reader, Vec::new(), first_part).await?,
                    Some(budget),
                )
            }
            None => {
                let first = read_chunk(&mut reader, Vec::new(), SMALL_BODY).await?;
                if first.len() == SMALL_BODY {
                    let budget = self.part_buffer().await;
                    let first = read_chunk(&mut reader, first.into(), PART_SIZE).await?;
                    (first, Some(budget))
                } else {
                    (first, None)
                }
            }
        };
        let budget = match budget {
            Some(budget) if first.len() == PART_SIZE => {
                return self.put_large((first, budget), reader, options).await;
            }
            budget => budget,
        };
        let (sha256, size) = reader.finish();
        options.check(&sha256, size)?;
        let put = self.put_small(first, sha256).await;
        drop(budget);
        put
    }

    async fn open(
        &self,
        key: &BlobKey,
        range: Option<ByteRange>,
    ) -> Result<BlobPayload, StoreError> {
        let path = Path::from(key.as_str());
        let not_found = || StoreError::NotFound { key: key.clone() };
        let mut get = GetOptions::default();
        if let Some(range) = range {
            let size = self.head(&path).await?.ok_or_else(not_found)?;
            if range.start > size || range.start > range.end {
                return Err(StoreError::InvalidRange {
                    key: key.clone(),
                    start: range.start,
                    end: range.end,
                    size,
                });
            }
            let end = range.end.min(size);
            if range.start == end {
                return Ok(BlobPayload::Stream(Box::pin(tokio::io::empty())));
            }
            get.range = Some(GetRange::Bounded(range.start..end));
        }
        let result = match self.store.get_opts(&path, get).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Err(not_found()),
            Err(e) => return Err(self.error("read", &path, e)),
        };
        let bytes = result.into_stream().map_err(std::io::Error::other);
        Ok(BlobPayload::Stream(Box::pin(
            tokio_util::io::StreamReader::new(bytes),
        )))
    }

    async fn size(&self, key: &BlobKey) -> Result<Option<u64>, StoreError> {
        self.head(&Path::from(key.as_str())).await
    }

    async fn delete(&self, key: &BlobKey) -> Result<DeleteStatus, StoreError> {
        let path = Path::from(key.as_str());
        // S3 deletes succeed whether the object existed or not: look first, to say which.
        if self.head(&path).await?.is_none() {
            return Ok(DeleteStatus::NotFound);
        }
        self.store
            .delete(&path)
            .await
            .map_err(|e| self.error("delete", &path, e))?;
        Ok(DeleteStatus::Deleted)
    }

    fn list(&self) -> BoxStream<'_, Result<BlobKey, StoreError>> {
        self.store
            .list(None)
            .filter_map(|item| {
                let item = match item {
                    Ok(meta) => BlobKey::parse(meta.location.as_ref()).map(Ok),
                    Err(e) => Some(Err(self.error("list", &Path::default(), e))),
                };
                std::future::ready(item)
            })
            .boxed()
    }

    async fn read_marker(&self) -> Result<Option<String>, StoreError> {
        let path = Path::from(MARKER_FILE);
        let bytes = match self.store.get(&path).await {
            Ok(result) => result.bytes().await,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => Err(e),
        }
        .map_err(|e| self.error("read the identity marker", &path, e))?;
        crate::fs::parse_marker(&bytes, &format!("{}/{MARKER_FILE}", self.uri())).map(Some)
    }

    /// Writes the marker create-only where the server honours that, and reads back the
    /// marker the store holds afterwards: where a server ignores create-only writes, racing
    /// claims end with the last one written, which later reads all agree on.
    async fn claim_marker(&self, proposed: &str) -> Result<String, StoreError> {
        if let Some(marker) = self.read_marker().await? {
            return Ok(marker);
        }
        let path = Path::from(MARKER_FILE);
        let body = Bytes::from(format!("{proposed}\n"));
        match self
            .store
            .put_opts(&path, body.into(), PutMode::Create.into())
            .await
        {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(self.error("write the identity marker", &path, e)),
        }
        self.read_marker().await?.ok_or_else(|| StoreError::Io {
            operation: "read back the identity marker",
            target: format!("{}/{MARKER_FILE}", self.uri()),
            source: std::io::ErrorKind::NotFound.into(),
        })
    }

    async fn replace_marker(&self, marker: &str) -> Result<(), StoreError> {
        let path = Path::from(MARKER_FILE);
        self.store
            .put(&path, Bytes::from(format!("{marker}\n")).into())
            .await
            .map_err(|e| self.error("write the identity marker", &path, e))?;
        Ok(())
    }
}

impl S3Datastore {
    /// Opens the object another writer named `name` below this store's prefix (a
    /// matrix-media-repo names its objects with random IDs, not digests), for reading
    /// only; `None` when there is no such object. The name must be a plain relative key
    /// ([`named_object_path`]), so the read never leaves the prefix.
    pub async fn open_named(&self, name: &str) -> Result<Option<BlobPayload>, StoreError> {
        let path = named_object_path(name)?;
        let result = match self.store.get(&path).await {
            Ok(result) => result,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error("read", &path, e)),
        };
        let bytes = result.into_stream().map_err(std::io::Error::other);
        Ok(Some(BlobPayload::Stream(Box::pin(
            tokio_util::io::StreamReader::new(bytes),
        ))))
    }
}

/// The object path of a key another writer named, checked to stay below the store's
/// prefix: segments separated by single `/`, none empty, `.` or `..`, no leading `/`, no
/// backslash or control character, and nothing of the store's own bookkeeping (`.tmp/…`,
/// the identity marker). Anything else is [`StoreError::Config`] naming the key.
pub fn named_object_path(name: &str) -> Result<Path, StoreError> {
    let refuse = |why: &str| {
        Err(StoreError::Config(format!(
            "object key {name:?} is refused: {why} (only a plain relative key below the \
             datastore's prefix is read)"
        )))
    };
    if name.is_empty() {
        return refuse("it is empty");
    }
    if name.starts_with('/') {
        return refuse("it starts with /");
    }
    if name.chars().any(|c| c == '\\' || c.is_control()) {
        return refuse("it holds a backslash or a control character");
    }
    if name
        .split('/')
        .any(|segment| matches!(segment, "" | "." | ".."))
    {
        return refuse("it has an empty, . or .. segment");
    }
    if name == MARKER_FILE || name.split('/').next() == Some(TEMP_PREFIX) {
        return refuse("it is the datastore's own bookkeeping");
    }
    Path::parse(name).or_else(|e| refuse(&e.to_string()))
}

impl S3Datastore {
    /// Deletes every object below this store's prefix, blobs or not (the marker, abandoned
    /// temporary uploads): for throwaway test stores. Returns how many it deleted.
    pub async fn delete_everything(&self) -> Result<u64, StoreError> {
        let store = self;
        let paths = store
            .store
            .list(None)
            .map_ok(|meta| meta.location)
            .map_err(|e| store.error("list", &Path::default(), e));
        let mut deleted = 0;
        let mut paths = std::pin::pin!(paths);
        while let Some(path) = paths.next().await {
            let path = path?;
            store
                .store
                .delete(&path)
                .await
                .map_err(|e| store.error("delete", &path, e))?;
            deleted += 1;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use media_core::datastore::DatastoreExt;
    use tokio::io::ReadBuf;

    use super::*;
    use crate::conformance::{FailingReader, S3TestStore, pseudo_random};

    /// How many multipart uploads are in progress below `store`'s prefix, asked with a
    /// plain unsigned `GET /bucket?uploads` (`object_store` cannot list them); `None` when
    /// the server refuses unsigned requests (moto, the test script's server, accepts them).
    fn uploads_in_progress(store: &S3Datastore) -> Option<usize> {
        use std::io::{Read, Write};
        let endpoint = store.location.endpoint.as_deref().expect("a test server");
        let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
        let mut connection = std::net::TcpStream::connect(host).unwrap();
        write!(
            connection,
            "GET /{}?uploads&prefix={}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n",
            store.location.bucket, store.location.prefix
        )
        .unwrap();
        let mut response = String::new();
        connection.read_to_string(&mut response).unwrap();
        if !response.starts_with("HTTP/1.1 200") {
            eprintln!("the server does not list uploads for unsigned requests: {response}");
            return None;
        }
        assert!(
            response.contains("ListMultipartUploadsResult"),
            "{response}"
        );
        Some(response.matches("<Upload>").count())
    }

    /// Yields `remaining` bytes, then tells `stalled` and never yields again.
    struct StallingReader {
        remaining: Vec<u8>,
        stalled: Option<tokio::sync::oneshot::Sender<()>>,
    }

    impl AsyncRead for StallingReader {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            if self.remaining.is_empty() {
                if let Some(stalled) = self.stalled.take() {
                    stalled.send(()).ok();
                }
                return Poll::Pending;
            }
            let n = self.remaining.len().min(buf.remaining()).min(64 << 10);
            buf.put_slice(&self.remaining[..n]);
            self.remaining.drain(..n);
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_failed_or_cancelled_multipart_put_leaves_no_upload_in_progress() {
        let test = S3TestStore::new().await;
        let store = &*test.store;
        let mut failing = FailingReader {
            remaining: pseudo_random(PART_SIZE * 2 + 1, 31),
        };
        let err = store
            .put(&mut failing, &PutOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Source { .. }), "{err}");
        let data = pseudo_random(PART_SIZE * 2, 32);
        let wrong = PutOptions::expecting(Some(media_core::hashing::sha256_of(b"other")), None);
        let err = store.put(&mut &data[..], &wrong).await.unwrap_err();
        assert!(matches!(err, StoreError::Mismatch { .. }), "{err}");
        if let Some(uploads) = uploads_in_progress(store) {
            assert_eq!(
                uploads, 0,
                "failed puts abort their uploads before returning"
            );
        }

        // A put whose future is dropped mid-upload (a timeout, a cancelled task).
        let (stalled, stall) = tokio::sync::oneshot::channel();
        let mut reader = StallingReader {
            remaining: pseudo_random(PART_SIZE * 2 + 5, 33),
            stalled: Some(stalled),
        };
        let options = PutOptions::default();
        tokio::select! {
            put = store.put(&mut reader, &options) => panic!("{put:?}"),
            _ = stall => {}
        }
        if uploads_in_progress(store).is_some() {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while uploads_in_progress(store) != Some(0) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the cancelled upload is left"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        assert_eq!(
            store.delete_everything().await.unwrap(),
            0,
            "no object either"
        );
        assert_eq!(store.part_buffers.available_permits(), PART_BUFFERS);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn more_large_puts_than_part_buffers_all_finish_and_return_the_budget() {
        let test = S3TestStore::new().await;
        let store = &*test.store;
        let bodies: Vec<Vec<u8>> = (0..PART_BUFFERS as u64 + 2)
            .map(|seed| pseudo_random(PART_SIZE + 1, 40 + seed))
            .collect();
        let puts = bodies.iter().map(|body| async move {
            let mut reader = &body[..];
            store.put(&mut reader, &PutOptions::default()).await
        });
        for (put, body) in futures::future::join_all(puts)
            .await
            .into_iter()
            .zip(&bodies)
        {
            assert_eq!(put.unwrap().blob.size, body.len() as u64);
        }
        let mut failing = FailingReader {
            remaining: pseudo_random(PART_SIZE * 2, 50),
        };
        store
            .put(&mut failing, &PutOptions::default())
            .await
            .unwrap_err();
        assert_eq!(
            store.part_buffers.available_permits(),
            PART_BUFFERS,
            "every buffer is given back"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_body_over_5_gib_without_its_digest_is_refused_before_uploading() {
        let test = S3TestStore::new().await;
        let store = &*test.store;
        let data = pseudo_random(PART_SIZE + 1, 34);
        let huge = PutOptions::expecting(None, Some(MAX_COPY_SIZE + 1));
        let err = store.put(&mut &data[..], &huge).await.unwrap_err();
        assert!(matches!(err, StoreError::Source { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("5 GiB only when its SHA-256 is given"),
            "{err}"
        );
        if let Some(uploads) = uploads_in_progress(store) {
            assert_eq!(uploads, 0);
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn cleanup_removes_stale_temporary_objects_and_keeps_fresh_ones() {
        let test = S3TestStore::new().await;
        let store = &*test.store;
        let temporary = |name: &str| Path::from(format!("{TEMP_PREFIX}/{name}"));
        let blob = store
            .put_bytes(b"a blob is never swept")
            .await
            .unwrap()
            .blob;
        store.claim_marker("marker").await.unwrap();
        store
            .store
            .put(
                &temporary("crashed"),
                Bytes::from_static(b"left by a crash").into(),
            )
            .await
            .unwrap();
        // S3 dates objects to the second: the crashed one is at least 2.5 s older.
        tokio::time::sleep(Duration::from_millis(2500)).await;
        store
            .store
            .put(
                &temporary("live"),
                Bytes::from_static(b"a running writer's").into(),
            )
            .await
            .unwrap();
        let kept = store.cleanup(STALE_TEMPORARY_AGE).await.unwrap();
        assert_eq!(kept, CleanupReport::default(), "nothing is a day old");
        let swept = store.cleanup(Duration::from_secs(2)).await.unwrap();
        assert_eq!(
            swept,
            CleanupReport {
                removed_files: 1,
                removed_bytes: b"left by a crash".len() as u64
            }
        );
        assert!(store.head(&temporary("crashed")).await.unwrap().is_none());
        assert!(store.head(&temporary("live")).await.unwrap().is_some());
        assert!(store.exists(&blob.key).await.unwrap());
        assert_eq!(
            store.read_marker().await.unwrap().as_deref(),
            Some("marker")
        );

        // Opening for writing sweeps with the day-long age: the live object stays.
        let reopened = S3Datastore::open(store.location.clone()).await.unwrap();
        assert!(reopened.head(&temporary("live")).await.unwrap().is_some());
    }

    #[test]
    fn s3_uris_parse_into_bucket_prefix_endpoint_and_region() {
        let location =
            S3Location::parse("s3://media/a/b/?endpoint=http://127.0.0.1:3900&region=garage")
                .unwrap();
        assert_eq!(
            location,
            S3Location {
                bucket: "media".into(),
                prefix: "a/b".into(),
                endpoint: Some("http://127.0.0.1:3900".into()),
                region: Some("garage".into()),
                profile: None,
            }
        );
        assert_eq!(
            location.uri(),
            "s3://media/a/b?endpoint=http://127.0.0.1:3900&region=garage"
        );
        let bare = S3Location::parse("s3://media").unwrap();
        assert_eq!((bare.prefix.as_str(), &bare.endpoint), ("", &None));
        assert_eq!(bare.uri(), "s3://media");
    }

    #[test]
    fn a_profile_in_the_uri_round_trips() {
        let location = S3Location::parse("s3://media?region=garage&profile=backup").unwrap();
        assert_eq!(location.profile.as_deref(), Some("backup"));
        assert_eq!(location.uri(), "s3://media?region=garage&profile=backup");
    }

    /// The test server's location below a fresh prefix, as a configuration reader would
    /// build it: no URI, no secret in it.
    fn test_location(bucket: String) -> S3Location {
        S3Location {
            bucket,
            prefix: format!("test-{:016x}", rand::random::<u64>()),
            endpoint: Some(crate::conformance::s3_test_endpoint()),
            region: Some("us-east-1".into()),
            profile: None,
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn keys_given_in_code_open_a_store_and_never_show_their_secret() {
        let keys = S3Keys::new("AKIDGIVEN", "given-secret-value").with_session_token("given-token");
        let credentials = S3Credentials::Given(keys);
        let location = test_location(crate::conformance::s3_test_bucket());
        let store = S3Datastore::open_with(location, &credentials, S3Access::Write)
            .await
            .unwrap();
        let put = store.put_bytes(b"signed with given keys").await.unwrap();
        assert_eq!(
            store.get_bytes(&put.blob.key).await.unwrap(),
            b"signed with given keys"
        );
        store.delete_everything().await.unwrap();
        let missing = test_location(format!("no-such-bucket-{:08x}", rand::random::<u32>()));
        let err = S3Datastore::open_with(missing, &credentials, S3Access::ReadOnly)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Config(_)), "{err}");
        for shown in [
            format!("{store:?}"),
            store.uri(),
            format!("{credentials:?}"),
            err.to_string(),
            format!("{err:?}"),
        ] {
            assert!(!shown.contains("given-secret-value"), "{shown}");
            assert!(!shown.contains("given-token"), "{shown}");
        }
    }

    /// Opening `uri` fails with a configuration error; its message.
    async fn open_error(uri: &str) -> String {
        let err = S3Datastore::open(S3Location::parse(uri).unwrap())
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Config(_)), "{uri}: {err}");
        let message = err.to_string();
        assert!(message.contains(uri), "{message}");
        message
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn start_up_errors_say_what_the_operator_must_fix() {
        let endpoint = crate::conformance::s3_test_endpoint();
        let bucket = format!("no-such-bucket-{:08x}", rand::random::<u32>());
        let message = open_error(&format!("s3://{bucket}/x?endpoint={endpoint}")).await;
        assert!(
            message.contains(&format!(
                "the bucket {bucket:?} does not exist at {endpoint}: create it"
            )),
            "{message}"
        );

        // A port nobody listens on: bound, then released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let message = open_error(&format!("s3://media?endpoint=http://127.0.0.1:{port}")).await;
        assert!(
            message.contains(&format!(
                "nothing accepts connections at http://127.0.0.1:{port}"
            )),
            "{message}"
        );

        let message = open_error("s3://media?endpoint=http://no-such-host.invalid:9000").await;
        assert!(
            message.contains("the host name of http://no-such-host.invalid:9000 does not resolve"),
            "{message}"
        );

        // A server that accepts connections and never answers.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = silent.local_addr().unwrap();
        let message = open_error(&format!("s3://media?endpoint=http://{address}")).await;
        assert!(
            message.contains(&format!("http://{address} did not answer in time")),
            "{message}"
        );
        drop(silent);
    }

    #[test]
    fn named_keys_that_could_leave_the_prefix_are_refused() {
        for refused in [
            "",
            "/abs/key",
            "../up",
            "a/../../b",
            "a/./b",
            "a//b",
            "a/",
            "..",
            "a\\b",
            "a\nb",
            ".tmp/upload",
            MARKER_FILE,
        ] {
            let error = named_object_path(refused).unwrap_err();
            assert!(
                matches!(&error, StoreError::Config(m) if m.contains("is refused")),
                "{refused:?}: {error}"
            );
        }
        for accepted in ["abcdef", "pf/abcdef", "aa/bb/rest", "ab/cd/.dotted"] {
            assert_eq!(named_object_path(accepted).unwrap().as_ref(), accepted);
        }
    }

    #[tokio::test]
    async fn a_named_object_is_read_and_a_missing_one_is_none() {
        let test = S3TestStore::new().await;
        test.store
            .store
            .put(
                &Path::from("pf/random-name"),
                Bytes::from("named bytes").into(),
            )
            .await
            .unwrap();
        let Some(BlobPayload::Stream(mut stream)) =
            test.store.open_named("pf/random-name").await.unwrap()
        else {
            panic!("an S3 object is a stream")
        };
        let mut bytes = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut bytes)
            .await
            .unwrap();
        assert_eq!(bytes, "named bytes");
        assert!(test.store.open_named("pf/other").await.unwrap().is_none());
        assert!(test.store.open_named("../pf/random-name").await.is_err());
    }

    #[test]
    fn malformed_s3_uris_are_config_errors() {
        for bad in [
            "s3://",
            "s3:///prefix",
            "s3://b/a//c",
            "s3://b/../c",
            "s3://b?color=red",
            "s3://b?endpoint=",
            "s3://b?endpoint=127.0.0.1:3900",
            "s3://key:secret@b",
            "s3://b:9000/x",
        ] {
            let err = S3Location::parse(bad).unwrap_err();
            assert!(matches!(err, StoreError::Config(_)), "{bad}: {err}");
            assert!(err.to_string().contains("s3://bucket"), "{bad}: {err}");
        }
    }
}
