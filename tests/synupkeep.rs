//! End-to-end tests of `synupkeep`, the drop-in for synupkeep: its arguments and
//! environment variables, and a run against a live Synapse (tests/fixtures/synapse/
//! serve.py) compared with what that Synapse's own admin API leaves on a copy of the same
//! store: `purge_history` with `delete_local_events`, `media/delete` with `keep_profiles`
//! and `purge_media_cache`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use media_tests::live_synapse::{LiveSynapse, synapse_fixture_dir};
use media_tests::{TestCommand, TestDatabase, any_connection, report};
use serde_json::Value;
use sqlx::{Connection, Row};

/// Two hours, in milliseconds: how far the test moves the "recent" part of the fixture
/// forward, so that a cutoff between the two parts splits local and remote media.
const TWO_HOURS_MS: i64 = 7_200_000;

fn fixture_dir() -> PathBuf {
    synapse_fixture_dir()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    /// The fixture folder of this engine.
    fn fixture(self) -> PathBuf {
        fixture_dir().join(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        })
    }
}

/// The room whose history purge Synapse refuses ([`Store::add_a_room_synapse_refuses`]).
const REFUSED_ROOM: &str = "!refused:fixture.test";

/// A password for the libpq connection string, with a space and a quote to escape.
const PASSWORD: &str = r"'se cret\'s'";

/// The fixture's media ID of the media labelled `label` (`expected.json`).
fn media_id(engine: Engine, label: &str) -> String {
    let expected: Value =
        serde_json::from_slice(&std::fs::read(engine.fixture().join("expected.json")).unwrap())
            .unwrap();
    ["local_media", "remote_media"]
        .iter()
        .flat_map(|list| expected[list].as_array().unwrap())
        .find(|media| media["label"] == label)
        .and_then(|media| media["media_id"].as_str())
        .unwrap_or_else(|| panic!("no {label} in the fixture"))
        .to_owned()
}

/// A copy of a fixture (database and media store) a test may change.
struct Store {
    engine: Engine,
    dir: tempfile::TempDir,
    /// The restored PostgreSQL database (dropped with the store).
    postgres: Option<TestDatabase>,
}

impl Store {
    async fn new(engine: Engine) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("cp")
            .arg("-r")
            .arg(engine.fixture().join("media_store"))
            .arg(dir.path().join("media_store"))
            .status()
            .unwrap();
        assert!(status.success());
        let postgres = match engine {
            Engine::Sqlite => {
                std::fs::copy(
                    engine.fixture().join("homeserver.db"),
                    dir.path().join("homeserver.db"),
                )
                .unwrap();
                None
            }
            Engine::Postgres => {
                password_role().await;
                Some(restored_postgres_fixture().await)
            }
        };
        Self {
            engine,
            dir,
            postgres,
        }
    }

    /// What synupkeep is given: the libpq connection string (a role the server asks for
    /// its password), or the path of homeserver.db.
    fn connection(&self) -> String {
        match &self.postgres {
            Some(database) => libpq_settings(&database.url, PASSWORD_ROLE, PASSWORD),
            None => self.dir.path().join("homeserver.db").display().to_string(),
        }
    }

    fn db_url(&self) -> String {
        match &self.postgres {
            Some(database) => database.url.clone(),
            None => format!("sqlite://{}/homeserver.db", self.dir.path().display()),
        }
    }

    fn media_store(&self) -> PathBuf {
        self.dir.path().join("media_store")
    }

    async fn execute(&self, sql: &str) {
        let mut conn = any_connection(&self.db_url()).await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        conn.close().await.ok();
    }

    /// Each row of `sql` as its columns joined with spaces.
    async fn lines(&self, sql: &str) -> BTreeSet<String> {
        let mut conn = any_connection(&self.db_url()).await;
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_all(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        conn.close().await.ok();
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| row.get::<String, _>(i))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    /// A recent part of the fixture, two hours after the rest: one local media by
    /// creation, one by last access, one remote media by last access. (The room's events
    /// all stay old: its only message is its second-to-last event, and Synapse purges
    /// what comes before the event named, keeping state.)
    async fn split_in_time(&self) {
        let recent = |label: &str| format!("'{}'", media_id(self.engine, label));
        self.execute(&format!(
            "UPDATE local_media_repository SET created_ts = created_ts + {TWO_HOURS_MS} \
             WHERE media_id = {blob};
             UPDATE local_media_repository SET last_access_ts = last_access_ts + {TWO_HOURS_MS} \
             WHERE media_id = {photo};
             UPDATE remote_media_cache SET last_access_ts = last_access_ts + {TWO_HOURS_MS} \
             WHERE media_id = {remote};",
            blob = recent("carol_blob"),
            photo = recent("alice_photo_1"),
            remote = recent("remote_text"),
        ))
        .await;
    }

    /// A room whose purge Synapse refuses: its only event has no JSON Synapse could load.
    async fn add_a_room_synapse_refuses(&self) {
        self.execute(&format!(
            "INSERT INTO rooms (room_id, is_public, creator, room_version) \
             VALUES ('{REFUSED_ROOM}', FALSE, '@admin:fixture.test', '10');
             INSERT INTO events (stream_ordering, topological_ordering, event_id, type, room_id, \
             processed, outlier, depth, origin_server_ts, received_ts) \
             VALUES (-100, 1, '$refused', 'm.room.message', '{REFUSED_ROOM}', TRUE, FALSE, 1, \
             {ts}, {ts});",
            ts = 1_700_000_000_000_i64
        ))
        .await;
    }

    /// The latest time of the fixture's old part: events, creations, last accesses.
    async fn old_until(&self) -> i64 {
        let lines = self
            .lines(&format!(
                "SELECT CAST(MAX(t) AS TEXT) FROM (\
                 SELECT received_ts AS t FROM events WHERE received_ts < {limit} \
                 UNION ALL SELECT created_ts FROM local_media_repository WHERE created_ts < {limit} \
                 UNION ALL SELECT last_access_ts FROM local_media_repository \
                 WHERE last_access_ts < {limit} \
                 UNION ALL SELECT last_access_ts FROM remote_media_cache \
                 WHERE last_access_ts < {limit}) AS old",
                limit = self.newest().await - TWO_HOURS_MS / 2
            ))
            .await;
        lines.into_iter().next().unwrap().parse().unwrap()
    }

    /// The latest time anywhere in the fixture.
    async fn newest(&self) -> i64 {
        let lines = self
            .lines(
                "SELECT CAST(MAX(t) AS TEXT) FROM (\
                 SELECT received_ts AS t FROM events \
                 UNION ALL SELECT created_ts FROM local_media_repository \
                 UNION ALL SELECT last_access_ts FROM local_media_repository \
                 UNION ALL SELECT last_access_ts FROM remote_media_cache) AS every",
            )
            .await;
        lines.into_iter().next().unwrap().parse().unwrap()
    }

    /// Each room with its last event received at or before `cutoff`.
    async fn purge_points(&self, cutoff: i64) -> BTreeMap<String, String> {
        let mut conn = any_connection(&self.db_url()).await;
        let rows = sqlx::query(
            "SELECT room_id, event_id, received_ts, stream_ordering FROM events \
             WHERE received_ts IS NOT NULL",
        )
        .fetch_all(&mut conn)
        .await
        .unwrap();
        conn.close().await.ok();
        let mut last: BTreeMap<String, (i64, i64, String)> = BTreeMap::new();
        for row in rows {
            let (room, event): (String, String) = (row.get(0), row.get(1));
            let key = (row.get::<i64, _>(2), row.get::<i64, _>(3), event);
            if key.0 <= cutoff && last.get(&room).is_none_or(|seen| *seen < key) {
                last.insert(room, key);
            }
        }
        last.into_iter()
            .map(|(room, (_, _, event))| (room, event))
            .collect()
    }

    /// The events, media rows and files: what the compared purges change.
    async fn snapshot(&self) -> Snapshot {
        let mut rows = BTreeSet::new();
        for sql in [
            "SELECT 'event ' || event_id FROM events",
            "SELECT 'event_json ' || event_id FROM event_json",
            "SELECT 'local ' || media_id FROM local_media_repository",
            "SELECT 'local thumbnail ' || media_id || ' ' || thumbnail_method || \
             CAST(thumbnail_width AS TEXT) FROM local_media_repository_thumbnails",
            "SELECT 'remote ' || media_origin || '/' || media_id FROM remote_media_cache",
            "SELECT 'remote thumbnail ' || media_origin || '/' || media_id || ' ' || \
             thumbnail_method || CAST(thumbnail_width AS TEXT) FROM remote_media_cache_thumbnails",
        ] {
            rows.extend(self.lines(sql).await);
        }
        let mut files = BTreeSet::new();
        let mut empty_folders = Vec::new();
        let root = self.media_store();
        walk(&root, &root, &mut files, &mut empty_folders);
        Snapshot {
            rows,
            files,
            empty_folders,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    rows: BTreeSet<String>,
    files: BTreeSet<String>,
    /// Empty folders below the media store's top-level folders.
    empty_folders: Vec<String>,
}

impl Snapshot {
    fn count(&self, prefix: &str) -> usize {
        self.rows.iter().filter(|r| r.starts_with(prefix)).count()
    }
}

/// The files below `dir` (relative to `root`) and the empty folders below the top-level
/// ones.
fn walk(root: &Path, dir: &Path, files: &mut BTreeSet<String>, empty: &mut Vec<String>) {
    let relative = |path: &Path| path.strip_prefix(root).unwrap().display().to_string();
    let mut entries = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        entries += 1;
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(root, &path, files, empty);
        } else {
            files.insert(relative(&path));
        }
    }
    if entries == 0 && dir.parent() != Some(root) && dir != root {
        empty.push(relative(dir));
    }
}

/// `synupkeep` with synupkeep's own arguments.
fn synupkeep(store: &Store, synapse: &LiveSynapse, delta: &str) -> TestCommand {
    let mut command = TestCommand::new("synupkeep");
    command
        .arg(store.connection())
        .arg(&synapse.admin_token)
        .args(["-d", delta, "-a", &synapse.url, "-m"])
        .arg(store.media_store())
        .arg("--json");
    command
}

#[tokio::test]
async fn on_postgres_synupkeep_leaves_what_synapses_own_purges_leave_and_a_dry_run_changes_nothing()
{
    leaves_what_synapses_own_purges_leave(Engine::Postgres).await;
}

#[tokio::test]
async fn on_sqlite_synupkeep_leaves_what_synapses_own_purges_leave_and_a_dry_run_changes_nothing() {
    leaves_what_synapses_own_purges_leave(Engine::Sqlite).await;
}

/// synupkeep with a live Synapse on a copy of the `engine` fixture, and that Synapse's own
/// admin API on another copy: the same events, rows and files stay, and synupkeep leaves
/// no empty folder; its dry run (given through the environment) changes nothing.
async fn leaves_what_synapses_own_purges_leave(engine: Engine) {
    let ours = Store::new(engine).await;
    let theirs = Store::new(engine).await;
    for store in [&ours, &theirs] {
        store.split_in_time().await;
        store.add_a_room_synapse_refuses().await;
    }
    let (ours_starting, theirs_starting) = (
        LiveSynapse::start(ours.dir.path(), ours.postgres.as_ref()),
        LiveSynapse::start(theirs.dir.path(), theirs.postgres.as_ref()),
    );
    let (ours_synapse, theirs_synapse) = (
        LiveSynapse::ready(ours_starting),
        LiveSynapse::ready(theirs_starting),
    );
    // A cutoff half an hour after the old part, an hour and a half before the recent one:
    // the seconds between computing the delta and the tool's clock do not matter.
    let target = ours.old_until().await + TWO_HOURS_MS / 4;
    let delta = ((now_ms() - target) / 1000).to_string();
    let before = ours.snapshot().await;

    // A dry run, given everything through synupkeep's environment variables.
    let dry_run = report(
        &TestCommand::new("synupkeep")
            .env("SYNUPKEEP_POSTGRES_CONNECTION_STRING", ours.connection())
            .env("SYNUPKEEP_SYNAPSE_AUTH_TOKEN", &ours_synapse.admin_token)
            .env("SYNUPKEEP_DELTA", &delta)
            .env("SYNUPKEEP_SYNAPSE_API_URL", &ours_synapse.url)
            .env("SYNUPKEEP_MEDIA_STORE_PATH", ours.media_store())
            .env("SYNUPKEEP_LOGGING_LEVEL", "warning")
            .args(["--dry-run", "--json"])
            .assert_exit(0),
    );
    assert_eq!(dry_run["dry_run"], true);
    assert_eq!(ours.snapshot().await, before, "a dry run changes nothing");
    let planned: BTreeMap<String, String> = dry_run["history"]["purges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["room_id"].as_str().unwrap().to_owned(),
                p["event_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let dry_cutoff = dry_run["cutoff_ts"].as_i64().unwrap();
    assert_eq!(planned, ours.purge_points(dry_cutoff).await);
    assert!(!planned.is_empty());

    assert!(planned.contains_key(REFUSED_ROOM));

    // The room Synapse refuses is a listed failure (exit 1); the others are purged.
    let run = report(&synupkeep(&ours, &ours_synapse, &delta).assert_exit(1));
    let cutoff = run["cutoff_ts"].as_i64().unwrap();
    assert!((cutoff - target).abs() < 60_000, "{cutoff} vs {target}");
    let history = &run["history"];
    assert_eq!(history["rooms_purged"], planned.len() - 1);
    assert_eq!(history["failures"]["count"], 1, "{history}");
    assert_eq!(history["failures"]["listed"][0]["item"], REFUSED_ROOM);
    assert_eq!(history["failures"]["listed"][0]["reason"], "purge_refused");

    // The same with Synapse's own admin API, on the other copy, at the same cutoff.
    for (room, event) in theirs.purge_points(cutoff).await {
        if room != REFUSED_ROOM {
            theirs_synapse.purge_history(&room, &event);
        }
    }
    let local = theirs_synapse.admin(
        "POST",
        &format!("/_synapse/admin/v1/media/delete?before_ts={cutoff}&keep_profiles=true"),
        &serde_json::json!({}),
    );
    let remote = theirs_synapse.admin(
        "POST",
        &format!("/_synapse/admin/v1/purge_media_cache?before_ts={cutoff}"),
        &serde_json::json!({}),
    );
    drop((ours_synapse, theirs_synapse));

    assert_eq!(run["local_media"]["media_deleted"], local["total"]);
    assert_eq!(run["remote_media"]["media_deleted"], remote["deleted"]);
    let (ours_after, theirs_after) = (ours.snapshot().await, theirs.snapshot().await);
    assert_eq!(
        ours_after.rows, theirs_after.rows,
        "the same rows and events stay"
    );
    assert_eq!(ours_after.files, theirs_after.files, "the same files stay");
    assert_eq!(ours_after.empty_folders, Vec::<String>::new());
    assert!(
        !theirs_after.empty_folders.is_empty(),
        "Synapse leaves the emptied folders: this test would not tell"
    );
    // Some of each went, some stayed (the room's message went, its state stayed).
    for prefix in ["event ", "local ", "remote "] {
        let (was, is) = (before.count(prefix), ours_after.count(prefix));
        assert!(0 < is && is < was, "{prefix}: {was} before, {is} after");
    }
}

#[test]
fn synupkeeps_arguments_and_variables_are_accepted_and_a_missing_connection_string_or_token_is_a_usage_error()
 {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (vec![], "SYNUPKEEP_POSTGRES_CONNECTION_STRING"),
        (
            vec!["host=127.0.0.1 dbname=synapse"],
            "SYNUPKEEP_SYNAPSE_AUTH_TOKEN",
        ),
    ] {
        let out = TestCommand::new("synupkeep")
            .args(&args)
            .arg("--json")
            .current_dir(dir.path())
            .assert_exit(2);
        let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(printed["error"]["class"], "usage");
        assert!(
            printed["error"]["message"].as_str().unwrap().contains(says),
            "{args:?}: {printed}"
        );
    }
    let help = TestCommand::new("synupkeep")
        .arg("--help")
        .current_dir(dir.path())
        .assert_exit(0);
    let help = String::from_utf8(help.stdout).unwrap();
    for wanted in [
        "[POSTGRES_CONNECTION_STRING] [SYNAPSE_AUTH_TOKEN]",
        "-d, --delta",
        "[default: 86400]",
        "-a, --api-url",
        "[default: http://localhost:8008/]",
        "-m, --media-store",
        "[default: /data/media_store]",
        "-l, --logging-level",
        "SYNUPKEEP_SYNAPSE_AUTH_TOKEN",
        "SYNUPKEEP_DELTA",
        "SYNUPKEEP_SYNAPSE_API_URL",
        "SYNUPKEEP_MEDIA_STORE_PATH",
        "SYNUPKEEP_LOGGING_LEVEL",
        "--dry-run",
    ] {
        assert!(help.contains(wanted), "no {wanted} in\n{help}");
    }
    let out = TestCommand::new("synupkeep")
        .args(["db", "token", "-l", "LOUD"])
        .current_dir(dir.path())
        .assert_exit(2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("CRITICAL"));
    let out = TestCommand::new("synupkeep")
        .args(["db", "token", "-a", "localhost:8008"])
        .current_dir(dir.path())
        .assert_exit(2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not an http(s) URL"));
}

/// The PostgreSQL fixture restored into a fresh database on the test server.
async fn restored_postgres_fixture() -> TestDatabase {
    let synapse = TestDatabase::postgres().await;
    let status = Command::new("psql")
        .args(["-q", "-v", "ON_ERROR_STOP=1", "-o", "/dev/null", "-d"])
        .arg(&synapse.url)
        .arg("-f")
        .arg(fixture_dir().join("postgres/synapse.sql"))
        .status()
        .expect("psql (PostgreSQL's client) must be installed to restore the fixture");
    assert!(status.success(), "restoring the Synapse dump failed");
    synapse
}

/// The test server's libpq `key=value` settings for `database`, as `user` with
/// `password`.
fn libpq_settings(url: &str, user: &str, password: &str) -> String {
    let url = url.strip_prefix("postgres://").unwrap();
    let (authority, database) = url.split_once('/').unwrap();
    let (_, host_port) = authority.split_once('@').unwrap();
    let (host, port) = host_port.split_once(':').unwrap_or((host_port, "5432"));
    let database = database.split('?').next().unwrap();
    format!("host={host} port={port} user={user} dbname={database} password={password}")
}

/// The one role the test cluster asks for its password (`scram-sha-256`); scripts/test
/// puts its line first in `pg_hba.conf`.
const PASSWORD_ROLE: &str = "media_tests_password";

/// Makes [`PASSWORD_ROLE`] a superuser whose password is [`PASSWORD`] (unquoted), after
/// checking that the cluster asks it for that password.
async fn password_role() {
    let mut conn = media_tests::any_connection(&media_tests::postgres_server_url()).await;
    let asked: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_hba_file_rules \
         WHERE $1 = ANY(user_name) AND auth_method = 'scram-sha-256'",
    )
    .bind(PASSWORD_ROLE)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert!(
        asked > 0,
        "the test cluster must ask {PASSWORD_ROLE} for a password: run the tests with \
         scripts/test, or put `host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256` first in \
         pg_hba.conf and reload"
    );
    let create = format!(
        // One implicit transaction: the advisory lock keeps tests that start at once from
        // creating or altering the role together.
        "SELECT pg_advisory_xact_lock(5150); \
         DO $$ BEGIN CREATE ROLE {PASSWORD_ROLE}; \
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$; \
         ALTER ROLE {PASSWORD_ROLE} WITH LOGIN SUPERUSER PASSWORD 'se cret''s'"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(create))
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.ok();
}

/// synupkeep's libpq `key=value` string (a quoted password with a space and an escaped
/// quote) reaches the database it names, as a role the server asks for its password: the
/// right one opens it, a wrong one is refused with a clear error, and the password is
/// never printed.
#[tokio::test]
async fn a_libpq_connection_string_with_a_password_opens_the_postgres_database_it_names() {
    password_role().await;
    let synapse = restored_postgres_fixture().await;
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(fixture_dir().join("postgres/media_store"))
        .arg(dir.path().join("media_store"))
        .status()
        .unwrap();
    assert!(status.success());
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("http://127.0.0.1:{closed_port}/");
    let run = |settings: &str, code: i32| {
        let out = TestCommand::new("synupkeep")
            .args([settings, "token", "-a", &api, "-m"])
            .arg(dir.path().join("media_store"))
            .arg("--dry-run")
            .assert_exit(code);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            !stderr.contains("se cret"),
            "the password is printed: {stderr}"
        );
        stderr
    };
    // The database opens and fits the media store; then the admin API is not there.
    let settings = libpq_settings(&synapse.url, PASSWORD_ROLE, PASSWORD);
    let stderr = run(&settings, 3);
    assert!(
        stderr.contains(&format!("cannot reach Synapse's admin API at {api}")),
        "{stderr}"
    );
    // A database that does not exist is named (password hidden) and stops the run first.
    let stderr = run(&settings.replace("dbname=", "dbname=no_such_"), 2);
    assert!(stderr.contains("no_such_"), "{stderr}");
    // A wrong password is refused before anything is read.
    let wrong = libpq_settings(&synapse.url, PASSWORD_ROLE, r"'se cret\'s not'");
    let stderr = run(&wrong, 2);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
}
