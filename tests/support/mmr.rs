//! A matrix-media-repo deployment for tests: a fresh PostgreSQL database with MMR's
//! schema (tests/fixtures/mmr/schema.sql) and a media-repo.yaml whose datastores are
//! folders of a temp dir (remote media perhaps in the S3 test server's bucket), with
//! readers of its rows and objects as MMR reads them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use media_core::datastore::DatastoreExt;
use media_core::hashing::sha256_of;
use sqlx::{Connection, PgConnection};

use crate::{TestCommand, TestDatabase};

/// MMR's schema, as its migrations leave it (the columns the tools need).
pub const SCHEMA: &str = include_str!("../fixtures/mmr/schema.sql");

/// The real-Synapse fixture (SQLite database and media store).
pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/synapse/sqlite")
}

/// The datastores of the test deployment: each kind in a folder of its own.
pub const DATASTORES: [(&str, &str); 3] = [
    ("local", "local_media"),
    ("remote", "remote_media"),
    ("thumbs", "thumbnails"),
];

/// Where the test deployment keeps remote media.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RemoteMedia {
    /// A folder, like the other kinds.
    InFolder,
    /// The S3 test server's bucket (S3_TEST_ENDPOINT, S3_TEST_BUCKET), keyed from its root
    /// as MMR keys it.
    InBucket,
}

/// A matrix-media-repo deployment: a database with MMR's schema and a media-repo.yaml
/// whose datastores are folders of a temp dir (remote media perhaps in a bucket).
pub struct Deployment {
    /// Its database (dropped with it).
    pub database: TestDatabase,
    /// The folder of its media-repo.yaml and file datastores.
    pub dir: tempfile::TempDir,
    /// Where its remote media are.
    pub remote: RemoteMedia,
}

impl Deployment {
    /// MMR's schema, then `then` (to alter it); every datastore a folder.
    pub async fn new(then: &str) -> Self {
        Self::with(then, RemoteMedia::InFolder).await
    }

    /// MMR's schema, then `then`; remote media where `remote` says.
    pub async fn with(then: &str, remote: RemoteMedia) -> Self {
        Self::serving("fixture.test", then, remote).await
    }

    /// MMR's schema, then `then`, for the homeserver `server`; remote media where
    /// `remote` says.
    pub async fn serving(server: &str, then: &str, remote: RemoteMedia) -> Self {
        let database = TestDatabase::postgres().await;
        let dir = tempfile::tempdir().unwrap();
        let mut yaml = format!(
            "database:\n  postgres: \"{}\"\nhomeservers:\n  - name: {server}\n    \
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

    /// Its media-repo.yaml.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("media-repo.yaml")
    }

    /// Runs `sql` (several statements) on its database.
    pub async fn execute(&self, sql: &str) {
        let mut conn = self.connect().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    }

    /// A connection to its database.
    pub async fn connect(&self) -> PgConnection {
        PgConnection::connect(&self.database.url).await.unwrap()
    }

    /// `import_synapse` of the fixture into this deployment (MMR's `-config` spelling),
    /// with `--json` and `extra` flags.
    pub fn import(&self, extra: &[&str]) -> TestCommand {
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
    pub fn spawn_import(&self, include: &str) -> Child {
        Command::new(crate::binary("import_synapse"))
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
    pub async fn rows(&self) -> Vec<String> {
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
    pub async fn placements(&self) -> Vec<(String, i64, String, String)> {
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
    pub async fn object(&self, datastore: &str, location: &str) -> Vec<u8> {
        if datastore == "remote" && self.remote == RemoteMedia::InBucket {
            let uri = format!(
                "s3://{}?endpoint={}",
                media_store::conformance::s3_test_bucket(),
                media_store::conformance::s3_test_endpoint()
            );
            let bucket = media_store::open(&uri).await.unwrap();
            let key = media_core::datastore::BlobKey::parse(location).unwrap();
            return bucket.get_bytes(&key).await.unwrap();
        }
        let path = self.dir.path().join(datastore).join(location);
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    /// Every object in the datastores' folders (writes in progress left out), as
    /// `datastore/location`.
    pub fn objects(&self) -> BTreeSet<String> {
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
    pub async fn assert_objects_match_rows(&self) {
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

/// Our repository (on the test PostgreSQL) and its datastore, in a folder of the test.
pub struct Repository {
    /// The repository database.
    pub db: TestDatabase,
    /// Its datastore folder.
    pub store: PathBuf,
}

impl Repository {
    /// A new repository whose datastore is `dir/name`.
    pub async fn new(dir: &Path, name: &str) -> Self {
        Self {
            db: TestDatabase::postgres().await,
            store: dir.join(name),
        }
    }

    /// `--repo-db … --datastore …`.
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--repo-db".into(),
            self.db.url.clone(),
            "--datastore".into(),
            self.store.display().to_string(),
        ]
    }

    /// `import_synapse` of the real-Synapse fixture (exit 1: its never-uploaded media
    /// is listed).
    pub fn import_fixture(&self) {
        TestCommand::new("import_synapse")
            .args(self.flags())
            .arg("--synapse-db")
            .arg(fixture().join("homeserver.db"))
            .arg("--media-store")
            .arg(fixture().join("media_store"))
            .arg("-q")
            .assert_exit(1);
    }
}
