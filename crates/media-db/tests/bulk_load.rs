//! A bulk load's secondary indexes: set aside only when the load at least doubles a
//! SQLite repository, and built again exactly as they were, by the load's end or, after
//! a load that was stopped, by the next tool that opens the repository.

use media_db::connect;
use media_tests::TestDatabase;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, Connection};

/// Every index of the repository file at `path` and the statement that made it.
async fn indexes(path: &std::path::Path) -> Vec<(String, Option<String>)> {
    let mut conn = SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap();
    let found =
        sqlx::query_as("SELECT name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();
    found
}

#[tokio::test]
async fn a_stopped_loads_indexes_are_built_by_the_next_tool_exactly_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("repo.db");
    let url = format!("sqlite://{}", path.display());
    let repo = connect(url.as_str()).await.unwrap();
    repo.close().await;
    let before = indexes(&path).await;
    let secondary = [
        "media_sha256",
        "media_user_id",
        "room_media_by_media",
        "thumbnails_sha256",
    ];
    for name in secondary {
        assert!(before.iter().any(|(n, _)| n == name), "{name}: {before:?}");
    }

    let repo = connect(url.as_str()).await.unwrap();
    assert!(repo.defer_indexes_for_load(1_000).await.unwrap());
    // Stopped here: the repository is closed with its indexes set aside.
    repo.close().await;
    let during = indexes(&path).await;
    for name in secondary {
        assert!(
            !during.iter().any(|(n, _)| n == name),
            "{name} kept: {during:?}"
        );
    }
    // What enforces uniqueness stays.
    assert!(
        during
            .iter()
            .any(|(n, _)| n.starts_with("sqlite_autoindex_media"))
    );

    let repo = connect(url.as_str()).await.unwrap();
    assert_eq!(
        repo.build_deferred_indexes().await.unwrap(),
        0,
        "built on opening"
    );
    repo.close().await;
    assert_eq!(indexes(&path).await, before);
}

#[tokio::test]
async fn only_a_load_larger_than_a_sqlite_repository_sets_its_indexes_aside() {
    for db in TestDatabase::both().await {
        let label = db.label;
        let repo = connect(db.url.as_str()).await.unwrap();
        let datastore = repo.register_datastore("file:///srv/a").await.unwrap();
        let mut conn = media_tests::any_connection(&db.url).await;
        let fill = [
            "INSERT INTO blobs (sha256, size_bytes, datastore_id, location, created_ts) \
             VALUES ('aa', 1, $1, 'aa/aa/aa', 1)",
            "INSERT INTO media (origin, media_id, sha256, size_bytes, created_ts) \
             VALUES ('example.org', 'one', 'aa', 1, 1)",
        ];
        for sql in fill {
            let query = sqlx::query(sql);
            let query = if sql.contains("$1") {
                query.bind(datastore.0)
            } else {
                query
            };
            query.execute(&mut conn).await.unwrap();
        }
        conn.close().await.unwrap();
        for incoming in [0, 1] {
            let deferred = repo.defer_indexes_for_load(incoming).await.unwrap();
            assert!(
                !deferred,
                "{label}: a load of {incoming} into a repository of 1"
            );
        }
        let deferred = repo.defer_indexes_for_load(2).await.unwrap();
        // PostgreSQL takes several importers at once: its indexes always stay.
        assert_eq!(deferred, label == "sqlite", "{label}");
        assert_eq!(repo.build_deferred_indexes().await.unwrap() > 0, deferred);
        repo.close().await;
    }
}
