//! End-to-end: the tools on an S3 datastore (the server `S3_TEST_ENDPOINT` names, which
//! `./scripts/test` starts).

use futures::TryStreamExt;
use media_core::datastore::Datastore;
use media_store::conformance::S3TestStore;
use media_tests::{TestCommand, import_sqlite_fixture, report};

#[tokio::test(flavor = "multi_thread")]
async fn import_synapse_into_s3_and_export_and_verify_from_it() {
    let cwd = tempfile::tempdir().unwrap();
    let s3 = S3TestStore::new().await;
    let datastore = s3.store.uri();
    let repo = format!("sqlite://{}", cwd.path().join("repo.db").display());
    let out = import_sqlite_fixture(cwd.path(), &repo, &datastore)
        .arg("--json")
        .assert_exit(1);
    let imported = report(&out);
    assert_eq!(imported["media_imported"], 18, "{imported}");
    assert_eq!(imported["thumbnails_imported"], 37);
    assert_eq!(
        imported["failures"]["listed"][0]["reason"],
        "never_uploaded"
    );
    let blobs: Vec<_> = s3.store.list().try_collect().await.unwrap();
    assert_eq!(
        imported["blobs_written"].as_u64().unwrap(),
        blobs.len() as u64
    );
    assert!(
        s3.store.read_marker().await.unwrap().is_some(),
        "the repository marked the bucket as its datastore"
    );

    // Alice's media come back out of the bucket, and the archive verifies against it.
    let archive = cwd.path().join("alice");
    let out = TestCommand::new("gdpr_export")
        .args(["--db", &repo, "--datastore", &datastore, "--json"])
        .args(["--entity", "@alice:fixture.test"])
        .args(["--destination", archive.to_str().unwrap()])
        .current_dir(cwd.path())
        .assert_exit(0);
    let exported = report(&out);
    assert!(exported["records"].as_u64().unwrap() > 0, "{exported}");
    let out = TestCommand::new("gdpr_import")
        .args([
            "--db",
            &repo,
            "--datastore",
            &datastore,
            "--json",
            "--verify",
        ])
        .args(["--directory", archive.to_str().unwrap()])
        .current_dir(cwd.path())
        .assert_exit(0);
    assert_eq!(report(&out)["verified"], exported["records"]);
}

#[test]
fn a_missing_bucket_stops_import_synapse_with_exit_2_naming_the_datastore() {
    let cwd = tempfile::tempdir().unwrap();
    let datastore = format!(
        "s3://no-such-bucket-{:08x}?endpoint={}",
        rand::random::<u32>(),
        media_store::conformance::s3_test_endpoint()
    );
    let repo = format!("sqlite://{}", cwd.path().join("repo.db").display());
    let out = import_sqlite_fixture(cwd.path(), &repo, &datastore).assert_exit(2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&datastore), "{stderr}");
    assert!(stderr.contains("does not exist at"), "{stderr}");
    // The datastore is checked before the repository is opened: none was created.
    assert!(
        !cwd.path().join("repo.db").exists(),
        "a repository file was left behind"
    );
}
