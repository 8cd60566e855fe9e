//! `PurgeDb::delete_batch` deletes a batch in a few set-based statements, and a planned
//! media that no longer matches the selection is kept, counted as changed, with its
//! thumbnail rows. A purge of named media reads them however many there are.

use media_core::moment::Moment;
use media_core::run::RunMode;
use media_db::DatabaseLocation;
use media_tests::synthetic_synapse::{SyntheticSpec, write_synapse_sqlite};
use media_upkeep::db::open_purge_db;
use media_upkeep::plan::{MediaTable, PurgeSelection};
use sqlx::{Connection, SqliteConnection};

#[tokio::test]
async fn a_media_accessed_since_it_was_planned_is_kept_and_counted_as_changed() {
    let work = tempfile::tempdir().unwrap();
    let spec = SyntheticSpec {
        remote_ratio: 1.0,
        thumbnails_per_media: 1,
        ..SyntheticSpec::small_media(20)
    };
    let store = write_synapse_sqlite(&work.path().join("synapse"), &spec).await;
    let url = format!("sqlite://{}", store.sqlite_path.display());
    let location: DatabaseLocation = url.parse().unwrap();
    let db = open_purge_db(
        &location,
        RunMode::Apply,
        store.server_name.parse().unwrap(),
    )
    .await
    .unwrap();
    let selection = PurgeSelection::Remote {
        before: Moment::now(),
    };
    let page = db
        .candidates(&selection, MediaTable::Remote, &Default::default())
        .await
        .unwrap();
    assert_eq!(page.media.len(), 20);
    let touched = &page.media[7].key;
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    sqlx::query(
        "UPDATE remote_media_cache SET last_access_ts = last_access_ts + 864000000000 \
         WHERE media_origin = $1 AND media_id = $2",
    )
    .bind(touched.origin.as_str())
    .bind(touched.media_id.as_str())
    .execute(&mut conn)
    .await
    .unwrap();

    let deleted = db.delete_batch(&selection, &page.media).await.unwrap();

    assert_eq!(deleted.changed, 1);
    assert_eq!(deleted.media.len() as u64 + deleted.files_shared, 19);
    assert!(deleted.media.iter().all(|planned| &planned.key != touched));
    assert_eq!(deleted.thumbnails, 19);
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT r.media_id, (SELECT COUNT(*) FROM remote_media_cache_thumbnails AS t \
         WHERE t.media_origin = r.media_origin AND t.media_id = r.media_id) \
         FROM remote_media_cache AS r",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(rows, vec![(touched.media_id.to_string(), 1)]);
}

#[tokio::test]
async fn a_purge_of_more_named_remote_media_than_sqlite_chains_in_one_expression_reads_them() {
    let work = tempfile::tempdir().unwrap();
    let spec = SyntheticSpec {
        remote_ratio: 1.0,
        thumbnails_per_media: 0,
        ..SyntheticSpec::small_media(1_100)
    };
    let store = write_synapse_sqlite(&work.path().join("synapse"), &spec).await;
    let url = format!("sqlite://{}", store.sqlite_path.display());
    let mut conn = SqliteConnection::connect(&url).await.unwrap();
    let named: Vec<(String, String)> =
        sqlx::query_as("SELECT media_origin, media_id FROM remote_media_cache")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(named.len(), 1_100);
    let location: DatabaseLocation = url.parse().unwrap();
    let db = open_purge_db(
        &location,
        RunMode::DryRun,
        store.server_name.parse().unwrap(),
    )
    .await
    .unwrap();
    let selection = PurgeSelection::Media {
        media: named
            .iter()
            .map(|(origin, id)| format!("mxc://{origin}/{id}").parse().unwrap())
            .collect(),
    };
    let mut after = Default::default();
    let mut found = 0;
    loop {
        let page = db
            .candidates(&selection, MediaTable::Remote, &after)
            .await
            .unwrap();
        found += page.media.len();
        match page.next {
            Some(next) => after = next,
            None => break,
        }
    }
    assert_eq!(found, 1_100);
}
