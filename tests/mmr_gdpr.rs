//! End-to-end tests of `gdpr_export -config media-repo.yaml` and `gdpr_import -config
//! media-repo.yaml` on a matrix-media-repo deployment (tests/support/mmr.rs): the
//! real-Synapse fixture imported into MMR and into our repository exports to the same
//! archive from both, and archives move between the two.

use std::collections::BTreeMap;
use std::path::Path;

use media_archive::{ArchiveFolder, ManifestRecord, MediaEntry};
use media_core::hashing::sha256_of;
use media_tests::TestCommand;
use media_tests::mmr::{Deployment, RemoteMedia, Repository, fixture};

/// Where a tool reads or writes: our repository or an MMR deployment (MMR's spelling).
fn target_flags(target: &Target<'_>) -> Vec<String> {
    match target {
        Target::Ours(repo) => repo.flags(),
        Target::Mmr(deployment) => {
            vec!["-config".into(), deployment.config().display().to_string()]
        }
    }
}

enum Target<'a> {
    Ours(&'a Repository),
    Mmr(&'a Deployment),
}

/// The origin of the fixture's remote media.
fn fixture_remote_origin() -> String {
    let text = std::fs::read_to_string(fixture().join("expected.json")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    expected["remote_origin"].as_str().unwrap().to_owned()
}

/// `gdpr_export` of `entity` from `target` into `destination`, MMR's flag spellings.
fn export(target: &Target<'_>, entity: &str, destination: &Path, exit: i32) {
    TestCommand::new("gdpr_export")
        .args(target_flags(target))
        .args(["-entity", entity, "-destination"])
        .arg(destination)
        .arg("-q")
        .assert_exit(exit);
}

/// `gdpr_import` of the archive in `directory` into `target`, with `extra` flags.
fn import(target: &Target<'_>, directory: &Path, extra: &[&str], exit: i32) {
    TestCommand::new("gdpr_import")
        .args(target_flags(target))
        .arg("-directory")
        .arg(directory)
        .args(extra)
        .arg("-q")
        .assert_exit(exit);
}

/// What an archive holds, by MXC URI: each manifest record and the digest of the bytes
/// of its entry. What is left out, because it legitimately differs between two exports
/// of the same media: the manifest's own head (when the export was written) and the
/// entry names (`file_name`: which of several media sharing bytes names the one entry
/// depends on the order the source lists them in). The bytes are compared through the
/// digest of the entry each record names.
fn contents(archive: &Path) -> BTreeMap<String, (ManifestRecord, String)> {
    let folder = ArchiveFolder::open(archive).unwrap();
    let mut records = Vec::new();
    folder
        .read_records(&mut |mxc, record| {
            records.push((mxc, record));
            Ok(())
        })
        .unwrap();
    let mut entries: BTreeMap<String, String> = BTreeMap::new();
    for part in &folder.parts {
        folder
            .read_media(part, |entry| {
                if let MediaEntry::File { name, body } = entry {
                    let mut bytes = Vec::new();
                    body.read_to_end(&mut bytes).unwrap();
                    entries.insert(name.to_owned(), sha256_of(&bytes).to_string());
                }
                Ok::<_, media_archive::ArchiveError>(())
            })
            .unwrap();
    }
    records
        .into_iter()
        .map(|(mxc, mut record)| {
            let bytes = entries
                .get(&record.file_name)
                .unwrap_or_else(|| panic!("{mxc}: no entry {:?}", record.file_name))
                .clone();
            record.file_name.clear();
            (mxc, (record, bytes))
        })
        .collect()
}

#[tokio::test]
async fn an_export_from_mmr_equals_the_export_of_the_same_media_from_our_repository() {
    let deployment = Deployment::new("").await;
    deployment.import(&[]).assert_exit(1);
    let dir = tempfile::tempdir().unwrap();
    let ours = Repository::new(dir.path(), "store").await;
    ours.import_fixture();
    for entity in [
        "@alice:fixture.test",
        "fixture.test",
        &fixture_remote_origin(),
    ] {
        let from_mmr = dir.path().join(format!("mmr-{entity}"));
        let from_ours = dir.path().join(format!("ours-{entity}"));
        export(&Target::Mmr(&deployment), entity, &from_mmr, 0);
        export(&Target::Ours(&ours), entity, &from_ours, 0);
        let (mmr, ours) = (contents(&from_mmr), contents(&from_ours));
        assert!(!mmr.is_empty(), "{entity}");
        assert_eq!(mmr, ours, "{entity}");
        for (mxc, (record, bytes)) in &mmr {
            assert_eq!(&record.sha256, bytes, "{mxc}");
        }
    }
}

#[tokio::test]
async fn mmr_config_with_our_repository_flags_is_a_usage_error() {
    let deployment = Deployment::new("").await;
    let config = deployment.config().display().to_string();
    let archive = deployment.dir.path().join("archive");
    for tool in ["gdpr_export", "gdpr_import"] {
        for flag in [["--db", "sqlite://x.db"], ["--datastore", "store"]] {
            let mut command = TestCommand::new(tool);
            command.args(["-config", &config]).args(flag);
            match tool {
                "gdpr_export" => command.args(["-entity", "fixture.test"]),
                _ => command.arg("-directory").arg(&archive),
            };
            let out = command.current_dir(deployment.dir.path()).assert_exit(2);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains("cannot be used with"), "{tool}: {stderr}");
        }
    }
    assert!(!deployment.dir.path().join("x.db").exists());
}

#[tokio::test]
async fn an_archive_round_trips_from_our_repository_through_mmr_exactly_and_verifies_there() {
    let dir = tempfile::tempdir().unwrap();
    let ours = Repository::new(dir.path(), "store").await;
    ours.import_fixture();
    let first = dir.path().join("from-ours");
    export(&Target::Ours(&ours), "fixture.test", &first, 0);

    // Into an empty MMR, then read back: every record there with its bytes.
    let deployment = Deployment::new("").await;
    let mmr = Target::Mmr(&deployment);
    import(&mmr, &first, &[], 0);
    import(&mmr, &first, &["-verify"], 0);
    deployment.assert_objects_match_rows().await;
    let rows = deployment.rows().await;
    // A re-run writes nothing.
    import(&mmr, &first, &[], 0);
    assert_eq!(deployment.rows().await, rows);

    // MMR → archive → a fresh repository of ours → archive: the same records and bytes.
    let second = dir.path().join("from-mmr");
    export(&mmr, "fixture.test", &second, 0);
    let back = Repository::new(&dir.path().join("back"), "store").await;
    let back_target = Target::Ours(&back);
    import(&back_target, &second, &[], 0);
    import(&back_target, &second, &["-verify"], 0);
    let third = dir.path().join("from-ours-again");
    export(&back_target, "fixture.test", &third, 0);
    let expected = contents(&first);
    assert!(!expected.is_empty());
    assert_eq!(contents(&second), expected);
    assert_eq!(contents(&third), expected);
}

#[tokio::test]
async fn verify_on_mmr_exits_1_when_bytes_are_missing_and_reserved_ids_are_not_imported() {
    let dir = tempfile::tempdir().unwrap();
    let ours = Repository::new(dir.path(), "store").await;
    ours.import_fixture();
    let archive = dir.path().join("archive");
    export(&Target::Ours(&ours), "@alice:fixture.test", &archive, 0);
    let records = contents(&archive);
    let reserved = records.values().next().unwrap().0.media_id.clone();
    let deployment = Deployment::new(&format!(
        "INSERT INTO reserved_media (origin, media_id, reason) \
         VALUES ('fixture.test', '{reserved}', 'taken down')"
    ))
    .await;
    let mmr = Target::Mmr(&deployment);
    let out = TestCommand::new("gdpr_import")
        .args(target_flags(&mmr))
        .arg("-directory")
        .arg(&archive)
        .arg("--json")
        .assert_exit(1);
    let report = media_tests::report(&out);
    let listed = report["failures"]["listed"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "{report}");
    assert_eq!(listed[0]["reason"], "reserved", "{report}");
    assert!(listed[0]["item"].as_str().unwrap().ends_with(&reserved));
    assert_eq!(report["imported"], records.len() as u64 - 1, "{report}");
    // The reserved media is not there: verify says so; so it does once an object is gone.
    import(&mmr, &archive, &["-verify"], 1);
    deployment
        .execute(&format!(
            "DELETE FROM reserved_media WHERE media_id = '{reserved}'"
        ))
        .await;
    import(&mmr, &archive, &[], 0);
    import(&mmr, &archive, &["-verify"], 0);
    let (datastore, location) = deployment
        .placements()
        .await
        .into_iter()
        .map(|(_, _, datastore, location)| (datastore, location))
        .next()
        .unwrap();
    std::fs::remove_file(deployment.dir.path().join(datastore).join(location)).unwrap();
    import(&mmr, &archive, &["-verify"], 1);
}

#[tokio::test]
async fn an_export_from_mmr_reads_bytes_where_mmr_itself_put_them() {
    let deployment = Deployment::new("").await;
    // An upload as MMR stores it: a random location of its own, not derived from the hash.
    let bytes = b"bytes MMR stored under a name of its own".to_vec();
    let sha256 = sha256_of(&bytes).to_string();
    let folder = deployment.dir.path().join("local/q7/Zk");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("pLmRandomRest"), &bytes).unwrap();
    deployment
        .execute(&format!(
            "INSERT INTO media (origin, media_id, upload_name, content_type, user_id, \
             sha256_hash, size_bytes, datastore_id, location, creation_ts, quarantined) \
             VALUES ('fixture.test', 'uploadedToMmr', 'note.txt', 'text/plain', \
             '@alice:fixture.test', '{sha256}', {}, 'local', 'q7/Zk/pLmRandomRest', 1700000000000, \
             false)",
            bytes.len()
        ))
        .await;
    let archive = deployment.dir.path().join("archive");
    export(
        &Target::Mmr(&deployment),
        "@alice:fixture.test",
        &archive,
        0,
    );
    let exported = contents(&archive);
    let (record, digest) = &exported["mxc://fixture.test/uploadedToMmr"];
    assert_eq!(digest, &sha256);
    assert_eq!(record.name, "note.txt");
    assert_eq!(record.uploader, "@alice:fixture.test");
    assert_eq!(record.created_ts, 1_700_000_000_000);
}

#[tokio::test]
async fn an_export_from_mmr_reads_remote_media_from_its_s3_datastore() {
    let deployment = Deployment::with("", RemoteMedia::InBucket).await;
    deployment.import(&[]).assert_exit(1);
    let dir = tempfile::tempdir().unwrap();
    let ours = Repository::new(dir.path(), "store").await;
    ours.import_fixture();
    let remote = fixture_remote_origin();
    let (from_mmr, from_ours) = (dir.path().join("mmr"), dir.path().join("ours"));
    export(&Target::Mmr(&deployment), &remote, &from_mmr, 0);
    export(&Target::Ours(&ours), &remote, &from_ours, 0);
    assert!(!contents(&from_mmr).is_empty());
    assert_eq!(contents(&from_mmr), contents(&from_ours));
}

/// Puts `bytes` into the S3 test bucket under `key`, from its root, as MMR names its
/// objects (not content-addressed), and returns a guard deleting it.
async fn put_in_bucket(key: &str, bytes: &[u8]) -> BucketObject {
    use object_store::ObjectStoreExt;
    let bucket = object_store::aws::AmazonS3Builder::from_env()
        .with_bucket_name(media_store::conformance::s3_test_bucket())
        .with_endpoint(media_store::conformance::s3_test_endpoint())
        .with_allow_http(true)
        .with_virtual_hosted_style_request(false)
        .build()
        .unwrap();
    let path = object_store::path::Path::from(key);
    bucket.put(&path, bytes.to_vec().into()).await.unwrap();
    BucketObject { bucket, path }
}

/// An object put into the test bucket, for [`BucketObject::delete`].
struct BucketObject {
    bucket: object_store::aws::AmazonS3,
    path: object_store::path::Path,
}

impl BucketObject {
    async fn delete(self) {
        use object_store::ObjectStoreExt;
        self.bucket.delete(&self.path).await.unwrap();
    }
}

#[tokio::test]
async fn an_export_from_mmr_reads_s3_objects_mmr_named_itself_and_refuses_escaping_keys() {
    let deployment = Deployment::with("", RemoteMedia::InBucket).await;
    let origin = format!("elsewhere-{:08x}.test", rand::random::<u32>());
    let bytes = b"a remote media MMR stored under a random key".to_vec();
    let sha256 = sha256_of(&bytes).to_string();
    let key = format!("mmr-{:08x}/RandomRestOfTheName", rand::random::<u32>());
    let object = put_in_bucket(&key, &bytes).await;
    // One row names MMR's object; another a key that would leave the datastore.
    for (media_id, location) in [("namedByMmr", key.as_str()), ("escaping", "../outside")] {
        deployment
            .execute(&format!(
                "INSERT INTO media (origin, media_id, upload_name, content_type, user_id, \
                 sha256_hash, size_bytes, datastore_id, location, creation_ts, quarantined) \
                 VALUES ('{origin}', '{media_id}', 'remote.bin', 'application/octet-stream', \
                 '', '{sha256}', {}, 'remote', '{location}', 1700000000000, false)",
                bytes.len()
            ))
            .await;
    }
    let archive = deployment.dir.path().join("archive");
    // The escaping row is a failure of its own; the export goes on.
    export(&Target::Mmr(&deployment), &origin, &archive, 1);
    object.delete().await;
    let exported = contents(&archive);
    assert_eq!(exported.len(), 1, "{:?}", exported.keys());
    let (record, digest) = &exported[&format!("mxc://{origin}/namedByMmr")];
    assert_eq!(digest, &sha256);
    assert_eq!(record.name, "remote.bin");
}
