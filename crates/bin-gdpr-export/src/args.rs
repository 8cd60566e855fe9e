//! `gdpr_export`: Write one user's or one server's media as a matrix-media-repo v2 archive.
//!
//! Thin binary: parse the command line, wire the library crates, print a report, exit
//! with the toolkit's exit codes (see `media_cli::Exit`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use media_archive::{Compression, WriterOptions};
use media_cli::{Exit, Output, RunError};
use media_core::ids::ServerName;
use media_gdpr::{Entity, ExportOptions, GdprError, MediaBytes, Progress};

/// matrix-media-repo's `gdpr_export` flags, accepted as aliases.
const MMR_FLAGS: &[(&str, &str)] = &[
    ("entity", "entity"),
    ("destination", "destination"),
    ("partSize", "part-size"),
    ("includeData", "include-data"),
];

/// Write one user's uploads, or every media of one server, as a matrix-media-repo v2
/// archive: export-part-N.tgz files and export-manifest.tgz (manifest.json and a readable
/// index.html). Bytes shared by several media are written once; quarantined media are
/// left out. The files are readable by their owner only.
#[derive(Debug, Parser)]
#[command(name = "gdpr_export", version, after_help = EXAMPLES)]
struct Cli {
    /// Whose media: a user ID (@alice:example.org: that user's uploads) or a server name
    /// (example.org: every media of that origin).
    #[arg(long, env = "GDPR_ENTITY")]
    entity: Entity,

    /// The folder to write the archive into (created when missing).
    #[arg(long, env = "GDPR_DESTINATION", default_value = "./gdpr-data")]
    destination: PathBuf,

    /// Replace an export already in the destination.
    #[arg(long, env = "GDPR_FORCE")]
    force: bool,

    /// Close a part once it holds this much (uncompressed): e.g. 200MiB, 1G, 104857600.
    #[arg(long, env = "GDPR_PART_SIZE", default_value = "200MiB", value_parser = media_cli::parse_byte_size)]
    part_size: u64,

    /// Write the media bytes; --include-data=false writes a metadata-only archive.
    #[arg(long, env = "GDPR_INCLUDE_DATA", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    include_data: bool,

    /// Sync the archive to disk before it counts as complete; --fsync=false skips that
    /// (faster, for archives copied elsewhere at once).
    #[arg(long, env = "GDPR_FSYNC", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    fsync: bool,

    /// How archive entries are compressed.
    #[arg(
        long,
        env = "GDPR_COMPRESSION",
        default_value = "auto",
        value_parser = compression_values()
    )]
    compression: Compression,

    /// Export straight from a Synapse database (homeserver.db path or postgres:// URL)
    /// instead of our repository; needs --media-store.
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_DB", requires = "media_store")]
    synapse_db: Option<String>,

    /// Synapse's media_store_path, with --synapse-db.
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_MEDIA_STORE", requires = "synapse_db")]
    media_store: Option<PathBuf>,

    /// The Synapse server's name, with --synapse-db; derived from its users (and
    /// checked) when omitted.
    #[arg(long, help_heading = SYNAPSE, env = "SYNAPSE_SERVER_NAME", requires = "synapse_db")]
    server_name: Option<ServerName>,

    #[command(flatten)]
    repository: media_cli::RepositoryArgs,

    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    verbosity: media_cli::Verbosity,
}

/// The help heading of the flags that export from a Synapse instead of our repository.
const SYNAPSE: &str = "Synapse (to export from it instead of our repository)";

/// Examples printed after the options.
const EXAMPLES: &str = "\
Examples:
  # One user's uploads from our repository, in parts of at most 1 GiB:
  gdpr_export --entity @alice:example.org --destination ./alice \\
      --repo-db /var/lib/media-repo/repo.db --datastore /var/lib/media-repo/store --part-size 1G

  # Every media of one server, metadata only (no media bytes):
  gdpr_export --entity example.org --include-data=false --destination ./example.org

  # Straight from a Synapse, without importing it first:
  gdpr_export --entity @alice:example.org --synapse-db /var/lib/synapse/homeserver.db \\
      --media-store /var/lib/synapse/media_store";

/// The `--compression` values, listed in `--help` (with what each does) and parsed by
/// [`Compression`]'s own parser.
fn compression_values() -> impl clap::builder::TypedValueParser<Value = Compression> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    PossibleValuesParser::new([
        PossibleValue::new("auto")
            .help("Deflate text (JSON, HTML, SVG…), store media that is compressed already"),
        PossibleValue::new("none").help("Store every entry as it is"),
        PossibleValue::new("fast").help("Deflate every entry at the fastest level"),
        PossibleValue::new("best").help("Deflate every entry at the best level"),
    ])
    .try_map(|value| value.parse::<Compression>())
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
        "gdpr_export",
        Output::new(cli.json, cli.verbosity),
        run(&cli).await,
    )
}

async fn run(cli: &Cli) -> Result<Exit, RunError> {
    let progress = Arc::new(Progress::default());
    let bar = media_cli::ProgressBar::start(cli.verbosity.quiet || cli.json, progress.clone());
    let options = ExportOptions {
        entity: cli.entity.clone(),
        destination: cli.destination.clone(),
        writer: WriterOptions {
            part_size: cli.part_size,
            compression: cli.compression,
            replace: cli.force,
            sync: cli.fsync,
        },
        media_bytes: MediaBytes::from_include_data(cli.include_data),
    };
    let result = match (&cli.synapse_db, &cli.media_store) {
        (Some(synapse_db), Some(media_store)) => {
            let synapse = media_synapse::open_synapse(synapse_db)
                .await
                .map_err(|e| RunError::of(GdprError::from(e)))?;
            let server_name = media_synapse::resolve_server_name(&synapse, cli.server_name.clone())
                .await
                .map_err(RunError::of)?;
            let result = media_gdpr::export_from_synapse(
                &synapse,
                &server_name,
                media_store,
                options,
                progress,
            )
            .await;
            synapse.close().await;
            result
        }
        _ => {
            // Read-only: an export writes nothing into the repository or the datastore,
            // and works on a read-only mount.
            let repo = media_db::connect_read_only(&cli.repository.db)
                .await
                .map_err(|e| RunError::of(GdprError::from(e)))?;
            let store = media_store::open_read_only(&cli.repository.datastore)
                .await
                .map_err(|e| RunError::usage(format_args!("datastore: {e}")))?;
            repo.attach_datastore(
                store.as_ref(),
                media_db::AttachOptions {
                    access: media_db::DatastoreAccess::ReadOnly,
                    moved: cli.repository.datastore_moved,
                },
            )
            .await
            .map_err(|e| RunError::of(GdprError::from(e)))?;
            let result = media_gdpr::export_from_repository(&repo, store, options, progress).await;
            repo.close().await;
            result
        }
    };
    bar.finish();
    let report = result.map_err(RunError::of)?;
    Ok(media_cli::print_report(
        &report,
        Output::new(cli.json, cli.verbosity),
    ))
}
