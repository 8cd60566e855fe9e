//! End-to-end tests of `import_synapse -config media-repo.yaml`: the real-Synapse fixture
//! (tests/fixtures/synapse) imported into a matrix-media-repo deployment on a real
//! PostgreSQL (MMR's schema from tests/fixtures/mmr/schema.sql) with file datastores in
//! real folders, checked as MMR reads it: rows, `(datastore_id, location)` and objects.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use media_core::datastore::DatastoreExt;
use media_core::hashing::sha256_of;
use media_tests::{TestCommand, TestDatabase, report};
use serde_json::Value;
use sqlx::{Connection, PgConnection};

const SCHEMA: &str = include_str!("fixtures/mmr/schema.sql");

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/synapse/sqlite")
}

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

/// The datastores of the test deployment: each kind in a folder of its own.
const DATASTORES: [(&str, &str); 3] = [
    ("local", "local_media"),
    ("remote", "remote_media"),
    ("thumbs", "thumbnails"),
];

/// Where the test deployment keeps remote media.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RemoteMedia {
    /// A folder, like the other kinds.
    InFolder,
    /// The S3 test server's bucket (S3_TEST_ENDPOINT, S3_TEST_BUCKET), keyed from its root
    /// as MMR keys it.
    InBucket,
}

/// A matrix-media-repo deployment: a database with MMR's schema and a media-repo.yaml
/// whose datastores are folders of a temp dir (remote media perhaps in a bucket).
struct Deployment {
    database: TestDatabase,
    dir: tempfile::TempDir,
    remote: RemoteMedia,
}

impl Deployment {
    /// MMR's schema, then `then` (to alter it); every datastore a folder.
    async fn new(then: &str) -> Self {
        Self::with(then, RemoteMedia::InFolder).await
    }

    async fn with(then: &str, remote: RemoteMedia) -> Self {
        let database = TestDatabase::postgres().await;
        let dir = tempfile::tempdir().unwrap();
        let mut yaml = format!(
            "database:\n  postgres: \"{}\"\nhomeservers:\n  - name: fixture.test\n    \
             csApi: http://localhost:8008\ndatastores:\n",
            database.url
        );
        for (id, kind) in DATASTORES {
            let path = dir.path().join(id);
            std::fs::create_dir(&path).unwrap();
            if id == "remote" && remote == RemoteMedia::InBucket {
                let endpoint = media_store::conformance::s3_test_endpoint();
                let host = endpoint
                    .strip_prefix("http://")
                    .expect("an http:// endpoint");
                yaml.push_str(&format!(
                    "  - type: s3\n    id: {id}\n    forKinds: [{kind}]\n    opts: {{endpoint: \
                     '{host}', ssl: false, bucketName: {bucket}, accessKeyId: {key}, \
                     accessSecret: {secret}}}\n",
                    bucket = media_store::conformance::s3_test_bucket(),
                    key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".into()),
                    secret =
                        std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".into()),
                ));
                continue;
            }
            yaml.push_str(&format!(
                "  - type: file\n    id: {id}\n    forKinds: [{kind}]\n    opts:\n      \
                 path: {}\n",
                path.display()
            ));
        }
        std::fs::write(dir.path().join("media-repo.yaml"), yaml).unwrap();
        let deployment = Self {
            database,
            dir,
            remote,
        };
        deployment.execute(SCHEMA).await;
        deployment.execute(then).await;
        deployment
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("media-repo.yaml")
    }

    async fn execute(&self, sql: &str) {
        let mut conn = self.connect().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }

    async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.database.url).await.unwrap()
    }

    /// `import_synapse` of the fixture into this deployment (MMR's `-config` spelling),
    /// with `--json` and `extra` flags.
    fn import(&self, extra: &[&str]) -> TestCommand {
        let mut command = TestCommand::new("import_synapse");
        command
            .arg("--synapse-db")
            .arg(fixture().join("homeserver.db"))
            .arg("--media-store")
            .arg(fixture().join("media_store"))
            .arg("-config")
            .arg(self.config())
            .arg("--json")
            .args(extra)
            .current_dir(self.dir.path());
        command
    }

    /// The same, importing only `include`, as a process of its own that runs while the
    /// test goes on.
    fn spawn_import(&self, include: &str) -> Child {
        Command::new(media_tests::binary("import_synapse"))
            .arg("--synapse-db")
            .arg(fixture().join("homeserver.db"))
            .arg("--media-store")
            .arg(fixture().join("media_store"))
            .arg("--mmr-config")
            .arg(self.config())
            .args(["--json", "--workers", "4", "--include", include])
            .current_dir(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Every `media` and `thumbnails` row, every column, one line each, sorted.
    async fn rows(&self) -> Vec<String> {
        let mut conn = self.connect().await;
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT concat_ws('|', 'media', origin, media_id, upload_name, content_type, \
             user_id, sha256_hash, size_bytes, datastore_id, location, creation_ts, \
             quarantined) FROM media \
             UNION ALL SELECT concat_ws('|', 'thumbnail', origin, media_id, width, height, \
             method, animated, content_type, size_bytes, sha256_hash, datastore_id, location, \
             creation_ts) FROM thumbnails \
             UNION ALL SELECT concat_ws('|', 'last_access', sha256_hash, last_access_ts) \
             FROM last_access \
             UNION ALL SELECT concat_ws('|', 'attribute', origin, media_id, purpose) \
             FROM media_attributes ORDER BY 1",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        rows.into_iter().map(|(r,)| r).collect()
    }

    /// `(sha256_hash, size_bytes, datastore_id, location)` of every media and thumbnail
    /// row.
    async fn placements(&self) -> Vec<(String, i64, String, String)> {
        let mut conn = self.connect().await;
        sqlx::query_as(
            "SELECT sha256_hash, size_bytes, datastore_id, location FROM media \
             UNION ALL SELECT sha256_hash, size_bytes, datastore_id, location FROM thumbnails",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap()
    }

    /// The bytes of the object at `location` in `datastore`, read as MMR reads them: the
    /// file `<path>/<location>`, or the object keyed `location` in the bucket.
    async fn object(&self, datastore: &str, location: &str) -> Vec<u8> {
        if datastore == "remote" && self.remote == RemoteMedia::InBucket {
            let config = media_mmr::MmrConfig::load(&self.config()).unwrap();
            let stores =
                media_mmr::MmrDatastores::open(&config.datastores, media_mmr::Access::ReadOnly)
                    .await
                    .unwrap();
            let key = media_core::datastore::BlobKey::parse(location).unwrap();
            return stores
                .get(datastore)
                .unwrap()
                .store()
                .get_bytes(&key)
                .await
                .unwrap();
        }
        let path = self.dir.path().join(datastore).join(location);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every object in the datastores' folders (writes in progress left out), as
    /// `datastore/location`.
    fn objects(&self) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for (id, _) in DATASTORES {
            let root = self.dir.path().join(id);
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                for entry in std::fs::read_dir(&dir).unwrap().flatten() {
                    let path = entry.path();
                    if entry.file_name() == ".tmp" {
                        continue;
                    } else if path.is_dir() {
                        stack.push(path);
                    } else {
                        let location = path.strip_prefix(&root).unwrap().display().to_string();
                        found.insert(format!("{id}/{location}"));
                    }
                }
            }
        }
        found
    }

    /// Checks every row as MMR would read it: its object at `<path>/<location>` has the
    /// row's digest and size; one placement per digest; every object named by a row.
    async fn assert_objects_match_rows(&self) {
        let placements = self.placements().await;
        let mut by_hash: BTreeMap<&str, BTreeSet<(&str, &str)>> = BTreeMap::new();
        for (sha256, size, datastore, location) in &placements {
            let bytes = self.object(datastore, location).await;
            assert_eq!(sha256_of(&bytes).as_str(), sha256, "{datastore}/{location}");
            assert_eq!(bytes.len() as i64, *size, "{datastore}/{location}");
            by_hash
                .entry(sha256)
                .or_default()
                .insert((datastore, location));
        }
        for (sha256, places) in &by_hash {
            assert_eq!(places.len(), 1, "{sha256} is stored at {places:?}");
        }
        // (A bucket shared with other tests is not listed.)
        let named: BTreeSet<String> = by_hash
            .values()
            .flatten()
            .filter(|(datastore, _)| *datastore != "remote" || self.remote == RemoteMedia::InFolder)
            .map(|(datastore, location)| format!("{datastore}/{location}"))
            .collect();
        assert_eq!(
            self.objects(),
            named,
            "objects no row names, or rows without objects"
        );
    }
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
        contents.push((deployment.rows().await, deployment.objects()));
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
