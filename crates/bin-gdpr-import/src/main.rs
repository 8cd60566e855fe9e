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

use crate::args::{Cli, MMR_FLAGS};

#[tokio::main]
async fn main() -> ExitCode {
    media_cli::run_tool("gdpr_import", MMR_FLAGS, run).await
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
    // Verifying writes nothing: it opens an existing repository read-only (it works on
    // a read-only mount) and creates no folder.
    let access = match mode {
        Mode::Verify => RepositoryAccess::ReadOnly,
        Mode::Import => RepositoryAccess::Write,
    };
    let (repo, datastores) = cli.repository.open(access).await?;
    let progress = Arc::new(Progress::default());
    let bar = media_cli::ProgressBar::start(cli.output(), progress.clone());
    let options = ImportOptions {
        directory: cli.directory.clone(),
        only_entity: cli.only_entity.clone(),
        allow_foreign_origins: cli.allow_foreign_origins,
        mode,
    };
    let result = media_gdpr::import_archive(&repo, datastores, folder, options, progress).await;
    bar.finish();
    repo.close().await;
    let report = result.map_err(RunError::of)?;
    Ok(media_cli::print_report(&report, cli.output()))
}
