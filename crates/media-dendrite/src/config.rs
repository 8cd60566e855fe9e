//! Reading `dendrite.yaml`: the server name, the media folder, and the media, user and
//! sync databases, with Dendrite's own precedence and connection-string forms.

use std::path::{Path, PathBuf};

use media_core::ids::ServerName;
use media_core::records::MediaKey;
use serde::Deserialize;

use crate::avatars::parse_mxc;
use crate::db::Component;
use crate::error::CleanError;

/// What a purge needs from a Dendrite config, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DendriteConfig {
    /// `global.server_name`: media of this origin are local.
    pub server_name: ServerName,
    /// `media_api.base_path`, resolved against the working directory.
    pub base_path: PathBuf,
    /// The media API database (`sqlite://` or `postgres://` URL).
    pub media_database: String,
    /// The user API's account database.
    pub user_database: String,
    /// The sync API database.
    pub sync_database: String,
    /// `global.server_notices.avatar_url`, when it is an MXC URI.
    pub server_notices_avatar: Option<MediaKey>,
    /// Things the operator should know (relative paths resolved against the working
    /// directory, an unusable server-notices avatar).
    pub warnings: Vec<String>,
}

// Every field may be missing or null (`key:` with no value) in a real config.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawConfig {
    global: Option<RawGlobal>,
    media_api: Option<RawMediaApi>,
    user_api: Option<RawUserApi>,
    sync_api: Option<RawSyncApi>,
    // Synapse's top-level keys, read only to recognise a homeserver.yaml given by mistake.
    server_name: Option<serde::de::IgnoredAny>,
    media_store_path: Option<serde::de::IgnoredAny>,
    database: Option<RawSynapseDatabase>,
}

/// Synapse's `database:` section (`name: psycopg2` or `sqlite3`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawSynapseDatabase {
    name: Option<String>,
}

impl RawConfig {
    /// The Synapse keys this config has at its top level (none in a Dendrite config).
    fn synapse_keys(&self) -> Vec<String> {
        let mut keys = Vec::new();
        if self.server_name.is_some() {
            keys.push("server_name".to_owned());
        }
        if self.media_store_path.is_some() {
            keys.push("media_store_path".to_owned());
        }
        let engine = self.database.as_ref().and_then(|d| d.name.as_deref());
        if let Some(engine) = engine
            && matches!(engine, "psycopg2" | "sqlite3")
        {
            keys.push(format!("database.name: {engine}"));
        }
        keys
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawGlobal {
    server_name: Option<String>,
    database: Option<RawDatabase>,
    server_notices: Option<RawServerNotices>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawServerNotices {
    avatar_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawDatabase {
    connection_string: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawMediaApi {
    base_path: Option<String>,
    database: Option<RawDatabase>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawUserApi {
    account_database: Option<RawDatabase>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct RawSyncApi {
    database: Option<RawDatabase>,
}

/// The connection string of an optional database section ('' when absent).
fn connection_string(database: Option<RawDatabase>) -> String {
    database
        .and_then(|d| d.connection_string)
        .unwrap_or_default()
}

impl DendriteConfig {
    /// Reads the config file at `path`; relative paths in it resolve against `workdir`
    /// (Dendrite's working directory).
    pub fn load(path: &Path, workdir: &Path) -> Result<Self, CleanError> {
        let text = std::fs::read_to_string(path).map_err(|e| CleanError::Config {
            path: path.to_owned(),
            reason: format!("cannot read it: {e}. Give Dendrite's config with -c/--config"),
        })?;
        Self::parse(&text, workdir).map_err(|reason| CleanError::Config {
            path: path.to_owned(),
            reason,
        })
    }

    /// Parses config text; relative paths resolve against `workdir`.
    pub fn parse(text: &str, workdir: &Path) -> Result<Self, String> {
        let raw: RawConfig =
            serde_saphyr::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
        let synapse_keys = raw.synapse_keys();
        if raw.global.is_none() && !synapse_keys.is_empty() {
            return Err(format!(
                "this looks like a Synapse config (homeserver.yaml: it has Synapse's top-level \
                 {} and no `global:` section), not Dendrite's dendrite.yaml. cleanmedia \
                 cleans Dendrite's media only: give it Dendrite's config with -c. Synapse is \
                 not supported by cleanmedia (use Synapse's own media_retention settings, or \
                 import_synapse to move its media into the media repository)",
                synapse_keys.join(", ")
            ));
        }
        let Some(global) = raw.global else {
            return Err(
                "it has no `global:` section (with global.server_name): is this \
                        Dendrite's dendrite.yaml?"
                    .into(),
            );
        };
        let media_api = raw.media_api.unwrap_or_default();
        let name = global.server_name.unwrap_or_default();
        if name.trim().is_empty() {
            return Err(
                "global.server_name is not set: Dendrite's config names its server \
                        there"
                    .into(),
            );
        }
        let server_name: ServerName = name
            .parse()
            .map_err(|e| format!("global.server_name {name:?} is not a server name: {e}"))?;
        let mut warnings = Vec::new();
        let base_path = media_api.base_path.unwrap_or_default();
        if base_path.is_empty() {
            return Err("media_api.base_path is empty: where does Dendrite keep media?".into());
        }
        let base_path = resolve(
            Path::new(&base_path),
            workdir,
            "media_api.base_path",
            &mut warnings,
        );
        let global_database = connection_string(global.database);
        let mut database = |component: Component, own: String| {
            let chosen = if own.trim().is_empty() {
                global_database.trim()
            } else {
                own.trim()
            };
            if chosen.is_empty() {
                return Err(format!(
                    "neither {} nor global.database.connection_string is set",
                    component.config_key()
                ));
            }
            database_url(chosen, workdir, component.config_key(), &mut warnings)
        };
        let media_database = database(Component::MediaApi, connection_string(media_api.database))?;
        let user_database = database(
            Component::UserApi,
            connection_string(raw.user_api.unwrap_or_default().account_database),
        )?;
        let sync_database = database(
            Component::SyncApi,
            connection_string(raw.sync_api.unwrap_or_default().database),
        )?;
        let notices = global
            .server_notices
            .and_then(|n| n.avatar_url)
            .unwrap_or_default();
        let notices = notices.trim();
        let server_notices_avatar = parse_mxc(notices);
        if !notices.is_empty() && server_notices_avatar.is_none() {
            warnings.push(format!(
                "global.server_notices.avatar_url {notices:?} is not an mxc://origin/media_id URI with a valid origin and media ID; ignored"
            ));
        }
        Ok(Self {
            server_name,
            base_path,
            media_database,
            user_database,
            sync_database,
            server_notices_avatar,
            warnings,
        })
    }
}

/// `path` made absolute against `workdir`, noting in `warnings` when it was relative.
fn resolve(path: &Path, workdir: &Path, key: &str, warnings: &mut Vec<String>) -> PathBuf {
    if path.is_absolute() {
        return path.to_owned();
    }
    // `./media_store` → `<workdir>/media_store`: no `.` left in paths we print.
    let relative: PathBuf = path
        .components()
        .filter(|c| *c != std::path::Component::CurDir)
        .collect();
    let resolved = workdir.join(relative);
    warnings.push(format!(
        "{key} is relative: using {} (relative to Dendrite's working directory, set with \
         --workdir)",
        resolved.display()
    ));
    resolved
}

/// A Dendrite connection string as a URL our database layer opens: `file:` strings are
/// SQLite (`file:rel.db`, `file:///abs.db`; any `?query` dropped), `postgres://` URLs
/// pass through, and libpq `key=value` strings become `postgres://` URLs.
fn database_url(
    connection: &str,
    workdir: &Path,
    key: &str,
    warnings: &mut Vec<String>,
) -> Result<String, String> {
    if let Some(rest) = connection.strip_prefix("file:") {
        let file = rest.split('?').next().unwrap_or_default();
        // file:///abs → /abs; file:/abs → /abs; file:rel → rel.
        let file = file.strip_prefix("//").unwrap_or(file);
        if file.is_empty() {
            return Err(format!("{key} {connection:?} names no SQLite file"));
        }
        let path = resolve(Path::new(file), workdir, key, warnings);
        return Ok(media_db::DatabaseLocation::sqlite_file(&path)
            .connection_url()
            .to_owned());
    }
    if connection.starts_with("postgres://") || connection.starts_with("postgresql://") {
        return Ok(connection.to_owned());
    }
    if connection.contains('=') && !connection.contains("://") {
        return media_db::DatabaseLocation::from_key_value(connection)
            .map(|location| location.connection_url().to_owned())
            .map_err(|e| format!("{key}: {e}"));
    }
    Err(format!(
        "{key} {:?} is neither file: (SQLite), a postgres:// URL nor key=value settings",
        media_db::redact_url(connection)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKDIR: &str = "/srv/dendrite";

    fn parse(yaml: &str) -> Result<DendriteConfig, String> {
        DendriteConfig::parse(yaml, Path::new(WORKDIR))
    }

    const MONOLITH: &str = "
version: 2
global:
  server_name: example.org
  database:
    connection_string: postgresql://dendrite:secret@db:5432/dendrite?sslmode=disable
  server_notices:
    enabled: true
    avatar_url: mxc://example.org/notices_avatar
media_api:
  base_path: /var/dendrite/media
  database:
    connection_string: ''
user_api:
  account_database:
    connection_string:
sync_api:
  database: {}
";

    #[test]
    fn the_global_database_serves_components_without_their_own() {
        let config = parse(MONOLITH).unwrap();
        assert_eq!(config.server_name.as_str(), "example.org");
        assert_eq!(config.base_path, Path::new("/var/dendrite/media"));
        let global = "postgresql://dendrite:secret@db:5432/dendrite?sslmode=disable";
        assert_eq!(config.media_database, global);
        assert_eq!(config.user_database, global);
        assert_eq!(config.sync_database, global);
        assert_eq!(
            config.server_notices_avatar,
            Some(MediaKey::new(
                "example.org".parse().unwrap(),
                "notices_avatar".parse().unwrap()
            ))
        );
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    /// Python cleanmedia defect 4: it read the global connection string first.
    #[test]
    fn a_components_own_connection_string_wins_over_the_global_one() {
        let yaml = "
global:
  server_name: example.org
  database:
    connection_string: postgres://global@db/all
media_api:
  base_path: media
  database:
    connection_string: file:mediaapi.db
user_api:
  account_database:
    connection_string: file:///var/lib/dendrite/userapi_accounts.db?_busy_timeout=5000
sync_api:
  database:
    connection_string: host=db2 port=5433 user=sync password='p w\\'d' dbname=syncapi sslmode=disable
";
        let config = parse(yaml).unwrap();
        assert_eq!(config.media_database, "sqlite:///srv/dendrite/mediaapi.db");
        assert_eq!(
            config.user_database,
            "sqlite:///var/lib/dendrite/userapi_accounts.db"
        );
        assert_eq!(
            config.sync_database,
            "postgres://sync:p%20w%27d@db2:5433/syncapi?sslmode=disable"
        );
        assert_eq!(config.base_path, Path::new("/srv/dendrite/media"));
        assert_eq!(config.warnings.len(), 2, "{:?}", config.warnings);
        assert!(config.warnings.iter().all(|w| w.contains("relative")));
    }

    #[test]
    fn key_value_settings_become_urls() {
        use media_db::DatabaseLocation;
        assert_eq!(
            DatabaseLocation::from_key_value("dbname=dendrite user=d host=/var/run/postgresql")
                .unwrap()
                .connection_url(),
            "postgres://d@localhost/dendrite?host=%2Fvar%2Frun%2Fpostgresql"
        );
        assert!(DatabaseLocation::from_key_value("host=db port=x").is_err());
        assert!(DatabaseLocation::from_key_value("password='open").is_err());
        assert!(DatabaseLocation::from_key_value("host").is_err());
    }

    #[test]
    fn unusable_configs_are_refused_with_the_key_to_fix() {
        let no_db = "global: {server_name: example.org}\nmedia_api: {base_path: /m}\n";
        let err = parse(no_db).unwrap_err();
        assert!(
            err.contains("media_api.database.connection_string"),
            "{err}"
        );
        let bad_name = "global: {server_name: 'bad name'}\nmedia_api: {base_path: /m}\n";
        assert!(parse(bad_name).unwrap_err().contains("global.server_name"));
        let no_base =
            "global: {server_name: example.org, database: {connection_string: file:x.db}}\n";
        assert!(parse(no_base).unwrap_err().contains("media_api.base_path"));
        let mysql = "global: {server_name: e.org, database: {connection_string: 'mysql://x'}}\n\
                     media_api: {base_path: /m}\n";
        assert!(parse(mysql).unwrap_err().contains("neither file:"));
        assert!(parse("global: [").unwrap_err().contains("YAML"));
    }

    /// Issue 19 item 8: a Synapse homeserver.yaml was reported as an empty server name.
    #[test]
    fn a_synapse_config_is_recognised_and_a_missing_global_section_named() {
        let synapse = "server_name: example.org\nmedia_store_path: /data/media_store\n\
                       database:\n  name: psycopg2\n  args:\n    user: synapse\n";
        let err = parse(synapse).unwrap_err();
        assert!(err.contains("looks like a Synapse config"), "{err}");
        assert!(err.contains("database.name: psycopg2"), "{err}");
        assert!(err.contains("import_synapse"), "{err}");
        let err = parse("media_api: {base_path: /m}\n").unwrap_err();
        assert!(err.contains("no `global:` section"), "{err}");
        let err = parse("global: {database: {connection_string: file:x.db}}\n").unwrap_err();
        assert!(err.contains("global.server_name is not set"), "{err}");
    }

    #[test]
    fn a_server_notices_avatar_that_is_no_mxc_is_ignored_with_a_warning() {
        let yaml = "global: {server_name: e.org, database: {connection_string: file:x.db}, \
                    server_notices: {avatar_url: 'https://e.org/a.png'}}\n\
                    media_api: {base_path: /m}\n";
        let config = parse(yaml).unwrap();
        assert_eq!(config.server_notices_avatar, None);
        assert!(config.warnings.iter().any(|w| w.contains("server_notices")));
    }
}
