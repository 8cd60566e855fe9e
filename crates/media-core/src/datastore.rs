//! The [`Datastore`] trait: where the bytes of media live, addressed by their content.
//!
//! A datastore holds blobs under keys derived from their SHA-256 ([`BlobKey`]), so writing
//! the same bytes twice is idempotent. Implementations stream in and out and never assume a
//! local path, so an object store can implement the trait as well as a folder can.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::ids::Sha256Hex;

/// The key of a blob inside a datastore: `ab/cd/abcdef…`, the first two byte pairs of the
/// lowercase hex SHA-256 as two folder levels, then the full digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobKey(String);

impl BlobKey {
    /// The key a blob with this digest is stored under.
    pub fn for_hash(sha256: &Sha256Hex) -> Self {
        let hex = sha256.as_str();
        Self(format!("{}/{}/{}", &hex[0..2], &hex[2..4], hex))
    }

    /// Parses a key read back from a store or a database; only the exact layout
    /// produced by [`BlobKey::for_hash`] is accepted.
    pub fn parse(key: &str) -> Option<Self> {
        Self::is_layout(key).then(|| Self(key.to_owned()))
    }

    /// [`BlobKey::parse`] of a string it keeps (a listing or a row reads millions), or
    /// the string back when it is not a key.
    pub fn parse_owned(key: String) -> Result<Self, String> {
        if Self::is_layout(&key) {
            Ok(Self(key))
        } else {
            Err(key)
        }
    }

    /// Whether `key` is exactly what [`BlobKey::for_hash`] makes of some digest.
    fn is_layout(key: &str) -> bool {
        let mut parts = key.split('/');
        let (Some(a), Some(b), Some(hex), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return false;
        };
        hex.len() == Sha256Hex::LEN
            && hex.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
            && a == &hex[0..2]
            && b == &hex[2..4]
    }

    /// The digest this key was derived from.
    pub fn sha256(&self) -> Sha256Hex {
        Sha256Hex::try_from(&self.0[6..]).expect("a BlobKey always ends in a valid digest")
    }

    /// Whether this is the key of a blob with digest `sha256`.
    pub fn is_for(&self, sha256: &Sha256Hex) -> bool {
        self.0[6..] == *sha256.as_str()
    }

    /// The key as a `/`-separated string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A blob as a datastore holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBlob {
    /// SHA-256 of the bytes.
    pub sha256: Sha256Hex,
    /// Length of the bytes.
    pub size: u64,
    /// Where the bytes are, derived from `sha256`.
    pub key: BlobKey,
}

/// What a [`Datastore::put`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutStatus {
    /// The bytes were new and have been written.
    Written,
    /// A blob with the same digest was already stored; nothing was written.
    AlreadyPresent,
}

/// The result of a successful [`Datastore::put`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Put {
    /// The blob now stored.
    pub blob: StoredBlob,
    /// Whether this put wrote it.
    pub status: PutStatus,
}

/// What the caller already knows about the bytes it puts. When the bytes turn out
/// different, the put fails with [`StoreError::Mismatch`] and stores nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// The digest the bytes must have.
    pub sha256: Option<Sha256Hex>,
    /// The length the bytes must have.
    pub size: Option<u64>,
}

/// When a put blob must survive a crash, from the weakest guarantee to the strongest
/// (the order [`Ord`] follows).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Durability {
    /// Never synced: the write is still atomic (a key holds the complete bytes or
    /// nothing), but a crash or power loss may lose the blob. For scratch stores and
    /// benchmarks. The blob is readable as soon as `put` returns.
    Unsynced,
    /// After the next [`Datastore::sync`]: the caller syncs before it records anything
    /// that references the blob, so one sync can cover a whole batch of puts. Until then
    /// the blob may not be readable yet, and it is lost if the datastore is dropped or
    /// the sync fails.
    AfterSync,
    /// Before `put` returns (the default).
    #[default]
    OnReturn,
}

impl Durability {
    /// This durability, lowered to `limit` when it asks for more: what a store that
    /// gives at most `limit` (see e.g. `FileDatastore::with_max_durability` in
    /// `media-store`) does with a put that asks for `self`.
    pub fn at_most(self, limit: Durability) -> Durability {
        self.min(limit)
    }
}

/// How to put a blob.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Checks to run on the bytes before they become visible.
    pub expected: Expected,
    /// When the blob must be durable.
    pub durability: Durability,
}

impl PutOptions {
    /// Options that check the bytes against a known digest and length.
    pub fn expecting(sha256: Option<Sha256Hex>, size: Option<u64>) -> Self {
        Self {
            expected: Expected { sha256, size },
            durability: Durability::OnReturn,
        }
    }

    /// These options with another durability.
    pub fn with_durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Fails with [`StoreError::Mismatch`] when `sha256`/`size` differ from the expectation.
    pub fn check(&self, sha256: &Sha256Hex, size: u64) -> Result<(), StoreError> {
        if let Some(want) = self.expected.size
            && want != size
        {
            return Err(StoreError::Mismatch {
                what: "size",
                expected: want.to_string(),
                actual: size.to_string(),
            });
        }
        if let Some(want) = &self.expected.sha256
            && want != sha256
        {
            return Err(StoreError::Mismatch {
                what: "sha256",
                expected: want.to_string(),
                actual: sha256.to_string(),
            });
        }
        Ok(())
    }
}

/// What a [`Datastore::delete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteStatus {
    /// The blob existed and is gone now.
    Deleted,
    /// There was no such blob (deleting is idempotent).
    NotFound,
}

/// A half-open byte range `start..end` of a blob; `end` past the blob's length is clamped.
pub type ByteRange = Range<u64>;

/// A stream of a blob's bytes.
pub type BlobReader = Pin<Box<dyn AsyncRead + Send>>;

/// Errors of a datastore.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No blob under that key.
    #[error("blob {key} is not in the datastore")]
    NotFound {
        /// The missing key.
        key: BlobKey,
    },
    /// The bytes differ from what the caller said they are; nothing was stored.
    #[error("{what} mismatch: expected {expected}, the bytes have {actual}; nothing was stored")]
    Mismatch {
        /// `sha256` or `size`.
        what: &'static str,
        /// The expected value.
        expected: String,
        /// The value of the bytes read.
        actual: String,
    },
    /// A range that starts past the end of the blob.
    #[error("range {start}..{end} is outside blob {key} of {size} bytes")]
    InvalidRange {
        /// The blob.
        key: BlobKey,
        /// Requested start.
        start: u64,
        /// Requested end.
        end: u64,
        /// The blob's length.
        size: u64,
    },
    /// Reading the bytes to store failed; nothing was stored.
    #[error(
        "reading the bytes to store failed after {bytes_read} bytes; nothing was stored: {source}"
    )]
    Source {
        /// Bytes read before the failure.
        bytes_read: u64,
        /// The reader's error.
        source: std::io::Error,
    },
    /// The datastore itself failed.
    #[error("{operation} {target} failed: {source}")]
    Io {
        /// What was being done (`create folder`, `write`, `rename`, …).
        operation: &'static str,
        /// The file, folder or object concerned.
        target: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A datastore URI or setting that cannot be used.
    #[error("{0}")]
    Config(String),
}

impl crate::run::Classify for StoreError {
    /// A URI or setting that cannot be used is for the operator to fix; a missing blob,
    /// mismatched bytes, a bad range or a source that could not be read concern one item
    /// (the store is sound); a failing store is fatal.
    fn class(&self) -> crate::run::ErrorClass {
        use crate::run::ErrorClass;
        match self {
            Self::Config(_) => ErrorClass::Usage,
            Self::NotFound { .. }
            | Self::Mismatch { .. }
            | Self::InvalidRange { .. }
            | Self::Source { .. } => ErrorClass::Item,
            Self::Io { .. } => ErrorClass::Fatal,
        }
    }
}

/// A blob's bytes (or the part of them a range asked for) as [`Datastore::open`] hands
/// them out: an open local file, which a reader may read with blocking I/O and fewer
/// copies, or a stream. Either way exactly the requested bytes are readable.
pub enum BlobPayload {
    /// A regular file of a store that keeps files, opened without following any link
    /// below the store's folder, positioned at the first requested byte.
    File {
        /// The open file.
        file: std::fs::File,
        /// Where the file is, for messages only (never open it again by this path: the
        /// open `file` is the checked one).
        path: PathBuf,
        /// How many bytes to read from the file's position: the requested range, or the
        /// whole file's length when it was opened.
        len: u64,
    },
    /// A stream of exactly the requested bytes.
    Stream(BlobReader),
}

/// Bytes an asynchronous read of a local file moves per blocking read (tokio's default is
/// 2 MiB): each file being read holds a buffer of this size besides the reader's own, so
/// with many files read at once (a transfer's workers) a smaller one keeps memory down,
/// and 512 KiB reads still run at the disk's speed.
pub const FILE_READ_BUFFER: usize = 512 << 10;

/// Opens a local file for [`Datastore::put_local`], on a blocking thread: the file, and
/// the most bytes to read from it.
pub type OpenLocalFile = Box<dyn FnOnce() -> std::io::Result<(std::fs::File, u64)> + Send>;

/// One local file for [`Datastore::put_local_many`]: how to open it, and what its
/// contents must be.
pub struct LocalPut {
    /// Opens it (see [`OpenLocalFile`]).
    pub open: OpenLocalFile,
    /// What its contents must be, and how durable the put must be.
    pub options: PutOptions,
}

impl fmt::Debug for LocalPut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalPut")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// What [`Datastore::put_local`] answers: the outer error is opening the file.
pub type LocalPutResult = std::io::Result<Result<Put, StoreError>>;

/// Local files up to this length are read whole in the blocking call that opens them.
pub const READ_WHOLE: u64 = 1 << 20;

/// A local file opened for reading: read whole when it is small, else to stream.
#[derive(Debug)]
pub enum LocalFile {
    /// At most [`READ_WHOLE`] + 1 bytes, read in the call that opened the file.
    Read(Vec<u8>),
    /// A larger file, and how many bytes to read from it at most.
    Stream(std::fs::File, u64),
}

impl LocalFile {
    /// Blocking: reads `file` whole (at most `limit` bytes) when `limit` is at most
    /// [`READ_WHOLE`] + 1, else keeps it to stream.
    pub fn read_if_small(file: std::fs::File, limit: u64) -> std::io::Result<Self> {
        use std::io::Read;
        if limit > READ_WHOLE + 1 {
            return Ok(Self::Stream(file, limit));
        }
        let mut bytes = Vec::with_capacity(limit as usize);
        file.take(limit).read_to_end(&mut bytes)?;
        Ok(Self::Read(bytes))
    }
}

/// `file` for asynchronous reads through a [`FILE_READ_BUFFER`]-sized buffer.
fn async_file(file: std::fs::File) -> tokio::fs::File {
    let mut file = tokio::fs::File::from_std(file);
    file.set_max_buf_size(FILE_READ_BUFFER);
    file
}

impl BlobPayload {
    /// The bytes as a stream, whichever the payload is (a file is read asynchronously,
    /// at most `len` bytes of it).
    pub fn into_reader(self) -> BlobReader {
        match self {
            Self::File { file, len, .. } => Box::pin(async_file(file).take(len)),
            Self::Stream(reader) => reader,
        }
    }
}

impl fmt::Debug for BlobPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File { path, len, .. } => f
                .debug_struct("BlobPayload::File")
                .field("path", path)
                .field("len", len)
                .finish_non_exhaustive(),
            Self::Stream(_) => f.write_str("BlobPayload::Stream"),
        }
    }
}

/// Deletions [`Datastore::delete_many`] has in flight at once by default: an object
/// store's deletions are requests, whose waits overlap.
const DELETIONS_IN_FLIGHT: usize = 16;

/// Lookups [`Datastore::sizes`] has in flight at once by default (requests, as above).
const SIZES_IN_FLIGHT: usize = 16;

/// A content-addressed blob store. Implementations must make writes atomic (a key either
/// holds the complete bytes or nothing), make `put` of existing bytes a no-op, and make
/// `delete` idempotent. Conveniences live in [`DatastoreExt`].
#[async_trait]
pub trait Datastore: Send + Sync + fmt::Debug {
    /// A URI that identifies this datastore (used in reports and to register it in a
    /// repository), e.g. `file:///srv/media`.
    fn uri(&self) -> String;

    /// Streams `data` into the store, hashing it on the way, and returns where it went.
    /// On any error (reading `data`, a failed [`PutOptions`] check, a full disk) nothing
    /// becomes visible under a key.
    async fn put(
        &self,
        data: &mut (dyn AsyncRead + Send + Unpin),
        options: &PutOptions,
    ) -> Result<Put, StoreError>;

    /// Puts the contents of an opened local file, reading at most `limit` bytes (the
    /// source is local; the store need not be). The default streams it through
    /// [`Datastore::put`]; a store that can do better overrides it. Reading the file
    /// fails with [`StoreError::Source`].
    async fn put_file(
        &self,
        file: std::fs::File,
        limit: u64,
        options: &PutOptions,
    ) -> Result<Put, StoreError> {
        let mut reader = async_file(file).take(limit);
        self.put(&mut reader, options).await
    }

    /// Opens a local file with `open`, on a blocking thread, and puts its contents (at
    /// most the limit `open` returns) as [`Datastore::put_file`] does. The outer error is
    /// `open`'s; reading the file fails with [`StoreError::Source`]. The default reads a
    /// small file ([`LocalFile::read_if_small`]) in the call that opens it and puts its
    /// bytes; a store that writes on blocking threads overrides it to open, read and
    /// write in one call.
    async fn put_local(&self, open: OpenLocalFile, options: &PutOptions) -> LocalPutResult {
        let opened = tokio::task::spawn_blocking(move || {
            let (file, limit) = open()?;
            Ok::<_, std::io::Error>(LocalFile::read_if_small(file, limit))
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(match opened {
            Ok(LocalFile::Read(bytes)) => self.put(&mut &bytes[..], options).await,
            Ok(LocalFile::Stream(file, limit)) => self.put_file(file, limit, options).await,
            Err(source) => Err(StoreError::Source {
                bytes_read: 0,
                source,
            }),
        })
    }

    /// Puts many local files, each as [`Datastore::put_local`] does, answering in the
    /// order given; one failure does not stop the others. The default puts them one
    /// after another; a store that writes on blocking threads overrides it to put them
    /// all in one blocking call (for small files, a blocking call each costs more than
    /// writing them).
    async fn put_local_many(&self, files: Vec<LocalPut>) -> Vec<LocalPutResult> {
        let mut answers = Vec::with_capacity(files.len());
        for file in files {
            answers.push(self.put_local(file.open, &file.options).await);
        }
        answers
    }

    /// Opens a blob, or the part of it in `range`: as a local file when the store keeps
    /// files, else as a stream (see [`BlobPayload`]). A missing blob is
    /// [`StoreError::NotFound`]; a range that starts past the end (or ends before it
    /// starts) is [`StoreError::InvalidRange`]; an end past the blob's length is clamped.
    async fn open(
        &self,
        key: &BlobKey,
        range: Option<ByteRange>,
    ) -> Result<BlobPayload, StoreError>;

    /// Streams a blob, or the part of it in `range`: [`Datastore::open`] as a stream,
    /// whatever the payload is.
    async fn get(&self, key: &BlobKey, range: Option<ByteRange>) -> Result<BlobReader, StoreError> {
        Ok(self.open(key, range).await?.into_reader())
    }

    /// The length of a blob, or `None` when there is no such blob.
    async fn size(&self, key: &BlobKey) -> Result<Option<u64>, StoreError>;

    /// The lengths of many blobs, as [`Datastore::size`] gives each, in the order of
    /// `keys`. The default asks a few at once; a store that can answer many for less
    /// than one call each overrides it.
    async fn sizes(&self, keys: &[BlobKey]) -> Result<Vec<Option<u64>>, StoreError> {
        let lookups: Vec<_> = keys.iter().map(|key| self.size(key)).collect();
        futures::stream::iter(lookups)
            .buffered(SIZES_IN_FLIGHT)
            .try_collect()
            .await
    }

    /// Makes every blob put so far with [`Durability::AfterSync`] durable. Stores whose
    /// writes are always durable do nothing.
    async fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Deletes a blob; deleting a missing blob is not an error.
    async fn delete(&self, key: &BlobKey) -> Result<DeleteStatus, StoreError>;

    /// Deletes many blobs, each as [`Datastore::delete`] does; the outcomes come in the
    /// order of `keys`, and one failure does not stop the others. The default runs a
    /// few [`Datastore::delete`]s at once; a store that can delete many blobs for less
    /// than one call each overrides it.
    async fn delete_many(&self, keys: &[BlobKey]) -> Vec<Result<DeleteStatus, StoreError>> {
        let deletions: Vec<_> = keys.iter().map(|key| self.delete(key)).collect();
        futures::stream::iter(deletions)
            .buffered(DELETIONS_IN_FLIGHT)
            .collect()
            .await
    }

    /// Every blob key in the store, in ascending order (as S3 lists keys: a check merges
    /// the listing with the rows in digest order); never a temporary object.
    fn list(&self) -> BoxStream<'_, Result<BlobKey, StoreError>>;

    /// Whether the blobs vanish with this process (an in-memory store): a repository
    /// that outlives the process must not record blobs in it.
    fn is_ephemeral(&self) -> bool {
        false
    }

    /// The identity marker this store holds (see [`Datastore::claim_marker`]), or `None`
    /// when it holds none. The default store holds none.
    async fn read_marker(&self) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    /// Stores `proposed` as this store's identity marker unless it already holds one,
    /// and returns the marker it holds afterwards (so that concurrent claims agree on
    /// one). A repository records the marker to recognise the store wherever it is
    /// mounted. The default store cannot hold one.
    async fn claim_marker(&self, _proposed: &str) -> Result<String, StoreError> {
        Err(StoreError::Config(format!(
            "datastore {} cannot hold an identity marker",
            self.uri()
        )))
    }

    /// Replaces this store's identity marker (after its data was moved here and checked).
    async fn replace_marker(&self, _marker: &str) -> Result<(), StoreError> {
        Err(StoreError::Config(format!(
            "datastore {} cannot hold an identity marker",
            self.uri()
        )))
    }
}

/// Opens datastores by URI: how a repository reaches the other datastores it recorded
/// (where some of its blobs are after a transfer) besides the one a tool was given. The
/// trait lives here so that the repository (`media-db`) can use it without depending on
/// the backends (`media-store` implements it).
#[async_trait]
pub trait DatastoreOpener: Send + Sync + fmt::Debug {
    /// Opens the datastore `uri` names for reading only: nothing is created or written
    /// (a missing folder may be an empty stand-in, which holds no identity marker).
    async fn open_read_only(&self, uri: &str) -> Result<Arc<dyn Datastore>, StoreError>;
}

/// Conveniences over any [`Datastore`].
#[async_trait]
pub trait DatastoreExt: Datastore {
    /// Whether a blob exists.
    async fn exists(&self, key: &BlobKey) -> Result<bool, StoreError> {
        Ok(self.size(key).await?.is_some())
    }

    /// Puts an in-memory byte slice.
    async fn put_bytes(&self, bytes: &[u8]) -> Result<Put, StoreError> {
        let mut reader = bytes;
        self.put(&mut reader, &PutOptions::default()).await
    }

    /// Reads a whole blob into memory. Only for blobs known to be small.
    async fn get_bytes(&self, key: &BlobKey) -> Result<Vec<u8>, StoreError> {
        let mut reader = self.get(key, None).await?;
        let mut out = Vec::new();
        reader
            .read_to_end(&mut out)
            .await
            .map_err(|source| StoreError::Io {
                operation: "read",
                target: key.to_string(),
                source,
            })?;
        Ok(out)
    }
}

impl<T: Datastore + ?Sized> DatastoreExt for T {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashing::sha256_of;

    #[test]
    fn key_layout_is_two_levels_of_the_digest() {
        let hash = sha256_of(b"abc");
        let key = BlobKey::for_hash(&hash);
        assert_eq!(
            key.as_str(),
            "ba/78/ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(key.sha256(), hash);
        assert_eq!(BlobKey::parse(key.as_str()), Some(key.clone()));
        assert_eq!(BlobKey::parse_owned(key.to_string()), Ok(key));
    }

    #[test]
    fn parse_refuses_anything_but_the_exact_layout() {
        let hex = sha256_of(b"abc").to_string();
        for bad in [
            hex.clone(),
            format!("ba/78/{hex}/x"),
            format!("ba/79/{hex}"),
            format!("../78/{hex}"),
            format!("ba/78/{}", hex.to_uppercase()),
            format!(".tmp/ba/{hex}"),
            String::new(),
        ] {
            assert_eq!(BlobKey::parse(&bad), None, "{bad}");
            assert_eq!(BlobKey::parse_owned(bad.clone()), Err(bad.clone()));
        }
    }

    #[test]
    fn expectations_are_checked() {
        let hash = sha256_of(b"abc");
        let other = sha256_of(b"abd");
        assert!(PutOptions::default().check(&hash, 3).is_ok());
        assert!(
            PutOptions::expecting(Some(hash.clone()), Some(3))
                .check(&hash, 3)
                .is_ok()
        );
        assert!(matches!(
            PutOptions::expecting(Some(other), None).check(&hash, 3),
            Err(StoreError::Mismatch { what: "sha256", .. })
        ));
        assert!(matches!(
            PutOptions::expecting(None, Some(4)).check(&hash, 3),
            Err(StoreError::Mismatch { what: "size", .. })
        ));
    }

    #[test]
    fn a_limit_lowers_durability_and_never_raises_it() {
        use Durability::*;
        assert_eq!(OnReturn.at_most(OnReturn), OnReturn);
        assert_eq!(OnReturn.at_most(AfterSync), AfterSync);
        assert_eq!(OnReturn.at_most(Unsynced), Unsynced);
        assert_eq!(AfterSync.at_most(OnReturn), AfterSync);
        assert_eq!(AfterSync.at_most(Unsynced), Unsynced);
        assert_eq!(Unsynced.at_most(OnReturn), Unsynced);
        assert_eq!(Durability::default(), OnReturn);
    }

    #[tokio::test]
    async fn a_file_payload_reads_as_a_stream_of_len_bytes_from_its_position() {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"0123456789").unwrap();
        file.seek(SeekFrom::Start(2)).unwrap();
        let payload = BlobPayload::File {
            file,
            path: PathBuf::from("blob"),
            len: 5,
        };
        assert!(format!("{payload:?}").contains("File"));
        let mut out = Vec::new();
        payload.into_reader().read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"23456");

        let payload = BlobPayload::Stream(Box::pin(&b"streamed"[..]));
        let mut out = Vec::new();
        payload.into_reader().read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"streamed");
    }

    #[test]
    fn errors_are_classified_by_who_can_fix_them() {
        use crate::run::{Classify, ErrorClass};
        let key = BlobKey::for_hash(&sha256_of(b"abc"));
        let io = || std::io::Error::other("boom");
        assert_eq!(StoreError::Config("x".into()).class(), ErrorClass::Usage);
        for item in [
            StoreError::NotFound { key: key.clone() },
            StoreError::Mismatch {
                what: "size",
                expected: "1".into(),
                actual: "2".into(),
            },
            StoreError::InvalidRange {
                key,
                start: 5,
                end: 6,
                size: 1,
            },
            StoreError::Source {
                bytes_read: 3,
                source: io(),
            },
        ] {
            assert_eq!(item.class(), ErrorClass::Item, "{item}");
        }
        let failing = StoreError::Io {
            operation: "write",
            target: "x".into(),
            source: io(),
        };
        assert_eq!(failing.class(), ErrorClass::Fatal);
    }
}
