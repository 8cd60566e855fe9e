//! Where a database is: [`DatabaseLocation`], parsed once from what the operator wrote
//! (a URL, a bare path or libpq `key=value` settings) and shown with its password hidden.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::SqliteConnectOptions;

use crate::error::DbError;

/// The SQL dialect of a database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite 3.
    Sqlite,
    /// PostgreSQL.
    Postgres,
}

/// The database locations accepted, for messages.
pub const ACCEPTED_DATABASE_URLS: &str = "a bare path (a SQLite file), sqlite://path/to/file.db, \
     sqlite:///absolute/file.db, postgres://user:password@host:port/database, or PostgreSQL \
     key=value settings (host=… port=… user=… password=… dbname=…)";

/// A database location, parsed once at the edge (a flag, a configuration file) and
/// handed to every function that opens a database. Its [`Display`](fmt::Display) and
/// [`Debug`] forms hide the password; [`DatabaseLocation::connection_url`] is for the
/// drivers only.
///
/// Parsing ([`FromStr`]) accepts:
/// * `sqlite:…` URLs and `postgres://`/`postgresql://` URLs, taken as written (a
///   password in them must already be percent-encoded, as in any URL);
/// * libpq `key=value` settings (`host=db port=5432 user=u password='p w' dbname=d`),
///   every part percent-encoded into a `postgres://` URL;
/// * a bare path (`repo.db`, `/var/lib/media/repo.db`): a SQLite file;
///
/// and refuses anything else (another `scheme://`, an empty string), naming the
/// accepted forms.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseLocation {
    /// The URL the drivers open (holding the password, if any).
    url: String,
    dialect: Dialect,
}

impl DatabaseLocation {
    /// The SQLite file at `path`, with the characters the driver would take for URL
    /// syntax (`%`, `?`, `#`) percent-encoded.
    pub fn sqlite_file(path: &Path) -> Self {
        let mut url = String::from("sqlite://");
        for c in path.to_string_lossy().chars() {
            match c {
                '%' => url.push_str("%25"),
                '?' => url.push_str("%3F"),
                '#' => url.push_str("%23"),
                c => url.push(c),
            }
        }
        Self {
            url,
            dialect: Dialect::Sqlite,
        }
    }

    /// A PostgreSQL database from its parts, each percent-encoded by the URL library,
    /// so a user, password or database name holding `@`, `/`, `#`, `%`, `:` or spaces
    /// survives exactly (never assembled by string formatting). A `host` starting with
    /// `/` is a Unix socket folder.
    pub fn postgres(
        host: &str,
        port: u16,
        user: &str,
        password: Option<&str>,
        database: &str,
    ) -> Result<Self, DbError> {
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
        Ok(Self {
            url: url.to_string(),
            dialect: Dialect::Postgres,
        })
    }

    /// libpq `key=value` settings (values optionally in single quotes, `\'` and `\\`
    /// escaped): `host`, `hostaddr`, `port`, `user`, `password` and `dbname` become
    /// parts of a `postgres://` URL, any other key a query parameter (which the driver
    /// understands or rejects by name).
    pub fn from_key_value(settings: &str) -> Result<Self, DbError> {
        let url = key_value_url(settings).map_err(|reason| DbError::InvalidUrl {
            url: redact_key_value(settings),
            reason,
        })?;
        Ok(Self {
            url,
            dialect: Dialect::Postgres,
        })
    }

    /// The dialect of the database.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The URL the database drivers open. It holds the password: never print it (the
    /// location's [`Display`](fmt::Display) form hides it).
    pub fn connection_url(&self) -> &str {
        &self.url
    }

    /// Whether this is an in-memory SQLite database (one per connection).
    pub fn is_in_memory(&self) -> bool {
        self.dialect == Dialect::Sqlite
            && (self.url.contains(":memory:") || self.url.contains("mode=memory"))
    }

    /// The file of a SQLite database (not of an in-memory one).
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        if self.dialect != Dialect::Sqlite || self.is_in_memory() {
            return None;
        }
        SqliteConnectOptions::from_str(&self.url)
            .ok()
            .map(|options| options.get_filename().to_owned())
    }

    /// Whether this is a SQLite file that does not exist (a missing repository, say).
    pub fn is_missing_sqlite_file(&self) -> bool {
        self.sqlite_path().is_some_and(|file| !file.exists())
    }
}

impl FromStr for DatabaseLocation {
    type Err = DbError;

    fn from_str(location: &str) -> Result<Self, DbError> {
        let trimmed = location.trim();
        if trimmed.is_empty() {
            return Err(DbError::InvalidUrl {
                url: String::new(),
                reason: format!("no database given: expected {ACCEPTED_DATABASE_URLS}"),
            });
        }
        let scheme = trimmed.split_once(':').map(|(s, _)| s).unwrap_or("");
        let dialect = match scheme {
            "sqlite" => Some(Dialect::Sqlite),
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            _ => None,
        };
        if let Some(dialect) = dialect {
            return Ok(Self {
                url: trimmed.to_owned(),
                dialect,
            });
        }
        if looks_like_key_value(trimmed) {
            return Self::from_key_value(trimmed);
        }
        if trimmed.contains("://") {
            return Err(DbError::InvalidUrl {
                url: redact_url(trimmed),
                reason: format!("expected {ACCEPTED_DATABASE_URLS}"),
            });
        }
        Ok(Self::sqlite_file(Path::new(trimmed)))
    }
}

impl fmt::Display for DatabaseLocation {
    /// The URL with any password replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.url))
    }
}

impl fmt::Debug for DatabaseLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("DatabaseLocation")
            .field(&redact_url(&self.url))
            .finish()
    }
}

/// What the functions that open a database take: a [`DatabaseLocation`], or text that is
/// parsed into one right there (tests, and callers holding a location as text).
pub trait IntoDatabaseLocation {
    /// The location, parsed if it is text.
    fn into_database_location(self) -> Result<DatabaseLocation, DbError>;
}

impl IntoDatabaseLocation for DatabaseLocation {
    fn into_database_location(self) -> Result<DatabaseLocation, DbError> {
        Ok(self)
    }
}

impl IntoDatabaseLocation for &DatabaseLocation {
    fn into_database_location(self) -> Result<DatabaseLocation, DbError> {
        Ok(self.clone())
    }
}

impl IntoDatabaseLocation for &str {
    fn into_database_location(self) -> Result<DatabaseLocation, DbError> {
        self.parse()
    }
}

impl IntoDatabaseLocation for &String {
    fn into_database_location(self) -> Result<DatabaseLocation, DbError> {
        self.parse()
    }
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
fn key_value_url(settings: &str) -> Result<String, String> {
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

#[cfg(test)]
mod tests {
    use sqlx::postgres::PgConnectOptions;

    use super::*;

    /// The URL the drivers get for `location`.
    fn database_url(location: &str) -> Result<String, DbError> {
        location
            .parse::<DatabaseLocation>()
            .map(|l| l.connection_url().to_owned())
    }

    fn dialect_of(location: &str) -> Result<Dialect, DbError> {
        location.parse::<DatabaseLocation>().map(|l| l.dialect())
    }

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
        let location =
            DatabaseLocation::postgres("127.0.0.1", 55432, user, Some(password), database).unwrap();
        assert!(!location.to_string().contains("w#rd"), "{location}");
        assert!(!format!("{location:?}").contains("w#rd"), "{location:?}");
        let url = location.connection_url();
        let options = PgConnectOptions::from_str(url).unwrap();
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
        assert!(!redact_url(url).contains("w#rd"), "{}", redact_url(url));
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

    #[test]
    fn a_location_knows_its_kind_and_whether_its_file_exists() {
        let folder = tempfile::tempdir().unwrap();
        let file = folder.path().join("repo.db");
        let location = DatabaseLocation::sqlite_file(&file);
        assert!(location.is_missing_sqlite_file());
        std::fs::write(&file, b"").unwrap();
        assert!(!location.is_missing_sqlite_file());
        let memory: DatabaseLocation = "sqlite::memory:".parse().unwrap();
        assert!(memory.is_in_memory() && !memory.is_missing_sqlite_file());
        let server: DatabaseLocation = "host=/run/postgresql dbname=d password=s3cret"
            .parse()
            .unwrap();
        assert_eq!(server.dialect(), Dialect::Postgres);
        assert!(!server.is_in_memory() && !server.is_missing_sqlite_file());
        assert!(!server.to_string().contains("s3cret"), "{server}");
    }
}
