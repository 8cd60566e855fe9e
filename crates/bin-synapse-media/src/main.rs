//! `synapse_media`: upkeep of a Synapse media store, directly on its database and
//! media_store folder, or through Synapse's admin API.
//!
//! Thin binary: parse the command line, wire the library crates, print a report, exit
//! with the toolkit's exit codes (see `media_cli::Exit`).

mod args;

use std::process::ExitCode;
use std::sync::Arc;

use crate::args::{Cli, Job};
use media_cli::{Exit, RunError};
use media_core::Progress;

fn main() -> ExitCode {
    media_cli::run_tool("synapse_media", &[], run)
}

async fn run(cli: &Cli) -> Result<Exit, RunError> {
    let job = cli.job()?;
    let output = media_cli::ToolArgs::output(cli);
    let progress = Arc::new(Progress::default());
    let bar = media_cli::ProgressBar::start(output, progress.clone());
    Ok(match &job {
        Job::Purge(options) => {
            let report = media_upkeep::purge(options, &progress).await;
            bar.finish();
            media_cli::print_report(&report.map_err(RunError::of)?, output)
        }
        Job::Check(options) => {
            let report = media_upkeep::check(options, &progress).await;
            bar.finish();
            media_cli::print_report(&report.map_err(RunError::of)?, output)
        }
        Job::Quarantine(options) => {
            let report = media_upkeep::quarantine(options).await;
            bar.finish();
            media_cli::print_report(&report.map_err(RunError::of)?, output)
        }
        Job::Usage(options) => {
            let report = media_upkeep::usage(options).await;
            bar.finish();
            media_cli::print_report(&report.map_err(RunError::of)?, output)
        }
        Job::QuarantineChanges(options) => {
            let changes = media_upkeep::quarantine_changes::quarantine_changes(options).await;
            bar.finish();
            media_cli::print_report(&changes.map_err(RunError::of)?, output)
        }
        Job::List(options) => {
            let listing = media_upkeep::listing::list(options).await;
            bar.finish();
            media_cli::print_report(&listing.map_err(RunError::of)?, output)
        }
    })
}
