//! `import_synapse`: move a Synapse media store into the deduplicating media repository.
//!
//! Thin binary: parse the command line, wire the library crates, print a report, exit
//! with the toolkit's exit codes (see `media_cli::Exit`).

mod args;

use std::process::ExitCode;
use std::sync::Arc;

use media_cli::{Exit, RepositoryAccess, RunError, ToolArgs};
use media_import::{HomeserverClient, ImportError, ImportOptions, Progress, Shard};

use crate::args::{Cli, MMR_FLAGS, Source};

#[tokio::main]
async fn main() -> ExitCode {
    media_cli::run_tool("import_synapse", MMR_FLAGS, run).await
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
    // A dry run creates neither the repository nor the datastore folder, and writes
    // nothing into either.
    let (repo, datastores) = cli.repository.open(RepositoryAccess::from(mode)).await?;
    let server_name = media_synapse::resolve_server_name(&synapse, cli.server_name.clone())
        .await
        .map_err(RunError::of)?;

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
    let result = media_import::import_synapse(
        &synapse,
        &repo,
        datastores.given().clone(),
        options,
        progress,
    )
    .await;
    bar.finish();
    let report = result.map_err(RunError::of)?;
    synapse.close().await;
    repo.close().await;

    Ok(media_cli::print_report(&report, cli.output()))
}
