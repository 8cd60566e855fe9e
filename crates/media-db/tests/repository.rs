//! Every repository operation, each test body run on SQLite AND PostgreSQL.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use futures::TryStreamExt;
use futures::stream::BoxStream;
use media_core::datastore::{
    BlobKey, BlobPayload, ByteRange, Datastore, DatastoreExt, DeleteStatus, Put, PutOptions,
    StoreError,
};
use media_core::ids::{Sha256Hex, UserId};
use media_core::records::{MediaKey, MediaRecord, Purpose, ThumbnailMethod, ThumbnailRecord};
use media_db::{
    BlobIndex, BlobMove, BlobOutcome, BlobTally, BlobTransfer, DatastoreId, DbError, DeletionQueue,
    InsertOutcome, MediaIndex, MediaOutcome, MoveOutcome, NewBlob, NewMedia, Quarantine,
    QuarantineAction, Repository, RoomIndex, RoomMedia, StoreCheck, TaskKind, TaskLog, connect,
    delete_claimed,
};
use media_store::MemoryDatastore;
use media_store::faulty::FaultyDatastore;
use media_tests::{OtherWriter, TestDatabase};
use tokio::io::AsyncRead;

/// A repository, a datastore registered in it, and the test's label (`sqlite`/`postgres`).
struct Fixture {
    repo: Repository,
    store: Arc<MemoryDatastore>,
    datastore_id: DatastoreId,
    label: &'static str,
}

impl Fixture {
    /// A repository in `db` with a memory datastore registered.
    async fn on(db: &TestDatabase) -> Self {
        let repo = connect(&db.url).await.unwrap();
        let datastore_id = repo.register_datastore("memory://test").await.unwrap();
        Self {
            repo,
            store: Arc::new(MemoryDatastore::new()),
            datastore_id,
            label: db.label,
        }
    }

    /// Puts `bytes` into the datastore and returns a 32×32 cropped thumbnail of `media`
    /// made of them.
    async fn crop_thumbnail(&self, media: &MediaKey, bytes: &[u8]) -> ThumbnailRecord {
        let put = self.store.put_bytes(bytes).await.unwrap();
        ThumbnailRecord {
            media: media.clone(),
            width: 32,
            height: 32,
            method: ThumbnailMethod::Crop,
            content_type: "image/png".into(),
            animated: false,
            sha256: put.blob.sha256,
            size_bytes: put.blob.size,
            created_ts: 1,
        }
    }

    /// Puts `bytes` into the datastore and returns a local media record for them.
    async fn media(&self, media_id: &str, uploader: &str, bytes: &[u8]) -> NewMedia {
        let put = self.store.put_bytes(bytes).await.unwrap();
        let uploader: UserId = uploader.parse().unwrap();
        NewMedia {
            record: MediaRecord {
                key: key(uploader.server_name().as_str(), media_id),
                sha256: put.blob.sha256,
                size_bytes: put.blob.size,
                upload_name: Some(format!("{media_id}.bin")),
                content_type: Some("application/octet-stream".into()),
                uploader: Some(uploader),
                created_ts: 1_700_000_000_000,
                last_access_ts: None,
                quarantined: false,
                quarantined_by: None,
                purpose: Purpose::None,
                imported_from: Some("test".into()),
            },
            thumbnails: Vec::new(),
            datastore_id: self.datastore_id,
        }
    }

    /// Starts recording `batch` in a task of its own.
    fn spawn_batch(
        &self,
        batch: Vec<NewMedia>,
    ) -> tokio::task::JoinHandle<Result<Vec<MediaOutcome>, DbError>> {
        let (repo, store) = (self.repo.clone(), self.store.clone());
        tokio::spawn(async move { repo.insert_media_batch(&batch, &*store).await })
    }

    async fn insert(&self, media: &NewMedia) -> InsertOutcome {
        self.repo
            .insert_media(media, &*self.store)
            .await
            .unwrap()
            .media
    }
}

fn key(origin: &str, media_id: &str) -> MediaKey {
    MediaKey::new(origin.parse().unwrap(), media_id.parse().unwrap())
}

/// The insert of a blob row of `sha256` at its usual location, as another writer's
/// PostgreSQL transaction makes it (see [`OtherWriter`]).
fn blob_row(
    sha256: &Sha256Hex,
    size: i64,
    datastore_id: DatastoreId,
) -> sqlx::query::Query<'static, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(
        "INSERT INTO blobs (sha256, size_bytes, datastore_id, location, created_ts) \
         VALUES ($1, $2, $3, $4, 0)",
    )
    .bind(sha256.as_str().to_owned())
    .bind(size)
    .bind(datastore_id.0)
    .bind(BlobKey::for_hash(sha256).as_str().to_owned())
}

/// Runs `test` on a fresh SQLite repository, then on a fresh PostgreSQL one.
async fn on_both<F, Fut>(test: F)
where
    F: Fn(Fixture) -> Fut,
    Fut: Future<Output = ()>,
{
    for db in TestDatabase::both().await {
        let fixture = Fixture::on(&db).await;
        let repo = fixture.repo.clone();
        test(fixture).await;
        repo.close().await;
    }
}

#[tokio::test]
async fn connecting_twice_migrates_once_and_keeps_data() {
    for db in TestDatabase::both().await {
        let repo = connect(&db.url).await.unwrap();
        let first = repo.register_datastore("file:///srv/a").await.unwrap();
        repo.close().await;
        let repo = connect(&db.url).await.unwrap();
        assert_eq!(
            repo.register_datastore("file:///srv/a").await.unwrap(),
            first
        );
        assert_ne!(
            repo.register_datastore("file:///srv/b").await.unwrap(),
            first
        );
        repo.close().await;
    }
}

/// Two imports started at once on a new SQLite repository both applied its first
/// migration, and one of them stopped with "table datastores already exists" (exit 3):
/// SQLite migrations take no lock of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tools_starting_at_once_on_a_new_repository_all_connect() {
    for db in TestDatabase::both().await {
        for round in 0..3 {
            let connects = (0..8).map(|_| {
                let url = db.url.clone();
                tokio::spawn(async move { connect(&url).await })
            });
            for joined in futures::future::join_all(connects).await {
                let repo = joined
                    .unwrap()
                    .unwrap_or_else(|e| panic!("round {round}: {e}"));
                repo.register_datastore("file:///srv/a").await.unwrap();
                repo.close().await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_inserts_of_one_blob_create_one_row() {
    on_both(|f| async move {
        let put = f.store.put_bytes(b"shared bytes").await.unwrap();
        let blob = NewBlob {
            sha256: put.blob.sha256.clone(),
            size_bytes: put.blob.size,
            datastore_id: f.datastore_id,
        };
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let (repo, store, blob) = (f.repo.clone(), f.store.clone(), blob.clone());
                tokio::spawn(async move { repo.insert_blob(&blob, &*store).await.unwrap() })
            })
            .collect();
        let mut inserted = 0;
        for task in tasks {
            match task.await.unwrap() {
                BlobOutcome::Inserted => inserted += 1,
                BlobOutcome::Existing(row) => assert_eq!(row.sha256, put.blob.sha256),
            }
        }
        assert_eq!(inserted, 1, "{}", f.label);
        let row = f.repo.get_blob(&put.blob.sha256).await.unwrap().unwrap();
        assert_eq!(row.location, put.blob.key);
        assert_eq!(row.size_bytes, 12);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixteen_concurrent_media_batches_share_one_blob() {
    on_both(|f| async move {
        let mut batches = Vec::new();
        for worker in 0..16 {
            let mut batch = Vec::new();
            for i in 0..5 {
                batch.push(
                    f.media(&format!("w{worker}m{i}"), "@alice:example.org", b"same")
                        .await,
                );
            }
            batches.push(batch);
        }
        let tasks: Vec<_> = batches
            .into_iter()
            .map(|batch| f.spawn_batch(batch))
            .collect();
        for task in tasks {
            assert!(
                task.await
                    .unwrap()
                    .unwrap()
                    .iter()
                    .all(|o| o.media == InsertOutcome::Inserted)
            );
        }
        let sha = media_core::hashing::sha256_of(b"same");
        assert_eq!(
            f.repo.blob_reference_count(&sha).await.unwrap(),
            80,
            "{}",
            f.label
        );
    })
    .await;
}

/// Two imports recording the same media at once, their batches in opposite orders (each
/// batch holds whatever its workers finished first). On PostgreSQL each transaction waits
/// for the rows the other inserted first. Before rows went in in key order, the first
/// round (nothing recorded before) and the room links failed with "deadlock detected"
/// in batch order; now both batches commit in every round (a deadlock still met is
/// retried: see the next test). The later rounds record the bytes, then the media,
/// before the two batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batches_of_the_same_media_in_opposite_orders_both_commit() {
    on_both(|f| async move {
        for (round, recorded_before) in ["nothing", "bytes", "media"].into_iter().enumerate() {
            let mut forward = Vec::new();
            let mut before = Vec::new();
            for i in 0..400 {
                let (id, bytes) = (format!("r{round}m{i}"), format!("bytes {round} {i}"));
                let thumbnail_bytes = format!("thumb {id}");
                let mut media = f.media(&id, "@alice:example.org", bytes.as_bytes()).await;
                if recorded_before != "nothing" {
                    let uploader = "@bob:example.org";
                    before.push(f.media(&format!("{id}a"), uploader, bytes.as_bytes()).await);
                    let thumbnail_media = format!("{id}b");
                    let other = f.media(&thumbnail_media, uploader, thumbnail_bytes.as_bytes());
                    before.push(other.await);
                }
                if recorded_before == "media" {
                    before.push(media.clone());
                }
                let thumbnail = f.store.put_bytes(thumbnail_bytes.as_bytes()).await.unwrap();
                media.thumbnails.push(ThumbnailRecord {
                    media: media.record.key.clone(),
                    width: 32,
                    height: 32,
                    method: ThumbnailMethod::Scale,
                    content_type: "image/png".into(),
                    animated: false,
                    sha256: thumbnail.blob.sha256,
                    size_bytes: thumbnail.blob.size,
                    created_ts: 1_700_000_000_000,
                });
                forward.push(media);
            }
            let links: Vec<RoomMedia> = forward
                .iter()
                .map(|m| RoomMedia {
                    room: format!("!r{round}:example.org").parse().unwrap(),
                    media: m.record.key.clone(),
                })
                .collect();
            if !before.is_empty() {
                f.repo.insert_media_batch(&before, &*f.store).await.unwrap();
            }
            let backward: Vec<NewMedia> = forward.iter().rev().cloned().collect();
            let tasks: Vec<_> = [forward, backward]
                .into_iter()
                .map(|batch| f.spawn_batch(batch))
                .collect();
            let (mut media, mut thumbnails) = (0, 0);
            for task in tasks {
                let outcomes = task.await.unwrap().unwrap_or_else(|e| {
                    panic!("{}: {recorded_before} recorded before: {e}", f.label);
                });
                let inserted = |o: &&InsertOutcome| **o == InsertOutcome::Inserted;
                media += outcomes.iter().map(|o| &o.media).filter(inserted).count();
                thumbnails += outcomes
                    .iter()
                    .flat_map(|o| &o.thumbnails)
                    .filter(inserted)
                    .count();
            }
            let new_media = if recorded_before == "media" { 0 } else { 400 };
            assert_eq!((media, thumbnails), (new_media, 400), "{}", f.label);

            let backward: Vec<RoomMedia> = links.iter().rev().cloned().collect();
            let tasks: Vec<_> = [links, backward]
                .into_iter()
                .map(|links| {
                    let repo = f.repo.clone();
                    tokio::spawn(async move { repo.record_room_media(&links).await })
                })
                .collect();
            let mut added = 0;
            for task in tasks {
                added += task.await.unwrap().unwrap_or_else(|e| {
                    panic!("{}: {recorded_before} recorded before, rooms: {e}", f.label);
                });
            }
            assert_eq!(added, 400, "{}", f.label);
        }
    })
    .await;
}

/// A batch that PostgreSQL rolls back to break a deadlock is tried again. The other
/// writer here inserted the batch's second blob, then waits for its first one, which the
/// batch (waiting for the second) holds; the batch waited first, so it is the one
/// rolled back. Once the other writer commits, the batch records both media.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_rolled_back_to_break_a_deadlock_is_tried_again() {
    let db = TestDatabase::postgres().await;
    let f = Fixture::on(&db).await;
    let batch = vec![
        f.media("a", "@alice:example.org", b"first").await,
        f.media("b", "@alice:example.org", b"second").await,
    ];
    let mut blobs: Vec<(Sha256Hex, i64)> = batch
        .iter()
        .map(|m| (m.record.sha256.clone(), m.record.size_bytes as i64))
        .collect();
    blobs.sort();
    let insert_blob = |(sha256, size): &(Sha256Hex, i64)| blob_row(sha256, *size, f.datastore_id);
    let mut other = OtherWriter::begin(&db).await;
    insert_blob(&blobs[1])
        .execute(&mut other.conn)
        .await
        .unwrap();

    let recording = f.spawn_batch(batch);
    // Once the batch, having inserted the first blob, waits for the second, the other
    // writer inserts the first: PostgreSQL aborts the batch.
    other
        .deadlock_with(
            &db,
            || recording.is_finished(),
            async |conn| {
                insert_blob(&blobs[0]).execute(conn).await.unwrap();
            },
        )
        .await;

    let outcomes = recording.await.unwrap().unwrap();
    assert!(
        outcomes.iter().all(|o| o.media == InsertOutcome::Inserted),
        "{outcomes:?}"
    );
    assert_eq!(
        f.repo
            .get_media(&key("example.org", "b"))
            .await
            .unwrap()
            .map(|m| m.sha256),
        Some(media_core::hashing::sha256_of(b"second"))
    );
}

/// `media_admin check --fix` queues an orphan's deletion only once no writer is recording
/// the same bytes. A writer whose blob row is not committed yet has already cancelled the
/// queued deletions of its bytes, so an entry queued then would have a drain delete the
/// object under the row. The queueing waits for the writer's transaction, then finds the
/// object is no orphan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_is_not_queued_while_a_writer_records_its_bytes() {
    let db = TestDatabase::postgres().await;
    let f = Fixture::on(&db).await;
    let put = f.store.put_bytes(b"recorded meanwhile").await.unwrap();
    let location = BlobKey::for_hash(&put.blob.sha256);
    let mut other = OtherWriter::begin(&db).await;
    blob_row(&put.blob.sha256, put.blob.size as i64, f.datastore_id)
        .execute(&mut other.conn)
        .await
        .unwrap();

    let queueing = {
        let (repo, id, keys) = (f.repo.clone(), f.datastore_id, vec![location.clone()]);
        tokio::spawn(async move { repo.queue_orphans(id, &keys).await })
    };
    // Commits once the queueing waits for it.
    other
        .deadlock_with(&db, || queueing.is_finished(), async |_| {})
        .await;

    assert_eq!(queueing.await.unwrap().unwrap(), 0);
    assert!(
        f.repo
            .pending_deletions(f.datastore_id, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let blob = f.repo.get_blob(&put.blob.sha256).await.unwrap().unwrap();
    assert_eq!(blob.location, location);
}

/// A writer holds the blob rows its media reference until it commits. The other writer
/// here plays a purge of the only media holding some bytes: it locks their blob row (as
/// a deletion does) before the batch, which found the row recorded, locks it in turn;
/// then it deletes the media and the row and queues the object's deletion, claimed. The
/// batch finds the row gone, checks the bytes again and is refused (to be put again once
/// the drain is done): recording its media then would leave a row pointing at nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_using_bytes_a_deletion_frees_meanwhile_records_nothing() {
    let db = TestDatabase::postgres().await;
    let f = Fixture::on(&db).await;
    let old = f.media("old", "@alice:example.org", b"shared bytes").await;
    f.repo.insert_media(&old, &*f.store).await.unwrap();
    let sha256 = old.record.sha256.as_str().to_owned();
    let mut other = OtherWriter::begin(&db).await;
    sqlx::query("SELECT sha256 FROM blobs WHERE sha256 = $1 FOR UPDATE")
        .bind(&sha256)
        .fetch_one(&mut other.conn)
        .await
        .unwrap();

    let new = f.media("new", "@alice:example.org", b"shared bytes").await;
    let recording = f.spawn_batch(vec![new]);
    // Frees the bytes once the batch waits for their row.
    other
        .deadlock_with(
            &db,
            || recording.is_finished(),
            async |conn| {
                for sql in [
                    "DELETE FROM media WHERE sha256 = $1",
                    "DELETE FROM blobs WHERE sha256 = $1",
                ] {
                    sqlx::query(sql)
                        .bind(&sha256)
                        .execute(&mut *conn)
                        .await
                        .unwrap();
                }
                sqlx::query(
                    "INSERT INTO pending_deletions \
                     (datastore_id, location, sha256, enqueued_ts, claimed_ts) \
                     VALUES ($1, $2, $3, 0, 0)",
                )
                .bind(f.datastore_id.0)
                .bind(BlobKey::for_hash(&old.record.sha256).as_str())
                .bind(&sha256)
                .execute(&mut *conn)
                .await
                .unwrap();
            },
        )
        .await;

    assert_blob_missing(recording.await.unwrap(), f.label);
    assert!(
        f.repo
            .get_media(&key("example.org", "new"))
            .await
            .unwrap()
            .is_none()
    );
    assert!(f.repo.get_blob(&old.record.sha256).await.unwrap().is_none());
}

/// A thumbnail is recorded only with its media: the writer holds the media's row until it
/// commits (PostgreSQL has no foreign key to do it). The other writer here plays a purge
/// that has deleted the media and not committed yet; the thumbnail's insert waits for it
/// and then finds the media gone. Looking without the lock, it saw the media still there
/// and recorded a thumbnail of a media that no longer exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thumbnail_of_a_media_deleted_meanwhile_is_not_recorded() {
    let db = TestDatabase::postgres().await;
    let f = Fixture::on(&db).await;
    let media = f.media("img", "@alice:example.org", b"image").await;
    f.insert(&media).await;
    let thumb = f.crop_thumbnail(&media.record.key, b"thumb").await;
    let mut other = OtherWriter::begin(&db).await;
    sqlx::query("DELETE FROM media WHERE origin = 'example.org' AND media_id = 'img'")
        .execute(&mut other.conn)
        .await
        .unwrap();

    let recording = {
        let (repo, store, id) = (f.repo.clone(), f.store.clone(), f.datastore_id);
        tokio::spawn(async move { repo.insert_thumbnail(&thumb, id, &*store).await })
    };
    // Commits once the thumbnail's insert waits for it.
    other
        .deadlock_with(&db, || recording.is_finished(), async |_| {})
        .await;

    assert_eq!(
        recording.await.unwrap().unwrap(),
        InsertOutcome::MediaMissing
    );
    assert!(
        f.repo
            .thumbnails_of(&media.record.key)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A batch met a media as recorded (its insert did nothing), then a deletion removed the
/// row before the batch could hold it: the batch is tried again and records the media.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_media_deleted_before_a_batch_holds_it_is_recorded_again() {
    let db = TestDatabase::postgres().await;
    let f = Fixture::on(&db).await;
    let media = f.media("img", "@alice:example.org", b"image").await;
    f.insert(&media).await;
    let fresh = f.media("new", "@alice:example.org", b"fresh").await;
    // Holds the recorded media's row, as a deletion does before it deletes it.
    let mut other = OtherWriter::begin(&db).await;
    sqlx::query("SELECT 1 FROM media WHERE origin = 'example.org' AND media_id = 'img' FOR UPDATE")
        .execute(&mut other.conn)
        .await
        .unwrap();

    let recording = f.spawn_batch(vec![media.clone(), fresh.clone()]);
    // Deletes the media and commits once the batch waits to hold its row.
    other
        .deadlock_with(
            &db,
            || recording.is_finished(),
            async |conn| {
                sqlx::query("DELETE FROM media WHERE origin = 'example.org' AND media_id = 'img'")
                    .execute(conn)
                    .await
                    .unwrap();
            },
        )
        .await;

    let outcomes = recording.await.unwrap().unwrap();
    let outcomes: Vec<&InsertOutcome> = outcomes.iter().map(|o| &o.media).collect();
    assert_eq!(
        outcomes,
        [&InsertOutcome::Inserted, &InsertOutcome::Inserted]
    );
    for new in [&media, &fresh] {
        let recorded = f.repo.get_media(&new.record.key).await.unwrap();
        assert_eq!(recorded.as_ref(), Some(&new.record));
    }
}

/// Quarantining media locks every media with their bytes, so two runs over shared bytes
/// lock rows in orders of their own. The other writer here holds the second media's
/// row and then waits for the first one's, which the quarantine (waiting for the second)
/// holds: PostgreSQL aborts the quarantine, which is tried again and quarantines both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantine_aborted_to_break_a_deadlock_is_tried_again() {
    let db = TestDatabase::postgres().await;
    let f = Fixture::on(&db).await;
    let first = f.media("first", "@alice:example.org", b"first bytes").await;
    let second = f
        .media("second", "@alice:example.org", b"second bytes")
        .await;
    for media in [&first, &second] {
        assert_eq!(f.insert(media).await, InsertOutcome::Inserted);
    }
    let lock_bytes_of = |media: &NewMedia| {
        sqlx::query("UPDATE media SET purpose = purpose WHERE sha256 = $1")
            .bind(media.record.sha256.as_str().to_owned())
    };
    let mut other = OtherWriter::begin(&db).await;
    lock_bytes_of(&second)
        .execute(&mut other.conn)
        .await
        .unwrap();

    let keys = vec![first.record.key.clone(), second.record.key.clone()];
    let quarantining = {
        let repo = f.repo.clone();
        tokio::spawn(async move {
            let action = QuarantineAction::Quarantine { by: None };
            repo.set_quarantined_batch(&keys, action).await
        })
    };
    // Once the quarantine, having changed the first media, waits for the second, the
    // other writer locks the first: PostgreSQL aborts the quarantine.
    other
        .deadlock_with(
            &db,
            || quarantining.is_finished(),
            async |conn| {
                lock_bytes_of(&first).execute(conn).await.unwrap();
            },
        )
        .await;

    let report = quarantining.await.unwrap().unwrap();
    assert_eq!(
        report.changed,
        vec![first.record.key.clone(), second.record.key.clone()]
    );
}

#[tokio::test]
async fn a_blob_whose_object_is_missing_is_never_recorded() {
    on_both(|f| async move {
        let missing = NewBlob {
            sha256: media_core::hashing::sha256_of(b"never stored"),
            size_bytes: 12,
            datastore_id: f.datastore_id,
        };
        let err = f.repo.insert_blob(&missing, &*f.store).await.unwrap_err();
        assert!(matches!(err, DbError::BlobMissing { .. }), "{err}");
        assert_eq!(f.repo.get_blob(&missing.sha256).await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn a_batch_whose_bytes_are_missing_records_nothing() {
    on_both(|f| async move {
        let good = f.media("good", "@alice:example.org", b"stored").await;
        let mut ghost = f.media("ghost", "@alice:example.org", b"x").await;
        ghost.record.sha256 = media_core::hashing::sha256_of(b"never put");
        let err = f
            .repo
            .insert_media_batch(&[good.clone(), ghost.clone()], &*f.store)
            .await
            .unwrap_err();
        assert!(matches!(err, DbError::BlobMissing { .. }), "{err}");
        for m in [&good, &ghost] {
            assert!(
                f.repo.get_media(&m.record.key).await.unwrap().is_none(),
                "{}",
                f.label
            );
            assert!(f.repo.get_blob(&m.record.sha256).await.unwrap().is_none());
        }
    })
    .await;
}

#[tokio::test]
async fn media_inserts_are_idempotent_and_never_overwrite() {
    on_both(|f| async move {
        let media = f.media("abc", "@alice:example.org", b"original").await;
        assert_eq!(f.insert(&media).await, InsertOutcome::Inserted);
        assert_eq!(f.insert(&media).await, InsertOutcome::AlreadyPresent);

        let mut other = f.media("abc", "@alice:example.org", b"different").await;
        other.record.upload_name = Some("evil.bin".into());
        assert_eq!(
            f.insert(&other).await,
            InsertOutcome::Conflict {
                existing_sha256: media.record.sha256.clone()
            }
        );
        let stored = f.repo.get_media(&media.record.key).await.unwrap().unwrap();
        assert_eq!(stored, media.record, "{}", f.label);
        // The conflicting bytes got a blob row (they are in the store) but no reference.
        assert_eq!(
            f.repo
                .blob_reference_count(&other.record.sha256)
                .await
                .unwrap(),
            0
        );
    })
    .await;
}

#[tokio::test]
async fn recorded_media_are_found_among_a_page_of_ids_whatever_their_order() {
    on_both(recorded_media_are_found_among).await;
    let db = TestDatabase::postgres_in_language_order().await;
    let fixture = Fixture::on(&db).await;
    let repo = fixture.repo.clone();
    recorded_media_are_found_among(fixture).await;
    repo.close().await;
}

/// The body of [`recorded_media_are_found_among_a_page_of_ids_whatever_their_order`].
async fn recorded_media_are_found_among(f: Fixture) {
    // IDs whose bytewise order and a language's collation differ (case, `_`).
    let mut digests = std::collections::BTreeMap::new();
    for id in ["a1", "B2", "c3", "_d4", "E5", "zz9"] {
        let media = f.media(id, "@alice:example.org", id.as_bytes()).await;
        f.insert(&media).await;
        digests.insert(id.to_owned(), media.record.sha256);
    }
    // The same ID at another origin is not ours.
    f.insert(&f.media("c3", "@bob:other.org", b"other c3").await)
        .await;
    let origin = "example.org".parse().unwrap();
    let found = f
        .repo
        .existing_media_digests(&origin, &["c3", "a1", "B2", "nothere"])
        .await
        .unwrap();
    let found: std::collections::BTreeMap<String, Sha256Hex> = found.into_iter().collect();
    digests.retain(|id, _| ["B2", "a1", "c3"].contains(&id.as_str()));
    assert_eq!(found, digests, "{}", f.label);

    // A range holding far more recorded media than IDs asked: every one asked is
    // still found.
    let mut batch = Vec::new();
    for n in 0..300 {
        let id = format!("p{n:03}");
        batch.push(f.media(&id, "@alice:example.org", id.as_bytes()).await);
    }
    f.repo.insert_media_batch(&batch, &*f.store).await.unwrap();
    let found = f
        .repo
        .existing_media_digests(&origin, &["p299", "p000", "p150x"])
        .await
        .unwrap();
    let mut found: Vec<&str> = found.keys().map(String::as_str).collect();
    found.sort_unstable();
    assert_eq!(found, ["p000", "p299"], "{}", f.label);
}

#[tokio::test]
async fn every_media_field_round_trips() {
    on_both(|f| async move {
        let mut media = f.media("full", "@bob:example.org:8448", b"x").await;
        media.record.last_access_ts = Some(1_700_000_123_456);
        media.record.quarantined = true;
        media.record.quarantined_by = Some("@admin:example.org".into());
        media.record.purpose = Purpose::Pinned;
        f.insert(&media).await;
        let mut remote = f.media("remote1", "@x:remote.example", b"y").await;
        remote.record.uploader = None;
        remote.record.upload_name = None;
        remote.record.content_type = None;
        remote.record.imported_from = None;
        f.insert(&remote).await;
        for m in [&media, &remote] {
            let got = f.repo.get_media(&m.record.key).await.unwrap();
            assert_eq!(got.as_ref(), Some(&m.record), "{}", f.label);
        }
        assert!(
            f.repo
                .get_media(&key("remote.example", "nope"))
                .await
                .unwrap()
                .is_none()
        );
    })
    .await;
}

#[tokio::test]
async fn thumbnails_need_their_media_and_are_idempotent() {
    on_both(|f| async move {
        let media = f.media("img", "@alice:example.org", b"image").await;
        f.insert(&media).await;
        let thumb = f.crop_thumbnail(&media.record.key, b"thumb").await;
        let insert = |t: ThumbnailRecord| {
            let f = &f;
            async move {
                f.repo
                    .insert_thumbnail(&t, f.datastore_id, &*f.store)
                    .await
                    .unwrap()
            }
        };
        assert_eq!(insert(thumb.clone()).await, InsertOutcome::Inserted);
        assert_eq!(insert(thumb.clone()).await, InsertOutcome::AlreadyPresent);
        let scaled = ThumbnailRecord {
            method: ThumbnailMethod::Scale,
            ..thumb.clone()
        };
        assert_eq!(insert(scaled).await, InsertOutcome::Inserted);
        let orphan = ThumbnailRecord {
            media: key("example.org", "missing"),
            ..thumb.clone()
        };
        assert_eq!(
            insert(orphan).await,
            InsertOutcome::MediaMissing,
            "{}",
            f.label
        );
        assert_eq!(f.repo.blob_reference_count(&thumb.sha256).await.unwrap(), 2);
    })
    .await;
}

#[tokio::test]
async fn media_stream_by_uploader_and_origin_page_through_everything() {
    on_both(|f| async move {
        // More than two pages of alice's media across two origins' worth of IDs, plus
        // other users and origins that must not appear.
        let mut batch = Vec::new();
        for i in 0..1_203 {
            batch.push(
                f.media(&format!("a{i:05}"), "@alice:example.org", b"a")
                    .await,
            );
        }
        for i in 0..7 {
            batch.push(f.media(&format!("b{i}"), "@bob:example.org", b"b").await);
            batch.push(
                f.media(&format!("c{i}"), "@carol:other.example", b"c")
                    .await,
            );
        }
        f.repo.insert_media_batch(&batch, &*f.store).await.unwrap();

        let alice: UserId = "@alice:example.org".parse().unwrap();
        let got: Vec<MediaRecord> = f
            .repo
            .media_by_uploader(&alice)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(got.len(), 1_203, "{}", f.label);
        assert_eq!(f.repo.count_media_by_uploader(&alice).await.unwrap(), 1_203);
        assert!(got.windows(2).all(|w| w[0].key < w[1].key));
        assert!(got.iter().all(|m| m.uploader.as_ref() == Some(&alice)));

        let origin = "example.org".parse().unwrap();
        let got: Vec<MediaRecord> = f.repo.media_by_origin(&origin).try_collect().await.unwrap();
        assert_eq!(got.len(), 1_210);
        assert_eq!(f.repo.count_media_by_origin(&origin).await.unwrap(), 1_210);
        assert!(got.iter().all(|m| m.key.origin == origin));
        let other = "other.example".parse().unwrap();
        assert_eq!(
            f.repo
                .media_by_origin(&other)
                .try_collect::<Vec<_>>()
                .await
                .unwrap()
                .len(),
            7
        );
    })
    .await;
}

#[tokio::test]
async fn quarantine_propagates_to_same_bytes_except_pinned() {
    on_both(|f| async move {
        let a = f.media("a", "@alice:example.org", b"bad").await;
        let b = f.media("b", "@bob:example.org", b"bad").await;
        let mut pinned = f.media("p", "@carol:example.org", b"bad").await;
        pinned.record.purpose = Purpose::Pinned;
        let other = f.media("o", "@alice:example.org", b"fine").await;
        for m in [&a, &b, &pinned, &other] {
            f.insert(m).await;
        }
        let report = f
            .repo
            .set_quarantined(
                &a.record.key,
                QuarantineAction::Quarantine {
                    by: Some("@admin:example.org"),
                },
            )
            .await
            .unwrap();
        assert_eq!(
            report.changed,
            vec![a.record.key.clone(), b.record.key.clone()]
        );
        assert_eq!(report.skipped_pinned, 1);
        let get = |k: &MediaKey| {
            let (repo, k) = (f.repo.clone(), k.clone());
            async move { repo.get_media(&k).await.unwrap().unwrap() }
        };
        let b_now = get(&b.record.key).await;
        assert!(b_now.quarantined);
        assert_eq!(b_now.quarantined_by.as_deref(), Some("@admin:example.org"));
        assert!(!get(&pinned.record.key).await.quarantined);
        assert!(!get(&other.record.key).await.quarantined);
        assert!(f.repo.is_hash_quarantined(&a.record.sha256).await.unwrap());
        assert!(
            !f.repo
                .is_hash_quarantined(&other.record.sha256)
                .await
                .unwrap()
        );

        // Again: nothing changes, nothing is appended.
        let again = f
            .repo
            .set_quarantined(&b.record.key, QuarantineAction::Quarantine { by: None })
            .await
            .unwrap();
        assert!(again.changed.is_empty());

        let lifted = f
            .repo
            .set_quarantined(&b.record.key, QuarantineAction::Lift)
            .await
            .unwrap();
        assert_eq!(lifted.changed.len(), 2);
        assert!(!f.repo.is_hash_quarantined(&a.record.sha256).await.unwrap());
        assert_eq!(get(&a.record.key).await.quarantined_by, None);

        let page = f.repo.quarantine_changes(0, 100).await.unwrap();
        let summary: Vec<(String, bool)> = page
            .changes
            .iter()
            .map(|c| (c.media.media_id.to_string(), c.quarantined))
            .collect();
        assert_eq!(
            summary,
            [("a", true), ("b", true), ("a", false), ("b", false)]
                .map(|(m, q)| (m.to_string(), q))
                .to_vec(),
            "{}",
            f.label
        );
        assert_eq!(page.next_batch, page.changes.last().unwrap().stream_id);
        let rest = f
            .repo
            .quarantine_changes(page.next_batch, 100)
            .await
            .unwrap();
        assert!(rest.changes.is_empty());
        assert_eq!(rest.next_batch, page.next_batch);

        let err = f
            .repo
            .set_quarantined(
                &key("example.org", "ghost"),
                QuarantineAction::Quarantine { by: None },
            )
            .await
            .unwrap_err();
        assert!(matches!(err, DbError::NotFound { .. }));
    })
    .await;
}

#[tokio::test]
async fn quarantine_changes_page_at_most_one_hundred() {
    on_both(|f| async move {
        let mut batch = Vec::new();
        for i in 0..130 {
            batch.push(
                f.media(&format!("m{i:03}"), "@alice:example.org", b"dup")
                    .await,
            );
        }
        f.repo.insert_media_batch(&batch, &*f.store).await.unwrap();
        let report = f
            .repo
            .set_quarantined(
                &batch[0].record.key,
                QuarantineAction::Quarantine { by: None },
            )
            .await
            .unwrap();
        assert_eq!(report.changed.len(), 130);
        let first = f.repo.quarantine_changes(0, 1_000).await.unwrap();
        assert_eq!(first.changes.len(), 100, "{}", f.label);
        let second = f
            .repo
            .quarantine_changes(first.next_batch, 1_000)
            .await
            .unwrap();
        assert_eq!(second.changes.len(), 30);
        let mut seen: Vec<_> = first
            .changes
            .iter()
            .chain(&second.changes)
            .map(|c| c.media.clone())
            .collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 130);
    })
    .await;
}

#[tokio::test]
async fn deleting_media_frees_exactly_the_unreferenced_blobs() {
    on_both(|f| async move {
        let shared1 = f.media("s1", "@alice:example.org", b"shared").await;
        let shared2 = f.media("s2", "@bob:example.org", b"shared").await;
        let alone = f.media("alone", "@alice:example.org", b"alone").await;
        let keep = f.media("keep", "@alice:example.org", b"keep").await;
        for m in [&shared1, &shared2, &alone, &keep] {
            f.insert(m).await;
        }
        // A thumbnail of `alone` whose bytes are also the content of `keep`.
        let thumb = ThumbnailRecord {
            media: alone.record.key.clone(),
            width: 1,
            height: 1,
            method: ThumbnailMethod::Scale,
            content_type: "image/png".into(),
            animated: false,
            sha256: keep.record.sha256.clone(),
            size_bytes: keep.record.size_bytes,
            created_ts: 0,
        };
        f.repo
            .insert_thumbnail(&thumb, f.datastore_id, &*f.store)
            .await
            .unwrap();

        let deleted = f
            .repo
            .delete_media(&[
                shared1.record.key.clone(),
                alone.record.key.clone(),
                key("example.org", "ghost"),
            ])
            .await
            .unwrap();
        assert_eq!(
            deleted.media,
            vec![shared1.record.key.clone(), alone.record.key.clone()]
        );
        assert_eq!(deleted.not_found, vec![key("example.org", "ghost")]);
        assert_eq!(deleted.thumbnails, 1);
        let enqueued: Vec<&Sha256Hex> = deleted.enqueued.iter().map(|(_, p)| &p.sha256).collect();
        assert_eq!(enqueued, vec![&alone.record.sha256], "{}", f.label);

        // Nothing was removed from the datastore yet: rows first, objects after commit.
        assert!(
            f.store
                .exists(&deleted.enqueued[0].1.location)
                .await
                .unwrap()
        );
        let report = f
            .repo
            .drain_pending_deletions(f.datastore_id, &*f.store)
            .await
            .unwrap();
        assert_eq!(report.deleted, 1);
        assert!(
            !f.store
                .exists(&deleted.enqueued[0].1.location)
                .await
                .unwrap()
        );
        for survivor in [&shared2, &keep] {
            let blob = f
                .repo
                .get_blob(&survivor.record.sha256)
                .await
                .unwrap()
                .unwrap();
            assert!(f.store.exists(&blob.location).await.unwrap());
            assert!(
                f.repo
                    .get_media(&survivor.record.key)
                    .await
                    .unwrap()
                    .is_some()
            );
        }
        // Draining again does nothing.
        let again = f
            .repo
            .drain_pending_deletions(f.datastore_id, &*f.store)
            .await
            .unwrap();
        assert_eq!(again, Default::default());
    })
    .await;
}

#[tokio::test]
async fn a_crash_between_commit_and_drain_is_finished_by_the_next_run() {
    for db in TestDatabase::both().await {
        let store = Arc::new(MemoryDatastore::new());
        let repo = connect(&db.url).await.unwrap();
        let ds = repo.register_datastore("memory://crash").await.unwrap();
        let f = Fixture {
            repo: repo.clone(),
            store: store.clone(),
            datastore_id: ds,
            label: db.label,
        };
        let media = f.media("gone", "@alice:example.org", b"to be purged").await;
        f.insert(&media).await;
        let deleted = repo
            .delete_media(std::slice::from_ref(&media.record.key))
            .await
            .unwrap();
        // "Crash": the process ends before draining.
        repo.close().await;

        let repo = connect(&db.url).await.unwrap();
        assert!(repo.get_media(&media.record.key).await.unwrap().is_none());
        assert!(store.exists(&deleted.enqueued[0].1.location).await.unwrap());
        let queued = repo.pending_deletions(ds, 10).await.unwrap();
        assert_eq!(queued.len(), 1, "{}", f.label);
        let report = repo.drain_pending_deletions(ds, &*store).await.unwrap();
        assert_eq!(report.deleted, 1);
        let left: Vec<_> = store.list().try_collect().await.unwrap();
        assert!(left.is_empty());
        repo.close().await;
    }
}

#[tokio::test]
async fn reimporting_bytes_before_the_drain_cancels_their_deletion() {
    on_both(|f| async move {
        let media = f.media("first", "@alice:example.org", b"comes back").await;
        f.insert(&media).await;
        let deleted = f
            .repo
            .delete_media(std::slice::from_ref(&media.record.key))
            .await
            .unwrap();
        assert_eq!(deleted.enqueued.len(), 1);
        // The same bytes arrive again under another media before the drain ran.
        let again = f.media("second", "@bob:example.org", b"comes back").await;
        assert_eq!(f.insert(&again).await, InsertOutcome::Inserted);
        let report = f
            .repo
            .drain_pending_deletions(f.datastore_id, &*f.store)
            .await
            .unwrap();
        assert_eq!(report.deleted, 0, "{}", f.label);
        assert!(
            f.store
                .exists(&deleted.enqueued[0].1.location)
                .await
                .unwrap()
        );
    })
    .await;
}

#[tokio::test]
async fn a_drain_longer_than_one_claim_takes_every_queued_deletion_once() {
    on_both(|f| async move {
        // More than two claims' worth (a claim takes 500), in several delete batches.
        let mut keys = Vec::new();
        for n in 0..1_200 {
            let media = f
                .media(
                    &format!("m{n}"),
                    "@alice:example.org",
                    format!("bytes {n}").as_bytes(),
                )
                .await;
            f.insert(&media).await;
            keys.push(media.record.key.clone());
        }
        for chunk in keys.chunks(400) {
            f.repo.delete_media(chunk).await.unwrap();
        }
        // Bytes queued in the second claim's range are recorded again before the drain
        // (which takes their deletion out of the queue).
        let back = f.media("back", "@bob:example.org", b"bytes 700").await;
        assert_eq!(f.insert(&back).await, InsertOutcome::Inserted);

        let report = f
            .repo
            .drain_pending_deletions(f.datastore_id, &*f.store)
            .await
            .unwrap();
        assert_eq!((report.deleted, report.kept), (1_199, 0), "{}", f.label);
        let left: Vec<_> = f.store.list().try_collect().await.unwrap();
        let blob = f.repo.get_blob(&back.record.sha256).await.unwrap().unwrap();
        assert_eq!(left, vec![blob.location], "{}", f.label);
        assert!(
            f.repo
                .pending_deletions(f.datastore_id, 10)
                .await
                .unwrap()
                .is_empty(),
            "{}",
            f.label
        );
    })
    .await;
}

#[tokio::test]
async fn a_media_and_its_thumbnails_are_recorded_together() {
    on_both(|f| async move {
        let mut media = f
            .media("withthumbs", "@alice:example.org", b"picture")
            .await;
        media.record.quarantined = true;
        media.record.quarantined_by = Some("@admin:example.org".into());
        for (i, bytes) in [&b"small"[..], b"large"].into_iter().enumerate() {
            let put = f.store.put_bytes(bytes).await.unwrap();
            media.thumbnails.push(ThumbnailRecord {
                media: media.record.key.clone(),
                width: 32 << i,
                height: 32 << i,
                method: ThumbnailMethod::Crop,
                content_type: "image/jpeg".into(),
                animated: false,
                sha256: put.blob.sha256,
                size_bytes: put.blob.size,
                created_ts: 5,
            });
        }
        let outcome = f.repo.insert_media(&media, &*f.store).await.unwrap();
        assert_eq!(outcome.media, InsertOutcome::Inserted);
        assert_eq!(
            outcome.thumbnails,
            vec![InsertOutcome::Inserted; 2],
            "{}",
            f.label
        );
        let again = f.repo.insert_media(&media, &*f.store).await.unwrap();
        assert_eq!(again.media, InsertOutcome::AlreadyPresent);
        assert_eq!(again.thumbnails, vec![InsertOutcome::AlreadyPresent; 2]);
        // A thumbnail made since is added to the media recorded already.
        let mut later = media.clone();
        later
            .thumbnails
            .push(f.crop_thumbnail(&media.record.key, b"made since").await);
        let outcome = f.repo.insert_media(&later, &*f.store).await.unwrap();
        assert_eq!(outcome.media, InsertOutcome::AlreadyPresent);
        assert_eq!(
            outcome.thumbnails,
            [
                InsertOutcome::AlreadyPresent,
                InsertOutcome::AlreadyPresent,
                InsertOutcome::Inserted
            ],
            "{}",
            f.label
        );
        assert_eq!(
            f.repo.thumbnails_of(&media.record.key).await.unwrap().len(),
            3
        );
        // Imported already quarantined: the change stream says so, once.
        let changes = f.repo.quarantine_changes(0, 100).await.unwrap().changes;
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].media, media.record.key);
        assert!(changes[0].quarantined);
        // A conflicting media brings none of its thumbnails in.
        let mut conflicting = f.media("withthumbs", "@alice:example.org", b"other").await;
        conflicting.thumbnails = media.thumbnails.clone();
        conflicting.thumbnails[0].width = 999;
        let outcome = f.repo.insert_media(&conflicting, &*f.store).await.unwrap();
        assert!(matches!(outcome.media, InsertOutcome::Conflict { .. }));
        assert!(outcome.thumbnails.is_empty());
    })
    .await;
}

#[tokio::test]
async fn pinning_reports_new_existing_and_missing_media() {
    on_both(|f| async move {
        let a = f.media("a", "@alice:example.org", b"a").await;
        f.insert(&a).await;
        let keys = [a.record.key.clone(), key("example.org", "missing")];
        let first = f.repo.pin_media(&keys).await.unwrap();
        assert_eq!(
            (first.pinned, first.already_pinned, first.missing),
            (1, 0, 1),
            "{}",
            f.label
        );
        let second = f.repo.pin_media(&keys).await.unwrap();
        assert_eq!(
            (second.pinned, second.already_pinned, second.missing),
            (0, 1, 1)
        );
        let stored = f.repo.get_media(&a.record.key).await.unwrap().unwrap();
        assert_eq!(stored.purpose, Purpose::Pinned);
    })
    .await;
}

/// A page of blobs comes back exactly as its rows hold them (sizes and times beyond
/// what a double holds exactly, in digest order whatever the insertion order), and a row
/// whose location is no blob key, however it is spelled, is named in the error instead of
/// being returned.
#[tokio::test]
async fn a_page_of_blobs_is_read_exactly_and_a_bad_row_is_named() {
    for db in TestDatabase::both().await {
        let repo = connect(&db.url).await.unwrap();
        let ds = repo.register_datastore("memory://pages").await.unwrap();
        let mut c = media_tests::any_connection(&db.url).await;
        let insert = "INSERT INTO blobs (sha256, size_bytes, datastore_id, location, created_ts) \
                      VALUES ($1, $2, $3, $4, $5)";
        let rows = [
            ("ee", (1i64 << 53) + 1, i64::MAX - 1),
            ("00", 0, -1),
            ("7a", 4096, 1_700_000_000_123),
        ];
        for (byte, size, created_ts) in rows {
            let sha256 = Sha256Hex::try_from(byte.repeat(32).as_str()).unwrap();
            sqlx::query(insert)
                .bind(sha256.as_str())
                .bind(size)
                .bind(ds.0)
                .bind(BlobKey::for_hash(&sha256).as_str())
                .bind(created_ts)
                .execute(&mut c)
                .await
                .unwrap();
        }
        let page = repo.blobs_in(ds, None, None, None, 10).await.unwrap();
        let read: Vec<_> = page
            .iter()
            .map(|b| (&b.sha256.as_str()[..2], b.size_bytes, b.created_ts))
            .collect();
        let expected = [
            ("00", 0u64, -1i64),
            ("7a", 4096, 1_700_000_000_123),
            ("ee", (1u64 << 53) + 1, i64::MAX - 1),
        ];
        assert_eq!(read, expected, "{}", db.label);
        assert!(
            page.iter()
                .all(|b| b.datastore_id == ds && b.location == BlobKey::for_hash(&b.sha256))
        );
        let hostile = "ff/ff/\"quoted\"\n\u{e9}\\";
        sqlx::query(insert)
            .bind("f".repeat(64))
            .bind(1i64)
            .bind(ds.0)
            .bind(hostile)
            .bind(0i64)
            .execute(&mut c)
            .await
            .unwrap();
        let refused = repo.blobs_in(ds, None, None, None, 10).await.unwrap_err();
        let DbError::InvalidRow { table, reason, .. } = &refused else {
            panic!("{}: {refused}", db.label);
        };
        assert_eq!(*table, "blobs");
        assert!(reason.contains(&format!("{hostile:?}")), "{reason}");
        repo.close().await;
    }
}

#[tokio::test]
async fn the_drain_keeps_an_object_whose_blob_was_recorded_again() {
    for db in TestDatabase::both().await {
        let repo = connect(&db.url).await.unwrap();
        let store = Arc::new(MemoryDatastore::new());
        let ds = repo.register_datastore("memory://race").await.unwrap();
        let f = Fixture {
            repo: repo.clone(),
            store: store.clone(),
            datastore_id: ds,
            label: db.label,
        };
        let media = f.media("raced", "@alice:example.org", b"raced bytes").await;
        f.insert(&media).await;
        let deleted = repo
            .delete_media(std::slice::from_ref(&media.record.key))
            .await
            .unwrap();
        // What a concurrent writer that recorded the blob again (without cancelling the
        // queued deletion) would leave behind.
        let insert = "INSERT INTO blobs (sha256, size_bytes, datastore_id, location, created_ts) \
                      VALUES ($1, 11, $2, $3, 0)";
        let (sha, location) = (
            media.record.sha256.as_str(),
            deleted.enqueued[0].1.location.as_str(),
        );
        let mut c = media_tests::any_connection(&db.url).await;
        sqlx::query(insert)
            .bind(sha)
            .bind(ds.0)
            .bind(location)
            .execute(&mut c)
            .await
            .unwrap();
        let report = repo.drain_pending_deletions(ds, &*store).await.unwrap();
        assert_eq!(report.kept, 1, "{}", db.label);
        assert_eq!(report.deleted, 0);
        assert!(store.exists(&deleted.enqueued[0].1.location).await.unwrap());
        assert!(repo.pending_deletions(ds, 10).await.unwrap().is_empty());
        repo.close().await;
    }
}

#[tokio::test]
async fn tasks_record_runs() {
    on_both(|f| async move {
        let id = f
            .repo
            .start_task(TaskKind::ImportSynapse, &serde_json::json!({"workers": 4}))
            .await
            .unwrap();
        f.repo
            .finish_task(id, r#"{"media":3}"#, None)
            .await
            .unwrap();
        let second = f
            .repo
            .start_task(TaskKind::GdprExport, &serde_json::json!({}))
            .await
            .unwrap();
        assert!(second > id, "{}", f.label);
    })
    .await;
}

// Bad input: clear errors, never a panic.

#[tokio::test]
async fn malformed_and_unreachable_databases_are_clear_errors() {
    let err = connect("mysql://localhost/db")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sqlite://") && err.contains("postgres://"),
        "{err}"
    );

    let err = connect("sqlite:///nonexistent-folder/sub/repo.db")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nonexistent-folder") && err.contains("folder"),
        "{err}"
    );

    // A port nothing listens on (bound, then released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://user:secret@127.0.0.1:{port}/db");
    let err = connect(&url).await.unwrap_err().to_string();
    assert!(err.contains(&format!("127.0.0.1:{port}")), "{err}");
    assert!(!err.contains("secret"), "password leaked: {err}");
    assert!(err.contains("PostgreSQL runs there"), "{err}");
}

#[tokio::test]
async fn a_database_from_a_newer_version_is_refused() {
    for db in TestDatabase::both().await {
        let repo = connect(&db.url).await.unwrap();
        repo.close().await;
        // A newer build applied a migration this build does not know.
        add_future_migration(&db.url).await;
        let err = connect(&db.url).await.unwrap_err();
        assert!(
            matches!(
                err,
                DbError::NewerSchema {
                    version: 99_999,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("upgrade this tool"));
    }
}

async fn add_future_migration(url: &str) {
    let insert = "INSERT INTO _sqlx_migrations (version, description, installed_on, success, \
                  checksum, execution_time) VALUES (99999, 'future', CURRENT_TIMESTAMP, TRUE, \
                  $1, 0)";
    let mut conn = media_tests::any_connection(url).await;
    sqlx::query(insert)
        .bind(vec![0u8])
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_size_above_i64_max_is_refused_naming_the_item_not_wrapped() {
    on_both(|f| async move {
        let good = f.media("good", "@alice:example.org", b"stored").await;
        let mut huge = f.media("huge", "@alice:example.org", b"huge").await;
        huge.record.size_bytes = u64::MAX;
        let err = f
            .repo
            .insert_media_batch(&[good.clone(), huge.clone()], &*f.store)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DbError::SizeOutOfRange { item, .. } if item == "mxc://example.org/huge"),
            "{}: {err}",
            f.label
        );
        assert!(err.to_string().contains("18446744073709551615"), "{err}");
        for m in [&good, &huge] {
            assert!(f.repo.get_media(&m.record.key).await.unwrap().is_none());
            assert!(f.repo.get_blob(&m.record.sha256).await.unwrap().is_none());
        }

        // A thumbnail whose bytes are an existing blob: its row must not get size -1.
        assert_eq!(f.insert(&good).await, InsertOutcome::Inserted);
        let thumbnail = ThumbnailRecord {
            media: good.record.key.clone(),
            width: 32,
            height: 32,
            method: ThumbnailMethod::Scale,
            content_type: "image/png".into(),
            animated: false,
            sha256: good.record.sha256.clone(),
            size_bytes: i64::MAX as u64 + 1,
            created_ts: 5,
        };
        let err = f
            .repo
            .insert_thumbnail(&thumbnail, f.datastore_id, &*f.store)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, DbError::SizeOutOfRange { item, .. } if item.contains("mxc://example.org/good")),
            "{}: {err}",
            f.label
        );
        assert!(f.repo.thumbnails_of(&good.record.key).await.unwrap().is_empty());

        let blob = NewBlob {
            sha256: good.record.sha256.clone(),
            size_bytes: u64::MAX,
            datastore_id: f.datastore_id,
        };
        let err = f.repo.insert_blob(&blob, &*f.store).await.unwrap_err();
        assert!(matches!(err, DbError::SizeOutOfRange { .. }), "{err}");
    })
    .await;
}

/// Issue 13: the drain deletes objects with no transaction open. A drain whose deletes
/// fail leaves its claimed entries queued; until a drain acknowledges them, the bytes
/// cannot be recorded again (the object may be gone); the next drain finishes the job.
#[tokio::test]
async fn a_drain_stopped_by_a_failing_datastore_is_finished_by_the_next_run() {
    on_both(|f| async move {
        let store = FaultyDatastore::new(f.store.clone(), u64::MAX);
        store.fail_deletes(true);
        let media = f
            .media("doomed", "@alice:example.org", b"doomed bytes")
            .await;
        f.insert(&media).await;
        let deleted = f
            .repo
            .delete_media(std::slice::from_ref(&media.record.key))
            .await
            .unwrap();
        let location = &deleted.enqueued[0].1.location;

        let err = f
            .repo
            .drain_pending_deletions(f.datastore_id, &store)
            .await
            .unwrap_err();
        assert!(matches!(err, DbError::Store(_)), "{err}");
        assert!(f.store.exists(location).await.unwrap(), "{}", f.label);
        let queued = f.repo.pending_deletions(f.datastore_id, 10).await.unwrap();
        assert_eq!(queued.len(), 1, "{}", f.label);

        // The claimed deletion may have removed the object: recording the same bytes
        // again is refused, and nothing is committed.
        let again = f.media("again", "@bob:example.org", b"doomed bytes").await;
        let err = f.repo.insert_media(&again, &store).await.unwrap_err();
        assert!(matches!(err, DbError::BlobMissing { .. }), "{err}");
        assert!(f.repo.get_media(&again.record.key).await.unwrap().is_none());
        assert!(
            f.repo
                .get_blob(&again.record.sha256)
                .await
                .unwrap()
                .is_none()
        );

        store.fail_deletes(false);
        let report = f
            .repo
            .drain_pending_deletions(f.datastore_id, &store)
            .await
            .unwrap();
        assert_eq!(report.deleted, 1, "{}", f.label);
        assert!(!f.store.exists(location).await.unwrap());
        assert!(
            f.repo
                .pending_deletions(f.datastore_id, 10)
                .await
                .unwrap()
                .is_empty()
        );
        // Once acknowledged, the bytes are put again and recorded.
        let again = f.media("again", "@bob:example.org", b"doomed bytes").await;
        assert_eq!(f.insert(&again).await, InsertOutcome::Inserted);
        assert!(f.store.exists(location).await.unwrap());
    })
    .await;
}

/// A batch checks, before its transaction, the blobs that have no row: bytes whose
/// blob was deleted and drained are found missing, not trusted from an old row.
#[tokio::test]
async fn bytes_drained_before_a_batch_are_checked_and_refused() {
    on_both(|f| async move {
        let first = f.media("first", "@alice:example.org", b"shared late").await;
        f.insert(&first).await;
        let second = f.media("second", "@bob:example.org", b"shared late").await;
        // The blob's only media is deleted and its object drained before the batch.
        f.repo
            .delete_media(std::slice::from_ref(&first.record.key))
            .await
            .unwrap();
        f.repo
            .drain_pending_deletions(f.datastore_id, &*f.store)
            .await
            .unwrap();
        let err = f.repo.insert_media(&second, &*f.store).await.unwrap_err();
        assert!(matches!(err, DbError::BlobMissing { .. }), "{err}");
        assert!(
            f.repo
                .get_media(&second.record.key)
                .await
                .unwrap()
                .is_none()
        );
    })
    .await;
}

/// How [`DrainAfterCheck`] acknowledges the objects it deleted.
#[derive(Debug, Clone, Copy)]
enum Acknowledged {
    /// In a drain's next claim transaction (`drain_pending_deletions`).
    InTheNextClaim,
    /// On its own, outside a transaction (as a purge acknowledges its last batch).
    OnItsOwn,
}

/// A datastore that, the first time it is asked for the sizes of some objects, answers
/// from the wrapped one and then, before the answer arrives, deletes the queued objects
/// there and acknowledges them: a drain that deletes an object between a writer's check
/// of that object and the writer's transaction.
#[derive(Debug)]
struct DrainAfterCheck {
    inner: Arc<MemoryDatastore>,
    repo: Repository,
    datastore_id: DatastoreId,
    acknowledged: Acknowledged,
    armed: AtomicBool,
}

impl DrainAfterCheck {
    fn new(f: &Fixture, acknowledged: Acknowledged) -> Self {
        Self {
            inner: f.store.clone(),
            repo: f.repo.clone(),
            datastore_id: f.datastore_id,
            acknowledged,
            armed: AtomicBool::new(true),
        }
    }

    /// Deletes the queued objects and acknowledges them; returns how many went.
    async fn drain(&self) -> u64 {
        match self.acknowledged {
            Acknowledged::InTheNextClaim => {
                let report = self
                    .repo
                    .drain_pending_deletions(self.datastore_id, &*self.inner);
                report.await.unwrap().deleted
            }
            Acknowledged::OnItsOwn => {
                let queued = self.repo.pending_deletions(self.datastore_id, 10);
                let deleted = delete_claimed(&*self.inner, &queued.await.unwrap()).await;
                self.repo
                    .acknowledge_deletions(&deleted.gone)
                    .await
                    .unwrap();
                deleted.report.deleted
            }
        }
    }
}

#[async_trait]
impl Datastore for DrainAfterCheck {
    fn uri(&self) -> String {
        self.inner.uri()
    }

    async fn put(
        &self,
        data: &mut (dyn AsyncRead + Send + Unpin),
        options: &PutOptions,
    ) -> Result<Put, StoreError> {
        self.inner.put(data, options).await
    }

    async fn open(
        &self,
        key: &BlobKey,
        range: Option<ByteRange>,
    ) -> Result<BlobPayload, StoreError> {
        self.inner.open(key, range).await
    }

    async fn size(&self, key: &BlobKey) -> Result<Option<u64>, StoreError> {
        self.inner.size(key).await
    }

    async fn sizes(&self, keys: &[BlobKey]) -> Result<Vec<Option<u64>>, StoreError> {
        let seen = self.inner.sizes(keys).await?;
        if !keys.is_empty() && self.armed.swap(false, Ordering::SeqCst) {
            assert_eq!(self.drain().await, 1, "the object was there to delete");
        }
        Ok(seen)
    }

    async fn delete(&self, key: &BlobKey) -> Result<DeleteStatus, StoreError> {
        self.inner.delete(key).await
    }

    fn list(&self) -> BoxStream<'_, Result<BlobKey, StoreError>> {
        self.inner.list()
    }
}

/// Fails unless `result` is the refusal of a write whose object is not in the datastore.
fn assert_blob_missing<T: std::fmt::Debug>(result: Result<T, DbError>, label: &str) {
    assert!(
        matches!(result, Err(DbError::BlobMissing { .. })),
        "{label}: {result:?}"
    );
}

/// DESIGN.md invariant 4, "never a row pointing at a missing object": bytes whose blob
/// was deleted and queued are recorded again while a drain deletes their object and
/// acknowledges it, after the writer saw the object and before its transaction. The
/// queue entry is gone by then; the deletion epoch shows the drain, and the writer
/// checks again and refuses, where it recorded a row for an object that was gone.
#[tokio::test]
async fn bytes_drained_between_the_check_and_the_transaction_are_checked_again() {
    on_both(|f| async move {
        let bytes = b"drained meanwhile";
        let first = f.media("first", "@alice:example.org", bytes).await;
        f.insert(&first).await;
        let location = BlobKey::for_hash(&first.record.sha256);
        f.repo
            .delete_media(std::slice::from_ref(&first.record.key))
            .await
            .unwrap();

        // A batch of media (the import's path).
        let second = f.media("second", "@bob:example.org", bytes).await;
        let raced = f
            .repo
            .insert_media(
                &second,
                &DrainAfterCheck::new(&f, Acknowledged::InTheNextClaim),
            )
            .await;
        assert_blob_missing(raced, f.label);
        assert!(!f.store.exists(&location).await.unwrap(), "{}", f.label);
        assert!(
            f.repo
                .get_media(&second.record.key)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            f.repo
                .get_blob(&second.record.sha256)
                .await
                .unwrap()
                .is_none()
        );
        // Put again, the bytes are recorded, object and row.
        let second = f.media("second", "@bob:example.org", bytes).await;
        assert_eq!(
            f.insert(&second).await,
            InsertOutcome::Inserted,
            "{}",
            f.label
        );
        assert!(f.store.exists(&location).await.unwrap(), "{}", f.label);

        // One blob on its own (`insert_blob`, the same step as a thumbnail's), the
        // deletion acknowledged outside a transaction.
        f.repo
            .delete_media(std::slice::from_ref(&second.record.key))
            .await
            .unwrap();
        f.store.put_bytes(bytes).await.unwrap();
        let blob = NewBlob {
            sha256: second.record.sha256.clone(),
            size_bytes: second.record.size_bytes,
            datastore_id: f.datastore_id,
        };
        let drain = DrainAfterCheck::new(&f, Acknowledged::OnItsOwn);
        let raced = f.repo.insert_blob(&blob, &drain).await;
        assert_blob_missing(raced, f.label);
        assert!(f.repo.get_blob(&blob.sha256).await.unwrap().is_none());
    })
    .await;
}

/// A second datastore registered next to the fixture's, for tests of transfers.
async fn second_datastore(f: &Fixture) -> (Arc<MemoryDatastore>, DatastoreId) {
    let id = f.repo.register_datastore("memory://second").await.unwrap();
    (Arc::new(MemoryDatastore::new()), id)
}

/// Issue 14: a drain kept a queued object whenever any blob row had its digest. After a
/// transfer, the source object of a moved blob is queued while the row points at the
/// copy: it must be deleted, and a queued copy of bytes whose row points elsewhere (a
/// transfer's write-ahead entry) too.
#[tokio::test]
async fn a_drain_deletes_queued_objects_unless_a_row_points_at_that_very_object() {
    on_both(|f| async move {
        let media = f
            .media("moved", "@alice:example.org", b"moving bytes")
            .await;
        f.insert(&media).await;
        let blob = f
            .repo
            .get_blob(&media.record.sha256)
            .await
            .unwrap()
            .unwrap();
        let (second, second_id) = second_datastore(&f).await;

        // A copy queued (write-ahead) and made in the second datastore, never switched.
        let guards = f
            .repo
            .queue_copies(second_id, std::slice::from_ref(&blob))
            .await
            .unwrap();
        assert_eq!(guards.len(), 1);
        second.put_bytes(b"moving bytes").await.unwrap();
        let report = f
            .repo
            .drain_pending_deletions(second_id, &*second)
            .await
            .unwrap();
        assert_eq!((report.deleted, report.kept), (1, 0), "{}", f.label);
        assert!(!second.exists(&blob.location).await.unwrap());
        assert!(f.store.exists(&blob.location).await.unwrap(), "{}", f.label);

        // The object the row points at is kept (its queued deletion dropped).
        let guards = f
            .repo
            .queue_copies(f.datastore_id, std::slice::from_ref(&blob))
            .await
            .unwrap();
        assert_eq!(guards.len(), 1);
        let report = f
            .repo
            .drain_pending_deletions(f.datastore_id, &*f.store)
            .await
            .unwrap();
        assert_eq!((report.deleted, report.kept), (0, 1), "{}", f.label);
        assert!(f.store.exists(&blob.location).await.unwrap());
    })
    .await;
}

/// Issue 14: recording bytes cancelled every queued deletion of their digest, in any
/// datastore. Recording them in one datastore must leave the queued deletion of the same
/// bytes in another (else that object stays forever, unreferenced), through both ways a
/// blob is recorded (a media batch, a lone blob).
#[tokio::test]
async fn recording_bytes_in_one_datastore_leaves_their_queued_deletion_in_another() {
    on_both(|f| async move {
        let (second, second_id) = second_datastore(&f).await;
        for (round, bytes) in [(0, &b"batch bytes"[..]), (1, &b"lone bytes"[..])] {
            let media = f
                .media(&format!("first{round}"), "@alice:example.org", bytes)
                .await;
            f.insert(&media).await;
            let deleted = f
                .repo
                .delete_media(std::slice::from_ref(&media.record.key))
                .await
                .unwrap();
            assert_eq!(deleted.enqueued.len(), 1);
            second.put_bytes(bytes).await.unwrap();
            if round == 0 {
                let mut again = f
                    .media(&format!("again{round}"), "@bob:example.org", bytes)
                    .await;
                again.datastore_id = second_id;
                let outcome = f.repo.insert_media(&again, &*second).await.unwrap();
                assert_eq!(outcome.media, InsertOutcome::Inserted, "{}", f.label);
            } else {
                let blob = NewBlob {
                    sha256: media.record.sha256.clone(),
                    size_bytes: media.record.size_bytes,
                    datastore_id: second_id,
                };
                let outcome = f.repo.insert_blob(&blob, &*second).await.unwrap();
                assert_eq!(outcome, BlobOutcome::Inserted, "{}", f.label);
            }
            let report = f
                .repo
                .drain_pending_deletions(f.datastore_id, &*f.store)
                .await
                .unwrap();
            assert_eq!(
                (report.deleted, report.kept),
                (1, 0),
                "{} round {round}",
                f.label
            );
            let location = &deleted.enqueued[0].1.location;
            assert!(!f.store.exists(location).await.unwrap());
            assert!(second.exists(location).await.unwrap(), "{}", f.label);
        }
    })
    .await;
}

/// The switch of a transfer: the row moves to the copy, the copy's write-ahead entry is
/// dropped and the source object queued; a drain of each side then leaves exactly one
/// object, in the destination.
#[tokio::test]
async fn a_switched_blob_points_at_its_copy_and_its_source_is_drained() {
    on_both(|f| async move {
        let media = f.media("moving", "@alice:example.org", b"switch me").await;
        f.insert(&media).await;
        let blob = f
            .repo
            .get_blob(&media.record.sha256)
            .await
            .unwrap()
            .unwrap();
        let (second, second_id) = second_datastore(&f).await;
        let guards = f
            .repo
            .queue_copies(second_id, std::slice::from_ref(&blob))
            .await
            .unwrap();
        second.put_bytes(b"switch me").await.unwrap();
        let moves = [BlobMove {
            blob: blob.clone(),
            to: second_id,
            location: blob.location.clone(),
            guard: guards[0],
        }];
        let outcomes = f.repo.switch_blobs(&moves).await.unwrap();
        assert_eq!(outcomes, [MoveOutcome::Switched], "{}", f.label);
        let now = f.repo.get_blob(&blob.sha256).await.unwrap().unwrap();
        assert_eq!(now.datastore_id, second_id);
        assert_eq!(now.created_ts, blob.created_ts);
        assert!(
            f.repo
                .pending_deletions(second_id, 10)
                .await
                .unwrap()
                .is_empty()
        );
        f.repo
            .drain_pending_deletions(second_id, &*second)
            .await
            .unwrap();
        let report = f
            .repo
            .drain_pending_deletions(f.datastore_id, &*f.store)
            .await
            .unwrap();
        assert_eq!(report.deleted, 1, "{}", f.label);
        assert!(!f.store.exists(&blob.location).await.unwrap());
        assert!(second.exists(&blob.location).await.unwrap());
        // Switching again finds the row moved: nothing changes.
        let outcomes = f.repo.switch_blobs(&moves).await.unwrap();
        assert_eq!(outcomes, [MoveOutcome::Vanished], "{}", f.label);
    })
    .await;
}

/// A blob deleted while its copy was made is not switched: its copy stays queued and a
/// drain removes it.
#[tokio::test]
async fn a_blob_deleted_during_its_transfer_leaves_its_copy_to_the_drain() {
    on_both(|f| async move {
        let media = f
            .media("deleted", "@alice:example.org", b"short-lived")
            .await;
        f.insert(&media).await;
        let blob = f
            .repo
            .get_blob(&media.record.sha256)
            .await
            .unwrap()
            .unwrap();
        let (second, second_id) = second_datastore(&f).await;
        let guards = f
            .repo
            .queue_copies(second_id, std::slice::from_ref(&blob))
            .await
            .unwrap();
        second.put_bytes(b"short-lived").await.unwrap();
        f.repo
            .delete_media(std::slice::from_ref(&media.record.key))
            .await
            .unwrap();
        let moves = [BlobMove {
            blob: blob.clone(),
            to: second_id,
            location: blob.location.clone(),
            guard: guards[0],
        }];
        let outcomes = f.repo.switch_blobs(&moves).await.unwrap();
        assert_eq!(outcomes, [MoveOutcome::Vanished], "{}", f.label);
        assert!(f.repo.get_blob(&blob.sha256).await.unwrap().is_none());
        for (id, store) in [(second_id, &second), (f.datastore_id, &f.store)] {
            let report = f.repo.drain_pending_deletions(id, &**store).await.unwrap();
            assert_eq!(report.deleted, 1, "{}", f.label);
            assert!(!store.exists(&blob.location).await.unwrap());
        }
    })
    .await;
}

/// A copy whose write-ahead entry a drain claimed (it may be deleting the copy right
/// now) is not switched to: the row stays on the source, and the source stays.
#[tokio::test]
async fn a_copy_claimed_by_a_drain_is_not_switched_to() {
    on_both(|f| async move {
        let media = f
            .media("claimed", "@alice:example.org", b"claimed copy")
            .await;
        f.insert(&media).await;
        let blob = f
            .repo
            .get_blob(&media.record.sha256)
            .await
            .unwrap()
            .unwrap();
        let (second, second_id) = second_datastore(&f).await;
        let guards = f
            .repo
            .queue_copies(second_id, std::slice::from_ref(&blob))
            .await
            .unwrap();
        second.put_bytes(b"claimed copy").await.unwrap();
        let faulty = FaultyDatastore::new(second.clone(), u64::MAX);
        faulty.fail_deletes(true);
        f.repo
            .drain_pending_deletions(second_id, &faulty)
            .await
            .unwrap_err();
        let moves = [BlobMove {
            blob: blob.clone(),
            to: second_id,
            location: blob.location.clone(),
            guard: guards[0],
        }];
        let outcomes = f.repo.switch_blobs(&moves).await.unwrap();
        assert_eq!(outcomes, [MoveOutcome::CopyClaimed], "{}", f.label);
        assert_eq!(
            f.repo.get_blob(&blob.sha256).await.unwrap(),
            Some(blob.clone())
        );
        assert!(
            f.repo
                .pending_deletions(f.datastore_id, 10)
                .await
                .unwrap()
                .is_empty()
        );
        f.repo
            .drain_pending_deletions(second_id, &*second)
            .await
            .unwrap();
        assert!(!second.exists(&blob.location).await.unwrap());
        assert!(f.store.exists(&blob.location).await.unwrap(), "{}", f.label);
    })
    .await;
}

/// Tallies and pages of a datastore's blobs agree, and `created_before` keeps only the
/// older ones.
#[tokio::test]
async fn a_datastores_blobs_are_tallied_and_paged_alike() {
    on_both(|f| async move {
        for i in 0..5u8 {
            let media = f
                .media(&format!("m{i}"), "@alice:example.org", &[i; 10])
                .await;
            f.insert(&media).await;
        }
        let tally = f.repo.tally_blobs(f.datastore_id, None).await.unwrap();
        assert_eq!((tally.blobs, tally.bytes), (5, 50), "{}", f.label);
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = f
                .repo
                .blobs_in(f.datastore_id, None, after.as_ref(), None, 2)
                .await
                .unwrap();
            let Some(last) = page.last() else { break };
            after = Some(last.sha256.clone());
            seen.extend(page.into_iter().map(|b| b.sha256));
        }
        assert_eq!(seen.len(), 5);
        assert!(seen.windows(2).all(|w| w[0] < w[1]));
        let none = f.repo.tally_blobs(f.datastore_id, Some(0)).await.unwrap();
        assert_eq!(none, BlobTally::default());
        let usage = f.repo.datastore_usage().await.unwrap();
        assert_eq!(usage.len(), 1);
        assert_eq!((usage[0].media, usage[0].blobs, usage[0].bytes), (5, 5, 50));
    })
    .await;
}
