//! The datastore conformance suite: one set of checks over `&dyn Datastore`, run against
//! every backend. A new backend adds one `backend_suite!` line.

use std::collections::BTreeSet;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::TryStreamExt;
use media_core::datastore::{
    BlobKey, Datastore, DatastoreExt, DeleteStatus, Durability, PutOptions, PutStatus, StoreError,
};
use media_core::hashing::sha256_of;
use media_store::{FileDatastore, MemoryDatastore};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Deterministic, incompressible-looking bytes.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
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

/// Files in a filesystem datastore's temporary folder, at any depth.
fn temporary_files(root: &std::path::Path) -> usize {
    fn count(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .map(|path| if path.is_dir() { count(&path) } else { 1 })
            .sum()
    }
    count(&root.join(media_store::fs::TEMP_DIR))
}

async fn listed(store: &dyn Datastore) -> BTreeSet<BlobKey> {
    store.list().try_collect().await.expect("list")
}

async fn round_trip(store: &dyn Datastore) {
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
        if let Some(local) = store.local_file(&put.blob.key) {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut local.open().unwrap(), &mut bytes).unwrap();
            assert_eq!(bytes, data, "{}", local.path().display());
        }
    }
}

async fn range_get(store: &dyn Datastore) {
    let data = pseudo_random(10_000, 7);
    let key = store.put_bytes(&data).await.unwrap().blob.key;
    let read = |range: std::ops::Range<u64>| {
        let key = key.clone();
        async move {
            let mut out = Vec::new();
            store
                .get(&key, Some(range))
                .await?
                .read_to_end(&mut out)
                .await
                .unwrap();
            Ok::<_, StoreError>(out)
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

async fn duplicate_put(store: &dyn Datastore) {
    let data = pseudo_random(70_000, 3);
    let first = store.put_bytes(&data).await.unwrap();
    let second = store.put_bytes(&data).await.unwrap();
    assert_eq!(first.status, PutStatus::Written);
    assert_eq!(second.status, PutStatus::AlreadyPresent);
    assert_eq!(first.blob, second.blob);
    assert_eq!(listed(store).await, BTreeSet::from([first.blob.key]));
}

async fn concurrent_puts_leave_one_object(store: Arc<dyn Datastore>) {
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

async fn delete_is_idempotent(store: &dyn Datastore) {
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

async fn list_reports_every_blob(store: &dyn Datastore) {
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

/// A reader that yields some bytes, then fails: a client disconnecting, a disk error.
struct FailingReader {
    remaining: Vec<u8>,
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

async fn failed_put_stores_nothing(store: &dyn Datastore) {
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

async fn mismatched_expectation_stores_nothing(store: &dyn Datastore) {
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

async fn put_file_streams_a_local_file(store: &dyn Datastore) {
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

async fn deferred_durability_is_completed_by_sync(store: &dyn Datastore) {
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

macro_rules! backend_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn round_trip() {
                let (store, _guard) = $make.await;
                super::round_trip(&*store).await;
            }
            #[tokio::test]
            async fn range_get() {
                let (store, _guard) = $make.await;
                super::range_get(&*store).await;
            }
            #[tokio::test]
            async fn duplicate_put() {
                let (store, _guard) = $make.await;
                super::duplicate_put(&*store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_puts_leave_one_object() {
                let (store, _guard) = $make.await;
                super::concurrent_puts_leave_one_object(store).await;
            }
            #[tokio::test]
            async fn delete_is_idempotent() {
                let (store, _guard) = $make.await;
                super::delete_is_idempotent(&*store).await;
            }
            #[tokio::test]
            async fn list_reports_every_blob() {
                let (store, _guard) = $make.await;
                super::list_reports_every_blob(&*store).await;
            }
            #[tokio::test]
            async fn failed_put_stores_nothing() {
                let (store, _guard) = $make.await;
                super::failed_put_stores_nothing(&*store).await;
            }
            #[tokio::test]
            async fn put_file_streams_a_local_file() {
                let (store, _guard) = $make.await;
                super::put_file_streams_a_local_file(&*store).await;
            }
            #[tokio::test]
            async fn deferred_durability_is_completed_by_sync() {
                let (store, _guard) = $make.await;
                super::deferred_durability_is_completed_by_sync(&*store).await;
            }
            #[tokio::test]
            async fn mismatched_expectation_stores_nothing() {
                let (store, _guard) = $make.await;
                super::mismatched_expectation_stores_nothing(&*store).await;
            }
        }
    };
}

async fn memory() -> (Arc<dyn Datastore>, ()) {
    (Arc::new(MemoryDatastore::new()), ())
}

async fn filesystem(fsync: bool) -> (Arc<dyn Datastore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = FileDatastore::open(dir.path().join("store"))
        .await
        .unwrap()
        .with_fsync(fsync);
    (Arc::new(store), dir)
}

backend_suite!(memory_backend, memory());
backend_suite!(filesystem_backend, filesystem(true));
backend_suite!(filesystem_without_fsync, filesystem(false));

// Filesystem-specific behaviour.

#[tokio::test]
async fn a_crashed_put_is_never_listed_and_cleanup_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileDatastore::open(dir.path()).await.unwrap();
    let kept = store.put_bytes(b"complete").await.unwrap().blob.key;
    // What crashes leave: a writer's folder (unlocked: its process is gone) with a
    // partial file and a file named like a blob; the shards of older versions, and a
    // loose file at the top (where older versions wrote).
    let temp = dir.path().join(media_store::fs::TEMP_DIR);
    let dead = temp.join("w-1-dead").join("3");
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::write(dead.join("put-crashed"), b"partial").unwrap();
    let fake = BlobKey::for_hash(&sha256_of(b"x"));
    std::fs::create_dir_all(temp.join("7")).unwrap();
    std::fs::write(temp.join("7").join(fake.sha256().as_str()), b"x").unwrap();
    std::fs::write(temp.join("put-crashed"), b"partial").unwrap();
    // Foreign files in the fan-out folders are not blobs either.
    std::fs::write(dir.path().join(kept.as_str()).with_extension("tmp"), b"?").unwrap();
    assert_eq!(listed(&store).await, BTreeSet::from([kept.clone()]));

    let report = store
        .cleanup(std::time::Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(
        (report.removed_files, report.removed_bytes),
        (2, 8),
        "abandoned folders go at once; a fresh loose file stays"
    );
    let report = store.cleanup(std::time::Duration::ZERO).await.unwrap();
    assert_eq!((report.removed_files, report.removed_bytes), (1, 7));
    assert_eq!(store.get_bytes(&kept).await.unwrap(), b"complete");
    // The store's own folder is in use: never removed.
    assert_eq!(std::fs::read_dir(&temp).unwrap().count(), 1);
    store.put_bytes(b"still works").await.unwrap();
}

#[tokio::test]
async fn opening_removes_the_temporary_folders_of_writers_that_are_gone_only() {
    let dir = tempfile::tempdir().unwrap();
    let running = FileDatastore::open(dir.path()).await.unwrap();
    let temp = dir.path().join(media_store::fs::TEMP_DIR);
    let dead = temp.join("w-2-killed").join("0");
    std::fs::create_dir_all(&dead).unwrap();
    std::fs::write(dead.join("put-partial"), vec![0u8; 1000]).unwrap();
    // A deferred put of the running writer sits in its temporary folder until the sync.
    let deferred = PutOptions::default().with_durability(Durability::AfterSync);
    let put = running.put(&mut &b"staged"[..], &deferred).await.unwrap();
    assert_eq!(temporary_files(dir.path()), 2);

    let second = FileDatastore::open(dir.path()).await.unwrap();
    assert!(
        !temp.join("w-2-killed").exists(),
        "the killed writer's folder is gone"
    );
    assert_eq!(
        temporary_files(dir.path()),
        1,
        "the running writer's file is kept"
    );
    running.sync().await.unwrap();
    assert_eq!(running.get_bytes(&put.blob.key).await.unwrap(), b"staged");
    drop((running, second));
    assert_eq!(
        temporary_files(dir.path()),
        0,
        "closed writers remove their folders"
    );
}

#[tokio::test]
async fn a_deferred_put_gets_its_name_only_at_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let deferred = PutOptions::default().with_durability(Durability::AfterSync);
    let large = pseudo_random((2 << 20) + 1, 5);
    let store = FileDatastore::open(dir.path()).await.unwrap();
    let small = store.put(&mut &b"small"[..], &deferred).await.unwrap();
    let big = store.put(&mut &large[..], &deferred).await.unwrap();
    // Before the sync a small blob's bytes sit in a temporary file only: a crash now
    // leaves no blob whose bytes might not have reached the disk. A large one was synced
    // and linked by its own put.
    assert_eq!(listed(&store).await, BTreeSet::from([big.blob.key.clone()]));
    assert!(!dir.path().join(small.blob.key.as_str()).exists());
    assert_eq!(temporary_files(dir.path()), 1);
    store.sync().await.unwrap();
    assert_eq!(
        listed(&store).await,
        BTreeSet::from([small.blob.key.clone(), big.blob.key.clone()])
    );
    assert_eq!(temporary_files(dir.path()), 0);
    assert_eq!(store.get_bytes(&big.blob.key).await.unwrap(), large);

    // Dropped before its sync (the caller never recorded it): the put leaves nothing.
    let lost = store
        .put(&mut &b"never synced"[..], &deferred)
        .await
        .unwrap();
    drop(store);
    assert!(!dir.path().join(lost.blob.key.as_str()).exists());
    assert_eq!(temporary_files(dir.path()), 0);
}

#[tokio::test]
async fn a_failed_put_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileDatastore::open(dir.path()).await.unwrap();
    let mut reader = FailingReader {
        remaining: pseudo_random(100_000, 1),
    };
    store
        .put(&mut reader, &PutOptions::default())
        .await
        .unwrap_err();
    let mut reader = &b"abc"[..];
    store
        .put(&mut reader, &PutOptions::expecting(None, Some(4)))
        .await
        .unwrap_err();
    assert_eq!(temporary_files(dir.path()), 0);
}

#[tokio::test]
async fn an_unwritable_folder_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    // A regular file where the datastore folder should be: even root cannot write there.
    let blocker = dir.path().join("not-a-folder");
    std::fs::write(&blocker, b"").unwrap();
    let err = FileDatastore::open(blocker.join("store"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not-a-folder"), "{err}");
}

#[tokio::test]
async fn open_accepts_every_documented_uri_form() {
    let dir = tempfile::tempdir().unwrap();
    let absolute = format!("file://{}", dir.path().join("a").display());
    let store = media_store::open(&absolute).await.unwrap();
    assert_eq!(store.uri(), absolute);
    store.put_bytes(b"x").await.unwrap();
    assert!(
        dir.path()
            .join("a")
            .join(media_store::fs::TEMP_DIR)
            .is_dir()
    );
    media_store::open(dir.path().join("b").to_str().unwrap())
        .await
        .unwrap();
    assert!(media_store::open("memory://").await.is_ok());
    let err = media_store::open("s3://bucket")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown scheme \"s3\""), "{err}");
}

#[tokio::test]
async fn a_link_planted_in_the_folder_store_is_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileDatastore::open(dir.path().join("store")).await.unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, b"not the store's").unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();

    // A blob file replaced by a link, and a fan-out folder replaced by a link to a
    // folder holding a file under the blob's name.
    let linked_file = store.put_bytes(b"first blob").await.unwrap().blob.key;
    let linked_folder = store.put_bytes(b"second blob").await.unwrap().blob.key;
    let file_path = dir.path().join("store").join(linked_file.as_str());
    std::fs::remove_file(&file_path).unwrap();
    std::os::unix::fs::symlink(&secret, &file_path).unwrap();
    let folder_path = dir
        .path()
        .join("store")
        .join(linked_folder.as_str())
        .parent()
        .unwrap()
        .to_owned();
    let name = std::path::Path::new(linked_folder.as_str())
        .file_name()
        .unwrap();
    std::fs::copy(&secret, outside.join(name)).unwrap();
    std::fs::remove_dir_all(&folder_path).unwrap();
    std::os::unix::fs::symlink(&outside, &folder_path).unwrap();

    for key in [&linked_file, &linked_folder] {
        let error = match store.get(key, None).await {
            Ok(_) => panic!("{key}: read through a link"),
            Err(e) => e.to_string(),
        };
        assert!(error.contains("never followed"), "{key}: {error}");
        let local = store.local_file(key).unwrap();
        let error = local.open().unwrap_err().to_string();
        assert!(error.contains("never followed"), "{key}: {error}");
    }
}
