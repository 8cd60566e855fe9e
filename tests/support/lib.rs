//! Test support shared by the toolkit's test suites: throwaway SQLite and PostgreSQL
//! databases, and a runner for the real binaries.
//!
//! PostgreSQL comes from `DATABASE_URL` (the test script `scripts/test` starts a throwaway
//! cluster and sets it). Tests never write into a database they did not create: each
//! [`TestDatabase::postgres`] creates a fresh database on that server and drops it after.
#![deny(missing_docs)]

pub mod bench;
pub mod dendrite;
pub mod synthetic_synapse;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// A database created for one test, removed when [`TestDatabase::drop_database`] runs
/// (SQLite files go with their temporary folder).
#[derive(Debug)]
pub struct TestDatabase {
    /// The URL to hand to the code under test.
    pub url: String,
    /// `sqlite` or `postgres`, for messages.
    pub label: &'static str,
    admin_url: Option<String>,
    name: String,
    _dir: Option<tempfile::TempDir>,
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
pub fn with_database(server_url: &str, database: &str) -> String {
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
        let dir = tempfile::tempdir().expect("temporary folder");
        let url = format!("sqlite://{}", dir.path().join("repo.db").display());
        Self {
            url,
            label: "sqlite",
            admin_url: None,
            name: String::new(),
            _dir: Some(dir),
        }
    }

    /// A fresh, empty PostgreSQL database on the test server.
    pub async fn postgres() -> Self {
        let admin_url = postgres_server_url();
        let name = unique_name("media_test");
        let mut conn = PgConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("cannot reach the test PostgreSQL at DATABASE_URL: {e}"));
        let create = format!(
            "CREATE DATABASE {name} ENCODING 'UTF8' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0"
        );
        sqlx::raw_sql(sqlx::AssertSqlSafe(create))
            .execute(&mut conn)
            .await
            .expect("create test database");
        conn.close().await.ok();
        Self {
            url: with_database(&admin_url, &name),
            label: "postgres",
            admin_url: Some(admin_url),
            name,
            _dir: None,
        }
    }

    /// One fresh database of each dialect: SQLite, then PostgreSQL.
    pub async fn both() -> [Self; 2] {
        [Self::sqlite(), Self::postgres().await]
    }

    /// Drops a PostgreSQL test database (call it once the code under test closed its pool).
    pub async fn drop_database(self) {
        if let Some(admin_url) = &self.admin_url {
            let mut conn = PgConnection::connect(admin_url)
                .await
                .expect("reach PostgreSQL");
            let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
            sqlx::raw_sql(sqlx::AssertSqlSafe(drop))
                .execute(&mut conn)
                .await
                .expect("drop test database");
        }
    }
}

/// The path of a binary of this workspace, built by cargo for the integration tests.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile folder");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is not built: run the tests through cargo (cargo test --workspace) so the binaries \
         are built first",
        path.display()
    );
    path
}

/// Runs a workspace binary with `args` in `cwd`, capturing its output.
pub fn run(name: &str, args: &[&str], cwd: &Path) -> Output {
    Command::new(binary(name))
        .args(args)
        .current_dir(cwd)
        .env_remove("RUST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name}: {e}"))
}

/// The JSON report a tool printed on stdout (with `--json`); panics with its output
/// when there is none.
pub fn report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no JSON report ({e}); stdout: {} stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The blob files of a datastore folder (skipping its temporary folder and its identity
/// marker).
pub fn walk_blobs(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for a in std::fs::read_dir(root).unwrap().flatten() {
        if a.file_name() == ".tmp" || !a.path().is_dir() {
            continue;
        }
        for b in std::fs::read_dir(a.path()).unwrap().flatten() {
            for f in std::fs::read_dir(b.path()).unwrap().flatten() {
                out.insert(f.file_name().to_string_lossy().into_owned());
            }
        }
    }
    out
}

/// Every row of our repository that an import decides, in a stable order.
pub async fn repository_contents(url: &str) -> Vec<String> {
    use sqlx::{Connection, Row};
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    let mut out = Vec::new();
    for sql in [
        "SELECT origin || '/' || media_id || ' ' || sha256 || ' ' || IFNULL(upload_name, '-') \
         || ' ' || IFNULL(user_id, '-') || ' ' || quarantined || ' ' || purpose || ' ' \
         || created_ts FROM media ORDER BY origin, media_id",
        "SELECT origin || '/' || media_id || ' ' || width || 'x' || height || method || ' ' \
         || sha256 FROM thumbnails ORDER BY 1",
        "SELECT sha256 || ' ' || size_bytes || ' ' || location FROM blobs ORDER BY sha256",
        "SELECT origin || '/' || media_id || ' ' || quarantined FROM quarantine_changes \
         ORDER BY 1",
    ] {
        for row in sqlx::query(sql).fetch_all(&mut conn).await.unwrap() {
            out.push(row.get::<String, _>(0));
        }
    }
    out
}

/// The `finished_ts` and `error` of the last task row of a repository (SQLite or
/// PostgreSQL, by its URL).
pub async fn last_task(repo_url: &str) -> (Option<i64>, Option<String>) {
    use sqlx::Connection;
    let sql = "SELECT finished_ts, error FROM tasks ORDER BY id DESC LIMIT 1";
    if repo_url.starts_with("sqlite:") {
        let mut conn = sqlx::SqliteConnection::connect(repo_url).await.unwrap();
        sqlx::query_as(sql).fetch_one(&mut conn).await.unwrap()
    } else {
        let mut conn = sqlx::PgConnection::connect(repo_url).await.unwrap();
        sqlx::query_as(sql).fetch_one(&mut conn).await.unwrap()
    }
}

/// Media rows in a repository (0 when it does not exist yet).
pub async fn media_count(url: &str) -> i64 {
    use sqlx::Connection;
    let Ok(mut conn) = sqlx::SqliteConnection::connect(&format!("{url}?mode=ro")).await else {
        return 0;
    };
    sqlx::query_scalar("SELECT COUNT(*) FROM media")
        .fetch_one(&mut conn)
        .await
        .unwrap_or(0)
}

/// The peak resident memory of this process so far, in MiB (Linux `VmHWM`; NaN where
/// the kernel does not tell).
pub fn peak_memory_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(f64::NAN)
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
}
