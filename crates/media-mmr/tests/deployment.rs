//! An MMR deployment on a real PostgreSQL (DATABASE_URL) with MMR's schema made by the
//! fixture `tests/fixtures/mmr/schema.sql`, and datastores in real folders.

use std::path::Path;

use futures::TryStreamExt;
use media_core::datastore::{BlobPayload, DatastoreExt};
use media_core::hashing::sha256_of;
use media_core::ids::{MediaId, ServerName, UserId};
use media_core::records::{MediaKey, Purpose, ThumbnailMethod};
use media_core::run::{Classify, ErrorClass};
use media_mmr::datastores::location_for;
use media_mmr::deployment::PAGE_SIZE;
use media_mmr::{Access, BlockedId, MediaKind, MmrConfig, MmrDeployment, MmrError};
use media_tests::TestDatabase;
use sqlx::{Connection, PgConnection};
use tokio::io::AsyncReadExt;

const SCHEMA: &str = include_str!("../../../tests/fixtures/mmr/schema.sql");

/// A fresh database holding MMR's schema, and `then` run on it.
async fn mmr_database(then: &str) -> TestDatabase {
    let database = TestDatabase::postgres().await;
    run_sql(&database, SCHEMA).await;
    run_sql(&database, then).await;
    database
}

async fn run_sql(database: &TestDatabase, sql: &str) {
    let mut conn = PgConnection::connect(&database.url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
}

/// A config for `database` with a file datastore `disk` (local media, thumbnails) in
/// `folder`, and a read-only one `old` in `folder/old`.
fn config(database: &TestDatabase, folder: &Path) -> MmrConfig {
    std::fs::create_dir_all(folder.join("old")).unwrap();
    MmrConfig::parse(&format!(
        "database:\n  postgres: {url}\nhomeservers:\n  - name: example.org\ndatastores:\n\
         - type: file\n  id: disk\n  forKinds: [local_media, thumbnails]\n  opts:\n    path: {disk}\n\
         - type: file\n  id: old\n  forKinds: []\n  opts:\n    path: {old}\n",
        url = database.url,
        disk = folder.display(),
        old = folder.join("old").display(),
    ))
    .unwrap()
}

async fn open(database: &TestDatabase, folder: &Path) -> Result<MmrDeployment, MmrError> {
    MmrDeployment::open(config(database, folder), Access::ReadOnly, 2).await
}

fn hash(text: &str) -> String {
    sha256_of(text.as_bytes()).to_string()
}

#[tokio::test]
async fn a_database_with_mmr_schema_opens() {
    let database = mmr_database("").await;
    let folder = tempfile::tempdir().unwrap();
    let deployment = open(&database, folder.path()).await.unwrap();
    assert_eq!(deployment.datastores().iter().count(), 2);
}

#[tokio::test]
async fn a_schema_without_datastore_id_is_refused() {
    let database = mmr_database("ALTER TABLE media DROP COLUMN datastore_id;").await;
    let folder = tempfile::tempdir().unwrap();
    let err = open(&database, folder.path()).await.unwrap_err();
    let MmrError::SchemaMissing { missing, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(missing, &["column media.datastore_id"]);
    let message = err.to_string();
    assert!(
        message.contains("start matrix-media-repo once")
            && message.contains("never creates or migrates it"),
        "{message}"
    );
    assert!(!message.contains(postgres_password()), "{message}");
    assert_eq!(err.class(), ErrorClass::Usage);
}

/// The password of the test server's URL, if any (never shown in messages), or a string
/// no message holds.
fn postgres_password() -> &'static str {
    let url = media_tests::postgres_server_url();
    let password = url::Url::parse(&url)
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
        .unwrap_or_else(|| "\u{0}no password\u{0}".into());
    Box::leak(password.into_boxed_str())
}

#[tokio::test]
async fn an_empty_database_is_refused_naming_every_table_and_left_untouched() {
    let database = TestDatabase::postgres().await;
    let folder = tempfile::tempdir().unwrap();
    let err = open(&database, folder.path()).await.unwrap_err();
    let MmrError::SchemaMissing { missing, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(
        missing,
        &[
            "table media",
            "table thumbnails",
            "table last_access",
            "table media_attributes",
            "table reserved_media",
            "table media_id_hold",
            "table background_tasks",
        ]
    );
    assert!(database.is_untouched().await);
}

#[tokio::test]
async fn rows_read_as_our_records_with_their_placement() {
    let (pic, pin, cached) = (hash("picture"), hash("pinned"), hash("cached"));
    let database = mmr_database(&format!(
        "INSERT INTO media VALUES
           ('example.org', 'pic', 'cat.png', 'image/png', '@alice:example.org', '{pic}', 7,
            'ab/cd/random', 1700000000000, TRUE, 'disk'),
           ('example.org', 'pin', '', '', '@alice:example.org', '{pin}', 6,
            '{pin_location}', 1700000000001, FALSE, 'old'),
           ('remote.org', 'cached', 'r.bin', 'application/octet-stream', '', '{cached}', 6,
            'xy/zw/other', 1600000000000, FALSE, 'disk');
         INSERT INTO media_attributes VALUES ('example.org', 'pin', 'pinned'),
                                             ('example.org', 'pic', 'none');
         INSERT INTO last_access VALUES ('{pic}', 1750000000000);
         INSERT INTO thumbnails (origin, media_id, width, height, method, content_type,
                                 size_bytes, location, creation_ts, animated, sha256_hash,
                                 datastore_id) VALUES
           ('example.org', 'pic', 96, 96, 'scale', 'image/png', 3, 't/1', 1700000000002,
            FALSE, '{t}', 'disk'),
           ('example.org', 'pic', 32, 32, 'crop', 'image/jpeg', 2, 't/2', 1700000000003,
            TRUE, '{t}', 'disk');",
        pin_location = location_for(&sha256_of(b"pinned")),
        t = hash("thumb"),
    ))
    .await;
    let folder = tempfile::tempdir().unwrap();
    let deployment = open(&database, folder.path()).await.unwrap();
    let alice: UserId = "@alice:example.org".parse().unwrap();

    let media: Vec<_> = deployment
        .media_by_uploader(&alice)
        .try_collect()
        .await
        .unwrap();
    let ids: Vec<&str> = media
        .iter()
        .map(|m| m.record.key.media_id.as_str())
        .collect();
    assert_eq!(ids, ["pic", "pin"]);
    let (pic_row, pin_row) = (&media[0], &media[1]);
    assert_eq!(pic_row.record.sha256.as_str(), pic);
    assert_eq!(pic_row.record.size_bytes, 7);
    assert_eq!(pic_row.record.upload_name.as_deref(), Some("cat.png"));
    assert_eq!(pic_row.record.content_type.as_deref(), Some("image/png"));
    assert_eq!(pic_row.record.uploader.as_ref(), Some(&alice));
    assert_eq!(pic_row.record.created_ts, 1_700_000_000_000);
    assert_eq!(pic_row.record.last_access_ts, Some(1_750_000_000_000));
    assert!(pic_row.record.quarantined);
    assert_eq!(pic_row.record.purpose, Purpose::None);
    assert_eq!(pic_row.placement.datastore_id.as_str(), "disk");
    assert_eq!(pic_row.placement.location, "ab/cd/random");
    assert_eq!(pin_row.record.purpose, Purpose::Pinned);
    assert_eq!(pin_row.record.upload_name, None);
    assert_eq!(pin_row.record.content_type, None);
    assert_eq!(pin_row.record.last_access_ts, None);
    assert_eq!(pin_row.placement.datastore_id.as_str(), "old");

    let remote: ServerName = "remote.org".parse().unwrap();
    let cached_rows: Vec<_> = deployment
        .media_by_origin(&remote)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(cached_rows.len(), 1);
    assert!(
        cached_rows[0].record.is_remote(),
        "user_id '' is a remote media"
    );

    let thumbnails = deployment.thumbnails_of(&pic_row.record.key).await.unwrap();
    let shapes: Vec<_> = thumbnails
        .iter()
        .map(|t| {
            (
                t.record.width,
                t.record.method,
                t.record.animated,
                t.placement.location.as_str(),
            )
        })
        .collect();
    assert_eq!(
        shapes,
        [
            (32, ThumbnailMethod::Crop, true, "t/2"),
            (96, ThumbnailMethod::Scale, false, "t/1")
        ]
    );
    assert_eq!(thumbnails[0].record.media, pic_row.record.key);
    assert_eq!(thumbnails[0].record.size_bytes, 2);
}

#[tokio::test]
async fn an_origin_is_read_in_pages_in_media_id_order() {
    let total = 2 * PAGE_SIZE + 7;
    let database = mmr_database(&format!(
        "INSERT INTO media SELECT 'example.org', 'm' || lpad(i::text, 5, '0'), '', '', \
           '@bob:example.org', '{h}', 1, 'loc/' || i, i, FALSE, 'disk' \
         FROM generate_series(1, {total}) AS i;",
        h = hash("same"),
    ))
    .await;
    let folder = tempfile::tempdir().unwrap();
    let deployment = open(&database, folder.path()).await.unwrap();
    let origin: ServerName = "example.org".parse().unwrap();
    let media: Vec<_> = deployment
        .media_by_origin(&origin)
        .try_collect()
        .await
        .unwrap();
    assert_eq!(media.len() as i64, total);
    assert!(
        media
            .windows(2)
            .all(|w| w[0].record.key.media_id < w[1].record.key.media_id)
    );
    let bob: UserId = "@bob:example.org".parse().unwrap();
    let count = deployment
        .media_by_uploader(&bob)
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .len();
    assert_eq!(count as i64, total);
}

#[tokio::test]
async fn an_invalid_row_is_an_error_for_that_media_only() {
    let database = mmr_database(&format!(
        "INSERT INTO media VALUES
           ('example.org', 'a', '', '', '@c:example.org', 'not-a-digest', 1, 'l', 1, FALSE, 'disk'),
           ('example.org', 'b', '', '', '@c:example.org', '{h}', 1, 'l', 1, FALSE, ''),
           ('example.org', 'c', '', '', '@c:example.org', '{h}', 1, 'l', 1, FALSE, 'disk');",
        h = hash("fine"),
    ))
    .await;
    let folder = tempfile::tempdir().unwrap();
    let deployment = open(&database, folder.path()).await.unwrap();
    let origin: ServerName = "example.org".parse().unwrap();
    let items: Vec<_> = futures::StreamExt::collect(deployment.media_by_origin(&origin)).await;
    assert_eq!(items.len(), 3);
    let errors: Vec<String> = items[..2]
        .iter()
        .map(|i| i.as_ref().unwrap_err().to_string())
        .collect();
    assert!(
        errors[0].contains("example.org/a") && errors[0].contains("sha256_hash"),
        "{errors:?}"
    );
    assert!(errors[1].contains("datastore_id is empty"), "{errors:?}");
    assert_eq!(items[2].as_ref().unwrap().record.key.media_id.as_str(), "c");
}

#[tokio::test]
async fn reserved_and_held_ids_are_reported_reserved_first() {
    let database = mmr_database(
        "INSERT INTO reserved_media VALUES ('example.org', 'gone', 'purged'),
                                           ('example.org', 'both', 'reserved too'),
                                           ('other.org', 'free', 'another origin');
         INSERT INTO media_id_hold VALUES ('example.org', 'busy', 'upload', 42),
                                          ('example.org', 'both', 'upload', 43);",
    )
    .await;
    let folder = tempfile::tempdir().unwrap();
    let deployment = open(&database, folder.path()).await.unwrap();
    let origin: ServerName = "example.org".parse().unwrap();
    let ids: Vec<MediaId> = ["gone", "busy", "both", "free"]
        .iter()
        .map(|id| id.parse().unwrap())
        .collect();
    let blocked = deployment.blocked_media_ids(&origin, &ids).await.unwrap();
    assert_eq!(blocked.len(), 3);
    assert_eq!(
        blocked[&ids[0]],
        BlockedId::Reserved {
            reason: "purged".into()
        }
    );
    assert_eq!(
        blocked[&ids[1]],
        BlockedId::Held {
            reason: "upload".into(),
            held_ts: 42
        }
    );
    assert!(matches!(blocked[&ids[2]], BlockedId::Reserved { .. }));
}

#[tokio::test]
async fn the_fixture_trigger_keeps_user_stats_from_media_rows() {
    let h = hash("x");
    let database = mmr_database(&format!(
        "INSERT INTO media VALUES
           ('example.org', 'a', '', '', '@u:example.org', '{h}', 10, 'l', 1, FALSE, 'disk'),
           ('example.org', 'b', '', '', '@u:example.org', '{h}', 5, 'l', 1, FALSE, 'disk'),
           ('example.org', 'c', '', '', '@v:example.org', '{h}', 3, 'l', 1, FALSE, 'disk');
         UPDATE media SET user_id = '@v:example.org' WHERE media_id = 'b';
         DELETE FROM media WHERE media_id = 'c';"
    ))
    .await;
    let mut conn = PgConnection::connect(&database.url).await.unwrap();
    let stats: Vec<(String, i64)> =
        sqlx::query_as("SELECT user_id, uploaded_bytes FROM user_stats ORDER BY user_id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        stats,
        [
            ("@u:example.org".to_owned(), 10),
            ("@v:example.org".to_owned(), 5)
        ]
    );
    conn.close().await.unwrap();
}

async fn read_all(payload: BlobPayload) -> Vec<u8> {
    let mut bytes = Vec::new();
    payload.into_reader().read_to_end(&mut bytes).await.unwrap();
    bytes
}

#[tokio::test]
async fn locations_are_read_whoever_named_them() {
    let database = mmr_database("").await;
    let folder = tempfile::tempdir().unwrap();
    let deployment = MmrDeployment::open(config(&database, folder.path()), Access::ReadWrite, 2)
        .await
        .unwrap();
    let disk = deployment.datastores().get("disk").unwrap();

    // Ours: content-addressed, put through the datastore.
    let put = disk.store().put_bytes(b"ours").await.unwrap();
    assert_eq!(put.blob.key, location_for(&sha256_of(b"ours")));
    assert!(folder.path().join(put.blob.key.as_str()).is_file());
    let ours = disk.open_location(put.blob.key.as_str()).await.unwrap();
    assert_eq!(read_all(ours).await, b"ours");

    // MMR's: a random name two folders deep.
    std::fs::create_dir_all(folder.path().join("Qm/x7")).unwrap();
    std::fs::write(folder.path().join("Qm/x7/AbCdidv2fmt"), b"theirs").unwrap();
    let theirs = disk.open_location("Qm/x7/AbCdidv2fmt").await.unwrap();
    assert_eq!(read_all(theirs).await, b"theirs");

    let missing = disk.open_location("Qm/x7/gone").await.unwrap_err();
    assert!(
        matches!(missing, MmrError::MissingObject { .. }),
        "{missing}"
    );
    assert_eq!(missing.class(), ErrorClass::Item);
    let missing_ours = disk
        .open_location(location_for(&sha256_of(b"never")).as_str())
        .await
        .unwrap_err();
    assert!(
        matches!(missing_ours, MmrError::MissingObject { .. }),
        "{missing_ours}"
    );

    std::fs::write(folder.path().join("secret"), b"outside").unwrap();
    let old = deployment.datastores().get("old").unwrap();
    for escaping in ["../secret", "/etc/passwd"] {
        let err = old.open_location(escaping).await.unwrap_err();
        assert!(
            !matches!(err, MmrError::MissingObject { .. }),
            "{escaping}: {err}"
        );
    }
}

#[tokio::test]
async fn new_bytes_go_to_the_last_datastore_listed_for_their_kind() {
    let database = mmr_database("").await;
    let folder = tempfile::tempdir().unwrap();
    let text = format!(
        "database:\n  postgres: {url}\nhomeservers:\n  - name: example.org\ndatastores:\n\
         - type: file\n  id: first\n  forKinds: [all]\n  opts: {{path: {a}}}\n\
         - type: file\n  id: second\n  forKinds: [local_media]\n  opts: {{path: {b}}}\n",
        url = database.url,
        a = folder.path().join("a").display(),
        b = folder.path().join("b").display(),
    );
    let config = MmrConfig::parse(&text).unwrap();
    let deployment = MmrDeployment::open(config, Access::ReadWrite, 2)
        .await
        .unwrap();
    let id_for = |kind| {
        deployment
            .datastores()
            .for_kind(kind)
            .unwrap()
            .config()
            .id
            .as_str()
            .to_owned()
    };
    assert_eq!(id_for(MediaKind::LocalMedia), "second");
    assert_eq!(id_for(MediaKind::RemoteMedia), "first");
    assert_eq!(id_for(MediaKind::Thumbnails), "first");
}

#[tokio::test]
async fn a_missing_folder_is_refused_when_reading_and_a_kind_without_datastore_too() {
    let database = mmr_database("").await;
    let folder = tempfile::tempdir().unwrap();
    let text = format!(
        "database:\n  postgres: {url}\nhomeservers:\n  - name: example.org\ndatastores:\n\
         - type: file\n  id: gone\n  forKinds: [local_media]\n  opts: {{path: {path}}}\n",
        url = database.url,
        path = folder.path().join("not-mounted").display(),
    );
    let err = MmrDeployment::open(MmrConfig::parse(&text).unwrap(), Access::ReadOnly, 2)
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("\"gone\"") && err.to_string().contains("does not exist"),
        "{err}"
    );
    assert_eq!(err.class(), ErrorClass::Usage);
    assert!(!folder.path().join("not-mounted").exists());

    let writable = MmrDeployment::open(MmrConfig::parse(&text).unwrap(), Access::ReadWrite, 2)
        .await
        .unwrap();
    let err = writable
        .datastores()
        .for_kind(MediaKind::Thumbnails)
        .unwrap_err();
    assert!(err.to_string().contains("takes thumbnails"), "{err}");
    let key = MediaKey::new("example.org".parse().unwrap(), "x".parse().unwrap());
    let placement = media_mmr::Placement {
        datastore_id: media_mmr::MmrDatastoreId::new("elsewhere").unwrap(),
        location: "l".into(),
    };
    let err = writable.datastore_of(&placement, &key).unwrap_err();
    assert!(err.to_string().contains("\"elsewhere\""), "{err}");
}

/// An S3 datastore of media-repo.yaml on the S3 test server, named the way MMR's
/// config names it (`endpoint` without a scheme, `ssl: false`), with `keys` as its
/// `accessKeyId`/`accessSecret` lines.
fn s3_datastore_config(database_url: &str, bucket: &str, keys: &str) -> String {
    let endpoint = media_store::conformance::s3_test_endpoint();
    let host = endpoint
        .strip_prefix("http://")
        .expect("S3_TEST_ENDPOINT is a plain http:// URL");
    format!(
        "database:\n  postgres: {database_url}\nhomeservers:\n  - name: example.org\n\
         datastores:\n- type: s3\n  id: bucket\n  forKinds: [all]\n  opts: {{endpoint: \
         '{host}', ssl: false, bucketName: {bucket}, {keys}}}\n",
    )
}

#[tokio::test]
async fn s3_datastores_sign_with_the_keys_of_the_config_and_never_show_the_secret() {
    let database = mmr_database("").await;
    // The test server's own keys, given in the config instead of the environment.
    let keys = format!(
        "accessKeyId: {}, accessSecret: {}",
        std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".into()),
        std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".into()),
    );
    let bucket = media_store::conformance::s3_test_bucket();
    let text = s3_datastore_config(&database.url, &bucket, &keys);
    let deployment = MmrDeployment::open(MmrConfig::parse(&text).unwrap(), Access::ReadWrite, 2)
        .await
        .unwrap();
    let store = deployment
        .datastores()
        .for_kind(MediaKind::LocalMedia)
        .unwrap()
        .store();
    let put = store.put_bytes(b"mmr bytes in a bucket").await.unwrap();
    assert_eq!(
        store.get_bytes(&put.blob.key).await.unwrap(),
        b"mmr bytes in a bucket"
    );
    store.delete(&put.blob.key).await.unwrap();

    // A bucket that does not exist: a usage error naming it, never the secret.
    let text = s3_datastore_config(
        &database.url,
        "no-such-bucket-for-mmr",
        "accessKeyId: AKIDVISIBLE, accessSecret: very-secret",
    );
    let err = MmrDeployment::open(MmrConfig::parse(&text).unwrap(), Access::ReadOnly, 2)
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("no-such-bucket-for-mmr"), "{message}");
    assert!(!message.contains("very-secret"), "{message}");
    assert_eq!(err.class(), ErrorClass::Usage);
}
