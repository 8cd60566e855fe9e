//! `media_admin`: administer our media repository: its datastores, and lossless
//! transfers between them.
//!
//! Thin binary: parse the command line, wire the library crates, print a report, exit
//! with the toolkit's exit codes (see `media_cli::Exit`).

mod args;

use std::process::ExitCode;
use std::sync::Arc;

use media_admin::TransferOptions;
use media_cli::{Exit, RunError, ToolArgs};
use media_core::progress::Progress;
use media_core::run::RunMode;

use crate::args::{Cli, Command, Datastores};

#[tokio::main]
async fn main() -> ExitCode {
    media_cli::run_tool("media_admin", &[], run).await
}

async fn run(cli: &Cli) -> Result<Exit, RunError> {
    let output = cli.output();
    let Command::Datastores(command) = &cli.command;
    match command {
        Datastores::List { repository, .. } => {
            let repo = media_db::connect_read_only(&repository.db)
                .await
                .map_err(RunError::of)?;
            let report = media_admin::datastores::list(&repo).await;
            repo.close().await;
            Ok(media_cli::print_report(
                &report.map_err(RunError::of)?,
                output,
            ))
        }
        Datastores::Estimate {
            source, repository, ..
        } => {
            let repo = media_db::connect_read_only(&repository.db)
                .await
                .map_err(RunError::of)?;
            let report =
                media_admin::datastores::estimate(&repo, &source.from, source.before).await;
            repo.close().await;
            Ok(media_cli::print_report(
                &report.map_err(RunError::of)?,
                output,
            ))
        }
        Datastores::Transfer {
            source,
            to,
            from_uri,
            dry_run,
            workers,
            verify,
            repository,
            ..
        } => {
            let mode = RunMode::from_dry_run(*dry_run);
            let repo = match mode {
                RunMode::DryRun => media_db::connect_read_only(&repository.db).await,
                RunMode::Apply => media_db::connect_existing(&repository.db).await,
            }
            .map_err(RunError::of)?;
            let options = TransferOptions {
                from: source.from.clone(),
                from_uri: from_uri.clone(),
                to: to.clone(),
                before: source.before,
                mode,
                workers: usize::from(*workers),
                verify: (*verify).into(),
            };
            let progress = Arc::new(Progress::default());
            let bar = media_cli::ProgressBar::start(output, progress.clone());
            let result = media_admin::transfer::transfer(&repo, &options, progress).await;
            bar.finish();
            repo.close().await;
            let report = result.map_err(RunError::of)?;
            let exit = media_cli::print_report(&report, output);
            Ok(match &report.stopped_early {
                Some(why) => {
                    eprintln!("media_admin: stopped early: {why}");
                    Exit::Fatal
                }
                None => exit,
            })
        }
    }
}
