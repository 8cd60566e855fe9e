//! `synapse_media`: upkeep of a Synapse media store, directly on its database and
//! media_store folder.
//!
//! Thin binary: parse the command line, wire the library crates, print a report, exit
//! with the toolkit's exit codes (see `media_cli::Exit`).

mod args;

use std::process::ExitCode;
use std::sync::Arc;

use media_cli::{Exit, RunError};
use media_core::Progress;
use media_upkeep::PurgeOptions;

use crate::args::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    media_cli::run_tool("synapse_media", &[], run).await
}

async fn run(cli: &Cli) -> Result<Exit, RunError> {
    let options = PurgeOptions {
        synapse_db: cli.synapse_location()?,
        media_store: cli.media_store()?,
        server_name: cli.server_name.clone(),
        selection: cli.selection(),
        mode: cli.mode(),
    };
    let output = media_cli::ToolArgs::output(cli);
    let progress = Arc::new(Progress::default());
    let bar = media_cli::ProgressBar::start(output, progress.clone());
    let report = media_upkeep::purge(&options, &progress).await;
    bar.finish();
    let report = report.map_err(RunError::of)?;
    Ok(media_cli::print_report(&report, output))
}
