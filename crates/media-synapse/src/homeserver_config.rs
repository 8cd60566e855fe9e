//! Reading `homeserver.yaml`: the three settings every tool working on a Synapse needs
//! (its database, `media_store_path` and `server_name`), each `None` when the file does
//! not set it, so that a flag can stand in for it.
//!
//! The database comes from Synapse's `database:` section: `name: sqlite3` with
//! `args.database` (the file), or `name: psycopg2` with libpq's `args` (`user`,
//! `password`, `host`, `port`, and `database` or its libpq name `dbname`). Relative
//! paths are resolved against the folder of the config file (Synapse resolves them
//! against its working directory, which is that folder in the usual layouts; the
//! configs Synapse generates hold absolute paths).

use std::path::{Path, PathBuf};

use media_core::ids::ServerName;
use media_db::DatabaseLocation;
use serde::Deserialize;

use crate::error::SynapseError;

/// What a tool reads from `homeserver.yaml`; `None` where the file says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HomeserverConfig {
    /// `database:`, as a location the toolkit opens.
    pub database: Option<DatabaseLocation>,
    /// `media_store_path`, resolved against the config file's folder.
    pub media_store_path: Option<PathBuf>,
    /// `server_name`.
    pub server_name: Option<ServerName>,
}

// Every key may be missing or null (`key:` with no value) in a real config.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawConfig {
    server_name: Option<String>,
    media_store_path: Option<String>,
    database: Option<RawDatabase>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawDatabase {
    name: Option<String>,
    args: Option<RawArgs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawArgs {
    database: Option<Scalar>,
    dbname: Option<Scalar>,
    user: Option<Scalar>,
    password: Option<Scalar>,
    host: Option<Scalar>,
    port: Option<Scalar>,
}

/// A YAML scalar read as text (`port: 5432` and `port: "5432"` alike).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Int(i64),
    Text(String),
}

impl Scalar {
    fn text(&self) -> String {
        match self {
            Self::Int(n) => n.to_string(),
            Self::Text(text) => text.clone(),
        }
    }
}

fn text(scalar: &Option<Scalar>) -> Option<String> {
    scalar.as_ref().map(Scalar::text)
}

impl HomeserverConfig {
    /// Reads the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, SynapseError> {
        let config_error = |reason: String| {
            SynapseError::Config(format!("homeserver config {}: {reason}", path.display()))
        };
        let text = std::fs::read_to_string(path).map_err(|e| {
            config_error(format!(
                "cannot read it ({e}); give Synapse's homeserver.yaml with -c/--config"
            ))
        })?;
        let folder = path.parent().unwrap_or(Path::new("."));
        Self::parse(&text, folder).map_err(config_error)
    }

    /// Parses config text; relative paths resolve against `folder`.
    pub fn parse(text: &str, folder: &Path) -> Result<Self, String> {
        let raw: RawConfig =
            serde_saphyr::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
        let server_name = raw
            .server_name
            .map(|name| {
                name.parse::<ServerName>()
                    .map_err(|e| format!("server_name {name:?}: {e}"))
            })
            .transpose()?;
        let media_store_path = raw.media_store_path.map(|p| folder.join(p));
        let database = raw.database.map(|db| database(db, folder)).transpose()?;
        Ok(Self {
            database,
            media_store_path,
            server_name,
        })
    }
}

/// The location of Synapse's `database:` section.
fn database(raw: RawDatabase, folder: &Path) -> Result<DatabaseLocation, String> {
    let args = raw.args.unwrap_or_default();
    match raw.name.as_deref() {
        Some("sqlite3") => {
            let file = text(&args.database).ok_or(
                "database.name is sqlite3 but database.args.database (the file) is not set",
            )?;
            Ok(DatabaseLocation::sqlite_file(&folder.join(file)))
        }
        Some("psycopg2") => {
            let port = match text(&args.port) {
                Some(port) => port
                    .parse::<u16>()
                    .map_err(|e| format!("database.args.port {port:?}: {e}"))?,
                None => 5432,
            };
            let name = text(&args.database)
                .or_else(|| text(&args.dbname))
                .unwrap_or_default();
            DatabaseLocation::postgres(
                &text(&args.host).unwrap_or_else(|| "localhost".to_owned()),
                port,
                &text(&args.user).unwrap_or_default(),
                text(&args.password).as_deref(),
                &name,
            )
            .map_err(|e| format!("database.args: {e}"))
        }
        Some(other) => Err(format!(
            "database.name is {other:?}: Synapse knows sqlite3 and psycopg2"
        )),
        None => Err("the database section has no name (sqlite3 or psycopg2)".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sqlite_config_gives_its_file_and_paths_against_the_config_folder() {
        let config = HomeserverConfig::parse(
            "server_name: example.org\nmedia_store_path: media_store\n\
             database:\n  name: sqlite3\n  args:\n    database: homeserver.db\n",
            Path::new("/etc/synapse"),
        )
        .unwrap();
        assert_eq!(config.server_name.unwrap().as_str(), "example.org");
        assert_eq!(
            config.media_store_path.unwrap(),
            Path::new("/etc/synapse/media_store")
        );
        assert_eq!(
            config.database.unwrap().sqlite_path().unwrap(),
            Path::new("/etc/synapse/homeserver.db")
        );
    }

    #[test]
    fn a_psycopg2_config_gives_a_postgres_url_with_its_password_encoded() {
        let config = HomeserverConfig::parse(
            "database:\n  name: psycopg2\n  args:\n    user: synapse\n    password: 'p@ss w'\n\
             \x20   host: db.internal\n    port: 5433\n    dbname: synapse\n    cp_min: 5\n",
            Path::new("/etc/synapse"),
        )
        .unwrap();
        let database = config.database.unwrap();
        assert_eq!(
            database.connection_url(),
            "postgres://synapse:p%40ss%20w@db.internal:5433/synapse"
        );
        assert!(config.server_name.is_none() && config.media_store_path.is_none());
    }

    #[test]
    fn an_unknown_engine_is_named() {
        let error =
            HomeserverConfig::parse("database:\n  name: mysql\n", Path::new(".")).unwrap_err();
        assert!(error.contains("mysql"), "{error}");
    }
}
