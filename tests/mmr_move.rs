//! End-to-end tests of `media_admin mmr push` and `media_admin mmr pull`: a whole
//! repository moved between ours and a matrix-media-repo deployment
//! (tests/support/mmr.rs), page by page, without an archive.

use media_tests::mmr::{Deployment, Repository};
use media_tests::{TestCommand, report, repository_contents};
use serde_json::Value;

/// `media_admin mmr push` of `ours` into `deployment` (MMR's -config spelling), JSON.
fn push(ours: &Repository, deployment: &Deployment, extra: &[&str]) -> Value {
    let out = TestCommand::new("media_admin")
        .args(["mmr", "push", "--repo-db", &ours.db.url, "-config"])
        .arg(deployment.config())
        .args(["--json", "--workers", "4"])
        .args(extra)
        .assert_exit(0);
    report(&out)
}

/// `media_admin mmr pull` of `deployment` into `ours`, JSON.
fn pull(ours: &Repository, deployment: &Deployment, extra: &[&str]) -> Value {
    let out = TestCommand::new("media_admin")
        .args(["mmr", "pull"])
        .args(ours.flags())
        .arg("--mmr-config")
        .arg(deployment.config())
        .arg("--json")
        .args(extra)
        .assert_exit(0);
    report(&out)
}

/// The counters of a report that say something was (or would be) written.
fn written(report: &Value) -> [u64; 3] {
    ["media_moved", "thumbnails_moved", "blobs_copied"].map(|k| {
        report[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k}: {report}"))
    })
}

#[tokio::test]
async fn our_repository_moves_into_mmr_as_mmr_imports_it_and_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let ours = Repository::new(dir.path(), "ours").await;
    ours.import_fixture();
    let original = repository_contents(&ours.db.url).await;

    // The same media imported by import_synapse straight into MMR: what push must write.
    let direct = Deployment::new("").await;
    direct.import(&[]).assert_exit(1);

    let mmr = Deployment::new("").await;
    let pushed = push(&ours, &mmr, &[]);
    assert_eq!(pushed["failures"]["count"], 0, "{pushed}");
    let media = original.iter().filter(|l| is_media_line(l)).count() as u64;
    assert_eq!(pushed["media_read"], media, "{pushed}");
    assert_eq!(pushed["media_moved"], media, "{pushed}");
    assert!(pushed["blobs_copied"].as_u64().unwrap() > 0, "{pushed}");
    mmr.assert_objects_match_rows().await;
    assert_eq!(
        without_placements(mmr.rows().await),
        without_placements(direct.rows().await)
    );

    // A re-run reads, skips and writes nothing.
    let (rows, objects) = (mmr.rows().await, mmr.objects());
    let again = push(&ours, &mmr, &[]);
    assert_eq!(written(&again), [0, 0, 0], "{again}");
    assert_eq!(again["already_there"], media, "{again}");
    assert_eq!((mmr.rows().await, mmr.objects()), (rows, objects));

    // Back into a fresh repository of ours: the same contents. (What legitimately
    // differs is not in repository_contents: datastore IDs and URIs, task rows, and
    // quarantined_by / imported_from, which MMR has no columns for.)
    let back = Repository::new(dir.path(), "back").await;
    let pulled = pull(&back, &mmr, &[]);
    assert_eq!(pulled["failures"]["count"], 0, "{pulled}");
    assert_eq!(pulled["media_moved"], media, "{pulled}");
    assert_eq!(repository_contents(&back.db.url).await, original);
    let again = pull(&back, &mmr, &[]);
    assert_eq!(written(&again), [0, 0, 0], "{again}");
    assert_eq!(repository_contents(&back.db.url).await, original);
}

/// MMR's rows without `datastore_id` and `location`: bytes shared by a local and a
/// remote media land in the datastore of the kind met first, and push meets media in
/// (origin, media ID) order where import_synapse meets local media first. (Each
/// placement is checked by `assert_objects_match_rows`.)
fn without_placements(rows: Vec<String>) -> Vec<String> {
    rows.into_iter()
        .map(|row| {
            let mut fields: Vec<&str> = row.split('|').collect();
            match fields[0] {
                "media" => drop(fields.drain(8..10)),
                "thumbnail" => drop(fields.drain(10..12)),
                _ => {}
            }
            fields.join("|")
        })
        .collect()
}

/// A media line of `repository_contents`: `origin/id <sha256> …`.
fn is_media_line(line: &str) -> bool {
    let words: Vec<&str> = line.split(' ').collect();
    words[0].contains('/') && words.len() > 3
}

#[tokio::test]
async fn a_dry_run_counts_what_would_move_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ours = Repository::new(dir.path(), "ours").await;
    ours.import_fixture();
    let mmr = Deployment::new("").await;
    let dry = push(&ours, &mmr, &["--dry-run"]);
    assert_eq!(dry["mode"], "dry_run", "{dry}");
    assert!(dry["media_moved"].as_u64().unwrap() > 0, "{dry}");
    assert!(dry["blobs_copied"].as_u64().unwrap() > 0, "{dry}");
    assert!(mmr.rows().await.is_empty());
    assert!(mmr.objects().is_empty());
    let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM background_tasks")
        .fetch_one(&mut mmr.connect().await)
        .await
        .unwrap();
    assert_eq!(count, 0);

    // The other way: nothing recorded in a repository that does not exist yet.
    mmr.import(&[]).assert_exit(1);
    let back = Repository::new(dir.path(), "back").await;
    let dry = pull(&back, &mmr, &["--dry-run"]);
    assert!(dry["media_moved"].as_u64().unwrap() > 0, "{dry}");
    assert!(repository_contents(&back.db.url).await.is_empty());
    assert!(!back.store.exists());
}

#[tokio::test]
async fn a_push_records_its_run_in_mmr_and_a_pull_in_our_task_log() {
    let dir = tempfile::tempdir().unwrap();
    let ours = Repository::new(dir.path(), "ours").await;
    ours.import_fixture();
    let mmr = Deployment::new("").await;
    push(&ours, &mmr, &[]);
    let tasks: Vec<(String, i64)> = sqlx::query_as("SELECT task, end_ts FROM background_tasks")
        .fetch_all(&mut mmr.connect().await)
        .await
        .unwrap();
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0].0, "media_admin mmr push");
    assert!(tasks[0].1 > 0);
    let back = Repository::new(dir.path(), "back").await;
    pull(&back, &mmr, &[]);
    let out = TestCommand::new("media_admin")
        .args(["tasks", "list", "--repo-db", &back.db.url, "--json"])
        .assert_exit(0);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("media_admin mmr pull"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn a_media_whose_bytes_are_missing_is_listed_and_the_others_move() {
    let dir = tempfile::tempdir().unwrap();
    let ours = Repository::new(dir.path(), "ours").await;
    ours.import_fixture();
    // The bytes of one media only (no other media or thumbnail shares them).
    let sha256 = "3b2f8e02953e0c7563a45ec033c3571edda4e4dd65f1b9179aa99e36579bfc24";
    std::fs::remove_file(ours.store.join("3b/2f").join(sha256)).unwrap();
    let mmr = Deployment::new("").await;
    let out = TestCommand::new("media_admin")
        .args(["mmr", "push", "--repo-db", &ours.db.url, "--mmr-config"])
        .arg(mmr.config())
        .arg("--json")
        .assert_exit(1);
    let pushed = report(&out);
    assert_eq!(pushed["failures"]["count"], 1, "{pushed}");
    let failure = &pushed["failures"]["listed"][0];
    assert_eq!(
        failure["item"],
        "mxc://fixture.test/FVbwYjunsVJcswHOZSlxYMMz"
    );
    assert_eq!(failure["reason"], "source_missing");
    let moved = pushed["media_moved"].as_u64().unwrap();
    assert_eq!(
        moved + 1,
        pushed["media_read"].as_u64().unwrap(),
        "{pushed}"
    );
    assert!(!mmr.rows().await.iter().any(|r| r.contains(sha256)));
    mmr.assert_objects_match_rows().await;
}
