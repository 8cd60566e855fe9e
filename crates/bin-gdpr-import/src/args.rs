//! `gdpr_import`: Read a matrix-media-repo archive back into the repository, verifying
//! every byte; `--verify` checks an import without writing.
//!
//! Thin binary: parse the command line, wire the library crates, print a report, exit
//! with the toolkit's exit codes (see `media_cli::Exit`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use media_cli::{Exit, Output, RunError};
use media_gdpr::import::Mode;
use media_gdpr::{Entity, GdprError, ImportOptions, Progress};

/// matrix-media-repo's `gdpr_import` flags, accepted as aliases.
const MMR_FLAGS: &[(&str, &str)] = &[
    ("directory", "directory"),
    ("verify", "verify"),
    ("onlyEntity", "only-entity"),
];

/// Import a matrix-media-repo archive (version 2, or the older layout) into the
/// repository. Every record's bytes are checked against the manifest's SHA-256 and size
/// before anything is written; records already present are skipped, so a re-run
/// resumes. Exit code 1 when some records were not imported (they are listed).
#[derive(Debug, Parser)]
#[command(name = "gdpr_import", version, after_help = EXAMPLES)]
struct Cli {
    /// The folder holding the archive's .tgz files.
    #[arg(long, env = "GDPR_DIRECTORY", default_value = "./gdpr-data")]
    directory: PathBuf,

    /// Write nothing: check that every record is in the repository with the same bytes
    /// and that every archive entry matches its manifest; exit code 1 if anything is
    /// missing or different.
    #[arg(long, env = "GDPR_VERIFY")]
    verify: bool,

    /// Only import this user's uploads (@alice:example.org) or this server's media.
    #[arg(long, env = "GDPR_ONLY_ENTITY")]
    only_entity: Option<Entity>,

    /// Also import records whose origin is not the archive's server, or whose uploader
    /// is on another server than their origin.
    #[arg(long, env = "GDPR_ALLOW_FOREIGN_ORIGINS")]
    allow_foreign_origins: bool,

    #[command(flatten)]
    repository: media_cli::RepositoryArgs,

    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    verbosity: media_cli::Verbosity,
}

/// Examples printed after the options.
const EXAMPLES: &str = "\
Examples:
  # Import an archive (e.g. gdpr_export's, or matrix-media-repo's) into our repository:
  gdpr_import --directory ./alice \\
      --repo-db /var/lib/media-repo/repo.db --datastore /var/lib/media-repo/store

  # Check, writing nothing, that everything in the archive is in the repository:
  gdpr_import --directory ./alice --verify \\
      --repo-db /var/lib/media-repo/repo.db --datastore /var/lib/media-repo/store

  # Only one user's uploads out of a whole server's archive:
  gdpr_import --directory ./example.org --only-entity @alice:example.org";

#[tokio::main]
async fn main() -> ExitCode {
    let args = media_cli::translate_go_flags(std::env::args(), MMR_FLAGS);
    if let Some(exit) = media_cli::print_docs_if_asked::<Cli>(&args) {
        return exit.into();
    }
    let cli = Cli::parse_from(args);
    cli.verbosity.init_logging();
    media_cli::exit_with(
        "gdpr_import",
        Output::new(cli.json, cli.verbosity),
        run(&cli).await,
    )
}

async fn run(cli: &Cli) -> Result<Exit, RunError> {
    if !cli.directory.is_dir() {
        return Err(RunError::usage(format_args!(
            "--directory {} is not a folder: give the folder holding the archive's .tgz files",
            cli.directory.display()
        )));
    }
    // The whole archive is checked before the repository is opened: a bad archive or
    // an empty folder creates nothing.
    let folder = media_gdpr::import::open_archive(&cli.directory)
        .await
        .map_err(RunError::of)?;
    // Verifying writes nothing: it opens an existing repository read-only (it works on
    // a read-only mount) and creates no folder.
    let repo = if cli.verify {
        media_db::connect_read_only(&cli.repository.db).await
    } else {
        media_db::connect(&cli.repository.db).await
    }
    .map_err(|e| RunError::of(GdprError::from(e)))?;
    let store = if cli.verify {
        media_store::open_read_only(&cli.repository.datastore).await
    } else {
        media_store::open(&cli.repository.datastore).await
    }
    .map_err(|e| RunError::usage(format_args!("datastore: {e}")))?;
    repo.attach_datastore(
        store.as_ref(),
        media_db::AttachOptions {
            access: if cli.verify {
                media_db::DatastoreAccess::ReadOnly
            } else {
                media_db::DatastoreAccess::Write
            },
            moved: cli.repository.datastore_moved,
        },
    )
    .await
    .map_err(|e| RunError::of(GdprError::from(e)))?;
    let progress = Arc::new(Progress::default());
    let bar = media_cli::ProgressBar::start(cli.verbosity.quiet || cli.json, progress.clone());
    let options = ImportOptions {
        directory: cli.directory.clone(),
        only_entity: cli.only_entity.clone(),
        allow_foreign_origins: cli.allow_foreign_origins,
        mode: if cli.verify {
            Mode::Verify
        } else {
            Mode::Import
        },
    };
    let result = media_gdpr::import_archive(&repo, store, folder, options, progress).await;
    bar.finish();
    repo.close().await;
    let report = result.map_err(RunError::of)?;
    Ok(media_cli::print_report(
        &report,
        Output::new(cli.json, cli.verbosity),
    ))
}
