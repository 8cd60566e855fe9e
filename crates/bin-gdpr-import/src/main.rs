//! `gdpr_import`: Read a matrix-media-repo archive back into the repository, verifying
//! every byte; `--verify` checks an import without writing.
//!
//! Thin binary: parse the command line, wire the library crates, print a report, exit
//! with the toolkit's exit codes (see `media_cli::Exit`).

mod args;

use std::process::ExitCode;
use std::sync::Arc;

use media_cli::{Exit, RepositoryAccess, RunError, ToolArgs};
use media_gdpr::import::Mode;
use media_gdpr::{ImportOptions, Progress};
use media_mmr::{Access, MmrArchiveSink, MmrConfig, MmrDeployment};

use crate::args::{Cli, MMR_FLAGS};

fn main() -> ExitCode {
    media_cli::run_tool("gdpr_import", MMR_FLAGS, run)
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
    let mode = cli.mode();
    let progress = Arc::new(Progress::default());
    let options = ImportOptions {
        directory: cli.directory.clone(),
        only_entity: cli.only_entity.clone(),
        allow_foreign_origins: cli.allow_foreign_origins,
        mode,
    };
    let result = match &cli.mmr_config {
        Some(config) => {
            let sink = open_mmr(config, mode).await?;
            let bar = media_cli::ProgressBar::start(cli.output(), progress.clone());
            let result =
                media_gdpr::import_archive_into(sink.clone(), folder, options, progress).await;
            bar.finish();
            sink.deployment().pool().close().await;
            result
        }
        None => {
            // Verifying writes nothing: it opens an existing repository read-only (it
            // works on a read-only mount) and creates no folder.
            let access = match mode {
                Mode::Verify => RepositoryAccess::ReadOnly,
                Mode::Import => RepositoryAccess::Write,
            };
            let (repo, datastores) = cli.repository.open(access).await?;
            let bar = media_cli::ProgressBar::start(cli.output(), progress.clone());
            let result =
                media_gdpr::import_archive(&repo, datastores, folder, options, progress).await;
            bar.finish();
            repo.close().await;
            result
        }
    };
    let report = result.map_err(RunError::of)?;
    Ok(media_cli::print_report(&report, cli.output()))
}

/// Opens the matrix-media-repo deployment of `config` to import into (read-only to
/// verify): its schema checked (never created), its datastores opened.
async fn open_mmr(config: &std::path::Path, mode: Mode) -> Result<Arc<MmrArchiveSink>, RunError> {
    let config = MmrConfig::load_logging_warnings(config).map_err(RunError::of)?;
    let access = match mode {
        Mode::Verify => Access::ReadOnly,
        Mode::Import => Access::ReadWrite,
    };
    let deployment = MmrDeployment::open(config, access, 4)
        .await
        .map_err(RunError::of)?;
    Ok(Arc::new(
        MmrArchiveSink::new(deployment).map_err(RunError::of)?,
    ))
}
