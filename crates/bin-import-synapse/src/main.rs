//! `import_synapse`: move a Synapse media store into the deduplicating media repository.
//!
//! Thin binary: parse the command line, wire the library crates, print a report, exit
//! with the toolkit's exit codes (see `media_cli::Exit`).

mod args;

use std::process::ExitCode;
use std::sync::Arc;

use media_cli::{Exit, RepositoryAccess, RunError, ToolArgs};
use media_core::ids::ServerName;
use media_core::run::RunMode;
use media_import::{
    HomeserverClient, ImportError, ImportOptions, ImportSink, Include, Progress, RepositorySink,
    Shard,
};
use media_mmr::{Access, MmrConfig, MmrDeployment, MmrSink};

use crate::args::{Cli, MMR_FLAGS, Source};

fn main() -> ExitCode {
    media_cli::run_tool("import_synapse", MMR_FLAGS, run)
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
    let mode = cli.mode();
    let server_name = media_synapse::resolve_server_name(&synapse, cli.server_name.clone())
        .await
        .map_err(RunError::of)?;
    let sink = match &cli.mmr_config {
        Some(config) => Sink::Mmr(
            open_mmr(
                config,
                &server_name,
                cli.include,
                mode,
                u32::from(cli.workers),
            )
            .await?,
        ),
        None => {
            // A dry run creates neither the repository nor the datastore folder, and
            // writes nothing into either.
            let (repo, datastores) = cli.repository.open(RepositoryAccess::from(mode)).await?;
            let sink = RepositorySink::open(&repo, datastores.given().clone(), mode.is_dry_run())
                .await
                .map_err(RunError::of)?;
            Sink::Repository(repo, Arc::new(sink))
        }
    };

    let progress = Arc::new(Progress::default());
    let bar = media_cli::ProgressBar::start(cli.output(), progress.clone());
    let options = ImportOptions {
        media_store,
        homeserver,
        server_name,
        include: cli.include,
        workers: usize::from(cli.workers),
        mode,
        // As the operator wrote it (a bare path is labelled by its absolute path).
        source_label: media_synapse::source_label(
            cli.synapse_db.as_deref().unwrap_or(&location.to_string()),
        ),
        shard: cli.shard,
    };
    if cli.shard != Shard::ALL {
        tracing::info!(
            "shard {}: importing only this share of the media (the progress total is an \
             estimate until every row has been read)",
            cli.shard
        );
    }
    let result =
        media_import::import_synapse_into(&synapse, sink.import_sink(), options, progress).await;
    bar.finish();
    let report = result.map_err(RunError::of)?;
    synapse.close().await;
    sink.close().await;

    Ok(media_cli::print_report(&report, cli.output()))
}

/// What the import writes into: our repository, or a matrix-media-repo deployment.
enum Sink {
    /// Our repository (closed at the end) and the sink over it.
    Repository(media_db::Repository, Arc<RepositorySink>),
    /// A matrix-media-repo deployment.
    Mmr(Arc<MmrSink>),
}

impl Sink {
    fn import_sink(&self) -> Arc<dyn ImportSink> {
        match self {
            Self::Repository(_, sink) => sink.clone(),
            Self::Mmr(sink) => sink.clone(),
        }
    }

    async fn close(self) {
        match self {
            Self::Repository(repo, _) => repo.close().await,
            Self::Mmr(sink) => sink.deployment().pool().close().await,
        }
    }
}

/// Opens the matrix-media-repo deployment of `config` to import into: its schema checked
/// (never created), its datastores opened (read-only for a dry run). The Synapse's
/// local media must be local to the deployment (`server_name` among its `homeservers`),
/// or MMR would not serve them as its own.
async fn open_mmr(
    config: &std::path::Path,
    server_name: &ServerName,
    include: Include,
    mode: RunMode,
    workers: u32,
) -> Result<Arc<MmrSink>, RunError> {
    let config = MmrConfig::load_logging_warnings(config).map_err(RunError::of)?;
    if (include.local || include.url_previews) && !config.is_local(server_name) {
        return Err(RunError::usage(format_args!(
            "{server_name} is not one of the homeservers of the matrix-media-repo config: add \
             it there (MMR serves local media only for those), or give the right --server-name"
        )));
    }
    let access = match mode {
        RunMode::DryRun => Access::ReadOnly,
        RunMode::Apply => Access::ReadWrite,
    };
    // One connection for the recorder, one for the producer, a few for the workers' look-ups.
    let deployment = MmrDeployment::open(config, access, workers.clamp(2, 16) + 2)
        .await
        .map_err(RunError::of)?;
    Ok(Arc::new(MmrSink::new(deployment).map_err(RunError::of)?))
}
