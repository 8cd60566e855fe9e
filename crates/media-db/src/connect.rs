//! Opening databases by URL: pools for SQLite and PostgreSQL, with passwords kept out of
//! every message.

use std::str::FromStr;
use std::time::Duration;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use crate::error::DbError;

/// The SQL dialect of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite 3.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// A connection pool of either dialect.
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
pub use on_pool;

/// The database locations accepted, for messages.
pub const ACCEPTED_DATABASE_URLS: &str = "a bare path (a SQLite file), sqlite://path/to/file.db, \
     sqlite:///absolute/file.db, postgres://user:password@host:port/database, or PostgreSQL \
     key=value settings (host=… port=… user=… password=… dbname=…)";

/// How long the first connection to a PostgreSQL server may take before the server is
/// reported as not answering.
const POSTGRES_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The one parser of database locations, shared by every flag that names a database
/// (`--db`, `--synapse-db`) and by every adapter: returns the URL the drivers open.
///
/// * `sqlite:…` URLs and `postgres://`/`postgresql://` URLs are returned unchanged;
/// * libpq `key=value` settings (`host=db port=5432 user=u password='p w' dbname=d`)
///   become a `postgres://` URL, every part percent-encoded;
/// * a bare path (`repo.db`, `/var/lib/media/repo.db`) is a SQLite file;
/// * any other `scheme://` is refused, naming the accepted forms.
pub fn database_url(location: &str) -> Result<String, DbError> {
    let trimmed = location.trim();
    if trimmed.is_empty() {
        return Err(DbError::InvalidUrl {
            url: String::new(),
            reason: format!("no database given: expected {ACCEPTED_DATABASE_URLS}"),
        });
    }
    let scheme = trimmed.split_once(':').map(|(s, _)| s).unwrap_or("");
    if matches!(scheme, "sqlite" | "postgres" | "postgresql") {
        return Ok(trimmed.to_owned());
    }
    if looks_like_key_value(trimmed) {
        return key_value_url(trimmed).map_err(|reason| DbError::InvalidUrl {
            url: redact_key_value(trimmed),
            reason,
        });
    }
    if trimmed.contains("://") {
        return Err(DbError::InvalidUrl {
            url: redact_url(trimmed),
            reason: format!("expected {ACCEPTED_DATABASE_URLS}"),
        });
    }
    Ok(sqlite_url_of_path(std::path::Path::new(trimmed)))
}

/// A `sqlite://` URL for the file at `path`, with the characters the driver would take
/// for URL syntax (`%`, `?`, `#`) percent-encoded.
pub fn sqlite_url_of_path(path: &std::path::Path) -> String {
    let mut url = String::from("sqlite://");
    for c in path.to_string_lossy().chars() {
        match c {
            '%' => url.push_str("%25"),
            '?' => url.push_str("%3F"),
            '#' => url.push_str("%23"),
            c => url.push(c),
        }
    }
    url
}

/// A `postgres://` URL from its parts, each percent-encoded by the URL library, so a
/// user, password or database name holding `@`, `/`, `#`, `%`, `:` or spaces survives
/// exactly (never assembled by string formatting).
pub fn postgres_url(
    host: &str,
    port: u16,
    user: &str,
    password: Option<&str>,
    database: &str,
) -> Result<String, DbError> {
    let invalid = |reason: String| DbError::InvalidUrl {
        url: format!("postgres://{host}:{port}"),
        reason,
    };
    let mut url = url::Url::parse("postgres://localhost").expect("a valid base URL");
    if host.starts_with('/') {
        // A Unix socket folder: a query parameter, as libpq's `host=/run/postgresql`.
        url.query_pairs_mut().append_pair("host", host);
    } else {
        url.set_host(Some(host))
            .map_err(|e| invalid(format!("host {host:?}: {e}")))?;
    }
    url.set_port(Some(port))
        .map_err(|()| invalid("cannot set the port".into()))?;
    url.set_username(&userinfo_encoded(user))
        .map_err(|()| invalid("cannot set the user".into()))?;
    url.set_password(password.map(userinfo_encoded).as_deref())
        .map_err(|()| invalid("cannot set the password".into()))?;
    if !database.is_empty() {
        url.path_segments_mut()
            .map_err(|()| invalid("cannot set the database".into()))?
            .clear()
            .push(database);
    }
    Ok(url.to_string())
}

/// A user name or password percent-encoded for a URL's userinfo. The URL library encodes
/// most characters there itself but keeps `%` as it is (taking it for an escape already
/// made), so `%` in a password would be decoded by the driver into something else.
fn userinfo_encoded(text: &str) -> String {
    percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// Whether `text` is libpq `key=value` settings: its first word is `identifier=`.
fn looks_like_key_value(text: &str) -> bool {
    let first = text.split_whitespace().next().unwrap_or("");
    match first.split_once('=') {
        Some((key, _)) => {
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

/// `key=value` settings with the password's value hidden, safe to print.
fn redact_key_value(settings: &str) -> String {
    match key_value_pairs(settings) {
        Ok(pairs) => pairs
            .into_iter()
            .map(|(k, v)| {
                if k == "password" {
                    format!("{k}=***")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect::<Vec<_>>()
            .join(" "),
        Err(_) => "(key=value settings)".to_owned(),
    }
}

/// Splits libpq `key=value` settings (values optionally in single quotes, `\'` and `\\`
/// escaped) into pairs.
fn key_value_pairs(settings: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = settings.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(format!("setting {key:?} has no '=value'"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.extend(chars.next()),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(format!("the quoted value of {key:?} is not closed")),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        pairs.push((key, value));
    }
}

/// libpq `key=value` settings as a `postgres://` URL, built by the URL library (unknown
/// keys become query parameters, which the driver understands or rejects by name).
pub fn key_value_url(settings: &str) -> Result<String, String> {
    let mut url = url::Url::parse("postgres://localhost").expect("a valid base URL");
    let mut query = Vec::new();
    for (key, value) in key_value_pairs(settings)? {
        match key.as_str() {
            "host" if value.starts_with('/') => query.push((key, value)),
            "host" | "hostaddr" => url
                .set_host(Some(&value))
                .map_err(|e| format!("host {value:?}: {e}"))?,
            "port" => {
                let port = value
                    .parse()
                    .map_err(|_| format!("port {value:?} is not a number"))?;
                url.set_port(Some(port))
                    .map_err(|_| "cannot set the port")?;
            }
            "user" => url
                .set_username(&userinfo_encoded(&value))
                .map_err(|_| "cannot set the user")?,
            "password" => url
                .set_password(Some(&userinfo_encoded(&value)))
                .map_err(|_| "cannot set the password")?,
            "dbname" => {
                url.path_segments_mut()
                    .map_err(|_| "cannot set the database")?
                    .clear()
                    .push(&value);
            }
            _ => query.push((key, value)),
        }
    }
    if !query.is_empty() {
        url.query_pairs_mut().extend_pairs(query);
    }
    Ok(url.to_string())
}

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

/// `url` (or `key=value` settings) with any password replaced by `***`, safe to print.
pub fn redact_url(url: &str) -> String {
    if looks_like_key_value(url.trim()) {
        return redact_key_value(url.trim());
    }
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Which dialect a URL names.
pub fn dialect_of(url: &str) -> Result<Dialect, DbError> {
    let url = database_url(url)?;
    let scheme = url.split_once(':').map(|(s, _)| s).unwrap_or("");
    match scheme {
        "sqlite" => Ok(Dialect::Sqlite),
        "postgres" | "postgresql" => Ok(Dialect::Postgres),
        _ => Err(DbError::InvalidUrl {
            url: redact_url(&url),
            reason: format!("expected one of {ACCEPTED_DATABASE_URLS}"),
        }),
    }
}

/// Whether the SQLite file a `sqlite:` URL names exists (in-memory databases count as
/// existing).
pub(crate) fn sqlite_file_exists(url: &str) -> bool {
    let Ok(url) = database_url(url) else {
        return true;
    };
    match SqliteConnectOptions::from_str(&url) {
        Ok(options) => {
            let file = options.get_filename();
            file.as_os_str() == ":memory:" || file.exists()
        }
        Err(_) => true,
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
/// 2 MiB; the indexes a batch of imports touches are larger).
const SQLITE_WRITER_CACHE_KIB: u32 = 16 * 1024;

/// How long a writer waits for its turn on our SQLite repository's write connection.
const SQLITE_WRITER_WAIT: Duration = Duration::from_secs(600);

/// Whether `url` names an in-memory SQLite database (one per connection).
fn is_in_memory(url: &str) -> bool {
    url.contains(":memory:") || url.contains("mode=memory")
}

/// Opens the one connection through which this process writes our SQLite repository at
/// `url` (already created and migrated). Writers queue for it, fairly and woken as soon as
/// the previous transaction commits, instead of polling the database's lock with the busy
/// handler's growing sleeps; and its page cache stays warm, because no other connection of
/// ours writes (SQLite drops a connection's cache whenever another one has written). `None`
/// for an in-memory database, whose only connection must do everything.
pub(crate) async fn open_sqlite_writer(location: &str) -> Result<Option<Pool>, DbError> {
    let url = &database_url(location)?;
    if is_in_memory(url) {
        return Ok(None);
    }
    let connect = SqliteConnectOptions::from_str(url)
        .map_err(|e| DbError::InvalidUrl {
            url: redact_url(url),
            reason: e.to_string(),
        })?
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(60))
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .pragma("cache_size", format!("-{SQLITE_WRITER_CACHE_KIB}"));
    let pool = SqlitePoolOptions::new()
        .max_connections(1)
        .acquire_timeout(SQLITE_WRITER_WAIT)
        .idle_timeout(Some(Duration::from_secs(600)))
        .connect_with(connect)
        .await
        .map_err(|source| DbError::Connect {
            url: redact_url(url),
            hint: "Check that the folder exists and is writable.",
            source,
        })?;
    Ok(Some(Pool::Sqlite(pool)))
}

/// Opens a pool for `url`.
pub async fn open_pool(location: &str, options: OpenOptions) -> Result<Pool, DbError> {
    let url = &database_url(location)?;
    let shown = redact_url(url);
    let invalid = |e: sqlx::Error| DbError::InvalidUrl {
        url: shown.clone(),
        reason: format!("{e}; expected one of {ACCEPTED_DATABASE_URLS}"),
    };
    match dialect_of(url)? {
        Dialect::Sqlite => {
            let in_memory = is_in_memory(url);
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
            let connect = PgConnectOptions::from_str(url).map_err(invalid)?;
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
pub(crate) async fn open_read_only(location: &str) -> Result<Pool, DbError> {
    let url = &database_url(location)?;
    let options = OpenOptions {
        create: false,
        read_only: true,
        max_connections: 8,
    };
    let pool = open_pool(url, options).await?;
    let Pool::Sqlite(sqlite) = &pool else {
        return Ok(pool);
    };
    let probe = sqlx::query("SELECT COUNT(*) FROM sqlite_master")
        .fetch_one(sqlite)
        .await;
    if probe.is_ok() || is_in_memory(url) {
        return Ok(pool);
    }
    sqlite.close().await;
    let connect = SqliteConnectOptions::from_str(url)
        .map_err(|e| DbError::InvalidUrl {
            url: redact_url(url),
            reason: e.to_string(),
        })?
        .read_only(true)
        .immutable(true);
    let pool = SqlitePoolOptions::new()
        .max_connections(options.max_connections)
        .connect_with(connect)
        .await
        .map_err(|source| DbError::Connect {
            url: redact_url(url),
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
pub(crate) async fn migrate(pool: &Pool, migrator: &Migrator, url: &str) -> Result<(), DbError> {
    let known = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    let result = on_pool!(pool, |p| migrator.run(p).await);
    match result {
        Ok(()) => Ok(()),
        Err(MigrateError::VersionMissing(version)) if version > known => {
            Err(DbError::NewerSchema {
                url: redact_url(url),
                version,
                known,
            })
        }
        Err(source) => Err(DbError::Migrate {
            url: redact_url(url),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgres://synapse:hunter2@db:5432/synapse"),
            "postgres://synapse:***@db:5432/synapse"
        );
        assert_eq!(redact_url("sqlite://media.db"), "sqlite://media.db");
    }

    /// Issue 19 item 6: `-dbPassword` with `@`, `/`, `#` or `%` broke the URL that was
    /// assembled by string formatting.
    #[test]
    fn a_password_with_url_syntax_in_it_reaches_the_driver_exactly() {
        let password = "p@ss/w#rd%25 :?x";
        let user = "med@ia/u#s%er";
        let database = "syn apse/#%db";
        let url = postgres_url("127.0.0.1", 55432, user, Some(password), database).unwrap();
        let options = PgConnectOptions::from_str(&url).unwrap();
        assert_eq!(options.get_host(), "127.0.0.1");
        assert_eq!(options.get_port(), 55432);
        assert_eq!(options.get_username(), user);
        assert_eq!(options.get_database(), Some(database));
        // The driver has no getter for the password: its Debug output shows the value.
        let shown = format!("{options:?}");
        assert!(
            shown.contains(&format!("password: Some({password:?})")),
            "{url} → {shown}"
        );
        assert!(!redact_url(&url).contains("w#rd"), "{}", redact_url(&url));
        // The same through key=value settings.
        let settings = "host=db port=5433 user='med@ia/u#s%er' password='p@ss/w#rd%25 :?x' \
                        dbname='syn apse/#%db'";
        let options = PgConnectOptions::from_str(&database_url(settings).unwrap()).unwrap();
        assert_eq!(options.get_username(), user);
        assert_eq!(options.get_database(), Some(database));
        assert!(format!("{options:?}").contains(&format!("password: Some({password:?})")));
        assert!(
            !redact_url(settings).contains("w#rd"),
            "{}",
            redact_url(settings)
        );
    }

    /// Issue 19 item 7: `--db /path/repo.db` was refused while `--synapse-db` took a path.
    #[test]
    fn every_database_location_form_is_parsed_in_one_place() {
        assert_eq!(database_url("sqlite://x.db").unwrap(), "sqlite://x.db");
        assert_eq!(database_url("sqlite::memory:").unwrap(), "sqlite::memory:");
        assert_eq!(
            database_url("postgresql://u@h/d").unwrap(),
            "postgresql://u@h/d"
        );
        assert_eq!(
            database_url("/srv/media/repo.db").unwrap(),
            "sqlite:///srv/media/repo.db"
        );
        assert_eq!(database_url("repo.db").unwrap(), "sqlite://repo.db");
        let odd = database_url("/srv/a%b?c#d.db").unwrap();
        let options = SqliteConnectOptions::from_str(&odd).unwrap();
        assert_eq!(
            options.get_filename(),
            std::path::Path::new("/srv/a%b?c#d.db")
        );
        assert_eq!(
            database_url("host=h port=5 dbname=d").unwrap(),
            "postgres://h:5/d"
        );
        assert_eq!(dialect_of("/srv/repo.db").unwrap(), Dialect::Sqlite);
        assert_eq!(dialect_of("host=h dbname=d").unwrap(), Dialect::Postgres);
        for bad in ["", "  ", "mysql://h/db", "host=h port=x"] {
            assert!(database_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dialects_come_from_the_scheme() {
        assert_eq!(dialect_of("sqlite://x.db").unwrap(), Dialect::Sqlite);
        assert_eq!(dialect_of("sqlite::memory:").unwrap(), Dialect::Sqlite);
        assert_eq!(dialect_of("postgresql://h/db").unwrap(), Dialect::Postgres);
        let err = dialect_of("mysql://h/db").unwrap_err().to_string();
        assert!(
            err.contains("sqlite://") && err.contains("postgres://"),
            "{err}"
        );
    }
}
