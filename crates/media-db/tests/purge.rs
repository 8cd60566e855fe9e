//! Purges, attributes and the task log listing, each test body run on SQLite AND
//! PostgreSQL: a dry run's tally of each page is what deleting that page does, whatever
//! the pages the references of one blob are spread over.

use media_core::datastore::DatastoreExt;
use media_core::records::{MediaKey, MediaRecord, Purpose};
use media_db::{
    BlobIndex, DbError, DeletionQueue, MediaAttributes, MediaIndex, NewMedia, Purge,
    PurgeSelection, PurgeTally, Quarantine, QuarantineAction, Repository, TaskFilter, TaskKind,
    TaskLog, connect,
};
use media_store::MemoryDatastore;
use media_tests::{OtherWriter, TestDatabase};

/// Records a media of `origin` (uploaded by `uploader`, none for a remote one) holding
/// `bytes`.
async fn record(
    repo: &Repository,
    store: &MemoryDatastore,
    datastore_id: media_db::DatastoreId,
    mxc: &str,
    uploader: Option<&str>,
    bytes: &[u8],
) -> MediaKey {
    try_record(repo, store, datastore_id, mxc, uploader, bytes)
        .await
        .unwrap()
}

/// [`record`], returning the repository's refusal.
async fn try_record(
    repo: &Repository,
    store: &MemoryDatastore,
    datastore_id: media_db::DatastoreId,
    mxc: &str,
    uploader: Option<&str>,
    bytes: &[u8],
) -> Result<MediaKey, DbError> {
    let media = new_media(store, datastore_id, mxc, uploader, bytes).await;
    repo.insert_media(&media, store).await?;
    Ok(media.record.key)
}

/// A media of `mxc` holding `bytes` (put in `store`), to be recorded.
async fn new_media(
    store: &MemoryDatastore,
    datastore_id: media_db::DatastoreId,
    mxc: &str,
    uploader: Option<&str>,
    bytes: &[u8],
) -> NewMedia {
    let put = store.put_bytes(bytes).await.unwrap();
    NewMedia {
        record: MediaRecord {
            uploader: uploader.map(|u| u.parse().unwrap()),
            ..MediaRecord::new(
                mxc.parse::<media_core::ids::MxcUri>().unwrap().into(),
                put.blob.sha256,
                put.blob.size,
                1_700_000_000_000,
            )
        },
        thumbnails: Vec::new(),
        datastore_id,
    }
}

/// Walks `selection` in pages of one: the dry run's tallies, then the real run's.
async fn tallies(
    repo: &Repository,
    selection: &PurgeSelection,
) -> (Vec<PurgeTally>, Vec<PurgeTally>) {
    let ours = ["ours.test".parse().unwrap()];
    let mut plan = Vec::new();
    let mut after = None;
    while let Some(page) =
        Some(repo.purge_page(selection, after.as_ref(), 1).await.unwrap()).filter(|p| !p.is_empty())
    {
        plan.push(repo.tally_purge(selection, &page, &ours).await.unwrap());
        after = Some(page[0].key.clone());
    }
    let mut done = Vec::new();
    let mut after = None;
    let mut claimed: Vec<i64> = Vec::new();
    while let Some(page) =
        Some(repo.purge_page(selection, after.as_ref(), 1).await.unwrap()).filter(|p| !p.is_empty())
    {
        let batch = repo.purge_batch(&page, &ours, &claimed).await.unwrap();
        claimed = batch.claimed.iter().map(|(id, _)| *id).collect();
        done.push(batch.tally);
        after = Some(page[0].key.clone());
    }
    repo.acknowledge_deletions(&claimed).await.unwrap();
    (plan, done)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_purge_batch_claims_what_it_queues_and_a_later_batch_acknowledges_it() {
    for db in TestDatabase::both().await {
        let label = db.label;
        let repo = connect(&db.url).await.unwrap();
        let store = MemoryDatastore::new();
        let ds = repo.register_datastore("memory://test").await.unwrap();
        let alice = Some("@alice:ours.test");
        record(&repo, &store, ds, "mxc://ours.test/a", alice, b"one").await;
        record(&repo, &store, ds, "mxc://ours.test/b", alice, b"two").await;
        let selection = PurgeSelection::User {
            user: "@alice:ours.test".parse().unwrap(),
            before: None,
        };
        let ours = ["ours.test".parse().unwrap()];
        let queued = |repo: &Repository| {
            let repo = repo.clone();
            async move {
                let rows = repo.pending_deletions(ds, 10).await.unwrap();
                rows.into_iter().map(|(id, _)| id).collect::<Vec<_>>()
            }
        };

        let page = repo.purge_page(&selection, None, 1).await.unwrap();
        let first = repo.purge_batch(&page, &ours, &[]).await.unwrap();
        assert_eq!(first.claimed.len(), 1, "{label}");
        let (first_id, freed) = first.claimed[0].clone();
        assert_eq!(
            freed.sha256,
            store.put_bytes(b"one").await.unwrap().blob.sha256
        );
        assert_eq!(queued(&repo).await, vec![first_id], "{label}");
        // Claimed, its object may be gone at any moment: recording the bytes again is
        // refused until the deletion is acknowledged.
        let again = try_record(&repo, &store, ds, "mxc://ours.test/c", alice, b"one").await;
        assert!(
            matches!(again, Err(DbError::BlobMissing { .. })),
            "{label}: {again:?}"
        );

        let page = repo
            .purge_page(&selection, Some(&page[0].key), 1)
            .await
            .unwrap();
        let second = repo.purge_batch(&page, &ours, &[first_id]).await.unwrap();
        let second_id = second.claimed[0].0;
        assert_eq!(queued(&repo).await, vec![second_id], "{label}");
        // Dequeued (here by the next batch; it could be another run's drain), the first
        // deletion is no longer due: its bytes may be recorded again now.
        assert_eq!(
            repo.still_due(&first.claimed).await.unwrap(),
            vec![],
            "{label}"
        );
        assert_eq!(
            repo.still_due(&second.claimed).await.unwrap(),
            second.claimed,
            "{label}"
        );
        repo.acknowledge_deletions(&[second_id]).await.unwrap();
        assert_eq!(queued(&repo).await, Vec::<i64>::new(), "{label}");
        // Acknowledged, the bytes may be recorded again.
        try_record(&repo, &store, ds, "mxc://ours.test/c", alice, b"one")
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dry_run_tallies_each_page_as_its_deletion_frees_it() {
    for db in TestDatabase::both().await {
        let repo = connect(&db.url).await.unwrap();
        let store = MemoryDatastore::new();
        let ds = repo.register_datastore("memory://test").await.unwrap();
        // a and c share bytes across pages; b is alone; the remote r (no uploader) shares
        // d's bytes and is not selected, so they are never freed.
        let a = record(
            &repo,
            &store,
            ds,
            "mxc://ours.test/a",
            Some("@alice:ours.test"),
            b"shared",
        )
        .await;
        record(
            &repo,
            &store,
            ds,
            "mxc://ours.test/b",
            Some("@alice:ours.test"),
            b"alone",
        )
        .await;
        record(
            &repo,
            &store,
            ds,
            "mxc://ours.test/c",
            Some("@alice:ours.test"),
            b"shared",
        )
        .await;
        record(
            &repo,
            &store,
            ds,
            "mxc://ours.test/d",
            Some("@alice:ours.test"),
            b"kept",
        )
        .await;
        let r = record(&repo, &store, ds, "mxc://remote.test/r", None, b"kept").await;
        let selection = PurgeSelection::User {
            user: "@alice:ours.test".parse().unwrap(),
            before: None,
        };
        assert_eq!(
            repo.count_purge(&selection).await.unwrap(),
            4,
            "{}",
            db.label
        );
        let (plan, done) = tallies(&repo, &selection).await;
        assert_eq!(plan, done, "{}", db.label);
        let freed: Vec<u64> = done.iter().map(|t| t.blobs_freed).collect();
        assert_eq!(freed, [0, 1, 1, 0], "{}", db.label);
        assert_eq!(done.iter().map(|t| t.reserved).sum::<u64>(), 4);
        assert!(repo.is_reserved(&a).await.unwrap());
        assert!(repo.get_media(&r).await.unwrap().is_some(), "{}", db.label);
        assert_eq!(repo.count_purge(&selection).await.unwrap(), 0);
        repo.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn purged_quarantined_bytes_stay_blocked_and_pinned_media_keep_theirs() {
    for db in TestDatabase::both().await {
        let repo = connect(&db.url).await.unwrap();
        let store = MemoryDatastore::new();
        let ds = repo.register_datastore("memory://test").await.unwrap();
        let bad = record(
            &repo,
            &store,
            ds,
            "mxc://ours.test/bad",
            Some("@eve:ours.test"),
            b"abuse",
        )
        .await;
        let copy = record(&repo, &store, ds, "mxc://remote.test/copy", None, b"abuse").await;
        let pinned = record(
            &repo,
            &store,
            ds,
            "mxc://ours.test/pin",
            Some("@eve:ours.test"),
            b"abuse",
        )
        .await;
        assert_eq!(
            repo.set_purpose(&pinned, Purpose::Pinned).await.unwrap(),
            Purpose::None
        );
        let report = repo
            .set_quarantined(&bad, QuarantineAction::Quarantine { by: None })
            .await
            .unwrap();
        assert_eq!(report.changed, [bad.clone(), copy.clone()], "{}", db.label);
        assert_eq!(report.pinned, std::slice::from_ref(&pinned));
        let sha256 = repo.get_media(&bad).await.unwrap().unwrap().sha256;

        let (plan, done) = tallies(&repo, &PurgeSelection::Quarantined).await;
        assert_eq!(plan, done, "{}", db.label);
        assert_eq!(done.iter().map(|t| t.media).sum::<u64>(), 2);
        // The pinned media still holds the bytes: nothing is freed, nothing dangles.
        assert_eq!(done.iter().map(|t| t.blobs_freed).sum::<u64>(), 0);
        assert!(repo.get_media(&pinned).await.unwrap().is_some());
        assert!(
            repo.is_hash_quarantined(&sha256).await.unwrap(),
            "{}",
            db.label
        );

        assert!(matches!(
            repo.set_purpose(&bad, Purpose::Pinned).await,
            Err(DbError::NotFound { .. })
        ));
        repo.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_task_log_lists_runs_and_the_unfinished_ones() {
    for db in TestDatabase::both().await {
        let repo = connect(&db.url).await.unwrap();
        let done = repo
            .start_task(TaskKind::Purge, &serde_json::json!({"purge": "remote"}))
            .await
            .unwrap();
        repo.finish_task(done, r#"{"media":3}"#, None)
            .await
            .unwrap();
        let running = repo
            .start_task(TaskKind::Quarantine, &serde_json::json!({}))
            .await
            .unwrap();
        let all = repo.tasks(TaskFilter::All).await.unwrap();
        assert_eq!(all.len(), 2, "{}", db.label);
        assert_eq!(all[0].kind, "media_admin purge");
        assert_eq!(all[0].counters.as_deref(), Some(r#"{"media":3}"#));
        let unfinished = repo.tasks(TaskFilter::Unfinished).await.unwrap();
        assert_eq!(unfinished.len(), 1);
        assert_eq!(unfinished[0].id, running);
        assert_eq!(repo.task(running).await.unwrap().unwrap().finished_ts, None);
        assert!(repo.task(media_db::TaskId(999)).await.unwrap().is_none());
        repo.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_room_selects_the_media_recorded_in_it_and_recording_twice_adds_nothing() {
    use futures::TryStreamExt;
    use media_db::{RoomIndex, RoomMedia};
    for db in TestDatabase::both().await {
        let label = db.label;
        let repo = connect(&db.url).await.unwrap();
        let store = MemoryDatastore::new();
        let ds = repo.register_datastore("memory://test").await.unwrap();
        let a = record(
            &repo,
            &store,
            ds,
            "mxc://ours.test/a",
            Some("@u:ours.test"),
            b"a",
        )
        .await;
        let b = record(
            &repo,
            &store,
            ds,
            "mxc://ours.test/b",
            Some("@u:ours.test"),
            b"b",
        )
        .await;
        let r = record(&repo, &store, ds, "mxc://remote.test/r", None, b"r").await;
        let pinned = record(
            &repo,
            &store,
            ds,
            "mxc://ours.test/p",
            Some("@u:ours.test"),
            b"p",
        )
        .await;
        repo.pin_media(std::slice::from_ref(&pinned)).await.unwrap();
        let room: media_core::ids::RoomId = "!room:ours.test".parse().unwrap();
        let other: media_core::ids::RoomId = "!other:ours.test".parse().unwrap();
        let not_held: MediaKey = "mxc://remote.test/gone"
            .parse::<media_core::ids::MxcUri>()
            .unwrap()
            .into();
        let links: Vec<RoomMedia> = [
            (&room, &a),
            (&room, &r),
            (&room, &pinned),
            (&room, &not_held),
            (&other, &b),
            (&other, &a),
        ]
        .into_iter()
        .map(|(room, media)| RoomMedia {
            room: room.clone(),
            media: media.clone(),
        })
        .collect();
        assert_eq!(repo.record_room_media(&links).await.unwrap(), 6, "{label}");
        assert_eq!(repo.record_room_media(&links).await.unwrap(), 0, "{label}");
        assert_eq!(
            repo.count_room_references(&room).await.unwrap(),
            4,
            "{label}"
        );
        assert_eq!(repo.count_media_in_room(&room).await.unwrap(), 3, "{label}");
        let held: Vec<MediaKey> = repo
            .media_in_room(&room)
            .map_ok(|m| m.key)
            .try_collect()
            .await
            .unwrap();
        assert_eq!(held, [a.clone(), pinned.clone(), r.clone()], "{label}");

        // The bulk form spares the pinned media; `before` cuts by creation time.
        let selection = PurgeSelection::Room {
            room: room.clone(),
            before: None,
        };
        assert_eq!(repo.count_purge(&selection).await.unwrap(), 2, "{label}");
        let early = PurgeSelection::Room {
            room: room.clone(),
            before: Some(1_700_000_000_000),
        };
        assert_eq!(repo.count_purge(&early).await.unwrap(), 0, "{label}");
        let (plan, done) = tallies(&repo, &selection).await;
        assert_eq!(plan, done, "{label}");
        assert!(repo.get_media(&a).await.unwrap().is_none(), "{label}");
        assert!(repo.get_media(&r).await.unwrap().is_none(), "{label}");
        assert!(repo.get_media(&b).await.unwrap().is_some(), "{label}");
        assert!(repo.get_media(&pinned).await.unwrap().is_some(), "{label}");
        // The record of where the media were posted stays.
        assert_eq!(
            repo.count_room_references(&room).await.unwrap(),
            4,
            "{label}"
        );
        repo.close().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_page_of_thousands_of_media_named_one_by_one_is_tallied_and_purged() {
    for db in TestDatabase::both().await {
        let repo = connect(&db.url).await.unwrap();
        let store = MemoryDatastore::new();
        let ds = repo.register_datastore("memory://test").await.unwrap();
        let mut batch = Vec::new();
        for n in 0..1_200 {
            let mxc = format!("mxc://remote.test/m{n:04}");
            let bytes = format!("bytes {n}");
            batch.push(new_media(&store, ds, &mxc, None, bytes.as_bytes()).await);
        }
        repo.insert_media_batch(&batch, &store).await.unwrap();
        // More keys than SQLite's expression depth allows as a chain of ORs.
        let named: Vec<MediaKey> = batch[..1_100]
            .iter()
            .map(|m| m.record.key.clone())
            .collect();
        let selection = PurgeSelection::Media(named);
        assert_eq!(
            repo.count_purge(&selection).await.unwrap(),
            1_100,
            "{}",
            db.label
        );
        let page = repo.purge_page(&selection, None, 5_000).await.unwrap();
        assert_eq!(page.len(), 1_100, "{}", db.label);
        let ours = ["ours.test".parse().unwrap()];
        let plan = repo.tally_purge(&selection, &page, &ours).await.unwrap();
        assert_eq!(
            (plan.media, plan.blobs_freed),
            (1_100, 1_100),
            "{}",
            db.label
        );
        let done = repo.purge_batch(&page, &ours, &[]).await.unwrap();
        assert_eq!(done.tally, plan, "{}", db.label);
        assert_eq!(
            repo.count_purge(&selection).await.unwrap(),
            0,
            "{}",
            db.label
        );
        let kept = &batch[1_100].record.key;
        assert!(
            repo.get_media(kept).await.unwrap().is_some(),
            "{}",
            db.label
        );
        repo.close().await;
    }
}

/// A purge batch that PostgreSQL aborts to break a deadlock is tried again. Another
/// writer records a new media with the bytes being purged (holding their blob row, as
/// our writers lock it), the purge deletes the old media and then waits to delete the blob,
/// and the writer then waits for the purged media's row: the purge waited first, so it
/// is the one aborted. Tried again once the writer has committed, it purges the media
/// and keeps the bytes, which the new media now uses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_batch_aborted_to_break_a_deadlock_is_tried_again() {
    let db = TestDatabase::postgres().await;
    let (repo, old, sha256, mut writer) = a_writer_using_the_bytes_of_old(&db).await;

    let purging = spawn_purge(&repo, &old).await;
    // Once the purge, having deleted the old media, waits for the blob row the writer
    // holds, the writer waits for the old media's row: PostgreSQL aborts the purge.
    let old_media = "UPDATE media SET purpose = purpose \
                     WHERE origin = 'ours.test' AND media_id = 'old'";
    writer
        .deadlock_with(
            &db,
            || purging.is_finished(),
            async |conn| {
                sqlx::query(old_media).execute(conn).await.unwrap();
            },
        )
        .await;

    let purged = purging.await.unwrap().unwrap();
    assert_eq!((purged.tally.media, purged.tally.blobs_freed), (1, 0));
    assert!(repo.get_media(&old).await.unwrap().is_none());
    assert_eq!(repo.blob_reference_count(&sha256).await.unwrap(), 1);
}

/// Records, in `writer`'s open transaction, a media `media_id` of ours.test holding the
/// recorded bytes `sha256`, as our writers do: the blob row locked first.
async fn refer_to_bytes(
    writer: &mut OtherWriter,
    sha256: &media_core::ids::Sha256Hex,
    media_id: &str,
) {
    let locked: Option<String> =
        sqlx::query_scalar("SELECT sha256 FROM blobs WHERE sha256 = $1 FOR KEY SHARE")
            .bind(sha256.as_str())
            .fetch_optional(&mut writer.conn)
            .await
            .unwrap();
    assert!(locked.is_some(), "the bytes are recorded");
    sqlx::query(
        "INSERT INTO media (origin, media_id, sha256, size_bytes, created_ts) \
         VALUES ('ours.test', $2, $1, 5, 0)",
    )
    .bind(sha256.as_str())
    .bind(media_id)
    .execute(&mut writer.conn)
    .await
    .unwrap();
}

/// A purge frees bytes only once the writers referencing them have committed: it locks
/// the blob rows it may free, waits for a writer recording a new media with the same
/// bytes, and then finds the new media and keeps the bytes. Checking the references
/// before the writer committed, it would delete the blob row under the new media.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_keeps_the_bytes_a_writer_is_recording_a_new_media_with() {
    let db = TestDatabase::postgres().await;
    let (repo, old, sha256, mut writer) = a_writer_using_the_bytes_of_old(&db).await;
    let purging = spawn_purge(&repo, &old).await;
    // Commits once the purge waits for it.
    writer
        .deadlock_with(&db, || purging.is_finished(), async |_| {})
        .await;

    let purged = purging.await.unwrap().unwrap();
    assert_eq!((purged.tally.media, purged.tally.blobs_freed), (1, 0));
    assert!(purged.claimed.is_empty());
    assert!(repo.get_media(&old).await.unwrap().is_none());
    assert!(repo.get_blob(&sha256).await.unwrap().is_some());
    assert_eq!(repo.blob_reference_count(&sha256).await.unwrap(), 1);
}

/// A purge deletes the thumbnails a writer added to a purged media meanwhile. The writer
/// holds the media's row (as our writers lock it) while it adds a thumbnail; the purge
/// deletes the media first, waiting for the writer, and then its thumbnails, the new one
/// included. Deleting the thumbnails first would leave the new one without its media.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_deletes_a_thumbnail_added_to_its_media_meanwhile() {
    let db = TestDatabase::postgres().await;
    let repo = connect(&db.url).await.unwrap();
    let store = MemoryDatastore::new();
    let ds = repo.register_datastore("memory://test").await.unwrap();
    let media = record(&repo, &store, ds, "mxc://ours.test/pic", None, b"picture").await;
    let other = record(&repo, &store, ds, "mxc://ours.test/other", None, b"thumb").await;
    let thumb = repo.get_media(&other).await.unwrap().unwrap().sha256;

    let mut writer = OtherWriter::begin(&db).await;
    sqlx::query("SELECT origin FROM media WHERE origin = $1 AND media_id = $2 FOR KEY SHARE")
        .bind(media.origin.as_str())
        .bind(media.media_id.as_str())
        .fetch_one(&mut writer.conn)
        .await
        .unwrap();
    sqlx::query("SELECT sha256 FROM blobs WHERE sha256 = $1 FOR KEY SHARE")
        .bind(thumb.as_str())
        .fetch_one(&mut writer.conn)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO thumbnails (origin, media_id, width, height, method, content_type, \
         sha256, size_bytes, created_ts) VALUES ($1, $2, 32, 32, 'crop', 'image/png', $3, 5, 0)",
    )
    .bind(media.origin.as_str())
    .bind(media.media_id.as_str())
    .bind(thumb.as_str())
    .execute(&mut writer.conn)
    .await
    .unwrap();
    let purging = spawn_purge(&repo, &media).await;
    // Commits once the purge waits for it.
    writer
        .deadlock_with(&db, || purging.is_finished(), async |_| {})
        .await;

    let purged = purging.await.unwrap().unwrap();
    assert_eq!((purged.tally.media, purged.tally.thumbnails), (1, 1));
    assert!(repo.thumbnails_of(&media).await.unwrap().is_empty());
    assert_eq!(repo.blob_reference_count(&thumb).await.unwrap(), 1);
}

/// A repository in `db` holding mxc://ours.test/old, and another writer recording
/// mxc://ours.test/new with the same bytes (whose digest is returned), not committed.
async fn a_writer_using_the_bytes_of_old(
    db: &TestDatabase,
) -> (
    Repository,
    MediaKey,
    media_core::ids::Sha256Hex,
    OtherWriter,
) {
    let repo = connect(&db.url).await.unwrap();
    let store = MemoryDatastore::new();
    let ds = repo.register_datastore("memory://test").await.unwrap();
    let old = record(&repo, &store, ds, "mxc://ours.test/old", None, b"bytes").await;
    let sha256 = store.put_bytes(b"bytes").await.unwrap().blob.sha256;
    let mut writer = OtherWriter::begin(db).await;
    refer_to_bytes(&mut writer, &sha256, "new").await;
    (repo, old, sha256, writer)
}

/// Starts purging the media `key` of ours.test, one batch, in a task of its own.
async fn spawn_purge(
    repo: &Repository,
    key: &MediaKey,
) -> tokio::task::JoinHandle<Result<media_db::PurgedBatch, DbError>> {
    let page = repo
        .purge_page(&PurgeSelection::Media(vec![key.clone()]), None, 10)
        .await
        .unwrap();
    let repo = repo.clone();
    tokio::spawn(async move {
        let ours = ["ours.test".parse().unwrap()];
        repo.purge_batch(&page, &ours, &[]).await
    })
}
