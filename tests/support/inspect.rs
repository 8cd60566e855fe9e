//! Reading what a run left behind: the rows of our repository (on SQLite or PostgreSQL,
//! chosen by the URL's scheme, through sqlx's `Any` driver) and the files of a datastore
//! folder.

use std::collections::BTreeSet;
use std::path::Path;

use sqlx::{AnyConnection, Connection, Row};

/// A connection to the database at `url`, SQLite or PostgreSQL alike, for the statements
/// a test runs itself (written in the SQL both dialects share; `$1`, `$2`… for
/// parameters).
pub async fn any_connection(url: &str) -> AnyConnection {
    sqlx::any::install_default_drivers();
    AnyConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("cannot open {url}: {e}"))
}

/// `url` opened read-only when it is a SQLite file, so that looking never creates it;
/// PostgreSQL URLs as they are.
fn read_only(url: &str) -> String {
    if url.starts_with("sqlite:") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}mode=ro")
    } else {
        url.to_owned()
    }
}

/// Every row of our repository that an import decides, one line per row, in a stable
/// order: the media, the thumbnails, the blobs, the quarantine changes. The lines are
/// the same for the same rows on SQLite and on PostgreSQL (a flag reads `0` or `1`).
pub async fn repository_contents(url: &str) -> Vec<String> {
    let mut conn = any_connection(url).await;
    let mut out = Vec::new();
    for sql in [
        "SELECT origin || '/' || media_id || ' ' || sha256 || ' ' || COALESCE(upload_name, '-') \
         || ' ' || COALESCE(user_id, '-') || ' ' || (CASE WHEN quarantined THEN '1' ELSE '0' END) \
         || ' ' || purpose || ' ' || CAST(created_ts AS TEXT) FROM media ORDER BY origin, media_id",
        "SELECT origin || '/' || media_id || ' ' || CAST(width AS TEXT) || 'x' \
         || CAST(height AS TEXT) || method || ' ' || sha256 FROM thumbnails ORDER BY 1",
        "SELECT sha256 || ' ' || CAST(size_bytes AS TEXT) || ' ' || location FROM blobs \
         ORDER BY sha256",
        "SELECT origin || '/' || media_id || ' ' || (CASE WHEN quarantined THEN '1' ELSE '0' END) \
         FROM quarantine_changes ORDER BY 1",
    ] {
        let rows = sqlx::query(sql)
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("cannot read {url}: {e}\n{sql}"));
        out.extend(rows.iter().map(|row| row.get::<String, _>(0)));
    }
    conn.close().await.ok();
    out
}

/// The number of media rows in the repository at `url`; 0 when it has none yet (no
/// SQLite file, which this does not create, or no `media` table).
pub async fn media_count(url: &str) -> i64 {
    sqlx::any::install_default_drivers();
    let Ok(mut conn) = AnyConnection::connect(&read_only(url)).await else {
        return 0;
    };
    let count = sqlx::query_scalar("SELECT COUNT(*) FROM media")
        .fetch_one(&mut conn)
        .await
        .unwrap_or(0);
    conn.close().await.ok();
    count
}

/// The `finished_ts` and `error` of the last task row of the repository at `url`.
pub async fn last_task(url: &str) -> (Option<i64>, Option<String>) {
    let mut conn = any_connection(url).await;
    let task = sqlx::query_as("SELECT finished_ts, error FROM tasks ORDER BY id DESC LIMIT 1")
        .fetch_one(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("no task row in {url}: {e}"));
    conn.close().await.ok();
    task
}

/// The blob files of a datastore folder (skipping its temporary folder and its identity
/// marker).
pub fn walk_blobs(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for a in std::fs::read_dir(root).unwrap().flatten() {
        if a.file_name() == ".tmp" || !a.path().is_dir() {
            continue;
        }
        for b in std::fs::read_dir(a.path()).unwrap().flatten() {
            for f in std::fs::read_dir(b.path()).unwrap().flatten() {
                out.insert(f.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TestDatabase;

    /// The same rows in a repository of each dialect read as the same lines.
    #[tokio::test]
    async fn both_dialects_read_the_same_rows_as_the_same_lines() {
        let mut seen = Vec::new();
        for db in TestDatabase::both().await {
            assert_eq!(media_count(&db.url).await, 0, "{}", db.label);
            assert!(db.is_untouched().await, "media_count created {}", db.label);
            let repo = media_db::connect(&db.url).await.unwrap();
            repo.close().await;
            let mut conn = any_connection(&db.url).await;
            for sql in [
                "INSERT INTO datastores (uri, created_ts) VALUES ('memory://inspect', 0)",
                "INSERT INTO blobs (sha256, size_bytes, datastore_id, location, created_ts) \
                 SELECT 'ab', 12, id, 'a/b/ab', 3 FROM datastores",
                "INSERT INTO media (origin, media_id, sha256, upload_name, content_type, user_id, \
                 size_bytes, created_ts, quarantined, purpose) VALUES ('example.org', 'm1', 'ab', \
                 NULL, 'image/png', '@a:example.org', 12, 5, TRUE, 'none')",
                "INSERT INTO thumbnails (origin, media_id, width, height, method, content_type, \
                 animated, sha256, size_bytes, created_ts) VALUES ('example.org', 'm1', 32, 24, \
                 'crop', 'image/png', FALSE, 'ab', 12, 6)",
                "INSERT INTO quarantine_changes (origin, media_id, quarantined, ts) \
                 VALUES ('example.org', 'm1', TRUE, 8)",
                "INSERT INTO tasks (kind, params, started_ts, finished_ts, error) \
                 VALUES ('import', '{}', 1, 2, 'it broke')",
            ] {
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(&mut conn)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}\n{sql}", db.label));
            }
            conn.close().await.unwrap();
            assert_eq!(media_count(&db.url).await, 1, "{}", db.label);
            assert_eq!(
                last_task(&db.url).await,
                (Some(2), Some("it broke".into())),
                "{}",
                db.label
            );
            seen.push(repository_contents(&db.url).await);
        }
        assert_eq!(
            seen[0],
            [
                "example.org/m1 ab - @a:example.org 1 none 5",
                "example.org/m1 32x24crop ab",
                "ab 12 a/b/ab",
                "example.org/m1 1",
            ]
        );
        assert_eq!(seen[0], seen[1]);
    }
}
