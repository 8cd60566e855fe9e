//! Opening databases at a [`DatabaseLocation`]: pools for SQLite and PostgreSQL, with
//! passwords kept out of every message.

use std::str::FromStr;
use std::time::Duration;

use sqlx::ConnectOptions;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::DbError;
pub use crate::location::{ACCEPTED_DATABASE_URLS, DatabaseLocation, Dialect, redact_url};

/// A connection pool of either dialect (for the adapters of foreign databases, which
/// write their own SQL; [`on_pool!`](crate::on_pool) runs one body on either).
#[derive(Debug, Clone)]
pub enum Pool {
    /// A SQLite pool.
    Sqlite(SqlitePool),
    /// A PostgreSQL pool.
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the concrete pool of `$pool_enum`. The body is
/// compiled once per dialect, so each gets its own driver's types with no duplicated code.
#[macro_export]
macro_rules! on_pool {
    ($pool_enum:expr, |$pool:ident| $body:expr) => {
        match $pool_enum {
            $crate::connect::Pool::Sqlite($pool) => $body,
            $crate::connect::Pool::Postgres($pool) => $body,
        }
    };
}
pub use crate::on_pool;

impl Pool {
    /// Whether the database's current schema has a table of this name: how a source
    /// adapter tells which version of a homeserver's schema it reads. `operation` names
    /// the check in an error.
    pub async fn has_table(&self, table: &str, operation: &'static str) -> Result<bool, DbError> {
        use crate::error::QueryContext;
        let found: Option<i64> = on_pool!(self, |p| {
            let sql = match self {
                Pool::Sqlite(_) => "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = $1",
                Pool::Postgres(_) => {
                    "SELECT 1::BIGINT FROM information_schema.tables \
                     WHERE table_schema = current_schema() AND table_name = $1"
                }
            };
            sqlx::query_scalar(sql)
                .bind(table)
                .fetch_optional(p)
                .await
                .during(operation)?
        });
        Ok(found.is_some())
    }
}

/// How long the first connection to a PostgreSQL server may take before the server is
/// reported as not answering.
const POSTGRES_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects once to the PostgreSQL server of `connect`, so that an unreachable server
/// fails at once with its real cause (connection refused, unknown host, no such role or
/// database) instead of the pool's retries ending in "pool timed out".
async fn probe_postgres(connect: &PgConnectOptions, shown: &str) -> Result<(), DbError> {
    use sqlx::{ConnectOptions, Connection};
    let at = match connect.get_socket() {
        Some(socket) => format!("{shown} (socket folder {})", socket.display()),
        None => format!(
            "{shown} (host {}, port {})",
            connect.get_host(),
            connect.get_port()
        ),
    };
    let hint = "Check that PostgreSQL runs there and accepts connections, and that the \
                host, port, user, password and database are right.";
    match tokio::time::timeout(POSTGRES_CONNECT_TIMEOUT, connect.connect()).await {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
        Ok(Err(source)) => Err(DbError::Connect {
            url: at,
            hint,
            source,
        }),
        Err(_) => Err(DbError::Connect {
            url: at,
            hint,
            source: sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} s", POSTGRES_CONNECT_TIMEOUT.as_secs()),
            )),
        }),
    }
}

/// How a pool is opened.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// Create a missing SQLite file (our repository) or refuse (a foreign database).
    pub create: bool,
    /// Open read-only (foreign databases).
    pub read_only: bool,
    /// Maximum connections in the pool.
    pub max_connections: u32,
}

/// Page cache of the connection that writes our SQLite repository (SQLite's default is
/// 2 MiB; the indexes a batch of imports touches are larger; 16 MiB cost an import
/// about 10 MiB of its 100 MiB peak and gained little: at a million media no cache of
/// this order holds the indexes).
const SQLITE_WRITER_CACHE_KIB: u32 = 8 * 1024;

/// Page cache of every SQLite connection that only reads: our repository's readers and
/// the foreign databases opened read-only (SQLite's default is 2 MiB each). A reader's
/// look-ups probe random pages of indexes far larger than any cache of this order, and
/// in WAL mode a reader drops its cache whenever the writer has committed, which during
/// an import is every few hundred milliseconds; the kernel's page cache serves its
/// misses. An import opens up to twelve of them (eight repository readers, four on
/// Synapse's database): at 2 MiB each they held 17 MiB of an import's 100 MiB peak at
/// 100,000 media.
const SQLITE_READER_CACHE_KIB: u32 = 512;

/// Pages the write-ahead log of our SQLite repository grows to before the writer copies
/// it into the database itself (SQLite's default is 1,000 pages, 4 MiB): a backstop, as
/// the repository's checkpointer copies it beside the writer (see `checkpointer`). The
/// log can start over from its beginning only once all of it is copied, which a writer
/// that never pauses does not allow; this bounds it, at the cost of this much disk.
const SQLITE_WAL_BACKSTOP_PAGES: u32 = 64 * 1024;

/// How long a statement of the repository's SQLite writer runs before sqlx logs it as
/// slow (at debug level: see `open_sqlite_writer`).
const SQLITE_WRITER_SLOW_STATEMENT: Duration = Duration::from_secs(1);

/// How long a writer waits for its turn on our SQLite repository's write connection.
const SQLITE_WRITER_WAIT: Duration = Duration::from_secs(600);

/// Opens the one connection through which this process writes our SQLite repository at
/// `url` (already created and migrated). Writers queue for it, fairly and woken as soon as
/// the previous transaction commits, instead of polling the database's lock with the busy
/// handler's growing sleeps; and its page cache stays warm, because no other connection of
/// ours writes (SQLite drops a connection's cache whenever another one has written). `None`
/// for an in-memory database, whose only connection must do everything.
pub(crate) async fn open_sqlite_writer(
    location: &DatabaseLocation,
) -> Result<Option<Pool>, DbError> {
    let url = location.connection_url();
    if location.is_in_memory() {
        return Ok(None);
    }
    let connect = SqliteConnectOptions::from_str(url)
        .map_err(|e| DbError::InvalidUrl {
            url: location.to_string(),
            reason: e.to_string(),
        })?
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(60))
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .pragma("cache_size", format!("-{SQLITE_WRITER_CACHE_KIB}"))
        // A statement that may fail half-way inside a transaction (a deletion whose
        // foreign keys are checked, an insert of many rows) keeps the pages it changes
        // in a statement journal, written to a temporary file past 64 KiB: on the disk,
        // for every batch. In memory it is the size of one statement's pages.
        .pragma("temp_store", "memory")
        .pragma("wal_autocheckpoint", SQLITE_WAL_BACKSTOP_PAGES.to_string())
        // Its long statements are expected (an index set aside during an import built
        // at its end, a batch of a purge): sqlx's warning, with the statement's text,
        // told an operator nothing the tool's own report does not.
        .log_slow_statements(log::LevelFilter::Debug, SQLITE_WRITER_SLOW_STATEMENT);
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(SQLITE_WRITER_WAIT)
        .idle_timeout(Some(Duration::from_secs(600)))
        .connect_with(connect)
        .await
        .map_err(|source| DbError::Connect {
            url: location.to_string(),
            hint: "Check that the folder exists and is writable.",
            source,
        })?;
    Ok(Some(Pool::Sqlite(pool)))
}

/// Opens a pool for `url`.
pub async fn open_pool(location: &DatabaseLocation, options: OpenOptions) -> Result<Pool, DbError> {
    let url = location.connection_url();
    let shown = location.to_string();
    let invalid = |e: sqlx::Error| DbError::InvalidUrl {
        url: shown.clone(),
        reason: format!("{e}; expected one of {ACCEPTED_DATABASE_URLS}"),
    };
    match location.dialect() {
        Dialect::Sqlite => {
            let in_memory = location.is_in_memory();
            let connect = SqliteConnectOptions::from_str(url)
                .map_err(invalid)?
                .create_if_missing(options.create)
                .read_only(options.read_only)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(60));
            // Only a database we create (our repository) is switched to WAL: a foreign
            // database (Synapse's, Dendrite's) keeps the journal mode its server chose.
            let connect = if options.read_only || !options.create {
                connect
            } else {
                connect
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Normal)
            };
            // The pools of our repository read (its writer has a connection of its own),
            // and so do foreign databases opened read-only; a foreign database opened to
            // delete from (Synapse's, Dendrite's) keeps SQLite's cache for its
            // transactions. An in-memory database lives in its cache, whatever its size.
            let small_cache = (options.create || options.read_only) && !in_memory;
            let pool = SqlitePoolOptions::new()
                // An in-memory database exists once per connection: keep exactly one.
                .max_connections(if in_memory {
                    1
                } else {
                    options.max_connections
                })
                .min_connections(if in_memory { 1 } else { 0 })
                .idle_timeout(if in_memory {
                    None
                } else {
                    Some(Duration::from_secs(600))
                })
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if small_cache {
                            // Setting it reads the schema. A WAL database on a read-only
                            // mount cannot be read this way (no shared-memory file): the
                            // setting is skipped, and the first query fails and says so
                            // (`open_read_only` then opens it immutable, with this cache).
                            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                                "PRAGMA cache_size = -{SQLITE_READER_CACHE_KIB}"
                            )))
                            .execute(conn)
                            .await;
                        }
                        Ok(())
                    })
                })
                .connect_with(connect)
                .await
                .map_err(|source| DbError::Connect {
                    url: shown.clone(),
                    hint: if options.create {
                        "Check that the folder exists and is writable."
                    } else {
                        "Check that the file exists and is readable."
                    },
                    source,
                })?;
            Ok(Pool::Sqlite(pool))
        }
        Dialect::Postgres => {
            // Every execution is planned with its parameters and the table's current size.
            // A generic plan, cached after a statement's fifth run, was a sequential scan
            // when chosen on a near-empty repository and stayed one while an import grew
            // the table: each page's look-up of 1,000 media IDs took 0.2 s at 40,000 rows,
            // 1.2 s at 100,000, quadratic. Planning a statement costs a millisecond or two.
            // The transactions that write or delete media, and the datastore transfers,
            // lift it for their look-ups of one key (`reuse_key_lookup_plans_in`).
            let connect = PgConnectOptions::from_str(url)
                .map_err(invalid)?
                .options([("plan_cache_mode", "force_custom_plan")]);
            probe_postgres(&connect, &shown).await?;
            let pool = PgPoolOptions::new()
                .max_connections(options.max_connections)
                .acquire_timeout(Duration::from_secs(15))
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if options.read_only {
                            sqlx::query("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                                .execute(conn)
                                .await?;
                        }
                        Ok(())
                    })
                })
                .connect_with(connect)
                .await
                .map_err(|source| DbError::Connect {
                    url: shown.clone(),
                    hint: "Check that PostgreSQL runs there and that the user, password and \
                           database in the URL are right.",
                    source,
                })?;
            Ok(Pool::Postgres(pool))
        }
    }
}

/// Opens our repository at `url` for reading only, writing nothing at all (no
/// migration, no journal mode, no file created): for exports and verification, which
/// must work on a read-only mount. A SQLite file is opened `mode=ro`; when that cannot
/// read it (a WAL database whose shared-memory file cannot be created on a read-only
/// mount), it is opened `immutable=1`, which is right there because nothing can write
/// it. PostgreSQL sessions are read-only transactions.
pub(crate) async fn open_read_only(location: &DatabaseLocation) -> Result<Pool, DbError> {
    let url = location.connection_url();
    let options = OpenOptions {
        create: false,
        read_only: true,
        max_connections: 8,
    };
    let pool = open_pool(location, options).await?;
    let Pool::Sqlite(sqlite) = &pool else {
        return Ok(pool);
    };
    let probe = sqlx::query("SELECT COUNT(*) FROM sqlite_master")
        .fetch_one(sqlite)
        .await;
    if probe.is_ok() || location.is_in_memory() {
        return Ok(pool);
    }
    sqlite.close().await;
    let connect = SqliteConnectOptions::from_str(url)
        .map_err(|e| DbError::InvalidUrl {
            url: location.to_string(),
            reason: e.to_string(),
        })?
        .read_only(true)
        .immutable(true)
        .pragma("cache_size", format!("-{SQLITE_READER_CACHE_KIB}"));
    let pool = SqlitePoolOptions::new()
        .max_connections(options.max_connections)
        .connect_with(connect)
        .await
        .map_err(|source| DbError::Connect {
            url: location.to_string(),
            hint: "Check that the file exists and is readable.",
            source,
        })?;
    Ok(Pool::Sqlite(pool))
}

/// The newest migration applied to a repository, without changing it; `None` when the
/// database has no migration table (it is not one of our repositories).
pub(crate) async fn applied_version(pool: &Pool) -> Result<Option<i64>, sqlx::Error> {
    let found = on_pool!(pool, |p| {
        sqlx::query_scalar::<_, Option<i64>>(
            "SELECT MAX(version) FROM _sqlx_migrations WHERE success",
        )
        .fetch_one(p)
        .await
    });
    match found {
        Ok(version) => Ok(version),
        Err(sqlx::Error::Database(e)) if e.message().contains("_sqlx_migrations") => Ok(None),
        Err(e) => Err(e),
    }
}

/// Applies `migrator` to the pool, refusing a database that a newer build migrated.
pub(crate) async fn migrate(
    pool: &Pool,
    migrator: &Migrator,
    location: &DatabaseLocation,
) -> Result<(), DbError> {
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    let result = on_pool!(pool, |p| migrator.run(p).await);
    match result {
        Ok(()) => Ok(()),
        Err(MigrateError::VersionMissing(version)) if version > known => {
            Err(DbError::NewerSchema {
                url: location.to_string(),
                version,
                known,
            })
        }
        Err(source) => Err(DbError::Migrate {
            url: location.to_string(),
            source,
        }),
    }
}

/// Waits for, and takes, an exclusive `flock` on a SQLite file (creating an empty one,
/// which SQLite reads as a new database), released when the returned file is dropped.
/// Tools opening one new repository at once take turns with it: SQLite's own locks do
/// not cover switching the journal mode or applying the migrations (PostgreSQL's
/// migrations take an advisory lock). Best effort: `None` where the file cannot be
/// opened or locked, and opening the database then reports why.
pub(crate) async fn lock_sqlite_file(path: std::path::PathBuf) -> Option<std::fs::File> {
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .ok()?;
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).ok()?;
        Some(file)
    })
    .await
    .ok()
    .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn cache_size(pool: &Pool) -> i64 {
        let Pool::Sqlite(pool) = pool else {
            panic!("a SQLite file opens SQLite pools");
        };
        sqlx::query_scalar("PRAGMA cache_size")
            .fetch_one(pool)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn only_the_writer_keeps_a_large_page_cache() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("repo.db").display());
        let location: DatabaseLocation = url.parse().unwrap();
        let options = |create, read_only| OpenOptions {
            create,
            read_only,
            max_connections: 1,
        };
        let readers = open_pool(&location, options(true, false)).await.unwrap();
        let writer = open_sqlite_writer(&location).await.unwrap().unwrap();
        let foreign = open_pool(&location, options(false, true)).await.unwrap();
        let exporting = open_read_only(&location).await.unwrap();
        let deleting_from_foreign = open_pool(&location, options(false, false)).await.unwrap();
        let reader_cache = -i64::from(SQLITE_READER_CACHE_KIB);
        assert_eq!(
            cache_size(&writer).await,
            -i64::from(SQLITE_WRITER_CACHE_KIB)
        );
        for pool in [&readers, &foreign, &exporting] {
            assert_eq!(cache_size(pool).await, reader_cache);
        }
        // SQLite's own default, 2,000 KiB.
        assert_eq!(cache_size(&deleting_from_foreign).await, -2000);
    }

    /// The workspace's `.cargo/config.toml` builds SQLite without the process-wide
    /// mutexes of its memory statistics and shared page cache (`LIBSQLITE3_FLAGS`).
    #[tokio::test]
    async fn sqlite_is_built_without_process_wide_memory_locks() {
        let Pool::Sqlite(pool) = crate::connect::open_pool(
            &"sqlite::memory:".parse().unwrap(),
            OpenOptions {
                create: true,
                read_only: false,
                max_connections: 1,
            },
        )
        .await
        .unwrap() else {
            panic!("a SQLite URL opens a SQLite pool");
        };
        let options: Vec<String> = sqlx::query_scalar("PRAGMA compile_options")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert!(
            options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
        assert!(
            !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
            "{options:?}"
        );
    }
}
