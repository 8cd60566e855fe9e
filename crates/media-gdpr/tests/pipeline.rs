//! The import pipeline against a datastore that breaks mid-run: the run must end with
//! the datastore's error and a finished task row, never hang.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use media_archive::{ArchiveWriter, ManifestRecord, NewEntry, WriterOptions};
use media_core::hashing::sha256_of;
use media_db::{AttachOptions, Datastores};
use media_gdpr::import::{Mode, open_archive};
use media_gdpr::{ImportOptions, Progress, import_archive};
use media_store::ReadOnlyOpener;
use media_store::faulty::FaultyDatastore;
use media_tests::TestDatabase;

/// Writes an archive of alice's `small` media of 10 KiB and `large` media of 1.5 MiB
/// (large entries are streamed to the datastore, small ones put concurrently).
fn write_archive(dir: &Path, small: usize, large: usize) {
    let mut writer = ArchiveWriter::create(
        dir,
        &WriterOptions {
            sync: false,
            ..WriterOptions::default()
        },
    )
    .unwrap();
    let sizes = std::iter::repeat_n(10 << 10, small).chain(std::iter::repeat_n(3 << 19, large));
    for (n, size) in sizes.enumerate() {
        let bytes: Vec<u8> = (0..size).map(|i| (i * 31 + n * 7) as u8).collect();
        let name = format!("example.org__media{n}.bin");
        let entry = NewEntry {
            name: &name,
            size: size as u64,
            mtime_ms: 1,
            content_type: "application/octet-stream",
        };
        writer.add_entry(entry, &mut &bytes[..]).unwrap();
        let record = ManifestRecord {
            name: format!("{n}.bin"),
            file_name: name,
            size_bytes: size as u64,
            sha256: sha256_of(&bytes).to_string(),
            content_type: "application/octet-stream".into(),
            origin: "example.org".into(),
            media_id: format!("media{n}"),
            created_ts: 1,
            s3_url: String::new(),
            uploader: "@alice:example.org".into(),
        };
        writer
            .add_record(&format!("mxc://example.org/media{n}"), &record)
            .unwrap();
    }
    writer.finish("@alice:example.org", 1).unwrap();
}

/// Imports `archive` into a datastore that fails after `puts` puts; the run must end
/// (within a bound) with the datastore's error and leave its task row finished.
async fn import_into_a_failing_datastore(repo_url: &str, archive: &Path, puts: u64) {
    let repo = media_db::connect(repo_url).await.unwrap();
    let folder = tempfile::tempdir().unwrap();
    let faulty = Arc::new(
        FaultyDatastore::in_folder(folder.path(), puts)
            .await
            .unwrap(),
    );
    let options = ImportOptions {
        directory: archive.to_owned(),
        only_entity: None,
        allow_foreign_origins: false,
        mode: Mode::Import,
    };
    let opened = open_archive(archive).await.unwrap();
    let datastores = Datastores::attach(
        &repo,
        faulty.clone(),
        AttachOptions::WRITE,
        Arc::new(ReadOnlyOpener),
    )
    .await
    .unwrap();
    let run = import_archive(
        &repo,
        datastores,
        opened,
        options,
        Arc::new(Progress::default()),
    );
    // A run that hangs fails the test instead of hanging it.
    let result = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .unwrap_or_else(|_| panic!("{puts} puts: the import hung after the datastore failed"));
    let error = result.expect_err("the datastore failed: the run must fail");
    assert!(faulty.refused() > 0);
    let shown = error.to_string();
    assert!(
        shown.contains("No space left on device"),
        "{puts} puts: {shown}"
    );
    let (finished, task_error) = media_tests::last_task(repo_url).await;
    assert!(
        finished.is_some(),
        "{puts} puts: the task row was left unfinished"
    );
    let task_error = task_error.expect("the task row names the error");
    assert!(task_error.contains("No space left"), "{task_error}");
    repo.close().await;
}

#[test]
fn a_fatal_datastore_error_ends_gdpr_import_with_its_error_instead_of_hanging() {
    // The runtime is shut down with a bound too: a blocking thread still stuck would
    // otherwise keep the test from ending.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("archive");
        // More small entries than puts in flight, and large streamed ones after them.
        write_archive(&archive, 40, 3);
        for db in TestDatabase::both().await {
            // Failing at once, among the concurrent small puts, and on a streamed put.
            for puts in [0, 5, 40] {
                import_into_a_failing_datastore(&db.url, &archive, puts).await;
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
}
