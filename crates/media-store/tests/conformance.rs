//! The datastore conformance suite ([`media_store::conformance`]) run against every
//! backend of this crate (S3 on the server `S3_TEST_ENDPOINT` names, which
//! `./scripts/test` starts), and the filesystem and S3 backends' own behaviour.

use std::collections::BTreeSet;
use std::sync::Arc;

use media_core::datastore::{
    BlobKey, Datastore, DatastoreExt, DeleteStatus, Durability, PutOptions, PutStatus, StoreError,
};
use media_core::hashing::sha256_of;
use media_store::conformance::{FailingReader, S3TestStore, listed, pseudo_random, read_payload};
use media_store::faulty::FaultyDatastore;
use media_store::{FileDatastore, MemoryDatastore};

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

async fn memory() -> (Arc<dyn Datastore>, ()) {
    (Arc::new(MemoryDatastore::new()), ())
}

async fn filesystem(limit: Durability) -> (Arc<dyn Datastore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = FileDatastore::open(dir.path().join("store"))
        .await
        .unwrap()
        .with_max_durability(limit);
    (Arc::new(store), dir)
}

/// A folder store behind a [`FaultyDatastore`] that never fails: the wrapper passes
/// every operation through unchanged.
async fn faulty_that_never_fails() -> (Arc<dyn Datastore>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = FaultyDatastore::in_folder(dir.path().join("store"), u64::MAX)
        .await
        .unwrap();
    (Arc::new(store), dir)
}

media_store::datastore_conformance!(memory_backend, memory());
media_store::datastore_conformance!(filesystem_backend, filesystem(Durability::OnReturn));
media_store::datastore_conformance!(filesystem_without_fsync, filesystem(Durability::Unsynced));
media_store::datastore_conformance!(faulty_pass_through, faulty_that_never_fails());
media_store::datastore_conformance!(s3_backend, media_store::conformance::s3_test_store());

#[tokio::test]
async fn the_faulty_store_fails_like_a_full_disk_once_its_puts_are_used_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = FaultyDatastore::in_folder(dir.path(), 1).await.unwrap();
    let kept = store.put_bytes(b"first").await.unwrap().blob.key;
    let full = |e: StoreError| match e {
        StoreError::Io { source, .. } => source.raw_os_error() == Some(28),
        _ => false,
    };
    assert!(full(store.put_bytes(b"second").await.unwrap_err()));
    let file = tempfile::tempfile().unwrap();
    let put_file = store.put_file(file, u64::MAX, &PutOptions::default()).await;
    assert!(full(put_file.unwrap_err()));
    assert!(full(store.sync().await.unwrap_err()));
    assert_eq!(store.refused(), 3);
    // Reads, listings and deletes pass through.
    assert_eq!(store.get_bytes(&kept).await.unwrap(), b"first");
    assert_eq!(listed(&store).await, BTreeSet::from([kept.clone()]));
    assert_eq!(store.delete(&kept).await.unwrap(), DeleteStatus::Deleted);
}

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

/// Two tools opening one folder at once: one swept the other's just-created temporary
/// folder as abandoned before its owner could lock it, and the owner stopped with "open
/// temporary folder … No such file or directory" (exit 2).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_opening_one_folder_at_once_all_get_a_temporary_folder() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..20 {
        let opens = (0..8).map(|_| {
            let root = dir.path().to_owned();
            tokio::spawn(async move { FileDatastore::open(root).await })
        });
        let stores: Vec<FileDatastore> = futures::future::join_all(opens)
            .await
            .into_iter()
            .map(|joined| {
                joined
                    .unwrap()
                    .unwrap_or_else(|e| panic!("round {round}: {e}"))
            })
            .collect();
        for store in &stores {
            store.put_bytes(b"shared").await.unwrap();
        }
    }
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
    let err = media_store::open("gs://bucket")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown scheme \"gs\""), "{err}");
    assert!(err.contains("s3://bucket/optional/prefix"), "{err}");
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
        let error = store.open(key, Some(0..1)).await.unwrap_err().to_string();
        assert!(error.contains("never followed"), "{key}: {error}");
        assert_eq!(
            store.size(key).await.unwrap(),
            None,
            "{key}: a link is no blob"
        );
    }
}

// S3-specific behaviour, on the server S3_TEST_ENDPOINT names.

/// Whether `store` holds no object at all below its prefix (no blob, no temporary upload):
/// deletes everything there and counts it.
async fn objects_left(store: &media_store::S3Datastore) -> u64 {
    store.delete_everything().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_multipart_put_round_trips_with_or_without_a_known_digest() {
    let test = S3TestStore::new().await;
    let store = &*test.store;
    let data = pseudo_random(2 * media_store::s3::PART_SIZE + 12_345, 21);
    let sha256 = sha256_of(&data);
    // The digest unknown: uploaded to a temporary key, copied into place.
    let put = store
        .put(&mut &data[..], &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(put.status, PutStatus::Written);
    assert_eq!(
        (put.blob.sha256.clone(), put.blob.size),
        (sha256.clone(), data.len() as u64)
    );
    assert_eq!(store.get_bytes(&put.blob.key).await.unwrap(), data);
    assert_eq!(listed(store).await, BTreeSet::from([put.blob.key.clone()]));
    let tail = read_payload(
        store
            .open(&put.blob.key, Some(8_000_000..9_000_000))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(tail, &data[8_000_000..9_000_000], "a range across parts");
    let again = store
        .put(&mut &data[..], &PutOptions::default())
        .await
        .unwrap();
    assert_eq!(again.status, PutStatus::AlreadyPresent);
    assert_eq!(
        objects_left(store).await,
        1,
        "only the blob: no temporary upload is left"
    );

    // The digest known: uploaded straight to its key.
    let known = PutOptions::expecting(Some(sha256.clone()), Some(data.len() as u64));
    let put = store.put(&mut &data[..], &known).await.unwrap();
    assert_eq!(put.status, PutStatus::Written);
    assert_eq!(store.get_bytes(&put.blob.key).await.unwrap(), data);
    assert_eq!(
        store.put(&mut &data[..], &known).await.unwrap().status,
        PutStatus::AlreadyPresent
    );
    assert_eq!(objects_left(store).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_put_whose_bytes_differ_from_the_expected_digest_leaves_no_object() {
    let test = S3TestStore::new().await;
    let store = &*test.store;
    let data = pseudo_random(media_store::s3::PART_SIZE + 1, 22);
    let claimed = sha256_of(b"what the caller thought it had");
    for options in [
        PutOptions::expecting(Some(claimed.clone()), None),
        PutOptions::expecting(None, Some(data.len() as u64 - 1)),
    ] {
        let err = store.put(&mut &data[..], &options).await.unwrap_err();
        assert!(matches!(err, StoreError::Mismatch { .. }), "{err}");
    }
    let mut failing = FailingReader {
        remaining: pseudo_random(media_store::s3::PART_SIZE * 2, 23),
    };
    let err = store
        .put(&mut failing, &PutOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Source { .. }), "{err}");
    assert_eq!(
        store.size(&BlobKey::for_hash(&claimed)).await.unwrap(),
        None
    );
    assert!(listed(store).await.is_empty());
    assert_eq!(
        objects_left(store).await,
        0,
        "no blob and no temporary upload"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_s3_identity_marker_is_claimed_once_and_replaced_on_demand() {
    let test = S3TestStore::new().await;
    let store = &*test.store;
    assert_eq!(store.read_marker().await.unwrap(), None);
    assert_eq!(store.claim_marker("first-id").await.unwrap(), "first-id");
    assert_eq!(store.claim_marker("second-id").await.unwrap(), "first-id");
    store.replace_marker("moved-here").await.unwrap();
    assert_eq!(
        store.read_marker().await.unwrap().as_deref(),
        Some("moved-here")
    );
    assert!(listed(store).await.is_empty(), "the marker is no blob");
}

#[tokio::test(flavor = "multi_thread")]
async fn open_reaches_an_s3_store_through_its_uri() {
    let test = S3TestStore::new().await;
    let uri = test.store.uri();
    let key = test
        .store
        .put_bytes(b"through the uri")
        .await
        .unwrap()
        .blob
        .key;
    for store in [
        media_store::open(&uri).await.unwrap(),
        media_store::open_read_only(&uri).await.unwrap(),
        media_store::open_for_dry_run(&uri).await.unwrap(),
    ] {
        assert_eq!(store.uri(), uri);
        assert_eq!(store.get_bytes(&key).await.unwrap(), b"through the uri");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_bucket_or_an_unreachable_server_is_a_config_error_at_open() {
    let endpoint = media_store::conformance::s3_test_endpoint();
    let missing_bucket = format!(
        "s3://no-such-bucket-{:08x}/x?endpoint={endpoint}",
        rand::random::<u32>()
    );
    // A port nobody listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let unreachable = format!("s3://media-tests?endpoint=http://127.0.0.1:{port}");
    for uri in [missing_bucket, unreachable] {
        for opened in [
            media_store::open(&uri).await,
            media_store::open_read_only(&uri).await,
            media_store::open_for_dry_run(&uri).await,
        ] {
            let err = opened.unwrap_err();
            assert!(matches!(err, StoreError::Config(_)), "{uri}: {err}");
            let message = err.to_string();
            assert!(message.contains(&uri), "{uri}: {message}");
            let advice = ["does not exist at", "nothing accepts connections at"];
            assert!(
                advice.iter().any(|a| message.contains(a)),
                "{uri}: {message}"
            );
        }
    }
}
