//! The import pipeline against a datastore that fails on demand: a fatal datastore error
//! must end the run (not hang it), finish its task row with the error, and say what failed.

use std::sync::Arc;
use std::time::Duration;

use media_core::ids::ServerName;
use media_import::{ImportError, ImportOptions, Include, Progress, import_synapse};
use media_store::faulty::FaultyDatastore;
use media_tests::TestDatabase;
use media_tests::synthetic_synapse::{SyntheticSpec, write_synapse_sqlite};

/// Imports `media` synthetic media with `workers` workers into a datastore that fails
/// after `puts` puts, on the repository `repo_url`; returns the run's error.
async fn import_into_a_failing_datastore(
    repo_url: &str,
    media: usize,
    workers: usize,
    puts: u64,
) -> ImportError {
    let source = tempfile::tempdir().unwrap();
    let synthetic = write_synapse_sqlite(source.path(), &SyntheticSpec::small_media(media)).await;
    let synapse = media_synapse::open_synapse(synthetic.sqlite_path.to_str().unwrap())
        .await
        .unwrap();
    let repo = media_db::connect(repo_url).await.unwrap();
    let folder = tempfile::tempdir().unwrap();
    let faulty = Arc::new(
        FaultyDatastore::in_folder(folder.path(), puts)
            .await
            .unwrap(),
    );
    let options = ImportOptions {
        media_store: Some(synthetic.media_store.clone()),
        homeserver: None,
        server_name: ServerName::try_from(synthetic.server_name.as_str()).unwrap(),
        include: Include::default(),
        workers,
        mode: media_core::run::RunMode::Apply,
        source_label: "test".into(),
        shard: media_import::Shard::ALL,
    };
    let run = import_synapse(
        &synapse,
        &repo,
        faulty.clone(),
        options,
        Arc::new(Progress::default()),
    );
    // A run that hangs fails the test instead of hanging it.
    let result = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the import hung after the datastore failed");
    let error = result.expect_err("the datastore failed: the run must fail");
    assert!(faulty.refused() > 0);

    // The task row is finished, with the error.
    let (finished, task_error): (Option<i64>, Option<String>) =
        media_tests::last_task(repo_url).await;
    assert!(finished.is_some(), "the task row was left unfinished");
    let task_error = task_error.expect("the task row names the error");
    assert!(task_error.contains("No space left"), "{task_error}");
    repo.close().await;
    synapse.close().await;
    error
}

#[tokio::test]
async fn a_fatal_datastore_error_ends_the_run_instead_of_hanging_it() {
    for db in TestDatabase::both().await {
        // More media than the work queue holds, with few workers (the 24 media
        // with 2 workers), and with the default 8 workers.
        for (media, workers) in [(24, 2), (319, 8)] {
            let error = import_into_a_failing_datastore(&db.url, media, workers, 3).await;
            let shown = error.to_string();
            assert!(matches!(error, ImportError::Store(_)), "{shown}");
            assert!(shown.contains("No space left on device"), "{shown}");
        }
    }
}
