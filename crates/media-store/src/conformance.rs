//! The datastore conformance suite (feature `conformance`): one set of checks over
//! `&dyn Datastore` that every backend, in any crate, runs the same way, so that each one
//! behaves as the [`Datastore`] trait promises (atomic, idempotent, deduplicating
//! writes; ranges; listings; durability).
//!
//! Each check takes an empty store and panics when the store misbehaves. A backend in
//! another crate depends on `media-store` with this feature (as a dev-dependency) and
//! runs them all with one line of [`datastore_conformance!`](crate::datastore_conformance)
//! in its tests, which also picks up checks added later.

use std::collections::BTreeSet;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::TryStreamExt;
use media_core::datastore::{
    BlobKey, BlobPayload, Datastore, DatastoreExt, DeleteStatus, Durability, PutOptions, PutStatus,
    StoreError,
};
use media_core::hashing::sha256_of;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Deterministic, incompressible-looking bytes.
pub fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// Every key the store lists.
pub async fn listed(store: &dyn Datastore) -> BTreeSet<BlobKey> {
    store.list().try_collect().await.expect("list")
}

/// Blobs of every size around a chunk boundary, and the empty blob, come back as they
/// went in, by every way of reading them, with their size, digest and key.
pub async fn round_trip(store: &dyn Datastore) {
    // Sizes around the filesystem store's chunk boundaries, and the empty blob.
    for (i, len) in [0usize, 1, 4096, (1 << 20) - 1, 1 << 20, (3 << 20) + 7]
        .into_iter()
        .enumerate()
    {
        let data = pseudo_random(len, i as u64);
        let put = store.put_bytes(&data).await.expect("put");
        assert_eq!(put.status, PutStatus::Written, "len {len}");
        assert_eq!(put.blob.size, len as u64);
        assert_eq!(put.blob.sha256, sha256_of(&data));
        assert_eq!(put.blob.key, BlobKey::for_hash(&put.blob.sha256));
        assert_eq!(store.get_bytes(&put.blob.key).await.unwrap(), data);
        assert_eq!(store.size(&put.blob.key).await.unwrap(), Some(len as u64));
        assert!(store.exists(&put.blob.key).await.unwrap());
        let payload = store.open(&put.blob.key, None).await.unwrap();
        assert_eq!(read_payload(payload).await, data, "len {len}");
    }
}

/// A range reads only its bytes (its end clamped to the blob's length), as a payload
/// and as a stream alike; a range that starts past the end is refused.
pub async fn range_get(store: &dyn Datastore) {
    let data = pseudo_random(10_000, 7);
    let key = store.put_bytes(&data).await.unwrap().blob.key;
    let read = |range: std::ops::Range<u64>| {
        let key = key.clone();
        async move {
            let payload = read_payload(store.open(&key, Some(range.clone())).await?).await;
            let mut streamed = Vec::new();
            store
                .get(&key, Some(range))
                .await?
                .read_to_end(&mut streamed)
                .await
                .unwrap();
            assert_eq!(
                payload, streamed,
                "a payload and a stream of one range differ"
            );
            Ok::<_, StoreError>(payload)
        }
    };
    assert_eq!(read(0..10).await.unwrap(), &data[0..10]);
    assert_eq!(read(9_990..10_000).await.unwrap(), &data[9_990..]);
    assert_eq!(
        read(5_000..50_000).await.unwrap(),
        &data[5_000..],
        "end is clamped"
    );
    assert_eq!(read(10_000..10_000).await.unwrap(), b"");
    assert!(matches!(
        read(10_001..10_005).await,
        Err(StoreError::InvalidRange { size: 10_000, .. })
    ));
}

/// Putting the same bytes twice writes them once and lists one blob.
pub async fn duplicate_put(store: &dyn Datastore) {
    let data = pseudo_random(70_000, 3);
    let first = store.put_bytes(&data).await.unwrap();
    let second = store.put_bytes(&data).await.unwrap();
    assert_eq!(first.status, PutStatus::Written);
    assert_eq!(second.status, PutStatus::AlreadyPresent);
    assert_eq!(first.blob, second.blob);
    assert_eq!(listed(store).await, BTreeSet::from([first.blob.key]));
}

/// Sixteen racing puts of the same bytes: exactly one writes, all agree on the blob.
pub async fn concurrent_puts_leave_one_object(store: Arc<dyn Datastore>) {
    let data = Arc::new(pseudo_random(300_000, 11));
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (store, data) = (store.clone(), data.clone());
            tokio::spawn(async move { store.put_bytes(&data).await.unwrap() })
        })
        .collect();
    let mut written = 0;
    for task in tasks {
        let put = task.await.unwrap();
        assert_eq!(put.blob.sha256, sha256_of(&data));
        written += usize::from(put.status == PutStatus::Written);
    }
    assert_eq!(written, 1, "exactly one of the racing puts wrote the blob");
    let keys = listed(&*store).await;
    assert_eq!(keys.len(), 1);
    let key = keys.into_iter().next().unwrap();
    assert_eq!(store.get_bytes(&key).await.unwrap(), *data);
}

/// Deleting twice deletes once and reports the second as not found; the deleted blob is
/// gone for every reader, the other one stays.
pub async fn delete_is_idempotent(store: &dyn Datastore) {
    let keep = store.put_bytes(b"keep me").await.unwrap().blob.key;
    let key = store.put_bytes(b"delete me").await.unwrap().blob.key;
    assert_eq!(store.delete(&key).await.unwrap(), DeleteStatus::Deleted);
    assert_eq!(store.delete(&key).await.unwrap(), DeleteStatus::NotFound);
    assert_eq!(store.size(&key).await.unwrap(), None);
    assert!(matches!(
        store.get(&key, None).await,
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(listed(store).await, BTreeSet::from([keep]));
}

/// Deleting many blobs at once reports each in the order asked, a missing one as not
/// found, and deletes those and only those (more than one call's worth of files).
pub async fn delete_many_reports_each_in_order(store: &dyn Datastore) {
    let keep = store.put_bytes(b"keep me").await.unwrap().blob.key;
    let mut doomed = Vec::new();
    for n in 0..300 {
        let bytes = format!("delete me {n}");
        doomed.push(store.put_bytes(bytes.as_bytes()).await.unwrap().blob.key);
    }
    let gone = doomed.remove(7);
    store.delete(&gone).await.unwrap();
    let mut asked = doomed.clone();
    asked.insert(150, gone);
    let statuses: Vec<DeleteStatus> = store
        .delete_many(&asked)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let mut expected = vec![DeleteStatus::Deleted; asked.len()];
    expected[150] = DeleteStatus::NotFound;
    assert_eq!(statuses, expected);
    assert_eq!(listed(store).await, BTreeSet::from([keep]));
}

/// Asking the lengths of many blobs at once answers each in the order asked, a missing
/// one as `None` (more than one call's worth of files).
pub async fn sizes_reports_each_in_order(store: &dyn Datastore) {
    let mut asked = Vec::new();
    let mut expected = Vec::new();
    for n in 0..300 {
        let bytes = pseudo_random(n % 50, 2_000 + n as u64);
        asked.push(store.put_bytes(&bytes).await.unwrap().blob.key);
        expected.push(Some(bytes.len() as u64));
    }
    let gone = asked[7].clone();
    store.delete(&gone).await.unwrap();
    expected[7] = None;
    let never = BlobKey::for_hash(&sha256_of(b"never stored"));
    asked.insert(260, never);
    expected.insert(260, None);
    assert_eq!(store.sizes(&asked).await.unwrap(), expected);
    assert_eq!(store.sizes(&[]).await.unwrap(), Vec::<Option<u64>>::new());
}

/// Listing yields exactly the keys put.
pub async fn list_reports_every_blob(store: &dyn Datastore) {
    let mut expected = BTreeSet::new();
    for i in 0..200 {
        expected.insert(
            store
                .put_bytes(&pseudo_random(100, i))
                .await
                .unwrap()
                .blob
                .key,
        );
    }
    assert_eq!(listed(store).await, expected);
}

/// The listing comes in ascending key order (what `media_admin check` merges with the
/// rows), across the fan-out folders.
pub async fn list_is_in_key_order(store: &dyn Datastore) {
    for i in 0..200 {
        store
            .put_bytes(&pseudo_random(64, 1_000 + i))
            .await
            .unwrap();
    }
    let keys: Vec<BlobKey> = store.list().try_collect().await.expect("list");
    assert_eq!(keys.len(), 200);
    assert!(
        keys.windows(2).all(|pair| pair[0] < pair[1]),
        "not in ascending order: {keys:?}"
    );
}

/// A reader that yields some bytes, then fails: a client disconnecting, a disk error.
#[derive(Debug)]
pub struct FailingReader {
    /// The bytes still to yield before failing.
    pub remaining: Vec<u8>,
}

impl AsyncRead for FailingReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.remaining.is_empty() {
            return Poll::Ready(Err(io::Error::other("connection reset")));
        }
        let n = self.remaining.len().min(buf.remaining()).min(64 * 1024);
        buf.put_slice(&self.remaining[..n]);
        self.remaining.drain(..n);
        Poll::Ready(Ok(()))
    }
}

/// A source that fails part-way is [`StoreError::Source`], counting what was read, and
/// leaves nothing listed.
pub async fn failed_put_stores_nothing(store: &dyn Datastore) {
    let mut reader = FailingReader {
        remaining: pseudo_random(3 << 20, 5),
    };
    let err = store
        .put(&mut reader, &PutOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Source { bytes_read, .. } if bytes_read == 3 << 20),
        "{err}"
    );
    assert!(listed(store).await.is_empty());
}

/// Bytes that differ from the expected digest or length are
/// [`StoreError::Mismatch`] and leave nothing listed; matching ones are written.
pub async fn mismatched_expectation_stores_nothing(store: &dyn Datastore) {
    let data = pseudo_random(5_000, 9);
    let wrong = sha256_of(b"something else");
    let mut reader = &data[..];
    let err = store
        .put(&mut reader, &PutOptions::expecting(Some(wrong), None))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Mismatch { what: "sha256", .. }));
    let mut reader = &data[..];
    let err = store
        .put(&mut reader, &PutOptions::expecting(None, Some(4_999)))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Mismatch { what: "size", .. }));
    assert!(listed(store).await.is_empty());
    let mut reader = &data[..];
    let ok = PutOptions::expecting(Some(sha256_of(&data)), Some(5_000));
    assert_eq!(
        store.put(&mut reader, &ok).await.unwrap().status,
        PutStatus::Written
    );
}

/// [`Datastore::put_local`] opens a local file itself: a file that cannot be opened is
/// its outer error, small and large files are stored whole, no more than the limit the
/// opener gives is read, and a file that cannot be read is [`StoreError::Source`].
pub async fn put_local_opens_and_stores_a_local_file(store: &dyn Datastore) {
    use media_core::datastore::{OpenLocalFile, READ_WHOLE};
    let dir = tempfile::tempdir().unwrap();
    let opener = |path: std::path::PathBuf, limit: u64| -> OpenLocalFile {
        Box::new(move || Ok((std::fs::File::open(path)?, limit)))
    };
    let missing = store
        .put_local(
            opener(dir.path().join("missing"), 10),
            &PutOptions::default(),
        )
        .await;
    assert_eq!(
        missing.unwrap_err().kind(),
        std::io::ErrorKind::NotFound,
        "a file that cannot be opened is the outer error"
    );
    for (i, len) in [0, 10, READ_WHOLE as usize + 3].into_iter().enumerate() {
        let data = pseudo_random(len, 70 + i as u64);
        let path = dir.path().join(format!("f{i}"));
        std::fs::write(&path, &data).unwrap();
        let whole = PutOptions::expecting(Some(sha256_of(&data)), Some(len as u64));
        let put = store
            .put_local(opener(path.clone(), len as u64 + 1), &whole)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(put.status, PutStatus::Written);
        assert_eq!(store.get_bytes(&put.blob.key).await.unwrap(), data);
        if len > 1 {
            // Only the first `limit` bytes are read.
            let put = store
                .put_local(opener(path, len as u64 - 1), &PutOptions::default())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(put.blob.sha256, sha256_of(&data[..len - 1]));
        }
    }
    // A folder opens, but reading it fails.
    let unreadable = store
        .put_local(opener(dir.path().to_owned(), 10), &PutOptions::default())
        .await
        .unwrap();
    assert!(
        matches!(unreadable, Err(StoreError::Source { .. })),
        "{unreadable:?}"
    );
}

/// [`Datastore::put_file`] stores local files of every size around a chunk boundary,
/// reads no more than its limit, and reads a FIFO (whose length says nothing) to its end.
pub async fn put_file_streams_a_local_file(store: &dyn Datastore) {
    let dir = tempfile::tempdir().unwrap();
    // Around the 1 MiB read chunk, and empty.
    let lens = [
        10usize,
        0,
        (1 << 20) - 1,
        1 << 20,
        (1 << 20) + 3,
        (5 << 20) - 1,
    ];
    for (i, len) in lens.into_iter().enumerate() {
        let data = pseudo_random(len, 40 + i as u64);
        let path = dir.path().join(format!("f{i}"));
        std::fs::write(&path, &data).unwrap();
        let open = || std::fs::File::open(&path).unwrap();
        let unlimited = u64::MAX;
        let put = store
            .put_file(open(), unlimited, &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(put.blob.sha256, sha256_of(&data));
        assert_eq!(put.status, PutStatus::Written);
        assert_eq!(store.get_bytes(&put.blob.key).await.unwrap(), data);
        let again = store
            .put_file(open(), unlimited, &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(again.status, PutStatus::AlreadyPresent);
        let wrong = PutOptions::expecting(None, Some(len as u64 + 1));
        assert!(matches!(
            store.put_file(open(), unlimited, &wrong).await,
            Err(StoreError::Mismatch { what: "size", .. })
        ));
        // Never more than the limit is read: one byte past the expected length is
        // enough to see that the file is longer.
        if len > 0 {
            let short = PutOptions::expecting(None, Some(len as u64 - 1));
            assert!(matches!(
                store.put_file(open(), len as u64, &short).await,
                Err(StoreError::Mismatch { what: "size", .. })
            ));
        }
    }
    assert_eq!(listed(store).await.len(), lens.len());

    // A file whose length on disk says nothing about its content (a pipe says 0): read
    // to its end all the same.
    let fifo = dir.path().join("fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    let data = pseudo_random((2 << 20) + 5, 99);
    let writer = {
        let (fifo, data) = (fifo.clone(), data.clone());
        std::thread::spawn(move || std::fs::write(fifo, data).unwrap())
    };
    let reader = std::fs::File::open(&fifo).unwrap();
    let put = store
        .put_file(reader, u64::MAX, &PutOptions::default())
        .await
        .unwrap();
    writer.join().unwrap();
    assert_eq!(put.blob.sha256, sha256_of(&data));
    assert_eq!(store.get_bytes(&put.blob.key).await.unwrap(), data);
}

/// A put with [`Durability::AfterSync`] is written once and readable after the sync;
/// a second sync changes nothing.
pub async fn deferred_durability_is_completed_by_sync(store: &dyn Datastore) {
    let data = pseudo_random(2_000, 77);
    let options = PutOptions::default().with_durability(Durability::AfterSync);
    let put = store.put(&mut &data[..], &options).await.unwrap();
    assert_eq!(put.status, PutStatus::Written);
    // The same bytes again before the sync: written once.
    let again = store.put(&mut &data[..], &options).await.unwrap();
    assert_eq!(again.status, PutStatus::AlreadyPresent);
    store.sync().await.unwrap();
    assert_eq!(store.get_bytes(&put.blob.key).await.unwrap(), data);
    assert_eq!(store.size(&put.blob.key).await.unwrap(), Some(2_000));
    store.sync().await.unwrap();
    assert_eq!(store.get_bytes(&put.blob.key).await.unwrap(), data);
    assert_eq!(listed(store).await, BTreeSet::from([put.blob.key]));
}

/// A put with [`Durability::Unsynced`] is readable as soon as it returns, no sync needed.
pub async fn unsynced_put_is_readable_at_once(store: &dyn Datastore) {
    let data = pseudo_random(3_000, 78);
    let options = PutOptions::default().with_durability(Durability::Unsynced);
    let put = store.put(&mut &data[..], &options).await.unwrap();
    assert_eq!(put.status, PutStatus::Written);
    assert_eq!(store.get_bytes(&put.blob.key).await.unwrap(), data);
    assert_eq!(listed(store).await, BTreeSet::from([put.blob.key]));
}

/// Reads a whole payload. A file is read with blocking I/O, as a reader that takes the
/// fast path does, and must hold `len` bytes from its position.
pub async fn read_payload(payload: BlobPayload) -> Vec<u8> {
    match payload {
        BlobPayload::File { file, path, len } => tokio::task::spawn_blocking(move || {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::Read::take(file, len), &mut bytes).unwrap();
            assert_eq!(bytes.len() as u64, len, "{}", path.display());
            bytes
        })
        .await
        .unwrap(),
        BlobPayload::Stream(mut reader) => {
            let mut bytes = Vec::new();
            reader.read_to_end(&mut bytes).await.unwrap();
            bytes
        }
    }
}

/// The S3-compatible server the S3 tests use: `S3_TEST_ENDPOINT` (e.g.
/// `http://127.0.0.1:9000`), which `./scripts/test` sets after starting a throwaway
/// server. Panics with instructions when it is not set: the S3 tests are never skipped.
pub fn s3_test_endpoint() -> String {
    std::env::var("S3_TEST_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "S3_TEST_ENDPOINT is not set. Run the tests with ./scripts/test, which starts a \
             throwaway S3 server (moto), or set S3_TEST_ENDPOINT=http://host:port to an \
             S3-compatible server with a bucket named by S3_TEST_BUCKET (default \
             media-tests) and its credentials in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY."
        )
    })
}

/// A server that refuses credentials it does not know, for the tests of refused
/// credentials (they send made-up keys): `S3_TEST_STRICT_ENDPOINT`, which `scripts/test`
/// points at a moto server refusing every key, else [`s3_test_endpoint`] (Garage, MinIO
/// and AWS check every key; moto as started for the other tests accepts any).
pub fn s3_strict_test_endpoint() -> String {
    std::env::var("S3_TEST_STRICT_ENDPOINT").unwrap_or_else(|_| s3_test_endpoint())
}

/// The bucket the S3 tests use on [`s3_test_endpoint`]: `S3_TEST_BUCKET`, by default
/// `media-tests`. Each test works below a prefix of its own.
pub fn s3_test_bucket() -> String {
    std::env::var("S3_TEST_BUCKET").unwrap_or_else(|_| "media-tests".to_owned())
}

/// A fresh, empty S3 datastore for one test: a random prefix in the test bucket on the
/// test server (see [`s3_test_endpoint`]). Dropping it deletes every object below the
/// prefix.
#[derive(Debug)]
pub struct S3TestStore {
    /// The store.
    pub store: Arc<crate::S3Datastore>,
}

impl S3TestStore {
    /// A store below a new random prefix.
    pub async fn new() -> Self {
        let uri = format!(
            "s3://{}/test-{:016x}?endpoint={}",
            s3_test_bucket(),
            rand::random::<u64>(),
            s3_test_endpoint()
        );
        let location = crate::S3Location::parse(&uri).expect("S3_TEST_ENDPOINT is a URL");
        let store = crate::S3Datastore::open(location)
            .await
            .unwrap_or_else(|e| panic!("the S3 test server at S3_TEST_ENDPOINT: {e}"));
        Self {
            store: Arc::new(store),
        }
    }
}

impl Drop for S3TestStore {
    fn drop(&mut self) {
        let store = self.store.clone();
        // Drop runs inside the test's runtime, which must not be blocked on: clean up on a
        // thread of its own.
        let cleanup = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a cleanup runtime")
                .block_on(store.delete_everything())
        });
        if let Ok(Err(e)) = cleanup.join() {
            eprintln!("could not clean up the S3 test store: {e}");
        }
    }
}

/// A fresh S3 test store as the conformance suite takes it (see [`S3TestStore`]).
pub async fn s3_test_store() -> (Arc<dyn Datastore>, S3TestStore) {
    let guard = S3TestStore::new().await;
    (guard.store.clone(), guard)
}

/// Runs `test` on a new multi-threaded runtime (for the tests [`datastore_conformance`]
/// writes, so that a crate using it needs no test macros of its own).
///
/// [`datastore_conformance`]: crate::datastore_conformance
pub fn run<F: std::future::Future<Output = ()>>(test: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a test runtime")
        .block_on(test);
}

/// Writes a module `$backend` with one `#[test]` per check of the
/// [conformance suite](crate::conformance), each on a fresh store made by `$make`: an
/// expression giving a future of `(Arc<dyn Datastore>, guard)`, where the store is empty
/// and the guard (a temporary folder, a bucket to remove, `()`) lives as long as the test.
/// `$make` is evaluated inside the module, which `use`s its parent's items.
///
/// ```
/// // tests/conformance.rs
/// use std::sync::Arc;
///
/// use media_core::Datastore;
/// use media_store::MemoryDatastore;
///
/// async fn memory() -> (Arc<dyn Datastore>, ()) {
///     (Arc::new(MemoryDatastore::new()), ())
/// }
///
/// media_store::datastore_conformance!(memory_backend, memory());
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! datastore_conformance {
    ($backend:ident, $make:expr) => {
        mod $backend {
            #[allow(unused_imports)]
            use super::*;

            $crate::datastore_conformance!(@checks $make;
                round_trip,
                range_get,
                duplicate_put,
                delete_is_idempotent,
                delete_many_reports_each_in_order,
                sizes_reports_each_in_order,
                list_reports_every_blob,
                list_is_in_key_order,
                failed_put_stores_nothing,
                mismatched_expectation_stores_nothing,
                put_file_streams_a_local_file,
                put_local_opens_and_stores_a_local_file,
                deferred_durability_is_completed_by_sync,
                unsynced_put_is_readable_at_once,
            );

            #[test]
            fn concurrent_puts_leave_one_object() {
                $crate::conformance::run(async {
                    let (store, _guard) = $make.await;
                    $crate::conformance::concurrent_puts_leave_one_object(store).await;
                });
            }
        }
    };
    (@checks $make:expr; $($check:ident,)*) => {
        $(
            #[test]
            fn $check() {
                $crate::conformance::run(async {
                    let (store, _guard) = $make.await;
                    $crate::conformance::$check(&*store).await;
                });
            }
        )*
    };
}
