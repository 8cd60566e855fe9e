//! The datastore conformance suite ([`media_store::conformance`]) run against every
//! backend of this crate, and the filesystem backend's own behaviour.

use std::collections::BTreeSet;
use std::sync::Arc;

use media_core::datastore::{
    BlobKey, Datastore, DatastoreExt, DeleteStatus, Durability, PutOptions, StoreError,
};
use media_core::hashing::sha256_of;
use media_store::conformance::{FailingReader, listed, pseudo_random};
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
        let error = store.open(key, Some(0..1)).await.unwrap_err().to_string();
        assert!(error.contains("never followed"), "{key}: {error}");
        assert_eq!(
            store.size(key).await.unwrap(),
            None,
            "{key}: a link is no blob"
        );
    }
}
