//! `gdpr_export`: Write one user's or one server's media as a matrix-media-repo v2 archive.
//!
//! Thin binary: parse the command line, wire the library crates, print a report, exit
//! with the toolkit's exit codes (see `media_cli::Exit`).

mod args;

use std::process::ExitCode;
use std::sync::Arc;

use media_cli::{Exit, RepositoryAccess, RunError, ToolArgs};
use media_gdpr::{GdprError, Progress};
use media_mmr::{Access, MmrConfig, MmrDeployment};

use crate::args::{Cli, MMR_FLAGS};

fn main() -> ExitCode {
    media_cli::run_tool("gdpr_export", MMR_FLAGS, run)
}

async fn run(cli: &Cli) -> Result<Exit, RunError> {
    let progress = Arc::new(Progress::default());
    let bar = media_cli::ProgressBar::start(cli.output(), progress.clone());
    let options = cli.export_options();
    let result = match (&cli.synapse_db, &cli.media_store, &cli.mmr_config) {
        (_, _, Some(config)) => {
            let deployment = open_mmr(config).await?;
            let result = media_mmr::export_from_mmr(deployment.clone(), options, progress).await;
            deployment.pool().close().await;
            result
        }
        (Some(synapse_db), Some(media_store), None) => {
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
            let (repo, datastores) = cli.repository.open(RepositoryAccess::ReadOnly).await?;
            let result =
                media_gdpr::export_from_repository(&repo, datastores, options, progress).await;
            repo.close().await;
            result
        }
    };
    bar.finish();
    let report = result.map_err(RunError::of)?;
    Ok(media_cli::print_report(&report, cli.output()))
}

/// Opens the matrix-media-repo deployment of `config` read-only: its schema checked
/// (never created), its datastores only read.
async fn open_mmr(config: &std::path::Path) -> Result<Arc<MmrDeployment>, RunError> {
    let config = MmrConfig::load_logging_warnings(config).map_err(RunError::of)?;
    let deployment = MmrDeployment::open(config, Access::ReadOnly, 4)
        .await
        .map_err(RunError::of)?;
    Ok(Arc::new(deployment))
}
