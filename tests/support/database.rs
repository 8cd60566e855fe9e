//! Throwaway databases: a SQLite file in a temporary folder, or a fresh database on the
//! test PostgreSQL server, removed when the [`TestDatabase`] is dropped.

use std::path::Path;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// A database created for one test and removed when this value is dropped, whether the
/// test passed or panicked: a PostgreSQL database is dropped (`WITH (FORCE)`, so pools
/// the code under test left open do not keep it alive), a SQLite file goes with its
/// temporary folder.
#[derive(Debug)]
pub struct TestDatabase {
    /// The URL to hand to the code under test.
    pub url: String,
    /// `sqlite` or `postgres`, for messages.
    pub label: &'static str,
    lifetime: Lifetime,
}

/// What removes a test database, and what tells whether it is still untouched.
#[derive(Debug)]
enum Lifetime {
    /// A SQLite file (not created yet) in a temporary folder removed on drop.
    SqliteFile { _folder: tempfile::TempDir },
    /// A database on the test PostgreSQL server, dropped on drop.
    PostgresDatabase { server_url: String, name: String },
}

/// The PostgreSQL server for tests. Panics with instructions when it is not configured:
/// the PostgreSQL tests are never skipped silently.
pub fn postgres_server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| {
        panic!(
            "DATABASE_URL is not set. Run the tests with ./scripts/test, which starts a \
             throwaway PostgreSQL, or set DATABASE_URL=postgres://user@host:port/db to a \
             server where the tests may create and drop databases."
        )
    })
}

fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{:016x}", rand::random::<u64>())
}

/// `server_url` with its database replaced by `database`.
fn with_database(server_url: &str, database: &str) -> String {
    let (base, query) = match server_url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (server_url, String::new()),
    };
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|j| start + j))
        .unwrap_or(base.len());
    format!("{}/{database}{query}", &base[..authority_end])
}

impl TestDatabase {
    /// A fresh SQLite database file in a temporary folder (not created yet).
    pub fn sqlite() -> Self {
        let folder = tempfile::tempdir().expect("temporary folder");
        let path = folder.path().join("repo.db");
        Self {
            url: format!("sqlite://{}", path.display()),
            label: "sqlite",
            lifetime: Lifetime::SqliteFile { _folder: folder },
        }
    }

    /// A fresh, empty PostgreSQL database on the test server, its text in bytewise order.
    pub async fn postgres() -> Self {
        Self::postgres_with_locale("LC_COLLATE 'C' LC_CTYPE 'C'").await
    }

    /// A fresh, empty PostgreSQL database whose text sorts as a language does (ICU's
    /// root collation: `_d` < `a` < `B` < `c`), as many operators' databases do, where
    /// bytewise order would put `B` first.
    pub async fn postgres_in_language_order() -> Self {
        Self::postgres_with_locale("LOCALE_PROVIDER icu ICU_LOCALE 'und' LOCALE 'C'").await
    }

    async fn postgres_with_locale(locale: &str) -> Self {
        let server_url = postgres_server_url();
        let name = unique_name("media_test");
        let mut conn = PgConnection::connect(&server_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at DATABASE_URL: {e}"));
        let create = format!("CREATE DATABASE {name} ENCODING 'UTF8' {locale} TEMPLATE template0");
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        Self {
            url: with_database(&server_url, &name),
            label: "postgres",
            lifetime: Lifetime::PostgresDatabase { server_url, name },
        }
    }

    /// One fresh database of each dialect: SQLite, then PostgreSQL.
    pub async fn both() -> [Self; 2] {
        [Self::sqlite(), Self::postgres().await]
    }

    /// Whether nothing has created anything in this database yet: for SQLite, no file
    /// exists at the path of its [`url`](Self::url); for PostgreSQL, its `public` schema
    /// holds no table.
    pub async fn is_untouched(&self) -> bool {
        match &self.lifetime {
            Lifetime::SqliteFile { .. } => !Path::new(self.sqlite_path()).exists(),
            Lifetime::PostgresDatabase { .. } => {
                let mut conn = PgConnection::connect(&self.url)
                    .await
                    .expect("reach the test database");
                let tables: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = 'public'",
                )
                .fetch_one(&mut conn)
                .await
                .expect("list the tables");
                conn.close().await.ok();
                tables == 0
            }
        }
    }

    /// The file of a SQLite database's URL.
    fn sqlite_path(&self) -> &str {
        self.url.trim_start_matches("sqlite://")
    }
}

/// A connection to a test PostgreSQL database that plays the other writer of a
/// deadlock: a transaction the code under test waits for, and that then waits for it.
pub struct OtherWriter {
    /// The connection, in its open transaction.
    pub conn: PgConnection,
    pid: i32,
}

impl OtherWriter {
    /// Connects and begins a transaction. With a superuser (as `scripts/test` connects)
    /// this connection waits a minute before it looks for a deadlock, so that the code
    /// under test, which waits first, is the one PostgreSQL aborts; without, both look
    /// after a second and the one that waited first still looks first.
    pub async fn begin(db: &TestDatabase) -> Self {
        let mut conn = PgConnection::connect(&db.url)
            .await
            .expect("reach the test database");
        let _superuser_only = sqlx::query("SET deadlock_timeout = '60s'")
            .execute(&mut conn)
            .await;
        let pid = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut conn)
            .await
            .expect("read the backend's process ID");
        sqlx::query("BEGIN")
            .execute(&mut conn)
            .await
            .expect("begin the other writer's transaction");
        Self { conn, pid }
    }

    /// Closes the circle and ends it: once the code under test waits for a lock this
    /// writer's open transaction holds, runs `then` on this writer (a statement that
    /// waits for the code under test, until PostgreSQL aborts one of them), then
    /// commits. Panics if `done` says the code under test ended before it waited.
    pub async fn deadlock_with(
        &mut self,
        db: &TestDatabase,
        done: impl Fn() -> bool,
        then: impl AsyncFnOnce(&mut PgConnection),
    ) {
        self.wait_until_waited_for(db, done).await;
        then(&mut self.conn).await;
        sqlx::query("COMMIT")
            .execute(&mut self.conn)
            .await
            .expect("commit the other writer");
    }

    /// Returns once a session of `db` waits for a lock this writer holds.
    async fn wait_until_waited_for(&self, db: &TestDatabase, done: impl Fn() -> bool) {
        let mut watcher = PgConnection::connect(&db.url)
            .await
            .expect("reach the test database");
        loop {
            let waiting: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))",
            )
            .bind(self.pid)
            .fetch_one(&mut watcher)
            .await
            .expect("list the sessions waiting for locks");
            if waiting > 0 {
                break;
            }
            assert!(!done(), "the code under test ended without waiting");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        watcher.close().await.ok();
    }
}

impl Drop for TestDatabase {
    /// Drops a PostgreSQL database from a thread of its own with a runtime of its own, so
    /// that it works the same from synchronous code, from inside a tokio runtime (where
    /// blocking on another runtime is refused) and while a failed test unwinds.
    fn drop(&mut self) {
        let Lifetime::PostgresDatabase { server_url, name } = &self.lifetime else {
            return;
        };
        let (server_url, name) = (server_url.clone(), name.clone());
        let dropped = std::thread::spawn(move || drop_postgres_database(&server_url, &name))
            .join()
            .unwrap_or_else(|_| Err("the thread dropping it panicked".into()));
        if let Err(e) = dropped {
            let message = format!("test database {} was not dropped: {e}", self.url);
            if std::thread::panicking() {
                // A second panic would abort the test binary and hide the first one.
                eprintln!("{message}");
            } else {
                panic!("{message}");
            }
        }
    }
}

/// `DROP DATABASE name WITH (FORCE)` on the server at `server_url`, on a runtime made for
/// this one statement.
fn drop_postgres_database(server_url: &str, name: &str) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("no runtime: {e}"))?;
    runtime.block_on(async {
        let mut conn = PgConnection::connect(server_url)
            .await
            .map_err(|e| format!("cannot reach PostgreSQL: {e}"))?;
        let drop = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
        sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        conn.close().await.ok();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_names_are_swapped_in_urls() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h:1/db?sslmode=disable", "t2"),
            "postgres://u:p@h:1/t2?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h:1", "t3"), "postgres://h:1/t3");
    }

    /// Whether a database of that name exists on the test server.
    async fn exists(name: &str) -> bool {
        let mut conn = PgConnection::connect(&postgres_server_url()).await.unwrap();
        let found: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
            .bind(name)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
        found == 1
    }

    fn name_of(db: &TestDatabase) -> String {
        match &db.lifetime {
            Lifetime::PostgresDatabase { name, .. } => name.clone(),
            Lifetime::SqliteFile { .. } => unreachable!("a PostgreSQL database"),
        }
    }

    #[tokio::test]
    async fn a_postgres_database_is_dropped_inside_a_runtime_even_with_a_connection_open() {
        let db = TestDatabase::postgres().await;
        let name = name_of(&db);
        let mut open = PgConnection::connect(&db.url).await.unwrap();
        sqlx::raw_sql("CREATE TABLE t (x INTEGER)")
            .execute(&mut open)
            .await
            .unwrap();
        assert!(!db.is_untouched().await);
        assert!(exists(&name).await);
        drop(db);
        assert!(!exists(&name).await);
    }

    #[tokio::test]
    async fn a_postgres_database_is_dropped_when_its_test_panics() {
        let db = TestDatabase::postgres().await;
        let name = name_of(&db);
        assert!(db.is_untouched().await);
        let failed = std::thread::spawn(move || {
            let _db = db;
            panic!("a failing test");
        })
        .join();
        assert!(failed.is_err());
        assert!(!exists(&name).await);
    }

    #[tokio::test]
    async fn a_sqlite_database_goes_with_its_folder() {
        let db = TestDatabase::sqlite();
        assert!(db.is_untouched().await);
        let path = std::path::PathBuf::from(db.sqlite_path());
        std::fs::write(&path, b"").unwrap();
        assert!(!db.is_untouched().await);
        drop(db);
        assert!(!path.exists());
        assert!(!path.parent().unwrap().exists());
    }
}
