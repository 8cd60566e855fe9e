//! Upgrading a SQLite repository that an earlier build made and filled.

use media_db::connect;
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection, SqliteConnection};

/// Every migration of this build, to apply a prefix of them.
static MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");

/// A repository migrated up to `version`, as the build that stopped there left it.
async fn repository_at(path: &std::path::Path, version: i64) -> SqliteConnection {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .foreign_keys(true)
        .connect()
        .await
        .unwrap();
    let mut earlier = Migrator::DEFAULT;
    earlier.migrations = MIGRATIONS
        .iter()
        .filter(|m| m.version <= version)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    earlier.run(&mut conn).await.unwrap();
    conn
}

async fn rows(conn: &mut SqliteConnection, sql: &'static str) -> Vec<String> {
    sqlx::query_scalar(sql).fetch_all(conn).await.unwrap()
}

#[tokio::test]
async fn blobs_keyed_by_digest_keep_every_row_and_reference() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo.db");
    let mut conn = repository_at(&path, 6).await;
    let fill = [
        "INSERT INTO datastores (id, uri, created_ts) VALUES (1, 'file:///srv/a', 1)",
        "INSERT INTO blobs VALUES ('bb', 2, 1, 'bb/bb/bb', 10), ('aa', 1, 1, 'aa/aa/aa', 11)",
        "INSERT INTO media (origin, media_id, sha256, size_bytes, created_ts) \
         VALUES ('example.org', 'one', 'bb', 2, 10), ('example.org', 'two', 'aa', 1, 11)",
    ];
    for sql in fill {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();

    let repo = connect(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    repo.close().await;

    let mut conn = SqliteConnectOptions::new()
        .filename(&path)
        .foreign_keys(true)
        .connect()
        .await
        .unwrap();
    let table = rows(
        &mut conn,
        "SELECT sql FROM sqlite_master WHERE name = 'blobs'",
    )
    .await;
    assert!(table[0].ends_with("WITHOUT ROWID"), "{table:?}");
    assert_eq!(
        rows(
            &mut conn,
            "SELECT sha256 || ' ' || size_bytes || ' ' || datastore_id || ' ' || location \
             || ' ' || created_ts FROM blobs ORDER BY sha256"
        )
        .await,
        ["aa 1 1 aa/aa/aa 11", "bb 2 1 bb/bb/bb 10"]
    );
    let dangling = rows(&mut conn, "SELECT \"table\" FROM pragma_foreign_key_check").await;
    assert!(dangling.is_empty(), "{dangling:?}");
    // The references to `blobs` still hold, and are still enforced.
    let orphan = sqlx::query(
        "INSERT INTO media (origin, media_id, sha256, size_bytes, created_ts) \
         VALUES ('example.org', 'three', 'cc', 1, 12)",
    )
    .execute(&mut conn)
    .await;
    assert!(orphan.is_err(), "a media row without its blob was accepted");
    let removed = sqlx::query("DELETE FROM blobs WHERE sha256 = 'aa'")
        .execute(&mut conn)
        .await;
    assert!(removed.is_err(), "a blob that a media row uses was deleted");
}
