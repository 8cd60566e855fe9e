//! `import_synapse`: move a Synapse media store into the deduplicating media repository.
//!
//! Thin binary: parse the command line, wire the library crates, print a report, exit
//! with the toolkit's exit codes (see `media_cli::Exit`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use media_cli::{Exit, Output, RunError};
use media_core::ids::ServerName;
use media_db::{DatabaseLocation, DbError};
use media_import::{HomeserverClient, ImportError, ImportOptions, Include, Progress};

/// matrix-media-repo's `import_synapse` flags, accepted as aliases.
const MMR_FLAGS: &[(&str, &str)] = &[
    ("dbHost", "db-host"),
    ("dbPort", "db-port"),
    ("dbUsername", "db-username"),
    ("dbPassword", "db-password"),
    ("dbName", "db-name"),
    ("serverName", "server-name"),
    ("baseUrl", "homeserver-url"),
    ("workers", "workers"),
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
struct Cli {
    /// Synapse's database: the path of homeserver.db, a postgres:// URL or PostgreSQL
    /// key=value settings.
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_DB", required_unless_present = "db_host")]
    synapse_db: Option<String>,

    /// Synapse's PostgreSQL host (instead of --synapse-db; MMR's -dbHost).
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_DB_HOST")]
    db_host: Option<String>,
    /// Synapse's PostgreSQL port (MMR's -dbPort).
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_DB_PORT", default_value_t = 5432)]
    db_port: u16,
    /// Synapse's PostgreSQL user (MMR's -dbUsername).
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_DB_USERNAME", default_value = "synapse")]
    db_username: String,
    /// Synapse's PostgreSQL password (MMR's -dbPassword).
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_DB_PASSWORD", hide_env_values = true)]
    db_password: Option<String>,
    /// Synapse's PostgreSQL database (MMR's -dbName).
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_DB_NAME", default_value = "synapse")]
    db_name: String,

    /// Synapse's media_store_path (not needed with --source http).
    #[arg(
        long,
        help_heading = SYNAPSE,
        env = "SYNAPSE_MEDIA_STORE",
        required_unless_present = "homeserver_url"
    )]
    media_store: Option<PathBuf>,

    /// The homeserver's client API base URL, to download media whose file is not in the
    /// media store (MMR's -baseUrl).
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_HOMESERVER_URL", requires = "access_token")]
    homeserver_url: Option<String>,

    /// An access token of a homeserver admin, for --homeserver-url (an admin can also
    /// download quarantined media).
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_ACCESS_TOKEN", hide_env_values = true)]
    access_token: Option<String>,

    /// Seconds a homeserver download may send nothing (no headers, or no next bytes)
    /// before it is given up as a listed failure; the import goes on.
    #[arg(
        long,
        help_heading = SYNAPSE,
        env = "IMPORT_HTTP_TIMEOUT",
        default_value_t = media_synapse::homeserver::DEFAULT_READ_TIMEOUT.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    http_timeout: u64,

    /// Where media bytes come from: the media store (with the homeserver as fallback
    /// when --homeserver-url is given), or only the homeserver.
    #[arg(long, help_heading = SYNAPSE, env = "IMPORT_SOURCE", value_enum, default_value_t = Source::Files)]
    source: Source,

    /// The Synapse server's name; derived from its users (and checked) when omitted.
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_SERVER_NAME")]
    server_name: Option<ServerName>,

    #[command(flatten)]
    repository: media_cli::RepositoryArgs,

    /// Files copied concurrently (the database is written by one recorder either way).
    #[arg(long, env = "IMPORT_WORKERS", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..=256))]
    workers: u16,

    /// What to import: a comma-separated list of local, remote, thumbnails, url-previews.
    #[arg(
        long,
        env = "IMPORT_INCLUDE",
        default_value = "local,remote,thumbnails,url-previews"
    )]
    include: Include,

    /// Read and check everything, write nothing; report what a real run would do.
    #[arg(long, env = "IMPORT_DRY_RUN")]
    dry_run: bool,

    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    verbosity: media_cli::Verbosity,
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

  # A PostgreSQL Synapse (matrix-media-repo's flags work too), checking first:
  import_synapse --db-host localhost --db-username synapse --db-name synapse \\
      --media-store /var/lib/synapse/media_store \\
      --repo-db postgres://media@localhost/media --datastore /srv/media --dry-run

  # Fetch files missing from the media store from the homeserver, as an admin:
  import_synapse --synapse-db postgres://synapse@localhost/synapse \\
      --media-store /var/lib/synapse/media_store \\
      --homeserver-url https://matrix.example.org --access-token \"$ADMIN_TOKEN\"";

/// Where media bytes come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Source {
    /// The media store folder, falling back to the homeserver when one is given.
    Files,
    /// The homeserver only.
    Http,
}

impl Cli {
    /// The Synapse database location, from --synapse-db or MMR's -db* flags (the URL
    /// built by the URL library, so any character of a password or name survives).
    fn synapse_location(&self) -> Result<DatabaseLocation, DbError> {
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
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = media_cli::translate_go_flags(std::env::args(), MMR_FLAGS);
    if let Some(exit) = media_cli::print_docs_if_asked::<Cli>(&args) {
        return exit.into();
    }
    let cli = Cli::parse_from(args);
    cli.verbosity.init_logging();
    media_cli::exit_with(
        "import_synapse",
        Output::new(cli.json, cli.verbosity),
        run(&cli).await,
    )
}

async fn run(cli: &Cli) -> Result<Exit, RunError> {
    let media_store = match (cli.source, &cli.media_store) {
        (Source::Http, _) => None,
        (Source::Files, Some(dir)) if dir.is_dir() => Some(dir.clone()),
        (Source::Files, Some(dir)) => {
            return Err(RunError::usage(format_args!(
                "--media-store {} is not a folder: give Synapse's media_store_path",
                dir.display()
            )));
        }
        (Source::Files, None) => {
            return Err(RunError::usage(
                "give --media-store, or --source http to download everything from \
                 --homeserver-url",
            ));
        }
    };
    let homeserver = match (&cli.homeserver_url, &cli.access_token) {
        (Some(url), Some(token)) => {
            let timeout = std::time::Duration::from_secs(cli.http_timeout);
            let client =
                HomeserverClient::with_read_timeout(url, token, timeout).map_err(RunError::of)?;
            let user = client.whoami().await.map_err(RunError::of)?;
            tracing::info!("downloading missing media from {url} as {user}");
            Some(client)
        }
        _ if cli.source == Source::Http => {
            return Err(RunError::usage(
                "--source http needs --homeserver-url and --access-token",
            ));
        }
        _ => None,
    };
    let location = cli
        .synapse_location()
        .map_err(|e| RunError::of(ImportError::from(e)))?;
    let synapse = media_synapse::open_synapse(&location)
        .await
        .map_err(|e| RunError::of(ImportError::from(e)))?;
    // A wrong --media-store is refused before the repository is created (without a
    // homeserver to download from, every media would be a listed failure).
    if let (Some(dir), None) = (&media_store, &homeserver) {
        media_synapse::check_media_store(&synapse, dir, cli.include)
            .await
            .map_err(RunError::of)?;
    }
    // A dry run creates neither the repository nor the datastore folder.
    let repo = if cli.dry_run {
        media_db::connect_for_dry_run(&cli.repository.db).await
    } else {
        media_db::connect(&cli.repository.db).await
    }
    .map_err(|e| RunError::of(ImportError::from(e)))?;
    let store = if cli.dry_run {
        media_store::open_for_dry_run(&cli.repository.datastore).await
    } else {
        media_store::open(&cli.repository.datastore).await
    }
    .map_err(|e| RunError::usage(format_args!("datastore: {e}")))?;
    repo.attach_datastore(
        store.as_ref(),
        media_db::AttachOptions {
            // A dry run writes nothing, not even the datastore's identity marker.
            access: if cli.dry_run {
                media_db::DatastoreAccess::ReadOnly
            } else {
                media_db::DatastoreAccess::Write
            },
            moved: cli.repository.datastore_moved,
        },
    )
    .await
    .map_err(|e| RunError::of(ImportError::from(e)))?;
    let server_name = media_synapse::resolve_server_name(&synapse, cli.server_name.clone())
        .await
        .map_err(RunError::of)?;

    let progress = Arc::new(Progress::default());
    let bar = media_cli::ProgressBar::start(cli.verbosity.quiet || cli.json, progress.clone());
    let options = ImportOptions {
        media_store,
        homeserver,
        server_name,
        include: cli.include,
        workers: usize::from(cli.workers),
        mode: media_core::run::RunMode::from_dry_run(cli.dry_run),
        // As the operator wrote it (a bare path is labelled by its absolute path).
        source_label: media_synapse::source_label(
            cli.synapse_db.as_deref().unwrap_or(&location.to_string()),
        ),
    };
    let result = media_import::import_synapse(&synapse, &repo, store, options, progress).await;
    bar.finish();
    let report = result.map_err(RunError::of)?;
    synapse.close().await;
    repo.close().await;

    Ok(media_cli::print_report(
        &report,
        Output::new(cli.json, cli.verbosity),
    ))
}
