//! End-to-end tests of `gdpr_export` and `gdpr_import`: round trips through our own
//! archives, archives written by an independent writer (tests/fixtures/archives), every
//! kind of bad archive, `--verify`, and a killed import.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use futures::TryStreamExt;
use media_core::datastore::DatastoreExt;
use media_core::hashing::sha256_of;
use media_core::ids::ServerName;
use media_core::records::{MediaKey, MediaRecord, Purpose};
use media_db::MediaIndex;
use media_db::repo::NewMedia;
use media_tests::{
    TestCommand, TestDatabase, media_count, report, repository_contents, walk_blobs,
};
use serde_json::Value;

const SYNAPSE_SERVER: &str = "fixture.test";

/// Everything a tool printed, for looking for a message.
fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The reasons of a gdpr report's failures, by item.
fn failures(report: &Value) -> BTreeMap<String, String> {
    report["failures"]["listed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["item"].as_str().unwrap().to_owned(),
                f["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// An archive written by the independent Python writer in `dir/<layout>`.
fn python_archive(dir: &Path, layout: &str) -> PathBuf {
    let out = dir.join(layout);
    let writer = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/archives/mmr_writer.py");
    let status = std::process::Command::new("python3")
        .arg(writer)
        .arg(&out)
        .arg(layout)
        .status()
        .expect("python3 runs the independent archive writer");
    assert!(status.success(), "mmr_writer.py {layout}");
    out
}

/// A repository and datastore for one test.
struct Repo {
    db: TestDatabase,
    store: PathBuf,
}

impl Repo {
    fn args(&self) -> Vec<String> {
        vec![
            "--db".into(),
            self.db.url.clone(),
            "--datastore".into(),
            self.store.display().to_string(),
        ]
    }

    fn gdpr_import(&self, directory: &Path, extra: &[&str], cwd: &Path) -> Output {
        let mut args = self.args();
        args.extend(["--directory".into(), directory.display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        TestCommand::new("gdpr_import")
            .args(args)
            .current_dir(cwd)
            .output()
    }

    fn gdpr_export(&self, entity: &str, destination: &Path, extra: &[&str], cwd: &Path) -> Output {
        let mut args = self.args();
        args.extend([
            "--entity".into(),
            entity.into(),
            "--destination".into(),
            destination.display().to_string(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        TestCommand::new("gdpr_export")
            .args(args)
            .current_dir(cwd)
            .output()
    }

    /// Imports the Synapse SQLite fixture with `import_synapse`.
    fn import_synapse_fixture(&self, cwd: &Path) {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/synapse/sqlite");
        let mut args = self.args();
        args.extend([
            "--synapse-db".into(),
            fixture.join("homeserver.db").display().to_string(),
            "--media-store".into(),
            fixture.join("media_store").display().to_string(),
            "-q".into(),
        ]);
        // The fixture's never-uploaded media is reported: exit code 1.
        TestCommand::new("import_synapse")
            .args(args)
            .current_dir(cwd)
            .assert_exit(1);
    }

    /// Every media of `origin`, with the fields an archive carries.
    async fn media_of(&self, origin: &str) -> Vec<MediaRecord> {
        let repo = media_db::connect(&self.db.url).await.unwrap();
        let origin: ServerName = origin.parse().unwrap();
        let media = repo.media_by_origin(&origin).try_collect().await.unwrap();
        repo.close().await;
        media
    }

    /// Checks that every blob of the datastore hashes to its name.
    fn assert_blobs_intact(&self) {
        for name in walk_blobs(&self.store) {
            let path = self.store.join(&name[0..2]).join(&name[2..4]).join(&name);
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(sha256_of(&bytes).as_str(), name, "{}", path.display());
        }
    }
}

async fn repo_on(db: TestDatabase, dir: &Path, name: &str) -> Repo {
    Repo {
        db,
        store: dir.join(name),
    }
}

/// The fields of a record an archive must carry over, for comparisons.
fn archived_fields(record: &MediaRecord) -> String {
    format!(
        "{} {} {} {:?} {:?} {:?} {}",
        record.key,
        record.sha256,
        record.size_bytes,
        record.upload_name,
        record.content_type,
        record.uploader.as_ref().map(ToString::to_string),
        record.created_ts
    )
}

#[tokio::test]
async fn a_repository_round_trips_through_an_archive_on_both_databases() {
    for (source_db, target_db) in [
        (TestDatabase::sqlite(), TestDatabase::sqlite()),
        (
            TestDatabase::postgres().await,
            TestDatabase::postgres().await,
        ),
    ] {
        let label = source_db.label;
        let dir = tempfile::tempdir().unwrap();
        let source = repo_on(source_db, dir.path(), "source-store").await;
        source.import_synapse_fixture(dir.path());

        let archive = dir.path().join("server-archive");
        let out = source.gdpr_export(
            SYNAPSE_SERVER,
            &archive,
            &["--json", "--part-size", "8K"],
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(0), "{label}: {}", text(&out));
        let exported = report(&out);
        let all = source.media_of(SYNAPSE_SERVER).await;
        let quarantined = all.iter().filter(|m| m.quarantined).count();
        assert_eq!(quarantined, 1, "the fixture has one quarantined media");
        assert_eq!(exported["quarantined_skipped"], 1);
        assert_eq!(
            exported["records"].as_u64().unwrap(),
            (all.len() - 1) as u64
        );
        let distinct: std::collections::BTreeSet<_> = all
            .iter()
            .filter(|m| !m.quarantined)
            .map(|m| &m.sha256)
            .collect();
        assert_eq!(
            exported["entries"].as_u64().unwrap(),
            distinct.len() as u64,
            "{label}: each distinct blob is written once"
        );
        assert!(
            exported["parts"].as_array().unwrap().len() > 1,
            "{label}: parts of 8K"
        );

        let target = repo_on(target_db, dir.path(), "target-store").await;
        let out = target.gdpr_import(&archive, &["--json"], dir.path());
        assert_eq!(out.status.code(), Some(0), "{label}: {}", text(&out));
        assert_eq!(report(&out)["imported"], exported["records"]);
        let expected: Vec<String> = all
            .iter()
            .filter(|m| !m.quarantined)
            .map(archived_fields)
            .collect();
        let got: Vec<String> = target
            .media_of(SYNAPSE_SERVER)
            .await
            .iter()
            .map(archived_fields)
            .collect();
        assert_eq!(got, expected, "{label}");
        assert_eq!(walk_blobs(&target.store).len(), distinct.len());
        target.assert_blobs_intact();

        // Both repositories verify against the archive.
        for repo in [&source, &target] {
            let out = repo.gdpr_import(&archive, &["--verify", "--json"], dir.path());
            assert_eq!(out.status.code(), Some(0), "{label}: {}", text(&out));
            assert_eq!(report(&out)["verified"], exported["records"]);
        }
        // A user's export holds exactly that user's media.
        let alice = dir.path().join("alice-archive");
        let out = source.gdpr_export("@alice:fixture.test", &alice, &["--json"], dir.path());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let alices = all
            .iter()
            .filter(|m| !m.quarantined)
            .filter(|m| {
                m.uploader
                    .as_ref()
                    .is_some_and(|u| u.as_str() == "@alice:fixture.test")
            })
            .count();
        assert_eq!(report(&out)["records"].as_u64().unwrap(), alices as u64);
    }
}

#[tokio::test]
async fn an_export_straight_from_synapse_imports_to_what_import_synapse_gives() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/synapse/sqlite");
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture.join("expected.json")).unwrap())
            .unwrap();
    let reference = repo_on(TestDatabase::sqlite(), dir.path(), "reference").await;
    reference.import_synapse_fixture(dir.path());
    let remote_origin = expected["remote_origin"].as_str().unwrap();

    for entity in ["@alice:fixture.test", remote_origin] {
        let archive = dir
            .path()
            .join(format!("synapse-{}", entity.replace([':', '@'], "_")));
        let out = TestCommand::new("gdpr_export")
            .args([
                "--synapse-db",
                fixture.join("homeserver.db").to_str().unwrap(),
                "--media-store",
                fixture.join("media_store").to_str().unwrap(),
                "--entity",
                entity,
                "--destination",
                archive.to_str().unwrap(),
                "--json",
            ])
            .current_dir(dir.path())
            .output();
        let exported = report(&out);
        // Alice created one media she never uploaded: listed, not fatal.
        let unexportable: Vec<_> = failures(&exported).into_values().collect();
        let code = if unexportable.is_empty() { 0 } else { 1 };
        assert_eq!(out.status.code(), Some(code), "{entity}: {}", text(&out));
        assert!(
            unexportable.iter().all(|r| r == "never_uploaded"),
            "{exported}"
        );
        assert_eq!(
            exported["quarantined_skipped"], 1,
            "{entity}: the fixture quarantines one of each"
        );

        let target = repo_on(
            TestDatabase::sqlite(),
            dir.path(),
            &format!("{}-store", archive.display()),
        )
        .await;
        let out = target.gdpr_import(&archive, &["--json"], dir.path());
        assert_eq!(out.status.code(), Some(0), "{entity}: {}", text(&out));
        let origin = if entity.starts_with('@') {
            SYNAPSE_SERVER
        } else {
            entity
        };
        let wanted: Vec<String> = reference
            .media_of(origin)
            .await
            .iter()
            .filter(|m| !m.quarantined)
            .filter(|m| {
                !entity.starts_with('@')
                    || m.uploader.as_ref().is_some_and(|u| u.as_str() == entity)
            })
            .map(archived_fields)
            .collect();
        assert!(!wanted.is_empty());
        let got: Vec<String> = target
            .media_of(origin)
            .await
            .iter()
            .map(archived_fields)
            .collect();
        assert_eq!(got, wanted, "{entity}");
        target.assert_blobs_intact();
    }
}

#[tokio::test]
async fn archives_of_an_independent_writer_import_in_both_layouts() {
    let dir = tempfile::tempdir().unwrap();
    for layout in ["v2", "old"] {
        let archive = python_archive(dir.path(), layout);
        let repo = repo_on(
            TestDatabase::sqlite(),
            dir.path(),
            &format!("{layout}-store"),
        )
        .await;
        let out = repo.gdpr_import(&archive, &["--json"], dir.path());
        assert_eq!(out.status.code(), Some(0), "{layout}: {}", text(&out));
        let imported = report(&out);
        assert_eq!(imported["imported"], 4, "{layout}");
        assert_eq!(
            imported["entries_read"], 3,
            "{layout}: two records share one entry"
        );

        let manifest = read_manifest(&archive, layout);
        let media = repo.media_of("example.org").await;
        assert_eq!(media.len(), 4);
        for record in &media {
            let entry = &manifest["media"][record.key.to_string()];
            assert_eq!(record.sha256.as_str(), entry["sha256"], "{layout}");
            assert_eq!(record.size_bytes, entry["size_bytes"].as_u64().unwrap());
            assert_eq!(record.upload_name.as_deref(), entry["name"].as_str());
            assert_eq!(
                record.content_type.as_deref(),
                entry["content_type"].as_str()
            );
            assert_eq!(record.created_ts, entry["created_ts"].as_i64().unwrap());
            let uploader = record.uploader.as_ref().map(ToString::to_string);
            let expected = match layout {
                "v2" => Some("@alice:example.org".to_owned()),
                _ => None, // version 1 has no uploader field
            };
            assert_eq!(uploader, expected);
        }
        repo.assert_blobs_intact();
        assert_eq!(walk_blobs(&repo.store).len(), 3);
    }
}

/// The manifest of an archive written by the Python writer, read with `tar`.
fn read_manifest(archive: &Path, layout: &str) -> Value {
    let part = match layout {
        "old" => "export-part-1.tgz",
        _ => "export-manifest.tgz",
    };
    let out = std::process::Command::new("tar")
        .arg("-xzOf")
        .arg(archive.join(part))
        .arg("manifest.json")
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn every_bad_archive_is_refused_clearly_and_changes_nothing_already_stored() {
    let dir = tempfile::tempdir().unwrap();
    // (layout, exit code, message, media of the archive imported)
    let cases = [
        ("dotdot", 1, "`..` is not allowed in an entry name", 2),
        ("absolute", 1, "absolute paths are not allowed", 2),
        ("symlink", 1, "links are not allowed", 2),
        ("hardlink", 1, "links are not allowed", 2),
        (
            "missing-entry",
            1,
            "no part of the archive holds its entry \"ghost.bin\"",
            4,
        ),
        (
            "oversized",
            1,
            "holds more than the 5000 bytes the manifest says",
            2,
        ),
        ("truncated", 1, "export-part-2.tgz is damaged", 3),
        ("two-manifests", 2, "the archive has two manifests", -1),
        ("version3", 2, "manifest version 3 is not supported", 0),
        ("empty", 2, "holds no archive", 0),
    ];
    let bob = python_archive(dir.path(), "bob");
    for (layout, code, message, imported) in cases {
        let archive = if layout == "empty" {
            let empty = dir.path().join("empty");
            std::fs::create_dir(&empty).unwrap();
            empty
        } else {
            python_archive(dir.path(), layout)
        };
        let repo = repo_on(
            TestDatabase::sqlite(),
            dir.path(),
            &format!("{layout}-store"),
        )
        .await;
        let out = repo.gdpr_import(&bob, &["-q"], dir.path());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let before = repository_contents(&repo.db.url).await;
        let blobs_before = walk_blobs(&repo.store);

        let out = repo.gdpr_import(&archive, &[], dir.path());
        assert_eq!(out.status.code(), Some(code), "{layout}: {}", text(&out));
        assert!(text(&out).contains(message), "{layout}: {}", text(&out));

        let after = repository_contents(&repo.db.url).await;
        for row in &before {
            assert!(after.contains(row), "{layout} changed {row}");
        }
        assert!(
            walk_blobs(&repo.store).is_superset(&blobs_before),
            "{layout}"
        );
        let new_media = media_count(&repo.db.url).await - 4;
        if imported >= 0 {
            assert_eq!(new_media, imported, "{layout}");
        }
        repo.assert_blobs_intact();
        assert!(!Path::new("/gdpr-test-evil.png").exists());
        assert!(!dir.path().join("evil.png").exists());
    }
    // The oversized entry's bytes never reached the datastore: 2 of alice's + 3 of bob's.
    assert_eq!(walk_blobs(&dir.path().join("oversized-store")).len(), 5);
}

#[tokio::test]
async fn verify_writes_nothing_and_exits_1_when_anything_is_missing_or_different() {
    let dir = tempfile::tempdir().unwrap();
    let archive = python_archive(dir.path(), "v2");
    let repo = repo_on(TestDatabase::sqlite(), dir.path(), "store").await;

    // Nothing imported yet: a missing repository is an error, and none is created.
    let out = repo.gdpr_import(&archive, &["--verify"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not found"), "{}", text(&out));
    assert!(!repo.store.exists());

    let out = repo.gdpr_import(&archive, &["-q"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = repo.gdpr_import(&archive, &["--verify", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(report(&out)["verified"], 4);

    // A record gone from the repository.
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&repo.db.url).await.unwrap();
        sqlx::query("DELETE FROM media WHERE media_id = 'videomedia'")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let before = repository_contents(&repo.db.url).await;
    let out = repo.gdpr_import(&archive, &["--verify", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let verified = report(&out);
    assert_eq!(verified["verified"], 3);
    assert_eq!(
        failures(&verified),
        BTreeMap::from([(
            "mxc://example.org/videomedia".into(),
            "not_in_repository".into()
        )])
    );
    assert_eq!(
        repository_contents(&repo.db.url).await,
        before,
        "verify wrote something"
    );

    // An archive whose entry does not match its manifest.
    let oversized = python_archive(dir.path(), "oversized");
    let out = repo.gdpr_import(&oversized, &["--verify", "--json"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    let reasons = failures(&report(&out));
    assert_eq!(reasons["mxc://example.org/imagemedia"], "archive_mismatch");
    assert_eq!(reasons["mxc://example.org/imagecopy"], "archive_mismatch");
}

#[tokio::test]
async fn foreign_origins_are_refused_unless_allowed_and_only_entity_selects() {
    let dir = tempfile::tempdir().unwrap();
    let archive = python_archive(dir.path(), "mixed");

    let strict = repo_on(TestDatabase::sqlite(), dir.path(), "strict").await;
    let out = strict.gdpr_import(&archive, &["--json"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let imported = report(&out);
    assert_eq!(imported["imported"], 4);
    assert_eq!(
        failures(&imported),
        BTreeMap::from([
            ("mxc://other.org/foreign".into(), "foreign_origin".into()),
            ("mxc://example.org/smuggled".into(), "foreign_origin".into()),
        ])
    );

    let allowed = repo_on(TestDatabase::sqlite(), dir.path(), "allowed").await;
    let out = allowed.gdpr_import(&archive, &["--json", "--allow-foreign-origins"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(report(&out)["imported"], 6);

    // MMR's camelCase flag; only carol's media of the other origin.
    let only = repo_on(TestDatabase::sqlite(), dir.path(), "only").await;
    let out = only.gdpr_import(
        &archive,
        &[
            "--json",
            "-onlyEntity",
            "@carol:other.org",
            "--allow-foreign-origins",
        ],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let selected = report(&out);
    assert_eq!(
        (
            selected["imported"].as_u64(),
            selected["not_selected"].as_u64()
        ),
        (Some(1), Some(5))
    );
    assert_eq!(only.media_of("other.org").await.len(), 1);
}

#[tokio::test]
async fn bytes_quarantined_in_the_repository_are_not_imported_again() {
    let dir = tempfile::tempdir().unwrap();
    let archive = python_archive(dir.path(), "v2");
    // Learn the image's bytes from a scratch import.
    let scratch = repo_on(TestDatabase::sqlite(), dir.path(), "scratch").await;
    assert_eq!(
        scratch
            .gdpr_import(&archive, &["-q"], dir.path())
            .status
            .code(),
        Some(0)
    );
    let image = scratch
        .media_of("example.org")
        .await
        .into_iter()
        .find(|m| m.key.media_id.as_str() == "imagemedia")
        .unwrap();
    let bytes = std::fs::read(
        scratch
            .store
            .join(&image.sha256.as_str()[0..2])
            .join(&image.sha256.as_str()[2..4])
            .join(image.sha256.as_str()),
    )
    .unwrap();

    // Another repository where the same bytes are quarantined under another media.
    let repo = repo_on(TestDatabase::sqlite(), dir.path(), "store").await;
    {
        let db = media_db::connect(&repo.db.url).await.unwrap();
        let store = media_store::open(&repo.store.display().to_string())
            .await
            .unwrap();
        store.put_bytes(&bytes).await.unwrap();
        let datastore_id = db.register_datastore(&store.uri()).await.unwrap();
        let record = MediaRecord {
            key: MediaKey::new("example.org".parse().unwrap(), "banned".parse().unwrap()),
            quarantined: true,
            quarantined_by: Some("@admin:example.org".into()),
            purpose: Purpose::None,
            imported_from: None,
            ..image.clone()
        };
        let batch = [NewMedia {
            record,
            thumbnails: Vec::new(),
            datastore_id,
        }];
        db.insert_media_batch(&batch, &*store).await.unwrap();
        db.close().await;
    }
    let out = repo.gdpr_import(&archive, &["--json"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let imported = report(&out);
    assert_eq!(imported["imported"], 2);
    assert_eq!(
        failures(&imported),
        BTreeMap::from([
            ("mxc://example.org/imagecopy".into(), "quarantined".into()),
            ("mxc://example.org/imagemedia".into(), "quarantined".into()),
        ])
    );
}

#[tokio::test]
async fn exports_refuse_to_overwrite_and_report_damaged_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_on(TestDatabase::sqlite(), dir.path(), "store").await;
    repo.import_synapse_fixture(dir.path());
    let archive = dir.path().join("archive");
    let out = repo.gdpr_export("@alice:fixture.test", &archive, &["-q"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let out = repo.gdpr_export("@alice:fixture.test", &archive, &[], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("already holds an export"),
        "{}",
        text(&out)
    );

    // A metadata-only archive: records and no part (MMR's camelCase flag).
    let metadata = dir.path().join("metadata");
    let out = repo.gdpr_export(
        "@alice:fixture.test",
        &metadata,
        &["--json", "-includeData=false"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let exported = report(&out);
    assert_eq!(exported["entries"], 0);
    assert!(exported["records"].as_u64().unwrap() > 0);
    assert!(exported["parts"].as_array().unwrap().is_empty());
    let target = repo_on(TestDatabase::sqlite(), dir.path(), "metadata-target").await;
    let out = target.gdpr_import(&metadata, &["--json"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let reasons = failures(&report(&out));
    assert_eq!(reasons.len() as u64, exported["records"].as_u64().unwrap());
    assert!(reasons.values().all(|r| r == "no_data"), "{reasons:?}");

    // Bit rot in one of alice's blobs.
    let alices: Vec<MediaRecord> = repo
        .media_of(SYNAPSE_SERVER)
        .await
        .into_iter()
        .filter(|m| !m.quarantined)
        .filter(|m| {
            m.uploader
                .as_ref()
                .is_some_and(|u| u.as_str() == "@alice:fixture.test")
        })
        .collect();
    let victim = &alices[0];
    let path = repo
        .store
        .join(&victim.sha256.as_str()[0..2])
        .join(&victim.sha256.as_str()[2..4])
        .join(victim.sha256.as_str());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    // And one blob that grew by more than a read chunk: its first bytes are intact, but
    // it is damaged too.
    let grown = alices
        .iter()
        .find(|m| m.sha256 != victim.sha256)
        .expect("alice has two distinct blobs");
    let grown_path = repo
        .store
        .join(&grown.sha256.as_str()[0..2])
        .join(&grown.sha256.as_str()[2..4])
        .join(grown.sha256.as_str());
    let mut longer = std::fs::read(&grown_path).unwrap();
    longer.extend(std::iter::repeat_n(b'!', 600 << 10));
    std::fs::write(&grown_path, &longer).unwrap();

    let out = repo.gdpr_export(
        "@alice:fixture.test",
        &archive,
        &["--force", "--json"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let exported = report(&out);
    let sharing = alices
        .iter()
        .filter(|m| m.sha256 == victim.sha256 || m.sha256 == grown.sha256)
        .count();
    assert_eq!(
        exported["failures"]["count"].as_u64().unwrap(),
        sharing as u64
    );
    assert_eq!(failures(&exported)[&victim.key.to_string()], "unreadable");
    assert_eq!(failures(&exported)[&grown.key.to_string()], "size_mismatch");
    assert_eq!(
        exported["records"].as_u64().unwrap(),
        (alices.len() - sharing) as u64
    );
    // The archive still imports cleanly: the damaged entry is referenced by no record.
    let target = repo_on(TestDatabase::sqlite(), dir.path(), "target").await;
    let out = target.gdpr_import(&archive, &["--json"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(report(&out)["imported"], exported["records"]);
}

#[tokio::test]
async fn a_killed_import_resumes_to_the_state_of_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let archive = python_archive(dir.path(), "many");
    let reference = repo_on(TestDatabase::sqlite(), dir.path(), "reference").await;
    let out = reference.gdpr_import(&archive, &["-q"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));

    let resumed = repo_on(TestDatabase::sqlite(), dir.path(), "resumed").await;
    let mut args = resumed.args();
    args.extend([
        "--directory".into(),
        archive.display().to_string(),
        "-q".into(),
    ]);
    let mut interrupted_at = Vec::new();
    for _ in 0..2 {
        let mut child = std::process::Command::new(media_tests::binary("gdpr_import"))
            .args(&args)
            .current_dir(dir.path())
            .spawn()
            .unwrap();
        let before = media_count(&resumed.db.url).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while media_count(&resumed.db.url).await <= before && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        child.kill().unwrap();
        child.wait().unwrap();
        interrupted_at.push(media_count(&resumed.db.url).await);
    }
    assert!(
        interrupted_at[0] > 0 && interrupted_at[1] < 2000,
        "the runs were not interrupted mid-way: {interrupted_at:?}"
    );
    let out = resumed.gdpr_import(&archive, &["--json"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let last = report(&out);
    assert_eq!(
        last["imported"].as_u64().unwrap() + last["already_present"].as_u64().unwrap(),
        2000
    );
    assert_eq!(
        repository_contents(&resumed.db.url).await,
        repository_contents(&reference.db.url).await,
        "killed at {interrupted_at:?}"
    );
    assert_eq!(walk_blobs(&resumed.store), walk_blobs(&reference.store));
    let out = resumed.gdpr_import(&archive, &["--verify"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

#[test]
fn stray_files_are_warned_about_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let archive = python_archive(dir.path(), "v2");
    std::fs::write(archive.join("README.txt"), "notes of the operator").unwrap();
    let db = format!("sqlite://{}", dir.path().join("repo.db").display());
    let out = TestCommand::new("gdpr_import")
        .args([
            "--directory",
            archive.to_str().unwrap(),
            "--db",
            &db,
            "--datastore",
            "store",
        ])
        .current_dir(dir.path())
        .assert_exit(0);
    assert!(
        text(&out).contains("README.txt is not an archive part"),
        "{}",
        text(&out)
    );
}

/// A media to put into a crafted repository or archive.
struct Crafted<'a> {
    origin: &'a str,
    media_id: &'a str,
    uploader: &'a str,
    bytes: Vec<u8>,
}

impl Crafted<'_> {
    fn record(&self) -> MediaRecord {
        let key = MediaKey::new(self.origin.parse().unwrap(), self.media_id.parse().unwrap());
        MediaRecord {
            upload_name: Some(format!("{}.png", self.media_id)),
            content_type: Some("image/png".into()),
            uploader: Some(self.uploader.parse().unwrap()),
            ..MediaRecord::new(
                key,
                sha256_of(&self.bytes),
                self.bytes.len() as u64,
                1_700_000_000_000,
            )
        }
    }
}

/// `n` bytes that do not compress, different for each `seed`.
fn noise(seed: u8, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut block = sha256_of(&[seed]).as_str().as_bytes().to_vec();
    while out.len() < n {
        block = sha256_of(&block).as_str().as_bytes().to_vec();
        out.extend(hex_pairs(&block));
    }
    out.truncate(n);
    out
}

fn hex_pairs(hex: &[u8]) -> Vec<u8> {
    hex.chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
}

/// Records `media` (bytes and rows) in the repository.
async fn seed_repository(repo: &Repo, media: &[Crafted<'_>]) {
    let db = media_db::connect(&repo.db.url).await.unwrap();
    let store = media_store::open(&repo.store.display().to_string())
        .await
        .unwrap();
    let datastore_id = db.register_datastore(&store.uri()).await.unwrap();
    let batch: Vec<NewMedia> = media
        .iter()
        .map(|m| NewMedia {
            record: m.record(),
            thumbnails: Vec::new(),
            datastore_id,
        })
        .collect();
    for m in media {
        store.put_bytes(&m.bytes).await.unwrap();
    }
    db.insert_media_batch(&batch, &*store).await.unwrap();
    db.close().await;
}

/// An archive of `media` for `entity`, written by our archive writer.
fn craft_archive(dir: &Path, entity: &str, media: &[Crafted<'_>]) -> PathBuf {
    use media_archive::{ArchiveWriter, ManifestRecord, NewEntry, WriterOptions};
    let writer_options = WriterOptions {
        sync: false,
        ..WriterOptions::default()
    };
    let mut writer = ArchiveWriter::create(dir, &writer_options).unwrap();
    for m in media {
        let name = format!("{}__{}.png", m.origin, m.media_id);
        let entry = NewEntry {
            name: &name,
            size: m.bytes.len() as u64,
            mtime_ms: 0,
            content_type: "image/png",
        };
        writer.add_entry(entry, &mut &m.bytes[..]).unwrap();
        let record = ManifestRecord {
            name: String::new(),
            file_name: name.clone(),
            size_bytes: m.bytes.len() as u64,
            sha256: sha256_of(&m.bytes).to_string(),
            content_type: "image/png".into(),
            origin: m.origin.into(),
            media_id: m.media_id.into(),
            created_ts: 0,
            s3_url: String::new(),
            uploader: m.uploader.into(),
        };
        let mxc = format!("mxc://{}/{}", m.origin, m.media_id);
        writer.add_record(&mxc, &record).unwrap();
    }
    writer.finish(entity, 0).unwrap();
    dir.to_owned()
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs (the tests run as root)");
        assert!(status.success(), "mount a tmpfs at {}", at.display());
        Self(at.to_owned())
    }

    fn remount_read_only(&self) {
        let status = std::process::Command::new("mount")
            .args(["-o", "remount,ro"])
            .arg(&self.0)
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// The entry names of every part of an archive, as system tar lists them.
fn tar_entries(archive: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for item in std::fs::read_dir(archive).unwrap() {
        let path = item.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !name.starts_with("export-part-") {
            continue;
        }
        let out = std::process::Command::new("tar")
            .arg("-tzf")
            .arg(&path)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", path.display());
        names.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned),
        );
    }
    names.sort();
    names
}

#[tokio::test]
async fn a_damaged_blob_leaves_no_orphan_entry_in_the_part() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_on(TestDatabase::sqlite(), dir.path(), "store").await;
    let media = [
        Crafted {
            origin: "example.org",
            media_id: "good",
            uploader: "@alice:example.org",
            bytes: noise(1, 70_000),
        },
        Crafted {
            origin: "example.org",
            media_id: "rotten",
            uploader: "@alice:example.org",
            bytes: noise(2, 900_000),
        },
        Crafted {
            origin: "example.org",
            media_id: "after",
            uploader: "@alice:example.org",
            bytes: noise(3, 1000),
        },
    ];
    seed_repository(&repo, &media).await;
    let rotten = sha256_of(&media[1].bytes);
    let path = repo
        .store
        .join(&rotten.as_str()[0..2])
        .join(&rotten.as_str()[2..4])
        .join(rotten.as_str());
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();

    let archive = dir.path().join("archive");
    let out = repo.gdpr_export("@alice:example.org", &archive, &["--json"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(
        failures(&report(&out))["mxc://example.org/rotten"],
        "unreadable"
    );
    assert_eq!(
        tar_entries(&archive),
        ["example.org__after.png", "example.org__good.png"],
        "the damaged blob left an entry in the part"
    );
}

#[tokio::test]
async fn a_forced_export_that_fills_the_disk_leaves_the_previous_export_complete() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_on(TestDatabase::sqlite(), dir.path(), "store").await;
    let media = [
        Crafted {
            origin: "example.org",
            media_id: "one",
            uploader: "@alice:example.org",
            bytes: noise(4, 600_000),
        },
        Crafted {
            origin: "example.org",
            media_id: "two",
            uploader: "@alice:example.org",
            bytes: noise(5, 600_000),
        },
    ];
    seed_repository(&repo, &media).await;
    let disk = Tmpfs::mount(&dir.path().join("small"), "1800k");
    let archive = disk.0.join("archive");
    let out = repo.gdpr_export(
        "@alice:example.org",
        &archive,
        &["--json", "--part-size", "500K"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let before = std::fs::read_dir(&archive).unwrap().count();

    // The disk holds one export, not two: the forced one fails…
    let out = repo.gdpr_export(
        "@alice:example.org",
        &archive,
        &["--force", "--part-size", "500K"],
        dir.path(),
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("No space left"), "{}", text(&out));
    // …and the previous export is complete and imports.
    assert_eq!(std::fs::read_dir(&archive).unwrap().count(), before);
    let names: Vec<_> = std::fs::read_dir(&disk.0)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["archive"], "the unfinished export was removed");
    let target = repo_on(TestDatabase::sqlite(), dir.path(), "target").await;
    let out = target.gdpr_import(&archive, &["--json"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(report(&out)["imported"], 2);
}

#[tokio::test]
async fn an_invalid_entity_id_refuses_the_archive_and_other_uploaders_are_foreign() {
    let dir = tempfile::tempdir().unwrap();
    let evil = || Crafted {
        origin: "evil.test",
        media_id: "smuggled",
        uploader: "@mallory:evil.test",
        bytes: noise(6, 100),
    };
    for entity in ["evil test!", "@alice:evil..test"] {
        let archive = craft_archive(
            &dir.path().join(entity.replace(['@', ':', ' ', '!'], "_")),
            entity,
            &[evil()],
        );
        let repo = repo_on(TestDatabase::sqlite(), dir.path(), "store").await;
        let out = repo.gdpr_import(&archive, &["--json"], dir.path());
        assert_eq!(out.status.code(), Some(2), "{entity}: {}", text(&out));
        assert!(text(&out).contains("neither a user ID"), "{}", text(&out));
        assert_eq!(media_count(&repo.db.url).await, 0);
    }
    // alice's archive holding bob's upload: refused unless foreign records are allowed.
    let bobs = Crafted {
        origin: "example.org",
        media_id: "bobs",
        uploader: "@bob:example.org",
        bytes: noise(7, 100),
    };
    let alices = Crafted {
        origin: "example.org",
        media_id: "alices",
        uploader: "@alice:example.org",
        bytes: noise(8, 100),
    };
    let archive = craft_archive(
        &dir.path().join("alice"),
        "@alice:example.org",
        &[bobs, alices],
    );
    for db in TestDatabase::both().await {
        let label = db.label;
        let repo = repo_on(db, dir.path(), &format!("{label}-store")).await;
        let out = repo.gdpr_import(&archive, &["--json"], dir.path());
        assert_eq!(out.status.code(), Some(1), "{label}: {}", text(&out));
        let imported = report(&out);
        assert_eq!(imported["imported"], 1);
        assert_eq!(
            failures(&imported),
            BTreeMap::from([("mxc://example.org/bobs".into(), "foreign_origin".into())])
        );
        let out = repo.gdpr_import(&archive, &["--json", "--allow-foreign-origins"], dir.path());
        assert_eq!(out.status.code(), Some(0), "{label}: {}", text(&out));
        assert_eq!(report(&out)["imported"], 1);
    }
}

#[tokio::test]
async fn a_manifest_bomb_is_refused_before_anything_is_written() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("bomb");
    std::fs::create_dir(&archive).unwrap();
    // 64 MiB of entity_id, a few hundred KiB compressed.
    let file = std::fs::File::create(archive.join("export-manifest.tgz")).unwrap();
    let gz = flate2_free_gzip(file);
    let mut tar = gz;
    let manifest_len = 64u64 << 20;
    let head = br#"{"version":2,"media":{},"entity_id":""#;
    let mut header = [0u8; 512];
    header[..13].copy_from_slice(b"manifest.json");
    header[100..107].copy_from_slice(b"0000644");
    let size = format!("{:011o}", manifest_len);
    header[124..135].copy_from_slice(size.as_bytes());
    header[136..147].copy_from_slice(b"00000000000");
    header[156] = b'0';
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    tar.write_all(&header).unwrap();
    tar.write_all(head).unwrap();
    let chunk = vec![b'a'; 1 << 20];
    let mut left = manifest_len - head.len() as u64 - 2;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        tar.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    tar.write_all(b"\"}").unwrap();
    tar.write_all(&[0u8; 1024]).unwrap();
    tar.finish().unwrap();
    assert!(
        std::fs::metadata(archive.join("export-manifest.tgz"))
            .unwrap()
            .len()
            < 1 << 20
    );

    for db in TestDatabase::both().await {
        let label = db.label;
        let repo = repo_on(db, dir.path(), &format!("{label}-store")).await;
        let out = repo.gdpr_import(&archive, &["--json"], dir.path());
        assert_eq!(out.status.code(), Some(2), "{label}: {}", text(&out));
        assert!(
            text(&out).contains("longer than 16384 bytes"),
            "{}",
            text(&out)
        );
        assert!(text(&out).len() < 10_000, "the message quotes the bomb");
        // Refused before the repository was opened: nothing was created, no task row.
        assert!(!repo.store.exists());
        assert!(!dir.path().join("repo.db").exists());
        assert!(
            repo.db.is_untouched().await,
            "{label}: a repository was created"
        );
    }
}

/// A gzip writer built from the tools the tests already have (system gzip via a pipe).
fn flate2_free_gzip(file: std::fs::File) -> GzipPipe {
    let child = std::process::Command::new("gzip")
        .arg("-1")
        .stdin(std::process::Stdio::piped())
        .stdout(file)
        .spawn()
        .expect("gzip runs");
    GzipPipe(child)
}

struct GzipPipe(std::process::Child);

impl std::io::Write for GzipPipe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.stdin.as_mut().unwrap().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.stdin.as_mut().unwrap().flush()
    }
}

impl GzipPipe {
    fn finish(mut self) -> std::io::Result<()> {
        drop(self.0.stdin.take());
        assert!(self.0.wait()?.success());
        Ok(())
    }
}

#[tokio::test]
async fn verify_reads_the_datastore_and_a_reimport_repairs_missing_or_damaged_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let archive = python_archive(dir.path(), "v2");
    for db in TestDatabase::both().await {
        let label = db.label;
        let repo = repo_on(db, dir.path(), &format!("{label}-store")).await;
        let out = repo.gdpr_import(&archive, &["-q"], dir.path());
        assert_eq!(out.status.code(), Some(0), "{label}: {}", text(&out));
        let media = repo.media_of("example.org").await;
        let blob = |m: &MediaRecord| {
            repo.store
                .join(&m.sha256.as_str()[0..2])
                .join(&m.sha256.as_str()[2..4])
                .join(m.sha256.as_str())
        };
        let gone = media
            .iter()
            .find(|m| m.key.media_id.as_str() == "videomedia")
            .unwrap();
        let junk = media.iter().find(|m| m.sha256 != gone.sha256).unwrap();
        std::fs::remove_file(blob(gone)).unwrap();
        let size = std::fs::metadata(blob(junk)).unwrap().len() as usize;
        std::fs::write(blob(junk), vec![b'j'; size]).unwrap();

        let out = repo.gdpr_import(&archive, &["--verify", "--json"], dir.path());
        assert_eq!(out.status.code(), Some(1), "{label}: {}", text(&out));
        let reasons = failures(&report(&out));
        assert_eq!(
            reasons[&gone.key.to_string()],
            "missing_from_datastore",
            "{label}"
        );
        assert_eq!(
            reasons[&junk.key.to_string()],
            "damaged_in_datastore",
            "{label}"
        );

        let out = repo.gdpr_import(&archive, &["--json"], dir.path());
        assert_eq!(out.status.code(), Some(0), "{label}: {}", text(&out));
        let repaired = report(&out);
        let sharing = media
            .iter()
            .filter(|m| m.sha256 == gone.sha256 || m.sha256 == junk.sha256)
            .count();
        assert_eq!(
            repaired["repaired"].as_u64().unwrap(),
            sharing as u64,
            "{label}"
        );
        repo.assert_blobs_intact();
        assert!(blob(gone).exists());
        let out = repo.gdpr_import(&archive, &["--verify", "--json"], dir.path());
        assert_eq!(out.status.code(), Some(0), "{label}: {}", text(&out));
        assert_eq!(report(&out)["verified"], 4);
    }
}

#[tokio::test]
async fn other_bytes_for_an_existing_media_are_a_conflict_not_already_present() {
    let dir = tempfile::tempdir().unwrap();
    let original = Crafted {
        origin: "example.org",
        media_id: "same",
        uploader: "@alice:example.org",
        bytes: noise(9, 500),
    };
    let other = Crafted {
        origin: "example.org",
        media_id: "same",
        uploader: "@alice:example.org",
        bytes: noise(10, 500),
    };
    let archive = craft_archive(&dir.path().join("other"), "example.org", &[other]);
    for db in TestDatabase::both().await {
        let label = db.label;
        let repo = repo_on(db, dir.path(), &format!("{label}-store")).await;
        seed_repository(&repo, std::slice::from_ref(&original)).await;
        let out = repo.gdpr_import(&archive, &["--json"], dir.path());
        assert_eq!(out.status.code(), Some(1), "{label}: {}", text(&out));
        let imported = report(&out);
        assert_eq!(imported["already_present"], 0, "{label}");
        let failure = &imported["failures"]["listed"][0];
        assert_eq!(failure["reason"], "conflict", "{label}");
        let detail = failure["detail"].as_str().unwrap();
        assert!(
            detail.contains(sha256_of(&original.bytes).as_str()),
            "{detail}"
        );
        assert!(
            detail.contains(sha256_of(&noise(10, 500)).as_str()),
            "{detail}"
        );
        let kept = repo.media_of("example.org").await;
        assert_eq!(
            kept[0].sha256,
            sha256_of(&original.bytes),
            "{label}: overwritten"
        );
    }
}

#[tokio::test]
async fn a_second_manifest_or_an_empty_folder_changes_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let two = python_archive(dir.path(), "two-manifests");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for (archive, message) in [(&two, "two manifests"), (&empty, "holds no archive")] {
        let repo = repo_on(TestDatabase::sqlite(), dir.path(), "store").await;
        let out = repo.gdpr_import(archive, &[], dir.path());
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains(message), "{}", text(&out));
        assert!(repo.db.is_untouched().await, "a repository was created");
        assert!(!repo.store.exists(), "a datastore was created");
    }
}

#[tokio::test]
async fn export_and_verify_work_on_a_read_only_mount() {
    let dir = tempfile::tempdir().unwrap();
    let archive = python_archive(dir.path(), "v2");
    for db in [TestDatabase::sqlite(), TestDatabase::postgres().await] {
        let label = db.label;
        let mount = Tmpfs::mount(&dir.path().join(format!("{label}-ro")), "16m");
        let mut db = db;
        if label == "sqlite" {
            db.url = format!("sqlite://{}", mount.0.join("repo.db").display());
        }
        let repo = Repo {
            db,
            store: mount.0.join("store"),
        };
        let out = repo.gdpr_import(&archive, &["-q"], dir.path());
        assert_eq!(out.status.code(), Some(0), "{label}: {}", text(&out));
        mount.remount_read_only();

        let out = repo.gdpr_import(&archive, &["--verify", "--json"], dir.path());
        assert_eq!(out.status.code(), Some(0), "{label}: {}", text(&out));
        assert_eq!(report(&out)["verified"], 4);
        let out = repo.gdpr_export(
            "@alice:example.org",
            &dir.path().join(format!("{label}-export")),
            &["--json"],
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(0), "{label}: {}", text(&out));
        assert_eq!(report(&out)["records"], 4);
        drop(mount);
    }
}

#[tokio::test]
async fn a_linked_or_fifo_part_is_refused_not_followed_or_waited_on() {
    let dir = tempfile::tempdir().unwrap();
    let media = |media_id, seed| Crafted {
        origin: "example.org",
        media_id,
        uploader: "@alice:example.org",
        bytes: noise(seed, 100),
    };
    let real = craft_archive(
        &dir.path().join("real"),
        "@alice:example.org",
        &[media("one", 11), media("two", 12)],
    );
    // The folder given holds the manifest; its part is a link to the real, valid part
    // outside it, or a FIFO that nobody writes to.
    let planted = |kind: &str| {
        let folder = dir.path().join(kind);
        std::fs::create_dir(&folder).unwrap();
        std::fs::copy(
            real.join("export-manifest.tgz"),
            folder.join("export-manifest.tgz"),
        )
        .unwrap();
        let part = folder.join("export-part-1.tgz");
        if kind == "link" {
            std::os::unix::fs::symlink(real.join("export-part-1.tgz"), &part).unwrap();
        } else {
            let status = std::process::Command::new("mkfifo")
                .arg(&part)
                .status()
                .unwrap();
            assert!(status.success());
        }
        (folder, part)
    };
    for (kind, what) in [("link", "a link"), ("fifo", "a FIFO")] {
        let (folder, part) = planted(kind);
        // A writer waits on the FIFO: whoever opens it for reading gets an end of file
        // instead of waiting forever, and is seen here. The import must not be one.
        let import_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watchdog = (kind == "fifo").then(|| {
            let (part, import_done) = (part.clone(), import_done.clone());
            std::thread::spawn(move || {
                drop(std::fs::OpenOptions::new().write(true).open(part));
                !import_done.load(std::sync::atomic::Ordering::SeqCst)
            })
        });
        let repo = repo_on(TestDatabase::sqlite(), dir.path(), &format!("{kind}-store")).await;
        let out = repo.gdpr_import(&folder, &[], dir.path());
        import_done.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(watchdog) = watchdog {
            // Opened for reading and writing, a FIFO never blocks (Linux); it lets the
            // watchdog's open return.
            let _end = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&part)
                .unwrap();
            let opened_by_import = watchdog.join().unwrap();
            assert!(!opened_by_import, "the import opened the FIFO");
        }
        assert_eq!(out.status.code(), Some(2), "{kind}: {}", text(&out));
        let expected = format!("{} is {what}, not a regular file", part.display());
        assert!(text(&out).contains(&expected), "{kind}: {}", text(&out));
        assert!(
            repo.db.is_untouched().await,
            "{kind}: a repository was created"
        );
        assert!(!repo.store.exists(), "{kind}: a datastore was created");
    }
    // The part the link pointed at is valid: the folder holding it imports.
    let repo = repo_on(TestDatabase::sqlite(), dir.path(), "real-store").await;
    let out = repo.gdpr_import(&real, &["--json"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(report(&out)["imported"], 2);
}

/// A copy of the Synapse SQLite fixture (database and media store) a test may change.
struct SynapseCopy {
    _dir: tempfile::TempDir,
    db: PathBuf,
    media_store: PathBuf,
}

impl SynapseCopy {
    fn new() -> Self {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/synapse/sqlite");
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("homeserver.db");
        std::fs::copy(fixture.join("homeserver.db"), &db).unwrap();
        let media_store = dir.path().join("media_store");
        let status = std::process::Command::new("cp")
            .arg("-r")
            .arg(fixture.join("media_store"))
            .arg(&media_store)
            .status()
            .unwrap();
        assert!(status.success());
        Self {
            _dir: dir,
            db,
            media_store,
        }
    }

    /// A media of the fixture's expected.json, by label.
    fn media(label: &str) -> Value {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/synapse/sqlite");
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture.join("expected.json")).unwrap())
                .unwrap();
        ["local_media", "remote_media"]
            .iter()
            .flat_map(|list| expected[list].as_array().unwrap().clone())
            .find(|m| m["label"] == label)
            .unwrap_or_else(|| panic!("no fixture media {label}"))
    }

    /// Runs `gdpr_export --synapse-db` on this copy for `entity` into `destination`.
    fn gdpr_export(&self, entity: &str, destination: &Path, cwd: &Path) -> Output {
        TestCommand::new("gdpr_export")
            .args([
                "--synapse-db",
                self.db.to_str().unwrap(),
                "--media-store",
                self.media_store.to_str().unwrap(),
                "--entity",
                entity,
                "--destination",
                destination.to_str().unwrap(),
                "--json",
            ])
            .current_dir(cwd)
            .output()
    }
}

#[tokio::test]
async fn a_synapse_file_longer_than_recorded_is_listed_and_not_exported() {
    let copy = SynapseCopy::new();
    let dir = tempfile::tempdir().unwrap();
    // A sparse file of 1 TiB in place of alice's shared picture (never read: the recorded
    // length decides), a link to /dev/zero in place of her avatar (refused as a link, and
    // endless were it read), and her photo grown by one byte.
    let shared = SynapseCopy::media("alice_shared");
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(copy.media_store.join(shared["path"].as_str().unwrap()))
        .unwrap();
    file.set_len(1 << 40).unwrap();
    drop(file);
    let avatar = SynapseCopy::media("alice_avatar");
    let avatar_path = copy.media_store.join(avatar["path"].as_str().unwrap());
    std::fs::remove_file(&avatar_path).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &avatar_path).unwrap();
    let photo = SynapseCopy::media("alice_photo_1");
    let photo_path = copy.media_store.join(photo["path"].as_str().unwrap());
    let mut grown = std::fs::read(&photo_path).unwrap();
    grown.push(b'!');
    std::fs::write(&photo_path, &grown).unwrap();

    let archive = dir.path().join("alice");
    let out = copy.gdpr_export("@alice:fixture.test", &archive, dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let exported = report(&out);
    let reasons = failures(&exported);
    let reason = |media: &Value| reasons.get(media["mxc"].as_str().unwrap()).cloned();
    assert_eq!(
        reason(&shared).as_deref(),
        Some("size_mismatch"),
        "{exported}"
    );
    assert_eq!(
        reason(&photo).as_deref(),
        Some("size_mismatch"),
        "{exported}"
    );
    assert_eq!(reason(&avatar).as_deref(), Some("unreadable"), "{exported}");
    let detail = &exported["failures"]["listed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["item"] == avatar["mxc"])
        .unwrap()["detail"];
    assert!(
        detail.as_str().unwrap().contains("never followed"),
        "{detail}"
    );
    // alice_photo_2 has the photo's bytes, in its own (intact) file: exported.
    let entries = tar_entries(&archive);
    for media in [&shared, &photo, &avatar] {
        let id = media["media_id"].as_str().unwrap();
        assert!(
            entries.iter().all(|e| !e.contains(id)),
            "{id} is in the archive: {entries:?}"
        );
    }
    assert!(
        entries.iter().any(|e| e.contains(
            SynapseCopy::media("alice_photo_2")["media_id"]
                .as_str()
                .unwrap()
        )),
        "{entries:?}"
    );
    // What was exported imports cleanly.
    let target = repo_on(TestDatabase::sqlite(), dir.path(), "target").await;
    let out = target.gdpr_import(&archive, &["--json"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(report(&out)["imported"], exported["records"]);
    assert_eq!(exported["records"], 1, "{exported}");
    target.assert_blobs_intact();
}

#[tokio::test]
async fn a_non_utf8_upload_name_in_synapse_is_a_listed_failure_and_the_export_goes_on() {
    use sqlx::Connection;
    let copy = SynapseCopy::new();
    let dir = tempfile::tempdir().unwrap();
    let bad = SynapseCopy::media("alice_photo_1");
    // Another user's unreadable row: selected out in SQL, never listed in alice's report.
    let bobs_bad = SynapseCopy::media("bob_notes");
    let remote_bad = SynapseCopy::media("remote_text");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", copy.db.display()))
        .await
        .unwrap();
    for (sql, media) in [
        (
            "UPDATE local_media_repository SET upload_name = CAST(X'FF6E616D65' AS TEXT) \
             WHERE media_id = $1",
            &bad,
        ),
        (
            "UPDATE local_media_repository SET upload_name = CAST(X'FF6E616D65' AS TEXT) \
             WHERE media_id = $1",
            &bobs_bad,
        ),
        (
            "UPDATE remote_media_cache SET upload_name = CAST(X'FF6E616D65' AS TEXT) \
             WHERE media_id = $1",
            &remote_bad,
        ),
    ] {
        sqlx::query(sql)
            .bind(media["media_id"].as_str().unwrap())
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn.close().await.unwrap();

    let origin = remote_bad["origin"].as_str().unwrap();
    for (entity, bad) in [("@alice:fixture.test", &bad), (origin, &remote_bad)] {
        let archive = dir.path().join(entity.replace([':', '@'], "_"));
        let out = copy.gdpr_export(entity, &archive, dir.path());
        assert_eq!(out.status.code(), Some(1), "{entity}: {}", text(&out));
        let exported = report(&out);
        let listed = exported["failures"]["listed"].as_array().unwrap();
        let failure = listed
            .iter()
            .find(|f| f["item"] == bad["mxc"])
            .unwrap_or_else(|| panic!("{entity}: the bad row is not named: {exported}"));
        assert_eq!(failure["reason"], "bad_row", "{failure}");
        assert!(
            failure["detail"]
                .as_str()
                .unwrap()
                .contains("Synapse's database"),
            "{failure}"
        );
        assert!(
            !listed.iter().any(|f| f["item"] == bobs_bad["mxc"]),
            "{entity}: another user's unreadable row is listed: {exported}"
        );
        // The rows after the bad one were exported, and import cleanly.
        assert!(exported["records"].as_u64().unwrap() >= 2, "{exported}");
        let target = repo_on(
            TestDatabase::sqlite(),
            dir.path(),
            &format!("{entity}-store"),
        )
        .await;
        let out = target.gdpr_import(&archive, &["--json"], dir.path());
        assert_eq!(out.status.code(), Some(0), "{entity}: {}", text(&out));
        assert_eq!(report(&out)["imported"], exported["records"]);
    }
}

/// Issue #19: `gdpr_export --entity alice` (a valid server name), `@Alice:fixture.test`
/// (user IDs are lowercase) or an unknown server exited 0 with a complete, empty
/// archive. An export with no media for the entity exits 1, writes nothing, and names the
/// closest known users or servers — from our repository and straight from Synapse.
#[tokio::test]
async fn an_export_for_an_entity_without_media_writes_no_archive_and_suggests_the_closest() {
    let cwd = tempfile::tempdir().unwrap();
    for db in TestDatabase::both().await {
        let repo = Repo {
            store: cwd.path().join(format!("store-{}", db.label)),
            db,
        };
        repo.import_synapse_fixture(cwd.path());
        for (entity, suggestion) in [
            ("alice", "@alice:fixture.test"),
            ("@Alice:fixture.test", "@alice:fixture.test"),
            ("fixture.tset", "fixture.test"),
        ] {
            let destination = cwd.path().join("answer");
            let out = repo.gdpr_export(entity, &destination, &[], cwd.path());
            assert_eq!(out.status.code(), Some(1), "{entity}: {}", text(&out));
            assert!(
                text(&out).contains(&format!("Did you mean {suggestion}")),
                "{entity}: {}",
                text(&out)
            );
            assert!(!destination.exists(), "{entity}: something was written");
        }
        let out = repo.gdpr_export(
            "nowhere.example",
            &cwd.path().join("answer"),
            &[],
            cwd.path(),
        );
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            text(&out).contains("no media of nowhere.example"),
            "{}",
            text(&out)
        );
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/synapse/sqlite");
    let destination = cwd.path().join("from-synapse");
    let out = TestCommand::new("gdpr_export")
        .args([
            "--synapse-db",
            fixture.join("homeserver.db").to_str().unwrap(),
            "--media-store",
            fixture.join("media_store").to_str().unwrap(),
            "--entity",
            "alice",
            "--destination",
            destination.to_str().unwrap(),
        ])
        .current_dir(cwd.path())
        .assert_exit(1);
    assert!(text(&out).contains("@alice:fixture.test"), "{}", text(&out));
    assert!(!destination.exists());
}

/// The index of an export, unpacked from its manifest part.
fn index_of(archive: &Path) -> String {
    let unpacked = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("tar")
        .arg("-xzf")
        .arg(archive.join("export-manifest.tgz"))
        .arg("-C")
        .arg(unpacked.path())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(unpacked.path().join("index.html")).unwrap()
}

/// Issue #19 item 13: the index told the data subject nothing about what the export left
/// out. A quarantined media is listed at the end of `index.html`, with why, and not among
/// the files — exporting from our repository (both databases) and straight from Synapse.
#[tokio::test]
async fn an_exports_index_lists_a_quarantined_media_as_left_out() {
    let cwd = tempfile::tempdir().unwrap();
    let check = |index: &str, quarantined: &str, label: &str| {
        let (files, left_out) = index.split_at(index.find("id=\"left-out\"").unwrap());
        assert!(
            left_out.contains(quarantined) && left_out.contains("Quarantined"),
            "{label}: {left_out}"
        );
        assert!(
            !files.contains(quarantined),
            "{label}: listed among the files"
        );
        assert!(files.contains("1 media was left out"), "{label}");
    };
    for db in TestDatabase::both().await {
        let label = db.label;
        let repo = Repo {
            store: cwd.path().join(format!("store-{label}")),
            db,
        };
        repo.import_synapse_fixture(cwd.path());
        let quarantined = repo
            .media_of(SYNAPSE_SERVER)
            .await
            .into_iter()
            .find(|m| m.quarantined)
            .expect("the fixture quarantines a media")
            .key
            .to_string();
        let archive = cwd.path().join(format!("archive-{label}"));
        let out = repo.gdpr_export(SYNAPSE_SERVER, &archive, &[], cwd.path());
        assert_eq!(out.status.code(), Some(0), "{label}: {}", text(&out));
        check(&index_of(&archive), &quarantined, label);
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/synapse/sqlite");
    let archive = cwd.path().join("from-synapse");
    // Straight from Synapse, the media created but never uploaded fails (exit 1): it is
    // left out too, with its own reason.
    TestCommand::new("gdpr_export")
        .args([
            "--synapse-db",
            fixture.join("homeserver.db").to_str().unwrap(),
            "--media-store",
            fixture.join("media_store").to_str().unwrap(),
            "--entity",
            SYNAPSE_SERVER,
            "--destination",
            archive.to_str().unwrap(),
        ])
        .current_dir(cwd.path())
        .assert_exit(1);
    let index = index_of(&archive);
    let left_out = &index[index.find("id=\"left-out\"").unwrap()..];
    assert!(left_out.contains("Quarantined"), "from Synapse: {index}");
    assert!(
        left_out.contains("(never uploaded)"),
        "from Synapse: {index}"
    );
    assert!(
        index.contains("2 media were left out"),
        "from Synapse: {index}"
    );
}
