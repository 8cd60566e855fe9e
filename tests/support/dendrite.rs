//! Dendrite-shaped media stores for the `cleanmedia` tests and benchmark: Dendrite's
//! media, user and sync tables (as Dendrite v0.15 creates them) on SQLite or PostgreSQL,
//! in one database (monolith) or three, and a media folder laid out as Dendrite writes
//! it (`<base>/<h0>/<h1>/<h2…>/file`, `thumbnail-<W>x<H>-<method>` beside it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, AssertSqlSafe};

use crate::TestDatabase;

/// The server name of every generated store.
pub const SERVER_NAME: &str = "dendrite.test";

/// One day, in ms.
pub const DAY_MS: i64 = 86_400_000;

const MEDIA_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS mediaapi_media_repository (
    media_id TEXT NOT NULL,
    media_origin TEXT NOT NULL,
    content_type TEXT NOT NULL,
    file_size_bytes BIGINT NOT NULL,
    creation_ts BIGINT NOT NULL,
    upload_name TEXT NOT NULL,
    base64hash TEXT NOT NULL,
    user_id TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS mediaapi_media_repository_index
    ON mediaapi_media_repository (media_id, media_origin);
CREATE TABLE IF NOT EXISTS mediaapi_thumbnail (
    media_id TEXT NOT NULL,
    media_origin TEXT NOT NULL,
    content_type TEXT NOT NULL,
    file_size_bytes BIGINT NOT NULL,
    creation_ts BIGINT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    resize_method TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS mediaapi_thumbnail_index
    ON mediaapi_thumbnail (media_id, media_origin, width, height, resize_method);
";

const USER_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS userapi_profiles (
    localpart TEXT NOT NULL,
    server_name TEXT NOT NULL,
    display_name TEXT,
    avatar_url TEXT,
    PRIMARY KEY (localpart, server_name)
);
";

const SYNC_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS syncapi_current_room_state (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    type TEXT NOT NULL,
    sender TEXT NOT NULL,
    contains_url BOOLEAN NOT NULL,
    state_key TEXT NOT NULL,
    headered_event_json TEXT NOT NULL,
    membership TEXT,
    added_at BIGINT,
    history_visibility SMALLINT NOT NULL DEFAULT 2,
    UNIQUE (room_id, type, state_key)
);
";

/// Which database engine a store uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// SQLite files, named in the config with `file:`.
    Sqlite,
    /// PostgreSQL databases on the test server.
    Postgres,
}

/// One media row to create, with its file (unless `file` is `None`).
#[derive(Debug, Clone)]
pub struct MediaSpec {
    /// The origin; [`SERVER_NAME`] for local uploads.
    pub origin: String,
    /// The media ID.
    pub media_id: String,
    /// The uploader ('' for remote media).
    pub user_id: String,
    /// Age in days at creation of the store.
    pub age_days: i64,
    /// The content; equal bytes share one hash directory.
    pub bytes: Vec<u8>,
    /// Whether the content file is written (a store may have lost it).
    pub write_file: bool,
    /// Thumbnails as (width, height, method): rows, and files in the hash directory.
    pub thumbnails: Vec<(u32, u32, &'static str)>,
}

impl MediaSpec {
    /// A remote media of `origin`, `age_days` old, with `bytes`.
    pub fn remote(origin: &str, media_id: &str, age_days: i64, bytes: &[u8]) -> Self {
        Self {
            origin: origin.into(),
            media_id: media_id.into(),
            user_id: String::new(),
            age_days,
            bytes: bytes.to_vec(),
            write_file: true,
            thumbnails: vec![(32, 32, "crop")],
        }
    }

    /// A local upload by `@localpart:dendrite.test`.
    pub fn local(localpart: &str, media_id: &str, age_days: i64, bytes: &[u8]) -> Self {
        Self {
            origin: SERVER_NAME.into(),
            user_id: format!("@{localpart}:{SERVER_NAME}"),
            ..Self::remote(SERVER_NAME, media_id, age_days, bytes)
        }
    }

    /// Its MXC URI.
    pub fn mxc(&self) -> String {
        format!("mxc://{}/{}", self.origin, self.media_id)
    }

    /// Its base64hash.
    pub fn hash(&self) -> String {
        base64hash(&self.bytes)
    }
}

/// SHA-256 of `bytes`, base64url without padding, as Dendrite names hash directories.
pub fn base64hash(bytes: &[u8]) -> String {
    let digest = media_core::hashing::sha256_of(bytes).to_bytes();
    base64url(&digest)
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
        }
    }
    out
}

/// A Dendrite store for one test: databases, media folder, working directory, config.
pub struct DendriteFixture {
    /// The working directory Dendrite runs in (relative config paths resolve here).
    pub workdir: PathBuf,
    /// The media folder (`media_api.base_path`).
    pub media_path: PathBuf,
    /// The engine.
    pub engine: Engine,
    /// The database URLs: one (monolith) or media, user, sync.
    urls: Vec<String>,
    /// The PostgreSQL test databases, dropped with the fixture.
    _databases: Vec<TestDatabase>,
    pools: Vec<AnyPool>,
    _dir: tempfile::TempDir,
}

impl DendriteFixture {
    /// A fresh store: one database for every component (`split` false) or three.
    pub async fn new(engine: Engine, split: bool) -> Self {
        sqlx::any::install_default_drivers();
        let dir = tempfile::tempdir().expect("temporary folder");
        let workdir = dir.path().join("dendrite");
        let media_path = workdir.join("media_store");
        std::fs::create_dir_all(&media_path).unwrap();
        let names = if split {
            &["mediaapi.db", "userapi_accounts.db", "syncapi.db"][..]
        } else {
            &["dendrite.db"][..]
        };
        let mut databases = Vec::new();
        let mut urls = Vec::new();
        for name in names {
            match engine {
                Engine::Sqlite => urls.push(format!("sqlite://{}", workdir.join(name).display())),
                Engine::Postgres => {
                    let db = TestDatabase::postgres().await;
                    urls.push(db.url.clone());
                    databases.push(db);
                }
            }
        }
        let mut pools = Vec::new();
        for (i, url) in urls.iter().enumerate() {
            let url = match engine {
                Engine::Sqlite => format!("{url}?mode=rwc"),
                Engine::Postgres => url.clone(),
            };
            let pool = AnyPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await
                .unwrap_or_else(|e| panic!("open {url}: {e}"));
            let schema = match (split, i) {
                (false, _) => format!("{MEDIA_SCHEMA}{USER_SCHEMA}{SYNC_SCHEMA}"),
                (true, 0) => MEDIA_SCHEMA.to_owned(),
                (true, 1) => USER_SCHEMA.to_owned(),
                (true, _) => SYNC_SCHEMA.to_owned(),
            };
            sqlx::raw_sql(AssertSqlSafe(schema))
                .execute(&pool)
                .await
                .expect("create Dendrite tables");
            pools.push(pool);
        }
        Self {
            workdir,
            media_path,
            engine,
            urls,
            _databases: databases,
            pools,
            _dir: dir,
        }
    }

    /// The URL of the database holding the media tables.
    pub fn media_url(&self) -> &str {
        &self.urls[0]
    }

    /// The pool holding the media tables.
    fn media_pool(&self) -> &AnyPool {
        &self.pools[0]
    }

    fn user_pool(&self) -> &AnyPool {
        &self.pools[1.min(self.pools.len() - 1)]
    }

    fn sync_pool(&self) -> &AnyPool {
        &self.pools[2.min(self.pools.len() - 1)]
    }

    /// Closes the pools; the databases go when the fixture is dropped, here.
    pub async fn finish(self) {
        for pool in &self.pools {
            pool.close().await;
        }
    }

    /// How a config names database `i`: SQLite as `file:` (the first relative to the
    /// working directory, the others absolute), PostgreSQL as a URL (the first) or as
    /// libpq `key=value` settings (the others).
    fn connection_string(&self, i: usize) -> String {
        let url = &self.urls[i];
        let path = url.strip_prefix("sqlite://").unwrap_or_default();
        match self.engine {
            Engine::Sqlite if i == 0 => {
                // Dendrite's relative form, resolved against its working directory.
                let name = Path::new(path).file_name().unwrap().to_str().unwrap();
                format!("file:{name}")
            }
            Engine::Sqlite => format!("file://{path}?_busy_timeout=5000"),
            Engine::Postgres if i == 0 => url.clone(),
            Engine::Postgres => {
                let url = url_parts(url);
                format!(
                    "host={} port={} user={} dbname={} sslmode=disable",
                    url.0, url.1, url.2, url.3
                )
            }
        }
    }

    /// Writes `dendrite.yaml` into the working directory and returns its path. A monolith
    /// sets only the global connection string; a split store sets each component's and
    /// a global one pointing at the media database (which the components must not use).
    pub fn write_config(&self, extra_global: &str) -> PathBuf {
        let global = self.connection_string(0);
        let component = |i: usize| {
            if self.urls.len() == 1 {
                String::new()
            } else {
                self.connection_string(i)
            }
        };
        let yaml = format!(
            "version: 2\nglobal:\n  server_name: {SERVER_NAME}\n  database:\n    \
             connection_string: \"{global}\"\n{extra_global}\
             media_api:\n  base_path: ./media_store\n  database:\n    connection_string: \"{}\"\n\
             user_api:\n  account_database:\n    connection_string: \"{}\"\n\
             sync_api:\n  database:\n    connection_string: \"{}\"\n",
            component(0),
            component(1),
            component(2),
        );
        let path = self.workdir.join("dendrite.yaml");
        std::fs::write(&path, yaml).unwrap();
        path
    }

    /// Inserts a media row and its thumbnail rows, and writes its files.
    pub async fn add_media(&self, media: &MediaSpec) {
        let hash = media.hash();
        let now = media_core::now_ms();
        let created = now - media.age_days * DAY_MS;
        sqlx::query(
            "INSERT INTO mediaapi_media_repository (media_id, media_origin, content_type, \
             file_size_bytes, creation_ts, upload_name, base64hash, user_id) \
             VALUES ($1, $2, 'image/png', $3, $4, 'a.png', $5, $6)",
        )
        .bind(&media.media_id)
        .bind(&media.origin)
        .bind(media.bytes.len() as i64)
        .bind(created)
        .bind(&hash)
        .bind(&media.user_id)
        .execute(self.media_pool())
        .await
        .expect("insert media row");
        for (width, height, method) in &media.thumbnails {
            sqlx::query(
                "INSERT INTO mediaapi_thumbnail (media_id, media_origin, content_type, \
                 file_size_bytes, creation_ts, width, height, resize_method) \
                 VALUES ($1, $2, 'image/jpeg', 3, $3, $4, $5, $6)",
            )
            .bind(&media.media_id)
            .bind(&media.origin)
            .bind(created)
            .bind(*width as i32)
            .bind(*height as i32)
            .bind(*method)
            .execute(self.media_pool())
            .await
            .expect("insert thumbnail row");
        }
        if media.write_file {
            let dir = self.content_dir(&hash);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("file"), &media.bytes).unwrap();
            for (width, height, method) in &media.thumbnails {
                std::fs::write(
                    dir.join(format!("thumbnail-{width}x{height}-{method}")),
                    b"jpg",
                )
                .unwrap();
            }
            set_age(&dir, Duration::from_secs(2 * 3600));
        }
    }

    /// The hash directory of a base64hash.
    pub fn content_dir(&self, hash: &str) -> PathBuf {
        self.media_path
            .join(&hash[0..1])
            .join(&hash[1..2])
            .join(&hash[2..])
    }

    /// Sets `localpart`'s profile avatar.
    pub async fn set_profile_avatar(&self, localpart: &str, mxc: &str) {
        sqlx::query(
            "INSERT INTO userapi_profiles (localpart, server_name, display_name, avatar_url) \
             VALUES ($1, $2, $1, $3)",
        )
        .bind(localpart)
        .bind(SERVER_NAME)
        .bind(mxc)
        .execute(self.user_pool())
        .await
        .expect("insert profile");
    }

    /// Adds a current state event (`m.room.avatar` or `m.room.member`) whose content is
    /// `content` (JSON). `contains_url` is false, as Dendrite leaves it.
    pub async fn add_state_event(&self, room: &str, kind: &str, state_key: &str, content: &str) {
        let event_id = format!("${:016x}", rand::random::<u64>());
        let json = format!(
            r#"{{"event_id":"{event_id}","room_id":"{room}","type":"{kind}","state_key":"{state_key}","sender":"@a:{SERVER_NAME}","content":{content}}}"#
        );
        sqlx::query(
            "INSERT INTO syncapi_current_room_state (room_id, event_id, type, sender, \
             contains_url, state_key, headered_event_json, membership, added_at) \
             VALUES ($1, $2, $3, $4, FALSE, $5, $6, 'join', 1)",
        )
        .bind(room)
        .bind(&event_id)
        .bind(kind)
        .bind(format!("@a:{SERVER_NAME}"))
        .bind(state_key)
        .bind(json)
        .execute(self.sync_pool())
        .await
        .expect("insert state event");
    }

    /// Every media row's MXC URI.
    pub async fn media_mxcs(&self) -> BTreeSet<String> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT media_origin, media_id FROM mediaapi_media_repository")
                .fetch_all(self.media_pool())
                .await
                .unwrap();
        rows.into_iter()
            .map(|(origin, id)| format!("mxc://{origin}/{id}"))
            .collect()
    }

    /// How many media rows there are.
    pub async fn media_count(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM mediaapi_media_repository")
            .fetch_one(self.media_pool())
            .await
            .unwrap()
    }

    /// The base64hashes of every media row.
    pub async fn media_hashes(&self) -> BTreeSet<String> {
        sqlx::query_scalar("SELECT base64hash FROM mediaapi_media_repository")
            .fetch_all(self.media_pool())
            .await
            .unwrap()
            .into_iter()
            .collect()
    }

    /// Every thumbnail row's MXC URI (once per row).
    pub async fn thumbnail_mxcs(&self) -> Vec<String> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT media_origin, media_id FROM mediaapi_thumbnail \
             ORDER BY media_origin, media_id",
        )
        .fetch_all(self.media_pool())
        .await
        .unwrap();
        rows.into_iter()
            .map(|(origin, id)| format!("mxc://{origin}/{id}"))
            .collect()
    }

    /// Runs a statement on the media database (to simulate drift or a crash).
    pub async fn execute_on_media(&self, sql: &str) {
        sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(self.media_pool())
            .await
            .unwrap();
    }

    /// Every file under the media folder, relative to it, sorted.
    pub fn files(&self) -> Vec<String> {
        let mut files = Vec::new();
        walk(&self.media_path, &self.media_path, &mut files);
        files.sort();
        files
    }
}

/// A large store for benchmarks: `rows` old remote media rows (each with one thumbnail
/// row and file) over `directories` hash directories, a fifth of which are shared by
/// several rows (the rest hold one row each).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LargeStoreSpec {
    /// Media rows.
    pub rows: usize,
    /// Hash directories (at most `rows`).
    pub directories: usize,
}

/// Media rows inserted per statement by [`DendriteFixture::generate`].
const ROWS_PER_INSERT: usize = 500;

impl DendriteFixture {
    /// Fills the store with `spec`'s media: rows and thumbnail rows inserted in large
    /// statements, files written, every directory aged two hours (so the sanity check
    /// looks at all of them). Returns the bytes on disk.
    pub async fn generate(&self, spec: LargeStoreSpec) -> u64 {
        assert!(spec.directories <= spec.rows && spec.directories >= 5);
        let shared = spec.directories / 5;
        let single = spec.directories - shared;
        // Row i < single uses directory i; the others go round-robin over the shared ones.
        let directory_of = |row: usize| {
            if row < single {
                row
            } else {
                single + (row - single) % shared
            }
        };
        let content = |dir: usize| format!("{dir:064}").into_bytes();
        let created = media_core::now_ms() - 365 * DAY_MS;
        let mut disk_bytes = 0;
        for dir in 0..spec.directories {
            let bytes = content(dir);
            let path = self.content_dir(&base64hash(&bytes));
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(path.join("file"), &bytes).unwrap();
            std::fs::write(path.join("thumbnail-32x32-crop"), b"jpg").unwrap();
            set_age(&path, Duration::from_secs(2 * 3600));
            disk_bytes += bytes.len() as u64 + 3;
        }
        let hashes: Vec<String> = (0..spec.directories)
            .map(|dir| base64hash(&content(dir)))
            .collect();
        // SQLite looks numbered placeholders up linearly: give it `?`.
        let ph = |n: usize| match self.engine {
            Engine::Sqlite => "?".to_owned(),
            Engine::Postgres => format!("${n}"),
        };
        let mut tx = self.media_pool().begin().await.unwrap();
        for start in (0..spec.rows).step_by(ROWS_PER_INSERT) {
            let rows: Vec<usize> = (start..spec.rows.min(start + ROWS_PER_INSERT)).collect();
            let media_values: Vec<String> = (0..rows.len())
                .map(|i| {
                    let p = 4 * i;
                    format!(
                        "({}, {}, 'image/png', 64, {}, '', {}, '')",
                        ph(p + 1),
                        ph(p + 2),
                        ph(p + 3),
                        ph(p + 4)
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO mediaapi_media_repository (media_id, media_origin, content_type, \
                 file_size_bytes, creation_ts, upload_name, base64hash, user_id) VALUES {}",
                media_values.join(", ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for &row in &rows {
                query = query
                    .bind(format!("m{row:09}"))
                    .bind(format!("remote{}.example", row % 3))
                    .bind(created + row as i64)
                    .bind(hashes[directory_of(row)].clone());
            }
            query.execute(&mut *tx).await.expect("insert media rows");
            let thumb_values: Vec<String> = (0..rows.len())
                .map(|i| {
                    let p = 3 * i;
                    format!(
                        "({}, {}, 'image/jpeg', 3, {}, 32, 32, 'crop')",
                        ph(p + 1),
                        ph(p + 2),
                        ph(p + 3)
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO mediaapi_thumbnail (media_id, media_origin, content_type, \
                 file_size_bytes, creation_ts, width, height, resize_method) VALUES {}",
                thumb_values.join(", ")
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for &row in &rows {
                query = query
                    .bind(format!("m{row:09}"))
                    .bind(format!("remote{}.example", row % 3))
                    .bind(created + row as i64);
            }
            query
                .execute(&mut *tx)
                .await
                .expect("insert thumbnail rows");
        }
        tx.commit().await.unwrap();
        disk_bytes
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(root, &path, out);
        } else {
            out.push(path.strip_prefix(root).unwrap().display().to_string());
        }
    }
}

/// (host, port, user, database) of a `postgres://user@host:port/db` URL.
fn url_parts(url: &str) -> (String, String, String, String) {
    let rest = url.split_once("://").unwrap().1;
    let (user, rest) = rest.split_once('@').unwrap();
    let (hostport, db) = rest.split_once('/').unwrap();
    let (host, port) = hostport.split_once(':').unwrap_or((hostport, "5432"));
    let db = db.split('?').next().unwrap();
    let user = user.split(':').next().unwrap();
    (host.into(), port.into(), user.into(), db.into())
}

/// Sets a file's or directory's modification time to `age` ago.
pub fn set_age(path: &Path, age: Duration) {
    let file = std::fs::File::open(path).unwrap();
    file.set_modified(SystemTime::now() - age).unwrap();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_unpadded_base64url_of_sha256() {
        // SHA-256("") = e3b0c442…; its base64url without padding:
        assert_eq!(
            base64hash(b""),
            "47DEQpj8HBSa-_TImW-5JCeuQeRkm5NMpJWZG3hSuFU"
        );
        assert_eq!(base64url(b"\xfb\xff"), "-_8");
    }
}
