//! End-to-end: `media_admin datastores list|estimate|transfer`, the real binary against
//! real repositories (SQLite and PostgreSQL), real folders and an S3 server
//! (`S3_TEST_ENDPOINT`, which `./scripts/test` starts).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use media_core::datastore::Datastore;
use media_core::hashing::sha256_of;
use media_store::conformance::S3TestStore;
use media_tests::{
    TestCommand, TestDatabase, any_connection, report, repository_contents, walk_blobs,
};

/// `import_synapse` of the committed SQLite fixture into `repo` and the folder `store`
/// (exit code 1: the fixture has a media that was never uploaded).
fn import_fixture(cwd: &Path, repo: &str, store: &Path) {
    media_tests::import_sqlite_fixture(cwd, repo, store.to_str().unwrap())
        .arg("-q")
        .assert_exit(1);
}

/// `media_admin datastores …ARGS --repo-db REPO --json`.
fn admin(cwd: &Path, repo: &str, args: &[&str]) -> TestCommand {
    let mut command = TestCommand::new("media_admin");
    command
        .arg("datastores")
        .args(args)
        .args(["--repo-db", repo, "--json"])
        .current_dir(cwd);
    command
}

/// The `datastores list` entries, as (uri, media, blobs, bytes, thumbnails, queued).
fn listed(cwd: &Path, repo: &str) -> Vec<serde_json::Value> {
    let out = admin(cwd, repo, &["list"]).assert_exit(0);
    report(&out)["datastores"].as_array().unwrap().clone()
}

/// The digests every blob row records.
async fn recorded_digests(repo: &str) -> BTreeSet<String> {
    let mut conn = any_connection(repo).await;
    let rows: Vec<String> = sqlx::query_scalar("SELECT sha256 FROM blobs")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    rows.into_iter().collect()
}

/// Rows of `sql` (one number) in `repo`.
async fn count(repo: &str, sql: &'static str) -> i64 {
    let mut conn = any_connection(repo).await;
    sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
}

/// Every blob file of the folder datastore `root`, checked to hash to its name.
fn hashed_blobs(root: &Path) -> BTreeSet<String> {
    let names = walk_blobs(root);
    for name in &names {
        let path = root.join(&name[0..2]).join(&name[2..4]).join(name);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(sha256_of(&bytes).as_str(), name, "{}", path.display());
    }
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn file_to_s3_to_s3_to_file_keeps_every_byte_and_row_and_deletes_the_sources() {
    for db in TestDatabase::both().await {
        let cwd = tempfile::tempdir().unwrap();
        let first = cwd.path().join("first");
        import_fixture(cwd.path(), &db.url, &first);
        let before = repository_contents(&db.url).await;
        let digests = recorded_digests(&db.url).await;
        assert_eq!(hashed_blobs(&first), digests, "{}", db.label);

        let list = listed(cwd.path(), &db.url);
        assert_eq!(list.len(), 1, "{}", db.label);
        assert_eq!(list[0]["media"], 18);
        assert_eq!(list[0]["thumbnails"], 37);
        assert_eq!(list[0]["blobs"], digests.len() as u64);
        assert!(list[0]["identity"].is_string());
        let bytes = list[0]["bytes"].clone();

        let s3 = S3TestStore::new().await;
        let bucket = s3.store.uri();
        let out = admin(
            cwd.path(),
            &db.url,
            &["transfer", "--from", "1", "--to", &bucket],
        )
        .assert_exit(0);
        let moved = report(&out);
        assert_eq!(moved["blobs_moved"], digests.len() as u64, "{moved}");
        assert_eq!(moved["bytes_moved"], bytes);
        assert_eq!(moved["source_objects_deleted"], digests.len() as u64);
        assert_eq!(moved["failures"]["count"], 0);
        assert!(walk_blobs(&first).is_empty(), "{}", db.label);
        assert_eq!(repository_contents(&db.url).await, before, "{}", db.label);
        let list = listed(cwd.path(), &db.url);
        assert_eq!(
            (list[0]["blobs"].clone(), list[1]["blobs"].clone()),
            (0.into(), (digests.len() as u64).into())
        );
        assert_eq!(
            (list[1]["media"].clone(), list[1]["uri"].clone()),
            (18.into(), bucket.clone().into())
        );

        // S3 to S3: another prefix (a datastore of its own, as another bucket would be).
        let bucket_id = format!("#{}", moved["to"]);
        let other = S3TestStore::new().await;
        let out = admin(
            cwd.path(),
            &db.url,
            &["transfer", "--from", &bucket_id, "--to", &other.store.uri()],
        )
        .assert_exit(0);
        let moved = report(&out);
        assert_eq!(moved["blobs_moved"], digests.len() as u64, "{moved}");
        assert_eq!(moved["source_objects_deleted"], digests.len() as u64);
        assert_eq!(repository_contents(&db.url).await, before, "{}", db.label);
        let emptied = futures::TryStreamExt::try_collect::<Vec<_>>(s3.store.list())
            .await
            .unwrap();
        assert!(emptied.is_empty(), "{}: {emptied:?}", db.label);

        // And back, into a new folder.
        let bucket_id = format!("#{}", moved["to"]);
        let last = cwd.path().join("last");
        let out = admin(
            cwd.path(),
            &db.url,
            &[
                "transfer",
                "--from",
                &bucket_id,
                "--to",
                last.to_str().unwrap(),
                "--workers",
                "2",
            ],
        )
        .assert_exit(0);
        assert_eq!(report(&out)["blobs_moved"], digests.len() as u64);
        assert_eq!(hashed_blobs(&last), digests, "{}", db.label);
        assert_eq!(repository_contents(&db.url).await, before, "{}", db.label);
        let left = futures::TryStreamExt::try_collect::<Vec<_>>(other.store.list())
            .await
            .unwrap();
        assert!(left.is_empty(), "{}: {left:?}", db.label);
        assert_eq!(
            count(&db.url, "SELECT COUNT(*) FROM pending_deletions").await,
            0
        );
        let tasks = count(
            &db.url,
            "SELECT COUNT(*) FROM tasks WHERE kind = 'media_admin datastores transfer' \
             AND finished_ts IS NOT NULL AND error IS NULL",
        )
        .await;
        assert_eq!(tasks, 3, "{}", db.label);
    }
}

/// Imports `media` generated small media (a Synapse-shaped store made in `cwd`) into the
/// repository at `repo`, with the datastore `datastore`.
async fn import_synthetic(cwd: &Path, repo: &str, media: usize, datastore: &Path) {
    use media_tests::synthetic_synapse::{SyntheticSpec, write_synapse_sqlite};
    let source = cwd.join("synapse");
    let store = write_synapse_sqlite(&source, &SyntheticSpec::small_media(media)).await;
    TestCommand::new("import_synapse")
        .args(["--synapse-db", store.sqlite_path.to_str().unwrap()])
        .args(["--media-store", store.media_store.to_str().unwrap()])
        .args([
            "--repo-db",
            repo,
            "--datastore",
            datastore.to_str().unwrap(),
            "-q",
        ])
        .current_dir(cwd)
        .assert_exit(0);
}

/// Starts `media_admin datastores transfer` of datastore 1 into `to` with `workers`.
fn spawn_transfer(cwd: &Path, repo: &str, to: &Path, workers: usize) -> std::process::Child {
    std::process::Command::new(media_tests::binary("media_admin"))
        .args(["datastores", "transfer", "--from", "1", "-q"])
        .args(["--workers", &workers.to_string()])
        .args(["--to", to.to_str().unwrap(), "--repo-db", repo])
        .current_dir(cwd)
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_killed_mid_way_converges_on_the_next_run() {
    for db in TestDatabase::both().await {
        let cwd = tempfile::tempdir().unwrap();
        let first = cwd.path().join("first");
        import_synthetic(cwd.path(), &db.url, 200, &first).await;
        let before = repository_contents(&db.url).await;
        let digests = recorded_digests(&db.url).await;
        assert!(digests.len() > 100, "{}", digests.len());

        let second = cwd.path().join("second");
        let mut child = spawn_transfer(cwd.path(), &db.url, &second, 1);
        let deadline = Instant::now() + Duration::from_secs(60);
        // Copies visible in the destination: the run is well under way.
        let copies = |folder: &Path| {
            if folder.is_dir() {
                walk_blobs(folder).len()
            } else {
                0
            }
        };
        while copies(&second) < 40 {
            assert!(Instant::now() < deadline, "no progress in 60 s");
            assert!(
                child.try_wait().unwrap().is_none(),
                "it finished before the kill"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let moved_before_kill = walk_blobs(&second).len();
        assert!(moved_before_kill < digests.len(), "{}", db.label);

        let out = admin(
            cwd.path(),
            &db.url,
            &["transfer", "--from", "1", "--to", second.to_str().unwrap()],
        )
        .assert_exit(0);
        let resumed = report(&out);
        assert_eq!(resumed["failures"]["count"], 0, "{resumed}");
        assert_eq!(repository_contents(&db.url).await, before, "{}", db.label);
        assert!(
            walk_blobs(&first).is_empty(),
            "{}: strays in the source",
            db.label
        );
        assert_eq!(hashed_blobs(&second), digests, "{}", db.label);
        assert_eq!(
            count(&db.url, "SELECT COUNT(*) FROM pending_deletions").await,
            0,
            "{}: {resumed}",
            db.label
        );
        let second_id = resumed["to"].as_i64().unwrap();
        assert_eq!(
            count(&db.url, "SELECT COUNT(DISTINCT datastore_id) FROM blobs").await,
            1,
            "{}",
            db.label
        );
        assert_eq!(
            count(&db.url, "SELECT MIN(datastore_id) FROM blobs").await,
            second_id,
            "{}",
            db.label
        );
    }
}

/// Two thousand media on SQLite (one writer connection), eight copies at once: the
/// copies end faster than they are switched while the walk queues the next page's
/// write-ahead entries. The first pipelined transfer (fd3e001) waited forever on such a
/// store in two release runs of three: the walk, blocked handing over an ended copy,
/// held the writer in a half-done write-ahead transaction that the switch waited for.
/// (A debug build copies too slowly to get there every time.)
#[tokio::test(flavor = "multi_thread")]
async fn a_transfer_of_thousands_of_media_with_every_worker_busy_ends() {
    let db = TestDatabase::sqlite();
    let cwd = tempfile::tempdir().unwrap();
    let first = cwd.path().join("first");
    import_synthetic(cwd.path(), &db.url, 2_000, &first).await;
    let before = repository_contents(&db.url).await;
    let digests = hashed_blobs(&first);

    let second = cwd.path().join("second");
    let mut child = spawn_transfer(cwd.path(), &db.url, &second, 8);
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the transfer of {} blobs stalled", digests.len());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    assert_eq!(repository_contents(&db.url).await, before);
    assert_eq!(hashed_blobs(&second), digests);
    assert!(walk_blobs(&first).is_empty());
    assert_eq!(
        count(&db.url, "SELECT COUNT(*) FROM pending_deletions").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_destination_that_cannot_be_written_changes_nothing() {
    let db = TestDatabase::sqlite();
    let cwd = tempfile::tempdir().unwrap();
    let first = cwd.path().join("first");
    import_fixture(cwd.path(), &db.url, &first);
    let before = repository_contents(&db.url).await;
    let files = hashed_blobs(&first);

    let missing_bucket = format!(
        "s3://no-such-bucket-{:08x}?endpoint={}",
        rand::random::<u32>(),
        media_store::conformance::s3_test_endpoint()
    );
    let out = admin(
        cwd.path(),
        &db.url,
        &["transfer", "--from", "1", "--to", &missing_bucket],
    )
    .assert_exit(2);
    assert_eq!(report(&out)["error"]["class"], "usage");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no-such-bucket"), "{stderr}");

    // Credentials the server refuses.
    let bucket = format!(
        "s3://{}?endpoint={}",
        media_store::conformance::s3_test_bucket(),
        media_store::conformance::s3_strict_test_endpoint()
    );
    let out = admin(
        cwd.path(),
        &db.url,
        &["transfer", "--from", "1", "--to", &bucket],
    )
    .env("AWS_ACCESS_KEY_ID", "GK00000000000000000000made")
    .env("AWS_SECRET_ACCESS_KEY", "made-up")
    .output();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "the server at {bucket} accepted made-up credentials? Point S3_TEST_STRICT_ENDPOINT \
         at a server that checks them. {stderr}"
    );
    assert!(stderr.contains("refused the credentials"), "{stderr}");

    // A folder that cannot be created (below a file).
    let file = cwd.path().join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    let inside = file.join("store");
    admin(
        cwd.path(),
        &db.url,
        &["transfer", "--from", "1", "--to", inside.to_str().unwrap()],
    )
    .assert_exit(2);

    assert_eq!(repository_contents(&db.url).await, before);
    assert_eq!(hashed_blobs(&first), files);
    assert_eq!(
        listed(cwd.path(), &db.url).len(),
        1,
        "no datastore was recorded"
    );
    assert_eq!(
        count(&db.url, "SELECT COUNT(*) FROM pending_deletions").await,
        0
    );
    assert_eq!(
        count(
            &db.url,
            "SELECT COUNT(*) FROM tasks WHERE kind LIKE 'media_admin%'"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_damaged_copy_already_in_the_destination_is_read_back_and_refused() {
    let db = TestDatabase::sqlite();
    let cwd = tempfile::tempdir().unwrap();
    let first = cwd.path().join("first");
    import_fixture(cwd.path(), &db.url, &first);
    let before = repository_contents(&db.url).await;
    let digests = hashed_blobs(&first);
    // The destination already holds a copy of one blob, same size, other bytes: a put
    // finds it there and writes nothing, so only reading it back can tell.
    let damaged = digests.iter().next().unwrap().clone();
    let source = first
        .join(&damaged[0..2])
        .join(&damaged[2..4])
        .join(&damaged);
    let mut bytes = std::fs::read(&source).unwrap();
    bytes[0] ^= 0xff;
    let second = cwd.path().join("second");
    let planted = second.join(&damaged[0..2]).join(&damaged[2..4]);
    std::fs::create_dir_all(&planted).unwrap();
    std::fs::write(planted.join(&damaged), &bytes).unwrap();

    let to = second.to_str().unwrap();
    let out = admin(
        cwd.path(),
        &db.url,
        &["transfer", "--from", "1", "--to", to],
    )
    .assert_exit(1);
    let moved = report(&out);
    assert_eq!(moved["blobs_moved"], digests.len() as u64 - 1, "{moved}");
    let failures = &moved["failures"];
    assert_eq!(failures["count"], 1, "{moved}");
    assert_eq!(failures["listed"][0]["reason"], "verification_failed");
    assert!(
        failures["listed"][0]["item"]
            .as_str()
            .unwrap()
            .contains(&damaged),
        "{moved}"
    );
    assert_eq!(walk_blobs(&first), BTreeSet::from([damaged.clone()]));
    assert_eq!(repository_contents(&db.url).await, before);

    // The failed copy was queued for deletion before it was tried (write-ahead), so the
    // damaged object is gone, and the next run moves the last blob.
    assert!(!planted.join(&damaged).exists());
    let out = admin(
        cwd.path(),
        &db.url,
        &["transfer", "--from", "1", "--to", to],
    )
    .assert_exit(0);
    assert_eq!(report(&out)["blobs_moved"], 1);
    assert!(walk_blobs(&first).is_empty());
    assert_eq!(hashed_blobs(&second), digests);
    assert_eq!(repository_contents(&db.url).await, before);
}

#[tokio::test(flavor = "multi_thread")]
async fn before_moves_only_older_blobs_as_estimated_and_a_dry_run_changes_nothing() {
    for db in TestDatabase::both().await {
        let cwd = tempfile::tempdir().unwrap();
        let first = cwd.path().join("first");
        import_fixture(cwd.path(), &db.url, &first);
        // Age the blobs whose digest starts with 0–7: about half.
        let mut conn = any_connection(&db.url).await;
        sqlx::query("UPDATE blobs SET created_ts = 1000 WHERE sha256 < '8'")
            .execute(&mut conn)
            .await
            .unwrap();
        let old: BTreeSet<String> = recorded_digests(&db.url)
            .await
            .into_iter()
            .filter(|d| d.as_str() < "8")
            .collect();
        assert!(!old.is_empty());
        let before = repository_contents(&db.url).await;
        let files = walk_blobs(&first);

        let out = admin(
            cwd.path(),
            &db.url,
            &["estimate", "--from", "1", "--before", "1d"],
        )
        .assert_exit(0);
        let estimate = report(&out);
        assert_eq!(estimate["blobs"], old.len() as u64, "{estimate}");

        let second: PathBuf = cwd.path().join("second");
        let dry = [
            "transfer",
            "--from",
            "1",
            "--before",
            "1d",
            "--to",
            second.to_str().unwrap(),
        ];
        let out = admin(cwd.path(), &db.url, &[&dry[..], &["--dry-run"]].concat()).assert_exit(0);
        let would = report(&out);
        assert_eq!(would["blobs_moved"], estimate["blobs"], "{would}");
        assert_eq!(would["bytes_moved"], estimate["bytes"]);
        assert!(
            !second.exists(),
            "{}: the dry run created the destination",
            db.label
        );
        assert_eq!(repository_contents(&db.url).await, before);
        assert_eq!(listed(cwd.path(), &db.url).len(), 1);

        let out = admin(cwd.path(), &db.url, &dry).assert_exit(0);
        let moved = report(&out);
        assert_eq!(moved["blobs_moved"], estimate["blobs"], "{moved}");
        assert_eq!(moved["bytes_moved"], estimate["bytes"]);
        assert_eq!(walk_blobs(&second), old, "{}", db.label);
        let young: BTreeSet<String> = files.difference(&old).cloned().collect();
        assert_eq!(walk_blobs(&first), young, "{}", db.label);
        // A transfer into the source itself is refused.
        let out = admin(
            cwd.path(),
            &db.url,
            &["transfer", "--from", "1", "--to", first.to_str().unwrap()],
        )
        .assert_exit(2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("itself"), "{stderr}");
    }
}
