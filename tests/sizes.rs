//! Sizes at type boundaries (issue #12): a size no database column or file can hold
//! (above `i64::MAX`, up to `u64::MAX`) is a clear per-item failure naming the item,
//! never a wrapped negative number or a silent 0.

use std::path::Path;

use futures::TryStreamExt;
use media_core::hashing::sha256_of;
use media_db::MediaIndex;
use media_tests::{TestCommand, TestDatabase, report};
use serde_json::Value;

/// An archive of `example.org` holding two media: `good` (recorded as it is) and `huge`
/// (4 bytes, but its manifest record claims `huge_size` bytes).
fn archive_with_a_huge_record(dir: &Path, huge_size: u64) -> std::path::PathBuf {
    use media_archive::{ArchiveWriter, ManifestRecord, NewEntry, WriterOptions};
    let options = WriterOptions {
        sync: false,
        ..WriterOptions::default()
    };
    let mut writer = ArchiveWriter::create(dir, &options).unwrap();
    for (media_id, bytes, size) in [
        ("good", &b"good bytes"[..], 10),
        ("huge", &b"huge"[..], huge_size),
    ] {
        let name = format!("example.org__{media_id}.png");
        let entry = NewEntry {
            name: &name,
            size: bytes.len() as u64,
            mtime_ms: 0,
            content_type: "image/png",
        };
        writer.add_entry(entry, &mut &bytes[..]).unwrap();
        let record = ManifestRecord {
            name: String::new(),
            file_name: name.clone(),
            size_bytes: size,
            sha256: sha256_of(bytes).to_string(),
            content_type: "image/png".into(),
            origin: "example.org".into(),
            media_id: media_id.into(),
            created_ts: 0,
            s3_url: String::new(),
            uploader: "@alice:example.org".into(),
        };
        writer
            .add_record(&format!("mxc://example.org/{media_id}"), &record)
            .unwrap();
    }
    writer.finish("@alice:example.org", 0).unwrap();
    dir.to_owned()
}

/// A `gdpr_import --json` of `archive` into `db` and `store`, with `extra` flags.
fn gdpr_import(db: &TestDatabase, store: &Path, archive: &Path, extra: &[&str]) -> TestCommand {
    let mut args = vec![
        "--db",
        &db.url,
        "--datastore",
        store.to_str().unwrap(),
        "--directory",
        archive.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let mut command = TestCommand::new("gdpr_import");
    command.args(args).current_dir(store.parent().unwrap());
    command
}

/// The listed failure of `item` in a report (its reason and detail), if any.
fn failure_of(report: &Value, item: &str) -> Option<String> {
    report["failures"]["listed"]
        .as_array()?
        .iter()
        .find(|f| f["item"].as_str().is_some_and(|i| i.contains(item)))
        .map(|f| {
            format!(
                "{}: {}",
                f["reason"].as_str().unwrap(),
                f["detail"].as_str().unwrap()
            )
        })
}

/// The media IDs of `example.org` recorded in the repository at `url`.
async fn recorded(url: &str) -> Vec<String> {
    let repo = media_db::connect(url).await.unwrap();
    let media: Vec<_> = repo
        .media_by_origin(&"example.org".parse().unwrap())
        .try_collect()
        .await
        .unwrap();
    repo.close().await;
    media.iter().map(|m| m.key.media_id.to_string()).collect()
}

#[tokio::test]
async fn a_manifest_size_of_2_pow_64_minus_1_is_not_reported_as_size_0() {
    for db in TestDatabase::both().await {
        let dir = tempfile::tempdir().unwrap();
        let archive = archive_with_a_huge_record(&dir.path().join("archive"), u64::MAX);
        let store = dir.path().join("store");

        // The import records the good media and lists the huge one, naming its size.
        let import = gdpr_import(&db, &store, &archive, &[]).assert_exit(1);
        let imported = report(&import);
        let reason = failure_of(&imported, "mxc://example.org/huge").expect("huge is listed");
        assert!(reason.contains("18446744073709551615"), "{reason}");
        assert!(!reason.contains("size is 0"), "{reason}");
        assert_eq!(failure_of(&imported, "mxc://example.org/good"), None);
        assert_eq!(imported["imported"], 1, "{}: {imported}", db.label);
        assert_eq!(recorded(&db.url).await, ["good"], "{}", db.label);

        // --verify says the same and writes nothing.
        let verify = gdpr_import(&db, &store, &archive, &["--verify"]).assert_exit(1);
        let reason = failure_of(&report(&verify), "mxc://example.org/huge").expect("listed");
        assert!(reason.contains("18446744073709551615"), "{reason}");
        assert!(!reason.contains("size is 0"), "{reason}");
        assert_eq!(recorded(&db.url).await, ["good"], "{}", db.label);
    }
}
