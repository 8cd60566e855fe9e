//! `purge media` with more named media than one SQL statement can bind: SQLite takes at
//! most 32,766 bound values, two per media key.

use std::sync::Arc;

use media_admin::purge::{DEFAULT_BATCH, PurgeOptions, PurgeTarget, purge};
use media_core::datastore::{BlobKey, DatastoreExt};
use media_core::ids::MxcUri;
use media_core::records::{MediaKey, MediaRecord};
use media_core::run::RunMode;
use media_db::{AttachOptions, MediaIndex, NewMedia};
use media_tests::TestDatabase;

fn key(mxc: &str) -> MediaKey {
    mxc.parse::<MxcUri>().unwrap().into()
}

/// Past what one statement could name (16,383 keys on SQLite).
const NAMED: usize = 17_000;

#[tokio::test(flavor = "multi_thread")]
async fn more_named_media_than_a_statement_can_bind_are_all_purged() {
    for db in TestDatabase::both().await {
        let dir = tempfile::tempdir().unwrap();
        let repo = media_db::connect(&db.url).await.unwrap();
        let store = media_store::open(dir.path().join("store").to_str().unwrap())
            .await
            .unwrap();
        let datastore_id = repo
            .attach_datastore(store.as_ref(), AttachOptions::WRITE)
            .await
            .unwrap()
            .unwrap();
        let mut media = Vec::new();
        for n in 0..NAMED + 10 {
            // The named media share a hundred objects; the others have their own.
            let bytes = match n < NAMED {
                true => format!("shared {}", n % 100),
                false => format!("kept {n}"),
            };
            let put = store.put_bytes(bytes.as_bytes()).await.unwrap();
            media.push(NewMedia {
                record: MediaRecord::new(
                    key(&format!("mxc://remote.test/m{n:05}")),
                    put.blob.sha256,
                    put.blob.size,
                    1_700_000_000_000,
                ),
                thumbnails: Vec::new(),
                datastore_id,
            });
        }
        for batch in media.chunks(1_000) {
            repo.insert_media_batch(batch, store.as_ref())
                .await
                .unwrap();
        }
        let (named, kept) = media.split_at(NAMED);
        let mut keys: Vec<MediaKey> = named.iter().map(|m| m.record.key.clone()).collect();
        keys.push(key("mxc://remote.test/never"));
        let mut options = PurgeOptions {
            target: PurgeTarget::Media(keys),
            local_servers: Vec::new(),
            mode: RunMode::DryRun,
            batch: DEFAULT_BATCH as usize,
        };
        let label = &db.label;
        let plan = purge(&repo, &options, Arc::default()).await.unwrap();
        assert_eq!(
            (plan.media, plan.blobs_freed),
            (NAMED as u64, 100),
            "{label}: the dry run's plan"
        );
        options.mode = RunMode::Apply;
        let report = purge(&repo, &options, Arc::default()).await.unwrap();
        assert_eq!(
            (report.media, report.blobs_freed, report.bytes_freed),
            (plan.media, plan.blobs_freed, plan.bytes_freed),
            "{label}: the dry run planned what the real run did"
        );
        assert_eq!(report.media, NAMED as u64, "{label}");
        assert_eq!(report.objects_deleted, 100, "{label}");
        assert_eq!(
            report.failures.count(),
            1,
            "{label}: the name never recorded"
        );
        for m in named.iter().step_by(997) {
            assert!(
                repo.get_media(&m.record.key).await.unwrap().is_none(),
                "{label}: {} purged",
                m.record.key
            );
            assert_eq!(
                store
                    .size(&BlobKey::for_hash(&m.record.sha256))
                    .await
                    .unwrap(),
                None,
                "{label}: its object deleted"
            );
        }
        for m in kept {
            assert!(
                repo.get_media(&m.record.key).await.unwrap().is_some(),
                "{label}: {} kept",
                m.record.key
            );
            assert!(
                store
                    .size(&BlobKey::for_hash(&m.record.sha256))
                    .await
                    .unwrap()
                    .is_some(),
                "{label}: its object kept"
            );
        }
        repo.close().await;
    }
}
