//! End-to-end tests of `import_synapse -config media-repo.yaml`: the real-Synapse fixture
//! (tests/fixtures/synapse) imported into a matrix-media-repo deployment on a real
//! PostgreSQL (MMR's schema from tests/fixtures/mmr/schema.sql) with file datastores in
//! real folders, checked as MMR reads it: rows, `(datastore_id, location)` and objects.

use std::collections::BTreeSet;
use std::process::{Child, Output};

use media_tests::mmr::{Deployment, RemoteMedia, fixture};
use media_tests::report;
use serde_json::Value;
use sqlx::Connection;

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture().join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every media of the fixture that has bytes (one was created but never uploaded).
fn expected_media(expected: &Value) -> Vec<&Value> {
    let list = |k: &str| expected[k].as_array().unwrap().iter();
    list("local_media")
        .chain(list("remote_media"))
        .filter(|m| !m["never_uploaded"].as_bool().unwrap())
        .collect()
}

/// The report of a finished import that did its work: exit 1, for the fixture's media
/// that was never uploaded.
fn finished(out: &Output) -> Value {
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    report(out)
}

fn count(report: &Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field}: {report}"))
}

#[tokio::test]
async fn the_real_synapse_fixture_lands_in_mmr_as_mmr_reads_it_and_a_rerun_writes_nothing() {
    let deployment = Deployment::new("").await;
    let first = finished(&deployment.import(&[]).output());
    let expected = expected();
    let media = expected_media(&expected);
    assert_eq!(
        count(&first, "media_imported"),
        media.len() as u64,
        "{first}"
    );
    assert_eq!(count(&first, "thumbnails_imported"), 37, "{first}");
    deployment.assert_objects_match_rows().await;

    let mut conn = deployment.connect().await;
    let pinned: BTreeSet<String> = sqlx::query_scalar(
        "SELECT origin || '/' || media_id FROM media_attributes WHERE purpose = 'pinned'",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .into_iter()
    .collect();
    for m in &media {
        let (origin, media_id) = (
            m["origin"].as_str().unwrap(),
            m["media_id"].as_str().unwrap(),
        );
        let row: (String, String, i64, i64, bool, String, String) = sqlx::query_as(
            "SELECT user_id, sha256_hash, size_bytes, creation_ts, quarantined, datastore_id, \
             upload_name FROM media WHERE origin = $1 AND media_id = $2",
        )
        .bind(origin)
        .bind(media_id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
        let label = m["label"].as_str().unwrap();
        let local = origin == "fixture.test";
        // Remote media have no uploader: MMR writes "".
        assert_eq!(row.0, m["uploader"].as_str().unwrap_or(""), "{label}");
        assert_eq!(row.0.is_empty(), !local, "{label}");
        assert_eq!(row.1, m["sha256"].as_str().unwrap(), "{label}");
        assert_eq!(row.2, m["size"].as_i64().unwrap(), "{label}");
        assert_eq!(row.3, m["created_ts"].as_i64().unwrap(), "{label}");
        assert_eq!(row.4, m["quarantined"].as_bool().unwrap(), "{label}");
        assert_eq!(row.6, m["upload_name"].as_str().unwrap_or(""), "{label}");
        let avatar = m["is_avatar"].as_bool().unwrap();
        assert_eq!(
            pinned.contains(&format!("{origin}/{media_id}")),
            avatar,
            "{label}"
        );
        if let Some(accessed) = m["last_access_ts"].as_i64() {
            let newest = media
                .iter()
                .filter(|o| o["sha256"] == m["sha256"])
                .filter_map(|o| o["last_access_ts"].as_i64())
                .max()
                .unwrap();
            assert!(newest >= accessed);
            let recorded: i64 =
                sqlx::query_scalar("SELECT last_access_ts FROM last_access WHERE sha256_hash = $1")
                    .bind(&row.1)
                    .fetch_one(&mut conn)
                    .await
                    .unwrap();
            assert_eq!(recorded, newest, "{label}");
        }
    }
    // Bytes are sorted by kind; a row lending another's placement keeps that one.
    let kinds: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT 'media ' || (origin = 'fixture.test'), datastore_id FROM media \
         UNION SELECT DISTINCT 'thumbnail', datastore_id FROM thumbnails ORDER BY 1, 2",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert!(
        kinds.contains(&("media true".into(), "local".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("media false".into(), "remote".into())),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&("thumbnail".into(), "thumbs".into())),
        "{kinds:?}"
    );
    // user_stats is MMR's trigger's alone: it holds exactly the sums of the rows.
    let stats_off: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM (SELECT user_id, SUM(size_bytes) AS bytes FROM media \
         GROUP BY user_id) m FULL JOIN user_stats s USING (user_id) \
         WHERE s.uploaded_bytes IS DISTINCT FROM m.bytes",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(stats_off, 0);
    // MMR re-runs the unfinished background tasks it finds: ours is recorded finished.
    let tasks: Vec<(String, i64)> =
        sqlx::query_as("SELECT task, end_ts FROM background_tasks ORDER BY id")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(tasks.len(), 1);
    assert!(tasks[0].1 > 0, "{tasks:?}");

    let rows = deployment.rows().await;
    let objects = deployment.objects();
    let again = finished(&deployment.import(&[]).output());
    assert_eq!(count(&again, "media_imported"), 0, "{again}");
    assert_eq!(count(&again, "thumbnails_imported"), 0, "{again}");
    assert_eq!(count(&again, "blobs_written"), 0, "{again}");
    assert_eq!(deployment.rows().await, rows);
    assert_eq!(deployment.objects(), objects);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn one_worker_and_sixteen_workers_give_the_same_rows() {
    let mut contents = Vec::new();
    for workers in ["1", "16"] {
        let deployment = Deployment::new("").await;
        finished(&deployment.import(&["--workers", workers]).output());
        deployment.assert_objects_match_rows().await;
        // Bytes shared by a local and a remote media go to the datastore of whichever
        // batch commits first (one placement per hash, either kind's datastore): with 16
        // workers that order is not fixed, so the datastore column and folder are left out.
        let rows: BTreeSet<String> = deployment
            .rows()
            .await
            .into_iter()
            .map(|row| row.replace("|local|", "|*|").replace("|remote|", "|*|"))
            .collect();
        let objects: BTreeSet<String> = deployment
            .objects()
            .into_iter()
            .map(|object| {
                object
                    .split_once('/')
                    .map_or(object.clone(), |(_, key)| key.to_owned())
            })
            .collect();
        contents.push((rows, objects));
    }
    assert!(contents[0].0.len() > 60);
    assert_eq!(contents[0], contents[1]);
}

/// Two processes at once, one importing the local media and one the remote media: the
/// fixture has a remote copy of a local media, whose bytes each would put into its own
/// datastore (local_media, remote_media). Exactly one placement survives, and the other
/// copy is deleted, whichever process records first.
#[tokio::test]
async fn two_imports_at_once_store_no_bytes_twice() {
    for _ in 0..3 {
        let deployment = Deployment::new("").await;
        let runs: Vec<Child> = ["local,thumbnails,url-previews", "remote,thumbnails"]
            .into_iter()
            .map(|include| deployment.spawn_import(include))
            .collect();
        let outputs: Vec<Output> = runs
            .into_iter()
            .map(|run| run.wait_with_output().unwrap())
            .collect();
        let local = finished(&outputs[0]);
        let remote = &outputs[1];
        assert_eq!(
            remote.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&remote.stderr)
        );
        let remote = report(remote);
        assert_eq!(
            (count(&local, "media_imported") + count(&remote, "media_imported")) as usize,
            expected_media(&expected()).len()
        );
        // One placement per digest, and no object that no row names.
        deployment.assert_objects_match_rows().await;
    }
}

/// Bytes matrix-media-repo stored itself (under a location of its own naming) are lent
/// to every media imported with the same bytes, and the import keeps no copy of its own.
#[tokio::test]
async fn bytes_mmr_already_stores_are_lent_not_stored_again() {
    let expected = expected();
    let shared = expected_media(&expected)
        .into_iter()
        .find(|m| m["label"] == "alice_shared")
        .unwrap();
    let sha256 = shared["sha256"].as_str().unwrap();
    let deployment = Deployment::new(&format!(
        "INSERT INTO media (origin, media_id, upload_name, content_type, user_id, sha256_hash, \
         size_bytes, datastore_id, location, creation_ts, quarantined) VALUES ('other.example', \
         'uploadedToMmr', 'x', 'image/png', '@u:other.example', '{sha256}', {size}, 'remote', \
         'zz/yy/mmrOwnName', 1, false);",
        size = shared["size"].as_i64().unwrap(),
    ))
    .await;
    let own = deployment.dir.path().join("remote/zz/yy");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::copy(
        fixture()
            .join("media_store")
            .join(shared["path"].as_str().unwrap()),
        own.join("mmrOwnName"),
    )
    .unwrap();
    finished(&deployment.import(&[]).output());
    let mut conn = deployment.connect().await;
    let places: Vec<(String, String)> =
        sqlx::query_as("SELECT DISTINCT datastore_id, location FROM media WHERE sha256_hash = $1")
            .bind(sha256)
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        places,
        [("remote".to_owned(), "zz/yy/mmrOwnName".to_owned())]
    );
    conn.close().await.unwrap();
    deployment.assert_objects_match_rows().await;
}

/// A media ID MMR already holds with other bytes is a conflict: its row stays as it was,
/// none of its thumbnails are written, and every other media (the same bytes under
/// another ID among them) is imported with its thumbnails.
#[tokio::test]
async fn an_mmr_row_with_other_bytes_under_the_same_id_is_a_conflict_left_untouched() {
    let expected = expected();
    let media = expected_media(&expected);
    let by_label = |label: &str| *media.iter().find(|m| m["label"] == label).unwrap();
    let (taken, twin, other) = (
        by_label("alice_photo_1"),
        by_label("alice_photo_2"),
        by_label("alice_avatar"),
    );
    let deployment = Deployment::new(&format!(
        "INSERT INTO media (origin, media_id, upload_name, content_type, user_id, sha256_hash, \
         size_bytes, datastore_id, location, creation_ts, quarantined) VALUES ('fixture.test', \
         '{id}', 'x', 'image/png', '@u:fixture.test', '{sha256}', {size}, 'local', \
         'zz/yy/mmrOwnName', 1, false);",
        id = taken["media_id"].as_str().unwrap(),
        sha256 = other["sha256"].as_str().unwrap(),
        size = other["size"].as_i64().unwrap(),
    ))
    .await;
    let own = deployment.dir.path().join("local/zz/yy");
    std::fs::create_dir_all(&own).unwrap();
    std::fs::copy(
        fixture()
            .join("media_store")
            .join(other["path"].as_str().unwrap()),
        own.join("mmrOwnName"),
    )
    .unwrap();
    let out = finished(&deployment.import(&[]).output());
    assert_eq!(
        count(&out, "media_imported") as usize,
        media.len() - 1,
        "{out}"
    );
    let conflicts: Vec<&Value> = out["failures"]["listed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["reason"] == "conflict")
        .collect();
    assert_eq!(conflicts.len(), 1, "{out}");
    let id = |m: &Value| m["media_id"].as_str().unwrap().to_owned();
    assert!(
        conflicts[0]["item"].as_str().unwrap().contains(&id(taken)),
        "{out}"
    );
    let mut conn = deployment.connect().await;
    let thumbnails = |media_id: String| {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM thumbnails WHERE media_id = $1")
            .bind(media_id)
    };
    assert_eq!(thumbnails(id(taken)).fetch_one(&mut conn).await.unwrap(), 0);
    assert_eq!(
        thumbnails(id(twin)).fetch_one(&mut conn).await.unwrap(),
        twin["thumbnails"].as_array().unwrap().len() as i64
    );
    let kept: (String, String) =
        sqlx::query_as("SELECT sha256_hash, location FROM media WHERE media_id = $1")
            .bind(id(taken))
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!(
        kept,
        (
            other["sha256"].as_str().unwrap().to_owned(),
            "zz/yy/mmrOwnName".to_owned()
        )
    );
    conn.close().await.unwrap();
    deployment.assert_objects_match_rows().await;
}

#[tokio::test]
async fn a_dry_run_writes_nothing_into_mmr_and_predicts_the_real_run() {
    let deployment = Deployment::new("").await;
    let dry = finished(&deployment.import(&["--dry-run"]).output());
    assert!(deployment.rows().await.is_empty());
    assert!(deployment.objects().is_empty());
    let real = finished(&deployment.import(&[]).output());
    for field in ["media_imported", "thumbnails_imported"] {
        assert_eq!(count(&dry, field), count(&real, field), "{field}");
    }
}

#[tokio::test]
async fn a_reserved_or_held_media_id_is_not_imported_into_mmr() {
    let expected = expected();
    let media = expected_media(&expected);
    let (reserved, held) = (&media[1], &media[2]);
    let deployment = Deployment::new(&format!(
        "INSERT INTO reserved_media (origin, media_id, reason) VALUES ('fixture.test', '{}', 'purged');
         INSERT INTO media_id_hold (origin, media_id, reason, held_ts) VALUES ('fixture.test', '{}', 'upload', 5);",
        reserved["media_id"].as_str().unwrap(),
        held["media_id"].as_str().unwrap(),
    ))
    .await;
    let out = finished(&deployment.import(&[]).output());
    assert_eq!(
        count(&out, "media_imported") as usize,
        media.len() - 2,
        "{out}"
    );
    let refused = out["failures"]["listed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["reason"] == "reserved")
        .map(|f| f["item"].as_str().unwrap().to_owned())
        .collect::<BTreeSet<_>>();
    let mxc = |m: &Value| format!("fixture.test/{}", m["media_id"].as_str().unwrap());
    assert_eq!(refused.len(), 2, "{out}");
    assert!(
        refused.iter().any(|i| i.contains(&mxc(reserved))),
        "{refused:?}"
    );
    assert!(
        refused.iter().any(|i| i.contains(&mxc(held))),
        "{refused:?}"
    );
    let rows = deployment.rows().await;
    for m in [reserved, held] {
        let id = m["media_id"].as_str().unwrap();
        assert!(!rows.iter().any(|r| r.contains(id)), "{id} was written");
    }
    deployment.assert_objects_match_rows().await;
}

#[tokio::test]
async fn a_reserved_media_id_is_not_imported_into_our_repository() {
    let expected = expected();
    let reserved = expected_media(&expected)[1];
    let media_id = reserved["media_id"].as_str().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let repo = format!("sqlite://{}", cwd.path().join("repo.db").display());
    let store = cwd.path().join("store");
    let import = |include: &str| {
        media_tests::import_sqlite_fixture(cwd.path(), &repo, store.to_str().unwrap())
            .args(["--include", include, "--json"])
            .output()
    };
    // A first run creates the repository (remote media only); then a purge's reservation.
    import("remote");
    let mut conn = sqlx::SqliteConnection::connect(&repo).await.unwrap();
    sqlx::query(
        "INSERT INTO reserved_media (origin, media_id, reason, reserved_ts) \
         VALUES ('fixture.test', $1, 'purged', 1)",
    )
    .bind(media_id)
    .execute(&mut conn)
    .await
    .unwrap();
    let out = finished(&import("local,remote,thumbnails,url-previews"));
    let refused: Vec<&Value> = out["failures"]["listed"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["reason"] == "reserved")
        .collect();
    assert_eq!(refused.len(), 1, "{out}");
    assert!(refused[0]["item"].as_str().unwrap().contains(media_id));
    let recorded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM media WHERE media_id = $1")
        .bind(media_id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(recorded, 0);
    conn.close().await.unwrap();
}

#[tokio::test]
async fn a_schema_without_datastore_id_is_refused_before_anything_is_written() {
    let deployment = Deployment::new("ALTER TABLE media DROP COLUMN datastore_id;").await;
    let out = deployment.import(&[]).assert_exit(2);
    let message = report(&out)["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("media.datastore_id"), "{message}");
    assert!(
        message.contains("start matrix-media-repo once"),
        "{message}"
    );
    let mut conn = deployment.connect().await;
    let written: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM media) + (SELECT COUNT(*) FROM thumbnails) \
         + (SELECT COUNT(*) FROM background_tasks) + (SELECT COUNT(*) FROM last_access)",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(written, 0);
    conn.close().await.unwrap();
    assert!(deployment.objects().is_empty());
}

#[tokio::test]
async fn mmr_config_with_our_repository_flags_is_a_usage_error() {
    let deployment = Deployment::new("").await;
    for flag in [["--db", "sqlite://x.db"], ["--datastore", "store"]] {
        let out = deployment.import(&flag).assert_exit(2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("cannot be used with"), "{stderr}");
    }
    assert!(!deployment.dir.path().join("x.db").exists());
}

#[tokio::test]
async fn remote_media_in_an_s3_datastore_are_stored_as_mmr_reads_them() {
    let deployment = Deployment::with("", RemoteMedia::InBucket).await;
    let out = finished(&deployment.import(&[]).output());
    assert_eq!(
        count(&out, "media_imported") as usize,
        expected_media(&expected()).len()
    );
    let mut conn = deployment.connect().await;
    let in_bucket: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM media WHERE datastore_id = 'remote'")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert!(in_bucket >= 4, "{in_bucket} remote media in the bucket");
    conn.close().await.unwrap();
    deployment.assert_objects_match_rows().await;
}
