//! The transfer against a destination that breaks mid-run (a real folder behind
//! `FaultyDatastore`): what failed is listed, its source untouched, and the run stops
//! once the destination has refused too many writes in a row.

use std::sync::Arc;

use media_admin::transfer::{DESTINATION_FAILURES_BEFORE_STOP, Endpoints, transfer_between};
use media_admin::{TransferFailure, TransferOptions, Verify};
use media_core::datastore::{Datastore, DatastoreExt};
use media_core::run::RunMode;
use media_db::{AttachOptions, BlobIndex, NewBlob};
use media_store::faulty::FaultyDatastore;
use media_tests::TestDatabase;

#[tokio::test]
async fn a_destination_refusing_writes_stops_the_run_and_leaves_every_source_as_it_was() {
    for db in TestDatabase::both().await {
        let dir = tempfile::tempdir().unwrap();
        let repo = media_db::connect(&db.url).await.unwrap();
        let source = media_store::open(dir.path().join("source").to_str().unwrap())
            .await
            .unwrap();
        let from = repo
            .attach_datastore(source.as_ref(), AttachOptions::WRITE)
            .await
            .unwrap()
            .unwrap();
        let blobs = 40u8;
        for i in 0..blobs {
            let put = source.put_bytes(&[i; 100]).await.unwrap();
            let blob = NewBlob {
                sha256: put.blob.sha256,
                size_bytes: put.blob.size,
                datastore_id: from,
            };
            repo.insert_blob(&blob, source.as_ref()).await.unwrap();
        }
        let allowed = 3;
        let destination = Arc::new(
            FaultyDatastore::in_folder(dir.path().join("dest"), allowed)
                .await
                .unwrap(),
        );
        let options = TransferOptions {
            from: media_admin::DatastoreSelector::Id(from),
            from_uri: None,
            to: destination.uri(),
            before: None,
            mode: RunMode::Apply,
            workers: 4,
            verify: Verify::Hash,
        };
        let endpoints = Endpoints {
            from: options.from.resolve(&repo).await.unwrap(),
            source: source.clone(),
            destination: destination.clone(),
        };
        let report = transfer_between(&repo, &endpoints, &options, Default::default())
            .await
            .unwrap();
        assert_eq!(report.blobs_moved, allowed, "{}", db.label);
        assert!(report.stopped_early.is_some(), "{report}");
        let refused = report.failures.count_of(TransferFailure::DestinationFailed);
        assert!(
            refused >= u64::from(DESTINATION_FAILURES_BEFORE_STOP) && refused < u64::from(blobs),
            "{report}"
        );
        assert_eq!(
            report.strays_deleted, 0,
            "the refused copies wrote nothing, so there was no stray copy to delete: {report}"
        );
        // Every blob not moved is where it was, row and object; the destination holds
        // the moved ones only.
        let to = report.to.unwrap();
        let mut left = 0;
        for i in 0..blobs {
            let sha256 = media_core::hashing::sha256_of(&[i; 100]);
            let row = repo.get_blob(&sha256).await.unwrap().unwrap();
            let in_source = source.exists(&row.location).await.unwrap();
            let in_destination = destination.exists(&row.location).await.unwrap();
            if row.datastore_id == from {
                assert!(in_source && !in_destination, "{}: {sha256}", db.label);
                left += 1;
            } else {
                assert_eq!(row.datastore_id.0, to);
                assert!(!in_source && in_destination, "{}: {sha256}", db.label);
            }
        }
        assert_eq!(left, u64::from(blobs) - allowed);
        repo.close().await;
    }
}
