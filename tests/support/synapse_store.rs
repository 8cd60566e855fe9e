//! Copies of the real-Synapse fixture (tests/fixtures/synapse) that a test may change,
//! and what the `synapse_media` suites check on them: whole rows and files before and
//! after, and a purge against its independent expectation.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sqlx::{Connection, Row};

use crate::{TestCommand, TestDatabase, any_connection, report};

/// The database engine of a fixture copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// SQLite (homeserver.db).
    Sqlite,
    /// PostgreSQL (a dump restored into a fresh database).
    Postgres,
}

/// Both engines.
pub const ENGINES: [Engine; 2] = [Engine::Sqlite, Engine::Postgres];

/// The fixture's server name.
pub const SERVER: &str = "fixture.test";

/// The purge journal's name (`media_upkeep::journal::JOURNAL_NAME`).
pub const JOURNAL: &str = ".synapse_media-purge.journal";

/// The top-level folders of a Synapse media store, which stay even when empty.
pub const TOP_LEVEL: [&str; 6] = [
    "local_content",
    "local_thumbnails",
    "remote_content",
    "remote_thumbnail",
    "url_cache",
    "url_cache_thumbnails",
];

/// The fixture folder of `engine`.
pub fn fixture(engine: Engine) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/synapse")
        .join(match engine {
            Engine::Sqlite => "sqlite",
            Engine::Postgres => "postgres",
        })
}

/// Now, in Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A Synapse database and media store a test may change.
pub struct Store {
    /// The folder holding the copy (removed when the store is dropped).
    pub dir: tempfile::TempDir,
    /// The database's URL.
    pub db_url: String,
    /// The media store folder.
    pub media_store: PathBuf,
    /// The PostgreSQL database holding the copy (dropped with the store).
    pub postgres: Option<TestDatabase>,
}

/// A copy of the real-Synapse fixture of `engine`.
pub async fn copy_fixture(engine: Engine) -> Store {
    let dir = tempfile::tempdir().unwrap();
    let media_store = dir.path().join("media_store");
    let status = std::process::Command::new("cp")
        .arg("-r")
        .arg(fixture(engine).join("media_store"))
        .arg(&media_store)
        .status()
        .unwrap();
    assert!(status.success());
    let (db_url, postgres) = match engine {
        Engine::Sqlite => {
            let db = dir.path().join("homeserver.db");
            std::fs::copy(fixture(engine).join("homeserver.db"), &db).unwrap();
            (format!("sqlite://{}", db.display()), None)
        }
        Engine::Postgres => {
            let synapse = TestDatabase::postgres().await;
            let status = std::process::Command::new("psql")
                .args(["-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null", "-d"])
                .arg(&synapse.url)
                .arg("-f")
                .arg(fixture(engine).join("synapse.sql"))
                .status()
                .expect("psql (PostgreSQL's client) must be installed to restore the fixture");
            assert!(status.success(), "restoring the Synapse dump failed");
            (synapse.url.clone(), Some(synapse))
        }
    };
    Store {
        dir,
        db_url,
        media_store,
        postgres,
    }
}

impl Store {
    /// `synapse_media` on this store with `args` (and `--json`).
    pub fn command(&self, args: &[&str]) -> TestCommand {
        let mut command = TestCommand::new("synapse_media");
        command
            .args(["--synapse-db", &self.db_url, "--media-store"])
            .arg(&self.media_store)
            .args(args)
            .arg("--json");
        command
    }

    /// Runs `sql` (any statements) on the database.
    pub async fn execute(&self, sql: &str) {
        let mut conn = any_connection(&self.db_url).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        conn.close().await.ok();
    }

    /// The first column of every row of `sql`, as text.
    pub async fn lines(&self, sql: &str) -> BTreeSet<String> {
        let mut conn = any_connection(&self.db_url).await;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        conn.close().await.ok();
        rows.iter().map(|row| row.get::<String, _>(0)).collect()
    }

    /// Every row of Synapse's media tables, one line each.
    pub async fn media_rows(&self) -> BTreeSet<String> {
        let mut rows = BTreeSet::new();
        for sql in [
            "SELECT 'local ' || media_id FROM local_media_repository",
            "SELECT 'local thumbnail ' || media_id || ' ' || thumbnail_method || \
             CAST(thumbnail_width AS TEXT) FROM local_media_repository_thumbnails",
            "SELECT 'remote ' || media_origin || '/' || media_id FROM remote_media_cache",
            "SELECT 'remote thumbnail ' || media_origin || '/' || media_id || ' ' || \
             thumbnail_method || CAST(thumbnail_width AS TEXT) FROM remote_media_cache_thumbnails",
        ] {
            rows.extend(self.lines(sql).await);
        }
        rows
    }

    /// Every regular file of the media store with its size.
    pub fn files(&self) -> BTreeMap<String, u64> {
        let mut files = BTreeMap::new();
        walk(
            &self.media_store,
            &self.media_store,
            &mut files,
            &mut Vec::new(),
        );
        files
    }

    /// The empty folders below the top-level ones.
    pub fn empty_folders(&self) -> Vec<String> {
        let mut empty = Vec::new();
        walk(
            &self.media_store,
            &self.media_store,
            &mut BTreeMap::new(),
            &mut empty,
        );
        empty.retain(|folder| !TOP_LEVEL.contains(&folder.as_str()));
        empty
    }
}

/// Collects the regular files below `dir` (relative to `root`, with sizes) and the empty
/// folders.
pub fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<String, u64>, empty: &mut Vec<String>) {
    let mut entries = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        entries += 1;
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        let relative = entry
            .path()
            .strip_prefix(root)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if kind.is_dir() {
            walk(root, &entry.path(), files, empty);
        } else {
            files.insert(relative, entry.metadata().unwrap().len());
        }
    }
    if entries == 0 && dir != root {
        empty.push(
            dir.strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
    }
}

/// `ab/cd/rest` of a Synapse ID.
pub fn fan_out(id: &str) -> String {
    format!("{}/{}/{}", &id[0..2], &id[2..4], &id[4..])
}

/// The files of `store` that belong to the media whose content is `content` and whose
/// thumbnails are in `thumbnails/`.
pub fn files_of(files: &BTreeMap<String, u64>, content: &str, thumbnails: &str) -> Vec<String> {
    files
        .keys()
        .filter(|f| *f == content || f.starts_with(&format!("{thumbnails}/")))
        .cloned()
        .collect()
}

/// What a purge should delete, computed independently of the tool.
#[derive(Debug, Default)]
pub struct Expected {
    /// `origin/media_id` of the media rows to go.
    pub media: BTreeSet<String>,
    /// Their files.
    pub files: BTreeSet<String>,
    /// Bytes of those files.
    pub bytes: u64,
}

/// An optional integer column of an `AnyRow`.
pub fn opt_i64(row: &sqlx::any::AnyRow, column: &str) -> Option<i64> {
    row.try_get::<Option<i64>, _>(column).unwrap()
}

/// The fixture's media ID with this label.
pub fn media_id(engine: Engine, label: &str) -> String {
    let text = std::fs::read_to_string(fixture(engine).join("expected.json")).unwrap();
    let expected: Value = serde_json::from_str(&text).unwrap();
    ["local_media", "remote_media"]
        .iter()
        .flat_map(|k| expected[k].as_array().unwrap().iter())
        .find(|m| m["label"] == label)
        .unwrap_or_else(|| panic!("no media labelled {label}"))["media_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Checks a real run against the expectation: exactly those rows and files went, the
/// report says so, no empty folder is left, and the dry run before it predicted it.
pub async fn assert_purged(store: &Store, args: &[&str], expected: &Expected) {
    let rows_before = store.media_rows().await;
    let files_before = store.files();
    let dry = report(&store.command(args).arg("--dry-run").assert_exit(0));
    assert_eq!(dry["dry_run"], true);
    assert_eq!(
        store.media_rows().await,
        rows_before,
        "a dry run changes no row"
    );
    assert_eq!(store.files(), files_before, "a dry run changes no file");

    let real = report(&store.command(args).assert_exit(0));
    let rows_after = store.media_rows().await;
    let gone: BTreeSet<String> = rows_before.difference(&rows_after).cloned().collect();
    let media_gone: BTreeSet<String> = gone
        .iter()
        .filter_map(|row| {
            row.strip_prefix("local ")
                .filter(|r| !r.starts_with("thumbnail "))
                .map(|id| format!("{SERVER}/{id}"))
                .or_else(|| {
                    row.strip_prefix("remote ")
                        .filter(|r| !r.starts_with("thumbnail "))
                        .map(str::to_owned)
                })
        })
        .collect();
    assert_eq!(
        media_gone, expected.media,
        "exactly the selected media rows go"
    );
    let thumbnail_rows_gone = gone.iter().filter(|r| r.contains(" thumbnail ")).count();
    assert!(
        gone.iter()
            .filter(|r| r.contains(" thumbnail "))
            .all(|r| expected
                .media
                .iter()
                .any(|m| r.contains(&format!("{} ", m.rsplit('/').next().unwrap())))),
        "only the thumbnail rows of purged media go: {gone:?}"
    );
    let files_after = store.files();
    let files_gone: BTreeSet<String> = files_before
        .keys()
        .filter(|f| !files_after.contains_key(*f))
        .cloned()
        .collect();
    assert_eq!(
        files_gone, expected.files,
        "exactly the purged media's files go"
    );
    assert_eq!(
        store.empty_folders(),
        Vec::<String>::new(),
        "no empty folder is left"
    );
    assert!(
        !store.media_store.join(JOURNAL).exists(),
        "the journal is removed"
    );

    for (key, value) in [
        ("media_deleted", expected.media.len() as u64),
        ("thumbnail_rows_deleted", thumbnail_rows_gone as u64),
        ("files_deleted", expected.files.len() as u64),
        ("bytes_freed", expected.bytes),
    ] {
        assert_eq!(real[key], value, "{key} of the real run: {real:#}");
        assert_eq!(dry[key], value, "{key} of the dry run: {dry:#}");
    }
    assert_eq!(dry["kept"], real["kept"]);
}

/// The fixture's record of the media with this label (`expected.json`).
pub fn fixture_media(engine: Engine, label: &str) -> Value {
    let text = std::fs::read_to_string(fixture(engine).join("expected.json")).unwrap();
    let expected: Value = serde_json::from_str(&text).unwrap();
    ["local_media", "remote_media"]
        .iter()
        .flat_map(|k| expected[k].as_array().unwrap().iter())
        .find(|m| m["label"] == label)
        .unwrap_or_else(|| panic!("no media labelled {label}"))
        .clone()
}

/// `mxc://…` of every quarantined media row, local and remote.
pub async fn quarantined(store: &Store) -> BTreeSet<String> {
    let mut all = store
        .lines(&format!(
            "SELECT 'mxc://{SERVER}/' || media_id FROM local_media_repository \
             WHERE quarantined_by IS NOT NULL"
        ))
        .await;
    all.extend(
        store
            .lines(
                "SELECT 'mxc://' || media_origin || '/' || media_id FROM remote_media_cache \
                 WHERE quarantined_by IS NOT NULL",
            )
            .await,
    );
    all
}
