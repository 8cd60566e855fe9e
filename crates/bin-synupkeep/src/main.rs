//! `synupkeep`: a drop-in for synupkeep. Purges a Synapse's room history (through its
//! admin API), local media and cached remote media older than a delta, with Synapse's own
//! media semantics.
//!
//! Thin binary: parse the command line, wire the library crates, print a report, exit
//! with the toolkit's exit codes (see `media_cli::Exit`).

mod args;

use std::process::ExitCode;
use std::sync::Arc;

use crate::args::Cli;
use media_cli::{Exit, RunError};
use media_core::Progress;

fn main() -> ExitCode {
    media_cli::run_tool("synupkeep", &[], run)
}

async fn run(cli: &Cli) -> Result<Exit, RunError> {
    let options = cli.options()?;
    let output = media_cli::ToolArgs::output(cli);
    let progress = Arc::new(Progress::default());
    let bar = media_cli::ProgressBar::start(output, progress.clone());
    let report = media_upkeep::synupkeep(&options, &progress).await;
    bar.finish();
    Ok(media_cli::print_report(
        &report.map_err(RunError::of)?,
        output,
    ))
}
