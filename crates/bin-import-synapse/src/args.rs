//! `import_synapse`'s command line: its flags, their help texts and what they ask for.

use std::path::PathBuf;

use clap::Parser;
use media_cli::{Output, Verbosity};
use media_core::ids::ServerName;
use media_core::run::RunMode;
use media_db::{DatabaseLocation, DbError};
use media_import::{Include, Shard};

/// matrix-media-repo's `import_synapse` flags, accepted as aliases.
pub(crate) const MMR_FLAGS: &[(&str, &str)] = &[
    ("dbHost", "db-host"),
    ("dbPort", "db-port"),
    ("dbUsername", "db-username"),
    ("dbPassword", "db-password"),
    ("dbName", "db-name"),
    ("serverName", "server-name"),
    ("baseUrl", "homeserver-url"),
    ("workers", "workers"),
    ("config", "mmr-config"),
];

/// Move a Synapse media store (its database and media_store folder) into the
/// deduplicating media repository: local and remote media, thumbnails, URL previews,
/// quarantine state, avatars pinned. Resumable: a re-run imports only what is missing.
#[derive(Debug, Parser)]
#[command(
    name = "import_synapse",
    version,
    override_usage = USAGE,
    after_help = EXAMPLES
)]
pub(crate) struct Cli {
    /// Synapse's database: the path of homeserver.db, a postgres:// URL or PostgreSQL
    /// key=value settings.
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_DB", required_unless_present = "db_host")]
    pub(crate) synapse_db: Option<String>,

    /// Synapse's PostgreSQL host (instead of --synapse-db; MMR's -dbHost).
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_DB_HOST")]
    pub(crate) db_host: Option<String>,
    /// Synapse's PostgreSQL port (MMR's -dbPort).
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_DB_PORT", default_value_t = 5432)]
    pub(crate) db_port: u16,
    /// Synapse's PostgreSQL user (MMR's -dbUsername).
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_DB_USERNAME", default_value = "synapse")]
    pub(crate) db_username: String,
    /// Synapse's PostgreSQL password (MMR's -dbPassword).
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_DB_PASSWORD", hide_env_values = true)]
    pub(crate) db_password: Option<String>,
    /// Synapse's PostgreSQL database (MMR's -dbName).
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_DB_NAME", default_value = "synapse")]
    pub(crate) db_name: String,

    /// Synapse's media_store_path (not needed with --source http).
    #[arg(
        long,
        help_heading = SYNAPSE,
        env = "SYNAPSE_MEDIA_STORE",
        required_unless_present = "homeserver_url"
    )]
    pub(crate) media_store: Option<PathBuf>,

    /// The homeserver's client API base URL, to download media whose file is not in the
    /// media store (MMR's -baseUrl).
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_HOMESERVER_URL", requires = "access_token")]
    pub(crate) homeserver_url: Option<String>,

    /// An access token of a homeserver admin, for --homeserver-url (an admin can also
    /// download quarantined media).
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_ACCESS_TOKEN", hide_env_values = true)]
    pub(crate) access_token: Option<String>,

    /// Seconds a homeserver download may send nothing (no headers, or no next bytes)
    /// before it is given up as a listed failure; the import goes on.
    #[arg(
        long,
        help_heading = SYNAPSE,
        env = "IMPORT_HTTP_TIMEOUT",
        default_value_t = media_synapse::homeserver::DEFAULT_READ_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub(crate) http_timeout: u64,

    /// Where media bytes come from: the media store (with the homeserver as fallback
    /// when --homeserver-url is given), or only the homeserver.
    #[arg(long, help_heading = SYNAPSE, env = "IMPORT_SOURCE", value_enum, default_value_t = Source::Files)]
    pub(crate) source: Source,

    /// The Synapse server's name; derived from its users (and checked) when omitted.
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_SERVER_NAME")]
    pub(crate) server_name: Option<ServerName>,

    #[command(flatten)]
    pub(crate) repository: media_cli::RepositoryArgs,

    /// Import into a matrix-media-repo deployment instead of our repository: its
    /// media-repo.yaml (MMR's -config). Its PostgreSQL database and its file or S3
    /// datastores are written as MMR writes them, so that MMR serves what was imported.
    #[arg(
        long,
        help_heading = "matrix-media-repo (where media is imported to, instead)",
        env = "MMR_CONFIG",
        value_name = "MEDIA_REPO_YAML",
        conflicts_with_all = ["db", "datastore"]
    )]
    pub(crate) mmr_config: Option<PathBuf>,

    /// Files copied concurrently (the database is written by one recorder either way).
    #[arg(long, env = "IMPORT_WORKERS", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) workers: u16,

    /// What to import: a comma-separated list of local, remote, thumbnails, url-previews,
    /// rooms (which rooms hold which media, read from the rooms' events; `rooms` alone
    /// records them for media imported before).
    #[arg(
        long,
        env = "IMPORT_INCLUDE",
        default_value = "local,remote,thumbnails,url-previews,rooms"
    )]
    pub(crate) include: Include,

    /// Import only share K of N (K = 1..N), to spread one import over N processes or
    /// machines sharing one repository and one datastore: each media falls to exactly
    /// one share, the same on every machine. 1/1 imports everything.
    #[arg(long, env = "IMPORT_SHARD", value_name = "K/N", default_value = "1/1")]
    pub(crate) shard: Shard,

    /// Read and check everything, write nothing; report what a real run would do.
    #[arg(long, env = "IMPORT_DRY_RUN")]
    pub(crate) dry_run: bool,

    #[command(flatten)]
    pub(crate) report: media_cli::ReportArgs,
}

/// The help heading of the flags that say where Synapse's media comes from.
const SYNAPSE: &str = "Synapse (where media is imported from)";

/// The usage lines: Synapse's database and its media store are required, except that
/// --source http downloads everything from the homeserver instead.
const USAGE: &str = "\
import_synapse [OPTIONS] --synapse-db <SYNAPSE_DB> --media-store <MEDIA_STORE>
       import_synapse [OPTIONS] --db-host <DB_HOST> [--db-password <DB_PASSWORD>] --media-store <MEDIA_STORE>
       import_synapse [OPTIONS] --synapse-db <SYNAPSE_DB> --source http --homeserver-url <URL> --access-token <TOKEN>";

/// Examples printed after the options.
const EXAMPLES: &str = "\
Examples:
  # A SQLite Synapse into a SQLite repository and a datastore folder:
  import_synapse --synapse-db /var/lib/synapse/homeserver.db \\
      --media-store /var/lib/synapse/media_store \\
      --repo-db /var/lib/media-repo/repo.db --datastore /var/lib/media-repo/store

  # A PostgreSQL Synapse into a matrix-media-repo deployment (its database and
  # datastores, from its config), with matrix-media-repo's own flags, checking first:
  import_synapse -config /etc/matrix-media-repo/media-repo.yaml -serverName example.org \\
      -dbHost localhost -dbUsername synapse -dbName synapse \\
      --media-store /var/lib/synapse/media_store --dry-run

  # One of three machines sharing a PostgreSQL repository and an S3 bucket (the others
  # run --shard 1/3 and 3/3), fetching files missing from the media store as an admin:
  import_synapse --synapse-db postgres://synapse@db.example.org/synapse \\
      --media-store /mnt/synapse/media_store --shard 2/3 \\
      --homeserver-url https://matrix.example.org --access-token \"$ADMIN_TOKEN\" \\
      --repo-db postgres://media@db.example.org/media \\
      --datastore 's3://media/repo?endpoint=http://garage.example.org:3900&region=garage'";

/// Where media bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Source {
    /// The media store folder, falling back to the homeserver when one is given.
    Files,
    /// The homeserver only.
    Http,
}

impl Cli {
    /// The Synapse database location, from --synapse-db or MMR's -db* flags (the URL
    /// built by the URL library, so any character of a password or name survives).
    pub(crate) fn synapse_location(&self) -> Result<DatabaseLocation, DbError> {
        match &self.synapse_db {
            Some(location) => location.parse(),
            None => DatabaseLocation::postgres(
                self.db_host.as_deref().unwrap_or("localhost"),
                self.db_port,
                &self.db_username,
                self.db_password.as_deref(),
                &self.db_name,
            ),
        }
    }

    /// A dry run (`--dry-run`) or a real import.
    pub(crate) fn mode(&self) -> RunMode {
        RunMode::from_dry_run(self.dry_run)
    }
}

impl media_cli::ToolArgs for Cli {
    fn output(&self) -> Output {
        self.report.output()
    }

    fn verbosity(&self) -> Verbosity {
        self.report.verbosity
    }
}
