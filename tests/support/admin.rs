//! What the `media_admin` tests share: a repository filled from the real-Synapse
//! fixture, the command, the media rows as the purge rules see them, and what a purge
//! must leave of the whole repository.

use std::collections::BTreeSet;
use std::path::Path;

use crate::{TestCommand, any_connection, walk_blobs};

/// `import_synapse` of the committed SQLite fixture into `repo` and the folder `store`
/// (exit code 1: the fixture has a media that was never uploaded).
pub fn import_fixture(cwd: &Path, repo: &str, store: &Path) {
    crate::import_sqlite_fixture(cwd, repo, store.to_str().unwrap())
        .arg("-q")
        .assert_exit(1);
}

/// `media_admin ARGS… --repo-db REPO --json`.
pub fn admin(cwd: &Path, repo: &str, args: &[&str]) -> TestCommand {
    let mut command = TestCommand::new("media_admin");
    command
        .args(args)
        .args(["--repo-db", repo, "--json"])
        .current_dir(cwd);
    command
}

/// A media row, as the purge rules look at it.
#[derive(Debug, Clone)]
pub struct Row {
    /// `origin/media_id`.
    pub key: String,
    /// Its bytes' digest.
    pub sha256: String,
    /// The uploader (none for remote media).
    pub user_id: Option<String>,
    /// Whether it is quarantined.
    pub quarantined: bool,
    /// Whether its purpose is `pinned`.
    pub pinned: bool,
    /// Created, ms.
    pub created_ts: i64,
    /// Last accessed, ms.
    pub last_access_ts: Option<i64>,
}

impl Row {
    /// The origin part of its key.
    pub fn origin(&self) -> &str {
        self.key.split('/').next().unwrap()
    }
}

/// The columns [`media_rows`] reads: key, digest, uploader, quarantined (0 or 1),
/// purpose, created and last accessed.
type MediaColumns = (
    String,
    String,
    Option<String>,
    i64,
    String,
    i64,
    Option<i64>,
);

/// Every media row of `repo`.
pub async fn media_rows(repo: &str) -> Vec<Row> {
    let mut conn = any_connection(repo).await;
    let rows: Vec<MediaColumns> = sqlx::query_as(
        "SELECT origin || '/' || media_id, sha256, user_id, \
             CASE WHEN quarantined THEN 1 ELSE 0 END, purpose, created_ts, last_access_ts \
             FROM media ORDER BY origin, media_id",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    rows.into_iter()
        .map(
            |(key, sha256, user_id, q, purpose, created_ts, last_access_ts)| Row {
                key,
                sha256,
                user_id,
                quarantined: q == 1,
                pinned: purpose == "pinned",
                created_ts,
                last_access_ts,
            },
        )
        .collect()
}

/// The strings of `sql` (one text column) in `repo`.
pub async fn strings(repo: &str, sql: &'static str) -> BTreeSet<String> {
    let mut conn = any_connection(repo).await;
    let rows: Vec<String> = sqlx::query_scalar(sql).fetch_all(&mut conn).await.unwrap();
    rows.into_iter().collect()
}

/// Rows of `sql` (one number) in `repo`.
pub async fn count(repo: &str, sql: &'static str) -> i64 {
    let mut conn = any_connection(repo).await;
    sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
}

fn is_digest(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What [`repository_contents`](crate::repository_contents) must read once the media `purged` are gone: their media
/// and thumbnail lines dropped, the blobs nothing else references dropped, the
/// quarantine change stream kept whole.
pub fn contents_without(before: &[String], purged: &BTreeSet<String>) -> Vec<String> {
    let mut kept = Vec::new();
    let mut referenced = BTreeSet::new();
    let mut blobs = Vec::new();
    for line in before {
        let words: Vec<&str> = line.split(' ').collect();
        if !words[0].contains('/') {
            blobs.push(line.clone());
            continue;
        }
        let quarantine_change = words.len() == 2 && matches!(words[1], "0" | "1");
        if quarantine_change {
            kept.push(line.clone());
        } else if !purged.contains(words[0]) {
            referenced.insert(
                if is_digest(words[1]) {
                    words[1]
                } else {
                    words[2]
                }
                .to_owned(),
            );
            kept.push(line.clone());
        }
    }
    kept.extend(
        blobs
            .into_iter()
            .filter(|line| referenced.contains(line.split(' ').next().unwrap())),
    );
    // The order repository_contents reads: media, thumbnails, blobs, quarantine changes.
    let rank = |line: &String| {
        let words: Vec<&str> = line.split(' ').collect();
        if !words[0].contains('/') {
            2
        } else if words.len() == 2 && matches!(words[1], "0" | "1") {
            3
        } else if is_digest(words[1]) {
            0
        } else {
            1
        }
    };
    let mut ranked: Vec<(usize, String)> =
        kept.into_iter().map(|line| (rank(&line), line)).collect();
    ranked.sort_by_key(|(rank, _)| *rank);
    ranked.into_iter().map(|(_, line)| line).collect()
}

/// The blob rows' digests must be exactly the objects in the folder datastore: every
/// remaining row has its object, and no object is left that no row references.
pub async fn assert_store_matches_rows(repo: &str, store: &Path, label: &str) {
    let digests = strings(repo, "SELECT sha256 FROM blobs").await;
    assert_eq!(walk_blobs(store), digests, "{label}");
    assert_eq!(
        count(repo, "SELECT COUNT(*) FROM pending_deletions").await,
        0,
        "{label}"
    );
}

/// The figures of a purge report: media, thumbnails, blobs and bytes freed, reserved.
pub fn figures(report: &serde_json::Value) -> [serde_json::Value; 5] {
    [
        "media",
        "thumbnails",
        "blobs_freed",
        "bytes_freed",
        "reserved",
    ]
    .map(|k| report[k].clone())
}
